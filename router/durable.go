package router

import (
	"strconv"
)

// addDurable records writes the stanzas received so far depend on; the
// next <a/> waits for them (DESIGN rule 2: acknowledge only what is safe).
func (st *stream) addDurable(waits []func() error) {
	if len(waits) == 0 {
		return
	}
	st.mu.Lock()
	if !st.sm {
		// No <a/> will ever ask for them: awaited in the background, so
		// that they neither pile up here nor leave a forwarding lane open
		// (forward.go: a lane closes when its stanzas are confirmed).
		st.mu.Unlock()
		for _, w := range waits {
			st.srv.background(w)
		}
		return
	}
	st.durable = append(st.durable, waits...)
	st.mu.Unlock()
}

// answerAckRequest answers the client's <r/> with the count of stanzas it
// sent, once every write they caused is durable and, in a cluster, the
// user's backup holds the count (H4). Answers leave in order: each waits
// for the one before it. With nothing pending it answers at once.
func (st *stream) answerAckRequest() {
	st.mu.Lock()
	if !st.sm {
		st.mu.Unlock()
		return
	}
	h, waits, prev := st.takePendingLocked()
	tell := st.srv.cfg.Cluster != nil && st.resumeID != "" && h != st.handled
	if !tell && len(waits) == 0 && (prev == nil || isClosed(prev)) {
		st.ackDone = nil
		st.mu.Unlock()
		st.sendAck(h)
		return
	}
	done := make(chan struct{})
	st.ackDone = done
	st.mu.Unlock()
	go func() {
		defer close(done)
		if err := st.confirm(prev, waits, h, tell); err != nil {
			// Not durable: the stanza must not be acknowledged. The
			// stream ends, and cannot be resumed; the client resends what
			// was not acked.
			st.srv.log.Error("write before acknowledgement failed", "err", err)
			st.close(&StreamError{Condition: "internal-server-error"})
			return
		}
		st.sendAck(h)
	}()
}

// settle waits until every write the client's stanzas caused is durable;
// called before a resumption reports the client's count. An error means
// some never will be: no count may cover them.
func (st *stream) settle() error {
	st.mu.Lock()
	_, waits, prev := st.takePendingLocked()
	st.mu.Unlock()
	if err := st.confirm(prev, waits, 0, false); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.writeErr
}

// settleDetached raises the count the backup may report to what the
// client sent before its connection dropped, once the writes those
// stanzas caused are durable here and there (H4: a resumption on the
// backup never reports a stanza a crash could lose). A resumption here
// waits for it (settle follows the ackDone chain).
func (st *stream) settleDetached() {
	st.mu.Lock()
	h, waits, prev := st.takePendingLocked()
	done := make(chan struct{})
	st.ackDone = done
	st.mu.Unlock()
	go func() {
		defer close(done)
		if err := st.confirm(prev, waits, h, true); err != nil {
			st.srv.log.Error("write of a dropped client's stanza failed", "err", err)
		}
	}()
}

// confirm waits for the link before it in the ackDone chain (prev) and
// for waits; then, with tell, lets the backup report h, since all it
// covers is safe. A failure is recorded on the stream (writeErr).
func (st *stream) confirm(prev chan struct{}, waits []func() error, h uint32, tell bool) error {
	if prev != nil {
		<-prev
	}
	for _, w := range waits {
		if err := w(); err != nil {
			st.setWriteErr(err)
			return err
		}
	}
	if tell {
		if w := st.srv.replicateHandled(st, h); w != nil {
			if err := w(); err != nil {
				st.setWriteErr(err)
				return err
			}
		}
	}
	return nil
}

// takePendingLocked takes the client's count, the writes its stanzas
// caused since they were last taken, and the last link of the ackDone
// chain. st.mu is held.
func (st *stream) takePendingLocked() (h uint32, waits []func() error, prev chan struct{}) {
	h, waits, prev = st.inCount, st.durable, st.ackDone
	st.durable = nil
	return h, waits, prev
}

// setWriteErr records that a write a client stanza caused failed.
func (st *stream) setWriteErr(err error) {
	st.mu.Lock()
	if st.writeErr == nil {
		st.writeErr = err
	}
	st.mu.Unlock()
}

func (st *stream) sendAck(h uint32) {
	st.send(func(b []byte) []byte {
		b = append(b, `<a xmlns="urn:xmpp:sm:3" h="`...)
		b = strconv.AppendUint(b, uint64(h), 10)
		return append(b, `"/>`...)
	})
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
