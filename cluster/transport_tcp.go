package cluster

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"pushd/cluster/record"
)

// TCPConfig configures a TCPTransport.
type TCPConfig struct {
	// Name is this node's name, sent to the peers in the handshake.
	Name string
	// BindAddr is the host:port to listen on; port 0 picks a free one
	// (TCPTransport.Addr tells which).
	BindAddr string
	// Resolve maps a node name to its replication address (host:port); the
	// Cluster resolves through the member's NodeMeta.ClusterAddr.
	Resolve func(node string) (string, error)
	// SecretKey, when set (16, 24 or 32 bytes, the cluster's gossip key),
	// authenticates both ends and seals every frame with AES-256-GCM under
	// per-connection keys derived from it. Without it frames go in clear
	// and peer names are taken on trust.
	SecretKey []byte
	// Label must match on both ends (Config.Label).
	Label string
	// MaxFrame bounds one frame's payload (a larger incoming frame fails
	// the stream).
	MaxFrame int
	// DialTimeout bounds connect plus handshake; HandshakeTimeout bounds an
	// accepted connection's handshake; WriteTimeout bounds each write.
	DialTimeout, HandshakeTimeout, WriteTimeout time.Duration
	Logger                                      *slog.Logger
}

// TCPTransport is the production Transport: one TCP connection per
// stream, length-prefixed frames, optionally sealed with the cluster
// secret.
//
// Handshake (both directions, in clear): "PSHR", version 1, flags (bit 0:
// sealed), a 16-byte random nonce, then as uvarint-length strings the
// sender's node name, the label and (dialler only) the node it meant to
// reach. With a secret, each direction's key is HMAC-SHA256(secret,
// "pushd-cluster-v1" | direction | label | both nonces | both names), and
// each side's first frame is an empty sealed frame proving it holds the
// key. Frames: a 4-byte big-endian length, then the payload (sealed: the
// GCM ciphertext and tag, nonce = the frame's 64-bit counter in that
// direction).
type TCPTransport struct {
	cfg    TCPConfig
	log    *slog.Logger
	ln     net.Listener
	accept chan Stream
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	conns map[*tcpStream]struct{}
	wg    sync.WaitGroup
}

const (
	tcpMagic      = "PSHR"
	tcpVersion    = 1
	gcmOverhead   = 16
	frameLenBytes = 4
)

// ListenTCP opens the replication listener.
func ListenTCP(cfg TCPConfig) (*TCPTransport, error) {
	if cfg.Name == "" {
		return nil, errors.New("cluster: tcp: empty node name")
	}
	if cfg.Resolve == nil {
		return nil, errors.New("cluster: tcp: no Resolve function")
	}
	if n := len(cfg.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("cluster: tcp: secret key of %d bytes, want 16, 24 or 32", n)
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = 16 << 20
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: tcp: listen: %w", err)
	}
	t := &TCPTransport{
		cfg:    cfg,
		log:    cfg.Logger,
		ln:     ln,
		accept: make(chan Stream),
		done:   make(chan struct{}),
		conns:  make(map[*tcpStream]struct{}),
	}
	if len(cfg.SecretKey) == 0 {
		t.log.Warn("cluster replication runs without a secret key: frames in clear, peers unauthenticated")
	}
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// Addr is the address the listener is bound to.
func (t *TCPTransport) Addr() net.Addr { return t.ln.Addr() }

func (t *TCPTransport) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			t.log.Error("cluster replication accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			s, err := t.handshake(c, "")
			if err != nil {
				t.log.Warn("cluster replication handshake refused", "remote", c.RemoteAddr().String(), "err", err)
				c.Close()
				return
			}
			select {
			case t.accept <- s:
			case <-t.done:
				s.Close()
			}
		}()
	}
}

// Dial implements Transport.
func (t *TCPTransport) Dial(ctx context.Context, node string) (Stream, error) {
	select {
	case <-t.done:
		return nil, ErrTransportClosed
	default:
	}
	addr, err := t.cfg.Resolve(node)
	if err != nil {
		return nil, fmt.Errorf("cluster: tcp: resolve %s: %w", node, err)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: tcp: dial %s: %w", node, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	s, err := t.handshake(c, node)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("cluster: tcp: handshake with %s: %w", node, err)
	}
	return s, nil
}

// Accept implements Transport.
func (t *TCPTransport) Accept() (Stream, error) {
	select {
	case s := <-t.accept:
		return s, nil
	case <-t.done:
		return nil, ErrTransportClosed
	}
}

