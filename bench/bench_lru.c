/* bench/bench_lru.c: the LRU cache (ts_lru) against a plain open-addressing
 * LRU and a bare hash-map lookup, measured in the same run.
 *
 *   gcc -std=c99 -O2 -march=native -I. bench/bench_lru.c -o build/bench_lru -lm
 *
 * Prints machine-readable lines
 *   BENCH <name> <value> <unit> [peer=<name> peer_value=<v> ratio=<r>]
 * then a human table. For ns/op lines the ratio is ours / peer, a cost
 * (lower is better), and it is the median of the per-run ratios: ours and
 * the peer run back to back (alternating which goes first) on the same key
 * sequence, so a noisy neighbour slows both sides of one ratio. Values are
 * medians of BENCH_RUNS runs with fixed seeds.
 *
 * What is timed is the operation and nothing else: keys have the store's
 * shape, "screenshots:sNNNNNNN:N" (22 bytes, ten chunks per session), and
 * the sequence of keys an op loop looks up is laid out in memory in that
 * order beforehand (a "probe stream" of 32-byte records, read sequentially),
 * so neither key formatting, nor random-number generation, nor a cache miss
 * on a scattered key array lands inside the timed loop. Values are 16
 * copied bytes.
 *
 * The peer ("plain") is what a C programmer writes for this job when the
 * keys are short: fixed capacity, one 64-byte-aligned array of 64-byte
 * entries {hash, prev, next, key (inline, up to 31 bytes), value}, a table
 * of 8-byte slots {entry index, low 32 hash bits}, linear probing,
 * backward-shift deletion, the same hash function as ts_lru; no TTL, no
 * byte budget, no invalidation index, no allocation after creation. The
 * "bare" lookup is the same table and entries with no recency update.
 *
 * - get-hit and set (update of a present key; insert of a new key into a
 *   full cache, which evicts one) at 10k, 100k and 1M entries, keys drawn
 *   uniformly at random (1M entries do not fit in the caches: memory latency);
 * - get-or-put at 100k entries over 200k keys (half the lookups miss and
 *   insert with an eviction);
 * - hit rate on a Zipf(0.99) trace over 100k keys at cache sizes of 1%, 10%
 *   and 30% of the keys, next to an exact LRU simulation (they must agree,
 *   and so must the plain LRU);
 * - invalidating one session (10 entries) in a 1M-entry cache, to show the
 *   cost follows what is removed, not the cache size. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_RUNS 7
#define KSTRIDE 32
#define KMAX 31
#define VLEN 16

/* Thread CPU time: the bench shares its two cores with other work, and
   time spent descheduled is not the cache's. */
static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return rng_state = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double tmp[64];
    int i;
    for (i = 0; i < n; i++) tmp[i] = v[i];
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    return tmp[n / 2];
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    return p;
}

static void fail(const char *what)
{
    fprintf(stderr, "bench_lru: %s\n", what);
    exit(1);
}

/* ---- keys and probe streams ------------------------------------------------ */

static char *keys; /* key i at keys + i * KSTRIDE, for building caches */
static unsigned char *key_len;
static size_t nkeys;

static void make_keys(size_t n)
{
    size_t i;
    keys = (char *)xmalloc(n * KSTRIDE);
    key_len = (unsigned char *)xmalloc(n);
    for (i = 0; i < n; i++)
        key_len[i] = (unsigned char)snprintf(keys + i * KSTRIDE, KSTRIDE, "screenshots:s%07u:%u",
                                             (unsigned)(i / 10), (unsigned)(i % 10));
    nkeys = n;
}
#define KEY(i) (keys + (size_t)(i) * KSTRIDE)

/* One op's key, as the caller would have it at hand. */
typedef struct probe {
    char key[KMAX];
    unsigned char len;
} probe;

static probe *make_stream(const uint32_t *ids, size_t n)
{
    probe *ps = (probe *)xmalloc(n * sizeof *ps);
    size_t i;
    for (i = 0; i < n; i++) {
        if (ids[i] >= nkeys) fail("key id out of range");
        memcpy(ps[i].key, KEY(ids[i]), KMAX);
        ps[i].len = key_len[ids[i]];
    }
    return ps;
}

