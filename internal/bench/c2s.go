package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// Config is one c2s message run: Pairs sender→receiver pairs of sessions,
// each sender keeping at most Window messages in flight to its receiver.
type Config struct {
	Addr   string // c2s host:port (STARTTLS)
	Domain string
	// Users are the accounts; pair i uses Users[2i] (sender) and
	// Users[2i+1] (receiver). When empty, UserPattern and Password make
	// them (see UserCredentials).
	Users       []Credentials
	UserPattern string // default "bench%d"
	Password    string
	Pairs       int // default 1
	// Messages per pair; when zero, senders send for Duration.
	Messages int
	Duration time.Duration
	// Window is the number of messages a sender may have in flight;
	// default 32. Latency is measured at that load.
	Window int
	// InsecureTLS skips certificate verification (self-signed servers).
	InsecureTLS bool
	// ServerPID, if set, is sampled for CPU time so that the result shows
	// whether the server or the client saturated.
	ServerPID int
	// LoginConcurrency bounds parallel logins; default 16.
	LoginConcurrency int
}

// Result of RunC2S.
type Result struct {
	Pairs      int
	Messages   int           // received, over all pairs
	Elapsed    time.Duration // first send to last receive
	MsgsPerSec float64
	P50, P99   time.Duration // send→receive latency
	Max        time.Duration
	// ClientCPU and ServerCPU are CPU time used during the message phase
	// (ServerCPU only with Config.ServerPID). Divided by Elapsed they give
	// cores used: a side near its core count (or 1.0 for a single-threaded
	// server) is the bottleneck.
	ClientCPU time.Duration
	ServerCPU time.Duration
}

func (r Result) String() string {
	s := fmt.Sprintf("pairs=%d messages=%d elapsed=%v rate=%.0f msg/s p50=%v p99=%v max=%v client_cpu=%.2f cores",
		r.Pairs, r.Messages, r.Elapsed.Round(time.Millisecond), r.MsgsPerSec, r.P50, r.P99, r.Max,
		r.ClientCPU.Seconds()/r.Elapsed.Seconds())
	if r.ServerCPU > 0 {
		s += fmt.Sprintf(" server_cpu=%.2f cores", r.ServerCPU.Seconds()/r.Elapsed.Seconds())
	}
	return s
}

func (cfg *Config) defaults() error {
	if cfg.Pairs <= 0 {
		cfg.Pairs = 1
	}
	if cfg.Window <= 0 {
		cfg.Window = 32
	}
	if cfg.LoginConcurrency <= 0 {
		cfg.LoginConcurrency = 16
	}
	if cfg.Messages <= 0 && cfg.Duration <= 0 {
		return errors.New("bench: set Messages or Duration")
	}
	if len(cfg.Users) == 0 {
		if cfg.UserPattern == "" {
			cfg.UserPattern = "bench%d"
		}
		cfg.Users = UserCredentials(cfg.UserPattern, cfg.Password, 2*cfg.Pairs)
	}
	if len(cfg.Users) < 2*cfg.Pairs {
		return fmt.Errorf("bench: %d pairs need %d users, have %d", cfg.Pairs, 2*cfg.Pairs, len(cfg.Users))
	}
	return nil
}

