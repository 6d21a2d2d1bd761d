package qm

// #include <stdlib.h>
// #include <string.h>
// #include <qm.h>
import "C"

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Machine is one QEMU virtual machine: its configuration and, while launched, the QEMU
// process, its QMP connection, its event queue and its console. It wraps a qm_machine handle
// of the C library.
//
// A Machine is safe for concurrent use by any number of goroutines: commands from several
// goroutines run at once, each getting its own reply. Every blocked call holds an OS thread
// (it waits inside C).
//
// Close frees it (shutting QEMU down first); a finalizer closes a Machine that becomes
// unreachable without Close, but do not rely on it: QEMU runs until then.
type Machine struct {
	// mu guards h: every call holds the read lock while it uses the handle; Close takes the
	// write lock, after interrupting blocked calls, so qm_free is the handle's last call.
	mu sync.RWMutex
	h  *C.qm_machine // nil once closed

	closed    atomic.Bool
	closeTok  *C.qm_cancel // the token of calls whose context can never end; Close fires it
	tokMu     sync.Mutex
	toks      map[*C.qm_cancel]struct{} // per-call tokens (contexts that can end); Close fires them
	closeOnce sync.Once
	closeErr  error
}

// New creates a machine that will run binary (e.g. "qemu-system-x86_64", looked up in PATH),
// configured by opts. Nothing starts until Launch.
//
// Defaults (from the C library): a QMP monitor on a socketpair, a 30 s QMP timer, no console,
// temporary files under /var/tmp, and "-display none -vga none".
func New(binary string, opts ...Option) (*Machine, error) {
	cb, err := cstring("binary", binary)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cb))
	var h *C.qm_machine
	var cerr *C.qm_error
	if err := takeError(C.qm_new(cb, &h, &cerr), cerr); err != nil {
		return nil, err
	}
	tok := C.qm_cancel_new()
	if tok == nil {
		C.qm_free(h)
		return nil, errNoMemory("qm_cancel_new")
	}
	m := &Machine{h: h, closeTok: tok, toks: make(map[*C.qm_cancel]struct{})}
	runtime.SetFinalizer(m, (*Machine).finalize)
	if err := m.Configure(opts...); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Configure applies options to the machine. They take effect at the next Launch (and
// accumulate: WithArgs adds to the arguments already set). It stops at the first option that
// fails.
func (m *Machine) Configure(opts ...Option) error {
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(m); err != nil {
			return err
		}
	}
	return nil
}

// ---- plumbing ----------------------------------------------------------------------------------

func closedError() error {
	return &Error{Status: StatusState, Message: "qm: the machine is closed", cause: []error{ErrClosed}}
}

// use runs f with the live handle, holding the read lock so that Close cannot free the
// handle meanwhile. It fails with ErrClosed after Close.
func (m *Machine) use(f func(h *C.qm_machine) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return closedError()
	}
	err := f(m.h)
	runtime.KeepAlive(m)
	return err
}

// set runs a configuration call.
func (m *Machine) set(f func(h *C.qm_machine, cerr **C.qm_error) C.qm_status) error {
	return m.use(func(h *C.qm_machine) error {
		var cerr *C.qm_error
		return takeError(f(h, &cerr), cerr)
	})
}

// ---- lifecycle ---------------------------------------------------------------------------------

// Launch starts QEMU and, unless QMP is off, connects and negotiates QMP. It blocks until QMP
// is up, until ctx's deadline, or the QMP timer (WithQMPTimer, 30 s by default) when ctx has
// none, and returns at once when QEMU exits early or ctx is cancelled.
//
// A failure is a *LaunchError with QEMU's exit code, command line and output (and the
// context's error when ctx ended); by then no QEMU process is left and the machine can be
// launched again. Launching a launched machine fails with ErrState.
func (m *Machine) Launch(ctx context.Context) error {
	return m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return C.qm_launch(h, w.timeout, w.tok, cerr)
	})
}

