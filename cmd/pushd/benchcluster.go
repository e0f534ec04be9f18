package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"pushd/cluster"
	"pushd/component/payload"
	"pushd/internal/apnstest"
	"pushd/internal/bench"
)

const benchClusterUsage = `usage: pushd bench cluster [flags]
Starts --nodes pushd processes (this binary) joined into one cluster on
127.0.0.1, each with its push component pointed at an in-process APNS test
server, and measures (issue 5, BEHAVIOUR H2 and H3):
  ack-after-replicated  messages/s acknowledged to senders for suspended
                        devices on a lone node (local durability only) and
                        in the cluster (the device's backup holds each one
                        before the ack), and the backups' replication
                        throughput in records/s;
  failover              --sessions suspended, push-enabled devices over the
                        nodes; the primary of a third of them is killed with
                        SIGKILL while a sender writes to them; the time until
                        the survivors declare it dead, adopt its devices,
                        and send the first push for a message sent after
                        the kill. --stop term sends SIGTERM instead: the
                        node hands its users over before it exits (O7).`

type benchClusterOptions struct {
	Nodes    int
	Sessions int // suspended push-enabled devices for the failover
	Pairs    int // sender → suspended device pairs for the acked rate
	Messages int // per pair
	// Stop is how the failover's victim goes: "kill" (SIGKILL, a crash)
	// or "term" (SIGTERM, a graceful stop that hands its users over, O7).
	Stop string
}

