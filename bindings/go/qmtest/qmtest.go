// Package qmtest starts QEMU machines in Go tests: each one is closed by t.Cleanup, and when
// the test failed its QEMU log, QMP transcript and console are written with t.Log. A test whose
// QEMU binary is missing is skipped, saying so.
//
//	func TestStatus(t *testing.T) {
//		m := qmtest.New(t, qm.WithMachineType("none"))
//		status, err := m.Cmd(context.Background(), "query-status", nil)
//		...
//	}
//
// Every machine has its own temporary directory (t.TempDir) and a socketpair monitor, so tests
// run under t.Parallel, -count and -race with no shared state. The QEMU binary is $QM_QEMU, or
// qemu-system-x86_64.
package qmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// DefaultQEMU is the QEMU binary when $QM_QEMU names none.
const DefaultQEMU = "qemu-system-x86_64"

// Tail is how much of each log a failing test gets (bytes, from the end).
const Tail = 4000

// BootTimeout bounds LinuxGuest's wait for the guest to boot (TCG on a loaded machine is slow).
const BootTimeout = 300 * time.Second

// GuestReady is what the Linux test guest prints once it is up, with its agent started.
const GuestReady = "qm-guest: ready"

// Binary returns the QEMU binary's path ($QM_QEMU, or qemu-system-x86_64), and skips the test,
// with the reason, when it is missing.
func Binary(t testing.TB) string {
	t.Helper()
	name := os.Getenv("QM_QEMU")
	if name == "" {
		name = DefaultQEMU
	}
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("qmtest: QEMU binary %q not found (set QM_QEMU): %v", name, err)
	}
	return path
}

// New makes a machine configured by opts, launches it and returns it. t.Cleanup shuts it down
// (gracefully, then by force) and frees it, whatever the test did; when the test failed, the
// cleanup first writes QEMU's log, the QMP transcript's tail and the console's tail with t.Log.
// A launch failure fails the test (t.Fatal) with QEMU's exit code, command line and output.
func New(t testing.TB, opts ...qm.Option) *qm.Machine {
	t.Helper()
	m := Prepare(t, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), BootTimeout)
	defer cancel()
	if err := m.Launch(ctx); err != nil {
		t.Fatalf("qmtest: launching %s: %v", m.Name(), err)
	}
	return m
}

// Prepare is New without the launch: the machine is configured and its cleanup registered;
// launch it (or attach it) yourself.
func Prepare(t testing.TB, opts ...qm.Option) *qm.Machine {
	t.Helper()
	binary := Binary(t)
	dir := t.TempDir()
	transcript := filepath.Join(dir, "qmp.jsonl")
	base := []qm.Option{
		qm.WithBaseTempDir(dir),
		qm.WithLogDir(dir),
		qm.WithQMPTranscript(transcript),
	}
	m, err := qm.New(binary, append(base, opts...)...)
	if err != nil {
		t.Fatalf("qmtest: %v", err)
	}
	t.Cleanup(func() {
		var report string
		if t.Failed() {
			report = failureReport(m, transcript)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// A shutdown that had to kill QEMU is not the test's failure: its result says what
		// went wrong. Close frees the machine whatever happened.
		_ = m.Shutdown(ctx)
		if err := m.Close(); err != nil {
			t.Errorf("qmtest: closing %s: %v", m.Name(), err)
		}
		if report != "" {
			t.Log(report)
		}
	})
	return m
}

// failureReport is what a failing test gets to see of m: QEMU's log, the QMP transcript's tail
// and the console's tail, each under a header.
func failureReport(m *qm.Machine, transcript string) string {
	var b strings.Builder
	name := m.Name()
	section := func(title, text, empty string) {
		if text == "" {
			text = empty
		}
		if len(text) > Tail {
			text = "...\n" + text[len(text)-Tail:]
		}
		fmt.Fprintf(&b, "\n--- qm %s: %s ---\n%s\n", name, title, strings.TrimRight(text, "\n"))
	}
	log, _ := m.LogSoFar()
	section("QEMU log", log, "(QEMU wrote nothing)")
	if data, err := os.ReadFile(transcript); err == nil {
		section("QMP transcript (tail)", string(data), "(no QMP messages)")
	}
	if console, err := m.ConsoleTranscript(Tail); err == nil {
		section("console (tail)", console, "(nothing on the console)")
	}
	return b.String()
}

var guest struct {
	once sync.Once
	args []string
	why  string
}

// guestArgs is `guest/linux/build --qemu-args` ($QM_LINUX_GUEST_BUILD, or found above the
// working directory), run once per process; it honours $QM_LINUX_KERNEL and $QM_LINUX_INITRD.
func guestArgs() ([]string, string) {
	guest.once.Do(func() {
		build := os.Getenv("QM_LINUX_GUEST_BUILD")
		if build == "" {
			dir, _ := os.Getwd()
			for ; dir != "" && dir != "/"; dir = filepath.Dir(dir) {
				if _, err := os.Stat(filepath.Join(dir, "guest", "linux", "build")); err == nil {
					build = filepath.Join(dir, "guest", "linux", "build")
					break
				}
			}
		}
		if build == "" {
			guest.why = "no Linux test guest: set QM_LINUX_GUEST_BUILD to qm's guest/linux/build, or run inside the qm repository"
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, build, "--qemu-args").Output()
		if err != nil {
			guest.why = fmt.Sprintf("%s --qemu-args failed: %v", build, err)
			return
		}
		guest.args = strings.Split(strings.TrimSpace(string(out)), "\n")
	})
	return guest.args, guest.why
}

// LinuxGuest launches the Linux test guest (qm's guest/linux: a Debian kernel and a busybox
// initramfs with qemu-ga) with a console and the guest agent, and returns it once the guest
// printed GuestReady, as New does otherwise. It skips the test under -short (a boot takes
// seconds) and when the guest cannot be built here, saying why.
func LinuxGuest(t testing.TB, opts ...qm.Option) *qm.Machine {
	t.Helper()
	if testing.Short() {
		t.Skip("qmtest: the Linux test guest boots in seconds; skipped under -short")
	}
	args, why := guestArgs()
	if args == nil {
		t.Skip("qmtest: " + why)
	}
	base := []qm.Option{qm.WithArgs(args...), qm.WithConsole("", 0), qm.WithGuestAgent()}
	m := New(t, append(base, opts...)...)
	ctx, cancel := context.WithTimeout(context.Background(), BootTimeout)
	defer cancel()
	p := qm.Patterns{Success: []qm.Pattern{qm.Literal(GuestReady)}, Failure: []qm.Pattern{qm.Literal("Kernel panic")}}
	if _, err := m.ConsoleWait(ctx, p); err != nil {
		t.Fatalf("qmtest: the Linux guest did not boot: %v", err)
	}
	return m
}
