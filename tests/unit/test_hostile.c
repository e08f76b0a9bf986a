/* Hostile input (issue 11, DESIGN.md sections 5 and 7): names that try to
   leave the store root, files that lie, symbolic links planted inside a
   real (POSIX) store. Each must be refused with TS_E_INVALID (bad argument)
   or TS_E_CORRUPT / TS_E_TOOBIG (bad file), with nothing written outside
   the root and no unbounded work or allocation:
     - session ids (every id-taking call, and "id" inside session JSON):
       "..", ".", "", "a/b", absolute paths, backslashes, NUL (escaped in
       JSON), control bytes, 129 bytes, unicode look-alikes (fullwidth
       letters, one-dot leader, division slash, RTL override, overlong
       UTF-8 dots), percent-encoded dots;
     - attachment hashes (63/65 digits, upper case, traversal, NUL);
     - stream and document names;
     - JSON nesting bombs and oversized input through the API, and planted
       on disk (metadata, chunk, manifest); counts of 2^40 records, negative
       and non-integer counts; a session index file whose header and CRC are
       valid but whose payload claims 2^40 sessions;
     - a POSIX store with symlinks planted where a session folder, a
       session's metadata, an attachment prefix folder, the manifest and the
       lock file would be, all pointing outside: nothing outside may be read
       into the store, written, renamed or removed.
   The in-memory store's file list is checked after each hostile call: only
   layout paths ever appear. */
#define TASKSTORE_MAX_FILE_BYTES ((size_t)1 << 20)
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"
#include "torture_model.h"

#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>
#include <fcntl.h>

/* a string literal and its length */
#define S(lit) lit, (sizeof(lit) - 1)

static const char *const bad_ids[] = {
    "..", ".", "", "a/b", "/etc", "/etc/passwd", "../x", "../../outside", "x/..", "a\\b", "..\\..\\x",
    "C:\\x", "x\n", "x\ty", "\x7f", "a b", "a:b", "a*b", "%2e%2e", "%2e%2e%2fx",
    "\xef\xbd\x81",             /* fullwidth a */
    "a\xe2\x80\xa4" "b",        /* one dot leader */
    "\xe2\x80\xa4\xe2\x80\xa4", /* two one-dot leaders: ".." look-alike */
    "..\xe2\x88\x95" "x",       /* division slash */
    "\xe2\x80\xae" "x",         /* right-to-left override */
    "\xc0\xae\xc0\xae",         /* overlong UTF-8 ".." */
    "\xef\xbc\x8e\xef\xbc\x8e", /* fullwidth full stops */
    "\xc3\xa9t\xc3\xa9",        /* plain non-ASCII */
    NULL                        /* + 129 bytes, added at run time */
};

static char long_id[130];

static const char *bad_id(size_t i)
{
    if (bad_ids[i]) return bad_ids[i];
    memset(long_id, 'a', 129);
    long_id[129] = 0;
    return long_id;
}
#define NBAD_IDS (sizeof bad_ids / sizeof bad_ids[0])

/* ---- the in-memory store's files: only layout paths ---------------------- */

typedef struct walk {
    ts_io io;
    int bad;
    char first_bad[300];
    uint64_t files;
} walk;

static int path_ok(const char *p)
{
    static const char *const top[] = { "sessions-chunked/", "attachments-ca/", "sessions/", "attachments/",
                                       "migration/" };
    static const char *const files[] = { "session-manifest", "session-indexes", "store.dirty" };
    size_t i;
    for (i = 0; i < sizeof files / sizeof files[0]; i++) if (strcmp(p, files[i]) == 0) return 1;
    for (i = 0; i < sizeof top / sizeof top[0]; i++) {
        size_t n = strlen(top[i]);
        if (strncmp(p, top[i], n) == 0) {
            /* every component a plain name: no "..", no empty part */
            const char *c = p + n;
            if (!*c) return 1;
            return strstr(c, "..") == NULL && strstr(c, "//") == NULL && c[0] != '/';
        }
    }
    return 0;
}

typedef struct walk_ctx {
    walk *w;
    char dir[600];
} walk_ctx;

static void walk_dir(walk *w, const char *dir);

static int walk_cb(void *ctx, const char *name, int is_dir)
{
    walk_ctx *c = (walk_ctx *)ctx;
    char p[700];
    snprintf(p, sizeof p, "%s%s%s", c->dir, c->dir[0] ? "/" : "", name);
    if (is_dir) { walk_dir(c->w, p); return 0; }
    c->w->files++;
    if (!path_ok(p) && !c->w->bad) {
        c->w->bad = 1;
        snprintf(c->w->first_bad, sizeof c->w->first_bad, "%s", p);
    }
    return 0;
}

static void walk_dir(walk *w, const char *dir)
{
    walk_ctx c;
    c.w = w;
    snprintf(c.dir, sizeof c.dir, "%s", dir);
    w->io.list_dir_fn(w->io.user, dir, walk_cb, &c);
}

static int layout_only(ts_io_mem *mem, char *why, size_t n)
{
    walk w;
    memset(&w, 0, sizeof w);
    ts_io_mem_vtable(mem, &w.io);
    walk_dir(&w, "");
    if (w.bad) snprintf(why, n, "%s", w.first_bad);
    return !w.bad;
}

