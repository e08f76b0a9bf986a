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
# `test` runs its jobs two at a time (JOBS=n to change); build/log/ keeps
# every program's build and run log, and times.txt each job's wall and CPU time.
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
# Every public function stays extern here, so each check compiles (and warns
# about) the whole implementation.
COMPILE_CHECKS="gcc_c99 clang_c99 gxx_cxx11 clangxx_cxx11 gcc_c89ish no_stdio no_errstr
    ndebug features features_cxx static_two_tus decl_then_impl strict_late_explained
    typo_define_detected"

compile_check() { # compile_check NAME
    local d=$B/compile impl=tests/compile/impl.c
    mkdir -p "$d"
    case $1 in
    gcc_c99)       gcc     -std=c99   $WARN -I. -c $impl -o $d/gcc.o ;;
    clang_c99)     clang   -std=c99   $WARN -I. -c $impl -o $d/clang.o ;;
    gxx_cxx11)     g++     -std=c++11 $WARN -I. -x c++ -c $impl -o $d/gxx.o ;;
    clangxx_cxx11) clang++ -std=c++11 $WARN -I. -x c++ -c $impl -o $d/clangxx.o ;;
    gcc_c89ish)    gcc     -std=c99 $WARN -Wdeclaration-after-statement -Wstrict-prototypes -Wmissing-prototypes -Wno-error=declaration-after-statement -I. -c $impl -o $d/c89.o ;;
    no_stdio)      gcc     -std=c99   $WARN -DTASKSTORE_NO_STDIO -I. -c $impl -o $d/nostdio.o ;;
    no_errstr)     clang   -std=c99   $WARN -DTASKSTORE_NO_ERROR_STRINGS -I. -c $impl -o $d/noerr.o ;;
    ndebug)        gcc     -std=c99   $WARN -DNDEBUG -O2 -I. -c $impl -o $d/ndebug.o ;;
    features)      gcc     -std=c99   $WARN $FEATURES -I. -c $impl -o $d/features.o ;;
    features_cxx)  g++     -std=c++11 $WARN $FEATURES -I. -x c++ -c $impl -o $d/features_cxx.o ;;
    static_two_tus)
        gcc -std=c99 $WARN -I. -c tests/compile/static_a.c -o $d/sa.o &&
        gcc -std=c99 $WARN -I. -c tests/compile/static_b.c -o $d/sb.o &&
        gcc $d/sa.o $d/sb.o -o $d/static && $d/static ;;
    decl_then_impl)
        gcc -std=c99 $WARN -I. tests/compile/twice.c -o $d/twice && $d/twice ;;
    strict_late_explained)
        ! gcc -std=c99 -I. -c tests/compile/strict_late.c -o $d/late.o 2>$d/late.err &&
        grep -q _POSIX_C_SOURCE $d/late.err ;;
    typo_define_detected)
        ! gcc -std=c99 -I. -c tests/compile/typo.c -o $d/typo.o 2>/dev/null ;;
    *) echo "no compile check $1"; return 1 ;;
    esac
}

# ---- the test programs -------------------------------------------------------
# Test and fuzz programs are built with TASKSTORE_STATIC: the library's
# functions become static, so the compiler drops the ones a program never
# calls before it instruments and optimises. That cuts the sanitizer builds to
# a fraction; warnings are the compile checks' business, which keep
# everything extern.
TEST_DEFS="-DTASKSTORE_STATIC"

