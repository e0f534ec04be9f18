package peertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A throwaway ejabberd (Debian 12: 23.01) as the test's own process.
//
// ejabberd is an Erlang release, and ejabberdctl would run it as the
// ejabberd user with the system's cookie, node name and epmd. Instead the
// VM is started here with erl directly, as whoever runs the test (root
// under CI works), with its own node name and cookie, and with Erlang
// distribution on a free 127.0.0.1 port and no epmd at all
// (-erl_epmd_port, -start_epmd false): nothing is registered with, or
// left behind in, a shared epmd, and parallel tests or a system instance
// cannot collide with it. The only process group it has is the one Start
// kills at cleanup.

// EjabberdComponent is an XEP-0114 external component ejabberd accepts
// (an ejabberd_service listener entry).
type EjabberdComponent struct {
	Domain string // e.g. "push.localhost"
	Secret string
}

// EjabberdOptions configures a throwaway ejabberd. The zero value is a
// usable server for "localhost".
type EjabberdOptions struct {
	// Domain is the only entry of hosts; default "localhost".
	Domain string
	// Components are served by one ejabberd_service listener on a free
	// 127.0.0.1 port (ComponentAddr).
	Components []EjabberdComponent
	// Modules are enabled besides EjabberdBaseModules, or replace a base
	// module's options: name -> options (nil: defaults). Option values may
	// be bool, int, string, []string or time.Duration (written as whole
	// seconds, the unit of ejabberd's timeouts).
	Modules map[string]map[string]any
	// ResumeTimeout is mod_stream_mgmt's resume_timeout; default 300 s.
	ResumeTimeout time.Duration
	// Users are registered as the server starts (Register adds more).
	Users map[string]string
	// LogLevel is ejabberd's loglevel (logged to the test log); default
	// "info".
	LogLevel string
	// StartTimeout bounds start-up (VM, users, listeners); default 30 s.
	StartTimeout time.Duration
}

// EjabberdServer is a running ejabberd started by Ejabberd.
type EjabberdServer struct {
	Domain        string
	Addr          string // c2s (STARTTLS) host:port on 127.0.0.1
	ComponentAddr string // XEP-0114 host:port, empty without components
	Dir           string // temp dir: config, cert, spool, logs, HOME
	ConfigFile    string
	Node          string // Erlang node name
	Proc          *Process

	cookie   string
	distPort int
	env      []string
}

// EjabberdBaseModules are always enabled: the counterparts of
// ProsodyBaseModules, plus mod_adhoc (XEP-0050 routing) and mod_client_state
// (which mod_push_keepalive wants). mod_stream_mgmt gets ResumeTimeout.
var EjabberdBaseModules = []string{"mod_adhoc", "mod_carboncopy", "mod_client_state", "mod_disco",
	"mod_offline", "mod_ping", "mod_roster", "mod_stream_mgmt"}

// EjabberdPushModules is EjabberdOptions.Modules for XEP-0357: mod_push with
// the given options (nil: ejabberd's defaults, which are
// include_sender false and include_body "New message", a fixed text) and
// mod_push_keepalive, which keeps a push-enabled session resumable for
// days instead of resume_timeout.
func EjabberdPushModules(push map[string]any) map[string]map[string]any {
	return map[string]map[string]any{"mod_push": push, "mod_push_keepalive": nil}
}

// ejabberdLibs is the ERL_LIBS directory that holds ejabberd's
// application, "" when ejabberd is not installed. Debian puts it under the
// multiarch lib dir, which erl does not search by itself.
func ejabberdLibs() string {
	for _, pat := range []string{"/usr/lib/*/ejabberd-*/ebin/ejabberd.app", "/usr/lib/erlang/lib/ejabberd-*/ebin/ejabberd.app"} {
		if m, _ := filepath.Glob(pat); len(m) > 0 {
			return filepath.Dir(filepath.Dir(filepath.Dir(m[0])))
		}
	}
	return ""
}

func probeEjabberd() string {
	if _, err := exec.LookPath("erl"); err != nil {
		return "erl not found in PATH (apt-get install ejabberd)"
	}
	if ejabberdLibs() == "" {
		return "ejabberd's Erlang application not found (apt-get install ejabberd)"
	}
	return ""
}

