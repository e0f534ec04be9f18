package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pushd/internal/xmpptest"
)

func runCmd(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, strings.NewReader(stdin), &out, &errb)
	if errb.Len() > 0 {
		t.Logf("stderr: %s", errb.String())
	}
	return out.String(), err
}

// `pushd user` works against a running node (through the admin API, since
// the node holds the database lock) and the new account logs in at once,
// over XMPP and SIP digest.
func TestUserCommandWhileRunning(t *testing.T) {
	n := startTestNode(t, nil)
	if _, err := runCmd(t, "s3cret\n", "user", "add", "--config", n.cfgFile, "erin"); err != nil {
		t.Fatalf("user add: %v", err)
	}
	if _, err := runCmd(t, "again\n", "user", "add", "--config", n.cfgFile, "erin@localhost"); err == nil {
		t.Fatal("adding an existing user succeeded")
	}
	out, err := runCmd(t, "", "user", "list", "--config", n.cfgFile)
	if err != nil || strings.TrimSpace(out) != "erin@localhost" {
		t.Fatalf("user list = %q, %v", out, err)
	}
	xmpptest.Login(t, n.c2s(), "localhost", "erin", "s3cret", "phone")
	// The admin API's path writes the SIP password too.
	checkSIPDigest(t, n.db.Accounts(), "localhost", "erin", "s3cret")

	if _, err := runCmd(t, "n3w\n", "user", "passwd", "--config", n.cfgFile, "erin"); err != nil {
		t.Fatalf("passwd: %v", err)
	}
	c := xmpptest.Dial(t, n.c2s(), "localhost")
	c.StartTLS()
	if got := c.AuthPlain("erin", "s3cret"); got != "not-authorized" {
		t.Errorf("old password after passwd: %q", got)
	}
	if got := c.AuthPlain("erin", "n3w"); got != "" {
		t.Errorf("new password: %q", got)
	}
	checkSIPDigest(t, n.db.Accounts(), "localhost", "erin", "n3w")
	if _, err := runCmd(t, "", "user", "del", "--config", n.cfgFile, "erin"); err != nil {
		t.Fatalf("del: %v", err)
	}
	if out, _ := runCmd(t, "", "user", "list", "--config", n.cfgFile); strings.TrimSpace(out) != "" {
		t.Errorf("after del: %q", out)
	}
}

// With no node running, `pushd user` opens the data directory itself, and
// a node started later serves the account.
func TestUserCommandOffline(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "pushd.toml")
	if err := os.WriteFile(cfgFile, []byte("data_dir = \"data\"\n[admin]\nlisten = \"127.0.0.1:1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(t, "pw\n", "user", "add", "--config", cfgFile, "frank"); err != nil {
		t.Fatalf("user add: %v", err)
	}
	if _, err := runCmd(t, "", "user", "add", "--config", cfgFile, "gina"); err == nil {
		t.Error("user add with no password on stdin succeeded")
	}
	n := startTestNode(t, func(c *fileConfig) { c.DataDir = filepath.Join(dir, "data") })
	xmpptest.Login(t, n.c2s(), "localhost", "frank", "pw", "pc")
}

func TestVersionAndUnknownCommand(t *testing.T) {
	if out, err := runCmd(t, "", "version"); err != nil || !strings.HasPrefix(out, "pushd ") {
		t.Errorf("version: %q %v", out, err)
	}
	if _, err := runCmd(t, "", "frobnicate"); err == nil {
		t.Error("unknown command succeeded")
	}
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.toml")
	_ = os.WriteFile(f, []byte("domian = \"x\"\n"), 0o600)
	if _, err := loadConfig(f); err == nil || !strings.Contains(err.Error(), "domian") {
		t.Errorf("typo in config: %v", err)
	}
}
