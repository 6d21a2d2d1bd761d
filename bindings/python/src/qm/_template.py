"""Fast start: `Template` (boot once, clone many running machines), saving and restoring a
machine's state, live migration and block jobs, over `qm_template_*`, `qm_save_state`, ….

The keys, checks, waits and defaults are the core's (`src/template.rs`, `src/snapshot.rs`,
`src/jobs.rs`); this module converts arguments and results.
"""

from __future__ import annotations

import json
import threading
from ctypes import POINTER, Structure, byref, c_bool, c_char_p, c_int, c_int64, c_size_t, c_void_p
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

from . import _ffi
from ._cancel import Cancel, _cancel_ptr
from ._convert import DEFAULT, Timeout, _bytes, _check, _ms, _opt_bytes
from ._machine import Machine

_lib = _ffi.lib


class _TemplateC(Structure):
    """The opaque `qm_template`."""


_TemplateP = POINTER(_TemplateC)
_M = _ffi.MachineP
_C = _ffi.CancelP
_E = _ffi.ErrOut
_S = _ffi.StrOut
_READY = [c_int, c_char_p, c_char_p]

_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "qm_template_new": (c_int, [c_char_p, c_char_p, POINTER(_TemplateP), _E]),
    "qm_template_free": (None, [_TemplateP]),
    "qm_template_add_args": (c_int, [_TemplateP, _ffi.StrArray, c_size_t, _E]),
    "qm_template_set_machine": (c_int, [_TemplateP, c_char_p, _E]),
    "qm_template_set_console": (c_int, [_TemplateP, c_char_p, c_size_t, _E]),
    "qm_template_set_guest_agent": (c_int, [_TemplateP, c_bool, _E]),
    "qm_template_add_disk": (c_int, [_TemplateP, c_char_p, c_char_p, c_char_p, _E]),
    "qm_template_set_clone_ready": (c_int, [_TemplateP, *_READY, _E]),
    "qm_template_prepare": (
        c_int,
        [_TemplateP, *_READY, c_int64, _C, POINTER(c_bool), _E],
    ),
    "qm_template_is_saved": (c_int, [_TemplateP, POINTER(c_bool), _E]),
    "qm_template_state_dir": (c_int, [_TemplateP, _S, _E]),
    "qm_template_clone": (c_int, [_TemplateP, c_int64, _C, POINTER(_M), _E]),
    "qm_save_state": (c_int, [_M, c_char_p, c_int64, _C, _S, _E]),
    "qm_restore_state": (c_int, [_M, c_char_p, *_READY, c_int64, _C, _E]),
    "qm_launch_incoming": (c_int, [_M, c_int64, _C, _E]),
    "qm_migrate_to": (c_int, [_M, _M, c_int64, _C, _E]),
    "qm_wait_migration": (c_int, [_M, c_int64, _C, _S, _E]),
    "qm_run_job": (c_int, [_M, c_char_p, c_int64, _C, _S, _E]),
}

# The library is bundled: like _ffi's own table, every call here must be there (one check at
# import, no guard per call).
_missing = [name for name in _PROTOTYPES if not hasattr(_lib, name)]
if _missing:
    raise ImportError(
        f"qm: {_ffi.library_path()} is not a compatible libqm (missing {', '.join(_missing[:5])})"
    )
for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    _fn = getattr(_lib, _name)
    _fn.restype = _restype
    _fn.argtypes = _argtypes

_QM_READY_RUNNING, _QM_READY_AGENT, _QM_READY_CONSOLE = 0, 1, 2


@dataclass(frozen=True)
class ConsoleReady:
    """Ready when `text` shows on the console, after sending `send` (if any; `"\\n"` brings
    back the prompt of a guest saved at a shell prompt)."""

    text: str
    send: Optional[str] = None


#: When a restored machine counts as ready: `"running"` (the guest runs again), `"agent"` (the
#: agent answers `guest-sync`), or a `ConsoleReady`.
Ready = Union[str, ConsoleReady]


