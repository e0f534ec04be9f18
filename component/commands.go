package component

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/stanza"
)

// Command nodes (XEP-0050). The p2 family is what Conversations and other
// p2 clients send; the Tigase family is Siskin's / Beagle's.
const (
	CmdRegisterAPNS     = "register-push-apns"
	CmdRegisterFCM      = "register-push-fcm"
	CmdUnregisterAPNS   = "unregister-push-apns"
	CmdUnregisterFCM    = "unregister-push-fcm"
	CmdRegisterDevice   = "register-device"
	CmdUnregisterDevice = "unregister-device"
)

type command struct {
	node     string
	name     string
	provider dispatch.ProviderName // fixed for p2; "" means the form says (Tigase)
	register bool
	family   string // "p2" or "tigase"
}

var commands = []command{
	{CmdRegisterAPNS, "Register an iOS device (APNS)", dispatch.APNS, true, "p2"},
	{CmdRegisterFCM, "Register an Android device (FCM)", dispatch.FCM, true, "p2"},
	{CmdUnregisterAPNS, "Unregister an iOS device (APNS)", dispatch.APNS, false, "p2"},
	{CmdUnregisterFCM, "Unregister an Android device (FCM)", dispatch.FCM, false, "p2"},
	{CmdRegisterDevice, "Register a device", "", true, "tigase"},
	{CmdUnregisterDevice, "Unregister a device", "", false, "tigase"},
}

func lookupCommand(node string) (command, bool) {
	for _, c := range commands {
		if c.node == node {
			return c, true
		}
	}
	return command{}, false
}

// maxTokenLen bounds provider tokens (APNS: 64 hex digits today, FCM about
// 160 characters; both may grow).
const maxTokenLen = 1024

// badPayload is the XEP-0050 error for a form that cannot be used.
func badPayload(text string) *stanzaError {
	return &stanzaError{Type: "modify", Condition: "bad-request", Text: text,
		App: stanza.New(nsCommands, "bad-payload")}
}

// parseProvider reads a Tigase provider id ("tigase:messenger:apns:1",
// "apns", "fcm", "tigase:messenger:fcm:1", …).
func parseProvider(s string) (dispatch.ProviderName, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "apns" || strings.Contains(s, ":apns"):
		return dispatch.APNS, true
	case s == "fcm" || s == "gcm" || strings.Contains(s, ":fcm") || strings.Contains(s, ":gcm"):
		return dispatch.FCM, true
	}
	return "", false
}

func validToken(t string) bool {
	if t == "" || len(t) > maxTokenLen {
		return false
	}
	return !strings.ContainsAny(t, " \t\r\n/")
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	}
	return false, fmt.Errorf("not a boolean: %q", s)
}

// parseRegister turns a submitted register form into a request for
// account (a bare JID).
func parseRegister(c command, account string, f form) (RegisterRequest, error) {
	req := RegisterRequest{Account: account, Provider: c.provider, Command: c.family}
	switch c.family {
	case "p2":
		req.Token = f.get("token")
		req.DeviceID = f.get("device-id")
	default:
		p, ok := parseProvider(f.get("provider"))
		if !ok {
			return req, errors.New("unknown provider")
		}
		req.Provider = p
		req.Token = f.get("device-token")
		req.DeviceID = f.get("device-id")
		if v := f.get("device-second-token"); v != "" {
			req.VoIPToken = &v
		}
	}
	if !validToken(req.Token) {
		return req, errors.New("missing or malformed token")
	}
	if req.DeviceID == "" {
		req.DeviceID = req.Token // Tigase identifies a device by its token
	}
	if len(req.DeviceID) > 256 {
		return req, errors.New("device-id too long")
	}
	if f.has("voip-token") {
		v := f.get("voip-token")
		req.VoIPToken = &v
	}
	if req.VoIPToken != nil && *req.VoIPToken != "" && !validToken(*req.VoIPToken) {
		return req, errors.New("malformed voip-token")
	}
	if f.has("key") && f.get("key") != "" {
		k, err := payload.KeyFromBase64(f.get("key"))
		if err != nil {
			return req, errors.New("key must be base64 of 32 bytes")
		}
		req.Key = &k
	}
	for _, v := range f.fields["channels"] {
		for _, ch := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
			c := payload.Channel(strings.ToLower(ch))
			if !c.Valid() {
				return req, fmt.Errorf("unknown channel %q", ch)
			}
			req.Channels = append(req.Channels, c)
		}
	}
	req.Region = strings.ToUpper(f.get("region"))
	if len(req.Region) > 8 {
		return req, errors.New("malformed region")
	}
	legacy, err := parseBool(f.get("legacy-single-channel"))
	if err != nil {
		return req, err
	}
	req.LegacySingleChannel = legacy
	switch k := strings.ToLower(f.get("kind")); k {
	case "", "mobile", "desktop":
		req.Kind = k
	default:
		return req, fmt.Errorf("unknown kind %q", k)
	}
	return req, nil
}

