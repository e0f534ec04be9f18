// Package peertest runs real peers against the server under test: on the
// XMPP side a throwaway Prosody 0.12 (the reference server) or ejabberd
// 23.01, slixmpp scripts and @xmpp/client scripts from testdata/peers; on
// the SIP side sipp scenarios (testdata/sipp), baresip 1.0 as a user agent
// and Kamailio 5.6 as an upstream proxy (testdata/kamailio).
//
// It owns process lifetime and wiring only: free ports on 127.0.0.1, temp
// configs, certificates, logs into the test log, cleanup of every process it
// starts. It is imported by tests only and must never be imported by
// production code. Peers talk to 127.0.0.1 and nothing else.
//
// A missing peer (binary, Python module, Prosody module) skips the test on a
// developer machine and fails it under CI (CI=true): in CI a missing peer is a
// broken install, never a silent skip.
package peertest

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Peer names understood by RequirePeer.
const (
	PeerProsody     = "prosody"      // prosody and prosodyctl binaries
	PeerCloudNotify = "cloud_notify" // mod_cloud_notify from prosody-modules
	PeerSlixmpp     = "slixmpp"      // python3-slixmpp importable by /usr/bin/python3
	PeerNode        = "node"         // node and npm
	PeerSIPp        = "sipp"         // sipp from sip-tester
	PeerBaresip     = "baresip"      // baresip 1.0 with its modules (aubridge, g711, menu, ctrl_tcp)
	PeerKamailio    = "kamailio"     // kamailio 5.6
	PeerEjabberd    = "ejabberd"     // erl and ejabberd's Erlang application
	// PeerSystemdAnalyze is systemd-analyze (Debian package systemd), which
	// checks the shipped unit.
	PeerSystemdAnalyze = "systemd-analyze"
)

// Python is the interpreter that can import Debian's slixmpp; the python3
// on PATH may be another one.
const Python = "/usr/bin/python3"

// ProsodyModulesDir is where Debian installs Prosody's own modules and
// prosody-modules (one directory per module: mod_x/mod_x.lua).
const ProsodyModulesDir = "/usr/lib/prosody/modules"

// InCI reports whether the tests run under CI (env CI=true).
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

var peerCache sync.Map // name -> string (empty: present; else why missing)

// RequirePeer checks that the named peer is installed. If it is not, the
// test is skipped locally and fails under CI.
func RequirePeer(t testing.TB, name string) {
	t.Helper()
	why := missing(name)
	if why == "" {
		return
	}
	if InCI() {
		t.Fatalf("peer %s missing under CI: %s", name, why)
	}
	t.Skipf("peer %s missing: %s (would fail under CI=true)", name, why)
}

func missing(name string) string {
	if v, ok := peerCache.Load(name); ok {
		return v.(string)
	}
	why := probe(name)
	peerCache.Store(name, why)
	return why
}

func probe(name string) string {
	lookPath := func(bins ...string) string {
		for _, b := range bins {
			if _, err := exec.LookPath(b); err != nil {
				return b + " not found in PATH"
			}
		}
		return ""
	}
	switch name {
	case PeerProsody:
		return lookPath("prosody", "prosodyctl")
	case PeerCloudNotify:
		if why := lookPath("prosody"); why != "" {
			return why
		}
		if _, err := os.Stat(filepath.Join(ProsodyModulesDir, "mod_cloud_notify", "mod_cloud_notify.lua")); err != nil {
			return "mod_cloud_notify not installed (apt-get install prosody-modules)"
		}
		return ""
	case PeerSlixmpp:
		if _, err := os.Stat(Python); err != nil {
			return Python + " not found"
		}
		out, err := exec.Command(Python, "-c", "import slixmpp; print(slixmpp.__version__)").CombinedOutput()
		if err != nil {
			return "slixmpp not importable by " + Python + ": " + string(bytes.TrimSpace(out))
		}
		return ""
	case PeerNode:
		return lookPath("node", "npm")
	case PeerSIPp:
		return lookPath("sipp")
	case PeerEjabberd:
		return probeEjabberd()
	case PeerBaresip:
		if why := lookPath("baresip"); why != "" {
			return why
		}
		for _, m := range baresipModules {
			if _, err := os.Stat(filepath.Join(BaresipModulesDir, m)); err != nil {
				return "baresip module " + m + " not in " + BaresipModulesDir
			}
		}
		return ""
	default:
		if _, err := exec.LookPath(name); err != nil {
			return name + " not found in PATH"
		}
		return ""
	}
}

// RepoRoot returns the module root (the directory holding go.mod), found by
// walking up from the test's working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("peertest: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// testdataFile finds testdata/dir/name from this file's place in the
// tree (a test's working directory is its own package's).
func testdataFile(t testing.TB, dir, name string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("peertest: no caller")
	}
	p := filepath.Join(filepath.Dir(file), "..", "..", "testdata", dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("peertest: %s/%s: %v", dir, name, err)
	}
	return p
}

// PeersDir is testdata/peers under the repository root.
func PeersDir(t testing.TB) string {
	return filepath.Join(RepoRoot(t), "testdata", "peers")
}

// logWriter sends each complete line written to it to t.Log with a prefix.
type logWriter struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	buf    []byte
	keep   io.Writer // optional copy of everything written
}

func newLogWriter(t testing.TB, prefix string, keep io.Writer) *logWriter {
	return &logWriter{t: t, prefix: prefix, keep: keep}
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.keep != nil {
		w.keep.Write(p)
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// flush logs a trailing partial line.
func (w *logWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.t.Log(w.prefix + string(w.buf))
		w.buf = nil
	}
}
