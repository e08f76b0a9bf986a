/* Tests of the content-addressable attachment store (ts_cas): dedup,
   references, GC with and without grace, verify of tampered bytes, hostile
   metadata, base64 import, statistics, repair, sync budgets, a crash at every
   I/O step of save+reference and of remove+GC, OOM, and a POSIX run. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

#define HOUR 3600000ull

/* ---- helpers -------------------------------------------------------------- */

static ts_cas *open_cas(const ts_io *io, int64_t grace)
{
    ts_cas_config cfg;
    ts_cas *cas = NULL;
    memset(&cfg, 0, sizeof cfg);
    cfg.io = io;
    cfg.gc_grace_ms = grace;
    if (ts_cas_open(&cfg, &cas) != TS_OK) return NULL;
    return cas;
}

static ts_cas_ref mkref(const char *sid, const char *aid, uint64_t t)
{
    ts_cas_ref r;
    r.session_id = sid;
    r.attachment_id = aid;
    r.added_at_ms = t;
    return r;
}

static void fill(unsigned char *p, size_t n, uint32_t seed)
{
    size_t i;
    uint32_t x = seed * 2654435761u + 1;
    for (i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; p[i] = (unsigned char)x; }
}

static void hash_of(const void *p, size_t n, char out[65])
{
    unsigned char d[32];
    ts_sha256_buffer(p, n, d);
    ts_sha256_hex(d, out);
}

static void obj_path(char *out, size_t cap, const char *hash, const char *file)
{
    snprintf(out, cap, "attachments-ca/%.2s/%s/%s", hash, hash, file);
}

static ts_io_counters counters(const ts_io *io)
{
    ts_io_counters c;
    ts_io_counters_get(io, &c);
    return c;
}

static void blob_free(ts_blob *b)
{
    if (b->data) ts__free(&b->alloc, b->data, b->cap);
    memset(b, 0, sizeof *b);
}

static int count_refs_cb(void *user, const ts_cas_ref *ref)
{
    (void)ref;
    (*(int *)user)++;
    return 0;
}

static const char *last_msg(ts_cas *cas)
{
    static ts_error_info e;
    ts_cas_last_error(cas, &e);
    return e.message;
}

static const char b64_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i, o = 0;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alpha[v >> 18]; out[o++] = b64_alpha[(v >> 12) & 63];
        out[o++] = b64_alpha[(v >> 6) & 63]; out[o++] = b64_alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64_alpha[v >> 18]; out[o++] = b64_alpha[(v >> 12) & 63];
        out[o++] = '='; out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_alpha[v >> 18]; out[o++] = b64_alpha[(v >> 12) & 63];
        out[o++] = b64_alpha[(v >> 6) & 63]; out[o++] = '=';
    }
    out[o] = 0;
    return o;
}

/* ---- base64 --------------------------------------------------------------- */

static int b64_ok(const char *s, const char *expect, size_t expect_len)
{
    ts__b64_info bi;
    unsigned char out[64];
    if (!ts__base64_check(s, strlen(s), &bi)) return 0;
    if (bi.out_len != expect_len || bi.out_len > sizeof out) return 0;
    ts__base64_decode(s, strlen(s), &bi, out);
    return memcmp(out, expect, expect_len) == 0;
}

static int b64_bad(const char *s)
{
    ts__b64_info bi;
    return !ts__base64_check(s, strlen(s), &bi) && bi.why != NULL;
}

TS_TEST(base64_strict_rules)
{
    ts__b64_info bi;
    TS_CHECK(b64_ok("", "", 0));
    TS_CHECK(b64_ok("Zg==", "f", 1));
    TS_CHECK(b64_ok("Zm8=", "fo", 2));
    TS_CHECK(b64_ok("Zm9v", "foo", 3));
    TS_CHECK(b64_ok("Zm9vYmFy", "foobar", 6));
    TS_CHECK(b64_ok("Zm9v\r\nYmFy\n", "foobar", 6));         /* wrapped lines */
    TS_CHECK(b64_ok(" Zm 9v\tYm Fy ", "foobar", 6));
    TS_CHECK(b64_ok("Zm8=\n", "fo", 2));                     /* whitespace after padding */
    TS_CHECK(b64_ok("data:image/png;base64,Zm9v", "foo", 3));
    TS_CHECK(b64_ok("DATA:text/plain;charset=utf-8;BASE64,Zm9v", "foo", 3));
    TS_CHECK(b64_ok("+/+/", "\xfb\xff\xbf", 3));
    TS_CHECK(b64_bad("Zg"));          /* padding required */
    TS_CHECK(b64_bad("Zm9vYg"));
    TS_CHECK(b64_bad("Zg="));
    TS_CHECK(b64_bad("Z==="));        /* too much padding */
    TS_CHECK(b64_bad("===="));
    TS_CHECK(b64_bad("Zg==Zg=="));    /* data after padding */
    TS_CHECK(b64_bad("Zh=="));        /* non-zero trailing bits */
    TS_CHECK(b64_bad("Zm9="));
    TS_CHECK(b64_bad("Zm9v-_8="));    /* URL-safe alphabet */
    TS_CHECK(b64_bad("Zm9v!"));
    TS_CHECK(!ts__base64_check("Zm9v\0Zg==", 9, &bi) && bi.bad_at == 4);
    TS_CHECK(b64_bad("data:image/png,Zm9v"));      /* not ;base64 */
    TS_CHECK(b64_bad("data:image/png;base64Zm9v")); /* no comma */
    TS_CHECK(!ts__base64_check("Zm9v#mFy", 8, &bi) && bi.bad_at == 4);
}

TS_TEST(base64_roundtrip_random)
{
    static unsigned char in[700], out[700];
    static char text[1000];
    size_t n;
    for (n = 0; n < 700; n += 7) {
        ts__b64_info bi;
        size_t tl;
        fill(in, n, (uint32_t)n + 3);
        tl = b64_encode(in, n, text);
        TS_CHECK(ts__base64_check(text, tl, &bi));
        TS_CHECK_EQ_INT(bi.out_len, n);
        memset(out, 0xAA, sizeof out);
        ts__base64_decode(text, tl, &bi, out);
        TS_CHECK(memcmp(in, out, n) == 0);
    }
}

/* ---- save / load / dedup ---------------------------------------------------- */

