/* bench/bench_sha256.c: SHA-256 throughput of taskstore.h against OpenSSL.
 *
 *   gcc -O2 -march=native -I. bench/bench_sha256.c -o build/bench_sha256 -lcrypto
 *   build/bench_sha256 [--mib N] [--slow-mib N] [--runs N]
 *
 * Hashes 16 KiB messages (one init/update/final each) until N MiB are done,
 * median of --runs runs (default 5). Within a run the compared programs take
 * turns on ~4 MiB slices, so a neighbour stealing the CPU (2 shared cores)
 * slows both sides alike and the ratios stay meaningful:
 *   accel     our SHA-NI path        vs OpenSSL EVP SHA-256 (best of two call styles)
 *   portable  our portable C path    vs OpenSSL with its SHA extensions masked
 * OpenSSL reads OPENSSL_ia32cap once, when libcrypto initializes, so the
 * masked pair runs in a re-executed copy of this program started with
 * OPENSSL_ia32cap=:~0x20000000 (bit 29 of the second word = CPUID.7.EBX.SHA).
 * MB/s means 10^6 bytes per second. Output: BENCH lines, then a table. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MSG_SIZE 16384
#define SMALL_SIZE 64
#define MAX_RUNS 15

static unsigned char g_msg[MSG_SIZE];
static unsigned char g_sink[32];
static EVP_MD *g_md;         /* fetched once */
static EVP_MD_CTX *g_mdctx;  /* reused */

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sink(const unsigned char *d)
{
    int i;
    for (i = 0; i < 32; i++) g_sink[i] ^= d[i];
}

/* Each runner hashes `count` messages of `size` bytes and returns the
   seconds it took. */
typedef double (*runner_fn)(size_t size, size_t count);

static double run_ours(int accel, size_t size, size_t count)
{
    unsigned char d[32];
    ts_sha256 c;
    size_t i;
    double t0 = now_sec();
    for (i = 0; i < count; i++) {
        ts__sha256_init_impl(&c, accel);
        ts_sha256_update(&c, g_msg, size);
        ts_sha256_final(&c, d);
        sink(d);
    }
    return now_sec() - t0;
}
static double run_ours_accel(size_t size, size_t count) { return run_ours(1, size, count); }
static double run_ours_portable(size_t size, size_t count) { return run_ours(0, size, count); }

/* EVP_Digest(..., EVP_sha256(), ...): the one-call style; in OpenSSL 3 it
   pays an implicit fetch and a context allocation per message. */
static double run_openssl_oneshot(size_t size, size_t count)
{
    unsigned char d[32];
    unsigned int dl;
    size_t i;
    double t0 = now_sec();
    for (i = 0; i < count; i++) {
        if (!EVP_Digest(g_msg, size, d, &dl, EVP_sha256(), NULL)) { fprintf(stderr, "EVP_Digest failed\n"); exit(2); }
        sink(d);
    }
    return now_sec() - t0;
}

/* Pre-fetched EVP_MD and a reused EVP_MD_CTX: OpenSSL's fastest style. */
static double run_openssl_ctx(size_t size, size_t count)
{
    unsigned char d[32];
    unsigned int dl;
    size_t i;
    double t0 = now_sec();
    for (i = 0; i < count; i++) {
        if (!EVP_DigestInit_ex2(g_mdctx, g_md, NULL) || !EVP_DigestUpdate(g_mdctx, g_msg, size) ||
            !EVP_DigestFinal_ex(g_mdctx, d, &dl)) {
            fprintf(stderr, "EVP_Digest* failed\n");
            exit(2);
        }
        sink(d);
    }
    return now_sec() - t0;
}

/* One run: each runner hashes `count` messages, in slices of about 4 MiB
   taken in turn, so a neighbour stealing the CPU slows all of them alike.
   mbps[i] gets runner i's MB/s. */
