/* bench/bench_codecs.c: what background compression buys and costs, against
 * the standard tools run on the same files with the same settings.
 *
 *   gcc -std=c99 -O2 -march=native -I. -DTASKSTORE_STB_ZLIB -DTASKSTORE_WEBP \
 *       bench/bench_codecs.c -o build/bench_codecs -lwebp -lm
 *   build/bench_codecs [--runs N] [--shots N] [--dir DIR]
 *
 * JSON chunks: a deterministic session corpus (screenshot chunks of 10
 *   records, audio chunks of 50 segments, summary documents; fixed seed)
 *   written to a temporary directory. Each file is framed and deflated on
 *   its own (ts_frame_encode, default level), as the store does; the peer is
 *   `gzip -6 -c FILES...`, which also compresses each file on its own (one
 *   gzip member per file) in one process. Sizes are totals; speeds are input
 *   MB/s (10^6 bytes) for compression and output MB/s for decompression.
 * Screenshots: real application screenshots from a Debian documentation
 *   package (default: the N largest PNGs of gnumeric-doc's figures; --dir or
 *   TS_BENCH_SCREENSHOTS picks another directory). Each PNG is converted by
 *   ts_image_to_webp (stb_image decode + libwebp encode), lossless (the
 *   store's default: q75 effort, method 4, exact) and lossy q80 (method 4),
 *   against `cwebp -lossless -exact -q 75 -m 4` and `cwebp -q 80 -m 4` on
 *   the same file (cwebp decodes with libpng; its time includes one process
 *   start, ~1 ms, measured and reported). Speed is PNG MB/s end to end.
 *   Without screenshots the section is skipped with a message (install
 *   gnumeric-doc, as `./build.sh bench` does).
 * Median of --runs runs (default 5 for JSON, 3 for images); ours and the
 * peer take turns file by file so a busy neighbour slows both alike.
 * Output: BENCH lines (ratio = ours / peer; for sizes lower is better, for
 * speeds higher is better), then a table. */
#ifndef TASKSTORE_STB_ZLIB
#define TASKSTORE_STB_ZLIB
#endif
#ifndef TASKSTORE_WEBP
#define TASKSTORE_WEBP
#endif
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <spawn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

extern char **environ;

#define MAX_FILES 4096
#define MAX_RUNS 15

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

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *p;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = (unsigned char *)malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) { free(p); p = NULL; }
    fclose(f);
    *len = (size_t)n;
    return p;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Runs argv with stdout to out_path (or /dev/null), stderr to /dev/null;
   returns the wall seconds, or -1 when it could not run or failed. */
static double run_tool(char *const argv[], const char *out_path)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int st = 0;
    double t0 = now_sec(), t;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path ? out_path : "/dev/null",
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
    t = now_sec() - t0;
    return t;
}

/* ---- the JSON corpus ------------------------------------------------------------ */

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static const char *const g_words[] = {
    "the", "file", "function", "review", "meeting", "code", "test", "build", "error", "window",
    "editor", "browser", "terminal", "commit", "branch", "issue", "design", "document", "page",
    "search", "result", "update", "change", "user", "session", "screen", "record", "audio",
    "summary", "notes", "project", "deadline", "release", "version", "module", "cache", "query",
    "index", "store", "queue", "latency", "we", "should", "will", "can", "need", "think", "look",
    "at", "this", "that", "and", "or", "to", "of", "in", "on", "for", "with", "it", "is", "was",
    "database", "migration", "performance", "compression", "screenshot", "attachment", "timeline"
};
#define NWORDS (sizeof g_words / sizeof g_words[0])

static void words(ts__buf *b, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        /* skewed toward the first words, as natural text is */
        uint32_t r = rnd() % (uint32_t)NWORDS, s = rnd() % (uint32_t)NWORDS;
        ts__buf_puts(b, g_words[r < s ? r : s]);
        if (i + 1 < n) ts__buf_putc(b, ' ');
    }
}

