"""Console calls of `qm.Machine`: its descriptor, and interaction (matching and buffering are
the core's, in `qm_console_*`)."""

from __future__ import annotations

import math
import socket
from ctypes import byref, c_int, c_size_t, c_void_p
from typing import Any, Optional, Union

from . import _console, _ffi
from . import errors as _errors
from ._cancel import Cancel, _cancel_ptr
from ._convert import (
    Timeout,
    _bytes,
    _ms,
    _send_bytes,
    seconds_to_ms,
)
from ._handle import MachineHandle

_lib = _ffi.lib


class _ConsoleCalls(MachineHandle):
    """The console."""

    def console(self) -> socket.socket:
        """A new `socket.socket` on the console (yours to close; close it before a graceful
        shutdown unless the console is drained)."""
        fd = c_int(-1)
        self._call(_lib.qm_console_dup, byref(fd))
        return socket.socket(fileno=fd.value)

    def console_dup_fd(self) -> int:
        """A new descriptor on the console, owned (and closed) by the caller."""
        fd = c_int(-1)
        self._call(_lib.qm_console_dup, byref(fd))
        return fd.value

    def _console_match(
        self, fn: Any, *args: Any, success: Any, failure: Any, timeout: Timeout, cancel: Any
    ) -> _console.ConsoleMatch:
        """Runs a console call that yields a `qm_console_match`: `fn(h, *args, patterns,
        timeout_ms, cancel, &match, &err)`."""
        ms = _ms(timeout, allow_default=False)
        tok = _cancel_ptr(cancel)
        with _console.PatternSet(success, failure) as patterns:
            out = _ffi.ConsoleMatchP()
            try:
                self._call(fn, *args, patterns.ptr, ms, tok, byref(out))
            except _errors.QMError as exc:
                raise patterns.annotate(exc) from None
            return _console.take_match(out, patterns)

    def console_wait(
        self,
        success: _console.Patterns,
        failure: _console.Patterns = (),
        *,
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> _console.ConsoleMatch:
        """Waits until one of the `success` patterns shows on the console and returns what it
        found; the output up to and including the match is consumed, what follows stays for
        the next wait. A pattern is a `str`/`bytes` literal, a `qm.Regex` or a compiled
        `re.Pattern` (Rust regex syntax); `success` and `failure` take one or a sequence.

        `timeout` (seconds, or None: until the pattern, the end of the console or `cancel`)
        has no default. Raises `ConsoleFailure` when a failure pattern matches first,
        `ConsoleClosed` at once when the console reaches end of file, `qm.TimeoutError` (with
        the unread tail in `.text`, left unread), `Interrupted`, and `StateError` while
        another wait runs on the console (one at a time) or without a console."""
        return self._console_match(
            _lib.qm_console_wait, success=success, failure=failure, timeout=timeout, cancel=cancel
        )

    def console_exec(
        self,
        line: str,
        success: _console.Patterns,
        failure: _console.Patterns = (),
        *,
        eol: str = "\n",
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> _console.ConsoleMatch:
        """Sends `line` + `eol`, then waits for the patterns as `console_wait` does, all within
        `timeout`. Output left unread before is searched too (`console_skip_unread` first
        ignores it); the text includes the guest's echo of the command."""
        return self._console_match(
            _lib.qm_console_exec,
            _bytes(line, "line"),
            _bytes(eol, "eol"),
            success=success,
            failure=failure,
            timeout=timeout,
            cancel=cancel,
        )

    def console_interrupt_until(
        self,
        key: Union[str, bytes],
        success: _console.Patterns,
        failure: _console.Patterns = (),
        *,
        interval: float,
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> _console.ConsoleMatch:
        """Sends `key` every `interval` seconds (first at once) until one of the patterns shows
        (boot menus, "press any key"), then returns as `console_wait` does."""
        raw = _send_bytes(key, "key")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"interval must be seconds (a number), not {type(interval).__name__}")
        ms = seconds_to_ms(interval) if math.isfinite(interval) and interval >= 0 else -1
        if not 0 <= ms < 2**32:
            raise ValueError(f"interval {interval!r} s does not fit the core's milliseconds")
        return self._console_match(
            _lib.qm_console_interrupt_until,
            raw,
            len(raw),
            ms,
            success=success,
            failure=failure,
            timeout=timeout,
            cancel=cancel,
        )

    def console_send(
        self,
        data: Union[str, bytes],
        *,
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> None:
        """Sends `data` (bytes, or a str as UTF-8) to the guest's console, waiting up to
        `timeout` while the console is full. Concurrent sends never interleave within one
        call's bytes. `ConsoleClosed` when the console is gone."""
        raw = _send_bytes(data, "data")
        self._call(
            _lib.qm_console_send,
            raw,
            len(raw),
            _ms(timeout, allow_default=False),
            _cancel_ptr(cancel),
        )

    def console_send_line(
        self,
        line: str,
        eol: str = "\n",
        *,
        timeout: Optional[float],
        cancel: Optional[Cancel] = None,
    ) -> None:
        """Sends `line` then `eol` (the line ending the guest wants) as `console_send` does."""
        self._call(
            _lib.qm_console_send_line,
            _bytes(line, "line"),
            _bytes(eol, "eol"),
            _ms(timeout, allow_default=False),
            _cancel_ptr(cancel),
        )

    def console_transcript(self, last: Optional[int] = None) -> str:
        """The console output kept in memory (up to the cap), or its last `last` bytes, as
        text: invalid UTF-8 and NUL bytes become U+FFFD (the console log file has the exact
        bytes). Readable while QEMU runs and after its shutdown, until the next launch."""
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
            raise ValueError(f"last must be a positive int or None, not {last!r}")
        out = c_void_p()
        self._call(_lib.qm_console_transcript, last or 0, byref(out), None)
        return _ffi.take_string(out.value) or ""

    def console_stats(self) -> _console.ConsoleStats:
        """The console's counters."""
        c = _ffi.ConsoleCounters()
        self._call(_lib.qm_console_stats, byref(c))
        return _console.ConsoleStats(
            received=c.received,
            kept=c.kept,
            unread=c.unread,
            dropped=c.dropped,
            raw_dropped=c.raw_dropped,
            cap=c.cap,
            closed=bool(c.closed),
        )

    def console_skip_unread(self) -> int:
        """Marks the output received so far as read (the next wait sees only newer output);
        returns how many bytes that skipped. The transcript keeps them."""
        n = c_size_t(0)
        self._call(_lib.qm_console_skip_unread, byref(n))
        return int(n.value)
