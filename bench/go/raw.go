package main

// The baseline: a minimal hand-written QMP client in Go, with no library.
//
// What QEMU itself allows: fork/exec QEMU (os/exec) with one end of a socketpair as its
// monitor (inherited as fd 3 through ExtraFiles), blocking writes of each command, blocking
// reads (plain read(2) on a blocking descriptor, not Go's poller) until the reply line with
// the right id, skipping event lines. QEMU gets the arguments qm gives it (-display none -vga
// none -chardev socket,id=mon,fd=N -mon chardev=mon,mode=control -machine none), and its
// output goes to /dev/null.
//
// Replies are recognised by QEMU's own formatting (`..., "id": N}` at the end of the line), not
// parsed: a minimal client needs no JSON parser. It is correct for QEMU's output, not clever.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
)

// live holds the QEMUs spawned and not reaped yet, for killAll on the way out after an error
// (QEMU outlives a closed monitor).
var live = struct {
	sync.Mutex
	vms map[*rawVM]struct{}
}{vms: map[*rawVM]struct{}{}}

// killAll kills and reaps every QEMU of the baseline still running.
func killAll() {
	live.Lock()
	vms := make([]*rawVM, 0, len(live.vms))
	for vm := range live.vms {
		vms = append(vms, vm)
	}
	live.Unlock()
	for _, vm := range vms {
		vm.kill()
	}
}

// rawVM is one QEMU with a raw QMP connection.
type rawVM struct {
	cmd    *exec.Cmd
	fd     int // the monitor; -1 once closed
	nextID uint64
	buf    []byte // bytes read; the current line is buf[:consumed]
	n      int    // bytes in buf
	line   int    // length of the current line (buf[:line])
	msg    []byte // scratch for a command
	tail   []byte // scratch for the reply's tail
}

// rawSpawn starts QEMU, without waiting for anything.
func rawSpawn(qemu string) (*rawVM, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	// Both ends are blocking: os.NewFile leaves a blocking descriptor out of the poller.
	theirs := os.NewFile(uintptr(fds[1]), "qemu-monitor")
	cmd := exec.Command(qemu, "-display", "none", "-vga", "none",
		"-chardev", "socket,id=mon,fd=3", // ExtraFiles[0] is the child's fd 3
		"-mon", "chardev=mon,mode=control", "-machine", "none")
	cmd.ExtraFiles = []*os.File{theirs} // Stdin, Stdout, Stderr nil: /dev/null
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		syscall.Close(fds[0])
		return nil, fmt.Errorf("spawning %s: %w", qemu, err)
	}
	vm := &rawVM{
		cmd:    cmd,
		fd:     fds[0],
		nextID: 1,
		buf:    make([]byte, 65536),
		msg:    make([]byte, 0, 128),
		tail:   make([]byte, 0, 48),
	}
	live.Lock()
	live.vms[vm] = struct{}{}
	live.Unlock()
	return vm, nil
}

// handshake reads the greeting and negotiates capabilities.
func (vm *rawVM) handshake() error {
	if err := vm.readLine(); err != nil {
		return err
	}
	if !bytes.HasPrefix(vm.cur(), []byte(`{"QMP"`)) {
		return fmt.Errorf("bad greeting: %s", vm.text())
	}
	return vm.execute("qmp_capabilities")
}

// rawLaunch starts QEMU and waits until QMP is negotiated.
func rawLaunch(qemu string) (*rawVM, error) {
	vm, err := rawSpawn(qemu)
	if err != nil {
		return nil, err
	}
	if err := vm.handshake(); err != nil {
		vm.kill()
		return nil, err
	}
	return vm, nil
}

func (vm *rawVM) cur() []byte { return vm.buf[:vm.line] }

func (vm *rawVM) text() string { return string(bytes.TrimRight(vm.cur(), "\r\n")) }

