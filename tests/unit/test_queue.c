/* Tests of the persistence queue (ts_queue) over the in-memory and
   fault-injecting vtables, with a fake clock and a recording vtable that
   logs every file operation the queue makes. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"
#include <stdint.h>

/* ---- fake clock ----------------------------------------------------------- */

static uint64_t tq_now_us;
static uint64_t tq_clock(void *user) { (void)user; return tq_now_us; }

/* ---- recording vtable: logs each operation, optionally advances the clock */

#define TQ_LOG_MAX 4096
typedef struct tq_op { char kind; char path[128]; } tq_op;
typedef struct tq_rec {
    ts_io inner;
    tq_op log[TQ_LOG_MAX];
    int n;                /* operations seen (also beyond TQ_LOG_MAX) */
    uint64_t advance_us;  /* added to the fake clock per write/remove */
} tq_rec;

static void tq_rec_add(tq_rec *r, char kind, const char *path)
{
    if (r->n < TQ_LOG_MAX) {
        r->log[r->n].kind = kind;
        snprintf(r->log[r->n].path, sizeof r->log[r->n].path, "%s", path);
    }
    r->n++;
}
static ts_result tq_rec_read(void *u, const char *p, void *b, size_t c, size_t *s)
{
    tq_rec *r = (tq_rec *)u;
    tq_rec_add(r, 'R', p);
    return r->inner.read_file_fn(r->inner.user, p, b, c, s);
}
static ts_result tq_rec_write(void *u, const char *p, const void *d, size_t n, unsigned fl)
{
    tq_rec *r = (tq_rec *)u;
    tq_rec_add(r, (fl & TS_WRITE_DEFER_DIRSYNC) ? 'W' : 'w', p);
    tq_now_us += r->advance_us;
    return r->inner.write_file_atomic_fn(r->inner.user, p, d, n, fl);
}
static ts_result tq_rec_remove(void *u, const char *p)
{
    tq_rec *r = (tq_rec *)u;
    tq_rec_add(r, 'D', p);
    tq_now_us += r->advance_us;
    return r->inner.remove_fn(r->inner.user, p);
}
static ts_result tq_rec_sync(void *u, const char *p)
{
    tq_rec *r = (tq_rec *)u;
    tq_rec_add(r, 'S', p);
    return r->inner.sync_dir_fn(r->inner.user, p);
}
static ts_result tq_rec_sync_all(void *u)
{
    tq_rec *r = (tq_rec *)u;
    tq_rec_add(r, 'A', "");
    return r->inner.sync_all_fn(r->inner.user);
}
static ts_result tq_rec_other(tq_rec *r, const char *p) { tq_rec_add(r, '?', p); return TS_E_NOTIMPL; }
static ts_result tq_rec_rename(void *u, const char *a, const char *b) { (void)b; return tq_rec_other((tq_rec *)u, a); }
static ts_result tq_rec_mkdir(void *u, const char *p) { return tq_rec_other((tq_rec *)u, p); }
static ts_result tq_rec_list(void *u, const char *p, ts_io_list_cb cb, void *ctx) { (void)cb; (void)ctx; return tq_rec_other((tq_rec *)u, p); }
static ts_result tq_rec_stat(void *u, const char *p, ts_io_stat *o) { memset(o, 0, sizeof *o); return tq_rec_other((tq_rec *)u, p); }
static ts_result tq_rec_lock(void *u, int l) { (void)l; return tq_rec_other((tq_rec *)u, "lock"); }
static ts_result tq_rec_stats(void *u, ts_io_counters *o)
{
    tq_rec *r = (tq_rec *)u;
    return r->inner.stats_fn ? r->inner.stats_fn(r->inner.user, o) : TS_E_NOTIMPL;
}

/* mem <- fault <- rec <- queue */
typedef struct tq_env {
    ts_io_mem *mem;
    ts_io mem_io;
    ts_io_fault *fault;
    ts_io fault_io;
    tq_rec *rec;
    ts_io io;
    ts_queue *q;
} tq_env;

/* events */
#define TQ_EV_MAX 256
typedef struct tq_ev { ts_queue_event_type type; uint64_t id; char path[64]; ts_result result; int coalesced; int ops_before; } tq_ev;
static tq_ev tq_evs[TQ_EV_MAX];
static int tq_nev;
static tq_env *tq_cur;
static int tq_reenter_result = 1;

static void tq_on_event(void *user, const ts_queue_event *ev)
{
    (void)user;
    if (tq_nev < TQ_EV_MAX) {
        tq_ev *e = &tq_evs[tq_nev];
        e->type = ev->type;
        e->id = ev->id;
        snprintf(e->path, sizeof e->path, "%s", ev->path);
        e->result = ev->result;
        e->coalesced = ev->coalesced;
        e->ops_before = tq_cur ? tq_cur->rec->n : 0;
    }
    tq_nev++;
    if (tq_cur && tq_reenter_result == 1) /* a callback must not re-enter */
        tq_reenter_result = (int)ts_queue_push(tq_cur->q, "x", "y", 1, TS_PRIO_NORMAL, NULL, NULL);
}

static ts_queue_config tq_config(void)
{
    ts_queue_config c;
    memset(&c, 0, sizeof c);
    c.clock_us_fn = tq_clock;
    c.event_fn = tq_on_event;
    return c;
}

static void tq_setup(tq_env *e, const ts_queue_config *cfg)
{
    ts_queue_config c = cfg ? *cfg : tq_config();
    memset(e, 0, sizeof *e);
    tq_now_us = 1000000;
    tq_nev = 0;
    tq_reenter_result = 1;
    TS_CHECK_OK(ts_io_mem_create(NULL, &e->mem));
    ts_io_mem_vtable(e->mem, &e->mem_io);
    TS_CHECK_OK(ts_io_fault_create(&e->mem_io, NULL, &e->fault));
    ts_io_fault_vtable(e->fault, &e->fault_io);
    e->rec = (tq_rec *)calloc(1, sizeof *e->rec);
    e->rec->inner = e->fault_io;
    e->io = e->fault_io;
    e->io.user = e->rec;
    e->io.read_file_fn = tq_rec_read;
    e->io.write_file_atomic_fn = tq_rec_write;
    e->io.remove_fn = tq_rec_remove;
    e->io.sync_dir_fn = tq_rec_sync;
    e->io.rename_fn = tq_rec_rename;
    e->io.mkdir_p_fn = tq_rec_mkdir;
    e->io.list_dir_fn = tq_rec_list;
    e->io.stat_fn = tq_rec_stat;
    e->io.lock_fn = tq_rec_lock;
    e->io.stats_fn = tq_rec_stats;
    e->io.sync_all_fn = tq_rec_sync_all; /* a wrapper must wrap it too (user differs) */
    TS_CHECK_OK(ts_queue_open(&e->io, &c, &e->q));
    tq_cur = e;
}

static void tq_teardown(tq_env *e)
{
    ts_queue_close(e->q);
    ts_io_fault_destroy(e->fault);
    ts_io_mem_destroy(e->mem);
    free(e->rec);
    tq_cur = NULL;
}

/* The file's bytes as a string ("" + rc TS_E_NOTFOUND when absent). */
static ts_result tq_read(tq_env *e, const char *path, char *buf, size_t cap)
{
    size_t n = 0;
    ts_result r = e->mem_io.read_file_fn(e->mem_io.user, path, buf, cap - 1, &n);
    if (r != TS_OK) n = 0;
    buf[n < cap - 1 ? n : cap - 1] = 0;
    return r;
}

static ts_io_counters tq_counters(tq_env *e)
{
    ts_io_counters c;
    ts_io_counters_get(&e->mem_io, &c);
    return c;
}

/* Counters since *base (then *base moves on). Directories are made with
   tq_mkdir first: the vtable counts a created directory as a dir sync. */
static ts_io_counters tq_delta(tq_env *e, ts_io_counters *base)
{
    ts_io_counters now = tq_counters(e), d;
    memset(&d, 0, sizeof d);
    d.writes = now.writes - base->writes;
    d.file_syncs = now.file_syncs - base->file_syncs;
    d.dir_syncs = now.dir_syncs - base->dir_syncs;
    d.removes = now.removes - base->removes;
    d.mkdirs = now.mkdirs - base->mkdirs;
    d.renames = now.renames - base->renames;
    d.fs_syncs = now.fs_syncs - base->fs_syncs;
    *base = now;
    return d;
}

static void tq_mkdir(tq_env *e, const char *path)
{
    TS_CHECK_OK(e->mem_io.mkdir_p_fn(e->mem_io.user, path));
}

static int tq_count_kind(tq_env *e, char kind)
{
    int i, n = 0;
    for (i = 0; i < e->rec->n && i < TQ_LOG_MAX; i++) n += e->rec->log[i].kind == kind;
    return n;
}

/* index of the first op of kind on path at or after `from`, or -1 */
static int tq_find_op(tq_env *e, char kind, const char *path, int from)
{
    int i;
    for (i = from; i < e->rec->n && i < TQ_LOG_MAX; i++)
        if (e->rec->log[i].kind == kind && !strcmp(e->rec->log[i].path, path)) return i;
    return -1;
}

static int tq_count_ev(ts_queue_event_type t)
{
    int i, n = 0;
    for (i = 0; i < tq_nev && i < TQ_EV_MAX; i++) n += tq_evs[i].type == t;
    return n;
}

/* ---- tests -------------------------------------------------------------------- */

TS_TEST(test_write_lookup_flush)
{
    tq_env e;
    char buf[64];
    const void *d;
    size_t n;
    uint64_t id = 0;
    tq_setup(&e, NULL);
    TS_CHECK_OK(ts_queue_push(e.q, "a/b.json", "hello", 5, TS_PRIO_NORMAL, NULL, &id));
    TS_CHECK(id != 0);
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "a/b.json", &d, &n), TS_OK);
    TS_CHECK_EQ_INT(n, 5);
    TS_CHECK(d && memcmp(d, "hello", 5) == 0);
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "a/c.json", &d, &n), TS_DONE);
    TS_CHECK(d == NULL && n == 0);
    TS_CHECK_EQ_INT(e.rec->n, 0);
    TS_CHECK_EQ_INT(tq_read(&e, "a/b.json", buf, sizeof buf), TS_E_NOTFOUND);
    TS_CHECK_OK(ts_queue_flush(e.q));
    TS_CHECK_OK(tq_read(&e, "a/b.json", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "hello");
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "a/b.json", &d, &n), TS_DONE);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    /* an empty write is a write */
    TS_CHECK_OK(ts_queue_push(e.q, "empty", NULL, 0, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "empty", &d, &n), TS_OK);
    TS_CHECK(d != NULL && n == 0);
    TS_CHECK_OK(ts_queue_tick(e.q, 0, 0));
    TS_CHECK_OK(tq_read(&e, "empty", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "");
    TS_CHECK_EQ_INT(tq_count_ev(TS_QUEUE_EV_COMPLETED), 2);
    tq_teardown(&e);
}

