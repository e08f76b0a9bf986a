/* Tests of the file-I/O vtables: the checked call helpers, the in-memory file
   system and its durability model (power loss drops exactly what was not
   synced; random crashes over many seeds; a differential run against a
   naive model; directory cycles after partial syncs; OOM at every
   allocation; tens of thousands of files), the fault wrapper (every
   operation of a workload failed in turn, with nothing of the failed one
   done; crash at every step), and the POSIX vtable in $TS_TEST_TMP (atomic
   replace, counters, refused paths, symbolic links planted inside the
   store, lock conflicts in one process and across processes, a write that
   fails half-way leaves no temp file). */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"

#include <sys/types.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <errno.h>

/* ---- helpers ------------------------------------------------------------- */

static ts_io_counters counters(const ts_io *io)
{
    ts_io_counters c;
    ts_io_counters_get(io, &c);
    return c;
}

static ts_io_counters diff(ts_io_counters a, ts_io_counters b)
{
    ts_io_counters d;
    d.reads = b.reads - a.reads;
    d.bytes_read = b.bytes_read - a.bytes_read;
    d.writes = b.writes - a.writes;
    d.bytes_written = b.bytes_written - a.bytes_written;
    d.file_syncs = b.file_syncs - a.file_syncs;
    d.dir_syncs = b.dir_syncs - a.dir_syncs;
    d.renames = b.renames - a.renames;
    d.removes = b.removes - a.removes;
    d.mkdirs = b.mkdirs - a.mkdirs;
    d.lists = b.lists - a.lists;
    d.stats = b.stats - a.stats;
    d.failures = b.failures - a.failures;
    d.fs_syncs = b.fs_syncs - a.fs_syncs;
    return d;
}

static ts_result wr(const ts_io *io, const char *path, const char *text, unsigned flags)
{
    return io->write_file_atomic_fn(io->user, path, text, strlen(text), flags);
}

/* The file's content as a string in a static buffer; "<missing>" or
   "<error N>" otherwise. */
static const char *rd(const ts_io *io, const char *path)
{
    static char buf[4096];
    size_t n = 0;
    ts_result r = io->read_file_fn(io->user, path, buf, sizeof buf - 1, &n);
    if (r == TS_E_NOTFOUND) return "<missing>";
    if (r != TS_OK) { snprintf(buf, sizeof buf, "<error %d>", (int)r); return buf; }
    buf[n] = 0;
    return buf;
}

static int exists(const ts_io *io, const char *path)
{
    ts_io_stat st;
    return io->stat_fn(io->user, path, &st) == TS_OK;
}

/* A listing as "name/ name ..." sorted, in a caller buffer. */
typedef struct names_ctx { char items[64][128]; int n; int stop_after; } names_ctx;
static int names_cb(void *ctx, const char *name, int is_dir)
{
    names_ctx *c = (names_ctx *)ctx;
    if (c->n < 64) snprintf(c->items[c->n++], 128, "%s%s", name, is_dir ? "/" : "");
    return c->stop_after && c->n >= c->stop_after;
}
static int cmp_str(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }
static const char *listing(const ts_io *io, const char *dir, char *out, size_t cap)
{
    names_ctx c;
    int i;
    ts_result r;
    memset(&c, 0, sizeof c);
    out[0] = 0;
    r = io->list_dir_fn(io->user, dir, names_cb, &c);
    if (r != TS_OK) { snprintf(out, cap, "<error %d>", (int)r); return out; }
    qsort(c.items, (size_t)c.n, sizeof c.items[0], cmp_str);
    for (i = 0; i < c.n; i++) {
        if (i) strncat(out, " ", cap - strlen(out) - 1);
        strncat(out, c.items[i], cap - strlen(out) - 1);
    }
    return out;
}

/* A whole tree as sorted "path=content" lines (contents of files only). */
typedef struct snap_ctx { const ts_io *io; const char *dir; char (*lines)[160]; int n, cap; } snap_ctx;
static int snap_cb(void *ctx, const char *name, int is_dir);
static void snap_dir(const ts_io *io, const char *dir, char (*lines)[160], int *n, int cap)
{
    snap_ctx c;
    c.io = io; c.dir = dir; c.lines = lines; c.n = *n; c.cap = cap;
    io->list_dir_fn(io->user, dir, snap_cb, &c);
    *n = c.n;
}
static int snap_cb(void *ctx, const char *name, int is_dir)
{
    snap_ctx *c = (snap_ctx *)ctx;
    char path[128];
    snprintf(path, sizeof path, "%s%s%s", c->dir, c->dir[0] ? "/" : "", name);
    if (c->n >= c->cap) return 1;
    if (is_dir) {
        snprintf(c->lines[c->n++], 160, "%s/", path);
        snap_dir(c->io, path, c->lines, &c->n, c->cap);
    } else {
        snprintf(c->lines[c->n++], 160, "%s=%s", path, rd(c->io, path));
    }
    return 0;
}
static void snapshot(const ts_io *io, char *out, size_t cap)
{
    static char lines[256][160];
    int n = 0, i;
    snap_dir(io, "", lines, &n, 256);
    qsort(lines, (size_t)n, sizeof lines[0], cmp_str);
    out[0] = 0;
    for (i = 0; i < n; i++) {
        strncat(out, lines[i], cap - strlen(out) - 1);
        strncat(out, "\n", cap - strlen(out) - 1);
    }
}

/* An allocator that checks every size handed back and can fail the Nth
   allocation. */
typedef struct tst_alloc { long calls, fail_at; long live_blocks; size_t live_bytes; int bad_size; } tst_alloc;
static void *ta_alloc(size_t n, void *u)
{
    tst_alloc *a = (tst_alloc *)u;
    size_t *p;
    if (++a->calls == a->fail_at) return NULL;
    p = (size_t *)malloc(n + 16);
    if (!p) return NULL;
    p[0] = n;
    a->live_blocks++;
    a->live_bytes += n;
    return (char *)p + 16;
}
static void ta_free(void *ptr, size_t n, void *u)
{
    tst_alloc *a = (tst_alloc *)u;
    size_t *p = (size_t *)((char *)ptr - 16);
    if (p[0] != n) a->bad_size++;
    a->live_blocks--;
    a->live_bytes -= p[0];
    free(p);
}
static void *ta_realloc(void *ptr, size_t old_n, size_t n, void *u)
{
    tst_alloc *a = (tst_alloc *)u;
    void *q;
    if (a->fail_at && a->calls + 1 == a->fail_at) { a->calls++; return NULL; }
    q = ta_alloc(n, u);
    if (!q) return NULL;
    memcpy(q, ptr, old_n < n ? old_n : n);
    ta_free(ptr, old_n, u);
    return q;
}
static ts_allocator make_alloc(tst_alloc *a)
{
    ts_allocator al;
    al.alloc_fn = ta_alloc;
    al.realloc_fn = ta_realloc;
    al.free_fn = ta_free;
    al.user = a;
    return al;
}

/* Paths every vtable must refuse with TS_E_INVALID. */
static const char *bad_paths[] = {
    "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "a/./b", ".", "..", "a/", "/a",
    "a\001b", "tab\there", "nl\n", "del\177", "C:x", "x/..", NULL
};

