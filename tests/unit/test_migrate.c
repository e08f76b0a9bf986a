/* Tests of the migrator (>>migrate): generated legacy stores (unicode,
   empty and missing optional fields, sessions with 0 and with 1,000+
   screenshots, duplicate attachments) moved to the chunked layout; dry run
   proved write-free by a spying vtable; malformed legacy files; a
   verification failure injected by a vtable that corrupts one chunk;
   rollback (one, all, refused on later changes); backup cleanup; rollback
   points; on-demand migration; the steps one by one; the background
   migrator (batches, progress, pause/resume/cancel, resume after a close);
   a power-loss crash at every I/O step of a background migration, then
   resumed; bounded memory. Everything runs on ts_io_mem. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

#include <stdint.h>

#define NOW 1700000000000ull
#define S_LIT(lit) lit, (sizeof(lit) - 1)
#define DAY_MS (24ull * 3600 * 1000)

static int test_long(void) { return ts_test_long(); }

/* ---- deterministic random numbers --------------------------------------- */

static uint64_t rng_s = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17;
    return (uint32_t)(rng_s >> 11);
}

/* ---- base64 (the legacy encoding) ------------------------------------------ */

static void b64enc(const unsigned char *in, size_t n, ts__buf *out, int wrap)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i, col = 0;
    for (i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        char q[4];
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        q[0] = al[(v >> 18) & 63];
        q[1] = al[(v >> 12) & 63];
        q[2] = i + 1 < n ? al[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? al[v & 63] : '=';
        ts__buf_append(out, q, 4);
        col += 4;
        if (wrap && col >= 76) { ts__buf_puts(out, "\\n"); col = 0; }
    }
}

/* ---- a generated legacy store -------------------------------------------------- */

#define MAX_SESS 64
#define MAX_ATT 4096

typedef struct fixture {
    ts_io_mem *mem;
    ts_io io;
    int nsess;
    char ids[MAX_SESS][48];
    ts__buf text[MAX_SESS];     /* the legacy file, byte for byte */
    int natt;
    char aid[MAX_ATT][48];
    char ahex[MAX_ATT][65];
    size_t alen[MAX_ATT];
    uint64_t unique_bytes;
} fixture;

static fixture FX;

static void fx_init(void)
{
    int i;
    for (i = 0; i < FX.nsess; i++) ts__buf_free(&FX.text[i]);
    if (FX.mem) ts_io_mem_destroy(FX.mem);
    memset(&FX, 0, sizeof FX);
    for (i = 0; i < MAX_SESS; i++) ts__buf_init(&FX.text[i], NULL);
    ts_io_mem_create(NULL, &FX.mem);
    ts_io_mem_vtable(FX.mem, &FX.io);
}

static void fx_free(void)
{
    int i;
    for (i = 0; i < MAX_SESS; i++) ts__buf_free(&FX.text[i]);
    if (FX.mem) ts_io_mem_destroy(FX.mem);
    memset(&FX, 0, sizeof FX);
}

static void put_file(const char *path, const void *data, size_t len)
{
    ts_io_mem_put(FX.mem, path, data, len);
}

static void put_str(const char *path, const char *s)
{
    put_file(path, s, strlen(s));
}

/* Writes attachments/{id}.json holding bytes; returns its index. */
static int fx_att(const char *id, const unsigned char *bytes, size_t len, int wrap)
{
    ts__buf b, p;
    unsigned char d[32];
    int k = FX.natt++;
    ts__buf_init(&b, NULL);
    ts__buf_init(&p, NULL);
    ts__buf_printf(&b, "{\"id\":\"%s\",\"type\":\"screenshot\",\"name\":\"\\u00e9cran %d.png\","
                       "\"mimeType\":\"image/png\",\"size\":%u,\"base64\":\"", id, k, (unsigned)len);
    b64enc(bytes, len, &b, wrap);
    ts__buf_printf(&b, "\",\"createdAt\":%llu}", (unsigned long long)NOW);
    ts__buf_printf(&p, "attachments/%s.json", id);
    put_file((const char *)p.data, b.data, b.len);
    snprintf(FX.aid[k], sizeof FX.aid[k], "%s", id);
    ts_sha256_buffer(bytes, len, d);
    ts_sha256_hex(d, FX.ahex[k]);
    FX.alen[k] = len;
    ts__buf_free(&b);
    ts__buf_free(&p);
    return k;
}

static const char *fx_hex_of(const char *aid, size_t n)
{
    int k;
    for (k = 0; k < FX.natt; k++)
        if (strlen(FX.aid[k]) == n && memcmp(FX.aid[k], aid, n) == 0) return FX.ahex[k];
    return NULL;
}

/* A fresh attachment of random bytes (or a copy of an earlier one's bytes
   under a new id when dup_of >= 0). */
static unsigned char g_img[8192];
static int fx_new_image(int dup_of, unsigned seed_extra)
{
    char id[48];
    size_t len, i;
    snprintf(id, sizeof id, "att-%d", FX.natt);
    if (dup_of >= 0) {
        /* regenerate the same bytes: image k's bytes are a function of k */
        uint64_t save = rng_s;
        rng_s = 0xABCDEF0123ull + (uint64_t)dup_of * 7919u;
        len = 64 + rnd() % 1500;
        for (i = 0; i < len; i++) g_img[i] = (unsigned char)rnd();
        rng_s = save;
        (void)seed_extra;
    } else {
        uint64_t save = rng_s;
        rng_s = 0xABCDEF0123ull + (uint64_t)FX.natt * 7919u;
        len = 64 + rnd() % 1500;
        for (i = 0; i < len; i++) g_img[i] = (unsigned char)rnd();
        rng_s = save;
        FX.unique_bytes += len;
    }
    return fx_att(id, g_img, len, FX.natt % 5 == 0);
}

enum { STYLE_FULL = 0, STYLE_MIN = 1, STYLE_EMPTY = 2 };

/* Writes sessions/{id}.json; screenshots name attachments: ~30% reuse an
   earlier attachment id or duplicate an earlier image under a new id. */
static int fx_session(const char *id, int style, int nshots, int naudio)
{
    ts__buf b, p;
    int k = FX.nsess++, i;
    ts__buf *t = &FX.text[k];
    snprintf(FX.ids[k], sizeof FX.ids[k], "%s", id);
    ts__buf_init(&p, NULL);
    t->len = 0;
    b = *t;
    if (style == STYLE_MIN) {
        ts__buf_printf(&b, "{\"id\":\"%s\"}\n", id);
    } else if (style == STYLE_EMPTY) {
        ts__buf_printf(&b, "{\"id\":\"%s\",\"name\":\"\",\"description\":null,\"tags\":[],"
                           "\"screenshots\":[],\"audioSegments\":[],\"summary\":null}", id);
    } else {
        ts__buf_printf(&b, "{\n  \"id\": \"%s\",\n  \"name\": \"Caf\\u00e9 \xe6\x97\xa5\xe6\x9c\xac "
                           "\\ud83c\\udf89 session %d\",\n  \"description\": \"Ünïcödé — \\\"quoted\\\"\","
                           "\"status\":\"done\",\"category\":\"Deep work\",\"subCategory\":\"code\","
                           "\"tags\":[\"c\",\"\xce\xb1\xce\xb2\"],\"topicIds\":[],"
                           "\"startTime\":%llu,\"endTime\":%llu.0,\"extra\":{\"nested\":[1,2.50,1e3,null,true]},",
                       id, k, (unsigned long long)(NOW - (uint64_t)k * DAY_MS),
                       (unsigned long long)(NOW - (uint64_t)k * DAY_MS + 3600000));
        ts__buf_puts(&b, "\"screenshots\":[");
        for (i = 0; i < nshots; i++) {
            int r = (int)(rnd() % 10), a = -1;
            if (i) ts__buf_putc(&b, ',');
            ts__buf_printf(&b, "{\"id\":\"shot-%d\",\"timestamp\":%llu,\"activity\":\"typing \xe2\x9c\x93 %d\"",
                           i, (unsigned long long)(NOW + (uint64_t)i), i);
            if (i % 17 == 5) { ts__buf_puts(&b, "}"); continue; }          /* no attachment */
            if (i % 23 == 7) { ts__buf_puts(&b, ",\"attachmentId\":null}"); continue; }
            if (r < 2 && FX.natt > 0) a = (int)(rnd() % (unsigned)FX.natt);          /* same id again */
            else if (r < 3 && FX.natt > 0) a = fx_new_image((int)(rnd() % (unsigned)FX.natt), 0); /* dup bytes */
            else a = fx_new_image(-1, 0);
            ts__buf_printf(&b, ",\"attachmentId\":\"%s\"}", FX.aid[a]);
        }
        ts__buf_puts(&b, "],\"audioSegments\":[");
        for (i = 0; i < naudio; i++)
            ts__buf_printf(&b, "%s{\"id\":\"a%d\",\"timestamp\":%d,\"transcription\":\"words %d \xc3\xa9t\xc3\xa9\"}",
                           i ? "," : "", i, i * 1000, i);
        ts__buf_puts(&b, "],\"videoChunks\":[{\"id\":\"v0\",\"path\":\"/tmp/v0.webm\"}],"
                         "\"summary\":{\"narrative\":\"a \\u00fcber day\",\"score\":0.5},"
                         "\"audioInsights\":[\"x\"],\"canvasSpec\":\"<svg/>\",\"transcription\":\"hello\"}\n");
    }
    *t = b;
    ts__buf_printf(&p, "sessions/%s.json", id);
    put_file((const char *)p.data, t->data, t->len);
    ts__buf_free(&p);
    return k;
}

