package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Status is the result code of a call into the C library: the values of qm_status in qm.h.
// Every error this package returns carries one (see [StatusOf]).
type Status int

// The status codes, with the values of qm.h (stable: they never change).
const (
	StatusOK               Status = C.QM_OK                    // success
	StatusLaunch           Status = C.QM_ERR_LAUNCH            // the machine could not be launched
	StatusQMP              Status = C.QM_ERR_QMP               // QEMU answered a command with an error
	StatusTimeout          Status = C.QM_ERR_TIMEOUT           // a wait ran out of time
	StatusDisconnected     Status = C.QM_ERR_DISCONNECTED      // the QMP connection or the agent channel is gone
	StatusInterrupted      Status = C.QM_ERR_INTERRUPTED       // the call was interrupted
	StatusAbnormalShutdown Status = C.QM_ERR_ABNORMAL_SHUTDOWN // QEMU had to be killed
	StatusState            Status = C.QM_ERR_STATE             // the call does not fit the machine's state
	StatusInvalid          Status = C.QM_ERR_INVALID           // an invalid argument
	StatusProtocol         Status = C.QM_ERR_PROTOCOL          // QEMU broke the QMP protocol
	StatusIO               Status = C.QM_ERR_IO                // an operating-system call failed
	StatusPanic            Status = C.QM_ERR_PANIC             // a bug in qm (please report it)
	StatusEventsDropped    Status = C.QM_ERR_EVENTS_DROPPED    // the event queue's cap dropped events
	StatusConsoleClosed    Status = C.QM_ERR_CONSOLE_CLOSED    // the console reached end of file
	StatusConsoleFailure   Status = C.QM_ERR_CONSOLE_FAILURE   // a console failure pattern matched
	StatusRefused          Status = C.QM_ERR_REFUSED           // a schema check refused the call
	statusCount                   = StatusRefused + 1
)

// String names the status, e.g. "timeout".
func (s Status) String() string {
	if s >= 0 && s < statusCount {
		return statuses[s].name
	}
	return fmt.Sprintf("status %d", int(s))
}

// Sentinel errors, one per status: every error this package returns matches the sentinel of
// its status with errors.Is, e.g. errors.Is(err, qm.ErrTimeout).
var (
	// ErrLaunch means the machine could not be launched (the error is a *LaunchError).
	ErrLaunch = errors.New("qm: launch failed")
	// ErrQMP means QEMU answered a command with an error (the error is a *QMPError).
	ErrQMP = errors.New("qm: QMP error")
	// ErrTimeout means a wait ran out of time (the context's deadline, or the call's default).
	ErrTimeout = errors.New("qm: timeout")
	// ErrDisconnected means the QMP connection (or, for an agent call, the guest agent's
	// channel) is gone (QEMU exited, or the machine shut down); the message names which.
	ErrDisconnected = errors.New("qm: disconnected")
	// ErrInterrupted means the call was interrupted (its context was cancelled, or Close ran).
	ErrInterrupted = errors.New("qm: interrupted")
	// ErrAbnormalShutdown means a graceful shutdown or a wait did not end in time, or was
	// interrupted, and QEMU was killed. Cleanup has run.
	ErrAbnormalShutdown = errors.New("qm: abnormal shutdown")
	// ErrState means the call does not fit the machine's state (a command before launch,
	// launch twice, a closed machine ...).
	ErrState = errors.New("qm: wrong state")
	// ErrInvalid means an invalid argument (a value that does not marshal to JSON, a string
	// with a NUL byte, an out-of-range number, an invalid setting ...).
	ErrInvalid = errors.New("qm: invalid argument")
	// ErrProtocol means QEMU broke the QMP protocol (bad JSON, a message over the size
	// cap ...). The connection is then unusable.
	ErrProtocol = errors.New("qm: protocol error")
	// ErrIO means an operating-system call failed; the error also matches its syscall.Errno.
	ErrIO = errors.New("qm: I/O error")
	// ErrPanic means a bug inside qm was caught at the C boundary; please report the message.
	ErrPanic = errors.New("qm: internal error")
	// ErrEventsDropped means the cap set with WithMaxQueuedEvents dropped events (the oldest
	// first); reported once, to the next call that reads events (see DroppedEvents).
	ErrEventsDropped = errors.New("qm: events dropped")
	// ErrClosed means the machine was closed (Close) before or during the call. Such errors
	// also match ErrState (a call after Close) or ErrInterrupted (a call Close interrupted).
	ErrClosed = errors.New("qm: machine closed")
	// ErrConsoleClosed means the console reached end of file (QEMU exited or closed it) before
	// a console wait found its pattern; the error's ConsoleText has the unread output.
	ErrConsoleClosed = errors.New("qm: console closed")
	// ErrConsoleFailure means a console wait found a failure pattern; the error's ConsoleText
	// has the output up to and including it, its FailurePattern which pattern it was.
	ErrConsoleFailure = errors.New("qm: console failure pattern")
	// ErrRefused means a check before send refused the call under a strict SchemaPolicy and
	// nothing was sent (the error is a *RefusedError, with the JSON path and the rule).
	ErrRefused = errors.New("qm: refused by the schema check")
)

