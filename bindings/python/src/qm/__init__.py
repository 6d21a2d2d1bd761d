"""qm: launch and drive QEMU virtual machines (Python binding of libqm's C API).

    import qm
    with qm.Machine("qemu-system-x86_64", machine="none") as vm:
        vm.launch()
        print(vm.cmd("query-status"))

`qemu.machine` (installed alongside) is a drop-in for QEMU's own `QEMUMachine`.
"""

from . import _log, guest
from ._agent import Agent, ExecResult
from ._attach import AttachedMachine, attach
from ._cancel import Cancel
from ._console import ConsoleMatch, ConsoleStats, Regex
from ._convert import DEFAULT, DEFAULT_TIMEOUT, conv_keys
from ._fake import fake_qemu_path
from ._ffi import library_path
from ._guest_run import Channel, Guest, RunResult, linux_guest_args
from ._library import has_caller_argv, set_log_level, version
from ._machine import Machine
from ._qmp import event_match
from ._run import launch_all
from ._schema import Schema
from ._template import (
    ConsoleReady,
    Template,
    launch_incoming,
    migrate,
    restore_state,
    run_job,
    save_state,
    wait_migration,
)
from .errors import (
    AbnormalShutdownError,
    ConsoleClosed,
    ConsoleFailure,
    DisconnectedError,
    EventsDropped,
    InternalError,
    Interrupted,
    InvalidArgumentError,
    LaunchError,
    ProtocolError,
    QMError,
    QMOSError,
    QMPError,
    RefusedError,
    StateError,
    TimeoutError,
)

#: The version of the package: the bundled library's (one version, Cargo.toml's).
__version__ = version()

#: Whether qm's own log records go to Python's logging (loggers `qm.*`) instead of stderr.
CORE_LOGS_TO_LOGGING = _log.install()

__all__ = [
    "ConsoleReady",
    "Template",
    "launch_all",
    "launch_incoming",
    "migrate",
    "restore_state",
    "run_job",
    "save_state",
    "wait_migration",
    "DEFAULT",
    "DEFAULT_TIMEOUT",
    "AbnormalShutdownError",
    "Agent",
    "AttachedMachine",
    "Cancel",
    "Channel",
    "ConsoleClosed",
    "ConsoleFailure",
    "ConsoleMatch",
    "ConsoleStats",
    "DisconnectedError",
    "EventsDropped",
    "ExecResult",
    "Guest",
    "InternalError",
    "Interrupted",
    "InvalidArgumentError",
    "LaunchError",
    "Machine",
    "ProtocolError",
    "QMError",
    "QMOSError",
    "QMPError",
    "RefusedError",
    "Regex",
    "RunResult",
    "Schema",
    "StateError",
    "TimeoutError",
    "conv_keys",
    "attach",
    "event_match",
    "fake_qemu_path",
    "guest",
    "has_caller_argv",
    "library_path",
    "linux_guest_args",
    "set_log_level",
    "version",
]
