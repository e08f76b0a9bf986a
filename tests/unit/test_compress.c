/* tests/unit/test_compress.c: background compression of a store - session
   files as ".z" twins, screenshots as WebP in the attachment store, the idle
   job, jobs on the caller's thread, statistics, and crashes at every I/O
   step (nothing lost, every read the same before and after). Runs on the
   in-memory vtable; the optional codecs are switched on here (link -lwebp). */
#ifndef TASKSTORE_STB_ZLIB
#define TASKSTORE_STB_ZLIB
#endif
#ifndef TASKSTORE_WEBP
#define TASKSTORE_WEBP
#endif
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

#define DAY ((uint64_t)24 * 3600 * 1000)
#define T_END ((uint64_t)1700000000000ull)
#define T_NOW (T_END + 8 * DAY)

static uint64_t g_rng = 0x1234567887654321ull;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 20);
}

/* A session in the legacy shape: 25 screenshot records (3 chunks), 60 audio
   segments (2 chunks), a summary. ended: give it an endTime. */
static char *session_json(const char *id, int ended, uint64_t end)
{
    ts__buf b;
    int i;
    ts__buf_init(&b, NULL);
    ts__buf_printf(&b, "{\"id\":\"%s\",\"name\":\"Session %s\",\"startTime\":%llu,", id, id,
                   (unsigned long long)(end - 3600000));
    if (ended) ts__buf_printf(&b, "\"endTime\":%llu,", (unsigned long long)end);
    ts__buf_puts(&b, "\"status\":\"completed\",\"tags\":[\"a\",\"b\"],\"screenshots\":[");
    for (i = 0; i < 25; i++)
        ts__buf_printf(&b, "%s{\"id\":\"ss%d\",\"timestamp\":%llu,\"activity\":\"Editing the file "
                           "number %u in the editor window while reviewing the design\"}",
                       i ? "," : "", i, (unsigned long long)(end - 3600000 + (uint64_t)i * 5000), rnd() % 50);
    ts__buf_puts(&b, "],\"audioSegments\":[");
    for (i = 0; i < 60; i++)
        ts__buf_printf(&b, "%s{\"id\":\"au%d\",\"startTime\":%d,\"transcription\":\"we should look at "
                           "the cache and the queue again, item %u\"}",
                       i ? "," : "", i, i * 20000, rnd() % 100);
    ts__buf_puts(&b, "],\"summary\":{\"narrative\":\"");
    for (i = 0; i < 6; i++)
        ts__buf_puts(&b, "A long day of reviewing the storage layer, the cache, the queue and the "
                         "compression of old sessions, with notes. ");
    ts__buf_puts(&b, "\"}}");
    return (char *)b.data;
}

/* A small synthetic UI screenshot as PNG (stb_image_write, in this TU). */
static unsigned char *ui_png(int w, int h, int seed, int *len)
{
    unsigned char *px = (unsigned char *)malloc((size_t)w * (size_t)h * 4), *png;
    int x, y;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            unsigned char *p = px + 4 * ((size_t)y * (size_t)w + (size_t)x);
            int text = y > 8 && (y / 5) % 3 == 1 && ((x * 7 + y / 15 + seed) % 11) < 6;
            p[0] = (unsigned char)(text ? 30 : (y < 8 ? 40 : 235));
            p[1] = (unsigned char)(text ? 30 : (x < w / 5 ? 45 : 236));
            p[2] = (unsigned char)(text ? 35 : 240);
            p[3] = 255;
        }
    png = stbi_write_png_to_mem(px, w * 4, w, h, 4, len);
    free(px);
    return png;
}

/* Noise does not shrink as lossless WebP: the original stays. */
static unsigned char *noise_png(int w, int h, int *len)
{
    unsigned char *px = (unsigned char *)malloc((size_t)w * (size_t)h * 3), *png;
    size_t i;
    for (i = 0; i < (size_t)w * (size_t)h * 3; i++) px[i] = (unsigned char)rnd();
    png = stbi_write_png_to_mem(px, w * 3, w, h, 3, len);
    free(px);
    return png;
}

static ts_store *open_store(ts_io *io, uint64_t now)
{
    ts_store_config cfg = ts_store_config_default();
    ts_store *s = NULL;
    cfg.io = io;
    cfg.now_ms = now;
    if (ts_store_open("mem", &cfg, &s) != TS_OK) return NULL;
    return s;
}

