"""Exceptions: one class per `qm_status`, carrying what the C error object carries.

When `qemu.qmp` (PyPI) is installed, the QMP-level exceptions also derive from its types, so
harness code that catches `qemu.qmp.ExecuteError`, `ExecInterruptedError` or `ProtocolError`
keeps working unchanged.
"""

from __future__ import annotations

import asyncio
import builtins
import ctypes
from typing import Any, Dict, Optional, Tuple, Type

from . import _ffi

try:  # optional: the types harnesses catch
    from qemu.qmp import ExecInterruptedError as _QmpExecInterrupted
    from qemu.qmp import ExecuteError as _QmpExecuteError
    from qemu.qmp.error import ProtocolError as _QmpProtocolError
    from qemu.qmp.message import Message as _QmpMessage
    from qemu.qmp.models import ErrorResponse as _QmpErrorResponse

    HAVE_QEMU_QMP = True
except ImportError:  # pragma: no cover - exercised by the test run without qemu.qmp
    HAVE_QEMU_QMP = False


def _bases(*candidates: Any) -> Tuple[type, ...]:
    """The distinct classes among `candidates` (asyncio.TimeoutError is TimeoutError on 3.11)."""
    out: list[type] = []
    for cls in candidates:
        if isinstance(cls, type) and not any(issubclass(b, cls) for b in out):
            out.append(cls)
    return tuple(out)


class QMError(Exception):
    """Base of every qm error. `status` is the C `qm_status`; `message` qm's explanation."""

    status: int = -1

    def __init__(self, message: str, *, errno: Optional[int] = None) -> None:
        # Not super(): the qemu.qmp bases mixed in below have constructors of their own.
        Exception.__init__(self, message)
        self.message = message
        #: The OS error number, for an error caused by a failed system call (else None).
        self.os_errno = errno

    def __str__(self) -> str:
        return self.message


class LaunchError(QMError):
    """QEMU could not be launched. Nothing is left running; the machine can launch again."""

    status = _ffi.QM_ERR_LAUNCH

    def __init__(
        self,
        message: str,
        *,
        exitcode: Optional[int],
        command: str,
        output: str,
        cause: Optional[QMError],
        errno: Optional[int] = None,
    ) -> None:
        super().__init__(message, errno=errno)
        #: QEMU's exit status if it exited by itself (negative: killed by that signal).
        self.exitcode = exitcode
        #: The command line, joined by spaces (for humans; never run by a shell).
        self.command = command
        #: What QEMU wrote to stdout and stderr.
        self.output = output
        #: What made the launch fail (a missing binary, QEMU exiting, the QMP timer ...).
        self.cause = cause


class _QMPErrorBase(QMError):
    status = _ffi.QM_ERR_QMP

    def __init__(
        self,
        message: str,
        *,
        error_class: str,
        desc: str,
        command: str = "",
        arguments: Optional[Dict[str, Any]] = None,
    ) -> None:
        QMError.__init__(self, message)
        #: QEMU's error class, e.g. "GenericError", "CommandNotFound".
        self.error_class_name = error_class
        #: QEMU's description of the error.
        self.desc = desc
        reply = {"error": {"class": error_class, "desc": desc}}
        sent: Dict[str, Any] = {"execute": command}
        if arguments:
            sent["arguments"] = arguments
        if HAVE_QEMU_QMP:
            # The attributes qemu.qmp's ExecuteError has.
            self.sent = _QmpMessage(sent)
            self.received = _QmpMessage(reply)
            self.error = _QmpErrorResponse(reply)
        else:
            self.sent = sent  # type: ignore[assignment]
            self.received = reply  # type: ignore[assignment]

    def __str__(self) -> str:
        # As qemu.qmp's ExecuteError: the description alone.
        return self.desc


if HAVE_QEMU_QMP:

    class QMPError(_QMPErrorBase, _QmpExecuteError):  # type: ignore[misc,unused-ignore]
        """QEMU answered a command with an error (also a `qemu.qmp.ExecuteError`)."""

    class DisconnectedError(QMError, ConnectionError, _QmpExecInterrupted):  # type: ignore[misc,unused-ignore]
        """The QMP connection (or, for an agent call, the guest agent's channel) is gone (QEMU
        exited or closed it, or the machine shut down); the message names which."""

        status = _ffi.QM_ERR_DISCONNECTED

    class ProtocolError(QMError, _QmpProtocolError):  # type: ignore[misc,unused-ignore]
        """QEMU broke the QMP protocol (bad JSON, an oversized message, a bad greeting)."""

        status = _ffi.QM_ERR_PROTOCOL

        def __init__(self, message: str, *, errno: Optional[int] = None) -> None:
            QMError.__init__(self, message, errno=errno)
            self.error_message = message

