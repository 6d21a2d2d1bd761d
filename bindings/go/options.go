package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"syscall"
	"time"
	"unsafe"
)

// Option configures a Machine: pass options to New or to Machine.Configure. Every option
// applies to the next launch.
type Option func(m *Machine) error

// withSet is an option that runs one configuration call.
func withSet(f func(h *C.qm_machine, cerr **C.qm_error) C.qm_status) Option {
	return func(m *Machine) error { return m.set(f) }
}

// withString wraps a setter that takes one C string (NULL for "" when nullIfEmpty).
func withString(name, s string, nullIfEmpty bool, f func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status) Option {
	return func(m *Machine) error {
		var cs *C.char
		if s != "" || !nullIfEmpty {
			var err error
			if cs, err = cstring(name, s); err != nil {
				return err
			}
			defer C.free(unsafe.Pointer(cs))
		}
		return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status { return f(h, cs, cerr) })
	}
}

// withStrings wraps a setter that takes an array of C strings.
func withStrings(name string, ss []string, f func(h *C.qm_machine, arr **C.char, n C.size_t, cerr **C.qm_error) C.qm_status) Option {
	return func(m *Machine) error {
		arr, free, err := cstrings(name, ss)
		if err != nil {
			return err
		}
		defer free()
		return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
			return f(h, arr, C.size_t(len(ss)), cerr)
		})
	}
}

// WithArgs appends arguments for QEMU after the ones qm builds.
func WithArgs(args ...string) Option {
	return withStrings("args", args, func(h *C.qm_machine, arr **C.char, n C.size_t, cerr **C.qm_error) C.qm_status {
		return C.qm_add_args(h, arr, n, cerr)
	})
}

// WithWrapper sets the argv prefix QEMU runs under, e.g. WithWrapper("strace", "-f") (never a
// shell), replacing the previous one; no arguments remove it.
func WithWrapper(argv ...string) Option {
	return withStrings("argv", argv, func(h *C.qm_machine, arr **C.char, n C.size_t, cerr **C.qm_error) C.qm_status {
		return C.qm_set_wrapper(h, arr, n, cerr)
	})
}

// WithName names the machine: the prefix of its log file (<name>.log) and socket files
// (default "qm-<pid>-<n>"). Only a name that could leave the directory is ErrInvalid: empty,
// "." or ".." as the whole name, or one with "/".
func WithName(name string) Option {
	return withString("name", name, false, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_name(h, s, cerr)
	})
}

// WithBaseTempDir sets the directory under which the machine's temporary directory is created
// (default /var/tmp). It takes effect when the temporary directory is first created.
func WithBaseTempDir(dir string) Option {
	return withString("dir", dir, false, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_base_temp_dir(h, s, cerr)
	})
}

// WithSockDir sets the directory for socket files qm names itself (default: the temporary
// directory).
func WithSockDir(dir string) Option {
	return withString("dir", dir, false, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_sock_dir(h, s, cerr)
	})
}

// WithLogDir sets the directory of <name>.log, QEMU's stdout and stderr, kept after shutdown
// (default: none, the output is kept in memory). Either way Machine.Log has it.
func WithLogDir(dir string) Option {
	return withString("dir", dir, false, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_log_dir(h, s, cerr)
	})
}

// WithQMPTranscript writes every QMP message to and from QEMU to the file at path ("": no
// transcript, the default), one JSON line each: {"t": <seconds since the Unix epoch>, "dir":
// "out" | "in" | "event", "msg": <the message>} ("out": sent by the library; "in": the
// greeting and replies; "event": QEMU's events). The console and the guest agent, when the
// machine has them, go to the same file (lines with "chan": "console" or "agent"), which the
// fake QEMU replays. The file is opened at each launch (created
// with mode 0600, appended to); Launch fails if it cannot be.
func WithQMPTranscript(path string) Option {
	return withString("path", path, true, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_qmp_transcript(h, s, cerr)
	})
}

// WithMonitorSocketpair puts the QMP monitor on a socketpair (the default; no file is
// created).
func WithMonitorSocketpair() Option {
	return withSet(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_set_monitor_socketpair(h, cerr)
	})
}

// WithMonitorUnix puts the QMP monitor on a unix socket at path ("" for
// <sock dir>/<name>-monitor.sock): qm listens (mode 0600) and QEMU connects; the file is
// removed at shutdown. The path must be shorter than 108 bytes (checked at launch).
func WithMonitorUnix(path string) Option {
	return withString("path", path, true, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_monitor_unix(h, s, cerr)
	})
}

