/* bench_migrate: migrating a generated legacy store on the real file system
 * (POSIX vtable, every fsync included), against `cp -r` of the same legacy
 * directory in the same run.
 *
 * The store: 1,000 sessions (TS_BENCH_SESSIONS), 0-100 screenshots each
 * (50 on average), every screenshot naming a legacy attachment
 * (attachments/{id}.json, base64) of 1-7 KB of incompressible bytes
 * (TS_BENCH_IMG_KB sets the mean, default 4); 30% of the screenshots show an
 * image seen before (half of them the same attachment id again, half a new
 * attachment with duplicate bytes), plus 40 audio segments and the four
 * documents per session.
 *
 * TS_BENCH_SYNC_ALL=1 opens the store with sync_all (commit by file system).
 * Where: TS_BENCH_DIR, else /dev/shm when it exists (RAM: the library's own
 * cost, not the disk's), else TMPDIR or /tmp. Every write is still fsynced
 * through the POSIX vtable; the syncs are counted and multiplied by the
 * fsync latency measured on TMPDIR (/tmp) in the same run to give the time
 * the same migration needs on that disk (a projection, printed as such).
 *
 * Each run: `cp -r pristine work` (timed: the baseline), then ts_store_open
 * on work and ts_migrate_run with the default steps (chunked + ca + index,
 * with backups and per-session verification), then ts_store_close (timed
 * together). Median of RUNS runs (TS_BENCH_RUNS, default 3), fixed seed.
 * Output: BENCH lines (ratio = cp time / migrate time: higher is better)
 * and a table: sessions/s, MB/s of legacy input, storage before/after and
 * the deduplication savings. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ftw.h>
#include <unistd.h>
#include <sys/stat.h>

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

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : def;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_migrate: %s\n", what);
    exit(1);
}

static void put(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) die(path);
}

static const char b64al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static size_t b64enc(const unsigned char *in, size_t n, char *out)
{
    size_t i, o = 0;
    for (i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n) v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = b64al[(v >> 18) & 63];
        out[o++] = b64al[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64al[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64al[v & 63] : '=';
    }
    return o;
}

/* an image's bytes are a function of its number: duplicates regenerate them */
static size_t image(uint64_t k, int mean_kb, unsigned char *out)
{
    uint64_t save = rng_state, i;
    size_t len;
    rng_state = 0x1234567ull + k * 0x9E3779B97F4A7C15ull;
    len = (size_t)(1024 * (uint64_t)mean_kb / 4 + rng() % (1536 * (uint64_t)mean_kb));
    for (i = 0; i < len; i += 8) {
        uint64_t v = rng();
        memcpy(out + i, &v, 8);
    }
    rng_state = save;
    return len;
}

typedef struct figures {
    uint64_t sessions, screenshots, attachments, unique_images;
    uint64_t legacy_bytes, image_bytes, session_bytes;
} figures;

