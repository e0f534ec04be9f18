package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
	"pushd/jsm"
)

// PushRegistrations holds what each device left with XEP-0357 <enable/>,
// so that pushes continue after a restart (BEHAVIOUR M8: only a clean
// logout or <disable/> removes one). Safe for concurrent use.
type PushRegistrations struct{ db *DB }

// pushRecord is a jsm.Registration as stored; the device, app server and
// node are in the key. The publish-options form is kept as XML.
type pushRecord struct {
	Options string `json:"o,omitempty"`
	Alg     string `json:"alg,omitempty"`
	Key     []byte `json:"k,omitempty"`
}

func pushKey(device, appServer, node string) []byte {
	k := Prefix(SpacePush, device)
	k = append(k, appServer...)
	k = append(k, Sep)
	return append(k, node...)
}

// Save stores reg for device, replacing the one for the same app server
// and node.
func (p *PushRegistrations) Save(device string, reg jsm.Registration) error {
	var rec pushRecord
	if reg.Options != nil {
		rec.Options = string(stanza.Marshal(reg.Options, ""))
	}
	if reg.Encrypt != nil {
		rec.Alg, rec.Key = reg.Encrypt.Alg, reg.Encrypt.Key
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("store: encode push registration: %w", err)
	}
	key := pushKey(device, reg.AppServer.String(), reg.Node)
	if err := p.db.update(func(txn *badger.Txn) error { return txn.Set(key, v) }); err != nil {
		return fmt.Errorf("store: save push registration: %w", err)
	}
	return nil
}

// Delete removes device's registration with appServer and node.
func (p *PushRegistrations) Delete(device string, appServer jid.JID, node string) error {
	key := pushKey(device, appServer.String(), node)
	if err := p.db.update(func(txn *badger.Txn) error { return txn.Delete(key) }); err != nil {
		return fmt.Errorf("store: delete push registration: %w", err)
	}
	return nil
}

// Load returns every registration by device, for jsm.State.
func (p *PushRegistrations) Load() (map[string][]jsm.Registration, error) {
	out := make(map[string][]jsm.Registration)
	err := p.db.bdb.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = []byte{SpacePush}
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			parts := bytes.SplitN(it.Item().Key()[1:], []byte{Sep}, 3)
			if len(parts) != 3 {
				return fmt.Errorf("corrupt push registration key")
			}
			app, err := jid.Parse(string(parts[1]))
			if err != nil {
				return fmt.Errorf("corrupt push registration key: %w", err)
			}
			var rec pushRecord
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &rec) }); err != nil {
				return fmt.Errorf("corrupt push registration: %w", err)
			}
			reg := jsm.Registration{AppServer: app, Node: string(parts[2])}
			if rec.Options != "" {
				if reg.Options, err = parseElement(rec.Options); err != nil {
					return fmt.Errorf("corrupt push registration options: %w", err)
				}
			}
			if rec.Alg != "" {
				reg.Encrypt = &jsm.Encryption{Alg: rec.Alg, Key: rec.Key}
			}
			dev := string(parts[0])
			out[dev] = append(out[dev], reg)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: load push registrations: %w", err)
	}
	return out, nil
}

// parseElement reads one element written by stanza.Marshal.
func parseElement(s string) (*stanza.Element, error) {
	r := stanza.NewReader(strings.NewReader("<r xmlns='jabber:client'>"+s), stanza.DefaultLimits())
	if _, err := r.Header(); err != nil {
		return nil, err
	}
	return r.Next()
}
