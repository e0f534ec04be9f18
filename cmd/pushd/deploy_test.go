package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"pushd/internal/peertest"
)

// The packaging of BEHAVIOUR O7: every example config passes `pushd config
// check` the way its service runs it, a broken one fails with each problem
// named, and the systemd unit verifies.

// exampleConfigs are the shipped configs; the component-* ones are for
// `pushd component`.
func exampleConfigs(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../docs/deploy/*.toml")
	if err != nil || len(files) < 4 {
		t.Fatalf("docs/deploy examples: %v %v", files, err)
	}
	return append(files, "../../docs/pushd.example.toml")
}

// copyExample puts an example into a temp directory (as /etc/pushd) with
// the files it names: a certificate for its domain, an APNS .p8 key, an FCM
// service account. Paths in the examples must be relative to the file so
// that the check does not depend on this machine.
func copyExample(t *testing.T, src string, component bool) string {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "pushd.toml")
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var domain string
	var files map[string]string // path → kind
	if component {
		c, err := loadComponentConfig(dst, true)
		if err != nil {
			t.Fatal(err)
		}
		domain = c.Domain
		files = map[string]string{c.APNS.KeyFile: "p8", c.FCM.CredentialsFile: "fcm"}
	} else {
		c, err := loadConfig(dst)
		if err != nil {
			t.Fatal(err)
		}
		domain = c.Domain
		files = map[string]string{c.C2S.CertFile: "cert", c.C2S.KeyFile: "key", c.APNS.KeyFile: "p8", c.FCM.CredentialsFile: "fcm"}
	}
	certPEM, keyPEM, err := selfSigned(domain)
	if err != nil {
		t.Fatal(err)
	}
	for path, kind := range files {
		if path == "" {
			continue
		}
		if !strings.HasPrefix(path, dir+string(filepath.Separator)) {
			t.Fatalf("%s names %s: not relative to the config file", src, path)
		}
		var body []byte
		switch kind {
		case "cert":
			body = certPEM
		case "key":
			body = keyPEM
		case "p8":
			body = pemKey(t, "ec")
		case "fcm":
			body, _ = json.Marshal(map[string]string{
				"type": "service_account", "project_id": "example-chat", "private_key_id": "1",
				"private_key": string(pemKey(t, "rsa")), "client_email": "pushd@example-chat.iam.gserviceaccount.com",
				"client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
			})
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// pemKey is a PKCS#8 private key: P-256 as Apple issues .p8 files, or the
// RSA key of a Google service account.
func pemKey(t *testing.T, kind string) []byte {
	t.Helper()
	var key any
	var err error
	if kind == "rsa" {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func configCheck(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(append([]string{"config", "check"}, args...), nil, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestConfigCheckExamples(t *testing.T) {
	for _, src := range exampleConfigs(t) {
		component := strings.HasPrefix(filepath.Base(src), "component-")
		t.Run(filepath.Base(src), func(t *testing.T) {
			path := copyExample(t, src, component)
			args := []string{path}
			if component {
				args = []string{"--component", path}
			}
			out, errOut, err := configCheck(args...)
			if err != nil || out != "ok\n" {
				t.Fatalf("config check: %v\nstdout: %s\nstderr: %s", err, out, errOut)
			}
		})
	}
}

// A broken file gets every problem named, one per line, and an error (a
// non-zero exit status); the same file stops serve before it starts.
func TestConfigCheckBroken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pushd.toml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	write("domain = \"example.org\"\n[c2s]\nlisten = \"0.0.0.0:52x2\"\nresume_timeot = \"5m\"\n[queue]\nmax_entrys = 1\n")
	_, errOut, err := configCheck(path)
	if err == nil || !strings.Contains(errOut, `unknown key "c2s.resume_timeot", "queue.max_entrys"`) {
		t.Errorf("unknown keys: %v\n%s", err, errOut)
	}

	// A value of the wrong form names its key and line.
	write("domain = \"example.org\"\n[c2s]\nresume_timeout = \"5 minutes\"\n")
	_, errOut, err = configCheck(path)
	if err == nil || !strings.Contains(errOut, "line 3") || !strings.Contains(errOut, "c2s.resume_timeout") {
		t.Errorf("bad duration: %v\n%s", err, errOut)
	}

	write(`domain = "example.org"
data_dir = "data"
[c2s]
listen = "0.0.0.0:52x2"
tls_listen = "5223"
cert_file = "missing.pem"
key_file = "missing-key.pem"
[storage]
sync = "sometimes"
[log]
level = "loud"
[cluster]
node_name = "n1"
secret_key = "c2hvcnQ="
[apns]
topic = "org.example.chat"
key_file = "AuthKey.p8"
key_id = "K"
team_id = "T"
`)
	out, errOut, err := configCheck(path)
	if err == nil || out != "" {
		t.Fatalf("broken config passed: %v %q", err, out)
	}
	for _, want := range []string{
		`c2s.listen "0.0.0.0:52x2": port must be a number`,
		`c2s.tls_listen "5223"`,
		"c2s.cert_file/key_file: open " + filepath.Join(dir, "missing.pem"),
		`storage.sync: store: unknown sync policy "sometimes"`,
		`log.level "loud"`,
		"cluster.secret_key must be base64 of 16, 24 or 32 bytes",
		"apns: auth key",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("no %q in\n%s", want, errOut)
		}
	}
	if n := strings.Count(errOut, "\n"); n != 7 {
		t.Errorf("%d lines for 7 problems:\n%s", n, errOut)
	}
	if !strings.Contains(err.Error(), "7 problem(s)") {
		t.Errorf("summary: %v", err)
	}
	// serve refuses the same file before it opens anything.
	var serveErr bytes.Buffer
	if err := run([]string{"serve", "--config", path}, nil, &serveErr, &serveErr); err == nil || !strings.Contains(err.Error(), "port must be a number") {
		t.Errorf("serve with a broken config: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("serve made its data dir before refusing the config: %v", err)
	}

	// Component mode wants [push] domain, secret and a router address.
	write("domain = \"example.org\"\n[push]\ndomain = \"push.example.org\"\nsecret = \"s\"\nrouter = \"localhost\"\n[fcm]\nproject_id = \"p\"\n")
	_, errOut, err = configCheck("--component", path)
	if err == nil || !strings.Contains(errOut, `push.router "localhost"`) || !strings.Contains(errOut, "fcm: credentials_file is required") {
		t.Errorf("component: %v\n%s", err, errOut)
	}

	if _, _, err := configCheck(filepath.Join(dir, "nonexistent.toml")); err == nil {
		t.Error("missing file passed")
	}
	if _, _, err := configCheck(); err == nil {
		t.Error("no file named passed")
	}
}

// systemd-analyze verify (syntax, known directives, executable ExecStart)
// and security (the hardening's exposure score) on the shipped unit, its
// ExecStart pointed at a built pushd.
func TestSystemdUnitVerifies(t *testing.T) {
	peertest.RequirePeer(t, peertest.PeerSystemdAnalyze)
	unit, err := os.ReadFile("../../docs/deploy/pushd.service")
	if err != nil {
		t.Fatal(err)
	}
	const shipped = "/usr/local/bin/pushd"
	if !bytes.Contains(unit, []byte("ExecStart="+shipped+" serve --config /etc/pushd/pushd.toml")) {
		t.Fatal("unit's ExecStart is not the documented one")
	}
	path := filepath.Join(t.TempDir(), "pushd.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte(shipped), []byte(pushdBinary(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	// Warnings (an unknown or misspelt directive) exit 0: any output fails.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// 0 is fully locked down, 10 not at all; the unit scores about 1.4.
	// --threshold is on the same scale times ten.
	out, err = exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=20", path).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: exposure above 2.0 (%v)\n%s", err, out)
	}
	for _, d := range []string{"User=pushd", "ProtectSystem=strict", "NoNewPrivileges=true", "StateDirectory=pushd",
		"PrivateTmp=true", "ProtectHome=true", "CapabilityBoundingSet=\n", "RestrictAddressFamilies=", "SystemCallFilter=@system-service"} {
		if !bytes.Contains(unit, []byte(d)) {
			t.Errorf("unit lacks %q", d)
		}
	}
}
