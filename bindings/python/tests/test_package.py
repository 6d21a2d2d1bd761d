"""The installed package: the library it bundles, and the facts it shares with the core."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import qm
from qm import _ffi


@pytest.mark.skipif(
    bool(os.environ.get(_ffi.LIBRARY_ENV)),
    reason="QM_LIBRARY points at a library the package did not bundle",
)
@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) is not installed")
def test_the_bundled_library_is_stripped() -> None:
    """The wheel ships libqm without its debug information (19.9 MB with, about 3 MB
    without); setup.py strips the bundled copy unless QM_KEEP_DEBUG=1."""
    path = qm.library_path()
    sections = subprocess.run(
        ["readelf", "-S", "-W", str(path)], check=True, capture_output=True, text=True
    ).stdout
    assert ".debug_info" not in sections, f"{path} carries debug information"
    assert ".symtab" not in sections, f"{path} carries its local symbol table"
    assert path.stat().st_size < 8 << 20, f"{path} is {path.stat().st_size} bytes"


def test_seconds_become_milliseconds_by_the_cores_rule(qemu: str) -> None:
    """A positive timeout never becomes 0 ("do not block"): the binding truncated 0.0004 s to
    0 ms, which a command refuses; the core rounds up."""
    from qm._convert import _ms

    assert _ms(0.0004) == 1
    assert _ms(0.003) == 3
    assert _ms(0) == 0
    assert _ms(float("inf")) == _ffi.QM_WAIT_FOREVER
    assert _ms(None) == _ffi.QM_WAIT_FOREVER
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
        # 0.0004 s used to be 0 ms, refused as invalid for a command; now 1 ms, so the
        # command runs and, most likely, times out (or answers in time).
        try:
            vm.cmd("query-status", timeout=0.0004)
        except qm.TimeoutError:
            pass


def test_default_timeout_is_the_cores() -> None:
    assert qm.DEFAULT_TIMEOUT == _ffi.lib.qm_default_timeout_ms() / 1000.0 == 30.0


def test_conv_keys_is_the_cores() -> None:
    assert qm.conv_keys({"node_name": "a", "opts": {"read_only": True}}) == {
        "node-name": "a",
        "opts": {"read_only": True},
    }


def test_status_table_matches_the_library() -> None:
    """The binding's copy of the status numbers (_ffi.QM_*) and its exception table
    (errors._BY_STATUS) against the library's own names (qm_status_str): a status added to
    the header without the binding, or renumbered, fails here."""
    from qm import errors

    ours = {
        name: value
        for name, value in vars(_ffi).items()
        if name == "QM_OK" or name.startswith("QM_ERR_")
    }
    known = {}
    for value in range(64):
        name = _ffi.lib.qm_status_str(value).decode()
        if name != "QM_ERR_UNKNOWN":
            known[name] = value
    assert ours == known
    for name, value in known.items():
        if name not in ("QM_OK", "QM_ERR_LAUNCH", "QM_ERR_QMP"):
            assert value in errors._BY_STATUS, f"{name} has no exception class"


def test_one_version() -> None:
    """One version: Cargo.toml's. The library reports it, qm.__version__ is the library's,
    and pyproject.toml (the wheel's metadata) must say the same."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    cargo = (root / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert version is not None
    assert qm.version() == version.group(1)
    assert qm.__version__ == qm.version()
    pyproject = (root / "bindings/python/pyproject.toml").read_text()
    assert f'\nversion = "{version.group(1)}"\n' in pyproject
