/* bench/bench_lru.c: the LRU cache (ts_lru).
 *
 *   gcc -O2 -march=native -I. bench/bench_lru.c -o build/bench_lru -lm
 *
 * Prints machine-readable lines
 *   BENCH <name> <value> <unit> [peer=<name> peer_value=<v> ratio=<r>]
 * then a human table. For ns/op lines the ratio is ours / peer, a cost
 * (lower is better); for hit rates it is ours / the exact simulation (must
 * be 1). Every figure is the median of BENCH_RUNS runs with
 * fixed seeds. Keys have the store's shape, "screenshots:sNNNNNNN:N" (22
 * bytes, ten chunks per session); values are 16 copied bytes.
 *
 * - get-hit and set (update of a present key, and insert of a new key into
 *   a full cache, which evicts one) at 10k, 100k and 1M entries, keys drawn
 *   uniformly at random (so 1M entries measure memory latency);
 * - get-hit as a ratio to a bare open-addressing hash-map lookup of the same
 *   keys with the same hash function (no recency list, no TTL check);
 * - get-or-put at 100k entries over 200k keys (half the lookups miss and
 *   insert with an eviction), next to a plain fixed-capacity
 *   open-addressing LRU written here (arrays, no per-entry allocation);
 * - hit rate on a Zipf(0.99) trace over 100k keys at cache sizes of 1%, 10%
 *   and 30% of the keys, next to an exact LRU simulation (they must agree);
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

#define BENCH_RUNS 5
#define KSTRIDE 32
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

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* ---- keys ------------------------------------------------------------------- */

static char *keys;      /* key i at keys + i * KSTRIDE */
static char *stored;    /* the peers' own copy of the keys, as a real map has:
                           comparing a key with itself would be free */
static size_t *key_len;
static size_t nkeys;

static void make_keys(size_t n)
{
    size_t i;
    keys = (char *)malloc(n * KSTRIDE);
    key_len = (size_t *)malloc(n * sizeof *key_len);
    if (!keys || !key_len) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (i = 0; i < n; i++)
        key_len[i] = (size_t)snprintf(keys + i * KSTRIDE, KSTRIDE, "screenshots:s%07u:%u",
                                      (unsigned)(i / 10), (unsigned)(i % 10));
    stored = (char *)malloc(n * KSTRIDE);
    if (!stored) { fprintf(stderr, "out of memory\n"); exit(1); }
    memcpy(stored, keys, n * KSTRIDE);
    nkeys = n;
}
#define KEY(i) (keys + (size_t)(i) * KSTRIDE)
#define STORED(i) (stored + (size_t)(i) * KSTRIDE)

static uint64_t charge_of(size_t i) { return key_len[i] + VLEN + TS_LRU_ENTRY_OVERHEAD; }

static ts_lru *new_cache(uint64_t max_bytes)
{
    ts_lru_config cfg = ts_lru_config_default();
    ts_lru *lru = NULL;
    cfg.max_bytes = max_bytes;
    cfg.default_ttl_ms = TS_LRU_NO_TTL;
    if (ts_lru_create(&cfg, &lru) != TS_OK) { fprintf(stderr, "create failed\n"); exit(1); }
    return lru;
}

static const unsigned char value16[VLEN] = "0123456789abcdef";

/* ---- the bare hash map: what a lookup costs with nothing else -------------- */

typedef struct bare_slot { uint64_t hash; uint32_t idx; uint32_t used; } bare_slot;
typedef struct bare_map { bare_slot *slots; size_t mask; unsigned char (*vals)[VLEN]; } bare_map;

static void bare_build(bare_map *m, size_t n)
{
    size_t cap = 16, i;
    while (cap * 3 < n * 4) cap *= 2; /* the same load limit as ts_lru: 3/4 */
    m->slots = (bare_slot *)calloc(cap, sizeof *m->slots);
    m->vals = (unsigned char (*)[VLEN])malloc(n * VLEN);
    m->mask = cap - 1;
    for (i = 0; i < n; i++) {
        uint64_t h = ts__hash_bytes(KEY(i), key_len[i]);
        size_t j = (size_t)h & m->mask;
        while (m->slots[j].used) j = (j + 1) & m->mask;
        m->slots[j].hash = h;
        m->slots[j].idx = (uint32_t)i;
        m->slots[j].used = 1;
        memcpy(m->vals[i], value16, VLEN);
    }
}

