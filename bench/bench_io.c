/* bench/bench_io.c: the file vtables.
 *
 *   gcc -O2 -march=native -I. bench/bench_io.c -o build/bench_io
 *   build/bench_io [--files N] [--posix-files N] [--runs N]
 *
 * mem:   atomic replaces of 1 KiB files into 64 directories (each synced),
 *        then reads of all of them, and a crash over the lot.
 * posix: --posix-files (default 128) atomic replaces of 1 KiB files under
 *        $TS_TEST_TMP (else a mkdtemp dir in /tmp):
 *        full protocol (fsync file + directory), deferred directory sync
 *        (one sync per batch of 32), no sync, against the peer
 *        "stdio_nosync": fopen/fwrite/fclose straight over the file, which
 *        is neither atomic nor durable and shows what the protocol costs.
 * Median of --runs runs (default 5), fixed content. Output: BENCH lines,
 * then a table. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/stat.h>

#define MAX_RUNS 15

static unsigned char g_data[1024];

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
    return v[n / 2];
}

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            char sub[1024];
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            rm_tree(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* mem: seconds per replace, per read, and for one crash. */
static void run_mem(int files, double *w, double *r, double *c)
{
    ts_io_mem *m = NULL;
    ts_io io;
    char path[64], buf[2048];
    size_t n;
    int i;
    double t0;
    if (ts_io_mem_create(NULL, &m) != TS_OK) exit(1);
    ts_io_mem_vtable(m, &io);
    t0 = now_sec();
    for (i = 0; i < files; i++) {
        snprintf(path, sizeof path, "d%02d/f%07d", i % 64, i);
        if (io.write_file_atomic_fn(io.user, path, g_data, sizeof g_data, 0) != TS_OK) exit(1);
    }
    *w = (now_sec() - t0) / files;
    t0 = now_sec();
    for (i = 0; i < files; i++) {
        snprintf(path, sizeof path, "d%02d/f%07d", i % 64, i);
        if (io.read_file_fn(io.user, path, buf, sizeof buf, &n) != TS_OK || n != sizeof g_data) exit(1);
    }
    *r = (now_sec() - t0) / files;
    t0 = now_sec();
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    *c = now_sec() - t0;
    ts_io_mem_destroy(m);
}

/* posix: seconds per replace with the given flags (batch > 0: a sync_dir
   every `batch` writes). */
static double run_posix(const char *root, int files, unsigned flags, int batch)
{
    ts_io_posix *p = NULL;
    ts_io io;
    char path[64];
    int i;
    double t0, t;
    rm_tree(root);
    if (ts_io_posix_create(root, NULL, &p) != TS_OK) exit(1);
    ts_io_posix_vtable(p, &io);
    if (io.mkdir_p_fn(io.user, "d") != TS_OK) exit(1);
    t0 = now_sec();
    for (i = 0; i < files; i++) {
        snprintf(path, sizeof path, "d/f%05d", i % 64);
        if (io.write_file_atomic_fn(io.user, path, g_data, sizeof g_data, flags) != TS_OK) exit(1);
        if (batch && (i + 1) % batch == 0 && io.sync_dir_fn(io.user, "d") != TS_OK) exit(1);
    }
    t = (now_sec() - t0) / files;
    ts_io_posix_destroy(p);
    return t;
}

static double run_stdio(const char *root, int files)
{
    char path[1024];
    int i;
    double t0;
    rm_tree(root);
    mkdir(root, 0777);
    t0 = now_sec();
    for (i = 0; i < files; i++) {
        FILE *f;
        snprintf(path, sizeof path, "%s/f%05d", root, i % 64);
        if (!(f = fopen(path, "wb")) || fwrite(g_data, 1, sizeof g_data, f) != sizeof g_data) exit(1);
        fclose(f);
    }
    return (now_sec() - t0) / files;
}

int main(int argc, char **argv)
{
    int files = 20000, runs = 5, pfiles = 128, i;
    double mw[MAX_RUNS], mr[MAX_RUNS], mc[MAX_RUNS], full[MAX_RUNS], defer[MAX_RUNS], nosync[MAX_RUNS],
        peer[MAX_RUNS];
    char base[512], root[600];
    const char *t = getenv("TS_TEST_TMP");
    int made = 0;
    for (i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--files")) files = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--posix-files")) pfiles = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
    }
    if (files < 64) files = 64;
    if (runs < 1) runs = 1;
    if (runs > MAX_RUNS) runs = MAX_RUNS;
    if (pfiles < 32) pfiles = 32;
    for (i = 0; i < (int)sizeof g_data; i++) g_data[i] = (unsigned char)(i * 131 + 7);
    if (t && t[0]) {
        snprintf(base, sizeof base, "%s/bench_io", t);
        mkdir(base, 0777);
    } else {
        strcpy(base, "/tmp/ts_bench_io_XXXXXX");
        if (!mkdtemp(base)) return 1;
        made = 1;
    }
    snprintf(root, sizeof root, "%s/root", base);
    for (i = 0; i < runs; i++) {
        run_mem(files, &mw[i], &mr[i], &mc[i]);
        full[i] = run_posix(root, pfiles, 0, 0);
        defer[i] = run_posix(root, pfiles, TS_WRITE_DEFER_DIRSYNC, 32);
        nosync[i] = run_posix(root, pfiles, TS_WRITE_NO_SYNC, 0);
        peer[i] = run_stdio(root, pfiles);
    }
    rm_tree(base);
    if (made) rmdir(base);
    {
        double w = median(mw, runs), r = median(mr, runs), c = median(mc, runs);
        double f = median(full, runs), d = median(defer, runs), n = median(nosync, runs), p = median(peer, runs);
        printf("BENCH io_mem_replace_1k %.0f ops/s\n", 1.0 / w);
        printf("BENCH io_mem_read_1k %.0f ops/s\n", 1.0 / r);
        printf("BENCH io_mem_crash_%dfiles %.2f ms\n", files, c * 1e3);
        printf("BENCH io_posix_replace_full %.1f us peer=stdio_nosync peer_value=%.1f ratio=%.2f\n",
               f * 1e6, p * 1e6, f / p);
        printf("BENCH io_posix_replace_defer32 %.1f us peer=stdio_nosync peer_value=%.1f ratio=%.2f\n",
               d * 1e6, p * 1e6, d / p);
        printf("BENCH io_posix_replace_nosync %.1f us peer=stdio_nosync peer_value=%.1f ratio=%.2f\n",
               n * 1e6, p * 1e6, n / p);
        printf("\n%-34s %14s\n", "operation (1 KiB files)", "median");
        printf("%-34s %11.0f /s\n", "mem replace (dir synced)", 1.0 / w);
        printf("%-34s %11.0f /s\n", "mem read", 1.0 / r);
        printf("%-34s %11.2f ms  (%d files)\n", "mem crash (drop unsynced)", c * 1e3, files);
        printf("%-34s %11.1f us\n", "posix replace, full protocol", f * 1e6);
        printf("%-34s %11.1f us\n", "posix replace, dir sync per 32", d * 1e6);
        printf("%-34s %11.1f us\n", "posix replace, no sync", n * 1e6);
        printf("%-34s %11.1f us\n", "stdio overwrite (peer)", p * 1e6);
    }
    return 0;
}