/* ---- helpers ---------------------------------------------------------------- */

typedef struct hs {
    ts_io_mem *mem;
    ts_io_fault *fault;
    ts_io io;
    ts_store *s;
    ts_store_config cfg;
    tm_alloc alloc;
} hs;

static void hs_open(hs *h)
{
    ts_io inner;
    memset(h, 0, sizeof *h);
    tm_images_init();
    ts_io_mem_create(NULL, &h->mem);
    ts_io_mem_vtable(h->mem, &inner);
    ts_io_fault_create(&inner, NULL, &h->fault);
    ts_io_fault_vtable(h->fault, &h->io);
    h->cfg = ts_store_config_default();
    h->cfg.io = &h->io;
    h->cfg.now_ms = TM_T0;
    h->cfg.allocator = tm_allocator(&h->alloc);
    TS_CHECK_OK(ts_store_open("hostile", &h->cfg, &h->s));
}

static void hs_reopen(hs *h)
{
    if (h->s) ts_store_close(h->s);
    h->s = NULL;
    TS_CHECK_OK(ts_store_open("hostile", &h->cfg, &h->s));
}

static void hs_close(hs *h)
{
    if (h->s) TS_CHECK_OK(ts_store_close(h->s));
    h->s = NULL;
    TS_CHECK_EQ_INT(h->alloc.live_bytes, 0);
    TS_CHECK_EQ_INT(h->alloc.bad_sizes, 0);
    ts_io_fault_destroy(h->fault);
    ts_io_mem_destroy(h->mem);
}

static void put(hs *h, const char *path, const char *text)
{
    TS_CHECK_OK(ts_io_mem_put(h->mem, path, text, strlen(text)));
}

static int is_refusal(ts_result r) { return r == TS_E_INVALID || r == TS_E_CORRUPT || r == TS_E_TOOBIG; }

#define CHECK_REFUSED(call, what)                                                                 \
    do {                                                                                          \
        ts_result r_ = (call);                                                                    \
        if (r_ != TS_E_INVALID) {                                                                 \
            TS_CHECK(r_ == TS_E_INVALID);                                                         \
            printf("    %s with id \"%s\": %d (%s)\n", what, id, (int)r_, ts_result_str(r_));    \
        }                                                                                         \
    } while (0)

/* ---- ids --------------------------------------------------------------------------- */

TS_TEST(test_hostile_session_ids)
{
    hs h;
    size_t i;
    char why[300];
    hs_open(&h);
    TS_CHECK_OK(ts_session_save(h.s, S("{\"id\":\"ok\",\"name\":\"n\"}"), NULL));
    for (i = 0; i < NBAD_IDS; i++) {
        const char *id = bad_id(i);
        ts_blob b;
        uint64_t n = 0;
        int x = 0;
        char hex[65];
        CHECK_REFUSED(ts_session_save_meta(h.s, id, S("{\"name\":\"x\"}")), "save_meta");
        CHECK_REFUSED(ts_session_load_meta(h.s, id, &b), "load_meta");
        CHECK_REFUSED(ts_session_exists(h.s, id, &x), "exists");
        CHECK_REFUSED(ts_session_is_chunked(h.s, id, &x), "is_chunked");
        CHECK_REFUSED(ts_session_load(h.s, id, &b), "load");
        CHECK_REFUSED(ts_session_append(h.s, id, "screenshots", S("{\"a\":1}"), NULL), "append");
        CHECK_REFUSED(ts_session_append_screenshot(h.s, id, "{}", 2, tm_img[1], tm_img_len[1], NULL, hex, NULL),
                      "append_screenshot");
        CHECK_REFUSED(ts_session_replace_stream(h.s, id, "screenshots", S("[]")), "replace_stream");
        CHECK_REFUSED(ts_session_save_doc(h.s, id, "summary", S("1")), "save_doc");
        CHECK_REFUSED(ts_session_load_doc(h.s, id, "summary", &b), "load_doc");
        CHECK_REFUSED(ts_session_delete(h.s, id), "delete");
        CHECK_REFUSED(ts_session_stream_count(h.s, id, "screenshots", &n), "stream_count");
        CHECK_REFUSED(ts_session_load_range(h.s, id, "screenshots", 0, 5, &b), "load_range");
        CHECK_REFUSED(ts_session_load_chunk(h.s, id, S("screenshots"), &b), "load_chunk");
        CHECK_REFUSED(ts_migrate_session(h.s, id, NULL, NULL), "migrate_session");
        {
            ts_result r = ts_compress_session(h.s, id, NULL);
            TS_CHECK(r == TS_E_INVALID || r == TS_E_NOTIMPL);
            if (!(r == TS_E_INVALID || r == TS_E_NOTIMPL)) printf("    compress_session with id \"%s\": %d\n", id, (int)r);
        }
    }
    TS_CHECK_OK(ts_store_flush(h.s));
    TS_CHECK(layout_only(h.mem, why, sizeof why));
    if (!layout_only(h.mem, why, sizeof why)) printf("    a file outside the layout: %s\n", why);
    hs_close(&h);
}

