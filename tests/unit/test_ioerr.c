/* I/O error injection (issue 11, DESIGN.md sections 4 and 7): the workload
   of torture_model.h runs on ts_io_fault over ts_io_mem with one file
   operation failing, for every operation of the workload in turn:
     - EIO once (a transient error: the queue's retries may absorb it);
     - ENOSPC from that operation on (a full disk) until the end of the run;
     - healed: a burst of EIO, or ENOSPC, then (0-3 operations after the
       first fault hit) the faults stop with the store open, and the model
       demands that a flush succeeds and leaves everything the app was told
       on disk, live and after a power loss (tm_heal: THE RETRY POLICY).
   The run goes on after each failure. Every call must return what the model
   expects or, when an injected fault explains it, TS_E_IO / TS_E_NOSPACE;
   after a failed mutating call the live store must show, per component,
   the old state or the new one. Nothing may leak (the counting allocator
   must be back at zero after every close; LeakSanitizer at exit), and once
   the fault is removed the store must reopen and verify clean (the
   invariants of test_crash, with everything acknowledged before the fault
   present). TS_TEST_LONG=1: a longer workload, and EIO that persists too.
   TS_TEST_SMALL=1: a few points (valgrind). Prints "ioerr-stats: ...".
   Then directed tests of failed writes (retry by flush and by tick after a
   backoff, dependents held back, close, unlock failure, power loss during
   the retry) and of the temp-file cleanup after an unclean close. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"
#include "torture_model.h"

/* EIO for this many consecutive operations: more than the attempts of a
   normal-priority write, so writes fail for good, then the disk recovers. */
#define IOERR_WINDOW 12u

static uint64_t g_runs, g_failed_calls, g_resyncs, g_bad, g_known_busy, g_known_mig, g_heal_runs, g_heals, g_heals_exact;

/* heal: the faults stop before the final close and the model demands that
   a flush then makes everything acknowledged durable (tm_heal). */
