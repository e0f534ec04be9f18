package apnstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"testing"

	"pushd/component/apns"
)

// NewTokenProvider starts a server with opts that verifies tokens signed
// by a fresh P-256 key, and returns a token-auth provider of
// component/apns holding that key (topic com.example.pushd) and trusting
// the server's certificate: the pair a test of the push path needs. Both
// close when the test ends.
func NewTokenProvider(t testing.TB, opts Options) (*apns.Provider, *Server) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	opts.TokenKey = &k.PublicKey
	srv := NewServer(opts)
	t.Cleanup(srv.Close)
	cfg := apns.DefaultConfig()
	cfg.Endpoint, cfg.Topic = srv.URL, "com.example.pushd"
	cfg.KeyPEM, cfg.KeyID, cfg.TeamID = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), "KEY1234567", "TEAM123456"
	cfg.HTTP.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	p, err := apns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, srv
}