// login connects n sessions in parallel (bounded), in order of creds.
func login(ctx context.Context, creds []Credentials, conc int, mk func(Credentials) dialConfig) ([]*conn, error) {
	conns := make([]*conn, len(creds))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for i, cr := range creds {
		g.Go(func() error {
			lctx, cancel := context.WithTimeout(gctx, 30*time.Second)
			defer cancel()
			c, err := dial(lctx, mk(cr))
			conns[i] = c
			return err
		})
	}
	err := g.Wait()
	if err != nil {
		for _, c := range conns {
			if c != nil {
				c.raw.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}

type pair struct {
	from, to *conn
	tokens   chan struct{}
	lat      []time.Duration

	mu       sync.Mutex
	received int
	sent     int
	sendDone bool
	done     chan struct{}
}

// RunC2S logs in 2×Pairs sessions, then each sender sends to its receiver's
// full JID until Messages (per pair) or Duration, with Window messages in
// flight, and measures throughput and send→receive latency. The time stamp
// travels in the body.
func RunC2S(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	conns, err := login(ctx, cfg.Users[:2*cfg.Pairs], cfg.LoginConcurrency, func(cr Credentials) dialConfig {
		return dialConfig{addr: cfg.Addr, domain: cfg.Domain, cred: cr, resource: "bench", insecure: cfg.InsecureTLS, presence: true}
	})
	if err != nil {
		return Result{}, fmt.Errorf("bench: login: %w", err)
	}
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	pairs := make([]*pair, cfg.Pairs)
	for i := range pairs {
		p := &pair{from: conns[2*i], to: conns[2*i+1], tokens: make(chan struct{}, cfg.Window), done: make(chan struct{})}
		for range cfg.Window {
			p.tokens <- struct{}{}
		}
		if cfg.Messages > 0 {
			p.lat = make([]time.Duration, 0, cfg.Messages)
		}
		pairs[i] = p
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cpu0 := SelfCPU()
	var srv0 time.Duration
	if cfg.ServerPID > 0 {
		srv0, _ = ProcessCPU(cfg.ServerPID)
	}
	start := time.Now()
	var deadline time.Time
	if cfg.Messages <= 0 {
		deadline = start.Add(cfg.Duration)
	}
	errc := make(chan error, 2*len(pairs))
	for _, p := range pairs {
		go func() { errc <- p.receive(start) }()
		go func() { errc <- p.send(ctx, start, cfg.Messages, deadline) }()
	}
	for _, p := range pairs {
		for waiting := true; waiting; {
			select {
			case <-p.done:
				waiting = false
			case err := <-errc:
				if err != nil {
					return Result{}, err
				}
			case <-ctx.Done():
				return Result{}, ctx.Err()
			}
		}
	}
	last := time.Now()
	res := Result{Pairs: cfg.Pairs, Elapsed: last.Sub(start), ClientCPU: SelfCPU() - cpu0}
	if cfg.ServerPID > 0 {
		if s1, err := ProcessCPU(cfg.ServerPID); err == nil {
			res.ServerCPU = s1 - srv0
		}
	}
	var all []time.Duration
	for _, p := range pairs {
		all = append(all, p.lat...)
	}
	slices.Sort(all)
	res.Messages = len(all)
	if len(all) > 0 {
		res.P50 = all[len(all)*50/100]
		res.P99 = all[min(len(all)-1, len(all)*99/100)]
		res.Max = all[len(all)-1]
	}
	res.MsgsPerSec = float64(res.Messages) / res.Elapsed.Seconds()
	return res, nil
}

func (p *pair) send(ctx context.Context, start time.Time, n int, deadline time.Time) error {
	prefix := []byte("<message type='chat' to='" + p.to.jid + "'><body>bench ")
	buf := make([]byte, 0, 256)
	sent := 0
	for n <= 0 || sent < n {
		if n <= 0 && time.Now().After(deadline) {
			break
		}
		select {
		case <-p.tokens:
		case <-ctx.Done():
			return ctx.Err()
		}
		buf = append(buf[:0], prefix...)
		buf = strconv.AppendInt(buf, int64(sent), 10)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, int64(time.Since(start)), 10)
		buf = append(buf, "</body></message>"...)
		if _, err := p.from.w.Write(buf); err != nil {
			return err
		}
		sent++
		if len(p.tokens) == 0 || p.from.w.Buffered() > 16<<10 {
			if err := p.from.w.Flush(); err != nil {
				return err
			}
		}
	}
	if err := p.from.w.Flush(); err != nil {
		return err
	}
	p.mu.Lock()
	p.sent, p.sendDone = sent, true
	if p.received == sent {
		close(p.done)
	}
	p.mu.Unlock()
	return nil
}

func (p *pair) receive(start time.Time) error {
	buf := make([]byte, 0, 64<<10)
	tmp := make([]byte, 32<<10)
	for {
		n, err := p.to.r.Read(tmp)
		buf = append(buf, tmp[:n]...)
		used := scanBodies(buf, func(_, ns int64) {
			lat := time.Since(start) - time.Duration(ns)
			p.mu.Lock()
			p.lat = append(p.lat, lat)
			p.received++
			finished := p.sendDone && p.received == p.sent
			p.mu.Unlock()
			p.tokens <- struct{}{}
			if finished {
				close(p.done)
			}
		})
		buf = append(buf[:0], buf[used:]...)
		if err != nil {
			select {
			case <-p.done:
				return nil // closed after the run
			default:
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("bench: receiver %s: stream closed by server", p.to.jid)
			}
			return fmt.Errorf("bench: receiver %s: %w", p.to.jid, err)
		}
	}
}

// SelfCPU is the CPU time (user and system) this process has used.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
