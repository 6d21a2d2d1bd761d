"""`Guest`: a machine's guest over the console or the guest agent (`qm_guest_*`): run a shell
command and get its output and exit status, copy files in and out, wait until it is ready.

The framing on the console, the agent's `guest-exec`, what is removed from the output and the
default timeout (30 s, `qm.DEFAULT`) are the core's; this module converts arguments and
results.
"""

from __future__ import annotations

import ctypes
import enum
import json
from ctypes import POINTER, byref, c_bool, c_char_p, c_int, c_int64, c_size_t, c_void_p
from dataclasses import dataclass
from typing import List, Optional

from . import _ffi
from ._cancel import Cancel, _cancel_ptr
from ._convert import DEFAULT, Timeout, _bytes, _check, _ms, _send_bytes
from ._handle import MachineHandle

_lib = _ffi.lib


class _RunResult(ctypes.Structure):
    """Opaque `qm_run_result`."""


_RunResultP = POINTER(_RunResult)
_M, _E, _C = _ffi.MachineP, _ffi.ErrOut, _ffi.CancelP
for _name, (_res, _argt) in {
    "qm_guest_run": (c_int, [_M, c_int, c_char_p, c_int64, _C, POINTER(_RunResultP), _E]),
    "qm_guest_wait_ready": (c_int, [_M, c_int, c_int64, _C, _E]),
    "qm_guest_write_file": (c_int, [_M, c_int, c_char_p, c_char_p, c_size_t, c_int64, _C, _E]),
    "qm_guest_read_file": (
        c_int,
        [_M, c_int, c_char_p, c_size_t, c_int64, _C, POINTER(c_void_p), POINTER(c_size_t), _E],
    ),
    "qm_run_result_status": (c_int, [_RunResultP]),
    "qm_run_result_stdout": (c_void_p, [_RunResultP, POINTER(c_size_t)]),
    "qm_run_result_stderr": (c_void_p, [_RunResultP, POINTER(c_size_t)]),
    "qm_run_result_has_stderr": (c_bool, [_RunResultP]),
    "qm_run_result_kernel_messages": (c_int, [_RunResultP, _ffi.StrOut, _E]),
    "qm_run_result_free": (None, [_RunResultP]),
    "qm_linux_guest_qemu_args": (c_int, [c_char_p, c_char_p, _ffi.StrOut, _E]),
}.items():
    _fn = getattr(_lib, _name)
    _fn.restype, _fn.argtypes = _res, _argt


class Channel(enum.IntEnum):
    """How a `Guest` talks to the guest."""

    #: The console (`console=True`): a shell at its prompt on the serial port; stdout and
    #: stderr merged; kernel messages cut out; the shell keeps `cd` and variables between runs.
    #: A run that times out or is cancelled sends Ctrl-C; the next run resynchronises.
    CONSOLE = 0
    #: The guest agent (`guest_agent=True`): `/bin/sh -c COMMAND` through `guest-exec`;
    #: stderr apart; each run is a fresh shell.
    AGENT = 1


@dataclass(frozen=True)
class RunResult:
    """What a command run in the guest printed and how it ended."""

    #: The exit status as a shell's `$?` has it: 0-255, 128 + N after signal N.
    status: int
    #: What it wrote to stdout (over the console: stdout and stderr together, as written).
    stdout: bytes
    #: What it wrote to stderr; None over the console, which has no separate stderr.
    stderr: Optional[bytes]
    #: Kernel messages the console printed while it ran, cut out of `stdout`.
    kernel_messages: List[str]

    @property
    def ok(self) -> bool:
        """The status is 0."""
        return self.status == 0


def _bytes_of(fn: object, res: object) -> Optional[bytes]:
    n = c_size_t(0)
    ptr = fn(res, byref(n))  # type: ignore[operator]
    return ctypes.string_at(ptr, n.value) if ptr and n.value else b""


