package fcmtest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// The service account's credentials file works with Google's own client
// library: it signs an assertion, gets the minted token, and the FCM
// endpoint takes it; an assertion signed by another key gets no token, and
// a bearer that was not minted is refused.
func TestServiceAccountTokenFlow(t *testing.T) {
	s := NewServer("")
	defer s.Close()
	creds, err := s.ServiceAccount("pushd-test")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, s.Client())
	c, err := google.CredentialsFromJSON(ctx, creds, ScopeMessaging)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.TokenSource.Token()
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	hc := &http.Client{Transport: &oauth2.Transport{Source: c.TokenSource, Base: s.Client().Transport}}
	res, err := hc.Post(s.URL+"/v1/projects/pushd-test/messages:send", "application/json",
		strings.NewReader(`{"message":{"token":"t1","data":{"v":"1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || s.TokenGrants() != 1 {
		t.Fatalf("send with the minted token: %d, %d grants", res.StatusCode, s.TokenGrants())
	}
	if r := s.Requests(); len(r) != 1 || r[0].Auth != tok.AccessToken {
		t.Fatalf("requests %+v", r)
	}

	// Another account's key: its own credentials file, not ours.
	other := NewServer("")
	defer other.Close()
	forged, err := other.ServiceAccount("pushd-test")
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]string
	_ = json.Unmarshal(forged, &f)
	var mine map[string]string
	_ = json.Unmarshal(creds, &mine)
	f["token_uri"], f["client_email"], f["private_key_id"] = mine["token_uri"], mine["client_email"], ""
	forged, _ = json.Marshal(f)
	fc, err := google.CredentialsFromJSON(ctx, forged, ScopeMessaging)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fc.TokenSource.Token(); err == nil || !strings.Contains(err.Error(), "invalid JWT signature") {
		t.Fatalf("forged assertion: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/projects/pushd-test/messages:send",
		strings.NewReader(`{"message":{"token":"t1"}}`))
	req.Header.Set("Authorization", "Bearer ya29.made-up")
	res, err = s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a made-up bearer got %d", res.StatusCode)
	}
}