# unit_test NAME: builds tests/unit/NAME.c with ASan+UBSan and runs it; its
# "N passed, N failed" line counts into the suite's.
unit_test() {
    local name=$1 tmp out rc line counts p q
    mkdir -p "$B/unit"
    if ! clang -std=c99 $SAN $TEST_DEFS -I. "tests/unit/$name.c" -o "$B/unit/$name" -lwebp -lm \
            >"$B/log/$name.build.log" 2>&1; then
        bad "$name (build)"; sed -n 1,30p "$B/log/$name.build.log"; return
    fi
    tmp=$(mktemp -d "$B/tmp.XXXXXX")
    out=$(TS_TEST_TMP=$tmp "$B/unit/$name" 2>&1); rc=$?
    rm -rf "$tmp"
    echo "$out" > "$B/log/$name.log"
    line=$(echo "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
    if [ -z "$line" ]; then
        bad "$name (no result line, exit $rc)"; echo "$out" | tail -30; return
    fi
    # "N passed, M failed" alone: a regex with a greedy prefix once ate all
    # but the last digit of N
    counts=$(echo "$line" | grep -oE '[0-9]+ passed, [0-9]+ failed' | tail -1)
    p=${counts%% passed*}; q=${counts#*, }; q=${q%% failed}
    PASS=$((PASS + p)); FAIL=$((FAIL + q))
    if [ "$rc" != 0 ] && [ "$q" = 0 ]; then bad "$name (exit $rc)"; fi
    [ "$q" != 0 ] && { FAILED_NAMES+=("$name"); echo "$out" | grep -E '^(FAIL|  )' | head -40; }
    echo "  $line"
}

# valgrind_test NAME: the same program without sanitizers under memcheck,
# run with TS_TEST_SMALL=1: the randomized and exhaustive loops shrink to a few
# percent, since memcheck runs ~40x slower than native. Built at -O1, which
# the valgrind manual finds works fairly well with memcheck (-O2 can report
# uninitialised values that are not there): it halves the memcheck time of
# -O0 for half a second more of gcc. Each program is one result.
valgrind_test() {
    local name=$1 tmp rc
    mkdir -p "$B/vg"
    if ! gcc -std=c99 -g -O1 $TEST_DEFS -I. "tests/unit/$name.c" -o "$B/vg/$name" -lwebp -lm \
            >"$B/log/$name.vg.build.log" 2>&1; then
        bad "valgrind_$name (build)"; sed -n 1,20p "$B/log/$name.vg.build.log"; return
    fi
    tmp=$(mktemp -d "$B/tmp.XXXXXX")
    TS_TEST_SMALL=1 TS_TEST_TMP=$tmp valgrind -q --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect "$B/vg/$name" >"$B/log/$name.vg.log" 2>&1; rc=$?
    rm -rf "$tmp"
    if [ "$rc" = 0 ]; then
        ok; echo "  valgrind $(tail -1 "$B/log/$name.vg.log")"
    else
        bad "valgrind_$name"; grep -E '^(FAIL|  |==)' "$B/log/$name.vg.log" | head -30
    fi
}

# fuzz_build NAME FLAGS: builds fuzz/NAME.c with libFuzzer and the sanitizers
fuzz_build() {
    mkdir -p "$B/fuzz"
    clang -std=c99 $2 $FUZZ_SAN $TEST_DEFS -I. $FEATURES "fuzz/$1.c" -o "$B/fuzz/$1" $FEATURE_LIBS
}

# fuzz_smoke NAME [SECS]: builds a fuzz target and runs it for a few seconds
# over its committed corpus. Built at -O0: a few seconds of fuzzing need no
# optimiser, and -O1 with sanitizers costs far more compile than it saves.
fuzz_smoke() {
    local name=$1 secs=${2:-3} surface=${1#fuzz_} dict="" seeds="" work
    if ! fuzz_build "$name" -O0 >"$B/log/$name.build.log" 2>&1; then
        bad "$name (build)"; sed -n 1,20p "$B/log/$name.build.log"; return
    fi
    [ -f "fuzz/$surface.dict" ] && dict="-dict=fuzz/$surface.dict"
    [ -d "fuzz/corpus/$surface" ] && seeds="fuzz/corpus/$surface"
    work=$(mktemp -d "$B/fz.XXXXXX")
    # shellcheck disable=SC2086
    if "$B/fuzz/$name" $dict -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
          -print_final_stats=0 "$work" $seeds >"$B/log/$name.log" 2>&1; then
        ok
    else
        bad "$name"; tail -30 "$B/log/$name.log"
    fi
    rm -rf "$work"
}

# ---- running the suite two jobs at a time -----------------------------------
# The suite is a list of jobs ("KIND NAME": one compile check, one program's
# build and run...). They run $JOBS at a time, in the order given: the long
# ones first, the short compile checks last to fill the gaps. Each job writes
# what it prints and its counts under build/res/; the report then prints them
# in a fixed order, whatever order they finished in.
cpu_seconds() { # cpu_seconds FILE: adds up the "1m2.345s" times that `times` wrote
    awk '{ for (i = 1; i <= NF; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } }
         END { printf "%.1f", s }' "$1"
}

run_job() { # run_job KIND NAME: in its own process (build.sh _job KIND NAME)
    local kind=$1 name=$2 r=$B/res/$1.$2 t0=${EPOCHREALTIME/./} ds
    case $kind in
        compile)  step "compile_$name" compile_check "$name" ;;
        unit)     unit_test "$name" ;;
        valgrind) valgrind_test "$name" ;;
        examples) examples_build_test ;;
        fuzz)     fuzz_smoke "$name" "${TS_FUZZ_SMOKE_SECS:-3}" ;;
        *)        bad "unknown job $kind $name" ;;
    esac > "$r.out" 2>&1
    printf '%s\n' "$PASS $FAIL" "${FAILED_NAMES[@]}" > "$r.count"
    ds=$(( (${EPOCHREALTIME/./} - t0) / 100000 ))   # tenths of a second
    times > "$r.cpu"   # user and system time of the job and of its children
    echo "$kind $name $((ds / 10)).$((ds % 10)) s, cpu $(cpu_seconds "$r.cpu") s" >> "$B/log/times.txt"
}

