/* Tests of the chunked sessions and the store facade: round trips in the
   legacy shape, appends across chunk boundaries, progressive loading,
   documents, delete with attachment references, read-your-writes, the lock,
   the session list and its manifest, search, and a power-loss run that
   crashes an append-heavy workload at every I/O step. Everything runs on
   ts_io_mem (through ts_io_fault for the crashes). */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

#include <stdint.h>

/* a string literal and its length */
#define S(lit) lit, (sizeof(lit) - 1)

/* ---- helpers ------------------------------------------------------------- */

static ts_store_config test_cfg(const ts_io *io)
{
    ts_store_config c = ts_store_config_default();
    c.io = io;
    c.now_ms = 1000;
    c.gc_grace_ms = 1;
    return c;
}

typedef struct mem_store {
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
} mem_store;

static int ms_open(mem_store *m)
{
    ts_store_config c;
    if (!m->mem) {
        if (ts_io_mem_create(NULL, &m->mem) != TS_OK) return -1;
        ts_io_mem_vtable(m->mem, &m->io);
    }
    c = test_cfg(&m->io);
    return (int)ts_store_open("mem", &c, &m->s);
}

static void ms_done(mem_store *m)
{
    if (m->s) ts_store_close(m->s);
    m->s = NULL;
    if (m->mem) ts_io_mem_destroy(m->mem);
    m->mem = NULL;
}

static int blob_eq(const ts_blob *b, const char *s)
{
    return b->data && b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
}

static int count_substr(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle), i;
    int c = 0;
    for (i = 0; i + k <= n; i++) if (memcmp(hay + i, needle, k) == 0) c++;
    return c;
}

/* A legacy session with every stream and document, unknown fields and
   unicode, compact (so the round trip is byte-exact). */
static const char *FULL_SESSION =
    "{\"id\":\"sess-1\",\"name\":\"Caf\\u00e9 \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\","
    "\"description\":\"deep \\\"work\\\"\\n\",\"status\":\"completed\",\"startTime\":1700000000000,"
    "\"endTime\":1700000360000,\"tags\":[\"a\",\"b\"],\"category\":\"Dev\",\"unknownThing\":{\"x\":[1,2.5e3,null,true]},"
    "\"screenshots\":[{\"id\":\"s0\",\"timestamp\":1,\"activity\":\"typing\",\"extra\":{\"k\":\"v\"}},"
    "{\"id\":\"s1\",\"timestamp\":2,\"weird\":\"\\u0000\\ud83d\\ude00\"},{\"id\":\"s2\",\"timestamp\":3},"
    "{\"id\":\"s3\",\"timestamp\":4},{\"id\":\"s4\",\"timestamp\":5},{\"id\":\"s5\",\"timestamp\":6},"
    "{\"id\":\"s6\",\"timestamp\":7},{\"id\":\"s7\",\"timestamp\":8},{\"id\":\"s8\",\"timestamp\":9},"
    "{\"id\":\"s9\",\"timestamp\":10},{\"id\":\"s10\",\"timestamp\":11},{\"id\":\"s11\",\"timestamp\":12}],"
    "\"summary\":{\"narrative\":\"r\xc3\xa9sum\xc3\xa9\",\"score\":-0.5},"
    "\"audioSegments\":[{\"id\":\"a0\",\"text\":\"hello\"},{\"id\":\"a1\",\"text\":\"\xd0\xbf\xd1\x80\xd0\xb8\"}],"
    "\"videoChunks\":[{\"id\":\"v0\"},{\"id\":\"v1\"},{\"id\":\"v2\"}],"
    "\"audioInsights\":[1,2,3],\"canvasSpec\":null,\"transcription\":\"full text\",\"trailing\":0}";

/* ---- tests --------------------------------------------------------------- */

TS_TEST(test_roundtrip_full_session)
{
    mem_store m = { 0 };
    ts_blob b = { 0 };
    char id[TS_SESSION_ID_MAX + 1];
    uint64_t n = 0;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save(m.s, FULL_SESSION, strlen(FULL_SESSION), id));
    TS_CHECK_EQ_STR(id, "sess-1");
    /* before any flush (overlay) */
    TS_CHECK_OK(ts_session_load(m.s, "sess-1", &b));
    TS_CHECK(blob_eq(&b, FULL_SESSION));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_stream_count(m.s, "sess-1", "screenshots", &n));
    TS_CHECK_EQ_INT(n, 12);
    TS_CHECK_OK(ts_session_stream_count(m.s, "sess-1", "videoChunks", &n));
    TS_CHECK_EQ_INT(n, 3);
    /* after close and reopen (disk only, cold cache) */
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_load(m.s, "sess-1", &b));
    TS_CHECK(blob_eq(&b, FULL_SESSION));
    if (!blob_eq(&b, FULL_SESSION)) printf("  got %s\n", (const char *)b.data);
    ts_blob_free(&b);
    /* the layout: 2 screenshot chunks, 1 audio, 1 video, 4 documents */
    {
        ts_io_stat st;
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "sessions-chunked/sess-1/metadata.json", &st));
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "sessions-chunked/sess-1/screenshots/chunk-000.json", &st));
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "sessions-chunked/sess-1/screenshots/chunk-001.json", &st));
        TS_CHECK(m.io.stat_fn(m.io.user, "sessions-chunked/sess-1/screenshots/chunk-002.json", &st) == TS_E_NOTFOUND);
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "sessions-chunked/sess-1/videoChunks/chunk-000.json", &st));
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "sessions-chunked/sess-1/summary.json", &st));
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "sessions-chunked/sess-1/canvasSpec.json", &st));
    }
    /* save(load(x)) again: same bytes, old generation retired */
    TS_CHECK_OK(ts_session_save(m.s, FULL_SESSION, strlen(FULL_SESSION), NULL));
    TS_CHECK_OK(ts_store_flush(m.s));
    TS_CHECK_OK(ts_session_load(m.s, "sess-1", &b));
    TS_CHECK(blob_eq(&b, FULL_SESSION));
    ts_blob_free(&b);
    {
        ts_io_stat st;
        TS_CHECK(m.io.stat_fn(m.io.user, "sessions-chunked/sess-1/screenshots/chunk-000.json", &st) == TS_E_NOTFOUND);
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "sessions-chunked/sess-1/screenshots/chunk-000.g1.json", &st));
    }
    /* whitespace-padded input is accepted; values come back verbatim */
    {
        const char *ws = " {\n \"id\" : \"w\" , \"screenshots\" : [ { \"a\" : 1 } ] , \"n\" : [ 1 , 2 ] }\n";
        TS_CHECK_OK(ts_session_save(m.s, ws, strlen(ws), NULL));
        TS_CHECK_OK(ts_session_load(m.s, "w", &b));
        TS_CHECK(blob_eq(&b, "{\"id\":\"w\",\"screenshots\":[{ \"a\" : 1 }],\"n\":[ 1 , 2 ]}"));
        ts_blob_free(&b);
    }
    ms_done(&m);
}

TS_TEST(test_bad_input)
{
    mem_store m = { 0 };
    ts_blob b = { 0 };
    uint64_t n = 9;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_EQ_INT(ts_session_save(m.s, S("{\"id\":\"../x\"}"), NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_save(m.s, S("{\"name\":\"x\"}"), NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_save(m.s, S("[1]"), NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_save(m.s, S("{\"id\":\"a\""), NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_save(m.s, S("{\"id\":\"a\",\"screenshots\":[1]}"), NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_load(m.s, "..", &b), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_load(m.s, "a/b", &b), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_load(m.s, "", &b), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_load(m.s, "nope", &b), TS_E_NOTFOUND);
    TS_CHECK(b.data == NULL);
    TS_CHECK_EQ_INT(ts_session_append(m.s, "nope", "screenshots", S("{}"), NULL), TS_E_NOTFOUND);
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"a\"}"), NULL));
    TS_CHECK_EQ_INT(ts_session_append(m.s, "a", "screenshots", S("[]"), NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_append(m.s, "a", "bad/name", S("{}"), NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_append(m.s, "a", "summary", S("{}"), NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_append(m.s, "a", "screenshots", S("{\"x\":}"), NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_stream_count(m.s, "a", "screenshots", &n), TS_OK);
    TS_CHECK_EQ_INT(n, 0);
    TS_CHECK_EQ_INT(ts_session_load_doc(m.s, "a", "nosuchdoc", &b), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_load_doc(m.s, "a", "summary", &b), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts_session_load_chunk(m.s, "a", "screenshots", 0, &b), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts_store_add_stream(m.s, "summary", 5), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_store_add_stream(m.s, "a.b", 5), TS_E_INVALID);
    ms_done(&m);
}

TS_TEST(test_append_across_chunks)
{
    mem_store m = { 0 };
    ts_blob b = { 0 };
    char rec[64], expect[4096];
    uint64_t i, idx = 0, n = 0;
    size_t el;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"ap\",\"startTime\":5}"), NULL));
    strcpy(expect, "[");
    for (i = 0; i < 35; i++) {
        snprintf(rec, sizeof rec, "{\"id\":\"r%llu\",\"timestamp\":%llu}", (unsigned long long)i,
                 (unsigned long long)i);
        TS_CHECK_OK(ts_session_append(m.s, "ap", "screenshots", rec, strlen(rec), &idx));
        TS_CHECK_EQ_INT(idx, i);
        if (i) strcat(expect, ",");
        strcat(expect, rec);
        if (i == 9 || i == 21) TS_CHECK_OK(ts_store_flush(m.s));
        if (i % 7 == 3) TS_CHECK_OK(ts_store_tick(m.s, 2000 + i * 50, 1000000));
    }
    strcat(expect, "]");
    el = strlen(expect);
    TS_CHECK_OK(ts_session_stream_count(m.s, "ap", "screenshots", &n));
    TS_CHECK_EQ_INT(n, 35);
    TS_CHECK_OK(ts_session_load_range(m.s, "ap", "screenshots", 0, 1000, &b));
    TS_CHECK(b.len == el && memcmp(b.data, expect, el) == 0);
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_load_range(m.s, "ap", "screenshots", 9, 2, &b));
    TS_CHECK(blob_eq(&b, "[{\"id\":\"r9\",\"timestamp\":9},{\"id\":\"r10\",\"timestamp\":10}]"));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_load_range(m.s, "ap", "screenshots", 40, 2, &b));
    TS_CHECK(blob_eq(&b, "[]"));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_load_chunk(m.s, "ap", "screenshots", 3, &b));
    TS_CHECK_EQ_INT(count_substr((const char *)b.data, b.len, "\"id\""), 5);
    ts_blob_free(&b);
    TS_CHECK_EQ_INT(ts_session_load_chunk(m.s, "ap", "screenshots", 4, &b), TS_E_NOTFOUND);
    /* audio (50 per chunk) and video (one chunk) and a user stream (3) */
    TS_CHECK_OK(ts_store_add_stream(m.s, "keystrokes", 3));
    for (i = 0; i < 7; i++) {
        TS_CHECK_OK(ts_session_append(m.s, "ap", "videoChunks", S("{\"v\":1}"), NULL));
        TS_CHECK_OK(ts_session_append(m.s, "ap", "keystrokes", S("{\"k\":2}"), NULL));
    }
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_load_range(m.s, "ap", "screenshots", 0, 1000, &b));
    TS_CHECK(b.len == el && memcmp(b.data, expect, el) == 0);
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_load_chunk(m.s, "ap", "videoChunks", 0, &b));
    TS_CHECK_EQ_INT(count_substr((const char *)b.data, b.len, "\"v\""), 7);
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_load_chunk(m.s, "ap", "keystrokes", 2, &b));
    TS_CHECK(blob_eq(&b, "[{\"k\":2}]"));
    ts_blob_free(&b);
    {
        ts_io_stat st;
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "sessions-chunked/ap/screenshots/chunk-003.json", &st));
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "sessions-chunked/ap/keystrokes/chunk-002.json", &st));
    }
    ms_done(&m);
}