TS_TEST(test_invalid_args)
{
    tq_env e;
    ts_queue_req req;
    const char *afters[TS_QUEUE_MAX_AFTER + 1];
    size_t i;
    tq_setup(&e, NULL);
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "/abs", "x", 1, TS_PRIO_NORMAL, NULL, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "a/../b", "x", 1, TS_PRIO_NORMAL, NULL, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "", "x", 1, TS_PRIO_NORMAL, NULL, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_queue_push(e.q, NULL, "x", 1, TS_PRIO_NORMAL, NULL, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "a", NULL, 1, TS_PRIO_NORMAL, NULL, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "a", "x", 1, (ts_queue_priority)3, NULL, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "a", "x", 1, TS_PRIO_NORMAL, "bad//after", NULL), TS_E_INVALID);
    memset(&req, 0, sizeof req);
    req.op = (ts_queue_op)7;
    req.path = "a";
    TS_CHECK_EQ_INT(ts_queue_push_ex(e.q, &req, NULL), TS_E_INVALID);
    req.op = TS_QUEUE_WRITE;
    for (i = 0; i <= TS_QUEUE_MAX_AFTER; i++) afters[i] = "b";
    req.after = afters;
    req.after_count = TS_QUEUE_MAX_AFTER + 1;
    TS_CHECK_EQ_INT(ts_queue_push_ex(e.q, &req, NULL), TS_E_INVALID);
    req.after_count = TS_QUEUE_MAX_AFTER;
    TS_CHECK_OK(ts_queue_push_ex(e.q, &req, NULL));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);
    {
        ts_queue *q2 = e.q;
        TS_CHECK_EQ_INT(ts_queue_open(NULL, NULL, &q2), TS_E_INVALID);
        TS_CHECK(q2 == NULL);
    }
    TS_CHECK_EQ_INT(e.rec->n, 0);
    tq_teardown(&e);
    TS_CHECK_EQ_INT(ts_queue_tick(NULL, 0, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_queue_count(NULL), 0);
}

TS_TEST(test_coalescing_last_write_wins)
{
    tq_env e;
    char buf[64];
    int i;
    uint64_t first = 0, id = 0;
    ts_queue_stats st;
    ts_io_counters c, base;
    tq_setup(&e, NULL);
    tq_mkdir(&e, "s");
    base = tq_counters(&e);
    ts_queue_set_now(e.q, 1000);
    for (i = 0; i < 50; i++) {
        char v[16];
        snprintf(v, sizeof v, "v%d", i);
        TS_CHECK_OK(ts_queue_push(e.q, "s/metadata.json", v, strlen(v), TS_PRIO_NORMAL, NULL, &id));
        if (!i) first = id;
        TS_CHECK_EQ_INT(id, first);
        ts_queue_tick(e.q, 1000 + (uint64_t)i, 100000); /* inside the window: nothing written */
    }
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);
    TS_CHECK_EQ_INT(e.rec->n, 0);
    TS_CHECK_OK(ts_queue_tick(e.q, 1100, 100000));
    c = tq_delta(&e, &base);
    TS_CHECK_EQ_INT(c.writes, 1);
    TS_CHECK_EQ_INT(c.file_syncs, 1);
    TS_CHECK_EQ_INT(c.dir_syncs, 1);
    TS_CHECK_OK(tq_read(&e, "s/metadata.json", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "v49");
    ts_queue_get_stats(e.q, &st);
    TS_CHECK_EQ_INT(st.enqueued, 50);
    TS_CHECK_EQ_INT(st.coalesced, 49);
    TS_CHECK_EQ_INT(st.completed, 1);
    TS_CHECK_EQ_INT(st.file_writes, 1);
    TS_CHECK_EQ_INT(st.bytes_written, 3);
    TS_CHECK_EQ_INT(tq_count_ev(TS_QUEUE_EV_ENQUEUED), 50);
    TS_CHECK(tq_evs[1].coalesced && !tq_evs[0].coalesced);
    tq_teardown(&e);
}

TS_TEST(test_coalescing_priority_and_position)
{
    tq_env e;
    ts_queue_stats st;
    ts_queue_item_info info;
    size_t pos = 0;
    tq_setup(&e, NULL);
    ts_queue_set_now(e.q, 1000);
    TS_CHECK_OK(ts_queue_push(e.q, "low", "1", 1, TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "norm", "1", 1, TS_PRIO_NORMAL, NULL, NULL));
    ts_queue_set_now(e.q, 1050);
    /* a lower priority write keeps the higher priority and the first time */
    TS_CHECK_OK(ts_queue_push(e.q, "norm", "2", 1, TS_PRIO_LOW, NULL, NULL));
    /* a higher priority write promotes */
    TS_CHECK_OK(ts_queue_push(e.q, "low", "2", 1, TS_PRIO_NORMAL, NULL, NULL));
    ts_queue_get_stats(e.q, &st);
    TS_CHECK_EQ_INT(st.pending[TS_PRIO_LOW], 0);
    TS_CHECK_EQ_INT(st.pending[TS_PRIO_NORMAL], 2);
    while (ts_queue_next(e.q, &pos, &info) == TS_OK) {
        TS_CHECK_EQ_INT(info.enqueued_ms, 1000);
        TS_CHECK_EQ_INT(info.prio, TS_PRIO_NORMAL);
    }
    /* both are due at 1000 + 100 (the earlier enqueue), in enqueue order */
    TS_CHECK_OK(ts_queue_tick(e.q, 1099, 100000));
    TS_CHECK_EQ_INT(e.rec->n, 0);
    TS_CHECK_OK(ts_queue_tick(e.q, 1100, 100000));
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "low", 0), 0);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "norm", 0), 1);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'S', "", 0), 2);
    TS_CHECK_EQ_INT(e.rec->n, 3);
    /* critical over normal: written on the next tick */
    ts_queue_set_now(e.q, 2000);
    TS_CHECK_OK(ts_queue_push(e.q, "x", "1", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "x", "2", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_tick(e.q, 2001, 0));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    tq_teardown(&e);
}

TS_TEST(test_delete_and_read_your_writes)
{
    tq_env e;
    char buf[64];
    const void *d;
    size_t n;
    ts_queue_stats st;
    tq_setup(&e, NULL);
    TS_CHECK_OK(ts_io_mem_put(e.mem, "old.json", "disk", 4));
    /* a queued delete reads as absent before it reaches the disk */
    TS_CHECK_OK(ts_queue_delete(e.q, "old.json", TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "old.json", &d, &n), TS_E_NOTFOUND);
    TS_CHECK_OK(tq_read(&e, "old.json", buf, sizeof buf));
    /* write after delete: the write wins, in place */
    TS_CHECK_OK(ts_queue_push(e.q, "old.json", "new", 3, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "old.json", &d, &n), TS_OK);
    TS_CHECK(n == 3 && memcmp(d, "new", 3) == 0);
    /* delete after write: the delete wins */
    TS_CHECK_OK(ts_queue_push(e.q, "gone.json", "tmp", 3, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_delete(e.q, "gone.json", TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "gone.json", &d, &n), TS_E_NOTFOUND);
    /* deleting what is not there succeeds (its directory is still synced) */
    TS_CHECK_OK(ts_queue_delete(e.q, "never.json", TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 3);
    ts_queue_get_stats(e.q, &st);
    TS_CHECK_EQ_INT(st.coalesced, 2);
    TS_CHECK_OK(ts_queue_flush(e.q));
    TS_CHECK_OK(tq_read(&e, "old.json", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "new");
    TS_CHECK_EQ_INT(tq_read(&e, "gone.json", buf, sizeof buf), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 1);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'D'), 2);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'S'), 1);
    /* a real delete is synced */
    TS_CHECK_OK(ts_queue_delete(e.q, "old.json", TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_tick(e.q, 0, 0));
    TS_CHECK_EQ_INT(tq_read(&e, "old.json", buf, sizeof buf), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'S'), 2);
    ts_queue_get_stats(e.q, &st);
    TS_CHECK_EQ_INT(st.removes, 1);
    tq_teardown(&e);
}

TS_TEST(test_priority_order_and_windows)
{
    tq_env e;
    tq_setup(&e, NULL);
    ts_queue_set_now(e.q, 10000);
    TS_CHECK_OK(ts_queue_push(e.q, "low", "l", 1, TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "n1", "n", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "crit", "c", 1, TS_PRIO_CRITICAL, NULL, NULL));
    /* next tick: only the critical one */
    TS_CHECK_OK(ts_queue_tick(e.q, 10016, 1000000));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 1);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "crit", 0), 0);
    /* a normal item enqueued later has its own window */
    TS_CHECK_OK(ts_queue_push(e.q, "n2", "n", 1, TS_PRIO_NORMAL, NULL, NULL)); /* at 10016 */
    TS_CHECK_OK(ts_queue_tick(e.q, 10099, 1000000));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 1);
    TS_CHECK_OK(ts_queue_tick(e.q, 10100, 1000000));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 2);
    TS_CHECK(tq_find_op(&e, 'W', "n1", 0) > 0);
    TS_CHECK_OK(ts_queue_tick(e.q, 10115, 1000000));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 2);
    TS_CHECK_OK(ts_queue_tick(e.q, 10116, 1000000));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 3);
    /* low waits for idle, however old */
    TS_CHECK_OK(ts_queue_tick(e.q, 99999, 1000000));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 3);
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 100000, 1000000), TS_DONE);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 4);
    TS_CHECK(tq_find_op(&e, 'W', "low", 0) > 0);
    /* idle also writes critical and due normal items, in sequence order */
    TS_CHECK_OK(ts_queue_push(e.q, "b", "n", 1, TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "a", "n", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 100001, 1000000), TS_DONE);
    TS_CHECK(tq_find_op(&e, 'W', "a", 0) > 0 && tq_find_op(&e, 'W', "b", 0) > 0);
    tq_teardown(&e);
}

