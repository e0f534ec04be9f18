package jsm

// Data-driven tests in the manner of etcd raft's testdata: each file in
// testdata/ is a script of commands (events in) and the actions that must
// come out, replayed on a fresh Machine with a fake clock. `go test ./jsm
// -update` rewrites the expected output from what the machine does; read
// the diff before committing it.
//
// Scripts are replayed by internal/scripttest. The harness also plays the
// router's stores, so that a script shows what a client would really
// receive:
//
//	init                  body: config k=v…, user JID, item USER CONTACT SUB [ask] [pending] [name=N] [group=G]…, offline USER N,
//	                      queue DEVICE FIRST LAST (a queue left in the store), registration DEVICE APPSERVER [NODE] [secret=S] [alg=A key=B64]
//	                      (a stored registration): both restore State.Queues / State.Registrations,
//	                      appserver answer (the harness answers every Publish with a result, as a working app server)
//	bind S JID            Bound
//	send S                body: one stanza; 'from' is stamped with S's JID as the router does
//	comp DOMAIN           body: one stanza from a component
//	up|down DOMAIN        ComponentUp / ComponentDown
//	ack S SEQ             Acked
//	detach S              Detached with what S was written and never acked
//	resume S H            Resumed
//	close S [clean] [sm]  Closed; with sm the unacked entries are passed
//	csi S active|inactive ClientState
//	incall USER DEVICE on|off  InCall (DEVICE "-" for any mobile device)
//	deadline              NextDeadline, relative to the script's start
//	advance DURATION      move the clock (no Step); tick: Step a Tick
//	useradd|userdel JID
//	devices JID / roster JID / queue DEVICE / offline JID: inspect
//	push JID              suspended state, queue counters and registrations of the user's devices
//	send S and comp DOMAIN take an optional size=N (StanzaIn/ComponentIn.Size)
//
// FlushOffline and LoadQueue are answered at once from the fake stores;
// their follow-up actions are shown indented under them.

