package apnstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"

	"github.com/sideshow/apns2/token"
)

// VerifyOnce remembers only tokens whose signature checked: a forged one
// is refused every time, before and after a good one was seen.
func TestVerifyOnceStillRefusesForgedTokens(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Options{TokenKey: &key.PublicKey, VerifyOnce: true})
	defer s.Close()
	good := (&token.Token{AuthKey: key, KeyID: "KEY1234567", TeamID: "TEAM123456"}).GenerateIfExpired()
	forged := good[:len(good)-4] + strings.Repeat("A", 4)
	if forged == good {
		forged = good[:len(good)-4] + "BBBB"
	}
	push := func(bearer string) int {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/3/device/"+strings.Repeat("ab", 32), strings.NewReader(`{"aps":{}}`))
		req.Header.Set("authorization", "bearer "+bearer)
		req.Header.Set("apns-topic", "com.example.app")
		req.Header.Set("apns-push-type", "alert")
		res, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for i, c := range []struct {
		bearer string
		want   int
	}{{forged, 403}, {good, 200}, {good, 200}, {forged, 403}} {
		if got := push(c.bearer); got != c.want {
			t.Errorf("request %d: %d, want %d", i, got, c.want)
		}
	}
}