static void run_interleaved(const runner_fn *rs, int nr, size_t size, size_t count, double *mbps)
{
    double secs[8] = {0};
    size_t slice = (4u << 20) / size, done = 0;
    int i;
    if (slice < 1) slice = 1;
    while (done < count) {
        size_t k = count - done < slice ? count - done : slice;
        for (i = 0; i < nr; i++) secs[i] += rs[i](size, k);
        done += k;
    }
    for (i = 0; i < nr; i++) mbps[i] = (double)size * (double)count / secs[i] / 1e6;
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

static void init_data(void)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    size_t i;
    for (i = 0; i < MSG_SIZE; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        g_msg[i] = (unsigned char)(x >> 32);
    }
    g_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    g_mdctx = EVP_MD_CTX_new();
    if (!g_md || !g_mdctx) { fprintf(stderr, "cannot fetch OpenSSL SHA256\n"); exit(2); }
}

/* Both of our paths and OpenSSL must agree before anything is timed. */
static void check_agree(void)
{
    unsigned char a[32], b[32], o[32];
    unsigned int dl;
    ts_sha256 c;
    size_t n;
    for (n = 0; n <= MSG_SIZE; n += (n < 200 ? 1 : 997)) {
        ts__sha256_init_impl(&c, 1); ts_sha256_update(&c, g_msg, n); ts_sha256_final(&c, a);
        ts__sha256_init_impl(&c, 0); ts_sha256_update(&c, g_msg, n); ts_sha256_final(&c, b);
        EVP_Digest(g_msg, n, o, &dl, EVP_sha256(), NULL);
        if (memcmp(a, o, 32) || memcmp(b, o, 32)) {
            fprintf(stderr, "digest mismatch with OpenSSL at length %zu\n", (size_t)n);
            exit(2);
        }
    }
}

/* The re-executed half: portable vs masked OpenSSL, interleaved. */
static int masked_child(size_t count, int runs)
{
    const runner_fn rs[3] = { run_ours_portable, run_openssl_ctx, run_openssl_oneshot };
    double ours[MAX_RUNS], ossl[MAX_RUNS], v[3];
    int r;
    for (r = 0; r < runs; r++) {
        run_interleaved(rs, 3, MSG_SIZE, count, v);
        ours[r] = v[0];
        ossl[r] = v[1] > v[2] ? v[1] : v[2];
    }
    printf("portable %.3f\nopenssl_masked %.3f\n", median(ours, runs), median(ossl, runs));
    return 0;
}

