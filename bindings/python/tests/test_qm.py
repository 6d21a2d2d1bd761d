"""The Pythonic `qm` API against a real QEMU."""

from __future__ import annotations

import errno
import gc
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import pid_alive, read_until

import qm


def test_launch_cmd_qmp_and_shutdown(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
        assert vm.is_running and vm.pid is not None
        assert vm.cmd("query-status")["status"] == "running"
        reply = vm.qmp("query-status")
        assert reply["return"]["running"] is True
        assert vm.qmp("no-such-command")["error"]["class"] == "CommandNotFound"
        assert vm.command_line[:2] == [qemu, "-display"]
        vm.shutdown()
        assert vm.exitcode == 0
        assert not vm.is_running and vm.pid is None
        assert vm.get_log() == ""


def test_qmp_error_carries_class_and_desc(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
        with pytest.raises(qm.QMPError) as info:
            vm.cmd("no-such-command")
        assert info.value.error_class_name == "CommandNotFound"
        assert "no-such-command" in info.value.desc
        assert str(info.value) == info.value.desc
        with pytest.raises(qm.QMPError) as info:
            vm.cmd("device_del", {"id": "nothing-here"})
        assert info.value.error_class_name == "DeviceNotFound"


def test_launch_error_has_exit_code_command_and_output(qemu: str) -> None:
    vm = qm.Machine(qemu, args=["-no-such-option"])
    with pytest.raises(qm.LaunchError) as info:
        vm.launch()
    err = info.value
    assert err.exitcode == 1
    assert "-no-such-option" in err.command
    assert "invalid option" in err.output
    assert not vm.is_running
    assert vm.get_log() is not None and "invalid option" in vm.get_log()  # type: ignore[operator]
    vm.close()


def test_missing_binary_is_an_os_error_with_errno(tmp_path: Path) -> None:
    vm = qm.Machine(str(tmp_path / "no-qemu-here"))
    with pytest.raises(qm.LaunchError) as info:
        vm.launch()
    assert info.value.exitcode is None
    assert isinstance(info.value.cause, qm.QMOSError)
    assert isinstance(info.value.cause, OSError)
    assert info.value.cause.errno == errno.ENOENT
    vm.close()


def test_events_in_order_and_wait_with_match(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
        vm.cmd("stop")
        vm.cmd("cont")
        vm.cmd("stop")
        # A wait for the second STOP leaves STOP, RESUME queued, in order.
        ev = vm.event_wait("RESUME", timeout=5)
        assert ev is not None and ev["event"] == "RESUME"
        assert vm.get_event()["event"] == "STOP"  # type: ignore[index]
        assert vm.get_event(timeout=5)["event"] == "STOP"  # type: ignore[index]
        assert vm.get_event() is None
        with pytest.raises(qm.TimeoutError):
            vm.event_wait("RESUME", timeout=0.2)
        with pytest.raises(TimeoutError):  # also the builtin type
            vm.get_event(timeout=0.1)
        vm.cmd("cont")
        ev = vm.events_wait([("STOP", None), ("RESUME", {"event": "RESUME"})], timeout=5)
        assert ev is not None and ev["event"] == "RESUME"
        vm.cmd("stop")
        assert [e["event"] for e in vm.get_events(timeout=5)] == ["STOP"]
        vm.clear_events()
        assert vm.get_events() == []


def test_cancel_interrupts_a_blocked_wait_from_another_thread(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
        cancel = qm.Cancel()
        threading.Timer(0.2, cancel.fire).start()
        start = time.monotonic()
        with pytest.raises(qm.Interrupted):
            vm.event_wait("NEVER", timeout=None, cancel=cancel)
        assert time.monotonic() - start < 5
        assert cancel.fired
        with pytest.raises(qm.Interrupted):  # a fired token stays fired
            vm.cmd("query-status", cancel=cancel)
        assert vm.cmd("query-status")["running"] is True


def test_threads_each_get_their_own_reply(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(50):
                    name = f"t{n}-{i}"
                    vm.cmd("object-add", {"qom-type": "secret", "id": name, "data": name})
                    got = vm.cmd("qom-get", {"path": f"/objects/{name}", "property": "data"})
                    assert got == name, (got, name)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors


def test_console_of_the_test_guest(qemu: str, guest_image: Path) -> None:
    vm = qm.Machine(qemu, args=qm.guest.qemu_args(str(guest_image)), console=True)
    with vm:
        vm.launch()
        con = vm.console()
        try:
            assert b"hello from a 512-byte guest" in read_until(con, b"guest\r\n")
            con.sendall(b"abc")
            assert read_until(con, b"abc").endswith(b"abc")
            con.sendall(b"p")
            ev = vm.event_wait("SHUTDOWN", timeout=20)
            assert ev is not None and ev["data"]["guest"] is True
        finally:
            con.close()
        vm.wait(timeout=20)
        assert vm.exitcode == 0


def test_guest_exit_status_and_wait(qemu: str, tmp_path: Path) -> None:
    image = tmp_path / "exit.img"
    qm.guest.write_image(str(image), "bye", qm.guest.EXIT, 5)
    with qm.Machine(
        qemu, args=qm.guest.qemu_args(str(image)), console=True, drain_console=True
    ) as vm:
        vm.launch()
        vm.wait(timeout=20)
        assert vm.exitcode == qm.guest.exit_status(5)


def test_wait_timeout_kills_and_raises(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        vm.launch()
        with pytest.raises(qm.AbnormalShutdownError):
            vm.wait(timeout=0.2)
        assert vm.exitcode == -9
        assert not vm.is_running


def test_fds_send_and_add_fd(qemu: str, tmp_path: Path) -> None:
    f = tmp_path / "data"
    f.write_bytes(b"x" * 4096)
    fd = os.open(f, os.O_RDONLY)
    try:
        with qm.Machine(qemu, machine="none") as vm:
            vm.add_fd(fd, 3, "passed-at-launch")
            vm.launch()
            vm.send_file(str(f))
            vm.cmd("add-fd", {"fdset-id": 7, "opaque": "sent-later"})
            sets = {s["fdset-id"]: s for s in vm.cmd("query-fdsets")}
            assert sets[3]["fds"][0]["opaque"] == "passed-at-launch"
            assert sets[7]["fds"][0]["opaque"] == "sent-later"
            vm.send_fd(fd)
            vm.cmd("getfd", {"fdname": "mine"})
    finally:
        os.close(fd)


def test_garbage_collected_running_machine_leaves_no_process(qemu: str) -> None:
    vm = qm.Machine(qemu, machine="none")
    vm.launch()
    pid = vm.pid
    assert pid is not None and pid_alive(pid)
    del vm
    gc.collect()
    assert not pid_alive(pid)


def test_close_twice_and_calls_after_close(qemu: str) -> None:
    vm = qm.Machine(qemu, machine="none")
    vm.launch()
    vm.close()
    vm.close()
    with pytest.raises(qm.StateError):
        vm.cmd("query-status")
    # The exit status of the last run stays readable after close (issue 21).
    assert vm.exitcode == 0 and not vm.is_running


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: qm.Machine(123), TypeError, "binary must be a str"),  # type: ignore[arg-type]
        (lambda: qm.Machine(""), ValueError, "binary is empty"),
        (lambda: qm.Machine("q", args=["a\0b"]), ValueError, "NUL"),
        (lambda: qm.Machine("q", name="../x"), ValueError, "name"),
        (lambda: qm.Machine("q", qmp_timer="soon"), TypeError, "seconds"),  # type: ignore[arg-type]
        (lambda: qm.Machine("q", qmp_timer=-1), ValueError, ">= 0"),
        (lambda: qm.Machine("q", monitor=("h", 1, 2)), TypeError, "(host, port)"),  # type: ignore[arg-type]
        (lambda: qm.Machine("q", monitor=("h", 70000)), ValueError, "out of range"),
        (lambda: qm.Machine("q", wrapper="strace"), TypeError, "sequence"),
        # A string would be split into one argument per character.
        (lambda: qm.Machine("q", args="-machine none"), TypeError, "sequence"),
        (lambda: qm.Machine("q", args=b"-S"), TypeError, "sequence"),  # type: ignore[arg-type]
        (lambda: qm.Machine("q").add_fd(-1, 0, "x"), ValueError, "file descriptor"),
        (lambda: qm.Machine("q").add_fd(999999, 0, "x"), ValueError, "not an open"),
        (lambda: qm.Machine("q").cmd("query-status"), qm.StateError, "no QMP connection"),
        (lambda: qm.Machine("q").cmd(123), TypeError, "command must be a str"),  # type: ignore[arg-type]
        (lambda: qm.Machine("q").cmd("x", [1]), TypeError, "must be a dict"),  # type: ignore[arg-type]
        (lambda: qm.Machine("q").cmd("x", {"a": object()}), TypeError, "JSON"),
        (lambda: qm.Machine("q").event_wait("X", timeout=float("nan")), ValueError, ">= 0"),
        (lambda: qm.Machine("q").get_event(timeout=qm.DEFAULT), ValueError, "no default"),
        (lambda: qm.Machine("q").events_wait(["STOP"]), TypeError, "pairs"),  # type: ignore[list-item]
        (lambda: qm.Machine("q").set_console(index=-1), ValueError, "out of range"),
        (lambda: qm.Machine("q").launch(cancel="now"), TypeError, "qm.Cancel"),  # type: ignore[arg-type]
        (lambda: qm.guest.write_image("/nonexistent/dir/x", "b"), OSError, "nonexistent"),
        (lambda: qm.guest.write_image("/tmp/x", "b" * 1000), ValueError, "banner"),
        (lambda: qm.event_match({"a": 1}, {"a": {1, 2}}), TypeError, "JSON"),
        (lambda: qm.set_log_level("loud"), ValueError, "log level"),
    ],
)
def test_bad_input_raises_clear_python_exceptions(call, exc, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_event_match_is_the_cores() -> None:
    assert qm.event_match({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}})
    assert qm.event_match({"foo": 5}, {"foo": None})
    assert not qm.event_match({"foo": {"bar": 1}}, {"foo": {"abc": None}})
    assert qm.event_match({"x": 1}, None)


def test_console_socket_is_a_real_socket(qemu: str, guest_image: Path) -> None:
    with qm.Machine(qemu, args=qm.guest.qemu_args(str(guest_image)), console=True) as vm:
        vm.launch()
        con = vm.console()
        assert isinstance(con, socket.socket)
        with con, con.makefile("rb", buffering=0) as f:
            con.settimeout(20)
            assert f.readline() == b"hello from a 512-byte guest\r\n"
        vm.kill()
        assert vm.exitcode == -9


def test_close_from_another_thread_while_calls_run(qemu: str) -> None:
    """Queries and blocked waits racing a close: exceptions, never a crash."""
    vm = qm.Machine(qemu, machine="none")
    vm.launch()
    stop = threading.Event()
    seen: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            _ = (vm.is_running, vm.pid, vm.exitcode)

    def block() -> None:
        try:
            vm.event_wait("NEVER", timeout=None)
        except qm.QMError as exc:
            seen.append(type(exc).__name__)

    threads = [threading.Thread(target=poll) for _ in range(3)] + [threading.Thread(target=block)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    vm.close()
    stop.set()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert seen and seen[0] in ("DisconnectedError", "StateError")


def test_two_step_launch_with_a_composed_argv(qemu: str) -> None:
    with qm.Machine(qemu, machine="none") as vm:
        base = vm.prepare_launch()
        assert base[:4] == ["-display", "none", "-vga", "none"]
        assert any(a.startswith("socket,id=mon,fd=") for a in base)
        assert vm.prepare_launch() == base
        r, w = os.pipe()
        try:
            os.set_inheritable(r, True)
            argv = [qemu, *base, "-name", "composed", "-add-fd", f"fd={r},set=9,opaque=pipe"]
            vm.launch_argv(argv, pass_fds=[r])
        finally:
            os.close(r)
            os.close(w)
        assert vm.cmd("query-name") == {"name": "composed"}
        assert vm.cmd("query-fdsets")[0]["fdset-id"] == 9
        assert vm.command_line == argv
        with pytest.raises(qm.StateError):
            vm.prepare_launch()
        pid = vm.pid
        vm.shutdown()
        assert vm.last_pid == pid
        assert vm.qmp_timer == 30.0
        vm.prepare_launch()
        vm.abort_launch()
        with pytest.raises(ValueError):
            vm.launch_argv([])
        with pytest.raises(qm.InvalidArgumentError):
            vm.launch_argv([qemu], pass_fds=[987654])


@pytest.mark.skipif(
    not qm.CORE_LOGS_TO_LOGGING, reason="the loaded libqm has no qm_set_log_callback"
)
def test_core_records_reach_python_logging(qemu: str, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.DEBUG, logger="qm"):
        qm.set_log_level("debug")
        try:
            with qm.Machine(qemu, machine="none") as vm:
                vm.launch()
                vm.cmd("query-status")
        finally:
            qm.set_log_level("warn")
    core = [r for r in caplog.records if r.name.startswith("qm.") and r.pathname == "(libqm)"]
    assert core, [r.name for r in caplog.records]
    assert any("query-status" in r.getMessage() for r in core)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qm"):
        vm = qm.Machine(qemu, machine="none")
        vm.launch()
        pid = vm.pid
        assert pid is not None
        os.kill(pid, 9)  # a signal qm did not send: the core warns
        vm.wait(timeout=30)
        assert vm.exitcode == -9
        vm.close()
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("qm")
    ]
    assert any("signal 9" in r.getMessage() for r in warnings), caplog.text


def test_qmp_transcript_and_log_so_far(qemu: str, tmp_path: Path) -> None:
    import json

    transcript = tmp_path / "qmp.jsonl"
    with qm.Machine(qemu, machine="none", qmp_transcript=str(transcript)) as vm:
        assert vm.get_log_so_far() is None
        vm.launch()
        vm.cmd("stop")
        vm.event_wait("STOP", timeout=5)
        assert vm.get_log_so_far() == ""
        vm.shutdown()
        assert vm.get_log_so_far() == vm.get_log() == ""
    lines = [json.loads(line) for line in transcript.read_text().splitlines()]
    dirs = {(rec["dir"], json.dumps(rec["msg"])[:40]) for rec in lines}
    assert any(d == "out" and "stop" in m for d, m in dirs)
    assert any(rec["dir"] == "event" and rec["msg"]["event"] == "STOP" for rec in lines)
    assert any(rec["dir"] == "in" and "QMP" in rec["msg"] for rec in lines)  # the greeting


def test_event_cap_drops_the_oldest_and_says_so_once(qemu: str) -> None:
    with qm.Machine(qemu, machine="none", max_queued_events=1) as vm:
        vm.launch()
        vm.cmd("stop")
        vm.cmd("cont")
        vm.cmd("stop")
        deadline = time.monotonic() + 30
        while vm.dropped_events < 2:  # the events arrive after the replies
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(qm.EventsDropped) as info:
            vm.get_event()
        assert info.value.status == 12
        ev = vm.get_event()  # the newest, kept
        assert ev is not None and ev["event"] == "STOP"
        assert vm.get_event() is None
        vm.set_max_queued_events(None)
    with pytest.raises(ValueError):
        qm.Machine(qemu, max_queued_events=-1)


def test_launch_all_launches_each_and_fails_only_the_bad_one(qemu: str) -> None:
    good = [qm.Machine(qemu, machine="none") for _ in range(2)]
    bad = qm.Machine(qemu, machine="none", args=["-no-such-option-for-batch"])
    try:
        results = qm.launch_all([good[0], bad, good[1], good[0]], timeout=60)
        assert len(results) == 4
        assert results[0] is None and results[2] is None, results
        for vm in good:
            assert vm.cmd("query-status")["status"] == "running"
        err = results[1]
        assert isinstance(err, qm.LaunchError), err
        assert err.exitcode == 1
        assert "no-such-option-for-batch" in err.output
        assert not bad.is_running
        assert isinstance(results[3], qm.InvalidArgumentError), results[3]
        # Launched already: StateError for each, returned rather than raised.
        again = qm.launch_all(good)
        assert all(isinstance(e, qm.StateError) for e in again), again
        # A fired token launches nothing.
        cancel = qm.Cancel()
        cancel.fire()
        fired = qm.launch_all([bad], cancel=cancel)
        assert isinstance(fired[0], qm.Interrupted), fired
        assert not bad.is_running
    finally:
        for vm in [*good, bad]:
            vm.shutdown()
            vm.close()
