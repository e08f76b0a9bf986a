/* tests/unit/test_lru.c: the LRU cache (ts_lru).
 *
 * Directed tests for each promise of the API, then a randomized differential
 * test against a trivially-correct model (an array searched linearly; LRU
 * order by a use counter) over puts, gets, TTLs, resizes, invalidation,
 * batches, stats and allocation failures. fuzz/fuzz_lru.c reuses the model
 * and the op decoder (it includes this file with LT_NO_MAIN defined).
 *
 * TS_TEST_LONG=1 runs the differential test for millions of operations. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#ifndef LT_NO_MAIN
#include "../harness.h"
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

/* ---- a checking allocator ------------------------------------------------
   Records every block's size in a header, so a free with the wrong size is
   caught; counts allocations; can fail the Nth allocation or one in R. */

typedef struct lt_alloc {
    size_t live_bytes, live_blocks, allocs, size_mismatch;
    long fail_at;        /* fail the allocation this many from now; -1: never */
    uint32_t fail_rate;  /* fail one in fail_rate at random; 0: never */
    uint64_t rng;
} lt_alloc;

static uint64_t lt_rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}

static void *lt_alloc_fn(size_t n, void *user)
{
    lt_alloc *a = (lt_alloc *)user;
    unsigned char *p;
    a->allocs++;
    if (a->fail_at >= 0 && a->fail_at-- == 0) return NULL;
    if (a->fail_rate && lt_rng_next(&a->rng) % a->fail_rate == 0) return NULL;
    p = (unsigned char *)malloc(n + 16);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    a->live_bytes += n;
    a->live_blocks++;
    return p + 16;
}

static void lt_free_fn(void *ptr, size_t n, void *user)
{
    lt_alloc *a = (lt_alloc *)user;
    unsigned char *p = (unsigned char *)ptr - 16;
    size_t had;
    memcpy(&had, p, sizeof had);
    if (had != n) a->size_mismatch++;
    a->live_bytes -= had;
    a->live_blocks--;
    free(p);
}

static void *lt_realloc_fn(void *ptr, size_t old_n, size_t new_n, void *user)
{
    void *q = lt_alloc_fn(new_n, user);
    if (!q) return NULL;
    memcpy(q, ptr, old_n < new_n ? old_n : new_n);
    lt_free_fn(ptr, old_n, user);
    return q;
}

static void lt_alloc_init(lt_alloc *a)
{
    memset(a, 0, sizeof *a);
    a->fail_at = -1;
    a->rng = 0x9E3779B97F4A7C15ull;
}

static ts_allocator lt_allocator(lt_alloc *a)
{
    ts_allocator al;
    al.alloc_fn = lt_alloc_fn;
    al.realloc_fn = lt_realloc_fn;
    al.free_fn = lt_free_fn;
    al.user = a;
    return al;
}

/* ---- caller-owned values for put_ref --------------------------------------
   A registry of objects; the free callback checks that the cache frees only
   live objects, with the cost they were put with, exactly once. */

#define LT_NREF 1024
enum { LT_REF_IDLE = 0, LT_REF_LIVE = 1 };

typedef struct lt_refs {
    int state[LT_NREF];
    size_t cost[LT_NREF];
    size_t live, frees, bad_frees;
    size_t cursor;
    size_t putting; /* 1 + the id being put right now: the put must not free it */
} lt_refs;

static void lt_ref_free(void *value, size_t cost, void *user)
{
    lt_refs *r = (lt_refs *)user;
    int *st = (int *)value;
    size_t id = (size_t)(st - r->state);
    r->frees++;
    if (id >= LT_NREF || r->state[id] != LT_REF_LIVE || r->cost[id] != cost ||
        r->putting == id + 1) {
        r->bad_frees++;
        return;
    }
    r->state[id] = LT_REF_IDLE;
    r->live--;
}

/* An idle object to hand to the cache (the caller marks it live once the
   put succeeds). */
static size_t lt_ref_pick(lt_refs *r)
{
    while (r->state[r->cursor % LT_NREF] != LT_REF_IDLE) r->cursor++;
    return r->cursor++ % LT_NREF;
}

/* ---- helpers for the directed tests ---------------------------------------- */

#define S(str) (str), (sizeof(str) - 1)
#define OVH ((uint64_t)TS_LRU_ENTRY_OVERHEAD)

/* =========================================================================
   The differential test: the cache against a model that is obviously
   right because it does everything by linear search.
   ========================================================================= */

#define LT_MAXE 256   /* at most one entry per pool key */
#define LT_MAXV 1200
#define LT_POOL 256
#define LT_KEYMAX 40

typedef struct lt_ment {
    char key[LT_KEYMAX];
    size_t klen;
    int ref_id;               /* -1: a copy */
    unsigned char val[LT_MAXV];
    size_t len;               /* copy length or ref cost */
    uint64_t expires, touched, seq;
} lt_ment;

typedef struct lt_model {
    lt_ment e[LT_MAXE];
    size_t n;
    uint64_t max, bytes, default_ttl, seq;
    uint64_t hits, misses, evictions, expirations;
} lt_model;

/* What the runs exercised, summed over all of them (printed in verbose or
   long mode, to see that the op mix reaches every path). */
static struct {
    uint64_t hits, misses, evictions, expirations, nomem, toobig, prefix_removed,
        session_removed, glob_removed, prune_removed, aliased, recycled;
} lt_cov;

static void lt_cov_add(const lt_model *m)
{
    lt_cov.hits += m->hits;
    lt_cov.misses += m->misses;
    lt_cov.evictions += m->evictions;
    lt_cov.expirations += m->expirations;
}

/* Where the op stream comes from: a PRNG (the unit test) or fuzz bytes. */
typedef struct lt_src {
    const unsigned char *p;
    size_t n, i;
    uint64_t rng;
    int bytes_mode, exhausted;
} lt_src;

typedef struct lt_drv {
    lt_src src;
    lt_model m;
    ts_lru *lru;
    lt_alloc a;
    lt_refs refs;
    char pool[LT_POOL][LT_KEYMAX];
    size_t pool_len[LT_POOL];
    size_t npool;
    uint64_t now, ops;
    size_t fails;
    int abort_on_fail, check_every;
} lt_drv;

static uint32_t lt_u(lt_src *s, uint32_t bound)
{
    uint32_t v = 0;
    if (bound <= 1) return 0;
    if (!s->bytes_mode) return (uint32_t)(lt_rng_next(&s->rng) >> 11) % bound;
    if (s->i >= s->n) { s->exhausted = 1; return 0; }
    v = s->p[s->i++];
    if (bound > 256 && s->i < s->n) v = v << 8 | s->p[s->i++];
    return v % bound;
}

#define LT_FAIL(d, ...)                                                               \
    do {                                                                              \
        (d)->fails++;                                                                 \
        if ((d)->fails <= 5) {                                                        \
            printf("  lru diff mismatch at op %llu (line %d): ",                      \
                   (unsigned long long)(d)->ops, __LINE__);                           \
            printf(__VA_ARGS__);                                                      \
            printf("\n");                                                             \
        }                                                                             \
        if ((d)->abort_on_fail) abort();                                              \
    } while (0)
#define LT_EXPECT(d, cond, ...) do { if (!(cond)) LT_FAIL(d, __VA_ARGS__); } while (0)

static int lt_m_find(const lt_model *m, const char *k, size_t n)
{
    size_t i;
    for (i = 0; i < m->n; i++)
        if (m->e[i].klen == n && memcmp(m->e[i].key, k, n) == 0) return (int)i;
    return -1;
}

static uint64_t lt_m_charge(const lt_ment *e) { return e->len + e->klen + OVH; }

/* Live while now < put time + ttl; UINT64_MAX means never expires. */
static int lt_m_expired(const lt_ment *e, uint64_t now)
{
    return e->expires != UINT64_MAX && now >= e->expires;
}

static void lt_m_remove(lt_model *m, size_t i)
{
    m->bytes -= lt_m_charge(&m->e[i]);
    m->e[i] = m->e[--m->n];
}

static int lt_m_lookup(lt_model *m, const char *k, size_t n, uint64_t now)
{
    int i = lt_m_find(m, k, n);
    if (i >= 0 && lt_m_expired(&m->e[i], now)) {
        m->expirations++;
        lt_m_remove(m, (size_t)i);
        return -1;
    }
    return i;
}

static int lt_m_lru(const lt_model *m)
{
    size_t i, best = 0;
    if (!m->n) return -1;
    for (i = 1; i < m->n; i++)
        if (m->e[i].seq < m->e[best].seq) best = i;
    return (int)best;
}

static void lt_m_evict(lt_model *m, uint64_t now)
{
    while (m->bytes > m->max && m->n) {
        size_t i = (size_t)lt_m_lru(m);
        if (lt_m_expired(&m->e[i], now)) m->expirations++;
        else m->evictions++;
        lt_m_remove(m, i);
    }
}

static uint64_t lt_m_budget(uint64_t v)
{
    if (!v) return TS_LRU_DEFAULT_MAX_BYTES;
    return v > UINT64_MAX / 2 ? UINT64_MAX / 2 : v;
}

/* The model's put: TS_E_TOOBIG or TS_OK. */
static ts_result lt_m_put(lt_model *m, const char *k, size_t kn, const unsigned char *val,
                          size_t len, int ref_id, uint64_t ttl, uint64_t now)
{
    lt_ment *e;
    int i;
    if (m->max < OVH || len > m->max - OVH || kn > m->max - OVH - len) return TS_E_TOOBIG;
    if (!ttl) ttl = m->default_ttl;
    i = lt_m_find(m, k, kn);
    if (i < 0) {
        i = (int)m->n++;
    } else {
        m->bytes -= lt_m_charge(&m->e[i]);
    }
    e = &m->e[i];
    memcpy(e->key, k, kn);
    e->klen = kn;
    e->ref_id = ref_id;
    e->len = len;
    if (ref_id < 0 && len) memcpy(e->val, val, len);
    e->expires = (ttl == TS_LRU_NO_TTL || now >= UINT64_MAX - ttl) ? UINT64_MAX : now + ttl;
    e->touched = now;
    e->seq = ++m->seq;
    m->bytes += lt_m_charge(e);
    lt_m_evict(m, now);
    return TS_OK;
}

static int lt_m_glob(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t k;
    if (pn == 0) return sn == 0;
    if (p[0] == '*') {
        for (k = 0; k <= sn; k++)
            if (lt_m_glob(p + 1, pn - 1, s + k, sn - k)) return 1;
        return 0;
    }
    if (p[0] == '\\' && pn >= 2) return sn && s[0] == p[1] && lt_m_glob(p + 2, pn - 2, s + 1, sn - 1);
    if (p[0] == '?') return sn && lt_m_glob(p + 1, pn - 1, s + 1, sn - 1);
    return sn && s[0] == p[0] && lt_m_glob(p + 1, pn - 1, s + 1, sn - 1);
}