TS_TEST(test_budget)
{
    tq_env e;
    int i;
    ts_queue_stats st;
    tq_setup(&e, NULL);
    e.rec->advance_us = 1000; /* each write takes 1 ms of fake time */
    ts_queue_set_now(e.q, 0);
    for (i = 0; i < 10; i++) {
        char p[16];
        snprintf(p, sizeof p, "n%d", i);
        TS_CHECK_OK(ts_queue_push(e.q, p, "x", 1, TS_PRIO_NORMAL, NULL, NULL));
    }
    TS_CHECK_OK(ts_queue_push(e.q, "c1", "x", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "c2", "x", 1, TS_PRIO_CRITICAL, NULL, NULL));
    /* 2.5 ms: the two critical ones regardless (they go first), then normal
       ones until the budget is spent: checks at 2, then 3 ms of elapsed time */
    TS_CHECK_OK(ts_queue_tick(e.q, 100, 2500));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 3);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "c1", 0), 0);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "c2", 0), 1);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "n0", 0), 2);
    /* budget 0: critical only */
    TS_CHECK_OK(ts_queue_tick(e.q, 101, 0));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 3);
    TS_CHECK_OK(ts_queue_tick(e.q, 102, 4500));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 8);
    /* without a clock, every write is charged nominal_write_us (1000) */
    e.q->clock_fn = NULL;
    TS_CHECK_OK(ts_queue_tick(e.q, 103, 1500));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 10);
    TS_CHECK_OK(ts_queue_tick(e.q, 104, 500));
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 11);
    ts_queue_get_stats(e.q, &st);
    TS_CHECK_EQ_INT(st.pending[TS_PRIO_NORMAL], 1);
    TS_CHECK_EQ_INT(st.batches, 4);
    TS_CHECK_EQ_INT(st.largest_batch, 5);
    TS_CHECK(st.write_time_us >= 8000);
    tq_teardown(&e);
}

TS_TEST(test_sync_budget_one_directory)
{
    tq_env e;
    int i;
    ts_io_counters c, base;
    ts_queue_stats st;
    tq_setup(&e, NULL);
    tq_mkdir(&e, "sessions-chunked/s1/screenshots");
    tq_mkdir(&e, "a");
    tq_mkdir(&e, "b");
    base = tq_counters(&e);
    ts_queue_set_now(e.q, 0);
    for (i = 0; i < 10; i++) {
        char p[64];
        snprintf(p, sizeof p, "sessions-chunked/s1/screenshots/chunk-%03d.json", i);
        TS_CHECK_OK(ts_queue_push(e.q, p, "[]", 2, TS_PRIO_NORMAL, NULL, NULL));
    }
    TS_CHECK_OK(ts_queue_tick(e.q, 100, 1000000));
    c = tq_delta(&e, &base);
    TS_CHECK_EQ_INT(c.writes, 10);
    TS_CHECK_EQ_INT(c.file_syncs, 10);
    TS_CHECK_EQ_INT(c.dir_syncs, 1);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 10); /* every write deferred its dir sync */
    TS_CHECK_EQ_INT(tq_find_op(&e, 'S', "sessions-chunked/s1/screenshots", 0), 10);
    /* completions are reported only after the directory sync */
    for (i = 0; i < tq_nev && i < TQ_EV_MAX; i++)
        if (tq_evs[i].type == TS_QUEUE_EV_COMPLETED) TS_CHECK_EQ_INT(tq_evs[i].ops_before, 11);
    TS_CHECK_EQ_INT(tq_count_ev(TS_QUEUE_EV_COMPLETED), 10);
    ts_queue_get_stats(e.q, &st);
    TS_CHECK_EQ_INT(st.batches, 1);
    TS_CHECK_EQ_INT(st.largest_batch, 10);
    TS_CHECK_EQ_INT(st.dir_syncs, 1);
    /* three directories: one sync each */
    TS_CHECK_OK(ts_queue_push(e.q, "a/1", "x", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "b/1", "x", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "a/2", "x", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "top", "x", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "b/2", "x", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_tick(e.q, 200, 0));
    c = tq_delta(&e, &base);
    TS_CHECK_EQ_INT(c.writes, 5);
    TS_CHECK_EQ_INT(c.file_syncs, 5);
    TS_CHECK_EQ_INT(c.dir_syncs, 3);
    TS_CHECK(tq_find_op(&e, 'S', "a", 0) > 0 && tq_find_op(&e, 'S', "b", 0) > 0 && tq_find_op(&e, 'S', "", 0) > 0);
    tq_teardown(&e);
}

TS_TEST(test_dependency_order)
{
    tq_env e;
    int w_chunk, s_chunk, w_meta, s_meta;
    ts_io_counters c, base;
    const char *chunk = "sessions-chunked/s1/screenshots/chunk-000.json";
    const char *meta = "sessions-chunked/s1/metadata.json";
    tq_setup(&e, NULL);
    tq_mkdir(&e, "sessions-chunked/s1/screenshots");
    base = tq_counters(&e);
    ts_queue_set_now(e.q, 0);
    TS_CHECK_OK(ts_queue_push(e.q, chunk, "[1]", 3, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, meta, "{1}", 3, TS_PRIO_NORMAL, chunk, NULL));
    TS_CHECK_OK(ts_queue_tick(e.q, 100, 1000000));
    w_chunk = tq_find_op(&e, 'W', chunk, 0);
    s_chunk = tq_find_op(&e, 'S', "sessions-chunked/s1/screenshots", 0);
    w_meta = tq_find_op(&e, 'W', meta, 0);
    s_meta = tq_find_op(&e, 'S', "sessions-chunked/s1", 0);
    TS_CHECK(w_chunk == 0 && s_chunk == 1 && w_meta == 2 && s_meta == 3);
    c = tq_delta(&e, &base);
    TS_CHECK_EQ_INT(c.writes, 2);
    TS_CHECK_EQ_INT(c.file_syncs, 2);
    TS_CHECK_EQ_INT(c.dir_syncs, 2);
    /* the dependent is critical, its dependency low: pulled into the same
       tick, written first */
    e.rec->n = 0;
    TS_CHECK_OK(ts_queue_push(e.q, chunk, "[1,2]", 5, TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, meta, "{2}", 3, TS_PRIO_CRITICAL, chunk, NULL));
    TS_CHECK_OK(ts_queue_tick(e.q, 101, 0));
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', chunk, 0), 0);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'S', "sessions-chunked/s1/screenshots", 0), 1);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', meta, 0), 2);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    /* same directory: the dependency's directory is synced between them */
    e.rec->n = 0;
    TS_CHECK_OK(ts_queue_push(e.q, "d/data.bin", "bytes", 5, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "d/metadata.json", "{}", 2, TS_PRIO_NORMAL, "d/data.bin", NULL));
    TS_CHECK_OK(ts_queue_flush(e.q));
    TS_CHECK_EQ_INT(e.rec->n, 4);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "d/data.bin", 0), 0);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'S', "d", 0), 1);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "d/metadata.json", 0), 2);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'S', "d", 2), 3);
    /* an after-path with nothing queued is already durable */
    TS_CHECK_OK(ts_queue_push(e.q, "d/metadata.json", "{1}", 3, TS_PRIO_CRITICAL, "nothing/here", NULL));
    TS_CHECK_OK(ts_queue_tick(e.q, 102, 0));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    tq_teardown(&e);
}

/* Coalescing must not let an item jump ahead of what it must follow. */
TS_TEST(test_coalescing_with_dependencies)
{
    tq_env e;
    char buf[64];
    const void *d;
    size_t n;
    uint64_t a1 = 0, a2 = 0, b = 0;
    ts_queue_req req;
    const char *afters[2];
    tq_setup(&e, NULL);
    ts_queue_set_now(e.q, 0);
    /* m waits; x waits on m; then c1, c2 are queued */
    TS_CHECK_OK(ts_queue_push(e.q, "m", "x", 1, TS_PRIO_NORMAL, NULL, &b));
    TS_CHECK_OK(ts_queue_push(e.q, "x", "x", 1, TS_PRIO_NORMAL, "m", NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "c1", "1", 1, TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "c2", "2", 1, TS_PRIO_LOW, NULL, NULL));
    /* m's new dependency is younger: m (and x, which waits on m) move
       behind it, still one item each */
    TS_CHECK_OK(ts_queue_push(e.q, "m", "y", 1, TS_PRIO_NORMAL, "c1", &a1));
    TS_CHECK_EQ_INT(a1, b);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 4);
    /* coalescing again: the union of dependencies {c1, c2} */
    memset(&req, 0, sizeof req);
    req.op = TS_QUEUE_WRITE; req.path = "m"; req.data = "z"; req.len = 1; req.prio = TS_PRIO_CRITICAL;
    afters[0] = "c2"; afters[1] = "c1";
    req.after = afters; req.after_count = 2;
    TS_CHECK_OK(ts_queue_push_ex(e.q, &req, &a2));
    TS_CHECK_EQ_INT(a1, a2);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 4);
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "m", &d, &n), TS_OK);
    TS_CHECK(n == 1 && *(const char *)d == 'z');
    TS_CHECK_OK(ts_queue_tick(e.q, 1, 0));       /* critical m pulls c1 and c2 (low) */
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);     /* x is normal: its window is open */
    TS_CHECK_OK(tq_read(&e, "m", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "z");
    {
        int wc1 = tq_find_op(&e, 'W', "c1", 0), wc2 = tq_find_op(&e, 'W', "c2", 0);
        int wm = tq_find_op(&e, 'W', "m", 0);
        TS_CHECK(wc1 >= 0 && wc2 >= 0 && wm > wc1 && wm > wc2);
        TS_CHECK(tq_find_op(&e, 'S', "", wc1 > wc2 ? wc1 : wc2) < wm);
        TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 3);
    }
    TS_CHECK_OK(ts_queue_flush(e.q));
    TS_CHECK(tq_find_op(&e, 'W', "x", 0) > tq_find_op(&e, 'W', "m", 0));
    /* the A/B cycle: a, then b after a, then a again after b */
    e.rec->n = 0;
    TS_CHECK_OK(ts_queue_push(e.q, "A", "a1", 2, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "B", "b1", 2, TS_PRIO_NORMAL, "A", &b));
    TS_CHECK_OK(ts_queue_push(e.q, "A", "a2", 2, TS_PRIO_NORMAL, "B", NULL));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 3);
    TS_CHECK_OK(ts_queue_flush(e.q));
    {
        int wa1 = tq_find_op(&e, 'W', "A", 0), wb = tq_find_op(&e, 'W', "B", 0);
        int wa2 = tq_find_op(&e, 'W', "A", wa1 + 1);
        TS_CHECK(wa1 >= 0 && wb > wa1 && wa2 > wb);
        TS_CHECK(tq_find_op(&e, 'S', "", wa1) < wb && tq_find_op(&e, 'S', "", wb) < wa2);
    }
    TS_CHECK_OK(tq_read(&e, "A", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "a2");
    /* coalescing with an older dependency stays in place */
    TS_CHECK_OK(ts_queue_push(e.q, "P", "p", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "Q", "q", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "Q", "q2", 2, TS_PRIO_NORMAL, "P", NULL));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 2);
    TS_CHECK_OK(ts_queue_clear(e.q));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "Q", &d, &n), TS_DONE);
    tq_teardown(&e);
}