/* The append rule: extra records past the metadata count (a crash between
   the chunk write and the metadata write) are ignored and overwritten. */
TS_TEST(test_extra_records_ignored)
{
    mem_store m = { 0 };
    ts_blob b = { 0 };
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"x\",\"screenshots\":[{\"n\":0},{\"n\":1}]}"), NULL));
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    TS_CHECK_OK(ts_io_mem_put(m.mem, "sessions-chunked/x/screenshots/chunk-000.json",
                              S("[{\"n\":0},{\"n\":1},{\"n\":\"ghost\"}]")));
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_load(m.s, "x", &b));
    TS_CHECK(blob_eq(&b, "{\"id\":\"x\",\"screenshots\":[{\"n\":0},{\"n\":1}]}"));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_append(m.s, "x", "screenshots", S("{\"n\":2}"), NULL));
    TS_CHECK_OK(ts_store_flush(m.s));
    TS_CHECK_OK(ts_session_load(m.s, "x", &b));
    TS_CHECK(blob_eq(&b, "{\"id\":\"x\",\"screenshots\":[{\"n\":0},{\"n\":1},{\"n\":2}]}"));
    ts_blob_free(&b);
    /* a chunk holding fewer records than counted is corrupt, not a crash */
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    TS_CHECK_OK(ts_io_mem_put(m.mem, "sessions-chunked/x/screenshots/chunk-000.json", S("[{\"n\":0}]")));
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_EQ_INT(ts_session_load(m.s, "x", &b), TS_E_CORRUPT);
    TS_CHECK(b.data == NULL);
    TS_CHECK_OK(ts_io_mem_put(m.mem, "sessions-chunked/x/screenshots/chunk-000.json", S("[{\"n\":0},{\"n")));
    TS_CHECK_OK(ts_lru_delete(m.s->lru, S("screenshots:x:0")) == TS_OK ? TS_OK : TS_OK);
    TS_CHECK_EQ_INT(ts_session_load(m.s, "x", &b), TS_E_CORRUPT);
    ms_done(&m);
}

typedef struct parts_seen {
    int metas, chunks, docs, stop_after;
    uint64_t records;
    char order[256];
} parts_seen;

static int on_part(void *user, const ts_session_part *p)
{
    parts_seen *ps = (parts_seen *)user;
    char tag[80];
    if (p->kind == TS_PART_METADATA) ps->metas++;
    if (p->kind == TS_PART_CHUNK) { ps->chunks++; ps->records += p->count; }
    if (p->kind == TS_PART_DOCUMENT) ps->docs++;
    snprintf(tag, sizeof tag, "%s%s%llu;", p->name, p->kind == TS_PART_CHUNK ? ":" : "",
             p->kind == TS_PART_CHUNK ? (unsigned long long)p->chunk : 0ull);
    if (strlen(ps->order) + strlen(tag) < sizeof ps->order) strcat(ps->order, tag);
    return ps->stop_after && ps->metas + ps->chunks + ps->docs >= ps->stop_after;
}

TS_TEST(test_progressive_load)
{
    mem_store m = { 0 };
    parts_seen ps;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save(m.s, FULL_SESSION, strlen(FULL_SESSION), NULL));
    memset(&ps, 0, sizeof ps);
    TS_CHECK_OK(ts_session_load_parts(m.s, "sess-1", on_part, &ps));
    TS_CHECK_EQ_INT(ps.metas, 1);
    TS_CHECK_EQ_INT(ps.chunks, 4);   /* screenshots 0,1; audio 0; video 0 */
    TS_CHECK_EQ_INT(ps.docs, 4);
    TS_CHECK_EQ_INT(ps.records, 12 + 2 + 3);
    TS_CHECK_EQ_STR(ps.order, "metadata0;screenshots:0;screenshots:1;audioSegments:0;videoChunks:0;"
                              "summary0;audioInsights0;canvasSpec0;transcription0;");
    memset(&ps, 0, sizeof ps);
    ps.stop_after = 2;
    TS_CHECK_EQ_INT(ts_session_load_parts(m.s, "sess-1", on_part, &ps), TS_E_CANCELLED);
    TS_CHECK_EQ_INT(ps.chunks, 1);
    ms_done(&m);
}

TS_TEST(test_documents_and_meta)
{
    mem_store m = { 0 };
    ts_blob b = { 0 };
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save_meta(m.s, "d1", S("{\"name\":\"first\",\"startTime\":10}")));
    TS_CHECK_OK(ts_session_load_meta(m.s, "d1", &b));
    TS_CHECK(count_substr((const char *)b.data, b.len, "\"id\":\"d1\"") == 1);
    TS_CHECK(count_substr((const char *)b.data, b.len, "\"storageVersion\":2") == 1);
    ts_blob_free(&b);
    TS_CHECK_EQ_INT(ts_session_save_meta(m.s, "d1", S("{\"id\":\"other\"}")), TS_E_INVALID);
    TS_CHECK_OK(ts_session_save_doc(m.s, "d1", "summary", S(" {\"t\":\"\xe2\x9c\x93\"} ")));
    TS_CHECK_OK(ts_session_load_doc(m.s, "d1", "summary", &b));
    TS_CHECK(blob_eq(&b, "{\"t\":\"\xe2\x9c\x93\"}"));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_append(m.s, "d1", "audioSegments", S("{\"x\":1}"), NULL));
    /* a metadata update keeps streams and documents, drops bookkeeping */
    TS_CHECK_OK(ts_session_save_meta(m.s, "d1",
        S("{\"id\":\"d1\",\"name\":\"renamed\",\"storageVersion\":7,\"chunked\":5,\"summary\":1,\"audioSegments\":[]}")));
    TS_CHECK_OK(ts_session_load(m.s, "d1", &b));
    TS_CHECK(blob_eq(&b, "{\"id\":\"d1\",\"name\":\"renamed\",\"audioSegments\":[{\"x\":1}],\"summary\":{\"t\":\"\xe2\x9c\x93\"}}"));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_save_doc(m.s, "d1", "summary", NULL, 0));
    TS_CHECK_EQ_INT(ts_session_load_doc(m.s, "d1", "summary", &b), TS_E_NOTFOUND);
    TS_CHECK_OK(ts_store_flush(m.s));
    {
        ts_io_stat st;
        TS_CHECK(m.io.stat_fn(m.io.user, "sessions-chunked/d1/summary.json", &st) == TS_E_NOTFOUND);
    }
    /* replace a stream */
    TS_CHECK_OK(ts_session_replace_stream(m.s, "d1", "audioSegments", S("[{\"y\":1},{\"y\":2}]")));
    TS_CHECK_OK(ts_session_load_range(m.s, "d1", "audioSegments", 0, 10, &b));
    TS_CHECK(blob_eq(&b, "[{\"y\":1},{\"y\":2}]"));
    ts_blob_free(&b);
    ms_done(&m);
}

