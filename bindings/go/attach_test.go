package qm_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// startQEMUByHand starts a -machine none QEMU whose monitor listens at a unix socket, as a user
// would, and returns the socket's path and the process (killed and reaped at cleanup: qm never
// does it for a QEMU it did not start).
func startQEMUByHand(t *testing.T) (string, *exec.Cmd) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(qemu, "-machine", "none", "-display", "none", "-nodefaults",
		"-qmp", fmt.Sprintf("unix:%s,server=on,wait=off", sock))
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(guestTimeout)
	for {
		// Listening, not only bound: QEMU binds the file a moment before it listens. The
		// probe is closed at once; QEMU takes it as a client that left.
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU never created %s", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return sock, cmd
}

// running reports whether the process has not exited (signal 0 reaches a live process, and
// startQEMUByHand's cleanup is the only one that reaps it).
func running(cmd *exec.Cmd) bool {
	return cmd.Process.Signal(syscall.Signal(0)) == nil
}

func TestAttachDetachLeavesQEMURunning(t *testing.T) {
	sock, cmd := startQEMUByHand(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()

	m, err := qm.Attach(ctx, "unix:"+sock, "")
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if !m.Attached() || !m.Running() || m.PID() != 0 {
		t.Fatalf("attached=%v running=%v pid=%d", m.Attached(), m.Running(), m.PID())
	}
	if _, err := m.Cmd(ctx, "stop", nil); err != nil {
		t.Fatalf("stop: %v", err)
	}
	ev, err := m.EventWait(ctx, qm.EventFilter{Name: "STOP"})
	if err != nil || ev.Name != "STOP" {
		t.Fatalf("EventWait STOP: %v %v", ev, err)
	}
	if err := m.Attach(ctx, "unix:"+sock, ""); !errors.Is(err, qm.ErrState) {
		t.Fatalf("second Attach: %v, want ErrState", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown (detach): %v", err)
	}
	if m.Attached() || !running(cmd) {
		t.Fatalf("after detach: attached=%v, QEMU running=%v", m.Attached(), running(cmd))
	}
	// The monitor is free again: attach once more, and let Close detach.
	if err := m.Attach(ctx, sock, ""); err != nil {
		t.Fatalf("re-Attach: %v", err)
	}
	status, err := m.Cmd(ctx, "query-status", nil)
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	if want := `"status":"paused"`; !strings.Contains(string(status), want) {
		t.Fatalf("query-status = %s, want %s", status, want)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !running(cmd) {
		t.Fatal("Close must detach, leaving QEMU running")
	}
}

func TestAttachRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	if _, err := qm.Attach(ctx, filepath.Join(t.TempDir(), "nobody.sock"), ""); !errors.Is(err, qm.ErrIO) {
		t.Fatalf("Attach to nothing: %v, want ErrIO", err)
	}
	if _, err := qm.Attach(ctx, "tcp:nohost", ""); !errors.Is(err, qm.ErrInvalid) {
		t.Fatalf("Attach to a bad address: %v, want ErrInvalid", err)
	}
}