static const unsigned char *bare_get(const bare_map *m, const char *k, size_t n)
{
    uint64_t h = ts__hash_bytes(k, n);
    size_t j = (size_t)h & m->mask;
    for (;;) {
        const bare_slot *s = &m->slots[j];
        if (!s->used) return NULL;
        if (s->hash == h && key_len[s->idx] == n && memcmp(STORED(s->idx), k, n) == 0)
            return m->vals[s->idx];
        j = (j + 1) & m->mask;
    }
}

/* ---- a plain open-addressing LRU: fixed capacity, arrays, no allocation ---- */

typedef struct plain_lru {
    uint32_t *tab;      /* entry index + 1, 0 = empty */
    uint64_t *tab_hash;
    size_t mask;
    uint32_t *prev, *next, *key; /* per entry; index cap is the list sentinel */
    uint64_t *ehash;              /* per entry, to find its slot when evicted */
    unsigned char (*vals)[VLEN];
    uint32_t cap, count;
} plain_lru;

static void plain_init(plain_lru *p, uint32_t cap)
{
    size_t tcap = 16;
    while (tcap * 3 < (size_t)cap * 4) tcap *= 2;
    p->tab = (uint32_t *)calloc(tcap, sizeof *p->tab);
    p->tab_hash = (uint64_t *)calloc(tcap, sizeof *p->tab_hash);
    p->mask = tcap - 1;
    p->prev = (uint32_t *)malloc((cap + 1) * sizeof(uint32_t));
    p->next = (uint32_t *)malloc((cap + 1) * sizeof(uint32_t));
    p->key = (uint32_t *)malloc((cap + 1) * sizeof(uint32_t));
    p->ehash = (uint64_t *)malloc((cap + 1) * sizeof(uint64_t));
    p->vals = (unsigned char (*)[VLEN])malloc((size_t)(cap + 1) * VLEN);
    p->cap = cap;
    p->count = 0;
    p->prev[cap] = p->next[cap] = cap;
}

static void plain_free(plain_lru *p)
{
    free(p->tab); free(p->tab_hash); free(p->prev); free(p->next); free(p->key); free(p->vals);
    free(p->ehash);
}

static void plain_unlink(plain_lru *p, uint32_t e)
{
    p->next[p->prev[e]] = p->next[e];
    p->prev[p->next[e]] = p->prev[e];
}

static void plain_front(plain_lru *p, uint32_t e)
{
    uint32_t s = p->cap;
    p->prev[e] = s;
    p->next[e] = p->next[s];
    p->prev[p->next[s]] = e;
    p->next[s] = e;
}

static size_t plain_slot(const plain_lru *p, uint32_t k, uint64_t h)
{
    size_t j = (size_t)h & p->mask;
    while (p->tab[j]) {
        uint32_t e = p->tab[j] - 1;
        if (p->tab_hash[j] == h && key_len[p->key[e]] == key_len[k] &&
            memcmp(STORED(p->key[e]), KEY(k), key_len[k]) == 0)
            return j;
        j = (j + 1) & p->mask;
    }
    return j;
}

static const unsigned char *plain_get(plain_lru *p, uint32_t k)
{
    uint64_t h = ts__hash_bytes(KEY(k), key_len[k]);
    size_t j = plain_slot(p, k, h);
    uint32_t e;
    if (!p->tab[j]) return NULL;
    e = p->tab[j] - 1;
    if (p->next[p->cap] != e) { plain_unlink(p, e); plain_front(p, e); }
    return p->vals[e];
}

static void plain_tab_del(plain_lru *p, size_t i)
{
    size_t j = i, mask = p->mask;
    p->tab[i] = 0;
    for (;;) {
        size_t home;
        j = (j + 1) & mask;
        if (!p->tab[j]) break;
        home = (size_t)p->tab_hash[j] & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            p->tab[i] = p->tab[j]; p->tab_hash[i] = p->tab_hash[j];
            p->tab[j] = 0;
            i = j;
        }
    }
}

/* Inserts a key known to be absent, evicting the tail when full. */
static void plain_put_new(plain_lru *p, uint32_t k, const unsigned char *v)
{
    uint64_t h = ts__hash_bytes(KEY(k), key_len[k]);
    uint32_t e;
    size_t j;
    if (p->count == p->cap) {
        uint32_t t = p->prev[p->cap];
        size_t j0 = (size_t)p->ehash[t] & p->mask;
        while (p->tab[j0] != t + 1) j0 = (j0 + 1) & p->mask;
        plain_tab_del(p, j0);
        plain_unlink(p, t);
        e = t;
    } else {
        e = p->count++;
    }
    p->key[e] = k;
    p->ehash[e] = h;
    memcpy(p->vals[e], v, VLEN);
    j = plain_slot(p, k, h);
    p->tab[j] = e + 1;
    p->tab_hash[j] = h;
    plain_front(p, e);
}

