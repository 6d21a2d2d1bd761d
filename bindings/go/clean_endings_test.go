package qm_test

import (
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// untilExited polls (a bound, never a timing assertion) until QEMU has exited by itself.
func untilExited(t *testing.T, m *qm.Machine) {
	t.Helper()
	deadline := time.Now().Add(guestTimeout)
	for m.Running() {
		if time.Now().After(deadline) {
			t.Fatal("QEMU did not exit by itself")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A guest that powers off ends QEMU with status 0: Shutdown afterwards is a clean ending.
func TestShutdownAfterPoweroffIsClean(t *testing.T) {
	ctx := ctxT(t)
	opts := guestOptions(t, "bye", qm.GuestPowerOff, 0)
	// Paused until QMP is up: a guest that ends during the handshake would fail the launch.
	m := newMachine(t, append(opts, qm.WithArgs("-S"))...)
	if err := m.Launch(ctx); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	if _, err := m.Cmd(ctx, "cont", nil); err != nil {
		t.Fatalf("cont: %v", err)
	}
	untilExited(t, m)
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after the guest powered off: %v", err)
	}
	if code, ok := m.ExitCode(); !ok || code != 0 {
		t.Fatalf("exit code %d, %v", code, ok)
	}
}

// A nonzero status by itself is still an abnormal shutdown.
func TestShutdownAfterNonzeroExitIsAbnormal(t *testing.T) {
	ctx := ctxT(t)
	opts := guestOptions(t, "bye", qm.GuestExit, 1)
	m := newMachine(t, append(opts, qm.WithArgs("-S"))...)
	if err := m.Launch(ctx); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	if _, err := m.Cmd(ctx, "cont", nil); err != nil {
		t.Fatalf("cont: %v", err)
	}
	untilExited(t, m)
	mustErr(t, "Shutdown after exit status 3", m.Shutdown(ctx), qm.ErrAbnormalShutdown)
	if code, ok := m.ExitCode(); !ok || code != 3 {
		t.Fatalf("exit code %d, %v", code, ok)
	}
}
