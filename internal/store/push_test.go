package store

import (
	"testing"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
	"pushd/jsm"
)

func TestPushRegistrationsPersist(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	opts := stanza.New("jabber:x:data", "x", "type", "submit").Add(
		stanza.New("jabber:x:data", "field", "var", "secret").Add(stanza.New("jabber:x:data", "value").AddText("s3cr&t")))
	app := jid.MustParse("push.example.org")
	regs := db.PushRegistrations()
	if err := regs.Save("alice@localhost/phone", jsm.Registration{AppServer: app, Node: "n1", Options: opts,
		Encrypt: &jsm.Encryption{Alg: "aes-128-gcm", Key: []byte("0123456789abcdef")}}); err != nil {
		t.Fatal(err)
	}
	if err := regs.Save("alice@localhost/phone", jsm.Registration{AppServer: app, Node: "n2"}); err != nil {
		t.Fatal(err)
	}
	if err := regs.Save("alice@localhost/phone2", jsm.Registration{AppServer: app, Node: "n3"}); err != nil {
		t.Fatal(err)
	}
	if err := regs.Delete("alice@localhost/phone2", app, "n3"); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	db, err = Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := db.State()
	if err != nil {
		t.Fatal(err)
	}
	got := st.Registrations["alice@localhost/phone"]
	if len(st.Registrations) != 1 || len(got) != 2 {
		t.Fatalf("registrations after reopen: %+v", st.Registrations)
	}
	r := got[0]
	if r.Node != "n1" || !r.AppServer.Equal(app) || r.Encrypt == nil || string(r.Encrypt.Key) != "0123456789abcdef" {
		t.Fatalf("first registration: %+v", r)
	}
	if want, have := string(stanza.Marshal(opts, "")), string(stanza.Marshal(r.Options, "")); want != have {
		t.Errorf("options: %s, want %s", have, want)
	}
	if got[1].Node != "n2" || got[1].Options != nil || got[1].Encrypt != nil {
		t.Errorf("second registration: %+v", got[1])
	}
}
