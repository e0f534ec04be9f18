package router

import (
	"testing"
	"time"

	"pushd/internal/stanza"
	"pushd/internal/xmpptest"
	"pushd/jsm"
)

// M10, issue 11: <enabled max=…/> announces the longest time the stream
// may stay resumable, whether the device enables push before <enable/>,
// after it, or never (resumeMax says why).
func TestEnabledAnnouncesLongestResume(t *testing.T) {
	for _, c := range []struct {
		name         string
		resume, push time.Duration
		pushFirst    bool
		want         string
	}{
		{"push enabled first", 300 * time.Second, 24 * time.Hour, true, "86400"},
		{"push enabled later or never", 300 * time.Second, 24 * time.Hour, false, "86400"},
		{"push timeout the shorter", 600 * time.Second, 120 * time.Second, true, "600"},
	} {
		t.Run(c.name, func(t *testing.T) {
			jcfg := jsm.DefaultConfig()
			jcfg.ResumeTimeout, jcfg.PushResumeTimeout = c.resume, c.push
			srv := testRouter(t, func(cfg *Config) {
				cfg.ResumeTimeout, cfg.PushResumeTimeout = c.resume, c.push
			}, jcfg)
			a := xmpptest.Dial(t, srv.Addr("c2s"), "localhost")
			if cond := a.AuthPlain("alice", "pw"); cond != "" {
				t.Fatal(cond)
			}
			a.Bind("phone")
			if c.pushFirst {
				a.Send(`<iq type='set' id='push1'><enable xmlns='urn:xmpp:push:0' jid='push.localhost' node='n1'/></iq>`)
				a.Expect("push enabled", func(e *stanza.Element) bool { return e.Get("id") == "push1" && e.Get("type") == "result" })
			}
			a.Send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
			el := a.Expect("enabled", func(e *stanza.Element) bool { return e.Is(stanza.NSSM, "enabled") })
			if got := el.Get("max"); got != c.want {
				t.Errorf("max=%q, want %s", got, c.want)
			}
		})
	}
}
