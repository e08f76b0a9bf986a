/* fuzz_cas: arbitrary bytes as a CA object's metadata.json and as a legacy
   attachment's base64 text.

   1. The input becomes metadata.json of the object named by the SHA-256 of
      the empty string (its data.bin is there and valid), then every CA call
      that reads metadata runs over it: stat, load, refs, ref_add/remove,
      a duplicate save, verify, GC, repair, stats. Oracles: no crash/leak,
      only documented codes, and a successful load returns exactly the
      empty content (bytes never mismatch their name).
   2. The input is imported as base64. Oracle: the decoder is strict, so an
      accepted input minus whitespace (and a data: prefix) must equal the
      canonical encoding of what it decoded to, and the stored object loads
      back to those bytes. */
#define TASKSTORE_MAX_ATTACHMENT_BYTES ((uint64_t)1 << 20)
#define TASKSTORE_MAX_CAS_META_BYTES ((uint64_t)1 << 16)
#define TASKSTORE_MAX_JSON_NODES ((size_t)1 << 14)
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>

#define EMPTY_HASH "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void check(int cond)
{
    if (!cond) abort();
}

static int allowed(ts_result r)
{
    return r == TS_OK || r == TS_E_CORRUPT || r == TS_E_NOTFOUND || r == TS_E_TOOBIG ||
           r == TS_E_STATE || r == TS_DONE;
}

static int count_cb(void *user, const ts_cas_ref *ref)
{
    (void)ref;
    (*(int *)user)++;
    return 0;
}

static int never_referenced(void *user, const char *hash)
{
    (void)user; (void)hash;
    return 0;
}

static void fuzz_metadata(const uint8_t *data, size_t size)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas_config cfg;
    ts_cas *cas = NULL;
    ts_cas_info info;
    ts_blob blob;
    char hash[TS_CAS_HASH_BUF];
    unsigned char buf[16];
    size_t got = 0;
    uint64_t rc = 0;
    int n = 0;
    ts_cas_ref ref;
    ts_cas_stats st;
    ts_cas_verify_report vr;
    ts_cas_repair_report rr;
    ts_cas_gc_progress gp;
    ts_result r;

    if (ts_io_mem_create(NULL, &mem) != TS_OK) return;
    ts_io_mem_vtable(mem, &io);
    ts_io_mem_put(mem, "attachments-ca/e3/" EMPTY_HASH "/data.bin", "", 0);
    ts_io_mem_put(mem, "attachments-ca/e3/" EMPTY_HASH "/metadata.json", data, size);
    memset(&cfg, 0, sizeof cfg);
    cfg.io = &io;
    if (ts_cas_open(&cfg, &cas) != TS_OK) { ts_io_mem_destroy(mem); return; }

    r = ts_cas_stat(cas, EMPTY_HASH, &info);
    check(allowed(r));
    if (r == TS_OK) check(strcmp(info.hash, EMPTY_HASH) == 0);
    r = ts_cas_load(cas, EMPTY_HASH, &blob, NULL);
    check(allowed(r));
    if (r == TS_OK) check(blob.len == 0);
    if (blob.data) ts__free(&blob.alloc, blob.data, blob.cap);
    r = ts_cas_load_into(cas, EMPTY_HASH, buf, sizeof buf, &got, NULL);
    check(allowed(r) || r == TS_E_RANGE);
    if (r == TS_OK) check(got == 0);
    check(allowed(ts_cas_refs(cas, EMPTY_HASH, count_cb, &n)));
    check(allowed(ts_cas_ref_count(cas, EMPTY_HASH, &rc)));
    check(allowed(ts_cas_verify_all(cas, NULL, NULL, &vr)));
    check(allowed(ts_cas_stats_get(cas, 1, &st)));
    ref.session_id = "fuzz-session";
    ref.attachment_id = "a1";
    ref.added_at_ms = 5;
    check(allowed(ts_cas_ref_add(cas, EMPTY_HASH, &ref)));
    check(allowed(ts_cas_ref_remove(cas, EMPTY_HASH, "fuzz-session", "a1")));
    check(allowed(ts_cas_repair_begin(cas)));
    check(allowed(ts_cas_repair_add(cas, EMPTY_HASH, &ref)));
    check(allowed(ts_cas_repair_finish(cas, 7, NULL, NULL, &rr)));
    /* after a repair the object is consistent (or was left as corrupt) */
    r = ts_cas_ref_count(cas, EMPTY_HASH, &rc);
    check(allowed(r));
    /* a duplicate save always ends with a readable object */
    r = ts_cas_save(cas, "", 0, "text/plain", &ref, 9, hash);
    check(r == TS_OK);
    check(ts_cas_verify(cas, EMPTY_HASH) == TS_OK);
    check(ts_cas_gc(cas, (uint64_t)1 << 40, never_referenced, NULL, NULL, NULL, &gp) == TS_OK);
    ts_cas_close(cas);
    ts_io_mem_destroy(mem);
}

