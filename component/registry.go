package component

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/store"
)

// Registry keys, all in store.SpaceComponent ('c'):
//
//	c 'k'                          the HMAC key that hashes accounts and device ids (32 bytes)
//	c 'n' <node>                   a device registration (JSON Device)
//	c 'd' <hash(account, device)>  → node: one registration per (account, device id)
//	c 'a' <hash(account)> <node>   → "": the registrations of an account
//
// Hashes are HMAC-SHA-256 under the key kept at c 'k' (one per database),
// fixed 32 bytes, so no separator is needed. No account JID, domain or
// device id is stored in clear; a registration can still be found from
// the account (operator commands, re-registration) because the same key
// hashes the lookup.
var (
	keyHMAC = []byte{store.SpaceComponent, 'k'}
)

func nodeKey(node string) []byte {
	return append([]byte{store.SpaceComponent, 'n'}, node...)
}

func deviceKey(h []byte) []byte {
	return append([]byte{store.SpaceComponent, 'd'}, h...)
}

func accountPrefix(h []byte) []byte {
	return append([]byte{store.SpaceComponent, 'a'}, h...)
}

func accountKey(h []byte, node string) []byte {
	return append(accountPrefix(h), node...)
}

// Errors of the registry.
var (
	ErrNotFound = errors.New("component: no such registration")
)

