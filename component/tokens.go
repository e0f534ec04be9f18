package component

import (
	"encoding/json"
	"errors"

	badger "github.com/dgraph-io/badger/v4"

	"pushd/component/dispatch"
	"pushd/internal/store"
)

// The token index finds a registration from its provider token: a SIP
// phone's RFC 8599 binding names only its token, and the device key it
// seals call pushes under is the one the same app registered over XMPP
// (DESIGN: one device on every channel). Keys are hashed like the other
// indexes; an entry left behind by a token the device has since replaced
// is harmless, because a look-up checks the registration it points at.
func tokenKey(h []byte) []byte {
	return append([]byte{store.SpaceComponent, 't'}, h...)
}

func (r *Registry) tokenHash(p dispatch.ProviderName, token string) []byte {
	return r.hash("token", string(p), token)
}

func (r *Registry) indexTokens(txn *badger.Txn, d Device) error {
	for _, t := range []string{d.Token, d.VoIPToken} {
		if t == "" {
			continue
		}
		if err := txn.Set(tokenKey(r.tokenHash(d.Provider, t)), []byte(d.Node)); err != nil {
			return err
		}
	}
	return nil
}

// ByToken returns the registration whose message or VoIP token is token.
func (r *Registry) ByToken(p dispatch.ProviderName, token string) (Device, error) {
	if token == "" {
		return Device{}, ErrNotFound
	}
	var node string
	err := r.db.View(func(txn *badger.Txn) error {
		var err error
		node, err = getString(txn, tokenKey(r.tokenHash(p, token)))
		return err
	})
	if err != nil {
		return Device{}, err
	}
	d, err := r.Get(node)
	if err != nil {
		return Device{}, err
	}
	if d.Provider != p || (d.Token != token && d.VoIPToken != token) {
		return Device{}, ErrNotFound
	}
	return d, nil
}

// RegistrationByToken is the dispatcher's view of the registration
// holding token (the SIP side's Devices): its key, its message token,
// region and channel flags; ok false when there is none.
func (r *Registry) RegistrationByToken(p dispatch.ProviderName, token string) (dispatch.Registration, bool) {
	d, err := r.ByToken(p, token)
	if err != nil {
		return dispatch.Registration{}, false
	}
	return d.Registration(), true
}

// keyTokenIndex marks a registry whose token index is complete: stores
// written before the index existed get it built once at open.
var keyTokenIndex = []byte{store.SpaceComponent, 'T'}

func (r *Registry) buildTokenIndex() error {
	return r.db.Update(func(txn *badger.Txn) error {
		if _, err := txn.Get(keyTokenIndex); err == nil {
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: nodeKey(""), PrefetchValues: true})
		var devs []Device
		for it.Rewind(); it.Valid(); it.Next() {
			var d Device
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &d) }); err != nil {
				it.Close()
				return err
			}
			devs = append(devs, d)
		}
		it.Close()
		for _, d := range devs {
			if err := r.indexTokens(txn, d); err != nil {
				return err
			}
		}
		return txn.Set(keyTokenIndex, nil)
	})
}
