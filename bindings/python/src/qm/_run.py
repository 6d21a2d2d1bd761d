"""Starting and ending a run of `qm.Machine`: launch (also a prepared, caller-composed
argv), shutdown, kill, wait."""

from __future__ import annotations

import logging
from ctypes import c_int
from typing import TYPE_CHECKING, List, Optional, Sequence

from . import _ffi, errors
from ._cancel import Cancel, _cancel_ptr
from ._convert import (
    DEFAULT,
    Timeout,
    _bytes,
    _fd,
    _ms,
)
from ._handle import MachineHandle

if TYPE_CHECKING:
    from ._machine import Machine

_lib = _ffi.lib


class _Run(MachineHandle):
    """Launch and shutdown."""

    def launch(self, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None) -> None:
        """Starts QEMU and negotiates QMP, within `timeout` seconds (default: the QMP timer);
        raises `LaunchError` (exit code, command line, QEMU's output, cause) when it fails,
        leaving nothing behind."""
        self._call(_lib.qm_launch, _ms(timeout), _cancel_ptr(cancel))
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug(
                "VM launch command: %r", " ".join(self._json(_lib.qm_get_command_line))
            )

    def prepare_launch(self) -> List[str]:
        """The arguments qm puts between the binary and the extra ones, with the descriptor
        numbers QEMU will see; creates the monitor and console sockets (needs a libqm with
        `qm_launch_prepare`). Follow with `launch_argv`, or `abort_launch`."""
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

    def abort_launch(self) -> None:
        """Releases what `prepare_launch` created, when not launching after all."""
        self._call(_lib.qm_launch_abort)

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


def launch_all(
    machines: Sequence[Machine],
    timeout: Timeout = DEFAULT,
    *,
    cancel: Optional[Cancel] = None,
) -> List[Optional[errors.QMError]]:
    """Launches `machines` at once from this thread and returns one entry per machine, in the
    same order: None when it launched, else the exception `launch` would have raised for it
    (returned, not raised). The cheaper way to start many machines: no thread per machine.

    Every QEMU is started first, then each is connected and negotiated in the order they become
    ready, all within one `timeout` in seconds (default: the largest QMP timer of the machines;
    None: no limit) or until `cancel` fires. One machine's failure leaves the others alone:
    `StateError` when launched already, `LaunchError` (cleaned up) when its launch failed,
    `Interrupted` when `cancel` had fired, `InvalidArgumentError` for a machine given twice
    (launched once, for its first place). A closed machine gets `StateError`; closing a machine
    waits for the batch to return."""
    ms = list(machines)
    results: List[Optional[errors.QMError]] = [None] * len(ms)
    ms_ms = _ms(timeout)
    cancel_p = _cancel_ptr(cancel)
    entered: List[MachineHandle] = []
    handles = []
    place: List[int] = []
    errs = (_ffi.ErrorP * max(len(ms), 1))()
    try:
        for i, m in enumerate(ms):
            if not isinstance(m, MachineHandle):
                raise TypeError(f"machines[{i}] is a {type(m).__name__}, not a qm.Machine")
            try:
                handles.append(m._enter())
            except errors.StateError as exc:
                results[i] = exc
                continue
            entered.append(m)
            place.append(i)
        if not handles:
            return results
        arr = (_ffi.MachineP * len(handles))(*handles)
        _lib.qm_launch_all(arr, len(handles), ms_ms, cancel_p, errs)
    finally:
        for held in entered:
            held._leave()
    for k, i in enumerate(place):
        err = errs[k]
        if err:
            results[i] = errors.from_c(_lib.qm_error_status(err), err)
    return results
