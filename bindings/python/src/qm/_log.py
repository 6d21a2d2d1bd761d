"""qm's own log records, routed into Python's `logging` (when the loaded libqm has
`qm_set_log_callback`): a record of target `qm::machine::launch` goes to the logger
`qm.machine.launch`, at WARNING or DEBUG. How much the core produces is `qm.set_log_level`
(warnings only by default, so a QMP round trip pays nothing for it).

The callback is removed at interpreter exit, before Python can no longer run it: qm's own
threads (console drains) may log at any time.
"""

from __future__ import annotations

import atexit
import logging
from typing import Any, Optional

from . import _ffi


def _forward(
    _user: Any, level: int, target: Optional[bytes], message: Optional[bytes], ts: float
) -> None:
    try:
        name = (target or b"qm").decode("utf-8", "replace").replace("::", ".")
        logger = logging.getLogger(name)
        py_level = logging.WARNING if level == _ffi.QM_LOG_WARN else logging.DEBUG
        if not logger.isEnabledFor(py_level):
            return
        text = (message or b"").decode("utf-8", "replace")
        record = logger.makeRecord(name, py_level, "(libqm)", 0, "%s", (text,), None)
        record.created = ts
        record.msecs = (ts - int(ts)) * 1000
        logger.handle(record)
    except Exception:  # noqa: BLE001 - never raise into C
        pass


_CALLBACK = _ffi.LogFn(_forward)
_installed = False


def install() -> bool:
    """Routes qm's records to `logging` (True) when libqm can; else they go to stderr."""
    global _installed
    if not _installed:
        _ffi.lib.qm_set_log_callback(_CALLBACK, None)
        _installed = True
        atexit.register(uninstall)
    return True


def uninstall() -> None:
    """Back to stderr (waits for callbacks in progress to return)."""
    global _installed
    if _installed:
        _ffi.lib.qm_set_log_callback(_ffi.LogFn(), None)  # a NULL function pointer
        _installed = False