static int save(ts_store *s, const char *id, int ended, uint64_t end)
{
    char *j = session_json(id, ended, end);
    ts_result r = ts_session_save(s, j, strlen(j), NULL);
    free(j);
    return r == TS_OK;
}

static char *load(ts_store *s, const char *id)
{
    ts_blob b;
    char *p;
    if (ts_session_load(s, id, &b) != TS_OK) return NULL;
    p = (char *)malloc(b.len + 1);
    memcpy(p, b.data, b.len + 1);
    ts_blob_free(&b);
    return p;
}

static int mem_has(ts_io_mem *mem, const char *path)
{
    ts_io io;
    ts_io_stat st;
    ts_io_mem_vtable(mem, &io);
    return io.stat_fn(io.user, path, &st) == TS_OK;
}

#define CHUNK0 "sessions-chunked/old/screenshots/chunk-000.json"

/* ---- session files ------------------------------------------------------------- */

TS_TEST(test_compress_session_files)
{
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
    char *before, *after;
    int done = 0;
    ts_compress_stats st;
    ts_io_mem_create(NULL, &mem);
    ts_io_mem_vtable(mem, &io);
    s = open_store(&io, T_NOW);
    TS_CHECK(s != NULL);
    TS_CHECK(save(s, "old", 1, T_END));
    TS_CHECK_OK(ts_store_flush(s));
    before = load(s, "old");
    TS_CHECK_OK(ts_compress_is_session_compressed(s, "old", &done));
    TS_CHECK_EQ_INT(done, 0);
    TS_CHECK_OK(ts_compress_session(s, "old", &st));
    /* reads agree while the writes are still queued */
    after = load(s, "old");
    TS_CHECK(before && after && strcmp(before, after) == 0);
    free(after);
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK(mem_has(mem, CHUNK0 ".z"));
    TS_CHECK(!mem_has(mem, CHUNK0));
    TS_CHECK(mem_has(mem, "sessions-chunked/old/summary.json.z"));
    TS_CHECK(mem_has(mem, "sessions-chunked/old/metadata.json"));
    TS_CHECK(!mem_has(mem, "sessions-chunked/old/metadata.json.z"));
    TS_CHECK_OK(ts_compress_is_session_compressed(s, "old", &done));
    TS_CHECK_EQ_INT(done, 1);
    TS_CHECK_OK(ts_compress_session_stats(s, "old", &st));
    TS_CHECK_EQ_INT(st.files, 6);              /* 3 + 2 chunks, 1 document */
    TS_CHECK_EQ_INT(st.files_compressed, 6);
    TS_CHECK(st.bytes_after < st.bytes_before / 2);
    TS_CHECK(st.ratio > 0.0 && st.ratio < 0.5);
    after = load(s, "old");
    TS_CHECK(after && strcmp(before, after) == 0);
    free(after);
    TS_CHECK_OK(ts_store_close(s));
    /* a new process reads the twins from disk */
    s = open_store(&io, T_NOW);
    after = load(s, "old");
    TS_CHECK(after && strcmp(before, after) == 0);
    free(after);
    {
        ts_blob c;
        TS_CHECK_OK(ts_session_load_chunk(s, "old", "screenshots", 2, &c));
        TS_CHECK(c.len > 10 && ((char *)c.data)[0] == '[');
        ts_blob_free(&c);
    }
    TS_CHECK_OK(ts_compress_stats_get(s, 1, &st));
    TS_CHECK_EQ_INT(st.files_compressed, 6);
    TS_CHECK_EQ_INT(st.sessions_compressed, 1);
    TS_CHECK_OK(ts_store_close(s));
    free(before);
    ts_io_mem_destroy(mem);
}

