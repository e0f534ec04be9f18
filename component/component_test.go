package component

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/stanza"
)

func testDB(t *testing.T) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

type fakeDispatch struct {
	mu   sync.Mutex
	jobs []dispatch.Job
	err  error
}

func (f *fakeDispatch) Submit(_ context.Context, j dispatch.Job) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	if j.TrackingID == "" { // as Submit: it makes one up
		j.TrackingID = dispatch.NewTrackingID()
	}
	if _, err := payload.Prepare(j.Registration.Key, j.Payload, j.Encrypted); err != nil {
		return j.TrackingID, err
	}
	f.jobs = append(f.jobs, j)
	return j.TrackingID, nil
}

func newTest(t *testing.T) (*Component, *fakeDispatch) {
	t.Helper()
	reg, err := OpenRegistry(testDB(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	fd := &fakeDispatch{}
	c, err := New(Config{Domain: "push.example.test"}, reg, fd)
	if err != nil {
		t.Fatal(err)
	}
	return c, fd
}

func field(name string, values ...string) *stanza.Element {
	f := stanza.New(nsData, "field", "var", name)
	for _, v := range values {
		f.Add(stanza.New(nsData, "value").AddText(v))
	}
	return f
}

func cmdIQ(from, node, action, sid string, fields ...*stanza.Element) *stanza.Element {
	cmd := stanza.New(nsCommands, "command", "node", node)
	if action != "" {
		cmd.Set("action", action)
	}
	if sid != "" {
		cmd.Set("sessionid", sid)
	}
	if fields != nil {
		x := stanza.New(nsData, "x", "type", "submit")
		for _, f := range fields {
			x.Add(f)
		}
		cmd.Add(x)
	}
	return stanza.New(stanza.NSClient, "iq", "type", "set", "id", "c1", "from", from, "to", "push.example.test").Add(cmd)
}

func resultFields(t *testing.T, reply *stanza.Element) map[string]string {
	t.Helper()
	if reply.Get("type") != "result" {
		t.Fatalf("reply: %s", reply)
	}
	cmd := reply.Child(nsCommands, "command")
	f := parseForm(cmd.Child(nsData, "x"))
	out := map[string]string{"status": cmd.Get("status"), "sessionid": cmd.Get("sessionid")}
	for k := range f.fields {
		out[k] = f.get(k)
	}
	return out
}

func errCond(reply *stanza.Element) string {
	e := reply.Child("", "error")
	if reply.Get("type") != "error" || e == nil {
		return ""
	}
	return e.Get("type") + "/" + e.FirstElement().Name.Local
}

var key32 = base64.StdEncoding.EncodeToString(make([]byte, 32))

func publishIQ(from, node, secret string, summary ...*stanza.Element) *stanza.Element {
	x := stanza.New(nsData, "x", "type", "submit").Add(field("FORM_TYPE", nsPushSummary))
	for _, f := range summary {
		x.Add(f)
	}
	ps := stanza.New(nsPubsub, "pubsub").Add(
		stanza.New(nsPubsub, "publish", "node", node).Add(
			stanza.New(nsPubsub, "item").Add(stanza.New(stanza.NSPush, "notification").Add(x))))
	if secret != "" {
		ps.Add(stanza.New(nsPubsub, "publish-options").Add(
			stanza.New(nsData, "x", "type", "submit").Add(field("FORM_TYPE", nsPublishOptions), field("secret", secret))))
	}
	return stanza.New(stanza.NSClient, "iq", "type", "set", "id", "p1", "from", from, "to", "push.example.test").Add(ps)
}

func TestParseRegister(t *testing.T) {
	p2, _ := lookupCommand(CmdRegisterAPNS)
	tig, _ := lookupCommand(CmdRegisterDevice)
	mk := func(kv ...string) form {
		f := form{fields: map[string][]string{}}
		for i := 0; i+1 < len(kv); i += 2 {
			f.fields[kv[i]] = append(f.fields[kv[i]], kv[i+1])
		}
		return f
	}
	tests := []struct {
		name string
		cmd  command
		f    form
		ok   bool
		chk  func(RegisterRequest) bool
	}{
		{"p2 minimal", p2, mk("token", "abcd", "device-id", "d1"), true, func(r RegisterRequest) bool {
			return r.Provider == dispatch.APNS && r.Token == "abcd" && r.DeviceID == "d1" && r.Key == nil && r.VoIPToken == nil
		}},
		{"p2 extensions", p2, mk("token", "abcd", "device-id", "d1", "key", key32, "voip-token", "ffee",
			"channels", "message", "channels", "voip", "region", "cn", "legacy-single-channel", "1", "kind", "mobile"), true,
			func(r RegisterRequest) bool {
				return r.Key != nil && *r.VoIPToken == "ffee" && len(r.Channels) == 2 && r.Region == "CN" && r.LegacySingleChannel && r.Kind == "mobile"
			}},
		{"p2 no token", p2, mk("device-id", "d1"), false, nil},
		{"p2 bad key", p2, mk("token", "abcd", "key", "c2hvcnQ="), false, nil},
		{"bad channel", p2, mk("token", "abcd", "channels", "sms"), false, nil},
		{"bad kind", p2, mk("token", "abcd", "kind", "fridge"), false, nil},
		{"bad bool", p2, mk("token", "abcd", "legacy-single-channel", "maybe"), false, nil},
		{"token with space", p2, mk("token", "ab cd"), false, nil},
		{"tigase", tig, mk("provider", "tigase:messenger:apns:1", "device-token", "abcd", "device-second-token", "beef"), true,
			func(r RegisterRequest) bool {
				return r.Provider == dispatch.APNS && r.DeviceID == "abcd" && *r.VoIPToken == "beef" && r.Command == "tigase"
			}},
		{"tigase fcm", tig, mk("provider", "fcm", "device-token", "tok"), true, func(r RegisterRequest) bool { return r.Provider == dispatch.FCM }},
		{"tigase unknown provider", tig, mk("provider", "sms", "device-token", "tok"), false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseRegister(tc.cmd, "u@example.test", tc.f)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && !tc.chk(r) {
				t.Fatalf("request = %+v", r)
			}
		})
	}
}

func TestRegistryPersistsAndHashes(t *testing.T) {
	db := testDB(t)
	reg, err := OpenRegistry(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := [32]byte{7}
	d1, created, err := reg.Register(RegisterRequest{Account: "juliet@example.test", DeviceID: "phone", Provider: dispatch.APNS, Token: "aa11", Key: &k})
	if err != nil || !created {
		t.Fatal(err, created)
	}
	// Same device again: new token, same node and secret, key kept.
	d2, created, err := reg.Register(RegisterRequest{Account: "juliet@example.test", DeviceID: "phone", Provider: dispatch.APNS, Token: "bb22"})
	if err != nil || created || d2.Node != d1.Node || d2.Secret != d1.Secret || d2.Token != "bb22" || len(d2.Key) != 32 {
		t.Fatalf("re-register: %+v created=%v err=%v", d2, created, err)
	}
	// A reopened registry (same key in the DB) finds it by account.
	reg2, err := OpenRegistry(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := reg2.ByAccount("Juliet@example.test")
	if err != nil || len(devs) != 1 || devs[0].Node != d1.Node {
		t.Fatalf("ByAccount: %v %v", devs, err)
	}
	// Nothing in the component space names the account or the device id.
	_ = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			kv := string(it.Item().Key()) + string(v)
			if strings.Contains(strings.ToLower(kv), "juliet") || strings.Contains(kv, "phone") {
				t.Errorf("clear account or device id in %q", it.Item().Key())
			}
		}
		return nil
	})
	// Secret and publisher check.
	for _, tc := range []struct {
		secret, from string
		ok           bool
	}{
		{d1.Secret, "example.test", true},
		{d1.Secret, "juliet@example.test", true},
		{d1.Secret, "juliet@example.test/res", true},
		{d1.Secret, "romeo@example.test", false},
		{d1.Secret, "other.test", false},
		{d1.Secret + "x", "example.test", false},
		{"", "example.test", false},
	} {
		_, err := reg2.Check(d1.Node, tc.secret, tc.from)
		if (err == nil) != tc.ok {
			t.Errorf("Check(%q, %q) = %v, want ok=%v", tc.secret, tc.from, err, tc.ok)
		}
	}
	if _, err := reg2.Check("nope", d1.Secret, "example.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown node: %v", err)
	}
	// A dead old token leaves the renewed registration alone; the current one removes it.
	if err := reg2.DeadToken(context.Background(), dispatch.DeadToken{Registration: dispatch.Registration{ID: d1.Node, Token: "aa11"},
		Channel: payload.ChannelMessage, Token: "aa11"}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg2.Get(d1.Node); err != nil {
		t.Fatalf("renewed registration removed by an old dead token: %v", err)
	}
	if err := reg2.DeadToken(context.Background(), dispatch.DeadToken{Registration: d2.Registration(),
		Channel: payload.ChannelMessage, Token: d2.Token}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg2.Get(d1.Node); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dead token kept: %v", err)
	}
	if devs, _ := reg2.ByAccount("juliet@example.test"); len(devs) != 0 {
		t.Fatalf("account index kept %d", len(devs))
	}
	// Registering after removal gives a new node.
	d3, created, _ := reg2.Register(RegisterRequest{Account: "juliet@example.test", DeviceID: "phone", Provider: dispatch.APNS, Token: "cc33"})
	if !created || d3.Node == d1.Node {
		t.Fatalf("after removal: created=%v node %s", created, d3.Node)
	}
}