import (
	"encoding/base64"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/scripttest"
	"pushd/internal/stanza"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actual output")

func TestScripts(t *testing.T) {
	scripttest.RunDir(t, "testdata", *update, func(t *testing.T) func(scripttest.Block) []string {
		h := newHarness()
		return func(b scripttest.Block) []string { return h.run(t, b) }
	})
}

// harness plays the router: streams, their unacked entries, and the queue
// and offline stores.
type harness struct {
	m       *Machine
	start   time.Time
	now     time.Time
	streams map[StreamID]string  // full JID per stream
	unacked map[StreamID][]Entry // written to a stream, not yet acked
	queues  map[string][]Entry   // the queue store, by device
	offline map[string][]*stanza.Element
	answer  bool // answer every Publish with an IQ result
}

func newHarness() *harness {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return &harness{
		m:       New(DefaultConfig(), State{}),
		start:   t0,
		now:     t0,
		streams: map[StreamID]string{},
		unacked: map[StreamID][]Entry{},
		queues:  map[string][]Entry{},
		offline: map[string][]*stanza.Element{},
	}
}

func (h *harness) run(t *testing.T, b scripttest.Block) []string {
	t.Helper()
	f := b.Fields()
	fail := func(format string, args ...any) []string {
		t.Fatalf("line %d: %s", b.Line, fmt.Sprintf(format, args...))
		return nil
	}
	arg := func(i int) string {
		if i >= len(f) {
			fail("%s: missing argument %d", f[0], i)
		}
		return f[i]
	}
	stream := func(i int) StreamID {
		n, err := strconv.ParseUint(arg(i), 10, 64)
		if err != nil {
			fail("bad stream %q", arg(i))
		}
		return StreamID(n)
	}
	mustJID := func(s string) jid.JID {
		j, err := jid.Parse(s)
		if err != nil {
			fail("bad JID %q: %v", s, err)
		}
		return j
	}
	xmlIn := func() *stanza.Element {
		r := stanza.NewReader(strings.NewReader("<stream xmlns='jabber:client'>"+strings.Join(b.Input, "")), stanza.DefaultLimits())
		if _, err := r.Header(); err != nil {
			fail("header: %v", err)
		}
		e, err := r.Next()
		if err != nil {
			fail("bad stanza: %v", err)
		}
		return e
	}
	switch f[0] {
	case "init":
		// A new machine: the router's streams and stores start empty too.
		*h = *newHarness()
		cfg, st := DefaultConfig(), State{Rosters: map[string][]RosterItem{}, Offline: map[string]int{}}
		for _, l := range b.Input {
			lf := strings.Fields(l)
			if len(lf) == 0 || strings.HasPrefix(lf[0], "#") {
				continue
			}
			switch lf[0] {
			case "config":
				for _, kv := range lf[1:] {
					k, v, _ := strings.Cut(kv, "=")
					switch k {
					case "domain":
						cfg.Domain = v
					case "resume":
						d, err := time.ParseDuration(v)
						if err != nil {
							fail("resume: %v", err)
						}
						cfg.ResumeTimeout = d
					case "maxoffline":
						cfg.MaxOffline, _ = strconv.Atoi(v)
					case "mobileprefix":
						cfg.MobileResourcePrefixes = append(cfg.MobileResourcePrefixes, v)
					case "pushresume", "coalesce", "desktopidle":
						d, err := time.ParseDuration(v)
						if err != nil {
							fail("%s: %v", k, err)
						}
						*map[string]*time.Duration{"pushresume": &cfg.PushResumeTimeout, "coalesce": &cfg.PushCoalesce, "desktopidle": &cfg.DesktopIdle}[k] = d
					case "includebody":
						cfg.IncludeBody = v == "true"
					case "includesender":
						cfg.IncludeSender = v == "true"
					case "trusted":
						cfg.TrustedAppServers = append(cfg.TrustedAppServers, v)
					case "maxqueue":
						cfg.MaxQueueEntries, _ = strconv.Atoi(v)
					case "maxbytes":
						n, _ := strconv.Atoi(v)
						cfg.MaxQueueBytes = int64(n)
					default:
						fail("unknown config %q", k)
					}
				}
			case "user":
				u := mustJID(lf[1])
				st.Users = append(st.Users, u)
				st.Offline[u.String()] = 0
			case "offline":
				n, _ := strconv.Atoi(lf[2])
				st.Offline[lf[1]] = n
				for i := range n {
					h.offline[lf[1]] = append(h.offline[lf[1]], stanza.New(stanza.NSClient, "message",
						"from", "old@localhost/x", "to", lf[1], "type", "chat").Add(
						stanza.New(stanza.NSClient, "body").AddText("stored "+strconv.Itoa(i+1))))
				}
			case "queue":
				first, _ := strconv.ParseUint(lf[2], 10, 64)
				last, _ := strconv.ParseUint(lf[3], 10, 64)
				if st.Queues == nil {
					st.Queues = map[string]QueueInfo{}
				}
				qi := QueueInfo{First: first, Last: last}
				for seq := first; seq <= last; seq++ {
					e := Entry{Seq: seq, Stanza: stanza.New(stanza.NSClient, "message", "from", "old@localhost/x", "to", lf[1], "type", "chat").Add(
						stanza.New(stanza.NSClient, "body").AddText("queued " + strconv.FormatUint(seq, 10)))}
					h.queues[lf[1]] = append(h.queues[lf[1]], e)
					qi.Count++
					qi.Bytes += int64(len(xmlString(e.Stanza)))
				}
				st.Queues[lf[1]] = qi
			case "registration":
				r := Registration{AppServer: mustJID(lf[2])}
				for _, o := range lf[3:] {
					k, v, ok := strings.Cut(o, "=")
					switch {
					case !ok:
						r.Node = o
					case k == "secret":
						r.Options = secretForm(v)
					case k == "alg":
						r.Encrypt = &Encryption{Alg: v}
					case k == "key":
						r.Encrypt.Key, _ = base64.StdEncoding.DecodeString(v)
					}
				}
				if st.Registrations == nil {
					st.Registrations = map[string][]Registration{}
				}
				st.Registrations[lf[1]] = append(st.Registrations[lf[1]], r)
			case "appserver":
				h.answer = lf[1] == "answer"
			case "item":
				it := RosterItem{JID: mustJID(lf[2]), Subscription: Subscription(lf[3])}
				for _, o := range lf[4:] {
					switch {
					case o == "ask":
						it.Ask = true
					case o == "pending":
						it.Pending = true
					case strings.HasPrefix(o, "name="):
						it.Name = o[5:]
					case strings.HasPrefix(o, "group="):
						it.Groups = append(it.Groups, o[6:])
					}
				}
				st.Rosters[lf[1]] = append(st.Rosters[lf[1]], it)
			default:
				fail("unknown init line %q", l)
			}
		}
		h.m = New(cfg, st)
		return nil
	case "bind":
		s := stream(1)
		h.streams[s] = arg(2)
		return h.step(Bound{Stream: s, JID: mustJID(arg(2))}, "")
	case "send":
		s := stream(1)
		e := xmlIn()
		e.Set("from", h.streams[s])
		return h.step(StanzaIn{Stream: s, Stanza: e, Size: sizeArg(f)}, "")
	case "comp":
		return h.step(ComponentIn{Domain: arg(1), Stanza: xmlIn(), Size: sizeArg(f)}, "")
	case "incall":
		dev := arg(2)
		if dev == "-" {
			dev = ""
		}
		return h.step(InCall{User: mustJID(arg(1)), Device: dev, Active: arg(3) == "on"}, "")
	case "deadline":
		d, ok := h.m.NextDeadline()
		if !ok {
			return []string{"none"}
		}
		return []string{"+" + d.Sub(h.start).String()}
	case "push":
		var out []string
		for _, d := range h.m.Devices(mustJID(arg(1))) {
			l := fmt.Sprintf("%s suspended=%t queued=%d bytes=%d", d.JID, d.Suspended, d.QueuedCount, d.QueuedBytes)
			for _, r := range d.Registrations {
				l += " reg=" + regString(r)
			}
			out = append(out, l)
		}
		return out
	case "up":
		return h.step(ComponentUp{Domain: arg(1)}, "")
	case "down":
		return h.step(ComponentDown{Domain: arg(1)}, "")
	case "manage":
		return h.step(Managed{Stream: stream(1)}, "")
	case "ack":
		s := stream(1)
		n, _ := strconv.ParseUint(arg(2), 10, 64)
		h.trimUnacked(s, n)
		return h.step(Acked{Stream: s, Seq: n}, "")
	case "detach":
		s := stream(1)
		un := h.unacked[s]
		delete(h.unacked, s)
		return h.step(Detached{Stream: s, Unacked: un}, "")
	case "resume":
		s := stream(1)
		n, _ := strconv.ParseUint(arg(2), 10, 64)
		return h.step(Resumed{Stream: s, AckedSeq: n}, "")
	case "close":
		s := stream(1)
		ev := Closed{Stream: s, Clean: slices.Contains(f, "clean")}
		if slices.Contains(f, "sm") {
			ev.Unacked = h.unacked[s]
		}
		delete(h.unacked, s)
		return h.step(ev, "")
	case "csi":
		return h.step(ClientState{Stream: stream(1), Active: arg(2) == "active"}, "")
	case "advance":
		d, err := time.ParseDuration(arg(1))
		if err != nil {
			fail("advance: %v", err)
		}
		h.now = h.now.Add(d)
		return nil
	case "tick":
		return h.step(Tick{}, "")
	case "useradd":
		return h.step(UserAdded{User: mustJID(arg(1))}, "")
	case "userdel":
		return h.step(UserDeleted{User: mustJID(arg(1))}, "")
	case "devices":
		var out []string
		for _, d := range h.m.Devices(mustJID(arg(1))) {
			out = append(out, fmt.Sprintf("%s s=%d %s avail=%t detached=%t active=%t carbons=%t prio=%d show=%q seq=%d acked=%d queued=%t",
				d.JID, d.Stream, d.Kind, d.Available, d.Detached, d.Active, d.Carbons, d.Priority, d.Show, d.Seq, d.Acked, d.Queued))
		}
		return out
	case "roster":
		var out []string
		for _, it := range h.m.Roster(mustJID(arg(1))) {
			out = append(out, itemString(it))
		}
		return out
	case "queue":
		var out []string
		for _, e := range h.queues[arg(1)] {
			out = append(out, fmt.Sprintf("#%d %s", e.Seq, xmlString(e.Stanza)))
		}
		return out
	case "offline":
		var out []string
		for _, e := range h.offline[arg(1)] {
			out = append(out, xmlString(e))
		}
		return out
	}
	return fail("unknown command %q", f[0])
}

func (h *harness) trimUnacked(s StreamID, through uint64) {
	un := h.unacked[s]
	i := 0
	for i < len(un) && un[i].Seq <= through {
		i++
	}
	h.unacked[s] = un[i:]
}

// step runs one event and carries out its actions as the router would,
// returning them as text.
func (h *harness) step(ev Event, indent string) []string {
	var out []string
	for _, a := range h.m.Step(h.now, ev) {
		switch a := a.(type) {
		case Deliver:
			h.unacked[a.Stream] = append(h.unacked[a.Stream], a.Entry)
			out = append(out, fmt.Sprintf("%sdeliver s=%d #%d %s", indent, a.Stream, a.Entry.Seq, xmlString(a.Entry.Stanza)))
		case Enqueue:
			for _, e := range a.Entries {
				q := h.queues[a.Device]
				if slices.ContainsFunc(q, func(x Entry) bool { return x.Seq == e.Seq }) {
					continue
				}
				q = append(q, e)
				slices.SortFunc(q, func(x, y Entry) int { return int(x.Seq) - int(y.Seq) })
				h.queues[a.Device] = q
				out = append(out, fmt.Sprintf("%senqueue %s #%d %s", indent, a.Device, e.Seq, xmlString(e.Stanza)))
			}
		case Flush:
			out = append(out, fmt.Sprintf("%sflush s=%d %s from=%d", indent, a.Stream, a.Device, a.From))
			for _, e := range h.queues[a.Device] {
				if e.Seq >= a.From {
					h.unacked[a.Stream] = append(h.unacked[a.Stream], e)
					out = append(out, fmt.Sprintf("%s  deliver s=%d #%d %s", indent, a.Stream, e.Seq, xmlString(e.Stanza)))
				}
			}
		case Trim:
			q := h.queues[a.Device]
			q = slices.DeleteFunc(q, func(e Entry) bool { return e.Seq <= a.Through })
			h.queues[a.Device] = q
			out = append(out, fmt.Sprintf("%strim %s through=%d", indent, a.Device, a.Through))
		case DropQueue:
			delete(h.queues, a.Device)
			out = append(out, fmt.Sprintf("%sdrop-queue %s", indent, a.Device))
		case LoadQueue:
			out = append(out, fmt.Sprintf("%sload-queue %s", indent, a.Device))
			out = append(out, h.step(QueueLoaded{Device: a.Device, Entries: slices.Clone(h.queues[a.Device])}, indent+"  ")...)
		case StoreOffline:
			k := a.User.String()
			h.offline[k] = append(h.offline[k], a.Message)
			out = append(out, fmt.Sprintf("%sstore-offline %s %s", indent, a.User, xmlString(a.Message)))
		case FlushOffline:
			k := a.User.String()
			msgs := h.offline[k]
			delete(h.offline, k)
			out = append(out, fmt.Sprintf("%sflush-offline s=%d %s (%d)", indent, a.Stream, a.User, len(msgs)))
			out = append(out, h.step(OfflineLoaded{Stream: a.Stream, Messages: msgs}, indent+"  ")...)
		case SaveRosterItem:
			out = append(out, fmt.Sprintf("%ssave-roster %s %s", indent, a.User, itemString(a.Item)))
		case DeleteRosterItem:
			out = append(out, fmt.Sprintf("%sdelete-roster %s %s", indent, a.User, a.Contact))
		case CloseStream:
			delete(h.unacked, a.Stream)
			out = append(out, strings.TrimRight(fmt.Sprintf("%sclose s=%d %s", indent, a.Stream, a.Condition), " "))
		case ToComponent:
			out = append(out, fmt.Sprintf("%sto-component %s %s", indent, a.Domain, xmlString(a.Stanza)))
		case SaveRegistration:
			out = append(out, fmt.Sprintf("%ssave-registration %s %s", indent, a.Device, regString(a.Registration)))
		case DeleteRegistration:
			out = append(out, fmt.Sprintf("%sdelete-registration %s %s node=%q", indent, a.Device, a.AppServer, a.Node))
		case Remove:
			q := h.queues[a.Device]
			q = slices.DeleteFunc(q, func(e Entry) bool { return slices.Contains(a.Seqs, e.Seq) })
			h.queues[a.Device] = q
			out = append(out, fmt.Sprintf("%sremove %s %v", indent, a.Device, a.Seqs))
		case Publish:
			enc := ""
			if a.Encrypt != nil {
				enc = " encrypt=" + a.Encrypt.Alg
			}
			sm := a.Summary
			out = append(out, fmt.Sprintf("%spublish %s domain=%s%s summary=[count=%d subs=%d sender=%q nick=%q body=%q type=%s] %s",
				indent, a.Device, a.Domain, enc, sm.Count, sm.PendingSubscriptions, sm.Sender, sm.Nick, sm.Body, sm.Type, xmlString(a.Stanza)))
			if h.answer {
				res := stanza.New(stanza.NSClient, "iq", "type", "result", "id", a.Stanza.Get("id"),
					"from", a.Stanza.Get("to"), "to", a.Stanza.Get("from"))
				out = append(out, h.step(ComponentIn{Domain: a.Domain, Stanza: res}, indent+"  ")...)
			}
		case PushDisabled:
			out = append(out, fmt.Sprintf("%spush-disabled %s %s node=%q reason=%s", indent, a.Device, a.AppServer, a.Node, a.Reason))
		case Pushed:
			out = append(out, fmt.Sprintf("%spushed s=%d %s through=%d", indent, a.Stream, a.Device, a.Through))
		default:
			out = append(out, fmt.Sprintf("%sunknown action %T", indent, a))
		}
	}
	return out
}

func sizeArg(f []string) int {
	for _, a := range f {
		if v, ok := strings.CutPrefix(a, "size="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// secretForm is the publish-options form clients send with <enable/>.
func secretForm(secret string) *stanza.Element {
	return stanza.New(nsData, "x", "type", "submit").Add(
		stanza.New(nsData, "field", "var", "FORM_TYPE").Add(stanza.New(nsData, "value").AddText("http://jabber.org/protocol/pubsub#publish-options")),
		stanza.New(nsData, "field", "var", "secret").Add(stanza.New(nsData, "value").AddText(secret)))
}

func regString(r Registration) string {
	s := r.AppServer.String() + "/" + r.Node
	if r.Options != nil {
		s += " options=" + xmlString(r.Options)
	}
	if r.Encrypt != nil {
		s += fmt.Sprintf(" encrypt=%s:%d", r.Encrypt.Alg, len(r.Encrypt.Key))
	}
	return s
}

func xmlString(e *stanza.Element) string { return string(stanza.Marshal(e, stanza.NSClient)) }

func itemString(it RosterItem) string {
	s := it.JID.String() + " sub=" + string(it.Subscription)
	if it.Ask {
		s += " ask"
	}
	if it.Pending {
		s += " pending"
	}
	if it.Name != "" {
		s += " name=" + it.Name
	}
	for _, g := range it.Groups {
		s += " group=" + g
	}
	return s
}
