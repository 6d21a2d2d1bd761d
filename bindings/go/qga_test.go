package qm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// linuxGuestArgs returns QEMU's arguments for the Linux test guest (guest/linux), or skips
// the test saying why there is none: QM_LINUX_KERNEL and QM_LINUX_INITRD, or the repository's
// guest/linux/build.
func linuxGuestArgs(t *testing.T) []string {
	t.Helper()
	kernel, initrd := os.Getenv("QM_LINUX_KERNEL"), os.Getenv("QM_LINUX_INITRD")
	if kernel != "" && initrd != "" {
		args, err := qm.LinuxGuestQEMUArgs(kernel, initrd)
		if err != nil {
			t.Fatalf("LinuxGuestQEMUArgs: %v", err)
		}
		return args
	}
	build, _ := filepath.Abs("../../guest/linux/build")
	if _, err := os.Stat(build); err != nil {
		t.Skipf("no Linux guest: set QM_LINUX_KERNEL and QM_LINUX_INITRD, or provide %s", build)
	}
	out, err := exec.Command(build, "--qemu-args").Output()
	if err != nil {
		t.Fatalf("%s --qemu-args: %v", build, err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// A machine whose guest never starts an agent: Sync ends with the context, as a timeout or as
// an interruption, promptly.
func TestAgentWithoutAgentTimesOutAndCancels(t *testing.T) {
	m, err := qm.New(qemu, qm.WithArgs("-nodefaults", "-machine", "q35", "-accel", "tcg"), qm.WithGuestAgent())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ga := m.Agent()
	if err := ga.Ping(context.Background()); !errors.Is(err, qm.ErrState) {
		t.Fatalf("Ping before launch: %v, want ErrState", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	if err := m.Launch(ctx); err != nil {
		t.Fatal(err)
	}

	short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancelShort()
	err = ga.Sync(short)
	if !errors.Is(err, qm.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync: %v, want ErrTimeout and DeadlineExceeded", err)
	}

	cctx, cancelNow := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ga.Sync(cctx) }()
	time.Sleep(200 * time.Millisecond)
	cancelNow()
	select {
	case err := <-done:
		if !errors.Is(err, qm.ErrInterrupted) || !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Sync: %v", err)
		}
	case <-time.After(cancelBound):
		t.Fatalf("Sync did not return within %v of the cancel", cancelBound)
	}

	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ga.Ping(ctx); !errors.Is(err, qm.ErrState) {
		t.Fatalf("Ping after shutdown: %v, want ErrState", err)
	}
}

func TestAgentInTheLinuxGuest(t *testing.T) {
	args := linuxGuestArgs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, err := qm.New(qemu, qm.WithArgs(args...), qm.WithGuestAgentUnix(""))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	ga := m.Agent()
	if err := ga.Sync(ctx); err != nil { // while the guest boots
		t.Fatal(err)
	}
	if err := ga.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	var info struct {
		ID            string `json:"id"`
		KernelRelease string `json:"kernel-release"`
	}
	raw, err := ga.OSInfo(ctx)
	if err == nil {
		err = json.Unmarshal(raw, &info)
	}
	if err != nil || info.ID != "qm-guest" {
		t.Fatalf("OSInfo: %s, %v", raw, err)
	}
	res, err := ga.Exec(ctx, qm.ExecRequest{Path: "uname", Args: []string{"-r"}})
	if err != nil || !res.Exited || res.ExitCode != 0 || strings.TrimSpace(string(res.Stdout)) != info.KernelRelease {
		t.Fatalf("uname -r: %+v, %v (want %q)", res, err, info.KernelRelease)
	}
	res, err = ga.Exec(ctx, qm.ExecRequest{Path: "sh", Args: []string{"-c", "cat; echo err >&2; exit 3"},
		Input: []byte("from stdin\n")})
	if err != nil || res.ExitCode != 3 || string(res.Stdout) != "from stdin\n" || string(res.Stderr) != "err\n" {
		t.Fatalf("exit 3: %+v, %v", res, err)
	}
	res, err = ga.Exec(ctx, qm.ExecRequest{Path: "head", Args: []string{"-c", "100000", "/dev/zero"}, MaxOutput: 1000})
	if err != nil || len(res.Stdout) != 1000 || !res.StdoutTruncated {
		t.Fatalf("capped: %d bytes, truncated %v, %v", len(res.Stdout), res.StdoutTruncated, err)
	}

	data := bytes.Repeat([]byte("qm\x00\xff"), 300000)
	if err := ga.WriteFile(ctx, "/tmp/go-file", data); err != nil {
		t.Fatal(err)
	}
	back, err := ga.ReadFile(ctx, "/tmp/go-file", len(data))
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("ReadFile: %d bytes, %v", len(back), err)
	}
	if _, err := ga.ReadFile(ctx, "/tmp/go-file", len(data)-1); !errors.Is(err, qm.ErrInvalid) {
		t.Fatalf("ReadFile over the cap: %v", err)
	}
	_, err = ga.ReadFile(ctx, "/no/such/file", 10)
	var qe *qm.QMPError
	if !errors.As(err, &qe) || qe.Class != "GenericError" {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := ga.Cmd(ctx, "guest-no-such", nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("unknown command: %v", err)
	}
	if gt, err := ga.Time(ctx); err != nil || gt.Year() < 2020 {
		t.Fatalf("Time: %v, %v", gt, err)
	}

	// A long program: cancelling the context returns at once (the program runs on).
	cctx, cancelNow := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := ga.Exec(cctx, qm.ExecRequest{Path: "sleep", Args: []string{"30"}})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	cancelNow()
	select {
	case err := <-done:
		if !errors.Is(err, qm.ErrInterrupted) || !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Exec: %v", err)
		}
	case <-time.After(cancelBound):
		t.Fatalf("Exec did not return within %v of the cancel", cancelBound)
	}
	// The channel is still good afterwards.
	if err := ga.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	if err := ga.Shutdown(ctx, "powerdown"); err != nil {
		t.Fatal(err)
	}
	ev, err := m.EventWait(ctx, qm.EventFilter{Name: "SHUTDOWN"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ev.Data), "guest-shutdown") {
		t.Fatalf("SHUTDOWN: %s", ev.Data)
	}
	if err := m.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}
