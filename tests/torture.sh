#!/usr/bin/env bash
# tests/torture.sh - the long reliability campaign (issue 11; DESIGN.md sections 4 and 7).
#
#   tests/torture.sh [long|valgrind|fuzz [SECONDS]|all]     (default: long)
#
#   long      test_crash, test_ioerr, test_oom, test_hostile under ASan+UBSan with
#             TS_TEST_LONG=1: three crash workloads at every I/O point in both crash
#             modes plus 10,000 random points; EIO once / ENOSPC onwards / EIO onwards
#             at every I/O op of two workloads; every allocation of the OOM workload,
#             one-shot and persistent. Prints each program's "*-stats:" line.
#   valgrind  the four programs built without sanitizers and run under memcheck with
#             TS_TEST_SMALL=1 (a few points each; the whole unit suite's valgrind pass
#             is build.sh's business).
#   fuzz      fuzz_store_ops for SECONDS (default 1800) on a scratch corpus seeded from
#             fuzz/corpus/store_ops, then minimises it back into fuzz/corpus/store_ops
#             (-set_cover_merge=1 -use_counters=0: the fewest inputs covering every edge;
#             plain -merge=1 keeps ~20x more files, too many for build.sh's smoke run).
#   all       long, valgrind, then fuzz.
#
# Runs niced (the machine is shared). Uses the header in the repo root, or
# TS_HEADER_DIR if set (a directory holding taskstore.h). Exit status: non-zero if
# any program failed.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=$ROOT/build/torture
HDR=${TS_HEADER_DIR:-$ROOT}
mkdir -p "$B"
SAN="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$ROOT/fuzz/ubsan.supp}
PROGS="test_crash test_ioerr test_oom test_hostile"
FAILED=0

build() { # build NAME FLAGS...
    local name=$1; shift
    nice -n 10 clang -std=c99 "$@" -I"$HDR" -I. "tests/unit/$name.c" -o "$B/$name" -lm
}

run_long() {
    local p tmp t0 t1
    for p in $PROGS; do
        echo "== $p (TS_TEST_LONG=1)"
        build "$p" $SAN || { echo "build of $p failed"; FAILED=1; continue; }
        tmp=$(mktemp -d "$B/tmp.XXXXXX")
        t0=$(date +%s)
        TS_TEST_LONG=1 TS_TEST_TMP=$tmp nice -n 10 "$B/$p" > "$B/$p.long.log" 2>&1 || FAILED=1
        t1=$(date +%s)
        rm -rf "$tmp"
        grep -E 'stats:|crash-workload|^FAIL|passed, [0-9]+ failed' "$B/$p.long.log"
        echo "   ($((t1 - t0)) s; full log: $B/$p.long.log)"
    done
}

run_valgrind() {
    local p tmp
    command -v valgrind >/dev/null || { echo "valgrind not installed"; FAILED=1; return; }
    for p in $PROGS; do
        echo "== $p under valgrind (TS_TEST_SMALL=1)"
        nice -n 10 gcc -std=c99 -g -O1 -I"$HDR" -I. "tests/unit/$p.c" -o "$B/$p.vg" -lm || { FAILED=1; continue; }
        tmp=$(mktemp -d "$B/tmp.XXXXXX")
        if TS_TEST_SMALL=1 TS_TEST_TMP=$tmp nice -n 10 valgrind --error-exitcode=99 --leak-check=full \
               --errors-for-leak-kinds=definite,indirect -q "$B/$p.vg" > "$B/$p.vg.log" 2>&1; then
            tail -1 "$B/$p.vg.log"
        else
            FAILED=1; tail -30 "$B/$p.vg.log"
        fi
        rm -rf "$tmp"
    done
}

run_fuzz() {
    local secs=${1:-1800} work=$B/fuzz-store_ops
    echo "== fuzz_store_ops for ${secs}s"
    mkdir -p "$B/fuzz" "$work" fuzz/corpus/store_ops
    nice -n 10 clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fsanitize-recover=shift \
        -DTASKSTORE_STB_ZLIB -DTASKSTORE_WEBP -I"$HDR" -I. fuzz/fuzz_store_ops.c -o "$B/fuzz/fuzz_store_ops" \
        -lwebp -lm || { FAILED=1; return; }
    (cd "$B/fuzz" && nice -n 15 ./fuzz_store_ops -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
        -max_len=512 -print_final_stats=1 "$work" "$ROOT/fuzz/corpus/store_ops" > fuzz.log 2>&1) || FAILED=1
    grep -E 'stat::number_of_executed_units|Done|ERROR|broken invariant' "$B/fuzz/fuzz.log" | head
    ls "$B"/fuzz/crash-* "$B"/fuzz/leak-* "$B"/fuzz/timeout-* 2>/dev/null && FAILED=1
    # minimise: the merged corpus replaces the committed one
    local min=$B/fuzz-min
    rm -rf "$min"; mkdir -p "$min"
    (cd "$B/fuzz" && nice -n 10 ./fuzz_store_ops -set_cover_merge=1 -use_counters=0 -max_len=512 -timeout=20 "$min" \
        "$ROOT/fuzz/corpus/store_ops" "$work" > merge.log 2>&1) || FAILED=1
    if [ "$(ls "$min" | wc -l)" -gt 0 ]; then
        rm -f fuzz/corpus/store_ops/*
        cp "$min"/* fuzz/corpus/store_ops/
        echo "   corpus minimised: $(ls fuzz/corpus/store_ops | wc -l) files"
    fi
}

case "${1:-long}" in
    long) run_long ;;
    valgrind) run_valgrind ;;
    fuzz) run_fuzz "${2:-1800}" ;;
    all) run_long; run_valgrind; run_fuzz "${2:-1800}" ;;
    *) echo "usage: tests/torture.sh [long|valgrind|fuzz [SECONDS]|all]" >&2; exit 2 ;;
esac
[ "$FAILED" = 0 ] && echo "torture: all passed" || echo "torture: FAILURES (see above)"
[ "$FAILED" = 0 ]
