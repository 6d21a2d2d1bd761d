"""Written the way QEMU's harnesses use qemu.machine: subclasses overriding the hooks, `args`
edited in place, two machines at once, qtest, and the exception types they catch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, List

import pytest

import qm
from qemu.machine import QEMUMachine, QEMUQtestMachine, VMLaunchFailure


@pytest.fixture
def qmp() -> Any:
    """qemu.qmp (PyPI): its exception types are what harnesses catch."""
    return pytest.importorskip("qemu.qmp", reason="qemu.qmp (PyPI) is not installed")


class IotestsStyleVM(QEMUMachine):
    """Overrides the hooks as iotests' VM does: _base_args, _pre_launch, _post_launch,
    _post_shutdown; reads _args, _name, _temp_dir and _popen."""

    def __init__(self, binary: str, *args: str) -> None:
        super().__init__(binary, args, name="iotests-vm")
        self.calls: List[str] = []
        self.seen_pid = -1
        self.seen_temp_dir = ""

    @property
    def _base_args(self) -> List[str]:
        args = super()._base_args
        # iotests drop the VGA and add a machine name of their own.
        args.extend(["-name", f"guest={self._name}"])
        return args

    def _pre_launch(self) -> None:
        self.calls.append("pre")
        super()._pre_launch()
        self.seen_temp_dir = self.temp_dir
        assert self._temp_dir == self.seen_temp_dir

    def _post_launch(self) -> None:
        super()._post_launch()
        self.calls.append("post")
        assert self._popen is not None
        self.seen_pid = self._popen.pid

    def _post_shutdown(self) -> None:
        self.calls.append("post_shutdown")
        super()._post_shutdown()


def test_subclass_base_args_reach_qemu(qemu: str) -> None:
    vm = IotestsStyleVM(qemu, "-machine", "none")
    with vm:
        vm.launch()
        assert vm.cmd("query-name") == {"name": "iotests-vm"}
        assert vm.seen_pid == vm.get_pid()
        assert os.path.isdir(vm.seen_temp_dir)
        assert vm._args == ["-machine", "none"]
    assert vm.calls == ["pre", "post", "post_shutdown"]
    assert not os.path.exists(vm.seen_temp_dir)
    assert vm._popen is not None and vm._popen.returncode == 0


def test_args_is_a_live_list(qemu: str) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "pc", "-name", "before"])
    vm.args.extend(["-nodefaults"])
    vm.args[1] = "none"
    vm.args[vm.args.index("before")] = "after"
    vm.add_args("-S")
    with vm:
        vm.launch()
        assert vm.cmd("query-name") == {"name": "after"}
        assert vm.cmd("query-status")["status"] == "prelaunch"
        assert vm._qemu_full_args[-6:] == (
            "-machine",
            "none",
            "-name",
            "after",
            "-nodefaults",
            "-S",
        )


def test_overriding_launch_and_pre_launch_that_fails(qemu: str) -> None:
    class Failing(QEMUMachine):
        def _pre_launch(self) -> None:
            super()._pre_launch()
            raise RuntimeError("harness setup failed")

    vm = Failing(qemu, args=["-machine", "none"])
    with pytest.raises(VMLaunchFailure) as info:
        vm.launch()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not vm.is_running()

    class Counting(QEMUMachine):
        launches = 0

        def _launch(self) -> None:
            type(self).launches += 1
            super()._launch()

    with Counting(qemu, args=["-machine", "none"]) as vm2:
        vm2.launch()
        assert Counting.launches == 1 and vm2.is_running()


def test_execute_error_is_catchable_as_qemu_qmp_types(qemu: str, qmp: Any) -> None:
    with QEMUMachine(qemu, args=["-machine", "none"]) as vm:
        vm.launch()
        with pytest.raises(qmp.ExecuteError) as info:
            vm.cmd("device_del", id="nothing")
        err = info.value
        assert err.error_class == "DeviceNotFound"
        assert str(err) == err.error.error.desc
        assert err.sent["execute"] == "device_del"
        assert err.received["error"]["class"] == "DeviceNotFound"
        assert isinstance(err, qmp.QMPError)
        # Waits that time out are asyncio.TimeoutError, as the legacy client raises.
        import asyncio

        with pytest.raises(asyncio.TimeoutError):
            vm.event_wait("NEVER", timeout=0.1)


def test_disconnection_is_exec_interrupted(qemu: str, qmp: Any) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"])
    vm.launch()
    pid = vm.get_pid()
    assert pid is not None
    os.kill(pid, 9)
    with pytest.raises(qmp.ExecInterruptedError):
        vm.cmd("query-status")
    vm.shutdown(hard=True)


def test_two_machines_and_a_migration_over_a_unix_socket(qemu: str, tmp_path: Path) -> None:
    uri = f"unix:{tmp_path}/migrate.sock"
    common = ["-machine", "pc", "-m", "32", "-nodefaults"]
    with (
        QEMUMachine(qemu, args=common, name="src") as src,
        QEMUMachine(qemu, args=[*common, "-incoming", uri], name="dst") as dst,
    ):
        dst.launch()
        src.launch()
        assert dst.cmd("query-status")["status"] == "inmigrate"
        src.cmd("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
        src.cmd("migrate", uri=uri)
        ev = src.event_wait("MIGRATION", timeout=60, match={"data": {"status": "completed"}})
        assert ev is not None
        dst.event_wait("RESUME", timeout=60)
        assert dst.cmd("query-status")["status"] == "running"
        assert src.cmd("query-status")["status"] == "postmigrate"
        assert src.cmd("query-migrate")["status"] == "completed"


def _qtest_accel_available(qemu: str) -> bool:
    out = subprocess.run([qemu, "-accel", "help"], capture_output=True, text=True, check=False)
    return "qtest" in out.stdout.split()


class TcgQtestMachine(QEMUQtestMachine):
    """Debian's QEMU has no qtest accelerator: keep -qtest, drop `-accel qtest`."""

    @property
    def _base_args(self) -> List[str]:
        args = super()._base_args
        i = args.index("-accel")
        del args[i : i + 2]
        return args


