#!/usr/bin/env bash
# The C side of `make test` (`make test-c`): builds and runs the C tests against a real QEMU.
#
#   tests/c/run.sh [STEP...]     steps: header asan valgrind tsan install (default: all, in order)
#
#   header    include/qm.h compiles alone as C99 (-Wall -Wextra -Werror -pedantic) and as C++
#   asan      every tests/c/test_*.c, built with -Wall -Wextra -Werror and AddressSanitizer +
#             UBSan, statically linked with libqm.a (LeakSanitizer on)
#   valgrind  the same tests, linked with libqm.so, once under valgrind --leak-check=full
#   tsan      the threaded tests (test_threads.c; the hammer of test_hostile.c) built with
#             ThreadSanitizer, statically linked with libqm.a, which is not instrumented: reports
#             that involve Rust code are suppressed (tests/c/tsan.supp says why), and
#             tests/c/tsan_canary.c checks that a race in C is still reported
#   install   `make install` into a temporary prefix (stripped libraries, versioned soname),
#             then bindings/c/examples/*.c built with pkg-config, shared and --static (which
#             must take libqm.a although libqm.so is beside it), and run; `make uninstall`
#
# Every test binary ends with `<file>: N passed, M failed`; this script adds them up and ends
# with `c-tests: N passed, M failed`. Environment: CC, CXX, CARGO, MAKE, QM_QEMU (the QEMU
# binary), QM_C_TESTS (space-separated test binaries to run, e.g. "test_api test_qmp").
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CC=${CC:-cc}
CXX=${CXX:-c++}
CARGO=${CARGO:-cargo}
MAKE=${MAKE:-make}
B=$ROOT/tests/c/build
# What rustc links a static Rust library with: the one list (make check-native-libs checks it).
NATIVE_LIBS=$(grep -v '^#' bindings/c/native-static-libs)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
CFLAGS_COMMON=(-std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -I"$ROOT/include" -I"$ROOT/tests/c")

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(header asan valgrind tsan install)
tests=()
for src in tests/c/test_*.c; do
    name=$(basename "$src" .c)
    if [ -n "${QM_C_TESTS:-}" ] && [[ " $QM_C_TESTS " != *" $name "* ]]; then continue; fi
    tests+=("$name")
done

passed=0
failed=0
skipped=0
started=$(date +%s)
note() { printf '\n=== %s\n' "$*"; }

