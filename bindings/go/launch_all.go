package qm

// #include <qm.h>
import "C"

import (
	"context"
	"runtime"
	"time"
)

// LaunchAll launches the machines at once from the calling goroutine and returns one error per
// machine, in the same order (nil for a machine that launched): the cheaper way to start many
// machines, which needs no goroutine (and no OS thread blocked in C) per machine.
//
// Every QEMU is started first, then each is connected and negotiated as Launch does, in the
// order they become ready, all bounded by ctx's deadline, or when ctx has none by the largest
// QMP timer of the machines (WithQMPTimer; no limit when one of them has none). Cancelling ctx
// interrupts the machines not yet connected, as it would interrupt Launch; so does closing one
// of the machines (Close waits for the batch to return).
//
// Each error is the one Launch would return for that machine: ErrState when it is launched
// already, a *LaunchError (cleaned up, the machine can be launched again) when its launch
// failed; one machine's failure leaves the others alone. A machine given twice is launched
// once, for its first place; the others get ErrInvalid. A closed machine gets ErrClosed. A ctx
// that has ended already fails every machine before anything starts.
func LaunchAll(ctx context.Context, ms ...*Machine) []error {
	errs := make([]error, len(ms))
	if len(ms) == 0 {
		return errs
	}
	timeout := C.int64_t(C.QM_WAIT_DEFAULT)
	var deadline time.Time
	if dl, ok := ctx.Deadline(); ok {
		timeout = millis(max(time.Until(dl), 0))
		deadline = dl
	}
	ended := ctx.Err()
	if ended == nil && !deadline.IsZero() && !time.Now().Before(deadline) {
		ended = context.DeadlineExceeded
	}
	if ended != nil {
		for i := range errs {
			errs[i] = contextError(ended)
		}
		return errs
	}

	// Hold each distinct machine's read lock (once: read locks must not be taken twice), so
	// that Close cannot free a handle while the library uses it.
	held := make(map[*Machine]bool, len(ms))
	defer func() {
		for m := range held {
			m.mu.RUnlock()
		}
	}()
	handles := make([]*C.qm_machine, 0, len(ms))
	place := make([]int, 0, len(ms)) // handles[k] is ms[place[k]]
	for i, m := range ms {
		if m == nil {
			errs[i] = &Error{Status: StatusInvalid, Message: "qm: LaunchAll: a nil *Machine"}
			continue
		}
		if !held[m] {
			m.mu.RLock()
			held[m] = true
		}
		if m.h == nil {
			errs[i] = closedError()
			continue
		}
		// A repeated machine goes to the library too, which refuses all but its first place.
		handles = append(handles, m.h)
		place = append(place, i)
	}
	if len(handles) == 0 {
		return errs
	}

	// One token for the batch: fired when ctx is cancelled (its deadline is the timeout), and
	// by Close of any of the machines, which fires every token registered with it.
	tok := C.qm_cancel_new()
	if tok == nil {
		for _, i := range place {
			errs[i] = errNoMemory("qm_cancel_new")
		}
		return errs
	}
	for m := range held {
		m.tokMu.Lock()
		if m.closed.Load() {
			C.qm_cancel_fire(tok)
		}
		m.toks[tok] = struct{}{}
		m.tokMu.Unlock()
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		if ctx.Err() != context.DeadlineExceeded {
			C.qm_cancel_fire(tok)
		}
		close(fired)
	})

	cerrs := make([]*C.qm_error, len(handles))
	C.qm_launch_all(&handles[0], C.size_t(len(handles)), timeout, tok, &cerrs[0])

	if !stop() {
		<-fired // the context ended: let the firing finish before freeing the token
	}
	for m := range held {
		m.tokMu.Lock()
		delete(m.toks, tok)
		m.tokMu.Unlock()
	}
	C.qm_cancel_free(tok)

	w := &waiter{deadline: deadline}
	for k, i := range place {
		st := C.qm_status(C.QM_OK)
		if cerrs[k] != nil {
			st = C.qm_error_status(cerrs[k])
		}
		errs[i] = ms[i].finish(ctx, w, takeError(st, cerrs[k]))
	}
	runtime.KeepAlive(ms)
	return errs
}
