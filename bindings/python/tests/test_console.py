"""Console interaction (`Machine.console_*`) against the 512-byte echo guest: fast, real QEMU.

The echo guest prints its banner, then echoes every byte; 'p' powers off (not echoed)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import qm

BANNER = "hello from a 512-byte guest"


def echo_guest(qemu: str, image: Path, **kw: object) -> qm.Machine:
    return qm.Machine(qemu, args=qm.guest.qemu_args(str(image)), console=True, **kw)  # type: ignore[arg-type]


def unread_at_least(vm: qm.Machine, n: int) -> None:
    """Waits (bounded) until the console holds `n` unread bytes: the guest's echo is
    asynchronous, and a timeout's tail is only what has arrived."""
    deadline = time.monotonic() + 20
    while vm.console_stats().unread < n:
        assert time.monotonic() < deadline, vm.console_stats()
        time.sleep(0.01)


def test_wait_exec_failure_interrupt_transcript_stats(qemu: str, guest_image: Path) -> None:
    with echo_guest(qemu, guest_image, console_buffer=64 << 10) as vm:
        with pytest.raises(qm.StateError):
            vm.console_wait("x", timeout=1)
        vm.launch()
        m = vm.console_wait("guest\r\n", timeout=30)
        assert m.text == BANNER.encode() + b"\r\n"
        assert m.matched == b"guest\r\n" and m.before == b"hello from a 512-byte "
        assert (m.index, m.pattern, m.dropped) == (0, "guest\r\n", 0)

        # Several success patterns of each kind; the earliest match wins.
        rx = re.compile(r"HEL+O;", re.IGNORECASE)
        m = vm.console_exec("hello", ["never", rx, b"zzz"], failure="boom", eol=";", timeout=30)
        assert (m.index, m.pattern, m.text) == (1, rx, b"hello;")

        vm.console_send_line("say boom", "\n", timeout=10)
        with pytest.raises(qm.ConsoleFailure) as info:
            vm.console_wait(qm.Regex(r"never\d"), failure=["nope", qm.Regex("bo+m")], timeout=30)
        assert info.value.text == "say boom"
        assert info.value.pattern == qm.Regex("bo+m") and info.value.pattern_index == 1
        assert info.value.status == 14

        m = vm.console_interrupt_until("k", b"kkk", interval=0.02, timeout=30)
        assert m.text.endswith(b"kkk") and m.text.startswith(b"\n")

        stats = vm.console_stats()
        assert stats.cap == 64 << 10 and not stats.closed
        assert stats.received >= len(BANNER) + len("hello;say boom\nkkk")
        vm.console_send(b"\x00\xffbytes", timeout=10)
        unread_at_least(vm, 7)
        assert vm.console_transcript(5) == "bytes"
        assert vm.console_transcript().startswith(BANNER + "\r\nhello;say boom\n")
        assert vm.console_skip_unread() >= 7
        assert vm.console_stats().unread == 0


def test_timeout_carries_the_unread_tail_and_cancel_interrupts(
    qemu: str, guest_image: Path
) -> None:
    with echo_guest(qemu, guest_image) as vm:
        vm.launch()
        vm.console_wait(BANNER, timeout=30)
        vm.console_send("tail", timeout=10)
        unread_at_least(vm, 4)
        with pytest.raises(qm.TimeoutError) as info:
            vm.console_wait("never", timeout=0.2)
        assert info.value.text is not None and info.value.text.endswith("tail")
        assert '"never"' in info.value.message
        assert isinstance(info.value, TimeoutError)
        # The tail stays unread: the next wait finds it.
        assert vm.console_wait("ail", timeout=5).text.endswith(b"tail")

        cancel = qm.Cancel()
        threading.Timer(0.2, cancel.fire).start()
        start = time.monotonic()
        with pytest.raises(qm.Interrupted):
            vm.console_wait("never", timeout=None, cancel=cancel)
        assert time.monotonic() - start < 10
        with pytest.raises(qm.Interrupted):  # a fired token stays fired
            vm.console_send("x", timeout=1, cancel=cancel)


