"""`Agent`: the guest agent (`qemu-ga`) of a `Machine`, over `qm_agent_*`.

Syncing, framing, queueing callers, polling `guest-exec-status`, chunking files and the
default timeout (30 s, `qm.DEFAULT`) are the core's; this module converts arguments and
results.
"""

from __future__ import annotations

import ctypes
import json
from ctypes import byref, c_int, c_int64, c_size_t, c_void_p
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from . import _ffi
from ._cancel import Cancel, _cancel_ptr
from ._convert import DEFAULT, Timeout, _args_dict, _bytes, _json_arg, _ms, _send_bytes
from ._handle import MachineHandle

_lib = _ffi.lib


@dataclass(frozen=True)
class ExecResult:
    """How a program run by `Agent.exec` ended, and what it wrote."""

    #: Its pid in the guest.
    pid: int
    #: Its exit status when it exited, else None.
    exitcode: Optional[int]
    #: The signal that killed it, else None.
    signal: Optional[int]
    #: Captured stdout (empty without `capture`).
    stdout: bytes
    #: Captured stderr.
    stderr: bytes
    #: stdout was longer than the cap (`max_output`, or the agent's 16 MiB).
    stdout_truncated: bool
    #: stderr was longer than the cap.
    stderr_truncated: bool

    @property
    def truncated(self) -> bool:
        """Either stream was cut at the cap."""
        return self.stdout_truncated or self.stderr_truncated


def _stream(fn: Any, res: Any) -> bytes:
    n = c_size_t(0)
    ptr = fn(res, byref(n))
    return ctypes.string_at(ptr, n.value) if ptr and n.value else b""


def _strings(items: Iterable[str], what: str) -> list[bytes]:
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of strings, not a single string")
    return [_bytes(item, what) for item in items]


