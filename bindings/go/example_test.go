package qm_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

// The whole lifecycle: launch QEMU, run commands, wait for an event, shut down.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	m, err := qm.New("qemu-system-x86_64", qm.WithMachineType("none"))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close() // shuts QEMU down if something below failed

	if err := m.Launch(ctx); err != nil {
		var le *qm.LaunchError
		if errors.As(err, &le) {
			log.Fatalf("QEMU failed: %v\ncommand: %s\noutput: %s", err, le.Command, le.Output)
		}
		log.Fatal(err)
	}

	// A command's return value, unmarshalled into a struct.
	var status struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := m.CmdInto(ctx, "query-status", nil, &status); err != nil {
		log.Fatal(err)
	}
	fmt.Println("status:", status.Status, status.Running)

	// A QMP error response is a *qm.QMPError.
	_, err = m.Cmd(ctx, "no-such-command", nil)
	var qe *qm.QMPError
	if errors.As(err, &qe) {
		fmt.Println("QMP error:", qe.Class)
	}

	// Pause the VM and wait (at most 10 s) for the STOP event it causes.
	if _, err := m.Cmd(ctx, "stop", nil); err != nil {
		log.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	ev, err := m.EventWait(wctx, qm.EventFilter{Name: "STOP"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("event:", ev.Name)

	// quit, then wait for QEMU to exit (killed if it does not before ctx's deadline).
	if err := m.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	code, _ := m.ExitCode()
	fmt.Println("exit code:", code)
	// Output:
	// status: running true
	// QMP error: CommandNotFound
	// event: STOP
	// exit code: 0
}
