// Command qm-bench-go is the Go subject of qm's benchmarks: qm-bench-go METRIC [key=value ...].
// One run measures one metric, with a raw baseline client (raw.go: fork/exec QEMU on a
// socketpair, blocking reads and writes, no library) and qm's Go binding
// (github.com/qm-project/qm/bindings/go) alternating in this same process. It prints samples
// in the subject protocol of bench/README.md ("raw V", "subject V", "stat NAME SIDE V",
// "pair"); bench's runner computes the statistics. Errors go to stderr with a non-zero exit.
//
// qm calls use context.Background(), as a user without deadlines would: the binding then
// allocates no cancellation token per call.
//
// Extra parameters for manual runs (the runner passes none): cpuprofile=FILE writes a CPU
// profile of the whole run (go tool pprof); lock=0 runs scale's qm callers as plain goroutines
// instead of goroutines locked to their OS threads (see scale.go).
package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// libqmSHA256 is set by bench/run (-ldflags -X) to the hash of the libqm.a linked in.
var libqmSHA256 = "unknown"

var bg = context.Background()

type side int

const (
	raw side = iota
	subj
)

func (s side) String() string {
	if s == raw {
		return "raw"
	}
	return "subject"
}

// order is the side that runs k-th (0, 1) in round: raw first on even rounds, qm first on odd
// ones, so that neither always goes first.
func order(round, k int) side { return side((round + k) % 2) }

// ---- samples, printed at the end (never while timing) --------------------------------------

type line struct {
	stat  string // "": a plain sample; "pair": a pair marker
	side  side
	value float64
}

type output struct{ lines []line }

func (o *output) push(s side, v float64)              { o.lines = append(o.lines, line{"", s, v}) }
func (o *output) stat(name string, s side, v float64) { o.lines = append(o.lines, line{name, s, v}) }

// pair: the samples that follow belong to a new pair (of machines, or a new alternation).
func (o *output) pair() { o.lines = append(o.lines, line{stat: "pair"}) }

func (o *output) print() {
	w := bufio.NewWriter(os.Stdout)
	for _, l := range o.lines {
		v := strconv.FormatFloat(l.value, 'f', 6, 64)
		switch l.stat {
		case "":
			fmt.Fprintf(w, "%s %s\n", l.side, v)
		case "pair":
			fmt.Fprintln(w, "pair")
		default:
			fmt.Fprintf(w, "stat %s %s %s\n", l.stat, l.side, v)
		}
	}
	w.Flush()
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }
func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// ---- qm ------------------------------------------------------------------------------------

func qmUp(qemu string) (*qm.Machine, error) {
	m, err := qm.New(qemu, qm.WithMachineType("none"))
	if err != nil {
		return nil, fmt.Errorf("qm.New: %w", err)
	}
	if err := m.Launch(bg); err != nil {
		m.Close()
		return nil, fmt.Errorf("Launch: %w", err)
	}
	return m, nil
}

// qmDown shuts the machine down gracefully and frees it.
func qmDown(m *qm.Machine) error {
	err := m.Shutdown(bg)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("Shutdown: %w", err)
	}
	return nil
}

var (
	retRunning  = []byte(`"status":"running"`)
	retRunning2 = []byte(`"running":true`)
)

// qmQueryStatus runs query-status through Cmd and checks the reply (the return value is
// compact JSON: a substring check, as the C subject's, not encoding/json).
func qmQueryStatus(m *qm.Machine) error {
	ret, err := m.Cmd(bg, "query-status", nil)
	if err != nil {
		return fmt.Errorf("Cmd query-status: %w", err)
	}
	if !bytes.Contains(ret, retRunning) || !bytes.Contains(ret, retRunning2) {
		return fmt.Errorf("unexpected query-status return: %s", ret)
	}
	return nil
}

// qmCommandAndEvent runs cmd (stop, cont), then waits for the event.
func qmCommandAndEvent(m *qm.Machine, cmd, event string) error {
	if _, err := m.Cmd(bg, cmd, nil); err != nil {
		return fmt.Errorf("Cmd %s: %w", cmd, err)
	}
	ev, err := m.EventWait(bg, qm.EventFilter{Name: event})
	if err != nil {
		return fmt.Errorf("EventWait %s: %w", event, err)
	}
	if ev.Name != event {
		return fmt.Errorf("wrong event: %s", ev.Raw)
	}
	return nil
}

// ---- metrics -------------------------------------------------------------------------------

type params struct {
	kv   map[string]string
	qemu string
}

func (p *params) get(key string, def int) int {
	v, ok := p.kv[key]
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		fail("%s=%s: not a number", key, v)
	}
	return n
}