TS_TEST(test_list_and_manifest)
{
    mem_store m = { 0 };
    ts_blob b = { 0 };
    uint64_t n = 0;
    int i;
    char js[128];
    TS_CHECK_OK(ms_open(&m));
    for (i = 0; i < 30; i++) {
        if (i % 5 == 4) snprintf(js, sizeof js, "{\"id\":\"L%02d\",\"name\":\"n%d\"}", i, i);
        else snprintf(js, sizeof js, "{\"id\":\"L%02d\",\"startTime\":%d}", i, (i * 7) % 30);
        TS_CHECK_OK(ts_session_save(m.s, js, strlen(js), NULL));
    }
    TS_CHECK_OK(ts_session_count(m.s, &n));
    TS_CHECK_EQ_INT(n, 30);
    TS_CHECK_OK(ts_session_delete(m.s, "L03"));
    TS_CHECK_OK(ts_session_list(m.s, &b));
    TS_CHECK_EQ_INT(count_substr((const char *)b.data, b.len, "\"id\":"), 29);
    TS_CHECK(count_substr((const char *)b.data, b.len, "L03") == 0);
    /* newest first, then sessions without a startTime by id */
    {
        const char *p = (const char *)b.data;
        const char *a = strstr(p, "\"L13\""), *c = strstr(p, "\"L26\""), *z = strstr(p, "\"L04\""),
                   *z2 = strstr(p, "\"L09\"");
        TS_CHECK(a && c && z && z2 && c < a && a < z && z < z2); /* L26 starts at 2, L13 at 1 */
    }
    ts_blob_free(&b);
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    /* clean close: the manifest is trusted, one read gives the list */
    {
        ts_io_stat st;
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "session-manifest", &st));
        TS_CHECK(m.io.stat_fn(m.io.user, "store.dirty", &st) == TS_E_NOTFOUND);
    }
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_count(m.s, &n));
    TS_CHECK_EQ_INT(n, 29);
    TS_CHECK_OK(ts_session_save_meta(m.s, "L05", S("{\"name\":\"changed\"}")));
    TS_CHECK_OK(ts_store_flush(m.s));
    /* crash without close: the manifest is stale and must not be trusted */
    ts_io_mem_crash(m.mem, TS_CRASH_DROP_UNSYNCED, 1);
    ts_store_close(m.s); /* the old owner's handle: its writes are on the dead disk */
    m.s = NULL;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_list(m.s, &b));
    TS_CHECK_EQ_INT(count_substr((const char *)b.data, b.len, "\"id\":"), 29);
    TS_CHECK_EQ_INT(count_substr((const char *)b.data, b.len, "changed"), 1);
    ts_blob_free(&b);
    /* a corrupt manifest after a clean close is rebuilt */
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    TS_CHECK_OK(ts_io_mem_put(m.mem, "session-manifest", S("[{\"id\":\"zz\"")));
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_count(m.s, &n));
    TS_CHECK_EQ_INT(n, 29);
    ms_done(&m);
}

TS_TEST(test_read_your_writes)
{
    mem_store m = { 0 };
    ts_blob b = { 0 };
    ts_io_counters c0, c1;
    ts_store_stats st;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_io_counters_get(&m.io, &c0));
    TS_CHECK_OK(ts_session_save(m.s, FULL_SESSION, strlen(FULL_SESSION), NULL));
    TS_CHECK_OK(ts_session_append(m.s, "sess-1", "screenshots", S("{\"late\":1}"), NULL));
    TS_CHECK_OK(ts_session_save_doc(m.s, "sess-1", "summary", S("\"new\"")));
    TS_CHECK_OK(ts_io_counters_get(&m.io, &c1));
    TS_CHECK_EQ_INT(c1.writes, c0.writes); /* nothing written on the caller's path */
    TS_CHECK_OK(ts_session_load_range(m.s, "sess-1", "screenshots", 12, 5, &b));
    TS_CHECK(blob_eq(&b, "[{\"late\":1}]"));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_load_doc(m.s, "sess-1", "summary", &b));
    TS_CHECK(blob_eq(&b, "\"new\""));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_store_stats_get(m.s, &st));
    TS_CHECK(st.queue.pending > 0);
    TS_CHECK_EQ_INT(st.sessions, 1);
    /* delete before any flush: gone at once */
    TS_CHECK_OK(ts_session_delete(m.s, "sess-1"));
    TS_CHECK_EQ_INT(ts_session_load(m.s, "sess-1", &b), TS_E_NOTFOUND);
    TS_CHECK_OK(ts_store_flush(m.s));
    TS_CHECK_OK(ts_store_stats_get(m.s, &st));
    TS_CHECK_EQ_INT(st.queue.pending, 0);
    TS_CHECK_EQ_INT(st.sessions, 0);
    ms_done(&m);
}

TS_TEST(test_lock)
{
    mem_store m = { 0 };
    ts_io io2;
    ts_store *s2 = NULL;
    ts_store_config c;
    ts_blob b = { 0 };
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"k\"}"), NULL));
    TS_CHECK_OK(ts_store_flush(m.s));
    ts_io_mem_vtable(m.mem, &io2);
    c = test_cfg(&io2);
    TS_CHECK_EQ_INT(ts_store_open("mem", &c, &s2), TS_E_LOCKED);
    TS_CHECK(s2 == NULL);
    c.read_only_if_locked = 1;
    TS_CHECK_OK(ts_store_open("mem", &c, &s2));
    if (s2) {
        TS_CHECK(ts_store_is_read_only(s2));
        TS_CHECK_EQ_INT(ts_session_save(s2, S("{\"id\":\"k2\"}"), NULL), TS_E_READONLY);
        TS_CHECK_EQ_INT(ts_session_append(s2, "k", "screenshots", S("{}"), NULL), TS_E_READONLY);
        TS_CHECK_OK(ts_session_load(s2, "k", &b));
        ts_blob_free(&b);
        TS_CHECK_OK(ts_store_close(s2));
    }
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    TS_CHECK_OK(ts_store_open("mem", &c, &s2));
    if (s2) {
        TS_CHECK(!ts_store_is_read_only(s2));
        TS_CHECK_OK(ts_store_close(s2));
    }
    ms_done(&m);
}

TS_TEST(test_search)
{
    mem_store m = { 0 };
    ts_query q;
    ts_index_hits h;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save(m.s, FULL_SESSION, strlen(FULL_SESSION), NULL));
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"s2\",\"name\":\"Budget review\",\"tags\":[\"b\"],\"startTime\":1}"), NULL));
    memset(&q, 0, sizeof q);
    q.text = "budget";
    TS_CHECK_OK(ts_store_search(m.s, &q, &h));
    TS_CHECK_EQ_INT(h.total, 1);
    if (h.count) TS_CHECK_EQ_STR(h.ids[0], "s2");
    ts_index_hits_free(&h);
    memset(&q, 0, sizeof q);
    q.tags = NULL;
    {
        const char *tags[1] = { "b" };
        q.tags = tags;
        q.tag_count = 1;
        TS_CHECK_OK(ts_store_search(m.s, &q, &h));
        TS_CHECK_EQ_INT(h.total, 2);
        if (h.count == 2) { TS_CHECK_EQ_STR(h.ids[0], "sess-1"); TS_CHECK_EQ_STR(h.ids[1], "s2"); }
        ts_index_hits_free(&h);
    }
    /* kept current on updates and deletes, persisted at close */
    TS_CHECK_OK(ts_session_save_meta(m.s, "s2", S("{\"name\":\"Holiday\"}")));
    TS_CHECK_OK(ts_session_delete(m.s, "sess-1"));
    memset(&q, 0, sizeof q);
    q.text = "holiday";
    TS_CHECK_OK(ts_store_search(m.s, &q, &h));
    TS_CHECK_EQ_INT(h.total, 1);
    ts_index_hits_free(&h);
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    {
        ts_io_stat st;
        TS_CHECK_OK(m.io.stat_fn(m.io.user, "session-indexes", &st));
    }
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK(m.s->index_load_pending); /* trusted: read on first use, not rebuilt */
    TS_CHECK_OK(ts_store_search(m.s, &q, &h));
    TS_CHECK_EQ_INT(h.total, 1);
    ts_index_hits_free(&h);
    ms_done(&m);
}

/* ---- record and document text in the index (index_record_text) ----------- */

#define NELEM_RT (sizeof RT_WORDS / sizeof RT_WORDS[0])

/* A store on ts_io_fault over ts_io_mem, so it can be killed. */
typedef struct rt_env {
    ts_io_mem *mem;
    ts_io_fault *fault;
    ts_io io;
    ts_store *s;
    int rtext;                  /* index_record_text */
} rt_env;

static ts_result rt_open(rt_env *e)
{
    ts_store_config c;
    ts_result r;
    if (!e->mem) {
        ts_io inner;
        if ((r = ts_io_mem_create(NULL, &e->mem)) != TS_OK) return r;
        ts_io_mem_vtable(e->mem, &inner);
        if ((r = ts_io_fault_create(&inner, NULL, &e->fault)) != TS_OK) return r;
        ts_io_fault_vtable(e->fault, &e->io);
    }
    c = test_cfg(&e->io);
    c.index_record_text = e->rtext;
    r = ts_store_open("mem", &c, &e->s);
    if (r == TS_OK) r = ts_store_add_stream(e->s, "notes", 3);
    return r;
}

static ts_result rt_close(rt_env *e)
{
    ts_result r = ts_store_close(e->s);
    e->s = NULL;
    return r;
}

/* Power loss after a flush: the store reopens untrusted (store.dirty) and
   rebuilds the index from the chunks. */
static ts_result rt_kill_reopen(rt_env *e)
{
    ts_fault_plan kp;
    ts_result r = ts_store_flush(e->s);
    if (r != TS_OK) return r;
    memset(&kp, 0, sizeof kp);
    kp.fail_at = ts_io_fault_ops(e->fault) + 1;
    kp.crash = 1;
    ts_io_fault_set(e->fault, &kp);
    ts_store_close(e->s);               /* fails at its first I/O */
    e->s = NULL;
    ts_io_mem_crash(e->mem, TS_CRASH_DROP_UNSYNCED, 7);
    ts_io_fault_reset(e->fault);
    if ((r = rt_open(e)) != TS_OK) return r;
    return e->s->trusted ? TS_E_STATE : TS_OK;
}