static int ioerr_run(uint64_t seed, size_t nrandom, uint64_t k, ts_result with, uint64_t count, int heal)
{
    tm_env e;
    ts_fault_plan p;
    int bad;
    tm_env_init(&e, TM_MODE_IOERR, NULL);
    e.kill_mode = TS_CRASH_DROP_UNSYNCED;
    e.heal = heal;
    e.heal_wait = (uint32_t)(k % 4);
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
    g_heal_runs += (uint64_t)heal;
    g_heals += e.heals;
    g_heals_exact += e.heals_exact;
    if (bad && g_bad++ < (getenv("TS_TORTURE_VERBOSE") ? 1000 : 6))
        printf("  workload %llu, %s at I/O op %llu%s%s:\n  %s\n", (unsigned long long)seed,
               with == TS_E_NOSPACE ? "ENOSPC" : "EIO", (unsigned long long)k,
               count == 1 ? " once" : count >= ((uint64_t)1 << 40) ? " onwards" : " for a while",
               heal ? ", then the faults stop" : "", e.why);
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
        /* ",heal": the faults stop before the final close (",heal,window": EIO for
           TS_IOERR_WINDOW operations) */
        const char *o = getenv("TS_TORTURE_ONLY");
        uint64_t cnt = strstr(o, "nospc") ? (uint64_t)1 << 40 : strstr(o, "window") ? IOERR_WINDOW : 1;
        k = strtoull(o, NULL, 10);
        bad += (uint64_t)ioerr_run(seeds[0], nrandom, k, strstr(o, "nospc") ? TS_E_NOSPACE : TS_E_IO,
                                   cnt, strstr(o, "heal") != NULL);
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
            bad += (uint64_t)ioerr_run(seeds[w], nrandom, k, TS_E_IO, 1, 0);
            bad += (uint64_t)ioerr_run(seeds[w], nrandom, k, TS_E_NOSPACE, (uint64_t)1 << 40, 0);
            if (lng) bad += (uint64_t)ioerr_run(seeds[w], nrandom, k, TS_E_IO, (uint64_t)1 << 40, 0);
            /* the disk recovers: a burst of EIO that outlasts the queue's
               attempts, and a full disk that gets space back */
            bad += (uint64_t)ioerr_run(seeds[w], nrandom, k, TS_E_IO, IOERR_WINDOW, 1);
            bad += (uint64_t)ioerr_run(seeds[w], nrandom, k, TS_E_NOSPACE, (uint64_t)1 << 40, 1);
        }
    }
    printf("ioerr-stats: I/O ops faulted %llu, runs %llu (EIO once, ENOSPC onwards%s; %llu of them healed: "
           "EIO for %u ops or ENOSPC, then the faults stop, %llu with failed writes recovered, %llu of these with "
           "exact reference counts demanded), calls that failed "
           "with the injected error %llu, failed calls read back %llu, failures %llu "
           "(tolerated known bugs: R3 busy %llu, R4 migrate-corrupt %llu)\n",
           (unsigned long long)points, (unsigned long long)g_runs, lng ? ", EIO onwards" : "",
           (unsigned long long)g_heal_runs, (unsigned)IOERR_WINDOW, (unsigned long long)g_heals,
           (unsigned long long)g_heals_exact,
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

/* ---- failed writes: retried until durable, never silently dropped ----------
   (THE RETRY POLICY at ts_store_flush). The disk refuses writes for a
   while (EIO that outlasts the queue's attempts, a full disk), then
   recovers; the tests look at the bytes on the disk underneath (ts_io_mem
   read directly) and after close + reopen. */

/* The file's bytes on the disk under the fault wrapper; NULL when absent. */
static char *disk_read(bug_env *b, const char *path)
{
    ts_io io;
    size_t size = 0;
    char *buf;
    ts_io_mem_vtable(b->mem, &io);
    if (io.read_file_fn(io.user, path, NULL, 0, &size) == TS_E_NOTFOUND) return NULL;
    buf = (char *)malloc(size + 1);
    if (!buf) return NULL;
    if (io.read_file_fn(io.user, path, buf, size, &size) != TS_OK) { free(buf); return NULL; }
    buf[size] = 0;
    return buf;
}

static int disk_has(bug_env *b, const char *path)
{
    char *d = disk_read(b, path);
    free(d);
    return d != NULL;
}

static void fail_from_now(bug_env *b, ts_result with, uint64_t count)
{
    ts_fault_plan p;
    memset(&p, 0, sizeof p);
    p.fail_at = ts_io_fault_ops(b->fault) + 1;
    p.fail_count = count;
    p.fail_with = with;
    ts_io_fault_set(b->fault, &p);
}

/* The stats; counting the sessions may fail on the faulty disk (and say
   so), the write path's figures are there either way. */
static ts_store_stats stats_of(ts_store *s)
{
    ts_store_stats st;
    ts_result r = ts_store_stats_get(s, &st);
    TS_CHECK(r == TS_OK || r == TS_E_IO || r == TS_E_NOSPACE);
    return st;
}

static const char RETRY_SESSION[] =
    "{\"id\":\"f\",\"name\":\"retry me\",\"startTime\":1700000000000,"
    "\"screenshots\":[{\"id\":\"r0\",\"activity\":\"typing\"},{\"id\":\"r1\"}],"
    "\"summary\":{\"narrative\":\"kept\"}}";

/* Session f as the store shows it now (malloc'd: the store's allocator
   must be back at zero after a close). */
static char *session_now(ts_store *s)
{
    ts_blob bl;
    char *copy;
    TS_CHECK_OK(ts_session_load(s, "f", &bl));
    copy = tm_dup(bl.data ? (const char *)bl.data : "(none)");
    ts_blob_free(&bl);
    return copy;
}

/* A session with a chunk, a document and a screenshot in the attachment
   store, all queued; returns the session as the store shows it. */
static char *retry_workload(bug_env *b, char hex[65])
{
    TS_CHECK_OK(ts_session_save(b->s, RETRY_SESSION, sizeof RETRY_SESSION - 1, NULL));
    TS_CHECK_OK(ts_session_append_screenshot(b->s, "f", "{\"id\":\"r2\"}", 11, tm_img[3], tm_img_len[3],
                                             "image/png", hex, NULL));
    return session_now(b->s);
}

/* Opens the store, queues retry_workload, then fills the disk: the flush
   fails and leaves failed writes. Returns the session as the store shows it
   (NULL when the store did not open). */
static char *open_and_fail_flush(bug_env *b, char hex[65])
{
    char *whole;
    TS_CHECK_OK(ts_store_open("bug", &b->cfg, &b->s));
    if (!b->s) return NULL;
    whole = retry_workload(b, hex);
    fail_from_now(b, TS_E_NOSPACE, (uint64_t)1 << 40);
    TS_CHECK_EQ_INT(ts_store_flush(b->s), TS_E_NOSPACE);
    return whole;
}

static void check_session_is(ts_store *s, const char *want, const char *ctx)
{
    char *got = session_now(s);
    TS_CHECK_EQ_STR(got, want);
    if (strcmp(got, want) != 0) printf("  (%s)\n", ctx);
    free(got);
}

/* The store closed and reopened verifies clean without a repair: nothing
   derived (reference counts, index, session list) drifted. */
static void check_reopen_clean(bug_env *b, const char *want, const char *hex)
{
    ts_store_verify_report rep;
    ts_blob att;
    TS_CHECK_OK(ts_store_close(b->s));
    b->s = NULL;
    TS_CHECK_EQ_INT(b->alloc.live_bytes, 0);
    TS_CHECK_OK(ts_store_open("bug", &b->cfg, &b->s));
    if (!b->s) return;
    check_session_is(b->s, want, "after close + reopen");
    TS_CHECK_OK(ts_attach_get(b->s, hex, &att));
    TS_CHECK(att.len == tm_img_len[3] && memcmp(att.data, tm_img[3], att.len) == 0);
    ts_blob_free(&att);
    TS_CHECK_OK(ts_store_verify(b->s, 0, NULL, NULL, &rep));
    TS_CHECK_EQ_INT(rep.problems, 0);
}

/* ENOSPC from now on: the flush fails and says so, reads keep the pending
   bytes, nothing reaches the disk, later flushes try again; space freed:
   the next flush makes everything durable, byte for byte. */
TS_TEST(test_failed_writes_retried_by_flush)
{
    bug_env b;
    ts_blob meta;
    ts_store_stats st;
    char hex[65], *disk, path[128], *whole;
    bug_init(&b);
    if ((whole = open_and_fail_flush(&b, hex)) == NULL) { bug_free(&b); return; }
    st = stats_of(b.s);
    TS_CHECK(st.queue.failed_items > 0);
    TS_CHECK(st.queue.failed_bytes > 0);
    TS_CHECK_EQ_INT(st.queue.last_failure.code, TS_E_NOSPACE);
    TS_CHECK(strstr(st.queue.last_failure.message, "failed after") != NULL);
    TS_CHECK_EQ_INT(st.queue.last_failure_ms, TM_T0);
    TS_CHECK_EQ_INT(st.queue.next_retry_ms, TM_T0 + 1000);
    /* read-your-writes holds for failed writes */
    check_session_is(b.s, whole, "after the failed flush");
    TS_CHECK(!disk_has(&b, "sessions-chunked/f/metadata.json"));
    /* still full: fresh attempts, the same failure, nothing dropped */
    TS_CHECK_EQ_INT(st.queue.retry_rounds, 0);
    TS_CHECK_EQ_INT(ts_store_flush(b.s), TS_E_NOSPACE);
    TS_CHECK_EQ_INT(stats_of(b.s).queue.retry_rounds, 1);
    TS_CHECK_EQ_INT(stats_of(b.s).queue.failed_items, st.queue.failed_items);
    /* space freed */
    ts_io_fault_reset(b.fault);
    TS_CHECK_OK(ts_store_flush(b.s));
    st = stats_of(b.s);
    TS_CHECK_EQ_INT(st.queue.failed_items, 0);
    TS_CHECK_EQ_INT(st.queue.pending, 0);
    TS_CHECK_EQ_INT(st.queue.next_retry_ms, 0);
    TS_CHECK_OK(ts_session_load_meta(b.s, "f", &meta));
    disk = disk_read(&b, "sessions-chunked/f/metadata.json");
    TS_CHECK(disk && meta.data && strcmp(disk, (const char *)meta.data) == 0);
    free(disk);
    ts_blob_free(&meta);
    TS_CHECK(disk_has(&b, "sessions-chunked/f/screenshots/chunk-000.json"));
    TS_CHECK(disk_has(&b, "sessions-chunked/f/summary.json"));
    snprintf(path, sizeof path, "attachments-ca/%.2s/%s/data.bin", hex, hex);
    disk = disk_read(&b, path);
    TS_CHECK(disk && memcmp(disk, tm_img[3], tm_img_len[3]) == 0);
    free(disk);
    check_reopen_clean(&b, whole, hex);
    free(whole);
    bug_free(&b);
}

/* Ticks 100 ms apart until a write has failed for good (at most 50). */
static uint64_t tick_until_failed(bug_env *b, uint64_t *now)
{
    int i;
    for (i = 0; i < 50; i++) {
        *now += 100;
        (void)ts_store_tick(b->s, *now, TM_BIG_BUDGET);
        if (stats_of(b->s).queue.failed_items) return *now;
    }
    TS_CHECK(!"no write failed for good");
    return *now;
}

/* EIO for a long while under tick/idle: the failed writes are retried after
   1 s, then 2 s, 4 s, 4 s (the cap here) of the caller's clock, not sooner;
   once the disk recovers, the next due round makes them durable. */
TS_TEST(test_failed_writes_retried_by_tick_with_backoff)
{
    bug_env b;
    ts_store_stats st;
    char hex[65], *whole;
    uint64_t now = TM_T0, t_fail, want[4] = { 1000, 2000, 4000, 4000 };
    int round;
    bug_init(&b);
    b.cfg.retry_backoff_max_ms = 4000;
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    if (!b.s) { bug_free(&b); return; }
    whole = retry_workload(&b, hex);
    fail_from_now(&b, TS_E_IO, (uint64_t)1 << 40);
    t_fail = tick_until_failed(&b, &now);
    for (round = 0; round < 4; round++) {
        st = stats_of(b.s);
        TS_CHECK_EQ_INT(st.queue.last_failure_ms, t_fail);
        TS_CHECK_EQ_INT(st.queue.next_retry_ms, t_fail + want[round]);
        TS_CHECK_EQ_INT(st.queue.retry_rounds, (uint64_t)round);
        /* not before the backoff has passed */
        now = st.queue.next_retry_ms - 1;
        (void)ts_store_tick(b.s, now, TM_BIG_BUDGET);
        TS_CHECK_EQ_INT(stats_of(b.s).queue.retry_rounds, (uint64_t)round);
        TS_CHECK_EQ_INT(stats_of(b.s).queue.failed_items, st.queue.failed_items);
        now++;
        (void)ts_store_tick(b.s, now, TM_BIG_BUDGET);
        TS_CHECK_EQ_INT(stats_of(b.s).queue.retry_rounds, (uint64_t)round + 1);
        if (!stats_of(b.s).queue.failed_items) now -= 100; /* retried and pending again */
        t_fail = tick_until_failed(&b, &now);
    }
    check_session_is(b.s, whole, "while failing");
    TS_CHECK(!disk_has(&b, "sessions-chunked/f/metadata.json"));
    /* the disk recovers: the next due round (idle: low-priority writes too) */
    ts_io_fault_reset(b.fault);
    now = stats_of(b.s).queue.next_retry_ms;
    TS_CHECK_OK(ts_store_idle(b.s, now, TM_BIG_BUDGET));
    st = stats_of(b.s);
    TS_CHECK_EQ_INT(st.queue.failed_items, 0);
    TS_CHECK_EQ_INT(st.queue.pending, 0);
    TS_CHECK(disk_has(&b, "sessions-chunked/f/metadata.json"));
    /* everything durable: the backoff starts over at the next failure */
    TS_CHECK_OK(ts_session_save_doc(b.s, "f", "canvasSpec", "{\"k\":1}", 7));
    fail_from_now(&b, TS_E_IO, (uint64_t)1 << 40);
    t_fail = tick_until_failed(&b, &now);
    TS_CHECK_EQ_INT(stats_of(b.s).queue.next_retry_ms, t_fail + 1000);
    ts_io_fault_reset(b.fault);
    free(whole);
    whole = session_now(b.s);
    check_reopen_clean(&b, whole, hex); /* close retries once more: nothing lost */
    free(whole);
    bug_free(&b);
}

/* A vtable over ts_io_mem that refuses writes of paths containing `refuse`
   (EIO) and, when asked, the release of the lock. */
typedef struct picky_io {
    ts_io inner;
    const char *refuse;
    int refuse_unlock;
    uint64_t refused;
} picky_io;

static ts_result picky_read(void *u, const char *p, void *b, size_t c, size_t *s)
{ picky_io *x = (picky_io *)u; return x->inner.read_file_fn(x->inner.user, p, b, c, s); }
static ts_result picky_write(void *u, const char *p, const void *d, size_t n, unsigned fl)
{
    picky_io *x = (picky_io *)u;
    if (x->refuse && strstr(p, x->refuse)) { x->refused++; return TS_E_IO; }
    return x->inner.write_file_atomic_fn(x->inner.user, p, d, n, fl);
}
static ts_result picky_remove(void *u, const char *p)
{ picky_io *x = (picky_io *)u; return x->inner.remove_fn(x->inner.user, p); }
static ts_result picky_rename(void *u, const char *a, const char *c)
{ picky_io *x = (picky_io *)u; return x->inner.rename_fn(x->inner.user, a, c); }
static ts_result picky_mkdir(void *u, const char *p)
{ picky_io *x = (picky_io *)u; return x->inner.mkdir_p_fn(x->inner.user, p); }
static ts_result picky_list(void *u, const char *p, ts_io_list_cb cb, void *ctx)
{ picky_io *x = (picky_io *)u; return x->inner.list_dir_fn(x->inner.user, p, cb, ctx); }
static ts_result picky_stat(void *u, const char *p, ts_io_stat *o)
{ picky_io *x = (picky_io *)u; return x->inner.stat_fn(x->inner.user, p, o); }
static ts_result picky_sync(void *u, const char *p)
{ picky_io *x = (picky_io *)u; return x->inner.sync_dir_fn(x->inner.user, p); }
static ts_result picky_lock(void *u, int l)
{
    picky_io *x = (picky_io *)u;
    if (!l && x->refuse_unlock) return TS_E_IO;
    return x->inner.lock_fn(x->inner.user, l);
}

static void picky_vtable(picky_io *x, ts_io *io)
{
    *io = x->inner;
    io->user = x;
    io->read_file_fn = picky_read;
    io->write_file_atomic_fn = picky_write;
    io->remove_fn = picky_remove;
    io->rename_fn = picky_rename;
    io->mkdir_p_fn = picky_mkdir;
    io->list_dir_fn = picky_list;
    io->stat_fn = picky_stat;
    io->sync_dir_fn = picky_sync;
    io->lock_fn = picky_lock;
    io->stats_fn = NULL;
}

typedef struct log_capture { char text[2048]; } log_capture;

static void log_capture_fn(void *user, ts_log_level level, ts_result code, const char *message, int line)
{
    log_capture *c = (log_capture *)user;
    size_t n = strlen(c->text);
    (void)level; (void)code; (void)line;
    if (n + 2 < sizeof c->text) snprintf(c->text + n, sizeof c->text - n, "%s\n", message);
}

/* Only the chunk writes fail: the metadata that counts the chunk waits for
   it (never on disk alone), reads see both; the disk recovers, a flush
   writes both. Then the lock release fails at close: close says so,
   though every byte is durable. */
TS_TEST(test_failed_chunk_holds_back_metadata_and_unlock_error)
{
    ts_io_mem *mem = NULL;
    picky_io px;
    ts_io io;
    ts_store_config cfg = ts_store_config_default();
    ts_store *s = NULL;
    ts_blob bl;
    log_capture lc;
    ts_result r;
    memset(&px, 0, sizeof px);
    memset(&lc, 0, sizeof lc);
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &px.inner);
    picky_vtable(&px, &io);
    cfg.io = &io;
    cfg.now_ms = TM_T0;
    cfg.logger.log_fn = log_capture_fn;
    cfg.logger.user = &lc;
    TS_CHECK_OK(ts_store_open("picky", &cfg, &s));
    if (!s) { ts_io_mem_destroy(mem); return; }
    px.refuse = "chunk-";
    TS_CHECK_OK(ts_session_save(s, RETRY_SESSION, sizeof RETRY_SESSION - 1, NULL));
    TS_CHECK_EQ_INT(ts_store_flush(s), TS_E_IO);
    TS_CHECK(px.refused > 0);
    TS_CHECK(strstr(stats_of(s).queue.last_failure.message, "chunk-000.json") != NULL);
    {
        ts_io mio;
        ts_io_stat st;
        ts_io_mem_vtable(mem, &mio);
        TS_CHECK_EQ_INT(mio.stat_fn(mio.user, "sessions-chunked/f/screenshots/chunk-000.json", &st), TS_E_NOTFOUND);
        TS_CHECK_EQ_INT(mio.stat_fn(mio.user, "sessions-chunked/f/metadata.json", &st), TS_E_NOTFOUND);
        TS_CHECK_OK(ts_session_load_range(s, "f", "screenshots", 0, 10, &bl));
        TS_CHECK(bl.data && strstr((const char *)bl.data, "typing") != NULL);
        ts_blob_free(&bl);
        px.refuse = NULL;
        TS_CHECK_OK(ts_store_flush(s));
        TS_CHECK_OK(mio.stat_fn(mio.user, "sessions-chunked/f/screenshots/chunk-000.json", &st));
        TS_CHECK_OK(mio.stat_fn(mio.user, "sessions-chunked/f/metadata.json", &st));
    }
    px.refuse_unlock = 1;
    r = ts_store_close(s);
    TS_CHECK_EQ_INT(r, TS_E_IO);
    TS_CHECK(strstr(lc.text, "releasing the store lock failed") != NULL);
    /* the lock is still held, as close said; once it goes, all is there */
    TS_CHECK_EQ_INT(ts_store_open("picky", &cfg, &s), TS_E_LOCKED);
    px.inner.lock_fn(px.inner.user, 0);
    px.refuse_unlock = 0;
    TS_CHECK_OK(ts_store_open("picky", &cfg, &s));
    if (s) {
        TS_CHECK_OK(ts_session_load_range(s, "f", "screenshots", 0, 10, &bl));
        TS_CHECK(bl.data && strstr((const char *)bl.data, "typing") != NULL);
        ts_blob_free(&bl);
        TS_CHECK_OK(ts_store_verify(s, 0, NULL, NULL, NULL));
        TS_CHECK_OK(ts_store_close(s));
    }
    ts_io_mem_destroy(mem);
}

