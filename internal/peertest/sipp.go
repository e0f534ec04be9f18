package peertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SIPpOptions run one sipp scenario from testdata/sipp.
type SIPpOptions struct {
	// Scenario is the file name under testdata/sipp (e.g. "caller.xml").
	Scenario string
	// Target is host:port of the SIP server; empty for a UAS scenario
	// that only waits for calls.
	Target string
	// Port is sipp's own UDP port on 127.0.0.1 (0: a free one).
	Port int
	// Keys are the scenario's [keyword]s (-key name value).
	Keys map[string]string
	// User and Password answer digest challenges ([authentication]);
	// AuthURI is the digest uri without its "sip:" (sipp adds it; its
	// default is the target's address, not the Request-URI).
	User, Password, AuthURI string
	// Timeout ends sipp with failure (default 30 s).
	Timeout time.Duration
}

// SIPp is a running sipp; its <log> actions' lines are in Log().
type SIPp struct {
	*Process
	Port    int
	logFile string
}

// StartSIPp starts sipp (Debian sip-tester) on 127.0.0.1 for one call of
// opts.Scenario. Wait for it with Wait.
func StartSIPp(t testing.TB, opts SIPpOptions) *SIPp {
	t.Helper()
	RequirePeer(t, PeerSIPp)
	if opts.Port == 0 {
		opts.Port = FreeUDPPort(t)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	dir := t.TempDir()
	s := &SIPp{Port: opts.Port, logFile: filepath.Join(dir, "sipp.log")}
	args := []string{"-sf", sippScenario(t, opts.Scenario), "-i", "127.0.0.1", "-p", strconv.Itoa(opts.Port),
		"-m", "1", "-nostdin", "-trace_logs", "-log_file", s.logFile, "-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
		"-timeout", strconv.Itoa(int(opts.Timeout/time.Second)) + "s", "-timeout_error", "-nd", "-t", "u1"}
	if opts.User != "" {
		args = append(args, "-au", opts.User, "-ap", opts.Password)
	}
	if opts.AuthURI != "" {
		args = append(args, "-auth_uri", opts.AuthURI)
	}
	keys := make([]string, 0, len(opts.Keys))
	for k := range opts.Keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-key", k, opts.Keys[k])
	}
	if opts.Target != "" {
		args = append(args, opts.Target)
	}
	cmd := exec.Command("sipp", args...)
	cmd.Dir = dir
	s.Process = Start(t, "sipp "+strings.TrimSuffix(opts.Scenario, ".xml"), cmd)
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "errors.log")); err == nil && len(b) > 0 && t.Failed() {
			t.Logf("sipp %s errors:\n%s", opts.Scenario, b)
		}
	})
	return s
}

// Wait waits for sipp to end and returns nil if its call succeeded.
func (s *SIPp) Wait(timeout time.Duration) error {
	select {
	case <-s.Done():
		return s.Err()
	case <-time.After(timeout):
		s.Kill()
		<-s.Done()
		return os.ErrDeadlineExceeded
	}
}

// Log returns the lines the scenario's <log> actions wrote.
func (s *SIPp) Log() string {
	b, _ := os.ReadFile(s.logFile)
	return string(b)
}

// sippScenario is testdata/sipp/name.
func sippScenario(t testing.TB, name string) string {
	t.Helper()
	return testdataFile(t, "sipp", name)
}
