/* bench/bench_queue.c: the persistence queue (ts_queue).
 *
 *   gcc -std=c99 -O2 -march=native -I. bench/bench_queue.c -o build/bench_queue
 *   build/bench_queue [--runs N]
 *
 * 1. Enqueue cost on the caller's path (ns/op, median of --runs runs, default
 *    5): a 256-byte write to a new path, the same with an after-path, a
 *    rewrite of a queued path (coalesced), a 60 Hz tick with nothing due.
 *    Peer: what the caller would pay without a queue, one atomic replace per
 *    change (write tmp, fsync, rename, fsync dir) in the current directory.
 * 2. An hour of recording, simulated against a counting vtable (no bytes
 *    stored) and a fake clock: one screenshot record appended per second, a
 *    tick every frame at 60 Hz. Each append changes 4 files, each after the
 *    previous: the attachment's data.bin and metadata.json (a new CA
 *    directory each time), the screenshot chunk (10 records per chunk) and
 *    the session metadata. Reported: file writes and directory syncs against
 *    one write per change, for the default 100 ms window and longer ones;
 *    and a variant where the session metadata is also touched every frame
 *    (a live duration counter). Fixed inputs, deterministic counts.
 * Output: BENCH lines, then a table. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#define MAX_RUNS 15
#define N_ENQ 100000

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
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

/* ---- a vtable that counts and stores nothing ------------------------------ */

typedef struct count_io { ts_io_counters c; } count_io;

static ts_result cnt_write(void *u, const char *p, const void *d, size_t n, unsigned fl)
{
    count_io *c = (count_io *)u;
    (void)p; (void)d;
    c->c.writes++;
    c->c.bytes_written += n;
    if (!(fl & TS_WRITE_NO_SYNC)) c->c.file_syncs++;
    if (!(fl & (TS_WRITE_NO_SYNC | TS_WRITE_DEFER_DIRSYNC))) c->c.dir_syncs++;
    return TS_OK;
}
static ts_result cnt_remove(void *u, const char *p) { (void)p; ((count_io *)u)->c.removes++; return TS_OK; }
static ts_result cnt_sync_dir(void *u, const char *p) { (void)p; ((count_io *)u)->c.dir_syncs++; return TS_OK; }

static void count_vtable(count_io *c, ts_io *io)
{
    memset(c, 0, sizeof *c);
    memset(io, 0, sizeof *io);
    io->version = TS_IO_VERSION;
    io->user = c;
    io->write_file_atomic_fn = cnt_write;
    io->remove_fn = cnt_remove;
    io->sync_dir_fn = cnt_sync_dir;
}

/* ---- 1. enqueue cost --------------------------------------------------------- */

static char (*g_paths)[64];
static unsigned char g_payload[256];

static double bench_push(int mode)
{
    count_io c;
    ts_io io;
    ts_queue *q;
    ts_queue_config cfg;
    double t0, t1;
    int i, n = mode == 2 ? N_ENQ * 5 : N_ENQ;
    memset(&cfg, 0, sizeof cfg);
    cfg.capacity[TS_PRIO_NORMAL] = N_ENQ;
    count_vtable(&c, &io);
    if (ts_queue_open(&io, &cfg, &q) != TS_OK) { fprintf(stderr, "open failed\n"); exit(2); }
    t0 = now_sec();
    for (i = 0; i < n; i++) {
        ts_result r;
        g_payload[0] = (unsigned char)i;
        if (mode == 0) r = ts_queue_push(q, g_paths[i], g_payload, sizeof g_payload, TS_PRIO_NORMAL, NULL, NULL);
        else if (mode == 1) r = ts_queue_push(q, g_paths[i], g_payload, sizeof g_payload, TS_PRIO_NORMAL,
                                              i ? g_paths[i - 1] : NULL, NULL);
        else r = ts_queue_push(q, g_paths[i % 4], g_payload, sizeof g_payload, TS_PRIO_NORMAL, NULL, NULL);
        if (r != TS_OK) { fprintf(stderr, "push failed: %s\n", ts_result_str(r)); exit(2); }
    }
    t1 = now_sec();
    if (c.c.writes || c.c.dir_syncs) { fprintf(stderr, "I/O on the caller's path!\n"); exit(2); }
    ts_queue_close(q);
    return (t1 - t0) * 1e9 / n;
}

/* A frame's tick with 1000 normal items queued, none due yet. */
static double bench_tick(void)
{
    count_io c;
    ts_io io;
    ts_queue *q;
    double t0, t1;
    int i, n = 20000;
    count_vtable(&c, &io);
    if (ts_queue_open(&io, NULL, &q) != TS_OK) exit(2);
    ts_queue_set_now(q, 1000);
    for (i = 0; i < 1000; i++) ts_queue_push(q, g_paths[i], g_payload, 16, TS_PRIO_NORMAL, NULL, NULL);
    t0 = now_sec();
    for (i = 0; i < n; i++) ts_queue_tick(q, 1000 + (uint64_t)(i % 50), 2000);
    t1 = now_sec();
    if (c.c.writes) exit(2);
    ts_queue_close(q);
    return (t1 - t0) * 1e9 / n;
}