def test_qtest_round_trips(qemu: str, tmp_path: Path) -> None:
    cls = QEMUQtestMachine if _qtest_accel_available(qemu) else TcgQtestMachine
    vm = cls(
        qemu, args=["-machine", "pc", "-m", "16", "-nodefaults"], sock_dir=str(tmp_path), name="qt"
    )
    with vm:
        vm.launch()
        assert vm.qtest("writel 0x1000 0xcafe0042") == "OK\n"
        assert vm.qtest("readl 0x1000") == "OK 0x00000000cafe0042\n"
        assert vm.qtest("outb 0x80 0x1") == "OK\n"
        assert vm.qtest("no-such-qtest-command").startswith("FAIL")
        assert vm.cmd("query-status")["running"] is True
    assert not (tmp_path / "qt-qtest.sock").exists()
    with pytest.raises(RuntimeError):
        vm.qtest("readl 0x1000")


def test_qtest_machine_as_is_on_this_qemu(qemu: str, tmp_path: Path) -> None:
    vm = QEMUQtestMachine(qemu, args=["-machine", "none"], sock_dir=str(tmp_path))
    if _qtest_accel_available(qemu):
        with vm:
            vm.launch()
            assert vm.qtest("clock_step 10").startswith("OK")
    else:
        with pytest.raises(VMLaunchFailure) as info:
            vm.launch()
        assert "qtest" in (info.value.output or "")


def test_qmp_off_wait_exitcode_and_log_of_a_qemu_failing_at_start(qemu: str) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none", "-device", "no-such-device"])
    vm.set_qmp_monitor(False)
    vm.launch()  # no QMP: nothing waits for QEMU to come up
    vm.wait(timeout=30)
    assert vm.exitcode() == 1
    log = vm.get_log()
    assert log is not None and "no-such-device" in log


def test_launch_failure_output_for_a_harness(qemu: str) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none", "-device", "no-such-device"])
    try:
        vm.launch()
    except VMLaunchFailure as exc:
        assert exc.exitcode == 1
        assert "no-such-device" in (exc.output or "")
        assert "Output:" in str(exc)
    else:
        pytest.fail("launch should fail")


def test_drop_in_without_qemu_qmp(qemu: str) -> None:
    """With qemu.qmp absent, everything works and QMP errors are qm.QMPError."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["qemu.qmp"] = None  # as if not installed
        from qemu.machine import QEMUMachine
        import qm
        assert not qm.errors.HAVE_QEMU_QMP
        with QEMUMachine({qemu!r}, args=["-machine", "none"]) as vm:
            vm.launch()
            try:
                vm.cmd("no-such-command")
            except qm.QMPError as exc:
                assert exc.error_class == "CommandNotFound", exc.error_class
                assert exc.received["error"]["class"] == "CommandNotFound"
            else:
                raise SystemExit("no error")
            assert vm.cmd("query-status")["running"] is True
        print("ok")
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ.copy(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_qemu_stays_a_namespace_package(qmp: Any) -> None:
    import qemu

    assert getattr(qemu, "__file__", None) is None
    assert qmp.__name__ == "qemu.qmp"
    assert qm.version()


def test_post_launch_that_fails_kills_qemu_at_once(qemu: str) -> None:
    class Failing(QEMUMachine):
        def _post_launch(self) -> None:
            super()._post_launch()
            raise RuntimeError("harness post-launch step failed")

    vm = Failing(qemu, args=["-machine", "none"])
    start = time.monotonic()
    with pytest.raises(VMLaunchFailure) as info:
        vm.launch()
    assert time.monotonic() - start < 10  # the original waits up to 30 s for QEMU to exit
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not vm.is_running()
