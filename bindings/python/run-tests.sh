#!/usr/bin/env bash
# `make test-python`: the Python binding's checks, on a fresh machine too.
#
#  1. a venv of its own (target/python-venv) with the test tools from PyPI (pytest, ruff, mypy,
#     qemu.qmp; pinned in requirements-test.txt), and the package installed the way the README
#     says: pip install ./bindings/python (which builds libqm with cargo and bundles it);
#  2. ruff (lint + format) and mypy --strict over the sources and tests;
#  3. pytest against a real QEMU, importing the INSTALLED package (no PYTHONPATH, no QM_LIBRARY),
#     then again as on a machine without qemu.qmp;
#  4. the wheel: `pip wheel`, installed into another venv in an empty directory outside the
#     repository (with the oldest Python >= 3.9 found, else the same one), and a smoke script.
#
# PYTHON (default python3) picks the interpreter; QM_QEMU the QEMU binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
PYTHON=${PYTHON:-python3}
VENV=$root/target/python-venv
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
    echo "test-python: $PYTHON is older than 3.9" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "test-python: $PYTHON has no venv/ensurepip (apt-get install python3-venv)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "test-python: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
echo "test-python: installing the test tools and the package (pip install ./bindings/python)" >&2
"$VENV/bin/pip" install -q -r bindings/python/requirements-test.txt
# Reinstall every time: the library inside the package must be this checkout's.
"$VENV/bin/pip" install -q --force-reinstall --no-deps ./bindings/python

cd bindings/python
echo "test-python: ruff and mypy" >&2
"$VENV/bin/ruff" check src tests setup.py
"$VENV/bin/ruff" format --check src tests setup.py
"$VENV/bin/mypy" src tests

echo "test-python: pytest (the installed package, a real QEMU)" >&2
unset QM_LIBRARY PYTHONPATH
"$VENV/bin/python" - <<'PY'
import qm, pathlib, sys
lib = qm.library_path()
assert "site-packages" in str(lib), f"tests would not use the installed package: {lib}"
print(f"test-python: qm {qm.__version__} with {lib}", file=sys.stderr)
PY
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
echo "test-python: pytest again, as without qemu.qmp" >&2
QM_TEST_WITHOUT_QEMU_QMP=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests

echo "test-python: the wheel, outside the repository" >&2
tmp=$(mktemp -d /tmp/qm-wheel.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/pip" wheel -q --no-deps -w "$tmp/wheels" "$root/bindings/python"
wheel=$(ls "$tmp"/wheels/qm_qemu-*.whl)
echo "test-python: built $(basename "$wheel")" >&2
wheel_python=$PYTHON
# shellcheck disable=SC2086 # the globs are meant to expand
for cand in python3.9 ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.9*/bin/python3 python3.10; do
    if "$cand" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        wheel_python=$cand
        break
    fi
done
"$wheel_python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q "$wheel"
mkdir "$tmp/empty"
cat >"$tmp/empty/smoke.py" <<'PY'
"""Smoke test of an installed wheel, far from the repository."""
import os
import sys

import qm
from qemu.machine import QEMUMachine

qemu = os.environ.get("QM_QEMU", "qemu-system-x86_64")
lib = str(qm.library_path())
assert lib.startswith(sys.prefix), lib
with QEMUMachine(qemu, args=["-machine", "none"]) as vm:
    vm.launch()
    assert vm.cmd("query-status")["running"] is True
assert vm.exitcode() == 0
with qm.Machine(qemu, machine="none") as m:
    m.launch()
    assert m.cmd("query-status")["status"] == "running"
print(f"wheel smoke test passed: Python {sys.version.split()[0]}, {lib}")
PY
(cd "$tmp/empty" && env -u QM_LIBRARY -u PYTHONPATH "$tmp/venv/bin/python" smoke.py)
echo "test-python: all passed" >&2