/* Close gives the failed writes one more set of attempts: recovered
   meanwhile, nothing is lost. Still failing, close frees the store anyway,
   reports what it discarded, and the store reopens consistent (that
   session is gone: the documented loss). */
TS_TEST(test_close_retries_then_discards_honestly)
{
    bug_env b;
    ts_blob bl;
    char hex[65], *whole;
    log_capture lc;
    int exists = 1;
    bug_init(&b);
    if ((whole = open_and_fail_flush(&b, hex)) == NULL) { bug_free(&b); return; }
    ts_io_fault_reset(b.fault);
    check_reopen_clean(&b, whole, hex);
    free(whole);
    TS_CHECK_OK(ts_store_close(b.s));
    b.s = NULL;

    memset(&lc, 0, sizeof lc);
    b.cfg.logger.log_fn = log_capture_fn;
    b.cfg.logger.user = &lc;
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    if (!b.s) { bug_free(&b); return; }
    TS_CHECK_OK(ts_session_save(b.s, "{\"id\":\"lost\",\"name\":\"x\"}", 24, NULL));
    fail_from_now(&b, TS_E_NOSPACE, (uint64_t)1 << 40);
    TS_CHECK_EQ_INT(ts_store_close(b.s), TS_E_NOSPACE);
    b.s = NULL;
    TS_CHECK_EQ_INT(b.alloc.live_bytes, 0);
    TS_CHECK(strstr(lc.text, "discarded, not on disk") != NULL);
    /* the full disk refused the lock release too (close said so): the
       process that held it is gone */
    TS_CHECK(strstr(lc.text, "releasing the store lock failed") != NULL);
    ts_io_fault_reset(b.fault);
    {
        ts_io mio;
        ts_io_mem_vtable(b.mem, &mio);
        mio.lock_fn(mio.user, 0);
    }
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    if (!b.s) { bug_free(&b); return; }
    TS_CHECK_OK(ts_session_exists(b.s, "lost", &exists));
    TS_CHECK_EQ_INT(exists, 0);
    TS_CHECK_OK(ts_session_load(b.s, "f", &bl));
    ts_blob_free(&bl);
    TS_CHECK_OK(ts_store_verify(b.s, 0, NULL, NULL, NULL));
    bug_free(&b);
}

