/* taskstore.h - v0.1.0 - stores recorded work sessions: chunks, attachments, search. License at end of file.

   Do this:
      #define TASKSTORE_IMPLEMENTATION
   before you include this file in *one* C or C++ file to create the implementation.
   Everywhere else, just #include "taskstore.h".

   Optional, in that same file: #define TASKSTORE_STB_ZLIB (deflate through
   stb_image/stb_image_write) and/or TASKSTORE_WEBP (PNG/JPEG -> WebP through
   stb_image + libwebp; link -lwebp).

TABLE OF CONTENTS
   QUICK START
   CONFIGURATION
   MEMORY
   ERRORS AND LOGGING
   I/O VTABLE CONTRACT
   DURABILITY
   THREADS AND TICK
   LIMITS
   ON-DISK FORMAT AND MIGRATION
   WHAT TASKSTORE DOES NOT DO
   RECENT CHANGES
   LICENSE (at the end of the file)

QUICK START
   @@QUICKSTART@@

CONFIGURATION
   Macros; "impl" means it only matters in the file that defines
   TASKSTORE_IMPLEMENTATION, "all" means define it identically everywhere.

   TASKSTORE_IMPLEMENTATION   impl  compile the implementation into this file
   TASKSTORE_STATIC           all   every function static (embed in another library)
   TASKSTORE_API              all   declaration prefix (default: extern)
   TASKSTORE_DLL              all   dllexport/dllimport on Windows
   TASKSTORE_MALLOC(sz,u)     impl  default allocator, with user context u;
   TASKSTORE_REALLOC(p,o,n,u) impl    define all three or none (o: old size)
   TASKSTORE_FREE(p,sz,u)     impl
   TASKSTORE_ASSERT(x)        impl  caller-contract checks (default: assert)
   TASKSTORE_NO_STDIO         impl  drop the POSIX/Win32 file vtable
   TASKSTORE_NO_ERROR_STRINGS impl  ts_result_str() returns "" (smaller binary)
   TASKSTORE_DEBUG            impl  extra internal checks (default: on unless NDEBUG)
   TASKSTORE_MAX_*            impl  hard limits on hostile input, see LIMITS
   TASKSTORE_STB_ZLIB         impl  built-in deflate codec (needs stb headers)
   TASKSTORE_WEBP             impl  built-in WebP conversion (needs libwebp)

   A zero-filled config struct means "all defaults" everywhere in the API; the
   *_config_default() functions return the same defaults filled in.

MEMORY
   Every allocation goes through a ts_allocator {alloc_fn, realloc_fn,
   free_fn, user}; sizes are always passed back to realloc_fn and free_fn so
   arena and pool allocators work. A NULL allocator (or NULL functions) means
   TASKSTORE_MALLOC/REALLOC/FREE, which default to malloc/realloc/free.
   Allocation failure never aborts: the call returns TS_E_NOMEM, leaks
   nothing, and the object stays usable.

ERRORS AND LOGGING
   Every fallible call returns ts_result: TS_OK (0), TS_DONE (1, "no more
   items", not an error) or a negative code grouped in ranges: generic (-1..),
   I/O (-100..), format (-200..), state (-300..). ts_result_str() names a code.
   Objects (store, queue, index, CA store, ...) keep the last failure with a
   message and the implementation line: ts_<object>_last_error(). A logger in
   the config, fn(user, level, code, message, line), sees every failure as it
   happens; with none installed the library is silent. Corrupt input is
   TS_E_CORRUPT with the path in the message, never an assert or a crash.

I/O VTABLE CONTRACT
   @@IO@@

DURABILITY
   @@DURABILITY@@

THREADS AND TICK
   The library creates no threads and takes no locks. One object (a store, a
   cache, a queue) must be used from one thread at a time; separate objects on
   separate threads are fine (there are no globals). Background work runs only
   inside ts_store_tick() (every frame) and ts_store_idle() (when the app is
   idle), each given a time budget in microseconds.

LIMITS
   @@LIMITS@@

ON-DISK FORMAT AND MIGRATION
   @@FORMAT@@

WHAT TASKSTORE DOES NOT DO
   - no threads, no locks, no global state;
   - no in-place edits of live files: every file is replaced whole, atomically;
   - no network, no SQL, no schema: records are JSON objects kept verbatim.

RECENT CHANGES
   0.1.0  (2026-11-21) first version: foundation (results, allocator, JSON,
          SHA-256, file vtables).
*/
#if defined(TASKSTORE_IMPLEMENTATION) && !defined(_WIN32) && \
    !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE) && !defined(_GNU_SOURCE)
/* The POSIX file vtable needs fsync, rename, opendir... which strict C99
   modes hide; this must come before the first system header. */
#define _POSIX_C_SOURCE 200809L
#endif

#ifndef TASKSTORE_H_INCLUDED
#define TASKSTORE_H_INCLUDED

#include <stddef.h> /* size_t */
#include <stdint.h> /* uint8_t, uint32_t, uint64_t, int64_t */

#define TASKSTORE_VERSION_MAJOR 0
#define TASKSTORE_VERSION_MINOR 1
#define TASKSTORE_VERSION_PATCH 0
#define TASKSTORE_VERSION_STRING "0.1.0"

#ifndef TASKSTORE_API
#  ifdef TASKSTORE_STATIC
#    define TASKSTORE_API static
#  elif defined(_WIN32) && defined(TASKSTORE_DLL) && defined(TASKSTORE_IMPLEMENTATION)
#    define TASKSTORE_API __declspec(dllexport)
#  elif defined(_WIN32) && defined(TASKSTORE_DLL)
#    define TASKSTORE_API __declspec(dllimport)
#  else
#    define TASKSTORE_API extern
#  endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================== */
/* >>api_base: results, allocator, logging, version                         */
/* ======================================================================== */

/* One list of every result code with its message; ts_result and
   ts_result_str() are both generated from it. */
#define TS_RESULT_LIST(X)                                                      \
    X(TS_OK,           0,   "ok")                                              \
    X(TS_DONE,         1,   "no more items")                                   \
    X(TS_E_INVALID,   -1,   "invalid argument")                                \
    X(TS_E_NOMEM,     -2,   "out of memory")                                   \
    X(TS_E_NOTIMPL,   -3,   "not implemented by this vtable or build")         \
    X(TS_E_RANGE,     -4,   "value or buffer out of range")                    \
    X(TS_E_IO,        -100, "I/O error")                                       \
    X(TS_E_NOTFOUND,  -101, "not found")                                       \
    X(TS_E_NOSPACE,   -102, "no space left on device")                         \
    X(TS_E_EXISTS,    -103, "already exists")                                  \
    X(TS_E_CORRUPT,   -200, "corrupt or malformed data")                       \
    X(TS_E_VERSION,   -201, "unsupported format version")                      \
    X(TS_E_TOOBIG,    -202, "input exceeds a configured limit")                \
    X(TS_E_LOCKED,    -300, "store is locked by another owner")                \
    X(TS_E_BUSY,      -301, "queue is full")                                   \
    X(TS_E_READONLY,  -302, "store is open read-only")                         \
    X(TS_E_CANCELLED, -303, "cancelled")                                       \
    X(TS_E_STATE,     -304, "call not valid in this state")

