package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"pushd/component"
	"pushd/component/dispatch"
	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/bench"
	"pushd/internal/store"
)

const benchSIPUsage = `usage: pushd bench sip [flags]
Starts pushd (this binary) with SIP on and its push component pointed at an
in-process APNS test server, and measures (issue 12):
  push  --phones phones register with RFC 8599 push bindings (digest, UDP,
        asleep); a load generator sends --calls INVITEs at --rate calls/s,
        each to the next phone; each call is CANCELled once its VoIP push
        reached the APNS server. Reports calls/s and INVITE sent → push
        received p50/p99/max, and that every call was pushed once.
  live  --live-phones phones register without push (live bindings) with a
        sipp UAS as their contact; a sipp UAC makes --live-calls calls
        (INVITE, 180, 200, ACK, BYE) through pushd, then the same load
        through Kamailio (its own registrar, same phones, same UAS).
        Reports calls/s and INVITE → 200 response-time percentiles of both.
The live part needs sipp (Debian sip-tester) and kamailio; without them it
says so and only the push part runs.`

type benchSIPOptions struct {
	Phones, Calls int
	Rate          float64 // calls/s offered; 0: as fast as the window allows
	Window        int     // calls in flight at most
	LivePhones    int
	LiveCalls     int
	LiveRate      float64 // 0: as fast as sipp's window allows
	LiveWindow    int
	NoLive        bool
	NoPush        bool
	CPUProfile    string // pushd's CPU profile (its whole run)
	MemProfile    string // pushd's heap profile, taken when the bench stops it
}

