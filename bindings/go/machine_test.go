package qm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

func TestVersion(t *testing.T) {
	if v := qm.Version(); !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v) {
		t.Fatalf("Version() = %q", v)
	}
}

func TestSetLogLevel(t *testing.T) {
	for _, l := range []qm.LogLevel{qm.LogOff, qm.LogDebug, qm.LogWarn} {
		if err := qm.SetLogLevel(l); err != nil {
			t.Fatalf("SetLogLevel(%d): %v", l, err)
		}
	}
	err := qm.SetLogLevel(42)
	mustErr(t, "SetLogLevel(42)", err, qm.ErrInvalid)
	if !strings.HasPrefix(err.Error(), "qm") || !strings.Contains(err.Error(), "42") {
		t.Fatalf("message %q", err)
	}
	if qm.StatusOf(err) != qm.StatusInvalid {
		t.Fatalf("StatusOf = %v", qm.StatusOf(err))
	}
}

func TestStatus(t *testing.T) {
	if qm.StatusTimeout.String() != "timeout" || qm.Status(99).String() != "status 99" {
		t.Fatalf("String: %q %q", qm.StatusTimeout, qm.Status(99))
	}
	if qm.StatusOf(nil) != qm.StatusOK || qm.StatusOf(errors.New("x")) != -1 {
		t.Fatal("StatusOf of nil / a foreign error")
	}
}