typedef enum ts_result {
#define TS__RESULT_ENUM(name, value, text) name = value,
    TS_RESULT_LIST(TS__RESULT_ENUM)
#undef TS__RESULT_ENUM
    TS_RESULT_END_ = 2
} ts_result;

/* The short static description of a result code; never NULL. */
TASKSTORE_API const char *ts_result_str(ts_result r);

/* "0.1.0"; same as TASKSTORE_VERSION_STRING of the implementation. */
TASKSTORE_API const char *ts_version(void);

/* Memory. Sizes are passed back to realloc_fn and free_fn (free_fn gets the
   size the block was allocated or last reallocated with). NULL functions mean
   the TASKSTORE_MALLOC/REALLOC/FREE defaults. */
typedef struct ts_allocator {
    void *(*alloc_fn)(size_t size, void *user);
    void *(*realloc_fn)(void *ptr, size_t old_size, size_t new_size, void *user);
    void  (*free_fn)(void *ptr, size_t size, void *user);
    void  *user;
} ts_allocator;

typedef enum ts_log_level {
    TS_LOG_ERROR = 0, TS_LOG_WARN = 1, TS_LOG_INFO = 2, TS_LOG_DEBUG = 3
} ts_log_level;

/* Called on every failure (level ERROR) and on notable events; message may
   be NULL; line is the implementation line that raised it. May be called from
   inside any library call, so it must not call back into the same object. */
typedef struct ts_logger {
    void (*log_fn)(void *user, ts_log_level level, ts_result code,
                   const char *message, int line);
    void *user;
} ts_logger;

/* The last failure an object saw. message is always NUL-terminated. */
typedef struct ts_error_info {
    ts_result code;
    int line;
    char message[256];
} ts_error_info;

/* ======================================================================== */
/* >>api_sha256: SHA-256 (FIPS 180-4), streaming and one-shot               */
/* ======================================================================== */

/* Streaming SHA-256 state. Treat the fields as private; the struct is public
   only so it can live on the stack. Copying an initialized or partly fed
   context is allowed (it forks the hash). */
typedef struct ts_sha256 {
    uint32_t state[8];          /* chaining value H0..H7 */
    uint64_t total;             /* bytes fed so far */
    unsigned char block[64];    /* pending partial block */
    size_t block_len;           /* bytes in block, 0..63 */
    int accel;                  /* 1: SHA-NI compression, 0: portable C */
} ts_sha256;

/* Starts a hash. ctx (out) is fully overwritten. Picks the fastest
   compression the CPU offers (see ts_sha256_accelerated). */
TASKSTORE_API void ts_sha256_init(ts_sha256 *ctx);

/* Feeds n bytes at data (in; may be NULL when n == 0). Any split of the
   input gives the same digest as one call. */
TASKSTORE_API void ts_sha256_update(ts_sha256 *ctx, const void *data, size_t n);

/* Finishes the hash and writes the 32-byte digest to out. The context is
   wiped afterwards: call ts_sha256_init again before reusing it. */
TASKSTORE_API void ts_sha256_final(ts_sha256 *ctx, unsigned char out[32]);

/* One shot: out = SHA-256 of the n bytes at data (data may be NULL if n == 0). */
TASKSTORE_API void ts_sha256_buffer(const void *data, size_t n, unsigned char out[32]);

/* Writes the digest as 64 lowercase hex digits plus a NUL to out (the form
   used in CAS paths and JSON). */
TASKSTORE_API void ts_sha256_hex(const unsigned char digest[32], char out[65]);

/* 1 when new contexts use the x86-64 SHA extensions (SHA-NI), 0 when they
   use the portable C code (other CPUs, other compilers, or no SHA-NI). */
TASKSTORE_API int ts_sha256_accelerated(void);

/* ======================================================================== */
/* >>api_io: the file-I/O vtable                                             */
/* ======================================================================== */

/* The library reads and writes whole files only: every object it stores is
   small enough to be replaced whole, so the vtable has no open/seek/write of
   a live file, and no file is ever modified in place.

   Paths are relative to the store root, use '/', and are validated by the
   library before any callback sees them (no absolute paths, no "." or ".."
   components, no backslashes, no control bytes).

   Every callback returns TS_OK or a negative ts_result: TS_E_NOTFOUND when
   the path does not exist, TS_E_NOSPACE for ENOSPC, TS_E_IO for other
   failures. Out-parameters are set even on failure. A NULL callback makes the
   library return TS_E_NOTIMPL for the operation that needs it. */

/* Flags of write_file_atomic_fn. */
enum {
    /* Leave the parent directory unsynced: the caller batches several
       replaces in one directory and calls sync_dir_fn once at the end. The
       file's own data is still synced before the rename. */
    TS_WRITE_DEFER_DIRSYNC = 1 << 0,
    /* Skip every sync (scratch files whose loss after a crash is harmless). */
    TS_WRITE_NO_SYNC = 1 << 1
};

/* Capability bits of ts_io.caps. */
enum {
    TS_IO_CAP_NO_DURABILITY = 1 << 0, /* nothing survives a crash (RAM backend) */
    TS_IO_CAP_NO_DIRSYNC    = 1 << 1  /* directory syncs are no-ops */
};

typedef struct ts_io_stat {
    uint64_t size;      /* bytes (0 for directories) */
    int64_t  mtime_ms;  /* modification time, ms since the epoch, or 0 */
    int      is_dir;
} ts_io_stat;

/* What a vtable did, counted by the reference vtables (and any vtable that
   implements stats_fn). Sync budgets in the docs and tests use these. */
typedef struct ts_io_counters {
    uint64_t reads, bytes_read;
    uint64_t writes, bytes_written;  /* atomic replaces */
    uint64_t file_syncs, dir_syncs;
    uint64_t renames, removes, mkdirs, lists, stats;
    uint64_t failures;               /* calls that returned an error */
} ts_io_counters;

/* Called once per directory entry (name only, no path); return non-zero to
   stop the listing early. Names "." and ".." are never reported. */
typedef int (*ts_io_list_cb)(void *ctx, const char *name, int is_dir);

#define TS_IO_VERSION 1

typedef struct ts_io {
    int version;            /* TS_IO_VERSION: lets the struct grow compatibly */
    unsigned caps;          /* TS_IO_CAP_* */
    void *user;             /* passed to every callback */

    /* Reads the whole file into buf (capacity cap). *size_out is always the
       file's full size, even when it is larger than cap; then the call
       returns TS_E_RANGE and buf holds the first cap bytes. */
    ts_result (*read_file_fn)(void *user, const char *path, void *buf, size_t cap,
                              size_t *size_out);
    /* Replaces path with data atomically: a reader (or a crash) sees either
       the old file or the new one, never a mix. Default protocol: write
       path.tmp.N, fsync it, rename over path, fsync the directory (unless
       TS_WRITE_DEFER_DIRSYNC). Creates missing parent directories. */
    ts_result (*write_file_atomic_fn)(void *user, const char *path, const void *data,
                                      size_t len, unsigned flags);
    ts_result (*remove_fn)(void *user, const char *path);     /* file or empty dir */
    ts_result (*rename_fn)(void *user, const char *from, const char *to);
    ts_result (*mkdir_p_fn)(void *user, const char *path);     /* durable when it returns */
    ts_result (*list_dir_fn)(void *user, const char *path, ts_io_list_cb cb, void *ctx);
    ts_result (*stat_fn)(void *user, const char *path, ts_io_stat *out);
    ts_result (*sync_dir_fn)(void *user, const char *path);   /* "" is the root */
    /* Takes (lock=1) or releases (lock=0) the store's single-owner lock;
       TS_E_LOCKED when another owner holds it. NULL means no locking. */
    ts_result (*lock_fn)(void *user, int lock);
    /* Copies the vtable's counters; NULL if it does not count. */
    ts_result (*stats_fn)(void *user, ts_io_counters *out);
} ts_io;

