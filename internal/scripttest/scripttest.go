// Package scripttest replays data-driven test scripts in the manner of
// etcd raft's testdata, for the deterministic state machines (jsm, the
// failover protocol): each file is a sequence of commands (events in) and
// the output they must produce, and a flag rewrites the expected output
// from what the machine does.
//
// A block is a command line, optional input lines, a line "----", and the
// expected output up to a blank line. Lines starting with # between
// blocks are comments, kept when the file is rewritten.
package scripttest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Block is one command of a script.
type Block struct {
	Line     int      // 1-based line of the command
	Cmd      string   // the command line
	Input    []string // the lines between the command and "----"
	Expected []string
	raw      []string // comment or blank lines before the command
}

// Fields splits the command line.
func (b Block) Fields() []string { return strings.Fields(b.Cmd) }

// RunDir replays every testdata/*.txt under dir as a subtest; newRun makes
// the harness of one script, whose run function returns the output of one
// block (none prints "ok"). With update, each file is rewritten with what
// the machine produced (read the diff before committing it).
func RunDir(t *testing.T, dir string, update bool, newRun func(t *testing.T) func(Block) []string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts in %s: %v", dir, err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { Run(t, f, update, newRun(t)) })
	}
}

// Run replays one script through run.
func Run(t *testing.T, path string, update bool, run func(Block) []string) {
	t.Helper()
	blocks, trailer := parse(t, path)
	var out strings.Builder
	failed := false
	for _, b := range blocks {
		got := run(b)
		if len(got) == 0 {
			got = []string{"ok"}
		}
		if !update && !slices.Equal(got, b.Expected) {
			failed = true
			t.Errorf("%s:%d: %s\n--- want\n%s\n--- got\n%s", path, b.Line, b.Cmd,
				strings.Join(b.Expected, "\n"), strings.Join(got, "\n"))
		}
		for _, r := range b.raw {
			out.WriteString(r + "\n")
		}
		out.WriteString(b.Cmd + "\n")
		for _, in := range b.Input {
			out.WriteString(in + "\n")
		}
		out.WriteString("----\n" + strings.Join(got, "\n") + "\n")
	}
	for _, r := range trailer {
		out.WriteString(r + "\n")
	}
	if update && !failed {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func parse(t *testing.T, path string) (blocks []Block, trailer []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var raw []string
	for i := 0; i < len(lines); {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			raw = append(raw, l)
			i++
			continue
		}
		b := Block{Line: i + 1, raw: raw, Cmd: l}
		raw = nil
		i++
		for ; i < len(lines) && lines[i] != "----"; i++ {
			b.Input = append(b.Input, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: missing ----", path, b.Line)
		}
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			b.Expected = append(b.Expected, lines[i])
		}
		blocks = append(blocks, b)
	}
	return blocks, raw
}
