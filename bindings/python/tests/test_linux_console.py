"""Console interaction against the Linux test guest (guest/linux): one boot for the module.

The tests run in file order on the one guest; the last powers it off."""

from __future__ import annotations

import re
import time
from typing import Iterator

import pytest
from conftest import SHARED, linux_guest_args, retire_shared

import qm

PROMPT = "qm-guest# "
#: A boot has seconds to spare under TCG on a loaded machine.
BOOT = 180.0


@pytest.fixture(scope="module")
def linux(qemu: str) -> Iterator[qm.Machine]:
    args = linux_guest_args()
    vm = qm.Machine(qemu, args=args, console=True)
    try:
        vm.launch()
        assert vm.pid is not None
        SHARED.add(vm.pid)
        vm.console_wait("qm-guest: ready", failure="Kernel panic", timeout=BOOT)
        vm.console_wait(PROMPT, timeout=BOOT)
        yield vm
    finally:
        retire_shared(vm)


def run(vm: qm.Machine, command: str) -> str:
    """Runs `command` at the shell prompt; its output (the lines between the echo of the
    command and the next prompt)."""
    vm.console_skip_unread()  # the prompt's cursor query
    m = vm.console_exec(command, PROMPT, timeout=60)
    lines = m.before.decode().split("\r\n")
    echo = next(i for i, line in enumerate(lines) if line.endswith(command))
    return "\n".join(lines[echo + 1 : -1])


def test_uname_through_the_console(linux: qm.Machine) -> None:
    release = run(linux, "uname -r")
    assert re.fullmatch(r"\d+\.\d+\.\d+-\S+", release), release
    kernel = linux.args[linux.args.index("-kernel") + 1]
    if "/linux-guest/" in kernel:  # the build's key directory starts with the release
        assert f"/{release}-" in kernel, (release, kernel)
    assert run(linux, "echo $((6*7))") == "42"


def test_failure_pattern_on_a_command_error(linux: qm.Machine) -> None:
    linux.console_skip_unread()
    with pytest.raises(qm.ConsoleFailure) as info:
        linux.console_exec(
            "ls /no-such-dir", PROMPT, failure=qm.Regex(r"No such file or directory"), timeout=60
        )
    assert "/no-such-dir" in info.value.text
    assert info.value.text.endswith("No such file or directory")
    assert info.value.pattern == qm.Regex(r"No such file or directory")
    linux.console_wait(PROMPT, timeout=60)  # the shell is back
    assert run(linux, "echo still here") == "still here"


def test_timeout_names_the_tail(linux: qm.Machine) -> None:
    run(linux, "echo marker-$((40+2))")
    linux.console_send_line("echo tail-$((6*7))", timeout=10)
    linux.console_wait("tail-42\r\n", timeout=60)  # its output, after the echo of the line
    deadline = time.monotonic() + 60
    while linux.console_stats().unread < len(PROMPT):  # the prompt has arrived, unread
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(qm.TimeoutError) as info:
        linux.console_wait("never printed", timeout=0.3)
    assert info.value.text is not None and PROMPT in info.value.text
    assert "tail-42" in linux.console_transcript(200)


def test_poweroff_ends_a_pending_wait_with_console_closed(linux: qm.Machine) -> None:
    linux.console_skip_unread()
    with pytest.raises(qm.ConsoleClosed):
        linux.console_exec("poweroff -f", "never printed", timeout=120)
    ev = linux.event_wait("SHUTDOWN", timeout=60)
    assert ev is not None and ev["data"]["guest"] is True
    linux.wait(timeout=60)
    assert linux.exitcode == 0
    assert linux.console_stats().closed
