package peertest

import (
	"bytes"
	"sync"
)

// lineSink is an io.Writer that hands each complete line written to it to
// fn (without the newline), in order. It is given to a child process as a
// copy of its stdout, so fn runs on the goroutine exec copies output with.
type lineSink struct {
	mu  sync.Mutex
	buf []byte
	fn  func(line []byte)
}

func (w *lineSink) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimSpace(w.buf[:i])
		w.buf = w.buf[i+1:]
		if len(line) > 0 {
			w.fn(bytes.Clone(line))
		}
	}
	return len(p), nil
}

// signal is a broadcast "something changed" notification: waiters take the
// current channel, re-check their condition, and wait on it.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
	}
	s.ch = make(chan struct{})
}
