package qm_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// rawFD is c's descriptor number (c keeps it).
func rawFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(raw uintptr) { fd = int(raw) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// A harness (QEMUQtestMachine) adds a qtest chardev on a socket of its own to qm's arguments.
func TestLaunchArgvWithAQtestSocket(t *testing.T) {
	ctx := ctxT(t)
	m := newMachine(t, qm.WithMachineType("none"), qm.WithConsole("", 0))
	base, err := m.PrepareLaunch()
	if err != nil {
		t.Fatalf("PrepareLaunch: %v", err)
	}
	joined := strings.Join(base, " ")
	if !strings.Contains(joined, "socket,id=mon,fd=") || !strings.Contains(joined, "socket,id=console,fd=") {
		t.Fatalf("base arguments %q", base)
	}
	if again, err := m.PrepareLaunch(); err != nil || !slices.Equal(again, base) {
		t.Fatalf("PrepareLaunch again = %q, %v; want %q", again, err, base)
	}

	ours, theirs := socketPair(t)
	defer ours.Close()
	defer theirs.Close()
	argv := append([]string{qemu}, base...)
	argv = append(argv, "-chardev", fmt.Sprintf("socket,id=qtest,fd=%d", rawFD(t, theirs)),
		"-qtest", "chardev:qtest")
	if err := m.LaunchArgv(ctx, argv, theirs); err != nil {
		t.Fatalf("LaunchArgv: %v", err)
	}
	theirs.Close()
	if got := m.CommandLine(); !slices.Equal(got, argv) {
		t.Fatalf("CommandLine = %q, want %q", got, argv)
	}

	if _, err := ours.Write([]byte("endianness\n")); err != nil {
		t.Fatal(err)
	}
	if err := ours.SetReadDeadline(time.Now().Add(guestTimeout)); err != nil {
		t.Fatal(err)
	}
	reply, err := bufio.NewReader(ours).ReadString('\n')
	if err != nil || !strings.HasPrefix(reply, "OK ") {
		t.Fatalf("qtest replied %q, %v", reply, err)
	}
	chardevs, err := m.Cmd(ctx, "query-chardev", nil)
	if err != nil || !strings.Contains(string(chardevs), `"qtest"`) {
		t.Fatalf("query-chardev = %s, %v", chardevs, err)
	}

	pid := m.PID()
	if pid == 0 || m.LastPID() != pid {
		t.Fatalf("PID %d, LastPID %d", pid, m.LastPID())
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if m.PID() != 0 || m.LastPID() != pid {
		t.Fatalf("after the exit: PID %d, LastPID %d (want 0, %d)", m.PID(), m.LastPID(), pid)
	}
}

func TestLaunchArgvErrors(t *testing.T) {
	ctx := ctxT(t)
	m := newMachine(t, qm.WithMachineType("none"))
	if err := m.AbortLaunch(); err != nil {
		t.Fatalf("AbortLaunch with nothing prepared: %v", err)
	}
	base, err := m.PrepareLaunch()
	if err != nil {
		t.Fatal(err)
	}
	argv := append([]string{qemu}, base...)

	mustErr(t, "empty argv", m.LaunchArgv(ctx, nil), qm.ErrInvalid)
	mustErr(t, "NUL", m.LaunchArgv(ctx, []string{qemu, "a\x00b"}), qm.ErrInvalid)
	mustErr(t, "stdout", m.LaunchArgv(ctx, argv, os.Stdout), qm.ErrInvalid)
	done, cancel := context.WithCancel(ctx)
	cancel()
	mustErr(t, "cancelled context", m.LaunchArgv(done, argv), qm.ErrInterrupted, context.Canceled)
	// None of those touched the prepared run.
	if again, err := m.PrepareLaunch(); err != nil || !slices.Equal(again, base) {
		t.Fatalf("PrepareLaunch after errors = %q, %v", again, err)
	}

	// A missing binary: the usual launch error, and the prepared run is released.
	missing := append([]string{"/nonexistent/qemu-system-x86_64"}, base...)
	err = m.LaunchArgv(ctx, missing)
	var le *qm.LaunchError
	if !errors.As(err, &le) || le.Exited {
		t.Fatalf("LaunchArgv of a missing binary = %v (%T)", err, err)
	}
	mustErr(t, "missing binary", err, qm.ErrLaunch, fs.ErrNotExist, syscall.ENOENT)
	if m.LastPID() != 0 {
		t.Fatalf("LastPID %d after a launch that started nothing", m.LastPID())
	}

	// Launched: every step of the two-phase launch is a state error.
	base, err = m.PrepareLaunch()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LaunchArgv(ctx, append([]string{qemu}, base...)); err != nil {
		t.Fatalf("LaunchArgv: %v", err)
	}
	_, err = m.PrepareLaunch()
	mustErr(t, "PrepareLaunch when launched", err, qm.ErrState)
	mustErr(t, "LaunchArgv when launched", m.LaunchArgv(ctx, argv), qm.ErrState)
	mustErr(t, "AbortLaunch when launched", m.AbortLaunch(), qm.ErrState)
	if _, err := m.Cmd(ctx, "query-status", nil); err != nil {
		t.Fatal(err)
	}
}

func TestLaunchArgvWithoutPrepare(t *testing.T) {
	ctx := ctxT(t)
	m := newMachine(t, qm.WithQMP(false))
	argv := []string{qemu, "-display", "none", "-machine", "none"}
	if err := m.LaunchArgv(ctx, argv); err != nil {
		t.Fatalf("LaunchArgv: %v", err)
	}
	if !m.Running() || !slices.Equal(m.CommandLine(), argv) {
		t.Fatalf("running %v, command line %q", m.Running(), m.CommandLine())
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestAbortLaunchReleasesTheTempDir(t *testing.T) {
	m := newMachine(t, qm.WithMachineType("none"), qm.WithMonitorUnix(""))
	if _, err := m.PrepareLaunch(); err != nil {
		t.Fatal(err)
	}
	dir, err := m.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("temp dir while prepared: %v", err)
	}
	if err := m.AbortLaunch(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temp dir after AbortLaunch: %v", err)
	}
}

func TestQMPTimerGetter(t *testing.T) {
	m := newMachine(t)
	if d, err := m.QMPTimer(); err != nil || d != 30*time.Second {
		t.Fatalf("default QMPTimer = %v, %v", d, err)
	}
	if err := m.Configure(qm.WithQMPTimer(-1)); err != nil {
		t.Fatal(err)
	}
	if d, err := m.QMPTimer(); err != nil || d >= 0 {
		t.Fatalf("QMPTimer without limit = %v, %v", d, err)
	}
	if err := m.Configure(qm.WithQMPTimer(1500 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if d, err := m.QMPTimer(); err != nil || d != 1500*time.Millisecond {
		t.Fatalf("QMPTimer = %v, %v", d, err)
	}
}
