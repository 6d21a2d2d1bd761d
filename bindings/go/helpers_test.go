package qm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// guestTimeout bounds every wait on the test guest (slow CI machines, -race, GOGC=1).
const guestTimeout = 60 * time.Second

// qemu is the QEMU binary the tests run (QM_QEMU overrides it).
var qemu = "qemu-system-x86_64"

func TestMain(m *testing.M) {
	if b := os.Getenv("QM_QEMU"); b != "" {
		qemu = b
	}
	if _, err := exec.LookPath(qemu); err != nil {
		fmt.Fprintf(os.Stderr, "the Go tests need QEMU (%s): %v (make deps installs it)\n", qemu, err)
		os.Exit(2)
	}
	code := m.Run()
	// No test may leave a QEMU behind: every child of this process must be gone.
	if kids := children(); len(kids) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: processes left behind by the tests: %v\n", kids)
		code = 1
	}
	// Nor a temporary directory: default names are qm-<our pid>-<n>.
	if left, _ := filepath.Glob(fmt.Sprintf("/var/tmp/qemu-machine-*/qm-%d-*", os.Getpid())); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: temporary files left behind by the tests: %v\n", left)
		code = 1
	}
	os.Exit(code)
}

// children lists the live child processes of this test binary ("pid comm"), but qm's watchdog.
func children() []string {
	var kids []string
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		// qm's watchdog lives as long as this process (like qm's spawner thread).
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.HasSuffix(string(cmdline), "\x00qm-watchdog\x00") {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == self {
			kids = append(kids, fmt.Sprintf("%d %s", pid, s[strings.IndexByte(s, '(')+1:i]))
		}
	}
	return kids
}

// alive tells whether a process exists (and is not a zombie).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// newMachine creates a machine; the test's cleanup closes it and checks that its QEMU is gone.
func newMachine(t testing.TB, opts ...qm.Option) *qm.Machine {
	t.Helper()
	m, err := qm.New(qemu, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		pid := m.PID()
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if alive(pid) {
			t.Errorf("QEMU (pid %d) still runs after Close", pid)
		}
	})
	return m
}

// launched creates a machine with "-machine none" (QMP only) and launches it.
func launched(t testing.TB, opts ...qm.Option) *qm.Machine {
	t.Helper()
	m := newMachine(t, append([]qm.Option{qm.WithMachineType("none")}, opts...)...)
	if err := m.Launch(ctxT(t)); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	return m
}

// ctxT is a context that ends with the test (or after guestTimeout).
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// guestOptions writes the test guest into a temporary directory and returns the options that
// boot it with a console.
func guestOptions(t testing.TB, banner string, action qm.GuestAction, exitValue uint8) []qm.Option {
	t.Helper()
	img := filepath.Join(t.TempDir(), "guest.img")
	if err := qm.WriteGuestImage(img, banner, action, exitValue); err != nil {
		t.Fatalf("WriteGuestImage: %v", err)
	}
	args, err := qm.GuestQEMUArgs(img)
	if err != nil {
		t.Fatalf("GuestQEMUArgs: %v", err)
	}
	return []qm.Option{qm.WithArgs(args...), qm.WithConsole("", 0)}
}

// readUntil reads f until what it read contains want, or the timeout passes.
func readUntil(f *os.File, want string, timeout time.Duration) (string, error) {
	var got bytes.Buffer
	buf := make([]byte, 4096)
	if err := f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	defer f.SetReadDeadline(time.Time{})
	for !strings.Contains(got.String(), want) {
		n, err := f.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			return got.String(), fmt.Errorf("reading the console for %q: %w (read %q)", want, err, got.String())
		}
	}
	return got.String(), nil
}

// mustErr checks that err matches every target with errors.Is.
func mustErr(t testing.TB, what string, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("%s: error %q (%T) does not match %v", what, err, err, target)
		}
	}
}

// stopProcess freezes QEMU (SIGSTOP) so that it answers nothing; the cleanup thaws it.
func stopProcess(t testing.TB, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
}
