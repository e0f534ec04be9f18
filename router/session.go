package router

import (
	"errors"
	"io"
	"strconv"
	"time"

	"pushd/internal/stanza"
	"pushd/jsm"
)

// serveStream reads a bound stream until its connection ends, then tells
// jsm whether the stream detached (resumable) or closed.
func (c *c2s) serveStream(st *stream) {
	s := c.srv
	st.mu.Lock()
	w := st.w
	st.mu.Unlock()
	if w == nil {
		// jsm refused the stream as it was bound or resumed (closed it).
		return
	}
	err := c.readStanzas(st)
	se := readError(err)
	clean := err == nil
	s.mu.Lock()
	defer s.mu.Unlock()
	st.mu.Lock()
	mine := st.w == w && w != nil
	resumable := st.resumeID != ""
	st.mu.Unlock()
	if !mine {
		// The stream moved to another connection (resumed) or jsm closed
		// it; this connection has nothing more to say.
		if w != nil {
			w.abandon()
		}
		return
	}
	switch {
	case resumable && se == nil && !clean:
		s.cfg.Metrics.detached.Inc()
		s.stepLocked(jsm.Detached{Stream: st.id, Unacked: st.detach()})
		// After jsm queued the unacknowledged entries, so the backup gets
		// the session behind its queue.
		s.replicate(st)
		if s.cfg.Cluster != nil && st.resumeID != "" {
			st.settleDetached()
		}
		w.abandon()
	default:
		// The stream is over: what the client never acknowledged goes back
		// to jsm, which keeps the messages offline.
		if se != nil {
			s.cfg.Metrics.streamErrors.WithLabelValues(se.Condition).Inc()
		}
		s.forget(st)
		s.replicateEnd(st)
		st.close(se)
		if se == nil && !clean {
			w.abandon()
		}
		s.stepLocked(jsm.Closed{Stream: st.id, Clean: clean, Unacked: st.detach()})
	}
	if w != nil {
		<-w.done
	}
}

// forget drops a stream from the routing tables; s.mu is held.
func (s *Server) forget(st *stream) {
	if _, ok := s.streams[st.id]; !ok {
		return
	}
	s.cfg.Metrics.streams.Dec()
	st.mu.Lock()
	detached := st.w == nil
	st.mu.Unlock()
	if detached {
		s.cfg.Metrics.detached.Dec()
	}
	delete(s.streams, st.id)
	if st.resumeID != "" {
		delete(s.resumable, st.resumeID)
	}
}

// readStanzas is the loop of a bound stream. It returns nil when the
// client closed the stream, a *StreamError for a protocol violation, and
// the read error when the connection failed.
func (c *c2s) readStanzas(st *stream) error {
	s := c.srv
	for {
		el, err := c.r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if !c.bucket.take(time.Now()) {
			return errFlood
		}
		switch {
		case el.IsStanza():
			s.cfg.Metrics.stanzasIn.WithLabelValues(el.Name.Local).Inc()
			st.mu.Lock()
			if st.sm {
				st.inCount++
			}
			st.mu.Unlock()
			if el.Name.Local == "iq" && c.handleStreamIQ(st, el) {
				continue
			}
			el.Set("from", st.from)
			// IQs for a user of another node go there at once (H1): its
			// session manager routes them, and the sender's ack waits for
			// it there. Messages and presence go through this node's
			// session manager first (sent carbons, last activity, rosters,
			// directed presence), which forwards what is for the other
			// node.
			if el.Name.Local == "iq" {
				if user, node := s.homeOf(el); node != "" {
					st.addDurable([]func() error{s.forward(user, node, el)})
					continue
				}
			}
			st.addDurable(s.step(jsm.StanzaIn{Stream: st.id, Stanza: el, Size: c.r.LastSize()}))
		case el.Name.Space == stanza.NSSM:
			if err := c.handleSM(st, el); err != nil {
				return err
			}
		case el.Is(stanza.NSCSI, "active"), el.Is(stanza.NSCSI, "inactive"):
			s.Step(jsm.ClientState{Stream: st.id, Active: el.Name.Local == "active"})
		default:
			return errUnsupportedType
		}
	}
}