TS_TEST(test_hostile_ids_inside_json)
{
    static const char *const objs[] = {
        "{\"id\":\"..\"}", "{\"id\":\".\"}", "{\"id\":\"\"}", "{\"id\":\"a/b\"}", "{\"id\":\"/etc\"}",
        "{\"id\":\"a\\\\b\"}", "{\"id\":\"a\\u0000b\"}", "{\"id\":\"\\u002e\\u002e\"}",
        "{\"id\":\"\\u002e\\u002e\\u002fx\"}", "{\"id\":\"a\\nb\"}", "{\"id\":\"\\uff41\"}",
        "{\"id\":\"\\ud800\"}", "{\"id\":123}", "{\"id\":null}", "{\"id\":[\"x\"]}", "{\"name\":\"no id\"}",
        "{\"id\":\"ok\",\"id\":\"..\"}", "[]", "\"x\"", "{\"id\":\"x\"", "{\"id\":\"x\"}}" };
    hs h;
    size_t i;
    char why[300];
    hs_open(&h);
    for (i = 0; i < sizeof objs / sizeof objs[0]; i++) {
        ts_result r = ts_session_save(h.s, objs[i], strlen(objs[i]), NULL);
        if (r == TS_OK) {
            /* a duplicate key: the store may take either value, but only a valid one */
            int ex = 0;
            TS_CHECK(strstr(objs[i], "\"ok\"") != NULL);
            TS_CHECK_OK(ts_session_exists(h.s, "ok", &ex));
        } else {
            TS_CHECK_EQ_INT(r, TS_E_INVALID);
            if (r != TS_E_INVALID) printf("    save of %s: %d\n", objs[i], (int)r);
        }
    }
    /* save_meta: an "id" member that disagrees with the argument */
    TS_CHECK_EQ_INT(ts_session_save_meta(h.s, "ok2", S("{\"id\":\"..\"}")), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_session_save_meta(h.s, "ok2", S("{\"id\":\"other\"}")), TS_E_INVALID);
    TS_CHECK_OK(ts_store_flush(h.s));
    TS_CHECK(layout_only(h.mem, why, sizeof why));
    hs_close(&h);
}

TS_TEST(test_hostile_hashes_and_names)
{
    static const char *const hashes[] = {
        "../../../../etc/passwd", "", "0", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
        "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        "../b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "e3/b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85" };
    static const char *const streams[] = { "", "../x", "a/b", "a.b", "a:b", "screenshots/..", "x\n",
                                           "summary", "metadata", "chunked", "storageVersion",
                                           "0123456789012345678901234567890123456789012345678901234567890123" };
    static const char *const docs[] = { "", "../summary", "summary/../x", "nope", "SUMMARY", "summary.json",
                                        "metadata" };
    hs h;
    size_t i;
    char why[300];
    hs_open(&h);
    TS_CHECK_OK(ts_session_save(h.s, S("{\"id\":\"ok\"}"), NULL));
    for (i = 0; i < sizeof hashes / sizeof hashes[0]; i++) {
        ts_blob b;
        char mime[128];
        TS_CHECK_EQ_INT(ts_attach_get(h.s, hashes[i], &b), TS_E_INVALID);
        {
            ts_result r = ts_compress_attach_load(h.s, hashes[i], &b, mime);
            TS_CHECK(r == TS_E_INVALID || r == TS_E_NOTIMPL);
        }
    }
    for (i = 0; i < sizeof streams / sizeof streams[0]; i++) {
        ts_blob b;
        uint64_t n = 0;
        ts_result r = ts_session_append(h.s, "ok", streams[i], S("{\"a\":1}"), NULL);
        TS_CHECK_EQ_INT(r, TS_E_INVALID);
        if (r != TS_E_INVALID) printf("    append to stream \"%s\": %d\n", streams[i], (int)r);
        TS_CHECK_EQ_INT(ts_session_replace_stream(h.s, "ok", streams[i], S("[]")), TS_E_INVALID);
        r = ts_session_stream_count(h.s, "ok", streams[i], &n);
        TS_CHECK(r == TS_E_INVALID || (r == TS_OK && n == 0));
        r = ts_session_load_range(h.s, "ok", streams[i], 0, 3, &b);
        TS_CHECK(r == TS_E_INVALID || r == TS_OK);
        ts_blob_free(&b);
        TS_CHECK_EQ_INT(ts_store_add_stream(h.s, streams[i], 5), TS_E_INVALID);
    }
    for (i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        ts_blob b;
        TS_CHECK_EQ_INT(ts_session_save_doc(h.s, "ok", docs[i], S("1")), TS_E_INVALID);
        TS_CHECK_EQ_INT(ts_session_load_doc(h.s, "ok", docs[i], &b), TS_E_INVALID);
    }
    /* a record naming a hostile attachmentHash is kept verbatim and is never a path */
    TS_CHECK_OK(ts_session_append(h.s, "ok", "screenshots", S("{\"attachmentHash\":\"../../../../tmp/x\"}"), NULL));
    TS_CHECK_OK(ts_session_append(h.s, "ok", "screenshots",
                                  S("{\"attachmentHash\":\"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"}"),
                                  NULL));
    TS_CHECK_OK(ts_store_gc(h.s, TM_T0 + 7200000, NULL));
    TS_CHECK_OK(ts_store_flush(h.s));
    TS_CHECK(layout_only(h.mem, why, sizeof why));
    hs_close(&h);
}