// Configuration and state before, during and after a run.
func TestConfigurationAndState(t *testing.T) {
	base, sock, logs := t.TempDir(), t.TempDir(), t.TempDir()
	m := newMachine(t,
		qm.WithName("go-state"),
		qm.WithBaseTempDir(base),
		qm.WithSockDir(sock),
		qm.WithLogDir(logs),
		qm.WithMachineType("none"),
		qm.WithArgs("-name", "go-guest"),
		qm.WithMonitorNull(),
		qm.WithQMPTimer(-1), // no limit
		qm.WithQMPTimer(20*time.Second),
		qm.WithMaxMessageSize(1<<20),
	)
	if got := m.Name(); got != "go-state" {
		t.Fatalf("Name = %q", got)
	}
	if got := m.Binary(); got != qemu {
		t.Fatalf("Binary = %q", got)
	}
	if got, want := m.Args(), []string{"-name", "go-guest", "-monitor", "null"}; !slices.Equal(got, want) {
		t.Fatalf("Args = %q, want %q", got, want)
	}
	if got := m.CommandLine(); len(got) != 0 {
		t.Fatalf("CommandLine before launch = %q", got)
	}
	if m.Running() || m.PID() != 0 {
		t.Fatal("running before launch")
	}
	if _, ok := m.ExitCode(); ok {
		t.Fatal("exit code before launch")
	}
	if _, ok := m.Log(); ok {
		t.Fatal("log before launch")
	}
	tmp, err := m.TempDir()
	if err != nil || filepath.Dir(tmp) != base {
		t.Fatalf("TempDir = %q, %v (base %q)", tmp, err, base)
	}
	if d, err := m.SockDir(); err != nil || d != sock {
		t.Fatalf("SockDir = %q, %v", d, err)
	}
	if d, err := m.LogDir(); err != nil || d != logs {
		t.Fatalf("LogDir = %q, %v", d, err)
	}
	if _, err := m.Cmd(context.Background(), "query-status", nil); !errors.Is(err, qm.ErrState) {
		t.Fatalf("Cmd before launch: %v", err)
	}
	if _, err := m.Event(context.Background()); !errors.Is(err, qm.ErrState) {
		t.Fatalf("Event before launch: %v", err)
	}
	if err := m.ClearEvents(); err != nil {
		t.Fatalf("ClearEvents before launch: %v", err)
	}
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown before launch: %v", err)
	}
	if err := m.Wait(context.Background()); err != nil {
		t.Fatalf("Wait before launch: %v", err)
	}
	if err := m.Kill(); err != nil {
		t.Fatalf("Kill before launch: %v", err)
	}

	ctx := ctxT(t)
	if err := m.Launch(ctx); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	mustErr(t, "second Launch", m.Launch(ctx), qm.ErrState)
	pid := m.PID()
	if !m.Running() || !alive(pid) {
		t.Fatalf("Running %v, pid %d alive %v", m.Running(), pid, alive(pid))
	}
	cl := m.CommandLine()
	if len(cl) == 0 || cl[0] != qemu || !slices.Contains(cl, "go-guest") || !slices.Contains(cl, "none") {
		t.Fatalf("CommandLine = %q", cl)
	}
	if _, ok := m.Log(); ok {
		t.Fatal("log while running")
	}
	// Configure applies to the next launch.
	if err := m.Configure(qm.WithArgs("-S")); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if alive(pid) || m.Running() || m.PID() != 0 {
		t.Fatalf("QEMU (pid %d) still runs after Shutdown", pid)
	}
	if code, ok := m.ExitCode(); !ok || code != 0 {
		t.Fatalf("ExitCode = %d, %v", code, ok)
	}
	if _, ok := m.Log(); !ok {
		t.Fatal("no log after shutdown")
	}
	if _, err := os.Stat(filepath.Join(logs, "go-state.log")); err != nil {
		t.Fatalf("log file: %v", err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temp dir %s after shutdown: %v", tmp, err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}

	// Relaunch: -S (from Configure) leaves the VM paused.
	if err := m.Launch(ctx); err != nil {
		t.Fatalf("relaunch: %v", err)
	}
	var st struct{ Status string }
	if err := m.CmdInto(ctx, "query-status", nil, &st); err != nil || st.Status != "prelaunch" {
		t.Fatalf("query-status after -S = %+v, %v", st, err)
	}
	if err := m.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if code, ok := m.ExitCode(); !ok || code != -int(syscall.SIGKILL) {
		t.Fatalf("ExitCode after Kill = %d, %v", code, ok)
	}
	if err := m.Kill(); err != nil {
		t.Fatalf("second Kill: %v", err)
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, opt := range map[string]qm.Option{
		"empty name":      qm.WithName(""),
		"name with slash": qm.WithName("a/b"),
		"NUL in arg":      qm.WithArgs("a\x00b"),
		"negative size":   qm.WithMaxMessageSize(-1),
	} {
		if _, err := qm.New(qemu, opt); !errors.Is(err, qm.ErrInvalid) {
			t.Errorf("%s: New = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := qm.New(""); !errors.Is(err, qm.ErrInvalid) {
		t.Errorf("New(\"\") = %v", err)
	}
	closed, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	if _, err := qm.New(qemu, qm.WithFD(closed, 1, "x", "")); !errors.Is(err, qm.ErrInvalid) {
		t.Errorf("WithFD(closed file) = %v", err)
	}
}

func TestQMPAndCmd(t *testing.T) {
	m := launched(t)
	ctx := ctxT(t)

	raw, err := m.QMP(ctx, "query-status", nil)
	if err != nil {
		t.Fatalf("QMP: %v", err)
	}
	var resp struct {
		Return struct{ Status string } `json:"return"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil || resp.Return.Status != "running" {
		t.Fatalf("QMP query-status = %s (%v)", raw, err)
	}
	// An error response is a success for QMP ...
	raw, err = m.QMP(ctx, "no-such-command", nil)
	if err != nil || !strings.Contains(string(raw), `"CommandNotFound"`) {
		t.Fatalf("QMP no-such-command = %s, %v", raw, err)
	}
	// ... and a *QMPError for Cmd.
	_, err = m.Cmd(ctx, "no-such-command", nil)
	var qe *qm.QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || !strings.Contains(qe.Desc, "no-such-command") {
		t.Fatalf("Cmd no-such-command = %v", err)
	}
	mustErr(t, "Cmd no-such-command", err, qm.ErrQMP)
	if msg := err.Error(); msg != "qm: QMP error CommandNotFound: "+qe.Desc {
		t.Fatalf("message %q", msg)
	}
	if qm.StatusOf(err) != qm.StatusQMP {
		t.Fatalf("StatusOf = %v", qm.StatusOf(err))
	}
	_, err = m.Cmd(ctx, "qom-get", map[string]any{"path": "/machine", "property": "no-such-property"})
	if !errors.As(err, &qe) || qe.Class != "GenericError" {
		t.Fatalf("qom-get of a missing property = %v", err)
	}

	// Arguments: a map, a struct, a json.RawMessage; results into structs.
	type qomList struct {
		Path string `json:"path"`
	}
	var props []struct{ Name, Type string }
	for _, args := range []any{
		map[string]string{"path": "/machine"},
		qomList{Path: "/machine"},
		&qomList{Path: "/machine"},
		json.RawMessage(`{"path": "/machine"}`),
	} {
		props = nil
		if err := m.CmdInto(ctx, "qom-list", args, &props); err != nil {
			t.Fatalf("qom-list %T: %v", args, err)
		}
		if !slices.ContainsFunc(props, func(p struct{ Name, Type string }) bool { return p.Name == "type" }) {
			t.Fatalf("qom-list %T = %+v", args, props)
		}
	}
	ret, err := m.Cmd(ctx, "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	type status struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	st, err := qm.Decode[status](ret, err)
	if err != nil || st.Status != "running" || !st.Running {
		t.Fatalf("Decode = %+v, %v", st, err)
	}
	if _, err := qm.Decode[status](nil, qm.ErrTimeout); err != qm.ErrTimeout {
		t.Fatalf("Decode passes errors through: %v", err)
	}
	if err := m.CmdInto(ctx, "query-status", nil, nil); err != nil {
		t.Fatalf("CmdInto nil: %v", err)
	}
	var wrong []int
	if err := m.CmdInto(ctx, "query-status", nil, &wrong); err == nil {
		t.Fatal("CmdInto into a wrong type: no error")
	}
	// query-qmp-schema is ~120 KiB: well over 64 KiB.
	schema, err := m.Cmd(ctx, "query-qmp-schema", nil)
	if err != nil || len(schema) < 64<<10 {
		t.Fatalf("query-qmp-schema: %d bytes, %v", len(schema), err)
	}

	// Invalid arguments never reach QEMU.
	for name, args := range map[string]any{
		"not an object":   42,
		"not marshalable": make(chan int),
		"a list":          []int{1},
	} {
		_, err := m.Cmd(ctx, "query-status", args)
		mustErr(t, name, err, qm.ErrInvalid)
		// In Go's terms: the argument is args, not the C parameter args_json.
		if msg := err.Error(); !strings.Contains(msg, "args") || strings.Contains(msg, "_json") {
			t.Errorf("%s: %q does not name args in Go's terms", name, msg)
		}
	}
	_, err = m.Cmd(ctx, "query\x00status", nil)
	mustErr(t, "NUL in command", err, qm.ErrInvalid)
	// nil maps and pointers are no arguments.
	var nilMap map[string]any
	var nilPtr *qomList
	for _, args := range []any{nilMap, nilPtr} {
		if _, err := m.Cmd(ctx, "query-status", args); err != nil {
			t.Fatalf("Cmd with %T(nil): %v", args, err)
		}
	}
}

func TestLaunchFailure(t *testing.T) {
	ctx := ctxT(t)
	m := newMachine(t, qm.WithMachineType("none"), qm.WithArgs("-no-such-option"))
	start := time.Now()
	err := m.Launch(ctx)
	var le *qm.LaunchError
	if !errors.As(err, &le) {
		t.Fatalf("Launch with a bad option = %v (%T)", err, err)
	}
	if !le.Exited || le.ExitCode != 1 {
		t.Fatalf("ExitCode = %d, Exited = %v", le.ExitCode, le.Exited)
	}
	if !strings.Contains(le.Output, "-no-such-option") || !strings.Contains(le.Output, "invalid option") {
		t.Fatalf("Output = %q", le.Output)
	}
	if !strings.Contains(le.Command, qemu) || !strings.Contains(le.Command, "-no-such-option") {
		t.Fatalf("Command = %q", le.Command)
	}
	if !strings.Contains(err.Error(), "invalid option") {
		t.Fatalf("message = %q", err)
	}
	mustErr(t, "Launch", err, qm.ErrLaunch)
	if qm.StatusOf(err) != qm.StatusLaunch || qm.StatusOf(le.Cause) == qm.StatusOK {
		t.Fatalf("status %v, cause %v", qm.StatusOf(err), le.Cause)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a QEMU that exits at once took %v to fail (QMP timer?)", d)
	}
	t.Logf("launch failure reported in %v: %v", time.Since(start), err)
	if m.Running() || len(m.CommandLine()) == 0 {
		t.Fatal("state after a failed launch")
	}
	if code, ok := m.ExitCode(); !ok || code != 1 {
		t.Fatalf("ExitCode after failed launch = %d, %v", code, ok)
	}

	// A binary that does not exist: never ran, ENOENT.
	missing, err := qm.New("/nonexistent/qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	defer missing.Close()
	err = missing.Launch(ctx)
	if !errors.As(err, &le) {
		t.Fatalf("Launch of a missing binary = %v (%T)", err, err)
	}
	if le.Exited {
		t.Fatalf("a missing binary exited with %d", le.ExitCode)
	}
	mustErr(t, "missing binary", err, qm.ErrLaunch, qm.ErrIO, fs.ErrNotExist, syscall.ENOENT)
	var e *qm.Error
	if !errors.As(le.Cause, &e) || e.Status != qm.StatusIO || e.Errno != syscall.ENOENT {
		t.Fatalf("Cause = %#v", le.Cause)
	}
}

func TestMonitorAddresses(t *testing.T) {
	ctx := ctxT(t)
	sockPath := filepath.Join(t.TempDir(), "mon.sock")
	for name, opts := range map[string][]qm.Option{
		"socketpair":   {qm.WithMonitorSocketpair()},
		"unix default": {qm.WithMonitorUnix("")},
		"unix path":    {qm.WithMonitorUnix(sockPath)},
		"tcp":          {qm.WithMonitorTCP("127.0.0.1", 0)},
	} {
		t.Run(name, func(t *testing.T) {
			m := launched(t, opts...)
			var st struct{ Status string }
			if err := m.CmdInto(ctx, "query-status", nil, &st); err != nil || st.Status != "running" {
				t.Fatalf("query-status = %+v, %v", st, err)
			}
			if err := m.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if code, _ := m.ExitCode(); code != 0 {
				t.Fatalf("exit code %d", code)
			}
		})
	}
	if _, err := os.Stat(sockPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("monitor socket left behind: %v", err)
	}
}

func TestWithoutQMP(t *testing.T) {
	ctx := ctxT(t)
	m := launched(t, qm.WithQMP(false))
	_, err := m.Cmd(ctx, "query-status", nil)
	mustErr(t, "Cmd without QMP", err, qm.ErrState)
	if err := m.Shutdown(ctx); err != nil { // SIGTERM
		t.Fatalf("Shutdown: %v", err)
	}
	if m.Running() {
		t.Fatal("still running")
	}
}

func TestWrapper(t *testing.T) {
	ctx := ctxT(t)
	m := launched(t, qm.WithWrapper("env", "QM_GO_WRAPPED=1"))
	if cl := m.CommandLine(); len(cl) < 3 || cl[0] != "env" || cl[1] != "QM_GO_WRAPPED=1" || cl[2] != qemu {
		t.Fatalf("CommandLine = %q", cl)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", m.PID()))
	if err != nil || !strings.Contains(string(env), "QM_GO_WRAPPED=1") {
		t.Fatalf("QEMU's environment lacks the wrapper's variable (%v)", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestMaxMessageSize(t *testing.T) {
	ctx := ctxT(t)
	m := launched(t, qm.WithMaxMessageSize(4096))
	_, err := m.Cmd(ctx, "query-qmp-schema", nil)
	mustErr(t, "query-qmp-schema over the cap", err, qm.ErrProtocol)
	// The connection is gone for good (the error is sticky).
	_, err = m.Cmd(ctx, "query-status", nil)
	mustErr(t, "Cmd after a protocol error", err, qm.ErrProtocol)
	// So the shutdown cannot say quit: QEMU is killed, but nothing is left behind.
	pid := m.PID()
	mustErr(t, "Shutdown after a protocol error", m.Shutdown(ctx), qm.ErrAbnormalShutdown)
	if alive(pid) || m.Running() {
		t.Fatal("QEMU still runs")
	}
}

func TestLaunchAll(t *testing.T) {
	ctx := ctxT(t)
	ms := []*qm.Machine{
		newMachine(t, qm.WithMachineType("none")),
		newMachine(t, qm.WithMachineType("none"), qm.WithArgs("-no-such-option-for-batch")),
		newMachine(t, qm.WithMachineType("none")),
	}
	errs := qm.LaunchAll(ctx, ms[0], ms[1], ms[2], ms[0])
	if len(errs) != 4 {
		t.Fatalf("LaunchAll returned %d errors, want 4", len(errs))
	}
	for _, i := range []int{0, 2} {
		if errs[i] != nil {
			t.Fatalf("machine %d: %v", i, errs[i])
		}
		if _, err := ms[i].Cmd(ctx, "query-status", nil); err != nil {
			t.Fatalf("machine %d query-status: %v", i, err)
		}
	}
	// The bad one fails alone, with its own launch error.
	var le *qm.LaunchError
	if !errors.As(errs[1], &le) || le.ExitCode != 1 || !strings.Contains(le.Output, "no-such-option-for-batch") {
		t.Fatalf("machine 1: %v (%T)", errs[1], errs[1])
	}
	if ms[1].Running() {
		t.Fatal("the failed machine runs")
	}
	// The same machine twice: launched once.
	mustErr(t, "machine 0 again", errs[3], qm.ErrInvalid)
	// Launched already: ErrState, each.
	for i, err := range qm.LaunchAll(ctx, ms[0], ms[2]) {
		mustErr(t, fmt.Sprintf("relaunch %d", i), err, qm.ErrState)
	}
	// A cancelled context launches nothing.
	fresh := newMachine(t, qm.WithMachineType("none"))
	done, cancel := context.WithCancel(ctx)
	cancel()
	for _, err := range qm.LaunchAll(done, fresh) {
		mustErr(t, "cancelled", err, qm.ErrInterrupted, context.Canceled)
	}
	if fresh.Running() {
		t.Fatal("a cancelled batch launched a machine")
	}
	for _, i := range []int{0, 2} {
		if err := ms[i].Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown %d: %v", i, err)
		}
	}
}
