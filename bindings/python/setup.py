"""Build hook: compile libqm with cargo and bundle it inside the `qm` package.

The package is pure Python (ctypes) plus one shared library, so the wheel is tagged
`py3-none-<platform>`: any CPython >= 3.9 on that platform can use it.

Where libqm comes from, in order:
  1. `QM_BUNDLE_LIBRARY=/path/to/libqm.so`: that file is bundled as it is;
  2. the qm repository this directory sits in (`../../Cargo.toml`): `cargo build --release
     --lib` (cargo from `$CARGO`, else `PATH`, else `~/.cargo/bin`), and the `libqm.so` it
     reports is bundled.

The fake QEMU (`qm-fake-qemu`, for users' tests) is bundled beside libqm, where
`qm.fake_qemu_path()` finds it: from `QM_BUNDLE_FAKE_QEMU=/path/to/qm-fake-qemu` with (1)
(optional), built by the same cargo command with (2).

The bundled copy is stripped (`strip --strip-unneeded`: 19.9 MB down to about 3 MB): the wheel
carries no debug information. `QM_KEEP_DEBUG=1` bundles the library as built; the checkout's
`target/release/libqm.so` keeps it too (`objcopy --only-keep-debug` makes a separate file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
LIB_NAME = "libqm.so"
FAKE_NAME = "qm-fake-qemu"


def _repo_root() -> Path | None:
    root = HERE.parent.parent
    manifest = root / "Cargo.toml"
    if manifest.is_file() and 'name = "qm"' in manifest.read_text(encoding="utf-8"):
        return root
    return None


def _cargo() -> str:
    explicit = os.environ.get("CARGO")
    if explicit:
        return explicit
    found = shutil.which("cargo")
    if found:
        return found
    home = Path.home() / ".cargo" / "bin" / "cargo"
    if home.exists():
        return str(home)
    raise SystemExit(
        "qm-qemu: cargo is needed to build libqm (install Rust, or set CARGO=/path/to/cargo, "
        "or QM_BUNDLE_LIBRARY=/path/to/libqm.so to bundle a library built elsewhere)"
    )


def _build_libqm() -> tuple[Path, Path | None]:
    """libqm.so and the fake QEMU to bundle (None: no fake)."""
    given = os.environ.get("QM_BUNDLE_LIBRARY")
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"qm-qemu: QM_BUNDLE_LIBRARY={given} is not a file")
        fake = os.environ.get("QM_BUNDLE_FAKE_QEMU")
        if fake and not Path(fake).is_file():
            raise SystemExit(f"qm-qemu: QM_BUNDLE_FAKE_QEMU={fake} is not a file")
        return path, Path(fake) if fake else None
    root = _repo_root()
    if root is None:
        raise SystemExit(
            "qm-qemu: not inside the qm repository (no ../../Cargo.toml of package qm), so "
            "libqm cannot be built here: set QM_BUNDLE_LIBRARY=/path/to/libqm.so"
        )
    cmd = [
        _cargo(),
        "build",
        "--release",
        "--lib",
        "--bin",
        FAKE_NAME,
        "--message-format=json-render-diagnostics",
    ]
    print("qm-qemu: building libqm:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"qm-qemu: cargo build failed (exit status {proc.returncode})")
    lib, fake = None, None
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact":
            continue
        if msg["target"]["name"] == "qm":
            for name in msg.get("filenames", []):
                if name.endswith("/" + LIB_NAME):
                    lib = Path(name)
        elif msg["target"]["name"] == FAKE_NAME and msg.get("executable"):
            fake = Path(msg["executable"])
    if lib is None:
        raise SystemExit("qm-qemu: cargo did not report a libqm.so")
    return lib, fake


class BuildPyWithLibqm(build_py):  # type: ignore[misc]
    """build_py that also puts libqm.so (and the fake QEMU) into qm/_lib/."""

    def run(self) -> None:
        super().run()
        lib, fake = _build_libqm()
        dest = Path(self.build_lib) / "qm" / "_lib"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest / LIB_NAME)
        os.chmod(dest / LIB_NAME, 0o755)
        _strip(dest / LIB_NAME)
        if fake is not None:
            shutil.copyfile(fake, dest / FAKE_NAME)
            os.chmod(dest / FAKE_NAME, 0o755)
            _strip(dest / FAKE_NAME)


def _strip(path: Path) -> None:
    """Drops the debug information and local symbols of the bundled copy (not of the
    original), unless QM_KEEP_DEBUG=1."""
    if os.environ.get("QM_KEEP_DEBUG") == "1":
        return
    strip = os.environ.get("STRIP") or shutil.which("strip")
    if strip is None:
        raise SystemExit(
            "qm-qemu: strip (binutils) is needed to bundle a stripped libqm; install binutils, "
            "or set QM_KEEP_DEBUG=1 to bundle the library with its debug information"
        )
    subprocess.run([strip, "--strip-unneeded", str(path)], check=True)


class PlatformWheel(bdist_wheel):  # type: ignore[misc]
    """The wheel holds a native library (so: a platform tag) but no extension module (so: any
    Python 3, no ABI tag)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildPyWithLibqm, "bdist_wheel": PlatformWheel})
