package qm

// #include <stdlib.h>
// #include <string.h>
// #include <qm.h>
import "C"

import (
	"encoding/json"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// This file is the cgo plumbing: Go values to C and back, and the library's error objects to
// Go errors. Nothing here knows about machines.

// cstring copies s to C memory (the caller frees it with C.free). Go strings may hold NUL
// bytes, which C strings cannot: they are rejected.
func cstring(name, s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, invalid("%s contains a NUL byte", name)
	}
	return C.CString(s), nil
}

// cstrings copies ss to a C array of C strings; free releases everything.
func cstrings(name string, ss []string) (arr **C.char, free func(), err error) {
	if len(ss) == 0 {
		return nil, func() {}, nil
	}
	for i, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return nil, nil, invalid("%s[%d] contains a NUL byte", name, i)
		}
	}
	p := C.malloc(C.size_t(len(ss)) * C.size_t(unsafe.Sizeof((*C.char)(nil))))
	if p == nil {
		return nil, nil, errNoMemory("malloc")
	}
	elems := unsafe.Slice((**C.char)(p), len(ss))
	for i, s := range ss {
		elems[i] = C.CString(s)
	}
	return (**C.char)(p), func() {
		for _, e := range elems {
			C.free(unsafe.Pointer(e))
		}
		C.free(p)
	}, nil
}

// jsonArg marshals a command's arguments to a C string: NULL for nil.
func jsonArg(name string, v any) (*C.char, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		e := invalid("%s cannot be marshalled to JSON", name)
		e.(*Error).cause = []error{err}
		return nil, e
	}
	return cstring(name, string(b))
}

// jsonObjectArg is jsonArg for a value that must marshal to a JSON object (a map or a struct)
// or to null: command arguments. It is checked here so that the error names the Go
// argument (name), not the C parameter the text would reach.
func jsonObjectArg(name string, v any) (*C.char, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		e := invalid("%s cannot be marshalled to JSON", name)
		e.(*Error).cause = []error{err}
		return nil, e
	}
	if kind := jsonKind(b); kind != "object" && kind != "null" {
		return nil, invalid("%s must marshal to a JSON object (a map or a struct) or be nil, not %s (%T)", name, kind, v)
	}
	return cstring(name, string(b))
}

// jsonKind names the kind of a valid JSON text (as json.Marshal writes it) for messages.
func jsonKind(b []byte) string {
	switch t := strings.TrimLeft(string(b), " \t\r\n"); {
	case strings.HasPrefix(t, "{"):
		return "object"
	case strings.HasPrefix(t, "["):
		return "an array"
	case strings.HasPrefix(t, "\""):
		return "a string"
	case t == "null":
		return "null"
	case t == "true" || t == "false":
		return "a boolean"
	default:
		return "a number"
	}
}

// takeBytes copies a string the library returned and frees it (nil for NULL).
func takeBytes(s *C.char) []byte {
	if s == nil {
		return nil
	}
	defer C.qm_string_free(s)
	return C.GoBytes(unsafe.Pointer(s), C.int(C.strlen(s)))
}

// takeString copies a string the library returned and frees it ("" for NULL).
func takeString(s *C.char) string {
	if s == nil {
		return ""
	}
	defer C.qm_string_free(s)
	return C.GoString(s)
}

// goStr copies a borrowed C string ("" for NULL).
func goStr(s *C.char) string {
	if s == nil {
		return ""
	}
	return C.GoString(s)
}

// takeError turns a failed call's status and error object into a Go error, reading
// everything from the object (never from thread-local state), and frees the object. A nil
// object (the library could not even allocate one) gives a bare *Error.
func takeError(st C.qm_status, cerr *C.qm_error) error {
	if st == C.QM_OK {
		if cerr != nil {
			C.qm_error_free(cerr) // only if the library misbehaved
		}
		return nil
	}
	defer C.qm_error_free(cerr)
	status := Status(st)
	if cerr == nil {
		return &Error{Status: status}
	}
	msg := withoutCName(goStr(C.qm_error_message(cerr)))
	var errno syscall.Errno
	var code C.int
	if C.qm_error_os_code(cerr, &code) {
		errno = syscall.Errno(code)
	}
	switch status {
	case StatusRefused:
		return takeRefused(cerr, msg)
	case StatusQMP:
		return &QMPError{
			Class: goStr(C.qm_error_qmp_class(cerr)),
			Desc:  goStr(C.qm_error_qmp_desc(cerr)),
		}
	case StatusLaunch:
		le := &LaunchError{
			Command: goStr(C.qm_error_command(cerr)),
			Output:  goStr(C.qm_error_output(cerr)),
			Message: msg,
		}
		var exit C.int
		if C.qm_error_exit_code(cerr, &exit) {
			le.ExitCode, le.Exited = int(exit), true
		}
		if cause := takeCause(cerr, errno); cause != nil {
			le.Cause = cause
		}
		return le
	}
	e := &Error{Status: status, Message: msg, Errno: errno, Cause: takeCause(cerr, errno)}
	e.ConsoleText = goStr(C.qm_error_console_text(cerr))
	var index C.size_t
	if C.qm_error_console_pattern(cerr, &index) {
		e.FailurePattern = int(index)
	}
	return e
}

// takeCause reads what caused an error (a launch failure, an abnormal shutdown), or nil.
func takeCause(cerr *C.qm_error, errno syscall.Errno) *Error {
	status := Status(C.qm_error_cause(cerr))
	if status == StatusOK {
		return nil
	}
	return &Error{Status: status, Message: withoutCName(goStr(C.qm_error_cause_message(cerr))), Errno: errno}
}

// withoutCName drops the C function name the library puts before the message of an invalid
// argument ("qm_set_log_level: invalid argument: ..."): Go callers never called it.
func withoutCName(msg string) string {
	name, rest, ok := strings.Cut(msg, ": ")
	if !ok || !strings.HasPrefix(name, "qm_") || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		return msg
	}
	return rest
}

// millis converts a duration to the C library's milliseconds, rounding up; a negative
// duration is QM_WAIT_FOREVER.
func millis(d time.Duration) C.int64_t {
	if d < 0 {
		return C.QM_WAIT_FOREVER
	}
	return C.int64_t((d + time.Millisecond - 1) / time.Millisecond)
}

// errNoMemory is the error of a C allocation (what) that failed.
func errNoMemory(what string) error {
	return &Error{Status: StatusIO, Message: "qm: out of memory (" + what + ")"}
}