static void check_refuses(const ts_io *io, const char *p)
{
    char buf[8];
    size_t n = 99;
    ts_io_stat st;
    names_ctx nc;
    memset(&nc, 0, sizeof nc);
    TS_CHECK_EQ_INT(io->read_file_fn(io->user, p, buf, sizeof buf, &n), TS_E_INVALID);
    TS_CHECK_EQ_INT(n, 0);
    TS_CHECK_EQ_INT(io->write_file_atomic_fn(io->user, p, "x", 1, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(io->remove_fn(io->user, p), TS_E_INVALID);
    TS_CHECK_EQ_INT(io->rename_fn(io->user, p, "ok"), TS_E_INVALID);
    TS_CHECK_EQ_INT(io->rename_fn(io->user, "ok", p), TS_E_INVALID);
    TS_CHECK_EQ_INT(io->mkdir_p_fn(io->user, p), TS_E_INVALID);
    TS_CHECK_EQ_INT(io->stat_fn(io->user, p, &st), TS_E_INVALID);
    TS_CHECK_EQ_INT(io->list_dir_fn(io->user, p, names_cb, &nc), TS_E_INVALID);
    TS_CHECK_EQ_INT(io->sync_dir_fn(io->user, p), TS_E_INVALID);
}

static void check_all_refused(const ts_io *io)
{
    char longp[TASKSTORE_MAX_PATH + 2];
    int i;
    ts_io_stat st;
    for (i = 0; bad_paths[i]; i++) check_refuses(io, bad_paths[i]);
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    check_refuses(io, longp);
    /* "" is the root only for list_dir and sync_dir */
    TS_CHECK_EQ_INT(io->write_file_atomic_fn(io->user, "", "x", 1, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(io->stat_fn(io->user, "", &st), TS_E_INVALID);
    TS_CHECK_EQ_INT(io->remove_fn(io->user, ""), TS_E_INVALID);
    TS_CHECK_OK(io->sync_dir_fn(io->user, ""));
}

/* ---- the call helpers ------------------------------------------------------ */

TS_TEST(helpers_check_before_calling)
{
    ts_io io;
    ts_io_mem *m = NULL;
    ts_io_stat st;
    ts_io_counters c;
    ts__buf b;
    size_t n = 7;
    char buf[4];
    memset(&io, 0, sizeof io);
    TS_CHECK_EQ_INT(ts__io_read(&io, "a", buf, sizeof buf, &n), TS_E_NOTIMPL);
    TS_CHECK_EQ_INT(n, 0);
    TS_CHECK_EQ_INT(ts__io_write(&io, "a", "x", 1, 0), TS_E_NOTIMPL);
    TS_CHECK_EQ_INT(ts__io_remove(&io, "a"), TS_E_NOTIMPL);
    TS_CHECK_EQ_INT(ts__io_rename(&io, "a", "b"), TS_E_NOTIMPL);
    TS_CHECK_EQ_INT(ts__io_mkdir_p(&io, "a"), TS_E_NOTIMPL);
    TS_CHECK_EQ_INT(ts__io_list(&io, "", names_cb, NULL), TS_E_NOTIMPL);
    TS_CHECK_EQ_INT(ts__io_stat(&io, "a", &st), TS_E_NOTIMPL);
    TS_CHECK_EQ_INT(ts__io_sync_dir(&io, ""), TS_E_NOTIMPL);
    TS_CHECK_OK(ts__io_lock(&io, 1)); /* no lock_fn: no locking */
    TS_CHECK_EQ_INT(ts_io_counters_get(&io, &c), TS_E_NOTIMPL);
    TS_CHECK_EQ_INT(c.writes, 0);
    TS_CHECK_EQ_INT(ts_io_counters_get(NULL, &c), TS_E_INVALID);
    /* hostile paths never reach a callback, even a missing one */
    TS_CHECK_EQ_INT(ts__io_read(&io, "../a", buf, sizeof buf, &n), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts__io_write(&io, "/a", "x", 1, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts__io_write(&io, "a", NULL, 1, 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts__io_rename(&io, "a", "b/../c"), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts__io_list(&io, "a", NULL, NULL), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts__io_stat(&io, NULL, &st), TS_E_INVALID);

    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &io);
    ts__buf_init(&b, NULL);
    TS_CHECK_EQ_INT(ts__io_read_all(&io, "big", 1000, &b), TS_E_NOTFOUND);
    {
        char data[3000];
        memset(data, 'q', sizeof data);
        TS_CHECK_OK(ts__io_write(&io, "big", data, sizeof data, 0));
        TS_CHECK_OK(ts__io_write(&io, "empty", "", 0, 0));
    }
    TS_CHECK_EQ_INT(ts__io_read_all(&io, "big", 1000, &b), TS_E_TOOBIG);
    TS_CHECK_OK(ts__io_read_all(&io, "big", 3000, &b));
    TS_CHECK_EQ_INT(b.len, 3000);
    TS_CHECK(b.data[2999] == 'q' && b.data[3000] == 0);
    TS_CHECK_EQ_INT(ts__io_read_all(&io, "big", 2999, &b), TS_E_TOOBIG); /* buffer already big enough */
    TS_CHECK_OK(ts__io_read_all(&io, "empty", 10, &b));
    TS_CHECK_EQ_INT(b.len, 0);
    ts__buf_free(&b);
    TS_CHECK_OK(ts__io_stat(&io, "big", &st));
    TS_CHECK_EQ_INT(st.size, 3000);
    TS_CHECK_EQ_INT(st.is_dir, 0);
    ts_io_mem_destroy(m);
}

/* ---- in-memory vtable: behaviour ----------------------------------------- */

TS_TEST(mem_read_write_range_notfound)
{
    ts_io_mem *m = NULL;
    ts_io io;
    char buf[8];
    size_t n = 99;
    uint64_t files, bytes;
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &io);
    TS_CHECK_EQ_INT(io.version, TS_IO_VERSION);
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "nope", buf, sizeof buf, &n), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(n, 0);
    TS_CHECK_OK(wr(&io, "a.txt", "hello world", 0));
    TS_CHECK_EQ_STR(rd(&io, "a.txt"), "hello world");
    /* too small: the first cap bytes and the full size */
    memset(buf, 0, sizeof buf);
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "a.txt", buf, 5, &n), TS_E_RANGE);
    TS_CHECK_EQ_INT(n, 11);
    TS_CHECK(memcmp(buf, "hello", 5) == 0 && buf[5] == 0);
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "a.txt", NULL, 0, &n), TS_E_RANGE);
    TS_CHECK_EQ_INT(n, 11);
    TS_CHECK_OK(wr(&io, "a.txt", "bye", 0));
    TS_CHECK_EQ_STR(rd(&io, "a.txt"), "bye");
    TS_CHECK_OK(wr(&io, "empty", "", 0));
    TS_CHECK_EQ_STR(rd(&io, "empty"), "");
    TS_CHECK_OK(io.read_file_fn(io.user, "empty", NULL, 0, &n));
    TS_CHECK_EQ_INT(n, 0);
    /* missing parents are created; a file in the way is TS_E_EXISTS */
    TS_CHECK_OK(wr(&io, "x/y/z.json", "{}", 0));
    TS_CHECK_EQ_STR(rd(&io, "x/y/z.json"), "{}");
    TS_CHECK_EQ_INT(wr(&io, "a.txt/sub", "no", 0), TS_E_EXISTS);
    TS_CHECK_EQ_STR(rd(&io, "a.txt/sub"), "<missing>");
    TS_CHECK_EQ_STR(rd(&io, "x/y"), "<error -1>"); /* a directory is not a file */
    TS_CHECK_EQ_INT(wr(&io, "x/y", "no", 0), TS_E_INVALID);
    ts_io_mem_usage(m, &files, &bytes);
    TS_CHECK_EQ_INT(files, 3);
    TS_CHECK_EQ_INT(bytes, 5);
    ts_io_mem_destroy(m);
}

TS_TEST(mem_dirs_list_stat_remove_rename)
{
    ts_io_mem *m = NULL;
    ts_io io;
    ts_io_stat st;
    char l[1024];
    names_ctx nc;
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &io);
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "d/e/f"));
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "d/e/f")); /* again: fine */
    TS_CHECK_OK(wr(&io, "d/one", "1", 0));
    TS_CHECK_OK(wr(&io, "d/two", "22", 0));
    TS_CHECK_EQ_STR(listing(&io, "", l, sizeof l), "d/");
    TS_CHECK_EQ_STR(listing(&io, "d", l, sizeof l), "e/ one two");
    TS_CHECK_EQ_STR(listing(&io, "d/e/f", l, sizeof l), "");
    TS_CHECK_EQ_STR(listing(&io, "nope", l, sizeof l), "<error -101>");
    TS_CHECK_EQ_STR(listing(&io, "d/one", l, sizeof l), "<error -101>");
    memset(&nc, 0, sizeof nc);
    nc.stop_after = 1;
    TS_CHECK_OK(io.list_dir_fn(io.user, "d", names_cb, &nc));
    TS_CHECK_EQ_INT(nc.n, 1);
    TS_CHECK_OK(io.stat_fn(io.user, "d/two", &st));
    TS_CHECK_EQ_INT(st.size, 2);
    TS_CHECK_EQ_INT(st.is_dir, 0);
    TS_CHECK_OK(io.stat_fn(io.user, "d/e", &st));
    TS_CHECK_EQ_INT(st.is_dir, 1);
    TS_CHECK_EQ_INT(st.size, 0);
    TS_CHECK_EQ_INT(io.stat_fn(io.user, "d/zz", &st), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(io.stat_fn(io.user, "d/one/x", &st), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(io.mkdir_p_fn(io.user, "d/one/x"), TS_E_EXISTS);
    TS_CHECK_EQ_INT(io.mkdir_p_fn(io.user, "d/one"), TS_E_EXISTS);

    /* remove: files, empty directories only */
    TS_CHECK_EQ_INT(io.remove_fn(io.user, "d/e"), TS_E_EXISTS);
    TS_CHECK_OK(io.remove_fn(io.user, "d/e/f"));
    TS_CHECK_OK(io.remove_fn(io.user, "d/e"));
    TS_CHECK_EQ_INT(io.remove_fn(io.user, "d/e"), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(io.remove_fn(io.user, "q/e"), TS_E_NOTFOUND);

    /* rename: same directory, across directories, over a file, dirs */
    TS_CHECK_OK(io.rename_fn(io.user, "d/one", "d/uno"));
    TS_CHECK_EQ_STR(listing(&io, "d", l, sizeof l), "two uno");
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "k"));
    TS_CHECK_OK(io.rename_fn(io.user, "d/uno", "k/one"));
    TS_CHECK_EQ_STR(rd(&io, "k/one"), "1");
    TS_CHECK_OK(io.rename_fn(io.user, "d/two", "k/one")); /* replaces */
    TS_CHECK_EQ_STR(rd(&io, "k/one"), "22");
    TS_CHECK_EQ_STR(listing(&io, "d", l, sizeof l), "");
    TS_CHECK_OK(io.rename_fn(io.user, "k/one", "k/one"));
    TS_CHECK_EQ_STR(rd(&io, "k/one"), "22");
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "k/none", "k/x"), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "k/one", "nodir/x"), TS_E_NOTFOUND);
    TS_CHECK_OK(io.rename_fn(io.user, "k", "d/k2"));
    TS_CHECK_EQ_STR(rd(&io, "d/k2/one"), "22");
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "d", "d/k2/inside"), TS_E_INVALID);
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "emptydir"));
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "emptydir", "d"), TS_E_EXISTS); /* d not empty */
    TS_CHECK_OK(io.rename_fn(io.user, "d", "emptydir"));                 /* over an empty dir */
    TS_CHECK_EQ_STR(rd(&io, "emptydir/k2/one"), "22");
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "emptydir/k2/one", "emptydir"), TS_E_INVALID);
    TS_CHECK_EQ_STR(listing(&io, "", l, sizeof l), "emptydir/");
    ts_io_mem_destroy(m);
}

static int remove_each_cb(void *ctx, const char *name, int is_dir)
{
    const ts_io *io = (const ts_io *)ctx;
    char path[64];
    (void)is_dir;
    snprintf(path, sizeof path, "dir/%s", name);
    io->remove_fn(io->user, path);
    io->write_file_atomic_fn(io->user, "dir/added-while-listing", "x", 1, 0);
    return 0;
}

TS_TEST(mem_list_callback_may_modify)
{
    ts_io_mem *m = NULL;
    ts_io io;
    char l[256];
    int i;
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &io);
    for (i = 0; i < 40; i++) {
        char p[32];
        snprintf(p, sizeof p, "dir/f%02d", i);
        TS_CHECK_OK(wr(&io, p, "x", 0));
    }
    TS_CHECK_OK(io.list_dir_fn(io.user, "dir", remove_each_cb, &io));
    TS_CHECK_EQ_STR(listing(&io, "dir", l, sizeof l), "added-while-listing");
    ts_io_mem_destroy(m);
}

