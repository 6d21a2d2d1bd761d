package qm_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// recorder is a slog.Handler that keeps every record it is given.
type recorder struct {
	mu        sync.Mutex
	records   []slog.Record
	tryChange bool  // each Handle tries SetLogger(nil), which must fail
	changeErr error // set when it did not
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var changeErr error
	if r.tryChange {
		// From inside a handler the logger cannot be changed (it would wait for itself).
		if err := qm.SetLogger(nil); !errors.Is(err, qm.ErrState) {
			changeErr = fmt.Errorf("SetLogger inside a handler: %v", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if changeErr != nil {
		r.changeErr = changeErr
	}
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) count(f func(slog.Record) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if f(rec) {
			n++
		}
	}
	return n
}

func target(rec slog.Record) string {
	var t string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "target" {
			t = a.Value.String()
		}
		return true
	})
	return t
}

// Records reach the slog.Logger from every goroutine, with their level, target and time;
// SetLogger(nil) stops them.
func TestSetLoggerRoutesRecordsToSlog(t *testing.T) {
	rec := &recorder{tryChange: true}
	if err := qm.SetLogLevel(qm.LogDebug); err != nil {
		t.Fatal(err)
	}
	defer qm.SetLogLevel(qm.LogWarn)
	if err := qm.SetLogger(slog.New(rec)); err != nil {
		t.Fatal(err)
	}
	defer qm.SetLogger(nil)

	before := time.Now()
	m := launched(t)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				if _, err := m.Cmd(context.Background(), "query-status", nil); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := qm.SetLogger(nil); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if rec.changeErr != nil {
		t.Fatal(rec.changeErr)
	}
	// Other tests may run machines meanwhile: count only this machine's commands.
	name := m.Name()
	sent := rec.count(func(r slog.Record) bool {
		return r.Level == slog.LevelDebug && target(r) == "qm::qmp" &&
			strings.HasPrefix(r.Message, name+" >>> {\"execute\":\"query-status\"")
	})
	if sent != 20 {
		t.Fatalf("%d query-status records, want 20", sent)
	}
	bad := rec.count(func(r slog.Record) bool {
		return r.Time.Before(before.Add(-time.Second)) || r.Time.After(after.Add(time.Second))
	})
	if bad != 0 {
		t.Fatalf("%d records with a time outside the test", bad)
	}
	n := rec.count(func(slog.Record) bool { return true })
	m2 := launched(t)
	m2.Shutdown(context.Background())
	if got := rec.count(func(slog.Record) bool { return true }); got != n {
		t.Fatalf("%d records after SetLogger(nil), want %d", got, n)
	}
}

// Replacing the logger while records flow frees nothing in use (run with -race).
func TestSetLoggerReplacedWhileLogging(t *testing.T) {
	if err := qm.SetLogLevel(qm.LogDebug); err != nil {
		t.Fatal(err)
	}
	defer qm.SetLogLevel(qm.LogWarn)
	defer qm.SetLogger(nil)
	m := launched(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ {
			m.Cmd(context.Background(), "query-status", nil)
		}
	}()
	for i := 0; i < 50; i++ {
		qm.SetLogger(slog.New(&recorder{}))
	}
	<-done
}

func TestQMPTranscriptAndLogSoFar(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "qmp.jsonl")
	wrapper := filepath.Join(dir, "wrapper.sh")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\necho go-says-hello >&2\nexec \"$@\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	m := newMachine(t, qm.WithMachineType("none"), qm.WithQMPTranscript(path), qm.WithWrapper(wrapper))
	if _, ok := m.LogSoFar(); ok {
		t.Fatal("LogSoFar before any launch")
	}
	if err := m.Launch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s, ok := m.LogSoFar(); !ok || !strings.Contains(s, "go-says-hello") {
		t.Fatalf("LogSoFar while running = %q, %v", s, ok)
	}
	if _, err := m.Cmd(context.Background(), "stop", nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			T   float64
			Dir string
			Msg map[string]any
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("%v: %s", err, sc.Text())
		}
		if line.T < float64(time.Now().Add(-time.Hour).Unix()) {
			t.Fatalf("t = %v", line.T)
		}
		if line.Msg["execute"] == "stop" || line.Msg["event"] == "STOP" || line.Msg["QMP"] != nil {
			dirs = append(dirs, line.Dir)
		}
	}
	if strings.Join(dirs, " ") != "in out event" {
		t.Fatalf("greeting, stop, STOP: %v", dirs)
	}
}

// Error messages: one "qm: " prefix, no C function or parameter names, and a launch that
// fails because QEMU exited says so first.
func TestErrorMessagesSpeakGo(t *testing.T) {
	err := qm.SetLogLevel(42)
	if msg := err.Error(); !strings.HasPrefix(msg, "qm: ") || strings.Contains(msg, "qm_") ||
		strings.Count(msg, "qm:") != 1 {
		t.Fatalf("%q", msg)
	}
	m := newMachine(t, qm.WithMachineType("none"), qm.WithArgs("-no-such-option-for-qm"))
	err = m.Launch(context.Background())
	var le *qm.LaunchError
	if !errors.As(err, &le) {
		t.Fatalf("%v", err)
	}
	first, _, _ := strings.Cut(err.Error(), "\n")
	if !strings.HasPrefix(first, "qm: launch failed: QEMU exited with code 1: ") ||
		!strings.Contains(first, "-no-such-option-for-qm") {
		t.Fatalf("%q", first)
	}
	m2 := launched(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = m2.EventWait(ctx, qm.EventFilter{Name: "SHUTDOWN"})
	if !errors.Is(err, qm.ErrTimeout) || !regexp.MustCompile(`^qm: timed out: no SHUTDOWN event within \d+ ms`).MatchString(err.Error()) {
		t.Fatalf("%v", err)
	}
}
