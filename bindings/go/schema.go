package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"unsafe"
)

// SchemaLevel says what a check before send does with what it finds (see SchemaPolicy).
type SchemaLevel int

// The levels, with the values of qm.h.
const (
	SchemaOff    SchemaLevel = C.QM_SCHEMA_OFF    // not looked at
	SchemaWarn   SchemaLevel = C.QM_SCHEMA_WARN   // logged as a warning; the command is sent
	SchemaStrict SchemaLevel = C.QM_SCHEMA_STRICT // refused (ErrRefused); nothing is sent
)

// SchemaPolicy is a machine's policy for checks before send, against the QMP schema of the
// QEMU it runs (loaded on the first checked call, once per QEMU binary per process). The zero
// value checks nothing, which is the default.
type SchemaPolicy struct {
	// Checks is for what QEMU would refuse: unknown commands, events and members, missing
	// members, wrong JSON types, values outside an enum.
	Checks SchemaLevel
	// Deprecated is for the use of what the schema marks deprecated (QEMU's
	// -compat deprecated-input=).
	Deprecated SchemaLevel
	// Unstable is for the use of what the schema marks unstable (x- commands and members).
	Unstable SchemaLevel
}

// StrictSchema refuses what QEMU would refuse, warns about deprecated use and accepts
// unstable use: a good policy for tests.
func StrictSchema() SchemaPolicy {
	return SchemaPolicy{Checks: SchemaStrict, Deprecated: SchemaWarn, Unstable: SchemaOff}
}

// WarnSchema logs what QEMU would refuse and deprecated use, and sends it all the same.
func WarnSchema() SchemaPolicy {
	return SchemaPolicy{Checks: SchemaWarn, Deprecated: SchemaWarn, Unstable: SchemaOff}
}

// SetSchemaPolicy sets what checks before send do on this machine, at once and for later
// launches. Under a policy that checks, Cmd, QMP and the event waits are checked first; a
// refused call fails with a *RefusedError (it matches ErrRefused) and sends nothing. A schema
// that cannot be loaded turns the checks off for that launch, with a logged warning.
func (m *Machine) SetSchemaPolicy(p SchemaPolicy) error {
	return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_set_schema_policy(h, C.qm_schema_level(p.Checks), C.qm_schema_level(p.Deprecated),
			C.qm_schema_level(p.Unstable), cerr)
	})
}

// SchemaPolicy returns the policy set with SetSchemaPolicy.
func (m *Machine) SchemaPolicy() (SchemaPolicy, error) {
	var c, d, u C.qm_schema_level
	err := m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_get_schema_policy(h, &c, &d, &u, cerr)
	})
	return SchemaPolicy{SchemaLevel(c), SchemaLevel(d), SchemaLevel(u)}, err
}

// Greeting is what QEMU's QMP greeting said at launch.
type Greeting struct {
	Version struct {
		Major int `json:"major"`
		Minor int `json:"minor"`
		Micro int `json:"micro"`
	} `json:"version"`
	Package      string   `json:"package"`      // e.g. "Debian 1:7.2+dfsg-7"
	Capabilities []string `json:"capabilities"` // e.g. ["oob"]
}

// Greeting returns what QEMU's greeting said at the last launch (no I/O); ErrState before a
// launch with QMP.
func (m *Machine) Greeting() (Greeting, error) {
	var g Greeting
	s, _, err := m.getString(func(h *C.qm_machine, out **C.char, cerr **C.qm_error) C.qm_status {
		return C.qm_greeting(h, out, cerr)
	})
	if err != nil {
		return g, err
	}
	err = json.Unmarshal([]byte(s), &g)
	return g, err
}

// Schema is the parsed QMP schema of a running QEMU (Machine.Schema). It is immutable and
// safe for concurrent use; it stays valid after the machine is closed. Close frees it (a
// finalizer does too).
type Schema struct {
	mu sync.RWMutex
	h  *C.qm_schema
}

// Command is a command as the schema describes it.
type Command struct {
	Name      string     `json:"name"`
	AllowOOB  bool       `json:"allow-oob"` // QEMU runs it out-of-band when asked
	Features  []string   `json:"features"`  // e.g. "deprecated", "unstable"
	Arguments []Argument `json:"arguments"` // in the schema's order
}

// Argument is one argument of a command.
type Argument struct {
	Name     string   `json:"name"`
	Optional bool     `json:"optional"`
	Type     string   `json:"type"`     // in words: "str", "enum (a, b)", "object", "array of int" ...
	Variants []string `json:"variants"` // for a union's discriminator: the cases it selects
	Features []string `json:"features"`
}

// Finding is one thing a schema check found (Schema.Check).
type Finding struct {
	Path    string `json:"path"`    // e.g. "arguments.file.filename"
	Rule    string `json:"rule"`    // e.g. "unknown-member"
	Message string `json:"message"` // with a did-you-mean or the allowed values when there are
}