/* Power lost at every I/O operation of the flush that retries the failed
   writes: what the retry wrote is always a state the mutations passed
   through in order (a chunk before its metadata, an attachment's data
   before its metadata): the store reopens and verifies without damage. */
TS_TEST(test_crash_during_retry_flush)
{
    uint64_t k, points = 0;
    for (k = 1;; k++) {
        bug_env b;
        char hex[65], *whole;
        ts_fault_plan p;
        ts_result r;
        tm_vprob vp;
        ts_store_verify_report rep;
        int done;
        bug_init(&b);
        if ((whole = open_and_fail_flush(&b, hex)) == NULL) { bug_free(&b); return; }
        memset(&p, 0, sizeof p);
        p.fail_at = ts_io_fault_ops(b.fault) + k;
        p.crash = 1;
        ts_io_fault_reset(b.fault);
        ts_io_fault_set(b.fault, &p);
        r = ts_store_flush(b.s);
        done = !ts_io_fault_crashed(b.fault);
        TS_CHECK(done ? r == TS_OK : r != TS_OK);
        ts_store_close(b.s);
        b.s = NULL;
        ts_io_mem_crash(b.mem, TS_CRASH_DROP_UNSYNCED, k);
        ts_io_fault_reset(b.fault);
        TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
        if (b.s) {
            int exists = 0;
            memset(&vp, 0, sizeof vp);
            r = ts_store_verify(b.s, 0, tm_vprob_fn, &vp, &rep);
            TS_CHECK(r == TS_OK || r == TS_E_CORRUPT);
            TS_CHECK_EQ_INT(vp.damaged, 0);
            if (vp.damaged) printf("  power lost at op %llu of the retry: %s\n", (unsigned long long)k, vp.first);
            TS_CHECK_OK(ts_session_exists(b.s, "f", &exists));
            if (done) {
                TS_CHECK(exists);
                check_session_is(b.s, whole, "after the retry flush completed");
            }
        }
        free(whole);
        bug_free(&b);
        points++;
        if (done || k > 200) break;
    }
    TS_CHECK(points > 5);
    printf("retry flush: power lost at each of %llu I/O operations\n", (unsigned long long)points - 1);
}

