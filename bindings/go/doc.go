// Package qm launches and drives QEMU virtual machines: it starts QEMU with a QMP monitor,
// runs QMP commands (from many goroutines at once), waits for events, reads and writes the
// console, passes file descriptors and shuts QEMU down, gracefully or by force, without
// leaking processes, files or descriptors. It is a thin cgo layer over qm's C library
// (include/qm.h), which reproduces QEMU's Python QEMUMachine; everything else (the QMP client,
// event matching, the shutdown ladder, default timeouts) is the library's.
//
// # Lifecycle
//
//	m, err := qm.New("qemu-system-x86_64", qm.WithMachineType("none"))
//	defer m.Close()                            // shuts QEMU down if it still runs
//	err = m.Launch(ctx)                        // *qm.LaunchError: exit code, command, output
//	st, err := m.Cmd(ctx, "query-status", nil) // json.RawMessage, or *qm.QMPError
//	ev, err := m.EventWait(ctx, qm.EventFilter{Name: "STOP"})
//	err = m.Shutdown(ctx)                      // quit, wait, kill if need be
//
// The package example (Example) is the whole lifecycle as a program.
//
// Command arguments and event filters are any values that marshal to JSON (nil: none);
// results are json.RawMessage, which CmdInto and Decode unmarshal into a caller's type.
//
// # Contexts and timeouts
//
// Every call that can block takes a context.Context and returns promptly when the context
// ends: a cancellation token of the C library (qm_cancel) is fired by context.AfterFunc,
// which interrupts the wait inside C at once; nothing polls. Calls with a context that can
// never end (context.Background) use no per-call token. A context's deadline becomes the
// call's timeout (in milliseconds, rounded up); without one:
//
//   - Launch: the QMP timer (WithQMPTimer, 30 s by default) bounds the QMP handshake;
//   - QMP, Cmd, CmdInto: the QMP timer (the C library's QM_WAIT_DEFAULT);
//   - Shutdown: 30 s (QM_WAIT_DEFAULT), after which QEMU is killed: a graceful shutdown always
//     ends;
//   - Wait, Event, Events, EventWait: no limit (QM_WAIT_FOREVER), as with exec.Cmd.Wait.
//
// A call that ended because its context did returns an error that matches the context's error
// (errors.Is(err, context.Canceled) or context.DeadlineExceeded) as well as ErrInterrupted or
// ErrTimeout. A Shutdown or Wait whose context ends kills QEMU (ErrAbnormalShutdown), as
// exec.CommandContext does: they never leave QEMU running behind an error.
//
// # Errors
//
// Errors come from the C library's error object, read in the same call (never from
// thread-local state). They are *LaunchError (exit code, command line, output, cause),
// *QMPError (class, description) or *Error (status, message, errno), and match with
// errors.Is the sentinel of their status: ErrLaunch, ErrQMP, ErrTimeout, ErrDisconnected,
// ErrInterrupted, ErrAbnormalShutdown, ErrState, ErrInvalid, ErrProtocol, ErrIO, ErrPanic,
// plus ErrClosed for calls on (or interrupted by) a closed Machine, and the errno of a failed
// system call (errors.Is(err, fs.ErrNotExist) for a QEMU binary that does not exist).
//
// # Concurrency and memory
//
// A Machine is safe for concurrent use: any number of goroutines may run commands, wait for
// events and query its state at once; each command gets its own reply. No Go pointer is
// kept by C: strings and JSON texts are copied to C memory for the duration of a call. Close
// interrupts blocked calls, waits for every call to return, and only then frees the handle,
// so it never races with a call in flight; a finalizer closes (and kills) a Machine that is
// dropped without Close.
//
// # Logging and diagnostics
//
// The library logs warnings to stderr; SetLogLevel(LogDebug) (or QM_LOG=debug) adds every
// lifecycle step and QMP message, and SetLogger sends the records to a *slog.Logger instead.
// WithQMPTranscript writes every QMP message of a machine to a JSON-lines file; LogSoFar
// reads QEMU's output while it runs. Error messages start with "qm: " and lead with what
// happened ("qm: launch failed: QEMU exited with code 1: ...", "qm: timed out: no SHUTDOWN
// event within 3000 ms").
//
// # Linking
//
// The package finds qm through pkg-config ("#cgo pkg-config: qm"), with no build tag: install
// the C library with "make install PREFIX=<prefix>" and set PKG_CONFIG_PATH to
// <prefix>/lib/pkgconfig (see link.go for the run-time library path). Inside the qm
// repository, "make" writes an in-tree qm.pc (target/pkgconfig) that links the checkout's
// static libqm.a; "make test-go" uses it. The module path is not fetchable: a module outside
// the repository requires it through a replace directive (or go work) pointing at a checkout.
//
// # Test guest
//
// WriteGuestImage writes a 512-byte boot sector that prints a banner on the serial console,
// then echoes, powers off, exits with a chosen status or halts; GuestQEMUArgs boots it. Tests
// of consoles and guest-initiated shutdowns need no disk image.
package qm
