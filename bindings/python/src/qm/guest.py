"""The 512-byte test guest (qm's boot sector): boot a real guest without a disk image."""

from __future__ import annotations

import json
from ctypes import byref, c_void_p
from typing import List

from . import _ffi
from ._convert import _bytes, _check

POWEROFF = _ffi.QM_GUEST_POWEROFF
ECHO = _ffi.QM_GUEST_ECHO
EXIT = _ffi.QM_GUEST_EXIT
HALT = _ffi.QM_GUEST_HALT


def write_image(path: str, banner: str, action: int = POWEROFF, exit_value: int = 0) -> None:
    """Writes the guest's 512-byte raw image to `path`: it prints `banner` + CRLF on its first
    serial port, then does `action` (POWEROFF, ECHO, EXIT with `exit_value`, HALT)."""
    if not 0 <= exit_value <= 255:
        raise ValueError(f"exit_value must be 0..255, not {exit_value}")
    err = _ffi.ErrorP()
    _check(
        _ffi.lib.qm_guest_write_image(
            _bytes(path, "path"), _bytes(banner, "banner"), int(action), exit_value, byref(err)
        ),
        err,
    )


def qemu_args(image_path: str) -> List[str]:
    """The QEMU arguments (after the binary) that boot an image from `write_image`; add a
    console to see it."""
    out = c_void_p()
    err = _ffi.ErrorP()
    _check(
        _ffi.lib.qm_guest_qemu_args(_bytes(image_path, "image_path"), byref(out), byref(err)), err
    )
    return list(json.loads(_ffi.take_string(out.value) or "[]"))


def exit_status(value: int) -> int:
    """QEMU's exit status when the guest exits through isa-debug-exit with `value`."""
    if not 0 <= value <= 255:
        raise ValueError(f"value must be 0..255, not {value}")
    return int(_ffi.lib.qm_guest_exit_status(value))
