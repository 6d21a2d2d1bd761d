"""The guest agent (`Machine.agent`) against qemu-ga in the Linux test guest: one boot for the
module. The tests run in file order on the one guest; the last shuts it down through the agent."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import SHARED, linux_guest_args, retire_shared

import qm

#: The guest boots and starts qemu-ga while `sync` retries; seconds to spare under TCG.
BOOT = 180.0


@pytest.fixture(scope="module")
def guest(qemu: str) -> Iterator[qm.Machine]:
    # A unix socket qm names (the socketpair is test_agent_without_an_agent_in_the_guest's).
    vm = qm.Machine(qemu, args=linux_guest_args(), guest_agent="")
    try:
        vm.launch()
        assert vm.pid is not None
        SHARED.add(vm.pid)
        vm.agent.sync(timeout=BOOT)
        yield vm
    finally:
        retire_shared(vm)


def test_sync_ping_osinfo_time(guest: qm.Machine) -> None:
    ga = guest.agent
    assert ga is guest.agent
    ga.sync()
    ga.ping(timeout=30)
    info = ga.osinfo()
    assert info["id"] == "qm-guest"
    assert abs(ga.time() - time.time_ns()) < 3600 * 10**9  # the guest's RTC is the host's


def test_exec_uname_and_exit_status(guest: qm.Machine) -> None:
    ga = guest.agent
    res = ga.exec("uname", ["-r"])
    assert (res.exitcode, res.signal, res.stderr, res.truncated) == (0, None, b"", False)
    assert res.stdout.decode().strip() == ga.osinfo()["kernel-release"]
    assert res.pid > 0

    res = ga.exec(
        "sh", ["-c", 'cat; echo "$GREETING" >&2; exit 3'], env={"GREETING": "hi"}, input=b"in\n"
    )
    assert (res.exitcode, res.stdout, res.stderr) == (3, b"in\n", b"hi\n")

    res = ga.exec("sh", ["-c", "kill -9 $$"])
    assert (res.exitcode, res.signal) == (None, 9)

    res = ga.exec("head", ["-c", "100000", "/dev/zero"], max_output=1000)
    assert len(res.stdout) == 1000 and res.stdout_truncated and res.truncated

    res = ga.exec("echo", ["not kept"], capture=False)
    assert res.exitcode == 0 and res.stdout == b""


def test_write_and_read_a_file(guest: qm.Machine) -> None:
    ga = guest.agent
    data = b"qm\x00\xff" * 300_000  # 1.2 MB: several round trips each way
    ga.write_file("/tmp/py-file", data)
    assert ga.read_file("/tmp/py-file", len(data)) == data
    with pytest.raises(qm.InvalidArgumentError):
        ga.read_file("/tmp/py-file", len(data) - 1)
    ga.write_file("/tmp/empty", b"")
    assert ga.read_file("/tmp/empty", 0) == b""
    with pytest.raises(qm.QMPError) as info:
        ga.read_file("/no/such/file", 10)
    assert info.value.error_class_name == "GenericError"


def test_commands_errors_and_cancel(guest: qm.Machine) -> None:
    ga = guest.agent
    assert ga.execute("guest-no-such")["error"]["class"] == "CommandNotFound"
    with pytest.raises(qm.QMPError) as info:
        ga.cmd("guest-no-such")
    assert info.value.error_class_name == "CommandNotFound"
    assert "version" in ga.cmd("guest-info")
    assert ga.execute("guest-ping") == {"return": {}}

    cancel = qm.Cancel()
    threading.Timer(0.3, cancel.fire).start()
    start = time.monotonic()
    with pytest.raises(qm.Interrupted):
        ga.exec("sleep", ["30"], timeout=None, cancel=cancel)
    assert time.monotonic() - start < 10
    with pytest.raises(qm.TimeoutError):
        ga.exec("sleep", ["30"], timeout=0.5)
    ga.ping()  # the channel is still good


def test_shutdown_through_the_agent_gives_a_shutdown_event(guest: qm.Machine) -> None:
    guest.agent.shutdown("powerdown")
    ev = guest.event_wait("SHUTDOWN", timeout=60)
    assert ev is not None and ev["data"]["guest"] is True
    guest.wait(timeout=60)
    assert guest.exitcode == 0


def test_agent_without_a_channel_or_launch(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        with pytest.raises(qm.StateError):
            vm.agent.ping()
        vm.launch()
        with pytest.raises(qm.StateError):
            vm.agent.sync(timeout=1)


def test_agent_without_an_agent_in_the_guest(qemu: str, guest_image: Path) -> None:
    args = qm.guest.qemu_args(str(guest_image))
    with qm.Machine(qemu, args=args, guest_agent=True) as vm:
        vm.launch()
        assert any("guest_agent" in a for a in vm.command_line)
        start = time.monotonic()
        with pytest.raises(qm.TimeoutError):
            vm.agent.sync(timeout=0.5)
        assert time.monotonic() - start < 10
    with pytest.raises(TypeError):
        qm.Machine(qemu, guest_agent=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        qm.Machine(qemu).agent.exec("ls", "-l")
    with pytest.raises(ValueError):
        qm.Machine(qemu).agent.read_file("/x", -1)