/* Reads the counters of any vtable that has stats_fn (zeroes otherwise). */
TASKSTORE_API ts_result ts_io_counters_get(const ts_io *io, ts_io_counters *out);

/* The in-memory vtable: a whole file system in RAM, for tests, fuzzing and
   users who want a RAM store. It models what a disk guarantees: data and
   directory entries become durable only when synced, so ts_io_mem_crash()
   can throw away exactly what a power loss may lose. */
typedef struct ts_io_mem ts_io_mem;

TASKSTORE_API ts_result ts_io_mem_create(const ts_allocator *alloc, ts_io_mem **out);
TASKSTORE_API void      ts_io_mem_destroy(ts_io_mem *mem);
/* Fills *io with callbacks over mem (valid until mem is destroyed). */
TASKSTORE_API void      ts_io_mem_vtable(ts_io_mem *mem, ts_io *io);

typedef enum ts_crash_mode {
    TS_CRASH_DROP_UNSYNCED = 0, /* keep exactly what was made durable */
    TS_CRASH_RANDOM = 1         /* each unsynced change independently survives,
                                   vanishes or (for file data) is torn */
} ts_crash_mode;

/* Simulates a power loss: the live file system becomes what survives per mode
   (seed picks the random choices). Then the store is reopened over it. */
TASKSTORE_API void ts_io_mem_crash(ts_io_mem *mem, ts_crash_mode mode, uint64_t seed);

/* Test helpers: write/read a file directly, bypassing counters and sync
   modelling (the bytes are made durable at once). */
TASKSTORE_API ts_result ts_io_mem_put(ts_io_mem *mem, const char *path, const void *data, size_t len);
/* Total bytes and files currently live. */
TASKSTORE_API void ts_io_mem_usage(const ts_io_mem *mem, uint64_t *files, uint64_t *bytes);

/* The fault-injecting wrapper around any vtable. Operations are numbered
   from 1 in call order (every callback counts, stats_fn excepted). */
typedef struct ts_io_fault ts_io_fault;

typedef struct ts_fault_plan {
    uint64_t fail_at;        /* fail operation number fail_at (0 = never) */
    uint64_t fail_count;     /* ... and this many after it (0 means 1) */
    ts_result fail_with;     /* TS_E_IO (default when 0) or TS_E_NOSPACE */
    /* When set, the failing operation is the moment power is lost: it and
       every later operation fail with TS_E_IO until ts_io_fault_reset(),
       modelling a dead process. With a write_file_atomic_fn, the crash
       falls before its first step, so nothing of it is done. */
    int crash;
} ts_fault_plan;

TASKSTORE_API ts_result ts_io_fault_create(const ts_io *inner, const ts_allocator *alloc,
                                           ts_io_fault **out);
TASKSTORE_API void      ts_io_fault_destroy(ts_io_fault *f);
TASKSTORE_API void      ts_io_fault_vtable(ts_io_fault *f, ts_io *io);
TASKSTORE_API void      ts_io_fault_set(ts_io_fault *f, const ts_fault_plan *plan);
/* Clears the plan and the crashed state; the operation count goes on. */
TASKSTORE_API void      ts_io_fault_reset(ts_io_fault *f);
/* Operations seen so far; 1 if the crash point was reached. */
TASKSTORE_API uint64_t  ts_io_fault_ops(const ts_io_fault *f);
TASKSTORE_API int       ts_io_fault_crashed(const ts_io_fault *f);

#ifndef TASKSTORE_NO_STDIO
/* The default vtable over a real directory (POSIX; a Win32 branch exists
   but only POSIX is tested). root must exist or be creatable. */
typedef struct ts_io_posix ts_io_posix;

TASKSTORE_API ts_result ts_io_posix_create(const char *root, const ts_allocator *alloc,
                                           ts_io_posix **out);
TASKSTORE_API void      ts_io_posix_destroy(ts_io_posix *p);
TASKSTORE_API void      ts_io_posix_vtable(ts_io_posix *p, ts_io *io);
#endif

/* ======================================================================== */
/* >>api_store: the store facade - sessions, attachments, search, tick      */
/* ======================================================================== */

/* Bytes handed to the caller: free them with ts_blob_free(). The blob
   carries the allocator that made it, so it outlives the store. */
typedef struct ts_blob {
    void *data;          /* NUL-terminated after len when it holds text */
    size_t len;
    size_t cap;
    ts_allocator alloc;
} ts_blob;

TASKSTORE_API void ts_blob_free(ts_blob *blob);

typedef struct ts_store ts_store;

typedef struct ts_store_config {
    const ts_io *io;            /* NULL: the POSIX vtable over `root` */
    ts_allocator allocator;     /* zero: TASKSTORE_MALLOC & co */
    ts_logger logger;           /* zero: silent */
    int read_only;              /* open without the lock; writes give TS_E_READONLY */
    int read_only_if_locked;    /* on TS_E_LOCKED fall back to read-only */
    uint64_t now_ms;            /* the store's clock at open (caller-supplied time) */

    uint64_t cache_max_bytes;   /* 0: 100 MB */
    uint64_t cache_ttl_ms;      /* 0: 5 minutes */
    uint32_t queue_capacity;    /* items per priority ring; 0: 1024 */
    uint32_t batch_window_ms;   /* normal-priority batching; 0: 100 */
    int queue_busy_error;       /* full ring: 1 = TS_E_BUSY, 0 = flush synchronously */
    uint64_t gc_grace_ms;       /* 0: 1 hour */
    int index_record_text;      /* also index screenshot activity, transcripts, summaries */
} ts_store_config;

/* A config with every default filled in (same as a zeroed one). */
TASKSTORE_API ts_store_config ts_store_config_default(void);

/* Opens (creating if needed) the store at root. With cfg->io set, root is
   only used in messages. Takes the single-owner lock: TS_E_LOCKED when
   another owner has it (unless read_only / read_only_if_locked). */
TASKSTORE_API ts_result ts_store_open(const char *root, const ts_store_config *cfg, ts_store **out);
/* Flushes everything queued, releases the lock and frees the store. Returns
   the flush result; the store is freed either way. */
TASKSTORE_API ts_result ts_store_close(ts_store *s);
TASKSTORE_API ts_result ts_store_last_error(const ts_store *s, ts_error_info *out);

/* Background work. tick: every frame (critical and due normal writes).
   idle: when the app is idle (low-priority writes, GC, compression,
   background migration). Both stop when budget_us is spent. */
TASKSTORE_API ts_result ts_store_tick(ts_store *s, uint64_t now_ms, uint64_t budget_us);
TASKSTORE_API ts_result ts_store_idle(ts_store *s, uint64_t now_ms, uint64_t budget_us);
/* Returns when everything queued before the call is durable. */
TASKSTORE_API ts_result ts_store_flush(ts_store *s);