func cmdBenchCluster(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchClusterOptions
	fs.IntVar(&o.Nodes, "nodes", 3, "cluster members (at least 2)")
	fs.IntVar(&o.Sessions, "sessions", 15000, "suspended push-enabled devices for the failover")
	fs.IntVar(&o.Pairs, "pairs", 10, "senders, each writing to its own suspended device, for the acked rate")
	fs.IntVar(&o.Messages, "messages", 2000, "messages per sender for the acked rate")
	fs.StringVar(&o.Stop, "stop", "kill", "how the failover's victim stops: kill (SIGKILL) or term (SIGTERM, a graceful hand-over)")
	fs.Usage = func() { fmt.Fprintln(stderr, benchClusterUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Stop != "kill" && o.Stop != "term" {
		return errors.New("bench cluster: --stop is kill or term")
	}
	if o.Nodes < 2 || o.Sessions <= 0 || o.Pairs <= 0 || o.Messages <= 0 {
		return errors.New("bench cluster: --nodes must be at least 2; --sessions, --pairs and --messages positive")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return runBenchCluster(context.Background(), exe, o, stdout)
}

// Accounts of the bench: bench0… are the failover's devices, then the
// pairs' candidates, then the failover's sender candidates.
const benchPattern, benchPassword = "bench%d", "bench-pw"

func benchUser(i int) string { return fmt.Sprintf(benchPattern, i) }

func runBenchCluster(ctx context.Context, exe string, o benchClusterOptions, out io.Writer) error {
	pairBase := o.Sessions
	users := pairBase + 8*o.Pairs + 100 // pairs need a sender and a device with one primary

	// ack-after-replicated, first without a cluster.
	lone, stop, err := startPushd(ctx, exe, users)
	if err != nil {
		return err
	}
	loneNode := &benchNode{name: "lone", c2s: lone.Addr, admin: lone.Admin}
	loneRate, _, err := benchAckedRate(ctx, []*benchNode{loneNode}, func(string) *benchNode { return loneNode }, pairBase, o)
	stop()
	if err != nil {
		return fmt.Errorf("lone node: %w", err)
	}

	apns, apnsTOML, err := benchAPNSServer(apnstest.Options{})
	if err != nil {
		return err
	}
	defer apns.close()
	var names []string
	for i := range o.Nodes {
		names = append(names, fmt.Sprintf("n%d", i+1))
	}
	nodes, stopAll, err := startBenchCluster(ctx, exe, names, users, apnsTOML)
	if err != nil {
		return err
	}
	defer stopAll()
	place := cluster.NewPlacement(names)
	home := func(user string) *benchNode { return nodes[place.Primary(user+"@localhost")] }
	list := make([]*benchNode, 0, len(nodes))
	for _, n := range names {
		list = append(list, nodes[n])
	}
	// Members send each other every account when they meet: let that
	// settle so that the rate measures the messages' replication alone.
	if err := quiet(list, "pushd_cluster_replication_records_applied_total"); err != nil {
		return err
	}
	clusterRate, applied, err := benchAckedRate(ctx, list, home, pairBase, o)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	fmt.Fprintf(out, "ack-after-replicated: %d senders, each to its own suspended device, %d messages each, storage sync batch\n", o.Pairs, o.Messages)
	fmt.Fprintf(out, "  %-34s %8.0f msgs/s\n", "lone node (local durability)", loneRate)
	fmt.Fprintf(out, "  %-34s %8.0f msgs/s  (%.2f of the lone node)\n", fmt.Sprintf("cluster of %d (backup holds each)", o.Nodes), clusterRate, clusterRate/loneRate)
	fmt.Fprintf(out, "  %-34s %8.0f records/s\n", "replication applied by backups", applied)

	direct, relayed, err := benchRelay(ctx, list, home, pairBase+8*o.Pairs, o)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	fmt.Fprintf(out, "live messages, %d pairs on %s, %d messages each (H7: the extra hop)\n", direct.Pairs, list[0].name, o.Messages)
	fmt.Fprintf(out, "  %-34s %8.0f msgs/s  p50 %v  p99 %v\n", "connected to their primary", direct.MsgsPerSec, direct.P50, direct.P99)
	fmt.Fprintf(out, "  %-34s %8.0f msgs/s  p50 %v  p99 %v  (%.2f of direct)\n", "connected to another node, relayed",
		relayed.MsgsPerSec, relayed.P50, relayed.P99, relayed.MsgsPerSec/direct.MsgsPerSec)

	f, err := benchFailover(ctx, list, home, apns, o)
	if err != nil {
		for _, n := range list {
			n.logTail(out, 20)
		}
		return fmt.Errorf("failover: %w", err)
	}
	how, gone := "killed with SIGKILL", "declared dead"
	if o.Stop == "term" {
		how, gone = "stopped with SIGTERM (hand-over)", "seen leaving"
	}
	fmt.Fprintf(out, "failover: %d suspended push-enabled devices, %d on %s, %s (logins took %v)\n",
		o.Sessions, f.onVictim, f.victim, how, f.login.Round(10*time.Millisecond))
	fmt.Fprintf(out, "  %-34s %8s\n", gone, f.dead.Round(10*time.Millisecond))
	fmt.Fprintf(out, "  %-34s %8s\n", "devices adopted", f.adopted.Round(10*time.Millisecond))
	fmt.Fprintf(out, "  %-34s %8s  (%d pushes for %d messages sent after the kill)\n", "first push from a survivor",
		f.firstPush.Round(10*time.Millisecond), f.pushes, f.sent)
	fmt.Fprintf(out, "  %-34s %8d acknowledged, %d arrived\n", "sent in the detection window", f.acked, f.arrived)
	return nil
}

// benchRelay measures H7's extra hop: pairs whose sender and receiver
// both live on the first node exchange live messages connected to it,
// then the same connected to the second node, which carries their
// streams to the first.
func benchRelay(ctx context.Context, nodes []*benchNode, home func(string) *benchNode, base int, o benchClusterOptions) (direct, relayed bench.Result, err error) {
	var users []bench.Credentials
	for i := base; i < base+100 && len(users) < 2*o.Pairs; i++ {
		if home(benchUser(i)) == nodes[0] {
			users = append(users, bench.Credentials{User: benchUser(i), Password: benchPassword})
		}
	}
	if len(users) < 2 {
		return direct, relayed, errors.New("no pair of accounts on the first node")
	}
	run := func(n *benchNode) (bench.Result, error) {
		return bench.RunC2S(ctx, bench.Config{Addr: n.c2s, Domain: "localhost", Users: users, Pairs: len(users) / 2,
			Messages: o.Messages, Window: 32, InsecureTLS: true})
	}
	if direct, err = run(nodes[0]); err != nil {
		return direct, relayed, err
	}
	relayed, err = run(nodes[1])
	return direct, relayed, err
}

// benchNode is one pushd process of the bench.
type benchNode struct {
	*benchProc
	name, c2s, admin string
}

// metric reads one series of the node's /metrics (readMetric); a missing
// series reads 0.
func (n *benchNode) metric(series string) (float64, error) {
	v, _, err := readMetric(n.admin, series)
	return v, err
}

// readMetric reads one series, labels included (`name{label="v"}`), from
// the /metrics of the admin listener at addr; found is false if the node
// does not export it.
func readMetric(addr, series string) (v float64, found bool, err error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(s, 64)
			return v, err == nil, err
		}
	}
	return 0, false, sc.Err()
}

// sum reads one series on every node and adds them up.
func sum(nodes []*benchNode, series string) (float64, error) {
	total := 0.0
	for _, n := range nodes {
		v, err := n.metric(series)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", n.name, err)
		}
		total += v
	}
	return total, nil
}

