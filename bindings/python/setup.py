"""Build hook: compile libqm with cargo and bundle it inside the `qm` package.

The package is pure Python (ctypes) plus one shared library, so the wheel is tagged
`py3-none-<platform>`: any CPython >= 3.9 on that platform can use it.

Where libqm comes from, in order:
  1. `QM_BUNDLE_LIBRARY=/path/to/libqm.so`: that file is bundled as it is;
  2. the qm repository this directory sits in (`../../Cargo.toml`): `cargo build --release
     --lib` (cargo from `$CARGO`, else `PATH`, else `~/.cargo/bin`), and the `libqm.so` it
     reports is bundled.

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


def _build_libqm() -> Path:
    given = os.environ.get("QM_BUNDLE_LIBRARY")
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"qm-qemu: QM_BUNDLE_LIBRARY={given} is not a file")
        return path
    root = _repo_root()
    if root is None:
        raise SystemExit(
            "qm-qemu: not inside the qm repository (no ../../Cargo.toml of package qm), so "
            "libqm cannot be built here: set QM_BUNDLE_LIBRARY=/path/to/libqm.so"
        )
    cmd = [_cargo(), "build", "--release", "--lib", "--message-format=json-render-diagnostics"]
    print("qm-qemu: building libqm:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"qm-qemu: cargo build failed (exit status {proc.returncode})")
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "qm":
            for name in msg.get("filenames", []):
                if name.endswith("/" + LIB_NAME):
                    return Path(name)
    raise SystemExit("qm-qemu: cargo did not report a libqm.so")


class BuildPyWithLibqm(build_py):  # type: ignore[misc]
    """build_py that also puts libqm.so into qm/_lib/."""

    def run(self) -> None:
        super().run()
        lib = _build_libqm()
        dest = Path(self.build_lib) / "qm" / "_lib"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest / LIB_NAME)
        os.chmod(dest / LIB_NAME, 0o755)
        _strip(dest / LIB_NAME)


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
