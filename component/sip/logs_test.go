package sip

import (
	"strings"
	"testing"
	"time"
)

// S3: what sipgo logs of bad input reaches the node's log, at warning
// and above, and names no user: its errors quote the Request-URI and the
// start line, and those are withheld.
func TestSipgoLogsNameNoUser(t *testing.T) {
	w := startWorld(t, func(c *Config) { c.Trusted = loopback() })
	p := dialPeer(t, "udp", w.addr())
	p.send(p.invite("mallory-the-user").without("Via").String())
	p.send("INVITE sip:mallory-the-user@" + testDomain + " SIP/3.0 extra\r\n\r\n")
	p.next(300 * time.Millisecond)
	w.stillServes(t)
	logs := w.logs.String()
	if !strings.Contains(logs, "sipgo: failed to parse") || !strings.Contains(logs, "sipgo: Server tx failed") {
		t.Fatalf("sipgo's lines do not reach the node's log:\n%s", logs)
	}
	if strings.Contains(logs, "mallory") {
		t.Errorf("a user is in the log in clear:\n%s", logs)
	}
}
