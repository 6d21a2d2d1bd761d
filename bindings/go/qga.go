package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"context"
	"encoding/json"
	"time"
	"unsafe"
)

// WithGuestAgent gives the guest a channel to its agent (qemu-ga): a virtserialport named
// org.qemu.guest_agent.0 on a socketpair qm owns, plus a virtio-serial controller unless the
// machine's arguments already have a "-device virtio-serial…" (the port then goes on the first
// virtio-serial bus). Use it through Machine.Agent.
func WithGuestAgent() Option {
	return func(m *Machine) error {
		return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
			return C.qm_set_guest_agent(h, true, cerr)
		})
	}
}

// WithGuestAgentUnix is WithGuestAgent with the channel on a unix socket at path ("" for
// <sock dir>/<name>-qga.sock), on which qm listens and QEMU connects.
func WithGuestAgentUnix(path string) Option {
	return withString("path", path, true, func(h *C.qm_machine, s *C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_set_guest_agent_unix(h, s, cerr)
	})
}

// Agent is the guest agent (qemu-ga) of a machine configured WithGuestAgent. Its calls fail
// with ErrState until the machine is launched, and with ErrDisconnected once it shut down.
// Calls from many goroutines queue for the channel (the agent runs one command at a time);
// each call's context covers its time in the queue. Without a deadline in the context, a call
// waits at most 30 s (the library's default).
type Agent struct {
	m *Machine
}

// Agent returns the machine's guest agent.
func (m *Machine) Agent() *Agent {
	return &Agent{m: m}
}

// call runs one blocking agent call with ctx's deadline and cancellation (the library's
// default, 30 s, when ctx has no deadline).
func (a *Agent) call(ctx context.Context, f func(h *C.qm_machine, timeout C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status) error {
	return a.m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return f(h, w.timeout, w.tok, cerr)
	})
}

// Sync waits until the agent answers guest-sync-delimited (sent again every 500 ms while it is
// silent), dropping stale data in the channel. Call it after Launch to wait for the guest to
// boot and start qemu-ga; other calls sync by themselves when needed.
func (a *Agent) Sync(ctx context.Context) error {
	return a.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_agent_sync(h, t, tok, cerr)
	})
}

// Ping runs guest-ping.
func (a *Agent) Ping(ctx context.Context) error {
	return a.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_agent_ping(h, t, tok, cerr)
	})
}

// Execute runs the agent command cmd with args (marshalled to a JSON object; nil for none) and
// returns the agent's raw reply, {"return": …} or {"error": …}.
func (a *Agent) Execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return a.execute(ctx, cmd, args, true)
}

// Cmd runs the agent command cmd and returns its "return" value; an agent error is a
// *QMPError with the agent's class and description.
func (a *Agent) Cmd(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return a.execute(ctx, cmd, args, false)
}

func (a *Agent) execute(ctx context.Context, cmd string, args any, raw bool) (json.RawMessage, error) {
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
	var out json.RawMessage
	err = a.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		var res *C.char
		var st C.qm_status
		if raw {
			st = C.qm_agent_execute(h, ccmd, cargs, t, tok, &res, cerr)
		} else {
			st = C.qm_agent_cmd(h, ccmd, cargs, t, tok, &res, cerr)
		}
		if st == C.QM_OK {
			out = takeBytes(res)
		}
		return st
	})
	return out, err
}

// ExecRequest is a program for Agent.Exec to run in the guest.
type ExecRequest struct {
	Path      string        // absolute, or a name looked up in the agent's PATH
	Args      []string      // argv[1:]
	Env       []string      // NAME=VALUE entries
	Input     []byte        // the program's stdin (then closed)
	NoCapture bool          // let stdout and stderr go to the agent's instead of capturing them
	MaxOutput int           // bytes kept of each stream; 0: 16 MiB (the agent's own cap)
	Interval  time.Duration // between two guest-exec-status polls; 0: the library's (10 ms)
}

// ExecResult is how a program run by Agent.Exec ended, and what it wrote.
type ExecResult struct {
	PID             int64 // its pid in the guest
	Exited          bool  // it exited (ExitCode is valid)
	ExitCode        int
	Signaled        bool // a signal killed it (Signal is valid)
	Signal          int
	Stdout, Stderr  []byte
	StdoutTruncated bool // stdout was longer than the cap
	StderrTruncated bool
}

