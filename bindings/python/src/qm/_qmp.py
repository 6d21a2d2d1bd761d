"""QMP on `qm.Machine`: commands, descriptors over the monitor socket, and events."""

from __future__ import annotations

import json
import logging
from ctypes import byref, c_bool
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from . import _ffi
from . import errors as _errors
from ._cancel import Cancel, _cancel_ptr
from ._convert import (
    DEFAULT,
    Timeout,
    _args_dict,
    _bytes,
    _check,
    _fd,
    _json_arg,
    _ms,
)
from ._handle import MachineHandle

_lib = _ffi.lib


class _QMP(MachineHandle):
    """QMP commands and events."""

    def qmp(
        self,
        cmd: str,
        args: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> Dict[str, Any]:
        """Runs a QMP command and returns QEMU's whole response (`{"return": ...}` or
        `{"error": ...}`). `timeout` defaults to the QMP timer."""
        arguments = _args_dict(args)
        raw = _json_arg(arguments, "QMP arguments")
        self._trace_send(cmd, arguments)
        reply = self._json(
            _lib.qm_qmp,
            _bytes(cmd, "command"),
            raw,
            _ms(timeout),
            _cancel_ptr(cancel),
            command=cmd,
            arguments=arguments,
        )
        self._trace_recv(reply)
        return reply  # type: ignore[no-any-return]

    def cmd(
        self,
        cmd: str,
        args: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> Any:
        """Runs a QMP command and returns its `return` value; raises `QMPError` (a
        `qemu.qmp.ExecuteError` when that package is installed) on an error response."""
        arguments = _args_dict(args)
        raw = _json_arg(arguments, "QMP arguments")
        self._trace_send(cmd, arguments)
        try:
            value = self._json(
                _lib.qm_cmd,
                _bytes(cmd, "command"),
                raw,
                _ms(timeout),
                _cancel_ptr(cancel),
                command=cmd,
                arguments=arguments,
            )
        except _errors.QMPError as exc:
            self._trace_recv({"error": {"class": exc.error_class_name, "desc": exc.desc}})
            raise
        self._trace_recv({"return": value})
        return value

    def _trace_send(self, cmd: str, arguments: Optional[Dict[str, Any]]) -> None:
        if self._qmp_log.isEnabledFor(logging.DEBUG):
            msg: Dict[str, Any] = {"execute": cmd}
            if arguments is not None:
                msg["arguments"] = arguments
            self._qmp_log.debug("Request: %s", json.dumps(msg))

    def _trace_recv(self, reply: Any) -> None:
        if self._qmp_log.isEnabledFor(logging.DEBUG):
            self._qmp_log.debug("Response: %s", json.dumps(reply))

    def send_fd(self, fd: int) -> None:
        """Sends descriptor `fd` over the QMP socket (SCM_RIGHTS) for a following `getfd` or
        `add-fd`."""
        self._call(_lib.qm_send_fd_scm, _fd(fd))

    def send_file(self, path: str) -> None:
        """Opens `path` read-only and sends it as `send_fd` does."""
        self._call(_lib.qm_send_file_scm, _bytes(path, "path"))

    def get_event(
        self, timeout: Optional[float] = 0, *, cancel: Optional[Cancel] = None
    ) -> Optional[Dict[str, Any]]:
        """The oldest queued event; `timeout=0` only looks (None when there is none), a
        longer one waits (raising `qm.TimeoutError`), None waits forever."""
        ev = self._json(_lib.qm_event_get, _ms(timeout, allow_default=False), _cancel_ptr(cancel))
        self._trace_event(ev)
        return ev  # type: ignore[no-any-return]

    def get_events(
        self, timeout: Optional[float] = 0, *, cancel: Optional[Cancel] = None
    ) -> List[Dict[str, Any]]:
        """Every queued event, oldest first (waits for at least one when `timeout` != 0)."""
        evs = self._json(
            _lib.qm_events_get, _ms(timeout, allow_default=False), _cancel_ptr(cancel)
        )
        for ev in evs:
            self._trace_event(ev)
        return evs  # type: ignore[no-any-return]

    def clear_events(self) -> None:
        """Drops every queued event."""
        self._call(_lib.qm_events_clear)

    def event_wait(
        self,
        name: str,
        match: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = 60.0,
        *,
        cancel: Optional[Cancel] = None,
    ) -> Optional[Dict[str, Any]]:
        """Waits for the first event `name` matching `match` (see `event_match`); queued
        events are searched first and those that don't match stay queued, in order."""
        ev = self._json(
            _lib.qm_event_wait,
            _bytes(name, "event name"),
            _json_arg(match, "match"),
            _ms(timeout, allow_default=False),
            _cancel_ptr(cancel),
        )
        self._trace_event(ev)
        return ev  # type: ignore[no-any-return]

    def events_wait(
        self,
        events: Iterable[Tuple[str, Optional[Mapping[str, Any]]]],
        timeout: Optional[float] = 60.0,
        *,
        cancel: Optional[Cancel] = None,
    ) -> Optional[Dict[str, Any]]:
        """Like `event_wait` for the first event matching any `(name, match)` pair."""
        filters = []
        for item in events:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError("events must be (name, match) pairs")
            name, match = item
            if not isinstance(name, str):
                raise TypeError(f"event name must be a str, not {type(name).__name__}")
            entry: Dict[str, Any] = {"name": name}
            if match is not None:
                entry["match"] = match
            filters.append(entry)
        ev = self._json(
            _lib.qm_events_wait,
            _json_arg(filters, "events"),
            _ms(timeout, allow_default=False),
            _cancel_ptr(cancel),
        )
        self._trace_event(ev)
        return ev  # type: ignore[no-any-return]

    def _trace_event(self, ev: Any) -> None:
        if ev is not None and self._qmp_log.isEnabledFor(logging.DEBUG):
            self._qmp_log.debug("Event: %s", json.dumps(ev))


def event_match(event: Any, match: Any) -> bool:
    """Whether `event` matches the filter `match` by QEMUMachine's rule (a recursive
    sub-dict; None matches anything), decided by the core."""
    ok = c_bool(False)
    err = _ffi.ErrorP()
    raw_event = _json_arg(event, "event")
    if raw_event is None:
        raw_event = b"null"
    _check(_lib.qm_event_match(raw_event, _json_arg(match, "match"), byref(ok), byref(err)), err)
    return bool(ok.value)