/* ---- JSON: bombs and oversized input ------------------------------------------- */

static char *nested(size_t depth, const char *open, const char *close, const char *pre, const char *post)
{
    size_t i, o = 0, n = strlen(pre) + strlen(post) + depth * (strlen(open) + strlen(close)) + 1;
    char *s = (char *)malloc(n);
    if (!s) abort();
    o += (size_t)sprintf(s, "%s", pre);
    for (i = 0; i < depth; i++) { memcpy(s + o, open, strlen(open)); o += strlen(open); }
    for (i = 0; i < depth; i++) { memcpy(s + o, close, strlen(close)); o += strlen(close); }
    o += (size_t)sprintf(s + o, "%s", post);
    s[o] = 0;
    return s;
}

TS_TEST(test_hostile_json_through_the_api)
{
    hs h;
    char *js;
    ts_result r;
    hs_open(&h);
    TS_CHECK_OK(ts_session_save(h.s, S("{\"id\":\"ok\"}"), NULL));
    /* nesting bombs: 100,000 levels (a recursive parser would overflow the stack) */
    js = nested(100000, "[", "]", "{\"id\":\"deep\",\"x\":", "}");
    r = ts_session_save(h.s, js, strlen(js), NULL);
    TS_CHECK(is_refusal(r));
    free(js);
    js = nested(100000, "{\"a\":", "}", "{\"b\":", "}");
    TS_CHECK(is_refusal(ts_session_append(h.s, "ok", "screenshots", js, strlen(js), NULL)));
    TS_CHECK(is_refusal(ts_session_save_doc(h.s, "ok", "summary", js, strlen(js))));
    TS_CHECK(is_refusal(ts_session_save_meta(h.s, "ok", js, strlen(js))));
    free(js);
    js = nested(100000, "[", "]", "", "");
    TS_CHECK(is_refusal(ts_session_replace_stream(h.s, "ok", "screenshots", js, strlen(js))));
    free(js);
    /* truncated, trailing garbage, bad UTF-8, NUL inside */
    TS_CHECK(is_refusal(ts_session_append(h.s, "ok", "screenshots", S("{\"a\":"), NULL)));
    TS_CHECK(is_refusal(ts_session_append(h.s, "ok", "screenshots", S("{\"a\":1}x"), NULL)));
    TS_CHECK(is_refusal(ts_session_append(h.s, "ok", "screenshots", S("{\"a\":\"\xff\"}"), NULL)));
    TS_CHECK(is_refusal(ts_session_append(h.s, "ok", "screenshots", S("{\"a\":1}\0{}"), NULL)));
    TS_CHECK(is_refusal(ts_session_append(h.s, "ok", "screenshots", S("[1]"), NULL)));
    {
        uint64_t n = 1;
        TS_CHECK_OK(ts_session_stream_count(h.s, "ok", "screenshots", &n));
        TS_CHECK_EQ_INT(n, 0);
    }
    TS_CHECK(h.alloc.peak_bytes < (int64_t)64 << 20);
    hs_close(&h);
}

/* Planted files that lie. Each session gets one bad file; every read of it
   must be refused (CORRUPT / TOOBIG / VERSION), never crash or allocate
   without bound, and the other sessions stay readable. */
