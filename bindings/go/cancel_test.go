package qm_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// cancelBound is how long a cancelled call may take to return in these tests: generous, for
// loaded machines, -race and GOGC=1. The figures measured are logged (and are far lower).
const cancelBound = 2 * time.Second

// blockedThenCancelled runs call in a goroutine, cancels its context once it has blocked for
// a while, and returns the call's error and how long it took to return after the cancel.
func blockedThenCancelled(t *testing.T, call func(ctx context.Context) error) (error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("the call returned before it was cancelled: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		return err, time.Since(start)
	case <-time.After(cancelBound):
		t.Fatalf("the call did not return within %v of the cancel", cancelBound)
	}
	panic("unreachable")
}

func TestCancelEventWait(t *testing.T) {
	m := launched(t)
	var lat []time.Duration
	for i := 0; i < 10; i++ {
		err, d := blockedThenCancelled(t, func(ctx context.Context) error {
			_, err := m.EventWait(ctx, qm.EventFilter{Name: "NO_SUCH_EVENT"}, qm.EventFilter{Name: "NOR_THIS"})
			return err
		})
		mustErr(t, "cancelled EventWait", err, qm.ErrInterrupted, context.Canceled)
		lat = append(lat, d)
	}
	slices.Sort(lat)
	t.Logf("EventWait cancel latency over %d runs: min %v, median %v, max %v", len(lat), lat[0], lat[len(lat)/2], lat[len(lat)-1])
	// The machine is fine afterwards.
	if _, err := m.Cmd(context.Background(), "query-status", nil); err != nil {
		t.Fatal(err)
	}
}

func TestCancelEventAndEvents(t *testing.T) {
	m := launched(t)
	err, d := blockedThenCancelled(t, func(ctx context.Context) error { _, err := m.Event(ctx); return err })
	mustErr(t, "cancelled Event", err, qm.ErrInterrupted, context.Canceled)
	t.Logf("Event cancel latency %v", d)
	err, d = blockedThenCancelled(t, func(ctx context.Context) error { _, err := m.Events(ctx); return err })
	mustErr(t, "cancelled Events", err, qm.ErrInterrupted, context.Canceled)
	t.Logf("Events cancel latency %v", d)
}

// A command QEMU never answers (QEMU is stopped with SIGSTOP) returns when cancelled, and at
// its context's deadline; the connection stays usable once QEMU runs again.
func TestCancelCmd(t *testing.T) {
	m := launched(t)
	stopProcess(t, m.PID())
	err, d := blockedThenCancelled(t, func(ctx context.Context) error {
		_, err := m.Cmd(ctx, "query-status", nil)
		return err
	})
	mustErr(t, "cancelled Cmd", err, qm.ErrInterrupted, context.Canceled)
	t.Logf("Cmd cancel latency %v", d)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = m.QMP(ctx, "query-status", nil)
	mustErr(t, "QMP past its deadline", err, qm.ErrTimeout, context.DeadlineExceeded)
	if d := time.Since(start); d < 290*time.Millisecond || d > 5*time.Second {
		t.Fatalf("QMP with a 300 ms deadline returned after %v", d)
	}
}

