package payload

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/example.json")

// exampleKey and exampleNonce produce the vector documented in docs/payload.md.
func exampleKey() (k [KeySize]byte) {
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func exampleNonce() (n [NonceSize]byte) {
	for i := range n {
		n[i] = byte(0xa0 + i)
	}
	return n
}

var examplePayload = Payload{
	Type: TypeMessage, From: "juliet@example.com", Name: "Juliet", Body: "Wherefore art thou?",
	Count: 2, Node: "node1.example.com", TS: 1700000000000,
}

type exampleVector struct {
	Key       string            `json:"key"`
	Nonce     string            `json:"nonce"`
	Plaintext json.RawMessage   `json:"plaintext"`
	Enc       string            `json:"enc"`
	APNS      json.RawMessage   `json:"apns_body"`
	FCM       map[string]string `json:"fcm_data"`
}

// TestExampleVector pins the documented vector: docs/payload.md must quote
// the enc this code produces, so app developers can check their decryption.
func TestExampleVector(t *testing.T) {
	key, nonce := exampleKey(), exampleNonce()
	enc, err := sealWithNonce(key, nonce, examplePayload)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := json.Marshal(examplePayload)
	body, err := APNSBody(ChannelMessage, "5f0c7b2e-8d1a-4c3b-9e6f-2a1b3c4d5e6f", Sealed{Type: TypeMessage, Enc: enc})
	if err != nil {
		t.Fatal(err)
	}
	v := exampleVector{
		Key: base64.StdEncoding.EncodeToString(key[:]), Nonce: base64.StdEncoding.EncodeToString(nonce[:]),
		Plaintext: plain, Enc: enc, APNS: body,
		FCM: FCMData("5f0c7b2e-8d1a-4c3b-9e6f-2a1b3c4d5e6f", Sealed{Type: TypeMessage, Enc: enc}),
	}
	got, _ := json.MarshalIndent(v, "", "  ")
	const golden = "testdata/example.json"
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(want)) != string(got) {
		t.Fatalf("vector changed; run with -update and fix docs/payload.md\n got %s\nwant %s", got, want)
	}
	doc, err := os.ReadFile("../../docs/payload.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), enc) || !strings.Contains(string(doc), v.Key) {
		t.Fatalf("docs/payload.md does not quote the example key and enc %s", enc)
	}
	p, err := Open(key, enc)
	if err != nil || p != examplePayload {
		t.Fatalf("Open = %+v, %v", p, err)
	}
}