/* The session of a key: the bytes between its first and second ':'. */
static int lt_m_session_is(const char *k, size_t n, const char *id, size_t idn)
{
    const char *c1 = (const char *)memchr(k, ':', n), *end;
    if (!c1) return 0;
    end = (const char *)memchr(c1 + 1, ':', (size_t)(k + n - (c1 + 1)));
    if (!end) end = k + n;
    return (size_t)(end - (c1 + 1)) == idn && memcmp(c1 + 1, id, idn) == 0;
}

enum { LT_PREFIX, LT_SESSION, LT_GLOB, LT_ALL };
static size_t lt_m_remove_if(lt_model *m, int how, const char *p, size_t pn)
{
    size_t i = 0, n = 0;
    while (i < m->n) {
        const lt_ment *e = &m->e[i];
        int hit = how == LT_ALL ||
                  (how == LT_PREFIX && e->klen >= pn && memcmp(e->key, p, pn) == 0) ||
                  (how == LT_SESSION && lt_m_session_is(e->key, e->klen, p, pn)) ||
                  (how == LT_GLOB && lt_m_glob(p, pn, e->key, e->klen));
        if (hit) { lt_m_remove(m, i); n++; }
        else i++;
    }
    return n;
}

/* ---- the driver ------------------------------------------------------------ */

static void lt_make_pool(lt_drv *d)
{
    static const char *kinds[] = {"metadata", "screenshots", "audio", "s", ""};
    static const char *sess[] = {"a", "b", "ab", "abc", "x-1", ""};
    static const char *odd[] = {"plain", "k", "", ":", "::", "a::b", "screenshots:a:1:2",
                                "metadata:a:", ":a", "*", "a*b?", "\\:"};
    size_t i, j, k;
    uint64_t shuffle;
    d->npool = 0;
    for (i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        strcpy(d->pool[d->npool], odd[i]);
        d->npool++;
    }
    for (i = 0; i < 5; i++)
        for (j = 0; j < 6; j++) {
            sprintf(d->pool[d->npool++], "%s:%s", kinds[i], sess[j]);
            for (k = 0; k < 6 && d->npool < LT_POOL; k++)
                sprintf(d->pool[d->npool++], "%s:%s:%u", kinds[i], sess[j], (unsigned)(k * 5));
        }
    /* shuffled so the hot few differ per run; fuzz input pays one byte */
    shuffle = d->src.bytes_mode ? 0x9E3779B97F4A7C15ull + lt_u(&d->src, 256) : d->src.rng;
    for (i = d->npool - 1; i > 0; i--) {
        char tmp[LT_KEYMAX];
        j = (size_t)(lt_rng_next(&shuffle) % (i + 1));
        memcpy(tmp, d->pool[i], LT_KEYMAX);
        memcpy(d->pool[i], d->pool[j], LT_KEYMAX);
        memcpy(d->pool[j], tmp, LT_KEYMAX);
    }
    for (i = 0; i < d->npool; i++) d->pool_len[i] = strlen(d->pool[i]);
}

/* Skewed: most picks come from a hot few (the pool is shuffled per run). */
static const char *lt_pick_key(lt_drv *d, size_t *n)
{
    uint32_t i = lt_u(&d->src, 4) == 0 ? lt_u(&d->src, (uint32_t)d->npool) : lt_u(&d->src, 24);
    *n = d->pool_len[i];
    return d->pool[i];
}

static size_t lt_pick_len(lt_drv *d)
{
    uint32_t r = lt_u(&d->src, 100);
    if (r < 70) return lt_u(&d->src, 64);
    if (r < 95) return lt_u(&d->src, 300);
    return lt_u(&d->src, LT_MAXV);
}

static uint64_t lt_pick_ttl(lt_drv *d)
{
    uint32_t r = lt_u(&d->src, 10);
    if (r < 5) return 0;
    if (r < 7) return TS_LRU_NO_TTL;
    return 1 + lt_u(&d->src, 400);
}

static uint64_t lt_pick_budget(lt_drv *d)
{
    static const uint64_t b[] = {0,    100,  300,  1000,  2000,  3000,  4000,  6000,
                                 6000, 8000, 8000, 12000, 12000, 20000, 40000, 40000};
    return b[lt_u(&d->src, 16)];
}

static void lt_fill(lt_drv *d, unsigned char *buf, size_t n)
{
    uint32_t seed = lt_u(&d->src, 65536), i;
    for (i = 0; i < n; i++) buf[i] = (unsigned char)((seed + i * 131u) >> (i & 7));
}

/* Builds a pattern from a pool key: a prefix of it (for invalidate_prefix),
   or a glob with some bytes turned into '*', '?' or escapes. */
static size_t lt_pick_pattern(lt_drv *d, char *out, int glob)
{
    size_t kn, i, o = 0, stars = 0;
    const char *k = lt_pick_key(d, &kn);
    if (!glob) {
        size_t cut = lt_u(&d->src, (uint32_t)kn + 2);
        if (cut > kn) cut = kn;
        memcpy(out, k, cut);
        return cut;
    }
    for (i = 0; i < kn && o < 2 * LT_KEYMAX - 2; i++) {
        uint32_t r = lt_u(&d->src, 12);
        if (r == 0 && stars < 3) { out[o++] = '*'; stars++; i += lt_u(&d->src, 3); }
        else if (r == 1) out[o++] = '?';
        else if (r == 2) { out[o++] = '\\'; out[o++] = k[i]; }
        else out[o++] = k[i];
    }
    if (lt_u(&d->src, 4) == 0 && stars < 3) out[o++] = '*';
    return o;
}

static void lt_check_stats(lt_drv *d)
{
    ts_lru_stats st;
    const lt_model *m = &d->m;
    int t = lt_m_lru(m);
    uint64_t age = 0;
    if (t >= 0) age = d->now > m->e[t].touched ? d->now - m->e[t].touched : 0;
    LT_EXPECT(d, ts_lru_get_stats(d->lru, d->now, &st) == TS_OK, "stats failed");
    LT_EXPECT(d, st.hits == m->hits && st.misses == m->misses, "hits %llu/%llu misses %llu/%llu",
              (unsigned long long)st.hits, (unsigned long long)m->hits,
              (unsigned long long)st.misses, (unsigned long long)m->misses);
    LT_EXPECT(d, st.evictions == m->evictions && st.expirations == m->expirations,
              "evictions %llu/%llu expirations %llu/%llu", (unsigned long long)st.evictions,
              (unsigned long long)m->evictions, (unsigned long long)st.expirations,
              (unsigned long long)m->expirations);
    LT_EXPECT(d, st.entries == m->n && st.bytes == m->bytes && st.max_bytes == m->max,
              "entries %llu/%llu bytes %llu/%llu", (unsigned long long)st.entries,
              (unsigned long long)m->n, (unsigned long long)st.bytes,
              (unsigned long long)m->bytes);
    LT_EXPECT(d, st.oldest_age_ms == age, "oldest age %llu/%llu",
              (unsigned long long)st.oldest_age_ms, (unsigned long long)age);
}

/* Compares one get's answer with the model's entry (or its absence). */
static void lt_check_value(lt_drv *d, int mi, ts_result r, const void *v, size_t len)
{
    if (mi < 0) {
        LT_EXPECT(d, r == TS_E_NOTFOUND && v == NULL && len == 0, "expected a miss, got %d", r);
        return;
    }
    {
        const lt_ment *e = &d->m.e[mi];
        LT_EXPECT(d, r == TS_OK && len == e->len, "expected a hit of %llu bytes, got %d/%llu",
                  (unsigned long long)e->len, r, (unsigned long long)len);
        if (r != TS_OK) return;
        if (e->ref_id >= 0) LT_EXPECT(d, v == (const void *)&d->refs.state[e->ref_id], "ref ptr");
        else LT_EXPECT(d, len == 0 || memcmp(v, e->val, len) == 0, "copied bytes differ");
    }
}

static void lt_drv_put_result(lt_drv *d, ts_result got, ts_result want, const char *key,
                              size_t kn, const unsigned char *val, size_t len, int ref_id,
                              uint64_t ttl)
{
    if (got == TS_E_NOMEM && want == TS_OK) { lt_cov.nomem++; return; } /* injected: no change */
    if (want == TS_E_TOOBIG) lt_cov.toobig++;
    LT_EXPECT(d, got == want, "put %.*s: %d, model %d", (int)kn, key, got, want);
    if (want == TS_OK) {
        if (ref_id >= 0 && d->refs.state[ref_id] != LT_REF_LIVE) {
            d->refs.state[ref_id] = LT_REF_LIVE;
            d->refs.live++;
        }
        (void)lt_m_put(&d->m, key, kn, val, len, ref_id, ttl, d->now);
    }
}

/* Would the model refuse this put as too big? */
static ts_result lt_m_fits(const lt_model *m, size_t kn, size_t len)
{
    if (m->max < OVH || len > m->max - OVH || kn > m->max - OVH - len) return TS_E_TOOBIG;
    return TS_OK;
}

