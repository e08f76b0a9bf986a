/* tests/unit/test_sha256.c: SHA-256 against the NIST examples and against
 * coreutils sha256sum, on both compression paths (portable C, and SHA-NI
 * when the CPU has it), one-shot and streamed in random pieces.
 * Needs sha256sum (coreutils) on PATH; scratch files go to $TS_TEST_TMP
 * (or /tmp) and are removed afterwards. TS_TEST_LONG=1 runs more cases. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

#include <unistd.h> /* unlink, rmdir */

#define BIG_SIZE (5u * 1024u * 1024u + 333u)
#define MAX_SMALL 1100

static unsigned char *g_data; /* BIG_SIZE pseudo-random bytes */

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return g_rng;
}
static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }


/* Paths under test: 0 = portable; 1 = SHA-NI, only when available. */
static int path_count(void) { return ts_sha256_accelerated() ? 2 : 1; }
static const char *path_name(int accel) { return accel ? "sha-ni" : "portable"; }

static void hash_on(int accel, const void *data, size_t n, char hex[65])
{
    ts_sha256 c;
    unsigned char d[32];
    ts__sha256_init_impl(&c, accel);
    TS_CHECK_EQ_INT(c.accel, accel);
    ts_sha256_update(&c, data, n);
    ts_sha256_final(&c, d);
    ts_sha256_hex(d, hex);
}

/* Feeds data in random pieces (some empty, some tiny, some many blocks). */
static void hash_split(int accel, const unsigned char *data, size_t n, char hex[65])
{
    ts_sha256 c;
    unsigned char d[32];
    size_t off = 0;
    ts__sha256_init_impl(&c, accel);
    while (off < n) {
        size_t left = n - off, k;
        switch (rnd() % 4) {
        case 0: k = 0; break;
        case 1: k = rnd_below(8); break;
        case 2: k = rnd_below(130); break;
        default: k = rnd_below(left + 1); break;
        }
        if (k > left) k = left;
        ts_sha256_update(&c, data + off, k);
        off += k;
    }
    ts_sha256_final(&c, d);
    ts_sha256_hex(d, hex);
}

TS_TEST(test_nist_examples)
{
    static const char *msg448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    static const char *msg896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                                "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    char hex[65];
    unsigned char *million;
    int accel;
    million = (unsigned char *)malloc(1000000);
    TS_CHECK(million != NULL);
    if (!million) return;
    memset(million, 'a', 1000000);
    for (accel = 0; accel < path_count(); accel++) {
        ts_sha256 c;
        unsigned char d[32];
        int i;
        hash_on(accel, "", 0, hex);
        TS_CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        hash_on(accel, "abc", 3, hex);
        TS_CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        hash_on(accel, msg448, strlen(msg448), hex);
        TS_CHECK_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        hash_on(accel, msg896, strlen(msg896), hex);
        TS_CHECK_EQ_STR(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
        hash_on(accel, million, 1000000, hex);
        TS_CHECK_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        /* the million as 1000 x 1000 bytes: blocks straddle every update */
        ts__sha256_init_impl(&c, accel);
        for (i = 0; i < 1000; i++) ts_sha256_update(&c, million, 1000);
        ts_sha256_final(&c, d);
        ts_sha256_hex(d, hex);
        TS_CHECK_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }
    free(million);
}

TS_TEST(test_one_shot_hex_and_contexts)
{
    unsigned char d[32], d2[32];
    char hex[65];
    ts_sha256 c, fork;
    ts_sha256_buffer(NULL, 0, d);
    ts_sha256_hex(d, hex);
    TS_CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    TS_CHECK_EQ_INT(strlen(hex), 64);
    ts_sha256_buffer("abc", 3, d);
    ts_sha256_hex(d, hex);
    TS_CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    TS_CHECK(ts__valid_hash_hex(hex, strlen(hex)));

    /* the public init picks the fast path whenever it exists */
    ts_sha256_init(&c);
    TS_CHECK_EQ_INT(c.accel, ts_sha256_accelerated());
    /* a copied context forks the hash */
    ts_sha256_update(&c, "ab", 2);
    ts_sha256_update(&c, NULL, 0);
    fork = c;
    ts_sha256_update(&c, "c", 1);
    ts_sha256_update(&fork, "c", 1);
    ts_sha256_final(&c, d);
    ts_sha256_final(&fork, d2);
    ts_sha256_hex(d, hex);
    TS_CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    TS_CHECK(memcmp(d, d2, 32) == 0);
    /* final wipes the context */
    TS_CHECK_EQ_INT(c.total, 0);
    TS_CHECK_EQ_INT(c.block_len, 0);
    TS_CHECK_EQ_INT(c.state[0], 0);
}

/* On an x86-64 CPU that advertises SHA-NI and SSE4.1 the fast path must be
   the one in use: a silently dead fast path would pass every other test. */
TS_TEST(test_accel_in_use_when_cpu_has_it)
{
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    int sha = 0, sse41 = 0;
    if (!f) { printf("  /proc/cpuinfo unreadable: skipped\n"); return; }
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        sha = strstr(line, " sha_ni") != NULL;
        sse41 = strstr(line, " sse4_1") != NULL;
        break;
    }
    fclose(f);
    printf("  cpu: sha_ni=%d sse4_1=%d, ts_sha256_accelerated()=%d\n", sha, sse41,
           ts_sha256_accelerated());
    /* valgrind's virtual CPU hides SHA-NI (it cannot run it), so cpuid and
       /proc/cpuinfo disagree there: the portable path is the right answer */
    if (getenv("LD_PRELOAD") && strstr(getenv("LD_PRELOAD"), "vgpreload"))
        TS_CHECK(!ts_sha256_accelerated() || (sha && sse41));
    else
        TS_CHECK_EQ_INT(ts_sha256_accelerated(), sha && sse41);
#else
    TS_CHECK_EQ_INT(ts_sha256_accelerated(), 0);
#endif
}