static ts_store_config cfg_for(const ts_io *io)
{
    ts_store_config c = ts_store_config_default();
    c.io = io;
    c.now_ms = NOW;
    return c;
}

static ts_store *open_store(const ts_io *io)
{
    ts_store *s = NULL;
    ts_store_config c = cfg_for(io);
    if (ts_store_open("mem", &c, &s) != TS_OK) return NULL;
    return s;
}

static int read_file(const ts_io *io, const char *path, ts__buf *out)
{
    size_t size = 0;
    ts_result r;
    out->len = 0;
    ts__buf_reserve(out, 1 << 16);
    r = io->read_file_fn(io->user, path, out->data, out->cap - 1, &size);
    if (r == TS_E_RANGE) {
        ts__buf_reserve(out, size);
        r = io->read_file_fn(io->user, path, out->data, out->cap - 1, &size);
    }
    if (r != TS_OK) return (int)r;
    out->len = size;
    return 0;
}

static int file_exists(const ts_io *io, const char *path)
{
    ts_io_stat st;
    return io->stat_fn(io->user, path, &st) == TS_OK;
}

/* The chunked session equals the legacy file plus attachmentHash. 1 if so. */
static int session_matches(ts_store *s, int k)
{
    ts_blob b;
    ts__json_doc d1, d2;
    ts__json *r1 = NULL, *r2 = NULL, *x;
    ts__buf path;
    int ok = 0;
    if (ts_session_load(s, FX.ids[k], &b) != TS_OK) {
        printf("    session %s: load failed\n", FX.ids[k]);
        return 0;
    }
    ts__json_doc_init(&d1, NULL);
    ts__json_doc_init(&d2, NULL);
    ts__buf_init(&path, NULL);
    if (ts__json_parse(&d1, (const char *)FX.text[k].data, FX.text[k].len, &r1, NULL, "legacy") == TS_OK &&
        ts__json_parse(&d2, (const char *)b.data, b.len, &r2, NULL, "chunked") == TS_OK) {
        for (x = ts__json_first(ts__json_get(r1, "screenshots")); x; x = x->next) {
            size_t n = 0;
            const char *aid = ts__json_get_str(x, "attachmentId", &n);
            const char *hex = aid ? fx_hex_of(aid, n) : NULL;
            if (hex) ts__json_object_set(&d1, x, "attachmentHash", 14, ts__json_new_string(&d1, hex, 64));
        }
        ok = !ts__json_diff(r1, r2, &path);
        if (!ok) printf("    session %s differs at %s\n", FX.ids[k], path.data ? (char *)path.data : "(root)");
    }
    ts__json_doc_free(&d1);
    ts__json_doc_free(&d2);
    ts__buf_free(&path);
    ts_blob_free(&b);
    return ok;
}

/* Every attachment's bytes in the CA store hash to their name. */
static int attachments_ok(ts_store *s)
{
    int k;
    for (k = 0; k < FX.natt; k++) {
        ts_blob b;
        char hex[65];
        unsigned char d[32];
        if (ts_attach_get(s, FX.ahex[k], &b) != TS_OK) return 0;
        ts_sha256_buffer(b.data, b.len, d);
        ts_sha256_hex(d, hex);
        ts_blob_free(&b);
        if (strcmp(hex, FX.ahex[k]) != 0) return 0;
    }
    return 1;
}

/* Backups of id: count, and whether the newest restores the bytes exactly. */
typedef struct bk_count { const char *id; int n; } bk_count;
static int bk_cb(void *ctx, const char *name, int is_dir)
{
    bk_count *c = (bk_count *)ctx;
    size_t n = strlen(c->id);
    (void)is_dir;
    if (strncmp(name, c->id, n) == 0 && strncmp(name + n, ".backup-", 8) == 0) c->n++;
    return 0;
}
static int backups_of(const ts_io *io, const char *id)
{
    bk_count c;
    c.id = id;
    c.n = 0;
    io->list_dir_fn(io->user, "sessions", bk_cb, &c);
    return c.n;
}

static size_t item_index(const ts_migrate_report *rep, const char *id)
{
    size_t i;
    for (i = 0; i < rep->item_count; i++) if (strcmp(rep->items[i].id, id) == 0) return i;
    return (size_t)-1;
}

/* A representative store: 6 sessions, one with 1,200 screenshots. */
static void fx_standard(int big)
{
    fx_init();
    fx_session("s-full-1", STYLE_FULL, 25, 60);
    fx_session("s-full-2", STYLE_FULL, 12, 3);
    fx_session("s-min", STYLE_MIN, 0, 0);
    fx_session("s-empty", STYLE_EMPTY, 0, 0);
    fx_session("s.zero-shots", STYLE_FULL, 0, 2);
    if (big) fx_session("s-big", STYLE_FULL, 1200, 120);
}

/* ---- a spying / corrupting vtable ---------------------------------------------- */

typedef struct spy {
    ts_io inner;
    int forbid;                 /* mutations fail (and are counted) */
    long mutations;
    const char *corrupt_prefix; /* writes of paths starting with it get from -> to */
    const char *from, *to;
} spy;

static ts_result spy_read(void *u, const char *p, void *b, size_t c, size_t *s)
{ spy *x = (spy *)u; return x->inner.read_file_fn(x->inner.user, p, b, c, s); }
static ts_result spy_list(void *u, const char *p, ts_io_list_cb cb, void *ctx)
{ spy *x = (spy *)u; return x->inner.list_dir_fn(x->inner.user, p, cb, ctx); }
static ts_result spy_stat(void *u, const char *p, ts_io_stat *o)
{ spy *x = (spy *)u; return x->inner.stat_fn(x->inner.user, p, o); }
static ts_result spy_lock(void *u, int l)
{ spy *x = (spy *)u; return x->inner.lock_fn(x->inner.user, l); }
static ts_result spy_stats(void *u, ts_io_counters *o)
{ spy *x = (spy *)u; return x->inner.stats_fn(x->inner.user, o); }
static ts_result spy_write(void *u, const char *p, const void *d, size_t n, unsigned f)
{
    spy *x = (spy *)u;
    x->mutations++;
    if (x->forbid) return TS_E_IO;
    if (x->corrupt_prefix && strncmp(p, x->corrupt_prefix, strlen(x->corrupt_prefix)) == 0) {
        char *c = (char *)malloc(n + 1), *hit;
        ts_result r;
        memcpy(c, d, n);
        c[n] = 0;
        hit = strstr(c, x->from);
        if (hit) memcpy(hit, x->to, strlen(x->to));
        r = x->inner.write_file_atomic_fn(x->inner.user, p, c, n, f);
        free(c);
        return r;
    }
    return x->inner.write_file_atomic_fn(x->inner.user, p, d, n, f);
}
static ts_result spy_remove(void *u, const char *p)
{ spy *x = (spy *)u; x->mutations++; if (x->forbid) return TS_E_IO; return x->inner.remove_fn(x->inner.user, p); }
static ts_result spy_rename(void *u, const char *a, const char *b)
{ spy *x = (spy *)u; x->mutations++; if (x->forbid) return TS_E_IO; return x->inner.rename_fn(x->inner.user, a, b); }
static ts_result spy_mkdir(void *u, const char *p)
{ spy *x = (spy *)u; x->mutations++; if (x->forbid) return TS_E_IO; return x->inner.mkdir_p_fn(x->inner.user, p); }
static ts_result spy_sync(void *u, const char *p)
{ spy *x = (spy *)u; x->mutations++; if (x->forbid) return TS_E_IO; return x->inner.sync_dir_fn(x->inner.user, p); }

