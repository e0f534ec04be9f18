package store

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"mellium.im/xmpp/jid"

	"pushd/jsm"
)

func openMem(t *testing.T) *DB {
	t.Helper()
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.Domain = "example.test"
	db, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestSyncPolicyText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want SyncPolicy
		err  bool
	}{
		{"always", SyncAlways, false},
		{"Batch", SyncBatch, false},
		{" os ", SyncOS, false},
		{"never", SyncBatch, true},
	} {
		var p SyncPolicy
		err := p.UnmarshalText([]byte(tc.in))
		if (err != nil) != tc.err || (err == nil && p != tc.want) {
			t.Errorf("%q: got %v, %v", tc.in, p, err)
		}
		if err == nil {
			if b, _ := p.MarshalText(); string(b) != strings.ToLower(strings.TrimSpace(tc.in)) {
				t.Errorf("%q: marshals to %q", tc.in, b)
			}
		}
	}
}

func TestOpenReopenAndVersion(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.Domain = "example.test"
	db, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := jid.MustParse("alice@example.test")
	if err := db.Accounts().Add(u, "secret"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := db.Accounts().VerifyPlain("alice", "secret"); !ok || err != nil {
		t.Fatalf("after reopen: %v %v", ok, err)
	}
	// A database from a future layout must not be read.
	if err := db.Badger().Update(func(txn *badger.Txn) error { return txn.Set(versionKey, []byte{99}) }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "schema version") {
		t.Fatalf("open with future schema: %v", err)
	}
}

// TestOpenMemory guards the tuning: badger's defaults take ~90 MB at open.
func TestOpenMemory(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	db, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap after Open: +%d KiB", grew>>10)
	if grew > 48<<20 {
		t.Errorf("Open took %d MiB of heap", grew>>20)
	}
}

func TestAccounts(t *testing.T) {
	db := openMem(t)
	acc := db.Accounts()
	alice := jid.MustParse("alice@example.test")
	bob := jid.MustParse("bob@example.test/phone") // resource is ignored

	for _, tc := range []struct {
		name string
		do   func() error
		want error // nil, a sentinel, or errAny
	}{
		{"add alice", func() error { return acc.Add(alice, "pässword") }, nil},
		{"add bob (full JID)", func() error { return acc.Add(bob, "hunter2") }, nil},
		{"add alice again", func() error { return acc.Add(alice, "x") }, ErrUserExists},
		{"add at another domain", func() error { return acc.Add(jid.MustParse("eve@elsewhere.test"), "x") }, errAny},
		{"add without localpart", func() error { return acc.Add(jid.MustParse("example.test"), "x") }, errAny},
		{"add with empty password", func() error { return acc.Add(jid.MustParse("carol@example.test"), "") }, errAny},
		{"set password of unknown", func() error { return acc.SetPassword(jid.MustParse("zed@example.test"), "x") }, ErrNoUser},
		{"delete unknown", func() error { return acc.Delete(jid.MustParse("zed@example.test")) }, ErrNoUser},
	} {
		err := tc.do()
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want == errAny && err == nil:
			t.Errorf("%s: no error", tc.name)
		case tc.want != nil && tc.want != errAny && !errors.Is(err, tc.want):
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}

	users, err := acc.List()
	if err != nil {
		t.Fatal(err)
	}
	if got := jidStrings(users); !slices.Equal(got, []string{"alice@example.test", "bob@example.test"}) {
		t.Errorf("List = %v", got)
	}
	for _, tc := range []struct {
		user string
		want bool
	}{{"alice@example.test", true}, {"bob@example.test/x", true}, {"zed@example.test", false}, {"alice@elsewhere.test", false}} {
		if got, err := acc.Exists(jid.MustParse(tc.user)); got != tc.want || err != nil {
			t.Errorf("Exists(%s) = %v, %v", tc.user, got, err)
		}
	}

	// PLAIN, including PRECIS mapping of the password (U+00A0 → space) and
	// case folding of the username.
	for _, tc := range []struct {
		user, pass string
		ok         bool
		err        error
	}{
		{"alice", "pässword", true, nil},
		{"Alice", "pässword", true, nil},
		{"alice", "password", false, nil},
		{"alice", "", false, nil},
		{"bob", "hunter2", true, nil},
		{"zed", "hunter2", false, ErrNoUser},
		{"bad@name", "x", false, ErrNoUser},
	} {
		ok, err := acc.VerifyPlain(tc.user, tc.pass)
		if ok != tc.ok || !errors.Is(err, tc.err) {
			t.Errorf("VerifyPlain(%s, %q) = %v, %v", tc.user, tc.pass, ok, err)
		}
	}

	if err := acc.SetPassword(alice, "new\u00a0pass"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := acc.VerifyPlain("alice", "pässword"); ok {
		t.Error("old password still works")
	}
	if ok, _ := acc.VerifyPlain("alice", "new pass"); !ok {
		t.Error("new password (PRECIS-equivalent spelling) refused")
	}

	// Never the plain password on disk.
	_ = db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			for _, p := range []string{"hunter2", "new pass", "pässword"} {
				if bytes.Contains(v, []byte(p)) {
					t.Errorf("key %q holds a plain password", it.Item().Key())
				}
			}
		}
		return nil
	})
}