TS_TEST(save_load_roundtrip)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    unsigned char data[5000], buf[5000];
    char hash[65], expect[65];
    ts_cas_info info;
    ts_blob blob;
    size_t size = 0;
    int ex = 0;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    TS_CHECK(cas != NULL);
    fill(data, sizeof data, 1);
    hash_of(data, sizeof data, expect);
    TS_CHECK_OK(ts_cas_save(cas, data, sizeof data, "image/png", NULL, 1000, hash));
    TS_CHECK_EQ_STR(hash, expect);
    TS_CHECK_OK(ts_cas_exists(cas, hash, &ex));
    TS_CHECK_EQ_INT(ex, 1);
    TS_CHECK_OK(ts_cas_stat(cas, hash, &info));
    TS_CHECK_EQ_STR(info.mime_type, "image/png");
    TS_CHECK_EQ_STR(info.stored_encoding, "raw");
    TS_CHECK_EQ_INT(info.size, sizeof data);
    TS_CHECK_EQ_INT(info.stored_size, sizeof data);
    TS_CHECK_EQ_INT(info.ref_count, 0);
    TS_CHECK_EQ_INT(info.created_at_ms, 1000);

    TS_CHECK_OK(ts_cas_load(cas, hash, &blob, &info));
    TS_CHECK_EQ_INT(blob.len, sizeof data);
    TS_CHECK(blob.data && memcmp(blob.data, data, sizeof data) == 0);
    TS_CHECK_EQ_STR(info.mime_type, "image/png");
    blob_free(&blob);

    TS_CHECK_OK(ts_cas_load_into(cas, hash, buf, sizeof buf, &size, NULL));
    TS_CHECK_EQ_INT(size, sizeof data);
    TS_CHECK(memcmp(buf, data, sizeof data) == 0);
    TS_CHECK_EQ_INT(ts_cas_load_into(cas, hash, buf, 100, &size, NULL), TS_E_RANGE);
    TS_CHECK_EQ_INT(size, sizeof data);
    {
        ts__buf b;
        ts__buf_init(&b, NULL);
        TS_CHECK_OK(ts__cas_load_buf(cas, hash, &b, &info)); /* the store's path */
        TS_CHECK(b.len == sizeof data && memcmp(b.data, data, sizeof data) == 0);
        TS_CHECK_EQ_INT(info.size, sizeof data);
        ts__buf_free(&b);
    }

    /* empty content and default mime */
    TS_CHECK_OK(ts_cas_save(cas, NULL, 0, NULL, NULL, 1000, hash));
    TS_CHECK_OK(ts_cas_load_into(cas, hash, NULL, 0, &size, &info));
    TS_CHECK_EQ_INT(size, 0);
    TS_CHECK_EQ_STR(info.mime_type, "application/octet-stream");
    TS_CHECK_EQ_STR(hash, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    /* absent objects */
    memset(expect, 'a', 64); expect[64] = 0;
    TS_CHECK_OK(ts_cas_exists(cas, expect, &ex));
    TS_CHECK_EQ_INT(ex, 0);
    TS_CHECK_EQ_INT(ts_cas_load(cas, expect, &blob, NULL), TS_E_NOTFOUND);
    TS_CHECK(blob.data == NULL);
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

TS_TEST(dedup_and_sync_budget)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    unsigned char a[100000];
    char h1[65], h2[65], h3[65], path[200];
    ts_cas_ref r1 = mkref("s1", "att1", 10), r2 = mkref("s2", "att9", 20);
    ts_io_counters c0, c1;
    uint64_t files = 0, bytes = 0, rc = 0;
    ts_cas_stats st;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    fill(a, sizeof a, 7);

    /* new content: data + metadata, each synced with its directory, plus the
       durable creation of the object's directories */
    c0 = counters(&io);
    TS_CHECK_OK(ts_cas_save(cas, a, sizeof a, "image/png", &r1, 100, h1));
    c1 = counters(&io);
    TS_CHECK_EQ_INT(c1.writes - c0.writes, 2);
    TS_CHECK_EQ_INT(c1.file_syncs - c0.file_syncs, 2);
    TS_CHECK_EQ_INT((c1.dir_syncs - c0.dir_syncs) - (c1.mkdirs - c0.mkdirs), 2);
    TS_CHECK_EQ_INT(c1.mkdirs - c0.mkdirs, 3); /* attachments-ca, hh, hash */
    TS_CHECK_EQ_INT(c1.bytes_written - c0.bytes_written > sizeof a, 1);

    /* the same bytes again with a new reference: metadata only */
    c0 = c1;
    TS_CHECK_OK(ts_cas_save(cas, a, sizeof a, "image/png", &r2, 200, h2));
    c1 = counters(&io);
    TS_CHECK_EQ_STR(h1, h2);
    TS_CHECK_EQ_INT(c1.writes - c0.writes, 1);
    TS_CHECK_EQ_INT(c1.file_syncs - c0.file_syncs, 1);
    TS_CHECK_EQ_INT(c1.dir_syncs - c0.dir_syncs, 1);
    TS_CHECK_EQ_INT(c1.mkdirs - c0.mkdirs, 0);
    TS_CHECK(c1.bytes_written - c0.bytes_written < 1000);

    /* and with a reference it already has: nothing at all */
    c0 = c1;
    TS_CHECK_OK(ts_cas_save(cas, a, sizeof a, "image/png", &r2, 300, h3));
    c1 = counters(&io);
    TS_CHECK_EQ_STR(h1, h3);
    TS_CHECK_EQ_INT(c1.writes - c0.writes, 0);
    TS_CHECK_EQ_INT(c1.file_syncs - c0.file_syncs, 0);
    TS_CHECK_EQ_INT(c1.dir_syncs - c0.dir_syncs, 0);

    /* ref_add / ref_remove: one metadata write each; a no-op writes nothing */
    c0 = c1;
    TS_CHECK_OK(ts_cas_ref_add(cas, h1, &r1));
    c1 = counters(&io);
    TS_CHECK_EQ_INT(c1.writes - c0.writes, 0);
    c0 = c1;
    TS_CHECK_OK(ts_cas_ref_remove(cas, h1, "s1", "att1"));
    c1 = counters(&io);
    TS_CHECK_EQ_INT(c1.writes - c0.writes, 1);
    TS_CHECK_EQ_INT(c1.file_syncs - c0.file_syncs, 1);
    TS_CHECK_EQ_INT(c1.dir_syncs - c0.dir_syncs, 1);

    TS_CHECK_OK(ts_cas_ref_count(cas, h1, &rc));
    TS_CHECK_EQ_INT(rc, 1);
    ts_io_mem_usage(mem, &files, &bytes);
    TS_CHECK_EQ_INT(files, 2); /* one data.bin, one metadata.json */
    obj_path(path, sizeof path, h1, "data.bin");
    TS_CHECK(bytes >= sizeof a && bytes < sizeof a + 1000);

    /* a save without a reference refreshes savedAt: metadata only */
    c0 = counters(&io);
    TS_CHECK_OK(ts_cas_save(cas, a, sizeof a, NULL, NULL, 5000, h3));
    c1 = counters(&io);
    TS_CHECK_EQ_INT(c1.writes - c0.writes, 1);
    {
        ts_cas_info info;
        TS_CHECK_OK(ts_cas_stat(cas, h1, &info));
        TS_CHECK_EQ_INT(info.saved_at_ms, 5000);
        TS_CHECK_EQ_INT(info.created_at_ms, 100);
        TS_CHECK_EQ_STR(info.mime_type, "image/png"); /* the first save's type stays */
    }
    TS_CHECK_OK(ts_cas_stats_get(cas, 1, &st));
    TS_CHECK_EQ_INT(st.objects, 1);
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

TS_TEST(references_up_and_down)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    unsigned char a[300];
    char h[65];
    uint64_t rc = 99;
    int n = 0;
    ts_cas_ref r;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    fill(a, sizeof a, 2);
    r = mkref("sess-1", "a1", 1);
    TS_CHECK_OK(ts_cas_save(cas, a, sizeof a, "image/jpeg", &r, 1, h));
    TS_CHECK_OK(ts_cas_ref_count(cas, h, &rc));
    TS_CHECK_EQ_INT(rc, 1);
    r = mkref("sess-2", "a1", 2);
    TS_CHECK_OK(ts_cas_ref_add(cas, h, &r));
    r = mkref("sess-2", "a2", 3);
    TS_CHECK_OK(ts_cas_ref_add(cas, h, &r));
    TS_CHECK_OK(ts_cas_ref_add(cas, h, &r)); /* same pair: no change */
    TS_CHECK_OK(ts_cas_ref_count(cas, h, &rc));
    TS_CHECK_EQ_INT(rc, 3);
    TS_CHECK_OK(ts_cas_refs(cas, h, count_refs_cb, &n));
    TS_CHECK_EQ_INT(n, 3);
    TS_CHECK_OK(ts_cas_ref_remove(cas, h, "sess-2", "a1"));
    TS_CHECK_EQ_INT(ts_cas_ref_remove(cas, h, "sess-2", "a1"), TS_E_NOTFOUND);
    TS_CHECK_OK(ts_cas_ref_remove(cas, h, "sess-1", "a1"));
    TS_CHECK_OK(ts_cas_ref_remove(cas, h, "sess-2", "a2"));
    TS_CHECK_OK(ts_cas_ref_count(cas, h, &rc));
    TS_CHECK_EQ_INT(rc, 0);
    {
        int ex = 0;
        TS_CHECK_OK(ts_cas_exists(cas, h, &ex));
        TS_CHECK_EQ_INT(ex, 1); /* zero references: left for GC */
    }
    /* bad ids never reach a path */
    r = mkref("../x", "a1", 1);
    TS_CHECK_EQ_INT(ts_cas_ref_add(cas, h, &r), TS_E_INVALID);
    r = mkref("s", "", 1);
    TS_CHECK_EQ_INT(ts_cas_ref_add(cas, h, &r), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_cas_ref_remove(cas, h, "a/b", "x"), TS_E_INVALID);
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

TS_TEST(hash_strings_validated)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    char h[80];
    int ex;
    uint64_t rc;
    const char *bad[] = {
        "", "abc", "../../../../etc/passwd",
        "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        "e3/0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    };
    size_t i;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TS_CHECK_EQ_INT(ts_cas_exists(cas, bad[i], &ex), TS_E_INVALID);
        TS_CHECK_EQ_INT(ts_cas_ref_count(cas, bad[i], &rc), TS_E_INVALID);
        TS_CHECK_EQ_INT(ts_cas_delete(cas, bad[i], TS_CAS_DELETE_FORCE), TS_E_INVALID);
        TS_CHECK_EQ_INT(ts_cas_verify(cas, bad[i]), TS_E_INVALID);
    }
    TS_CHECK_EQ_INT(ts_cas_exists(cas, NULL, &ex), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_cas_save(cas, "x", 1, "bad\"mime", NULL, 0, h), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_cas_save(cas, "x", 1, "bad\nmime", NULL, 0, h), TS_E_INVALID);
    TS_CHECK_EQ_INT(h[0], 0);
    {
        uint64_t files = 9, bytes = 9;
        ts_io_mem_usage(mem, &files, &bytes);
        TS_CHECK_EQ_INT(files, 0);
    }
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

