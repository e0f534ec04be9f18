// Package jsm is pushd's session manager: users, their devices, presence,
// rosters and the delivery policy of BEHAVIOUR M1–M10.
//
// jsm is a deterministic state machine in the manner of etcd's raft: the
// caller feeds events to Machine.Step with the current time and carries out
// the actions it returns. jsm must never start a goroutine, touch a socket
// or a file, or read the clock; that is what lets the router run it, the
// tests replay it from scripts, and the cluster replay it on a backup.
package jsm

import (
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/stanza"
)

// StreamID names one bound client stream in the router. It stays the same
// across XEP-0198 resumption: a resumed stream is the same stream.
type StreamID uint64

// Kind is what sort of device a stream belongs to; push policy (M6) treats
// mobile and desktop devices differently.
type Kind uint8

const (
	Desktop Kind = iota // the default when nothing says otherwise
	Mobile
)

func (k Kind) String() string {
	if k == Mobile {
		return "mobile"
	}
	return "desktop"
}

// Entry is one stanza bound for a device, numbered by the device's
// monotonic outbound sequence. Queues are ordered and deduplicated by Seq.
type Entry struct {
	Seq    uint64
	Stanza *stanza.Element
}

// Event is an input to Machine.Step.
type Event interface{ event() }

// Action is an output of Machine.Step, for the caller to carry out in order.
type Action interface{ action() }

// --- events ---

// Bound: a stream authenticated and bound JID (a full JID). If the
// resource is already bound by another stream, the new stream takes the
// device over (M5): a live old stream is closed with conflict, a detached
// one is discarded and its queue flushed to the new stream.
type Bound struct {
	Stream StreamID
	JID    jid.JID
}

// StanzaIn: a client stream sent a stanza. The router has already set
// 'from' to the stream's full JID.
type StanzaIn struct {
	Stream StreamID
	Stanza *stanza.Element
	// Size (added) is the stanza's size in bytes as received, for the queue
	// bounds of M9; 0 makes jsm estimate it from the serialised stanza.
	Size int
}

// ComponentIn: a connected component sent a stanza whose 'from' is within
// its domain.
type ComponentIn struct {
	Domain string
	Stanza *stanza.Element
	// Size (added) as in StanzaIn.
	Size int
}

// ComponentUp / ComponentDown: an XEP-0114 component for Domain connected
// or went away. Stanzas to Domain are routed to it while it is up.
type ComponentUp struct{ Domain string }
type ComponentDown struct{ Domain string }

// Acked: the client acknowledged (XEP-0198) every entry up to Seq.
type Acked struct {
	Stream StreamID
	Seq    uint64
}

// Detached: the stream's connection is gone but XEP-0198 lets it resume.
// Unacked are the entries written to it that the client has not
// acknowledged, in order; jsm queues them again.
type Detached struct {
	Stream  StreamID
	Unacked []Entry
}

// Resumed: a detached stream was resumed; the client acknowledged every
// entry up to AckedSeq.
type Resumed struct {
	Stream   StreamID
	AckedSeq uint64
}

// Closed: the stream is gone for good. Clean is true for a closed stream
// (</stream:stream>), false for a lost connection without resumption.
type Closed struct {
	Stream StreamID
	Clean  bool
	// Unacked (added) are entries written to the stream that the client
	// never acknowledged, in order; the messages among them move to the
	// offline store so that nothing is lost (M5, M9). Nil without XEP-0198.
	Unacked []Entry
}

// Managed (added): the client enabled XEP-0198 stream management on the
// stream. From now on every stanza written to it also stays in the
// device's queue until the client acknowledges it, so that what a crash
// of this node (or of the connection) leaves unacknowledged is found in
// the queue, here after a restart and on the user's backup after a
// failover (H2, H4), exactly where a suspended device's stanzas are.
type Managed struct {
	Stream StreamID
}

// ClientState: XEP-0352 <active/> (true) or <inactive/> (false).
type ClientState struct {
	Stream StreamID
	Active bool
}

// OfflineLoaded answers a FlushOffline action: the user's stored messages,
// oldest first, now removed from the store.
type OfflineLoaded struct {
	Stream   StreamID
	Messages []*stanza.Element
}

// QueueLoaded (added) answers a LoadQueue action: every entry still in the
// device's queue, in Seq order. The caller should Step it before any other
// event for the same user, as it does OfflineLoaded.
type QueueLoaded struct {
	Device  string
	Entries []Entry
}

