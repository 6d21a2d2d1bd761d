#!/usr/bin/env bash
# The Go side of `make test` (`make test-go`): checks and tests the Go binding against a real
# QEMU.
#
#   bindings/go/run-tests.sh [STEP...]   steps: lint test gc race (default: all)
#
#   lint       gofmt -l (nothing to reformat) and go vet
#   test       go test ./...
#   gc         go test ./... with GOGC=1 GODEBUG=cgocheck=1 (a collection at every step: a
#              Go pointer kept by C, or a handle freed too early, shows up here)
#   race       go test -race ./...
#
# The package finds qm through pkg-config (link.go); this script puts the in-tree qm.pc that
# `make` writes (target/pkgconfig/qm.pc: the checkout's static libqm.a) first in
# PKG_CONFIG_PATH. A module outside the repository is built against `make install` by
# tests/outside/run (`make test-outside`).
#
# Environment: GO (the go command; default: `go` in PATH, else /usr/local/go/bin/go), CARGO,
# MAKE, QM_QEMU (the QEMU binary the tests run), GO_TEST_FLAGS (extra `go test` flags, e.g.
# "-run TestEvents -v").
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
MAKE=${MAKE:-make}

if [ -z "${GO:-}" ]; then
    if command -v go >/dev/null 2>&1; then
        GO=go
    elif [ -x /usr/local/go/bin/go ]; then
        GO=/usr/local/go/bin/go
    else
        echo "make test-go needs the Go toolchain (Go 1.21 or later, with cgo) and found none:" >&2
        echo "install it from https://go.dev/dl/ (or your distribution), or set GO=/path/to/go." >&2
        exit 1
    fi
fi
if ! command -v "$GO" >/dev/null 2>&1; then
    echo "make test-go: GO=$GO is not a command" >&2
    exit 1
fi
# Never download another toolchain: use this one, or fail.
export GOTOOLCHAIN=local CGO_ENABLED=1
if ! command -v "${CC:-cc}" >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    echo "make test-go: cgo needs a C compiler (cc or gcc)" >&2
    exit 1
fi
# go needs a cache directory; a CI job without HOME gets one under target/.
if [ -z "${HOME:-}" ] && [ -z "${GOCACHE:-}" ]; then
    export GOCACHE=$ROOT/target/go-cache GOPATH=$ROOT/target/go
fi
GOFMT="$("$GO" env GOROOT)/bin/gofmt"
read -r -a EXTRA <<<"${GO_TEST_FLAGS:-}"

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(lint test gc race)
note() { printf '\n=== %s\n' "$*"; }
started=$(date +%s)
timings=()
step_time() { timings+=("$1 $(($(date +%s) - $2))s"); }

note "$("$GO" version); make target/pkgconfig/qm.pc (the in-tree qm: target/release/libqm.a)"
$MAKE --no-print-directory -s target/pkgconfig/qm.pc CARGO="$CARGO"
export PKG_CONFIG_PATH="$ROOT/target/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# The fake QEMU for fake_test.go: the package links libqm.a statically, so the library cannot
# find the binary beside itself; name it.
$CARGO build --release --bin qm-fake-qemu
export QM_FAKE_QEMU="${QM_FAKE_QEMU:-$ROOT/target/release/qm-fake-qemu}"
# Go's build cache hashes neither pkg-config's output nor libqm.a, but it hashes CGO_CFLAGS: a
# key of both (and qm.h) there recompiles and relinks the package when the library changes,
# and keeps these in-tree builds apart from a user's builds of the same package against an
# installed qm (which would otherwise reuse the in-tree link flags from the cache).
key=$({ pkg-config --cflags --libs qm && cat include/qm.h target/release/libqm.a; } | sha256sum | cut -c1-16)
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -DQM_INTREE_KEY=$key"

cd "$ROOT/bindings/go"
for step in "${steps[@]}"; do
    t0=$(date +%s)
    case $step in
    lint)
        note "gofmt -l, go vet"
        unformatted=$("$GOFMT" -l .)
        if [ -n "$unformatted" ]; then
            echo "not gofmt-formatted (run gofmt -w):" >&2
            echo "$unformatted" >&2
            exit 1
        fi
        "$GO" vet ./...
        # link.go refuses a qm.h of another major.minor than Cargo.toml's version.
        IFS=. read -r major minor _ < <(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
        if ! grep -q "QM_VERSION_MAJOR != $major || QM_VERSION_MINOR != $minor\b" link.go; then
            echo "bindings/go/link.go does not check for qm $major.$minor (Cargo.toml's version)" >&2
            exit 1
        fi
        ;;
    test)
        note "go test ./..."
        "$GO" test -count=1 "${EXTRA[@]}" ./...
        ;;
    gc)
        note "go test ./... with GOGC=1 GODEBUG=cgocheck=1"
        # Only the test binary runs with GOGC=1 (not the compiler).
        "$GO" test -count=1 -exec "env GOGC=1 GODEBUG=cgocheck=1" "${EXTRA[@]}" ./...
        ;;
    race)
        note "go test -race ./..."
        "$GO" test -race -count=1 "${EXTRA[@]}" ./...
        ;;
    *)
        echo "unknown step $step (lint test gc race)" >&2
        exit 2
        ;;
    esac
    step_time "$step" "$t0"
done
note "go: every step passed in $(($(date +%s) - started))s (${timings[*]})"