// Device is one push registration as stored. Node and Secret are what the
// router publishes with; Account, Domain and DeviceID are keyed hashes.
type Device struct {
	Node     string `json:"node"`
	Secret   string `json:"secret"`
	Account  []byte `json:"account"` // HMAC of the bare account JID
	Domain   []byte `json:"domain"`  // HMAC of the account's domain
	DeviceID []byte `json:"device"`  // HMAC of account + device id

	Provider            dispatch.ProviderName `json:"provider"`
	Token               string                `json:"token"`
	VoIPToken           string                `json:"voip_token,omitempty"`
	Key                 []byte                `json:"key,omitempty"` // AES-256 device key
	Channels            []payload.Channel     `json:"channels,omitempty"`
	Region              string                `json:"region,omitempty"`
	LegacySingleChannel bool                  `json:"legacy_single_channel,omitempty"`
	Kind                string                `json:"kind,omitempty"`
	// Command is the command family that registered it: "p2" or "tigase".
	Command string    `json:"command,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Registration is the dispatcher's view of d; ID is the node.
func (d Device) Registration() dispatch.Registration {
	r := dispatch.Registration{
		ID: d.Node, Provider: d.Provider, Token: d.Token, VoIPToken: d.VoIPToken,
		Region: d.Region, LegacySingleChannel: d.LegacySingleChannel,
	}
	if len(d.Key) == payload.KeySize {
		var k [payload.KeySize]byte
		copy(k[:], d.Key)
		r.Key = &k
	}
	return r
}

// Wants reports whether d asked for pushes on channel ch (default: the
// message channel always, VoIP when it has a VoIP token).
func (d Device) Wants(ch payload.Channel) bool {
	if len(d.Channels) == 0 {
		return ch == payload.ChannelMessage || d.VoIPToken != ""
	}
	return slices.Contains(d.Channels, ch)
}

// Registration request: what a register command carries.
type RegisterRequest struct {
	Account  string // bare JID
	DeviceID string
	Provider dispatch.ProviderName
	Token    string
	// VoIPToken, Key: nil keeps what an earlier registration of the same
	// device set; a value replaces it.
	VoIPToken           *string
	Key                 *[payload.KeySize]byte
	Channels            []payload.Channel
	Region              string
	LegacySingleChannel bool
	Kind                string
	Command             string
}

// Registry is the device registry on badger. Safe for concurrent use.
type Registry struct {
	db  *badger.DB
	key []byte
	now func() time.Time
	mu  sync.Mutex // serialises register/unregister of one registry
	// onChange hears of every registration created, changed or removed,
	// so that a cluster can copy it to the other nodes.
	onChange func(node string, rec []byte) (wait func() error)

	// Every publish looks its device up and hashes its sender: both are
	// cached in memory. A write puts the record it committed into the
	// device cache (a device registers, then gets its publishes), so a
	// publish reads badger only for a device not used or written lately.
	// gen counts writes: a lookup that read badger while a write
	// happened does not cache what it read, which may be older.
	cacheMu sync.RWMutex
	devices map[string]Device
	gen     uint64
	hashes  map[string][]byte
}

// cacheLimit bounds each cache. Past it the hash cache starts afresh and
// the device cache drops one arbitrary entry per new one.
const cacheLimit = 1 << 16

// SetRegistryKey makes key the registry's hash key in db, before
// OpenRegistry. Nodes of a cluster share one (derived from the cluster's
// secret) so that the hashed account and device ids they store agree.
// Registrations hashed under another key are no longer found.
func SetRegistryKey(db *badger.DB, key []byte) error {
	k := sha256.Sum256(append([]byte("pushd registry key\x00"), key...))
	return db.Update(func(txn *badger.Txn) error { return txn.Set(keyHMAC, k[:]) })
}

// OnChange registers fn to hear of every registration created, changed
// or removed: its node and its record as stored (nil: removed), which
// Import takes on another node. The wait fn returns is what Register
// waits for before it returns (a cluster's copy to the other members,
// H2); nil means nothing to wait for. fn must not call back into the
// registry's writes.
func (r *Registry) OnChange(fn func(node string, rec []byte) (wait func() error)) {
	r.mu.Lock()
	r.onChange = fn
	r.mu.Unlock()
}

// changed follows a committed write of node: the cache takes the record
// as written (nil: the registration is gone) and onChange hears of it,
// in commit order as callers hold r.mu. It returns onChange's wait.
func (r *Registry) changed(node string, d *Device) (wait func() error) {
	if d != nil {
		r.remember(*d)
	} else {
		r.forget(node)
	}
	if r.onChange == nil {
		return nil
	}
	var rec []byte
	if d != nil {
		var err error
		if rec, err = json.Marshal(d); err != nil {
			return func() error { return err }
		}
	}
	return r.onChange(node, rec)
}

// Export returns node's stored registration record, for another node of
// the cluster (ErrNotFound when there is none).
func (r *Registry) Export(node string) ([]byte, error) {
	var v []byte
	err := r.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(nodeKey(node))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, err
}

// Import stores a record another node exported, with its indexes, or
// removes node's registration when data is nil. Replaying it is harmless.
func (r *Registry) Import(node string, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var d Device
	if data != nil {
		if err := json.Unmarshal(data, &d); err != nil || d.Node != node {
			return fmt.Errorf("component: registry: bad replicated record")
		}
	}
	err := r.db.Update(func(txn *badger.Txn) error {
		if data == nil {
			d, err := getDevice(txn, node)
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			return deleteDevice(txn, d)
		}
		if err := txn.Set(nodeKey(node), data); err != nil {
			return err
		}
		if err := txn.Set(deviceKey(d.DeviceID), []byte(node)); err != nil {
			return err
		}
		if err := r.indexTokens(txn, d); err != nil {
			return err
		}
		return txn.Set(accountKey(d.Account, node), nil)
	})
	if err != nil || data == nil {
		r.forget(node)
		return err
	}
	r.remember(d)
	return nil
}

// OpenRegistry opens the registry in db, creating its hash key on first use.
func OpenRegistry(db *badger.DB, now func() time.Time) (*Registry, error) {
	if now == nil {
		now = time.Now
	}
	r := &Registry{db: db, now: now}
	err := db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keyHMAC)
		if errors.Is(err, badger.ErrKeyNotFound) {
			k := make([]byte, 32)
			_, _ = rand.Read(k)
			r.key = k
			return txn.Set(keyHMAC, k)
		}
		if err != nil {
			return err
		}
		r.key, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("component: registry: %w", err)
	}
	if len(r.key) != 32 {
		return nil, fmt.Errorf("component: registry: hash key has %d bytes", len(r.key))
	}
	if err := r.buildTokenIndex(); err != nil {
		return nil, fmt.Errorf("component: registry: token index: %w", err)
	}
	return r, nil
}

func (r *Registry) hash(parts ...string) []byte {
	key := strings.ToLower(strings.Join(parts, "\x00"))
	r.cacheMu.RLock()
	h, ok := r.hashes[key]
	r.cacheMu.RUnlock()
	if ok {
		return h
	}
	m := hmac.New(sha256.New, r.key)
	for _, p := range parts {
		m.Write([]byte(strings.ToLower(p)))
		m.Write([]byte{0})
	}
	h = m.Sum(nil)
	r.cacheMu.Lock()
	if r.hashes == nil || len(r.hashes) >= cacheLimit {
		r.hashes = make(map[string][]byte)
	}
	r.hashes[key] = h
	r.cacheMu.Unlock()
	return h
}

// forget drops node from the device cache after a write.
func (r *Registry) forget(node string) {
	r.cacheMu.Lock()
	r.gen++
	delete(r.devices, node)
	r.cacheMu.Unlock()
}

// remember puts d, as just committed, into the device cache.
func (r *Registry) remember(d Device) {
	r.cacheMu.Lock()
	r.gen++
	r.cacheLocked(d)
	r.cacheMu.Unlock()
}

// cacheLocked adds d, making room if the cache is full. Called with
// cacheMu held.
func (r *Registry) cacheLocked(d Device) {
	if r.devices == nil {
		r.devices = make(map[string]Device)
	}
	if _, ok := r.devices[d.Node]; !ok && len(r.devices) >= cacheLimit {
		for k := range r.devices { // map order: an arbitrary victim
			delete(r.devices, k)
			break
		}
	}
	r.devices[d.Node] = d
}

func (r *Registry) accountHash(bare string) []byte { return r.hash("account", bare) }
func (r *Registry) domainHash(domain string) []byte {
	return r.hash("domain", domain)
}
func (r *Registry) deviceHash(bare, id string) []byte { return r.hash("device", bare, id) }

func domainOf(bare string) string {
	if i := strings.LastIndexByte(bare, '@'); i >= 0 {
		return bare[i+1:]
	}
	return bare
}

// randomNode is a new node name: 128 random bits in hex (safe on command
// lines and in every XMPP implementation's node handling).
func randomNode() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Register stores req. Registering the same (account, device id) again
// replaces the tokens, key and options and keeps node and secret, so the
// router's XEP-0357 enable stays valid (clients re-register at every
// start). Unregister and register again to get a new node and secret.
// In a cluster it returns once the other members hold the registration
// too (OnChange), so that the node and secret a device enables push with
// outlive this node (H2); an error wrapping ErrNotReplicated says they
// may not.
func (r *Registry) Register(req RegisterRequest) (Device, bool, error) {
	d, created, wait, err := r.register(req)
	if err == nil && wait != nil {
		if werr := wait(); werr != nil {
			err = fmt.Errorf("%w: %w", ErrNotReplicated, werr)
		}
	}
	return d, created, err
}

// ErrNotReplicated: a registration is stored here but the other members
// of the cluster may not hold it.
var ErrNotReplicated = errors.New("component: registration not replicated")

func (r *Registry) register(req RegisterRequest) (Device, bool, func() error, error) {
	if req.Account == "" || req.DeviceID == "" || req.Token == "" {
		return Device{}, false, nil, errors.New("component: registration needs account, device id and token")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	acct := r.accountHash(req.Account)
	devh := r.deviceHash(req.Account, req.DeviceID)
	var d Device
	created := false
	err := r.db.Update(func(txn *badger.Txn) error {
		node, err := getString(txn, deviceKey(devh))
		switch {
		case err == nil:
			d, err = getDevice(txn, node)
			if errors.Is(err, ErrNotFound) {
				d = Device{Node: node, Secret: randomString(18), Created: now}
			} else if err != nil {
				return err
			}
		case errors.Is(err, ErrNotFound):
			created = true
			d = Device{Node: randomNode(), Secret: randomString(18), Created: now}
		default:
			return err
		}
		d.Account, d.Domain, d.DeviceID = acct, r.domainHash(domainOf(req.Account)), devh
		d.Provider, d.Token = req.Provider, req.Token
		if req.VoIPToken != nil {
			d.VoIPToken = *req.VoIPToken
		}
		if req.Key != nil {
			d.Key = append([]byte(nil), req.Key[:]...)
		}
		d.Channels, d.Region, d.LegacySingleChannel, d.Kind = req.Channels, req.Region, req.LegacySingleChannel, req.Kind
		d.Command, d.Updated = req.Command, now
		val, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if err := txn.Set(nodeKey(d.Node), val); err != nil {
			return err
		}
		if err := txn.Set(deviceKey(devh), []byte(d.Node)); err != nil {
			return err
		}
		if err := r.indexTokens(txn, d); err != nil {
			return err
		}
		return txn.Set(accountKey(acct, d.Node), nil)
	})
	if err != nil {
		return Device{}, false, nil, fmt.Errorf("component: register: %w", err)
	}
	return d, created, r.changed(d.Node, &d), nil
}

// Unregister removes the account's registrations matching deviceID (when
// given) or token (when given; either the message or the VoIP token), of
// provider (when given). It returns how many went.
func (r *Registry) Unregister(account, deviceID, token string, provider dispatch.ProviderName) (int, error) {
	devs, err := r.ByAccount(account)
	if err != nil {
		return 0, err
	}
	var devh []byte
	if deviceID != "" {
		devh = r.deviceHash(account, deviceID)
	}
	n := 0
	for _, d := range devs {
		switch {
		case provider != "" && d.Provider != provider:
			continue
		case devh != nil && !bytes.Equal(d.DeviceID, devh):
			continue
		case devh == nil && token != "" && d.Token != token && d.VoIPToken != token:
			continue
		case devh == nil && token == "":
			continue
		}
		if err := r.Remove(d.Node); err != nil && !errors.Is(err, ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}

// Get returns the registration of node.
func (r *Registry) Get(node string) (Device, error) {
	r.cacheMu.RLock()
	d, ok := r.devices[node]
	gen := r.gen
	r.cacheMu.RUnlock()
	if ok {
		return d, nil
	}
	err := r.db.View(func(txn *badger.Txn) error {
		var err error
		d, err = getDevice(txn, node)
		return err
	})
	if err == nil {
		r.cacheMu.Lock()
		if r.gen == gen {
			r.cacheLocked(d)
		}
		r.cacheMu.Unlock()
	}
	return d, err
}

// Check returns node's registration if secret is its secret (constant
// time) and from (the publisher: a bare domain or bare JID) is the
// registering account or its domain. Every failure is ErrNotFound, so the
// publisher learns nothing about which part was wrong.
func (r *Registry) Check(node, secret, from string) (Device, error) {
	d, err := r.Get(node)
	if err != nil {
		// Compare anyway so a missing node takes as long as a wrong secret.
		subtle.ConstantTimeCompare([]byte(secret), []byte(secret))
		return Device{}, err
	}
	okSecret := subtle.ConstantTimeCompare([]byte(secret), []byte(d.Secret)) == 1
	bare := from
	if i := strings.IndexByte(bare, '/'); i >= 0 {
		bare = bare[:i]
	}
	var okFrom bool
	if strings.Contains(bare, "@") {
		okFrom = hmac.Equal(r.accountHash(bare), d.Account)
	} else {
		okFrom = hmac.Equal(r.domainHash(bare), d.Domain)
	}
	if !okSecret || !okFrom {
		return Device{}, ErrNotFound
	}
	return d, nil
}

// Remove deletes node's registration and its indexes.
func (r *Registry) Remove(node string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.db.Update(func(txn *badger.Txn) error {
		d, err := getDevice(txn, node)
		if err != nil {
			return err
		}
		return deleteDevice(txn, d)
	})
	if err == nil {
		r.changed(node, nil)
	}
	return err
}

func deleteDevice(txn *badger.Txn, d Device) error {
	if err := txn.Delete(nodeKey(d.Node)); err != nil {
		return err
	}
	// The device index may point at a newer node already; only drop it if
	// it is ours.
	if n, err := getString(txn, deviceKey(d.DeviceID)); err == nil && n == d.Node {
		if err := txn.Delete(deviceKey(d.DeviceID)); err != nil {
			return err
		}
	}
	return txn.Delete(accountKey(d.Account, d.Node))
}

// ByAccount returns the registrations of a bare account JID.
func (r *Registry) ByAccount(account string) ([]Device, error) {
	prefix := accountPrefix(r.accountHash(account))
	var out []Device
	err := r.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			node := string(it.Item().Key()[len(prefix):])
			d, err := getDevice(txn, node)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// List returns every registration, by node.
func (r *Registry) List() ([]Device, error) {
	prefix := []byte{store.SpaceComponent, 'n'}
	var out []Device
	err := r.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var d Device
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &d) }); err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// DeadToken implements dispatch.DeadTokenHook (P3). A dead message token
// removes the registration, so the router gets item-not-found on its next
// publish. A dead VoIP token removes only the VoIP token: messages keep
// coming on the message channel, and calls fall back to it (as for a
// device that never registered one) until the app registers a new VoIP
// token. A token renewed since the push was accepted is not known dead,
// so a verdict on the old one changes nothing. Either change reaches the
// other nodes of a cluster through OnChange, like any registration write.
// A verdict on another owner's registration (a SIP binding of the same
// phone, which may carry the same id and tokens) is that owner's to act
// on: the dispatcher routes it there, and the registry ignores it.
func (r *Registry) DeadToken(_ context.Context, dead dispatch.DeadToken) error {
	if dead.Registration.Owner != dispatch.OwnerComponent {
		return nil
	}
	node := dead.Registration.ID
	r.mu.Lock()
	defer r.mu.Unlock()
	var (
		changed bool
		kept    *Device // nil: removed
	)
	err := r.db.Update(func(txn *badger.Txn) error {
		d, err := getDevice(txn, node)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case dead.Token == "":
			return nil
		case dead.Channel == payload.ChannelVoIP:
			// Only the VoIP token is judged on the VoIP topic: the
			// message token may have been sent there for want of one,
			// and DeviceTokenNotForTopic says nothing about its own topic.
			if d.VoIPToken != dead.Token {
				return nil
			}
			d.VoIPToken, d.Updated = "", r.now()
			val, err := json.Marshal(d)
			if err != nil {
				return err
			}
			changed, kept = true, &d
			return txn.Set(nodeKey(node), val)
		case d.Token == dead.Token:
			changed = true
			return deleteDevice(txn, d)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("component: dead token: %w", err)
	}
	if changed {
		r.changed(node, kept)
	}
	return nil
}

func getString(txn *badger.Txn, key []byte) (string, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", err
	}
	v, err := item.ValueCopy(nil)
	return string(v), err
}

func getDevice(txn *badger.Txn, node string) (Device, error) {
	var d Device
	if node == "" || len(node) > 64 {
		return d, ErrNotFound
	}
	item, err := txn.Get(nodeKey(node))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, err
	}
	err = item.Value(func(v []byte) error { return json.Unmarshal(v, &d) })
	return d, err
}

// AccountTag is a short, stable, non-reversible label of an account hash
// for operator listings.
func AccountTag(h []byte) string {
	if len(h) < 6 {
		return ""
	}
	return hex.EncodeToString(h[:6])
}
