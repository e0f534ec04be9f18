package stanza

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

const scanHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='a>b' version='1.0'>`

// scanAll returns the raw elements and names of a whole stream.
func scanAll(t *testing.T, r io.Reader, limits Limits) (raws, names []string, err error) {
	t.Helper()
	s := NewScanner(r, limits)
	if _, hdr, err := s.Header(); err != nil {
		return nil, nil, err
	} else if hdr.Name.Space != NSStream || hdr.Name.Local != "stream" {
		t.Fatalf("header %v", hdr.Name)
	}
	for {
		raw, name, err := s.Next()
		if err != nil {
			return raws, names, err
		}
		raws, names = append(raws, string(raw)), append(names, string(name))
	}
}

func TestScannerSplits(t *testing.T) {
	elements := []string{
		`<message to='b@x' type="chat"><body>a &gt; b, 'q' "q" / </body></message>`,
		`<r xmlns='urn:xmpp:sm:3'/>`,
		`<iq id='1'><query xmlns='jabber:iq:roster'><item jid='c@x' name="x/>y"/></query></iq>`,
		`<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>`,
		`<message><body><![CDATA[<not an element/> ]] ]]] ]]></body></message>`,
		`<presence/>`,
	}
	stream := scanHeader + strings.Join(elements, " \n ") + " </stream:stream>"
	for _, one := range []bool{false, true} {
		var r io.Reader = strings.NewReader(stream)
		if one {
			r = iotest.OneByteReader(r)
		}
		raws, names, err := scanAll(t, r, Limits{})
		if !errors.Is(err, io.EOF) {
			t.Fatalf("one byte reads %v: %v after %q", one, err, raws)
		}
		wantNames := []string{"message", "r", "iq", "stream:features", "message", "presence"}
		if strings.Join(raws, "|") != strings.Join(elements, "|") || strings.Join(names, " ") != strings.Join(wantNames, " ") {
			t.Fatalf("one byte reads %v: got %q named %q", one, raws, names)
		}
	}
}

func TestScannerRefuses(t *testing.T) {
	for _, tc := range []struct {
		what, body string
		want       error
	}{
		{"a comment", `<message><!-- x --></message>`, ErrRestricted},
		{"a top-level comment", `<!-- x -->`, ErrRestricted},
		{"a processing instruction", `<message><?pi x?></message>`, ErrRestricted},
		{"text between elements", `hello<presence/>`, ErrBadFormat},
		{"too deep", strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40), ErrTooDeep},
		{"too big", `<message><body>` + strings.Repeat("x", 2048) + `</body></message>`, ErrTooBig},
		{"too much whitespace", strings.Repeat(" ", 2048), ErrTooBig},
		{"a stray slash", `<presence / >`, ErrBadFormat},
		{"a cut stream", `<message><body>x`, io.ErrUnexpectedEOF},
	} {
		_, _, err := scanAll(t, strings.NewReader(scanHeader+tc.body), Limits{MaxBytes: 1024, MaxDepth: 32})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.what, err, tc.want)
		}
	}
}

// BeforeRead runs only when the buffered input is used up: a relay can
// flush what it batched exactly when the next element is not here yet.
func TestScannerBeforeRead(t *testing.T) {
	r, w := io.Pipe()
	s := NewScanner(r, Limits{})
	reads := 0
	s.BeforeRead = func() error { reads++; return nil }
	go func() {
		_, _ = io.WriteString(w, scanHeader+`<presence/><presence/>`)
		_, _ = io.WriteString(w, `<presence/>`)
		_ = w.Close()
	}()
	if _, _, err := s.Header(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, _, err := s.Next(); err != nil {
			t.Fatalf("element %d: %v", i, err)
		}
	}
	if reads > 3 {
		t.Fatalf("%d reads for three writes", reads)
	}
}

// FuzzScanner: on any input the Scanner splits where the Reader does, or
// fails where it fails, and the bytes it gives back parse to the
// Reader's elements.
func FuzzScanner(f *testing.F) {
	f.Add(`<message><body>x</body></message><presence/>`)
	f.Add(`<a b='>'><![CDATA[<]]></a>`)
	f.Add(`<a><b/></a></stream:stream>`)
	f.Fuzz(func(t *testing.T, body string) {
		limits := Limits{MaxBytes: 4096, MaxDepth: 8}
		in := scanHeader + body
		r := NewReader(strings.NewReader(in), limits)
		s := NewScanner(strings.NewReader(in), limits)
		if _, err := r.Header(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Header(); err != nil {
			t.Fatal(err)
		}
		for {
			want, rerr := r.Next()
			raw, _, serr := s.Next()
			if rerr != nil {
				// The Scanner splits without checking well-formedness in
				// full (names, entities, matching end tags): the node the
				// bytes go to judges them. It may pass what the Reader
				// refuses, never the other way round for a good stream.
				return
			}
			if serr != nil {
				t.Fatalf("the Reader read %s, the Scanner failed: %v", want, serr)
			}
			if bytes.ContainsRune(raw, ':') {
				return // a prefix the header declared: Unmarshal has no header
			}
			got, err := Unmarshal(raw, NSClient, limits.MaxDepth)
			if err != nil || !bytes.Equal(Marshal(got, NSClient), Marshal(want, NSClient)) {
				t.Fatalf("the Scanner gave %q, the Reader %s (%v)", raw, want, err)
			}
		}
	})
}
