package qm

// #include <stdbool.h>
// #include <stdint.h>
// #include <qm.h>
// bool qmGoSetLogCallback(uintptr_t handle);
import "C"

import (
	"context"
	"log/slog"
	"math"
	"runtime/cgo"
	"sync"
	"time"
)

// The slog adapter: qm_set_log_callback with a C trampoline (log.c) that passes a cgo.Handle
// of the *slog.Logger back to the exported qmGoLog.

var (
	logMu     sync.Mutex
	logHandle cgo.Handle // the current logger's handle, or 0
)

// SetLogger sends the library's log records to l instead of stderr, for the whole process;
// nil restores stderr (the default). Only records that pass the library's level (SetLogLevel,
// the QM_LOG environment variable; warnings only by default) reach l, and then only those l
// is enabled for: call SetLogLevel(LogDebug) to see every QMP message. Records arrive as
// slog.LevelWarn or slog.LevelDebug, at the time the library made them, with an attribute
// "target" naming the part of the library that logged (e.g. "qm::qmp").
//
// The handler runs on the goroutine (or thread) that made the record, possibly on several at
// once; it must not call methods of the Machine that logged (they may deadlock). When
// SetLogger returns, the previous logger is no longer called. It must not be called from
// inside a handler (waiting for the handlers in progress would wait for itself): there it
// changes nothing and returns an error matching ErrState, or, while another goroutine is in
// SetLogger too, it deadlocks.
func SetLogger(l *slog.Logger) error {
	logMu.Lock()
	defer logMu.Unlock()
	var h cgo.Handle
	var set C.bool
	if l != nil {
		h = cgo.NewHandle(l)
		set = C.qmGoSetLogCallback(C.uintptr_t(h))
	} else {
		set = C.qm_set_log_callback(nil, nil)
	}
	if !set {
		if h != 0 {
			h.Delete()
		}
		return &Error{Status: StatusState, Message: "qm: the logger cannot be changed from inside a log handler"}
	}
	// The library no longer calls the old logger (qm_set_log_callback waited for calls in
	// progress): its handle can go.
	if logHandle != 0 {
		logHandle.Delete()
	}
	logHandle = h
	return nil
}

//export qmGoLog
func qmGoLog(handle C.uintptr_t, level C.int, target, message *C.char, timestamp C.double) {
	l, ok := cgo.Handle(handle).Value().(*slog.Logger)
	if !ok {
		return
	}
	lvl := slog.LevelDebug
	if level == C.QM_LOG_WARN {
		lvl = slog.LevelWarn
	}
	ctx := context.Background()
	if !l.Enabled(ctx, lvl) {
		return
	}
	sec, frac := math.Modf(float64(timestamp))
	r := slog.NewRecord(time.Unix(int64(sec), int64(frac*1e9)), lvl, goStr(message), 0)
	r.AddAttrs(slog.String("target", goStr(target)))
	_ = l.Handler().Handle(ctx, r)
}
