"""Console interaction: patterns in, matches and counters out.

Matching, buffering, the one-wait-at-a-time rule and every error are the core's
(`qm_console_*`); this module only turns Python patterns into a `qm_patterns` and the core's
results into Python objects.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple, Union

from . import _ffi
from . import errors as _errors


@dataclass(frozen=True)
class Regex:
    """A regular-expression console pattern, in the syntax of Rust's `regex` crate (close to
    Python's `re` without look-around and back-references; linear time, so no pattern can make
    a wait hang). It matches over bytes; `(?m)` turns on multi-line `^`/`$`."""

    expr: str


#: A console pattern: a `str` or `bytes` literal (matched byte for byte), a `Regex`, or a
#: compiled `re.Pattern` (its `.pattern` and flags I, M, S, X, A are handed to the core, which
#: compiles it with Rust `regex` syntax: what Python supports beyond that is refused).
Pattern = Union[str, bytes, Regex, "re.Pattern[str]", "re.Pattern[bytes]"]

#: One pattern, or several.
Patterns = Union[Pattern, Sequence[Pattern]]

_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


def _text(value: Union[str, bytes], what: str) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} must be UTF-8 (the core takes UTF-8 patterns): {exc}") from None
    if b"\0" in raw:
        raise ValueError(f"{what} contains a NUL character")
    return raw


def _one(pattern: Any) -> Tuple[bytes, int]:
    """A pattern as (UTF-8 text, QM_PATTERN_*)."""
    if isinstance(pattern, (str, bytes)):
        return _text(pattern, "a literal pattern"), _ffi.QM_PATTERN_LITERAL
    if isinstance(pattern, Regex):
        return _text(pattern.expr, "a Regex"), _ffi.QM_PATTERN_REGEX
    if isinstance(pattern, re.Pattern):
        flags = pattern.flags
        unsupported = flags & (re.LOCALE | re.DEBUG)
        if unsupported:
            raise ValueError(f"console patterns cannot use re flags {re.RegexFlag(unsupported)!r}")
        inline = "".join(letter for flag, letter in _FLAGS if flags & flag)
        if flags & re.ASCII:
            inline += "-u"
        expr = _text(pattern.pattern, "a compiled pattern")
        return (b"(?" + inline.encode() + b")" + expr if inline else expr), _ffi.QM_PATTERN_REGEX
    raise TypeError(
        "a console pattern is a str or bytes literal, a qm.Regex or a compiled re.Pattern, "
        f"not {type(pattern).__name__}"
    )


def _listed(patterns: Any, what: str) -> List[Any]:
    if isinstance(patterns, (str, bytes, Regex, re.Pattern)):
        return [patterns]
    try:
        return list(patterns)
    except TypeError:
        raise TypeError(
            f"{what} must be a pattern or a sequence of patterns, not {type(patterns).__name__}"
        ) from None


class PatternSet:
    """A `qm_patterns` built from Python patterns; a context manager that frees it."""

    def __init__(self, success: Any, failure: Any) -> None:
        self.success = _listed(success, "success")
        self.failure = _listed(failure, "failure")
        converted = [(_one(p), False) for p in self.success] + [
            (_one(p), True) for p in self.failure
        ]
        ptr = _ffi.lib.qm_patterns_new()
        if not ptr:
            raise MemoryError("qm_patterns_new failed")
        self.ptr: Any = ptr
        try:
            for (text, kind), failed in converted:
                err = _ffi.ErrorP()
                status = _ffi.lib.qm_patterns_add(ptr, text, kind, failed, ctypes.byref(err))
                if status != _ffi.QM_OK:
                    raise _errors.from_c(status, err)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr:
            _ffi.lib.qm_patterns_free(ptr)

    def __enter__(self) -> PatternSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def annotate(self, exc: _errors.QMError) -> _errors.QMError:
        """Gives a `ConsoleFailure` the failure pattern the caller wrote."""
        if isinstance(exc, _errors.ConsoleFailure) and exc.pattern_index is not None:
            if exc.pattern_index < len(self.failure):
                exc.pattern = self.failure[exc.pattern_index]
        return exc


@dataclass(frozen=True)
class ConsoleMatch:
    """What a console wait found."""

    #: Which success pattern matched: its index among the success patterns.
    index: int
    #: That pattern as given.
    pattern: Any
    #: The output the wait consumed: everything unread before the match, then the match
    #: (exact bytes).
    text: bytes
    #: Where the match starts in `text` (it ends at the end).
    start: int
    #: Unread bytes dropped over the console's cap since the previous wait that returned text
    #: (when not 0, `text` does not begin where the previous one ended).
    dropped: int

    @property
    def matched(self) -> bytes:
        """The bytes the pattern matched."""
        return self.text[self.start :]

    @property
    def before(self) -> bytes:
        """The output before the match."""
        return self.text[: self.start]


def take_match(ptr: Any, patterns: PatternSet) -> ConsoleMatch:
    """Copies a `qm_console_match` into a ConsoleMatch and frees it."""
    lib = _ffi.lib
    try:
        n = ctypes.c_size_t(0)
        raw = lib.qm_console_match_text(ptr, ctypes.byref(n))
        index = int(lib.qm_console_match_index(ptr))
        return ConsoleMatch(
            index=index,
            pattern=patterns.success[index] if index < len(patterns.success) else None,
            text=ctypes.string_at(raw, n.value) if raw else b"",
            start=int(lib.qm_console_match_start(ptr)),
            dropped=int(lib.qm_console_match_dropped(ptr)),
        )
    finally:
        lib.qm_console_match_free(ptr)


@dataclass(frozen=True)
class ConsoleStats:
    """A console's counters (`Machine.console_stats()`), in bytes."""

    #: Received from the guest since launch.
    received: int
    #: Kept in memory (the transcript), at most `cap`.
    kept: int
    #: Not consumed by any wait yet.
    unread: int
    #: Unread bytes dropped over the cap (the console log file has them).
    dropped: int
    #: Bytes the raw copy (`console()`) never got because nobody read it in time.
    raw_dropped: int
    #: The cap of the console's memory.
    cap: int
    #: True once the console reached end of file.
    closed: bool