static uint64_t charge_of(size_t i) { return key_len[i] + VLEN + TS_LRU_ENTRY_OVERHEAD; }

static ts_lru *new_cache(size_t entries)
{
    ts_lru_config cfg = ts_lru_config_default();
    ts_lru *lru = NULL;
    cfg.max_bytes = (uint64_t)entries * charge_of(0); /* every key has the same length */
    cfg.default_ttl_ms = TS_LRU_NO_TTL;
    if (ts_lru_create(&cfg, &lru) != TS_OK) fail("create failed");
    return lru;
}

static const unsigned char value16[VLEN] = "0123456789abcdef";
static const unsigned char value16b[VLEN] = "fedcba9876543210";

/* ---- the plain open-addressing LRU ------------------------------------------ */

typedef struct pl_ent {
    uint64_t hash;
    uint32_t prev, next; /* index cap is the list sentinel */
    unsigned char klen;
    char key[KMAX];
    unsigned char val[VLEN];
} pl_ent; /* 64 bytes */

typedef struct pl_slot {
    uint32_t idx1; /* entry index + 1, 0 = empty */
    uint32_t h32;  /* low hash bits: the home slot, and a filter before the key */
} pl_slot;

typedef struct plain_lru {
    pl_slot *tab;
    size_t mask;
    pl_ent *ent;
    uint32_t cap, count;
} plain_lru;

static void plain_init(plain_lru *p, uint32_t cap)
{
    size_t tcap = 16, bytes = ((size_t)cap + 1) * sizeof(pl_ent);
    void *mem = NULL;
    while (tcap * 3 < (size_t)cap * 4) tcap *= 2; /* the same load limit as ts_lru: 3/4 */
    p->tab = (pl_slot *)calloc(tcap, sizeof *p->tab);
    if (posix_memalign(&mem, 64, bytes) != 0 || !p->tab) fail("out of memory");
    memset(mem, 0, bytes);
    p->ent = (pl_ent *)mem;
    p->mask = tcap - 1;
    p->cap = cap;
    p->count = 0;
    p->ent[cap].prev = p->ent[cap].next = cap;
}

static void plain_free(plain_lru *p)
{
    free(p->tab);
    free(p->ent);
}

static void plain_unlink(plain_lru *p, uint32_t e)
{
    p->ent[p->ent[e].prev].next = p->ent[e].next;
    p->ent[p->ent[e].next].prev = p->ent[e].prev;
}

static void plain_front(plain_lru *p, uint32_t e)
{
    uint32_t s = p->cap;
    p->ent[e].prev = s;
    p->ent[e].next = p->ent[s].next;
    p->ent[p->ent[s].next].prev = e;
    p->ent[s].next = e;
}

/* The slot holding key k, or the empty slot that ends its probe run. */
static size_t plain_slot(const plain_lru *p, const char *k, size_t n, uint64_t h)
{
    size_t j = (size_t)h & p->mask;
    uint32_t h32 = (uint32_t)h;
    for (;;) {
        pl_slot s = p->tab[j];
        if (!s.idx1) return j;
        if (s.h32 == h32) {
            const pl_ent *e = &p->ent[s.idx1 - 1];
            if (e->klen == n && memcmp(e->key, k, n) == 0) return j;
        }
        j = (j + 1) & p->mask;
    }
}

/* The bare hash-map lookup: no recency update. */
static const unsigned char *plain_lookup(const plain_lru *p, const char *k, size_t n)
{
    size_t j = plain_slot(p, k, n, ts__hash_bytes(k, n));
    return p->tab[j].idx1 ? p->ent[p->tab[j].idx1 - 1].val : NULL;
}

static const unsigned char *plain_get(plain_lru *p, const char *k, size_t n)
{
    size_t j = plain_slot(p, k, n, ts__hash_bytes(k, n));
    uint32_t e;
    if (!p->tab[j].idx1) return NULL;
    e = p->tab[j].idx1 - 1;
    if (p->ent[p->cap].next != e) {
        plain_unlink(p, e);
        plain_front(p, e);
    }
    return p->ent[e].val;
}

