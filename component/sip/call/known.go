package call

// Known reports whether the machine still remembers call id (under way,
// or ended and kept for LateWindow): the runner keeps a call's
// transactions exactly as long.
func (m *Machine) Known(id ID) bool {
	_, ok := m.calls[id]
	return ok
}

// Len returns how many calls the machine remembers (under way or ended
// and kept): Calls plus Remembered, without a scan.
func (m *Machine) Len() int { return len(m.calls) }
