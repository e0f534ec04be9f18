package dispatch

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
)

// The committer is the dispatcher's only writer to badger. Submit and the
// workers hand it their writes (a new push, an attempt count, a final
// answer); it applies every write that is waiting in one transaction.
// Under load one transaction carries dozens of pushes instead of two
// transactions per push, and P5 is unchanged: Submit still returns only
// after its push is committed, and a push's job record and its done record
// change in the same transaction. A worker does not wait for the commit of
// a final answer (the provider has answered; nothing it does next depends
// on it): the dispatcher's bookkeeping of that push runs once it is
// committed, so the push counts as pending until then.

// opKind is what a write does.
type opKind uint8

const (
	opNew    opKind = iota // persist a new push unless its tracking id is known
	opUpdate               // overwrite a pending push (attempt count)
	opFinish               // delete the push, remember its tracking id
	opForget               // delete the push
)

// maxBatch bounds one transaction (well under badger's size limits for
// pushes of at most a few KiB).
const maxBatch = 256

type writeOp struct {
	kind opKind
	tid  string
	val  []byte // opNew, opUpdate: the encoded push; opFinish: outcome
	// fresh (opNew): the tracking id was made up by Submit, 122 random
	// bits no one has used, so the look-up among answered ones is skipped.
	fresh bool
	// stored (opNew, may be nil) is set once the record committed, before
	// any later op's result is handed out: the push's worker reads it after
	// its own commit to know whether Submit succeeded (Job.Done).
	stored *atomic.Bool
	// Exactly one of errc (do) and then (async) hears the result.
	errc chan error
	then func(error)
}

type committer struct {
	db   *badger.DB
	ops  chan *writeOp
	stop chan struct{}
	done chan struct{}
	cfg  *Config
}

func newCommitter(db *badger.DB, cfg *Config) *committer {
	c := &committer{db: db, cfg: cfg, ops: make(chan *writeOp, 4*maxBatch),
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// do hands op to the committer and waits for its commit.
func (c *committer) do(op *writeOp) error {
	if !c.start(op) {
		return ErrClosed
	}
	return c.wait(op)
}

// start hands op to the committer (false: it has stopped); wait(op) then
// returns once op is committed. Ops commit in the order they were started.
func (c *committer) start(op *writeOp) bool {
	op.errc = make(chan error, 1)
	select {
	case c.ops <- op:
		return true
	case <-c.done:
		return false
	}
}

func (c *committer) wait(op *writeOp) error {
	select {
	case err := <-op.errc:
		return err
	case <-c.done:
		// The committer may have answered just before it ended.
		select {
		case err := <-op.errc:
			return err
		default:
			return ErrClosed
		}
	}
}

// async hands op to the committer without waiting; then is called with the
// result once op is committed (or the committer closed), on the
// committer's goroutine, so it must be quick and must not write.
func (c *committer) async(op *writeOp, then func(error)) {
	op.then = then
	select {
	case c.ops <- op:
	case <-c.done:
		then(ErrClosed)
	}
}

// close commits what is queued and stops the committer.
func (c *committer) close() {
	close(c.stop)
	<-c.done
}

func (c *committer) run() {
	defer close(c.done)
	batch := make([]*writeOp, 0, maxBatch)
	for {
		var op *writeOp
		select {
		case op = <-c.ops:
		case <-c.stop:
			for {
				select {
				case op = <-c.ops:
					c.commit(append(batch[:0], op))
				default:
					return
				}
			}
		}
		batch = append(batch[:0], op)
		// Let the goroutines that are ready run once before the batch
		// closes: under load they are the submitters and workers about to
		// hand over writes, which then share this transaction. It halves
		// the transactions per push at 16 pushes in flight and costs one
		// scheduler pass when there is nobody else.
		runtime.Gosched()
	fill:
		for len(batch) < maxBatch {
			select {
			case op = <-c.ops:
				batch = append(batch, op)
			default:
				break fill
			}
		}
		c.commit(batch)
	}
}

// commit applies batch in one transaction and answers every op. A
// duplicate tracking id fails its own op only.
func (c *committer) commit(batch []*writeOp) {
	errs := make([]error, len(batch))
	err := c.db.Update(func(txn *badger.Txn) error {
		var seen map[string]bool // tracking ids of new pushes in this batch
		for i, op := range batch {
			errs[i] = nil
			switch op.kind {
			case opNew:
				if seen[op.tid] {
					errs[i] = ErrDuplicate
					continue
				}
				if !op.fresh {
					dup, err := known(txn, op.tid)
					if err != nil {
						return err
					}
					if dup {
						errs[i] = ErrDuplicate
						continue
					}
				}
				if seen == nil {
					seen = make(map[string]bool, len(batch))
				}
				seen[op.tid] = true
				if err := txn.Set([]byte(prefixJob+op.tid), op.val); err != nil {
					return err
				}
			case opUpdate:
				if err := txn.Set([]byte(prefixJob+op.tid), op.val); err != nil {
					return err
				}
			case opFinish:
				if err := txn.Delete([]byte(prefixJob + op.tid)); err != nil {
					return err
				}
				e := badger.NewEntry([]byte(prefixDone+op.tid), op.val).WithTTL(c.cfg.DoneTTL)
				if err := txn.SetEntry(e); err != nil {
					return err
				}
			case opForget:
				if err := txn.Delete([]byte(prefixJob + op.tid)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	for i, op := range batch {
		e := errs[i]
		if err != nil {
			e = fmt.Errorf("dispatch: commit: %w", err)
		}
		if e == nil && op.stored != nil {
			op.stored.Store(true)
		}
		if op.then != nil {
			op.then(e)
		} else {
			op.errc <- e
		}
	}
}

// known reports whether tid was answered. A pending tid needs no read: the
// dispatcher's inflight set holds every tid from before its job record is
// written until after that record is deleted (for good, when the delete
// failed), and Submit refuses those before they get here.
func known(txn *badger.Txn, tid string) (bool, error) {
	_, err := txn.Get([]byte(prefixDone + tid))
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, badger.ErrKeyNotFound) {
		return false, err
	}
	return false, nil
}