TS_TEST(test_only_ended_old_inactive)
{
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
    int done = 1;
    ts_io_mem_create(NULL, &mem);
    ts_io_mem_vtable(mem, &io);
    s = open_store(&io, T_NOW);
    TS_CHECK(save(s, "old", 1, T_END));
    TS_CHECK(save(s, "young", 1, T_NOW - 2 * DAY));
    TS_CHECK(save(s, "open", 0, T_END));
    TS_CHECK(save(s, "active", 1, T_END));
    TS_CHECK_OK(ts_compress_set_active(s, "active"));
    TS_CHECK_EQ_INT(ts_compress_run(s, T_NOW, 0), TS_DONE);
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK(mem_has(mem, CHUNK0 ".z"));
    TS_CHECK(mem_has(mem, "sessions-chunked/young/screenshots/chunk-000.json"));
    TS_CHECK(mem_has(mem, "sessions-chunked/open/screenshots/chunk-000.json"));
    TS_CHECK(mem_has(mem, "sessions-chunked/active/screenshots/chunk-000.json"));
    TS_CHECK(!mem_has(mem, "sessions-chunked/young/screenshots/chunk-000.json.z"));
    TS_CHECK_EQ_INT(ts_compress_session(s, "open", NULL), TS_E_STATE);
    TS_CHECK_EQ_INT(ts_compress_session(s, "active", NULL), TS_E_STATE);
    TS_CHECK_EQ_INT(ts_compress_session(s, "nope", NULL), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts_compress_session(s, "../x", NULL), TS_E_INVALID);
    /* an explicit call ignores the age */
    TS_CHECK_OK(ts_compress_session(s, "young", NULL));
    TS_CHECK_OK(ts_compress_is_session_compressed(s, "young", &done));
    TS_CHECK_EQ_INT(done, 1);
    TS_CHECK_OK(ts_compress_is_session_compressed(s, "open", &done));
    TS_CHECK_EQ_INT(done, 0);
    /* age threshold setting */
    {
        ts_compress_config c = ts_compress_config_default();
        c.age_ms = 1;
        TS_CHECK_OK(ts_compress_configure(s, &c));
        TS_CHECK_OK(ts_compress_set_active(s, NULL));
        TS_CHECK_EQ_INT(ts_compress_run(s, T_NOW, 0), TS_DONE);
        TS_CHECK_OK(ts_store_flush(s));
        TS_CHECK(mem_has(mem, "sessions-chunked/active/screenshots/chunk-000.json.z"));
        c.codec = "zstd";
        TS_CHECK_EQ_INT(ts_compress_configure(s, &c), TS_E_NOTFOUND);
    }
    TS_CHECK_OK(ts_store_close(s));
    ts_io_mem_destroy(mem);
}

/* A store with plain and compressed files, a stale twin beside a newer plain
   file (an append after compression), and damaged twins. */
TS_TEST(test_mixed_store_reads_same)
{
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
    char *before, *after, *b2;
    ts_io_mem_create(NULL, &mem);
    ts_io_mem_vtable(mem, &io);
    s = open_store(&io, T_NOW);
    TS_CHECK(save(s, "old", 1, T_END));
    TS_CHECK(save(s, "other", 1, T_END));
    TS_CHECK_OK(ts_compress_session(s, "old", NULL));
    TS_CHECK_OK(ts_store_flush(s));
    /* append to the compressed session: its last chunk becomes plain again
       and wins over its stale twin */
    TS_CHECK_OK(ts_session_append(s, "old", "screenshots", "{\"id\":\"late\",\"timestamp\":5}", 27, NULL));
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK(mem_has(mem, "sessions-chunked/old/screenshots/chunk-002.json"));
    TS_CHECK(mem_has(mem, "sessions-chunked/old/screenshots/chunk-002.json.z"));
    before = load(s, "old");
    b2 = load(s, "other");
    TS_CHECK(before && strstr(before, "\"late\"") != NULL);
    TS_CHECK_OK(ts_store_close(s));
    s = open_store(&io, T_NOW);
    after = load(s, "old");
    TS_CHECK(after && strcmp(before, after) == 0);
    free(after);
    /* compress again: the newer plain file replaces the stale twin */
    TS_CHECK_OK(ts_compress_session(s, "old", NULL));
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK(!mem_has(mem, "sessions-chunked/old/screenshots/chunk-002.json"));
    after = load(s, "old");
    TS_CHECK(after && strcmp(before, after) == 0);
    free(after);
    after = load(s, "other");
    TS_CHECK(after && strcmp(b2, after) == 0);
    free(after);
    TS_CHECK_OK(ts_store_close(s));
    /* a damaged twin is TS_E_CORRUPT with its path, never wrong bytes */
    {
        ts_blob c;
        ts_error_info ei;
        const char *tw = "sessions-chunked/old/screenshots/chunk-001.json.z";
        size_t size = 0;
        unsigned char buf[65536];
        TS_CHECK_OK(io.read_file_fn(io.user, tw, buf, sizeof buf, &size));
        buf[size - 9] ^= 0x55;
        TS_CHECK_OK(ts_io_mem_put(mem, tw, buf, size));
        s = open_store(&io, T_NOW);
        TS_CHECK_EQ_INT(ts_session_load_chunk(s, "old", "screenshots", 1, &c), TS_E_CORRUPT);
        ts_store_last_error(s, &ei);
        TS_CHECK(strstr(ei.message, "chunk-001.json.z") != NULL);
        TS_CHECK_OK(ts_session_load_chunk(s, "old", "screenshots", 0, &c));
        ts_blob_free(&c);
        /* a bomb: a twin that claims 1 TiB */
        memset(buf, 0, 64);
        buf[0] = 0x89; buf[1] = 'T'; buf[2] = 'S'; buf[3] = 'Z'; buf[4] = 1; buf[5] = 1; buf[6] = 24;
        ts__put_le(buf + 8, (uint64_t)1 << 40, 8);
        ts__put_le(buf + 20, ts_crc32(0, buf, 20), 4);
        TS_CHECK_OK(ts_io_mem_put(mem, "sessions-chunked/old/summary.json.z", buf, 40));
        TS_CHECK_EQ_INT(ts_session_load_doc(s, "old", "summary", &c), TS_E_CORRUPT);
        TS_CHECK_OK(ts_store_close(s));
    }
    free(before); free(b2);
    ts_io_mem_destroy(mem);
}

