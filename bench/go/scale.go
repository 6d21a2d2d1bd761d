package main

// #include <stdlib.h>
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// cpuMs is the CPU time (user + system) this process has used so far, in ms.
func cpuMs() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

// selfStatus returns Threads and VmRSS (KiB) from /proc/self/status.
func selfStatus() (threads, rssKiB float64, err error) {
	text, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	threads, rssKiB = -1, -1
	for _, l := range strings.Split(string(text), "\n") {
		name, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch name {
		case "Threads":
			threads, _ = strconv.ParseFloat(f[0], 64)
		case "VmRSS":
			rssKiB, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if threads < 0 || rssKiB < 0 {
		return 0, 0, errors.New("no Threads/VmRSS in /proc/self/status")
	}
	return threads, rssKiB, nil
}

func fdCount() (float64, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	return float64(len(ents)), err
}

type round struct {
	wall, up, down           time.Duration
	threads, rssKiB, fdDelta float64
}

func (r *round) emit(s side, n int, out *output) {
	out.push(s, ms(r.wall))
	out.stat("up_ms", s, ms(r.up))
	out.stat("down_ms", s, ms(r.down))
	out.stat("threads_per_machine", s, r.threads/float64(n))
	out.stat("rss_kib_per_machine", s, r.rssKiB/float64(n))
	out.stat("fd_delta", s, r.fdDelta)
}

// scaleRaw is the baseline: spawn every QEMU from this goroutine, negotiate with each in turn
// (they all start meanwhile), then quit to all, and read each reply and reap.
func scaleRaw(qemu string, n int) (r round, err error) {
	fds0, err := fdCount()
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	th0, rss0, err := selfStatus()
	if err != nil {
		return r, err
	}
	vms := make([]*rawVM, 0, n) // on an error, fail kills them
	for i := 0; i < n; i++ {
		vm, err := rawSpawn(qemu)
		if err != nil {
			return r, err
		}
		vms = append(vms, vm)
	}
	for _, vm := range vms {
		if err := vm.handshake(); err != nil {
			return r, err
		}
	}
	r.up = time.Since(t0)
	th1, rss1, err := selfStatus()
	if err != nil {
		return r, err
	}
	t1 := time.Now()
	ids := make([]uint64, n)
	for i, vm := range vms {
		if ids[i], err = vm.send("quit"); err != nil {
			return r, err
		}
	}
	for i, vm := range vms {
		if err := vm.recvReply(ids[i], nil, nil); err != nil {
			return r, err
		}
		if err := vm.reap(); err != nil {
			return r, err
		}
	}
	r.down = time.Since(t1)
	r.wall = time.Since(t0)
	fds1, err := fdCount()
	if err != nil {
		return r, err
	}
	r.threads, r.rssKiB, r.fdDelta = th1-th0, rss1-rss0, fds1-fds0
	return r, nil
}

// barrier is a reusable barrier for a fixed number of parties.
type barrier struct {
	mu      sync.Mutex
	cond    *sync.Cond
	parties int
	waiting int
	gen     int
}

func newBarrier(parties int) *barrier {
	b := &barrier{parties: parties}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *barrier) wait() {
	b.mu.Lock()
	gen := b.gen
	b.waiting++
	if b.waiting == b.parties {
		b.waiting = 0
		b.gen++
		b.cond.Broadcast()
	} else {
		for gen == b.gen {
			b.cond.Wait()
		}
	}
	b.mu.Unlock()
}

// scaleQM: one caller per machine (Launch blocks), all started at once; the callers park on a
// barrier before creating their machine and after launching it, so threads and RSS are read
// with the callers alive both times and only the library's share differs.
//
// In Go a caller is a goroutine, and a goroutine blocked in a cgo call holds an OS thread of
// its own, which the runtime keeps (idle) once the call returns. With lock (the default) each
// caller is locked to its OS thread (runtime.LockOSThread) before the first reading, as the C
// and Rust subjects' caller threads exist before it: the reading then shows the library's
// share. With lock=false the callers are plain goroutines: the runtime starts the threads for
// the blocked Launch calls between the two readings, and they count (about one per machine).
func scaleQM(qemu string, n int, lock bool) (r round, err error) {
	fds0, err := fdCount()
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	gate := newBarrier(n + 1)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			if lock {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
			}
			// Make this thread's malloc arena exist before the first reading (as the C
			// subject does); meaningful only when locked to the thread that will launch.
			C.free(C.malloc(64))
			gate.wait() // all callers exist
			gate.wait() // "before" was read
			m, err := qmUp(qemu)
			gate.wait() // all launched (or failed)
			gate.wait() // "after" was read
			if err == nil {
				err = qmDown(m)
			}
			errs <- err
		}()
	}
	gate.wait()
	th0, rss0, err0 := selfStatus()
	gate.wait()
	gate.wait()
	r.up = time.Since(t0)
	th1, rss1, err1 := selfStatus()
	t1 := time.Now()
	gate.wait()
	var first error
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	r.down = time.Since(t1)
	r.wall = time.Since(t0)
	for _, err := range []error{first, err0, err1} {
		if err != nil {
			return r, err
		}
	}
	fds1, err := fdCount()
	if err != nil {
		return r, err
	}
	r.threads, r.rssKiB, r.fdDelta = th1-th0, rss1-rss0, fds1-fds0
	return r, nil
}