// Ejabberd starts ejabberd for the test and stops it on cleanup.
func Ejabberd(t testing.TB, opts EjabberdOptions) *EjabberdServer {
	t.Helper()
	RequirePeer(t, PeerEjabberd)
	if opts.Domain == "" {
		opts.Domain = "localhost"
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.ResumeTimeout == 0 {
		opts.ResumeTimeout = 300 * time.Second
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	dir := t.TempDir()
	for _, d := range []string{"spool", "logs"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	tag := randomHex(t, 6)
	s := &EjabberdServer{
		Domain:     opts.Domain,
		Dir:        dir,
		ConfigFile: filepath.Join(dir, "ejabberd.yml"),
		Node:       "peertest_" + tag + "@localhost",
		cookie:     randomHex(t, 16),
	}
	certFile, keyFile := SelfSigned(t, dir, opts.Domain)
	ports := FreePorts(t, 3)
	s.Addr = Loopback(ports[0])
	if len(opts.Components) > 0 {
		s.ComponentAddr = Loopback(ports[1])
	}
	s.distPort = ports[2]
	if err := os.WriteFile(s.ConfigFile, []byte(s.config(opts, ports, certFile, keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	s.env = ejabberdEnv(dir,
		"EJABBERD_CONFIG_PATH="+s.ConfigFile,
		"EJABBERD_LOG_PATH="+filepath.Join(dir, "logs", "ejabberd.log"))

	// The VM starts ejabberd and registers the users itself, then says so
	// on stdout: an ejabberd_ctl VM per user would cost seconds.
	ready := make(chan struct{})
	var once sync.Once
	cmd := exec.Command("erl", append(s.erlArgs(s.Node),
		// Distribution only on loopback.
		"-kernel", "inet_dist_use_interface", "{127,0,0,1}",
		"-noinput",
		"-mnesia", "dir", erlString(filepath.Join(dir, "spool")),
		"-eval", startEval(opts.Domain, opts.Users))...)
	cmd.Dir = dir
	cmd.Env = s.env
	cmd.Stdout = &lineSink{fn: func(l []byte) {
		if string(l) == ejabberdReady {
			once.Do(func() { close(ready) })
		}
	}}
	s.Proc = Start(t, "ejabberd", cmd)

	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	select {
	case <-ready:
	case <-s.Proc.Done():
		t.Fatalf("peertest: ejabberd did not start: %v", s.Proc.Exited())
	case <-ctx.Done():
		t.Fatalf("peertest: ejabberd did not start within %v", opts.StartTimeout)
	}
	for _, addr := range []string{s.Addr, s.ComponentAddr} {
		if addr == "" {
			continue
		}
		if err := WaitPort(ctx, addr, s.Proc.Exited); err != nil {
			t.Fatalf("peertest: ejabberd did not start: %v", err)
		}
	}
	return s
}

const ejabberdReady = "peertest: ejabberd ready"

// startEval is the VM's -eval: start ejabberd, register users, print
// ejabberdReady. Any failure ends the VM (erl halts when -eval fails).
func startEval(domain string, users map[string]string) string {
	var b strings.Builder
	b.WriteString("{ok, _} = application:ensure_all_started(ejabberd), ")
	for _, u := range slices.Sorted(maps.Keys(users)) {
		fmt.Fprintf(&b, "ok = ejabberd_auth:try_register(%s, %s, %s), ", erlBinary(u), erlBinary(domain), erlBinary(users[u]))
	}
	fmt.Fprintf(&b, "io:format(\"~s~n\", [%s]).", erlString(ejabberdReady))
	return b.String()
}

// ejabberdEnv is the environment of the VM and of ejabberd_ctl: the
// caller's, without anything that could point Erlang or ejabberd at the
// system instance, with HOME in dir so no .erlang.cookie is read or
// written elsewhere.
func ejabberdEnv(dir string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "HOME", k == "ERL_LIBS", k == "ERL_CRASH_DUMP",
			strings.HasPrefix(k, "EJABBERD"), strings.HasPrefix(k, "ERL_EPMD"),
			k == "ERL_FLAGS", k == "ERL_AFLAGS", k == "ERL_ZFLAGS":
			continue
		}
		env = append(env, kv)
	}
	return append(env, append([]string{
		"HOME=" + dir,
		"ERL_LIBS=" + ejabberdLibs(),
		"ERL_CRASH_DUMP=" + filepath.Join(dir, "logs", "erl_crash.dump"),
	}, extra...)...)
}

// erlArgs are the flags every VM talking to this node needs: its name,
// the cookie, and distribution straight on distPort without epmd.
func (s *EjabberdServer) erlArgs(name string) []string {
	return []string{"-sname", name, "-setcookie", s.cookie,
		"-erl_epmd_port", fmt.Sprint(s.distPort), "-start_epmd", "false"}
}

func (s *EjabberdServer) config(opts EjabberdOptions, ports []int, certFile, keyFile string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# written by pushd internal/peertest")
	w("hosts: [%s]", yamlValue(opts.Domain))
	w("loglevel: %s", yamlValue(opts.LogLevel))
	w("certfiles: [%s, %s]", yamlValue(certFile), yamlValue(keyFile))
	// No certificates are fetched and no stanza leaves for another server:
	// peers talk to 127.0.0.1 only.
	w("acme: {auto: false}")
	w("s2s_access: none")
	w("auth_method: internal")
	// SCRAM-SHA-256 is what the slixmpp peers use (peerlib.MECH).
	w("auth_password_format: scram")
	w("auth_scram_hash: sha256")
	w("acl: {local: {user_regexp: \"\"}}")
	w("access_rules: {local: {allow: local}, c2s: {allow: all}}")
	w("listen:")
	w("  - port: %d", ports[0])
	w("    ip: \"127.0.0.1\"")
	w("    module: ejabberd_c2s")
	w("    access: c2s")
	w("    starttls: true")
	w("    starttls_required: true")
	if len(opts.Components) > 0 {
		w("  - port: %d", ports[1])
		w("    ip: \"127.0.0.1\"")
		w("    module: ejabberd_service")
		w("    hosts:")
		for _, c := range opts.Components {
			w("      %s: {password: %s}", yamlValue(c.Domain), yamlValue(c.Secret))
		}
	}
	mods := map[string]map[string]any{}
	for _, m := range EjabberdBaseModules {
		mods[m] = nil
	}
	mods["mod_stream_mgmt"] = map[string]any{"resume_timeout": opts.ResumeTimeout}
	maps.Copy(mods, opts.Modules)
	w("modules:")
	for _, m := range slices.Sorted(maps.Keys(mods)) {
		o := mods[m]
		if len(o) == 0 {
			w("  %s: {}", m)
			continue
		}
		w("  %s:", m)
		for _, k := range slices.Sorted(maps.Keys(o)) {
			w("    %s: %s", k, yamlValue(o[k]))
		}
	}
	return b.String()
}

// yamlValue writes v in YAML flow style; JSON strings are valid YAML
// double-quoted scalars.
func yamlValue(v any) string {
	switch v := v.(type) {
	case time.Duration:
		return fmt.Sprint(int64(v / time.Second))
	case string, bool, int, int64, []string:
		b, _ := json.Marshal(v)
		return string(b)
	default:
		panic(fmt.Sprintf("peertest: no YAML form for %T", v))
	}
}

// erlString is s as an Erlang string term.
func erlString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// erlBinary is s as an Erlang UTF-8 binary term.
func erlBinary(s string) string {
	return "<<" + erlString(s) + "/utf8>>"
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// JID returns user@domain.
func (s *EjabberdServer) JID(user string) string { return user + "@" + s.Domain }

// PID is the VM's process id.
func (s *EjabberdServer) PID() int { return s.Proc.PID() }

// Stop stops ejabberd now (it is also stopped on cleanup).
func (s *EjabberdServer) Stop() { s.Proc.Stop(5 * time.Second) }

// Ctl runs one ejabberd_ctl command (what `ejabberdctl ARGS...` runs)
// against this node from a hidden VM that does not listen itself, and
// returns its output. About 0.5 s per call.
func (s *EjabberdServer) Ctl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append(s.erlArgs("ctl_"+randomHex(t, 6)+"@localhost"),
		"-dist_listen", "false", "-hidden", "-noinput",
		"-s", "ejabberd_ctl", "-extra", s.Node)
	cmd := exec.Command("erl", append(argv, args...)...)
	cmd.Dir = s.Dir
	cmd.Env = s.env
	out, err := Run(ctx, t, "ejabberdctl", cmd)
	return string(out), err
}

// Register creates an account.
func (s *EjabberdServer) Register(t testing.TB, user, password string) {
	t.Helper()
	if out, err := s.Ctl(t, "register", user, s.Domain, password); err != nil {
		t.Fatalf("peertest: ejabberdctl register %s: %v (%s)", user, err, out)
	}
}