// segments runs body on a fresh pair of machines (launched in alternating order) for each
// segment, so that neither side keeps a QEMU that the scheduler happens to treat worse for the
// whole run.
func segments(p *params, out *output, body func(r *rawVM, m *qm.Machine) error) error {
	for seg := 0; seg < p.get("segments", 20); seg++ {
		out.pair()
		var r *rawVM
		var m *qm.Machine
		var err error
		if seg%2 == 0 {
			if r, err = rawLaunch(p.qemu); err != nil {
				return err
			}
			if m, err = qmUp(p.qemu); err != nil {
				return err
			}
		} else {
			if m, err = qmUp(p.qemu); err != nil {
				return err
			}
			if r, err = rawLaunch(p.qemu); err != nil {
				return err
			}
		}
		if err := body(r, m); err != nil {
			return err
		}
		if err := r.shutdown(); err != nil {
			return err
		}
		if err := qmDown(m); err != nil {
			return err
		}
	}
	return nil
}

func qmpRTT(p *params, out *output) error {
	blocks, reps := p.get("blocks", 2), p.get("reps", 500)
	return segments(p, out, func(r *rawVM, m *qm.Machine) error {
		for i := 0; i < 100; i++ {
			if err := r.queryStatus(); err != nil {
				return err
			}
			if err := qmQueryStatus(m); err != nil {
				return err
			}
		}
		for b := 0; b < blocks; b++ {
			for k := 0; k < 2; k++ {
				s := order(b, k)
				for i := 0; i < reps; i++ {
					t := time.Now()
					var err error
					if s == raw {
						err = r.queryStatus()
					} else {
						err = qmQueryStatus(m)
					}
					d := time.Since(t)
					if err != nil {
						return err
					}
					out.push(s, us(d))
				}
			}
		}
		return nil
	})
}

// qmThreadsBlock runs threads goroutines of perThread query-status each on one machine,
// checking every reply; it returns how many were right.
func qmThreadsBlock(m *qm.Machine, threads, perThread int) (int, error) {
	var wg sync.WaitGroup
	ok := make([]int, threads)
	errs := make([]error, threads)
	for g := 0; g < threads; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < perThread; i++ {
				if err := qmQueryStatus(m); err != nil {
					errs[g] = fmt.Errorf("command %d: %w", i, err)
					return
				}
				ok[g]++
			}
		}(g)
	}
	wg.Wait()
	done := 0
	for g := range ok {
		if errs[g] != nil {
			return 0, errs[g]
		}
		done += ok[g]
	}
	return done, nil
}

func qmpThreads(p *params, out *output) error {
	blocks, reps, threads := p.get("blocks", 2), p.get("reps", 400), p.get("threads", 8)
	if threads < 1 {
		return fmt.Errorf("threads=%d", threads)
	}
	perThread := reps / threads
	total := perThread * threads
	return segments(p, out, func(r *rawVM, m *qm.Machine) error {
		for i := 0; i < 100; i++ {
			if err := r.queryStatus(); err != nil {
				return err
			}
		}
		if _, err := qmThreadsBlock(m, threads, 100/threads); err != nil {
			return err
		}
		for b := 0; b < blocks; b++ {
			var qmRate float64
			for k := 0; k < 2; k++ {
				s := order(b, k)
				t := time.Now()
				var done int
				if s == raw {
					for i := 0; i < total; i++ { // sequential: one command at a time
						if err := r.queryStatus(); err != nil {
							return err
						}
					}
					done = total
				} else {
					var err error
					if done, err = qmThreadsBlock(m, threads, perThread); err != nil {
						return err
					}
				}
				rate := float64(done) / time.Since(t).Seconds()
				if done != total {
					return fmt.Errorf("%d of %d replies right", done, total)
				}
				out.push(s, rate)
				if s == subj {
					qmRate = rate
				}
			}
			// The raw client pipelining as many commands as qm has goroutines: what QEMU
			// itself can do with that many in flight ("stat pipelined": raw pipelined, and
			// qm's rate of the same block, for their ratio).
			t := time.Now()
			for i := 0; i < perThread; i++ {
				if err := r.queryStatusPipelined(threads); err != nil {
					return err
				}
			}
			out.stat("pipelined", raw, float64(total)/time.Since(t).Seconds())
			out.stat("pipelined", subj, qmRate)
		}
		return nil
	})
}

// either is one machine of either side.
type either struct {
	r *rawVM
	m *qm.Machine
}

func launchSide(s side, qemu string) (either, error) {
	if s == raw {
		r, err := rawLaunch(qemu)
		return either{r: r}, err
	}
	m, err := qmUp(qemu)
	return either{m: m}, err
}

func (e either) down() error {
	if e.r != nil {
		return e.r.shutdown()
	}
	return qmDown(e.m)
}

// warmUp launches and shuts down one machine of each side: page cache, qm's helpers.
func warmUp(qemu string) error {
	for k := 0; k < 2; k++ {
		e, err := launchSide(order(0, k), qemu)
		if err != nil {
			return err
		}
		if err := e.down(); err != nil {
			return err
		}
	}
	return nil
}

