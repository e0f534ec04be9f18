package peertest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BaresipModulesDir is where Debian installs baresip's modules.
const BaresipModulesDir = "/usr/lib/baresip/modules"

// baresipModules are the modules StartBaresip loads: G.711, a sound
// device that is none, the account loader, the accept and hangup
// commands, and the control socket.
var baresipModules = []string{"g711.so", "aubridge.so", "account.so", "menu.so", "ctrl_tcp.so"}

// BaresipOptions configure a throwaway baresip 1.0 user agent.
type BaresipOptions struct {
	// Registrar is the host:port of the registrar it REGISTERs to over
	// UDP; its account is sip:User@Registrar.
	Registrar string
	// User and Password are the account's digest credentials (no ';' or
	// '>' in the password: it sits in baresip's account line).
	User, Password string
	// Expires is the registration interval (default 600 s).
	Expires time.Duration
}

// Baresip is a running baresip driven through its ctrl_tcp module.
type Baresip struct {
	*Process
	// SIPAddr is where it takes calls (UDP on 127.0.0.1).
	SIPAddr string
	// AOR is the account as baresip names it in its events.
	AOR string

	ctrl      net.Conn
	responses chan baresipResponse
	mu        sync.Mutex
	events    []BaresipEvent
	changed   chan struct{} // closed and replaced on each event
}

// BaresipEvent is one event ctrl_tcp reports (a call or registration
// changed state).
type BaresipEvent struct {
	// Type is e.g. REGISTER_OK, REGISTER_FAIL, CALL_INCOMING,
	// CALL_ESTABLISHED, CALL_CLOSED.
	Type    string `json:"type"`
	Class   string `json:"class"`
	AOR     string `json:"accountaor"`
	PeerURI string `json:"peeruri"`
	Param   string `json:"param"`
}

type baresipResponse struct {
	OK    bool   `json:"ok"`
	Data  string `json:"data"`
	Token string `json:"token"`
}

