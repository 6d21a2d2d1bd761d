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
