/* Tests of the base section: results, allocator plumbing, buffers, the hash
   map, UTF-8 and name validation. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

/* A counting allocator that can fail the Nth allocation. */
typedef struct counting_alloc {
    long allocs, frees, fail_at;
    size_t live_bytes;
} counting_alloc;

static void *ca_alloc(size_t n, void *u)
{
    counting_alloc *c = (counting_alloc *)u;
    if (c->fail_at && ++c->allocs == c->fail_at) return NULL;
    if (!c->fail_at) c->allocs++;
    c->live_bytes += n;
    return malloc(n);
}
static void *ca_realloc(void *p, size_t o, size_t n, void *u)
{
    counting_alloc *c = (counting_alloc *)u;
    void *q;
    if (c->fail_at && ++c->allocs == c->fail_at) return NULL;
    if (!c->fail_at) c->allocs++;
    q = realloc(p, n);
    if (q) c->live_bytes = c->live_bytes - o + n;
    return q;
}
static void ca_free(void *p, size_t n, void *u)
{
    counting_alloc *c = (counting_alloc *)u;
    c->frees++;
    c->live_bytes -= n;
    free(p);
}

TS_TEST(result_strings)
{
    TS_CHECK_EQ_STR(ts_result_str(TS_OK), "ok");
    TS_CHECK_EQ_STR(ts_result_str(TS_E_CORRUPT), "corrupt or malformed data");
    TS_CHECK_EQ_STR(ts_result_str((ts_result)-9999), "unknown result code");
    TS_CHECK_EQ_STR(ts_version(), TASKSTORE_VERSION_STRING);
    TS_CHECK(TS_E_IO <= -100 && TS_E_IO > -200);
    TS_CHECK(TS_E_CORRUPT <= -200 && TS_E_CORRUPT > -300);
    TS_CHECK(TS_E_LOCKED <= -300);
}

static int logged_code, logged_line;
static char logged_msg[256];
static void test_log(void *u, ts_log_level lv, ts_result code, const char *msg, int line)
{
    (void)u; (void)lv;
    logged_code = code; logged_line = line;
    snprintf(logged_msg, sizeof logged_msg, "%s", msg ? msg : "");
}