func TestDisco(t *testing.T) {
	c, _ := newTest(t)
	info := c.Handle(context.Background(), stanza.New(stanza.NSClient, "iq", "type", "get", "id", "d", "from", "u@example.test/r").Add(stanza.New(stanza.NSDiscoInfo, "query")))
	s := info.String()
	for _, want := range []string{`category="pubsub"`, `type="push"`, stanza.NSPush, nsCommands, nsData} {
		if !strings.Contains(s, want) {
			t.Errorf("disco#info lacks %s: %s", want, s)
		}
	}
	items := c.Handle(context.Background(), stanza.New(stanza.NSClient, "iq", "type", "get", "id", "d", "from", "u@example.test/r").Add(stanza.New(stanza.NSDiscoItem, "query", "node", nsCommands)))
	for _, cmd := range commands {
		if !strings.Contains(items.String(), `node="`+cmd.node+`"`) {
			t.Errorf("disco#items lacks %s", cmd.node)
		}
	}
}

func TestCommandsOneStepMultiStepUnregister(t *testing.T) {
	c, _ := newTest(t)
	ctx := context.Background()
	from := "u@example.test/phone"
	// One step.
	r := resultFields(t, c.Handle(ctx, cmdIQ(from, CmdRegisterFCM, "execute", "", field("token", "fcm-token"), field("device-id", "d1"))))
	if r["status"] != "completed" || r["jid"] != "push.example.test" || r["node"] == "" || r["secret"] == "" {
		t.Fatalf("one step: %v", r)
	}
	// Multi step.
	first := c.Handle(ctx, cmdIQ(from, CmdRegisterDevice, "execute", ""))
	f := resultFields(t, first)
	if f["status"] != "executing" || f["sessionid"] == "" {
		t.Fatalf("first step: %s", first)
	}
	if _, ok := f["device-token"]; !ok {
		t.Fatalf("form lacks device-token: %s", first)
	}
	// Another user cannot continue the session.
	if got := errCond(c.Handle(ctx, cmdIQ("eve@example.test/x", CmdRegisterDevice, "complete", f["sessionid"], field("provider", "apns"), field("device-token", "abcd")))); got != "modify/bad-request" {
		t.Fatalf("foreign session: %s", got)
	}
	r2 := resultFields(t, c.Handle(ctx, cmdIQ(from, CmdRegisterDevice, "complete", f["sessionid"], field("provider", "apns"), field("device-token", "abcd"))))
	if r2["status"] != "completed" || r2["node"] == "" {
		t.Fatalf("second step: %v", r2)
	}
	// The session is gone after use.
	if got := errCond(c.Handle(ctx, cmdIQ(from, CmdRegisterDevice, "complete", f["sessionid"], field("provider", "apns"), field("device-token", "abcd")))); got != "modify/bad-request" {
		t.Fatalf("reused session: %s", got)
	}
	// Bad payload, unknown command, no localpart.
	if got := errCond(c.Handle(ctx, cmdIQ(from, CmdRegisterAPNS, "execute", "", field("device-id", "x")))); got != "modify/bad-request" {
		t.Fatalf("bad payload: %s", got)
	}
	if got := errCond(c.Handle(ctx, cmdIQ(from, "nope", "execute", ""))); got != "cancel/item-not-found" {
		t.Fatalf("unknown command: %s", got)
	}
	if got := errCond(c.Handle(ctx, cmdIQ("example.test", CmdRegisterAPNS, "execute", "", field("token", "ab")))); got != "auth/forbidden" {
		t.Fatalf("server as registrant: %s", got)
	}
	// Unregister both.
	if devs, _ := c.Registry().ByAccount("u@example.test"); len(devs) != 2 {
		t.Fatalf("%d devices", len(devs))
	}
	if r := resultFields(t, c.Handle(ctx, cmdIQ(from, CmdUnregisterFCM, "execute", "", field("device-id", "d1")))); r["status"] != "completed" {
		t.Fatal(r)
	}
	if r := resultFields(t, c.Handle(ctx, cmdIQ(from, CmdUnregisterDevice, "execute", "", field("provider", "apns"), field("device-token", "abcd")))); r["status"] != "completed" {
		t.Fatal(r)
	}
	if got := errCond(c.Handle(ctx, cmdIQ(from, CmdUnregisterFCM, "execute", "", field("device-id", "d1")))); got != "cancel/item-not-found" {
		t.Fatalf("unregister twice: %s", got)
	}
}

