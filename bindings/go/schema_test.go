package qm_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	qm "github.com/qm-project/qm/bindings/go"
)

func TestSchemaQueriesAndGreeting(t *testing.T) {
	m := launched(t)
	g, err := m.Greeting()
	if err != nil || g.Version.Major < 7 || len(g.Capabilities) == 0 || g.Capabilities[0] != "oob" {
		t.Fatalf("Greeting: %+v, %v", g, err)
	}
	s, err := m.Schema(ctxT(t))
	if err != nil {
		t.Fatalf("Schema: %v", err)
	}
	defer s.Close()
	if !s.HasCommand("blockdev-add") || s.HasCommand("blockdev-addd") || !s.HasEvent("SHUTDOWN") {
		t.Error("HasCommand / HasEvent")
	}
	for path, want := range map[string]bool{
		"blockdev-add/arg-type/+file/aio/^io_uring": true,
		"blockdev-add/arg-type/+file/aio/^nope":     false,
		"drive-backup/$deprecated":                  true,
	} {
		if got, err := s.Query(path); err != nil || got != want {
			t.Errorf("Query(%q) = %v, %v; want %v", path, got, err, want)
		}
	}
	if _, err := s.Query("blockdev-add/args"); !errors.Is(err, qm.ErrInvalid) || !strings.Contains(err.Error(), "component 2") {
		t.Errorf("malformed path: %v", err)
	}
	c, err := s.Command("query-yank")
	if err != nil || c == nil || !c.AllowOOB {
		t.Errorf("Command(query-yank) = %+v, %v", c, err)
	}
	if c, err := s.Command("no-such-command"); err != nil || c != nil {
		t.Errorf("Command(no-such-command) = %+v, %v", c, err)
	}
	findings, err := s.Check("blockdev-add", map[string]any{"driver": "null-co", "node_name": "x"})
	if err != nil || len(findings) != 1 || findings[0].Path != "arguments.node_name" || findings[0].Rule != "unknown-member" {
		t.Errorf("Check: %+v, %v", findings, err)
	}
	s.Close()
	s.Close()
	if _, err := s.Query("query-status"); !errors.Is(err, qm.ErrClosed) {
		t.Errorf("Query after Close: %v", err)
	}
}

func TestStrictSchemaRefusesATypoBeforeSending(t *testing.T) {
	m := launched(t)
	if err := m.SetSchemaPolicy(qm.StrictSchema()); err != nil {
		t.Fatal(err)
	}
	if p, err := m.SchemaPolicy(); err != nil || p != qm.StrictSchema() {
		t.Errorf("SchemaPolicy() = %+v, %v", p, err)
	}
	_, err := m.Cmd(ctxT(t), "blockdev-add", map[string]any{"driver": "null-co", "node_name": "n0"})
	var re *qm.RefusedError
	if !errors.As(err, &re) || !errors.Is(err, qm.ErrRefused) || qm.StatusOf(err) != qm.StatusRefused {
		t.Fatalf("want a *RefusedError, got %v", err)
	}
	if re.Path != "arguments.node_name" || re.Rule != "unknown-member" || !strings.Contains(re.Message, "did you mean 'node-name'") {
		t.Errorf("%+v", re)
	}
	_, err = m.EventWait(ctxT(t), qm.EventFilter{Name: "SHUTDOWNN"})
	if !errors.As(err, &re) || re.Rule != "unknown-event" {
		t.Errorf("EventWait on an unknown event: %v", err)
	}
	if _, err := m.Cmd(ctxT(t), "blockdev-add", map[string]any{"driver": "null-co", "node-name": "n0"}); err != nil {
		t.Errorf("a correct command: %v", err)
	}
	if err := m.SetSchemaPolicy(qm.SchemaPolicy{Checks: 9}); !errors.Is(err, qm.ErrInvalid) {
		t.Errorf("level 9: %v", err)
	}
}

// The README's Go example (section "QMP schema"), as written there.
func ExampleMachine_SetSchemaPolicy() {
	ctx := context.Background()
	m, err := qm.New("qemu-system-x86_64", qm.WithMachineType("none"))
	if err != nil {
		panic(err)
	}
	defer m.Close()
	m.SetSchemaPolicy(qm.StrictSchema())
	if err := m.Launch(ctx); err != nil {
		panic(err)
	}
	_, err = m.Cmd(ctx, "blockdev-add", map[string]any{"driver": "null-co", "node_name": "disk0"})
	var re *qm.RefusedError
	if errors.As(err, &re) {
		fmt.Println(re.Path, re.Rule) // arguments.node_name unknown-member
	}
	// Output: arguments.node_name unknown-member
}

func TestQMPOOB(t *testing.T) {
	m := launched(t)
	if m.QMPOOBEnabled() {
		t.Error("OOB on without SetQMPOOB")
	}
	if _, err := m.QMPOOB(ctxT(t), "query-yank", nil); !errors.Is(err, qm.ErrState) {
		t.Errorf("QMPOOB without OOB: %v", err)
	}
	o := newMachine(t, qm.WithMachineType("none"))
	if err := o.SetQMPOOB(true); err != nil {
		t.Fatal(err)
	}
	if err := o.Launch(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if !o.QMPOOBEnabled() {
		t.Fatal("OOB not negotiated")
	}
	raw, err := o.QMPOOB(ctxT(t), "query-yank", nil)
	if err != nil || !strings.Contains(string(raw), `"return":[`) {
		t.Errorf("QMPOOB(query-yank) = %s, %v", raw, err)
	}
}
