package queue

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"pushd/internal/stanza"
	"pushd/internal/store"
	"pushd/jsm"
)

func openDB(t testing.TB, dir string) *store.DB {
	t.Helper()
	cfg := store.DefaultConfig()
	if dir == "" {
		cfg.InMemory = true
	} else {
		cfg.Dir = dir
	}
	db, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// newStore opens a Store on a fresh in-memory database.
func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	db := openDB(t, "")
	s, err := New(db.Badger(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		_ = db.Close()
	})
	return s
}

func msg(seq uint64, body string) jsm.Entry {
	e := stanza.New(stanza.NSClient, "message", "to", "a@example.test/phone", "id", fmt.Sprint("m", seq), "type", "chat")
	e.Add(stanza.New(stanza.NSClient, "body").AddText(body))
	return jsm.Entry{Seq: seq, Stanza: e}
}

func pres(seq uint64) jsm.Entry {
	return jsm.Entry{Seq: seq, Stanza: stanza.New(stanza.NSClient, "presence", "from", "b@example.test/x", "id", fmt.Sprint("p", seq))}
}

func readAll(t testing.TB, s *Store, dev string, from uint64) []jsm.Entry {
	t.Helper()
	var out []jsm.Entry
	if err := s.Read(dev, from, func(e jsm.Entry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func seqs(es []jsm.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func TestAppendReadTrimDrop(t *testing.T) {
	const dev = "a@example.test/phone"
	type step struct {
		op      string // append, trim, drop
		seqs    []uint64
		through uint64
		want    []uint64 // queue contents after the step
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"in order", []step{
			{op: "append", seqs: []uint64{1, 2, 3}, want: []uint64{1, 2, 3}},
			{op: "append", seqs: []uint64{4}, want: []uint64{1, 2, 3, 4}},
		}},
		{"duplicates are no-ops", []step{
			{op: "append", seqs: []uint64{1, 2}, want: []uint64{1, 2}},
			{op: "append", seqs: []uint64{2, 3, 3, 1}, want: []uint64{1, 2, 3}},
		}},
		{"out of order and big seqs sort by value", []step{
			{op: "append", seqs: []uint64{256, 7, 1 << 40}, want: []uint64{7, 256, 1 << 40}},
			{op: "append", seqs: []uint64{5, 300}, want: []uint64{5, 7, 256, 300, 1 << 40}},
		}},
		{"trim", []step{
			{op: "append", seqs: []uint64{1, 2, 3, 5, 8}, want: []uint64{1, 2, 3, 5, 8}},
			{op: "trim", through: 0, want: []uint64{1, 2, 3, 5, 8}},
			{op: "trim", through: 2, want: []uint64{3, 5, 8}},
			{op: "trim", through: 4, want: []uint64{5, 8}},
			{op: "trim", through: 100, want: nil},
			{op: "append", seqs: []uint64{101}, want: []uint64{101}},
		}},
		{"drop", []step{
			{op: "append", seqs: []uint64{1, 2}, want: []uint64{1, 2}},
			{op: "drop", want: nil},
			{op: "drop", want: nil},
			{op: "append", seqs: []uint64{1}, want: []uint64{1}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, DefaultConfig())
			// A device whose name extends dev must be untouched throughout.
			if err := s.Append(dev+"2", []jsm.Entry{msg(1, "other")}); err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				var err error
				switch st.op {
				case "append":
					var es []jsm.Entry
					for _, q := range st.seqs {
						es = append(es, msg(q, fmt.Sprint("body ", q)))
					}
					err = s.Append(dev, es)
				case "trim":
					err = s.Trim(dev, st.through)
				case "drop":
					err = s.Drop(dev)
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				got := readAll(t, s, dev, 0)
				if !slices.Equal(seqs(got), st.want) {
					t.Fatalf("step %d (%s): queue %v, want %v", i, st.op, seqs(got), st.want)
				}
				for _, e := range got {
					if b := e.Stanza.ChildText(stanza.NSClient, "body"); b != fmt.Sprint("body ", e.Seq) {
						t.Fatalf("seq %d carries body %q", e.Seq, b)
					}
				}
				n, bytes := s.Stats(dev)
				if n != len(st.want) || (n == 0) != (bytes == 0) {
					t.Fatalf("step %d: Stats = %d, %d", i, n, bytes)
				}
			}
			if got := readAll(t, s, dev+"2", 0); len(got) != 1 {
				t.Fatalf("neighbour device has %v", seqs(got))
			}
		})
	}
}

func TestReadFromAndStop(t *testing.T) {
	const dev = "a@example.test/r"
	s := newStore(t, DefaultConfig())
	var es []jsm.Entry
	for i := uint64(1); i <= 600; i++ { // more than one read chunk
		es = append(es, msg(i*2, "x"))
	}
	if err := s.Append(dev, es); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from      uint64
		wantFirst uint64
		wantN     int
	}{{0, 2, 600}, {2, 2, 600}, {3, 4, 599}, {1200, 1200, 1}, {1201, 0, 0}} {
		got := readAll(t, s, dev, tc.from)
		if len(got) != tc.wantN || (tc.wantN > 0 && got[0].Seq != tc.wantFirst) {
			t.Errorf("Read from %d: %d entries starting %v", tc.from, len(got), seqs(got[:min(1, len(got))]))
		}
		if !slices.IsSorted(seqs(got)) {
			t.Errorf("Read from %d: not in order", tc.from)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := s.Read(dev, 0, func(jsm.Entry) error {
		n++
		if n == 300 {
			return stop
		}
		return nil
	})
	if err != stop || n != 300 {
		t.Errorf("Read returned %v after %d entries", err, n)
	}
	// fn may call the Store: Read holds no transaction while it runs.
	err = s.Read(dev, 0, func(e jsm.Entry) error { return s.Trim(dev, e.Seq) })
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Stats(dev); c != 0 {
		t.Errorf("%d left after trimming while reading", c)
	}
}

func TestStanzaRoundTrip(t *testing.T) {
	s := newStore(t, DefaultConfig())
	in := []*stanza.Element{
		stanza.New(stanza.NSClient, "message", "to", "a@x/y", "type", "chat").Add(
			stanza.New(stanza.NSClient, "body").AddText("<&> \"quotes\" 'apos' \n\ttab ünïcode 😀"),
			stanza.New("urn:xmpp:receipts", "request"),
			stanza.New(stanza.NSCarbons, "received").Add(
				stanza.New(stanza.NSForward, "forwarded").Add(
					stanza.New(stanza.NSDelay, "delay", "stamp", "2024-01-01T00:00:00Z"),
					stanza.New(stanza.NSClient, "message", "from", "b@x/z", "id", `a"b<c`).Add(
						stanza.New(stanza.NSClient, "body").AddText("inner"))))),
		stanza.New(stanza.NSClient, "presence", "from", "b@x/z").Add(
			stanza.New(stanza.NSClient, "show").AddText("away"),
			stanza.New(stanza.NSCaps, "c", "node", "http://conversations.im", "ver", "abc=", "hash", "sha-1")),
		stanza.New(stanza.NSClient, "iq", "type", "get", "id", "1").Add(stanza.New(stanza.NSPing, "ping")),
	}
	// An xml:lang attribute survives too.
	in[0].Attr = append(in[0].Attr, xmlLang("de"))
	var es []jsm.Entry
	for i, e := range in {
		es = append(es, jsm.Entry{Seq: uint64(i + 1), Stanza: e})
	}
	if err := s.Append("d@x/y", es); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, s, "d@x/y", 0)
	for i, e := range got {
		if a, b := in[i].String(), e.Stanza.String(); a != b {
			t.Errorf("entry %d:\n in  %s\n out %s", i, a, b)
		}
	}
	if len(got) != len(in) {
		t.Errorf("%d of %d read back", len(got), len(in))
	}
}

func TestQuota(t *testing.T) {
	const dev = "q@example.test/phone"
	small := DefaultConfig()
	small.MaxEntries = 5
	noEvict := small
	noEvict.EvictPresence = false
	bytesCfg := DefaultConfig()
	bytesCfg.MaxBytes = 3 * int64(len(encode(msg(1, "xxxxxxxxxx").Stanza)))

	for _, tc := range []struct {
		name    string
		cfg     Config
		have    []jsm.Entry
		add     []jsm.Entry
		limit   string   // "" = accepted
		want    []uint64 // queue after
		wantErr bool
	}{
		{"under bound", small, []jsm.Entry{msg(1, "a"), pres(2)}, []jsm.Entry{msg(3, "b")}, "", []uint64{1, 2, 3}, false},
		{"at bound exactly", small, []jsm.Entry{msg(1, "a"), msg(2, "a"), msg(3, "a"), msg(4, "a")}, []jsm.Entry{msg(5, "b")}, "", []uint64{1, 2, 3, 4, 5}, false},
		{"oldest presence evicted first", small,
			[]jsm.Entry{msg(1, "a"), pres(2), msg(3, "a"), pres(4), pres(5)},
			[]jsm.Entry{msg(6, "b"), msg(7, "b")}, "", []uint64{1, 3, 5, 6, 7}, false},
		{"no presence left: refused whole", small,
			[]jsm.Entry{msg(1, "a"), msg(2, "a"), pres(3), msg(4, "a"), msg(5, "a")},
			[]jsm.Entry{msg(6, "b"), msg(7, "b")}, "entries", []uint64{1, 2, 3, 4, 5}, true},
		{"presence refused when full of messages", small,
			[]jsm.Entry{msg(1, "a"), msg(2, "a"), msg(3, "a"), msg(4, "a"), msg(5, "a")},
			[]jsm.Entry{pres(6)}, "entries", []uint64{1, 2, 3, 4, 5}, true},
		{"duplicates do not count", small,
			[]jsm.Entry{msg(1, "a"), msg(2, "a"), msg(3, "a"), msg(4, "a"), msg(5, "a")},
			[]jsm.Entry{msg(5, "a")}, "", []uint64{1, 2, 3, 4, 5}, false},
		{"eviction off", noEvict,
			[]jsm.Entry{pres(1), pres(2), pres(3), pres(4), pres(5)},
			[]jsm.Entry{msg(6, "b")}, "entries", []uint64{1, 2, 3, 4, 5}, true},
		{"bytes bound", bytesCfg,
			[]jsm.Entry{msg(1, "xxxxxxxxxx"), msg(2, "xxxxxxxxxx"), msg(3, "xxxxxxxxxx")},
			[]jsm.Entry{msg(4, "y")}, "bytes", []uint64{1, 2, 3}, true},
		{"bytes bound, presence makes room", bytesCfg,
			[]jsm.Entry{pres(1), msg(2, "xxxxxxxxxx"), msg(3, "xxxxxxxxxx")},
			[]jsm.Entry{msg(4, "y")}, "", []uint64{2, 3, 4}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, tc.cfg)
			if err := s.Append(dev, tc.have); err != nil {
				t.Fatal(err)
			}
			err := s.Append(dev, tc.add)
			var q *QuotaError
			switch {
			case tc.wantErr && (!errors.Is(err, ErrQuota) || !errors.As(err, &q) || q.Limit != tc.limit):
				t.Fatalf("got %v, want quota error on %s", err, tc.limit)
			case !tc.wantErr && err != nil:
				t.Fatal(err)
			}
			if err != nil && strings.Contains(err.Error(), "example.test") {
				t.Errorf("error names the device: %v", err)
			}
			if got := seqs(readAll(t, s, dev, 0)); !slices.Equal(got, tc.want) {
				t.Errorf("queue %v, want %v", got, tc.want)
			}
			n, b := s.Stats(dev)
			var wantB int64
			for _, e := range readAll(t, s, dev, 0) {
				wantB += int64(len(encode(e.Stanza)))
			}
			if n != len(tc.want) || b != wantB {
				t.Errorf("Stats = %d, %d; want %d, %d", n, b, len(tc.want), wantB)
			}
		})
	}
}

func TestAppendInvalid(t *testing.T) {
	s := newStore(t, DefaultConfig())
	if err := s.Append("", []jsm.Entry{msg(1, "a")}); err == nil {
		t.Error("empty device accepted")
	}
	if err := s.Append("d@x/y", []jsm.Entry{{Seq: 1}}); err == nil {
		t.Error("nil stanza accepted")
	}
	if err := s.Append("d@x/y", nil); err != nil {
		t.Errorf("empty append: %v", err)
	}
}

func TestReopenRebuildsIndex(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	s, err := New(db.Badger(), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	must(t, s.Append("a@x/1", []jsm.Entry{msg(1, "a"), pres(2), msg(3, "c")}))
	must(t, s.Append("b@x/2", []jsm.Entry{msg(10, "a")}))
	must(t, s.Append("c@x/3", []jsm.Entry{msg(1, "a")}))
	must(t, s.Drop("c@x/3"))
	must(t, s.StoreOffline("u@x", msg(1, "off").Stanza))
	wantStats := s.Devices()
	must(t, s.Close())
	must(t, db.Close())

	db = openDB(t, dir)
	defer db.Close()
	s, err = New(db.Badger(), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := s.Devices()
	if !slices.Equal(got, wantStats) || len(got) != 2 || got[0].First != 1 || got[0].Last != 3 || got[1].Count != 1 {
		t.Errorf("Devices after reopen = %+v, want %+v", got, wantStats)
	}
	// The presence mark survives: eviction still finds it.
	s.cfg.MaxEntries = 3
	must(t, s.Append("a@x/1", []jsm.Entry{msg(4, "d")}))
	if got := seqs(readAll(t, s, "a@x/1", 0)); !slices.Equal(got, []uint64{1, 3, 4}) {
		t.Errorf("after reopen and eviction: %v", got)
	}
	if n, _ := s.CountOffline("u@x"); n != 1 {
		t.Errorf("offline after reopen: %d", n)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestOffline(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxOffline = 3
	s := newStore(t, cfg)
	const u = "u@example.test"
	for i := 1; i <= 3; i++ {
		must(t, s.StoreOffline(u, msg(uint64(i), fmt.Sprint("m", i)).Stanza))
	}
	must(t, s.StoreOffline("u@example.test.other", msg(1, "neighbour").Stanza))
	err := s.StoreOffline(u, msg(4, "m4").Stanza)
	var q *QuotaError
	if !errors.As(err, &q) || q.Limit != "offline" || q.Have != 3 {
		t.Fatalf("over the bound: %v", err)
	}
	if n, err := s.CountOffline(u); n != 3 || err != nil {
		t.Fatalf("CountOffline = %d, %v", n, err)
	}
	got, _, err := s.TakeOffline(u)
	must(t, err)
	var bodies []string
	for _, e := range got {
		bodies = append(bodies, e.ChildText(stanza.NSClient, "body"))
	}
	if !slices.Equal(bodies, []string{"m1", "m2", "m3"}) {
		t.Errorf("TakeOffline = %v", bodies)
	}
	if got, _, _ := s.TakeOffline(u); len(got) != 0 {
		t.Errorf("second TakeOffline returned %d", len(got))
	}
	// Room again, and order restarts cleanly.
	must(t, s.StoreOffline(u, msg(5, "m5").Stanza))
	must(t, s.StoreOffline(u, msg(6, "m6").Stanza))
	got, _, _ = s.TakeOffline(u)
	if len(got) != 2 || got[0].ChildText(stanza.NSClient, "body") != "m5" {
		t.Errorf("after refill: %v", got)
	}
	must(t, s.DropOffline("u@example.test.other"))
	if n, _ := s.CountOffline("u@example.test.other"); n != 0 {
		t.Errorf("DropOffline left %d", n)
	}
	if err := s.StoreOffline("", msg(1, "x").Stanza); err == nil {
		t.Error("empty user accepted")
	}
}

// TestOfflineConcurrent: stores racing a take lose nothing and duplicate
// nothing; many stores for one user share group commits.
func TestOfflineConcurrent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxOffline = 10000
	s := newStore(t, cfg)
	const u = "u@example.test"
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	take := func() {
		got, _, err := s.TakeOffline(u)
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		for _, e := range got {
			seen[e.Get("id")]++
		}
		mu.Unlock()
	}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if err := s.StoreOffline(u, stanza.New(stanza.NSClient, "message", "id", fmt.Sprint(g, "-", i))); err != nil {
					t.Error(err)
				}
				if i%10 == 0 {
					take()
				}
			}
		}()
	}
	wg.Wait()
	take()
	if len(seen) != 400 {
		t.Errorf("%d distinct messages taken, want 400", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s taken %d times", id, n)
		}
	}
}

func TestDevicesAndStats(t *testing.T) {
	s := newStore(t, DefaultConfig())
	must(t, s.Append("b@x/2", []jsm.Entry{msg(5, "a"), msg(9, "b")}))
	must(t, s.Append("a@x/1", []jsm.Entry{pres(1)}))
	must(t, s.Append("c@x/3", []jsm.Entry{msg(1, "a")}))
	must(t, s.Trim("c@x/3", 1))
	got := s.Devices()
	if len(got) != 2 || got[0].Device != "a@x/1" || got[1].Device != "b@x/2" ||
		got[1].First != 5 || got[1].Last != 9 || got[1].Count != 2 || got[1].Bytes <= 0 {
		t.Errorf("Devices = %+v", got)
	}
	if n, b := s.Stats("nobody@x/1"); n != 0 || b != 0 {
		t.Errorf("Stats of unknown device = %d, %d", n, b)
	}
}

// TestGroupCommit: concurrent appends under SyncBatch all land, in order
// per device, and share commits.
func TestGroupCommit(t *testing.T) {
	for _, pol := range []store.SyncPolicy{store.SyncBatch, store.SyncAlways, store.SyncOS} {
		t.Run(pol.String(), func(t *testing.T) {
			dir := t.TempDir()
			db := openDB(t, dir)
			defer db.Close()
			cfg := DefaultConfig()
			cfg.Sync = pol
			s, err := New(db.Badger(), cfg)
			must(t, err)
			const goroutines, per = 32, 40
			var wg sync.WaitGroup
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					dev := fmt.Sprintf("u%d@x/r", g%8) // 4 writers per device
					for i := 0; i < per; i++ {
						seq := uint64(i*goroutines + g)
						if err := s.Append(dev, []jsm.Entry{msg(seq, "x")}); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			total := 0
			for _, d := range s.Devices() {
				es := readAll(t, s, d.Device, 0)
				if !slices.IsSorted(seqs(es)) {
					t.Errorf("%s out of order", d.Device)
				}
				total += len(es)
			}
			if total != goroutines*per {
				t.Errorf("%d entries, want %d", total, goroutines*per)
			}
			commits := s.commits.Load()
			t.Logf("%d appends in %d commits", goroutines*per, commits)
			if pol == store.SyncAlways && commits != goroutines*per {
				t.Errorf("SyncAlways: %d commits for %d appends", commits, goroutines*per)
			}
			if pol == store.SyncBatch && commits >= goroutines*per {
				t.Errorf("SyncBatch: no appends were grouped (%d commits)", commits)
			}
			must(t, s.Close())
		})
	}
}

// TestCloseDrains: every Append either succeeds, and is then on disk, or
// fails with ErrClosed.
func TestCloseDrains(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	s, err := New(db.Badger(), DefaultConfig())
	must(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string][]uint64{}
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := fmt.Sprintf("u%d@x/r", g)
			for i := uint64(1); ; i++ {
				err := s.Append(dev, []jsm.Entry{msg(i, "x")})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[dev] = append(acked[dev], i)
				mu.Unlock()
			}
		}()
	}
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n == 16 {
			break
		}
	}
	must(t, s.Close())
	wg.Wait()
	if err := s.Append("late@x/r", []jsm.Entry{msg(1, "x")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	must(t, s.Close()) // idempotent
	must(t, db.Close())

	db = openDB(t, dir)
	defer db.Close()
	s, err = New(db.Badger(), DefaultConfig())
	must(t, err)
	defer s.Close()
	for dev, want := range acked {
		got := seqs(readAll(t, s, dev, 0))
		if !slices.Equal(got, want) {
			t.Errorf("%s: %d on disk, %d acknowledged", dev, len(got), len(want))
		}
	}
}

func TestTxnSplit(t *testing.T) {
	// One Append bigger than badger's per-transaction limit (15% of the
	// memtable) is still written whole.
	s := newStore(t, DefaultConfig())
	big := strings.Repeat("z", 64<<10)
	var es []jsm.Entry
	for i := uint64(1); i <= 100; i++ { // ~6.4 MiB
		es = append(es, msg(i, big))
	}
	must(t, s.Append("big@x/r", es))
	if n, b := s.Stats("big@x/r"); n != 100 || b < 100*64<<10 {
		t.Fatalf("Stats = %d, %d", n, b)
	}
	must(t, s.Drop("big@x/r"))
	if got := readAll(t, s, "big@x/r", 0); len(got) != 0 {
		t.Errorf("%d left after Drop", len(got))
	}
}