#ifdef __cplusplus
} /* extern "C" */
#endif
#endif /* TASKSTORE_H_INCLUDED */

/* ======================================================================== */
/* >>implementation                                                         */
/* ======================================================================== */
#ifdef TASKSTORE_IMPLEMENTATION
#ifndef TASKSTORE_IMPLEMENTATION_ONCE
#define TASKSTORE_IMPLEMENTATION_ONCE

#include <string.h>  /* memcpy, memcmp, memset, strlen */
#include <stdarg.h>
#include <stdio.h>   /* vsnprintf */
#include <limits.h>

#if defined(TASKSTORE_MALLOC) || defined(TASKSTORE_REALLOC) || defined(TASKSTORE_FREE)
#  if !defined(TASKSTORE_MALLOC) || !defined(TASKSTORE_REALLOC) || !defined(TASKSTORE_FREE)
#    error "taskstore.h: define all of TASKSTORE_MALLOC, TASKSTORE_REALLOC and TASKSTORE_FREE, or none"
#  endif
#else
#  include <stdlib.h>
#  define TASKSTORE_MALLOC(sz, u)        ((void)(u), malloc(sz))
#  define TASKSTORE_REALLOC(p, o, n, u)  ((void)(o), (void)(u), realloc((p), (n)))
#  define TASKSTORE_FREE(p, sz, u)       ((void)(sz), (void)(u), free(p))
#endif

#ifndef TASKSTORE_ASSERT
#  include <assert.h>
#  define TASKSTORE_ASSERT(x) assert(x)
#endif

#if !defined(TASKSTORE_DEBUG) && !defined(NDEBUG)
#  define TASKSTORE_DEBUG
#endif

/* Private functions may go unused in some configurations; say so once
   (the most repeated complaint about single-header libraries). */
#if defined(__GNUC__) || defined(__clang__)
#  define TS__PRIVATE static __attribute__((unused))
#else
#  define TS__PRIVATE static
#endif
#ifdef TASKSTORE_STATIC
#  define TASKSTORE_DEF TS__PRIVATE
#else
#  define TASKSTORE_DEF
#endif
#define TS__UNUSED(x) ((void)(x))
#define TS__STATIC_ASSERT(name, cond) typedef char ts__static_assert_##name[(cond) ? 1 : -1]

/* ======================================================================== */
/* >>base: allocation, errors, checked size math, buffers, strings, hash    */
/* map, UTF-8, name validation. Everything below stands on these.           */
/* ======================================================================== */

TASKSTORE_DEF const char *ts_result_str(ts_result r)
{
#ifdef TASKSTORE_NO_ERROR_STRINGS
    TS__UNUSED(r);
    return "";
#else
    switch (r) {
#define TS__RESULT_CASE(name, value, text) case name: return text;
    TS_RESULT_LIST(TS__RESULT_CASE)
#undef TS__RESULT_CASE
    default: return "unknown result code";
    }
#endif
}

TASKSTORE_DEF const char *ts_version(void) { return TASKSTORE_VERSION_STRING; }

/* ---- allocation ---------------------------------------------------------
   Every byte the library allocates goes through these three, with the size,
   so user allocators (arenas, budgets, failure injection) see everything. */

TS__PRIVATE void *ts__alloc(const ts_allocator *a, size_t n)
{
    if (n == 0) n = 1;
    if (a && a->alloc_fn) return a->alloc_fn(n, a->user);
    return TASKSTORE_MALLOC(n, a ? a->user : NULL);
}

TS__PRIVATE void *ts__realloc(const ts_allocator *a, void *p, size_t old_n, size_t new_n)
{
    if (new_n == 0) new_n = 1;
    if (!p) return ts__alloc(a, new_n);
    if (a && a->realloc_fn) return a->realloc_fn(p, old_n, new_n, a->user);
    if (a && a->alloc_fn) {
        /* an allocator without realloc: emulate it with alloc+copy+free */
        void *q = a->alloc_fn(new_n, a->user);
        if (!q) return NULL;
        memcpy(q, p, old_n < new_n ? old_n : new_n);
        if (a->free_fn) a->free_fn(p, old_n, a->user);
        return q;
    }
    return TASKSTORE_REALLOC(p, old_n, new_n, a ? a->user : NULL);
}

TS__PRIVATE void ts__free(const ts_allocator *a, void *p, size_t n)
{
    if (!p) return;
    if (n == 0) n = 1;
    if (a && a->free_fn) { a->free_fn(p, n, a->user); return; }
    if (a && a->alloc_fn) return; /* alloc without free: the user owns an arena */
    TASKSTORE_FREE(p, n, a ? a->user : NULL);
}

/* Zeroed allocation of count*size with the multiplication checked. */
TS__PRIVATE void *ts__calloc(const ts_allocator *a, size_t count, size_t size)
{
    void *p;
    if (size && count > (size_t)-1 / size) return NULL;
    p = ts__alloc(a, count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

/* Checked size arithmetic: lengths read from disk are hostile. Each returns
   1 on success and 0 on overflow (leaving *out untouched). */
TS__PRIVATE int ts__size_add(size_t a, size_t b, size_t *out)
{
    if (a > (size_t)-1 - b) return 0;
    *out = a + b;
    return 1;
}
TS__PRIVATE int ts__size_mul(size_t a, size_t b, size_t *out)
{
    if (b && a > (size_t)-1 / b) return 0;
    *out = a * b;
    return 1;
}

/* ---- errors --------------------------------------------------------------
   Each object owns a ts__env: its allocator, its logger and its last error.
   TS__FAIL records a failure with a printf-style message and returns the
   code, so error paths read `return TS__FAIL(env, TS_E_CORRUPT, "...", x);` */

typedef struct ts__env {
    ts_allocator alloc;
    ts_logger logger;
    ts_error_info last;
} ts__env;

TS__PRIVATE void ts__env_init(ts__env *env, const ts_allocator *a, const ts_logger *l)
{
    memset(env, 0, sizeof *env);
    if (a) env->alloc = *a;
    if (l) env->logger = *l;
}

TS__PRIVATE void ts__log(ts__env *env, ts_log_level level, ts_result code, int line,
                         const char *msg)
{
    if (env && env->logger.log_fn) env->logger.log_fn(env->logger.user, level, code, msg, line);
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 4, 5)))
#endif
TS__PRIVATE ts_result ts__fail(ts__env *env, ts_result code, int line, const char *fmt, ...)
{
    va_list ap;
    if (!env) return code;
    env->last.code = code;
    env->last.line = line;
    va_start(ap, fmt);
    vsnprintf(env->last.message, sizeof env->last.message, fmt, ap);
    va_end(ap);
    ts__log(env, TS_LOG_ERROR, code, line, env->last.message);
    return code;
}
#define TS__FAIL(env, code, ...) ts__fail((env), (code), __LINE__, __VA_ARGS__)

/* Copies an object's last error out, for the ts_*_last_error() functions. */
TS__PRIVATE ts_result ts__env_last_error(const ts__env *env, ts_error_info *out)
{
    if (!out) return TS_E_INVALID;
    if (!env) { memset(out, 0, sizeof *out); return TS_E_INVALID; }
    *out = env->last;
    return env->last.code;
}

/* ---- growable byte buffer ------------------------------------------------
   Always NUL-terminated after its length (when data is non-NULL), so text
   built in it can be handed to string functions. */