class Agent:
    """The guest agent of a machine launched with `guest_agent=` (`Machine.agent`).

    Calls queue on the channel (the agent is sequential) in arrival order; each call's
    `timeout` (seconds; `qm.DEFAULT`: the core's 30 s; None: no limit) includes its time in
    the queue, and `cancel` interrupts it. Agent errors raise `qm.QMPError` (class and
    description); calls before launch or without a channel `StateError`."""

    def __init__(self, machine: MachineHandle) -> None:
        self._m = machine

    def _call(self, name: str, *args: Any) -> None:
        self._m._call(getattr(_lib, name), *args)

    def sync(self, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None) -> None:
        """Waits until the agent answers (right after launch: until the guest has booted and
        started `qemu-ga`). Other calls sync by themselves when needed."""
        self._call("qm_agent_sync", _ms(timeout), _cancel_ptr(cancel))

    def ping(self, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None) -> None:
        """`guest-ping`: returns when the agent answers."""
        self._call("qm_agent_ping", _ms(timeout), _cancel_ptr(cancel))

    def _json(self, name: str, *args: Any) -> Any:
        out = c_void_p()
        self._call(name, *args, byref(out))
        text = _ffi.take_string(out.value)
        return None if text is None else json.loads(text)

    def execute(
        self,
        cmd: str,
        args: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> Dict[str, Any]:
        """Runs agent command `cmd` and returns the agent's whole reply (`{"return": ...}` or
        `{"error": ...}`: an agent error is not raised here)."""
        raw = _json_arg(_args_dict(args), "agent arguments")
        reply = self._json(
            "qm_agent_execute", _bytes(cmd, "command"), raw, _ms(timeout), _cancel_ptr(cancel)
        )
        return reply  # type: ignore[no-any-return]

    def cmd(
        self,
        cmd: str,
        args: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> Any:
        """Runs agent command `cmd` and returns its `return` value; an agent error raises
        `qm.QMPError`."""
        raw = _json_arg(_args_dict(args), "agent arguments")
        return self._json(
            "qm_agent_cmd", _bytes(cmd, "command"), raw, _ms(timeout), _cancel_ptr(cancel)
        )

    def exec(
        self,
        path: str,
        args: Iterable[str] = (),
        env: Union[None, Mapping[str, str], Iterable[str]] = None,
        input: Union[None, str, bytes] = None,
        capture: bool = True,
        max_output: Optional[int] = None,
        *,
        interval: Optional[float] = None,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> ExecResult:
        """Runs `path` (absolute, or looked up in the agent's PATH) in the guest with `args`
        (argv[1:]), `env` (a mapping, or `NAME=VALUE` strings) and `input` on its stdin, and
        waits until it ends (polling every `interval` seconds; None: the core's 10 ms). With
        `capture` its stdout and stderr are kept, at most `max_output` bytes each (None: the
        agent's 16 MiB). When the wait ends first (`TimeoutError`, `Interrupted`) the program
        keeps running in the guest; the error names its pid."""
        argv = _strings(args, "exec argument")
        if env is None:
            envv: list[bytes] = []
        elif isinstance(env, Mapping):
            envv = [_bytes(f"{k}={v}", "environment entry") for k, v in env.items()]
        else:
            envv = _strings(env, "environment entry")
        data = b"" if input is None else _send_bytes(input, "input")
        if max_output is not None and (
            isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 1
        ):
            raise ValueError(f"max_output must be a positive int or None, not {max_output!r}")
        if interval is None:
            interval_ms = _ffi.QM_WAIT_DEFAULT
        else:
            interval_ms = _ms(interval, "interval", allow_default=False)
        out = _ffi.ExecResultP()
        self._call(
            "qm_agent_exec",
            _bytes(path, "path"),
            _ffi.str_array(argv),
            len(argv),
            _ffi.str_array(envv),
            len(envv),
            data or None,
            len(data),
            bool(capture),
            max_output or 0,
            interval_ms,
            _ms(timeout),
            _cancel_ptr(cancel),
            byref(out),
        )
        try:
            code, sig = c_int(0), c_int(0)
            return ExecResult(
                pid=int(_lib.qm_exec_result_pid(out)),
                exitcode=code.value if _lib.qm_exec_result_exit_code(out, byref(code)) else None,
                signal=sig.value if _lib.qm_exec_result_signal(out, byref(sig)) else None,
                stdout=_stream(_lib.qm_exec_result_stdout, out),
                stderr=_stream(_lib.qm_exec_result_stderr, out),
                stdout_truncated=bool(_lib.qm_exec_result_stdout_truncated(out)),
                stderr_truncated=bool(_lib.qm_exec_result_stderr_truncated(out)),
            )
        finally:
            _lib.qm_exec_result_free(out)

    def read_file(
        self,
        path: str,
        max_bytes: int,
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> bytes:
        """The whole guest file `path`; `InvalidArgumentError` when it holds more than
        `max_bytes`, `QMPError` for the agent's errors (no such file ...)."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative int, not {max_bytes!r}")
        ptr, n = c_void_p(), c_size_t(0)
        self._call(
            "qm_agent_file_read",
            _bytes(path, "path"),
            max_bytes,
            _ms(timeout),
            _cancel_ptr(cancel),
            byref(ptr),
            byref(n),
        )
        if not ptr.value:
            return b""
        try:
            return ctypes.string_at(ptr.value, n.value)
        finally:
            _lib.qm_bytes_free(ptr.value, n.value)

    def write_file(
        self,
        path: str,
        data: Union[str, bytes],
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> None:
        """Writes `data` (bytes, or a str as UTF-8) to the guest file `path`, creating or
        truncating it."""
        raw = _send_bytes(data, "data")
        self._call(
            "qm_agent_file_write",
            _bytes(path, "path"),
            raw or None,
            len(raw),
            _ms(timeout),
            _cancel_ptr(cancel),
        )

    def shutdown(
        self,
        mode: Optional[str] = None,
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> None:
        """`guest-shutdown` with `mode` ("powerdown", the default, "halt" or "reboot").
        Returns once the agent took it (or the channel closed with the guest); wait for the
        `SHUTDOWN` event or QEMU's exit separately."""
        self._call(
            "qm_agent_shutdown",
            None if mode is None else _bytes(mode, "mode"),
            _ms(timeout),
            _cancel_ptr(cancel),
        )

    def osinfo(
        self, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None
    ) -> Dict[str, Any]:
        """`guest-get-osinfo` (`id`, `kernel-release`, `machine` ...)."""
        info = self._json("qm_agent_get_osinfo", _ms(timeout), _cancel_ptr(cancel))
        return info  # type: ignore[no-any-return]

    def time(self, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None) -> int:
        """`guest-get-time`: the guest's clock, in nanoseconds since the Unix epoch (as
        `time.time_ns()`)."""
        ns = c_int64(0)
        self._call("qm_agent_get_time", _ms(timeout), _cancel_ptr(cancel), byref(ns))
        return int(ns.value)