static void lt_drv_step(lt_drv *d)
{
    static unsigned char val[LT_MAXV];
    char pat[2 * LT_KEYMAX];
    lt_model *m = &d->m;
    uint32_t op = lt_u(&d->src, 1000);
    size_t kn, n, len, i;
    const char *k;
    const void *v;
    ts_result r;
    int mi;

    if (op < 280) {                                   /* get */
        k = lt_pick_key(d, &kn);
        r = ts_lru_get(d->lru, k, kn, d->now, &v, &len);
        mi = lt_m_lookup(m, k, kn, d->now);
        if (mi < 0) m->misses++;
        else { m->hits++; m->e[mi].seq = ++m->seq; m->e[mi].touched = d->now; }
        lt_check_value(d, mi, r, v, len);
    } else if (op < 480) {                            /* put_copy */
        uint64_t ttl = lt_pick_ttl(d);
        const void *src = val;
        k = lt_pick_key(d, &kn);
        len = lt_pick_len(d);
        lt_fill(d, val, len);
        if (lt_u(&d->src, 6) == 0) {
            /* bytes this cache handed out (a get of another key): the put
               may evict that entry, or reuse its block, before it copies */
            const char *k2;
            size_t kn2, len2;
            const void *v2;
            k2 = lt_pick_key(d, &kn2);
            r = ts_lru_get(d->lru, k2, kn2, d->now, &v2, &len2);
            mi = lt_m_lookup(m, k2, kn2, d->now);
            if (mi < 0) m->misses++;
            else { m->hits++; m->e[mi].seq = ++m->seq; m->e[mi].touched = d->now; }
            lt_check_value(d, mi, r, v2, len2);
            if (r == TS_OK && mi >= 0 && m->e[mi].ref_id < 0 && len2 == m->e[mi].len) {
                uint32_t more = lt_u(&d->src, 4);
                size_t off = len2 ? lt_u(&d->src, (uint32_t)len2) : 0; /* a part of it */
                len = len2 - off;
                if (len && lt_u(&d->src, 2)) len -= lt_u(&d->src, (uint32_t)len);
                memcpy(val, m->e[mi].val + off, len);
                src = (const unsigned char *)v2 + off;
                lt_cov.aliased++;
                /* gets of other keys (the pointer stays valid) move that
                   entry towards the tail, where the put evicts or reuses;
                   in a small cache sometimes all of them, so it is the tail */
                if (m->n <= 16 && lt_u(&d->src, 2)) more = (uint32_t)m->n + 1;
                while (more--) {
                    const void *v3;
                    size_t len3;
                    int m3;
                    if (more < m->n && m->n <= 16 && &m->e[more] != &m->e[mi]) {
                        k2 = m->e[more].key; /* a copy: the get may reclaim it */
                        kn2 = m->e[more].klen;
                        memcpy(pat, k2, kn2);
                        k2 = pat;
                    } else {
                        k2 = lt_pick_key(d, &kn2);
                    }
                    r = ts_lru_get(d->lru, k2, kn2, d->now, &v3, &len3);
                    m3 = lt_m_lookup(m, k2, kn2, d->now);
                    if (m3 < 0) m->misses++;
                    else { m->hits++; m->e[m3].seq = ++m->seq; m->e[m3].touched = d->now; }
                    lt_check_value(d, m3, r, v3, len3); /* no time passes: v2 stays */
                }
            }
        }
        r = ts_lru_put_copy(d->lru, k, kn, src, len, ttl, d->now);
        lt_drv_put_result(d, r, lt_m_fits(m, kn, len), k, kn, val, len, -1, ttl);
    } else if (op < 560) {                            /* put_ref */
        uint64_t ttl = lt_pick_ttl(d);
        size_t id;
        k = lt_pick_key(d, &kn);
        mi = lt_m_find(m, k, kn);
        if (mi >= 0 && m->e[mi].ref_id >= 0 && lt_u(&d->src, 3) == 0) {
            id = (size_t)m->e[mi].ref_id;             /* same pointer again */
            len = d->refs.cost[id];
        } else {
            id = lt_ref_pick(&d->refs);
            len = lt_u(&d->src, 20) == 0 ? (size_t)-1 / 2 : lt_u(&d->src, 400);
            d->refs.cost[id] = len;
        }
        d->refs.putting = id + 1;
        r = ts_lru_put_ref(d->lru, k, kn, &d->refs.state[id], len, lt_ref_free, &d->refs, ttl,
                           d->now);
        d->refs.putting = 0;
        lt_drv_put_result(d, r, lt_m_fits(m, kn, len), k, kn, NULL, len, (int)id, ttl);
    } else if (op < 610) {                            /* has */
        k = lt_pick_key(d, &kn);
        mi = lt_m_lookup(m, k, kn, d->now);
        LT_EXPECT(d, ts_lru_has(d->lru, k, kn, d->now) == (mi >= 0), "has %.*s", (int)kn, k);
    } else if (op < 670) {                            /* delete */
        k = lt_pick_key(d, &kn);
        mi = lt_m_find(m, k, kn);
        r = ts_lru_delete(d->lru, k, kn);
        LT_EXPECT(d, r == (mi >= 0 ? TS_OK : TS_E_NOTFOUND), "delete %.*s: %d", (int)kn, k, r);
        if (mi >= 0) lt_m_remove(m, (size_t)mi);
    } else if (op < 690) {                            /* get_copy */
        size_t cap = lt_u(&d->src, 2) ? LT_MAXV : lt_u(&d->src, 64);
        k = lt_pick_key(d, &kn);
        r = ts_lru_get_copy(d->lru, k, kn, d->now, val, cap, &len);
        mi = lt_m_lookup(m, k, kn, d->now);
        if (mi < 0) {
            m->misses++;
            LT_EXPECT(d, r == TS_E_NOTFOUND && len == 0, "get_copy miss: %d", r);
        } else if (m->e[mi].ref_id >= 0) {
            LT_EXPECT(d, r == TS_E_INVALID, "get_copy of a ref: %d", r);
        } else if (cap < m->e[mi].len) {
            LT_EXPECT(d, r == TS_E_RANGE && len == m->e[mi].len, "get_copy range: %d", r);
        } else {
            m->hits++;
            m->e[mi].seq = ++m->seq;
            m->e[mi].touched = d->now;
            lt_check_value(d, mi, r, val, len);
        }
    } else if (op < 710) {                            /* get_many */
        const char *keys[6] = {0};
        size_t klens[6] = {0}, lens[6], hits, want_hits = 0, cnt = 1 + lt_u(&d->src, 6);
        const void *vals[6];
        for (i = 0; i < cnt; i++) keys[i] = lt_pick_key(d, &klens[i]);
        r = ts_lru_get_many(d->lru, cnt, keys, klens, d->now, vals, lens, &hits);
        LT_EXPECT(d, r == TS_OK, "get_many: %d", r);
        for (i = 0; i < cnt; i++) {
            mi = lt_m_lookup(m, keys[i], klens[i], d->now);
            if (mi < 0) m->misses++;
            else { m->hits++; want_hits++; m->e[mi].seq = ++m->seq; m->e[mi].touched = d->now; }
            /* a later key of the batch may have evicted nothing (gets never
               evict), so each pointer can be checked against the model now */
            lt_check_value(d, mi, mi < 0 ? TS_E_NOTFOUND : TS_OK, vals[i], lens[i]);
        }
        LT_EXPECT(d, hits == want_hits, "get_many hits %llu/%llu", (unsigned long long)hits,
                  (unsigned long long)want_hits);
    } else if (op < 725) {                            /* put_many_copy */
        static unsigned char bufs[4][LT_MAXV];
        const char *keys[4] = {0};
        size_t klens[4] = {0}, lens[4] = {0}, stored, want_stored = 0, cnt = 1 + lt_u(&d->src, 4);
        const void *vals[4] = {0};
        uint64_t ttl = lt_pick_ttl(d);
        ts_result want = TS_OK;
        for (i = 0; i < cnt; i++) {
            keys[i] = lt_pick_key(d, &klens[i]);
            lens[i] = lt_pick_len(d);
            lt_fill(d, bufs[i], lens[i]);
            vals[i] = bufs[i];
        }
        r = ts_lru_put_many_copy(d->lru, cnt, keys, klens, vals, lens, ttl, d->now, &stored);
        for (i = 0; i < cnt && want == TS_OK; i++) {
            if (i == stored && r == TS_E_NOMEM) { want = TS_E_NOMEM; break; }
            want = lt_m_put(m, keys[i], klens[i], bufs[i], lens[i], -1, ttl, d->now);
            if (want == TS_OK) want_stored++;
        }
        LT_EXPECT(d, r == want && stored == want_stored, "put_many: %d/%d stored %llu/%llu", r,
                  want, (unsigned long long)stored, (unsigned long long)want_stored);
    } else if (op < 740) {                            /* delete_many */
        const char *keys[4] = {0};
        size_t klens[4] = {0}, removed, want = 0, cnt = lt_u(&d->src, 5);
        for (i = 0; i < cnt; i++) keys[i] = lt_pick_key(d, &klens[i]);
        r = ts_lru_delete_many(d->lru, cnt, keys, klens, &removed);
        for (i = 0; i < cnt; i++) {
            mi = lt_m_find(m, keys[i], klens[i]);
            if (mi >= 0) { lt_m_remove(m, (size_t)mi); want++; }
        }
        LT_EXPECT(d, r == TS_OK && removed == want, "delete_many %llu/%llu",
                  (unsigned long long)removed, (unsigned long long)want);
    } else if (op < 760) {                            /* prune */
        size_t want = 0;
        r = ts_lru_prune(d->lru, d->now, &n);
        i = 0;
        while (i < m->n) {
            if (lt_m_expired(&m->e[i], d->now)) { lt_m_remove(m, i); want++; }
            else i++;
        }
        m->expirations += want;
        lt_cov.prune_removed += want;
        LT_EXPECT(d, r == TS_OK && n == want, "prune %llu/%llu", (unsigned long long)n,
                  (unsigned long long)want);
    } else if (op < 770) {                            /* set_max_bytes */
        uint64_t b = lt_pick_budget(d);
        r = ts_lru_set_max_bytes(d->lru, b, d->now);
        m->max = lt_m_budget(b);
        lt_m_evict(m, d->now);
        LT_EXPECT(d, r == TS_OK, "set_max_bytes: %d", r);
    } else if (op < 790) {                            /* invalidate_prefix */
        n = lt_pick_pattern(d, pat, 0);
        r = ts_lru_invalidate_prefix(d->lru, pat, n, &len);
        i = lt_m_remove_if(m, LT_PREFIX, pat, n);
        lt_cov.prefix_removed += i;
        LT_EXPECT(d, r == TS_OK && len == i, "prefix '%.*s' removed %llu/%llu", (int)n, pat,
                  (unsigned long long)len, (unsigned long long)i);
    } else if (op < 805) {                            /* invalidate_session */
        static const char *ids[] = {"a", "b", "ab", "abc", "x-1", "", "zz", ":"};
        const char *id = ids[lt_u(&d->src, 8)];
        r = ts_lru_invalidate_session(d->lru, id, strlen(id), &len);
        i = lt_m_remove_if(m, LT_SESSION, id, strlen(id));
        lt_cov.session_removed += i;
        LT_EXPECT(d, r == TS_OK && len == i, "session '%s' removed %llu/%llu", id,
                  (unsigned long long)len, (unsigned long long)i);
    } else if (op < 815) {                            /* invalidate_glob */
        n = lt_pick_pattern(d, pat, 1);
        r = ts_lru_invalidate_glob(d->lru, pat, n, &len);
        i = lt_m_remove_if(m, LT_GLOB, pat, n);
        lt_cov.glob_removed += i;
        LT_EXPECT(d, r == TS_OK && len == i, "glob '%.*s' removed %llu/%llu", (int)n, pat,
                  (unsigned long long)len, (unsigned long long)i);
    } else if (op < 818) {                            /* clear */
        ts_lru_clear(d->lru);
        (void)lt_m_remove_if(m, LT_ALL, NULL, 0);
    } else if (op < 840) {                            /* stats */
        lt_check_stats(d);
    } else if (op < 843) {                            /* stats_reset */
        ts_lru_stats_reset(d->lru);
        lt_cov_add(m);
        m->hits = m->misses = m->evictions = m->expirations = 0;
    } else if (op < 990) {                            /* time passes */
        d->now += lt_u(&d->src, 12);
    } else if (op < 995) {                            /* the clock steps back */
        uint64_t back = lt_u(&d->src, 30);
        d->now = d->now > back ? d->now - back : 0;
    } else {                                          /* a long pause */
        d->now += lt_u(&d->src, 2) ? 200 : 300000;
    }

    d->ops++;
    {
        size_t refs = 0;
        for (i = 0; i < m->n; i++) refs += m->e[i].ref_id >= 0;
        LT_EXPECT(d, d->refs.live == refs && d->refs.bad_frees == 0,
                  "live refs %llu, model %llu, bad frees %llu", (unsigned long long)d->refs.live,
                  (unsigned long long)refs, (unsigned long long)d->refs.bad_frees);
    }
    LT_EXPECT(d, d->lru->entries.count == m->n && d->lru->bytes == m->bytes,
              "entries %llu/%llu bytes %llu/%llu", (unsigned long long)d->lru->entries.count,
              (unsigned long long)m->n, (unsigned long long)d->lru->bytes,
              (unsigned long long)m->bytes);
    if (d->check_every && d->ops % (uint64_t)d->check_every == 0)
        LT_EXPECT(d, ts__lru_check(d->lru), "internal check failed");
}