// InCall (added): the SIP side says a device of User is in a call, or no
// longer (M7). Device is the device's full JID string; empty means every
// mobile device of the user (the SIP side may not know the XMPP resource).
// While it lasts, messages queued for that mobile device are pushed even
// if a desktop device is active.
type InCall struct {
	User   jid.JID
	Device string
	Active bool
}

// Forwarded: another node of the cluster, where the sender's sessions
// live, forwarded a stanza for a user whose sessions live here. 'from' is
// already stamped and trusted. Size is as in StanzaIn.
type Forwarded struct {
	Stanza *stanza.Element
	Size   int
}

// Adopt: this node became the primary of devices whose state it held as
// their user's backup (BEHAVIOUR H3). They come back suspended exactly as
// after a restart (queues, registrations, pushes go on), and a device
// given a stream in Streams can be resumed on it (H4). Devices already
// known here are left alone.
type Adopt struct {
	Queues        map[string]QueueInfo
	Registrations map[string][]Registration
	Streams       map[string]StreamID
	// Unpushed are, per device, the queued entries after the last Seq the
	// failed primary had pushed for (Pushed): they trigger notifications
	// here.
	Unpushed map[string][]Entry
	// Offline counts the messages in the offline store of each user (by
	// bare JID string) this node serves from now on, replicated here
	// while another node served them (-1: unknown, a login asks the
	// store).
	Offline map[string]int
}

// Release: another node serves these devices now (their user's primary
// came back, H4 fallback); jsm forgets them without a trace — no
// presence, no offline move, no pushes. Their queues are the caller's to
// hand over.
type Release struct {
	Devices []string
	// Match, when set, also selects devices by full JID.
	Match func(device string) bool
}

// Tick advances timers (hibernation expiry, idle thresholds, coalescing).
type Tick struct{}

// UserAdded / UserDeleted keep jsm's set of local accounts current.
type UserAdded struct{ User jid.JID }
type UserDeleted struct{ User jid.JID }

func (Bound) event()         {}
func (StanzaIn) event()      {}
func (ComponentIn) event()   {}
func (ComponentUp) event()   {}
func (ComponentDown) event() {}
func (Acked) event()         {}
func (Detached) event()      {}
func (Resumed) event()       {}
func (Closed) event()        {}
func (Managed) event()       {}
func (ClientState) event()   {}
func (OfflineLoaded) event() {}
func (QueueLoaded) event()   {}
func (InCall) event()        {}
func (Tick) event()          {}
func (Adopt) event()         {}
func (Forwarded) event()     {}
func (Release) event()       {}
func (UserAdded) event()     {}
func (UserDeleted) event()   {}

// --- actions ---

// Deliver: write Entry to the live stream.
type Deliver struct {
	Stream StreamID
	Entry  Entry
}

// Forward (added, H1): send the stanza to the node that serves its
// recipient, a user of the domain that this node does not serve
// (Config.Remote).
type Forward struct {
	Stanza *stanza.Element
}

// ToComponent: send the stanza to the component serving Domain.
type ToComponent struct {
	Domain string
	Stanza *stanza.Element
}

// Enqueue: append entries durably to the device's queue (device = full JID
// string). Appending an entry whose Seq is already queued is a no-op.
type Enqueue struct {
	Device  string
	Entries []Entry
}

// Flush: write the device's queued entries with Seq >= From, in order, to
// the stream, before anything Step returns after this action.
type Flush struct {
	Stream StreamID
	Device string
	From   uint64
}

// Trim: drop the device's queued entries with Seq <= Through.
type Trim struct {
	Device  string
	Through uint64
}

// DropQueue: the device is gone; delete its queue.
type DropQueue struct{ Device string }

// LoadQueue (added): read every entry of the device's queue and Step
// QueueLoaded with them. jsm keeps only counters for queues, never the
// stanzas, so this is how a device that is gone for good gets its queued
// messages moved to the offline store (M10); a DropQueue follows.
type LoadQueue struct{ Device string }

// StoreOffline: keep a message for a user with no available device
// (XEP-0160).
type StoreOffline struct {
	User    jid.JID
	Message *stanza.Element
}

// FlushOffline: load and remove the user's offline messages, then Step
// OfflineLoaded for the stream.
type FlushOffline struct {
	Stream StreamID
	User   jid.JID
}