/* ---- output ----------------------------------------------------------------- */

static void bench_line(const char *name, double v, const char *unit, const char *peer, double pv)
{
    if (peer)
        printf("BENCH %s %.2f %s peer=%s peer_value=%.2f ratio=%.2f note=cost_ratio_lower_is_better\n",
               name, v, unit, peer, pv, pv > 0 ? v / pv : 0.0);
    else
        printf("BENCH %s %.4f %s\n", name, v, unit);
    fflush(stdout);
}

static volatile uint64_t sink;

/* ---- get-hit and set at n entries ------------------------------------------ */

typedef struct size_row { size_t n; double get, bare, upd, ins; } size_row;

static void bench_size(size_t n, size_row *row)
{
    size_t ops = 1000000, i;
    uint32_t *seq = (uint32_t *)malloc(ops * sizeof *seq);
    uint64_t budget = (uint64_t)n * charge_of(0);
    double t_get[BENCH_RUNS], t_bare[BENCH_RUNS], t_upd[BENCH_RUNS], t_ins[BENCH_RUNS];
    int run;
    bare_map bm;
    for (i = 0; i < ops; i++) seq[i] = (uint32_t)(rng() % n);
    bare_build(&bm, n);
    for (run = 0; run < BENCH_RUNS; run++) {
        ts_lru *lru = new_cache(budget);
        double t0;
        uint64_t acc = 0;
        size_t next_new = n;
        for (i = 0; i < n; i++) ts_lru_put_copy(lru, KEY(i), key_len[i], value16, VLEN, 0, 0);

        t0 = now_ns();
        for (i = 0; i < ops; i++) {
            const void *v;
            size_t len;
            if (ts_lru_get(lru, KEY(seq[i]), key_len[seq[i]], 1, &v, &len) == TS_OK)
                acc += ((const unsigned char *)v)[0];
        }
        t_get[run] = (now_ns() - t0) / (double)ops;
        if (acc != (uint64_t)ops * '0') { fprintf(stderr, "get-hit missed\n"); exit(1); }

        t0 = now_ns();
        for (i = 0; i < ops; i++) {
            const unsigned char *v = bare_get(&bm, KEY(seq[i]), key_len[seq[i]]);
            acc += v ? v[0] : 0;
        }
        t_bare[run] = (now_ns() - t0) / (double)ops;

        t0 = now_ns();
        for (i = 0; i < ops; i++)
            ts_lru_put_copy(lru, KEY(seq[i]), key_len[seq[i]], value16, VLEN, 0, 2);
        t_upd[run] = (now_ns() - t0) / (double)ops;

        /* new keys into the full cache: each insert evicts the tail */
        t0 = now_ns();
        for (i = 0; i < n; i++, next_new++)
            ts_lru_put_copy(lru, KEY(next_new), key_len[next_new], value16, VLEN, 0, 3);
        t_ins[run] = (now_ns() - t0) / (double)n;
        {
            ts_lru_stats st;
            ts_lru_get_stats(lru, 3, &st);
            if (st.entries != n || st.evictions != n) { fprintf(stderr, "set-evict off\n"); exit(1); }
        }
        sink += acc;
        ts_lru_destroy(lru);
    }
    row->n = n;
    row->get = median(t_get, BENCH_RUNS);
    row->bare = median(t_bare, BENCH_RUNS);
    row->upd = median(t_upd, BENCH_RUNS);
    row->ins = median(t_ins, BENCH_RUNS);
    free(bm.slots);
    free(bm.vals);
    free(seq);
}

/* ---- get-or-put: ts_lru against the plain LRU ---------------------------------- */

