/* bench_cas: the content-addressable attachment store on the POSIX vtable.

   - save-new / save-duplicate / load of 100 KB attachments (MB/s, objects/s),
     each save carrying a reference (session + attachment id), against the
     same workload as SQLite blobs: INSERT OR IGNORE keyed by the SHA-256
     plus a reference row, one transaction per save, WAL,
     synchronous=NORMAL (the peer). SQLite in WAL+NORMAL does not fsync at
     commit; the CA store makes every save durable before it returns (2 file
     + 2 directory syncs new, 1 + 1 duplicate), so an extra line compares
     with synchronous=FULL too.
   - GC time per 10,000 objects: a cycle that frees none (all within the
     grace period) and one that frees half (the other half marked).

   Prints "BENCH name value unit [peer=.. peer_value=.. ratio=..]" lines
   (ratio = ours / peer, higher is better unless the unit is a time) and a
   table. Median of several runs, fixed seeds. Scratch files go in a
   temporary directory under the current one and are removed. */
#define _POSIX_C_SOURCE 200809L
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"

#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define N_ATT 50
#define ATT_SIZE (100 * 1024)
#define RUNS 3
#define GC_OBJECTS 10000
#define GC_RUNS 3
#define HOUR 3600000ull

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        if (d) {
            while ((de = readdir(d)) != NULL) {
                char sub[4096];
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
                rm_rf(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, int r)
{
    fprintf(stderr, "bench_cas: %s failed (%d)\n", what, r);
    exit(1);
}

static unsigned char *g_data[N_ATT];
static ts_io_counters g_gc_c0, g_gc_c1;
static char g_hash[N_ATT][65];
static char g_base[256];

static void make_data(void)
{
    int i;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (i = 0; i < N_ATT; i++) {
        size_t j;
        unsigned char d[32];
        g_data[i] = (unsigned char *)malloc(ATT_SIZE);
        if (!g_data[i]) die("malloc", 0);
        for (j = 0; j < ATT_SIZE; j++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            g_data[i][j] = (unsigned char)(x >> 24);
        }
        ts_sha256_buffer(g_data[i], ATT_SIZE, d);
        ts_sha256_hex(d, g_hash[i]);
    }
}

typedef struct times { double save_new, save_dup, load; } times;

/* ---- ours ----------------------------------------------------------------- */

static ts_cas *open_posix(const char *root, ts_io_posix **px, ts_io *io, int64_t grace)
{
    ts_cas_config cfg;
    ts_cas *cas = NULL;
    int r;
    if ((r = ts_io_posix_create(root, NULL, px)) != TS_OK) die("ts_io_posix_create", r);
    ts_io_posix_vtable(*px, io);
    memset(&cfg, 0, sizeof cfg);
    cfg.io = io;
    cfg.gc_grace_ms = grace;
    if ((r = ts_cas_open(&cfg, &cas)) != TS_OK) die("ts_cas_open", r);
    return cas;
}

static void run_ours(int run, times *t, ts_io_counters *budget)
{
    char root[512], h[65], aid[32];
    ts_io_posix *px;
    ts_io io;
    ts_cas *cas;
    ts_io_counters c0, c1;
    static unsigned char buf[ATT_SIZE];
    double t0;
    int i, r;
    snprintf(root, sizeof root, "%s/ours-%d", g_base, run);
    cas = open_posix(root, &px, &io, 0);
    ts_io_counters_get(&io, &c0);
    t0 = now_s();
    for (i = 0; i < N_ATT; i++) {
        ts_cas_ref ref;
        snprintf(aid, sizeof aid, "att-%d", i);
        ref.session_id = "session-a"; ref.attachment_id = aid; ref.added_at_ms = 1;
        if ((r = ts_cas_save(cas, g_data[i], ATT_SIZE, "image/png", &ref, 1, h)) != TS_OK) die("save", r);
    }
    t->save_new = now_s() - t0;
    ts_io_counters_get(&io, &c1);
    budget[0].file_syncs = c1.file_syncs - c0.file_syncs;
    budget[0].dir_syncs = c1.dir_syncs - c0.dir_syncs;
    budget[0].writes = c1.writes - c0.writes;
    c0 = c1;
    t0 = now_s();
    for (i = 0; i < N_ATT; i++) {
        ts_cas_ref ref;
        snprintf(aid, sizeof aid, "att-%d", i);
        ref.session_id = "session-b"; ref.attachment_id = aid; ref.added_at_ms = 2;
        if ((r = ts_cas_save(cas, g_data[i], ATT_SIZE, "image/png", &ref, 2, h)) != TS_OK) die("save dup", r);
    }
    t->save_dup = now_s() - t0;
    ts_io_counters_get(&io, &c1);
    budget[1].file_syncs = c1.file_syncs - c0.file_syncs;
    budget[1].dir_syncs = c1.dir_syncs - c0.dir_syncs;
    budget[1].writes = c1.writes - c0.writes;
    t0 = now_s();
    for (i = 0; i < N_ATT; i++) {
        size_t size = 0;
        if ((r = ts_cas_load_into(cas, g_hash[i], buf, sizeof buf, &size, NULL)) != TS_OK) die("load", r);
    }
    t->load = now_s() - t0;
    ts_cas_close(cas);
    ts_io_posix_destroy(px);
    rm_rf(root);
}

/* ---- SQLite ------------------------------------------------------------------ */

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "bench_cas: sqlite: %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

static void sqlite_save(sqlite3 *db, sqlite3_stmt *ins, sqlite3_stmt *ref, int i, const char *sid)
{
    unsigned char d[32];
    char hex[65], aid[32];
    ts_sha256_buffer(g_data[i], ATT_SIZE, d); /* the same hashing work as ours */
    ts_sha256_hex(d, hex);
    snprintf(aid, sizeof aid, "att-%d", i);
    exec_sql(db, "BEGIN");
    sqlite3_bind_text(ins, 1, hex, 64, SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, "image/png", -1, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 3, ATT_SIZE);
    sqlite3_bind_blob(ins, 4, g_data[i], ATT_SIZE, SQLITE_STATIC);
    if (sqlite3_step(ins) != SQLITE_DONE) die("sqlite insert", 0);
    sqlite3_reset(ins);
    sqlite3_bind_text(ref, 1, hex, 64, SQLITE_STATIC);
    sqlite3_bind_text(ref, 2, sid, -1, SQLITE_STATIC);
    sqlite3_bind_text(ref, 3, aid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(ref, 4, 1);
    if (sqlite3_step(ref) != SQLITE_DONE) die("sqlite ref", 0);
    sqlite3_reset(ref);
    exec_sql(db, "COMMIT");
}

static void run_sqlite(int run, const char *sync_mode, times *t)
{
    char path[512], wal[600], shm[600], pragma[64];
    static unsigned char buf[ATT_SIZE];
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL, *ref = NULL, *sel = NULL;
    double t0;
    int i;
    snprintf(path, sizeof path, "%s/peer-%s-%d.db", g_base, sync_mode, run);
    if (sqlite3_open(path, &db) != SQLITE_OK) die("sqlite3_open", 0);
    exec_sql(db, "PRAGMA journal_mode=WAL");
    snprintf(pragma, sizeof pragma, "PRAGMA synchronous=%s", sync_mode);
    exec_sql(db, pragma);
    exec_sql(db, "CREATE TABLE blobs(hash TEXT PRIMARY KEY, mime TEXT, size INTEGER, data BLOB)");
    exec_sql(db, "CREATE TABLE refs(hash TEXT, session TEXT, attachment TEXT, added INTEGER,"
                 " PRIMARY KEY(hash, session, attachment))");
    sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO blobs(hash, mime, size, data) VALUES(?,?,?,?)", -1, &ins, NULL);
    sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO refs(hash, session, attachment, added) VALUES(?,?,?,?)", -1, &ref, NULL);
    sqlite3_prepare_v2(db, "SELECT data FROM blobs WHERE hash = ?", -1, &sel, NULL);
    if (!ins || !ref || !sel) die("sqlite3_prepare", 0);
    t0 = now_s();
    for (i = 0; i < N_ATT; i++) sqlite_save(db, ins, ref, i, "session-a");
    t->save_new = now_s() - t0;
    t0 = now_s();
    for (i = 0; i < N_ATT; i++) sqlite_save(db, ins, ref, i, "session-b");
    t->save_dup = now_s() - t0;
    t0 = now_s();
    for (i = 0; i < N_ATT; i++) {
        sqlite3_bind_text(sel, 1, g_hash[i], 64, SQLITE_STATIC);
        if (sqlite3_step(sel) != SQLITE_ROW) die("sqlite select", 0);
        memcpy(buf, sqlite3_column_blob(sel, 0), (size_t)sqlite3_column_bytes(sel, 0));
        sqlite3_reset(sel);
    }
    t->load = now_s() - t0;
    sqlite3_finalize(ins);
    sqlite3_finalize(ref);
    sqlite3_finalize(sel);
    sqlite3_close(db);
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    unlink(path); unlink(wal); unlink(shm);
}

/* ---- GC ---------------------------------------------------------------------- */

void sync(void); /* XSI; hidden by strict _POSIX_C_SOURCE */

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len) die(path, fd);
    close(fd);
}

/* Fills a store with GC_OBJECTS 1 KB objects (no references, created at
   time 0) in the CA layout with plain POSIX calls and no per-file syncs,
   then one sync(): the GC is what is measured, not the saves. */
static void gc_fill(ts_cas *cas, const char *root, uint64_t seed)
{
    unsigned char d[1024], dg[32];
    ts__cas_meta m;
    ts__buf b;
    char rel[TS__CAS_PATH_CAP], path[TS__CAS_PATH_CAP + 600];
    int i, k;
    uint64_t x = seed;
    ts__buf_init(&b, NULL);
    snprintf(path, sizeof path, "%s/attachments-ca", root);
    mkdir(path, 0755);
    for (k = 0; k < 256; k++) {
        snprintf(path, sizeof path, "%s/attachments-ca/%c%c", root, ts__hex_digits[k >> 4], ts__hex_digits[k & 15]);
        mkdir(path, 0755);
    }
    for (i = 0; i < GC_OBJECTS; i++) {
        size_t j;
        for (j = 0; j < sizeof d; j++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; d[j] = (unsigned char)x; }
        ts__cas_meta_init(&m, NULL);
        ts_sha256_buffer(d, sizeof d, dg);
        ts_sha256_hex(dg, m.hash);
        memcpy(m.mime, "image/png", 10);
        memcpy(m.enc, "raw", 4);
        m.size = m.stored_size = sizeof d;
        ts__cas_path(cas, rel, m.hash, NULL);
        snprintf(path, sizeof path, "%s/%s", root, rel);
        if (mkdir(path, 0755) != 0) die("mkdir", 0);
        ts__cas_path(cas, rel, m.hash, "data.bin");
        snprintf(path, sizeof path, "%s/%s", root, rel);
        write_file(path, d, sizeof d);
        if (ts__cas_meta_encode(&m, &b) != TS_OK) die("encode", 0);
        ts__cas_path(cas, rel, m.hash, "metadata.json");
        snprintf(path, sizeof path, "%s/%s", root, rel);
        write_file(path, b.data, b.len);
        ts__cas_meta_free(&m);
    }
    ts__buf_free(&b);
    sync();
}

/* Raw latency of unlink() on this disk (files created and synced first),
   for context. */
static double unlink_latency_ms(void)
{
    char path[600];
    double t0;
    int i;
    for (i = 0; i < 200; i++) {
        snprintf(path, sizeof path, "%s/unlink-probe-%d", g_base, i);
        write_file(path, "x", 1);
    }
    sync();
    t0 = now_s();
    for (i = 0; i < 200; i++) {
        snprintf(path, sizeof path, "%s/unlink-probe-%d", g_base, i);
        unlink(path);
    }
    return (now_s() - t0) * 1000.0 / 200;
}

static void run_gc(int run, double *t_none, double *t_half, uint64_t *freed, double *t_fill)
{
    char root[512], h[65];
    ts_io_posix *px;
    ts_io io;
    ts_cas *cas;
    unsigned char d[1024];
    ts_cas_gc_progress p;
    double t0;
    int i, r;
    uint64_t x;
    snprintf(root, sizeof root, "%s/gc-%d", g_base, run);
    cas = open_posix(root, &px, &io, 0);
    t0 = now_s();
    gc_fill(cas, root, 12345);
    *t_fill = now_s() - t0;
    /* nothing to free: every object is inside the grace period */
    t0 = now_s();
    if ((r = ts_cas_gc_begin(cas, 600000)) != TS_OK) die("gc_begin", r);
    while ((r = ts_cas_gc_step(cas, 600000, 500, NULL, NULL)) == TS_OK) {}
    if (r != TS_DONE) die("gc_step", r);
    *t_none = now_s() - t0;
    /* two hours later, half of them marked */
    x = 12345;
    ts_io_counters_get(&io, &g_gc_c0);
    t0 = now_s();
    if ((r = ts_cas_gc_begin(cas, 2 * HOUR)) != TS_OK) die("gc_begin", r);
    for (i = 0; i < GC_OBJECTS; i++) {
        size_t j;
        unsigned char dg[32];
        for (j = 0; j < sizeof d; j++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; d[j] = (unsigned char)x; }
        if (i % 2) continue;
        ts_sha256_buffer(d, sizeof d, dg);
        ts_sha256_hex(dg, h);
        if ((r = ts_cas_gc_mark(cas, h)) != TS_OK) die("gc_mark", r);
    }
    while ((r = ts_cas_gc_step(cas, 2 * HOUR, 500, NULL, NULL)) == TS_OK) {}
    if (r != TS_DONE) die("gc_step", r);
    *t_half = now_s() - t0;
    ts_io_counters_get(&io, &g_gc_c1);
    ts_cas_gc_status(cas, &p);
    *freed = p.objects_freed;
    ts_cas_close(cas);
    ts_io_posix_destroy(px);
    rm_rf(root);
}

/* Raw latency of write(4 KB) + fsync on this disk, for context. */
static double fsync_latency_ms(void)
{
    char path[600];
    char block[4096];
    double v[21];
    int i, fd;
    snprintf(path, sizeof path, "%s/fsync-probe", g_base);
    memset(block, 7, sizeof block);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 0;
    for (i = 0; i < 21; i++) {
        double t0 = now_s();
        if (write(fd, block, sizeof block) != (ssize_t)sizeof block || fsync(fd) != 0) { close(fd); return 0; }
        v[i] = (now_s() - t0) * 1000.0;
    }
    close(fd);
    unlink(path);
    return median(v, 21);
}

/* ---- main ---------------------------------------------------------------------- */

static void line(const char *name, double v, const char *unit, const char *peer, double pv)
{
    if (peer)
        printf("BENCH %s %.1f %s peer=%s peer_value=%.1f ratio=%.2f\n", name, v, unit, peer, pv, pv > 0 ? v / pv : 0.0);
    else
        printf("BENCH %s %.1f %s\n", name, v, unit);
}

int main(void)
{
    times ours[RUNS], peer[RUNS], full[RUNS];
    double v[RUNS], a, b, c, mb = (double)N_ATT * ATT_SIZE / 1e6;
    double o_new, o_dup, o_load, p_new, p_dup, p_load, f_new, f_dup;
    double gn[GC_RUNS], gh[GC_RUNS], gf[GC_RUNS], g_none, g_half, g_fill;
    ts_io_counters budget[2];
    uint64_t freed = 0;
    double fsync_ms, unlink_ms;
    int i;

    snprintf(g_base, sizeof g_base, "bench_cas_tmp.XXXXXX");
    if (!mkdtemp(g_base)) die("mkdtemp", 0);
    make_data();
    fsync_ms = fsync_latency_ms();
    unlink_ms = unlink_latency_ms();
    memset(budget, 0, sizeof budget);
    for (i = 0; i < RUNS; i++) {
        run_ours(i, &ours[i], budget);
        run_sqlite(i, "NORMAL", &peer[i]);
        run_sqlite(i, "FULL", &full[i]);
    }
    for (i = 0; i < RUNS; i++) v[i] = ours[i].save_new;
    o_new = median(v, RUNS);
    for (i = 0; i < RUNS; i++) v[i] = ours[i].save_dup;
    o_dup = median(v, RUNS);
    for (i = 0; i < RUNS; i++) v[i] = ours[i].load;
    o_load = median(v, RUNS);
    for (i = 0; i < RUNS; i++) v[i] = peer[i].save_new;
    p_new = median(v, RUNS);
    for (i = 0; i < RUNS; i++) v[i] = peer[i].save_dup;
    p_dup = median(v, RUNS);
    for (i = 0; i < RUNS; i++) v[i] = peer[i].load;
    p_load = median(v, RUNS);
    for (i = 0; i < RUNS; i++) v[i] = full[i].save_new;
    f_new = median(v, RUNS);
    for (i = 0; i < RUNS; i++) v[i] = full[i].save_dup;
    f_dup = median(v, RUNS);

    for (i = 0; i < GC_RUNS; i++) run_gc(i, &gn[i], &gh[i], &freed, &gf[i]);
    g_none = median(gn, GC_RUNS) * 1000.0 * 10000.0 / GC_OBJECTS;
    g_half = median(gh, GC_RUNS) * 1000.0 * 10000.0 / GC_OBJECTS;
    g_fill = median(gf, GC_RUNS);
    rm_rf(g_base);

    line("cas_save_new_100k_mbps", mb / o_new, "MB/s", "sqlite_wal_normal", mb / p_new);
    line("cas_save_new_100k_objs", N_ATT / o_new, "obj/s", "sqlite_wal_normal", N_ATT / p_new);
    line("cas_save_dup_100k_mbps", mb / o_dup, "MB/s", "sqlite_wal_normal", mb / p_dup);
    line("cas_save_dup_100k_objs", N_ATT / o_dup, "obj/s", "sqlite_wal_normal", N_ATT / p_dup);
    line("cas_load_verified_100k_mbps", mb / o_load, "MB/s", "sqlite_select", mb / p_load);
    line("cas_save_new_100k_objs_vs_full", N_ATT / o_new, "obj/s", "sqlite_wal_full", N_ATT / f_new);
    line("cas_save_dup_100k_objs_vs_full", N_ATT / o_dup, "obj/s", "sqlite_wal_full", N_ATT / f_dup);
    line("cas_gc_10k_none_freed_ms", g_none, "ms", NULL, 0);
    line("cas_gc_10k_half_freed_ms", g_half, "ms", NULL, 0);
    line("disk_fsync_4k_ms", fsync_ms, "ms", NULL, 0);
    printf("BENCH disk_unlink_ms %.3f ms\n", unlink_ms);

    a = (double)budget[0].file_syncs / N_ATT;
    b = (double)budget[1].file_syncs / N_ATT;
    c = (double)budget[1].writes / N_ATT;
    printf("\n%d attachments of %d KB, POSIX vtable, median of %d runs (ours: every save durable on return)\n",
           N_ATT, ATT_SIZE / 1024, RUNS);
    printf("  %-28s %10s %10s %12s %10s\n", "", "ours", "sqlite", "(sync=FULL)", "ratio");
    printf("  %-28s %10.1f %10.1f %12.1f %10.2f\n", "save new (MB/s)", mb / o_new, mb / p_new, mb / f_new, p_new / o_new);
    printf("  %-28s %10.0f %10.0f %12.0f %10.2f\n", "save new (objects/s)", N_ATT / o_new, N_ATT / p_new, N_ATT / f_new, p_new / o_new);
    printf("  %-28s %10.1f %10.1f %12.1f %10.2f\n", "save duplicate (MB/s)", mb / o_dup, mb / p_dup, mb / f_dup, p_dup / o_dup);
    printf("  %-28s %10.0f %10.0f %12.0f %10.2f\n", "save duplicate (objects/s)", N_ATT / o_dup, N_ATT / p_dup, N_ATT / f_dup, p_dup / o_dup);
    printf("  %-28s %10.1f %10.1f %12s %10.2f\n", "load (MB/s, ours verified)", mb / o_load, mb / p_load, "", p_load / o_load);
    printf("  sync budget per save (vtable counters): new %.1f file syncs, %.1f dir syncs; duplicate %.1f file syncs, %.1f writes\n",
           a, (double)budget[0].dir_syncs / N_ATT, b, c);
    printf("  GC per 10,000 objects: %.0f ms freeing none (all in grace), %.0f ms freeing half (%llu freed,\n"
           "    %llu dir syncs, %llu renames, %llu removes); fill (plain POSIX, one sync) took %.1f s\n",
           g_none, g_half, (unsigned long long)freed, (unsigned long long)(g_gc_c1.dir_syncs - g_gc_c0.dir_syncs),
           (unsigned long long)(g_gc_c1.renames - g_gc_c0.renames), (unsigned long long)(g_gc_c1.removes - g_gc_c0.removes), g_fill);
    printf("  this disk: write(4 KB) + fsync = %.2f ms (median of 21), unlink = %.3f ms\n", fsync_ms, unlink_ms);
    return 0;
}
