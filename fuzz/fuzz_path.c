/* fuzz/fuzz_path.c: name validation and the in-memory file vtable.
 *
 * 1. The whole input is a candidate name for ts__valid_rel_path,
 *    ts__valid_id and ts__valid_hash_hex, each compared both ways with a
 *    slow, obviously-correct restatement of its rule (an accepted path never
 *    holds "..", a leading '/', '\\', "//", a control byte ...).
 * 2. The input split on 0xFF is a list of operations on a ts_io_mem
 *    (first byte: operation and flags; the rest: a path, 0xFE before a
 *    second path). Every refused path must give TS_E_INVALID and every
 *    accepted one must not (bar the documented type clashes); what was just
 *    written reads back; removes and renames show in stat; listings name
 *    only valid components that stat agrees with; usage matches a walk of
 *    the tree; a crash after a crash changes nothing. abort() on a mismatch.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. fuzz/fuzz_path.c -o build/fuzz_path
 *   build/fuzz_path fuzz/corpus/path
 * without libFuzzer:
 *   clang -g -O1 -fsanitize=address,undefined -I. fuzz/fuzz_path.c fuzz/replay_main.c -o build/replay_path
 *   build/replay_path fuzz/corpus/path
 */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "fuzz_path: check failed: %s (line %d)\n", #x, __LINE__); abort(); } } while (0)

/* ---- the rules, restated slowly -------------------------------------------- */

static int slow_component_ok(const unsigned char *s, size_t n)
{
    size_t i;
    if (n == 0) return 0;
    if (n == 1 && s[0] == '.') return 0;
    if (n == 2 && s[0] == '.' && s[1] == '.') return 0;
    for (i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] == 0x7F || s[i] == '\\' || s[i] == ':' || s[i] == '/') return 0;
    return 1;
}

static int slow_path_ok(const unsigned char *s, size_t n)
{
    size_t start = 0, i;
    if (n == 0 || n > TASKSTORE_MAX_PATH) return 0;
    for (i = 0; i <= n; i++) {
        if (i < n && s[i] != '/') continue;
        if (!slow_component_ok(s + start, i - start)) return 0;
        start = i + 1;
    }
    return 1;
}

static int slow_id_ok(const unsigned char *s, size_t n)
{
    size_t i;
    if (n < 1 || n > 128) return 0;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return 0;
    for (i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]) || !s[i])
            return 0;
    return 1;
}

