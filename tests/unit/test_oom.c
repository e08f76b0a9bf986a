/* Allocation failure injection (issue 11, DESIGN.md section 7: "Out-of-
   memory anywhere gives TS_E_NOMEM and leaks nothing"). The store gets the
   counting allocator of torture_model.h (ts_store_config.allocator; the
   CAS, queue, cache and index inherit it), which fails allocation N, for
   every N over the workload (the scripted prefix: saves, screenshots with
   duplicates, documents, deletes, GC, replace, re-save, migrate, a clean
   reopen, a kill and its rescan, list and search). The run goes on after
   each failure: every call must succeed as the model says or fail with
   exactly TS_E_NOMEM; a failed mutating call must leave each component of
   the session in its old or its new state; every close must bring the
   allocator's live bytes back to zero (and the allocator checks every size
   it is told at free/realloc); LeakSanitizer checks the rest at exit. Then
   the store is reopened with a healthy allocator and verified like after a
   crash.

   Default: every N in the first 1,500 allocations, then a stride covering
   the rest (about 2,500 runs). TS_TEST_LONG=1: every N, one-shot and
   persistent (every allocation from N on fails). TS_TEST_SMALL=1: a few N
   (valgrind). Prints "oom-stats: ...". */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"
#include "torture_model.h"

static uint64_t g_runs, g_nomem_calls, g_resyncs, g_bad, g_known_mig;

#define OOM_RANDOM_OPS 0

static int oom_run(uint64_t n, int persistent)
{
    tm_env e;
    int bad;
    tm_env_init(&e, TM_MODE_OOM, NULL);
    e.alloc.fail_at = n;
    e.alloc.persistent = persistent;
    tm_workload(&e, 21, OOM_RANDOM_OPS);
    if (!e.failed) tm_verify(&e, 0, "after the allocation failure");
    bad = e.failed;
    g_runs++;
    g_nomem_calls += e.injected_calls;
    g_resyncs += e.resyncs;
    g_known_mig += e.known_mig_corrupt;
    if (bad && g_bad++ < (getenv("TS_TORTURE_VERBOSE") ? 1000u : 6u))
        printf("  allocation %llu fails%s:\n  %s\n", (unsigned long long)n, persistent ? " (and every later one)" : "",
               e.why);
    tm_env_free(&e);
    return bad;
}

TS_TEST(test_oom_every_allocation)
{
    int lng = tm_is_test_long(), small = tm_is_test_small();
    uint64_t total, n, bad = 0, points = 0;
    tm_env e;
    if (getenv("TS_TORTURE_ONLY")) {
        n = strtoull(getenv("TS_TORTURE_ONLY"), NULL, 10);
        bad += (uint64_t)oom_run(n, getenv("TS_TORTURE_PERSISTENT") != NULL);
        TS_CHECK_EQ_INT(bad, 0);
        return;
    }
    tm_env_init(&e, TM_MODE_CLEAN, NULL);
    tm_workload(&e, 21, OOM_RANDOM_OPS);
    total = e.alloc.calls;
    if (!e.failed) tm_verify(&e, 1, "clean run");
    TS_CHECK(!e.failed);
    if (e.failed) printf("  clean run: %s\n", e.why);
    tm_env_free(&e);
    for (n = 1; n <= total + 1;) {
        points++;
        bad += (uint64_t)oom_run(n, 0);
        if (lng) bad += (uint64_t)oom_run(n, 1);
        if (small) n += total / 8 + 1;
        else if (lng || n < 1500) n++;
        else n += 7;
    }
    printf("oom-stats: allocations in the workload %llu, allocation failures injected %llu (runs %llu%s), "
           "calls that returned TS_E_NOMEM %llu, failed calls read back %llu, failures %llu "
           "(tolerated known bug R4: %llu)\n",
           (unsigned long long)total, (unsigned long long)points, (unsigned long long)g_runs,
           lng ? ", one-shot and persistent" : "", (unsigned long long)g_nomem_calls,
           (unsigned long long)g_resyncs, (unsigned long long)bad, (unsigned long long)g_known_mig);
    TS_CHECK_EQ_INT(bad, 0);
}

/* ---- minimal reproducers of the bugs the sweep found (BUGS-reliability.md).
   Each fails every allocation, in turn, inside ONE call of a small scenario
   and checks what that call leaves behind. ---- */

typedef struct ob_env {
    ts_io_mem *mem;
    ts_io io;
    ts_store_config cfg;
    ts_store *s;
    tm_alloc alloc;
} ob_env;

static void ob_init(ob_env *b)
{
    memset(b, 0, sizeof *b);
    ts_io_mem_create(NULL, &b->mem);
    ts_io_mem_vtable(b->mem, &b->io);
    b->cfg = ts_store_config_default();
    b->cfg.io = &b->io;
    b->cfg.now_ms = TM_T0;
    b->cfg.allocator = tm_allocator(&b->alloc);
}

