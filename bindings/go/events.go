package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
	"unsafe"
)

// Event is a QMP event, as QEMU sent it: {"event": "STOP", "data": {...}, "timestamp":
// {"seconds": ..., "microseconds": ...}}.
type Event struct {
	Name      string          `json:"event"`          // e.g. "SHUTDOWN"
	Data      json.RawMessage `json:"data,omitempty"` // the event's data (nil when it has none)
	Timestamp Timestamp       `json:"timestamp"`      // when QEMU emitted it
	Raw       json.RawMessage `json:"-"`              // the whole event, as received
}

// MarshalJSON returns Raw when set (the event as received), and the fields otherwise.
func (e Event) MarshalJSON() ([]byte, error) {
	if e.Raw != nil {
		return e.Raw, nil
	}
	type fields Event
	return json.Marshal(fields(e))
}

// Timestamp is an event's time stamp.
type Timestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

// Time returns the time stamp as a time.Time.
func (t Timestamp) Time() time.Time {
	return time.Unix(t.Seconds, t.Microseconds*int64(time.Microsecond))
}

// EventFilter selects events for EventWait: those called Name that match Match, by the rule
// of QEMU's QEMUMachine.event_match (see EventMatch). Match is any value that marshals to a
// JSON object, or nil to match every event called Name.
type EventFilter struct {
	Name  string `json:"name"`
	Match any    `json:"match,omitempty"`
}

func parseEvent(raw []byte) (Event, error) {
	if e, ok := quickEvent(raw); ok {
		return e, nil // the library's own form (event_decode.go)
	}
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return Event{}, &Error{Status: StatusProtocol, Message: "qm: decoding an event: " + err.Error()}
	}
	e.Raw = raw
	return e, nil
}

func parseEvents(raw []byte) ([]Event, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, &Error{Status: StatusProtocol, Message: "qm: decoding events: " + err.Error()}
	}
	events := make([]Event, 0, len(list))
	for _, r := range list {
		e, err := parseEvent(r)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, nil
}

// waitForJSON runs a blocking event call that yields one JSON text (NULL: nothing yet).
func (m *Machine) waitForJSON(ctx context.Context, f func(h *C.qm_machine, timeout C.int64_t, tok *C.qm_cancel, out **C.char, cerr **C.qm_error) C.qm_status) ([]byte, error) {
	var out *C.char
	err := m.call(ctx, C.QM_WAIT_FOREVER, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return f(h, w.timeout, w.tok, &out, cerr)
	})
	if err != nil {
		return nil, err
	}
	return takeBytes(out), nil
}

// Event takes the oldest queued QMP event, waiting for one until ctx ends (ctx without
// deadline: as long as it takes). Events received before a shutdown stay readable after it;
// before the first launch it fails with ErrState. When ctx's deadline passes the error
// matches ErrTimeout and context.DeadlineExceeded.
func (m *Machine) Event(ctx context.Context) (Event, error) {
	raw, err := m.waitForJSON(ctx, func(h *C.qm_machine, timeout C.int64_t, tok *C.qm_cancel, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_event_get(h, timeout, tok, out, cerr)
	})
	if err != nil {
		return Event{}, err
	}
	return parseEvent(raw)
}

// Events takes every queued event, oldest first, waiting (as Event does) until there is at
// least one. PendingEvents does not wait.
func (m *Machine) Events(ctx context.Context) ([]Event, error) {
	raw, err := m.waitForJSON(ctx, func(h *C.qm_machine, timeout C.int64_t, tok *C.qm_cancel, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_events_get(h, timeout, tok, out, cerr)
	})
	if err != nil {
		return nil, err
	}
	return parseEvents(raw)
}

// PendingEvents takes every queued event, oldest first, without waiting: the result may be
// empty.
func (m *Machine) PendingEvents() ([]Event, error) {
	var raw []byte
	err := m.use(func(h *C.qm_machine) error {
		var out *C.char
		var cerr *C.qm_error
		if err := takeError(C.qm_events_get(h, 0, nil, &out, &cerr), cerr); err != nil {
			return err
		}
		raw = takeBytes(out)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return parseEvents(raw)
}

// ClearEvents drops every queued event. It never blocks and does nothing before the first
// launch.
func (m *Machine) ClearEvents() error {
	return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_events_clear(h, cerr)
	})
}