// scaleBatch is qm's cheaper path: every machine made, then qm.LaunchAll from this one
// goroutine (no goroutine blocked in a cgo call per machine), then quit sent to all and each
// exit waited for, as the raw client does.
func scaleBatch(qemu string, n int) (r round, err error) {
	fds0, err := fdCount()
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	th0, rss0, err := selfStatus()
	if err != nil {
		return r, err
	}
	ms := make([]*qm.Machine, 0, n)
	defer func() {
		for _, m := range ms {
			m.Close()
		}
	}()
	for i := 0; i < n; i++ {
		m, err := qm.New(qemu, qm.WithMachineType("none"))
		if err != nil {
			return r, fmt.Errorf("qm.New: %w", err)
		}
		ms = append(ms, m)
	}
	for _, err := range qm.LaunchAll(bg, ms...) {
		if err != nil {
			return r, fmt.Errorf("LaunchAll: %w", err)
		}
	}
	r.up = time.Since(t0)
	th1, rss1, err := selfStatus()
	if err != nil {
		return r, err
	}
	t1 := time.Now()
	for _, m := range ms {
		if _, err := m.Cmd(bg, "quit", nil); err != nil {
			return r, fmt.Errorf("quit: %w", err)
		}
	}
	for _, m := range ms {
		if err := m.Wait(bg); err != nil {
			return r, fmt.Errorf("Wait: %w", err)
		}
	}
	for _, m := range ms {
		if err := m.Close(); err != nil {
			return r, fmt.Errorf("Close: %w", err)
		}
	}
	ms = nil
	r.down = time.Since(t1)
	r.wall = time.Since(t0)
	fds1, err := fdCount()
	if err != nil {
		return r, err
	}
	r.threads, r.rssKiB, r.fdDelta = th1-th0, rss1-rss0, fds1-fds0
	return r, nil
}

// scale runs the scale round (batch: scaleBatch for qm, else a goroutine per machine) against
// the raw client, alternating which goes first.
func scale(p *params, out *output, batch bool) error {
	n, rounds, lock := p.get("machines", 200), p.get("rounds", 3), p.get("lock", 1) != 0
	if err := warmUp(p.qemu); err != nil {
		return err
	}
	for i := 0; i < rounds; i++ {
		out.pair()
		for k := 0; k < 2; k++ {
			s := order(i, k)
			var r round
			var err error
			cpu0 := cpuMs()
			if s == raw {
				r, err = scaleRaw(p.qemu, n)
			} else if batch {
				r, err = scaleBatch(p.qemu, n)
			} else {
				r, err = scaleQM(p.qemu, n, lock)
			}
			if err != nil {
				return fmt.Errorf("scale (%s): %w", s, err)
			}
			cpu := cpuMs() - cpu0
			r.emit(s, n, out)
			out.stat("cpu_ms_per_machine", s, cpu/float64(n))
		}
	}
	return nil
}