TS_TEST(test_zero_io_on_enqueue)
{
    tq_env e;
    ts_queue_config c = tq_config();
    ts_io_counters ctr;
    int i;
    c.capacity[TS_PRIO_NORMAL] = 10000;
    c.event_fn = NULL;
    tq_setup(&e, &c);
    for (i = 0; i < 10000; i++) {
        char p[64];
        const char *prev = NULL;
        char pp[64];
        snprintf(p, sizeof p, "sessions-chunked/s%d/screenshots/chunk-%03d.json", i % 50, i / 50);
        if (i >= 50) {
            snprintf(pp, sizeof pp, "sessions-chunked/s%d/screenshots/chunk-%03d.json", i % 50, i / 50 - 1);
            prev = pp;
        }
        TS_CHECK_OK(ts_queue_push(e.q, p, p, strlen(p), TS_PRIO_NORMAL, prev, NULL));
        /* and a coalescing rewrite of the session metadata */
        snprintf(p, sizeof p, "sessions-chunked/s%d/metadata.json", i % 50);
        TS_CHECK_OK(ts_queue_push(e.q, p, "{}", 2, TS_PRIO_CRITICAL, NULL, NULL));
    }
    ctr = tq_counters(&e);
    TS_CHECK_EQ_INT(e.rec->n, 0);
    TS_CHECK_EQ_INT(ts_io_fault_ops(e.fault), 0);
    TS_CHECK_EQ_INT(ctr.writes + ctr.reads + ctr.dir_syncs + ctr.removes + ctr.stats, 0);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 10050);
    TS_CHECK_OK(ts_queue_flush(e.q));
    ctr = tq_counters(&e);
    TS_CHECK_EQ_INT(ctr.writes, 10050);
    tq_teardown(&e);
}

TS_TEST(test_back_pressure)
{
    tq_env e;
    ts_queue_config c = tq_config();
    ts_queue_stats st;
    int i;
    char buf[16];
    c.capacity[TS_PRIO_NORMAL] = 4;
    c.busy_error = 1;
    tq_setup(&e, &c);
    for (i = 0; i < 4; i++) {
        char p[16];
        snprintf(p, sizeof p, "f%d", i);
        TS_CHECK_OK(ts_queue_push(e.q, p, "x", 1, TS_PRIO_NORMAL, NULL, NULL));
    }
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "f4", "x", 1, TS_PRIO_NORMAL, NULL, NULL), TS_E_BUSY);
    /* coalescing needs no slot; other rings are separate */
    TS_CHECK_OK(ts_queue_push(e.q, "f1", "y", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "f4", "x", 1, TS_PRIO_LOW, NULL, NULL));
    /* promotion into a full ring is refused too */
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "f4", "x", 1, TS_PRIO_NORMAL, NULL, NULL), TS_E_BUSY);
    TS_CHECK_EQ_INT(e.rec->n, 0);
    /* explicit growth */
    TS_CHECK_OK(ts_queue_reserve(e.q, TS_PRIO_NORMAL, 8));
    TS_CHECK_OK(ts_queue_push(e.q, "f4", "x", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "f5", "x", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 6);
    tq_teardown(&e);

    /* the default: flush synchronously, then enqueue */
    c.busy_error = 0;
    tq_setup(&e, &c);
    for (i = 0; i < 4; i++) {
        char p[16];
        snprintf(p, sizeof p, "f%d", i);
        TS_CHECK_OK(ts_queue_push(e.q, p, "x", 1, TS_PRIO_NORMAL, NULL, NULL));
    }
    TS_CHECK_OK(ts_queue_push(e.q, "f4", "x", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);
    TS_CHECK_OK(tq_read(&e, "f3", buf, sizeof buf));
    ts_queue_get_stats(e.q, &st);
    TS_CHECK_EQ_INT(st.sync_flushes, 1);
    TS_CHECK_EQ_INT(st.file_writes, 4);
    /* a ring full of failed items cannot be flushed: the push reports the
       disk error that stopped the flush (this queue did not ask for BUSY) */
    {
        ts_fault_plan plan;
        memset(&plan, 0, sizeof plan);
        plan.fail_at = ts_io_fault_ops(e.fault) + 1;
        plan.fail_count = 1000;
        ts_io_fault_set(e.fault, &plan);
    }
    for (i = 5; i < 8; i++) {
        char p[16];
        snprintf(p, sizeof p, "f%d", i);
        TS_CHECK_OK(ts_queue_push(e.q, p, "x", 1, TS_PRIO_NORMAL, NULL, NULL));
    }
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "f9", "x", 1, TS_PRIO_NORMAL, NULL, NULL), TS_E_IO);
    TS_CHECK_EQ_INT(ts_queue_failed_count(e.q), 4);
    ts_io_fault_reset(e.fault);
    TS_CHECK_OK(ts_queue_failed_retry(e.q, 5));
    TS_CHECK_OK(ts_queue_push(e.q, "f9", "x", 1, TS_PRIO_NORMAL, NULL, NULL));
    tq_teardown(&e);
}

TS_TEST(test_retries_and_backoff)
{
    tq_env e;
    ts_fault_plan plan;
    ts_queue_stats st;
    ts_queue_item_info info;
    char buf[16];
    const void *d;
    size_t n;
    uint64_t id = 0;
    tq_setup(&e, NULL);
    ts_queue_set_now(e.q, 1000);
    memset(&plan, 0, sizeof plan);
    plan.fail_at = 1;       /* the first write fails */
    ts_io_fault_set(e.fault, &plan);
    TS_CHECK_OK(ts_queue_push(e.q, "n", "v", 1, TS_PRIO_NORMAL, NULL, &id));
    TS_CHECK_OK(ts_queue_tick(e.q, 1100, 1000000));
    TS_CHECK_EQ_INT(tq_count_ev(TS_QUEUE_EV_RETRY), 1);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);
    TS_CHECK_OK(ts_queue_tick(e.q, 1149, 1000000)); /* backoff 50 ms */
    TS_CHECK_EQ_INT(e.rec->n, 1);
    TS_CHECK_OK(ts_queue_tick(e.q, 1150, 1000000));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    TS_CHECK_OK(tq_read(&e, "n", buf, sizeof buf));

    /* normal: 4 attempts, then failed; backoff doubles: 50, 100, 200 */
    plan.fail_at = ts_io_fault_ops(e.fault) + 1;
    plan.fail_count = 100;
    plan.fail_with = TS_E_NOSPACE;
    ts_io_fault_set(e.fault, &plan);
    tq_nev = 0;
    TS_CHECK_OK(ts_queue_push(e.q, "m", "v2", 2, TS_PRIO_NORMAL, NULL, &id));
    TS_CHECK_OK(ts_queue_tick(e.q, 1250, 1000000));
    TS_CHECK_OK(ts_queue_tick(e.q, 1299, 1000000));
    TS_CHECK_OK(ts_queue_tick(e.q, 1300, 1000000));
    TS_CHECK_OK(ts_queue_tick(e.q, 1399, 1000000));
    TS_CHECK_OK(ts_queue_tick(e.q, 1400, 1000000));
    TS_CHECK_EQ_INT(tq_count_ev(TS_QUEUE_EV_RETRY), 3);
    TS_CHECK_EQ_INT(ts_queue_failed_count(e.q), 0);
    TS_CHECK_OK(ts_queue_tick(e.q, 1599, 1000000));
    TS_CHECK_EQ_INT(ts_queue_tick(e.q, 1600, 1000000), TS_E_NOSPACE);
    TS_CHECK_EQ_INT(tq_count_ev(TS_QUEUE_EV_FAILED), 1);
    TS_CHECK_EQ_INT(tq_count_ev(TS_QUEUE_EV_PROCESSING), 4);
    TS_CHECK_EQ_INT(ts_queue_failed_count(e.q), 1);
    TS_CHECK_OK(ts_queue_failed_get(e.q, 0, &info));
    TS_CHECK_EQ_INT(info.id, id);
    TS_CHECK_EQ_STR(info.path, "m");
    TS_CHECK_EQ_INT(info.attempts, 4);
    TS_CHECK_EQ_INT(info.result, TS_E_NOSPACE);
    TS_CHECK(info.failed);
    TS_CHECK_EQ_INT(ts_queue_failed_get(e.q, 1, &info), TS_E_RANGE);
    /* never silently discarded: still readable, still counted, flush says so */
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "m", &d, &n), TS_OK);
    TS_CHECK_EQ_INT(ts_queue_tick(e.q, 5000, 1000000), TS_OK);  /* not retried by itself */
    TS_CHECK_EQ_INT(ts_queue_flush(e.q), TS_E_NOSPACE);
    ts_queue_get_stats(e.q, &st);
    TS_CHECK_EQ_INT(st.failed, 1);
    TS_CHECK_EQ_INT(st.failed_items, 1);
    TS_CHECK_EQ_INT(st.pending[TS_PRIO_NORMAL], 0);
    TS_CHECK_EQ_INT(ts_queue_shutdown(e.q), TS_E_NOSPACE); /* stays open */
    /* retry once the disk is back */
    ts_io_fault_reset(e.fault);
    TS_CHECK_EQ_INT(ts_queue_failed_retry(e.q, id + 100), TS_E_NOTFOUND);
    TS_CHECK_OK(ts_queue_failed_retry(e.q, id));
    TS_CHECK_EQ_INT(ts_queue_failed_count(e.q), 0);
    TS_CHECK_OK(ts_queue_tick(e.q, 5001, 1000000));
    TS_CHECK_OK(tq_read(&e, "m", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "v2");

    /* critical: 2 attempts; low: 6 (flush ignores backoff) */
    plan.fail_at = ts_io_fault_ops(e.fault) + 1;
    plan.fail_count = 100;
    plan.fail_with = TS_E_IO;
    ts_io_fault_set(e.fault, &plan);
    tq_nev = 0;
    TS_CHECK_OK(ts_queue_push(e.q, "c", "c", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "l", "l", 1, TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_flush(e.q), TS_E_IO);
    TS_CHECK_EQ_INT(ts_queue_failed_count(e.q), 2);
    TS_CHECK_OK(ts_queue_failed_get(e.q, 0, &info));
    TS_CHECK_EQ_STR(info.path, "c");
    TS_CHECK_EQ_INT(info.attempts, 2);
    TS_CHECK_OK(ts_queue_failed_get(e.q, 1, &info));
    TS_CHECK_EQ_STR(info.path, "l");
    TS_CHECK_EQ_INT(info.attempts, 6);
    /* drop one: gone from the overlay; coalesce into the other: revived */
    TS_CHECK_OK(ts_queue_failed_drop(e.q, info.id));
    TS_CHECK_EQ_INT(ts_queue_failed_drop(e.q, info.id), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "l", &d, &n), TS_DONE);
    ts_io_fault_reset(e.fault);
    TS_CHECK_OK(ts_queue_push(e.q, "c", "c2", 2, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_failed_count(e.q), 0);
    TS_CHECK_OK(ts_queue_shutdown(e.q));
    e.q = NULL;
    TS_CHECK_OK(tq_read(&e, "c", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "c2");
    tq_teardown(&e);
}

/* A failed directory sync is not retried on its own: the whole replace is
   redone from the queued bytes. */
TS_TEST(test_failed_sync_redoes_replace)
{
    tq_env e;
    ts_fault_plan plan;
    char buf[16];
    tq_setup(&e, NULL);
    ts_queue_set_now(e.q, 0);
    TS_CHECK_OK(ts_queue_push(e.q, "d/a", "A", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "d/b", "B", 1, TS_PRIO_NORMAL, NULL, NULL));
    memset(&plan, 0, sizeof plan);
    plan.fail_at = 3;       /* write, write, sync_dir <- fails */
    ts_io_fault_set(e.fault, &plan);
    TS_CHECK_OK(ts_queue_tick(e.q, 100, 1000000));
    TS_CHECK_EQ_INT(tq_count_ev(TS_QUEUE_EV_COMPLETED), 0);
    TS_CHECK_EQ_INT(tq_count_ev(TS_QUEUE_EV_RETRY), 2);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 2);
    TS_CHECK_OK(ts_queue_tick(e.q, 150, 1000000));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 4);   /* both rewritten */
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'S'), 2);
    TS_CHECK_OK(tq_read(&e, "d/b", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "B");
    /* a delete whose directory sync failed: the retry finds the file gone
       from the live view, but still syncs, so the removal survives a crash */
    TS_CHECK_OK(ts_queue_delete(e.q, "d/a", TS_PRIO_CRITICAL, NULL, NULL));
    plan.fail_at = ts_io_fault_ops(e.fault) + 2;   /* remove, sync_dir <- fails */
    ts_io_fault_set(e.fault, &plan);
    TS_CHECK_OK(ts_queue_tick(e.q, 200, 0));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);
    TS_CHECK_EQ_INT(tq_read(&e, "d/a", buf, sizeof buf), TS_E_NOTFOUND);
    TS_CHECK_OK(ts_queue_tick(e.q, 250, 0));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'D'), 2);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'S'), 4);
    ts_io_mem_crash(e.mem, TS_CRASH_DROP_UNSYNCED, 1);
    TS_CHECK_EQ_INT(tq_read(&e, "d/a", buf, sizeof buf), TS_E_NOTFOUND);
    TS_CHECK_OK(tq_read(&e, "d/b", buf, sizeof buf));
    tq_teardown(&e);
}