/* A ring held full by failed writes (the disk refuses the sessions' files,
   reads still work): once the disk recovers, the next mutation's
   synchronous flush retries them and makes room, instead of failing until
   the app flushes. */
TS_TEST(test_full_ring_of_failed_writes_retried_by_backpressure)
{
    ts_io_mem *mem = NULL;
    picky_io px;
    ts_io io, mio;
    ts_io_stat st;
    ts_store_config cfg = ts_store_config_default();
    ts_store *s = NULL;
    ts_result r;
    char js[64];
    int i, failed_calls = 0, exists = 0;
    memset(&px, 0, sizeof px);
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &px.inner);
    ts_io_mem_vtable(mem, &mio);
    picky_vtable(&px, &io);
    cfg.io = &io;
    cfg.now_ms = TM_T0;
    cfg.queue_capacity = 4;
    TS_CHECK_OK(ts_store_open("picky", &cfg, &s));
    if (!s) { ts_io_mem_destroy(mem); return; }
    px.refuse = "sessions-chunked/";
    for (i = 0; i < 8; i++) {
        snprintf(js, sizeof js, "{\"id\":\"p%d\",\"name\":\"n\"}", i);
        r = ts_session_save(s, js, strlen(js), NULL);
        TS_CHECK(r == TS_OK || r == TS_E_IO);
        failed_calls += r != TS_OK;
    }
    TS_CHECK(failed_calls > 0); /* the ring filled with failed writes */
    TS_CHECK(stats_of(s).queue.failed_items > 0);
    px.refuse = NULL; /* the disk recovers; no flush, no tick */
    TS_CHECK_OK(ts_session_save(s, "{\"id\":\"after\",\"name\":\"n\"}", 25, NULL));
    TS_CHECK_EQ_INT(stats_of(s).queue.failed_items, 0);
    TS_CHECK_OK(mio.stat_fn(mio.user, "sessions-chunked/p0/metadata.json", &st));
    TS_CHECK_OK(ts_store_close(s));
    TS_CHECK_OK(ts_store_open("picky", &cfg, &s));
    if (s) {
        TS_CHECK_OK(ts_session_exists(s, "after", &exists));
        TS_CHECK(exists);
        TS_CHECK_OK(ts_session_exists(s, "p0", &exists));
        TS_CHECK(exists);
        TS_CHECK_OK(ts_store_verify(s, 0, NULL, NULL, NULL));
        TS_CHECK_OK(ts_store_close(s));
    }
    ts_io_mem_destroy(mem);
}