static void rt_done(rt_env *e)
{
    if (e->s) ts_store_close(e->s);
    e->s = NULL;
    if (e->fault) ts_io_fault_destroy(e->fault);
    if (e->mem) ts_io_mem_destroy(e->mem);
    e->fault = NULL;
    e->mem = NULL;
}

/* "total:id,id,..." of a query (scores too with rank). */
static const char *rt_hits(ts_store *s, const ts_query *q, char *out, size_t cap)
{
    ts_index_hits h;
    size_t i, n;
    ts_result r = ts_store_search(s, q, &h);
    if (r != TS_OK) { snprintf(out, cap, "error %d", (int)r); ts_index_hits_free(&h); return out; }
    n = (size_t)snprintf(out, cap, "%lu:", (unsigned long)h.total);
    for (i = 0; i < h.count && n + 64 < cap; i++) {
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? "," : "", h.ids[i]);
        if (h.scores) n += (size_t)snprintf(out + n, cap - n, "=%.17g", h.scores[i]);
    }
    ts_index_hits_free(&h);
    return out;
}

static const char *rt_text(ts_store *s, const char *text)
{
    static char out[1024];
    ts_query q;
    memset(&q, 0, sizeof q);
    q.text = text;
    return rt_hits(s, &q, out, sizeof out);
}

/* The store's index against a rebuild from the flushed chunks: a
   read-only store on the same files (store.dirty is there, so it does not
   trust session-indexes) answers every query (BM25 scores included) the
   same. 1 when they agree. */
static int rt_same_as_rebuild(rt_env *e, const char *const *texts, size_t n)
{
    ts_store_config c = test_cfg(&e->io);
    ts_store *ro = NULL;
    size_t i;
    int ok = 1;
    if (ts_store_flush(e->s) != TS_OK) return 0;
    c.read_only = 1;
    c.index_record_text = e->rtext;
    if (ts_store_open("mem", &c, &ro) != TS_OK) return 0;
    if (ro->trusted) ok = 0;
    for (i = 0; i < n && ok; i++) {
        char a[2048], b[2048];
        ts_query q;
        int rank;
        for (rank = 0; rank < 2; rank++) {
            memset(&q, 0, sizeof q);
            q.text = texts[i];
            q.op = (int)(i & 1);
            q.rank_bm25 = rank;
            rt_hits(e->s, &q, a, sizeof a);
            rt_hits(ro, &q, b, sizeof b);
            if (strcmp(a, b) != 0) {
                printf("  \"%s\"%s: the store's index says %s, a rebuild %s\n", texts[i], rank ? " (bm25)" : "", a, b);
                ok = 0;
            }
        }
    }
    ts_store_close(ro);
    return ok;
}

static const char *const RT_WORDS[] = {
    "xylophone", "quokka", "zeppelin", "walrus", "marimba", "ocelot", "banjo", "dirigible", "kumquat", "plain",
    "renamed", "mango", "tuba", "lemur", "the", "xylo*", "qu* zep*", "session", "unused"
};

static const char *RT_SESSION =
    "{\"id\":\"r1\",\"name\":\"plain session\",\"startTime\":5000,"
    "\"screenshots\":[{\"id\":\"s0\",\"activity\":\"Xylophone practice\"},{\"id\":\"s1\",\"activity\":7},"
    "{\"id\":\"s2\",\"nested\":{\"activity\":\"kumquat\"}}],"
    "\"audioSegments\":[{\"id\":\"a0\",\"transcription\":\"a quokka \\u00e9t\\u00e9\"},{\"id\":\"a1\",\"text\":\"kumquat\"}],"
    "\"summary\":{\"narrative\":\"zeppelin day\",\"keyPoints\":[\"kumquat\"]},"
    "\"audioInsights\":{\"narrative\":\"kumquat\"},\"transcription\":\"walrus talk\"}";

TS_TEST(test_search_record_text)
{
    rt_env e;
    char id[TS_SESSION_ID_MAX + 1];
    uint64_t idx = 0;
    char hash[65];
    static const unsigned char png[] = { 0x89, 'P', 'N', 'G', 1, 2, 3 };
    memset(&e, 0, sizeof e);
    e.rtext = 1;
    TS_CHECK_OK(rt_open(&e));
    TS_CHECK_OK(ts_session_save(e.s, RT_SESSION, strlen(RT_SESSION), id));
    TS_CHECK_OK(ts_session_save(e.s, S("{\"id\":\"r2\",\"name\":\"other\",\"startTime\":4000}"), NULL));
    /* screenshot activity, audio transcription, summary narrative, the
       transcription document; not other members, documents or nesting */
    TS_CHECK_EQ_STR(rt_text(e.s, "xylophone"), "1:r1");
    TS_CHECK_EQ_STR(rt_text(e.s, "quokka"), "1:r1");
    TS_CHECK_EQ_STR(rt_text(e.s, "\xc3\xa9t\xc3\xa9"), "1:r1");
    TS_CHECK_EQ_STR(rt_text(e.s, "zeppelin"), "1:r1");
    TS_CHECK_EQ_STR(rt_text(e.s, "walrus"), "1:r1");
    TS_CHECK_EQ_STR(rt_text(e.s, "kumquat"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "plain"), "1:r1");
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    /* an append adds the record's text: any stream, custom ones too */
    TS_CHECK_OK(ts_session_append(e.s, "r1", "screenshots", S("{\"id\":\"s3\",\"activity\":\"marimba\"}"), &idx));
    TS_CHECK_OK(ts_session_append(e.s, "r2", "notes", S("{\"transcription\":\"ocelot\"}"), &idx));
    TS_CHECK_OK(ts_session_append_screenshot(e.s, "r2", S("{\"id\":\"p\",\"activity\":\"tuba lesson\"}"), png,
                                             sizeof png, "image/png", hash, &idx));
    TS_CHECK_EQ_STR(rt_text(e.s, "marimba"), "1:r1");
    TS_CHECK_EQ_STR(rt_text(e.s, "ocelot"), "1:r2");
    TS_CHECK_EQ_STR(rt_text(e.s, "tuba"), "1:r2");
    /* new metadata keeps the records' text */
    TS_CHECK_OK(ts_session_save_meta(e.s, "r1", S("{\"name\":\"renamed\",\"startTime\":5000}")));
    TS_CHECK_EQ_STR(rt_text(e.s, "plain"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "renamed xylophone marimba walrus"), "1:r1");
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    /* a replaced stream: the old records' words go */
    TS_CHECK_OK(ts_session_replace_stream(e.s, "r1", "screenshots", S("[{\"id\":\"n0\",\"activity\":\"banjo\"}]")));
    TS_CHECK_EQ_STR(rt_text(e.s, "xylophone"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "marimba"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "banjo"), "1:r1");
    TS_CHECK_OK(ts_session_replace_stream(e.s, "r2", "notes", S("[]")));
    TS_CHECK_EQ_STR(rt_text(e.s, "ocelot"), "0:");
    /* documents: replaced, removed, and one that is not indexed */
    TS_CHECK_OK(ts_session_save_doc(e.s, "r1", "summary", S("{\"narrative\":\"dirigible\"}")));
    TS_CHECK_EQ_STR(rt_text(e.s, "zeppelin"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "dirigible"), "1:r1");
    TS_CHECK_OK(ts_session_save_doc(e.s, "r2", "summary", S("{\"narrative\":\"lemur\"}")));
    TS_CHECK_OK(ts_session_save_doc(e.s, "r1", "transcription", NULL, 0));
    TS_CHECK_EQ_STR(rt_text(e.s, "walrus"), "0:");
    TS_CHECK_OK(ts_session_save_doc(e.s, "r1", "canvasSpec", S("{\"narrative\":\"mango\"}")));
    TS_CHECK_EQ_STR(rt_text(e.s, "mango"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "lemur"), "1:r2");
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    /* clean close and reopen: the saved index, the same answers */
    TS_CHECK_OK(rt_close(&e));
    TS_CHECK_OK(rt_open(&e));
    TS_CHECK(e.s->trusted && e.s->index_load_pending);
    TS_CHECK_EQ_STR(rt_text(e.s, "banjo dirigible"), "1:r1");
    TS_CHECK(!e.s->index_load_pending && e.s->index_valid);
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    /* appends to the loaded index, then an unclean reopen: rebuilt, the same */
    TS_CHECK_OK(ts_session_append(e.s, "r2", "audioSegments", S("{\"transcription\":\"mango mango\"}"), &idx));
    TS_CHECK_EQ_STR(rt_text(e.s, "mango"), "1:r2");
    TS_CHECK_OK(rt_kill_reopen(&e));
    TS_CHECK_EQ_STR(rt_text(e.s, "mango"), "1:r2");
    TS_CHECK_EQ_STR(rt_text(e.s, "banjo"), "1:r1");
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    /* delete: its words go */
    TS_CHECK_OK(ts_session_delete(e.s, "r1"));
    TS_CHECK_EQ_STR(rt_text(e.s, "banjo"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "dirigible"), "0:");
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    /* a legacy session migrated through the store */
    ts_io_mem_put(e.mem, "sessions/leg.json",
                  S("{\"id\":\"leg\",\"name\":\"old one\",\"startTime\":3000,"
                    "\"screenshots\":[{\"id\":\"x\",\"activity\":\"xylophone again\"}],"
                    "\"summary\":{\"narrative\":\"zeppelin too\"}}"));
    TS_CHECK_OK(ts_migrate_session(e.s, "leg", NULL, NULL));
    TS_CHECK_EQ_STR(rt_text(e.s, "xylophone zeppelin"), "1:leg");
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    TS_CHECK_OK(rt_close(&e));
    rt_done(&e);
}