// PrepareLaunch prepares the next launch without starting QEMU: it creates the monitor
// socketpair or listener, the console socketpair and QEMU's log, and returns the arguments qm
// puts between the binary and the extra arguments ("-display", "none", ..., "-chardev",
// "socket,id=mon,fd=N", ...). The fd=N numbers are the descriptors QEMU will inherit under
// those numbers. It never waits for QEMU.
//
// The run uses the configuration as of this call; calling it again while prepared returns the
// same arguments. LaunchArgv or Launch start QEMU with what was prepared; AbortLaunch,
// Shutdown, Kill, Wait and Close release it. A new prepare forgets the last run's exit code,
// PID, command line and log. It fails with ErrState when launched; any other failure is a
// *LaunchError, as for Launch.
func (m *Machine) PrepareLaunch() ([]string, error) {
	s, _, err := m.getString(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_launch_prepare(h, out, cerr)
	})
	if err != nil {
		return nil, err
	}
	var base []string
	if err := json.Unmarshal([]byte(s), &base); err != nil {
		return nil, &Error{Status: StatusProtocol, Message: "qm: qm_launch_prepare returned " + s}
	}
	return base, nil
}

// LaunchArgv starts exactly argv (argv[0] looked up in PATH; never a shell) instead of the
// command line Launch builds, typically the binary, PrepareLaunch's arguments edited, and more;
// then it connects and negotiates QMP as Launch does: same blocking, context handling and
// errors, same cleanup on a *LaunchError. It prepares first when PrepareLaunch was not called.
// CommandLine then returns argv.
//
// QEMU inherits the prepared descriptors, those of WithFD, and the descriptors of extraFiles
// (an *os.File, *net.UnixConn ...; the caller keeps them) under their numbers; nothing else.
// Name them in argv by their numbers. It fails with ErrInvalid for an empty argv, a NUL
// byte in an argument, or a descriptor below 3, leaving a prepared launch as it was; with
// ErrState when launched.
func (m *Machine) LaunchArgv(ctx context.Context, argv []string, extraFiles ...syscall.Conn) error {
	if len(argv) == 0 {
		return invalid("LaunchArgv: argv is empty")
	}
	cargv, free, err := cstrings("argv", argv)
	if err != nil {
		return err
	}
	defer free()
	return withRawFDs(extraFiles, nil, func(fds []C.int) error {
		var pfds *C.int
		if len(fds) > 0 {
			// C memory: the library reads the array during the call only.
			p := C.malloc(C.size_t(len(fds)) * C.size_t(unsafe.Sizeof(C.int(0))))
			if p == nil {
				return errNoMemory("malloc")
			}
			defer C.free(p)
			copy(unsafe.Slice((*C.int)(p), len(fds)), fds)
			pfds = (*C.int)(p)
		}
		return m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
			return C.qm_launch_argv(h, cargv, C.size_t(len(argv)), pfds, C.size_t(len(fds)), w.timeout, w.tok, cerr)
		})
	})
}

// withRawFDs runs f with the descriptor numbers of conns, each held valid (by its Control)
// for the whole of f.
func withRawFDs(conns []syscall.Conn, fds []C.int, f func([]C.int) error) error {
	if len(conns) == 0 {
		return f(fds)
	}
	rc, err := conns[0].SyscallConn()
	if err != nil {
		return invalid("extra file %d: %v", len(fds), err)
	}
	var ferr error
	cerr := rc.Control(func(fd uintptr) {
		if fd > 1<<31-1 {
			ferr = invalid("extra file %d: fd %d is out of range", len(fds), fd)
			return
		}
		ferr = withRawFDs(conns[1:], append(fds, C.int(fd)), f)
	})
	if cerr != nil {
		return invalid("extra file %d: %v", len(fds), cerr)
	}
	return ferr
}

// AbortLaunch releases what PrepareLaunch created (descriptors, socket files, the log, the
// temporary directory) when the caller gives up before LaunchArgv. It does nothing when not
// prepared, fails with ErrState when launched, and never blocks.
func (m *Machine) AbortLaunch() error {
	return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_launch_abort(h, cerr)
	})
}

// Shutdown shuts QEMU down gracefully: "quit" over QMP (SIGTERM without QMP), then waits for
// QEMU to exit until ctx's deadline, or 30 s (the C library's default) when ctx has none. If
// QEMU does not exit in time, or ctx ends first (even before the call), QEMU is killed and the
// error matches ErrAbnormalShutdown (and the context's error). Cleanup always runs. A machine
// that is not running is left alone, so a second Shutdown returns nil. Calls blocked on the
// machine in other goroutines fail with ErrDisconnected.
func (m *Machine) Shutdown(ctx context.Context) error {
	return m.stop(ctx, false, C.QM_WAIT_DEFAULT)
}

