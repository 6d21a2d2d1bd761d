"""qm's pytest plugin, run by `pytester` in child pytest processes against a real QEMU: the
report sections of a failing test, the skip when QEMU is missing, the markers,
``--qm-keep-failed``, teardown whatever happened, the Linux guest fixture, and ``-n 4``."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import List

import pytest
from conftest import pid_alive

pytest_plugins = ["pytester"]


def _entry_point_installed() -> bool:
    return any(
        ep.value == "qm.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11")
    )


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a child process, with the plugin (through its entry point once the package
    is installed, as `make test-python` runs it; else with -p)."""
    extra: List[str] = [] if _entry_point_installed() else ["-p", "qm.pytest_plugin"]
    return pytester.runpytest_subprocess(*extra, "-p", "no:cacheprovider", *args, timeout=900)


def test_the_plugin_is_registered_as_an_entry_point() -> None:
    if not _entry_point_installed():
        pytest.skip("the package is not installed (run-tests.sh installs it): no entry points")
    (ep,) = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "qm"]
    assert ep.value == "qm.pytest_plugin"


def test_a_failing_test_shows_qemu_log_qmp_transcript_and_console(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import qm

        def test_fails(qemu_machine, tmp_path):
            image = tmp_path / "guest.img"
            qm.guest.write_image(str(image), "banner-from-the-guest", qm.guest.ECHO)
            vm = qemu_machine(
                *qm.guest.qemu_args(str(image)), "-global", "no-such-driver.prop=1",
                console=True,
            )
            vm.console_wait("banner-from-the-guest", timeout=60)
            vm.cmd("query-status")
            vm.cmd("stop")
            assert False, "deliberately"

        def test_passes(qemu_machine):
            vm = qemu_machine(machine="none")
            assert vm.cmd("query-status")["status"] == "running"
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    # The sections of the failing test only, each with what it should hold.
    assert "qm vm0: QEMU log" in out
    assert "global no-such-driver.prop has invalid class name" in out
    assert "qm vm0: QMP transcript (tail)" in out
    assert re.search(r'"execute":\s*"stop"', out), out
    assert "qm vm0: console (tail)" in out
    assert out.count("banner-from-the-guest") >= 1
    assert out.count("qm vm0: QEMU log") == 1, "a passing test has no sections"
    assert "qm: kept" not in out


def test_machines_end_at_teardown_whatever_happened(pytester: pytest.Pytester) -> None:
    pids = pytester.path / "pids"
    pytester.makepyfile(
        f"""
        import pytest

        def _save(vm):
            with open({str(pids)!r}, "a") as f:
                f.write(f"{{vm.pid}}\\n")

        def test_raises(qemu_machine):
            _save(qemu_machine(machine="none"))
            _save(qemu_machine(machine="none"))
            raise RuntimeError("mid-test")

        def test_stopped_qemu(qemu_machine):
            vm = qemu_machine(machine="none")
            _save(vm)
            vm.cmd("stop")

        def test_not_launched(qemu_machine):
            qemu_machine(machine="none", launch=False)
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=2, failed=1)
    saved = [int(p) for p in pids.read_text().split()]
    assert len(saved) == 3
    assert not [p for p in saved if pid_alive(p)], "every QEMU ends with its test"


def test_missing_qemu_skips_with_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_fixture(qemu_machine):
            qemu_machine(machine="none")

        @pytest.mark.qemu
        def test_marker():
            pass
        """
    )
    missing = "/nonexistent/qemu-system-x86_64"
    result = _run(pytester, "-rs", "--qemu-binary", missing)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        [f"*QEMU binary {missing!r} not found (set --qemu-binary or QM_QEMU)*"]
    )
    # And through the environment.
    monkeypatch.setenv("QM_QEMU", "no-such-qemu-binary")
    result = _run(pytester, "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*QEMU binary 'no-such-qemu-binary' not found*"])


