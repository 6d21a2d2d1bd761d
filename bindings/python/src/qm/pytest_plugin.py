"""qm's pytest plugin: QEMU machines as fixtures, with what to look at when a test fails.

Loaded automatically once the package is installed (entry point ``pytest11``: ``qm``); without
installing, load it with ``-p qm.pytest_plugin``.

Fixtures:

- ``qemu_machine``: a factory. ``qemu_machine(*args, launch=True, timeout=DEFAULT, **config)``
  makes a `qm.Machine` running the QEMU binary with the extra arguments `args` and `config`
  (the keywords of `qm.Machine`), launches it (unless ``launch=False``) and returns it. Every
  machine it made is ended at teardown, whatever happened (a graceful shutdown, then kill).
- ``linux_guest``: a launched machine running the Linux test guest (``guest/linux``) with a
  console and the guest agent answering: a clone of a session-wide `qm.Template` (booted once,
  saved under ``--qm-template-dir``, and found there by later runs and other xdist workers), or,
  where the template cannot be made, booted for the test until ``qm-guest: ready``.
- ``qemu_binary``: the QEMU binary's path; skips the test, with the reason, when it is missing.
- ``qm_test_dir``: the test's directory for QEMU logs, QMP transcripts and console logs.

Options: ``--qemu-binary`` (else ``$QM_QEMU``, else ``qemu-system-x86_64``),
``--qm-keep-failed``: keep the directories of failing tests (their paths go in the report), and
``--qm-template-dir`` (else ``$QM_TEMPLATE_DIR``, else ``$XDG_CACHE_HOME/qm/templates``, else
``~/.cache/qm/templates``): where the Linux guest's saved state is kept.

Markers (each skips with the reason rather than fails):

- ``@pytest.mark.qemu``: the test needs QEMU.
- ``@pytest.mark.qemu_commands("blockdev-add", ...)``: QEMU must have these QMP commands
  (``query-commands`` of a ``-machine none`` QEMU, asked once per process and binary).
- ``@pytest.mark.qemu_supports("blockdev-add/arg-type/+file/aio/^io_uring", ...)``: QEMU's QMP
  schema must have these query paths (`qm.Schema.query`; the schema of a ``-machine none`` QEMU,
  loaded once per process and binary). A malformed path is an error of the test, not a skip.

When a test that used these fixtures fails, the report has, per machine, QEMU's log, the tail
of the QMP transcript and the tail of the console. Each test gets its own directory and every
machine a socketpair monitor by default, so tests run in parallel (``pytest -n``) with no shared
state and no fixed socket paths.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import pytest

import qm

#: The QEMU binary when neither ``--qemu-binary`` nor ``$QM_QEMU`` names one.
DEFAULT_QEMU = "qemu-system-x86_64"
#: How much of each log goes in a failure report (characters, from the end).
TAIL = 4000
#: How long ``linux_guest`` waits for the guest to boot (TCG on a loaded machine is slow).
BOOT_TIMEOUT = 300.0
#: What the Linux test guest prints once it is up, with its agent started.
GUEST_READY = "qm-guest: ready"

#: Overrides how ``qemu_supports`` decides: ``SCHEMA_SUPPORTS(binary, path)`` is True when the
#: QEMU at `binary` supports `path`. None (the default): qm's schema query decides.
SCHEMA_SUPPORTS: Optional[Callable[[str, str], bool]] = None

MachineFactory = Callable[..., qm.Machine]


@dataclass
class _TestState:
    """What the plugin keeps for one test that used its fixtures."""

    dir: Path
    machines: List[qm.Machine] = field(default_factory=list)
    failed: bool = False


_STATE = pytest.StashKey[_TestState]()
_COMMANDS = pytest.StashKey[Dict[str, Set[str]]]()
_SCHEMAS = pytest.StashKey[Dict[str, qm.Schema]]()
_GUEST_ARGS = pytest.StashKey[Tuple[Optional[List[str]], str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qm", "qm: QEMU machines in tests")
    group.addoption(
        "--qemu-binary",
        default=None,
        help=f"the QEMU binary of qm's fixtures (default: $QM_QEMU, else {DEFAULT_QEMU})",
    )
    group.addoption(
        "--qm-keep-failed",
        action="store_true",
        default=False,
        help="keep the directories (QEMU logs, QMP transcripts, console logs) of failing tests",
    )
    group.addoption(
        "--qm-template-dir",
        default=None,
        help="where linux_guest's saved guest state is kept (default: $QM_TEMPLATE_DIR, else "
        "$XDG_CACHE_HOME/qm/templates, else ~/.cache/qm/templates)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "qemu: the test needs QEMU (skipped, with the reason, when it is missing)",
        "qemu_commands(*names): skipped unless QEMU has these QMP commands",
        "qemu_supports(*paths): skipped unless QEMU's schema supports these query paths",
    ):
        config.addinivalue_line("markers", line)
    config.stash[_COMMANDS] = {}
    config.stash[_SCHEMAS] = {}


# ---- the QEMU binary and what it can do --------------------------------------------------------


def _binary_name(config: pytest.Config) -> str:
    given = config.getoption("--qemu-binary")
    return str(given or os.environ.get("QM_QEMU") or DEFAULT_QEMU)


def _binary(config: pytest.Config) -> str:
    """The QEMU binary's path, or a skip saying what is missing."""
    name = _binary_name(config)
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"QEMU binary {name!r} not found (set --qemu-binary or QM_QEMU)")
    return path


