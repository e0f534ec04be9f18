package peertest

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ProsodyComponent is an XEP-0114 external component Prosody accepts.
type ProsodyComponent struct {
	Domain string // e.g. "push.example.test"
	Secret string
}

// ProsodyOptions configures a throwaway Prosody 0.12. The zero value is a
// usable server for "example.test".
type ProsodyOptions struct {
	// Domain is the VirtualHost; default "example.test".
	Domain string
	// ExtraModules are enabled in addition to the base set (roster,
	// saslauth, tls, disco, ping, carbons, smacks, csi, offline), e.g.
	// "cloud_notify" from prosody-modules. Modules that come from
	// prosody-modules are checked with RequirePeer.
	ExtraModules []string
	// Components are XEP-0114 components; when any is set, ComponentAddr
	// is a free port on 127.0.0.1.
	Components []ProsodyComponent
	// Options are extra global options written as Lua, e.g.
	// {"push_notification_with_body": true}. Values may be bool, int,
	// float64, string, []string or time.Duration (written as seconds).
	Options map[string]any
	// HibernationTime is smacks_hibernation_time (Prosody's default is
	// 600 s when zero).
	HibernationTime time.Duration
	// Users are registered with prosodyctl once the server runs.
	Users map[string]string
	// LogLevel is the minimum level logged to the test log; default "info".
	LogLevel string
	// MaxFiles raises the server's open-file limit (ulimit -n) when > 0,
	// for benches with many sessions; capped at the hard limit.
	MaxFiles int
	// StartTimeout bounds the wait for the listeners; default 30 s.
	StartTimeout time.Duration
}

// ProsodyServer is a running Prosody started by Prosody.
type ProsodyServer struct {
	Domain        string
	Addr          string // c2s (STARTTLS) host:port on 127.0.0.1
	ComponentAddr string // XEP-0114 host:port, empty without components
	Dir           string // temp dir holding config, data, cert, pidfile
	ConfigFile    string
	DataDir       string
	CertFile      string
	KeyFile       string
	Proc          *Process
}

// ProsodyBaseModules are always enabled.
var ProsodyBaseModules = []string{"roster", "saslauth", "tls", "disco", "ping", "carbons", "smacks", "csi", "offline"}

// ProsodyModuleInstalled reports whether mod_<name> is in
// ProsodyModulesDir, either built in (mod_x.lua) or from prosody-modules
// (mod_x/mod_x.lua).
func ProsodyModuleInstalled(name string) bool {
	for _, p := range []string{"mod_" + name + ".lua", filepath.Join("mod_"+name, "mod_"+name+".lua")} {
		if _, err := os.Stat(filepath.Join(ProsodyModulesDir, p)); err == nil {
			return true
		}
	}
	return false
}

// Prosody starts Prosody 0.12 for the test and stops it on cleanup.
func Prosody(t testing.TB, opts ProsodyOptions) *ProsodyServer {
	t.Helper()
	RequirePeer(t, PeerProsody)
	for _, m := range opts.ExtraModules {
		if !ProsodyModuleInstalled(m) {
			why := fmt.Sprintf("module %s not in %s (apt-get install prosody-modules)", m, ProsodyModulesDir)
			if InCI() {
				t.Fatalf("peer prosody-modules missing under CI: %s", why)
			}
			t.Skip(why)
		}
	}
	if opts.Domain == "" {
		opts.Domain = "example.test"
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	dir := t.TempDir()
	s := &ProsodyServer{
		Domain:     opts.Domain,
		Dir:        dir,
		ConfigFile: filepath.Join(dir, "prosody.cfg.lua"),
		DataDir:    filepath.Join(dir, "data"),
	}
	if err := os.Mkdir(s.DataDir, 0o750); err != nil {
		t.Fatal(err)
	}
	s.CertFile, s.KeyFile = SelfSigned(t, dir, opts.Domain)

	ports := FreePorts(t, 2)
	s.Addr = Loopback(ports[0])
	if len(opts.Components) > 0 {
		s.ComponentAddr = Loopback(ports[1])
	}
	if err := os.WriteFile(s.ConfigFile, []byte(s.config(opts, ports)), 0o644); err != nil {
		t.Fatal(err)
	}

	var cmd *exec.Cmd
	if opts.MaxFiles > 0 {
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && uint64(opts.MaxFiles) > lim.Max {
			opts.MaxFiles = int(lim.Max)
		}
		cmd = exec.Command("/bin/sh", "-c", `ulimit -n "$0" && exec prosody --config "$1" -F`,
			strconv.Itoa(opts.MaxFiles), s.ConfigFile)
	} else {
		cmd = exec.Command("prosody", "--config", s.ConfigFile, "-F")
	}
	cmd.Dir = dir
	s.Proc = Start(t, "prosody", cmd)

	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	for _, addr := range []string{s.Addr, s.ComponentAddr} {
		if addr == "" {
			continue
		}
		if err := WaitPort(ctx, addr, s.Proc.Exited); err != nil {
			t.Fatalf("peertest: prosody did not start: %v", err)
		}
	}
	names := make([]string, 0, len(opts.Users))
	for u := range opts.Users {
		names = append(names, u)
	}
	sort.Strings(names)
	for _, u := range names {
		s.Register(t, u, opts.Users[u])
	}
	return s
}

func (s *ProsodyServer) config(opts ProsodyOptions, ports []int) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	mods := append(slices.Clone(ProsodyBaseModules), opts.ExtraModules...)
	w("-- written by pushd internal/peertest")
	w("run_as_root = true")
	w("daemonize = false")
	w("pidfile = %s", luaValue(filepath.Join(s.Dir, "prosody.pid")))
	w("data_path = %s", luaValue(s.DataDir))
	w("plugin_paths = { %s }", luaValue(ProsodyModulesDir))
	w("log = { { levels = { min = %s }; to = \"console\"; timestamps = true; } }", luaValue(opts.LogLevel))
	w("interfaces = { \"127.0.0.1\" }")
	w("local_interfaces = { \"127.0.0.1\" }")
	w("c2s_interfaces = { \"127.0.0.1\" }")
	w("c2s_ports = { %d }", ports[0])
	w("c2s_direct_tls_ports = { }")
	w("component_interfaces = { \"127.0.0.1\" }")
	if len(opts.Components) > 0 {
		w("component_ports = { %d }", ports[1])
	} else {
		w("component_ports = { }")
	}
	w("s2s_ports = { }")
	w("s2s_direct_tls_ports = { }")
	w("http_ports = { }")
	w("https_ports = { }")
	w("modules_enabled = { %s }", luaList(mods))
	w("modules_disabled = { \"s2s\" }")
	w("c2s_require_encryption = true")
	w("allow_registration = false")
	w("authentication = \"internal_hashed\"")
	w("password_hash = \"SHA-256\"")
	w("default_iteration_count = %d", scramIterations)
	w("storage = \"internal\"")
	w("certificates = %s", luaValue(s.Dir))
	w("ssl = { certificate = %s; key = %s; }", luaValue(s.CertFile), luaValue(s.KeyFile))
	if opts.HibernationTime > 0 {
		w("smacks_hibernation_time = %d", int(opts.HibernationTime.Seconds()))
	}
	keys := make([]string, 0, len(opts.Options))
	for k := range opts.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w("%s = %s", k, luaValue(opts.Options[k]))
	}
	w("")
	w("VirtualHost %s", luaValue(opts.Domain))
	w("  ssl = { certificate = %s; key = %s; }", luaValue(s.CertFile), luaValue(s.KeyFile))
	for _, c := range opts.Components {
		w("")
		w("Component %s", luaValue(c.Domain))
		w("  component_secret = %s", luaValue(c.Secret))
	}
	return b.String()
}

