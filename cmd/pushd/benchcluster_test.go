package main

import (
	"os/exec"
	"strings"
	"testing"
)

// `pushd bench cluster`, small: three processes, a kill, and every figure
// printed (the figures are for docs/performance.md, not for the test). It
// fails if the survivors do not push for every message sent to the
// killed node's devices after the kill.
func TestBenchClusterSmall(t *testing.T) {
	out, err := exec.Command(pushdBinary(t), "bench", "cluster", "--sessions", "300", "--pairs", "2", "--messages", "200").CombinedOutput()
	if err != nil {
		t.Fatalf("bench cluster: %v\n%s", err, out)
	}
	for _, want := range []string{"lone node (local durability)", "cluster of 3 (backup holds each)", "replication applied by backups",
		"declared dead", "devices adopted", "first push from a survivor", "pushes for", "sent in the detection window", "connected to another node, relayed"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)
}