/* ---- GC -------------------------------------------------------------------- */

typedef struct progress_log {
    int calls;
    ts_cas_gc_progress last;
} progress_log;

static void on_progress(void *user, const ts_cas_gc_progress *p)
{
    progress_log *l = (progress_log *)user;
    l->calls++;
    l->last = *p;
}

static void save_n(ts_cas *cas, int i, uint64_t t, const ts_cas_ref *ref, char h[65])
{
    unsigned char d[200];
    fill(d, sizeof d, (uint32_t)i + 1000);
    if (ts_cas_save(cas, d, sizeof d, "image/png", ref, t, h) != TS_OK) h[0] = 0;
}

TS_TEST(gc_with_grace)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    char ha[65], hb[65], hc[65];
    ts_cas_ref r = mkref("s1", "a1", 0);
    progress_log pl;
    int ex;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0); /* default grace: 1 hour */
    save_n(cas, 1, 0, NULL, ha);   /* saved, never referenced */
    save_n(cas, 2, 0, &r, hb);     /* referenced by s1 */
    save_n(cas, 3, 0, &r, hc);     /* refCount says 1, but no session has it */

    /* 10 minutes later: A is protected by the grace period; C too */
    memset(&pl, 0, sizeof pl);
    TS_CHECK_OK(ts_cas_gc_begin(cas, 600000));
    TS_CHECK_OK(ts_cas_gc_mark(cas, hb));
    TS_CHECK_EQ_INT(ts_cas_gc_step(cas, 600000, 0, on_progress, &pl), TS_DONE);
    TS_CHECK_EQ_INT(pl.last.objects_scanned, 3);
    TS_CHECK_EQ_INT(pl.last.objects_freed, 0);
    TS_CHECK_EQ_INT(pl.last.kept_grace, 2);
    TS_CHECK_EQ_INT(pl.last.kept_referenced, 1);
    TS_CHECK_EQ_INT(pl.last.done, 1);
    TS_CHECK_EQ_INT(ts_cas_gc_step(cas, 600000, 0, NULL, NULL), TS_E_STATE);

    /* two hours later: A (unreferenced) and C (stale count) go, B stays */
    TS_CHECK_OK(ts_cas_gc_begin(cas, 2 * HOUR));
    TS_CHECK_OK(ts_cas_gc_mark(cas, hb));
    TS_CHECK_EQ_INT(ts_cas_gc_step(cas, 2 * HOUR, 0, on_progress, &pl), TS_DONE);
    TS_CHECK_EQ_INT(pl.last.objects_freed, 2);
    TS_CHECK_EQ_INT(pl.last.bytes_freed, 400);
    TS_CHECK_OK(ts_cas_exists(cas, ha, &ex)); TS_CHECK_EQ_INT(ex, 0);
    TS_CHECK_OK(ts_cas_exists(cas, hb, &ex)); TS_CHECK_EQ_INT(ex, 1);
    TS_CHECK_OK(ts_cas_exists(cas, hc, &ex)); TS_CHECK_EQ_INT(ex, 0);
    {
        uint64_t files = 0, bytes = 0;
        ts_io_mem_usage(mem, &files, &bytes);
        TS_CHECK_EQ_INT(files, 2);
    }

    /* a save of old content without a reference restarts its grace period */
    TS_CHECK_OK(ts_cas_ref_remove(cas, hb, "s1", "a1"));
    save_n(cas, 2, 3 * HOUR, NULL, hb);
    TS_CHECK_OK(ts_cas_gc_begin(cas, 3 * HOUR + 1000));
    TS_CHECK_EQ_INT(ts_cas_gc_step(cas, 3 * HOUR + 1000, 0, NULL, NULL), TS_DONE);
    TS_CHECK_OK(ts_cas_exists(cas, hb, &ex)); TS_CHECK_EQ_INT(ex, 1);
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

static int is_ref_b(void *user, const char *hash)
{
    return strcmp((const char *)user, hash) == 0;
}

TS_TEST(gc_without_grace)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    char ha[65], hb[65], hc[65], hd[65];
    ts_cas_gc_progress out;
    int ex;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, -1); /* no grace */
    save_n(cas, 1, 100, NULL, ha);
    save_n(cas, 2, 100, NULL, hb);
    /* one call, asking about each candidate */
    TS_CHECK_OK(ts_cas_gc(cas, 100, is_ref_b, hb, NULL, NULL, &out));
    TS_CHECK_EQ_INT(out.objects_freed, 1);
    TS_CHECK_EQ_INT(out.kept_referenced, 1);
    TS_CHECK_OK(ts_cas_exists(cas, ha, &ex)); TS_CHECK_EQ_INT(ex, 0);
    TS_CHECK_OK(ts_cas_exists(cas, hb, &ex)); TS_CHECK_EQ_INT(ex, 1);

    /* objects saved or referenced after gc_begin survive that cycle */
    TS_CHECK_OK(ts_cas_gc_begin(cas, 200));
    save_n(cas, 3, 150, NULL, hc);          /* saved during the cycle */
    {
        ts_cas_ref r = mkref("s", "a", 200);
        TS_CHECK_OK(ts_cas_ref_add(cas, hb, &r));
        TS_CHECK_OK(ts_cas_ref_remove(cas, hb, "s", "a"));
    }
    TS_CHECK_EQ_INT(ts_cas_gc_step(cas, 300, 0, NULL, NULL), TS_DONE);
    TS_CHECK_OK(ts_cas_exists(cas, hc, &ex)); TS_CHECK_EQ_INT(ex, 1);
    TS_CHECK_OK(ts_cas_exists(cas, hb, &ex)); TS_CHECK_EQ_INT(ex, 1);
    /* next cycle: nothing marks them */
    TS_CHECK_OK(ts_cas_gc_begin(cas, 400));
    TS_CHECK_EQ_INT(ts_cas_gc_step(cas, 400, 0, NULL, NULL), TS_DONE);
    TS_CHECK_OK(ts_cas_exists(cas, hc, &ex)); TS_CHECK_EQ_INT(ex, 0);
    TS_CHECK_OK(ts_cas_exists(cas, hb, &ex)); TS_CHECK_EQ_INT(ex, 0);

    /* data without metadata (an interrupted save) is reclaimed */
    {
        char path[200];
        unsigned char d[50];
        ts_cas_verify_report rep;
        fill(d, sizeof d, 77);
        hash_of(d, sizeof d, hd);
        obj_path(path, sizeof path, hd, "data.bin");
        TS_CHECK_OK(ts_io_mem_put(mem, path, d, sizeof d));
        TS_CHECK_OK(ts_cas_verify_all(cas, NULL, NULL, &rep)); /* orphans are no problem */
        TS_CHECK_EQ_INT(rep.orphan_data, 1);
        TS_CHECK_OK(ts_cas_gc(cas, 500, is_ref_b, hb, NULL, NULL, &out));
        TS_CHECK_EQ_INT(out.objects_freed, 1);
        TS_CHECK_EQ_INT(out.bytes_freed, 50);
        ts_io_mem_usage(mem, NULL, NULL);
    }
    {
        uint64_t files = 9, bytes = 9;
        ts_io_mem_usage(mem, &files, &bytes);
        TS_CHECK_EQ_INT(files, 0);
    }
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

