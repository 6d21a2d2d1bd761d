package qm

// #include <qm.h>
import "C"

import (
	"context"
	"time"
)

// This file adapts Go's context.Context to the library's (timeout_ms, cancel) pair, and
// nothing more: what a timeout, a default or a fired token means is the library's to decide.

// call runs one blocking C call: the use, begin, end and finish every blocking method needs,
// written once. f gets the handle, the call's timeout and token, and the error out-parameter.
func (m *Machine) call(ctx context.Context, def C.int64_t, teardown bool, f func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status) error {
	return m.use(func(h *C.qm_machine) error {
		w, err := m.begin(ctx, def, teardown)
		if err != nil {
			return err
		}
		defer m.end(w)
		var cerr *C.qm_error
		return m.finish(ctx, w, takeError(f(h, w, &cerr), cerr))
	})
}

// waiter is the timeout and the cancellation token of one blocking call: the context's
// deadline goes to the library once, as the timeout, and its cancellation once, as the token.
// What a timeout, a default or a fired token means is the library's to decide.
type waiter struct {
	tok      *C.qm_cancel
	timeout  C.int64_t
	deadline time.Time // the context's deadline, when it became the timeout
	stop     func() bool
	fired    chan struct{}
}

// begin prepares a blocking call: its timeout (the context's deadline in milliseconds,
// rounded up, or def) and its token. A context that can end gets its own token, fired by
// context.AfterFunc when the context is cancelled (not at its deadline: that is the timeout);
// any other call uses the machine's token, which only Close fires.
//
// A context that already ended fails the call before it starts (Go's convention), except for
// a teardown (Shutdown, Wait): it gets a fired token, which the library turns into "kill QEMU".
// Callers hold the read lock (use) and call end when the C call returned.
func (m *Machine) begin(ctx context.Context, def C.int64_t, teardown bool) (*waiter, error) {
	w := &waiter{timeout: def}
	if dl, ok := ctx.Deadline(); ok {
		w.timeout = millis(max(time.Until(dl), 0))
		w.deadline = dl
	}
	ended := ctx.Err()
	if ended == nil && !w.deadline.IsZero() && !time.Now().Before(w.deadline) {
		ended = context.DeadlineExceeded
	}
	if ended != nil && !teardown {
		return nil, contextError(ended)
	}
	if ctx.Done() == nil {
		w.tok = m.closeTok
		return w, nil
	}
	tok := C.qm_cancel_new()
	if tok == nil {
		return nil, errNoMemory("qm_cancel_new")
	}
	m.tokMu.Lock()
	if m.closed.Load() || ended != nil {
		C.qm_cancel_fire(tok)
	}
	m.toks[tok] = struct{}{}
	m.tokMu.Unlock()
	fired := make(chan struct{})
	w.tok, w.fired = tok, fired
	w.stop = context.AfterFunc(ctx, func() {
		if ctx.Err() != context.DeadlineExceeded {
			C.qm_cancel_fire(tok)
		}
		close(fired)
	})
	return w, nil
}

// end releases what begin took. The token is freed only once nothing can fire it.
func (m *Machine) end(w *waiter) {
	if w.stop == nil {
		return
	}
	if !w.stop() {
		<-w.fired // the context ended: let the firing finish before freeing the token
	}
	m.tokMu.Lock()
	delete(m.toks, w.tok)
	m.tokMu.Unlock()
	C.qm_cancel_free(w.tok)
}

// contextError is the error of a call that did not start because its context had ended.
func contextError(err error) error {
	status := StatusInterrupted
	if err == context.DeadlineExceeded {
		status = StatusTimeout
	}
	return &Error{Status: status, Message: "qm: the context ended before the call", cause: []error{err}}
}

// finish adds to a blocking call's error why it ended early: the context's error, or
// ErrClosed when Close interrupted it. The library's status is kept as it is.
func (m *Machine) finish(ctx context.Context, w *waiter, err error) error {
	if err == nil {
		return nil
	}
	ctxErr := ctx.Err()
	if ctxErr == nil && !w.deadline.IsZero() && !time.Now().Before(w.deadline) {
		ctxErr = context.DeadlineExceeded // the deadline passed; ctx's timer has yet to fire
	}
	status := StatusOf(err)
	var le *LaunchError
	if status == StatusLaunch && asLaunch(err, &le) {
		status = StatusOf(le.Cause)
	}
	switch status {
	case StatusInterrupted, StatusAbnormalShutdown, StatusTimeout:
		if ctxErr != nil {
			return withCause(err, ctxErr)
		}
		if status != StatusTimeout && m.closed.Load() {
			return withCause(err, ErrClosed)
		}
	}
	return err
}

func asLaunch(err error, le **LaunchError) bool {
	e, ok := err.(*LaunchError)
	if ok {
		*le = e
	}
	return ok
}
