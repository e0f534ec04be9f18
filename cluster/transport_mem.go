package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// MemNetwork is an in-memory network of Transports for tests: no sockets,
// no timers, and faults on demand (Cut drops every stream between two
// nodes, Isolate makes a node unreachable). Safe for concurrent use.
type MemNetwork struct {
	mu       sync.Mutex
	nodes    map[string]*MemTransport
	isolated map[string]bool
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: make(map[string]*MemTransport), isolated: make(map[string]bool)}
}

// Transport returns the transport of node name, creating it. A node that
// closed its transport gets a new one (a restart).
func (n *MemNetwork) Transport(name string) *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t := n.nodes[name]; t != nil && !t.isClosed() {
		return t
	}
	t := &MemTransport{net: n, name: name, accept: make(chan Stream, 64), done: make(chan struct{}), conns: make(map[*memConn]struct{})}
	n.nodes[name] = t
	return t
}

// Cut closes every open stream between nodes a and b, dropping the frames
// in flight, as a network failure would. New dials succeed.
func (n *MemNetwork) Cut(a, b string) {
	n.mu.Lock()
	ta, tb := n.nodes[a], n.nodes[b]
	n.mu.Unlock()
	for _, t := range []*MemTransport{ta, tb} {
		if t == nil {
			continue
		}
		for _, c := range t.streams() {
			if (c.local == a && c.peer == b) || (c.local == b && c.peer == a) {
				c.Close()
			}
		}
	}
}

// Isolate makes node unreachable (its streams are cut, dials to and from
// it fail) or reachable again.
func (n *MemNetwork) Isolate(node string, isolated bool) {
	n.mu.Lock()
	n.isolated[node] = isolated
	t := n.nodes[node]
	n.mu.Unlock()
	if isolated && t != nil {
		for _, c := range t.streams() {
			c.Close()
		}
	}
}

// MemTransport is one node's Transport on a MemNetwork.
type MemTransport struct {
	net    *MemNetwork
	name   string
	accept chan Stream
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	conns map[*memConn]struct{}
}

var errUnreachable = errors.New("cluster: mem: node unreachable")

// Dial implements Transport.
func (t *MemTransport) Dial(ctx context.Context, node string) (Stream, error) {
	if t.isClosed() {
		return nil, ErrTransportClosed
	}
	t.net.mu.Lock()
	peer := t.net.nodes[node]
	cut := t.net.isolated[node] || t.net.isolated[t.name]
	t.net.mu.Unlock()
	if cut || peer == nil || peer.isClosed() {
		return nil, fmt.Errorf("dial %s: %w", node, errUnreachable)
	}
	done := make(chan struct{})
	ab := make(chan []byte, 256)
	ba := make(chan []byte, 256)
	once := new(sync.Once)
	local := &memConn{owner: t, local: t.name, peer: node, in: ba, out: ab, done: done, once: once}
	remote := &memConn{owner: peer, local: node, peer: t.name, in: ab, out: ba, done: done, once: once}
	local.other, remote.other = remote, local
	t.track(local)
	peer.track(remote)
	select {
	case peer.accept <- remote:
		return local, nil
	case <-peer.done:
	case <-ctx.Done():
	}
	local.Close()
	return nil, fmt.Errorf("dial %s: %w", node, errUnreachable)
}

// Accept implements Transport.
func (t *MemTransport) Accept() (Stream, error) {
	select {
	case s := <-t.accept:
		return s, nil
	case <-t.done:
		return nil, ErrTransportClosed
	}
}

// Close implements Transport. Closing a node's transport is how a test
// crashes it: its streams fail at once.
func (t *MemTransport) Close() error {
	t.once.Do(func() { close(t.done) })
	for _, c := range t.streams() {
		c.Close()
	}
	return nil
}

func (t *MemTransport) isClosed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *MemTransport) track(c *memConn) {
	t.mu.Lock()
	t.conns[c] = struct{}{}
	t.mu.Unlock()
}

func (t *MemTransport) untrack(c *memConn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *MemTransport) streams() []*memConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*memConn, 0, len(t.conns))
	for c := range t.conns {
		out = append(out, c)
	}
	return out
}

// memConn is one end of an in-memory stream. Closing either end closes
// both and drops the frames in flight.
type memConn struct {
	owner       *MemTransport
	local, peer string
	in, out     chan []byte
	done        chan struct{}
	once        *sync.Once
	other       *memConn
}

func (c *memConn) WriteFrame(p []byte) error {
	select {
	case <-c.done:
		return io.ErrClosedPipe
	default:
	}
	select {
	case c.out <- append([]byte(nil), p...):
		return nil
	case <-c.done:
		return io.ErrClosedPipe
	}
}

func (c *memConn) Flush() error { return nil }

func (c *memConn) ReadFrame() ([]byte, error) {
	select {
	case <-c.done:
		return nil, io.EOF
	default:
	}
	select {
	case p := <-c.in:
		return p, nil
	case <-c.done:
		return nil, io.EOF
	}
}

func (c *memConn) Peer() string { return c.peer }

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.done) })
	c.owner.untrack(c)
	c.other.owner.untrack(c.other)
	return nil
}
