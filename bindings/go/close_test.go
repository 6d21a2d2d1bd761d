package qm_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

func TestCloseTwice(t *testing.T) {
	m, err := qm.New(qemu, qm.WithMachineType("none"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Launch(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	pid := m.PID()
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if alive(pid) {
		t.Fatalf("QEMU (pid %d) runs after Close", pid)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Every call on a closed machine fails with ErrClosed (and ErrState); accessors return
	// zero values.
	ctx := context.Background()
	_, err = m.Cmd(ctx, "query-status", nil)
	mustErr(t, "Cmd after Close", err, qm.ErrClosed, qm.ErrState)
	mustErr(t, "Launch after Close", m.Launch(ctx), qm.ErrClosed)
	_, err = m.EventWait(ctx, qm.EventFilter{Name: "STOP"})
	mustErr(t, "EventWait after Close", err, qm.ErrClosed)
	mustErr(t, "Shutdown after Close", m.Shutdown(ctx), qm.ErrClosed)
	mustErr(t, "Configure after Close", m.Configure(qm.WithName("x")), qm.ErrClosed)
	_, err = m.Console()
	mustErr(t, "Console after Close", err, qm.ErrClosed)
	_, err = m.TempDir()
	mustErr(t, "TempDir after Close", err, qm.ErrClosed)
	if m.Running() || m.PID() != 0 || m.Name() != "" || m.Binary() != "" || m.Args() != nil {
		t.Fatal("accessors after Close")
	}
	if _, ok := m.ExitCode(); ok {
		t.Fatal("exit code after Close")
	}
}

// Close interrupts calls blocked on the machine (with and without a context that can end),
// waits for them, and shuts QEMU down; concurrent Closes all return.
func TestCloseInterruptsBlockedCalls(t *testing.T) {
	m, err := qm.New(qemu, qm.WithMachineType("none"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Launch(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	pid := m.PID()
	cctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := map[string]func() error{
		"EventWait(Background)": func() error {
			_, err := m.EventWait(context.Background(), qm.EventFilter{Name: "NO_SUCH_EVENT"})
			return err
		},
		"Event(WithCancel)": func() error { _, err := m.Event(cctx); return err },
		"Events(Background)": func() error {
			_, err := m.Events(context.Background())
			return err
		},
	}
	done := make(chan error, len(calls))
	for _, call := range calls {
		go func(call func() error) { done <- call() }(call)
	}
	time.Sleep(200 * time.Millisecond)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Close()
		}()
	}
	for range calls {
		select {
		case err := <-done:
			mustErr(t, "a call interrupted by Close", err, qm.ErrInterrupted, qm.ErrClosed)
		case <-time.After(cancelBound):
			t.Fatal("Close did not interrupt a blocked call")
		}
	}
	wg.Wait()
	t.Logf("Close with %d blocked calls took %v", len(calls), time.Since(start))
	if alive(pid) {
		t.Fatal("QEMU runs after Close")
	}
}

// Close interrupts a blocked Wait, which kills QEMU.
func TestCloseDuringWait(t *testing.T) {
	m, err := qm.New(qemu, qm.WithMachineType("none"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Launch(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	pid := m.PID()
	done := make(chan error, 1)
	go func() { done <- m.Wait(context.Background()) }()
	time.Sleep(200 * time.Millisecond)
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	mustErr(t, "Wait interrupted by Close", <-done, qm.ErrAbnormalShutdown, qm.ErrClosed)
	if alive(pid) {
		t.Fatal("QEMU runs after Close")
	}
}

// A Machine dropped without Close is closed by its finalizer, which kills its QEMU.
func TestFinalizer(t *testing.T) {
	pid := launchAndDrop(t)
	deadline := time.Now().Add(20 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	if alive(pid) {
		t.Fatalf("QEMU (pid %d) of a dropped machine still runs", pid)
	}
}

//go:noinline
func launchAndDrop(t *testing.T) int {
	m, err := qm.New(qemu, qm.WithMachineType("none"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Launch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Cmd(context.Background(), "query-status", nil); err != nil {
		t.Fatal(err)
	}
	return m.PID()
}
