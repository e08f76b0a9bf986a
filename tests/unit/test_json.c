/* tests/unit/test_json.c: the JSON section (arena DOM, reader, writers,
   equality/diff). Small limits for strings and nodes so the limit paths
   run fast; the depth limit keeps its default (64). */
#define TASKSTORE_MAX_JSON_STRING ((size_t)1 << 16)
#define TASKSTORE_MAX_JSON_NODES ((size_t)1 << 20)
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

#include <locale.h>
#include <math.h>

/* ---- helpers ---------------------------------------------------------------- */

/* Counting allocator that can fail the Nth allocation (realloc counts). */
typedef struct talloc {
    long count, fail_at, live;
    size_t live_bytes;
    int size_mismatch;
} talloc;

static void *t_alloc(size_t n, void *u)
{
    talloc *t = (talloc *)u;
    void *p;
    t->count++;
    if (t->fail_at && t->count == t->fail_at) return NULL;
    p = malloc(n + 16);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    t->live++; t->live_bytes += n;
    return (char *)p + 16;
}
static void t_free(void *p, size_t n, void *u)
{
    talloc *t = (talloc *)u;
    size_t was;
    if (!p) return;
    memcpy(&was, (char *)p - 16, sizeof was);
    if (was != n) t->size_mismatch++;
    t->live--; t->live_bytes -= was;
    free((char *)p - 16);
}
static void *t_realloc(void *p, size_t o, size_t n, void *u)
{
    talloc *t = (talloc *)u;
    void *q;
    t->count++;
    if (t->fail_at && t->count == t->fail_at) return NULL;
    q = t_alloc(n, u);
    t->count--;
    if (!q) return NULL;
    memcpy(q, p, o < n ? o : n);
    t_free(p, o, u);
    return q;
}
static ts_allocator talloc_make(talloc *t)
{
    ts_allocator a;
    memset(t, 0, sizeof *t);
    a.alloc_fn = t_alloc; a.realloc_fn = t_realloc; a.free_fn = t_free; a.user = t;
    return a;
}

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return rng_state = x;
}
static unsigned rndn(unsigned n) { return (unsigned)(rnd() % n); }

static ts_result parse_str(ts__json_doc *doc, const char *text, ts__json **root)
{
    return ts__json_parse(doc, text, strlen(text), root, NULL, "test.json");
}

/* Parses text, writes it compact; returns the code. out gets the text. */
static ts_result reparse(const char *text, char *out, size_t cap)
{
    ts__json_doc doc;
    ts__json *root;
    ts__buf b;
    ts_result r;
    ts__json_doc_init(&doc, NULL);
    ts__buf_init(&b, NULL);
    out[0] = 0;
    r = parse_str(&doc, text, &root);
    if (r == TS_OK) r = ts__json_write(&b, root, 0);
    if (r == TS_OK) snprintf(out, cap, "%s", (const char *)b.data);
    ts__buf_free(&b);
    ts__json_doc_free(&doc);
    return r;
}

static ts_result parse_code(const char *text)
{
    char tmp[16];
    ts__json_doc doc;
    ts__json *root;
    ts_result r;
    (void)tmp;
    ts__json_doc_init(&doc, NULL);
    r = parse_str(&doc, text, &root);
    ts__json_doc_free(&doc);
    return r;
}

static ts_result parse_code_n(const char *text, size_t n)
{
    ts__json_doc doc;
    ts__json *root;
    ts_result r;
    ts__json_doc_init(&doc, NULL);
    r = ts__json_parse(&doc, text, n, &root, NULL, "t");
    ts__json_doc_free(&doc);
    return r;
}

/* ---- reading ------------------------------------------------------------------ */