TS_TEST(test_record_text_option)
{
    rt_env e;
    ts_store_stats st;
    memset(&e, 0, sizeof e);
    /* off (the default): record words do not match */
    TS_CHECK_OK(rt_open(&e));
    TS_CHECK_OK(ts_session_save(e.s, RT_SESSION, strlen(RT_SESSION), NULL));
    TS_CHECK_EQ_STR(rt_text(e.s, "xylophone"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "zeppelin"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "plain"), "1:r1");
    TS_CHECK_OK(ts_session_append(e.s, "r1", "screenshots", S("{\"activity\":\"marimba\"}"), NULL));
    TS_CHECK_EQ_STR(rt_text(e.s, "marimba"), "0:");
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    TS_CHECK_OK(rt_close(&e));
    {
        /* saved in the 0.1.0 format (version 1) */
        static unsigned char buf[1 << 16];
        size_t got = 0;
        TS_CHECK_OK(e.io.read_file_fn(e.io.user, "session-indexes", buf, sizeof buf, &got));
        TS_CHECK(got > 24 && buf[4] == 1 && buf[8] == 0);
    }
    /* turned on for a store whose index has none: rebuilt with it */
    e.rtext = 1;
    TS_CHECK_OK(rt_open(&e));
    TS_CHECK_EQ_STR(rt_text(e.s, "xylophone marimba"), "1:r1");
    TS_CHECK_OK(ts_store_stats_get(e.s, &st));
    TS_CHECK_EQ_INT(st.index.record_text, 1);
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    TS_CHECK_OK(rt_close(&e));
    TS_CHECK_OK(rt_open(&e));
    TS_CHECK_EQ_STR(rt_text(e.s, "xylophone"), "1:r1");         /* saved with it: loaded */
    TS_CHECK(e.s->index_valid);
    TS_CHECK_OK(rt_close(&e));
    /* and off again: the saved index with record text is not used */
    e.rtext = 0;
    TS_CHECK_OK(rt_open(&e));
    TS_CHECK_OK(ts_session_append(e.s, "r1", "screenshots", S("{\"activity\":\"ocelot\"}"), NULL));
    TS_CHECK_EQ_STR(rt_text(e.s, "xylophone"), "0:");
    TS_CHECK_EQ_STR(rt_text(e.s, "ocelot"), "0:");
    TS_CHECK_OK(ts_store_stats_get(e.s, &st));
    TS_CHECK_EQ_INT(st.index.record_text, 0);
    TS_CHECK(rt_same_as_rebuild(&e, RT_WORDS, NELEM_RT));
    TS_CHECK_OK(rt_close(&e));
    rt_done(&e);
}

/* Randomized, differential: random sessions with records in three streams
   (one custom) and documents, random writes of every kind, clean reopens
   and kills; after each step random queries against a brute-force model of
   which words each session's indexed text holds, and now and then the
   whole index against a rebuild from the chunks (BM25 scores included).
   TS_TEST_SEED picks another run, TS_TEST_LONG=1 a longer one. */
#define RD_IDS 7
#define RD_STREAMS 3
#define RD_MAXREC 24
static const char *const RD_STREAM[RD_STREAMS] = { "screenshots", "audioSegments", "notes" };
static const char *const RD_VOCAB[] = { "apple", "banana", "cherry", "delta", "echo", "falcon", "gamma", "harbor",
                                        "Apple", "indigo" };
#define RD_NV 10

typedef struct rd_rec { char json[160]; unsigned words; } rd_rec;  /* words: bit per vocabulary word */
typedef struct rd_sess {
    int exists;
    unsigned name_words, sum_words, tr_words;
    rd_rec rec[RD_STREAMS][RD_MAXREC];
    size_t nrec[RD_STREAMS];
    int has_stream[RD_STREAMS];
} rd_sess;

static uint64_t rd_state = 12345;
static unsigned rd_rand(unsigned n)
{
    rd_state ^= rd_state << 13; rd_state ^= rd_state >> 7; rd_state ^= rd_state << 17;
    return n ? (unsigned)((rd_state >> 11) % n) : 0;
}
static unsigned rd_bit(unsigned w) { return 1u << (w == 8 ? 0 : w); }   /* "Apple" folds to "apple" */

/* Up to two random words into out; their bits. */
static unsigned rd_words(char *out, size_t cap)
{
    unsigned a = rd_rand(RD_NV), b = rd_rand(RD_NV), k = rd_rand(3);
    if (k == 0) { snprintf(out, cap, "%s", RD_VOCAB[a]); return rd_bit(a); }
    if (k == 1) { snprintf(out, cap, "%s, the %s!", RD_VOCAB[a], RD_VOCAB[b]); return rd_bit(a) | rd_bit(b); }
    snprintf(out, cap, "x");
    return 0;
}

static unsigned rd_make_rec(rd_rec *r, unsigned seq)
{
    char w[64];
    unsigned bits = rd_words(w, sizeof w);
    switch (rd_rand(5)) {
    case 0: snprintf(r->json, sizeof r->json, "{\"id\":\"r%u\",\"activity\":\"%s\"}", seq, w); break;
    case 1: snprintf(r->json, sizeof r->json, "{\"id\":\"r%u\",\"transcription\":\"%s\"}", seq, w); break;
    case 2: snprintf(r->json, sizeof r->json, "{\"activity\":\"%s\",\"transcription\":\"%s\"}", w, w); break;
    case 3: snprintf(r->json, sizeof r->json, "{\"id\":\"r%u\",\"text\":\"%s\"}", seq, w); bits = 0; break;
    default: snprintf(r->json, sizeof r->json, "{\"meta\":{\"activity\":\"%s\"},\"activity\":[1]}", w); bits = 0; break;
    }
    r->words = bits;
    return bits;
}

static void rd_put_records(ts__buf *b, const rd_sess *m, int k)
{
    size_t i;
    ts__buf_putc(b, '[');
    for (i = 0; i < m->nrec[k]; i++) { if (i) ts__buf_putc(b, ','); ts__buf_puts(b, m->rec[k][i].json); }
    ts__buf_putc(b, ']');
}

static unsigned rd_indexed(const rd_sess *m, int rtext)
{
    unsigned w = m->name_words;
    size_t k, i;
    if (!rtext) return w;
    w |= m->sum_words | m->tr_words;
    for (k = 0; k < RD_STREAMS; k++)
        for (i = 0; i < m->nrec[k]; i++) w |= m->rec[k][i].words;
    return w;
}

