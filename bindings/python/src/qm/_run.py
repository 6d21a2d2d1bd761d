"""Starting and ending a run of `qm.Machine`: launch (also a prepared, caller-composed
argv), shutdown, kill, wait."""

from __future__ import annotations

import logging
from ctypes import c_int
from typing import List, Optional, Sequence

from . import _ffi
from ._cancel import Cancel, _cancel_ptr
from ._convert import (
    DEFAULT,
    Timeout,
    _bytes,
    _fd,
    _ms,
)
from ._handle import MachineHandle

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
