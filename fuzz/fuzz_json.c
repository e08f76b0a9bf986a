/* fuzz/fuzz_json.c: the JSON reader and writers.
 *
 * Any input must parse or fail with TS_E_CORRUPT / TS_E_TOOBIG, leaving the
 * doc empty. What parses must survive: write -> parse gives an equal tree,
 * writing that again gives the same bytes, pretty output and a clone agree,
 * and the streaming writer embeds it identically. abort() on a mismatch.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. fuzz/fuzz_json.c -o build/fuzz_json
 *   build/fuzz_json -dict=fuzz/json.dict fuzz/corpus/json
 * without libFuzzer:
 *   clang -g -O1 -fsanitize=address,undefined -I. fuzz/fuzz_json.c fuzz/replay_main.c -o build/replay_json
 *   build/replay_json fuzz/corpus/json
 */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "fuzz_json: check failed: %s (line %d)\n", #x, __LINE__); abort(); } } while (0)

static int same(const ts__buf *a, const ts__buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* Every member lookup finds the last member with that key. */
static void check_lookups(const ts__json *n, int depth)
{
    const ts__json *c;
    CHECK(depth <= TASKSTORE_MAX_JSON_DEPTH);
    for (c = ts__json_first(n); c; c = c->next) {
        if (ts__json_is_object(n)) {
            const ts__json *g = ts__json_get_n(n, c->key, c->key_len), *d;
            CHECK(g && g->key_len == c->key_len && memcmp(g->key, c->key, c->key_len) == 0);
            for (d = g->next; d; d = d->next)
                CHECK(!(d->key_len == c->key_len && memcmp(d->key, c->key, c->key_len) == 0));
            CHECK(c->key[c->key_len] == 0);
        } else {
            CHECK(c->key == NULL);
        }
        if (ts__json_is_string(c)) {
            size_t len;
            const char *s = ts__json_str(c, &len);
            CHECK(s && s[len] == 0 && ts__utf8_valid((const unsigned char *)s, len));
        }
        check_lookups(c, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ts__json_doc d1, d2;
    ts__json *r1, *r2, *copy;
    ts__buf w1, w2, w3;
    ts__env env;
    ts__jw jw;
    ts_result r;

    ts__env_init(&env, NULL, NULL);
    ts__json_doc_init(&d1, NULL);
    ts__json_doc_init(&d2, NULL);
    ts__buf_init(&w1, NULL); ts__buf_init(&w2, NULL); ts__buf_init(&w3, NULL);

    r = ts__json_parse(&d1, (const char *)data, size, &r1, &env, "fuzz.json");
    if (r != TS_OK) {
        CHECK(r == TS_E_CORRUPT || r == TS_E_TOOBIG);
        CHECK(r1 == NULL && d1.bytes == 0 && env.last.code == r);
        CHECK(strstr(env.last.message, "fuzz.json: ") == env.last.message);
        goto done;
    }
    CHECK(r1 != NULL);
    check_lookups(r1, 0);
    CHECK(ts__json_equal(r1, r1));

    /* compact: write, parse, compare, write again */
    CHECK(ts__json_write(&w1, r1, 0) == TS_OK);
    CHECK(ts__json_parse(&d2, (const char *)w1.data, w1.len, &r2, NULL, "w1") == TS_OK);
    CHECK(ts__json_equal(r1, r2));
    CHECK(ts__json_equal(r2, r1));
    CHECK(ts__json_diff(r1, r2, NULL) == 0);
    CHECK(ts__json_write(&w2, r2, 0) == TS_OK);
    CHECK(same(&w1, &w2));

    /* pretty: same tree, same compact text */
    CHECK(ts__json_write(&w3, r1, 1) == TS_OK);
    CHECK(ts__json_parse(&d2, (const char *)w3.data, w3.len, &r2, NULL, "w3") == TS_OK);
    CHECK(ts__json_equal(r1, r2));
    w2.len = 0;
    CHECK(ts__json_write(&w2, r2, 0) == TS_OK);
    CHECK(same(&w1, &w2));

    /* a deep copy into another doc, which outlives the first */
    copy = ts__json_clone(&d2, r1);
    CHECK(copy && ts__json_equal(copy, r1));
    ts__json_doc_free(&d1);
    w2.len = 0;
    CHECK(ts__json_write(&w2, copy, 0) == TS_OK);
    CHECK(same(&w1, &w2));

    /* edits: a new member makes a difference diff can name; removing it
       makes the trees equal again */
    if (ts__json_is_object(copy) && !ts__json_get_n(copy, "\x01" "fuzz", 5)) {
        ts__buf path;
        ts__buf_init(&path, NULL);
        CHECK(ts__json_object_set(&d2, copy, "\x01" "fuzz", 5, ts__json_new_int(&d2, 1)) == TS_OK);
        CHECK(!ts__json_equal(copy, r2));
        CHECK(ts__json_diff(r2, copy, &path) == 1);
        CHECK(path.len && strcmp((const char *)path.data, "[\"\\u0001fuzz\"]") == 0);
        CHECK(ts__json_object_remove(copy, "\x01" "fuzz") == 1);
        CHECK(ts__json_equal(copy, r2));
        path.len = 0;
        CHECK(ts__json_diff(r2, copy, &path) == 0 && path.len == 0);
        ts__buf_free(&path);
    }

    /* the streaming writer embeds the same text */
    w2.len = 0;
    ts__jw_init(&jw, &w2);
    ts__jw_begin_array(&jw);
    ts__jw_value(&jw, copy);
    ts__jw_end_array(&jw);
    CHECK(ts__jw_finish(&jw) == TS_OK);
    CHECK(w2.len == w1.len + 2 && memcmp(w2.data + 1, w1.data, w1.len) == 0);

done:
    ts__buf_free(&w1); ts__buf_free(&w2); ts__buf_free(&w3);
    ts__json_doc_free(&d1);
    ts__json_doc_free(&d2);
    return 0;
}