static void rd_session_test(int rtext, unsigned steps)
{
    rt_env e;
    rd_sess *model = (rd_sess *)calloc(RD_IDS, sizeof(rd_sess));
    unsigned step, seq = 0, mismatches = 0, queries = 0, rebuild_checks = 0;
    memset(&e, 0, sizeof e);
    e.rtext = rtext;
    if (!model || rt_open(&e) != TS_OK) { TS_CHECK(0); free(model); return; }
    for (step = 0; step < steps && mismatches == 0; step++) {
        unsigned id = rd_rand(RD_IDS), op = rd_rand(100), k = rd_rand(RD_STREAMS);
        char sid[8], w[64];
        rd_sess *m = &model[id];
        ts__buf b;
        ts_result r;
        size_t i;
        snprintf(sid, sizeof sid, "d%u", id);
        ts__buf_init(&b, NULL);
        if (op < 16) {
            /* a whole session */
            memset(m, 0, sizeof *m);
            m->exists = 1;
            m->name_words = rd_words(w, sizeof w);
            ts__buf_printf(&b, "{\"id\":\"%s\",\"name\":\"%s\",\"startTime\":%u", sid, w, 1000 + id);
            for (i = 0; i < RD_STREAMS; i++) {
                size_t j;
                if (rd_rand(3) == 0) continue;
                m->has_stream[i] = 1;
                m->nrec[i] = rd_rand(8);
                for (j = 0; j < m->nrec[i]; j++) rd_make_rec(&m->rec[i][j], seq++);
                ts__buf_printf(&b, ",\"%s\":", RD_STREAM[i]);
                rd_put_records(&b, m, (int)i);
            }
            if (rd_rand(2)) { m->sum_words = rd_words(w, sizeof w); ts__buf_printf(&b, ",\"summary\":{\"narrative\":\"%s\"}", w); }
            if (rd_rand(2)) { m->tr_words = rd_words(w, sizeof w); ts__buf_printf(&b, ",\"transcription\":\"%s\"", w); }
            if (rd_rand(2)) { rd_words(w, sizeof w); ts__buf_printf(&b, ",\"audioInsights\":{\"narrative\":\"%s\"}", w); }
            ts__buf_putc(&b, '}');
            TS_CHECK_OK(ts_session_save(e.s, (const char *)b.data, b.len, NULL));
        } else if (op < 24) {
            unsigned nw = rd_words(w, sizeof w);
            ts__buf_printf(&b, "{\"name\":\"%s\",\"startTime\":%u}", w, 1000 + id);
            TS_CHECK_OK(ts_session_save_meta(e.s, sid, (const char *)b.data, b.len));
            if (!m->exists) memset(m, 0, sizeof *m);
            m->exists = 1;
            m->name_words = nw;
        } else if (op < 50) {
            rd_rec rec;
            rd_make_rec(&rec, seq++);
            r = ts_session_append(e.s, sid, RD_STREAM[k], rec.json, strlen(rec.json), NULL);
            TS_CHECK_EQ_INT(r, m->exists ? TS_OK : TS_E_NOTFOUND);
            if (r == TS_OK) {
                if (m->nrec[k] == RD_MAXREC) m->nrec[k] = 0;   /* the model's room: replaced below */
                m->rec[k][m->nrec[k]++] = rec;
                m->has_stream[k] = 1;
                if (m->nrec[k] == 1) {
                    /* keep store and model equal after the model's wrap */
                    rd_put_records(&b, m, (int)k);
                    TS_CHECK_OK(ts_session_replace_stream(e.s, sid, RD_STREAM[k], (const char *)b.data, b.len));
                }
            }
        } else if (op < 60) {
            size_t n = rd_rand(6), j;
            rd_sess tmp = *m;
            tmp.nrec[k] = n;
            for (j = 0; j < n; j++) rd_make_rec(&tmp.rec[k][j], seq++);
            rd_put_records(&b, &tmp, (int)k);
            r = ts_session_replace_stream(e.s, sid, RD_STREAM[k], (const char *)b.data, b.len);
            TS_CHECK_EQ_INT(r, m->exists ? TS_OK : TS_E_NOTFOUND);
            if (r == TS_OK) { *m = tmp; m->has_stream[k] = 1; }
        } else if (op < 72) {
            unsigned which = rd_rand(3), nw = rd_words(w, sizeof w), del = rd_rand(4) == 0;
            const char *doc = which == 0 ? "summary" : which == 1 ? "transcription" : "audioInsights";
            if (which == 0) ts__buf_printf(&b, "{\"narrative\":\"%s\",\"n\":1}", w);
            else if (which == 1 && rd_rand(4)) ts__buf_printf(&b, "\"%s\"", w);
            else if (which == 1) { ts__buf_printf(&b, "{\"text\":\"%s\"}", w); nw = 0; }
            else ts__buf_printf(&b, "{\"narrative\":\"%s\"}", w);
            r = ts_session_save_doc(e.s, sid, doc, del ? NULL : (const char *)b.data, del ? 0 : b.len);
            TS_CHECK_EQ_INT(r, m->exists ? TS_OK : TS_E_NOTFOUND);
            if (r == TS_OK && which == 0) m->sum_words = del ? 0 : nw;
            if (r == TS_OK && which == 1) m->tr_words = del ? 0 : nw;
        } else if (op < 78) {
            r = ts_session_delete(e.s, sid);
            TS_CHECK_EQ_INT(r, m->exists ? TS_OK : TS_E_NOTFOUND);
            memset(m, 0, sizeof *m);
        } else if (op < 81) {
            TS_CHECK_OK(rt_close(&e));
            TS_CHECK_OK(rt_open(&e));
        } else if (op < 84) {
            TS_CHECK_OK(rt_kill_reopen(&e));
        } else if (op < 86) {
            static const char *const texts[] = { "apple", "banana cherry", "delta echo", "falcon gamma harbor",
                                                 "indigo apple", "ch* ap*", "the" };
            rebuild_checks++;
            if (!rt_same_as_rebuild(&e, texts, sizeof texts / sizeof texts[0])) {
                TS_CHECK(!"the index differs from a rebuild");
                mismatches++;
            }
        } else {
            ts_store_tick(e.s, 1000 + step, 1000000);
        }
        ts__buf_free(&b);
        /* random queries against the brute-force model */
        for (i = 0; i < 3 && mismatches == 0; i++) {
            unsigned a = rd_rand(RD_NV), c = rd_rand(RD_NV), two = rd_rand(2), orop = rd_rand(2), pre = rd_rand(5) == 0;
            unsigned want_bits = rd_bit(a), other = rd_bit(c), j;
            char text[64], got[512], want[512];
            size_t n, total = 0;
            ts_query q;
            memset(&q, 0, sizeof q);
            if (pre) { snprintf(text, sizeof text, "%.2s*", RD_VOCAB[a]); }
            else if (two) snprintf(text, sizeof text, "%s %s", RD_VOCAB[a], RD_VOCAB[c]);
            else snprintf(text, sizeof text, "%s", RD_VOCAB[a]);
            q.text = text;
            q.op = orop ? TS_QUERY_OR : TS_QUERY_AND;
            rt_hits(e.s, &q, got, sizeof got);
            /* brute force: startTime 1000 + id, so newest first is the highest id */
            n = 0;
            want[0] = 0;
            for (j = RD_IDS; j-- > 0;) {
                unsigned have = model[j].exists ? rd_indexed(&model[j], rtext) : 0, v;
                int hit;
                if (!model[j].exists) continue;
                if (pre) {
                    unsigned t;
                    hit = 0;
                    for (t = 0; t < RD_NV; t++)
                        if (strncmp(RD_VOCAB[t == 8 ? 0 : t], RD_VOCAB[a == 8 ? 0 : a], 2) == 0 && (have & rd_bit(t))) hit = 1;
                } else if (two) {
                    v = (have & want_bits ? 1u : 0u) + (have & other ? 1u : 0u);
                    hit = orop ? v > 0 : ((have & want_bits) && (have & other));
                } else {
                    hit = (have & want_bits) != 0;
                }
                if (!hit) continue;
                total++;
                n += (size_t)snprintf(want + n, sizeof want - n, "%sd%u", n ? "," : "", j);
            }
            {
                char full[600];
                snprintf(full, sizeof full, "%lu:%s", (unsigned long)total, want);
                queries++;
                if (strcmp(full, got) != 0) {
                    printf("  step %u op %u: \"%s\" %s: the store says %s, the model %s\n", step, op, text,
                           orop ? "OR" : "AND", got, full);
                    TS_CHECK(!"search differs from the model");
                    mismatches++;
                }
            }
        }
    }
    if (mismatches == 0 && !rt_same_as_rebuild(&e, RD_VOCAB, RD_NV)) TS_CHECK(!"the index differs from a rebuild at the end");
    printf("record-text differential (option %s): %u steps, %u queries, %u comparisons with a rebuild\n",
           rtext ? "on" : "off", step, queries, rebuild_checks);
    TS_CHECK(queries > steps);
    /* a small run (valgrind) may end before its first random comparison;
       the comparison just above still ran */
    TS_CHECK(rebuild_checks > 0 || ts_test_small());
    TS_CHECK_OK(rt_close(&e));
    rt_done(&e);
    free(model);
}

TS_TEST(test_record_text_differential)
{
    unsigned steps = (unsigned)ts_test_count(700, 6000);
    if (getenv("TS_TEST_SEED")) rd_state = strtoull(getenv("TS_TEST_SEED"), NULL, 10) | 1;
    rd_session_test(1, steps);
    rd_session_test(0, steps / 3);
}

TS_TEST(test_screenshots_and_attachments)
{
    mem_store m = { 0 };
    ts_blob b = { 0 };
    ts_store_stats st;
    char h1[65], h2[65], h3[65];
    unsigned char img1[3000], img2[2000];
    uint64_t idx = 0, count = 0, removed = 0;
    int i;
    for (i = 0; i < 3000; i++) img1[i] = (unsigned char)(i * 7);
    for (i = 0; i < 2000; i++) img2[i] = (unsigned char)(i * 13 + 1);
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"A\",\"name\":\"a\"}"), NULL));
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"B\",\"name\":\"b\"}"), NULL));
    TS_CHECK_OK(ts_session_append_screenshot(m.s, "A", S("{\"id\":\"shot1\",\"activity\":\"x\"}"),
                                             img1, sizeof img1, "image/png", h1, &idx));
    TS_CHECK_EQ_INT(idx, 0);
    TS_CHECK_OK(ts_session_append_screenshot(m.s, "A", S("{\"id\":\"shot2\"}"), img1, sizeof img1,
                                             "image/png", h2, &idx));
    TS_CHECK_EQ_STR(h1, h2); /* dedup */
    TS_CHECK_OK(ts_session_append_screenshot(m.s, "B", S("{\"timestamp\":5}"), img2, sizeof img2,
                                             NULL, h3, NULL));
    TS_CHECK(strcmp(h1, h3) != 0);
    /* read-your-writes of the bytes, before any flush */
    TS_CHECK_OK(ts_attach_get(m.s, h1, &b));
    TS_CHECK(b.len == sizeof img1 && memcmp(b.data, img1, b.len) == 0);
    ts_blob_free(&b);
    /* the record gained attachmentHash */
    TS_CHECK_OK(ts_session_load_range(m.s, "A", "screenshots", 0, 1, &b));
    TS_CHECK_EQ_INT(count_substr((const char *)b.data, b.len, h1), 1);
    TS_CHECK_EQ_INT(count_substr((const char *)b.data, b.len, "\"activity\":\"x\""), 1);
    ts_blob_free(&b);
    TS_CHECK_OK(ts_store_flush(m.s));
    TS_CHECK_OK(ts_cas_ref_count(m.s->cas, h1, &count));
    TS_CHECK_EQ_INT(count, 2);
    TS_CHECK_OK(ts_store_stats_get(m.s, &st));
    TS_CHECK_EQ_INT(st.attachments.objects, 2);
    TS_CHECK_EQ_INT(st.attachments.logical_bytes, 2 * 3000 + 2000);
    TS_CHECK_EQ_INT(st.attachments.dedup_saved_bytes, 3000);
    /* a session saved with records naming an attachment references it */
    {
        char js[256];
        snprintf(js, sizeof js, "{\"id\":\"C\",\"screenshots\":[{\"id\":\"c1\",\"attachmentHash\":\"%s\"}]}", h3);
        TS_CHECK_OK(ts_session_save(m.s, js, strlen(js), NULL));
        TS_CHECK_OK(ts_store_flush(m.s));
        TS_CHECK_OK(ts_cas_ref_count(m.s->cas, h3, &count));
        TS_CHECK_EQ_INT(count, 2);
    }
    /* delete releases the references; GC frees what nothing references */
    TS_CHECK_OK(ts_session_delete(m.s, "A"));
    TS_CHECK_OK(ts_store_flush(m.s));
    TS_CHECK_OK(ts_cas_ref_count(m.s->cas, h1, &count));
    TS_CHECK_EQ_INT(count, 0);
    TS_CHECK_OK(ts_session_delete(m.s, "B"));
    TS_CHECK_OK(ts_store_gc(m.s, 100000, &removed));
    TS_CHECK_EQ_INT(removed, 1); /* h1 goes; h3 is still named by C */
    TS_CHECK_EQ_INT(ts_attach_get(m.s, h1, &b), TS_E_NOTFOUND);
    TS_CHECK_OK(ts_attach_get(m.s, h3, &b));
    TS_CHECK(b.len == sizeof img2);
    ts_blob_free(&b);
    /* GC from idle after the last reference goes */
    TS_CHECK_OK(ts_session_delete(m.s, "C"));
    for (i = 0; i < 6; i++) {
        ts_result r = ts_store_idle(m.s, 200000 + (uint64_t)i * 1000, 100000);
        TS_CHECK(r == TS_OK || r == TS_DONE);
    }
    TS_CHECK_OK(ts_store_flush(m.s));
    TS_CHECK_EQ_INT(ts_attach_get(m.s, h3, &b), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts_attach_get(m.s, "xyz", &b), TS_E_INVALID);
    ms_done(&m);
}

