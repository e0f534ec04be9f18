package peertest

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Push interop with Prosody 0.12 + mod_cloud_notify (prosody-modules).
//
// What Debian 12 has: prosody 0.12.3 and prosody-modules
// 0.0~hg20230223, which ships mod_cloud_notify but NOT
// mod_cloud_notify_encrypted (and Prosody is built without util.crypto;
// lua-luaossl is only an apt candidate). Encrypted pushes
// (tigase:push:encrypt:0) therefore cannot be checked against Prosody
// here; appserver.py parses them (and decrypts with --decrypt-key) for
// servers that send them.

// ProsodyPushOptions is a ProsodyOptions for XEP-0357 scenarios: the
// cloud_notify module, the app server as a component, bodies and senders
// in the summary, push_max_errors = 1 (one non-wait error disables the
// registration; Prosody's default is 16), and a 1 h smacks hibernation.
// Change the returned value as needed.
func ProsodyPushOptions(appServer ProsodyComponent, users map[string]string) ProsodyOptions {
	return ProsodyOptions{
		ExtraModules: []string{"cloud_notify"},
		Components:   []ProsodyComponent{appServer},
		Users:        users,
		Options: map[string]any{
			"push_notification_with_body":   true,
			"push_notification_with_sender": true,
			"push_max_errors":               1,
		},
		HibernationTime: time.Hour,
	}
}

// StoreData returns the raw content of a user's data in one of Prosody's
// internal stores (e.g. "cloud_notify" holds push registrations), or ""
// when there is none.
func (s *ProsodyServer) StoreData(user, store string) string {
	b, err := os.ReadFile(filepath.Join(s.DataDir, prosodyEncode(s.Domain), prosodyStoreEncode(store), prosodyEncode(user)+".dat"))
	if err != nil {
		return ""
	}
	return string(b)
}

// prosodyStoreEncode is util.datamanager's store_encode: like
// prosodyEncode but "_" stays.
func prosodyStoreEncode(s string) string {
	var b strings.Builder
	for _, part := range strings.Split(s, "_") {
		if b.Len() > 0 {
			b.WriteByte('_')
		}
		b.WriteString(prosodyEncode(part))
	}
	return b.String()
}