/* Sets up a cache from the source's first choices. 0 if creation failed. */
static int lt_drv_open(lt_drv *d)
{
    ts_lru_config cfg;
    static const uint64_t ttls[] = {0, TS_LRU_NO_TTL, 30, 100};
    memset(&cfg, 0, sizeof cfg);
    lt_make_pool(d);
    lt_alloc_init(&d->a);
    d->a.rng ^= d->src.rng;
    if (!d->a.rng) d->a.rng = 1;
    d->a.fail_rate = lt_u(&d->src, 4) == 0 ? 50 : 0;
    cfg.allocator = lt_allocator(&d->a);
    cfg.max_bytes = lt_pick_budget(d);
    cfg.default_ttl_ms = ttls[lt_u(&d->src, 4)];
    d->now = lt_u(&d->src, 1000);
    d->m.max = lt_m_budget(cfg.max_bytes);
    d->m.default_ttl = cfg.default_ttl_ms ? cfg.default_ttl_ms : TS_LRU_DEFAULT_TTL_MS;
    {
        int tries;
        for (tries = 0; tries < 100; tries++)
            if (ts_lru_create(&cfg, &d->lru) == TS_OK) return 1;
    }
    return 0;
}

static void lt_drv_close(lt_drv *d)
{
    if (d->lru) {
        LT_EXPECT(d, ts__lru_check(d->lru), "internal check failed at the end");
        lt_check_stats(d);
        ts_lru_destroy(d->lru);
        d->lru = NULL;
    }
    LT_EXPECT(d, d->refs.live == 0 && d->refs.bad_frees == 0, "refs after destroy: %llu live",
              (unsigned long long)d->refs.live);
    LT_EXPECT(d, d->a.live_blocks == 0 && d->a.size_mismatch == 0,
              "allocator: %llu blocks leaked, %llu size mismatches",
              (unsigned long long)d->a.live_blocks, (unsigned long long)d->a.size_mismatch);
}

#ifndef LT_NO_MAIN /* the directed tests and main; fuzz/fuzz_lru.c stops above */

static ts_lru *lt_new(uint64_t max_bytes, uint64_t ttl, lt_alloc *a)
{
    ts_lru_config cfg;
    ts_lru *lru = NULL;
    memset(&cfg, 0, sizeof cfg);
    cfg.max_bytes = max_bytes;
    cfg.default_ttl_ms = ttl;
    if (a) cfg.allocator = lt_allocator(a);
    if (ts_lru_create(&cfg, &lru) != TS_OK) return NULL;
    return lru;
}

static int lt_get_str(ts_lru *lru, const char *key, uint64_t now, const char *want)
{
    const void *v = NULL;
    size_t n = 0;
    ts_result r = ts_lru_get(lru, key, strlen(key), now, &v, &n);
    if (!want) return r == TS_E_NOTFOUND && v == NULL && n == 0;
    return r == TS_OK && n == strlen(want) && memcmp(v, want, n) == 0;
}

static int lt_put_str(ts_lru *lru, const char *key, const char *val, uint64_t ttl, uint64_t now)
{
    return ts_lru_put_copy(lru, key, strlen(key), val, strlen(val), ttl, now) == TS_OK;
}

static uint64_t lt_charge(const char *key, size_t vlen) { return strlen(key) + vlen + OVH; }

