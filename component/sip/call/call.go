// Package call is the holding proxy's decisions for one SIP server, as a
// deterministic, clock-driven state machine (BEHAVIOUR C2–C6, C8, M7):
// which bindings an INVITE forks to and which devices it pushes, when the
// caller hears a local 180 (5 s), when a held call gives up (13 s), which
// branches are cancelled and with what Reason, which response the caller
// finally gets, which end-of-call push each pushed device gets, and which
// phone that registers after the end still gets the call's INVITE and
// CANCEL.
//
// Like jsm and cluster/failover it does no I/O, starts no goroutine and
// never reads the clock: the caller feeds it events (the INVITE, the
// branches' responses, REGISTERs, CANCEL, push failures, BYE, the time)
// through Step and carries out the actions it returns, in order. It never
// builds or relays a SIP message itself and knows nothing of transactions:
// the server relays 18x and 2xx on its own, retransmits, ACKs, and drops
// the responses of a branch it was told to cancel. Its memory is bounded
// by the calls under way plus those that ended in the last LateWindow.
package call

import (
	"time"

	"pushd/component/payload"
)

// Config configures a Machine. DefaultConfig documents the defaults.
type Config struct {
	// RingAfter: no 18x from any branch by then, the caller gets a local
	// 180 Ringing, so that a call held for a sleeping phone is not taken
	// for a dead one (C3). Default 5 s.
	RingAfter time.Duration
	// GiveUpAfter: no branch ringing and not answered by then, the call
	// ends with 480 and missed-call pushes (C4). Default 13 s.
	GiveUpAfter time.Duration
	// NoAnswerAfter, counted from the INVITE like Flexisip's fork
	// timeout: a call still not answered then ends with 480 and
	// missed-call pushes, even while it rings. Default 90 s.
	NoAnswerAfter time.Duration
	// LateWindow: how long after a call stopped being offered (answered
	// elsewhere, or ended) a pushed phone that registers still gets the
	// call's INVITE and CANCEL, so that its app can report the call its
	// VoIP push announced (C8). Default 30 s: about how long a caller's
	// INVITE transaction lives after its final response (RFC 3261 Timer
	// H), so that a late retransmission finds the call still known.
	LateWindow time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		RingAfter:     5 * time.Second,
		GiveUpAfter:   13 * time.Second,
		NoAnswerAfter: 90 * time.Second,
		LateWindow:    30 * time.Second,
	}
}

// ID names a call: the caller's SIP Call-ID. The server rejects a second
// concurrent INVITE with the same Call-ID itself.
type ID string

// Binding is a registered contact of an address-of-record, as far as the
// machine needs it.
type Binding struct {
	// ID is the registrar's key of the binding, stable across refreshes.
	ID string
	// Device is the device's identity: "provider/prid" for push bindings,
	// else +sip.instance, else the contact. Pushes are deduplicated and
	// re-registrations matched by Device; "" is taken to be ID.
	Device string
	// Push: the binding has RFC 8599 push parameters, the call pushes it.
	Push bool
	// Live: reachable now (a binding without push parameters, or a push
	// binding on an open connection): the call forks to it at once.
	Live bool
}

func (b Binding) device() string {
	if b.Device == "" {
		return b.ID
	}
	return b.Device
}

// Reason says why a branch, or a late INVITE, is cancelled: its value is
// the CANCEL's Reason header (RFC 3326), which tells a phone whether to
// show a missed call.
type Reason int

// The reasons a call ends with for the devices it did not reach.
const (
	ReasonNone              Reason = iota
	ReasonAnsweredElsewhere        // SIP;cause=200
	ReasonDeclinedElsewhere        // SIP;cause=600
)

// String returns the Reason header's value ("" for none: no header).
func (r Reason) String() string {
	switch r {
	case ReasonAnsweredElsewhere:
		return `SIP;cause=200;text="Call completed elsewhere"`
	case ReasonDeclinedElsewhere:
		return `SIP;cause=600;text="Busy Everywhere"`
	}
	return ""
}

// Cause returns the Reason header's SIP cause (0 for none).
func (r Reason) Cause() int {
	switch r {
	case ReasonAnsweredElsewhere:
		return 200
	case ReasonDeclinedElsewhere:
		return 600
	}
	return 0
}

// Event is an input of Step.
type Event interface{ event() }

// Invite: a new call for AOR, with the AOR's bindings as the registrar
// holds them. A device with several bindings is forked once, to its first
// live binding in this order (the freshest first, say), and pushed once,
// through its first push binding. An Invite for a call the machine still
// holds, under way or ended within LateWindow, is a retransmission and is
// ignored (C8: one call pushes a device once).
type Invite struct {
	Call     ID
	AOR      string
	Bindings []Binding
}

// Registered: a REGISTER added or refreshed Binding of AOR.
type Registered struct {
	AOR     string
	Binding Binding
}

// Provisional: a 18x from the branch to Binding (100 is never passed).
type Provisional struct {
	Call    ID
	Binding string
	Code    int
}

// Final: a final response from the branch to Binding.
type Final struct {
	Call    ID
	Binding string
	Code    int
}

// Cancelled: the caller's CANCEL.
type Cancelled struct{ Call ID }

// PushFailed: the dispatcher could not deliver the call push named by a
// Push action (Binding is that action's).
type PushFailed struct {
	Call    ID
	Binding string
}

// Hangup: the BYE of an answered call, from either side.
type Hangup struct{ Call ID }

// Tick: time passed (Step takes the clock; Tick carries nothing else).
type Tick struct{}

func (Invite) event()      {}
func (Registered) event()  {}
func (Provisional) event() {}
func (Final) event()       {}
func (Cancelled) event()   {}
func (PushFailed) event()  {}
func (Hangup) event()      {}
func (Tick) event()        {}

// Action is an output of Step, for the caller to carry out in order.
type Action interface{ action() }

// Fork: send an INVITE branch to Binding.
type Fork struct {
	Call    ID
	Binding string
}

// Push: hand the dispatcher a push of Type for the device of Binding.
// Step PushFailed if it cannot be delivered (only a TypeCall push's
// failure changes anything).
type Push struct {
	Call    ID
	Binding string
	Type    payload.Type
}

// CancelBranch: CANCEL the branch to Binding, with Reason. The server
// passes none of that branch's later responses (its 487) to the machine:
// the same binding may be forked again at once, and its responses must not
// be taken for the new branch's.
type CancelBranch struct {
	Call    ID
	Binding string
	Reason  Reason
}

// Respond: send the caller Code. With Binding "" pushd makes the response
// (180, 480, 487); else it relays that branch's final response (486, 603, …).
// A call gets at most one local 180 and exactly one final Respond, unless
// it is answered: the server relays the 2xx itself.
type Respond struct {
	Call    ID
	Code    int
	Binding string
}

// LateInvite: send the call's INVITE to Binding and CANCEL it at once with
// Reason (C8): the phone was pushed for a call that stopped being offered
// before it registered.
type LateInvite struct {
	Call    ID
	Binding string
	Reason  Reason
}

// InCall: Device of AOR has a call up through pushd, or no longer has any
// (M7). It is said on the changes only: a device in two calls goes down
// when the last one ends.
type InCall struct {
	AOR    string
	Device string
	Up     bool
}

func (Fork) action()         {}
func (Push) action()         {}
func (CancelBranch) action() {}
func (Respond) action()      {}
func (LateInvite) action()   {}
func (InCall) action()       {}
