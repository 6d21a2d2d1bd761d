package qm_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

func TestEvents(t *testing.T) {
	ctx := ctxT(t)
	m := launched(t)
	if evs, err := m.PendingEvents(); err != nil || len(evs) != 0 {
		t.Fatalf("PendingEvents at start = %v, %v", evs, err)
	}

	// stop and cont queue STOP and RESUME, in order.
	for _, c := range []string{"stop", "cont"} {
		if _, err := m.Cmd(ctx, c, nil); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
	}
	ev, err := m.Event(ctx)
	if err != nil || ev.Name != "STOP" {
		t.Fatalf("Event = %+v, %v", ev, err)
	}
	if ts := ev.Timestamp.Time(); time.Since(ts) > time.Minute || time.Since(ts) < 0 {
		t.Fatalf("timestamp %v", ts)
	}
	var raw map[string]any
	if err := json.Unmarshal(ev.Raw, &raw); err != nil || raw["event"] != "STOP" {
		t.Fatalf("Raw = %s", ev.Raw)
	}
	if b, err := json.Marshal(ev); err != nil || string(b) != string(ev.Raw) {
		t.Fatalf("Marshal(Event) = %s, %v", b, err)
	}
	made := qm.Event{Name: "STOP", Timestamp: qm.Timestamp{Seconds: 1, Microseconds: 2}}
	if b, err := json.Marshal(made); err != nil || string(b) != `{"event":"STOP","timestamp":{"seconds":1,"microseconds":2}}` {
		t.Fatalf("Marshal(Event without Raw) = %s, %v", b, err)
	}
	evs, err := m.Events(ctx)
	if err != nil || len(evs) != 1 || evs[0].Name != "RESUME" {
		t.Fatalf("Events = %+v, %v", evs, err)
	}

	// EventWait takes the first match among several filters; others stay queued, in order.
	for _, c := range []string{"stop", "cont", "stop"} {
		if _, err := m.Cmd(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	ev, err = m.EventWait(ctx, qm.EventFilter{Name: "RESUME"}, qm.EventFilter{Name: "NO_SUCH_EVENT"})
	if err != nil || ev.Name != "RESUME" {
		t.Fatalf("EventWait RESUME = %+v, %v", ev, err)
	}
	evs, err = m.PendingEvents()
	if err != nil || len(evs) != 2 || evs[0].Name != "STOP" || evs[1].Name != "STOP" {
		t.Fatalf("after EventWait, queued = %+v, %v", evs, err)
	}
	if evs, err := m.PendingEvents(); err != nil || len(evs) != 0 {
		t.Fatalf("PendingEvents twice = %+v, %v", evs, err)
	}

	// ClearEvents drops everything: a cont then stop queue RESUME and STOP; once STOP is
	// taken (with a match filter) RESUME is still queued, and goes.
	if err := m.ClearEvents(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cont", "stop"} {
		if _, err := m.Cmd(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := m.EventWait(wctx, qm.EventFilter{Name: "STOP", Match: map[string]any{"event": "STOP"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.ClearEvents(); err != nil {
		t.Fatal(err)
	}
	if evs, err := m.PendingEvents(); err != nil || len(evs) != 0 {
		t.Fatalf("after ClearEvents = %+v, %v", evs, err)
	}
	if _, err := m.Cmd(ctx, "cont", nil); err != nil {
		t.Fatal(err)
	}

	// A match filter: the SHUTDOWN of "quit" has reason host-qmp-quit, not guest-shutdown.
	if _, err := m.Cmd(ctx, "quit", nil); err != nil && !errors.Is(err, qm.ErrDisconnected) {
		t.Fatalf("quit: %v", err)
	}
	ev, err = m.EventWait(ctx,
		qm.EventFilter{Name: "SHUTDOWN", Match: map[string]any{"data": map[string]any{"reason": "guest-shutdown"}}},
		qm.EventFilter{Name: "SHUTDOWN", Match: json.RawMessage(`{"data": {"reason": "host-qmp-quit", "guest": null}}`)},
	)
	if err != nil || ev.Name != "SHUTDOWN" {
		t.Fatalf("EventWait SHUTDOWN = %+v, %v", ev, err)
	}
	var data struct {
		Guest  bool
		Reason string
	}
	if err := json.Unmarshal(ev.Data, &data); err != nil || data.Guest || data.Reason != "host-qmp-quit" {
		t.Fatalf("SHUTDOWN data = %s", ev.Data)
	}
	if err := m.Wait(ctx); err != nil {
		t.Fatalf("Wait after quit: %v", err)
	}
	// Events received before the shutdown stay readable; no more come.
	if evs, err := m.PendingEvents(); err != nil {
		t.Fatalf("PendingEvents after shutdown = %v, %v", evs, err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer dcancel()
	_, err = m.EventWait(dctx, qm.EventFilter{Name: "NO_SUCH_EVENT"})
	if err == nil {
		t.Fatal("EventWait after shutdown: no error")
	}

	_, err = m.EventWait(ctx)
	mustErr(t, "EventWait without filters", err, qm.ErrInvalid)
	_, err = m.EventWait(ctx, qm.EventFilter{Name: "STOP", Match: make(chan int)})
	mustErr(t, "EventWait with a bad filter", err, qm.ErrInvalid)
	_, err = m.EventWait(ctx, qm.EventFilter{Name: "STOP"}, qm.EventFilter{Name: "X", Match: []int{1}})
	mustErr(t, "EventWait with a list as Match", err, qm.ErrInvalid)
	if msg := err.Error(); !strings.Contains(msg, "filters[1].Match") || strings.Contains(msg, "_json") {
		t.Errorf("EventWait with a list as Match: %q does not say it in Go's terms", msg)
	}
}

func TestEventWaitDeadline(t *testing.T) {
	m := launched(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := m.EventWait(ctx, qm.EventFilter{Name: "NO_SUCH_EVENT"})
	d := time.Since(start)
	mustErr(t, "EventWait past its deadline", err, qm.ErrTimeout, context.DeadlineExceeded)
	if d < 190*time.Millisecond || d > 5*time.Second {
		t.Fatalf("EventWait with a 200 ms deadline returned after %v", d)
	}
	// A context that already ended: the call does not start.
	_, err = m.Event(ctx)
	mustErr(t, "Event with an expired context", err, qm.ErrTimeout, context.DeadlineExceeded)
	_, err = m.Events(ctx)
	mustErr(t, "Events with an expired context", err, qm.ErrTimeout, context.DeadlineExceeded)
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	_, err = m.Cmd(cctx, "stop", nil)
	mustErr(t, "Cmd with a cancelled context", err, qm.ErrInterrupted, context.Canceled)
	if st, err := qm.Decode[struct{ Status string }](m.Cmd(context.Background(), "query-status", nil)); err != nil || st.Status != "running" {
		t.Fatalf("a cancelled stop ran: %+v %v", st, err)
	}
}

func TestEventMatch(t *testing.T) {
	// The examples of QEMUMachine.event_match's documentation.
	event := map[string]any{"a": map[string]any{"b": map[string]any{"c": 42}, "d": 3}}
	for _, tc := range []struct {
		filter any
		want   bool
	}{
		{nil, true},
		{map[string]any{}, true},
		{map[string]any{"a": nil}, true},
		{map[string]any{"a": map[string]any{"b": nil}}, true},
		{map[string]any{"a": map[string]any{"b": map[string]any{"c": 42}}}, true},
		{map[string]any{"a": map[string]any{"b": map[string]any{"c": 43}}}, false},
		{map[string]any{"a": map[string]any{"e": nil}}, false},
		{json.RawMessage(`{"a": {"d": 3}}`), true},
	} {
		got, err := qm.EventMatch(event, tc.filter)
		if err != nil || got != tc.want {
			t.Errorf("EventMatch(%v) = %v, %v; want %v", tc.filter, got, err, tc.want)
		}
	}
	ev := qm.Event{Raw: json.RawMessage(`{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}`)}
	if ok, err := qm.EventMatch(ev, map[string]any{"data": map[string]any{"guest": true}}); err != nil || !ok {
		t.Errorf("EventMatch(Event) = %v, %v", ok, err)
	}
	_, err := qm.EventMatch(nil, nil)
	mustErr(t, "EventMatch(nil)", err, qm.ErrInvalid)
	_, err = qm.EventMatch(json.RawMessage(`{not json`), nil)
	if err == nil {
		t.Error("EventMatch of bad JSON: no error")
	}
}

// A call blocked on the machine when it shuts down fails with ErrDisconnected, at once.
func TestBlockedAcrossShutdown(t *testing.T) {
	m := launched(t)
	done := make(chan error, 1)
	go func() {
		_, err := m.EventWait(context.Background(), qm.EventFilter{Name: "NO_SUCH_EVENT"})
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		mustErr(t, "EventWait across a shutdown", err, qm.ErrDisconnected)
	case <-time.After(cancelBound):
		t.Fatal("EventWait still blocked after the shutdown")
	}
}

// With a cap the oldest events go; the next reader is told once, then reads the newest.
func TestMaxQueuedEvents(t *testing.T) {
	ctx := ctxT(t)
	m := launched(t, qm.WithMaxQueuedEvents(3))
	if err := m.SetMaxQueuedEvents(-2); !errors.Is(err, qm.ErrInvalid) {
		t.Fatalf("SetMaxQueuedEvents(-2) = %v", err)
	}
	for i := 0; i < 4; i++ {
		for _, c := range []string{"stop", "cont"} {
			if _, err := m.Cmd(ctx, c, nil); err != nil {
				t.Fatalf("%s: %v", c, err)
			}
		}
	}
	if n := m.DroppedEvents(); n != 5 {
		t.Fatalf("DroppedEvents = %d, want 5", n)
	}
	_, err := m.PendingEvents()
	mustErr(t, "PendingEvents after drops", err, qm.ErrEventsDropped)
	evs, err := m.PendingEvents()
	if err != nil || len(evs) != 3 || evs[0].Name != "RESUME" || evs[1].Name != "STOP" ||
		evs[2].Name != "RESUME" {
		t.Fatalf("PendingEvents = %+v, %v", evs, err)
	}
}
