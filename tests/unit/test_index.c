/* tests/unit/test_index.c: the tokenizer rule by rule, the inverted index
 * against a brute-force model of DESIGN.md section 6 (randomized,
 * differential), the query-string parser, serialization (round trip,
 * corruption, hostile counts), verify/repair, out-of-memory at every
 * allocation. TS_TEST_LONG=1 runs many more random operations. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

#include <stdint.h>

/* ---- helpers -------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static size_t rndn(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static int long_mode(void) { return ts_test_long(); }

/* tokens joined with '|' */
typedef struct tokbuf { char s[4096]; size_t n; int count; } tokbuf;
static int tok_cb(void *user, const char *t, size_t n)
{
    tokbuf *b = (tokbuf *)user;
    if (b->count++) b->s[b->n++] = '|';
    memcpy(b->s + b->n, t, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}
static const char *toks(const char *text)
{
    static tokbuf b;
    b.n = 0; b.count = 0; b.s[0] = 0;
    ts_tokenize(text, strlen(text), NULL, tok_cb, &b);
    return b.s;
}

/* ---- reference tokenizer, written from the spec text independently ------ */

static int ref_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned b0 = s[0];
    size_t need, i;
    uint32_t v, min;
    if (b0 < 0x80) { *cp = b0; return 1; }
    if (b0 >= 0xC2 && b0 <= 0xDF) { need = 1; v = b0 & 0x1F; min = 0x80; }
    else if (b0 >= 0xE0 && b0 <= 0xEF) { need = 2; v = b0 & 0x0F; min = 0x800; }
    else if (b0 >= 0xF0 && b0 <= 0xF4) { need = 3; v = b0 & 0x07; min = 0x10000; }
    else return 0;
    if (n < need + 1) return 0;
    for (i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || (v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF) return 0;
    *cp = v;
    return (int)need + 1;
}

static int ref_token_char(uint32_t c)
{
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (c <= 0xBF) return 0;                      /* U+0080-U+00BF */
    if (c == 0xD7 || c == 0xF7) return 0;
    if (c >= 0x2000 && c <= 0x206F) return 0;
    if (c >= 0x3000 && c <= 0x303F) return 0;
    if (c >= 0xFF01 && c <= 0xFF0F) return 0;
    return 1;
}

static uint32_t ref_fold(uint32_t c)
{
    if (c >= 'A' && c <= 'Z') return c + 0x20;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 0x20;
    if (c >= 0x100 && c <= 0x17F) {
        switch (c) {
        case 0x130: case 0x138: case 0x149: return c;
        case 0x178: return 0xFF;
        case 0x179: case 0x17B: case 0x17D: return c + 1;
        case 0x17A: case 0x17C: case 0x17E: return c;
        default: return (c % 2 == 0) ? c + 1 : c;
        }
    }
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 0x20;
    if (c >= 0x410 && c <= 0x42F) return c + 0x20;
    if (c >= 0x400 && c <= 0x40F) return c + 0x50;
    return c;
}

static size_t ref_encode(uint32_t c, char *o)
{
    if (c < 0x80) { o[0] = (char)c; return 1; }
    if (c < 0x800) { o[0] = (char)(0xC0 | (c >> 6)); o[1] = (char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12)); o[1] = (char)(0x80 | ((c >> 6) & 0x3F)); o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18)); o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F)); o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

#define REF_MAXTOK 64
typedef struct ref_tok { char s[256]; size_t n, ncp; } ref_tok;

/* raw tokens (before stop words and the length rule) */
static size_t ref_raw_tokens(const char *text, size_t n, ref_tok *out, size_t max)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, count = 0;
    int in = 0;
    while (i < n) {
        uint32_t cp;
        int k = ref_decode(s + i, n - i, &cp);
        int tc = k && ref_token_char(cp);
        if (!k) k = 1;
        if (tc) {
            if (!in) {
                if (count == max) return count;
                out[count].n = 0; out[count].ncp = 0; count++; in = 1;
            }
            if (out[count - 1].n < sizeof out[0].s - 4) {
                out[count - 1].n += ref_encode(ref_fold(cp), out[count - 1].s + out[count - 1].n);
                out[count - 1].ncp++;
            }
        } else {
            in = 0;
        }
        i += (size_t)k;
    }
    return count;
}

static int ref_stop(const char *s, size_t n)
{
    static const char *const w[] = { "the", "a", "an", "and", "or", "but", "in", "on", "at", "to", "for" };
    size_t i;
    for (i = 0; i < sizeof w / sizeof w[0]; i++)
        if (strlen(w[i]) == n && memcmp(w[i], s, n) == 0) return 1;
    return 0;
}

static int ref_keep(const ref_tok *t) { return t->ncp >= 2 && !ref_stop(t->s, t->n); }

/* ---- tokenizer tests ---------------------------------------------------------- */

TS_TEST(tokenizer_ascii_and_punctuation)
{
    TS_CHECK_EQ_STR(toks("Hello, World! foo_bar-baz.qux"), "hello|world|foo|bar|baz|qux");
    TS_CHECK_EQ_STR(toks("e-mail: x@y.org (v2.0)"), "mail|org|v2");
    TS_CHECK_EQ_STR(toks("  \t\r\n"), "");
    TS_CHECK_EQ_STR(toks("ABCxyz0123 MiXeD"), "abcxyz0123|mixed");
    TS_CHECK_EQ_STR(toks("a~b`c!d@e#f$g%h^i&j*k(l)m=n+o[p]q{r}s|t\\u;v:w'x\"y,z<1>2?3/4"), "");
    TS_CHECK_EQ_STR(toks("ab~cd`ef\x01gh\x7fij"), "ab|cd|ef|gh|ij");
    {
        /* every ASCII byte: separator unless alphanumeric */
        int c;
        for (c = 1; c < 128; c++) {
            char buf[8];
            int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
            buf[0] = 'q'; buf[1] = 'q'; buf[2] = (char)c; buf[3] = 'z'; buf[4] = 'z'; buf[5] = 0;
            if (alnum) {
                char want[8];
                want[0] = 'q'; want[1] = 'q'; want[2] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
                want[3] = 'z'; want[4] = 'z'; want[5] = 0;
                TS_CHECK_EQ_STR(toks(buf), want);
            } else {
                TS_CHECK_EQ_STR(toks(buf), "qq|zz");
            }
        }
    }
}

TS_TEST(tokenizer_case_folding_ranges)
{
    TS_CHECK_EQ_STR(toks("\xC3\x80\xC3\x89\xC3\x9E"), "\xC3\xA0\xC3\xA9\xC3\xBE");         /* ÀÉÞ -> àéþ */
    TS_CHECK_EQ_STR(toks("ab\xC3\x97" "cd"), "ab|cd");                                     /* × separates */
    TS_CHECK_EQ_STR(toks("ab\xC3\xB7" "cd"), "ab|cd");                                     /* ÷ separates */
    TS_CHECK_EQ_STR(toks("\xC3\x9F\xC3\x9F"), "\xC3\x9F\xC3\x9F");                         /* ß (U+00DF) stays */
    TS_CHECK_EQ_STR(toks("\xC4\x80x"), "\xC4\x81x");                                       /* U+0100 -> U+0101 */
    TS_CHECK_EQ_STR(toks("\xC4\x81x"), "\xC4\x81x");                                       /* U+0101 stays */
    TS_CHECK_EQ_STR(toks("\xC4\xB0x"), "\xC4\xB0x");                                       /* U+0130 unchanged */
    TS_CHECK_EQ_STR(toks("\xC4\xB8x"), "\xC4\xB8x");                                       /* U+0138 unchanged */
    TS_CHECK_EQ_STR(toks("\xC5\x89x"), "\xC5\x89x");                                       /* U+0149 unchanged */
    TS_CHECK_EQ_STR(toks("\xC5\xB8x"), "\xC3\xBFx");                                       /* U+0178 -> U+00FF */
    TS_CHECK_EQ_STR(toks("\xC5\xB9x"), "\xC5\xBAx");                                       /* U+0179 -> U+017A */
    TS_CHECK_EQ_STR(toks("\xC5\xBAx"), "\xC5\xBAx");                                       /* U+017A stays */
    TS_CHECK_EQ_STR(toks("\xC5\xBDx"), "\xC5\xBEx");                                       /* U+017D -> U+017E */
    TS_CHECK_EQ_STR(toks("\xC5\xBEx"), "\xC5\xBEx");                                       /* U+017E stays */
    TS_CHECK_EQ_STR(toks("\xC5\xBFx"), "\xC5\xBFx");                                       /* U+017F stays */
    TS_CHECK_EQ_STR(toks("\xC4\xBAx"), "\xC4\xBBx");                                       /* U+013A -> U+013B (literal rule) */
    TS_CHECK_EQ_STR(toks("\xCE\x91\xCE\xA9"), "\xCE\xB1\xCF\x89");                         /* ΑΩ -> αω */
    TS_CHECK_EQ_STR(toks("\xCE\xA2x"), "\xCE\xA2x");                                       /* U+03A2 unchanged */
    TS_CHECK_EQ_STR(toks("\xD0\x90\xD0\xAF"), "\xD0\xB0\xD1\x8F");                         /* АЯ -> ая */
    TS_CHECK_EQ_STR(toks("\xD0\x80\xD0\x8F"), "\xD1\x90\xD1\x9F");                         /* ЀЏ -> ѐџ */
    TS_CHECK_EQ_STR(toks("\xD0\x81\xD0\xBB\xD0\xBA\xD0\xB0"), "\xD1\x91\xD0\xBB\xD0\xBA\xD0\xB0"); /* Ёлка */
    /* every code point against the reference: "ab" cp "cd" */
    {
        uint32_t cp;
        int bad = 0;
        for (cp = 0x80; cp <= 0x10FFFF; cp++) {
            char in[16], want[16];
            size_t k, w = 0;
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            if (cp > 0x3000 && cp < 0xFF00 && (cp & 0xFF) != 0) continue; /* sample the CJK planes */
            if (cp > 0x10000 && (cp & 0xFFF) != 0x123 && cp != 0x1F389 && cp != 0x10FFFF) continue;
            in[0] = 'a'; in[1] = 'b';
            k = ref_encode(cp, in + 2);
            in[2 + k] = 'c'; in[3 + k] = 'd'; in[4 + k] = 0;
            if (ref_token_char(cp)) {
                want[w++] = 'a'; want[w++] = 'b';
                w += ref_encode(ref_fold(cp), want + w);
                want[w++] = 'c'; want[w++] = 'd';
            } else {
                memcpy(want, "ab|cd", 5); w = 5;
            }
            want[w] = 0;
            if (strcmp(toks(in), want) != 0 && bad++ < 5) printf("  code point U+%04lX\n", (unsigned long)cp);
        }
        TS_CHECK_EQ_INT(bad, 0);
    }
}

TS_TEST(tokenizer_separator_ranges_cjk_emoji)
{
    TS_CHECK_EQ_STR(toks("ab\xC2\xA0" "cd\xC2\xBF" "ef"), "ab|cd|ef");                      /* U+00A0, U+00BF */
    TS_CHECK_EQ_STR(toks("ab\xC3\x80" "cd"), "ab\xC3\xA0" "cd");                            /* U+00C0 is a letter */
    TS_CHECK_EQ_STR(toks("ab\xE2\x80\x94" "cd\xE2\x81\xAF" "ef"), "ab|cd|ef");              /* U+2014, U+206F */
    TS_CHECK_EQ_STR(toks("ab\xE2\x81\xB0" "cd"), "ab\xE2\x81\xB0" "cd");                    /* U+2070 is not */
    TS_CHECK_EQ_STR(toks("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"), "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"); /* 日本語 */
    TS_CHECK_EQ_STR(toks("\xE6\x9D\xB1\xE4\xBA\xAC\xE3\x80\x81\xE5\xA4\xA7\xE9\x98\xAA"),
                    "\xE6\x9D\xB1\xE4\xBA\xAC|\xE5\xA4\xA7\xE9\x98\xAA");                       /* 東京、大阪 */
    TS_CHECK_EQ_STR(toks("ab\xE3\x80\x80" "cd\xE3\x80\xBF" "ef"), "ab|cd|ef");              /* U+3000, U+303F */
    TS_CHECK_EQ_STR(toks("ab\xEF\xBC\x81" "cd\xEF\xBC\x8F" "ef"), "ab|cd|ef");              /* U+FF01, U+FF0F */
    TS_CHECK_EQ_STR(toks("ab\xEF\xBC\x90" "cd"), "ab\xEF\xBC\x90" "cd");                    /* U+FF10 is not */
    TS_CHECK_EQ_STR(toks("\xF0\x9F\x8E\x89party\xF0\x9F\x8E\x89"), "\xF0\x9F\x8E\x89party\xF0\x9F\x8E\x89");
    TS_CHECK_EQ_STR(toks("\xF0\x9F\x8E\x89 x"), "");                                        /* one code point */
    TS_CHECK_EQ_STR(toks("\xF0\x9F\x8E\x89\xF0\x9F\x8E\x89"), "\xF0\x9F\x8E\x89\xF0\x9F\x8E\x89");
}

