/* fuzz/fuzz_inflate.c: the read side of compressed files - the ".z" frame
 * parser, stb's inflate under the frame's size bound, the CRC check and the
 * twin reader the store's read path calls.
 *
 * Byte 0 picks the mode:
 *   even: the rest is a whole .z file; it is decoded (limit 1 MiB) directly
 *         and through ts__codec_read_twin over an in-memory vtable;
 *   odd:  the rest is a raw deflate stream wrapped in a valid header whose
 *         claimed size comes from bytes 1-2 (so inflate itself is reached,
 *         not just the header CRC).
 * Whatever decodes must be the claimed size, pass the CRC, and re-encode
 * and decode to the same bytes; failures must be TS_E_CORRUPT (or
 * TS_E_NOTIMPL / TS_E_VERSION for a codec id / version this build lacks),
 * leave nothing allocated and return no bytes. abort() otherwise.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -DTASKSTORE_STB_ZLIB -DTASKSTORE_WEBP \
 *       fuzz/fuzz_inflate.c -o build/fuzz_inflate -lwebp -lm
 *   build/fuzz_inflate -dict=fuzz/inflate.dict fuzz/corpus/inflate
 * without libFuzzer: add fuzz/replay_main.c and drop "fuzzer," above.
 */
#ifndef TASKSTORE_STB_ZLIB
#define TASKSTORE_STB_ZLIB
#endif
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "fuzz_inflate: check failed: %s (line %d)\n", #x, __LINE__); abort(); } } while (0)
#define LIMIT ((size_t)1 << 20)

static void check_decoded(const ts_blob *d)
{
    ts_codec c;
    ts_blob f, d2;
    CHECK(ts_codec_builtin("deflate", &c) == TS_OK);
    CHECK(ts_frame_encode(&c, 1, d->data, d->len, NULL, &f) == TS_OK);
    CHECK(ts_frame_decode(NULL, f.data, f.len, LIMIT, NULL, &d2) == TS_OK);
    CHECK(d2.len == d->len && (d->len == 0 || memcmp(d2.data, d->data, d->len) == 0));
    ts_blob_free(&f);
    ts_blob_free(&d2);
}

static void decode_one(const uint8_t *p, size_t n)
{
    ts_blob d;
    ts_frame_info fi;
    ts_result r = ts_frame_decode(NULL, p, n, LIMIT, NULL, &d), ri;
    ri = ts_frame_info_get(p, n, &fi);
    if (r == TS_OK) {
        CHECK(ri == TS_OK && fi.original_size == d.len && d.len <= LIMIT);
        CHECK(ts_crc32(0, d.data, d.len) == fi.crc);
        CHECK(((const char *)d.data)[d.len] == 0);
        check_decoded(&d);
        ts_blob_free(&d);
    } else {
        CHECK(r == TS_E_CORRUPT || r == TS_E_NOTIMPL || r == TS_E_VERSION);
        CHECK(d.data == NULL && d.len == 0);
    }
}

static void twin_one(const uint8_t *p, size_t n)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts__env env;
    ts__buf out;
    ts_result r;
    if (ts_io_mem_create(NULL, &mem) != TS_OK) return;
    ts_io_mem_vtable(mem, &io);
    ts__env_init(&env, NULL, NULL);
    ts__buf_init(&out, NULL);
    CHECK(ts_io_mem_put(mem, "d/f.json.z", p, n) == TS_OK);
    r = ts__codec_read_twin(NULL, NULL, &io, &env, "d/f.json", LIMIT, &out);
    if (r == TS_OK) CHECK(out.len <= LIMIT);
    else CHECK(out.len == 0 && strstr(env.last.message, "d/f.json.z") != NULL);
    ts__buf_free(&out);
    ts_io_mem_destroy(mem);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if ((data[0] & 1) == 0) {
        decode_one(data + 1, size - 1);
        twin_one(data + 1, size - 1);
    } else if (size >= 3) {
        /* raw deflate stream under a header that claims bytes 1-2 * 16 */
        size_t claimed = ((size_t)data[1] | (size_t)data[2] << 8) * 16, n = size - 3;
        unsigned char *f = (unsigned char *)malloc(TS_FRAME_HEADER_SIZE + n + 1);
        if (!f) return 0;
        f[0] = 0x89; f[1] = 'T'; f[2] = 'S'; f[3] = 'Z'; f[4] = 1; f[5] = TS_CODEC_ID_DEFLATE;
        ts__put_le(f + 6, TS_FRAME_HEADER_SIZE, 2);
        ts__put_le(f + 8, claimed, 8);
        ts__put_le(f + 16, 0, 4); /* unknown: inflate runs, then the CRC decides */
        ts__put_le(f + 20, ts_crc32(0, f, 20), 4);
        if (n) memcpy(f + TS_FRAME_HEADER_SIZE, data + 3, n);
        decode_one(f, TS_FRAME_HEADER_SIZE + n);
        {
            /* the codec directly: exactly `claimed` bytes or TS_E_CORRUPT */
            const ts_codec *c = ts_codec_set_find_id(NULL, TS_CODEC_ID_DEFLATE);
            unsigned char *dst = (unsigned char *)malloc(claimed + 1);
            if (dst) {
                ts_result r = c->decompress_fn(c->user, data + 3, n, dst, claimed);
                CHECK(r == TS_OK || r == TS_E_CORRUPT);
                free(dst);
            }
        }
        free(f);
    }
    return 0;
}