TS_TEST(test_failed_dependency_blocks_dependents)
{
    tq_env e;
    ts_fault_plan plan;
    ts_queue_item_info info;
    char buf[16];
    tq_setup(&e, NULL);
    ts_queue_set_now(e.q, 0);
    memset(&plan, 0, sizeof plan);
    plan.fail_at = 1;
    plan.fail_count = 4;    /* the chunk fails all its 4 attempts */
    ts_io_fault_set(e.fault, &plan);
    TS_CHECK_OK(ts_queue_push(e.q, "s/c/chunk-000.json", "[1]", 3, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "s/metadata.json", "{1}", 3, TS_PRIO_NORMAL, "s/c/chunk-000.json", NULL));
    TS_CHECK_EQ_INT(ts_queue_flush(e.q), TS_E_IO);
    TS_CHECK_EQ_INT(ts_io_fault_ops(e.fault), 4);
    TS_CHECK_EQ_INT(ts_queue_failed_count(e.q), 1);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 2);       /* the metadata waits */
    /* unrelated writes still go; flush still reports the failure */
    TS_CHECK_OK(ts_queue_push(e.q, "other", "o", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_flush(e.q), TS_E_IO);
    TS_CHECK_EQ_INT(tq_read(&e, "s/metadata.json", buf, sizeof buf), TS_E_NOTFOUND);
    TS_CHECK_OK(tq_read(&e, "other", buf, sizeof buf));
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "s/metadata.json", 0), -1);
    TS_CHECK_OK(ts_queue_tick(e.q, 10000, 1000000));
    TS_CHECK_EQ_INT(tq_find_op(&e, 'W', "s/metadata.json", 0), -1);
    /* the app retries: both go, in order */
    TS_CHECK_OK(ts_queue_failed_get(e.q, 0, &info));
    TS_CHECK_OK(ts_queue_failed_retry(e.q, info.id));
    TS_CHECK_OK(ts_queue_flush(e.q));
    TS_CHECK(tq_find_op(&e, 'W', "s/metadata.json", 0) > tq_find_op(&e, 'S', "s/c", 0));
    TS_CHECK_OK(tq_read(&e, "s/metadata.json", buf, sizeof buf));
    /* or drops the dependency: the dependent is released */
    plan.fail_at = ts_io_fault_ops(e.fault) + 1;
    plan.fail_count = 2;
    ts_io_fault_set(e.fault, &plan);
    TS_CHECK_OK(ts_queue_push(e.q, "x/dep", "d", 1, TS_PRIO_CRITICAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "x/meta", "m", 1, TS_PRIO_CRITICAL, "x/dep", NULL));
    TS_CHECK_EQ_INT(ts_queue_tick(e.q, 10001, 0), TS_OK);     /* first attempt: retry */
    TS_CHECK_EQ_INT(ts_queue_tick(e.q, 10051, 0), TS_E_IO);   /* second: failed */
    TS_CHECK_OK(ts_queue_failed_get(e.q, 0, &info));
    TS_CHECK_EQ_STR(info.path, "x/dep");
    TS_CHECK_OK(ts_queue_failed_drop(e.q, info.id));
    TS_CHECK_OK(ts_queue_tick(e.q, 10052, 0));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    TS_CHECK_OK(tq_read(&e, "x/meta", buf, sizeof buf));
    TS_CHECK_EQ_INT(tq_read(&e, "x/dep", buf, sizeof buf), TS_E_NOTFOUND);
    tq_teardown(&e);
}

TS_TEST(test_events_and_reentry)
{
    tq_env e;
    uint64_t id = 0;
    tq_setup(&e, NULL);
    TS_CHECK_OK(ts_queue_push(e.q, "e/1", "x", 1, TS_PRIO_CRITICAL, NULL, &id));
    TS_CHECK_EQ_INT(tq_reenter_result, TS_E_STATE);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);
    TS_CHECK_OK(ts_queue_tick(e.q, 0, 0));
    TS_CHECK_EQ_INT(tq_nev, 3);
    TS_CHECK_EQ_INT(tq_evs[0].type, TS_QUEUE_EV_ENQUEUED);
    TS_CHECK_EQ_INT(tq_evs[1].type, TS_QUEUE_EV_PROCESSING);
    TS_CHECK_EQ_INT(tq_evs[2].type, TS_QUEUE_EV_COMPLETED);
    TS_CHECK_EQ_INT(tq_evs[2].id, id);
    TS_CHECK_EQ_STR(tq_evs[2].path, "e/1");
    TS_CHECK_EQ_INT(tq_evs[2].ops_before, 2);     /* after the write and the dir sync */
    tq_teardown(&e);
}

/* A vtable whose directory syncs are no-ops (or missing): plain writes,
   each complete at once. */
TS_TEST(test_no_dirsync_vtable)
{
    tq_env e;
    int pass;
    for (pass = 0; pass < 2; pass++) {
        tq_setup(&e, NULL);
        ts_queue_close(e.q);
        if (pass == 0) e.io.caps |= TS_IO_CAP_NO_DIRSYNC;
        else e.io.sync_dir_fn = NULL;
        TS_CHECK_OK(ts_queue_open(&e.io, NULL, &e.q));
        TS_CHECK_OK(ts_queue_push(e.q, "d/a", "1", 1, TS_PRIO_CRITICAL, NULL, NULL));
        TS_CHECK_OK(ts_queue_push(e.q, "d/b", "2", 1, TS_PRIO_CRITICAL, "d/a", NULL));
        TS_CHECK_OK(ts_queue_tick(e.q, 0, 0));
        TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
        TS_CHECK_EQ_INT(tq_count_kind(&e, 'w'), 2);   /* without TS_WRITE_DEFER_DIRSYNC */
        TS_CHECK_EQ_INT(tq_count_kind(&e, 'W') + tq_count_kind(&e, 'S'), 0);
        TS_CHECK(tq_find_op(&e, 'w', "d/a", 0) < tq_find_op(&e, 'w', "d/b", 0));
        tq_teardown(&e);
    }
}

/* Growing a ring whose contents wrap around keeps their order. */
TS_TEST(test_reserve_wrapped_ring)
{
    tq_env e;
    ts_queue_config c = tq_config();
    int i;
    c.capacity[TS_PRIO_LOW] = 4;
    c.busy_error = 1;
    tq_setup(&e, &c);
    for (i = 0; i < 4; i++) {
        char p[8];
        snprintf(p, sizeof p, "o%d", i);
        TS_CHECK_OK(ts_queue_push(e.q, p, "x", 1, TS_PRIO_LOW, NULL, NULL));
    }
    /* write the first three (the budget allows three checks) */
    e.rec->advance_us = 1000;
    TS_CHECK_OK(ts_queue_idle(e.q, 1, 2500));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);
    for (i = 4; i < 7; i++) {       /* these wrap around the ring's end */
        char p[8];
        snprintf(p, sizeof p, "o%d", i);
        TS_CHECK_OK(ts_queue_push(e.q, p, "x", 1, TS_PRIO_LOW, NULL, NULL));
    }
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "o7", "x", 1, TS_PRIO_LOW, NULL, NULL), TS_E_BUSY);
    TS_CHECK_OK(ts_queue_reserve(e.q, TS_PRIO_LOW, 6));
    TS_CHECK_OK(ts_queue_reserve(e.q, TS_PRIO_LOW, 5));  /* never shrinks */
    TS_CHECK_OK(ts_queue_push(e.q, "o7", "x", 1, TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "o8", "x", 1, TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "o9", "x", 1, TS_PRIO_LOW, NULL, NULL), TS_E_BUSY);
    e.rec->n = 0;
    TS_CHECK_OK(ts_queue_flush(e.q));
    for (i = 3; i < 9; i++) {
        char p[8];
        snprintf(p, sizeof p, "o%d", i);
        TS_CHECK_EQ_INT(tq_find_op(&e, 'W', p, 0), i - 3);
    }
    TS_CHECK_EQ_INT(ts_queue_reserve(e.q, (ts_queue_priority)5, 8), TS_E_INVALID);
    tq_teardown(&e);
}

