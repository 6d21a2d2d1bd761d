"""The ctypes declarations of libqm's C API (`include/qm.h`), and nothing else.

ctypes releases the GIL for the duration of every call, so a call blocked in QEMU never
stops other Python threads (one of which may fire a `Cancel`).
"""

from __future__ import annotations

import ctypes
import json
import os
from ctypes import (
    POINTER,
    c_bool,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_void_p,
)
from pathlib import Path
from typing import Any, Optional

QM_OK = 0
QM_ERR_LAUNCH = 1
QM_ERR_QMP = 2
QM_ERR_TIMEOUT = 3
QM_ERR_DISCONNECTED = 4
QM_ERR_INTERRUPTED = 5
QM_ERR_ABNORMAL_SHUTDOWN = 6
QM_ERR_STATE = 7
QM_ERR_INVALID = 8
QM_ERR_PROTOCOL = 9
QM_ERR_IO = 10
QM_ERR_PANIC = 11
QM_ERR_EVENTS_DROPPED = 12
QM_ERR_CONSOLE_CLOSED = 13
QM_ERR_CONSOLE_FAILURE = 14
QM_ERR_REFUSED = 15

QM_WAIT_FOREVER = -1
QM_WAIT_DEFAULT = -2
QM_EVENTS_UNLIMITED = -1

QM_LOG_OFF = 0
QM_LOG_WARN = 1
QM_LOG_DEBUG = 2

QM_GUEST_POWEROFF = 0
QM_GUEST_ECHO = 1
QM_GUEST_EXIT = 2
QM_GUEST_HALT = 3

QM_SCHEMA_OFF = 0
QM_SCHEMA_WARN = 1
QM_SCHEMA_STRICT = 2

QM_PATTERN_LITERAL = 0
QM_PATTERN_REGEX = 1

LIBRARY_ENV = "QM_LIBRARY"


class Machine(ctypes.Structure):
    """Opaque `qm_machine`."""


class Error(ctypes.Structure):
    """Opaque `qm_error`."""


class Cancel(ctypes.Structure):
    """Opaque `qm_cancel`."""


class Patterns(ctypes.Structure):
    """Opaque `qm_patterns`."""


class ConsoleMatch(ctypes.Structure):
    """Opaque `qm_console_match`."""


class ExecResult(ctypes.Structure):
    """Opaque `qm_exec_result`."""


class Schema(ctypes.Structure):
    """Opaque `qm_schema`."""


class ConsoleCounters(ctypes.Structure):
    """`qm_console_counters` (by value)."""

    _fields_ = [
        ("received", ctypes.c_uint64),
        ("kept", ctypes.c_uint64),
        ("unread", ctypes.c_uint64),
        ("dropped", ctypes.c_uint64),
        ("raw_dropped", ctypes.c_uint64),
        ("cap", ctypes.c_uint64),
        ("closed", c_bool),
    ]


MachineP = POINTER(Machine)
ErrorP = POINTER(Error)
CancelP = POINTER(Cancel)
PatternsP = POINTER(Patterns)
ConsoleMatchP = POINTER(ConsoleMatch)
ExecResultP = POINTER(ExecResult)
SchemaP = POINTER(Schema)
ErrOut = POINTER(ErrorP)
StrOut = POINTER(c_void_p)  # char ** out: kept as a raw pointer so qm_string_free gets it back
StrArray = POINTER(c_char_p)

_status = c_int

#: `qm_log_fn`: void (*)(void *user, qm_log_level, const char *target, const char *message,
#: double timestamp).
LogFn = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_char_p, c_char_p, ctypes.c_double)