// Wait waits for QEMU to exit by itself (e.g. the guest powered off), then cleans up. It waits
// until ctx ends, however long that takes (ctx without deadline: forever); when ctx ends
// first QEMU is killed and the error matches ErrAbnormalShutdown and the context's error, as
// exec.CommandContext does. Wait returns nil at once when the machine is not running.
func (m *Machine) Wait(ctx context.Context) error {
	return m.stop(ctx, true, C.QM_WAIT_FOREVER)
}

func (m *Machine) stop(ctx context.Context, wait bool, def C.int64_t) error {
	return m.call(ctx, def, true, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		if wait {
			return C.qm_wait(h, w.timeout, w.tok, cerr)
		}
		return C.qm_shutdown(h, false, w.timeout, w.tok, cerr)
	})
}

// Kill kills QEMU with SIGKILL, reaps it and cleans up. It blocks until QEMU is gone
// (normally milliseconds) and returns nil when the machine is not running.
func (m *Machine) Kill() error {
	return m.use(func(h *C.qm_machine) error {
		var cerr *C.qm_error
		return takeError(C.qm_kill(h, &cerr), cerr)
	})
}

// Close shuts the machine down and frees it. It first interrupts every call blocked on the
// machine (they fail with ErrInterrupted and ErrClosed; a blocked Shutdown or Wait kills
// QEMU), waits for them to return, then shuts QEMU down gracefully ("quit", up to 30 s, then
// SIGKILL) and frees the handle. It returns the shutdown's error. Calls after Close fail with
// ErrClosed. Close is safe to call more than once and from several goroutines: later calls
// wait for the first and return nil.
func (m *Machine) Close() error {
	return m.close(false)
}

func (m *Machine) finalize() {
	m.close(true) // nobody can be waiting for a graceful shutdown: kill at once
}

func (m *Machine) close(hard bool) error {
	first := false
	m.closeOnce.Do(func() {
		first = true
		runtime.SetFinalizer(m, nil)
		// Interrupt blocked calls: new ones see closed and get a fired token.
		m.tokMu.Lock()
		m.closed.Store(true)
		C.qm_cancel_fire(m.closeTok)
		for tok := range m.toks {
			C.qm_cancel_fire(tok)
		}
		m.tokMu.Unlock()
		// Wait for every call to return; later calls find h nil.
		m.mu.Lock()
		h := m.h
		m.h = nil
		m.mu.Unlock()
		var cerr *C.qm_error
		if hard {
			m.closeErr = takeError(C.qm_kill(h, &cerr), cerr)
		} else {
			m.closeErr = takeError(C.qm_shutdown(h, false, C.QM_WAIT_DEFAULT, nil, &cerr), cerr)
		}
		C.qm_free(h) // the last call on the handle
		C.qm_cancel_free(m.closeTok)
		m.closeTok = nil
	})
	if !first {
		return nil
	}
	return m.closeErr
}

// ---- QMP ---------------------------------------------------------------------------------------

// QMP runs the QMP command cmd with args (any value that marshals to a JSON object; nil for
// none; a json.RawMessage is sent as it is) and returns QEMU's raw response: {"return": ...}
// or {"error": {"class": ..., "desc": ...}}. An error response is not an error here (see Cmd).
//
// It waits for the reply until ctx's deadline, or the QMP timer (WithQMPTimer) when ctx has
// none, and returns at once when ctx ends. A reply that arrives late is dropped; the
// connection stays usable.
func (m *Machine) QMP(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return m.execute(ctx, cmd, args, true)
}

// Cmd runs the QMP command cmd with args (as QMP) and returns the value of "return" (e.g. {}
// or {"status": "running", ...}); an error response becomes a *QMPError.
func (m *Machine) Cmd(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return m.execute(ctx, cmd, args, false)
}

// CmdInto runs Cmd and unmarshals its return value into out (a pointer, as for
// json.Unmarshal; nil to discard it). A value that does not unmarshal gives the
// encoding/json error.
func (m *Machine) CmdInto(ctx context.Context, cmd string, args any, out any) error {
	ret, err := m.Cmd(ctx, cmd, args)
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(ret, out)
}