TS_TEST(gc_incremental_slices)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    char h[65];
    int i, steps = 0, kept = 0;
    ts_result r;
    progress_log pl;
    ts_cas_stats st;
    ts_io_counters c0, c1;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, -1);
    TS_CHECK_OK(ts_cas_gc_begin(cas, 0));
    for (i = 0; i < 300; i++) {
        save_n(cas, i, 10, NULL, h);
        if (i % 3 == 0) { TS_CHECK_OK(ts_cas_gc_mark(cas, h)); kept++; }
    }
    ts_cas_gc_abort(cas);
    TS_CHECK_OK(ts_cas_stats_get(cas, 1, &st));
    TS_CHECK_EQ_INT(st.objects, 300);
    TS_CHECK_EQ_INT(st.zero_ref_objects, 300);

    TS_CHECK_OK(ts_cas_gc_begin(cas, 1000));
    for (i = 0; i < 300; i += 3) { save_n(cas, i, 10, NULL, h); }
    ts_cas_gc_abort(cas); /* saves during a cycle are protected: start over */
    TS_CHECK_OK(ts_cas_gc_begin(cas, 1000));
    for (i = 0; i < 300; i += 3) {
        unsigned char d[200];
        fill(d, sizeof d, (uint32_t)i + 1000);
        hash_of(d, sizeof d, h);
        TS_CHECK_OK(ts_cas_gc_mark(cas, h));
    }
    memset(&pl, 0, sizeof pl);
    c0 = counters(&io);
    do {
        r = ts_cas_gc_step(cas, 1000, 7, on_progress, &pl);
        steps++;
        TS_CHECK(pl.last.objects_scanned <= (uint64_t)steps * 7);
    } while (r == TS_OK);
    TS_CHECK_EQ_INT(r, TS_DONE);
    TS_CHECK(steps >= 300 / 7);
    TS_CHECK_EQ_INT(pl.last.objects_scanned, 300);
    TS_CHECK_EQ_INT(pl.last.objects_freed, 200);
    TS_CHECK_EQ_INT(pl.last.kept_referenced, kept);
    TS_CHECK_EQ_INT(pl.last.bytes_freed, 200 * 200);
    /* sync budget: one directory sync per {hh} directory with victims in
       each step (never more than one per object freed), no file sync */
    c1 = counters(&io);
    {
        unsigned char seen[256];
        int prefixes = 0;
        memset(seen, 0, sizeof seen);
        for (i = 0; i < 300; i++) {
            unsigned char d[200];
            if (i % 3 == 0) continue;
            fill(d, sizeof d, (uint32_t)i + 1000);
            hash_of(d, sizeof d, h);
            if (!seen[ts__hex_value(h[0]) * 16 + ts__hex_value(h[1])]++) prefixes++;
        }
        TS_CHECK(c1.dir_syncs - c0.dir_syncs >= (uint64_t)prefixes);
        TS_CHECK(c1.dir_syncs - c0.dir_syncs <= 200);
    }
    TS_CHECK_EQ_INT(c1.file_syncs - c0.file_syncs, 0);
    TS_CHECK_EQ_INT(c1.writes - c0.writes, 0);
    /* incremental figures match a rescan */
    TS_CHECK_OK(ts_cas_stats_get(cas, 0, &st));
    TS_CHECK_EQ_INT(st.objects, 100);
    TS_CHECK_OK(ts_cas_stats_get(cas, 1, &st));
    TS_CHECK_EQ_INT(st.objects, 100);
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

/* ---- verification, hostile metadata ------------------------------------------- */

typedef struct problems {
    int n;
    char hash[65];
    ts_result code;
    char msg[256];
} problems;

static void on_problem(void *user, const char *hash, ts_result code, const char *message)
{
    problems *p = (problems *)user;
    p->n++;
    snprintf(p->hash, sizeof p->hash, "%s", hash);
    p->code = code;
    snprintf(p->msg, sizeof p->msg, "%s", message ? message : "");
}

