package admin

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type fakeSwitch struct{ st SwitchState }

func (f *fakeSwitch) PushSwitch() SwitchState { return f.st }

func (f *fakeSwitch) SetPushSwitch(enabled bool) (SwitchState, error) {
	f.st = SwitchState{Enabled: enabled, Version: f.st.Version + 1, Node: "n1"}
	return f.st, nil
}

// O2's API: the switch behind the admin token, a change only with an
// explicit enabled, 501 on a node that serves none.
func TestPushSwitchAPI(t *testing.T) {
	sw := &fakeSwitch{st: SwitchState{Enabled: true}}
	s, err := Listen(Config{Listen: "127.0.0.1:0", Token: "tok", Switch: sw})
	if err != nil {
		t.Fatal(err)
	}
	defer s.ln.Close()
	h := s.srv.Handler
	call := func(method, body, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "/api/push/switch", strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	for _, c := range []struct {
		method, body, token string
		code                int
	}{
		{http.MethodGet, "", "", http.StatusUnauthorized},
		{http.MethodPost, `{"enabled":false}`, "wrong", http.StatusUnauthorized},
		{http.MethodPost, `{}`, "tok", http.StatusBadRequest},
		{http.MethodPost, `{"enabled":"no"}`, "tok", http.StatusBadRequest},
	} {
		if w := call(c.method, c.body, c.token); w.Code != c.code {
			t.Errorf("%s %s with %q: %d, want %d", c.method, c.body, c.token, w.Code, c.code)
		}
	}
	if !sw.st.Enabled || sw.st.Version != 0 {
		t.Fatalf("refused requests changed the switch: %+v", sw.st)
	}
	if w := call(http.MethodPost, `{"enabled":false}`, "tok"); w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(`"enabled":false`)) {
		t.Fatalf("POST: %d %s", w.Code, w.Body)
	}
	if w := call(http.MethodGet, "", "tok"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"version":1,"node":"n1"`) {
		t.Fatalf("GET: %d %s", w.Code, w.Body)
	}

	none, err := Listen(Config{Listen: "127.0.0.1:0", Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	defer none.ln.Close()
	req := httptest.NewRequest(http.MethodGet, "/api/push/switch", nil)
	req.Header.Set("Authorization", "Bearer tok")
	w := httptest.NewRecorder()
	none.srv.Handler.ServeHTTP(w, req)
	if w.Code != http.StatusNotImplemented {
		t.Fatalf("without a switch: %d, want 501", w.Code)
	}
}
