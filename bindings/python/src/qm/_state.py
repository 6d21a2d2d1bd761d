"""What `qm.Machine` reports about itself and its last run. Every call returns at once."""

from __future__ import annotations

from ctypes import byref, c_int, c_int64
from typing import List, Optional

from . import _ffi
from ._handle import MachineHandle

_lib = _ffi.lib


class _State(MachineHandle):
    """State queries."""

    # QEMU's exit status, kept by `close()` so that it stays readable after a `with` block.
    _closed_exitcode: Optional[int] = None

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
        pid = self._peek(_lib.qm_last_pid)
        return None if pid is None or pid < 0 else int(pid)

    @property
    def qmp_timer(self) -> Optional[float]:
        """The QMP timer in seconds (None: no limit)."""
        ms = c_int64(0)
        self._call(_lib.qm_get_qmp_timer, byref(ms))
        return None if ms.value < 0 else ms.value / 1000.0

    @property
    def exitcode(self) -> Optional[int]:
        """QEMU's exit status once it exited (negative: killed by that signal), else None."""
        if not self._h:
            return self._closed_exitcode
        code = c_int(0)
        return code.value if self._peek(_lib.qm_exit_code, byref(code)) else None

    def get_log(self) -> Optional[str]:
        """What QEMU wrote to stdout/stderr, after a shutdown or a failed launch."""
        return self._string(_lib.qm_get_log)

    def get_log_so_far(self) -> Optional[str]:
        """What QEMU has written to stdout/stderr up to now (also while it runs); None before
        any launch."""
        return self._string(_lib.qm_get_log_so_far)

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
