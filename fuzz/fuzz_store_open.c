/* fuzz_store_open: a store whose files are arbitrary bytes.

   The input is split on 0x01 bytes into up to 11 pieces that become the
   files of an in-memory store (a session "f" with metadata, chunks of three
   streams and a document, a second session "g", the session manifest, the
   index file, one attachment's metadata). The first byte's low bit says
   whether the last close was clean (no store.dirty: the manifest and the
   index are trusted). Then the store is opened and every load path runs,
   followed by a few writes, a GC, a flush and close.
   Oracles: no crash, leak or UB; open always succeeds; every call returns a
   documented code; whatever a load returns as OK is valid JSON. */
#define TASKSTORE_MAX_JSON_NODES ((size_t)1 << 14)
#define TASKSTORE_MAX_ATTACHMENT_BYTES ((uint64_t)1 << 20)
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>

#define EMPTY_HASH "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const char *const fuzz_paths[] = {
    "sessions-chunked/f/metadata.json",
    "sessions-chunked/f/screenshots/chunk-000.json",
    "sessions-chunked/f/screenshots/chunk-001.json",
    "sessions-chunked/f/summary.json",
    "session-manifest",
    "session-indexes",
    "sessions-chunked/g/metadata.json",
    "sessions-chunked/f/audioSegments/chunk-000.json",
    "attachments-ca/e3/" EMPTY_HASH "/metadata.json",
    "sessions-chunked/f/videoChunks/chunk-000.json",
    "sessions-chunked/f/transcription.json"
};
#define FUZZ_NPATHS (sizeof fuzz_paths / sizeof fuzz_paths[0])

static void check(int cond)
{
    if (!cond) abort();
}

static int allowed(ts_result r)
{
    return r == TS_OK || r == TS_DONE || r == TS_E_CORRUPT || r == TS_E_NOTFOUND ||
           r == TS_E_TOOBIG || r == TS_E_VERSION || r == TS_E_INVALID || r == TS_E_RANGE ||
           r == TS_E_CANCELLED || r == TS_E_STATE;
}

/* A load that returned OK must hand back valid JSON. */
static void check_json(ts_result r, ts_blob *b)
{
    check(allowed(r));
    if (r == TS_OK) check(b->data != NULL && ts__js_valid((const char *)b->data, b->len));
    else check(b->data == NULL);
    ts_blob_free(b);
}

static int on_part(void *user, const ts_session_part *p)
{
    int *n = (int *)user;
    check(p->json != NULL || p->len == 0);
    check(ts__js_valid(p->json, p->len));
    return ++*n > 50;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_store *s = NULL;
    ts_store_config cfg = ts_store_config_default();
    ts_blob b;
    size_t i, start = 1, piece = 0;
    uint64_t n = 0, removed = 0;
    int ex = 0, parts = 0, clean;
    ts_result r;
    if (size == 0 || size > (1u << 20)) return 0;
    clean = data[0] & 1;
    if (ts_io_mem_create(NULL, &mem) != TS_OK) return 0;
    for (i = 1; i <= size && piece < FUZZ_NPATHS; i++) {
        if (i == size || data[i] == 0x01) {
            if (i > start || piece < 2)
                ts_io_mem_put(mem, fuzz_paths[piece], data + start, i - start);
            piece++;
            start = i + 1;
        }
    }
    if (!clean) ts_io_mem_put(mem, "store.dirty", "x", 1);
    ts_io_mem_vtable(mem, &io);
    cfg.io = &io;
    cfg.now_ms = 1000;
    cfg.cache_max_bytes = 1 << 20;
    cfg.queue_capacity = 64;
    r = ts_store_open("fuzz", &cfg, &s);
    check(r == TS_OK); /* the store always opens */
    if (r != TS_OK) { ts_io_mem_destroy(mem); return 0; }

    memset(&b, 0, sizeof b);
    check_json(ts_session_list(s, &b), &b);
    r = ts_session_count(s, &n);
    check(allowed(r));
    check_json(ts_session_load_meta(s, "f", &b), &b);
    check_json(ts_session_load_meta(s, "g", &b), &b);
    check_json(ts_session_load(s, "f", &b), &b);
    check_json(ts_session_load(s, "g", &b), &b);
    r = ts_session_load_parts(s, "f", on_part, &parts);
    check(allowed(r));
    check(allowed(ts_session_exists(s, "f", &ex)));
    check(allowed(ts_session_is_chunked(s, "g", &ex)));
    check(allowed(ts_session_stream_count(s, "f", "screenshots", &n)));
    check_json(ts_session_load_range(s, "f", "screenshots", 3, 12, &b), &b);
    check_json(ts_session_load_range(s, "f", "videoChunks", 0, 100, &b), &b);
    check_json(ts_session_load_chunk(s, "f", "screenshots", 1, &b), &b);
    check_json(ts_session_load_chunk(s, "f", "audioSegments", 0, &b), &b);
    check_json(ts_session_load_doc(s, "f", "summary", &b), &b);
    check_json(ts_session_load_doc(s, "f", "transcription", &b), &b);
    check_json(ts_session_load_doc(s, "f", "canvasSpec", &b), &b);
    {
        ts_query q;
        ts_index_hits h;
        memset(&q, 0, sizeof q);
        q.text = "work";
        r = ts_store_search(s, &q, &h);
        check(allowed(r));
        ts_index_hits_free(&h);
    }
    r = ts_attach_get(s, EMPTY_HASH, &b);
    check(allowed(r));
    ts_blob_free(&b);
    {
        ts_store_stats st;
        check(allowed(ts_store_stats_get(s, &st)));
    }
    /* the write paths over the same files */
    check(allowed(ts_session_append(s, "f", "screenshots", "{\"id\":\"z\"}", 10, NULL)));
    check(allowed(ts_session_append_screenshot(s, "f", "{\"id\":\"y\"}", 10, "", 0, NULL, NULL, NULL)));
    check(allowed(ts_session_save_doc(s, "f", "summary", "1", 1)));
    check(allowed(ts_session_save_meta(s, "g", "{\"name\":\"n\"}", 12)));
    check(allowed(ts_session_delete(s, "g")));
    check(allowed(ts_store_tick(s, 5000, 1000000)));
    r = ts_store_idle(s, 6000, 1000000);
    check(allowed(r));
    check(allowed(ts_store_gc(s, 10000000, &removed)));
    check_json(ts_session_load(s, "f", &b), &b);
    r = ts_store_close(s);
    check(allowed(r));
    /* and it opens again */
    s = NULL;
    r = ts_store_open("fuzz", &cfg, &s);
    check(r == TS_OK);
    if (s) {
        check_json(ts_session_list(s, &b), &b);
        ts_store_close(s);
    }
    ts_io_mem_destroy(mem);
    return 0;
}