func TestPublish(t *testing.T) {
	c, fd := newTest(t)
	ctx := context.Background()
	from := "u@example.test/phone"
	withKey := resultFields(t, c.Handle(ctx, cmdIQ(from, CmdRegisterAPNS, "execute", "", field("token", "aa"), field("device-id", "k"), field("key", key32))))
	noKey := resultFields(t, c.Handle(ctx, cmdIQ(from, CmdRegisterAPNS, "execute", "", field("token", "bb"), field("device-id", "n"))))
	sum := []*stanza.Element{field("message-count", "3"), field("last-message-sender", "romeo@example.test/x"), field("last-message-body", "hi")}

	if got := c.Handle(ctx, publishIQ("example.test", withKey["node"], withKey["secret"], sum...)); got.Get("type") != "result" {
		t.Fatalf("publish: %s", got)
	}
	j := fd.jobs[0]
	if j.Payload.Body != "hi" || j.Payload.Count != 3 || j.Registration.Key == nil || j.Registration.Token != "aa" || j.TrackingID == "" {
		t.Fatalf("job: %+v", j)
	}
	// No key: the dispatcher strips personal fields (payload.Prepare).
	if got := c.Handle(ctx, publishIQ("u@example.test", noKey["node"], noKey["secret"], sum...)); got.Get("type") != "result" {
		t.Fatalf("publish from bare JID: %s", got)
	}
	if s, _ := payload.Prepare(fd.jobs[1].Registration.Key, fd.jobs[1].Payload, ""); s.Enc != "" {
		t.Fatalf("keyless device got content: %+v", s)
	}
	for name, iq := range map[string]*stanza.Element{
		"wrong secret": publishIQ("example.test", withKey["node"], "nope", sum...),
		"no secret":    publishIQ("example.test", withKey["node"], "", sum...),
		"unknown node": publishIQ("example.test", "nope", withKey["secret"], sum...),
		"other domain": publishIQ("evil.test", withKey["node"], withKey["secret"], sum...),
	} {
		if got := errCond(c.Handle(ctx, iq)); got != "cancel/item-not-found" {
			t.Errorf("%s: %s", name, got)
		}
	}
	fd.err = dispatch.ErrBusy
	if got := errCond(c.Handle(ctx, publishIQ("example.test", withKey["node"], withKey["secret"], sum...))); got != "wait/resource-constraint" {
		t.Fatalf("busy: %s", got)
	}
	fd.err = nil
	// Router-encrypted (tigase:push:encrypt:0): passed through as iv ‖ ciphertext.
	iq := publishIQ("example.test", withKey["node"], withKey["secret"], sum...)
	notif := iq.FirstElement().FirstElement().FirstElement().FirstElement()
	iv := base64.StdEncoding.EncodeToString(make([]byte, 12))
	ct := base64.StdEncoding.EncodeToString(make([]byte, 40))
	notif.Add(stanza.New(nsTigaseEncrypt, "encrypted", "iv", iv).AddText(ct))
	if got := c.Handle(ctx, iq); got.Get("type") != "result" {
		t.Fatalf("encrypted: %s", got)
	}
	j = fd.jobs[len(fd.jobs)-1]
	if j.Encrypted == "" || j.Payload.HasPersonal() {
		t.Fatalf("encrypted job: %+v", j)
	}
	if c.Publishes("accepted") != 3 || c.Publishes("item_not_found") != 4 || c.Publishes("busy") != 1 {
		t.Fatalf("metrics: %d %d %d", c.Publishes("accepted"), c.Publishes("item_not_found"), c.Publishes("busy"))
	}
}