/* ---- the idle job, budgets, progress, pause/cancel -------------------------------- */

static uint64_t g_fake_us;
static uint64_t fake_clock(void *u) { (void)u; return g_fake_us += 700; }

typedef struct prog_log { int calls, done, saw_eta; uint64_t last_files; } prog_log;
static void on_progress(void *u, const ts_compress_progress *p)
{
    prog_log *l = (prog_log *)u;
    l->calls++;
    if (p->eta_us) l->saw_eta = 1;
    if (p->state == TS_COMPRESS_DONE) l->done++;
    l->last_files = p->files_done;
}

TS_TEST(test_idle_job_and_controls)
{
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
    ts_compress_config c = ts_compress_config_default();
    ts_compress_stats st;
    ts_compress_progress pr;
    prog_log log;
    int i, done = 0;
    char id[16];
    ts_io_mem_create(NULL, &mem);
    ts_io_mem_vtable(mem, &io);
    s = open_store(&io, T_NOW);
    for (i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "s%d", i);
        TS_CHECK(save(s, id, 1, T_END - (uint64_t)i * DAY));
    }
    TS_CHECK_OK(ts_store_flush(s));
    memset(&log, 0, sizeof log);
    c.clock_us_fn = fake_clock;
    c.progress_fn = on_progress;
    c.progress_user = &log;
    TS_CHECK_OK(ts_compress_configure(s, &c));
    /* paused: idle does nothing */
    ts_compress_pause(s);
    ts_store_idle(s, T_NOW, 5000);
    TS_CHECK_EQ_INT(log.calls, 0);
    ts_compress_resume(s);
    /* slices of 1.5 ms (each unit costs ~1.4 ms on the fake clock): a few
       units per slice, the rest deferred */
    for (i = 0; i < 200 && !log.done; i++) ts_store_idle(s, T_NOW + (uint64_t)i, 1500);
    TS_CHECK_EQ_INT(log.done, 1);
    TS_CHECK(log.calls >= 24);
    TS_CHECK(log.saw_eta);
    TS_CHECK_EQ_INT(log.last_files, 24);
    TS_CHECK_OK(ts_compress_stats_get(s, 0, &st));
    TS_CHECK(st.deferred > 0);
    TS_CHECK_EQ_INT(st.files_compressed, 24);
    TS_CHECK_OK(ts_compress_progress_get(s, &pr));
    TS_CHECK_EQ_INT(pr.state, TS_COMPRESS_DONE);
    TS_CHECK_EQ_INT(pr.sessions_total, 4);
    TS_CHECK_OK(ts_store_flush(s));
    for (i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "s%d", i);
        TS_CHECK_OK(ts_compress_is_session_compressed(s, id, &done));
        TS_CHECK_EQ_INT(done, 1);
    }
    /* the next pass waits for rescan_ms, then finds nothing new */
    ts_store_idle(s, T_NOW + 1000, 5000);
    TS_CHECK_EQ_INT(log.done, 1);
    /* a tiny budget: each slice still runs one unit, counted as overrun */
    TS_CHECK(save(s, "s9", 1, T_END));
    c.mode = TS_COMPRESS_AUTO;
    TS_CHECK_OK(ts_compress_configure(s, &c));
    for (i = 0; i < 500 && log.done < 2; i++) ts_store_idle(s, T_NOW + 2 * TS_COMPRESS_DEFAULT_RESCAN_MS + (uint64_t)i, 10);
    TS_CHECK_EQ_INT(log.done, 2);
    TS_CHECK_OK(ts_compress_progress_get(s, &pr));
    TS_CHECK_EQ_INT(pr.sessions_total, 1);      /* finished sessions are not visited again */
    TS_CHECK_OK(ts_compress_stats_get(s, 0, &st));
    TS_CHECK(st.overruns >= 6);
    /* manual mode: idle does nothing; run + cancel */
    TS_CHECK(save(s, "m1", 1, T_END));
    TS_CHECK(save(s, "m2", 1, T_END));
    c.mode = TS_COMPRESS_MANUAL;
    TS_CHECK_OK(ts_compress_configure(s, &c));
    ts_store_idle(s, T_NOW + 10 * TS_COMPRESS_DEFAULT_RESCAN_MS, 100000);
    TS_CHECK(mem_has(mem, "sessions-chunked/m1/screenshots/chunk-000.json"));
    TS_CHECK_EQ_INT(ts_compress_run(s, T_NOW + 10 * TS_COMPRESS_DEFAULT_RESCAN_MS, 1), TS_OK);
    ts_compress_cancel(s);
    TS_CHECK_OK(ts_compress_progress_get(s, &pr));
    TS_CHECK_EQ_INT(pr.state, TS_COMPRESS_CANCELLED);
    TS_CHECK_EQ_INT(ts_compress_run(s, T_NOW + 10 * TS_COMPRESS_DEFAULT_RESCAN_MS, 0), TS_DONE);
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK(!mem_has(mem, "sessions-chunked/m2/screenshots/chunk-000.json"));
    TS_CHECK_OK(ts_store_close(s));
    ts_io_mem_destroy(mem);
}