TS_TEST(mem_counters)
{
    ts_io_mem *m = NULL;
    ts_io io;
    ts_io_counters a, d;
    char buf[16];
    size_t n;
    names_ctx nc;
    ts_io_stat st;
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &io);
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "d"));
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "d/f", "12345", 0));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.writes, 1);
    TS_CHECK_EQ_INT(d.bytes_written, 5);
    TS_CHECK_EQ_INT(d.file_syncs, 1);
    TS_CHECK_EQ_INT(d.dir_syncs, 1);
    TS_CHECK_EQ_INT(d.renames, 1);
    TS_CHECK_EQ_INT(d.mkdirs, 0);
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "d/f", "12345", TS_WRITE_DEFER_DIRSYNC));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.file_syncs, 1);
    TS_CHECK_EQ_INT(d.dir_syncs, 0);
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "d/f", "12345", TS_WRITE_NO_SYNC));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.writes, 1);
    TS_CHECK_EQ_INT(d.file_syncs, 0);
    TS_CHECK_EQ_INT(d.dir_syncs, 0);
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "n/m/f", "1", 0)); /* two new directories */
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.mkdirs, 2);
    TS_CHECK_EQ_INT(d.dir_syncs, 3);
    a = counters(&io);
    TS_CHECK_OK(io.read_file_fn(io.user, "d/f", buf, sizeof buf, &n));
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "d/f", buf, 2, &n), TS_E_RANGE);
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "d/none", buf, 2, &n), TS_E_NOTFOUND);
    memset(&nc, 0, sizeof nc);
    TS_CHECK_OK(io.list_dir_fn(io.user, "d", names_cb, &nc));
    TS_CHECK_OK(io.stat_fn(io.user, "d/f", &st));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "d"));
    TS_CHECK_OK(io.rename_fn(io.user, "d/f", "d/g"));
    TS_CHECK_OK(io.remove_fn(io.user, "d/g"));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.reads, 2);
    TS_CHECK_EQ_INT(d.bytes_read, 7);
    TS_CHECK_EQ_INT(d.lists, 1);
    TS_CHECK_EQ_INT(d.stats, 1);
    TS_CHECK_EQ_INT(d.dir_syncs, 1);
    TS_CHECK_EQ_INT(d.renames, 1);
    TS_CHECK_EQ_INT(d.removes, 1);
    TS_CHECK_EQ_INT(d.failures, 2);
    TS_CHECK_EQ_INT(d.writes, 0);
    /* the test helper counts nothing */
    a = counters(&io);
    TS_CHECK_OK(ts_io_mem_put(m, "p/q", "zz", 2));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.writes + d.mkdirs + d.dir_syncs + d.file_syncs, 0);
    ts_io_mem_destroy(m);
}

TS_TEST(mem_refuses_bad_paths)
{
    ts_io_mem *m = NULL;
    ts_io io;
    ts_io_counters c;
    uint64_t files;
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &io);
    TS_CHECK_OK(wr(&io, "ok", "fine", 0));
    check_all_refused(&io);
    c = counters(&io);
    TS_CHECK(c.failures >= 17 * 9);
    ts_io_mem_usage(m, &files, NULL);
    TS_CHECK_EQ_INT(files, 1);
    TS_CHECK_EQ_STR(rd(&io, "ok"), "fine");
    TS_CHECK_EQ_INT(ts_io_mem_put(m, "../x", "a", 1), TS_E_INVALID);
    ts_io_mem_destroy(m);
}

TS_TEST(mem_lock_is_shared_and_dies_in_a_crash)
{
    ts_io_mem *m = NULL;
    ts_io a, b;
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &a);
    ts_io_mem_vtable(m, &b);
    TS_CHECK_OK(a.lock_fn(a.user, 1));
    TS_CHECK_EQ_INT(b.lock_fn(b.user, 1), TS_E_LOCKED);
    TS_CHECK_EQ_INT(a.lock_fn(a.user, 1), TS_E_LOCKED);
    TS_CHECK_OK(a.lock_fn(a.user, 0));
    TS_CHECK_OK(a.lock_fn(a.user, 0));
    TS_CHECK_OK(b.lock_fn(b.user, 1));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0); /* the owner died */
    TS_CHECK_OK(a.lock_fn(a.user, 1));
    ts_io_mem_destroy(m);
}

/* ---- in-memory vtable: durability -------------------------------------- */

TS_TEST(mem_power_loss_drops_exactly_the_unsynced)
{
    ts_io_mem *m = NULL;
    ts_io io;
    char l[256];
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &io);
    TS_CHECK_OK(ts_io_mem_put(m, "d/x", "old", 3));
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "e"));

    /* a replace whose directory was not synced: the old content is back */
    TS_CHECK_OK(wr(&io, "d/x", "new", TS_WRITE_DEFER_DIRSYNC));
    TS_CHECK_OK(wr(&io, "d/y", "brand new", TS_WRITE_DEFER_DIRSYNC));
    TS_CHECK_EQ_STR(rd(&io, "d/x"), "new");
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/x"), "old");
    TS_CHECK_EQ_STR(rd(&io, "d/y"), "<missing>");

    /* ... and after sync_dir it survives */
    TS_CHECK_OK(wr(&io, "d/x", "new", TS_WRITE_DEFER_DIRSYNC));
    TS_CHECK_OK(wr(&io, "d/y", "brand new", TS_WRITE_DEFER_DIRSYNC));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "d"));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/x"), "new");
    TS_CHECK_EQ_STR(rd(&io, "d/y"), "brand new");

    /* a full replace is durable when it returns */
    TS_CHECK_OK(wr(&io, "d/x", "newer", 0));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/x"), "newer");

    /* a removed file reappears unless its directory was synced */
    TS_CHECK_OK(io.remove_fn(io.user, "d/y"));
    TS_CHECK_EQ_STR(rd(&io, "d/y"), "<missing>");
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/y"), "brand new");
    TS_CHECK_OK(io.remove_fn(io.user, "d/y"));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "d"));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/y"), "<missing>");

    /* a rename between directories is two changes, one per parent */
    TS_CHECK_OK(io.rename_fn(io.user, "d/x", "e/x"));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "e"));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/x"), "newer"); /* the unlink was not synced */
    TS_CHECK_EQ_STR(rd(&io, "e/x"), "newer");
    TS_CHECK_OK(io.remove_fn(io.user, "e/x"));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "e"));
    TS_CHECK_OK(io.rename_fn(io.user, "d/x", "e/x"));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "d"));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/x"), "<missing>"); /* lost in between: a real disk may do that */
    TS_CHECK_EQ_STR(rd(&io, "e/x"), "<missing>");

    /* a rename inside one directory is one atomic change */
    TS_CHECK_OK(wr(&io, "d/a", "A", 0));
    TS_CHECK_OK(io.rename_fn(io.user, "d/a", "d/b"));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(listing(&io, "d", l, sizeof l), "a");
    TS_CHECK_OK(io.rename_fn(io.user, "d/a", "d/b"));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "d"));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(listing(&io, "d", l, sizeof l), "b");

    /* unsynced bytes: with their entry synced they come back empty; with
       nothing synced the old file stays */
    TS_CHECK_OK(wr(&io, "d/b", "scratch", TS_WRITE_NO_SYNC));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/b"), "A");
    TS_CHECK_OK(wr(&io, "d/b", "scratch", TS_WRITE_NO_SYNC));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "d"));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/b"), "");

    /* directories are durable at once */
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "m/n/o"));
    TS_CHECK_OK(wr(&io, "w/v/u", "deep", TS_WRITE_DEFER_DIRSYNC));
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK(exists(&io, "m/n/o"));
    TS_CHECK(exists(&io, "w/v"));
    TS_CHECK_EQ_STR(rd(&io, "w/v/u"), "<missing>");
    /* the survivors are durable now: a second crash changes nothing */
    {
        char s1[2048], s2[2048];
        snapshot(&io, s1, sizeof s1);
        ts_io_mem_crash(m, TS_CRASH_RANDOM, 99);
        snapshot(&io, s2, sizeof s2);
        TS_CHECK_EQ_STR(s1, s2);
    }
    ts_io_mem_destroy(m);
}

/* TS_WRITE_SYNC_LATER: bytes synced, no entry (not even of a directory made
   on the way) until sync_all_fn, which makes every directory durable. */
TS_TEST(mem_sync_later_and_sync_all)
{
    ts_io_mem *m = NULL;
    ts_io io;
    ts_io_counters a, d;
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &io);
    TS_CHECK(io.sync_all_fn != NULL);
    TS_CHECK_OK(ts_io_mem_put(m, "d/x", "old", 3));
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "d/x", "new", TS_WRITE_SYNC_LATER));
    TS_CHECK_OK(wr(&io, "n/m/y", "made", TS_WRITE_SYNC_LATER));
    TS_CHECK_OK(io.remove_fn(io.user, "d/x"));
    TS_CHECK_OK(wr(&io, "d/x", "newer", TS_WRITE_SYNC_LATER));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.file_syncs, 3);
    TS_CHECK_EQ_INT(d.dir_syncs, 0);
    TS_CHECK_EQ_INT(d.mkdirs, 2);
    TS_CHECK_EQ_INT(d.fs_syncs, 0);
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    TS_CHECK_EQ_STR(rd(&io, "d/x"), "old");
    TS_CHECK_EQ_STR(rd(&io, "n/m/y"), "<missing>");
    TS_CHECK_EQ_STR(rd(&io, "n"), "<missing>");
    /* the same again, committed: everything survives, bytes intact */
    TS_CHECK_OK(wr(&io, "d/x", "new", TS_WRITE_SYNC_LATER));
    TS_CHECK_OK(wr(&io, "n/m/y", "made", TS_WRITE_SYNC_LATER));
    TS_CHECK_OK(wr(&io, "d/z", "scratch", TS_WRITE_NO_SYNC));
    a = counters(&io);
    TS_CHECK_OK(io.sync_all_fn(io.user));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.fs_syncs, 1);
    TS_CHECK_EQ_INT(d.dir_syncs, 0);
    ts_io_mem_crash(m, TS_CRASH_RANDOM, 7);
    TS_CHECK_EQ_STR(rd(&io, "d/x"), "new");
    TS_CHECK_EQ_STR(rd(&io, "n/m/y"), "made");
    TS_CHECK_EQ_STR(rd(&io, "d/z"), "scratch");   /* sync_all synced its bytes too */
    ts_io_mem_destroy(m);
}