func TestSealOpen(t *testing.T) {
	key := exampleKey()
	enc1, err := Seal(key, examplePayload)
	if err != nil {
		t.Fatal(err)
	}
	enc2, _ := Seal(key, examplePayload)
	if enc1 == enc2 {
		t.Fatal("two seals share a nonce")
	}
	raw, _ := base64.StdEncoding.DecodeString(enc1)
	plain, _ := json.Marshal(examplePayload)
	if len(raw) != NonceSize+len(plain)+TagSize {
		t.Fatalf("sealed length %d, want nonce+%d+tag", len(raw), len(plain))
	}
	if strings.Contains(string(raw), "Juliet") {
		t.Fatal("plaintext visible in sealed form")
	}
	var wrong [KeySize]byte
	if _, err := Open(wrong, enc1); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong key: %v", err)
	}
	raw[len(raw)-1] ^= 1
	if _, err := Open(key, base64.StdEncoding.EncodeToString(raw)); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered: %v", err)
	}
	for _, bad := range []string{"", "!!!", base64.StdEncoding.EncodeToString(make([]byte, 27))} {
		if _, err := Open(key, bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Open(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestPrepare(t *testing.T) {
	key := exampleKey()
	routerEnc, _ := Seal(key, Payload{Type: TypeMessage, Body: "hi"})
	tests := []struct {
		name      string
		key       *[KeySize]byte
		p         Payload
		routerEnc string
		wantErr   error
		wantEnc   bool
	}{
		{"sealed with key", &key, examplePayload, "", nil, true},
		{"no key strips to wake-up", nil, examplePayload, "", nil, false},
		{"pass-through", nil, Payload{Type: TypeMessage, Count: 1}, routerEnc, nil, true},
		{"pass-through with clear body refused", nil, Payload{Type: TypeMessage, Body: "x"}, routerEnc, ErrClearPersonal, false},
		{"pass-through not ciphertext", nil, Payload{Type: TypeMessage}, "hello", ErrNotCiphertext, false},
		{"unknown type", &key, Payload{Type: "chat"}, "", ErrType, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Prepare(tc.key, tc.p, tc.routerEnc)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if (s.Enc != "") != tc.wantEnc {
				t.Fatalf("enc present = %v, want %v", s.Enc != "", tc.wantEnc)
			}
			if tc.routerEnc != "" && err == nil && s.Enc != tc.routerEnc {
				t.Fatal("pass-through changed the ciphertext")
			}
		})
	}
}

func TestStrip(t *testing.T) {
	s := Strip(examplePayload)
	if s.HasPersonal() || s.Type != TypeMessage || s.Count != 2 {
		t.Fatalf("Strip = %+v", s)
	}
}

func TestBodies(t *testing.T) {
	s := Sealed{Type: TypeCall, Enc: "ZW5j"}
	msg, err := APNSBody(ChannelMessage, "tid", s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(msg, &m)
	aps := m["aps"].(map[string]any)
	if aps["mutable-content"] != float64(1) || aps["alert"].(map[string]any)["body"] != AlertCall {
		t.Fatalf("message channel aps = %v", aps)
	}
	if m["v"] != float64(1) || m["tid"] != "tid" || m["enc"] != "ZW5j" {
		t.Fatalf("body = %s", msg)
	}
	voip, _ := APNSBody(ChannelVoIP, "tid", s)
	if string(voip) != `{"aps":{},"v":1,"tid":"tid","enc":"ZW5j"}` {
		t.Fatalf("voip body = %s", voip)
	}
	if _, err := APNSBody("sms", "tid", s); err == nil {
		t.Fatal("unknown channel accepted")
	}
	// A VoIP push must report a call: nothing else rides that channel.
	for _, typ := range []Type{TypeMessage, TypeRegRefresh} {
		if b, err := APNSBody(ChannelVoIP, "tid", Sealed{Type: typ, Enc: "ZW5j"}); err == nil {
			t.Fatalf("%s on the VoIP channel: %s", typ, b)
		}
	}
	// reg-refresh: a background push, nothing shown, nothing sounded.
	refresh, err := APNSBody(ChannelMessage, "tid", Sealed{Type: TypeRegRefresh, Enc: "ZW5j"})
	if err != nil || string(refresh) != `{"aps":{"content-available":1},"v":1,"tid":"tid","enc":"ZW5j"}` {
		t.Fatalf("reg-refresh body = %s, %v", refresh, err)
	}
	wake, _ := APNSBody(ChannelMessage, "tid", Sealed{Type: TypeMessage})
	if strings.Contains(string(wake), "enc") {
		t.Fatalf("wake-up carries enc: %s", wake)
	}
	d := FCMData("tid", s)
	if len(d) != 3 || d["v"] != "1" || d["tid"] != "tid" || d["enc"] != "ZW5j" {
		t.Fatalf("fcm data = %v", d)
	}
}

// APNSBody writes its bodies by hand; they must stay what encoding/json
// makes of apnsBody, whatever the tracking id holds.
func TestAPNSBodyIsJSON(t *testing.T) {
	for _, ch := range []Channel{ChannelMessage, ChannelVoIP} {
		for _, typ := range []Type{TypeMessage, TypeCall, TypeRegRefresh} {
			if ch == ChannelVoIP && !typ.IsCall() {
				continue // refused: TestBodies
			}
			for _, tid := range []string{"5f0c7b2e-8d1a-4c3b-9e6f-2a1b3c4d5e6f", "", `a"b\c`, "<&>", "é\u2028\x01\xff"} {
				for _, enc := range []string{"", "oKGio6Slpqeoqaqr+/==", "x<y"} {
					s := Sealed{Type: typ, Enc: enc}
					got, err := APNSBody(ch, tid, s)
					if err != nil {
						t.Fatal(err)
					}
					b := apnsBody{V: Version, TID: tid, Enc: enc}
					switch {
					case ch == ChannelVoIP:
					case typ == TypeRegRefresh:
						b.Aps = apnsAps{ContentAvailable: 1}
					default:
						text := AlertMessage
						if typ.IsCall() {
							text = AlertCall
						}
						b.Aps = apnsAps{Alert: &apnsAlert{Body: text}, MutableContent: 1, Sound: "default"}
					}
					want, _ := json.Marshal(b)
					if string(got) != string(want) {
						t.Errorf("%s %s %q %q:\n got %s\nwant %s", ch, typ, tid, enc, got, want)
					}
				}
			}
		}
	}
}

func TestKeyFromBase64(t *testing.T) {
	k := exampleKey()
	got, err := KeyFromBase64(base64.StdEncoding.EncodeToString(k[:]))
	if err != nil || got != k {
		t.Fatalf("KeyFromBase64 = %v, %v", got, err)
	}
	if _, err := KeyFromBase64(base64.StdEncoding.EncodeToString(k[:16])); err == nil {
		t.Fatal("16-byte key accepted")
	}
}