// SaveRosterItem / DeleteRosterItem: persist a roster change.
type SaveRosterItem struct {
	User jid.JID
	Item RosterItem
}
type DeleteRosterItem struct {
	User    jid.JID
	Contact jid.JID
}

// CloseStream: end the stream with the given stream error condition
// (RFC 6120 §4.9.3, e.g. "conflict"); an empty condition closes cleanly.
// A detached stream is forgotten and can no longer be resumed.
type CloseStream struct {
	Stream    StreamID
	Condition string
}

// SaveRegistration (added): persist an XEP-0357 push registration of the
// device (full JID string), replacing one with the same AppServer and Node.
type SaveRegistration struct {
	Device       string
	Registration Registration
}

// DeleteRegistration (added): forget the device's registration for
// AppServer and Node (M8, or an app server that refused it).
type DeleteRegistration struct {
	Device    string
	AppServer jid.JID
	Node      string
}

// Remove (added): delete these entries from the device's queue (M9: the
// oldest presence stanzas make room for newer stanzas). Seqs ascend.
type Remove struct {
	Device string
	Seqs   []uint64
}

// Publish (added): send an XEP-0357 notification (M3). Stanza is the whole
// <iq type='set'> publish to the registration's app server with the
// urn:xmpp:push:summary form and the registration's publish-options.
// Domain is AppServer's domain: the component that should get it (jsm
// emits the action whether or not that component is connected; the
// router decides). With Encrypt set the router replaces the form by the
// tigase:push:encrypt:0 ciphertext built from Summary, so that sender and
// body never leave in clear (S2). The app server's answer comes back as a
// ComponentIn IQ result or error with the same id.
type Publish struct {
	Device  string
	Domain  string
	Stanza  *stanza.Element
	Encrypt *Encryption
	Summary Summary
	// Through (added) is the highest queue Seq the notification covers.
	Through uint64
}

// Pushed (added): the app server took a notification for the device,
// covering its queue through Seq Through; the device's session (on
// Stream) carries it to the backup, which after a failover pushes only
// for what came after (Adopt.Unpushed).
type Pushed struct {
	Stream  StreamID
	Device  string
	Through uint64
}

// PushDisabled (added): jsm removed a registration because its app server
// refused a publish with a non-wait error (Reason is the error condition),
// for the router to log and count. A DeleteRegistration precedes it.
type PushDisabled struct {
	Device    string
	AppServer jid.JID
	Node      string
	Reason    string
}

func (Deliver) action()            {}
func (ToComponent) action()        {}
func (Forward) action()            {}
func (Enqueue) action()            {}
func (Flush) action()              {}
func (Trim) action()               {}
func (DropQueue) action()          {}
func (LoadQueue) action()          {}
func (StoreOffline) action()       {}
func (FlushOffline) action()       {}
func (SaveRosterItem) action()     {}
func (DeleteRosterItem) action()   {}
func (CloseStream) action()        {}
func (SaveRegistration) action()   {}
func (DeleteRegistration) action() {}
func (Remove) action()             {}
func (Publish) action()            {}
func (PushDisabled) action()       {}
func (Pushed) action()             {}

// Subscription is a roster item's subscription state (RFC 6121 §2.1.2.5).
type Subscription string

const (
	SubNone Subscription = "none"
	SubTo   Subscription = "to"
	SubFrom Subscription = "from"
	SubBoth Subscription = "both"
)

// RosterItem is one contact in a user's roster.
type RosterItem struct {
	JID          jid.JID
	Name         string
	Subscription Subscription
	Ask          bool // an outbound subscription request is pending
	// Pending: an inbound subscription request awaits the user's answer
	// (RFC 6121 §3.1.3); it is kept so it can be shown again at login.
	Pending bool
	Groups  []string
}

// State is what the caller restores a Machine from at start: every local
// account and its roster.
type State struct {
	Users   []jid.JID
	Rosters map[string][]RosterItem // by bare JID string
	// Offline (added) is how many messages each user (by bare JID string)
	// has in the offline store. A user missing from the map is assumed to
	// have some: jsm then asks for them at the next login (FlushOffline).
	Offline map[string]int
	// Queues (added) describes each device queue left in the store (queue's
	// Devices()), by device full JID string.
	Queues map[string]QueueInfo
	// Registrations (added) are the stored push registrations, by device
	// full JID string. A device with a queue or a registration is restored
	// as hibernating without a stream (suspended): stanzas for it queue and
	// push; a Bound of its resource takes it over and flushes the queue.
	Registrations map[string][]Registration
}

