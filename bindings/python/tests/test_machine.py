"""qemu.machine (the drop-in): the seed's scenarios, through its public names."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import read_until

import qm
from qemu.machine import (
    AbnormalShutdown,
    QEMUMachine,
    QEMUMachineAddDeviceError,
    QEMUMachineError,
    VMLaunchFailure,
)
from qemu.machine.console_socket import ConsoleSocket


def test_launch_query_and_context_manager(qemu: str) -> None:
    with QEMUMachine(qemu) as vm:
        vm.set_machine("none")
        vm.launch()
        assert vm.is_running()
        assert vm.get_pid() is not None
        assert vm.cmd("query-status")["status"] == "running"
        assert vm.command("query-status")["status"] == "running"
        assert vm.qmp("query-status")["return"]["running"] is True
        assert vm.binary == qemu
        assert "-machine" in vm._qemu_full_args
    assert not vm.is_running()
    assert vm.exitcode() == 0
    assert vm.get_pid() is None
    assert issubclass(QEMUMachineAddDeviceError, QEMUMachineError)


def test_launch_twice_is_an_error(qemu: str) -> None:
    with QEMUMachine(qemu, args=["-machine", "none"]) as vm:
        vm.launch()
        with pytest.raises(QEMUMachineError, match="already launched"):
            vm.launch()


def test_bad_argument_is_vmlaunchfailure_with_output(qemu: str) -> None:
    vm = QEMUMachine(qemu, args=["-no-such-option"])
    with pytest.raises(VMLaunchFailure) as info:
        vm.launch()
    assert info.value.exitcode == 1
    assert "-no-such-option" in info.value.command
    assert info.value.output is not None and "invalid option" in info.value.output
    assert "Exit code: 1" in str(info.value)
    assert vm.exitcode() == 1
    assert "invalid option" in (vm.get_log() or "")


def test_missing_binary_is_vmlaunchfailure_from_an_oserror(tmp_path: Path) -> None:
    vm = QEMUMachine(str(tmp_path / "nothing"))
    with pytest.raises(VMLaunchFailure) as info:
        vm.launch()
    assert info.value.exitcode is None
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == 2
    # As the seed's (subprocess.Popen's) FileNotFoundError: code that catches the builtin
    # catches it; it stays a qm.QMOSError.
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert isinstance(info.value.__cause__, qm.QMOSError)


def test_missing_base_temp_dir_is_file_not_found(tmp_path: Path) -> None:
    """The seed's tempfile.mkdtemp raises FileNotFoundError for a missing base_temp_dir."""
    vm = QEMUMachine("qemu-system-x86_64", base_temp_dir=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError) as info:
        vm.temp_dir  # noqa: B018 (the property creates it)
    assert info.value.errno == 2
    with pytest.raises(FileNotFoundError):
        qm.Machine("qemu-system-x86_64", base_temp_dir=str(tmp_path / "missing")).temp_dir  # noqa: B018


def test_qmp_connection_has_the_legacy_client_surface(qemu: str) -> None:
    """What subclasses of the seed reach for on `vm._qmp` (qemu.qmp.legacy's
    QEMUMonitorProtocol), the older `command()` and the `sock_dir` property."""
    with QEMUMachine(qemu, args=["-machine", "none"]) as vm:
        vm.launch()
        q = vm._qmp
        q.settimeout(20.0)
        assert q.cmd("query-status")["running"] is True
        assert q.command("query-name") == {}
        assert q.cmd_raw("query-status")["return"]["running"] is True
        assert "return" in q.cmd_obj({"execute": "stop"})
        ev = q.pull_event(wait=10.0)
        assert ev is not None and ev["event"] == "STOP"
        q.cmd("cont")
        assert [e["event"] for e in q.get_events(wait=10.0)] == ["RESUME"]
        q.cmd("stop")
        q.clear_events()
        assert q.pull_event() is None
        q.settimeout(None)
        assert vm.command("query-status")["status"] == "paused"
        with open(os.devnull, "rb") as f:
            q.send_fd_scm(f.fileno())
        assert vm.cmd("getfd", fdname="devnull") == {}
        with pytest.raises(TypeError):
            q.settimeout("soon")  # type: ignore[arg-type]
        assert os.path.isdir(vm.sock_dir)
        assert vm.sock_dir == vm.temp_dir
    with QEMUMachine(qemu, sock_dir="/tmp") as other:
        assert other.sock_dir == "/tmp"


