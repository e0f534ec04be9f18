package router

import (
	"net"
	"sync"
	"time"
)

// wire is the outbound side of one network connection. Whoever produces
// output appends to buf under mu; one writer goroutine drains it, so a
// slow peer never blocks the session manager, and many small stanzas
// leave in one write.
type wire struct {
	conn    net.Conn
	timeout time.Duration

	mu      sync.Mutex
	buf     []byte
	closing bool // write what is buffered, then close
	dead    bool // a write failed or the wire was closed; drop output
	wake    chan struct{}
	done    chan struct{}
}

// maxPending is how much unwritten output one connection may hold before
// its peer is taken to be gone; XEP-0198 keeps unacknowledged stanzas
// elsewhere, so nothing is lost by cutting a stuck connection.
const maxPending = 8 << 20

func newWire(conn net.Conn, timeout time.Duration) *wire {
	w := &wire{conn: conn, timeout: timeout, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w
}

// write lets fn append output to the pending buffer.
func (w *wire) write(fn func([]byte) []byte) {
	w.mu.Lock()
	if w.dead || w.closing {
		w.mu.Unlock()
		return
	}
	w.buf = fn(w.buf)
	if len(w.buf) > maxPending {
		w.dead = true
		w.buf = nil
		w.mu.Unlock()
		_ = w.conn.Close()
		return
	}
	w.mu.Unlock()
	w.signal()
}

// close writes last (a stream error or end tag) after what is pending and
// then closes the connection.
func (w *wire) close(last []byte) {
	w.mu.Lock()
	if !w.dead && !w.closing {
		w.buf = append(w.buf, last...)
		w.closing = true
	}
	w.mu.Unlock()
	w.signal()
}

// abandon drops pending output and closes the connection at once: the
// stream has moved to another connection (resumption) and this one must
// not write anything more.
func (w *wire) abandon() {
	w.mu.Lock()
	w.dead = true
	w.buf = nil
	w.mu.Unlock()
	_ = w.conn.Close()
	w.signal()
}

func (w *wire) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *wire) run() {
	defer close(w.done)
	var out []byte
	for range w.wake {
		w.mu.Lock()
		out, w.buf = w.buf, out[:0]
		closing, dead := w.closing, w.dead
		w.mu.Unlock()
		if dead {
			return
		}
		if len(out) > 0 {
			_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
			if _, err := w.conn.Write(out); err != nil {
				w.mu.Lock()
				w.dead = true
				w.buf = nil
				w.mu.Unlock()
				_ = w.conn.Close()
				return
			}
		}
		if closing {
			w.mu.Lock()
			rest := len(w.buf)
			w.mu.Unlock()
			if rest == 0 {
				w.mu.Lock()
				w.dead = true
				w.mu.Unlock()
				if tc, ok := w.conn.(interface{ CloseWrite() error }); ok {
					_ = tc.CloseWrite()
				}
				// Give the peer a moment to read the error before the
				// socket goes; the reader closes the connection when the
				// peer hangs up or the deadline passes.
				_ = w.conn.SetReadDeadline(time.Now().Add(time.Second))
				return
			}
			w.signal()
		}
	}
}