/* Writes every length 0..MAX_SMALL (each from a different offset of the
   random data) plus a several-MB file, hashes them all with one sha256sum
   call, and compares both of our paths with it. */
TS_TEST(test_against_sha256sum)
{
    const char *root = getenv("TS_TEST_TMP");
    char dir[1024], path[1100], cmd[1200], line[1400];
    static char want[MAX_SMALL + 2][65]; /* index MAX_SMALL + 1 is the big file */
    FILE *p;
    size_t i, got = 0;
    int accel, status;

    if (!root || !*root) root = "/tmp";
    if (system("command -v sha256sum >/dev/null 2>&1") != 0) {
        printf("  sha256sum not found on PATH: it is part of coreutils and this test needs it\n");
        TS_CHECK(!"sha256sum available");
        return;
    }
    if (strchr(root, '\'')) {
        printf("  TS_TEST_TMP contains a single quote; cannot build a shell command\n");
        TS_CHECK(!"usable TS_TEST_TMP");
        return;
    }
    snprintf(dir, sizeof dir, "%s/ts_sha256_XXXXXX", root);
    if (!mkdtemp(dir)) {
        printf("  mkdtemp(%s) failed\n", dir);
        TS_CHECK(!"mkdtemp");
        return;
    }
    for (i = 0; i <= MAX_SMALL + 1; i++) {
        size_t len = i <= MAX_SMALL ? i : BIG_SIZE, off = i <= MAX_SMALL ? i * 7 : 0;
        FILE *f;
        if (i <= MAX_SMALL) snprintf(path, sizeof path, "%s/%04u", dir, (unsigned)i);
        else snprintf(path, sizeof path, "%s/big", dir);
        f = fopen(path, "wb");
        TS_CHECK(f != NULL);
        if (!f) break;
        TS_CHECK_EQ_INT(fwrite(g_data + off, 1, len, f), len);
        TS_CHECK_EQ_INT(fclose(f), 0);
        want[i][0] = 0;
    }

    snprintf(cmd, sizeof cmd, "cd '%s' && sha256sum -- * 2>&1", dir);
    p = popen(cmd, "r");
    TS_CHECK(p != NULL);
    while (p && fgets(line, sizeof line, p)) {
        /* "<64 hex>  <name>\n" */
        char *name = line + 66;
        size_t nl = strlen(line), idx;
        if (nl < 67 || !ts__valid_hash_hex(line, 64)) { printf("  unexpected: %s", line); continue; }
        if (line[nl - 1] == '\n') line[nl - 1] = 0;
        if (strcmp(name, "big") == 0) idx = MAX_SMALL + 1;
        else idx = (size_t)strtoul(name, NULL, 10);
        if (idx > MAX_SMALL + 1) continue;
        memcpy(want[idx], line, 64);
        want[idx][64] = 0;
        got++;
    }
    status = p ? pclose(p) : -1;
    TS_CHECK_EQ_INT(status, 0);
    TS_CHECK_EQ_INT(got, MAX_SMALL + 2);

    for (accel = 0; accel < path_count(); accel++) {
        char hex[65];
        int bad = 0;
        for (i = 0; i <= MAX_SMALL; i++) {
            hash_on(accel, g_data + i * 7, i, hex);
            if (strcmp(hex, want[i]) != 0 && bad++ < 3)
                printf("  %s: length %u: got %s want %s\n", path_name(accel), (unsigned)i, hex, want[i]);
        }
        TS_CHECK_EQ_INT(bad, 0);
        hash_on(accel, g_data, BIG_SIZE, hex);
        TS_CHECK_EQ_STR(hex, want[MAX_SMALL + 1]);
        hash_split(accel, g_data, BIG_SIZE, hex);
        TS_CHECK_EQ_STR(hex, want[MAX_SMALL + 1]);
    }

    for (i = 0; i <= MAX_SMALL + 1; i++) {
        if (i <= MAX_SMALL) snprintf(path, sizeof path, "%s/%04u", dir, (unsigned)i);
        else snprintf(path, sizeof path, "%s/big", dir);
        unlink(path);
    }
    TS_CHECK_EQ_INT(rmdir(dir), 0);
}