/* Writes the corpus into dir; returns the number of files (paths in names). */
static int make_json_corpus(const char *dir, char names[][512], int max)
{
    static const char *apps[] = { "Code", "Firefox", "Terminal", "Slack", "Figma", "Notes" };
    int nfiles = 0, sess, c, i;
    uint64_t t = 1700000000000ull;
    for (sess = 0; sess < 6 && nfiles < max; sess++) {
        for (c = 0; c < 20 && nfiles < max; c++) {         /* screenshots: 10 per chunk */
            ts__buf b;
            FILE *f;
            ts__buf_init(&b, NULL);
            ts__buf_putc(&b, '[');
            for (i = 0; i < 10; i++) {
                const char *app = apps[rnd() % 6];
                t += 5000 + rnd() % 3000;
                ts__buf_printf(&b, "%s{\"id\":\"ss-%d-%03d\",\"timestamp\":%llu,\"appName\":\"%s\","
                                   "\"windowTitle\":\"%s - ", i ? "," : "", sess, c * 10 + i,
                               (unsigned long long)t, app, app);
                words(&b, 3);
                ts__buf_puts(&b, "\",\"activity\":\"");
                words(&b, 8 + (int)(rnd() % 10));
                ts__buf_printf(&b, "\",\"attachmentHash\":\"%08x%08x%08x%08x%08x%08x%08x%08x\","
                                   "\"width\":2560,\"height\":1440,\"mimeType\":\"image/png\"}",
                               rnd(), rnd(), rnd(), rnd(), rnd(), rnd(), rnd(), rnd());
            }
            ts__buf_putc(&b, ']');
            snprintf(names[nfiles], 512, "%s/s%d-screenshots-chunk-%03d.json", dir, sess, c);
            f = fopen(names[nfiles], "wb");
            if (f) { fwrite(b.data, 1, b.len, f); fclose(f); nfiles++; }
            ts__buf_free(&b);
        }
        for (c = 0; c < 4 && nfiles < max; c++) {          /* audio: 50 per chunk */
            ts__buf b;
            FILE *f;
            ts__buf_init(&b, NULL);
            ts__buf_putc(&b, '[');
            for (i = 0; i < 50; i++) {
                t += 20000;
                ts__buf_printf(&b, "%s{\"id\":\"au-%d-%03d\",\"startTime\":%llu,\"duration\":20000,"
                                   "\"speaker\":\"speaker-%u\",\"confidence\":0.%02u,\"transcription\":\"",
                               i ? "," : "", sess, c * 50 + i, (unsigned long long)t, rnd() % 3,
                               70 + rnd() % 30);
                words(&b, 25 + (int)(rnd() % 30));
                ts__buf_puts(&b, "\"}");
            }
            ts__buf_putc(&b, ']');
            snprintf(names[nfiles], 512, "%s/s%d-audio-chunk-%03d.json", dir, sess, c);
            f = fopen(names[nfiles], "wb");
            if (f) { fwrite(b.data, 1, b.len, f); fclose(f); nfiles++; }
            ts__buf_free(&b);
        }
        {                                                   /* summary document */
            ts__buf b;
            FILE *f;
            ts__buf_init(&b, NULL);
            ts__buf_puts(&b, "{\"narrative\":\"");
            words(&b, 400);
            ts__buf_puts(&b, "\",\"keyPoints\":[");
            for (i = 0; i < 12; i++) { ts__buf_puts(&b, i ? ",\"" : "\""); words(&b, 12); ts__buf_putc(&b, '"'); }
            ts__buf_puts(&b, "]}");
            snprintf(names[nfiles], 512, "%s/s%d-summary.json", dir, sess);
            f = fopen(names[nfiles], "wb");
            if (f) { fwrite(b.data, 1, b.len, f); fclose(f); nfiles++; }
            ts__buf_free(&b);
        }
    }
    return nfiles;
}

/* ---- screenshots ------------------------------------------------------------------ */

typedef struct shot { char path[1024]; long size; } shot;

static int cmp_shot(const void *a, const void *b)
{
    long x = ((const shot *)a)->size, y = ((const shot *)b)->size;
    return x > y ? -1 : x < y;
}

/* The n largest PNGs of dir (their paths and sizes into out). */
static int find_shots(const char *dir, shot *out, int n)
{
    static shot all[MAX_FILES];
    int count = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    if (!d) return 0;
    while ((de = readdir(d)) != NULL && count < MAX_FILES) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".png") != 0) continue;
        snprintf(all[count].path, sizeof all[count].path, "%s/%s", dir, de->d_name);
        all[count].size = file_size(all[count].path);
        if (all[count].size > 0) count++;
    }
    closedir(d);
    qsort(all, (size_t)count, sizeof *all, cmp_shot);
    if (count > n) count = n;
    memcpy(out, all, (size_t)count * sizeof *out);
    return count;
}