static int slow_hash_ok(const unsigned char *s, size_t n)
{
    size_t i;
    if (n != 64) return 0;
    for (i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static void check_names(const unsigned char *d, size_t n)
{
    int p = ts__valid_rel_path((const char *)d, n);
    int id = ts__valid_id((const char *)d, n);
    int h = ts__valid_hash_hex((const char *)d, n);
    CHECK(p == slow_path_ok(d, n));
    CHECK(id == slow_id_ok(d, n));
    CHECK(h == slow_hash_ok(d, n));
    if (p) {
        size_t i;
        CHECK(memchr(d, 0, n) == NULL && d[0] != '/' && d[n - 1] != '/');
        for (i = 0; i + 1 < n; i++) CHECK(!(d[i] == '/' && d[i + 1] == '/'));
        for (i = 0; i + 1 < n; i++)
            CHECK(!(d[i] == '.' && d[i + 1] == '.' && (i == 0 || d[i - 1] == '/') &&
                    (i + 2 == n || d[i + 2] == '/')));
        CHECK(memchr(d, '\\', n) == NULL);
    }
    if (h) CHECK(id);
    if (id) CHECK(p && memchr(d, '/', n) == NULL);
}

/* ---- the mem vtable -------------------------------------------------------- */

typedef struct walk_ctx { const ts_io *io; char dir[TASKSTORE_MAX_PATH + 1]; uint64_t files, bytes; int depth; } walk_ctx;

static int walk_cb(void *vctx, const char *name, int is_dir)
{
    walk_ctx *c = (walk_ctx *)vctx;
    size_t dl = strlen(c->dir), nl = strlen(name);
    ts_io_stat st;
    CHECK(slow_component_ok((const unsigned char *)name, nl));
    if (dl + 1 + nl > TASKSTORE_MAX_PATH) return 0; /* cannot be named; the rest is enough */
    if (dl) c->dir[dl] = '/';
    memcpy(c->dir + dl + (dl ? 1 : 0), name, nl + 1);
    CHECK(c->io->stat_fn(c->io->user, c->dir, &st) == TS_OK);
    CHECK(st.is_dir == is_dir);
    if (is_dir) {
        CHECK(c->depth < 600);
        c->depth++;
        CHECK(c->io->list_dir_fn(c->io->user, c->dir, walk_cb, c) == TS_OK);
        c->depth--;
    } else {
        c->files++;
        c->bytes += st.size;
    }
    c->dir[dl] = 0;
    return 0;
}

static void check_tree(ts_io_mem *m, const ts_io *io)
{
    walk_ctx c;
    uint64_t files, bytes;
    memset(&c, 0, sizeof c);
    c.io = io;
    CHECK(io->list_dir_fn(io->user, "", walk_cb, &c) == TS_OK);
    ts_io_mem_usage(m, &files, &bytes);
    /* paths longer than the limit can exist (a rename of a directory makes
       them) but not be walked, so the walk may see less */
    CHECK(c.files <= files && c.bytes <= bytes);
}

/* s[0, n) as a C string in out (cap bytes); 0 if it holds a NUL or is too long. */
static int cstr(const unsigned char *s, size_t n, char *out, size_t cap)
{
    if (n >= cap || memchr(s, 0, n)) return 0;
    memcpy(out, s, n);
    out[n] = 0;
    return 1;
}

static void run_ops(const unsigned char *d, size_t n)
{
    ts_io_mem *m = NULL;
    ts_io io;
    size_t pos = 0;
    int count = 0;
    if (ts_io_mem_create(NULL, &m) != TS_OK) return;
    ts_io_mem_vtable(m, &io);
    while (pos < n && count++ < 256) {
        size_t end = pos, sep;
        unsigned op, flags;
        char a[TASKSTORE_MAX_PATH + 8], b[TASKSTORE_MAX_PATH + 8], buf[64];
        int have_a, have_b, ok_a, ok_b;
        size_t got;
        ts_result r;
        ts_io_stat st;
        while (end < n && d[end] != 0xFF) end++;
        if (end == pos) { pos = end + 1; continue; }
        op = d[pos] % 12u;
        flags = (unsigned)(d[pos] >> 4) & 3u;
        sep = pos + 1;
        while (sep < end && d[sep] != 0xFE) sep++;
        have_a = cstr(d + pos + 1, sep - pos - 1, a, sizeof a);
        have_b = sep < end && cstr(d + sep + 1, end - sep - 1, b, sizeof b);
        if (!have_b) strcpy(b, "b");
        ok_a = have_a && ts__valid_rel_path(a, strlen(a));
        ok_b = ts__valid_rel_path(b, strlen(b));
        pos = end + 1;
        if (!have_a) continue;
        switch (op) {
        case 0: case 1: /* write, then read back */
            snprintf(buf, sizeof buf, "v%d-%s", count, flags & 1 ? "deferred" : "synced");
            r = io.write_file_atomic_fn(io.user, a, buf, strlen(buf), flags);
            if (!ok_a) { CHECK(r == TS_E_INVALID); break; }
            CHECK(r == TS_OK || r == TS_E_EXISTS || r == TS_E_INVALID);
            if (r == TS_OK) {
                char back[64];
                CHECK(io.read_file_fn(io.user, a, back, sizeof back, &got) == TS_OK);
                CHECK(got == strlen(buf) && memcmp(back, buf, got) == 0);
            }
            break;
        case 2:
            r = io.read_file_fn(io.user, a, buf, 4, &got);
            if (!ok_a) { CHECK(r == TS_E_INVALID && got == 0); break; }
            CHECK(r == TS_OK || r == TS_E_RANGE || r == TS_E_NOTFOUND || r == TS_E_INVALID);
            if (r == TS_E_RANGE) CHECK(got > 4);
            break;
        case 3:
            r = io.remove_fn(io.user, a);
            if (!ok_a) { CHECK(r == TS_E_INVALID); break; }
            CHECK(r == TS_OK || r == TS_E_NOTFOUND || r == TS_E_EXISTS);
            if (r == TS_OK) CHECK(io.stat_fn(io.user, a, &st) == TS_E_NOTFOUND);
            break;
        case 4:
            r = io.rename_fn(io.user, a, b);
            if (!ok_a || !ok_b) { CHECK(r == TS_E_INVALID); break; }
            CHECK(r == TS_OK || r == TS_E_NOTFOUND || r == TS_E_EXISTS || r == TS_E_INVALID);
            if (r == TS_OK && strcmp(a, b) != 0) {
                CHECK(io.stat_fn(io.user, a, &st) == TS_E_NOTFOUND);
                CHECK(io.stat_fn(io.user, b, &st) == TS_OK);
            }
            break;
        case 5:
            r = io.mkdir_p_fn(io.user, a);
            if (!ok_a) { CHECK(r == TS_E_INVALID); break; }
            CHECK(r == TS_OK || r == TS_E_EXISTS);
            if (r == TS_OK) CHECK(io.stat_fn(io.user, a, &st) == TS_OK && st.is_dir);
            break;
        case 6: {
            walk_ctx c;
            memset(&c, 0, sizeof c);
            c.io = &io;
            if (strlen(a) < sizeof c.dir) strcpy(c.dir, a);
            r = io.list_dir_fn(io.user, a, walk_cb, &c);
            if (!ok_a && a[0]) { CHECK(r == TS_E_INVALID); break; }
            CHECK(r == TS_OK || r == TS_E_NOTFOUND);
            break;
        }
        case 7:
            r = io.stat_fn(io.user, a, &st);
            if (!ok_a) { CHECK(r == TS_E_INVALID); break; }
            CHECK(r == TS_OK || r == TS_E_NOTFOUND);
            break;
        case 8:
            r = io.sync_dir_fn(io.user, a);
            if (!ok_a && a[0]) { CHECK(r == TS_E_INVALID); break; }
            CHECK(r == TS_OK || r == TS_E_NOTFOUND);
            break;
        case 9: case 10: {
            uint64_t f1, b1, f2, b2;
            ts_io_mem_crash(m, op == 9 ? TS_CRASH_DROP_UNSYNCED : TS_CRASH_RANDOM, (uint64_t)count * 31 + flags);
            ts_io_mem_usage(m, &f1, &b1);
            ts_io_mem_crash(m, TS_CRASH_RANDOM, (uint64_t)count);
            ts_io_mem_usage(m, &f2, &b2);
            CHECK(f1 == f2 && b1 == b2); /* all of it is durable now */
            check_tree(m, &io);
            break;
        }
        default:
            r = ts_io_mem_put(m, a, "put", 3);
            if (!ok_a) CHECK(r == TS_E_INVALID);
            else CHECK(r == TS_OK || r == TS_E_EXISTS || r == TS_E_INVALID);
            break;
        }
    }
    check_tree(m, &io);
    ts_io_mem_destroy(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_names(data, size);
    if (size <= 4096) run_ops(data, size);
    return 0;
}
