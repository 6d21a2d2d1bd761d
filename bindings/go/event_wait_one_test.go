package qm_test

import (
	"context"
	"strings"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// EventWait with one filter goes to qm_event_wait (name and match as they are) rather than
// qm_events_wait (a list of filters): the same rule must hold there, the match included.
func TestEventWaitOneFilter(t *testing.T) {
	ctx := ctxT(t)
	m := launched(t)
	if _, err := m.Cmd(ctx, "stop", nil); err != nil {
		t.Fatal(err)
	}

	// A match that the queued STOP does not meet: nothing is taken, the wait times out.
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err := m.EventWait(dctx, qm.EventFilter{Name: "STOP", Match: map[string]any{"data": map[string]any{"no-such-key": 1}}})
	mustErr(t, "EventWait with a match STOP does not meet", err, qm.ErrTimeout, context.DeadlineExceeded)

	// A match it meets takes it, with its fields decoded.
	ev, err := m.EventWait(ctx, qm.EventFilter{Name: "STOP", Match: map[string]any{"event": "STOP"}})
	if err != nil || ev.Name != "STOP" || ev.Timestamp.Seconds == 0 || len(ev.Raw) == 0 {
		t.Fatalf("EventWait STOP = %+v, %v", ev, err)
	}
	if evs, err := m.PendingEvents(); err != nil || len(evs) != 0 {
		t.Fatalf("after taking STOP: PendingEvents = %+v, %v", evs, err)
	}

	// Bad arguments are refused in Go's terms, as with several filters.
	_, err = m.EventWait(ctx, qm.EventFilter{Name: "STOP", Match: []int{1}})
	mustErr(t, "EventWait with a list as Match", err, qm.ErrInvalid)
	if msg := err.Error(); !strings.Contains(msg, "filters[0].Match") {
		t.Errorf("EventWait with a list as Match: %q does not name filters[0].Match", msg)
	}
	_, err = m.EventWait(ctx, qm.EventFilter{Name: "ST\x00OP"})
	mustErr(t, "EventWait with a NUL in the name", err, qm.ErrInvalid)
}
