package qm_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	qm "github.com/qm-project/qm/bindings/go"
)

type fdset struct {
	FdsetID int `json:"fdset-id"`
	Fds     []struct {
		Fd     int    `json:"fd"`
		Opaque string `json:"opaque"`
	} `json:"fds"`
}

// hasFd tells whether query-fdsets lists a descriptor with that opaque string in that set.
func hasFd(sets []fdset, id int, opaque string) bool {
	for _, s := range sets {
		if s.FdsetID != id {
			continue
		}
		for _, f := range s.Fds {
			if f.Opaque == opaque {
				return true
			}
		}
	}
	return false
}

func TestFDPassing(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "data")
	if err := os.WriteFile(path, []byte("qm"), 0o600); err != nil {
		t.Fatal(err)
	}
	atLaunch, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer atLaunch.Close()

	// WithFD: -add-fd at launch.
	m := launched(t, qm.WithFD(atLaunch, 1, "at-launch", ""))
	if !strings.Contains(strings.Join(m.Args(), " "), "set=1,opaque=at-launch") {
		t.Fatalf("Args = %q", m.Args())
	}
	var sets []fdset
	if err := m.CmdInto(ctx, "query-fdsets", nil, &sets); err != nil || !hasFd(sets, 1, "at-launch") {
		t.Fatalf("query-fdsets after launch = %+v, %v", sets, err)
	}

	// SendFile, then add-fd.
	if err := m.SendFile(path); err != nil {
		t.Fatalf("SendFile: %v", err)
	}
	if _, err := m.Cmd(ctx, "add-fd", map[string]any{"fdset-id": 2, "opaque": "sent-file"}); err != nil {
		t.Fatalf("add-fd: %v", err)
	}
	// SendFD of an *os.File, then add-fd.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.SendFD(f); err != nil {
		t.Fatalf("SendFD: %v", err)
	}
	if _, err := m.Cmd(ctx, "add-fd", map[string]any{"fdset-id": 3, "opaque": "sent-os-file"}); err != nil {
		t.Fatalf("add-fd: %v", err)
	}
	// SendFD of a socket (a *net.UnixConn), then getfd: closefd of the name works only if QEMU
	// took it.
	a, b := socketPair(t)
	defer a.Close()
	defer b.Close()
	if err := m.SendFD(a); err != nil {
		t.Fatalf("SendFD(*net.UnixConn): %v", err)
	}
	if _, err := m.Cmd(ctx, "getfd", map[string]string{"fdname": "go-sock"}); err != nil {
		t.Fatalf("getfd: %v", err)
	}
	if _, err := m.Cmd(ctx, "closefd", map[string]string{"fdname": "go-sock"}); err != nil {
		t.Fatalf("closefd of a descriptor QEMU got: %v", err)
	}
	// SendRawFD, then add-fd.
	if err := m.SendRawFD(f.Fd()); err != nil {
		t.Fatalf("SendRawFD: %v", err)
	}
	if _, err := m.Cmd(ctx, "add-fd", map[string]any{"fdset-id": 4, "opaque": "sent-raw"}); err != nil {
		t.Fatalf("add-fd: %v", err)
	}
	sets = nil
	if err := m.CmdInto(ctx, "query-fdsets", nil, &sets); err != nil {
		t.Fatal(err)
	}
	for id, opaque := range map[int]string{1: "at-launch", 2: "sent-file", 3: "sent-os-file", 4: "sent-raw"} {
		if !hasFd(sets, id, opaque) {
			t.Errorf("query-fdsets lacks set %d (%s): %+v", id, opaque, sets)
		}
	}

	// Errors: a file that does not exist, a closed descriptor, a machine not running.
	mustErr(t, "SendFile of a missing file", m.SendFile(filepath.Join(dir, "missing")), qm.ErrIO, os.ErrNotExist)
	closed, _ := os.Open(path)
	fd := closed.Fd()
	closed.Close()
	mustErr(t, "SendRawFD of a closed descriptor", m.SendRawFD(fd), qm.ErrInvalid)
	mustErr(t, "SendFD of a closed file", m.SendFD(closed), qm.ErrInvalid)
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// After a shutdown the library says "disconnected" (qm.h says QM_ERR_STATE "once it is
	// over"): accept either.
	if err := m.SendFile(path); !errors.Is(err, qm.ErrState) && !errors.Is(err, qm.ErrDisconnected) {
		t.Fatalf("SendFile after shutdown: %v", err)
	}
	fresh := newMachine(t)
	mustErr(t, "SendFile before launch", fresh.SendFile(path), qm.ErrState)
	mustErr(t, "SendFD before launch", fresh.SendFD(f), qm.ErrState)
}

// socketPair returns two connected unix stream sockets.
func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1]
}

// TestInheritFDs: with WithInheritFDs(true), QEMU gets a descriptor the program left
// inheritable, under its number; a close-on-exec one never reaches it, and without the option
// neither does.
func TestInheritFDs(t *testing.T) {
	var open, cloexec [2]int
	if err := syscall.Pipe2(open[:], 0); err != nil { // not close-on-exec
		t.Fatal(err)
	}
	if err := syscall.Pipe2(cloexec[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	for _, fd := range append(open[:], cloexec[:]...) {
		defer syscall.Close(fd)
	}
	// Compared by what the number names (pipe:[inode]): QEMU may reuse a number for a file
	// of its own.
	target := func(pid, fd int) string {
		link, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", strconv.Itoa(fd)))
		return link
	}
	self := os.Getpid()
	for _, inherit := range []bool{true, false} {
		m := launched(t, qm.WithInheritFDs(inherit))
		got := target(m.PID(), open[0]) == target(self, open[0])
		if got != inherit {
			t.Errorf("WithInheritFDs(%v): QEMU has the inheritable descriptor: %v", inherit, got)
		}
		if target(m.PID(), cloexec[0]) == target(self, cloexec[0]) {
			t.Errorf("WithInheritFDs(%v): QEMU has a close-on-exec descriptor", inherit)
		}
		if err := m.Shutdown(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
}