TS_TEST(every_type)
{
    ts__json_doc doc;
    ts__json *root, *c;
    const char *s;
    size_t n;
    int64_t i;
    double d;
    int bv;
    ts__json_doc_init(&doc, NULL);
    TS_CHECK_OK(parse_str(&doc, " {\"n\":null,\"f\":false,\"t\":true,\"i\":42,\"d\":-1.5e2,"
                                "\"s\":\"hi\",\"a\":[1,\"x\",[]],\"o\":{\"k\":{}}} \n", &root));
    TS_CHECK(ts__json_is_object(root));
    TS_CHECK_EQ_INT(ts__json_count(root), 8);
    TS_CHECK(ts__json_is_null(ts__json_get(root, "n")));
    TS_CHECK(ts__json_bool(ts__json_get(root, "f"), &bv) && bv == 0);
    TS_CHECK(ts__json_bool(ts__json_get(root, "t"), &bv) && bv == 1);
    TS_CHECK(ts__json_int(ts__json_get(root, "i"), &i) && i == 42);
    TS_CHECK(ts__json_get_int(root, "i", &i) && i == 42);
    TS_CHECK(!ts__json_int(ts__json_get(root, "s"), &i) && i == 0);
    TS_CHECK(ts__json_num(ts__json_get(root, "d"), &d) && d == -150.0);
    TS_CHECK(ts__json_int(ts__json_get(root, "d"), &i) && i == -150);
    s = ts__json_str(ts__json_get(root, "s"), &n);
    TS_CHECK(s && n == 2 && strcmp(s, "hi") == 0);
    TS_CHECK(ts__json_get_str(root, "s", NULL) == s);
    TS_CHECK(ts__json_str(ts__json_get(root, "i"), &n) == NULL && n == 0);
    c = ts__json_get(root, "a");
    TS_CHECK(ts__json_is_array(c) && ts__json_count(c) == 3);
    TS_CHECK(ts__json_int(ts__json_at(c, 0), &i) && i == 1);
    TS_CHECK(ts__json_is_string(ts__json_at(c, 1)));
    TS_CHECK(ts__json_is_array(ts__json_at(c, 2)) && ts__json_count(ts__json_at(c, 2)) == 0);
    TS_CHECK(ts__json_at(c, 3) == NULL);
    TS_CHECK(ts__json_at(c, 1)->key == NULL);
    TS_CHECK(ts__json_is_object(ts__json_get(ts__json_get(root, "o"), "k")));
    TS_CHECK(ts__json_get(ts__json_get(root, "nope"), "k") == NULL);
    TS_CHECK(ts__json_get(c, "k") == NULL);
    TS_CHECK(ts__json_first(ts__json_get(root, "s")) == NULL);
    /* member order and keys as written */
    c = ts__json_first(root);
    TS_CHECK(c && strcmp(c->key, "n") == 0 && c->key_len == 1);
    TS_CHECK(c->next && strcmp(c->next->key, "f") == 0);
    TS_CHECK(root->next == NULL);
    /* scalars at the top level (RFC 8259) */
    TS_CHECK_OK(parse_str(&doc, "\"top\"", &root));
    TS_CHECK(ts__json_is_string(root));
    TS_CHECK_OK(parse_str(&doc, "  7  ", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 7);
    TS_CHECK_OK(parse_str(&doc, "null", &root));
    TS_CHECK(ts__json_is_null(root));
    ts__json_doc_free(&doc);
}

TS_TEST(escapes)
{
    ts__json_doc doc;
    ts__json *root;
    const char *s;
    size_t n;
    ts__json_doc_init(&doc, NULL);
    TS_CHECK_OK(parse_str(&doc, "\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"", &root));
    s = ts__json_str(root, &n);
    TS_CHECK(s && n == 17 && memcmp(s, "a\"b\\c/d\be\ff\ng\rh\ti", 17) == 0 && s[n] == 0);
    TS_CHECK_OK(parse_str(&doc, "\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00x\"", &root));
    s = ts__json_str(root, &n);
    TS_CHECK(s && n == 1 + 2 + 3 + 4 + 1 && memcmp(s, "A\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80x", n) == 0);
    /* embedded NUL keeps its length */
    TS_CHECK_OK(parse_str(&doc, "[\"a\\u0000b\"]", &root));
    s = ts__json_str(ts__json_first(root), &n);
    TS_CHECK(s && n == 3 && s[0] == 'a' && s[1] == 0 && s[2] == 'b' && s[3] == 0);
    /* raw UTF-8 of every length, and escapes after non-ASCII */
    TS_CHECK_OK(parse_str(&doc, "\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\\n\xC3\xA9\"", &root));
    s = ts__json_str(root, &n);
    TS_CHECK(s && n == 12 && memcmp(s, "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\n\xC3\xA9", 12) == 0);
    /* keys are decoded too */
    TS_CHECK_OK(parse_str(&doc, "{\"k\\u00e9y\":1,\"\":2}", &root));
    TS_CHECK(ts__json_get(root, "k\xC3\xA9y") != NULL);
    TS_CHECK(ts__json_get_n(root, "", 0) != NULL);
    /* long strings cross the 8-byte fast scan at every alignment */
    {
        char text[200];
        size_t k, j;
        for (k = 0; k < 40; k++) {
            text[0] = '"';
            for (j = 0; j < k; j++) text[1 + j] = (char)('a' + j % 26);
            memcpy(text + 1 + k, "\\t\xC3\xA9z\"", 6);
            TS_CHECK_OK(ts__json_parse(&doc, text, k + 7, &root, NULL, "t"));
            s = ts__json_str(root, &n);
            TS_CHECK(s && n == k + 4 && s[k] == '\t' && s[k + 3] == 'z');
        }
    }
    ts__json_doc_free(&doc);
}

TS_TEST(bad_strings)
{
    static const char *bad[] = {
        "\"\\ud83d\"", "\"\\ud83dx\"", "\"\\ud83d\\u0041\"", "\"\\ud83d\\ud83d\"", "\"\\ude00\"",
        "\"\\ud83d\\", "\"\\u12\"", "\"\\u12G4\"", "\"\\x41\"", "\"\\'\"", "\"abc",
        "\"\xC0\x80\"", "\"\xED\xA0\x80\"", "\"\xFF\"", "\"\xE2\x82\"", "\"\x80\"",
        "\"\xF4\x90\x80\x80\"", "\"a\x01\"", "\"a\nb\"", "\"tab\there\"",
        "{\"k\xFF\":1}", "{\"a\x1f\":1}", "\"\\", "\"", "\"\\u", "\"\\ud800\\u"
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ts_result r = parse_code(bad[i]);
        if (r != TS_E_CORRUPT) printf("  case %u: %d\n", (unsigned)i, (int)r);
        TS_CHECK_EQ_INT(r, TS_E_CORRUPT);
    }
    /* a raw NUL inside a string, and text not NUL-terminated */
    TS_CHECK_EQ_INT(parse_code_n("\"a\0b\"", 5), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(parse_code_n("\"abcdef\"", 7), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(parse_code_n("[1,2]xxxx", 5), TS_OK);
    TS_CHECK_EQ_INT(parse_code_n("truex", 4), TS_OK);
    TS_CHECK_EQ_INT(parse_code_n("true", 3), TS_E_CORRUPT);
}

TS_TEST(bad_syntax)
{
    static const char *bad[] = {
        "", " ", "[1,]", "{\"a\":1,}", "[,1]", "{,}", "[1 2]", "{\"a\" 1}", "{\"a\":}", "{a:1}",
        "{'a':1}", "1 2", "{}x", "[1]]", "[", "{", "]", "[1", "{\"a\":1", "01", "-01", "00", "1.",
        ".5", "+1", "1e", "1e+", "-", "--1", "NaN", "Infinity", "-Infinity", "tru", "nul", "fals",
        "trUe", "\xEF\xBB\xBF{}", "/*c*/1", "[1]//", "{\"a\":1}}", "0x10", "1.e5", "[1,,2]",
        "\x01", "[\"a\":1]", "{\"a\",1}", "{\"a\":1 \"b\":2}", "\"a\" \"b\"", "[01]", "[-]",
        "[1.5e]", "nulls", "[true false]", "\t\r\n", "{\"a\":1,\"a\"}", "[1\x00]"
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ts_result r = parse_code(bad[i]);
        if (r != TS_E_CORRUPT) printf("  case %u (%s): %d\n", (unsigned)i, bad[i], (int)r);
        TS_CHECK_EQ_INT(r, TS_E_CORRUPT);
    }
    TS_CHECK_EQ_INT(parse_code_n("[1\0]", 4), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(parse_code_n("1\0", 2), TS_E_CORRUPT);
    /* whitespace of all four kinds is fine anywhere between tokens */
    TS_CHECK_OK(parse_code(" \t\r\n[ \t\r\n1 \t\r\n, {\n\"a\"\r:\t2 } ] \t\r\n"));
    TS_CHECK_EQ_INT(parse_code("\f[]"), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(parse_code("[]\v"), TS_E_CORRUPT);
}

TS_TEST(error_messages)
{
    ts__env env;
    ts__json_doc doc;
    ts__json *root = (ts__json *)&doc;
    ts__env_init(&env, NULL, NULL);
    ts__json_doc_init(&doc, NULL);
    TS_CHECK_EQ_INT(ts__json_parse(&doc, "{\n\"a\": [1,\n2,]}", 15, &root, &env,
                                   "sessions-chunked/s1/metadata.json"), TS_E_CORRUPT);
    TS_CHECK(root == NULL);
    TS_CHECK_EQ_INT(env.last.code, TS_E_CORRUPT);
    TS_CHECK(strstr(env.last.message, "sessions-chunked/s1/metadata.json") != NULL);
    TS_CHECK(strstr(env.last.message, "byte 13") != NULL);
    TS_CHECK(strstr(env.last.message, "line 3") != NULL);
    TS_CHECK(strstr(env.last.message, "trailing comma") != NULL);
    TS_CHECK_EQ_INT(ts__json_parse(&doc, "[\"\\ud800\"]", 10, &root, &env, NULL), TS_E_CORRUPT);
    TS_CHECK(strstr(env.last.message, "JSON: ") == env.last.message);
    TS_CHECK(strstr(env.last.message, "surrogate") != NULL);
    TS_CHECK(strstr(env.last.message, "byte 2") != NULL);
    TS_CHECK_EQ_INT(ts__json_parse(&doc, "{\"a\":]", 6, &root, &env, "x"), TS_E_CORRUPT);
    TS_CHECK(strstr(env.last.message, "expected a value at byte 5") != NULL);
    TS_CHECK_EQ_INT(ts__json_parse(&doc, "[1] [", 5, &root, &env, "x"), TS_E_CORRUPT);
    TS_CHECK(strstr(env.last.message, "byte 4") != NULL);
    TS_CHECK_EQ_INT(ts__json_parse(&doc, NULL, 0, &root, &env, "x"), TS_E_CORRUPT);
    TS_CHECK(strstr(env.last.message, "end of input") != NULL);
    TS_CHECK_EQ_INT(ts__json_validate("[1,{\"a\":[]}]", 12, NULL, &env, "v"), TS_OK);
    TS_CHECK_EQ_INT(ts__json_validate("[1,{\"a\":[]}", 11, NULL, &env, "v.json"), TS_E_CORRUPT);
    TS_CHECK(strstr(env.last.message, "v.json: ") == env.last.message);
    TS_CHECK_EQ_INT(ts__json_parse(&doc, NULL, 3, &root, &env, "x"), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts__json_parse(&doc, "1", 1, NULL, &env, "x"), TS_E_INVALID);
    TS_CHECK_EQ_INT(doc.bytes, 0);
    ts__json_doc_free(&doc);
}

static ts_result nested(int depth, int objects)
{
    char *text = (char *)malloc((size_t)depth * 8 + 8);
    size_t n = 0;
    int i;
    ts_result r;
    for (i = 0; i < depth; i++) {
        if (objects) { memcpy(text + n, "{\"k\":", 5); n += 5; }
        else text[n++] = '[';
    }
    text[n++] = '1';
    for (i = 0; i < depth; i++) text[n++] = objects ? '}' : ']';
    r = parse_code_n(text, n);
    free(text);
    return r;
}

TS_TEST(depth_limit)
{
    TS_CHECK_OK(nested(TASKSTORE_MAX_JSON_DEPTH, 0));
    TS_CHECK_OK(nested(TASKSTORE_MAX_JSON_DEPTH, 1));
    TS_CHECK_EQ_INT(nested(TASKSTORE_MAX_JSON_DEPTH + 1, 0), TS_E_TOOBIG);
    TS_CHECK_EQ_INT(nested(TASKSTORE_MAX_JSON_DEPTH + 1, 1), TS_E_TOOBIG);
    TS_CHECK_EQ_INT(nested(100000, 0), TS_E_TOOBIG);
    {
        /* empty containers count as a level too */
        char text[300];
        int i, n = 0;
        for (i = 0; i < TASKSTORE_MAX_JSON_DEPTH - 1; i++) text[n++] = '[';
        memcpy(text + n, "[],{}", 5); n += 5;
        for (i = 0; i < TASKSTORE_MAX_JSON_DEPTH - 1; i++) text[n++] = ']';
        text[n] = 0;
        TS_CHECK_OK(parse_code(text));
        n = 0;
        for (i = 0; i < TASKSTORE_MAX_JSON_DEPTH; i++) text[n++] = '[';
        memcpy(text + n, "{}", 2); n += 2;
        for (i = 0; i < TASKSTORE_MAX_JSON_DEPTH; i++) text[n++] = ']';
        text[n] = 0;
        TS_CHECK_EQ_INT(parse_code(text), TS_E_TOOBIG);
    }
    {
        /* writer and clone refuse what the reader would refuse */
        ts__json_doc doc;
        ts__json *root, *a;
        ts__buf b;
        int i;
        ts__json_doc_init(&doc, NULL);
        ts__buf_init(&b, NULL);
        root = a = ts__json_new_array(&doc);
        for (i = 0; i < TASKSTORE_MAX_JSON_DEPTH - 1; i++) {
            ts__json *k = ts__json_new_array(&doc);
            TS_CHECK_OK(ts__json_array_push(a, k));
            a = k;
        }
        TS_CHECK_OK(ts__json_write(&b, root, 0));
        TS_CHECK(ts__json_clone(&doc, root) != NULL);
        TS_CHECK(ts__json_equal(root, ts__json_clone(&doc, root)));
        TS_CHECK_OK(ts__json_array_push(a, ts__json_new_array(&doc)));
        b.len = 0;
        TS_CHECK_EQ_INT(ts__json_write(&b, root, 0), TS_E_TOOBIG);
        TS_CHECK_EQ_INT(b.len, 0);
        TS_CHECK(ts__json_clone(&doc, root) == NULL);
        ts__buf_free(&b);
        ts__json_doc_free(&doc);
    }
}

TS_TEST(limits)
{
    ts__json_doc doc;
    ts__json *root;
    ts__env env;
    char *text;
    size_t n = TASKSTORE_MAX_JSON_STRING, i;
    ts__env_init(&env, NULL, NULL);
    ts__json_doc_init(&doc, NULL);
    text = (char *)malloc(n + 16);
    text[0] = '"';
    memset(text + 1, 'a', n);
    text[n + 1] = '"';
    TS_CHECK_OK(ts__json_parse(&doc, text, n + 2, &root, &env, "s"));
    TS_CHECK_EQ_INT(root->u.s.len, n);
    text[n + 1] = 'a'; text[n + 2] = '"';
    TS_CHECK_EQ_INT(ts__json_parse(&doc, text, n + 3, &root, &env, "s"), TS_E_TOOBIG);
    TS_CHECK(strstr(env.last.message, "TASKSTORE_MAX_JSON_STRING") != NULL);
    /* escapes shrink: the limit is on the decoded length */
    text[0] = '"';
    for (i = 0; i + 2 <= n; i += 2) { text[1 + i] = '\\'; text[2 + i] = 'n'; }
    text[1 + i] = '"';
    TS_CHECK_OK(ts__json_parse(&doc, text, i + 2, &root, &env, "s"));
    TS_CHECK_EQ_INT(root->u.s.len, i / 2);
    free(text);
    /* node count */
    n = TASKSTORE_MAX_JSON_NODES;
    text = (char *)malloc(2 * n + 8);
    text[0] = '[';
    for (i = 0; i < n; i++) { text[1 + 2 * i] = '0'; text[2 + 2 * i] = ','; }
    text[2 * n - 2] = ']';   /* n - 1 zeros + the array = n values */
    TS_CHECK_OK(ts__json_parse(&doc, text, 2 * n - 1, &root, &env, "n"));
    TS_CHECK_EQ_INT(ts__json_count(root), n - 1);
    /* memory stays within a small multiple of the input */
    TS_CHECK(doc.bytes < 2 * n * (1 + sizeof(ts__json)));
    ts__json_doc_free(&doc);
    text[2 * n - 2] = ','; text[2 * n - 1] = '0'; text[2 * n] = ']';
    TS_CHECK_EQ_INT(ts__json_parse(&doc, text, 2 * n + 1, &root, &env, "n"), TS_E_TOOBIG);
    TS_CHECK(strstr(env.last.message, "TASKSTORE_MAX_JSON_NODES") != NULL);
    TS_CHECK_EQ_INT(doc.bytes, 0);
    free(text);
    /* total size is checked before anything is allocated */
    TS_CHECK_EQ_INT(ts__json_parse(&doc, "x", TASKSTORE_MAX_JSON_BYTES + 1, &root, &env, "big"),
                    TS_E_TOOBIG);
    TS_CHECK_EQ_INT(doc.bytes, 0);
    ts__json_doc_free(&doc);
}

/* ---- numbers ---------------------------------------------------------------------- */

TS_TEST(numbers)
{
    ts__json_doc doc;
    ts__json *root;
    int64_t i;
    double d;
    char out[256];
    ts__json_doc_init(&doc, NULL);

    TS_CHECK_OK(parse_str(&doc, "9007199254740992", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 9007199254740992LL);
    TS_CHECK_OK(parse_str(&doc, "-9007199254740992", &root));
    TS_CHECK(ts__json_int(root, &i) && i == -9007199254740992LL);
    TS_CHECK_OK(parse_str(&doc, "9007199254740993", &root));
    TS_CHECK(!ts__json_int(root, &i));
    TS_CHECK_OK(parse_str(&doc, "9007199254740992.000000000000000001", &root));
    TS_CHECK(!ts__json_int(root, &i));
    TS_CHECK_OK(parse_str(&doc, "90071992547409920e-1", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 9007199254740992LL);
    TS_CHECK_OK(parse_str(&doc, "90071992547409930e-1", &root));
    TS_CHECK(!ts__json_int(root, &i));
    TS_CHECK_OK(parse_str(&doc, "12345678901234567890000e-10", &root));
    TS_CHECK(!ts__json_int(root, &i)); /* 1234567890123.456789 */
    TS_CHECK_OK(parse_str(&doc, "1234567890123000000000e-9", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 1234567890123LL);
    TS_CHECK_OK(parse_str(&doc, "1.00000000000000000001", &root));
    TS_CHECK(!ts__json_int(root, &i));
    TS_CHECK_OK(parse_str(&doc, "9.007199254740992e15", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 9007199254740992LL);
    TS_CHECK_OK(parse_str(&doc, "1e15", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 1000000000000000LL);
    TS_CHECK_OK(parse_str(&doc, "1e16", &root));
    TS_CHECK(!ts__json_int(root, &i));
    TS_CHECK_OK(parse_str(&doc, "-12.5e1", &root));
    TS_CHECK(ts__json_int(root, &i) && i == -125);
    TS_CHECK_OK(parse_str(&doc, "9007199254740993", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 9007199254740992.0);
    TS_CHECK_OK(parse_str(&doc, "1700000000000", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 1700000000000LL);
    TS_CHECK_OK(parse_str(&doc, "-0", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 0);
    TS_CHECK(ts__json_num(root, &d) && d == 0 && signbit(d));
    TS_CHECK_OK(parse_str(&doc, "-0.0e5", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 0 && signbit(d));
    TS_CHECK_OK(parse_str(&doc, "1e3", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 1000);
    TS_CHECK_OK(parse_str(&doc, "1.0", &root));
    TS_CHECK(ts__json_int(root, &i) && i == 1);
    TS_CHECK_OK(parse_str(&doc, "1.5", &root));
    TS_CHECK(!ts__json_int(root, &i) && i == 0);
    TS_CHECK_OK(parse_str(&doc, "2.5E-3", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 2.5e-3);
    TS_CHECK_OK(parse_str(&doc, "1E+2", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 100.0);
    TS_CHECK_OK(parse_str(&doc, "0.1", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 0.1);
    TS_CHECK_OK(parse_str(&doc, "123456789012345678901234567890", &root));
    TS_CHECK(!ts__json_int(root, &i));
    TS_CHECK(ts__json_num(root, &d) && d == 123456789012345678901234567890.0);
    TS_CHECK_OK(parse_str(&doc, "1e400", &root));
    TS_CHECK(ts__json_is_number(root) && !ts__json_num(root, &d) && d == 0);
    TS_CHECK(!ts__json_int(root, &i));
    TS_CHECK_OK(parse_str(&doc, "-1e400", &root));
    TS_CHECK(!ts__json_num(root, &d));
    TS_CHECK_OK(parse_str(&doc, "1e-400", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 0);
    TS_CHECK(!ts__json_int(root, &i));
    TS_CHECK_OK(parse_str(&doc, "4.9406564584124654e-324", &root));
    TS_CHECK(ts__json_num(root, &d) && d > 0 && d < 1e-323);
    TS_CHECK_OK(parse_str(&doc, "1.7976931348623157e308", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 1.7976931348623157e308);
    TS_CHECK_OK(parse_str(&doc, "0.000000000000000000000000000000000000001", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 1e-39);
    TS_CHECK_OK(parse_str(&doc, "1e99999999999999999999999", &root));
    TS_CHECK(!ts__json_num(root, &d));
    TS_CHECK_OK(parse_str(&doc, "0e99999999999999999999999", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 0);
    TS_CHECK_OK(parse_str(&doc, "0.30000000000000004441", &root));
    TS_CHECK(ts__json_num(root, &d) && d == 0.30000000000000004441);
    ts__json_doc_free(&doc);

    /* writing reproduces every lexeme */
    {
        static const char *lex[] = {
            "0", "-0", "1.0", "1e3", "1E-7", "-1.5e+300", "123456789012345678901234567890",
            "0.1", "3.141592653589793238462643383279", "1e400", "-0.0", "9007199254740993",
            "1700000000000", "0.30000000000000004441", "2.5E-3", "100000000000000000000000"
        };
        size_t k;
        char text[128];
        for (k = 0; k < sizeof lex / sizeof lex[0]; k++) {
            snprintf(text, sizeof text, "[%s,{\"v\":%s}]", lex[k], lex[k]);
            TS_CHECK_OK(reparse(text, out, sizeof out));
            TS_CHECK_EQ_STR(out, text);
        }
    }
}

/* Lexemes longer than strtod is given (768 significant digits + sticky). */
TS_TEST(long_numbers)
{
    ts__json_doc doc;
    ts__json *root;
    double d;
    size_t n = 200000, i;
    char *text = (char *)malloc(n + 64);
    ts__json_doc_init(&doc, NULL);
    /* 2^53 + 1 is halfway: ties to even, but anything after it rounds up */
    memcpy(text, "9007199254740993.", 17);
    for (i = 17; i < n; i++) text[i] = '0';
    text[n] = 0;
    TS_CHECK_OK(ts__json_parse(&doc, text, n, &root, NULL, "t"));
    TS_CHECK(ts__json_num(root, &d) && d == 9007199254740992.0);
    text[n - 1] = '1';
    TS_CHECK_OK(ts__json_parse(&doc, text, n, &root, NULL, "t"));
    TS_CHECK(ts__json_num(root, &d) && d == 9007199254740994.0);
    TS_CHECK(!ts__json_int(root, NULL));
    /* many integer digits shift the exponent */
    text[0] = '1';
    for (i = 1; i < 400; i++) text[i] = '0';
    memcpy(text + 400, "e-399", 6);
    TS_CHECK_OK(parse_str(&doc, text, &root));
    TS_CHECK(ts__json_num(root, &d) && d == 1.0);
    TS_CHECK(ts__json_int(root, NULL));
    for (i = 0; i < 1000; i++) text[i] = (char)('1' + i % 9);
    memcpy(text + 1000, "e-1000", 7);
    TS_CHECK_OK(parse_str(&doc, text, &root));
    TS_CHECK(ts__json_num(root, &d) && d == strtod(text, NULL));
    memcpy(text, "-0.", 3);
    for (i = 3; i < 1200; i++) text[i] = i < 1100 ? '0' : '7';
    memcpy(text + 1200, "e1100", 6);
    TS_CHECK_OK(parse_str(&doc, text, &root));
    TS_CHECK(ts__json_num(root, &d) && d == strtod(text, NULL) && d < 0);
    /* random long mantissas against the full-length strtod */
    {
        int k, bad = 0;
        for (k = 0; k < 300; k++) {
            size_t len = 700 + rndn(200), j, pos = 0;
            double want;
            if (rndn(2)) text[pos++] = '-';
            text[pos++] = (char)('1' + rndn(9));
            for (j = 1; j < len; j++) text[pos++] = rndn(4) ? (char)('0' + rndn(10)) : '0';
            if (rndn(2)) { memmove(text + 3, text + 2, pos - 2); text[2] = '.'; pos++; }
            pos += (size_t)snprintf(text + pos, 32, "e%d", (int)rndn(1400) - 1000);
            text[pos] = 0;
            want = strtod(text, NULL);
            TS_CHECK_OK(parse_str(&doc, text, &root));
            d = root->u.s.num;
            if (d != want && bad++ < 3) printf("  %.40s...: %.17g vs %.17g\n", text, d, want);
            if ((k & 31) == 0) ts__json_doc_free(&doc);
        }
        TS_CHECK_EQ_INT(bad, 0);
    }
    ts__json_doc_free(&doc);
    free(text);
}

/* The fast path (exact mantissa, |exp| <= 22) must agree with strtod. */
TS_TEST(number_parse_matches_strtod)
{
    ts__json_doc doc;
    ts__json *root;
    int k, count = (int)ts_test_count(100000, 2000000), bad = 0;
    char text[64];
    ts__json_doc_init(&doc, NULL);
    for (k = 0; k < count; k++) {
        int nd = 1 + (int)rndn(20), dot = (int)rndn((unsigned)nd + 1), j, n = 0;
        double want, got = 0;
        if (rndn(2)) text[n++] = '-';
        for (j = 0; j < nd; j++) {
            if (j == dot && j > 0) text[n++] = '.';
            text[n++] = (char)('0' + (j == 0 ? 1 + (int)rndn(9) : (int)rndn(10)));
        }
        if (dot == 0 && nd > 1 && rndn(2)) { memmove(text + 2, text, (size_t)n); text[0] = '0'; text[1] = '.'; n += 2;
            if (text[2] == '-') { text[2] = text[0]; text[0] = '-'; text[1] = '0'; text[2] = '.'; } }
        if (rndn(2)) n += snprintf(text + n, sizeof text - (size_t)n, "e%d", (int)rndn(700) - 350);
        text[n] = 0;
        if (parse_str(&doc, text, &root) != TS_OK) { if (bad++ < 3) printf("  rejected %s\n", text); continue; }
        want = strtod(text, NULL);
        ts__json_num(root, &got);
        if (!(got == want || (got != got && want != want) || (isinf(want) && !ts__json_num(root, NULL)))) {
            if (bad++ < 3) printf("  %s: %.17g vs %.17g\n", text, got, want);
        }
        if ((k & 1023) == 0) ts__json_doc_free(&doc);
    }
    TS_CHECK_EQ_INT(bad, 0);
    ts__json_doc_free(&doc);
}

TS_TEST(number_writer)
{
    ts__json_doc doc;
    ts__buf b;
    int k, bad = 0;
    struct { double v; const char *text; } cases[] = {
        { 0.1, "0.1" }, { 1.0 / 3, "0.3333333333333333" }, { 1e21, "1e+21" }, { 2.5, "2.5" },
        { 5e-324, "4.94065645841247e-324" }, { 1.7976931348623157e308, "1.7976931348623157e+308" },
        { -1.5, "-1.5" }, { 100, "100" }, { -0.0, "0" }, { 1e15, "1000000000000000" },
        { 9007199254740992.0, "9007199254740992" }, { 9007199254740994.0, "9007199254740994" },
        { 0.30000000000000004, "0.30000000000000004" }, { 1e-7, "1e-7" }, { 1.5e-10, "1.5e-10" },
        { 1e100, "1e+100" }, { 1.25e+300, "1.25e+300" }, { 0.000001, "1e-6" }, { 1e-300, "1e-300" }
    };
    ts__json_doc_init(&doc, NULL);
    ts__buf_init(&b, NULL);
    for (k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
        b.len = 0;
        TS_CHECK_OK(ts__json_write(&b, ts__json_new_number(&doc, cases[k].v), 0));
        TS_CHECK_EQ_STR((const char *)b.data, cases[k].text);
    }
    b.len = 0;
    TS_CHECK_OK(ts__json_write(&b, ts__json_new_number(&doc, HUGE_VAL), 0));
    TS_CHECK_EQ_STR((const char *)b.data, "null");
    b.len = 0;
    TS_CHECK_OK(ts__json_write(&b, ts__json_new_number(&doc, -HUGE_VAL), 0));
    TS_CHECK_EQ_STR((const char *)b.data, "null");
    b.len = 0;
    TS_CHECK_OK(ts__json_write(&b, ts__json_new_number(&doc, nan("")), 0));
    TS_CHECK_EQ_STR((const char *)b.data, "null");
    /* int64 extremes are exact */
    b.len = 0;
    TS_CHECK_OK(ts__json_write(&b, ts__json_new_int(&doc, INT64_MIN), 0));
    TS_CHECK_EQ_STR((const char *)b.data, "-9223372036854775808");
    b.len = 0;
    TS_CHECK_OK(ts__json_write(&b, ts__json_new_int(&doc, INT64_MAX), 0));
    TS_CHECK_EQ_STR((const char *)b.data, "9223372036854775807");
    b.len = 0;
    TS_CHECK_OK(ts__json_write(&b, ts__json_new_int(&doc, -1700000000000LL), 0));
    TS_CHECK_EQ_STR((const char *)b.data, "-1700000000000");
    {
        int64_t i;
        TS_CHECK(!ts__json_int(ts__json_new_int(&doc, INT64_MAX), &i));
        TS_CHECK(ts__json_int(ts__json_new_int(&doc, 1LL << 53), &i) && i == 1LL << 53);
        TS_CHECK(ts__json_int(ts__json_new_int(&doc, -(1LL << 53)), &i) && i == -(1LL << 53));
        TS_CHECK(!ts__json_int(ts__json_new_int(&doc, (1LL << 53) + 1), &i));
        b.len = 0;
        TS_CHECK_OK(ts__json_write(&b, ts__json_new_int(&doc, (1LL << 53) + 1), 0));
        TS_CHECK_EQ_STR((const char *)b.data, "9007199254740993");
        b.len = 0;
        TS_CHECK_OK(ts__json_write(&b, ts__json_new_int(&doc, -(1LL << 53) - 1), 0));
        TS_CHECK_EQ_STR((const char *)b.data, "-9007199254740993");
    }
    /* random finite doubles: written text reads back to the same bits, and
       no shorter precision would have */
    for (k = 0; k < 20000; k++) {
        uint64_t bits = rnd();
        double v, back;
        char want[40];
        int prec;
        memcpy(&v, &bits, 8);
        if (!(v == v) || isinf(v)) continue;
        b.len = 0;
        TS_CHECK_OK(ts__json_write(&b, ts__json_new_number(&doc, v), 0));
        back = strtod((const char *)b.data, NULL);
        if (back != v) { if (bad++ < 3) printf("  %.17g -> %s\n", v, (const char *)b.data); }
        for (prec = 15; prec <= 17; prec++) {
            char *e;
            snprintf(want, sizeof want, "%.*g", prec, v);
            if (strtod(want, NULL) == v) {
                /* "e-07" -> "e-7" */
                if ((e = strchr(want, 'e')) != NULL && e[2] == '0') memmove(e + 2, e + 3, strlen(e + 3) + 1);
                break;
            }
        }
        if (!ts__json_is_int_value(v) && strcmp(want, (const char *)b.data) != 0 && bad++ < 3)
            printf("  %s, want %s\n", (const char *)b.data, want);
        if ((k & 1023) == 0) ts__json_doc_free(&doc);
    }
    TS_CHECK_EQ_INT(bad, 0);
    ts__buf_free(&b);
    ts__json_doc_free(&doc);
}

static void locale_case(const char *name);

/* LC_NUMERIC with ',' (de_DE) or a two-byte decimal point (ps_AF) must not
   change what numbers read or write as. */
TS_TEST(locale_independent)
{
    static const char *names[] = { "de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8",
                                   "ru_RU.UTF-8", "ps_AF.UTF-8", "ps_AF.utf8" };
    size_t k;
    for (k = 0; k < sizeof names / sizeof names[0]; k++) locale_case(names[k]);
}

static void locale_case(const char *name)
{
    const char *got = setlocale(LC_NUMERIC, name);
    char out[128];
    double d;
    ts__json_doc doc;
    ts__json *root;
    ts__buf b;
    if (!got) return; /* not installed here: nothing to check */
    if (getenv("TS_TEST_VERBOSE")) printf("  locale %s: decimal point \"%s\"\n", name, localeconv()->decimal_point);
    ts__json_doc_init(&doc, NULL);
    ts__buf_init(&b, NULL);
    TS_CHECK_OK(parse_str(&doc, "[1.5e-300,0.1,1.25,1.7976931348623157e308,123456789012345678901.5]", &root));
    TS_CHECK(ts__json_num(ts__json_at(root, 0), &d) && d == 1.5e-300);
    TS_CHECK(ts__json_num(ts__json_at(root, 3), &d) && d == 1.7976931348623157e308);
    TS_CHECK(ts__json_num(ts__json_at(root, 4), &d) && d == 123456789012345678901.5);
    TS_CHECK(ts__json_num(ts__json_at(root, 2), &d) && d == 1.25);
    TS_CHECK_OK(ts__json_write(&b, ts__json_new_number(&doc, 0.1), 0));
    TS_CHECK_EQ_STR((const char *)b.data, "0.1");
    b.len = 0;
    TS_CHECK_OK(ts__json_write(&b, ts__json_new_number(&doc, -1.2345678901234567e-300), 0));
    TS_CHECK_EQ_STR((const char *)b.data, "-1.2345678901234568e-300");
    b.len = 0;
    TS_CHECK_OK(ts__json_write(&b, ts__json_new_number(&doc, 2.5), 0));
    TS_CHECK_EQ_STR((const char *)b.data, "2.5");
    TS_CHECK_OK(reparse("[1.5e-300]", out, sizeof out));
    TS_CHECK_EQ_STR(out, "[1.5e-300]");
    ts__buf_free(&b);
    ts__json_doc_free(&doc);
    setlocale(LC_NUMERIC, "C");
}

/* ---- duplicates, builders, clone -------------------------------------------------- */

TS_TEST(duplicate_keys)
{
    ts__json_doc doc;
    ts__json *root, *other;
    int64_t i;
    char out[128];
    ts__json_doc_init(&doc, NULL);
    TS_CHECK_OK(parse_str(&doc, "{\"a\":1,\"b\":0,\"a\":2}", &root));
    TS_CHECK_EQ_INT(ts__json_count(root), 3);
    TS_CHECK(ts__json_get_int(root, "a", &i) && i == 2);
    TS_CHECK_OK(parse_str(&doc, "{\"b\":0,\"a\":2}", &other));
    TS_CHECK(ts__json_equal(root, other));
    TS_CHECK(ts__json_equal(other, root));
    TS_CHECK_OK(parse_str(&doc, "{\"a\":2,\"b\":0,\"a\":2}", &other));
    TS_CHECK(ts__json_equal(root, other));
    TS_CHECK_OK(parse_str(&doc, "{\"a\":1,\"b\":0,\"a\":3}", &other));
    TS_CHECK(!ts__json_equal(root, other));
    TS_CHECK_OK(parse_str(&doc, "{\"a\":1,\"b\":0}", &other));
    TS_CHECK(!ts__json_equal(root, other));
    /* same key order: an overridden member may differ */
    TS_CHECK_OK(parse_str(&doc, "{\"a\":9,\"b\":0,\"a\":2}", &other));
    TS_CHECK(ts__json_equal(root, other));
    TS_CHECK_OK(reparse("{\"a\":1,\"b\":0,\"a\":2}", out, sizeof out));
    TS_CHECK_EQ_STR(out, "{\"a\":1,\"b\":0,\"a\":2}");
    /* set replaces the last one in place */
    TS_CHECK_OK(ts__json_object_set(&doc, root, "a", 1, ts__json_new_int(&doc, 7)));
    TS_CHECK_EQ_INT(ts__json_count(root), 3);
    TS_CHECK(ts__json_get_int(root, "a", &i) && i == 7);
    TS_CHECK_EQ_INT(ts__json_object_remove(root, "a"), 2);
    TS_CHECK_EQ_INT(ts__json_count(root), 1);
    TS_CHECK(ts__json_get(root, "a") == NULL);
    ts__json_doc_free(&doc);
}

static void write_eq(const ts__json *n, int pretty, const char *want)
{
    ts__buf b;
    ts__buf_init(&b, NULL);
    TS_CHECK_OK(ts__json_write(&b, n, pretty));
    TS_CHECK_EQ_STR((const char *)b.data, want);
    ts__buf_free(&b);
}

TS_TEST(builders)
{
    ts__json_doc doc, doc2;
    ts__json *rec, *arr, *copy, *root;
    ts__buf b;
    ts__json_doc_init(&doc, NULL);
    ts__json_doc_init(&doc2, NULL);
    ts__buf_init(&b, NULL);
    TS_CHECK_OK(parse_str(&doc, "{\"id\":\"ss-1\",\"timestamp\":1700000000000,\"attachmentId\":\"a1\"}", &rec));
    /* the screenshot-record edit the CA store does */
    TS_CHECK_OK(ts__json_object_set(&doc, rec, "attachmentHash", 14,
                                    ts__json_new_string(&doc, "abc", 3)));
    TS_CHECK_OK(ts__json_object_set(&doc, rec, "timestamp", 9, ts__json_new_int(&doc, 5)));
    write_eq(rec, 0, "{\"id\":\"ss-1\",\"timestamp\":5,\"attachmentId\":\"a1\",\"attachmentHash\":\"abc\"}");
    TS_CHECK_EQ_INT(ts__json_object_remove(rec, "attachmentId"), 1);
    TS_CHECK_EQ_INT(ts__json_object_remove(rec, "attachmentId"), 0);
    TS_CHECK_EQ_INT(ts__json_object_remove(rec, "attachmentHash"), 1); /* the last one: fixes ->last */
    TS_CHECK_OK(ts__json_object_set(&doc, rec, "z", 1, ts__json_new_null(&doc)));
    write_eq(rec, 0, "{\"id\":\"ss-1\",\"timestamp\":5,\"z\":null}");
    TS_CHECK_EQ_INT(ts__json_object_remove(rec, "id"), 1);
    TS_CHECK_OK(ts__json_object_set(&doc, rec, "id", 2, ts__json_new_bool(&doc, 1)));
    write_eq(rec, 0, "{\"timestamp\":5,\"z\":null,\"id\":true}");
    /* NULL value (a failed builder) and wrong containers */
    TS_CHECK_EQ_INT(ts__json_object_set(&doc, rec, "k", 1, NULL), TS_E_NOMEM);
    TS_CHECK_EQ_INT(ts__json_array_push(rec, ts__json_new_null(&doc)), TS_E_INVALID);
    arr = ts__json_new_array(&doc);
    TS_CHECK_EQ_INT(ts__json_object_set(&doc, arr, "k", 1, ts__json_new_null(&doc)), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts__json_array_push(arr, NULL), TS_E_NOMEM);
    TS_CHECK_OK(ts__json_array_push(arr, ts__json_new_string(&doc, "a\0\"\\\x01\n\xC3\xA9", 8)));
    TS_CHECK_OK(ts__json_array_push(arr, ts__json_new_number(&doc, 0.5)));
    TS_CHECK_OK(ts__json_array_push(arr, ts__json_new_bool(&doc, 0)));
    TS_CHECK_OK(ts__json_array_push(arr, ts__json_new_object(&doc)));
    TS_CHECK_OK(ts__json_array_push(arr, ts__json_new_array(&doc)));
    write_eq(arr, 0, "[\"a\\u0000\\\"\\\\\\u0001\\n\xC3\xA9\",0.5,false,{},[]]");
    TS_CHECK_OK(ts__json_object_set(&doc, rec, "list", 4, arr));
    write_eq(rec, 1, "{\n  \"timestamp\": 5,\n  \"z\": null,\n  \"id\": true,\n  \"list\": [\n"
                     "    \"a\\u0000\\\"\\\\\\u0001\\n\xC3\xA9\",\n    0.5,\n    false,\n    {},\n    []\n  ]\n}");
    /* clone into another doc, then free the first */
    copy = ts__json_clone(&doc2, rec);
    TS_CHECK(copy && copy->key == NULL && copy->next == NULL);
    TS_CHECK(ts__json_equal(copy, rec));
    TS_CHECK_OK(ts__json_write(&b, rec, 0));
    ts__json_doc_free(&doc);
    write_eq(copy, 0, (const char *)b.data);
    TS_CHECK_OK(parse_str(&doc2, (const char *)b.data, &root));
    TS_CHECK(ts__json_equal(copy, root));
    TS_CHECK(ts__json_clone(&doc2, NULL) == NULL);
    /* strings that are not UTF-8 are refused by the writer, which leaves out as it was */
    b.len = 0;
    TS_CHECK_OK(ts__buf_puts(&b, "keep"));
    TS_CHECK_OK(ts__json_array_push(ts__json_get(copy, "list"), ts__json_new_string(&doc2, "\xFF", 1)));
    TS_CHECK_EQ_INT(ts__json_write(&b, copy, 0), TS_E_INVALID);
    TS_CHECK_EQ_STR((const char *)b.data, "keep");
    TS_CHECK_EQ_INT(ts__json_write(&b, NULL, 0), TS_E_INVALID);
    ts__buf_free(&b);
    ts__json_doc_free(&doc2);
}

TS_TEST(streaming_writer)
{
    ts__buf b;
    ts__jw w;
    ts__json_doc doc;
    ts__json *rec;
    ts__buf_init(&b, NULL);
    ts__json_doc_init(&doc, NULL);
    TS_CHECK_OK(parse_str(&doc, "{ \"id\" : \"r1\" , \"n\" : 1.50 }", &rec));
    ts__jw_init(&w, &b);
    ts__jw_begin_object(&w);
    ts__jw_key(&w, "id"); ts__jw_string(&w, "s1", 2);
    ts__jw_key(&w, "count"); ts__jw_int(&w, -3);
    ts__jw_key(&w, "ratio"); ts__jw_number(&w, 0.25);
    ts__jw_key(&w, "whole"); ts__jw_number(&w, 3.0);
    ts__jw_key(&w, "bad"); ts__jw_number(&w, HUGE_VAL);
    ts__jw_key(&w, "ok"); ts__jw_bool(&w, 1);
    ts__jw_key(&w, "none"); ts__jw_null(&w);
    ts__jw_key_n(&w, "q\"k", 3);
    ts__jw_begin_array(&w);
    ts__jw_begin_array(&w); ts__jw_end_array(&w);
    ts__jw_begin_object(&w); ts__jw_end_object(&w);
    ts__jw_value(&w, rec);
    ts__jw_int(&w, 1);
    ts__jw_end_array(&w);
    ts__jw_key(&w, "e"); ts__jw_begin_array(&w); ts__jw_end_array(&w);
    ts__jw_end_object(&w);
    TS_CHECK_OK(ts__jw_finish(&w));
    TS_CHECK_EQ_STR((const char *)b.data,
                    "{\"id\":\"s1\",\"count\":-3,\"ratio\":0.25,\"whole\":3,\"bad\":null,\"ok\":true,"
                    "\"none\":null,\"q\\\"k\":[[],{},{\"id\":\"r1\",\"n\":1.50},1],\"e\":[]}");
    /* misuse is reported by finish, and errors stick */
    b.len = 0;
    ts__jw_init(&w, &b);
    ts__jw_begin_array(&w);
    TS_CHECK_EQ_INT(ts__jw_finish(&w), TS_E_INVALID);
    ts__jw_init(&w, &b);
    ts__jw_begin_object(&w); ts__jw_key(&w, "a"); ts__jw_end_object(&w);
    TS_CHECK_EQ_INT(ts__jw_finish(&w), TS_E_INVALID);
    ts__jw_init(&w, &b);
    ts__jw_begin_object(&w); ts__jw_key(&w, "a"); ts__jw_key(&w, "b");
    TS_CHECK_EQ_INT(ts__jw_finish(&w), TS_E_INVALID);
    ts__jw_init(&w, &b);
    ts__jw_end_array(&w);
    TS_CHECK_EQ_INT(ts__jw_finish(&w), TS_E_INVALID);
    ts__jw_init(&w, &b);
    ts__jw_begin_array(&w); ts__jw_string(&w, "\xC3", 1); ts__jw_int(&w, 1); ts__jw_end_array(&w);
    TS_CHECK_EQ_INT(ts__jw_finish(&w), TS_E_INVALID);
    {
        int k;
        ts__jw_init(&w, &b);
        for (k = 0; k < 65; k++) ts__jw_begin_array(&w);
        TS_CHECK_EQ_INT(ts__jw_finish(&w), TS_E_TOOBIG);
    }
    ts__buf_free(&b);
    ts__json_doc_free(&doc);
}

TS_TEST(equal_and_diff)
{
    ts__json_doc doc;
    ts__json *a, *b;
    ts__buf path;
    ts__json_doc_init(&doc, NULL);
    ts__buf_init(&path, NULL);
    TS_CHECK_OK(parse_str(&doc, "{\"id\":\"s\",\"audioSegments\":[{\"t\":1},{\"t\":2},"
                                "{\"t\":3,\"transcription\":\"hello\"}],\"n\":-0,\"x\":1.0}", &a));
    TS_CHECK_OK(parse_str(&doc, "{\"x\":1,\"n\":0,\"audioSegments\":[{\"t\":1},{\"t\":2},"
                                "{\"transcription\":\"hello\",\"t\":3}],\"id\":\"s\"}", &b));
    TS_CHECK(ts__json_equal(a, b));
    TS_CHECK_EQ_INT(ts__json_diff(a, b, &path), 0);
    TS_CHECK_EQ_INT(path.len, 0);
    TS_CHECK_OK(parse_str(&doc, "{\"x\":1,\"n\":0,\"audioSegments\":[{\"t\":1},{\"t\":2},"
                                "{\"transcription\":\"hell\",\"t\":3}],\"id\":\"s\"}", &b));
    TS_CHECK(!ts__json_equal(a, b));
    TS_CHECK_EQ_INT(ts__json_diff(a, b, &path), 1);
    TS_CHECK_EQ_STR((const char *)path.data, "audioSegments[2].transcription");
    /* appends to what path already holds */
    path.len = 0;
    TS_CHECK_OK(ts__buf_puts(&path, "s1: "));
    TS_CHECK_EQ_INT(ts__json_diff(b, a, &path), 1);
    TS_CHECK_EQ_STR((const char *)path.data, "s1: .audioSegments[2].transcription");
    path.len = 0;
    TS_CHECK_OK(parse_str(&doc, "{\"id\":\"s\",\"audioSegments\":[{\"t\":1},{\"t\":2}],\"n\":0,\"x\":1}", &b));
    TS_CHECK_EQ_INT(ts__json_diff(a, b, &path), 1);
    TS_CHECK_EQ_STR((const char *)path.data, "audioSegments[2]");
    path.len = 0;
    TS_CHECK_EQ_INT(ts__json_diff(b, a, &path), 1);
    TS_CHECK_EQ_STR((const char *)path.data, "audioSegments[2]");
    path.len = 0;
    TS_CHECK_OK(parse_str(&doc, "{\"id\":\"s\",\"audioSegments\":[],\"n\":0,\"x\":1,\"extra key\":[]}", &b));
    TS_CHECK_EQ_INT(ts__json_diff(a, b, &path), 1);
    TS_CHECK_EQ_STR((const char *)path.data, "audioSegments[0]");
    path.len = 0;
    TS_CHECK_OK(parse_str(&doc, "{\"id\":\"s\",\"audioSegments\":[{\"t\":1},{\"t\":2},"
                                "{\"t\":3,\"transcription\":\"hello\"}],\"n\":-0,\"x\":1.0,\"extra key\":[]}", &b));
    TS_CHECK_EQ_INT(ts__json_diff(a, b, &path), 1);
    TS_CHECK_EQ_STR((const char *)path.data, "[\"extra key\"]");
    path.len = 0;
    TS_CHECK_EQ_INT(ts__json_diff(b, a, &path), 1);
    TS_CHECK_EQ_STR((const char *)path.data, "[\"extra key\"]");
    path.len = 0;
    TS_CHECK_OK(parse_str(&doc, "[]", &b));
    TS_CHECK_EQ_INT(ts__json_diff(a, b, &path), 1);
    TS_CHECK_EQ_INT(path.len, 0);
    TS_CHECK_EQ_INT(ts__json_diff(a, NULL, NULL), 1);
    TS_CHECK(ts__json_equal(NULL, NULL));
    /* scalars */
    {
        static const char *pairs[][2] = {
            { "1", "1.0" }, { "0", "-0" }, { "1e2", "100" }, { "\"a\"", "\"\\u0061\"" },
            { "true", "true" }, { "null", "null" }, { "{}", "{}" }, { "[[]]", "[[]]" }
        };
        static const char *diff[][2] = {
            { "1", "2" }, { "true", "false" }, { "null", "false" }, { "\"a\"", "\"a\\u0000\"" },
            { "[]", "{}" }, { "[1]", "[1,2]" }, { "{\"a\":1}", "{\"b\":1}" }, { "1", "\"1\"" }
        };
        size_t k;
        for (k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
            TS_CHECK_OK(parse_str(&doc, pairs[k][0], &a));
            TS_CHECK_OK(parse_str(&doc, pairs[k][1], &b));
            TS_CHECK(ts__json_equal(a, b));
        }
        for (k = 0; k < sizeof diff / sizeof diff[0]; k++) {
            TS_CHECK_OK(parse_str(&doc, diff[k][0], &a));
            TS_CHECK_OK(parse_str(&doc, diff[k][1], &b));
            TS_CHECK(!ts__json_equal(a, b));
            TS_CHECK(!ts__json_equal(b, a));
        }
    }
    ts__buf_free(&path);
    ts__json_doc_free(&doc);
}

/* ---- randomized round trips ----------------------------------------------------------- */

static void rand_string(char *out, size_t *n, size_t max)
{
    static const char *pieces[] = {
        "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\x01", "\x1f", "\x7f",
        "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xE2\x80\xA8", "\xEF\xBF\xBF", "word "
    };
    size_t len = 0, k = rndn(12), i;
    if (rndn(50) == 0) { out[len++] = 0; }
    for (i = 0; i < k; i++) {
        const char *p = pieces[rndn(sizeof pieces / sizeof pieces[0])];
        size_t m = strlen(p);
        if (len + m > max) break;
        memcpy(out + len, p, m);
        len += m;
    }
    *n = len;
}

static ts__json *rand_value(ts__json_doc *doc, int depth)
{
    unsigned kind = rndn(depth < 5 ? 9 : 6);
    char s[64];
    size_t n;
    switch (kind) {
    case 0: return ts__json_new_null(doc);
    case 1: return ts__json_new_bool(doc, (int)rndn(2));
    case 2: return ts__json_new_int(doc, (int64_t)(rnd() >> rndn(64)) * (rndn(2) ? 1 : -1));
    case 3: {
        uint64_t bits = rnd();
        double v;
        memcpy(&v, &bits, 8);
        if (!(v == v) || isinf(v)) v = (double)(int64_t)rnd() / 1000.0;
        if (rndn(2)) v = (double)(int)rndn(100000) / 100.0;
        return ts__json_new_number(doc, v);
    }
    case 4: case 5:
        rand_string(s, &n, sizeof s);
        return ts__json_new_string(doc, s, n);
    case 6: {
        ts__json *a = ts__json_new_array(doc);
        unsigned k = rndn(6), i;
        for (i = 0; i < k; i++) ts__json_array_push(a, rand_value(doc, depth + 1));
        return a;
    }
    default: {
        ts__json *o = ts__json_new_object(doc);
        unsigned k = rndn(6), i;
        for (i = 0; i < k; i++) {
            /* object_set would merge duplicates; keep some by appending raw */
            rand_string(s, &n, 16);
            if (rndn(8) == 0 && ts__json_first(o)) {
                ts__json *v = rand_value(doc, depth + 1), *f = ts__json_first(o);
                v->key = f->key; v->key_len = f->key_len;
                o->u.kids.last->next = v; o->u.kids.last = v; o->u.kids.count++;
            } else {
                ts__json_object_set(doc, o, s, n, rand_value(doc, depth + 1));
            }
        }
        return o;
    }
    }
}

/* Inserts random legal whitespace between the tokens of compact JSON. */
static size_t add_whitespace(const char *in, size_t n, char *out)
{
    static const char ws[] = " \t\r\n";
    size_t i, o = 0;
    int in_str = 0;
    for (i = 0; i < n; i++) {
        char c = in[i];
        if (!in_str && (c == '{' || c == '[' || c == ',' || c == ':') && rndn(2))
            out[o++] = ws[rndn(4)];
        out[o++] = c;
        if (in_str) {
            if (c == '\\') out[o++] = in[++i];
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        }
        if (!in_str && (c == '{' || c == '[' || c == ',' || c == ':') && rndn(2))
            out[o++] = ws[rndn(4)];
    }
    return o;
}

TS_TEST(random_round_trips)
{
    int k, count = (int)ts_test_count(3000, 100000), bad = 0;
    ts__json_doc src, doc;
    ts__buf w1, w2, w3;
    char *spaced = NULL;
    size_t spaced_cap = 0;
    ts__json_doc_init(&src, NULL);
    ts__json_doc_init(&doc, NULL);
    ts__buf_init(&w1, NULL); ts__buf_init(&w2, NULL); ts__buf_init(&w3, NULL);
    for (k = 0; k < count; k++) {
        ts__json *v = rand_value(&src, 0), *p1, *p2, *p3;
        ts__buf path;
        size_t n;
        w1.len = w2.len = w3.len = 0;
        TS_CHECK_OK(ts__json_write(&w1, v, 0));
        TS_CHECK_OK(ts__json_parse(&doc, (const char *)w1.data, w1.len, &p1, NULL, "w1"));
        if (!ts__json_equal(v, p1)) {
            ts__buf_init(&path, NULL);
            ts__json_diff(v, p1, &path);
            if (bad++ < 3) printf("  differs at %s: %s\n", path.data ? (const char *)path.data : "", (const char *)w1.data);
            ts__buf_free(&path);
        }
        TS_CHECK_OK(ts__json_write(&w2, p1, 0));
        if (w1.len != w2.len || memcmp(w1.data, w2.data, w1.len) != 0) {
            if (bad++ < 3) printf("  rewrite differs:\n  %s\n  %s\n", (const char *)w1.data, (const char *)w2.data);
        }
        /* pretty and randomly spaced text parse to the same value */
        TS_CHECK_OK(ts__json_write(&w3, v, 1));
        TS_CHECK_OK(ts__json_parse(&doc, (const char *)w3.data, w3.len, &p2, NULL, "w3"));
        if (!ts__json_equal(p1, p2) && bad++ < 3) printf("  pretty differs: %s\n", (const char *)w3.data);
        if (spaced_cap < 2 * w1.len + 1) {
            spaced_cap = 2 * w1.len + 1;
            spaced = (char *)realloc(spaced, spaced_cap);
        }
        n = add_whitespace((const char *)w1.data, w1.len, spaced);
        TS_CHECK_OK(ts__json_parse(&doc, spaced, n, &p3, NULL, "spaced"));
        if (!ts__json_equal(p1, p3) && bad++ < 3) printf("  spaced differs: %.*s\n", (int)n, spaced);
        if ((k & 255) == 255) { ts__json_doc_free(&src); ts__json_doc_free(&doc); }
    }
    TS_CHECK_EQ_INT(bad, 0);
    free(spaced);
    ts__buf_free(&w1); ts__buf_free(&w2); ts__buf_free(&w3);
    ts__json_doc_free(&src);
    ts__json_doc_free(&doc);
}

/* Random byte edits of valid documents must parse or fail cleanly, and what
   parses must survive a round trip. */
TS_TEST(mutations)
{
    static const char base[] = "{\"id\":\"s1\",\"timestamp\":1700000000000,\"activity\":\"caf\xC3\xA9 \\u00e9\\ud83d\\ude00\","
                               "\"tags\":[\"a\",\"b\"],\"n\":-1.5e-3,\"ok\":true,\"x\":null,\"o\":{\"k\":[1,{}]}}";
    char text[sizeof base + 8];
    int k, count = (int)ts_test_count(30000, 1000000), ok = 0;
    static const char alphabet[] = "{}[]\":,\\u0123456789eE+-. tfnrl\xC3\xA9\x80\xFF\x01";
    ts__json_doc doc;
    ts__buf b1, b2;
    ts__json_doc_init(&doc, NULL);
    ts__buf_init(&b1, NULL); ts__buf_init(&b2, NULL);
    for (k = 0; k < count; k++) {
        size_t n = sizeof base - 1, edits = 1 + rndn(3), e;
        ts__json *r1, *r2;
        ts_result r;
        memcpy(text, base, n);
        for (e = 0; e < edits; e++) {
            size_t at = rndn((unsigned)n);
            switch (rndn(3)) {
            case 0: text[at] = alphabet[rndn(sizeof alphabet - 1)]; break;
            case 1: memmove(text + at, text + at + 1, n - at - 1); n--; break;
            default:
                if (n < sizeof text - 1) { memmove(text + at + 1, text + at, n - at); text[at] = alphabet[rndn(sizeof alphabet - 1)]; n++; }
            }
        }
        r = ts__json_parse(&doc, text, n, &r1, NULL, "m");
        TS_CHECK(r == TS_OK || r == TS_E_CORRUPT || r == TS_E_TOOBIG);
        if (r == TS_OK) {
            ok++;
            b1.len = b2.len = 0;
            TS_CHECK_OK(ts__json_write(&b1, r1, 0));
            TS_CHECK_OK(ts__json_parse(&doc, (const char *)b1.data, b1.len, &r2, NULL, "m2"));
            TS_CHECK(ts__json_equal(r1, r2));
            TS_CHECK_OK(ts__json_write(&b2, r2, 0));
            TS_CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
        }
        if ((k & 255) == 0) ts__json_doc_free(&doc);
    }
    TS_CHECK(ok > 0);
    ts__buf_free(&b1); ts__buf_free(&b2);
    ts__json_doc_free(&doc);
}

/* ---- memory ---------------------------------------------------------------------------- */

/* A mid-size chunk-file-like document: many nodes (several arena chunks),
   long strings, escapes. */
static char *mid_doc(size_t *len)
{
    ts__buf b;
    int i, j;
    ts__buf_init(&b, NULL);
    ts__buf_puts(&b, "[");
    for (i = 0; i < 1500; i++) {
        ts__buf_printf(&b, "%s{\"id\":\"ss-%d\",\"timestamp\":%lld,\"attachmentId\":\"att-%d\",\"activity\":\"",
                       i ? "," : "", i, 1700000000000LL + i * 1000, i);
        for (j = 0; j < (i % 40 ? 1 : 40); j++) ts__buf_puts(&b, "typing in the editor \\\"quoted\\\" caf\xC3\xA9 \\u00e9 ");
        ts__buf_printf(&b, "\",\"score\":%d.%d,\"tags\":[\"a\",\"b\",%d,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],\"meta\":{\"w\":1920,\"h\":1080,\"ok\":true,\"z\":null}}",
                       i, i % 10, i);
    }
    ts__buf_puts(&b, "]");
    *len = b.len;
    return (char *)ts__buf_take(&b, NULL, NULL);
}

TS_TEST(oom_sweep_parse)
{
    size_t len;
    char *text = mid_doc(&len);
    talloc t;
    ts_allocator a = talloc_make(&t);
    ts__json_doc doc;
    ts__json *root, *ref_root;
    ts__json_doc ref;
    ts__env env;
    long n, needed;
    int saw_ok = 0;
    ts__json_doc_init(&ref, NULL);
    TS_CHECK_OK(ts__json_parse(&ref, text, len, &ref_root, NULL, "mid"));
    /* how many allocations a full parse makes */
    ts__json_doc_init(&doc, &a);
    TS_CHECK_OK(ts__json_parse(&doc, text, len, &root, NULL, "mid"));
    needed = t.count;
    TS_CHECK(needed >= 3);
    if (getenv("TS_TEST_VERBOSE")) printf("  mid doc: %lu bytes, %ld allocations\n", (unsigned long)len, needed);
    ts__json_doc_free(&doc);
    TS_CHECK_EQ_INT(t.live, 0);
    for (n = 1; n <= needed + 1; n++) {
        ts_result r;
        t.count = 0; t.fail_at = n;
        ts__env_init(&env, NULL, NULL);
        ts__json_doc_init(&doc, &a);
        r = ts__json_parse(&doc, text, len, &root, &env, "mid.json");
        if (n <= needed) {
            TS_CHECK_EQ_INT(r, TS_E_NOMEM);
            TS_CHECK(root == NULL);
            TS_CHECK(strstr(env.last.message, "mid.json") != NULL);
            TS_CHECK_EQ_INT(t.live, 0); /* a failed parse gives everything back */
        } else {
            TS_CHECK_OK(r);
            TS_CHECK(ts__json_equal(root, ref_root));
            saw_ok = 1;
        }
        ts__json_doc_free(&doc);
        TS_CHECK_EQ_INT(t.live, 0);
        TS_CHECK_EQ_INT(t.live_bytes, 0);
    }
    TS_CHECK(saw_ok);
    /* a failed parse into a doc that already holds a tree leaves that tree alone */
    t.count = 0; t.fail_at = 0;
    ts__json_doc_init(&doc, &a);
    TS_CHECK_OK(ts__json_parse(&doc, "{\"keep\":[1,2,3]}", 16, &root, NULL, "k"));
    {
        long before = t.live;
        size_t bytes = doc.bytes;
        ts__json *r2;
        for (n = 1; n < 40; n++) {
            t.count = 0; t.fail_at = n;
            if (ts__json_parse(&doc, text, len, &r2, NULL, "mid") == TS_OK) break;
            TS_CHECK_EQ_INT(t.live, before);
            TS_CHECK_EQ_INT(doc.bytes, bytes);
        }
        t.fail_at = 0;
        TS_CHECK_EQ_INT(ts__json_parse(&doc, "[1,", 3, &r2, NULL, "k"), TS_E_CORRUPT);
        write_eq(root, 0, "{\"keep\":[1,2,3]}");
    }
    ts__json_doc_free(&doc);
    TS_CHECK_EQ_INT(t.live, 0);
    TS_CHECK_EQ_INT(t.size_mismatch, 0);
    ts__json_doc_free(&ref);
    free(text);
}

TS_TEST(oom_sweep_write_clone_build)
{
    size_t len;
    char *text = mid_doc(&len);
    talloc t;
    ts_allocator a = talloc_make(&t);
    ts__json_doc src, doc;
    ts__json *root, *copy;
    ts__buf b;
    long n;
    int done;
    ts__json_doc_init(&src, NULL);
    TS_CHECK_OK(ts__json_parse(&src, text, len, &root, NULL, "mid"));
    /* writer */
    for (n = 1, done = 0; !done && n < 1000; n++) {
        ts_result r;
        t.count = 0; t.fail_at = n;
        ts__buf_init(&b, &a);
        r = ts__json_write(&b, root, (int)(n & 1));
        TS_CHECK(r == TS_OK || r == TS_E_NOMEM);
        done = r == TS_OK;
        ts__buf_free(&b);
        TS_CHECK_EQ_INT(t.live, 0);
    }
    TS_CHECK(done);
    /* clone */
    for (n = 1, done = 0; !done && n < 1000; n++) {
        t.count = 0; t.fail_at = n;
        ts__json_doc_init(&doc, &a);
        copy = ts__json_clone(&doc, root);
        if (copy) { done = 1; TS_CHECK(ts__json_equal(copy, root)); }
        ts__json_doc_free(&doc);
        TS_CHECK_EQ_INT(t.live, 0);
    }
    TS_CHECK(done);
    /* builders: a NULL from any of them turns into TS_E_NOMEM */
    for (n = 1, done = 0; !done && n < 1000; n++) {
        ts__json *o;
        ts_result r = TS_OK;
        int i;
        t.count = 0; t.fail_at = n;
        ts__json_doc_init(&doc, &a);
        o = ts__json_new_object(&doc);
        for (i = 0; i < 200 && r == TS_OK; i++) {
            char key[16];
            snprintf(key, sizeof key, "k%d", i);
            r = o ? ts__json_object_set(&doc, o, key, strlen(key),
                                        ts__json_new_string(&doc, text, 100)) : TS_E_NOMEM;
        }
        TS_CHECK(r == TS_OK || r == TS_E_NOMEM);
        done = r == TS_OK;
        ts__json_doc_free(&doc);
        TS_CHECK_EQ_INT(t.live, 0);
    }
    TS_CHECK(done);
    TS_CHECK_EQ_INT(t.size_mismatch, 0);
    ts__json_doc_free(&src);
    free(text);
}

TS_TEST(arena_bounds)
{
    ts__json_doc doc;
    ts__json *root;
    size_t n = 1 << 20, i;
    char *text = (char *)malloc(n + 2);
    ts__json_doc_init(&doc, NULL);
    /* worst case for nodes per byte: "[[[...]]]"-free flat arrays of 1-byte values */
    text[0] = '[';
    for (i = 1; i + 1 < n; i += 2) { text[i] = '0'; text[i + 1] = ','; }
    text[i - 1] = ']';
    TS_CHECK_OK(ts__json_parse(&doc, text, i, &root, NULL, "flat"));
    TS_CHECK(doc.bytes <= i + (i / 2 + 1) * sizeof(ts__json) + (2 << 20));
    ts__json_doc_free(&doc);
    /* one big string: the text once, nothing more */
    n = TASKSTORE_MAX_JSON_STRING;
    text[0] = '"';
    memset(text + 1, 'x', n - 2);
    text[n - 1] = '"';
    TS_CHECK_OK(ts__json_parse(&doc, text, n, &root, NULL, "str"));
    TS_CHECK(doc.bytes <= n + n / 2 + 4096 + 64);
    ts__json_doc_free(&doc);
    /* a small document costs one allocation */
    {
        talloc t;
        ts_allocator a = talloc_make(&t);
        ts__json_doc_init(&doc, &a);
        TS_CHECK_OK(parse_str(&doc, "{\"id\":\"s1\",\"name\":\"x\",\"screenshotCount\":10,\"tags\":[\"a\"]}", &root));
        TS_CHECK_EQ_INT(t.count, 1);
        ts__json_doc_free(&doc);
        TS_CHECK_EQ_INT(t.live, 0);
    }
    free(text);
}


/* The public read-only view over the same parser. */
TS_TEST(public_read_api)
{
    const char *text = "{\"id\":\"s1\",\"n\":42,\"x\":1.5,\"tags\":[\"a\",\"b\"],\"id\":\"s2\"}";
    ts_json_doc *doc = NULL;
    const ts_json *root = NULL, *tags, *it;
    size_t len = 0;
    int64_t i = 0;
    double d = 0;
    TS_CHECK_OK(ts_json_parse(text, strlen(text), NULL, &doc, &root));
    TS_CHECK(doc && root);
    TS_CHECK_EQ_INT(ts_json_type_of(root), TS_JSON_OBJECT);
    TS_CHECK_EQ_STR(ts_json_string(ts_json_get(root, "id"), &len), "s2");
    TS_CHECK_EQ_INT(len, 2);
    TS_CHECK(ts_json_int(ts_json_get(root, "n"), &i) && i == 42);
    TS_CHECK(!ts_json_int(ts_json_get(root, "x"), &i));
    TS_CHECK(ts_json_number(ts_json_get(root, "x"), &d) && d == 1.5);
    tags = ts_json_get(root, "tags");
    TS_CHECK_EQ_INT(ts_json_count(tags), 2);
    it = ts_json_first(tags);
    TS_CHECK_EQ_STR(ts_json_string(it, NULL), "a");
    TS_CHECK_EQ_STR(ts_json_string(ts_json_next(it), NULL), "b");
    TS_CHECK(ts_json_next(ts_json_next(it)) == NULL);
    TS_CHECK_EQ_STR(ts_json_key(ts_json_first(root), &len), "id");
    /* chained lookups through missing members are NULL, not crashes */
    TS_CHECK(ts_json_get(ts_json_get(root, "missing"), "deeper") == NULL);
    TS_CHECK(ts_json_string(ts_json_get(root, "n"), &len) == NULL && len == 0);
    ts_json_free(doc);
    TS_CHECK_EQ_INT(ts_json_parse("{\"a\":", 5, NULL, &doc, &root), TS_E_CORRUPT);
    TS_CHECK(doc == NULL && root == NULL);
    ts_json_free(NULL);
}

int main(void)
{
    TS_RUN(every_type);
    TS_RUN(public_read_api);
    TS_RUN(escapes);
    TS_RUN(bad_strings);
    TS_RUN(bad_syntax);
    TS_RUN(error_messages);
    TS_RUN(depth_limit);
    TS_RUN(limits);
    TS_RUN(numbers);
    TS_RUN(long_numbers);
    TS_RUN(number_parse_matches_strtod);
    TS_RUN(number_writer);
    TS_RUN(locale_independent);
    TS_RUN(duplicate_keys);
    TS_RUN(builders);
    TS_RUN(streaming_writer);
    TS_RUN(equal_and_diff);
    TS_RUN(random_round_trips);
    TS_RUN(mutations);
    TS_RUN(oom_sweep_parse);
    TS_RUN(oom_sweep_write_clone_build);
    TS_RUN(arena_bounds);
    return ts_test_report("json");
}
