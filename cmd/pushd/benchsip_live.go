package main

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"pushd/internal/bench"
)

// The live part's sipp scenarios and Kamailio config travel in the binary:
// `pushd bench sip` runs anywhere, not only in a checkout.
//
//go:embed benchsip
var benchSIPFiles embed.FS

// sippBuffer is sipp's socket buffer size: its default (64 KiB) drops
// datagrams when the window's answers come in a burst.
const sippBuffer = "4194304"

// benchSIPLive is one proxy's live calls, as sipp saw them.
type benchSIPLive struct {
	Name          string
	Calls, Failed int
	Elapsed       time.Duration
	P50, P99, Max time.Duration // INVITE → 200
	Cores         float64       // the proxy's CPU over Elapsed
	// Why is the first of sipp's reasons for the failed calls.
	Why string
	// Dropped counts the datagrams the kernel dropped for full receive
	// buffers at the proxy, the UAC and the UAS.
	Dropped int64
}

func (l benchSIPLive) rate() float64 { return float64(l.Calls) / l.Elapsed.Seconds() }

// benchSIPPeersMissing says which of sipp and kamailio is not installed
// ("" if both are).
func benchSIPPeersMissing() string {
	var why []string
	if _, err := exec.LookPath("sipp"); err != nil {
		why = append(why, "sipp not found (apt-get install sip-tester)")
	}
	if kamailioPath() == "" {
		why = append(why, "kamailio not found (apt-get install --no-install-recommends kamailio)")
	}
	return strings.Join(why, "; ")
}

// kamailioPath finds kamailio, which Debian puts in /usr/sbin (not on
// every user's PATH).
func kamailioPath() string {
	if p, err := exec.LookPath("kamailio"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/kamailio"); err == nil {
		return "/usr/sbin/kamailio"
	}
	return ""
}