// waitUntil polls cond every 20 ms until it holds, fails or limit passes.
func waitUntil(what string, limit time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s (last error: %v)", limit, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quiet waits until a counter summed over the nodes stops moving for half
// a second.
func quiet(nodes []*benchNode, series string) error {
	last, still := -1.0, 0
	return waitUntil(series+" to settle", 2*time.Minute, func() (bool, error) {
		v, err := sum(nodes, series)
		if v == last {
			still++
		} else {
			last, still = v, 0
		}
		return err == nil && still >= 25, err
	})
}

// startBenchCluster starts one pushd process per name, each with the
// bench accounts on disk and extra appended to its config, and waits until
// every member sees every other alive.
func startBenchCluster(ctx context.Context, exe string, names []string, users int, extra string) (map[string]*benchNode, func(), error) {
	ports, err := freePorts(5 * len(names))
	if err != nil {
		return nil, nil, err
	}
	nodes := map[string]*benchNode{}
	stop := func() {
		for _, n := range nodes {
			n.stop()
		}
	}
	loop := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	var record []byte
	for i, name := range names {
		var p *benchProc
		p, record, err = startBenchProc(ctx, exe, users, record, loopbackNodeConfig(name, i, ports, extra), nil)
		if err != nil {
			stop()
			return nil, nil, err
		}
		n := &benchNode{benchProc: p, name: name, c2s: loop(ports[5*i]), admin: loop(ports[5*i+1])}
		nodes[name] = n
		if err := waitListening(ctx, n.c2s, 30*time.Second); err != nil {
			stop()
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	for _, n := range nodes {
		err := waitUntil("the cluster to form", 30*time.Second, func() (bool, error) {
			v, err := n.metric(`pushd_cluster_members{state="alive"}`)
			return v == float64(len(names)), err
		})
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("%s: %w", n.name, err)
		}
	}
	return nodes, stop, nil
}

// logTail prints the last lines of the node's log, for a failed run.
func (n *benchNode) logTail(out io.Writer, lines int) {
	b, err := os.ReadFile(filepath.Join(n.dir, "pushd.log"))
	if err != nil {
		return
	}
	all := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, l := range all[max(0, len(all)-lines):] {
		fmt.Fprintf(out, "%s| %s\n", n.name, l)
	}
}

// loopbackNodeConfig is the config of node i of a cluster on 127.0.0.1
// (benches and tests): its five ports are ports[5i:5i+5] (c2s, admin,
// component, memberlist, replication), and every node but the first joins
// the first; extra is appended.
func loopbackNodeConfig(name string, i int, ports []int, extra string) string {
	loop := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	p := ports[5*i:]
	join := ""
	if i > 0 {
		join = strconv.Quote(loop(ports[3]))
	}
	return fmt.Sprintf(`domain = "localhost"
data_dir = "data"
[c2s]
listen = %q
rate_limit = 0
[admin]
listen = %q
[component]
listen = %q
[log]
level = "warn"
[cluster]
node_name = %q
bind = %q
replication = %q
join = [%s]
secret_key = %q
%s%s`, loop(p[0]), loop(p[1]), loop(p[2]), name, loop(p[3]), loop(p[4]), join, base64.StdEncoding.EncodeToString([]byte("pushd-cluster-k!")), noSIP(extra), extra)
}

// noSIP turns SIP off in a generated node config unless extra configures
// it: many nodes on one machine cannot all have 5060.
func noSIP(extra string) string {
	if strings.Contains(extra, "[sip]") {
		return ""
	}
	return "[sip]\nlisten = \"\"\n"
}

// benchAckedRate has o.Pairs senders each write o.Messages messages to
// its own suspended device, which has the same primary (nothing is
// forwarded: what differs from a lone node is replication alone), each
// acknowledged only once durable (and, in a cluster, held by the backup).
// It returns messages/s and the records/s the nodes applied as backups.
func benchAckedRate(ctx context.Context, nodes []*benchNode, home func(string) *benchNode, base int, o benchClusterOptions) (rate, applied float64, err error) {
	var devs, senders []string
	for i := base; len(devs) < o.Pairs; i += 2 {
		if i+1 >= base+8*o.Pairs {
			return 0, 0, errors.New("not enough accounts for pairs with one primary")
		}
		if home(benchUser(i)) == home(benchUser(i+1)) {
			devs, senders = append(devs, benchUser(i)), append(senders, benchUser(i+1))
		}
	}
	detached, err := sum(nodes, "pushd_streams_detached")
	if err != nil {
		return 0, 0, err
	}
	if _, err := connectSuspended(ctx, devs, home, nil); err != nil {
		return 0, 0, err
	}
	if err := waitUntil("the devices to hibernate", time.Minute, func() (bool, error) {
		v, err := sum(nodes, "pushd_streams_detached")
		return v == detached+float64(len(devs)), err
	}); err != nil {
		return 0, 0, err
	}
	applied0, err := sum(nodes, "pushd_cluster_replication_records_applied_total")
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	errs := make(chan error, len(senders))
	for i, s := range senders {
		go func() {
			_, err := bench.Fill(ctx, bench.FillConfig{Addr: home(s).c2s, Domain: "localhost", Sender: bench.Credentials{User: s, Password: benchPassword},
				To: []string{devs[i] + "@localhost/idle"}, PerRecipient: o.Messages, Window: 32, InsecureTLS: true})
			errs <- err
		}()
	}
	for range senders {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	elapsed := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	applied1, err := sum(nodes, "pushd_cluster_replication_records_applied_total")
	if err != nil {
		return 0, 0, err
	}
	return float64(o.Pairs*o.Messages) / elapsed.Seconds(), (applied1 - applied0) / elapsed.Seconds(), nil
}

// connectSuspended logs each user's device in at its primary with XEP-0198
// (and push, when set) and drops its connection, so that it hibernates.
func connectSuspended(ctx context.Context, users []string, home func(string) *benchNode, push *bench.PushConfig) (time.Duration, error) {
	by := map[*benchNode][]bench.Credentials{}
	for _, u := range users {
		by[home(u)] = append(by[home(u)], bench.Credentials{User: u, Password: benchPassword})
	}
	start := time.Now()
	errs := make(chan error, len(by))
	for n, creds := range by {
		go func() {
			_, err := bench.ConnectIdle(ctx, bench.IdleConfig{Addr: n.c2s, Domain: "localhost", Users: creds, Sessions: len(creds),
				StreamManagement: true, Drop: true, InsecureTLS: true, Push: push})
			if err != nil {
				err = fmt.Errorf("%s: %w", n.name, err)
			}
			errs <- err
		}()
	}
	var err error
	for range by {
		err = errors.Join(err, <-errs)
	}
	return time.Since(start), err
}

type failoverResult struct {
	victim                   string
	onVictim                 int
	login                    time.Duration
	dead, adopted, firstPush time.Duration
	pushes, sent             int
	// acked and arrived count the messages sent during the detection
	// window: acknowledged to their sender, and delivered when their
	// device came back on its new primary (H2: equal).
	acked, arrived int
}

// benchFailover suspends o.Sessions push-enabled devices, kills the
// primary of a third of them while a sender on another node writes to
// them, and times what the survivors do (H3).
func benchFailover(ctx context.Context, nodes []*benchNode, home func(user string) *benchNode, apns *benchAPNS, o benchClusterOptions) (failoverResult, error) {
	var r failoverResult
	victim := nodes[1]
	r.victim = victim.name
	token := func(c bench.Credentials) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(c.User))) }
	var devs, onVictim []string
	victimTokens := map[string]bool{}
	for i := range o.Sessions {
		u := benchUser(i)
		devs = append(devs, u)
		if home(u) == victim {
			onVictim = append(onVictim, u)
			victimTokens[token(bench.Credentials{User: u})] = true
		}
	}
	r.onVictim = len(onVictim)
	detached, err := sum(nodes, "pushd_streams_detached")
	if err != nil {
		return r, err
	}
	if r.login, err = connectSuspended(ctx, devs, home, &bench.PushConfig{Component: "push.localhost", Token: token, Key: apns.deviceKey}); err != nil {
		return r, err
	}
	detached += float64(o.Sessions)
	if err := waitUntil("the devices to hibernate", 5*time.Minute, func() (bool, error) {
		v, err := sum(nodes, "pushd_streams_detached")
		return v == detached, err
	}); err != nil {
		return r, err
	}
	var sender string
	for i := o.Sessions + 8*o.Pairs; sender == ""; i++ {
		if home(benchUser(i)) != victim {
			sender = benchUser(i)
		}
	}
	var survivors []*benchNode
	for _, n := range nodes {
		if n != victim {
			survivors = append(survivors, n)
		}
	}
	to := make([]string, 0, 200)
	for _, u := range onVictim[:min(200, len(onVictim))] {
		to = append(to, u+"@localhost/idle")
	}
	r.sent = len(to)
	before := len(apns.Requests())

	killed := time.Now()
	sig := syscall.SIGKILL
	if o.Stop == "term" {
		sig = syscall.SIGTERM
	}
	if err := victim.cmd.Process.Signal(sig); err != nil {
		return r, err
	}
	// Pushes for the victim's devices: none was written to before the
	// kill, so every one of them comes from a survivor.
	first := make(chan time.Duration, 1)
	go func() {
		for time.Since(killed) < time.Minute {
			for _, q := range apns.Requests()[before:] {
				if victimTokens[q.Token] && q.Status == 200 && apns.opens(q) {
					first <- time.Since(killed)
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	fill := make(chan error, 1)
	go func() {
		res, err := bench.Fill(ctx, bench.FillConfig{Addr: home(sender).c2s, Domain: "localhost", Sender: bench.Credentials{User: sender, Password: benchPassword},
			To: to, PerRecipient: 1, Window: 8, InsecureTLS: true})
		r.acked = res.Sent - res.Bounced
		fill <- err
	}()
	<-victim.done
	err = waitUntil("the survivors to declare the victim dead, or see it leave", time.Minute, func() (bool, error) {
		dead, err := survivors[0].metric(`pushd_cluster_members{state="dead"}`)
		if err != nil {
			return false, err
		}
		left, err := survivors[0].metric(`pushd_cluster_members{state="left"}`)
		return dead == 1 || left == 1, err
	})
	if err != nil {
		return r, err
	}
	r.dead = time.Since(killed)
	err = waitUntil("the survivors to adopt the victim's devices", time.Minute, func() (bool, error) {
		v, err := sum(survivors, "pushd_streams_detached")
		return v == detached, err
	})
	if err != nil {
		return r, err
	}
	r.adopted = time.Since(killed)
	select {
	case r.firstPush = <-first:
	case <-time.After(time.Minute):
		return r, errors.New("no push from a survivor within a minute of the kill")
	}
	if err := <-fill; err != nil {
		return r, fmt.Errorf("sender: %w", err)
	}
	// Every device written to is pushed (coalescing may merge none here:
	// one message each).
	err = waitUntil("a push for every message sent after the kill", time.Minute, func() (bool, error) {
		got := map[string]bool{}
		for _, q := range apns.Requests()[before:] {
			if victimTokens[q.Token] && q.Status == 200 {
				got[q.Token] = true
			}
		}
		r.pushes = len(got)
		if len(got) == r.sent {
			return true, nil
		}
		return false, fmt.Errorf("%d of %d devices pushed", len(got), r.sent)
	})
	if err != nil {
		return r, err
	}
	// Each device written to comes back on its new primary and gets
	// what was queued for it (M5).
	var names []string
	byName := map[string]*benchNode{}
	for _, n := range survivors {
		names = append(names, n.name)
		byName[n.name] = n
	}
	after := cluster.NewPlacement(names)
	for _, u := range onVictim[:len(to)] {
		got, err := bench.Collect(ctx, byName[after.Primary(u+"@localhost")].c2s, "localhost",
			bench.Credentials{User: u, Password: benchPassword}, "idle", true)
		if err != nil {
			return r, fmt.Errorf("%s back on its new primary: %w", u, err)
		}
		r.arrived += got
	}
	if r.arrived != r.acked {
		return r, fmt.Errorf("H2: %d messages sent during the detection window acknowledged, %d arrived", r.acked, r.arrived)
	}
	return r, nil
}

// benchAPNS is the bench's APNS provider, and the one payload key every
// bench device registers with.
type benchAPNS struct {
	*apnsProvider
	dir       string
	key       [payload.KeySize]byte
	deviceKey string // base64 of key
	hook      atomic.Pointer[func(apnstest.Request)]
}

// onRequest sets (nil: clears) the function that hears every request as
// it is answered.
func (a *benchAPNS) onRequest(fn func(apnstest.Request)) {
	if fn == nil {
		a.hook.Store(nil)
		return
	}
	a.hook.Store(&fn)
}

func (a *benchAPNS) close() {
	a.Close()
	_ = os.RemoveAll(a.dir)
}

// opens reports whether a push's payload decrypts under the devices' key:
// it went the whole path, sealing included.
func (a *benchAPNS) opens(q apnstest.Request) bool {
	var b struct{ Enc string }
	if json.Unmarshal(q.Body, &b) != nil {
		return false
	}
	p, err := payload.Open(a.key, b.Enc)
	return err == nil && p.Body != ""
}

// benchAPNSServer starts the bench's APNS provider and returns it with
// the [apns] section that points a node at it; opts are the server's
// (OnRequest is the bench's own).
func benchAPNSServer(opts apnstest.Options) (*benchAPNS, string, error) {
	dir, err := os.MkdirTemp("", "pushd-bench-apns-")
	if err != nil {
		return nil, "", err
	}
	a := &benchAPNS{dir: dir}
	opts.OnRequest = func(q apnstest.Request) {
		if h := a.hook.Load(); h != nil {
			(*h)(q)
		}
	}
	p, err := newAPNSProvider(dir, opts)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, "", err
	}
	a.apnsProvider = p
	_, _ = rand.Read(a.key[:])
	a.deviceKey = base64.StdEncoding.EncodeToString(a.key[:])
	return a, p.section(), nil
}