def _commands(config: pytest.Config, binary: str) -> Set[str]:
    """The QMP commands of `binary`, asked once per process."""
    cache = config.stash[_COMMANDS]
    if binary not in cache:
        with qm.Machine(binary, machine="none") as vm:
            vm.launch()
            cache[binary] = {c["name"] for c in vm.cmd("query-commands")}
    return cache[binary]


def _supports(config: pytest.Config, binary: str, path: str) -> bool:
    """True when the schema of `binary` (loaded once per process) has `path`; a malformed path
    fails the test, naming the component."""
    if SCHEMA_SUPPORTS is not None:
        return SCHEMA_SUPPORTS(binary, path)
    cache = config.stash[_SCHEMAS]
    if binary not in cache:
        with qm.Machine(binary, machine="none") as vm:
            vm.launch()
            cache[binary] = vm.schema()
    try:
        return cache[binary].query(path)
    except qm.InvalidArgumentError as exc:
        pytest.fail(f"qemu_supports: {exc}", pytrace=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    ours = ("qemu", "qemu_commands", "qemu_supports")
    if not any(m.name in ours for m in item.iter_markers()):
        return
    binary = _binary(item.config)
    for mark in item.iter_markers("qemu_commands"):
        have = _commands(item.config, binary)
        missing = [name for name in mark.args if name not in have]
        if missing:
            pytest.skip(f"{binary} has no QMP command {', '.join(missing)}")
    for mark in item.iter_markers("qemu_supports"):
        missing = [path for path in mark.args if not _supports(item.config, binary, path)]
        if missing:
            pytest.skip(f"{binary} does not support {', '.join(missing)} (its QMP schema)")


# ---- fixtures ----------------------------------------------------------------------------------


def _state(request: pytest.FixtureRequest) -> _TestState:
    node: pytest.Item = request.node
    if _STATE not in node.stash:
        factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        base = factory.getbasetemp()
        prefix = "".join(c if c.isalnum() else "_" for c in node.name)[:30] + "-"
        node.stash[_STATE] = _TestState(Path(tempfile.mkdtemp(prefix=prefix, dir=base)))
    return node.stash[_STATE]


@pytest.fixture(scope="session")
def qemu_binary(pytestconfig: pytest.Config) -> str:
    """The QEMU binary's path (``--qemu-binary``, ``$QM_QEMU`` or ``qemu-system-x86_64``);
    skips the test, with the reason, when it is missing."""
    return _binary(pytestconfig)


@pytest.fixture
def qm_test_dir(request: pytest.FixtureRequest) -> Path:
    """This test's directory for QEMU logs, QMP transcripts and console logs: removed after
    the test, kept for a failing one with ``--qm-keep-failed``."""
    return _state(request).dir


@pytest.fixture
def qemu_machine(request: pytest.FixtureRequest, qemu_binary: str) -> Iterator[MachineFactory]:
    """A factory of launched machines, ended at teardown whatever happened (see the module's
    documentation)."""
    state = _state(request)

    def make(
        *args: str, launch: bool = True, timeout: Any = qm.DEFAULT, **config: Any
    ) -> qm.Machine:
        name = config.pop("name", f"vm{len(state.machines)}")
        config.setdefault("log_dir", str(state.dir))
        config.setdefault("base_temp_dir", str(state.dir))
        config.setdefault("qmp_transcript", str(state.dir / f"{name}.qmp.jsonl"))
        if config.get("console"):
            config.setdefault("console_log", str(state.dir / f"{name}.console.log"))
        vm = qm.Machine(config.pop("binary", qemu_binary), args=args, name=name, **config)
        state.machines.append(vm)
        if launch:
            vm.launch(timeout)
        return vm

    yield make
    for vm in reversed(state.machines):
        try:
            vm.shutdown(10)
        except qm.QMError:
            pass  # shutdown killed it; the test's result says what went wrong
        finally:
            vm.close()


def _guest_args(config: pytest.Config) -> List[str]:
    """The QEMU arguments of the Linux test guest, found once per process; skips when there
    is none."""
    if _GUEST_ARGS not in config.stash:
        config.stash[_GUEST_ARGS] = _find_guest(config)
    args, why = config.stash[_GUEST_ARGS]
    if args is None:
        pytest.skip(why)
    return args


def _find_guest(config: pytest.Config) -> Tuple[Optional[List[str]], str]:
    """`guest/linux/build --qemu-args` ($QM_LINUX_GUEST_BUILD, or found above the rootdir or
    the working directory); it honours $QM_LINUX_KERNEL and $QM_LINUX_INITRD."""
    import subprocess

    build = os.environ.get("QM_LINUX_GUEST_BUILD")
    if not build:
        for start in (Path(config.rootpath), Path.cwd()):
            for d in (start, *start.parents):
                if (d / "guest" / "linux" / "build").is_file():
                    build = str(d / "guest" / "linux" / "build")
                    break
            if build:
                break
    if not build:
        return None, (
            "no Linux test guest: set QM_LINUX_GUEST_BUILD to qm's guest/linux/build, or run "
            "inside the qm repository"
        )
    done = subprocess.run(
        [build, "--qemu-args"], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        return None, f"{build} --qemu-args failed ({done.returncode}): {done.stderr[-500:]}"
    return done.stdout.strip().split("\n"), ""


def _template_dir(config: pytest.Config) -> Path:
    given = config.getoption("--qm-template-dir") or os.environ.get("QM_TEMPLATE_DIR")
    if given:
        return Path(given)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "qm" / "templates"


@pytest.fixture(scope="session")
def _qm_linux_template(
    pytestconfig: pytest.Config, qemu_binary: str
) -> Iterator[Tuple[Optional[qm.Template], str]]:
    """The Linux guest's template, prepared (booted and saved, unless a saved state is found)
    once per session; `(None, why)` when it cannot be made, and linux_guest boots instead."""
    args = _guest_args(pytestconfig)
    folder = _template_dir(pytestconfig)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        template = qm.Template(qemu_binary, str(folder), args=args, console=True, guest_agent=True)
    except (OSError, qm.QMError) as exc:
        yield None, f"no template in {folder}: {exc}"
        return
    with template:
        try:
            template.prepare("agent", timeout=BOOT_TIMEOUT)
        except qm.QMError as exc:
            yield None, f"the template could not be prepared: {exc}"
            return
        yield template, ""


@pytest.fixture
def linux_guest(
    request: pytest.FixtureRequest,
    qemu_machine: MachineFactory,
    _qm_linux_template: Tuple[Optional[qm.Template], str],
) -> qm.Machine:
    """A machine running the Linux test guest, with a console and the guest agent answering
    (skips, with the reason, when the guest cannot be built here): a clone of the session's
    template, else booted for the test."""
    template, why = _qm_linux_template
    if template is not None:
        vm = template.clone(timeout=BOOT_TIMEOUT)
        _state(request).machines.append(vm)
        return vm
    import warnings

    warnings.warn(f"linux_guest boots for each test: {why}", stacklevel=1)
    vm = qemu_machine(*_guest_args(request.config), name="linux", console=True, guest_agent=True)
    vm.console_wait(GUEST_READY, failure="Kernel panic", timeout=BOOT_TIMEOUT)
    return vm


# ---- reports -----------------------------------------------------------------------------------


def _tail(text: Optional[str], empty: str) -> str:
    if not text:
        return empty
    return text if len(text) <= TAIL else "...\n" + text[-TAIL:]


def _sections(vm: qm.Machine, state: _TestState) -> List[Tuple[str, str]]:
    name = vm.name
    out = []
    try:
        log = vm.get_log_so_far()
    except qm.QMError as exc:
        log = f"(unreadable: {exc})"
    out.append((f"qm {name}: QEMU log", _tail(log, "(QEMU wrote nothing)")))
    transcript = state.dir / f"{name}.qmp.jsonl"
    if transcript.exists():
        text = transcript.read_text(encoding="utf-8", errors="replace")
        out.append((f"qm {name}: QMP transcript (tail)", _tail(text, "(no QMP messages)")))
    try:
        console = vm.console_transcript(TAIL)
    except qm.QMError:
        console = None  # no console
    if console is not None:
        out.append((f"qm {name}: console (tail)", _tail(console, "(nothing on the console)")))
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    state = item.stash.get(_STATE, None)
    if state is None:
        return
    keep = bool(item.config.getoption("--qm-keep-failed"))
    if report.failed:
        if not state.failed:
            for vm in state.machines:
                for title, text in _sections(vm, state):
                    report.sections.append((title, text))
        state.failed = True
        if keep:
            report.sections.append(("qm: kept", f"this test's files are in {state.dir}"))
    if report.when == "teardown":
        if not (state.failed and keep):
            shutil.rmtree(state.dir, ignore_errors=True)


__all__: Sequence[str] = (
    "BOOT_TIMEOUT",
    "DEFAULT_QEMU",
    "SCHEMA_SUPPORTS",
    "MachineFactory",
    "linux_guest",
    "qemu_binary",
    "qemu_machine",
    "qm_test_dir",
)