// benchSIPLivePart runs the same sipp load through pushd (at sipAddr,
// process pid) and then through a Kamailio of its own, both proxying to
// one sipp UAS that every live phone registered.
func benchSIPLivePart(ctx context.Context, sipAddr string, pid int, users []string, o benchSIPOptions) ([]benchSIPLive, error) {
	dir, err := os.MkdirTemp("", "pushd-bench-sip-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for _, name := range []string{"uac.xml", "uas.xml", "kamailio.cfg"} {
		b, err := benchSIPFiles.ReadFile("benchsip/" + name)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	var csv strings.Builder
	csv.WriteString("SEQUENTIAL\n")
	for _, u := range users {
		csv.WriteString(u + ";\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "callees.csv"), []byte(csv.String()), 0o600); err != nil {
		return nil, err
	}
	ports, err := freeUDPPorts(3)
	if err != nil {
		return nil, err
	}
	uasAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	// A fresh UAS for each proxy, on the port the phones registered:
	// neither run inherits the other's calls.
	uas := func(name string) (*child, error) {
		return startChild(ctx, dir, name+"-uas.log", "sipp", "-sf", "uas.xml", "-i", "127.0.0.1", "-p", strconv.Itoa(ports[0]),
			"-nostdin", "-buff_size", sippBuffer, "-trace_err", "-error_file", filepath.Join(dir, name+"-uas-errors.log"))
	}
	none := func(int) string { return "" }
	if err := registerSIPPhones(ctx, sipAddr, users, uasAddr, none); err != nil {
		return nil, fmt.Errorf("pushd: %w", err)
	}
	var out []benchSIPLive
	phones, err := uas("pushd")
	if err != nil {
		return nil, err
	}
	l, err := runSIPpLoad(ctx, dir, "pushd", sipAddr, ports[0], []int{pid}, o)
	phones.stop()
	if err != nil {
		return nil, fmt.Errorf("pushd: %w", err)
	}
	out = append(out, l)

	kamAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	kam, err := startChild(ctx, dir, "kamailio.log", kamailioPath(), "-DD", "-E", "-f", filepath.Join(dir, "kamailio.cfg"),
		"-w", dir, "-Y", dir, "-P", filepath.Join(dir, "kamailio.pid"), "-l", "udp:"+kamAddr,
		// Its default 64 MiB of shared memory runs out at a few thousand
		// calls/s (each transaction is kept 5 s after it ends), and it
		// then drops requests.
		"-m", "1024")
	if err != nil {
		return nil, err
	}
	defer kam.stop()
	if err := waitSIPOptions(kamAddr, 15*time.Second); err != nil {
		return nil, fmt.Errorf("kamailio: %w\n%s", err, kam.tail(20))
	}
	if err := registerSIPPhones(ctx, kamAddr, users, uasAddr, none); err != nil {
		return nil, fmt.Errorf("kamailio: %w", err)
	}
	if phones, err = uas("kamailio"); err != nil {
		return nil, err
	}
	defer phones.stop()
	l, err = runSIPpLoad(ctx, dir, kamailioVersion(), kamAddr, ports[0], append([]int{kam.cmd.Process.Pid}, childPIDs(kam.cmd.Process.Pid)...), o)
	if err != nil {
		return nil, fmt.Errorf("kamailio: %w\n%s", err, kam.tail(20))
	}
	return append(out, l), nil
}

// runSIPpLoad runs the sipp UAC against target until it made o.LiveCalls
// calls, and reads its response times; procs are the proxy's processes,
// whose CPU it reports, and uasPort the UAS's, whose drops it counts.
func runSIPpLoad(ctx context.Context, dir, name, target string, uasPort int, procs []int, o benchSIPOptions) (benchSIPLive, error) {
	l := benchSIPLive{Name: name}
	rate := o.LiveRate
	if rate == 0 {
		rate = 1e6 // sipp's window (-l) is then the only bound
	}
	port, err := freeUDPPorts(1)
	if err != nil {
		return l, err
	}
	stat := filepath.Join(dir, name+"-stat.csv")
	args := []string{"-sf", "uac.xml", "-inf", "callees.csv", "-i", "127.0.0.1", "-p", strconv.Itoa(port[0]),
		"-m", strconv.Itoa(o.LiveCalls), "-l", strconv.Itoa(o.LiveWindow), "-r", strconv.FormatFloat(rate, 'f', 0, 64), "-rp", "1000",
		"-nostdin", "-buff_size", sippBuffer, "-recv_timeout", "10000", "-timeout", "600s",
		"-trace_stat", "-stf", stat, "-fd", "3600",
		"-trace_rtt", "-rtt_freq", "1",
		"-trace_err", "-error_file", filepath.Join(dir, name+"-errors.log"), target}
	_, tp, _ := net.SplitHostPort(target)
	targetPort, _ := strconv.Atoi(tp)
	watched := []int{targetPort, uasPort, port[0]}
	cpu0, drops0 := procsCPU(procs), udpDrops(watched...)
	start := time.Now()
	uac, err := startChild(ctx, dir, name+"-uac.log", "sipp", args...)
	if err != nil {
		return l, err
	}
	// The UAC's count goes with its socket: keep the last reading.
	drops := make(chan int64, 1)
	go func() {
		last := drops0
		for {
			select {
			case <-uac.done:
				drops <- last
				return
			case <-time.After(100 * time.Millisecond):
				last = max(last, udpDrops(watched...))
			}
		}
	}()
	err = uac.wait(10 * time.Minute)
	l.Elapsed = time.Since(start)
	l.Dropped = <-drops - drops0
	if cpu := procsCPU(procs) - cpu0; l.Elapsed > 0 {
		l.Cores = cpu.Seconds() / l.Elapsed.Seconds()
	}
	// sipp exits 1 when some calls failed: the counts say how many.
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		return l, fmt.Errorf("sipp: %w\n%s", err, uac.tail(20))
	}
	ok, failed, err := sippCounts(stat)
	if err != nil {
		return l, fmt.Errorf("%w\n%s", err, uac.tail(20))
	}
	l.Calls, l.Failed = ok, failed
	if failed > 0 {
		l.Why = sippFailure(filepath.Join(dir, name+"-errors.log"))
	}
	lat, err := sippResponseTimes(dir, uac.cmd.Process.Pid)
	if err != nil {
		return l, err
	}
	l.P50, l.P99, l.Max = percentiles(lat)
	return l, nil
}

// sippCounts reads the last line of sipp's statistics file: the
// successful and failed calls of the whole run.
func sippCounts(file string) (ok, failed int, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, 0, fmt.Errorf("sipp statistics: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return 0, 0, errors.New("sipp statistics: no data line")
	}
	head, last := strings.Split(lines[0], ";"), strings.Split(lines[len(lines)-1], ";")
	col := func(name string) (int, error) {
		i := slices.Index(head, name)
		if i < 0 || i >= len(last) {
			return 0, fmt.Errorf("sipp statistics: no column %s", name)
		}
		return strconv.Atoi(strings.TrimSpace(last[i]))
	}
	if ok, err = col("SuccessfulCall(C)"); err != nil {
		return 0, 0, err
	}
	failed, err = col("FailedCall(C)")
	return ok, failed, err
}

// sippFailure is the first line of sipp's error file that ended a call
// (late messages of calls already over are only noise).
func sippFailure(file string) string {
	b, _ := os.ReadFile(file)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "aborting") || strings.Contains(l, "Aborting") || strings.Contains(l, "timeout") {
			if i := strings.Index(l, ": "); i >= 0 {
				l = l[i+2:]
			}
			return l
		}
	}
	return ""
}