class Guest:
    """A machine's guest seen through one channel (`Machine.guest(channel)`). Every call takes
    `timeout` (seconds; `qm.DEFAULT`: the core's 30 s; None: no limit) and `cancel`."""

    def __init__(self, machine: MachineHandle, channel: Channel) -> None:
        self._m = machine
        self.channel = Channel(channel)

    def run(
        self, command: str, *, timeout: Timeout = DEFAULT, cancel: Optional[Cancel] = None
    ) -> RunResult:
        """Runs the shell `command` in the guest; a failed command is a result with a nonzero
        `status`, not an exception. Over the console the command is one line (about 870 bytes
        at most); a console that closes during the run (the guest powered off or died) raises
        `qm.ConsoleClosed` at once."""
        out = _RunResultP()
        self._m._call(
            _lib.qm_guest_run,
            int(self.channel),
            _bytes(command, "command"),
            _ms(timeout),
            _cancel_ptr(cancel),
            byref(out),
        )
        try:
            js, err = c_void_p(), _ffi.ErrorP()
            _check(_lib.qm_run_result_kernel_messages(out, byref(js), byref(err)), err)
            return RunResult(
                status=int(_lib.qm_run_result_status(out)),
                stdout=_bytes_of(_lib.qm_run_result_stdout, out) or b"",
                stderr=(
                    _bytes_of(_lib.qm_run_result_stderr, out)
                    if _lib.qm_run_result_has_stderr(out)
                    else None
                ),
                kernel_messages=list(json.loads(_ffi.take_string(js.value) or "[]")),
            )
        finally:
            _lib.qm_run_result_free(out)

    def wait_ready(self, *, timeout: Timeout = DEFAULT, cancel: Optional[Cancel] = None) -> None:
        """Waits until the guest answers: over the console until its shell runs a no-op
        command (retried with Ctrl-C), over the agent until `guest-sync` is answered."""
        self._m._call(
            _lib.qm_guest_wait_ready, int(self.channel), _ms(timeout), _cancel_ptr(cancel)
        )

    def write_file(
        self,
        path: str,
        data: bytes,
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> None:
        """Writes `data` to the guest file `path`, creating or truncating it (over the console:
        `printf` lines of a few hundred bytes each, fine for small files)."""
        raw = _send_bytes(data, "data")
        self._m._call(
            _lib.qm_guest_write_file,
            int(self.channel),
            _bytes(path, "path"),
            raw or None,
            len(raw),
            _ms(timeout),
            _cancel_ptr(cancel),
        )

    def read_file(
        self,
        path: str,
        max_bytes: int,
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> bytes:
        """The whole guest file `path` (at most `max_bytes`; over the console verbatim through
        `cat`)."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative int, not {max_bytes!r}")
        ptr, n = c_void_p(), c_size_t(0)
        self._m._call(
            _lib.qm_guest_read_file,
            int(self.channel),
            _bytes(path, "path"),
            max_bytes,
            _ms(timeout),
            _cancel_ptr(cancel),
            byref(ptr),
            byref(n),
        )
        try:
            return ctypes.string_at(ptr.value, n.value) if ptr.value else b""
        finally:
            if ptr.value:
                _lib.qm_bytes_free(ptr, n)


class _GuestCalls(MachineHandle):
    """`Machine.guest`, `Machine.console_run`."""

    def guest(self, channel: Channel) -> Guest:
        """This machine's guest over `channel` (`qm.Channel.CONSOLE` or `qm.Channel.AGENT`)."""
        return Guest(self, channel)

    def console_run(
        self, command: str, *, timeout: Timeout = DEFAULT, cancel: Optional[Cancel] = None
    ) -> RunResult:
        """`guest(Channel.CONSOLE).run(command)`."""
        return Guest(self, Channel.CONSOLE).run(command, timeout=timeout, cancel=cancel)


def linux_guest_args(kernel: Optional[str] = None, initrd: Optional[str] = None) -> List[str]:
    """The QEMU arguments that boot the Linux test guest (guest/linux): `kernel` and `initrd`
    as given, or, both None, the files named by QM_LINUX_KERNEL and QM_LINUX_INITRD, else the
    newest build under QM_LINUX_GUEST_DIR. Add a console (`console=True`) and the agent
    (`guest_agent=True`) for the channels; the guest prints `qm-guest: ready` once up."""
    if (kernel is None) != (initrd is None):
        raise ValueError("give both kernel and initrd, or neither")
    out = c_void_p()
    err = _ffi.ErrorP()
    _check(
        _lib.qm_linux_guest_qemu_args(
            None if kernel is None else _bytes(kernel, "kernel"),
            None if initrd is None else _bytes(initrd, "initrd"),
            byref(out),
            byref(err),
        ),
        err,
    )
    return list(json.loads(_ffi.take_string(out.value) or "[]"))
