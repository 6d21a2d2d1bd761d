package qm

// #include <stdint.h>
// #include <qm.h>
// void qmGoSetLogCallback(uintptr_t handle);
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
// SetLogger returns, the previous logger is no longer called; SetLogger must not be called
// from inside a handler.
func SetLogger(l *slog.Logger) {
	logMu.Lock()
	defer logMu.Unlock()
	old := logHandle
	logHandle = 0
	if l != nil {
		logHandle = cgo.NewHandle(l)
		C.qmGoSetLogCallback(C.uintptr_t(logHandle))
	} else {
		C.qm_set_log_callback(nil, nil)
	}
	// The library no longer calls the old logger (qm_set_log_callback waits for calls in
	// progress): its handle can go.
	if old != 0 {
		old.Delete()
	}
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
