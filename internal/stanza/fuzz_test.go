package stanza

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader feeds arbitrary bytes after a valid header. Whatever the
// input, the reader must return elements or an error without panicking,
// never exceed its limits, and every element it returns must serialise to
// XML that reads back to the same bytes.
func FuzzReader(f *testing.F) {
	seeds := []string{
		`<message to='a@b'><body>hi</body></message>`,
		`<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>`,
		`<presence><show>away</show><c xmlns='http://jabber.org/protocol/caps' node='n' ver='v'/></presence>`,
		`<r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='5'/>`,
		`<message><x xmlns='urn:x' xmlns:p='urn:p' p:a='1' xml:lang='de'>t&amp;<y/></x></message>`,
		`<!DOCTYPE x [<!ENTITY a "b">]>`,
		`<message><!-- c --></message>`,
		`<a><b><c><d><e><f><g><h><i></i></h></g></f></e></d></c></b></a>`,
		`</stream:stream>`,
		"<message>\x00</message>",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	limits := Limits{MaxBytes: 4096, MaxDepth: 8}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(io.MultiReader(bytes.NewReader([]byte(header)), bytes.NewReader(data)), limits)
		if _, err := r.Header(); err != nil {
			t.Fatalf("header: %v", err)
		}
		for i := 0; i < 64; i++ {
			el, err := r.Next()
			if err != nil {
				if errors.Is(err, ErrTooBig) && int64(len(data)) <= limits.MaxBytes {
					t.Fatalf("ErrTooBig for %d bytes of input", len(data))
				}
				return
			}
			if d := depth(el); d > limits.MaxDepth {
				t.Fatalf("element of depth %d returned", d)
			}
			out := Marshal(el, NSClient)
			r2 := NewReader(io.MultiReader(bytes.NewReader([]byte(header)), bytes.NewReader(out)), Limits{MaxBytes: 1 << 20, MaxDepth: 64})
			if _, err := r2.Header(); err != nil {
				t.Fatal(err)
			}
			back, err := r2.Next()
			if err != nil {
				t.Fatalf("re-reading %q: %v", out, err)
			}
			if again := Marshal(back, NSClient); !bytes.Equal(again, out) {
				t.Fatalf("round trip differs:\n%q\n%q", out, again)
			}
		}
	})
}

func depth(e *Element) int {
	d := 0
	for _, c := range e.Elements() {
		if cd := depth(c); cd > d {
			d = cd
		}
	}
	return d + 1
}