// statuses is the one table of what each status is called and which sentinel it matches.
var statuses = [statusCount]struct {
	name     string
	sentinel error
}{
	StatusOK:               {"ok", nil},
	StatusLaunch:           {"launch failed", ErrLaunch},
	StatusQMP:              {"QMP error", ErrQMP},
	StatusTimeout:          {"timeout", ErrTimeout},
	StatusDisconnected:     {"disconnected", ErrDisconnected},
	StatusInterrupted:      {"interrupted", ErrInterrupted},
	StatusAbnormalShutdown: {"abnormal shutdown", ErrAbnormalShutdown},
	StatusState:            {"wrong state", ErrState},
	StatusInvalid:          {"invalid argument", ErrInvalid},
	StatusProtocol:         {"protocol error", ErrProtocol},
	StatusIO:               {"I/O error", ErrIO},
	StatusPanic:            {"internal error (panic)", ErrPanic},
	StatusEventsDropped:    {"events dropped", ErrEventsDropped},
	StatusConsoleClosed:    {"console closed", ErrConsoleClosed},
	StatusConsoleFailure:   {"console failure pattern", ErrConsoleFailure},
	StatusRefused:          {"refused by the schema check", ErrRefused},
}

func sentinel(s Status) error {
	if s > StatusOK && s < statusCount {
		return statuses[s].sentinel
	}
	return nil
}

// Error is a failed call's error (every status but StatusLaunch and StatusQMP, which have
// their own types): the status, the library's message and, for a failed system call, the
// errno. It matches with errors.Is the sentinel of its status (ErrTimeout ...), its Errno
// (so errors.Is(err, fs.ErrNotExist) works), and, when the call ended because its context
// did, the context's error (context.Canceled or context.DeadlineExceeded).
type Error struct {
	Status  Status        // what went wrong
	Message string        // the library's message, for humans
	Errno   syscall.Errno // the failed system call's errno (StatusIO), or 0
	Cause   *Error        // what caused it (StatusAbnormalShutdown: why QEMU was killed), or nil
	// ConsoleText is the console output a console wait's error carries: the unread output
	// (StatusConsoleClosed), the output up to the failure pattern (StatusConsoleFailure), the
	// unread tail (a console wait's StatusTimeout). Empty for other errors.
	ConsoleText string
	// FailurePattern is, for StatusConsoleFailure, the index of the failure pattern that
	// matched (in Patterns.Failure); 0 otherwise.
	FailurePattern int
	cause          []error // further errors it wraps: the context's error, ErrClosed
}

// Error returns the message.
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Status.String()
	}
	if !strings.HasPrefix(msg, "qm: ") {
		msg = "qm: " + msg
	}
	for _, c := range e.cause {
		if c != ErrClosed || !strings.Contains(msg, "closed") {
			msg += " (" + c.Error() + ")"
		}
	}
	return msg
}

