"""The fake QEMU (`qm-fake-qemu`): where it is, for tests of code that drives QEMU."""

from __future__ import annotations

from ctypes import byref, c_void_p

from . import _ffi
from . import errors as _errors


def fake_qemu_path() -> str:
    """Where the fake QEMU is, to give `qm.Machine` in place of `qemu-system-*`.

    `$QM_FAKE_QEMU` when set; else `qm-fake-qemu` beside the loaded libqm (the wheel bundles
    it there), in its parent directory or in `../bin` from it (where `make install` puts it);
    else the bare name, looked up in `PATH` at launch. Run it on a script with
    `args=["-qm-fake-script", path]`; the README's "Testing without QEMU" documents the
    script format and the fake's exit statuses.
    """
    out = c_void_p()
    err = _ffi.ErrorP()
    status = _ffi.lib.qm_fake_qemu_path(byref(out), byref(err))
    if status != _ffi.QM_OK:
        raise _errors.from_c(status, err, "", None)
    path = _ffi.take_string(out.value)
    assert path is not None
    return path
