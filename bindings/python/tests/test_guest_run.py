"""`Guest.run` in the real Linux guest: the same script over the console and the agent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest
from conftest import SHARED, retire_shared

import qm

BOOT = 240.0
T = 120.0
BOTH = [qm.Channel.CONSOLE, qm.Channel.AGENT]


def core_args() -> List[str]:
    """The guest's arguments from the core helper: qm finds the files through QM_LINUX_KERNEL
    and QM_LINUX_INITRD, else they come from guest/linux/build --print-paths."""
    if os.environ.get("QM_LINUX_KERNEL") and os.environ.get("QM_LINUX_INITRD"):
        return qm.linux_guest_args()
    build = Path(__file__).resolve().parents[3] / "guest" / "linux" / "build"
    if not build.exists():
        pytest.skip(f"no Linux guest: set QM_LINUX_KERNEL and QM_LINUX_INITRD, or provide {build}")
    done = subprocess.run(
        [str(build), "--print-paths"], capture_output=True, text=True, timeout=600, check=True
    )
    paths = dict(part.split("=", 1) for part in done.stdout.strip().split())
    return qm.linux_guest_args(paths["KERNEL"], paths["INITRD"])


def boot(qemu: str) -> qm.Machine:
    vm = qm.Machine(qemu, args=core_args(), console=True, guest_agent=True)
    vm.launch()
    for ch in BOTH:
        vm.guest(ch).wait_ready(timeout=BOOT)
    return vm


@pytest.fixture(scope="module")
def linux(qemu: str) -> Iterator[qm.Machine]:
    vm = boot(qemu)
    assert vm.pid is not None
    SHARED.add(vm.pid)
    try:
        yield vm
    finally:
        retire_shared(vm)


@pytest.mark.parametrize("channel", BOTH)
def test_the_same_script_over_each_channel(linux: qm.Machine, channel: qm.Channel) -> None:
    g = linux.guest(channel)
    r = g.run("echo hello", timeout=T)
    assert (r.status, r.stdout, r.ok) == (0, b"hello\n", True)
    for code in range(0, 256, 17):
        r = g.run(f"head -c {code * 13} /dev/zero | tr '\\000' x; (exit {code})", timeout=T)
        assert (r.status, len(r.stdout)) == (code, code * 13)
    r = g.run("printf 'QM-RUN-%s-E 0\\n\\000\\377' fake; echo err >&2", timeout=T)
    if channel == qm.Channel.CONSOLE:
        assert (r.stdout, r.stderr) == (b"QM-RUN-fake-E 0\n\x00\xfferr\n", None)
    else:
        assert (r.stdout, r.stderr) == (b"QM-RUN-fake-E 0\n\x00\xff", b"err\n")
    data = bytes(range(256)) * 3
    g.write_file("/tmp/qm-py", data, timeout=T)
    assert g.read_file("/tmp/qm-py", 1 << 20, timeout=T) == data


def test_timeout_then_the_next_run_works(linux: qm.Machine) -> None:
    with pytest.raises(qm.TimeoutError):
        linux.console_run("sleep 1000", timeout=2)
    assert linux.console_run("echo back", timeout=T).stdout == b"back\n"


def test_kernel_messages_are_cut_out(linux: qm.Machine) -> None:
    r = linux.console_run("printf a; echo '<0>qm-py kmsg' > /dev/kmsg; echo b", timeout=T)
    assert r.stdout == b"ab\n"
    assert len(r.kernel_messages) == 1 and r.kernel_messages[0].endswith("qm-py kmsg")


def test_poweroff_during_a_run_and_a_clean_ending(qemu: str) -> None:
    with boot(qemu) as vm:
        with pytest.raises(qm.ConsoleClosed):
            vm.console_run("sleep 1; poweroff -f", timeout=T)
        vm.shutdown()
    assert vm.exitcode == 0
