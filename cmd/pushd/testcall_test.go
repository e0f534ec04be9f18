package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pushd/component/payload"
)

// `pushd push test --call alice` against the running node: her sleeping
// phone's push binding gets a VoIP call push that opens to the test
// caller ID and names the node to register to, then its missed-call push
// (no INVITE follows, and the app must close the call it reported, C8).
// Without a push binding the command says so.
func TestPushTestCall(t *testing.T) {
	w := startSIPWorld(t)
	cfgFile := filepath.Join(t.TempDir(), "pushd.toml")
	body := fmt.Sprintf("domain = \"localhost\"\ndata_dir = %q\n[admin]\nlisten = %q\n", w.n.cfg.DataDir, w.n.cfg.Admin.Listen)
	if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(t, "", "push", "test", "--config", cfgFile, "--call", "alice"); err == nil || !strings.Contains(err.Error(), "no SIP push binding") {
		t.Fatalf("without a binding: %v\n%s", err, out)
	}
	w.register(t, 5990, phonePN(), phoneInstance)

	out, err := runCmd(t, "", "push", "test", "--config", cfgFile, "--timeout", "20s", "--call", "alice")
	if err != nil {
		t.Fatalf("push test --call: %v\n%s", err, out)
	}
	for _, want := range []string{"call push provider apns", "missed-call push provider apns", "attempt 1: delivered status 200"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	w.waitPushes(t, payload.TypeCall, payload.TypeMissedCall)
	r, p := w.callPush(t, 1)
	if r.Token != sipPhonePRID || r.PushType != "voip" || p.Name != "pushd test call" || p.CallID == "" || p.Node != w.sip() {
		t.Fatalf("test call push to %.8s… type %q: %+v", r.Token, r.PushType, p)
	}
	if _, m := w.callPush(t, 2); m.CallID != p.CallID {
		t.Errorf("missed-call push for call %q, the test call was %q", m.CallID, p.CallID)
	}
}