typedef struct ts__buf {
    unsigned char *data;
    size_t len, cap;
    const ts_allocator *alloc;
} ts__buf;

TS__PRIVATE void ts__buf_init(ts__buf *b, const ts_allocator *a)
{
    b->data = NULL; b->len = 0; b->cap = 0; b->alloc = a;
}

TS__PRIVATE void ts__buf_free(ts__buf *b)
{
    ts__free(b->alloc, b->data, b->cap);
    b->data = NULL; b->len = 0; b->cap = 0;
}

/* Makes room for `extra` more bytes plus the terminating NUL. */
TS__PRIVATE ts_result ts__buf_reserve(ts__buf *b, size_t extra)
{
    size_t need, ncap;
    unsigned char *p;
    if (!ts__size_add(b->len, extra, &need) || !ts__size_add(need, 1, &need)) return TS_E_NOMEM;
    if (need <= b->cap) return TS_OK;
    ncap = b->cap ? b->cap : 64;
    while (ncap < need) {
        if (ncap > (size_t)-1 / 2) { ncap = need; break; }
        ncap *= 2;
    }
    p = (unsigned char *)ts__realloc(b->alloc, b->data, b->cap, ncap);
    if (!p) return TS_E_NOMEM;
    b->data = p; b->cap = ncap;
    return TS_OK;
}

TS__PRIVATE ts_result ts__buf_append(ts__buf *b, const void *src, size_t n)
{
    ts_result r = ts__buf_reserve(b, n);
    if (r) return r;
    if (n) memcpy(b->data + b->len, src, n);
    b->len += n;
    b->data[b->len] = 0;
    return TS_OK;
}

TS__PRIVATE ts_result ts__buf_putc(ts__buf *b, int c)
{
    unsigned char ch = (unsigned char)c;
    if (b->len + 1 < b->cap) { b->data[b->len++] = ch; b->data[b->len] = 0; return TS_OK; }
    return ts__buf_append(b, &ch, 1);
}

TS__PRIVATE ts_result ts__buf_puts(ts__buf *b, const char *s)
{
    return ts__buf_append(b, s, strlen(s));
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
TS__PRIVATE ts_result ts__buf_printf(ts__buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    ts_result r;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return TS_E_INVALID;
    if ((r = ts__buf_reserve(b, (size_t)n)) != TS_OK) return r;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return TS_OK;
}

/* Hands the buffer's bytes to the caller (who frees them with `*cap_out`
   bytes through the same allocator) and leaves the buffer empty. */
TS__PRIVATE unsigned char *ts__buf_take(ts__buf *b, size_t *len_out, size_t *cap_out)
{
    unsigned char *p = b->data;
    if (len_out) *len_out = b->len;
    if (cap_out) *cap_out = b->cap;
    b->data = NULL; b->len = 0; b->cap = 0;
    return p;
}

/* ---- strings ------------------------------------------------------------- */

/* A NUL-terminated copy of n bytes; free with ts__free(a, p, n + 1). */
TS__PRIVATE char *ts__strndup(const ts_allocator *a, const char *s, size_t n)
{
    char *p;
    if (n == (size_t)-1) return NULL;
    p = (char *)ts__alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

TS__PRIVATE int ts__str_starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

TS__PRIVATE int ts__str_ends(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Byte-order comparison of two counted strings (shorter prefix first). */
TS__PRIVATE int ts__memcmp_len(const void *a, size_t an, const void *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

/* ---- hashing and the hash map --------------------------------------------
   ts__hash_bytes is a fast 64-bit hash for in-memory tables (not for
   anything stored on disk and not cryptographic; SHA-256 is further down).

   ts__map maps byte-string keys (session ids, cache keys, 32-byte digests)
   to a uint64_t value. Open addressing with linear probing and backward-shift
   deletion (no tombstones), capacity a power of two, load factor <= 0.75.
   Keys are copied into the map. Iterate with ts__map_next. */

TS__PRIVATE uint64_t ts__hash_bytes(const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, p, 8);
        k *= 0x87C37B91114253D5ull; k ^= k >> 31; k *= 0x4CF5AD432745937Full;
        h ^= k; h = (h << 27 | h >> 37) * 5 + 0x52DCE729;
        p += 8; n -= 8;
    }
    if (n) {
        uint64_t k = 0;
        size_t i;
        for (i = 0; i < n; i++) k |= (uint64_t)p[i] << (8 * i);
        k *= 0x87C37B91114253D5ull; k ^= k >> 31; k *= 0x4CF5AD432745937Full;
        h ^= k;
    }
    h ^= h >> 33; h *= 0xFF51AFD7ED558CCDull; h ^= h >> 33; h *= 0xC4CEB9FE1A85EC53ull; h ^= h >> 33;
    return h;
}

typedef struct ts__map_slot {
    uint64_t hash;      /* 0 marks an empty slot (real hashes are forced non-zero) */
    char *key;          /* NUL-terminated copy; allocated key_len + 1 bytes */
    size_t key_len;
    uint64_t value;
} ts__map_slot;

typedef struct ts__map {
    ts__map_slot *slots;
    size_t cap;         /* 0 or a power of two */
    size_t count;
    const ts_allocator *alloc;
} ts__map;

TS__PRIVATE void ts__map_init(ts__map *m, const ts_allocator *a)
{
    m->slots = NULL; m->cap = 0; m->count = 0; m->alloc = a;
}

TS__PRIVATE void ts__map_free(ts__map *m)
{
    size_t i;
    for (i = 0; i < m->cap; i++)
        if (m->slots[i].hash) ts__free(m->alloc, m->slots[i].key, m->slots[i].key_len + 1);
    ts__free(m->alloc, m->slots, m->cap * sizeof(ts__map_slot));
    m->slots = NULL; m->cap = 0; m->count = 0;
}

TS__PRIVATE uint64_t ts__map_hash(const void *key, size_t n)
{
    uint64_t h = ts__hash_bytes(key, n);
    return h ? h : 1;
}

/* Index of the slot holding key, or of the empty slot where it would go. */
TS__PRIVATE size_t ts__map_find_slot(const ts__map *m, const void *key, size_t n, uint64_t h)
{
    size_t mask = m->cap - 1, i = (size_t)h & mask;
    for (;;) {
        const ts__map_slot *s = &m->slots[i];
        if (!s->hash) return i;
        if (s->hash == h && s->key_len == n && memcmp(s->key, key, n) == 0) return i;
        i = (i + 1) & mask;
    }
}

TS__PRIVATE ts_result ts__map_grow(ts__map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16, i;
    ts__map_slot *ns, *old = m->slots;
    size_t ocap = m->cap;
    if (ncap > (size_t)-1 / sizeof(ts__map_slot)) return TS_E_NOMEM;
    ns = (ts__map_slot *)ts__calloc(m->alloc, ncap, sizeof(ts__map_slot));
    if (!ns) return TS_E_NOMEM;
    m->slots = ns; m->cap = ncap;
    for (i = 0; i < ocap; i++) {
        if (old[i].hash) {
            size_t j = ts__map_find_slot(m, old[i].key, old[i].key_len, old[i].hash);
            ns[j] = old[i];
        }
    }
    ts__free(m->alloc, old, ocap * sizeof(ts__map_slot));
    return TS_OK;
}

/* 1 and *value if found, 0 if not. */
TS__PRIVATE int ts__map_get(const ts__map *m, const void *key, size_t n, uint64_t *value)
{
    size_t i;
    if (!m->count) return 0;
    i = ts__map_find_slot(m, key, n, ts__map_hash(key, n));
    if (!m->slots[i].hash) return 0;
    if (value) *value = m->slots[i].value;
    return 1;
}

/* Inserts or replaces. */
TS__PRIVATE ts_result ts__map_put(ts__map *m, const void *key, size_t n, uint64_t value)
{
    uint64_t h = ts__map_hash(key, n);
    size_t i;
    ts__map_slot *s;
    if ((m->count + 1) * 4 > m->cap * 3) {
        ts_result r = ts__map_grow(m);
        if (r) return r;
    }
    i = ts__map_find_slot(m, key, n, h);
    s = &m->slots[i];
    if (!s->hash) {
        char *k = ts__strndup(m->alloc, (const char *)key, n);
        if (!k) return TS_E_NOMEM;
        s->hash = h; s->key = k; s->key_len = n;
        m->count++;
    }
    s->value = value;
    return TS_OK;
}

/* 1 if the key was there (and is now gone), 0 if not. */
TS__PRIVATE int ts__map_del(ts__map *m, const void *key, size_t n)
{
    size_t mask, i, j;
    if (!m->count) return 0;
    mask = m->cap - 1;
    i = ts__map_find_slot(m, key, n, ts__map_hash(key, n));
    if (!m->slots[i].hash) return 0;
    ts__free(m->alloc, m->slots[i].key, m->slots[i].key_len + 1);
    m->slots[i].hash = 0;
    m->count--;
    /* backward-shift: pull later members of the probe run into the hole */
    j = i;
    for (;;) {
        size_t home;
        j = (j + 1) & mask;
        if (!m->slots[j].hash) break;
        home = (size_t)m->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            m->slots[j].hash = 0;
            i = j;
        }
    }
    return 1;
}

/* Iteration: start with *pos = 0; returns the next live slot or NULL. Do not
   insert or delete while iterating. */
TS__PRIVATE const ts__map_slot *ts__map_next(const ts__map *m, size_t *pos)
{
    while (*pos < m->cap) {
        const ts__map_slot *s = &m->slots[(*pos)++];
        if (s->hash) return s;
    }
    return NULL;
}

/* ---- UTF-8 ---------------------------------------------------------------
   Strict decoding: no overlong forms, no surrogates, nothing above
   U+10FFFF. Returns the sequence length (1-4) and the code point, or 0 for an
   invalid or truncated sequence. */

TS__PRIVATE int ts__utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    uint32_t c;
    if (!n) return 0;
    c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    if (c < 0xC2) return 0;
    if (c < 0xE0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        *cp = ((c & 0x1F) << 6) | (s[1] & 0x3Fu);
        return 2;
    }
    if (c < 0xF0) {
        uint32_t v;
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        v = ((c & 0x0F) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        if (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF)) return 0;
        *cp = v;
        return 3;
    }
    if (c < 0xF5) {
        uint32_t v;
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        v = ((c & 0x07) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
        if (v < 0x10000 || v > 0x10FFFF) return 0;
        *cp = v;
        return 4;
    }
    return 0;
}

/* Encodes a code point (<= U+10FFFF, not a surrogate) into out[4]; returns
   the length. */
TS__PRIVATE int ts__utf8_encode(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

TS__PRIVATE int ts__utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int k;
        if (s[i] < 0x80) { i++; continue; }
        k = ts__utf8_decode(s + i, n - i, &cp);
        if (!k) return 0;
        i += (size_t)k;
    }
    return 1;
}

