package main

import (
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pushd/component/payload"
	"pushd/internal/fcmtest"
	"pushd/internal/peertest"
)

// The FCM side of the SIP tests: the project the node sends through and
// the Android phone's registration token (FCM tokens have a colon).
const (
	fcmProject  = "pushd-test"
	sipFCMToken = "cPushdTestAndroid01:APA91bH-pushd_test_fcm_token_0123456789abcdefABCDEF"
)

// fcmTestServer starts an FCM test server that is also the token endpoint
// of a fresh service account, and returns it with the config change that
// points a node's [fcm] at it as an operator would: endpoint, CA file,
// project and the account's credentials file. A push that arrives
// proves the node ran Google's OAuth flow (P2).
func fcmTestServer(t *testing.T) (*fcmtest.Server, func(*fileConfig)) {
	t.Helper()
	srv := fcmtest.NewServer("")
	t.Cleanup(srv.Close)
	creds, err := srv.ServiceAccount(fcmProject)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	credsFile, caFile := filepath.Join(dir, "service-account.json"), filepath.Join(dir, "fcm-ca.pem")
	if err := errors.Join(os.WriteFile(credsFile, creds, 0o600),
		os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)); err != nil {
		t.Fatal(err)
	}
	return srv, func(c *fileConfig) {
		c.FCM.Endpoint, c.FCM.CAFile, c.FCM.ProjectID, c.FCM.CredentialsFile = srv.URL, caFile, fcmProject, credsFile
	}
}

// fcmPush waits for the n-th FCM push and opens it with the Android
// phone's key: a high-priority data message for its token in the node's
// project, with nothing personal outside the ciphertext (P2, S2).
func (w *sipWorld) fcmPush(t *testing.T, n int) (fcmtest.Request, payload.Payload) {
	t.Helper()
	reqs := w.fcm.WaitRequests(n, 10*time.Second)
	if len(reqs) < n {
		t.Fatalf("%d FCM pushes, want %d", len(reqs), n)
	}
	r := reqs[n-1]
	if r.Status != 200 || r.Project != fcmProject || r.Token != sipFCMToken || r.Priority != "high" || r.HasNotify {
		t.Fatalf("FCM push %d: status %d project %q token %.12s… priority %q notification %v",
			n, r.Status, r.Project, r.Token, r.Priority, r.HasNotify)
	}
	p, err := payload.Open(w.fcmKey, r.Data["enc"])
	if err != nil {
		t.Fatalf("FCM push %d does not open with the phone's key: %v", n, err)
	}
	if strings.Contains(string(r.Body), "Bob Builder") || r.Data["tid"] == "" {
		t.Fatalf("FCM push %d: caller in clear or no tracking id: %s", n, r.Body)
	}
	return r, p
}

func fcmPN() string {
	return ";pn-provider=fcm;pn-prid=" + sipFCMToken + ";pn-param=" + fcmProject
}

const androidInstance = `;+sip.instance="<urn:uuid:6c4f0a2e-3333-4d5e-9a1b-0123456789ab>"`

// Issue 12's main path on Android (C1–C4, P2): the phone registers with
// RFC 8599 parameters for FCM (pn-param: the project); bob's call pushes
// it at once as a high-priority FCM data message whose enc opens with the
// key the same phone registered over XMPP with the same token, to the
// caller ID; the phone registers again and answers. A second call nobody
// answers ends at 13 s with 480 and a missed-call push the same way.
func TestSIPCallPushFCM(t *testing.T) {
	w := startSIPWorldWith(t, sipWorldOptions{FCM: true})
	phone := peertest.StartSIPp(t, peertest.SIPpOptions{Scenario: "phone.xml", Timeout: 40 * time.Second})
	w.register(t, phone.Port, fcmPN(), androidInstance)

	c := w.caller(t, "caller.xml")
	_, p := w.fcmPush(t, 1)
	if p.Type != payload.TypeCall || p.Name != "Bob Builder" || p.From != "bob" || p.CallID == "" || p.Node != w.sip() {
		t.Fatalf("call payload %+v", p)
	}
	if w.fcm.TokenGrants() < 1 {
		t.Fatal("the push went without the service account's token exchange")
	}
	w.register(t, phone.Port, fcmPN(), androidInstance)
	waitAnswered(t, c, phone, p.CallID)

	// C4: the phone sleeps through the next call.
	c = w.caller(t, "caller_unanswered.xml")
	if _, p := w.fcmPush(t, 2); p.Type != payload.TypeCall {
		t.Fatalf("second call's push: %+v", p)
	}
	w.tick(5 * time.Second)
	waitFor(t, "ringback", 10*time.Second, func() bool { return strings.Contains(c.Log(), "RINGING") })
	w.tick(8 * time.Second)
	if err := c.Wait(20 * time.Second); err != nil {
		t.Fatalf("caller: %v\n%s", err, c.Output())
	}
	if !strings.Contains(c.Log(), "UNAVAILABLE") {
		t.Fatalf("no 480:\n%s", c.Log())
	}
	if _, p := w.fcmPush(t, 3); p.Type != payload.TypeMissedCall || p.CallID == "" || p.Name != "Bob Builder" {
		t.Fatalf("missed-call push: %+v", p)
	}
	if n := len(w.fcm.Requests()); n != 3 {
		t.Errorf("%d FCM pushes for two calls, want 3", n)
	}
	if n := len(w.apns.Requests()); n != 0 {
		t.Errorf("%d APNS pushes for an FCM phone", n)
	}
	for _, secret := range []string{"Bob Builder", sipFCMToken} {
		if strings.Contains(w.logs.String(), secret) {
			t.Errorf("the log has %q in clear", secret)
		}
	}
}
