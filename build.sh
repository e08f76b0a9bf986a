#!/usr/bin/env bash
# build.sh - builds, tests, benchmarks and fuzzes taskstore.h.
#
#   ./build.sh              build everything into build/ and run the demo
#   ./build.sh test         the whole test suite (ends with "N passed, N failed")
#   ./build.sh bench        every benchmark, one summary table
#   ./build.sh fuzz [SECS]  run every fuzz target for SECS seconds (default 60)
#   ./build.sh torture      the long crash / I/O-error / out-of-memory campaign
#   ./build.sh check        only the valgrind (memcheck) pass of the unit tests
#
# Installs the Debian packages it needs when run as root; otherwise it names
# them and stops.
set -u
cd "$(dirname "$0")"
ROOT=$(pwd)
B=$ROOT/build
mkdir -p "$B"

JOBS=${JOBS:-2}
WARN="-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror"
SAN="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
SAN0="-O0 -fsanitize=address,undefined -fno-sanitize-recover=undefined"   # quick to build
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$ROOT/fuzz/ubsan.supp}
# Fuzz builds: shifts recoverable so that fuzz/ubsan.supp can silence the one
# known report in the system stb_image.h; halt_on_error=1 stops on any other.
FUZZ_SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fsanitize-recover=shift"

# ---- dependencies ----------------------------------------------------------
need_pkgs() {
    local missing=()
    command -v gcc >/dev/null     || missing+=(gcc)
    command -v g++ >/dev/null     || missing+=(g++)
    command -v clang >/dev/null   || missing+=(clang)
    command -v clang++ >/dev/null || missing+=(clang)
    [ -f /usr/include/stb/stb_image.h ] || missing+=(libstb-dev)
    [ -f /usr/include/webp/encode.h ]   || missing+=(libwebp-dev)
    [ -f /usr/include/sqlite3.h ]       || missing+=(libsqlite3-dev)
    [ -f /usr/include/openssl/evp.h ]   || missing+=(libssl-dev)
    command -v cwebp >/dev/null   || missing+=(webp)
    command -v valgrind >/dev/null || missing+=(valgrind)
    if command -v clang >/dev/null; then
        local rt; rt=$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)
        [ -f "$rt" ] || missing+=(libclang-rt-14-dev)
    fi
    printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' '
}