static void bench_line(const char *name, double v, const char *unit, const char *peer, double pv)
{
    if (peer && pv > 0)
        printf("BENCH %s %.4g %s peer=%s peer_value=%.4g ratio=%.3f\n", name, v, unit, peer, pv, v / pv);
    else
        printf("BENCH %s %.4g %s\n", name, v, unit);
}

int main(int argc, char **argv)
{
    static char names[MAX_FILES][512];
    static shot shots[256];
    int runs = 5, img_runs = 3, nshots_want = 16, i, r, nfiles, nshots = 0;
    const char *shot_dir = getenv("TS_BENCH_SCREENSHOTS");
    char tmpl[] = "/tmp/bench_codecs.XXXXXX", *dir;
    ts_codec deflate;
    double json_in = 0, ours_out = 0, gz_out = 0;
    double t_c[MAX_RUNS], t_d[MAX_RUNS], g_c[MAX_RUNS], g_d[MAX_RUNS], t_c1[MAX_RUNS];
    double ours_out1 = 0;
    int have_gzip = 1, have_cwebp = 1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--shots") == 0 && i + 1 < argc) nshots_want = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) shot_dir = argv[++i];
    }
    if (runs < 1) runs = 1;
    if (runs > MAX_RUNS) runs = MAX_RUNS;
    if (nshots_want < 1) nshots_want = 1;
    if (nshots_want > 256) nshots_want = 256;
    if (img_runs > runs) img_runs = runs;
    dir = mkdtemp(tmpl);
    if (!dir) { perror("mkdtemp"); return 1; }
    if (ts_codec_builtin("deflate", &deflate) != TS_OK) { fprintf(stderr, "no deflate codec\n"); return 1; }

    /* ---- JSON: ours (per file, framed) vs gzip -6 (per file, one process) -- */
    nfiles = make_json_corpus(dir, names, MAX_FILES);
    {
        unsigned char **data = (unsigned char **)calloc((size_t)nfiles, sizeof *data);
        size_t *len = (size_t *)calloc((size_t)nfiles, sizeof *len);
        ts_blob *frames = (ts_blob *)calloc((size_t)nfiles, sizeof *frames);
        char **gz_argv = (char **)calloc((size_t)nfiles + 4, sizeof *gz_argv);
        char **gunz_argv;
        char gz_path[600];
        snprintf(gz_path, sizeof gz_path, "%s/all.gz", dir);
        gz_argv[0] = (char *)"gzip"; gz_argv[1] = (char *)"-6"; gz_argv[2] = (char *)"-c";
        for (i = 0; i < nfiles; i++) {
            data[i] = read_file(names[i], &len[i]);
            json_in += (double)len[i];
            gz_argv[3 + i] = names[i];
        }
        for (r = 0; r < runs; r++) {
            double t0 = now_sec();
            ours_out = 0;
            for (i = 0; i < nfiles; i++) {
                ts_blob_free(&frames[i]);
                if (ts_frame_encode(&deflate, 0, data[i], len[i], NULL, &frames[i]) != TS_OK) return 1;
                ours_out += (double)frames[i].len;
            }
            t_c[r] = now_sec() - t0;
            t0 = now_sec();
            for (i = 0; i < nfiles; i++) {
                ts_blob d;
                if (ts_frame_decode(NULL, frames[i].data, frames[i].len, 0, NULL, &d) != TS_OK ||
                    d.len != len[i] || memcmp(d.data, data[i], len[i]) != 0) {
                    fprintf(stderr, "bench_codecs: round trip failed\n");
                    return 1;
                }
                ts_blob_free(&d);
            }
            t_d[r] = now_sec() - t0;
            t0 = now_sec();
            ours_out1 = 0;
            for (i = 0; i < nfiles; i++) {
                ts_blob f;
                if (ts_frame_encode(&deflate, 1, data[i], len[i], NULL, &f) != TS_OK) return 1;
                ours_out1 += (double)f.len;
                ts_blob_free(&f);
            }
            t_c1[r] = now_sec() - t0;
            if (have_gzip) {
                g_c[r] = run_tool(gz_argv, gz_path);
                gz_out = (double)file_size(gz_path);
                {
                    char *argv_d[] = { (char *)"gzip", (char *)"-d", (char *)"-c", gz_path, NULL };
                    gunz_argv = argv_d;
                    g_d[r] = run_tool(gunz_argv, NULL);
                }
                if (g_c[r] < 0 || g_d[r] < 0) have_gzip = 0;
            }
        }
        {
            double mc = median(t_c, runs), md = median(t_d, runs), mc1 = median(t_c1, runs);
            double gc = have_gzip ? median(g_c, runs) : 0, gd = have_gzip ? median(g_d, runs) : 0;
            double ratio = ours_out / json_in, gratio = have_gzip ? gz_out / json_in : 0;
            printf("== JSON chunks: %d files, %.2f MB (each compressed on its own)\n", nfiles, json_in / 1e6);
            bench_line("deflate_json_size", ratio, "x_of_input", have_gzip ? "gzip-6" : NULL, gratio);
            bench_line("deflate_json_compress", json_in / mc / 1e6, "MB/s", have_gzip ? "gzip-6" : NULL,
                       have_gzip ? json_in / gc / 1e6 : 0);
            bench_line("deflate_json_decompress", json_in / md / 1e6, "MB/s", have_gzip ? "gzip-d" : NULL,
                       have_gzip ? json_in / gd / 1e6 : 0);
            bench_line("deflate_json_level1_size", ours_out1 / json_in, "x_of_input", NULL, 0);
            bench_line("deflate_json_level1_compress", json_in / mc1 / 1e6, "MB/s", NULL, 0);
            printf("\n  %-28s %12s %12s %12s\n", "JSON chunks", "size", "compress", "decompress");
            printf("  %-28s %11.1f%% %8.1f MB/s %8.1f MB/s\n", "ours: deflate (stb), level 6", 100 * ratio,
                   json_in / mc / 1e6, json_in / md / 1e6);
            printf("  %-28s %11.1f%% %8.1f MB/s %12s\n", "ours: deflate (stb), level 1",
                   100 * ours_out1 / json_in, json_in / mc1 / 1e6, "");
            if (have_gzip)
                printf("  %-28s %11.1f%% %8.1f MB/s %8.1f MB/s\n", "gzip -6 (one member per file)",
                       100 * gratio, json_in / gc / 1e6, json_in / gd / 1e6);
            else
                printf("  gzip not found: no peer figures\n");
            printf("\n");
        }
        for (i = 0; i < nfiles; i++) { free(data[i]); ts_blob_free(&frames[i]); remove(names[i]); }
        {
            char gz[600];
            snprintf(gz, sizeof gz, "%s/all.gz", dir);
            remove(gz);
        }
        free(data); free(len); free(frames); free(gz_argv);
    }

    /* ---- screenshots: ours vs cwebp, lossless and lossy q80 -------------------------- */
    if (shot_dir) {
        nshots = find_shots(shot_dir, shots, nshots_want);
    } else {
        static const char *dirs[] = { "/usr/share/help/C/gnumeric/figures",
                                      "/usr/share/doc/gnumeric-doc/html/C/figures" };
        for (i = 0; i < 2 && !nshots; i++) {
            nshots = find_shots(dirs[i], shots, nshots_want);
            if (nshots) shot_dir = dirs[i];
        }
    }
    if (!nshots) {
        printf("SKIP screenshots: no PNG screenshots found (install gnumeric-doc, or set "
               "TS_BENCH_SCREENSHOTS=DIR / --dir DIR); JSON figures above stand alone\n");
    } else {
        static const char *mode_name[2] = { "lossless", "q80" };
        double png_total = 0, px_total = 0, spawn_t[MAX_RUNS];
        int mode;
        char out_path[600];
        snprintf(out_path, sizeof out_path, "%s/peer.webp", dir);
        {
            char *argv_v[] = { (char *)"cwebp", (char *)"-version", NULL };
            for (r = 0; r < img_runs; r++) spawn_t[r] = run_tool(argv_v, NULL);
            if (spawn_t[0] < 0) have_cwebp = 0;
        }
        for (i = 0; i < nshots; i++) {
            size_t n;
            unsigned char *p = read_file(shots[i].path, &n);
            int x = 0, y = 0, c = 0;
            if (p && stbi_info_from_memory(p, (int)n, &x, &y, &c)) px_total += (double)x * y;
            png_total += (double)n;
            free(p);
        }
        printf("== screenshots: the %d largest PNGs of %s: %.2f MB, %.1f Mpx\n", nshots, shot_dir,
               png_total / 1e6, px_total / 1e6);
        printf("  %-34s %10s %12s %12s\n", "PNG -> WebP", "size", "speed", "");
        for (mode = 0; mode < 2; mode++) {
            double ours_t[MAX_RUNS], peer_t[MAX_RUNS], ours_sz = 0, peer_sz = 0;
            ts_webp_options o;
            int failed = 0;
            memset(&o, 0, sizeof o);
            o.lossy = mode;
            o.quality = mode ? 80.0f : 75.0f;
            o.method = 4;
            for (r = 0; r < img_runs; r++) {
                ours_t[r] = 0; peer_t[r] = 0; ours_sz = 0; peer_sz = 0;
                for (i = 0; i < nshots; i++) {
                    size_t n;
                    unsigned char *p = read_file(shots[i].path, &n);
                    ts_blob out;
                    double t0 = now_sec();
                    ts_result rr = ts_image_to_webp(p, n, &o, NULL, &out, NULL);
                    ours_t[r] += now_sec() - t0;
                    if (rr != TS_OK) { failed++; ours_sz += (double)n; }
                    else ours_sz += (double)out.len;
                    ts_blob_free(&out);
                    free(p);
                    if (have_cwebp) {
                        char *argv_l[] = { (char *)"cwebp", (char *)"-quiet", (char *)"-lossless",
                                           (char *)"-exact", (char *)"-q", (char *)"75", (char *)"-m",
                                           (char *)"4", shots[i].path, (char *)"-o", out_path, NULL };
                        char *argv_q[] = { (char *)"cwebp", (char *)"-quiet", (char *)"-q", (char *)"80",
                                           (char *)"-m", (char *)"4", shots[i].path, (char *)"-o",
                                           out_path, NULL };
                        double t = run_tool(mode ? argv_q : argv_l, NULL);
                        if (t < 0) { have_cwebp = 0; continue; }
                        peer_t[r] += t;
                        peer_sz += (double)file_size(out_path);
                    }
                }
            }
            {
                char name[64];
                double ot = median(ours_t, img_runs), pt = have_cwebp ? median(peer_t, img_runs) : 0;
                snprintf(name, sizeof name, "webp_%s_size", mode_name[mode]);
                bench_line(name, ours_sz / png_total, "x_of_png", have_cwebp ? "cwebp" : NULL,
                           peer_sz / png_total);
                snprintf(name, sizeof name, "webp_%s_convert", mode_name[mode]);
                bench_line(name, png_total / ot / 1e6, "MB/s", have_cwebp ? "cwebp" : NULL,
                           have_cwebp ? png_total / pt / 1e6 : 0);
                snprintf(name, sizeof name, "webp_%s_mpx", mode_name[mode]);
                bench_line(name, px_total / ot / 1e6, "Mpx/s", have_cwebp ? "cwebp" : NULL,
                           have_cwebp ? px_total / pt / 1e6 : 0);
                printf("  ours  %-28s %9.1f%% %7.2f MB/s %7.2f Mpx/s%s\n",
                       mode ? "lossy q80 m4" : "lossless q75 m4 exact", 100 * ours_sz / png_total,
                       png_total / ot / 1e6, px_total / ot / 1e6, failed ? " (some kept as PNG)" : "");
                if (have_cwebp)
                    printf("  cwebp %-28s %9.1f%% %7.2f MB/s %7.2f Mpx/s\n",
                           mode ? "-q 80 -m 4" : "-lossless -exact -q 75 -m 4", 100 * peer_sz / png_total,
                           png_total / pt / 1e6, px_total / pt / 1e6);
            }
        }
        if (have_cwebp)
            printf("  (cwebp times include one process start per file, ~%.1f ms each)\n",
                   median(spawn_t, img_runs) * 1e3);
        else
            printf("  cwebp not found: no peer figures (apt-get install webp)\n");
        remove(out_path);
    }
    rmdir(dir);
    return 0;
}