func launchReady(p *params, out *output) error {
	if err := warmUp(p.qemu); err != nil {
		return err
	}
	for i := 0; i < p.get("reps", 40); i++ {
		out.pair()
		for k := 0; k < 2; k++ {
			s := order(i, k)
			t := time.Now()
			e, err := launchSide(s, p.qemu)
			d := time.Since(t)
			if err != nil {
				return err
			}
			out.push(s, ms(d))
			if err := e.down(); err != nil {
				return err
			}
		}
	}
	return nil
}

func shutdownMetric(p *params, out *output) error {
	if err := warmUp(p.qemu); err != nil {
		return err
	}
	for i := 0; i < p.get("reps", 40); i++ {
		out.pair()
		for k := 0; k < 2; k++ {
			s := order(i, k)
			e, err := launchSide(s, p.qemu)
			if err != nil {
				return err
			}
			if s == raw {
				err = e.r.queryStatus()
			} else {
				err = qmQueryStatus(e.m)
			}
			if err != nil {
				return err
			}
			time.Sleep(2 * time.Millisecond)
			t := time.Now()
			if s == raw {
				err = e.r.shutdown()
			} else {
				err = e.m.Shutdown(bg)
			}
			d := time.Since(t)
			if err != nil {
				return err
			}
			out.push(s, ms(d))
			if s == subj {
				if err := e.m.Close(); err != nil { // after the clock: only the shutdown is timed
					return err
				}
			}
		}
	}
	return nil
}

var (
	wantStop   = []byte(`"event": "STOP"`)
	wantResume = []byte(`"event": "RESUME"`)
)

func eventLatency(p *params, out *output) error {
	blocks, reps := p.get("blocks", 2), p.get("reps", 50)
	return segments(p, out, func(r *rawVM, m *qm.Machine) error {
		for i := 0; i < 10; i++ {
			if err := r.commandAndEvent("stop", wantStop); err != nil {
				return err
			}
			if err := r.commandAndEvent("cont", wantResume); err != nil {
				return err
			}
			if err := qmCommandAndEvent(m, "stop", "STOP"); err != nil {
				return err
			}
			if err := qmCommandAndEvent(m, "cont", "RESUME"); err != nil {
				return err
			}
		}
		for b := 0; b < blocks; b++ {
			for k := 0; k < 2; k++ {
				s := order(b, k)
				for i := 0; i < reps; i++ {
					t := time.Now()
					var err error
					if s == raw {
						err = r.commandAndEvent("stop", wantStop)
					} else {
						err = qmCommandAndEvent(m, "stop", "STOP")
					}
					d := time.Since(t)
					if err != nil {
						return err
					}
					out.push(s, us(d))
					if s == raw {
						err = r.commandAndEvent("cont", wantResume)
					} else {
						err = qmCommandAndEvent(m, "cont", "RESUME")
					}
					if err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

// ---- main ----------------------------------------------------------------------------------

// fail reports an error and exits; the baseline's QEMUs are killed first (qm's die with this
// process).
func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "qm-bench-go: "+format+"\n", args...)
	killAll()
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: qm-bench-go METRIC [key=value ...]")
		os.Exit(2)
	}
	metric := os.Args[1]
	p := &params{kv: map[string]string{}, qemu: "qemu-system-x86_64"}
	for _, a := range os.Args[2:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			p.kv[k] = v
		}
	}
	if q, ok := p.kv["qemu"]; ok {
		p.qemu = q
	}
	// Resolve the binary once, not at every spawn of the baseline.
	if !strings.Contains(p.qemu, "/") {
		path, err := exec.LookPath(p.qemu)
		if err != nil {
			fail("%v", err)
		}
		p.qemu = path
	}
	if abs, err := filepath.Abs(p.qemu); err == nil {
		p.qemu = abs
	}
	if prof := p.kv["cpuprofile"]; prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			fail("%v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail("%v", err)
		}
		defer f.Close()
	}

	out := &output{lines: make([]line, 0, 1<<16)}
	var err error
	switch metric {
	case "qmp_rtt":
		err = qmpRTT(p, out)
	case "qmp_threads":
		err = qmpThreads(p, out)
	case "launch_ready":
		err = launchReady(p, out)
	case "shutdown":
		err = shutdownMetric(p, out)
	case "event_latency":
		err = eventLatency(p, out)
	case "scale":
		err = scale(p, out, false)
	case "scale_batch":
		err = scale(p, out, true)
	default:
		err = fmt.Errorf("unknown metric %s", metric)
	}
	if p.kv["cpuprofile"] != "" {
		pprof.StopCPUProfile()
	}
	fmt.Printf("# %s, GOMAXPROCS %d, qm %s, libqm.a sha256 %s\n",
		runtime.Version(), runtime.GOMAXPROCS(0), qm.Version(), libqmSHA256)
	out.print()
	if err != nil {
		fail("%s: %v", metric, err)
	}
}