static void plain_tab_del(plain_lru *p, size_t i)
{
    size_t j = i, mask = p->mask;
    p->tab[i].idx1 = 0;
    for (;;) {
        size_t home;
        j = (j + 1) & mask;
        if (!p->tab[j].idx1) break;
        home = (size_t)p->tab[j].h32 & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            p->tab[i] = p->tab[j];
            p->tab[j].idx1 = 0;
            i = j;
        }
    }
}

/* Stores v under k (n <= KMAX): updates a present key, else inserts,
   evicting the least recently used entry when full. */
static void plain_set(plain_lru *p, const char *k, size_t n, const unsigned char *v)
{
    uint64_t h = ts__hash_bytes(k, n);
    size_t j = plain_slot(p, k, n, h);
    uint32_t e;
    pl_ent *x;
    if (p->tab[j].idx1) {
        e = p->tab[j].idx1 - 1;
        memcpy(p->ent[e].val, v, VLEN);
        if (p->ent[p->cap].next != e) {
            plain_unlink(p, e);
            plain_front(p, e);
        }
        return;
    }
    if (p->count == p->cap) {
        size_t j0;
        e = p->ent[p->cap].prev;
        j0 = (size_t)p->ent[e].hash & p->mask;
        while (p->tab[j0].idx1 != e + 1) j0 = (j0 + 1) & p->mask;
        plain_tab_del(p, j0);
        plain_unlink(p, e);
        j = (size_t)h & p->mask; /* the deletion may have moved the run's end */
        while (p->tab[j].idx1) j = (j + 1) & p->mask;
    } else {
        e = p->count++;
    }
    x = &p->ent[e];
    x->hash = h;
    x->klen = (unsigned char)n;
    memcpy(x->key, k, n);
    memcpy(x->val, v, VLEN);
    p->tab[j].idx1 = e + 1;
    p->tab[j].h32 = (uint32_t)h;
    plain_front(p, e);
}

/* ---- timed loops: the same stream through each side ------------------------- */

static volatile uint64_t sink;

static double t_ours_get(ts_lru *lru, const probe *ps, size_t ops)
{
    uint64_t acc = 0;
    size_t i;
    double t0 = now_ns(), t;
    for (i = 0; i < ops; i++) {
        const void *v;
        size_t len;
        if (ts_lru_get(lru, ps[i].key, ps[i].len, 1, &v, &len) == TS_OK)
            acc += ((const unsigned char *)v)[0];
    }
    t = (now_ns() - t0) / (double)ops;
    if (acc < (uint64_t)ops * '0') fail("ts_lru get-hit missed");
    sink += acc;
    return t;
}

static double t_plain_get(plain_lru *p, const probe *ps, size_t ops)
{
    uint64_t acc = 0;
    size_t i;
    double t0 = now_ns(), t;
    for (i = 0; i < ops; i++) {
        const unsigned char *v = plain_get(p, ps[i].key, ps[i].len);
        if (v) acc += v[0];
    }
    t = (now_ns() - t0) / (double)ops;
    if (acc < (uint64_t)ops * '0') fail("plain get-hit missed");
    sink += acc;
    return t;
}

static double t_bare_get(const plain_lru *p, const probe *ps, size_t ops)
{
    uint64_t acc = 0;
    size_t i;
    double t0 = now_ns(), t;
    for (i = 0; i < ops; i++) {
        const unsigned char *v = plain_lookup(p, ps[i].key, ps[i].len);
        if (v) acc += v[0];
    }
    t = (now_ns() - t0) / (double)ops;
    if (acc < (uint64_t)ops * '0') fail("bare lookup missed");
    sink += acc;
    return t;
}

static double t_ours_set(ts_lru *lru, const probe *ps, size_t ops, const unsigned char *v)
{
    size_t i;
    double t0 = now_ns();
    for (i = 0; i < ops; i++)
        if (ts_lru_put_copy(lru, ps[i].key, ps[i].len, v, VLEN, 0, 2) != TS_OK) fail("put failed");
    return (now_ns() - t0) / (double)ops;
}

static double t_plain_set(plain_lru *p, const probe *ps, size_t ops, const unsigned char *v)
{
    size_t i;
    double t0 = now_ns();
    for (i = 0; i < ops; i++) plain_set(p, ps[i].key, ps[i].len, v);
    return (now_ns() - t0) / (double)ops;
}