static void spy_vtable(spy *x, const ts_io *inner, ts_io *io)
{
    memset(x, 0, sizeof *x);
    x->inner = *inner;
    *io = *inner;
    io->user = x;
    io->read_file_fn = spy_read;
    io->write_file_atomic_fn = spy_write;
    io->remove_fn = spy_remove;
    io->rename_fn = spy_rename;
    io->mkdir_p_fn = spy_mkdir;
    io->list_dir_fn = spy_list;
    io->stat_fn = spy_stat;
    io->sync_dir_fn = spy_sync;
    io->lock_fn = spy_lock;
    io->stats_fn = spy_stats;
}

/* ---- progress recording ----------------------------------------------------------- */

typedef struct prog_log {
    int events, sessions, finished;
    double last_percent;
    int monotonic;
    int64_t last_eta;
    int cancel_after;
} prog_log;

static int prog_cb(void *user, const ts_migrate_progress *p)
{
    prog_log *l = (prog_log *)user;
    l->events++;
    if (p->percent + 1e-9 < l->last_percent) l->monotonic = 0;
    l->last_percent = p->percent;
    l->last_eta = p->eta_ms;
    if (p->session_id) l->sessions++;
    if (p->finished) l->finished++;
    return l->cancel_after && l->sessions >= l->cancel_after;
}

/* ---- tests ----------------------------------------------------------------------------- */

TS_TEST(test_full_migration)
{
    ts_store *s;
    ts_migrate_report rep;
    ts_migrate_status st;
    ts_migrate_options o = ts_migrate_options_default();
    prog_log pl;
    ts__buf b;
    int k;
    fx_standard(1);
    ts__buf_init(&b, NULL);
    s = open_store(&FX.io);
    TS_CHECK(s != NULL);
    if (!s) return;
    TS_CHECK_OK(ts_migrate_status_get(s, &st));
    TS_CHECK_EQ_INT(st.total, FX.nsess);
    TS_CHECK_EQ_INT(st.legacy, FX.nsess);
    TS_CHECK_EQ_INT(st.chunked, 0);
    memset(&pl, 0, sizeof pl);
    pl.monotonic = 1;
    o.now_ms = NOW;
    o.progress = prog_cb;
    o.progress_user = &pl;
    o.flush_bytes = 64 * 1024;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, FX.nsess);
    TS_CHECK_EQ_INT(rep.failed, 0);
    TS_CHECK_EQ_INT(rep.skipped, 0);
    TS_CHECK_EQ_INT(rep.backups_written, FX.nsess);
    TS_CHECK(rep.index_built);
    TS_CHECK_EQ_INT(rep.index_sessions, FX.nsess);
    TS_CHECK(rep.attachments_deduplicated > 0);             /* duplicate images */
    TS_CHECK_EQ_INT(rep.attachments_imported + rep.attachments_deduplicated, FX.natt);
    TS_CHECK(pl.monotonic);
    TS_CHECK_EQ_INT(pl.sessions, FX.nsess);
    TS_CHECK_EQ_INT(pl.finished, 1);
    TS_CHECK(pl.last_percent > 99.9);
    {
        size_t i = item_index(&rep, "s-big");
        TS_CHECK(i != (size_t)-1);
        if (i != (size_t)-1) TS_CHECK(rep.items[i].records >= 1200 + 120);
    }
    ts_migrate_report_free(&rep);
    for (k = 0; k < FX.nsess; k++) {
        char p[96];
        TS_CHECK(session_matches(s, k));
        snprintf(p, sizeof p, "sessions/%s.json", FX.ids[k]);
        TS_CHECK(!file_exists(&FX.io, p));                      /* legacy file gone ... */
        TS_CHECK_EQ_INT(backups_of(&FX.io, FX.ids[k]), 1);      /* ... kept as a backup */
    }
    TS_CHECK(attachments_ok(s));
    for (k = 0; k < FX.natt; k++) {                             /* legacy attachments kept */
        char p[96];
        snprintf(p, sizeof p, "attachments/%s.json", FX.aid[k]);
        TS_CHECK(file_exists(&FX.io, p));
    }
    TS_CHECK_OK(ts_migrate_status_get(s, &st));
    TS_CHECK_EQ_INT(st.total, FX.nsess);
    TS_CHECK_EQ_INT(st.chunked, FX.nsess);
    TS_CHECK_EQ_INT(st.legacy, 0);
    TS_CHECK(st.percentage > 99.99);
    TS_CHECK_EQ_INT(st.backups, FX.nsess);
    /* a second run has nothing to do */
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, 0);
    TS_CHECK_EQ_INT(rep.skipped, FX.nsess);
    ts_migrate_report_free(&rep);
    /* the integrity check is clean, and search sees the migrated sessions */
    TS_CHECK_OK(ts_migrate_verify(s, 0, &rep));
    TS_CHECK_EQ_INT(rep.failed, 0);
    if (rep.failed) printf("    first problem: %s\n", rep.items[0].reason);
    ts_migrate_report_free(&rep);
    {
        ts_query q;
        ts_index_hits h;
        memset(&q, 0, sizeof q);
        q.category = "Deep work";
        TS_CHECK_OK(ts_store_search(s, &q, &h));
        TS_CHECK_EQ_INT(h.total, 4);
        ts_index_hits_free(&h);
    }
    TS_CHECK_OK(ts_store_close(s));
    /* still all there after reopening */
    s = open_store(&FX.io);
    TS_CHECK(s != NULL);
    if (s) {
        for (k = 0; k < FX.nsess; k++) TS_CHECK(session_matches(s, k));
        ts_store_close(s);
    }
    ts__buf_free(&b);
    fx_free();
}

TS_TEST(test_dry_run_writes_nothing)
{
    spy sp;
    ts_io io;
    ts_store *s;
    ts_migrate_report rep, real;
    ts_migrate_options o = ts_migrate_options_default();
    ts_io_counters c0, c1;
    size_t i;
    fx_standard(0);
    /* one already chunked, one malformed, one with a missing attachment */
    put_str("sessions/bad-json.json", "{\"id\":\"bad-json\",");
    put_str("sessions/missing-att.json",
             "{\"id\":\"missing-att\",\"screenshots\":[{\"id\":\"x\",\"attachmentId\":\"nope\"}]}");
    spy_vtable(&sp, &FX.io, &io);
    s = open_store(&io);
    TS_CHECK(s != NULL);
    if (!s) return;
    TS_CHECK_OK(ts_session_save(s, S_LIT("{\"id\":\"already\",\"name\":\"new\"}"), NULL));
    TS_CHECK_OK(ts_store_flush(s));
    ts_io_counters_get(&FX.io, &c0);
    sp.forbid = 1;
    sp.mutations = 0;
    o.dry_run = 1;
    o.now_ms = NOW;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(sp.mutations, 0);                           /* not even attempted */
    ts_io_counters_get(&FX.io, &c1);
    TS_CHECK_EQ_INT(c1.writes, c0.writes);
    TS_CHECK_EQ_INT(c1.removes, c0.removes);
    TS_CHECK_EQ_INT(c1.renames, c0.renames);
    TS_CHECK_EQ_INT(c1.mkdirs, c0.mkdirs);
    TS_CHECK_EQ_INT(c1.dir_syncs, c0.dir_syncs);
    TS_CHECK(rep.dry_run);
    TS_CHECK_EQ_INT(rep.migrated, FX.nsess);
    TS_CHECK_EQ_INT(rep.skipped, 1);
    TS_CHECK_EQ_INT(rep.failed, 2);
    TS_CHECK_EQ_INT(rep.backups_written, 0);
    TS_CHECK(item_index(&rep, "already") != (size_t)-1);
    i = item_index(&rep, "missing-att");
    TS_CHECK(i != (size_t)-1 && rep.items[i].outcome == TS_MIGRATE_FAILED &&
             strstr(rep.items[i].reason, "attachments/nope.json") != NULL);
    sp.forbid = 0;
    /* the real run does exactly what the dry run said */
    o.dry_run = 0;
    TS_CHECK_OK(ts_migrate_run(s, &o, &real));
    TS_CHECK_EQ_INT(real.migrated, rep.migrated);
    TS_CHECK_EQ_INT(real.skipped, rep.skipped);
    TS_CHECK_EQ_INT(real.failed, rep.failed);
    for (i = 0; i < rep.item_count; i++) {
        size_t j = item_index(&real, rep.items[i].id);
        TS_CHECK(j != (size_t)-1 && real.items[j].outcome == rep.items[i].outcome);
    }
    ts_migrate_report_free(&rep);
    ts_migrate_report_free(&real);
    ts_store_close(s);
    fx_free();
}