int main(int argc, char **argv)
{
    size_t mib = 256, slow_mib = 64, count, slow_count, small_count;
    int runs = 5, child = 0, i, r;
    double acc[MAX_RUNS], ossl_ctx[MAX_RUNS], ossl_one[MAX_RUNS], ossl[MAX_RUNS];
    double sm_ours[MAX_RUNS], sm_ossl[MAX_RUNS];
    double m_acc, m_ctx, m_one, m_ossl, m_sm_ours, m_sm_ossl, portable = 0, masked = 0;
    const char *peer_name;
    char self[4096], cmd[4300], line[256];
    ssize_t sl;
    FILE *pipe;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--masked-child")) child = 1;
        else if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--slow-mib") && i + 1 < argc) slow_mib = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else { fprintf(stderr, "usage: %s [--mib N] [--slow-mib N] [--runs N]\n", argv[0]); return 2; }
    }
    if (runs < 1) runs = 1;
    if (runs > MAX_RUNS) runs = MAX_RUNS;
    if (!mib) mib = 1;
    if (!slow_mib) slow_mib = 1;
    count = mib * 1024 * 1024 / MSG_SIZE;
    slow_count = slow_mib * 1024 * 1024 / MSG_SIZE;
    small_count = count * MSG_SIZE / SMALL_SIZE / 8; /* 1/8 of the bytes: per-call cost dominates */

    init_data();
    if (child) return masked_child(slow_count, runs);
    check_agree();

    /* The masked pair runs first and to completion: running it alongside
       the other pair would make them share the cores. */
    sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl > 0) self[sl] = 0;
    else snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(cmd, sizeof cmd, "OPENSSL_ia32cap=':~0x20000000' '%s' --masked-child --slow-mib %zu --runs %d",
             self, slow_mib, runs);
    pipe = popen(cmd, "r");
    if (!pipe) { perror("popen"); return 2; }
    while (fgets(line, sizeof line, pipe)) {
        sscanf(line, "portable %lf", &portable);
        sscanf(line, "openssl_masked %lf", &masked);
    }
    if (pclose(pipe) != 0 || portable <= 0 || masked <= 0) {
        fprintf(stderr, "masked child run failed\n");
        return 2;
    }

    for (r = 0; r < runs; r++) {
        const runner_fn big[3] = { run_ours_accel, run_openssl_ctx, run_openssl_oneshot };
        const runner_fn small[2] = { run_ours_accel, run_openssl_ctx };
        double v[3];
        run_interleaved(big, 3, MSG_SIZE, count, v);
        acc[r] = v[0]; ossl_ctx[r] = v[1]; ossl_one[r] = v[2];
        run_interleaved(small, 2, SMALL_SIZE, small_count, v);
        sm_ours[r] = v[0]; sm_ossl[r] = v[1];
    }
    m_acc = median(acc, runs);
    m_ctx = median(ossl_ctx, runs);
    m_one = median(ossl_one, runs);
    m_sm_ours = median(sm_ours, runs);
    m_sm_ossl = median(sm_ossl, runs);
    for (r = 0; r < runs; r++) ossl[r] = ossl_ctx[r] > ossl_one[r] ? ossl_ctx[r] : ossl_one[r];
    m_ossl = median(ossl, runs);
    peer_name = m_ctx >= m_one ? "openssl_evp_ctx" : "openssl_evp_digest";

    if (ts_sha256_accelerated())
        printf("BENCH sha256_16k_accel %.1f MB/s peer=%s peer_value=%.1f ratio=%.3f\n",
               m_acc, peer_name, m_ossl, m_acc / m_ossl);
    printf("BENCH sha256_16k_portable %.1f MB/s peer=openssl_no_shaext peer_value=%.1f ratio=%.3f\n",
           portable, masked, portable / masked);
    printf("BENCH sha256_64b_%s %.1f MB/s peer=openssl_evp_ctx peer_value=%.1f ratio=%.3f\n",
           ts_sha256_accelerated() ? "accel" : "portable", m_sm_ours, m_sm_ossl, m_sm_ours / m_sm_ossl);

    printf("\nSHA-256, 16 KiB messages, median of %d runs (%zu MiB per run; %zu MiB for the slow pair)\n",
           runs, mib, slow_mib);
    printf("  %-42s %10s\n", "implementation", "MB/s");
    printf("  %-42s %10.1f%s\n", "taskstore SHA-NI", m_acc, ts_sha256_accelerated() ? "" : "  (no SHA-NI: portable)");
    printf("  %-42s %10.1f\n", "OpenSSL EVP_DigestInit_ex2, fetched EVP_MD", m_ctx);
    printf("  %-42s %10.1f\n", "OpenSSL EVP_Digest(EVP_sha256())", m_one);
    printf("  %-42s %10.1f\n", "taskstore portable C", portable);
    printf("  %-42s %10.1f\n", "OpenSSL, SHA extensions masked", masked);
    printf("  ratio accel / openssl           %.3f\n", m_acc / m_ossl);
    printf("  ratio portable / openssl masked %.3f\n", portable / masked);
    printf("  64-byte messages: taskstore %.1f MB/s, OpenSSL %.1f MB/s\n", m_sm_ours, m_sm_ossl);
    if (masked > 0.8 * m_ossl)
        printf("  warning: masking OpenSSL's SHA extensions seems to have had no effect\n");
    printf("  (sink %02x)\n", g_sink[0]);
    EVP_MD_CTX_free(g_mdctx);
    EVP_MD_free(g_md);
    return 0;
}
