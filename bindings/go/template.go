package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// Ready says when a restored machine (or a template's first boot) counts as ready.
type Ready struct {
	kind C.qm_ready
	send string
	text string
}

var (
	// ReadyRunning: as soon as the guest runs again.
	ReadyRunning = Ready{kind: C.QM_READY_RUNNING}
	// ReadyAgent: when the guest agent answers guest-sync (the machine needs WithGuestAgent).
	ReadyAgent = Ready{kind: C.QM_READY_AGENT}
)

// ReadyConsole: when text shows on the console, after sending send ("" sends nothing; "\n"
// brings back the prompt of a guest saved at a shell prompt).
func ReadyConsole(send, text string) Ready {
	return Ready{kind: C.QM_READY_CONSOLE, send: send, text: text}
}

// cReady converts r for one call; free releases the strings.
func (r Ready) c() (send, text *C.char, free func(), err error) {
	free = func() {}
	if r.kind != C.QM_READY_CONSOLE {
		return nil, nil, free, nil
	}
	if r.send != "" {
		if send, err = cstring("send", r.send); err != nil {
			return nil, nil, free, err
		}
	}
	if text, err = cstring("text", r.text); err != nil {
		C.free(unsafe.Pointer(send))
		return nil, nil, free, err
	}
	return send, text, func() {
		C.free(unsafe.Pointer(send))
		C.free(unsafe.Pointer(text))
	}, nil
}

// Template is a guest booted once and saved in a directory the caller names, from which
// running machines are cloned in a fraction of a boot (see the README's "Fast start"). The key
// of the saved state covers the QEMU binary, the settings, the arguments and the files they
// name: a second process with the same template finds the state and boots nothing. Safe for
// concurrent use; Close frees it (never the saved state, nor the clones).
type Template struct {
	mu sync.RWMutex
	h  *C.qm_template // nil once closed
}

// TemplateOption configures a Template.
type TemplateOption func(t *Template) error

// TemplateArgs appends QEMU arguments, as WithArgs.
func TemplateArgs(args ...string) TemplateOption {
	return func(t *Template) error {
		arr, free, err := cstrings("args", args)
		if err != nil {
			return err
		}
		defer free()
		return t.set(func(h *C.qm_template, cerr **C.qm_error) C.qm_status {
			return C.qm_template_add_args(h, arr, C.size_t(len(args)), cerr)
		})
	}
}

// TemplateMachineType adds "-machine TYPE".
func TemplateMachineType(machineType string) TemplateOption {
	return func(t *Template) error {
		s, err := cstring("machineType", machineType)
		if err != nil {
			return err
		}
		defer C.free(unsafe.Pointer(s))
		return t.set(func(h *C.qm_template, cerr **C.qm_error) C.qm_status {
			return C.qm_template_set_machine(h, s, cerr)
		})
	}
}

// TemplateConsole gives every machine a console on its first serial port, as WithConsole.
func TemplateConsole() TemplateOption {
	return func(t *Template) error {
		return t.set(func(h *C.qm_template, cerr **C.qm_error) C.qm_status {
			return C.qm_template_set_console(h, nil, 0, cerr)
		})
	}
}

// TemplateGuestAgent gives every machine a guest agent channel, as WithGuestAgent.
func TemplateGuestAgent() TemplateOption {
	return func(t *Template) error {
		return t.set(func(h *C.qm_template, cerr **C.qm_error) C.qm_status {
			return C.qm_template_set_guest_agent(h, true, cerr)
		})
	}
}

// TemplateDisk adds a disk, "-drive file=OVERLAY,format=qcow2,OPTS", on a qcow2 overlay of
// base (format e.g. "raw" or "qcow2"), which is never written: each clone writes an overlay
// of its own, removed at its shutdown. Needs qemu-img.
func TemplateDisk(base, format, opts string) TemplateOption {
	return func(t *Template) error {
		b, err := cstring("base", base)
		if err != nil {
			return err
		}
		defer C.free(unsafe.Pointer(b))
		f, err := cstring("format", format)
		if err != nil {
			return err
		}
		defer C.free(unsafe.Pointer(f))
		o, err := cstring("opts", opts)
		if err != nil {
			return err
		}
		defer C.free(unsafe.Pointer(o))
		return t.set(func(h *C.qm_template, cerr **C.qm_error) C.qm_status {
			return C.qm_template_add_disk(h, b, f, o, cerr)
		})
	}
}