def test_qmp_error_reply_and_cmd_raises(qemu: str) -> None:
    with QEMUMachine(qemu, args=["-machine", "none"]) as vm:
        vm.launch()
        reply = vm.qmp("no-such-command")
        assert reply["error"]["class"] == "CommandNotFound"
        with pytest.raises(qm.QMPError) as info:
            vm.cmd("no-such-command")
        assert info.value.error_class_name == "CommandNotFound"
        # keyword arguments: '_' becomes '-'; args_dict is sent as it is
        vm.cmd("object-add", qom_type="secret", id="s0", data="x")
        assert vm.cmd("qom-get", {"path": "/objects/s0", "property": "data"}) == "x"
        with pytest.raises(TypeError):
            vm.cmd("qom-get", {"path": "/"}, property="x")


def test_events_cached_in_order_and_waits(qemu: str) -> None:
    with QEMUMachine(qemu, args=["-machine", "none"]) as vm:
        vm.launch()
        vm.cmd("stop")
        vm.cmd("cont")
        vm.cmd("stop")
        ev = vm.event_wait("RESUME", timeout=5)
        assert ev is not None and ev["event"] == "RESUME"
        # What the wait passed over is still there, oldest first (the seed put it in a cache
        # that get_qmp_event served before newer events, but get_qmp_events after them).
        assert [e["event"] for e in vm.get_qmp_events()] == ["STOP", "STOP"]
        assert vm.get_qmp_event() is None
        with pytest.raises(TimeoutError):
            vm.event_wait("RESUME", timeout=0.2)
        assert vm.event_wait("RESUME", timeout=0) is None
        vm.cmd("cont")
        ev = vm.events_wait([("STOP", {"data": None}), ("RESUME", {"event": "RESUME"})], timeout=5)
        assert ev is not None and ev["event"] == "RESUME"
        vm.cmd("stop")
        ev = vm.get_qmp_event(wait=True)
        assert ev is not None and ev["event"] == "STOP"


def test_event_match_is_static_and_follows_the_seed() -> None:
    match = QEMUMachine.event_match
    assert match({"foo": {"bar": 1}}, None)
    assert match({"foo": {"bar": 1}}, {"foo": None})
    assert match({"foo": 5}, {"foo": None})
    assert not match({"foo": {"bar": 1}}, {"foo": {"abc": None}})
    assert match({"foo": {"bar": 1, "rab": 2}}, {"foo": {"rab": 2}})


def test_hard_shutdown_and_kill(qemu: str, caplog: pytest.LogCaptureFixture) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"])
    vm.launch()
    with caplog.at_level(logging.WARNING, logger="qemu.machine"):
        vm.shutdown(hard=True)
    assert vm.exitcode() == -signal.SIGKILL
    assert "received signal" not in caplog.text  # a kill we asked for is not reported
    vm.launch()
    vm.kill()
    assert vm.exitcode() == -signal.SIGKILL


def test_stopped_qemu_shutdown_is_abnormal_and_bounded(qemu: str) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"])
    vm.launch()
    pid = vm.get_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    start = time.monotonic()
    with pytest.raises(AbnormalShutdown):
        vm.shutdown(timeout=1)
    assert time.monotonic() - start < 10
    assert vm.exitcode() == -signal.SIGKILL
    assert not vm.is_running()


