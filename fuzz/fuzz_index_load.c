/* fuzz/fuzz_index_load.c: ts_index_load on hostile bytes. The first byte
 * picks the mode: odd = the rest is a payload, wrapped here in a header with
 * a correct checksum (so the fuzzer reaches the parser; bit 1 = extra text,
 * whose payload ends with the metadata parts); even = the rest is the whole
 * buffer as found on disk. Invariants: load fails with
 * TS_E_CORRUPT/TS_E_VERSION, or the index verifies clean, saves back to the
 * very same bytes, and answers queries. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ts_index *ix;
    unsigned char *buf;
    size_t len;
    ts_result r;
    if (size < 1) return 0;
    if (ts_index_create(NULL, &ix) != TS_OK) abort();
    buf = (unsigned char *)malloc(size + 24);
    if (!buf) abort();
    if (data[0] & 1) {
        ts__ix_crc crc;
        len = size - 1 + 24;
        memcpy(buf, "TSIX", 4);
        /* extra text (flag 1) is format version 2, the rest version 1 */
        ts__ix_put_u32le(buf + 4, (data[0] >> 1) & 1 ? 2u : 1u);
        ts__ix_put_u32le(buf + 8, (uint32_t)(data[0] >> 1) & 1);
        ts__ix_put_u32le(buf + 12, (uint32_t)(size - 1));
        ts__ix_put_u32le(buf + 16, 0);
        memcpy(buf + 24, data + 1, size - 1);
        ts__ix_crc_init(&crc);
        ts__ix_put_u32le(buf + 20, ts__ix_crc_update(&crc, ts__ix_crc_update(&crc, 0, buf, 20), buf + 24, size - 1));
    } else {
        len = size - 1;
        memcpy(buf, data + 1, len);
    }
    r = ts_index_load(ix, buf, len);
    if (r == TS_OK) {
        void *out;
        size_t n;
        ts_query q;
        ts_index_hits h;
        static const char *const texts[] = { NULL, "a*", "ab", "x* y" };
        size_t i;
        if (ts_index_verify(ix, 0, NULL) != TS_OK) abort();
        if (ts_index_save(ix, &out, &n) != TS_OK) abort();
        if (n != len || memcmp(out, buf, n) != 0) abort();
        ts_index_free_buffer(ix, out, n);
        memset(&q, 0, sizeof q);
        for (i = 0; i < 4; i++) {
            q.text = texts[i];
            q.op = (int)(i & 1);
            q.rank_bm25 = i == 1;
            q.limit = i * 2;
            q.has_from = i == 2; q.from_ms = -1000;
            if (ts_index_search(ix, &q, &h) != TS_OK) abort();
            ts_index_hits_free(&h);
        }
        if (ts_index_optimize(ix, 1) != TS_OK) abort();
        if (ts_index_verify(ix, 0, NULL) != TS_OK) abort();
    } else if (r != TS_E_CORRUPT && r != TS_E_VERSION) {
        abort();
    }
    free(buf);
    ts_index_destroy(ix);
    return 0;
}
