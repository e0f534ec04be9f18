package peertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a child started by Start: it runs in its own process group,
// its output goes to the test log, and it is killed (group-wide) and
// reaped on test cleanup.
type Process struct {
	Cmd    *exec.Cmd
	name   string
	out    syncBuffer // stdout and stderr, written from two goroutines
	stdout *logWriter
	stderr *logWriter

	done    chan struct{}
	waitErr error
	once    sync.Once
}

// Start starts cmd in a new process group with its stdout and stderr logged
// to t (prefixed by name) and registers a cleanup that kills the group and
// waits for the process. If cmd.Stdout or cmd.Stderr is already set, that
// writer receives a copy of the output too.
func Start(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, name: name, done: make(chan struct{})}
	p.stdout = newLogWriter(t, name+": ", &p.out)
	p.stderr = newLogWriter(t, name+"! ", &p.out)
	// A writer the caller already set (e.g. a line reader) gets a copy.
	if cmd.Stdout != nil {
		cmd.Stdout = io.MultiWriter(p.stdout, cmd.Stdout)
	} else {
		cmd.Stdout = p.stdout
	}
	if cmd.Stderr != nil {
		cmd.Stderr = io.MultiWriter(p.stderr, cmd.Stderr)
	} else {
		cmd.Stderr = p.stderr
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		t.Fatalf("peertest: start %s: %v", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		p.stdout.flush()
		p.stderr.flush()
		close(p.done)
	}()
	t.Cleanup(func() { p.Stop(5 * time.Second) })
	return p
}

// PID is the process id (also the process group id).
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Exited returns nil while the process runs, and an error describing its
// exit once it has ended.
func (p *Process) Exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", p.name, p.waitErr)
	default:
		return nil
	}
}

// Err is the process's exit error (nil: exit status 0) once Done is
// closed.
func (p *Process) Err() error {
	<-p.done
	return p.waitErr
}

// Done is closed when the process has exited and its output is logged.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output is everything the process wrote so far (stdout and stderr).
func (p *Process) Output() string { return p.out.String() }

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Stop sends SIGTERM to the process group, then SIGKILL after grace, and
// waits for the process. It is safe to call more than once.
func (p *Process) Stop(grace time.Duration) error {
	p.once.Do(func() {
		pgid := p.Cmd.Process.Pid
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(grace):
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				<-p.done
			}
		}
		// Anything the leader left behind in its group goes too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
	return p.waitErr
}

// Kill sends SIGKILL to the process group and waits.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Run runs cmd to completion under ctx with stdout and stderr logged to t,
// killing its process group if ctx ends first. It returns stdout.
func Run(ctx context.Context, t testing.TB, name string, cmd *exec.Cmd) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	lw := newLogWriter(t, name+": ", &out)
	ew := newLogWriter(t, name+"! ", nil)
	cmd.Stdout = lw
	cmd.Stderr = ew
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
		err = errors.Join(fmt.Errorf("%s: %w", name, ctx.Err()), err)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // leftovers in the group
	lw.flush()
	ew.flush()
	return out.Bytes(), err
}