TS_TEST(verify_tampered_data)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    unsigned char d[4096], buf[4096];
    char h[65], path[200];
    ts_blob blob;
    size_t size;
    problems pr;
    ts_cas_verify_report rep;
    ts_cas_ref r = mkref("s", "a", 1);
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    fill(d, sizeof d, 5);
    TS_CHECK_OK(ts_cas_save(cas, d, sizeof d, "image/png", &r, 1, h));
    TS_CHECK_OK(ts_cas_verify(cas, h));
    TS_CHECK_OK(ts_cas_verify_all(cas, NULL, NULL, &rep));
    TS_CHECK_EQ_INT(rep.objects, 1);
    TS_CHECK_EQ_INT(rep.bytes_hashed, sizeof d);

    /* flip one byte of data.bin, same size */
    memcpy(buf, d, sizeof d);
    buf[1234] ^= 0x40;
    obj_path(path, sizeof path, h, "data.bin");
    TS_CHECK_OK(ts_io_mem_put(mem, path, buf, sizeof buf));
    TS_CHECK_EQ_INT(ts_cas_verify(cas, h), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(ts_cas_load(cas, h, &blob, NULL), TS_E_CORRUPT);
    TS_CHECK(blob.data == NULL && blob.len == 0);
    TS_CHECK(strstr(last_msg(cas), "data.bin") != NULL);
    TS_CHECK_EQ_INT(ts_cas_load_into(cas, h, buf, sizeof buf, &size, NULL), TS_E_CORRUPT);
    memset(&pr, 0, sizeof pr);
    TS_CHECK_EQ_INT(ts_cas_verify_all(cas, on_problem, &pr, &rep), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(rep.corrupt, 1);
    TS_CHECK_EQ_INT(pr.n, 1);
    TS_CHECK_EQ_STR(pr.hash, h);
    TS_CHECK_EQ_INT(pr.code, TS_E_CORRUPT);

    /* truncated */
    TS_CHECK_OK(ts_io_mem_put(mem, path, d, 100));
    TS_CHECK_EQ_INT(ts_cas_load(cas, h, &blob, NULL), TS_E_CORRUPT);

    /* a save of the right bytes heals the object, with no new reference */
    TS_CHECK_OK(ts_cas_save(cas, d, sizeof d, NULL, &r, 2, h));
    TS_CHECK_OK(ts_cas_verify(cas, h));
    TS_CHECK_OK(ts_cas_load(cas, h, &blob, NULL));
    TS_CHECK(blob.len == sizeof d && memcmp(blob.data, d, sizeof d) == 0);
    blob_free(&blob);

    /* a fresh ts_cas does not know it is bad, but a same-size check still
       catches a missing file */
    TS_CHECK_OK(io.remove_fn(io.user, path));
    TS_CHECK_EQ_INT(ts_cas_verify_all(cas, NULL, NULL, &rep), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(rep.missing_data, 1);
    ts_cas_close(cas);
    cas = open_cas(&io, 0);
    TS_CHECK_OK(ts_cas_save(cas, d, sizeof d, NULL, &r, 3, h));
    TS_CHECK_OK(ts_cas_verify(cas, h));
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

TS_TEST(hostile_metadata)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    unsigned char d[64];
    char h[65], other[65], path[200], text[1200];
    ts_cas_info info;
    size_t i;
    const char *bodies[] = {
        "",
        "nope",
        "[]",
        "{}",
        "{\"hash\":\"%s\"}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,\"references\":[],\"createdAt\":\"x\"}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":-1,\"refCount\":0,\"references\":[],\"createdAt\":1}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,\"references\":{},\"createdAt\":1}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,\"references\":[1],\"createdAt\":1}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,\"references\":[{\"sessionId\":\"../x\",\"attachmentId\":\"a\",\"addedAt\":1}],\"createdAt\":1}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,\"references\":[{\"sessionId\":\"s\",\"attachmentId\":\"a\"}],\"createdAt\":1}",
        "{\"hash\":\"%s\",\"mimeType\":\"a\\\"b\",\"size\":64,\"refCount\":0,\"references\":[],\"createdAt\":1}",
        "{\"hash\":\"%s\",\"mimeType\":7,\"size\":64,\"refCount\":0,\"references\":[],\"createdAt\":1}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,\"references\":[],\"createdAt\":1,\"storedSize\":3}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,\"references\":[],\"createdAt\":1,\"storedEncoding\":\"../x\"}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,\"references\":[],\"createdAt\":1,\"storedEncoding\":\"webp\"}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":1e300,\"refCount\":0,\"references\":[],\"createdAt\":1}",
        "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":99999999999999,\"refCount\":0,\"references\":[],\"createdAt\":1}"
    };
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    fill(d, sizeof d, 9);
    TS_CHECK_OK(ts_cas_save(cas, d, sizeof d, "a/b", NULL, 1, h));
    obj_path(path, sizeof path, h, "metadata.json");
    for (i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        int n = snprintf(text, sizeof text, bodies[i], h);
        TS_CHECK_OK(ts_io_mem_put(mem, path, text, (size_t)n));
        TS_CHECK_EQ_INT(ts_cas_stat(cas, h, &info), TS_E_CORRUPT);
        if (!strstr(last_msg(cas), path)) { printf("  body %d: %s\n", (int)i, last_msg(cas)); TS_CHECK(0); }
    }
    /* a hash field naming another object */
    memcpy(other, h, 65);
    other[10] = other[10] == 'a' ? 'b' : 'a';
    snprintf(text, sizeof text, "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,"
             "\"references\":[],\"createdAt\":1}", other);
    TS_CHECK_OK(ts_io_mem_put(mem, path, text, strlen(text)));
    TS_CHECK_EQ_INT(ts_cas_stat(cas, h, &info), TS_E_CORRUPT);
    TS_CHECK(strstr(last_msg(cas), "does not match") != NULL);
    /* GC keeps what it cannot read */
    {
        ts_cas_gc_progress p;
        TS_CHECK_OK(ts_cas_gc(cas, 100 * HOUR, is_ref_b, (void *)"", NULL, NULL, &p));
        TS_CHECK_EQ_INT(p.kept_unreadable, 1);
        TS_CHECK_EQ_INT(p.objects_freed, 0);
    }
    /* extra fields and a known encoding are fine */
    snprintf(text, sizeof text, "{\"hash\":\"%s\",\"mimeType\":\"a/b\",\"size\":64,\"refCount\":0,"
             "\"references\":[],\"createdAt\":1,\"future\":[1,2,{}]}", h);
    TS_CHECK_OK(ts_io_mem_put(mem, path, text, strlen(text)));
    TS_CHECK_OK(ts_cas_stat(cas, h, &info));
    TS_CHECK_EQ_INT(info.saved_at_ms, 1);
    /* oversized metadata is refused before it is read whole */
    {
        ts_cas_config cfg;
        ts_cas *small = NULL;
        memset(&cfg, 0, sizeof cfg);
        cfg.io = &io;
        cfg.max_meta_bytes = 100;
        TS_CHECK_OK(ts_cas_open(&cfg, &small));
        TS_CHECK_EQ_INT(ts_cas_stat(small, h, &info), TS_E_CORRUPT);
        ts_cas_close(small);
    }
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

/* ---- legacy import ---------------------------------------------------------- */

TS_TEST(import_base64)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    unsigned char d[3000];
    char text[4200], h1[65], h2[65];
    size_t n;
    ts_cas_info info;
    ts_cas_ref r = mkref("legacy-session", "att-1", 5);
    uint64_t rc = 0;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    fill(d, sizeof d, 11);
    memcpy(text, "data:image/png;base64,", 22);
    n = 22 + b64_encode(d, sizeof d, text + 22);
    TS_CHECK_OK(ts_cas_import_base64(cas, "att-1", text, n, NULL, &r, 10, h1));
    TS_CHECK_OK(ts_cas_stat(cas, h1, &info));
    TS_CHECK_EQ_STR(info.mime_type, "image/png");
    TS_CHECK_EQ_INT(info.size, sizeof d);
    /* the raw bytes deduplicate with it */
    r = mkref("new-session", "x", 6);
    TS_CHECK_OK(ts_cas_save(cas, d, sizeof d, "image/png", &r, 11, h2));
    TS_CHECK_EQ_STR(h1, h2);
    TS_CHECK_OK(ts_cas_ref_count(cas, h1, &rc));
    TS_CHECK_EQ_INT(rc, 2);
    /* invalid base64: TS_E_CORRUPT naming the attachment, nothing written */
    text[40] = '*';
    TS_CHECK_EQ_INT(ts_cas_import_base64(cas, "att-2", text, n, "image/png", NULL, 12, h2), TS_E_CORRUPT);
    TS_CHECK(strstr(last_msg(cas), "att-2") != NULL);
    TS_CHECK(strstr(last_msg(cas), "byte 40") != NULL);
    TS_CHECK_EQ_INT(h2[0], 0);
    TS_CHECK_EQ_INT(ts_cas_import_base64(cas, "att-3", "Zg", 2, NULL, NULL, 12, h2), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(ts_cas_import_base64(cas, "../x", "Zg==", 4, NULL, NULL, 12, h2), TS_E_INVALID);
    /* over the size limit: refused before allocating */
    {
        ts_cas_config cfg;
        ts_cas *small = NULL;
        memset(&cfg, 0, sizeof cfg);
        cfg.io = &io;
        cfg.max_object_bytes = 100;
        TS_CHECK_OK(ts_cas_open(&cfg, &small));
        TS_CHECK_EQ_INT(ts_cas_import_base64(small, "big", text + 60, 200, NULL, NULL, 1, h2), TS_E_TOOBIG);
        TS_CHECK_EQ_INT(ts_cas_save(small, d, 101, NULL, NULL, 1, h2), TS_E_TOOBIG);
        ts_cas_close(small);
    }
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

/* ---- statistics, delete ------------------------------------------------------ */

TS_TEST(statistics)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    char h[4][65];
    ts_cas_stats s, s2;
    ts_cas_ref r;
    int i;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    TS_CHECK_OK(ts_cas_stats_get(cas, 0, &s));
    TS_CHECK_EQ_INT(s.objects, 0);
    TS_CHECK(s.dedup_saved_percent == 0.0);
    /* object 0: 4 references; 1: 1 reference; 2: none */
    for (i = 0; i < 4; i++) {
        char aid[16];
        snprintf(aid, sizeof aid, "a%d", i);
        r = mkref("s", aid, 1);
        save_n(cas, 0, 1, &r, h[0]);
    }
    r = mkref("s", "b", 1);
    save_n(cas, 1, 1, &r, h[1]);
    save_n(cas, 2, 1, NULL, h[2]);
    TS_CHECK_OK(ts_cas_stats_get(cas, 0, &s));
    TS_CHECK_EQ_INT(s.objects, 3);
    TS_CHECK_EQ_INT(s.references, 5);
    TS_CHECK_EQ_INT(s.zero_ref_objects, 1);
    TS_CHECK_EQ_INT(s.unique_bytes, 600);
    TS_CHECK_EQ_INT(s.stored_bytes, 600);
    TS_CHECK_EQ_INT(s.logical_bytes, 1200);
    TS_CHECK_EQ_INT(s.dedup_saved_bytes, 600);
    TS_CHECK(s.dedup_saved_percent > 49.9 && s.dedup_saved_percent < 50.1);
    /* updates kept incrementally agree with a scan */
    TS_CHECK_OK(ts_cas_ref_remove(cas, h[0], "s", "a1"));
    TS_CHECK_OK(ts_cas_ref_remove(cas, h[1], "s", "b"));
    TS_CHECK_OK(ts_cas_delete(cas, h[2], 0));
    TS_CHECK_OK(ts_cas_stats_get(cas, 0, &s));
    TS_CHECK_OK(ts_cas_stats_get(cas, 1, &s2));
    TS_CHECK(memcmp(&s, &s2, sizeof s) == 0);
    TS_CHECK_EQ_INT(s.objects, 2);
    TS_CHECK_EQ_INT(s.zero_ref_objects, 1);
    TS_CHECK_EQ_INT(s.logical_bytes, 800);
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

static int collect_cb(void *user, const char *hash)
{
    char *out = (char *)user;
    if (strlen(out) + 66 < 4096) { strcat(out, hash); strcat(out, "\n"); }
    return 0;
}

TS_TEST(delete_and_foreach)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    char ha[65], hb[65];
    static char list[4096];
    ts_cas_ref r = mkref("s", "a", 1);
    uint64_t files = 9;
    ts_io_counters c0, c1;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    save_n(cas, 1, 1, &r, ha);
    save_n(cas, 2, 1, NULL, hb);
    list[0] = 0;
    TS_CHECK_OK(ts_cas_foreach(cas, collect_cb, list));
    TS_CHECK(strstr(list, ha) && strstr(list, hb) && strlen(list) == 130);
    TS_CHECK(memcmp(list, strcmp(ha, hb) < 0 ? ha : hb, 64) == 0); /* in hash order */
    TS_CHECK_EQ_INT(ts_cas_delete(cas, ha, 0), TS_E_STATE);
    c0 = counters(&io);
    TS_CHECK_OK(ts_cas_delete(cas, ha, TS_CAS_DELETE_FORCE));
    c1 = counters(&io);
    TS_CHECK_EQ_INT(c1.dir_syncs - c0.dir_syncs, 1); /* delete: 0 + 1 */
    TS_CHECK_EQ_INT(c1.file_syncs - c0.file_syncs, 0);
    TS_CHECK_EQ_INT(c1.renames - c0.renames, 1);
    TS_CHECK_OK(ts_cas_delete(cas, hb, 0));
    TS_CHECK_EQ_INT(ts_cas_delete(cas, hb, 0), TS_E_NOTFOUND);
    ts_io_mem_usage(mem, &files, NULL);
    TS_CHECK_EQ_INT(files, 0);
    list[0] = 0;
    TS_CHECK_OK(ts_cas_foreach(cas, collect_cb, list));
    TS_CHECK_EQ_INT(strlen(list), 0);
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

/* ---- repair ---------------------------------------------------------------------- */

TS_TEST(repair_recomputes_counts)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas *cas;
    char ha[65], hb[65], hc[65], path[200], text[600];
    ts_cas_ref r;
    ts_cas_repair_report rep;
    uint64_t rc;
    unsigned char d[200];
    problems pr;
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, 0);
    r = mkref("s1", "a1", 10);
    save_n(cas, 1, 1, &r, ha);
    r = mkref("s2", "a1", 11);
    save_n(cas, 1, 1, &r, ha);
    save_n(cas, 2, 1, NULL, hb);
    save_n(cas, 3, 1, NULL, hc);
    /* tamper A's count; lose C's metadata entirely */
    obj_path(path, sizeof path, ha, "metadata.json");
    snprintf(text, sizeof text, "{\"hash\":\"%s\",\"mimeType\":\"image/png\",\"size\":200,\"refCount\":7,"
             "\"references\":[{\"sessionId\":\"ghost\",\"attachmentId\":\"g\",\"addedAt\":1},"
             "{\"sessionId\":\"s1\",\"attachmentId\":\"a1\",\"addedAt\":10}],\"createdAt\":1}", ha);
    TS_CHECK_OK(ts_io_mem_put(mem, path, text, strlen(text)));
    obj_path(path, sizeof path, hc, "metadata.json");
    TS_CHECK_OK(io.remove_fn(io.user, path));
    /* and a leftover temporary */
    obj_path(path, sizeof path, hb, "metadata.json.tmp.77");
    TS_CHECK_OK(ts_io_mem_put(mem, path, "x", 1));

    /* the sessions hold: A by s1/a1 and s2/a1 (twice, deduplicated), C by s3/c;
       a reference to a hash that does not exist */
    TS_CHECK_OK(ts_cas_repair_begin(cas));
    r = mkref("s1", "a1", 0);
    TS_CHECK_OK(ts_cas_repair_add(cas, ha, &r));
    r = mkref("s2", "a1", 0);
    TS_CHECK_OK(ts_cas_repair_add(cas, ha, &r));
    TS_CHECK_OK(ts_cas_repair_add(cas, ha, &r));
    r = mkref("s3", "c", 50);
    TS_CHECK_OK(ts_cas_repair_add(cas, hc, &r));
    fill(d, sizeof d, 999);
    {
        char hx[65];
        hash_of(d, sizeof d, hx);
        TS_CHECK_OK(ts_cas_repair_add(cas, hx, &r));
    }
    TS_CHECK_EQ_INT(ts_cas_gc_begin(cas, 0), TS_E_STATE);
    memset(&pr, 0, sizeof pr);
    TS_CHECK_OK(ts_cas_repair_finish(cas, 1000, on_problem, &pr, &rep));
    TS_CHECK_EQ_INT(rep.objects, 3);
    TS_CHECK_EQ_INT(rep.rewritten, 1);
    TS_CHECK_EQ_INT(rep.rebuilt, 1);
    TS_CHECK_EQ_INT(rep.missing, 1);
    TS_CHECK_EQ_INT(pr.n, 1);
    TS_CHECK_OK(ts_cas_ref_count(cas, ha, &rc)); TS_CHECK_EQ_INT(rc, 2);
    TS_CHECK_OK(ts_cas_ref_count(cas, hb, &rc)); TS_CHECK_EQ_INT(rc, 0);
    TS_CHECK_OK(ts_cas_ref_count(cas, hc, &rc)); TS_CHECK_EQ_INT(rc, 1);
    {
        ts_cas_info info;
        TS_CHECK_OK(ts_cas_stat(cas, hc, &info));
        TS_CHECK_EQ_INT(info.size, 200);
        TS_CHECK_OK(ts_cas_verify(cas, hc));
    }
    {
        ts_io_stat st;
        TS_CHECK_EQ_INT(io.stat_fn(io.user, path, &st), TS_E_NOTFOUND); /* temp removed */
    }
    /* a second repair with the same truth changes nothing */
    TS_CHECK_OK(ts_cas_repair_begin(cas));
    r = mkref("s1", "a1", 0);
    TS_CHECK_OK(ts_cas_repair_add(cas, ha, &r));
    r = mkref("s2", "a1", 0);
    TS_CHECK_OK(ts_cas_repair_add(cas, ha, &r));
    r = mkref("s3", "c", 50);
    TS_CHECK_OK(ts_cas_repair_add(cas, hc, &r));
    TS_CHECK_OK(ts_cas_repair_finish(cas, 2000, NULL, NULL, &rep));
    TS_CHECK_EQ_INT(rep.rewritten + rep.rebuilt + rep.missing, 0);
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

/* ---- crashes ------------------------------------------------------------------ */

#define MAXREFS 16
typedef struct model_ref {
    char hash[65];
    char sid[16], aid[16];
} model_ref;

typedef struct model {
    model_ref refs[MAXREFS];
    int n;
} model;

static void model_add(model *m, const char *hash, const char *sid, const char *aid)
{
    model_ref *r;
    int i;
    for (i = 0; i < m->n; i++)
        if (!strcmp(m->refs[i].hash, hash) && !strcmp(m->refs[i].sid, sid) && !strcmp(m->refs[i].aid, aid))
            return; /* a pair is held once */
    r = &m->refs[m->n++];
    memcpy(r->hash, hash, 65);
    snprintf(r->sid, sizeof r->sid, "%s", sid);
    snprintf(r->aid, sizeof r->aid, "%s", aid);
}

static void model_del(model *m, const char *hash, const char *sid, const char *aid)
{
    int i;
    for (i = 0; i < m->n; i++) {
        if (!strcmp(m->refs[i].hash, hash) && !strcmp(m->refs[i].sid, sid) && !strcmp(m->refs[i].aid, aid)) {
            m->refs[i] = m->refs[--m->n];
            return;
        }
    }
}

static uint64_t model_count(const model *m, const char *hash)
{
    int i;
    uint64_t n = 0;
    for (i = 0; i < m->n; i++) n += !strcmp(m->refs[i].hash, hash);
    return n;
}

static const unsigned char *payload(int k, size_t *n)
{
    static unsigned char buf[4][3000];
    static int init;
    if (!init) {
        int i;
        for (i = 0; i < 4; i++) fill(buf[i], sizeof buf[i], 500u + (uint32_t)i);
        init = 1;
    }
    *n = 1000 + (size_t)k * 500;
    return buf[k];
}

/* save + reference: the sessions (model) name a hash only once the call
   that recorded the reference returned OK (the store writes the session
   after the attachment). Stops at the first failure. */
static void workload_save(ts_cas *cas, model *m)
{
    static const struct { int k; const char *sid, *aid; } ops[] = {
        {0, "s1", "a1"}, {0, "s2", "a2"}, {1, NULL, NULL}, {1, "s3", "b1"}, {2, "s1", "c1"},
        {1, "s4", "b2"}, {3, NULL, NULL}, {0, "s1", "a1"}
    };
    size_t i;
    for (i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        size_t n;
        const unsigned char *p = payload(ops[i].k, &n);
        char h[65];
        if (i == 3) {
            /* reference added separately after a save without one */
            ts_cas_ref r = mkref(ops[i].sid, ops[i].aid, 100 + i);
            hash_of(p, n, h);
            if (ts_cas_ref_add(cas, h, &r) != TS_OK) return;
            model_add(m, h, ops[i].sid, ops[i].aid);
            continue;
        }
        if (ops[i].sid) {
            ts_cas_ref r = mkref(ops[i].sid, ops[i].aid, 100 + i);
            if (ts_cas_save(cas, p, n, "image/png", &r, 100 + i, h) != TS_OK) return;
            model_add(m, h, ops[i].sid, ops[i].aid);
        } else if (ts_cas_save(cas, p, n, "image/png", NULL, 100 + i, h) != TS_OK) {
            return;
        }
    }
}

/* remove + GC: sessions drop a reference first, then the CA store hears of
   it; then a GC marks what the sessions still hold. */
static void workload_remove(ts_cas *cas, model *m)
{
    size_t n;
    char h0[65], h1[65];
    const unsigned char *p;
    int i;
    p = payload(0, &n); hash_of(p, n, h0);
    p = payload(1, &n); hash_of(p, n, h1);
    model_del(m, h0, "s1", "a1");
    if (ts_cas_ref_remove(cas, h0, "s1", "a1") != TS_OK) return;
    model_del(m, h1, "s3", "b1");
    if (ts_cas_ref_remove(cas, h1, "s3", "b1") != TS_OK) return;
    model_del(m, h1, "s4", "b2");
    if (ts_cas_ref_remove(cas, h1, "s4", "b2") != TS_OK) return;
    if (ts_cas_gc_begin(cas, 10 * HOUR) != TS_OK) return;
    for (i = 0; i < m->n; i++)
        if (ts_cas_gc_mark(cas, m->refs[i].hash) != TS_OK) return;
    while (ts_cas_gc_step(cas, 10 * HOUR, 2, NULL, NULL) == TS_OK) {}
}

/* After a crash: reopen, every referenced object is there and whole, no
   object's bytes mismatch its name, and repair restores exact counts. */
static int check_after_crash(ts_io_mem *mem, const model *m, const char *what, uint64_t at)
{
    ts_io io;
    ts_cas *cas;
    ts_cas_verify_report vr;
    ts_cas_repair_report rr;
    int i, bad = 0;
    ts_io_mem_vtable(mem, &io);
    cas = open_cas(&io, -1);
    if (!cas) return 0;
    for (i = 0; i < m->n; i++) {
        ts_blob b;
        int ex = 0;
        if (ts_cas_exists(cas, m->refs[i].hash, &ex) != TS_OK || !ex) bad |= 1;
        if (ts_cas_load(cas, m->refs[i].hash, &b, NULL) != TS_OK) bad |= 2;
        blob_free(&b);
    }
    if (ts_cas_verify_all(cas, NULL, NULL, &vr) != TS_OK || vr.corrupt || vr.missing_data ||
        vr.bad_metadata)
        bad |= 4;
    if (ts_cas_repair_begin(cas) != TS_OK) bad |= 8;
    for (i = 0; i < m->n; i++) {
        ts_cas_ref r = mkref(m->refs[i].sid, m->refs[i].aid, 0);
        if (ts_cas_repair_add(cas, m->refs[i].hash, &r) != TS_OK) bad |= 8;
    }
    if (ts_cas_repair_finish(cas, 20 * HOUR, NULL, NULL, &rr) != TS_OK || rr.missing || rr.corrupt)
        bad |= 16;
    for (i = 0; i < m->n; i++) {
        uint64_t rc = 0;
        if (ts_cas_ref_count(cas, m->refs[i].hash, &rc) != TS_OK || rc != model_count(m, m->refs[i].hash))
            bad |= 32;
    }
    /* a GC now leaves exactly the referenced objects */
    {
        ts_cas_stats st;
        int distinct = 0, j;
        if (ts_cas_gc_begin(cas, 30 * HOUR) != TS_OK) bad |= 64;
        for (i = 0; i < m->n; i++) (void)ts_cas_gc_mark(cas, m->refs[i].hash);
        if (ts_cas_gc_step(cas, 30 * HOUR, 0, NULL, NULL) != TS_DONE) bad |= 64;
        for (i = 0; i < m->n; i++) {
            for (j = 0; j < i && strcmp(m->refs[i].hash, m->refs[j].hash); j++) {}
            distinct += j == i;
        }
        if (ts_cas_stats_get(cas, 1, &st) != TS_OK || st.objects != (uint64_t)distinct ||
            st.references != (uint64_t)m->n)
            bad |= 128;
    }
    if (bad) printf("  %s: crash at op %llu: failure bits 0x%x\n", what, (unsigned long long)at, bad);
    ts_cas_close(cas);
    return bad == 0;
}

typedef void (*workload_fn)(ts_cas *, model *);

/* Runs setup (durably, no faults), then the workload with power lost at
   operation `at` (0: never); returns the operations the workload used. */
static uint64_t run_crash(workload_fn setup, workload_fn work, uint64_t at, ts_crash_mode mode,
                          uint64_t seed, const char *what, int *ok)
{
    ts_io_mem *mem = NULL;
    ts_io inner, io;
    ts_io_fault *f = NULL;
    ts_cas *cas;
    model m;
    uint64_t base, used;
    ts_fault_plan plan;
    memset(&m, 0, sizeof m);
    *ok = 0;
    if (ts_io_mem_create(NULL, &mem) != TS_OK) return 0;
    ts_io_mem_vtable(mem, &inner);
    if (ts_io_fault_create(&inner, NULL, &f) != TS_OK) { ts_io_mem_destroy(mem); return 0; }
    ts_io_fault_vtable(f, &io);
    cas = open_cas(&io, 0);
    if (setup) setup(cas, &m);
    base = ts_io_fault_ops(f);
    if (at) {
        memset(&plan, 0, sizeof plan);
        plan.fail_at = base + at;
        plan.crash = 1;
        ts_io_fault_set(f, &plan);
    }
    work(cas, &m);
    used = ts_io_fault_ops(f) - base;
    ts_cas_close(cas);
    ts_io_fault_destroy(f);
    ts_io_mem_crash(mem, mode, seed);
    *ok = check_after_crash(mem, &m, what, at);
    ts_io_mem_destroy(mem);
    return used;
}

static void crash_sweep(workload_fn setup, workload_fn work, const char *what)
{
    int ok;
    uint64_t total = run_crash(setup, work, 0, TS_CRASH_DROP_UNSYNCED, 0, what, &ok);
    uint64_t at, seeds = (uint64_t)ts_test_count(4, 40), s;
    TS_CHECK(ok);
    TS_CHECK(total > 10);
    if (getenv("TS_TEST_VERBOSE")) printf("  %s: %llu operations, each a crash point\n", what, (unsigned long long)total);
    for (at = 1; at <= total + 1; at++) {
        run_crash(setup, work, at, TS_CRASH_DROP_UNSYNCED, 0, what, &ok);
        TS_CHECK(ok);
        for (s = 1; s <= seeds; s++) {
            run_crash(setup, work, at, TS_CRASH_RANDOM, at * 1000 + s, what, &ok);
            TS_CHECK(ok);
        }
    }
}

TS_TEST(crash_during_save_and_reference)
{
    crash_sweep(NULL, workload_save, "save+reference");
}

TS_TEST(crash_during_remove_and_gc)
{
    crash_sweep(workload_save, workload_remove, "remove+gc");
}

/* ---- I/O errors and allocation failures ---------------------------------------- */

TS_TEST(io_errors_leave_store_consistent)
{
    /* ENOSPC/EIO at each operation of a save: the call fails cleanly, later
       calls work, and nothing half-written is ever reported as valid */
    uint64_t at;
    for (at = 1; at <= 12; at++) {
        ts_io_mem *mem = NULL;
        ts_io inner, io;
        ts_io_fault *f = NULL;
        ts_cas *cas;
        ts_fault_plan plan;
        unsigned char d[700];
        char h[65];
        ts_cas_ref r = mkref("s", "a", 1);
        ts_result res;
        uint64_t rc = 0;
        TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
        ts_io_mem_vtable(mem, &inner);
        TS_CHECK_OK(ts_io_fault_create(&inner, NULL, &f));
        ts_io_fault_vtable(f, &io);
        cas = open_cas(&io, 0);
        fill(d, sizeof d, 3);
        memset(&plan, 0, sizeof plan);
        plan.fail_at = ts_io_fault_ops(f) + at;
        plan.fail_with = (at & 1) ? TS_E_NOSPACE : TS_E_IO;
        ts_io_fault_set(f, &plan);
        res = ts_cas_save(cas, d, sizeof d, "image/png", &r, 1, h);
        ts_io_fault_reset(f);
        if (res != TS_OK) TS_CHECK(res == TS_E_NOSPACE || res == TS_E_IO);
        TS_CHECK_OK(ts_cas_save(cas, d, sizeof d, "image/png", &r, 2, h));
        TS_CHECK_OK(ts_cas_verify(cas, h));
        TS_CHECK_OK(ts_cas_ref_count(cas, h, &rc));
        TS_CHECK_EQ_INT(rc, 1);
        ts_cas_close(cas);
        ts_io_fault_destroy(f);
        ts_io_mem_destroy(mem);
    }
}

typedef struct fail_alloc {
    long count, fail_at;
    long live;
} fail_alloc;

static void *fa_alloc(size_t n, void *u)
{
    fail_alloc *a = (fail_alloc *)u;
    if (++a->count == a->fail_at) return NULL;
    a->live++;
    return malloc(n);
}
static void *fa_realloc(void *p, size_t o, size_t n, void *u)
{
    fail_alloc *a = (fail_alloc *)u;
    (void)o;
    if (++a->count == a->fail_at) return NULL;
    if (!p) a->live++;
    return realloc(p, n);
}
static void fa_free(void *p, size_t n, void *u)
{
    fail_alloc *a = (fail_alloc *)u;
    (void)n;
    if (p) a->live--;
    free(p);
}

static int cb_unreferenced(void *u, const char *h) { (void)u; (void)h; return 0; }

TS_TEST(out_of_memory_sweep)
{
    /* fail the Nth allocation of a save/ref/load/gc/verify/repair sequence:
       every call returns cleanly and nothing leaks (ASan checks the rest) */
    long n;
    int reached_end = 0;
    for (n = 1; n < 400 && !reached_end; n++) {
        ts_io_mem *mem = NULL;
        ts_io io;
        ts_cas_config cfg;
        ts_cas *cas = NULL;
        fail_alloc fa;
        unsigned char d[300];
        char h[65];
        ts_blob b;
        ts_cas_ref r = mkref("s", "a", 1);
        ts_cas_verify_report vr;
        ts_cas_repair_report rr;
        ts_cas_gc_progress gp;
        int failed = 0;
        TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
        ts_io_mem_vtable(mem, &io);
        memset(&fa, 0, sizeof fa);
        fa.fail_at = n;
        memset(&cfg, 0, sizeof cfg);
        cfg.io = &io;
        cfg.gc_grace_ms = -1;
        cfg.allocator.alloc_fn = fa_alloc;
        cfg.allocator.realloc_fn = fa_realloc;
        cfg.allocator.free_fn = fa_free;
        cfg.allocator.user = &fa;
        fill(d, sizeof d, 8);
        if (ts_cas_open(&cfg, &cas) != TS_OK) { ts_io_mem_destroy(mem); continue; }
        failed |= ts_cas_save(cas, d, sizeof d, "image/png", &r, 1, h) != TS_OK;
        hash_of(d, sizeof d, h);
        failed |= ts_cas_save(cas, d, 100, NULL, NULL, 1, h) != TS_OK;
        hash_of(d, sizeof d, h);
        r = mkref("t", "b", 2);
        failed |= ts_cas_ref_add(cas, h, &r) != TS_OK;
        failed |= ts_cas_load(cas, h, &b, NULL) != TS_OK;
        blob_free(&b);
        failed |= ts_cas_verify_all(cas, NULL, NULL, &vr) != TS_OK;
        failed |= ts_cas_repair_begin(cas) != TS_OK;
        failed |= ts_cas_repair_add(cas, h, &r) != TS_OK;
        failed |= ts_cas_repair_finish(cas, 5, NULL, NULL, &rr) != TS_OK;
        failed |= ts_cas_gc(cas, 10, cb_unreferenced, NULL, NULL, NULL, &gp) != TS_OK;
        failed |= ts_cas_import_base64(cas, "x", "Zm9vYmFy", 8, NULL, NULL, 3, h) != TS_OK;
        ts_cas_close(cas);
        TS_CHECK_EQ_INT(fa.live, 0);
        if (!failed && fa.count < n) reached_end = 1;
        ts_io_mem_destroy(mem);
    }
    TS_CHECK(reached_end);
}

/* ---- POSIX ------------------------------------------------------------------------ */

TS_TEST(posix_roundtrip)
{
    const char *tmp = getenv("TS_TEST_TMP");
    char root[512], h[65], h2[65];
    ts_io_posix *px = NULL;
    ts_io io;
    ts_cas *cas;
    unsigned char d[100000];
    ts_blob b;
    ts_cas_ref r = mkref("s", "a", 1);
    ts_io_counters c0, c1;
    ts_cas_gc_progress gp;
    if (!tmp) { printf("  (posix_roundtrip skipped: no TS_TEST_TMP)\n"); return; }
    snprintf(root, sizeof root, "%s/cas-posix", tmp);
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &px));
    if (!px) return;
    ts_io_posix_vtable(px, &io);
    cas = open_cas(&io, -1);
    fill(d, sizeof d, 4);
    c0 = counters(&io);
    TS_CHECK_OK(ts_cas_save(cas, d, sizeof d, "image/png", &r, 1, h));
    c1 = counters(&io);
    TS_CHECK_EQ_INT(c1.file_syncs - c0.file_syncs, 2);
    c0 = c1;
    r = mkref("s2", "a", 2);
    TS_CHECK_OK(ts_cas_save(cas, d, sizeof d, "image/png", &r, 2, h2));
    c1 = counters(&io);
    TS_CHECK_EQ_INT(c1.file_syncs - c0.file_syncs, 1);
    TS_CHECK_EQ_INT(c1.writes - c0.writes, 1);
    TS_CHECK_OK(ts_cas_load(cas, h, &b, NULL));
    TS_CHECK(b.len == sizeof d && memcmp(b.data, d, sizeof d) == 0);
    blob_free(&b);
    TS_CHECK_OK(ts_cas_verify_all(cas, NULL, NULL, NULL));
    TS_CHECK_OK(ts_cas_ref_remove(cas, h, "s", "a"));
    TS_CHECK_OK(ts_cas_ref_remove(cas, h, "s2", "a"));
    TS_CHECK_OK(ts_cas_gc(cas, 100, cb_unreferenced, NULL, NULL, NULL, &gp));
    TS_CHECK_EQ_INT(gp.objects_freed, 1);
    TS_CHECK_EQ_INT(gp.bytes_freed, sizeof d);
    {
        int ex = 1;
        TS_CHECK_OK(ts_cas_exists(cas, h, &ex));
        TS_CHECK_EQ_INT(ex, 0);
    }
    ts_cas_close(cas);
    ts_io_posix_destroy(px);
}

int main(void)
{
    TS_RUN(base64_strict_rules);
    TS_RUN(base64_roundtrip_random);
    TS_RUN(save_load_roundtrip);
    TS_RUN(dedup_and_sync_budget);
    TS_RUN(references_up_and_down);
    TS_RUN(hash_strings_validated);
    TS_RUN(gc_with_grace);
    TS_RUN(gc_without_grace);
    TS_RUN(gc_incremental_slices);
    TS_RUN(verify_tampered_data);
    TS_RUN(hostile_metadata);
    TS_RUN(import_base64);
    TS_RUN(statistics);
    TS_RUN(delete_and_foreach);
    TS_RUN(repair_recomputes_counts);
    TS_RUN(crash_during_save_and_reference);
    TS_RUN(crash_during_remove_and_gc);
    TS_RUN(io_errors_leave_store_consistent);
    TS_RUN(out_of_memory_sweep);
    TS_RUN(posix_roundtrip);
    return ts_test_report("cas");
}