def _ready(ready: Ready) -> tuple[int, Optional[bytes], Optional[bytes]]:
    if isinstance(ready, ConsoleReady):
        return (
            _QM_READY_CONSOLE,
            _opt_bytes(ready.send, "send"),
            _bytes(ready.text, "text"),
        )
    if ready == "running":
        return (_QM_READY_RUNNING, None, None)
    if ready == "agent":
        return (_QM_READY_AGENT, None, None)
    raise ValueError(f"ready must be 'running', 'agent' or a ConsoleReady, not {ready!r}")


def _call(fn_name: str, *args: Any) -> None:
    err = _ffi.ErrorP()
    _check(getattr(_lib, fn_name)(*args, byref(err)), err)


class Template:
    """A guest booted once and saved in `dir`, from which running machines are cloned in a
    fraction of a boot. The saved state is keyed on the QEMU binary, the settings, the
    arguments and the files they name: another process with the same template finds it and
    boots nothing. Thread-safe: `clone()` may run in many threads at once."""

    def __init__(
        self,
        binary: str,
        dir: str,
        *,
        args: Iterable[str] = (),
        machine: Optional[str] = None,
        console: bool = False,
        guest_agent: bool = False,
        disks: Iterable[tuple[str, str, str]] = (),
        clone_ready: Optional[Ready] = None,
    ) -> None:
        """`disks`: `(base, format, drive_opts)` each, e.g. `("base.qcow2", "qcow2",
        "if=virtio")`: every machine gets a qcow2 overlay of it (base is never written).
        `clone_ready` defaults to "agent" with a guest agent, else "running"."""
        self._lock = threading.Lock()
        self._h: Any = None
        handle = _TemplateP()
        _call("qm_template_new", _bytes(binary, "binary"), _bytes(dir, "dir"), byref(handle))
        self._h = handle
        self._binary = binary
        raw = [_bytes(a, "argument") for a in args]
        if raw:
            arr = (c_char_p * len(raw))(*raw)
            _call("qm_template_add_args", self._h, arr, len(raw))
        if machine is not None:
            _call("qm_template_set_machine", self._h, _bytes(machine, "machine"))
        if console:
            _call("qm_template_set_console", self._h, None, 0)
        if guest_agent:
            _call("qm_template_set_guest_agent", self._h, True)
        for base, fmt, opts in disks:
            _call(
                "qm_template_add_disk",
                self._h,
                _bytes(base, "base"),
                _bytes(fmt, "format"),
                _bytes(opts, "opts"),
            )
        if clone_ready is not None:
            _call("qm_template_set_clone_ready", self._h, *_ready(clone_ready))

    def _handle(self) -> Any:
        if not self._h:
            raise ValueError("the template was closed")
        return self._h

    def prepare(
        self,
        ready: Ready = "agent",
        timeout: Timeout = DEFAULT,
        *,
        cancel: Optional[Cancel] = None,
    ) -> bool:
        """Boots, waits until `ready`, and saves, unless the state is saved already. Returns
        True when it booted. `qm.DEFAULT`: the core's 120 s."""
        booted = c_bool(False)
        _call(
            "qm_template_prepare",
            self._handle(),
            *_ready(ready),
            _ms(timeout),
            _cancel_ptr(cancel),
            byref(booted),
        )
        return booted.value

    @property
    def is_saved(self) -> bool:
        """Whether the state for this template's key is saved."""
        saved = c_bool(False)
        _call("qm_template_is_saved", self._handle(), byref(saved))
        return saved.value

    @property
    def state_dir(self) -> str:
        """The directory of this template's state (`dir/key`)."""
        out = c_void_p()
        _call("qm_template_state_dir", self._handle(), byref(out))
        return _ffi.take_string(out.value) or ""

    def clone(self, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None) -> Machine:
        """A launched machine started from the saved state, with its own sockets, console,
        agent channel and disk overlays (removed at its shutdown: a clone is for one run)."""
        handle = _ffi.MachineP()
        _call(
            "qm_template_clone", self._handle(), _ms(timeout), _cancel_ptr(cancel), byref(handle)
        )
        return _adopt(handle, self._binary)

    def close(self) -> None:
        """Frees the template (never its saved state, nor the clones). Safe to call twice."""
        with self._lock:
            h, self._h = self._h, None
        if h:
            _lib.qm_template_free(h)

    def __enter__(self) -> Template:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _adopt(handle: Any, binary: str) -> Machine:
    """A `Machine` around a handle the library created (a clone)."""
    vm = Machine(binary)
    unused, vm._h = vm._h, handle
    _lib.qm_free(unused)
    return vm