// Schema returns the running QEMU's QMP schema: from the per-binary cache, or loaded with
// query-qmp-schema within ctx's deadline (the QMP timer when it has none).
func (m *Machine) Schema(ctx context.Context) (*Schema, error) {
	var h *C.qm_schema
	err := m.call(ctx, C.QM_WAIT_DEFAULT, false, func(mh *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return C.qm_schema_get(mh, w.timeout, w.tok, &h, cerr)
	})
	if err != nil {
		return nil, err
	}
	s := &Schema{h: h}
	runtime.SetFinalizer(s, (*Schema).Close)
	return s, nil
}

// Close frees the schema; later calls fail with ErrClosed (HasCommand and HasEvent return
// false). Safe to call twice.
func (s *Schema) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h != nil {
		C.qm_schema_free(s.h)
		s.h = nil
		runtime.SetFinalizer(s, nil)
	}
}

// with runs f with the live handle under the read lock.
func (s *Schema) with(f func(h *C.qm_schema) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.h == nil {
		return closedError()
	}
	err := f(s.h)
	runtime.KeepAlive(s)
	return err
}

// has runs qm_schema_has_command or qm_schema_has_event.
func (s *Schema) has(name string, event bool) bool {
	cname, err := cstring("name", name)
	if err != nil {
		return false
	}
	defer C.free(unsafe.Pointer(cname))
	found := false
	_ = s.with(func(h *C.qm_schema) error {
		if event {
			found = bool(C.qm_schema_has_event(h, cname))
		} else {
			found = bool(C.qm_schema_has_command(h, cname))
		}
		return nil
	})
	return found
}

// HasCommand reports whether QEMU has a command called name.
func (s *Schema) HasCommand(name string) bool { return s.has(name, false) }

// HasEvent reports whether QEMU has an event called name.
func (s *Schema) HasEvent(name string) bool { return s.has(name, true) }

// Query answers a feature question in libvirt's query-path syntax, e.g.
// "blockdev-add/arg-type/+file/aio/^io_uring" (the grammar is in qm.h at qm_schema_query and
// in the README). A malformed path is ErrInvalid naming the component.
func (s *Schema) Query(path string) (bool, error) {
	cpath, err := cstring("path", path)
	if err != nil {
		return false, err
	}
	defer C.free(unsafe.Pointer(cpath))
	var found C.bool
	err = s.with(func(h *C.qm_schema) error {
		var cerr *C.qm_error
		return takeError(C.qm_schema_query(h, cpath, &found, &cerr), cerr)
	})
	return bool(found), err
}

// Command describes the command name, or returns nil when QEMU has no such command.
func (s *Schema) Command(name string) (*Command, error) {
	cname, err := cstring("name", name)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cname))
	var out *C.char
	err = s.with(func(h *C.qm_schema) error {
		var cerr *C.qm_error
		return takeError(C.qm_schema_command(h, cname, &out, &cerr), cerr)
	})
	if err != nil {
		return nil, err
	}
	var c *Command
	err = json.Unmarshal(takeBytes(out), &c)
	return c, err
}

// Check checks cmd with args (marshalled to JSON as Cmd does) against the schema without
// sending anything; no findings means the schema finds nothing wrong.
func (s *Schema) Check(cmd string, args any) ([]Finding, error) {
	ccmd, err := cstring("cmd", cmd)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(ccmd))
	cargs, err := jsonArg("args", args)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cargs))
	var out *C.char
	err = s.with(func(h *C.qm_schema) error {
		var cerr *C.qm_error
		return takeError(C.qm_schema_check(h, ccmd, cargs, &out, &cerr), cerr)
	})
	if err != nil {
		return nil, err
	}
	var findings []Finding
	err = json.Unmarshal(takeBytes(out), &findings)
	return findings, err
}

// RefusedError is a call that a check before send refused under a strict SchemaPolicy:
// nothing was sent. It matches ErrRefused with errors.Is.
type RefusedError struct {
	Path    string // where the first problem is, e.g. "arguments.node_name", "event"
	Rule    string // the rule it breaks, e.g. "unknown-member"
	Message string // the library's message (with a did-you-mean when there is one)
}

// Error returns the library's message.
func (e *RefusedError) Error() string { return "qm: " + e.Message }

// Unwrap returns ErrRefused.
func (e *RefusedError) Unwrap() error { return ErrRefused }

// takeRefused reads a QM_ERR_REFUSED error object (freed by the caller).
func takeRefused(cerr *C.qm_error, msg string) error {
	return &RefusedError{
		Path:    goStr(C.qm_error_schema_path(cerr)),
		Rule:    goStr(C.qm_error_schema_rule(cerr)),
		Message: msg,
	}
}