static void ob_free(ob_env *b)
{
    b->alloc.fail_at = 0;
    if (b->s) ts_store_close(b->s);
    ts_io_mem_destroy(b->mem);
}

static void ob_reopen(ob_env *b)
{
    b->alloc.fail_at = 0;
    if (b->s) ts_store_close(b->s);
    b->s = NULL;
    ts_store_open("bug", &b->cfg, &b->s);
}

/* Fails allocation k of the next call. */
static void ob_arm(ob_env *b, uint64_t k) { b->alloc.fail_at = b->alloc.calls + k; }
/* 1 when the armed failure did not happen (k is past the call). */
static int ob_missed(ob_env *b) { int m = b->alloc.failed == 0; b->alloc.fail_at = 0; return m; }

static int list_count(ts_store *s, const char *id)
{
    ts_blob bl;
    char needle[64];
    int n = -1;
    if (ts_session_list(s, &bl) != TS_OK) return -1;
    snprintf(needle, sizeof needle, "\"id\":\"%s\"", id);
    n = strstr((const char *)bl.data, needle) != NULL;
    ts_blob_free(&bl);
    return n;
}

/* BUG R6 (12_store): the cache-key helpers answer "" when they cannot
   allocate, and the write goes on: the file is queued but the cache keeps
   the OLD metadata under its real key. Once the queue has written it, reads
   return the old count (a successful append vanishes), and the next write
   puts that stale metadata back on disk. */
TS_TEST(bug_oom_cache_key_leaves_stale_entry)
{
    uint64_t k, bad = 0;
    for (k = 1; k < 400; k++) {
        ob_env b;
        ts_result r;
        uint64_t live = 0, disk = 0;
        int missed;
        ob_init(&b);
        ts_store_open("bug", &b.cfg, &b.s);
        ts_session_save(b.s, "{\"id\":\"s\",\"screenshots\":[{\"r\":0}]}", 34, NULL);
        ts_store_flush(b.s);
        ob_arm(&b, k);
        r = ts_session_append(b.s, "s", "screenshots", "{\"r\":1}", 7, NULL);
        missed = ob_missed(&b);
        ts_store_flush(b.s);
        ts_session_stream_count(b.s, "s", "screenshots", &live);
        ob_reopen(&b);
        ts_session_stream_count(b.s, "s", "screenshots", &disk);
        if ((r == TS_OK && (live != 2 || disk != 2)) || (r != TS_OK && live != disk)) {
            if (!bad++) printf("  allocation %llu of an append fails: append says %s, the store then reads %llu "
                               "record(s), the disk has %llu\n", (unsigned long long)k, ts_result_str(r),
                               (unsigned long long)live, (unsigned long long)disk);
        }
        ob_free(&b);
        if (missed) break;
    }
    TS_CHECK_EQ_INT(bad, 0);
}

/* BUG R7 (12_store): ts__remove queues the removal, then its compressed
   twin's; when the second enqueue fails it returns before dropping the
   cache entry. A session_delete failing there leaves the session deleted on
   disk but alive in the cache (a ghost until the next open). */
TS_TEST(bug_oom_delete_leaves_ghost_in_cache)
{
    uint64_t k, bad = 0;
    for (k = 1; k < 400; k++) {
        ob_env b;
        ts_result r;
        int live = -1, disk = -1, missed;
        ob_init(&b);
        ts_store_open("bug", &b.cfg, &b.s);
        {
            static const char js[] = "{\"id\":\"d\",\"summary\":{\"x\":1},\"screenshots\":[{\"r\":0}]}";
            TS_CHECK_OK(ts_session_save(b.s, js, sizeof js - 1, NULL));
        }
        ts_store_flush(b.s);
        ob_arm(&b, k);
        r = ts_session_delete(b.s, "d");
        missed = ob_missed(&b);
        ts_store_flush(b.s);
        ts_session_exists(b.s, "d", &live);
        ob_reopen(&b);
        ts_session_exists(b.s, "d", &disk);
        if (live != disk || (r == TS_OK && disk)) {
            if (!bad++) printf("  allocation %llu of a delete fails (%s): the store says the session %s, the disk %s\n",
                               (unsigned long long)k, ts_result_str(r), live ? "exists" : "is gone",
                               disk ? "has it" : "does not");
        }
        ob_free(&b);
        if (missed) break;
    }
    TS_CHECK_EQ_INT(bad, 0);
}

/* BUG R8 (12_store): ts__name_list_cb grows two arrays with one capacity;
   when the second realloc fails, the first is later freed with its old
   size (the allocator's free_fn is told a wrong size: fatal for an arena
   or pool allocator). The list grows past 64 names, so 70 sessions. */