/* malformed legacy files are per-session failures with a clear message */
TS_TEST(test_malformed_sessions)
{
    static const struct { const char *id, *json, *want; } cases[] = {
        { "m-badjson", "{\"id\":\"m-badjson\",\"name\":}", "m-badjson.json" },
        { "m-array", "[1,2,3]", "expected an object" },
        { "m-noid", "{\"name\":\"x\"}", "\"id\" is missing" },
        { "m-idmismatch", "{\"id\":\"other\"}", "does not match the file name" },
        { "m-shots", "{\"id\":\"m-shots\",\"screenshots\":{\"a\":1}}", "\"screenshots\" is an object" },
        { "m-rec", "{\"id\":\"m-rec\",\"audioSegments\":[1]}", "audioSegments[0] is a number" },
        { "m-name", "{\"id\":\"m-name\",\"name\":42}", "\"name\" is a number" },
        { "m-aidtype", "{\"id\":\"m-aidtype\",\"screenshots\":[{\"attachmentId\":7}]}", "attachmentId is a number" },
        { "m-aidpath", "{\"id\":\"m-aidpath\",\"screenshots\":[{\"attachmentId\":\"../x\"}]}", "not a valid attachment id" },
        { "m-b64", "{\"id\":\"m-b64\",\"screenshots\":[{\"attachmentId\":\"bad64\"}]}", "invalid base64" },
        { "m-size", "{\"id\":\"m-size\",\"screenshots\":[{\"attachmentId\":\"badsize\"}]}", "\"size\" is 99" },
        { "m-missing", "{\"id\":\"m-missing\",\"screenshots\":[{},{\"attachmentId\":\"gone\"}]}", "screenshots[1] names attachment gone" },
        { "m-reserved", "{\"id\":\"m-reserved\",\"chunked\":1}", "reserved" },
        { "m-hash", "{\"id\":\"m-hash\",\"screenshots\":[{\"attachmentId\":\"good\",\"attachmentHash\":\"" \
          "0000000000000000000000000000000000000000000000000000000000000000\"}]}", "does not match the content" },
    };
    ts_store *s;
    ts_migrate_report rep;
    ts_migrate_options o = ts_migrate_options_default();
    size_t i;
    ts__buf b;
    fx_init();
    ts__buf_init(&b, NULL);
    fx_session("ok-1", STYLE_FULL, 5, 2);
    put_str("attachments/bad64.json", "{\"id\":\"bad64\",\"base64\":\"QUJD*\"}");
    put_str("attachments/badsize.json", "{\"id\":\"badsize\",\"size\":99,\"base64\":\"QUJD\"}");
    put_str("attachments/good.json", "{\"id\":\"good\",\"base64\":\"QUJD\"}");
    put_str("sessions/not valid!.json", "{}");
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char p[96];
        snprintf(p, sizeof p, "sessions/%s.json", cases[i].id);
        put_file(p, cases[i].json, strlen(cases[i].json));
    }
    fx_session("ok-2", STYLE_MIN, 0, 0);
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    o.now_ms = NOW;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, 2);
    TS_CHECK_EQ_INT(rep.failed, (int)(sizeof cases / sizeof cases[0]) + 1);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t j = item_index(&rep, cases[i].id);
        char p[96];
        TS_CHECK(j != (size_t)-1);
        if (j == (size_t)-1) continue;
        TS_CHECK(rep.items[j].outcome == TS_MIGRATE_FAILED);
        if (!strstr(rep.items[j].reason, cases[i].want))
            printf("    %s: reason \"%s\" lacks \"%s\"\n", cases[i].id, rep.items[j].reason, cases[i].want);
        TS_CHECK(strstr(rep.items[j].reason, cases[i].want) != NULL);
        /* the legacy file is untouched, no chunked copy, no backup */
        snprintf(p, sizeof p, "sessions/%s.json", cases[i].id);
        TS_CHECK(read_file(&FX.io, p, &b) == 0 && b.len == strlen(cases[i].json) &&
                 memcmp(b.data, cases[i].json, b.len) == 0);
        TS_CHECK_EQ_INT(backups_of(&FX.io, cases[i].id), 0);
    }
    TS_CHECK(item_index(&rep, "not valid!.json") != (size_t)-1);
    TS_CHECK(session_matches(s, 0));
    TS_CHECK(session_matches(s, 1));
    {
        ts_migrate_status st;
        TS_CHECK_OK(ts_migrate_status_get(s, &st));
        TS_CHECK_EQ_INT(st.chunked, 2);
        TS_CHECK_EQ_INT(st.legacy, (int)(sizeof cases / sizeof cases[0]));
    }
    ts_migrate_report_free(&rep);
    ts_store_close(s);
    ts__buf_free(&b);
    fx_free();
}

/* A chunk altered on its way to disk: verification names the field, the
   legacy file stays, the chunked copy goes. */
TS_TEST(test_verification_failure)
{
    spy sp;
    ts_io io;
    ts_store *s;
    ts_migrate_report rep;
    ts_migrate_options o = ts_migrate_options_default();
    ts_migrate_status st;
    int ex = 1;
    ts__buf b;
    size_t i;
    fx_init();
    ts__buf_init(&b, NULL);
    fx_session("victim", STYLE_FULL, 4, 5);
    fx_session("bystander", STYLE_FULL, 4, 5);
    spy_vtable(&sp, &FX.io, &io);
    sp.corrupt_prefix = "sessions-chunked/victim/audioSegments/chunk-000";
    sp.from = "words 2 ";
    sp.to = "w0rds 2 ";
    s = open_store(&io);
    if (!s) { TS_CHECK(0); return; }
    o.now_ms = NOW;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, 1);
    TS_CHECK_EQ_INT(rep.failed, 1);
    i = item_index(&rep, "victim");
    TS_CHECK(i != (size_t)-1);
    if (i != (size_t)-1) {
        TS_CHECK(strstr(rep.items[i].reason, "audioSegments[2].transcription") != NULL);
        TS_CHECK(strstr(rep.items[i].reason, "verification failed") != NULL);
    }
    TS_CHECK(read_file(&FX.io, "sessions/victim.json", &b) == 0 && b.len == FX.text[0].len &&
             memcmp(b.data, FX.text[0].data, b.len) == 0);
    TS_CHECK_OK(ts_session_exists(s, "victim", &ex));
    TS_CHECK_EQ_INT(ex, 0);
    TS_CHECK_OK(ts_migrate_status_get(s, &st));
    TS_CHECK_EQ_INT(st.legacy, 1);
    TS_CHECK_EQ_INT(st.chunked, 1);
    TS_CHECK(session_matches(s, 1));
    ts_migrate_report_free(&rep);
    /* without the fault the next run migrates it */
    sp.corrupt_prefix = NULL;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, 1);
    TS_CHECK_EQ_INT(rep.backups_reused, 1);                 /* the first run's backup */
    TS_CHECK_EQ_INT(backups_of(&FX.io, "victim"), 1);
    TS_CHECK(session_matches(s, 0));
    ts_migrate_report_free(&rep);
    ts_store_close(s);
    ts__buf_free(&b);
    fx_free();
}

static uint64_t ref_total(ts_store *s)
{
    int k;
    uint64_t sum = 0;
    for (k = 0; k < FX.natt; k++) {
        uint64_t c = 0;
        if (ts_cas_ref_count(s->cas, FX.ahex[k], &c) == TS_OK) sum += c;
    }
    return sum;
}