// A Launch that never gets its QMP greeting (the "QEMU" is a shell that sleeps) returns when
// its context is cancelled or its deadline passes, and leaves no process behind.
func TestCancelLaunch(t *testing.T) {
	m := newMachine(t, qm.WithMachineType("none"), qm.WithWrapper("sh", "-c", "exec sleep 60", "sh"))
	err, d := blockedThenCancelled(t, func(ctx context.Context) error { return m.Launch(ctx) })
	var le *qm.LaunchError
	if !errors.As(err, &le) {
		t.Fatalf("cancelled Launch = %v (%T)", err, err)
	}
	mustErr(t, "cancelled Launch", err, qm.ErrLaunch, qm.ErrInterrupted, context.Canceled)
	t.Logf("Launch cancel latency %v", d)
	if m.Running() {
		t.Fatal("running after a cancelled launch")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = m.Launch(ctx)
	mustErr(t, "Launch past its deadline", err, qm.ErrLaunch, context.DeadlineExceeded)
	if m.Running() || len(children()) != 0 {
		t.Fatalf("left behind: %v", children())
	}
}

// Wait and Shutdown whose context ends kill QEMU: they never leave it running.
func TestCancelWaitAndShutdown(t *testing.T) {
	m := launched(t)
	pid := m.PID()
	err, d := blockedThenCancelled(t, func(ctx context.Context) error { return m.Wait(ctx) })
	mustErr(t, "cancelled Wait", err, qm.ErrAbnormalShutdown, context.Canceled)
	t.Logf("Wait cancel latency %v", d)
	if alive(pid) || m.Running() {
		t.Fatal("QEMU runs after a cancelled Wait")
	}
	if code, ok := m.ExitCode(); !ok || code != -9 {
		t.Fatalf("exit code %d, %v", code, ok)
	}

	// A shutdown that cannot finish in time (QEMU is frozen) ends with SIGKILL.
	if err := m.Launch(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid = m.PID()
	stopProcess(t, pid)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = m.Shutdown(ctx)
	mustErr(t, "Shutdown past its deadline", err, qm.ErrAbnormalShutdown, context.DeadlineExceeded)
	t.Logf("Shutdown with a 300 ms deadline of a frozen QEMU: %v", time.Since(start))
	if alive(pid) || m.Running() {
		t.Fatal("QEMU runs after an abnormal shutdown")
	}

	// A context that ended before the call: QEMU is killed all the same.
	for _, stop := range []func(context.Context) error{m.Shutdown, m.Wait} {
		if err := m.Launch(context.Background()); err != nil {
			t.Fatal(err)
		}
		pid = m.PID()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := stop(ctx)
		mustErr(t, "Shutdown/Wait with a cancelled context", err, qm.ErrAbnormalShutdown, context.Canceled, qm.ErrInterrupted)
		// The library says why QEMU was killed, and the Go error carries it.
		var e *qm.Error
		if !errors.As(err, &e) || e.Cause == nil || e.Cause.Status != qm.StatusInterrupted {
			t.Fatalf("Shutdown/Wait with a cancelled context: cause %+v, want StatusInterrupted", e)
		}
		if alive(pid) || m.Running() {
			t.Fatal("QEMU runs")
		}
		// Not running: nothing to do, whatever the context.
		if err := stop(ctx); err != nil {
			t.Fatalf("Shutdown/Wait of a stopped machine with a cancelled context: %v", err)
		}
	}
}

// 32 goroutines × 100 commands on one machine, every reply checked: an unknown command's
// error names the command (an echo only its caller can get), mixed with real commands, with
// and without per-call contexts, while a 33rd goroutine pauses and resumes the VM (so events
// arrive while commands are in flight) and a 34th waits for those events.
func TestConcurrentCommands(t *testing.T) {
	const goroutines, perGoroutine, toggles = 32, 100, 20
	m := launched(t)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines+2)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < perGoroutine; i++ {
				if err := oneCommand(m, g, i); err != nil {
					errs <- fmt.Errorf("goroutine %d, command %d: %v", g, i, err)
					return
				}
			}
		}(g)
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < toggles; i++ {
			for _, c := range []string{"stop", "cont"} {
				if _, err := m.Cmd(context.Background(), c, nil); err != nil {
					errs <- fmt.Errorf("%s: %v", c, err)
					return
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
		defer cancel()
		for i := 0; i < toggles; i++ {
			if _, err := m.EventWait(ctx, qm.EventFilter{Name: "RESUME"}); err != nil {
				errs <- fmt.Errorf("RESUME %d: %v", i, err)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d goroutines × %d commands (+%d stop/cont) in %v", goroutines, perGoroutine, 2*toggles, time.Since(start))
}

// oneCommand runs command i of goroutine g and checks its reply.
func oneCommand(m *qm.Machine, g, i int) error {
	ctx := context.Background()
	if g%2 == 1 { // half the callers have a context that can end: a token each call
		c, cancel := context.WithTimeout(ctx, guestTimeout)
		defer cancel()
		ctx = c
	}
	if i%4 == 3 {
		var st struct{ Status string }
		if err := m.CmdInto(ctx, "query-status", nil, &st); err != nil || (st.Status != "running" && st.Status != "paused") {
			return fmt.Errorf("query-status = %+v, %v", st, err)
		}
		return nil
	}
	name := fmt.Sprintf("qm-go-echo-%d-%d", g, i)
	_, err := m.Cmd(ctx, name, map[string]int{"caller": g, "seq": i})
	var qe *qm.QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || !strings.Contains(qe.Desc, "command "+name+" ") {
		return fmt.Errorf("%s answered %v", name, err)
	}
	return nil
}