// Decode unmarshals a command's return value (or an event's data) into a new T, passing an
// error through, so that it wraps a call: qm.Decode[QueryStatus](m.Cmd(ctx, "query-status",
// nil)) with the caller's type QueryStatus.
func Decode[T any](raw json.RawMessage, err error) (T, error) {
	var v T
	if err != nil {
		return v, err
	}
	err = json.Unmarshal(raw, &v)
	return v, err
}

func (m *Machine) execute(ctx context.Context, cmd string, args any, raw bool) (json.RawMessage, error) {
	ccmd, err := cstring("cmd", cmd)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(ccmd))
	cargs, err := jsonObjectArg("args", args)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cargs))
	var res *C.char
	err = m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		if raw {
			return C.qm_qmp(h, ccmd, cargs, w.timeout, w.tok, &res, cerr)
		}
		return C.qm_cmd(h, ccmd, cargs, w.timeout, w.tok, &res, cerr)
	})
	if err != nil {
		return nil, err
	}
	return takeBytes(res), nil
}

// ---- descriptors -------------------------------------------------------------------------------

// SendFD sends f's descriptor (an *os.File, *net.UnixConn ...; f keeps it) to QEMU over the
// QMP socket with SCM_RIGHTS, for a following "getfd" or "add-fd" command, which take the
// descriptor that arrived last. The monitor must be a socketpair (the default) or a unix
// socket. Goroutines that each send a descriptor and then run getfd/add-fd must not
// interleave: serialise such pairs.
func (m *Machine) SendFD(f syscall.Conn) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return invalid("SendFD: %v", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = m.SendRawFD(fd) }); err != nil {
		return invalid("SendFD: %v", err)
	}
	return serr
}

// SendRawFD is SendFD for a raw descriptor number, which the caller keeps open during the
// call (and owns).
func (m *Machine) SendRawFD(fd uintptr) error {
	if fd > 1<<31-1 {
		return invalid("fd %d is out of range", fd)
	}
	return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_send_fd_scm(h, C.int(fd), cerr)
	})
}

// SendFile opens the file at path read-only and sends its descriptor as SendFD does (qm
// closes its descriptor afterwards).
func (m *Machine) SendFile(path string) error {
	cp, err := cstring("path", path)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cp))
	return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_send_file_scm(h, cp, cerr)
	})
}

// Console returns a new descriptor for the console (WithConsole) of a launched machine: a
// duplicate of the machine's connected stream socket, non-blocking and registered with Go's
// poller, so Read and Write honour SetDeadline and Close unblocks them. The caller must close
// it.
//
// It is a raw copy of the console, which qm always reads (so QEMU never blocks on it): it gets
// every byte the guest writes from launch on (as far as the console's memory still holds them),
// and reading it does not consume what ConsoleWait sees. Once QEMU has exited the file reads
// EOF.
//
// Console fails with ErrState unless the console is configured and the machine launched; it
// never waits for a Shutdown, Kill or Wait in progress.
func (m *Machine) Console() (*os.File, error) {
	var f *os.File
	err := m.use(func(h *C.qm_machine) error {
		var fd C.int
		var cerr *C.qm_error
		if err := takeError(C.qm_console_dup(h, &fd, &cerr), cerr); err != nil {
			return err
		}
		// Non-blocking, so os.NewFile registers it with Go's poller (deadlines work).
		if err := syscall.SetNonblock(int(fd), true); err != nil {
			syscall.Close(int(fd))
			return &Error{Status: StatusIO, Message: "qm: setting the console non-blocking: " + err.Error()}
		}
		f = os.NewFile(uintptr(fd), "qm-console")
		return nil
	})
	return f, err
}

// ---- state -------------------------------------------------------------------------------------

// Running reports whether QEMU runs. Never blocks.
func (m *Machine) Running() bool {
	var r bool
	m.use(func(h *C.qm_machine) error {
		r = bool(C.qm_is_running(h))
		return nil
	})
	return r
}

// PID returns QEMU's process id while it runs, and 0 when it does not. Under a wrapper it is
// QEMU's own pid when qm could identify it (see qm_pid), else the wrapper's.
func (m *Machine) PID() int {
	pid := int64(-1)
	m.use(func(h *C.qm_machine) error {
		pid = int64(C.qm_pid(h))
		return nil
	})
	if pid < 0 {
		return 0
	}
	return int(pid)
}

