#!/usr/bin/env bash
# The Go side of `make test` (`make test-go`): checks and tests the Go binding against a real
# QEMU.
#
#   bindings/go/run-tests.sh [STEP...]   steps: lint test gc race pkgconfig (default: all)
#
#   lint       gofmt -l (nothing to reformat) and go vet
#   test       go test ./...
#   gc         go test ./... with GOGC=1 GODEBUG=cgocheck=1 (a collection at every step: a
#              Go pointer kept by C, or a handle freed too early, shows up here)
#   race       go test -race ./...
#   pkgconfig  `make install` into a temporary prefix, then a module outside the repository
#              that requires this one, built with -tags qm_pkgconfig (pkg-config qm) and run
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
[ ${#steps[@]} -eq 0 ] && steps=(lint test gc race pkgconfig)
note() { printf '\n=== %s\n' "$*"; }
started=$(date +%s)
timings=()
step_time() { timings+=("$1 $(($(date +%s) - $2))s"); }

note "$("$GO" version); cargo build --release --lib (target/release/libqm.a, which the package links)"
$CARGO build --release --lib

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
    pkgconfig)
        note "an outside module, -tags qm_pkgconfig, against make install PREFIX=<tmp>"
        tmp=$(mktemp -d /tmp/qm-go-install.XXXXXX)
        trap 'rm -rf "$tmp"' EXIT
        (cd "$ROOT" && $MAKE --no-print-directory install PREFIX="$tmp/prefix" CARGO="$CARGO" >/dev/null)
        mkdir -p "$tmp/app"
        cat >"$tmp/app/go.mod" <<EOF
module example.com/qmapp

go 1.21

require github.com/qm-project/qm/bindings/go v0.0.0

replace github.com/qm-project/qm/bindings/go => $ROOT/bindings/go
EOF
        cat >"$tmp/app/main.go" <<'EOF'
// A program outside the qm repository: it finds qm through pkg-config.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	qm "github.com/qm-project/qm/bindings/go"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := qm.New("qemu-system-x86_64", qm.WithMachineType("none"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer m.Close()
	if err := m.Launch(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	status, err := m.Cmd(ctx, "query-status", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := m.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("qm %s (pkg-config): query-status %s\n", qm.Version(), status)
}
EOF
        export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
        (
            cd "$tmp/app"
            "$GO" vet -tags qm_pkgconfig ./...
            CGO_LDFLAGS="-Wl,-rpath,$tmp/prefix/lib" "$GO" build -tags qm_pkgconfig -o qmapp .
            if ! ldd ./qmapp | grep -q "$tmp/prefix/lib/libqm.so"; then
                echo "the pkg-config build does not link $tmp/prefix/lib/libqm.so:" >&2
                ldd ./qmapp >&2
                exit 1
            fi
            ./qmapp
        )
        (cd "$ROOT/bindings/go" && "$GO" vet -tags qm_pkgconfig ./...)
        ;;
    *)
        echo "unknown step $step (lint test gc race pkgconfig)" >&2
        exit 2
        ;;
    esac
    step_time "$step" "$t0"
done
note "go: every step passed in $(($(date +%s) - started))s (${timings[*]})"
