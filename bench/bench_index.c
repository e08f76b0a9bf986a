/* bench/bench_index.c: the inverted index against SQLite FTS5 (contentless,
 * unicode61) on a real text corpus: the Debian changelogs under
 * /usr/share/doc (each changelog entry is one session), in the same run.
 *
 *   gcc -O2 -march=native -I. bench/bench_index.c -o build/bench_index -lsqlite3 -lm
 *   build/bench_index [max_entries]
 *
 * Reports build speed, bytes on disk, query latency (median/p99 over a fixed
 * query set: 2-term AND, 2-term OR, 3-character prefix) with the result sets
 * compared where the two tokenizers agree, the linear-scan time of the same
 * queries (the "before": tokenizing every session per query), and filter
 * latency (tag, month range, status) on 100k synthetic sessions, and the
 * cost of the store's index_record_text option on the same corpus stored as
 * sessions with records (index build from the chunks, bytes on disk, one
 * append), with the option against without it.
 * Machine-readable lines: BENCH <name> <value> <unit> [peer=... peer_value=... ratio=...];
 * ratio is ours/peer. Fixed seeds; medians of several runs. */
#define _POSIX_C_SOURCE 200809L
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- utilities --------------------------------------------------------------------- */

/* CPU time of this thread: the machine is shared, so wall time would mostly
   measure the neighbours; neither side here uses more than one thread. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 12345;
static uint64_t rnd(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    size_t i;
    if (!n) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static char *xstrdup(const char *s, size_t n)
{
    char *p = (char *)malloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- the corpus ------------------------------------------------------------------- */

typedef struct entry {
    char id[16];
    char *name, *desc, *body; /* body = name "\n" desc, what FTS5 gets */
    size_t name_len, desc_len, body_len;
    int has_start;
    int64_t start;
    char *pkg, *dist, *urgency, *domain;
} entry;

static entry *E;
static size_t NE, CAP;
static size_t TEXT_BYTES;