TS_TEST(mem_random_crash_outcomes)
{
    int seed, seen_old = 0, seen_new = 0, seen_v1 = 0, seen_torn = 0, seen_intact = 0, seen_gone = 0;
    char big[1000];
    memset(big, 'S', sizeof big);
    big[sizeof big - 1] = 0;
    for (seed = 1; seed <= 300; seed++) {
        ts_io_mem *m = NULL;
        ts_io io;
        const char *x, *n;
        TS_CHECK_OK(ts_io_mem_create(NULL, &m));
        ts_io_mem_vtable(m, &io);
        TS_CHECK_OK(ts_io_mem_put(m, "d/x", "old", 3));
        TS_CHECK_OK(ts_io_mem_put(m, "d/n", "old-n", 5));
        TS_CHECK_OK(wr(&io, "d/x", "v1", TS_WRITE_DEFER_DIRSYNC));
        TS_CHECK_OK(wr(&io, "d/x", "v2", TS_WRITE_DEFER_DIRSYNC));
        TS_CHECK_OK(wr(&io, "s/synced", big, 0));
        TS_CHECK_OK(wr(&io, "u/nosync", "0123456789abcdefghij", TS_WRITE_NO_SYNC));
        TS_CHECK_OK(io.sync_dir_fn(io.user, "u"));
        TS_CHECK_OK(wr(&io, "d/n", "new-n", TS_WRITE_NO_SYNC));
        TS_CHECK_OK(io.remove_fn(io.user, "s/synced"));
        ts_io_mem_crash(m, TS_CRASH_RANDOM, (uint64_t)seed);
        x = rd(&io, "d/x");
        if (!strcmp(x, "old")) seen_old++;
        else if (!strcmp(x, "v1")) seen_v1++;
        else if (!strcmp(x, "v2")) seen_new++;
        else TS_CHECK(!"d/x is one of its versions");
        /* synced data is never torn: present whole or (its removal
           survived) gone */
        x = rd(&io, "s/synced");
        if (!strcmp(x, "<missing>")) seen_gone++;
        else TS_CHECK_EQ_STR(x, big);
        /* unsynced bytes whose entry is durable: intact or torn */
        {
            char buf[32];
            size_t len = 0;
            TS_CHECK_OK(io.read_file_fn(io.user, "u/nosync", buf, sizeof buf, &len));
            if (len == 20 && !memcmp(buf, "0123456789abcdefghij", 20)) seen_intact++;
            else {
                size_t i, k = 0;
                seen_torn++;
                TS_CHECK(len <= 20);
                while (k < len && buf[k] == "0123456789abcdefghij"[k]) k++;
                for (i = k; i < len; i++) TS_CHECK(buf[i] == 0); /* a zero tail or a cut */
            }
        }
        n = rd(&io, "d/n");
        TS_CHECK(!strcmp(n, "old-n") || strlen(n) <= 5);
        ts_io_mem_destroy(m);
    }
    TS_CHECK(seen_old > 0 && seen_v1 > 0 && seen_new > 0);
    TS_CHECK(seen_torn > 0 && seen_intact > 0);
    TS_CHECK(seen_gone > 0);
}

TS_TEST(mem_crash_after_partial_syncs_of_moved_dirs)
{
    /* sync "a" after moving b into a, while the durable b still holds a:
       the durable tree has a cycle b -> a -> b, as a real disk could */
    uint64_t seed;
    for (seed = 0; seed < 64; seed++) {
        ts_io_mem *m = NULL;
        ts_io io;
        char s[2048], l[256];
        tst_alloc ta;
        ts_allocator al;
        memset(&ta, 0, sizeof ta);
        al = make_alloc(&ta);
        TS_CHECK_OK(ts_io_mem_create(&al, &m));
        ts_io_mem_vtable(m, &io);
        TS_CHECK_OK(io.mkdir_p_fn(io.user, "b/a"));
        TS_CHECK_OK(wr(&io, "b/a/f", "F", 0));
        TS_CHECK_OK(io.rename_fn(io.user, "b/a", "a"));
        TS_CHECK_OK(io.rename_fn(io.user, "b", "a/b"));
        TS_CHECK_OK(io.sync_dir_fn(io.user, "a"));
        TS_CHECK_EQ_STR(listing(&io, "", l, sizeof l), "a/");
        TS_CHECK_EQ_STR(listing(&io, "a", l, sizeof l), "b/ f");
        ts_io_mem_crash(m, seed ? TS_CRASH_RANDOM : TS_CRASH_DROP_UNSYNCED, seed);
        snapshot(&io, s, sizeof s); /* terminates: no directory twice */
        /* DROP keeps the durable tree minus the second link to b; random
           crashes may also orphan everything, as fsck would */
        if (seed == 0) TS_CHECK_EQ_STR(s, "b/\nb/a/\nb/a/f=F\n");
        /* still a working file system */
        TS_CHECK_OK(wr(&io, "z/after", "ok", 0));
        TS_CHECK_EQ_STR(rd(&io, "z/after"), "ok");
        ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
        ts_io_mem_destroy(m);
        TS_CHECK_EQ_INT(ta.live_blocks, 0);
        TS_CHECK_EQ_INT(ta.bad_size, 0);
    }
}

/* A naive model of the durability rules for files in fixed directories:
   sync_dir(d) copies d's live entries to durable; a crash copies durable
   back, unsynced bytes come back empty. Random operations on the real
   thing must agree with it after every step. */
#define MODEL_DIRS 3
#define MODEL_NAMES 4
#define MODEL_N (MODEL_DIRS * MODEL_NAMES)
typedef struct model_file { int present, synced; char text[16]; } model_file;

static void model_path(int i, char *out)
{
    static const char *dirs[MODEL_DIRS] = {"", "p", "p/q"};
    sprintf(out, "%s%sn%d", dirs[i / MODEL_NAMES], i >= MODEL_NAMES ? "/" : "", i % MODEL_NAMES);
}

TS_TEST(mem_agrees_with_naive_model)
{
    static const char *dirs[MODEL_DIRS] = {"", "p", "p/q"};
    uint64_t seed;
    for (seed = 1; seed <= 6; seed++) {
        ts_io_mem *m = NULL;
        ts_io io;
        model_file live[MODEL_N], dur[MODEL_N];
        uint64_t rng = seed * 7919;
        int step, i, bad = 0;
        TS_CHECK_OK(ts_io_mem_create(NULL, &m));
        ts_io_mem_vtable(m, &io);
        TS_CHECK_OK(io.mkdir_p_fn(io.user, "p/q"));
        memset(live, 0, sizeof live);
        memset(dur, 0, sizeof dur);
        for (step = 0; step < 3000 && !bad; step++) {
            int op = (int)(ts__mem_rand(&rng) % 100), a = (int)(ts__mem_rand(&rng) % MODEL_N);
            int b = (int)(ts__mem_rand(&rng) % MODEL_N);
            char pa[32], pb[32];
            model_path(a, pa);
            model_path(b, pb);
            if (op < 40) {
                unsigned flags = (unsigned)(ts__mem_rand(&rng) % 3); /* 0, DEFER, NO_SYNC */
                model_file f;
                f.present = 1;
                f.synced = !(flags & TS_WRITE_NO_SYNC);
                sprintf(f.text, "s%d", step);
                TS_CHECK_OK(wr(&io, pa, f.text, flags));
                live[a] = f;
                if (!flags) {
                    int d = a / MODEL_NAMES;
                    for (i = d * MODEL_NAMES; i < (d + 1) * MODEL_NAMES; i++) dur[i] = live[i];
                }
            } else if (op < 55) {
                ts_result r = io.remove_fn(io.user, pa);
                TS_CHECK_EQ_INT(r, live[a].present ? TS_OK : TS_E_NOTFOUND);
                live[a].present = 0;
            } else if (op < 70) {
                ts_result r = io.rename_fn(io.user, pa, pb);
                TS_CHECK_EQ_INT(r, live[a].present ? TS_OK : TS_E_NOTFOUND);
                if (live[a].present && a != b) {
                    live[b] = live[a];
                    live[a].present = 0;
                }
            } else if (op < 85) {
                int d = a % MODEL_DIRS;
                TS_CHECK_OK(io.sync_dir_fn(io.user, dirs[d]));
                for (i = d * MODEL_NAMES; i < (d + 1) * MODEL_NAMES; i++) dur[i] = live[i];
            } else if (op < 92) {
                ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
                for (i = 0; i < MODEL_N; i++) {
                    live[i] = dur[i];
                    if (live[i].present && !live[i].synced) { live[i].text[0] = 0; live[i].synced = 1; }
                    dur[i] = live[i];
                }
            }
            for (i = 0; i < MODEL_N; i++) {
                char p[32];
                const char *got;
                model_path(i, p);
                got = rd(&io, p);
                if (strcmp(got, live[i].present ? live[i].text : "<missing>") != 0) {
                    printf("  seed %d step %d: %s is \"%s\", model says \"%s\"\n", (int)seed, step, p, got,
                           live[i].present ? live[i].text : "<missing>");
                    bad = 1;
                    break;
                }
            }
        }
        TS_CHECK(!bad);
        ts_io_mem_destroy(m);
    }
}