// QueueInfo (added) is what the queue store holds for one device.
type QueueInfo struct {
	First, Last uint64 // lowest and highest queued Seq
	Count       int
	Bytes       int64
}

// Registration (added) is one XEP-0357 push registration of a device.
type Registration struct {
	AppServer jid.JID // the app server (XEP-0357 'jid')
	Node      string  // the node on it, may be empty
	// Options is the publish-options data form (<x xmlns='jabber:x:data'>)
	// the client gave in <enable/>, typically carrying a secret; nil if none.
	Options *stanza.Element
	// Encrypt is the tigase:push:encrypt:0 key, nil if the client asked for
	// clear notifications.
	Encrypt *Encryption
}

// Encryption is a tigase:push:encrypt:0 key for the notification summary.
type Encryption struct {
	Alg string // "aes-128-gcm" or "aes-256-gcm"
	Key []byte // 16 or 32 bytes
}

// Summary is the content of one notification, the plain fields of the
// urn:xmpp:push:summary form. Sender and Body are empty unless they may
// be included (Config.IncludeSender/IncludeBody, an encrypted
// registration, or a trusted app server).
type Summary struct {
	Count                int    // messages queued since the device was suspended
	PendingSubscriptions int    // subscription requests queued meanwhile
	Sender               string // bare JID of the last message's sender
	Nick                 string // for groupchat: the sender's room nick
	Body                 string // the last message's body
	Type                 string // "chat", "groupchat" or "subscribe": what triggered it
}

// Config holds jsm's policy knobs. cmd/pushd fills it from the config
// file; DefaultConfig documents each default.
type Config struct {
	// Domain is the local XMPP domain jsm serves (default "localhost").
	Domain string
	// ResumeTimeout is how long a detached stream may be resumed before its
	// device is closed (default 300 s); PushResumeTimeout applies instead
	// to devices with a push registration (M10).
	ResumeTimeout time.Duration
	// MobileResourcePrefixes mark a device as mobile by the start of its
	// resource when its caps don't say (default none: desktop).
	MobileResourcePrefixes []string
	// MobileCapsNodes mark a device as mobile by the XEP-0115 caps node of
	// its presence (default: the node URIs of Conversations, Monal and
	// Siskin).
	MobileCapsNodes []string
	// MaxOffline bounds each user's offline store (default 1000 messages);
	// past it the sender gets resource-constraint.
	MaxOffline int
	// PushResumeTimeout (added) is the hibernation of a device with a push
	// registration (default 24 h, M10).
	PushResumeTimeout time.Duration
	// PushCoalesce (added) is the minimum time between two notifications to
	// one device (default 2 s, M3): the first trigger is published at once,
	// later ones within the window are merged and published when it ends.
	PushCoalesce time.Duration
	// IncludeSender / IncludeBody (added) put last-message-sender and
	// last-message-body in clear notifications (default false). Encrypted
	// registrations and trusted app servers always get them.
	IncludeSender, IncludeBody bool
	// TrustedAppServers (added) are app server domains (pushd's own push
	// component) that get sender and body in clear (default none).
	TrustedAppServers []string
	// DesktopIdle (added) is how long every desktop device must have been
	// inactive before a suspended mobile device is pushed anyway (default
	// 300 s, M6 (b)).
	DesktopIdle time.Duration
	// MaxQueueEntries / MaxQueueBytes (added) bound each device queue
	// (default 10 000 stanzas, 64 MiB, M9).
	MaxQueueEntries int
	MaxQueueBytes   int64
	// Remote (added, H1), when set, says whether a user of the domain (a
	// bare JID) is served by another node of a cluster: stanzas for such
	// a user leave as Forward actions, and presence probes to them are
	// real probes. It must be a lookup in memory, without I/O (the
	// cluster's placement). Default nil: every user is served here.
	Remote func(user string) bool
}

// DefaultConfig returns jsm's defaults.
func DefaultConfig() Config {
	return Config{
		Domain:          "localhost",
		ResumeTimeout:   300 * time.Second,
		MobileCapsNodes: []string{"http://conversations.im", "https://monal-im.org/", "https://siskin.tigase.org"},
		MaxOffline:      1000,

		PushResumeTimeout: 24 * time.Hour,
		PushCoalesce:      2 * time.Second,
		DesktopIdle:       300 * time.Second,
		MaxQueueEntries:   10000,
		MaxQueueBytes:     64 << 20,
	}
}