static int month_of(const char *m)
{
    static const char *const mons[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    int i;
    for (i = 0; i < 12; i++) if (strncmp(m, mons[i], 3) == 0) return i + 1;
    return 0;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* " -- Name <mail>  Mon, 20 Nov 2023 12:34:56 +0100" */
static int parse_trailer(const char *line, int64_t *ms, char **domain)
{
    const char *lt = strchr(line, '<'), *gt = lt ? strchr(lt, '>') : NULL, *at, *p;
    int d, y, hh, mm, ss, mo, tz = 0;
    char mon[4], sign = '+';
    *domain = NULL;
    if (!gt) return 0;
    at = memchr(lt, '@', (size_t)(gt - lt));
    if (at) *domain = xstrdup(at + 1, (size_t)(gt - at - 1));
    p = gt + 1;
    while (*p == ' ') p++;
    if (strchr(p, ',')) p = strchr(p, ',') + 1;
    if (sscanf(p, "%d %3s %d %d:%d:%d %c%4d", &d, mon, &y, &hh, &mm, &ss, &sign, &tz) < 6) return 0;
    mo = month_of(mon);
    if (!mo) return 0;
    *ms = ((days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + hh * 3600 + mm * 60 + ss) -
           (sign == '-' ? -1 : 1) * ((tz / 100) * 3600 + (tz % 100) * 60)) * 1000;
    return 1;
}

static void add_entry(const char *header, const char *body, size_t body_len, const char *trailer)
{
    entry *e;
    const char *sp = strchr(header, ' '), *semi = strchr(header, ';'), *rp = strchr(header, ')');
    const char *urg = strstr(header, "urgency=");
    if (NE == CAP) { CAP = CAP ? CAP * 2 : 1024; E = (entry *)realloc(E, CAP * sizeof *E); }
    e = &E[NE];
    memset(e, 0, sizeof *e);
    snprintf(e->id, sizeof e->id, "deb-%06lu", (unsigned long)(NE % 1000000));
    e->name = xstrdup(header, strlen(header));
    e->name_len = strlen(header);
    e->desc = xstrdup(body, body_len);
    e->desc_len = body_len;
    e->body_len = e->name_len + 1 + e->desc_len;
    e->body = (char *)malloc(e->body_len + 1);
    memcpy(e->body, e->name, e->name_len);
    e->body[e->name_len] = '\n';
    memcpy(e->body + e->name_len + 1, e->desc, e->desc_len + 1);
    e->pkg = xstrdup(header, sp ? (size_t)(sp - header) : strlen(header));
    if (rp && semi && semi > rp) {
        const char *b = rp + 1;
        while (*b == ' ') b++;
        e->dist = xstrdup(b, (size_t)(semi - b));
    }
    if (urg) {
        const char *b = urg + 8, *q = b;
        while (*q && *q != ' ' && *q != ',' && *q != '\n') q++;
        e->urgency = xstrdup(b, (size_t)(q - b));
    }
    e->has_start = parse_trailer(trailer, &e->start, &e->domain);
    TEXT_BYTES += e->name_len + e->desc_len;
    NE++;
}

static void load_corpus(size_t max)
{
    FILE *f = popen("for f in /usr/share/doc/*/changelog.Debian.gz; do zcat \"$f\" 2>/dev/null; done", "r");
    char *line = NULL, *header = NULL, *body = NULL;
    size_t cap = 0, blen = 0, bcap = 0;
    ssize_t n;
    if (!f) { perror("popen"); exit(1); }
    while ((n = getline(&line, &cap, f)) >= 0 && NE < max) {
        if (n && line[n - 1] == '\n') line[--n] = 0;
        if (!header) {
            if (n && line[0] != ' ' && strchr(line, '(') && strchr(line, ';')) {
                header = xstrdup(line, (size_t)n);
                blen = 0;
            }
            continue;
        }
        if (strncmp(line, " -- ", 4) == 0) {
            while (blen && (body[blen - 1] == '\n' || body[blen - 1] == ' ')) blen--;
            if (!body) { bcap = 1; body = (char *)malloc(1); }
            body[blen] = 0;
            add_entry(header, body, blen, line);
            free(header);
            header = NULL;
            continue;
        }
        if (blen + (size_t)n + 2 > bcap) { bcap = (blen + (size_t)n + 2) * 2; body = (char *)realloc(body, bcap); }
        if (blen || n) {
            memcpy(body + blen, line, (size_t)n);
            blen += (size_t)n;
            body[blen++] = '\n';
        }
    }
    pclose(f);
    free(line); free(header); free(body);
}

static ts_index_doc *make_docs(void)
{
    ts_index_doc *d = (ts_index_doc *)calloc(NE, sizeof *d);
    size_t i;
    for (i = 0; i < NE; i++) {
        entry *e = &E[i];
        d[i].id = e->id; d[i].id_len = strlen(e->id);
        d[i].has_start_time = e->has_start; d[i].start_time_ms = e->start;
        d[i].name = e->name; d[i].name_len = e->name_len;
        d[i].description = e->desc; d[i].description_len = e->desc_len;
        d[i].tags = (const char *const *)&e->pkg; d[i].tag_count = 1;
        if (e->domain) { d[i].topics = (const char *const *)&e->domain; d[i].topic_count = 1; }
        if (e->dist) { d[i].category = e->dist; d[i].category_len = strlen(e->dist); }
        if (e->urgency) { d[i].status = e->urgency; d[i].status_len = strlen(e->urgency); }
    }
    return d;
}

/* ---- FTS5 ------------------------------------------------------------------------------ */

static const char *FTS_PATH = "/tmp/bench_index_fts5.db";

static void sql(sqlite3 *db, const char *s)
{
    char *err = NULL;
    if (sqlite3_exec(db, s, NULL, NULL, &err) != SQLITE_OK) { fprintf(stderr, "sqlite: %s: %s\n", s, err); exit(1); }
}

static sqlite3 *fts_build(double *secs, int64_t *bytes)
{
    sqlite3 *db;
    sqlite3_stmt *st, *pc;
    size_t i;
    double t0;
    remove(FTS_PATH);
    if (sqlite3_open(FTS_PATH, &db) != SQLITE_OK) { fprintf(stderr, "cannot open %s\n", FTS_PATH); exit(1); }
    sql(db, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;");
    t0 = now_s();
    sql(db, "CREATE VIRTUAL TABLE f USING fts5(body, content='', tokenize='unicode61')");
    sql(db, "BEGIN");
    sqlite3_prepare_v2(db, "INSERT INTO f(rowid, body) VALUES(?, ?)", -1, &st, NULL);
    for (i = 0; i < NE; i++) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)i + 1);
        sqlite3_bind_text(st, 2, E[i].body, (int)E[i].body_len, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) { fprintf(stderr, "insert failed\n"); exit(1); }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sql(db, "COMMIT");
    *secs = now_s() - t0;
    sqlite3_prepare_v2(db, "SELECT (SELECT page_count FROM pragma_page_count) * (SELECT page_size FROM pragma_page_size)",
                       -1, &pc, NULL);
    sqlite3_step(pc);
    *bytes = sqlite3_column_int64(pc, 0);
    sqlite3_finalize(pc);
    return db;
}

/* ---- queries ---------------------------------------------------------------------------- */

#define NCLASS 3
static const char *const CLASS_NAME[NCLASS] = { "and2", "or2", "prefix3" };

typedef struct bq {
    int cls;
    char ours[64];   /* ts_query.text */
    char fts[96];    /* FTS5 MATCH expression */
    char w1[32], w2[32];
} bq;

typedef struct cand { char w[32]; size_t df; } cand;
static cand *C;
static size_t NC, CCAP;

static int collect_cb(void *user, const char *t, size_t n)
{
    size_t i;
    (void)user;
    if (n < 3 || n > 12) return 0;
    for (i = 0; i < n; i++) if (t[i] < 'a' || t[i] > 'z') return 0;
    for (i = 0; i < NC; i++) if (strlen(C[i].w) == n && memcmp(C[i].w, t, n) == 0) return 0;
    if (NC == CCAP) { CCAP = CCAP ? CCAP * 2 : 256; C = (cand *)realloc(C, CCAP * sizeof *C); }
    memcpy(C[NC].w, t, n);
    C[NC].w[n] = 0;
    NC++;
    return 0;
}

static size_t df_of(ts_index *ix, const char *text)
{
    ts_query q;
    ts_index_hits h;
    size_t t;
    memset(&q, 0, sizeof q);
    q.text = text;
    q.limit = 1;
    ts_index_search(ix, &q, &h);
    t = h.total;
    ts_index_hits_free(&h);
    return t;
}

static size_t make_queries(ts_index *ix, bq *Q, size_t per_class)
{
    size_t i, nq = 0, nf = 0, nm = 0, k;
    cand *freq, *med;
    /* candidate words: ASCII lowercase tokens from a sample of entries */
    for (i = 0; i < NE && NC < 1500; i += 7) ts_tokenize(E[i].body, E[i].body_len, NULL, collect_cb, NULL);
    freq = (cand *)malloc(NC * sizeof *freq);
    med = (cand *)malloc(NC * sizeof *med);
    for (i = 0; i < NC; i++) {
        C[i].df = df_of(ix, C[i].w);
        if (C[i].df * 50 >= NE && C[i].df * 3 <= NE) freq[nf++] = C[i];
        else if (C[i].df * 1000 >= NE && C[i].df * 50 < NE) med[nm++] = C[i];
    }
    if (!nf || !nm) { fprintf(stderr, "not enough query words\n"); exit(1); }
    for (k = 0; k < per_class; k++) {
        const cand *a = &freq[rnd() % nf], *b = (k & 1) ? &med[rnd() % nm] : &freq[rnd() % nf];
        bq *q = &Q[nq++];
        q->cls = 0;
        snprintf(q->ours, sizeof q->ours, "%s %s", a->w, b->w);
        snprintf(q->fts, sizeof q->fts, "%s AND %s", a->w, b->w);
        strcpy(q->w1, a->w); strcpy(q->w2, b->w);
        q = &Q[nq++];
        a = &freq[rnd() % nf]; b = (k & 1) ? &med[rnd() % nm] : &freq[rnd() % nf];
        q->cls = 1;
        snprintf(q->ours, sizeof q->ours, "%s %s", a->w, b->w);
        snprintf(q->fts, sizeof q->fts, "%s OR %s", a->w, b->w);
        strcpy(q->w1, a->w); strcpy(q->w2, b->w);
        q = &Q[nq++];
        a = (k & 1) ? &med[rnd() % nm] : &freq[rnd() % nf];
        q->cls = 2;
        snprintf(q->ours, sizeof q->ours, "%.3s*", a->w);
        snprintf(q->fts, sizeof q->fts, "%.3s*", a->w);
        snprintf(q->w1, sizeof q->w1, "%.3s", a->w);
        q->w2[0] = 0;
    }
    free(freq); free(med);
    return nq;
}

static int64_t *run_ours(ts_index *ix, const bq *q, size_t limit, size_t *n)
{
    ts_query qq;
    ts_index_hits h;
    int64_t *rows;
    size_t i;
    memset(&qq, 0, sizeof qq);
    qq.text = q->ours;
    qq.op = q->cls == 1 ? TS_QUERY_OR : TS_QUERY_AND;
    qq.limit = limit;
    if (ts_index_search(ix, &qq, &h) != TS_OK) { fprintf(stderr, "search failed\n"); exit(1); }
    rows = (int64_t *)malloc((h.count + 1) * sizeof *rows);
    for (i = 0; i < h.count; i++) rows[i] = strtoll(h.ids[i] + 4, NULL, 10) + 1;
    *n = h.count;
    ts_index_hits_free(&h);
    return rows;
}

static int64_t *run_fts(sqlite3 *db, sqlite3_stmt *st, const bq *q, size_t *n)
{
    size_t cap = 1024;
    int64_t *rows = (int64_t *)malloc(cap * sizeof *rows);
    (void)db;
    *n = 0;
    sqlite3_bind_text(st, 1, q->fts, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) { cap *= 2; rows = (int64_t *)realloc(rows, cap * sizeof *rows); }
        rows[(*n)++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    return rows;
}

/* the "before": no index, tokenize every session's text for every query */
typedef struct scan_ctx { const bq *q; int h1, h2; } scan_ctx;
static int scan_cb(void *user, const char *t, size_t n)
{
    scan_ctx *c = (scan_ctx *)user;
    size_t l1 = strlen(c->q->w1), l2 = strlen(c->q->w2);
    if (c->q->cls == 2) { if (n >= l1 && memcmp(t, c->q->w1, l1) == 0) c->h1 = 1; }
    else {
        if (n == l1 && memcmp(t, c->q->w1, n) == 0) c->h1 = 1;
        if (n == l2 && memcmp(t, c->q->w2, n) == 0) c->h2 = 1;
    }
    return 0;
}

static size_t linear_scan(const bq *q)
{
    size_t i, hits = 0;
    for (i = 0; i < NE; i++) {
        scan_ctx c;
        int m;
        c.q = q; c.h1 = c.h2 = 0;
        ts_tokenize(E[i].name, E[i].name_len, NULL, scan_cb, &c);
        ts_tokenize(E[i].desc, E[i].desc_len, NULL, scan_cb, &c);
        m = q->cls == 0 ? c.h1 && c.h2 : q->cls == 1 ? c.h1 || c.h2 : c.h1;
        hits += (size_t)m;
    }
    return hits;
}

/* ---- 100k synthetic sessions for the filter figures -------------------------------------- */

static void filter_bench(size_t n)
{
    static const char *const words[] = { "review", "design", "meeting", "sprint", "planning", "bug", "fix",
        "deploy", "release", "notes", "customer", "call", "refactor", "index", "search", "storage", "audio",
        "video", "screenshot", "summary", "research", "paper", "draft", "email", "budget", "report", "test",
        "build", "pipeline", "docs" };
    static const char *const statuses[] = { "done", "done", "open", "in-progress", "blocked" };
    static const char *const cats[] = { "Work", "Personal", "Study", "Admin", "Health", "Travel", "Code",
                                        "Writing", "Music", "Other" };
    char (*tagnames)[16] = (char (*)[16])malloc(200 * 16);
    ts_index_doc *d = (ts_index_doc *)calloc(n, sizeof *d);
    char **texts = (char **)malloc(n * sizeof *texts);
    char (*ids)[16] = (char (*)[16])malloc(n * 16);
    const char **tagv = (const char **)malloc(n * 3 * sizeof *tagv);
    ts_index *ix;
    size_t i, k;
    double t0, build;
    const int64_t t_begin = 1546300800000ll; /* 2019-01-01 */
    const int64_t span = 5ll * 365 * 86400000ll;
    for (i = 0; i < 200; i++) snprintf(tagnames[i], 16, "tag%03lu", (unsigned long)i);
    for (i = 0; i < n; i++) {
        size_t nw = 10 + rnd() % 25, len = 0, nt = rnd() % 4;
        char *t = (char *)malloc(nw * 12 + 1);
        for (k = 0; k < nw; k++) {
            const char *w = words[rnd() % 30];
            if (k) t[len++] = ' ';
            memcpy(t + len, w, strlen(w)); len += strlen(w);
        }
        t[len] = 0;
        texts[i] = t;
        snprintf(ids[i], 16, "sess-%07lu", (unsigned long)i);
        d[i].id = ids[i]; d[i].id_len = strlen(ids[i]);
        d[i].has_start_time = 1; d[i].start_time_ms = t_begin + (int64_t)(rnd() % (uint64_t)span);
        d[i].name = t; d[i].name_len = len < 40 ? len : 40;
        d[i].description = t; d[i].description_len = len;
        for (k = 0; k < nt; k++) {
            size_t z = rnd() % 200;
            tagv[i * 3 + k] = tagnames[(z * z) / 200]; /* skewed: low tags common */
        }
        d[i].tags = tagv + i * 3; d[i].tag_count = nt;
        d[i].status = statuses[rnd() % 5]; d[i].status_len = strlen(d[i].status);
        d[i].category = cats[rnd() % 10]; d[i].category_len = strlen(d[i].category);
    }
    ts_index_create(NULL, &ix);
    t0 = now_s();
    ts_index_build(ix, d, n, 0);
    build = now_s() - t0;
    printf("\n100k synthetic sessions: built in %.0f ms\n", build * 1000);
    {
        const char *names[3] = { "tag", "month", "status" };
        int kind;
        for (kind = 0; kind < 3; kind++) {
            size_t lims[2] = { 50, 0 }, li;
            for (li = 0; li < 2; li++) {
                double *lat = (double *)malloc(400 * sizeof *lat);
                size_t tot = 0;
                for (k = 0; k < 400; k++) {
                    ts_query q;
                    ts_index_hits h;
                    const char *tg[1];
                    double s;
                    memset(&q, 0, sizeof q);
                    q.limit = lims[li];
                    if (kind == 0) { tg[0] = tagnames[rnd() % 200]; q.tags = tg; q.tag_count = 1; }
                    else if (kind == 1) {
                        int64_t m = (int64_t)(rnd() % 60);
                        q.has_from = q.has_to = 1;
                        q.from_ms = t_begin + m * 2629800000ll;
                        q.to_ms = q.from_ms + 2629800000ll - 1;
                    } else {
                        q.status = statuses[rnd() % 5];
                    }
                    s = now_s();
                    ts_index_search(ix, &q, &h);
                    lat[k] = (now_s() - s) * 1e6;
                    tot += h.total;
                    ts_index_hits_free(&h);
                }
                printf("  %-6s filter, limit %-3lu: median %7.1f us  p99 %7.1f us  (avg %lu matches)\n", names[kind],
                       (unsigned long)lims[li], pct(lat, 400, 0.5), pct(lat, 400, 0.99), (unsigned long)(tot / 400));
                printf("BENCH index_filter_%s%s_p99_us %.1f us\n", names[kind], li ? "_all" : "", pct(lat, 400, 0.99));
                free(lat);
            }
        }
    }
    ts_index_destroy(ix);
    for (i = 0; i < n; i++) free(texts[i]);
    free(texts); free(d); free(ids); free(tagv); free(tagnames);
}

/* ---- main -------------------------------------------------------------------------------- */

/* ---- the cost of index_record_text -----------------------------------------------------
   The same corpus stored as sessions with records, on ts_io_mem (no disk in
   the figure): one session per package, its changelog entries in order;
   name = the newest entry's header, description = its first line; per
   entry one screenshot record (activity = its header) and one audio
   segment (transcription = its text); summary narrative = the newest
   entry's text. With and without the option: the index built from the
   stored sessions (what a store does after an unclean close: without the
   option it indexes the metadata it lists, with it it also reads every
   chunk and document), its bytes on disk, and one appended audio segment
   per session (the write path: chunk, metadata and index update). */

static void json_text(ts__buf *b, const char *s, size_t n)
{
    size_t i = 0;
    ts__buf_putc(b, '"');
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        int k;
        if (c < 0x80) {
            if (c == '"' || c == '\\') { ts__buf_putc(b, '\\'); ts__buf_putc(b, (char)c); }
            else if (c < 0x20) ts__buf_printf(b, "\\u%04x", c);
            else ts__buf_putc(b, (char)c);
            i++;
            continue;
        }
        k = ts__utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (!k) { ts__buf_putc(b, '?'); i++; continue; }   /* latin-1 changelogs */
        ts__buf_append(b, s + i, (size_t)k);
        i += (size_t)k;
    }
    ts__buf_putc(b, '"');
}

static ts_store *rt_store(ts_io *io, int record_text)
{
    ts_store_config c = ts_store_config_default();
    ts_store *s = NULL;
    c.io = io;
    c.now_ms = 1;
    c.index_record_text = record_text;
    c.queue_capacity = 1u << 16;
    c.cache_max_bytes = 1;          /* the rebuild reads what a cold store would */
    if (ts_store_open("mem", &c, &s) != TS_OK) { fprintf(stderr, "store open failed\n"); exit(1); }
    return s;
}

/* Stores the corpus as sessions (fresh ts_io_mem each time); returns their
   number and the text bytes of metadata and records. */
static size_t rt_fill(ts_io_mem **mem, ts_io *io, size_t *meta_bytes, size_t *rec_bytes)
{
    ts_store *s;
    ts__buf b;
    size_t i = 0, nsess = 0;
    int r;
    *meta_bytes = *rec_bytes = 0;
    if (ts_io_mem_create(NULL, mem) != TS_OK) exit(1);
    ts_io_mem_vtable(*mem, io);
    s = rt_store(io, 0);
    ts__buf_init(&b, NULL);
    while (i < NE) {
        size_t j = i, k, first;
        const char *nl = memchr(E[i].desc, '\n', E[i].desc_len);
        while (j < NE && strcmp(E[j].pkg, E[i].pkg) == 0) j++;
        first = nl ? (size_t)(nl - E[i].desc) : E[i].desc_len;
        b.len = 0;
        ts__buf_printf(&b, "{\"id\":\"pkg-%06lu\",\"name\":", (unsigned long)nsess);
        json_text(&b, E[i].name, E[i].name_len);
        ts__buf_puts(&b, ",\"description\":");
        json_text(&b, E[i].desc, first);
        *meta_bytes += E[i].name_len + first;
        if (E[i].has_start) ts__buf_printf(&b, ",\"startTime\":%lld", (long long)E[i].start);
        ts__buf_puts(&b, ",\"screenshots\":[");
        for (k = i; k < j; k++) {
            ts__buf_printf(&b, "%s{\"id\":\"s%lu\",\"activity\":", k > i ? "," : "", (unsigned long)(k - i));
            json_text(&b, E[k].name, E[k].name_len);
            ts__buf_putc(&b, '}');
            *rec_bytes += E[k].name_len;
        }
        ts__buf_puts(&b, "],\"audioSegments\":[");
        for (k = i; k < j; k++) {
            ts__buf_printf(&b, "%s{\"id\":\"a%lu\",\"transcription\":", k > i ? "," : "", (unsigned long)(k - i));
            json_text(&b, E[k].desc, E[k].desc_len);
            ts__buf_putc(&b, '}');
            *rec_bytes += E[k].desc_len;
        }
        ts__buf_puts(&b, "],\"summary\":{\"narrative\":");
        json_text(&b, E[i].desc, E[i].desc_len);
        *rec_bytes += E[i].desc_len;
        ts__buf_puts(&b, "}}");
        if ((r = ts_session_save(s, (const char *)b.data, b.len, NULL)) != TS_OK) {
            fprintf(stderr, "save failed (%d)\n", r);
            exit(1);
        }
        nsess++;
        i = j;
    }
    ts__buf_free(&b);
    ts_store_close(s);
    return nsess;
}

static void record_text_bench(void)
{
    static const char rec[] = "{\"transcription\":\"one more segment about the parser and its tests\"}";
    ts_io_mem *mem;
    ts_io io;
    ts_store *s;
    size_t i, nsess = 0, meta_bytes = 0, rec_bytes = 0, disk[2];
    double build[2][3], app[2], direct[3];
    int opt, r;
    for (opt = 0; opt < 2; opt++) {
        void *buf;
        size_t len;
        uint64_t n = 0;
        double t;
        nsess = rt_fill(&mem, &io, &meta_bytes, &rec_bytes);
        s = rt_store(&io, opt);
        ts_session_count(s, &n);            /* the session list (from the manifest) */
        for (r = 0; r < 3; r++) {
            t = now_s();
            if (ts__index_rebuild(s) != TS_OK) { fprintf(stderr, "rebuild failed\n"); exit(1); }
            build[opt][r] = now_s() - t;
        }
        ts_index_save(s->index, &buf, &len);
        disk[opt] = len;
        ts_index_free_buffer(s->index, buf, len);
        t = now_s();
        for (i = 0; i < nsess; i++) {
            char id[32];
            snprintf(id, sizeof id, "pkg-%06lu", (unsigned long)i);
            if (ts_session_append(s, id, "audioSegments", rec, sizeof rec - 1, NULL) != TS_OK) exit(1);
            if (i % 256 == 255) ts_store_flush(s);
        }
        app[opt] = (now_s() - t) / (double)nsess * 1e6;
        ts_store_close(s);
        ts_io_mem_destroy(mem);
    }
    {
        /* the same text handed to a ts_index directly: what the store adds
           on top of indexing (reading and parsing chunks and documents) */
        ts_index_config ic = ts_index_config_default();
        ts_index_doc *docs = (ts_index_doc *)calloc(nsess, sizeof *docs);
        ts__buf *ex = (ts__buf *)calloc(nsess, sizeof *ex);
        ts_index *ix;
        size_t n = 0, k;
        ic.index_extra_text = 1;
        for (i = 0; i < NE; n++) {
            size_t j = i;
            const char *nl = memchr(E[i].desc, '\n', E[i].desc_len);
            while (j < NE && strcmp(E[j].pkg, E[i].pkg) == 0) j++;
            ts__buf_init(&ex[n], NULL);
            for (k = i; k < j; k++) {
                ts__buf_append(&ex[n], E[k].name, E[k].name_len); ts__buf_putc(&ex[n], '\n');
                ts__buf_append(&ex[n], E[k].desc, E[k].desc_len); ts__buf_putc(&ex[n], '\n');
            }
            ts__buf_append(&ex[n], E[i].desc, E[i].desc_len);
            docs[n].id = E[i].id; docs[n].id_len = strlen(E[i].id);
            docs[n].has_start_time = E[i].has_start; docs[n].start_time_ms = E[i].start;
            docs[n].name = E[i].name; docs[n].name_len = E[i].name_len;
            docs[n].description = E[i].desc; docs[n].description_len = nl ? (size_t)(nl - E[i].desc) : E[i].desc_len;
            docs[n].extra_text = (const char *)ex[n].data; docs[n].extra_text_len = ex[n].len;
            i = j;
        }
        for (r = 0; r < 3; r++) {
            double t;
            ts_index_create(&ic, &ix);
            t = now_s();
            if (ts_index_build(ix, docs, n, 0) != TS_OK) exit(1);
            direct[r] = now_s() - t;
            ts_index_destroy(ix);
        }
        for (k = 0; k < n; k++) ts__buf_free(&ex[k]);
        free(ex);
        free(docs);
    }
    {
        double off = pct(build[0], 3, 0.5), on = pct(build[1], 3, 0.5), dir = pct(direct, 3, 0.5);
        printf("\nindex_record_text on %lu package sessions (%.1f MB of metadata text, %.1f MB of record text)\n",
               (unsigned long)nsess, (double)meta_bytes / 1e6, (double)rec_bytes / 1e6);
        printf("%-34s %14s %14s %8s\n", "", "with", "without", "ratio");
        printf("%-34s %11.0f ms %11.0f ms %8.1f\n", "index built from the store", on * 1000, off * 1000, on / off);
        printf("%-34s %11.0f ms %14s %8s  (store / direct %.2f)\n", "  the same text, ts_index_build", dir * 1000, "",
               "", on / dir);
        printf("%-34s %14lu %14lu %8.2f\n", "index bytes on disk", (unsigned long)disk[1], (unsigned long)disk[0],
               (double)disk[1] / (double)disk[0]);
        printf("%-34s %11.1f us %11.1f us %8.2f\n", "append one record", app[1], app[0], app[1] / app[0]);
        printf("BENCH index_record_text_build_ms %.1f ms peer=metadata_only peer_value=%.1f ratio=%.2f\n", on * 1000,
               off * 1000, on / off);
        printf("BENCH index_record_text_build_mb_s %.1f MB/s peer=ts_index_build_same_text peer_value=%.1f ratio=%.2f\n",
               (double)(meta_bytes + rec_bytes) / 1e6 / on, (double)(meta_bytes + rec_bytes) / 1e6 / dir, dir / on);
        printf("BENCH index_record_text_disk_bytes %lu bytes peer=metadata_only peer_value=%lu ratio=%.2f\n",
               (unsigned long)disk[1], (unsigned long)disk[0], (double)disk[1] / (double)disk[0]);
        printf("BENCH index_record_text_append_us %.1f us peer=metadata_only peer_value=%.1f ratio=%.2f\n", app[1],
               app[0], app[1] / app[0]);
    }
}

int main(int argc, char **argv)
{
    size_t max = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : (size_t)-1, i, r, nq, per_class = 60;
    ts_index_doc *docs;
    ts_index *ix = NULL;
    double ours_build[3], fts_build_s[3], t0, load_ms[3];
    int64_t fts_bytes = 0;
    sqlite3 *db = NULL;
    void *saved;
    size_t saved_len;
    ts_index_stats st;
    bq *Q;
    double *lat[2][NCLASS];
    size_t nlat[2][NCLASS];
    size_t agree[NCLASS], checked[NCLASS];
    const int reps = 5;
    int opt = 0;

    if (sqlite3_compileoption_used("ENABLE_FTS5") != 1) { fprintf(stderr, "this libsqlite3 lacks FTS5\n"); return 1; }
    t0 = now_s();
    load_corpus(max);
    printf("corpus: %lu changelog entries, %.1f MB of text (parsed in %.1f s CPU)\n", (unsigned long)NE,
           (double)TEXT_BYTES / 1e6, now_s() - t0);
    if (NE < 100) { fprintf(stderr, "corpus too small\n"); return 1; }
    docs = make_docs();

    /* build: ours and FTS5, alternating, median of 3 */
    for (r = 0; r < 3; r++) {
        double s;
        if (ix) ts_index_destroy(ix);
        ts_index_create(NULL, &ix);
        s = now_s();
        if (ts_index_build(ix, docs, NE, 0) != TS_OK) { fprintf(stderr, "build failed\n"); return 1; }
        ours_build[r] = now_s() - s;
        if (db) sqlite3_close(db);
        db = fts_build(&fts_build_s[r], &fts_bytes);
    }
    ts_index_save(ix, &saved, &saved_len);
    for (r = 0; r < 3; r++) {
        ts_index *l;
        double s;
        ts_index_create(NULL, &l);
        s = now_s();
        if (ts_index_load(l, saved, saved_len) != TS_OK) { fprintf(stderr, "load failed\n"); return 1; }
        load_ms[r] = (now_s() - s) * 1000;
        ts_index_destroy(l);
    }
    ts_index_stats_get(ix, &st);
    {
        double ob = pct(ours_build, 3, 0.5), fb = pct(fts_build_s, 3, 0.5);
        double omb = (double)TEXT_BYTES / 1e6 / ob, fmb = (double)TEXT_BYTES / 1e6 / fb;
        double ox = (double)saved_len / (double)TEXT_BYTES, fx = (double)fts_bytes / (double)TEXT_BYTES;
        printf("\n%-28s %14s %14s %8s\n", "", "taskstore", "FTS5", "ratio");
        printf("%-28s %11.0f ms %11.0f ms %8.2f\n", "build", ob * 1000, fb * 1000, ob / fb);
        printf("%-28s %9.1f MB/s %9.1f MB/s %8.2f\n", "build throughput", omb, fmb, omb / fmb);
        printf("%-28s %14lu %14lld %8.2f\n", "bytes on disk", (unsigned long)saved_len, (long long)fts_bytes,
               (double)saved_len / (double)fts_bytes);
        printf("%-28s %13.3fx %13.3fx\n", "  / text size", ox, fx);
        printf("%-28s %14lu\n", "bytes in memory", (unsigned long)st.memory_bytes);
        printf("%-28s %11.1f ms\n", "load from bytes", pct(load_ms, 3, 0.5));
        printf("%-28s %14lu (text %lu), postings %lu\n", "terms", (unsigned long)st.terms,
               (unsigned long)st.text_terms, (unsigned long)st.postings);
        printf("BENCH index_build_mb_s %.1f MB/s peer=fts5 peer_value=%.1f ratio=%.2f\n", omb, fmb, omb / fmb);
        printf("BENCH index_disk_bytes %lu bytes peer=fts5 peer_value=%lld ratio=%.3f\n", (unsigned long)saved_len,
               (long long)fts_bytes, (double)saved_len / (double)fts_bytes);
        printf("BENCH index_disk_per_text %.3f x peer=fts5 peer_value=%.3f ratio=%.3f\n", ox, fx, ox / fx);
        printf("BENCH index_memory_bytes %lu bytes\n", (unsigned long)st.memory_bytes);
        printf("BENCH index_load_ms %.1f ms\n", pct(load_ms, 3, 0.5));
    }

    /* queries */
    Q = (bq *)calloc(per_class * NCLASS, sizeof *Q);
    nq = make_queries(ix, Q, per_class);
    for (i = 0; i < NCLASS; i++) {
        lat[0][i] = (double *)malloc(nq * reps * sizeof(double));
        lat[1][i] = (double *)malloc(nq * reps * sizeof(double));
        nlat[0][i] = nlat[1][i] = 0;
        agree[i] = checked[i] = 0;
    }
    {
        sqlite3_stmt *st5;
        sqlite3_prepare_v2(db, "SELECT rowid FROM f WHERE f MATCH ?", -1, &st5, NULL);
        for (r = 0; r < (size_t)reps; r++) {
            for (i = 0; i < nq; i++) {
                size_t n1, n2;
                int64_t *a, *b;
                double s;
                s = now_s();
                a = run_ours(ix, &Q[i], 0, &n1);
                lat[0][Q[i].cls][nlat[0][Q[i].cls]++] = (now_s() - s) * 1e6;
                s = now_s();
                b = run_fts(db, st5, &Q[i], &n2);
                lat[1][Q[i].cls][nlat[1][Q[i].cls]++] = (now_s() - s) * 1e6;
                if (r == 0) {
                    checked[Q[i].cls]++;
                    qsort(a, n1, sizeof *a, cmp_i64);
                    qsort(b, n2, sizeof *b, cmp_i64);
                    if (n1 == n2 && memcmp(a, b, n1 * sizeof *a) == 0) agree[Q[i].cls]++;
                    else if (getenv("BENCH_VERBOSE"))
                        printf("  differs: %-24s ours %lu fts5 %lu\n", Q[i].ours, (unsigned long)n1, (unsigned long)n2);
                }
                free(a); free(b);
            }
        }
        sqlite3_finalize(st5);
    }
    printf("\nqueries (%d reps of %lu per class; ours returns every id ordered by startTime, FTS5 every rowid)\n",
           reps, (unsigned long)per_class);
    printf("%-10s %12s %12s %12s %12s %8s %14s\n", "class", "ours p50 us", "ours p99 us", "fts5 p50 us",
           "fts5 p99 us", "p99 x", "same results");
    for (i = 0; i < NCLASS; i++) {
        double o50 = pct(lat[0][i], nlat[0][i], 0.5), o99 = pct(lat[0][i], nlat[0][i], 0.99);
        double f50 = pct(lat[1][i], nlat[1][i], 0.5), f99 = pct(lat[1][i], nlat[1][i], 0.99);
        printf("%-10s %12.1f %12.1f %12.1f %12.1f %8.2f %9lu / %lu\n", CLASS_NAME[i], o50, o99, f50, f99, o99 / f99,
               (unsigned long)agree[i], (unsigned long)checked[i]);
        printf("BENCH index_query_%s_p50_us %.1f us peer=fts5 peer_value=%.1f ratio=%.3f\n", CLASS_NAME[i], o50, f50,
               o50 / f50);
        printf("BENCH index_query_%s_p99_us %.1f us peer=fts5 peer_value=%.1f ratio=%.3f\n", CLASS_NAME[i], o99, f99,
               o99 / f99);
        printf("BENCH index_query_%s_same_results %lu of %lu\n", CLASS_NAME[i], (unsigned long)agree[i],
               (unsigned long)checked[i]);
    }
    /* a UI-sized page: first 20 in order */
    for (i = 0; i < NCLASS; i++) nlat[0][i] = 0;
    for (r = 0; r < (size_t)reps; r++)
        for (i = 0; i < nq; i++) {
            size_t n1;
            double s = now_s();
            int64_t *a = run_ours(ix, &Q[i], 20, &n1);
            lat[0][Q[i].cls][nlat[0][Q[i].cls]++] = (now_s() - s) * 1e6;
            free(a);
        }
    for (i = 0; i < NCLASS; i++)
        printf("%-10s limit 20: p50 %.1f us, p99 %.1f us\n", CLASS_NAME[i], pct(lat[0][i], nlat[0][i], 0.5),
               pct(lat[0][i], nlat[0][i], 0.99));
    /* the before: a linear scan (2 queries per class) */
    {
        double tot = 0;
        size_t cnt = 0;
        for (i = 0; i < nq && cnt < 6; i++) {
            double s;
            if (i % 3 != (size_t)opt) continue;
            s = now_s();
            linear_scan(&Q[i]);
            tot += now_s() - s;
            cnt++;
            opt = (opt + 1) % 3;
        }
        printf("\nlinear scan (tokenize every session per query, the \"before\"): %.1f ms per query\n",
               tot / (double)cnt * 1000);
        printf("BENCH index_linear_scan_ms %.1f ms\n", tot / (double)cnt * 1000);
    }
    for (i = 0; i < NCLASS; i++) { free(lat[0][i]); free(lat[1][i]); }
    free(Q);
    sqlite3_close(db);
    remove(FTS_PATH);
    ts_index_free_buffer(ix, saved, saved_len);
    ts_index_destroy(ix);
    free(docs);

    filter_bench(100000);
    record_text_bench();

    for (i = 0; i < NE; i++) {
        free(E[i].name); free(E[i].desc); free(E[i].body); free(E[i].pkg); free(E[i].dist);
        free(E[i].urgency); free(E[i].domain);
    }
    free(E);
    free(C);
    return 0;
}
