package peertest

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// PublishShape is a publish IQ with everything that varies between runs
// and servers replaced by placeholders, so two servers' publishes can be
// compared (testdata/peers/prosody_publish.golden.json holds Prosody's).
// Order is kept everywhere: fields, options, attributes (sorted by name),
// children.
type PublishShape struct {
	From                   string   `json:"from"`
	To                     string   `json:"to"`
	Node                   string   `json:"node"`
	FormType               string   `json:"form_type"`
	Fields                 []Field  `json:"fields"`
	PublishOptionsFormType string   `json:"publish_options_form_type"`
	PublishOptions         []Field  `json:"publish_options"`
	NotificationChildren   []string `json:"notification_children"`
	Encrypted              bool     `json:"encrypted"`
	// Outline is the IQ as one line per element, indented by depth:
	// "name {ns} [attr=value ...]" then a "= text" line for text content.
	Outline []string `json:"outline"`
}

// PublishGolden is the file format of prosody_publish.golden.json.
type PublishGolden struct {
	Comment string       `json:"comment"`
	Server  string       `json:"server"`
	Publish PublishShape `json:"publish"`
}

var countRe = regexp.MustCompile(`^[0-9]+$`)

// countFields are summary fields whose numeric values become "<count>".
var countFields = map[string]bool{"message-count": true, "pending-subscription-count": true}

// ShapeOf normalises p. ph maps literal strings (JIDs, node, secret,
// bodies...) to placeholders such as "<domain>"; it is applied to JIDs,
// the node, field values and attribute values. Numeric values of
// message-count and pending-subscription-count become "<count>", the IQ
// id and item ids "<id>".
func ShapeOf(p Publish, ph map[string]string) (PublishShape, error) {
	r := func(s string) string {
		if v, ok := ph[s]; ok {
			return v
		}
		return s
	}
	fields := func(fs []Field) []Field {
		out := make([]Field, len(fs))
		for i, f := range fs {
			nf := Field{Var: f.Var, Type: f.Type, Values: make([]string, len(f.Values))}
			for j, v := range f.Values {
				switch {
				case countFields[f.Var] && countRe.MatchString(v):
					nf.Values[j] = "<count>"
				default:
					nf.Values[j] = r(v)
				}
			}
			out[i] = nf
		}
		return out
	}
	s := PublishShape{
		From:                   r(p.From),
		To:                     r(p.To),
		Node:                   r(p.Node),
		FormType:               p.FormType,
		Fields:                 fields(p.FieldList),
		PublishOptionsFormType: p.PublishOptionsFormType,
		PublishOptions:         fields(p.PublishOptionsList),
		NotificationChildren:   append([]string{}, p.NotificationChildren...),
		Encrypted:              p.Encrypted != nil,
	}
	outline, err := xmlOutline(p.Raw, func(path []string, attr, val string) string {
		if attr == "id" && (len(path) == 1 || path[len(path)-1] == "item") {
			return "<id>"
		}
		if len(path) > 0 && path[len(path)-1] == "field" && attr == "var" {
			return val
		}
		return r(val)
	}, func(path []string, text string) string {
		// The value of a count field is a count, whatever its number.
		if countRe.MatchString(text) {
			return "<count>"
		}
		return r(text)
	})
	if err != nil {
		return s, err
	}
	s.Outline = outline
	return s, nil
}

// xmlOutline renders raw as indented lines, mapping attribute values and
// text through the given functions.
func xmlOutline(raw string, attr func(path []string, name, val string) string, text func(path []string, t string) string) ([]string, error) {
	d := xml.NewDecoder(strings.NewReader(raw))
	var out, path []string
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("outline: %w", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			path = append(path, tok.Name.Local)
			var attrs []string
			for _, a := range tok.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					continue
				}
				n := a.Name.Local
				if a.Name.Space != "" {
					n = a.Name.Space + ":" + n
				}
				attrs = append(attrs, n+"="+attr(path, n, a.Value))
			}
			sort.Strings(attrs)
			line := strings.Repeat("  ", len(path)-1) + tok.Name.Local + " {" + tok.Name.Space + "}"
			if len(attrs) > 0 {
				line += " [" + strings.Join(attrs, " ") + "]"
			}
			out = append(out, line)
		case xml.EndElement:
			path = path[:len(path)-1]
		case xml.CharData:
			t := string(bytes.TrimSpace(tok))
			if t != "" {
				out = append(out, strings.Repeat("  ", len(path))+"= "+text(path, t))
			}
		}
	}
}

// PushPlaceholders is the ShapeOf placeholder map the golden file was
// written with: the server's domain, the app server's JID, the node, the
// secret, the sender's full and bare JID, and the message bodies.
func PushPlaceholders(domain, appServer, node, secret, senderFullJID string, bodies ...string) map[string]string {
	bare, _, _ := strings.Cut(senderFullJID, "/")
	ph := map[string]string{
		domain: "<domain>", appServer: "<appserver>", node: "<node>", secret: "<secret>",
		senderFullJID: "<sender-full-jid>", bare: "<sender-bare-jid>",
	}
	for _, b := range bodies {
		ph[b] = "<body>"
	}
	return ph
}

// LoadPublishGolden reads testdata/peers/prosody_publish.golden.json (or
// another file of that format).
func LoadPublishGolden(path string) (PublishGolden, error) {
	var g PublishGolden
	b, err := os.ReadFile(path)
	if err != nil {
		return g, err
	}
	err = json.Unmarshal(b, &g)
	return g, err
}

// WritePublishGolden writes g as indented JSON.
func WritePublishGolden(path string, g PublishGolden) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep "<placeholder>" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(g); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// ProsodyPublishGolden is the path of Prosody's publish golden file under
// the repository root.
func ProsodyPublishGolden(root string) string {
	return filepath.Join(root, "testdata", "peers", "prosody_publish.golden.json")
}

// DiffShapes lists the differences between two shapes (empty: same).
func DiffShapes(want, got PublishShape) []string {
	var d []string
	cmp := func(what string, w, g any) {
		wb, _ := json.Marshal(w)
		gb, _ := json.Marshal(g)
		if !bytes.Equal(wb, gb) {
			d = append(d, fmt.Sprintf("%s: want %s, got %s", what, wb, gb))
		}
	}
	cmp("from", want.From, got.From)
	cmp("to", want.To, got.To)
	cmp("node", want.Node, got.Node)
	cmp("form_type", want.FormType, got.FormType)
	cmp("fields", want.Fields, got.Fields)
	cmp("publish_options_form_type", want.PublishOptionsFormType, got.PublishOptionsFormType)
	cmp("publish_options", want.PublishOptions, got.PublishOptions)
	cmp("notification_children", want.NotificationChildren, got.NotificationChildren)
	cmp("encrypted", want.Encrypted, got.Encrypted)
	cmp("outline", want.Outline, got.Outline)
	return d
}
