package router

import (
	"fmt"

	"mellium.im/xmpp/jid"

	"pushd/cluster/record"
	"pushd/internal/stanza"
	"pushd/jsm"
)

// The kinds of the records the router replicates: a device's session to
// its user's backup (H2–H4) and stanzas forwarded to the node where their
// recipient lives (H7). Values are fixed forever.
const (
	// KindSession: key the device's full JID, body a SessionState (see
	// SessionRecord). It replaces any earlier one of the device.
	KindSession record.Kind = 5
	// KindSessionGone: key the device; body empty. Its session ended for
	// good (clean logout, M8, or hibernation expired).
	KindSessionGone record.Kind = 6
	// KindStanza: key the stanza's 'to', body the stanza as on a
	// jabber:client stream, 'from' stamped by the sender's node. It is not
	// idempotent: the replication's in-order, apply-once stream is what
	// keeps it from being delivered twice.
	KindStanza record.Kind = 8
)

// SessionRecord is the KindSession record of s. Body: SMID, Handled,
// Acked, AckedSeq, Live, Handed (a count and seqs), Pushed, then the
// registrations, a count and each as a length-prefixed encoding (app
// server JID, node, options element, encryption alg and key) so that its
// fields too may grow. Fields are only appended.
func SessionRecord(s SessionState) record.Record {
	b := record.AppendString(nil, s.SMID)
	b = record.AppendUvarint(b, uint64(s.Handled))
	b = record.AppendUvarint(b, uint64(s.Acked))
	b = record.AppendUvarint(b, s.AckedSeq)
	b = record.AppendBool(b, s.Live)
	b = record.AppendUvarint(b, uint64(len(s.Handed)))
	for _, seq := range s.Handed {
		b = record.AppendUvarint(b, seq)
	}
	b = record.AppendUvarint(b, s.Pushed)
	b = record.AppendUvarint(b, uint64(len(s.Registrations)))
	var rb []byte
	for _, r := range s.Registrations {
		rb = appendRegistration(rb[:0], r)
		b = record.AppendBytes(b, rb)
	}
	return record.Record{Kind: KindSession, Key: s.Device, Body: b}
}

func appendRegistration(b []byte, r jsm.Registration) []byte {
	b = record.AppendString(b, r.AppServer.String())
	b = record.AppendString(b, r.Node)
	var opts []byte
	if r.Options != nil {
		opts = stanza.Marshal(r.Options, "")
	}
	b = record.AppendBytes(b, opts)
	var alg string
	var key []byte
	if r.Encrypt != nil {
		alg, key = r.Encrypt.Alg, r.Encrypt.Key
	}
	b = record.AppendString(b, alg)
	return record.AppendBytes(b, key)
}

// DecodeSession reads a KindSession record. A registration that does not
// read (an app server JID this build rejects) is left out rather than
// failing the session: the device keeps its stream and its queue.
func DecodeSession(r record.Record) (SessionState, error) {
	if err := record.Check(r, KindSession); err != nil {
		return SessionState{}, err
	}
	d := record.NewDecoder(r.Body)
	s := SessionState{Device: r.Key, SMID: d.String()}
	s.Handled, s.Acked = uint32(d.Uvarint()), uint32(d.Uvarint())
	s.AckedSeq = d.Uvarint()
	s.Live = d.Bool()
	if n := d.Count(1); n > 0 {
		s.Handed = make([]uint64, n)
		for i := range s.Handed {
			s.Handed[i] = d.Uvarint()
		}
	}
	s.Pushed = d.Uvarint()
	n := d.Count(1)
	for range n {
		if reg, err := decodeRegistration(d.Bytes()); err == nil {
			s.Registrations = append(s.Registrations, reg)
		}
	}
	if err := d.Err(); err != nil {
		return SessionState{}, fmt.Errorf("router: session record: %w", err)
	}
	return s, nil
}

func decodeRegistration(b []byte) (jsm.Registration, error) {
	d := record.NewDecoder(b)
	app, node, opts, alg, key := d.String(), d.String(), d.Bytes(), d.String(), d.Bytes()
	if err := d.Err(); err != nil {
		return jsm.Registration{}, err
	}
	j, err := jid.Parse(app)
	if err != nil {
		return jsm.Registration{}, err
	}
	reg := jsm.Registration{AppServer: j, Node: node}
	if opts != nil {
		if reg.Options, err = stanza.Unmarshal(opts, "", replicaMaxDepth); err != nil {
			return jsm.Registration{}, err
		}
	}
	if alg != "" {
		reg.Encrypt = &jsm.Encryption{Alg: alg, Key: key}
	}
	return reg, nil
}

// SessionGoneRecord is the KindSessionGone record of device.
func SessionGoneRecord(device string) record.Record {
	return record.Record{Kind: KindSessionGone, Key: device}
}

// DecodeSessionGone reads a KindSessionGone record.
func DecodeSessionGone(r record.Record) (device string, err error) {
	return r.Key, record.Check(r, KindSessionGone)
}

// StanzaRecord is the KindStanza record of st.
func StanzaRecord(st *stanza.Element) record.Record {
	return record.Record{Kind: KindStanza, Key: st.Get("to"), Body: stanza.Marshal(st, stanza.NSClient)}
}

// replicaMaxDepth bounds the nesting of what a peer replicates: it was
// bounded at its edge already, by a limit an operator may have raised.
const replicaMaxDepth = 1024

// DecodeStanza reads a KindStanza record.
func DecodeStanza(r record.Record) (*stanza.Element, error) {
	if err := record.Check(r, KindStanza); err != nil {
		return nil, err
	}
	el, err := stanza.Unmarshal(r.Body, stanza.NSClient, replicaMaxDepth)
	if err != nil {
		return nil, fmt.Errorf("router: stanza record: %w", err)
	}
	return el, nil
}