TS_TEST(mem_out_of_memory_everywhere)
{
    long fail_at;
    int completed = 0;
    for (fail_at = 1; fail_at < 2000 && !completed; fail_at++) {
        tst_alloc ta;
        ts_allocator al;
        ts_io_mem *m = NULL;
        ts_io io;
        ts_result r = TS_OK;
        int i;
        memset(&ta, 0, sizeof ta);
        ta.fail_at = fail_at;
        al = make_alloc(&ta);
        if (ts_io_mem_create(&al, &m) != TS_OK) {
            TS_CHECK_EQ_INT(ta.live_blocks, 0);
            continue;
        }
        ts_io_mem_vtable(m, &io);
        for (i = 0; i < 30 && r == TS_OK; i++) {
            char p[32], q[32];
            names_ctx nc;
            memset(&nc, 0, sizeof nc);
            snprintf(p, sizeof p, "d%d/e/f%d", i % 3, i);
            snprintf(q, sizeof q, "d%d/g%d", i % 3, i);
            if ((r = wr(&io, p, "some bytes", i % 2 ? TS_WRITE_DEFER_DIRSYNC : 0)) != TS_OK) break;
            if ((r = io.rename_fn(io.user, p, q)) != TS_OK) break;
            if ((r = io.mkdir_p_fn(io.user, "x/y/z")) != TS_OK) break;
            if ((r = io.list_dir_fn(io.user, "d0", names_cb, &nc)) != TS_OK) break;
            if (i % 5 == 4 && (r = io.remove_fn(io.user, q)) != TS_OK) break;
            if (i % 7 == 6) ts_io_mem_crash(m, TS_CRASH_RANDOM, (uint64_t)i);
        }
        TS_CHECK(r == TS_OK || r == TS_E_NOMEM);
        if (r == TS_OK) completed = 1;
        /* usable after the failure, and the crash needs no memory */
        ta.fail_at = 0;
        ts_io_mem_crash(m, TS_CRASH_RANDOM, (uint64_t)fail_at);
        TS_CHECK_OK(wr(&io, "after/oom", "fine", 0));
        TS_CHECK_EQ_STR(rd(&io, "after/oom"), "fine");
        ts_io_mem_destroy(m);
        TS_CHECK_EQ_INT(ta.live_blocks, 0);
        TS_CHECK_EQ_INT(ta.bad_size, 0);
    }
    TS_CHECK(completed);
}

TS_TEST(mem_tens_of_thousands_of_files)
{
    ts_io_mem *m = NULL;
    ts_io io;
    int i, total = (int)ts_test_count(30000, 200000), kept = 0;
    uint64_t files, bytes;
    char p[64];
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &io);
    /* batched: deferred syncs, one per directory at the end */
    for (i = 0; i < total; i++) {
        snprintf(p, sizeof p, "attachments-ca/%02x/%08d", i % 256, i);
        if (wr(&io, p, "payload", TS_WRITE_DEFER_DIRSYNC) != TS_OK) { TS_CHECK(0); break; }
        kept += i % 256 < 128;
    }
    for (i = 0; i < 128; i++) {
        snprintf(p, sizeof p, "attachments-ca/%02x", i);
        TS_CHECK_OK(io.sync_dir_fn(io.user, p));
    }
    /* one big directory, each write synced */
    for (i = 0; i < total / 3; i++) {
        snprintf(p, sizeof p, "flat/%08d", i);
        if (wr(&io, p, "x", 0) != TS_OK) { TS_CHECK(0); break; }
    }
    ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
    ts_io_mem_usage(m, &files, &bytes);
    TS_CHECK_EQ_INT(files, (uint64_t)(kept + total / 3));
    TS_CHECK_EQ_INT(bytes, (uint64_t)kept * 7 + (uint64_t)(total / 3));
    TS_CHECK_EQ_STR(rd(&io, "attachments-ca/00/00000000"), "payload");
    TS_CHECK_EQ_STR(rd(&io, "attachments-ca/ff/00000255"), "<missing>");
    ts_io_mem_destroy(m);
}

/* ---- the fault wrapper ------------------------------------------------------ */

/* A workload where each step is exactly one vtable operation; stops at the
   first failure and returns its step (0 if none), *r its result. */
static int workload(const ts_io *io, int steps, ts_result *res)
{
    char buf[64];
    size_t n;
    ts_io_stat st;
    names_ctx nc;
    int i;
    memset(&nc, 0, sizeof nc);
    *res = TS_OK;
    for (i = 1; i <= steps; i++) {
        ts_result r = TS_OK;
        switch (i) {
        case 1: r = io->lock_fn(io->user, 1); break;
        case 2: r = io->mkdir_p_fn(io->user, "a/b"); break;
        case 3: r = wr(io, "a/b/f1", "one", 0); break;
        case 4: r = wr(io, "a/b/f2", "two", TS_WRITE_DEFER_DIRSYNC); break;
        case 5: r = wr(io, "a/b/f1", "ONE", TS_WRITE_DEFER_DIRSYNC); break;
        case 6: r = io->sync_dir_fn(io->user, "a/b"); break;
        case 7: r = io->read_file_fn(io->user, "a/b/f1", buf, sizeof buf, &n); break;
        case 8: r = io->stat_fn(io->user, "a/b/f2", &st); break;
        case 9: r = io->list_dir_fn(io->user, "a/b", names_cb, &nc); break;
        case 10: r = io->rename_fn(io->user, "a/b/f2", "a/f2"); break;
        case 11: r = io->remove_fn(io->user, "a/b/f1"); break;
        case 12: r = io->sync_dir_fn(io->user, "a"); break;
        case 13: r = io->sync_dir_fn(io->user, "a/b"); break;
        case 14: r = wr(io, "c", "three", TS_WRITE_NO_SYNC); break;
        case 15: r = wr(io, "c", "four", 0); break;
        case 16: r = io->lock_fn(io->user, 0); break;
        default: return 0;
        }
        if (r != TS_OK) { *res = r; return i; }
    }
    return 0;
}
#define WORKLOAD_STEPS 16

TS_TEST(fault_fails_the_nth_operation)
{
    ts_io_mem *m = NULL;
    ts_io mem_io, io;
    ts_io_fault *f = NULL;
    ts_fault_plan plan;
    ts_io_counters c;
    TS_CHECK_OK(ts_io_mem_create(NULL, &m));
    ts_io_mem_vtable(m, &mem_io);
    TS_CHECK_EQ_INT(ts_io_fault_create(NULL, NULL, &f), TS_E_INVALID);
    TS_CHECK_OK(ts_io_fault_create(&mem_io, NULL, &f));
    ts_io_fault_vtable(f, &io);
    TS_CHECK_OK(wr(&io, "a", "1", 0));                 /* op 1 */
    memset(&plan, 0, sizeof plan);
    plan.fail_at = ts_io_fault_ops(f) + 2;             /* op 3 */
    plan.fail_count = 2;                               /* ... and 4 */
    plan.fail_with = TS_E_NOSPACE;
    ts_io_fault_set(f, &plan);
    TS_CHECK_OK(wr(&io, "b", "2", 0));                 /* op 2 */
    TS_CHECK_EQ_INT(wr(&io, "c", "3", 0), TS_E_NOSPACE);
    TS_CHECK_EQ_STR(rd(&mem_io, "c"), "<missing>");    /* nothing of it done */
    TS_CHECK_EQ_STR(rd(&io, "a"), "<error -102>");     /* op 4, a read */
    TS_CHECK_EQ_STR(rd(&io, "a"), "1");                /* op 5 */
    TS_CHECK_EQ_INT(ts_io_fault_ops(f), 5);
    TS_CHECK(!ts_io_fault_crashed(f));
    c = counters(&io);
    TS_CHECK_EQ_INT(c.failures, 3); /* 2 injected, and the inner read of "c" */
    TS_CHECK_EQ_INT(c.writes, 2);
    /* default error; stats_fn is not an operation */
    plan.fail_at = ts_io_fault_ops(f) + 1;
    plan.fail_count = 0;
    plan.fail_with = TS_OK;
    ts_io_fault_set(f, &plan);
    c = counters(&io);
    TS_CHECK_EQ_INT(io.sync_dir_fn(io.user, ""), TS_E_IO);
    TS_CHECK_OK(io.sync_dir_fn(io.user, ""));
    ts_io_fault_set(f, NULL);
    TS_CHECK_EQ_INT(io.caps, mem_io.caps);
    ts_io_fault_destroy(f);
    ts_io_mem_destroy(m);
}

TS_TEST(fault_can_fail_every_operation_in_turn)
{
    int n, total = 0;
    char want[4096], got[4096];
    /* the clean run: how many operations, and they all succeed */
    {
        ts_io_mem *m = NULL;
        ts_io mem_io, io;
        ts_io_fault *f = NULL;
        ts_result r;
        TS_CHECK_OK(ts_io_mem_create(NULL, &m));
        ts_io_mem_vtable(m, &mem_io);
        TS_CHECK_OK(ts_io_fault_create(&mem_io, NULL, &f));
        ts_io_fault_vtable(f, &io);
        TS_CHECK_EQ_INT(workload(&io, WORKLOAD_STEPS, &r), 0);
        total = (int)ts_io_fault_ops(f);
        TS_CHECK_EQ_INT(total, WORKLOAD_STEPS);
        ts_io_fault_destroy(f);
        ts_io_mem_destroy(m);
    }
    for (n = 1; n <= total; n++) {
        int k;
        for (k = 0; k < 2; k++) {
            ts_io_mem *m = NULL, *ref = NULL;
            ts_io mem_io, ref_io, io;
            ts_io_fault *f = NULL;
            ts_fault_plan plan;
            ts_result r, rr;
            tst_alloc ta;
            ts_allocator al;
            memset(&ta, 0, sizeof ta);
            al = make_alloc(&ta);
            TS_CHECK_OK(ts_io_mem_create(&al, &m));
            ts_io_mem_vtable(m, &mem_io);
            TS_CHECK_OK(ts_io_fault_create(&mem_io, &al, &f));
            ts_io_fault_vtable(f, &io);
            memset(&plan, 0, sizeof plan);
            plan.fail_at = (uint64_t)n;
            plan.fail_with = k ? TS_E_NOSPACE : TS_E_IO;
            ts_io_fault_set(f, &plan);
            /* exactly one failure surfaces, at operation n, with the error asked for */
            TS_CHECK_EQ_INT(workload(&io, WORKLOAD_STEPS, &r), n);
            TS_CHECK_EQ_INT(r, plan.fail_with);
            TS_CHECK_EQ_INT(counters(&io).failures, 1);
            /* and nothing of operation n was done: the state is that of
               the first n-1 operations */
            TS_CHECK_OK(ts_io_mem_create(NULL, &ref));
            ts_io_mem_vtable(ref, &ref_io);
            TS_CHECK_EQ_INT(workload(&ref_io, n - 1, &rr), 0);
            snapshot(&mem_io, got, sizeof got);
            snapshot(&ref_io, want, sizeof want);
            TS_CHECK_EQ_STR(got, want);
            /* the same after a power loss */
            ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
            ts_io_mem_crash(ref, TS_CRASH_DROP_UNSYNCED, 0);
            snapshot(&mem_io, got, sizeof got);
            snapshot(&ref_io, want, sizeof want);
            TS_CHECK_EQ_STR(got, want);
            ts_io_fault_destroy(f);
            ts_io_mem_destroy(m);
            ts_io_mem_destroy(ref);
            TS_CHECK_EQ_INT(ta.live_blocks, 0);
        }
    }
}