TS_TEST(test_basic_copy)
{
    lt_alloc a;
    ts_lru *lru;
    const void *v;
    size_t n;
    char buf[16];
    lt_alloc_init(&a);
    lru = lt_new(0, TS_LRU_NO_TTL, &a);
    TS_CHECK(lru != NULL);
    if (!lru) return;
    TS_CHECK(lt_put_str(lru, "metadata:abc", "{\"id\":\"abc\"}", 0, 10));
    TS_CHECK(lt_get_str(lru, "metadata:abc", 11, "{\"id\":\"abc\"}"));
    TS_CHECK(lt_get_str(lru, "metadata:abd", 11, NULL));
    TS_CHECK(ts_lru_has(lru, S("metadata:abc"), 12) == 1);
    TS_CHECK(ts_lru_has(lru, S("metadata:ab"), 12) == 0);
    /* replace, with a different length */
    TS_CHECK(lt_put_str(lru, "metadata:abc", "x", 0, 12));
    TS_CHECK(lt_get_str(lru, "metadata:abc", 13, "x"));
    /* the copied value is 8-aligned and independent of the caller's buffer */
    strcpy(buf, "hello");
    TS_CHECK_OK(ts_lru_put_copy(lru, S("k"), buf, 6, 0, 14));
    buf[0] = 'j';
    TS_CHECK_OK(ts_lru_get(lru, S("k"), 15, &v, &n));
    TS_CHECK(n == 6 && strcmp((const char *)v, "hello") == 0);
    TS_CHECK(((uintptr_t)v & 7u) == 0);
    /* out-params may be NULL; empty keys and empty values are fine */
    TS_CHECK_OK(ts_lru_get(lru, S("k"), 15, NULL, NULL));
    TS_CHECK_OK(ts_lru_put_copy(lru, NULL, 0, NULL, 0, 0, 16));
    TS_CHECK_OK(ts_lru_get(lru, NULL, 0, 16, &v, &n));
    TS_CHECK(n == 0 && v != NULL);
    /* get_copy */
    TS_CHECK_EQ_INT(ts_lru_get_copy(lru, S("k"), 17, buf, 3, &n), TS_E_RANGE);
    TS_CHECK_EQ_INT(n, 6);
    TS_CHECK_OK(ts_lru_get_copy(lru, S("k"), 17, buf, sizeof buf, &n));
    TS_CHECK(n == 6 && strcmp(buf, "hello") == 0);
    TS_CHECK_EQ_INT(ts_lru_get_copy(lru, S("nope"), 17, buf, sizeof buf, &n), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(n, 0);
    /* delete */
    TS_CHECK_OK(ts_lru_delete(lru, S("k")));
    TS_CHECK_EQ_INT(ts_lru_delete(lru, S("k")), TS_E_NOTFOUND);
    TS_CHECK(lt_get_str(lru, "k", 18, NULL));
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
    TS_CHECK_EQ_INT(a.live_blocks, 0);
    TS_CHECK_EQ_INT(a.size_mismatch, 0);
}

TS_TEST(test_config_defaults)
{
    ts_lru_config c = ts_lru_config_default();
    ts_lru *lru = NULL;
    ts_lru_stats st;
    TS_CHECK(c.max_bytes == TS_LRU_DEFAULT_MAX_BYTES);
    TS_CHECK(c.max_bytes == 100u * 1024u * 1024u);
    TS_CHECK(c.default_ttl_ms == 300000u);
    TS_CHECK_OK(ts_lru_create(NULL, &lru));
    TS_CHECK_OK(ts_lru_get_stats(lru, 0, &st));
    TS_CHECK(st.max_bytes == TS_LRU_DEFAULT_MAX_BYTES);
    /* the 5-minute default TTL: live at 299999 ms, gone at 300000 */
    TS_CHECK(lt_put_str(lru, "a", "1", 0, 1000));
    TS_CHECK(lt_get_str(lru, "a", 1000 + 299999, "1"));
    TS_CHECK(lt_get_str(lru, "a", 1000 + 300000, NULL));
    /* max_bytes 0 in set_max_bytes also means the default; huge ones are clamped */
    TS_CHECK_OK(ts_lru_set_max_bytes(lru, 1, 0));
    TS_CHECK_OK(ts_lru_set_max_bytes(lru, 0, 0));
    TS_CHECK_OK(ts_lru_get_stats(lru, 0, &st));
    TS_CHECK(st.max_bytes == TS_LRU_DEFAULT_MAX_BYTES);
    TS_CHECK_OK(ts_lru_set_max_bytes(lru, UINT64_MAX, 0));
    TS_CHECK_OK(ts_lru_get_stats(lru, 0, &st));
    TS_CHECK(st.max_bytes == UINT64_MAX / 2);
    ts_lru_destroy(lru);
    ts_lru_destroy(NULL);
}

TS_TEST(test_invalid_args)
{
    ts_lru *lru = NULL;
    const void *v = (const void *)&lru;
    size_t n = 7, cnt = 9;
    ts_error_info info;
    const char *keys[2] = {"a", NULL};
    const void *vs[2];
    TS_CHECK_EQ_INT(ts_lru_create(NULL, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_get(NULL, S("a"), 0, &v, &n), TS_E_INVALID);
    TS_CHECK(v == NULL && n == 0);
    TS_CHECK_EQ_INT(ts_lru_put_copy(NULL, S("a"), "x", 1, 0, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_put_ref(NULL, S("a"), NULL, 1, NULL, NULL, 0, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_delete(NULL, S("a")), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_has(NULL, S("a"), 0), 0);
    TS_CHECK_EQ_INT(ts_lru_prune(NULL, 0, &cnt), TS_E_INVALID);
    TS_CHECK_EQ_INT(cnt, 0);
    TS_CHECK_EQ_INT(ts_lru_get_stats(NULL, 0, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_last_error(NULL, &info), TS_E_INVALID);
    ts_lru_clear(NULL);
    ts_lru_stats_reset(NULL);
    TS_CHECK_OK(ts_lru_create(NULL, &lru));
    TS_CHECK_EQ_INT(ts_lru_put_copy(lru, NULL, 3, "x", 1, 0, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_last_error(lru, &info), TS_E_INVALID);
    TS_CHECK(strstr(info.message, "NULL key") != NULL);
    TS_CHECK_EQ_INT(ts_lru_put_copy(lru, S("a"), NULL, 1, 0, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_get(lru, NULL, 1, 0, &v, &n), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_get_copy(lru, S("a"), 0, NULL, 4, &n), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_delete(lru, NULL, 2), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_get_many(lru, 2, keys, NULL, 0, vs, NULL, &cnt), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_get_many(lru, 1, NULL, NULL, 0, vs, NULL, &cnt), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_get_many(lru, 1, keys, NULL, 0, NULL, NULL, &cnt), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_delete_many(lru, 2, keys, NULL, &cnt), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_put_many_copy(lru, 1, keys, NULL, NULL, NULL, 0, 0, &cnt),
                    TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_invalidate_prefix(lru, NULL, 1, &cnt), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_invalidate_session(lru, NULL, 1, &cnt), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_lru_invalidate_glob(lru, NULL, 1, &cnt), TS_E_INVALID);
    /* NULL with length 0 is the empty string */
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, NULL, 0, &cnt));
    TS_CHECK_OK(ts_lru_invalidate_session(lru, NULL, 0, &cnt));
    TS_CHECK_OK(ts_lru_invalidate_glob(lru, NULL, 0, &cnt));
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
}

/* The budget counts value + key + TS_LRU_ENTRY_OVERHEAD; eviction takes the
   least recently used first; a get refreshes, a has does not. */
TS_TEST(test_eviction_order_and_bytes)
{
    ts_lru *lru;
    ts_lru_stats st;
    uint64_t one = lt_charge("k0", 10);
    char key[8];
    int i;
    lru = lt_new(4 * one, TS_LRU_NO_TTL, NULL);
    if (!lru) { TS_CHECK(0); return; }
    for (i = 0; i < 4; i++) {
        sprintf(key, "k%d", i);
        TS_CHECK(lt_put_str(lru, key, "0123456789", 0, (uint64_t)i));
    }
    TS_CHECK_OK(ts_lru_get_stats(lru, 10, &st));
    TS_CHECK(st.bytes == 4 * one && st.entries == 4 && st.evictions == 0);
    TS_CHECK(st.oldest_age_ms == 10); /* k0, touched at 0 */
    TS_CHECK(lt_get_str(lru, "k0", 11, "0123456789"));  /* k1 is now the oldest */
    TS_CHECK(ts_lru_has(lru, S("k1"), 11));             /* has() does not refresh */
    TS_CHECK(lt_put_str(lru, "k4", "0123456789", 0, 12));
    TS_CHECK(!ts_lru_has(lru, S("k1"), 12));
    TS_CHECK(ts_lru_has(lru, S("k0"), 12) && ts_lru_has(lru, S("k2"), 12));
    TS_CHECK_OK(ts_lru_get_stats(lru, 12, &st));
    TS_CHECK(st.evictions == 1 && st.entries == 4 && st.bytes == 4 * one);
    TS_CHECK(st.oldest_age_ms == 12 - 2); /* k2 */
    /* one bigger value pushes out two */
    TS_CHECK(lt_put_str(lru, "k5", "0123456789012345678901234567890123456789", 0, 13));
    TS_CHECK_OK(ts_lru_get_stats(lru, 13, &st));
    TS_CHECK(!ts_lru_has(lru, S("k2"), 13) && !ts_lru_has(lru, S("k3"), 13));
    TS_CHECK(st.evictions == 3 && st.entries == 3);
    TS_CHECK(st.bytes == 2 * one + lt_charge("k5", 40));
    /* shrinking the budget evicts at once, from the LRU end */
    TS_CHECK_OK(ts_lru_set_max_bytes(lru, one + lt_charge("k5", 40), 14));
    TS_CHECK(ts_lru_has(lru, S("k5"), 14) && ts_lru_has(lru, S("k4"), 14));
    TS_CHECK(!ts_lru_has(lru, S("k0"), 14));
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
}

/* A value bigger than the whole budget is refused; it evicts nothing and an
   older value under the same key stays. */
TS_TEST(test_toobig)
{
    ts_lru *lru;
    ts_error_info info;
    static char big[4096];
    uint64_t max = lt_charge("a", 100) * 3;
    lru = lt_new(max, TS_LRU_NO_TTL, NULL);
    if (!lru) { TS_CHECK(0); return; }
    TS_CHECK(lt_put_str(lru, "a", "old", 0, 0));
    TS_CHECK(lt_put_str(lru, "b", "bee", 0, 0));
    memset(big, 'x', sizeof big);
    TS_CHECK_EQ_INT(ts_lru_put_copy(lru, S("a"), big, (size_t)(max - OVH), 0, 1), TS_E_TOOBIG);
    TS_CHECK_EQ_INT(ts_lru_last_error(lru, &info), TS_E_TOOBIG);
    TS_CHECK(strstr(info.message, "budget") != NULL);
    TS_CHECK(lt_get_str(lru, "a", 2, "old") && lt_get_str(lru, "b", 2, "bee"));
    /* exactly the budget fits, evicting everything else */
    TS_CHECK_OK(ts_lru_put_copy(lru, S("a"), big, (size_t)(max - OVH - 1), 0, 3));
    TS_CHECK(!ts_lru_has(lru, S("b"), 3));
    TS_CHECK(ts_lru_has(lru, S("a"), 3));
    /* ref costs are checked the same way, and a refused ref is not freed */
    {
        lt_refs *r = (lt_refs *)calloc(1, sizeof *r);
        TS_CHECK_EQ_INT(ts_lru_put_ref(lru, S("r"), &r->state[0], (size_t)-1, lt_ref_free, r,
                                       0, 4), TS_E_TOOBIG);
        TS_CHECK_EQ_INT(ts_lru_put_ref(lru, S("r"), &r->state[0], (size_t)(max - OVH), lt_ref_free,
                                       r, 0, 4), TS_E_TOOBIG);
        TS_CHECK_EQ_INT(r->frees, 0);
        free(r);
    }
    /* a budget below the per-entry overhead refuses everything */
    TS_CHECK_OK(ts_lru_set_max_bytes(lru, OVH - 1, 5));
    TS_CHECK_EQ_INT(ts_lru_put_copy(lru, NULL, 0, NULL, 0, 0, 5), TS_E_TOOBIG);
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
}

/* put_ref values are freed exactly once, whichever way they leave. */
TS_TEST(test_ref_ownership)
{
    lt_refs *r = (lt_refs *)calloc(1, sizeof *r);
    ts_lru *lru;
    const void *v;
    size_t n;
    uint64_t one = lt_charge("s:a:0", 10);
    int i;
    if (!r) return;
    lru = lt_new(one * 4, 100, NULL);
    if (!lru) { TS_CHECK(0); free(r); return; }
#define PUTREF(key, id, ttl, now)                                                         \
    do {                                                                                  \
        r->cost[id] = 10;                                                                 \
        TS_CHECK_OK(ts_lru_put_ref(lru, S(key), &r->state[id], 10, lt_ref_free, r, ttl, now)); \
        if (r->state[id] != LT_REF_LIVE) { r->state[id] = LT_REF_LIVE; r->live++; }       \
    } while (0)
    PUTREF("s:a:0", 0, 0, 0);
    TS_CHECK_OK(ts_lru_get(lru, S("s:a:0"), 1, &v, &n));
    TS_CHECK(v == &r->state[0] && n == 10);
    TS_CHECK_EQ_INT(ts_lru_get_copy(lru, S("s:a:0"), 1, NULL, 0, &n), TS_E_INVALID);
    /* replaced by another pointer: the old one is freed */
    PUTREF("s:a:0", 1, 0, 2);
    TS_CHECK_EQ_INT(r->frees, 1);
    TS_CHECK(r->state[0] == LT_REF_IDLE);
    /* re-put of the same pointer: not freed */
    PUTREF("s:a:0", 1, 0, 3);
    TS_CHECK_EQ_INT(r->frees, 1);
    /* replaced by a copy */
    TS_CHECK(lt_put_str(lru, "s:a:0", "copy", 0, 4));
    TS_CHECK_EQ_INT(r->frees, 2);
    /* delete */
    PUTREF("s:a:1", 2, 0, 5);
    TS_CHECK_OK(ts_lru_delete(lru, S("s:a:1")));
    TS_CHECK_EQ_INT(r->frees, 3);
    /* expiry seen by get, by has, by prune */
    PUTREF("s:a:2", 3, 10, 5);
    PUTREF("s:a:3", 4, 10, 5);
    PUTREF("s:b:0", 5, 10, 5);
    TS_CHECK_EQ_INT(ts_lru_get(lru, S("s:a:2"), 15, &v, &n), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(r->frees, 4);
    TS_CHECK(!ts_lru_has(lru, S("s:a:3"), 15));
    TS_CHECK_EQ_INT(r->frees, 5);
    TS_CHECK_OK(ts_lru_prune(lru, 15, &n));
    TS_CHECK_EQ_INT(n, 1);
    TS_CHECK_EQ_INT(r->frees, 6);
    /* eviction */
    for (i = 0; i < 5; i++) {
        char key[16];
        sprintf(key, "s:c:%d", i);
        r->cost[10 + i] = 10;
        TS_CHECK_OK(ts_lru_put_ref(lru, key, strlen(key), &r->state[10 + i], 10, lt_ref_free, r,
                                   0, 20));
        r->state[10 + i] = LT_REF_LIVE;
        r->live++;
    }
    TS_CHECK_EQ_INT(r->live, 4); /* 4 fit; the copy "s:a:0" went first */
    /* invalidation by prefix, by session, by glob; then clear and destroy */
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("s:c:0"), &n));
    TS_CHECK_EQ_INT(n, 0);
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("s:c:1"), &n));
    TS_CHECK_EQ_INT(n, 1);
    TS_CHECK_OK(ts_lru_invalidate_glob(lru, S("*:2"), &n));
    TS_CHECK_EQ_INT(n, 1);
    TS_CHECK_EQ_INT(r->live, 2);
    PUTREF("q:d", 20, 0, 21);
    TS_CHECK_OK(ts_lru_invalidate_session(lru, S("c"), &n));
    TS_CHECK_EQ_INT(n, 2);
    TS_CHECK_EQ_INT(r->live, 1);
    ts_lru_clear(lru);
    TS_CHECK_EQ_INT(r->live, 0);
    PUTREF("q:e", 21, 0, 22);
    PUTREF("q:f", 22, TS_LRU_NO_TTL, 22);
    ts_lru_destroy(lru);
    TS_CHECK_EQ_INT(r->live, 0);
    TS_CHECK_EQ_INT(r->bad_frees, 0);
    /* a NULL free_fn: the cache just forgets the pointer */
    lru = lt_new(0, 0, NULL);
    if (lru) {
        TS_CHECK_OK(ts_lru_put_ref(lru, S("x"), r, 1, NULL, NULL, 0, 0));
        TS_CHECK_OK(ts_lru_delete(lru, S("x")));
        ts_lru_destroy(lru);
    }
#undef PUTREF
    free(r);
}

TS_TEST(test_ttl)
{
    ts_lru *lru = lt_new(0, 100, NULL);
    ts_lru_stats st;
    size_t n;
    if (!lru) { TS_CHECK(0); return; }
    TS_CHECK(lt_put_str(lru, "def", "1", 0, 1000));             /* default: 100 ms */
    TS_CHECK(lt_put_str(lru, "short", "2", 10, 1000));
    TS_CHECK(lt_put_str(lru, "forever", "3", TS_LRU_NO_TTL, 1000));
    TS_CHECK(lt_put_str(lru, "long", "4", 5000, 1000));
    TS_CHECK(lt_get_str(lru, "short", 1009, "2"));
    TS_CHECK(lt_get_str(lru, "short", 1010, NULL));              /* T + ttl is expired */
    /* a get hit does not extend the TTL */
    TS_CHECK(lt_get_str(lru, "def", 1099, "1"));
    TS_CHECK(!ts_lru_has(lru, S("def"), 1100));
    TS_CHECK_OK(ts_lru_get_stats(lru, 1100, &st));
    TS_CHECK(st.expirations == 2 && st.entries == 2);
    /* re-putting refreshes it */
    TS_CHECK(lt_put_str(lru, "def", "1", 0, 1100));
    TS_CHECK(lt_get_str(lru, "def", 1199, "1"));
    /* the clock is the caller's: earlier times see the entry as live */
    TS_CHECK(lt_get_str(lru, "long", 5999, "4"));
    TS_CHECK_OK(ts_lru_prune(lru, 6000, &n));
    TS_CHECK_EQ_INT(n, 2);
    TS_CHECK(lt_get_str(lru, "forever", UINT64_MAX, "3"));
    /* a TTL that would run past the end of time never expires */
    TS_CHECK(lt_put_str(lru, "edge", "5", UINT64_MAX - 1, 10));
    TS_CHECK(ts_lru_has(lru, S("edge"), UINT64_MAX - 1));
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);

    /* no default TTL */
    lru = lt_new(0, TS_LRU_NO_TTL, NULL);
    if (!lru) { TS_CHECK(0); return; }
    TS_CHECK(lt_put_str(lru, "a", "1", 0, 0));
    TS_CHECK(lt_put_str(lru, "b", "1", 5, 0));
    TS_CHECK(ts_lru_has(lru, S("a"), UINT64_MAX));
    TS_CHECK(!ts_lru_has(lru, S("b"), 5));
    ts_lru_destroy(lru);
}

/* Expired entries met by eviction count as expirations; prune finds
   default-TTL entries even when the clock stepped back, and entries with
   their own TTL. */
TS_TEST(test_expiry_lists)
{
    ts_lru *lru = lt_new(lt_charge("e0", 1) * 3, 50, NULL);
    ts_lru_stats st;
    size_t n;
    if (!lru) { TS_CHECK(0); return; }
    TS_CHECK(lt_put_str(lru, "e0", "x", 0, 100));
    TS_CHECK(lt_put_str(lru, "e1", "x", 0, 200));
    TS_CHECK(lt_put_str(lru, "e2", "x", 0, 210));
    TS_CHECK(lt_put_str(lru, "e3", "x", 0, 220)); /* evicts e0, expired at 150 */
    TS_CHECK_OK(ts_lru_get_stats(lru, 220, &st));
    TS_CHECK(st.evictions == 0 && st.expirations == 1);
    TS_CHECK(lt_put_str(lru, "e4", "x", 0, 230)); /* evicts e1, live until 250 */
    TS_CHECK_OK(ts_lru_get_stats(lru, 230, &st));
    TS_CHECK(st.evictions == 1 && st.expirations == 1);
    ts_lru_clear(lru);
    TS_CHECK_OK(ts_lru_set_max_bytes(lru, 0, 0));
    TS_CHECK(lt_put_str(lru, "t0", "x", 0, 1000));  /* A: expires 1050 */
    TS_CHECK(lt_put_str(lru, "t1", "x", 0, 900));   /* clock stepped back: 950 */
    TS_CHECK(lt_put_str(lru, "t2", "x", 7, 900));   /* own TTL: 907 */
    TS_CHECK(lt_put_str(lru, "t3", "x", 0, 1010));  /* 1060 */
    TS_CHECK(ts__lru_check(lru));
    TS_CHECK_OK(ts_lru_prune(lru, 906, &n));
    TS_CHECK_EQ_INT(n, 0);
    TS_CHECK_OK(ts_lru_prune(lru, 950, &n));
    TS_CHECK_EQ_INT(n, 2);
    TS_CHECK(ts_lru_has(lru, S("t0"), 950) && ts_lru_has(lru, S("t3"), 950));
    TS_CHECK_OK(ts_lru_prune(lru, 1059, &n));
    TS_CHECK_EQ_INT(n, 1);
    TS_CHECK_OK(ts_lru_prune(lru, 1060, &n));
    TS_CHECK_EQ_INT(n, 1);
    TS_CHECK_OK(ts_lru_get_stats(lru, 1060, &st));
    TS_CHECK(st.entries == 0 && st.bytes == 0 && st.oldest_age_ms == 0);
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
}

TS_TEST(test_invalidate)
{
    ts_lru *lru = lt_new(0, TS_LRU_NO_TTL, NULL);
    const char *keys[] = {
        "metadata:abc", "metadata:abcd", "summary:abc", "screenshots:abc:0",
        "screenshots:abc:1", "screenshots:abc:10", "screenshots:abcd:0", "audio:abc:0",
        "audio:abc:0:x", "plain", "abc", ":abc", "screenshots:abc", "screenshots::0", "x:abc:",
    };
    size_t nkeys = sizeof keys / sizeof keys[0], i, n;
    if (!lru) { TS_CHECK(0); return; }
#define FILL() for (i = 0; i < nkeys; i++) TS_CHECK(lt_put_str(lru, keys[i], keys[i], 0, 0))
    FILL();
    /* a stream of one session: only its group is visited */
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("screenshots:abc:"), &n));
    TS_CHECK_EQ_INT(n, 3);
    TS_CHECK(ts_lru_has(lru, S("screenshots:abc"), 0));
    TS_CHECK(ts_lru_has(lru, S("screenshots:abcd:0"), 0));
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("screenshots:abc:"), &n));
    TS_CHECK_EQ_INT(n, 0);
    FILL();
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("screenshots:abc:1"), &n));
    TS_CHECK_EQ_INT(n, 2);
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("audio:abc:0:"), &n));
    TS_CHECK_EQ_INT(n, 1);
    TS_CHECK(ts__lru_check(lru));
    /* prefixes with fewer than two ':' scan */
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("metadata:abc"), &n));
    TS_CHECK_EQ_INT(n, 2);
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("screenshots:"), &n));
    TS_CHECK_EQ_INT(n, 4);
    FILL();
    TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("pla"), &n));
    TS_CHECK_EQ_INT(n, 1);
    /* everything of one session, whatever the kind */
    TS_CHECK_OK(ts_lru_invalidate_session(lru, S("abc"), &n));
    TS_CHECK_EQ_INT(n, 10); /* metadata, summary, 3+1 screenshots, 2 audio, :abc, x:abc: */
    TS_CHECK(ts_lru_has(lru, S("metadata:abcd"), 0));
    TS_CHECK(ts_lru_has(lru, S("screenshots:abcd:0"), 0));
    TS_CHECK(ts_lru_has(lru, S("abc"), 0));
    TS_CHECK_OK(ts_lru_invalidate_session(lru, S("abc"), &n));
    TS_CHECK_EQ_INT(n, 0);
    TS_CHECK_OK(ts_lru_invalidate_session(lru, S(""), &n));
    TS_CHECK_EQ_INT(n, 1); /* screenshots::0 */
    TS_CHECK(ts__lru_check(lru));
    TS_CHECK_EQ_INT(lru->sessions.count, 1); /* abcd */
    /* glob */
    FILL();
    TS_CHECK_OK(ts_lru_invalidate_glob(lru, S("*abc:?"), &n));
    TS_CHECK_EQ_INT(n, 3); /* screenshots:abc:0, :1, audio:abc:0 */
    TS_CHECK_OK(ts_lru_invalidate_glob(lru, S("screenshots\\:abc*"), &n));
    TS_CHECK_EQ_INT(n, 3); /* :abc:10, :abcd:0, :abc */
    TS_CHECK_OK(ts_lru_invalidate_glob(lru, S("*"), &n));
    TS_CHECK_EQ_INT(n, nkeys - 6);
    TS_CHECK_EQ_INT(lru->groups.count, 0);
    TS_CHECK_EQ_INT(lru->sessions.count, 0);
    TS_CHECK(ts__lru_check(lru));