static void bench_get_or_put(size_t cap, size_t universe, double *ours, double *plain,
                             double *ours_hit, double *plain_hit, double *ours_get,
                             double *plain_get_hit)
{
    size_t ops = 1000000, i;
    uint32_t *seq = (uint32_t *)malloc(ops * sizeof *seq);
    double t1[BENCH_RUNS], t2[BENCH_RUNS], t3[BENCH_RUNS], t4[BENCH_RUNS];
    int run;
    for (i = 0; i < ops; i++) seq[i] = (uint32_t)(rng() % universe);
    for (run = 0; run < BENCH_RUNS; run++) {
        ts_lru *lru = new_cache((uint64_t)cap * charge_of(0));
        plain_lru p;
        size_t hits = 0, phits = 0;
        double t0;
        uint64_t acc = 0;
        plain_init(&p, (uint32_t)cap);
        for (i = 0; i < cap; i++) {
            ts_lru_put_copy(lru, KEY(i), key_len[i], value16, VLEN, 0, 0);
            plain_put_new(&p, (uint32_t)i, value16);
        }
        /* get-hit on the plain LRU and ts_lru, the same keys */
        t0 = now_ns();
        for (i = 0; i < ops; i++) {
            const unsigned char *v = plain_get(&p, seq[i] % (uint32_t)cap);
            acc += v[0];
        }
        t4[run] = (now_ns() - t0) / (double)ops;
        t0 = now_ns();
        for (i = 0; i < ops; i++) {
            const void *v;
            size_t len;
            ts_lru_get(lru, KEY(seq[i] % cap), key_len[seq[i] % cap], 1, &v, &len);
            acc += ((const unsigned char *)v)[0];
        }
        t3[run] = (now_ns() - t0) / (double)ops;

        t0 = now_ns();
        for (i = 0; i < ops; i++) {
            const void *v;
            size_t len;
            uint32_t k = seq[i];
            if (ts_lru_get(lru, KEY(k), key_len[k], 1, &v, &len) == TS_OK) hits++;
            else ts_lru_put_copy(lru, KEY(k), key_len[k], value16, VLEN, 0, 1);
        }
        t1[run] = (now_ns() - t0) / (double)ops;
        t0 = now_ns();
        for (i = 0; i < ops; i++) {
            uint32_t k = seq[i];
            if (plain_get(&p, k)) phits++;
            else plain_put_new(&p, k, value16);
        }
        t2[run] = (now_ns() - t0) / (double)ops;
        *ours_hit = (double)hits / (double)ops;
        *plain_hit = (double)phits / (double)ops;
        sink += acc;
        plain_free(&p);
        ts_lru_destroy(lru);
    }
    *ours = median(t1, BENCH_RUNS);
    *plain = median(t2, BENCH_RUNS);
    *ours_get = median(t3, BENCH_RUNS);
    *plain_get_hit = median(t4, BENCH_RUNS);
    free(seq);
}

/* ---- Zipf hit rates against an exact LRU simulation -------------------------- */