else:

    class QMPError(_QMPErrorBase):  # type: ignore[no-redef]
        """QEMU answered a command with an error."""

        @property
        def error_class(self) -> str:
            """QEMU's error class (as `qemu.qmp.ExecuteError.error_class`)."""
            return self.error_class_name

    class DisconnectedError(QMError, ConnectionError):  # type: ignore[no-redef]
        """The QMP connection (or, for an agent call, the guest agent's channel) is gone (QEMU
        exited or closed it, or the machine shut down); the message names which."""

        status = _ffi.QM_ERR_DISCONNECTED

    class ProtocolError(QMError):  # type: ignore[no-redef]
        """QEMU broke the QMP protocol (bad JSON, an oversized message, a bad greeting)."""

        status = _ffi.QM_ERR_PROTOCOL


class TimeoutError(QMError, *_bases(builtins.TimeoutError, asyncio.TimeoutError)):  # type: ignore[misc]
    """A wait ran out of time (also a builtin `TimeoutError` and an `asyncio.TimeoutError`)."""

    status = _ffi.QM_ERR_TIMEOUT

    def __init__(
        self, message: str, *, errno: Optional[int] = None, text: Optional[str] = None
    ) -> None:
        super().__init__(message, errno=errno)
        #: For a console wait: the last (up to 2 KiB) unread console output, still unread
        #: (invalid UTF-8 replaced by U+FFFD). None for other timeouts.
        self.text = text


class Interrupted(QMError):
    """The call was interrupted by its `Cancel` token."""

    status = _ffi.QM_ERR_INTERRUPTED


class AbnormalShutdownError(QMError):
    """A graceful shutdown or wait did not end in time (or was cancelled): QEMU was killed.
    `cause` says why (a `TimeoutError`, `Interrupted`, `DisconnectedError` ...)."""

    status = _ffi.QM_ERR_ABNORMAL_SHUTDOWN

    def __init__(
        self, message: str, *, errno: Optional[int] = None, cause: Optional[QMError] = None
    ) -> None:
        super().__init__(message, errno=errno)
        #: Why the graceful path failed.
        self.cause = cause


class StateError(QMError, RuntimeError):
    """The call does not fit the machine's state (a command before launch, launch twice ...)."""

    status = _ffi.QM_ERR_STATE


class InvalidArgumentError(QMError, ValueError):
    """An invalid argument (a bad value, JSON of the wrong shape, an invalid setting)."""

    status = _ffi.QM_ERR_INVALID


class QMOSError(QMError, OSError):
    """An operating-system call failed; `errno` is its error number. With an errno that Python
    maps to a builtin subclass of `OSError`, the exception is also an instance of that
    subclass (`FileNotFoundError` for ENOENT, `PermissionError` for EACCES ...), as
    `OSError(errno, ...)` itself would be: code that catches the builtin catches it."""

    status = _ffi.QM_ERR_IO

    def __init__(self, message: str, *, errno: Optional[int] = None) -> None:
        QMError.__init__(self, message, errno=errno)
        if errno is not None:
            self.errno = errno
            self.strerror = message


class InternalError(QMError):
    """A bug inside qm (a Rust panic caught at the C boundary); please report it."""

    status = _ffi.QM_ERR_PANIC


class EventsDropped(QMError):
    """QMP events were dropped over the queue's cap (reported once, to the next event read)."""

    status = _ffi.QM_ERR_EVENTS_DROPPED


class ConsoleClosed(QMError, EOFError):
    """The console reached end of file (QEMU exited or closed it) before a wait found its
    pattern, or a send could not be delivered. `text` is the output nobody consumed."""

    status = _ffi.QM_ERR_CONSOLE_CLOSED

    def __init__(self, message: str, *, errno: Optional[int] = None, text: str = "") -> None:
        super().__init__(message, errno=errno)
        #: The console output no wait consumed (invalid UTF-8 replaced by U+FFFD).
        self.text = text


class ConsoleFailure(QMError):
    """A console wait found one of its failure patterns. `text` is the output consumed up to
    and including its match; `pattern` the failure pattern as given, `pattern_index` its
    position among the failure patterns."""

    status = _ffi.QM_ERR_CONSOLE_FAILURE

    def __init__(
        self,
        message: str,
        *,
        errno: Optional[int] = None,
        text: str = "",
        pattern_index: Optional[int] = None,
    ) -> None:
        super().__init__(message, errno=errno)
        #: The console output consumed, ending with the failure pattern's match.
        self.text = text
        #: Which failure pattern matched (its index among the failure patterns).
        self.pattern_index = pattern_index
        #: That pattern as the caller gave it (set by the console call).
        self.pattern: Any = None


class RefusedError(QMError):
    """A check before send refused the call under a strict schema policy
    (`Machine.set_schema_policy`): nothing was sent. `path` is where the first problem is
    (`"arguments.file.filename"`, `"execute"`, `"event"`), `rule` the rule it breaks
    (`"unknown-member"`, `"missing-member"`, `"wrong-type"`, `"enum-value"`, ...)."""

    status = _ffi.QM_ERR_REFUSED

    def __init__(
        self, message: str, *, errno: Optional[int] = None, path: str = "", rule: str = ""
    ) -> None:
        super().__init__(message, errno=errno)
        #: Where the first problem is, as a JSON path.
        self.path = path
        #: The rule it breaks.
        self.rule = rule


