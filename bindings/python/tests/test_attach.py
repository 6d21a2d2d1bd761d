"""Attaching to a QEMU started by hand (`-qmp unix:PATH,server=on,wait=off`): commands and
events work, and leaving the machine detaches with QEMU still running."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

import qm


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@pytest.fixture
def by_hand(qemu: str, tmp_path: Path) -> Iterator[Tuple[subprocess.Popen[bytes], Path]]:
    """A `-machine none` QEMU this test starts (and kills at teardown: qm never does)."""
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        [qemu, "-machine", "none", "-display", "none", "-nodefaults",
         "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # Listening, not only bound (QEMU binds the file a moment before it listens); the
        # probe is closed at once, and QEMU takes it as a client that left.
        while not _listening(sock):
            assert proc.poll() is None, f"QEMU exited with {proc.returncode}"
            assert time.monotonic() < deadline, "QEMU never listened at its socket"
            time.sleep(0.02)
        yield proc, sock
    finally:
        proc.kill()
        proc.wait()


def test_attach_commands_events_then_detach(
    by_hand: Tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    proc, sock = by_hand
    transcript = tmp_path / "qmp.jsonl"
    with qm.attach(f"unix:{sock}", qmp_transcript=str(transcript)) as vm:
        assert vm.is_attached and vm.is_running and vm.pid is None
        assert vm.cmd("query-status")["status"] == "running"
        vm.cmd("stop")
        ev = vm.event_wait("STOP", timeout=60)
        assert ev is not None and ev["event"] == "STOP"
        with pytest.raises(qm.QMPError) as info:
            vm.cmd("no-such-command")
        assert info.value.error_class == "CommandNotFound"
        with pytest.raises(qm.StateError):
            vm.launch()
    assert proc.poll() is None, "leaving the block must detach, not stop QEMU"
    assert "query-status" in transcript.read_text()

    # The monitor is free again; shutdown detaches too, and QEMU stays paused as left.
    vm2 = qm.AttachedMachine()
    vm2.attach(str(sock), timeout=60)
    assert vm2.cmd("query-status")["status"] == "paused"
    vm2.shutdown()
    assert not vm2.is_attached
    assert proc.poll() is None
    vm2.close()


def test_quit_then_shutdown_waits_for_qemu(by_hand: Tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, sock = by_hand
    vm = qm.attach(sock)
    vm.cmd("quit")
    vm.shutdown(60)
    assert proc.wait(60) == 0
    assert vm.exitcode is None, "qm reaps nothing it did not start"
    vm.close()


def test_attach_to_nothing(tmp_path: Path) -> None:
    with pytest.raises(qm.QMOSError):
        qm.attach(tmp_path / "nobody.sock", timeout=5)
    with pytest.raises(qm.InvalidArgumentError):
        qm.attach("tcp:nohost", timeout=5)
