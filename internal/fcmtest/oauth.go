package fcmtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Google's OAuth 2.0 service-account flow as golang.org/x/oauth2/google
// runs it (RFC 7523): the client signs a JWT with the account's private
// key and POSTs it to the credentials' token_uri; the answer is a bearer
// access token for the FCM API.
const (
	// TokenPath is where the server takes the JWT-bearer grant.
	TokenPath = "/token"
	// ScopeMessaging is the scope an FCM sender must ask for.
	ScopeMessaging = "https://www.googleapis.com/auth/firebase.messaging"
	grantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

// serviceAccount is the one account whose assertions the server accepts.
type serviceAccount struct {
	email, keyID string
	key          *rsa.PublicKey
	accessToken  string
}

// ServiceAccount makes a fresh service account of project (a new RSA key)
// and returns its credentials JSON, the file an operator downloads from
// the Google console, with token_uri pointing at this server. From then
// on the FCM endpoint accepts only the access token this server mints for
// that account's signed assertions, so a push that arrives proves the
// client did the whole exchange.
func (s *Server) ServiceAccount(project string) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 20)
	tok := make([]byte, 24)
	_, _ = rand.Read(id)
	_, _ = rand.Read(tok)
	sa := &serviceAccount{email: "pushd-fcm@" + project + ".iam.gserviceaccount.com", keyID: hex.EncodeToString(id),
		key: &key.PublicKey, accessToken: "ya29.fcmtest-" + base64.RawURLEncoding.EncodeToString(tok)}
	s.mu.Lock()
	s.account, s.bearer = sa, sa.accessToken
	s.mu.Unlock()
	return json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  project,
		"private_key_id":              sa.keyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                sa.email,
		"client_id":                   "100000000000000000001",
		"auth_uri":                    s.URL + "/auth",
		"token_uri":                   s.URL + TokenPath,
		"auth_provider_x509_cert_url": s.URL + "/certs",
	}, "", "  ")
}

// TokenGrants is how many access tokens the server has minted.
func (s *Server) TokenGrants() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants
}

// token answers the JWT-bearer grant: the assertion must be an RS256 JWT
// signed by the service account's key, issued by its email, for this
// token URI, asking for the messaging scope, and not expired.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	sa := s.account
	s.mu.Unlock()
	if r.Method != http.MethodPost || sa == nil {
		oauthError(w, http.StatusNotFound, "invalid_request", "no token endpoint here")
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != grantJWTBearer {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "want "+grantJWTBearer)
		return
	}
	if err := sa.verify(r.PostForm.Get("assertion"), s.URL+TokenPath, time.Now()); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_grant", err.Error())
		return
	}
	s.mu.Lock()
	s.grants++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": sa.accessToken, "token_type": "Bearer", "expires_in": 3599})
}

func (sa *serviceAccount) verify(assertion, audience string, now time.Time) error {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return errors.New("assertion is not a JWT")
	}
	var head struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var claims struct {
		Iss   string `json:"iss"`
		Scope string `json:"scope"`
		Aud   string `json:"aud"`
		Exp   int64  `json:"exp"`
		Iat   int64  `json:"iat"`
	}
	if err := decodeSegment(parts[0], &head); err != nil || head.Alg != "RS256" {
		return errors.New("assertion header: want alg RS256")
	}
	if head.Kid != "" && head.Kid != sa.keyID {
		return errors.New("assertion signed with an unknown key id")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return errors.New("assertion signature is not base64url")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(sa.key, crypto.SHA256, sum[:], sig) != nil {
		return errors.New("invalid JWT signature")
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return errors.New("assertion claims are not JSON")
	}
	switch {
	case claims.Iss != sa.email:
		return errors.New("assertion issued by another account")
	case claims.Aud != audience:
		return errors.New("assertion for another audience")
	case !slices.Contains(strings.Fields(claims.Scope), ScopeMessaging):
		return errors.New("assertion does not ask for the messaging scope")
	case claims.Exp <= now.Unix() || claims.Iat > now.Add(5*time.Minute).Unix():
		return errors.New("assertion expired or not yet valid")
	}
	return nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}