// unregisterRequest is what an unregister form names.
type unregisterRequest struct {
	DeviceID, Token string
	Provider        dispatch.ProviderName
}

func parseUnregister(c command, f form) (unregisterRequest, error) {
	req := unregisterRequest{Provider: c.provider}
	switch c.family {
	case "p2":
		req.DeviceID, req.Token = f.get("device-id"), f.get("token")
	default:
		if p := f.get("provider"); p != "" {
			prov, ok := parseProvider(p)
			if !ok {
				return req, errors.New("unknown provider")
			}
			req.Provider = prov
		}
		req.DeviceID, req.Token = f.get("device-id"), f.get("device-token")
	}
	if req.DeviceID == "" && req.Token == "" {
		return req, errors.New("device-id or token required")
	}
	return req, nil
}

var extensionFields = []formField{
	{Var: "key", Type: "text-private", Label: "Device AES-256 key (base64)"},
	{Var: "voip-token", Type: "text-single", Label: "VoIP (PushKit) token"},
	{Var: "channels", Type: "list-multi", Label: "Channels", Options: []string{"message", "voip"}},
	{Var: "region", Type: "text-single", Label: "Region (CN: no CallKit)"},
	{Var: "legacy-single-channel", Type: "boolean", Label: "One channel for calls and messages (iOS 12)"},
	{Var: "kind", Type: "list-single", Label: "Device kind", Options: []string{"mobile", "desktop"}},
}

// commandForm is the form a multi-step execution answers with.
func commandForm(c command) *stanza.Element {
	var fields []formField
	switch {
	case c.family == "p2" && c.register:
		fields = []formField{
			{Var: "token", Type: "text-single", Label: "Device token", Required: true},
			{Var: "device-id", Type: "text-single", Label: "Device id", Required: true},
		}
		fields = append(fields, extensionFields...)
	case c.family == "p2":
		fields = []formField{
			{Var: "device-id", Type: "text-single", Label: "Device id"},
			{Var: "token", Type: "text-single", Label: "Device token"},
		}
	case c.register:
		fields = []formField{
			{Var: "provider", Type: "text-single", Label: "Provider", Required: true},
			{Var: "device-token", Type: "text-single", Label: "Device token", Required: true},
			{Var: "device-second-token", Type: "text-single", Label: "VoIP token"},
			{Var: "device-id", Type: "text-single", Label: "Device id"},
		}
		fields = append(fields, extensionFields...)
	default:
		fields = []formField{
			{Var: "provider", Type: "text-single", Label: "Provider"},
			{Var: "device-token", Type: "text-single", Label: "Device token", Required: true},
		}
	}
	return buildForm("form", c.name, "", fields)
}

// cmdSessions holds multi-step executions between their steps.
type cmdSessions struct {
	mu  sync.Mutex
	m   map[string]cmdSession
	ttl time.Duration
	max int
}

type cmdSession struct {
	node    string
	from    string
	expires time.Time
}

func (s *cmdSessions) start(now time.Time, node, from string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]cmdSession{}
	}
	for id, v := range s.m {
		if now.After(v.expires) {
			delete(s.m, id)
		}
	}
	if len(s.m) >= s.max {
		return "", false
	}
	id := randomString(12)
	s.m[id] = cmdSession{node: node, from: from, expires: now.Add(s.ttl)}
	return id, true
}

// take ends session id if it belongs to from and node and has not expired.
func (s *cmdSessions) take(now time.Time, id, node, from string) (found, expired bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[id]
	if !ok || v.node != node || v.from != from {
		return false, false
	}
	delete(s.m, id)
	if now.After(v.expires) {
		return true, true
	}
	return true, false
}