// handleStreamIQ answers the IQs that belong to the stream rather than to
// the session manager: a second bind and the legacy session request.
func (c *c2s) handleStreamIQ(st *stream, iq *stanza.Element) bool {
	var reply *stanza.Element
	switch {
	case iq.Child(stanza.NSBind, "bind") != nil:
		reply = stanzaError(iq, "cancel", "not-allowed")
	case iq.Child(stanza.NSSession, "session") != nil && (iq.Get("to") == "" || iq.Get("to") == c.srv.domain.String()):
		reply = stanza.New(stanza.NSClient, "iq", "type", "result", "id", iq.Get("id"))
	default:
		return false
	}
	reply.Set("from", "")
	reply.Set("to", st.from)
	// A stanza like any other: XEP-0198 counts it (and would resend it).
	st.deliver(jsm.Entry{Stanza: reply})
	return true
}

// handleSM handles XEP-0198 nonzas on a bound stream.
func (c *c2s) handleSM(st *stream, el *stanza.Element) error {
	s := c.srv
	switch el.Name.Local {
	case "enable":
		st.mu.Lock()
		if st.sm {
			st.mu.Unlock()
			st.send(func(b []byte) []byte {
				return append(b, `<failed xmlns="urn:xmpp:sm:3"><unexpected-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></failed>`...)
			})
			return nil
		}
		st.mu.Unlock()
		resume := el.Get("resume") == "true" || el.Get("resume") == "1"
		var id string
		if resume {
			id = randomID(16)
		}
		// Under s.mu, so that no entry is written between the stream
		// counting and jsm keeping what it writes (jsm.Managed).
		s.mu.Lock()
		regs := s.machine.Registrations(st.from)
		st.mu.Lock()
		st.sm, st.resumeID, st.regs = true, id, regs
		st.mu.Unlock()
		if resume {
			s.resumable[id] = st
		}
		s.stepLocked(jsm.Managed{Stream: st.id})
		s.mu.Unlock()
		// The backup knows the session from the start, so that a client
		// can resume there even before its first acknowledgement.
		s.replicate(st)
		st.send(func(b []byte) []byte {
			b = append(b, `<enabled xmlns="urn:xmpp:sm:3"`...)
			if resume {
				b = append(b, ` id="`+id+`" resume="true" max="`...)
				b = strconv.AppendInt(b, int64(s.resumeMax()/time.Second), 10)
				b = append(b, '"')
				if s.cfg.ResumeLocation != "" {
					b = append(b, ` location="`+s.cfg.ResumeLocation+`"`...)
				}
			}
			return append(b, "/>"...)
		})
	case "r":
		st.answerAckRequest()
	case "a":
		h, err := strconv.ParseUint(el.Get("h"), 10, 32)
		if err != nil {
			return errBadFormat
		}
		through, serr := st.handleAck(uint32(h))
		if serr != nil {
			return serr
		}
		if through > 0 {
			// The backup learns the client's count before its copy of
			// the queue is trimmed: the two must agree (H4).
			s.replicate(st)
			s.Step(jsm.Acked{Stream: st.id, Seq: through})
		}
	case "resume":
		st.send(func(b []byte) []byte {
			return append(b, `<failed xmlns="urn:xmpp:sm:3"><unexpected-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></failed>`...)
		})
	default:
		return errUnsupportedType
	}
	return nil
}

// resumeMax is the max of <enabled/> (XEP-0198 §5): the longest this
// device's stream may stay resumable, the longer of the two timeouts
// whether or not it has push now. Which one applies is settled only when
// the stream detaches (jsm, M10), and phones mostly enable push after
// <enable/>, when nothing can be announced again. A client may take max
// as the time after which resuming is pointless and bind afresh: told the
// short timeout, a phone woken by a push after an hour would drop a
// session the server still holds, and the resumption that 24 h of
// hibernation exists for. Told the long one, a device whose session has
// ended tries <resume/>, gets <failed/> and binds: one round trip, and
// nothing lost, as its queue has moved to the offline store.
func (s *Server) resumeMax() time.Duration {
	return max(s.cfg.ResumeTimeout, s.cfg.PushResumeTimeout)
}

// bucket is a token bucket limiting the elements one connection sends.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newBucket(rate, burst float64) bucket {
	return bucket{rate: rate, burst: burst, tokens: burst}
}

func (b *bucket) take(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	if !b.last.IsZero() {
		b.tokens += now.Sub(b.last).Seconds() * b.rate
		if b.tokens > b.burst {
			b.tokens = b.burst
		}
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