/* ---- names that become paths ---------------------------------------------
   DESIGN.md section 5: a session id is 1-128 bytes of [A-Za-z0-9._-], not "."
   or ".."; a hash is exactly 64 lowercase hex digits. Anything else is
   TS_E_INVALID before it gets anywhere near a path. */

#define TS__ID_MAX 128

TS__PRIVATE int ts__valid_id(const char *id, size_t n)
{
    size_t i;
    if (!id || n == 0 || n > TS__ID_MAX) return 0;
    if ((n == 1 && id[0] == '.') || (n == 2 && id[0] == '.' && id[1] == '.')) return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

TS__PRIVATE int ts__valid_hash_hex(const char *h, size_t n)
{
    size_t i;
    if (!h || n != 64) return 0;
    for (i = 0; i < 64; i++) {
        char c = h[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
    }
    return 1;
}

/* A relative store path: components separated by single '/', no empty, "."
   or ".." component, no leading '/', no backslash, no NUL, no control bytes,
   at most TASKSTORE_MAX_PATH bytes. Every path reaching a file vtable passes
   this check first. */
#ifndef TASKSTORE_MAX_PATH
#define TASKSTORE_MAX_PATH 1024
#endif

TS__PRIVATE int ts__valid_rel_path(const char *p, size_t n)
{
    size_t i, start = 0;
    if (!p || n == 0 || n > TASKSTORE_MAX_PATH) return 0;
    for (i = 0; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)p[i] : '/';
        if (c == '/') {
            size_t len = i - start;
            if (len == 0) return 0;
            if (len == 1 && p[start] == '.') return 0;
            if (len == 2 && p[start] == '.' && p[start + 1] == '.') return 0;
            start = i + 1;
        } else if (c < 0x20 || c == '\\' || c == ':' || c == 0x7F) {
            return 0;
        }
    }
    return 1;
}

/* ---- small numeric helpers ----------------------------------------------- */

static const char ts__hex_digits[] = "0123456789abcdef";

TS__PRIVATE void ts__hex_encode(const unsigned char *in, size_t n, char *out /* 2n+1 */)
{
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = ts__hex_digits[in[i] >> 4];
        out[2 * i + 1] = ts__hex_digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

TS__PRIVATE int ts__hex_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes 2n hex digits into n bytes; 1 on success. */
TS__PRIVATE int ts__hex_decode(const char *in, size_t n, unsigned char *out)
{
    size_t i;
    for (i = 0; i < n; i++) {
        int hi = ts__hex_value((unsigned char)in[2 * i]), lo = ts__hex_value((unsigned char)in[2 * i + 1]);
        if (hi < 0 || lo < 0) return 0;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 1;
}

/* ======================================================================== */
/* >>sha256: SHA-256 for content addresses. A portable C compression        */
/* function plus an x86-64 SHA-NI one chosen at run time; the streaming     */
/* layer feeds whole blocks straight from the caller's buffer.             */
/* ======================================================================== */

static const uint32_t ts__sha256_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u
};

/* ---- portable compression ------------------------------------------------
   Rounds are unrolled through macros that rename a..h instead of shifting
   them, and the schedule lives in a 16-word ring, so the compiler sees only
   constant indices. Maj reuses a^b of the previous round as its b^c. */

#define TS__SHA_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define TS__SHA_BSIG0(x) (TS__SHA_ROR(x, 2) ^ TS__SHA_ROR(x, 13) ^ TS__SHA_ROR(x, 22))
#define TS__SHA_BSIG1(x) (TS__SHA_ROR(x, 6) ^ TS__SHA_ROR(x, 11) ^ TS__SHA_ROR(x, 25))
#define TS__SHA_SSIG0(x) (TS__SHA_ROR(x, 7) ^ TS__SHA_ROR(x, 18) ^ ((x) >> 3))
#define TS__SHA_SSIG1(x) (TS__SHA_ROR(x, 17) ^ TS__SHA_ROR(x, 19) ^ ((x) >> 10))
#define TS__SHA_LOAD(p) \
    ((uint32_t)(p)[0] << 24 | (uint32_t)(p)[1] << 16 | (uint32_t)(p)[2] << 8 | (uint32_t)(p)[3])

/* One round; w is this round's schedule word. */
#define TS__SHA_RND(a, b, c, d, e, f, g, h, k, w)                              \
    t1 = h + TS__SHA_BSIG1(e) + ((((f) ^ (g)) & (e)) ^ (g)) + (k) + (w);      \
    ab = a ^ b;                                                                \
    d += t1;                                                                   \
    h = t1 + TS__SHA_BSIG0(a) + ((ab & bc) ^ b);                               \
    bc = ab;

/* Round j (0..15) of the first 16: the word comes from the block. */
#define TS__SHA_R0(a, b, c, d, e, f, g, h, j)                                  \
    w[j] = TS__SHA_LOAD(p + 4 * (j));                                          \
    TS__SHA_RND(a, b, c, d, e, f, g, h, ts__sha256_k[j], w[j])

/* Round i + j of the last 48 (j = 0..15): extend the schedule in place. */
#define TS__SHA_R1(a, b, c, d, e, f, g, h, j)                                  \
    w[j] += TS__SHA_SSIG1(w[((j) + 14) & 15]) + w[((j) + 9) & 15] +            \
            TS__SHA_SSIG0(w[((j) + 1) & 15]);                                  \
    TS__SHA_RND(a, b, c, d, e, f, g, h, ts__sha256_k[i + (j)], w[j])

#define TS__SHA_16(R)                                                          \
    R(a, b, c, d, e, f, g, h, 0)  R(h, a, b, c, d, e, f, g, 1)                 \
    R(g, h, a, b, c, d, e, f, 2)  R(f, g, h, a, b, c, d, e, 3)                 \
    R(e, f, g, h, a, b, c, d, 4)  R(d, e, f, g, h, a, b, c, 5)                 \
    R(c, d, e, f, g, h, a, b, 6)  R(b, c, d, e, f, g, h, a, 7)                 \
    R(a, b, c, d, e, f, g, h, 8)  R(h, a, b, c, d, e, f, g, 9)                 \
    R(g, h, a, b, c, d, e, f, 10) R(f, g, h, a, b, c, d, e, 11)                \
    R(e, f, g, h, a, b, c, d, 12) R(d, e, f, g, h, a, b, c, 13)                \
    R(c, d, e, f, g, h, a, b, 14) R(b, c, d, e, f, g, h, a, 15)

/* Compresses nblocks consecutive 64-byte blocks at p into state. */
TS__PRIVATE void ts__sha256_blocks_c(uint32_t state[8], const unsigned char *p, size_t nblocks)
{
    uint32_t w[16];
    while (nblocks--) {
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        uint32_t t1, ab, bc = b ^ c;
        int i;
        TS__SHA_16(TS__SHA_R0)
        for (i = 16; i < 64; i += 16) {
            TS__SHA_16(TS__SHA_R1)
        }
        state[0] += a; state[1] += b; state[2] += c; state[3] += d;
        state[4] += e; state[5] += f; state[6] += g; state[7] += h;
        p += 64;
    }
}

#undef TS__SHA_16
#undef TS__SHA_LOAD
#undef TS__SHA_R1
#undef TS__SHA_R0
#undef TS__SHA_RND
#undef TS__SHA_SSIG1
#undef TS__SHA_SSIG0
#undef TS__SHA_BSIG1
#undef TS__SHA_BSIG0
#undef TS__SHA_ROR

/* ---- x86-64 SHA extensions -------------------------------------------------
   Only gcc/clang on x86-64: the target attribute lets this one function use
   SHA/SSE4.1 instructions while the rest of the file keeps the user's flags,
   and cpuid decides at run time whether it may be called. */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define TS__SHA256_NI 1
#include <immintrin.h>
#include <cpuid.h>

/* 1 if the CPU has SHA (leaf 7 ebx bit 29) and SSE4.1 (leaf 1 ecx bit 19).
   cpuid traps to the hypervisor in a VM (about 6 microseconds for the two
   leaves, measured), far more than hashing a small buffer, so the answer is
   cached. It is a fact about the machine, written idempotently with relaxed
   atomics: no ordering, no data race, no state anyone could observe change. */
TS__PRIVATE int ts__sha256_cpu_has_ni(void)
{
#if defined(__SHA__) && defined(__SSE4_1__)
    return 1; /* the compiler was told the target CPU has both */
#else
    static int cached; /* 0 unknown, 1 no, 2 yes */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!v) {
        unsigned int a = 0, b = 0, c = 0, d = 0, max_leaf;
        int sse41 = 0, sha = 0;
        /* gcc declares __get_cpuid_max unsigned, clang int */
        max_leaf = (unsigned int)__get_cpuid_max(0, NULL);
        if (max_leaf >= 1) { __cpuid(1, a, b, c, d); sse41 = (int)((c >> 19) & 1u); }
        if (max_leaf >= 7) { __cpuid_count(7, 0, a, b, c, d); sha = (int)((b >> 29) & 1u); }
        v = (sse41 && sha) ? 2 : 1;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v == 2;
#endif
}

/* Four rounds starting at quad q; msg holds W[4q..4q+3]. rnds2 does two
   rounds on the low half of its message operand. */
#define TS__SHA_NI_RNDS(q, msg)                                                \
    m = _mm_add_epi32((msg), _mm_loadu_si128((const __m128i *)(const void *)(ts__sha256_k + 4 * (q)))); \
    s1 = _mm_sha256rnds2_epu32(s1, s0, m);                                     \
    m = _mm_shuffle_epi32(m, 0x0E);                                            \
    s0 = _mm_sha256rnds2_epu32(s0, s1, m);
/* Finishes the schedule quad `next` = msg2(next + alignr(cur, prev)). */
#define TS__SHA_NI_MSG2(cur, prev, next)                                       \
    next = _mm_add_epi32(next, _mm_alignr_epi8(cur, prev, 4));                 \
    next = _mm_sha256msg2_epu32(next, cur);
/* A steady-state quad: rounds on cur, complete next, start cur+3 in prev. */
#define TS__SHA_NI_QUAD(q, cur, prev, next)                                    \
    TS__SHA_NI_RNDS(q, cur)                                                    \
    TS__SHA_NI_MSG2(cur, prev, next)                                           \
    prev = _mm_sha256msg1_epu32(prev, cur);

TS__PRIVATE __attribute__((target("sha,sse4.1")))
void ts__sha256_blocks_ni(uint32_t state[8], const unsigned char *p, size_t nblocks)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i s0, s1, t, m, w0, w1, w2, w3, save0, save1;

    /* state[0..7] = a..h; the instructions want (a,b,e,f) and (c,d,g,h)
       with a and c in the top lanes. */
    t = _mm_loadu_si128((const __m128i *)(const void *)&state[0]);   /* d c b a */
    s1 = _mm_loadu_si128((const __m128i *)(const void *)&state[4]);  /* h g f e */
    t = _mm_shuffle_epi32(t, 0xB1);                                  /* c d a b */
    s1 = _mm_shuffle_epi32(s1, 0x1B);                                /* e f g h */
    s0 = _mm_alignr_epi8(t, s1, 8);                                  /* a b e f */
    s1 = _mm_blend_epi16(s1, t, 0xF0);                               /* c d g h */

    while (nblocks--) {
        save0 = s0;
        save1 = s1;
        w0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 0)), bswap);
        TS__SHA_NI_RNDS(0, w0)
        w1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16)), bswap);
        TS__SHA_NI_RNDS(1, w1)
        w0 = _mm_sha256msg1_epu32(w0, w1);
        w2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 32)), bswap);
        TS__SHA_NI_RNDS(2, w2)
        w1 = _mm_sha256msg1_epu32(w1, w2);
        w3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 48)), bswap);
        TS__SHA_NI_QUAD(3, w3, w2, w0)
        TS__SHA_NI_QUAD(4, w0, w3, w1)
        TS__SHA_NI_QUAD(5, w1, w0, w2)
        TS__SHA_NI_QUAD(6, w2, w1, w3)
        TS__SHA_NI_QUAD(7, w3, w2, w0)
        TS__SHA_NI_QUAD(8, w0, w3, w1)
        TS__SHA_NI_QUAD(9, w1, w0, w2)
        TS__SHA_NI_QUAD(10, w2, w1, w3)
        TS__SHA_NI_QUAD(11, w3, w2, w0)
        TS__SHA_NI_QUAD(12, w0, w3, w1)
        TS__SHA_NI_RNDS(13, w1)
        TS__SHA_NI_MSG2(w1, w0, w2)
        TS__SHA_NI_RNDS(14, w2)
        TS__SHA_NI_MSG2(w2, w1, w3)
        TS__SHA_NI_RNDS(15, w3)
        s0 = _mm_add_epi32(s0, save0);
        s1 = _mm_add_epi32(s1, save1);
        p += 64;
    }

    t = _mm_shuffle_epi32(s0, 0x1B);                                 /* f e b a */
    s1 = _mm_shuffle_epi32(s1, 0xB1);                                /* d c h g */
    s0 = _mm_blend_epi16(t, s1, 0xF0);                               /* d c b a */
    s1 = _mm_alignr_epi8(s1, t, 8);                                  /* h g f e */
    _mm_storeu_si128((__m128i *)(void *)&state[0], s0);
    _mm_storeu_si128((__m128i *)(void *)&state[4], s1);
}

