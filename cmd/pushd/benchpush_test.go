package main

import (
	"bytes"
	"strings"
	"testing"
)

// `pushd bench push` runs both paths and reports a ratio (a small run:
// the figures are for docs/performance.md, not for the test).
func TestBenchPushSmall(t *testing.T) {
	var out, errb bytes.Buffer
	if err := cmdBenchPush([]string{"--pushes", "300", "--concurrency", "4", "--rounds", "1"}, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	for _, want := range []string{"apns2 raw", "publish→apns (end to end)", "round 1: end to end / raw ="} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}
