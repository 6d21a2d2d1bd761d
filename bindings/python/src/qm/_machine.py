"""`Machine`: one QEMU virtual machine, a thin Pythonic layer over `qm_machine`.

Everything the core decides (default timeouts, event matching, the shutdown ladder, cleanup)
stays in the core: the binding converts Python values to C ones and back, and adapts idioms
(keyword configuration, float seconds, exceptions, context managers, a `socket.socket` console).

The class is assembled from one mixin per concern, in the order of the header's sections:
`_config` (configuration), `_run` (launch and shutdown), `_qmp` (commands and events),
`_console_calls`, `_state`; `_handle` holds the plumbing they share, `_convert` the value
conversions, `_cancel` the token. This module adds construction, the guest agent and the
machine's lifetime (close, context manager, collection).
"""

from __future__ import annotations

import logging
from ctypes import byref
from typing import Iterable, Optional, Union

from . import _ffi
from . import errors as _errors
from ._agent import Agent
from ._config import _Config
from ._console_calls import _ConsoleCalls
from ._convert import DEFAULT, MonitorSpec, Timeout, _bytes, _check, _Default
from ._guest_run import _GuestCalls
from ._qmp import _QMP
from ._run import _Run
from ._schema import _SchemaCalls
from ._state import _State

_lib = _ffi.lib


class Machine(_Config, _Run, _QMP, _ConsoleCalls, _State, _SchemaCalls, _GuestCalls):
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
        self._init_handle(logger, qmp_logger)
        self._agent: Optional[Agent] = None
        handle = _ffi.MachineP()
        err = _ffi.ErrorP()
        _check(_lib.qm_new(_bytes(binary, "binary"), byref(handle), byref(err)), err)
        self._h = handle
        if isinstance(args, (str, bytes)):
            # Iterating it would pass one argument per character.
            raise TypeError(
                "args must be a sequence of strings, not a single string "
                "(e.g. args=['-machine', 'none'] or args=shlex.split(text))"
            )
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

    # ---- guest agent ---------------------------------------------------------------------

    @property
    def agent(self) -> Agent:
        """The guest agent (`qemu-ga`) of this machine (configure `guest_agent=` first)."""
        if self._agent is None:
            self._agent = Agent(self)
        return self._agent

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
