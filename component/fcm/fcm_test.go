package fcm_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"pushd/component/dispatch"
	"pushd/component/fcm"
	"pushd/component/payload"
	"pushd/internal/fcmtest"
)

const (
	bearer = "ya29.test-access-token"
	tok    = "fcm-registration-token-0123456789"
)

func newProvider(t *testing.T, accessToken string) (*fcm.Provider, *fcmtest.Server) {
	t.Helper()
	srv := fcmtest.NewServer(bearer)
	t.Cleanup(srv.Close)
	cfg := fcm.DefaultConfig()
	cfg.Endpoint, cfg.ProjectID = srv.URL, "pushd-test"
	cfg.TokenSource = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: accessToken, Expiry: time.Now().Add(time.Hour)})
	cfg.HTTP.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	p, err := fcm.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, srv
}

var key = [32]byte{9, 9, 9}

func push(t *testing.T, typ payload.Type) dispatch.Push {
	t.Helper()
	s, err := payload.Prepare(&key, payload.Payload{Type: typ, Name: "Romeo", Body: "hello"}, "")
	if err != nil {
		t.Fatal(err)
	}
	return dispatch.Push{TrackingID: dispatch.NewTrackingID(), Registration: dispatch.Registration{Provider: dispatch.FCM, Token: tok},
		Channel: payload.ChannelMessage, Sealed: s}
}

// short bounds one Send: the SDK retries 503 and network errors itself.
func short() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Second)
}

func TestSendShape(t *testing.T) {
	p, srv := newProvider(t, bearer)
	ctx, cancel := short()
	defer cancel()
	ps := push(t, payload.TypeMessage)
	if o := p.Send(ctx, ps); o.Result != dispatch.Delivered {
		t.Fatalf("send: %+v", o)
	}
	r := srv.Requests()
	if len(r) != 1 {
		t.Fatalf("%d requests", len(r))
	}
	q := r[0]
	if q.Project != "pushd-test" || q.Auth != bearer || q.Token != tok || q.Priority != "high" || q.HasNotify ||
		q.Data["v"] != "1" || q.Data["tid"] != ps.TrackingID || q.Proto != "HTTP/2.0" {
		t.Fatalf("request: %+v", q)
	}
	got, err := payload.Open(key, q.Data["enc"])
	if err != nil || got.Body != "hello" || got.Name != "Romeo" {
		t.Fatalf("enc → %+v %v", got, err)
	}
	if strings.Contains(string(q.Body), "hello") || strings.Contains(string(q.Body), "Romeo") {
		t.Fatal("personal data in clear in the FCM body")
	}
}

func TestClassify(t *testing.T) {
	p, srv := newProvider(t, bearer)
	tests := []struct {
		code   string
		want   dispatch.Result
		status int
	}{
		{fcmtest.Unregistered, dispatch.Dead, 404},
		{fcmtest.InvalidArgument, dispatch.Dead, 400},
		{fcmtest.QuotaExceeded, dispatch.Retry, 429},
		{fcmtest.Internal, dispatch.Retry, 500},
		{fcmtest.SenderIDMismatch, dispatch.Fatal, 403},
	}
	for _, tc := range tests {
		srv.Script(tok, fcmtest.Answer{ErrorCode: tc.code})
		ctx, cancel := short()
		o := p.Send(ctx, push(t, payload.TypeMessage))
		cancel()
		if o.Result != tc.want || o.Status != tc.status || o.Reason != tc.code {
			t.Errorf("%s: %+v, want %v %d", tc.code, o, tc.want, tc.status)
		}
	}
}

func TestBadBearerIsFatal(t *testing.T) {
	p, _ := newProvider(t, "wrong")
	ctx, cancel := short()
	defer cancel()
	if o := p.Send(ctx, push(t, payload.TypeMessage)); o.Result != dispatch.Fatal || o.Status != 401 {
		t.Fatalf("401: %+v", o)
	}
}

func TestTimeoutIsRetry(t *testing.T) {
	p, srv := newProvider(t, bearer)
	srv.Script(tok, fcmtest.Answer{Delay: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	o := p.Send(ctx, push(t, payload.TypeMessage))
	if o.Result != dispatch.Retry || !errors.Is(o.Err, context.DeadlineExceeded) && !strings.Contains(o.Err.Error(), "deadline") {
		t.Fatalf("timeout: %+v", o)
	}
}

func TestResetUsesFreshConnection(t *testing.T) {
	p, srv := newProvider(t, bearer)
	ctx, cancel := short()
	defer cancel()
	p.Send(ctx, push(t, payload.TypeMessage))
	p.Send(ctx, push(t, payload.TypeMessage))
	p.Reset()
	p.Send(ctx, push(t, payload.TypeCall))
	r := srv.Requests()
	if len(r) != 3 || r[0].RemoteAddr != r[1].RemoteAddr || r[1].RemoteAddr == r[2].RemoteAddr {
		t.Fatalf("connections: %+v", r)
	}
}

func TestConfigValidation(t *testing.T) {
	if _, err := fcm.New(context.Background(), fcm.Config{}); err == nil {
		t.Fatal("no project accepted")
	}
	if _, err := fcm.New(context.Background(), fcm.Config{ProjectID: "p"}); err == nil {
		t.Fatal("no credentials accepted")
	}
	if _, err := fcm.New(context.Background(), fcm.Config{ProjectID: "p", CredentialsFile: "/nonexistent.json"}); err == nil {
		t.Fatal("missing credentials file accepted")
	}
}

// TestRegRefreshIsDataMessage: on FCM a reg-refresh (C8) is a data message
// at android priority high like any other, but not collapsed: under the
// summaries' collapse key it would replace a summary waiting for an
// offline device. Calls are not collapsed either; summaries are.
func TestRegRefreshIsDataMessage(t *testing.T) {
	p, srv := newProvider(t, bearer)
	ctx, cancel := short()
	defer cancel()
	refresh := push(t, payload.TypeRegRefresh)
	if o := p.Send(ctx, refresh); o.Result != dispatch.Delivered {
		t.Fatalf("send: %+v", o)
	}
	r := srv.Requests()
	if len(r) != 1 || r[0].Priority != "high" || r[0].HasNotify || r[0].Token != tok || r[0].Data["tid"] != refresh.TrackingID {
		t.Fatalf("requests: %+v", r)
	}
	if got, err := payload.Open(key, r[0].Data["enc"]); err != nil || got.Type != payload.TypeRegRefresh {
		t.Fatalf("enc → %+v %v", got, err)
	}
	for typ, want := range map[payload.Type]string{payload.TypeRegRefresh: "", payload.TypeCall: "", payload.TypeMessage: "pushd-message"} {
		if m := p.Message(push(t, typ)); m.Android.CollapseKey != want || m.Android.Priority != "high" {
			t.Errorf("%s: collapse key %q, priority %q", typ, m.Android.CollapseKey, m.Android.Priority)
		}
	}
}