static double t_ours_gop(ts_lru *lru, const probe *ps, size_t ops, size_t *hits)
{
    size_t i, h = 0;
    double t0 = now_ns(), t;
    for (i = 0; i < ops; i++) {
        const void *v;
        size_t len;
        if (ts_lru_get(lru, ps[i].key, ps[i].len, 1, &v, &len) == TS_OK) h++;
        else if (ts_lru_put_copy(lru, ps[i].key, ps[i].len, value16, VLEN, 0, 1) != TS_OK)
            fail("put failed");
    }
    t = (now_ns() - t0) / (double)ops;
    *hits = h;
    return t;
}

static double t_plain_gop(plain_lru *p, const probe *ps, size_t ops, size_t *hits)
{
    size_t i, h = 0;
    double t0 = now_ns(), t;
    for (i = 0; i < ops; i++) {
        if (plain_get(p, ps[i].key, ps[i].len)) h++;
        else plain_set(p, ps[i].key, ps[i].len, value16);
    }
    t = (now_ns() - t0) / (double)ops;
    *hits = h;
    return t;
}

/* ---- output ----------------------------------------------------------------- */

typedef struct fig {
    double ours, peer, ratio; /* medians; ratio = median of per-run ours/peer */
} fig;

static fig fig_of(const double *ours, const double *peer, int runs)
{
    double r[64];
    fig f;
    int i;
    for (i = 0; i < runs; i++) r[i] = peer[i] > 0 ? ours[i] / peer[i] : 0.0;
    f.ours = median(ours, runs);
    f.peer = median(peer, runs);
    f.ratio = median(r, runs);
    return f;
}

static void bench_line(const char *name, fig f, const char *peer)
{
    printf("BENCH %s %.2f ns/op peer=%s peer_value=%.2f ratio=%.2f note=cost_ratio_lower_is_better\n",
           name, f.ours, peer, f.peer, f.ratio);
    fflush(stdout);
}

/* ---- get-hit and set at n entries ------------------------------------------- */

typedef struct size_row {
    size_t n;
    fig get, bare, upd, ins;
} size_row;

static void bench_size(size_t n, size_row *row)
{
    const size_t ops = 1000000, m = n < 200000 ? n : 200000; /* new keys per set(new) run */
    uint32_t *ids = (uint32_t *)xmalloc((ops > BENCH_RUNS * m ? ops : BENCH_RUNS * m) * sizeof *ids);
    double og[BENCH_RUNS], pg[BENCH_RUNS], bg[BENCH_RUNS], ou[BENCH_RUNS], pu[BENCH_RUNS],
        oi[BENCH_RUNS], pi[BENCH_RUNS];
    probe *ps, *pnew;
    ts_lru *lru = new_cache(n);
    plain_lru p;
    size_t i;
    int run;
    if (n + BENCH_RUNS * m > nkeys) fail("too few keys");
    plain_init(&p, (uint32_t)n);
    for (i = 0; i < n; i++) {
        if (ts_lru_put_copy(lru, KEY(i), key_len[i], value16, VLEN, 0, 0) != TS_OK) fail("fill");
        plain_set(&p, KEY(i), key_len[i], value16);
    }
    for (i = 0; i < ops; i++) ids[i] = (uint32_t)(rng() % n);
    ps = make_stream(ids, ops);
    for (i = 0; i < BENCH_RUNS * m; i++) ids[i] = (uint32_t)(n + i); /* never seen before */
    pnew = make_stream(ids, BENCH_RUNS * m);
    (void)t_ours_get(lru, ps, ops / 4); /* warm both, untimed */
    (void)t_plain_get(&p, ps, ops / 4);

    for (run = 0; run < BENCH_RUNS; run++) {
        if (run & 1) {
            pg[run] = t_plain_get(&p, ps, ops);
            og[run] = t_ours_get(lru, ps, ops);
        } else {
            og[run] = t_ours_get(lru, ps, ops);
            pg[run] = t_plain_get(&p, ps, ops);
        }
        bg[run] = t_bare_get(&p, ps, ops);
        /* update of a present key: a new value of the same size */
        if (run & 1) {
            pu[run] = t_plain_set(&p, ps, ops, run & 2 ? value16 : value16b);
            ou[run] = t_ours_set(lru, ps, ops, run & 2 ? value16 : value16b);
        } else {
            ou[run] = t_ours_set(lru, ps, ops, run & 2 ? value16 : value16b);
            pu[run] = t_plain_set(&p, ps, ops, run & 2 ? value16 : value16b);
        }
    }
    /* new keys into the full caches: each set evicts the tail. Last, as it
       replaces the keys the get stream hits. */
    for (run = 0; run < BENCH_RUNS; run++) {
        const probe *chunk = pnew + (size_t)run * m;
        if (run & 1) {
            pi[run] = t_plain_set(&p, chunk, m, value16);
            oi[run] = t_ours_set(lru, chunk, m, value16);
        } else {
            oi[run] = t_ours_set(lru, chunk, m, value16);
            pi[run] = t_plain_set(&p, chunk, m, value16);
        }
    }
    {
        ts_lru_stats st;
        ts_lru_get_stats(lru, 3, &st);
        if (st.entries != n || st.evictions != BENCH_RUNS * m || p.count != n)
            fail("set(new) did not evict one per insert");
        /* both hold exactly the last n keys inserted */
        for (i = n + BENCH_RUNS * m - n; i < n + BENCH_RUNS * m; i += 97)
            if (!ts_lru_has(lru, KEY(i), key_len[i], 3) || !plain_lookup(&p, KEY(i), key_len[i]))
                fail("caches disagree after set(new)");
    }
    row->n = n;
    row->get = fig_of(og, pg, BENCH_RUNS);
    row->bare = fig_of(og, bg, BENCH_RUNS);
    row->upd = fig_of(ou, pu, BENCH_RUNS);
    row->ins = fig_of(oi, pi, BENCH_RUNS);
    ts_lru_destroy(lru);
    plain_free(&p);
    free(ps);
    free(pnew);
    free(ids);
}