TS_TEST(fault_crash_at_every_step_keeps_what_was_synced)
{
    int n;
    for (n = 1; n <= WORKLOAD_STEPS + 1; n++) {
        ts_io_mem *m = NULL;
        ts_io mem_io, io;
        ts_io_fault *f = NULL;
        ts_fault_plan plan;
        ts_result r;
        int failed;
        char f1[64], f2[64];
        TS_CHECK_OK(ts_io_mem_create(NULL, &m));
        ts_io_mem_vtable(m, &mem_io);
        TS_CHECK_OK(ts_io_fault_create(&mem_io, NULL, &f));
        ts_io_fault_vtable(f, &io);
        memset(&plan, 0, sizeof plan);
        plan.fail_at = (uint64_t)n;
        plan.crash = 1;
        ts_io_fault_set(f, &plan);
        failed = workload(&io, WORKLOAD_STEPS, &r);
        if (n <= WORKLOAD_STEPS) {
            TS_CHECK_EQ_INT(failed, n);
            TS_CHECK_EQ_INT(r, TS_E_IO);
            TS_CHECK(ts_io_fault_crashed(f));
            /* a dead process: everything fails from now on */
            TS_CHECK_EQ_STR(rd(&io, "a/b/f1"), "<error -100>");
            TS_CHECK_EQ_INT(io.lock_fn(io.user, 0), TS_E_IO);
        } else {
            TS_CHECK_EQ_INT(failed, 0);
        }
        ts_io_mem_crash(m, TS_CRASH_DROP_UNSYNCED, 0);
        ts_io_fault_reset(f);
        TS_CHECK(!ts_io_fault_crashed(f));
        TS_CHECK_OK(io.lock_fn(io.user, 1)); /* the lock died with the process */
        /* what each completed step promised */
        snprintf(f1, sizeof f1, "%s", rd(&io, "a/b/f1"));
        snprintf(f2, sizeof f2, "%s", rd(&io, "a/b/f2"));
        if (n <= 3) TS_CHECK_EQ_STR(f1, "<missing>");
        else if (n <= 6) TS_CHECK_EQ_STR(f1, "one");      /* step 5 not synced yet */
        else if (n <= 13) TS_CHECK_EQ_STR(f1, "ONE");     /* removal at 11 synced at 13 */
        else TS_CHECK_EQ_STR(f1, "<missing>");
        if (n <= 6) TS_CHECK_EQ_STR(f2, "<missing>");
        else if (n <= 13) TS_CHECK_EQ_STR(f2, "two");     /* the unlink is synced at 13 */
        else TS_CHECK_EQ_STR(f2, "<missing>");
        TS_CHECK_EQ_STR(rd(&io, "a/f2"), n <= 12 ? "<missing>" : "two");
        TS_CHECK_EQ_STR(rd(&io, "c"), n <= 15 ? "<missing>" : "four");
        if (n >= 3) TS_CHECK(exists(&io, "a/b")); /* mkdir_p at step 2 */
        ts_io_fault_destroy(f);
        ts_io_mem_destroy(m);
    }
}

/* ---- POSIX vtable ------------------------------------------------------------ */

static char g_base[512];
static int g_base_made;

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        if (d) {
            while ((de = readdir(d)) != NULL) {
                char sub[1024];
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
                rm_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* A fresh, empty directory name under $TS_TEST_TMP (or a mkdtemp dir). */
static const char *scratch(const char *name, char *out, size_t cap)
{
    if (!g_base[0]) {
        const char *t = getenv("TS_TEST_TMP");
        if (t && t[0]) {
            snprintf(g_base, sizeof g_base, "%s/test_io", t);
            rm_tree(g_base);
            mkdir(g_base, 0777);
        } else {
            strcpy(g_base, "/tmp/ts_test_io_XXXXXX");
            if (!mkdtemp(g_base)) { perror("mkdtemp"); exit(1); }
            g_base_made = 1;
        }
    }
    snprintf(out, cap, "%s/%s", g_base, name);
    rm_tree(out);
    return out;
}

static int os_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void os_write(const char *path, const char *text)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return;
    fputs(text, fp);
    fclose(fp);
}

static const char *os_read(const char *path)
{
    static char buf[256];
    size_t n;
    FILE *fp = fopen(path, "rb");
    if (!fp) return "<missing>";
    n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = 0;
    fclose(fp);
    return buf;
}

/* Any name with ".tmp." anywhere under dir. */
static int has_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int found = 0;
    if (!d) return 0;
    while (!found && (de = readdir(d)) != NULL) {
        char sub[1024];
        struct stat st;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (strstr(de->d_name, ".tmp.")) found = 1;
        snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
        if (!found && lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) found = has_temp_files(sub);
    }
    closedir(d);
    return found;
}

TS_TEST(posix_basic_operations)
{
    char root[600], l[512], osp[700];
    ts_io_posix *p = NULL;
    ts_io io;
    ts_io_stat st;
    ts_error_info info;
    char buf[8];
    size_t n = 99;
    int i;
    scratch("basic/nested/root", root, sizeof root); /* missing parents: created */
    TS_CHECK_EQ_INT(ts_io_posix_create(NULL, NULL, &p), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts_io_posix_create("", NULL, &p), TS_E_INVALID);
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &p));
    ts_io_posix_vtable(p, &io);
    TS_CHECK_EQ_INT(io.caps, 0);
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "nope", buf, sizeof buf, &n), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(n, 0);
    TS_CHECK_EQ_INT(ts_io_posix_last_error(p, &info), TS_E_NOTFOUND);
    TS_CHECK(strstr(info.message, "nope") != NULL);
    TS_CHECK_OK(wr(&io, "a.txt", "hello world", 0));
    TS_CHECK_EQ_STR(rd(&io, "a.txt"), "hello world");
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "a.txt", buf, 5, &n), TS_E_RANGE);
    TS_CHECK_EQ_INT(n, 11);
    TS_CHECK(memcmp(buf, "hello", 5) == 0);
    for (i = 0; i < 20; i++) TS_CHECK_OK(wr(&io, "a.txt", i % 2 ? "odd" : "even", 0));
    TS_CHECK_EQ_STR(rd(&io, "a.txt"), "odd");
    TS_CHECK_OK(wr(&io, "empty", "", 0));
    TS_CHECK_EQ_STR(rd(&io, "empty"), "");
    TS_CHECK_OK(wr(&io, "x/y/z.json", "{}", TS_WRITE_DEFER_DIRSYNC));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "x/y"));
    TS_CHECK_OK(io.sync_dir_fn(io.user, ""));
    TS_CHECK_EQ_STR(rd(&io, "x/y/z.json"), "{}");
    snprintf(osp, sizeof osp, "%s/x/y/z.json", root);
    TS_CHECK_EQ_STR(os_read(osp), "{}");
    TS_CHECK_EQ_INT(wr(&io, "a.txt/sub", "no", 0), TS_E_EXISTS);
    TS_CHECK_EQ_STR(rd(&io, "x/y"), "<error -1>");
    TS_CHECK_EQ_INT(wr(&io, "x/y", "no", 0), TS_E_INVALID);
    /* big */
    {
        size_t big = 3u << 20, got = 0;
        unsigned char *data = (unsigned char *)malloc(big), *back = (unsigned char *)malloc(big);
        for (i = 0; i < (int)big; i++) data[i] = (unsigned char)(i * 7);
        TS_CHECK_OK(io.write_file_atomic_fn(io.user, "big.bin", data, big, 0));
        TS_CHECK_OK(io.read_file_fn(io.user, "big.bin", back, big, &got));
        TS_CHECK_EQ_INT(got, big);
        TS_CHECK(memcmp(data, back, big) == 0);
        free(data);
        free(back);
    }
    /* list, stat, mkdir_p, remove, rename */
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "d/e/f"));
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "d/e/f"));
    TS_CHECK_EQ_INT(io.mkdir_p_fn(io.user, "a.txt/q"), TS_E_EXISTS);
    TS_CHECK_EQ_INT(io.mkdir_p_fn(io.user, "a.txt"), TS_E_EXISTS);
    TS_CHECK_OK(wr(&io, "d/one", "1", 0));
    TS_CHECK_OK(wr(&io, "d/two", "22", 0));
    TS_CHECK_EQ_STR(listing(&io, "d", l, sizeof l), "e/ one two");
    TS_CHECK_EQ_STR(listing(&io, "", l, sizeof l), "a.txt big.bin d/ empty x/");
    TS_CHECK_EQ_STR(listing(&io, "", l, sizeof l), "a.txt big.bin d/ empty x/"); /* twice: fresh position */
    TS_CHECK_EQ_STR(listing(&io, "nope", l, sizeof l), "<error -101>");
    TS_CHECK_OK(io.stat_fn(io.user, "d/two", &st));
    TS_CHECK_EQ_INT(st.size, 2);
    TS_CHECK_EQ_INT(st.is_dir, 0);
    TS_CHECK(st.mtime_ms > 1500000000000ll);
    TS_CHECK_OK(io.stat_fn(io.user, "d/e", &st));
    TS_CHECK_EQ_INT(st.is_dir, 1);
    TS_CHECK_EQ_INT(io.stat_fn(io.user, "d/zz", &st), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(io.remove_fn(io.user, "d/e"), TS_E_EXISTS);
    TS_CHECK_OK(io.remove_fn(io.user, "d/e/f"));
    TS_CHECK_OK(io.remove_fn(io.user, "d/e"));
    TS_CHECK_EQ_INT(io.remove_fn(io.user, "d/e"), TS_E_NOTFOUND);
    TS_CHECK_OK(io.rename_fn(io.user, "d/one", "d/uno"));
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "k"));
    TS_CHECK_OK(io.rename_fn(io.user, "d/uno", "k/one"));
    TS_CHECK_OK(io.rename_fn(io.user, "d/two", "k/one"));
    TS_CHECK_EQ_STR(rd(&io, "k/one"), "22");
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "k/none", "k/x"), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "k/one", "nodir/x"), TS_E_NOTFOUND);
    TS_CHECK_OK(io.rename_fn(io.user, "k", "d/k2"));
    TS_CHECK_EQ_STR(rd(&io, "d/k2/one"), "22");
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "d", "d/k2/inside"), TS_E_INVALID);
    TS_CHECK(!has_temp_files(root));
    /* a FIFO planted in the store does not hang a read */
    snprintf(osp, sizeof osp, "%s/fifo", root);
    TS_CHECK(mkfifo(osp, 0600) == 0);
    TS_CHECK_EQ_STR(rd(&io, "fifo"), "<error -1>");
    ts_io_posix_destroy(p);
}

