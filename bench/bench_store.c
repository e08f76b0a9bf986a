/* bench_store: the store facade against SQLite and the naive monolithic
 * format, on the real file system (POSIX vtable, fsync included), in one run.
 *
 * 1. Appends of screenshot records with a 100 KB image each, flushed once per
 *    second of wall time (and at the end):
 *      taskstore   ts_session_append_screenshot + ts_store_tick per append,
 *                  ts_store_flush at each durability point;
 *      sqlite      one table for metadata, one for records (image as a
 *                  BLOB), WAL, synchronous=NORMAL; one transaction per
 *                  durability point, committed and then checkpointed
 *                  (WAL+NORMAL syncs at checkpoint: same durability point);
 *      monolithic  the legacy way: write the image file and rewrite the whole
 *                  session JSON (atomic replace with fsync) per append.
 * 2. Load all session metadata for 10,000 sessions: cold (a freshly opened
 *    store / connection) and warm (the same handle again). taskstore cold
 *    is also given without its manifest (every metadata.json read).
 * 3. Load one 600-screenshot session whole (legacy JSON shape), cold and warm.
 *
 * TS_BENCH_SYNC_ALL=1 opens every store with sync_all (commit by file system);
 * TS_BENCH_APPEND_ONLY=modes: appends only, both commit modes and SQLite in
 * each round.
 * Fixed seeds; median of RUNS runs (TS_BENCH_RUNS, default 3). Output:
 *   BENCH <name> <value> <unit> [peer=<name> peer_value=<v> ratio=<r>]
 * then a table. ratio = ours / peer for rates, peer / ours for times, so
 * higher is better for us in both. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#define N_APPENDS 600
#define IMG_BYTES (100 * 1024)
#define N_SESSIONS 10000
#define BIG_SESSION_SHOTS 600

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double median(double *v, int n)
{
    int i, j;
    for (i = 1; i < n; i++)
        for (j = i; j > 0 && v[j - 1] > v[j]; j--) { double t = v[j]; v[j] = v[j - 1]; v[j - 1] = t; }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void die(const char *what, int r)
{
    fprintf(stderr, "bench_store: %s failed (%d)\n", what, r);
    exit(1);
}

static char base_dir[512];

static void rm_rf(const char *path)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "bench_store: cannot remove %s\n", path);
}

static void mk_dir(const char *path)
{
    mkdir(path, 0777);
}

static int sync_all; /* TS_BENCH_SYNC_ALL=1: ts_store_config.sync_all */

static ts_store *open_store(const char *dir)
{
    ts_store *s = NULL;
    ts_store_config c = ts_store_config_default();
    ts_result r;
    c.now_ms = 1;
    c.sync_all = sync_all;
    r = ts_store_open(dir, &c, &s);
    if (r) die("ts_store_open", r);
    return s;
}

static unsigned char *make_images(int n)
{
    unsigned char *img = (unsigned char *)malloc((size_t)n * IMG_BYTES);
    size_t i;
    if (!img) die("malloc", 0);
    for (i = 0; i < (size_t)n * IMG_BYTES / 8; i++) {
        uint64_t x = rng();
        memcpy(img + i * 8, &x, 8);
    }
    return img;
}

/* ---- 1. appends ----------------------------------------------------------- */