static const char b64_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void fuzz_base64(const uint8_t *data, size_t size)
{
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_cas_config cfg;
    ts_cas *cas = NULL;
    ts__b64_info bi;
    char hash[TS_CAS_HASH_BUF], expect[TS_CAS_HASH_BUF];
    unsigned char *out, digest[32];
    ts_result r;
    int valid = ts__base64_check((const char *)data, size, &bi);

    if (valid) {
        /* canonical: re-encoding gives the input back, whitespace aside */
        size_t i, j = bi.body, o;
        out = (unsigned char *)malloc(bi.out_len + 1);
        if (!out) return;
        ts__base64_decode((const char *)data, size, &bi, out);
        for (o = 0; o < bi.out_len; o += 3) {
            uint32_t v = (uint32_t)out[o] << 16;
            size_t k = bi.out_len - o;
            char q[4];
            if (k > 1) v |= (uint32_t)out[o + 1] << 8;
            if (k > 2) v |= out[o + 2];
            q[0] = b64_alpha[v >> 18];
            q[1] = b64_alpha[(v >> 12) & 63];
            q[2] = k > 1 ? b64_alpha[(v >> 6) & 63] : '=';
            q[3] = k > 2 ? b64_alpha[v & 63] : '=';
            for (i = 0; i < 4; i++) {
                while (j < size && (data[j] == ' ' || data[j] == '\t' || data[j] == '\r' || data[j] == '\n')) j++;
                check(j < size && data[j] == (uint8_t)q[i]);
                j++;
            }
        }
        while (j < size && (data[j] == ' ' || data[j] == '\t' || data[j] == '\r' || data[j] == '\n')) j++;
        check(j == size);
        ts_sha256_buffer(out, bi.out_len, digest);
        ts_sha256_hex(digest, expect);
    } else {
        check(bi.why != NULL && bi.bad_at <= size);
        out = NULL;
    }

    if (ts_io_mem_create(NULL, &mem) != TS_OK) { free(out); return; }
    ts_io_mem_vtable(mem, &io);
    memset(&cfg, 0, sizeof cfg);
    cfg.io = &io;
    if (ts_cas_open(&cfg, &cas) == TS_OK) {
        r = ts_cas_import_base64(cas, "fuzz-att", (const char *)data, size, "image/png", NULL, 1, hash);
        if (!valid) {
            check(r == TS_E_CORRUPT);
        } else if (r == TS_OK) {
            ts_blob blob;
            check(strcmp(hash, expect) == 0);
            check(ts_cas_load(cas, hash, &blob, NULL) == TS_OK);
            check(blob.len == bi.out_len && (!blob.len || memcmp(blob.data, out, blob.len) == 0));
            ts__free(&blob.alloc, blob.data, blob.cap);
        } else {
            check(r == TS_E_TOOBIG);
        }
        /* and the data: prefix path with the mime taken from it */
        r = ts_cas_import_base64(cas, "fuzz-att", (const char *)data, size, NULL, NULL, 1, hash);
        check(r == TS_OK || r == TS_E_CORRUPT || r == TS_E_TOOBIG);
        ts_cas_close(cas);
    }
    ts_io_mem_destroy(mem);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_metadata(data, size);
    fuzz_base64(data, size);
    return 0;
}
