"""Fast start from Python (`qm.Template`, `qm.save_state`, `qm.restore_state`, `qm.run_job`):
the Linux test guest prepared once, clones that each find the template's file and not each
other's, a state saved and restored by hand, a refused restore, a block job run to its end."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import linux_guest_args

import qm

#: A failure bound (TCG, a loaded machine), never a timing assertion.
T = 300.0


def test_template_clones_save_and_restore(qemu: str, tmp_path: Path) -> None:
    args = linux_guest_args()
    with qm.Template(
        qemu, str(tmp_path / "templates"), args=args, console=True, guest_agent=True
    ) as t:
        assert not t.is_saved
        assert t.prepare("agent", timeout=T) is True
        assert t.prepare("agent", timeout=T) is False
        assert t.is_saved and t.state_dir.startswith(str(tmp_path))
        with ThreadPoolExecutor(3) as pool:
            clones = list(pool.map(lambda _: t.clone(timeout=T), range(3)))
        try:
            assert len({vm.pid for vm in clones}) == 3
            clones[0].agent.write_file("/tmp/mine", b"zero")
            assert clones[0].agent.read_file("/tmp/mine", 100) == b"zero"
            with pytest.raises(qm.QMPError):
                clones[1].agent.read_file("/tmp/mine", 100)
            info = qm.save_state(clones[0], str(tmp_path / "vm.state"), timeout=T)
            assert info["stream_bytes"] > 0
        finally:
            for vm in clones:
                vm.close()

    with qm.Machine(qemu, args=args, console=True, guest_agent=True) as vm:
        qm.restore_state(vm, str(tmp_path / "vm.state"), "agent", timeout=T)
        assert vm.agent.read_file("/tmp/mine", 100) == b"zero"
    with qm.Machine(qemu, args=args, console=True) as other:
        with pytest.raises(qm.InvalidArgumentError, match="guest agent channel"):
            qm.restore_state(other, str(tmp_path / "vm.state"))
        assert not other.is_running


def test_run_job_mirrors_a_qcow2_image(qemu: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "s.qcow2", tmp_path / "d.qcow2"
    for image in (src, dst):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
        for node, image in (("s", src), ("d", dst)):
            vm.cmd(
                "blockdev-add",
                {
                    "driver": "qcow2",
                    "node-name": node,
                    "file": {"driver": "file", "filename": str(image)},
                },
            )
        vm.cmd(
            "blockdev-mirror",
            {"job-id": "j", "device": "s", "target": "d", "sync": "full", "auto-dismiss": False},
        )
        job = qm.run_job(vm, "j", timeout=T)
        assert job["status"] == "concluded"
        with pytest.raises(qm.StateError):
            qm.run_job(vm, "j", timeout=T)
