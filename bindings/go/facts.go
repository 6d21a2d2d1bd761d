package qm

// #include <qm.h>
import "C"

import "time"

// This file holds the facts the C library decides once and the Go package must not keep a
// copy of (or, where Go keeps one for its own idioms, checks against in its tests).

// DefaultTimeout is the C library's default bound (qm_default_timeout_ms, 30 s): what a call
// whose context has no deadline waits at most for Shutdown, Wait and the agent calls, and
// the QMP timer's initial value.
var DefaultTimeout = time.Duration(C.qm_default_timeout_ms()) * time.Millisecond

// coreStatusName is the C library's name of a status (qm_status_str), e.g. "QM_ERR_TIMEOUT";
// "QM_ERR_UNKNOWN" for a value it does not know. The tests check the Status table against it.
func coreStatusName(s Status) string {
	return C.GoString(C.qm_status_str(C.int(s)))
}

// coreMillis converts seconds to milliseconds by the C library's one rule
// (qm_timeout_ms_from_seconds); the tests check that millis, which converts a
// time.Duration exactly, agrees with it.
func coreMillis(seconds float64) (int64, error) {
	var ms C.int64_t
	var cerr *C.qm_error
	if err := takeError(C.qm_timeout_ms_from_seconds(C.double(seconds), &ms, &cerr), cerr); err != nil {
		return 0, err
	}
	return int64(ms), nil
}