/* ---- screenshots ------------------------------------------------------------------------ */

/* Two screenshots: a UI-like one and one of noise (which does not shrink). */
static int g_have_shots;
static unsigned char *g_shot_ui, *g_shot_noise;
static int g_shot_ui_n, g_shot_noise_n;

static void make_shots(void)
{
    uint64_t saved = g_rng;
    if (g_have_shots) return;
    g_rng = 777;
    g_shot_ui = ui_png(96, 64, 1, &g_shot_ui_n);
    g_shot_noise = noise_png(40, 30, &g_shot_noise_n);
    g_rng = saved;
    g_have_shots = 1;
}

static int add_shots(ts_store *s, const char *id, char hash_ui[65], char hash_noise[65])
{
    int ok = 1;
    make_shots();
    ok &= ts_session_append_screenshot(s, id, "{\"id\":\"shot-a\"}", 15, g_shot_ui, (size_t)g_shot_ui_n,
                                       "image/png", hash_ui, NULL) == TS_OK;
    ok &= ts_session_append_screenshot(s, id, "{\"id\":\"shot-b\"}", 15, g_shot_noise,
                                       (size_t)g_shot_noise_n, "image/png", hash_noise, NULL) == TS_OK;
    return ok;
}

static int same_pixels(const void *a, size_t an, const void *b, size_t bn)
{
    int x1, y1, c1, x2, y2, ok;
    unsigned char *p = stbi_load_from_memory((const unsigned char *)a, (int)an, &x1, &y1, &c1, 4);
    unsigned char *q = NULL;
    const char *mb = ts_image_sniff(b, bn);
    if (mb && strcmp(mb, "image/webp") == 0) {
        q = WebPDecodeRGBA((const uint8_t *)b, bn, &x2, &y2);
        ok = p && q && x1 == x2 && y1 == y2 && memcmp(p, q, (size_t)x1 * (size_t)y1 * 4) == 0;
        WebPFree(q);
    } else {
        ok = an == bn && memcmp(a, b, an) == 0;
    }
    stbi_image_free(p);
    return ok;
}

