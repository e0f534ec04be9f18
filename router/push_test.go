package router

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"pushd/internal/stanza"
	"pushd/jsm"
)

// BEHAVIOUR S2: with an encrypted registration the summary leaves only as
// tigase:push:encrypt:0 ciphertext that the device's key opens.
func TestEncryptNotification(t *testing.T) {
	form := stanza.New(nsDataForm, "x", "type", "submit").Add(
		stanza.New(nsDataForm, "field", "var", "last-message-body").Add(stanza.New(nsDataForm, "value").AddText("meet at 5")))
	iq := stanza.New(stanza.NSClient, "iq", "type", "set", "id", "push-1").Add(
		stanza.New(nsPubsub, "pubsub").Add(stanza.New(nsPubsub, "publish", "node", "n").Add(
			stanza.New(nsPubsub, "item").Add(stanza.New(stanza.NSPush, "notification").Add(form)))))
	for _, keyLen := range []int{16, 32} {
		key := []byte(strings.Repeat("k", keyLen))
		out, err := encryptNotification(iq, jsm.Summary{Count: 3, Sender: "bob@localhost", Body: "meet at 5", Type: "chat"}, &jsm.Encryption{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		wire := string(stanza.Marshal(out, stanza.NSClient))
		if strings.Contains(wire, "meet at 5") || strings.Contains(wire, "bob@") {
			t.Fatalf("clear text left in %s", wire)
		}
		if !strings.Contains(string(stanza.Marshal(iq, stanza.NSClient)), "meet at 5") {
			t.Fatal("the original stanza was changed")
		}
		enc := notification(out).Child(nsPushEncrypt, "encrypted")
		iv, _ := base64.StdEncoding.DecodeString(enc.Get("iv"))
		ct, _ := base64.StdEncoding.DecodeString(enc.Text())
		block, _ := aes.NewCipher(key)
		gcm, _ := cipher.NewGCM(block)
		plain, err := gcm.Open(nil, iv, ct, nil)
		if err != nil {
			t.Fatalf("key %d: %v", keyLen, err)
		}
		var got map[string]any
		if err := json.Unmarshal(plain, &got); err != nil {
			t.Fatal(err)
		}
		if got["unread"] != 3.0 || got["sender"] != "bob@localhost" || got["message"] != "meet at 5" || got["type"] != "chat" {
			t.Errorf("decrypted %s", plain)
		}
	}
}