TS_TEST(test_hostile_files_on_disk)
{
    static const char *const metas[] = {
        "{\"storageVersion\":2,\"chunked\":{\"streams\":{\"screenshots\":{\"count\":-1,\"perChunk\":10,\"gen\":0}}}}",
        "{\"storageVersion\":2,\"chunked\":{\"streams\":{\"screenshots\":{\"count\":1e30,\"perChunk\":10,\"gen\":0}}}}",
        "{\"storageVersion\":2,\"chunked\":{\"streams\":{\"screenshots\":{\"count\":99999999999999999999999,\"perChunk\":10}}}}",
        "{\"storageVersion\":2,\"chunked\":{\"streams\":{\"screenshots\":{\"count\":5,\"perChunk\":-3}}}}",
        "{\"storageVersion\":2,\"chunked\":{\"streams\":{\"screenshots\":{\"count\":\"5\",\"perChunk\":10}}}}",
        "{\"storageVersion\":2,\"chunked\":{\"streams\":{\"../x\":{\"count\":1,\"perChunk\":10}}}}",
        "{\"storageVersion\":2,\"chunked\":{\"streams\":{\"screenshots\":{\"count\":3,\"perChunk\":10}}}}",
        "{\"storageVersion\":2,\"chunked\":{\"streams\":{\"screenshots\":{\"count\":3,\"perChunk\":10},\"screenshots\":{\"count\":1}}}}",
        "{\"storageVersion\":3}", "{\"storageVersion\":2,\"chunked\":[]}", "{\"chunked\":{}}", "[]", "",
        "{\"storageVersion\":2,\"chunked\":{\"documents\":[\"summary\"]}}",
        "{\"storageVersion\":2,\"chunked\":{\"streams\":{\"screenshots\":{\"count\":2,\"perChunk\":10,\"gen\":0}}}}" };
    hs h;
    size_t i;
    char path[200], why[300];
    ts_result r;
    hs_open(&h);
    TS_CHECK_OK(ts_session_save(h.s, S("{\"id\":\"good\",\"name\":\"alpha\",\"screenshots\":[{\"a\":1}]}"), NULL));
    hs_reopen(&h);
    for (i = 0; i < sizeof metas / sizeof metas[0]; i++) {
        snprintf(path, sizeof path, "sessions-chunked/h%u/metadata.json", (unsigned)i);
        put(&h, path, metas[i]);
    }
    /* the last one counts 2 records but its chunk is a torn prefix / a nesting bomb */
    put(&h, "sessions-chunked/h14/screenshots/chunk-000.json", "[{\"a\":1},{\"a\"");
    put(&h, "sessions-chunked/h6/screenshots/chunk-000.json", "[{\"a\":1},{\"a\":2}]"); /* fewer than counted */
    {
        char *bomb = nested(200000, "[", "]", "", "");
        TS_CHECK_OK(ts_io_mem_put(h.mem, "sessions-chunked/h13/summary.json", bomb, strlen(bomb)));
        free(bomb);
    }
    {
        /* a metadata file larger than TASKSTORE_MAX_FILE_BYTES (1 MiB here) */
        size_t n = ((size_t)2 << 20);
        char *big = (char *)malloc(n + 1);
        memset(big, ' ', n);
        memcpy(big, S("{\"storageVersion\":2,\"x\":\""));
        big[n - 2] = '"';
        big[n - 1] = '}';
        big[n] = 0;
        TS_CHECK_OK(ts_io_mem_put(h.mem, "sessions-chunked/huge/metadata.json", big, n));
        free(big);
    }
    hs_reopen(&h); /* a clean close: the manifest is trusted, but the files are read lazily */
    for (i = 0; i <= 15; i++) {
        char id[16];
        ts_blob b;
        uint64_t removed = 0;
        if (i == 15) snprintf(id, sizeof id, "huge");
        else snprintf(id, sizeof id, "h%u", (unsigned)i);
        r = ts_session_load(h.s, id, &b);
        TS_CHECK(is_refusal(r) || r == TS_E_VERSION || r == TS_E_NOTFOUND);
        if (!(is_refusal(r) || r == TS_E_VERSION || r == TS_E_NOTFOUND))
            printf("    load of planted %s: %d (%s)\n", id, (int)r, ts_result_str(r));
        ts_blob_free(&b);
        (void)removed;
    }
    /* a rescan lists the good one; the lying ones are skipped, never fatal */
    ts_io_mem_put(h.mem, "store.dirty", S("x"));
    ts_store_close(h.s);
    h.s = NULL;
    ts_io_mem_put(h.mem, "store.dirty", S("x"));
    TS_CHECK_OK(ts_store_open("hostile", &h.cfg, &h.s));
    {
        ts_blob b;
        ts_query q;
        ts_index_hits hits;
        r = ts_session_list(h.s, &b);
        TS_CHECK_OK(r);
        TS_CHECK(b.data && strstr((const char *)b.data, "\"good\"") != NULL);
        ts_blob_free(&b);
        memset(&q, 0, sizeof q);
        q.text = "alpha";
        TS_CHECK_OK(ts_store_search(h.s, &q, &hits));
        TS_CHECK(hits.count == 1 && strcmp(hits.ids[0], "good") == 0);
        ts_index_hits_free(&hits);
    }
    TS_CHECK(h.alloc.peak_bytes < (int64_t)64 << 20);
    TS_CHECK(layout_only(h.mem, why, sizeof why));
    hs_close(&h);
}

/* A metadata file counting 2^40 records of one per chunk: deleting that
   session must do bounded work (it is allowed to refuse, or to leave files
   to GC), not queue 2^40 removals. */
TS_TEST(test_hostile_huge_count_delete_is_bounded)
{
    hs h;
    ts_fault_plan p;
    ts_result r;
    uint64_t before;
    hs_open(&h);
    put(&h, "sessions-chunked/big/metadata.json",
        "{\"id\":\"big\",\"storageVersion\":2,\"chunked\":{\"streams\":{\"screenshots\":"
        "{\"count\":1099511627776,\"perChunk\":1,\"gen\":0}},\"documents\":[]}}");
    put(&h, "sessions-chunked/big/screenshots/chunk-000.json", "[{\"a\":1}]");
    hs_reopen(&h);
    /* a safety net for the test itself: I/O stops working after 50,000 more
       operations, which ends a runaway loop with an error */
    before = ts_io_fault_ops(h.fault);
    memset(&p, 0, sizeof p);
    p.fail_at = before + 50000;
    p.fail_count = (uint64_t)1 << 40;
    ts_io_fault_set(h.fault, &p);
    r = ts_session_delete(h.s, "big");
    if (r == TS_OK) r = ts_store_flush(h.s);
    if (ts_io_fault_ops(h.fault) - before >= 10000) {
        /* the queue keeps the writes that failed under the safety net (it
           never retries them): drop the store without its close check */
        ts_io_fault_reset(h.fault);
        ts_store_close(h.s);
        h.s = NULL;
    }
    TS_CHECK(ts_io_fault_ops(h.fault) - before < 10000);
    if (ts_io_fault_ops(h.fault) - before >= 10000)
        printf("    deleting a session whose metadata counts 2^40 records ran %llu I/O operations (%s) "
               "before the test's safety net stopped it\n", (unsigned long long)(ts_io_fault_ops(h.fault) - before),
               ts_result_str(r));
    ts_io_fault_reset(h.fault);
    hs_close(&h);
}

