package qm

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"
)

// Per-call tokens are registered while their call runs and freed afterwards, whatever the
// outcome: none is left behind (no C memory leaks, nothing for Close to fire).
func TestTokensAreReleased(t *testing.T) {
	bin := os.Getenv("QM_QEMU")
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	m, err := New(bin, WithMachineType("none"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Launch(context.Background()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%3)*time.Millisecond+time.Microsecond)
				switch i % 3 {
				case 0:
					m.Cmd(ctx, "query-status", nil)
				case 1:
					m.EventWait(ctx, EventFilter{Name: "NO_SUCH_EVENT"})
				default:
					cancel()
					m.Event(ctx)
				}
				cancel()
			}
		}(g)
	}
	wg.Wait()
	m.tokMu.Lock()
	n := len(m.toks)
	m.tokMu.Unlock()
	if n != 0 {
		t.Fatalf("%d tokens still registered", n)
	}
}