TS_TEST(test_rollback)
{
    ts_store *s;
    ts_migrate_report rep;
    ts_migrate_options o = ts_migrate_options_default();
    ts__buf b;
    int k, ex = 0;
    fx_standard(0);
    ts__buf_init(&b, NULL);
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    o.now_ms = NOW;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, FX.nsess);
    ts_migrate_report_free(&rep);
    TS_CHECK(ref_total(s) > 0);
    /* one session: byte for byte back, chunked copy and references gone */
    TS_CHECK_OK(ts_migrate_rollback(s, "s-full-1", NULL, 0));
    TS_CHECK(read_file(&FX.io, "sessions/s-full-1.json", &b) == 0 && b.len == FX.text[0].len &&
             memcmp(b.data, FX.text[0].data, b.len) == 0);
    TS_CHECK_OK(ts_session_exists(s, "s-full-1", &ex));
    TS_CHECK_EQ_INT(ex, 0);
    TS_CHECK_EQ_INT(ts_migrate_rollback(s, "s-full-1", "s-full-2.backup-1", 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_migrate_rollback(s, "nobody", NULL, 0), TS_E_NOTFOUND);
    /* changed after migration: refused unless forced */
    TS_CHECK_OK(ts_session_append(s, "s-full-2", "audioSegments", S_LIT("{\"id\":\"late\"}"), NULL));
    TS_CHECK_EQ_INT(ts_migrate_rollback(s, "s-full-2", NULL, 0), TS_E_STATE);
    TS_CHECK_OK(ts_migrate_rollback(s, "s-full-2", NULL, TS_MIGRATE_FORCE));
    /* a corrupt backup is refused */
    {
        char name[96];
        ts__buf p;
        ts__buf_init(&p, NULL);
        snprintf(name, sizeof name, "sessions/s-min.backup-%llu", (unsigned long long)NOW);
        TS_CHECK(read_file(&FX.io, name, &p) == 0);
        if (p.len > 20) {
            ((char *)p.data)[p.len - 3] ^= 1;   /* inside the original bytes */
            put_file(name, p.data, p.len);
            TS_CHECK_EQ_INT(ts_migrate_rollback(s, "s-min", NULL, 0), TS_E_CORRUPT);
        }
        ts__buf_free(&p);
    }
    /* all the others */
    TS_CHECK_OK(ts_migrate_rollback_all(s, 0, &rep));
    TS_CHECK_EQ_INT(rep.migrated, FX.nsess - 3);
    TS_CHECK_EQ_INT(rep.failed, 1);                        /* s-min's damaged backup */
    ts_migrate_report_free(&rep);
    for (k = 0; k < FX.nsess; k++) {
        char p[96];
        if (strcmp(FX.ids[k], "s-min") == 0) continue;
        snprintf(p, sizeof p, "sessions/%s.json", FX.ids[k]);
        TS_CHECK(read_file(&FX.io, p, &b) == 0 && b.len == FX.text[k].len &&
                 memcmp(b.data, FX.text[k].data, b.len) == 0);
    }
    TS_CHECK_EQ_INT(ref_total(s), 0);                      /* every reference released */
    /* and migrating again gives the same sessions (the backups are reused) */
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, FX.nsess - 1);
    TS_CHECK_EQ_INT(rep.backups_reused, FX.nsess - 1);
    ts_migrate_report_free(&rep);
    for (k = 0; k < FX.nsess; k++) TS_CHECK(session_matches(s, k));
    ts_store_close(s);
    ts__buf_free(&b);
    fx_free();
}

TS_TEST(test_cleanup)
{
    ts_store *s;
    ts_migrate_report rep;
    ts_migrate_options o = ts_migrate_options_default();
    ts_migrate_cleanup_report cr;
    ts_migrate_status st;
    fx_standard(0);
    put_str("sessions/stays-legacy.json",
             "{\"id\":\"stays-legacy\",\"screenshots\":[{\"attachmentId\":\"att-0\"},{\"attachmentId\":\"gone\"}]}");
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    o.now_ms = NOW;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.failed, 1);
    ts_migrate_report_free(&rep);
    /* nothing expires before 30 days */
    TS_CHECK_OK(ts_migrate_cleanup(s, NOW + 29 * DAY_MS, TS_MIGRATE_CLEAN_ATTACHMENTS, &cr));
    TS_CHECK_EQ_INT(cr.backups_removed, 0);
    TS_CHECK_EQ_INT(cr.attachments_removed, 0);        /* the backups still name them */
    TS_CHECK_EQ_INT(cr.backups_kept, FX.nsess);
    /* after 30 days the backups go; attachments only with the flag and only
       those no legacy session names */
    TS_CHECK_OK(ts_migrate_cleanup(s, NOW + 31 * DAY_MS, 0, &cr));
    TS_CHECK_EQ_INT(cr.backups_removed, FX.nsess);
    TS_CHECK_EQ_INT(cr.attachments_removed, 0);
    TS_CHECK(file_exists(&FX.io, "attachments/att-1.json"));
    TS_CHECK_OK(ts_migrate_cleanup(s, NOW + 31 * DAY_MS, TS_MIGRATE_CLEAN_ATTACHMENTS, &cr));
    TS_CHECK_EQ_INT(cr.attachments_removed, FX.natt - 1);
    TS_CHECK(file_exists(&FX.io, "attachments/att-0.json"));  /* stays-legacy names it */
    TS_CHECK(!file_exists(&FX.io, "attachments/att-1.json"));
    TS_CHECK(attachments_ok(s));                                /* bytes live on in the CA store */
    TS_CHECK_OK(ts_migrate_status_get(s, &st));
    TS_CHECK_EQ_INT(st.backups, 0);
    TS_CHECK_EQ_INT(st.legacy_attachments, 1);
    ts_store_close(s);
    fx_free();
}

static int point_cb(void *user, const char *name)
{
    snprintf((char *)user, 32, "%s", name);
    return 0;
}

