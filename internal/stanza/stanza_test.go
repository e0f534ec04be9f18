package stanza

import (
	"errors"
	"io"
	"strings"
	"testing"
)

const header = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`

func TestReaderRoundTrip(t *testing.T) {
	in := header + `<message to='a@b' type='chat' xml:lang='en'><body>hi &amp; &lt;bye&gt;</body><x xmlns='urn:x' a:b='1' xmlns:a='urn:a'>t<y/>u</x></message>  <presence/></stream:stream>`
	r := NewReader(strings.NewReader(in), DefaultLimits())
	if _, err := r.Header(); err != nil {
		t.Fatal(err)
	}
	msg, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.ChildText(NSClient, "body"); got != "hi & <bye>" {
		t.Errorf("body = %q", got)
	}
	want := `<message to="a@b" type="chat" xml:lang="en"><body>hi &amp; &lt;bye&gt;</body><x xmlns="urn:x" xmlns:a1="urn:a" a1:b="1">t<y/>u</x></message>`
	if got := string(Marshal(msg, NSClient)); got != want {
		t.Errorf("marshal:\n got %s\nwant %s", got, want)
	}
	// What we write must read back to the same element.
	r2 := NewReader(strings.NewReader(header+want), DefaultLimits())
	_, _ = r2.Header()
	again, err := r2.Next()
	if err != nil {
		t.Fatal(err)
	}
	if string(Marshal(again, NSClient)) != want {
		t.Errorf("second round trip differs: %s", Marshal(again, NSClient))
	}
	if p, err := r.Next(); err != nil || !p.Is(NSClient, "presence") {
		t.Fatalf("presence: %v %v", p, err)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
}

func TestReaderNormalisesStanzaNamespaces(t *testing.T) {
	in := `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='push.localhost'><iq type='get' id='1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`
	r := NewReader(strings.NewReader(in), DefaultLimits())
	if _, err := r.Header(); err != nil {
		t.Fatal(err)
	}
	iq, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if !iq.IsStanza() {
		t.Fatalf("component iq not read as a stanza: %v", iq.Name)
	}
}

// TestReaderLimits is BEHAVIOUR S4's table for the reader: each bad input
// gets its own error and nothing is read past it.
func TestReaderLimits(t *testing.T) {
	big := strings.Repeat("a", 300<<10)
	deep := strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40)
	tests := []struct {
		name    string
		header  string
		body    string
		want    error
		syntax  bool
		limits  Limits
		inStart bool
	}{
		{name: "doctype before header", header: `<!DOCTYPE x [<!ENTITY a "b">]>` + header, want: ErrRestricted, inStart: true},
		{name: "processing instruction before header", header: `<?php x?>` + header, want: ErrRestricted, inStart: true},
		{name: "entity declaration in stream", body: `<!ENTITY a "b">`, want: ErrRestricted},
		{name: "comment", body: `<message><!-- x --></message>`, want: ErrRestricted},
		{name: "processing instruction", body: `<message><?x y?></message>`, want: ErrRestricted},
		{name: "undeclared entity", body: `<message><body>&lol;</body></message>`, syntax: true},
		{name: "malformed", body: `<message><body></message>`, syntax: true},
		{name: "oversized text", body: `<message><body>` + big + `</body></message>`, want: ErrTooBig},
		{name: "oversized attributes", body: `<message a='` + big + `'/>`, want: ErrTooBig},
		{name: "endless whitespace", body: strings.Repeat(" ", 300<<10), want: ErrTooBig},
		{name: "deep nesting", body: `<message>` + deep + `</message>`, want: ErrTooDeep},
		{name: "text at stream level", body: `hello`, want: ErrBadFormat},
		{name: "small limit", body: `<message><body>0123456789</body></message>`, want: ErrTooBig, limits: Limits{MaxBytes: 20, MaxDepth: 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header
			if h == "" {
				h = header
			}
			l := tc.limits
			if l.MaxBytes == 0 {
				l = DefaultLimits()
			}
			r := NewReader(strings.NewReader(h+tc.body), l)
			_, err := r.Header()
			if !tc.inStart {
				if err != nil {
					t.Fatalf("header: %v", err)
				}
				_, err = r.Next()
			}
			switch {
			case tc.syntax:
				if !IsSyntax(err) {
					t.Fatalf("got %v, want a syntax error", err)
				}
			case !errors.Is(err, tc.want):
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStanzaSizeIsPerStanza(t *testing.T) {
	// Many stanzas, each under the limit, add up to far more than it.
	body := strings.Repeat(`<message><body>`+strings.Repeat("x", 900)+`</body></message>`, 50)
	r := NewReader(strings.NewReader(header+body), Limits{MaxBytes: 1024, MaxDepth: 8})
	if _, err := r.Header(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, err := r.Next(); err != nil {
			t.Fatalf("stanza %d: %v", i, err)
		}
	}
}

func TestEscaping(t *testing.T) {
	e := New(NSClient, "message", "to", `a"b'<&>`+"\n\t\r")
	e.AddText("x<&>\"'\r")
	got := string(Marshal(e, NSClient))
	want := `<message to="a&quot;b&apos;&lt;&amp;&gt;&#xA;&#x9;&#xD;">x&lt;&amp;&gt;"'&#xD;</message>`
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

func BenchmarkReadMessage(b *testing.B) {
	msg := `<message to='bob@localhost/phone' type='chat' id='abc123'><body>Hello there, how are you today?</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>`
	in := header + strings.Repeat(msg, b.N)
	r := NewReader(strings.NewReader(in), DefaultLimits())
	if _, err := r.Header(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalMessage(b *testing.B) {
	r := NewReader(strings.NewReader(header+`<message to='bob@localhost/phone' from='alice@localhost/pc' type='chat' id='abc123'><body>Hello there, how are you today?</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>`), DefaultLimits())
	_, _ = r.Header()
	msg, _ := r.Next()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = Append(buf[:0], msg, NSClient)
	}
}

func TestUnmarshal(t *testing.T) {
	msg := New(NSClient, "message", "to", "a@x").Add(New(NSClient, "body").AddText("<&>"))
	form := New("jabber:x:data", "x", "type", "submit")
	for _, tc := range []struct {
		e  *Element
		ns string
	}{{msg, NSClient}, {form, ""}, {form, NSClient}} {
		b := Marshal(tc.e, tc.ns)
		got, err := Unmarshal(b, tc.ns, 8)
		if err != nil || string(Marshal(got, tc.ns)) != string(b) || got.Name != tc.e.Name {
			t.Fatalf("%s in %q: got %v, %v", b, tc.ns, got, err)
		}
	}
	if _, err := Unmarshal([]byte("<a><b><c/></b></a>"), "", 2); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("too deep: %v", err)
	}
	if _, err := Unmarshal([]byte("<a>"), "", 2); err == nil {
		t.Fatal("half an element read")
	}
}
