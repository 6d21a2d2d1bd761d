"""`Machine`: one QEMU virtual machine, a thin Pythonic layer over `qm_machine`.

Everything the core decides (default timeouts, event matching, the shutdown ladder, cleanup)
stays in the core: this module converts Python values to C ones and back, and adapts idioms
(keyword configuration, float seconds, exceptions, context managers, a `socket.socket` console).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
from ctypes import byref, c_bool, c_int, c_int64, c_size_t, c_void_p
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _console, _ffi
from . import errors as _errors

if TYPE_CHECKING:
    from ._agent import Agent

_lib = _ffi.lib

LOG = logging.getLogger("qm")
QMP_LOG = logging.getLogger("qm.qmp")


class _Default:
    """The `timeout` default that means "the core's own default" (`QM_WAIT_DEFAULT`)."""

    def __repr__(self) -> str:
        return "DEFAULT"


#: Passed as a timeout: use the core's default (the QMP timer for commands, 30 s for a shutdown).
DEFAULT: Any = _Default()

Timeout = Union[float, int, None, _Default]
JSON = Any


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
    if timeout == float("inf"):
        return _ffi.QM_WAIT_FOREVER
    return int(min(timeout * 1000.0, 2**62))


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


MonitorSpec = Union[None, str, Tuple[str, int]]


class Machine:
    """A QEMU virtual machine.

    Configure with keywords (or the `set_*`/`add_*` methods), then `launch()`; use it as a
    context manager so QEMU is always shut down::

        with qm.Machine("qemu-system-x86_64", machine="none") as vm:
            vm.launch()
            print(vm.cmd("query-status"))

    Thread-safe: any number of threads may call methods at once (commands run concurrently,
    each getting its own reply). Timeouts are seconds (float); `None` waits forever; blocking
    calls take `cancel=` (a `Cancel` fired from another thread interrupts them).
    A machine that is garbage-collected while QEMU runs kills QEMU.
    """

    def __init__(
        self,
        binary: str = "qemu-system-x86_64",
        *,
        args: Iterable[str] = (),
        wrapper: Iterable[str] = (),
        name: Optional[str] = None,
        machine: Optional[str] = None,
        console: Union[bool, str] = False,
        console_index: int = 0,
        drain_console: bool = False,
        console_log: Optional[str] = None,
        log_dir: Optional[str] = None,
        base_temp_dir: Optional[str] = None,
        sock_dir: Optional[str] = None,
        monitor: MonitorSpec = None,
        qmp: bool = True,
        qmp_timer: Timeout = DEFAULT,
        max_message_size: Optional[int] = None,
        max_queued_events: Optional[int] = None,
        qmp_transcript: Optional[str] = None,
        console_buffer: Optional[int] = None,
        guest_agent: Union[bool, str] = False,
        logger: Optional[logging.Logger] = None,
        qmp_logger: Optional[logging.Logger] = None,
    ) -> None:
        self._h: Any = None
        self._agent: Optional[Agent] = None
        self._calls = 0
        self._calls_cv = threading.Condition()
        self._log = logger or LOG
        self._qmp_log = qmp_logger or QMP_LOG
        handle = _ffi.MachineP()
        err = _ffi.ErrorP()
        _check(_lib.qm_new(_bytes(binary, "binary"), byref(handle), byref(err)), err)
        self._h = handle
        self._pid: Optional[int] = None
        if args:
            self.add_args(*args)
        if wrapper:
            self.set_wrapper(wrapper)
        if name is not None:
            self.set_name(name)
        if machine is not None:
            self.set_machine(machine)
        if console:
            self.set_console(console if isinstance(console, str) else None, console_index)
        if drain_console:
            self.set_drain_console(True)
        if console_log is not None:
            self.set_console_log(console_log)
        if log_dir is not None:
            self.set_log_dir(log_dir)
        if base_temp_dir is not None:
            self.set_base_temp_dir(base_temp_dir)
        if sock_dir is not None:
            self.set_sock_dir(sock_dir)
        if monitor is not None:
            self.set_monitor(monitor)
        if not qmp:
            self.set_qmp_monitor(False)
        if not isinstance(qmp_timer, _Default):
            self.set_qmp_timer(qmp_timer)
        if max_message_size is not None:
            self.set_max_message_size(max_message_size)
        if max_queued_events is not None:
            self.set_max_queued_events(max_queued_events)
        if qmp_transcript is not None:
            self.set_qmp_transcript(qmp_transcript)
        if console_buffer is not None:
            self.set_console_buffer(console_buffer)
        if guest_agent is not False:
            self.set_guest_agent(guest_agent)

    # ---- plumbing -------------------------------------------------------------------------

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

    # ---- configuration (applies to the next launch) ---------------------------------------

    def add_args(self, *args: str) -> None:
        """Appends arguments for QEMU after the ones qm builds."""
        raw = [_bytes(a, "argument") for a in args]
        self._call(_lib.qm_add_args, _ffi.str_array(raw), len(raw))

    def set_wrapper(self, argv: Iterable[str]) -> None:
        """Sets the argv prefix QEMU runs under, e.g. `["strace", "-f"]` (never a shell)."""
        if isinstance(argv, (str, bytes)):
            raise TypeError("wrapper must be a sequence of strings, not a single string")
        raw = [_bytes(a, "wrapper argument") for a in argv]
        self._call(_lib.qm_set_wrapper, _ffi.str_array(raw), len(raw))

    def set_name(self, name: str) -> None:
        """Names the machine (prefix of its log and socket files)."""
        self._call(_lib.qm_set_name, _bytes(name, "name"))

    def set_base_temp_dir(self, path: str) -> None:
        """Where the temporary directory is created (default /var/tmp)."""
        self._call(_lib.qm_set_base_temp_dir, _bytes(path, "base_temp_dir"))

    def set_sock_dir(self, path: str) -> None:
        """Where qm-named socket files go (default: the temporary directory)."""
        self._call(_lib.qm_set_sock_dir, _bytes(path, "sock_dir"))

    def set_log_dir(self, path: str) -> None:
        """Writes QEMU's output to `<path>/<name>.log`, kept after shutdown."""
        self._call(_lib.qm_set_log_dir, _bytes(path, "log_dir"))

    def set_monitor(self, address: MonitorSpec) -> None:
        """The QMP monitor: None (a socketpair, the default), a unix socket path (str; "" for
        one qm names in the sock dir), or a `(host, port)` TCP address qm listens on."""
        if address is None:
            self._call(_lib.qm_set_monitor_socketpair)
        elif isinstance(address, tuple):
            if (
                len(address) != 2
                or not isinstance(address[1], int)
                or isinstance(address[1], bool)
            ):
                raise TypeError("a TCP monitor address is a (host, port) tuple")
            host, port = address
            if not 0 <= port <= 65535:
                raise ValueError(f"port {port} is out of range 0..65535")
            self._call(_lib.qm_set_monitor_tcp, _bytes(host, "host"), port)
        elif isinstance(address, (str, os.PathLike)):
            path = os.fspath(address)
            self._call(_lib.qm_set_monitor_unix, _bytes(path, "monitor path") if path else None)
        else:
            raise TypeError(
                f"monitor address must be None, a path or a (host, port) tuple, not "
                f"{type(address).__name__}"
            )

    def set_drain_console(self, drain: bool) -> None:
        """A background reader (in qm) keeps the console flowing; bytes wait for you."""
        self._call(_lib.qm_set_drain_console, bool(drain))

    def set_console_log(self, path: Optional[str]) -> None:
        """Appends every console byte to `path` (implies the drain); None turns it off."""
        self._call(_lib.qm_set_console_log, _opt_bytes(path, "console_log"))

    def set_qmp_timer(self, seconds: Optional[float]) -> None:
        """Bounds the QMP handshake at launch; the default timeout of `qmp`/`cmd`."""
        self._call(_lib.qm_set_qmp_timer, _ms(seconds, "qmp_timer", allow_default=False))

    def set_qmp_monitor(self, enabled: bool = True) -> None:
        """Turns the QMP monitor on (default) or off (then shutdown uses SIGTERM)."""
        self._call(_lib.qm_set_qmp_monitor, bool(enabled))

    def set_machine(self, machine_type: str) -> None:
        """Adds `-machine TYPE`."""
        self._call(_lib.qm_set_machine, _bytes(machine_type, "machine_type"))

    def set_console(self, device_type: Optional[str] = None, index: int = 0) -> None:
        """Adds a console on a socketpair (`-serial chardev:console`, or `-device TYPE,...`)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError("console index must be an int")
        if not 0 <= index < 2**32:
            raise ValueError(f"console index {index} is out of range")
        self._call(_lib.qm_set_console, _opt_bytes(device_type, "device_type"), index)

    def add_monitor_null(self) -> None:
        """Adds an unused `-monitor null`."""
        self._call(_lib.qm_add_monitor_null)

    def add_fd(self, fd: int, fdset: int, opaque: str, opts: str = "") -> None:
        """Passes descriptor `fd` to QEMU as `-add-fd fd=FD,set=FDSET,opaque=OPAQUE[,OPTS]`
        (keep it open until launch returns)."""
        fd = _fd(fd)
        if isinstance(fdset, bool) or not isinstance(fdset, int) or not 0 <= fdset < 2**32:
            raise ValueError(f"fdset must be an int in 0..2**32-1, not {fdset!r}")
        self._call(
            _lib.qm_add_fd,
            fd,
            fdset,
            _bytes(opaque, "opaque"),
            _bytes(opts, "opts") if opts else None,
        )

    def set_console_buffer(self, size: int) -> None:
        """Caps the console's memory in bytes: the transcript and the output no wait consumed
        yet (0: the core's default, 1 MiB; the core raises small values to its minimum).
        Output over the cap that no wait consumed is dropped and reported
        (`ConsoleMatch.dropped`, `console_stats()`); the console log file keeps everything.
        Applies to the running console at once and to later launches."""
        _require("qm_set_console_buffer")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"console_buffer must be a non-negative int, not {size!r}")
        self._call(_lib.qm_set_console_buffer, size)

    def set_guest_agent(self, channel: Union[bool, str] = True) -> None:
        """Gives the guest a channel to its agent (`qemu-ga`) for `agent`: True (a socketpair
        qm owns), a unix socket path qm listens on ("" for one qm names in the sock dir), or
        False (none, the default). Applies to the next launch."""
        if isinstance(channel, bool):
            _require("qm_set_guest_agent")
            self._call(_lib.qm_set_guest_agent, channel)
        elif isinstance(channel, (str, os.PathLike)):
            _require("qm_set_guest_agent_unix")
            path = os.fspath(channel)
            self._call(
                _lib.qm_set_guest_agent_unix, _bytes(path, "guest agent path") if path else None
            )
        else:
            raise TypeError(
                f"guest_agent must be a bool or a socket path, not {type(channel).__name__}"
            )

    def set_max_queued_events(self, count: Optional[int]) -> None:
        """Caps the queued, unread QMP events (None: no cap, the default). Over the cap the
        oldest is dropped, and the next call that reads events raises `EventsDropped` once
        (`dropped_events` counts them). Applies at once and to later launches."""
        _require("qm_set_max_queued_events")
        if count is None:
            value = _ffi.QM_EVENTS_UNLIMITED
        elif isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"max_queued_events must be a non-negative int or None, not {count!r}"
            )
        else:
            value = count
        self._call(_lib.qm_set_max_queued_events, value)

    @property
    def dropped_events(self) -> int:
        """How many QMP events the `max_queued_events` cap dropped since the last launch."""
        _require("qm_dropped_events")
        return int(self._peek(_lib.qm_dropped_events) or 0)

    def set_max_message_size(self, size: int) -> None:
        """Caps one message from QEMU, in bytes (default 64 MiB)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"max_message_size must be a non-negative int, not {size!r}")
        self._call(_lib.qm_set_max_message_size, size)

    # ---- launch ------------------------------------------------------------------------

    def launch(self, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None) -> None:
        """Starts QEMU and negotiates QMP, within `timeout` seconds (default: the QMP timer);
        raises `LaunchError` (exit code, command line, QEMU's output, cause) when it fails,
        leaving nothing behind."""
        self._call(_lib.qm_launch, _ms(timeout), _cancel_ptr(cancel))
        self._pid = self.pid
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("VM launch command: %r", " ".join(self.command_line))

    def prepare_launch(self) -> List[str]:
        """The arguments qm puts between the binary and the extra ones, with the descriptor
        numbers QEMU will see; creates the monitor and console sockets (needs a libqm with
        `qm_launch_prepare`). Follow with `launch_argv`, or `abort_launch`."""
        _require("qm_launch_prepare")
        return list(self._json(_lib.qm_launch_prepare))

    def launch_argv(
        self,
        argv: Sequence[str],
        *,
        pass_fds: Sequence[int] = (),
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> None:
        """Starts exactly `argv` (a caller-composed command line around `prepare_launch`'s
        arguments) and negotiates QMP as `launch` does; QEMU also inherits `pass_fds`."""
        _require("qm_launch_argv")
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a sequence of strings")
        raw = [_bytes(a, "argv item") for a in argv]
        if not raw:
            raise ValueError("argv is empty")
        fds = [_fd(fd) for fd in pass_fds]
        fd_arr = (c_int * max(len(fds), 1))(*fds)
        self._call(
            _lib.qm_launch_argv,
            _ffi.str_array(raw),
            len(raw),
            fd_arr,
            len(fds),
            _ms(timeout),
            _cancel_ptr(cancel),
        )
        self._pid = self.pid

    def abort_launch(self) -> None:
        """Releases what `prepare_launch` created, when not launching after all."""
        if _ffi.has("qm_launch_abort"):
            self._call(_lib.qm_launch_abort)

    # ---- QMP ---------------------------------------------------------------------------

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

    # ---- events ------------------------------------------------------------------------

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

    # ---- console -----------------------------------------------------------------------

    def console(self) -> socket.socket:
        """A new `socket.socket` on the console (yours to close; close it before a graceful
        shutdown unless the console is drained)."""
        fd = c_int(-1)
        self._call(_lib.qm_console_dup, byref(fd))
        return socket.socket(fileno=fd.value)

    def console_dup_fd(self) -> int:
        """A new descriptor on the console, owned (and closed) by the caller."""
        fd = c_int(-1)
        self._call(_lib.qm_console_dup, byref(fd))
        return fd.value

    # ---- console interaction (matching and buffering are the core's) ----------------------

    def _console_match(
        self, fn: Any, *args: Any, success: Any, failure: Any, timeout: Timeout, cancel: Any
    ) -> _console.ConsoleMatch:
        """Runs a console call that yields a `qm_console_match`: `fn(h, *args, patterns,
        timeout_ms, cancel, &match, &err)`."""
        _require("qm_console_wait")
        ms = _ms(timeout, allow_default=False)
        tok = _cancel_ptr(cancel)
        with _console.PatternSet(success, failure) as patterns:
            out = _ffi.ConsoleMatchP()
            try:
                self._call(fn, *args, patterns.ptr, ms, tok, byref(out))
            except _errors.QMError as exc:
                raise patterns.annotate(exc) from None
            return _console.take_match(out, patterns)

    def console_wait(
        self,
        success: _console.Patterns,
        failure: _console.Patterns = (),
        *,
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> _console.ConsoleMatch:
        """Waits until one of the `success` patterns shows on the console and returns what it
        found; the output up to and including the match is consumed, what follows stays for
        the next wait. A pattern is a `str`/`bytes` literal, a `qm.Regex` or a compiled
        `re.Pattern` (Rust regex syntax); `success` and `failure` take one or a sequence.

        `timeout` (seconds, or None: until the pattern, the end of the console or `cancel`)
        has no default. Raises `ConsoleFailure` when a failure pattern matches first,
        `ConsoleClosed` at once when the console reaches end of file, `qm.TimeoutError` (with
        the unread tail in `.text`, left unread), `Interrupted`, and `StateError` while
        another wait runs on the console (one at a time) or without a console."""
        return self._console_match(
            _lib.qm_console_wait, success=success, failure=failure, timeout=timeout, cancel=cancel
        )

    def console_exec(
        self,
        line: str,
        success: _console.Patterns,
        failure: _console.Patterns = (),
        *,
        eol: str = "\n",
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> _console.ConsoleMatch:
        """Sends `line` + `eol`, then waits for the patterns as `console_wait` does, all within
        `timeout`. Output left unread before is searched too (`console_skip_unread` first
        ignores it); the text includes the guest's echo of the command."""
        _require("qm_console_exec")
        return self._console_match(
            _lib.qm_console_exec,
            _bytes(line, "line"),
            _bytes(eol, "eol"),
            success=success,
            failure=failure,
            timeout=timeout,
            cancel=cancel,
        )

    def console_interrupt_until(
        self,
        key: Union[str, bytes],
        success: _console.Patterns,
        failure: _console.Patterns = (),
        *,
        interval: float,
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> _console.ConsoleMatch:
        """Sends `key` every `interval` seconds (first at once) until one of the patterns shows
        (boot menus, "press any key"), then returns as `console_wait` does."""
        _require("qm_console_interrupt_until")
        raw = _send_bytes(key, "key")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"interval must be seconds (a number), not {type(interval).__name__}")
        ms = int(interval * 1000.0) if math.isfinite(interval) else -1
        if not 0 <= ms < 2**32:
            raise ValueError(f"interval {interval!r} s does not fit the core's milliseconds")
        return self._console_match(
            _lib.qm_console_interrupt_until,
            raw,
            len(raw),
            ms,
            success=success,
            failure=failure,
            timeout=timeout,
            cancel=cancel,
        )

    def console_send(
        self,
        data: Union[str, bytes],
        *,
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> None:
        """Sends `data` (bytes, or a str as UTF-8) to the guest's console, waiting up to
        `timeout` while the console is full. Concurrent sends never interleave within one
        call's bytes. `ConsoleClosed` when the console is gone."""
        _require("qm_console_send")
        raw = _send_bytes(data, "data")
        self._call(
            _lib.qm_console_send,
            raw,
            len(raw),
            _ms(timeout, allow_default=False),
            _cancel_ptr(cancel),
        )

    def console_send_line(
        self,
        line: str,
        eol: str = "\n",
        *,
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> None:
        """Sends `line` then `eol` (the line ending the guest wants) as `console_send` does."""
        _require("qm_console_send_line")
        self._call(
            _lib.qm_console_send_line,
            _bytes(line, "line"),
            _bytes(eol, "eol"),
            _ms(timeout, allow_default=False),
            _cancel_ptr(cancel),
        )

    def console_transcript(self, last: Optional[int] = None) -> str:
        """The console output kept in memory (up to the cap), or its last `last` bytes, as
        text: invalid UTF-8 and NUL bytes become U+FFFD (the console log file has the exact
        bytes). Readable while QEMU runs and after its shutdown, until the next launch."""
        _require("qm_console_transcript")
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
            raise ValueError(f"last must be a positive int or None, not {last!r}")
        out = c_void_p()
        self._call(_lib.qm_console_transcript, last or 0, byref(out), None)
        return _ffi.take_string(out.value) or ""

    def console_stats(self) -> _console.ConsoleStats:
        """The console's counters."""
        _require("qm_console_stats")
        c = _ffi.ConsoleCounters()
        self._call(_lib.qm_console_stats, byref(c))
        return _console.ConsoleStats(
            received=c.received,
            kept=c.kept,
            unread=c.unread,
            dropped=c.dropped,
            raw_dropped=c.raw_dropped,
            cap=c.cap,
            closed=bool(c.closed),
        )

    def console_skip_unread(self) -> int:
        """Marks the output received so far as read (the next wait sees only newer output);
        returns how many bytes that skipped. The transcript keeps them."""
        _require("qm_console_skip_unread")
        n = c_size_t(0)
        self._call(_lib.qm_console_skip_unread, byref(n))
        return int(n.value)

    # ---- guest agent ---------------------------------------------------------------------

    @property
    def agent(self) -> Agent:
        """The guest agent (`qemu-ga`) of this machine (configure `guest_agent=` first)."""
        if self._agent is None:
            from ._agent import Agent

            self._agent = Agent(self)
        return self._agent

    # ---- shutdown ------------------------------------------------------------------------

    def shutdown(
        self, timeout: Timeout = DEFAULT, *, hard: bool = False, cancel: Optional[Cancel] = None
    ) -> None:
        """`quit` (SIGTERM without QMP), then waits for QEMU to exit (default 30 s); if it
        does not, kills it and raises `AbnormalShutdownError`. Cleanup always runs; does
        nothing when not launched."""
        self._call(_lib.qm_shutdown, bool(hard), _ms(timeout), _cancel_ptr(cancel))

    def kill(self) -> None:
        """SIGKILL, reap, clean up. Does nothing when not launched."""
        self._call(_lib.qm_kill)

    def wait(self, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None) -> None:
        """Waits for QEMU to exit by itself (default 30 s), then cleans up; kills it and
        raises `AbnormalShutdownError` when it does not exit in time."""
        self._call(_lib.qm_wait, _ms(timeout), _cancel_ptr(cancel))

    # ---- state -------------------------------------------------------------------------

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

    @property
    def is_running(self) -> bool:
        """True while QEMU runs."""
        return bool(self._peek(_lib.qm_is_running))

    @property
    def pid(self) -> Optional[int]:
        """QEMU's pid while it runs, else None."""
        pid = self._peek(_lib.qm_pid)
        return None if pid is None or pid < 0 else int(pid)

    @property
    def last_pid(self) -> Optional[int]:
        """The pid of the last QEMU launched (also after it exited)."""
        if _ffi.has("qm_last_pid"):
            pid = self._peek(_lib.qm_last_pid)
            return None if pid is None or pid < 0 else int(pid)
        return self._pid

    @property
    def qmp_timer(self) -> Optional[float]:
        """The QMP timer in seconds (None: no limit)."""
        _require("qm_get_qmp_timer")
        ms = c_int64(0)
        self._call(_lib.qm_get_qmp_timer, byref(ms))
        return None if ms.value < 0 else ms.value / 1000.0

    @property
    def exitcode(self) -> Optional[int]:
        """QEMU's exit status once it exited (negative: killed by that signal), else None."""
        if not self._h:
            return getattr(self, "_closed_exitcode", None)
        code = c_int(0)
        return code.value if self._peek(_lib.qm_exit_code, byref(code)) else None

    def get_log(self) -> Optional[str]:
        """What QEMU wrote to stdout/stderr, after a shutdown or a failed launch."""
        return self._string(_lib.qm_get_log)

    def get_log_so_far(self) -> Optional[str]:
        """What QEMU has written to stdout/stderr up to now (also while it runs); None before
        any launch."""
        _require("qm_get_log_so_far")
        return self._string(_lib.qm_get_log_so_far)

    def set_qmp_transcript(self, path: Optional[str]) -> None:
        """Writes every QMP message to and from QEMU to `path` as JSON lines (`t`, `dir`:
        out/in/event, `msg`), from the next launch; None turns it off."""
        _require("qm_set_qmp_transcript")
        self._call(_lib.qm_set_qmp_transcript, _opt_bytes(path, "qmp_transcript"))

    @property
    def temp_dir(self) -> str:
        """The machine's temporary directory (0700, created on first use, removed at
        shutdown)."""
        return self._string(_lib.qm_get_temp_dir) or ""

    @property
    def log_dir(self) -> Optional[str]:
        """The log directory, if one was set."""
        return self._string(_lib.qm_get_log_dir)

    @property
    def sock_dir(self) -> str:
        """The directory of socket files qm names."""
        return self._string(_lib.qm_get_sock_dir) or ""

    @property
    def name(self) -> str:
        """The machine's name."""
        return self._string(_lib.qm_get_name) or ""

    @property
    def binary(self) -> str:
        """The QEMU binary."""
        return self._string(_lib.qm_get_binary) or ""

    @property
    def args(self) -> List[str]:
        """The extra arguments (a copy)."""
        return list(self._json(_lib.qm_get_args))

    @property
    def command_line(self) -> List[str]:
        """The whole argv of the last launch."""
        return list(self._json(_lib.qm_get_command_line))

    # ---- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Shuts QEMU down if it runs (gracefully, the core's default timeout), then frees
        the machine. Further calls raise `StateError`. Idempotent."""
        with self._calls_cv:
            h = self._h
        if not h:
            return
        try:
            self.shutdown()
        except _errors.QMError as exc:
            self._log.warning("shutdown while closing the machine failed: %s", exc)
        self._closed_exitcode = self.exitcode  # readable after close (and a `with` block)
        self._free(kill=True)

    def _free(self, kill: bool) -> None:
        with self._calls_cv:
            h, self._h = self._h, None
            if not h:
                return
            # Calls in flight were failed by the shutdown; let them return before freeing.
            if kill:
                err = _ffi.ErrorP()
                if _lib.qm_kill(h, byref(err)) != _ffi.QM_OK:
                    _lib.qm_error_free(err)
            if not self._calls_cv.wait_for(lambda: self._calls == 0, timeout=60):
                self._log.warning("qm: calls still in flight after 60 s; leaking the handle")
                return
        _lib.qm_free(h)

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Collected while running: kill (never a 30 s graceful wait inside the collector).
        h, self._h = getattr(self, "_h", None), None
        if h:
            err = _ffi.ErrorP()
            if _lib.qm_kill(h, byref(err)) != _ffi.QM_OK:
                _lib.qm_error_free(err)
            _lib.qm_free(h)

    def __repr__(self) -> str:
        state = "closed" if not self._h else ("running" if self.is_running else "stopped")
        return f"<qm.Machine {self.name if self._h else ''} {state}>"


def has_caller_argv() -> bool:
    """Whether the loaded libqm can launch a caller-composed argv (`prepare_launch`,
    `launch_argv`): newer than 0.1."""
    return _ffi.has("qm_launch_prepare") and _ffi.has("qm_launch_argv")


def _require(name: str) -> None:
    if not _ffi.has(name):
        raise NotImplementedError(
            f"the loaded libqm ({_ffi.library_path()}) has no {name}: rebuild libqm from a "
            "qm version that has it"
        )


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