/* A session index file with a valid header and CRC whose payload claims
   2^40 sessions: refused (the search falls back to a rebuild and is right),
   without allocating for the claimed count. */
TS_TEST(test_hostile_index_file_claims_huge_counts)
{
    hs h;
    ts_index *ix = NULL;
    void *data = NULL;
    size_t len = 0;
    ts_index_doc d;
    ts_query q;
    ts_index_hits hits;
    unsigned char buf[256];
    size_t n;
    hs_open(&h);
    TS_CHECK_OK(ts_session_save(h.s, S("{\"id\":\"real\",\"name\":\"alpha\"}"), NULL));
    hs_reopen(&h); /* clean: session-indexes is trusted from now on */
    /* forge: a real index of one session ("fake"), then its session count
       patched to 2^40, CRC recomputed */
    TS_CHECK_OK(ts_index_create(NULL, &ix));
    memset(&d, 0, sizeof d);
    d.id = "fake"; d.id_len = 4; d.name = "alpha"; d.name_len = 5;
    TS_CHECK_OK(ts_index_put(ix, &d));
    TS_CHECK_OK(ts_index_save(ix, &data, &len));
    TS_CHECK(len < sizeof buf - 8);
    if (len < sizeof buf - 8) {
        ts__ix_crc crc;
        size_t pos = 24, o = 0;
        unsigned info = ((unsigned char *)data)[pos];
        memcpy(buf, data, 25);
        o = 25;
        pos = 25;
        if (info & 1) { while (((unsigned char *)data)[pos] & 0x80) buf[o++] = ((unsigned char *)data)[pos++]; buf[o++] = ((unsigned char *)data)[pos++]; }
        if (info & 2) { while (((unsigned char *)data)[pos] & 0x80) buf[o++] = ((unsigned char *)data)[pos++]; buf[o++] = ((unsigned char *)data)[pos++]; }
        /* changes */
        while (((unsigned char *)data)[pos] & 0x80) buf[o++] = ((unsigned char *)data)[pos++];
        buf[o++] = ((unsigned char *)data)[pos++];
        /* the session count: 2^40 as a varint instead of 1 */
        pos++;
        buf[o++] = 0x80; buf[o++] = 0x80; buf[o++] = 0x80; buf[o++] = 0x80; buf[o++] = 0x80; buf[o++] = 0x20;
        memcpy(buf + o, (unsigned char *)data + pos, len - pos);
        n = o + (len - pos);
        ts__ix_put_u32le(buf + 12, (uint32_t)(n - 24));
        ts__ix_put_u32le(buf + 16, 0);
        ts__ix_crc_init(&crc);
        ts__ix_put_u32le(buf + 20, ts__ix_crc_update(&crc, ts__ix_crc_update(&crc, 0, buf, 20), buf + 24, n - 24));
        {
            ts_index *probe = NULL;
            TS_CHECK_OK(ts_index_create(NULL, &probe));
            TS_CHECK(is_refusal(ts_index_load(probe, buf, n)));
            ts_index_destroy(probe);
        }
        TS_CHECK_OK(ts_io_mem_put(h.mem, "session-indexes", buf, n));
    }
    ts_index_free_buffer(ix, data, len);
    ts_index_destroy(ix);
    /* the store reads the forged file lazily, at the first search */
    memset(&q, 0, sizeof q);
    q.text = "alpha";
    TS_CHECK_OK(ts_store_search(h.s, &q, &hits));
    TS_CHECK(hits.count == 1 && hits.count > 0 && strcmp(hits.ids[0], "real") == 0);
    ts_index_hits_free(&hits);
    TS_CHECK(h.alloc.peak_bytes < (int64_t)64 << 20);
    /* a forged manifest, trusted after a clean close: huge, nested, lying */
    ts_store_close(h.s);
    h.s = NULL;
    {
        char *bomb = nested(100000, "[", "]", "", "");
        TS_CHECK_OK(ts_io_mem_put(h.mem, "session-manifest", bomb, strlen(bomb)));
        free(bomb);
    }
    TS_CHECK_OK(ts_store_open("hostile", &h.cfg, &h.s));
    {
        ts_blob b;
        uint64_t cnt = 0;
        TS_CHECK_OK(ts_session_list(h.s, &b));
        TS_CHECK(b.data && strstr((const char *)b.data, "\"real\"") != NULL);
        ts_blob_free(&b);
        TS_CHECK_OK(ts_session_count(h.s, &cnt));
        TS_CHECK_EQ_INT(cnt, 1);
    }
    ts_store_close(h.s);
    h.s = NULL;
    put(&h, "session-manifest", "[{\"id\":\"../../etc\"},{\"id\":\"ghost\",\"name\":\"alpha\"}]");
    TS_CHECK_OK(ts_store_open("hostile", &h.cfg, &h.s));
    {
        ts_blob b;
        TS_CHECK_OK(ts_session_list(h.s, &b));
        TS_CHECK(b.data && strstr((const char *)b.data, "../") == NULL);
        ts_blob_free(&b);
    }
    hs_close(&h);
}

