package queue

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"pushd/internal/stanza"
	"pushd/internal/store"
	"pushd/jsm"
)

const crashDirEnv = "PUSHD_QUEUE_CRASH_DIR"

// TestCrashChild is the child half of TestCrashSafety: it appends for ever
// with SyncAlways and prints "ack <device> <seq>" after each Append
// returns, until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("child of TestCrashSafety only")
	}
	cfg := store.DefaultConfig()
	cfg.Dir = dir
	db, err := store.Open(cfg)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	qcfg := DefaultConfig()
	qcfg.Sync = store.SyncAlways
	s, err := New(db.Badger(), qcfg)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := fmt.Sprintf("crash%d@example.test/phone", g)
			for seq := uint64(1); ; seq++ {
				if err := s.Append(dev, []jsm.Entry{crashEntry(seq)}); err != nil {
					fmt.Println("error", err)
					os.Exit(2)
				}
				out.Lock()
				fmt.Printf("ack %s %d\n", dev, seq)
				out.Unlock()
			}
		}()
	}
	wg.Wait()
}

func crashEntry(seq uint64) jsm.Entry {
	e := stanza.New(stanza.NSClient, "message", "id", fmt.Sprint(seq))
	e.Add(stanza.New(stanza.NSClient, "body").AddText(strings.Repeat("x", int(seq%200))))
	return jsm.Entry{Seq: seq, Stanza: e}
}

// TestCrashSafety kills a writer with SIGKILL right after it acknowledged
// appends and checks that every acknowledged entry is there, once, in order.
func TestCrashSafety(t *testing.T) {
	if os.Getenv(crashDirEnv) != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())

	acked := map[string]uint64{} // device → highest acknowledged seq
	sc := bufio.NewScanner(stdout)
	n := 0
	parse := func(line string) {
		var dev string
		var seq uint64
		if _, err := fmt.Sscanf(line, "ack %s %d", &dev, &seq); err != nil {
			if strings.HasPrefix(line, "error") {
				t.Errorf("child: %s", line)
			}
			return
		}
		if seq != acked[dev]+1 {
			t.Errorf("child acknowledged %s %d after %d", dev, seq, acked[dev])
		}
		acked[dev] = seq
		n++
	}
	for n < 2000 && sc.Scan() {
		parse(sc.Text())
	}
	// Kill at once, then take whatever acknowledgements were already in
	// the pipe: those were promised too.
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	for sc.Scan() {
		parse(sc.Text())
	}
	_ = cmd.Wait()
	if n < 2000 {
		t.Fatalf("child acknowledged only %d appends", n)
	}

	db := openDB(t, dir)
	defer db.Close()
	s, err := New(db.Badger(), DefaultConfig())
	must(t, err)
	defer s.Close()
	for dev, last := range acked {
		var got []uint64
		must(t, s.Read(dev, 0, func(e jsm.Entry) error {
			if e.Stanza.Get("id") != fmt.Sprint(e.Seq) || len(e.Stanza.ChildText(stanza.NSClient, "body")) != int(e.Seq%200) {
				t.Errorf("%s seq %d: wrong stanza %s", dev, e.Seq, e.Stanza)
			}
			got = append(got, e.Seq)
			return nil
		}))
		// Sequential appends per device: the disk must hold exactly 1..k
		// for some k at or past the last acknowledgement.
		if uint64(len(got)) < last {
			t.Errorf("%s: %d entries on disk, %d acknowledged", dev, len(got), last)
		}
		for i, seq := range got {
			if seq != uint64(i+1) {
				t.Errorf("%s: entry %d has seq %d", dev, i, seq)
				break
			}
		}
		t.Logf("%s: %d acknowledged, %d on disk", dev, last, len(got))
	}
}
