#!/usr/bin/env python3
"""Writes seed 004 (QEMU's machine.py, as a listing with line numbers glued to each line) as a
Python package `seed004` under DIR, for the benchmark's comparison. Run at benchmark time only:
the seed's code is never committed to this repository.

    extract_seed.py SEED_FILE DIR
"""

import sys
from pathlib import Path


def strip_numbers(text: str) -> str:
    lines = text.splitlines()
    if lines and lines[0].startswith("xref:"):
        lines = lines[1:]
    code = []
    for n, line in enumerate(lines, start=1):
        prefix = str(n)
        if not line.startswith(prefix):
            raise SystemExit(
                f"extract_seed: line {n} does not start with its number: {line!r}"
            )
        code.append(line[len(prefix) :])
    return "\n".join(code) + "\n"


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: extract_seed.py SEED_FILE DIR")
    seed, out = Path(sys.argv[1]), Path(sys.argv[2]) / "seed004"
    out.mkdir(parents=True, exist_ok=True)
    (out / "__init__.py").write_text('"""Seed 004, extracted for the benchmark."""\n')
    (out / "machine.py").write_text(strip_numbers(seed.read_text(encoding="utf-8")))
    # machine.py imports `console_socket` (only used with a console, which the benchmark
    # does not set): a placeholder module is enough.
    (out / "console_socket.py").write_text(
        '"""Placeholder: the benchmark sets no console."""\n\nConsoleSocket = None\n'
    )


if __name__ == "__main__":
    main()
