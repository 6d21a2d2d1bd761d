package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"context"
	"encoding/json"
	"unsafe"
)

// Channel is how a Guest talks to the guest.
type Channel int

const (
	// ChannelConsole is the console (WithConsole): a shell at its prompt on the serial port.
	// stdout and stderr come merged; kernel messages are cut out of the output; the shell
	// keeps its state (cd, variables) between runs. A run that times out or is cancelled
	// sends Ctrl-C, and the next run resynchronises by itself.
	ChannelConsole Channel = Channel(C.QM_CHANNEL_CONSOLE)
	// ChannelAgent is the guest agent (WithGuestAgent): /bin/sh -c COMMAND through
	// guest-exec; stderr apart; each run is a fresh shell.
	ChannelAgent Channel = Channel(C.QM_CHANNEL_AGENT)
)

// Guest is a machine's guest seen through one channel: run a shell command, copy files in and
// out, wait until it is ready. Without a deadline in the context, each call waits at most 30 s
// (the library's default).
type Guest struct {
	m       *Machine
	channel Channel
}

// Guest returns the machine's guest over channel.
func (m *Machine) Guest(channel Channel) *Guest {
	return &Guest{m: m, channel: channel}
}

// RunResult is what a command run in the guest printed and how it ended.
type RunResult struct {
	// Status is the exit status as a shell's $? has it: 0–255, 128+N after signal N.
	Status int
	// Stdout is what it wrote to stdout (over the console: stdout and stderr together,
	// exactly as written).
	Stdout []byte
	// Stderr is what it wrote to stderr; nil over the console, which has no separate stderr.
	Stderr []byte
	// KernelMessages are the kernel messages the console printed while it ran, cut out of
	// Stdout (console only).
	KernelMessages []string
}

func (g *Guest) call(ctx context.Context, f func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status) error {
	return g.m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return f(h, w.timeout, w.tok, cerr)
	})
}

// Run runs the shell command in the guest and returns its output and exit status; a command
// that failed is a result with a nonzero Status, not an error. Over the console the command is
// one line (about 870 bytes at most); a console closing during the run (the guest powered off
// or died) is ErrConsoleClosed at once.
func (g *Guest) Run(ctx context.Context, command string) (*RunResult, error) {
	ccmd, err := cstring("command", command)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(ccmd))
	var res *C.qm_run_result
	err = g.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_guest_run(h, C.qm_channel(g.channel), ccmd, t, tok, &res, cerr)
	})
	if err != nil {
		return nil, err
	}
	defer C.qm_run_result_free(res)
	out := &RunResult{Status: int(C.qm_run_result_status(res)), Stdout: []byte{}}
	var n C.size_t
	if p := C.qm_run_result_stdout(res, &n); p != nil {
		out.Stdout = C.GoBytes(unsafe.Pointer(p), C.int(n))
	}
	if C.qm_run_result_has_stderr(res) {
		out.Stderr = []byte{}
		if p := C.qm_run_result_stderr(res, &n); p != nil {
			out.Stderr = C.GoBytes(unsafe.Pointer(p), C.int(n))
		}
	}
	var js *C.char
	var cerr *C.qm_error
	if err := takeError(C.qm_run_result_kernel_messages(res, &js, &cerr), cerr); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(takeBytes(js), &out.KernelMessages); err != nil {
		return nil, &Error{Status: StatusProtocol, Message: "qm: decoding kernel messages: " + err.Error()}
	}
	return out, nil
}

// WaitReady waits until the guest answers: over the console until its shell runs a no-op
// command (a probe without answer is interrupted with Ctrl-C and sent again), over the agent
// until guest-sync is answered.
func (g *Guest) WaitReady(ctx context.Context) error {
	return g.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_guest_wait_ready(h, C.qm_channel(g.channel), t, tok, cerr)
	})
}

// WriteFile writes data to a guest file, creating or truncating it (over the console: printf
// lines of a few hundred bytes each, fine for small files).
func (g *Guest) WriteFile(ctx context.Context, path string, data []byte) error {
	cpath, err := cstring("path", path)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cpath))
	var p *C.uint8_t
	if len(data) > 0 {
		// Go memory without Go pointers, read by C during the call only.
		p = (*C.uint8_t)(unsafe.Pointer(&data[0]))
	}
	return g.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_guest_write_file(h, C.qm_channel(g.channel), cpath, p, C.size_t(len(data)), t, tok, cerr)
	})
}

// ReadFile reads a whole guest file of at most max bytes (over the console: verbatim
// through cat).
func (g *Guest) ReadFile(ctx context.Context, path string, max int) ([]byte, error) {
	if max < 0 {
		return nil, invalid("max must not be negative")
	}
	cpath, err := cstring("path", path)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cpath))
	var data []byte
	err = g.call(ctx, func(h *C.qm_machine, t C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		var p *C.uint8_t
		var n C.size_t
		st := C.qm_guest_read_file(h, C.qm_channel(g.channel), cpath, C.size_t(max), t, tok, &p, &n, cerr)
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

// LinuxGuestQEMUArgs returns the QEMU arguments that boot the Linux test guest (guest/linux):
// kernel and initrd as given, or, both "", the files named by QM_LINUX_KERNEL and
// QM_LINUX_INITRD, else the newest build under QM_LINUX_GUEST_DIR. Add them WithArgs; add
// WithConsole and WithGuestAgent for the channels. The guest prints "qm-guest: ready" once up.
func LinuxGuestQEMUArgs(kernel, initrd string) ([]string, error) {
	var ck, ci *C.char
	if kernel != "" || initrd != "" {
		var err error
		if ck, err = cstring("kernel", kernel); err != nil {
			return nil, err
		}
		defer C.free(unsafe.Pointer(ck))
		if ci, err = cstring("initrd", initrd); err != nil {
			return nil, err
		}
		defer C.free(unsafe.Pointer(ci))
	}
	var out *C.char
	var cerr *C.qm_error
	if err := takeError(C.qm_linux_guest_qemu_args(ck, ci, &out, &cerr), cerr); err != nil {
		return nil, err
	}
	var args []string
	if err := json.Unmarshal(takeBytes(out), &args); err != nil {
		return nil, &Error{Status: StatusProtocol, Message: "qm: decoding the guest's arguments: " + err.Error()}
	}
	return args, nil
}
