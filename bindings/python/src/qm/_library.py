"""Calls about the loaded library itself: its version and log level."""

from __future__ import annotations

from ctypes import byref

from . import _ffi
from ._convert import _check

_lib = _ffi.lib


def has_caller_argv() -> bool:
    """Always True: the bundled libqm can launch a caller-composed argv (`prepare_launch`,
    `launch_argv`), and the binding refuses at import a library that could not. Kept for
    code written against 0.1, where it could be False."""
    return True


def set_log_level(level: str) -> None:
    """How much the core writes to stderr: "off", "warn" (default) or "debug"."""
    levels = {"off": _ffi.QM_LOG_OFF, "warn": _ffi.QM_LOG_WARN, "debug": _ffi.QM_LOG_DEBUG}
    if level not in levels:
        raise ValueError(f"log level must be one of {sorted(levels)}, not {level!r}")
    err = _ffi.ErrorP()
    _check(_lib.qm_set_log_level(levels[level], byref(err)), err)


def version() -> str:
    """The version of the loaded libqm."""
    return str(_lib.qm_version().decode())
