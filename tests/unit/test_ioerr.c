/* I/O error injection (issue 11, DESIGN.md sections 4 and 7): the workload
   of torture_model.h runs on ts_io_fault over ts_io_mem with one file
   operation failing, for every operation of the workload in turn:
     - EIO once (a transient error: the queue's retries may absorb it);
     - ENOSPC from that operation on (a full disk) until the end of the run.
   The run goes on after each failure. Every call must return what the model
   expects or, when an injected fault explains it, TS_E_IO / TS_E_NOSPACE;
   after a failed mutating call the live store must show, per component,
   the old state or the new one. Nothing may leak (the counting allocator
   must be back at zero after every close; LeakSanitizer at exit), and once
   the fault is removed the store must reopen and verify clean (the
   invariants of test_crash, with everything acknowledged before the fault
   present). TS_TEST_LONG=1: a longer workload, and EIO that persists too.
   TS_TEST_SMALL=1: a few points (valgrind). Prints "ioerr-stats: ...". */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"
#include "torture_model.h"

static uint64_t g_runs, g_failed_calls, g_resyncs, g_bad, g_known_busy, g_known_mig;

static int ioerr_run(uint64_t seed, size_t nrandom, uint64_t k, ts_result with, uint64_t count)
{
    tm_env e;
    ts_fault_plan p;
    int bad;
    tm_env_init(&e, TM_MODE_IOERR, NULL);
    e.kill_mode = TS_CRASH_DROP_UNSYNCED;
    memset(&p, 0, sizeof p);
    p.fail_at = k;
    p.fail_count = count;
    p.fail_with = with;
    tm_set_plan(&e, &p);
    tm_workload(&e, seed, nrandom);
    if (!e.failed) tm_verify(&e, 0, "after the fault was removed");
    bad = e.failed;
    g_runs++;
    g_failed_calls += e.injected_calls;
    g_resyncs += e.resyncs;
    g_known_busy += e.known_busy;
    g_known_mig += e.known_mig_corrupt;
    if (bad && g_bad++ < (getenv("TS_TORTURE_VERBOSE") ? 1000 : 6))
        printf("  workload %llu, %s at I/O op %llu%s:\n  %s\n", (unsigned long long)seed,
               with == TS_E_NOSPACE ? "ENOSPC" : "EIO", (unsigned long long)k,
               count > 1 ? " onwards" : " once", e.why);
    tm_env_free(&e);
    return bad;
}

TS_TEST(test_ioerr_every_op)
{
    int lng = tm_is_test_long(), small = tm_is_test_small();
    uint64_t seeds[2] = { 11, 12 }, total, k, stride, bad = 0, points = 0;
    size_t nrandom = lng ? 120 : 25, w, nw = lng ? 2 : 1;
    if (getenv("TS_TORTURE_ONLY")) {
        /* one point, for debugging: TS_TORTURE_ONLY=k[,nospc] TS_TORTURE_TRACE=1 */
        const char *o = getenv("TS_TORTURE_ONLY");
        k = strtoull(o, NULL, 10);
        bad += (uint64_t)ioerr_run(seeds[0], nrandom, k, strstr(o, "nospc") ? TS_E_NOSPACE : TS_E_IO,
                                   strstr(o, "nospc") ? (uint64_t)1 << 40 : 1);
        TS_CHECK_EQ_INT(bad, 0);
        return;
    }
    for (w = 0; w < nw; w++) {
        tm_env e;
        tm_env_init(&e, TM_MODE_CLEAN, NULL);
        tm_workload(&e, seeds[w], nrandom);
        total = ts_io_fault_ops(e.fault);
        if (!e.failed) tm_verify(&e, 1, "clean run");
        TS_CHECK(!e.failed);
        if (e.failed) printf("  clean run: %s\n", e.why);
        tm_env_free(&e);
        stride = small ? total / 5 + 1 : 1;
        for (k = 1; k <= total; k += stride) {
            points++;
            bad += (uint64_t)ioerr_run(seeds[w], nrandom, k, TS_E_IO, 1);
            bad += (uint64_t)ioerr_run(seeds[w], nrandom, k, TS_E_NOSPACE, (uint64_t)1 << 40);
            if (lng) bad += (uint64_t)ioerr_run(seeds[w], nrandom, k, TS_E_IO, (uint64_t)1 << 40);
        }
    }
    printf("ioerr-stats: I/O ops faulted %llu, runs %llu (EIO once, ENOSPC onwards%s), calls that failed "
           "with the injected error %llu, failed calls read back %llu, failures %llu "
           "(tolerated known bugs: R3 busy %llu, R4 migrate-corrupt %llu)\n",
           (unsigned long long)points, (unsigned long long)g_runs, lng ? ", EIO onwards" : "",
           (unsigned long long)g_failed_calls, (unsigned long long)g_resyncs, (unsigned long long)bad,
           (unsigned long long)g_known_busy, (unsigned long long)g_known_mig);
    TS_CHECK_EQ_INT(bad, 0);
}