static void generate(const char *dir, int nsess, int mean_kb, figures *fig)
{
    char path[512];
    unsigned char *img = (unsigned char *)malloc((size_t)mean_kb * 2048 + 64);
    char *b64 = (char *)malloc((size_t)mean_kb * 2800 + 64);
    char *text = (char *)malloc((size_t)mean_kb * 2800 + 512);
    char *sess = (char *)malloc(1 << 20);
    uint64_t next_att = 0, next_img = 0;
    int s, i;
    if (!img || !b64 || !text || !sess) die("out of memory");
    memset(fig, 0, sizeof *fig);
    snprintf(path, sizeof path, "%s/sessions", dir);
    mkdir(dir, 0755);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/attachments", dir);
    mkdir(path, 0755);
    rng_state = 42;
    for (s = 0; s < nsess; s++) {
        int nshots = (int)(rng() % 101);
        size_t o = 0;
        o += (size_t)snprintf(sess + o, 4096,
                              "{\"id\":\"session-%05d\",\"name\":\"Session %d: r\\u00e9sum\\u00e9 work\","
                              "\"description\":\"Editing the parser and its tests\",\"status\":\"completed\","
                              "\"category\":\"Development\",\"subCategory\":\"coding\",\"tags\":[\"c\",\"parser\"],"
                              "\"startTime\":%llu,\"endTime\":%llu,\"screenshots\":[",
                              s, s, 1690000000000ull + (unsigned long long)s * 3600000ull,
                              1690000000000ull + (unsigned long long)s * 3600000ull + 1800000ull);
        for (i = 0; i < nshots; i++) {
            uint64_t aid, imgk;
            uint64_t r = rng() % 100;
            if (r < 15 && next_att > 0) {
                aid = rng() % next_att;             /* the same attachment again */
            } else {
                size_t len, bl, tl;
                aid = next_att++;
                imgk = (r < 30 && next_img > 0) ? rng() % next_img : next_img++;
                len = image(imgk, mean_kb, img);
                bl = b64enc(img, len, b64);
                tl = (size_t)snprintf(text, 512, "{\"id\":\"att-%llu\",\"type\":\"screenshot\","
                                      "\"name\":\"screenshot-%llu.png\",\"mimeType\":\"image/png\",\"size\":%lu,"
                                      "\"base64\":\"", (unsigned long long)aid, (unsigned long long)aid,
                                      (unsigned long)len);
                memcpy(text + tl, b64, bl);
                tl += bl;
                tl += (size_t)snprintf(text + tl, 64, "\",\"createdAt\":1690000000000}");
                snprintf(path, sizeof path, "%s/attachments/att-%llu.json", dir, (unsigned long long)aid);
                put(path, text, tl);
                fig->attachments++;
                fig->legacy_bytes += tl;
                fig->image_bytes += len;
            }
            o += (size_t)snprintf(sess + o, 512, "%s{\"id\":\"shot-%d\",\"timestamp\":%llu,"
                                  "\"activity\":\"typing in editor.c line %d\",\"attachmentId\":\"att-%llu\"}",
                                  i ? "," : "", i, 1690000000000ull + (unsigned long long)i * 30000ull, i,
                                  (unsigned long long)aid);
            fig->screenshots++;
        }
        o += (size_t)snprintf(sess + o, 64, "],\"audioSegments\":[");
        for (i = 0; i < 40; i++)
            o += (size_t)snprintf(sess + o, 256, "%s{\"id\":\"audio-%d\",\"timestamp\":%d,"
                                  "\"transcription\":\"so now we refactor the tokenizer, step %d\"}",
                                  i ? "," : "", i, i * 45000, i);
        o += (size_t)snprintf(sess + o, 1024, "],\"videoChunks\":[{\"id\":\"v0\",\"path\":\"video/v0.webm\"}],"
                              "\"summary\":{\"narrative\":\"Refactored the tokenizer and fixed two bugs.\"},"
                              "\"audioInsights\":{\"sentiment\":\"focused\"},\"canvasSpec\":{\"nodes\":[]},"
                              "\"transcription\":\"full transcript of session %d\"}", s);
        snprintf(path, sizeof path, "%s/sessions/session-%05d.json", dir, s);
        put(path, sess, o);
        fig->sessions++;
        fig->legacy_bytes += o;
        fig->session_bytes += o;
    }
    fig->unique_images = next_img;
    free(img);
    free(b64);
    free(text);
    free(sess);
}

/* ---- directory sizes ---------------------------------------------------------- */

static uint64_t walk_bytes;
static uint64_t walk_files;
static int walk_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)p; (void)f;
    if (flag == FTW_F) { walk_bytes += (uint64_t)st->st_size; walk_files++; }
    return 0;
}
static uint64_t dir_bytes(const char *dir, uint64_t *files)
{
    walk_bytes = 0;
    walk_files = 0;
    nftw(dir, walk_cb, 16, FTW_PHYS);
    if (files) *files = walk_files;
    return walk_bytes;
}

/* Median latency of a small write + fsync in dir (the disk's sync cost). */
static double fsync_latency(const char *dir)
{
    char path[512];
    double v[21];
    int i;
    snprintf(path, sizeof path, "%s/ts_bench_fsync.%ld", dir, (long)getpid());
    for (i = 0; i < 21; i++) {
        FILE *f = fopen(path, "wb");
        double t0;
        if (!f) return 0;
        fputs("x", f);
        fflush(f);
        t0 = now_s();
        fsync(fileno(f));
        v[i] = now_s() - t0;
        fclose(f);
    }
    remove(path);
    return median(v, 21);
}

