package qm

// #include <stdlib.h>
// #include <qm.h>
import "C"

import (
	"encoding/json"
	"unsafe"
)

// Version returns the version of the qm library, e.g. "0.2.0".
func Version() string {
	return C.GoString(C.qm_version())
}

// LogLevel is how much the library writes to stderr (SetLogLevel).
type LogLevel int

// The log levels.
const (
	LogOff   LogLevel = C.QM_LOG_OFF   // log nothing
	LogWarn  LogLevel = C.QM_LOG_WARN  // warnings only (the default, unless QM_LOG says otherwise)
	LogDebug LogLevel = C.QM_LOG_DEBUG // every lifecycle step and every QMP message
)

// SetLogLevel sets how much the library logs to stderr, for the whole process (it overrides
// the environment variable QM_LOG: off, warn, debug). An unknown level is ErrInvalid.
func SetLogLevel(level LogLevel) error {
	var cerr *C.qm_error
	return takeError(C.qm_set_log_level(C.qm_log_level(level), &cerr), cerr)
}

// GuestAction is what the test guest does after writing its banner line to the serial port.
type GuestAction int

// The test guest's actions.
const (
	// GuestPowerOff powers off through ACPI: QEMU emits a SHUTDOWN event with
	// "guest": true and exits with 0.
	GuestPowerOff GuestAction = C.QM_GUEST_POWEROFF
	// GuestEcho echoes every byte read from the serial port, except two commands (not
	// echoed): 'p' powers off (as GuestPowerOff), 'x' exits QEMU with status 3.
	GuestEcho GuestAction = C.QM_GUEST_ECHO
	// GuestExit exits QEMU at once through isa-debug-exit: QEMU's exit status is then
	// GuestExitStatus(exitValue).
	GuestExit GuestAction = C.QM_GUEST_EXIT
	// GuestHalt halts forever: a guest that never stops by itself.
	GuestHalt GuestAction = C.QM_GUEST_HALT
)

// MaxGuestBanner is the longest banner WriteGuestImage accepts, in bytes.
const MaxGuestBanner = C.QM_GUEST_MAX_BANNER

// WriteGuestImage writes the test guest's boot image (512 bytes, raw) to path, replacing any
// file there. The guest prints banner and "\r\n" on its first serial port, then does action
// (exitValue is used only by GuestExit). Boot it with GuestQEMUArgs and a console
// (WithConsole("", 0)): no disk image or kernel is needed.
func WriteGuestImage(path, banner string, action GuestAction, exitValue uint8) error {
	cp, err := cstring("path", path)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cp))
	cb, err := cstring("banner", banner)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cb))
	var cerr *C.qm_error
	return takeError(C.qm_guest_write_image(cp, cb, C.qm_guest_action(action), C.uint8_t(exitValue), &cerr), cerr)
}

// GuestQEMUArgs returns the QEMU arguments (after the binary) that boot an image written by
// WriteGuestImage: pass them to WithArgs. They select "-machine pc" with TCG.
func GuestQEMUArgs(imagePath string) ([]string, error) {
	cp, err := cstring("image_path", imagePath)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cp))
	var out *C.char
	var cerr *C.qm_error
	if err := takeError(C.qm_guest_qemu_args(cp, &out, &cerr), cerr); err != nil {
		return nil, err
	}
	var args []string
	if err := json.Unmarshal(takeBytes(out), &args); err != nil {
		return nil, &Error{Status: StatusProtocol, Message: "qm: decoding the guest's arguments: " + err.Error()}
	}
	return args, nil
}

// GuestExitStatus returns the exit status QEMU reports when the guest exits through
// isa-debug-exit with value (GuestExit): ((value << 1) | 1) & 0xff.
func GuestExitStatus(value uint8) int {
	return int(C.qm_guest_exit_status(C.uint8_t(value)))
}