// WithMonitorTCP puts the QMP monitor on TCP: qm listens on host (e.g. "127.0.0.1") and port
// (0: any free port) and QEMU connects.
func WithMonitorTCP(host string, port uint16) Option {
	return withString("host", host, false, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_monitor_tcp(h, s, C.uint16_t(port), cerr)
	})
}

// WithDrainConsole is kept for the seed's API and changes nothing: qm always reads the
// console, so QEMU never blocks on a console nobody reads (see ConsoleWait).
func WithDrainConsole(drain bool) Option {
	return withSet(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_set_drain_console(h, C.bool(drain), cerr)
	})
}

// WithConsoleLog writes every console byte to the file at path (created mode 0600 if
// missing, truncated at each launch); "" turns the console log off.
func WithConsoleLog(path string) Option {
	return withString("path", path, true, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_console_log(h, s, cerr)
	})
}

// WithQMPTimer sets the QMP timer (default 30 s; a negative duration: no limit): it bounds the
// QMP handshake at launch, and a QMP or Cmd call whose context has no deadline.
func WithQMPTimer(d time.Duration) Option {
	return withSet(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_set_qmp_timer(h, millis(d), cerr)
	})
}

// WithQMP turns the QMP monitor on (the default) or off. Without it, QMP calls fail with
// ErrState and a graceful shutdown sends SIGTERM.
func WithQMP(enabled bool) Option {
	return withSet(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_set_qmp_monitor(h, C.bool(enabled), cerr)
	})
}

// WithMachineType adds "-machine TYPE" (e.g. "none", "pc", "q35").
func WithMachineType(machineType string) Option {
	return withString("machine_type", machineType, false, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_machine(h, s, cerr)
	})
}

// WithConsole adds a console on a socketpair (see Machine.Console): "-serial chardev:console",
// or with a deviceType (e.g. "isa-serial"; "" for the default serial port)
// "-device TYPE,chardev=console". An index above 0 first adds that many "-serial null".
func WithConsole(deviceType string, index uint32) Option {
	return withString("device_type", deviceType, true, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_console(h, s, C.uint32_t(index), cerr)
	})
}

// WithMonitorNull adds an unused "-monitor null".
func WithMonitorNull() Option {
	return withSet(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_add_monitor_null(h, cerr)
	})
}

// WithFD passes f's open descriptor (an *os.File, a net.Conn ...) to QEMU as
// "-add-fd fd=FD,set=FDSET,opaque=OPAQUE[,OPTS]" (opts "" for none). QEMU inherits it under
// the same number. The caller keeps f and must keep it open until Launch returns.
func WithFD(f syscall.Conn, fdset uint32, opaque, opts string) Option {
	return func(m *Machine) error {
		rc, err := f.SyscallConn()
		if err != nil {
			return invalid("WithFD: %v", err)
		}
		co, err := cstring("opaque", opaque)
		if err != nil {
			return err
		}
		defer C.free(unsafe.Pointer(co))
		var cops *C.char
		if opts != "" {
			if cops, err = cstring("opts", opts); err != nil {
				return err
			}
			defer C.free(unsafe.Pointer(cops))
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
				return C.qm_add_fd(h, C.int(fd), C.uint32_t(fdset), co, cops, cerr)
			})
		}); err != nil {
			return invalid("WithFD: %v", err)
		}
		return serr
	}
}

// WithInheritFDs lets QEMU inherit every descriptor of this process that is not
// close-on-exec, under its number, besides those qm passes (WithFD, qm's own). Off by default.
// Go opens everything close-on-exec, so only a descriptor whose flag the program cleared (fcntl
// F_SETFD), or made without it (syscall.Pipe2 with no flags), reaches QEMU this way; WithFD is
// the usual way to hand QEMU a descriptor.
func WithInheritFDs(inherit bool) Option {
	return withSet(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_set_inherit_fds(h, C.bool(inherit), cerr)
	})
}

// WithMaxMessageSize caps the size of one message from QEMU, in bytes (default 64 MiB; values
// under 1024 count as 1024). A larger message fails the connection with ErrProtocol.
func WithMaxMessageSize(bytes int) Option {
	return func(m *Machine) error {
		if bytes < 0 {
			return invalid("max message size %d is negative", bytes)
		}
		return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
			return C.qm_set_max_message_size(h, C.size_t(bytes), cerr)
		})
	}
}

// WithMaxQueuedEvents caps the number of queued, unread QMP events at n (n >= 0); n = -1 means
// no cap, the default (events are never dropped). When an event arrives and n are queued, the
// oldest is dropped; the next call that reads events fails once with ErrEventsDropped, and
// DroppedEvents counts the drops. See also SetMaxQueuedEvents, for a running machine.
func WithMaxQueuedEvents(n int64) Option {
	return func(m *Machine) error { return m.SetMaxQueuedEvents(n) }
}
