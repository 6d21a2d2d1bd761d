package qmtest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
	"github.com/qm-project/qm/bindings/go/qmtest"
)

// helperEnv makes TestHelper run: the child `go test` processes of the tests below.
const helperEnv = "QMTEST_HELPER"

func TestNewRunsCommands(t *testing.T) {
	t.Parallel()
	m := qmtest.New(t, qm.WithMachineType("none"))
	out, err := m.Cmd(context.Background(), "query-status", nil)
	if err != nil || !strings.Contains(string(out), `"running"`) {
		t.Fatalf("query-status = %s, %v", out, err)
	}
}

func TestParallelMachines(t *testing.T) {
	for i := 0; i < 4; i++ {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			m := qmtest.New(t, qm.WithMachineType("none"))
			if _, err := m.Cmd(context.Background(), "stop", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := m.EventWait(context.Background(), qm.EventFilter{Name: "STOP"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestHelper is run by the tests below in a child process (it is skipped otherwise): a
// failing subtest, a passing one, and a test whose QEMU is missing. Each records its QEMU's
// pid in $QMTEST_PIDS.
func TestHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("run by TestFailureLog and TestMissingQEMUSkips in a child process")
	}
	save := func(m *qm.Machine) {
		f, err := os.OpenFile(os.Getenv("QMTEST_PIDS"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, m.PID())
		f.Close()
	}
	t.Run("fails", func(t *testing.T) {
		m := qmtest.New(t, qm.WithMachineType("none"), qm.WithArgs("-global", "no-such-driver.prop=1"))
		save(m)
		if _, err := m.Cmd(context.Background(), "stop", nil); err != nil {
			t.Fatal(err)
		}
		t.Error("deliberately failing")
	})
	t.Run("passes", func(t *testing.T) {
		m := qmtest.New(t, qm.WithMachineType("none"))
		save(m)
		if _, err := m.Cmd(context.Background(), "query-status", nil); err != nil {
			t.Fatal(err)
		}
	})
}

// child runs TestHelper in a child `go test` process (this test binary) and returns its
// output and the pids of the QEMUs it started.
func child(t *testing.T, env ...string) (string, []int) {
	t.Helper()
	pids := filepath.Join(t.TempDir(), "pids")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), append([]string{helperEnv + "=1", "QMTEST_PIDS=" + pids}, env...)...)
	out, _ := cmd.CombinedOutput()
	var found []int
	if data, err := os.ReadFile(pids); err == nil {
		for _, f := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(f)
			found = append(found, pid)
		}
	}
	return string(out), found
}

func TestFailureLog(t *testing.T) {
	t.Parallel()
	out, pids := child(t)
	fails, passes, ok := strings.Cut(out, "=== RUN   TestHelper/passes")
	if !ok {
		t.Fatalf("no passing subtest in the child's output:\n%s", out)
	}
	// With -test.v, a subtest's log streams as it runs; the --- FAIL/PASS lines come at the end.
	if !strings.Contains(out, "--- FAIL: TestHelper/fails") || !strings.Contains(out, "--- PASS: TestHelper/passes") {
		t.Errorf("the child's results are not one failure and one pass:\n%s", out)
	}
	for _, want := range []string{
		"deliberately failing",
		"--- qm ", ": QEMU log ---",
		"global no-such-driver.prop has invalid class name",
		": QMP transcript (tail) ---",
		`"execute":"stop"`,
	} {
		if !strings.Contains(fails, want) {
			t.Errorf("the failing subtest's output lacks %q:\n%s", want, fails)
		}
	}
	if strings.Contains(passes, "--- qm ") {
		t.Errorf("a passing subtest must log nothing of qmtest's:\n%s", passes)
	}
	if len(pids) != 2 {
		t.Fatalf("the child recorded pids %v, want 2", pids)
	}
	for _, pid := range pids {
		// The child exited; its QEMUs were closed by t.Cleanup before (nothing left to reap).
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("QEMU %d outlived its test", pid)
		}
	}
}

func TestMissingQEMUSkips(t *testing.T) {
	t.Parallel()
	out, pids := child(t, "QM_QEMU=/nonexistent/qemu-system-x86_64")
	for _, want := range []string{
		"--- SKIP: TestHelper/fails",
		`qmtest: QEMU binary "/nonexistent/qemu-system-x86_64" not found (set QM_QEMU)`,
		"--- SKIP: TestHelper/passes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the child's output lacks %q:\n%s", want, out)
		}
	}
	if len(pids) != 0 {
		t.Errorf("no QEMU should have started: %v", pids)
	}
}

func TestLinuxGuest(t *testing.T) {
	t.Parallel()
	m := qmtest.LinuxGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.Agent().Ping(ctx); err != nil {
		t.Fatalf("agent ping: %v", err)
	}
	text, err := m.ConsoleTranscript(0)
	if err != nil || !strings.Contains(text, qmtest.GuestReady) {
		t.Fatalf("console transcript: %v\n%s", err, text)
	}
}