TS_TEST(tokenizer_invalid_utf8)
{
    TS_CHECK_EQ_STR(toks("ab\xFF" "cd"), "ab|cd");
    TS_CHECK_EQ_STR(toks("ab\xC0\xAF" "cd"), "ab|cd");          /* overlong '/' */
    TS_CHECK_EQ_STR(toks("ab\xE0\x80\xAF" "cd"), "ab|cd");      /* overlong 3-byte */
    TS_CHECK_EQ_STR(toks("ab\xED\xA0\x80" "cd"), "ab|cd");      /* surrogate */
    TS_CHECK_EQ_STR(toks("ab\xF4\x90\x80\x80" "cd"), "ab|cd");  /* above U+10FFFF */
    TS_CHECK_EQ_STR(toks("ab\x80\x80" "cd"), "ab|cd");          /* stray continuations */
    TS_CHECK_EQ_STR(toks("ab\xE6\x97"), "ab");                  /* truncated at the end */
    TS_CHECK_EQ_STR(toks("ab\xE6\x97" "cd"), "ab|cd");          /* truncated in the middle */
    TS_CHECK_EQ_STR(toks("\xC3" "ab"), "ab");
    /* the invalid byte is a separator even inside a run of letters */
    TS_CHECK_EQ_STR(toks("\xC3\xA9\xFF\xC3\xA9x"), "\xC3\xA9x");
}

TS_TEST(tokenizer_stop_words_and_length)
{
    TS_CHECK_EQ_STR(toks("The cat AND the hat"), "cat|hat");
    TS_CHECK_EQ_STR(toks("the a an and or but in on at to for"), "");
    TS_CHECK_EQ_STR(toks("THE A AN AND OR BUT IN ON AT TO FOR"), "");
    TS_CHECK_EQ_STR(toks("then also anda form into ton"), "then|also|anda|form|into|ton");
    TS_CHECK_EQ_STR(toks("a b c x y z 1 9"), "");
    TS_CHECK_EQ_STR(toks("\xC3\xA9 \xC3\xA9\xC3\xA9"), "\xC3\xA9\xC3\xA9");           /* é dropped, éé kept */
    TS_CHECK_EQ_STR(toks("go 42 x1"), "go|42|x1");
}

static int stop_after_one(void *user, const char *t, size_t n)
{
    (void)t; (void)n;
    ++*(int *)user;
    return 1;
}

TS_TEST(tokenizer_api_edges)
{
    int calls = 0;
    char big[700];
    tokbuf b;
    size_t i;
    TS_CHECK_EQ_INT(ts_tokenize("one two", 7, NULL, stop_after_one, &calls), TS_E_CANCELLED);
    TS_CHECK_EQ_INT(calls, 1);
    TS_CHECK_EQ_INT(ts_tokenize(NULL, 0, NULL, tok_cb, &b), TS_OK);
    TS_CHECK_EQ_INT(ts_tokenize(NULL, 3, NULL, tok_cb, &b), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_tokenize("x", 1, NULL, NULL, NULL), TS_E_INVALID);
    /* a long token that needs folding takes the heap path */
    for (i = 0; i < 600; i++) big[i] = (char)('A' + i % 26);
    big[600] = 0;
    b.n = 0; b.count = 0;
    TS_CHECK_OK(ts_tokenize(big, 600, NULL, tok_cb, &b));
    TS_CHECK_EQ_INT(b.n, 600);
    TS_CHECK(b.s[0] == 'a' && b.s[599] == (char)('a' + 599 % 26));
    /* embedded NUL is a separator */
    b.n = 0; b.count = 0;
    TS_CHECK_OK(ts_tokenize("ab\0cd", 5, NULL, tok_cb, &b));
    TS_CHECK_EQ_STR(b.s, "ab|cd");
}

TS_TEST(month_keys_and_crc)
{
    char m[32];
    ts__ix_crc crc;
    ts__ix_month_key(0, m);
    TS_CHECK_EQ_STR(m, "1970-01");
    ts__ix_month_key(-1, m);
    TS_CHECK_EQ_STR(m, "1969-12");
    ts__ix_month_key(951782400000ll, m);              /* 2000-02-29T00:00Z */
    TS_CHECK_EQ_STR(m, "2000-02");
    ts__ix_month_key(951868799999ll, m);              /* 2000-02-29T23:59:59.999Z */
    TS_CHECK_EQ_STR(m, "2000-02");
    ts__ix_month_key(951868800000ll, m);
    TS_CHECK_EQ_STR(m, "2000-03");
    ts__ix_month_key(1700000000000ll, m);             /* 2023-11-14 */
    TS_CHECK_EQ_STR(m, "2023-11");
    ts__ix_month_key(-62135596800000ll, m);           /* 0001-01-01 */
    TS_CHECK_EQ_STR(m, "0001-01");
    ts__ix_month_key(-62135596800001ll, m);           /* 0000-12-31 */
    TS_CHECK_EQ_STR(m, "0000-12");
    ts__ix_month_key(-62167219200001ll, m);           /* -0001-12-31 */
    TS_CHECK_EQ_STR(m, "-0001-12");
    ts__ix_month_key(253402300800000ll, m);           /* 10000-01-01 */
    TS_CHECK_EQ_STR(m, "10000-01");
    ts__ix_month_key(INT64_MAX, m);
    TS_CHECK(strlen(m) > 7);
    ts__ix_month_key(INT64_MIN, m);
    TS_CHECK(m[0] == '-');
    ts__ix_crc_init(&crc);
    TS_CHECK_EQ_INT(ts__ix_crc_update(&crc, 0, (const unsigned char *)"123456789", 9), 0xE3069283u);
    TS_CHECK_EQ_INT(ts__ix_ln(1.0) == 0.0, 1);
    TS_CHECK(ts__ix_ln(2.718281828459045) > 0.9999999999 && ts__ix_ln(2.718281828459045) < 1.0000000001);
    TS_CHECK(ts__ix_ln(1e-6) < -13.8155105 && ts__ix_ln(1e-6) > -13.8155106);
}

/* ---- posting containers against a sorted set ---------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* the postings in ascending order, read straight from the containers */
static uint32_t post_list(const ts__ix_term *t, uint32_t *out)
{
    uint32_t i, j, n = 0;
    if (t->ncont == 0) {
        if (t->df) out[n++] = t->single;
        return n;
    }
    for (i = 0; i < t->ncont; i++) {
        const ts__ix_cont *c = &t->conts[i];
        uint32_t base = c->key << 16;
        if (c->cap == 0) {
            const uint64_t *b = (const uint64_t *)c->data;
            for (j = 0; j < TS__IX_BM_WORDS; j++) {
                uint64_t x = b[j];
                while (x) {
                    out[n++] = base + j * 64 + (uint32_t)ts__ix_ctz(x);
                    x &= x - 1;
                }
            }
        } else {
            const uint16_t *v = (const uint16_t *)c->data;
            for (j = 0; j < c->card; j++) out[n++] = base + v[j];
        }
    }
    return n;
}

static int sort_cb(const void *ctx, uint32_t a, uint32_t b)
{
    (void)ctx;
    return a < b ? -1 : a > b;
}

TS_TEST(posting_containers)
{
    ts_index *ix;
    ts__ix_term t;
    static unsigned char in[300000];
    static uint32_t list[300000], want[300000];
    size_t n = 0, i, steps = (size_t)ts_test_count(120000, 400000);
    TS_CHECK_OK(ts_index_create(NULL, &ix));
    memset(&t, 0, sizeof t);
    memset(in, 0, sizeof in);
    for (i = 0; i < steps; i++) {
        /* clustered docnos across chunks so arrays turn into bitmaps */
        uint32_t d = (uint32_t)(rndn(4) * 65536 + (rnd() & 1 ? rndn(9000) : rndn(65536)));
        int add = rndn(3) != 0;
        if (add) {
            TS_CHECK_OK(ts__ix_post_add(ix, &t, d));
            if (!in[d]) { in[d] = 1; n++; }
        } else {
            TS_CHECK_EQ_INT(ts__ix_post_del(ix, &t, d), in[d]);
            if (in[d]) { in[d] = 0; n--; }
        }
        TS_CHECK_EQ_INT(t.df, n);
        if (i % 20000 == 0 || i + 1 == steps) {
            size_t m = 0, j;
            uint32_t got = post_list(&t, list);
            for (j = 0; j < sizeof in; j++) if (in[j]) want[m++] = (uint32_t)j;
            TS_CHECK_EQ_INT(got, m);
            TS_CHECK(memcmp(list, want, m * sizeof(uint32_t)) == 0);
            for (j = 0; j < t.ncont; j++) TS_CHECK(ts__ix_cont_ok(&t.conts[j]));
            for (j = 0; j < 200; j++) {
                uint32_t d2 = (uint32_t)rndn(sizeof in);
                TS_CHECK_EQ_INT(ts__ix_post_has(&t, d2), in[d2]);
            }
        }
    }
    {
        /* everything out again ends with no containers */
        size_t j;
        for (j = 0; j < sizeof in; j++) if (in[j]) TS_CHECK_EQ_INT(ts__ix_post_del(ix, &t, (uint32_t)j), 1);
        TS_CHECK_EQ_INT(t.df, 0);
        TS_CHECK(t.conts == NULL && t.ncont == 0);
    }
    ts__ix_post_clear(ix, &t);
    /* the sorts against qsort */
    {
        uint64_t a[3000];
        uint32_t b[3000], c[3000];
        size_t j, k;
        for (k = 0; k < 50; k++) {
            size_t m = rndn(3000);
            for (j = 0; j < m; j++) {
                a[j] = rnd() % (k & 1 ? 50 : 1000000);
                b[j] = c[j] = (uint32_t)(k % 3 == 0 ? j : rnd() % (k & 2 ? 7 : 100000));
            }
            ts__ix_sort_u64(a, m);
            for (j = 1; j < m; j++) TS_CHECK(a[j - 1] <= a[j]);
            qsort(c, m, sizeof c[0], cmp_u32);
            ts__ix_sort(b, m, sort_cb, NULL);
            TS_CHECK(memcmp(b, c, m * sizeof b[0]) == 0);
        }
    }
    ts_index_destroy(ix);
}

/* ---- the brute-force model of DESIGN.md section 6 ---------------------------- */

static const char *const VOCAB[] = {
    "test", "testing", "tester", "tea", "team", "teams", "alpha", "alphabet", "Alpha", "beta", "BETA",
    "gamma", "the", "and", "for", "a", "an", "another", "x", "y", "Z", "to", "on", "go", "42", "x1", "v2",
    "foo", "foobar", "food", "bar", "baz", "qux", "\xC3\xBC" "ber", "\xC3\x9C" "ber", "\xC3\xA9" "cole",
    "\xC3\x89" "COLE", "stra\xC3\x9F" "e", "\xCE\xB1\xCE\xB2\xCE\xB3", "\xCE\x91\xCE\x92\xCE\x93",
    "\xD0\xBC\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0", "\xD0\x9C\xD0\x9E\xD0\xA1\xD0\x9A\xD0\x92\xD0\x90",
    "\xD1\x91\xD0\xBB\xD0\xBA\xD0\xB0", "\xD0\x81\xD0\xBB\xD0\xBA\xD0\xB0", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",
    "\xE6\x9D\xB1\xE4\xBA\xAC", "\xF0\x9F\x8E\x89party", "na\xC3\xAFve", "\xC5\x82\xC3\xB3" "d\xC5\xBA",
    "\xC5\x81\xC3\xB3" "d\xC5\xBA", "caf\xC3\xA9", "CAF\xC3\x89", "zzz", "foo-bar", "v1.2.3"
};
#define NVOCAB (sizeof VOCAB / sizeof VOCAB[0])
static const char *const SEPS[] = { " ", ", ", "-", "\n", "/", "\xE2\x80\x94", "\xE3\x80\x81", "\xFF", "_", "  " };
static const char *const TAGS[] = { "work", "Work", "home", "urgent", "", "a b", "\xE6\x97\xA5\xE6\x9C\xAC", "deep-work" };
static const char *const TOPICS[] = { "t1", "t2", "t3", "T1", "topic with space", "" };
static const char *const CATS[] = { "Dev", "dev", "Design", "", "Ops" };
static const char *const SUBS[] = { "A", "B", "a" };
static const char *const STATS[] = { "done", "open", "blocked" };
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int64_t TIMES[48];
static void init_times(void)
{
    size_t i;
    for (i = 0; i < NELEM(TIMES); i++) {
        int64_t base = (int64_t)(i % 12) * 2629800000ll - 4 * 2629800000ll; /* months around 1970 */
        if (i >= 24) base += 1700000000000ll;
        TIMES[i] = base + (int64_t)rndn(3) * 86399999ll - (i % 5 == 0 ? 1 : 0);
    }
}

typedef struct m_sess {
    int live;
    char id[32];
    size_t id_len;
    int has_start;
    int64_t start;
    char name[256], desc[512], extra[256];
    char *more[4];           /* extra text added by ts_index_update_text (malloc'd) */
    size_t nmore;
    char *xjoin;             /* extra and more joined with '\n' (NULL: just extra) */
    const char *tags[5];
    size_t ntags;
    const char *topics[4];
    size_t ntopics;
    const char *category, *sub_category, *status;
    ref_tok *toks;           /* kept tokens */
    size_t ntoks;
} m_sess;

typedef struct model {
    m_sess *s;
    size_t n;
    int extra;
} model;

