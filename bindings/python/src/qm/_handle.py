"""`MachineHandle`: a `qm_machine *` and the plumbing every call on it goes through (calls in
flight are counted, so that closing the machine in one thread never frees the handle under a
call in another). The machine's calls are mixins over this class, one module per concern."""

from __future__ import annotations

import logging
import threading
from ctypes import byref, c_void_p
from typing import Any, Dict, Optional

from . import _ffi
from . import errors as _errors
from ._convert import _check

LOG = logging.getLogger("qm")
QMP_LOG = logging.getLogger("qm.qmp")


class MachineHandle:
    """The handle of a `qm_machine` and how calls reach it (the base of `qm.Machine`)."""

    _h: Any
    _calls: int
    _calls_lock: Any  # a threading.Lock
    _calls_cv: threading.Condition
    _log: logging.Logger
    _qmp_log: logging.Logger

    def _init_handle(
        self, logger: Optional[logging.Logger], qmp_logger: Optional[logging.Logger]
    ) -> None:
        self._h = None
        self._calls = 0
        # A plain lock (taken in C, unlike an RLock's Condition) guards the count: every call
        # takes it twice, on the path of every command and event (issue #20). The condition,
        # over the same lock, is only for `_free`, which clears `_h` first and then waits.
        self._calls_lock = threading.Lock()
        self._calls_cv = threading.Condition(self._calls_lock)
        self._log = logger or LOG
        self._qmp_log = qmp_logger or QMP_LOG

    def _handle(self) -> Any:
        if not self._h:
            raise _errors.StateError("the machine was closed")
        return self._h

    def _enter(self) -> Any:
        """Counts a call in flight and returns the handle (StateError once closed)."""
        with self._calls_lock:
            h = self._h
            if not h:
                raise _errors.StateError("the machine was closed")
            self._calls += 1
        return h

    def _leave(self) -> None:
        """Ends a call counted by `_enter`; the last one out wakes a `_free` waiting for it
        (only a closing machine, whose handle is already cleared, has anyone to wake)."""
        with self._calls_lock:
            self._calls -= 1
            if self._calls == 0 and not self._h:
                self._calls_cv.notify_all()

    def _call(
        self, fn: Any, *args: Any, command: str = "", arguments: Optional[Dict[str, Any]] = None
    ) -> None:
        """Calls `fn(handle, *args, &err)` and raises the matching exception on failure."""
        err = _ffi.ErrorP()
        h = self._enter()
        try:
            status = fn(h, *args, byref(err))
        finally:
            self._leave()
        if status != _ffi.QM_OK:
            _check(status, err, command, arguments)

    def _string(
        self, fn: Any, *args: Any, command: str = "", arguments: Optional[Dict[str, Any]] = None
    ) -> Optional[str]:
        out = c_void_p()
        self._call(fn, *args, byref(out), command=command, arguments=arguments)
        return _ffi.take_string(out.value)

    def _json(
        self, fn: Any, *args: Any, command: str = "", arguments: Optional[Dict[str, Any]] = None
    ) -> Any:
        """Calls `fn(handle, *args, &out, &err)` and returns the JSON text qm stored in `out`,
        parsed (None for NULL): the path of every command and event wait."""
        out = c_void_p()
        err = _ffi.ErrorP()
        h = self._enter()
        try:
            status = fn(h, *args, byref(out), byref(err))
        finally:
            self._leave()
        if status != _ffi.QM_OK:
            _check(status, err, command, arguments)
        return _ffi.take_json(out.value)

    def _peek(self, fn: Any, *args: Any) -> Any:
        """A non-blocking query: None once closed, else `fn(handle, *args)` (counted as a call
        in flight, so `close` in another thread cannot free the handle under it)."""
        with self._calls_lock:
            h = self._h
            if not h:
                return None
            self._calls += 1
        try:
            return fn(h, *args)
        finally:
            self._leave()