# name: (restype, argtypes). Every `char *` a call returns is declared c_void_p, so that the
# binding can copy it and hand the very pointer back to qm_string_free.
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "qm_version": (c_char_p, []),
    "qm_status_str": (c_char_p, [c_int]),
    "qm_default_timeout_ms": (c_int64, []),
    "qm_timeout_ms_from_seconds": (_status, [ctypes.c_double, POINTER(c_int64), ErrOut]),
    "qm_conv_keys": (_status, [c_char_p, StrOut, ErrOut]),
    "qm_string_free": (None, [c_void_p]),
    "qm_set_log_level": (_status, [c_int, ErrOut]),
    "qm_event_match": (_status, [c_char_p, c_char_p, POINTER(c_bool), ErrOut]),
    "qm_error_status": (_status, [ErrorP]),
    "qm_error_message": (c_char_p, [ErrorP]),
    "qm_error_qmp_class": (c_char_p, [ErrorP]),
    "qm_error_qmp_desc": (c_char_p, [ErrorP]),
    "qm_error_exit_code": (c_bool, [ErrorP, POINTER(c_int)]),
    "qm_error_command": (c_char_p, [ErrorP]),
    "qm_error_output": (c_char_p, [ErrorP]),
    "qm_error_cause": (_status, [ErrorP]),
    "qm_error_cause_message": (c_char_p, [ErrorP]),
    "qm_error_os_code": (c_bool, [ErrorP, POINTER(c_int)]),
    "qm_error_free": (None, [ErrorP]),
    "qm_cancel_new": (CancelP, []),
    "qm_cancel_fire": (None, [CancelP]),
    "qm_cancel_is_fired": (c_bool, [CancelP]),
    "qm_cancel_free": (None, [CancelP]),
    "qm_new": (_status, [c_char_p, POINTER(MachineP), ErrOut]),
    "qm_free": (None, [MachineP]),
    "qm_add_args": (_status, [MachineP, StrArray, c_size_t, ErrOut]),
    "qm_set_wrapper": (_status, [MachineP, StrArray, c_size_t, ErrOut]),
    "qm_set_name": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_set_base_temp_dir": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_set_sock_dir": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_set_log_dir": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_set_monitor_socketpair": (_status, [MachineP, ErrOut]),
    "qm_set_monitor_unix": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_set_monitor_tcp": (_status, [MachineP, c_char_p, c_uint16, ErrOut]),
    "qm_set_drain_console": (_status, [MachineP, c_bool, ErrOut]),
    "qm_set_console_log": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_set_qmp_timer": (_status, [MachineP, c_int64, ErrOut]),
    "qm_set_qmp_monitor": (_status, [MachineP, c_bool, ErrOut]),
    "qm_set_machine": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_set_console": (_status, [MachineP, c_char_p, c_uint32, ErrOut]),
    "qm_add_monitor_null": (_status, [MachineP, ErrOut]),
    "qm_add_fd": (_status, [MachineP, c_int, c_uint32, c_char_p, c_char_p, ErrOut]),
    "qm_set_max_message_size": (_status, [MachineP, c_size_t, ErrOut]),
    "qm_set_inherit_fds": (_status, [MachineP, c_bool, ErrOut]),
    "qm_launch": (_status, [MachineP, c_int64, CancelP, ErrOut]),
    "qm_launch_all": (_status, [POINTER(MachineP), c_size_t, c_int64, CancelP, ErrOut]),
    "qm_qmp": (_status, [MachineP, c_char_p, c_char_p, c_int64, CancelP, StrOut, ErrOut]),
    "qm_cmd": (_status, [MachineP, c_char_p, c_char_p, c_int64, CancelP, StrOut, ErrOut]),
    "qm_send_fd_scm": (_status, [MachineP, c_int, ErrOut]),
    "qm_send_file_scm": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_event_get": (_status, [MachineP, c_int64, CancelP, StrOut, ErrOut]),
    "qm_events_get": (_status, [MachineP, c_int64, CancelP, StrOut, ErrOut]),
    "qm_events_clear": (_status, [MachineP, ErrOut]),
    "qm_event_wait": (
        _status,
        [MachineP, c_char_p, c_char_p, c_int64, CancelP, StrOut, ErrOut],
    ),
    "qm_events_wait": (_status, [MachineP, c_char_p, c_int64, CancelP, StrOut, ErrOut]),
    "qm_shutdown": (_status, [MachineP, c_bool, c_int64, CancelP, ErrOut]),
    "qm_kill": (_status, [MachineP, ErrOut]),
    "qm_wait": (_status, [MachineP, c_int64, CancelP, ErrOut]),
    "qm_is_running": (c_bool, [MachineP]),
    "qm_pid": (c_int64, [MachineP]),
    "qm_exit_code": (c_bool, [MachineP, POINTER(c_int)]),
    "qm_get_log": (_status, [MachineP, StrOut, ErrOut]),
    "qm_get_temp_dir": (_status, [MachineP, StrOut, ErrOut]),
    "qm_get_log_dir": (_status, [MachineP, StrOut, ErrOut]),
    "qm_get_sock_dir": (_status, [MachineP, StrOut, ErrOut]),
    "qm_get_name": (_status, [MachineP, StrOut, ErrOut]),
    "qm_get_binary": (_status, [MachineP, StrOut, ErrOut]),
    "qm_get_args": (_status, [MachineP, StrOut, ErrOut]),
    "qm_get_command_line": (_status, [MachineP, StrOut, ErrOut]),
    "qm_console_fd": (_status, [MachineP, POINTER(c_int), ErrOut]),
    "qm_console_dup": (_status, [MachineP, POINTER(c_int), ErrOut]),
    "qm_guest_write_image": (_status, [c_char_p, c_char_p, c_int, c_uint8, ErrOut]),
    "qm_guest_qemu_args": (_status, [c_char_p, StrOut, ErrOut]),
    "qm_guest_exit_status": (c_int, [c_uint8]),
    "qm_fake_qemu_path": (_status, [StrOut, ErrOut]),
    "qm_launch_prepare": (_status, [MachineP, StrOut, ErrOut]),
    "qm_launch_argv": (
        _status,
        [MachineP, StrArray, c_size_t, POINTER(c_int), c_size_t, c_int64, CancelP, ErrOut],
    ),
    "qm_launch_abort": (_status, [MachineP, ErrOut]),
    "qm_last_pid": (c_int64, [MachineP]),
    "qm_get_qmp_timer": (_status, [MachineP, POINTER(c_int64), ErrOut]),
    "qm_set_log_callback": (c_bool, [LogFn, c_void_p]),
    "qm_set_qmp_transcript": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_get_log_so_far": (_status, [MachineP, StrOut, ErrOut]),
    # Console interaction. Byte buffers go in as c_char_p (ctypes passes the bytes object's
    # buffer, NULs included; the length is explicit) and come out as c_void_p (copied with
    # ctypes.string_at before the owner is freed).
    "qm_error_console_text": (c_char_p, [ErrorP]),
    "qm_error_console_pattern": (c_bool, [ErrorP, POINTER(c_size_t)]),
    "qm_patterns_new": (PatternsP, []),
    "qm_patterns_add": (_status, [PatternsP, c_char_p, c_uint32, c_bool, ErrOut]),
    "qm_patterns_free": (None, [PatternsP]),
    "qm_console_match_index": (c_size_t, [ConsoleMatchP]),
    "qm_console_match_text": (c_void_p, [ConsoleMatchP, POINTER(c_size_t)]),
    "qm_console_match_start": (c_size_t, [ConsoleMatchP]),
    "qm_console_match_dropped": (ctypes.c_uint64, [ConsoleMatchP]),
    "qm_console_match_free": (None, [ConsoleMatchP]),
    "qm_console_wait": (
        _status,
        [MachineP, PatternsP, c_int64, CancelP, POINTER(ConsoleMatchP), ErrOut],
    ),
    "qm_console_send": (_status, [MachineP, c_char_p, c_size_t, c_int64, CancelP, ErrOut]),
    "qm_console_send_line": (
        _status,
        [MachineP, c_char_p, c_char_p, c_int64, CancelP, ErrOut],
    ),
    "qm_console_exec": (
        _status,
        [
            MachineP,
            c_char_p,
            c_char_p,
            PatternsP,
            c_int64,
            CancelP,
            POINTER(ConsoleMatchP),
            ErrOut,
        ],
    ),
    "qm_console_interrupt_until": (
        _status,
        [
            MachineP,
            c_char_p,
            c_size_t,
            c_uint32,
            PatternsP,
            c_int64,
            CancelP,
            POINTER(ConsoleMatchP),
            ErrOut,
        ],
    ),
    "qm_console_transcript": (_status, [MachineP, c_size_t, StrOut, POINTER(c_size_t), ErrOut]),
    "qm_console_stats": (_status, [MachineP, POINTER(ConsoleCounters), ErrOut]),
    "qm_console_skip_unread": (_status, [MachineP, POINTER(c_size_t), ErrOut]),
    "qm_set_console_buffer": (_status, [MachineP, c_size_t, ErrOut]),
    "qm_set_max_queued_events": (_status, [MachineP, c_int64, ErrOut]),
    "qm_dropped_events": (ctypes.c_uint64, [MachineP]),
    # The guest agent.
    "qm_set_guest_agent": (_status, [MachineP, c_bool, ErrOut]),
    "qm_set_guest_agent_unix": (_status, [MachineP, c_char_p, ErrOut]),
    "qm_agent_sync": (_status, [MachineP, c_int64, CancelP, ErrOut]),
    "qm_agent_execute": (
        _status,
        [MachineP, c_char_p, c_char_p, c_int64, CancelP, StrOut, ErrOut],
    ),
    "qm_agent_cmd": (_status, [MachineP, c_char_p, c_char_p, c_int64, CancelP, StrOut, ErrOut]),
    "qm_agent_ping": (_status, [MachineP, c_int64, CancelP, ErrOut]),
    "qm_agent_exec": (
        _status,
        [
            MachineP,
            c_char_p,
            StrArray,
            c_size_t,
            StrArray,
            c_size_t,
            c_char_p,
            c_size_t,
            c_bool,
            c_size_t,
            c_int64,
            c_int64,
            CancelP,
            POINTER(ExecResultP),
            ErrOut,
        ],
    ),
    "qm_exec_result_exit_code": (c_bool, [ExecResultP, POINTER(c_int)]),
    "qm_exec_result_signal": (c_bool, [ExecResultP, POINTER(c_int)]),
    "qm_exec_result_pid": (c_int64, [ExecResultP]),
    "qm_exec_result_stdout": (c_void_p, [ExecResultP, POINTER(c_size_t)]),
    "qm_exec_result_stderr": (c_void_p, [ExecResultP, POINTER(c_size_t)]),
    "qm_exec_result_stdout_truncated": (c_bool, [ExecResultP]),
    "qm_exec_result_stderr_truncated": (c_bool, [ExecResultP]),
    "qm_exec_result_free": (None, [ExecResultP]),
    "qm_agent_file_read": (
        _status,
        [
            MachineP,
            c_char_p,
            c_size_t,
            c_int64,
            CancelP,
            POINTER(c_void_p),
            POINTER(c_size_t),
            ErrOut,
        ],
    ),
    "qm_bytes_free": (None, [c_void_p, c_size_t]),
    "qm_agent_file_write": (
        _status,
        [MachineP, c_char_p, c_char_p, c_size_t, c_int64, CancelP, ErrOut],
    ),
    "qm_agent_shutdown": (_status, [MachineP, c_char_p, c_int64, CancelP, ErrOut]),
    "qm_agent_get_osinfo": (_status, [MachineP, c_int64, CancelP, StrOut, ErrOut]),
    "qm_agent_get_time": (_status, [MachineP, c_int64, CancelP, POINTER(c_int64), ErrOut]),
    # The QMP schema (qm._schema).
    "qm_error_schema_path": (c_char_p, [ErrorP]),
    "qm_error_schema_rule": (c_char_p, [ErrorP]),
    "qm_set_schema_policy": (_status, [MachineP, c_int, c_int, c_int, ErrOut]),
    "qm_get_schema_policy": (
        _status,
        [MachineP, POINTER(c_int), POINTER(c_int), POINTER(c_int), ErrOut],
    ),
    "qm_greeting": (_status, [MachineP, StrOut, ErrOut]),
    "qm_schema_get": (_status, [MachineP, c_int64, CancelP, POINTER(SchemaP), ErrOut]),
    "qm_schema_free": (None, [SchemaP]),
    "qm_schema_has_command": (c_bool, [SchemaP, c_char_p]),
    "qm_schema_has_event": (c_bool, [SchemaP, c_char_p]),
    "qm_schema_query": (_status, [SchemaP, c_char_p, POINTER(c_bool), ErrOut]),
    "qm_schema_command": (_status, [SchemaP, c_char_p, StrOut, ErrOut]),
    "qm_schema_check": (_status, [SchemaP, c_char_p, c_char_p, StrOut, ErrOut]),
    "qm_set_qmp_oob": (_status, [MachineP, c_bool, ErrOut]),
    "qm_qmp_oob_enabled": (c_bool, [MachineP]),
    "qm_qmp_oob": (_status, [MachineP, c_char_p, c_char_p, c_int64, CancelP, StrOut, ErrOut]),
    # Attaching to a QEMU someone else started.
    "qm_attach": (_status, [MachineP, c_char_p, c_char_p, c_int64, CancelP, ErrOut]),
    "qm_is_attached": (c_bool, [MachineP]),
}