/* More chunk files than the queue takes after-paths for one item. */
TS_TEST(test_big_session)
{
    mem_store m = { 0 };
    ts_blob b = { 0 };
    size_t cap = 700 * 40 + 256, len = 0;
    char *js = (char *)malloc(cap);
    int i;
    uint64_t n = 0;
    TS_CHECK(js != NULL);
    if (!js) return;
    len += (size_t)sprintf(js + len, "{\"id\":\"big\",\"screenshots\":[");
    for (i = 0; i < 700; i++) len += (size_t)sprintf(js + len, "%s{\"i\":%d}", i ? "," : "", i);
    len += (size_t)sprintf(js + len, "],\"summary\":\"s\",\"transcription\":\"t\"}");
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save(m.s, js, len, NULL));
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_load(m.s, "big", &b));
    TS_CHECK(b.len == len && memcmp(b.data, js, len) == 0);
    ts_blob_free(&b);
    TS_CHECK_OK(ts_session_stream_count(m.s, "big", "screenshots", &n));
    TS_CHECK_EQ_INT(n, 700);
    TS_CHECK_OK(ts_session_load_chunk(m.s, "big", "screenshots", 69, &b));
    TS_CHECK_EQ_INT(count_substr((const char *)b.data, b.len, "\"i\""), 10);
    ts_blob_free(&b);
    free(js);
    ms_done(&m);
}

/* ---- power loss at every I/O step ------------------------------------------ */

typedef struct crash_run {
    ts_io_mem *mem;
    ts_io_fault *fault;
    ts_io io;
    uint64_t acked;        /* records acknowledged by a completed flush */
    int session_acked;     /* the session's creation was flushed */
    uint64_t appended;     /* records appended (acknowledged or not) */
} crash_run;

#define CRASH_APPENDS 26

/* The workload: create a session, append records, flushing every 4th; a
   tick now and then. Stops at the first failure (the crash). */
static void crash_workload(crash_run *cr)
{
    ts_store *s = NULL;
    ts_store_config c = test_cfg(&cr->io);
    uint64_t i;
    char rec[64];
    c.no_index = 1;
    if (ts_store_open("mem", &c, &s) != TS_OK) return;
    if (ts_session_save(s, S("{\"id\":\"cr\",\"name\":\"crash\"}"), NULL) != TS_OK) goto out;
    if (ts_store_flush(s) != TS_OK) goto out;
    cr->session_acked = 1;
    for (i = 0; i < CRASH_APPENDS; i++) {
        snprintf(rec, sizeof rec, "{\"seq\":%llu}", (unsigned long long)i);
        if (i % 5 == 2) {
            /* with image bytes: a new object, or a duplicate of an earlier one */
            unsigned char img[64];
            memset(img, (int)(i % 10), sizeof img);
            if (ts_session_append_screenshot(s, "cr", rec, strlen(rec), img, sizeof img, "image/png",
                                             NULL, NULL) != TS_OK)
                goto out;
        } else if (ts_session_append(s, "cr", "screenshots", rec, strlen(rec), NULL) != TS_OK) {
            goto out;
        }
        cr->appended = i + 1;
        if (i % 3 == 1 && ts_store_tick(s, 2000 + i * 200, 100000) != TS_OK) goto out;
        if (i % 4 == 3) {
            if (ts_store_flush(s) != TS_OK) goto out;
            cr->acked = i + 1;
        }
    }
    if (ts_store_close(s) != TS_OK) { s = NULL; goto out; }
    cr->acked = CRASH_APPENDS;
    s = NULL;
out:
    if (s) ts_store_close(s); /* fails after the crash; frees the handle */
}

/* After the crash: reopen and check the invariants. Returns 0 when fine. */
static int crash_check(crash_run *cr, char *why, size_t why_n)
{
    ts_store *s = NULL;
    ts_store_config c = test_cfg(&cr->io);
    ts_blob b = { 0 };
    uint64_t n = 0, i;
    int ex = 0, rc = 0;
    ts_result r;
    c.no_index = 1;
    if ((r = ts_store_open("mem", &c, &s)) != TS_OK) {
        snprintf(why, why_n, "reopen failed: %d", r);
        return 1;
    }
    if (ts_session_exists(s, "cr", &ex) != TS_OK) { snprintf(why, why_n, "exists failed"); rc = 1; goto out; }
    if (!ex) {
        if (cr->session_acked) { snprintf(why, why_n, "acknowledged session lost"); rc = 1; }
        goto out;
    }
    if ((r = ts_session_stream_count(s, "cr", "screenshots", &n)) != TS_OK) {
        snprintf(why, why_n, "count failed: %d", r); rc = 1; goto out;
    }
    if (n < cr->acked) { snprintf(why, why_n, "count %llu < acked %llu", (unsigned long long)n, (unsigned long long)cr->acked); rc = 1; goto out; }
    if (n > cr->appended) { snprintf(why, why_n, "count %llu > appended", (unsigned long long)n); rc = 1; goto out; }
    if ((r = ts_session_load_range(s, "cr", "screenshots", 0, 1000, &b)) != TS_OK) {
        snprintf(why, why_n, "load failed: %d", r); rc = 1; goto out;
    }
    /* exactly records 0..n-1, in order, each once */
    {
        const char *p = (const char *)b.data;
        for (i = 0; i < n; i++) {
            char want[32];
            snprintf(want, sizeof want, "{\"seq\":%llu", (unsigned long long)i);
            p = strstr(p, want);
            if (p) p += strlen(want);
            if (!p || (*p != '}' && *p != ',')) { snprintf(why, why_n, "record %llu missing", (unsigned long long)i); rc = 1; goto out; }
        }
        if ((uint64_t)count_substr((const char *)b.data, b.len, "seq") != n) {
            snprintf(why, why_n, "metadata count %llu != records held", (unsigned long long)n); rc = 1; goto out;
        }
        /* every attachment a counted record names is there and whole */
        p = (const char *)b.data;
        while ((p = strstr(p, "\"attachmentHash\":\"")) != NULL) {
            char hex[65];
            ts_blob img = { 0 };
            p += 18;
            memcpy(hex, p, 64);
            hex[64] = 0;
            if ((r = ts_attach_get(s, hex, &img)) != TS_OK || img.len != 64) {
                snprintf(why, why_n, "attachment %.12s... of a counted record: %d", hex, r);
                ts_blob_free(&img);
                rc = 1;
                goto out;
            }
            ts_blob_free(&img);
        }
    }
    /* and the store keeps working: the next append lands after them */
    if (ts_session_append(s, "cr", "screenshots", S("{\"seq\":999}"), NULL) != TS_OK ||
        ts_store_flush(s) != TS_OK) {
        snprintf(why, why_n, "append after reopen failed"); rc = 1; goto out;
    }
    if (ts_session_stream_count(s, "cr", "screenshots", &i) != TS_OK || i != n + 1) {
        snprintf(why, why_n, "append after reopen miscounted"); rc = 1; goto out;
    }
out:
    ts_blob_free(&b);
    if (s) ts_store_close(s);
    return rc;
}