static double bench_append_ts(const unsigned char *imgs)
{
    char dir[600], rec[256];
    ts_store *s;
    double t0, last;
    int i;
    snprintf(dir, sizeof dir, "%s/ts_append", base_dir);
    rm_rf(dir);
    mk_dir(dir);
    s = open_store(dir);
    {
        const char *js = "{\"id\":\"rec\",\"name\":\"recording\",\"startTime\":1700000000000}";
        ts_result r = ts_session_save(s, js, strlen(js), NULL);
        if (r) die("save", r);
    }
    if (ts_store_flush(s)) die("flush", 0);
    t0 = last = now_s();
    for (i = 0; i < N_APPENDS; i++) {
        double t;
        ts_result r;
        snprintf(rec, sizeof rec, "{\"id\":\"shot-%d\",\"timestamp\":%d,\"activity\":\"editing main.c line %d\"}",
                 i, 1700000000 + i, i);
        r = ts_session_append_screenshot(s, "rec", rec, strlen(rec), imgs + (size_t)i * IMG_BYTES,
                                         IMG_BYTES, "image/png", NULL, NULL);
        if (r) die("append_screenshot", r);
        t = now_s();
        ts_store_tick(s, (uint64_t)((t - t0) * 1000) + 2, 2000);
        if (t - last >= 1.0) {
            if ((r = ts_store_flush(s)) != TS_OK) die("flush", r);
            last = now_s();
        }
    }
    if (ts_store_flush(s)) die("flush", 0);
    t0 = now_s() - t0;
    {
        ts_store_stats st;
        if (ts_store_stats_get(s, &st) == TS_OK && getenv("TS_BENCH_VERBOSE"))
            fprintf(stderr, "taskstore appends: %llu file syncs, %llu dir syncs, %llu fs syncs, %llu writes, %llu mkdirs for %d appends\n",
                    (unsigned long long)st.io.file_syncs, (unsigned long long)st.io.dir_syncs,
                    (unsigned long long)st.io.fs_syncs, (unsigned long long)st.io.writes,
                    (unsigned long long)st.io.mkdirs, N_APPENDS);
    }
    ts_store_close(s);
    rm_rf(dir);
    return N_APPENDS / t0;
}

static void sq_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

static sqlite3 *sq_open(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) die("sqlite3_open", 0);
    sq_exec(db, "PRAGMA journal_mode=WAL");
    sq_exec(db, "PRAGMA synchronous=NORMAL");
    sq_exec(db, "CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, start INTEGER, meta TEXT)");
    sq_exec(db, "CREATE TABLE IF NOT EXISTS records(session TEXT, stream TEXT, seq INTEGER, json TEXT,"
                " image BLOB, PRIMARY KEY(session, stream, seq))");
    return db;
}