/* Retries are logged as warnings; the last failure is an error and the
   queue's last error. */
static int tq_log_warn, tq_log_error;
static void tq_log(void *user, ts_log_level level, ts_result code, const char *msg, int line)
{
    (void)user; (void)code; (void)msg; (void)line;
    if (level == TS_LOG_WARN) tq_log_warn++;
    if (level == TS_LOG_ERROR) tq_log_error++;
}

TS_TEST(test_logging_and_last_error)
{
    tq_env e;
    ts_queue_config c = tq_config();
    ts_fault_plan plan;
    ts_error_info info;
    c.logger.log_fn = tq_log;
    tq_log_warn = tq_log_error = 0;
    tq_setup(&e, &c);
    tq_reenter_result = 0;
    memset(&plan, 0, sizeof plan);
    plan.fail_at = 1;
    plan.fail_count = 10;
    ts_io_fault_set(e.fault, &plan);
    TS_CHECK_OK(ts_queue_push(e.q, "x/y", "1", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_EQ_INT(ts_queue_last_error(e.q, &info), TS_OK);
    TS_CHECK_EQ_INT(ts_queue_flush(e.q), TS_E_IO);
    TS_CHECK_EQ_INT(tq_log_warn, 3);
    TS_CHECK(tq_log_error >= 1);
    TS_CHECK_EQ_INT(ts_queue_last_error(e.q, &info), TS_E_IO);
    TS_CHECK(strstr(info.message, "x/y") != NULL);
    TS_CHECK(info.line > 0);
    TS_CHECK_EQ_INT(ts_queue_push(e.q, "../up", "1", 1, TS_PRIO_NORMAL, NULL, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_queue_last_error(e.q, &info), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_queue_last_error(NULL, &info), TS_E_INVALID);
    tq_teardown(&e);
}

/* ---- idle jobs ----------------------------------------------------------------- */

typedef struct tq_job { int calls; int work; uint64_t last_budget; ts_queue *q; int enqueue; uint32_t remove_id; } tq_job;

static ts_result tq_job_fn(void *user, uint64_t now_ms, uint64_t budget_us)
{
    tq_job *j = (tq_job *)user;
    (void)now_ms;
    j->calls++;
    j->last_budget = budget_us;
    if (j->enqueue > 0) {
        j->enqueue--;
        if (ts_queue_push(j->q, "job/out", "x", 1, TS_PRIO_LOW, NULL, NULL) != TS_OK) return TS_E_IO;
    }
    if (j->remove_id) { ts_queue_remove_idle_job(j->q, j->remove_id); j->remove_id = 0; }
    tq_now_us += budget_us / 2;
    if (j->work > 0) { j->work--; return TS_OK; }
    return TS_DONE;
}

TS_TEST(test_idle_jobs)
{
    tq_env e;
    tq_job a, b;
    uint32_t ida = 0, idb = 0;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    tq_setup(&e, NULL);
    a.q = b.q = e.q;
    a.work = 2;
    b.work = 0;
    TS_CHECK_OK(ts_queue_add_idle_job(e.q, "gc", tq_job_fn, &a, &ida));
    TS_CHECK_OK(ts_queue_add_idle_job(e.q, "compress", tq_job_fn, &b, &idb));
    TS_CHECK(ida && idb && ida != idb);
    /* each gets a share: a gets half, uses half of it, b gets the rest */
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 0, 1000), TS_OK);
    TS_CHECK_EQ_INT(a.calls, 1);
    TS_CHECK_EQ_INT(b.calls, 1);
    TS_CHECK_EQ_INT(a.last_budget, 500);
    TS_CHECK_EQ_INT(b.last_budget, 750);
    /* round robin: the start rotates */
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 1, 1000), TS_OK);
    TS_CHECK_EQ_INT(b.last_budget, 500);
    TS_CHECK_EQ_INT(a.last_budget, 750);
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 2, 1000), TS_DONE); /* a's work is done */
    /* a job may enqueue; the write goes out at the next idle */
    b.enqueue = 1;
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 3, 1000), TS_OK);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 4, 1000), TS_DONE);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    /* removal from inside a job, and an error from a job */
    a.remove_id = idb;
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 5, 1000), TS_DONE);
    TS_CHECK_EQ_INT(ts_queue_remove_idle_job(e.q, idb), TS_E_NOTFOUND);
    b.calls = 0;
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 6, 1000), TS_DONE);
    TS_CHECK_EQ_INT(b.calls, 0);
    TS_CHECK_OK(ts_queue_remove_idle_job(e.q, ida));
    TS_CHECK_EQ_INT(ts_queue_idle(e.q, 7, 1000), TS_DONE);
    TS_CHECK_EQ_INT(ts_queue_add_idle_job(e.q, "x", NULL, NULL, NULL), TS_E_INVALID);
    tq_teardown(&e);
}

/* Writes that use the whole budget every call (or a machine too slow for
   it) must not starve the idle jobs: the first job of each call's rotation
   still gets a 1 us slice, so each job runs in turn. The jobs here work
   only when given time, like the store's compressor and migrator. */
static ts_result tq_timed_job_fn(void *user, uint64_t now_ms, uint64_t budget_us)
{
    tq_job *j = (tq_job *)user;
    (void)now_ms;
    j->calls++;
    if (budget_us == 0) return TS_OK;
    j->work--;
    return TS_OK;
}

TS_TEST(test_idle_jobs_not_starved)
{
    tq_env e;
    tq_job a, b;
    int i;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    tq_setup(&e, NULL);
    e.rec->advance_us = 5000; /* each write takes 5 ms of fake time */
    a.q = b.q = e.q;
    a.work = b.work = 1000;
    TS_CHECK_OK(ts_queue_add_idle_job(e.q, "a", tq_timed_job_fn, &a, NULL));
    TS_CHECK_OK(ts_queue_add_idle_job(e.q, "b", tq_timed_job_fn, &b, NULL));
    for (i = 0; i < 10; i++) {
        char p[16];
        snprintf(p, sizeof p, "busy%d", i);
        TS_CHECK_OK(ts_queue_push(e.q, p, "x", 1, TS_PRIO_LOW, NULL, NULL));
        TS_CHECK_EQ_INT(ts_queue_idle(e.q, (uint64_t)i, 1000), TS_OK);
    }
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'W'), 10);
    TS_CHECK_EQ_INT(a.calls + b.calls, 20);   /* every job is called ... */
    TS_CHECK_EQ_INT(a.work + b.work, 2000 - 10); /* ... one worked per call */
    TS_CHECK(a.work < 1000 && b.work < 1000);  /* and both took turns */
    /* a zero budget still means no background work at all */
    TS_CHECK_OK(ts_queue_idle(e.q, 20, 0));
    TS_CHECK_EQ_INT(a.work + b.work, 2000 - 10);
    tq_teardown(&e);
}

/* ---- power loss ------------------------------------------------------------------ */

/* A session of 30 records, 10 per chunk. Each record saves an attachment
   (a/<r>/data.bin, then a/<r>/meta.json after it), rewrites its chunk after
   the attachment and the session metadata after the chunk (all normal),
   every 4th also an index file (low) after the metadata; 60 Hz-ish ticks,
   an idle now and then, a flush every 7 records. *flushed is the last
   record covered by a successful flush (-1 if none); stops at the crash. */
#define TQ_PL_RECORDS 30
static int tq_pl_workload(tq_env *e, int *flushed)
{
    int i;
    uint64_t now = 0;
    *flushed = -1;
    for (i = 0; i < TQ_PL_RECORDS; i++) {
        char chunk[64], v[64], data[64], ameta[64];
        snprintf(data, sizeof data, "a/%d/data.bin", i);
        snprintf(ameta, sizeof ameta, "a/%d/meta.json", i);
        snprintf(v, sizeof v, "data v%d", i);
        ts_queue_push(e->q, data, v, strlen(v), TS_PRIO_NORMAL, NULL, NULL);
        snprintf(v, sizeof v, "ameta v%d", i);
        ts_queue_push(e->q, ameta, v, strlen(v), TS_PRIO_NORMAL, data, NULL);
        snprintf(chunk, sizeof chunk, "s/shots/chunk-%03d.json", i / 10);
        snprintf(v, sizeof v, "chunk%d v%d", i / 10, i);
        ts_queue_push(e->q, chunk, v, strlen(v), TS_PRIO_NORMAL, ameta, NULL);
        snprintf(v, sizeof v, "meta v%d", i);
        ts_queue_push(e->q, "s/metadata.json", v, strlen(v), TS_PRIO_NORMAL, chunk, NULL);
        if (i % 4 == 0) {
            snprintf(v, sizeof v, "index v%d", i);
            ts_queue_push(e->q, "index.bin", v, strlen(v), TS_PRIO_LOW, "s/metadata.json", NULL);
        }
        now += 40;
        ts_queue_tick(e->q, now, 100000);
        if (i % 5 == 4) ts_queue_idle(e->q, now, 100000);
        if (i % 7 == 6 && ts_queue_flush(e->q) == TS_OK) *flushed = i;
        if (ts_io_fault_crashed(e->fault)) return 1;
    }
    if (ts_queue_flush(e->q) == TS_OK) *flushed = TQ_PL_RECORDS - 1;
    return ts_io_fault_crashed(e->fault);
}

/* The N of a file holding exactly "<prefix> v<N>": -1 when absent, -2 when
   it holds anything else (torn, mixed, garbage). */
static int tq_pl_version(tq_env *e, const char *path, const char *prefix)
{
    char buf[64], again[64];
    size_t pl = strlen(prefix);
    int v = -1, used = 0;
    if (tq_read(e, path, buf, sizeof buf) != TS_OK) return -1;
    if (strncmp(buf, prefix, pl) != 0) return -2;
    if (sscanf(buf + pl, " v%d%n", &v, &used) != 1 || buf[pl + (size_t)used] != 0) return -2;
    snprintf(again, sizeof again, "%s v%d", prefix, v);
    return strcmp(again, buf) == 0 ? v : -2;
}

