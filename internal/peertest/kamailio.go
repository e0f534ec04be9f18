package peertest

import (
	"context"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"
)

// KamailioOptions run Kamailio 5.6 (Debian kamailio) with a config from
// testdata/kamailio.
type KamailioOptions struct {
	// Config is the file name under testdata/kamailio (default
	// "kamailio.cfg").
	Config string
	// Defines are the config's preprocessor defines (-A NAME="value").
	Defines map[string]string
}

// Kamailio is a running Kamailio; Addr is its UDP listener.
type Kamailio struct {
	*Process
	Addr string
}

// StartKamailio starts Kamailio in the foreground on a free UDP port of
// 127.0.0.1, logging to the test log, with its pid file and runtime
// files in a temp dir. It returns once it answers an OPTIONS.
func StartKamailio(t testing.TB, opts KamailioOptions) *Kamailio {
	t.Helper()
	RequirePeer(t, PeerKamailio)
	if opts.Config == "" {
		opts.Config = "kamailio.cfg"
	}
	cfg := kamailioConfig(t, opts.Config)
	dir := t.TempDir()
	k := &Kamailio{Addr: Loopback(FreeUDPPort(t))}
	// -DD: no daemon, the main process stays our child, so that its
	// process group (it and its workers) is the one Stop kills. Small
	// memory pools: it serves a handful of calls.
	args := []string{"-DD", "-E", "-f", cfg, "-w", dir, "-Y", dir, "-P", filepath.Join(dir, "kamailio.pid"),
		"-l", "udp:" + k.Addr, "-m", "32", "-M", "4"}
	names := make([]string, 0, len(opts.Defines))
	for n := range opts.Defines {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		args = append(args, "-A", n+"="+strconv.Quote(opts.Defines[n]))
	}
	cmd := exec.Command("kamailio", args...)
	cmd.Dir = dir
	k.Process = Start(t, "kamailio", cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitSIP(ctx, k.Addr, k.Exited); err != nil {
		t.Fatalf("peertest: kamailio did not start: %v", err)
	}
	return k
}

// kamailioConfig is testdata/kamailio/name.
func kamailioConfig(t testing.TB, name string) string {
	t.Helper()
	return testdataFile(t, "kamailio", name)
}
