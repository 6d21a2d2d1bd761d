"""The QMP schema from Python against a real QEMU: the greeting, feature queries, and checks
before send (`qm.RefusedError` with the JSON path and rule)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import qm


def test_greeting_and_feature_queries(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        with pytest.raises(qm.StateError):
            _ = vm.greeting
        vm.launch()
        assert vm.greeting["version"]["major"] >= 7
        assert "oob" in vm.greeting["capabilities"]
        with vm.schema() as schema:
            assert schema.has_command("blockdev-add") and not schema.has_command("blockdev-ad")
            assert schema.has_event("SHUTDOWN")
            assert schema.query("blockdev-add/arg-type/+file/aio/^io_uring")
            assert not schema.query("blockdev-add/arg-type/+file/aio/^nope")
            with pytest.raises(qm.InvalidArgumentError, match="component 2"):
                schema.query("blockdev-add/args")
            yank = schema.command("query-yank")
            assert yank is not None and yank["allow-oob"] is True
            assert schema.command("no-such-command") is None
            (finding,) = schema.check("blockdev-add", {"driver": "null-co", "node_name": "x"})
            assert finding["path"] == "arguments.node_name"
            assert finding["rule"] == "unknown-member"
            assert "did you mean 'node-name'" in finding["message"]
        with pytest.raises(qm.StateError):
            schema.has_command("query-status")


def test_strict_policy_refuses_a_typo_before_sending(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        assert vm.schema_policy == {"checks": "off", "deprecated": "off", "unstable": "off"}
        vm.set_schema_policy()
        assert vm.schema_policy == {"checks": "strict", "deprecated": "warn", "unstable": "off"}
        with pytest.raises(ValueError):
            vm.set_schema_policy("loud")
        vm.launch()
        with pytest.raises(qm.RefusedError) as info:
            vm.cmd("blockdev-add", {"driver": "null-co", "node_name": "n0"})
        assert info.value.path == "arguments.node_name"
        assert info.value.rule == "unknown-member"
        assert "did you mean 'node-name'" in str(info.value)
        with pytest.raises(qm.RefusedError) as info:
            vm.event_wait("SHUTDOWNN", timeout=60)
        assert info.value.rule == "unknown-event"
        assert vm.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0"}) == {}


def test_the_readme_example_runs(qemu: str, capsys: pytest.CaptureFixture[str]) -> None:
    readme = Path(__file__).resolve().parents[3] / "README.md"
    section = readme.read_text(encoding="utf-8").split("## QMP schema", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    code = block.replace('"qemu-system-x86_64"', repr(qemu))
    exec(compile(code, "README.md schema example", "exec"), {"qm": qm})  # noqa: S102
    assert capsys.readouterr().out == "arguments.node_name unknown-member\n"


def test_out_of_band(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
        assert not vm.qmp_oob_enabled
        with pytest.raises(qm.StateError, match="set_qmp_oob"):
            vm.qmp_oob("query-yank")
    with qm.Machine(qemu, machine="none") as vm:
        vm.set_qmp_oob()
        vm.launch()
        assert vm.qmp_oob_enabled
        assert isinstance(vm.qmp_oob("query-yank")["return"], list)