TS_TEST(posix_counters)
{
    char root[600];
    ts_io_posix *p = NULL;
    ts_io io;
    ts_io_counters a, d;
    scratch("counters", root, sizeof root);
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &p));
    ts_io_posix_vtable(p, &io);
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "d"));
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "d/f", "12345", 0));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.writes, 1);
    TS_CHECK_EQ_INT(d.bytes_written, 5);
    TS_CHECK_EQ_INT(d.file_syncs, 1);
    TS_CHECK_EQ_INT(d.dir_syncs, 1);
    TS_CHECK_EQ_INT(d.renames, 1);
    TS_CHECK_EQ_INT(d.mkdirs, 0);
    TS_CHECK_EQ_INT(d.failures, 0);
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "d/f", "12345", TS_WRITE_DEFER_DIRSYNC));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.file_syncs, 1);
    TS_CHECK_EQ_INT(d.dir_syncs, 0);
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "d/f", "12345", TS_WRITE_NO_SYNC));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.file_syncs, 0);
    TS_CHECK_EQ_INT(d.dir_syncs, 0);
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "n/m/f", "1", 0));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.mkdirs, 2);
    TS_CHECK_EQ_INT(d.dir_syncs, 3);
    a = counters(&io);
    TS_CHECK_OK(wr(&io, "s/t/f", "1", TS_WRITE_SYNC_LATER));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.mkdirs, 2);
    TS_CHECK_EQ_INT(d.file_syncs, 1);
    TS_CHECK_EQ_INT(d.dir_syncs, 0);
#ifdef __linux__
    TS_CHECK(io.sync_all_fn != NULL);
    a = counters(&io);
    TS_CHECK_OK(io.sync_all_fn(io.user));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.fs_syncs, 1);
    TS_CHECK_EQ_INT(d.dir_syncs, 0);
#endif
    a = counters(&io);
    TS_CHECK_EQ_STR(rd(&io, "d/f"), "12345");
    TS_CHECK_EQ_STR(rd(&io, "d/none"), "<missing>");
    TS_CHECK_OK(io.sync_dir_fn(io.user, "d"));
    TS_CHECK_OK(io.rename_fn(io.user, "d/f", "d/g"));
    TS_CHECK_OK(io.remove_fn(io.user, "d/g"));
    d = diff(a, counters(&io));
    TS_CHECK_EQ_INT(d.reads, 1);
    TS_CHECK_EQ_INT(d.bytes_read, 5);
    TS_CHECK_EQ_INT(d.dir_syncs, 1);
    TS_CHECK_EQ_INT(d.renames, 1);
    TS_CHECK_EQ_INT(d.removes, 1);
    TS_CHECK_EQ_INT(d.failures, 1);
    ts_io_posix_destroy(p);
}

TS_TEST(posix_refuses_bad_paths)
{
    char root[600];
    ts_io_posix *p = NULL;
    ts_io io;
    names_ctx nc;
    scratch("refuse/root", root, sizeof root);
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &p));
    ts_io_posix_vtable(p, &io);
    TS_CHECK_OK(wr(&io, "ok", "fine", 0));
    check_all_refused(&io);
    /* nothing appeared anywhere: the root holds "ok" only, its parent only root */
    memset(&nc, 0, sizeof nc);
    TS_CHECK_OK(io.list_dir_fn(io.user, "", names_cb, &nc));
    TS_CHECK_EQ_INT(nc.n, 1);
    {
        char parent[600];
        DIR *d;
        struct dirent *de;
        int count = 0;
        snprintf(parent, sizeof parent, "%s/refuse", g_base);
        d = opendir(parent);
        TS_CHECK(d != NULL);
        while (d && (de = readdir(d)) != NULL)
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) count++;
        if (d) closedir(d);
        TS_CHECK_EQ_INT(count, 1);
    }
    ts_io_posix_destroy(p);
}

TS_TEST(posix_symlinks_inside_the_store_are_not_followed)
{
    char root[600], out[600], path[700], osp[700];
    ts_io_posix *p = NULL;
    ts_io io;
    ts_io_stat st;
    names_ctx nc;
    char buf[64];
    size_t n;
    scratch("symlink_out", out, sizeof out);
    scratch("symlink_root", root, sizeof root);
    TS_CHECK(mkdir(out, 0777) == 0);
    snprintf(path, sizeof path, "%s/secret", out);
    os_write(path, "secret");
    snprintf(path, sizeof path, "%s/x", out);
    os_write(path, "outside x");
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &p));
    ts_io_posix_vtable(p, &io);
    TS_CHECK_OK(io.mkdir_p_fn(io.user, "d"));
    snprintf(osp, sizeof osp, "%s/evil", root);
    TS_CHECK(symlink(out, osp) == 0);                   /* a directory link */
    snprintf(osp, sizeof osp, "%s/d/evil2", root);
    TS_CHECK(symlink(out, osp) == 0);                   /* ... deeper down */
    snprintf(osp, sizeof osp, "%s/link", root);
    snprintf(path, sizeof path, "%s/secret", out);
    TS_CHECK(symlink(path, osp) == 0);                  /* a file link */

    TS_CHECK_EQ_INT(wr(&io, "evil/new", "pwned", 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(wr(&io, "evil/x", "pwned", 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(wr(&io, "d/evil2/new", "pwned", 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(wr(&io, "evil/sub/new", "pwned", 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(wr(&io, "link", "pwned", 0), TS_E_INVALID);
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "evil/x", buf, sizeof buf, &n), TS_E_INVALID);
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "d/evil2/x", buf, sizeof buf, &n), TS_E_INVALID);
    TS_CHECK_EQ_INT(io.read_file_fn(io.user, "link", buf, sizeof buf, &n), TS_E_INVALID);
    TS_CHECK_EQ_INT(io.stat_fn(io.user, "link", &st), TS_E_INVALID);
    TS_CHECK_EQ_INT(io.stat_fn(io.user, "evil/x", &st), TS_E_INVALID);
    TS_CHECK_EQ_INT(io.mkdir_p_fn(io.user, "evil/sub"), TS_E_INVALID);
    TS_CHECK_EQ_INT(io.mkdir_p_fn(io.user, "evil"), TS_E_INVALID);
    memset(&nc, 0, sizeof nc);
    TS_CHECK_EQ_INT(io.list_dir_fn(io.user, "evil", names_cb, &nc), TS_E_INVALID);
    TS_CHECK_EQ_INT(nc.n, 0);
    TS_CHECK_EQ_INT(io.sync_dir_fn(io.user, "evil"), TS_E_INVALID);
    TS_CHECK_EQ_INT(io.remove_fn(io.user, "evil/x"), TS_E_INVALID);
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "evil/x", "stolen"), TS_E_INVALID);
    TS_CHECK_OK(wr(&io, "mine", "m", 0));
    TS_CHECK_EQ_INT(io.rename_fn(io.user, "mine", "evil/planted"), TS_E_INVALID);
    /* nothing outside was written, moved or removed */
    snprintf(path, sizeof path, "%s/secret", out);
    TS_CHECK_EQ_STR(os_read(path), "secret");
    snprintf(path, sizeof path, "%s/x", out);
    TS_CHECK_EQ_STR(os_read(path), "outside x");
    snprintf(path, sizeof path, "%s/new", out);
    TS_CHECK(!os_exists(path));
    snprintf(path, sizeof path, "%s/sub", out);
    TS_CHECK(!os_exists(path));
    snprintf(path, sizeof path, "%s/planted", out);
    TS_CHECK(!os_exists(path));
    /* listing shows the links as entries; removing one removes the link only */
    {
        char l[256];
        TS_CHECK_EQ_STR(listing(&io, "", l, sizeof l), "d/ evil link mine");
    }
    TS_CHECK_OK(io.remove_fn(io.user, "link"));
    snprintf(path, sizeof path, "%s/secret", out);
    TS_CHECK_EQ_STR(os_read(path), "secret");
    TS_CHECK(!has_temp_files(root) && !has_temp_files(out));
    ts_io_posix_destroy(p);
}

/* The directory-descriptor cache: changes through the vtable and removals
   behind its back never leave a write going into a directory that is no
   longer at its path. */
TS_TEST(posix_directory_cache_follows_changes)
{
    char root[600], osp[700], osq[700], buf[32];
    ts_io_posix *p = NULL;
    ts_io io;
    size_t n = 0;
    int i;
    scratch("dcache_root", root, sizeof root);
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &p));
    ts_io_posix_vtable(p, &io);
    TS_CHECK_OK(wr(&io, "a/b/one", "1", 0));
    TS_CHECK_OK(io.sync_dir_fn(io.user, "a/b"));
    /* renamed through the vtable: the old path is a new directory */
    TS_CHECK_OK(io.rename_fn(io.user, "a/b", "a/c"));
    TS_CHECK_OK(wr(&io, "a/b/two", "2", 0));
    snprintf(osp, sizeof osp, "%s/a/b/two", root);
    TS_CHECK(os_exists(osp));
    snprintf(osp, sizeof osp, "%s/a/c/two", root);
    TS_CHECK(!os_exists(osp));
    TS_CHECK_OK(io.read_file_fn(io.user, "a/c/one", buf, sizeof buf, &n));
    TS_CHECK(n == 1 && buf[0] == '1');
    /* removed through the vtable, then made again */
    TS_CHECK_OK(io.remove_fn(io.user, "a/b/two"));
    TS_CHECK_OK(io.remove_fn(io.user, "a/b"));
    TS_CHECK_OK(wr(&io, "a/b/three", "3", 0));
    snprintf(osp, sizeof osp, "%s/a/b/three", root);
    TS_CHECK(os_exists(osp));
    /* removed behind the vtable's back and made again by someone else */
    snprintf(osp, sizeof osp, "%s/a/b/three", root);
    TS_CHECK(unlink(osp) == 0);
    snprintf(osp, sizeof osp, "%s/a/b", root);
    TS_CHECK(rmdir(osp) == 0);
    TS_CHECK(mkdir(osp, 0777) == 0);
    TS_CHECK_OK(wr(&io, "a/b/four", "4", 0));
    snprintf(osp, sizeof osp, "%s/a/b/four", root);
    TS_CHECK(os_exists(osp));
    /* replaced by a symbolic link behind its back: refused, not followed */
    snprintf(osp, sizeof osp, "%s/a/b/four", root);
    TS_CHECK(unlink(osp) == 0);
    snprintf(osp, sizeof osp, "%s/a/b", root);
    TS_CHECK(rmdir(osp) == 0);
    snprintf(osq, sizeof osq, "%s/a/c", root);
    TS_CHECK(symlink(osq, osp) == 0);
    TS_CHECK_EQ_INT(wr(&io, "a/b/five", "5", 0), TS_E_INVALID);
    /* more directories than the cache holds, used round robin */
    for (i = 0; i < 40; i++) {
        char path[64];
        snprintf(path, sizeof path, "m/d%02d/f", i % 20);
        TS_CHECK_OK(wr(&io, path, "x", 0));
        TS_CHECK_OK(io.read_file_fn(io.user, path, buf, sizeof buf, &n));
        TS_CHECK(n == 1 && buf[0] == 'x');
    }
    ts_io_posix_destroy(p);
}