/* After the crash: nothing torn; everything a successful flush covered is
   there; everything a durable file refers to is durable (the metadata's
   record count is covered by the chunks, every record in a chunk has its
   attachment, every attachment metadata its data, the index is not ahead). */
static void tq_pl_check(tq_env *e, int flushed, unsigned k, int mode)
{
    int meta, need, c, r, ok = 1;
    meta = tq_pl_version(e, "s/metadata.json", "meta");
    if (meta == -2) { ok = 0; printf("  k=%u mode=%d torn metadata\n", k, mode); }
    if (meta < flushed) { ok = 0; printf("  k=%u mode=%d lost flushed metadata %d < %d\n", k, mode, meta, flushed); }
    need = meta > flushed ? meta : flushed;
    for (c = 0; c < (TQ_PL_RECORDS + 9) / 10; c++) {
        char path[64], prefix[16];
        int v;
        snprintf(path, sizeof path, "s/shots/chunk-%03d.json", c);
        snprintf(prefix, sizeof prefix, "chunk%d", c);
        v = tq_pl_version(e, path, prefix);
        if (v == -2 || (v >= 0 && v / 10 != c)) { ok = 0; printf("  k=%u mode=%d torn chunk %d\n", k, mode, c); }
        if (need >= c * 10 && v < (need / 10 > c ? c * 10 + 9 : need)) {
            ok = 0;
            printf("  k=%u mode=%d chunk %d at v%d, metadata v%d flushed %d\n", k, mode, c, v, meta, flushed);
        }
        for (r = c * 10; r <= v; r++) {
            char dp[64], mp[64];
            int dv, mv;
            snprintf(dp, sizeof dp, "a/%d/data.bin", r);
            snprintf(mp, sizeof mp, "a/%d/meta.json", r);
            dv = tq_pl_version(e, dp, "data");
            mv = tq_pl_version(e, mp, "ameta");
            if (dv != r || mv != r) {
                ok = 0;
                printf("  k=%u mode=%d chunk %d at v%d but attachment %d is %d/%d\n", k, mode, c, v, r, dv, mv);
            }
        }
    }
    for (r = 0; r < TQ_PL_RECORDS; r++) {
        char dp[64], mp[64];
        int dv, mv;
        snprintf(dp, sizeof dp, "a/%d/data.bin", r);
        snprintf(mp, sizeof mp, "a/%d/meta.json", r);
        dv = tq_pl_version(e, dp, "data");
        mv = tq_pl_version(e, mp, "ameta");
        if (dv == -2 || mv == -2 || (mv >= 0 && dv != r)) {
            ok = 0;
            printf("  k=%u mode=%d attachment %d: data %d meta %d\n", k, mode, r, dv, mv);
        }
    }
    {
        int v = tq_pl_version(e, "index.bin", "index");
        if (v == -2 || v > meta) { ok = 0; printf("  k=%u mode=%d index v%d metadata v%d\n", k, mode, v, meta); }
    }
    TS_CHECK(ok);
}

/* Commit by file system: files still synced one by one, no directory sync,
   one sync_all per dependency level of a batch; a failed one redoes the
   level's replaces; a vtable without sync_all_fn keeps to directory syncs. */
TS_TEST(test_sync_all_levels)
{
    tq_env e;
    ts_io_counters c, base;
    ts_fault_plan plan;
    ts_queue_config cfg = tq_config();
    const char *after2[2] = { "a/1/meta.json", "a/2/meta.json" };
    char buf[16];
    int i, a1, a2, a3, a4;
    cfg.sync_all = 1;
    tq_setup(&e, &cfg);
    base = tq_counters(&e);
    ts_queue_set_now(e.q, 0);
    TS_CHECK_OK(ts_queue_push(e.q, "a/1/data.bin", "d1", 2, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "a/1/meta.json", "m1", 2, TS_PRIO_NORMAL, "a/1/data.bin", NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "a/2/data.bin", "d2", 2, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "a/2/meta.json", "m2", 2, TS_PRIO_NORMAL, "a/2/data.bin", NULL));
    {
        ts_queue_req req;
        memset(&req, 0, sizeof req);
        req.op = TS_QUEUE_WRITE;
        req.path = "s/shots/chunk-000.json";
        req.data = "c";
        req.len = 1;
        req.prio = TS_PRIO_NORMAL;
        req.after = after2;
        req.after_count = 2;
        TS_CHECK_OK(ts_queue_push_ex(e.q, &req, NULL));
    }
    TS_CHECK_OK(ts_queue_push(e.q, "s/metadata.json", "s", 1, TS_PRIO_NORMAL, "s/shots/chunk-000.json", NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "s/other.json", "o", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_flush(e.q));
    c = tq_delta(&e, &base);
    TS_CHECK_EQ_INT(c.writes, 7);
    TS_CHECK_EQ_INT(c.file_syncs, 7);
    TS_CHECK_EQ_INT(c.dir_syncs, 0);    /* not even for the directories created */
    TS_CHECK_EQ_INT(c.mkdirs, 5);
    TS_CHECK_EQ_INT(c.fs_syncs, 4);     /* data, metadata, chunk, session metadata */
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    /* each level is written whole before its commit ('w': no deferred
       directory sync either) */
    a1 = tq_find_op(&e, 'A', "", 0);
    a2 = tq_find_op(&e, 'A', "", a1 + 1);
    a3 = tq_find_op(&e, 'A', "", a2 + 1);
    a4 = tq_find_op(&e, 'A', "", a3 + 1);
    TS_CHECK(a1 > tq_find_op(&e, 'w', "a/2/data.bin", 0) && a1 > tq_find_op(&e, 'w', "s/other.json", 0));
    TS_CHECK(a1 < tq_find_op(&e, 'w', "a/1/meta.json", 0) && a2 > tq_find_op(&e, 'w', "a/2/meta.json", 0));
    TS_CHECK(a2 < tq_find_op(&e, 'w', "s/shots/chunk-000.json", 0) && a3 < tq_find_op(&e, 'w', "s/metadata.json", 0));
    TS_CHECK(a4 > tq_find_op(&e, 'w', "s/metadata.json", 0));
    for (i = 0; i < e.rec->n; i++) TS_CHECK(e.rec->log[i].kind != 'S');
    ts_io_mem_crash(e.mem, TS_CRASH_DROP_UNSYNCED, 1);
    TS_CHECK_OK(tq_read(&e, "s/metadata.json", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "s");
    TS_CHECK_OK(tq_read(&e, "a/2/data.bin", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "d2");

    /* the commit fails: the level's replaces are redone, the dependent waits */
    e.rec->n = 0;
    TS_CHECK_OK(ts_queue_push(e.q, "a/3/data.bin", "d3", 2, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "a/3/meta.json", "m3", 2, TS_PRIO_NORMAL, "a/3/data.bin", NULL));
    memset(&plan, 0, sizeof plan);
    plan.fail_at = ts_io_fault_ops(e.fault) + 2;   /* write, sync_all <- fails */
    ts_io_fault_set(e.fault, &plan);
    TS_CHECK_OK(ts_queue_tick(e.q, 100, 1000000));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 2);
    TS_CHECK_EQ_INT(tq_find_op(&e, 'w', "a/3/meta.json", 0), -1);
    TS_CHECK_OK(ts_queue_flush(e.q));
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'w'), 3);     /* data twice, then the metadata */
    TS_CHECK_EQ_INT(tq_count_kind(&e, 'A'), 3);
    ts_io_mem_crash(e.mem, TS_CRASH_RANDOM, 3);
    TS_CHECK_OK(tq_read(&e, "a/3/meta.json", buf, sizeof buf));
    TS_CHECK_EQ_STR(buf, "m3");
    tq_teardown(&e);

    /* no sync_all_fn: the option is ignored */
    memset(&e, 0, sizeof e);
    tq_setup(&e, NULL);
    ts_queue_close(e.q);
    e.io.sync_all_fn = NULL;
    TS_CHECK_OK(ts_queue_open(&e.io, &cfg, &e.q));
    base = tq_counters(&e);
    TS_CHECK_OK(ts_queue_push(e.q, "d/data.bin", "x", 1, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_push(e.q, "d/meta.json", "y", 1, TS_PRIO_NORMAL, "d/data.bin", NULL));
    TS_CHECK_OK(ts_queue_flush(e.q));
    c = tq_delta(&e, &base);
    TS_CHECK_EQ_INT(c.fs_syncs, 0);
    TS_CHECK_EQ_INT(c.dir_syncs, 3);    /* the new d, then d twice */
    tq_teardown(&e);
}

TS_TEST(test_power_loss_at_every_step)
{
    tq_env e;
    int flushed, crashed, mode, sa;
    unsigned k, total;
    ts_queue_config c = tq_config();
    c.event_fn = NULL;
    for (sa = 0; sa < 2; sa++) {
    c.sync_all = sa; /* both commit modes */
    tq_setup(&e, &c);
    crashed = tq_pl_workload(&e, &flushed);
    TS_CHECK(!crashed);
    TS_CHECK_EQ_INT(flushed, TQ_PL_RECORDS - 1);
    tq_pl_check(&e, flushed, 0, 0);
    total = (unsigned)ts_io_fault_ops(e.fault);
    tq_teardown(&e);
    TS_CHECK(total > 150);
    for (k = 1; k <= total; k++) {
        for (mode = 0; mode < 3; mode++) {
            ts_fault_plan plan;
            tq_setup(&e, &c);
            memset(&plan, 0, sizeof plan);
            plan.fail_at = k;
            plan.crash = 1;
            ts_io_fault_set(e.fault, &plan);
            crashed = tq_pl_workload(&e, &flushed);
            TS_CHECK(crashed);
            ts_queue_close(e.q);
            e.q = NULL;
            ts_io_mem_crash(e.mem, mode == 0 ? TS_CRASH_DROP_UNSYNCED : TS_CRASH_RANDOM, k * 7u + (unsigned)mode);
            tq_pl_check(&e, flushed, k, mode);
            tq_teardown(&e);
        }
    }
    }
}

/* ---- allocation failures ---------------------------------------------------------- */

static long tq_alloc_left = -1;
static void *tq_alloc(size_t n, void *u) { (void)u; if (tq_alloc_left == 0) return NULL; if (tq_alloc_left > 0) tq_alloc_left--; return malloc(n); }
static void *tq_realloc(void *p, size_t o, size_t n, void *u) { (void)u; (void)o; if (tq_alloc_left == 0) return NULL; if (tq_alloc_left > 0) tq_alloc_left--; return realloc(p, n); }
static void tq_free(void *p, size_t n, void *u) { (void)u; (void)n; free(p); }

TS_TEST(test_out_of_memory)
{
    tq_env e;
    ts_queue_config c = tq_config();
    long k;
    int opened = 0;
    c.allocator.alloc_fn = tq_alloc;
    c.allocator.realloc_fn = tq_realloc;
    c.allocator.free_fn = tq_free;
    c.capacity[0] = c.capacity[1] = c.capacity[2] = 8;
    tq_setup(&e, NULL);
    ts_queue_close(e.q);
    e.q = NULL;
    for (k = 0; k < 64 && !opened; k++) {
        ts_result r;
        tq_alloc_left = k;
        r = ts_queue_open(&e.io, &c, &e.q);
        if (r == TS_OK) opened = 1;
        else { TS_CHECK_EQ_INT(r, TS_E_NOMEM); TS_CHECK(e.q == NULL); }
    }
    TS_CHECK(opened);
    tq_alloc_left = -1;
    /* pushes: fail each allocation in turn; the queue stays as it was */
    TS_CHECK_OK(ts_queue_push(e.q, "a/x", "1", 1, TS_PRIO_NORMAL, NULL, NULL));
    for (k = 0; k < 16; k++) {   /* a new item with a dependency */
        const void *d;
        size_t n;
        ts_result r;
        tq_alloc_left = k;
        r = ts_queue_push(e.q, "a/y", "22", 2, TS_PRIO_NORMAL, "a/x", NULL);
        tq_alloc_left = -1;
        if (r == TS_OK) break;
        TS_CHECK_EQ_INT(r, TS_E_NOMEM);
        TS_CHECK_EQ_INT(ts_queue_count(e.q), 1);
        TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "a/y", &d, &n), TS_DONE);
        TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "a/x", &d, &n), TS_OK);
        TS_CHECK(n == 1 && *(const char *)d == '1');
    }
    TS_CHECK(k >= 3 && k < 16);
    TS_CHECK_OK(ts_queue_push(e.q, "a/z", "3", 1, TS_PRIO_NORMAL, NULL, NULL));
    for (k = 0; k < 16; k++) {   /* coalescing, growing the dependency list */
        const void *d;
        size_t n;
        ts_result r;
        tq_alloc_left = k;
        r = ts_queue_push(e.q, "a/x", "44", 2, TS_PRIO_NORMAL, "a/z", NULL); /* younger dep: moves */
        if (r == TS_OK) r = ts_queue_push(e.q, "a/y", "55", 2, TS_PRIO_NORMAL, "a/x", NULL);
        tq_alloc_left = -1;
        if (r == TS_OK) break;
        TS_CHECK_EQ_INT(r, TS_E_NOMEM);
        TS_CHECK_EQ_INT(ts_queue_lookup(e.q, "a/y", &d, &n), TS_OK);
        TS_CHECK(n == 2 && *(const char *)d == '2');
    }
    TS_CHECK(k >= 1 && k < 16);
    TS_CHECK_EQ_INT(ts_queue_count(e.q), 3); /* a/x and a/y moved behind a/z, in place */
    /* growth fails cleanly and can be retried */
    for (k = 0; k < 8; k++) {
        ts_result r;
        tq_alloc_left = k;
        r = ts_queue_reserve(e.q, TS_PRIO_LOW, 64);
        tq_alloc_left = -1;
        if (r == TS_OK) break;
        TS_CHECK_EQ_INT(r, TS_E_NOMEM);
    }
    TS_CHECK(k < 8);
    TS_CHECK_OK(ts_queue_flush(e.q));
    tq_teardown(&e);
}

