package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"context"
	"encoding/json"
	"unsafe"
)

// SetQMPOOB asks for out-of-band execution (the QMP "oob" capability) at later launches
// (default: off). It is enabled when QEMU's greeting offers it (QEMU 7.2 does); then QMPOOB
// runs the commands that allow it while in-band ones are pending. With OOB on, QEMU queues at
// most 8 in-band commands and drops more: keep at most 8 in flight.
func (m *Machine) SetQMPOOB(on bool) error {
	return m.set(func(h *C.qm_machine, cerr **C.qm_error) C.qm_status {
		return C.qm_set_qmp_oob(h, C.bool(on), cerr)
	})
}

// QMPOOBEnabled reports whether the current connection negotiated out-of-band execution.
func (m *Machine) QMPOOBEnabled() bool {
	on := false
	_ = m.use(func(h *C.qm_machine) error {
		on = bool(C.qm_qmp_oob_enabled(h))
		return nil
	})
	return on
}

// QMPOOB runs cmd out-of-band ("exec-oob") with args and returns QEMU's whole response, as
// QMP does; QEMU may answer it while in-band commands sent earlier are still running. It fails
// with ErrState when OOB was not negotiated (SetQMPOOB before Launch) and, once the schema is
// loaded, with ErrInvalid for a command that does not allow OOB; nothing is sent then.
func (m *Machine) QMPOOB(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	ccmd, err := cstring("cmd", cmd)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(ccmd))
	cargs, err := jsonArg("args", args)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cargs))
	var res *C.char
	err = m.call(ctx, C.QM_WAIT_DEFAULT, false, func(h *C.qm_machine, w *waiter, cerr **C.qm_error) C.qm_status {
		return C.qm_qmp_oob(h, ccmd, cargs, w.timeout, w.tok, &res, cerr)
	})
	if err != nil {
		return nil, err
	}
	return takeBytes(res), nil
}
