package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/internal/admin"
	"pushd/internal/bench"
	"pushd/internal/store"
)

const benchUsage = `usage: pushd bench c2s|push|cluster|sip [flags]

bench c2s:
Measures messages/s and latency between client pairs, and memory per
connected and per hibernated session, and per hibernated session with
--queued stanzas in its queue. Without --addr it starts its own pushd node
(this binary) for each measurement.`

// c2sTarget is a server under measurement.
type c2sTarget struct {
	Name     string
	Addr     string
	Domain   string
	PID      int // 0: unknown (no CPU or memory figures)
	Pattern  string
	Password string
	Admin    string // the node's admin listener, when known
	// Live, when set, returns the server's live memory (heap and stacks
	// after a collection), which says more than RSS for a Go server.
	Live func() (int64, error)
}

// c2sStarter starts a fresh server with users bench accounts; stop ends it.
type c2sStarter func(ctx context.Context, users int) (t c2sTarget, stop func(), err error)

type c2sBenchOptions struct {
	Pairs    []int
	Duration time.Duration
	Window   int
	Sessions int // idle sessions for the memory figures; 0 skips them
	// Queued is the number of messages put in each hibernated session's
	// queue for the last memory figure (issue 3); 0 skips it.
	Queued int
}

func cmdBench(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "push" {
		return cmdBenchPush(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "cluster" {
		return cmdBenchCluster(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "sip" {
		return cmdBenchSIP(args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "c2s" {
		fmt.Fprintln(stderr, benchUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("bench c2s", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pairs := fs.String("pairs", "1,10,50", "comma-separated numbers of sender→receiver pairs")
	duration := fs.Duration("duration", 10*time.Second, "how long each run sends")
	window := fs.Int("window", 32, "messages in flight per pair")
	sessions := fs.Int("sessions", 2000, "idle sessions for memory per session (0 = skip)")
	queued := fs.Int("queued", 10, "messages queued per hibernated session for its memory figure (0 = skip)")
	addr := fs.String("addr", "", "measure a running server at host:port instead of starting pushd")
	domain := fs.String("domain", "localhost", "with --addr: the server's domain")
	pid := fs.Int("pid", 0, "with --addr: the server's process id (CPU and memory figures)")
	pattern := fs.String("users", "bench%d", "with --addr: account name pattern; accounts bench0… must exist")
	password := fs.String("password", "bench-pw", "with --addr: the accounts' password")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	opts := c2sBenchOptions{Duration: *duration, Window: *window, Sessions: *sessions, Queued: *queued}
	for _, p := range strings.Split(*pairs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad --pairs %q", *pairs)
		}
		opts.Pairs = append(opts.Pairs, n)
	}
	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	start := pushdStarter(exe)
	if *addr != "" {
		t := c2sTarget{Name: "server", Addr: *addr, Domain: *domain, PID: *pid, Pattern: *pattern, Password: *password}
		start = func(context.Context, int) (c2sTarget, func(), error) { return t, func() {}, nil }
	}
	return runC2SBench(ctx, start, opts, stdout)
}

// runC2SBench measures one server kind and prints a table row per
// measurement. Memory is measured on fresh servers, since neither Go nor
// Lua hands freed memory back at once.
func runC2SBench(ctx context.Context, start c2sStarter, opts c2sBenchOptions, out io.Writer) error {
	maxPairs := 0
	for _, p := range opts.Pairs {
		maxPairs = max(maxPairs, p)
	}
	t, stop, err := start(ctx, 2*maxPairs+1)
	if err != nil {
		return err
	}
	for _, p := range opts.Pairs {
		res, err := bench.RunC2S(ctx, bench.Config{
			Addr: t.Addr, Domain: t.Domain, UserPattern: t.Pattern, Password: t.Password, InsecureTLS: true,
			Pairs: p, Duration: opts.Duration, Window: opts.Window, ServerPID: t.PID,
		})
		if err != nil {
			stop()
			return fmt.Errorf("%s, %d pairs: %w", t.Name, p, err)
		}
		cpu := 0.0
		if res.ServerCPU > 0 {
			cpu = res.ServerCPU.Seconds() / res.Elapsed.Seconds()
		}
		fmt.Fprintf(out, "%-8s c2s pairs=%-3d window=%d  %8.0f msg/s  p50 %-10v p99 %-10v server %.2f cores\n",
			t.Name, p, opts.Window, res.MsgsPerSec, res.P50.Round(10*time.Microsecond), res.P99.Round(10*time.Microsecond), cpu)
	}
	stop()
	if opts.Sessions <= 0 || t.PID == 0 {
		return nil
	}
	for _, hibernate := range []bool{false, true} {
		queued := 0
		if hibernate {
			queued = opts.Queued
		}
		m, err := measureSessions(ctx, start, opts.Sessions, hibernate, queued)
		if err != nil {
			return err
		}
		kind := "connected session (XEP-0198 on)"
		if hibernate {
			kind = "hibernated session"
		}
		printSessionMemory(out, t.Name, kind, m.rss, m.live, opts.Sessions)
		if queued > 0 {
			printSessionMemory(out, t.Name, fmt.Sprintf("hibernated session with %d queued messages", queued), m.rssQueued, m.liveQueued, opts.Sessions)
			fmt.Fprintf(out, "%-8s   queueing %d messages of %d bytes took %v (%.0f acked msgs/s, %d bounced)\n",
				t.Name, m.fill.Sent, queuedBodyBytes, m.fill.Elapsed.Round(time.Millisecond),
				float64(m.fill.Sent)/m.fill.Elapsed.Seconds(), m.fill.Bounced)
		}
	}
	return nil
}

func printSessionMemory(out io.Writer, name, kind string, rss, live float64, n int) {
	fmt.Fprintf(out, "%-8s memory per %s: RSS %.1f KiB", name, kind, rss/1024)
	if live > 0 {
		fmt.Fprintf(out, ", live heap+stacks %.1f KiB", live/1024)
	}
	fmt.Fprintf(out, " (%d sessions)\n", n)
}

// queuedBodyBytes is the body of each queued message: a short chat line.
const queuedBodyBytes = 100

// sessionMemory is memory per session, in bytes: connected or hibernated,
// and (rssQueued, liveQueued) hibernated with messages queued.
type sessionMemory struct {
	rss, live             float64
	rssQueued, liveQueued float64
	fill                  bench.FillResult
}

// measureSessions opens n idle sessions with XEP-0198 on a fresh server
// (dropping them when hibernate) and measures the server's growth per
// session; with queued > 0 it then sends each hibernated session queued
// messages from one more session, waits until all are acknowledged
// (durable, in pushd), and measures again.
func measureSessions(ctx context.Context, start c2sStarter, n int, hibernate bool, queued int) (sessionMemory, error) {
	var m sessionMemory
	t, stop, err := start(ctx, n+2)
	if err != nil {
		return m, err
	}
	defer stop()
	barrier := bench.Credentials{User: fmt.Sprintf(t.Pattern, n), Password: t.Password}
	sender := bench.Credentials{User: fmt.Sprintf(t.Pattern, n+1), Password: t.Password}
	sample := func() (rss, live int64, err error) {
		if err := bench.Barrier(ctx, t.Addr, t.Domain, barrier, true); err != nil {
			return 0, 0, err
		}
		if t.Live != nil {
			if live, err = t.Live(); err != nil {
				return 0, 0, err
			}
		}
		rss, err = bench.RSS(t.PID)
		return rss, live, err
	}
	rss0, live0, err := sample()
	if err != nil {
		return m, err
	}
	idle, err := bench.ConnectIdle(ctx, bench.IdleConfig{
		Addr: t.Addr, Domain: t.Domain, UserPattern: t.Pattern, Password: t.Password, InsecureTLS: true,
		Sessions: n, StreamManagement: true, Drop: hibernate,
	})
	if err != nil {
		return m, err
	}
	defer idle.Close()
	rss1, live1, err := sample()
	if err != nil {
		return m, err
	}
	m.rss = float64(rss1-rss0) / float64(n)
	if t.Live != nil {
		m.live = float64(live1-live0) / float64(n)
	}
	if !hibernate || queued <= 0 {
		return m, nil
	}
	m.fill, err = bench.Fill(ctx, bench.FillConfig{
		Addr: t.Addr, Domain: t.Domain, Sender: sender, InsecureTLS: true,
		To: idle.JIDs(), PerRecipient: queued, BodyBytes: queuedBodyBytes,
	})
	if err != nil {
		return m, err
	}
	rss2, live2, err := sample()
	if err != nil {
		return m, err
	}
	m.rssQueued = float64(rss2-rss0) / float64(n)
	if t.Live != nil {
		m.liveQueued = float64(live2-live0) / float64(n)
	}
	return m, nil
}

// pushdStarter runs the pushd binary exe as a node in a temporary
// directory with users bench accounts and no rate limit.
func pushdStarter(exe string) c2sStarter {
	return func(ctx context.Context, users int) (c2sTarget, func(), error) {
		return startPushd(ctx, exe, users)
	}
}

func startPushd(ctx context.Context, exe string, users int) (c2sTarget, func(), error) {
	t := c2sTarget{Name: "pushd", Domain: "localhost", Pattern: benchPattern, Password: benchPassword}
	ports, err := freePorts(3)
	if err != nil {
		return t, nil, err
	}
	t.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	t.Admin = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	cfg := fmt.Sprintf("domain = %q\ndata_dir = \"data\"\n[c2s]\nlisten = %q\nrate_limit = 0\n[component]\nlisten = \"127.0.0.1:%d\"\n[admin]\nlisten = %q\n[log]\nlevel = \"warn\"\n",
		t.Domain, t.Addr, ports[1], t.Admin)
	p, _, err := startBenchProc(ctx, exe, users, nil, cfg, os.Stderr)
	if err != nil {
		return t, nil, err
	}
	t.PID = p.cmd.Process.Pid
	admin := &admin.Client{Addr: t.Admin}
	t.Live = func() (int64, error) {
		if admin.Token == "" {
			tok, err := os.ReadFile(filepath.Join(p.dir, "data", "admin.token"))
			if err != nil {
				return 0, err
			}
			admin.Token = strings.TrimSpace(string(tok))
		}
		m, err := admin.Memory()
		return int64(m.HeapInuse + m.StackInuse), err
	}
	if err := waitListening(ctx, t.Addr, 15*time.Second); err != nil {
		p.stop()
		return t, nil, err
	}
	return t, p.stop, nil
}

// benchProc is one `pushd serve` process of a bench, in a directory of
// its own that stop removes.
type benchProc struct {
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
}

// startBenchProc creates a directory with the bench accounts (sharing
// record, see createBenchUsers, which it returns) and cfg as pushd.toml,
// and starts `pushd serve` there; its output goes to out, or to pushd.log
// in the directory when out is nil.
func startBenchProc(ctx context.Context, exe string, users int, record []byte, cfg string, out io.Writer) (*benchProc, []byte, error) {
	p, err := startBenchProcWith(ctx, exe, cfg, out, func(dataDir string) (err error) {
		record, err = createBenchUsers(dataDir, "localhost", benchPattern, benchPassword, users, record)
		return err
	})
	return p, record, err
}

// startBenchProcWith is startBenchProc with the data directory filled by
// prepare (before pushd opens it) and more arguments to serve.
func startBenchProcWith(ctx context.Context, exe, cfg string, out io.Writer, prepare func(dataDir string) error, serveArgs ...string) (*benchProc, error) {
	dir, err := os.MkdirTemp("", "pushd-bench-")
	if err != nil {
		return nil, err
	}
	p := &benchProc{dir: dir, done: make(chan struct{})}
	fail := func(err error) (*benchProc, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := prepare(filepath.Join(dir, "data")); err != nil {
		return fail(err)
	}
	cfgFile := filepath.Join(dir, "pushd.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return fail(err)
	}
	var logFile *os.File
	if out == nil {
		if logFile, err = os.Create(filepath.Join(dir, "pushd.log")); err != nil {
			return fail(err)
		}
		out = logFile
	}
	p.cmd = exec.CommandContext(ctx, exe, append([]string{"serve", "--config", cfgFile}, serveArgs...)...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		if logFile != nil {
			_ = logFile.Close()
		}
		return fail(err)
	}
	go func() {
		_ = p.cmd.Wait()
		if logFile != nil {
			_ = logFile.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// stop ends the process (politely, then not) and removes its directory.
func (p *benchProc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = os.RemoveAll(p.dir)
}

// createBenchUsers creates n accounts with one password. They share one
// credentials record (salt included), record if given (so that the nodes
// of a bench cluster hold identical accounts), else a fresh one, which it
// returns: salting each account would make setting up 15 000 sessions a
// minute of PBKDF2 that measures nothing.
func createBenchUsers(dataDir, domain, pattern, password string, n int, record []byte) ([]byte, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	// One fsync at Close instead of one per account.
	db, err := store.Open(store.Config{Dir: filepath.Join(dataDir, "db"), Domain: domain, Sync: store.SyncOS, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	for i := range n {
		j, err := jid.New(fmt.Sprintf(pattern, i), domain, "")
		if err != nil {
			return nil, err
		}
		// The shared record's digest HA1 cover the first name (SCRAM keys
		// cover none): every account logs in over XMPP, only that one could
		// authenticate over SIP.
		if record != nil {
			err = db.Accounts().PutCredentials(j, record)
		} else if err = db.Accounts().Add(j, password); err == nil || errors.Is(err, store.ErrUserExists) {
			record, err = db.Accounts().Credentials(j)
		}
		if err != nil {
			return nil, err
		}
	}
	return record, nil
}

// freePorts returns n TCP ports free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	return reservePorts(n, func() (io.Closer, int, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, 0, err
		}
		return ln, ln.Addr().(*net.TCPAddr).Port, nil
	})
}

// freeUDPPorts is freePorts for UDP.
func freeUDPPorts(n int) ([]int, error) {
	return reservePorts(n, func() (io.Closer, int, error) {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, 0, err
		}
		return c, c.LocalAddr().(*net.UDPAddr).Port, nil
	})
}

// reservePorts holds n sockets from listen at once, so that the ports
// differ, and closes them.
func reservePorts(n int, listen func() (io.Closer, int, error)) ([]int, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	var ports []int
	for range n {
		c, port, err := listen()
		if err != nil {
			return nil, err
		}
		held = append(held, c)
		ports = append(ports, port)
	}
	return ports, nil
}

func waitListening(ctx context.Context, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("pushd did not start listening on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
