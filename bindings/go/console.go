package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"context"
	"time"
	"unsafe"
)

// This file wraps the library's console interaction (qm_console_*): the rules (one wait at a
// time, what a wait consumes, the memory cap, the errors) are the library's; here they only
// take Go's shapes.

// Pattern is one thing a console wait looks for: a literal string, or with Regex a regular
// expression in the syntax of Rust's regex crate (close to Go's regexp/RE2; linear time).
type Pattern struct {
	Text  string
	Regex bool
}

// Literal is a pattern matched byte for byte.
func Literal(text string) Pattern { return Pattern{Text: text} }

// Regexp is a regular-expression pattern (Rust regex syntax; (?m) for multi-line ^ and $).
func Regexp(expr string) Pattern { return Pattern{Text: expr, Regex: true} }

// Patterns is what a console wait looks for: at least one success pattern; a failure pattern
// ends the wait with an error matching ErrConsoleFailure.
type Patterns struct {
	Success []Pattern
	Failure []Pattern
}

// Expect is a Patterns with one literal success pattern.
func Expect(text string) Patterns { return Patterns{Success: []Pattern{Literal(text)}} }

// ConsoleMatch is what a console wait found.
type ConsoleMatch struct {
	Index   int    // which success pattern matched (its index in Patterns.Success)
	Text    []byte // the output consumed: everything unread before the match, and the match
	Start   int    // where the match starts in Text (it ends at the end of Text)
	Dropped uint64 // unread bytes dropped (over the cap) since the previous wait that returned text
}

// Matched returns the matched bytes.
func (m *ConsoleMatch) Matched() []byte { return m.Text[m.Start:] }

// ConsoleStats are a console's counters.
type ConsoleStats struct {
	Received   uint64 // bytes received from the guest since launch
	Kept       uint64 // bytes kept in memory (the transcript), at most Cap
	Unread     uint64 // bytes no wait has consumed yet
	Dropped    uint64 // unread bytes dropped over the cap (the console log file has them)
	RawDropped uint64 // bytes the raw copy (Console) never got because nobody read it in time
	Cap        uint64 // the cap of the console's memory in bytes
	Closed     bool   // the console reached end of file
}

// WithConsoleBuffer caps the console's memory in bytes: the transcript and the output no wait
// consumed yet (default 1 MiB, at least 4 KiB; 0 is the default). Output over the cap that no wait consumed is
// dropped and reported (ConsoleMatch.Dropped, ConsoleStats.Dropped); the console log file keeps
// everything.
func WithConsoleBuffer(bytes int) Option {
	return withSet(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_set_console_buffer(h, C.size_t(max(bytes, 0)), cerr)
	})
}

// cPatterns builds the library's qm_patterns for p; the caller frees it with qm_patterns_free.
func cPatterns(p Patterns) (*C.qm_patterns, error) {
	cp := C.qm_patterns_new()
	if cp == nil {
		return nil, errNoMemory("qm_patterns_new")
	}
	add := func(list []Pattern, failure bool) error {
		for _, pat := range list {
			cs, err := cstring("pattern", pat.Text)
			if err != nil {
				return err
			}
			kind := C.qm_pattern_kind(C.QM_PATTERN_LITERAL)
			if pat.Regex {
				kind = C.QM_PATTERN_REGEX
			}
			var cerr *C.qm_error
			err = takeError(C.qm_patterns_add(cp, cs, kind, C.bool(failure), &cerr), cerr)
			C.free(unsafe.Pointer(cs))
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := add(p.Success, false); err != nil {
		C.qm_patterns_free(cp)
		return nil, err
	}
	if err := add(p.Failure, true); err != nil {
		C.qm_patterns_free(cp)
		return nil, err
	}
	return cp, nil
}

// takeMatch copies a match the library returned and frees it.
func takeMatch(cm *C.qm_console_match) *ConsoleMatch {
	defer C.qm_console_match_free(cm)
	var n C.size_t
	text := C.qm_console_match_text(cm, &n)
	return &ConsoleMatch{
		Index:   int(C.qm_console_match_index(cm)),
		Text:    C.GoBytes(unsafe.Pointer(text), C.int(n)),
		Start:   int(C.qm_console_match_start(cm)),
		Dropped: uint64(C.qm_console_match_dropped(cm)),
	}
}

// consoleWait runs one blocking console call that yields a match. The call has no default:
// a context without deadline waits until the pattern, the end of the console, or cancellation.
func (m *Machine) consoleWait(ctx context.Context, p Patterns, f func(h *C.qm_machine, cp *C.qm_patterns, w *waiter, out **C.qm_console_match, cerr **C.qm_error) C.qm_status) (*ConsoleMatch, error) {
	cp, err := cPatterns(p)
	if err != nil {
		return nil, err
	}
	defer C.qm_patterns_free(cp)
	var out *C.qm_console_match
	err = m.call(ctx, C.QM_WAIT_FOREVER, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return f(h, cp, w, &out, cerr)
	})
	if err != nil {
		return nil, err
	}
	return takeMatch(out), nil
}

// ConsoleWait waits until one of p's success patterns shows on the console and returns what
// it found; the text up to and including the match is consumed, what follows stays for the next
// wait. The earliest match wins (a failure pattern on a tie); a pattern split across reads
// still matches.
//
// One wait at a time per console: a wait started while another runs fails with ErrState. The
// errors carry the console text in (*Error).ConsoleText: ErrConsoleFailure (a failure pattern
// matched; FailurePattern says which), ErrConsoleClosed at once when the console reaches end of
// file (QEMU exited; also every wait after it), ErrTimeout and context.DeadlineExceeded when
// ctx's deadline passes (the message names the patterns and the time waited; the text stays
// unread), ErrInterrupted and context.Canceled when ctx is cancelled.
func (m *Machine) ConsoleWait(ctx context.Context, p Patterns) (*ConsoleMatch, error) {
	return m.consoleWait(ctx, p, func(h *C.qm_machine, cp *C.qm_patterns, w *waiter, out **C.qm_console_match, cerr **C.qm_error) C.qm_status {
		return C.qm_console_wait(h, cp, w.timeout, w.tok, out, cerr)
	})
}

// ConsoleExec sends line followed by eol (the guest's line ending, e.g. "\n"), then waits for
// p as ConsoleWait does, within ctx. Output left unread before the command is searched too
// (ConsoleSkipUnread first ignores it); the text includes the guest's echo of the command.
func (m *Machine) ConsoleExec(ctx context.Context, line, eol string, p Patterns) (*ConsoleMatch, error) {
	cl, err := cstring("line", line)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cl))
	ce, err := cstring("eol", eol)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(ce))
	return m.consoleWait(ctx, p, func(h *C.qm_machine, cp *C.qm_patterns, w *waiter, out **C.qm_console_match, cerr **C.qm_error) C.qm_status {
		return C.qm_console_exec(h, cl, ce, cp, w.timeout, w.tok, out, cerr)
	})
}