static void rand_text(char *out, size_t cap, size_t maxwords)
{
    size_t n = rndn(maxwords + 1), i, len = 0;
    out[0] = 0;
    for (i = 0; i < n; i++) {
        const char *w = VOCAB[rndn(NVOCAB)];
        const char *sep = i ? SEPS[rndn(NELEM(SEPS))] : "";
        if (len + strlen(w) + strlen(sep) + 1 >= cap) break;
        strcpy(out + len, sep); len += strlen(sep);
        strcpy(out + len, w); len += strlen(w);
    }
}

static void m_tokenize_into(m_sess *s, const char *text)
{
    ref_tok raw[REF_MAXTOK * 4];
    size_t n = ref_raw_tokens(text, strlen(text), raw, NELEM(raw)), i, keep = 0;
    for (i = 0; i < n; i++) keep += (size_t)ref_keep(&raw[i]);
    if (!keep) return;
    s->toks = (ref_tok *)realloc(s->toks, sizeof(ref_tok) * (s->ntoks + keep));
    for (i = 0; i < n; i++)
        if (ref_keep(&raw[i])) s->toks[s->ntoks++] = raw[i];
}

/* The whole extra text: extra and the added pieces, '\n' between (a
   separator, so the tokens are those of the pieces). */
static const char *m_extra(const m_sess *s) { return s->xjoin ? s->xjoin : s->extra; }

static void m_derive(model *m, m_sess *s)
{
    size_t i, n = strlen(s->extra) + 1;
    free(s->toks);
    s->toks = NULL;
    s->ntoks = 0;
    free(s->xjoin);
    s->xjoin = NULL;
    if (s->nmore) {
        for (i = 0; i < s->nmore; i++) n += strlen(s->more[i]) + 1;
        s->xjoin = (char *)malloc(n);
        strcpy(s->xjoin, s->extra);
        for (i = 0; i < s->nmore; i++) { strcat(s->xjoin, "\n"); strcat(s->xjoin, s->more[i]); }
    }
    m_tokenize_into(s, s->name);
    m_tokenize_into(s, s->desc);
    if (m->extra) m_tokenize_into(s, m_extra(s));
}

static void m_drop_more(m_sess *s)
{
    size_t i;
    for (i = 0; i < s->nmore; i++) free(s->more[i]);
    s->nmore = 0;
}

static void m_random_session(model *m, m_sess *s, size_t slot, size_t maxwords)
{
    size_t i;
    s->live = 1;
    s->id_len = (size_t)sprintf(s->id, "s%03lu%s", (unsigned long)slot, slot % 7 == 0 ? "-x" : "");
    s->has_start = rndn(4) != 0;
    s->start = s->has_start ? TIMES[rndn(NELEM(TIMES))] : 0;
    rand_text(s->name, sizeof s->name, maxwords / 2 + 1);
    rand_text(s->desc, sizeof s->desc, maxwords);
    rand_text(s->extra, sizeof s->extra, maxwords / 2);
    m_drop_more(s);
    if (rndn(20) == 0) strcat(s->desc, " \xC3");    /* trailing invalid byte */
    s->ntags = rndn(5);
    for (i = 0; i < s->ntags; i++) s->tags[i] = rndn(3) == 0 ? TAGS[0] : TAGS[rndn(NELEM(TAGS))];
    s->ntopics = rndn(3);
    for (i = 0; i < s->ntopics; i++) s->topics[i] = TOPICS[rndn(NELEM(TOPICS))];
    s->category = rndn(3) ? CATS[rndn(NELEM(CATS))] : NULL;
    s->sub_category = rndn(2) ? SUBS[rndn(NELEM(SUBS))] : NULL;
    s->status = rndn(4) ? STATS[rndn(NELEM(STATS))] : NULL;
    m_derive(m, s);
}

static ts_index_doc m_doc(const m_sess *s, size_t *tag_lens, size_t *topic_lens)
{
    ts_index_doc d;
    size_t i;
    memset(&d, 0, sizeof d);
    d.id = s->id; d.id_len = s->id_len;
    d.has_start_time = s->has_start; d.start_time_ms = s->start;
    d.name = s->name; d.name_len = strlen(s->name);
    d.description = s->desc; d.description_len = strlen(s->desc);
    d.tags = s->tags; d.tag_count = s->ntags;
    d.topics = s->topics; d.topic_count = s->ntopics;
    if (rnd() & 1) {
        for (i = 0; i < s->ntags; i++) tag_lens[i] = strlen(s->tags[i]);
        for (i = 0; i < s->ntopics; i++) topic_lens[i] = strlen(s->topics[i]);
        d.tag_lens = tag_lens;
        d.topic_lens = topic_lens;
    }
    if (s->category) { d.category = s->category; d.category_len = strlen(s->category); }
    if (s->sub_category) { d.sub_category = s->sub_category; d.sub_category_len = strlen(s->sub_category); }
    if (s->status) { d.status = s->status; d.status_len = strlen(s->status); }
    d.extra_text = m_extra(s); d.extra_text_len = strlen(d.extra_text);
    return d;
}

static ts_result m_put(ts_index *ix, const m_sess *s)
{
    size_t tl[8], pl[8];
    ts_index_doc d = m_doc(s, tl, pl);
    return ts_index_put(ix, &d);
}

typedef struct m_term { ref_tok t; int prefix; } m_term;

/* The query's distinct text terms in first-appearance order. */
static size_t m_query_terms(const char *text, m_term *out, size_t max)
{
    size_t n = text ? strlen(text) : 0, pos = 0, count = 0;
    while (pos < n) {
        size_t wb, we, nr, j, k;
        ref_tok raw[64];
        while (pos < n && strchr(" \t\n\v\f\r", text[pos])) pos++;
        wb = pos;
        while (pos < n && !strchr(" \t\n\v\f\r", text[pos])) pos++;
        we = pos;
        if (wb == we) continue;
        nr = ref_raw_tokens(text + wb, we - wb, raw, 64);
        for (j = 0; j < nr; j++) {
            int prefix = text[we - 1] == '*' && j + 1 == nr;
            int dup = 0;
            if (prefix ? raw[j].ncp < 2 : !ref_keep(&raw[j])) continue;
            for (k = 0; k < count; k++)
                if (out[k].prefix == prefix && out[k].t.n == raw[j].n && memcmp(out[k].t.s, raw[j].s, raw[j].n) == 0)
                    dup = 1;
            if (!dup && count < max) { out[count].t = raw[j]; out[count].prefix = prefix; count++; }
        }
    }
    return count;
}

static uint64_t m_tf(const m_sess *s, const m_term *t)
{
    size_t i;
    uint64_t tf = 0;
    for (i = 0; i < s->ntoks; i++) {
        const ref_tok *x = &s->toks[i];
        if (t->prefix ? (x->n >= t->t.n && memcmp(x->s, t->t.s, t->t.n) == 0)
                      : (x->n == t->t.n && memcmp(x->s, t->t.s, t->t.n) == 0))
            tf++;
    }
    return tf;
}

static int m_in(const char *const *list, size_t n, const char *v)
{
    size_t i;
    for (i = 0; i < n; i++) if (strcmp(list[i], v) == 0) return 1;
    return 0;
}

static int m_match(const m_sess *s, const ts_query *q, const m_term *terms, size_t nterms)
{
    int any = 0, all = 1, ncrit = 0;
    size_t i;
#define CRIT(x) do { int v_ = (x); ncrit++; if (v_) any = 1; else all = 0; } while (0)
    for (i = 0; i < nterms; i++) CRIT(m_tf(s, &terms[i]) > 0);
    for (i = 0; i < q->tag_count; i++) CRIT(m_in(s->tags, s->ntags, q->tags[i]));
    for (i = 0; i < q->topic_count; i++) CRIT(m_in(s->topics, s->ntopics, q->topics[i]));
    if (q->category) CRIT(s->category && strcmp(s->category, q->category) == 0);
    if (q->sub_category) CRIT(s->sub_category && strcmp(s->sub_category, q->sub_category) == 0);
    if (q->status) CRIT(s->status && strcmp(s->status, q->status) == 0);
    if (q->has_from || q->has_to)
        CRIT(s->has_start && (!q->has_from || s->start >= q->from_ms) && (!q->has_to || s->start <= q->to_ms));
#undef CRIT
    if (ncrit == 0) return 1;
    return q->op == TS_QUERY_OR ? any : all;
}

static int m_cmp_default(const m_sess *a, const m_sess *b)
{
    if (a->has_start != b->has_start) return a->has_start ? -1 : 1;
    if (a->has_start && a->start != b->start) return a->start > b->start ? -1 : 1;
    return ts__memcmp_len(a->id, a->id_len, b->id, b->id_len);
}