/* The peer: an atomic replace done on the caller's path. */
static double bench_direct(void)
{
    int i, n = 200, dfd;
    char tmp[64], dst[64];
    double t0, t1;
    if (system("mkdir -p bench_queue.tmp") != 0) return 0;
    dfd = open("bench_queue.tmp", O_RDONLY);
    if (dfd < 0) return 0;
    t0 = now_sec();
    for (i = 0; i < n; i++) {
        int fd;
        snprintf(tmp, sizeof tmp, "bench_queue.tmp/f%d.tmp", i % 16);
        snprintf(dst, sizeof dst, "bench_queue.tmp/f%d", i % 16);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, g_payload, sizeof g_payload) != (ssize_t)sizeof g_payload || fsync(fd) != 0) exit(2);
        close(fd);
        if (rename(tmp, dst) != 0 || fsync(dfd) != 0) exit(2);
    }
    t1 = now_sec();
    close(dfd);
    if (system("rm -rf bench_queue.tmp") != 0) return 0;
    return (t1 - t0) * 1e9 / n;
}

/* ---- 2. an hour of recording --------------------------------------------------- */

typedef struct hour_result {
    uint64_t changes, writes, file_syncs, dir_syncs, batches, largest_batch;
    double mean_tick_us;
} hour_result;

/* The hour runs on a stopped clock so the counts do not depend on how busy
   the machine is (a 4 ms budget is never short of a counting vtable). */
static uint64_t stopped_clock(void *user) { (void)user; return 0; }

static unsigned char g_shot[48 * 1024];
static char g_text[4096];

static hour_result run_hour(uint32_t window_ms, int live_meta)
{
    count_io c;
    ts_io io;
    ts_queue *q;
    ts_queue_config cfg;
    ts_queue_stats st;
    hour_result res;
    const char *sid = "sessions-chunked/rec-2026-11-21";
    uint64_t frame, frames = 3600u * 60u, rec = 0;
    double t0 = now_sec();
    char att_data[128], att_meta[128], chunk[128], meta[128];
    memset(&res, 0, sizeof res);
    memset(&cfg, 0, sizeof cfg);
    cfg.batch_window_ms = window_ms;
    cfg.clock_us_fn = stopped_clock;
    count_vtable(&c, &io);
    if (ts_queue_open(&io, &cfg, &q) != TS_OK) exit(2);
    snprintf(meta, sizeof meta, "%s/metadata.json", sid);
    for (frame = 0; frame < frames; frame++) {
        uint64_t now = frame * 1000 / 60;
        ts_queue_set_now(q, now);
        if (frame % 60 == 0) {
            /* one screenshot record: attachment, its metadata, the chunk, the session */
            unsigned h = (unsigned)(rec * 2654435761u);
            snprintf(att_data, sizeof att_data, "attachments-ca/%02x/%08x%056u/data.bin", h & 255, h, (unsigned)rec);
            snprintf(att_meta, sizeof att_meta, "attachments-ca/%02x/%08x%056u/metadata.json", h & 255, h, (unsigned)rec);
            snprintf(chunk, sizeof chunk, "%s/screenshots/chunk-%03u.json", sid, (unsigned)(rec / 10));
            g_shot[0] = (unsigned char)rec;
            if (ts_queue_push(q, att_data, g_shot, sizeof g_shot, TS_PRIO_NORMAL, NULL, NULL) ||
                ts_queue_push(q, att_meta, g_text, 300, TS_PRIO_NORMAL, att_data, NULL) ||
                ts_queue_push(q, chunk, g_text, 300 * (size_t)(rec % 10 + 1), TS_PRIO_NORMAL, att_meta, NULL) ||
                ts_queue_push(q, meta, g_text, 600, TS_PRIO_NORMAL, chunk, NULL))
                exit(2);
            res.changes += 4;
            rec++;
        } else if (live_meta) {
            if (ts_queue_push(q, meta, g_text, 600, TS_PRIO_NORMAL, NULL, NULL)) exit(2);
            res.changes++;
        }
        ts_queue_tick(q, now, 4000);
    }
    res.mean_tick_us = (now_sec() - t0) * 1e6 / (double)frames; /* enqueues included */
    if (ts_queue_flush(q) != TS_OK) exit(2);
    ts_queue_get_stats(q, &st);
    res.writes = c.c.writes;
    res.file_syncs = c.c.file_syncs;
    res.dir_syncs = c.c.dir_syncs;
    res.batches = st.batches;
    res.largest_batch = st.largest_batch;
    ts_queue_close(q);
    return res;
}