/* ---- get-or-put: ts_lru against the plain LRU ---------------------------------- */

static void bench_get_or_put(size_t cap, size_t universe, fig *f, double *hit_rate)
{
    const size_t ops = 1000000;
    uint32_t *ids = (uint32_t *)xmalloc(ops * sizeof *ids);
    double o[BENCH_RUNS], pl[BENCH_RUNS];
    ts_lru *lru = new_cache(cap);
    plain_lru p;
    probe *ps;
    size_t i, hits = 0, phits = 0;
    int run;
    plain_init(&p, (uint32_t)cap);
    for (i = 0; i < cap; i++) {
        if (ts_lru_put_copy(lru, KEY(i), key_len[i], value16, VLEN, 0, 0) != TS_OK) fail("fill");
        plain_set(&p, KEY(i), key_len[i], value16);
    }
    for (i = 0; i < ops; i++) ids[i] = (uint32_t)(rng() % universe);
    ps = make_stream(ids, ops);
    for (run = 0; run < BENCH_RUNS; run++) {
        /* the two caches see the same sequence from the same state, so they
           must hit on exactly the same lookups */
        if (run & 1) {
            pl[run] = t_plain_gop(&p, ps, ops, &phits);
            o[run] = t_ours_gop(lru, ps, ops, &hits);
        } else {
            o[run] = t_ours_gop(lru, ps, ops, &hits);
            pl[run] = t_plain_gop(&p, ps, ops, &phits);
        }
        if (hits != phits) fail("get-or-put: ts_lru and the plain LRU disagree");
    }
    *f = fig_of(o, pl, BENCH_RUNS);
    *hit_rate = (double)hits / (double)ops;
    ts_lru_destroy(lru);
    plain_free(&p);
    free(ps);
    free(ids);
}

/* ---- Zipf hit rates against an exact LRU simulation -------------------------- */