// Close implements Transport.
func (t *TCPTransport) Close() error {
	t.once.Do(func() {
		close(t.done)
		t.ln.Close()
	})
	t.mu.Lock()
	for s := range t.conns {
		s.conn.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

type hello struct {
	sealed              bool
	nonce               [16]byte
	name, label, target string
}

func writeHello(w io.Writer, h hello) error {
	b := []byte(tcpMagic)
	b = append(b, tcpVersion)
	if h.sealed {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = append(b, h.nonce[:]...)
	b = record.AppendString(b, h.name)
	b = record.AppendString(b, h.label)
	b = record.AppendString(b, h.target)
	_, err := w.Write(b)
	return err
}

func readHello(r *bufio.Reader) (hello, error) {
	var h hello
	head := make([]byte, 4+2+16)
	if _, err := io.ReadFull(r, head); err != nil {
		return h, err
	}
	if string(head[:4]) != tcpMagic {
		return h, errors.New("not a pushd replication peer")
	}
	if head[4] != tcpVersion {
		return h, fmt.Errorf("replication transport version %d, want %d", head[4], tcpVersion)
	}
	h.sealed = head[5]&1 != 0
	copy(h.nonce[:], head[6:])
	for _, p := range []*string{&h.name, &h.label, &h.target} {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return h, err
		}
		if n > 1024 {
			return h, errors.New("oversized handshake field")
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return h, err
		}
		*p = string(b)
	}
	return h, nil
}

// handshake runs the handshake on c; target is the node dialled, "" on an
// accepted connection.
func (t *TCPTransport) handshake(c net.Conn, target string) (*tcpStream, error) {
	dialer := target != ""
	if !dialer {
		_ = c.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	}
	s := &tcpStream{
		t:    t,
		conn: c,
		r:    bufio.NewReaderSize(c, 64<<10),
		w:    bufio.NewWriterSize(c, 64<<10),
		max:  t.cfg.MaxFrame,
		wto:  t.cfg.WriteTimeout,
	}
	mine := hello{sealed: len(t.cfg.SecretKey) > 0, name: t.cfg.Name, label: t.cfg.Label, target: target}
	if _, err := rand.Read(mine.nonce[:]); err != nil {
		return nil, err
	}
	if err := writeHello(s.w, mine); err != nil {
		return nil, err
	}
	if err := s.w.Flush(); err != nil {
		return nil, err
	}
	theirs, err := readHello(s.r)
	if err != nil {
		return nil, err
	}
	if theirs.sealed != mine.sealed {
		return nil, errors.New("one side has a secret key and the other not")
	}
	if theirs.label != mine.label {
		return nil, fmt.Errorf("label %q, want %q", theirs.label, mine.label)
	}
	if dialer && theirs.name != target {
		return nil, fmt.Errorf("reached node %q, not %q", theirs.name, target)
	}
	if !dialer && theirs.target != t.cfg.Name {
		return nil, fmt.Errorf("peer meant to reach %q", theirs.target)
	}
	s.peer = theirs.name
	if mine.sealed {
		var cli, srv hello
		if dialer {
			cli, srv = mine, theirs
		} else {
			cli, srv = theirs, mine
		}
		kc := deriveKey(t.cfg.SecretKey, "c2s", t.cfg.Label, cli, srv)
		ks := deriveKey(t.cfg.SecretKey, "s2c", t.cfg.Label, cli, srv)
		if dialer {
			s.seal, s.open = newGCM(kc), newGCM(ks)
		} else {
			s.seal, s.open = newGCM(ks), newGCM(kc)
		}
		// Key confirmation: each side proves it holds the key.
		if err := s.WriteFrame(nil); err != nil {
			return nil, err
		}
		if err := s.Flush(); err != nil {
			return nil, err
		}
		if p, err := s.ReadFrame(); err != nil || len(p) != 0 {
			return nil, errors.New("peer does not hold the cluster secret")
		}
	}
	_ = c.SetDeadline(time.Time{})
	t.mu.Lock()
	t.conns[s] = struct{}{}
	t.mu.Unlock()
	return s, nil
}

func deriveKey(secret []byte, dir, label string, cli, srv hello) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("pushd-cluster-v1"))
	m.Write([]byte(dir))
	for _, s := range []string{label, cli.name, srv.name} {
		m.Write(binary.AppendUvarint(nil, uint64(len(s))))
		m.Write([]byte(s))
	}
	m.Write(cli.nonce[:])
	m.Write(srv.nonce[:])
	return m.Sum(nil)
}

func newGCM(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // 32-byte key: cannot fail
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

// tcpStream is one replication connection.
type tcpStream struct {
	t    *TCPTransport
	conn net.Conn
	peer string
	max  int
	wto  time.Duration

	wmu       sync.Mutex
	w         *bufio.Writer
	seal      cipher.AEAD
	wctr      uint64
	wbuf      []byte
	r         *bufio.Reader
	open      cipher.AEAD
	rctr      uint64
	rbuf      []byte
	closeOnce sync.Once
}

func gcmNonce(ctr uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], ctr)
	return n[:]
}

func (s *tcpStream) WriteFrame(p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(p) > s.max {
		return fmt.Errorf("cluster: tcp: frame of %d bytes exceeds %d", len(p), s.max)
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.wto))
	if s.seal != nil {
		s.wbuf = s.seal.Seal(s.wbuf[:0], gcmNonce(s.wctr), p, nil)
		s.wctr++
		p = s.wbuf
	}
	var l [frameLenBytes]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(p)))
	if _, err := s.w.Write(l[:]); err != nil {
		return err
	}
	_, err := s.w.Write(p)
	return err
}

func (s *tcpStream) Flush() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.wto))
	return s.w.Flush()
}

func (s *tcpStream) ReadFrame() ([]byte, error) {
	var l [frameLenBytes]byte
	if _, err := io.ReadFull(s.r, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(l[:]))
	limit := s.max
	if s.open != nil {
		limit += gcmOverhead
	}
	if n > limit {
		return nil, fmt.Errorf("cluster: tcp: incoming frame of %d bytes exceeds %d", n, limit)
	}
	if cap(s.rbuf) < n {
		s.rbuf = make([]byte, n)
	}
	buf := s.rbuf[:n]
	if _, err := io.ReadFull(s.r, buf); err != nil {
		return nil, err
	}
	if s.open == nil {
		return buf, nil
	}
	p, err := s.open.Open(buf[:0], gcmNonce(s.rctr), buf, nil)
	if err != nil {
		return nil, errors.New("cluster: tcp: frame failed authentication")
	}
	s.rctr++
	return p, nil
}

func (s *tcpStream) Peer() string { return s.peer }

func (s *tcpStream) Close() error {
	s.closeOnce.Do(func() {
		s.t.mu.Lock()
		delete(s.t.conns, s)
		s.t.mu.Unlock()
	})
	return s.conn.Close()
}