int main(int argc, char **argv)
{
    int runs = 5, r, i;
    double v[4][MAX_RUNS], direct[MAX_RUNS], med[4], dmed;
    static const uint32_t windows[] = {100, 1000, 5000, 10000};
    hour_result hr[4], live;
    const char *names[4] = {"queue_enqueue_new_256B", "queue_enqueue_after_256B", "queue_enqueue_coalesced_256B",
                            "queue_tick_1000_waiting"};
    for (i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
    if (runs < 1) runs = 1;
    if (runs > MAX_RUNS) runs = MAX_RUNS;
    g_paths = (char (*)[64])malloc((size_t)N_ENQ * sizeof *g_paths);
    if (!g_paths) return 2;
    for (i = 0; i < N_ENQ; i++)
        snprintf(g_paths[i], sizeof g_paths[i], "sessions-chunked/s%03d/screenshots/chunk-%05d.json", i % 500, i / 500);
    memset(g_payload, 'x', sizeof g_payload);
    memset(g_shot, 0x5a, sizeof g_shot);
    memset(g_text, 'j', sizeof g_text);

    for (r = 0; r < runs; r++) {
        v[0][r] = bench_push(0);
        v[1][r] = bench_push(1);
        v[2][r] = bench_push(2);
        v[3][r] = bench_tick();
        direct[r] = bench_direct();
    }
    for (i = 0; i < 4; i++) med[i] = median(v[i], runs);
    dmed = median(direct, runs);
    for (i = 0; i < 3; i++)
        printf("BENCH %s %.0f ns/op peer=direct_atomic_replace peer_value=%.0f ratio=%.1f\n", names[i], med[i], dmed,
               med[i] > 0 ? dmed / med[i] : 0.0);
    printf("BENCH %s %.0f ns/op\n", names[3], med[3]);

    for (i = 0; i < 4; i++) hr[i] = run_hour(windows[i], 0);
    live = run_hour(100, 1);
    printf("BENCH queue_hour_file_writes %llu writes peer=one_write_per_change peer_value=%llu ratio=%.2f\n",
           (unsigned long long)hr[0].writes, (unsigned long long)hr[0].changes,
           (double)hr[0].changes / (double)hr[0].writes);
    printf("BENCH queue_hour_coalescing_ratio %.2f x\n", (double)hr[0].changes / (double)hr[0].writes);
    printf("BENCH queue_hour_dir_syncs %llu syncs peer=one_per_change peer_value=%llu ratio=%.2f\n",
           (unsigned long long)hr[0].dir_syncs, (unsigned long long)hr[0].changes,
           (double)hr[0].changes / (double)hr[0].dir_syncs);
    for (i = 1; i < 4; i++)
        printf("BENCH queue_hour_writes_window_%ums %llu writes peer=one_write_per_change peer_value=%llu ratio=%.2f\n",
               (unsigned)windows[i], (unsigned long long)hr[i].writes, (unsigned long long)hr[i].changes,
               (double)hr[i].changes / (double)hr[i].writes);
    printf("BENCH queue_hour_live_meta_writes %llu writes peer=one_write_per_change peer_value=%llu ratio=%.2f\n",
           (unsigned long long)live.writes, (unsigned long long)live.changes,
           (double)live.changes / (double)live.writes);

    printf("\n%-34s %12s\n", "enqueue (caller's path)", "ns/op");
    for (i = 0; i < 4; i++) printf("%-34s %12.0f\n", names[i], med[i]);
    printf("%-34s %12.0f   (write+fsync+rename+fsync dir, 256 B)\n", "peer: direct atomic replace", dmed);
    printf("\nan hour at 1 record/s, 60 Hz ticks (4 changed files per record)\n");
    printf("%-22s %8s %8s %8s %9s %8s %8s %9s\n", "window", "changes", "writes", "ratio", "dirsyncs", "batches",
           "largest", "us/frame");
    for (i = 0; i < 4; i++)
        printf("%-22u %8llu %8llu %8.2f %9llu %8llu %8llu %9.2f\n", (unsigned)windows[i],
               (unsigned long long)hr[i].changes, (unsigned long long)hr[i].writes,
               (double)hr[i].changes / (double)hr[i].writes, (unsigned long long)hr[i].dir_syncs,
               (unsigned long long)hr[i].batches, (unsigned long long)hr[i].largest_batch, hr[i].mean_tick_us);
    printf("%-22s %8llu %8llu %8.2f %9llu %8llu %8llu %9.2f\n", "100 + meta per frame",
           (unsigned long long)live.changes, (unsigned long long)live.writes,
           (double)live.changes / (double)live.writes, (unsigned long long)live.dir_syncs,
           (unsigned long long)live.batches, (unsigned long long)live.largest_batch, live.mean_tick_us);
    free(g_paths);
    return 0;
}