TS_TEST(test_rollback_points)
{
    ts_store *s;
    ts_migrate_report rep;
    ts_migrate_options o = ts_migrate_options_default();
    char name[32], listed[32];
    ts__buf b;
    int k;
    fx_standard(0);
    ts__buf_init(&b, NULL);
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    TS_CHECK_OK(ts_migrate_point_create(s, NOW, name));
    TS_CHECK_OK(ts_migrate_point_verify(s, name, &rep));
    TS_CHECK_EQ_INT(rep.failed, 0);
    TS_CHECK_EQ_INT(rep.candidates, FX.nsess + FX.natt);
    ts_migrate_report_free(&rep);
    listed[0] = 0;
    TS_CHECK_OK(ts_migrate_point_list(s, point_cb, listed));
    TS_CHECK_EQ_STR(listed, name);
    o.now_ms = NOW + 5;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    ts_migrate_report_free(&rep);
    /* restorable: the backups hold every session's bytes */
    TS_CHECK_OK(ts_migrate_point_verify(s, name, &rep));
    TS_CHECK_EQ_INT(rep.failed, 0);
    ts_migrate_report_free(&rep);
    TS_CHECK_OK(ts_migrate_point_restore(s, name, 0, &rep));
    TS_CHECK_EQ_INT(rep.migrated, FX.nsess);
    ts_migrate_report_free(&rep);
    for (k = 0; k < FX.nsess; k++) {
        char p[96];
        int ex = 1;
        snprintf(p, sizeof p, "sessions/%s.json", FX.ids[k]);
        TS_CHECK(read_file(&FX.io, p, &b) == 0 && b.len == FX.text[k].len &&
                 memcmp(b.data, FX.text[k].data, b.len) == 0);
        ts_session_exists(s, FX.ids[k], &ex);
        TS_CHECK_EQ_INT(ex, 0);
    }
    /* integrity: a damaged attachment and a damaged point are reported */
    put_str("attachments/att-2.json", "{}");
    TS_CHECK_EQ_INT(ts_migrate_point_verify(s, name, &rep), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(rep.failed, 1);
    TS_CHECK(rep.item_count && item_index(&rep, "attachments/att-2.json") != (size_t)-1);
    ts_migrate_report_free(&rep);
    {
        char p[64];
        snprintf(p, sizeof p, "migration/points/%s.json", name);
        TS_CHECK(read_file(&FX.io, p, &b) == 0);
        ((char *)b.data)[30] ^= 1;
        put_file(p, b.data, b.len);
        TS_CHECK_EQ_INT(ts_migrate_point_verify(s, name, &rep), TS_E_CORRUPT);
        ts_migrate_report_free(&rep);
    }
    TS_CHECK_EQ_INT(ts_migrate_point_verify(s, "../x", NULL), TS_E_INVALID);
    ts_store_close(s);
    ts__buf_free(&b);
    fx_free();
}

TS_TEST(test_on_demand)
{
    ts_store *s;
    ts_blob b;
    ts_migrate_status st;
    fx_standard(0);
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    TS_CHECK_OK(ts_migrate_load(s, "s-full-2", &b));
    TS_CHECK(b.len > 100);
    ts_blob_free(&b);
    TS_CHECK(session_matches(s, 1));
    TS_CHECK(!file_exists(&FX.io, "sessions/s-full-2.json"));
    TS_CHECK_OK(ts_migrate_status_get(s, &st));
    TS_CHECK_EQ_INT(st.chunked, 1);
    TS_CHECK_EQ_INT(st.legacy, FX.nsess - 1);
    TS_CHECK_OK(ts_migrate_load(s, "s-full-2", &b));          /* already chunked: a plain load */
    ts_blob_free(&b);
    TS_CHECK_EQ_INT(ts_migrate_load(s, "nobody", &b), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts_migrate_session(s, "s-full-2", NULL, NULL), TS_DONE);
    TS_CHECK_OK(ts_migrate_session(s, "s-min", NULL, NULL));
    ts_store_close(s);
    fx_free();
}

/* Each step alone, in order, ends where all of them together end. */
TS_TEST(test_steps_separately)
{
    ts_store *s;
    ts_migrate_report rep;
    ts_migrate_options o = ts_migrate_options_default();
    ts_blob b;
    int k;
    fx_standard(0);
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    o.now_ms = NOW;
    o.steps = TS_MIGRATE_STEP_CHUNKED;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, FX.nsess);
    TS_CHECK_EQ_INT(rep.attachments_imported, 0);
    ts_migrate_report_free(&rep);
    TS_CHECK_OK(ts_session_load_range(s, "s-full-1", "screenshots", 0, 1, &b));
    TS_CHECK(strstr((const char *)b.data, "attachmentHash") == NULL);
    ts_blob_free(&b);
    o.steps = TS_MIGRATE_STEP_CA;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, 2);                      /* the sessions with attachments */
    TS_CHECK_EQ_INT(rep.skipped, FX.nsess - 2);
    TS_CHECK_EQ_INT(rep.attachments_imported + rep.attachments_deduplicated, FX.natt);
    ts_migrate_report_free(&rep);
    o.steps = TS_MIGRATE_STEP_INDEX;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK(rep.index_built);
    TS_CHECK_EQ_INT(rep.index_sessions, FX.nsess);
    ts_migrate_report_free(&rep);
    o.steps = TS_MIGRATE_STEP_COMPRESS;                    /* no compressor given */
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.compress_result, TS_E_NOTIMPL);
    ts_migrate_report_free(&rep);
    for (k = 0; k < FX.nsess; k++) TS_CHECK(session_matches(s, k));
    TS_CHECK(attachments_ok(s));
    TS_CHECK_OK(ts_migrate_verify(s, 0, &rep));
    ts_migrate_report_free(&rep);
    ts_store_close(s);
    fx_free();
}

static int compress_calls;
static ts_result fake_compress(void *user, ts_store *s, const char *id)
{
    (void)user; (void)s; (void)id;
    compress_calls++;
    return TS_OK;
}

TS_TEST(test_background)
{
    ts_store *s;
    ts_migrator *m = NULL;
    ts_migrate_options o = ts_migrate_options_default();
    ts_migrate_progress p;
    prog_log pl;
    uint64_t now = NOW;
    int k, rounds = 0;
    fx_init();
    for (k = 0; k < 9; k++) {
        char id[32];
        snprintf(id, sizeof id, "bg-%02d", k);
        fx_session(id, k % 3 == 0 ? STYLE_MIN : STYLE_FULL, 3, 2);
    }
    put_str("sessions/bg-bad.json", "nope");
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    memset(&pl, 0, sizeof pl);
    pl.monotonic = 1;
    o.batch_size = 2;
    o.progress = prog_cb;
    o.progress_user = &pl;
    o.steps = TS_MIGRATE_STEPS_DEFAULT | TS_MIGRATE_STEP_COMPRESS;
    o.compress_fn = fake_compress;
    o.compress_age_ms = 3 * DAY_MS;
    compress_calls = 0;
    TS_CHECK_OK(ts_migrator_start(s, &o, &m));
    if (!m) { ts_store_close(s); return; }
    TS_CHECK(file_exists(&FX.io, "migration/progress.json"));
    /* one idle call: one batch */
    now += 1000;
    ts_store_idle(s, now, 100000000);
    TS_CHECK_OK(ts_migrator_progress(m, &p));
    TS_CHECK_EQ_INT(p.total, 10);
    TS_CHECK_EQ_INT(p.done, 2);
    TS_CHECK(p.percent > 19.9 && p.percent < 20.1);
    TS_CHECK_EQ_INT(pl.sessions, 2);
    /* paused: idle does nothing */
    TS_CHECK_OK(ts_migrator_pause(m));
    now += 1000;
    ts_store_idle(s, now, 100000000);
    TS_CHECK_OK(ts_migrator_progress(m, &p));
    TS_CHECK_EQ_INT(p.done, 2);
    TS_CHECK(p.paused);
    TS_CHECK_OK(ts_migrator_resume(m));
    while (rounds++ < 50) {
        now += 1000;
        ts_store_idle(s, now, 100000000);
        TS_CHECK_OK(ts_migrator_progress(m, &p));
        if (p.done < p.total) TS_CHECK(p.eta_ms > 0);     /* 1 s per batch of 2 */
        if (p.finished) break;
    }
    TS_CHECK(p.finished);
    TS_CHECK_EQ_INT(p.done, 10);
    TS_CHECK(pl.monotonic);
    TS_CHECK_EQ_INT(pl.finished, 1);
    TS_CHECK_EQ_INT(ts_migrator_report(m)->migrated, 9);
    TS_CHECK_EQ_INT(ts_migrator_report(m)->failed, 1);
    TS_CHECK(ts_migrator_report(m)->index_built);
    TS_CHECK_EQ_INT(compress_calls, 4);                      /* sessions older than 3 days */
    TS_CHECK(!file_exists(&FX.io, "migration/progress.json"));
    for (k = 0; k < 9; k++) TS_CHECK(session_matches(s, k));
    ts_migrator_destroy(m);
    /* cancel: stops, forgets the progress */
    fx_session("late-1", STYLE_FULL, 2, 1);
    fx_session("late-2", STYLE_FULL, 2, 1);
    fx_session("late-3", STYLE_FULL, 2, 1);
    o.batch_size = 1;
    o.steps = 0;
    memset(&pl, 0, sizeof pl);
    pl.monotonic = 1;
    TS_CHECK_OK(ts_migrator_start(s, &o, &m));
    now += 1000;
    ts_store_idle(s, now, 100000000);
    TS_CHECK_OK(ts_migrator_cancel(m));
    now += 1000;
    ts_store_idle(s, now, 100000000);
    TS_CHECK_EQ_INT(ts_migrator_report(m)->migrated + ts_migrator_report(m)->failed, 1);
    TS_CHECK(!file_exists(&FX.io, "migration/progress.json"));
    ts_migrator_destroy(m);
    ts_store_close(s);
    fx_free();
}

