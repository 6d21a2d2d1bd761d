package qm_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// linuxGuestCoreArgs are the Linux guest's arguments from the core helper (the one list every
// language uses): found by qm through QM_LINUX_KERNEL/QM_LINUX_INITRD, else from the paths
// guest/linux/build prints.
func linuxGuestCoreArgs(t *testing.T) []string {
	t.Helper()
	kernel, initrd := "", ""
	if os.Getenv("QM_LINUX_KERNEL") == "" || os.Getenv("QM_LINUX_INITRD") == "" {
		build, _ := filepath.Abs("../../guest/linux/build")
		if _, err := os.Stat(build); err != nil {
			t.Skipf("no Linux guest: set QM_LINUX_KERNEL and QM_LINUX_INITRD, or provide %s", build)
		}
		out, err := exec.Command(build, "--print-paths").Output()
		if err != nil {
			t.Fatalf("%s --print-paths: %v", build, err)
		}
		if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "KERNEL=%s INITRD=%s", &kernel, &initrd); err != nil {
			t.Fatalf("%s --print-paths printed %q: %v", build, out, err)
		}
	}
	args, err := qm.LinuxGuestQEMUArgs(kernel, initrd)
	if err != nil {
		t.Fatal(err)
	}
	return args
}

// The same script over the console and the agent of one Linux guest.
func TestGuestRunOverBothChannels(t *testing.T) {
	args := linuxGuestCoreArgs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m := newMachine(t, qm.WithArgs(args...), qm.WithConsole("", 0), qm.WithGuestAgent())
	if err := m.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []qm.Channel{qm.ChannelConsole, qm.ChannelAgent} {
		if err := m.Guest(ch).WaitReady(ctx); err != nil {
			t.Fatalf("WaitReady(%v): %v", ch, err)
		}
	}
	for _, ch := range []qm.Channel{qm.ChannelConsole, qm.ChannelAgent} {
		g := m.Guest(ch)
		for code := 0; code <= 255; code += 15 {
			cmd := fmt.Sprintf("head -c %d /dev/zero | tr '\\000' x; (exit %d)", code*31, code)
			r, err := g.Run(ctx, cmd)
			if err != nil {
				t.Fatalf("%v %q: %v", ch, cmd, err)
			}
			if r.Status != code || len(r.Stdout) != code*31 {
				t.Fatalf("%v %q: status %d, %d bytes", ch, cmd, r.Status, len(r.Stdout))
			}
		}
		r, err := g.Run(ctx, `printf 'QM-RUN-%s-E 0\n\000\377' fake; echo err >&2`)
		if err != nil {
			t.Fatal(err)
		}
		want := "QM-RUN-fake-E 0\n\x00\xff"
		if ch == qm.ChannelConsole {
			want += "err\n" // one terminal: stdout and stderr merged
			if r.Stderr != nil {
				t.Fatalf("console stderr %q", r.Stderr)
			}
		} else if string(r.Stderr) != "err\n" {
			t.Fatalf("agent stderr %q", r.Stderr)
		}
		if string(r.Stdout) != want {
			t.Fatalf("%v stdout %q, want %q", ch, r.Stdout, want)
		}
		data := []byte("a'b\\c%d\x00\xff\r\n")
		if err := g.WriteFile(ctx, "/tmp/qm-go", data); err != nil {
			t.Fatal(err)
		}
		back, err := g.ReadFile(ctx, "/tmp/qm-go", 1<<20)
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("%v ReadFile: %q, %v", ch, back, err)
		}
	}
	// A command that never ends: the context's deadline, Ctrl-C, and the next run works.
	short, stop := context.WithTimeout(ctx, 2*time.Second)
	_, err := m.Guest(qm.ChannelConsole).Run(short, "sleep 1000")
	stop()
	mustErr(t, "Run past its deadline", err, qm.ErrTimeout)
	if r, err := m.Guest(qm.ChannelConsole).Run(ctx, "echo back"); err != nil || string(r.Stdout) != "back\n" {
		t.Fatalf("Run after a timeout: %v, %v", r, err)
	}
	// The guest powering off during a run ends it at once; QEMU then ended cleanly.
	_, err = m.Guest(qm.ChannelConsole).Run(ctx, "sleep 1; poweroff -f")
	mustErr(t, "Run during poweroff", err, qm.ErrConsoleClosed)
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after poweroff: %v", err)
	}
	if code, ok := m.ExitCode(); !ok || code != 0 {
		t.Fatalf("exit code %d, %v", code, ok)
	}
}
