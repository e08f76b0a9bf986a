/* tests/unit/test_codecs.c: codecs, the ".z" frame, the twin reader and
   PNG/JPEG -> WebP conversion. Built like every unit test; the optional
   codecs are switched on here (link -lwebp -lm). */
#ifndef TASKSTORE_STB_ZLIB
#define TASKSTORE_STB_ZLIB
#endif
#ifndef TASKSTORE_WEBP
#define TASKSTORE_WEBP
#endif
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

/* ---- helpers ----------------------------------------------------------------- */

typedef struct test_alloc {
    long live;          /* blocks outstanding */
    long calls;         /* alloc + realloc calls */
    long fail_at;       /* fail the Nth call (1-based), 0 = never */
    size_t biggest;     /* largest single request */
} test_alloc;

static void *ta_alloc(size_t n, void *u)
{
    test_alloc *t = (test_alloc *)u;
    void *p;
    t->calls++;
    if (n > t->biggest) t->biggest = n;
    if (t->fail_at && t->calls == t->fail_at) return NULL;
    p = malloc(n);
    if (p) t->live++;
    return p;
}
static void *ta_realloc(void *p, size_t o, size_t n, void *u)
{
    test_alloc *t = (test_alloc *)u;
    (void)o;
    t->calls++;
    if (n > t->biggest) t->biggest = n;
    if (t->fail_at && t->calls == t->fail_at) return NULL;
    return realloc(p, n);
}
static void ta_free(void *p, size_t n, void *u)
{
    test_alloc *t = (test_alloc *)u;
    (void)n;
    if (p) t->live--;
    free(p);
}
static ts_allocator ta_make(test_alloc *t)
{
    ts_allocator a;
    memset(t, 0, sizeof *t);
    a.alloc_fn = ta_alloc; a.realloc_fn = ta_realloc; a.free_fn = ta_free; a.user = t;
    return a;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* JSON text shaped like a screenshots chunk. */
static char *make_json(size_t records, size_t *len)
{
    ts__buf b;
    size_t i;
    ts__buf_init(&b, NULL);
    ts__buf_putc(&b, '[');
    for (i = 0; i < records; i++) {
        ts__buf_printf(&b, "%s{\"id\":\"shot-%05u\",\"timestamp\":%llu,\"activity\":\"Editing file "
                           "src/module_%u.c in the editor, line %u\",\"attachmentHash\":\"%08x%08x%08x\"}",
                       i ? "," : "", (unsigned)i, 1700000000000ull + i * 5000, rng() % 40,
                       rng() % 2000, rng(), rng(), rng());
    }
    ts__buf_putc(&b, ']');
    *len = b.len;
    return (char *)b.data;
}

static int roundtrip(const ts_codec *c, int level, const void *src, size_t len)
{
    ts_blob f, d;
    int ok;
    if (ts_frame_encode(c, level, src, len, NULL, &f) != TS_OK) return 0;
    if (ts_frame_decode(NULL, f.data, f.len, 0, NULL, &d) != TS_OK) { ts_blob_free(&f); return 0; }
    ok = d.len == len && (len == 0 || memcmp(d.data, src, len) == 0) && ((char *)d.data)[len] == 0;
    ts_blob_free(&f);
    ts_blob_free(&d);
    return ok;
}

/* A frame with the given header fields around payload (header CRC fixed up). */
static unsigned char *make_frame(unsigned version, unsigned codec, uint64_t orig, uint32_t crc,
                                 const void *payload, size_t plen, size_t *len)
{
    unsigned char *f = (unsigned char *)malloc(TS_FRAME_HEADER_SIZE + plen + 1);
    f[0] = 0x89; f[1] = 'T'; f[2] = 'S'; f[3] = 'Z';
    f[4] = (unsigned char)version; f[5] = (unsigned char)codec;
    ts__put_le(f + 6, TS_FRAME_HEADER_SIZE, 2);
    ts__put_le(f + 8, orig, 8);
    ts__put_le(f + 16, crc, 4);
    ts__put_le(f + 20, ts_crc32(0, f, 20), 4);
    if (plen) memcpy(f + TS_FRAME_HEADER_SIZE, payload, plen);
    *len = TS_FRAME_HEADER_SIZE + plen;
    return f;
}

/* ---- codecs and frames ---------------------------------------------------------- */

TS_TEST(test_crc32_vectors)
{
    TS_CHECK_EQ_INT(ts_crc32(0, "123456789", 9), 0xCBF43926u);
    TS_CHECK_EQ_INT(ts_crc32(0, "", 0), 0);
    TS_CHECK_EQ_INT(ts_crc32(ts_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
    TS_CHECK_EQ_INT(ts_crc32(0, "The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
}

TS_TEST(test_builtin_lookup)
{
    ts_codec c;
    TS_CHECK_OK(ts_codec_builtin("identity", &c));
    TS_CHECK_EQ_INT(c.id, TS_CODEC_ID_IDENTITY);
    TS_CHECK_OK(ts_codec_builtin("deflate", &c));
    TS_CHECK_EQ_INT(c.id, TS_CODEC_ID_DEFLATE);
    TS_CHECK_EQ_STR(c.name, "deflate");
    TS_CHECK_EQ_INT(ts_codec_builtin("zstd", &c), TS_E_NOTFOUND);
    TS_CHECK(c.compress_fn == NULL);
    TS_CHECK(ts_codec_set_find(NULL, "deflate") != NULL);
    TS_CHECK(ts_codec_set_find_id(NULL, 1) != NULL);
    TS_CHECK(ts_codec_set_find_id(NULL, 7) == NULL);
}

TS_TEST(test_roundtrip_every_codec)
{
    static const char *names[] = { "identity", "deflate" };
    size_t jl = 0, i, k;
    char *json = make_json(200, &jl);
    unsigned char *rnd = (unsigned char *)malloc(70000);
    unsigned char *zeros = (unsigned char *)calloc(1, 300000);
    for (i = 0; i < 70000; i++) rnd[i] = (unsigned char)rng();
    for (k = 0; k < 2; k++) {
        ts_codec c;
        TS_CHECK_OK(ts_codec_builtin(names[k], &c));
        TS_CHECK(roundtrip(&c, 0, "", 0));
        TS_CHECK(roundtrip(&c, 0, "x", 1));
        TS_CHECK(roundtrip(&c, 0, "abcabcabcabcabcabcabcabc", 24));
        TS_CHECK(roundtrip(&c, 0, json, jl));
        TS_CHECK(roundtrip(&c, 0, rnd, 70000));     /* incompressible: stored blocks */
        TS_CHECK(roundtrip(&c, 0, zeros, 300000));  /* long runs, several blocks */
    }
    free(json); free(rnd); free(zeros);
}

TS_TEST(test_deflate_levels_and_ratio)
{
    ts_codec c;
    size_t jl = 0;
    int level;
    char *json = make_json(300, &jl);
    size_t prev = (size_t)-1;
    TS_CHECK_OK(ts_codec_builtin("deflate", &c));
    for (level = 1; level <= 9; level++) {
        ts_blob f;
        TS_CHECK(roundtrip(&c, level, json, jl));
        TS_CHECK_OK(ts_frame_encode(&c, level, json, jl, NULL, &f));
        TS_CHECK(f.len < jl / 2);        /* JSON chunks shrink a lot */
        if (level == 1) TS_CHECK(f.len <= prev);
        prev = f.len;
        ts_blob_free(&f);
    }
    free(json);
}

TS_TEST(test_frame_header)
{
    ts_codec c;
    ts_blob f;
    ts_frame_info fi;
    TS_CHECK_OK(ts_codec_builtin("deflate", &c));
    TS_CHECK_OK(ts_frame_encode(&c, 0, "hello hello hello", 17, NULL, &f));
    TS_CHECK_OK(ts_frame_info_get(f.data, f.len, &fi));
    TS_CHECK_EQ_INT(fi.codec_id, 1);
    TS_CHECK_EQ_INT(fi.original_size, 17);
    TS_CHECK_EQ_INT(fi.header_size, 24);
    TS_CHECK_EQ_INT(fi.crc, ts_crc32(0, "hello hello hello", 17));
    TS_CHECK_EQ_INT(ts_frame_info_get(f.data, 23, &fi), TS_E_CORRUPT);
    ((unsigned char *)f.data)[9] ^= 1;   /* size field: the header CRC catches it */
    TS_CHECK_EQ_INT(ts_frame_info_get(f.data, f.len, &fi), TS_E_CORRUPT);
    ts_blob_free(&f);
    {
        size_t n;
        unsigned char *v2 = make_frame(2, 1, 5, 0, "xxxxx", 5, &n);
        ts_blob d;
        TS_CHECK_EQ_INT(ts_frame_info_get(v2, n, &fi), TS_E_VERSION);
        TS_CHECK_EQ_INT(ts_frame_decode(NULL, v2, n, 0, NULL, &d), TS_E_VERSION);
        free(v2);
        v2 = make_frame(1, 77, 5, ts_crc32(0, "xxxxx", 5), "xxxxx", 5, &n);
        TS_CHECK_EQ_INT(ts_frame_decode(NULL, v2, n, 0, NULL, &d), TS_E_NOTIMPL);
        TS_CHECK(d.data == NULL);
        free(v2);
    }
}

/* every prefix and every single-byte flip of a frame fails cleanly */
TS_TEST(test_frame_truncated_and_flipped)
{
    ts_codec c;
    ts_blob f, d;
    size_t i, jl;
    char *json = make_json(20, &jl);
    unsigned char *copy;
    TS_CHECK_OK(ts_codec_builtin("deflate", &c));
    TS_CHECK_OK(ts_frame_encode(&c, 0, json, jl, NULL, &f));
    copy = (unsigned char *)malloc(f.len);
    for (i = 0; i < f.len; i++) {
        ts_result r = ts_frame_decode(NULL, f.data, i, 0, NULL, &d);
        if (r == TS_OK) {
            /* only the zlib trailer (adler32, unread by stb) may go missing:
               the frame's CRC still proves the bytes */
            TS_CHECK(i >= f.len - 4);
            TS_CHECK(d.len == jl && memcmp(d.data, json, jl) == 0);
            ts_blob_free(&d);
        } else {
            TS_CHECK(r == TS_E_CORRUPT);
            TS_CHECK(d.data == NULL);
        }
    }
    for (i = 0; i < f.len; i++) {
        ts_result r;
        memcpy(copy, f.data, f.len);
        copy[i] ^= (unsigned char)(1u << (i % 8));
        r = ts_frame_decode(NULL, copy, f.len, 0, NULL, &d);
        /* a flip is caught (header CRC, stream, CRC of the result) unless
           the stream still decodes to the very same bytes (a flip in the
           unread adler32 trailer or padding bits, or a distance now
           pointing at an equal run): never wrong bytes */
        if (r == TS_OK) {
            TS_CHECK(d.len == jl && memcmp(d.data, json, jl) == 0);
            ts_blob_free(&d);
        } else {
            TS_CHECK(r == TS_E_CORRUPT || r == TS_E_VERSION || r == TS_E_NOTIMPL);
        }
    }
    free(copy); free(json);
    ts_blob_free(&f);
}

/* A decompression bomb: 64 MiB of zeros deflate to ~64 KiB. Decoding is
   refused before any allocation when the frame says so, and a frame that
   lies about its size fails in a buffer of the size it claimed. */
TS_TEST(test_deflate_bomb)
{
    ts_codec c;
    ts_blob f, d;
    test_alloc t;
    ts_allocator a = ta_make(&t);
    size_t big = (size_t)(ts_test_small() ? 8 : 64) << 20, n;
    unsigned char *zeros = (unsigned char *)calloc(1, big), *liar;
    TS_CHECK_OK(ts_codec_builtin("deflate", &c));
    TS_CHECK_OK(ts_frame_encode(&c, 1, zeros, big, NULL, &f));
    TS_CHECK(f.len < big / 50);
    /* the limit: nothing allocated */
    TS_CHECK_EQ_INT(ts_frame_decode(NULL, f.data, f.len, (size_t)1 << 20, &a, &d), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(t.calls, 0);
    TS_CHECK_EQ_INT(t.live, 0);
    /* a frame claiming 1000 bytes over the same stream */
    liar = make_frame(1, 1, 1000, 0, (unsigned char *)f.data + 24, f.len - 24, &n);
    TS_CHECK_EQ_INT(ts_frame_decode(NULL, liar, n, 0, &a, &d), TS_E_CORRUPT);
    TS_CHECK(t.biggest <= 2048); /* the buffer for the 1000 claimed */
    TS_CHECK_EQ_INT(t.live, 0);
    free(liar);
    /* a frame claiming 4 GiB: refused by the default limit */
    liar = make_frame(1, 1, (uint64_t)4 << 30, 0, (unsigned char *)f.data + 24, f.len - 24, &n);
    TS_CHECK_EQ_INT(ts_frame_decode(NULL, liar, n, 0, &a, &d), TS_E_CORRUPT);
    TS_CHECK(t.biggest <= 2048); /* the buffer for the 1000 claimed */
    free(liar);
    /* and the honest frame within its limit reads back */
    TS_CHECK_OK(ts_frame_decode(NULL, f.data, f.len, big, &a, &d));
    TS_CHECK(d.len == big && memcmp(d.data, zeros, big) == 0);
    ts_blob_free(&d);
    TS_CHECK_EQ_INT(t.live, 0);
    ts_blob_free(&f);
    free(zeros);
}

TS_TEST(test_decode_oom_sweep)
{
    ts_codec c;
    ts_blob f, d;
    size_t jl;
    long n;
    char *json = make_json(50, &jl);
    TS_CHECK_OK(ts_codec_builtin("deflate", &c));
    TS_CHECK_OK(ts_frame_encode(&c, 0, json, jl, NULL, &f));
    for (n = 1; n < 10; n++) {
        test_alloc t;
        ts_allocator a = ta_make(&t);
        ts_result r, r2;
        t.fail_at = n;
        r = ts_frame_decode(NULL, f.data, f.len, 0, &a, &d);
        TS_CHECK(r == TS_OK || r == TS_E_NOMEM);
        if (r == TS_OK) ts_blob_free(&d);
        TS_CHECK_EQ_INT(t.live, 0);
        t.calls = 0;
        r2 = ts_frame_encode(&c, 0, json, jl, &a, &d);
        TS_CHECK(r2 == TS_OK || r2 == TS_E_NOMEM);
        if (r2 == TS_OK) ts_blob_free(&d);
        TS_CHECK_EQ_INT(t.live, 0);
    }
    ts_blob_free(&f);
    free(json);
}

/* A user codec: run-length pairs (count, byte). */
static ts_result rle_compress(void *user, const void *src, size_t len, int level,
                              const ts_allocator *alloc, void **out, size_t *out_len, size_t *out_cap)
{
    const unsigned char *s = (const unsigned char *)src;
    unsigned char *o;
    size_t i = 0, k = 0;
    (void)level;
    (*(int *)user)++;
    o = (unsigned char *)ts__alloc(alloc, 2 * len + 1);
    if (!o) return TS_E_NOMEM;
    while (i < len) {
        size_t run = 1;
        while (i + run < len && run < 255 && s[i + run] == s[i]) run++;
        o[k++] = (unsigned char)run; o[k++] = s[i];
        i += run;
    }
    *out = o; *out_len = k; *out_cap = 2 * len + 1;
    return TS_OK;
}
static ts_result rle_decompress(void *user, const void *src, size_t len, void *dst, size_t dst_len)
{
    const unsigned char *s = (const unsigned char *)src;
    unsigned char *d = (unsigned char *)dst;
    size_t i, k = 0;
    (*(int *)user)++;
    if (len % 2) return TS_E_CORRUPT;
    for (i = 0; i < len; i += 2) {
        if (s[i] == 0 || s[i] > dst_len - k) return TS_E_CORRUPT;
        memset(d + k, s[i + 1], s[i]);
        k += s[i];
    }
    return k == dst_len ? TS_OK : TS_E_CORRUPT;
}

TS_TEST(test_user_codec_plugs_in)
{
    ts_codec_set set;
    ts_codec rle, bad, deflate, wrapped;
    ts_blob f, d;
    int calls = 0, wcalls = 0;
    const char *text = "aaaaaaaaaabbbbbbbbbbbbbbbbcccccccccccccccccccccc";
    memset(&set, 0, sizeof set);
    memset(&rle, 0, sizeof rle);
    rle.name = "rle"; rle.id = 200; rle.user = &calls;
    rle.compress_fn = rle_compress; rle.decompress_fn = rle_decompress;
    bad = rle; bad.id = 5;
    TS_CHECK_EQ_INT(ts_codec_set_add(&set, &bad), TS_E_INVALID);   /* reserved id */
    bad = rle; bad.name = "Bad.Name";
    TS_CHECK_EQ_INT(ts_codec_set_add(&set, &bad), TS_E_INVALID);
    bad = rle; bad.decompress_fn = NULL;
    TS_CHECK_EQ_INT(ts_codec_set_add(&set, &bad), TS_E_INVALID);
    TS_CHECK_OK(ts_codec_set_add(&set, &rle));
    TS_CHECK(ts_codec_set_find(&set, "rle") == &set.codecs[0]);
    TS_CHECK(ts_codec_set_find_id(&set, 200) == &set.codecs[0]);
    TS_CHECK_OK(ts_frame_encode(&rle, 0, text, strlen(text), NULL, &f));
    TS_CHECK_EQ_INT(ts_frame_decode(NULL, f.data, f.len, 0, NULL, &d), TS_E_NOTIMPL);
    TS_CHECK_OK(ts_frame_decode(&set, f.data, f.len, 0, NULL, &d));
    TS_CHECK(d.len == strlen(text) && memcmp(d.data, text, d.len) == 0);
    TS_CHECK_EQ_INT(calls, 2);
    ts_blob_free(&d);
    ts_blob_free(&f);
    /* a codec registered as id 1 replaces the built-in deflate; frames stay
       compatible both ways */
    TS_CHECK_OK(ts_codec_builtin("deflate", &deflate));
    wrapped = deflate; wrapped.name = "zlib";
    wrapped.user = &wcalls;
    TS_CHECK_OK(ts_codec_set_add(&set, &wrapped));
    TS_CHECK(ts_codec_set_find_id(&set, 1) == &set.codecs[1]);
    TS_CHECK_OK(ts_frame_encode(&deflate, 0, text, strlen(text), NULL, &f));
    TS_CHECK_OK(ts_frame_decode(&set, f.data, f.len, 0, NULL, &d));
    TS_CHECK(d.len == strlen(text));
    ts_blob_free(&d);
    ts_blob_free(&f);
    {
        uint32_t i;
        ts_codec more = rle;
        char names[8][8];
        for (i = set.count; i < TS_CODEC_MAX; i++) {
            snprintf(names[i], sizeof names[i], "c%u", (unsigned)i);
            more.name = names[i]; more.id = (uint8_t)(130 + i);
            TS_CHECK_OK(ts_codec_set_add(&set, &more));
        }
        more.name = "onemore"; more.id = 250;
        TS_CHECK_EQ_INT(ts_codec_set_add(&set, &more), TS_E_RANGE);
    }
}

/* ---- the twin reader --------------------------------------------------------------- */

TS_TEST(test_read_twin)
{
    ts_io_mem *mem;
    ts_io io;
    ts_queue *q;
    ts__env env;
    ts__buf out;
    ts_codec c;
    ts_blob f;
    size_t jl;
    char *json = make_json(30, &jl);
    const char *p = "sessions-chunked/s1/screenshots/chunk-000.json";
    TS_CHECK_OK(ts_io_mem_create(NULL, &mem));
    ts_io_mem_vtable(mem, &io);
    TS_CHECK_OK(ts_queue_open(&io, NULL, &q));
    ts__env_init(&env, NULL, NULL);
    ts__buf_init(&out, NULL);
    TS_CHECK_OK(ts_codec_builtin("deflate", &c));
    TS_CHECK_OK(ts_frame_encode(&c, 0, json, jl, NULL, &f));
    /* nothing there */
    TS_CHECK_EQ_INT(ts__codec_read_twin(NULL, q, &io, &env, p, 1 << 20, &out), TS_E_NOTFOUND);
    /* on disk */
    TS_CHECK_OK(ts_io_mem_put(mem, "sessions-chunked/s1/screenshots/chunk-000.json.z", f.data, f.len));
    TS_CHECK_OK(ts__codec_read_twin(NULL, q, &io, &env, p, 1 << 20, &out));
    TS_CHECK(out.len == jl && memcmp(out.data, json, jl) == 0);
    /* a queued delete of the twin hides it */
    TS_CHECK_OK(ts_queue_delete(q, "sessions-chunked/s1/screenshots/chunk-000.json.z", TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_EQ_INT(ts__codec_read_twin(NULL, q, &io, &env, p, 1 << 20, &out), TS_E_NOTFOUND);
    /* a queued write of a damaged twin is read (overlay) and refused */
    ((unsigned char *)f.data)[f.len / 2] ^= 0x40;
    TS_CHECK_OK(ts_queue_push(q, "sessions-chunked/s1/screenshots/chunk-000.json.z", f.data, f.len,
                              TS_PRIO_LOW, NULL, NULL));
    TS_CHECK_EQ_INT(ts__codec_read_twin(NULL, q, &io, &env, p, 1 << 20, &out), TS_E_CORRUPT);
    TS_CHECK(strstr(env.last.message, "chunk-000.json.z") != NULL);
    TS_CHECK_EQ_INT(out.len, 0);
    /* over the size limit */
    ts_queue_clear(q);
    TS_CHECK_EQ_INT(ts__codec_read_twin(NULL, q, &io, &env, p, 100, &out), TS_E_CORRUPT);
    /* without a queue */
    TS_CHECK_OK(ts__codec_read_twin(NULL, NULL, &io, &env, p, 1 << 20, &out));
    TS_CHECK_EQ_INT(out.len, jl);
    ts__buf_free(&out);
    ts_blob_free(&f);
    ts_queue_close(q);
    ts_io_mem_destroy(mem);
    free(json);
}

/* ---- images ---------------------------------------------------------------------------- */

/* A synthetic UI screenshot: flat panels, a title bar, rows of "text"
   glyphs, a gradient and, optionally, a translucent overlay. */
static unsigned char *make_ui(int w, int h, int alpha)
{
    unsigned char *px = (unsigned char *)malloc((size_t)w * (size_t)h * 4);
    int x, y;
    for (y = 0; y < h; y++) {
        for (x = 0; x < w; x++) {
            unsigned char *p = px + 4 * ((size_t)y * (size_t)w + (size_t)x);
            int r = 240, g = 240, b = 243;
            if (y < h / 12) { r = 45; g = 50; b = 60; }
            else if (x < w / 5) { r = 30 + y * 40 / h; g = 34; b = 40; }
            if (y > h / 12 && x > w / 5 + 8 && (y / 7) % 3 == 1 && ((x * 7 + (y / 21) * 13) % 11) < 6) {
                r = g = b = 20 + (x % 3) * 10;
            }
            p[0] = (unsigned char)r; p[1] = (unsigned char)g; p[2] = (unsigned char)b;
            p[3] = 255;
            if (alpha && x > w / 2 && y > h / 2) p[3] = (unsigned char)((x + y) % 256);
            if (alpha && x > w - 5) { p[3] = 0; p[0] = 123; } /* hidden RGB must survive */
        }
    }
    return px;
}

static unsigned char *to_png(const unsigned char *px, int w, int h, int *len)
{
    return stbi_write_png_to_mem(px, w * 4, w, h, 4, len);
}

/* A 48x32 baseline JPEG (made by stb_image_write, whose JPEG writer trips
   UBSan, so it is not run here). */
static const unsigned char test_jpeg[1198] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x84, 0x00, 0x05, 0x03, 0x04, 0x04, 0x04, 0x03, 0x05,
    0x04, 0x04, 0x04, 0x05, 0x05, 0x05, 0x06, 0x07, 0x0c, 0x08, 0x07, 0x07, 0x07, 0x07, 0x0f, 0x0b,
    0x0b, 0x09, 0x0c, 0x11, 0x0f, 0x12, 0x12, 0x11, 0x0f, 0x11, 0x11, 0x13, 0x16, 0x1c, 0x17, 0x13,
    0x14, 0x1a, 0x15, 0x11, 0x11, 0x18, 0x21, 0x18, 0x1a, 0x1d, 0x1d, 0x1f, 0x1f, 0x1f, 0x13, 0x17,
    0x22, 0x24, 0x22, 0x1e, 0x24, 0x1c, 0x1e, 0x1f, 0x1e, 0x01, 0x05, 0x05, 0x05, 0x07, 0x06, 0x07,
    0x0e, 0x08, 0x08, 0x0e, 0x1e, 0x14, 0x11, 0x14, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e,
    0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e,
    0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e,
    0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0x1e, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x00,
    0x20, 0x00, 0x30, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x01,
    0xa2, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x10, 0x00,
    0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7d, 0x01,
    0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22,
    0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24,
    0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
    0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a,
    0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a,
    0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
    0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6,
    0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3,
    0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9,
    0xfa, 0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x11, 0x00,
    0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77, 0x00,
    0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13,
    0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15,
    0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27,
    0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6,
    0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4,
    0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9,
    0xfa, 0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3f, 0x00, 0xf3,
    0xbf, 0xf8, 0x43, 0x6e, 0xbc, 0xac, 0xfd, 0xb9, 0x37, 0xfa, 0x79, 0x1f, 0xec, 0xe7, 0xfb, 0xff,
    0x00, 0xde, 0xe2, 0xbe, 0x91, 0xf8, 0x25, 0xe0, 0xdb, 0xa3, 0xf0, 0xe3, 0x48, 0x12, 0x5f, 0x20,
    0x5f, 0xde, 0xe4, 0x88, 0x3f, 0xe9, 0xac, 0x99, 0xfe, 0x3f, 0x5c, 0x57, 0x8e, 0xf9, 0xf2, 0x79,
    0x5b, 0xfe, 0xce, 0xf9, 0xfe, 0xef, 0xfc, 0x07, 0x3e, 0x9e, 0xbc, 0x57, 0xd2, 0x3f, 0x04, 0xa7,
    0x91, 0xfe, 0x1c, 0x69, 0x0a, 0xd6, 0xee, 0x83, 0xf7, 0xbc, 0x9f, 0x79, 0x64, 0x3e, 0x9d, 0x8f,
    0x15, 0xf6, 0x5c, 0x57, 0x9b, 0x3f, 0x61, 0x45, 0x7d, 0x66, 0xa5, 0xfd, 0xa2, 0xb2, 0xe5, 0xd1,
    0xfb, 0xb2, 0xd1, 0xfb, 0x9b, 0x7c, 0xd7, 0xa9, 0xf6, 0x9c, 0x75, 0xc1, 0x99, 0x37, 0xf6, 0x74,
    0x7f, 0x70, 0xbe, 0x35, 0xf6, 0xa5, 0xda, 0x5f, 0xde, 0x05, 0xf0, 0x6d, 0xee, 0xe1, 0x9b, 0xd4,
    0xc6, 0x53, 0x3f, 0xb9, 0xed, 0x8f, 0x9b, 0xf8, 0xfb, 0x1a, 0x53, 0xe0, 0xdb, 0xaf, 0xdd, 0xe2,
    0xf9, 0x39, 0xdb, 0xbf, 0xf7, 0x1d, 0x3a, 0xee, 0xfe, 0x3e, 0xdc, 0x57, 0x5a, 0xb7, 0x32, 0x96,
    0x00, 0xda, 0xb8, 0xc9, 0x41, 0x9e, 0x78, 0xc8, 0xc9, 0x3d, 0x3b, 0x53, 0x8c, 0xf2, 0x0f, 0x2f,
    0xfd, 0x1d, 0xfe, 0x6d, 0xb9, 0xff, 0x00, 0x67, 0x39, 0xcf, 0x6e, 0xd8, 0xfd, 0x6b, 0xf3, 0x7a,
    0x59, 0xbd, 0xe3, 0xa6, 0x2a, 0xa3, 0xd5, 0xef, 0x1f, 0x37, 0xff, 0x00, 0x4e, 0xfa, 0x6c, 0xbc,
    0x8f, 0xca, 0x9f, 0x06, 0x64, 0xff, 0x00, 0xf4, 0x0e, 0xbf, 0xf0, 0x29, 0x7f, 0xf2, 0x47, 0x21,
    0x17, 0x83, 0x6e, 0x8a, 0x03, 0x25, 0xf2, 0x06, 0xf9, 0x72, 0x04, 0x1f, 0xed, 0x1c, 0xff, 0x00,
    0x1f, 0xa6, 0x29, 0x23, 0xf0, 0x6d, 0xe9, 0x2b, 0xbe, 0xf5, 0x07, 0x03, 0x76, 0x21, 0xe8, 0x77,
    0x7f, 0xbf, 0xfd, 0xde, 0x6b, 0xb0, 0x8a, 0x79, 0x1d, 0x03, 0x35, 0xbb, 0xa1, 0xf9, 0x78, 0x3e,
    0xec, 0x47, 0xa7, 0x61, 0xcd, 0x36, 0x3b, 0x99, 0x58, 0xae, 0x6d, 0x5d, 0x72, 0x01, 0x39, 0xcf,
    0x1f, 0x36, 0x31, 0xd3, 0xd3, 0x9a, 0x16, 0x6f, 0xee, 0xd2, 0xff, 0x00, 0x6a, 0xa9, 0xac, 0x74,
    0xf7, 0x77, 0x57, 0xde, 0x5f, 0xbb, 0xdf, 0xa7, 0x4d, 0x3a, 0x07, 0xfa, 0x99, 0x93, 0xeb, 0xfe,
    0xce, 0xbf, 0xf0, 0x29, 0x7f, 0xf2, 0x47, 0xc8, 0x1f, 0x6b, 0x8f, 0xca, 0xf3, 0x36, 0xbe, 0x3e,
    0x9f, 0xec, 0xee, 0xfe, 0x55, 0xf4, 0x8f, 0xc1, 0x2b, 0xb8, 0xe4, 0xf8, 0x71, 0xa4, 0x22, 0xab,
    0x82, 0x7c, 0xde, 0xa3, 0xd6, 0x59, 0x1b, 0xf9, 0x0a, 0xf9, 0xc3, 0xed, 0x10, 0xec, 0xdf, 0xbf,
    0xe5, 0xf5, 0xc1, 0xfe, 0xee, 0xef, 0xe5, 0x5f, 0x48, 0xfc, 0x14, 0xb8, 0x85, 0xfe, 0x1b, 0xe9,
    0x2a, 0xaf, 0x92, 0x7c, 0xde, 0xc7, 0xbc, 0xb2, 0x11, 0xfa, 0x0a, 0xfd, 0x07, 0x8b, 0x31, 0x12,
    0x78, 0x7a, 0x2b, 0xeb, 0x70, 0x77, 0x9a, 0xd2, 0xca, 0xf2, 0xf7, 0x65, 0xa2, 0xf7, 0xb7, 0xfb,
    0xf6, 0x3f, 0x7b, 0xe3, 0xa5, 0xff, 0x00, 0x09, 0xd1, 0xf7, 0x7e, 0xda, 0xfc, 0xa4, 0x75, 0x8b,
    0x7b, 0x11, 0x60, 0x02, 0xbf, 0x25, 0x07, 0x41, 0xfc, 0x43, 0x22, 0x9c, 0x6e, 0xe3, 0x1e, 0x5f,
    0xca, 0xff, 0x00, 0xbc, 0xdb, 0x8e, 0x3f, 0xbd, 0x9c, 0x7f, 0x2a, 0x51, 0x75, 0x01, 0x20, 0x09,
    0x39, 0x25, 0x40, 0xe0, 0xff, 0x00, 0x10, 0xc8, 0xa7, 0x1b, 0x88, 0x46, 0xcf, 0x9f, 0xef, 0xed,
    0xdb, 0xc1, 0xe7, 0x39, 0xc7, 0xf2, 0x35, 0xf9, 0xbd, 0x3c, 0x4c, 0x9a, 0xff, 0x00, 0x7c, 0x83,
    0xd5, 0xf4, 0x5d, 0xf6, 0xf8, 0xba, 0x6c, 0x7e, 0x54, 0xd7, 0xf7, 0x58, 0xc8, 0xae, 0xe3, 0x91,
    0x03, 0xaa, 0xb8, 0x07, 0x6f, 0x51, 0xea, 0xc5, 0x7f, 0x98, 0xa6, 0xc7, 0x7b, 0x14, 0x85, 0x40,
    0x57, 0xf9, 0x80, 0x23, 0x20, 0x7f, 0x7b, 0x6f, 0xf3, 0xa9, 0x63, 0xb8, 0x85, 0xd7, 0x72, 0xbe,
    0x41, 0xc7, 0x63, 0xdc, 0xe0, 0x7e, 0xa2, 0x9a, 0x97, 0x50, 0x3e, 0x36, 0xc9, 0x9d, 0xc3, 0x23,
    0x83, 0xeb, 0x8f, 0xe7, 0x42, 0xc4, 0xca, 0xd4, 0xff, 0x00, 0xdb, 0x21, 0xac, 0x6f, 0xb2, 0xf7,
    0xb5, 0xf8, 0x97, 0xbd, 0xb7, 0x4d, 0x2f, 0xea, 0x16, 0xdf, 0xdd, 0x67, 0xff, 0xd9,
};

TS_TEST(test_sniff)
{
    int n;
    unsigned char *px = make_ui(16, 16, 0), *png = to_png(px, 16, 16, &n);
    TS_CHECK_EQ_STR(ts_image_sniff(png, (size_t)n), "image/png");
    TS_CHECK_EQ_STR(ts_image_sniff("\xff\xd8\xff\xe0", 4), "image/jpeg");
    TS_CHECK_EQ_STR(ts_image_sniff("RIFF\0\0\0\0WEBPVP8L", 16), "image/webp");
    TS_CHECK(ts_image_sniff("GIF89a", 6) == NULL);
    TS_CHECK(ts_image_sniff(png, 7) == NULL);
    TS_CHECK(ts_image_webp_available() == 1);
    free(px); STBIW_FREE(png);
}

TS_TEST(test_webp_lossless_exact)
{
    int w = 320, h = 200, n, alpha;
    for (alpha = 0; alpha < 2; alpha++) {
        unsigned char *px = make_ui(w, h, alpha), *png = to_png(px, w, h, &n), *dec;
        ts_blob out;
        ts_image_info info;
        ts_webp_options o;
        int ww = 0, hh = 0;
        memset(&o, 0, sizeof o);
        o.verify = 1;
        TS_CHECK_OK(ts_image_to_webp(png, (size_t)n, &o, NULL, &out, &info));
        TS_CHECK_EQ_STR(info.format, "png");
        TS_CHECK_EQ_INT(info.width, w);
        TS_CHECK_EQ_INT(info.height, h);
        TS_CHECK_EQ_INT(info.has_alpha, alpha);
        TS_CHECK_EQ_STR(ts_image_sniff(out.data, out.len), "image/webp");
        TS_CHECK(out.len < (size_t)n);   /* smaller than the PNG */
        dec = WebPDecodeRGBA((const uint8_t *)out.data, out.len, &ww, &hh);
        TS_CHECK(dec != NULL && ww == w && hh == h);
        TS_CHECK(dec && memcmp(dec, px, (size_t)w * (size_t)h * 4) == 0); /* every pixel */
        WebPFree(dec);
        ts_blob_free(&out);
        /* NULL options: the same defaults */
        TS_CHECK_OK(ts_image_to_webp(png, (size_t)n, NULL, NULL, &out, NULL));
        ts_blob_free(&out);
        free(px); STBIW_FREE(png);
    }
}

TS_TEST(test_webp_lossy_and_jpeg)
{
    int w = 256, h = 160, n;
    unsigned char *px = make_ui(w, h, 0), *png = to_png(px, w, h, &n);
    ts_blob out;
    ts_image_info info;
    ts_webp_options o;
    memset(&o, 0, sizeof o);
    o.lossy = 1; o.quality = 80; o.verify = 1;
    TS_CHECK_OK(ts_image_to_webp(png, (size_t)n, &o, NULL, &out, &info));
    TS_CHECK_EQ_STR(ts_image_sniff(out.data, out.len), "image/webp");
    ts_blob_free(&out);
    TS_CHECK_OK(ts_image_to_webp(test_jpeg, sizeof test_jpeg, &o, NULL, &out, &info));
    TS_CHECK_EQ_STR(info.format, "jpeg");
    TS_CHECK_EQ_INT(info.width, 48);
    TS_CHECK_EQ_INT(info.height, 32);
    ts_blob_free(&out);
    /* lossless from a JPEG is exact to the decoded JPEG */
    memset(&o, 0, sizeof o);
    o.verify = 1;
    TS_CHECK_OK(ts_image_to_webp(test_jpeg, sizeof test_jpeg, &o, NULL, &out, &info));
    ts_blob_free(&out);
    /* truncated JPEGs: refused or decoded, never a crash */
    {
        size_t cut;
        for (cut = 0; cut < sizeof test_jpeg; cut += 7) {
            ts_result r = ts_image_to_webp(test_jpeg, cut, NULL, NULL, &out, NULL);
            TS_CHECK(r == TS_OK || r == TS_E_CORRUPT || r == TS_E_INVALID);
            ts_blob_free(&out);
        }
    }
    free(px); STBIW_FREE(png);
}

TS_TEST(test_webp_rejects)
{
    int w = 64, h = 48, n;
    unsigned char *px = make_ui(w, h, 0), *png = to_png(px, w, h, &n);
    ts_blob out;
    ts_webp_options o;
    size_t cut;
    memset(&o, 0, sizeof o);
    TS_CHECK_EQ_INT(ts_image_to_webp("GIF89a....", 10, NULL, NULL, &out, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_image_to_webp("", 0, NULL, NULL, &out, NULL), TS_E_INVALID);
    o.max_pixels = 1000;                    /* 64x48 = 3072 */
    TS_CHECK_EQ_INT(ts_image_to_webp(png, (size_t)n, &o, NULL, &out, NULL), TS_E_CORRUPT);
    o.max_pixels = 0;
    o.max_input = 100;
    TS_CHECK_EQ_INT(ts_image_to_webp(png, (size_t)n, &o, NULL, &out, NULL), TS_E_CORRUPT);
    /* every truncation of a PNG fails cleanly (or still decodes, when only
       the trailing chunks are cut) */
    for (cut = 0; cut < (size_t)n; cut++) {
        ts_result r = ts_image_to_webp(png, cut, NULL, NULL, &out, NULL);
        TS_CHECK(r == TS_E_CORRUPT || r == TS_E_INVALID || (r == TS_OK && cut >= (size_t)n - 12));
        ts_blob_free(&out);
    }
    /* the WebP result itself, truncated, is input the library refuses */
    TS_CHECK_OK(ts_image_to_webp(png, (size_t)n, NULL, NULL, &out, NULL));
    {
        ts__buf b;
        ts_allocator a;
        memset(&a, 0, sizeof a);
        ts__buf_init(&b, &a);
        ts__buf_append(&b, out.data, out.len / 2);
        TS_CHECK_EQ_INT(ts__webp_verify(&b, px, w, h, 1, &a), TS_E_CORRUPT);
        b.len = 0;
        ts__buf_append(&b, out.data, out.len);
        TS_CHECK_OK(ts__webp_verify(&b, px, w, h, 1, &a));
        ts__buf_free(&b);
        {
            ts_blob again;
            TS_CHECK_EQ_INT(ts_image_to_webp(out.data, out.len, NULL, NULL, &again, NULL), TS_E_INVALID);
        }
    }
    ts_blob_free(&out);
    free(px); STBIW_FREE(png);
}

/* A PNG whose header says 16x16 RGBA (1 KiB of pixels) but whose IDAT
   inflates to 32 MiB: refused by the guard, before stb's loader (which
   would grow its buffer to hold it all) sees it. */
TS_TEST(test_png_bomb)
{
    static const unsigned char sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    unsigned char ihdr[13], *zeros, *z, *png;
    int zlen = 0;
    size_t big = (size_t)(ts_test_small() ? 8 : 32) << 20, n = 0;
    ts_blob out;
    ts_image_info info;
    uint32_t crc;
    zeros = (unsigned char *)calloc(1, big);
    z = stbi_zlib_compress(zeros, (int)big, &zlen, 5);
    png = (unsigned char *)malloc(8 + 25 + 12 + (size_t)zlen + 12);
    memcpy(png, sig, 8); n = 8;
    ts__put_le(ihdr, 0, 4);
    ihdr[0] = 0; ihdr[1] = 0; ihdr[2] = 0; ihdr[3] = 16;       /* width 16, big endian */
    ihdr[4] = 0; ihdr[5] = 0; ihdr[6] = 0; ihdr[7] = 16;       /* height 16 */
    ihdr[8] = 8; ihdr[9] = 6; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
#define PUT_CHUNK(type, data, len)                                                 \
    do {                                                                          \
        png[n] = (unsigned char)((len) >> 24); png[n + 1] = (unsigned char)((len) >> 16); \
        png[n + 2] = (unsigned char)((len) >> 8); png[n + 3] = (unsigned char)(len); \
        memcpy(png + n + 4, type, 4);                                             \
        if (len) memcpy(png + n + 8, data, (size_t)(len));                        \
        crc = ts_crc32(0, png + n + 4, 4 + (size_t)(len));                        \
        png[n + 8 + (len)] = (unsigned char)(crc >> 24); png[n + 9 + (len)] = (unsigned char)(crc >> 16); \
        png[n + 10 + (len)] = (unsigned char)(crc >> 8); png[n + 11 + (len)] = (unsigned char)crc; \
        n += 12 + (size_t)(len);                                                  \
    } while (0)
    PUT_CHUNK("IHDR", ihdr, 13);
    PUT_CHUNK("IDAT", z, zlen);
    PUT_CHUNK("IEND", "", 0);
#undef PUT_CHUNK
    TS_CHECK(n < big / 50);
    TS_CHECK_EQ_INT(ts_image_to_webp(png, n, NULL, NULL, &out, &info), TS_E_CORRUPT);
    TS_CHECK(out.data == NULL);
    free(zeros); free(png); STBIW_FREE(z);
}

int main(void)
{
    TS_RUN(test_crc32_vectors);
    TS_RUN(test_builtin_lookup);
    TS_RUN(test_roundtrip_every_codec);
    TS_RUN(test_deflate_levels_and_ratio);
    TS_RUN(test_frame_header);
    TS_RUN(test_frame_truncated_and_flipped);
    TS_RUN(test_deflate_bomb);
    TS_RUN(test_decode_oom_sweep);
    TS_RUN(test_user_codec_plugs_in);
    TS_RUN(test_read_twin);
    TS_RUN(test_sniff);
    TS_RUN(test_webp_lossless_exact);
    TS_RUN(test_webp_lossy_and_jpeg);
    TS_RUN(test_webp_rejects);
    TS_RUN(test_png_bomb);
    return ts_test_report("codecs");
}