// Unwrap returns the status's sentinel, the Errno (if any), the Cause (if any) and the
// context's error (if the call ended because its context did).
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 3+len(e.cause))
	if s := sentinel(e.Status); s != nil {
		errs = append(errs, s)
	}
	if e.Errno != 0 {
		errs = append(errs, e.Errno)
	}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	return append(errs, e.cause...)
}

// QMPError is QEMU's error response to a command (see Machine.Cmd): {"error": {"class":
// ..., "desc": ...}}. It matches ErrQMP with errors.Is.
type QMPError struct {
	Class string // e.g. "GenericError", "CommandNotFound"
	Desc  string // QEMU's description, e.g. "The command foo has not been found"
}

// Error returns "qm: QMP error CLASS: DESC".
func (e *QMPError) Error() string {
	return fmt.Sprintf("qm: QMP error %s: %s", e.Class, e.Desc)
}

// Unwrap returns ErrQMP.
func (e *QMPError) Unwrap() error { return ErrQMP }

// LaunchError is a failed Launch: what QEMU said and why qm gave up. By then no QEMU process
// is left and everything the launch created is removed; the machine can be launched again.
// It matches ErrLaunch with errors.Is, and through Cause the reason (ErrIO and the errno for
// a binary that cannot be started, ErrDisconnected for a QEMU that exited early, ErrTimeout
// when the QMP timer ran out, ErrInterrupted and the context's error when the context ended).
type LaunchError struct {
	// ExitCode is QEMU's exit status when Exited is true (negative: killed by that signal).
	// Exited is false when QEMU never ran, or was still running and was killed.
	ExitCode int
	Exited   bool
	Command  string // the command line, joined by spaces (for humans; never run by a shell)
	Output   string // what QEMU wrote to stdout and stderr (possibly empty)
	Message  string // the library's full message (exit code, command line and output)
	Cause    error  // why the launch failed: an *Error (with the context's error if it ended)
}

// Error returns the library's message.
func (e *LaunchError) Error() string {
	msg := e.Message
	if !strings.HasPrefix(msg, "qm: ") {
		msg = "qm: " + msg
	}
	return msg
}

// Unwrap returns ErrLaunch and the cause.
func (e *LaunchError) Unwrap() []error {
	if e.Cause == nil {
		return []error{ErrLaunch}
	}
	return []error{ErrLaunch, e.Cause}
}

// StatusOf returns the status of an error this package returned (StatusOK for nil, StatusLaunch
// for a *LaunchError, StatusQMP for a *QMPError), or -1 for another error.
func StatusOf(err error) Status {
	var e *Error
	var le *LaunchError
	var qe *QMPError
	var re *RefusedError
	switch {
	case err == nil:
		return StatusOK
	case errors.As(err, &re):
		return StatusRefused
	case errors.As(err, &le):
		return StatusLaunch
	case errors.As(err, &qe):
		return StatusQMP
	case errors.As(err, &e):
		return e.Status
	}
	return -1
}

// invalid makes an ErrInvalid error for an argument rejected on the Go side.
func invalid(format string, args ...any) error {
	return &Error{Status: StatusInvalid, Message: "qm: " + fmt.Sprintf(format, args...)}
}

// withCause adds causes (the context's error, ErrClosed) to an error this package made.
func withCause(err error, causes ...error) error {
	var c []error
	for _, x := range causes {
		if x != nil {
			c = append(c, x)
		}
	}
	if len(c) == 0 {
		return err
	}
	switch e := err.(type) {
	case *Error:
		e.cause = append(e.cause, c...)
		return e
	case *LaunchError:
		if ce, ok := e.Cause.(*Error); ok {
			ce.cause = append(ce.cause, c...)
		} else {
			e.Cause = &Error{Status: StatusInterrupted, cause: c}
		}
		return e
	}
	return err
}