static double bench_append_sqlite(const unsigned char *imgs)
{
    char path[600], rec[256];
    sqlite3 *db;
    sqlite3_stmt *ins, *upd;
    double t0, last;
    int i;
    snprintf(path, sizeof path, "%s/append.db", base_dir);
    unlink(path);
    db = sq_open(path);
    sq_exec(db, "INSERT INTO sessions VALUES('rec', 1700000000000, '{\"id\":\"rec\",\"name\":\"recording\"}')");
    sqlite3_prepare_v2(db, "INSERT INTO records VALUES('rec','screenshots',?,?,?)", -1, &ins, NULL);
    sqlite3_prepare_v2(db, "UPDATE sessions SET meta=? WHERE id='rec'", -1, &upd, NULL);
    t0 = last = now_s();
    sq_exec(db, "BEGIN");
    for (i = 0; i < N_APPENDS; i++) {
        char meta[128];
        snprintf(rec, sizeof rec, "{\"id\":\"shot-%d\",\"timestamp\":%d,\"activity\":\"editing main.c line %d\"}",
                 i, 1700000000 + i, i);
        sqlite3_bind_int(ins, 1, i);
        sqlite3_bind_text(ins, 2, rec, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(ins, 3, imgs + (size_t)i * IMG_BYTES, IMG_BYTES, SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE) die("sqlite insert", 0);
        sqlite3_reset(ins);
        /* the metadata's count, as the store keeps it */
        snprintf(meta, sizeof meta, "{\"id\":\"rec\",\"name\":\"recording\",\"screenshots\":%d}", i + 1);
        sqlite3_bind_text(upd, 1, meta, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(upd) != SQLITE_DONE) die("sqlite update", 0);
        sqlite3_reset(upd);
        if (now_s() - last >= 1.0) {
            sq_exec(db, "COMMIT");
            sq_exec(db, "PRAGMA wal_checkpoint(PASSIVE)");
            sq_exec(db, "BEGIN");
            last = now_s();
        }
    }
    sq_exec(db, "COMMIT");
    sq_exec(db, "PRAGMA wal_checkpoint(PASSIVE)");
    t0 = now_s() - t0;
    sqlite3_finalize(ins);
    sqlite3_finalize(upd);
    sqlite3_close(db);
    unlink(path);
    {
        char wal[640];
        snprintf(wal, sizeof wal, "%s-wal", path); unlink(wal);
        snprintf(wal, sizeof wal, "%s-shm", path); unlink(wal);
    }
    return N_APPENDS / t0;
}

/* The legacy way: the whole session JSON rewritten (durably) per append. */
static double bench_append_monolithic(const unsigned char *imgs)
{
    char dir[600], rec[256], path[128];
    ts_io_posix *px = NULL;
    ts_io io;
    char *json;
    size_t len, cap = (size_t)N_APPENDS * 300 + 1024;
    double t0;
    int i;
    snprintf(dir, sizeof dir, "%s/mono", base_dir);
    rm_rf(dir);
    mk_dir(dir);
    if (ts_io_posix_create(dir, NULL, &px)) die("posix", 0);
    ts_io_posix_vtable(px, &io);
    json = (char *)malloc(cap);
    len = (size_t)snprintf(json, cap, "{\"id\":\"rec\",\"name\":\"recording\",\"screenshots\":[");
    t0 = now_s();
    for (i = 0; i < N_APPENDS; i++) {
        ts_result r;
        int n = snprintf(rec, sizeof rec, "%s{\"id\":\"shot-%d\",\"timestamp\":%d,\"activity\":\"editing main.c line %d\",\"attachmentId\":\"a%d\"}",
                         i ? "," : "", i, 1700000000 + i, i, i);
        memcpy(json + len, rec, (size_t)n);
        len += (size_t)n;
        snprintf(path, sizeof path, "attachments/a%d.bin", i);
        r = io.write_file_atomic_fn(io.user, path, imgs + (size_t)i * IMG_BYTES, IMG_BYTES, 0);
        if (r) die("mono image", r);
        memcpy(json + len, "]}", 2);
        r = io.write_file_atomic_fn(io.user, "sessions/rec.json", json, len + 2, 0);
        if (r) die("mono session", r);
    }
    t0 = now_s() - t0;
    free(json);
    ts_io_posix_destroy(px);
    rm_rf(dir);
    return N_APPENDS / t0;
}

/* ---- 2. load all metadata of 10,000 sessions ---------------------------------- */

static void meta_json(char *out, size_t cap, int i)
{
    snprintf(out, cap,
             "{\"id\":\"session-%05d\",\"name\":\"Session %d: refactoring the parser\",\"description\":"
             "\"Worked on module %d, fixed %d bugs\",\"status\":\"%s\",\"startTime\":%lld,\"endTime\":%lld,"
             "\"tags\":[\"work\",\"t%d\"],\"category\":\"Development\",\"subCategory\":\"Coding\"}",
             i, i, i % 97, i % 7, i % 3 ? "completed" : "active", 1700000000000LL + (long long)i * 3600000,
             1700000000000LL + (long long)i * 3600000 + 1800000, i % 50);
}

static void build_many(const char *dir, const char *dbpath)
{
    ts_store *s;
    sqlite3 *db;
    sqlite3_stmt *ins;
    char js[1024];
    int i;
    rm_rf(dir);
    mk_dir(dir);
    s = open_store(dir);
    for (i = 0; i < N_SESSIONS; i++) {
        meta_json(js, sizeof js, i);
        if (ts_session_save(s, js, strlen(js), NULL)) die("save many", 0);
        if (i % 500 == 499 && ts_store_flush(s)) die("flush many", 0);
    }
    if (ts_store_close(s)) die("close many", 0);
    unlink(dbpath);
    db = sq_open(dbpath);
    sq_exec(db, "BEGIN");
    sqlite3_prepare_v2(db, "INSERT INTO sessions VALUES(?,?,?)", -1, &ins, NULL);
    for (i = 0; i < N_SESSIONS; i++) {
        char id[32];
        meta_json(js, sizeof js, i);
        snprintf(id, sizeof id, "session-%05d", i);
        sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 2, 1700000000000LL + (long long)i * 3600000);
        sqlite3_bind_text(ins, 3, js, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(ins) != SQLITE_DONE) die("sqlite insert many", 0);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    sq_exec(db, "COMMIT");
    sq_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(db);
}

/* The whole list as one JSON array, newest first, like ts_session_list. */
static size_t sqlite_list(sqlite3 *db)
{
    sqlite3_stmt *st;
    size_t total = 2, cap = 1 << 20, len = 1;
    char *out = (char *)malloc(cap);
    out[0] = '[';
    sqlite3_prepare_v2(db, "SELECT meta FROM sessions ORDER BY start DESC, id", -1, &st, NULL);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        if (len + n + 4 > cap) { cap *= 2; out = (char *)realloc(out, cap); }
        if (len > 1) out[len++] = ',';
        memcpy(out + len, t, n);
        len += n;
    }
    sqlite3_finalize(st);
    out[len++] = ']';
    total = len;
    free(out);
    return total;
}

