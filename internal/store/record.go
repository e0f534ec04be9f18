package store

import (
	"fmt"

	"mellium.im/xmpp/jid"

	"pushd/cluster/record"
)

// KindAccount is the kind of the record that copies an account to every
// node, so that a user logs in anywhere (H7). Key: the bare JID; body: a
// deleted flag, then the credentials as Credentials returns them. The
// value is fixed forever.
const KindAccount record.Kind = 7

// AccountRecord is the KindAccount record of user's credentials, as
// Credentials returns them.
func AccountRecord(user jid.JID, credentials []byte) record.Record {
	return accountRecord(user, false, credentials)
}

// AccountDeletedRecord is the KindAccount record of user's deletion.
func AccountDeletedRecord(user jid.JID) record.Record { return accountRecord(user, true, nil) }

func accountRecord(user jid.JID, deleted bool, credentials []byte) record.Record {
	b := record.AppendBool(nil, deleted)
	return record.Record{Kind: KindAccount, Key: user.Bare().String(), Body: record.AppendBytes(b, credentials)}
}

// DecodeAccount reads a KindAccount record: the account deleted, or its
// credentials for PutCredentials.
func DecodeAccount(r record.Record) (user jid.JID, credentials []byte, deleted bool, err error) {
	if err := record.Check(r, KindAccount); err != nil {
		return jid.JID{}, nil, false, err
	}
	d := record.NewDecoder(r.Body)
	deleted, credentials = d.Bool(), d.Bytes()
	if err := d.Err(); err != nil {
		return jid.JID{}, nil, false, fmt.Errorf("store: account record: %w", err)
	}
	if user, err = jid.Parse(r.Key); err != nil {
		return jid.JID{}, nil, false, fmt.Errorf("store: account record: %w", err)
	}
	return user, credentials, deleted, nil
}
