"""The path every command and event wait takes (issue #20): what it skips must not change what
it answers."""

from __future__ import annotations

import threading

import pytest

import qm
from qemu.machine import QEMUMachine
from qm import _convert


def test_conv_keys_of_nothing_is_nothing() -> None:
    assert qm.conv_keys({}) == {}
    assert qm.conv_keys({"read_only": True}) == {"read-only": True}


def test_seconds_to_ms_asks_the_core_once_per_value() -> None:
    # The core's rule: rounded up to a whole millisecond, 0 stays 0, inf waits forever.
    for _ in range(2):
        assert _convert.seconds_to_ms(0.0004) == 1
        assert _convert.seconds_to_ms(0) == 0
        assert _convert.seconds_to_ms(10) == 10_000
        assert _convert.seconds_to_ms(float("inf")) == qm._ffi.QM_WAIT_FOREVER
    before = _convert._seconds_to_ms.cache_info()
    assert _convert.seconds_to_ms(0.0004) == 1
    after = _convert._seconds_to_ms.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    with pytest.raises(ValueError):
        _convert._ms(-1.0)


def test_dropin_event_wait_with_one_filter_keeps_the_match(qemu: str) -> None:
    with QEMUMachine(qemu, args=["-machine", "none"]) as vm:
        vm.launch()
        vm.cmd("stop")
        # A match the queued STOP does not meet: nothing is taken.
        with pytest.raises(TimeoutError):
            vm.event_wait("STOP", timeout=0.2, match={"data": {"no-such-key": 1}})
        assert vm.event_wait("STOP", timeout=0, match={"data": {"no-such-key": 1}}) is None
        ev = vm.event_wait("STOP", timeout=5, match={"event": "STOP"})
        assert ev is not None and ev["event"] == "STOP" and "timestamp" in ev
        assert vm.get_qmp_events() == []
        # One pair through events_wait is the same wait; a malformed one is refused.
        vm.cmd("cont")
        ev = vm.events_wait([("RESUME", None)], timeout=5)
        assert ev is not None and ev["event"] == "RESUME"
        with pytest.raises(TypeError):
            vm.events_wait(["RESUME"], timeout=0)  # type: ignore[list-item]


def test_close_waits_for_a_call_in_flight(qemu: str) -> None:
    vm = qm.Machine(qemu, machine="none")
    vm.launch()
    outcome: list[str] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            vm.event_wait("NEVER", timeout=None)
        except qm.QMError as exc:
            outcome.append(type(exc).__name__)

    t = threading.Thread(target=wait)
    t.start()
    started.wait(10)
    vm.close()  # fails the wait, then frees the handle only once it returned
    t.join(30)
    assert not t.is_alive()
    assert outcome and outcome[0] in ("DisconnectedError", "StateError", "InterruptedError")
    assert vm._calls == 0
    with pytest.raises(qm.StateError):
        vm.cmd("query-status")