// StartBaresip starts baresip (Debian baresip 1.0) on 127.0.0.1 with its
// own config directory, and registers its account once the control
// connection is up, so that no event is missed. It returns when the
// registrar has answered 200; the process is stopped on cleanup.
//
// No sound device is touched: aubridge stands in for the player and the
// source, and the calls carry G.711 only.
func StartBaresip(t testing.TB, opts BaresipOptions) *Baresip {
	t.Helper()
	RequirePeer(t, PeerBaresip)
	if opts.Expires == 0 {
		opts.Expires = 600 * time.Second
	}
	dir := t.TempDir()
	sipPort, ctrlPort := FreeUDPPort(t), FreePort(t)
	b := &Baresip{SIPAddr: Loopback(sipPort), AOR: "sip:" + opts.User + "@" + opts.Registrar,
		responses: make(chan baresipResponse, 16), changed: make(chan struct{})}
	// The account comes later through uanew: baresip registers an
	// account from its accounts file before ctrl_tcp listens.
	config := strings.Join([]string{
		"poll_method epoll",
		"sip_listen " + b.SIPAddr,
		"sip_transports udp",
		// Its Contact and SDP carry this address; left to itself it
		// would take the host's default interface's.
		"net_interface 127.0.0.1",
		"audio_player aubridge,pushd",
		"audio_source aubridge,pushd",
		"audio_alert aubridge,pushd",
		"module_path " + BaresipModulesDir,
		"module g711.so",
		"module aubridge.so",
		"module_tmp account.so",
		"module_app menu.so",
		"module_app ctrl_tcp.so",
		"ctrl_tcp_listen " + Loopback(ctrlPort),
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// -s: the SIP trace goes to the test log.
	cmd := exec.Command("baresip", "-f", dir, "-s")
	cmd.Dir = dir
	b.Process = Start(t, "baresip", cmd)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitPort(ctx, Loopback(ctrlPort), b.Exited); err != nil {
		t.Fatalf("peertest: baresip did not start: %v", err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", Loopback(ctrlPort))
	if err != nil {
		t.Fatalf("peertest: baresip ctrl_tcp: %v", err)
	}
	b.ctrl = c
	readDone := make(chan struct{})
	go func() { b.read(t); close(readDone) }()
	// Before the process is stopped (cleanups run last first), and the
	// reader gone before the test ends: it may log.
	t.Cleanup(func() { c.Close(); <-readDone })

	account := fmt.Sprintf("<sip:%s@%s;transport=udp>;auth_pass=%s;regint=%d;mwi=no;pubint=0;answermode=manual;audio_codecs=pcmu,pcma",
		opts.User, opts.Registrar, opts.Password, int(opts.Expires/time.Second))
	b.Command(t, "uanew", account)
	ev := b.WaitEvent(t, 20*time.Second, "REGISTER_OK", "REGISTER_FAIL")
	if ev.Type != "REGISTER_OK" {
		t.Fatalf("peertest: baresip did not register: %s %s", ev.Type, ev.Param)
	}
	return b
}

// read takes ctrl_tcp's netstrings (length:json,) apart into events and
// command responses until the connection closes.
func (b *Baresip) read(t testing.TB) {
	r := bufio.NewReader(b.ctrl)
	for {
		msg, err := readNetstring(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && b.Exited() == nil {
				t.Logf("peertest: baresip ctrl_tcp: %v", err)
			}
			close(b.responses)
			return
		}
		var head struct {
			Event    bool `json:"event"`
			Response bool `json:"response"`
		}
		if err := json.Unmarshal(msg, &head); err != nil {
			t.Logf("peertest: baresip ctrl_tcp: %v: %q", err, msg)
			continue
		}
		switch {
		case head.Event:
			var ev BaresipEvent
			_ = json.Unmarshal(msg, &ev)
			b.mu.Lock()
			b.events = append(b.events, ev)
			close(b.changed)
			b.changed = make(chan struct{})
			b.mu.Unlock()
		case head.Response:
			var res baresipResponse
			_ = json.Unmarshal(msg, &res)
			select {
			case b.responses <- res:
			default: // nobody waits for it: a command that timed out
			}
		}
	}
}

// readNetstring reads one "<len>:<bytes>," frame.
func readNetstring(r *bufio.Reader) ([]byte, error) {
	head, err := r.ReadString(':')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[:len(head)-1]))
	if err != nil || n < 0 || n > 1<<20 {
		return nil, fmt.Errorf("bad netstring length %q", head)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	if buf[n] != ',' {
		return nil, fmt.Errorf("netstring not ended by ','")
	}
	return buf[:n], nil
}

// Command runs one baresip command (e.g. "accept", "hangup") and returns
// what it printed; a refused command fails the test.
func (b *Baresip) Command(t testing.TB, command, params string) string {
	t.Helper()
	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	msg, _ := json.Marshal(map[string]string{"command": command, "params": params, "token": token})
	frame := strconv.Itoa(len(msg)) + ":" + string(msg) + ","
	if _, err := io.WriteString(b.ctrl, frame); err != nil {
		t.Fatalf("peertest: baresip %s: %v", command, err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case res, ok := <-b.responses:
			if !ok {
				t.Fatalf("peertest: baresip %s: control connection closed (%v)", command, b.Exited())
			}
			if res.Token != token {
				continue // the answer to an earlier command that timed out
			}
			if !res.OK {
				t.Fatalf("peertest: baresip %s refused: %s", command, res.Data)
			}
			return res.Data
		case <-timeout:
			t.Fatalf("peertest: baresip %s: no answer", command)
		}
	}
}

// WaitEvent waits for the next event of one of the types given (events
// before the last one returned are not looked at again) and returns it.
func (b *Baresip) WaitEvent(t testing.TB, timeout time.Duration, types ...string) BaresipEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		b.mu.Lock()
		for i, ev := range b.events {
			for _, typ := range types {
				if ev.Type == typ {
					b.events = b.events[i+1:]
					b.mu.Unlock()
					return ev
				}
			}
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-b.Done():
			t.Fatalf("peertest: baresip exited waiting for %v: %v", types, b.Err())
		case <-deadline:
			t.Fatalf("peertest: baresip: no %v in %s", types, timeout)
		}
	}
}