/* The exact LRU: a doubly-linked list over key ids; hit = the id is in it. */
static size_t lru_sim(const uint32_t *trace, size_t n, size_t universe, size_t cap)
{
    uint32_t *prev = (uint32_t *)xmalloc((universe + 1) * sizeof(uint32_t));
    uint32_t *next = (uint32_t *)xmalloc((universe + 1) * sizeof(uint32_t));
    unsigned char *in = (unsigned char *)calloc(universe, 1);
    uint32_t s = (uint32_t)universe;
    size_t i, size = 0, hits = 0;
    if (!in) fail("out of memory");
    prev[s] = next[s] = s;
    for (i = 0; i < n; i++) {
        uint32_t k = trace[i];
        if (in[k]) {
            hits++;
            next[prev[k]] = next[k];
            prev[next[k]] = prev[k];
        } else {
            in[k] = 1;
            if (++size > cap) {
                uint32_t t = prev[s];
                next[prev[t]] = s;
                prev[s] = prev[t];
                in[t] = 0;
                size--;
            }
        }
        prev[k] = s;
        next[k] = next[s];
        prev[next[s]] = k;
        next[s] = k;
    }
    free(prev); free(next); free(in);
    return hits;
}

typedef struct zipf_row {
    double ours, sim, plain; /* hit rates */
    fig ns;                  /* get-or-put ns/op, ours vs plain */
} zipf_row;

static void bench_zipf(zipf_row *rows)
{
    const size_t universe = 100000, n = 4000000;
    const double pct[3] = {0.01, 0.10, 0.30};
    double *cdf = (double *)xmalloc(universe * sizeof(double)), sum = 0;
    uint32_t *perm = (uint32_t *)xmalloc(universe * sizeof(uint32_t));
    uint32_t *trace = (uint32_t *)xmalloc(n * sizeof(uint32_t));
    probe *ps;
    size_t i, c;
    for (i = 0; i < universe; i++) sum += 1.0 / pow((double)(i + 1), 0.99);
    for (i = 0; i < universe; i++)
        cdf[i] = (i ? cdf[i - 1] : 0) + 1.0 / pow((double)(i + 1), 0.99) / sum;
    for (i = 0; i < universe; i++) perm[i] = (uint32_t)i;
    for (i = universe - 1; i > 0; i--) {
        size_t j = (size_t)(rng() % (i + 1));
        uint32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    for (i = 0; i < n; i++) {
        double u = (double)(rng() >> 11) / 9007199254740992.0;
        size_t lo = 0, hi = universe - 1;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (cdf[mid] < u) lo = mid + 1;
            else hi = mid;
        }
        trace[i] = perm[lo];
    }
    ps = make_stream(trace, n);
    for (c = 0; c < 3; c++) {
        size_t cap = (size_t)(pct[c] * (double)universe), hits = 0, phits = 0;
        ts_lru *lru = new_cache(cap);
        plain_lru p;
        double o[1], pl[1];
        plain_init(&p, (uint32_t)cap);
        if (c & 1) {
            pl[0] = t_plain_gop(&p, ps, n, &phits);
            o[0] = t_ours_gop(lru, ps, n, &hits);
        } else {
            o[0] = t_ours_gop(lru, ps, n, &hits);
            pl[0] = t_plain_gop(&p, ps, n, &phits);
        }
        rows[c].ours = (double)hits / (double)n;
        rows[c].plain = (double)phits / (double)n;
        rows[c].sim = (double)lru_sim(trace, n, universe, cap) / (double)n;
        rows[c].ns = fig_of(o, pl, 1);
        ts_lru_destroy(lru);
        plain_free(&p);
    }
    free(cdf); free(perm); free(trace); free(ps);
}

/* ---- invalidation cost in a big cache -------------------------------------------- */

static void bench_invalidate(size_t n, double *session_ns, double *glob_ns)
{
    ts_lru *lru = new_cache(2 * n);
    size_t i, removed, total = 0, sessions = 2000;
    char id[16];
    double t0;
    for (i = 0; i < n; i++) ts_lru_put_copy(lru, KEY(i), key_len[i], value16, VLEN, 0, 0);
    t0 = now_ns();
    for (i = 0; i < sessions; i++) {
        size_t s = (size_t)(rng() % (n / 10));
        snprintf(id, sizeof id, "s%07u", (unsigned)s);
        ts_lru_invalidate_session(lru, id, strlen(id), &removed);
        total += removed;
    }
    *session_ns = (now_ns() - t0) / (double)sessions;
    t0 = now_ns();
    ts_lru_invalidate_glob(lru, "*:s0000001:*", 12, &removed);
    *glob_ns = now_ns() - t0;
    sink += total;
    ts_lru_destroy(lru);
}