// SetMaxQueuedEvents sets the cap of WithMaxQueuedEvents (-1: none) at once, for this run and
// later launches.
func (m *Machine) SetMaxQueuedEvents(n int64) error {
	return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_set_max_queued_events(h, C.int64_t(n), cerr)
	})
}

// DroppedEvents returns how many events the cap of WithMaxQueuedEvents dropped since the last
// launch.
func (m *Machine) DroppedEvents() uint64 {
	var n uint64
	m.use(func(h *C.qm_machine) error {
		n = uint64(C.qm_dropped_events(h))
		return nil
	})
	return n
}

// EventWait waits for the first event that matches any of the filters (at least one), takes
// it out of the queue and returns it. Queued events are searched first; events that do not
// match stay queued, in order. It waits until ctx ends (ctx without deadline: as long as it
// takes); when ctx's deadline passes the error matches ErrTimeout and
// context.DeadlineExceeded, when ctx is cancelled ErrInterrupted and context.Canceled.
//
//	ev, err := m.EventWait(ctx, qm.EventFilter{Name: "SHUTDOWN", Match: map[string]any{
//		"data": map[string]any{"guest": true}}})
func (m *Machine) EventWait(ctx context.Context, filters ...EventFilter) (Event, error) {
	if len(filters) == 0 {
		return Event{}, invalid("EventWait needs at least one filter")
	}
	if len(filters) == 1 {
		return m.eventWaitOne(ctx, filters[0])
	}
	for i, f := range filters {
		if f.Match == nil {
			continue
		}
		cm, err := jsonObjectArg(fmt.Sprintf("filters[%d].Match", i), f.Match)
		if err != nil {
			return Event{}, err
		}
		C.free(unsafe.Pointer(cm))
	}
	cf, err := jsonArg("filters", filters)
	if err != nil {
		return Event{}, err
	}
	defer C.free(unsafe.Pointer(cf))
	raw, err := m.waitForJSON(ctx, func(h *C.qm_machine, timeout C.int64_t, tok *C.qm_cancel, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_events_wait(h, cf, timeout, tok, out, cerr)
	})
	if err != nil {
		return Event{}, err
	}
	return parseEvent(raw)
}

// eventWaitOne is EventWait for one filter, the usual case: qm_event_wait takes the name and
// the match as they are, so there is no list of filters to marshal here and parse in the
// library, on the path of every event (issue #20).
func (m *Machine) eventWaitOne(ctx context.Context, f EventFilter) (Event, error) {
	cname, err := cstring("filters[0].Name", f.Name)
	if err != nil {
		return Event{}, err
	}
	defer C.free(unsafe.Pointer(cname))
	cmatch, err := jsonObjectArg("filters[0].Match", f.Match)
	if err != nil {
		return Event{}, err
	}
	defer C.free(unsafe.Pointer(cmatch))
	raw, err := m.waitForJSON(ctx, func(h *C.qm_machine, timeout C.int64_t, tok *C.qm_cancel, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_event_wait(h, cname, cmatch, timeout, tok, out, cerr)
	})
	if err != nil {
		return Event{}, err
	}
	return parseEvent(raw)
}

// EventMatch tells whether event matches filter by the rule of QEMU's
// QEMUMachine.event_match, which the C library implements: filter is a sub-dict of event:
// every key of filter must be in event, recursively, with an equal value wherever filter's
// value is not null (null matches anything). A nil filter matches everything. Both are any
// values that marshal to JSON (an Event marshals to the event as received).
func EventMatch(event, filter any) (bool, error) {
	if event == nil {
		return false, invalid("EventMatch: event is nil")
	}
	ce, err := jsonArg("event", event)
	if err != nil {
		return false, err
	}
	defer C.free(unsafe.Pointer(ce))
	cm, err := jsonArg("filter", filter)
	if err != nil {
		return false, err
	}
	defer C.free(unsafe.Pointer(cm))
	var matches C.bool
	var cerr *C.qm_error
	if err := takeError(C.qm_event_match(ce, cm, &matches, &cerr), cerr); err != nil {
		return false, err
	}
	return bool(matches), nil
}