/* ---- a real directory with symbolic links planted inside -------------------------- */

typedef struct snap {
    char names[64][300];
    long sizes[64];
    unsigned long sums[64];
    int n;
} snap;

static void snap_dir(snap *s, const char *dir, const char *rel)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d)) != NULL && s->n < 64) {
        char p[600], r[400];
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        snprintf(r, sizeof r, "%s/%s", rel, e->d_name);
        if (lstat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) { snap_dir(s, p, r); continue; }
        snprintf(s->names[s->n], sizeof s->names[s->n], "%s", r);
        s->sizes[s->n] = (long)st.st_size;
        {
            FILE *f = fopen(p, "rb");
            unsigned long h = 5381;
            int c;
            if (f) { while ((c = fgetc(f)) != EOF) h = h * 33 + (unsigned long)c; fclose(f); }
            s->sums[s->n] = h;
        }
        s->n++;
    }
    closedir(d);
}

static int snap_same(const snap *a, const snap *b)
{
    int i, j;
    if (a->n != b->n) return 0;
    for (i = 0; i < a->n; i++) {
        for (j = 0; j < b->n; j++)
            if (strcmp(a->names[i], b->names[j]) == 0 && a->sizes[i] == b->sizes[j] && a->sums[i] == b->sums[j]) break;
        if (j == b->n) return 0;
    }
    return 1;
}

