"""Clean endings: a QEMU that exited by itself with status 0 is not an abnormal shutdown in
qm's own API, while the drop-in `qemu.machine` keeps the original's behaviour exactly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import qm
from qemu.machine import QEMUMachine
from qemu.machine.machine import AbnormalShutdown


def _poweroff_image(tmp_path: Path) -> str:
    image = tmp_path / "bye.img"
    qm.guest.write_image(str(image), "bye", qm.guest.POWEROFF)
    return str(image)


def _until_exited(is_running: object) -> None:
    deadline = time.monotonic() + 30  # a bound, not a timing assertion
    while callable(is_running) and is_running():
        assert time.monotonic() < deadline, "QEMU did not exit by itself"
        time.sleep(0.01)


def test_shutdown_after_poweroff_is_clean_and_status_readable_after_with(
    qemu: str, tmp_path: Path
) -> None:
    # Paused until QMP is up: a guest that ends during the handshake would fail the launch.
    args = [*qm.guest.qemu_args(_poweroff_image(tmp_path)), "-S"]
    with qm.Machine(qemu, args=args) as vm:
        vm.launch()
        vm.cmd("cont")
        _until_exited(lambda: vm.is_running)
        vm.shutdown()  # used to raise AbnormalShutdownError (EPIPE on `quit`)
        assert vm.exitcode == 0
    assert vm.exitcode == 0  # used to read None after the `with` block


def test_exit_status_after_with_without_explicit_shutdown(qemu: str, tmp_path: Path) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
    # The `with` block shut QEMU down with `quit`: status 0, still readable.
    assert vm.exitcode == 0


def test_nonzero_exit_by_itself_is_still_abnormal(qemu: str, tmp_path: Path) -> None:
    image = tmp_path / "exit.img"
    qm.guest.write_image(str(image), "bye", qm.guest.EXIT, 1)
    with qm.Machine(qemu, args=[*qm.guest.qemu_args(str(image)), "-S"]) as vm:
        vm.launch()
        vm.cmd("cont")
        _until_exited(lambda: vm.is_running)
        with pytest.raises(qm.AbnormalShutdownError):
            vm.shutdown()
        assert vm.exitcode == qm.guest.exit_status(1)


def test_drop_in_keeps_the_originals_abnormal_shutdown_after_poweroff(
    qemu: str, tmp_path: Path
) -> None:
    vm = QEMUMachine(qemu, args=[*qm.guest.qemu_args(_poweroff_image(tmp_path)), "-S"])
    vm.launch()
    vm.qmp("cont")
    _until_exited(vm.is_running)
    # The original sends `quit` on the connection QEMU closed: that fails, so it is abnormal.
    with pytest.raises(AbnormalShutdown):
        vm.shutdown()
    assert vm.exitcode() == 0
    assert not vm.is_running()
