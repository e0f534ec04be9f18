package call

import (
	"cmp"
	"container/heap"
	"time"
)

// due is the machine's calls that have a deadline, as a min-heap on it
// (ties by call id, the order fire has always used), so that Next is a
// look at the top and fire pops only what is due: a loop turn no longer
// costs a scan of every call under way and every ended call kept for
// LateWindow (tens of thousands at 1 000 calls/s).
type due []*call

func (h due) Len() int { return len(h) }
func (h due) Less(i, j int) bool {
	return cmp.Or(h[i].at.Compare(h[j].at), cmp.Compare(h[i].id, h[j].id)) < 0
}
func (h due) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].slot, h[j].slot = i, j
}
func (h *due) Push(x any) {
	c := x.(*call)
	c.slot = len(*h)
	*h = append(*h, c)
}
func (h *due) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.slot = -1
	return c
}

// schedule puts c in the heap at its next deadline, moves it there, or
// takes it out (no deadline left, or forgotten). Every step calls it for
// each call the step may have changed.
func (m *Machine) schedule(c *call) {
	at := c.next()
	if m.calls[c.id] != c {
		at = time.Time{}
	}
	switch {
	case at.IsZero():
		if c.slot >= 0 {
			heap.Remove(&m.due, c.slot)
		}
	case c.slot >= 0:
		if !at.Equal(c.at) {
			c.at = at
			heap.Fix(&m.due, c.slot)
		}
	default:
		c.at = at
		heap.Push(&m.due, c)
	}
}

// scheduleFor reschedules the calls an event may have changed.
func (m *Machine) scheduleFor(ev Event) {
	var id ID
	switch e := ev.(type) {
	case Invite:
		id = e.Call
	case Registered:
		for _, c := range m.byAOR[e.AOR] {
			m.schedule(c)
		}
		return
	case Provisional:
		id = e.Call
	case Final:
		id = e.Call
	case Cancelled:
		id = e.Call
	case PushFailed:
		id = e.Call
	case Hangup:
		id = e.Call
	default:
		return
	}
	if c := m.calls[id]; c != nil {
		m.schedule(c)
	}
}
