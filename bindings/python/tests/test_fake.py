"""The fake QEMU from Python: a harness that waits for BLOCK_JOB_COMPLETED, tested without
QEMU (the README's worked example), and the fake's strict report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

import qm


def backup(vm: qm.Machine, device: str, target: str, timeout: float = 60.0) -> int:
    """Copies block node `device` to node `target` with blockdev-backup and waits for the job
    to end; returns the bytes copied. Raises RuntimeError when the job fails."""
    job = f"backup-{device}"
    vm.cmd("blockdev-backup", {"job-id": job, "device": device, "target": target, "sync": "full"})
    ev = vm.events_wait(
        [
            ("BLOCK_JOB_COMPLETED", {"data": {"device": job}}),
            ("BLOCK_JOB_CANCELLED", {"data": {"device": job}}),
        ],
        timeout=timeout,
    )
    assert ev is not None
    data = ev["data"]
    if ev["event"] != "BLOCK_JOB_COMPLETED" or "error" in data:
        raise RuntimeError(f"backup of {device} failed: {data.get('error', ev['event'])}")
    return int(data["offset"])


def write_script(path: Path, lines: List[Dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def backup_script(completed: Dict[str, Any]) -> List[Dict[str, Any]]:
    """QEMU's side of one backup: the command, its reply, then the job's end after 50 ms."""
    return [
        {"qm-fake": 1, "idle": 30},
        {
            "dir": "out",
            "msg": {
                "execute": "blockdev-backup",
                "arguments": {"device": "disk0", "target": "disk0-copy"},
            },
            "match": "subset",
        },
        {"dir": "in", "msg": {"return": {}}},
        {
            "dir": "event",
            "msg": {
                "event": "JOB_STATUS_CHANGE",
                "data": {"id": "backup-disk0", "status": "running"},
            },
        },
        {
            "dir": "event",
            "msg": {"event": "BLOCK_JOB_COMPLETED", "data": completed},
            "delay": 0.05,
        },
    ]


JOB = {"device": "backup-disk0", "type": "backup", "len": 1048576, "speed": 0}


def test_backup_waits_for_block_job_completed(tmp_path: Path) -> None:
    script = write_script(tmp_path / "ok.jsonl", backup_script({**JOB, "offset": 1048576}))
    with qm.Machine(qm.fake_qemu_path(), args=["-qm-fake-script", script]) as vm:
        vm.launch()
        assert backup(vm, "disk0", "disk0-copy") == 1048576
        vm.shutdown()
        # The fake's verdict: 0 when the program did exactly what the script expects.
        assert vm.exitcode == 0, vm.get_log()


def test_backup_reports_a_failed_job(tmp_path: Path) -> None:
    failed = {**JOB, "offset": 4096, "error": "No space left on device"}
    script = write_script(tmp_path / "enospc.jsonl", backup_script(failed))
    with qm.Machine(qm.fake_qemu_path(), args=["-qm-fake-script", script]) as vm:
        vm.launch()
        with pytest.raises(RuntimeError, match="No space left on device"):
            backup(vm, "disk0", "disk0-copy")
        vm.shutdown()
        assert vm.exitcode == 0, vm.get_log()


def test_unexpected_command_and_unmet_expectation_are_reported(tmp_path: Path) -> None:
    script = write_script(tmp_path / "ok.jsonl", backup_script({**JOB, "offset": 1048576}))
    with qm.Machine(qm.fake_qemu_path(), args=["-qm-fake-script", script]) as vm:
        vm.launch()
        with pytest.raises(qm.QMPError) as info:
            vm.cmd("drive-backup", {"device": "disk0", "target": "/x", "sync": "full"})
        assert "script line 2" in info.value.desc
        vm.shutdown()
        assert vm.exitcode == 3
        log = vm.get_log() or ""
        assert "unexpected qmp message" in log and "never happened" in log


def test_fake_is_bundled_beside_the_library() -> None:
    path = Path(qm.fake_qemu_path())
    assert path.name == "qm-fake-qemu" and path.is_file(), path