def test_markers_skip_what_qemu_lacks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.qemu_commands("query-status", "blockdev-add")
        def test_has_them(qemu_machine):
            qemu_machine(machine="none").cmd("query-status")

        @pytest.mark.qemu_commands("query-status", "no-such-command")
        def test_lacks_one():
            raise AssertionError("must not run")

        @pytest.mark.qemu_supports("blockdev-add/arg-type/+file/aio/^io_uring", "query-status")
        def test_schema_has_them(qemu_machine):
            qemu_machine(machine="none").cmd("query-status")

        @pytest.mark.qemu_supports(
            "blockdev-add/arg-type/+file/aio/^io_uring",
            "blockdev-add/arg-type/+file/aio/^no-such-aio",
        )
        def test_schema_lacks_one():
            raise AssertionError("must not run")

        @pytest.mark.qemu_supports("blockdev-add/argtype")
        def test_schema_path_malformed():
            raise AssertionError("must not run")
        """
    )
    result = _run(pytester, "-rs")
    result.assert_outcomes(passed=2, skipped=2, errors=1)
    result.stdout.fnmatch_lines_random(
        [
            "*has no QMP command no-such-command*",
            "*does not support blockdev-add/arg-type/+file/aio/^no-such-aio (its QMP schema)*",
            "*qemu_supports:*blockdev-add/argtype*component 2*",
        ]
    )


def test_keep_failed_keeps_only_the_failing_tests_files(pytester: pytest.Pytester) -> None:
    dirs = pytester.path / "dirs"
    pytester.makepyfile(
        f"""
        def _save(path):
            with open({str(dirs)!r}, "a") as f:
                f.write(f"{{path}}\\n")

        def test_fails(qemu_machine, qm_test_dir):
            _save(qm_test_dir)
            qemu_machine(machine="none").cmd("query-status")
            assert False

        def test_passes(qemu_machine, qm_test_dir):
            _save(qm_test_dir)
            qemu_machine(machine="none")
        """
    )
    result = _run(pytester, "--qm-keep-failed")
    result.assert_outcomes(passed=1, failed=1)
    failed_dir, passed_dir = (Path(p) for p in dirs.read_text().split())
    assert f"this test's files are in {failed_dir}" in result.stdout.str()
    assert (failed_dir / "vm0.log").exists()
    assert "query-status" in (failed_dir / "vm0.qmp.jsonl").read_text()
    assert not passed_dir.exists()

    # Without the option, nothing is kept.
    dirs.unlink()
    result = _run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    assert not [p for p in dirs.read_text().split() if Path(p).exists()]


def test_linux_guest_fixture(pytester: pytest.Pytester) -> None:
    templates = pytester.path / "templates"
    pytester.makepyfile(
        """
        def test_guest(linux_guest):
            assert linux_guest.agent.ping() is None
            linux_guest.agent.write_file("/tmp/mine", b"first test's")
            assert linux_guest.console_run("cat /tmp/mine", timeout=120).stdout == b"first test's"

        def test_another_clone(linux_guest):
            # A clone of the saved guest, not the first test's machine: its file is not here.
            assert linux_guest.agent.ping() is None
            assert linux_guest.console_run("test -e /tmp/mine", timeout=120).status == 1
        """
    )
    root = str(Path(__file__).resolve().parents[3])
    args = ("-rsw", "--rootdir", root, "--qm-template-dir", str(templates))
    result = _run(pytester, *args)
    outcomes = result.parseoutcomes()
    if outcomes.get("skipped"):
        pytest.skip(f"the Linux test guest is not available here: {result.stdout.str()[-300:]}")
    result.assert_outcomes(passed=2)
    assert "boots for each test" not in result.stdout.str()
    # The session's template is saved where asked: a later run (or worker) boots nothing.
    saved = {p: p.stat().st_mtime_ns for p in templates.rglob("*") if p.is_file()}
    assert saved, "no saved state under the template directory"
    result = _run(pytester, *args)
    result.assert_outcomes(passed=2)
    # Found, not made again: the same files, unchanged.
    assert saved == {p: p.stat().st_mtime_ns for p in templates.rglob("*") if p.is_file()}


def test_under_xdist_with_4_workers(pytester: pytest.Pytester) -> None:
    if importlib.util.find_spec("xdist") is None:
        pytest.skip("pytest-xdist is not installed (requirements-test.txt has it)")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(8))
        def test_many(qemu_machine, n):
            vms = [qemu_machine(machine="none") for _ in range(2)]
            for vm in vms:
                assert vm.cmd("query-status")["status"] == "running"
        """
    )
    result = _run(pytester, "-n", "4")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*4 workers*"])