/* Temporary files of atomic replaces a crash interrupted are removed by the
   first flush after the unclean open (its directory walk), and only names
   of exactly that pattern inside the store's layout; after a clean close
   nothing is walked. */
TS_TEST(test_stale_temp_files_cleaned_after_unclean_close)
{
    static const char *const stale[] = {
        "sessions-chunked/f/metadata.json.tmp.4242.7",
        "sessions-chunked/f/screenshots/chunk-000.json.tmp.1.2",
        "attachments-ca/ab/data.bin.tmp.99.123456",
    };
    static const char *const kept[] = {
        "sessions-chunked/f/notes.tmp.txt",
        "sessions-chunked/f/x.tmp.12a.3",
        "sessions-chunked/f/.tmp.1.2",
        "sessions-chunked/f/y.tmp.1",
        "foreign/keep.json.tmp.1.2",
    };
    bug_env b;
    size_t i;
    bug_init(&b);
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    if (!b.s) { bug_free(&b); return; }
    TS_CHECK_OK(ts_session_save(b.s, RETRY_SESSION, sizeof RETRY_SESSION - 1, NULL));
    TS_CHECK_OK(ts_store_flush(b.s));
    bug_kill(&b);
    for (i = 0; i < sizeof stale / sizeof stale[0]; i++) TS_CHECK_OK(ts_io_mem_put(b.mem, stale[i], "x", 1));
    for (i = 0; i < sizeof kept / sizeof kept[0]; i++) TS_CHECK_OK(ts_io_mem_put(b.mem, kept[i], "x", 1));
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    if (!b.s) { bug_free(&b); return; }
    TS_CHECK_OK(ts_store_flush(b.s));
    for (i = 0; i < sizeof stale / sizeof stale[0]; i++) {
        TS_CHECK(!disk_has(&b, stale[i]));
        if (disk_has(&b, stale[i])) printf("  still there: %s\n", stale[i]);
    }
    for (i = 0; i < sizeof kept / sizeof kept[0]; i++) TS_CHECK(disk_has(&b, kept[i]));
    TS_CHECK(disk_has(&b, "sessions-chunked/f/metadata.json"));
    /* clean close, planted again: a clean open walks nothing */
    TS_CHECK_OK(ts_store_close(b.s));
    b.s = NULL;
    TS_CHECK_OK(ts_io_mem_put(b.mem, stale[0], "x", 1));
    TS_CHECK_OK(ts_store_open("bug", &b.cfg, &b.s));
    TS_CHECK_OK(ts_store_flush(b.s));
    TS_CHECK(disk_has(&b, stale[0]));
    bug_free(&b);
}

