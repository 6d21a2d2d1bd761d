"""`Cancel`: a cancellation token (`qm_cancel`)."""

from __future__ import annotations

from typing import Any, Optional

from . import _ffi

_lib = _ffi.lib


class Cancel:
    """A cancellation token: `fire()` from any thread interrupts every call given this token
    (they raise `qm.Interrupted`), now and later. For `shutdown` and `wait` a fired token means
    "do not wait: kill QEMU". Make a new token to start over."""

    __slots__ = ("_ptr", "__weakref__")

    def __init__(self) -> None:
        ptr = _lib.qm_cancel_new()
        if not ptr:
            raise MemoryError("qm_cancel_new failed")
        self._ptr = ptr

    def fire(self) -> None:
        """Fires the token (thread-safe, never blocks; firing twice is harmless)."""
        _lib.qm_cancel_fire(self._ptr)

    @property
    def fired(self) -> bool:
        """True once the token has fired."""
        return bool(_lib.qm_cancel_is_fired(self._ptr))

    def __del__(self) -> None:
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr and _lib is not None:
            _lib.qm_cancel_free(ptr)


def _cancel_ptr(cancel: Optional[Cancel]) -> Any:
    if cancel is None:
        return None
    if not isinstance(cancel, Cancel):
        raise TypeError(f"cancel must be a qm.Cancel, not {type(cancel).__name__}")
    return cancel._ptr