def save_state(
    vm: Machine, path: str, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None
) -> dict[str, Any]:
    """Pauses `vm` and saves its state to `path`; returns what was recorded with it
    (`stream_bytes`, `qemu_version`, `binary`, `settings`). The guest stays paused
    (`postmigrate`: `cont` resumes it). `qm.DEFAULT`: the core's 120 s."""
    text = vm._string(_lib.qm_save_state, _bytes(path, "path"), _ms(timeout), _cancel_ptr(cancel))
    return json.loads(text or "{}")  # type: ignore[no-any-return]


def restore_state(
    vm: Machine,
    path: str,
    ready: Ready = "running",
    timeout: Timeout = DEFAULT,
    *,
    cancel: Optional[Cancel] = None,
) -> None:
    """Launches the configured `vm` from a state `save_state` wrote, resumes the guest and waits
    until `ready`. A machine configured differently, a truncated file or not a state file raise
    `InvalidArgumentError` before anything is launched; a stream QEMU cannot load raises
    `LaunchError` (no QEMU is left)."""
    vm._call(
        _lib.qm_restore_state,
        _bytes(path, "path"),
        *_ready(ready),
        _ms(timeout),
        _cancel_ptr(cancel),
    )


def launch_incoming(
    vm: Machine, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None
) -> None:
    """Launches `vm` waiting for an incoming migration (for `migrate`)."""
    vm._call(_lib.qm_launch_incoming, _ms(timeout), _cancel_ptr(cancel))


def migrate(
    src: Machine, dest: Machine, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None
) -> None:
    """Live-migrates the running `src` to `dest` (launched with `launch_incoming`) and waits
    until both report it completed. `qm.DEFAULT`: the core's 300 s."""
    dest_h = dest._handle()
    src._call(_lib.qm_migrate_to, dest_h, _ms(timeout), _cancel_ptr(cancel))


def wait_migration(
    vm: Machine, timeout: Timeout = None, *, cancel: Optional[Cancel] = None
) -> dict[str, Any]:
    """Waits until `vm`'s migration ends; returns the last `query-migrate` reply. A failed
    migration raises `QMPError` with QEMU's reason. No default: seconds, or None (forever)."""
    text = vm._string(
        _lib.qm_wait_migration, _ms(timeout, allow_default=False), _cancel_ptr(cancel)
    )
    return json.loads(text or "{}")  # type: ignore[no-any-return]


def run_job(
    vm: Machine, job_id: str, timeout: Timeout = DEFAULT, *, cancel: Optional[Cancel] = None
) -> Any:
    """Runs block job `job_id` to its end (completing, finalizing, dismissing as needed);
    returns its last `query-jobs` entry (None when QEMU dismissed it itself). A failed job
    raises `QMPError` holding its error; on a timeout or cancel the job is cancelled.
    `qm.DEFAULT`: the core's 300 s."""
    text = vm._string(_lib.qm_run_job, _bytes(job_id, "job id"), _ms(timeout), _cancel_ptr(cancel))
    return None if text is None else json.loads(text)