// TemplateCloneReady sets what Clone waits for (default: ReadyAgent with a guest agent, else
// ReadyRunning).
func TemplateCloneReady(r Ready) TemplateOption {
	return func(t *Template) error {
		send, text, free, err := r.c()
		if err != nil {
			return err
		}
		defer free()
		return t.set(func(h *C.qm_template, cerr **C.qm_error) C.qm_status {
			return C.qm_template_set_clone_ready(h, r.kind, send, text, cerr)
		})
	}
}

// NewTemplate creates a template of machines running binary, saved under dir.
func NewTemplate(binary, dir string, opts ...TemplateOption) (*Template, error) {
	cb, err := cstring("binary", binary)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cb))
	cd, err := cstring("dir", dir)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cd))
	var h *C.qm_template
	var cerr *C.qm_error
	if err := takeError(C.qm_template_new(cb, cd, &h, &cerr), cerr); err != nil {
		return nil, err
	}
	t := &Template{h: h}
	runtime.SetFinalizer(t, (*Template).Close)
	for _, o := range opts {
		if err := o(t); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

// Close frees the template. Safe to call twice.
func (t *Template) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.h != nil {
		C.qm_template_free(t.h)
		t.h = nil
	}
}

func (t *Template) use(f func(h *C.qm_template) error) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.h == nil {
		return closedError()
	}
	err := f(t.h)
	runtime.KeepAlive(t)
	return err
}

func (t *Template) set(f func(h *C.qm_template, cerr **C.qm_error) C.qm_status) error {
	return t.use(func(h *C.qm_template) error {
		var cerr *C.qm_error
		return takeError(f(h, &cerr), cerr)
	})
}

// blocking runs a blocking template call with ctx's deadline as its timeout (the library's
// default without one) and ctx's cancellation as its token.
func (t *Template) blocking(ctx context.Context, f func(h *C.qm_template, timeout C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status) error {
	if err := ctx.Err(); err != nil {
		return contextError(err)
	}
	timeout := C.int64_t(C.QM_WAIT_DEFAULT)
	if dl, ok := ctx.Deadline(); ok {
		timeout = millis(max(time.Until(dl), 0))
	}
	tok := C.qm_cancel_new()
	if tok == nil {
		return errNoMemory("qm_cancel_new")
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		if ctx.Err() != context.DeadlineExceeded {
			C.qm_cancel_fire(tok)
		}
		close(fired)
	})
	err := t.use(func(h *C.qm_template) error {
		var cerr *C.qm_error
		return takeError(f(h, timeout, tok, &cerr), cerr)
	})
	if !stop() {
		<-fired
	}
	C.qm_cancel_free(tok)
	if e, ok := err.(*Error); ok && ctx.Err() != nil {
		e.cause = append(e.cause, ctx.Err())
	}
	return err
}

// Prepare makes sure the template's state is saved: when it is not, boots a machine, waits
// until r, saves it and shuts it down. booted is false when the state was found (made by this
// process or another). Without a deadline in ctx the library's default (120 s) applies.
func (t *Template) Prepare(ctx context.Context, r Ready) (booted bool, err error) {
	send, text, free, err := r.c()
	if err != nil {
		return false, err
	}
	defer free()
	var b C.bool
	err = t.blocking(ctx, func(h *C.qm_template, timeout C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_template_prepare(h, r.kind, send, text, timeout, tok, &b, cerr)
	})
	return bool(b), err
}

// IsSaved reports whether the template's state is saved.
func (t *Template) IsSaved() (bool, error) {
	var b C.bool
	err := t.set(func(h *C.qm_template, cerr **C.qm_error) C.qm_status {
		return C.qm_template_is_saved(h, &b, cerr)
	})
	return bool(b), err
}

// StateDir is the directory of the template's state (dir/key).
func (t *Template) StateDir() (string, error) {
	var out *C.char
	err := t.set(func(h *C.qm_template, cerr **C.qm_error) C.qm_status {
		return C.qm_template_state_dir(h, &out, cerr)
	})
	return takeString(out), err
}

