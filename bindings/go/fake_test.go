package qm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// HotplugDisk adds a qcow2 disk to a running machine: blockdev-add, then device_add. When
// QEMU refuses the device, the block node is removed again and the error says which step
// failed. (The README's worked example of testing code with the fake QEMU.)
func HotplugDisk(ctx context.Context, m *qm.Machine, id, file string) error {
	node := id + "-node"
	_, err := m.Cmd(ctx, "blockdev-add", map[string]any{
		"driver": "qcow2", "node-name": node,
		"file": map[string]any{"driver": "file", "filename": file},
	})
	if err != nil {
		return fmt.Errorf("adding the block node of %s: %w", id, err)
	}
	_, err = m.Cmd(ctx, "device_add", map[string]any{
		"driver": "virtio-blk-pci", "id": id, "drive": node,
	})
	if err != nil {
		if _, delErr := m.Cmd(ctx, "blockdev-del", map[string]any{"node-name": node}); delErr != nil {
			return errors.Join(fmt.Errorf("plugging %s: %w", id, err), delErr)
		}
		return fmt.Errorf("plugging %s: %w", id, err)
	}
	return nil
}

// The script: QEMU takes the block node, refuses the device, and HotplugDisk must remove the
// node again.
const hotplugScript = `{"qm-fake":1,"idle":30}
{"dir":"out","msg":{"execute":"blockdev-add","arguments":{"node-name":"disk1-node"}},"match":"subset"}
{"dir":"in","msg":{"return":{}}}
{"dir":"out","msg":{"execute":"device_add","arguments":{"id":"disk1"}},"match":"subset"}
{"dir":"in","msg":{"error":{"class":"GenericError","desc":"Bus 'pci.0' does not support hotplugging"}}}
{"dir":"out","msg":{"execute":"blockdev-del","arguments":{"node-name":"disk1-node"}}}
{"dir":"in","msg":{"return":{}}}
`

func TestFakeHotplugDiskHandlesDeviceAddError(t *testing.T) {
	fake, err := qm.FakeQEMUPath()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "hotplug.jsonl")
	if err := os.WriteFile(script, []byte(hotplugScript), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := qm.New(fake, qm.WithArgs("-qm-fake-script", script))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Launch(ctx); err != nil {
		t.Fatal(err)
	}

	err = HotplugDisk(ctx, m, "disk1", "/images/disk1.qcow2")
	var qerr *qm.QMPError
	if !errors.As(err, &qerr) || qerr.Class != "GenericError" || !strings.HasPrefix(err.Error(), "plugging disk1:") {
		t.Fatalf("HotplugDisk: %v", err)
	}

	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The fake's verdict: 0 when the program did exactly what the script expects.
	if code, ok := m.ExitCode(); !ok || code != 0 {
		log, _ := m.Log()
		t.Fatalf("fake exit status %d:\n%s", code, log)
	}
}

func TestFakeReportsWhatTheScriptDidNotExpect(t *testing.T) {
	fake, err := qm.FakeQEMUPath()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "hotplug.jsonl")
	if err := os.WriteFile(script, []byte(hotplugScript), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := qm.New(fake, qm.WithArgs("-qm-fake-script", script))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	// A program that forgot the block node: its device_add is not what line 2 expects.
	_, err = m.Cmd(ctx, "device_add", map[string]any{"driver": "virtio-blk-pci", "id": "disk1"})
	var qerr *qm.QMPError
	if !errors.As(err, &qerr) || !strings.Contains(qerr.Desc, "script line 2") {
		t.Fatalf("device_add: %v", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	code, _ := m.ExitCode()
	log, _ := m.Log()
	if code != 3 || !strings.Contains(log, "never happened") {
		t.Fatalf("exit status %d, log:\n%s", code, log)
	}
}