func luaValue(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v) // Go escapes are valid Lua for the strings we write
	case bool:
		return strconv.FormatBool(v)
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case time.Duration:
		return strconv.FormatFloat(v.Seconds(), 'g', -1, 64)
	case []string:
		return "{ " + luaList(v) + " }"
	default:
		panic(fmt.Sprintf("peertest: no Lua form for %T", v))
	}
}

func luaList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = luaValue(s)
	}
	return strings.Join(q, ", ")
}

// PID is Prosody's process id, for RSS and CPU measurements.
func (s *ProsodyServer) PID() int { return s.Proc.PID() }

// JID returns user@domain.
func (s *ProsodyServer) JID(user string) string { return user + "@" + s.Domain }

// Stop stops Prosody now (it is also stopped on cleanup).
func (s *ProsodyServer) Stop() { s.Proc.Stop(5 * time.Second) }

// Register creates an account with prosodyctl (the normal path, about
// 0.3 s per user). For many users use AddAccounts.
func (s *ProsodyServer) Register(t testing.TB, user, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.Command("prosodyctl", "--config", s.ConfigFile, "register", user, s.Domain, password)
	cmd.Dir = s.Dir
	if out, err := Run(ctx, t, "prosodyctl", cmd); err != nil {
		t.Fatalf("peertest: prosodyctl register %s: %v (%s)", user, err, out)
	}
}

// scramIterations is the PBKDF2 count of accounts written here (RFC 7677's
// minimum). Clients derive the key at each login, so it stays low.
const scramIterations = 4096

// AddAccounts writes SCRAM-SHA-256 accounts straight into Prosody's data
// directory in mod_auth_internal_hashed's format (password_hash =
// "SHA-256"), all with the same password. Prosody reads account files at
// login time, so this works while it runs and takes microseconds per user.
func (s *ProsodyServer) AddAccounts(t testing.TB, password string, users ...string) {
	t.Helper()
	if err := WriteProsodyAccounts(s.DataDir, s.Domain, password, users...); err != nil {
		t.Fatal(err)
	}
}

// WriteProsodyAccounts is AddAccounts without a test, for benches.
func WriteProsodyAccounts(dataDir, domain, password string, users ...string) error {
	dir := filepath.Join(dataDir, prosodyEncode(domain), "accounts")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	salt := rand.Text()
	salted, err := pbkdf2.Key(sha256.New, password, []byte(salt), scramIterations, sha256.Size)
	if err != nil {
		return err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	serverKey := mac(salted, "Server Key")
	body := fmt.Sprintf("return {\n\t[\"iteration_count\"] = %d;\n\t[\"salt\"] = %s;\n\t[\"server_key\"] = %q;\n\t[\"stored_key\"] = %q;\n};\n",
		scramIterations, luaValue(salt), hex.EncodeToString(serverKey), hex.EncodeToString(stored[:]))
	for _, u := range users {
		if err := os.WriteFile(filepath.Join(dir, prosodyEncode(u)+".dat"), []byte(body), 0o640); err != nil {
			return err
		}
	}
	return nil
}

// prosodyEncode is util.datamanager's encode: every non-alphanumeric byte
// becomes %xx.
func prosodyEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}