int main(void)
{
    static const size_t sizes[3] = {10000, 100000, 1000000};
    static const char *pn[3] = {"1pct", "10pct", "30pct"};
    size_row rows[3];
    zipf_row z[3];
    fig gop;
    double gop_hit, inv_s, inv_g;
    char name[64];
    int i;

    make_keys(1000000 + BENCH_RUNS * 200000);
    for (i = 0; i < 3; i++) {
        unsigned k = (unsigned)(sizes[i] / 1000);
        bench_size(sizes[i], &rows[i]);
        snprintf(name, sizeof name, "lru_get_hit_%uk", k);
        bench_line(name, rows[i].get, "plain_oa_lru");
        snprintf(name, sizeof name, "lru_get_hit_%uk_vs_bare", k);
        bench_line(name, rows[i].bare, "bare_hash_lookup");
        snprintf(name, sizeof name, "lru_set_update_%uk", k);
        bench_line(name, rows[i].upd, "plain_oa_lru");
        snprintf(name, sizeof name, "lru_set_evict_%uk", k);
        bench_line(name, rows[i].ins, "plain_oa_lru");
    }
    bench_get_or_put(100000, 200000, &gop, &gop_hit);
    bench_line("lru_get_or_put_100k", gop, "plain_oa_lru");
    bench_zipf(z);
    for (i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "lru_zipf099_hit_rate_%s", pn[i]);
        printf("BENCH %s %.6f fraction peer=exact_lru_sim peer_value=%.6f ratio=%.4f\n", name,
               z[i].ours, z[i].sim, z[i].sim > 0 ? z[i].ours / z[i].sim : 0.0);
        snprintf(name, sizeof name, "lru_zipf099_get_or_put_%s", pn[i]);
        bench_line(name, z[i].ns, "plain_oa_lru");
    }
    bench_invalidate(1000000, &inv_s, &inv_g);
    printf("BENCH lru_invalidate_session_1M %.4f us/op\n", inv_s / 1000.0);
    printf("BENCH lru_invalidate_glob_1M %.4f ms/op\n", inv_g / 1e6);

    printf("\nts_lru vs a plain open-addressing LRU (ns/op, medians of %d runs; ratio ="
           " median of same-run ratios)\n", BENCH_RUNS);
    printf("  keys \"screenshots:sNNNNNNN:N\", 16-byte values, uniform random keys\n");
    printf("  entries  op               ts_lru    plain   ratio   | bare lookup  get-hit/bare\n");
    for (i = 0; i < 3; i++) {
        printf("  %7u  get-hit         %6.1f   %6.1f   %5.2fx  |   %6.1f       %5.2fx\n",
               (unsigned)rows[i].n, rows[i].get.ours, rows[i].get.peer, rows[i].get.ratio,
               rows[i].bare.peer, rows[i].bare.ratio);
        printf("  %7s  set (update)    %6.1f   %6.1f   %5.2fx\n", "", rows[i].upd.ours,
               rows[i].upd.peer, rows[i].upd.ratio);
        printf("  %7s  set (new,evict) %6.1f   %6.1f   %5.2fx\n", "", rows[i].ins.ours,
               rows[i].ins.peer, rows[i].ins.ratio);
    }
    printf("   100000  get-or-put      %6.1f   %6.1f   %5.2fx  (200k keys, hit rate %.3f, both)\n",
           gop.ours, gop.peer, gop.ratio, gop_hit);
    printf("  Zipf(0.99), 100k keys, 4M requests: hit rate ts_lru / plain / exact LRU simulation\n");
    for (i = 0; i < 3; i++)
        printf("    cache %2d%%  %.4f / %.4f / %.4f  %s  (get-or-put %.1f ns vs plain %.1f ns)\n",
               i == 0 ? 1 : i == 1 ? 10 : 30, z[i].ours, z[i].plain, z[i].sim,
               z[i].ours == z[i].sim && z[i].plain == z[i].sim ? "agree" : "DIFFER", z[i].ns.ours,
               z[i].ns.peer);
    printf("  invalidate one session (10 entries) in 1M entries: %.2f us;"
           " glob over 1M: %.1f ms\n", inv_s / 1000.0, inv_g / 1e6);
    for (i = 0; i < 3; i++)
        if (z[i].ours != z[i].sim || z[i].plain != z[i].sim) return 1;
    return 0;
}
