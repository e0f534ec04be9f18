package sip

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"pushd/component/sip/call"
)

// onRegister is the registrar (RFC 3261 §10.3 with RFC 8599): digest
// authentication, then the contacts' bindings, RFC 8599 parameters and
// the answer with every binding of the AOR. A push binding registering
// tells the machine, which forks a held call to it (C3).
func (s *Server) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	to := req.To()
	if to == nil || to.Address.User == "" {
		s.reply(tx, req, 400, "Bad Request")
		return
	}
	if !s.ourDomain(to.Address.Host) {
		s.reply(tx, req, 404, "Not Found")
		return
	}
	user, ok := s.auth.check(s, req, tx, false)
	if !ok {
		return
	}
	if !strings.EqualFold(user, to.Address.User) {
		// Alice's credentials do not register Bob's phone.
		s.count("register_forbidden")
		s.reply(tx, req, 403, "Forbidden")
		return
	}
	aor := aorOf(to.Address.User, s.cfg.Domain)
	now := s.cfg.Now()
	u, query, res := s.parseContacts(req, aor, now)
	if res != nil {
		_ = tx.Respond(res)
		return
	}
	bindings, err := s.reg.Apply(aor, u, now)
	if errors.Is(err, ErrOutOfOrder) {
		s.reply(tx, req, 500, "Server Internal Error") // §10.3 7: retransmission out of order
		return
	}
	if errors.Is(err, ErrTooManyBindings) {
		s.count("register_too_many")
		s.reply(tx, req, 403, "Too Many Bindings")
		return
	}
	if err != nil {
		s.log.Error("sip: register", "err", err, "aor", s.red.Token(aor))
		s.reply(tx, req, 500, "Server Internal Error")
		return
	}
	ok200 := s.registered(req, bindings, now, query, u.Store)
	if strings.EqualFold(req.Transport(), "udp") && messageSize(ok200) > maxUDPResponse {
		// §10.3 8 wants every binding listed, but a 200 that does not go
		// out helps nobody: over UDP the phone hears of its own.
		ok200 = s.registered(req, u.Store, now, query, u.Store)
		if messageSize(ok200) > maxUDPResponse {
			ok200 = s.registered(req, nil, now, query, u.Store)
		}
	}
	_ = tx.Respond(ok200)
	s.count("register")
	for _, b := range u.Store {
		s.step(call.Registered{AOR: aor, Binding: s.machineBinding(b)})
	}
}

// maxUDPResponse is the largest response sipgo sends over UDP (RFC 3261
// §18.1.1: 200 bytes under a 1500-byte MTU).
const maxUDPResponse = 1300

// registered is the 200 of a REGISTER listing bindings, with the
// Feature-Caps RFC 8599 asks for: the providers for a query, the refresh
// interval when a stored push binding asked for +sip.pnsreg.
func (s *Server) registered(req *sip.Request, bindings []Binding, now time.Time, query bool, stored []Binding) *sip.Response {
	ok200 := sip.NewResponseFromRequest(req, 200, "OK", nil)
	for _, b := range bindings {
		if !now.Before(b.Expires) {
			continue
		}
		secs := int(b.Expires.Sub(now).Round(time.Second) / time.Second)
		ok200.AppendHeader(sip.NewHeader("Contact", "<"+b.Contact+">;expires="+strconv.Itoa(secs)+instanceParam(b)))
	}
	if query {
		// RFC 8599 §4.1.1: one Feature-Caps per provider we push through.
		for _, p := range s.cfg.Providers {
			ok200.AppendHeader(sip.NewHeader("Feature-Caps", `*;+sip.pns="`+string(p)+`"`))
		}
	}
	for _, b := range stored {
		if b.PNSReg && b.Push != nil {
			secs := int(s.cfg.RefreshPushBefore / time.Second)
			ok200.AppendHeader(sip.NewHeader("Feature-Caps", `*;+sip.pnsreg="`+strconv.Itoa(secs)+`"`))
			break
		}
	}
	ok200.AppendHeader(sip.NewHeader("Date", now.UTC().Format(time.RFC1123)))
	return ok200
}