_BY_STATUS: Dict[int, Type[QMError]] = {
    _ffi.QM_ERR_REFUSED: RefusedError,
    _ffi.QM_ERR_EVENTS_DROPPED: EventsDropped,
    _ffi.QM_ERR_CONSOLE_CLOSED: ConsoleClosed,
    _ffi.QM_ERR_CONSOLE_FAILURE: ConsoleFailure,
    _ffi.QM_ERR_TIMEOUT: TimeoutError,
    _ffi.QM_ERR_DISCONNECTED: DisconnectedError,
    _ffi.QM_ERR_INTERRUPTED: Interrupted,
    _ffi.QM_ERR_ABNORMAL_SHUTDOWN: AbnormalShutdownError,
    _ffi.QM_ERR_STATE: StateError,
    _ffi.QM_ERR_INVALID: InvalidArgumentError,
    _ffi.QM_ERR_PROTOCOL: ProtocolError,
    _ffi.QM_ERR_IO: QMOSError,
    _ffi.QM_ERR_PANIC: InternalError,
}


def _text(raw: Optional[bytes]) -> Optional[str]:
    return None if raw is None else raw.decode("utf-8", "replace")


_OS_ERRORS: Dict[type, Type[QMOSError]] = {}


def _os_error_class(errno: Optional[int]) -> Type[QMOSError]:
    """QMOSError, or for an errno Python maps to a builtin OSError subclass (the mapping of
    `OSError(errno, ...)`, PEP 3151) a subclass of both, made once per builtin."""
    if errno is None:
        return QMOSError
    builtin = type(OSError(errno, ""))
    if builtin is OSError:
        return QMOSError
    cls = _OS_ERRORS.get(builtin)
    if cls is None:
        cls = type(
            f"QM{builtin.__name__}",
            (QMOSError, builtin),
            {"__doc__": f"A QMOSError that is also a {builtin.__name__}.", "__module__": __name__},
        )
        _OS_ERRORS[builtin] = cls
    return cls


def simple(status: int, message: str, errno: Optional[int] = None) -> QMError:
    """The exception for `status` (not LAUNCH or QMP, which carry more)."""
    cls = _BY_STATUS.get(status, QMError)
    if cls is QMOSError:
        cls = _os_error_class(errno)
    return cls(message, errno=errno)


def from_c(
    status: int, err: Any, command: str = "", arguments: Optional[Dict[str, Any]] = None
) -> QMError:
    """Builds the exception for a failed call from its `qm_error *` (and frees it)."""
    lib = _ffi.lib
    try:
        if not err:
            return simple(status, f"qm call failed with status {status} (no error object)")
        message = _text(lib.qm_error_message(err)) or f"status {status}"
        code = ctypes.c_int(0)
        errno = code.value if lib.qm_error_os_code(err, ctypes.byref(code)) else None
        if status == _ffi.QM_ERR_QMP:
            return QMPError(
                message,
                error_class=_text(lib.qm_error_qmp_class(err)) or "",
                desc=_text(lib.qm_error_qmp_desc(err)) or "",
                command=command,
                arguments=arguments,
            )
        if status == _ffi.QM_ERR_REFUSED:
            return RefusedError(
                message,
                path=_text(lib.qm_error_schema_path(err)) or "",
                rule=_text(lib.qm_error_schema_rule(err)) or "",
            )
        cause_status = lib.qm_error_cause(err)
        cause_message = _text(lib.qm_error_cause_message(err)) or message.split("\n", 1)[0]
        cause = simple(cause_status, cause_message, errno) if cause_status else None
        console = (_ffi.QM_ERR_TIMEOUT, _ffi.QM_ERR_CONSOLE_CLOSED, _ffi.QM_ERR_CONSOLE_FAILURE)
        if status in console:
            text = _text(lib.qm_error_console_text(err))
            if status == _ffi.QM_ERR_TIMEOUT:
                return TimeoutError(message, errno=errno, text=text)
            if status == _ffi.QM_ERR_CONSOLE_CLOSED:
                return ConsoleClosed(message, errno=errno, text=text or "")
            index = ctypes.c_size_t(0)
            found = lib.qm_error_console_pattern(err, ctypes.byref(index))
            return ConsoleFailure(
                message,
                errno=errno,
                text=text or "",
                pattern_index=index.value if found else None,
            )
        if status == _ffi.QM_ERR_ABNORMAL_SHUTDOWN:
            return AbnormalShutdownError(message, errno=errno, cause=cause)
        if status == _ffi.QM_ERR_LAUNCH:
            exit_code = ctypes.c_int(0)
            exitcode = (
                exit_code.value if lib.qm_error_exit_code(err, ctypes.byref(exit_code)) else None
            )
            return LaunchError(
                message,
                exitcode=exitcode,
                command=_text(lib.qm_error_command(err)) or "",
                output=_text(lib.qm_error_output(err)) or "",
                cause=cause,
                errno=errno,
            )
        return simple(status, message, errno)
    finally:
        if err:
            lib.qm_error_free(err)
