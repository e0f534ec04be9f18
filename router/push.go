package router

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"pushd/internal/stanza"
	"pushd/jsm"
)

const (
	nsPubsub       = "http://jabber.org/protocol/pubsub"
	nsPushEncrypt  = "tigase:push:encrypt:0"
	nsDataForm     = "jabber:x:data"
	gcmNonceLength = 12
)

// publish sends an XEP-0357 notification to the app server's component.
// With an encrypted registration the summary form, which jsm filled with
// sender and body, is replaced by its tigase:push:encrypt:0 ciphertext
// here, so those never leave pushd in clear (BEHAVIOUR S2). s.mu is held.
func (s *Server) publish(a jsm.Publish) {
	link := s.components[a.Domain]
	if link == nil {
		// jsm times the publish out and retries it as a wait.
		s.log.Debug("no component for push publish", "domain", a.Domain)
		return
	}
	st := a.Stanza
	if a.Encrypt != nil {
		var err error
		if st, err = encryptNotification(a.Stanza, a.Summary, a.Encrypt); err != nil {
			s.log.Error("push notification not encrypted: not sent", "err", err)
			return
		}
	}
	s.cfg.Metrics.publishes.Inc()
	link.send(st)
}

// encryptNotification returns a copy of the publish IQ whose notification
// carries <encrypted iv=…>ciphertext</encrypted> in place of the summary
// form, as mod_cloud_notify_encrypted and Tigase do: AES-GCM, a 12-byte
// IV, the tag appended to the ciphertext, over a JSON summary.
func encryptNotification(iq *stanza.Element, sum jsm.Summary, enc *jsm.Encryption) (*stanza.Element, error) {
	plain, err := json.Marshal(struct {
		Unread   int    `json:"unread"`
		Sender   string `json:"sender,omitempty"`
		Message  string `json:"message,omitempty"`
		Type     string `json:"type,omitempty"`
		Nickname string `json:"nickname,omitempty"`
	}{sum.Count + sum.PendingSubscriptions, sum.Sender, sum.Body, sum.Type, sum.Nick})
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(enc.Key)
	if err != nil {
		return nil, fmt.Errorf("push key: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, gcmNonceLength)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	sealed := gcm.Seal(nil, iv, plain, nil)

	out := iq.Copy()
	note := notification(out)
	if note == nil {
		return nil, fmt.Errorf("publish without a notification")
	}
	kept := note.Children[:0]
	for _, c := range note.Children {
		if e, ok := c.(*stanza.Element); ok && e.Is(nsDataForm, "x") {
			continue
		}
		kept = append(kept, c)
	}
	note.Children = kept
	note.Add(stanza.New(nsPushEncrypt, "encrypted", "iv", base64.StdEncoding.EncodeToString(iv)).
		AddText(base64.StdEncoding.EncodeToString(sealed)))
	return out, nil
}

// notification finds pubsub/publish/item/notification in a publish IQ.
func notification(iq *stanza.Element) *stanza.Element {
	e := iq.Child(nsPubsub, "pubsub")
	for _, name := range []string{"publish", "item"} {
		if e == nil {
			return nil
		}
		e = e.Child(nsPubsub, name)
	}
	if e == nil {
		return nil
	}
	return e.Child(stanza.NSPush, "notification")
}
