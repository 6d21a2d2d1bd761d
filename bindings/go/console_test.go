package qm_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// The echo guest through the console API: wait, exec, interrupt, a failure pattern, a
// timeout's text, the transcript, then a pending wait ended by the guest powering off.
func TestConsoleInteraction(t *testing.T) {
	ctx := ctxT(t)
	m := newMachine(t, append(guestOptions(t, "Go console guest", qm.GuestEcho, 0), qm.WithConsoleBuffer(64<<10))...)
	_, err := m.ConsoleWait(ctx, qm.Expect("x"))
	mustErr(t, "ConsoleWait before launch", err, qm.ErrState)
	if err := m.Launch(ctx); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	got, err := m.ConsoleWait(ctx, qm.Expect("guest\r\n"))
	if err != nil || string(got.Text) != "Go console guest\r\n" || string(got.Matched()) != "guest\r\n" {
		t.Fatalf("ConsoleWait banner = %+v, %v", got, err)
	}
	p := qm.Patterns{
		Success: []qm.Pattern{qm.Literal("never"), qm.Regexp(`hel+o;`)},
		Failure: []qm.Pattern{qm.Literal("boom")},
	}
	got, err = m.ConsoleExec(ctx, "hello", ";", p)
	if err != nil || got.Index != 1 || string(got.Text) != "hello;" {
		t.Fatalf("ConsoleExec = %+v, %v", got, err)
	}
	if err := m.ConsoleSendLine(ctx, "boom", "\n"); err != nil {
		t.Fatal(err)
	}
	_, err = m.ConsoleWait(ctx, p)
	mustErr(t, "failure pattern", err, qm.ErrConsoleFailure)
	var qe *qm.Error
	if !errors.As(err, &qe) || qe.ConsoleText != "boom" || qe.FailurePattern != 0 {
		t.Fatalf("failure error %#v", err)
	}
	got, err = m.ConsoleInterruptUntil(ctx, []byte("k"), 20*time.Millisecond, qm.Expect("kkk"))
	if err != nil || !strings.HasSuffix(string(got.Text), "kkk") {
		t.Fatalf("ConsoleInterruptUntil = %+v, %v", got, err)
	}

	// A deadline: ErrTimeout and DeadlineExceeded, with the unread tail, which stays unread.
	if err := m.ConsoleSend(ctx, []byte("tail")); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = m.ConsoleWait(short, qm.Expect("never"))
	cancel()
	mustErr(t, "timeout", err, qm.ErrTimeout, context.DeadlineExceeded)
	if !errors.As(err, &qe) || !strings.Contains(qe.ConsoleText, "tail") || !strings.Contains(qe.Message, `"never"`) {
		t.Fatalf("timeout error %#v", err)
	}
	if tr, err := m.ConsoleTranscript(4); err != nil || tr != "tail" {
		t.Fatalf("ConsoleTranscript(4) = %q, %v", tr, err)
	}
	if st, err := m.ConsoleStats(); err != nil || st.Cap != 64<<10 || st.Unread < 4 || st.Closed {
		t.Fatalf("ConsoleStats = %+v, %v", st, err)
	}
	if n, err := m.ConsoleSkipUnread(); err != nil || n < 4 {
		t.Fatalf("ConsoleSkipUnread = %d, %v", n, err)
	}

	// A pending wait, then "p": the guest powers off, the wait fails with ErrConsoleClosed.
	done := make(chan error, 1)
	go func() {
		_, err := m.ConsoleWait(ctx, qm.Expect("never"))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := m.ConsoleSend(ctx, []byte("p")); err != nil {
		t.Fatal(err)
	}
	mustErr(t, "pending wait at power-off", <-done, qm.ErrConsoleClosed)
	if _, err := m.EventWait(ctx, qm.EventFilter{Name: "SHUTDOWN"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = m.ConsoleWait(ctx, qm.Expect("x"))
	mustErr(t, "wait after shutdown", err, qm.ErrConsoleClosed)
	if tr, err := m.ConsoleTranscript(0); err != nil || !strings.HasPrefix(tr, "Go console guest\r\nhello;boom\n") {
		t.Fatalf("ConsoleTranscript(0) = %q, %v", tr, err)
	}
}

// Cancelling the context ends a wait at once; a second concurrent wait is refused.
func TestConsoleCancelAndOneWaitAtATime(t *testing.T) {
	ctx := ctxT(t)
	m := launched(t, guestOptions(t, "cancel guest", qm.GuestHalt, 0)...)
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The probe below may hold the console for a moment: try again until this one waits.
		for {
			_, werr = m.ConsoleWait(wctx, qm.Expect("never"))
			if !errors.Is(werr, qm.ErrState) {
				return
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		zero, c := context.WithTimeout(ctx, time.Millisecond)
		_, err := m.ConsoleWait(zero, qm.Expect("never"))
		c()
		if errors.Is(err, qm.ErrState) {
			break
		}
		if !errors.Is(err, qm.ErrTimeout) || time.Now().After(deadline) {
			t.Fatalf("second wait: %v", err)
		}
	}
	cancel()
	wg.Wait()
	mustErr(t, "cancelled wait", werr, qm.ErrInterrupted, context.Canceled)
	_, err := m.ConsoleWait(ctx, qm.Patterns{})
	mustErr(t, "no success pattern", err, qm.ErrInvalid)
	_, err = m.ConsoleWait(ctx, qm.Patterns{Success: []qm.Pattern{qm.Regexp("(")}})
	mustErr(t, "bad regex", err, qm.ErrInvalid)
	_, err = m.ConsoleInterruptUntil(ctx, []byte("k"), 0, qm.Expect("x"))
	mustErr(t, "zero interval", err, qm.ErrInvalid)
}