/* ---- minimal reproducers of the bugs the sweep found (BUGS-reliability.md) ---- */

typedef struct bug_env {
    ts_io_mem *mem;
    ts_io_fault *fault;
    ts_io io;
    ts_store_config cfg;
    ts_store *s;
    tm_alloc alloc;
} bug_env;

static void bug_init(bug_env *b)
{
    ts_io inner;
    memset(b, 0, sizeof *b);
    tm_images_init();
    ts_io_mem_create(NULL, &b->mem);
    ts_io_mem_vtable(b->mem, &inner);
    ts_io_fault_create(&inner, NULL, &b->fault);
    ts_io_fault_vtable(b->fault, &b->io);
    b->cfg = ts_store_config_default();
    b->cfg.io = &b->io;
    b->cfg.now_ms = TM_T0;
    b->cfg.gc_grace_ms = 1000;
    b->cfg.allocator = tm_allocator(&b->alloc);
}

static void bug_free(bug_env *b)
{
    if (b->s) ts_store_close(b->s);
    ts_io_fault_destroy(b->fault);
    ts_io_mem_destroy(b->mem);
}

/* The process dies with nothing queued; the store reopens (unclean). */
static void bug_kill(bug_env *b)
{
    ts_fault_plan p;
    memset(&p, 0, sizeof p);
    p.fail_at = ts_io_fault_ops(b->fault) + 1;
    p.crash = 1;
    ts_io_fault_set(b->fault, &p);
    ts_store_close(b->s);
    b->s = NULL;
    ts_io_mem_crash(b->mem, TS_CRASH_DROP_UNSYNCED, 1);
    ts_io_fault_reset(b->fault);
}

static void bug_fail_once(bug_env *b, uint64_t at, ts_result with)
{
    ts_fault_plan p;
    memset(&p, 0, sizeof p);
    p.fail_at = at;
    p.fail_with = with;
    ts_io_fault_set(b->fault, &p);
}

static int blob_has(const ts_blob *bl, const char *needle)
{
    return bl->data && strstr((const char *)bl->data, needle) != NULL;
}

/* BUG R1 (12_store): after an unclean close the list is rebuilt from every
   metadata.json; an I/O error reading one is taken for "unreadable
   metadata" and the session is silently left out of the list (and of GC's
   marking: its attachments are collected). */
TS_TEST(bug_rescan_io_error_drops_session)
{
    bug_env b;
    ts_blob bl;
    char hex[65];
    ts_result r;
    uint64_t removed = 0;
    bug_init(&b);
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    TS_CHECK_OK(ts_session_save(b.s, "{\"id\":\"keep\",\"name\":\"k\"}", 24, NULL));
    TS_CHECK_OK(ts_session_append_screenshot(b.s, "keep", "{\"id\":\"r1\"}", 11, tm_img[2], tm_img_len[2],
                                             "image/png", hex, NULL));
    TS_CHECK_OK(ts_store_flush(b.s));
    bug_kill(&b);
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    /* op +1: list sessions-chunked; op +2: read keep/metadata.json */
    bug_fail_once(&b, ts_io_fault_ops(b.fault) + 2, TS_E_IO);
    r = ts_session_list(b.s, &bl);
    ts_io_fault_reset(b.fault);
    TS_CHECK(r == TS_E_IO || (r == TS_OK && blob_has(&bl, "\"keep\"")));
    if (r == TS_OK && !blob_has(&bl, "\"keep\"")) printf("  session_list returned OK without \"keep\"\n");
    ts_blob_free(&bl);
    ts_store_gc(b.s, TM_T0 + 7200000, &removed);
    r = ts_attach_get(b.s, hex, &bl);
    TS_CHECK_OK(r);
    if (r != TS_OK) printf("  GC collected the attachment of \"keep\": %s\n", ts_result_str(r));
    ts_blob_free(&bl);
    bug_free(&b);
}