// Clone starts a running machine from the saved state (ErrState when not prepared), with its
// own sockets, console, agent channel and disk overlays, ready as TemplateCloneReady says. The
// machine is launched; Close it as any other (a clone is for one run). Safe to call from many
// goroutines at once.
func (t *Template) Clone(ctx context.Context) (*Machine, error) {
	var h *C.qm_machine
	err := t.blocking(ctx, func(th *C.qm_template, timeout C.int64_t, tok *C.qm_cancel, cerr **C.qm_error) C.qm_status {
		return C.qm_template_clone(th, timeout, tok, &h, cerr)
	})
	if err != nil {
		return nil, err
	}
	return adoptMachine(h)
}

// adoptMachine wraps a handle the library created (a clone) as New does.
func adoptMachine(h *C.qm_machine) (*Machine, error) {
	tok := C.qm_cancel_new()
	if tok == nil {
		C.qm_free(h)
		return nil, errNoMemory("qm_cancel_new")
	}
	m := &Machine{h: h, closeTok: tok, toks: make(map[*C.qm_cancel]struct{})}
	runtime.SetFinalizer(m, (*Machine).finalize)
	return m, nil
}

// SaveState pauses the running machine and saves its state to path, returning what was
// recorded with it (JSON: stream_bytes, qemu_version, binary, settings). The guest stays
// paused ("postmigrate": cont resumes it). Without a deadline in ctx: 120 s.
func (m *Machine) SaveState(ctx context.Context, path string) (json.RawMessage, error) {
	p, err := cstring("path", path)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(p))
	var out *C.char
	err = m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return C.qm_save_state(h, p, w.timeout, w.tok, &out, cerr)
	})
	if err != nil {
		return nil, err
	}
	return takeBytes(out), nil
}

// RestoreState launches the configured machine from a state SaveState wrote, resumes the
// guest and waits until r. A machine configured differently from the saved one, a truncated
// file or not a state file fails with ErrInvalid before anything is launched; a stream QEMU
// cannot load is a *LaunchError, with no QEMU left. Without a deadline in ctx: 120 s.
func (m *Machine) RestoreState(ctx context.Context, path string, r Ready) error {
	p, err := cstring("path", path)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(p))
	send, text, free, err := r.c()
	if err != nil {
		return err
	}
	defer free()
	return m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return C.qm_restore_state(h, p, r.kind, send, text, w.timeout, w.tok, cerr)
	})
}

// LaunchIncoming launches the machine waiting for an incoming migration (MigrateTo).
func (m *Machine) LaunchIncoming(ctx context.Context) error {
	return m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return C.qm_launch_incoming(h, w.timeout, w.tok, cerr)
	})
}

// MigrateTo live-migrates the running machine to dest (launched with LaunchIncoming, the same
// devices) and waits until both report it completed. Without a deadline in ctx: 300 s.
func (m *Machine) MigrateTo(ctx context.Context, dest *Machine) error {
	return dest.use(func(dh *C.qm_machine) error {
		return m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
			return C.qm_migrate_to(h, dh, w.timeout, w.tok, cerr)
		})
	})
}

// WaitMigration waits until the machine's migration ends (ctx without deadline: as long as it
// takes) and returns the last query-migrate reply; a failed migration is a *QMPError.
func (m *Machine) WaitMigration(ctx context.Context) (json.RawMessage, error) {
	return m.waitForJSON(ctx, func(h *C.qm_machine, timeout C.int64_t, tok *C.qm_cancel, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_wait_migration(h, timeout, tok, out, cerr)
	})
}

// RunJob runs block job id to its end (completing it when ready, finalizing and dismissing as
// needed) and returns its last query-jobs entry ("null" when QEMU dismissed it itself). A job
// that ends with an error is a *QMPError holding it; when ctx ends the job is cancelled.
// Without a deadline in ctx: 300 s.
func (m *Machine) RunJob(ctx context.Context, id string) (json.RawMessage, error) {
	cid, err := cstring("id", id)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cid))
	var out *C.char
	err = m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return C.qm_run_job(h, cid, w.timeout, w.tok, &out, cerr)
	})
	if err != nil {
		return nil, err
	}
	return takeBytes(out), nil
}
