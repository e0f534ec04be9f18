package dispatch

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// The committer is the dispatcher's only writer to badger. Submit and the
// workers hand it their writes (a new push, an attempt count, a final
// answer) and wait for the commit; it applies every write that is waiting
// in one transaction. Under load one transaction carries dozens of pushes
// instead of two transactions per push, and P5 is unchanged: Submit still
// returns only after its push is committed, and a push's job record and
// its done record change in the same transaction.

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
	errc chan error
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
	op.errc = make(chan error, 1)
	select {
	case c.ops <- op:
	case <-c.done:
		return ErrClosed
	}
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
		seen := make(map[string]bool, len(batch))
		for i, op := range batch {
			errs[i] = nil
			switch op.kind {
			case opNew:
				if seen[op.tid] {
					errs[i] = ErrDuplicate
					continue
				}
				dup, err := known(txn, op.tid)
				if err != nil {
					return err
				}
				if dup {
					errs[i] = ErrDuplicate
					continue
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
		op.errc <- e
	}
}

// known reports whether tid is pending or was answered.
func known(txn *badger.Txn, tid string) (bool, error) {
	for _, k := range []string{prefixJob, prefixDone} {
		_, err := txn.Get([]byte(k + tid))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return false, err
		}
	}
	return false, nil
}
