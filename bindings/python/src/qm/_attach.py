"""Attaching to a QEMU someone else started: `attach()` and `AttachedMachine`.

The core does the work (`qm_attach`): this module converts arguments and adapts idioms. qm
never kills or reaps a QEMU it did not start: `shutdown`, `kill`, `wait`, `close` and garbage
collection of an attached machine *detach* (close qm's connections) and leave QEMU running.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from . import _ffi
from ._cancel import Cancel, _cancel_ptr
from ._convert import DEFAULT, Timeout, _bytes, _ms, _opt_bytes
from ._machine import Machine

_lib = _ffi.lib

Address = Union[str, "os.PathLike[str]"]


class AttachedMachine(Machine):
    """A `Machine` that can attach to a QEMU someone else started (`attach`), as well as
    launch one. Every other method is `Machine`'s: commands, events, waits and the guest
    agent work the same once attached."""

    def attach(
        self,
        address: Address,
        agent: Optional[Address] = None,
        timeout: Timeout = DEFAULT,
        *,
        cancel: Optional[Cancel] = None,
    ) -> None:
        """Connects to the QMP monitor of a running QEMU at `address` (``"unix:PATH"``,
        ``"tcp:HOST:PORT"`` or a path; QEMU listening with e.g. ``-qmp
        unix:PATH,server=on,wait=off``) and negotiates QMP, within `timeout` seconds (default:
        the QMP timer). With `agent` (a unix socket path: the chardev of the guest agent's
        ``virtserialport``), `agent` calls work too.

        There is no pid, exit code, console or QEMU log. `shutdown()` detaches and QEMU keeps
        running; to stop it, ``cmd("quit")`` first (`shutdown()` then waits for QEMU to close
        the monitor). QEMU serves one monitor client at a time: while another is connected
        this raises `qm.TimeoutError`. `StateError` when launched or attached already."""
        self._call(
            _lib.qm_attach,
            _bytes(address, "address"),
            _opt_bytes(agent, "agent"),
            _ms(timeout),
            _cancel_ptr(cancel),
        )

    def __enter__(self) -> AttachedMachine:
        return self

    @property
    def is_attached(self) -> bool:
        """True while attached (see `attach`), until detached."""
        return bool(self._peek(_lib.qm_is_attached))


def attach(
    address: Address,
    agent: Optional[Address] = None,
    timeout: Timeout = DEFAULT,
    *,
    cancel: Optional[Cancel] = None,
    **config: Any,
) -> AttachedMachine:
    """A machine attached to the QEMU whose QMP monitor listens at `address` (see
    `AttachedMachine.attach`); `config` takes `Machine`'s keywords that apply to an attached
    machine (``qmp_transcript``, ``max_queued_events``, ``name``, ``logger``...). Use it as a
    context manager: leaving the block detaches, and QEMU keeps running::

        with qm.attach("unix:/tmp/qmp.sock") as vm:
            print(vm.cmd("query-status"))
    """
    vm = AttachedMachine(**config)
    try:
        vm.attach(address, agent, timeout, cancel=cancel)
    except BaseException:
        vm.close()
        raise
    return vm