TS_TEST(test_owned_and_iteration)
{
    tq_env e;
    ts_queue_config c = tq_config();
    ts_allocator a;
    unsigned char *buf;
    char rd[32];
    size_t pos = 0;
    ts_queue_item_info info;
    int seen = 0;
    memset(&a, 0, sizeof a);
    tq_setup(&e, &c);
    buf = (unsigned char *)ts__alloc(&a, 16);
    memcpy(buf, "owned!", 6);
    TS_CHECK_OK(ts_queue_push_owned(e.q, "own", buf, 6, 16, TS_PRIO_NORMAL, NULL, NULL));
    TS_CHECK_OK(ts_queue_delete(e.q, "del", TS_PRIO_LOW, NULL, NULL));
    while (ts_queue_next(e.q, &pos, &info) == TS_OK) {
        seen++;
        if (!strcmp(info.path, "own")) TS_CHECK(info.op == TS_QUEUE_WRITE && info.len == 6 && info.data == buf);
        else TS_CHECK(info.op == TS_QUEUE_DELETE && !strcmp(info.path, "del") && info.data == NULL);
    }
    TS_CHECK_EQ_INT(seen, 2);
    /* failure keeps ownership with the caller */
    buf = (unsigned char *)ts__alloc(&a, 4);
    TS_CHECK_EQ_INT(ts_queue_push_owned(e.q, "../x", buf, 4, 4, TS_PRIO_NORMAL, NULL, NULL), TS_E_INVALID);
    ts__free(&a, buf, 4);
    TS_CHECK_OK(ts_queue_flush(e.q));
    TS_CHECK_OK(tq_read(&e, "own", rd, sizeof rd));
    TS_CHECK_EQ_STR(rd, "owned!");
    tq_teardown(&e);
}

/* Random operations checked against a model: after a flush the disk equals
   the model and the overlay is empty; before, the overlay agrees with it. */
TS_TEST(test_random_model)
{
    tq_env e;
    ts_queue_config c = tq_config();
    uint64_t rng = 12345;
    int round, rounds = (int)ts_test_count(30, 200);
    char model[8][16];
    int present[8];
    c.event_fn = NULL;
    c.capacity[0] = c.capacity[1] = c.capacity[2] = 4;
    tq_setup(&e, &c);
    memset(present, 0, sizeof present);
    for (round = 0; round < rounds; round++) {
        int step;
        uint64_t now = (uint64_t)round * 1000;
        for (step = 0; step < 40; step++) {
            int f, op, prio;
            char path[16], after[16], val[16];
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            f = (int)((rng >> 33) % 8);
            op = (int)((rng >> 40) % 4);
            prio = (int)((rng >> 45) % 3);
            snprintf(path, sizeof path, "d%d/f%d", f % 3, f);
            snprintf(after, sizeof after, "d%d/f%d", ((f + 5) % 8) % 3, (f + 5) % 8);
            snprintf(val, sizeof val, "r%ds%d", round, step);
            if (op == 0) {
                TS_CHECK_OK(ts_queue_delete(e.q, path, (ts_queue_priority)prio, (rng >> 50) & 1 ? after : NULL, NULL));
                present[f] = 0;
            } else if (op == 3) {
                now += 30;
                ts_queue_tick(e.q, now, (rng >> 52) & 1 ? 0 : 100000);
                continue;
            } else {
                TS_CHECK_OK(ts_queue_push(e.q, path, val, strlen(val), (ts_queue_priority)prio,
                                          (rng >> 50) & 1 ? after : NULL, NULL));
                present[f] = 1;
                strcpy(model[f], val);
            }
            {
                const void *d;
                size_t n;
                ts_result r = ts_queue_lookup(e.q, path, &d, &n);
                if (present[f]) TS_CHECK(r == TS_OK && n == strlen(model[f]) && !memcmp(d, model[f], n));
                else TS_CHECK_EQ_INT(r, TS_E_NOTFOUND);
            }
        }
        if (round % 3 == 0) ts_queue_idle(e.q, now + 1, 100000);
        else TS_CHECK_OK(ts_queue_flush(e.q));
        if (round % 3 != 0) {
            int f;
            TS_CHECK_EQ_INT(ts_queue_count(e.q), 0);
            for (f = 0; f < 8; f++) {
                char path[16], buf[32];
                ts_result r;
                snprintf(path, sizeof path, "d%d/f%d", f % 3, f);
                r = tq_read(&e, path, buf, sizeof buf);
                if (present[f]) { TS_CHECK_OK(r); TS_CHECK_EQ_STR(buf, model[f]); }
                else TS_CHECK_EQ_INT(r, TS_E_NOTFOUND);
            }
        }
    }
    tq_teardown(&e);
}

TS_TEST(test_config_default)
{
    ts_queue_config c = ts_queue_config_default();
    TS_CHECK_EQ_INT(c.capacity[0], TS_QUEUE_DEFAULT_CAPACITY);
    TS_CHECK_EQ_INT(c.batch_window_ms, 100);
    TS_CHECK_EQ_INT(c.max_attempts[TS_PRIO_CRITICAL], 2);
    TS_CHECK_EQ_INT(c.max_attempts[TS_PRIO_NORMAL], 4);
    TS_CHECK_EQ_INT(c.max_attempts[TS_PRIO_LOW], 6);
    TS_CHECK_EQ_INT(c.backoff_ms, 50);
}

int main(void)
{
    TS_RUN(test_config_default);
    TS_RUN(test_write_lookup_flush);
    TS_RUN(test_invalid_args);
    TS_RUN(test_coalescing_last_write_wins);
    TS_RUN(test_coalescing_priority_and_position);
    TS_RUN(test_delete_and_read_your_writes);
    TS_RUN(test_priority_order_and_windows);
    TS_RUN(test_budget);
    TS_RUN(test_sync_budget_one_directory);
    TS_RUN(test_dependency_order);
    TS_RUN(test_coalescing_with_dependencies);
    TS_RUN(test_zero_io_on_enqueue);
    TS_RUN(test_back_pressure);
    TS_RUN(test_retries_and_backoff);
    TS_RUN(test_failed_sync_redoes_replace);
    TS_RUN(test_failed_dependency_blocks_dependents);
    TS_RUN(test_events_and_reentry);
    TS_RUN(test_no_dirsync_vtable);
    TS_RUN(test_reserve_wrapped_ring);
    TS_RUN(test_logging_and_last_error);
    TS_RUN(test_idle_jobs);
    TS_RUN(test_idle_jobs_not_starved);
    TS_RUN(test_sync_all_levels);
    TS_RUN(test_power_loss_at_every_step);
    TS_RUN(test_out_of_memory);
    TS_RUN(test_owned_and_iteration);
    TS_RUN(test_random_model);
    return ts_test_report("queue");
}