#undef TS__SHA_NI_QUAD
#undef TS__SHA_NI_MSG2
#undef TS__SHA_NI_RNDS
#endif /* x86-64 gcc/clang */

/* ---- streaming layer ------------------------------------------------------ */

TS__PRIVATE void ts__sha256_blocks(ts_sha256 *ctx, const unsigned char *p, size_t nblocks)
{
#ifdef TS__SHA256_NI
    if (ctx->accel) { ts__sha256_blocks_ni(ctx->state, p, nblocks); return; }
#endif
    ts__sha256_blocks_c(ctx->state, p, nblocks);
}

/* ts_sha256_init with a choice: allow_accel == 0 forces the portable code,
   so tests and benchmarks can run both paths in one process. */
TS__PRIVATE void ts__sha256_init_impl(ts_sha256 *ctx, int allow_accel)
{
    static const uint32_t iv[8] = {
        0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
        0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u
    };
    TASKSTORE_ASSERT(ctx);
    memset(ctx, 0, sizeof *ctx);
    memcpy(ctx->state, iv, sizeof iv);
#ifdef TS__SHA256_NI
    ctx->accel = allow_accel && ts__sha256_cpu_has_ni();
#else
    TS__UNUSED(allow_accel);
#endif
}

TASKSTORE_DEF int ts_sha256_accelerated(void)
{
#ifdef TS__SHA256_NI
    return ts__sha256_cpu_has_ni();
#else
    return 0;
#endif
}