TS_TEST(bug_oom_name_list_wrong_free_size)
{
    uint64_t k, bad = 0;
    for (k = 60; k < 140; k++) {
        ob_env b;
        ts_blob bl;
        int i, missed;
        char js[64];
        ob_init(&b);
        ts_store_open("bug", &b.cfg, &b.s);
        for (i = 0; i < 70; i++) {
            int n = snprintf(js, sizeof js, "{\"id\":\"n%02d\"}", i);
            ts_session_save(b.s, js, (size_t)n, NULL);
        }
        ts_store_flush(b.s);
        /* unclean reopen: the list is a scan of sessions-chunked/ */
        ts_store_close(b.s);
        ts_io_mem_put(b.mem, "store.dirty", "x", 1);
        b.s = NULL;
        ts_store_open("bug", &b.cfg, &b.s);
        ob_arm(&b, k);
        ts_session_list(b.s, &bl);
        ts_blob_free(&bl);
        missed = ob_missed(&b);
        ts_store_close(b.s);
        b.s = NULL;
        if (b.alloc.bad_sizes) {
            if (!bad++) printf("  allocation %llu of a session list fails: free told a wrong size\n", (unsigned long long)k);
        }
        ob_free(&b);
        if (missed) break;
    }
    TS_CHECK_EQ_INT(bad, 0);
}

/* BUG R9 (12_store): ts__dir_set creates a new list entry before copying
   its metadata; when the copy fails the entry stays with no text, which
   means "deleted", and a later manifest load (only_new) never fills it in:
   the session is missing from every later list of this store. */
TS_TEST(bug_oom_manifest_load_loses_session)
{
    uint64_t k, bad = 0;
    for (k = 1; k < 300; k++) {
        ob_env b;
        ts_blob bl;
        int missed, have;
        ob_init(&b);
        ts_store_open("bug", &b.cfg, &b.s);
        ts_session_save(b.s, "{\"id\":\"m1\"}", 11, NULL);
        ts_session_save(b.s, "{\"id\":\"m2\"}", 11, NULL);
        ob_reopen(&b); /* clean close: the manifest is trusted */
        ob_arm(&b, k);
        ts_session_list(b.s, &bl);
        ts_blob_free(&bl);
        missed = ob_missed(&b);
        have = list_count(b.s, "m1") + list_count(b.s, "m2");
        if (have != 2) {
            if (!bad++) printf("  allocation %llu of a session list fails: the next list has %d of 2 sessions\n",
                               (unsigned long long)k, have);
        }
        ob_free(&b);
        if (missed) break;
    }
    TS_CHECK_EQ_INT(bad, 0);
}

/* BUG R10 (12_store): when the list cannot record a change (out of memory
   in ts__dir_set), the store frees it "to rebuild on demand" - from the
   manifest when the last close was clean, which predates the change: a
   session saved successfully is missing from the list (and from GC's
   marking), and the next clean close writes that list as the manifest. */
TS_TEST(bug_oom_lost_list_change_uses_stale_manifest)
{
    uint64_t k, bad = 0;
    for (k = 1; k < 300; k++) {
        ob_env b;
        ts_blob bl;
        ts_result r;
        int missed, have, after;
        ob_init(&b);
        ts_store_open("bug", &b.cfg, &b.s);
        ts_session_save(b.s, "{\"id\":\"a\"}", 10, NULL);
        ob_reopen(&b); /* clean: manifest = [a] */
        ts_session_list(b.s, &bl);
        ts_blob_free(&bl);
        ob_arm(&b, k);
        r = ts_session_save(b.s, "{\"id\":\"c\"}", 10, NULL);
        missed = ob_missed(&b);
        have = list_count(b.s, "c");
        ob_reopen(&b);
        after = list_count(b.s, "c");
        if (r == TS_OK && (have != 1 || after != 1)) {
            if (!bad++) printf("  allocation %llu of a save fails silently: the list %s the new session, after a "
                               "clean reopen it %s\n", (unsigned long long)k, have == 1 ? "has" : "misses",
                               after == 1 ? "has it" : "misses it");
        }
        ob_free(&b);
        if (missed) break;
    }
    TS_CHECK_EQ_INT(bad, 0);
}

int main(void)
{
    if (!getenv("TS_TORTURE_ONLY")) {
        TS_RUN(bug_oom_cache_key_leaves_stale_entry);
        TS_RUN(bug_oom_delete_leaves_ghost_in_cache);
        TS_RUN(bug_oom_name_list_wrong_free_size);
        TS_RUN(bug_oom_manifest_load_loses_session);
        TS_RUN(bug_oom_lost_list_change_uses_stale_manifest);
    }
    TS_RUN(test_oom_every_allocation);
    return ts_test_report("oom");
}
