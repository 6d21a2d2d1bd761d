"""QEMUMachine: QEMU's `qemu.machine.machine` API, run by libqm.

Names, arguments, attributes and hooks are those of QEMU's `python/qemu/machine/machine.py`
(so harnesses that subclass it keep working); what happens underneath is qm's: the process,
the monitor, events, the console drain, the shutdown ladder and cleanup are the core's
(through `qm.Machine`). Where the original misbehaves (hangs, lost event order, leaked temp
dirs ...), qm's behaviour wins: bindings/python/README.md lists each difference.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import subprocess
from itertools import chain
from types import TracebackType
from typing import (
    Any,
    BinaryIO,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

import qm

from . import console_socket

LOG = logging.getLogger(__name__)

#: Whether the loaded libqm launches a caller-composed argv (qm_launch_prepare/_argv). Without
#: it the core composes the command line (qm_launch): `_base_args` overrides cannot reach QEMU.
QMP_LOG = logging.getLogger("qemu.qmp.qmp_client")

SocketAddrT = Union[str, Tuple[str, int]]
QMPMessage = Dict[str, Any]
#: What `cmd` returns: any JSON value (the original says `object`; `Any` spares callers casts).
QMPReturnValue = Any


class QEMUMachineError(Exception):
    """Exception called when an error in QEMUMachine happens."""


class QEMUMachineAddDeviceError(QEMUMachineError):
    """A request to add a device can not be fulfilled (a limitation or a conflict of the
    QEMUMachine methods, not a failure reported by QEMU)."""


class VMLaunchFailure(QEMUMachineError):
    """A VM launch was attempted, but failed."""

    def __init__(self, exitcode: Optional[int], command: str, output: Optional[str]):
        super().__init__(exitcode, command, output)
        self.exitcode = exitcode
        self.command = command
        self.output = output

    def __str__(self) -> str:
        text = ""
        if self.__cause__ is not None:
            name = type(self.__cause__).__name__
            reason = str(self.__cause__)
            text += f"{name}: {reason}" if reason else name
        text += "\n"
        if self.exitcode is not None:
            text += f"\tExit code: {self.exitcode}\n"
        text += f"\tCommand: {self.command}\n"
        text += f"\tOutput: {self.output}\n"
        return text


class AbnormalShutdown(QEMUMachineError):
    """A graceful shutdown was requested, but not performed."""


class _NoConnection(QEMUMachineError, qm.StateError):
    """QMP used with no connection (not launched, QMP off, or shut down)."""

    def __init__(self, message: str) -> None:
        QEMUMachineError.__init__(self, message)
        self.message = message
        self.os_errno = None


_T = TypeVar("_T", bound="QEMUMachine")


class _Process:
    """What the original keeps in `_popen` (a `subprocess.Popen`), for harnesses that read
    `_popen.pid` / `_popen.returncode` or call `poll`, `wait`, `send_signal`, `kill`."""

    def __init__(self, vm: qm.Machine, args: Sequence[str]) -> None:
        self._vm = vm
        self.args = list(args)
        self.pid: int = vm.last_pid or -1

    @property
    def returncode(self) -> Optional[int]:
        """QEMU's exit status once it exited, else None."""
        return self._vm.exitcode

    def poll(self) -> Optional[int]:
        """The exit status, or None while QEMU runs."""
        return self._vm.exitcode

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for QEMU to exit (without cleaning up): `subprocess.TimeoutExpired` after
        `timeout` seconds."""
        code = self._vm.exitcode
        if code is not None:
            return code
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            pidfd = -1
        try:
            if pidfd >= 0:
                ready, _, _ = select.select([pidfd], [], [], timeout)
                if ready:
                    while (code := self._vm.exitcode) is None and self._vm.is_running:
                        select.select([], [], [], 0.001)  # the core reaps right after
                    return self._vm.exitcode if self._vm.exitcode is not None else -1
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        code = self._vm.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        """Sends `sig` to QEMU while it runs."""
        if self._vm.is_running:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


class _QMPConnection:
    """What the original keeps in `_qmp_connection` (a legacy `QEMUMonitorProtocol`): the
    calls harnesses make on `vm._qmp` directly."""

    def __init__(self, vm: qm.Machine) -> None:
        self._vm = vm
        self._timeout: Any = qm.DEFAULT

    def settimeout(self, timeout: Optional[float]) -> None:
        """Bounds the commands sent through this object from now on: seconds, or None for no
        limit (the legacy client's socket timeout). Until it is called, commands use the
        machine's QMP timer."""
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float))
        ):
            raise TypeError(f"timeout must be seconds or None, not {type(timeout).__name__}")
        self._timeout = timeout

    def cmd_raw(self, name: str, args: Optional[Dict[str, object]] = None) -> QMPMessage:
        """The whole reply of a command."""
        return self._vm.qmp(name, args, timeout=self._timeout)

    def cmd_obj(self, qmp_cmd: QMPMessage) -> QMPMessage:
        """Runs `{"execute": ..., "arguments": ...}` and returns the whole reply."""
        return self._vm.qmp(qmp_cmd["execute"], qmp_cmd.get("arguments"), timeout=self._timeout)

    def cmd(self, cmd: str, **kwds: object) -> QMPReturnValue:
        """The `return` value of a command (raises on an error reply)."""
        return self._vm.cmd(cmd, kwds or None, timeout=self._timeout)

    #: The legacy client's older name of `cmd`.
    command = cmd

    def pull_event(self, wait: Union[bool, float] = False) -> Optional[QMPMessage]:
        """One event (see QEMUMachine.get_qmp_event)."""
        return self._vm.get_event(_wait_seconds(wait))

    def get_events(self, wait: Union[bool, float] = False) -> List[QMPMessage]:
        """Every queued event."""
        return self._vm.get_events(_wait_seconds(wait))

    def clear_events(self) -> None:
        """Drops every queued event."""
        self._vm.clear_events()

    def send_fd_scm(self, fd: int) -> None:
        """Sends a descriptor with SCM_RIGHTS."""
        self._vm.send_fd(fd)

    def close(self) -> None:
        """Nothing to do: the connection belongs to qm, which closes it at shutdown."""