static void write_file(const char *p, const char *text)
{
    FILE *f = fopen(p, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

TS_TEST(test_hostile_symlinks_in_a_posix_store)
{
    const char *tmp = getenv("TS_TEST_TMP");
    char base[400], root[500], out[500], p[700], q[700], hex[65];
    snap before, after;
    ts_store_config cfg = ts_store_config_default();
    ts_store *s = NULL;
    ts_result r;
    ts_blob b;
    unsigned char img[32];
    int k;
    tm_alloc alloc;
    if (!tmp) { printf("    (TS_TEST_TMP not set: POSIX part skipped)\n"); return; }
    snprintf(base, sizeof base, "%s/hostile-%d", tmp, (int)getpid());
    snprintf(root, sizeof root, "%s/root", base);
    snprintf(out, sizeof out, "%s/outside", base);
    mkdir(base, 0700);
    mkdir(root, 0700);
    mkdir(out, 0700);
    snprintf(p, sizeof p, "%s/secret", out);
    write_file(p, "{\"id\":\"secret\",\"storageVersion\":2,\"chunked\":{\"streams\":{}}}");
    snprintf(p, sizeof p, "%s/manifest", out);
    write_file(p, "[{\"id\":\"planted\",\"name\":\"alpha\",\"storageVersion\":2,\"chunked\":{\"streams\":{}}}]");
    /* a first, clean use of the store (so the manifest would be trusted) */
    memset(&alloc, 0, sizeof alloc);
    cfg.now_ms = TM_T0;
    cfg.gc_grace_ms = 1;
    cfg.allocator = tm_allocator(&alloc);
    TS_CHECK_OK(ts_store_open(root, &cfg, &s));
    TS_CHECK_OK(ts_session_save(s, S("{\"id\":\"s1\",\"name\":\"alpha\"}"), NULL));
    TS_CHECK_OK(ts_store_close(s));
    s = NULL;
    /* the plants */
    snprintf(p, sizeof p, "%s/sessions-chunked/evil", root);
    TS_CHECK(symlink(out, p) == 0);                          /* a session folder -> outside */
    snprintf(p, sizeof p, "%s/sessions-chunked/s1/metadata.json", root);
    unlink(p);
    snprintf(q, sizeof q, "%s/secret", out);
    TS_CHECK(symlink(q, p) == 0);                            /* a session's metadata -> outside */
    snprintf(p, sizeof p, "%s/session-manifest", root);
    unlink(p);
    snprintf(q, sizeof q, "%s/manifest", out);
    TS_CHECK(symlink(q, p) == 0);                            /* the manifest -> outside */
    /* an image whose hash starts with "ab": its prefix folder -> outside */
    for (k = 0; k < 100000; k++) {
        unsigned char dg[32];
        memset(img, 0, sizeof img);
        memcpy(img, &k, sizeof k);
        ts_sha256_buffer(img, sizeof img, dg);
        if (dg[0] == 0xab) break;
    }
    snprintf(p, sizeof p, "%s/attachments-ca", root);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/attachments-ca/ab", root);
    TS_CHECK(symlink(out, p) == 0);
    memset(&before, 0, sizeof before);
    snap_dir(&before, out, "");
    /* use the store every way that could follow a link */
    r = ts_store_open(root, &cfg, &s);
    TS_CHECK_OK(r);
    if (r == TS_OK) {
        int ex = 0;
        ts_query qq;
        ts_index_hits hits;
        uint64_t removed = 0;
        TS_CHECK_OK(ts_session_list(s, &b));
        TS_CHECK(b.data && strstr((const char *)b.data, "planted") == NULL && strstr((const char *)b.data, "secret") == NULL);
        ts_blob_free(&b);
        r = ts_session_load(s, "s1", &b);
        TS_CHECK(r != TS_OK || (b.data && strstr((const char *)b.data, "secret") == NULL));
        ts_blob_free(&b);
        r = ts_session_exists(s, "evil", &ex);
        TS_CHECK(r == TS_E_INVALID || r == TS_E_NOTFOUND || (r == TS_OK && !ex));
        memset(&qq, 0, sizeof qq);
        qq.text = "alpha";
        r = ts_store_search(s, &qq, &hits);
        TS_CHECK(r != TS_OK || hits.total <= 1);
        ts_index_hits_free(&hits);
        /* writes aimed through the links */
        ts_session_save(s, S("{\"id\":\"evil\",\"name\":\"x\",\"screenshots\":[{\"a\":1}],\"summary\":1}"), NULL);
        ts_session_save(s, S("{\"id\":\"s1\",\"name\":\"rewrite\"}"), NULL);
        ts_session_save(s, S("{\"id\":\"s2\"}"), NULL);
        ts_session_append_screenshot(s, "s2", "{\"id\":\"r\"}", 10, img, sizeof img, "image/png", hex, NULL);
        ts_store_flush(s);
        ts_session_delete(s, "evil");
        ts_session_delete(s, "s1");
        ts_store_flush(s);
        ts_store_gc(s, TM_T0 + 7200000, &removed);
        ts_store_idle(s, TM_T0 + 7300000, TM_BIG_BUDGET);
        ts_store_close(s);
        s = NULL;
    }
    TS_CHECK_EQ_INT(alloc.live_bytes, 0);
    memset(&after, 0, sizeof after);
    snap_dir(&after, out, "");
    TS_CHECK(snap_same(&before, &after));
    if (!snap_same(&before, &after)) {
        int i;
        printf("    the directory outside the store changed:\n");
        for (i = 0; i < after.n; i++) printf("      now %s (%ld bytes)\n", after.names[i], after.sizes[i]);
    }
    /* the links themselves are still links (nothing was written through or over them) */
    {
        struct stat st;
        snprintf(p, sizeof p, "%s/sessions-chunked/evil", root);
        TS_CHECK(lstat(p, &st) == 0 && S_ISLNK(st.st_mode));
        snprintf(p, sizeof p, "%s/attachments-ca/ab", root);
        TS_CHECK(lstat(p, &st) == 0 && S_ISLNK(st.st_mode));
    }
}

/* BUG R11 (12_store): append and replace_stream accept the stream names
   ts_store_add_stream refuses ("chunked", "storageVersion", "metadata"). A
   stream named "chunked" is then lost by save(load(x)), which the API
   promises stores x again (the key is reserved in metadata). */
TS_TEST(bug_reserved_stream_name_lost_on_roundtrip)
{
    hs h;
    ts_blob b;
    uint64_t n = 0;
    ts_result r;
    hs_open(&h);
    TS_CHECK_OK(ts_session_save(h.s, S("{\"id\":\"x\"}"), NULL));
    r = ts_session_append(h.s, "x", "chunked", S("{\"a\":1}"), NULL);
    if (r == TS_OK) {
        TS_CHECK_OK(ts_session_load(h.s, "x", &b));
        TS_CHECK_OK(ts_session_save(h.s, (const char *)b.data, b.len, NULL));
        ts_blob_free(&b);
        TS_CHECK_OK(ts_session_stream_count(h.s, "x", "chunked", &n));
        TS_CHECK_EQ_INT(n, 1);
        if (n != 1) printf("    the record of stream \"chunked\" is gone after save(load(x))\n");
    } else {
        TS_CHECK_EQ_INT(r, TS_E_INVALID);
    }
    hs_close(&h);
}

int main(void)
{
    TS_RUN(bug_reserved_stream_name_lost_on_roundtrip);
    TS_RUN(test_hostile_session_ids);
    TS_RUN(test_hostile_ids_inside_json);
    TS_RUN(test_hostile_hashes_and_names);
    TS_RUN(test_hostile_json_through_the_api);
    TS_RUN(test_hostile_files_on_disk);
    TS_RUN(test_hostile_huge_count_delete_is_bounded);
    TS_RUN(test_hostile_index_file_claims_huge_counts);
    TS_RUN(test_hostile_symlinks_in_a_posix_store);
    return ts_test_report("hostile");
}