func cmdBenchSIP(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench sip", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchSIPOptions
	fs.IntVar(&o.Phones, "phones", 2000, "phones with push bindings (calls go to them in turn)")
	fs.IntVar(&o.Calls, "calls", 10000, "calls of the push part")
	fs.Float64Var(&o.Rate, "rate", 1000, "calls/s offered in the push part (0: as fast as --window allows)")
	fs.IntVar(&o.Window, "window", 500, "calls in flight at most in the push part")
	fs.IntVar(&o.LivePhones, "live-phones", 100, "phones with live bindings (one sipp UAS answers for all)")
	fs.IntVar(&o.LiveCalls, "live-calls", 10000, "calls of the live part, through each proxy")
	fs.Float64Var(&o.LiveRate, "live-rate", 0, "calls/s offered by sipp in the live part (0: as fast as --live-window allows)")
	fs.IntVar(&o.LiveWindow, "live-window", 100, "calls in flight at most in the live part (sipp -l)")
	fs.BoolVar(&o.NoLive, "no-live", false, "skip the live part")
	fs.BoolVar(&o.NoPush, "no-push", false, "skip the push part")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write pushd's CPU profile (its whole run, both parts) to this `file`")
	fs.StringVar(&o.MemProfile, "memprofile", "", "write pushd's heap profile, taken when the bench stops it, to this `file`")
	fs.Usage = func() { fmt.Fprintln(stderr, benchSIPUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Phones <= 0 || o.Calls <= 0 || o.Window <= 0 || o.Rate < 0 || o.LivePhones <= 0 || o.LiveCalls <= 0 || o.LiveWindow <= 0 || o.LiveRate < 0 {
		return errors.New("bench sip: sizes must be positive, rates not negative")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return runBenchSIP(context.Background(), exe, o, stdout)
}

// benchSIPResult is what a run measured, for the table and the test.
type benchSIPResult struct {
	// Load is the host's load average (1, 5, 15 min) before and after:
	// the cores are shared, so the figures need it.
	LoadBefore, LoadAfter string
	Push                  benchSIPPush
	PushSkipped           bool
	// Live is empty when the live part did not run; LiveSkipped says why.
	Live        []benchSIPLive
	LiveSkipped string
}

func runBenchSIP(ctx context.Context, exe string, o benchSIPOptions, out io.Writer) error {
	r, err := benchSIP(ctx, exe, o, out)
	if err != nil {
		return err
	}
	r.print(out, o)
	return nil
}

func (r benchSIPResult) print(out io.Writer, o benchSIPOptions) {
	fmt.Fprintf(out, "host: %d cores, load average %s before, %s after\n", runtime.NumCPU(), r.LoadBefore, r.LoadAfter)
	if !r.PushSkipped {
		r.printPush(out, o)
	}
	r.printLive(out, o)
}

func (r benchSIPResult) printPush(out io.Writer, o benchSIPOptions) {
	p := r.Push
	rate := "as fast as it goes"
	if o.Rate > 0 {
		rate = fmt.Sprintf("%.0f/s offered", o.Rate)
	}
	fmt.Fprintf(out, "push: %d phones with push bindings, %d calls (%s, window %d), each CANCELled once pushed\n", o.Phones, o.Calls, rate, o.Window)
	fmt.Fprintf(out, "  %-30s %8s %9s %9s %9s %9s %11s\n", "", "calls", "calls/s", "p50", "p99", "max", "pushd CPU")
	fmt.Fprintf(out, "  %-30s %8d %9.0f %9s %9s %9s %6.2f cores\n", "INVITE sent → VoIP push", p.Pushed, p.rate(),
		roundLat(p.P50), roundLat(p.P99), roundLat(p.Max), p.Cores)
	fmt.Fprintf(out, "  calls %d: call pushes %d, calls pushed twice %d, missed-call pushes %d, 487 answers %d, failed %d\n",
		p.Calls, p.CallPushes, p.Twice, p.EndPushes, p.Terminated, p.Failed)
	fmt.Fprintf(out, "  the bench's own process (callers, APNS test server) used %.2f cores\n", p.BenchCores)
	if p.HeapGrowth != 0 && p.Calls > 0 {
		fmt.Fprintf(out, "  pushd's live heap and stacks grew by %.1f MiB (%.1f KiB per call, all still remembered; badger's caches and memtables included)\n",
			float64(p.HeapGrowth)/(1<<20), float64(p.HeapGrowth)/1024/float64(p.Calls))
	}
}

func (r benchSIPResult) printLive(out io.Writer, o benchSIPOptions) {
	if r.LiveSkipped != "" {
		fmt.Fprintf(out, "live: skipped: %s\n", r.LiveSkipped)
		return
	}
	if len(r.Live) == 0 {
		return
	}
	live := "as fast as it goes"
	if o.LiveRate > 0 {
		live = fmt.Sprintf("%.0f/s offered", o.LiveRate)
	}
	fmt.Fprintf(out, "live: %d phones with live bindings on one sipp UAS, %d calls from a sipp UAC (%s, window %d), INVITE → 200 (sipp counts whole ms)\n",
		o.LivePhones, o.LiveCalls, live, o.LiveWindow)
	fmt.Fprintf(out, "  %-30s %8s %9s %9s %9s %9s %11s\n", "proxy", "calls", "calls/s", "p50", "p99", "max", "proxy CPU")
	for _, l := range r.Live {
		fmt.Fprintf(out, "  %-30s %8d %9.0f %9s %9s %9s %6.2f cores  (%d failed, %d datagrams dropped by the host)\n", l.Name, l.Calls, l.rate(),
			wholeMS(l.P50), wholeMS(l.P99), wholeMS(l.Max), l.Cores, l.Failed, l.Dropped)
		if l.Why != "" {
			fmt.Fprintf(out, "    first failure: %s\n", l.Why)
		}
	}
}

// wholeMS prints a time sipp measured: in whole milliseconds, so 0 is
// under one.
func wholeMS(d time.Duration) string {
	if d < time.Millisecond {
		return "<1ms"
	}
	return d.Round(time.Millisecond).String()
}

func roundLat(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(10 * time.Microsecond)
}

// benchSIP starts pushd, runs the push part, then the live part through
// pushd and Kamailio when both peers are installed.
func benchSIP(ctx context.Context, exe string, o benchSIPOptions, log io.Writer) (r benchSIPResult, err error) {
	r.LoadBefore = loadAverage()
	defer func() { r.LoadAfter = loadAverage() }()
	// The APNS server shares the cores with pushd: it checks each provider
	// token once (pushd reuses one for 50 min) and keeps no request.
	apns, apnsTOML, err := benchAPNSServer(apnstest.Options{VerifyOnce: true, Discard: true})
	if err != nil {
		return r, err
	}
	defer apns.close()
	ports, err := freePorts(4)
	if err != nil {
		return r, err
	}
	sipAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[3]))
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	phones := make([]benchSIPPhone, o.Phones)
	for i := range phones {
		phones[i] = benchSIPPhone{User: benchUser(i), PRID: benchToken(0x5000_0000 + i), Token: benchToken(0x6000_0000 + i)}
	}
	live := make([]string, o.LivePhones)
	for i := range live {
		live[i] = benchUser(o.Phones + i)
	}
	// The callers are a trunk (trusted: no digest on INVITE), as a PBX in
	// front of pushd is; the phones register with digest. No per-source
	// limit: every phone and caller of the bench is 127.0.0.1.
	cfg := fmt.Sprintf(`domain = "localhost"
data_dir = "data"
[c2s]
listen = "127.0.0.1:%d"
[component]
listen = "127.0.0.1:%d"
[admin]
listen = %q
[log]
level = "warn"
[sip]
listen = %q
trusted = ["127.0.0.1"]
rate_limit = 1e9
rate_burst = 1e9
digest_algorithms = ["MD5", "SHA-256"]
%s`, ports[0], ports[1], admin, sipAddr, apnsTOML)
	var serveArgs []string
	for _, f := range []struct{ flag, file string }{{"--cpuprofile", o.CPUProfile}, {"--memprofile", o.MemProfile}} {
		if f.file == "" {
			continue
		}
		abs, err := filepath.Abs(f.file)
		if err != nil {
			return r, err
		}
		serveArgs = append(serveArgs, f.flag, abs)
	}
	p, err := startBenchProcWith(ctx, exe, cfg, nil, func(dataDir string) error {
		return createSIPBenchUsers(dataDir, phones, live, apns.key)
	}, serveArgs...)
	if err != nil {
		return r, err
	}
	defer p.stop()
	if err := waitListening(ctx, sipAddr, 30*time.Second); err != nil {
		return r, err
	}
	pid := p.cmd.Process.Pid
	adm := adminClient(admin, filepath.Join(p.dir, "data"))
	liveHeap := func() int64 {
		if adm == nil {
			return 0
		}
		m, err := adm.Memory()
		if err != nil {
			return 0
		}
		return int64(m.HeapInuse + m.StackInuse)
	}
	heap0 := liveHeap()
	if o.NoPush {
		r.PushSkipped = true
	} else if r.Push, err = benchSIPPushPart(ctx, sipAddr, pid, phones, apns, o); err != nil {
		n := &benchNode{benchProc: p, name: "pushd"}
		n.logTail(log, 20)
		return r, fmt.Errorf("push: %w", err)
	}
	// Every call of the push part is still remembered (LateWindow, 30 s).
	r.Push.HeapGrowth = liveHeap() - heap0
	if o.NoLive {
		return r, nil
	}
	if why := benchSIPPeersMissing(); why != "" {
		r.LiveSkipped = why
		return r, nil
	}
	r.Live, err = benchSIPLivePart(ctx, sipAddr, pid, live, o)
	if err != nil {
		return r, fmt.Errorf("live: %w", err)
	}
	return r, nil
}

// benchSIPPhone is a phone of the push part: its account, its PushKit
// token (pn-prid) and the message token its app registered over XMPP.
type benchSIPPhone struct {
	User, PRID, Token string
}

// createSIPBenchUsers creates the accounts of both parts and the XMPP push
// registration of every push phone, carrying its VoIP token and the key
// its call pushes are sealed under (as an app registers before its phone
// sends the REGISTER, C2, S2): the bench opens each push to learn its call.
func createSIPBenchUsers(dataDir string, phones []benchSIPPhone, live []string, key [payload.KeySize]byte) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	// The accounts only ever authenticate over SIP, whose digest HA1 does
	// not depend on the PBKDF2 iterations: one, to make thousands of
	// accounts in a blink.
	db, err := store.Open(store.Config{Dir: filepath.Join(dataDir, "db"), Domain: "localhost", Sync: store.SyncOS,
		ScramIterations: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer db.Close()
	users := slices.Clone(live)
	for _, ph := range phones {
		users = append(users, ph.User)
	}
	for _, u := range users {
		j, err := jid.New(u, "localhost", "")
		if err != nil {
			return err
		}
		if err := db.Accounts().Add(j, benchPassword); err != nil && !errors.Is(err, store.ErrUserExists) {
			return err
		}
	}
	reg, err := component.OpenRegistry(db.Badger(), nil)
	if err != nil {
		return err
	}
	for _, ph := range phones {
		voip := ph.PRID
		if _, _, err := reg.Register(component.RegisterRequest{Account: ph.User + "@localhost", DeviceID: "phone",
			Provider: dispatch.APNS, Token: ph.Token, VoIPToken: &voip, Key: &key, Kind: "mobile"}); err != nil {
			return err
		}
	}
	return nil
}

// loadAverage is /proc/loadavg's first three fields, for the figures.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cores is the CPU a process used between two readings, in cores.
func cores(pid int, cpu0 time.Duration, elapsed time.Duration) float64 {
	cpu1, err := bench.ProcessCPU(pid)
	if err != nil || elapsed <= 0 {
		return 0
	}
	return (cpu1 - cpu0).Seconds() / elapsed.Seconds()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}
