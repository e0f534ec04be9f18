package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"pushd/internal/stanza"
	"pushd/internal/store"
)

// Stored values are one format byte and the stanza as it goes on a
// jabber:client stream. XML rather than a binary tree form: it is what the
// router writes on a flush anyway, it is compact (no per-node overhead) and
// it leaves a queue readable with any badger tool.
const formatXML byte = 1

// metaPresence, in badger's per-entry UserMeta byte, marks a queued
// presence stanza, so that eviction (M9) and the index rebuild can tell one
// without reading values.
const metaPresence byte = 1

func encode(e *stanza.Element) []byte {
	b := make([]byte, 1, 256)
	b[0] = formatXML
	return stanza.Append(b, e, stanza.NSClient)
}

// Stanzas were bounded when they came in; these limits only keep a
// corrupt value from making decode misbehave.
const decodeMaxDepth = 1024

var (
	decodeOpen  = `<q xmlns="` + stanza.NSClient + `">`
	decodeClose = `</q>`
)

// decode parses a stored value back into an element. The stanza was
// written without a namespace declaration (it inherits jabber:client), so
// it is read inside a wrapper that declares it.
func decode(v []byte) (*stanza.Element, error) {
	if len(v) < 1 || v[0] != formatXML {
		return nil, errors.New("unknown value format")
	}
	body := v[1:]
	src := io.MultiReader(strings.NewReader(decodeOpen), bytes.NewReader(body), strings.NewReader(decodeClose))
	r := stanza.NewReader(src, stanza.Limits{MaxBytes: int64(len(body)) + 1024, MaxDepth: decodeMaxDepth})
	if _, err := r.Header(); err != nil {
		return nil, fmt.Errorf("decode stored stanza: %w", err)
	}
	e, err := r.Next()
	if err != nil {
		return nil, fmt.Errorf("decode stored stanza: %w", err)
	}
	return e, nil
}

// seqKey returns prefix followed by seq in big-endian, so that keys sort in
// sequence order.
func seqKey(prefix []byte, seq uint64) []byte {
	k := make([]byte, len(prefix)+8)
	copy(k, prefix)
	binary.BigEndian.PutUint64(k[len(prefix):], seq)
	return k
}

// splitKey reads a key of the queue or offline space: space byte, the
// device or user, Sep, Seq.
func splitKey(k []byte) (part string, seq uint64, ok bool) {
	if len(k) < 1+1+8 || k[len(k)-9] != store.Sep {
		return "", 0, false
	}
	return string(k[1 : len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), true
}

func keySeq(k []byte, prefixLen int) (uint64, bool) {
	if len(k) != prefixLen+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[prefixLen:]), true
}
