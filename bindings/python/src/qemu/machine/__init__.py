"""qemu.machine, backed by qm: a drop-in for QEMU's own `qemu.machine` package.

`QEMUMachine` keeps the names, arguments and behaviour of QEMU's
`python/qemu/machine/machine.py`, but every process, socket, wait and shutdown goes through
libqm (see `qm`). `qemu` stays a namespace package: `qemu.qmp` (PyPI) and QEMU's in-tree
`qemu.utils` import beside this one.
"""

from .machine import (
    AbnormalShutdown,
    QEMUMachine,
    QEMUMachineAddDeviceError,
    QEMUMachineError,
    VMLaunchFailure,
)
from .qtest import QEMUQtestMachine, QEMUQtestProtocol

__all__ = (
    "QEMUMachine",
    "QEMUMachineError",
    "QEMUMachineAddDeviceError",
    "VMLaunchFailure",
    "AbnormalShutdown",
    "QEMUQtestMachine",
    "QEMUQtestProtocol",
)