#undef FILL
    ts_lru_destroy(lru);
}

TS_TEST(test_glob_matcher)
{
#define G(p, s) ts__lru_glob(p, strlen(p), s, strlen(s))
    TS_CHECK(G("", ""));
    TS_CHECK(!G("", "a"));
    TS_CHECK(G("*", ""));
    TS_CHECK(G("a*b*c", "aXbYc"));
    TS_CHECK(G("a*b*c", "abcbc"));
    TS_CHECK(!G("a*b*c", "abcb"));
    TS_CHECK(G("*a*a*a", "aaaa"));
    TS_CHECK(!G("?", ""));
    TS_CHECK(G("??", "ab"));
    TS_CHECK(G("\\*", "*"));
    TS_CHECK(!G("\\*", "a"));
    TS_CHECK(G("a\\", "a\\"));
    TS_CHECK(G("*\\?", "x?"));
    TS_CHECK(!G("*\\?", "xy"));
#undef G
}

TS_TEST(test_batch)
{
    ts_lru *lru = lt_new(0, TS_LRU_NO_TTL, NULL);
    const char *keys[] = {"a:1:0", "a:1:1", "b", "a:1:0"};
    const char *vals[] = {"zero", "one", "bee", "zero!"};
    size_t lens[4], klens[4], got_lens[4], i, n;
    const void *got[4];
    if (!lru) { TS_CHECK(0); return; }
    for (i = 0; i < 4; i++) { lens[i] = strlen(vals[i]); klens[i] = strlen(keys[i]); }
    TS_CHECK_OK(ts_lru_put_many_copy(lru, 4, keys, klens, (const void *const *)vals, lens, 0, 0, &n));
    TS_CHECK_EQ_INT(n, 4);
    TS_CHECK_OK(ts_lru_get_many(lru, 4, keys, NULL, 1, got, got_lens, &n));
    TS_CHECK_EQ_INT(n, 4);
    TS_CHECK(got_lens[0] == 5 && memcmp(got[0], "zero!", 5) == 0);
    TS_CHECK(got_lens[2] == 3 && memcmp(got[2], "bee", 3) == 0);
    TS_CHECK_OK(ts_lru_delete_many(lru, 3, keys, NULL, &n));
    TS_CHECK_EQ_INT(n, 3);
    TS_CHECK_OK(ts_lru_get_many(lru, 4, keys, klens, 2, got, NULL, &n));
    TS_CHECK_EQ_INT(n, 0);
    TS_CHECK(got[0] == NULL && got[3] == NULL);
    /* a put_many stops at the first failure */
    TS_CHECK_OK(ts_lru_set_max_bytes(lru, OVH + 10, 3));
    lens[1] = 100;
    vals[1] = "0123456789012345678901234567890123456789012345678901234567890123456789"
              "012345678901234567890123456789";
    TS_CHECK_EQ_INT(ts_lru_put_many_copy(lru, 3, keys, NULL, (const void *const *)vals, lens, 0, 3,
                                         &n), TS_E_TOOBIG);
    TS_CHECK_EQ_INT(n, 1);
    TS_CHECK(lt_get_str(lru, "a:1:0", 4, "zero"));
    TS_CHECK_OK(ts_lru_get_many(lru, 0, NULL, NULL, 0, NULL, NULL, NULL));
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
}

