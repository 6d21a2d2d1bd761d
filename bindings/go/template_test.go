package qm_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// The Linux guest as a template: prepared once (a second Prepare finds it), four clones at once
// from goroutines, each with the template's tmpfs file and its own writes; SaveState and
// RestoreState by hand; a restore with other arguments refused before launching.
func TestTemplateClonesAndSaveRestore(t *testing.T) {
	args := linuxGuestArgs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	tpl, err := qm.NewTemplate(qemu, dir, qm.TemplateArgs(args...), qm.TemplateConsole(), qm.TemplateGuestAgent())
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	defer tpl.Close() // twice is fine
	booted, err := tpl.Prepare(ctx, qm.ReadyAgent)
	if err != nil || !booted {
		t.Fatalf("Prepare: %v %v", booted, err)
	}
	if booted, err = tpl.Prepare(ctx, qm.ReadyAgent); err != nil || booted {
		t.Fatalf("second Prepare booted again: %v %v", booted, err)
	}
	if saved, err := tpl.IsSaved(); err != nil || !saved {
		t.Fatalf("IsSaved: %v %v", saved, err)
	}

	var wg sync.WaitGroup
	clones := make([]*qm.Machine, 4)
	errs := make([]error, 4)
	for i := range clones {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			clones[i], errs[i] = tpl.Clone(ctx)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		defer clones[i].Close()
	}
	if err := clones[0].Agent().WriteFile(ctx, "/tmp/mine", []byte("0")); err != nil {
		t.Fatal(err)
	}
	if _, err := clones[1].Agent().ReadFile(ctx, "/tmp/mine", 100); err == nil {
		t.Fatal("clone 1 sees clone 0's file")
	}
	got, err := clones[0].Agent().ReadFile(ctx, "/tmp/mine", 100)
	if err != nil || string(got) != "0" {
		t.Fatalf("ReadFile: %q %v", got, err)
	}

	// Save a clone, restore it into a new machine.
	state := filepath.Join(dir, "vm.state")
	info, err := clones[0].SaveState(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	var fields struct {
		StreamBytes int64 `json:"stream_bytes"`
	}
	if err := json.Unmarshal(info, &fields); err != nil || fields.StreamBytes <= 0 {
		t.Fatalf("SaveState info %s: %v", info, err)
	}
	vm := newMachine(t, qm.WithArgs(args...), qm.WithConsole("", 0), qm.WithGuestAgent())
	if err := vm.RestoreState(ctx, state, qm.ReadyAgent); err != nil {
		t.Fatal(err)
	}
	if got, err := vm.Agent().ReadFile(ctx, "/tmp/mine", 100); err != nil || string(got) != "0" {
		t.Fatalf("after restore: %q %v", got, err)
	}
	other := newMachine(t, qm.WithArgs(args...), qm.WithConsole("", 0))
	err = other.RestoreState(ctx, state, qm.ReadyRunning)
	if !errors.Is(err, qm.ErrInvalid) {
		t.Fatalf("a restore without the agent channel: %v", err)
	}
	if other.Running() {
		t.Fatal("a refused restore launched QEMU")
	}
}