#ifndef _WIN32
#include <sys/stat.h>
#include <unistd.h>

/* The same on the POSIX vtable, with the temp name it really uses: a store
   left unclean (store.dirty) with a planted "<leaf>.tmp.<pid>.<n>". */
TS_TEST(test_stale_temp_files_cleaned_posix)
{
    const char *tmp = getenv("TS_TEST_TMP");
    char base[400], root[480], planted[600], keep[600], dirty[600];
    ts_store_config cfg = ts_store_config_default();
    ts_store *s = NULL;
    struct stat st;
    FILE *fp;
    snprintf(base, sizeof base, "%s/ts_ioerr_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(base)) { TS_CHECK(!"mkdtemp"); return; }
    snprintf(root, sizeof root, "%s/store", base);
    cfg.now_ms = TM_T0;
    TS_CHECK_OK(ts_store_open(root, &cfg, &s));
    if (!s) return;
    TS_CHECK_OK(ts_session_save(s, RETRY_SESSION, sizeof RETRY_SESSION - 1, NULL));
    TS_CHECK_OK(ts_store_close(s));
    snprintf(planted, sizeof planted, "%s/sessions-chunked/f/metadata.json.tmp.%lu.3", root, (unsigned long)getpid());
    snprintf(keep, sizeof keep, "%s/sessions-chunked/f/keep.tmp.txt", root);
    snprintf(dirty, sizeof dirty, "%s/store.dirty", root);
    fp = fopen(planted, "wb"); if (fp) { fputs("{\"half", fp); fclose(fp); }
    fp = fopen(keep, "wb"); if (fp) { fputs("mine", fp); fclose(fp); }
    fp = fopen(dirty, "wb"); if (fp) { fputs("open\n", fp); fclose(fp); }
    TS_CHECK_OK(ts_store_open(root, &cfg, &s));
    if (!s) return;
    TS_CHECK(stat(planted, &st) == 0);
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK(stat(planted, &st) != 0);
    TS_CHECK(stat(keep, &st) == 0);
    TS_CHECK_OK(ts_store_close(s));
    remove(keep);
}
#endif

int main(void)
{
    if (!getenv("TS_TORTURE_ONLY")) {
        TS_RUN(bug_rescan_io_error_drops_session);
        TS_RUN(bug_dirty_stat_error_trusts_stale_manifest);
        TS_RUN(bug_backpressure_flush_error_becomes_busy);
        TS_RUN(bug_migrate_io_error_reported_as_corrupt);
        TS_RUN(bug_chunk_cache_key_ignores_generation);
        TS_RUN(test_failed_writes_retried_by_flush);
        TS_RUN(test_failed_writes_retried_by_tick_with_backoff);
        TS_RUN(test_failed_chunk_holds_back_metadata_and_unlock_error);
        TS_RUN(test_close_retries_then_discards_honestly);
        TS_RUN(test_crash_during_retry_flush);
        TS_RUN(test_full_ring_of_failed_writes_retried_by_backpressure);
        TS_RUN(test_stale_temp_files_cleaned_after_unclean_close);
#ifndef _WIN32
        TS_RUN(test_stale_temp_files_cleaned_posix);
#endif
    }
    TS_RUN(test_ioerr_every_op);
    return ts_test_report("ioerr");
}