TS_TEST(test_stats)
{
    ts_lru *lru = lt_new(0, TS_LRU_NO_TTL, NULL);
    ts_lru_stats st;
    if (!lru) { TS_CHECK(0); return; }
    TS_CHECK_OK(ts_lru_get_stats(lru, 5, &st));
    TS_CHECK(st.hits == 0 && st.misses == 0 && st.hit_rate == 0.0 && st.entries == 0);
    TS_CHECK(lt_put_str(lru, "a", "1", 0, 10));
    TS_CHECK(lt_put_str(lru, "b", "22", 0, 20));
    TS_CHECK(lt_get_str(lru, "a", 30, "1"));
    TS_CHECK(lt_get_str(lru, "a", 31, "1"));
    TS_CHECK(lt_get_str(lru, "a", 32, "1"));
    TS_CHECK(lt_get_str(lru, "c", 33, NULL));
    TS_CHECK_OK(ts_lru_get_stats(lru, 100, &st));
    TS_CHECK(st.hits == 3 && st.misses == 1 && st.hit_rate == 0.75);
    TS_CHECK(st.entries == 2 && st.bytes == lt_charge("a", 1) + lt_charge("b", 2));
    TS_CHECK(st.oldest_age_ms == 80); /* b, put at 20 */
    TS_CHECK_OK(ts_lru_get_stats(lru, 1, &st));
    TS_CHECK(st.oldest_age_ms == 0);  /* a clock behind the entry: 0, not a wrap */
    ts_lru_stats_reset(lru);
    TS_CHECK_OK(ts_lru_get_stats(lru, 100, &st));
    TS_CHECK(st.hits == 0 && st.misses == 0 && st.evictions == 0 && st.expirations == 0);
    TS_CHECK(st.entries == 2);
    ts_lru_destroy(lru);
}

/* A put that keeps the entry's size (a ref for a ref, a copy of the same
   length) rewrites it in place: no allocation; the caller may even re-put
   the bytes it got from the cache. */
TS_TEST(test_update_in_place)
{
    lt_alloc a;
    lt_refs *r = (lt_refs *)calloc(1, sizeof *r);
    ts_lru *lru;
    const void *v;
    size_t n, before;
    ts_lru_stats st;
    if (!r) return;
    lt_alloc_init(&a);
    lru = lt_new(0, 50, &a);
    if (!lru) { TS_CHECK(0); free(r); return; }
    TS_CHECK(lt_put_str(lru, "metadata:s1", "0123456789", 0, 0));
    TS_CHECK_OK(ts_lru_get(lru, S("metadata:s1"), 1, &v, &n));
    before = a.allocs;
    TS_CHECK_OK(ts_lru_put_copy(lru, S("metadata:s1"), v, n, 0, 10)); /* aliasing */
    TS_CHECK(lt_put_str(lru, "metadata:s1", "abcdefghij", 0, 20));
    TS_CHECK_EQ_INT(a.allocs, before);
    TS_CHECK(lt_get_str(lru, "metadata:s1", 69, "abcdefghij")); /* TTL restarted at 20 */
    TS_CHECK(lt_get_str(lru, "metadata:s1", 70, NULL));
    /* ref for ref: the old pointer is freed once, the new cost is charged */
    r->cost[1] = 5;
    r->cost[2] = 500;
    TS_CHECK_OK(ts_lru_put_ref(lru, S("x:s1:0"), &r->state[1], 5, lt_ref_free, r, 0, 100));
    r->state[1] = LT_REF_LIVE;
    r->live++;
    before = a.allocs;
    TS_CHECK_OK(ts_lru_put_ref(lru, S("x:s1:0"), &r->state[2], 500, lt_ref_free, r,
                               TS_LRU_NO_TTL, 101));
    r->state[2] = LT_REF_LIVE;
    r->live++;
    TS_CHECK_EQ_INT(a.allocs, before);
    TS_CHECK(r->state[1] == LT_REF_IDLE && r->live == 1);
    TS_CHECK_OK(ts_lru_get_stats(lru, 101, &st));
    TS_CHECK(st.bytes == lt_charge("x:s1:0", 500));
    TS_CHECK(ts_lru_has(lru, S("x:s1:0"), UINT64_MAX - 1)); /* now never expires */
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
    TS_CHECK_EQ_INT(r->live, 0);
    TS_CHECK_EQ_INT(r->bad_frees, 0);
    TS_CHECK_EQ_INT(a.live_blocks, 0);
    TS_CHECK_EQ_INT(a.size_mismatch, 0);
    free(r);
}

/* The get path allocates nothing; tables shrink back after bulk removal. */
TS_TEST(test_no_alloc_on_get_and_shrink)
{
    lt_alloc a;
    ts_lru *lru;
    char key[32];
    const void *v;
    size_t n, before, i;
    lt_alloc_init(&a);
    lru = lt_new(0, TS_LRU_NO_TTL, &a);
    if (!lru) { TS_CHECK(0); return; }
    for (i = 0; i < 5000; i++) {
        sprintf(key, "screenshots:s%u:%u", (unsigned)(i / 10), (unsigned)(i % 10));
        TS_CHECK_OK(ts_lru_put_copy(lru, key, strlen(key), key, 8, 0, 0));
    }
    before = a.allocs;
    for (i = 0; i < 20000; i++) {
        sprintf(key, "screenshots:s%u:%u", (unsigned)(i % 600), (unsigned)(i % 10));
        (void)ts_lru_get(lru, key, strlen(key), 1, &v, &n);
        (void)ts_lru_has(lru, key, strlen(key), 1);
    }
    TS_CHECK_EQ_INT(a.allocs, before);
    TS_CHECK(lru->entries.cap >= 8192);
    TS_CHECK_OK(ts_lru_invalidate_glob(lru, S("screenshots:s1*"), &n));
    TS_CHECK_EQ_INT(n, 1110);
    ts_lru_clear(lru);
    TS_CHECK_EQ_INT(lru->entries.cap, 16);
    TS_CHECK_EQ_INT(lru->groups.cap, 16);
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
    TS_CHECK_EQ_INT(a.live_blocks, 0);
    TS_CHECK_EQ_INT(a.size_mismatch, 0);
}

/* A put of a new key into a full cache reuses the evicted entry's block
   when it has the size it needs: no allocation in steady state, grouped
   keys or not. The caller's key or bytes may live in the entry that goes;
   a ref value in a recycled block is still freed exactly once. */
TS_TEST(test_recycling)
{
    lt_alloc a;
    lt_refs *r = (lt_refs *)calloc(1, sizeof *r);
    ts_lru *lru;
    char key[32];
    const void *v, *va;
    size_t n, i, before;
    ts_lru_stats st;
    if (!r) return;
    lt_alloc_init(&a);
    lru = lt_new(100 * lt_charge("shot:s1:1000", 16), TS_LRU_NO_TTL, &a);
    if (!lru) { TS_CHECK(0); free(r); return; }
    for (i = 0; i < 100; i++) {
        sprintf(key, "shot:s1:%u", (unsigned)(1000 + i));
        TS_CHECK_OK(ts_lru_put_copy(lru, key, strlen(key), "0123456789abcdef", 16, 0, 0));
    }
    before = a.allocs;
    for (i = 100; i < 1100; i++) { /* every one evicts the oldest, same group */
        sprintf(key, "shot:s1:%u", (unsigned)(1000 + i));
        TS_CHECK_OK(ts_lru_put_copy(lru, key, strlen(key), "fedcba9876543210", 16, 0, 1));
    }
    for (i = 0; i < 1000; i++) { /* ungrouped keys of the same length */
        sprintf(key, "plainkey%04u", (unsigned)i);
        TS_CHECK_OK(ts_lru_put_copy(lru, key, strlen(key), "0123456789abcdef", 16, 0, 2));
    }
    TS_CHECK_EQ_INT(a.allocs, before);
    TS_CHECK_OK(ts_lru_get_stats(lru, 2, &st));
    TS_CHECK(st.entries == 100 && st.evictions == 2000);
    TS_CHECK(lru->recycled == 2000);
    TS_CHECK(lt_get_str(lru, "plainkey0999", 2, "0123456789abcdef"));
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
    TS_CHECK_EQ_INT(a.live_blocks, 0);

    /* every key in its own session: each put makes a group and a session,
       each eviction ends one; their records are reused too */
    lt_alloc_init(&a);
    lru = lt_new(10 * lt_charge("shot:s0000:0", 16), TS_LRU_NO_TTL, &a);
    if (!lru) { TS_CHECK(0); free(r); return; }
    for (i = 0; i < 1000; i++) {
        if (i == 20) before = a.allocs;
        sprintf(key, "shot:s%04u:0", (unsigned)i);
        TS_CHECK_OK(ts_lru_put_copy(lru, key, strlen(key), "0123456789abcdef", 16, 0, 0));
    }
    TS_CHECK_EQ_INT(a.allocs, before);
    TS_CHECK(lru->groups.count == 10 && lru->sessions.count == 10 && lru->nspare > 0);
    TS_CHECK(ts__lru_check(lru));
    TS_CHECK_OK(ts_lru_invalidate_session(lru, S("s0999"), &n)); /* releases the spares */
    TS_CHECK(n == 1 && lru->nspare == 0);
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
    TS_CHECK_EQ_INT(a.live_blocks, 0);
    TS_CHECK_EQ_INT(a.size_mismatch, 0);

    /* room for two entries: the key of the third comes from the value of
       the one it evicts */
    lt_alloc_init(&a);
    lru = lt_new(2 * lt_charge("k:zz:123", 8), TS_LRU_NO_TTL, &a);
    if (!lru) { TS_CHECK(0); free(r); return; }
    TS_CHECK_OK(ts_lru_put_copy(lru, S("k:1"), "k:zz:123", 8, 0, 0));
    TS_CHECK_OK(ts_lru_put_copy(lru, S("k:2"), "k:zz:456", 8, 0, 0));
    TS_CHECK_OK(ts_lru_get(lru, S("k:1"), 1, &va, &n));
    TS_CHECK_OK(ts_lru_get(lru, S("k:2"), 1, &v, &n)); /* k:1 is the tail again */
    TS_CHECK_OK(ts_lru_put_copy(lru, (const char *)va, 8, va, 8, 0, 2)); /* key and bytes */
    TS_CHECK(!ts_lru_has(lru, S("k:1"), 2));
    TS_CHECK(lt_get_str(lru, "k:zz:123", 2, "k:zz:123"));
    TS_CHECK(lt_get_str(lru, "k:2", 2, "k:zz:456"));
    /* and the bytes of the tail under a key of the same size: */
    TS_CHECK_OK(ts_lru_get(lru, S("k:2"), 3, &v, &n));
    TS_CHECK_OK(ts_lru_get(lru, S("k:zz:123"), 3, &va, &n)); /* k:2 is the tail */
    TS_CHECK_OK(ts_lru_put_copy(lru, S("k:3"), v, 8, 0, 3));
    TS_CHECK(lt_get_str(lru, "k:3", 3, "k:zz:456"));
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);

    /* a longer key whose entry fits the tail's block exactly: its key
       would land on the bytes being copied */
    lt_alloc_init(&a);
    lru = lt_new(lt_charge("k:1", 16) + lt_charge("k:longer:key", 8) + 1, TS_LRU_NO_TTL, &a);
    if (!lru) { TS_CHECK(0); free(r); return; }
    TS_CHECK_OK(ts_lru_put_copy(lru, S("k:1"), "ABCDEFGHIJKLMNOP", 16, 0, 0));
    TS_CHECK_OK(ts_lru_put_copy(lru, S("k:2"), "abcdefghijklmnop", 16, 0, 0));
    TS_CHECK_OK(ts_lru_get(lru, S("k:1"), 1, &v, &n));
    TS_CHECK_OK(ts_lru_get(lru, S("k:2"), 1, &va, &n)); /* k:1 is the tail */
    TS_CHECK_OK(ts_lru_put_copy(lru, S("k:longer:key"), v, 8, 0, 1));
    TS_CHECK(lt_get_str(lru, "k:longer:key", 1, "ABCDEFGH"));
    TS_CHECK(lt_get_str(lru, "k:1", 1, NULL));
    TS_CHECK_OK(ts_lru_get(lru, S("k:2"), 1, &va, &n));
    TS_CHECK_OK(ts_lru_get(lru, S("k:longer:key"), 1, &v, &n)); /* k:2 is the tail */
    TS_CHECK_OK(ts_lru_put_copy(lru, (const char *)va, 12, va, 8, 0, 1)); /* key too */
    TS_CHECK(lt_get_str(lru, "abcdefghijkl", 1, "abcdefgh"));
    TS_CHECK(lt_get_str(lru, "k:longer:key", 1, "ABCDEFGH"));
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
    TS_CHECK_EQ_INT(a.live_blocks, 0);
    TS_CHECK_EQ_INT(a.size_mismatch, 0);

    /* refs through recycled blocks: each evicted value freed once */
    lt_alloc_init(&a);
    lru = lt_new(3 * lt_charge("r:s:0", 10), TS_LRU_NO_TTL, &a);
    if (!lru) { TS_CHECK(0); free(r); return; }
    for (i = 0; i < 10; i++) {
        sprintf(key, "r:s:%u", (unsigned)i);
        r->cost[i] = 10;
        r->putting = i + 1;
        TS_CHECK_OK(ts_lru_put_ref(lru, key, strlen(key), &r->state[i], 10, lt_ref_free, r, 0, 0));
        r->putting = 0;
        r->state[i] = LT_REF_LIVE;
        r->live++;
    }
    TS_CHECK_EQ_INT(r->frees, 7);
    TS_CHECK_EQ_INT(r->live, 3);
    TS_CHECK_EQ_INT(r->bad_frees, 0);
    TS_CHECK(lru->recycled == 7);
    TS_CHECK_OK(ts_lru_get(lru, S("r:s:9"), 0, &v, &n));
    TS_CHECK(v == (const void *)&r->state[9] && n == 10);
    TS_CHECK(ts__lru_check(lru));
    ts_lru_destroy(lru);
    TS_CHECK_EQ_INT(r->live, 0);
    TS_CHECK_EQ_INT(r->bad_frees, 0);
    TS_CHECK_EQ_INT(a.live_blocks, 0);
    TS_CHECK_EQ_INT(a.size_mismatch, 0);
    free(r);
}

