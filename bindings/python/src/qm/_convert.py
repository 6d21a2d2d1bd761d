"""Conversions between Python values and the C API's: strings, JSON, descriptors, and
seconds to `timeout_ms` (the rule itself is the core's: `qm_timeout_ms`). No policy."""

from __future__ import annotations

import ctypes
import functools
import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from . import _ffi
from . import errors as _errors

_lib = _ffi.lib


class _Default:
    """The `timeout` default that means "the core's own default" (`QM_WAIT_DEFAULT`)."""

    def __repr__(self) -> str:
        return "DEFAULT"


#: The core's default bound in seconds (`qm_default_timeout_ms`: 30 s): what DEFAULT means
#: for shutdown, wait and agent calls, and the QMP timer's initial value.
DEFAULT_TIMEOUT: float = _lib.qm_default_timeout_ms() / 1000.0

#: Passed as a timeout: use the core's default (the QMP timer for commands, 30 s for a shutdown).
DEFAULT: Any = _Default()

Timeout = Union[float, int, None, _Default]
JSON = Any

MonitorSpec = Union[None, str, Tuple[str, int]]


def _bytes(value: Any, what: str) -> bytes:
    """A str (or os.PathLike) as NUL-free UTF-8 for C, or a TypeError/ValueError saying why."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{what} is not valid UTF-8: {exc}") from None
    else:
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if b"\0" in raw:
        raise ValueError(f"{what} contains a NUL character")
    return raw


def _opt_bytes(value: Any, what: str) -> Optional[bytes]:
    return None if value is None else _bytes(value, what)


def _ms(timeout: Timeout, what: str = "timeout", allow_default: bool = True) -> int:
    """Seconds (float) to the C `timeout_ms`: None waits forever, DEFAULT is the core's."""
    if timeout is None:
        return _ffi.QM_WAIT_FOREVER
    if isinstance(timeout, _Default):
        if not allow_default:
            raise ValueError(f"{what}: this call has no default timeout; give seconds or None")
        return _ffi.QM_WAIT_DEFAULT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be seconds (a number) or None, not {type(timeout).__name__}")
    if timeout != timeout or timeout < 0:  # NaN or negative
        raise ValueError(f"{what} must be >= 0 seconds or None, not {timeout!r}")
    return seconds_to_ms(timeout)


def seconds_to_ms(seconds: float) -> int:
    """Seconds (>= 0, finite or inf) to milliseconds by the core's one rule
    (`qm_timeout_ms_from_seconds`: rounded up, so 0.0004 s is 1 ms, not 0; inf is
    QM_WAIT_FOREVER)."""
    return _seconds_to_ms(float(seconds))


# The core's answer for a number of seconds never changes: a program passes the same few
# timeouts over and over (`event_wait(..., timeout=10)` on every event), so each is asked once
# rather than paying a C call per wait (issue #20).
@functools.lru_cache(maxsize=256)
def _seconds_to_ms(seconds: float) -> int:
    ms = ctypes.c_int64(0)
    err = _ffi.ErrorP()
    _check(
        _lib.qm_timeout_ms_from_seconds(float(seconds), ctypes.byref(ms), ctypes.byref(err)), err
    )
    return ms.value


def conv_keys(args: Mapping[str, Any]) -> Dict[str, Any]:
    """The harness's keyword convention, decided by the core (`qm_conv_keys`): `_` in
    top-level keys becomes `-`."""
    if not args:
        return {}  # no key to convert: the common `vm.cmd("stop")` pays no C call
    raw = _json_arg(dict(args), "arguments")
    out = ctypes.c_void_p()
    err = _ffi.ErrorP()
    _check(_lib.qm_conv_keys(raw, ctypes.byref(out), ctypes.byref(err)), err)
    text = _ffi.take_string(out.value)
    converted = json.loads(text) if text is not None else {}
    assert isinstance(converted, dict)
    return converted


def _json_arg(value: Any, what: str) -> Optional[bytes]:
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None


def _check(
    status: int, err: Any, command: str = "", arguments: Optional[Dict[str, Any]] = None
) -> None:
    if status != _ffi.QM_OK:
        raise _errors.from_c(status, err, command, arguments)


def _send_bytes(data: Any, what: str) -> bytes:
    """Bytes to send: bytes-like as is, a str as UTF-8."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or a str, not {type(data).__name__}")


def _fd(fd: Any) -> int:
    if hasattr(fd, "fileno") and not isinstance(fd, int):
        fd = fd.fileno()
    if isinstance(fd, bool) or not isinstance(fd, int):
        raise TypeError(f"a file descriptor must be an int, not {type(fd).__name__}")
    if not 0 <= fd < 2**31:
        raise ValueError(f"{fd} is not a valid file descriptor")
    return fd


def _args_dict(args: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The arguments to send: None for none. An empty dict is none too (as QEMU's own client
    does): QEMU takes some 60 us longer over a command with `"arguments": {}`."""
    if args is None:
        return None
    if not isinstance(args, Mapping):
        raise TypeError(f"QMP arguments must be a dict, not {type(args).__name__}")
    return dict(args) if args else None