static size_t ts_list_len(ts_store *s)
{
    ts_blob b;
    size_t n;
    ts_result r = ts_session_list(s, &b);
    if (r) die("ts_session_list", r);
    n = b.len;
    ts_blob_free(&b);
    return n;
}

/* ---- 3. one 600-screenshot session --------------------------------------------- */

static void build_big(const char *dir, const char *dbpath)
{
    ts_store *s;
    sqlite3 *db;
    sqlite3_stmt *ins;
    char *js, rec[512];
    size_t len, cap = (size_t)BIG_SESSION_SHOTS * 600 + 4096;
    int i;
    js = (char *)malloc(cap);
    len = (size_t)snprintf(js, cap, "{\"id\":\"big\",\"name\":\"Long day\",\"startTime\":1700000000000,\"screenshots\":[");
    for (i = 0; i < BIG_SESSION_SHOTS; i++) {
        int n = snprintf(rec, sizeof rec,
                         "%s{\"id\":\"shot-%d\",\"timestamp\":%d,\"activity\":\"editing main.c line %d in the big refactor\","
                         "\"attachmentHash\":\"%064d\",\"window\":{\"title\":\"taskstore.h - editor\",\"app\":\"code\"}}",
                         i ? "," : "", i, 1700000000 + i, i, i);
        memcpy(js + len, rec, (size_t)n);
        len += (size_t)n;
    }
    len += (size_t)snprintf(js + len, cap - len, "],\"summary\":{\"narrative\":\"a long day of work\"}}");
    rm_rf(dir);
    mk_dir(dir);
    s = open_store(dir);
    if (ts_session_save(s, js, len, NULL)) die("save big", 0);
    if (ts_store_close(s)) die("close big", 0);
    unlink(dbpath);
    db = sq_open(dbpath);
    sq_exec(db, "BEGIN");
    sq_exec(db, "INSERT INTO sessions VALUES('big',1700000000000,'{\"id\":\"big\",\"name\":\"Long day\"}')");
    sqlite3_prepare_v2(db, "INSERT INTO records VALUES('big','screenshots',?,?,NULL)", -1, &ins, NULL);
    for (i = 0; i < BIG_SESSION_SHOTS; i++) {
        snprintf(rec, sizeof rec,
                 "{\"id\":\"shot-%d\",\"timestamp\":%d,\"activity\":\"editing main.c line %d in the big refactor\","
                 "\"attachmentHash\":\"%064d\",\"window\":{\"title\":\"taskstore.h - editor\",\"app\":\"code\"}}",
                 i, 1700000000 + i, i, i);
        sqlite3_bind_int(ins, 1, i);
        sqlite3_bind_text(ins, 2, rec, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(ins) != SQLITE_DONE) die("sqlite insert big", 0);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    sq_exec(db, "COMMIT");
    sq_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(db);
    free(js);
}

static size_t sqlite_load_big(sqlite3 *db)
{
    sqlite3_stmt *st;
    size_t cap = 1 << 20, len = 0;
    char *out = (char *)malloc(cap);
    sqlite3_prepare_v2(db, "SELECT meta FROM sessions WHERE id='big'", -1, &st, NULL);
    if (sqlite3_step(st) == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        memcpy(out, sqlite3_column_text(st, 0), n);
        len = n - 1;
    }
    sqlite3_finalize(st);
    len += (size_t)sprintf(out + len, ",\"screenshots\":[");
    sqlite3_prepare_v2(db, "SELECT json FROM records WHERE session='big' AND stream='screenshots' ORDER BY seq",
                       -1, &st, NULL);
    while (sqlite3_step(st) == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        if (len + n + 8 > cap) { cap *= 2; out = (char *)realloc(out, cap); }
        memcpy(out + len, sqlite3_column_text(st, 0), n);
        len += n;
        out[len++] = ',';
    }
    sqlite3_finalize(st);
    out[len - 1] = ']';
    out[len++] = '}';
    free(out);
    return len;
}

static size_t ts_load_big(ts_store *s)
{
    ts_blob b;
    size_t n;
    ts_result r = ts_session_load(s, "big", &b);
    if (r) die("ts_session_load", r);
    n = b.len;
    ts_blob_free(&b);
    return n;
}

/* ---- main ------------------------------------------------------------------------ */

#define MAXRUNS 9

static void report(const char *name, double ours, const char *unit, const char *peer, double pv,
                   int higher_better)
{
    double ratio = higher_better ? ours / pv : pv / ours;
    printf("BENCH %s %.6g %s peer=%s peer_value=%.6g ratio=%.3g\n", name, ours, unit, peer, pv, ratio);
}

int main(void)
{
    int runs = 3, k;
    const char *e = getenv("TS_BENCH_RUNS");
    double a_ts[MAXRUNS], a_sq[MAXRUNS], a_mono[MAXRUNS];
    double l_cold[MAXRUNS], l_warm[MAXRUNS], l_scan[MAXRUNS], l_sq_cold[MAXRUNS], l_sq_warm[MAXRUNS];
    double b_cold[MAXRUNS], b_warm[MAXRUNS], b_sq_cold[MAXRUNS], b_sq_warm[MAXRUNS];
    unsigned char *imgs;
    char many_dir[600], many_db[600], big_dir[600], big_db[600];
    if (e && atoi(e) > 0) runs = atoi(e) > MAXRUNS ? MAXRUNS : atoi(e);
    sync_all = getenv("TS_BENCH_SYNC_ALL") && atoi(getenv("TS_BENCH_SYNC_ALL")) > 0;
    snprintf(base_dir, sizeof base_dir, "%s/bench_store.%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    mk_dir(base_dir);
    snprintf(many_dir, sizeof many_dir, "%s/many", base_dir);
    snprintf(many_db, sizeof many_db, "%s/many.db", base_dir);
    snprintf(big_dir, sizeof big_dir, "%s/big", base_dir);
    snprintf(big_db, sizeof big_db, "%s/big.db", base_dir);

    imgs = make_images(N_APPENDS);
    if (getenv("TS_BENCH_APPEND_ONLY")) {
        /* TS_BENCH_APPEND_ONLY=peers: the append part with its peers, RUNS
           rounds (the disk's fsync time drifts a lot on a shared machine:
           only same-run ratios mean anything) */
        if (strcmp(getenv("TS_BENCH_APPEND_ONLY"), "modes") == 0) {
            /* both commit modes, alternating in each round, with SQLite */
            double a_all[MAXRUNS];
            for (k = 0; k < runs; k++) {
                sync_all = 0;
                a_ts[k] = bench_append_ts(imgs);
                sync_all = 1;
                a_all[k] = bench_append_ts(imgs);
                sync_all = 0;
                a_sq[k] = bench_append_sqlite(imgs);
                fprintf(stderr, "round %d: taskstore %.1f, with sync_all %.1f, sqlite %.1f appends/s\n", k + 1,
                        a_ts[k], a_all[k], a_sq[k]);
                a_all[k] /= a_ts[k]; /* same-round ratio */
            }
            rm_rf(base_dir);
            report("store_append_screenshot_100k", median(a_ts, runs), "appends/s", "sqlite_wal_normal",
                   median(a_sq, runs), 1);
            printf("BENCH store_append_sync_all_vs_default %.3f ratio (median of same-round ratios)\n",
                   median(a_all, runs));
            return 0;
        }
        if (strcmp(getenv("TS_BENCH_APPEND_ONLY"), "peers") == 0) {
            for (k = 0; k < runs; k++) {
                a_ts[k] = bench_append_ts(imgs);
                a_sq[k] = bench_append_sqlite(imgs);
                a_mono[k] = bench_append_monolithic(imgs);
                fprintf(stderr, "round %d: taskstore %.1f, sqlite %.1f, monolithic %.1f appends/s\n", k + 1,
                        a_ts[k], a_sq[k], a_mono[k]);
            }
            rm_rf(base_dir);
            report("store_append_screenshot_100k", median(a_ts, runs), "appends/s", "sqlite_wal_normal",
                   median(a_sq, runs), 1);
            report("store_append_vs_monolithic", median(a_ts, runs), "appends/s", "monolithic_rewrite",
                   median(a_mono, runs), 1);
            return 0;
        }
        printf("%.1f appends/s\n", bench_append_ts(imgs));
        return 0;
    }
    for (k = 0; k < runs; k++) {
        a_ts[k] = bench_append_ts(imgs);
        a_sq[k] = bench_append_sqlite(imgs);
        a_mono[k] = bench_append_monolithic(imgs);
    }
    free(imgs);

    build_many(many_dir, many_db);
    for (k = 0; k < runs; k++) {
        ts_store *s;
        sqlite3 *db;
        double t;
        char p[700];
        t = now_s();
        s = open_store(many_dir);
        ts_list_len(s);
        l_cold[k] = (now_s() - t) * 1000;
        t = now_s();
        ts_list_len(s);
        l_warm[k] = (now_s() - t) * 1000;
        ts_store_close(s);
        /* without the manifest: every metadata.json is read */
        snprintf(p, sizeof p, "%s/session-manifest", many_dir);
        unlink(p);
        t = now_s();
        s = open_store(many_dir);
        ts_list_len(s);
        l_scan[k] = (now_s() - t) * 1000;
        ts_store_close(s); /* rewrites the manifest */
        t = now_s();
        if (sqlite3_open(many_db, &db) != SQLITE_OK) die("sqlite open", 0);
        sqlite_list(db);
        l_sq_cold[k] = (now_s() - t) * 1000;
        t = now_s();
        sqlite_list(db);
        l_sq_warm[k] = (now_s() - t) * 1000;
        sqlite3_close(db);
    }

    build_big(big_dir, big_db);
    for (k = 0; k < runs; k++) {
        ts_store *s;
        sqlite3 *db;
        double t;
        t = now_s();
        s = open_store(big_dir);
        ts_load_big(s);
        b_cold[k] = (now_s() - t) * 1000;
        t = now_s();
        ts_load_big(s);
        b_warm[k] = (now_s() - t) * 1000;
        ts_store_close(s);
        t = now_s();
        if (sqlite3_open(big_db, &db) != SQLITE_OK) die("sqlite open", 0);
        sqlite_load_big(db);
        b_sq_cold[k] = (now_s() - t) * 1000;
        t = now_s();
        sqlite_load_big(db);
        b_sq_warm[k] = (now_s() - t) * 1000;
        sqlite3_close(db);
    }
    rm_rf(base_dir);

    report("store_append_screenshot_100k", median(a_ts, runs), "appends/s", "sqlite_wal_normal",
           median(a_sq, runs), 1);
    report("store_append_vs_monolithic", median(a_ts, runs), "appends/s", "monolithic_rewrite",
           median(a_mono, runs), 1);
    report("store_list_10k_cold", median(l_cold, runs), "ms", "sqlite", median(l_sq_cold, runs), 0);
    report("store_list_10k_warm", median(l_warm, runs), "ms", "sqlite", median(l_sq_warm, runs), 0);
    report("store_list_10k_cold_no_manifest", median(l_scan, runs), "ms", "sqlite",
           median(l_sq_cold, runs), 0);
    report("store_load_600_shots_cold", median(b_cold, runs), "ms", "sqlite", median(b_sq_cold, runs), 0);
    report("store_load_600_shots_warm", median(b_warm, runs), "ms", "sqlite", median(b_sq_warm, runs), 0);

    printf("\n%-44s %14s %14s %14s\n", "bench_store (median of runs)", "taskstore", "sqlite", "monolithic");
    printf("%-44s %14.1f %14.1f %14.1f\n", "appends/s, 100 KB screenshots, flush 1/s", median(a_ts, runs),
           median(a_sq, runs), median(a_mono, runs));
    printf("%-44s %14.2f %14.2f\n", "list 10k sessions cold (ms)", median(l_cold, runs), median(l_sq_cold, runs));
    printf("%-44s %14.2f %14.2f\n", "list 10k sessions warm (ms)", median(l_warm, runs), median(l_sq_warm, runs));
    printf("%-44s %14.2f\n", "list 10k cold without manifest (ms)", median(l_scan, runs));
    printf("%-44s %14.2f %14.2f\n", "load 600-screenshot session cold (ms)", median(b_cold, runs), median(b_sq_cold, runs));
    printf("%-44s %14.2f %14.2f\n", "load 600-screenshot session warm (ms)", median(b_warm, runs), median(b_sq_warm, runs));
    return 0;
}
