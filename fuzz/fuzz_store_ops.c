/* fuzz_store_ops: differential fuzzing of the store facade (issue 11).

   The input bytes are decoded as a sequence of store operations (the ones
   of tests/unit/torture_model.h: save, re-save, save_meta, append, append a
   screenshot from a small image pool, replace a stream, set/remove a
   document, delete, flush, tick, idle, GC, clean reopen, kill-and-reopen,
   list, search, compress, migrate a planted legacy session) with their
   arguments, on ts_io_mem through ts_io_fault, with power losses
   interleaved: an "arm" byte schedules a crash a few I/O operations ahead
   (drop-unsynced or random tearing, picked by the input); the store is
   then reopened and recovered.

   After every step the store is checked against a simple model of the
   expected sessions (every component of every session, read back through
   the store), the session list, the attachments (bytes and hash) and the
   search results (the store's index against a brute-force evaluation of
   DESIGN.md section 6). After a crash the reopened store must show, per
   component, a state the session passed through since the last completed
   flush. Any mismatch aborts with the reason on stderr.

   Byte 0 picks the configuration (cache and queue sizes, back-pressure).
   Inputs are capped at 512 bytes (about 150 operations). */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../tests/unit/torture_model.h"

#define FZ_MAX_INPUT 512

static void fz_die(tm_env *e, const char *where)
{
    fprintf(stderr, "fuzz_store_ops: broken invariant at %s (step %llu):\n  %s\n", where,
            (unsigned long long)e->ops_run, e->why);
    abort();
}

/* After a power loss: the dead process's handle goes, the disk keeps what
   it would, the store reopens and every session must be in an allowed
   state (then adopted as the new truth). */
static void fz_recover(tm_env *e, int mode, uint64_t seed)
{
    int oc;
    e->recoveries++;
    ts_io_fault_set(e->fault, NULL);
    oc = tm_kill_reopen(e, mode, seed);
    if (oc < 0) fz_die(e, "recovery");
    if (oc == 0 && ts_io_fault_crashed(e->fault)) fz_die(e, "recovery (crashed again)");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_env e;
    ts_store_config cfg = tm_default_cfg();
    unsigned c0;
    if (size < 2 || size > FZ_MAX_INPUT) return 0;
    c0 = data[0];
    cfg.cache_max_bytes = (c0 & 1) ? 2048 : (uint64_t)1 << 20;
    cfg.queue_capacity = (c0 & 2) ? 6 : 256;
    cfg.batch_window_ms = (c0 & 4) ? 1 : 100;
    cfg.index_record_text = (c0 & 16) ? 1 : 0;
    tm_env_init(&e, TM_MODE_FUZZ, &cfg);
    e.fz = data + 1;
    e.fz_n = size - 1;
    e.kill_mode = (c0 & 8) ? TS_CRASH_RANDOM : TS_CRASH_DROP_UNSYNCED;
    e.kill_seed = c0;
    e.rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)size;
    if (tm_open(&e) != 1) fz_die(&e, "open");
    while (!e.fz_end && !e.failed) {
        uint32_t op = tm_rand(&e, TM_NOPS + 3);
        int oc;
        if (e.fz_end) break;
        if (op >= TM_NOPS) {
            /* arm a power loss a few I/O operations ahead */
            ts_fault_plan p;
            memset(&p, 0, sizeof p);
            p.fail_at = ts_io_fault_ops(e.fault) + 1 + tm_rand(&e, 48);
            p.crash = 1;
            ts_io_fault_set(e.fault, &p);
            continue;
        }
        oc = tm_run_op(&e, (int)op);
        if (oc < 0) fz_die(&e, tm_op_names[op]);
        if (!ts_io_fault_crashed(e.fault) && e.s) {
            /* the model after every step: sessions, list, attachments, search */
            if (tm_op_check(&e) < 0) fz_die(&e, "check");
            if (!ts_io_fault_crashed(e.fault) && tm_check_search(&e, 0, "search") < 0) fz_die(&e, "search");
        }
        if (ts_io_fault_crashed(e.fault))
            fz_recover(&e, (tm_rand(&e, 2) ? TS_CRASH_RANDOM : TS_CRASH_DROP_UNSYNCED), e.ops_run * 131u + c0);
    }
    if (e.failed) fz_die(&e, "end");
    /* a clean close, then everything verified from the disk (exact) */
    ts_io_fault_set(e.fault, NULL);
    if (e.s) {
        ts_result r = ts_store_close(e.s);
        e.s = NULL;
        if (r != TS_OK) { tm_fail(&e, "final close: %s", ts_result_str(r)); fz_die(&e, "close"); }
        tm_ack(&e);
    }
    if (tm_verify(&e, 1, "final verify") < 0) fz_die(&e, "final verify");
    tm_env_free(&e);
    return 0;
}
