"""The README's Python examples run as they are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("index", [0, 1, 2])
def test_readme_example_runs(index: int, qemu: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3
    if index == 2:
        pytest.importorskip("qemu.qmp", reason="the drop-in example catches qemu.qmp's type")
    code = blocks[index].replace('"qemu-system-x86_64"', repr(qemu))
    exec(compile(code, f"README.md example {index}", "exec"), {})  # noqa: S102
    out = capsys.readouterr().out
    if index == 1:  # the console example
        assert out.splitlines()[:2] == ["b'hello'", "1 b'ls'"]
        assert out.splitlines()[2].startswith("unread: ")
        assert out.splitlines()[3] == "console closed"
        return
    assert "'running': True" in out
    assert "DeviceNotFound" in out