/* Streaming in random pieces equals one shot, and both paths agree, for
   random lengths and unaligned starts. */
TS_TEST(test_streaming_random_splits)
{
    int iters = (int)ts_test_count(600, 20000), it, accel;
    char one[65], split[65], other[65];
    for (it = 0; it < iters; it++) {
        size_t len = (it % 10 == 0) ? rnd_below(70000) : rnd_below(3000);
        size_t off = rnd_below(BIG_SIZE - len);
        for (accel = 0; accel < path_count(); accel++) {
            hash_on(accel, g_data + off, len, one);
            hash_split(accel, g_data + off, len, split);
            TS_CHECK_EQ_STR(split, one);
            if (accel) {
                hash_on(0, g_data + off, len, other);
                TS_CHECK_EQ_STR(other, one);
            }
        }
    }
}

/* Byte at a time over every length up to a few blocks. */
TS_TEST(test_byte_at_a_time)
{
    int accel;
    for (accel = 0; accel < path_count(); accel++) {
        size_t n, i;
        for (n = 0; n <= 200; n++) {
            ts_sha256 c;
            unsigned char d[32];
            char one[65], bytes[65];
            ts__sha256_init_impl(&c, accel);
            for (i = 0; i < n; i++) ts_sha256_update(&c, g_data + 1000 + i, 1);
            ts_sha256_final(&c, d);
            ts_sha256_hex(d, bytes);
            hash_on(accel, g_data + 1000, n, one);
            TS_CHECK_EQ_STR(bytes, one);
        }
    }
}

int main(void)
{
    size_t i;
    g_data = (unsigned char *)malloc(BIG_SIZE);
    if (!g_data) { printf("out of memory\n"); return 1; }
    for (i = 0; i < BIG_SIZE; i++) g_data[i] = (unsigned char)(rnd() >> 24);
    TS_RUN(test_nist_examples);
    TS_RUN(test_one_shot_hex_and_contexts);
    TS_RUN(test_accel_in_use_when_cpu_has_it);
    TS_RUN(test_against_sha256sum);
    TS_RUN(test_streaming_random_splits);
    TS_RUN(test_byte_at_a_time);
    free(g_data);
    return ts_test_report("sha256");
}