TS_TEST(test_screenshots_to_webp)
{
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
    char h1[65], h2[65], h3[65], mime[128], path[300];
    ts_blob b;
    ts_cas_info info;
    ts_compress_stats st;
    int n1, done = 0;
    unsigned char *p1;
    char *before, *after;
    make_shots();
    p1 = g_shot_ui;
    n1 = g_shot_ui_n;
    ts_io_mem_create(NULL, &mem);
    ts_io_mem_vtable(mem, &io);
    s = open_store(&io, T_NOW);
    TS_CHECK(save(s, "old", 1, T_END));
    TS_CHECK(add_shots(s, "old", h1, h2));
    TS_CHECK_OK(ts_store_flush(s));
    before = load(s, "old");
    TS_CHECK_OK(ts_compress_session(s, "old", &st));
    TS_CHECK_EQ_INT(st.images, 2);
    TS_CHECK_EQ_INT(st.images_converted, 1);   /* noise does not shrink */
    TS_CHECK_EQ_INT(st.kept, 1);
    TS_CHECK(st.image_bytes_after < st.image_bytes_before);
    TS_CHECK_OK(ts_store_flush(s));
    after = load(s, "old");
    TS_CHECK(after && strcmp(before, after) == 0);   /* records keep the original hash */
    free(after);
    TS_CHECK_OK(ts_compress_is_session_compressed(s, "old", &done));
    TS_CHECK_EQ_INT(done, 1);
    /* the converted one loads as WebP with its mime type, same pixels */
    TS_CHECK_OK(ts_compress_attach_load(s, h1, &b, mime));
    TS_CHECK_EQ_STR(mime, "image/webp");
    TS_CHECK(same_pixels(p1, (size_t)n1, b.data, b.len));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_attach_get(s, h1, &b));
    TS_CHECK_EQ_STR(ts_image_sniff(b.data, b.len), "image/webp");
    ts_blob_free(&b);
    TS_CHECK_OK(ts_compress_attach_load(s, h2, &b, mime));
    TS_CHECK_EQ_STR(mime, "image/png");
    ts_blob_free(&b);
    TS_CHECK_OK(ts_cas_stat(s->cas, h1, &info));
    TS_CHECK_EQ_STR(info.stored_encoding, "webp");
    TS_CHECK_EQ_STR(info.mime_type, "image/png");
    TS_CHECK_EQ_INT(info.size, n1);
    TS_CHECK(info.stored_size < info.size);
    snprintf(path, sizeof path, "attachments-ca/%.2s/%s/data.bin", h1, h1);
    TS_CHECK(!mem_has(mem, path));
    snprintf(path, sizeof path, "attachments-ca/%.2s/%s/data.webp", h1, h1);
    TS_CHECK(mem_has(mem, path));
    TS_CHECK_OK(ts_cas_verify(s->cas, h1));
    /* the same PNG again: same identity, deduplicated, nothing rewritten */
    TS_CHECK(save(s, "new", 1, T_NOW));
    TS_CHECK_OK(ts_session_append_screenshot(s, "new", "{\"id\":\"again\"}", 14, p1, (size_t)n1,
                                             "image/png", h3, NULL));
    TS_CHECK_EQ_STR(h3, h1);
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK_OK(ts_cas_stat(s->cas, h1, &info));
    TS_CHECK_EQ_STR(info.stored_encoding, "webp");
    snprintf(path, sizeof path, "attachments-ca/%.2s/%s/data.bin", h1, h1);
    TS_CHECK(!mem_has(mem, path));
    TS_CHECK_OK(ts_store_close(s));
    s = open_store(&io, T_NOW);
    TS_CHECK_OK(ts_compress_attach_load(s, h1, &b, mime));
    TS_CHECK(same_pixels(p1, (size_t)n1, b.data, b.len));
    ts_blob_free(&b);
    TS_CHECK_OK(ts_store_close(s));
    free(before);
    ts_io_mem_destroy(mem);
}

