package peertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Free ports come from below the kernel's ephemeral range: a port the
// kernel hands out for ":0" is one it also hands out as the source port
// of any outgoing connection, by any process, so a port chosen that way
// and given to a server a moment later is taken now and then (a
// "bind: address already in use" in a parallel test run). Below the
// range only other listeners compete, and a random pick makes two
// parallel tests choosing the same one unlikely.

// portRange is where free ports are picked: below the ephemeral range.
func portRange() (lo, hi int) {
	lo, hi = 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if start, err := strconv.Atoi(f[0]); err == nil && start > lo+1000 {
				hi = start
			}
		}
	}
	return lo, hi
}

// listenFree binds a TCP listener on a free port of 127.0.0.1 (and, with
// udp, a UDP socket on the same port), picked as above.
func listenFree(udp bool) (net.Listener, net.PacketConn, error) {
	lo, hi := portRange()
	for range 200 {
		port := lo + rand.IntN(hi-lo)
		l, err := net.Listen("tcp", Loopback(port))
		if err != nil {
			continue
		}
		if !udp {
			return l, nil, nil
		}
		c, err := net.ListenPacket("udp", Loopback(port))
		if err != nil {
			l.Close()
			continue
		}
		return l, c, nil
	}
	return nil, nil, fmt.Errorf("no free port in %d-%d", lo, hi)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// The listener is closed before returning, so a racing process could take
// it; the helpers that use it detect that when the server fails to start.
func FreePort(t testing.TB) int {
	t.Helper()
	l, _, err := listenFree(false)
	if err != nil {
		t.Fatalf("peertest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreePorts returns n distinct free ports on 127.0.0.1.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, _, err := listenFree(false)
		if err != nil {
			t.Fatalf("peertest: free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Loopback joins 127.0.0.1 and port.
func Loopback(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// WaitPort polls addr until a TCP connection succeeds, ctx ends, or alive
// (if not nil) reports that the process that should listen has exited.
func WaitPort(ctx context.Context, addr string, alive func() error) error {
	var d net.Dialer
	delay := 5 * time.Millisecond
	for {
		if alive != nil {
			if err := alive(); err != nil {
				return fmt.Errorf("waiting for %s: %w", addr, err)
			}
		}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", addr, ctx.Err(), err)
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

func splitAddr(t testing.TB, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return h, n
}

// FreeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago
// and whose TCP twin was too (a SIP listener takes both).
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	l, c, err := listenFree(true)
	if err != nil {
		t.Fatalf("peertest: free udp+tcp port: %v", err)
	}
	l.Close()
	c.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitSIP sends OPTIONS over UDP to addr until anything answers, ctx
// ends, or alive (if not nil) reports that the server has exited. A
// listening UDP socket says nothing by itself: only an answer shows the
// server is reading it.
func WaitSIP(ctx context.Context, addr string, alive func() error) error {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer c.Close()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	local := c.LocalAddr().String()
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		if alive != nil {
			if err := alive(); err != nil {
				return fmt.Errorf("waiting for %s: %w", addr, err)
			}
		}
		msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKpeertest%d\r\n"+
			"From: <sip:probe@%s>;tag=peertest\r\nTo: <sip:%s>\r\nCall-ID: peertest-probe-%d@%s\r\n"+
			"CSeq: %d OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", addr, local, i, local, addr, i, local, i+1)
		if _, err := c.WriteTo([]byte(msg), to); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := c.ReadFrom(buf); err == nil && n > 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", addr, ctx.Err())
		}
	}
}