// readLine is a blocking read of the next line (with its newline) into buf[:line].
func (vm *rawVM) readLine() error {
	if vm.line > 0 {
		vm.n = copy(vm.buf, vm.buf[vm.line:vm.n])
		vm.line = 0
	}
	scanned := 0
	for {
		if i := bytes.IndexByte(vm.buf[scanned:vm.n], '\n'); i >= 0 {
			vm.line = scanned + i + 1
			return nil
		}
		scanned = vm.n
		if vm.n == len(vm.buf) {
			return fmt.Errorf("a QMP line over %d bytes", len(vm.buf))
		}
		if vm.fd < 0 {
			return errors.New("the monitor is closed")
		}
		n, err := syscall.Read(vm.fd, vm.buf[vm.n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading the monitor: %w", err)
		}
		if n == 0 {
			return errors.New("the monitor closed")
		}
		vm.n += n
	}
}

var eventKey = []byte(`"event": `)

// isEvent tells whether the current line is an event.
func (vm *rawVM) isEvent() bool {
	return bytes.HasPrefix(vm.cur(), []byte(`{"timestamp"`)) || bytes.Contains(vm.cur(), eventKey)
}

// send writes a command without waiting; it returns its id.
func (vm *rawVM) send(cmd string) (uint64, error) {
	id := vm.nextID
	vm.nextID++
	// No newline, as qm: QEMU parses a complete JSON object without one.
	m := append(vm.msg[:0], `{"execute":"`...)
	m = append(m, cmd...)
	m = append(m, `","id":`...)
	m = strconv.AppendUint(m, id, 10)
	m = append(m, '}')
	vm.msg = m
	if vm.fd < 0 {
		return 0, errors.New("the monitor is closed")
	}
	for len(m) > 0 {
		n, err := syscall.Write(vm.fd, m)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("writing %s: %w", cmd, err)
		}
		m = m[n:]
	}
	return id, nil
}

// recvReply reads until the reply with id, skipping events; it sets *seen when an event line
// contains want (nil: none). The reply is left in the current line.
func (vm *rawVM) recvReply(id uint64, want []byte, seen *bool) error {
	tail := append(vm.tail[:0], `"id": `...)
	tail = strconv.AppendUint(tail, id, 10)
	tail = append(tail, '}')
	vm.tail = tail
	for {
		if err := vm.readLine(); err != nil {
			return err
		}
		if vm.isEvent() {
			if want != nil && bytes.Contains(vm.cur(), want) {
				*seen = true
			}
			continue
		}
		line := bytes.TrimRight(vm.cur(), "\r\n")
		if bytes.HasSuffix(line, tail) {
			if bytes.HasPrefix(line, []byte(`{"return"`)) {
				return nil
			}
			return fmt.Errorf("command %d failed: %s", id, line)
		}
		return fmt.Errorf("unexpected line waiting for id %d: %s", id, line)
	}
}

// execute runs a command, skipping events; the reply is left in the current line.
func (vm *rawVM) execute(cmd string) error {
	id, err := vm.send(cmd)
	if err != nil {
		return err
	}
	return vm.recvReply(id, nil, nil)
}

var statusRunning = []byte(`"status": "running"`)

// queryStatus runs query-status and checks that the machine runs.
func (vm *rawVM) queryStatus() error {
	if err := vm.execute("query-status"); err != nil {
		return err
	}
	if !bytes.Contains(vm.cur(), statusRunning) {
		return fmt.Errorf("unexpected query-status reply: %s", vm.text())
	}
	return nil
}

// queryStatusPipelined sends k query-status at once, then reads the k replies, checking each.
// QMP allows several in-band commands in flight (QEMU takes them one at a time): this is what
// QEMU itself can do for a client that never waits between commands.
func (vm *rawVM) queryStatusPipelined(k int) error {
	first := vm.nextID
	for i := 0; i < k; i++ {
		if _, err := vm.send("query-status"); err != nil {
			return err
		}
	}
	for id := first; id < first+uint64(k); id++ {
		if err := vm.recvReply(id, nil, nil); err != nil {
			return err
		}
		if !bytes.Contains(vm.cur(), statusRunning) {
			return fmt.Errorf("unexpected query-status reply: %s", vm.text())
		}
	}
	return nil
}

// commandAndEvent sends cmd (stop, cont) and reads until both its reply and the event are in
// hand.
func (vm *rawVM) commandAndEvent(cmd string, want []byte) error {
	seen := false
	id, err := vm.send(cmd)
	if err != nil {
		return err
	}
	if err := vm.recvReply(id, want, &seen); err != nil {
		return err
	}
	for !seen {
		if err := vm.readLine(); err != nil {
			return err
		}
		seen = vm.isEvent() && bytes.Contains(vm.cur(), want)
	}
	return nil
}

// reap closes the monitor and reaps QEMU, which must exit with status 0.
func (vm *rawVM) reap() error {
	if vm.fd >= 0 {
		syscall.Close(vm.fd)
		vm.fd = -1
	}
	err := vm.cmd.Wait()
	live.Lock()
	delete(live.vms, vm)
	live.Unlock()
	if err != nil {
		return fmt.Errorf("QEMU: %w", err)
	}
	return nil
}

// shutdown is the graceful shutdown: quit, its reply, then reap.
func (vm *rawVM) shutdown() error {
	if err := vm.execute("quit"); err != nil {
		vm.kill()
		return err
	}
	return vm.reap()
}

// kill is for error paths only.
func (vm *rawVM) kill() {
	if vm.cmd.ProcessState == nil {
		vm.cmd.Process.Kill()
		vm.reap()
	}
}
