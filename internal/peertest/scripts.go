package peertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// ScriptTimeout bounds one peer script run.
var ScriptTimeout = 90 * time.Second

// Result is the JSON object a peer script prints on its last line.
type Result map[string]any

// Slixmpp runs /usr/bin/python3 testdata/peers/<script> args... with a
// timeout, logs its output to t, fails the test on a non-zero exit and
// returns the JSON object printed on its last line.
func Slixmpp(t testing.TB, script string, args ...string) Result {
	t.Helper()
	RequirePeer(t, PeerSlixmpp)
	path := filepath.Join(PeersDir(t), script)
	cmd := exec.Command(Python, append([]string{"-u", path}, args...)...)
	cmd.Dir = filepath.Dir(path)
	return runScript(t, script, cmd, nil)
}

// SlixmppExpectFail is Slixmpp for scripts that must exit non-zero; it
// returns the JSON line they printed, if any, and the exit error.
func SlixmppExpectFail(t testing.TB, script string, args ...string) (Result, error) {
	t.Helper()
	RequirePeer(t, PeerSlixmpp)
	path := filepath.Join(PeersDir(t), script)
	cmd := exec.Command(Python, append([]string{"-u", path}, args...)...)
	cmd.Dir = filepath.Dir(path)
	var err error
	res := runScript(t, script, cmd, &err)
	return res, err
}

// Node runs node testdata/peers/node/<script> args... like Slixmpp, after
// making sure the packages in testdata/peers/node are installed.
func Node(t testing.TB, script string, args ...string) Result {
	t.Helper()
	RequirePeer(t, PeerNode)
	dir := NodeModules(t)
	cmd := exec.Command("node", append([]string{filepath.Join(dir, script)}, args...)...)
	cmd.Dir = dir
	// Servers under test use self-signed certificates.
	cmd.Env = append(os.Environ(), "NODE_TLS_REJECT_UNAUTHORIZED=0", "NODE_NO_WARNINGS=1")
	return runScript(t, "node "+script, cmd, nil)
}

var npmOnce struct {
	sync.Mutex
	done bool
	err  error
}

// NodeModules makes sure testdata/peers/node/node_modules exists, running
// `npm ci` (offline-first) once per test binary if it does not, and returns
// testdata/peers/node. Under CI, .ci/run installs the packages first.
func NodeModules(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(PeersDir(t), "node")
	npmOnce.Lock()
	defer npmOnce.Unlock()
	if !npmOnce.done {
		npmOnce.done = true
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@xmpp", "client", "package.json")); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--prefer-offline")
			cmd.Dir = dir
			if out, err := Run(ctx, t, "npm ci", cmd); err != nil {
				npmOnce.err = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
			}
		}
	}
	if npmOnce.err != nil {
		t.Fatal(npmOnce.err)
	}
	return dir
}

func runScript(t testing.TB, name string, cmd *exec.Cmd, expectFail *error) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ScriptTimeout)
	defer cancel()
	start := time.Now()
	out, err := Run(ctx, t, name, cmd)
	t.Logf("%s finished in %v (err=%v)", name, time.Since(start).Round(time.Millisecond), err)
	res, perr := lastJSON(out)
	if expectFail != nil {
		*expectFail = err
		if err == nil {
			t.Fatalf("%s: exited 0, want a failure", name)
		}
		return res
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if perr != nil {
		t.Fatalf("%s: %v", name, perr)
	}
	return res
}

// lastJSON parses the last non-empty line of out as a JSON object.
func lastJSON(out []byte) (Result, error) {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		l := bytes.TrimSpace(lines[i])
		if len(l) == 0 {
			continue
		}
		if l[0] != '{' {
			break
		}
		var r Result
		if err := json.Unmarshal(l, &r); err != nil {
			return nil, fmt.Errorf("last line is not JSON: %v: %s", err, l)
		}
		return r, nil
	}
	return nil, fmt.Errorf("no JSON object on the last line of the output")
}

// Strings reads a JSON array of strings from r[key].
func (r Result) Strings(key string) []string {
	v, _ := r[key].([]any)
	out := make([]string, 0, len(v))
	for _, x := range v {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// Bool reads r[key] as a bool (false if absent).
func (r Result) Bool(key string) bool { b, _ := r[key].(bool); return b }

// String reads r[key] as a string.
func (r Result) String(key string) string { s, _ := r[key].(string); return s }

// Int reads r[key] as an integer.
func (r Result) Int(key string) int { f, _ := r[key].(float64); return int(f) }

// Sub reads r[key] as a nested object.
func (r Result) Sub(key string) Result { m, _ := r[key].(map[string]any); return Result(m) }

// ServerArgs is the common argv of every peer script: --host, --port and
// --domain of the server under test.
func ServerArgs(t testing.TB, addr, domain string) []string {
	t.Helper()
	host, port := splitAddr(t, addr)
	return []string{"--host", host, "--port", fmt.Sprint(port), "--domain", domain}
}