def library_path() -> Path:
    """Where libqm is loaded from: `$QM_LIBRARY` if set, else the copy inside this package."""
    given = os.environ.get(LIBRARY_ENV)
    if given:
        return Path(given)
    return Path(__file__).resolve().parent / "_lib" / "libqm.so"


def _load() -> ctypes.CDLL:
    path = library_path()
    if not path.exists():
        raise ImportError(
            f"qm: libqm not found at {path}: the package was installed without its library "
            f"(reinstall with `pip install` from the repository, or set {LIBRARY_ENV}=/path/to/"
            "libqm.so)"
        )
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise ImportError(f"qm: cannot load libqm from {path}: {exc}") from exc
    missing = [name for name in _PROTOTYPES if not hasattr(lib, name)]
    if missing:
        raise ImportError(
            f"qm: {path} is not a compatible libqm (missing {', '.join(missing[:5])})"
        )
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    if not os.environ.get(LIBRARY_ENV):
        _check_bundled_version(path, lib.qm_version().decode())
    return lib


def _check_bundled_version(path: Path, found: str) -> None:
    """The bundled library is the package's own: the same version as the installed
    distribution (when it is installed; a source tree on PYTHONPATH has no metadata)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover (Python >= 3.8 has it)
        return
    try:
        want = version("qm-qemu")
    except PackageNotFoundError:
        return
    if want != found:
        raise ImportError(
            f"qm: the bundled libqm ({path}) is version {found}, the package {want}: "
            "reinstall the package"
        )


lib = _load()


def take_string(ptr: Optional[int]) -> Optional[str]:
    """Copies a `char *` qm returned into a Python str and frees it with qm_string_free."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode("utf-8")
    finally:
        lib.qm_string_free(ptr)


def take_json(ptr: Optional[int]) -> Any:
    """Parses the JSON text of a `char *` qm returned (None for NULL) and frees it with
    qm_string_free. (Decoded first: json.loads on bytes guesses their encoding in Python.)"""
    if not ptr:
        return None
    try:
        return json.loads(ctypes.string_at(ptr).decode("utf-8"))
    finally:
        lib.qm_string_free(ptr)


def str_array(items: list[bytes]) -> Any:
    """A `const char *const *` of `items` (which the caller keeps alive for the call)."""
    arr = (c_char_p * max(len(items), 1))()
    for i, item in enumerate(items):
        arr[i] = item
    return arr