// fakeRouter accepts XEP-0114 on conn: header, handshake, then closes the
// link after answering one disco#info (so the component reconnects).
func fakeRouter(t *testing.T, conn net.Conn, got chan<- string) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	buf := make([]byte, 4096)
	n, err := r.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "jabber:component:accept") {
		return
	}
	fmt.Fprint(conn, `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='push.example.test'>`)
	if n, err = r.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "<handshake>") {
		return
	}
	fmt.Fprint(conn, `<handshake/>`)
	fmt.Fprint(conn, `<iq type='get' id='q1' from='example.test' to='push.example.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	var acc strings.Builder
	for !strings.Contains(acc.String(), "</iq>") {
		n, err := r.Read(buf)
		if err != nil {
			return
		}
		acc.Write(buf[:n])
	}
	got <- acc.String()
}

func TestLinkReconnectsWithBackoff(t *testing.T) {
	reg, _ := OpenRegistry(testDB(t), nil)
	var sleeps []time.Duration
	var mu sync.Mutex
	var dials atomic.Int32
	got := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := Config{Domain: "push.example.test", Secret: "s",
		Dial: func(context.Context) (net.Conn, error) {
			n := dials.Add(1)
			if n == 2 || n == 3 {
				return nil, errors.New("refused")
			}
			a, b := net.Pipe()
			go fakeRouter(t, b, got)
			return a, nil
		},
		Sleep: func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			sleeps = append(sleeps, d)
			mu.Unlock()
			return ctx.Err()
		},
		Jitter: func() float64 { return 1 },
	}
	c, err := New(cfg, reg, &fakeDispatch{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for i := range 2 {
		select {
		case s := <-got:
			if !strings.Contains(s, `type="result"`) && !strings.Contains(s, `type='result'`) || !strings.Contains(s, "push") {
				t.Fatalf("answer %d: %s", i, s)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no answer over the link")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Link 1 negotiated then dropped: backoff 1×min; two refused dials: 2×, 4× min;
	// link 4 negotiated (count restarts).
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}
	if len(sleeps) < 3 || sleeps[0] != want[0] || sleeps[1] != want[1] || sleeps[2] != want[2] {
		t.Fatalf("backoffs %v, want prefix %v", sleeps, want)
	}
}

// summary and formValue read forms in one pass; they must read what
// parseForm reads (last field of a name, first value, trimmed).
func TestSummaryReadsLikeParseForm(t *testing.T) {
	forms := [][]*stanza.Element{
		{field("FORM_TYPE", nsPushSummary), field("message-count", " 3 "), field("last-message-sender", "a@b/c"), field("last-message-body", "hi", "second")},
		{field("message-count", "2"), field("message-count", "5"), field("last-message-body")},
		{field("FORM_TYPE", "urn:other"), field("message-count", "9")},
		{field("last-message-sender", "  x@y  "), stanza.New("other:ns", "field", "var", "last-message-body").Add(stanza.New(nsData, "value").AddText("no"))},
		{},
	}
	for i, fields := range forms {
		x := stanza.New(nsData, "x", "type", "submit")
		for _, f := range fields {
			x.Add(f)
		}
		pub := stanza.New(nsPubsub, "publish", "node", "n").Add(stanza.New(nsPubsub, "item").Add(stanza.New(stanza.NSPush, "notification").Add(x)))
		got, _ := summary(pub, 1)
		want := payload.Payload{Type: payload.TypeMessage, TS: 1}
		if f := parseForm(x); f.get("FORM_TYPE") == "" || f.get("FORM_TYPE") == nsPushSummary {
			if n, err := strconv.Atoi(f.get("message-count")); err == nil && n > 0 {
				want.Count = n
			}
			want.From, want.Body = f.get("last-message-sender"), f.get("last-message-body")
		}
		if got != want {
			t.Errorf("form %d: summary %+v, parseForm %+v", i, got, want)
		}
		for _, name := range []string{"FORM_TYPE", "message-count", "last-message-sender", "last-message-body", "absent"} {
			if formValue(x, name) != parseForm(x).get(name) {
				t.Errorf("form %d: formValue(%s) = %q, parseForm %q", i, name, formValue(x, name), parseForm(x).get(name))
			}
		}
	}
}

// H2: with the registry's OnChange (a cluster's copy to the other
// members), a registration is answered only once that copy is done, and
// not at all (wait/internal-server-error) if it cannot be.
func TestRegistrationAnsweredAfterReplicated(t *testing.T) {
	reg, err := OpenRegistry(testDB(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var waited []string
	fail := false
	reg.OnChange(func(node string, rec []byte) func() error {
		return func() error {
			waited = append(waited, node)
			if fail {
				return errors.New("backup unreachable")
			}
			return nil
		}
	})
	c, err := New(Config{Domain: "push.example.test"}, reg, &fakeDispatch{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := resultFields(t, c.Handle(ctx, cmdIQ("u@example.test/phone", CmdRegisterFCM, "execute", "", field("token", "t1"), field("device-id", "d1"))))
	if len(waited) != 1 || waited[0] != r["node"] {
		t.Fatalf("replication waited for %q, answered node %q", waited, r["node"])
	}
	fail = true
	if got := errCond(c.Handle(ctx, cmdIQ("u@example.test/phone", CmdRegisterFCM, "execute", "", field("token", "t2"), field("device-id", "d2")))); got != "wait/internal-server-error" {
		t.Fatalf("unreplicated registration answered %q", got)
	}
}

// TestRegistryByToken: a SIP binding finds the device key of the XMPP push
// registration that carries the same token (C2, S2), also for stores
// written before the token index existed.
func TestRegistryByToken(t *testing.T) {
	db := testDB(t)
	r, err := OpenRegistry(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	var key [payload.KeySize]byte
	key[0] = 7
	voip := "voip-token-1"
	if _, _, err := r.Register(RegisterRequest{Account: "alice@example.test", DeviceID: "phone", Provider: dispatch.APNS,
		Token: "msg-token-1", VoIPToken: &voip, Key: &key}); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"msg-token-1", "voip-token-1"} {
		reg, ok := r.RegistrationByToken(dispatch.APNS, tok)
		if !ok || reg.Key == nil || reg.Key[0] != 7 || reg.Token != "msg-token-1" {
			t.Fatalf("RegistrationByToken(%s) = %+v, %v", tok, reg, ok)
		}
	}
	if _, ok := r.RegistrationByToken(dispatch.FCM, "msg-token-1"); ok {
		t.Fatal("a token of another provider matched")
	}
	// Drop the index and reopen: it is rebuilt.
	if err := db.DropPrefix(tokenKey(nil), keyTokenIndex); err != nil {
		t.Fatal(err)
	}
	r, err = OpenRegistry(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.RegistrationByToken(dispatch.APNS, "voip-token-1"); !ok {
		t.Fatal("index not rebuilt at open")
	}
	// A replaced token no longer finds the device.
	if _, _, err := r.Register(RegisterRequest{Account: "alice@example.test", DeviceID: "phone", Provider: dispatch.APNS, Token: "msg-token-2"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.RegistrationByToken(dispatch.APNS, "msg-token-1"); ok {
		t.Fatal("old token still found")
	}
}