/* Progress persists: a close in the middle, then a new migrator resumes. */
TS_TEST(test_background_resume_after_close)
{
    ts_store *s;
    ts_migrator *m = NULL;
    ts_migrate_options o = ts_migrate_options_default();
    ts_migrate_progress p;
    ts_migrate_status st;
    uint64_t now = NOW;
    int k, rounds = 0;
    fx_init();
    for (k = 0; k < 7; k++) {
        char id[32];
        snprintf(id, sizeof id, "r-%d", k);
        fx_session(id, STYLE_FULL, 2, 1);
    }
    put_str("sessions/r-bad.json", "[]");
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    o.batch_size = 3;
    TS_CHECK_OK(ts_migrator_start(s, &o, &m));
    ts_store_idle(s, now += 1000, 100000000);           /* r-0, r-1, r-2 */
    ts_store_idle(s, now += 1000, 100000000);           /* r-3, r-4, r-5 */
    ts_migrator_destroy(m);
    TS_CHECK_OK(ts_store_close(s));
    TS_CHECK(file_exists(&FX.io, "migration/progress.json"));
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    TS_CHECK_OK(ts_migrate_status_get(s, &st));
    TS_CHECK(st.background);
    TS_CHECK_OK(ts_migrator_start(s, NULL, &m));        /* resumes with the saved options */
    TS_CHECK_OK(ts_migrator_progress(m, &p));
    TS_CHECK_EQ_INT(p.total, 8);
    TS_CHECK(p.done >= 6);
    while (rounds++ < 20) {
        ts_store_idle(s, now += 1000, 100000000);
        ts_migrator_progress(m, &p);
        if (p.finished) break;
    }
    TS_CHECK(p.finished);
    TS_CHECK_EQ_INT(p.done, 8);
    TS_CHECK_EQ_INT(ts_migrator_report(m)->migrated, 1);
    TS_CHECK_EQ_INT(ts_migrator_report(m)->failed, 1);
    for (k = 0; k < 7; k++) {
        TS_CHECK(session_matches(s, k));
        TS_CHECK_EQ_INT(backups_of(&FX.io, FX.ids[k]), 1);
    }
    TS_CHECK_OK(ts_migrate_status_get(s, &st));
    TS_CHECK_EQ_INT(st.legacy, 1);                      /* r-bad */
    TS_CHECK(!st.background);
    ts_migrator_destroy(m);
    ts_store_close(s);
    fx_free();
}

/* ---- power loss at every I/O step of a background migration ---------------------- */

static void crash_fixture(void)
{
    fx_init();
    fx_session("c-a", STYLE_FULL, 4, 2);
    fx_session("c-b", STYLE_FULL, 3, 1);
    fx_session("c-c", STYLE_MIN, 0, 0);
}

/* Drives a background migration to its end; 0 if the store died first. */
static int drive(ts_store *s, ts_io_fault *f, uint64_t *now)
{
    ts_migrator *m = NULL;
    ts_migrate_options o = ts_migrate_options_default();
    ts_migrate_progress p;
    int rounds = 0, finished = 0;
    o.batch_size = 2;
    if (ts_migrator_start(s, &o, &m) != TS_OK) return 0;
    while (rounds++ < 40) {
        *now += 500;
        ts_store_idle(s, *now, 100000000);
        if (f && ts_io_fault_crashed(f)) break;
        ts_migrator_progress(m, &p);
        if (p.finished) { finished = 1; break; }
    }
    ts_migrator_destroy(m);
    return finished;
}

/* Everything a finished migration promises. */
static int check_final(const ts_io *io, const char *what)
{
    ts_store *s = open_store(io);
    ts_migrate_status st;
    ts__buf b;
    int k, ok = 1;
    if (!s) { printf("    %s: reopen failed\n", what); return 0; }
    ts__buf_init(&b, NULL);
    if (ts_migrate_status_get(s, &st) != TS_OK || st.legacy != 0 || st.chunked != (uint64_t)FX.nsess) {
        printf("    %s: status legacy %llu chunked %llu\n", what, (unsigned long long)st.legacy,
               (unsigned long long)st.chunked);
        ok = 0;
    }
    for (k = 0; k < FX.nsess && ok; k++) {
        char p[96];
        ts__mig_bkinfo bi;
        if (!session_matches(s, k)) { ok = 0; break; }
        if (backups_of(io, FX.ids[k]) != 1) {
            printf("    %s: %s has %d backups\n", what, FX.ids[k], backups_of(io, FX.ids[k]));
            ok = 0;
            break;
        }
        (void)p; (void)bi;
    }
    if (ok && !attachments_ok(s)) { printf("    %s: attachments\n", what); ok = 0; }
    if (ok) {
        /* reference counts exact: one per (session, screenshot record) */
        ts_migrate_report rep;
        if (ts_migrate_verify(s, 0, &rep) != TS_OK) {
            printf("    %s: verify: %s\n", what, rep.item_count ? rep.items[0].reason : "?");
            ok = 0;
        }
        ts_migrate_report_free(&rep);
    }
    if (ok && file_exists(io, "migration/progress.json")) { printf("    %s: progress left\n", what); ok = 0; }
    for (k = 0; k < FX.natt && ok; k++) {
        char p[96];
        snprintf(p, sizeof p, "attachments/%s.json", FX.aid[k]);
        if (!file_exists(io, p)) ok = 0;
    }
    ts_store_close(s);
    ts__buf_free(&b);
    return ok;
}

TS_TEST(test_crash_every_step)
{
    uint64_t k, total_ops = 0;
    int failures = 0, runs = 0, mode;
    /* ops of one undisturbed run */
    {
        ts_io_fault *f;
        ts_io fio;
        ts_store *s;
        uint64_t now = NOW;
        crash_fixture();
        ts_io_fault_create(&FX.io, NULL, &f);
        ts_io_fault_vtable(f, &fio);
        s = open_store(&fio);
        TS_CHECK(s && drive(s, f, &now));
        ts_store_close(s);
        total_ops = ts_io_fault_ops(f);
        ts_io_fault_destroy(f);
        TS_CHECK(check_final(&FX.io, "clean run"));
    }
    TS_CHECK(total_ops > 50);
    for (mode = 0; mode < 2; mode++) {
        for (k = 1; k <= total_ops + 1; k += ts_test_small() ? 5 : 1) {
            ts_io_fault *f;
            ts_io fio;
            ts_store *s;
            ts_fault_plan plan;
            uint64_t now = NOW;
            int done = 0;
            char what[64];
            if (mode == 1 && !test_long() && k % 3 != 0) continue;
            crash_fixture();
            ts_io_fault_create(&FX.io, NULL, &f);
            ts_io_fault_vtable(f, &fio);
            memset(&plan, 0, sizeof plan);
            plan.fail_at = k;
            plan.crash = 1;
            ts_io_fault_set(f, &plan);
            s = open_store(&fio);
            if (s) {
                done = drive(s, f, &now);
                ts_store_close(s);
            }
            /* power loss: keep only what was durable */
            ts_io_mem_crash(FX.mem, mode ? TS_CRASH_RANDOM : TS_CRASH_DROP_UNSYNCED, k * 31 + 7);
            ts_io_fault_reset(f);
            if (!done) {
                s = open_store(&fio);
                if (!s || !drive(s, NULL, &now)) {
                    printf("    crash at op %llu (mode %d): resume did not finish\n", (unsigned long long)k, mode);
                    failures++;
                }
                if (s) ts_store_close(s);
            }
            snprintf(what, sizeof what, "crash at op %llu mode %d", (unsigned long long)k, mode);
            if (!check_final(&FX.io, what)) failures++;
            ts_io_fault_destroy(f);
            runs++;
            if (failures > 3) break;
        }
    }
    if (getenv("TS_TEST_VERBOSE"))
        printf("    crash test: %llu I/O operations per run, %d crash runs\n", (unsigned long long)total_ops, runs);
    TS_CHECK_EQ_INT(failures, 0);
    TS_CHECK(runs > (ts_test_small() ? 10 : 50));
    fx_free();
}

/* ---- bounded memory: a session of 1,200 screenshots ------------------------------- */

typedef struct track { size_t live, peak; } track;
static void *tr_alloc(size_t n, void *u)
{
    track *t = (track *)u;
    void *p = malloc(n);
    if (p) { t->live += n; if (t->live > t->peak) t->peak = t->live; }
    return p;
}
static void *tr_realloc(void *p, size_t o, size_t n, void *u)
{
    track *t = (track *)u;
    void *q = realloc(p, n);
    if (q) { t->live += n; t->live -= o; if (t->live > t->peak) t->peak = t->live; }
    return q;
}
static void tr_free(void *p, size_t n, void *u)
{
    track *t = (track *)u;
    if (p) { t->live -= n; free(p); }
}