static void run_cmd(const char *cmd)
{
    if (system(cmd) != 0) die(cmd);
}

int main(void)
{
    int nsess = env_int("TS_BENCH_SESSIONS", 1000);
    int mean_kb = env_int("TS_BENCH_IMG_KB", 4);
    int runs = env_int("TS_BENCH_RUNS", 3);
    char base[256], pristine[300], work[300], cmd[1024], sub[400];
    double t_cp[16], t_mig[16];
    figures fig;
    ts_migrate_report last;
    ts_store_stats last_stats;
    uint64_t after_chunked = 0, after_ca = 0, after_backups = 0, legacy_left = 0, files_after = 0;
    int r;
    const char *tmp = getenv("TMPDIR"), *where = getenv("TS_BENCH_DIR");
    struct stat shm;
    uint64_t syncs = 0;
    double lat;
    int sync_all = getenv("TS_BENCH_SYNC_ALL") && atoi(getenv("TS_BENCH_SYNC_ALL")) > 0;
    if (!tmp) tmp = "/tmp";
    if (!where) where = stat("/dev/shm", &shm) == 0 && S_ISDIR(shm.st_mode) ? "/dev/shm" : tmp;
    if (runs > 16) runs = 16;
    snprintf(base, sizeof base, "%s/ts_bench_migrate.%ld", where, (long)getpid());
    snprintf(pristine, sizeof pristine, "%s/legacy", base);
    snprintf(work, sizeof work, "%s/work", base);
    mkdir(base, 0755);
    fprintf(stderr, "bench_migrate: generating %d sessions in %s ...\n", nsess, pristine);
    generate(pristine, nsess, mean_kb, &fig);
    memset(&last, 0, sizeof last);
    memset(&last_stats, 0, sizeof last_stats);
    for (r = 0; r < runs; r++) {
        ts_store *s = NULL;
        ts_store_config cfg = ts_store_config_default();
        ts_migrate_options o = ts_migrate_options_default();
        ts_migrate_report rep;
        double t0, t1;
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
        run_cmd(cmd);
        run_cmd("sync");
        snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", pristine, work);
        t0 = now_s();
        run_cmd(cmd);
        t_cp[r] = now_s() - t0;
        run_cmd("sync");
        cfg.now_ms = 1700000000000ull;
        cfg.sync_all = sync_all;
        t0 = now_s();
        if (ts_store_open(work, &cfg, &s) != TS_OK) die("ts_store_open");
        o.now_ms = cfg.now_ms;
        if (ts_migrate_run(s, &o, &rep) != TS_OK) die("ts_migrate_run");
        if (r == runs - 1) {
            ts_store_stats_get(s, &last_stats);
            syncs = last_stats.io.file_syncs + last_stats.io.dir_syncs + last_stats.io.fs_syncs;
        }
        if (ts_store_close(s) != TS_OK) die("ts_store_close");
        t1 = now_s();
        t_mig[r] = t1 - t0;
        if (rep.failed || rep.migrated != (uint64_t)nsess) die("not every session migrated");
        fprintf(stderr, "  run %d: cp -r %.2f s, migrate %.2f s\n", r + 1, t_cp[r], t_mig[r]);
        if (r == runs - 1) {
            last = rep;
            snprintf(sub, sizeof sub, "%s/sessions-chunked", work);
            after_chunked = dir_bytes(sub, NULL);
            snprintf(sub, sizeof sub, "%s/attachments-ca", work);
            after_ca = dir_bytes(sub, &files_after);
            snprintf(sub, sizeof sub, "%s/sessions", work);
            after_backups = dir_bytes(sub, NULL);
            snprintf(sub, sizeof sub, "%s/attachments", work);
            legacy_left = dir_bytes(sub, NULL);
        } else {
            ts_migrate_report_free(&rep);
        }
    }
    lat = fsync_latency(tmp);
    {
        double cp = median(t_cp, runs), mig = median(t_mig, runs);
        double mb = (double)fig.legacy_bytes / 1e6;
        uint64_t after = after_chunked + after_ca;
        printf("BENCH migrate_sessions_per_s %.1f sessions/s\n", (double)nsess / mig);
        printf("BENCH migrate_mb_per_s %.1f MB/s peer=cp_r peer_value=%.1f ratio=%.3f\n", mb / mig, mb / cp,
               cp / mig);
        printf("BENCH migrate_time %.3f s peer=cp_r peer_value=%.3f ratio=%.3f\n", mig, cp, cp / mig);
        printf("BENCH migrate_storage_before %llu bytes\n", (unsigned long long)fig.legacy_bytes);
        printf("BENCH migrate_storage_after %llu bytes\n", (unsigned long long)after);
        printf("BENCH migrate_dedup_saved %llu bytes\n",
               (unsigned long long)last_stats.attachments.dedup_saved_bytes);
        printf("BENCH migrate_syncs_per_session %.1f syncs\n", (double)syncs / (double)nsess);
        printf("BENCH migrate_projected_disk_time %.1f s\n", mig + (double)syncs * lat);
        printf("\nmigrate %d sessions, %llu screenshots, %llu legacy attachments (%llu distinct images, "
               "%.1f%% duplicates), median of %d runs\n",
               nsess, (unsigned long long)fig.screenshots, (unsigned long long)fig.attachments,
               (unsigned long long)fig.unique_images,
               100.0 * (1.0 - (double)fig.unique_images / (double)(fig.screenshots ? fig.screenshots : 1)), runs);
        printf("  %-34s %10.2f s   (cp -r of the legacy dir: %.2f s, ratio migrate/cp %.1fx)\n",
               "migrate (chunked+ca+index, verify)", mig, cp, mig / cp);
        printf("  %-34s %10.1f\n", "sessions/s", (double)nsess / mig);
        printf("  %-34s %10.1f   (cp -r: %.1f MB/s)\n", "MB/s of legacy input", mb / mig, mb / cp);
        printf("  %-34s %10.1f MB (sessions %.1f MB + attachments %.1f MB base64)\n", "storage before",
               mb, (double)fig.session_bytes / 1e6, (double)(fig.legacy_bytes - fig.session_bytes) / 1e6);
        printf("  %-34s %10.1f MB (chunked sessions %.1f MB + CA store %.1f MB in %llu files)\n",
               "storage after (new layout)", (double)after / 1e6, (double)after_chunked / 1e6,
               (double)after_ca / 1e6, (unsigned long long)files_after);
        printf("  %-34s %10.1f MB (%.1f%% of the decoded image bytes %.1f MB)\n", "dedup savings",
               (double)last_stats.attachments.dedup_saved_bytes / 1e6,
               100.0 * (double)last_stats.attachments.dedup_saved_bytes /
                   (double)(last_stats.attachments.logical_bytes ? last_stats.attachments.logical_bytes : 1),
               (double)last_stats.attachments.logical_bytes / 1e6);
        printf("  %-34s %10.1f MB backups + %.1f MB legacy attachments (kept until cleanup)\n",
               "kept for rollback", (double)after_backups / 1e6, (double)legacy_left / 1e6);
        printf("  %-34s %10.1f per session (%llu file + %llu directory + %llu file-system syncs, in %s)\n",
               "fsyncs", (double)syncs / (double)nsess, (unsigned long long)last_stats.io.file_syncs,
               (unsigned long long)last_stats.io.dir_syncs, (unsigned long long)last_stats.io.fs_syncs, where);
        printf("  %-34s %10.1f s   (fsync on %s: %.2f ms; projection, not measured)\n",
               "same run on disk, projected", mig + (double)syncs * lat, tmp, lat * 1e3);
        printf("  %-34s %10llu imported, %llu deduplicated, %llu backups\n", "attachments",
               (unsigned long long)last.attachments_imported, (unsigned long long)last.attachments_deduplicated,
               (unsigned long long)last.backups_written);
    }
    ts_migrate_report_free(&last);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    run_cmd(cmd);
    return 0;
}