TS_TEST(posix_lock_conflicts_in_and_across_processes)
{
    char root[600];
    ts_io_posix *p1 = NULL, *p2 = NULL;
    ts_io a, b;
    pid_t pid;
    int status = -1, round;
    scratch("lock", root, sizeof root);
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &p1));
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &p2));
    ts_io_posix_vtable(p1, &a);
    ts_io_posix_vtable(p2, &b);
    TS_CHECK_OK(a.lock_fn(a.user, 1));
    TS_CHECK_EQ_INT(b.lock_fn(b.user, 1), TS_E_LOCKED); /* same process, second open */
    TS_CHECK_EQ_INT(a.lock_fn(a.user, 1), TS_E_LOCKED); /* taken twice */
    for (round = 0; round < 2; round++) {
        /* another process: locked out while we hold it, let in after */
        fflush(stdout);
        pid = fork();
        if (pid == 0) {
            ts_io_posix *c = NULL;
            ts_io io;
            ts_result r;
            if (ts_io_posix_create(root, NULL, &c) != TS_OK) _exit(2);
            ts_io_posix_vtable(c, &io);
            r = io.lock_fn(io.user, 1);
            _exit(r == TS_E_LOCKED ? 10 : r == TS_OK ? 11 : 12);
        }
        TS_CHECK(pid > 0);
        waitpid(pid, &status, 0);
        TS_CHECK(WIFEXITED(status));
        TS_CHECK_EQ_INT(WEXITSTATUS(status), round == 0 ? 10 : 11);
        if (round == 0) TS_CHECK_OK(a.lock_fn(a.user, 0));
    }
    TS_CHECK_OK(a.lock_fn(a.user, 0)); /* not held: fine */
    TS_CHECK_OK(b.lock_fn(b.user, 1));
    TS_CHECK_EQ_INT(a.lock_fn(a.user, 1), TS_E_LOCKED);
    ts_io_posix_destroy(p2); /* releases */
    TS_CHECK_OK(a.lock_fn(a.user, 1));
    ts_io_posix_destroy(p1);
}

TS_TEST(posix_failed_write_leaves_old_file_and_no_temp)
{
    char root[600];
    ts_io_posix *p = NULL;
    ts_io io;
    struct rlimit old, small;
    char *data;
    ts_result r;
    ts_error_info info;
    scratch("failwrite", root, sizeof root);
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &p));
    ts_io_posix_vtable(p, &io);
    TS_CHECK_OK(wr(&io, "d/f", "old", 0));
    data = (char *)malloc(100000);
    memset(data, 'n', 100000);
    /* the file size limit makes write() stop short, then fail (EFBIG) */
    signal(SIGXFSZ, SIG_IGN);
    TS_CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    small = old;
    small.rlim_cur = 4096;
    TS_CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
    r = io.write_file_atomic_fn(io.user, "d/f", data, 100000, 0);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_DFL);
    TS_CHECK_EQ_INT(r, TS_E_IO);
    TS_CHECK_EQ_INT(ts_io_posix_last_error(p, &info), TS_E_IO);
    TS_CHECK(strstr(info.message, "write d/f") != NULL);
    TS_CHECK_EQ_STR(rd(&io, "d/f"), "old");
    TS_CHECK(!has_temp_files(root));
    TS_CHECK_EQ_INT(counters(&io).failures, 1);
    TS_CHECK_OK(io.write_file_atomic_fn(io.user, "d/f", data, 100000, 0));
    free(data);
    ts_io_posix_destroy(p);
}

TS_TEST(posix_errno_mapping)
{
    TS_CHECK_EQ_INT(ts__px_errno(ENOSPC), TS_E_NOSPACE);
    TS_CHECK_EQ_INT(ts__px_errno(EDQUOT), TS_E_NOSPACE);
    TS_CHECK_EQ_INT(ts__px_errno(ENOENT), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts__px_errno(ENOTDIR), TS_E_NOTFOUND);
    TS_CHECK_EQ_INT(ts__px_errno(ENOTEMPTY), TS_E_EXISTS);
    TS_CHECK_EQ_INT(ts__px_errno(ELOOP), TS_E_INVALID);
    TS_CHECK_EQ_INT(ts__px_errno(EIO), TS_E_IO);
    TS_CHECK_EQ_INT(ts__px_errno(EROFS), TS_E_IO);
}

TS_TEST(posix_under_the_fault_wrapper)
{
    char root[600];
    ts_io_posix *p = NULL;
    ts_io px, io;
    ts_io_fault *f = NULL;
    ts_fault_plan plan;
    scratch("fault", root, sizeof root);
    TS_CHECK_OK(ts_io_posix_create(root, NULL, &p));
    ts_io_posix_vtable(p, &px);
    TS_CHECK_OK(ts_io_fault_create(&px, NULL, &f));
    ts_io_fault_vtable(f, &io);
    TS_CHECK_OK(wr(&io, "f", "old", 0));
    memset(&plan, 0, sizeof plan);
    plan.fail_at = ts_io_fault_ops(f) + 1;
    plan.fail_with = TS_E_NOSPACE;
    ts_io_fault_set(f, &plan);
    TS_CHECK_EQ_INT(wr(&io, "f", "new", 0), TS_E_NOSPACE);
    TS_CHECK_EQ_STR(rd(&io, "f"), "old");
    TS_CHECK_EQ_INT(counters(&io).failures, 1);
    TS_CHECK_EQ_INT(counters(&io).writes, 1);
    ts_io_fault_destroy(f);
    ts_io_posix_destroy(p);
}

int main(void)
{
    TS_RUN(helpers_check_before_calling);
    TS_RUN(mem_read_write_range_notfound);
    TS_RUN(mem_dirs_list_stat_remove_rename);
    TS_RUN(mem_list_callback_may_modify);
    TS_RUN(mem_counters);
    TS_RUN(mem_refuses_bad_paths);
    TS_RUN(mem_lock_is_shared_and_dies_in_a_crash);
    TS_RUN(mem_power_loss_drops_exactly_the_unsynced);
    TS_RUN(mem_sync_later_and_sync_all);
    TS_RUN(mem_random_crash_outcomes);
    TS_RUN(mem_crash_after_partial_syncs_of_moved_dirs);
    TS_RUN(mem_agrees_with_naive_model);
    TS_RUN(mem_out_of_memory_everywhere);
    TS_RUN(mem_tens_of_thousands_of_files);
    TS_RUN(fault_fails_the_nth_operation);
    TS_RUN(fault_can_fail_every_operation_in_turn);
    TS_RUN(fault_crash_at_every_step_keeps_what_was_synced);
    TS_RUN(posix_basic_operations);
    TS_RUN(posix_counters);
    TS_RUN(posix_refuses_bad_paths);
    TS_RUN(posix_symlinks_inside_the_store_are_not_followed);
    TS_RUN(posix_directory_cache_follows_changes);
    TS_RUN(posix_lock_conflicts_in_and_across_processes);
    TS_RUN(posix_failed_write_leaves_old_file_and_no_temp);
    TS_RUN(posix_errno_mapping);
    TS_RUN(posix_under_the_fault_wrapper);
    if (g_base_made) rm_tree(g_base);
    return ts_test_report("io");
}