TS_TEST(test_memory_bounded)
{
    ts_store *s = NULL;
    ts_store_config c;
    ts_migrate_options o = ts_migrate_options_default();
    ts_migrate_report rep;
    track t;
    size_t before;
    uint64_t att_bytes = 0;
    int k;
    fx_init();
    /* 1,200 distinct attachments of ~4 KiB: 4.8 MB of content */
    {
        ts__buf b;
        ts__buf_init(&b, NULL);
        ts__buf_puts(&b, "{\"id\":\"huge\",\"screenshots\":[");
        for (k = 0; k < 1200; k++) {
            char id[32];
            size_t i;
            for (i = 0; i < 4096; i++) g_img[i] = (unsigned char)(rnd() >> 3);
            snprintf(id, sizeof id, "big-%d", k);
            fx_att(id, g_img, 4096, 0);
            att_bytes += 4096;
            ts__buf_printf(&b, "%s{\"id\":\"s%d\",\"attachmentId\":\"%s\"}", k ? "," : "", k, id);
        }
        ts__buf_puts(&b, "]}");
        put_file("sessions/huge.json", b.data, b.len);
        FX.nsess = 1;
        snprintf(FX.ids[0], sizeof FX.ids[0], "huge");
        ts__buf_append(&FX.text[0], b.data, b.len);
        ts__buf_free(&b);
    }
    memset(&t, 0, sizeof t);
    c = cfg_for(&FX.io);
    c.allocator.alloc_fn = tr_alloc;
    c.allocator.realloc_fn = tr_realloc;
    c.allocator.free_fn = tr_free;
    c.allocator.user = &t;
    c.cache_max_bytes = 1 << 20;
    TS_CHECK_OK(ts_store_open("mem", &c, &s));
    if (!s) return;
    before = t.live;
    t.peak = t.live;
    o.now_ms = NOW;
    o.flush_bytes = 512 * 1024;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_EQ_INT(rep.migrated, 1);
    ts_migrate_report_free(&rep);
    /* never near all the attachment bytes (4.8 MB, 6.5 MB as base64) */
    if (t.peak - before >= att_bytes / 2)
        printf("    peak %lu bytes over %lu of attachments\n", (unsigned long)(t.peak - before),
               (unsigned long)att_bytes);
    TS_CHECK(t.peak - before < att_bytes / 2);
    TS_CHECK(session_matches(s, 0));
    ts_store_close(s);
    fx_free();
}

/* ---- the JSON tsk prints ---------------------------------------------------------------- */

TS_TEST(test_json_shapes)
{
    ts_store *s;
    ts_migrate_report rep;
    ts_migrate_status st;
    ts_migrate_options o = ts_migrate_options_default();
    ts_blob b;
    ts_json_doc *doc;
    const ts_json *root;
    fx_standard(0);
    put_str("sessions/broken.json", "{");
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    o.now_ms = NOW;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    TS_CHECK_OK(ts_migrate_report_json(&rep, &b));
    TS_CHECK_OK(ts_json_parse((const char *)b.data, b.len, NULL, &doc, &root));
    {
        int64_t v = -1;
        const ts_json *f = ts_json_get(root, "failed");
        TS_CHECK(ts_json_int(ts_json_get(root, "migrated"), &v) && v == FX.nsess);
        TS_CHECK(ts_json_int(ts_json_get(root, "skipped"), &v) && v == 0);
        TS_CHECK(ts_json_count(f) == 1);
        TS_CHECK(strcmp(ts_json_string(ts_json_get(ts_json_first(f), "id"), NULL), "broken") == 0);
        TS_CHECK(ts_json_string(ts_json_get(ts_json_first(f), "reason"), NULL) != NULL);
    }
    ts_json_free(doc);
    ts_blob_free(&b);
    ts_migrate_report_free(&rep);
    TS_CHECK_OK(ts_migrate_status_get(s, &st));
    TS_CHECK_OK(ts_migrate_status_json(&st, &b));
    TS_CHECK_OK(ts_json_parse((const char *)b.data, b.len, NULL, &doc, &root));
    {
        int64_t v = -1;
        double pct = 0;
        TS_CHECK(ts_json_int(ts_json_get(root, "total"), &v) && v == FX.nsess + 1);
        TS_CHECK(ts_json_int(ts_json_get(root, "chunked"), &v) && v == FX.nsess);
        TS_CHECK(ts_json_int(ts_json_get(root, "legacy"), &v) && v == 1);
        TS_CHECK(ts_json_number(ts_json_get(root, "percentage"), &pct) && pct > 83.3 && pct < 83.4);
    }
    ts_json_free(doc);
    ts_blob_free(&b);
    ts_store_close(s);
    fx_free();
}

/* verify finds and repairs reference counts and the index */
TS_TEST(test_verify_repair)
{
    ts_store *s;
    ts_migrate_report rep;
    ts_migrate_options o = ts_migrate_options_default();
    fx_standard(0);
    s = open_store(&FX.io);
    if (!s) { TS_CHECK(0); return; }
    o.now_ms = NOW;
    TS_CHECK_OK(ts_migrate_run(s, &o, &rep));
    ts_migrate_report_free(&rep);
    /* a reference lost behind the store's back */
    TS_CHECK_OK(ts_cas_ref_remove(s->cas, FX.ahex[1], "s-full-1", "shot-1") == TS_OK ? TS_OK :
                ts_cas_ref_remove(s->cas, FX.ahex[0], "s-full-1", "shot-0"));
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK_EQ_INT(ts_migrate_verify(s, 0, &rep), TS_E_CORRUPT);
    TS_CHECK(rep.failed >= 1);
    ts_migrate_report_free(&rep);
    TS_CHECK_OK(ts_migrate_verify(s, 1, &rep));
    ts_migrate_report_free(&rep);
    TS_CHECK_OK(ts_migrate_verify(s, 0, &rep));
    ts_migrate_report_free(&rep);
    ts_store_close(s);
    fx_free();
}


/* the fast base64 path accepts exactly what the strict decoder accepts, and
   decodes to the same bytes */
TS_TEST(test_base64_fast_path)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n:d";
    char in[64];
    ts__buf fast, slow;
    int i, agree = 1, accepted = 0;
    ts__buf_init(&fast, NULL);
    ts__buf_init(&slow, NULL);
    for (i = 0; i < 200000 && agree; i++) {
        size_t n = rnd() % 24, k, flen = 0;
        ts__b64_info bi;
        int f, ok;
        for (k = 0; k < n; k++) {
            unsigned r = rnd() % 100;
            in[k] = r < 90 ? al[rnd() % 64] : al[rnd() % (sizeof al - 1)];
        }
        if (n >= 2 && rnd() % 3 == 0) { in[n - 1] = '='; if (rnd() % 2) in[n - 2] = '='; }
        f = ts__mig_b64_fast(in, n, &fast, &flen);
        ok = ts__base64_check(in, n, &bi);
        if (f && !ok) agree = 0;
        if (f && ok) {
            slow.len = 0;
            ts__buf_reserve(&slow, bi.out_len + 1);
            ts__base64_decode(in, n, &bi, slow.data);
            if (flen != bi.out_len || (flen && memcmp(fast.data, slow.data, flen) != 0)) agree = 0;
            accepted++;
        }
        if (ok && !f && n % 4 == 0 && !memchr(in, ' ', n) && !memchr(in, '\n', n) && !memchr(in, ':', n))
            agree = 0;                          /* the common case must take the fast path */
    }
    TS_CHECK(agree);
    TS_CHECK(accepted > 1000);
    ts__buf_free(&fast);
    ts__buf_free(&slow);
}

int main(void)
{
    TS_RUN(test_base64_fast_path);
    TS_RUN(test_full_migration);
    TS_RUN(test_dry_run_writes_nothing);
    TS_RUN(test_malformed_sessions);
    TS_RUN(test_verification_failure);
    TS_RUN(test_rollback);
    TS_RUN(test_cleanup);
    TS_RUN(test_rollback_points);
    TS_RUN(test_on_demand);
    TS_RUN(test_steps_separately);
    TS_RUN(test_background);
    TS_RUN(test_background_resume_after_close);
    TS_RUN(test_crash_every_step);
    TS_RUN(test_memory_bounded);
    TS_RUN(test_json_shapes);
    TS_RUN(test_verify_repair);
    return ts_test_report("migrate");
}