// sippResponseTimes reads the response times sipp -trace_rtt wrote (its
// file is named after the scenario and sipp's pid) for response time 1.
func sippResponseTimes(dir string, pid int) ([]time.Duration, error) {
	f, err := os.Open(filepath.Join(dir, "uac_"+strconv.Itoa(pid)+"_rtt.csv"))
	if err != nil {
		return nil, fmt.Errorf("sipp response times: %w", err)
	}
	defer f.Close()
	var out []time.Duration
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// date_ms;response_time_ms;rtd_no
		f := strings.Split(sc.Text(), ";")
		if len(f) < 3 {
			continue
		}
		ms, err := strconv.ParseFloat(strings.TrimSpace(f[1]), 64)
		if err != nil {
			continue // the header
		}
		out = append(out, time.Duration(ms*float64(time.Millisecond)))
	}
	return out, sc.Err()
}

// child is a process of the live part: in a process group of its own
// (Kamailio forks its workers), killed with its parent.
type child struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startChild(ctx context.Context, dir, log, name string, args ...string) (*child, error) {
	f, err := os.Create(filepath.Join(dir, log))
	if err != nil {
		return nil, err
	}
	c := &child{cmd: exec.CommandContext(ctx, name, args...), log: f.Name(), done: make(chan struct{})}
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = f, f
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		_ = f.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) wait(limit time.Duration) error {
	select {
	case <-c.done:
		return c.err
	case <-time.After(limit):
		c.stop()
		return fmt.Errorf("%s: still running after %v", c.cmd.Path, limit)
	}
}

// stop ends the child's process group, politely first: sipp, which
// ignores SIGTERM and SIGINT, holds nothing that a SIGKILL would lose.
func (c *child) stop() {
	pgid := c.cmd.Process.Pid
	sig := syscall.SIGTERM
	if filepath.Base(c.cmd.Path) == "sipp" {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(-pgid, sig)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-c.done
	}
}

// tail is the end of the child's output, for an error.
func (c *child) tail(lines int) string {
	b, _ := os.ReadFile(c.log)
	all := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// waitSIPOptions sends OPTIONS to a UDP SIP server until any answer comes.
func waitSIPOptions(addr string, limit time.Duration) error {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer conn.Close()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	local := conn.LocalAddr().String()
	deadline := time.Now().Add(limit)
	buf := make([]byte, 4096)
	for n := 0; time.Now().Before(deadline); n++ {
		msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-ready-%d;rport\r\nMax-Forwards: 70\r\n"+
			"From: <sip:bench@localhost>;tag=r%d\r\nTo: <sip:%s>\r\nCall-ID: ready-%d@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
			addr, local, n, n, addr, n)
		if _, err := conn.WriteToUDP([]byte(msg), to); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, _, err := conn.ReadFromUDP(buf); err == nil {
			return nil
		}
	}
	return fmt.Errorf("no answer to OPTIONS at %s within %v", addr, limit)
}

// childPIDs are the processes whose parent is pid (Kamailio's workers).
func childPIDs(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if f := strings.Fields(string(b[i+1:])); i >= 0 && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

func procsCPU(pids []int) time.Duration {
	var total time.Duration
	for _, p := range pids {
		if d, err := bench.ProcessCPU(p); err == nil {
			total += d
		}
	}
	return total
}

// udpDrops sums the datagrams the kernel dropped (receive buffer full)
// on the UDP sockets bound to these ports of 127.0.0.1, from /proc/net/udp.
// A socket's count goes when it closes: read it while they are open.
func udpDrops(ports ...int) int64 {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0
	}
	want := map[string]bool{}
	for _, p := range ports {
		want[fmt.Sprintf("0100007F:%04X", p)] = true
	}
	var n int64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 13 || !want[f[1]] {
			continue
		}
		d, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
		n += d
	}
	return n
}

// kamailioVersion is "kamailio 5.6.3", or "kamailio".
func kamailioVersion() string {
	out, err := exec.Command(kamailioPath(), "-v").Output()
	if err == nil {
		if _, v, ok := strings.Cut(string(out), "version: kamailio "); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return "kamailio " + f[0]
			}
		}
	}
	return "kamailio"
}
