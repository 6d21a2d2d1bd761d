"""`MachineHandle`: a `qm_machine *` and the plumbing every call on it goes through (calls in
flight are counted, so that closing the machine in one thread never frees the handle under a
call in another). The machine's calls are mixins over this class, one module per concern."""

from __future__ import annotations

import json
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
    _calls_cv: threading.Condition
    _log: logging.Logger
    _qmp_log: logging.Logger

    def _init_handle(
        self, logger: Optional[logging.Logger], qmp_logger: Optional[logging.Logger]
    ) -> None:
        self._h = None
        self._calls = 0
        self._calls_cv = threading.Condition()
        self._log = logger or LOG
        self._qmp_log = qmp_logger or QMP_LOG

    def _handle(self) -> Any:
        if not self._h:
            raise _errors.StateError("the machine was closed")
        return self._h

    def _call(
        self, fn: Any, *args: Any, command: str = "", arguments: Optional[Dict[str, Any]] = None
    ) -> None:
        """Calls `fn(handle, *args, &err)` and raises the matching exception on failure."""
        err = _ffi.ErrorP()
        with self._calls_cv:
            h = self._handle()
            self._calls += 1
        try:
            status = fn(h, *args, byref(err))
        finally:
            with self._calls_cv:
                self._calls -= 1
                if self._calls == 0:
                    self._calls_cv.notify_all()
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
        text = self._string(fn, *args, command=command, arguments=arguments)
        return None if text is None else json.loads(text)

    def _peek(self, fn: Any, *args: Any) -> Any:
        """A non-blocking query: None once closed, else `fn(handle, *args)` (counted as a call
        in flight, so `close` in another thread cannot free the handle under it)."""
        with self._calls_cv:
            h = self._h
            if not h:
                return None
            self._calls += 1
        try:
            return fn(h, *args)
        finally:
            with self._calls_cv:
                self._calls -= 1
                if self._calls == 0:
                    self._calls_cv.notify_all()