def _wait_seconds(wait: Union[bool, float, None]) -> Optional[float]:
    """`pull_event`'s `wait`: False/0 looks only, True waits forever, a number is seconds."""
    if wait is True:
        return None
    if wait is False or wait is None:
        return 0
    if isinstance(wait, (int, float)):
        return float(wait)
    raise TypeError(f"wait must be a bool or seconds, not {type(wait).__name__}")


class QEMUMachine:
    """A QEMU VM.

    Use this object as a context manager to ensure the QEMU process terminates::

        with QEMUMachine(binary) as vm:
            ...
        # vm is guaranteed to be shut down here
    """

    # pylint: disable=too-many-instance-attributes, too-many-public-methods

    def __init__(
        self,
        binary: str,
        args: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        name: Optional[str] = None,
        base_temp_dir: str = "/var/tmp",
        monitor_address: Optional[SocketAddrT] = None,
        drain_console: bool = False,
        console_log: Optional[str] = None,
        log_dir: Optional[str] = None,
        qmp_timer: Optional[float] = 30,
        sock_dir: Optional[str] = None,
    ):
        """
        :param binary: path to the qemu binary
        :param args: list of extra arguments
        :param wrapper: list of arguments used as prefix to qemu binary
        :param name: prefix for socket and log file names (default: id of this object)
        :param base_temp_dir: where the temporary directory is created
        :param monitor_address: address for the QMP monitor (a unix path or (host, port);
            default: a socketpair)
        :param drain_console: keep reading the console into memory (so QEMU never blocks)
        :param console_log: path of a file every console byte is appended to
        :param log_dir: where to keep QEMU's output as <name>.log
        :param qmp_timer: bound of the QMP handshake, and default QMP timeout (None: none)
        :param sock_dir: where socket files qm names go (the older QEMUMachine's argument)
        """
        # pylint: disable=too-many-arguments
        if not isinstance(binary, (str, os.PathLike)):
            raise TypeError(f"binary must be a str, not {type(binary).__name__}")
        if isinstance(args, (str, bytes)) or isinstance(wrapper, (str, bytes)):
            raise TypeError("args and wrapper must be sequences of strings, not a string")
        self._binary = os.fspath(binary)
        self._args = list(args)
        self._wrapper = wrapper
        self._qmp_timer = qmp_timer
        self._name = name or f"{id(self):x}"
        self._temp_dir_override: Optional[str] = None
        self._base_temp_dir = base_temp_dir
        self._sock_dir = sock_dir
        self._log_dir = log_dir
        self._monitor_address = monitor_address
        self._console_log_path = console_log
        self._drain_console = bool(console_log) or drain_console

        # Runstate
        self._vm: qm.Machine = self._new_vm()
        self._vm_used = False
        self._vm_shape = (False, False)
        self._prepared_base: Optional[List[str]] = None
        self._qemu_log_path: Optional[str] = None
        self._qemu_log_file: Optional[BinaryIO] = None
        self._popen: Optional[_Process] = None
        self._events: List[QMPMessage] = []
        self._iolog: Optional[str] = None
        self._qmp_set = True
        self._qmp_connection: Optional[_QMPConnection] = None
        self._qemu_full_args: Tuple[str, ...] = ()
        self._launched = False
        self._machine: Optional[str] = None
        self._console_index = 0
        self._console_set = False
        self._console_device_type: Optional[str] = None
        self._console_socket: Optional[socket.socket] = None
        self._console_file: Optional[socket.SocketIO] = None
        self._remove_files: List[str] = []
        self._user_killed = False
        self._quit_issued = False

    def _new_vm(self) -> qm.Machine:
        return qm.Machine(
            self._binary, base_temp_dir=self._base_temp_dir, logger=LOG, qmp_logger=QMP_LOG
        )

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_val: Optional[BaseException],
        exc_tb: Optional[TracebackType],
    ) -> None:
        self.shutdown()

    def __del__(self) -> None:
        # qm.Machine kills a QEMU that is still running when it is collected.
        vm = getattr(self, "_vm", None)
        if vm is not None:
            vm.__del__()

    # ---- configuration ---------------------------------------------------------------

    def add_monitor_null(self) -> None:
        """Adds an unused monitor instance."""
        self._args.append("-monitor")
        self._args.append("null")

    def add_fd(self: _T, fd: int, fdset: int, opaque: str, opts: str = "") -> _T:
        """Passes a file descriptor to the VM (`-add-fd`)."""
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"fd must be an int, not {type(fd).__name__}")
        os.set_inheritable(fd, True)  # raises OSError (EBADF) for a closed descriptor
        options = [f"fd={fd}", f"set={fdset}", "opaque=" + str(opaque).replace(",", ",,")]
        if opts:
            options.append(opts)
        self._args.append("-add-fd")
        self._args.append(",".join(options))
        return self

    def send_fd_scm(self, fd: Optional[int] = None, file_path: Optional[str] = None) -> int:
        """Sends an fd, or the file at file_path opened read-only, via SCM_RIGHTS. Exactly one
        of them must be given."""
        if (fd is None) == (file_path is None):
            raise ValueError("send_fd_scm needs exactly one of fd and file_path")
        self._check_qmp()
        if file_path is not None:
            self._qmp_call(self._vm.send_file, file_path)
        else:
            self._qmp_call(self._vm.send_fd, fd)
        return 0

    @staticmethod
    def _remove_if_exists(path: str) -> None:
        """Removes the file at path if it exists."""
        try:
            os.remove(path)
        except OSError as exception:
            if exception.errno == errno.ENOENT:
                return
            raise

    def add_args(self, *args: str) -> None:
        """Adds to the list of extra arguments given to the QEMU binary."""
        self._args.extend(args)

    def set_machine(self, machine_type: str) -> None:
        """Sets the machine type (`-machine TYPE` in the base arguments)."""
        self._machine = machine_type

    def set_console(self, device_type: Optional[str] = None, console_index: int = 0) -> None:
        """Adds a console on a socketpair: `-serial chardev:console`, or with `device_type`
        (e.g. "isa-serial") `-device TYPE,chardev=console`; `console_index` > 0 first adds
        that many `-serial null`."""
        self._console_set = True
        self._console_device_type = device_type
        self._console_index = console_index

    def set_qmp_monitor(self, enabled: bool = True) -> None:
        """Turns the QMP monitor off (or on again) for the next launch."""
        self._qmp_set = enabled

    # ---- state -------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Returns true if the VM is running."""
        return self._popen is not None and self._vm.is_running

    @property
    def _subp(self) -> _Process:
        if self._popen is None:
            raise QEMUMachineError("Subprocess pipe not present")
        return self._popen

    def exitcode(self) -> Optional[int]:
        """Returns the exit code if possible, or None: the last run's (also of a launch that
        failed once QEMU ran), never an earlier run's."""
        return self._vm.exitcode

    def get_pid(self) -> Optional[int]:
        """Returns the PID of the running process, or None."""
        if not self.is_running():
            return None
        return self._vm.pid

    def get_log(self) -> Optional[str]:
        """QEMU's output, after a shutdown or a failed launch."""
        return self._iolog

    @property
    def args(self) -> List[str]:
        """The list of extra arguments given to the QEMU binary (live: edit it in place)."""
        return self._args

    @property
    def binary(self) -> str:
        """The path to the QEMU binary."""
        return self._binary

    @property
    def _temp_dir(self) -> Optional[str]:
        if self._temp_dir_override is not None:
            return self._temp_dir_override
        return self._temp_dir_created

    @_temp_dir.setter
    def _temp_dir(self, value: Optional[str]) -> None:
        self._temp_dir_override = value
        if value is None:
            self._temp_dir_created = None

    _temp_dir_created: Optional[str] = None

    @property
    def temp_dir(self) -> str:
        """A temporary directory for this machine (mode 0700), created on first use and
        removed at shutdown."""
        if self._temp_dir_override is not None:
            return self._temp_dir_override
        if self._temp_dir_created is None:
            self._temp_dir_created = self._vm.temp_dir
        return self._temp_dir_created

    @property
    def sock_dir(self) -> str:
        """Where socket files go: sock_dir, or the temporary directory (the older
        QEMUMachine's property)."""
        if self._sock_dir:
            return self._sock_dir
        return self.temp_dir

    @property
    def log_dir(self) -> str:
        """Where log files go: log_dir, or the temporary directory."""
        if self._log_dir is None:
            return self.temp_dir
        return self._log_dir

    # ---- launch ------------------------------------------------------------------------

    @property
    def _base_args(self) -> List[str]:
        """The arguments between the binary and `args`: display, monitor, machine, console,
        as the core builds them (with the descriptor numbers QEMU will get). Available once
        `_pre_launch` has run; subclasses extend the list they get from super()."""
        if self._prepared_base is None:
            return []
        return list(self._prepared_base)

    def _configure_vm(self) -> None:
        """Configures the qm machine for this launch from the attributes (which subclasses
        may have changed). The same qm machine serves every launch (so a temporary directory
        made between two runs lives into the next, as in the original), unless a setting must
        be taken back that the core can only add (a console, a machine type): then a fresh one."""
        wanted = (self._console_set, self._machine is not None)
        taken_back = any(w < h for w, h in zip(wanted, self._vm_shape))
        if self._vm_used and taken_back:
            old, self._vm = self._vm, self._new_vm()
            old.close()
            self._temp_dir_created = None
        self._vm_used = True
        self._vm_shape = wanted
        vm = self._vm
        vm.set_name(self._name)
        vm.set_base_temp_dir(self._base_temp_dir)
        if self._sock_dir is not None:
            vm.set_sock_dir(self._sock_dir)
        if self._log_dir is not None:
            vm.set_log_dir(self._log_dir)
        vm.set_qmp_monitor(self._qmp_set)
        vm.set_monitor(self._monitor_address if self._qmp_set else None)
        vm.set_qmp_timer(self._qmp_timer)
        # The original launches with close_fds=False: harnesses pass descriptors by marking
        # them inheritable (os.set_inheritable), so QEMU inherits whatever is marked at exec.
        vm.set_inherit_fds(True)
        if self._machine is not None:
            vm.set_machine(self._machine)
        if self._console_set:
            vm.set_console(self._console_device_type, self._console_index)
            vm.set_drain_console(self._drain_console)
            vm.set_console_log(self._console_log_path or None)

    def _pre_launch(self) -> None:
        self._configure_vm()
        if self._qmp_set:
            self._qmp_connection = _QMPConnection(self._vm)
        if self._log_dir is not None:
            self._qemu_log_path = os.path.join(self._log_dir, self._name + ".log")
        self._iolog = None
        self._prepared_base = self._vm.prepare_launch()
        self._qemu_full_args = tuple(
            chain(
                self._wrapper,
                [self._binary],
                self._base_args,
                self._args,
            )
        )

    def _post_launch(self) -> None:
        """Runs once QEMU is up and QMP negotiated (qm connects inside the launch)."""

    def _launch(self) -> None:
        """Launches the VM and establishes the QMP connection."""
        self._pre_launch()
        for i, arg in enumerate(self._qemu_full_args):
            if not isinstance(arg, str):
                raise TypeError(
                    f"QEMU argument {i} ({arg!r}) is a {type(arg).__name__}, not a str"
                )
        LOG.debug("VM launch command: %r", " ".join(self._qemu_full_args))
        self._vm.launch_argv(self._qemu_full_args)
        self._popen = _Process(self._vm, self._qemu_full_args)
        self._launched = True
        self._post_launch()

    def launch(self) -> None:
        """Launches the VM; on failure cleans up and raises VMLaunchFailure with the command
        line and QEMU's output."""
        if self._launched:
            raise QEMUMachineError("VM already launched")
        try:
            self._launch()
        except BaseException as exc:
            if self._launched:
                # QEMU runs but a post-launch step failed: it will not be used.
                self.shutdown(hard=True)
            else:
                if self._prepared_base is not None:
                    self._vm.abort_launch()
                if self._vm.exitcode is not None:
                    # QEMU ran (and exited): as the original's Popen, keep what it was.
                    self._popen = _Process(self._vm, self._qemu_full_args)
                self._post_shutdown()
            if isinstance(exc, Exception):
                cause: BaseException = exc
                if isinstance(exc, qm.LaunchError) and exc.cause is not None:
                    cause = exc.cause
                raise VMLaunchFailure(
                    exitcode=self.exitcode(),
                    command=" ".join(map(str, self._qemu_full_args)),
                    output=self._iolog,
                ) from cause
            raise

    def _close_qemu_log_file(self) -> None:
        if self._qemu_log_file is not None:
            self._qemu_log_file.close()
            self._qemu_log_file = None

    def _close_qmp_connection(self) -> None:
        """Forgets the QMP connection (qm closes it at shutdown)."""
        self._qmp_connection = None

    def _load_io_log(self) -> None:
        """Reads QEMU's output of the last run (kept by qm) into what get_log returns."""
        self._iolog = self._vm.get_log()

    def _post_shutdown(self) -> None:
        """Cleans up after the process exited (also after a failed launch)."""
        LOG.debug("Cleaning up after VM process")
        self._close_qmp_connection()
        self._close_qemu_log_file()
        self._load_io_log()
        self._qemu_log_path = None
        self._prepared_base = None
        # The core removed its temporary directory (and the monitor socket file).
        self._temp_dir = None
        while self._remove_files:
            self._remove_if_exists(self._remove_files.pop())
        exitcode = self.exitcode()
        if (
            exitcode is not None
            and exitcode < 0
            and not (self._user_killed and exitcode == -signal.SIGKILL)
        ):
            LOG.warning(
                'qemu received signal %i; command: "%s"', -exitcode, " ".join(self._qemu_full_args)
            )
        self._quit_issued = False
        self._user_killed = False
        self._launched = False

    def _early_cleanup(self) -> None:
        """Closes the console before waiting for QEMU, so QEMU cannot block on it."""
        if self._console_file is not None:
            LOG.debug("Closing console file")
            self._console_file.close()
            self._console_file = None
        if self._console_socket is not None:
            LOG.debug("Closing console socket")
            self._console_socket.close()
            self._console_socket = None

    def _hard_shutdown(self) -> None:
        LOG.debug("Performing hard shutdown")
        self._early_cleanup()
        self._vm.kill()

    def _soft_shutdown(self, timeout: Any) -> None:
        LOG.debug("Attempting graceful termination")
        self._early_cleanup()
        if self._quit_issued:
            LOG.debug(
                "Anticipating QEMU termination due to prior 'quit' command, "
                "or explicit call to wait()"
            )
            self._vm.wait(timeout)
        else:
            LOG.debug("Politely asking QEMU to terminate")
            if self._qmp_connection is not None and not self._vm.is_running:
                # QEMU already exited by itself: the original's `quit` fails on the closed
                # connection, so its shutdown is abnormal (qm's own API calls a status 0 clean).
                self._vm.wait(timeout)
                raise AbnormalShutdown("Could not perform graceful shutdown") from (
                    ConnectionResetError("QEMU exited before 'quit'")
                )
            self._vm.shutdown(timeout)

    def _do_shutdown(self, timeout: Any) -> None:
        try:
            self._soft_shutdown(timeout)
        except qm.AbnormalShutdownError as exc:
            LOG.debug("Graceful shutdown failed: %s", exc)
            raise AbnormalShutdown("Could not perform graceful shutdown") from exc

    def shutdown(self, hard: bool = False, timeout: Optional[float] = qm.DEFAULT) -> None:
        """Terminates the VM (gracefully if possible: `quit`, then up to `timeout` seconds,
        default 30, then SIGKILL and AbnormalShutdown) and cleans up. Does nothing unless
        launched. `hard`: SIGKILL at once."""
        if not self._launched:
            return
        LOG.debug("Shutting down VM appliance; timeout=%s", timeout)
        if hard:
            LOG.debug("Caller requests immediate termination of QEMU process.")
        try:
            if hard:
                self._user_killed = True
                self._hard_shutdown()
            else:
                self._do_shutdown(timeout)
        finally:
            self._post_shutdown()

    def kill(self) -> None:
        """Terminates the VM forcefully, waits for it to exit, and cleans up."""
        self.shutdown(hard=True)

    def wait(self, timeout: Optional[float] = qm.DEFAULT) -> None:
        """Waits (default 30 s; None: forever) for the VM to power off, then cleans up."""
        self._quit_issued = True
        self.shutdown(timeout=timeout)

    # ---- QMP ---------------------------------------------------------------------------

    @property
    def _qmp(self) -> _QMPConnection:
        if self._qmp_connection is None:
            raise QEMUMachineError("Attempt to access QMP with no connection")
        return self._qmp_connection

    def _check_qmp(self) -> None:
        if self._qmp_connection is None:
            raise _NoConnection("Attempt to access QMP with no connection")

    def _qmp_call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except qm.StateError as exc:
            raise _NoConnection(f"Attempt to access QMP with no connection ({exc})") from exc

    @classmethod
    def _qmp_args(cls, conv_keys: bool, args: Dict[str, Any]) -> Dict[str, object]:
        if conv_keys:
            return qm.conv_keys(args)
        return args

    def _command_args(
        self,
        args_dict: Optional[Dict[str, object]],
        conv_keys: Optional[bool],
        args: Dict[str, Any],
    ) -> Dict[str, object]:
        if args_dict is not None:
            if args:
                raise TypeError("give either args_dict or keyword arguments, not both")
            if conv_keys is not None:
                raise TypeError("conv_keys applies to keyword arguments only")
            return self._qmp_args(False, args_dict)
        return self._qmp_args(True if conv_keys is None else conv_keys, args)

    def qmp(
        self,
        cmd: str,
        args_dict: Optional[Dict[str, object]] = None,
        conv_keys: Optional[bool] = None,
        **args: Any,
    ) -> QMPMessage:
        """Invokes a QMP command and returns the whole response dict."""
        qmp_args = self._command_args(args_dict, conv_keys, args)
        self._check_qmp()
        ret: QMPMessage = self._qmp_call(self._vm.qmp, cmd, qmp_args)
        if cmd == "quit" and "error" not in ret and "return" in ret:
            self._quit_issued = True
        return ret

    def cmd(
        self,
        cmd: str,
        args_dict: Optional[Dict[str, object]] = None,
        conv_keys: Optional[bool] = None,
        **args: Any,
    ) -> QMPReturnValue:
        """Invokes a QMP command and returns its `return` value; an error response raises
        qm.QMPError, which is a qemu.qmp.ExecuteError when qemu.qmp is installed."""
        qmp_args = self._command_args(args_dict, conv_keys, args)
        self._check_qmp()
        ret = self._qmp_call(self._vm.cmd, cmd, qmp_args)
        if cmd == "quit":
            self._quit_issued = True
        return ret

    #: The older name of `cmd`.
    command = cmd

    def get_qmp_event(self, wait: Union[bool, float] = False) -> Optional[QMPMessage]:
        """Takes the oldest event: `wait` False looks only, True waits forever, a number is
        seconds (then a timeout raises TimeoutError)."""
        if self._events:
            return self._events.pop(0)
        self._check_qmp()
        return self._qmp_call(self._vm.get_event, _wait_seconds(wait))  # type: ignore[no-any-return]

    def get_qmp_events(self, wait: Union[bool, float] = False) -> List[QMPMessage]:
        """Takes every queued event, oldest first."""
        self._check_qmp()
        events: List[QMPMessage] = self._qmp_call(self._vm.get_events, _wait_seconds(wait))
        events.extend(self._events)
        del self._events[:]
        return events

    def clear_events(self) -> None:
        """Drops every queued event."""
        del self._events[:]
        self._vm.clear_events()

    @staticmethod
    def event_match(event: Any, match: Optional[Any]) -> bool:
        """Whether event is a superset of the (recursive) sub-dict match, where a None value
        matches anything; match None matches every event. Decided by qm's core."""
        return qm.event_match(event, match)

    def event_wait(
        self, name: str, timeout: float = 60.0, match: Optional[QMPMessage] = None
    ) -> Optional[QMPMessage]:
        """Waits for and returns the event `name` matching `match` (see event_match)."""
        return self.events_wait([(name, match)], timeout)

    def events_wait(
        self, events: Sequence[Tuple[str, Any]], timeout: float = 60.0
    ) -> Optional[QMPMessage]:
        """Waits for and returns the first event matching any (name, match) pair. Queued
        events are searched first; those that don't match stay queued, in order. timeout 0:
        None when nothing matches; otherwise TimeoutError when nothing came in time."""
        for event in self._events:
            if any(
                event.get("event") == name and self.event_match(event, match)
                for name, match in events
            ):
                self._events.remove(event)
                return event
        self._check_qmp()
        seconds = _wait_seconds(timeout)
        if len(events) == 1 and isinstance(events[0], (tuple, list)) and len(events[0]) == 2:
            # One filter (every event_wait): qm's wait for one name, with no list of filters
            # to build and encode here and parse in the core (issue #20).
            name, match = events[0]
            return self._qmp_call(  # type: ignore[no-any-return]
                self._vm.event_wait, name, match, seconds
            )
        return self._qmp_call(self._vm.events_wait, events, seconds)  # type: ignore[no-any-return]

    # ---- console -----------------------------------------------------------------------

    @property
    def console_socket(self) -> socket.socket:
        """A socket connected to the console (a console_socket.ConsoleSocket)."""
        if self._console_socket is None:
            LOG.debug("Opening console socket")
            if not self._console_set:
                raise QEMUMachineError("Attempt to access console socket with no connection")
            try:
                fd = self._vm.console_dup_fd()
            except qm.StateError as exc:
                raise QEMUMachineError(
                    f"Attempt to access console socket with no connection ({exc})"
                ) from exc
            # Drain and log are qm's: this socket is plain.
            self._console_socket = console_socket.ConsoleSocket(sock_fd=fd)
        return self._console_socket

    @property
    def console_file(self) -> socket.SocketIO:
        """A file on the console socket (binary, unbuffered)."""
        if self._console_file is None:
            LOG.debug("Opening console file")
            self._console_file = self.console_socket.makefile(
                mode="rb", buffering=0, encoding="utf-8"
            )
        assert self._console_file is not None
        return self._console_file
