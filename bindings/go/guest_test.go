package qm_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// The echo guest: banner on the console, echo, power off from the console, SHUTDOWN event
// from the guest, Wait, exit code 0.
func TestGuestConsole(t *testing.T) {
	ctx := ctxT(t)
	const banner = "hello from the Go test guest"
	m := newMachine(t, guestOptions(t, banner, qm.GuestEcho, 0)...)
	_, err := m.Console()
	mustErr(t, "Console before launch", err, qm.ErrState)
	if err := m.Launch(ctx); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	con, err := m.Console()
	if err != nil {
		t.Fatalf("Console: %v", err)
	}
	defer con.Close()
	if _, err := readUntil(con, banner+"\r\n", guestTimeout); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(con, "echo 42"); err != nil {
		t.Fatal(err)
	}
	if _, err := readUntil(con, "echo 42", guestTimeout); err != nil {
		t.Fatal(err)
	}
	// A second console handle works too (another duplicate); closing it leaves the first.
	con2, err := m.Console()
	if err != nil {
		t.Fatal(err)
	}
	con2.Close()
	// QMP works while the guest runs.
	if st, err := qm.Decode[struct{ Status string }](m.Cmd(ctx, "query-status", nil)); err != nil || st.Status != "running" {
		t.Fatalf("query-status = %+v, %v", st, err)
	}
	// A read blocked on the console honours its deadline.
	con.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := con.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v", err)
	}
	con.SetReadDeadline(time.Time{})

	if _, err := io.WriteString(con, "p"); err != nil { // the echo guest powers off on 'p'
		t.Fatal(err)
	}
	ev, err := m.EventWait(ctx, qm.EventFilter{Name: "SHUTDOWN", Match: map[string]any{"data": map[string]any{"guest": true}}})
	if err != nil {
		t.Fatalf("EventWait SHUTDOWN: %v", err)
	}
	var data struct{ Reason string }
	if json.Unmarshal(ev.Data, &data); data.Reason != "guest-shutdown" {
		t.Fatalf("SHUTDOWN data %s", ev.Data)
	}
	con.Close() // before Wait: nobody reads it any more
	if err := m.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if code, ok := m.ExitCode(); !ok || code != 0 {
		t.Fatalf("exit code %d, %v", code, ok)
	}
	_, err = m.Console()
	mustErr(t, "Console after shutdown", err, qm.ErrState)
}

// The other guest actions: exit with a status, power off at once, halt (Wait's deadline).
func TestGuestActions(t *testing.T) {
	ctx := ctxT(t)
	if got := qm.GuestExitStatus(21); got != 43 {
		t.Fatalf("GuestExitStatus(21) = %d", got)
	}
	// Paused (-S) until QMP is up: a guest that ends at boot could otherwise end QEMU during
	// the handshake on a loaded machine.
	m := newMachine(t, append(guestOptions(t, "exiting", qm.GuestExit, 21), qm.WithArgs("-S"))...)
	if err := m.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Cmd(ctx, "cont", nil); err != nil {
		t.Fatal(err)
	}
	con, err := m.Console()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readUntil(con, "exiting\r\n", guestTimeout); err != nil {
		t.Fatal(err)
	}
	con.Close()
	if err := m.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if code, ok := m.ExitCode(); !ok || code != qm.GuestExitStatus(21) {
		t.Fatalf("exit code %d, %v", code, ok)
	}

	// Power off at once, with the console drained into a log file.
	consoleLog := filepath.Join(t.TempDir(), "console.log")
	m = newMachine(t, append(guestOptions(t, "powering off", qm.GuestPowerOff, 0), qm.WithConsoleLog(consoleLog))...)
	if err := m.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if code, _ := m.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if b, err := os.ReadFile(consoleLog); err != nil || !strings.Contains(string(b), "powering off\r\n") {
		t.Fatalf("console log %q, %v", b, err)
	}

	// A halted guest never stops: Wait ends at its deadline, killing QEMU.
	m = newMachine(t, append(guestOptions(t, "halting", qm.GuestHalt, 0), qm.WithDrainConsole(true))...)
	if err := m.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	con, err = m.Console()
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	if _, err := readUntil(con, "halting\r\n", guestTimeout); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	mustErr(t, "Wait for a halted guest", m.Wait(wctx), qm.ErrAbnormalShutdown, context.DeadlineExceeded)
	if m.Running() {
		t.Fatal("running")
	}
	// With the drain, the console file reads EOF once the machine is gone.
	con.SetReadDeadline(time.Now().Add(guestTimeout))
	if _, err := io.ReadAll(con); err != nil {
		t.Fatalf("reading the console to EOF: %v", err)
	}
}

func TestGuestImageErrors(t *testing.T) {
	dir := t.TempDir()
	err := qm.WriteGuestImage(filepath.Join(dir, "g.img"), strings.Repeat("x", qm.MaxGuestBanner+1), qm.GuestEcho, 0)
	mustErr(t, "a banner too long", err, qm.ErrInvalid)
	err = qm.WriteGuestImage(filepath.Join(dir, "g.img"), "hi", qm.GuestAction(99), 0)
	mustErr(t, "an unknown action", err, qm.ErrInvalid)
	err = qm.WriteGuestImage(filepath.Join(dir, "no", "such", "dir", "g.img"), "hi", qm.GuestEcho, 0)
	mustErr(t, "an unwritable path", err, qm.ErrIO)
	img := filepath.Join(dir, "ok.img")
	if err := qm.WriteGuestImage(img, "hi", qm.GuestEcho, 0); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(img); err != nil || fi.Size() != 512 {
		t.Fatalf("image: %v, %v", fi, err)
	}
	args, err := qm.GuestQEMUArgs(img)
	if err != nil || len(args) == 0 || !strings.Contains(strings.Join(args, " "), img) {
		t.Fatalf("GuestQEMUArgs = %q, %v", args, err)
	}
}

// The console taken before Wait stays usable during it (to tell the guest to power off), and
// Console during a Wait fails at once with ErrState (the library closed its descriptor).
func TestConsoleDuringWait(t *testing.T) {
	ctx := ctxT(t)
	m := newMachine(t, guestOptions(t, "ready", qm.GuestEcho, 0)...)
	if err := m.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	con, err := m.Console()
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	if _, err := readUntil(con, "ready\r\n", guestTimeout); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Wait(ctx) }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	_, err = m.Console()
	mustErr(t, "Console during Wait", err, qm.ErrState)
	if d := time.Since(start); d > cancelBound {
		t.Fatalf("Console during Wait took %v", d)
	}
	if _, err := io.WriteString(con, "p"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if code, ok := m.ExitCode(); !ok || code != 0 {
		t.Fatalf("exit code %d, %v", code, ok)
	}
}