ensure_deps() {
    local missing; missing=$(need_pkgs)
    [ -z "${missing// /}" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "build.sh: installing $missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null 2>&1
        # shellcheck disable=SC2086
        apt-get install -y -qq $missing >/dev/null 2>&1 || {
            echo "build.sh: apt-get install $missing failed" >&2; exit 1; }
        missing=$(need_pkgs)
        [ -z "${missing// /}" ] && return 0
    fi
    echo "build.sh: missing packages: $missing" >&2
    echo "build.sh: install them with: sudo apt-get install -y $missing" >&2
    exit 1
}

# ---- helpers ---------------------------------------------------------------
PASS=0
FAIL=0
FAILED_NAMES=()
ok()   { PASS=$((PASS + 1)); }
bad()  { FAIL=$((FAIL + 1)); FAILED_NAMES+=("$1"); echo "FAIL $1"; }

# step NAME CMD...: runs a command quietly, counts it as one test
step() {
    local name=$1; shift
    if "$@" >"$B/log/$name.log" 2>&1; then ok; else bad "$name"; sed -n 1,30p "$B/log/$name.log"; fi
}

# The example/tool programs: built with warnings as errors, linked with the
# optional codecs when their headers are there.
FEATURES="-DTASKSTORE_STB_ZLIB -DTASKSTORE_WEBP"
FEATURE_LIBS="-lwebp -lm"

build_programs() {
    local cflags=$1 out=$2 f name
    mkdir -p "$out"
    for f in examples/*.c; do
        [ -f "$f" ] || continue
        name=$(basename "$f" .c)
        gcc -std=c99 $cflags $WARN -I. $FEATURES "$f" -o "$out/$name" $FEATURE_LIBS || return 1
    done
}

# ---- compile checks: the header in every supported configuration -----------
compile_checks() {
    local d=$B/compile
    mkdir -p "$d"
    local impl=tests/compile/impl.c
    step compile_gcc_c99      gcc     -std=c99   $WARN -I. -c $impl -o $d/gcc.o
    step compile_clang_c99    clang   -std=c99   $WARN -I. -c $impl -o $d/clang.o
    step compile_gxx_cxx11    g++     -std=c++11 $WARN -I. -x c++ -c $impl -o $d/gxx.o
    step compile_clangxx_cxx11 clang++ -std=c++11 $WARN -I. -x c++ -c $impl -o $d/clangxx.o
    step compile_gcc_c89ish   gcc     -std=c99 $WARN -Wdeclaration-after-statement -Wstrict-prototypes -Wmissing-prototypes -Wno-error=declaration-after-statement -I. -c $impl -o $d/c89.o
    step compile_no_stdio     gcc     -std=c99   $WARN -DTASKSTORE_NO_STDIO -I. -c $impl -o $d/nostdio.o
    step compile_no_errstr    clang   -std=c99   $WARN -DTASKSTORE_NO_ERROR_STRINGS -I. -c $impl -o $d/noerr.o
    step compile_ndebug       gcc     -std=c99   $WARN -DNDEBUG -O2 -I. -c $impl -o $d/ndebug.o
    step compile_features     gcc     -std=c99   $WARN $FEATURES -I. -c $impl -o $d/features.o
    step compile_features_cxx g++     -std=c++11 $WARN $FEATURES -I. -x c++ -c $impl -o $d/features_cxx.o
    step compile_static_two_tus sh -c "gcc -std=c99 $WARN -I. -c tests/compile/static_a.c -o $d/sa.o && gcc -std=c99 $WARN -I. -c tests/compile/static_b.c -o $d/sb.o && gcc $d/sa.o $d/sb.o -o $d/static && $d/static"
    step compile_decl_then_impl sh -c "gcc -std=c99 $WARN -I. tests/compile/twice.c -o $d/twice && $d/twice"
    step compile_strict_late_explained sh -c "! gcc -std=c99 -I. -c tests/compile/strict_late.c -o $d/late.o 2>$d/late.err && grep -q _POSIX_C_SOURCE $d/late.err"
    step compile_typo_define_detected sh -c "! gcc -std=c99 -I. -c tests/compile/typo.c -o $d/typo.o 2>/dev/null"
}

# ---- unit tests ------------------------------------------------------------
# Builds each test program (two at a time: the machines have 2 cores).
build_unit_tests() {
    mkdir -p "$B/unit"
    # shellcheck disable=SC2016
    ls tests/unit/test_*.c | JOBS_SAN="$SAN" B="$B" xargs -P "$JOBS" -I{} sh -c '
        name=$(basename {} .c)
        clang -std=c99 $JOBS_SAN -I. {} -o "$B/unit/$name" -lwebp -lm >"$B/log/$name.build.log" 2>&1 \
            || rm -f "$B/unit/$name"'
}

unit_tests() {
    local f name tmp out line p q
    build_unit_tests
    for f in tests/unit/test_*.c; do
        [ -f "$f" ] || continue
        name=$(basename "$f" .c)
        if [ ! -x "$B/unit/$name" ]; then
            bad "$name (build)"; sed -n 1,30p "$B/log/$name.build.log"; continue
        fi
        tmp=$(mktemp -d "$B/tmp.XXXXXX")
        out=$(TS_TEST_TMP=$tmp "$B/unit/$name" 2>&1); local rc=$?
        rm -rf "$tmp"
        echo "$out" > "$B/log/$name.log"
        line=$(echo "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
        if [ -z "$line" ]; then
            bad "$name (no result line, exit $rc)"; echo "$out" | tail -30; continue
        fi
        p=$(echo "$line" | sed -E 's/.*[^0-9]?([0-9]+) passed, ([0-9]+) failed.*/\1/')
        q=$(echo "$line" | sed -E 's/.*[^0-9]?([0-9]+) passed, ([0-9]+) failed.*/\2/')
        PASS=$((PASS + p)); FAIL=$((FAIL + q))
        if [ "$rc" != 0 ] && [ "$q" = 0 ]; then bad "$name (exit $rc)"; fi
        [ "$q" != 0 ] && { FAILED_NAMES+=("$name"); echo "$out" | grep -E '^(FAIL|  )' | head -40; }
        echo "  $line"
    done
}

# ---- the unit tests again under valgrind (memcheck) -------------------------
# Built without sanitizers at -O0 (a quarter of the -O1 compile time; the runs
# are short) and run with TS_TEST_SMALL=1: the randomized and exhaustive loops
# shrink to a few percent, since memcheck runs ~40x slower than native. Two
# programs at a time; each program is one result.
valgrind_tests() {
    mkdir -p "$B/vg"
    # shellcheck disable=SC2016
    ls tests/unit/test_*.c | B="$B" xargs -P "$JOBS" -I{} sh -c '
        name=$(basename {} .c)
        gcc -std=c99 -g -O0 -I. {} -o "$B/vg/$name" -lwebp -lm >"$B/log/$name.vg.build.log" 2>&1 \
            || rm -f "$B/vg/$name"'
    # shellcheck disable=SC2016
    ls tests/unit/test_*.c | B="$B" xargs -P "$JOBS" -I{} sh -c '
        name=$(basename {} .c)
        [ -x "$B/vg/$name" ] || { echo "$name build"; exit 0; }
        tmp=$(mktemp -d "$B/tmp.XXXXXX")
        TS_TEST_SMALL=1 TS_TEST_TMP=$tmp valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect "$B/vg/$name" >"$B/log/$name.vg.log" 2>&1 \
            || echo "$name valgrind"
        rm -rf "$tmp"' > "$B/log/valgrind.failed"
    local f name
    for f in tests/unit/test_*.c; do
        name=$(basename "$f" .c)
        if grep -q "^$name build" "$B/log/valgrind.failed"; then
            bad "valgrind_$name (build)"; sed -n 1,20p "$B/log/$name.vg.build.log"
        elif grep -q "^$name valgrind" "$B/log/valgrind.failed"; then
            bad "valgrind_$name"; grep -E '^(FAIL|  |==)' "$B/log/$name.vg.log" | head -30
        else
            ok; echo "  valgrind $(tail -1 "$B/log/$name.vg.log")"
        fi
    done
}

# ---- fuzz targets: build and smoke-run over the committed corpus -------------
fuzz_build() {
    local f=$1 name; name=$(basename "$f" .c)
    clang -std=c99 -g -O1 $FUZZ_SAN -I. $FEATURES "$f" -o "$B/fuzz/$name" $FEATURE_LIBS
}

# The smoke run builds at -O0: a few seconds of fuzzing a target need no
# optimiser, and -O1 with sanitizers costs ~20 s of compile per target.
fuzz_smoke() {
    local f name surface secs=${1:-3}
    mkdir -p "$B/fuzz"
    # shellcheck disable=SC2016
    ls fuzz/fuzz_*.c | B="$B" FEATURES="$FEATURES" FEATURE_LIBS="$FEATURE_LIBS" FUZZ_SAN="$FUZZ_SAN" xargs -P "$JOBS" -I{} sh -c '
        name=$(basename {} .c)
        clang -std=c99 -O0 $FUZZ_SAN -I. $FEATURES {} -o "$B/fuzz/$name" $FEATURE_LIBS >"$B/log/$name.build.log" 2>&1 \
            || rm -f "$B/fuzz/$name"'
    for f in fuzz/fuzz_*.c; do
        [ -f "$f" ] || continue
        name=$(basename "$f" .c); surface=${name#fuzz_}
        if [ ! -x "$B/fuzz/$name" ]; then
            bad "$name (build)"; sed -n 1,20p "$B/log/$name.build.log"; continue
        fi
        local dict=""; [ -f "fuzz/$surface.dict" ] && dict="-dict=fuzz/$surface.dict"
        local work; work=$(mktemp -d "$B/fz.XXXXXX")
        local seeds=""; [ -d "fuzz/corpus/$surface" ] && seeds="fuzz/corpus/$surface"
        # shellcheck disable=SC2086
        if "$B/fuzz/$name" $dict -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
              -print_final_stats=0 "$work" $seeds >"$B/log/$name.log" 2>&1; then
            ok
        else
            bad "$name"; tail -30 "$B/log/$name.log"
        fi
        rm -rf "$work"
    done
}

run_fuzz() {
    local secs=${1:-60} f name surface
    mkdir -p "$B/fuzz"
    for f in fuzz/fuzz_*.c; do
        name=$(basename "$f" .c); surface=${name#fuzz_}
        fuzz_build "$f" || exit 1
        mkdir -p "$B/fuzz-corpus/$surface"
        local dict=""; [ -f "fuzz/$surface.dict" ] && dict="-dict=fuzz/$surface.dict"
        echo "== $name for ${secs}s"
        # shellcheck disable=SC2086
        "$B/fuzz/$name" $dict -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            "$B/fuzz-corpus/$surface" "fuzz/corpus/$surface" 2>&1 | grep -E 'Done|ERROR|SUMMARY|stat::' || true
    done
}

# ---- examples and the demo ---------------------------------------------------
examples_build_test() {
    step examples_build build_programs "$SAN0" "$B/san"
    local t
    for t in tests/cli/*.sh; do
        [ -f "$t" ] || continue
        step "cli_$(basename "$t" .sh)" env TSK="$B/san/tsk" DEMO="$B/san/demo" B="$B" bash "$t"
    done
}

run_bench() {
    local f name out=$B/bench.txt
    mkdir -p "$B/bench"
    # real application screenshots for the codec bench (outside the repo)
    if [ ! -d /usr/share/help/C/gnumeric/figures ] && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq --no-install-recommends gnumeric-doc >/dev/null 2>&1 || true
    fi
    : > "$out"
    for f in bench/bench_*.c; do
        [ -f "$f" ] || continue
        name=$(basename "$f" .c)
        echo "== $name"
        gcc -std=c99 -O2 -march=native -I. $FEATURES "$f" -o "$B/bench/$name" \
            -lcrypto -lsqlite3 $FEATURE_LIBS || { echo "build of $name failed"; continue; }
        (cd "$B/bench" && "./$name") | tee -a "$out"
    done
    echo
    echo "==== summary (median of several runs; ratio = ours / peer, higher is better unless noted)"
    grep '^BENCH ' "$out" | awk '{ printf "%-36s %12s %-8s", $2, $3, $4; for (i = 5; i <= NF; i++) printf " %s", $i; printf "\n" }'
}

cmd=${1:-demo}
case "$cmd" in
    test)
        ensure_deps
        mkdir -p "$B/log"
        echo "== compile checks"; compile_checks
        echo "== unit tests";     unit_tests
        echo "== valgrind";       valgrind_tests
        echo "== examples";       examples_build_test
        echo "== fuzz smoke";     fuzz_smoke "${TS_FUZZ_SMOKE_SECS:-3}"
        [ ${#FAILED_NAMES[@]} -gt 0 ] && echo "failed: ${FAILED_NAMES[*]}"
        echo "$PASS passed, $FAIL failed"
        [ "$FAIL" = 0 ]
        ;;
    bench)
        ensure_deps; run_bench ;;
    torture)
        ensure_deps; mkdir -p "$B/log"
        bash tests/torture.sh long ;;
    check)
        ensure_deps; mkdir -p "$B/log"
        echo "== valgrind"; valgrind_tests
        echo "$PASS passed, $FAIL failed"
        [ "$FAIL" = 0 ] ;;
    fuzz)
        ensure_deps; run_fuzz "${2:-60}" ;;
    demo|build|"")
        ensure_deps
        mkdir -p "$B/log"
        build_programs "-O2" "$B" || exit 1
        "$B/demo" "$B/demo-store"
        ;;
    *)
        echo "usage: ./build.sh [test|bench|fuzz [SECONDS]|torture|check]" >&2; exit 2 ;;
esac