// LastPID returns the process id of the last run's QEMU, while it runs and after it exited
// (unlike PID), until the next launch is prepared; 0 before any process was started, when the
// last launch failed before starting one, and after Close.
func (m *Machine) LastPID() int {
	pid := int64(-1)
	m.use(func(h *C.qm_machine) error {
		pid = int64(C.qm_last_pid(h))
		return nil
	})
	if pid < 0 {
		return 0
	}
	return int(pid)
}

// QMPTimer returns the QMP timer (WithQMPTimer), or a negative duration when it has no limit.
func (m *Machine) QMPTimer() (time.Duration, error) {
	var ms C.int64_t
	err := m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_get_qmp_timer(h, &ms, cerr)
	})
	if err != nil {
		return 0, err
	}
	if ms == C.QM_WAIT_FOREVER {
		return -1, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// ExitCode returns QEMU's exit status once it has exited (after a shutdown, a wait, or a
// failed launch where it ran; negative: killed by that signal), and ok false while it runs or
// before a launch.
func (m *Machine) ExitCode() (code int, ok bool) {
	m.use(func(h *C.qm_machine) error {
		var c C.int
		if C.qm_exit_code(h, &c) {
			code, ok = int(c), true
		}
		return nil
	})
	return code, ok
}

// getString runs a qm_get_* call.
func (m *Machine) getString(f func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status) (s string, isNull bool, err error) {
	err = m.use(func(h *C.qm_machine) error {
		var out *C.char
		var cerr *C.qm_error
		if err := takeError(f(h, &out, &cerr), cerr); err != nil {
			return err
		}
		isNull = out == nil
		s = takeString(out)
		return nil
	})
	return s, isNull, err
}

func (m *Machine) getStrings(f func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status) []string {
	s, _, err := m.getString(f)
	var v []string
	if err == nil {
		json.Unmarshal([]byte(s), &v)
	}
	return v
}

// Log returns what QEMU wrote to stdout and stderr during the last run, read back after a
// shutdown or a failed launch; ok is false while QEMU runs (see LogSoFar) and before any run.
func (m *Machine) Log() (log string, ok bool) {
	s, null, err := m.getString(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_get_log(h, out, cerr)
	})
	return s, err == nil && !null
}

// LogSoFar returns what QEMU has written to stdout and stderr so far: while it runs, its
// output up to now (read afresh on each call); after a shutdown or a failed launch, the same
// as Log. ok is false before any launch.
func (m *Machine) LogSoFar() (log string, ok bool) {
	s, null, err := m.getString(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_get_log_so_far(h, out, cerr)
	})
	return s, err == nil && !null
}

// TempDir returns the machine's temporary directory (mode 0700), creating it on first use;
// it is removed at shutdown.
func (m *Machine) TempDir() (string, error) {
	s, _, err := m.getString(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_get_temp_dir(h, out, cerr)
	})
	return s, err
}

// LogDir returns the directory of QEMU's log file set with WithLogDir, or "" when none was set
// (QEMU's output is then kept in memory; Log has it).
func (m *Machine) LogDir() (string, error) {
	s, _, err := m.getString(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_get_log_dir(h, out, cerr)
	})
	return s, err
}

// SockDir returns the directory of socket files: the one set with WithSockDir, or the
// temporary directory (created on first use).
func (m *Machine) SockDir() (string, error) {
	s, _, err := m.getString(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_get_sock_dir(h, out, cerr)
	})
	return s, err
}

// Name returns the machine's name (WithName; by default "qm-<pid>-<n>"), or "" after Close.
func (m *Machine) Name() string {
	s, _, _ := m.getString(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_get_name(h, out, cerr)
	})
	return s
}

// Binary returns the QEMU binary given to New, or "" after Close.
func (m *Machine) Binary() string {
	s, _, _ := m.getString(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_get_binary(h, out, cerr)
	})
	return s
}

// Args returns the extra QEMU arguments added with WithArgs (and WithFD, WithMonitorNull).
func (m *Machine) Args() []string {
	return m.getStrings(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_get_args(h, out, cerr)
	})
}

// CommandLine returns the whole command line of the last launch (wrapper, binary, qm's
// arguments, extra ones); empty before the first launch.
func (m *Machine) CommandLine() []string {
	return m.getStrings(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_get_command_line(h, out, cerr)
	})
}