TS_TEST(fail_records_and_logs)
{
    ts__env env;
    ts_logger lg;
    ts_error_info info;
    lg.log_fn = test_log; lg.user = NULL;
    ts__env_init(&env, NULL, &lg);
    TS_CHECK_EQ_INT(TS__FAIL(&env, TS_E_CORRUPT, "bad file %s at %d", "x/y.json", 12), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(ts__env_last_error(&env, &info), TS_E_CORRUPT);
    TS_CHECK_EQ_STR(info.message, "bad file x/y.json at 12");
    TS_CHECK(info.line > 0);
    TS_CHECK_EQ_INT(logged_code, TS_E_CORRUPT);
    TS_CHECK_EQ_STR(logged_msg, "bad file x/y.json at 12");
    TS_CHECK_EQ_INT(logged_line, info.line);
}

TS_TEST(buffers)
{
    counting_alloc c = {0, 0, 0, 0};
    ts_allocator a;
    ts__buf b;
    int i;
    a.alloc_fn = ca_alloc; a.realloc_fn = ca_realloc; a.free_fn = ca_free; a.user = &c;
    ts__buf_init(&b, &a);
    for (i = 0; i < 1000; i++) TS_CHECK_OK(ts__buf_printf(&b, "%d,", i));
    TS_CHECK(b.len > 1000);
    TS_CHECK(memcmp(b.data, "0,1,2,", 6) == 0);
    TS_CHECK_EQ_INT(b.data[b.len], 0);
    TS_CHECK_OK(ts__buf_putc(&b, 'x'));
    TS_CHECK_OK(ts__buf_puts(&b, "yz"));
    TS_CHECK(memcmp(b.data + b.len - 3, "xyz", 3) == 0);
    ts__buf_free(&b);
    TS_CHECK_EQ_INT(c.live_bytes, 0);
    /* failure leaves the buffer as it was */
    c.fail_at = 2; c.allocs = 0;
    ts__buf_init(&b, &a);
    TS_CHECK_OK(ts__buf_append(&b, "abc", 3));
    TS_CHECK_EQ_INT(ts__buf_reserve(&b, 1000), TS_E_NOMEM);
    TS_CHECK_EQ_INT(b.len, 3);
    TS_CHECK(memcmp(b.data, "abc", 4) == 0);
    ts__buf_free(&b);
    TS_CHECK_EQ_INT(c.live_bytes, 0);
    /* overflowing sizes are refused, not wrapped */
    ts__buf_init(&b, NULL);
    TS_CHECK_EQ_INT(ts__buf_reserve(&b, (size_t)-1), TS_E_NOMEM);
    {
        size_t out = 7;
        TS_CHECK(!ts__size_add((size_t)-1, 1, &out));
        TS_CHECK(!ts__size_mul((size_t)-1 / 2 + 1, 2, &out));
        TS_CHECK_EQ_INT(out, 7);
        TS_CHECK(ts__size_mul(3, 4, &out) && out == 12);
    }
}

/* The map against a trivially correct model: arrays and linear search. */
TS_TEST(map_against_model)
{
    enum { KEYS = 600, OPS = 60000 };
    static char present[KEYS];
    static uint64_t model[KEYS];
    counting_alloc c = {0, 0, 0, 0};
    ts_allocator a;
    ts__map m;
    uint64_t rng = 12345, v;
    int i, k;
    char key[32];
    a.alloc_fn = ca_alloc; a.realloc_fn = ca_realloc; a.free_fn = ca_free; a.user = &c;
    memset(present, 0, sizeof present);
    ts__map_init(&m, &a);
    for (i = 0; i < OPS; i++) {
        int op, n;
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        k = (int)((rng >> 33) % KEYS);
        op = (int)((rng >> 20) % 3);
        n = snprintf(key, sizeof key, "screenshots:s%d:%d", k % 37, k);
        if (op == 0) {
            TS_CHECK_OK(ts__map_put(&m, key, (size_t)n, rng));
            present[k] = 1; model[k] = rng;
        } else if (op == 1) {
            TS_CHECK_EQ_INT(ts__map_del(&m, key, (size_t)n), present[k]);
            present[k] = 0;
        } else {
            int found = ts__map_get(&m, key, (size_t)n, &v);
            TS_CHECK_EQ_INT(found, present[k]);
            if (found) TS_CHECK(v == model[k]);
        }
    }
    {
        size_t pos = 0, count = 0, want = 0;
        const ts__map_slot *s;
        while ((s = ts__map_next(&m, &pos)) != NULL) count++;
        for (k = 0; k < KEYS; k++) want += (size_t)present[k];
        TS_CHECK_EQ_INT(count, want);
        TS_CHECK_EQ_INT(m.count, want);
    }
    /* binary keys with NUL bytes (32-byte digests) */
    {
        unsigned char d1[32], d2[32];
        memset(d1, 0, 32); memset(d2, 0, 32); d2[31] = 1;
        TS_CHECK_OK(ts__map_put(&m, d1, 32, 1));
        TS_CHECK_OK(ts__map_put(&m, d2, 32, 2));
        TS_CHECK(ts__map_get(&m, d1, 32, &v) && v == 1);
        TS_CHECK(ts__map_get(&m, d2, 32, &v) && v == 2);
    }
    ts__map_free(&m);
    TS_CHECK_EQ_INT(c.live_bytes, 0);
}

/* Fails allocation n for every n of a workload: each failure is reported,
   nothing already in the map is lost, nothing leaks. */
static long map_workload(long fail_at, int *failed, size_t *live_after)
{
    counting_alloc c = {0, 0, 0, 0};
    ts_allocator a;
    ts__map m;
    int i;
    char key[16];
    c.fail_at = fail_at;
    a.alloc_fn = ca_alloc; a.realloc_fn = ca_realloc; a.free_fn = ca_free; a.user = &c;
    ts__map_init(&m, &a);
    *failed = 0;
    for (i = 0; i < 30; i++) {
        int len = snprintf(key, sizeof key, "k%d", i);
        if (ts__map_put(&m, key, (size_t)len, (uint64_t)i) != TS_OK) *failed = 1;
    }
    for (i = 0; i < 30; i++) {
        int len = snprintf(key, sizeof key, "k%d", i);
        uint64_t v;
        if (ts__map_get(&m, key, (size_t)len, &v) && v != (uint64_t)i) *failed = 2;
    }
    ts__map_free(&m);
    *live_after = c.live_bytes;
    return c.allocs;
}

TS_TEST(map_out_of_memory)
{
    long n, total;
    int failed;
    size_t live;
    total = map_workload(0, &failed, &live);
    TS_CHECK_EQ_INT(failed, 0);
    TS_CHECK(total > 30);
    for (n = 1; n <= total; n++) {
        map_workload(n, &failed, &live);
        TS_CHECK_EQ_INT(failed, 1);
        TS_CHECK_EQ_INT(live, 0);
    }
}

TS_TEST(utf8)
{
    uint32_t cp;
    unsigned char out[4];
    uint32_t samples[] = {0, 0x41, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF};
    size_t i;
    for (i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        int n = ts__utf8_encode(samples[i], out);
        TS_CHECK_EQ_INT(ts__utf8_decode(out, (size_t)n, &cp), n);
        TS_CHECK(cp == samples[i]);
    }
    TS_CHECK_EQ_INT(ts__utf8_decode((const unsigned char *)"\xC0\x80", 2, &cp), 0);   /* overlong NUL */
    TS_CHECK_EQ_INT(ts__utf8_decode((const unsigned char *)"\xE0\x80\x80", 3, &cp), 0);
    TS_CHECK_EQ_INT(ts__utf8_decode((const unsigned char *)"\xED\xA0\x80", 3, &cp), 0); /* surrogate */
    TS_CHECK_EQ_INT(ts__utf8_decode((const unsigned char *)"\xF4\x90\x80\x80", 4, &cp), 0); /* > 10FFFF */
    TS_CHECK_EQ_INT(ts__utf8_decode((const unsigned char *)"\xE2\x82", 2, &cp), 0); /* truncated */
    TS_CHECK_EQ_INT(ts__utf8_decode((const unsigned char *)"\x80", 1, &cp), 0);
    TS_CHECK(ts__utf8_valid((const unsigned char *)"h\xC3\xA9llo \xE4\xB8\xAD \xF0\x9F\x98\x80", 16));
    TS_CHECK(!ts__utf8_valid((const unsigned char *)"ab\xFF", 3));
}

TS_TEST(names_and_paths)
{
    char longid[200];
    memset(longid, 'a', sizeof longid);
    TS_CHECK(ts__valid_id("session-1.a_b", 13));
    TS_CHECK(ts__valid_id("-leading-dash", 13));
    TS_CHECK(ts__valid_id(longid, 128));
    TS_CHECK(!ts__valid_id(longid, 129));
    TS_CHECK(!ts__valid_id("", 0));
    TS_CHECK(!ts__valid_id(".", 1));
    TS_CHECK(!ts__valid_id("..", 2));
    TS_CHECK(ts__valid_id("...", 3));
    TS_CHECK(!ts__valid_id("a/b", 3));
    TS_CHECK(!ts__valid_id("a\\b", 3));
    TS_CHECK(!ts__valid_id("a\0b", 3));
    TS_CHECK(!ts__valid_id("caf\xC3\xA9", 5));
    TS_CHECK(!ts__valid_id("a b", 3));

    TS_CHECK(ts__valid_hash_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 64));
    TS_CHECK(!ts__valid_hash_hex("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", 64));
    TS_CHECK(!ts__valid_hash_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85", 63));
    TS_CHECK(!ts__valid_hash_hex("../c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 64));

    TS_CHECK(ts__valid_rel_path("sessions-chunked/s1/metadata.json", 33));
    TS_CHECK(!ts__valid_rel_path("/etc/passwd", 11));
    TS_CHECK(!ts__valid_rel_path("a/../b", 6));
    TS_CHECK(!ts__valid_rel_path("..", 2));
    TS_CHECK(!ts__valid_rel_path("a//b", 4));
    TS_CHECK(!ts__valid_rel_path("a/", 2));
    TS_CHECK(!ts__valid_rel_path("a/./b", 5));
    TS_CHECK(!ts__valid_rel_path("a\\b", 3));
    TS_CHECK(!ts__valid_rel_path("C:x", 3));
    TS_CHECK(!ts__valid_rel_path("a\nb", 3));
    TS_CHECK(!ts__valid_rel_path("", 0));
    TS_CHECK(ts__valid_rel_path("a/..b/c..", 9));
}

TS_TEST(hex)
{
    unsigned char in[3] = {0x00, 0xAB, 0xFF}, back[3];
    char out[7];
    ts__hex_encode(in, 3, out);
    TS_CHECK_EQ_STR(out, "00abff");
    TS_CHECK(ts__hex_decode(out, 3, back) && memcmp(in, back, 3) == 0);
    TS_CHECK(!ts__hex_decode("0g", 1, back));
}

int main(void)
{
    TS_RUN(result_strings);
    TS_RUN(fail_records_and_logs);
    TS_RUN(buffers);
    TS_RUN(map_against_model);
    TS_RUN(map_out_of_memory);
    TS_RUN(utf8);
    TS_RUN(names_and_paths);
    TS_RUN(hex);
    return ts_test_report("base");
}