var errAny = errors.New("any error")

func jidStrings(js []jid.JID) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.String())
	}
	return out
}

func TestAddConcurrentOneWinner(t *testing.T) {
	db := openMem(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.Accounts().Add(jid.MustParse("dup@example.test"), "x")
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, ErrUserExists) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d concurrent Adds succeeded", wins)
	}
}

func TestRosters(t *testing.T) {
	db := openMem(t)
	alice := jid.MustParse("alice@example.test")
	bob := jid.MustParse("bob@example.test")
	r := db.Rosters()
	items := []jsm.RosterItem{
		{JID: jid.MustParse("carol@other.test"), Name: "Carol", Subscription: jsm.SubBoth, Groups: []string{"Friends", "Work"}},
		{JID: jid.MustParse("bob@example.test/res"), Subscription: jsm.SubTo, Ask: true},
		{JID: jid.MustParse("dan@other.test"), Subscription: jsm.SubNone, Pending: true},
	}
	for _, it := range items {
		if err := r.Save(alice, it); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Save(bob, jsm.RosterItem{JID: alice, Subscription: jsm.SubFrom}); err != nil {
		t.Fatal(err)
	}
	// Overwrite one, delete one.
	if err := r.Save(alice, jsm.RosterItem{JID: jid.MustParse("carol@other.test"), Name: "C.", Subscription: jsm.SubFrom}); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(alice, jid.MustParse("dan@other.test")); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(alice, jid.MustParse("nobody@other.test")); err != nil {
		t.Errorf("deleting an absent item: %v", err)
	}
	if err := r.Save(alice, jsm.RosterItem{}); err == nil {
		t.Error("item without JID saved")
	}

	all, err := r.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]jsm.RosterItem{
		"alice@example.test": {
			{JID: jid.MustParse("bob@example.test"), Subscription: jsm.SubTo, Ask: true},
			{JID: jid.MustParse("carol@other.test"), Name: "C.", Subscription: jsm.SubFrom},
		},
		"bob@example.test": {{JID: alice, Subscription: jsm.SubFrom}},
	}
	if !rostersEqual(all, want) {
		t.Errorf("Load = %+v", all)
	}
	got, err := r.Get(alice)
	if err != nil || !rostersEqual(map[string][]jsm.RosterItem{"x": got}, map[string][]jsm.RosterItem{"x": want["alice@example.test"]}) {
		t.Errorf("Get = %+v, %v", got, err)
	}

	// Deleting an account deletes its roster and nobody else's.
	if err := db.Accounts().Add(alice, "pw"); err != nil {
		t.Fatal(err)
	}
	if err := db.Accounts().Delete(alice); err != nil {
		t.Fatal(err)
	}
	st, err := db.State()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Users) != 0 || len(st.Rosters) != 1 || len(st.Rosters["bob@example.test"]) != 1 {
		t.Errorf("after delete: %+v", st)
	}
}

func rostersEqual(a, b map[string][]jsm.RosterItem) bool {
	if len(a) != len(b) {
		return false
	}
	for k, as := range a {
		bs := b[k]
		if len(as) != len(bs) {
			return false
		}
		for i := range as {
			x, y := as[i], bs[i]
			if !x.JID.Equal(y.JID) || x.Name != y.Name || x.Subscription != y.Subscription ||
				x.Ask != y.Ask || x.Pending != y.Pending || !slices.Equal(x.Groups, y.Groups) {
				return false
			}
		}
	}
	return true
}

func TestDeletePrefixLarge(t *testing.T) {
	db := openMem(t)
	alice := jid.MustParse("alice@example.test")
	if err := db.Accounts().Add(alice, "pw"); err != nil {
		t.Fatal(err)
	}
	err := db.Badger().Update(func(txn *badger.Txn) error {
		for i := 0; i < 2500; i++ {
			if err := txn.Set(rosterKey("alice@example.test", "c"+strconv.Itoa(i)+"@o.test"), []byte("{}")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Accounts().Delete(alice); err != nil {
		t.Fatal(err)
	}
	all, err := db.Rosters().Load()
	if err != nil || len(all) != 0 {
		t.Errorf("left %d rosters, %v", len(all), err)
	}
}

type captureHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *captureHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

func TestBadgerLogsToSlog(t *testing.T) {
	h := &captureHandler{}
	a := slogAdapter{log: slog.New(h)}
	a.Infof("compaction %d\n", 1)
	a.Debugf("detail")
	a.Warningf("disk %s", "slow")
	a.Errorf("broken")
	if len(h.recs) != 2 || h.recs[0].Level != slog.LevelWarn || h.recs[0].Message != "disk slow" || h.recs[1].Level != slog.LevelError {
		t.Errorf("records: %+v", h.recs)
	}
}