// Exec runs a program in the guest (guest-exec) and polls guest-exec-status until it ends.
// When ctx ends first the program keeps running in the guest (the agent cannot kill it); the
// error names its pid.
func (a *Agent) Exec(ctx context.Context, req ExecRequest) (*ExecResult, error) {
	cpath, err := cstring("Path", req.Path)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cpath))
	argv, freeArgv, err := cstrings("Args", req.Args)
	if err != nil {
		return nil, err
	}
	defer freeArgv()
	env, freeEnv, err := cstrings("Env", req.Env)
	if err != nil {
		return nil, err
	}
	defer freeEnv()
	if req.MaxOutput < 0 || req.Interval < 0 {
		return nil, invalid("MaxOutput and Interval must not be negative")
	}
	interval := C.int64_t(C.QM_WAIT_DEFAULT)
	if req.Interval > 0 {
		interval = C.int64_t((req.Interval + time.Millisecond - 1) / time.Millisecond)
	}
	var input *C.uint8_t
	if len(req.Input) > 0 {
		// Go memory without Go pointers, read by C during the call only.
		input = (*C.uint8_t)(unsafe.Pointer(&req.Input[0]))
	}
	var res *C.qm_exec_result
	err = a.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_agent_exec(h, cpath, argv, C.size_t(len(req.Args)), env, C.size_t(len(req.Env)),
			input, C.size_t(len(req.Input)), C.bool(!req.NoCapture), C.size_t(req.MaxOutput),
			interval, t, tok, &res, cerr)
	})
	if err != nil {
		return nil, err
	}
	defer C.qm_exec_result_free(res)
	out := &ExecResult{PID: int64(C.qm_exec_result_pid(res))}
	var n C.int
	if C.qm_exec_result_exit_code(res, &n) {
		out.Exited, out.ExitCode = true, int(n)
	}
	if C.qm_exec_result_signal(res, &n) {
		out.Signaled, out.Signal = true, int(n)
	}
	out.Stdout = captured(res, true)
	out.Stderr = captured(res, false)
	out.StdoutTruncated = bool(C.qm_exec_result_stdout_truncated(res))
	out.StderrTruncated = bool(C.qm_exec_result_stderr_truncated(res))
	return out, nil
}

// captured copies one captured stream of res.
func captured(res *C.qm_exec_result, stdout bool) []byte {
	var n C.size_t
	var p *C.uint8_t
	if stdout {
		p = C.qm_exec_result_stdout(res, &n)
	} else {
		p = C.qm_exec_result_stderr(res, &n)
	}
	if p == nil || n == 0 {
		return []byte{}
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

// ReadFile reads a whole guest file; a file larger than max bytes fails with ErrInvalid.
func (a *Agent) ReadFile(ctx context.Context, path string, max int) ([]byte, error) {
	if max < 0 {
		return nil, invalid("max must not be negative")
	}
	cpath, err := cstring("path", path)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cpath))
	var data []byte
	err = a.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		var p *C.uint8_t
		var n C.size_t
		st := C.qm_agent_file_read(h, cpath, C.size_t(max), t, tok, &p, &n, cerr)
		if st == C.QM_OK {
			data = []byte{}
			if p != nil {
				data = C.GoBytes(unsafe.Pointer(p), C.int(n))
				C.qm_bytes_free(p, n)
			}
		}
		return st
	})
	return data, err
}

// WriteFile writes data to a guest file, creating or truncating it.
func (a *Agent) WriteFile(ctx context.Context, path string, data []byte) error {
	cpath, err := cstring("path", path)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cpath))
	var p *C.uint8_t
	if len(data) > 0 {
		p = (*C.uint8_t)(unsafe.Pointer(&data[0]))
	}
	return a.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_agent_file_write(h, cpath, p, C.size_t(len(data)), t, tok, cerr)
	})
}

// Shutdown runs guest-shutdown with mode "powerdown" (or ""), "halt" or "reboot". It succeeds
// once the agent took the command, or the channel closed (QEMU exited with the guest); wait
// for QEMU's SHUTDOWN event or its exit separately.
func (a *Agent) Shutdown(ctx context.Context, mode string) error {
	var cmode *C.char
	if mode != "" {
		var err error
		if cmode, err = cstring("mode", mode); err != nil {
			return err
		}
		defer C.free(unsafe.Pointer(cmode))
	}
	return a.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_agent_shutdown(h, cmode, t, tok, cerr)
	})
}

// OSInfo runs guest-get-osinfo and returns its JSON object (id, kernel-release, machine …).
func (a *Agent) OSInfo(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	err := a.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		var res *C.char
		st := C.qm_agent_get_osinfo(h, t, tok, &res, cerr)
		if st == C.QM_OK {
			out = takeBytes(res)
		}
		return st
	})
	return out, err
}

// Time runs guest-get-time: the guest's clock.
func (a *Agent) Time(ctx context.Context) (time.Time, error) {
	var ns C.int64_t
	err := a.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_agent_get_time(h, t, tok, &ns, cerr)
	})
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, int64(ns)), nil
}
