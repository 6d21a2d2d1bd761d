"""The QMP schema on `qm.Machine`: the schema policy (checks before send), the greeting,
`Schema` (feature queries, command descriptions, checks without sending), and out-of-band
execution.

What is checked, the query-path grammar and what a refusal carries are the core's
(`qm_schema_*`, `qm_set_schema_policy`); this module converts and nothing more.
"""

from __future__ import annotations

import json
import threading
from ctypes import byref, c_bool, c_int, c_void_p
from typing import Any, Dict, List, Mapping, Optional

from . import _ffi
from ._cancel import Cancel, _cancel_ptr
from ._convert import DEFAULT, Timeout, _args_dict, _bytes, _check, _json_arg, _ms
from ._handle import MachineHandle

_lib = _ffi.lib

_LEVELS = {"off": _ffi.QM_SCHEMA_OFF, "warn": _ffi.QM_SCHEMA_WARN, "strict": _ffi.QM_SCHEMA_STRICT}
_NAMES = {v: k for k, v in _LEVELS.items()}


def _level(value: str, what: str) -> int:
    if value not in _LEVELS:
        raise ValueError(f"{what} must be one of 'off', 'warn', 'strict', not {value!r}")
    return _LEVELS[value]


class Schema:
    """The parsed QMP schema of a running QEMU (`Machine.schema()`). Immutable and safe to
    share between threads; it stays valid after the machine closes. `close()` (or a `with`
    block, or collection) frees it."""

    def __init__(self, ptr: Any) -> None:
        self._ptr = ptr
        self._lock = threading.Lock()

    def close(self) -> None:
        """Frees the schema; later calls raise `qm.StateError`. Closing twice is harmless."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr:
            _lib.qm_schema_free(ptr)

    def __enter__(self) -> Schema:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_ptr", None) and _lib is not None:
            self.close()

    def _live(self) -> Any:
        if not self._ptr:
            from .errors import StateError

            raise StateError("the schema was closed")
        return self._ptr

    def has_command(self, name: str) -> bool:
        """True when QEMU has a command called `name`."""
        return bool(_lib.qm_schema_has_command(self._live(), _bytes(name, "name")))

    def has_event(self, name: str) -> bool:
        """True when QEMU has an event called `name`."""
        return bool(_lib.qm_schema_has_event(self._live(), _bytes(name, "name")))

    def query(self, path: str) -> bool:
        """Answers a feature question in libvirt's query-path syntax, e.g.
        `"blockdev-add/arg-type/+file/aio/^io_uring"` (grammar in the README); a malformed
        path raises `qm.InvalidArgumentError` naming the component."""
        found = c_bool(False)
        err = _ffi.ErrorP()
        status = _lib.qm_schema_query(self._live(), _bytes(path, "path"), byref(found), byref(err))
        _check(status, err)
        return bool(found.value)

    def _json_call(self, fn: Any, *args: Any) -> Any:
        out = c_void_p()
        err = _ffi.ErrorP()
        _check(fn(self._live(), *args, byref(out), byref(err)), err)
        text = _ffi.take_string(out.value)
        return None if text is None else json.loads(text)

    def command(self, name: str) -> Optional[Dict[str, Any]]:
        """The command `name` as the schema describes it (`{"name", "allow-oob", "features",
        "arguments": [{"name", "optional", "type", "variants", "features"}]}`), or None."""
        value = self._json_call(_lib.qm_schema_command, _bytes(name, "name"))
        return value  # type: ignore[no-any-return]

    def check(self, cmd: str, args: Optional[Mapping[str, Any]] = None) -> List[Dict[str, str]]:
        """Checks `cmd` with `args` against the schema without sending anything: the findings
        (`{"path", "rule", "message"}`), empty when the schema finds nothing wrong."""
        raw = _json_arg(_args_dict(args), "QMP arguments")
        value = self._json_call(_lib.qm_schema_check, _bytes(cmd, "command"), raw)
        return value  # type: ignore[no-any-return]


class _SchemaCalls(MachineHandle):
    """The schema policy, the greeting, the schema, and out-of-band execution."""

    def set_qmp_oob(self, on: bool = True) -> None:
        """Asks for out-of-band execution (the QMP `oob` capability) at later launches
        (default: off); enabled when QEMU offers it. Then `qmp_oob` runs the commands that
        allow it while in-band ones are pending. With OOB on, QEMU queues at most 8 in-band
        commands and drops more: keep at most 8 in flight."""
        self._call(_lib.qm_set_qmp_oob, bool(on))

    @property
    def qmp_oob_enabled(self) -> bool:
        """True when the current connection negotiated out-of-band execution."""
        return bool(self._peek(_lib.qm_qmp_oob_enabled))

    def qmp_oob(
        self,
        cmd: str,
        args: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Timeout = DEFAULT,
        cancel: Optional[Cancel] = None,
    ) -> Dict[str, Any]:
        """Runs `cmd` out-of-band (`exec-oob`) and returns QEMU's whole response, as `qmp`
        does; QEMU may answer it while in-band commands sent earlier still run.
        `qm.StateError` when OOB was not negotiated (`set_qmp_oob()` before `launch`);
        `qm.InvalidArgumentError`, once the schema is loaded, for a command that does not allow
        OOB. Nothing is sent then."""
        arguments = _args_dict(args)
        reply = self._json(
            _lib.qm_qmp_oob,
            _bytes(cmd, "command"),
            _json_arg(arguments, "QMP arguments"),
            _ms(timeout),
            _cancel_ptr(cancel),
            command=cmd,
            arguments=arguments,
        )
        return reply  # type: ignore[no-any-return]

    def set_schema_policy(
        self, checks: str = "strict", *, deprecated: str = "warn", unstable: str = "off"
    ) -> None:
        """Sets what checks before send do, at once and for later launches: `checks` for what
        QEMU would refuse (unknown commands, events and members, missing members, wrong types,
        values outside an enum), `deprecated` / `unstable` for the use of what the schema marks
        so. Each is "off", "warn" (logged, sent anyway) or "strict" (`qm.RefusedError`, nothing
        sent). The machine's default is all "off"; `set_schema_policy()` gives strict checks
        with deprecated use warned about."""
        self._call(
            _lib.qm_set_schema_policy,
            _level(checks, "checks"),
            _level(deprecated, "deprecated"),
            _level(unstable, "unstable"),
        )

    @property
    def schema_policy(self) -> Dict[str, str]:
        """The policy: `{"checks": ..., "deprecated": ..., "unstable": ...}`."""
        c, d, u = c_int(), c_int(), c_int()
        self._call(_lib.qm_get_schema_policy, byref(c), byref(d), byref(u))
        return {
            "checks": _NAMES[c.value],
            "deprecated": _NAMES[d.value],
            "unstable": _NAMES[u.value],
        }

    @property
    def greeting(self) -> Dict[str, Any]:
        """What QEMU's greeting said at the last launch: `{"version": {"major", "minor",
        "micro"}, "package", "capabilities"}`; `qm.StateError` before a launch with QMP."""
        return self._json(_lib.qm_greeting)  # type: ignore[no-any-return]

    def schema(self, *, timeout: Timeout = DEFAULT, cancel: Optional[Cancel] = None) -> Schema:
        """The running QEMU's QMP schema: from the per-binary cache, or loaded with
        `query-qmp-schema` within `timeout` (default: the QMP timer)."""
        ptr = _ffi.SchemaP()
        self._call(_lib.qm_schema_get, _ms(timeout), _cancel_ptr(cancel), byref(ptr))
        return Schema(ptr)