def test_end_of_file_is_console_closed_at_once(qemu: str, guest_image: Path) -> None:
    with echo_guest(qemu, guest_image) as vm:
        vm.launch()
        vm.console_wait(BANNER, timeout=30)
        errors: list[BaseException] = []

        def pending() -> None:
            try:
                vm.console_wait("never", timeout=60)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(exc)

        waiter = threading.Thread(target=pending)
        waiter.start()
        time.sleep(0.1)
        vm.console_send("left over p", timeout=10)  # 'p' powers the guest off
        waiter.join(timeout=60)
        assert not waiter.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], qm.ConsoleClosed), errors
        assert isinstance(errors[0], EOFError) and errors[0].status == 13
        assert vm.event_wait("SHUTDOWN", timeout=30) is not None
        vm.wait(timeout=30)
        with pytest.raises(qm.ConsoleClosed) as info:
            vm.console_wait("x", timeout=5)
        assert "left over " in info.value.text
        assert vm.console_stats().closed
        assert vm.console_transcript().endswith("left over ")


def test_one_wait_at_a_time(qemu: str, guest_image: Path) -> None:
    with echo_guest(qemu, guest_image) as vm:
        vm.launch()
        cancel = qm.Cancel()
        errors: list[BaseException] = []

        def first() -> None:
            while True:  # the probes below may hold the console for a moment: retry
                try:
                    vm.console_wait("never", timeout=None, cancel=cancel)
                except qm.StateError:
                    continue
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                return

        t = threading.Thread(target=first)
        t.start()
        try:
            deadline = time.monotonic() + 30
            while True:  # until the first wait holds the console
                try:
                    vm.console_wait("never", timeout=0.001)
                except qm.StateError:
                    break
                except qm.TimeoutError:
                    assert time.monotonic() < deadline
        finally:
            cancel.fire()
            t.join(timeout=30)
        assert len(errors) == 1 and isinstance(errors[0], qm.Interrupted)


def test_bad_console_input(qemu: str, guest_image: Path) -> None:
    cases: list[tuple[dict[str, Any], type, str]] = [
        ({"success": qm.Regex("(")}, qm.InvalidArgumentError, "regex"),
        ({"success": re.compile(r"(?<=a)b")}, qm.InvalidArgumentError, "look-around"),
        ({"success": []}, qm.InvalidArgumentError, "success pattern"),
        ({"success": 5}, TypeError, "sequence of patterns"),
        ({"success": [5]}, TypeError, "a console pattern is"),
        ({"success": "a\0b"}, ValueError, "NUL"),
        ({"success": b"\xff"}, ValueError, "UTF-8"),
        ({"success": "x", "timeout": qm.DEFAULT}, ValueError, "no default"),
        ({"success": "x", "timeout": -1}, ValueError, ">= 0"),
    ]
    with echo_guest(qemu, guest_image) as vm:
        vm.launch()
        for kwargs, exc, words in cases:
            kwargs.setdefault("timeout", 1)
            with pytest.raises(exc) as info:
                vm.console_wait(**kwargs)
            assert words in str(info.value), (kwargs, info.value)
        with pytest.raises(qm.InvalidArgumentError):
            vm.console_interrupt_until("k", "x", interval=0, timeout=1)
        for interval in (float("inf"), float("nan"), -1.0, 2.0**40):
            with pytest.raises(ValueError):
                vm.console_interrupt_until("k", "x", interval=interval, timeout=1)
        with pytest.raises(ValueError):
            vm.console_transcript(0)
        with pytest.raises(TypeError):
            vm.console_send(5, timeout=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        qm.Machine(qemu, console_buffer=-1)
    with pytest.raises(qm.StateError):
        qm.Machine(qemu).console_stats()
