package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"context"
	"unsafe"
)

// Attach connects the machine to a QEMU someone else started, instead of launching one: to its
// QMP monitor at qmpAddress ("unix:PATH", "tcp:HOST:PORT" or a bare path; QEMU listening with
// e.g. -qmp unix:PATH,server=on,wait=off) and, when agentPath is not "", to its guest agent's
// chardev (a unix socket). It blocks until QMP is negotiated, until ctx's deadline, or the QMP
// timer when ctx has none.
//
// Then commands, events, waits and Agent work as on a launched machine; there is no PID, exit
// code, console or QEMU log. qm never kills or reaps a QEMU it did not start: Shutdown, Kill,
// Wait and Close detach, leaving QEMU running. To stop it, run "quit" yourself; a Shutdown
// after it waits for QEMU to close the monitor. Running reports whether the QMP connection is
// up.
//
// QEMU serves one monitor client at a time: while another is connected the call fails with
// ErrTimeout. It fails with ErrState when the machine is launched or attached.
func (m *Machine) Attach(ctx context.Context, qmpAddress, agentPath string) error {
	ca, err := cstring("qmpAddress", qmpAddress)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(ca))
	var cg *C.char
	if agentPath != "" {
		if cg, err = cstring("agentPath", agentPath); err != nil {
			return err
		}
		defer C.free(unsafe.Pointer(cg))
	}
	return m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return C.qm_attach(h, ca, cg, w.timeout, w.tok, cerr)
	})
}

// Attached reports whether the machine is attached (see Attach) and not yet detached.
func (m *Machine) Attached() bool {
	var r bool
	m.use(func(h *C.qm_machine) error {
		r = bool(C.qm_is_attached(h))
		return nil
	})
	return r
}

// Attach is New followed by Machine.Attach: a machine attached to the QEMU whose monitor
// listens at qmpAddress (and whose agent's chardev is at agentPath, unless ""). opts configure
// what applies to an attached machine (e.g. WithQMPTranscript). Close detaches.
func Attach(ctx context.Context, qmpAddress, agentPath string, opts ...Option) (*Machine, error) {
	// The binary is never run: an attached machine starts nothing.
	m, err := New("qemu", opts...)
	if err != nil {
		return nil, err
	}
	if err := m.Attach(ctx, qmpAddress, agentPath); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}
