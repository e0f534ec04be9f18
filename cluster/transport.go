package cluster

import (
	"context"
	"errors"
)

// ErrTransportClosed: the Transport was closed.
var ErrTransportClosed = errors.New("cluster: transport closed")

// Transport carries replication streams between nodes named as in the
// membership. It moves opaque frames; sequencing, acknowledgement and
// resending live above it, in the Replicator, once for every transport.
//
// What a caller may assume of an implementation:
//   - Dial and Accept are safe for concurrent use; Close unblocks Accept
//     (which then returns ErrTransportClosed) and fails later Dials.
//   - The frames of one Stream arrive whole and in the order written, or
//     the stream fails: there is no silent loss or reordering inside a
//     stream. Across streams there is no ordering.
//   - Stream.Peer on an accepted stream names the dialling node; with a
//     cluster secret (TCP transport) that name is authenticated.
//
// Two implementations ship: TCPTransport (production) and MemNetwork's
// transports (tests: deterministic, with fault injection).
type Transport interface {
	// Dial opens a stream to the named node; ctx bounds the attempt.
	Dial(ctx context.Context, node string) (Stream, error)
	// Accept waits for the next stream another node dialled.
	Accept() (Stream, error)
	// Close stops accepting and closes every open stream.
	Close() error
}

// Stream is one bidirectional, ordered stream of frames. One goroutine may
// write (WriteFrame, Flush) while another reads (ReadFrame); Close may be
// called from any goroutine and makes both fail.
type Stream interface {
	// WriteFrame queues one frame; it may be buffered until Flush. The
	// stream does not keep p after the call returns.
	WriteFrame(p []byte) error
	// Flush sends the buffered frames.
	Flush() error
	// ReadFrame returns the next frame; it is valid until the next call.
	ReadFrame() ([]byte, error)
	// Peer is the node at the other end.
	Peer() string
	Close() error
}