typedef struct m_hit { const m_sess *s; double score; } m_hit;
static int m_hit_cmp_default(const void *a, const void *b)
{
    return m_cmp_default(((const m_hit *)a)->s, ((const m_hit *)b)->s);
}
static int m_hit_cmp_score(const void *a, const void *b)
{
    const m_hit *x = (const m_hit *)a, *y = (const m_hit *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return m_cmp_default(x->s, y->s);
}

/* Runs q on the model and on the index; 1 when they agree. */
static int check_query(ts_index *ix, const model *m, const ts_query *q)
{
    m_term terms[32];
    size_t nterms = m_query_terms(q->text, terms, 32), i, j, nlive = 0, nhit = 0, begin, end;
    uint64_t total_dl = 0;
    double avgdl;
    m_hit *hits = (m_hit *)malloc(sizeof(m_hit) * (m->n + 1));
    ts_index_hits h;
    int ok = 1;
    for (i = 0; i < m->n; i++) {
        if (!m->s[i].live) continue;
        nlive++;
        total_dl += m->s[i].ntoks;
        if (m_match(&m->s[i], q, terms, nterms)) { hits[nhit].s = &m->s[i]; hits[nhit].score = 0; nhit++; }
    }
    avgdl = nlive && total_dl ? (double)total_dl / (double)nlive : 1.0;
    if (q->rank_bm25 && nterms) {
        uint64_t df[32];
        for (j = 0; j < nterms; j++) {
            df[j] = 0;
            for (i = 0; i < m->n; i++) if (m->s[i].live && m_tf(&m->s[i], &terms[j])) df[j]++;
        }
        for (i = 0; i < nhit; i++) {
            double sc = 0.0;
            for (j = 0; j < nterms; j++) {
                uint64_t tf = m_tf(hits[i].s, &terms[j]);
                if (tf) sc += ts__ix_bm25_term(ts__ix_bm25_idf(nlive, df[j]), tf, hits[i].s->ntoks, avgdl);
            }
            hits[i].score = sc;
        }
        qsort(hits, nhit, sizeof *hits, m_hit_cmp_score);
    } else {
        qsort(hits, nhit, sizeof *hits, m_hit_cmp_default);
    }
    begin = q->offset < nhit ? q->offset : nhit;
    end = q->limit && q->limit < nhit - begin ? begin + q->limit : nhit;
    if (ts_index_search(ix, q, &h) != TS_OK) { ok = 0; goto out; }
    if (h.total != nhit || h.count != end - begin) { ok = 0; goto out; }
    for (i = 0; i < h.count; i++) {
        const m_sess *s = hits[begin + i].s;
        if (h.id_lens[i] != s->id_len || memcmp(h.ids[i], s->id, s->id_len) != 0 || h.ids[i][h.id_lens[i]] != 0) ok = 0;
        if (q->rank_bm25 && h.scores[i] != hits[begin + i].score) ok = 0;
    }
    if (!q->rank_bm25 && h.scores) ok = 0;
out:
    if (!ok) {
        printf("  query mismatch: text=\"%s\" op=%d tags=%lu topics=%lu cat=%s sub=%s st=%s range=%d,%d "
               "[%lld,%lld] limit=%lu offset=%lu bm25=%d: model total %lu, index total %lu count %lu\n",
               q->text ? q->text : "(null)", q->op, (unsigned long)q->tag_count, (unsigned long)q->topic_count,
               q->category ? q->category : "-", q->sub_category ? q->sub_category : "-", q->status ? q->status : "-",
               q->has_from, q->has_to, (long long)q->from_ms, (long long)q->to_ms, (unsigned long)q->limit,
               (unsigned long)q->offset, q->rank_bm25, (unsigned long)nhit, (unsigned long)h.total,
               (unsigned long)h.count);
    }
    ts_index_hits_free(&h);
    free(hits);
    return ok;
}

typedef struct rq_store {
    char text[256];
    const char *tags[3], *topics[3];
} rq_store;

static void random_query(ts_query *q, rq_store *st)
{
    size_t i, nw = rndn(5), len = 0;
    memset(q, 0, sizeof *q);
    st->text[0] = 0;
    for (i = 0; i < nw; i++) {
        char w[64];
        const char *v = VOCAB[rndn(NVOCAB)];
        size_t r = rndn(10), k;
        strcpy(w, v);
        if (r < 2) {
            /* a prefix of a word (maybe cutting a UTF-8 sequence) */
            k = 1 + rndn(strlen(v));
            w[k] = '*'; w[k + 1] = 0;
        } else if (r < 4) {
            strcat(w, "*");
        } else if (r == 4) {
            for (k = 0; w[k]; k++) if (w[k] >= 'a' && w[k] <= 'z' && (rnd() & 1)) w[k] = (char)(w[k] - 32);
        } else if (r == 5) {
            strcpy(w, rndn(2) ? "*" : "--");
        }
        if (len + strlen(w) + 2 >= sizeof st->text) break;
        if (len) st->text[len++] = (char)(rndn(4) ? ' ' : '\t');
        strcpy(st->text + len, w);
        len += strlen(w);
    }
    if (nw || rndn(4) == 0) q->text = st->text;
    q->tag_count = rndn(5) < 3 ? 0 : 1 + rndn(2);
    for (i = 0; i < q->tag_count; i++) st->tags[i] = rndn(8) ? TAGS[rndn(NELEM(TAGS))] : "nope";
    q->tags = q->tag_count ? st->tags : NULL;
    q->topic_count = rndn(5) < 4 ? 0 : 1 + rndn(2);
    for (i = 0; i < q->topic_count; i++) st->topics[i] = TOPICS[rndn(NELEM(TOPICS))];
    q->topics = q->topic_count ? st->topics : NULL;
    if (rndn(4) == 0) q->category = rndn(8) ? CATS[rndn(NELEM(CATS))] : "Nope";
    if (rndn(5) == 0) q->sub_category = SUBS[rndn(NELEM(SUBS))];
    if (rndn(4) == 0) q->status = STATS[rndn(NELEM(STATS))];
    if (rndn(3) == 0) {
        q->has_from = rndn(3) != 0;
        q->has_to = !q->has_from || rndn(2);
        q->from_ms = TIMES[rndn(NELEM(TIMES))] + (int64_t)rndn(3) - 1;
        q->to_ms = rndn(6) ? q->from_ms + (int64_t)rndn(4) * 2629800000ll + (int64_t)rndn(3) - 1
                           : TIMES[rndn(NELEM(TIMES))];
    }
    q->op = rndn(2) ? TS_QUERY_OR : TS_QUERY_AND;
    q->limit = rndn(3) ? 0 : rndn(12);
    q->offset = rndn(3) ? 0 : rndn(8);
    q->rank_bm25 = rndn(4) == 0;
}

static void model_free(model *m)
{
    size_t i;
    for (i = 0; i < m->n; i++) {
        free(m->s[i].toks);
        free(m->s[i].xjoin);
        m_drop_more(&m->s[i]);
    }
    free(m->s);
}

/* Every live session's terms (and, with keep_extra_text, its metadata
   part) agree with the index: ts_index_check_doc. */
static int m_check_docs(ts_index *ix, const model *m)
{
    size_t i, bad = 0, miss, ext;
    for (i = 0; i < m->n; i++) {
        size_t tl[8], pl[8];
        ts_index_doc d;
        if (!m->s[i].live) continue;
        d = m_doc(&m->s[i], tl, pl);
        if (ts_index_check_doc(ix, &d, &miss, &ext) != TS_OK) bad++;
        d.keep_extra_text = 1;
        d.extra_text = "ignored words"; d.extra_text_len = 13;
        if (ts_index_check_doc(ix, &d, &miss, &ext) != TS_OK) bad++;
    }
    return bad == 0;
}

/* save -> load -> save gives the same bytes; the loaded copy replaces ix */
static ts_index *roundtrip(ts_index *ix, int *ok)
{
    void *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    ts_index *cp = NULL;
    ts_index_config cfg = ts_index_config_default();
    *ok = 0;
    if (ts_index_save(ix, &b1, &n1) != TS_OK) return ix;
    if (ts_index_create(&cfg, &cp) != TS_OK) return ix;
    if (ts_index_load(cp, b1, n1) != TS_OK) { ts_index_destroy(cp); return ix; }
    if (ts_index_save(cp, &b2, &n2) != TS_OK) { ts_index_destroy(cp); return ix; }
    *ok = n1 == n2 && memcmp(b1, b2, n1) == 0;
    ts_index_free_buffer(ix, b1, n1);
    ts_index_free_buffer(cp, b2, n2);
    ts_index_destroy(ix);
    return cp;
}

static void differential(int extra, size_t nslots, size_t ops, size_t maxwords)
{
    model m;
    ts_index *ix;
    ts_index_config cfg = ts_index_config_default();
    size_t op, queries = 0, bad = 0;
    cfg.index_extra_text = extra;
    TS_CHECK_OK(ts_index_create(&cfg, &ix));
    m.n = nslots; m.extra = extra;
    m.s = (m_sess *)calloc(nslots, sizeof(m_sess));
    for (op = 0; op < ops; op++) {
        size_t r = rndn(100), slot = rndn(nslots);
        m_sess *s = &m.s[slot];
        if (r < (extra ? 40u : 50u)) {
            m_random_session(&m, s, slot, maxwords);
            TS_CHECK_OK(m_put(ix, s));
        } else if (r < (extra ? 48u : 60u)) {
            TS_CHECK_EQ_INT(ts_index_remove(ix, s->id, s->id_len), s->live ? TS_OK : TS_E_NOTFOUND);
            s->live = 0;
        } else if (extra && r < 54) {
            /* new metadata, the extra text kept (a new session gets none) */
            char keep[256], *more[4];
            size_t nmore = s->nmore, tl[8], pl[8];
            int was = s->live;
            ts_index_doc d;
            strcpy(keep, s->extra);
            memcpy(more, s->more, sizeof more);
            s->nmore = 0;
            m_random_session(&m, s, slot, maxwords);
            if (was) { strcpy(s->extra, keep); memcpy(s->more, more, sizeof more); s->nmore = nmore; }
            else { s->extra[0] = 0; while (nmore) free(more[--nmore]); }
            m_derive(&m, s);
            d = m_doc(s, tl, pl);
            d.keep_extra_text = 1;
            d.extra_text = "not this"; d.extra_text_len = 8;
            TS_CHECK_OK(ts_index_put(ix, &d));
        } else if (extra && r < 62) {
            /* extra text changed alone: a piece goes and/or one comes */
            char add[256];
            const char *rem = NULL;
            size_t k = 0;
            int do_rem = rndn(2) || s->nmore == 4, do_add = !do_rem || rndn(2);
            if (!s->live) {
                TS_CHECK_EQ_INT(ts_index_update_text(ix, s->id, s->id_len, "x", 1, NULL, 0), TS_E_NOTFOUND);
                continue;
            }
            rand_text(add, sizeof add, maxwords / 2);
            if (do_rem) {
                /* a piece added before, or the text of the last full put */
                k = s->nmore == 4 ? rndn(4) : rndn(s->nmore + 1);
                rem = k == s->nmore ? s->extra : s->more[k];
            }
            TS_CHECK_OK(ts_index_update_text(ix, s->id, s->id_len, do_add ? add : NULL, do_add ? strlen(add) : 0,
                                             rem, rem ? strlen(rem) : 0));
            if (rem && k == s->nmore) s->extra[0] = 0;
            else if (rem) { free(s->more[k]); s->more[k] = s->more[--s->nmore]; }
            if (do_add) {
                s->more[s->nmore] = (char *)malloc(strlen(add) + 1);
                strcpy(s->more[s->nmore++], add);
            }
            m_derive(&m, s);
        } else if (extra && r < 64) {
            /* text the session's extra text does not hold: refused, no change */
            static const char *const not_there[] = { "zzqqxx", "alpha zzqqxx" };
            const char *t = not_there[rndn(2)];
            TS_CHECK_EQ_INT(ts_index_update_text(ix, s->id, s->id_len, "alpha", 5, t, strlen(t)),
                            s->live ? TS_E_INVALID : TS_E_NOTFOUND);
        } else {
            ts_query q;
            rq_store st;
            random_query(&q, &st);
            queries++;
            if (!check_query(ix, &m, &q) && bad++ < 3) TS_CHECK(!"query results differ from the model");
        }
        if (op % 700 == 699) {
            int ok;
            TS_CHECK_OK(ts_index_verify(ix, 0, NULL));
            TS_CHECK(m_check_docs(ix, &m));
            if (rndn(2)) {
                ix = roundtrip(ix, &ok);
                TS_CHECK(ok);
            } else {
                TS_CHECK_OK(ts_index_optimize(ix, (int64_t)op));
            }
        }
    }
    TS_CHECK_OK(ts_index_verify(ix, 0, NULL));
    TS_CHECK_EQ_INT(bad, 0);
    TS_CHECK(queries > ops / 3);
    ts_index_destroy(ix);
    model_free(&m);
}

TS_TEST(differential_small)
{
    size_t scale = long_mode() ? 10 : 1;
    init_times();
    differential(0, 60, 3000 * scale, 6);
    differential(1, 400, 4000 * scale, 10);
}

TS_TEST(differential_bitmaps)
{
    /* 5000 sessions: the common tag and status lists become bitmaps */
    model m;
    ts_index *ix;
    size_t i, n = 5000, nq = (size_t)ts_test_count(300, 3000), bad = 0;
    TS_CHECK_OK(ts_index_create(NULL, &ix));
    m.n = n; m.extra = 0;
    m.s = (m_sess *)calloc(n, sizeof(m_sess));
    for (i = 0; i < n; i++) {
        m_random_session(&m, &m.s[i], i, 4);
        TS_CHECK_OK(m_put(ix, &m.s[i]));
    }
    for (i = 0; i < nq; i++) {
        ts_query q;
        rq_store st;
        random_query(&q, &st);
        if (!check_query(ix, &m, &q) && bad++ < 3) TS_CHECK(!"query results differ from the model");
        if (i == nq / 2) {
            /* churn, then compare again on the changed index */
            size_t k;
            for (k = 0; k < 500; k++) {
                size_t slot = rndn(n);
                if (rndn(3) == 0) {
                    TS_CHECK_EQ_INT(ts_index_remove(ix, m.s[slot].id, m.s[slot].id_len),
                                    m.s[slot].live ? TS_OK : TS_E_NOTFOUND);
                    m.s[slot].live = 0;
                } else {
                    m_random_session(&m, &m.s[slot], slot, 4);
                    TS_CHECK_OK(m_put(ix, &m.s[slot]));
                }
            }
            TS_CHECK_OK(ts_index_verify(ix, 0, NULL));
        }
    }
    TS_CHECK_EQ_INT(bad, 0);
    ts_index_destroy(ix);
    model_free(&m);
}

TS_TEST(differential_many_chunks)
{
    /* > 65536 sessions: postings span several 64K chunks */
    model m;
    ts_index *ix;
    size_t i, n = 70000, bad = 0;
    static const char *const words[] = { "red", "green", "blue", "the cyan", "Magenta ink" };
    /* half of this program's time under valgrind, where the small run
       leaves it out: the ASan run of the suite covers it */
    if (ts_test_small()) return;
    TS_CHECK_OK(ts_index_create(NULL, &ix));
    m.n = n; m.extra = 0;
    m.s = (m_sess *)calloc(n, sizeof(m_sess));
    for (i = 0; i < n; i++) {
        m_sess *s = &m.s[i];
        s->live = 1;
        s->id_len = (size_t)sprintf(s->id, "k%06lu", (unsigned long)i);
        s->has_start = i % 9 != 0;
        s->start = s->has_start ? TIMES[rndn(NELEM(TIMES))] : 0;
        strcpy(s->name, words[rndn(NELEM(words))]);
        s->ntags = rndn(2);
        if (s->ntags) s->tags[0] = TAGS[rndn(3)];
        s->status = rndn(3) ? STATS[rndn(NELEM(STATS))] : NULL;
        m_derive(&m, s);
        TS_CHECK_OK(m_put(ix, s));
    }
    for (i = 0; i < 40; i++) {
        ts_query q;
        rq_store st;
        const char *w[] = { "red", "gre*", "blue cyan", "magenta", "ink* red", "" };
        memset(&q, 0, sizeof q);
        q.text = w[rndn(NELEM(w))];
        if (rndn(2)) { st.tags[0] = TAGS[rndn(3)]; q.tags = st.tags; q.tag_count = 1; }
        if (rndn(2)) q.status = STATS[rndn(NELEM(STATS))];
        if (rndn(3) == 0) { q.has_from = 1; q.from_ms = TIMES[rndn(NELEM(TIMES))]; }
        q.op = rndn(2) ? TS_QUERY_OR : TS_QUERY_AND;
        q.limit = rndn(2) ? 0 : 1 + rndn(50);
        q.offset = rndn(3) ? 0 : rndn(70000);
        q.rank_bm25 = rndn(5) == 0;
        if (!check_query(ix, &m, &q) && bad++ < 3) TS_CHECK(!"query results differ from the model");
    }
    TS_CHECK_EQ_INT(bad, 0);
    {
        int ok;
        ix = roundtrip(ix, &ok);
        TS_CHECK(ok);
        TS_CHECK_OK(ts_index_verify(ix, 0, NULL));
    }
    ts_index_destroy(ix);
    model_free(&m);
}

/* ---- hand-made cases: the documented readings of the rules --------------------- */

static ts_index *small_index(void)
{
    static const char *const t_work[] = { "work" }, *const t_both[] = { "work", "home" }, *const t_home[] = { "home" };
    ts_index *ix;
    ts_index_doc d[6];
    memset(d, 0, sizeof d);
    d[0].id = "a1"; d[0].id_len = 2; d[0].has_start_time = 1; d[0].start_time_ms = 3000;
    d[0].name = "Testing the parser"; d[0].name_len = strlen(d[0].name);
    d[0].tags = t_work; d[0].tag_count = 1; d[0].status = "done"; d[0].status_len = 4;
    d[1].id = "a2"; d[1].id_len = 2; d[1].has_start_time = 1; d[1].start_time_ms = 3000;
    d[1].name = "another test"; d[1].name_len = strlen(d[1].name);
    d[1].tags = t_both; d[1].tag_count = 2; d[1].category = "Dev"; d[1].category_len = 3;
    d[2].id = "b"; d[2].id_len = 1; d[2].has_start_time = 1; d[2].start_time_ms = -5;
    d[2].description = "Team tea"; d[2].description_len = 8;
    d[2].tags = t_home; d[2].tag_count = 1; d[2].category = ""; d[2].category_len = 0;
    d[3].id = "c"; d[3].id_len = 1;               /* no startTime */
    d[3].name = "tests tests tests"; d[3].name_len = strlen(d[3].name);
    d[4].id = "0z"; d[4].id_len = 2;              /* no startTime, sorts before "c" */
    d[4].name = "x"; d[4].name_len = 1;
    d[5].id = "d"; d[5].id_len = 1; d[5].has_start_time = 1; d[5].start_time_ms = 10000;
    d[5].description = "the and for"; d[5].description_len = 11;
    if (ts_index_create(NULL, &ix) != TS_OK) return NULL;
    if (ts_index_build(ix, d, 6, 42) != TS_OK) { ts_index_destroy(ix); return NULL; }
    return ix;
}

static const char *ids_of(ts_index *ix, const ts_query *q)
{
    static char out[512];
    ts_index_hits h;
    size_t i, n = 0;
    out[0] = 0;
    if (ts_index_search(ix, q, &h) != TS_OK) return "ERROR";
    n = (size_t)sprintf(out, "%lu:", (unsigned long)h.total);
    for (i = 0; i < h.count; i++) n += (size_t)sprintf(out + n, "%s%s", i ? "," : "", h.ids[i]);
    ts_index_hits_free(&h);
    return out;
}

TS_TEST(semantics_by_example)
{
    ts_index *ix = small_index();
    ts_query q;
    const char *tags2[] = { "work", "home" };
    const char *tag1[] = { "home" };
    TS_CHECK(ix != NULL);
    if (!ix) return;
    memset(&q, 0, sizeof q);
    /* no criteria: everything, startTime desc, ties by id, no startTime last */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:d,a1,a2,b,0z,c");
    q.text = "the";                       /* stop words only: no criterion */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:d,a1,a2,b,0z,c");
    q.op = TS_QUERY_OR;
    q.tags = tag1; q.tag_count = 1;       /* OR with nothing from text: just the tag */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "2:a2,b");
    q.text = "tests";                     /* OR: text or tag */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "3:a2,b,c");
    q.op = TS_QUERY_AND;
    TS_CHECK_EQ_STR(ids_of(ix, &q), "0:");
    q.text = NULL;
    q.tags = tags2; q.tag_count = 2;      /* AND: every tag */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "1:a2");
    q.op = TS_QUERY_OR;                   /* OR: any tag */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "3:a1,a2,b");
    memset(&q, 0, sizeof q);
    q.text = "test*";                     /* prefix */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "3:a1,a2,c");
    q.text = "an*";                       /* a prefix skips the stop-word rule */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "1:a2");
    q.text = "x*";                        /* ... but not the length rule: no criterion */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:d,a1,a2,b,0z,c");
    q.text = "te* parser";                /* AND over words */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "1:a1");
    q.text = "parser-te*";                /* the last token of the word is the prefix */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "1:a1");
    q.text = "nothing te*";               /* a term nobody has is still a criterion */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "0:");
    q.op = TS_QUERY_OR;
    TS_CHECK_EQ_STR(ids_of(ix, &q), "4:a1,a2,b,c");
    q.op = TS_QUERY_AND;
    q.text = "TEAM";                      /* case folding */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "1:b");
    q.text = NULL;
    q.category = "";                      /* present but empty matches only "" */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "1:b");
    q.category = "dev";                   /* byte for byte */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "0:");
    q.category = NULL;
    q.has_from = 1; q.from_ms = -5;       /* range: inclusive, no startTime never matches */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "4:d,a1,a2,b");
    q.has_to = 1; q.to_ms = 3000;
    TS_CHECK_EQ_STR(ids_of(ix, &q), "3:a1,a2,b");
    q.from_ms = 3001;
    TS_CHECK_EQ_STR(ids_of(ix, &q), "0:");
    q.has_from = 0;
    q.to_ms = -6;
    TS_CHECK_EQ_STR(ids_of(ix, &q), "0:");
    q.has_to = 0;
    q.limit = 2; q.offset = 1;            /* limit/offset after ordering, total before */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:a1,a2");
    q.offset = 5;
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:c");
    q.offset = 6;
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:");
    q.limit = (size_t)-1; q.offset = 4;
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:0z,c");
    q.limit = 0; q.offset = 0;
    q.text = "test*"; q.rank_bm25 = 1;    /* BM25: "tests tests tests" first */
    TS_CHECK_EQ_STR(ids_of(ix, &q), "3:c,a1,a2"); /* a1, a2 tie: default order */
    q.text = NULL;                        /* BM25 without text: default order, scores 0 */
    {
        ts_index_hits h;
        TS_CHECK_OK(ts_index_search(ix, &q, &h));
        TS_CHECK(h.scores != NULL && h.count == 6 && h.scores[0] == 0.0);
        TS_CHECK_EQ_STR(h.ids[0], "d");
        ts_index_hits_free(&h);
    }
    ts_index_destroy(ix);
}