// ConsoleInterruptUntil sends key every interval (first at once) until one of p's patterns
// shows (boot menus, "press any key" prompts), then returns as ConsoleWait does.
func (m *Machine) ConsoleInterruptUntil(ctx context.Context, key []byte, interval time.Duration, p Patterns) (*ConsoleMatch, error) {
	// The library refuses a zero interval; here only what does not fit its uint32 milliseconds.
	ms := max(interval.Milliseconds(), 0)
	if ms > int64(^uint32(0)) {
		return nil, invalid("ConsoleInterruptUntil: interval %v does not fit in 2^32 ms", interval)
	}
	ck := C.CBytes(key)
	defer C.free(ck)
	return m.consoleWait(ctx, p, func(h *C.qm_machine, cp *C.qm_patterns, w *waiter, out **C.qm_console_match, cerr **C.qm_error) C.qm_status {
		return C.qm_console_interrupt_until(h, (*C.uint8_t)(ck), C.size_t(len(key)), C.uint32_t(ms), cp, w.timeout, w.tok, out, cerr)
	})
}

// ConsoleSend sends b to the guest's console, waiting while the console is full until ctx
// ends. Concurrent sends never interleave within one call's bytes. ErrConsoleClosed when the
// console is gone.
func (m *Machine) ConsoleSend(ctx context.Context, b []byte) error {
	cb := C.CBytes(b)
	defer C.free(cb)
	return m.call(ctx, C.QM_WAIT_FOREVER, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return C.qm_console_send(h, (*C.uint8_t)(cb), C.size_t(len(b)), w.timeout, w.tok, cerr)
	})
}

// ConsoleSendLine sends line followed by eol, as ConsoleSend does.
func (m *Machine) ConsoleSendLine(ctx context.Context, line, eol string) error {
	return m.ConsoleSend(ctx, []byte(line+eol))
}

// ConsoleTranscript returns the console output kept in memory: its last `last` bytes, or all
// of it (up to the cap) when last is 0. Invalid UTF-8 and NUL bytes are replaced by U+FFFD (the
// console log file has the exact bytes). It works while the machine runs and after its
// shutdown, until the next launch, and never blocks; ErrState before the first launch or
// without a console.
func (m *Machine) ConsoleTranscript(last int) (string, error) {
	var s string
	err := m.use(func(h *C.qm_machine) error {
		var out *C.char
		var cerr *C.qm_error
		if err := takeError(C.qm_console_transcript(h, C.size_t(max(last, 0)), &out, nil, &cerr), cerr); err != nil {
			return err
		}
		s = takeString(out)
		return nil
	})
	return s, err
}

// ConsoleStats returns the console's counters. Never blocks.
func (m *Machine) ConsoleStats() (ConsoleStats, error) {
	var st ConsoleStats
	err := m.use(func(h *C.qm_machine) error {
		var c C.qm_console_counters
		var cerr *C.qm_error
		if err := takeError(C.qm_console_stats(h, &c, &cerr), cerr); err != nil {
			return err
		}
		st = ConsoleStats{
			Received:   uint64(c.received),
			Kept:       uint64(c.kept),
			Unread:     uint64(c.unread),
			Dropped:    uint64(c.dropped),
			RawDropped: uint64(c.raw_dropped),
			Cap:        uint64(c.cap),
			Closed:     bool(c.closed),
		}
		return nil
	})
	return st, err
}

// ConsoleSkipUnread marks the console output received so far as read, so the next wait only
// sees newer output, and returns how many bytes it skipped. The transcript keeps them.
func (m *Machine) ConsoleSkipUnread() (int, error) {
	var n C.size_t
	err := m.use(func(h *C.qm_machine) error {
		var cerr *C.qm_error
		return takeError(C.qm_console_skip_unread(h, &n, &cerr), cerr)
	})
	return int(n), err
}