TS_TEST(test_crash_every_step)
{
    crash_run cr;
    uint64_t total, k, failures = 0, steps = 0;
    int mode;
    const char *env_long = getenv("TS_TEST_LONG");
    /* a clean run to count the operations */
    memset(&cr, 0, sizeof cr);
    TS_CHECK_OK(ts_io_mem_create(NULL, &cr.mem));
    {
        ts_io inner;
        ts_io_mem_vtable(cr.mem, &inner);
        TS_CHECK_OK(ts_io_fault_create(&inner, NULL, &cr.fault));
        ts_io_fault_vtable(cr.fault, &cr.io);
    }
    crash_workload(&cr);
    TS_CHECK_EQ_INT(cr.acked, CRASH_APPENDS);
    total = ts_io_fault_ops(cr.fault);
    ts_io_fault_destroy(cr.fault);
    ts_io_mem_destroy(cr.mem);
    TS_CHECK(total > 20);
    for (mode = 0; mode < 2; mode++) {
        for (k = 1; k <= total; k++) {
            ts_fault_plan plan;
            ts_io inner;
            char why[160];
            uint64_t seeds = mode == 0 ? 1 : (env_long ? 8 : 2), seed;
            for (seed = 0; seed < seeds; seed++) {
                memset(&cr, 0, sizeof cr);
                if (ts_io_mem_create(NULL, &cr.mem) != TS_OK) { TS_CHECK(0); return; }
                ts_io_mem_vtable(cr.mem, &inner);
                if (ts_io_fault_create(&inner, NULL, &cr.fault) != TS_OK) { TS_CHECK(0); return; }
                ts_io_fault_vtable(cr.fault, &cr.io);
                memset(&plan, 0, sizeof plan);
                plan.fail_at = ts_io_fault_ops(cr.fault) + k;
                plan.crash = 1;
                ts_io_fault_set(cr.fault, &plan);
                crash_workload(&cr);
                ts_io_mem_crash(cr.mem, mode == 0 ? TS_CRASH_DROP_UNSYNCED : TS_CRASH_RANDOM,
                                k * 31 + seed);
                ts_io_fault_reset(cr.fault);
                steps++;
                if (crash_check(&cr, why, sizeof why)) {
                    if (failures++ < 5)
                        printf("  crash at op %llu/%llu (mode %d seed %llu): %s\n", (unsigned long long)k,
                               (unsigned long long)total, mode, (unsigned long long)seed, why);
                }
                ts_io_fault_destroy(cr.fault);
                ts_io_mem_destroy(cr.mem);
            }
        }
    }
    TS_CHECK_EQ_INT(failures, 0);
    TS_CHECK(steps >= total);
}

/* ---- ts_store_verify / repair -------------------------------------------- */

typedef struct vprob { int n; ts_result code[16]; char what[16][80]; } vprob;

static void vprob_fn(void *user, const char *what, ts_result code, const char *message)
{
    vprob *p = (vprob *)user;
    (void)message;
    if (p->n < 16) {
        p->code[p->n] = code;
        snprintf(p->what[p->n], sizeof p->what[0], "%s", what);
    }
    p->n++;
}

static int vprob_has(const vprob *p, const char *what, ts_result code)
{
    int i;
    for (i = 0; i < p->n && i < 16; i++)
        if (strcmp(p->what[i], what) == 0 && p->code[i] == code) return 1;
    return 0;
}

TS_TEST(test_verify_and_repair)
{
    mem_store m = { 0 };
    ts_store_verify_report rep;
    vprob p;
    char h1[65], h2[65], path[160];
    unsigned char img1[1500], img2[1700];
    ts_cas_ref ref;
    uint64_t count = 0;
    int i;
    for (i = 0; i < 1500; i++) img1[i] = (unsigned char)(i * 5);
    for (i = 0; i < 1700; i++) img2[i] = (unsigned char)(i * 11 + 3);
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"A\",\"name\":\"alpha\"}"), NULL));
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"B\",\"name\":\"beta\"}"), NULL));
    TS_CHECK_OK(ts_session_save(m.s, S("{\"id\":\"C\",\"name\":\"gamma\"}"), NULL));
    for (i = 0; i < 12; i++) /* two chunks; the same bytes 12 times */
        TS_CHECK_OK(ts_session_append_screenshot(m.s, "A", S("{\"activity\":\"x\"}"), img1, sizeof img1,
                                                 "image/png", h1, NULL));
    TS_CHECK_OK(ts_session_append_screenshot(m.s, "B", S("{\"activity\":\"y\"}"), img1, sizeof img1,
                                             "image/png", NULL, NULL));
    TS_CHECK_OK(ts_session_append_screenshot(m.s, "C", S("{\"activity\":\"z\"}"), img2, sizeof img2,
                                             "image/png", h2, NULL));
    /* clean */
    memset(&p, 0, sizeof p);
    TS_CHECK_OK(ts_store_verify(m.s, 0, vprob_fn, &p, &rep));
    TS_CHECK_EQ_INT(p.n, 0);
    TS_CHECK_EQ_INT(rep.sessions, 3);
    TS_CHECK_EQ_INT(rep.attachments, 2);
    TS_CHECK_EQ_INT(rep.problems, 0);
    TS_CHECK_OK(ts_store_verify(m.s, 0, NULL, NULL, NULL));
    /* a reference count that lies (an extra reference no session holds),
       and the index missing a session */
    ref.session_id = "ghost";
    ref.attachment_id = "g1";
    ref.added_at_ms = 1000;
    TS_CHECK_OK(ts_cas_ref_add(m.s->cas, h2, &ref));
    TS_CHECK_OK(ts_store_flush(m.s));
    TS_CHECK_OK(ts_index_remove(m.s->index, "B", 1));
    memset(&p, 0, sizeof p);
    TS_CHECK_EQ_INT(ts_store_verify(m.s, 0, vprob_fn, &p, &rep), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(p.n, 2);
    TS_CHECK(vprob_has(&p, h2, TS_E_CORRUPT));
    TS_CHECK(vprob_has(&p, "session-indexes", TS_E_CORRUPT));
    TS_CHECK_EQ_INT(rep.problems, 2);
    TS_CHECK_EQ_INT(rep.repaired, 0);
    /* repair: counts from the references held, the index rebuilt */
    memset(&p, 0, sizeof p);
    TS_CHECK_OK(ts_store_verify(m.s, 1, vprob_fn, &p, &rep));
    TS_CHECK_EQ_INT(rep.problems, 2);
    TS_CHECK_EQ_INT(rep.repaired, 2);
    TS_CHECK_OK(ts_cas_ref_count(m.s->cas, h2, &count));
    TS_CHECK_EQ_INT(count, 1);
    TS_CHECK_OK(ts_cas_ref_count(m.s->cas, h1, &count));
    TS_CHECK_EQ_INT(count, 13);
    memset(&p, 0, sizeof p);
    TS_CHECK_OK(ts_store_verify(m.s, 0, vprob_fn, &p, &rep));
    TS_CHECK_EQ_INT(p.n, 0);
    /* the index holds C with terms its metadata does not have */
    {
        ts_index_doc d;
        memset(&d, 0, sizeof d);
        d.id = "C";
        d.id_len = 1;
        d.name = "delta";
        d.name_len = 5;
        TS_CHECK_OK(ts_index_put(m.s->index, &d));
    }
    memset(&p, 0, sizeof p);
    TS_CHECK_EQ_INT(ts_store_verify(m.s, 0, vprob_fn, &p, &rep), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(p.n, 1);
    TS_CHECK(vprob_has(&p, "session-indexes", TS_E_CORRUPT));
    TS_CHECK_OK(ts_store_verify(m.s, 1, NULL, NULL, &rep));
    TS_CHECK_EQ_INT(rep.repaired, 1);
    TS_CHECK_OK(ts_store_verify(m.s, 0, NULL, NULL, &rep));
    TS_CHECK_EQ_INT(rep.problems, 0);
    /* the same store after a clean reopen */
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    TS_CHECK_OK(ms_open(&m));
    TS_CHECK_OK(ts_store_verify(m.s, 0, NULL, NULL, &rep));
    TS_CHECK_EQ_INT(rep.sessions, 3);
    /* damage nobody can repair: attachment bytes that no longer hash to
       their name, and a chunk that does not parse */
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    snprintf(path, sizeof path, "attachments-ca/%.2s/%s/data.bin", h2, h2);
    img2[100] ^= 1;
    TS_CHECK_OK(ts_io_mem_put(m.mem, path, img2, sizeof img2));
    TS_CHECK_OK(ts_io_mem_put(m.mem, "sessions-chunked/A/screenshots/chunk-001.json", S("[{\"id\":")));
    TS_CHECK_OK(ms_open(&m));
    memset(&p, 0, sizeof p);
    TS_CHECK_EQ_INT(ts_store_verify(m.s, 1, vprob_fn, &p, &rep), TS_E_CORRUPT);
    TS_CHECK(vprob_has(&p, "A", TS_E_CORRUPT));        /* the broken chunk */
    TS_CHECK(vprob_has(&p, "C", TS_E_CORRUPT));        /* names a damaged object */
    TS_CHECK(vprob_has(&p, h2, TS_E_CORRUPT));         /* the object itself */
    TS_CHECK(rep.problems > rep.repaired);
    TS_CHECK_OK(ts_store_close(m.s));
    m.s = NULL;
    /* read-only: verify yes, repair no */
    {
        ts_store_config c = test_cfg(&m.io);
        c.read_only = 1;
        TS_CHECK_OK(ts_store_open("mem", &c, &m.s));
        TS_CHECK_EQ_INT(ts_store_verify(m.s, 1, NULL, NULL, &rep), TS_E_READONLY);
        TS_CHECK_EQ_INT(ts_store_verify(m.s, 0, NULL, NULL, &rep), TS_E_CORRUPT);
    }
    TS_CHECK_EQ_INT(ts_store_verify(NULL, 0, NULL, NULL, &rep), TS_E_INVALID);
    ms_done(&m);
}

int main(void)
{
    TS_RUN(test_roundtrip_full_session);
    TS_RUN(test_bad_input);
    TS_RUN(test_append_across_chunks);
    TS_RUN(test_extra_records_ignored);
    TS_RUN(test_progressive_load);
    TS_RUN(test_documents_and_meta);
    TS_RUN(test_list_and_manifest);
    TS_RUN(test_read_your_writes);
    TS_RUN(test_lock);
    TS_RUN(test_big_session);
    TS_RUN(test_search);
    TS_RUN(test_search_record_text);
    TS_RUN(test_record_text_option);
    TS_RUN(test_record_text_differential);
    TS_RUN(test_screenshots_and_attachments);
    TS_RUN(test_crash_every_step);
    TS_RUN(test_verify_and_repair);
    return ts_test_report("store");
}
