/* fuzz/fuzz_lru.c: ts_lru driven by arbitrary bytes.
 *
 * The input is decoded as a cache configuration (budget, default TTL,
 * whether allocations fail now and then) followed by a sequence of
 * operations: get, get_copy, has, put_copy, put_ref, delete, the batch
 * forms, prune, set_max_bytes, prefix/session/glob invalidation, clear,
 * stats, and clock moves (forward, back, long pauses). Each operation runs
 * on the cache and on the linear-search model of tests/unit/test_lru.c
 * (included here); any difference in results, statistics, byte totals or
 * freed values aborts, and the cache's internal consistency check runs
 * after every operation.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. fuzz/fuzz_lru.c -o build/fuzz_lru
 *   ./build/fuzz_lru fuzz/corpus/lru -max_total_time=60 */
#define LT_NO_MAIN
#include "../tests/unit/test_lru.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lt_drv *d = (lt_drv *)calloc(1, sizeof *d);
    if (!d) return 0;
    d->src.bytes_mode = 1;
    d->src.p = data;
    d->src.n = size;
    d->abort_on_fail = 1;
    d->check_every = 1;
    if (lt_drv_open(d))
        while (!d->src.exhausted && d->ops < 20000) lt_drv_step(d);
    lt_drv_close(d);
    free(d);
    return 0;
}
