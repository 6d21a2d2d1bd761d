package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

// FakeQEMUPath returns where the fake QEMU (qm-fake-qemu) is, to give New in place of
// qemu-system-*: $QM_FAKE_QEMU when set; else qm-fake-qemu beside the qm library, in its
// parent directory or in ../bin from it (where `make install` puts it); else the bare name,
// looked up in PATH at launch. Run it on a script with WithArgs("-qm-fake-script", path); the
// README's "Testing without QEMU" documents the script format.
func FakeQEMUPath() (string, error) {
	var out *C.char
	var cerr *C.qm_error
	if err := takeError(C.qm_fake_qemu_path(&out, &cerr), cerr); err != nil {
		return "", err
	}
	defer C.qm_string_free(out)
	return C.GoString(out), nil
}