/* BUG R2 (12_store): ts_store_open trusts the derived files (manifest,
   index) when stat(store.dirty) FAILS, not only when it is absent: after a
   crash, one EIO there and the stale manifest hides every session created
   since the last clean close (and GC deletes their attachments). */
TS_TEST(bug_dirty_stat_error_trusts_stale_manifest)
{
    bug_env b;
    ts_blob bl;
    char hex[65];
    ts_result r;
    uint64_t removed = 0;
    bug_init(&b);
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    TS_CHECK_OK(ts_session_save(b.s, "{\"id\":\"old\"}", 12, NULL));
    TS_CHECK_OK(ts_store_close(b.s));          /* clean: manifest = [old] */
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    TS_CHECK_OK(ts_session_save(b.s, "{\"id\":\"new\"}", 12, NULL));
    TS_CHECK_OK(ts_session_append_screenshot(b.s, "new", "{\"id\":\"r1\"}", 11, tm_img[3], tm_img_len[3],
                                             "image/png", hex, NULL));
    TS_CHECK_OK(ts_store_flush(b.s));
    bug_kill(&b);
    /* op +1: lock; op +2: stat store.dirty */
    bug_fail_once(&b, ts_io_fault_ops(b.fault) + 2, TS_E_IO);
    r = ts_store_open("bug", &b.cfg, &b.s);
    ts_io_fault_reset(b.fault);
    if (r != TS_OK) { TS_CHECK(r == TS_E_IO); bug_free(&b); return; }
    TS_CHECK_OK(ts_session_list(b.s, &bl));
    TS_CHECK(blob_has(&bl, "\"new\""));
    if (!blob_has(&bl, "\"new\"")) printf("  the list after reopen is the stale manifest: %s\n", (const char *)bl.data);
    ts_blob_free(&bl);
    ts_store_gc(b.s, TM_T0 + 7200000, &removed);
    r = ts_attach_get(b.s, hex, &bl);
    TS_CHECK_OK(r);
    if (r != TS_OK) printf("  GC collected the attachment of \"new\": %s\n", ts_result_str(r));
    ts_blob_free(&bl);
    bug_free(&b);
}

/* BUG R3 (06_queue): with busy_error = 0, a full ring whose back-pressure
   flush fails (disk full) answers TS_E_BUSY - an option the caller did not
   choose - instead of the flush's error. */
TS_TEST(bug_backpressure_flush_error_becomes_busy)
{
    bug_env b;
    ts_queue *q = NULL;
    ts_queue_config qc = ts_queue_config_default();
    ts_fault_plan p;
    ts_result r;
    bug_init(&b);
    qc.capacity[0] = qc.capacity[1] = qc.capacity[2] = 1;
    qc.busy_error = 0;
    TS_CHECK_OK(ts_queue_open(&b.io, &qc, &q));
    if (!q) { bug_free(&b); return; }
    TS_CHECK_OK(ts_queue_push(q, "a.json", "1", 1, TS_PRIO_NORMAL, NULL, NULL));
    memset(&p, 0, sizeof p);
    p.fail_at = ts_io_fault_ops(b.fault) + 1;
    p.fail_count = 1000000;
    p.fail_with = TS_E_NOSPACE;
    ts_io_fault_set(b.fault, &p);
    r = ts_queue_push(q, "b.json", "2", 1, TS_PRIO_NORMAL, NULL, NULL);
    TS_CHECK_EQ_INT(r, TS_E_NOSPACE);
    ts_queue_close(q);
    bug_free(&b);
}

/* BUG R4 (14_migrate): an I/O error while the migrator reads the migrated
   session back (step 4, verification) is reported as TS_E_CORRUPT
   ("verification failed"), for data that is fine. */
