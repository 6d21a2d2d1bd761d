"""Descriptors: many machines leave none open (issue #20).

qm opens two descriptors once per process, on its first launch (its watchdog's socket and a
/dev/null for its fork handler), and keeps them for the life of the process; after that, a
machine launched and shut down, or only closed, leaves nothing behind.
"""

from __future__ import annotations

import gc
import os

import qm


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_machines_leave_no_descriptor_open(qemu: str) -> None:
    # The first launch opens qm's per-process descriptors.
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
    gc.collect()
    before = _fds()
    for i in range(12):
        vm = qm.Machine(qemu, machine="none")
        vm.launch()
        assert vm.cmd("query-status")["status"] == "running"
        if i % 3 == 0:
            vm.get_events()
        if i % 2 == 0:
            vm.shutdown()
        vm.close()
    gc.collect()
    assert _fds() == before


def test_the_first_launch_opens_at_most_two_descriptors_for_the_process(qemu: str) -> None:
    # Whatever ran before in this process, a launch now adds nothing that stays open beyond
    # the two qm keeps for the process.
    gc.collect()
    before = _fds()
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
    gc.collect()
    assert _fds() - before <= 2