/* Fail every allocation in turn during a scripted workload: each failing
   call returns TS_E_NOMEM, changes nothing, and the cache stays usable. */
TS_TEST(test_oom_sweep)
{
    long k;
    int completed = 0;
    for (k = 0; k < 400 && !completed; k++) {
        lt_alloc a;
        lt_refs *r = (lt_refs *)calloc(1, sizeof *r);
        ts_lru *lru;
        ts_lru_config cfg;
        int i, nomem = 0;
        lt_alloc_init(&a);
        a.fail_at = k;
        memset(&cfg, 0, sizeof cfg);
        cfg.allocator = lt_allocator(&a);
        cfg.max_bytes = 40 * (OVH + 40);
        if (ts_lru_create(&cfg, &lru) != TS_OK) {
            TS_CHECK(lru == NULL);
            free(r);
            continue;
        }
        for (i = 0; i < 120; i++) {
            char key[32];
            ts_result res;
            int before;
            ts_lru_stats st0, st1;
            sprintf(key, "k%d:s%d:%d", i % 3, i % 17, i % 5);
            before = ts_lru_has(lru, key, strlen(key), 0);
            TS_CHECK_OK(ts_lru_get_stats(lru, 0, &st0));
            if (i % 4 == 3) {
                size_t id = lt_ref_pick(r);
                r->cost[id] = 7;
                res = ts_lru_put_ref(lru, key, strlen(key), &r->state[id], 7, lt_ref_free, r, 0, 0);
                if (res == TS_OK) { r->state[id] = LT_REF_LIVE; r->live++; }
            } else {
                res = ts_lru_put_copy(lru, key, strlen(key), "0123456789", 10, 0, 0);
            }
            if (res == TS_E_NOMEM) {
                nomem++;
                TS_CHECK_OK(ts_lru_get_stats(lru, 0, &st1));
                TS_CHECK(st0.entries == st1.entries && st0.bytes == st1.bytes);
                TS_CHECK_EQ_INT(ts_lru_has(lru, key, strlen(key), 0), before);
            } else {
                TS_CHECK_OK(res);
            }
            if (i % 30 == 29) {
                size_t n;
                TS_CHECK_OK(ts_lru_invalidate_session(lru, S("s3"), &n));
                TS_CHECK_OK(ts_lru_invalidate_prefix(lru, S("k1:s4:"), &n));
                TS_CHECK_OK(ts_lru_set_max_bytes(lru, 10 * (OVH + 40), 0));
                TS_CHECK_OK(ts_lru_set_max_bytes(lru, 40 * (OVH + 40), 0));
            }
            TS_CHECK(ts__lru_check(lru));
        }
        ts_lru_destroy(lru);
        TS_CHECK_EQ_INT(a.live_blocks, 0);
        TS_CHECK_EQ_INT(a.size_mismatch, 0);
        TS_CHECK_EQ_INT(r->live, 0);
        TS_CHECK_EQ_INT(r->bad_frees, 0);
        if (!nomem && a.fail_at >= 0) completed = 1; /* the failure point was never reached */
        free(r);
    }
    TS_CHECK(completed);
}

/* A logger sees failures with the implementation line. */
static int lt_log_calls, lt_log_code;
static void lt_log(void *user, ts_log_level level, ts_result code, const char *msg, int line)
{
    (void)user; (void)msg;
    if (level == TS_LOG_ERROR && line > 0) { lt_log_calls++; lt_log_code = code; }
}

TS_TEST(test_logger)
{
    ts_lru_config cfg = ts_lru_config_default();
    ts_lru *lru = NULL;
    const void *v;
    size_t n;
    cfg.max_bytes = 200;
    cfg.logger.log_fn = lt_log;
    TS_CHECK_OK(ts_lru_create(&cfg, &lru));
    if (!lru) return;
    lt_log_calls = 0;
    TS_CHECK_EQ_INT(ts_lru_put_copy(lru, S("k"), "x", 100, 0, 0), TS_E_TOOBIG);
    TS_CHECK_EQ_INT(lt_log_calls, 1);
    TS_CHECK_EQ_INT(lt_log_code, TS_E_TOOBIG);
    /* misses are not failures */
    TS_CHECK_EQ_INT(ts_lru_get(lru, S("k"), 0, &v, &n), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts_lru_delete(lru, S("k")), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(lt_log_calls, 1);
    ts_lru_destroy(lru);
}

/* Runs ops operations from seed; returns the number of mismatches. */
static size_t lt_diff_run(uint64_t seed, uint64_t ops, int check_every)
{
    lt_drv *d = (lt_drv *)calloc(1, sizeof *d);
    size_t fails;
    if (!d) return 1;
    d->src.rng = seed * 0x9E3779B97F4A7C15ull + 1;
    d->check_every = check_every;
    if (lt_drv_open(d)) {
        while (d->ops < ops && d->fails == 0) lt_drv_step(d);
    } else {
        d->fails++;
    }
    lt_cov_add(&d->m);
    if (d->lru) lt_cov.recycled += d->lru->recycled;
    lt_drv_close(d);
    fails = d->fails;
    free(d);
    return fails;
}

TS_TEST(test_differential)
{
    int is_long = ts_test_long();
    /* about 8 s under ASan by default; the long mode runs 40M operations */
    uint64_t seeds = (uint64_t)ts_test_count(120, 400), per_seed = is_long ? 100000 : 25000, s, total = 0;
    clock_t t0 = clock();
    for (s = 1; s <= seeds; s++) {
        size_t f = lt_diff_run(s, per_seed, is_long ? 64 : 16);
        total += per_seed;
        if (f) {
            printf("  differential: seed %llu failed\n", (unsigned long long)s);
            TS_CHECK_EQ_INT(f, 0);
            break;
        }
    }
    if (getenv("TS_TEST_VERBOSE") || is_long) {
        printf("  differential: %llu ops over %llu seeds in %.1f s\n", (unsigned long long)total,
               (unsigned long long)seeds, (double)(clock() - t0) / CLOCKS_PER_SEC);
        printf("  hits %llu misses %llu evictions %llu expirations %llu (pruned %llu) "
               "nomem %llu toobig %llu; removed by prefix %llu session %llu glob %llu\n",
               (unsigned long long)lt_cov.hits, (unsigned long long)lt_cov.misses,
               (unsigned long long)lt_cov.evictions, (unsigned long long)lt_cov.expirations,
               (unsigned long long)lt_cov.prune_removed, (unsigned long long)lt_cov.nomem,
               (unsigned long long)lt_cov.toobig, (unsigned long long)lt_cov.prefix_removed,
               (unsigned long long)lt_cov.session_removed, (unsigned long long)lt_cov.glob_removed);
        printf("  puts of bytes from a get %llu; entry blocks recycled %llu\n",
               (unsigned long long)lt_cov.aliased, (unsigned long long)lt_cov.recycled);
    }
    /* the op mix reaches both new paths (a small run does 1/25 of the ops) */
    TS_CHECK(lt_cov.aliased > (ts_test_small() ? 20u : 1000u));
    TS_CHECK(lt_cov.recycled > (ts_test_small() ? 20u : 1000u));
}

int main(void)
{
    TS_RUN(test_basic_copy);
    TS_RUN(test_config_defaults);
    TS_RUN(test_invalid_args);
    TS_RUN(test_eviction_order_and_bytes);
    TS_RUN(test_toobig);
    TS_RUN(test_ref_ownership);
    TS_RUN(test_ttl);
    TS_RUN(test_expiry_lists);
    TS_RUN(test_invalidate);
    TS_RUN(test_glob_matcher);
    TS_RUN(test_batch);
    TS_RUN(test_stats);
    TS_RUN(test_update_in_place);
    TS_RUN(test_no_alloc_on_get_and_shrink);
    TS_RUN(test_recycling);
    TS_RUN(test_oom_sweep);
    TS_RUN(test_logger);
    TS_RUN(test_differential);
    return ts_test_report("lru");
}
#endif /* LT_NO_MAIN */
