"""Shared fixtures: the QEMU binary, the 512-byte test guest, and a check that no test leaves
a QEMU (or any child process) behind."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Iterator, List, Set

import pytest

if os.environ.get("QM_TEST_WITHOUT_QEMU_QMP"):
    # The whole suite as on a machine without qemu.qmp (run-tests.sh runs it both ways).
    import sys

    sys.modules["qemu.qmp"] = None  # type: ignore[assignment]

import qm  # noqa: E402

QEMU = os.environ.get("QM_QEMU", "qemu-system-x86_64")


def _is_qm_watchdog(pid: str) -> bool:
    """Whether `pid` is qm's watchdog (one per process, alive as long as it is)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().endswith(b"\0qm-watchdog\0")
    except OSError:
        return False


def children() -> List[int]:
    """Pids of this process's live (non-zombie) children, but qm's watchdog."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z" and not _is_qm_watchdog(entry):
            found.append(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="session")
def qemu() -> str:
    """The QEMU binary (QM_QEMU, default qemu-system-x86_64)."""
    path = shutil.which(QEMU)
    if path is None:
        pytest.skip(f"{QEMU} is not installed (set QM_QEMU)")
    return path


#: Pids of QEMUs that module-scoped fixtures keep running across their tests (one Linux boot
#: per module); the fixture itself checks at teardown that its QEMU is gone.
SHARED: Set[int] = set()


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fails a test that leaves a child process (a QEMU) running."""
    yield

    def left() -> List[int]:
        return [pid for pid in children() if pid not in SHARED]

    deadline = time.monotonic() + 5
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left(), f"child processes left behind: {left()}"


def linux_guest_args() -> List[str]:
    """QEMU's arguments for the Linux test guest (guest/linux): from QM_LINUX_KERNEL and
    QM_LINUX_INITRD, else the repository's `guest/linux/build --qemu-args` (which builds it
    from Debian packages once, then answers from its cache); skips when there is neither."""
    import subprocess

    kernel, initrd = os.environ.get("QM_LINUX_KERNEL"), os.environ.get("QM_LINUX_INITRD")
    if kernel and initrd:
        return qm.linux_guest_args(kernel, initrd)
    build = Path(__file__).resolve().parents[3] / "guest" / "linux" / "build"
    if not build.exists():
        pytest.skip(f"no Linux guest: set QM_LINUX_KERNEL and QM_LINUX_INITRD, or provide {build}")
    done = subprocess.run(
        [str(build), "--qemu-args"], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{build} --qemu-args failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout.strip().split("\n")


def retire_shared(vm: qm.Machine) -> None:
    """Ends a module fixture's QEMU: kills it if a test left it running, and checks it is
    gone (the per-test check skips it while the module runs)."""
    pid = vm.last_pid
    vm.kill()
    vm.close()
    if pid is not None:
        SHARED.discard(pid)
        assert not pid_alive(pid), f"the shared QEMU {pid} outlived its module"


@pytest.fixture
def guest_image(tmp_path: Path) -> Iterator[Path]:
    """An echo guest: prints its banner, then echoes; 'p' powers off, 'x' exits with 3."""
    path = tmp_path / "guest.img"
    qm.guest.write_image(str(path), "hello from a 512-byte guest", qm.guest.ECHO)
    yield path


def read_until(sock: object, needle: bytes, timeout: float = 20.0) -> bytes:
    """Reads a socket until `needle` appears (or fails after `timeout` seconds)."""
    import socket as _socket

    assert isinstance(sock, _socket.socket)
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not seen; got {data!r}")
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"end of file before {needle!r}; got {data!r}")
        data += chunk
    return data