TS_TEST(bug_migrate_io_error_reported_as_corrupt)
{
    static const char legacy[] = "{\"id\":\"m1\",\"name\":\"leg\",\"screenshots\":[{\"id\":\"r1\",\"attachmentId\":\"a1\"}],"
                                 "\"summary\":{\"t\":1}}";
    static const char att[] = "{\"id\":\"a1\",\"mimeType\":\"image/png\",\"base64\":\"AAEC\"}";
    uint64_t k, first = 0, last = 0, corrupt = 0;
    for (k = 0;; k++) {
        bug_env b;
        ts_result r;
        bug_init(&b);
        ts_io_mem_put(b.mem, "sessions/m1.json", legacy, sizeof legacy - 1);
        ts_io_mem_put(b.mem, "attachments/a1.json", att, sizeof att - 1);
        TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
        if (k == 0) first = ts_io_fault_ops(b.fault) + 1;
        else bug_fail_once(&b, first + k - 1, TS_E_IO);
        r = ts_migrate_session(b.s, "m1", NULL, NULL);
        if (k == 0) { TS_CHECK_OK(r); last = ts_io_fault_ops(b.fault); }
        else if (r == TS_E_CORRUPT) {
            ts_error_info ei;
            ts_store_last_error(b.s, &ei);
            if (!corrupt++ || getenv("TS_TORTURE_VERBOSE"))
                printf("  EIO at I/O op %llu of the migration: TS_E_CORRUPT (%s)\n", (unsigned long long)k, ei.message);
        }
        ts_io_fault_reset(b.fault);
        bug_free(&b);
        if (k > 0 && first + k - 1 >= last) break;
    }
    TS_CHECK_EQ_INT(corrupt, 0);
}

/* BUG R5 (12_store): a chunk's cache key does not name its generation. A
   replace_stream (or save) that fails after queueing the new generation's
   chunks leaves them in the cache under the key the old metadata reads:
   the old records read back as the new ones (silently), and the next
   append writes that mix to disk. Here the failure is TS_E_BUSY (a full
   ring with busy_error set); TS_E_NOMEM does the same. */
TS_TEST(bug_chunk_cache_key_ignores_generation)
{
    static const char s0[] = "{\"id\":\"g\",\"screenshots\":[{\"a\":1},{\"a\":2}]}";
    /* 12 records: two chunk files fill a ring of 2, the metadata finds it full */
    static const char nw[] = "[{\"b\":1},{\"b\":2},{\"b\":3},{\"b\":4},{\"b\":5},{\"b\":6},{\"b\":7},"
                             "{\"b\":8},{\"b\":9},{\"b\":10},{\"b\":11},{\"b\":12}]";
    bug_env b;
    ts_blob bl;
    ts_result r;
    bug_init(&b);
    b.cfg.queue_capacity = 2;
    b.cfg.queue_busy_error = 1;
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    TS_CHECK_OK(ts_session_save(b.s, s0, sizeof s0 - 1, NULL));
    TS_CHECK_OK(ts_store_flush(b.s));
    r = ts_session_replace_stream(b.s, "g", "screenshots", nw, sizeof nw - 1);
    TS_CHECK(r == TS_OK || r == TS_E_BUSY);
    TS_CHECK_OK(ts_session_load_range(b.s, "g", "screenshots", 0, 100, &bl));
    TS_CHECK(bl.data && (strcmp((const char *)bl.data, "[{\"a\":1},{\"a\":2}]") == 0 ||
                         strcmp((const char *)bl.data, nw) == 0));
    if (bl.data && r == TS_E_BUSY && strcmp((const char *)bl.data, "[{\"a\":1},{\"a\":2}]") != 0)
        printf("  after a failed replace_stream the stream reads %s\n", (const char *)bl.data);
    ts_blob_free(&bl);
    bug_free(&b);
}

int main(void)
{
    if (!getenv("TS_TORTURE_ONLY")) {
        TS_RUN(bug_rescan_io_error_drops_session);
        TS_RUN(bug_dirty_stat_error_trusts_stale_manifest);
        TS_RUN(bug_backpressure_flush_error_becomes_busy);
        TS_RUN(bug_migrate_io_error_reported_as_corrupt);
        TS_RUN(bug_chunk_cache_key_ignores_generation);
    }
    TS_RUN(test_ioerr_every_op);
    return ts_test_report("ioerr");
}