def test_killed_externally_is_reported_on_the_logger(
    qemu: str, caplog: pytest.LogCaptureFixture
) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"])
    vm.launch()
    pid = vm.get_pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    with caplog.at_level(logging.WARNING, logger="qemu.machine"):
        try:
            vm.shutdown()
        except AbnormalShutdown:
            pass
    assert vm.exitcode() in (0, -signal.SIGTERM)
    if vm.exitcode() == -signal.SIGTERM:
        assert "qemu received signal 15" in caplog.text


def test_fd_passing_send_fd_scm_and_add_fd(qemu: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")
    fd = os.open(path, os.O_RDONLY)
    try:
        vm = QEMUMachine(qemu, args=["-machine", "none"])
        assert vm.add_fd(fd, 1, "opaque,with,commas") is vm
        with vm:
            vm.launch()
            assert vm.send_fd_scm(file_path=str(path)) == 0
            vm.cmd("add-fd", fdset_id=2, opaque="scm")
            assert vm.send_fd_scm(fd=fd) == 0
            vm.cmd("getfd", fdname="f")
            sets = {s["fdset-id"]: s["fds"] for s in vm.cmd("query-fdsets")}
            assert sets[1][0]["opaque"] == "opaque,with,commas"
            assert sets[2][0]["opaque"] == "scm"
            with pytest.raises(ValueError):
                vm.send_fd_scm()
    finally:
        os.close(fd)


def test_qemu_inherits_what_is_marked_inheritable_as_with_close_fds_false(
    qemu: str, tmp_path: Path
) -> None:
    """The original launches with close_fds=False: a descriptor marked inheritable reaches
    QEMU under its number without add_fd; one that is not marked does not."""
    kept_path, closed_path = tmp_path / "kept", tmp_path / "closed"
    kept_path.write_bytes(b"k")
    closed_path.write_bytes(b"c")
    kept = os.open(kept_path, os.O_RDONLY)
    closed = os.open(closed_path, os.O_RDONLY)  # not inheritable (PEP 446)
    try:
        os.set_inheritable(kept, True)
        with QEMUMachine(qemu, args=["-machine", "none"]) as vm:
            vm.launch()
            fds = f"/proc/{vm.get_pid()}/fd"
            targets = {os.readlink(f"{fds}/{n}") for n in os.listdir(fds)}
            assert os.readlink(f"{fds}/{kept}") == str(kept_path)
            assert str(closed_path) not in targets
    finally:
        os.close(kept)
        os.close(closed)


def test_guest_console_and_guest_shutdown(qemu: str, guest_image: Path) -> None:
    vm = QEMUMachine(qemu, args=qm.guest.qemu_args(str(guest_image)))
    vm.set_console()
    vm.launch()
    try:
        con = vm.console_socket
        assert isinstance(con, socket.socket) and isinstance(con, ConsoleSocket)
        assert b"hello from a 512-byte guest" in read_until(con, b"\r\n")
        con.sendall(b"abc")
        assert read_until(con, b"abc")
        con.sendall(b"p")
        ev = vm.event_wait("SHUTDOWN", timeout=20)
        assert ev is not None and ev["data"]["guest"] is True
        vm.wait()
    finally:
        vm.shutdown()
    assert vm.exitcode() == 0


def test_console_file_reads_lines(qemu: str, guest_image: Path) -> None:
    with QEMUMachine(qemu, args=qm.guest.qemu_args(str(guest_image))) as vm:
        vm.set_console()
        vm.launch()
        vm.console_socket.settimeout(20)
        assert vm.console_file.readline() == b"hello from a 512-byte guest\r\n"


def test_drain_console_and_console_log(qemu: str, tmp_path: Path) -> None:
    image = tmp_path / "g.img"
    qm.guest.write_image(str(image), "drained banner", qm.guest.POWEROFF)
    log = tmp_path / "console.log"
    vm = QEMUMachine(qemu, args=qm.guest.qemu_args(str(image)), console_log=str(log))
    vm.set_console()
    vm.launch()
    # Nobody reads while the guest writes and powers off: the drain keeps QEMU going.
    vm.wait(timeout=30)
    assert vm.exitcode() == 0
    assert b"drained banner\r\n" in log.read_bytes()


def test_drained_console_keeps_bytes_for_the_reader(qemu: str, tmp_path: Path) -> None:
    image = tmp_path / "g.img"
    qm.guest.write_image(str(image), "kept for you", qm.guest.ECHO)
    with QEMUMachine(qemu, args=qm.guest.qemu_args(str(image)), drain_console=True) as vm:
        vm.set_console()
        vm.launch()
        assert b"kept for you" in read_until(vm.console_socket, b"\r\n")


def test_wait_timeout_is_abnormal_shutdown(qemu: str) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"])
    vm.launch()
    with pytest.raises(AbnormalShutdown):
        vm.wait(timeout=0.2)
    assert vm.exitcode() == -signal.SIGKILL


def test_relaunch_gives_a_fresh_exit_code_and_log(qemu: str) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"])
    vm.launch()
    vm.kill()
    assert vm.exitcode() == -9
    vm.args.append("-no-such-option")
    with pytest.raises(VMLaunchFailure):
        vm.launch()
    assert vm.exitcode() == 1  # this run's, not the last one's
    vm.args.pop()
    vm.launch()
    assert vm.exitcode() is None
    vm.shutdown()
    assert vm.exitcode() == 0


def test_log_dir_keeps_the_log_after_failure(qemu: str, tmp_path: Path) -> None:
    vm = QEMUMachine(qemu, args=["-no-such-option"], name="failing", log_dir=str(tmp_path))
    with pytest.raises(VMLaunchFailure):
        vm.launch()
    assert "invalid option" in (vm.get_log() or "")
    assert "invalid option" in (tmp_path / "failing.log").read_text()
    assert vm.log_dir == str(tmp_path)


def test_wrapper_prefixes_the_command(qemu: str, tmp_path: Path) -> None:
    with QEMUMachine(qemu, args=["-machine", "none"], wrapper=["env", "QM_T=1"]) as vm:
        vm.launch()
        assert vm._qemu_full_args[:3] == ("env", "QM_T=1", qemu)
        pid = vm.get_pid()
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert b"QM_T=1" in f.read().split(b"\0")


def test_unix_and_tcp_monitor(qemu: str, tmp_path: Path) -> None:
    sock = str(tmp_path / "mon.sock")
    with QEMUMachine(qemu, args=["-machine", "none"], monitor_address=sock) as vm:
        vm.launch()
        assert os.path.exists(sock)
        assert vm.cmd("query-status")["running"] is True
    assert not os.path.exists(sock)
    with QEMUMachine(qemu, args=["-machine", "none"], monitor_address=("127.0.0.1", 0)) as vm:
        vm.launch()
        assert vm.cmd("query-status")["running"] is True


def test_qmp_off_shutdown_uses_sigterm(qemu: str) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"])
    vm.set_qmp_monitor(False)
    vm.launch()
    assert not any("mon" in a for a in vm._qemu_full_args)
    with pytest.raises(QEMUMachineError, match="no connection"):
        vm.qmp("query-status")
    vm.shutdown()
    assert vm.exitcode() in (0, -signal.SIGTERM)


def test_temp_dir_is_private_and_removed(qemu: str, tmp_path: Path) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"], base_temp_dir=str(tmp_path))
    d = vm.temp_dir
    assert os.path.isdir(d) and d.startswith(str(tmp_path))
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert vm.log_dir == d
    vm.launch()
    vm.shutdown()
    assert not os.path.exists(d)
    assert list(tmp_path.iterdir()) == []


def test_qmp_and_console_before_launch_are_machine_errors(qemu: str) -> None:
    vm = QEMUMachine(qemu)
    with pytest.raises(QEMUMachineError):
        vm.cmd("query-status")
    with pytest.raises(QEMUMachineError):
        _ = vm.console_socket
    vm.set_console()
    with pytest.raises(QEMUMachineError):
        _ = vm.console_socket
    with pytest.raises(QEMUMachineError):
        _ = vm._subp
    with pytest.raises(QEMUMachineError):
        vm.get_qmp_event()
    assert vm.exitcode() is None and vm.get_log() is None
    vm.shutdown()  # not launched: nothing to do


def test_logging_on_the_qemu_loggers(qemu: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="qemu"):
        with QEMUMachine(qemu, args=["-machine", "none"]) as vm:
            vm.launch()
            vm.cmd("query-status")
    names = {r.name for r in caplog.records}
    assert "qemu.machine.machine" in names
    assert "qemu.qmp.qmp_client" in names
    text = caplog.text
    assert "VM launch command" in text and "query-status" in text


def test_bad_input_to_the_drop_in(qemu: str) -> None:
    with pytest.raises(TypeError):
        QEMUMachine(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        QEMUMachine(qemu, args="-machine none")
    vm = QEMUMachine(qemu, args=["-machine", "none"])
    with pytest.raises(OSError):
        vm.add_fd(987654, 0, "x")
    with pytest.raises(TypeError):
        vm.add_fd("3", 0, "x")  # type: ignore[arg-type]
    vm.args.append(42)  # type: ignore[arg-type]
    with pytest.raises(VMLaunchFailure) as info:
        vm.launch()
    assert isinstance(info.value.__cause__, TypeError)
    assert not vm.is_running()


def test_popen_has_pid_and_returncode(qemu: str) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"])
    vm.launch()
    popen = vm._popen
    assert popen is not None and popen.pid == vm.get_pid()
    assert popen.returncode is None and popen.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        popen.wait(timeout=0.1)
    popen.terminate()
    assert popen.wait(timeout=10) in (0, -signal.SIGTERM)
    vm.wait()
    assert popen.returncode == vm.exitcode()


def test_garbage_collected_running_drop_in_leaves_no_process(qemu: str) -> None:
    import gc

    from conftest import pid_alive

    vm = QEMUMachine(qemu, args=["-machine", "none"])
    vm.launch()
    pid = vm.get_pid()
    assert pid is not None and pid_alive(pid)
    del vm
    gc.collect()
    assert not pid_alive(pid)


def test_temp_dir_made_between_runs_lives_into_the_next(qemu: str, tmp_path: Path) -> None:
    vm = QEMUMachine(qemu, args=["-machine", "none"], base_temp_dir=str(tmp_path))
    vm.launch()
    vm.shutdown()
    d = vm.temp_dir
    (Path(d) / "disk.img").write_bytes(b"")
    vm.launch()
    assert (Path(d) / "disk.img").exists()
    vm.shutdown()
    assert not os.path.exists(d)


def test_console_taken_back_between_runs(qemu: str, guest_image: Path) -> None:
    vm = QEMUMachine(qemu, args=qm.guest.qemu_args(str(guest_image)))
    vm.set_console()
    vm.launch()
    vm.kill()
    vm._console_set = False  # as a subclass might
    vm.launch()
    try:
        assert "chardev:console" not in vm._qemu_full_args
    finally:
        vm.kill()


def test_a_harness_that_exits_without_shutdown_leaves_no_qemu(qemu: str) -> None:
    """The interpreter exits (even by os._exit, no cleanup at all) with QEMU running: QEMU goes
    with it (the seed leaves it running, holding its image locks)."""
    import subprocess
    import sys

    from conftest import pid_alive

    script = (
        "import os, sys\n"
        "from qemu.machine import QEMUMachine\n"
        f"vm = QEMUMachine({qemu!r}, args=['-machine', 'none'])\n"
        "vm.launch()\n"
        "print(vm.get_pid(), flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)