TS_TEST(api_errors)
{
    ts_index *ix;
    ts_index_doc d;
    ts_query q;
    ts_index_hits h;
    ts_error_info e;
    char longid[200];
    const char *nulltag[] = { NULL };
    TS_CHECK_EQ_INT(ts_index_create(NULL, NULL), TS_E_INVALID);
    ts_index_destroy(NULL);
    TS_CHECK_OK(ts_index_create(NULL, &ix));
    memset(&d, 0, sizeof d);
    TS_CHECK_EQ_INT(ts_index_put(ix, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_index_put(ix, &d), TS_E_INVALID);
    d.id = ".."; d.id_len = 2;
    TS_CHECK_EQ_INT(ts_index_put(ix, &d), TS_E_INVALID);
    d.id = "a/b"; d.id_len = 3;
    TS_CHECK_EQ_INT(ts_index_put(ix, &d), TS_E_INVALID);
    memset(longid, 'x', sizeof longid);
    d.id = longid; d.id_len = 129;
    TS_CHECK_EQ_INT(ts_index_put(ix, &d), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_index_last_error(ix, &e), TS_E_INVALID);
    TS_CHECK(strstr(e.message, "id") != NULL);
    d.id_len = 128;
    TS_CHECK_OK(ts_index_put(ix, &d));
    TS_CHECK(ts_index_contains(ix, longid, 128));
    d.id = "ok"; d.id_len = 2; d.tag_count = 1;
    TS_CHECK_EQ_INT(ts_index_put(ix, &d), TS_E_INVALID);
    d.tags = nulltag;
    TS_CHECK_EQ_INT(ts_index_put(ix, &d), TS_E_INVALID);
    d.tag_count = 0; d.name_len = 3;
    TS_CHECK_EQ_INT(ts_index_put(ix, &d), TS_E_INVALID);
    TS_CHECK(!ts_index_contains(ix, "ok", 2));
    TS_CHECK_EQ_INT(ts_index_remove(ix, "ok", 2), TS_E_NOTFOUND);
    TS_CHECK_OK(ts_index_remove(ix, longid, 128));
    TS_CHECK_EQ_INT(ts_index_remove(ix, longid, 128), TS_E_NOTFOUND);
    memset(&q, 0, sizeof q);
    q.op = 7;
    TS_CHECK_EQ_INT(ts_index_search(ix, &q, &h), TS_E_INVALID);
    TS_CHECK(h.ids == NULL && h.count == 0);
    ts_index_hits_free(&h);
    q.op = 0; q.tag_count = 1;
    TS_CHECK_EQ_INT(ts_index_search(ix, &q, &h), TS_E_INVALID);
    q.tags = nulltag;
    TS_CHECK_EQ_INT(ts_index_search(ix, &q, &h), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_index_search(ix, NULL, &h), TS_E_INVALID);
    q.tag_count = 0;
    TS_CHECK_OK(ts_index_search(ix, &q, &h));
    TS_CHECK_EQ_INT(h.total, 0);
    ts_index_hits_free(&h);
    ts_index_hits_free(NULL);
    TS_CHECK_EQ_INT(ts_index_build(ix, NULL, 3, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_index_load(ix, NULL, 3), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_index_save(ix, NULL, NULL), TS_E_INVALID);
    ts_index_destroy(ix);
}

TS_TEST(update_and_remove_paths)
{
    ts_index *ix = small_index();
    ts_index_doc d;
    ts_query q;
    ts_index_stats st;
    if (!ix) { TS_CHECK(0); return; }
    memset(&q, 0, sizeof q);
    memset(&d, 0, sizeof d);
    /* move a1 to the end of time and change its words */
    d.id = "a1"; d.id_len = 2; d.has_start_time = 1; d.start_time_ms = 99999;
    d.name = "Renamed"; d.name_len = 7;
    TS_CHECK_OK(ts_index_put(ix, &d));
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:a1,d,a2,b,0z,c");
    q.text = "parser";
    TS_CHECK_EQ_STR(ids_of(ix, &q), "0:");
    q.text = "renamed";
    TS_CHECK_EQ_STR(ids_of(ix, &q), "1:a1");
    q.text = NULL;
    q.status = "done";
    TS_CHECK_EQ_STR(ids_of(ix, &q), "0:");
    q.status = NULL;
    /* drop its startTime: it moves to the end */
    d.has_start_time = 0;
    TS_CHECK_OK(ts_index_put(ix, &d));
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:d,a2,b,0z,a1,c");
    TS_CHECK_OK(ts_index_remove(ix, "b", 1));
    TS_CHECK_EQ_STR(ids_of(ix, &q), "5:d,a2,0z,a1,c");
    TS_CHECK_OK(ts_index_stats_get(ix, &st));
    TS_CHECK_EQ_INT(st.sessions, 5);
    TS_CHECK(st.dead_terms > 0);          /* "parser", "team", ... */
    TS_CHECK_EQ_INT(st.changes_since_optimize, 3);
    TS_CHECK(st.has_last_built && st.last_built_ms == 42);
    TS_CHECK_OK(ts_index_optimize(ix, 77));
    TS_CHECK_OK(ts_index_stats_get(ix, &st));
    TS_CHECK_EQ_INT(st.dead_terms, 0);
    TS_CHECK_EQ_INT(st.changes_since_optimize, 0);
    TS_CHECK(st.has_last_optimized && st.last_optimized_ms == 77);
    TS_CHECK(st.disk_bytes > 24 && st.memory_bytes > st.disk_bytes);
    TS_CHECK_EQ_STR(ids_of(ix, &q), "5:d,a2,0z,a1,c");
    /* a re-added id after optimize gets a fresh number */
    d.id = "b"; d.id_len = 1; d.has_start_time = 1; d.start_time_ms = 1;
    TS_CHECK_OK(ts_index_put(ix, &d));
    TS_CHECK_EQ_STR(ids_of(ix, &q), "6:d,a2,b,0z,a1,c");
    TS_CHECK_OK(ts_index_verify(ix, 0, NULL));
    ts_index_clear(ix);
    TS_CHECK_EQ_STR(ids_of(ix, &q), "0:");
    TS_CHECK_OK(ts_index_verify(ix, 0, NULL));
    ts_index_destroy(ix);
}

static int month_cb(void *user, const char *m, size_t n, size_t count)
{
    char *out = (char *)user;
    sprintf(out + strlen(out), "%.*s=%lu;", (int)n, m, (unsigned long)count);
    return 0;
}

TS_TEST(months_and_stats)
{
    ts_index *ix;
    ts_index_doc d;
    char out[256] = "";
    ts_index_stats st;
    int64_t times[] = { 1700000000000ll, 1700000000001ll, -1, 0, -62167219200001ll, 253402300800000ll };
    char id[8];
    size_t i;
    TS_CHECK_OK(ts_index_create(NULL, &ix));
    memset(&d, 0, sizeof d);
    for (i = 0; i < NELEM(times); i++) {
        sprintf(id, "m%lu", (unsigned long)i);
        d.id = id; d.id_len = strlen(id); d.has_start_time = 1; d.start_time_ms = times[i];
        d.name = "alpha beta"; d.name_len = 10;
        TS_CHECK_OK(ts_index_put(ix, &d));
    }
    TS_CHECK_OK(ts_index_months(ix, month_cb, out));
    TS_CHECK_EQ_STR(out, "-0001-12=1;1969-12=1;1970-01=1;2023-11=2;10000-01=1;");
    TS_CHECK_OK(ts_index_stats_get(ix, &st));
    TS_CHECK_EQ_INT(st.sessions, 6);
    TS_CHECK_EQ_INT(st.text_terms, 2);
    TS_CHECK_EQ_INT(st.month_terms, 5);
    TS_CHECK_EQ_INT(st.terms, 7);
    TS_CHECK_EQ_INT(st.postings, 18);
    TS_CHECK_EQ_INT(st.text_tokens, 12);
    ts_index_destroy(ix);
}

/* ---- query strings ---------------------------------------------------------------- */

static ts_result qp(const char *s, ts_query_parsed *p, ts_error_info *e)
{
    return ts_query_parse(s, strlen(s), NULL, p, e);
}

TS_TEST(query_parser)
{
    ts_query_parsed p;
    ts_error_info e;
    const ts_query *q = &p.query;
    TS_CHECK_OK(qp("foo  bar* tag:x tag:\"a b\" topic:t category:\"Deep work\" subcategory:Z status:done "
                   "from:-5 to:10 or limit:3 offset:2 rank:bm25", &p, &e));
    TS_CHECK_EQ_STR(q->text, "foo bar*");
    TS_CHECK_EQ_INT(q->tag_count, 2);
    TS_CHECK_EQ_STR(q->tags[0], "x");
    TS_CHECK_EQ_STR(q->tags[1], "a b");
    TS_CHECK_EQ_INT(q->topic_count, 1);
    TS_CHECK_EQ_STR(q->topics[0], "t");
    TS_CHECK_EQ_STR(q->category, "Deep work");
    TS_CHECK_EQ_STR(q->sub_category, "Z");
    TS_CHECK_EQ_STR(q->status, "done");
    TS_CHECK(q->has_from && q->from_ms == -5 && q->has_to && q->to_ms == 10);
    TS_CHECK_EQ_INT(q->op, TS_QUERY_OR);
    TS_CHECK(q->limit == 3 && q->offset == 2 && q->rank_bm25 == 1);
    ts_query_parsed_free(&p);
    TS_CHECK(p.mem_ == NULL);
    TS_CHECK_OK(qp("", &p, &e));
    TS_CHECK(q->text == NULL && q->tag_count == 0 && q->category == NULL && q->op == TS_QUERY_AND);
    ts_query_parsed_free(&p);
    TS_CHECK_OK(qp("http://x.org foo:bar \"rank:bm25\" \"two words\" OR", &p, &e));
    TS_CHECK_EQ_STR(q->text, "http://x.org foo:bar rank:bm25 two words");
    TS_CHECK_EQ_INT(q->op, TS_QUERY_OR);
    TS_CHECK_EQ_INT(q->rank_bm25, 0);
    ts_query_parsed_free(&p);
    TS_CHECK_OK(qp("tag:\"a\\\"b\\\\c\" tag:\"\" status:\"\" op:and AND rank:time", &p, &e));
    TS_CHECK_EQ_STR(q->tags[0], "a\"b\\c");
    TS_CHECK_EQ_STR(q->tags[1], "");
    TS_CHECK_EQ_STR(q->status, "");
    TS_CHECK_EQ_INT(q->op, TS_QUERY_AND);
    ts_query_parsed_free(&p);
    TS_CHECK_OK(qp("from:-9223372036854775808 to:9223372036854775807 tag:a:b", &p, &e));
    TS_CHECK(q->from_ms == INT64_MIN && q->to_ms == INT64_MAX);
    TS_CHECK_EQ_STR(q->tags[0], "a:b");
    ts_query_parsed_free(&p);
    if (sizeof(size_t) == 8) {
        TS_CHECK_OK(qp("limit:18446744073709551615", &p, &e));
        TS_CHECK(q->limit == (size_t)-1);
        ts_query_parsed_free(&p);
        TS_CHECK_EQ_INT(qp("limit:18446744073709551616", &p, &e), TS_E_INVALID);
    }
    {
        static const char *const bad[] = {
            "tag:\"abc", "tag:\"a\"b", "tag:", "limit:-1", "limit:abc", "limit:\"3\"", "from:99999999999999999999",
            "from:-9223372036854775809", "to:", "category:a category:b", "and or", "op:and or", "op:xor",
            "rank:foo", "rank:bm25 rank:time", "offset:1 offset:1", "\"unterminated", "x \"a\\", "from:1-2",
            "status:x status:x"
        };
        size_t i;
        for (i = 0; i < NELEM(bad); i++) {
            ts_result r = qp(bad[i], &p, &e);
            TS_CHECK_EQ_INT(r, TS_E_INVALID);
            if (r != TS_E_INVALID) printf("  accepted: %s\n", bad[i]);
            TS_CHECK(e.code == TS_E_INVALID && e.message[0] != 0);
            TS_CHECK(p.mem_ == NULL);
        }
    }
    TS_CHECK_EQ_INT(ts_query_parse("a\0b", 3, NULL, &p, &e), TS_E_INVALID);
    TS_CHECK(strstr(e.message, "NUL") != NULL);
    {
        char *big = (char *)malloc(TASKSTORE_MAX_QUERY + 2);
        memset(big, 'a', TASKSTORE_MAX_QUERY + 1);
        TS_CHECK_EQ_INT(ts_query_parse(big, TASKSTORE_MAX_QUERY + 1, NULL, &p, &e), TS_E_TOOBIG);
        TS_CHECK_OK(ts_query_parse(big, TASKSTORE_MAX_QUERY, NULL, &p, NULL));
        TS_CHECK(strlen(q->text) == TASKSTORE_MAX_QUERY);
        ts_query_parsed_free(&p);
        free(big);
    }
    TS_CHECK_EQ_INT(ts_query_parse(NULL, 1, NULL, &p, &e), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_query_parse("x", 1, NULL, NULL, NULL), TS_E_INVALID);
    /* a parsed query runs */
    {
        ts_index *ix = small_index();
        TS_CHECK_OK(qp("tag:work tag:home or", &p, NULL));
        TS_CHECK_EQ_STR(ids_of(ix, q), "3:a1,a2,b");
        ts_query_parsed_free(&p);
        TS_CHECK_OK(qp("te* from:0 limit:1", &p, NULL));
        TS_CHECK_EQ_STR(ids_of(ix, q), "2:a1");
        ts_query_parsed_free(&p);
        ts_index_destroy(ix);
    }
}

/* ---- serialization -------------------------------------------------------------- */

typedef struct count_alloc {
    size_t live, peak, limit_block;
    long countdown;               /* fail when it reaches 0; < 0 never */
    long calls;
} count_alloc;

static void *ca_alloc(size_t n, void *u)
{
    count_alloc *c = (count_alloc *)u;
    void *p;
    c->calls++;
    if (c->countdown == 0) return NULL;
    if (c->countdown > 0) c->countdown--;
    if (c->limit_block && n > c->limit_block) return NULL;
    p = malloc(n);
    if (p) { c->live += n; if (c->live > c->peak) c->peak = c->live; }
    return p;
}
static void *ca_realloc(void *p, size_t o, size_t n, void *u)
{
    count_alloc *c = (count_alloc *)u;
    void *q;
    c->calls++;
    if (c->countdown == 0) return NULL;
    if (c->countdown > 0) c->countdown--;
    if (c->limit_block && n > c->limit_block) return NULL;
    q = realloc(p, n);
    if (q) { c->live = c->live - o + n; if (c->live > c->peak) c->peak = c->live; }
    return q;
}
static void ca_free(void *p, size_t n, void *u)
{
    count_alloc *c = (count_alloc *)u;
    c->live -= n;
    free(p);
}

static ts_index_config counted(count_alloc *c)
{
    ts_index_config cfg = ts_index_config_default();
    memset(c, 0, sizeof *c);
    c->countdown = -1;
    cfg.alloc.alloc_fn = ca_alloc;
    cfg.alloc.realloc_fn = ca_realloc;
    cfg.alloc.free_fn = ca_free;
    cfg.alloc.user = c;
    return cfg;
}

static size_t put_varint(unsigned char *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (unsigned char)(v | 0x80); v >>= 7; }
    p[n++] = (unsigned char)v;
    return n;
}

/* wraps a payload in a header with a correct checksum */
static size_t wrap(const unsigned char *payload, size_t n, unsigned char *out, uint32_t flags)
{
    ts__ix_crc crc;
    memcpy(out, "TSIX", 4);
    ts__ix_put_u32le(out + 4, (flags & 1) ? 2 : 1);   /* extra text: version 2 */
    ts__ix_put_u32le(out + 8, flags);
    ts__ix_put_u32le(out + 12, (uint32_t)n);
    ts__ix_put_u32le(out + 16, 0);
    memcpy(out + 24, payload, n);
    ts__ix_crc_init(&crc);
    ts__ix_put_u32le(out + 20, ts__ix_crc_update(&crc, ts__ix_crc_update(&crc, 0, out, 20), out + 24, n));
    return n + 24;
}

TS_TEST(serialization_roundtrip_and_corruption)
{
    ts_index *ix = small_index(), *ld;
    void *buf;
    size_t len, i;
    unsigned char *b;
    count_alloc ca;
    ts_index_config cfg = counted(&ca);
    ts_query q;
    TS_CHECK(ix != NULL);
    if (!ix) return;
    TS_CHECK_OK(ts_index_save(ix, &buf, &len));
    b = (unsigned char *)buf;
    TS_CHECK_OK(ts_index_create(&cfg, &ld));
    TS_CHECK_OK(ts_index_load(ld, buf, len));
    memset(&q, 0, sizeof q);
    TS_CHECK_EQ_STR(ids_of(ld, &q), "6:d,a1,a2,b,0z,c");
    q.text = "te*"; q.rank_bm25 = 1;
    {
        char want[512];
        strcpy(want, ids_of(ix, &q));
        TS_CHECK_EQ_STR(ids_of(ld, &q), want);
    }
    /* every truncation and every single-bit flip is refused; the index stays */
    for (i = 0; i < len; i++) {
        ts_result r = ts_index_load(ld, b, i);
        TS_CHECK_EQ_INT(r, TS_E_CORRUPT);
    }
    for (i = 0; i < len * 8; i++) {
        ts_result r;
        b[i / 8] ^= (unsigned char)(1u << (i % 8));
        r = ts_index_load(ld, b, len);
        TS_CHECK(r == TS_E_CORRUPT || r == TS_E_VERSION);
        b[i / 8] ^= (unsigned char)(1u << (i % 8));
    }
    memset(&q, 0, sizeof q);
    TS_CHECK_EQ_STR(ids_of(ld, &q), "6:d,a1,a2,b,0z,c");
    {
        ts_error_info e;
        TS_CHECK_EQ_INT(b[4], 1);                 /* no extra text: the 0.1.0 format */
        b[4] = TS_INDEX_FORMAT_VERSION + 1;
        TS_CHECK_EQ_INT(ts_index_load(ld, b, len), TS_E_VERSION);
        TS_CHECK_EQ_INT(ts_index_last_error(ld, &e), TS_E_VERSION);
        b[4] = 0;
        TS_CHECK_EQ_INT(ts_index_load(ld, b, len), TS_E_VERSION);
        b[4] = 2;                                   /* version 2 is extra text only */
        TS_CHECK_EQ_INT(ts_index_load(ld, b, len), TS_E_CORRUPT);
        b[4] = 1;
        b[8] = 1;                                   /* extra text in version 1: no metadata parts */
        TS_CHECK_EQ_INT(ts_index_load(ld, b, len), TS_E_VERSION);
        b[8] = 2;
        TS_CHECK_EQ_INT(ts_index_load(ld, b, len), TS_E_VERSION);
        b[8] = 0;
        b[0] = 'X';
        TS_CHECK_EQ_INT(ts_index_load(ld, b, len), TS_E_CORRUPT);
        b[0] = 'T';
    }
    /* payload mutations with a correct checksum: never a crash; accepted ones
       are canonical (re-save gives the same bytes) and verify clean */
    {
        unsigned char *pl = (unsigned char *)malloc(len + 64), *w = (unsigned char *)malloc(len + 128);
        size_t k, accepted = 0, rounds = (size_t)ts_test_count(20000, 200000);
        for (k = 0; k < rounds; k++) {
            size_t n = len - 24, j, nm = 1 + rndn(3);
            ts_result r;
            memcpy(pl, b + 24, n);
            for (j = 0; j < nm; j++) {
                size_t at = rndn(n + 1);
                switch (rndn(4)) {
                case 0: if (n) pl[rndn(n)] ^= (unsigned char)(1u << rndn(8)); break;
                case 1: if (n) pl[rndn(n)] = (unsigned char)rnd(); break;
                case 2: if (n) { memmove(pl + at, pl + at + (at < n), n - at - (at < n)); n -= at < n; } break;
                default: if (n < len + 60) { memmove(pl + at + 1, pl + at, n - at); pl[at] = (unsigned char)rnd(); n++; } break;
                }
            }
            r = ts_index_load(ld, w, wrap(pl, n, w, 0));
            if (r == TS_OK) {
                void *b2;
                size_t n2;
                accepted++;
                TS_CHECK_OK(ts_index_verify(ld, 0, NULL));
                TS_CHECK_OK(ts_index_save(ld, &b2, &n2));
                TS_CHECK(n2 == n + 24 && memcmp((unsigned char *)b2 + 24, pl, n) == 0);
                ts_index_free_buffer(ld, b2, n2);
            } else {
                TS_CHECK_EQ_INT(r, TS_E_CORRUPT);
            }
        }
        TS_CHECK(accepted < rounds);
        free(pl);
        free(w);
    }
    /* hostile counts: refused without allocating beyond the input's size */
    {
        unsigned char pl[64], w[128];
        size_t n;
        ts_index_destroy(ld);
        cfg = counted(&ca);
        TS_CHECK_OK(ts_index_create(&cfg, &ld));
        ca.peak = ca.live;
        n = 0; pl[n++] = 0; pl[n++] = 0; n += put_varint(pl + n, (uint64_t)1 << 40);  /* 2^40 sessions */
        TS_CHECK_EQ_INT(ts_index_load(ld, w, wrap(pl, n, w, 0)), TS_E_CORRUPT);
        n = 0; pl[n++] = 0; pl[n++] = 0; pl[n++] = 0; n += put_varint(pl + n, (uint64_t)1 << 62); /* terms */
        TS_CHECK_EQ_INT(ts_index_load(ld, w, wrap(pl, n, w, 0)), TS_E_CORRUPT);
        /* one session, one term whose df claims 2^30 */
        n = 0; pl[n++] = 0; pl[n++] = 0; pl[n++] = 1; pl[n++] = 1; pl[n++] = 'a'; pl[n++] = 0;
        pl[n++] = 1; pl[n++] = 0; pl[n++] = 2; pl[n++] = 'g'; pl[n++] = 'x'; n += put_varint(pl + n, 1u << 30); pl[n++] = 0;
        TS_CHECK_EQ_INT(ts_index_load(ld, w, wrap(pl, n, w, 0)), TS_E_CORRUPT);
        /* the same, well-formed: loads */
        n = 0; pl[n++] = 0; pl[n++] = 0; pl[n++] = 1; pl[n++] = 1; pl[n++] = 'a'; pl[n++] = 0;
        pl[n++] = 1; pl[n++] = 0; pl[n++] = 2; pl[n++] = 'g'; pl[n++] = 'x'; pl[n++] = 1; pl[n++] = 0;
        TS_CHECK_OK(ts_index_load(ld, w, wrap(pl, n, w, 0)));
        /* non-canonical varint (0x80 0x00) for the df */
        pl[11] = 0x81; pl[12] = 0x00; pl[13] = 0; n = 14;
        TS_CHECK_EQ_INT(ts_index_load(ld, w, wrap(pl, n, w, 0)), TS_E_CORRUPT);
        /* duplicate session ids */
        n = 0; pl[n++] = 0; pl[n++] = 0; pl[n++] = 2; pl[n++] = 1; pl[n++] = 'a'; pl[n++] = 0;
        pl[n++] = 1; pl[n++] = 'a'; pl[n++] = 0; pl[n++] = 0;
        TS_CHECK_EQ_INT(ts_index_load(ld, w, wrap(pl, n, w, 0)), TS_E_CORRUPT);
        /* a month that does not match the startTime */
        n = 0; pl[n++] = 0; pl[n++] = 0; pl[n++] = 1; pl[n++] = 1; pl[n++] = 'a'; pl[n++] = 1; pl[n++] = 0;
        pl[n++] = 1; pl[n++] = 0; pl[n++] = 8; memcpy(pl + n, "m1970-02", 8); n += 8; pl[n++] = 1; pl[n++] = 0;
        TS_CHECK_EQ_INT(ts_index_load(ld, w, wrap(pl, n, w, 0)), TS_E_CORRUPT);
        memcpy(pl + 10, "m1970-01", 8);
        TS_CHECK_OK(ts_index_load(ld, w, wrap(pl, n, w, 0)));
        /* a text term that is not a folded token */
        n = 0; pl[n++] = 0; pl[n++] = 0; pl[n++] = 1; pl[n++] = 1; pl[n++] = 'a'; pl[n++] = 0;
        pl[n++] = 1; pl[n++] = 0; pl[n++] = 3; pl[n++] = 'w'; pl[n++] = 'A'; pl[n++] = 'b'; pl[n++] = 1; pl[n++] = 0;
        TS_CHECK_EQ_INT(ts_index_load(ld, w, wrap(pl, n, w, 0)), TS_E_CORRUPT);
        pl[10] = 'a';
        TS_CHECK_OK(ts_index_load(ld, w, wrap(pl, n, w, 0)));
        pl[9] = 'q';      /* unknown field */
        TS_CHECK_EQ_INT(ts_index_load(ld, w, wrap(pl, n, w, 0)), TS_E_CORRUPT);
        TS_CHECK(ca.peak < 64 * 1024);
    }
    ts_index_free_buffer(ix, buf, len);
    ts_index_destroy(ld);
    TS_CHECK_EQ_INT(ca.live, 0);
    ts_index_destroy(ix);
}

/* ---- extra text: kept, updated alone, saved with its metadata parts ------------------ */

static ts_index *extra_index(const ts_index_config *base)
{
    ts_index_config cfg = base ? *base : ts_index_config_default();
    ts_index *ix = NULL;
    cfg.index_extra_text = 1;
    if (ts_index_create(&cfg, &ix) != TS_OK) return NULL;
    return ix;
}

static ts_index_doc simple_doc(const char *id, const char *name, const char *extra)
{
    ts_index_doc d;
    memset(&d, 0, sizeof d);
    d.id = id; d.id_len = strlen(id);
    d.has_start_time = 1; d.start_time_ms = 1000 + (int64_t)strlen(id);
    d.name = name; d.name_len = strlen(name);
    if (extra) { d.extra_text = extra; d.extra_text_len = strlen(extra); }
    return d;
}

static const char *text_hits(ts_index *ix, const char *text)
{
    ts_query q;
    memset(&q, 0, sizeof q);
    q.text = text;
    return ids_of(ix, &q);
}

TS_TEST(extra_text_by_example)
{
    ts_index *ix = extra_index(NULL), *plain = NULL, *ld;
    ts_index_doc d;
    ts_index_stats st;
    void *buf;
    size_t len, miss, ext;
    TS_CHECK(ix != NULL);
    if (!ix) return;
    d = simple_doc("s1", "Alpha session", "parser parser lexer");
    TS_CHECK_OK(ts_index_put(ix, &d));
    d = simple_doc("s2", "beta", NULL);
    TS_CHECK_OK(ts_index_put(ix, &d));
    TS_CHECK_EQ_STR(text_hits(ix, "parser"), "1:s1");
    TS_CHECK_EQ_STR(text_hits(ix, "lex*"), "1:s1");
    /* new metadata, extra text kept */
    d = simple_doc("s1", "Gamma session", "ignored because kept");
    d.keep_extra_text = 1;
    TS_CHECK_OK(ts_index_put(ix, &d));
    TS_CHECK_EQ_STR(text_hits(ix, "alpha"), "0:");
    TS_CHECK_EQ_STR(text_hits(ix, "gamma parser"), "1:s1");
    TS_CHECK_EQ_STR(text_hits(ix, "ignored"), "0:");
    TS_CHECK_OK(ts_index_check_doc(ix, &d, &miss, &ext));       /* keep: the metadata part */
    d.keep_extra_text = 0;
    d.extra_text = "lexer parser parser"; d.extra_text_len = 19;
    TS_CHECK_OK(ts_index_check_doc(ix, &d, &miss, &ext));       /* the whole: order does not matter */
    d.extra_text = "parser lexer"; d.extra_text_len = 12;
    TS_CHECK_EQ_INT(ts_index_check_doc(ix, &d, &miss, &ext), TS_E_CORRUPT);  /* tf differs */
    /* a session put with keep and never indexed gets no extra text */
    d = simple_doc("s3", "delta", "words here");
    d.keep_extra_text = 1;
    TS_CHECK_OK(ts_index_put(ix, &d));
    TS_CHECK_EQ_STR(text_hits(ix, "words"), "0:");
    /* update_text: remove first, then add */
    TS_CHECK_OK(ts_index_update_text(ix, "s1", 2, "tokenizer", 9, "parser", 6));
    TS_CHECK_EQ_STR(text_hits(ix, "parser"), "1:s1");           /* one of two left */
    TS_CHECK_EQ_STR(text_hits(ix, "tokenizer"), "1:s1");
    TS_CHECK_OK(ts_index_update_text(ix, "s1", 2, NULL, 0, "Parser!", 7));
    TS_CHECK_EQ_STR(text_hits(ix, "parser"), "0:");
    TS_CHECK_EQ_INT(ts_index_update_text(ix, "s1", 2, "x y z", 5, "parser", 6), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_index_update_text(ix, "s1", 2, NULL, 0, "gamma", 5), TS_E_INVALID); /* metadata */
    TS_CHECK_EQ_INT(ts_index_update_text(ix, "s1", 2, NULL, 0, "lexer lexer", 11), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_index_update_text(ix, "nope", 4, "x", 1, NULL, 0), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts_index_update_text(ix, "s1", 2, NULL, 3, NULL, 0), TS_E_INVALID);
    TS_CHECK_OK(ts_index_update_text(ix, "s1", 2, "the a", 5, "", 0));  /* no tokens: nothing */
    TS_CHECK_OK(ts_index_update_text(ix, "s2", 2, "Beta notes", 10, NULL, 0));
    TS_CHECK_EQ_STR(text_hits(ix, "notes"), "1:s2");
    TS_CHECK_OK(ts_index_stats_get(ix, &st));
    TS_CHECK_EQ_INT(st.extra_sessions, 2);
    TS_CHECK_EQ_INT(st.extra_tokens, 2 + 2);     /* s1: lexer tokenizer; s2: beta notes */
    TS_CHECK_OK(ts_index_verify(ix, 0, NULL));
    /* saved as version 2 with the metadata parts; a load keeps them */
    TS_CHECK_OK(ts_index_save(ix, &buf, &len));
    TS_CHECK_EQ_INT(((unsigned char *)buf)[4], 2);
    TS_CHECK_OK(ts_index_create(NULL, &ld));
    TS_CHECK_OK(ts_index_load(ld, buf, len));
    TS_CHECK_OK(ts_index_stats_get(ld, &st));
    TS_CHECK_EQ_INT(st.index_extra_text, 1);
    TS_CHECK_EQ_INT(st.extra_sessions, 2);
    d = simple_doc("s1", "Epsilon", NULL);
    d.keep_extra_text = 1;
    TS_CHECK_OK(ts_index_put(ld, &d));
    TS_CHECK_EQ_STR(text_hits(ld, "epsilon lexer tokenizer"), "1:s1");
    TS_CHECK_OK(ts_index_update_text(ld, "s1", 2, NULL, 0, "lexer tokenizer", 15));
    TS_CHECK_OK(ts_index_stats_get(ld, &st));
    TS_CHECK_EQ_INT(st.extra_sessions, 1);                       /* s1 has none left */
    TS_CHECK_OK(ts_index_verify(ld, 0, NULL));
    TS_CHECK_OK(ts_index_optimize(ld, 7));
    TS_CHECK_OK(ts_index_verify(ld, 0, NULL));
    TS_CHECK_EQ_STR(text_hits(ld, "notes"), "1:s2");
    ts_index_destroy(ld);
    ts_index_free_buffer(ix, buf, len);
    /* without the option: extra text is ignored, update_text only checks the id */
    TS_CHECK_OK(ts_index_create(NULL, &plain));
    d = simple_doc("p1", "plain", "hidden words");
    TS_CHECK_OK(ts_index_put(plain, &d));
    TS_CHECK_EQ_STR(text_hits(plain, "hidden"), "0:");
    TS_CHECK_OK(ts_index_update_text(plain, "p1", 2, "more hidden", 11, "not there", 9));
    TS_CHECK_EQ_INT(ts_index_update_text(plain, "p2", 2, "x", 1, NULL, 0), TS_E_NOTFOUND);
    TS_CHECK_EQ_STR(text_hits(plain, "hidden"), "0:");
    TS_CHECK_OK(ts_index_save(plain, &buf, &len));
    TS_CHECK_EQ_INT(((unsigned char *)buf)[4], 1);
    ts_index_free_buffer(plain, buf, len);
    ts_index_destroy(plain);
    ts_index_destroy(ix);
}

TS_TEST(extra_text_serialization_hostile)
{
    model m;
    ts_index *ix = extra_index(NULL), *ld = NULL;
    void *buf;
    size_t len, i, k, accepted = 0, rounds = long_mode() ? 100000 : 10000;
    unsigned char *b, *pl, *w;
    TS_CHECK(ix != NULL);
    if (!ix) return;
    m.n = 12; m.extra = 1;
    m.s = (m_sess *)calloc(m.n, sizeof(m_sess));
    for (i = 0; i < m.n; i++) {
        m_random_session(&m, &m.s[i], i, 6);
        TS_CHECK_OK(m_put(ix, &m.s[i]));
    }
    TS_CHECK_OK(ts_index_save(ix, &buf, &len));
    b = (unsigned char *)buf;
    TS_CHECK_OK(ts_index_create(NULL, &ld));
    for (i = 0; i < len; i++) TS_CHECK_EQ_INT(ts_index_load(ld, b, i), TS_E_CORRUPT);
    for (i = 0; i < len * 8; i++) {
        ts_result r;
        b[i / 8] ^= (unsigned char)(1u << (i % 8));
        r = ts_index_load(ld, b, len);
        TS_CHECK(r == TS_E_CORRUPT || r == TS_E_VERSION);
        b[i / 8] ^= (unsigned char)(1u << (i % 8));
    }
    TS_CHECK_OK(ts_index_load(ld, b, len));
    TS_CHECK(m_check_docs(ld, &m));
    /* mutated payloads with a correct checksum: refused, or canonical */
    pl = (unsigned char *)malloc(len + 64);
    w = (unsigned char *)malloc(len + 128);
    for (k = 0; k < rounds; k++) {
        size_t n = len - 24, j, nm = 1 + rndn(2);
        ts_result r;
        memcpy(pl, b + 24, n);
        for (j = 0; j < nm; j++) {
            /* mostly in the metadata parts at the end */
            size_t at = rndn(4) ? n - 1 - rndn(n < 40 ? n : 40) : rndn(n);
            switch (rndn(3)) {
            case 0: pl[at] ^= (unsigned char)(1u << rndn(8)); break;
            case 1: pl[at] = (unsigned char)rndn(6); break;
            default: memmove(pl + at, pl + at + 1, n - at - 1); n--; break;
            }
        }
        r = ts_index_load(ld, w, wrap(pl, n, w, 1));
        if (r == TS_OK) {
            void *b2;
            size_t n2;
            accepted++;
            TS_CHECK_OK(ts_index_verify(ld, 0, NULL));
            TS_CHECK_OK(ts_index_save(ld, &b2, &n2));
            TS_CHECK(n2 == n + 24 && memcmp((unsigned char *)b2 + 24, pl, n) == 0);
            ts_index_free_buffer(ld, b2, n2);
        } else {
            TS_CHECK_EQ_INT(r, TS_E_CORRUPT);
        }
    }
    TS_CHECK(accepted < rounds);
    /* the same payload without flag 1 is version 1 and has bytes left over */
    TS_CHECK_EQ_INT(ts_index_load(ld, w, wrap(b + 24, len - 24, w, 0)), TS_E_CORRUPT);
    free(pl);
    free(w);
    ts_index_free_buffer(ix, buf, len);
    ts_index_destroy(ld);
    ts_index_destroy(ix);
    model_free(&m);
}

/* ---- verify, repair, check_doc ------------------------------------------------------ */

TS_TEST(verify_and_repair)
{
    ts_index *ix = small_index();
    ts_index_verify_report rep;
    uint32_t d, tid;
    uint64_t v;
    ts_index_doc doc;
    size_t miss, ext;
    static const char *const t_work[] = { "work" }, *const t_other[] = { "work", "more" };
    ts_query q;
    if (!ix) { TS_CHECK(0); return; }
    TS_CHECK_OK(ts_index_verify(ix, 0, &rep));
    TS_CHECK(rep.first_problem[0] == 0);
    /* drop a posting behind the index's back */
    TS_CHECK(ts__map_get(&ix->ids, "a1", 2, &v));
    d = (uint32_t)v;
    tid = ts__ix_lookup(ix, TS__IX_F_TEXT, "parser", 6);
    TS_CHECK(tid != TS__IX_NONE);
    TS_CHECK_EQ_INT(ts__ix_post_del(ix, &ix->terms[tid], d), 1);
    TS_CHECK_EQ_INT(ts_index_verify(ix, 0, &rep), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(rep.missing_postings, 1);
    TS_CHECK_EQ_INT(rep.extra_postings, 0);
    TS_CHECK(strstr(rep.first_problem, "a1") != NULL);
    /* and add one nobody accounts for */
    TS_CHECK(ts__map_get(&ix->ids, "b", 1, &v));
    TS_CHECK_OK(ts__ix_post_add(ix, &ix->terms[tid], (uint32_t)v));
    TS_CHECK_EQ_INT(ts_index_verify(ix, 0, &rep), TS_E_CORRUPT);
    TS_CHECK_EQ_INT(rep.missing_postings, 1);
    TS_CHECK_EQ_INT(rep.extra_postings, 1);
    ix->terms[tid].df += 3;
    TS_CHECK_EQ_INT(ts_index_verify(ix, 0, &rep), TS_E_CORRUPT);
    TS_CHECK(rep.bad_terms >= 1);
    ix->terms[tid].df -= 3;
    TS_CHECK_OK(ts_index_verify(ix, 1, &rep));     /* repaired from the term lists */
    TS_CHECK_EQ_INT(rep.missing_postings, 1);
    TS_CHECK_OK(ts_index_verify(ix, 0, &rep));
    memset(&q, 0, sizeof q);
    q.text = "parser";
    TS_CHECK_EQ_STR(ids_of(ix, &q), "1:a1");
    /* order list damage is found too */
    if (ix->nblk && ix->blk[0]->n > 1) {
        uint32_t t0 = ix->blk[0]->d[0];
        ix->blk[0]->d[0] = ix->blk[0]->d[1];
        ix->blk[0]->d[1] = t0;
        TS_CHECK_EQ_INT(ts_index_verify(ix, 0, &rep), TS_E_CORRUPT);
        TS_CHECK(rep.bad_sessions >= 1);
        TS_CHECK_OK(ts_index_verify(ix, 1, NULL));
    }
    /* check_doc compares a session with its source */
    memset(&doc, 0, sizeof doc);
    doc.id = "a1"; doc.id_len = 2; doc.has_start_time = 1; doc.start_time_ms = 3000;
    doc.name = "Testing the parser"; doc.name_len = strlen(doc.name);
    doc.tags = t_work; doc.tag_count = 1; doc.status = "done"; doc.status_len = 4;
    TS_CHECK_OK(ts_index_check_doc(ix, &doc, &miss, &ext));
    TS_CHECK(miss == 0 && ext == 0);
    doc.tags = t_other; doc.tag_count = 2;
    TS_CHECK_EQ_INT(ts_index_check_doc(ix, &doc, &miss, &ext), TS_E_CORRUPT);
    TS_CHECK(miss == 1 && ext == 0);
    doc.tag_count = 1;
    doc.name = "Testing"; doc.name_len = 7;
    TS_CHECK_EQ_INT(ts_index_check_doc(ix, &doc, &miss, &ext), TS_E_CORRUPT);
    TS_CHECK(miss == 0 && ext == 1);
    doc.name = "Testing the parser parser"; doc.name_len = strlen(doc.name);
    TS_CHECK_EQ_INT(ts_index_check_doc(ix, &doc, &miss, &ext), TS_E_CORRUPT);   /* tf differs */
    TS_CHECK(miss == 1 && ext == 1);
    doc.name = "Testing the parser"; doc.name_len = strlen(doc.name);
    doc.start_time_ms = 3001;            /* same month, different time */
    TS_CHECK_EQ_INT(ts_index_check_doc(ix, &doc, &miss, &ext), TS_E_CORRUPT);
    doc.id = "zz"; doc.start_time_ms = 3000;
    TS_CHECK_EQ_INT(ts_index_check_doc(ix, &doc, &miss, &ext), TS_E_NOTFOUND);
    TS_CHECK(miss > 0);
    ts_index_destroy(ix);
}

/* ---- out of memory at every allocation ----------------------------------------------- */

typedef ts_result (*oom_op)(ts_index *ix, void *arg);

static ts_result op_put_new(ts_index *ix, void *arg)
{
    (void)arg;
    {
        static const char *const tags[] = { "brand-new-tag", "work" };
        ts_index_doc d;
        memset(&d, 0, sizeof d);
        d.id = "zz-new"; d.id_len = 6; d.has_start_time = 1; d.start_time_ms = 123456789012ll;
        d.name = "completely fresh vocabulary words"; d.name_len = strlen(d.name);
        d.tags = tags; d.tag_count = 2; d.category = "NewCat"; d.category_len = 6;
        return ts_index_put(ix, &d);
    }
}
static ts_result op_put_update(ts_index *ix, void *arg)
{
    ts_index_doc d;
    (void)arg;
    memset(&d, 0, sizeof d);
    d.id = "s010"; d.id_len = 4; d.has_start_time = 1; d.start_time_ms = -77;
    d.name = "alpha omega novelword"; d.name_len = strlen(d.name);
    return ts_index_put(ix, &d);
}
static ts_result op_search(ts_index *ix, void *arg)
{
    ts_query q;
    ts_index_hits h;
    ts_result r;
    (void)arg;
    memset(&q, 0, sizeof q);
    q.text = "te* alpha foo*"; q.op = TS_QUERY_OR; q.rank_bm25 = 1; q.limit = 5;
    r = ts_index_search(ix, &q, &h);
    ts_index_hits_free(&h);
    return r;
}
static ts_result op_save_load(ts_index *ix, void *arg)
{
    void *b;
    size_t n;
    ts_result r = ts_index_save(ix, &b, &n);
    (void)arg;
    if (r) return r;
    r = ts_index_load(ix, b, n);
    ts_index_free_buffer(ix, b, n);
    return r;
}
static ts_result op_optimize(ts_index *ix, void *arg) { (void)arg; return ts_index_optimize(ix, 5); }
static ts_result op_put_keep(ts_index *ix, void *arg)
{
    ts_index_doc d;
    (void)arg;
    memset(&d, 0, sizeof d);
    d.id = "s010"; d.id_len = 4;
    d.name = "renamed with unseen vocabulary"; d.name_len = strlen(d.name);
    d.keep_extra_text = 1;
    return ts_index_put(ix, &d);
}
static ts_result op_update_text(ts_index *ix, void *arg)
{
    const m_sess *s = (const m_sess *)arg;
    static const char add[] = "brand new record words, transcription";
    return ts_index_update_text(ix, s->id, s->id_len, add, strlen(add), s->extra, strlen(s->extra));
}
static ts_result op_verify(ts_index *ix, void *arg) { (void)arg; return ts_index_verify(ix, 0, NULL); }
static ts_result op_months(ts_index *ix, void *arg)
{
    char out[4096] = "";
    (void)arg;
    return ts_index_months(ix, month_cb, out);
}

TS_TEST(out_of_memory_everywhere)
{
    static const oom_op ops[] = { op_put_new, op_put_update, op_search, op_save_load, op_optimize, op_verify, op_months,
                                  /* with extra text */
                                  op_put_new, op_put_update, op_put_keep, op_update_text, op_save_load, op_optimize,
                                  op_verify };
    size_t k;
    for (k = 0; k < NELEM(ops); k++) {
        count_alloc ca;
        ts_index_config cfg = counted(&ca);
        ts_index *ix;
        model m;
        size_t i;
        long n;
        char before[512], text_before[512];
        ts_query q, tq;
        memset(&q, 0, sizeof q);
        q.limit = 40;
        memset(&tq, 0, sizeof tq);
        tq.text = "te* alpha foo* brand"; tq.op = TS_QUERY_OR;
        cfg.index_extra_text = k >= 7;
        TS_CHECK_OK(ts_index_create(&cfg, &ix));
        m.n = 40; m.extra = k >= 7;
        m.s = (m_sess *)calloc(m.n, sizeof(m_sess));
        for (i = 0; i < m.n; i++) {
            m_random_session(&m, &m.s[i], i, 6);
            if (i == 10) strcpy(m.s[i].extra, "alpha alphabet extra");
            m_derive(&m, &m.s[i]);
            TS_CHECK_OK(m_put(ix, &m.s[i]));
        }
        strcpy(before, ids_of(ix, &q));
        strcpy(text_before, ids_of(ix, &tq));
        for (n = 0; n < 100000; n++) {
            ts_result r;
            ca.countdown = n;
            r = ops[k](ix, &m.s[10]);
            ca.countdown = -1;
            if (r == TS_OK) break;
            TS_CHECK_EQ_INT(r, TS_E_NOMEM);
            TS_CHECK_OK(ts_index_verify(ix, 0, NULL));
            TS_CHECK_EQ_STR(ids_of(ix, &q), before);
            TS_CHECK_EQ_STR(ids_of(ix, &tq), text_before);
        }
        TS_CHECK(n > 0 || ops[k] == op_months || ops[k] == op_verify);
        TS_CHECK_OK(ts_index_verify(ix, 0, NULL));
        ts_index_destroy(ix);
        TS_CHECK_EQ_INT(ca.live, 0);
        model_free(&m);
    }
    /* the query parser too */
    {
        count_alloc ca;
        ts_index_config cfg = counted(&ca);
        ts_query_parsed p;
        ca.countdown = 0;
        TS_CHECK_EQ_INT(ts_query_parse("tag:x foo", 9, &cfg.alloc, &p, NULL), TS_E_NOMEM);
        ca.countdown = -1;
        TS_CHECK_OK(ts_query_parse("tag:x foo", 9, &cfg.alloc, &p, NULL));
        ts_query_parsed_free(&p);
        TS_CHECK_EQ_INT(ca.live, 0);
    }
}

int main(void)
{
    const char *seed = getenv("TS_TEST_SEED");
    if (seed) rng_state = strtoull(seed, NULL, 10);
    init_times();
    TS_RUN(tokenizer_ascii_and_punctuation);
    TS_RUN(tokenizer_case_folding_ranges);
    TS_RUN(tokenizer_separator_ranges_cjk_emoji);
    TS_RUN(tokenizer_invalid_utf8);
    TS_RUN(tokenizer_stop_words_and_length);
    TS_RUN(tokenizer_api_edges);
    TS_RUN(month_keys_and_crc);
    TS_RUN(posting_containers);
    TS_RUN(semantics_by_example);
    TS_RUN(api_errors);
    TS_RUN(update_and_remove_paths);
    TS_RUN(months_and_stats);
    TS_RUN(query_parser);
    TS_RUN(serialization_roundtrip_and_corruption);
    TS_RUN(verify_and_repair);
    TS_RUN(extra_text_by_example);
    TS_RUN(extra_text_serialization_hostile);
    TS_RUN(out_of_memory_everywhere);
    TS_RUN(differential_small);
    TS_RUN(differential_bitmaps);
    TS_RUN(differential_many_chunks);
    return ts_test_report("index");
}