TS_TEST(test_image_jobs_and_keep_original)
{
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
    ts_compress_config c = ts_compress_config_default();
    ts_compress_job *job = NULL;
    ts_compress_stats st;
    char h1[65], h2[65], path[300];
    int i, taken = 0;
    ts_io_mem_create(NULL, &mem);
    ts_io_mem_vtable(mem, &io);
    s = open_store(&io, T_NOW);
    TS_CHECK(save(s, "old", 1, T_END));
    TS_CHECK(add_shots(s, "old", h1, h2));
    TS_CHECK_OK(ts_store_flush(s));
    c.offload_images = 1;
    c.keep_original = 1;
    TS_CHECK_OK(ts_compress_configure(s, &c));
    /* idle does the files, leaves the images */
    for (i = 0; i < 20; i++) ts_store_idle(s, T_NOW, 1000000);
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK(mem_has(mem, CHUNK0 ".z"));
    TS_CHECK_OK(ts_compress_stats_get(s, 0, &st));
    TS_CHECK_EQ_INT(st.images_converted, 0);
    /* the caller's worker: take (store thread), run (anywhere), commit */
    while (ts_compress_job_take(s, T_NOW, &job) == TS_OK) {
        TS_CHECK(job != NULL);
        TS_CHECK(ts_compress_job_run(job) == TS_OK);
        TS_CHECK_OK(ts_compress_job_commit(s, job));
        taken++;
    }
    TS_CHECK_EQ_INT(taken, 2);
    TS_CHECK_OK(ts_compress_stats_get(s, 0, &st));
    TS_CHECK_EQ_INT(st.images_converted, 1);
    TS_CHECK_EQ_INT(st.jobs_taken, 2);
    TS_CHECK_OK(ts_store_flush(s));
    /* kept until verified */
    snprintf(path, sizeof path, "attachments-ca/%.2s/%s/data.bin", h1, h1);
    TS_CHECK(mem_has(mem, path));
    /* the next pass reads data.webp back, compares, drops data.bin */
    c.offload_images = 0;
    TS_CHECK_OK(ts_compress_configure(s, &c));
    TS_CHECK_OK(ts_compress_session(s, "old", NULL));
    TS_CHECK_OK(ts_store_flush(s));
    TS_CHECK(!mem_has(mem, path));
    TS_CHECK_OK(ts_cas_verify(s->cas, h1));
    /* a job dropped without commit changes nothing */
    TS_CHECK_OK(ts_store_close(s));
    ts_io_mem_destroy(mem);
}

/* ---- crashes at every I/O step ---------------------------------------------------------- */

typedef struct expect {
    char *old;                  /* ts_session_load of "old" */
    char *other;
    char h1[65], h2[65];
    unsigned char *png1, *png2;
    int n1, n2;
} expect;

static ts_io_mem *populate(expect *e)
{
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
    ts_io_mem_create(NULL, &mem);
    ts_io_mem_vtable(mem, &io);
    s = open_store(&io, T_NOW);
    g_rng = 42;
    save(s, "old", 1, T_END);
    save(s, "other", 0, T_END);
    add_shots(s, "old", e->h1, e->h2);
    ts_store_flush(s);
    if (!e->old) {
        e->old = load(s, "old");
        e->other = load(s, "other");
    }
    ts_store_close(s);
    return mem;
}

/* After a crash: every session and attachment reads exactly as before. */
static int check_after_crash(ts_io_mem *mem, const expect *e)
{
    ts_io io;
    ts_store *s;
    ts_blob b;
    char *x;
    int ok = 1;
    ts_io_mem_vtable(mem, &io);
    s = open_store(&io, T_NOW);
    if (!s) return 0;
    x = load(s, "old");
    ok &= x && strcmp(x, e->old) == 0;
    free(x);
    x = load(s, "other");
    ok &= x && strcmp(x, e->other) == 0;
    free(x);
    if (ts_attach_get(s, e->h1, &b) == TS_OK) {
        ok &= same_pixels(e->png1, (size_t)e->n1, b.data, b.len);
        ts_blob_free(&b);
    } else {
        ok = 0;
    }
    if (ts_attach_get(s, e->h2, &b) == TS_OK) {
        ok &= b.len == (size_t)e->n2 && memcmp(b.data, e->png2, b.len) == 0;
        ts_blob_free(&b);
    } else {
        ok = 0;
    }
    /* and compressing can finish afterwards */
    ok &= ts_compress_session(s, "old", NULL) == TS_OK;
    ok &= ts_store_flush(s) == TS_OK;
    x = load(s, "old");
    ok &= x && strcmp(x, e->old) == 0;
    free(x);
    ok &= ts_store_close(s) == TS_OK;
    return ok;
}