# run_jobs JOB...: runs the jobs, then adds their results into PASS, FAIL and
# FAILED_NAMES, printing each kind's under its heading.
run_jobs() {
    local job kind name r heading="" p q n
    rm -rf "$B/res"; mkdir -p "$B/res"; : > "$B/log/times.txt"
    printf '%s\n' "$@" | xargs -P "$JOBS" -L 1 "$ROOT/build.sh" _job
    for kind in compile unit valgrind examples fuzz; do
        for job in "$@"; do
            [ "${job%% *}" = "$kind" ] || continue
            name=${job#* }; r=$B/res/$kind.$name
            if [ "$heading" != "$kind" ]; then heading=$kind; echo "== ${HEADINGS[$kind]}"; fi
            if [ ! -f "$r.count" ]; then bad "$kind $name (no result)"; continue; fi
            cat "$r.out"
            { read -r p q; PASS=$((PASS + p)); FAIL=$((FAIL + q))
              while read -r n; do [ -n "$n" ] && FAILED_NAMES+=("$n"); done; } < "$r.count"
        done
    done
}
declare -A HEADINGS=([compile]="compile checks" [unit]="unit tests" [valgrind]=valgrind
                     [examples]=examples [fuzz]="fuzz smoke")

# The whole suite's jobs, longest first.
suite_jobs() {
    local f c
    echo "examples all"
    for f in tests/unit/test_*.c; do echo "valgrind $(basename "$f" .c)"; done
    for f in tests/unit/test_*.c; do echo "unit $(basename "$f" .c)"; done
    for f in fuzz/fuzz_*.c; do echo "fuzz $(basename "$f" .c)"; done
    for c in $COMPILE_CHECKS; do echo "compile $c"; done
}

run_fuzz() {
    local secs=${1:-60} f name surface
    mkdir -p "$B/fuzz"
    for f in fuzz/fuzz_*.c; do
        name=$(basename "$f" .c); surface=${name#fuzz_}
        fuzz_build "$name" "-g -O1" || exit 1
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
        mapfile -t jobs < <(suite_jobs)
        run_jobs "${jobs[@]}"
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
        mapfile -t jobs < <(suite_jobs | grep '^valgrind ')
        run_jobs "${jobs[@]}"
        echo "$PASS passed, $FAIL failed"
        [ "$FAIL" = 0 ] ;;
    fuzz)
        ensure_deps; run_fuzz "${2:-60}" ;;
    _job)   # one job of the suite, run by run_jobs
        run_job "$2" "$3" ;;
    demo|build|"")
        ensure_deps
        mkdir -p "$B/log"
        build_programs "-O2" "$B" || exit 1
        "$B/demo" "$B/demo-store"
        ;;
    *)
        echo "usage: ./build.sh [test|bench|fuzz [SECONDS]|torture|check]" >&2; exit 2 ;;
esac