# Adds up the closing line of one test binary's output (in $1); a binary that crashed or
# printed no closing line counts as one failure.
tally() {
    local out=$1 rc=$2 line p f
    line=$(grep -E '^[^ ]+: [0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$out" | tail -n 1 || true)
    if [ -z "$line" ]; then
        echo "!!! no result line (exit status $rc)"
        failed=$((failed + 1))
        return
    fi
    p=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1/' <<<"$line")
    f=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")
    if [[ $line =~ ([0-9]+)\ skipped$ ]]; then skipped=$((skipped + BASH_REMATCH[1])); fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "!!! exit status $rc although every test passed (sanitizer or valgrind report above)"
        failed=$((failed + 1))
    fi
}

# Runs one test binary (with a runner prefix such as valgrind) and tallies it.
run_one() {
    local label=$1
    shift
    local out=$B/$label.out rc=0
    "$@" >"$out" 2>&1 || rc=$?
    cat "$out"
    tally "$out" "$rc"
}

build_lib() {
    note "cargo build (libqm.a, libqm.so; regenerates include/qm.h)"
    # The fake QEMU too, for test_fake (static builds cannot find it beside libqm.so).
    $CARGO build --lib --bin qm-fake-qemu
    export QM_FAKE_QEMU="${QM_FAKE_QEMU:-$ROOT/target/debug/qm-fake-qemu}"
    mkdir -p "$B/lib"
    # The soname is libqm.so.0: give the test binaries that name to load.
    ln -sf "$ROOT/target/debug/libqm.so" "$B/lib/libqm.so.0"
    ln -sf "$ROOT/target/debug/libqm.so" "$B/lib/libqm.so"
}

step_header() {
    note "header: include/qm.h compiles alone (C99 pedantic, C++11)"
    mkdir -p "$B"
    printf '#include "qm.h"\n' >"$B/header_c.c"
    printf '#include "qm.h"\n#include <cstdio>\nint main() { std::printf("%%s\\n", qm_version()); return 0; }\n' >"$B/header_cxx.cpp"
    $CC -std=c99 -Wall -Wextra -Werror -pedantic -I"$ROOT/include" -c "$B/header_c.c" -o "$B/header_c.o"
    $CXX -std=c++11 -Wall -Wextra -Werror -pedantic -I"$ROOT/include" "$B/header_cxx.cpp" \
        -L"$B/lib" -lqm -Wl,-rpath,"$B/lib" -o "$B/header_cxx"
    "$B/header_cxx" >/dev/null
    echo "ok: C99 -pedantic, C++11"
    passed=$((passed + 2))
}

step_asan() {
    note "C tests under AddressSanitizer + UBSan (static libqm.a)"
    mkdir -p "$B/asan"
    local flags=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
    $CC "${CFLAGS_COMMON[@]}" "${flags[@]}" -c tests/c/check.c -o "$B/asan/check.o"
    for t in "${tests[@]}"; do
        $CC "${CFLAGS_COMMON[@]}" "${flags[@]}" "tests/c/$t.c" "$B/asan/check.o" \
            "$ROOT/target/debug/libqm.a" $NATIVE_LIBS -o "$B/asan/$t"
    done
    for t in "${tests[@]}"; do
        echo "--- $t (asan)"
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1" \
            LSAN_OPTIONS="suppressions=$ROOT/tests/c/lsan.supp:print_suppressions=0" \
            UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
            run_one "asan-$t" "$B/asan/$t"
    done
}

step_valgrind() {
    note "C tests under valgrind (libqm.so)"
    if ! command -v valgrind >/dev/null 2>&1; then
        echo "!!! valgrind is not installed (make test-c installs it as root: apt-get install valgrind)"
        failed=$((failed + 1))
        return
    fi
    mkdir -p "$B/plain"
    $CC "${CFLAGS_COMMON[@]}" -c tests/c/check.c -o "$B/plain/check.o"
    # --fair-sched=yes: valgrind runs one thread at a time, and its default lock lets a busy
    # thread starve one coming back from a syscall (test_hostile's hammer: rounds of minutes).
    # --child-silent-after-fork=yes: a child whose exec fails (test_hostile's huge arguments and
    # names) exits with a copy of the parent's heap and only one thread's stack as roots, and
    # its leak report (everything "definitely lost") would only be noise; its exit status does
    # not count either way.
    local vg=(valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect
        --show-leak-kinds=definite,indirect --error-exitcode=99 --trace-children=no
        --fair-sched=yes --child-silent-after-fork=yes
        --suppressions="$ROOT/tests/c/valgrind.supp")
    # valgrind 3.19 does not know pidfd_open: qm's core then falls back to its waitid watcher
    # thread, so this step also exercises that path.
    for t in "${tests[@]}"; do
        $CC "${CFLAGS_COMMON[@]}" "tests/c/$t.c" "$B/plain/check.o" -L"$B/lib" -lqm \
            -lpthread -Wl,-rpath,"$B/lib" -o "$B/plain/$t"
    done
    for t in "${tests[@]}"; do
        echo "--- $t (valgrind)"
        run_one "valgrind-$t" "${vg[@]}" "$B/plain/$t"
    done
}

# The threaded tests, and the tests of theirs that run threads ("" for all of a file's tests).
TSAN_TESTS=("test_threads:" "test_hostile:hammer_one_handle" "test_log:callback_gets_records_from_every_thread" "test_qga:")

step_tsan() {
    note "threaded C tests under ThreadSanitizer (static libqm.a; Rust frames suppressed)"
    mkdir -p "$B/tsan"
    if ! echo 'int main(void){return 0;}' | $CC -x c -fsanitize=thread -o /dev/null - 2>/dev/null; then
        echo "!!! $CC cannot link with -fsanitize=thread (gcc: apt-get install libtsan2)"
        failed=$((failed + 1))
        return
    fi
    local flags=(-fsanitize=thread -fno-omit-frame-pointer) entry t names out rc selected=()
    local opts="suppressions=$ROOT/tests/c/tsan.supp:print_suppressions=0:second_deadlock_stack=1"
    for entry in "${TSAN_TESTS[@]}"; do
        [[ " ${tests[*]} " == *" ${entry%%:*} "* ]] && selected+=("$entry")
    done
    if [ ${#selected[@]} -eq 0 ]; then
        echo "(no threaded test selected)"
        return
    fi
    $CC "${CFLAGS_COMMON[@]}" "${flags[@]}" -c tests/c/check.c -o "$B/tsan/check.o"
    for entry in "${selected[@]}" "tsan_canary:"; do
        t=${entry%%:*}
        $CC "${CFLAGS_COMMON[@]}" "${flags[@]}" "tests/c/$t.c" "$B/tsan/check.o" \
            "$ROOT/target/debug/libqm.a" $NATIVE_LIBS -o "$B/tsan/$t"
    done
    for entry in "${selected[@]}"; do
        t=${entry%%:*}
        names=${entry#*:}
        echo "--- $t${names:+ ($names)} (tsan)"
        # shellcheck disable=SC2086
        TSAN_OPTIONS="$opts" run_one "tsan-$t" "$B/tsan/$t" $names
    done
    # The suppressions must not hide a race of the C side: the canary has one, next to qm calls.
    echo "--- tsan_canary (a deliberate race in C: TSan must report it)"
    out=$B/tsan-canary.out
    rc=0
    TSAN_OPTIONS="$opts" "$B/tsan/tsan_canary" >"$out" 2>&1 || rc=$?
    if [ "$rc" -eq 66 ] && grep -q 'WARNING: ThreadSanitizer: data race' "$out" &&
        grep -q "Location is global 'racy_counter'" "$out"; then
        echo "tsan_canary: the race in C was reported (exit status 66), as it must be"
        passed=$((passed + 1))
    else
        cat "$out"
        echo "!!! tsan_canary: TSan did not report the race in C (exit status $rc):" \
            "tests/c/tsan.supp hides too much"
        failed=$((failed + 1))
    fi
}

step_install() {
    note "make install into a temporary prefix; examples built with pkg-config (shared, --static)"
    local prefix=$B/prefix
    rm -rf "$prefix" "$B"/readme-*
    $MAKE --no-print-directory install PREFIX="$prefix" >/dev/null
    ls -l "$prefix/lib" "$prefix/include" "$prefix/lib/pkgconfig"
    [ "$(readlink "$prefix/lib/libqm.so")" = libqm.so.0 ]
    [ "$(readlink "$prefix/lib/libqm.so.0")" = "libqm.so.$VERSION" ]
    grep -q <<<"$(readelf -d "$prefix/lib/libqm.so.$VERSION")" 'SONAME.*\[libqm\.so\.0\]'
    local ok=0 bad=0 ex name lib
    # Installed libraries are stripped: no debug sections (the build's have them).
    for lib in "$prefix/lib/libqm.so.$VERSION" "$prefix/lib/libqm.a"; do
        if grep -q <<<"$(readelf -S -W "$lib")" '\.debug_info'; then
            echo "!!! $lib was installed with debug information"
            bad=$((bad + 1))
        fi
    done
    for ex in bindings/c/examples/*.c; do
        name=$(basename "$ex" .c)
        # shellcheck disable=SC2046
        $CC -std=c99 -Wall -Wextra -Werror -pedantic "$ex" -o "$B/$name" \
            $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs qm)
        grep -q <<<"$(readelf -d "$B/$name")" 'NEEDED.*\[libqm\.so\.0\]'
        # --static against the same prefix, libqm.so beside libqm.a: libqm.a must be linked.
        # shellcheck disable=SC2046
        $CC -std=c99 -Wall -Wextra -Werror -pedantic "$ex" -o "$B/$name-static" \
            $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --static --cflags --libs qm)
        if grep -q <<<"$(readelf -d "$B/$name-static")" 'libqm'; then
            echo "!!! $name-static links libqm dynamically"
            bad=$((bad + 1))
            continue
        fi
        echo "--- $name (installed shared library)"
        if LD_LIBRARY_PATH="$prefix/lib" "$B/$name"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
        echo "--- $name-static"
        if "$B/$name-static" >/dev/null; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    done
    # The README's C examples compile as written.
    local md n=0
    for md in README.md; do
        [ -f "$md" ] || continue
        awk -v dir="$B" -v base="$(basename "$md" .md)" '
            /^```c$/ { n++; f = dir "/readme-" base "-" n ".c"; printf "" > f; inside = 1; next }
            /^```/ { inside = 0 }
            inside { print >> f }' "$md"
    done
    for ex in "$B"/readme-*.c; do
        [ -e "$ex" ] || continue
        grep -q 'int main' "$ex" || continue
        n=$((n + 1))
        # shellcheck disable=SC2046
        if $CC -std=c99 -Wall -Wextra -Werror -pedantic "$ex" -o "${ex%.c}" \
            $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs qm); then
            echo "--- $(basename "$ex"): compiles"
            ok=$((ok + 1))
        else
            bad=$((bad + 1))
        fi
    done
    # make uninstall removes every file make install wrote.
    $MAKE --no-print-directory uninstall PREFIX="$prefix" >/dev/null
    if [ -n "$(find "$prefix" -type f -o -type l)" ]; then
        echo "!!! make uninstall left files behind:"
        find "$prefix" -type f -o -type l
        bad=$((bad + 1))
    else
        echo "--- make uninstall: no file left"
        ok=$((ok + 1))
    fi
    echo "install: $ok passed, $bad failed"
    passed=$((passed + ok))
    failed=$((failed + bad))
}

mkdir -p "$B"
build_lib
for s in "${steps[@]}"; do
    case $s in
    header | asan | valgrind | tsan | install) "step_$s" ;;
    *)
        echo "unknown step $s (header asan valgrind tsan install)" >&2
        exit 2
        ;;
    esac
done
echo
echo "C tests took $(($(date +%s) - started)) s"
if [ "$skipped" -gt 0 ]; then
    echo "c-tests: $passed passed, $failed failed, $skipped skipped"
else
    echo "c-tests: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