static void crash_sweep(int keep_original, ts_crash_mode mode)
{
    expect e;
    uint64_t k;
    int failures = 0, crashes = 0;
    memset(&e, 0, sizeof e);
    make_shots();
    e.png1 = g_shot_ui; e.n1 = g_shot_ui_n;
    e.png2 = g_shot_noise; e.n2 = g_shot_noise_n;
    for (k = 1; k < 400; k += ts_test_small() ? 5 : 1) {
        ts_io_mem *mem = populate(&e);
        ts_io memio, fio;
        ts_io_fault *f;
        ts_fault_plan plan;
        ts_store *s;
        ts_compress_config c = ts_compress_config_default();
        int crashed;
        ts_io_mem_vtable(mem, &memio);
        ts_io_fault_create(&memio, NULL, &f);
        ts_io_fault_vtable(f, &fio);
        s = open_store(&fio, T_NOW);
        c.keep_original = keep_original;
        ts_compress_configure(s, &c);
        memset(&plan, 0, sizeof plan);
        plan.fail_at = ts_io_fault_ops(f) + k;
        plan.crash = 1;
        ts_io_fault_set(f, &plan);
        ts_compress_run(s, T_NOW, 0);
        if (keep_original) ts_compress_run(s, T_NOW + DAY, 0);
        ts_store_flush(s);
        if (keep_original) {
            ts_compress_session(s, "old", NULL); /* the verification pass */
            ts_store_flush(s);
        }
        crashed = ts_io_fault_crashed(f);
        ts_store_close(s);
        ts_io_fault_destroy(f);
        ts_io_mem_crash(mem, mode, k);
        if (!check_after_crash(mem, &e)) {
            if (failures++ < 3) printf("  crash at op %llu (keep=%d mode=%d): reads differ\n",
                                       (unsigned long long)k, keep_original, (int)mode);
        }
        ts_io_mem_destroy(mem);
        if (!crashed) break;
        crashes++;
    }
    TS_CHECK_EQ_INT(failures, 0);
    TS_CHECK(crashes > (ts_test_small() ? 4 : 20)); /* the sweep went through every step */
    if (getenv("TS_TEST_VERBOSE")) printf("  %d crash points (keep=%d mode=%d)\n", crashes, keep_original, (int)mode);
    free(e.old); free(e.other);
}

TS_TEST(test_crash_every_step_drop_unsynced) { crash_sweep(0, TS_CRASH_DROP_UNSYNCED); }
TS_TEST(test_crash_every_step_random) { crash_sweep(0, TS_CRASH_RANDOM); }
TS_TEST(test_crash_every_step_keep_original) { crash_sweep(1, TS_CRASH_RANDOM); }

TS_TEST(test_read_only_and_disabled)
{
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
    ts_store_config cfg = ts_store_config_default();
    ts_compress_config c = ts_compress_config_default();
    ts_compress_stats st;
    ts_io_mem_create(NULL, &mem);
    ts_io_mem_vtable(mem, &io);
    s = open_store(&io, T_NOW);
    TS_CHECK(save(s, "old", 1, T_END));
    c.disabled = 1;
    TS_CHECK_OK(ts_compress_configure(s, &c));
    TS_CHECK_EQ_INT(ts_compress_run(s, T_NOW, 0), TS_DONE);
    ts_store_idle(s, T_NOW, 100000);
    TS_CHECK_OK(ts_store_close(s));
    TS_CHECK(mem_has(mem, CHUNK0));
    TS_CHECK(!mem_has(mem, CHUNK0 ".z"));
    cfg.io = &io;
    cfg.read_only = 1;
    cfg.now_ms = T_NOW;
    TS_CHECK_OK(ts_store_open("mem", &cfg, &s));
    TS_CHECK_EQ_INT(ts_compress_run(s, T_NOW, 0), TS_E_READONLY);
    TS_CHECK_EQ_INT(ts_compress_session(s, "old", NULL), TS_E_READONLY);
    TS_CHECK_OK(ts_compress_session_stats(s, "old", &st));
    TS_CHECK_EQ_INT(st.files, 6);
    TS_CHECK_EQ_INT(st.files_compressed, 0);
    TS_CHECK_OK(ts_store_close(s));
    ts_io_mem_destroy(mem);
}

int main(void)
{
    TS_RUN(test_compress_session_files);
    TS_RUN(test_only_ended_old_inactive);
    TS_RUN(test_mixed_store_reads_same);
    TS_RUN(test_idle_job_and_controls);
    TS_RUN(test_screenshots_to_webp);
    TS_RUN(test_image_jobs_and_keep_original);
    TS_RUN(test_crash_every_step_drop_unsynced);
    TS_RUN(test_crash_every_step_random);
    TS_RUN(test_crash_every_step_keep_original);
    TS_RUN(test_read_only_and_disabled);
    if (g_have_shots) { STBIW_FREE(g_shot_ui); STBIW_FREE(g_shot_noise); }
    return ts_test_report("compress");
}