TASKSTORE_DEF void ts_sha256_init(ts_sha256 *ctx) { ts__sha256_init_impl(ctx, 1); }

TASKSTORE_DEF void ts_sha256_update(ts_sha256 *ctx, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    TASKSTORE_ASSERT(ctx && (data || !n));
    if (!n) return;
    ctx->total += (uint64_t)n;
    if (ctx->block_len) {
        size_t take = 64 - ctx->block_len;
        if (take > n) take = n;
        memcpy(ctx->block + ctx->block_len, p, take);
        ctx->block_len += take;
        p += take;
        n -= take;
        if (ctx->block_len < 64) return;
        ts__sha256_blocks(ctx, ctx->block, 1);
        ctx->block_len = 0;
    }
    if (n >= 64) {
        /* whole blocks straight from the caller's memory: no copy */
        size_t nb = n / 64;
        ts__sha256_blocks(ctx, p, nb);
        p += nb * 64;
        n -= nb * 64;
    }
    if (n) {
        memcpy(ctx->block, p, n);
        ctx->block_len = n;
    }
}

TASKSTORE_DEF void ts_sha256_final(ts_sha256 *ctx, unsigned char out[32])
{
    uint64_t bits;
    size_t len, i;
    TASKSTORE_ASSERT(ctx && out);
    bits = ctx->total << 3;
    len = ctx->block_len;
    ctx->block[len++] = 0x80;
    if (len > 56) {
        memset(ctx->block + len, 0, 64 - len);
        ts__sha256_blocks(ctx, ctx->block, 1);
        len = 0;
    }
    memset(ctx->block + len, 0, 56 - len);
    for (i = 0; i < 8; i++) ctx->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    ts__sha256_blocks(ctx, ctx->block, 1);
    for (i = 0; i < 8; i++) {
        uint32_t s = ctx->state[i];
        out[4 * i + 0] = (unsigned char)(s >> 24);
        out[4 * i + 1] = (unsigned char)(s >> 16);
        out[4 * i + 2] = (unsigned char)(s >> 8);
        out[4 * i + 3] = (unsigned char)s;
    }
    /* a finished context must not be fed again by mistake, and it holds
       message bytes: clear it */
    memset(ctx, 0, sizeof *ctx);
}

TASKSTORE_DEF void ts_sha256_buffer(const void *data, size_t n, unsigned char out[32])
{
    ts_sha256 ctx;
    ts_sha256_init(&ctx);
    ts_sha256_update(&ctx, data, n);
    ts_sha256_final(&ctx, out);
}

TASKSTORE_DEF void ts_sha256_hex(const unsigned char digest[32], char out[65])
{
    TASKSTORE_ASSERT(digest && out);
    ts__hex_encode(digest, 32, out);
}

#define TASKSTORE_IMPL_INCLUDED 1
#endif /* TASKSTORE_IMPLEMENTATION_ONCE */
#endif /* TASKSTORE_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the taskstore.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain.
Anyone is free to copy, modify, publish, use, compile, sell, or distribute this
software, either in source code form or as a compiled binary, for any purpose,
commercial or non-commercial, and by any means.
In jurisdictions that recognize copyright laws, the author or authors of this
software dedicate any and all copyright interest in the software to the public
domain. We make this dedication in the overt act of relinquishing all present
and future rights to this software under copyright law.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN
ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION
WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
------------------------------------------------------------------------------
*/