// parseContacts turns a REGISTER's Contact headers into an Update. A
// non-nil response is the error to send instead (400, 423, 555).
func (s *Server) parseContacts(req *sip.Request, aor string, now time.Time) (u Update, query bool, res *sip.Response) {
	headerExpires := -1
	if h := req.GetHeader("Expires"); h != nil {
		n, ok := deltaSeconds(h.Value())
		if !ok {
			return u, false, sip.NewResponseFromRequest(req, 400, "Bad Expires", nil)
		}
		headerExpires = n
	}
	callID, cseq := "", uint32(0)
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	if h := req.CSeq(); h != nil {
		cseq = h.SeqNo
	}
	contacts := req.GetHeaders("Contact")
	if len(contacts) > 16 {
		return u, false, sip.NewResponseFromRequest(req, 400, "Too Many Contacts", nil)
	}
	for _, h := range contacts {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			return u, false, sip.NewResponseFromRequest(req, 400, "Bad Contact", nil)
		}
		if c.Address.Wildcard {
			// "Contact: *" only with Expires: 0 and alone (§10.3 6).
			if headerExpires != 0 || len(contacts) != 1 {
				return u, false, sip.NewResponseFromRequest(req, 400, "Bad Wildcard", nil)
			}
			u.RemoveAll = true
			return u, false, nil
		}
		if c.Address.Scheme != "sip" && c.Address.Scheme != "sips" || c.Address.Host == "" {
			// pushd calls its bindings over SIP: a tel: or mailto:
			// contact has no host, and its branches went to ":5060".
			return u, false, sip.NewResponseFromRequest(req, 400, "Bad Contact", nil)
		}
		expires := headerExpires
		if v, ok := param(c.Params, "expires"); ok {
			n, ok := deltaSeconds(v)
			if !ok {
				return u, false, sip.NewResponseFromRequest(req, 400, "Bad Expires", nil)
			}
			expires = n
		}
		life := s.cfg.DefaultExpires
		if expires >= 0 {
			life = time.Duration(expires) * time.Second
		}
		push, q, err := contactPush(func(name string) (string, bool) { return param(c.Address.UriParams, name) }, s.cfg.Providers)
		if err != nil {
			s.count("register_555")
			r := sip.NewResponseFromRequest(req, 555, "Push Notification Service Not Supported", nil)
			for _, p := range s.cfg.Providers {
				r.AppendHeader(sip.NewHeader("Feature-Caps", `*;+sip.pns="`+string(p)+`"`))
			}
			return u, false, r
		}
		query = query || q
		b := Binding{AOR: aor, Transport: strings.ToLower(req.Transport()), Source: req.Source(), Push: push,
			CallID: callID, CSeq: cseq, Updated: now}
		b.Instance, _ = param(c.Params, "+sip.instance")
		b.Instance = strings.Trim(b.Instance, `"`)
		_, b.PNSReg = param(c.Params, "+sip.pnsreg")
		if k, ok := param(c.Address.UriParams, "pn-pushd-key"); ok {
			if b.Transport != "tls" {
				// A key sent in clear is no secret: refuse rather than
				// seal pushes under it (S2).
				return u, false, sip.NewResponseFromRequest(req, 403, "Key Requires TLS", nil)
			}
			key, err := contactKey(k)
			if err != nil {
				return u, false, sip.NewResponseFromRequest(req, 400, "Bad pn-pushd-key", nil)
			}
			b.Key = key
		}
		b.Contact = contactURI(c.Address)
		var back sip.Uri
		if err := sip.ParseUri(b.Contact, &back); err != nil || back.Host == "" {
			// A contact sipgo parses but does not read back the same
			// (sip:@0;[ and sip:@@, found by FuzzRegister) could never
			// be called.
			return u, false, sip.NewResponseFromRequest(req, 400, "Bad Contact", nil)
		}
		b.ID = b.Contact
		if b.Instance != "" {
			b.ID = b.Instance
			if rid, ok := param(c.Params, "reg-id"); ok {
				b.ID += ";" + rid
			}
		}
		if life == 0 {
			u.Remove = append(u.Remove, b.ID)
			continue
		}
		if life < s.cfg.MinExpires {
			r := sip.NewResponseFromRequest(req, 423, "Interval Too Brief", nil)
			r.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(int(s.cfg.MinExpires/time.Second))))
			return u, false, r
		}
		b.Expires = now.Add(min(life, s.cfg.MaxExpires))
		u.Store = append(u.Store, b)
	}
	return u, query, nil
}

// deltaSeconds reads an expires value (RFC 3261 §25.1: digits). One past
// 2^32-1 counts as that (§20.19), so that a huge value is a long
// registration, cut to the maximum, not a Duration that overflows into
// a negative one.
func deltaSeconds(v string) (int, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	const most = 1<<32 - 1
	n := 0
	for i := range len(v) {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = min(n*10+int(c-'0'), most)
	}
	return n, true
}

// contactURI is the contact as we will call it: pushd's own key parameter
// never goes back on the wire.
func contactURI(u sip.Uri) string {
	c := u
	c.UriParams = nil
	for _, p := range u.UriParams {
		if !strings.EqualFold(p.K, "pn-pushd-key") {
			c.UriParams = append(c.UriParams, p)
		}
	}
	c.Headers = nil
	return c.String()
}

// param looks a parameter up by name in any case: names of URI and
// header parameters are case-insensitive (RFC 3261 §19.1.4, §7.3.1), and
// a phone writing PN-Provider is still asking for pushes.
func param(ps sip.HeaderParams, name string) (string, bool) {
	for _, p := range ps {
		if strings.EqualFold(p.K, name) {
			return p.V, true
		}
	}
	return "", false
}

func instanceParam(b Binding) string {
	if b.Instance == "" {
		return ""
	}
	return `;+sip.instance="` + b.Instance + `"`
}

func (s *Server) ourDomain(host string) bool {
	host = strings.ToLower(host)
	if host == strings.ToLower(s.cfg.Domain) {
		return true
	}
	ah, _, _ := strings.Cut(s.cfg.Advertise, ":")
	return host == ah || host == "127.0.0.1" && ah == "localhost"
}

// machineBinding is the call machine's view of a binding. A push binding
// on UDP is asleep until it registers again; one whose connection is
// still open is live (the app is in the foreground, C2: it rings and is
// pushed).
func (s *Server) machineBinding(b Binding) call.Binding {
	live := b.Push == nil
	if !live && b.Transport != "udp" {
		if c, _ := s.ua.TransportLayer().GetConnection(b.Transport, b.Source); c != nil {
			live = true
		}
	}
	return call.Binding{ID: b.ID, Device: b.Device(), Push: b.Push != nil, Live: live}
}

func (s *Server) reply(tx sip.ServerTransaction, req *sip.Request, code int, reason string) {
	_ = tx.Respond(sip.NewResponseFromRequest(req, code, reason, nil))
}