/* The exact LRU: a doubly-linked list over key ids; hit = the id is in it. */
static size_t lru_sim(const uint32_t *trace, size_t n, size_t universe, size_t cap)
{
    uint32_t *prev = (uint32_t *)malloc((universe + 1) * sizeof(uint32_t));
    uint32_t *next = (uint32_t *)malloc((universe + 1) * sizeof(uint32_t));
    unsigned char *in = (unsigned char *)calloc(universe, 1);
    uint32_t s = (uint32_t)universe;
    size_t i, size = 0, hits = 0;
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

static void bench_zipf(double *rates_ours, double *rates_sim, double *ns_per_op)
{
    const size_t universe = 100000, n = 4000000;
    const double pct[3] = {0.01, 0.10, 0.30};
    double *cdf = (double *)malloc(universe * sizeof(double)), sum = 0;
    uint32_t *perm = (uint32_t *)malloc(universe * sizeof(uint32_t));
    uint32_t *trace = (uint32_t *)malloc(n * sizeof(uint32_t));
    size_t i, c;
    for (i = 0; i < universe; i++) sum += 1.0 / pow((double)(i + 1), 0.99);
    for (i = 0, cdf[0] = 0; i < universe; i++)
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
    for (c = 0; c < 3; c++) {
        size_t cap = (size_t)(pct[c] * (double)universe), hits = 0;
        ts_lru *lru = new_cache((uint64_t)cap * charge_of(0));
        double t0 = now_ns();
        for (i = 0; i < n; i++) {
            uint32_t k = trace[i];
            if (ts_lru_get(lru, KEY(k), key_len[k], 0, NULL, NULL) == TS_OK) hits++;
            else ts_lru_put_copy(lru, KEY(k), key_len[k], value16, VLEN, 0, 0);
        }
        ns_per_op[c] = (now_ns() - t0) / (double)n;
        rates_ours[c] = (double)hits / (double)n;
        rates_sim[c] = (double)lru_sim(trace, n, universe, cap) / (double)n;
        ts_lru_destroy(lru);
    }
    free(cdf); free(perm); free(trace);
}

/* ---- invalidation cost in a big cache -------------------------------------------- */

static void bench_invalidate(size_t n, double *session_ns, double *glob_ns)
{
    ts_lru *lru = new_cache((uint64_t)n * charge_of(0) * 2);
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
    size_row rows[3];
    double gop, gop_plain, gop_hit, gop_plain_hit, gh, gh_plain, zo[3], zs[3], zns[3], inv_s,
        inv_g;
    char name[64];
    int i;

    make_keys(2 * 1000000);
    for (i = 0; i < 3; i++) {
        bench_size(sizes[i], &rows[i]);
        snprintf(name, sizeof name, "lru_get_hit_%uk", (unsigned)(sizes[i] / 1000));
        bench_line(name, rows[i].get, "ns/op", "bare_hash_lookup", rows[i].bare);
        snprintf(name, sizeof name, "lru_set_update_%uk", (unsigned)(sizes[i] / 1000));
        bench_line(name, rows[i].upd, "ns/op", NULL, 0);
        snprintf(name, sizeof name, "lru_set_evict_%uk", (unsigned)(sizes[i] / 1000));
        bench_line(name, rows[i].ins, "ns/op", NULL, 0);
    }
    bench_get_or_put(100000, 200000, &gop, &gop_plain, &gop_hit, &gop_plain_hit, &gh, &gh_plain);
    bench_line("lru_get_hit_100k_vs_plain", gh, "ns/op", "plain_oa_lru", gh_plain);
    bench_line("lru_get_or_put_100k", gop, "ns/op", "plain_oa_lru", gop_plain);
    bench_zipf(zo, zs, zns);
    for (i = 0; i < 3; i++) {
        static const char *pn[3] = {"1pct", "10pct", "30pct"};
        snprintf(name, sizeof name, "lru_zipf099_hit_rate_%s", pn[i]);
        printf("BENCH %s %.6f fraction peer=exact_lru_sim peer_value=%.6f ratio=%.4f\n", name, zo[i],
               zs[i], zs[i] > 0 ? zo[i] / zs[i] : 0.0);
        snprintf(name, sizeof name, "lru_zipf099_get_or_put_%s", pn[i]);
        bench_line(name, zns[i], "ns/op", NULL, 0);
    }
    bench_invalidate(1000000, &inv_s, &inv_g);
    bench_line("lru_invalidate_session_1M", inv_s / 1000.0, "us/op", NULL, 0);
    bench_line("lru_invalidate_glob_1M", inv_g / 1e6, "ms/op", NULL, 0);

    printf("\nts_lru (median of %d runs; keys \"screenshots:sNNNNNNN:N\", 16-byte values)\n",
           BENCH_RUNS);
    printf("  entries   get-hit   bare lookup  ratio   set(update)  set(new, evicts)\n");
    for (i = 0; i < 3; i++)
        printf("  %7u  %6.1f ns   %6.1f ns   %5.2fx  %7.1f ns   %7.1f ns\n", (unsigned)rows[i].n,
               rows[i].get, rows[i].bare, rows[i].get / rows[i].bare, rows[i].upd, rows[i].ins);
    printf("  100k entries vs a plain open-addressing LRU (arrays, no allocation):\n");
    printf("    get-hit     %6.1f ns  plain %6.1f ns\n", gh, gh_plain);
    printf("    get-or-put  %6.1f ns  plain %6.1f ns  (200k keys; hit rate %.3f / %.3f)\n", gop,
           gop_plain, gop_hit, gop_plain_hit);
    printf("  Zipf(0.99), 100k keys, 4M requests: hit rate ts_lru / exact LRU simulation\n");
    for (i = 0; i < 3; i++)
        printf("    cache %2d%%  %.4f / %.4f  %s  (%.1f ns/op get-or-put)\n",
               i == 0 ? 1 : i == 1 ? 10 : 30, zo[i], zs[i], zo[i] == zs[i] ? "agree" : "DIFFER",
               zns[i]);
    printf("  invalidate one session (10 entries) in 1M entries: %.2f us;"
           " glob over 1M: %.1f ms\n", inv_s / 1000.0, inv_g / 1e6);
    for (i = 0; i < 3; i++)
        if (zo[i] != zs[i]) return 1;
    return 0;
}
