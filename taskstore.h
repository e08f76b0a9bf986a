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
   #define TASKSTORE_IMPLEMENTATION
   #include "taskstore.h"

   ts_store *st;
   ts_store_config cfg = ts_store_config_default();
   cfg.now_ms = app_now_ms();                       // time is always yours
   if (ts_store_open("work-sessions", &cfg, &st) != TS_OK) ...;

   ts_session_save(st, session_json, len, NULL);    // legacy-shape JSON object
   ts_session_append_screenshot(st, "s1", "{\"id\":\"shot-7\",\"timestamp\":1700000001000}",
                                rec_len, png, png_len, "image/png", hash, NULL);
   for (;;) {                                        // your frame loop
       ts_store_tick(st, app_now_ms(), 500);         // <= 0.5 ms of disk work
       if (idle) ts_store_idle(st, app_now_ms(), 5000);
   }
   ts_blob b;                                        // reads see pending writes
   ts_session_load(st, "s1", &b);  ...  ts_blob_free(&b);
   ts_store_flush(st);                               // durable when it returns
   ts_store_close(st);

   Every output is JSON text in a ts_blob; ts_json_parse() reads it.
   Search: ts_query q = {0}; q.text = "parser*"; ts_store_search(st, &q, &hits).

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
   The library reads and writes whole files through a ts_io vtable:
   read_file_fn, write_file_atomic_fn, remove_fn, rename_fn, mkdir_p_fn,
   list_dir_fn, stat_fn, sync_dir_fn, lock_fn, stats_fn, plus a user pointer,
   a version and capability bits. Paths are relative to the store root, use
   '/', and are validated before any callback sees them. A write is an atomic
   replace: temp file, fsync, rename over, fsync of the directory (which the
   queue batches: one per directory per batch). No live file is ever edited.
   Three vtables ship: POSIX/Win32 (ts_io_posix_*; refuses absolute paths,
   ".." and symlinks inside the root), in-memory (ts_io_mem_*, with a disk
   model where only synced data survives ts_io_mem_crash()), and a
   fault-injecting wrapper (ts_io_fault_*: fail the Nth operation with EIO or
   ENOSPC, or "lose power" there). All count what they do (ts_io_counters).

DURABILITY
   A mutating call returns once the change is visible to later reads of the
   same store; it does no file I/O (the write is queued). ts_store_flush()
   returns when everything queued before it is durable: after a crash every
   change acknowledged by a completed flush is present, the store always
   reopens, no metadata counts a record that is not on disk, and no
   attachment's bytes fail to hash to its name. Chunks are written before the
   metadata that counts them, attachment data before the records naming it.
   Reference counts are hints: GC deletes an attachment only when no session
   names it and it is older than the grace period (default 1 hour). A failed
   fsync is never retried on the same file: the whole replace is redone.

THREADS AND TICK
   The library creates no threads and takes no locks. One object (a store, a
   cache, a queue) must be used from one thread at a time; separate objects on
   separate threads are fine (there are no globals). Background work runs only
   inside ts_store_tick() (every frame) and ts_store_idle() (when the app is
   idle), each given a time budget in microseconds.

LIMITS
   TASKSTORE_MAX_JSON_BYTES   256 MiB  one JSON file
   TASKSTORE_MAX_JSON_DEPTH   64       nesting of arrays and objects
   TASKSTORE_MAX_JSON_STRING  64 MiB   one decoded string or key
   TASKSTORE_MAX_JSON_NODES   2^24     values in one JSON document
   TASKSTORE_MAX_PATH         1024     bytes of a store-relative path
   TASKSTORE_MAX_ATTACHMENT_BYTES 256 MiB  one attachment
   TASKSTORE_MAX_CAS_META_BYTES   16 MiB   one attachment's metadata.json
   TASKSTORE_MAX_QUERY        65536    bytes of a query string
   Session ids: 1-128 bytes of [A-Za-z0-9._-], not "." or "..". Hashes: 64
   lowercase hex digits. Anything else is TS_E_INVALID, never a path. Going
   past a limit is TS_E_TOOBIG; malformed input is TS_E_CORRUPT.

ON-DISK FORMAT AND MIGRATION
   sessions-chunked/{id}/metadata.json           core fields + counts + storageVersion
   sessions-chunked/{id}/{stream}/chunk-NNN.json  records (screenshots 10 per chunk,
                                                  audioSegments 50, videoChunks all)
   sessions-chunked/{id}/{summary,audioInsights,canvasSpec,transcription}.json
   attachments-ca/{hh}/{sha256}/data.bin          raw bytes, named by their SHA-256
   attachments-ca/{hh}/{sha256}/metadata.json     mime, size, refCount, references
   session-indexes                                the search index (checksummed)
   session-manifest                               derived list of all metadata
   sessions/{id}.json, attachments/{id}.json      legacy (Phase 3) input of the migrator
   Records and unknown fields are kept byte for byte. Derived files (index,
   manifest) are rebuilt when missing, stale or corrupt.

WHAT TASKSTORE DOES NOT DO
   - no threads, no locks, no global state (the one exception: a cached,
     idempotently written CPU-feature bit for SHA-256);
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

/* Bytes handed to the caller: free them with ts_blob_free(). The blob
   carries the allocator that made it, so it outlives the store. */
typedef struct ts_blob {
    void *data;          /* NUL-terminated after len when it holds text */
    size_t len;
    size_t cap;
    ts_allocator alloc;
} ts_blob;

/* Frees the blob's bytes and zeroes it; NULL or a zeroed blob is fine. */
TASKSTORE_API void ts_blob_free(ts_blob *blob);

/* ======================================================================== */
/* >>api_sha256: SHA-256 (FIPS 180-4), streaming and one-shot               */
/* ======================================================================== */

/* Streaming SHA-256 state. Treat the fields as private; the struct is public
   only so it can live on the stack. Copying an initialized or partly fed
   context is allowed (it forks the hash). No allocation, no failure; all
   functions are reentrant, a context is used by one thread at a time. */
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
/* >>api_json: limits of the JSON reader                                    */
/* ======================================================================== */

/* The JSON document model is internal (ts__json_*); what users see of it is
   the hard limits applied to every JSON file the library reads (impl macros,
   define them before the implementation include to change them):

   TASKSTORE_MAX_JSON_BYTES   256 MiB  one JSON file (whole document)
   TASKSTORE_MAX_JSON_DEPTH   64       nesting of arrays and objects
   TASKSTORE_MAX_JSON_STRING  64 MiB   one decoded string or key
   TASKSTORE_MAX_JSON_NODES   2^24     values in one document

   Going past a limit is TS_E_TOOBIG; malformed JSON (RFC 8259, strictly) is
   TS_E_CORRUPT with the file and the byte offset in the message. */

/* Reading the library's JSON output. Everything the store hands back
   (sessions, records, metadata, lists) is JSON text; these functions read
   it with the library's own parser, so a tool needs no other JSON library.
   A document is immutable and owns its nodes; node pointers stay valid until
   ts_json_free(). */
typedef struct ts__json ts_json;            /* a value inside a document */
typedef struct ts_json_doc ts_json_doc;

typedef enum ts_json_type {
    TS_JSON_NULL = 0, TS_JSON_FALSE, TS_JSON_TRUE, TS_JSON_NUMBER,
    TS_JSON_STRING, TS_JSON_ARRAY, TS_JSON_OBJECT
} ts_json_type;

/* Parses text[0..len). alloc (in, may be NULL); *doc and *root (out) are
   NULL on failure. Returns TS_OK, TS_E_CORRUPT, TS_E_TOOBIG, TS_E_NOMEM. */
TASKSTORE_API ts_result ts_json_parse(const char *text, size_t len, const ts_allocator *alloc,
                                      ts_json_doc **doc, const ts_json **root);
/* Frees the document and every node in it. NULL is fine. */
TASKSTORE_API void ts_json_free(ts_json_doc *doc);

/* The accessors take NULL and return NULL/0 for a missing or mistyped value,
   so lookups chain: ts_json_get(ts_json_get(meta, "chunked"), "streams"). */
TASKSTORE_API ts_json_type   ts_json_type_of(const ts_json *v);
/* The member named key of an object (the last one if repeated). */
TASKSTORE_API const ts_json *ts_json_get(const ts_json *object, const char *key);
/* First child of an array or object, and the next sibling. */
TASKSTORE_API const ts_json *ts_json_first(const ts_json *container);
TASKSTORE_API const ts_json *ts_json_next(const ts_json *v);
/* Children of an array or object. */
TASKSTORE_API size_t         ts_json_count(const ts_json *container);
/* The key of an object member (NUL-terminated), or NULL. */
TASKSTORE_API const char    *ts_json_key(const ts_json *member, size_t *len);
/* A string's decoded UTF-8 bytes (NUL-terminated; may contain NULs), or NULL. */
TASKSTORE_API const char    *ts_json_string(const ts_json *v, size_t *len);
/* 1 and *out for an integer with |v| <= 2^53, else 0. */
TASKSTORE_API int            ts_json_int(const ts_json *v, int64_t *out);
/* 1 and *out for a finite number, else 0. */
TASKSTORE_API int            ts_json_number(const ts_json *v, double *out);

/* ======================================================================== */
/* >>api_io: the file-I/O vtable                                             */
/* ======================================================================== */

/* The library reads and writes whole files only: every object it stores is
   small enough to be replaced whole, so the vtable has no open/seek/write of
   a live file, and no file is ever modified in place.

   Paths are relative to the store root, use '/', and are validated by the
   library before any callback sees them (no absolute paths, no "." or ".."
   components, no empty components, no backslashes, no control bytes, at most
   TASKSTORE_MAX_PATH bytes); the reference vtables check them again and
   answer TS_E_INVALID. Only list_dir_fn and sync_dir_fn accept "", meaning
   the root itself.

   Every callback returns TS_OK or a negative ts_result: TS_E_NOTFOUND when
   the path (or a directory on the way to it) does not exist, TS_E_NOSPACE
   for ENOSPC, TS_E_EXISTS when a directory to remove is not empty or a file
   stands where a directory must be created, TS_E_INVALID for a bad path or a
   symbolic link inside the store, TS_E_IO for other failures. Out-parameters
   are set even on failure. A NULL callback makes the library return
   TS_E_NOTIMPL for the operation that needs it. */

/* Flags of write_file_atomic_fn. */
enum {
    /* Leave the parent directory unsynced: the caller batches several
       replaces in one directory and calls sync_dir_fn once at the end. The
       file's own data is still synced before the rename. */
    TS_WRITE_DEFER_DIRSYNC = 1 << 0,
    /* Skip the file and directory syncs (scratch files whose loss or tearing
       after a crash is harmless). Directories created on the way are still
       made durable. */
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
   implements stats_fn). Sync budgets in the docs and tests use these. One
   write_file_atomic_fn into an existing directory counts 1 write, 1 rename,
   1 file sync (none with TS_WRITE_NO_SYNC) and 1 dir sync (none with
   TS_WRITE_DEFER_DIRSYNC or TS_WRITE_NO_SYNC); each directory it or mkdir_p_fn
   creates adds 1 mkdir and 1 dir sync. */
typedef struct ts_io_counters {
    uint64_t reads, bytes_read;
    uint64_t writes, bytes_written;  /* atomic replaces */
    uint64_t file_syncs, dir_syncs;
    uint64_t renames, removes, mkdirs, lists, stats;
    uint64_t failures;               /* calls that returned an error */
} ts_io_counters;

/* Called once per directory entry (name only, no path) in no particular
   order; return non-zero to stop the listing early. Names "." and ".." are
   never reported. The callback may modify the directory being listed. */
typedef int (*ts_io_list_cb)(void *ctx, const char *name, int is_dir);

#define TS_IO_VERSION 1

typedef struct ts_io {
    int version;            /* TS_IO_VERSION: lets the struct grow compatibly */
    unsigned caps;          /* TS_IO_CAP_* */
    void *user;             /* passed to every callback */

    /* Reads the whole file into buf (capacity cap). *size_out is always the
       file's full size, even when it is larger than cap; then the call
       returns TS_E_RANGE and buf holds the first cap bytes. A directory or
       other non-regular file is TS_E_INVALID. */
    ts_result (*read_file_fn)(void *user, const char *path, void *buf, size_t cap,
                              size_t *size_out);
    /* Replaces path with data atomically: a reader (or a crash) sees either
       the old file or the new one, never a mix. Default protocol: write
       path.tmp.N, fsync it, rename over path, fsync the directory (unless
       TS_WRITE_DEFER_DIRSYNC). Creates missing parent directories (durably).
       On failure nothing is left behind and the old file is untouched. */
    ts_result (*write_file_atomic_fn)(void *user, const char *path, const void *data,
                                      size_t len, unsigned flags);
    /* Removes a file or an empty directory (TS_E_EXISTS if not empty). Not
       durable until sync_dir_fn of its parent. */
    ts_result (*remove_fn)(void *user, const char *path);
    /* Renames a file or directory, replacing a file (or empty directory) at
       `to`; the parent of `to` must exist. Not durable until sync_dir_fn of
       both parents. Moving a directory into itself is TS_E_INVALID. */
    ts_result (*rename_fn)(void *user, const char *from, const char *to);
    ts_result (*mkdir_p_fn)(void *user, const char *path);     /* durable when it returns */
    ts_result (*list_dir_fn)(void *user, const char *path, ts_io_list_cb cb, void *ctx);
    ts_result (*stat_fn)(void *user, const char *path, ts_io_stat *out);
    /* Makes every earlier directory-entry change in path (creations,
       replaces, removes, renames in or out) durable. "" is the root. */
    ts_result (*sync_dir_fn)(void *user, const char *path);
    /* Takes (lock=1) or releases (lock=0) the store's single-owner lock;
       TS_E_LOCKED when another owner holds it, and when it is taken twice
       without a release in between. Releasing a lock not held is TS_OK.
       NULL means no locking. Root names starting with '.' belong to the
       vtable (the POSIX one keeps its lock in ".lock", which list_dir_fn
       shows): a store ignores them. */
    ts_result (*lock_fn)(void *user, int lock);
    /* Copies the vtable's counters; NULL if it does not count. */
    ts_result (*stats_fn)(void *user, ts_io_counters *out);
} ts_io;

/* Reads the counters of any vtable. (out) *out, zeroed first. Returns TS_OK,
   or TS_E_NOTIMPL (with zeroes) when the vtable has no stats_fn. */
TASKSTORE_API ts_result ts_io_counters_get(const ts_io *io, ts_io_counters *out);

/* The in-memory vtable: a whole file system in RAM, for tests, fuzzing and
   users who want a RAM store. It models what a disk guarantees: data and
   directory entries become durable only when synced, so ts_io_mem_crash()
   can throw away exactly what a power loss may lose:
     - write_file_atomic_fn: the new bytes are durable at once (they were
       "fsynced" before the rename) unless TS_WRITE_NO_SYNC; the directory
       entry pointing at them is durable only after a sync of the parent
       (done inside the call unless TS_WRITE_DEFER_DIRSYNC/NO_SYNC);
     - remove_fn, rename_fn: directory-entry changes, durable when the
       parent directory is synced (a rename between two directories is two
       changes, one per parent);
     - mkdir_p_fn and directories created by a write: durable at once;
     - sync_dir_fn: makes every pending change in that directory durable.
   Several vtables over one ts_io_mem share its files and its lock (two
   "processes" of one store). Not thread-safe; a vtable's user is the mem. */
typedef struct ts_io_mem ts_io_mem;

/* (in) alloc may be NULL; (out) *out. Returns TS_OK or TS_E_NOMEM. */
TASKSTORE_API ts_result ts_io_mem_create(const ts_allocator *alloc, ts_io_mem **out);
TASKSTORE_API void      ts_io_mem_destroy(ts_io_mem *mem);
/* Fills *io with callbacks over mem (valid until mem is destroyed). */
TASKSTORE_API void      ts_io_mem_vtable(ts_io_mem *mem, ts_io *io);

typedef enum ts_crash_mode {
    TS_CRASH_DROP_UNSYNCED = 0, /* keep exactly what was made durable; a
                                   durable entry whose bytes were never synced
                                   (TS_WRITE_NO_SYNC) comes back empty */
    TS_CRASH_RANDOM = 1         /* each pending directory-entry change
                                   independently survives or vanishes (the
                                   survivors applied in their original order);
                                   unsynced file bytes that survive are kept,
                                   truncated or given a zero-filled tail */
} ts_crash_mode;

/* Simulates a power loss: the live file system becomes what survives per mode
   (seed picks the random choices; same seed, same outcome) and the lock is
   released (its owner died). Then the store is reopened over it. Never fails
   and allocates nothing. */
TASKSTORE_API void ts_io_mem_crash(ts_io_mem *mem, ts_crash_mode mode, uint64_t seed);

/* Test helper: writes a file directly, bypassing counters; the bytes, the
   entry and the missing parents are made durable at once (which also makes
   the parent directory's other pending changes durable). */
TASKSTORE_API ts_result ts_io_mem_put(ts_io_mem *mem, const char *path, const void *data, size_t len);
/* Total bytes and files currently live. */
TASKSTORE_API void ts_io_mem_usage(const ts_io_mem *mem, uint64_t *files, uint64_t *bytes);

/* The fault-injecting wrapper around any vtable. Operations are numbered
   from 1 in call order (every callback counts, stats_fn excepted, whether
   it fails or not). A failed operation never reaches the inner vtable, so
   nothing of it is done. */
typedef struct ts_io_fault ts_io_fault;

typedef struct ts_fault_plan {
    uint64_t fail_at;        /* fail operation number fail_at (0 = never) */
    uint64_t fail_count;     /* how many consecutive operations fail from
                                fail_at on (0 means 1) */
    ts_result fail_with;     /* TS_E_IO (default when 0) or TS_E_NOSPACE ... */
    /* When set, the failing operation is the moment power is lost: it and
       every later operation fail with TS_E_IO until ts_io_fault_reset(),
       modelling a dead process (fail_count and fail_with are ignored). With
       a write_file_atomic_fn, the crash falls before its first step, so
       nothing of it is done. Pair it with ts_io_mem_crash() on the inner
       vtable to lose what was not yet durable. */
    int crash;
} ts_fault_plan;

/* Wraps a copy of *inner (its user must outlive the wrapper). */
TASKSTORE_API ts_result ts_io_fault_create(const ts_io *inner, const ts_allocator *alloc,
                                           ts_io_fault **out);
TASKSTORE_API void      ts_io_fault_destroy(ts_io_fault *f);
/* Fills *io with the wrapper's callbacks (same caps as inner; stats_fn
   returns the inner counters plus the injected failures). */
TASKSTORE_API void      ts_io_fault_vtable(ts_io_fault *f, ts_io *io);
/* Installs a plan (NULL clears it); operation numbers keep counting from
   the wrapper's creation, so fail_at is usually ts_io_fault_ops(f) + k. */
TASKSTORE_API void      ts_io_fault_set(ts_io_fault *f, const ts_fault_plan *plan);
/* Clears the plan and the crashed state; the operation count goes on. */
TASKSTORE_API void      ts_io_fault_reset(ts_io_fault *f);
/* Operations seen so far. */
TASKSTORE_API uint64_t  ts_io_fault_ops(const ts_io_fault *f);
/* 1 if the crash point was reached (and not reset since). */
TASKSTORE_API int       ts_io_fault_crashed(const ts_io_fault *f);

#ifndef TASKSTORE_NO_STDIO
/* The default vtable over a real directory (POSIX; a Win32 branch exists
   but only POSIX is tested). root must exist or be creatable (missing
   components are created). Confinement: every path is resolved component by
   component from a directory handle on the root with O_NOFOLLOW, so a
   symbolic link planted inside the store is refused (TS_E_INVALID), never
   followed; on Win32 every existing component is checked for reparse
   points and device names. The lock is the file ".lock" in the root, held
   with an open-file-description lock (F_OFD_SETLK when the build exposes it,
   else flock(), else fcntl F_SETLK, which cannot see a second owner inside
   the same process); on Win32 an exclusive share mode. A power loss in the
   middle of a replace can leave "name.tmp.<pid>.<n>" beside the file;
   nothing reads it, and a store may delete such names when it opens. */
typedef struct ts_io_posix ts_io_posix;

/* (in) root: the store directory (UTF-8 on Win32); alloc may be NULL.
   (out) *out. Returns TS_OK, TS_E_INVALID, TS_E_NOMEM or an I/O code. */
TASKSTORE_API ts_result ts_io_posix_create(const char *root, const ts_allocator *alloc,
                                           ts_io_posix **out);
/* Releases the lock if held and closes the root. */
TASKSTORE_API void      ts_io_posix_destroy(ts_io_posix *p);
TASKSTORE_API void      ts_io_posix_vtable(ts_io_posix *p, ts_io *io);
/* The last failure of the vtable, with the system call and errno in the
   message. Returns its code (TS_OK if none). */
TASKSTORE_API ts_result ts_io_posix_last_error(const ts_io_posix *p, ts_error_info *out);
#endif

/* ======================================================================== */
/* >>api_lru: the read path's cache, usable on its own as ts_lru            */
/* ======================================================================== */

/* A byte-budgeted LRU cache of string keys with per-cache and per-entry
   TTLs, against the caller's clock (every call that needs time takes now_ms).

   Keys are byte strings; the store uses "kind:{sessionId}" and
   "kind:{sessionId}:{n}" (e.g. "metadata:abc", "screenshots:abc:3"). The
   cache files every key with at least one ':' under its GROUP ("kind:session",
   the key up to its second ':') and SESSION (the bytes between the first and
   the second ':'), which is what makes ts_lru_invalidate_prefix("kind:id:")
   and ts_lru_invalidate_session("id") proportional to what they remove.

   Cost and complexity. get/has/put/delete are O(1) expected (one hash of the
   key, one probe of an open-addressing table, list splices); a get performs
   no allocation. Each entry is one allocation holding the header, the key
   and (for ts_lru_put_copy) the value bytes; a put that keeps an entry's
   size (a ref for a ref, a copy of the same length) rewrites it in place
   without allocating. The budget counts, per entry,
   the value's cost + the key length + TS_LRU_ENTRY_OVERHEAD; a small record
   per distinct group and per session (~64 bytes + name) is not counted.

   Value ownership. ts_lru_put_copy copies the bytes into the entry (the
   cache owns the copy). ts_lru_put_ref stores the caller's pointer and calls
   its free_fn exactly once when the entry leaves the cache: evicted,
   expired and reclaimed, deleted, invalidated, replaced, cleared or
   destroyed. A put that fails never takes ownership. free_fn is called from
   inside the cache call and must not call back into the same cache.

   Time. An entry put at time T with TTL t is live while now_ms < T + t.
   Expired entries are misses; they are reclaimed lazily (by the get or has
   that finds them, or by eviction; a put under the same key replaces one)
   and all at once by ts_lru_prune. Calls that only remove (delete,
   invalidate_*, clear) do not look at the clock: they remove what is held,
   expired or not.

   Eviction: when a put or ts_lru_set_max_bytes leaves the cache over budget,
   entries leave from the least-recently-used end until it fits (an expired
   one counts as an expiration, a live one as an eviction). Recency is set
   by put and by a get hit; has() does not change it.

   Not provided: caller-embedded (intrusive) nodes; a ts_lru must be used by
   one thread at a time. */

typedef struct ts_lru ts_lru;

/* ttl_ms / default_ttl_ms value meaning "never expires". In a put, ttl_ms 0
   means "the cache's default TTL". */
#define TS_LRU_NO_TTL UINT64_MAX
#define TS_LRU_DEFAULT_MAX_BYTES ((uint64_t)100 * 1024 * 1024)
#define TS_LRU_DEFAULT_TTL_MS ((uint64_t)5 * 60 * 1000)
/* Bytes charged per entry on top of its key and value: the entry header
   (96 bytes on 64-bit), its share of the hash table, allocator slack. A
   fixed figure so budgets behave the same on every platform. */
#define TS_LRU_ENTRY_OVERHEAD 128u

/* Frees a value stored with ts_lru_put_ref. value/cost are as given to the
   put; user is the put's user pointer. Must not call into the same cache. */
typedef void (*ts_lru_free_fn)(void *value, size_t cost, void *user);

typedef struct ts_lru_config {
    uint64_t max_bytes;      /* budget; 0 = TS_LRU_DEFAULT_MAX_BYTES (100 MB);
                                values above UINT64_MAX/2 are clamped to it */
    uint64_t default_ttl_ms; /* 0 = TS_LRU_DEFAULT_TTL_MS (5 min); TS_LRU_NO_TTL = never */
    ts_allocator allocator;  /* zero = TASKSTORE_MALLOC/REALLOC/FREE */
    ts_logger logger;        /* zero = silent */
} ts_lru_config;

typedef struct ts_lru_stats {
    uint64_t hits, misses;   /* lookups by get/get_copy/get_many since create or reset */
    double hit_rate;         /* hits / (hits + misses); 0 when there were none */
    uint64_t evictions;      /* live entries removed to respect the budget */
    uint64_t expirations;    /* expired entries reclaimed (lazily, by prune or eviction) */
    uint64_t entries;        /* entries held, including expired ones not yet reclaimed */
    uint64_t bytes;          /* bytes charged for them (see TS_LRU_ENTRY_OVERHEAD) */
    uint64_t max_bytes;      /* the current budget */
    uint64_t oldest_age_ms;  /* now_ms minus the last use (put or get hit) of the
                                least-recently-used entry; 0 when empty */
} ts_lru_stats;

/* The defaults a zero-filled ts_lru_config stands for, filled in. */
TASKSTORE_API ts_lru_config ts_lru_config_default(void);

/* Creates a cache. cfg (in, may be NULL = all defaults); out (out) the cache,
   NULL on failure. Returns TS_OK, TS_E_INVALID or TS_E_NOMEM. */
TASKSTORE_API ts_result ts_lru_create(const ts_lru_config *cfg, ts_lru **out);

/* Frees every entry (calling free_fn for ts_lru_put_ref values) and the
   cache. NULL is allowed. */
TASKSTORE_API void ts_lru_destroy(ts_lru *lru);

/* Stores a COPY of len bytes under key, replacing any previous value (the
   old one is freed) and making it the most recently used. ttl_ms: 0 = the
   cache default, TS_LRU_NO_TTL = never expires. May evict. Returns TS_OK,
   TS_E_INVALID (NULL arguments), TS_E_TOOBIG (key_len + len +
   TS_LRU_ENTRY_OVERHEAD exceeds the whole budget: nothing is evicted and a
   previous value under key stays) or TS_E_NOMEM (cache unchanged). */
TASKSTORE_API ts_result ts_lru_put_copy(ts_lru *lru, const char *key, size_t key_len,
                                        const void *data, size_t len,
                                        uint64_t ttl_ms, uint64_t now_ms);

/* Stores the caller's pointer value under key with a caller-given cost in
   bytes (what the value takes in memory); the cache does not copy or look
   at *value. On TS_OK the cache owns value and calls free_fn(value, cost,
   user) exactly once when the entry leaves (free_fn may be NULL: nothing to
   free). Re-putting the same pointer under the same key does not free it.
   On failure the caller keeps ownership. Returns as ts_lru_put_copy. */
TASKSTORE_API ts_result ts_lru_put_ref(ts_lru *lru, const char *key, size_t key_len,
                                       void *value, size_t cost,
                                       ts_lru_free_fn free_fn, void *user,
                                       uint64_t ttl_ms, uint64_t now_ms);

/* Looks key up. On a hit: TS_OK, *value (out) the copied bytes (put_copy,
   aligned to 8) or the caller's pointer (put_ref), *len (out) the byte
   length or the cost; the entry becomes the most recently used. The pointer
   stays valid until the entry leaves the cache: use or copy it before the
   next put/delete/prune/invalidate/clear/resize, or a get/has of the same
   key at a time it has expired. On a miss (absent or expired: an expired
   entry is reclaimed): TS_E_NOTFOUND, *value NULL, *len 0; a miss is not
   recorded as the last error. value and len may be NULL. No allocation. */
TASKSTORE_API ts_result ts_lru_get(ts_lru *lru, const char *key, size_t key_len,
                                   uint64_t now_ms, const void **value, size_t *len);

/* As ts_lru_get, copying a put_copy value into buf[cap]. *len (out) gets the
   value's length, also when cap is too small (0 otherwise). Returns TS_OK,
   TS_E_NOTFOUND, TS_E_RANGE (cap too small: nothing copied, not counted as
   a hit, recency unchanged) or TS_E_INVALID (the entry holds a put_ref
   pointer). */
TASKSTORE_API ts_result ts_lru_get_copy(ts_lru *lru, const char *key, size_t key_len,
                                        uint64_t now_ms, void *buf, size_t cap,
                                        size_t *len);

/* 1 if key holds a live entry at now_ms, else 0 (an expired entry is
   reclaimed). Changes neither recency nor the hit/miss counters. */
TASKSTORE_API int ts_lru_has(ts_lru *lru, const char *key, size_t key_len, uint64_t now_ms);

/* Removes key (expired or not). TS_OK if an entry was removed, else
   TS_E_NOTFOUND (not recorded as the last error). */
TASKSTORE_API ts_result ts_lru_delete(ts_lru *lru, const char *key, size_t key_len);

/* Batch forms, key i being keys[i] with key_lens[i] bytes (key_lens NULL:
   NUL-terminated keys).
   get_many: values[i]/lens[i] (out) as ts_lru_get, NULL/0 on a miss (lens
   may be NULL); *hits (out, may be NULL) the number of hits. Returns TS_OK
   unless the arguments are invalid.
   put_many_copy: ts_lru_put_copy of values[i]/lens[i] in order with one ttl;
   stops at the first failure and returns it; *stored (out, may be NULL) how
   many were stored (later ones may evict earlier ones if the batch exceeds
   the budget).
   delete_many: *removed (out, may be NULL) how many entries were removed. */
TASKSTORE_API ts_result ts_lru_get_many(ts_lru *lru, size_t count, const char *const *keys,
                                        const size_t *key_lens, uint64_t now_ms,
                                        const void **values, size_t *lens, size_t *hits);
TASKSTORE_API ts_result ts_lru_put_many_copy(ts_lru *lru, size_t count,
                                             const char *const *keys, const size_t *key_lens,
                                             const void *const *values, const size_t *lens,
                                             uint64_t ttl_ms, uint64_t now_ms, size_t *stored);
TASKSTORE_API ts_result ts_lru_delete_many(ts_lru *lru, size_t count, const char *const *keys,
                                           const size_t *key_lens, size_t *removed);

/* Removes every entry whose key starts with prefix[len]; *removed (out, may
   be NULL) the count. Cost: a prefix containing two ':' (such as
   "screenshots:abc:") visits only its group "kind:session", so removing a
   stream of one session is O(entries of that kind and session), the
   removed ones plus at most the bare "kind:session" key; any other prefix
   scans the whole cache (O(n)). */
TASKSTORE_API ts_result ts_lru_invalidate_prefix(ts_lru *lru, const char *prefix, size_t len,
                                                 size_t *removed);

/* Removes every entry whose key has session id[len] between its first ':'
   and its second ':' (or end): "metadata:ID", "screenshots:ID:3", any kind.
   O(removed + kinds present for that session). *removed (out, may be NULL). */
TASKSTORE_API ts_result ts_lru_invalidate_session(ts_lru *lru, const char *id, size_t len,
                                                  size_t *removed);

/* Removes every entry whose whole key matches pattern[len]: '*' any run of
   bytes, '?' one byte, '\' makes the next byte literal. O(n). */
TASKSTORE_API ts_result ts_lru_invalidate_glob(ts_lru *lru, const char *pattern, size_t len,
                                               size_t *removed);

/* Reclaims every entry expired at now_ms; *removed (out, may be NULL).
   Cost: O(reclaimed + entries whose TTL differs from the cache default),
   because default-TTL entries are kept in expiry order. Meant for tick/idle. */
TASKSTORE_API ts_result ts_lru_prune(ts_lru *lru, uint64_t now_ms, size_t *removed);

/* Changes the budget (0 = 100 MB default); shrinking evicts at once from the
   least-recently-used end. Returns TS_OK or TS_E_INVALID. */
TASKSTORE_API ts_result ts_lru_set_max_bytes(ts_lru *lru, uint64_t max_bytes, uint64_t now_ms);

/* Removes every entry (freeing put_ref values). Statistics are kept. */
TASKSTORE_API void ts_lru_clear(ts_lru *lru);

/* Fills *out (out) with the counters and the current size; const, O(1). */
TASKSTORE_API ts_result ts_lru_get_stats(const ts_lru *lru, uint64_t now_ms, ts_lru_stats *out);

/* Zeroes hits, misses, evictions and expirations. */
TASKSTORE_API void ts_lru_stats_reset(ts_lru *lru);

/* The cache's last failure (code, message, line); returns its code. */
TASKSTORE_API ts_result ts_lru_last_error(const ts_lru *lru, ts_error_info *out);

/* ======================================================================== */
/* >>api_queue: the persistence queue (the write path), usable alone as     */
/* ts_queue over any ts_io                                                   */
/* ======================================================================== */

/* Every mutation becomes a queued whole-file write or delete. An enqueue
   copies (or takes) the bytes and returns at once: no file I/O, and no
   allocation beyond the item itself (its path, bytes and dependency list).
   Nothing reaches the disk until the caller turns the gears:

     ts_queue_tick(q, now_ms, budget_us)   every frame: all critical items,
                                           then normal items whose batch
                                           window has passed;
     ts_queue_idle(q, now_ms, budget_us)   when idle: also low items, then the
                                           registered idle jobs, round robin;
     ts_queue_flush(q)                     everything queued is durable when
                                           it returns (or it says what failed).

   Coalescing. At most one item per path is waiting to be written: a write or
   delete of a path already queued replaces the queued bytes (last write
   wins), keeps the earlier position and enqueue time and takes the higher of
   the two priorities. Only ORDERING overrides the position: a rewrite that
   must follow something queued after the waiting item moves it (and what
   waits on it) behind that; and when the new dependency itself waits on the
   waiting item (A, then B after A, then A again after B) the new bytes are
   queued as a second item for the path, written after the first.

   Read-your-writes. ts_queue_lookup() answers from the queued bytes, so a
   value written a moment ago reads back before it reaches the disk and a
   queued delete reads as absent. Items that failed for good stay visible
   until the app drops them, so reads agree with what the app was told.

   ORDERING. An enqueue may name "after" paths: the item is written only
   when no queued item for those paths remains, i.e. their bytes are on disk
   AND their directory has been synced. The rule, and why it cannot
   deadlock: every item has a sequence number and a dependency always points
   at an item with a smaller one. After-paths resolve to the items queued at
   enqueue time (nothing queued: already durable); coalescing keeps the
   union of the old and new dependencies, and when a new one is younger the
   item and its dependents get new numbers behind it, in their old order (or
   a second item is queued, above). Sequence order is thus a valid write
   order: a batch writes its items in it, a due item pulls its dependencies
   into the batch whatever their priority, and before writing an item whose
   dependency was written earlier in the batch the writer syncs that
   dependency's directory. So a crash at any point leaves every dependent
   either old/absent or preceded by its durable dependencies (e.g. metadata
   after its chunks, attachment metadata after its data). An item whose
   dependency failed for good waits; dropping the failed item releases it
   (the app's decision). Cost: the rewrite that moves items is O(items
   queued) in time, still without I/O or allocation beyond the item.

   Sync budget (counted by the vtable): each write is one write_file_atomic
   (one file sync) with TS_WRITE_DEFER_DIRSYNC, and each batch ends with one
   sync_dir per distinct directory written (plus one per directory a later
   dependent had to wait for). N coalesced writes to a path in one window
   cost 1 file write; B files in one directory cost B file syncs and 1
   directory sync. A completion is reported only after its directory sync.
   (The reference vtables also count a directory they create as a dir sync.)
   A vtable with TS_IO_CAP_NO_DIRSYNC or no sync_dir_fn gets plain writes.

   Failures. An I/O error is retried with backoff (base * 2^(attempt-1)
   against now_ms) up to the attempts per priority (default 2 critical,
   4 normal, 6 low: 1, 3 and 5 retries). A failed fsync is never retried on
   the same file: every retry redoes the whole atomic replace from the queued
   bytes. After the last attempt the item is reported through the event
   callback and kept in the failed list (ts_queue_failed_*), still holding
   its ring slot: a failed write is never silently discarded.

   Back-pressure. Each priority has a ring of fixed capacity (grown only by
   ts_queue_reserve). An enqueue that needs a slot in a full ring flushes
   synchronously and tries again (default), or returns TS_E_BUSY when
   busy_error is set. The queue never grows by itself.

   Time. Enqueue times are the latest now_ms the queue has seen (tick, idle,
   ts_queue_set_now). Budgets are measured with clock_us_fn (default: the
   monotonic clock; without one, each write counts nominal_write_us).

   Callbacks (events, the logger) run inside queue calls and must not call
   into the same queue (such calls return TS_E_STATE). Idle jobs run outside
   any batch and may enqueue. One thread at a time per queue. */

typedef struct ts_queue ts_queue;

typedef enum ts_queue_priority {
    TS_PRIO_CRITICAL = 0, /* written on the next tick */
    TS_PRIO_NORMAL = 1,   /* written once its batch window has passed */
    TS_PRIO_LOW = 2       /* written in idle time only */
} ts_queue_priority;

typedef enum ts_queue_op {
    TS_QUEUE_WRITE = 0,   /* replace the file with the bytes */
    TS_QUEUE_DELETE = 1   /* remove the file (absent already counts as done) */
} ts_queue_op;

typedef enum ts_queue_event_type {
    TS_QUEUE_EV_ENQUEUED = 0,   /* accepted (coalesced says whether merged) */
    TS_QUEUE_EV_PROCESSING = 1, /* an attempt starts */
    TS_QUEUE_EV_COMPLETED = 2,  /* durable (after its directory sync) */
    TS_QUEUE_EV_RETRY = 3,      /* an attempt failed; another one will follow */
    TS_QUEUE_EV_FAILED = 4      /* the last attempt failed; now in the failed list */
} ts_queue_event_type;

typedef struct ts_queue_event {
    ts_queue_event_type type;
    uint64_t id;
    const char *path;           /* valid during the callback only */
    ts_queue_op op;
    ts_queue_priority prio;
    size_t len;                 /* bytes of a write */
    unsigned attempts;          /* attempts made so far */
    ts_result result;           /* RETRY / FAILED: the I/O error */
    int coalesced;              /* ENQUEUED: merged into a waiting item */
} ts_queue_event;

/* Event callback; must not call into the queue. */
typedef void (*ts_queue_event_fn)(void *user, const ts_queue_event *ev);

/* An idle job: do up to budget_us of work, return TS_DONE when nothing is
   left (for now), TS_OK when more remains, or an error (logged, the job stays
   registered). Runs outside any batch and may enqueue on the queue. */
typedef ts_result (*ts_queue_idle_fn)(void *user, uint64_t now_ms, uint64_t budget_us);

#define TS_QUEUE_DEFAULT_CAPACITY 1024u
#define TS_QUEUE_DEFAULT_WINDOW_MS 100u
#define TS_QUEUE_DEFAULT_BACKOFF_MS 50u
#define TS_QUEUE_MAX_AFTER 64u      /* after-paths per enqueue */

typedef struct ts_queue_config {
    ts_allocator allocator;     /* zero: TASKSTORE_MALLOC & co */
    ts_logger logger;           /* zero: silent */
    uint32_t capacity[3];       /* items per ring, by priority; 0: 1024 */
    uint32_t batch_window_ms;   /* normal priority; 0: 100 */
    uint8_t max_attempts[3];    /* by priority; 0: 2, 4, 6 (1, 3, 5 retries) */
    uint32_t backoff_ms;        /* first retry delay, doubled per attempt; 0: 50 */
    int busy_error;             /* full ring: 1 = TS_E_BUSY, 0 = flush synchronously */
    uint64_t (*clock_us_fn)(void *user);  /* monotonic microseconds; NULL: built in */
    void *clock_user;
    uint32_t nominal_write_us;  /* budget charged per write when there is no
                                   clock at all; 0: 1000 */
    ts_queue_event_fn event_fn; /* NULL: no events */
    void *event_user;
} ts_queue_config;

/* A full enqueue request (ts_queue_push & co are shorthands for it). */
typedef struct ts_queue_req {
    ts_queue_op op;
    const char *path;           /* store-relative path (validated) */
    const void *data;           /* WRITE: the bytes, copied (NULL when len 0) */
    size_t len;
    void *owned_data;           /* or: bytes allocated with the queue's allocator
                                   (owned_cap bytes) that the queue takes over on
                                   success; on failure the caller keeps them */
    size_t owned_cap;
    ts_queue_priority prio;
    const char *const *after;   /* paths that must be durable first */
    size_t after_count;         /* <= TS_QUEUE_MAX_AFTER */
} ts_queue_req;

typedef struct ts_queue_item_info {
    uint64_t id;
    const char *path;           /* valid until the next queue mutation */
    const void *data;           /* WRITE: the queued bytes (same validity) */
    size_t len;
    ts_queue_op op;
    ts_queue_priority prio;
    unsigned attempts;
    ts_result result;           /* last I/O error, TS_OK if none */
    int failed;                 /* in the failed list */
    uint64_t enqueued_ms;
} ts_queue_item_info;

typedef struct ts_queue_stats {
    uint64_t pending[3];        /* items waiting, by priority (failed excluded) */
    uint64_t failed_items;      /* items in the failed list now */
    uint64_t enqueued;          /* accepted enqueues, coalesced ones included */
    uint64_t coalesced;         /* enqueues merged into a waiting item */
    uint64_t completed;         /* items made durable */
    uint64_t failed;            /* items that exhausted their attempts (ever) */
    uint64_t retries;           /* failed attempts that were retried */
    uint64_t file_writes;       /* write_file_atomic calls that succeeded */
    uint64_t removes;           /* remove calls that succeeded */
    uint64_t dir_syncs;         /* sync_dir calls */
    uint64_t bytes_written;
    uint64_t batches;           /* tick/idle/flush rounds that did I/O */
    uint64_t largest_batch;     /* most write/remove calls in one batch */
    uint64_t write_time_us;     /* time spent in batches (by the budget clock) */
    uint64_t sync_flushes;      /* back-pressure flushes forced by a full ring */
} ts_queue_stats;

/* The defaults a zero-filled ts_queue_config stands for, filled in. */
TASKSTORE_API ts_queue_config ts_queue_config_default(void);

/* Opens a queue writing through io (in: copied; io->user must outlive the
   queue). cfg (in, may be NULL = defaults). Allocates the rings, the item
   slab and the path map for the full capacity now. out (out) NULL on
   failure. Returns TS_OK, TS_E_INVALID or TS_E_NOMEM. */
TASKSTORE_API ts_result ts_queue_open(const ts_io *io, const ts_queue_config *cfg, ts_queue **out);

/* Frees the queue and DISCARDS anything still queued (no I/O). NULL is
   allowed. Use ts_queue_shutdown to write first. */
TASKSTORE_API void ts_queue_close(ts_queue *q);

/* Flushes, then closes. On TS_OK the queue is freed. On failure the queue
   stays open so the failed items can be inspected, retried or dropped:
   call ts_queue_shutdown again, or ts_queue_close to discard them. */
TASKSTORE_API ts_result ts_queue_shutdown(ts_queue *q);

TASKSTORE_API ts_result ts_queue_last_error(const ts_queue *q, ts_error_info *out);

/* Enqueues req. id_out (out, may be NULL): the item's id (the waiting
   item's id when coalesced). No file I/O unless the ring is full and
   busy_error is 0. Returns TS_OK, TS_E_INVALID (bad path, op, priority,
   too many after-paths, NULL data with len > 0), TS_E_BUSY (ring full),
   TS_E_NOMEM (queue unchanged) or TS_E_STATE (called from a callback). */
TASKSTORE_API ts_result ts_queue_push_ex(ts_queue *q, const ts_queue_req *req, uint64_t *id_out);

/* Queues a write of a copy of len bytes to path; after (may be NULL) is a
   path that must be durable first. */
TASKSTORE_API ts_result ts_queue_push(ts_queue *q, const char *path, const void *data, size_t len,
                                      ts_queue_priority prio, const char *after, uint64_t *id_out);

/* As ts_queue_push, but takes over data (cap bytes from the queue's
   allocator) instead of copying it; on failure the caller keeps it. */
TASKSTORE_API ts_result ts_queue_push_owned(ts_queue *q, const char *path, void *data, size_t len,
                                            size_t cap, ts_queue_priority prio, const char *after,
                                            uint64_t *id_out);

/* Queues the removal of path. */
TASKSTORE_API ts_result ts_queue_delete(ts_queue *q, const char *path, ts_queue_priority prio,
                                        const char *after, uint64_t *id_out);

/* The read-your-writes overlay. Returns TS_OK with *data and *len (out) the
   queued bytes of a pending write (valid until the next queue mutation;
   never NULL), TS_E_NOTFOUND for a pending delete, TS_DONE when the queue
   holds nothing for path (read the disk). No allocation, no I/O. */
TASKSTORE_API ts_result ts_queue_lookup(const ts_queue *q, const char *path,
                                        const void **data, size_t *len);

/* Iterates the overlay: one item per queued path (the newest), in no
   particular order. Start with *pos = 0; TS_OK and *info (out) per item,
   TS_DONE at the end. Do not mutate the queue while iterating. */
TASKSTORE_API ts_result ts_queue_next(const ts_queue *q, size_t *pos, ts_queue_item_info *info);

/* Tells the queue the time without doing any work (enqueue times use it). */
TASKSTORE_API void ts_queue_set_now(ts_queue *q, uint64_t now_ms);

/* Every frame: writes all due critical items, then due normal items while
   budget_us lasts (critical items and what they depend on are written
   whatever the budget). Returns TS_OK, or the error of the first item that
   failed for good during the call, TS_E_NOMEM, TS_E_STATE. */
TASKSTORE_API ts_result ts_queue_tick(ts_queue *q, uint64_t now_ms, uint64_t budget_us);

/* When idle: as tick, plus low items, then the idle jobs in round robin,
   each given a slice of what is left of budget_us. Returns TS_DONE when the
   queue is empty (failed items aside) and every job returned TS_DONE, TS_OK
   when work remains, or the first error. */
TASKSTORE_API ts_result ts_queue_idle(ts_queue *q, uint64_t now_ms, uint64_t budget_us);

/* Writes everything queued (windows, backoff and budgets ignored; each item
   gets all its attempts). Returns TS_OK when the queue is empty, i.e. all of
   it is durable; otherwise the error of the first failed item (they stay in
   the failed list; items waiting on them stay queued). */
TASKSTORE_API ts_result ts_queue_flush(ts_queue *q);

/* Discards every queued and failed item without writing (no events). */
TASKSTORE_API ts_result ts_queue_clear(ts_queue *q);

/* Grows the ring of one priority to at least capacity items (never
   shrinks). Allocates; no I/O. */
TASKSTORE_API ts_result ts_queue_reserve(ts_queue *q, ts_queue_priority prio, uint32_t capacity);

/* Items queued (pending and failed). */
TASKSTORE_API size_t ts_queue_count(const ts_queue *q);

TASKSTORE_API void ts_queue_get_stats(const ts_queue *q, ts_queue_stats *out);

/* The failed list, oldest failure first. failed_get: TS_OK and *info
   (out), or TS_E_RANGE. failed_retry: back to pending with fresh attempts,
   written by the next tick/idle/flush. failed_drop: forgets the write (its
   overlay entry goes; items that waited on it are released). Both return
   TS_E_NOTFOUND for an id that is not in the failed list. */
TASKSTORE_API size_t    ts_queue_failed_count(const ts_queue *q);
TASKSTORE_API ts_result ts_queue_failed_get(const ts_queue *q, size_t index, ts_queue_item_info *info);
TASKSTORE_API ts_result ts_queue_failed_retry(ts_queue *q, uint64_t id);
TASKSTORE_API ts_result ts_queue_failed_drop(ts_queue *q, uint64_t id);

/* Registers an idle job (name copied, for messages). job_id (out, may be
   NULL) for ts_queue_remove_idle_job. Jobs may be added or removed from
   inside a job. */
TASKSTORE_API ts_result ts_queue_add_idle_job(ts_queue *q, const char *name, ts_queue_idle_fn fn,
                                              void *user, uint32_t *job_id);
TASKSTORE_API ts_result ts_queue_remove_idle_job(ts_queue *q, uint32_t job_id);

/* ======================================================================== */
/* >>api_index: tokenizer, inverted index, search, query strings            */
/* ======================================================================== */

/* The search core of DESIGN.md section 6 as a standalone object: a ts_index
   holds the full-text, tag, topic, category, subCategory, status and month
   indexes of a set of sessions, answers queries, and serializes itself to a
   checksummed byte buffer (the store writes that buffer to
   `session-indexes`). It knows nothing about JSON or files: the caller
   describes each session with a ts_index_doc. */

typedef struct ts_index ts_index;

/* ---- tokenizer ----------------------------------------------------------
   DESIGN.md section 6, exactly: UTF-8 in (an invalid byte is a separator);
   separators are ASCII whitespace and every ASCII character other than
   [A-Za-z0-9], U+0080-U+00BF, U+00D7, U+00F7, U+2000-U+206F, U+3000-U+303F
   and U+FF01-U+FF0F; every other code point is a token character. Tokens
   are case-folded (ASCII; U+00C0-U+00DE except U+00D7 +0x20; U+0100-U+017F
   even -> next odd except U+0130, U+0138, U+0149 unchanged, U+0178 -> U+00FF
   and U+0179-U+017E odd -> next even; Greek U+0391-U+03A9 except U+03A2
   +0x20; Cyrillic U+0410-U+042F +0x20, U+0400-U+040F +0x50), then stop words
   (the a an and or but in on at to for) and tokens of fewer than 2 code
   points are dropped. The rules are applied literally, so e.g. U+0139 and
   U+013A (an odd/even pair in Unicode) do not fold together. */

/* Called once per token: token is the folded UTF-8 (not NUL-terminated,
   valid only during the call). Return 0 to continue, non-zero to stop. */
typedef int (*ts_token_fn)(void *user, const char *token, size_t len);

/* Tokenizes text[0..len) and calls fn for each token, in order.
   alloc (in, may be NULL) is used only for tokens longer than 256 bytes.
   Returns TS_OK, TS_E_CANCELLED if fn stopped early, TS_E_NOMEM, or
   TS_E_INVALID for a NULL fn (or NULL text with len > 0). */
TASKSTORE_API ts_result ts_tokenize(const char *text, size_t len, const ts_allocator *alloc,
                                    ts_token_fn fn, void *user);

/* ---- documents ---------------------------------------------------------- */

/* One session's indexed fields. Strings are counted (need not be
   NUL-terminated) and are copied or tokenized during the call. A NULL
   category / sub_category / status means the session does not have that
   field (it then never matches a filter on it; "" is a present, empty
   value). tag_lens / topic_lens may be NULL: each tag is then
   NUL-terminated. id must be a valid session id (DESIGN.md section 5). */
typedef struct ts_index_doc {
    const char *id;             size_t id_len;
    int has_start_time;         int64_t start_time_ms;   /* ms since 1970 UTC */
    const char *name;           size_t name_len;          /* full text */
    const char *description;    size_t description_len;   /* full text */
    const char *const *tags;    const size_t *tag_lens;   size_t tag_count;
    const char *const *topics;  const size_t *topic_lens; size_t topic_count;
    const char *category;       size_t category_len;
    const char *sub_category;   size_t sub_category_len;
    const char *status;         size_t status_len;
    /* Record and document text (screenshot activity, audio transcription,
       summary narrative): indexed as full text only when the index was
       created with index_extra_text, ignored otherwise. */
    const char *extra_text;     size_t extra_text_len;
} ts_index_doc;

typedef struct ts_index_config {
    ts_allocator alloc;         /* zero: TASKSTORE_MALLOC/REALLOC/FREE */
    ts_logger logger;           /* zero: silent */
    int index_extra_text;       /* 1: add ts_index_doc.extra_text to the full text */
} ts_index_config;

/* The defaults a zero-filled config means. */
TASKSTORE_API ts_index_config ts_index_config_default(void);

/* Creates an empty index. cfg (in, may be NULL for defaults); *out (out) the
   index, NULL on failure. Returns TS_OK or TS_E_NOMEM. */
TASKSTORE_API ts_result ts_index_create(const ts_index_config *cfg, ts_index **out);

/* Frees the index and everything it owns. NULL is fine. */
TASKSTORE_API void ts_index_destroy(ts_index *idx);

/* The index's last failure (code, message, implementation line). */
TASKSTORE_API ts_result ts_index_last_error(const ts_index *idx, ts_error_info *out);

/* Adds a session, or replaces the indexed fields of the session with the same
   id. An update diffs the old and new terms, so it costs the session's terms,
   not the size of the index. Returns TS_OK, TS_E_INVALID (bad id or NULL
   arrays with non-zero counts), TS_E_TOOBIG (more than 2^32-1 tokens or
   sessions) or TS_E_NOMEM; on failure the index is unchanged (apart from
   unused dictionary entries that ts_index_optimize() drops). */
TASKSTORE_API ts_result ts_index_put(ts_index *idx, const ts_index_doc *doc);

/* Removes one session. Returns TS_OK or TS_E_NOTFOUND; never allocates. */
TASKSTORE_API ts_result ts_index_remove(ts_index *idx, const char *id, size_t id_len);

/* 1 when a session with this id is indexed, 0 otherwise. */
TASKSTORE_API int ts_index_contains(const ts_index *idx, const char *id, size_t id_len);

/* Removes every session (keeps the configuration). */
TASKSTORE_API void ts_index_clear(ts_index *idx);

/* Clears the index and indexes docs[0..count) (a later duplicate id replaces
   an earlier one), then trims the posting arrays to size. now_ms is
   recorded as the build time in the statistics. On failure the index is
   left empty. */
TASKSTORE_API ts_result ts_index_build(ts_index *idx, const ts_index_doc *docs, size_t count,
                                       int64_t now_ms);

/* ---- queries -------------------------------------------------------------
   Semantics (DESIGN.md section 6; this is the reading the tests check
   against a brute-force model):
   - Criteria: every text term, every listed tag, every listed topic, each
     given category / sub_category / status, and the date range (one
     criterion, present when has_from or has_to). TS_QUERY_AND matches a
     session that satisfies all criteria, TS_QUERY_OR one that satisfies at
     least one. A query without criteria matches every session.
   - Text is split on ASCII whitespace into words; each word is tokenized
     like indexed text and each resulting token is a term. When a word ends
     in '*', its last raw token (before stop-word and length filtering)
     becomes a prefix term: it skips the stop-word rule but not the
     2-code-point rule, and matches a session having any indexed term that
     starts with it. Other tokens are exact terms. Repeated terms count once.
     Text yielding no terms adds no criterion, so with TS_QUERY_OR "the" plus
     a tag is just the tag, and "the" alone matches everything; a term that
     no session has is still a criterion (nothing matches it).
   - tags / topics / category / sub_category / status compare byte for byte
     with the session's values (NUL-terminated here); NULL means not given.
   - [from_ms, to_ms] is inclusive on startTime, either end may be open;
     sessions without a startTime never match it.
   - Order: startTime descending, sessions without one last, then id in byte
     order. rank_bm25 orders by the BM25 score of the text terms instead
     (k1 = 1.2, b = 0.75; a prefix term counts as one term whose frequency is
     the sum over the terms it covers), sessions matched without text scoring
     0, ties in the default order.
   - total counts every match; offset then limit (0 = no limit) select the
     ids returned. */

#define TS_QUERY_AND 0
#define TS_QUERY_OR  1

typedef struct ts_query {
    const char *text;                        /* NULL or "": no text */
    const char *const *tags;    size_t tag_count;
    const char *const *topics;  size_t topic_count;
    const char *category;                    /* NULL: not given */
    const char *sub_category;
    const char *status;
    int has_from, has_to;
    int64_t from_ms, to_ms;                  /* inclusive */
    int op;                                  /* TS_QUERY_AND (0) or TS_QUERY_OR */
    size_t limit;                            /* 0: all */
    size_t offset;
    int rank_bm25;
} ts_query;

/* Search results: one allocation owned by the hits, freed with
   ts_index_hits_free(). ids stay valid after later index changes. */
typedef struct ts_index_hits {
    size_t total;              /* matches before offset/limit */
    size_t count;              /* entries in ids/id_lens (and scores) */
    const char *const *ids;    /* NUL-terminated session ids */
    const size_t *id_lens;
    const double *scores;      /* BM25 score per id with rank_bm25, else NULL */
    void *mem_;                /* private */
} ts_index_hits;

/* Runs q against the index. *out (out) zeroed first, then filled; free it
   with ts_index_hits_free() even on failure. Returns TS_OK, TS_E_INVALID
   (bad op, NULL arrays with non-zero counts) or TS_E_NOMEM. */
TASKSTORE_API ts_result ts_index_search(ts_index *idx, const ts_query *q, ts_index_hits *out);

/* Frees search results; the struct is zeroed. NULL or zeroed hits are fine. */
TASKSTORE_API void ts_index_hits_free(ts_index_hits *hits);

/* ---- query strings (the CLI's compact form) -------------------------------
   Items are separated by ASCII whitespace:
     tag:V  topic:V        add a tag / topic (repeatable)
     category:V  subcategory:V  status:V
     from:MS  to:MS        inclusive startTime bounds (signed decimal ms)
     limit:N  offset:N     unsigned decimal
     op:and  op:or         the operator; bare `and`/`AND`/`or`/`OR` too (they
                           are stop words, so no text is lost)
     rank:bm25  rank:time  the order
     anything else         a text word; words are joined with one space
   A value or word is either bare (up to the next whitespace, non-empty) or
   "quoted" (\" and \\ escape; must be followed by whitespace or the end);
   quote a text word to use a keyword as text ("rank:x"), or a value to make
   it empty or hold spaces (category:"Deep work"). Keys are lowercase;
   `foo:bar` with an unknown key is a text word. Each of category,
   subcategory, status, from, to, limit, offset, op, rank may appear once.
   Errors are TS_E_INVALID with a message: unterminated quote, text right
   after a closing quote, empty bare value, malformed or out-of-range number,
   a repeated key, both `and` and `or`, a NUL byte. Input longer than
   TASKSTORE_MAX_QUERY bytes (default 65536) is TS_E_TOOBIG. */

typedef struct ts_query_parsed {
    ts_query query;            /* its strings point into mem_ */
    void *mem_;                /* private */
    size_t mem_size_;          /* private */
    ts_allocator alloc_;       /* private */
} ts_query_parsed;

/* Parses s[0..n). alloc (in, may be NULL); *out (out) zeroed first, free it
   with ts_query_parsed_free(); err (out, may be NULL) gets the message. */
TASKSTORE_API ts_result ts_query_parse(const char *s, size_t n, const ts_allocator *alloc,
                                       ts_query_parsed *out, ts_error_info *err);

/* Frees a parsed query; the struct is zeroed. */
TASKSTORE_API void ts_query_parsed_free(ts_query_parsed *p);

/* ---- persistence ---------------------------------------------------------
   The buffer: "TSIX", u32 version, u32 flags, u64 payload length, CRC-32C of
   all of that and the payload, then the payload (varints: sessions with id
   and startTime, then every term in byte order, front-coded, with its
   delta-coded postings and term frequencies; month keys are derived from
   startTime and not stored). save(load(x)) == x for a valid x. */

#define TS_INDEX_FORMAT_VERSION 1

/* Serializes the whole index. *data (out) is allocated with the index's
   allocator as exactly *len bytes; release it with ts_index_free_buffer()
   (or the allocator's free_fn with that size). Returns TS_OK, TS_E_NOMEM. */
TASKSTORE_API ts_result ts_index_save(ts_index *idx, void **data, size_t *len);

/* Frees a buffer returned by ts_index_save(). */
TASKSTORE_API void ts_index_free_buffer(ts_index *idx, void *data, size_t len);

/* Replaces the index's contents with a serialized index. The
   index_extra_text option is taken from the buffer. Never allocates more
   than a small multiple of len. Returns TS_OK, TS_E_VERSION, TS_E_CORRUPT
   (bad magic, checksum, truncated or inconsistent data, hostile counts) or
   TS_E_NOMEM; on failure the index is unchanged. */
TASKSTORE_API ts_result ts_index_load(ts_index *idx, const void *data, size_t len);

/* ---- maintenance ---------------------------------------------------------- */

typedef struct ts_index_stats {
    uint64_t sessions;
    uint64_t terms;              /* live dictionary entries, every index */
    uint64_t text_terms, tag_terms, topic_terms, category_terms,
             sub_category_terms, status_terms, month_terms;
    uint64_t dead_terms;         /* entries no session uses any more */
    uint64_t postings;           /* (term, session) pairs */
    uint64_t text_tokens;        /* indexed tokens, for BM25 lengths */
    uint64_t memory_bytes;       /* everything the index holds allocated */
    uint64_t disk_bytes;         /* size of the last save or load, 0 if none */
    uint64_t changes_since_optimize; /* puts and removes */
    int has_last_built, has_last_optimized;
    int64_t last_built_ms, last_optimized_ms;
    int index_extra_text;
} ts_index_stats;

/* Fills *out (zeroed first). Walks the index: O(terms + sessions). */
TASKSTORE_API ts_result ts_index_stats_get(ts_index *idx, ts_index_stats *out);

typedef struct ts_index_verify_report {
    uint64_t missing_postings;   /* a session's term whose posting list lacks it */
    uint64_t extra_postings;     /* a posting no session's term list accounts for */
    uint64_t bad_terms;          /* wrong counts, unsorted or malformed lists */
    uint64_t bad_sessions;       /* wrong length, month, order or id entries */
    char first_problem[160];     /* "" when clean */
} ts_index_verify_report;

/* Checks the index against itself: every session's term list against the
   posting lists and back, counts, ordering, month keys. With repair != 0
   the posting lists are rebuilt from the sessions' term lists when a
   problem is found. report (out, may be NULL). Returns TS_OK when clean
   (or repaired), TS_E_CORRUPT with the first problem otherwise. */
TASKSTORE_API ts_result ts_index_verify(ts_index *idx, int repair, ts_index_verify_report *report);

/* Checks one session against its source: the terms doc yields versus what
   the index holds for doc->id (all missing when the id is not indexed).
   *missing / *extra (out) count terms. Returns TS_OK when they agree,
   TS_E_NOTFOUND when the id is not indexed, TS_E_CORRUPT on a difference,
   TS_E_INVALID/TS_E_NOMEM. Repair a difference with ts_index_put(). May
   add unused dictionary entries (for terms the index never had), which
   ts_index_optimize() drops. */
TASKSTORE_API ts_result ts_index_check_doc(ts_index *idx, const ts_index_doc *doc,
                                           size_t *missing, size_t *extra);

/* Compacts after many updates: drops dead dictionary entries, renumbers
   sessions densely, picks the best container for every posting list. Costs
   about one save plus one load; on failure the index is unchanged. */
TASKSTORE_API ts_result ts_index_optimize(ts_index *idx, int64_t now_ms);

/* Calls fn(user, "YYYY-MM", 7, count) for each month that has sessions, in
   ascending order (years outside 0000-9999 print as many digits as needed,
   with a leading '-' when negative). Return non-zero from fn to stop. */
typedef int (*ts_index_month_fn)(void *user, const char *month, size_t len, size_t count);
TASKSTORE_API ts_result ts_index_months(ts_index *idx, ts_index_month_fn fn, void *user);

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

/* The POSIX file vtable needs POSIX.1-2008 declarations (openat, fsync, ...).
   The top of this file asks for them when the implementation is the first
   thing a file includes; if a strict ISO mode (-std=c99) already hid them,
   say how to fix it rather than fail on undeclared functions. */
#if defined(__GLIBC__) && !defined(__USE_XOPEN2K8) && !defined(TASKSTORE_NO_STDIO) && !defined(_WIN32)
#error "taskstore.h: strict ISO C mode hides POSIX; #define _POSIX_C_SOURCE 200809L before the first #include of this file (or use -std=gnu99, or TASKSTORE_NO_STDIO)"
#endif

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

TASKSTORE_DEF void ts_blob_free(ts_blob *blob)
{
    if (!blob) return;
    if (blob->data) ts__free(&blob->alloc, blob->data, blob->cap);
    memset(blob, 0, sizeof *blob);
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
        if (p != (const unsigned char *)data) {
            /* one overlapping load instead of a byte loop (in-memory only,
               so the hash need not match across endianness) */
            memcpy(&k, p + n - 8, 8);
            k >>= 8 * (8 - n);
        } else {
            for (i = 0; i < n; i++) k |= (uint64_t)p[i] << (8 * i);
        }
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
   All 64 rounds are unrolled through macros that rename a..h instead of
   shifting them, and the schedule lives in a 16-word ring, so the compiler
   sees only constant indices. h + K + W is summed first because it does not
   wait on the previous round; Maj reuses a^b of the previous round as b^c.
   (Full unrolling measured ~3% faster than a 3-iteration loop.) */

#define TS__SHA_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define TS__SHA_BSIG0(x) (TS__SHA_ROR(x, 2) ^ TS__SHA_ROR(x, 13) ^ TS__SHA_ROR(x, 22))
#define TS__SHA_BSIG1(x) (TS__SHA_ROR(x, 6) ^ TS__SHA_ROR(x, 11) ^ TS__SHA_ROR(x, 25))
#define TS__SHA_SSIG0(x) (TS__SHA_ROR(x, 7) ^ TS__SHA_ROR(x, 18) ^ ((x) >> 3))
#define TS__SHA_SSIG1(x) (TS__SHA_ROR(x, 17) ^ TS__SHA_ROR(x, 19) ^ ((x) >> 10))
#define TS__SHA_LOAD(p) \
    ((uint32_t)(p)[0] << 24 | (uint32_t)(p)[1] << 16 | (uint32_t)(p)[2] << 8 | (uint32_t)(p)[3])

/* One round; w is this round's schedule word. */
#define TS__SHA_RND(a, b, c, d, e, f, g, h, k, w)                              \
    t1 = h + (k) + (w);                                                        \
    t1 += (((f) ^ (g)) & (e)) ^ (g);                                           \
    t1 += TS__SHA_BSIG1(e);                                                    \
    ab = a ^ b;                                                                \
    d += t1;                                                                   \
    h = t1 + TS__SHA_BSIG0(a) + ((ab & bc) ^ b);                               \
    bc = ab;

/* Round j (0..15) of the first 16: the word comes from the block. */
#define TS__SHA_R0(a, b, c, d, e, f, g, h, base, j)                            \
    w[j] = TS__SHA_LOAD(p + 4 * (j));                                          \
    TS__SHA_RND(a, b, c, d, e, f, g, h, ts__sha256_k[j], w[j])

/* Round base + j of the last 48 (j = 0..15): extend the schedule in place. */
#define TS__SHA_R1(a, b, c, d, e, f, g, h, base, j)                            \
    w[j] += TS__SHA_SSIG1(w[((j) + 14) & 15]) + w[((j) + 9) & 15] +            \
            TS__SHA_SSIG0(w[((j) + 1) & 15]);                                  \
    TS__SHA_RND(a, b, c, d, e, f, g, h, ts__sha256_k[(base) + (j)], w[j])

#define TS__SHA_16(R, base)                                                    \
    R(a, b, c, d, e, f, g, h, base, 0)  R(h, a, b, c, d, e, f, g, base, 1)     \
    R(g, h, a, b, c, d, e, f, base, 2)  R(f, g, h, a, b, c, d, e, base, 3)     \
    R(e, f, g, h, a, b, c, d, base, 4)  R(d, e, f, g, h, a, b, c, base, 5)     \
    R(c, d, e, f, g, h, a, b, base, 6)  R(b, c, d, e, f, g, h, a, base, 7)     \
    R(a, b, c, d, e, f, g, h, base, 8)  R(h, a, b, c, d, e, f, g, base, 9)     \
    R(g, h, a, b, c, d, e, f, base, 10) R(f, g, h, a, b, c, d, e, base, 11)    \
    R(e, f, g, h, a, b, c, d, base, 12) R(d, e, f, g, h, a, b, c, base, 13)    \
    R(c, d, e, f, g, h, a, b, base, 14) R(b, c, d, e, f, g, h, a, base, 15)

/* Compresses nblocks consecutive 64-byte blocks at p into state. */
TS__PRIVATE void ts__sha256_blocks_c(uint32_t state[8], const unsigned char *p, size_t nblocks)
{
    uint32_t w[16];
    while (nblocks--) {
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        uint32_t t1, ab, bc = b ^ c;
        TS__SHA_16(TS__SHA_R0, 0)
        TS__SHA_16(TS__SHA_R1, 16)
        TS__SHA_16(TS__SHA_R1, 32)
        TS__SHA_16(TS__SHA_R1, 48)
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
   and cpuid decides at run time whether it may be called. Not clang-cl
   (_MSC_VER): its immintrin.h declares only the intrinsics of the features
   enabled on the command line. */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(_MSC_VER)
#define TS__SHA256_NI 1
#include <immintrin.h>
#include <cpuid.h>

/* 1 if the CPU has SHA (leaf 7 ebx bit 29) and SSE4.1 (leaf 1 ecx bit 19).
   cpuid traps to the hypervisor in a VM (1.5-2 microseconds per cpuid
   measured under KVM: more than hashing 2 KB with SHA-NI), so the answer is
   cached instead of asked per context. The cache is a fact about the
   machine, written idempotently with relaxed atomics: no data race, and
   nothing a caller could observe change. */
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

#ifdef __AVX__
    /* The sha256* instructions exist only in legacy SSE encoding; with AVX
       on, the compiler emits everything around them as VEX. Mixing the two
       while a caller has left the upper ymm halves dirty (seen with gcc 12
       -march=native code) measured 200x slower here. vzeroupper cleans. */
    _mm256_zeroupper();
#endif
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
    /* the context holds message bytes: clear it */
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

/* ======================================================================== */
/* >>json: arena DOM, strict RFC 8259 reader, writers, equality and diff    */
/* ======================================================================== */
/* Every JSON file the library touches (session metadata, chunk files of
   records, CA metadata, legacy sessions) goes through this section.

   - ts__json_doc is an arena: nodes, strings and the parsed text live in
     chunks taken from its allocator and go away in one ts__json_doc_free.
   - ts__json_parse copies the text into the arena once and decodes strings
     in place (a decoded string is never longer than its source), so a parse
     makes few allocations and its memory is bounded by the input: the text
     plus one node per value, and every value costs at least one byte of
     input. A failed parse gives back everything it took from the arena.
   - Numbers keep their lexeme, so parse -> write reproduces number text
     byte for byte ("1.0", "1e3" and 20-digit ids survive).
   - ts__json_write / ts__jw_* write compact JSON (or 2-space pretty JSON),
     escaping only '"', '\\' and control characters.
   - ts__json_equal / ts__json_diff compare documents the way JSON.parse
     would see them: objects as maps where the last duplicate key wins,
     numbers by value.

   At a glance:
     doc      ts__json_doc_init, ts__json_doc_free
     read     ts__json_parse, ts__json_validate
     walk     node->type, ->next (siblings), ->key/->key_len (object members),
              ts__json_first, ts__json_count, ts__json_at
     get      ts__json_get, _get_n, _get_str, _get_int; ts__json_str, _int,
              _num, _bool; ts__json_is_null/_bool/_number/_string/_array/_object
     build    ts__json_new_null/_bool/_int/_number/_string/_object/_array,
              ts__json_object_set, ts__json_array_push, ts__json_object_remove,
              ts__json_clone
     write    ts__json_write, ts__json_write_string, ts__jw_* (streaming)
     compare  ts__json_equal, ts__json_diff
     numbers  ts__json_strtod (locale-independent)
   Nodes are plain data owned by their doc; a tree may point into several
   docs (a member set from another doc's node) only if those docs live at
   least as long. */

#include <stdlib.h> /* strtod */
#include <float.h>  /* FLT_EVAL_METHOD */

#ifndef TASKSTORE_MAX_JSON_DEPTH
#define TASKSTORE_MAX_JSON_DEPTH 64
#endif
#ifndef TASKSTORE_MAX_JSON_BYTES
#define TASKSTORE_MAX_JSON_BYTES ((size_t)256 << 20)
#endif
#ifndef TASKSTORE_MAX_JSON_STRING
#define TASKSTORE_MAX_JSON_STRING ((size_t)64 << 20)
#endif
#ifndef TASKSTORE_MAX_JSON_NODES
#define TASKSTORE_MAX_JSON_NODES ((size_t)1 << 24)
#endif

typedef enum ts__json_type {
    TS__JSON_NULL = 0,
    TS__JSON_FALSE,
    TS__JSON_TRUE,
    TS__JSON_NUMBER,
    TS__JSON_STRING,
    TS__JSON_ARRAY,
    TS__JSON_OBJECT
} ts__json_type;

typedef struct ts__json ts__json;
struct ts__json {
    ts__json *next;        /* next sibling; NULL for the last child and the root */
    const char *key;       /* member key (NUL-terminated) when the parent is an object */
    uint32_t key_len;
    unsigned char type;    /* a ts__json_type */
    unsigned char is_int;  /* NUMBER: the value is an integer with |v| <= 2^53 */
    union {
        struct { ts__json *first, *last; size_t count; } kids;   /* ARRAY, OBJECT */
        struct { const char *ptr; size_t len; double num; } s;   /* STRING: decoded bytes (NUL after
                                                                    them); NUMBER: lexeme (ptr may be
                                                                    NULL for built numbers) + value */
    } u;
};

/* ---- the arena ------------------------------------------------------------ */

typedef struct ts__json_chunk {
    struct ts__json_chunk *prev;
    size_t size;                 /* the whole allocation, header included */
} ts__json_chunk;

typedef struct ts__json_doc {
    const ts_allocator *alloc;   /* NULL: the TASKSTORE_MALLOC defaults */
    ts__json_chunk *chunks;      /* newest first */
    unsigned char *cur;          /* bump pointer in the current chunk */
    size_t left;                 /* bytes free after cur */
    size_t next_size;            /* size of the next ordinary chunk (0: default) */
    size_t bytes;                /* sum of the chunk sizes held */
} ts__json_doc;

/* Position of an arena, to give back everything allocated after it. */
typedef struct ts__json_mark {
    ts__json_chunk *chunks;
    unsigned char *cur;
    size_t left, bytes;
} ts__json_mark;

#define TS__JSON_HDR ((sizeof(ts__json_chunk) + 15) & ~(size_t)15)
#define TS__JSON_CHUNK_MIN ((size_t)4096)
#define TS__JSON_CHUNK_MAX ((size_t)1 << 20)
#define TS__JSON_2P53 9007199254740992.0
/* Keys are stored with 32-bit lengths (nodes stay at 48 bytes). */
TS__STATIC_ASSERT(json_key_len, TASKSTORE_MAX_JSON_STRING <= 0xFFFFFFFFu);

/* A zero-filled doc is also valid (default allocator). */
TS__PRIVATE void ts__json_doc_init(ts__json_doc *doc, const ts_allocator *a)
{
    memset(doc, 0, sizeof *doc);
    doc->alloc = a;
}

/* Frees every node and string of the doc; the doc stays usable (empty). */
TS__PRIVATE void ts__json_doc_free(ts__json_doc *doc)
{
    ts__json_chunk *c = doc->chunks;
    while (c) {
        ts__json_chunk *prev = c->prev;
        ts__free(doc->alloc, c, c->size);
        c = prev;
    }
    doc->chunks = NULL; doc->cur = NULL; doc->left = 0; doc->bytes = 0; doc->next_size = 0;
}

TS__PRIVATE ts__json_mark ts__json_doc_mark(const ts__json_doc *doc)
{
    ts__json_mark m;
    m.chunks = doc->chunks; m.cur = doc->cur; m.left = doc->left; m.bytes = doc->bytes;
    return m;
}

TS__PRIVATE void ts__json_doc_release(ts__json_doc *doc, const ts__json_mark *m)
{
    while (doc->chunks && doc->chunks != m->chunks) {
        ts__json_chunk *c = doc->chunks;
        doc->chunks = c->prev;
        ts__free(doc->alloc, c, c->size);
    }
    doc->cur = m->cur; doc->left = m->left; doc->bytes = m->bytes;
}

TS__PRIVATE size_t ts__json_chunk_cap(size_t n)
{
    return n < TS__JSON_CHUNK_MAX ? n : TS__JSON_CHUNK_MAX;
}

/* Adds a chunk of `size` bytes (header included). The current chunk moves
   to it unless `own` (a big block that keeps the chunk to itself). Returns
   the start of its usable space. */
TS__PRIVATE unsigned char *ts__json_add_chunk(ts__json_doc *doc, size_t size, int own)
{
    ts__json_chunk *c = (ts__json_chunk *)ts__alloc(doc->alloc, size);
    unsigned char *p;
    if (!c) return NULL;
    c->prev = doc->chunks; c->size = size;
    doc->chunks = c;
    doc->bytes += size;
    p = (unsigned char *)c + TS__JSON_HDR;
    if (!own) { doc->cur = p; doc->left = size - TS__JSON_HDR; }
    return p;
}

TS__PRIVATE void *ts__json_alloc_slow(ts__json_doc *doc, size_t n)
{
    size_t size, want = doc->next_size ? doc->next_size : TS__JSON_CHUNK_MIN;
    unsigned char *p;
    if (n > want / 2) { /* big blocks get a chunk of their own, the current one stays */
        if (!ts__size_add(n, TS__JSON_HDR, &size)) return NULL;
        return ts__json_add_chunk(doc, size, 1);
    }
    p = ts__json_add_chunk(doc, want, 0);
    if (!p) return NULL;
    doc->cur += n; doc->left -= n;
    doc->next_size = ts__json_chunk_cap(want * 2);
    return p;
}

/* n bytes aligned to 8 (align = 8) or unaligned (align = 1); NULL on NOMEM. */
TS__PRIVATE void *ts__json_alloc(ts__json_doc *doc, size_t n, size_t align)
{
    size_t pad = (size_t)(0u - (uintptr_t)doc->cur) & (align - 1);
    if (doc->cur && pad <= doc->left && n <= doc->left - pad) {
        unsigned char *p = doc->cur + pad;
        doc->cur = p + n;
        doc->left -= pad + n;
        return p;
    }
    return ts__json_alloc_slow(doc, n);
}

TS__PRIVATE char *ts__json_strdup(ts__json_doc *doc, const char *s, size_t n)
{
    char *p;
    if (n == (size_t)-1) return NULL;
    p = (char *)ts__json_alloc(doc, n + 1, 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

TS__PRIVATE ts__json *ts__json_node(ts__json_doc *doc, ts__json_type type)
{
    ts__json *n = (ts__json *)ts__json_alloc(doc, sizeof(ts__json), 8);
    if (!n) return NULL;
    memset(n, 0, sizeof *n);
    n->type = (unsigned char)type;
    return n;
}

/* ---- numbers -------------------------------------------------------------- */

TS__PRIVATE int ts__json_is_int_value(double v)
{
    return v >= -TS__JSON_2P53 && v <= TS__JSON_2P53 && (double)(int64_t)v == v;
}

TS__PRIVATE int ts__json_finite(double v)
{
    return v == v && v - v == 0.0;
}

/* The double nearest to the valid JSON number s[0..n) (need not be
   NUL-terminated), whatever LC_NUMERIC says. The reader uses it for what its
   fast path cannot do exactly. strtod is given the digits without
   a decimal point ("12.5e3" -> "125e2"), which no locale can misread, and
   at most 768 significant digits plus a sticky digit, which decide the
   rounding of any input exactly while keeping strtod's work bounded
   however long the lexeme is. */
TS__PRIVATE double ts__json_strtod(const char *s, size_t n)
{
    char buf[800];
    size_t i = 0, o = 0;
    int nd = 0, point = 0, sticky = 0;
    long exp10 = 0, ev = 0;
    if (n && s[0] == '-') buf[o++] = s[i++];
    for (; i < n && s[i] != 'e' && s[i] != 'E'; i++) {
        char c = s[i];
        if (c == '.') { point = 1; continue; }
        if (nd == 0 && c == '0') { exp10 -= point; continue; }
        if (nd < 768) { buf[o++] = c; nd++; exp10 -= point; }
        else { sticky |= c != '0'; exp10 += !point; }
    }
    if (nd == 0) return o ? -0.0 : 0.0;
    if (sticky) { buf[o++] = '1'; exp10--; }
    if (i < n) {
        int eneg = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) eneg = s[i++] == '-';
        for (; i < n; i++) if (ev < 100000000L) ev = ev * 10 + (s[i] - '0');
        exp10 += eneg ? -ev : ev;
    }
    snprintf(buf + o, sizeof buf - o, "e%ld", exp10);
    return strtod(buf, NULL);
}

static const double ts__json_pow10[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
};

/* Shortest of %.15g/%.16g/%.17g that reads back as v. printf follows
   LC_NUMERIC, so the decimal point (maybe several bytes) becomes '.'; the
   exponent loses printf's leading zero ("1e-07" -> "1e-7", as JavaScript
   writes it). v is finite; out has room for 40 bytes. */
TS__PRIVATE size_t ts__json_fmt_double(double v, char *out)
{
    char tmp[40];
    int prec;
    size_t n = 0;
    for (prec = 15; prec <= 17; prec++) {
        int k = snprintf(tmp, sizeof tmp, "%.*g", prec, v), i, in_dp = 0, in_exp = 0;
        if (k <= 0 || k >= (int)sizeof tmp) k = 0;
        n = 0;
        for (i = 0; i < k; i++) {
            char c = tmp[i];
            if (c == 'e' || c == 'E') {
                out[n++] = 'e'; in_exp = 1;
            } else if (c == '-' || c == '+') {
                out[n++] = c;
            } else if (c >= '0' && c <= '9') {
                if (in_exp == 1 && c == '0' && i + 1 < k) continue;
                out[n++] = c; in_dp = 0;
                if (in_exp) in_exp = 2;
            } else if (!in_dp) {
                out[n++] = '.'; in_dp = 1;
            }
        }
        out[n] = 0;
        if (prec == 17 || ts__json_strtod(out, n) == v) break;
    }
    return n;
}

TS__PRIVATE size_t ts__json_fmt_int(int64_t v, char *out)
{
    char tmp[24];
    size_t n = 0, i = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do { tmp[n++] = (char)('0' + (int)(u % 10)); u /= 10; } while (u);
    if (v < 0) out[i++] = '-';
    while (n) out[i++] = tmp[--n];
    out[i] = 0;
    return i;
}

/* ---- the reader ----------------------------------------------------------- */

#define TS__JSON_PAD 9 /* NUL + room for 8-byte loads past the end of the text */

/* Bytes a string copies verbatim: printable ASCII except '"' and '\\'. */
#define TS__JSON_PLAIN(c) ((c) >= 0x20 && (c) < 0x80 && (c) != '"' && (c) != '\\')

/* Non-zero when any of the 8 bytes is not TS__JSON_PLAIN (may also flag
   bytes after a real hit, never miss the first one). */
TS__PRIVATE uint64_t ts__json_swar_special(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    return (((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x) | x) & highs;
}

/* Index of the first flagged byte of a non-zero ts__json_swar_special
   mask: exact for the lowest flag (borrows only run upwards). Needs the
   bytes in memory order, so little-endian GCC/Clang only; elsewhere 0 and
   the byte loop finds it. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define TS__JSON_FIRST_SPECIAL(mask) ((size_t)__builtin_ctzll(mask) >> 3)
#else
#define TS__JSON_FIRST_SPECIAL(mask) ((size_t)0)
#endif

TS__PRIVATE int ts__json_hex4(const unsigned char *p)
{
    int a = ts__hex_value(p[0]), b, c, d;
    if (a < 0) return -1;
    b = ts__hex_value(p[1]);
    if (b < 0) return -1;
    c = ts__hex_value(p[2]);
    if (c < 0) return -1;
    d = ts__hex_value(p[3]);
    if (d < 0) return -1;
    return a << 12 | b << 8 | c << 4 | d;
}

typedef struct ts__json_reader {
    unsigned char *s;   /* in-arena copy of the text, TS__JSON_PAD zero bytes after it */
    size_t len;
    size_t pos;         /* where an error happened */
    const char *err;    /* what went wrong (static text) */
    ts_result code;
} ts__json_reader;

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), else 0.
   Inline checks for the 2- and 3-byte forms of ordinary text; the rest goes
   to ts__utf8_decode. p must have 3 readable bytes past the lead byte or a
   terminator that fails the continuation test. */
TS__PRIVATE int ts__json_utf8_len(const unsigned char *p, size_t avail)
{
    uint32_t cp;
    unsigned c = p[0];
    if (c >= 0xC2 && c <= 0xDF && avail >= 2 && (p[1] & 0xC0) == 0x80) return 2;
    if (c >= 0xE1 && c <= 0xEC && avail >= 3 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80) return 3;
    return ts__utf8_decode(p, avail, &cp);
}

/* Decodes, in place, the string whose opening quote is at s[*p]. The
   decoded bytes start at s[*p + 1], with a NUL after them. The write
   position w never passes the read position r, so 8-byte blocks are read
   whole before they are stored. */
TS__PRIVATE int ts__json_read_string(ts__json_reader *rd, size_t *p, size_t *out_len)
{
    unsigned char *s = rd->s;
    size_t start = *p + 1, r = start, w = start;
    for (;;) {
        uint64_t x, mask;
        unsigned c;
        memcpy(&x, s + r, 8);
        mask = ts__json_swar_special(x);
        if (!mask) {
            if (w != r) memcpy(s + w, &x, 8);
            r += 8; w += 8;
            continue;
        }
        {
            size_t k = TS__JSON_FIRST_SPECIAL(mask), j;
            if (w == r) w += k;
            else if (r - w >= 8) { memcpy(s + w, &x, 8); w += k; } /* stores only below r */
            else for (j = 0; j < k; j++) s[w++] = s[r + j];
            r += k;
        }
        c = s[r];
        if (TS__JSON_PLAIN(c)) {
            s[w++] = (unsigned char)c; r++;
        } else if (c == '"') {
            break;
        } else if (c >= 0x80) {
            int k = ts__json_utf8_len(s + r, rd->len - r);
            if (!k) { rd->err = "invalid UTF-8 in a string"; rd->pos = r; return 0; }
            if (w == r) { w += (size_t)k; r += (size_t)k; }
            else while (k--) s[w++] = s[r++];
        } else if (c == '\\') {
            int e = s[r + 1];
            unsigned char ch;
            switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                int hi = ts__json_hex4(s + r + 2), lo;
                uint32_t cp;
                if (hi < 0) { rd->err = "bad \\u escape (need 4 hex digits)"; rd->pos = r; return 0; }
                if (hi >= 0xDC00 && hi <= 0xDFFF) {
                    rd->err = "lone low surrogate in a \\u escape"; rd->pos = r; return 0;
                }
                if (hi >= 0xD800 && hi <= 0xDBFF) {
                    if (s[r + 6] != '\\' || s[r + 7] != 'u' ||
                        (lo = ts__json_hex4(s + r + 8)) < 0xDC00 || lo > 0xDFFF) {
                        rd->err = "high surrogate without a low surrogate in a \\u escape";
                        rd->pos = r; return 0;
                    }
                    cp = 0x10000u + (((uint32_t)hi - 0xD800u) << 10) + ((uint32_t)lo - 0xDC00u);
                    r += 12;
                } else {
                    cp = (uint32_t)hi;
                    r += 6;
                }
                w += (size_t)ts__utf8_encode(cp, s + w);
                continue;
            }
            default:
                rd->err = "invalid escape in a string"; rd->pos = r; return 0;
            }
            s[w++] = ch;
            r += 2;
        } else {
            rd->err = r >= rd->len ? "unterminated string"
                    : "control character in a string (must be escaped)";
            rd->pos = r;
            return 0;
        }
    }
    if (w - start > TASKSTORE_MAX_JSON_STRING) {
        rd->err = "string longer than TASKSTORE_MAX_JSON_STRING";
        rd->code = TS_E_TOOBIG; rd->pos = start - 1;
        return 0;
    }
    s[w] = 0;
    *out_len = w - start;
    *p = r + 1;
    return 1;
}

/* Reads the number at s[*p] into n (lexeme + value). */
TS__PRIVATE int ts__json_read_number(ts__json_reader *rd, size_t *p, ts__json *n)
{
    unsigned char *s = rd->s;
    size_t i = *p, start = *p;
    uint64_t m = 0;
    int nd = 0, exp10 = 0, truncated = 0, neg = 0;
    double v;
    if (s[i] == '-') { neg = 1; i++; }
    if (s[i] == '0') {
        i++;
        if (s[i] >= '0' && s[i] <= '9') { rd->err = "leading zero in a number"; rd->pos = start; return 0; }
    } else if (s[i] >= '1' && s[i] <= '9') {
        do {
            if (nd < 19) { m = m * 10 + (uint64_t)(s[i] - '0'); nd++; }
            else { exp10++; truncated |= s[i] != '0'; }
            i++;
        } while (s[i] >= '0' && s[i] <= '9');
    } else {
        rd->err = "expected a digit"; rd->pos = i; return 0;
    }
    if (s[i] == '.') {
        i++;
        if (!(s[i] >= '0' && s[i] <= '9')) { rd->err = "expected a digit after '.'"; rd->pos = i; return 0; }
        do {
            if (nd < 19) {
                m = m * 10 + (uint64_t)(s[i] - '0');
                exp10--;
                if (m) nd++;
            } else {
                truncated |= s[i] != '0';
            }
            i++;
        } while (s[i] >= '0' && s[i] <= '9');
    }
    if (s[i] == 'e' || s[i] == 'E') {
        int eneg = 0, ev = 0;
        i++;
        if (s[i] == '+' || s[i] == '-') { eneg = s[i] == '-'; i++; }
        if (!(s[i] >= '0' && s[i] <= '9')) {
            rd->err = "expected a digit in the exponent"; rd->pos = i; return 0;
        }
        do {
            if (ev < 100000) ev = ev * 10 + (s[i] - '0');
            i++;
        } while (s[i] >= '0' && s[i] <= '9');
        exp10 += eneg ? -ev : ev;
    }
    n->is_int = 0;
    if (m == 0) {
        v = neg ? -0.0 : 0.0;
        n->is_int = 1;
    }
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    /* Clinger's fast path: both operands exact, so one IEEE operation
       rounds correctly. */
    else if (!truncated && m <= ((uint64_t)1 << 53) && exp10 >= -22 && exp10 <= 22) {
        v = (double)m;
        v = exp10 < 0 ? v / ts__json_pow10[-exp10] : v * ts__json_pow10[exp10];
        if (neg) v = -v;
    }
#endif
    else {
        v = ts__json_strtod((const char *)s + start, i - start);
    }
    n->type = TS__JSON_NUMBER;
    n->u.s.ptr = (const char *)s + start;
    n->u.s.len = i - start;
    n->u.s.num = v;
    /* Integer-ness comes from the digits, not from the rounded double (so
       9007199254740993 and 1e-400 are not integers), checked exactly only
       when the double is integral: rounding never turns a non-integral
       value below 2^53 into an integral one unless digits were dropped, and
       dropped non-zero digits (more than 19 significant ones) mean it is not
       an integer within 2^53 anyway. */
    if (!truncated && m && v >= -TS__JSON_2P53 && v <= TS__JSON_2P53 && (double)(int64_t)v == v) {
        if (exp10 == 0) {
            n->is_int = m <= ((uint64_t)1 << 53);
        } else if (exp10 > 0) {
            n->is_int = exp10 <= 15 && m <= ((uint64_t)1 << 53) / (uint64_t)ts__json_pow10[exp10];
        } else if (exp10 >= -19) {
            uint64_t p10 = 1;
            int k;
            for (k = 0; k < -exp10; k++) p10 *= 10;
            n->is_int = m % p10 == 0 && m / p10 <= ((uint64_t)1 << 53);
        }
    }
    *p = i;
    return 1;
}

#define TS__JSON_SKIP_WS(s, p) \
    while ((s)[p] == ' ' || (s)[p] == '\n' || (s)[p] == '\r' || (s)[p] == '\t') (p)++

/* Expects `"key" ws :` at s[*p] (after whitespace). */
TS__PRIVATE int ts__json_read_key(ts__json_reader *rd, size_t *p, const char **key, size_t *key_len)
{
    unsigned char *s = rd->s;
    size_t i = *p;
    TS__JSON_SKIP_WS(s, i);
    if (s[i] != '"') {
        rd->err = s[i] == '}' ? "trailing comma in an object" : "expected a string key";
        rd->pos = i;
        return 0;
    }
    *key = (const char *)s + i + 1;
    if (!ts__json_read_string(rd, &i, key_len)) return 0;
    TS__JSON_SKIP_WS(s, i);
    if (s[i] != ':') { rd->err = "expected ':' after an object key"; rd->pos = i; return 0; }
    *p = i + 1;
    return 1;
}

/* Parses text[0..len) (need not be NUL-terminated) into doc.
     doc    (in/out) arena that receives the tree; on failure it is as before
     root   (out)    the top value; NULL on failure
     env, what       failures are recorded there as "<what>: <reason> at byte N
                     (line L)"; env may be NULL
   Returns TS_OK, TS_E_CORRUPT (not RFC 8259 JSON), TS_E_TOOBIG (a
   TASKSTORE_MAX_JSON_* limit), TS_E_NOMEM or TS_E_INVALID (NULL arguments).
   Strict: no trailing commas, comments, leading zeros, NaN, BOM, lone
   surrogates, invalid UTF-8 or raw control characters; only whitespace may
   follow the value. Duplicate keys are kept in order. */
TS__PRIVATE ts_result ts__json_parse(ts__json_doc *doc, const char *text, size_t len,
                                     ts__json **root, ts__env *env, const char *what)
{
    ts__json_reader rd;
    ts__json_mark mark;
    ts__json *cur = NULL, *top = NULL, *n;
    const char *key = NULL;
    size_t key_len = 0, p = 0, nodes = 0, need;
    unsigned char *s;
    int depth = 0;

    if (root) *root = NULL;
    if (!what) what = "JSON";
    if (!doc || !root || (!text && len))
        return TS__FAIL(env, TS_E_INVALID, "%s: ts__json_parse: NULL argument", what);
    if (len > TASKSTORE_MAX_JSON_BYTES)
        return TS__FAIL(env, TS_E_TOOBIG, "%s: %llu bytes of JSON exceed TASKSTORE_MAX_JSON_BYTES (%llu)",
                        what, (unsigned long long)len, (unsigned long long)TASKSTORE_MAX_JSON_BYTES);
    mark = ts__json_doc_mark(doc);
    /* One chunk for the text and half as many bytes of nodes: a single
       allocation for a small file, little waste for a string-heavy one. */
    need = (len + TS__JSON_PAD + 7) & ~(size_t)7;
    if (need + 8 > doc->left) {
        size_t extra = need / 2 < TS__JSON_CHUNK_MIN / 2 ? TS__JSON_CHUNK_MIN / 2 : ts__json_chunk_cap(need / 2);
        if (extra * 2 > doc->next_size) doc->next_size = ts__json_chunk_cap(extra * 2);
        s = ts__json_add_chunk(doc, need + extra + TS__JSON_HDR, 0);
    } else {
        s = doc->cur;
    }
    if (s) s = (unsigned char *)ts__json_alloc(doc, need, 8); /* fits now */
    if (!s) return TS__FAIL(env, TS_E_NOMEM, "%s: out of memory parsing %llu bytes of JSON",
                            what, (unsigned long long)len);
    if (len) memcpy(s, text, len);
    memset(s + len, 0, need - len);
    rd.s = s; rd.len = len; rd.pos = 0; rd.err = NULL; rd.code = TS_E_CORRUPT;

    for (;;) {
        unsigned c;
        /* a value is expected at p */
        TS__JSON_SKIP_WS(s, p);
        c = s[p];
        if (++nodes > TASKSTORE_MAX_JSON_NODES) {
            rd.err = "more values than TASKSTORE_MAX_JSON_NODES"; rd.code = TS_E_TOOBIG; rd.pos = p;
            goto fail;
        }
        n = (ts__json *)ts__json_alloc(doc, sizeof(ts__json), 8);
        if (!n) { rd.code = TS_E_NOMEM; goto fail; }
        memset(n, 0, sizeof *n);
        switch (c) {
        case '{': case '[':
            n->type = c == '{' ? TS__JSON_OBJECT : TS__JSON_ARRAY;
            break;
        case '"':
            n->type = TS__JSON_STRING;
            n->u.s.ptr = (const char *)s + p + 1;
            if (!ts__json_read_string(&rd, &p, &n->u.s.len)) goto fail;
            break;
        case 't':
            if (memcmp(s + p, "true", 4) != 0) goto bad_value;
            n->type = TS__JSON_TRUE; p += 4;
            break;
        case 'f':
            if (memcmp(s + p, "false", 5) != 0) goto bad_value;
            n->type = TS__JSON_FALSE; p += 5;
            break;
        case 'n':
            if (memcmp(s + p, "null", 4) != 0) goto bad_value;
            n->type = TS__JSON_NULL; p += 4;
            break;
        case '-': case '0': case '1': case '2': case '3': case '4':
        case '5': case '6': case '7': case '8': case '9':
            if (!ts__json_read_number(&rd, &p, n)) goto fail;
            break;
        default:
        bad_value:
            rd.pos = p;
            rd.err = p >= len ? "unexpected end of input (expected a value)"
                   : c == ']' && cur && cur->type == TS__JSON_ARRAY ? "trailing comma in an array"
                   : "expected a value";
            goto fail;
        }
        if (!cur) {
            top = n;
        } else {
            if (cur->type == TS__JSON_OBJECT) { n->key = key; n->key_len = (uint32_t)key_len; }
            if (cur->u.kids.last) cur->u.kids.last->next = n;
            else cur->u.kids.first = n;
            cur->u.kids.last = n;
            cur->u.kids.count++;
        }
        if (n->type == TS__JSON_OBJECT || n->type == TS__JSON_ARRAY) {
            if (depth >= TASKSTORE_MAX_JSON_DEPTH) {
                rd.err = "nesting deeper than TASKSTORE_MAX_JSON_DEPTH"; rd.code = TS_E_TOOBIG;
                rd.pos = p;
                goto fail;
            }
            p++;
            TS__JSON_SKIP_WS(s, p);
            if (s[p] != (n->type == TS__JSON_OBJECT ? '}' : ']')) {
                /* While a container is open its next field is free (nothing
                   follows it yet): it holds the parent, so the parser needs
                   no stack. */
                n->next = cur;
                cur = n;
                depth++;
                if (n->type == TS__JSON_OBJECT && !ts__json_read_key(&rd, &p, &key, &key_len)) goto fail;
                continue;
            }
            p++;
        }
        /* after a value: ',' or the end of the enclosing containers */
        for (;;) {
            if (!cur) goto done;
            TS__JSON_SKIP_WS(s, p);
            c = s[p];
            if (c == ',') {
                p++;
                if (cur->type == TS__JSON_OBJECT && !ts__json_read_key(&rd, &p, &key, &key_len)) goto fail;
                break;
            }
            if (c == (cur->type == TS__JSON_OBJECT ? '}' : ']')) {
                ts__json *parent = cur->next;
                p++;
                cur->next = NULL;
                cur = parent;
                depth--;
                continue;
            }
            rd.pos = p;
            rd.err = p >= len ? "unexpected end of input (unclosed array or object)"
                   : cur->type == TS__JSON_OBJECT ? "expected ',' or '}'" : "expected ',' or ']'";
            goto fail;
        }
    }
done:
    TS__JSON_SKIP_WS(s, p);
    if (p != len) {
        rd.pos = p;
        rd.err = "unexpected data after the JSON value";
        goto fail;
    }
    *root = top;
    return TS_OK;
fail:
    ts__json_doc_release(doc, &mark);
    if (rd.code == TS_E_NOMEM)
        return TS__FAIL(env, TS_E_NOMEM, "%s: out of memory parsing %llu bytes of JSON",
                        what, (unsigned long long)len);
    {
        size_t i, line = 1;
        for (i = 0; i < rd.pos && i < len; i++) line += text[i] == '\n';
        return TS__FAIL(env, rd.code, "%s: %s at byte %llu (line %llu)", what, rd.err,
                        (unsigned long long)rd.pos, (unsigned long long)line);
    }
}

/* Checks that text[0..len) is one JSON value, by the same rules and limits
   as ts__json_parse (one temporary arena from `a`, freed before return).
   Same results and messages as ts__json_parse. */
TS__PRIVATE ts_result ts__json_validate(const char *text, size_t len, const ts_allocator *a,
                                        ts__env *env, const char *what)
{
    ts__json_doc doc;
    ts__json *root;
    ts_result r;
    ts__json_doc_init(&doc, a);
    r = ts__json_parse(&doc, text, len, &root, env, what);
    ts__json_doc_free(&doc);
    return r;
}

/* ---- accessors -------------------------------------------------------------
   All take NULL (and nodes of the wrong type) and answer NULL / 0, so
   lookups chain: ts__json_get(ts__json_get(root, "a"), "b"). */

TS__PRIVATE int ts__json_is_null(const ts__json *n) { return n && n->type == TS__JSON_NULL; }
TS__PRIVATE int ts__json_is_bool(const ts__json *n)
{
    return n && (n->type == TS__JSON_TRUE || n->type == TS__JSON_FALSE);
}
TS__PRIVATE int ts__json_is_number(const ts__json *n) { return n && n->type == TS__JSON_NUMBER; }
TS__PRIVATE int ts__json_is_string(const ts__json *n) { return n && n->type == TS__JSON_STRING; }
TS__PRIVATE int ts__json_is_array(const ts__json *n) { return n && n->type == TS__JSON_ARRAY; }
TS__PRIVATE int ts__json_is_object(const ts__json *n) { return n && n->type == TS__JSON_OBJECT; }

/* First child of an array or object (then follow ->next), else NULL. */
TS__PRIVATE ts__json *ts__json_first(const ts__json *n)
{
    return n && (n->type == TS__JSON_ARRAY || n->type == TS__JSON_OBJECT) ? n->u.kids.first : NULL;
}

/* Number of children (object members include duplicates); 0 for scalars. */
TS__PRIVATE size_t ts__json_count(const ts__json *n)
{
    return n && (n->type == TS__JSON_ARRAY || n->type == TS__JSON_OBJECT) ? n->u.kids.count : 0;
}

/* The i-th element of an array (O(i): iterate with first/next instead). */
TS__PRIVATE ts__json *ts__json_at(const ts__json *arr, size_t i)
{
    ts__json *c;
    if (!ts__json_is_array(arr) || i >= arr->u.kids.count) return NULL;
    for (c = arr->u.kids.first; i; i--) c = c->next;
    return c;
}

/* Object member by key; with duplicate keys the last one, like JSON.parse. */
TS__PRIVATE ts__json *ts__json_get_n(const ts__json *obj, const char *key, size_t key_len)
{
    ts__json *c, *found = NULL;
    if (!ts__json_is_object(obj)) return NULL;
    for (c = obj->u.kids.first; c; c = c->next)
        if (c->key_len == key_len && memcmp(c->key, key, key_len) == 0) found = c;
    return found;
}

TS__PRIVATE ts__json *ts__json_get(const ts__json *obj, const char *key)
{
    return ts__json_get_n(obj, key, strlen(key));
}

/* The decoded string (NUL-terminated, may also hold NULs: use *len) or NULL. */
TS__PRIVATE const char *ts__json_str(const ts__json *n, size_t *len)
{
    if (!ts__json_is_string(n)) { if (len) *len = 0; return NULL; }
    if (len) *len = n->u.s.len;
    return n->u.s.ptr;
}

/* 1 and *out if n is a number with an integer value and |v| <= 2^53 (also
   "1.0" and "1e3"), else 0 and *out = 0. */
TS__PRIVATE int ts__json_int(const ts__json *n, int64_t *out)
{
    if (out) *out = 0;
    if (!ts__json_is_number(n) || !n->is_int) return 0;
    if (out) *out = (int64_t)n->u.s.num;
    return 1;
}

/* 1 and *out if n is a finite number (numbers beyond the double range,
   like 1e400, give 0). */
TS__PRIVATE int ts__json_num(const ts__json *n, double *out)
{
    if (out) *out = 0;
    if (!ts__json_is_number(n) || !ts__json_finite(n->u.s.num)) return 0;
    if (out) *out = n->u.s.num;
    return 1;
}

TS__PRIVATE int ts__json_bool(const ts__json *n, int *out)
{
    if (out) *out = 0;
    if (!ts__json_is_bool(n)) return 0;
    if (out) *out = n->type == TS__JSON_TRUE;
    return 1;
}

/* Shorthands for the common "read one field of a record". */
TS__PRIVATE const char *ts__json_get_str(const ts__json *obj, const char *key, size_t *len)
{
    return ts__json_str(ts__json_get(obj, key), len);
}
TS__PRIVATE int ts__json_get_int(const ts__json *obj, const char *key, int64_t *out)
{
    return ts__json_int(ts__json_get(obj, key), out);
}

/* ---- builders ----------------------------------------------------------------
   Nodes come from doc's arena and return NULL on NOMEM; the setters treat a
   NULL value as NOMEM, so builders nest without a check at every step:
     r = ts__json_object_set(doc, rec, "size", 4, ts__json_new_int(doc, n)); */

TS__PRIVATE ts__json *ts__json_new_null(ts__json_doc *doc) { return ts__json_node(doc, TS__JSON_NULL); }
TS__PRIVATE ts__json *ts__json_new_bool(ts__json_doc *doc, int v)
{
    return ts__json_node(doc, v ? TS__JSON_TRUE : TS__JSON_FALSE);
}
TS__PRIVATE ts__json *ts__json_new_object(ts__json_doc *doc) { return ts__json_node(doc, TS__JSON_OBJECT); }
TS__PRIVATE ts__json *ts__json_new_array(ts__json_doc *doc) { return ts__json_node(doc, TS__JSON_ARRAY); }

/* Copies s[0..len) (UTF-8; not checked here, the writer refuses invalid
   UTF-8 with TS_E_INVALID). */
TS__PRIVATE ts__json *ts__json_new_string(ts__json_doc *doc, const char *s, size_t len)
{
    ts__json *n = ts__json_node(doc, TS__JSON_STRING);
    char *p;
    if (!n) return NULL;
    p = ts__json_strdup(doc, s, len);
    if (!p) return NULL;
    n->u.s.ptr = p; n->u.s.len = len;
    return n;
}

/* A finite double keeps its value; NaN and infinities are written as null. */
TS__PRIVATE ts__json *ts__json_new_number(ts__json_doc *doc, double v)
{
    ts__json *n = ts__json_node(doc, TS__JSON_NUMBER);
    if (!n) return NULL;
    n->u.s.num = v;
    n->is_int = (unsigned char)ts__json_is_int_value(v);
    return n;
}

/* Exact for every int64: beyond 2^53 the decimal text is kept as the lexeme
   (and ts__json_int() says 0, as it would for the parsed text). */
TS__PRIVATE ts__json *ts__json_new_int(ts__json_doc *doc, int64_t v)
{
    const int64_t lim = (int64_t)1 << 53;
    ts__json *n = ts__json_new_number(doc, (double)v);
    if (n && (v < -lim || v > lim)) {
        char tmp[24];
        size_t k = ts__json_fmt_int(v, tmp);
        char *p = ts__json_strdup(doc, tmp, k);
        if (!p) return NULL;
        n->is_int = 0;
        n->u.s.ptr = p; n->u.s.len = k;
    }
    return n;
}

/* Sets obj[key] = value: replaces the member in place (the last one, if the
   key repeats) or appends it. The key is copied. value must be a detached
   node (fresh from a builder, ts__json_clone or removed from its parent).
   Returns TS_E_INVALID if obj is not an object, TS_E_NOMEM. */
TS__PRIVATE ts_result ts__json_object_set(ts__json_doc *doc, ts__json *obj, const char *key,
                                          size_t key_len, ts__json *value)
{
    ts__json *c, *prev = NULL, *hit = NULL, *hit_prev = NULL;
    if (!ts__json_is_object(obj) || key_len > 0xFFFFFFFFu) return TS_E_INVALID;
    if (!value) return TS_E_NOMEM;
    for (c = obj->u.kids.first; c; prev = c, c = c->next)
        if (c->key_len == key_len && memcmp(c->key, key, key_len) == 0) { hit = c; hit_prev = prev; }
    if (hit) {
        value->key = hit->key; value->key_len = hit->key_len;
        value->next = hit->next;
        if (hit_prev) hit_prev->next = value; else obj->u.kids.first = value;
        if (obj->u.kids.last == hit) obj->u.kids.last = value;
        hit->next = NULL;
        return TS_OK;
    }
    value->key = ts__json_strdup(doc, key, key_len);
    if (!value->key) return TS_E_NOMEM;
    value->key_len = (uint32_t)key_len;
    value->next = NULL;
    if (obj->u.kids.last) obj->u.kids.last->next = value; else obj->u.kids.first = value;
    obj->u.kids.last = value;
    obj->u.kids.count++;
    return TS_OK;
}

/* Appends a detached value to an array. */
TS__PRIVATE ts_result ts__json_array_push(ts__json *arr, ts__json *value)
{
    if (!ts__json_is_array(arr)) return TS_E_INVALID;
    if (!value) return TS_E_NOMEM;
    value->next = NULL; value->key = NULL; value->key_len = 0;
    if (arr->u.kids.last) arr->u.kids.last->next = value; else arr->u.kids.first = value;
    arr->u.kids.last = value;
    arr->u.kids.count++;
    return TS_OK;
}

/* Removes every member named key (NUL-terminated); returns how many. The
   removed nodes stay in the arena, detached. */
TS__PRIVATE size_t ts__json_object_remove(ts__json *obj, const char *key)
{
    ts__json *c, *prev = NULL, *next;
    size_t key_len, removed = 0;
    if (!ts__json_is_object(obj)) return 0;
    key_len = strlen(key);
    for (c = obj->u.kids.first; c; c = next) {
        next = c->next;
        if (c->key_len == key_len && memcmp(c->key, key, key_len) == 0) {
            if (prev) prev->next = next; else obj->u.kids.first = next;
            if (obj->u.kids.last == c) obj->u.kids.last = prev;
            c->next = NULL;
            obj->u.kids.count--;
            removed++;
        } else {
            prev = c;
        }
    }
    return removed;
}

TS__PRIVATE ts__json *ts__json_clone_rec(ts__json_doc *doc, const ts__json *src, int depth)
{
    ts__json *n, *c;
    if (depth >= TASKSTORE_MAX_JSON_DEPTH &&
        (src->type == TS__JSON_ARRAY || src->type == TS__JSON_OBJECT)) return NULL;
    n = ts__json_node(doc, (ts__json_type)src->type);
    if (!n) return NULL;
    n->is_int = src->is_int;
    switch (src->type) {
    case TS__JSON_STRING:
    case TS__JSON_NUMBER:
        n->u.s.num = src->u.s.num;
        n->u.s.len = src->u.s.len;
        if (src->u.s.ptr) {
            n->u.s.ptr = ts__json_strdup(doc, src->u.s.ptr, src->u.s.len);
            if (!n->u.s.ptr) return NULL;
        }
        break;
    case TS__JSON_ARRAY:
    case TS__JSON_OBJECT:
        for (c = src->u.kids.first; c; c = c->next) {
            ts__json *k = ts__json_clone_rec(doc, c, depth + 1);
            if (!k) return NULL;
            if (c->key) {
                k->key = ts__json_strdup(doc, c->key, c->key_len);
                if (!k->key) return NULL;
                k->key_len = c->key_len;
            }
            if (n->u.kids.last) n->u.kids.last->next = k; else n->u.kids.first = k;
            n->u.kids.last = k;
            n->u.kids.count++;
        }
        break;
    default:
        break;
    }
    return n;
}

/* Deep copy of node into doc, detached (no key, no next). NULL on NOMEM or
   nesting deeper than TASKSTORE_MAX_JSON_DEPTH; on failure what was copied
   stays in the arena until the doc is freed. */
TS__PRIVATE ts__json *ts__json_clone(ts__json_doc *doc, const ts__json *node)
{
    if (!node) return NULL;
    return ts__json_clone_rec(doc, node, 0);
}

/* ---- the writer -------------------------------------------------------------- */

/* Appends s[0..n) as a JSON string. TS_E_INVALID if it is not valid UTF-8.
   Room is kept for the rest of the string plus slack, so the loop writes
   without checks; only an escape (up to 6 bytes for 1) may need more. */
TS__PRIVATE ts_result ts__json_write_string(ts__buf *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, len0 = b->len, used;
    unsigned char *o;
    ts_result r;
    if (n > (size_t)-1 - 32) return TS_E_NOMEM;
    if ((r = ts__buf_reserve(b, n + 16)) != TS_OK) return r;
    o = b->data + b->len;
    *o++ = '"';
    while (i < n) {
        unsigned c;
        if (n - i >= 8) {
            uint64_t x, mask;
            size_t k;
            memcpy(&x, s + i, 8);
            mask = ts__json_swar_special(x);
            k = mask ? TS__JSON_FIRST_SPECIAL(mask) : 8;
            memcpy(o, &x, 8); /* the bytes past k are scratch, rewritten next */
            o += k; i += k;
            if (k) continue;
        }
        c = s[i];
        if (TS__JSON_PLAIN(c)) { *o++ = (unsigned char)c; i++; continue; }
        if (c >= 0x80) {
            uint32_t cp;
            int k = ts__utf8_decode(s + i, n - i, &cp);
            if (!k) { r = TS_E_INVALID; goto fail; }
            while (k--) *o++ = s[i++];
            continue;
        }
        used = (size_t)(o - b->data);
        if (b->cap - used < n - i + 16) {
            b->len = used;
            r = ts__buf_reserve(b, n - i + 16);
            b->len = len0;
            if (r) goto fail;
            o = b->data + used;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = (unsigned char)ts__hex_digits[c >> 4];
            *o++ = (unsigned char)ts__hex_digits[c & 15];
        }
        i++;
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = 0;
    return TS_OK;
fail:
    b->data[len0] = 0;
    return r;
}

TS__PRIVATE ts_result ts__json_write_number(ts__buf *b, const ts__json *n)
{
    char tmp[40];
    size_t k;
    double v = n->u.s.num;
    if (n->u.s.ptr) return ts__buf_append(b, n->u.s.ptr, n->u.s.len);
    if (!ts__json_finite(v)) return ts__buf_append(b, "null", 4);
    k = n->is_int ? ts__json_fmt_int((int64_t)v, tmp) : ts__json_fmt_double(v, tmp);
    return ts__buf_append(b, tmp, k);
}

TS__PRIVATE ts_result ts__json_write_indent(ts__buf *b, int depth)
{
    ts_result r = ts__buf_reserve(b, 1 + 2 * (size_t)depth);
    if (r) return r;
    b->data[b->len++] = '\n';
    memset(b->data + b->len, ' ', 2 * (size_t)depth);
    b->len += 2 * (size_t)depth;
    b->data[b->len] = 0;
    return TS_OK;
}

TS__PRIVATE ts_result ts__json_write_rec(ts__buf *b, const ts__json *n, int pretty, int depth)
{
    ts_result r;
    const ts__json *c;
    int obj;
    switch (n->type) {
    case TS__JSON_NULL: return ts__buf_append(b, "null", 4);
    case TS__JSON_FALSE: return ts__buf_append(b, "false", 5);
    case TS__JSON_TRUE: return ts__buf_append(b, "true", 4);
    case TS__JSON_NUMBER: return ts__json_write_number(b, n);
    case TS__JSON_STRING: return ts__json_write_string(b, n->u.s.ptr, n->u.s.len);
    case TS__JSON_ARRAY:
    case TS__JSON_OBJECT:
        break;
    default:
        return TS_E_INVALID;
    }
    if (depth >= TASKSTORE_MAX_JSON_DEPTH) return TS_E_TOOBIG;
    obj = n->type == TS__JSON_OBJECT;
    if ((r = ts__buf_putc(b, obj ? '{' : '[')) != TS_OK) return r;
    for (c = n->u.kids.first; c; c = c->next) {
        if (c != n->u.kids.first && (r = ts__buf_putc(b, ',')) != TS_OK) return r;
        if (pretty && (r = ts__json_write_indent(b, depth + 1)) != TS_OK) return r;
        if (obj) {
            if ((r = ts__json_write_string(b, c->key ? c->key : "", c->key_len)) != TS_OK) return r;
            if ((r = ts__buf_append(b, ": ", pretty ? 2u : 1u)) != TS_OK) return r;
        }
        if ((r = ts__json_write_rec(b, c, pretty, depth + 1)) != TS_OK) return r;
    }
    if (pretty && n->u.kids.first && (r = ts__json_write_indent(b, depth)) != TS_OK) return r;
    return ts__buf_putc(b, obj ? '}' : ']');
}

/* Appends node as JSON text to out: compact, or pretty (2-space indent, like
   JSON.stringify(v, null, 2)) when pretty is non-zero. Numbers keep their
   parsed text; other doubles get the shortest of %.15g..%.17g that reads
   back exactly; NaN/infinities become null. Returns TS_E_INVALID (a string
   that is not UTF-8), TS_E_TOOBIG (nesting beyond TASKSTORE_MAX_JSON_DEPTH)
   or TS_E_NOMEM; on failure out is as it was. */
TS__PRIVATE ts_result ts__json_write(ts__buf *out, const ts__json *node, int pretty)
{
    size_t len0 = out->len;
    ts_result r = node ? ts__json_write_rec(out, node, pretty, 0) : TS_E_INVALID;
    if (r) {
        out->len = len0;
        if (out->data) out->data[len0] = 0;
    }
    return r;
}

/* ---- streaming writer ---------------------------------------------------------
   For files built field by field without a DOM. Errors are sticky: calls
   after a failure do nothing and ts__jw_finish returns the first one, so
   call sites need no checks:
     ts__jw w; ts__jw_init(&w, &buf);
     ts__jw_begin_object(&w);
     ts__jw_key(&w, "id"); ts__jw_string(&w, id, id_len);
     ts__jw_key(&w, "count"); ts__jw_int(&w, n);
     ts__jw_end_object(&w);
     r = ts__jw_finish(&w); */

typedef struct ts__jw {
    ts__buf *out;
    ts_result err;      /* first failure */
    int depth;          /* open containers, at most 64 */
    int after_key;      /* a key was written; its value comes next */
    uint64_t nonempty;  /* bit d-1: the container at depth d has an item */
} ts__jw;

TS__PRIVATE void ts__jw_init(ts__jw *w, ts__buf *out)
{
    w->out = out; w->err = TS_OK; w->depth = 0; w->after_key = 0; w->nonempty = 0;
}

/* Writes the comma before an item if one is due; 0 if in error. */
TS__PRIVATE int ts__jw_item(ts__jw *w)
{
    uint64_t bit;
    if (w->err) return 0;
    if (w->after_key) { w->after_key = 0; return 1; }
    if (!w->depth) return 1;
    bit = (uint64_t)1 << (w->depth - 1);
    if ((w->nonempty & bit) && (w->err = ts__buf_putc(w->out, ',')) != TS_OK) return 0;
    w->nonempty |= bit;
    return 1;
}

TS__PRIVATE void ts__jw_open(ts__jw *w, int ch)
{
    if (!ts__jw_item(w)) return;
    if (w->depth >= 64) { w->err = TS_E_TOOBIG; return; }
    w->depth++;
    w->nonempty &= ~((uint64_t)1 << (w->depth - 1));
    w->err = ts__buf_putc(w->out, ch);
}

TS__PRIVATE void ts__jw_close(ts__jw *w, int ch)
{
    if (w->err) return;
    if (!w->depth || w->after_key) { w->err = TS_E_INVALID; return; }
    w->depth--;
    w->err = ts__buf_putc(w->out, ch);
}

TS__PRIVATE void ts__jw_begin_object(ts__jw *w) { ts__jw_open(w, '{'); }
TS__PRIVATE void ts__jw_end_object(ts__jw *w) { ts__jw_close(w, '}'); }
TS__PRIVATE void ts__jw_begin_array(ts__jw *w) { ts__jw_open(w, '['); }
TS__PRIVATE void ts__jw_end_array(ts__jw *w) { ts__jw_close(w, ']'); }

/* Member key of the object being written (NUL-terminated / counted). */
TS__PRIVATE void ts__jw_key_n(ts__jw *w, const char *key, size_t len)
{
    if (!w->err && w->after_key) { w->err = TS_E_INVALID; return; }
    if (!ts__jw_item(w)) return;
    if ((w->err = ts__json_write_string(w->out, key, len)) != TS_OK) return;
    w->err = ts__buf_putc(w->out, ':');
    w->after_key = 1;
}
TS__PRIVATE void ts__jw_key(ts__jw *w, const char *key) { ts__jw_key_n(w, key, strlen(key)); }

TS__PRIVATE void ts__jw_string(ts__jw *w, const char *s, size_t len)
{
    if (ts__jw_item(w)) w->err = ts__json_write_string(w->out, s, len);
}

TS__PRIVATE void ts__jw_int(ts__jw *w, int64_t v)
{
    char tmp[24];
    size_t k = ts__json_fmt_int(v, tmp);
    if (ts__jw_item(w)) w->err = ts__buf_append(w->out, tmp, k);
}

TS__PRIVATE void ts__jw_number(ts__jw *w, double v)
{
    char tmp[40];
    size_t k;
    if (!ts__jw_item(w)) return;
    if (!ts__json_finite(v)) { w->err = ts__buf_append(w->out, "null", 4); return; }
    k = ts__json_is_int_value(v) ? ts__json_fmt_int((int64_t)v, tmp) : ts__json_fmt_double(v, tmp);
    w->err = ts__buf_append(w->out, tmp, k);
}

TS__PRIVATE void ts__jw_bool(ts__jw *w, int v)
{
    if (ts__jw_item(w)) w->err = v ? ts__buf_append(w->out, "true", 4) : ts__buf_append(w->out, "false", 5);
}

TS__PRIVATE void ts__jw_null(ts__jw *w)
{
    if (ts__jw_item(w)) w->err = ts__buf_append(w->out, "null", 4);
}

/* A DOM value (a record kept verbatim), written compact. */
TS__PRIVATE void ts__jw_value(ts__jw *w, const ts__json *node)
{
    if (ts__jw_item(w)) w->err = ts__json_write(w->out, node, 0);
}

/* The first failure, or TS_E_INVALID if containers or a key are left open. */
TS__PRIVATE ts_result ts__jw_finish(ts__jw *w)
{
    if (!w->err && (w->depth || w->after_key)) w->err = TS_E_INVALID;
    return w->err;
}

/* ---- equality and diff ---------------------------------------------------------- */

TS__PRIVATE int ts__json_key_eq(const ts__json *a, const ts__json *b)
{
    return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

/* 1 if no later member of the same object has m's key. */
TS__PRIVATE int ts__json_is_last_key(const ts__json *m)
{
    const ts__json *c;
    for (c = m->next; c; c = c->next)
        if (ts__json_key_eq(c, m)) return 0;
    return 1;
}

TS__PRIVATE void ts__json_path_truncate(ts__buf *path, size_t len)
{
    if (!path) return;
    path->len = len;
    if (path->data) path->data[len] = 0;
}

/* Appends ".key" (or "key" at the start, or ["k e y"] when the key is not a
   plain identifier). Best effort: the path is a message, NOMEM only
   shortens it. */
TS__PRIVATE void ts__json_path_key(ts__buf *path, const ts__json *m)
{
    size_t i;
    int ident = m->key_len > 0;
    if (!path) return;
    for (i = 0; i < m->key_len && ident; i++) {
        unsigned char c = (unsigned char)m->key[i];
        ident = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$' ||
                (i > 0 && c >= '0' && c <= '9');
    }
    if (ident) {
        if (path->len) ts__buf_putc(path, '.');
        ts__buf_append(path, m->key, m->key_len);
    } else {
        ts__buf_putc(path, '[');
        if (ts__json_write_string(path, m->key, m->key_len) != TS_OK) ts__buf_puts(path, "\"?\"");
        ts__buf_putc(path, ']');
    }
}

TS__PRIVATE int ts__json_diff_rec(const ts__json *a, const ts__json *b, ts__buf *path, int depth)
{
    const ts__json *x, *y;
    size_t save = path ? path->len : 0, i;
    if (a == b) return 0;
    if (!a || !b || a->type != b->type) return 1;
    switch (a->type) {
    case TS__JSON_NULL: case TS__JSON_FALSE: case TS__JSON_TRUE:
        return 0;
    case TS__JSON_NUMBER:
        return !(a->u.s.num == b->u.s.num || (a->u.s.num != a->u.s.num && b->u.s.num != b->u.s.num));
    case TS__JSON_STRING:
        return a->u.s.len != b->u.s.len || memcmp(a->u.s.ptr, b->u.s.ptr, a->u.s.len) != 0;
    default:
        break;
    }
    if (depth >= TASKSTORE_MAX_JSON_DEPTH) return 1;
    if (a->type == TS__JSON_ARRAY) {
        x = a->u.kids.first; y = b->u.kids.first;
        for (i = 0; x || y; i++) {
            if (path) ts__buf_printf(path, "[%llu]", (unsigned long long)i);
            if (!x || !y || ts__json_diff_rec(x, y, path, depth + 1)) return 1;
            ts__json_path_truncate(path, save);
            x = x->next; y = y->next;
        }
        return 0;
    }
    /* Objects. Usually both list the same keys in the same order (a file
       written from the other): compare pairwise, ignoring members a later
       duplicate overrides. Otherwise compare as maps (O(n*m), objects are
       small records). */
    for (x = a->u.kids.first, y = b->u.kids.first; x && y; x = x->next, y = y->next)
        if (!ts__json_key_eq(x, y)) break;
    if (!x && !y) {
        for (x = a->u.kids.first, y = b->u.kids.first; x; x = x->next, y = y->next) {
            ts__json_path_key(path, x);
            if (ts__json_diff_rec(x, y, path, depth + 1) && ts__json_is_last_key(x)) return 1;
            ts__json_path_truncate(path, save);
        }
        return 0;
    }
    for (x = a->u.kids.first; x; x = x->next) {
        if (!ts__json_is_last_key(x)) continue;
        ts__json_path_key(path, x);
        if (ts__json_diff_rec(x, ts__json_get_n(b, x->key, x->key_len), path, depth + 1)) return 1;
        ts__json_path_truncate(path, save);
    }
    for (y = b->u.kids.first; y; y = y->next) {
        if (!ts__json_is_last_key(y)) continue;
        if (!ts__json_get_n(a, y->key, y->key_len)) { ts__json_path_key(path, y); return 1; }
    }
    return 0;
}

/* Deep equality as JSON.parse would see it: numbers by value (-0 == 0),
   objects as maps (member order does not matter, the last duplicate key
   wins), arrays in order. Two NULLs are equal. */
TS__PRIVATE int ts__json_equal(const ts__json *a, const ts__json *b)
{
    return !ts__json_diff_rec(a, b, NULL, 0);
}

/* Like ts__json_equal, but on a difference returns 1 and appends the path
   of the first differing value to path (e.g. "audioSegments[2].transcription";
   nothing for the roots themselves; path may be NULL). Returns 0 if equal. */
TS__PRIVATE int ts__json_diff(const ts__json *a, const ts__json *b, ts__buf *path)
{
    size_t len0 = path ? path->len : 0;
    int d = ts__json_diff_rec(a, b, path, 0);
    if (!d) ts__json_path_truncate(path, len0);
    return d;
}

/* ---- the public read-only view ---------------------------------------------
   Thin wrappers: a ts_json_doc is the arena plus the allocator it was made
   with (copied, so the caller's struct need not outlive the document). */

struct ts_json_doc {
    ts_allocator alloc;
    ts__json_doc doc;
};

TASKSTORE_DEF ts_result ts_json_parse(const char *text, size_t len, const ts_allocator *alloc,
                                      ts_json_doc **doc, const ts_json **root)
{
    ts_allocator a;
    ts_json_doc *d;
    ts__json *r = NULL;
    ts_result res;
    if (doc) *doc = NULL;
    if (root) *root = NULL;
    if (!doc || !root || (!text && len)) return TS_E_INVALID;
    if (alloc) a = *alloc; else memset(&a, 0, sizeof a);
    d = (ts_json_doc *)ts__alloc(&a, sizeof *d);
    if (!d) return TS_E_NOMEM;
    d->alloc = a;
    ts__json_doc_init(&d->doc, &d->alloc);
    res = ts__json_parse(&d->doc, text ? text : "", len, &r, NULL, "json");
    if (res != TS_OK) {
        ts__json_doc_free(&d->doc);
        ts__free(&a, d, sizeof *d);
        return res;
    }
    *doc = d;
    *root = r;
    return TS_OK;
}

TASKSTORE_DEF void ts_json_free(ts_json_doc *doc)
{
    ts_allocator a;
    if (!doc) return;
    a = doc->alloc;
    ts__json_doc_free(&doc->doc);
    ts__free(&a, doc, sizeof *doc);
}

TASKSTORE_DEF ts_json_type ts_json_type_of(const ts_json *v)
{
    return v ? (ts_json_type)v->type : TS_JSON_NULL;
}

TASKSTORE_DEF const ts_json *ts_json_get(const ts_json *object, const char *key)
{
    return key ? ts__json_get(object, key) : NULL;
}

TASKSTORE_DEF const ts_json *ts_json_first(const ts_json *container) { return ts__json_first(container); }
TASKSTORE_DEF const ts_json *ts_json_next(const ts_json *v) { return v ? v->next : NULL; }
TASKSTORE_DEF size_t ts_json_count(const ts_json *container) { return ts__json_count(container); }

TASKSTORE_DEF const char *ts_json_key(const ts_json *member, size_t *len)
{
    if (len) *len = member && member->key ? member->key_len : 0;
    return member ? member->key : NULL;
}

TASKSTORE_DEF const char *ts_json_string(const ts_json *v, size_t *len)
{
    size_t n = 0;
    const char *s = ts__json_str(v, &n);
    if (len) *len = s ? n : 0;
    return s;
}

TASKSTORE_DEF int ts_json_int(const ts_json *v, int64_t *out) { return ts__json_int(v, out); }
TASKSTORE_DEF int ts_json_number(const ts_json *v, double *out) { return ts__json_num(v, out); }

/* ======================================================================== */
/* >>io: the file-I/O vtable. Owns the checked call helpers every component */
/* uses (ts__io_*), the in-memory file system with its durability model, */
/* the fault-injecting wrapper and the POSIX/Win32 vtable.                  */
/* ======================================================================== */

/* ---- calling a vtable ------------------------------------------------------
   Components never call a callback directly: these validate the path first
   (so no callback ever sees a hostile one), turn a NULL callback into
   TS_E_NOTIMPL and set out-parameters on every path. */

TASKSTORE_DEF ts_result ts_io_counters_get(const ts_io *io, ts_io_counters *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!io || !out) return TS_E_INVALID;
    if (!io->stats_fn) return TS_E_NOTIMPL;
    return io->stats_fn(io->user, out);
}

/* allow_root: "" names the store root (list_dir and sync_dir only). */
TS__PRIVATE int ts__io_path_ok(const char *path, int allow_root)
{
    if (!path) return 0;
    if (!path[0]) return allow_root;
    return ts__valid_rel_path(path, strlen(path));
}

/* Counts a call's failure into the counters and passes the result on. */
TS__PRIVATE ts_result ts__io_tally(ts_io_counters *c, ts_result r)
{
    if (r < 0) c->failures++;
    return r;
}

TS__PRIVATE ts_result ts__io_read(const ts_io *io, const char *path, void *buf, size_t cap,
                                  size_t *size_out)
{
    *size_out = 0;
    if (!ts__io_path_ok(path, 0) || (cap && !buf)) return TS_E_INVALID;
    if (!io->read_file_fn) return TS_E_NOTIMPL;
    return io->read_file_fn(io->user, path, buf, cap, size_out);
}

/* Reads a whole file into out (replacing its contents). A file larger than
   max is TS_E_TOOBIG before anything that size is allocated. */
TS__PRIVATE ts_result ts__io_read_all(const ts_io *io, const char *path, size_t max, ts__buf *out)
{
    int tries;
    out->len = 0;
    if (out->data) out->data[0] = 0;
    for (tries = 0; tries < 4; tries++) {
        size_t size = 0, cap = out->cap ? out->cap - 1 : 0;
        ts_result r = ts__io_read(io, path, out->data, cap, &size);
        if (r == TS_OK) {
            if (size > max) return TS_E_TOOBIG;
            out->len = size;
            if (out->data) out->data[size] = 0;
            return TS_OK;
        }
        if (r != TS_E_RANGE) return r;
        if (size > max) return TS_E_TOOBIG;
        /* the file grew between calls at most a few times: it is being
           replaced under us, so take the newest size and try again */
        if ((r = ts__buf_reserve(out, size)) != TS_OK) return r;
    }
    return TS_E_IO;
}

TS__PRIVATE ts_result ts__io_write(const ts_io *io, const char *path, const void *data,
                                   size_t len, unsigned flags)
{
    if (!ts__io_path_ok(path, 0) || (len && !data)) return TS_E_INVALID;
    if (!io->write_file_atomic_fn) return TS_E_NOTIMPL;
    return io->write_file_atomic_fn(io->user, path, data, len, flags);
}

TS__PRIVATE ts_result ts__io_remove(const ts_io *io, const char *path)
{
    if (!ts__io_path_ok(path, 0)) return TS_E_INVALID;
    if (!io->remove_fn) return TS_E_NOTIMPL;
    return io->remove_fn(io->user, path);
}

TS__PRIVATE ts_result ts__io_rename(const ts_io *io, const char *from, const char *to)
{
    if (!ts__io_path_ok(from, 0) || !ts__io_path_ok(to, 0)) return TS_E_INVALID;
    if (!io->rename_fn) return TS_E_NOTIMPL;
    return io->rename_fn(io->user, from, to);
}

TS__PRIVATE ts_result ts__io_mkdir_p(const ts_io *io, const char *path)
{
    if (!ts__io_path_ok(path, 0)) return TS_E_INVALID;
    if (!io->mkdir_p_fn) return TS_E_NOTIMPL;
    return io->mkdir_p_fn(io->user, path);
}

TS__PRIVATE ts_result ts__io_list(const ts_io *io, const char *path, ts_io_list_cb cb, void *ctx)
{
    if (!ts__io_path_ok(path, 1) || !cb) return TS_E_INVALID;
    if (!io->list_dir_fn) return TS_E_NOTIMPL;
    return io->list_dir_fn(io->user, path, cb, ctx);
}

TS__PRIVATE ts_result ts__io_stat(const ts_io *io, const char *path, ts_io_stat *out)
{
    memset(out, 0, sizeof *out);
    if (!ts__io_path_ok(path, 0)) return TS_E_INVALID;
    if (!io->stat_fn) return TS_E_NOTIMPL;
    return io->stat_fn(io->user, path, out);
}

TS__PRIVATE ts_result ts__io_sync_dir(const ts_io *io, const char *path)
{
    if (!ts__io_path_ok(path, 1)) return TS_E_INVALID;
    if (!io->sync_dir_fn) return TS_E_NOTIMPL;
    return io->sync_dir_fn(io->user, path);
}

/* A lock_fn of NULL means the vtable needs no locking: that is success. */
TS__PRIVATE ts_result ts__io_lock(const ts_io *io, int lock)
{
    if (!io->lock_fn) return TS_OK;
    return io->lock_fn(io->user, lock);
}

/* Splits "a/b/c" into the directory part "a/b" (length *dir_len, 0 for the
   root) and the leaf "c". */
TS__PRIVATE const char *ts__io_leaf(const char *path, size_t n, size_t *dir_len)
{
    size_t i = n;
    while (i > 0 && path[i - 1] != '/') i--;
    *dir_len = i ? i - 1 : 0;
    return path + i;
}

/* ======================================================================== */
/* >>io_mem: the in-memory file system                                       */
/* ======================================================================== */

/* The model is a tree of nodes (files and directories) as on a real disk,
   and the durability rules are those of a POSIX file system:

   - A file node is immutable: a write creates a new node, so "the bytes"
     and "which bytes a name points at" are separate, like an inode and a
     directory entry. A node's bytes are durable (data_durable) when they
     were synced before the rename (everything except TS_WRITE_NO_SYNC).

   - Each directory maps names to entries; an entry has two slots: `live`
     (what reads see) and `dur` (what the disk holds). Every directory-entry
     change (create/replace, remove, rename in or out) is applied to the
     live slots at once and appended to the directory's list of pending
     changes; a sync of the directory applies that list, in order, to the
     dur slots (so a sync costs only what is pending in that directory).
     A rename inside one directory is one change (atomic); a rename across
     directories is two (the unlink belongs to the old parent, the link to
     the new one), each durable with its own parent's sync. mkdir is a
     change plus an immediate sync of the parent (the POSIX vtable fsyncs
     the parent of each directory it creates).

   - A crash (ts_io_mem_crash) decides each pending change: DROP_UNSYNCED
     drops all, RANDOM keeps each with probability 1/2, survivors applied in
     their order (changes of different directories touch different entries,
     so only the order within a directory matters). Then every entry becomes
     live := dur, walking the durable tree from the root; partial syncs can
     leave a directory durably linked twice or even in a cycle (as a real
     disk can before fsck), so the walk keeps only the first link to each
     directory. Reached files whose bytes were never synced come back empty
     (DROP) or intact/truncated/zero-tailed (RANDOM). Nodes the walk did not
     reach are freed and reference counts recomputed. No allocation happens
     in a crash.

   Nodes, entries and pending changes live in three index-addressed pools
   (index 0 = none); directory maps store entry indices, entries and
   changes store node indices. A node is reference-counted by the entry
   slots and pending changes that name it; the root is pinned. Reference
   cycles can only arise among durable slots of directories, and die at the
   next crash or at destroy. */

#define TS__MEM_ROOT 1
enum { TS__MNODE_FREE = 0, TS__MNODE_FILE = 1, TS__MNODE_DIR = 2 };

typedef struct ts__mnode {
    unsigned char kind;
    unsigned char data_durable;     /* file: its bytes were synced */
    uint32_t mark;                  /* crash walk epoch */
    size_t refs;
    unsigned char *data;            /* file bytes (cap allocated) */
    size_t len, cap;
    ts__map names;                  /* dir: name -> entry index */
    size_t nlive;                   /* dir: entries with a live node */
    size_t chg_head, chg_tail;      /* dir: its pending changes, oldest first */
    size_t link;                    /* free list / dead list / walk parent */
    size_t walk_pos;                /* crash walk cursor into names */
} ts__mnode;

typedef struct ts__mentry {
    size_t live, dur;               /* node indices, 0 = no such name */
    size_t pending;                 /* pending changes naming this entry */
    size_t dir;                     /* owning directory; 0 = free slot */
    const char *name;               /* the key inside dir's map */
    size_t name_len;
    size_t link;                    /* free list / zombie list */
} ts__mentry;

/* One pending directory-entry change: up to two entries of one directory,
   each given a new node (0 = removed). */
typedef struct ts__mchange {
    size_t dir;
    size_t entry[2];
    size_t node[2];
    size_t next;                    /* the directory's next change / free list */
} ts__mchange;

struct ts_io_mem {
    ts_allocator alloc;
    ts__mnode *nodes;
    size_t nnodes, cap_nodes, free_nodes, dead;
    int reaping;
    ts__mentry *ents;
    size_t nents, cap_ents, free_ents;
    ts__mchange *chg;
    size_t nchg, cap_chg, free_chg;
    uint32_t epoch;
    int locked;
    ts_io_counters c;
};

/* Grows a pool array to hold at least `need` items (doubling). */
TS__PRIVATE ts_result ts__mem_grow(ts_io_mem *m, void **arr, size_t *cap, size_t need, size_t item)
{
    size_t ncap = *cap ? *cap : 16, bytes;
    void *p;
    if (need <= *cap) return TS_OK;
    while (ncap < need) {
        if (ncap > (size_t)-1 / 2) return TS_E_NOMEM;
        ncap *= 2;
    }
    if (!ts__size_mul(ncap, item, &bytes)) return TS_E_NOMEM;
    p = ts__realloc(&m->alloc, *arr, *cap * item, bytes);
    if (!p) return TS_E_NOMEM;
    *arr = p;
    *cap = ncap;
    return TS_OK;
}

/* A new node with no references; 0 when out of memory. */
TS__PRIVATE size_t ts__mem_node_new(ts_io_mem *m, int kind)
{
    size_t i;
    ts__mnode *n;
    if (m->free_nodes) {
        i = m->free_nodes;
        m->free_nodes = m->nodes[i].link;
    } else {
        void *arr = m->nodes;
        if (ts__mem_grow(m, &arr, &m->cap_nodes, m->nnodes + 1, sizeof(ts__mnode))) return 0;
        m->nodes = (ts__mnode *)arr;
        i = m->nnodes++;
    }
    n = &m->nodes[i];
    memset(n, 0, sizeof *n);
    n->kind = (unsigned char)kind;
    ts__map_init(&n->names, &m->alloc);
    return i;
}

TS__PRIVATE void ts__mem_entry_release(ts_io_mem *m, size_t e)
{
    m->ents[e].dir = 0;
    m->ents[e].link = m->free_ents;
    m->free_ents = e;
}

/* Frees a node's contents and slot. A directory's entries go with it; the
   nodes they name lose a reference (queued on the dead list, not recursed). */
TS__PRIVATE void ts__mem_unref(ts_io_mem *m, size_t i);

TS__PRIVATE void ts__mem_node_release(ts_io_mem *m, size_t i, int unref_children)
{
    ts__mnode *n = &m->nodes[i];
    if (n->kind == TS__MNODE_FILE) {
        ts__free(&m->alloc, n->data, n->cap);
    } else if (n->kind == TS__MNODE_DIR) {
        size_t pos = 0;
        const ts__map_slot *s;
        while ((s = ts__map_next(&m->nodes[i].names, &pos)) != NULL) {
            size_t e = (size_t)s->value;
            if (unref_children) {
                ts__mem_unref(m, m->ents[e].live);
                ts__mem_unref(m, m->ents[e].dur);
            }
            ts__mem_entry_release(m, e);
        }
        ts__map_free(&m->nodes[i].names);
    }
    n = &m->nodes[i];
    memset(n, 0, sizeof *n);
    n->link = m->free_nodes;
    m->free_nodes = i;
}

TS__PRIVATE void ts__mem_ref(ts_io_mem *m, size_t i)
{
    if (i) m->nodes[i].refs++;
}

TS__PRIVATE void ts__mem_unref(ts_io_mem *m, size_t i)
{
    if (!i || --m->nodes[i].refs) return;
    m->nodes[i].link = m->dead;
    m->dead = i;
    if (m->reaping) return; /* an outer call is already draining the list */
    m->reaping = 1;
    while (m->dead) {
        size_t d = m->dead;
        m->dead = m->nodes[d].link;
        ts__mem_node_release(m, d, 1);
    }
    m->reaping = 0;
}

TS__PRIVATE void ts__mem_set(ts_io_mem *m, size_t *slot, size_t node)
{
    size_t old = *slot;
    ts__mem_ref(m, node);
    *slot = node;
    ts__mem_unref(m, old);
}

/* Drops an entry that names nothing, live or durable, and is in no pending
   change. */
TS__PRIVATE void ts__mem_entry_gc(ts_io_mem *m, size_t e)
{
    ts__mentry *en = &m->ents[e];
    if (!en->dir || en->live || en->dur || en->pending) return;
    ts__map_del(&m->nodes[en->dir].names, en->name, en->name_len);
    ts__mem_entry_release(m, e);
}

/* The entry for name in dir; with create, makes an empty one. 0 if absent
   (or out of memory: *r says which). */
TS__PRIVATE size_t ts__mem_entry(ts_io_mem *m, size_t dir, const char *name, size_t n, int create,
                                 ts_result *r)
{
    uint64_t v;
    size_t e;
    ts__map *names = &m->nodes[dir].names;
    *r = TS_OK;
    if (ts__map_get(names, name, n, &v)) return (size_t)v;
    if (!create) return 0;
    if (m->free_ents) {
        e = m->free_ents;
        m->free_ents = m->ents[e].link;
    } else {
        void *arr = m->ents;
        if ((*r = ts__mem_grow(m, &arr, &m->cap_ents, m->nents + 1, sizeof(ts__mentry))) != TS_OK)
            return 0;
        m->ents = (ts__mentry *)arr;
        e = m->nents++;
    }
    memset(&m->ents[e], 0, sizeof m->ents[e]);
    if ((*r = ts__map_put(names, name, n, (uint64_t)e)) != TS_OK) {
        ts__mem_entry_release(m, e);
        return 0;
    }
    m->ents[e].dir = dir;
    /* the map's own copy of the key stays put until the key is deleted */
    m->ents[e].name = names->slots[ts__map_find_slot(names, name, n, ts__map_hash(name, n))].key;
    m->ents[e].name_len = n;
    return e;
}

/* Room for k more pending changes, reserved before anything is touched so
   that a change is never half made. */
TS__PRIVATE ts_result ts__mem_chg_reserve(ts_io_mem *m, size_t k)
{
    void *arr = m->chg;
    ts_result r = ts__mem_grow(m, &arr, &m->cap_chg, m->nchg + k, sizeof(ts__mchange));
    m->chg = (ts__mchange *)arr;
    return r;
}

TS__PRIVATE void ts__mem_set_live(ts_io_mem *m, size_t e, size_t node)
{
    ts__mentry *en = &m->ents[e];
    ts__mnode *d = &m->nodes[en->dir];
    if (en->live && !node) d->nlive--;
    if (!en->live && node) d->nlive++;
    ts__mem_set(m, &m->ents[e].live, node);
}

/* Records a change (room reserved by the caller) and applies it to the live
   slots. e1 = 0 for a one-entry change. */
TS__PRIVATE void ts__mem_change(ts_io_mem *m, size_t dir, size_t e0, size_t n0, size_t e1, size_t n1)
{
    size_t i;
    ts__mchange *ch;
    if (m->free_chg) {
        i = m->free_chg;
        m->free_chg = m->chg[i].next;
    } else {
        i = m->nchg++;
    }
    ch = &m->chg[i];
    ch->dir = dir;
    ch->entry[0] = e0; ch->node[0] = n0;
    ch->entry[1] = e1; ch->node[1] = n1;
    ch->next = 0;
    if (m->nodes[dir].chg_tail) m->chg[m->nodes[dir].chg_tail].next = i;
    else m->nodes[dir].chg_head = i;
    m->nodes[dir].chg_tail = i;
    ts__mem_ref(m, dir);
    ts__mem_ref(m, n0);
    ts__mem_ref(m, n1);
    m->ents[e0].pending++;
    if (e1) m->ents[e1].pending++;
    ts__mem_set_live(m, e0, n0);
    if (e1) ts__mem_set_live(m, e1, n1);
}

/* The durable half of fsync(dir): applies dir's pending changes in order. */
TS__PRIVATE void ts__mem_sync(ts_io_mem *m, size_t dir)
{
    size_t i = m->nodes[dir].chg_head;
    m->nodes[dir].chg_head = m->nodes[dir].chg_tail = 0;
    while (i) {
        ts__mchange ch = m->chg[i];
        int k;
        m->chg[i].next = m->free_chg;
        m->free_chg = i;
        for (k = 0; k < 2; k++) {
            if (!ch.entry[k]) continue;
            ts__mem_set(m, &m->ents[ch.entry[k]].dur, ch.node[k]);
            m->ents[ch.entry[k]].pending--;
            ts__mem_unref(m, ch.node[k]);
            ts__mem_entry_gc(m, ch.entry[k]);
        }
        ts__mem_unref(m, dir); /* still linked live: the caller resolved it */
        i = ch.next;
    }
}

/* Walks path's first n bytes through live entries. Returns the node (0 if a
   component is missing or a file stands where a directory should be). */
TS__PRIVATE size_t ts__mem_lookup(const ts_io_mem *m, const char *path, size_t n)
{
    size_t cur = TS__MEM_ROOT, i = 0;
    while (i < n) {
        size_t j = i;
        uint64_t v;
        if (m->nodes[cur].kind != TS__MNODE_DIR) return 0;
        while (j < n && path[j] != '/') j++;
        if (!ts__map_get(&m->nodes[cur].names, path + i, j - i, &v)) return 0;
        cur = m->ents[v].live;
        if (!cur) return 0;
        i = j + 1;
    }
    return cur;
}

/* mkdir -p of path's first n bytes; *dir_out is the last directory. */
TS__PRIVATE ts_result ts__mem_mkdirs(ts_io_mem *m, const char *path, size_t n, ts_io_counters *c,
                                     size_t *dir_out)
{
    size_t cur = TS__MEM_ROOT, i = 0;
    *dir_out = 0;
    while (i < n) {
        size_t j = i, e, node;
        ts_result r;
        while (j < n && path[j] != '/') j++;
        e = ts__mem_entry(m, cur, path + i, j - i, 1, &r);
        if (!e) return r;
        node = m->ents[e].live;
        if (!node) {
            if (ts__mem_chg_reserve(m, 1) != TS_OK ||
                (node = ts__mem_node_new(m, TS__MNODE_DIR)) == 0) {
                ts__mem_entry_gc(m, e);
                return TS_E_NOMEM;
            }
            ts__mem_change(m, cur, e, node, 0, 0);
            ts__mem_sync(m, cur);
            if (c) { c->mkdirs++; c->dir_syncs++; }
        } else if (m->nodes[node].kind != TS__MNODE_DIR) {
            return TS_E_EXISTS;
        }
        cur = node;
        i = j + 1;
    }
    *dir_out = cur;
    return TS_OK;
}

/* The parent directory of path and the entry of its leaf (0 if none). */
TS__PRIVATE ts_result ts__mem_parent(ts_io_mem *m, const char *path, size_t n, int create,
                                     size_t *dir, size_t *entry)
{
    size_t dlen;
    const char *leaf = ts__io_leaf(path, n, &dlen);
    ts_result r;
    *entry = 0;
    *dir = ts__mem_lookup(m, path, dlen);
    if (!*dir || m->nodes[*dir].kind != TS__MNODE_DIR) { *dir = 0; return TS_E_NOTFOUND; }
    *entry = ts__mem_entry(m, *dir, leaf, (size_t)(path + n - leaf), create, &r);
    return r;
}

TS__PRIVATE ts_result ts__mem_write(ts_io_mem *m, const char *path, const void *data, size_t len,
                                    unsigned flags, ts_io_counters *c)
{
    size_t n, dir, dlen, e, node;
    const char *leaf;
    ts_result r;
    if (!ts__io_path_ok(path, 0) || (len && !data)) return TS_E_INVALID;
    n = strlen(path);
    leaf = ts__io_leaf(path, n, &dlen);
    if ((r = ts__mem_mkdirs(m, path, dlen, c, &dir)) != TS_OK) return r;
    if ((e = ts__mem_entry(m, dir, leaf, (size_t)(path + n - leaf), 1, &r)) == 0) return r;
    if (m->ents[e].live && m->nodes[m->ents[e].live].kind == TS__MNODE_DIR) return TS_E_INVALID;
    if (ts__mem_chg_reserve(m, 1) != TS_OK || (node = ts__mem_node_new(m, TS__MNODE_FILE)) == 0) {
        ts__mem_entry_gc(m, e);
        return TS_E_NOMEM;
    }
    if (len) {
        unsigned char *copy = (unsigned char *)ts__alloc(&m->alloc, len);
        if (!copy) {
            ts__mem_node_release(m, node, 0);
            ts__mem_entry_gc(m, e);
            return TS_E_NOMEM;
        }
        memcpy(copy, data, len);
        m->nodes[node].data = copy;
        m->nodes[node].len = m->nodes[node].cap = len;
    }
    m->nodes[node].data_durable = (unsigned char)!(flags & TS_WRITE_NO_SYNC);
    ts__mem_change(m, dir, e, node, 0, 0);
    if (c) {
        c->writes++;
        c->bytes_written += len;
        c->renames++;
        if (!(flags & TS_WRITE_NO_SYNC)) c->file_syncs++;
        if (!(flags & (TS_WRITE_NO_SYNC | TS_WRITE_DEFER_DIRSYNC))) c->dir_syncs++;
    }
    if (!(flags & (TS_WRITE_NO_SYNC | TS_WRITE_DEFER_DIRSYNC))) ts__mem_sync(m, dir);
    return TS_OK;
}

TS__PRIVATE ts_result ts__mem_read(ts_io_mem *m, const char *path, void *buf, size_t cap,
                                   size_t *size_out)
{
    size_t node, k;
    *size_out = 0;
    if (!ts__io_path_ok(path, 0) || (cap && !buf)) return TS_E_INVALID;
    node = ts__mem_lookup(m, path, strlen(path));
    if (!node) return TS_E_NOTFOUND;
    if (m->nodes[node].kind != TS__MNODE_FILE) return TS_E_INVALID;
    *size_out = m->nodes[node].len;
    k = m->nodes[node].len < cap ? m->nodes[node].len : cap;
    if (k) memcpy(buf, m->nodes[node].data, k);
    m->c.reads++;
    m->c.bytes_read += k;
    return m->nodes[node].len > cap ? TS_E_RANGE : TS_OK;
}

TS__PRIVATE ts_result ts__mem_remove(ts_io_mem *m, const char *path)
{
    size_t dir, e, node;
    ts_result r;
    if (!ts__io_path_ok(path, 0)) return TS_E_INVALID;
    if ((r = ts__mem_parent(m, path, strlen(path), 0, &dir, &e)) != TS_OK) return r;
    if (!e || !(node = m->ents[e].live)) return TS_E_NOTFOUND;
    if (m->nodes[node].kind == TS__MNODE_DIR && m->nodes[node].nlive) return TS_E_EXISTS;
    if ((r = ts__mem_chg_reserve(m, 1)) != TS_OK) return r;
    ts__mem_change(m, dir, e, 0, 0, 0);
    m->c.removes++;
    return TS_OK;
}

TS__PRIVATE ts_result ts__mem_rename(ts_io_mem *m, const char *from, const char *to)
{
    size_t fn, tn, fdir, fe, tdir, te, node, old;
    ts_result r;
    if (!ts__io_path_ok(from, 0) || !ts__io_path_ok(to, 0)) return TS_E_INVALID;
    fn = strlen(from);
    tn = strlen(to);
    if ((r = ts__mem_parent(m, from, fn, 0, &fdir, &fe)) != TS_OK) return r;
    if (!fe || !(node = m->ents[fe].live)) return TS_E_NOTFOUND;
    if (fn == tn && memcmp(from, to, fn) == 0) { m->c.renames++; return TS_OK; }
    if (m->nodes[node].kind == TS__MNODE_DIR && tn > fn && memcmp(from, to, fn) == 0 && to[fn] == '/')
        return TS_E_INVALID;
    if ((r = ts__mem_parent(m, to, tn, 1, &tdir, &te)) != TS_OK) return r;
    if ((old = m->ents[te].live) != 0) {
        ts_result bad = TS_OK;
        if (m->nodes[old].kind != m->nodes[node].kind) bad = TS_E_INVALID;
        else if (m->nodes[old].kind == TS__MNODE_DIR && m->nodes[old].nlive) bad = TS_E_EXISTS;
        if (bad) return bad;
    }
    if ((r = ts__mem_chg_reserve(m, 2)) != TS_OK) {
        ts__mem_entry_gc(m, te);
        return r;
    }
    /* hold the node across the unlink so it cannot die in between */
    ts__mem_ref(m, node);
    if (fdir == tdir) {
        ts__mem_change(m, fdir, fe, 0, te, node);
    } else {
        ts__mem_change(m, fdir, fe, 0, 0, 0);
        ts__mem_change(m, tdir, te, node, 0, 0);
    }
    ts__mem_unref(m, node);
    m->c.renames++;
    return TS_OK;
}

TS__PRIVATE ts_result ts__mem_mkdir_p(ts_io_mem *m, const char *path)
{
    size_t dir;
    if (!ts__io_path_ok(path, 0)) return TS_E_INVALID;
    return ts__mem_mkdirs(m, path, strlen(path), &m->c, &dir);
}

TS__PRIVATE ts_result ts__mem_list(ts_io_mem *m, const char *path, ts_io_list_cb cb, void *ctx)
{
    size_t dir, pos = 0, off = 0;
    const ts__map_slot *s;
    ts__buf names;
    ts_result r = TS_OK;
    if (!ts__io_path_ok(path, 1) || !cb) return TS_E_INVALID;
    dir = ts__mem_lookup(m, path, strlen(path));
    if (!dir || m->nodes[dir].kind != TS__MNODE_DIR) return TS_E_NOTFOUND;
    m->c.lists++;
    /* a snapshot, so the callback may change the directory under us:
       each name followed by its NUL and a kind byte */
    ts__buf_init(&names, &m->alloc);
    while ((s = ts__map_next(&m->nodes[dir].names, &pos)) != NULL) {
        size_t node = m->ents[s->value].live;
        if (!node) continue;
        if ((r = ts__buf_append(&names, s->key, s->key_len + 1)) != TS_OK ||
            (r = ts__buf_putc(&names, m->nodes[node].kind == TS__MNODE_DIR)) != TS_OK)
            break;
    }
    while (r == TS_OK && off < names.len) {
        const char *name = (const char *)names.data + off;
        size_t k = strlen(name);
        if (cb(ctx, name, names.data[off + k + 1])) break;
        off += k + 2;
    }
    ts__buf_free(&names);
    return r;
}

TS__PRIVATE ts_result ts__mem_stat(ts_io_mem *m, const char *path, ts_io_stat *out)
{
    size_t node;
    memset(out, 0, sizeof *out);
    if (!ts__io_path_ok(path, 0)) return TS_E_INVALID;
    node = ts__mem_lookup(m, path, strlen(path));
    if (!node) return TS_E_NOTFOUND;
    m->c.stats++;
    out->is_dir = m->nodes[node].kind == TS__MNODE_DIR;
    if (!out->is_dir) out->size = m->nodes[node].len;
    return TS_OK;
}

TS__PRIVATE ts_result ts__mem_sync_dir(ts_io_mem *m, const char *path)
{
    size_t dir;
    if (!ts__io_path_ok(path, 1)) return TS_E_INVALID;
    dir = ts__mem_lookup(m, path, strlen(path));
    if (!dir || m->nodes[dir].kind != TS__MNODE_DIR) return TS_E_NOTFOUND;
    m->c.dir_syncs++;
    ts__mem_sync(m, dir);
    return TS_OK;
}

/* The vtable callbacks: count failures, nothing else. */
static ts_result ts__mem_cb_read(void *u, const char *p, void *b, size_t cap, size_t *sz)
{ ts_io_mem *m = (ts_io_mem *)u; return ts__io_tally(&m->c, ts__mem_read(m, p, b, cap, sz)); }
static ts_result ts__mem_cb_write(void *u, const char *p, const void *d, size_t n, unsigned fl)
{ ts_io_mem *m = (ts_io_mem *)u; return ts__io_tally(&m->c, ts__mem_write(m, p, d, n, fl, &m->c)); }
static ts_result ts__mem_cb_remove(void *u, const char *p)
{ ts_io_mem *m = (ts_io_mem *)u; return ts__io_tally(&m->c, ts__mem_remove(m, p)); }
static ts_result ts__mem_cb_rename(void *u, const char *from, const char *to)
{ ts_io_mem *m = (ts_io_mem *)u; return ts__io_tally(&m->c, ts__mem_rename(m, from, to)); }
static ts_result ts__mem_cb_mkdir_p(void *u, const char *p)
{ ts_io_mem *m = (ts_io_mem *)u; return ts__io_tally(&m->c, ts__mem_mkdir_p(m, p)); }
static ts_result ts__mem_cb_list(void *u, const char *p, ts_io_list_cb cb, void *ctx)
{ ts_io_mem *m = (ts_io_mem *)u; return ts__io_tally(&m->c, ts__mem_list(m, p, cb, ctx)); }
static ts_result ts__mem_cb_stat(void *u, const char *p, ts_io_stat *out)
{ ts_io_mem *m = (ts_io_mem *)u; return ts__io_tally(&m->c, ts__mem_stat(m, p, out)); }
static ts_result ts__mem_cb_sync_dir(void *u, const char *p)
{ ts_io_mem *m = (ts_io_mem *)u; return ts__io_tally(&m->c, ts__mem_sync_dir(m, p)); }
static ts_result ts__mem_cb_lock(void *u, int lock)
{
    ts_io_mem *m = (ts_io_mem *)u;
    if (lock && m->locked) return ts__io_tally(&m->c, TS_E_LOCKED);
    m->locked = lock != 0;
    return TS_OK;
}
static ts_result ts__mem_cb_stats(void *u, ts_io_counters *out)
{ *out = ((ts_io_mem *)u)->c; return TS_OK; }

TASKSTORE_DEF ts_result ts_io_mem_create(const ts_allocator *alloc, ts_io_mem **out)
{
    ts_io_mem *m;
    size_t root;
    if (!out) return TS_E_INVALID;
    *out = NULL;
    m = (ts_io_mem *)ts__calloc(alloc, 1, sizeof *m);
    if (!m) return TS_E_NOMEM;
    if (alloc) m->alloc = *alloc;
    m->nnodes = 1; /* index 0 means "none" */
    m->nents = 1;
    m->nchg = 1;
    root = ts__mem_node_new(m, TS__MNODE_DIR);
    if (root != TS__MEM_ROOT) {
        ts__free(&m->alloc, m->nodes, m->cap_nodes * sizeof(ts__mnode));
        ts__free(&m->alloc, m, sizeof *m);
        return TS_E_NOMEM;
    }
    m->nodes[root].refs = 1; /* pinned */
    *out = m;
    return TS_OK;
}

TASKSTORE_DEF void ts_io_mem_destroy(ts_io_mem *m)
{
    size_t i;
    ts_allocator a;
    if (!m) return;
    for (i = 1; i < m->nnodes; i++) {
        ts__mnode *n = &m->nodes[i];
        if (n->kind == TS__MNODE_FILE) ts__free(&m->alloc, n->data, n->cap);
        else if (n->kind == TS__MNODE_DIR) ts__map_free(&n->names);
    }
    a = m->alloc;
    ts__free(&a, m->nodes, m->cap_nodes * sizeof(ts__mnode));
    ts__free(&a, m->ents, m->cap_ents * sizeof(ts__mentry));
    ts__free(&a, m->chg, m->cap_chg * sizeof(ts__mchange));
    ts__free(&a, m, sizeof *m);
}

TASKSTORE_DEF void ts_io_mem_vtable(ts_io_mem *m, ts_io *io)
{
    if (!io) return;
    memset(io, 0, sizeof *io);
    io->version = TS_IO_VERSION;
    io->caps = 0;
    io->user = m;
    io->read_file_fn = ts__mem_cb_read;
    io->write_file_atomic_fn = ts__mem_cb_write;
    io->remove_fn = ts__mem_cb_remove;
    io->rename_fn = ts__mem_cb_rename;
    io->mkdir_p_fn = ts__mem_cb_mkdir_p;
    io->list_dir_fn = ts__mem_cb_list;
    io->stat_fn = ts__mem_cb_stat;
    io->sync_dir_fn = ts__mem_cb_sync_dir;
    io->lock_fn = ts__mem_cb_lock;
    io->stats_fn = ts__mem_cb_stats;
}

TASKSTORE_DEF ts_result ts_io_mem_put(ts_io_mem *m, const char *path, const void *data, size_t len)
{
    if (!m) return TS_E_INVALID;
    return ts__mem_write(m, path, data, len, 0, NULL);
}

TASKSTORE_DEF void ts_io_mem_usage(const ts_io_mem *m, uint64_t *files, uint64_t *bytes)
{
    /* A directory unreachable from the live root has no live entries (it was
       empty when removed or replaced, and crashes sweep the rest), so every
       live file slot in the pool is a live file. */
    uint64_t nf = 0, nb = 0;
    size_t e;
    if (m) {
        for (e = 1; e < m->nents; e++) {
            size_t node = m->ents[e].dir ? m->ents[e].live : 0;
            if (node && m->nodes[node].kind == TS__MNODE_FILE) {
                nf++;
                nb += m->nodes[node].len;
            }
        }
    }
    if (files) *files = nf;
    if (bytes) *bytes = nb;
}

TS__PRIVATE uint64_t ts__mem_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* What power loss leaves of bytes that were never synced. */
TS__PRIVATE void ts__mem_tear(ts__mnode *n, ts_crash_mode mode, uint64_t *rng)
{
    n->data_durable = 1;
    if (mode == TS_CRASH_DROP_UNSYNCED) {
        n->len = 0;
    } else {
        uint64_t pick = ts__mem_rand(rng);
        size_t at = n->len ? (size_t)(ts__mem_rand(rng) % ((uint64_t)n->len + 1)) : 0;
        if (pick % 3 == 1) n->len = at;
        else if (pick % 3 == 2) memset(n->data + at, 0, n->len - at);
    }
}

TASKSTORE_DEF void ts_io_mem_crash(ts_io_mem *m, ts_crash_mode mode, uint64_t seed)
{
    uint64_t rng = seed;
    size_t i, cur, zombies = 0;
    if (!m) return;
    /* 1. settle the pending changes, each directory's in order. Reference
       counts are left alone here and rebuilt from scratch in step 4. */
    for (i = 1; i < m->nnodes; i++) {
        size_t c = m->nodes[i].kind == TS__MNODE_DIR ? m->nodes[i].chg_head : 0;
        while (c) {
            const ts__mchange *ch = &m->chg[c];
            int k, keep = mode == TS_CRASH_RANDOM && (ts__mem_rand(&rng) & 1);
            for (k = 0; k < 2; k++) {
                if (!ch->entry[k]) continue;
                if (keep) m->ents[ch->entry[k]].dur = ch->node[k];
                m->ents[ch->entry[k]].pending = 0;
            }
            c = ch->next;
        }
        m->nodes[i].chg_head = m->nodes[i].chg_tail = 0;
    }
    m->nchg = 1;
    m->free_chg = 0;
    /* 2. walk the durable tree from the root without a stack (link holds
       the parent, walk_pos the cursor), making live := dur */
    if (++m->epoch == 0) {
        for (i = 1; i < m->nnodes; i++) m->nodes[i].mark = 0;
        m->epoch = 1;
    }
    cur = TS__MEM_ROOT;
    m->nodes[cur].mark = m->epoch;
    m->nodes[cur].link = 0;
    m->nodes[cur].walk_pos = 0;
    m->nodes[cur].nlive = 0;
    while (cur) {
        ts__mnode *d = &m->nodes[cur];
        const ts__map_slot *s = ts__map_next(&d->names, &d->walk_pos);
        size_t e, child;
        ts__mnode *cn;
        if (!s) { cur = d->link; continue; }
        e = (size_t)s->value;
        child = m->ents[e].dur;
        cn = child ? &m->nodes[child] : NULL;
        if (cn && cn->kind == TS__MNODE_DIR && cn->mark == m->epoch) {
            m->ents[e].dur = child = 0; /* a second link to a directory */
            cn = NULL;
        }
        m->ents[e].live = child;
        if (!child) {
            m->ents[e].link = zombies; /* deleted after the walk */
            zombies = e;
            continue;
        }
        d->nlive++;
        if (cn->mark == m->epoch) continue; /* a file reached twice */
        cn->mark = m->epoch;
        if (cn->kind == TS__MNODE_FILE) {
            if (!cn->data_durable) ts__mem_tear(cn, mode, &rng);
        } else {
            cn->link = cur;
            cn->walk_pos = 0;
            cn->nlive = 0;
            cur = child;
        }
    }
    while (zombies) {
        size_t next = m->ents[zombies].link;
        ts__mem_entry_gc(m, zombies);
        zombies = next;
    }
    /* 3. free what the walk did not reach (without touching reference
       counts: they are rebuilt next) */
    for (i = TS__MEM_ROOT + 1; i < m->nnodes; i++)
        if (m->nodes[i].kind != TS__MNODE_FREE && m->nodes[i].mark != m->epoch)
            ts__mem_node_release(m, i, 0);
    /* 4. one reference per live and per durable slot, plus the root pin */
    for (i = 1; i < m->nnodes; i++) m->nodes[i].refs = 0;
    m->nodes[TS__MEM_ROOT].refs = 1;
    for (i = 1; i < m->nents; i++) {
        if (!m->ents[i].dir) continue;
        m->nodes[m->ents[i].live].refs += 2; /* live == dur now */
    }
    m->locked = 0;
}

/* ======================================================================== */
/* >>io_fault: the fault-injecting wrapper                                   */
/* ======================================================================== */

struct ts_io_fault {
    ts_io inner;
    ts_allocator alloc;
    ts_fault_plan plan;
    uint64_t ops, injected;
    int crashed;
};

/* Numbers the operation and decides its fate: TS_OK to pass it on. */
TS__PRIVATE ts_result ts__fault_next(ts_io_fault *f)
{
    uint64_t n = ++f->ops, count;
    if (!f->crashed) {
        if (!f->plan.fail_at || n < f->plan.fail_at) return TS_OK;
        if (f->plan.crash) {
            f->crashed = 1;
        } else {
            count = f->plan.fail_count ? f->plan.fail_count : 1;
            if (n - f->plan.fail_at >= count) return TS_OK;
            f->injected++;
            return f->plan.fail_with < 0 ? f->plan.fail_with : TS_E_IO;
        }
    }
    f->injected++;
    return TS_E_IO;
}

static ts_result ts__fault_cb_read(void *u, const char *p, void *b, size_t cap, size_t *sz)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts__fault_next(f);
    *sz = 0;
    if (r) return r;
    if (!f->inner.read_file_fn) return TS_E_NOTIMPL;
    return f->inner.read_file_fn(f->inner.user, p, b, cap, sz);
}
static ts_result ts__fault_cb_write(void *u, const char *p, const void *d, size_t n, unsigned fl)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts__fault_next(f);
    if (r) return r;
    if (!f->inner.write_file_atomic_fn) return TS_E_NOTIMPL;
    return f->inner.write_file_atomic_fn(f->inner.user, p, d, n, fl);
}
static ts_result ts__fault_cb_remove(void *u, const char *p)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts__fault_next(f);
    if (r) return r;
    if (!f->inner.remove_fn) return TS_E_NOTIMPL;
    return f->inner.remove_fn(f->inner.user, p);
}
static ts_result ts__fault_cb_rename(void *u, const char *from, const char *to)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts__fault_next(f);
    if (r) return r;
    if (!f->inner.rename_fn) return TS_E_NOTIMPL;
    return f->inner.rename_fn(f->inner.user, from, to);
}
static ts_result ts__fault_cb_mkdir_p(void *u, const char *p)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts__fault_next(f);
    if (r) return r;
    if (!f->inner.mkdir_p_fn) return TS_E_NOTIMPL;
    return f->inner.mkdir_p_fn(f->inner.user, p);
}
static ts_result ts__fault_cb_list(void *u, const char *p, ts_io_list_cb cb, void *ctx)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts__fault_next(f);
    if (r) return r;
    if (!f->inner.list_dir_fn) return TS_E_NOTIMPL;
    return f->inner.list_dir_fn(f->inner.user, p, cb, ctx);
}
static ts_result ts__fault_cb_stat(void *u, const char *p, ts_io_stat *out)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts__fault_next(f);
    memset(out, 0, sizeof *out);
    if (r) return r;
    if (!f->inner.stat_fn) return TS_E_NOTIMPL;
    return f->inner.stat_fn(f->inner.user, p, out);
}
static ts_result ts__fault_cb_sync_dir(void *u, const char *p)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts__fault_next(f);
    if (r) return r;
    if (!f->inner.sync_dir_fn) return TS_E_NOTIMPL;
    return f->inner.sync_dir_fn(f->inner.user, p);
}
static ts_result ts__fault_cb_lock(void *u, int lock)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts__fault_next(f);
    if (r) return r;
    if (!f->inner.lock_fn) return TS_OK; /* the inner vtable needs no lock */
    return f->inner.lock_fn(f->inner.user, lock);
}
static ts_result ts__fault_cb_stats(void *u, ts_io_counters *out)
{
    ts_io_fault *f = (ts_io_fault *)u;
    ts_result r = ts_io_counters_get(&f->inner, out);
    out->failures += f->injected;
    return r == TS_E_NOTIMPL ? TS_OK : r;
}

TASKSTORE_DEF ts_result ts_io_fault_create(const ts_io *inner, const ts_allocator *alloc,
                                           ts_io_fault **out)
{
    ts_io_fault *f;
    if (!out) return TS_E_INVALID;
    *out = NULL;
    if (!inner) return TS_E_INVALID;
    f = (ts_io_fault *)ts__calloc(alloc, 1, sizeof *f);
    if (!f) return TS_E_NOMEM;
    f->inner = *inner;
    if (alloc) f->alloc = *alloc;
    *out = f;
    return TS_OK;
}

TASKSTORE_DEF void ts_io_fault_destroy(ts_io_fault *f)
{
    ts_allocator a;
    if (!f) return;
    a = f->alloc;
    ts__free(&a, f, sizeof *f);
}

TASKSTORE_DEF void ts_io_fault_vtable(ts_io_fault *f, ts_io *io)
{
    if (!io) return;
    memset(io, 0, sizeof *io);
    if (!f) return;
    io->version = TS_IO_VERSION;
    io->caps = f->inner.caps;
    io->user = f;
    io->read_file_fn = ts__fault_cb_read;
    io->write_file_atomic_fn = ts__fault_cb_write;
    io->remove_fn = ts__fault_cb_remove;
    io->rename_fn = ts__fault_cb_rename;
    io->mkdir_p_fn = ts__fault_cb_mkdir_p;
    io->list_dir_fn = ts__fault_cb_list;
    io->stat_fn = ts__fault_cb_stat;
    io->sync_dir_fn = ts__fault_cb_sync_dir;
    io->lock_fn = ts__fault_cb_lock;
    io->stats_fn = ts__fault_cb_stats;
}

TASKSTORE_DEF void ts_io_fault_set(ts_io_fault *f, const ts_fault_plan *plan)
{
    if (!f) return;
    if (plan) f->plan = *plan;
    else memset(&f->plan, 0, sizeof f->plan);
}

TASKSTORE_DEF void ts_io_fault_reset(ts_io_fault *f)
{
    if (!f) return;
    memset(&f->plan, 0, sizeof f->plan);
    f->crashed = 0;
}

TASKSTORE_DEF uint64_t ts_io_fault_ops(const ts_io_fault *f) { return f ? f->ops : 0; }
TASKSTORE_DEF int ts_io_fault_crashed(const ts_io_fault *f) { return f ? f->crashed : 0; }

/* ======================================================================== */
/* >>io_posix: the default vtable over a real directory (POSIX and Win32)   */
/* ======================================================================== */
#ifndef TASKSTORE_NO_STDIO
#ifndef _WIN32

#include <sys/types.h>
#include <sys/stat.h>
#include <sys/file.h>   /* flock, where the build exposes it */
#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#include <errno.h>

/* Confinement: every path is resolved one component at a time with
   openat(dir_fd, component, O_NOFOLLOW | O_DIRECTORY) starting from a
   descriptor on the root, so nothing inside the store can redirect a path
   outside it: a symbolic link met on the way fails the open and is reported
   as TS_E_INVALID; leaves are opened with O_NOFOLLOW too, and a write whose
   leaf is a symbolic link is refused before anything is created. */

#define TS__PX_DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

enum { TS__PX_LOCK_NONE = 0, TS__PX_LOCK_OFD, TS__PX_LOCK_FLOCK, TS__PX_LOCK_FCNTL };

struct ts_io_posix {
    ts__env env;
    int root_fd;
    int lock_fd, lock_kind;
    unsigned long pid;
    uint64_t tmp_seq;
    ts_io_counters c;
};

TS__PRIVATE ts_result ts__px_errno(int e)
{
    switch (e) {
    case ENOENT: case ENOTDIR: return TS_E_NOTFOUND;
    case ENOSPC:
#ifdef EDQUOT
    case EDQUOT:
#endif
        return TS_E_NOSPACE;
    case EEXIST: return TS_E_EXISTS;
#if defined(ENOTEMPTY) && ENOTEMPTY != EEXIST
    case ENOTEMPTY: return TS_E_EXISTS;
#endif
    case ELOOP: case EISDIR: case EINVAL: case ENAMETOOLONG: return TS_E_INVALID;
    case ENOMEM: return TS_E_NOMEM;
    default: return TS_E_IO;
    }
}

TS__PRIVATE void ts__px_close_dir(ts_io_posix *p, int fd)
{
    if (fd >= 0 && fd != p->root_fd) close(fd);
}

/* fsync of a directory. EINVAL means the file system cannot sync
   directories (some network and FUSE ones): nothing more can be done. */
TS__PRIVATE int ts__px_fsync_dir(ts_io_posix *p, int fd)
{
    p->c.dir_syncs++;
    if (fsync(fd) == 0 || errno == EINVAL) return 0;
    return -1;
}

/* Reports a failed open of `name` in dir_fd; a symbolic link in the way
   (ELOOP, or EMLINK/ENOTDIR on systems that say it that way) is refused. */
TS__PRIVATE ts_result ts__px_open_fail(ts_io_posix *p, int dir_fd, const char *name, int e,
                                       const char *path, int creating)
{
    struct stat st;
    if ((e == ELOOP || e == EMLINK || e == ENOTDIR) &&
        fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        return TS__FAIL(&p->env, TS_E_INVALID, "%s: symbolic link inside the store", path);
    if (e == ENOTDIR && creating)
        return TS__FAIL(&p->env, TS_E_EXISTS, "%s: a file stands where a directory must be", path);
    return TS__FAIL(&p->env, ts__px_errno(e), "open %s: errno %d", path, e);
}

/* Opens the directory named by path's first n bytes (n = 0: the root, whose
   descriptor is returned as is; free with ts__px_close_dir). With create,
   missing components are made and each new one made durable by an fsync of
   its parent. */
TS__PRIVATE ts_result ts__px_open_dir(ts_io_posix *p, const char *path, size_t n, int create,
                                      int *out)
{
    char comp[TASKSTORE_MAX_PATH + 1];
    size_t i = 0;
    int cur = p->root_fd;
    *out = -1;
    while (i < n) {
        size_t j = i;
        int fd, e;
        while (j < n && path[j] != '/') j++;
        memcpy(comp, path + i, j - i);
        comp[j - i] = 0;
        fd = openat(cur, comp, TS__PX_DIR_FLAGS);
        if (fd < 0 && errno == ENOENT && create) {
            if (mkdirat(cur, comp, 0777) == 0) {
                p->c.mkdirs++;
                if (ts__px_fsync_dir(p, cur) != 0) {
                    e = errno;
                    ts__px_close_dir(p, cur);
                    return TS__FAIL(&p->env, ts__px_errno(e), "fsync parent of new %s: errno %d", path, e);
                }
            } else if (errno != EEXIST) {
                e = errno;
                ts__px_close_dir(p, cur);
                return TS__FAIL(&p->env, ts__px_errno(e), "mkdir %s: errno %d", path, e);
            }
            fd = openat(cur, comp, TS__PX_DIR_FLAGS);
        }
        if (fd < 0) {
            ts_result r = ts__px_open_fail(p, cur, comp, errno, path, create);
            ts__px_close_dir(p, cur);
            return r;
        }
        ts__px_close_dir(p, cur);
        cur = fd;
        i = j + 1;
    }
    *out = cur;
    return TS_OK;
}

TS__PRIVATE ts_result ts__px_bad_path(ts_io_posix *p, const char *path)
{
    return TS__FAIL(&p->env, TS_E_INVALID, "refused path \"%.200s\"", path ? path : "(null)");
}

TS__PRIVATE ts_result ts__px_read(ts_io_posix *p, const char *path, void *buf, size_t cap,
                                  size_t *size_out)
{
    size_t n, dlen, size, want, got = 0;
    const char *leaf;
    struct stat st;
    int dfd, fd, e;
    ts_result r;
    *size_out = 0;
    if (!ts__io_path_ok(path, 0) || (cap && !buf)) return ts__px_bad_path(p, path);
    n = strlen(path);
    leaf = ts__io_leaf(path, n, &dlen);
    if ((r = ts__px_open_dir(p, path, dlen, 0, &dfd)) != TS_OK) return r;
    /* O_NONBLOCK: a FIFO planted in the store must not hang the reader */
    fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        r = ts__px_open_fail(p, dfd, leaf, errno, path, 0);
        ts__px_close_dir(p, dfd);
        return r;
    }
    ts__px_close_dir(p, dfd);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return TS__FAIL(&p->env, TS_E_INVALID, "%s: not a regular file", path);
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > (uint64_t)(size_t)-1) {
        close(fd);
        return TS__FAIL(&p->env, TS_E_TOOBIG, "%s: too large", path);
    }
    size = (size_t)st.st_size;
    want = size < cap ? size : cap;
    while (got < want) {
        size_t chunk = want - got > ((size_t)1 << 30) ? ((size_t)1 << 30) : want - got;
        ssize_t k = read(fd, (char *)buf + got, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            e = errno;
            close(fd);
            return TS__FAIL(&p->env, ts__px_errno(e), "read %s: errno %d", path, e);
        }
        if (k == 0) { size = got; break; } /* shorter than fstat said */
        got += (size_t)k;
    }
    close(fd);
    p->c.reads++;
    p->c.bytes_read += got;
    *size_out = size;
    return size > cap ? TS_E_RANGE : TS_OK;
}

TS__PRIVATE ts_result ts__px_write(ts_io_posix *p, const char *path, const void *data, size_t len,
                                   unsigned flags)
{
    char tmp[TASKSTORE_MAX_PATH + 64];
    size_t n, dlen, off = 0;
    const char *leaf, *step = "write";
    struct stat st;
    int dfd, fd = -1, tries, e;
    ts_result r;
    if (!ts__io_path_ok(path, 0) || (len && !data)) return ts__px_bad_path(p, path);
    n = strlen(path);
    leaf = ts__io_leaf(path, n, &dlen);
    if ((r = ts__px_open_dir(p, path, dlen, 1, &dfd)) != TS_OK) return r;
    if (fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 && (S_ISLNK(st.st_mode) || S_ISDIR(st.st_mode))) {
        ts__px_close_dir(p, dfd);
        return TS__FAIL(&p->env, TS_E_INVALID, "%s: is a %s", path,
                        S_ISDIR(st.st_mode) ? "directory" : "symbolic link");
    }
    /* unique per process and vtable; O_EXCL settles a clash with another
       vtable of this process (or a stale temp file) by moving on */
    for (tries = 0;; tries++) {
        snprintf(tmp, sizeof tmp, "%s.tmp.%lu.%llu", leaf, p->pid, (unsigned long long)++p->tmp_seq);
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST || tries >= 64) break;
    }
    if (fd < 0) {
        e = errno;
        ts__px_close_dir(p, dfd);
        return TS__FAIL(&p->env, ts__px_errno(e), "create temp for %s: errno %d", path, e);
    }
    p->c.writes++;
    while (off < len) {
        size_t chunk = len - off > ((size_t)1 << 30) ? ((size_t)1 << 30) : len - off;
        ssize_t k = write(fd, (const char *)data + off, chunk);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) { e = k < 0 ? errno : EIO; goto fail; }
        off += (size_t)k; /* a short write just goes round again */
    }
    p->c.bytes_written += len;
    if (!(flags & TS_WRITE_NO_SYNC)) {
        /* a failed fsync is final for this descriptor (the kernel may have
           dropped the dirty pages): report it; a retry redoes the whole
           replace from the caller's bytes */
        step = "fsync";
        p->c.file_syncs++;
        if (fsync(fd) != 0) { e = errno; goto fail; }
    }
    step = "close";
    if (close(fd) != 0 && errno != EINTR) { fd = -1; e = errno; goto fail; }
    fd = -1;
    step = "rename";
    p->c.renames++;
    if (renameat(dfd, tmp, dfd, leaf) != 0) { e = errno; goto fail; }
    if (!(flags & (TS_WRITE_NO_SYNC | TS_WRITE_DEFER_DIRSYNC)) && ts__px_fsync_dir(p, dfd) != 0) {
        /* the new file is in place but its name may not survive a crash */
        e = errno;
        ts__px_close_dir(p, dfd);
        return TS__FAIL(&p->env, ts__px_errno(e), "fsync directory of %s: errno %d", path, e);
    }
    ts__px_close_dir(p, dfd);
    return TS_OK;
fail:
    if (fd >= 0) close(fd);
    unlinkat(dfd, tmp, 0);
    ts__px_close_dir(p, dfd);
    return TS__FAIL(&p->env, ts__px_errno(e), "%s %s: errno %d", step, path, e);
}

TS__PRIVATE ts_result ts__px_remove(ts_io_posix *p, const char *path)
{
    size_t n, dlen;
    const char *leaf;
    int dfd, e = 0;
    ts_result r;
    if (!ts__io_path_ok(path, 0)) return ts__px_bad_path(p, path);
    n = strlen(path);
    leaf = ts__io_leaf(path, n, &dlen);
    if ((r = ts__px_open_dir(p, path, dlen, 0, &dfd)) != TS_OK) return r;
    p->c.removes++;
    if (unlinkat(dfd, leaf, 0) != 0) {
        e = errno;
        /* a directory says EISDIR (Linux) or EPERM (POSIX); if rmdir then
           says ENOTDIR, the EPERM was a real one */
        if (e == EISDIR || e == EPERM) {
            if (unlinkat(dfd, leaf, AT_REMOVEDIR) == 0) e = 0;
            else if (errno != ENOTDIR) e = errno;
        }
    }
    ts__px_close_dir(p, dfd);
    if (e) return TS__FAIL(&p->env, ts__px_errno(e), "remove %s: errno %d", path, e);
    return TS_OK;
}

TS__PRIVATE ts_result ts__px_rename(ts_io_posix *p, const char *from, const char *to)
{
    size_t fdl, tdl;
    const char *fleaf, *tleaf;
    int ffd, tfd, e;
    ts_result r;
    if (!ts__io_path_ok(from, 0)) return ts__px_bad_path(p, from);
    if (!ts__io_path_ok(to, 0)) return ts__px_bad_path(p, to);
    fleaf = ts__io_leaf(from, strlen(from), &fdl);
    tleaf = ts__io_leaf(to, strlen(to), &tdl);
    if ((r = ts__px_open_dir(p, from, fdl, 0, &ffd)) != TS_OK) return r;
    if ((r = ts__px_open_dir(p, to, tdl, 0, &tfd)) != TS_OK) {
        ts__px_close_dir(p, ffd);
        return r;
    }
    p->c.renames++;
    e = renameat(ffd, fleaf, tfd, tleaf) == 0 ? 0 : errno;
    ts__px_close_dir(p, ffd);
    ts__px_close_dir(p, tfd);
    if (e) return TS__FAIL(&p->env, ts__px_errno(e), "rename %s -> %s: errno %d", from, to, e);
    return TS_OK;
}

TS__PRIVATE ts_result ts__px_mkdir_p(ts_io_posix *p, const char *path)
{
    int fd;
    ts_result r;
    if (!ts__io_path_ok(path, 0)) return ts__px_bad_path(p, path);
    if ((r = ts__px_open_dir(p, path, strlen(path), 1, &fd)) != TS_OK) return r;
    ts__px_close_dir(p, fd);
    return TS_OK;
}

TS__PRIVATE ts_result ts__px_list(ts_io_posix *p, const char *path, ts_io_list_cb cb, void *ctx)
{
    DIR *d;
    struct dirent *de;
    int dfd, fd, e;
    ts_result r;
    if (!ts__io_path_ok(path, 1) || !cb) return ts__px_bad_path(p, path);
    if ((r = ts__px_open_dir(p, path, strlen(path), 0, &dfd)) != TS_OK) return r;
    /* a fresh open file description: readdir must not share (and move) the
       root descriptor's position */
    fd = openat(dfd, ".", TS__PX_DIR_FLAGS);
    e = errno;
    ts__px_close_dir(p, dfd);
    if (fd < 0) return TS__FAIL(&p->env, ts__px_errno(e), "open %s: errno %d", path, e);
    d = fdopendir(fd);
    if (!d) {
        e = errno;
        close(fd);
        return TS__FAIL(&p->env, ts__px_errno(e), "opendir %s: errno %d", path, e);
    }
    p->c.lists++;
    for (;;) {
        struct stat st;
        errno = 0;
        de = readdir(d);
        if (!de) {
            e = errno;
            break;
        }
        if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
            continue;
        /* POSIX leaves d_type out; lstat says it (a name gone meanwhile is
           skipped, as readdir itself might have) */
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (cb(ctx, de->d_name, S_ISDIR(st.st_mode) ? 1 : 0)) { e = 0; break; }
    }
    closedir(d);
    if (e) return TS__FAIL(&p->env, ts__px_errno(e), "readdir %s: errno %d", path, e);
    return TS_OK;
}

TS__PRIVATE ts_result ts__px_stat(ts_io_posix *p, const char *path, ts_io_stat *out)
{
    size_t dlen;
    const char *leaf;
    struct stat st;
    int dfd, e;
    ts_result r;
    memset(out, 0, sizeof *out);
    if (!ts__io_path_ok(path, 0)) return ts__px_bad_path(p, path);
    leaf = ts__io_leaf(path, strlen(path), &dlen);
    if ((r = ts__px_open_dir(p, path, dlen, 0, &dfd)) != TS_OK) return r;
    e = fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
    ts__px_close_dir(p, dfd);
    if (e) return TS__FAIL(&p->env, ts__px_errno(e), "stat %s: errno %d", path, e);
    if (S_ISLNK(st.st_mode))
        return TS__FAIL(&p->env, TS_E_INVALID, "%s: symbolic link inside the store", path);
    p->c.stats++;
    out->is_dir = S_ISDIR(st.st_mode) ? 1 : 0;
    out->size = out->is_dir || st.st_size < 0 ? 0 : (uint64_t)st.st_size;
#ifdef __linux__
    out->mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + (int64_t)(st.st_mtim.tv_nsec / 1000000);
#else
    out->mtime_ms = (int64_t)st.st_mtime * 1000;
#endif
    return TS_OK;
}

TS__PRIVATE ts_result ts__px_sync_dir(ts_io_posix *p, const char *path)
{
    int fd, e;
    ts_result r;
    if (!ts__io_path_ok(path, 1)) return ts__px_bad_path(p, path);
    if ((r = ts__px_open_dir(p, path, strlen(path), 0, &fd)) != TS_OK) return r;
    e = ts__px_fsync_dir(p, fd) == 0 ? 0 : errno;
    ts__px_close_dir(p, fd);
    if (e) return TS__FAIL(&p->env, ts__px_errno(e), "fsync %s: errno %d", path, e);
    return TS_OK;
}

/* 0 locked, 1 held by someone else, -1 error (errno). Prefers locks owned
   by the open file description, which also conflict between two opens in
   one process (fcntl F_SETLK locks belong to the process and would let a
   second store in the same process in). */
TS__PRIVATE int ts__px_try_lock(ts_io_posix *p, int fd)
{
    struct flock fl;
#ifdef F_OFD_SETLK
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0) { p->lock_kind = TS__PX_LOCK_OFD; return 0; }
    if (errno == EACCES || errno == EAGAIN) return 1;
    /* EINVAL: a kernel without OFD locks; fall through */
#elif defined(LOCK_EX) && defined(LOCK_NB)
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) { p->lock_kind = TS__PX_LOCK_FLOCK; return 0; }
    if (errno == EWOULDBLOCK || errno == EAGAIN) return 1;
    /* a file system without flock; fall through */
#endif
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &fl) == 0) { p->lock_kind = TS__PX_LOCK_FCNTL; return 0; }
    if (errno == EACCES || errno == EAGAIN) return 1;
    return -1;
}

TS__PRIVATE ts_result ts__px_lock(ts_io_posix *p, int lock)
{
    int fd, k, e;
    if (!lock) {
        if (p->lock_fd >= 0) {
            if (p->lock_kind == TS__PX_LOCK_FCNTL) {
                struct flock fl;
                memset(&fl, 0, sizeof fl);
                fl.l_type = F_UNLCK;
                fl.l_whence = SEEK_SET;
                fcntl(p->lock_fd, F_SETLK, &fl);
            }
            close(p->lock_fd); /* releases OFD and flock locks */
            p->lock_fd = -1;
            p->lock_kind = TS__PX_LOCK_NONE;
        }
        return TS_OK;
    }
    if (p->lock_fd >= 0) return TS__FAIL(&p->env, TS_E_LOCKED, "lock taken twice");
    fd = openat(p->root_fd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) return ts__px_open_fail(p, p->root_fd, ".lock", errno, ".lock", 0);
    k = ts__px_try_lock(p, fd);
    e = errno;
    if (k != 0) {
        close(fd);
        if (k > 0) return TS__FAIL(&p->env, TS_E_LOCKED, "store is locked by another owner");
        return TS__FAIL(&p->env, ts__px_errno(e), "lock .lock: errno %d", e);
    }
    p->lock_fd = fd;
    return TS_OK;
}

/* fsyncs the directory path[0, end) ("." when end is none, "/" when 0). */
TS__PRIVATE int ts__px_fsync_prefix(char *path, size_t end)
{
    int fd, ok;
    if (end == (size_t)-1) {
        fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } else if (end == 0) {
        fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } else {
        char save = path[end];
        path[end] = 0;
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        path[end] = save;
    }
    if (fd < 0) return -1;
    ok = fsync(fd) == 0 || errno == EINVAL;
    close(fd);
    return ok ? 0 : -1;
}

/* mkdir -p of the root itself (an ordinary OS path the user chose, so
   symbolic links in it are the user's business), each new directory made
   durable in its parent. */
TS__PRIVATE int ts__px_make_root(char *path)
{
    size_t i, n = strlen(path), sep = path[0] == '/' ? 0 : (size_t)-1;
    for (i = 1; i <= n; i++) {
        int made, e;
        if (i < n && path[i] != '/') continue;
        path[i] = 0;
        made = mkdir(path, 0777) == 0;
        e = errno;
        if (i < n) path[i] = '/';
        if (!made && e != EEXIST) { errno = e; return -1; }
        if (made && ts__px_fsync_prefix(path, sep) != 0) return -1;
        sep = i;
    }
    return 0;
}

TASKSTORE_DEF ts_result ts_io_posix_create(const char *root, const ts_allocator *alloc,
                                           ts_io_posix **out)
{
    ts_io_posix *p;
    size_t n;
    int e;
    if (!out) return TS_E_INVALID;
    *out = NULL;
    if (!root || !root[0]) return TS_E_INVALID;
    p = (ts_io_posix *)ts__calloc(alloc, 1, sizeof *p);
    if (!p) return TS_E_NOMEM;
    ts__env_init(&p->env, alloc, NULL);
    p->lock_fd = -1;
    p->pid = (unsigned long)getpid();
    p->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (p->root_fd < 0 && errno == ENOENT) {
        char *copy;
        n = strlen(root);
        copy = ts__strndup(alloc, root, n);
        if (!copy) {
            ts__free(alloc, p, sizeof *p);
            return TS_E_NOMEM;
        }
        e = ts__px_make_root(copy) == 0 ? 0 : errno;
        ts__free(alloc, copy, n + 1);
        if (!e) p->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        else errno = e;
    }
    if (p->root_fd < 0) {
        e = errno;
        ts__free(alloc, p, sizeof *p);
        return ts__px_errno(e);
    }
    *out = p;
    return TS_OK;
}

TASKSTORE_DEF void ts_io_posix_destroy(ts_io_posix *p)
{
    ts_allocator a;
    if (!p) return;
    ts__px_lock(p, 0);
    close(p->root_fd);
    a = p->env.alloc;
    ts__free(&a, p, sizeof *p);
}

#define TS__PX_CAPS 0u

#else /* _WIN32 */

/* The Win32 branch (not built or tested on the Linux CI). Paths become
   "\\?\<full root>\a\b" in UTF-16, which lifts MAX_PATH and turns off
   Win32 name rewriting. Confinement: device names (CON, NUL, COM1, ...),
   names ending in '.' or ' ' and the characters <>"|?* are refused, and
   every existing component is checked for a reparse point (symbolic link,
   junction) before use, which is TS_E_INVALID (a check, then the use: a
   link planted between the two by another process is not caught). NTFS
   journals its metadata and MoveFileExW(MOVEFILE_WRITE_THROUGH) returns
   when the rename is on disk, so directory syncs are counted no-ops
   (TS_IO_CAP_NO_DIRSYNC). */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

struct ts_io_posix {
    ts__env env;
    wchar_t *root;      /* "\\?\C:\dir\store", no trailing separator */
    size_t root_len, root_bytes;
    HANDLE lock;
    unsigned long pid;
    uint64_t tmp_seq;
    ts_io_counters c;
};

TS__PRIVATE ts_result ts__w32_err(DWORD e)
{
    switch (e) {
    case ERROR_FILE_NOT_FOUND: case ERROR_PATH_NOT_FOUND: case ERROR_DIRECTORY:
        return TS_E_NOTFOUND;
    case ERROR_DISK_FULL: case ERROR_HANDLE_DISK_FULL: return TS_E_NOSPACE;
    case ERROR_ALREADY_EXISTS: case ERROR_FILE_EXISTS: case ERROR_DIR_NOT_EMPTY: return TS_E_EXISTS;
    case ERROR_NOT_ENOUGH_MEMORY: case ERROR_OUTOFMEMORY: return TS_E_NOMEM;
    case ERROR_INVALID_NAME: case ERROR_FILENAME_EXCED_RANGE: case ERROR_CANT_RESOLVE_FILENAME:
        return TS_E_INVALID;
    default: return TS_E_IO;
    }
}

#define TS__W32_FAIL(p, what, path) \
    ts__w32_fail((p), GetLastError(), (what), (path), __LINE__)
TS__PRIVATE ts_result ts__w32_fail(ts_io_posix *p, DWORD e, const char *what, const char *path, int line)
{
    return ts__fail(&p->env, ts__w32_err(e), line, "%s %s: error %lu", what, path, (unsigned long)e);
}

TS__PRIVATE int ts__w32_ieq(const char *s, const char *lit, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        if (c != lit[i]) return 0;
    }
    return 1;
}

/* One path component that Win32 would not store as spelled. */
TS__PRIVATE int ts__w32_name_ok(const char *s, size_t n)
{
    size_t i, base = 0;
    if (s[n - 1] == '.' || s[n - 1] == ' ') return 0;
    for (i = 0; i < n; i++)
        if (s[i] == '<' || s[i] == '>' || s[i] == '"' || s[i] == '|' || s[i] == '?' || s[i] == '*')
            return 0;
    while (base < n && s[base] != '.') base++;
    if (base == 3 && (ts__w32_ieq(s, "CON", 3) || ts__w32_ieq(s, "PRN", 3) ||
                      ts__w32_ieq(s, "AUX", 3) || ts__w32_ieq(s, "NUL", 3)))
        return 0;
    if (base == 4 && (ts__w32_ieq(s, "COM", 3) || ts__w32_ieq(s, "LPT", 3)) && s[3] >= '0' && s[3] <= '9')
        return 0;
    if ((base == 6 && ts__w32_ieq(s, "CONIN$", 6)) || (base == 7 && ts__w32_ieq(s, "CONOUT$", 7)))
        return 0;
    return 1;
}

/* The checked wide path root\rel(+suffix) in a fresh allocation (free
   *bytes). allow_root: rel may be "". */
TS__PRIVATE ts_result ts__w32_path(ts_io_posix *p, const char *rel, const char *suffix, int allow_root,
                                   wchar_t **out, size_t *bytes)
{
    size_t n, sn = suffix ? strlen(suffix) : 0, cap, i, j, start = 0;
    wchar_t *w;
    *out = NULL;
    *bytes = 0;
    if (!ts__io_path_ok(rel, allow_root))
        return TS__FAIL(&p->env, TS_E_INVALID, "refused path \"%.200s\"", rel ? rel : "(null)");
    n = strlen(rel);
    for (i = 0; i <= n; i++) {
        if (i < n && rel[i] != '/') continue;
        if (i > start && !ts__w32_name_ok(rel + start, i - start))
            return TS__FAIL(&p->env, TS_E_INVALID, "%s: name not allowed on Windows", rel);
        start = i + 1;
    }
    cap = p->root_len + 1 + n + sn + 1; /* UTF-16 never needs more units than UTF-8 bytes */
    w = (wchar_t *)ts__alloc(&p->env.alloc, cap * sizeof(wchar_t));
    if (!w) return TS_E_NOMEM;
    memcpy(w, p->root, p->root_len * sizeof(wchar_t));
    i = p->root_len;
    if (n) {
        int k;
        w[i++] = L'\\';
        k = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, rel, (int)n, w + i, (int)(cap - i));
        if (k <= 0) {
            ts__free(&p->env.alloc, w, cap * sizeof(wchar_t));
            return TS__FAIL(&p->env, TS_E_INVALID, "%s: not UTF-8", rel);
        }
        for (j = i; j < i + (size_t)k; j++)
            if (w[j] == L'/') w[j] = L'\\';
        i += (size_t)k;
    }
    for (j = 0; j < sn; j++) w[i++] = (wchar_t)(unsigned char)suffix[j];
    w[i] = 0;
    *out = w;
    *bytes = cap * sizeof(wchar_t);
    return TS_OK;
}

/* Refuses a reparse point among the existing components of w below the
   root; *leaf_attrs gets the attributes of the whole path
   (INVALID_FILE_ATTRIBUTES when it does not exist). */
TS__PRIVATE ts_result ts__w32_confined(ts_io_posix *p, wchar_t *w, const char *path, DWORD *leaf_attrs)
{
    size_t i = p->root_len + 1;
    DWORD a = GetFileAttributesW(p->root);
    *leaf_attrs = INVALID_FILE_ATTRIBUTES;
    if (!w[p->root_len]) { *leaf_attrs = a; return TS_OK; }
    for (;;) {
        wchar_t save;
        while (w[i] && w[i] != L'\\') i++;
        save = w[i];
        w[i] = 0;
        a = GetFileAttributesW(w);
        w[i] = save;
        if (a == INVALID_FILE_ATTRIBUTES) return TS_OK;
        if (a & FILE_ATTRIBUTE_REPARSE_POINT)
            return TS__FAIL(&p->env, TS_E_INVALID, "%s: link or junction inside the store", path);
        if (!save) { *leaf_attrs = a; return TS_OK; }
        i++;
    }
}

/* Creates the missing directories of w up to (not including) unit `end`. */
TS__PRIVATE ts_result ts__w32_mkdirs(ts_io_posix *p, wchar_t *w, size_t end, const char *path)
{
    size_t i = p->root_len + 1;
    while (i <= end && end > p->root_len) {
        wchar_t save;
        BOOL ok;
        DWORD e = 0;
        while (i < end && w[i] != L'\\') i++;
        save = w[i];
        w[i] = 0;
        ok = CreateDirectoryW(w, NULL);
        if (!ok) {
            DWORD a;
            e = GetLastError();
            a = GetFileAttributesW(w);
            if (e == ERROR_ALREADY_EXISTS && a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_DIRECTORY))
                e = 0;
            else if (e == ERROR_ALREADY_EXISTS)
                e = ERROR_FILE_EXISTS;
        } else {
            p->c.mkdirs++;
            p->c.dir_syncs++;
        }
        w[i] = save;
        if (e) return ts__w32_fail(p, e, "mkdir", path, __LINE__);
        i++;
    }
    return TS_OK;
}

TS__PRIVATE size_t ts__w32_last_sep(const wchar_t *w)
{
    size_t i = 0, last = 0;
    for (; w[i]; i++)
        if (w[i] == L'\\') last = i;
    return last;
}

TS__PRIVATE ts_result ts__px_read(ts_io_posix *p, const char *path, void *buf, size_t cap,
                                  size_t *size_out)
{
    wchar_t *w;
    size_t wb, size, want, got = 0;
    DWORD attrs;
    HANDLE h;
    LARGE_INTEGER li;
    ts_result r;
    *size_out = 0;
    if (cap && !buf) return TS_E_INVALID;
    if ((r = ts__w32_path(p, path, NULL, 0, &w, &wb)) != TS_OK) return r;
    if ((r = ts__w32_confined(p, w, path, &attrs)) != TS_OK) goto done;
    if (attrs != INVALID_FILE_ATTRIBUTES && (attrs & FILE_ATTRIBUTE_DIRECTORY)) {
        r = TS__FAIL(&p->env, TS_E_INVALID, "%s: not a regular file", path);
        goto done;
    }
    h = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                    OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) { r = TS__W32_FAIL(p, "open", path); goto done; }
    if (!GetFileSizeEx(h, &li) || li.QuadPart < 0 || (uint64_t)li.QuadPart > (uint64_t)(size_t)-1) {
        CloseHandle(h);
        r = TS__FAIL(&p->env, TS_E_TOOBIG, "%s: size", path);
        goto done;
    }
    size = (size_t)li.QuadPart;
    want = size < cap ? size : cap;
    while (got < want) {
        DWORD k = 0, chunk = (DWORD)(want - got > (1u << 30) ? (1u << 30) : want - got);
        if (!ReadFile(h, (char *)buf + got, chunk, &k, NULL)) {
            r = TS__W32_FAIL(p, "read", path);
            CloseHandle(h);
            goto done;
        }
        if (k == 0) { size = got; break; }
        got += k;
    }
    CloseHandle(h);
    p->c.reads++;
    p->c.bytes_read += got;
    *size_out = size;
    r = size > cap ? TS_E_RANGE : TS_OK;
done:
    ts__free(&p->env.alloc, w, wb);
    return r;
}

TS__PRIVATE ts_result ts__px_write(ts_io_posix *p, const char *path, const void *data, size_t len,
                                   unsigned flags)
{
    wchar_t *w, *t = NULL;
    size_t wb, tb = 0, off = 0;
    DWORD attrs, e = 0;
    HANDLE h = INVALID_HANDLE_VALUE;
    const char *step = "write";
    char suffix[64];
    int tries;
    ts_result r;
    if (len && !data) return TS_E_INVALID;
    if ((r = ts__w32_path(p, path, NULL, 0, &w, &wb)) != TS_OK) return r;
    if ((r = ts__w32_confined(p, w, path, &attrs)) != TS_OK) goto done;
    if (attrs != INVALID_FILE_ATTRIBUTES && (attrs & FILE_ATTRIBUTE_DIRECTORY)) {
        r = TS__FAIL(&p->env, TS_E_INVALID, "%s: is a directory", path);
        goto done;
    }
    if ((r = ts__w32_mkdirs(p, w, ts__w32_last_sep(w), path)) != TS_OK) goto done;
    for (tries = 0;; tries++) {
        snprintf(suffix, sizeof suffix, ".tmp.%lu.%llu", p->pid, (unsigned long long)++p->tmp_seq);
        if ((r = ts__w32_path(p, path, suffix, 0, &t, &tb)) != TS_OK) goto done;
        h = CreateFileW(t, GENERIC_WRITE, 0, NULL, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL);
        if (h != INVALID_HANDLE_VALUE) break;
        e = GetLastError();
        ts__free(&p->env.alloc, t, tb);
        t = NULL;
        if ((e != ERROR_FILE_EXISTS && e != ERROR_ALREADY_EXISTS) || tries >= 64) {
            r = ts__w32_fail(p, e, "create temp for", path, __LINE__);
            goto done;
        }
    }
    p->c.writes++;
    while (off < len) {
        DWORD k = 0, chunk = (DWORD)(len - off > (1u << 30) ? (1u << 30) : len - off);
        if (!WriteFile(h, (const char *)data + off, chunk, &k, NULL)) { e = GetLastError(); goto fail; }
        if (k == 0) { e = ERROR_WRITE_FAULT; goto fail; }
        off += k;
    }
    p->c.bytes_written += len;
    if (!(flags & TS_WRITE_NO_SYNC)) {
        step = "flush";
        p->c.file_syncs++;
        if (!FlushFileBuffers(h)) { e = GetLastError(); goto fail; }
    }
    CloseHandle(h);
    h = INVALID_HANDLE_VALUE;
    step = "rename";
    p->c.renames++;
    if (!MoveFileExW(t, w, MOVEFILE_REPLACE_EXISTING |
                     ((flags & TS_WRITE_NO_SYNC) ? 0 : MOVEFILE_WRITE_THROUGH))) {
        e = GetLastError();
        goto fail;
    }
    if (!(flags & (TS_WRITE_NO_SYNC | TS_WRITE_DEFER_DIRSYNC))) p->c.dir_syncs++;
    r = TS_OK;
    goto done;
fail:
    if (h != INVALID_HANDLE_VALUE) CloseHandle(h);
    DeleteFileW(t);
    r = ts__w32_fail(p, e, step, path, __LINE__);
done:
    if (t) ts__free(&p->env.alloc, t, tb);
    ts__free(&p->env.alloc, w, wb);
    return r;
}

TS__PRIVATE ts_result ts__px_remove(ts_io_posix *p, const char *path)
{
    wchar_t *w;
    size_t wb;
    DWORD attrs;
    ts_result r;
    if ((r = ts__w32_path(p, path, NULL, 0, &w, &wb)) != TS_OK) return r;
    if ((r = ts__w32_confined(p, w, path, &attrs)) == TS_OK) {
        p->c.removes++;
        if (attrs == INVALID_FILE_ATTRIBUTES)
            r = TS__FAIL(&p->env, TS_E_NOTFOUND, "remove %s: not found", path);
        else if (!((attrs & FILE_ATTRIBUTE_DIRECTORY) ? RemoveDirectoryW(w) : DeleteFileW(w)))
            r = TS__W32_FAIL(p, "remove", path);
    }
    ts__free(&p->env.alloc, w, wb);
    return r;
}

TS__PRIVATE ts_result ts__px_rename(ts_io_posix *p, const char *from, const char *to)
{
    wchar_t *wf, *wt = NULL;
    size_t fb, tb = 0;
    DWORD fa, ta;
    ts_result r;
    if ((r = ts__w32_path(p, from, NULL, 0, &wf, &fb)) != TS_OK) return r;
    if ((r = ts__w32_path(p, to, NULL, 0, &wt, &tb)) == TS_OK &&
        (r = ts__w32_confined(p, wf, from, &fa)) == TS_OK &&
        (r = ts__w32_confined(p, wt, to, &ta)) == TS_OK) {
        p->c.renames++;
        if (!MoveFileExW(wf, wt, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH))
            r = TS__W32_FAIL(p, "rename", from);
    }
    if (wt) ts__free(&p->env.alloc, wt, tb);
    ts__free(&p->env.alloc, wf, fb);
    return r;
}

TS__PRIVATE ts_result ts__px_mkdir_p(ts_io_posix *p, const char *path)
{
    wchar_t *w;
    size_t wb;
    DWORD attrs;
    ts_result r;
    if ((r = ts__w32_path(p, path, NULL, 0, &w, &wb)) != TS_OK) return r;
    if ((r = ts__w32_confined(p, w, path, &attrs)) == TS_OK)
        r = ts__w32_mkdirs(p, w, wcslen(w), path);
    ts__free(&p->env.alloc, w, wb);
    return r;
}

TS__PRIVATE ts_result ts__px_list(ts_io_posix *p, const char *path, ts_io_list_cb cb, void *ctx)
{
    wchar_t *w;
    size_t wb;
    DWORD attrs;
    HANDLE h;
    WIN32_FIND_DATAW fd;
    char name[MAX_PATH * 4];
    ts_result r;
    if (!cb) return TS_E_INVALID;
    if ((r = ts__w32_path(p, path, "\\*", 1, &w, &wb)) != TS_OK) return r;
    w[wcslen(w) - 2] = 0; /* check the directory itself, then list it */
    r = ts__w32_confined(p, w, path, &attrs);
    w[wcslen(w)] = L'\\';
    if (r == TS_OK && (attrs == INVALID_FILE_ATTRIBUTES || !(attrs & FILE_ATTRIBUTE_DIRECTORY)))
        r = TS__FAIL(&p->env, TS_E_NOTFOUND, "list %s: not a directory", path);
    if (r != TS_OK) goto done;
    p->c.lists++;
    h = FindFirstFileW(w, &fd);
    if (h == INVALID_HANDLE_VALUE) {
        if (GetLastError() != ERROR_FILE_NOT_FOUND) r = TS__W32_FAIL(p, "list", path);
        goto done;
    }
    do {
        int is_dir;
        if (!WideCharToMultiByte(CP_UTF8, 0, fd.cFileName, -1, name, (int)sizeof name, NULL, NULL)) continue;
        if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]))) continue;
        is_dir = (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) &&
                 !(fd.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT);
        if (cb(ctx, name, is_dir)) break;
    } while (FindNextFileW(h, &fd));
    FindClose(h);
done:
    ts__free(&p->env.alloc, w, wb);
    return r;
}

TS__PRIVATE ts_result ts__px_stat(ts_io_posix *p, const char *path, ts_io_stat *out)
{
    wchar_t *w;
    size_t wb;
    DWORD attrs;
    WIN32_FILE_ATTRIBUTE_DATA fa;
    ts_result r;
    memset(out, 0, sizeof *out);
    if ((r = ts__w32_path(p, path, NULL, 0, &w, &wb)) != TS_OK) return r;
    if ((r = ts__w32_confined(p, w, path, &attrs)) == TS_OK) {
        if (!GetFileAttributesExW(w, GetFileExInfoStandard, &fa)) {
            r = TS__W32_FAIL(p, "stat", path);
        } else {
            uint64_t t = ((uint64_t)fa.ftLastWriteTime.dwHighDateTime << 32) |
                         fa.ftLastWriteTime.dwLowDateTime;
            p->c.stats++;
            out->is_dir = (fa.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) ? 1 : 0;
            out->size = out->is_dir ? 0 : ((uint64_t)fa.nFileSizeHigh << 32) | fa.nFileSizeLow;
            /* 100 ns ticks since 1601 -> ms since 1970 */
            out->mtime_ms = (int64_t)(t / 10000) - (int64_t)11644473600000;
        }
    }
    ts__free(&p->env.alloc, w, wb);
    return r;
}

TS__PRIVATE ts_result ts__px_sync_dir(ts_io_posix *p, const char *path)
{
    wchar_t *w;
    size_t wb;
    DWORD attrs;
    ts_result r;
    if ((r = ts__w32_path(p, path, NULL, 1, &w, &wb)) != TS_OK) return r;
    if ((r = ts__w32_confined(p, w, path, &attrs)) == TS_OK) {
        if (attrs == INVALID_FILE_ATTRIBUTES || !(attrs & FILE_ATTRIBUTE_DIRECTORY))
            r = TS__FAIL(&p->env, TS_E_NOTFOUND, "sync %s: not a directory", path);
        else
            p->c.dir_syncs++; /* see TS_IO_CAP_NO_DIRSYNC */
    }
    ts__free(&p->env.alloc, w, wb);
    return r;
}

TS__PRIVATE ts_result ts__px_lock(ts_io_posix *p, int lock)
{
    wchar_t *w;
    size_t wb;
    HANDLE h;
    DWORD e;
    ts_result r;
    if (!lock) {
        if (p->lock != INVALID_HANDLE_VALUE) CloseHandle(p->lock);
        p->lock = INVALID_HANDLE_VALUE;
        return TS_OK;
    }
    if (p->lock != INVALID_HANDLE_VALUE) return TS__FAIL(&p->env, TS_E_LOCKED, "lock taken twice");
    if ((r = ts__w32_path(p, ".lock", NULL, 0, &w, &wb)) != TS_OK) return r;
    /* share mode 0: any second open, in this process or another, fails */
    h = CreateFileW(w, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    e = GetLastError();
    ts__free(&p->env.alloc, w, wb);
    if (h == INVALID_HANDLE_VALUE) {
        if (e == ERROR_SHARING_VIOLATION || e == ERROR_LOCK_VIOLATION)
            return TS__FAIL(&p->env, TS_E_LOCKED, "store is locked by another owner");
        return ts__w32_fail(p, e, "lock", ".lock", __LINE__);
    }
    p->lock = h;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_io_posix_create(const char *root, const ts_allocator *alloc,
                                           ts_io_posix **out)
{
    ts_io_posix *p;
    wchar_t *wroot = NULL, *full = NULL;
    size_t wroot_b = 0, full_b = 0, i, start, pre;
    int k;
    DWORD n, a;
    ts_result r = TS_OK;
    if (!out) return TS_E_INVALID;
    *out = NULL;
    if (!root || !root[0]) return TS_E_INVALID;
    p = (ts_io_posix *)ts__calloc(alloc, 1, sizeof *p);
    if (!p) return TS_E_NOMEM;
    ts__env_init(&p->env, alloc, NULL);
    p->lock = INVALID_HANDLE_VALUE;
    p->pid = (unsigned long)GetCurrentProcessId();
    k = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, root, -1, NULL, 0);
    if (k <= 0) { r = TS_E_INVALID; goto fail; }
    wroot_b = (size_t)k * sizeof(wchar_t);
    if (!(wroot = (wchar_t *)ts__alloc(alloc, wroot_b))) { r = TS_E_NOMEM; goto fail; }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, root, -1, wroot, k);
    n = GetFullPathNameW(wroot, 0, NULL, NULL);
    if (!n) { r = TS_E_INVALID; goto fail; }
    full_b = ((size_t)n + 8) * sizeof(wchar_t);
    if (!(full = (wchar_t *)ts__alloc(alloc, full_b))) { r = TS_E_NOMEM; goto fail; }
    /* room for the "\\?\UNC\" prefix in front of the full path */
    if (!GetFullPathNameW(wroot, n, full + 8, NULL)) { r = TS_E_INVALID; goto fail; }
    i = 8;
    if (full[i] == L'\\' && full[i + 1] == L'\\' && full[i + 2] == L'?' && full[i + 3] == L'\\') {
        pre = i;                                         /* already \\?\ */
    } else if (full[i] == L'\\' && full[i + 1] == L'\\') {
        i += 1;                                          /* \\srv\share -> \\?\UNC\srv\share */
        pre = i - 7;
        memcpy(full + pre, L"\\\\?\\UNC", 7 * sizeof(wchar_t));
    } else {
        pre = i - 4;
        memcpy(full + pre, L"\\\\?\\", 4 * sizeof(wchar_t));
    }
    p->root_len = wcslen(full + pre);
    while (p->root_len && full[pre + p->root_len - 1] == L'\\') p->root_len--;
    memmove(full, full + pre, p->root_len * sizeof(wchar_t));
    full[p->root_len] = 0;
    p->root = full;
    p->root_bytes = full_b;
    full = NULL;
    /* mkdir -p below the volume: skip "\\?\C:\" or "\\?\UNC\srv\share\" */
    start = 4;
    if (p->root_len >= 8 && p->root[4] == L'U' && p->root[5] == L'N' && p->root[6] == L'C' &&
        p->root[7] == L'\\') {
        int seps = 0;
        for (start = 8; start < p->root_len && seps < 2; start++)
            if (p->root[start] == L'\\') seps++;
    } else {
        while (start < p->root_len && p->root[start] != L'\\') start++;
        start++;
    }
    for (i = start; i <= p->root_len; i++) {
        wchar_t save;
        if (i < p->root_len && p->root[i] != L'\\') continue;
        save = p->root[i];
        p->root[i] = 0;
        CreateDirectoryW(p->root, NULL); /* failures show in the check below */
        p->root[i] = save;
    }
    a = GetFileAttributesW(p->root);
    if (a == INVALID_FILE_ATTRIBUTES || !(a & FILE_ATTRIBUTE_DIRECTORY)) { r = TS_E_NOTFOUND; goto fail; }
    ts__free(alloc, wroot, wroot_b);
    *out = p;
    return TS_OK;
fail:
    ts__free(alloc, full, full_b);
    ts__free(alloc, wroot, wroot_b);
    ts__free(alloc, p->root, p->root_bytes);
    ts__free(alloc, p, sizeof *p);
    return r;
}

TASKSTORE_DEF void ts_io_posix_destroy(ts_io_posix *p)
{
    ts_allocator a;
    if (!p) return;
    ts__px_lock(p, 0);
    a = p->env.alloc;
    ts__free(&a, p->root, p->root_bytes);
    ts__free(&a, p, sizeof *p);
}

#define TS__PX_CAPS ((unsigned)TS_IO_CAP_NO_DIRSYNC)
#endif /* _WIN32 */

/* ---- the vtable, the same for both branches ---- */

static ts_result ts__px_cb_read(void *u, const char *p, void *b, size_t cap, size_t *sz)
{ ts_io_posix *x = (ts_io_posix *)u; return ts__io_tally(&x->c, ts__px_read(x, p, b, cap, sz)); }
static ts_result ts__px_cb_write(void *u, const char *p, const void *d, size_t n, unsigned fl)
{ ts_io_posix *x = (ts_io_posix *)u; return ts__io_tally(&x->c, ts__px_write(x, p, d, n, fl)); }
static ts_result ts__px_cb_remove(void *u, const char *p)
{ ts_io_posix *x = (ts_io_posix *)u; return ts__io_tally(&x->c, ts__px_remove(x, p)); }
static ts_result ts__px_cb_rename(void *u, const char *from, const char *to)
{ ts_io_posix *x = (ts_io_posix *)u; return ts__io_tally(&x->c, ts__px_rename(x, from, to)); }
static ts_result ts__px_cb_mkdir_p(void *u, const char *p)
{ ts_io_posix *x = (ts_io_posix *)u; return ts__io_tally(&x->c, ts__px_mkdir_p(x, p)); }
static ts_result ts__px_cb_list(void *u, const char *p, ts_io_list_cb cb, void *ctx)
{ ts_io_posix *x = (ts_io_posix *)u; return ts__io_tally(&x->c, ts__px_list(x, p, cb, ctx)); }
static ts_result ts__px_cb_stat(void *u, const char *p, ts_io_stat *out)
{ ts_io_posix *x = (ts_io_posix *)u; return ts__io_tally(&x->c, ts__px_stat(x, p, out)); }
static ts_result ts__px_cb_sync_dir(void *u, const char *p)
{ ts_io_posix *x = (ts_io_posix *)u; return ts__io_tally(&x->c, ts__px_sync_dir(x, p)); }
static ts_result ts__px_cb_lock(void *u, int lock)
{ ts_io_posix *x = (ts_io_posix *)u; return ts__io_tally(&x->c, ts__px_lock(x, lock)); }
static ts_result ts__px_cb_stats(void *u, ts_io_counters *out)
{ *out = ((ts_io_posix *)u)->c; return TS_OK; }

TASKSTORE_DEF void ts_io_posix_vtable(ts_io_posix *p, ts_io *io)
{
    if (!io) return;
    memset(io, 0, sizeof *io);
    if (!p) return;
    io->version = TS_IO_VERSION;
    io->caps = TS__PX_CAPS;
    io->user = p;
    io->read_file_fn = ts__px_cb_read;
    io->write_file_atomic_fn = ts__px_cb_write;
    io->remove_fn = ts__px_cb_remove;
    io->rename_fn = ts__px_cb_rename;
    io->mkdir_p_fn = ts__px_cb_mkdir_p;
    io->list_dir_fn = ts__px_cb_list;
    io->stat_fn = ts__px_cb_stat;
    io->sync_dir_fn = ts__px_cb_sync_dir;
    io->lock_fn = ts__px_cb_lock;
    io->stats_fn = ts__px_cb_stats;
}

TASKSTORE_DEF ts_result ts_io_posix_last_error(const ts_io_posix *p, ts_error_info *out)
{
    return ts__env_last_error(p ? &p->env : NULL, out);
}

#endif /* TASKSTORE_NO_STDIO */

/* ======================================================================== */
/* >>lru: the cache. One allocation per entry (header, key, copied value);  */
/* an open-addressing table of {hash, entry*}; intrusive circular lists for */
/* recency, expiry and the group/session index used by invalidation.       */
/* ======================================================================== */

/* Layout. Every entry sits in:
     - the entry table (slots hold the hash so probes rarely touch entries);
     - the recency list (head = most recently used, eviction from the tail);
     - if its key has a ':', the member list of its group "kind:session",
       and each group in the member list of its session: invalidating one
       stream or one session walks only what it removes;
     - if it can expire, one of two expiry lists. List A holds entries with
       the cache's default TTL in expiry order (appending keeps it sorted as
       long as the caller's clock does not step back; an entry that would
       break the order goes to B instead), list B everything else, so prune
       pops A's expired front and scans only B.
   Groups and sessions are the same record type (ts__lru_set), kept alive
   by a count of members plus temporary pins held by invalidation walks. */

typedef struct ts__lru_link {
    struct ts__lru_link *prev, *next;
} ts__lru_link;

typedef struct ts__lru_set ts__lru_set;
struct ts__lru_set {
    ts__lru_link kids;   /* entries of a group, groups of a session */
    ts__lru_link sib;    /* a group's link in its session's kids */
    ts__lru_set *parent; /* a group's session; NULL for a session */
    uint64_t hash;
    size_t refs;         /* members + pins; freed when it drops to 0 */
    uint32_t klen;       /* name bytes follow the struct */
    uint32_t pad_;
};

#define TS__LRU_REF 1u   /* value is a ts__lru_ref, not inline bytes */

typedef struct ts__lru_entry {
    /* cold: used by put, removal and invalidation */
    uint64_t hash;
    ts__lru_set *group;  /* NULL for keys without ':' */
    ts__lru_link sib;    /* in group->kids */
    ts__lru_link exp;    /* in an expiry list; next == NULL when none */
    /* hot: all a get hit reads or writes, next to the key that follows, so
       a hit touches two cache lines of its entry rather than three */
    ts__lru_link lru;
    uint64_t expires;    /* UINT64_MAX = never */
    uint64_t touched;    /* last put or get hit, for oldest_age_ms */
    size_t cost;         /* copied length, or the caller's cost for a ref */
    uint32_t klen;       /* key bytes follow the struct */
    uint32_t flags;
} ts__lru_entry;

typedef struct ts__lru_ref {
    void *ptr;
    ts_lru_free_fn free_fn;
    void *user;
} ts__lru_ref;

typedef struct ts__lru_slot {
    uint64_t hash;
    void *obj;           /* NULL = empty */
} ts__lru_slot;

typedef struct ts__lru_tab {
    ts__lru_slot *slots;
    size_t cap;          /* 0 or a power of two */
    size_t count;
} ts__lru_tab;

struct ts_lru {
    ts__env env;
    ts__lru_link lru;          /* recency sentinel */
    ts__lru_link exp_a, exp_b; /* expiry sentinels, see above */
    ts__lru_tab entries, groups, sessions;
    uint64_t max_bytes, bytes, default_ttl;
    uint64_t hits, misses, evictions, expirations;
};

/* The few helpers of the get path are forced inline: a get is a handful
   of loads, and three calls' worth of prologues showed up as a fifth of it. */
#if defined(__GNUC__) || defined(__clang__)
#  define TS__LRU_HOT static __inline__ __attribute__((always_inline, unused))
#else
#  define TS__LRU_HOT static
#endif

#define TS__LRU_MAX_BUDGET (UINT64_MAX / 2) /* so bytes + one charge never wraps */
#define TS__LRU_MIN_CAP 16u

/* Expired at now: now reached put time + TTL; UINT64_MAX never expires,
   even at now == UINT64_MAX. */
#define TS__LRU_EXPIRED(e, now) ((e)->expires <= (now) && (e)->expires != UINT64_MAX)

#define TS__LRU_ENTRY_OF(link, member) \
    ((ts__lru_entry *)(void *)((char *)(link) - offsetof(ts__lru_entry, member)))
#define TS__LRU_SET_OF(link) \
    ((ts__lru_set *)(void *)((char *)(link) - offsetof(ts__lru_set, sib)))
#define TS__LRU_CENTRY_OF(link, member) \
    ((const ts__lru_entry *)(const void *)((const char *)(link) - offsetof(ts__lru_entry, member)))
#define TS__LRU_CSET_OF(link) \
    ((const ts__lru_set *)(const void *)((const char *)(link) - offsetof(ts__lru_set, sib)))

/* ---- intrusive circular lists ------------------------------------------- */

TS__PRIVATE void ts__lru_list_init(ts__lru_link *s) { s->prev = s; s->next = s; }

TS__LRU_HOT void ts__lru_unlink(ts__lru_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
}

TS__LRU_HOT void ts__lru_push_front(ts__lru_link *head, ts__lru_link *l)
{
    l->prev = head;
    l->next = head->next;
    head->next->prev = l;
    head->next = l;
}

TS__PRIVATE void ts__lru_push_back(ts__lru_link *head, ts__lru_link *l)
{
    l->next = head;
    l->prev = head->prev;
    head->prev->next = l;
    head->prev = l;
}

/* ---- entries ------------------------------------------------------------- */

TS__LRU_HOT const char *ts__lru_key(const ts__lru_entry *e) { return (const char *)(e + 1); }

/* Offset of the value area: after the key, 8-aligned. The checked form
   is for a put sizing a new entry (0 on overflow); an existing entry's key
   length was checked then, so the get path uses the plain one. */
TS__PRIVATE size_t ts__lru_value_off_checked(size_t klen)
{
    size_t n;
    if (!ts__size_add(sizeof(ts__lru_entry), klen, &n) || !ts__size_add(n, 7, &n)) return 0;
    return n & ~(size_t)7;
}
#define TS__LRU_VALUE_OFF(klen) ((sizeof(ts__lru_entry) + (size_t)(klen) + 7) & ~(size_t)7)

TS__PRIVATE size_t ts__lru_entry_size(const ts__lru_entry *e)
{
    return TS__LRU_VALUE_OFF(e->klen) +
           ((e->flags & TS__LRU_REF) ? sizeof(ts__lru_ref) : e->cost);
}

TS__PRIVATE uint64_t ts__lru_charge(const ts__lru_entry *e)
{
    return (uint64_t)e->cost + e->klen + TS_LRU_ENTRY_OVERHEAD;
}

TS__LRU_HOT ts__lru_ref *ts__lru_ref_of(ts__lru_entry *e)
{
    return (ts__lru_ref *)(void *)((char *)e + TS__LRU_VALUE_OFF(e->klen));
}

TS__LRU_HOT const void *ts__lru_value(ts__lru_entry *e)
{
    if (e->flags & TS__LRU_REF) return ts__lru_ref_of(e)->ptr;
    return (const char *)e + TS__LRU_VALUE_OFF(e->klen);
}

/* ---- the tables ------------------------------------------------------------
   Linear probing, load <= 3/4, backward-shift deletion (no tombstones).
   Insertion and removal work on {hash, pointer} only; key comparison is in
   the two lookups below, the entry one being the hot path. */

TS__PRIVATE ts_result ts__lru_tab_resize(ts_lru *lru, ts__lru_tab *t, size_t ncap)
{
    ts__lru_slot *ns, *old = t->slots;
    size_t i, mask = ncap - 1;
    ns = (ts__lru_slot *)ts__calloc(&lru->env.alloc, ncap, sizeof(ts__lru_slot));
    if (!ns) return TS_E_NOMEM;
    for (i = 0; i < t->cap; i++) {
        if (old[i].obj) {
            size_t j = (size_t)old[i].hash & mask;
            while (ns[j].obj) j = (j + 1) & mask;
            ns[j] = old[i];
        }
    }
    ts__free(&lru->env.alloc, old, t->cap * sizeof(ts__lru_slot));
    t->slots = ns;
    t->cap = ncap;
    return TS_OK;
}

/* Room for one more object. */
TS__PRIVATE ts_result ts__lru_tab_reserve(ts_lru *lru, ts__lru_tab *t)
{
    if ((t->count + 1) * 4 <= t->cap * 3) return TS_OK;
    if (t->cap > ((size_t)-1 / sizeof(ts__lru_slot)) / 2) return TS_E_NOMEM;
    return ts__lru_tab_resize(lru, t, t->cap ? t->cap * 2 : TS__LRU_MIN_CAP);
}

/* After bulk removal: halve the table while it is under 1/8 full. A failed
   allocation just keeps the bigger table. */
TS__PRIVATE void ts__lru_tab_fit(ts_lru *lru, ts__lru_tab *t)
{
    size_t ncap = t->cap;
    while (ncap > TS__LRU_MIN_CAP && t->count * 8 < ncap) ncap /= 2;
    if (ncap < t->cap) (void)ts__lru_tab_resize(lru, t, ncap);
}

TS__PRIVATE void ts__lru_tab_insert(ts__lru_tab *t, uint64_t h, void *obj)
{
    size_t mask = t->cap - 1, i = (size_t)h & mask;
    while (t->slots[i].obj) i = (i + 1) & mask;
    t->slots[i].hash = h;
    t->slots[i].obj = obj;
    t->count++;
}

TS__PRIVATE void ts__lru_tab_remove(ts__lru_tab *t, uint64_t h, const void *obj)
{
    size_t mask = t->cap - 1, i = (size_t)h & mask, j;
    while (t->slots[i].obj != obj) i = (i + 1) & mask;
    t->slots[i].obj = NULL;
    t->count--;
    /* backward shift: pull later members of the probe run into the hole */
    j = i;
    for (;;) {
        size_t home;
        j = (j + 1) & mask;
        if (!t->slots[j].obj) break;
        home = (size_t)t->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            t->slots[i] = t->slots[j];
            t->slots[j].obj = NULL;
            i = j;
        }
    }
}

/* The entry under key, or NULL; *slot gets its index or the empty slot
   where it would go (only meaningful when the table has slots). */
TS__LRU_HOT ts__lru_entry *ts__lru_find(const ts_lru *lru, const char *key, size_t n,
                                        uint64_t h, size_t *slot)
{
    const ts__lru_slot *slots = lru->entries.slots;
    size_t mask, i;
    *slot = 0;
    if (!slots) return NULL;
    mask = lru->entries.cap - 1;
    i = (size_t)h & mask;
    for (;;) {
        ts__lru_entry *e = (ts__lru_entry *)slots[i].obj;
        if (!e) break;
        if (slots[i].hash == h && e->klen == n && memcmp(ts__lru_key(e), key, n) == 0) {
            *slot = i;
            return e;
        }
        i = (i + 1) & mask;
    }
    *slot = i;
    return NULL;
}

TS__PRIVATE ts__lru_set *ts__lru_set_find(const ts__lru_tab *t, const char *name, size_t n,
                                          uint64_t h)
{
    size_t mask, i;
    if (!t->slots) return NULL;
    mask = t->cap - 1;
    for (i = (size_t)h & mask; t->slots[i].obj; i = (i + 1) & mask) {
        ts__lru_set *s = (ts__lru_set *)t->slots[i].obj;
        if (t->slots[i].hash == h && s->klen == n && memcmp(s + 1, name, n) == 0) return s;
    }
    return NULL;
}

/* ---- groups and sessions ------------------------------------------------- */

/* A key's group is its bytes up to the second ':' (or all of it) and its
   session the bytes between the first and second ':'. 0: no ':', no group. */
TS__PRIVATE int ts__lru_split(const char *key, size_t n, size_t *glen, size_t *soff)
{
    const char *c1, *c2;
    if (!n) return 0;
    c1 = (const char *)memchr(key, ':', n);
    if (!c1) return 0;
    *soff = (size_t)(c1 - key) + 1;
    c2 = (const char *)memchr(key + *soff, ':', n - *soff);
    *glen = c2 ? (size_t)(c2 - key) : n;
    return 1;
}

TS__PRIVATE ts__lru_set *ts__lru_set_new(ts_lru *lru, const char *name, size_t n, uint64_t h)
{
    ts__lru_set *s = (ts__lru_set *)ts__alloc(&lru->env.alloc, sizeof(ts__lru_set) + n);
    if (!s) return NULL;
    memset(s, 0, sizeof *s);
    ts__lru_list_init(&s->kids);
    s->hash = h;
    s->klen = (uint32_t)n;
    if (n) memcpy(s + 1, name, n);
    return s;
}

TS__PRIVATE void ts__lru_set_free(ts_lru *lru, ts__lru_set *s)
{
    if (s) ts__free(&lru->env.alloc, s, sizeof(ts__lru_set) + s->klen);
}

/* Drops one member or pin; a set left with none leaves its table (and its
   session's list, releasing the session in turn) and is freed. */
TS__PRIVATE void ts__lru_set_release(ts_lru *lru, ts__lru_set *s)
{
    while (s && --s->refs == 0) {
        ts__lru_set *parent = s->parent;
        if (parent) {
            ts__lru_tab_remove(&lru->groups, s->hash, s);
            ts__lru_unlink(&s->sib);
        } else {
            ts__lru_tab_remove(&lru->sessions, s->hash, s);
        }
        ts__lru_set_free(lru, s);
        s = parent;
    }
}

/* The group of key, created with its session when new (with no members
   yet: the caller adds one at once). *out NULL for keys without ':'. On
   TS_E_NOMEM nothing changed. */
TS__PRIVATE ts_result ts__lru_group_get(ts_lru *lru, const char *key, size_t n, ts__lru_set **out)
{
    size_t glen, soff;
    uint64_t gh, sh;
    ts__lru_set *g, *s, *ns = NULL;
    *out = NULL;
    if (!ts__lru_split(key, n, &glen, &soff)) return TS_OK;
    gh = ts__hash_bytes(key, glen);
    g = ts__lru_set_find(&lru->groups, key, glen, gh);
    if (g) { *out = g; return TS_OK; }
    sh = ts__hash_bytes(key + soff, glen - soff);
    s = ts__lru_set_find(&lru->sessions, key + soff, glen - soff, sh);
    g = ts__lru_set_new(lru, key, glen, gh);
    if (!g || ts__lru_tab_reserve(lru, &lru->groups) != TS_OK) goto nomem;
    if (!s) {
        s = ns = ts__lru_set_new(lru, key + soff, glen - soff, sh);
        if (!ns || ts__lru_tab_reserve(lru, &lru->sessions) != TS_OK) goto nomem;
        ts__lru_tab_insert(&lru->sessions, sh, ns);
    }
    ts__lru_tab_insert(&lru->groups, gh, g);
    g->parent = s;
    ts__lru_push_back(&s->kids, &g->sib);
    s->refs++;
    *out = g;
    return TS_OK;
nomem:
    ts__lru_set_free(lru, g);
    ts__lru_set_free(lru, ns);
    return TS_E_NOMEM;
}

/* ---- linking, removal, eviction ------------------------------------------ */

TS__PRIVATE void ts__lru_exp_link(ts_lru *lru, ts__lru_entry *e, uint64_t ttl)
{
    ts__lru_link *a = &lru->exp_a;
    if (e->expires == UINT64_MAX) {
        e->exp.prev = e->exp.next = NULL;
    } else if (ttl == lru->default_ttl &&
               (a->prev == a || TS__LRU_ENTRY_OF(a->prev, exp)->expires <= e->expires)) {
        ts__lru_push_back(a, &e->exp);
    } else {
        ts__lru_push_back(&lru->exp_b, &e->exp);
    }
}

/* Takes e out of every list and the accounting; out of the table too
   unless its slot was already handed to a replacement. */
TS__PRIVATE void ts__lru_detach(ts_lru *lru, ts__lru_entry *e, int in_table)
{
    if (in_table) ts__lru_tab_remove(&lru->entries, e->hash, e);
    ts__lru_unlink(&e->lru);
    if (e->exp.next) ts__lru_unlink(&e->exp);
    if (e->group) {
        ts__lru_unlink(&e->sib);
        ts__lru_set_release(lru, e->group);
    }
    lru->bytes -= ts__lru_charge(e);
}

/* Frees a detached entry, calling the owner's free_fn for a ref value. */
TS__PRIVATE void ts__lru_entry_free(ts_lru *lru, ts__lru_entry *e, int call_free_fn)
{
    if (call_free_fn && (e->flags & TS__LRU_REF)) {
        ts__lru_ref *r = ts__lru_ref_of(e);
        if (r->free_fn) r->free_fn(r->ptr, e->cost, r->user);
    }
    ts__free(&lru->env.alloc, e, ts__lru_entry_size(e));
}

TS__PRIVATE void ts__lru_remove(ts_lru *lru, ts__lru_entry *e)
{
    ts__lru_detach(lru, e, 1);
    ts__lru_entry_free(lru, e, 1);
}

TS__PRIVATE void ts__lru_evict(ts_lru *lru, uint64_t now)
{
    while (lru->bytes > lru->max_bytes && lru->lru.prev != &lru->lru) {
        ts__lru_entry *e = TS__LRU_ENTRY_OF(lru->lru.prev, lru);
        if (TS__LRU_EXPIRED(e, now)) lru->expirations++;
        else lru->evictions++;
        ts__lru_remove(lru, e);
    }
}

/* The live entry under key, reclaiming it if expired. */
TS__LRU_HOT ts__lru_entry *ts__lru_lookup(ts_lru *lru, const char *key, size_t n, uint64_t now)
{
    size_t slot;
    ts__lru_entry *e = ts__lru_find(lru, key, n, ts__hash_bytes(key, n), &slot);
    if (e && TS__LRU_EXPIRED(e, now)) {
        lru->expirations++;
        ts__lru_remove(lru, e);
        return NULL;
    }
    return e;
}

TS__LRU_HOT void ts__lru_touch(ts_lru *lru, ts__lru_entry *e, uint64_t now)
{
    if (lru->lru.next != &e->lru) {
        ts__lru_unlink(&e->lru);
        ts__lru_push_front(&lru->lru, &e->lru);
    }
    e->touched = now;
}

/* Writes a put's value and times into an entry whose key is in place.
   memmove: a caller may re-put bytes it got from this very entry. */
TS__PRIVATE void ts__lru_fill(ts__lru_entry *e, const void *data, size_t len,
                              const ts__lru_ref *ref, uint64_t expires, uint64_t now)
{
    e->expires = expires;
    e->touched = now;
    e->flags = ref ? TS__LRU_REF : 0u;
    e->cost = len;
    if (ref) memcpy(ts__lru_ref_of(e), ref, sizeof *ref);
    else if (len) memmove((char *)e + TS__LRU_VALUE_OFF(e->klen), data, len);
}

/* Both puts. ref NULL: copy len bytes from data; else store *ref with cost
   len. */
TS__PRIVATE ts_result ts__lru_put(ts_lru *lru, const char *key, size_t key_len, const void *data,
                                  size_t len, const ts__lru_ref *ref, uint64_t ttl, uint64_t now)
{
    uint64_t h, expires, max = lru->max_bytes, ovh = TS_LRU_ENTRY_OVERHEAD;
    size_t slot, off, size;
    ts__lru_entry *old, *e;
    ts__lru_set *g;
    if (!key && key_len) return TS__FAIL(&lru->env, TS_E_INVALID, "lru put: NULL key");
    if (!key) key = ""; /* memcmp/memcpy never see NULL, even with 0 bytes */
    if (!ref && !data && len) return TS__FAIL(&lru->env, TS_E_INVALID, "lru put: NULL data");
    if (max < ovh || (uint64_t)len > max - ovh || (uint64_t)key_len > max - ovh - len ||
        (uint64_t)key_len > UINT32_MAX)
        return TS__FAIL(&lru->env, TS_E_TOOBIG,
                        "lru put: entry of %llu value + %llu key bytes exceeds the budget %llu",
                        (unsigned long long)len, (unsigned long long)key_len,
                        (unsigned long long)max);
    off = ts__lru_value_off_checked(key_len);
    if (!off || !ts__size_add(off, ref ? sizeof *ref : len, &size))
        return TS__FAIL(&lru->env, TS_E_TOOBIG, "lru put: entry size overflows");

    if (!ttl) ttl = lru->default_ttl;
    expires = (ttl == TS_LRU_NO_TTL || now >= UINT64_MAX - ttl) ? UINT64_MAX : now + ttl;
    h = ts__hash_bytes(key, key_len);
    old = ts__lru_find(lru, key, key_len, h, &slot);

    if (old && ts__lru_entry_size(old) == size) {
        /* Same footprint (a ref for a ref, a copy for one of the same
           length): rewrite the entry in place, no allocation. The old
           value's free_fn runs last, once the cache is consistent. */
        ts__lru_ref was;
        size_t was_cost = old->cost;
        int free_was = (old->flags & TS__LRU_REF) && !(ref && ts__lru_ref_of(old)->ptr == ref->ptr);
        memset(&was, 0, sizeof was);
        if (free_was) was = *ts__lru_ref_of(old);
        lru->bytes -= ts__lru_charge(old);
        if (old->exp.next) ts__lru_unlink(&old->exp);
        ts__lru_fill(old, data, len, ref, expires, now);
        ts__lru_exp_link(lru, old, ttl);
        ts__lru_touch(lru, old, now);
        lru->bytes += ts__lru_charge(old);
        ts__lru_evict(lru, now);
        if (free_was && was.free_fn) was.free_fn(was.ptr, was_cost, was.user);
        return TS_OK;
    }

    e = (ts__lru_entry *)ts__alloc(&lru->env.alloc, size);
    if (!e) return TS__FAIL(&lru->env, TS_E_NOMEM, "lru put: out of memory (%llu bytes)",
                            (unsigned long long)size);
    e->klen = (uint32_t)key_len;
    e->hash = h;
    if (key_len) memcpy(e + 1, key, key_len);
    ts__lru_fill(e, data, len, ref, expires, now);

    if (old) {
        g = old->group; /* same key, same group: nothing to allocate */
        lru->entries.slots[slot].obj = e;
    } else {
        size_t cap0 = lru->entries.cap;
        ts_result r = ts__lru_tab_reserve(lru, &lru->entries);
        if (r == TS_OK) r = ts__lru_group_get(lru, key, key_len, &g);
        if (r != TS_OK) {
            ts__lru_entry_free(lru, e, 0);
            return TS__FAIL(&lru->env, r, "lru put: out of memory for the index");
        }
        if (cap0 && cap0 == lru->entries.cap) { /* the probe's empty slot still stands */
            lru->entries.slots[slot].hash = h;
            lru->entries.slots[slot].obj = e;
            lru->entries.count++;
        } else {
            ts__lru_tab_insert(&lru->entries, h, e);
        }
    }
    e->group = g;
    if (g) {
        ts__lru_push_back(&g->kids, &e->sib);
        g->refs++;
    }
    ts__lru_push_front(&lru->lru, &e->lru);
    ts__lru_exp_link(lru, e, ttl);
    lru->bytes += ts__lru_charge(e);

    if (old) ts__lru_detach(lru, old, 0);
    ts__lru_evict(lru, now); /* e is at the head and fits alone: it stays */
    if (old)
        ts__lru_entry_free(lru, old,
                           !(ref && (old->flags & TS__LRU_REF) && ts__lru_ref_of(old)->ptr == ref->ptr));
    return TS_OK;
}

/* ---- public functions ----------------------------------------------------- */

TASKSTORE_DEF ts_lru_config ts_lru_config_default(void)
{
    ts_lru_config c;
    memset(&c, 0, sizeof c);
    c.max_bytes = TS_LRU_DEFAULT_MAX_BYTES;
    c.default_ttl_ms = TS_LRU_DEFAULT_TTL_MS;
    return c;
}

TS__PRIVATE uint64_t ts__lru_budget(uint64_t max_bytes)
{
    if (!max_bytes) return TS_LRU_DEFAULT_MAX_BYTES;
    return max_bytes > TS__LRU_MAX_BUDGET ? TS__LRU_MAX_BUDGET : max_bytes;
}

TASKSTORE_DEF ts_result ts_lru_create(const ts_lru_config *cfg, ts_lru **out)
{
    ts_lru_config c;
    ts_lru *lru;
    if (!out) return TS_E_INVALID;
    *out = NULL;
    if (cfg) c = *cfg;
    else memset(&c, 0, sizeof c);
    lru = (ts_lru *)ts__alloc(&c.allocator, sizeof *lru);
    if (!lru) return TS_E_NOMEM;
    memset(lru, 0, sizeof *lru);
    ts__env_init(&lru->env, &c.allocator, &c.logger);
    ts__lru_list_init(&lru->lru);
    ts__lru_list_init(&lru->exp_a);
    ts__lru_list_init(&lru->exp_b);
    lru->max_bytes = ts__lru_budget(c.max_bytes);
    lru->default_ttl = c.default_ttl_ms ? c.default_ttl_ms : TS_LRU_DEFAULT_TTL_MS;
    *out = lru;
    return TS_OK;
}

TASKSTORE_DEF void ts_lru_destroy(ts_lru *lru)
{
    ts_allocator a;
    ts__lru_link *l, *next;
    size_t i;
    if (!lru) return;
    for (l = lru->lru.next; l != &lru->lru; l = next) {
        next = l->next;
        ts__lru_entry_free(lru, TS__LRU_ENTRY_OF(l, lru), 1);
    }
    for (i = 0; i < lru->groups.cap; i++) ts__lru_set_free(lru, (ts__lru_set *)lru->groups.slots[i].obj);
    for (i = 0; i < lru->sessions.cap; i++) ts__lru_set_free(lru, (ts__lru_set *)lru->sessions.slots[i].obj);
    ts__free(&lru->env.alloc, lru->entries.slots, lru->entries.cap * sizeof(ts__lru_slot));
    ts__free(&lru->env.alloc, lru->groups.slots, lru->groups.cap * sizeof(ts__lru_slot));
    ts__free(&lru->env.alloc, lru->sessions.slots, lru->sessions.cap * sizeof(ts__lru_slot));
    a = lru->env.alloc;
    ts__free(&a, lru, sizeof *lru);
}

TASKSTORE_DEF ts_result ts_lru_put_copy(ts_lru *lru, const char *key, size_t key_len,
                                        const void *data, size_t len,
                                        uint64_t ttl_ms, uint64_t now_ms)
{
    if (!lru) return TS_E_INVALID;
    return ts__lru_put(lru, key, key_len, data, len, NULL, ttl_ms, now_ms);
}

TASKSTORE_DEF ts_result ts_lru_put_ref(ts_lru *lru, const char *key, size_t key_len,
                                       void *value, size_t cost,
                                       ts_lru_free_fn free_fn, void *user,
                                       uint64_t ttl_ms, uint64_t now_ms)
{
    ts__lru_ref r;
    if (!lru) return TS_E_INVALID;
    r.ptr = value;
    r.free_fn = free_fn;
    r.user = user;
    return ts__lru_put(lru, key, key_len, NULL, cost, &r, ttl_ms, now_ms);
}

TASKSTORE_DEF ts_result ts_lru_get(ts_lru *lru, const char *key, size_t key_len,
                                   uint64_t now_ms, const void **value, size_t *len)
{
    ts__lru_entry *e;
    if (value) *value = NULL;
    if (len) *len = 0;
    if (!lru) return TS_E_INVALID;
    if (!key && key_len) return TS__FAIL(&lru->env, TS_E_INVALID, "lru get: NULL key");
    if (!key) key = "";
    e = ts__lru_lookup(lru, key, key_len, now_ms);
    if (!e) {
        lru->misses++;
        return TS_E_NOTFOUND;
    }
    lru->hits++;
    ts__lru_touch(lru, e, now_ms);
    if (value) *value = ts__lru_value(e);
    if (len) *len = e->cost;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_lru_get_copy(ts_lru *lru, const char *key, size_t key_len,
                                        uint64_t now_ms, void *buf, size_t cap, size_t *len)
{
    ts__lru_entry *e;
    if (len) *len = 0;
    if (!lru) return TS_E_INVALID;
    if ((!key && key_len) || (!buf && cap))
        return TS__FAIL(&lru->env, TS_E_INVALID, "lru get_copy: NULL key or buffer");
    if (!key) key = "";
    e = ts__lru_lookup(lru, key, key_len, now_ms);
    if (!e) {
        lru->misses++;
        return TS_E_NOTFOUND;
    }
    if (e->flags & TS__LRU_REF)
        return TS__FAIL(&lru->env, TS_E_INVALID, "lru get_copy: entry holds a caller pointer");
    if (len) *len = e->cost;
    if (cap < e->cost) return TS_E_RANGE;
    if (e->cost) memcpy(buf, ts__lru_value(e), e->cost);
    lru->hits++;
    ts__lru_touch(lru, e, now_ms);
    return TS_OK;
}

TASKSTORE_DEF int ts_lru_has(ts_lru *lru, const char *key, size_t key_len, uint64_t now_ms)
{
    if (!lru || (!key && key_len)) return 0;
    if (!key) key = "";
    return ts__lru_lookup(lru, key, key_len, now_ms) != NULL;
}

TASKSTORE_DEF ts_result ts_lru_delete(ts_lru *lru, const char *key, size_t key_len)
{
    size_t slot;
    ts__lru_entry *e;
    if (!lru) return TS_E_INVALID;
    if (!key && key_len) return TS__FAIL(&lru->env, TS_E_INVALID, "lru delete: NULL key");
    if (!key) key = "";
    e = ts__lru_find(lru, key, key_len, ts__hash_bytes(key, key_len), &slot);
    if (!e) return TS_E_NOTFOUND;
    ts__lru_remove(lru, e);
    return TS_OK;
}

/* Shared argument check of the batch calls. */
TS__PRIVATE ts_result ts__lru_batch_check(ts_lru *lru, size_t count, const char *const *keys,
                                          const char *what)
{
    size_t i;
    if (!lru) return TS_E_INVALID;
    if (count && !keys) return TS__FAIL(&lru->env, TS_E_INVALID, "lru %s: NULL keys", what);
    for (i = 0; i < count; i++)
        if (!keys[i]) return TS__FAIL(&lru->env, TS_E_INVALID, "lru %s: key %llu is NULL", what,
                                      (unsigned long long)i);
    return TS_OK;
}

#define TS__LRU_KLEN(lens, keys, i) ((lens) ? (lens)[i] : strlen((keys)[i]))

TASKSTORE_DEF ts_result ts_lru_get_many(ts_lru *lru, size_t count, const char *const *keys,
                                        const size_t *key_lens, uint64_t now_ms,
                                        const void **values, size_t *lens, size_t *hits)
{
    size_t i, n = 0;
    ts_result r;
    if (hits) *hits = 0;
    if (values)
        for (i = 0; i < count; i++) values[i] = NULL;
    if (lens)
        for (i = 0; i < count; i++) lens[i] = 0;
    if ((r = ts__lru_batch_check(lru, count, keys, "get_many")) != TS_OK) return r;
    if (count && !values) return TS__FAIL(&lru->env, TS_E_INVALID, "lru get_many: NULL values");
    for (i = 0; i < count; i++)
        if (ts_lru_get(lru, keys[i], TS__LRU_KLEN(key_lens, keys, i), now_ms, &values[i],
                       lens ? &lens[i] : NULL) == TS_OK)
            n++;
    if (hits) *hits = n;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_lru_put_many_copy(ts_lru *lru, size_t count,
                                             const char *const *keys, const size_t *key_lens,
                                             const void *const *values, const size_t *lens,
                                             uint64_t ttl_ms, uint64_t now_ms, size_t *stored)
{
    size_t i;
    ts_result r;
    if (stored) *stored = 0;
    if ((r = ts__lru_batch_check(lru, count, keys, "put_many_copy")) != TS_OK) return r;
    if (count && (!values || !lens))
        return TS__FAIL(&lru->env, TS_E_INVALID, "lru put_many_copy: NULL values or lengths");
    for (i = 0; i < count; i++) {
        r = ts__lru_put(lru, keys[i], TS__LRU_KLEN(key_lens, keys, i), values[i], lens[i], NULL,
                        ttl_ms, now_ms);
        if (r != TS_OK) return r;
        if (stored) *stored = i + 1;
    }
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_lru_delete_many(ts_lru *lru, size_t count, const char *const *keys,
                                           const size_t *key_lens, size_t *removed)
{
    size_t i, n = 0;
    ts_result r;
    if (removed) *removed = 0;
    if ((r = ts__lru_batch_check(lru, count, keys, "delete_many")) != TS_OK) return r;
    for (i = 0; i < count; i++)
        if (ts_lru_delete(lru, keys[i], TS__LRU_KLEN(key_lens, keys, i)) == TS_OK) n++;
    ts__lru_tab_fit(lru, &lru->entries);
    if (removed) *removed = n;
    return TS_OK;
}

/* Glob over bytes: '*' any run, '?' one byte, '\' escapes the next byte.
   Greedy with one backtrack point, which is exact for '*' (a later '*'
   subsumes every earlier choice), so it runs in O(len(p) * len(s)). */
TS__PRIVATE int ts__lru_glob(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0, star_p = 0, star_s = 0;
    int star = 0;
    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star = 1;
            star_p = ++pi;
            star_s = si;
            continue;
        }
        if (pi < pn) {
            size_t adv = 1;
            char c = p[pi];
            if (c == '\\' && pi + 1 < pn) {
                c = p[pi + 1];
                adv = 2;
            } else if (c == '?') {
                pi++;
                si++;
                continue;
            }
            if (c == s[si]) {
                pi += adv;
                si++;
                continue;
            }
        }
        if (!star) return 0;
        pi = star_p;
        si = ++star_s;
    }
    while (pi < pn && p[pi] == '*') pi++;
    return pi == pn;
}

/* Removes the entries whose key starts with pat (glob 0) or matches the
   glob pat (glob 1), walking the whole recency list. */
TS__PRIVATE size_t ts__lru_remove_scan(ts_lru *lru, const char *pat, size_t n, int glob)
{
    ts__lru_link *l, *next;
    size_t removed = 0;
    for (l = lru->lru.next; l != &lru->lru; l = next) {
        ts__lru_entry *e = TS__LRU_ENTRY_OF(l, lru);
        int hit = glob ? ts__lru_glob(pat, n, ts__lru_key(e), e->klen)
                       : (e->klen >= n && memcmp(ts__lru_key(e), pat, n) == 0);
        next = l->next;
        if (hit) {
            ts__lru_remove(lru, e);
            removed++;
        }
    }
    return removed;
}

TS__PRIVATE void ts__lru_fit_all(ts_lru *lru)
{
    ts__lru_tab_fit(lru, &lru->entries);
    ts__lru_tab_fit(lru, &lru->groups);
    ts__lru_tab_fit(lru, &lru->sessions);
}

TASKSTORE_DEF ts_result ts_lru_invalidate_prefix(ts_lru *lru, const char *prefix, size_t len,
                                                 size_t *removed)
{
    size_t n = 0, glen, soff;
    if (removed) *removed = 0;
    if (!lru) return TS_E_INVALID;
    if (!prefix && len) return TS__FAIL(&lru->env, TS_E_INVALID, "lru invalidate_prefix: NULL");
    if (!prefix) prefix = "";
    if (ts__lru_split(prefix, len, &glen, &soff) && glen < len) {
        /* two ':' in the prefix: every match is in one group */
        ts__lru_set *g = ts__lru_set_find(&lru->groups, prefix, glen, ts__hash_bytes(prefix, glen));
        if (g) {
            ts__lru_link *l, *next;
            g->refs++; /* pinned: removing its last member must not free it mid-walk */
            for (l = g->kids.next; l != &g->kids; l = next) {
                ts__lru_entry *e = TS__LRU_ENTRY_OF(l, sib);
                next = l->next;
                if (e->klen >= len && memcmp(ts__lru_key(e), prefix, len) == 0) {
                    ts__lru_remove(lru, e);
                    n++;
                }
            }
            ts__lru_set_release(lru, g);
        }
    } else {
        n = ts__lru_remove_scan(lru, prefix, len, 0);
    }
    ts__lru_fit_all(lru);
    if (removed) *removed = n;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_lru_invalidate_session(ts_lru *lru, const char *id, size_t len,
                                                  size_t *removed)
{
    size_t n = 0;
    ts__lru_set *s;
    if (removed) *removed = 0;
    if (!lru) return TS_E_INVALID;
    if (!id && len) return TS__FAIL(&lru->env, TS_E_INVALID, "lru invalidate_session: NULL");
    if (!id) id = "";
    s = ts__lru_set_find(&lru->sessions, id, len, ts__hash_bytes(id, len));
    if (s) {
        s->refs++; /* pinned while its groups go */
        while (s->kids.next != &s->kids) {
            ts__lru_set *g = TS__LRU_SET_OF(s->kids.next);
            g->refs++;
            while (g->kids.next != &g->kids) {
                ts__lru_remove(lru, TS__LRU_ENTRY_OF(g->kids.next, sib));
                n++;
            }
            ts__lru_set_release(lru, g); /* its last ref: g leaves s->kids */
        }
        ts__lru_set_release(lru, s);
    }
    ts__lru_fit_all(lru);
    if (removed) *removed = n;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_lru_invalidate_glob(ts_lru *lru, const char *pattern, size_t len,
                                               size_t *removed)
{
    size_t n;
    if (removed) *removed = 0;
    if (!lru) return TS_E_INVALID;
    if (!pattern && len) return TS__FAIL(&lru->env, TS_E_INVALID, "lru invalidate_glob: NULL");
    if (!pattern) pattern = "";
    n = ts__lru_remove_scan(lru, pattern, len, 1);
    ts__lru_fit_all(lru);
    if (removed) *removed = n;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_lru_prune(ts_lru *lru, uint64_t now_ms, size_t *removed)
{
    size_t n = 0;
    ts__lru_link *l, *next;
    if (removed) *removed = 0;
    if (!lru) return TS_E_INVALID;
    while (lru->exp_a.next != &lru->exp_a) {
        ts__lru_entry *e = TS__LRU_ENTRY_OF(lru->exp_a.next, exp);
        if (e->expires > now_ms) break;
        ts__lru_remove(lru, e);
        n++;
    }
    for (l = lru->exp_b.next; l != &lru->exp_b; l = next) {
        ts__lru_entry *e = TS__LRU_ENTRY_OF(l, exp);
        next = l->next;
        if (e->expires <= now_ms) {
            ts__lru_remove(lru, e);
            n++;
        }
    }
    lru->expirations += n;
    ts__lru_fit_all(lru);
    if (removed) *removed = n;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_lru_set_max_bytes(ts_lru *lru, uint64_t max_bytes, uint64_t now_ms)
{
    if (!lru) return TS_E_INVALID;
    lru->max_bytes = ts__lru_budget(max_bytes);
    ts__lru_evict(lru, now_ms);
    ts__lru_fit_all(lru);
    return TS_OK;
}

TASKSTORE_DEF void ts_lru_clear(ts_lru *lru)
{
    if (!lru) return;
    while (lru->lru.next != &lru->lru) ts__lru_remove(lru, TS__LRU_ENTRY_OF(lru->lru.next, lru));
    ts__lru_fit_all(lru);
}

TASKSTORE_DEF ts_result ts_lru_get_stats(const ts_lru *lru, uint64_t now_ms, ts_lru_stats *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!lru || !out) return TS_E_INVALID;
    out->hits = lru->hits;
    out->misses = lru->misses;
    out->hit_rate = lru->hits + lru->misses
                        ? (double)lru->hits / ((double)lru->hits + (double)lru->misses) : 0.0;
    out->evictions = lru->evictions;
    out->expirations = lru->expirations;
    out->entries = lru->entries.count;
    out->bytes = lru->bytes;
    out->max_bytes = lru->max_bytes;
    if (lru->lru.prev != &lru->lru) {
        uint64_t t = TS__LRU_CENTRY_OF(lru->lru.prev, lru)->touched;
        out->oldest_age_ms = now_ms > t ? now_ms - t : 0;
    }
    return TS_OK;
}

TASKSTORE_DEF void ts_lru_stats_reset(ts_lru *lru)
{
    if (!lru) return;
    lru->hits = lru->misses = lru->evictions = lru->expirations = 0;
}

TASKSTORE_DEF ts_result ts_lru_last_error(const ts_lru *lru, ts_error_info *out)
{
    return ts__env_last_error(lru ? &lru->env : NULL, out);
}

/* Internal consistency check for tests and fuzzing: 1 when every list,
   table, count and byte total agrees with the others. O(n). */
TS__PRIVATE int ts__lru_check(const ts_lru *lru)
{
    const ts__lru_link *l;
    size_t n = 0, i, nexp = 0, grouped = 0, groups = 0;
    uint64_t bytes = 0, last_exp = 0;
    for (l = lru->lru.next; l != &lru->lru; l = l->next) {
        const ts__lru_entry *e = TS__LRU_CENTRY_OF(l, lru);
        size_t slot;
        if (l->next->prev != l) return 0;
        if (ts__lru_find(lru, ts__lru_key(e), e->klen, e->hash, &slot) != e) return 0;
        if (e->hash != ts__hash_bytes(ts__lru_key(e), e->klen)) return 0;
        if ((e->expires == UINT64_MAX) != (e->exp.next == NULL)) return 0;
        if (e->exp.next) nexp++;
        {
            size_t glen, soff;
            int has = ts__lru_split(ts__lru_key(e), e->klen, &glen, &soff);
            if (has != (e->group != NULL)) return 0;
            grouped += e->group != NULL;
            if (has && (e->group->klen != glen || memcmp(e->group + 1, ts__lru_key(e), glen) ||
                        e->group->parent->klen != glen - soff))
                return 0;
        }
        bytes += ts__lru_charge(e);
        n++;
    }
    if (n != lru->entries.count || bytes != lru->bytes || bytes > lru->max_bytes) return 0;
    for (l = lru->exp_a.next; l != &lru->exp_a; l = l->next) {
        const ts__lru_entry *e = TS__LRU_CENTRY_OF(l, exp);
        if (e->expires < last_exp) return 0;
        last_exp = e->expires;
        nexp--;
    }
    for (l = lru->exp_b.next; l != &lru->exp_b; l = l->next) nexp--;
    if (nexp != 0) return 0;
    for (i = 0; i < lru->groups.cap; i++) {
        const ts__lru_set *g = (const ts__lru_set *)lru->groups.slots[i].obj;
        size_t k = 0;
        if (!g) continue;
        for (l = g->kids.next; l != &g->kids; l = l->next) k++;
        if (!k || k != g->refs || !g->parent) return 0;
        grouped -= k;
        groups++;
    }
    if (groups != lru->groups.count || grouped != 0) return 0;
    for (i = 0; i < lru->sessions.cap; i++) {
        const ts__lru_set *s = (const ts__lru_set *)lru->sessions.slots[i].obj;
        size_t k = 0;
        if (!s) continue;
        for (l = s->kids.next; l != &s->kids; l = l->next) {
            if (TS__LRU_CSET_OF(l)->parent != s) return 0;
            k++;
        }
        if (!k || k != s->refs || s->parent) return 0;
        groups -= k;
    }
    if (groups != 0) return 0;
    for (i = 0, n = 0; i < lru->entries.cap; i++) n += lru->entries.slots[i].obj != NULL;
    if (n != lru->entries.count || (lru->entries.cap && lru->entries.count * 4 > lru->entries.cap * 3))
        return 0;
    return 1;
}

/* ======================================================================== */
/* >>queue: the persistence queue - rings, coalescing, the overlay, the     */
/* dependency order, batches with deferred directory syncs, retries, idle   */
/* jobs. Owns every queued byte until it is durable or dropped.             */
/* ======================================================================== */

/* Layout. Items live in a slab (allocated for the full capacity at open and
   by ts_queue_reserve, never by an enqueue) and are named by slot index; a
   dependency is {slot, id} so a reused slot never passes for the item that
   left it. Each priority has a ring of slots kept in sequence order (a
   promoted item is inserted at its place, items moved behind a younger
   dependency go to the back). ts__map maps a path to its newest
   item: coalescing and the overlay. The failed list, the DFS stack and the
   per-batch directory table are scratch arrays sized with the slab, so a
   batch allocates nothing.

   A batch (one tick, idle or flush round) marks the due items, pulls their
   dependencies in (MUST for critical work, MAY for budgeted work), then
   walks the rings merged by sequence number, MUST items first. A write is
   done with TS_WRITE_DEFER_DIRSYNC and linked to its directory's entry; the
   directory is synced when a later item depends on something in it, and at
   the end of the batch. Only then is the item complete and released. */

#if !defined(TASKSTORE_NO_STDIO) && defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h> /* QueryPerformanceCounter (04 io included it already) */
#define TS__QUEUE_HAVE_CLOCK 1
TS__PRIVATE uint64_t ts__queue_clock_us(void *user)
{
    LARGE_INTEGER f, c;
    TS__UNUSED(user);
    if (!QueryPerformanceFrequency(&f) || !QueryPerformanceCounter(&c) || f.QuadPart <= 0) return 0;
    return (uint64_t)(c.QuadPart / f.QuadPart) * 1000000u +
           (uint64_t)(c.QuadPart % f.QuadPart) * 1000000u / (uint64_t)f.QuadPart;
}
#elif !defined(TASKSTORE_NO_STDIO)
#include <time.h>
#if defined(CLOCK_MONOTONIC)
#define TS__QUEUE_HAVE_CLOCK 1
TS__PRIVATE uint64_t ts__queue_clock_us(void *user)
{
    struct timespec t;
    TS__UNUSED(user);
    if (clock_gettime(CLOCK_MONOTONIC, &t) != 0) return 0;
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}
#endif
#endif

#define TS__QNONE 0xFFFFFFFFu

enum { TS__QS_FREE = 0, TS__QS_PENDING = 1, TS__QS_WRITTEN = 2, TS__QS_FAILED = 3 };
enum { TS__QF_NONE = 0, TS__QF_MAY = 1, TS__QF_MUST = 2 };
enum { TS__QB_TICK = 0, TS__QB_IDLE = 1, TS__QB_FLUSH = 2 };

typedef struct ts__qdep {
    uint64_t id;
    uint32_t slot;
} ts__qdep;

typedef struct ts__qitem {
    uint64_t id;             /* 0: free slot */
    uint64_t seq;            /* every dependency has a smaller seq */
    uint64_t enq_ms;         /* first enqueue (coalescing keeps it) */
    uint64_t next_ms;        /* earliest retry */
    char *path;              /* owned, path_len + 1 bytes */
    size_t path_len;
    unsigned char *data;     /* owned, cap bytes; NULL for deletes and empty writes */
    size_t len, cap;
    ts__qdep *deps;          /* owned, dep_cap entries */
    uint32_t ndeps, dep_cap;
    ts__qdep prev;           /* the older item of the same path, if any */
    uint32_t link;           /* free list when free, directory list when WRITTEN */
    uint32_t dir;            /* directory entry while WRITTEN */
    ts_result result;        /* last I/O error */
    uint64_t epoch;          /* flag is valid while epoch == the queue's */
    unsigned attempts;
    unsigned char op, prio, state, flag;
} ts__qitem;

typedef struct ts__qring {
    uint32_t *slot;
    uint32_t cap, head, count;
} ts__qring;

/* A directory written in the current batch and not yet synced. rep is the
   item last written into it (its path names the directory); the entry is
   free when rep is TS__QNONE. */
typedef struct ts__qdir {
    uint64_t hash;
    size_t len;
    uint32_t rep, head;
} ts__qdir;

typedef struct ts__qjob {
    char *name;
    size_t name_len;
    ts_queue_idle_fn fn;     /* NULL: removed, compacted after the round */
    void *user;
    uint32_t id;
} ts__qjob;

typedef struct ts__qbatch {
    int mode;
    uint64_t t0, limit_us, charged_us;
    int exhausted;
    uint64_t ops, attempts;
    ts_result first_fail;
} ts__qbatch;

struct ts_queue {
    ts__env env;
    ts_io io;
    ts_queue_config cfg;     /* defaults filled in */
    uint64_t (*clock_fn)(void *user);
    int dirsync;             /* defer directory syncs to once per batch */
    int busy;                /* inside a batch or callback */
    int in_jobs;
    uint64_t now_ms, next_id, next_seq;
    uint64_t epoch;          /* bumped to clear every item's flag at once */
    ts__qitem *items;
    uint32_t items_cap, free_head;
    ts__qring ring[3];
    ts__map map;             /* path -> slot of its newest item */
    uint32_t *failed;
    uint32_t nfailed, failed_cap;
    uint32_t *stack;
    uint32_t stack_cap;
    ts__qdir *dirs;
    uint32_t ndirs, dirs_cap;
    ts__qjob *jobs;
    uint32_t njobs, jobs_cap, job_rr, next_job_id;
    ts_queue_stats st;
};

TASKSTORE_DEF ts_queue_config ts_queue_config_default(void)
{
    ts_queue_config c;
    int p;
    memset(&c, 0, sizeof c);
    for (p = 0; p < 3; p++) c.capacity[p] = TS_QUEUE_DEFAULT_CAPACITY;
    c.batch_window_ms = TS_QUEUE_DEFAULT_WINDOW_MS;
    c.max_attempts[TS_PRIO_CRITICAL] = 2;
    c.max_attempts[TS_PRIO_NORMAL] = 4;
    c.max_attempts[TS_PRIO_LOW] = 6;
    c.backoff_ms = TS_QUEUE_DEFAULT_BACKOFF_MS;
    c.nominal_write_us = 1000;
    return c;
}

/* ---- small helpers ------------------------------------------------------- */

#define TS__QRING_AT(r, i) ((r)->slot[((r)->head + (i)) % (r)->cap])

TS__PRIVATE ts__qitem *ts__queue_live(const ts_queue *q, ts__qdep d)
{
    if (d.slot >= q->items_cap || q->items[d.slot].id != d.id || !d.id) return NULL;
    return &q->items[d.slot];
}

/* Per-item marks of one batch (TS__QF_*) or one enqueue (0/1); a new epoch
   clears them all in O(1). */
TS__PRIVATE unsigned char ts__qflag(const ts_queue *q, const ts__qitem *it)
{
    return it->epoch == q->epoch ? it->flag : 0;
}

TS__PRIVATE void ts__qflag_set(const ts_queue *q, ts__qitem *it, unsigned char f)
{
    it->epoch = q->epoch;
    it->flag = f;
}

TS__PRIVATE uint32_t ts__queue_find(const ts_queue *q, const char *path, size_t n)
{
    uint64_t v;
    if (!ts__map_get(&q->map, path, n, &v)) return TS__QNONE;
    return (uint32_t)v;
}

TS__PRIVATE uint64_t ts__queue_clock(const ts_queue *q)
{
    return q->clock_fn ? q->clock_fn(q->cfg.clock_user) : 0;
}

TS__PRIVATE void ts__queue_emit(ts_queue *q, ts_queue_event_type type, const ts__qitem *it,
                                ts_result r, int coalesced)
{
    ts_queue_event ev;
    int was = q->busy;
    if (!q->cfg.event_fn) return;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.id = it->id;
    ev.path = it->path;
    ev.op = (ts_queue_op)it->op;
    ev.prio = (ts_queue_priority)it->prio;
    ev.len = it->len;
    ev.attempts = it->attempts;
    ev.result = r;
    ev.coalesced = coalesced;
    q->busy = 1;
    q->cfg.event_fn(q->cfg.event_user, &ev);
    q->busy = was;
}

TS__PRIVATE void ts__queue_info(const ts__qitem *it, ts_queue_item_info *info)
{
    memset(info, 0, sizeof *info);
    info->id = it->id;
    info->path = it->path;
    info->data = it->op == TS_QUEUE_WRITE ? (it->data ? (const void *)it->data : (const void *)"") : NULL;
    info->len = it->len;
    info->op = (ts_queue_op)it->op;
    info->prio = (ts_queue_priority)it->prio;
    info->attempts = it->attempts;
    info->result = it->result;
    info->failed = it->state == TS__QS_FAILED;
    info->enqueued_ms = it->enq_ms;
}

/* ---- rings ----------------------------------------------------------------
   Sequence-ordered circular arrays of slots. Removal from the middle shifts
   (rings are small and removals are per batch or per app decision). */

TS__PRIVATE void ts__qring_push(ts__qring *r, uint32_t s)
{
    TS__QRING_AT(r, r->count) = s;
    r->count++;
}

TS__PRIVATE void ts__qring_insert_sorted(ts__qring *r, const ts__qitem *items, uint32_t s)
{
    uint32_t i = r->count;
    while (i > 0 && items[TS__QRING_AT(r, i - 1)].seq > items[s].seq) {
        TS__QRING_AT(r, i) = TS__QRING_AT(r, i - 1);
        i--;
    }
    TS__QRING_AT(r, i) = s;
    r->count++;
}

TS__PRIVATE void ts__qring_remove(ts__qring *r, uint32_t s)
{
    uint32_t i, j;
    for (i = 0; i < r->count; i++)
        if (TS__QRING_AT(r, i) == s) break;
    if (i == r->count) return;
    for (j = i; j + 1 < r->count; j++) TS__QRING_AT(r, j) = TS__QRING_AT(r, j + 1);
    r->count--;
}

/* Drops the slots of items released during a batch, keeping the order. */
TS__PRIVATE void ts__qring_compact(ts__qring *r, const ts__qitem *items)
{
    uint32_t i, j = 0;
    for (i = 0; i < r->count; i++) {
        uint32_t s = TS__QRING_AT(r, i);
        if (items[s].state != TS__QS_FREE) TS__QRING_AT(r, j++) = s;
    }
    r->count = j;
    if (!j) r->head = 0;
}

/* The three rings merged by sequence number: start with cur = {0,0,0};
   returns the next slot or TS__QNONE. The rings must not change meanwhile
   (an item's seq may, once it has been returned). */
TS__PRIVATE uint32_t ts__queue_merge_next(const ts_queue *q, uint32_t cur[3])
{
    int p, best = -1;
    for (p = 0; p < 3; p++) {
        if (cur[p] >= q->ring[p].count) continue;
        if (best < 0 || q->items[TS__QRING_AT(&q->ring[p], cur[p])].seq <
                            q->items[TS__QRING_AT(&q->ring[best], cur[best])].seq)
            best = p;
    }
    if (best < 0) return TS__QNONE;
    return TS__QRING_AT(&q->ring[best], cur[best]++);
}

/* ---- item lifetime ------------------------------------------------------- */

/* Frees an item's memory, fixes the path map (back to the older item of
   the path if one is still queued), returns the slot to the free list. The
   caller takes the slot out of its ring (or compacts later). */
TS__PRIVATE void ts__queue_release(ts_queue *q, uint32_t s)
{
    ts__qitem *it = &q->items[s];
    const ts_allocator *a = &q->env.alloc;
    if (ts__queue_find(q, it->path, it->path_len) == s) {
        if (ts__queue_live(q, it->prev))
            (void)ts__map_put(&q->map, it->path, it->path_len, it->prev.slot); /* key exists: no allocation */
        else
            (void)ts__map_del(&q->map, it->path, it->path_len);
    }
    ts__free(a, it->path, it->path_len + 1);
    ts__free(a, it->data, it->cap);
    ts__free(a, it->deps, (size_t)it->dep_cap * sizeof(ts__qdep));
    memset(it, 0, sizeof *it);
    it->dir = TS__QNONE;
    it->prev.slot = TS__QNONE;
    it->link = q->free_head;
    q->free_head = s;
}

TS__PRIVATE void ts__queue_failed_remove(ts_queue *q, uint32_t s)
{
    uint32_t i;
    for (i = 0; i < q->nfailed; i++) {
        if (q->failed[i] == s) {
            memmove(q->failed + i, q->failed + i + 1, (size_t)(q->nfailed - i - 1) * sizeof(uint32_t));
            q->nfailed--;
            return;
        }
    }
}

TS__PRIVATE void ts__queue_complete(ts_queue *q, uint32_t s)
{
    q->st.completed++;
    ts__queue_emit(q, TS_QUEUE_EV_COMPLETED, &q->items[s], TS_OK, 0);
    ts__queue_release(q, s);
}

TS__PRIVATE unsigned ts__queue_max_attempts(const ts_queue *q, unsigned prio)
{
    return q->cfg.max_attempts[prio];
}

/* One attempt of item s failed with r: back off, or fail for good. */
TS__PRIVATE void ts__queue_attempt_failed(ts_queue *q, ts__qbatch *b, uint32_t s, ts_result r)
{
    ts__qitem *it = &q->items[s];
    unsigned maxa = ts__queue_max_attempts(q, it->prio);
    it->result = r;
    if (it->attempts >= maxa) {
        (void)TS__FAIL(&q->env, r, "queue: %s of %s failed for good after %u attempts: %s",
                       it->op == TS_QUEUE_WRITE ? "write" : "delete", it->path, it->attempts,
                       ts_result_str(r));
        it->state = TS__QS_FAILED;
        q->failed[q->nfailed++] = s;
        q->st.failed++;
        if (b->first_fail == TS_OK) b->first_fail = r;
        ts__queue_emit(q, TS_QUEUE_EV_FAILED, it, r, 0);
    } else {
        unsigned shift = it->attempts - 1 < 16 ? it->attempts - 1 : 16;
        if (q->env.logger.log_fn) { /* a retry is a warning, not the object's last error */
            char msg[256];
            snprintf(msg, sizeof msg, "queue: %s of %.80s failed (attempt %u of %u), will retry: %s",
                     it->op == TS_QUEUE_WRITE ? "write" : "delete", it->path, it->attempts, maxa,
                     ts_result_str(r));
            ts__log(&q->env, TS_LOG_WARN, r, __LINE__, msg);
        }
        it->state = TS__QS_PENDING;
        it->next_ms = q->now_ms + ((uint64_t)q->cfg.backoff_ms << shift);
        q->st.retries++;
        ts__queue_emit(q, TS_QUEUE_EV_RETRY, it, r, 0);
    }
}

/* ---- directories of the current batch ------------------------------------ */

TS__PRIVATE size_t ts__queue_dir_len(const char *path, size_t n)
{
    while (n > 0 && path[n - 1] != '/') n--;
    return n ? n - 1 : 0;
}

/* Syncs directory entry k, then completes (or fails) every item written
   into it since its last sync. */
TS__PRIVATE void ts__queue_sync_dir(ts_queue *q, ts__qbatch *b, uint32_t k)
{
    ts__qdir *d = &q->dirs[k];
    char *p = q->items[d->rep].path;
    char save = p[d->len];
    uint32_t s = d->head;
    ts_result r;
    /* the directory's name is a prefix of the item's own path: cut it there
       for the call instead of copying it */
    p[d->len] = 0;
    r = q->io.sync_dir_fn(q->io.user, p);
    p[d->len] = save;
    q->st.dir_syncs++;
    d->rep = TS__QNONE;
    d->head = TS__QNONE;
    while (s != TS__QNONE) {
        uint32_t next = q->items[s].link;
        q->items[s].link = TS__QNONE;
        q->items[s].dir = TS__QNONE;
        /* a directory that is gone holds no entry a delete wanted gone */
        if (r == TS_OK || (r == TS_E_NOTFOUND && q->items[s].op == TS_QUEUE_DELETE)) ts__queue_complete(q, s);
        else ts__queue_attempt_failed(q, b, s, r);
        s = next;
    }
}

TS__PRIVATE void ts__queue_dir_add(ts_queue *q, uint32_t s)
{
    ts__qitem *it = &q->items[s];
    size_t dl = ts__queue_dir_len(it->path, it->path_len);
    uint64_t h = ts__hash_bytes(it->path, dl);
    uint32_t k, hole = TS__QNONE;
    for (k = 0; k < q->ndirs; k++) {
        const ts__qdir *d = &q->dirs[k];
        if (d->rep == TS__QNONE) {
            if (hole == TS__QNONE) hole = k;
            continue;
        }
        if (d->hash == h && d->len == dl && memcmp(q->items[d->rep].path, it->path, dl) == 0) break;
    }
    if (k == q->ndirs) {
        /* entries in use <= items written and unsynced <= the slab, so
           ndirs never passes dirs_cap */
        if (hole != TS__QNONE) k = hole;
        else k = q->ndirs++;
        q->dirs[k].hash = h;
        q->dirs[k].len = dl;
        q->dirs[k].head = TS__QNONE;
    }
    q->dirs[k].rep = s;
    it->link = q->dirs[k].head;
    q->dirs[k].head = s;
    it->dir = k;
    it->state = TS__QS_WRITTEN;
}

/* ---- one batch ------------------------------------------------------------ */

TS__PRIVATE int ts__queue_budget_spent(ts_queue *q, ts__qbatch *b)
{
    if (b->mode == TS__QB_FLUSH) return 0;
    if (!b->exhausted) {
        uint64_t used = q->clock_fn ? ts__queue_clock(q) - b->t0 : b->charged_us;
        if (used >= b->limit_us) b->exhausted = 1;
    }
    return b->exhausted;
}

/* What the item's own schedule says: written now whatever the budget
   (MUST), now if the budget allows (MAY), or not yet. */
TS__PRIVATE unsigned char ts__queue_due(const ts_queue *q, const ts__qbatch *b, const ts__qitem *it)
{
    if (b->mode == TS__QB_FLUSH) return TS__QF_MUST;
    if (it->attempts && it->next_ms > q->now_ms) return TS__QF_NONE;
    switch (it->prio) {
    case TS_PRIO_CRITICAL: return TS__QF_MUST;
    case TS_PRIO_NORMAL:
        return (it->attempts || q->now_ms >= it->enq_ms + q->cfg.batch_window_ms) ? TS__QF_MAY : TS__QF_NONE;
    default: return b->mode == TS__QB_IDLE ? TS__QF_MAY : TS__QF_NONE;
    }
}

/* Raises s to flag f and pulls its pending dependencies up with it
   (iteratively: each push raises a flag, so at most 2 pushes per item and
   the stack, 2 per slot, cannot overflow). */
TS__PRIVATE void ts__queue_raise(ts_queue *q, uint32_t s, unsigned char f)
{
    uint32_t sp = 0;
    ts__qflag_set(q, &q->items[s], f);
    q->stack[sp++] = s;
    while (sp) {
        ts__qitem *x = &q->items[q->stack[--sp]];
        unsigned char xf = ts__qflag(q, x);
        uint32_t i;
        for (i = 0; i < x->ndeps; i++) {
            ts__qitem *d = ts__queue_live(q, x->deps[i]);
            if (d && d->state == TS__QS_PENDING && ts__qflag(q, d) < xf) {
                ts__qflag_set(q, d, xf);
                q->stack[sp++] = x->deps[i].slot;
            }
        }
    }
}

/* Flags what this batch may write; returns the highest flag given. */
TS__PRIVATE unsigned char ts__queue_mark(ts_queue *q, const ts__qbatch *b)
{
    int p;
    uint32_t i;
    unsigned char any = TS__QF_NONE;
    q->epoch++;
    for (p = 0; p < 3; p++) {
        for (i = 0; i < q->ring[p].count; i++) {
            uint32_t s = TS__QRING_AT(&q->ring[p], i);
            ts__qitem *it = &q->items[s];
            unsigned char f;
            if (it->state != TS__QS_PENDING) continue;
            f = ts__queue_due(q, b, it);
            if (f > ts__qflag(q, it)) ts__queue_raise(q, s, f);
            if (f > any) any = f;
        }
    }
    return any;
}

/* 1 when every dependency of it is durable. A dependency written earlier in
   this batch gets its directory synced now, which completes it. */
TS__PRIVATE int ts__queue_deps_ready(ts_queue *q, ts__qbatch *b, const ts__qitem *it)
{
    uint32_t i;
    for (i = 0; i < it->ndeps; i++) {
        const ts__qitem *d = ts__queue_live(q, it->deps[i]);
        if (d && d->state != TS__QS_WRITTEN) return 0;
    }
    for (i = 0; i < it->ndeps; i++) {
        const ts__qitem *d = ts__queue_live(q, it->deps[i]);
        if (d && d->state == TS__QS_WRITTEN) ts__queue_sync_dir(q, b, d->dir);
    }
    for (i = 0; i < it->ndeps; i++)
        if (ts__queue_live(q, it->deps[i])) return 0; /* a directory sync failed */
    return 1;
}

TS__PRIVATE void ts__queue_attempt(ts_queue *q, ts__qbatch *b, uint32_t s)
{
    ts__qitem *it = &q->items[s];
    ts_result r;
    it->attempts++;
    b->attempts++;
    ts__queue_emit(q, TS_QUEUE_EV_PROCESSING, it, TS_OK, 0);
    if (it->op == TS_QUEUE_WRITE) {
        r = q->io.write_file_atomic_fn
                ? q->io.write_file_atomic_fn(q->io.user, it->path, it->data ? (const void *)it->data : (const void *)"",
                                             it->len, q->dirsync ? (unsigned)TS_WRITE_DEFER_DIRSYNC : 0u)
                : TS_E_NOTIMPL;
        if (r == TS_OK) { q->st.file_writes++; q->st.bytes_written += it->len; }
    } else {
        r = q->io.remove_fn ? q->io.remove_fn(q->io.user, it->path) : TS_E_NOTIMPL;
        /* absent is what we wanted, but the directory is still synced: an
           earlier attempt (or anyone) may have removed the entry only from
           the live view, before a directory sync that failed */
        if (r == TS_E_NOTFOUND) r = TS_OK;
        else if (r == TS_OK) q->st.removes++;
    }
    b->ops++;
    if (!q->clock_fn) b->charged_us += q->cfg.nominal_write_us;
    if (r != TS_OK) ts__queue_attempt_failed(q, b, s, r);
    else if (q->dirsync) ts__queue_dir_add(q, s);
    else ts__queue_complete(q, s);
}

/* Walks the three rings merged by sequence number, attempting the items
   flagged `want`. */
TS__PRIVATE void ts__queue_pass(ts_queue *q, ts__qbatch *b, unsigned char want)
{
    uint32_t cur[3] = {0, 0, 0}, s;
    while ((s = ts__queue_merge_next(q, cur)) != TS__QNONE) {
        ts__qitem *it = &q->items[s];
        if (ts__qflag(q, it) != want || it->state != TS__QS_PENDING) continue;
        if (b->mode != TS__QB_FLUSH && it->attempts && it->next_ms > q->now_ms) continue;
        if (want == TS__QF_MAY && ts__queue_budget_spent(q, b)) break;
        if (!ts__queue_deps_ready(q, b, it)) continue;
        ts__queue_attempt(q, b, s);
    }
}

TS__PRIVATE void ts__queue_batch(ts_queue *q, ts__qbatch *b)
{
    uint32_t k;
    int p;
    q->busy = 1;
    b->t0 = ts__queue_clock(q);
    if (ts__queue_mark(q, b) == TS__QF_NONE) { /* the common 60 Hz case */
        q->busy = 0;
        return;
    }
    ts__queue_pass(q, b, TS__QF_MUST);
    ts__queue_pass(q, b, TS__QF_MAY);
    for (k = 0; k < q->ndirs; k++)
        if (q->dirs[k].rep != TS__QNONE) ts__queue_sync_dir(q, b, k);
    q->ndirs = 0;
    for (p = 0; p < 3; p++) ts__qring_compact(&q->ring[p], q->items);
    if (b->ops) {
        q->st.batches++;
        if (b->ops > q->st.largest_batch) q->st.largest_batch = b->ops;
        q->st.write_time_us += q->clock_fn ? ts__queue_clock(q) - b->t0 : b->charged_us;
    }
    q->busy = 0;
}

TS__PRIVATE void ts__queue_batch_init(ts__qbatch *b, int mode, uint64_t limit_us)
{
    memset(b, 0, sizeof *b);
    b->mode = mode;
    b->limit_us = limit_us;
}

TS__PRIVATE size_t ts__queue_pending(const ts_queue *q)
{
    return (size_t)q->ring[0].count + q->ring[1].count + q->ring[2].count - q->nfailed;
}

/* Batches until nothing more can be attempted: every item is durable,
   failed for good, or waiting on one that failed. */
TS__PRIVATE ts_result ts__queue_flush_all(ts_queue *q)
{
    ts_result first = TS_OK;
    for (;;) {
        ts__qbatch b;
        ts__queue_batch_init(&b, TS__QB_FLUSH, 0);
        if (!ts__queue_pending(q)) break;
        ts__queue_batch(q, &b);
        if (first == TS_OK) first = b.first_fail;
        if (!b.attempts) break;
    }
    if (!ts_queue_count(q)) return TS_OK;
    if (!q->nfailed) /* cannot happen: only a failed item stops a flush */
        return TS__FAIL(&q->env, TS_E_STATE, "queue: flush left %lu item(s) behind",
                        (unsigned long)ts_queue_count(q));
    if (first == TS_OK) first = q->items[q->failed[0]].result;
    return TS__FAIL(&q->env, first, "queue: flush incomplete: %lu item(s) not durable, %lu failed (first: %.160s)",
                    (unsigned long)ts_queue_count(q), (unsigned long)q->nfailed, q->items[q->failed[0]].path);
}

/* ---- capacity ------------------------------------------------------------- */

/* Makes every per-slot array hold `total` slots and the path map hold that
   many keys without growing. Each array keeps its own capacity, so a
   failure half-way leaves a consistent (merely roomier) queue. */
TS__PRIVATE ts_result ts__queue_grow_slots(ts_queue *q, uint32_t total)
{
    const ts_allocator *a = &q->env.alloc;
    if (total > 0x3FFFFFFFu) return TS_E_NOMEM;
    if (q->failed_cap < total) {
        uint32_t *p = (uint32_t *)ts__realloc(a, q->failed, (size_t)q->failed_cap * sizeof(uint32_t),
                                              (size_t)total * sizeof(uint32_t));
        if (!p) return TS_E_NOMEM;
        q->failed = p; q->failed_cap = total;
    }
    if (q->stack_cap < 2 * total) {
        uint32_t *p = (uint32_t *)ts__realloc(a, q->stack, (size_t)q->stack_cap * sizeof(uint32_t),
                                              (size_t)total * 2 * sizeof(uint32_t));
        if (!p) return TS_E_NOMEM;
        q->stack = p; q->stack_cap = 2 * total;
    }
    if (q->dirs_cap < total) {
        ts__qdir *p = (ts__qdir *)ts__realloc(a, q->dirs, (size_t)q->dirs_cap * sizeof(ts__qdir),
                                              (size_t)total * sizeof(ts__qdir));
        if (!p) return TS_E_NOMEM;
        q->dirs = p; q->dirs_cap = total;
    }
    while (q->map.cap * 3 < ((size_t)total + 1) * 4) {
        ts_result r = ts__map_grow(&q->map);
        if (r) return r;
    }
    if (q->items_cap < total) {
        uint32_t s;
        ts__qitem *p = (ts__qitem *)ts__realloc(a, q->items, (size_t)q->items_cap * sizeof(ts__qitem),
                                                (size_t)total * sizeof(ts__qitem));
        if (!p) return TS_E_NOMEM;
        q->items = p;
        for (s = total; s-- > q->items_cap;) {
            memset(&p[s], 0, sizeof p[s]);
            p[s].dir = TS__QNONE;
            p[s].prev.slot = TS__QNONE;
            p[s].link = q->free_head;
            q->free_head = s;
        }
        q->items_cap = total;
    }
    return TS_OK;
}

TS__PRIVATE ts_result ts__queue_reserve(ts_queue *q, unsigned prio, uint32_t capacity)
{
    ts__qring *r = &q->ring[prio];
    uint32_t *ns, i, total;
    ts_result res;
    if (capacity <= r->cap) return TS_OK;
    total = q->ring[0].cap + q->ring[1].cap + q->ring[2].cap;
    if (capacity - r->cap > 0x3FFFFFFFu - total) return TS_E_NOMEM;
    res = ts__queue_grow_slots(q, total + (capacity - r->cap));
    if (res) return res;
    ns = (uint32_t *)ts__alloc(&q->env.alloc, (size_t)capacity * sizeof(uint32_t));
    if (!ns) return TS_E_NOMEM;
    for (i = 0; i < r->count; i++) ns[i] = TS__QRING_AT(r, i);
    ts__free(&q->env.alloc, r->slot, (size_t)r->cap * sizeof(uint32_t));
    r->slot = ns;
    r->cap = capacity;
    r->head = 0;
    return TS_OK;
}

/* ---- open / close --------------------------------------------------------- */

TASKSTORE_DEF ts_result ts_queue_open(const ts_io *io, const ts_queue_config *cfg, ts_queue **out)
{
    ts_queue_config def = ts_queue_config_default();
    ts_queue *q;
    int p;
    if (out) *out = NULL;
    if (!io || !out) return TS_E_INVALID;
    if (cfg) {
        ts_queue_config c = *cfg;
        for (p = 0; p < 3; p++) {
            if (!c.capacity[p]) c.capacity[p] = def.capacity[p];
            if (!c.max_attempts[p]) c.max_attempts[p] = def.max_attempts[p];
        }
        if (!c.batch_window_ms) c.batch_window_ms = def.batch_window_ms;
        if (!c.backoff_ms) c.backoff_ms = def.backoff_ms;
        if (!c.nominal_write_us) c.nominal_write_us = def.nominal_write_us;
        def = c;
    }
    q = (ts_queue *)ts__calloc(&def.allocator, 1, sizeof *q);
    if (!q) return TS_E_NOMEM;
    ts__env_init(&q->env, &def.allocator, &def.logger);
    q->io = *io;
    q->cfg = def;
    q->clock_fn = def.clock_us_fn;
#ifdef TS__QUEUE_HAVE_CLOCK
    if (!q->clock_fn) q->clock_fn = ts__queue_clock_us;
#endif
    q->dirsync = io->sync_dir_fn && !(io->caps & TS_IO_CAP_NO_DIRSYNC);
    q->next_id = 1;
    q->next_seq = 1;
    q->free_head = TS__QNONE;
    q->next_job_id = 1;
    ts__map_init(&q->map, &q->env.alloc);
    for (p = 0; p < 3; p++) {
        if (ts__queue_reserve(q, (unsigned)p, def.capacity[p]) != TS_OK) {
            ts_queue_close(q);
            return TS_E_NOMEM;
        }
    }
    *out = q;
    return TS_OK;
}

TASKSTORE_DEF void ts_queue_close(ts_queue *q)
{
    const ts_allocator *a;
    uint32_t s, j;
    int p;
    if (!q) return;
    a = &q->env.alloc;
    for (s = 0; s < q->items_cap; s++)
        if (q->items[s].id) ts__queue_release(q, s);
    for (p = 0; p < 3; p++) ts__free(a, q->ring[p].slot, (size_t)q->ring[p].cap * sizeof(uint32_t));
    for (j = 0; j < q->njobs; j++) ts__free(a, q->jobs[j].name, q->jobs[j].name_len + 1);
    ts__free(a, q->jobs, (size_t)q->jobs_cap * sizeof(ts__qjob));
    ts__free(a, q->items, (size_t)q->items_cap * sizeof(ts__qitem));
    ts__free(a, q->failed, (size_t)q->failed_cap * sizeof(uint32_t));
    ts__free(a, q->stack, (size_t)q->stack_cap * sizeof(uint32_t));
    ts__free(a, q->dirs, (size_t)q->dirs_cap * sizeof(ts__qdir));
    ts__map_free(&q->map);
    {
        ts_allocator keep = q->env.alloc;
        ts__free(&keep, q, sizeof *q);
    }
}

TASKSTORE_DEF ts_result ts_queue_last_error(const ts_queue *q, ts_error_info *out)
{
    return ts__env_last_error(q ? &q->env : NULL, out);
}

/* ---- enqueue -------------------------------------------------------------- */

/* The items the new write must follow: the newest queued item of each
   after-path (none if the path has nothing queued: already durable). */
TS__PRIVATE uint32_t ts__queue_resolve(const ts_queue *q, const ts_queue_req *req, size_t plen,
                                       ts__qdep *deps)
{
    uint32_t n = 0, j;
    size_t i;
    for (i = 0; i < req->after_count; i++) {
        const char *a = req->after[i];
        size_t alen = strlen(a);
        uint32_t s;
        if (alen == plen && memcmp(a, req->path, plen) == 0) continue;
        s = ts__queue_find(q, a, alen);
        if (s == TS__QNONE) continue;
        for (j = 0; j < n; j++)
            if (deps[j].slot == s) break;
        if (j < n) continue;
        deps[n].slot = s;
        deps[n].id = q->items[s].id;
        n++;
    }
    return n;
}

/* The bytes the queue will own: taken or copied. */
TS__PRIVATE ts_result ts__queue_take_bytes(ts_queue *q, const ts_queue_req *req,
                                           unsigned char **data, size_t *cap)
{
    *data = NULL;
    *cap = 0;
    if (req->op != TS_QUEUE_WRITE) return TS_OK;
    if (req->owned_data) {
        *data = (unsigned char *)req->owned_data;
        *cap = req->owned_cap;
        return TS_OK;
    }
    if (!req->len) return TS_OK;
    *data = (unsigned char *)ts__alloc(&q->env.alloc, req->len);
    if (!*data) return TS_E_NOMEM;
    memcpy(*data, req->data, req->len);
    *cap = req->len;
    return TS_OK;
}

TS__PRIVATE void ts__queue_drop_bytes(ts_queue *q, const ts_queue_req *req, unsigned char *data, size_t cap)
{
    if (!req->owned_data) ts__free(&q->env.alloc, data, cap);
}

/* Flags e and every item that waits on it, directly or not (with the
   batch marks: no batch runs during an enqueue). One pass in sequence order is
   enough: a dependent always comes after what it waits on. */
TS__PRIVATE void ts__queue_flag_dependents(ts_queue *q, uint32_t e)
{
    uint32_t cur[3] = {0, 0, 0}, s, i;
    q->epoch++;
    ts__qflag_set(q, &q->items[e], 1);
    while ((s = ts__queue_merge_next(q, cur)) != TS__QNONE) {
        ts__qitem *it = &q->items[s];
        if (it->seq <= q->items[e].seq) continue;
        for (i = 0; i < it->ndeps; i++) {
            const ts__qitem *d = ts__queue_live(q, it->deps[i]);
            if (d && ts__qflag(q, d)) { ts__qflag_set(q, it, 1); break; }
        }
    }
}

/* Moves the flagged items (a waiting item and its dependents) behind
   everything else, keeping their order: new sequence numbers, and each ring
   stably partitioned. Every dependency still points backwards: nothing
   outside the set waits on a member of it. */
TS__PRIVATE void ts__queue_move_behind(ts_queue *q)
{
    uint32_t cur[3] = {0, 0, 0}, s, i, j, n;
    int p;
    while ((s = ts__queue_merge_next(q, cur)) != TS__QNONE)
        if (ts__qflag(q, &q->items[s])) q->items[s].seq = q->next_seq++;
    for (p = 0; p < 3; p++) {
        ts__qring *r = &q->ring[p];
        for (i = 0, j = 0, n = 0; i < r->count; i++) {
            s = TS__QRING_AT(r, i);
            if (ts__qflag(q, &q->items[s])) q->stack[n++] = s;
            else TS__QRING_AT(r, j++) = s;
        }
        for (i = 0; i < n; i++) TS__QRING_AT(r, j++) = q->stack[i];
    }
}

/* Merges req into the waiting item e. Either every new dependency is
   older than e, or `move` is set and e with its dependents (flagged) go
   behind them first, so the union stays acyclic. */
TS__PRIVATE ts_result ts__queue_coalesce(ts_queue *q, uint32_t e, const ts_queue_req *req,
                                         const ts__qdep *deps, uint32_t ndeps, int move,
                                         uint64_t *id_out)
{
    ts__qitem *it = &q->items[e];
    unsigned char *data;
    size_t cap;
    uint32_t i, j, keep = 0;
    ts_result r = ts__queue_take_bytes(q, req, &data, &cap);
    if (r) return TS__FAIL(&q->env, r, "queue: no memory for %lu bytes", (unsigned long)req->len);
    /* the union of dependencies, minus those already durable */
    for (i = 0; i < it->ndeps; i++)
        if (ts__queue_live(q, it->deps[i])) it->deps[keep++] = it->deps[i];
    it->ndeps = keep;
    if (it->ndeps + ndeps > it->dep_cap) {
        uint32_t ncap = it->ndeps + ndeps;
        ts__qdep *nd = (ts__qdep *)ts__realloc(&q->env.alloc, it->deps, (size_t)it->dep_cap * sizeof(ts__qdep),
                                               (size_t)ncap * sizeof(ts__qdep));
        if (!nd) {
            ts__queue_drop_bytes(q, req, data, cap);
            return TS__FAIL(&q->env, TS_E_NOMEM, "queue: no memory for dependencies of %s", it->path);
        }
        it->deps = nd;
        it->dep_cap = ncap;
    }
    for (i = 0; i < ndeps; i++) {
        for (j = 0; j < it->ndeps; j++)
            if (it->deps[j].slot == deps[i].slot && it->deps[j].id == deps[i].id) break;
        if (j == it->ndeps) it->deps[it->ndeps++] = deps[i];
    }
    if (move) ts__queue_move_behind(q);
    ts__free(&q->env.alloc, it->data, it->cap);
    it->data = data;
    it->cap = cap;
    it->len = req->op == TS_QUEUE_WRITE ? req->len : 0;
    it->op = (unsigned char)req->op;
    if (it->state == TS__QS_FAILED) {
        /* newer bytes supersede the failed ones: a fresh write */
        ts__queue_failed_remove(q, e);
        it->state = TS__QS_PENDING;
        it->attempts = 0;
        it->next_ms = 0;
        it->result = TS_OK;
    }
    if ((unsigned)req->prio < it->prio) {
        ts__qring_remove(&q->ring[it->prio], e);
        it->prio = (unsigned char)req->prio;
        ts__qring_insert_sorted(&q->ring[it->prio], q->items, e);
    }
    q->st.enqueued++;
    q->st.coalesced++;
    if (id_out) *id_out = it->id;
    ts__queue_emit(q, TS_QUEUE_EV_ENQUEUED, it, TS_OK, 1);
    return TS_OK;
}

/* A new item for req; e (or TS__QNONE) is a waiting item of the same path
   that it must follow. */
TS__PRIVATE ts_result ts__queue_add(ts_queue *q, const ts_queue_req *req, size_t plen, uint32_t e,
                                    const ts__qdep *deps, uint32_t ndeps, uint64_t *id_out)
{
    const ts_allocator *a = &q->env.alloc;
    uint32_t s = q->free_head, nd = ndeps + (e != TS__QNONE ? 1u : 0u);
    ts__qitem *it;
    unsigned char *data = NULL;
    size_t cap = 0;
    char *path;
    ts__qdep *dv = NULL;
    ts_result r;
    TASKSTORE_ASSERT(s != TS__QNONE); /* a free ring slot implies a free item slot */
    path = ts__strndup(a, req->path, plen);
    if (!path) goto nomem;
    if (ts__queue_take_bytes(q, req, &data, &cap) != TS_OK) goto nomem;
    if (nd) {
        dv = (ts__qdep *)ts__alloc(a, (size_t)nd * sizeof(ts__qdep));
        if (!dv) goto nomem;
        if (ndeps) memcpy(dv, deps, (size_t)ndeps * sizeof(ts__qdep));
        if (e != TS__QNONE) {
            dv[ndeps].slot = e;
            dv[ndeps].id = q->items[e].id;
        }
    }
    r = ts__map_put(&q->map, path, plen, s);
    if (r) goto nomem;
    it = &q->items[s];
    q->free_head = it->link;
    memset(it, 0, sizeof *it);
    it->id = q->next_id++;
    it->seq = q->next_seq++;
    it->enq_ms = q->now_ms;
    it->path = path;
    it->path_len = plen;
    it->data = data;
    it->cap = cap;
    it->len = req->op == TS_QUEUE_WRITE ? req->len : 0;
    it->deps = dv;
    it->ndeps = it->dep_cap = nd;
    it->prev.slot = e;
    it->prev.id = e != TS__QNONE ? q->items[e].id : 0;
    it->link = TS__QNONE;
    it->dir = TS__QNONE;
    it->op = (unsigned char)req->op;
    it->prio = (unsigned char)req->prio;
    it->state = TS__QS_PENDING;
    ts__qring_push(&q->ring[it->prio], s); /* the largest seq: the ring stays sorted */
    q->st.enqueued++;
    if (id_out) *id_out = it->id;
    ts__queue_emit(q, TS_QUEUE_EV_ENQUEUED, it, TS_OK, 0);
    return TS_OK;
nomem:
    ts__free(a, path, plen + 1);
    if (data) ts__queue_drop_bytes(q, req, data, cap);
    ts__free(a, dv, (size_t)nd * sizeof(ts__qdep));
    return TS__FAIL(&q->env, TS_E_NOMEM, "queue: no memory to queue %s", req->path);
}

TASKSTORE_DEF ts_result ts_queue_push_ex(ts_queue *q, const ts_queue_req *req, uint64_t *id_out)
{
    ts__qdep deps[TS_QUEUE_MAX_AFTER];
    uint32_t ndeps = 0, e = TS__QNONE;
    size_t plen, i;
    int tries, inplace = 0, move = 0;
    if (id_out) *id_out = 0;
    if (!q || !req) return TS_E_INVALID;
    if (q->busy) return TS__FAIL(&q->env, TS_E_STATE, "queue: enqueue from inside a queue callback");
    if ((req->op != TS_QUEUE_WRITE && req->op != TS_QUEUE_DELETE) ||
        (unsigned)req->prio > TS_PRIO_LOW || !req->path)
        return TS__FAIL(&q->env, TS_E_INVALID, "queue: bad op, priority or path");
    plen = strlen(req->path);
    if (!ts__valid_rel_path(req->path, plen))
        return TS__FAIL(&q->env, TS_E_INVALID, "queue: invalid path '%.200s'", req->path);
    if (req->op == TS_QUEUE_WRITE) {
        if (req->owned_data ? req->owned_cap < req->len : (req->len && !req->data))
            return TS__FAIL(&q->env, TS_E_INVALID, "queue: no bytes for %s", req->path);
    } else if (req->owned_data) {
        return TS__FAIL(&q->env, TS_E_INVALID, "queue: a delete takes no bytes (%s)", req->path);
    }
    if (req->after_count > TS_QUEUE_MAX_AFTER || (req->after_count && !req->after))
        return TS__FAIL(&q->env, TS_E_INVALID, "queue: bad after-list for %s", req->path);
    for (i = 0; i < req->after_count; i++)
        if (!req->after[i] || !ts__valid_rel_path(req->after[i], strlen(req->after[i])))
            return TS__FAIL(&q->env, TS_E_INVALID, "queue: invalid after-path for %s", req->path);
    for (tries = 0;; tries++) {
        uint32_t need = TS__QNONE;
        e = ts__queue_find(q, req->path, plen);
        ndeps = ts__queue_resolve(q, req, plen, deps);
        inplace = e != TS__QNONE;
        move = 0;
        for (i = 0; inplace && i < ndeps; i++)
            if (q->items[deps[i].slot].seq > q->items[e].seq) move = 1;
        if (move) {
            /* younger dependencies: e moves behind them, unless one of them
               waits on e (a true cycle: the old bytes must go before it and
               the new ones after, so a second item is queued) */
            ts__queue_flag_dependents(q, e);
            for (i = 0; i < ndeps; i++)
                if (ts__qflag(q, &q->items[deps[i].slot])) inplace = move = 0;
        }
        if (!inplace) need = (uint32_t)req->prio;
        else if ((unsigned)req->prio < q->items[e].prio) need = (uint32_t)req->prio;
        if (need == TS__QNONE || q->ring[need].count < q->ring[need].cap) break;
        if (q->cfg.busy_error || tries)
            return TS__FAIL(&q->env, TS_E_BUSY, "queue: ring %u full (%u items)", (unsigned)need,
                            (unsigned)q->ring[need].cap);
        /* back-pressure: write everything now, then look again */
        q->st.sync_flushes++;
        (void)ts__queue_flush_all(q);
    }
    if (inplace) return ts__queue_coalesce(q, e, req, deps, ndeps, move, id_out);
    return ts__queue_add(q, req, plen, e, deps, ndeps, id_out);
}

TASKSTORE_DEF ts_result ts_queue_push(ts_queue *q, const char *path, const void *data, size_t len,
                                      ts_queue_priority prio, const char *after, uint64_t *id_out)
{
    ts_queue_req req;
    memset(&req, 0, sizeof req);
    req.op = TS_QUEUE_WRITE;
    req.path = path;
    req.data = data;
    req.len = len;
    req.prio = prio;
    req.after = after ? &after : NULL;
    req.after_count = after ? 1 : 0;
    return ts_queue_push_ex(q, &req, id_out);
}

TASKSTORE_DEF ts_result ts_queue_push_owned(ts_queue *q, const char *path, void *data, size_t len,
                                            size_t cap, ts_queue_priority prio, const char *after,
                                            uint64_t *id_out)
{
    ts_queue_req req;
    memset(&req, 0, sizeof req);
    req.op = TS_QUEUE_WRITE;
    req.path = path;
    req.owned_data = data;
    req.owned_cap = cap;
    req.len = len;
    req.prio = prio;
    req.after = after ? &after : NULL;
    req.after_count = after ? 1 : 0;
    return ts_queue_push_ex(q, &req, id_out);
}

TASKSTORE_DEF ts_result ts_queue_delete(ts_queue *q, const char *path, ts_queue_priority prio,
                                        const char *after, uint64_t *id_out)
{
    ts_queue_req req;
    memset(&req, 0, sizeof req);
    req.op = TS_QUEUE_DELETE;
    req.path = path;
    req.prio = prio;
    req.after = after ? &after : NULL;
    req.after_count = after ? 1 : 0;
    return ts_queue_push_ex(q, &req, id_out);
}

/* ---- the overlay ----------------------------------------------------------- */

TASKSTORE_DEF ts_result ts_queue_lookup(const ts_queue *q, const char *path, const void **data, size_t *len)
{
    uint32_t s;
    const ts__qitem *it;
    if (data) *data = NULL;
    if (len) *len = 0;
    if (!q || !path) return TS_E_INVALID;
    s = ts__queue_find(q, path, strlen(path));
    if (s == TS__QNONE) return TS_DONE;
    it = &q->items[s];
    if (it->op == TS_QUEUE_DELETE) return TS_E_NOTFOUND;
    if (data) *data = it->data ? (const void *)it->data : (const void *)"";
    if (len) *len = it->len;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_queue_next(const ts_queue *q, size_t *pos, ts_queue_item_info *info)
{
    const ts__map_slot *ms;
    if (info) memset(info, 0, sizeof *info);
    if (!q || !pos || !info) return TS_E_INVALID;
    ms = ts__map_next(&q->map, pos);
    if (!ms) return TS_DONE;
    ts__queue_info(&q->items[(uint32_t)ms->value], info);
    return TS_OK;
}

/* ---- scheduling ------------------------------------------------------------ */

TASKSTORE_DEF void ts_queue_set_now(ts_queue *q, uint64_t now_ms)
{
    if (q && now_ms > q->now_ms) q->now_ms = now_ms;
}

TASKSTORE_DEF ts_result ts_queue_tick(ts_queue *q, uint64_t now_ms, uint64_t budget_us)
{
    ts__qbatch b;
    if (!q) return TS_E_INVALID;
    if (q->busy) return TS__FAIL(&q->env, TS_E_STATE, "queue: tick from inside a queue callback");
    ts_queue_set_now(q, now_ms);
    ts__queue_batch_init(&b, TS__QB_TICK, budget_us);
    if (ts__queue_pending(q)) ts__queue_batch(q, &b);
    return b.first_fail;
}

TASKSTORE_DEF ts_result ts_queue_idle(ts_queue *q, uint64_t now_ms, uint64_t budget_us)
{
    ts__qbatch b;
    ts_result first;
    uint64_t left, start;
    uint32_t n, i, j, w;
    int all_done = 1;
    if (!q) return TS_E_INVALID;
    if (q->busy || q->in_jobs) return TS__FAIL(&q->env, TS_E_STATE, "queue: idle from inside a queue callback");
    ts_queue_set_now(q, now_ms);
    ts__queue_batch_init(&b, TS__QB_IDLE, budget_us);
    start = ts__queue_clock(q);
    if (ts__queue_pending(q)) ts__queue_batch(q, &b);
    first = b.first_fail;
    {
        uint64_t used = q->clock_fn ? ts__queue_clock(q) - start : b.charged_us;
        left = used < budget_us ? budget_us - used : 0;
    }
    /* idle jobs: round robin from a rotating start, each given an equal
       share of what is left, re-divided as jobs finish early */
    n = q->njobs;
    if (n) {
        uint32_t first_job = q->job_rr % n;
        q->job_rr = first_job + 1;
        q->in_jobs = 1;
        for (i = 0; i < n; i++) {
            uint64_t slice = left / (n - i), t, spent;
            ts_result r;
            j = (first_job + i) % n;
            if (!q->jobs[j].fn) continue;
            t = ts__queue_clock(q);
            r = q->jobs[j].fn(q->jobs[j].user, q->now_ms, slice);
            spent = q->clock_fn ? ts__queue_clock(q) - t : slice;
            left -= spent < left ? spent : left;
            if (r == TS_OK) all_done = 0;
            else if (r != TS_DONE) {
                all_done = 0;
                if (first == TS_OK) first = r;
                (void)TS__FAIL(&q->env, r, "queue: idle job '%s' failed: %s", q->jobs[j].name,
                               ts_result_str(r));
            }
        }
        q->in_jobs = 0;
        for (i = 0, w = 0; i < q->njobs; i++) {
            if (q->jobs[i].fn) q->jobs[w++] = q->jobs[i];
            else ts__free(&q->env.alloc, q->jobs[i].name, q->jobs[i].name_len + 1);
        }
        q->njobs = w;
    }
    if (first != TS_OK) return first;
    return (all_done && !ts__queue_pending(q)) ? TS_DONE : TS_OK;
}

TASKSTORE_DEF ts_result ts_queue_flush(ts_queue *q)
{
    if (!q) return TS_E_INVALID;
    if (q->busy) return TS__FAIL(&q->env, TS_E_STATE, "queue: flush from inside a queue callback");
    return ts__queue_flush_all(q);
}

TASKSTORE_DEF ts_result ts_queue_shutdown(ts_queue *q)
{
    ts_result r;
    if (!q) return TS_E_INVALID;
    r = ts_queue_flush(q);
    if (r == TS_OK) ts_queue_close(q);
    return r;
}

TASKSTORE_DEF ts_result ts_queue_clear(ts_queue *q)
{
    int p;
    uint32_t i;
    if (!q) return TS_E_INVALID;
    if (q->busy) return TS__FAIL(&q->env, TS_E_STATE, "queue: clear from inside a queue callback");
    for (p = 0; p < 3; p++) {
        for (i = 0; i < q->ring[p].count; i++) ts__queue_release(q, TS__QRING_AT(&q->ring[p], i));
        q->ring[p].count = 0;
        q->ring[p].head = 0;
    }
    q->nfailed = 0;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_queue_reserve(ts_queue *q, ts_queue_priority prio, uint32_t capacity)
{
    ts_result r;
    if (!q || (unsigned)prio > TS_PRIO_LOW) return TS_E_INVALID;
    if (q->busy) return TS__FAIL(&q->env, TS_E_STATE, "queue: reserve from inside a queue callback");
    r = ts__queue_reserve(q, (unsigned)prio, capacity);
    if (r) return TS__FAIL(&q->env, r, "queue: cannot grow ring %u to %u items", (unsigned)prio, capacity);
    return TS_OK;
}

TASKSTORE_DEF size_t ts_queue_count(const ts_queue *q)
{
    if (!q) return 0;
    return (size_t)q->ring[0].count + q->ring[1].count + q->ring[2].count;
}

TASKSTORE_DEF void ts_queue_get_stats(const ts_queue *q, ts_queue_stats *out)
{
    uint32_t i;
    int p;
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!q) return;
    *out = q->st;
    for (p = 0; p < 3; p++) out->pending[p] = q->ring[p].count;
    for (i = 0; i < q->nfailed; i++) out->pending[q->items[q->failed[i]].prio]--;
    out->failed_items = q->nfailed;
}

/* ---- the failed list -------------------------------------------------------- */

TASKSTORE_DEF size_t ts_queue_failed_count(const ts_queue *q)
{
    return q ? q->nfailed : 0;
}

TASKSTORE_DEF ts_result ts_queue_failed_get(const ts_queue *q, size_t index, ts_queue_item_info *info)
{
    if (info) memset(info, 0, sizeof *info);
    if (!q || !info) return TS_E_INVALID;
    if (index >= q->nfailed) return TS_E_RANGE;
    ts__queue_info(&q->items[q->failed[index]], info);
    return TS_OK;
}

TS__PRIVATE uint32_t ts__queue_failed_find(const ts_queue *q, uint64_t id)
{
    uint32_t i;
    for (i = 0; i < q->nfailed; i++)
        if (q->items[q->failed[i]].id == id) return q->failed[i];
    return TS__QNONE;
}

TASKSTORE_DEF ts_result ts_queue_failed_retry(ts_queue *q, uint64_t id)
{
    uint32_t s;
    ts__qitem *it;
    if (!q) return TS_E_INVALID;
    if (q->busy) return TS__FAIL(&q->env, TS_E_STATE, "queue: retry from inside a queue callback");
    s = ts__queue_failed_find(q, id);
    if (s == TS__QNONE) return TS_E_NOTFOUND;
    ts__queue_failed_remove(q, s);
    it = &q->items[s];
    it->state = TS__QS_PENDING;
    it->attempts = 0;
    it->next_ms = 0;
    it->result = TS_OK;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_queue_failed_drop(ts_queue *q, uint64_t id)
{
    uint32_t s;
    if (!q) return TS_E_INVALID;
    if (q->busy) return TS__FAIL(&q->env, TS_E_STATE, "queue: drop from inside a queue callback");
    s = ts__queue_failed_find(q, id);
    if (s == TS__QNONE) return TS_E_NOTFOUND;
    ts__queue_failed_remove(q, s);
    ts__qring_remove(&q->ring[q->items[s].prio], s);
    ts__queue_release(q, s);
    return TS_OK;
}

/* ---- idle jobs ---------------------------------------------------------------- */

TASKSTORE_DEF ts_result ts_queue_add_idle_job(ts_queue *q, const char *name, ts_queue_idle_fn fn,
                                              void *user, uint32_t *job_id)
{
    ts__qjob *j;
    size_t nlen;
    char *copy;
    if (job_id) *job_id = 0;
    if (!q || !fn) return TS_E_INVALID;
    if (q->busy) return TS__FAIL(&q->env, TS_E_STATE, "queue: add_idle_job from inside a queue callback");
    if (!name) name = "";
    nlen = strlen(name);
    if (q->njobs == q->jobs_cap) {
        uint32_t ncap = q->jobs_cap ? q->jobs_cap * 2 : 4;
        ts__qjob *nj = (ts__qjob *)ts__realloc(&q->env.alloc, q->jobs, (size_t)q->jobs_cap * sizeof(ts__qjob),
                                               (size_t)ncap * sizeof(ts__qjob));
        if (!nj) return TS__FAIL(&q->env, TS_E_NOMEM, "queue: no memory for idle job '%.100s'", name);
        q->jobs = nj;
        q->jobs_cap = ncap;
    }
    copy = ts__strndup(&q->env.alloc, name, nlen);
    if (!copy) return TS__FAIL(&q->env, TS_E_NOMEM, "queue: no memory for idle job '%.100s'", name);
    j = &q->jobs[q->njobs++];
    j->name = copy;
    j->name_len = nlen;
    j->fn = fn;
    j->user = user;
    j->id = q->next_job_id++;
    if (job_id) *job_id = j->id;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_queue_remove_idle_job(ts_queue *q, uint32_t job_id)
{
    uint32_t i;
    if (!q) return TS_E_INVALID;
    for (i = 0; i < q->njobs; i++) {
        if (q->jobs[i].id != job_id || !q->jobs[i].fn) continue;
        if (q->in_jobs) {
            q->jobs[i].fn = NULL; /* compacted when the round ends */
        } else {
            ts__free(&q->env.alloc, q->jobs[i].name, q->jobs[i].name_len + 1);
            memmove(q->jobs + i, q->jobs + i + 1, (size_t)(q->njobs - i - 1) * sizeof(ts__qjob));
            q->njobs--;
        }
        return TS_OK;
    }
    return TS_E_NOTFOUND;
}

/* ======================================================================== */
/* >>index: tokenizer, posting lists, order list, search, query strings,    */
/* serialization of the inverted index (ts_index, ts_tokenize,              */
/* ts_query_parse).                                                          */
/* ======================================================================== */

/* Design, and why. Figures: bench/bench_index.c, 35k Debian changelog
   entries (19 MB of text) against SQLite FTS5 in the same run, CPU time:
   on disk 0.17x the text (FTS5 0.48x), about 1 byte per posting; about
   20 MB in memory; build 1.3-1.7x FTS5's speed; query p99 0.3-0.7x FTS5's;
   tag, month and status filters (limit 50) under 35 us p99 at 100k sessions.

   - Sessions get dense internal numbers ("docnos", uint32, reused through a
     free list); ids map to them through a ts__map.
   - One dictionary for every index: a term is a field byte ('w' word, 'g'
     tag, 'p' topic, 'c' category, 's' subCategory, 't' status, 'm' month)
     followed by the bytes, kept in one string arena and found through an
     open-addressing table of (hash, term number) pairs. ts__map would cost a
     heap block per key and 40-byte slots; the dictionary is the largest
     structure of the index, so it gets its own compact table.
   - Posting lists are "roaring-lite": the docno space is cut into chunks of
     65536; per chunk a sorted uint16 array (up to 4096 entries), or a
     1024-word bitmap beyond that; a term with one session keeps it inline.
     So in memory a posting costs <= 2 bytes, inserting or deleting one costs
     at most an 8 KB memmove whatever the index size, and intersections and
     unions run as word operations.
   - Queries evaluate every criterion into a bitmap over docnos (12.5 KB at
     100k sessions, so a few microseconds per criterion) and combine them
     with AND/OR word by word; the total is a popcount.
   - A separate "order list" keeps every session sorted by (startTime desc,
     id) in blocks of 256, so an insert costs O(log n + 256). Results in the
     default order are read by walking it and testing the result bitmap (or,
     for few matches, by sorting just the matches), so a filter with a limit
     stops after limit+offset hits, and a date range is a contiguous run of
     it found by binary search.
   - Each session keeps a forward list: its terms as varint (term delta, tf)
     pairs. Updates diff old and new lists (cost: the session's terms), BM25
     reads tf from it, and it is the source of truth for save (so optimize,
     which is save + load, also rebuilds every posting list from it).
   - The serialized form is the compact one: sorted terms, front-coded, with
     delta-varint postings where tf rides in the low bit ((gap << 1) | tf>1,
     then tf-2 when needed), guarded by CRC-32C. */

#ifndef TASKSTORE_MAX_QUERY
#define TASKSTORE_MAX_QUERY 65536
#endif

#define TS__IX_NONE      0xFFFFFFFFu
#define TS__IX_ARR_MAX   4096u      /* array container limit (then bitmap) */
#define TS__IX_BM_WORDS  1024u      /* 65536 bits */
#define TS__IX_OB        256u       /* order list block size */

#define TS__IX_F_TEXT     'w'
#define TS__IX_F_TAG      'g'
#define TS__IX_F_TOPIC    'p'
#define TS__IX_F_CATEGORY 'c'
#define TS__IX_F_SUBCAT   's'
#define TS__IX_F_STATUS   't'
#define TS__IX_F_MONTH    'm'

/* ---- small helpers -------------------------------------------------------- */

TS__PRIVATE int ts__ix_popcount(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcountll(x);
#else
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (int)((x * 0x0101010101010101ull) >> 56);
#endif
}

TS__PRIVATE int ts__ix_ctz(uint64_t x) /* x != 0 */
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(x);
#else
    int n = 0;
    while (!(x & 1)) { x >>= 1; n++; }
    return n;
#endif
}

TS__PRIVATE size_t ts__ix_popcount_words(const uint64_t *w, size_t n)
{
    size_t i, c = 0;
    for (i = 0; i < n; i++) c += (size_t)ts__ix_popcount(w[i]);
    return c;
}

/* Grows an array to hold `need` items of `elem` bytes (capacity doubles).
   Returns the (maybe moved) array, or NULL with *cap and p untouched. */
TS__PRIVATE void *ts__ix_grow(const ts_allocator *a, void *p, size_t *cap, size_t need, size_t elem)
{
    size_t ncap = *cap ? *cap : 8, nbytes;
    void *q;
    if (need <= *cap && p) return p;
    while (ncap < need) {
        if (ncap > ((size_t)-1) / 4) { ncap = need; break; }
        ncap *= 2;
    }
    if (!ts__size_mul(ncap, elem, &nbytes)) return NULL;
    q = ts__realloc(a, p, *cap * elem, nbytes);
    if (q) *cap = ncap;
    return q;
}

/* Natural logarithm for x > 0 without libm (the header needs only libc):
   x = m * 2^e with m in [1,2), ln m = 2 atanh((m-1)/(m+1)). */
TS__PRIVATE double ts__ix_ln(double x)
{
    int e = 0, k;
    double y, y2, term, sum = 0.0;
    if (!(x > 0.0)) return 0.0;
    while (x >= 2.0) { x *= 0.5; e++; }
    while (x < 1.0) { x *= 2.0; e--; }
    y = (x - 1.0) / (x + 1.0);
    y2 = y * y;
    term = y;
    for (k = 1; k < 60; k += 2) {
        double add = term / (double)k;
        sum += add;
        if (add < 1e-18) break;
        term *= y2;
    }
    return 2.0 * sum + (double)e * 0.69314718055994530942;
}

/* BM25 pieces, shared with the brute-force model of the tests so both
   compute bit-identical scores. */
TS__PRIVATE double ts__ix_bm25_idf(uint64_t n_sessions, uint64_t df)
{
    double n = (double)n_sessions, d = (double)df;
    return ts__ix_ln(1.0 + (n - d + 0.5) / (d + 0.5));
}

TS__PRIVATE double ts__ix_bm25_term(double idf, uint64_t tf, uint64_t dl, double avgdl)
{
    const double k1 = 1.2, b = 0.75;
    double f = (double)tf;
    double norm = k1 * (1.0 - b + b * ((double)dl / avgdl));
    return idf * (f * (k1 + 1.0)) / (f + norm);
}

/* ---- varints and CRC-32C --------------------------------------------------- */

TS__PRIVATE size_t ts__ix_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

TS__PRIVATE size_t ts__ix_enc_varint(unsigned char *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (unsigned char)(v | 0x80); v >>= 7; }
    p[n++] = (unsigned char)v;
    return n;
}

/* Unchecked decoder for the index's own in-memory forward lists. */
TS__PRIVATE uint64_t ts__ix_dec_varint(const unsigned char **pp)
{
    const unsigned char *p = *pp;
    uint64_t v = 0;
    unsigned shift = 0;
    for (;;) {
        unsigned char c = *p++;
        v |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) break;
        shift += 7;
    }
    *pp = p;
    return v;
}

TS__PRIVATE uint64_t ts__ix_zigzag(int64_t v)
{
    return v < 0 ? ((~(uint64_t)v) << 1) | 1u : (uint64_t)v << 1;
}

TS__PRIVATE int64_t ts__ix_unzigzag(uint64_t u)
{
    return (u & 1) ? (int64_t)(~(u >> 1)) : (int64_t)(u >> 1);
}

/* Bounds-checked reader for serialized input: any overrun or malformed
   varint sets bad and reads zeros from then on. Only canonical (shortest)
   varints are accepted, so save(load(x)) == x. */
typedef struct ts__ix_rd {
    const unsigned char *p, *end;
    int bad;
} ts__ix_rd;

TS__PRIVATE uint64_t ts__ix_rd_varint(ts__ix_rd *r)
{
    uint64_t v = 0;
    unsigned shift = 0;
    while (!r->bad && r->p < r->end) {
        unsigned char c = *r->p++;
        if (shift == 63 && c > 1) break;
        v |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            if (shift && c == 0) break; /* non-canonical */
            return v;
        }
        shift += 7;
        if (shift > 63) break;
    }
    r->bad = 1;
    return 0;
}

TS__PRIVATE const unsigned char *ts__ix_rd_bytes(ts__ix_rd *r, size_t n)
{
    const unsigned char *p = r->p;
    if (r->bad || (size_t)(r->end - r->p) < n) { r->bad = 1; return NULL; }
    r->p += n;
    return p;
}

/* CRC-32C (Castagnoli), slicing by 8; the table lives on the caller's stack
   because the library keeps no globals. */
typedef struct ts__ix_crc { uint32_t t[8][256]; } ts__ix_crc;

TS__PRIVATE void ts__ix_crc_init(ts__ix_crc *c)
{
    uint32_t i, k, v;
    for (i = 0; i < 256; i++) {
        v = i;
        for (k = 0; k < 8; k++) v = (v & 1) ? (v >> 1) ^ 0x82F63B78u : v >> 1;
        c->t[0][i] = v;
    }
    for (i = 0; i < 256; i++)
        for (k = 1; k < 8; k++) c->t[k][i] = (c->t[k - 1][i] >> 8) ^ c->t[0][c->t[k - 1][i] & 0xFF];
}

TS__PRIVATE uint32_t ts__ix_crc_update(const ts__ix_crc *c, uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        crc = c->t[7][lo & 0xFF] ^ c->t[6][(lo >> 8) & 0xFF] ^ c->t[5][(lo >> 16) & 0xFF] ^ c->t[4][lo >> 24] ^
              c->t[3][hi & 0xFF] ^ c->t[2][(hi >> 8) & 0xFF] ^ c->t[1][(hi >> 16) & 0xFF] ^ c->t[0][hi >> 24];
        p += 8; n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ c->t[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

TS__PRIVATE void ts__ix_put_u32le(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}

TS__PRIVATE uint32_t ts__ix_get_u32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- sorting ------------------------------------------------------------------
   Introsort (quicksort, heapsort past a depth limit, insertion sort for short
   runs): qsort has no context argument in C99 and these keys need one. */

typedef int (*ts__ix_cmp_fn)(const void *ctx, uint32_t a, uint32_t b);

TS__PRIVATE void ts__ix_sift(uint32_t *a, size_t root, size_t n, ts__ix_cmp_fn cmp, const void *ctx)
{
    for (;;) {
        size_t child = 2 * root + 1;
        uint32_t t;
        if (child >= n) return;
        if (child + 1 < n && cmp(ctx, a[child], a[child + 1]) < 0) child++;
        if (cmp(ctx, a[root], a[child]) >= 0) return;
        t = a[root]; a[root] = a[child]; a[child] = t;
        root = child;
    }
}

TS__PRIVATE void ts__ix_sort_rec(uint32_t *a, size_t n, ts__ix_cmp_fn cmp, const void *ctx, int depth)
{
    while (n > 16) {
        size_t i, j, mid = n / 2;
        uint32_t pivot, t;
        if (depth-- <= 0) {
            for (i = n / 2; i-- > 0;) ts__ix_sift(a, i, n, cmp, ctx);
            for (i = n - 1; i > 0; i--) {
                t = a[0]; a[0] = a[i]; a[i] = t;
                ts__ix_sift(a, 0, i, cmp, ctx);
            }
            return;
        }
        /* median of three into a[mid] */
        if (cmp(ctx, a[mid], a[0]) < 0) { t = a[mid]; a[mid] = a[0]; a[0] = t; }
        if (cmp(ctx, a[n - 1], a[mid]) < 0) {
            t = a[mid]; a[mid] = a[n - 1]; a[n - 1] = t;
            if (cmp(ctx, a[mid], a[0]) < 0) { t = a[mid]; a[mid] = a[0]; a[0] = t; }
        }
        pivot = a[mid];
        i = 0; j = n - 1;
        for (;;) {
            while (cmp(ctx, a[i], pivot) < 0) i++;
            while (cmp(ctx, pivot, a[j]) < 0) j--;
            if (i >= j) break;
            t = a[i]; a[i] = a[j]; a[j] = t;
            i++; j--;
        }
        /* [0..j] <= pivot <= [j+1..n) */
        if (j + 1 < n - (j + 1)) {
            ts__ix_sort_rec(a, j + 1, cmp, ctx, depth);
            a += j + 1; n -= j + 1;
        } else {
            ts__ix_sort_rec(a + j + 1, n - (j + 1), cmp, ctx, depth);
            n = j + 1;
        }
    }
    {
        size_t i, j;
        for (i = 1; i < n; i++) {
            uint32_t v = a[i];
            for (j = i; j > 0 && cmp(ctx, v, a[j - 1]) < 0; j--) a[j] = a[j - 1];
            a[j] = v;
        }
    }
}

TS__PRIVATE void ts__ix_sort(uint32_t *a, size_t n, ts__ix_cmp_fn cmp, const void *ctx)
{
    int depth = 2;
    size_t m = n;
    while (m > 1) { m >>= 1; depth += 2; }
    ts__ix_sort_rec(a, n, cmp, ctx, depth);
}

/* The same for plain uint64 keys (a session's (term << 32 | tf) pairs),
   without the indirect call: it runs once per indexed session. */
TS__PRIVATE void ts__ix_sift_u64(uint64_t *a, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        uint64_t t;
        if (child >= n) return;
        if (child + 1 < n && a[child] < a[child + 1]) child++;
        if (a[root] >= a[child]) return;
        t = a[root]; a[root] = a[child]; a[child] = t;
        root = child;
    }
}

TS__PRIVATE void ts__ix_sort_u64_rec(uint64_t *a, size_t n, int depth)
{
    while (n > 16) {
        size_t i, j, mid = n / 2;
        uint64_t pivot, t;
        if (depth-- <= 0) {
            for (i = n / 2; i-- > 0;) ts__ix_sift_u64(a, i, n);
            for (i = n - 1; i > 0; i--) {
                t = a[0]; a[0] = a[i]; a[i] = t;
                ts__ix_sift_u64(a, 0, i);
            }
            return;
        }
        if (a[mid] < a[0]) { t = a[mid]; a[mid] = a[0]; a[0] = t; }
        if (a[n - 1] < a[mid]) {
            t = a[mid]; a[mid] = a[n - 1]; a[n - 1] = t;
            if (a[mid] < a[0]) { t = a[mid]; a[mid] = a[0]; a[0] = t; }
        }
        pivot = a[mid];
        i = 0; j = n - 1;
        for (;;) {
            while (a[i] < pivot) i++;
            while (pivot < a[j]) j--;
            if (i >= j) break;
            t = a[i]; a[i] = a[j]; a[j] = t;
            i++; j--;
        }
        if (j + 1 < n - (j + 1)) {
            ts__ix_sort_u64_rec(a, j + 1, depth);
            a += j + 1; n -= j + 1;
        } else {
            ts__ix_sort_u64_rec(a + j + 1, n - (j + 1), depth);
            n = j + 1;
        }
    }
    {
        size_t i, j;
        for (i = 1; i < n; i++) {
            uint64_t v = a[i];
            for (j = i; j > 0 && v < a[j - 1]; j--) a[j] = a[j - 1];
            a[j] = v;
        }
    }
}

TS__PRIVATE void ts__ix_sort_u64(uint64_t *a, size_t n)
{
    int depth = 2;
    size_t m = n;
    while (m > 1) { m >>= 1; depth += 2; }
    ts__ix_sort_u64_rec(a, n, depth);
}

/* ---- tokenizer (DESIGN.md section 6) ---------------------------------------- */

/* ASCII: 0 separator, 1 token byte as is, 2 uppercase letter (folds +32). */
TS__PRIVATE int ts__ix_ascii_class(unsigned c)
{
    if (c - 'a' < 26u || c - '0' < 10u) return 1;
    if (c - 'A' < 26u) return 2;
    return 0;
}

TS__PRIVATE int ts__ix_is_sep(uint32_t c)
{
    if (c < 0x80) return !ts__ix_ascii_class(c);
    if (c <= 0xBF || c == 0xD7 || c == 0xF7) return 1;
    if (c >= 0x2000 && c <= 0x206F) return 1;
    if (c >= 0x3000 && c <= 0x303F) return 1;
    if (c >= 0xFF01 && c <= 0xFF0F) return 1;
    return 0;
}

/* Case folding exactly as the rules list it (not Unicode's tables). Every
   mapping keeps the UTF-8 length, so a folded token is as long as its
   source. */
TS__PRIVATE uint32_t ts__ix_fold(uint32_t c)
{
    if (c < 0x80) return (c - 'A' < 26u) ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE) return c == 0xD7 ? c : c + 0x20;
    if (c >= 0x100 && c <= 0x17F) {
        if (c == 0x130 || c == 0x138 || c == 0x149) return c;
        if (c == 0x178) return 0xFF;
        if (c >= 0x179 && c <= 0x17E) return (c & 1) ? c + 1 : c;
        return (c & 1) ? c : c + 1;
    }
    if (c >= 0x391 && c <= 0x3A9) return c == 0x3A2 ? c : c + 0x20;
    if (c >= 0x410 && c <= 0x42F) return c + 0x20;
    if (c >= 0x400 && c <= 0x40F) return c + 0x50;
    return c;
}

TS__PRIVATE int ts__ix_is_stop(const char *t, size_t n)
{
    switch (n) {
    case 1: return t[0] == 'a';
    case 2:
        return (t[0] == 'a' && (t[1] == 'n' || t[1] == 't')) ||
               (t[0] == 'o' && (t[1] == 'r' || t[1] == 'n')) ||
               (t[0] == 'i' && t[1] == 'n') || (t[0] == 't' && t[1] == 'o');
    case 3:
        return memcmp(t, "the", 3) == 0 || memcmp(t, "and", 3) == 0 ||
               memcmp(t, "but", 3) == 0 || memcmp(t, "for", 3) == 0;
    default: return 0;
    }
}

/* Rule 4: what survives of a raw token. */
TS__PRIVATE int ts__ix_keep(const char *t, size_t n, size_t ncp)
{
    return ncp >= 2 && !ts__ix_is_stop(t, n);
}

/* Raw token iterator: yields every maximal run of token characters, folded,
   before rule 4 (the query parser needs a word's last raw token). */
typedef struct ts__ix_tok {
    const unsigned char *s;
    size_t n, pos;
    const ts_allocator *alloc;
    unsigned char *heap;
    size_t heap_cap;
    const char *tok;     /* the current token (folded) */
    size_t len, ncp;     /* its bytes and code points */
    unsigned char small[256];
} ts__ix_tok;

TS__PRIVATE void ts__ix_tok_init(ts__ix_tok *t, const char *s, size_t n, const ts_allocator *a)
{
    t->s = (const unsigned char *)s;
    t->n = s ? n : 0;
    t->pos = 0;
    t->alloc = a;
    t->heap = NULL;
    t->heap_cap = 0;
    t->tok = NULL;
    t->len = t->ncp = 0;
}

TS__PRIVATE void ts__ix_tok_done(ts__ix_tok *t)
{
    ts__free(t->alloc, t->heap, t->heap_cap);
    t->heap = NULL;
    t->heap_cap = 0;
}

/* 1: a token in t->tok/len/ncp; 0: end of input; -1: out of memory. */
TS__PRIVATE int ts__ix_tok_next(ts__ix_tok *t)
{
    const unsigned char *s = t->s;
    size_t n = t->n, i = t->pos, start, ncp = 0;
    int fold = 0, k;
    uint32_t cp;
    unsigned char *dst;
    for (;;) { /* skip separators; an invalid byte is one */
        if (i >= n) { t->pos = n; return 0; }
        if (s[i] < 0x80) {
            if (ts__ix_ascii_class(s[i])) break;
            i++;
            continue;
        }
        k = ts__utf8_decode(s + i, n - i, &cp);
        if (!k) { i++; continue; }
        if (!ts__ix_is_sep(cp)) break;
        i += (size_t)k;
    }
    start = i;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            int cl = ts__ix_ascii_class(c);
            if (!cl) break;
            fold |= cl == 2;
            i++; ncp++;
            continue;
        }
        k = ts__utf8_decode(s + i, n - i, &cp);
        if (!k || ts__ix_is_sep(cp)) break;
        if (ts__ix_fold(cp) != cp) fold = 1;
        i += (size_t)k; ncp++;
    }
    t->pos = i;
    t->ncp = ncp;
    t->len = i - start;
    if (!fold) { t->tok = (const char *)s + start; return 1; }
    if (t->len <= sizeof t->small) {
        dst = t->small;
    } else {
        if (t->len > t->heap_cap) {
            unsigned char *p = (unsigned char *)ts__realloc(t->alloc, t->heap, t->heap_cap, t->len);
            if (!p) return -1;
            t->heap = p;
            t->heap_cap = t->len;
        }
        dst = t->heap;
    }
    {
        size_t j = start, o = 0;
        while (j < i) {
            if (s[j] < 0x80) {
                dst[o++] = (unsigned char)((unsigned)s[j] - 'A' < 26u ? s[j] + 32 : s[j]);
                j++;
                continue;
            }
            k = ts__utf8_decode(s + j, i - j, &cp);
            j += (size_t)k;
            o += (size_t)ts__utf8_encode(ts__ix_fold(cp), dst + o);
        }
    }
    t->tok = (const char *)dst;
    return 1;
}

TASKSTORE_DEF ts_result ts_tokenize(const char *text, size_t len, const ts_allocator *alloc,
                                    ts_token_fn fn, void *user)
{
    ts__ix_tok t;
    ts_result res = TS_OK;
    int r;
    if (!fn || (!text && len)) return TS_E_INVALID;
    ts__ix_tok_init(&t, text, len, alloc);
    while ((r = ts__ix_tok_next(&t)) > 0) {
        if (!ts__ix_keep(t.tok, t.len, t.ncp)) continue;
        if (fn(user, t.tok, t.len)) { res = TS_E_CANCELLED; break; }
    }
    if (r < 0) res = TS_E_NOMEM;
    ts__ix_tok_done(&t);
    return res;
}

/* "YYYY-MM" of a startTime in UTC (civil-from-days, exact for negative and
   huge times); years outside 0000-9999 get as many digits as they need and
   a '-' sign when negative. Returns the length. */
TS__PRIVATE size_t ts__ix_month_key(int64_t ms, char out[32])
{
    int64_t days = ms / 86400000, z, era, doe, yoe, y, doy, mp, m;
    int n;
    if (ms % 86400000 < 0) days--;
    z = days + 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y++;
    if (y < 0) n = snprintf(out, 32, "-%04lld-%02d", (long long)-y, (int)m);
    else n = snprintf(out, 32, "%04lld-%02d", (long long)y, (int)m);
    return n > 0 ? (size_t)n : 0;
}

/* ---- the index object ------------------------------------------------------ */

/* One 65536-docno chunk of a posting list. */
typedef struct ts__ix_cont {
    uint32_t key;        /* docno >> 16 */
    uint32_t card;       /* entries */
    uint32_t cap;        /* array: capacity in uint16 entries; 0: bitmap of 1024 words */
    uint32_t pad_;
    void *data;          /* uint16_t[cap] sorted, or uint64_t[1024] */
} ts__ix_cont;

typedef struct ts__ix_term {
    uint32_t off, len;   /* key in the arena: field byte + value */
    uint32_t hash;
    uint32_t df;         /* sessions in the posting list */
    uint32_t stamp, slot;/* scratch while collecting one session's terms */
    uint32_t ncont, capcont;
    uint32_t single;     /* the docno when df == 1 and ncont == 0 */
    uint32_t pad_;
    ts__ix_cont *conts;  /* sorted by key */
} ts__ix_term;

typedef struct ts__ix_doc {
    char *id;            /* id_len + 1 bytes; NULL: a free number */
    unsigned char *fwd;  /* fwd_len bytes: varint (term delta, tf) pairs, by term */
    int64_t start;
    uint32_t id_len, fwd_len;
    uint32_t nterms;     /* pairs in fwd */
    uint32_t dl;         /* full-text tokens (BM25 length) */
    int has_start;
} ts__ix_doc;

typedef struct ts__ix_oblk {
    uint32_t n;
    uint32_t d[TS__IX_OB];
} ts__ix_oblk;

/* A query criterion. */
typedef struct ts__ix_crit {
    int kind;            /* TS__IX_C_* */
    int text;            /* a text term (scored by BM25) */
    uint32_t tid;        /* TERM */
    size_t off, len;     /* PREFIX: field byte + prefix, in qbuf */
    uint64_t est;        /* cardinality estimate for AND ordering */
    uint64_t df;         /* sessions matching (BM25) */
} ts__ix_crit;

#define TS__IX_C_TERM   0
#define TS__IX_C_PREFIX 1
#define TS__IX_C_RANGE  2

struct ts_index {
    ts__env env;
    int extra_text;
    /* dictionary */
    ts__ix_term *terms;
    uint32_t nterms;
    size_t capterms;
    uint64_t *slots;          /* (hash << 32) | (term + 1); 0 empty */
    size_t slot_cap;          /* power of two */
    char *arena;
    size_t arena_len, arena_cap;
    uint32_t *sorted;         /* text terms in key order */
    size_t nsorted, capsorted;
    uint32_t *recent;         /* text terms added since the last merge */
    size_t nrecent, caprecent;
    uint32_t stamp;
    /* sessions */
    ts__ix_doc *docs;
    uint32_t ndocs;           /* numbers handed out, free ones included */
    size_t capdocs;
    uint32_t *freeno;         /* capacity: capfree >= capdocs, so a push never fails */
    uint32_t nfree;
    size_t capfree;
    uint64_t *live;           /* bitmap of live docnos */
    size_t capline;           /* words */
    uint32_t nlive;
    uint64_t total_dl;
    ts__map ids;              /* id -> docno */
    /* sessions by (startTime desc, id) */
    ts__ix_oblk **blk;
    size_t nblk, capblk;
    ts__ix_oblk *spare;       /* kept allocated so inserts cannot fail */
    /* scratch */
    uint64_t *pairs;          /* (term << 32) | tf of the session being collected */
    size_t npairs, cappairs;
    uint64_t *opairs;
    size_t capopairs;
    uint32_t *diff;
    size_t capdiff;
    unsigned char *enc;
    size_t capenc;
    uint64_t *bm_a, *bm_b;
    size_t cap_a, cap_b;
    uint32_t *qdocs, *qperm;
    size_t capqdocs, capqperm;
    uint64_t *qkey;
    size_t capqkey;
    double *qscore;
    size_t capqscore;
    uint64_t *qtf;
    size_t capqtf;
    ts__ix_crit *crit;
    size_t ncrit, capcrit;
    ts__buf qbuf;
    /* statistics */
    uint64_t disk_bytes, changes;
    int has_built, has_optimized;
    int64_t built_ms, optimized_ms;
};

TS__PRIVATE int ts__ix_doc_cmp(const ts_index *ix, uint32_t a, uint32_t b)
{
    const ts__ix_doc *x = &ix->docs[a], *y = &ix->docs[b];
    if (x->has_start != y->has_start) return x->has_start ? -1 : 1;
    if (x->has_start && x->start != y->start) return x->start > y->start ? -1 : 1;
    return ts__memcmp_len(x->id, x->id_len, y->id, y->id_len);
}

/* The startTime part of the order as one integer, so sorts compare
   integers in a small array and reach for the sessions only on ties:
   descending startTime ascends, no startTime sorts last (ties with
   startTime INT64_MIN are left to ts__ix_doc_cmp). */
TS__PRIVATE uint64_t ts__ix_order_key(const ts__ix_doc *D)
{
    return D->has_start ? ~((uint64_t)D->start ^ 0x8000000000000000ull) : UINT64_MAX;
}

typedef struct ts__ix_keyed {
    const ts_index *ix;
    const uint64_t *key;
    const uint32_t *docs;
} ts__ix_keyed;

TS__PRIVATE int ts__ix_keyed_cmp_cb(const void *ctx, uint32_t a, uint32_t b)
{
    const ts__ix_keyed *c = (const ts__ix_keyed *)ctx;
    if (c->key[a] != c->key[b]) return c->key[a] < c->key[b] ? -1 : 1;
    return ts__ix_doc_cmp(c->ix, c->docs[a], c->docs[b]);
}

/* Puts docs[0..n) in result order into perm[0..n) (key: n scratch). */
TS__PRIVATE void ts__ix_sort_docs(const ts_index *ix, const uint32_t *docs, size_t n, uint64_t *key, uint32_t *perm)
{
    ts__ix_keyed c;
    size_t i;
    for (i = 0; i < n; i++) {
        key[i] = ts__ix_order_key(&ix->docs[docs[i]]);
        perm[i] = (uint32_t)i;
    }
    c.ix = ix; c.key = key; c.docs = docs;
    ts__ix_sort(perm, n, ts__ix_keyed_cmp_cb, &c);
    for (i = 0; i < n; i++) perm[i] = docs[perm[i]];
}

TS__PRIVATE int ts__ix_term_cmp_cb(const void *ctx, uint32_t a, uint32_t b)
{
    const ts_index *ix = (const ts_index *)ctx;
    const ts__ix_term *x = &ix->terms[a], *y = &ix->terms[b];
    return ts__memcmp_len(ix->arena + x->off, x->len, ix->arena + y->off, y->len);
}

TS__PRIVATE int ts__ix_field(const ts_index *ix, uint32_t tid)
{
    return (unsigned char)ix->arena[ix->terms[tid].off];
}

/* ---- posting lists ------------------------------------------------------------ */

/* Index of the container for key; *found tells whether it exists (else the
   index is where it would go). Appends hit the first test. */
TS__PRIVATE uint32_t ts__ix_cont_find(const ts__ix_term *t, uint32_t key, int *found)
{
    uint32_t lo = 0, hi = t->ncont;
    *found = 0;
    if (hi && t->conts[hi - 1].key <= key) {
        if (t->conts[hi - 1].key == key) { *found = 1; return hi - 1; }
        return hi;
    }
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->conts[mid].key < key) lo = mid + 1;
        else hi = mid;
    }
    if (lo < t->ncont && t->conts[lo].key == key) *found = 1;
    return lo;
}

/* First index in v[0..n) with v[i] >= x. */
TS__PRIVATE uint32_t ts__ix_lower16(const uint16_t *v, uint32_t n, uint16_t x)
{
    uint32_t lo = 0, hi = n;
    if (n && v[n - 1] < x) return n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Adds docno d to the containers: 1 added, 0 already there, -1 no memory
   (nothing changed). */
TS__PRIVATE int ts__ix_cont_add(ts_index *ix, ts__ix_term *t, uint32_t d)
{
    const ts_allocator *a = &ix->env.alloc;
    uint32_t key = d >> 16, i, pos;
    uint16_t lo = (uint16_t)(d & 0xFFFF);
    int found;
    ts__ix_cont *c;
    uint16_t *v;
    i = ts__ix_cont_find(t, key, &found);
    if (!found) {
        uint16_t *data;
        if (t->ncont == t->capcont) {
            /* most lists live in one chunk: start with room for one */
            uint32_t cap = t->capcont ? t->capcont * 2 : 1;
            void *q = ts__realloc(a, t->conts, (size_t)t->capcont * sizeof(ts__ix_cont), (size_t)cap * sizeof(ts__ix_cont));
            if (!q) return -1;
            t->conts = (ts__ix_cont *)q;
            t->capcont = cap;
        }
        data = (uint16_t *)ts__alloc(a, 4 * sizeof(uint16_t));
        if (!data) return -1;
        memmove(t->conts + i + 1, t->conts + i, (t->ncont - i) * sizeof(ts__ix_cont));
        c = &t->conts[i];
        c->key = key; c->card = 0; c->cap = 4; c->pad_ = 0; c->data = data;
        t->ncont++;
    }
    c = &t->conts[i];
    if (c->cap == 0) {
        uint64_t *w = (uint64_t *)c->data, bit = (uint64_t)1 << (lo & 63);
        if (w[lo >> 6] & bit) return 0;
        w[lo >> 6] |= bit;
        c->card++;
        return 1;
    }
    v = (uint16_t *)c->data;
    pos = ts__ix_lower16(v, c->card, lo);
    if (pos < c->card && v[pos] == lo) return 0;
    if (c->card == TS__IX_ARR_MAX) {
        uint64_t *w = (uint64_t *)ts__calloc(a, TS__IX_BM_WORDS, sizeof(uint64_t));
        uint32_t j;
        if (!w) return -1;
        for (j = 0; j < c->card; j++) w[v[j] >> 6] |= (uint64_t)1 << (v[j] & 63);
        w[lo >> 6] |= (uint64_t)1 << (lo & 63);
        ts__free(a, v, (size_t)c->cap * sizeof(uint16_t));
        c->data = w;
        c->cap = 0;
        c->card++;
        return 1;
    }
    if (c->card == c->cap) {
        uint32_t ncap = c->cap * 2 > TS__IX_ARR_MAX ? TS__IX_ARR_MAX : c->cap * 2;
        uint16_t *nv = (uint16_t *)ts__realloc(a, v, (size_t)c->cap * sizeof(uint16_t),
                                               (size_t)ncap * sizeof(uint16_t));
        if (!nv) return -1;
        c->data = v = nv;
        c->cap = ncap;
    }
    memmove(v + pos + 1, v + pos, (c->card - pos) * sizeof(uint16_t));
    v[pos] = lo;
    c->card++;
    return 1;
}

TS__PRIVATE void ts__ix_cont_free(const ts_allocator *a, ts__ix_cont *c)
{
    ts__free(a, c->data, c->cap ? (size_t)c->cap * sizeof(uint16_t) : TS__IX_BM_WORDS * sizeof(uint64_t));
    c->data = NULL;
}

TS__PRIVATE void ts__ix_post_clear(ts_index *ix, ts__ix_term *t)
{
    uint32_t i;
    for (i = 0; i < t->ncont; i++) ts__ix_cont_free(&ix->env.alloc, &t->conts[i]);
    ts__free(&ix->env.alloc, t->conts, (size_t)t->capcont * sizeof(ts__ix_cont));
    t->conts = NULL;
    t->ncont = t->capcont = 0;
    t->df = 0;
}

/* Adds docno d to term t's postings. TS_OK (also when present) or
   TS_E_NOMEM with nothing changed. */
TS__PRIVATE ts_result ts__ix_post_add(ts_index *ix, ts__ix_term *t, uint32_t d)
{
    int r;
    if (t->ncont == 0) {
        if (t->df == 0) { t->single = d; t->df = 1; return TS_OK; }
        if (t->single == d) return TS_OK;
        /* second session: move the inline one into a container */
        if (ts__ix_cont_add(ix, t, t->single) < 0) return TS_E_NOMEM;
        r = ts__ix_cont_add(ix, t, d);
        if (r < 0) { ts__ix_post_clear(ix, t); t->df = 1; return TS_E_NOMEM; }
        t->df = 2;
        return TS_OK;
    }
    r = ts__ix_cont_add(ix, t, d);
    if (r < 0) return TS_E_NOMEM;
    if (r > 0) t->df++;
    return TS_OK;
}

/* Removes docno d; 1 removed, 0 absent. Never allocates. Containers are not
   converted back from bitmaps here (that could need memory): optimize does. */
TS__PRIVATE int ts__ix_post_del(ts_index *ix, ts__ix_term *t, uint32_t d)
{
    uint32_t i;
    uint16_t lo = (uint16_t)(d & 0xFFFF);
    int found;
    ts__ix_cont *c;
    if (t->ncont == 0) {
        if (t->df == 1 && t->single == d) { t->df = 0; return 1; }
        return 0;
    }
    i = ts__ix_cont_find(t, d >> 16, &found);
    if (!found) return 0;
    c = &t->conts[i];
    if (c->cap == 0) {
        uint64_t *w = (uint64_t *)c->data, bit = (uint64_t)1 << (lo & 63);
        if (!(w[lo >> 6] & bit)) return 0;
        w[lo >> 6] &= ~bit;
    } else {
        uint16_t *v = (uint16_t *)c->data;
        uint32_t pos = ts__ix_lower16(v, c->card, lo);
        if (pos >= c->card || v[pos] != lo) return 0;
        memmove(v + pos, v + pos + 1, (c->card - pos - 1) * sizeof(uint16_t));
    }
    c->card--;
    t->df--;
    if (c->card == 0) {
        ts__ix_cont_free(&ix->env.alloc, c);
        memmove(t->conts + i, t->conts + i + 1, (t->ncont - i - 1) * sizeof(ts__ix_cont));
        t->ncont--;
        if (t->ncont == 0) ts__ix_post_clear(ix, t);
    }
    return 1;
}

TS__PRIVATE int ts__ix_post_has(const ts__ix_term *t, uint32_t d)
{
    uint32_t i;
    uint16_t lo = (uint16_t)(d & 0xFFFF);
    int found;
    const ts__ix_cont *c;
    if (t->ncont == 0) return t->df == 1 && t->single == d;
    i = ts__ix_cont_find(t, d >> 16, &found);
    if (!found) return 0;
    c = &t->conts[i];
    if (c->cap == 0) return (int)((((const uint64_t *)c->data)[lo >> 6] >> (lo & 63)) & 1);
    {
        const uint16_t *v = (const uint16_t *)c->data;
        uint32_t pos = ts__ix_lower16(v, c->card, lo);
        return pos < c->card && v[pos] == lo;
    }
}

/* ORs the posting list into a bitmap of nw words. */
TS__PRIVATE void ts__ix_post_or(const ts__ix_term *t, uint64_t *w, size_t nw)
{
    uint32_t i, j;
    if (t->ncont == 0) {
        if (t->df && (t->single >> 6) < nw) w[t->single >> 6] |= (uint64_t)1 << (t->single & 63);
        return;
    }
    for (i = 0; i < t->ncont; i++) {
        const ts__ix_cont *c = &t->conts[i];
        size_t base = (size_t)c->key * TS__IX_BM_WORDS;
        if (base >= nw) break;
        if (c->cap == 0) {
            const uint64_t *b = (const uint64_t *)c->data;
            size_t n = nw - base < TS__IX_BM_WORDS ? nw - base : TS__IX_BM_WORDS;
            uint64_t *o = w + base;
            for (j = 0; j < n; j++) o[j] |= b[j];
        } else {
            const uint16_t *v = (const uint16_t *)c->data;
            uint64_t *o = w + base;
            size_t lim = (nw - base) * 64;
            for (j = 0; j < c->card; j++)
                if (v[j] < lim) o[v[j] >> 6] |= (uint64_t)1 << (v[j] & 63);
        }
    }
}

/* Real count of postings (verify compares it with df). */
TS__PRIVATE uint64_t ts__ix_post_count(const ts__ix_term *t)
{
    uint32_t i;
    uint64_t n = 0;
    if (t->ncont == 0) return t->df ? 1 : 0;
    for (i = 0; i < t->ncont; i++) n += t->conts[i].card;
    return n;
}

/* ---- dictionary -------------------------------------------------------------- */

TS__PRIVATE uint32_t ts__ix_key_hash(int field, const char *s, size_t n)
{
    uint64_t h = ts__hash_bytes(s, n) ^ ((uint64_t)(unsigned)field * 0x9E3779B97F4A7C15ull);
    h ^= h >> 32;
    return (uint32_t)h;
}

TS__PRIVATE uint32_t ts__ix_lookup_h(const ts_index *ix, int field, const char *s, size_t n, uint32_t h)
{
    size_t mask, i;
    if (!ix->slot_cap) return TS__IX_NONE;
    mask = ix->slot_cap - 1;
    i = h & mask;
    for (;;) {
        uint64_t e = ix->slots[i];
        if (!e) return TS__IX_NONE;
        if ((uint32_t)(e >> 32) == h) {
            uint32_t tid = (uint32_t)e - 1;
            const ts__ix_term *t = &ix->terms[tid];
            const char *k = ix->arena + t->off;
            if (t->len == n + 1 && (unsigned char)k[0] == (unsigned)field && memcmp(k + 1, s, n) == 0)
                return tid;
        }
        i = (i + 1) & mask;
    }
}

TS__PRIVATE uint32_t ts__ix_lookup(const ts_index *ix, int field, const char *s, size_t n)
{
    return ts__ix_lookup_h(ix, field, s, n, ts__ix_key_hash(field, s, n));
}

TS__PRIVATE void ts__ix_slot_put(uint64_t *slots, size_t cap, uint32_t h, uint32_t tid)
{
    size_t i = h & (cap - 1);
    while (slots[i]) i = (i + 1) & (cap - 1);
    slots[i] = ((uint64_t)h << 32) | ((uint64_t)tid + 1);
}

/* Finds or adds a term (h: its ts__ix_key_hash). On failure nothing changed. */
TS__PRIVATE ts_result ts__ix_intern_h(ts_index *ix, int field, const char *s, size_t n, uint32_t h, uint32_t *out)
{
    const ts_allocator *a = &ix->env.alloc;
    uint32_t tid = ts__ix_lookup_h(ix, field, s, n, h);
    ts__ix_term *t;
    void *q;
    if (tid != TS__IX_NONE) { *out = tid; return TS_OK; }
    if (n >= 0xFFFFFFF0u || ix->nterms >= 0xFFFFFFF0u || ix->arena_len + n + 1 > 0xFFFFFFF0u)
        return TS__FAIL(&ix->env, TS_E_TOOBIG, "index dictionary is full");
    /* reserve everything first */
    if ((size_t)ix->nterms + 1 > ix->capterms) {
        q = ts__ix_grow(a, ix->terms, &ix->capterms, (size_t)ix->nterms + 1, sizeof(ts__ix_term));
        if (!q) return TS_E_NOMEM;
        ix->terms = (ts__ix_term *)q;
    }
    if (ix->arena_len + n + 1 > ix->arena_cap) {
        q = ts__ix_grow(a, ix->arena, &ix->arena_cap, ix->arena_len + n + 1, 1);
        if (!q) return TS_E_NOMEM;
        ix->arena = (char *)q;
    }
    if (field == TS__IX_F_TEXT && ix->nrecent + 1 > ix->caprecent) {
        q = ts__ix_grow(a, ix->recent, &ix->caprecent, ix->nrecent + 1, sizeof(uint32_t));
        if (!q) return TS_E_NOMEM;
        ix->recent = (uint32_t *)q;
    }
    if (((size_t)ix->nterms + 1) * 10 > ix->slot_cap * 7) {
        size_t ncap = ix->slot_cap ? ix->slot_cap * 2 : 1024, i;
        uint64_t *ns = (uint64_t *)ts__calloc(a, ncap, sizeof(uint64_t));
        if (!ns) return TS_E_NOMEM;
        for (i = 0; i < ix->slot_cap; i++)
            if (ix->slots[i])
                ts__ix_slot_put(ns, ncap, (uint32_t)(ix->slots[i] >> 32), (uint32_t)ix->slots[i] - 1);
        ts__free(a, ix->slots, ix->slot_cap * sizeof(uint64_t));
        ix->slots = ns;
        ix->slot_cap = ncap;
    }
    tid = ix->nterms++;
    t = &ix->terms[tid];
    memset(t, 0, sizeof *t);
    t->off = (uint32_t)ix->arena_len;
    t->len = (uint32_t)(n + 1);
    t->hash = h;
    ix->arena[ix->arena_len] = (char)field;
    if (n) memcpy(ix->arena + ix->arena_len + 1, s, n);
    ix->arena_len += n + 1;
    ts__ix_slot_put(ix->slots, ix->slot_cap, h, tid);
    if (field == TS__IX_F_TEXT) ix->recent[ix->nrecent++] = tid;
    *out = tid;
    return TS_OK;
}

TS__PRIVATE ts_result ts__ix_intern(ts_index *ix, int field, const char *s, size_t n, uint32_t *out)
{
    return ts__ix_intern_h(ix, field, s, n, ts__ix_key_hash(field, s, n), out);
}

/* Folds the recently added text terms into the sorted array that prefix
   queries binary-search (sort the few new ones, merge from the back). */
TS__PRIVATE ts_result ts__ix_merge_recent(ts_index *ix)
{
    size_t i, j, k;
    void *q;
    if (!ix->nrecent) return TS_OK;
    if (ix->nsorted + ix->nrecent > ix->capsorted) {
        q = ts__ix_grow(&ix->env.alloc, ix->sorted, &ix->capsorted, ix->nsorted + ix->nrecent, sizeof(uint32_t));
        if (!q) return TS_E_NOMEM;
        ix->sorted = (uint32_t *)q;
    }
    ts__ix_sort(ix->recent, ix->nrecent, ts__ix_term_cmp_cb, ix);
    i = ix->nsorted; j = ix->nrecent; k = i + j;
    while (j > 0) {
        if (i > 0 && ts__ix_term_cmp_cb(ix, ix->sorted[i - 1], ix->recent[j - 1]) > 0)
            ix->sorted[--k] = ix->sorted[--i];
        else
            ix->sorted[--k] = ix->recent[--j];
    }
    ix->nsorted += ix->nrecent;
    ix->nrecent = 0;
    return TS_OK;
}

/* ---- the order list ------------------------------------------------------------- */

/* After this, one insert cannot fail. */
TS__PRIVATE ts_result ts__ix_order_reserve(ts_index *ix)
{
    if (!ix->spare) {
        ix->spare = (ts__ix_oblk *)ts__alloc(&ix->env.alloc, sizeof(ts__ix_oblk));
        if (!ix->spare) return TS_E_NOMEM;
        ix->spare->n = 0;
    }
    if (ix->nblk + 1 > ix->capblk) {
        void *q = ts__ix_grow(&ix->env.alloc, ix->blk, &ix->capblk, ix->nblk + 1, sizeof(ts__ix_oblk *));
        if (!q) return TS_E_NOMEM;
        ix->blk = (ts__ix_oblk **)q;
    }
    return TS_OK;
}

/* Inserts docno d (its key fields set). Needs ts__ix_order_reserve(). */
TS__PRIVATE void ts__ix_order_insert(ts_index *ix, uint32_t d)
{
    size_t lo, hi, b;
    uint32_t p, plo, phi;
    ts__ix_oblk *B;
    if (ix->nblk == 0) {
        ix->blk[0] = ix->spare;
        ix->spare = NULL;
        ix->blk[0]->n = 0;
        ix->nblk = 1;
    }
    B = ix->blk[ix->nblk - 1];
    if (B->n == 0 || ts__ix_doc_cmp(ix, B->d[B->n - 1], d) < 0) {
        b = ix->nblk - 1; /* appending, as a build in key order does */
    } else {
        lo = 0; hi = ix->nblk;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (ts__ix_doc_cmp(ix, ix->blk[mid]->d[0], d) < 0) lo = mid + 1;
            else hi = mid;
        }
        b = lo ? lo - 1 : 0;
    }
    B = ix->blk[b];
    plo = 0; phi = B->n;
    while (plo < phi) {
        uint32_t mid = plo + (phi - plo) / 2;
        if (ts__ix_doc_cmp(ix, B->d[mid], d) < 0) plo = mid + 1;
        else phi = mid;
    }
    p = plo;
    if (B->n == TS__IX_OB) {
        ts__ix_oblk *S = ix->spare;
        uint32_t half = TS__IX_OB / 2;
        ix->spare = NULL;
        memcpy(S->d, B->d + half, (TS__IX_OB - half) * sizeof(uint32_t));
        S->n = TS__IX_OB - half;
        B->n = half;
        memmove(ix->blk + b + 2, ix->blk + b + 1, (ix->nblk - b - 1) * sizeof(ts__ix_oblk *));
        ix->blk[b + 1] = S;
        ix->nblk++;
        if (p > half) { B = S; p -= half; }
    }
    memmove(B->d + p + 1, B->d + p, (B->n - p) * sizeof(uint32_t));
    B->d[p] = d;
    B->n++;
}

/* Removes docno d (found by its current key fields). 1 removed, 0 absent. */
TS__PRIVATE int ts__ix_order_remove(ts_index *ix, uint32_t d)
{
    size_t lo = 0, hi = ix->nblk, b;
    uint32_t plo, phi;
    ts__ix_oblk *B;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ts__ix_doc_cmp(ix, ix->blk[mid]->d[0], d) <= 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return 0;
    b = lo - 1;
    B = ix->blk[b];
    plo = 0; phi = B->n;
    while (plo < phi) {
        uint32_t mid = plo + (phi - plo) / 2;
        if (ts__ix_doc_cmp(ix, B->d[mid], d) < 0) plo = mid + 1;
        else phi = mid;
    }
    if (plo >= B->n || B->d[plo] != d) return 0;
    memmove(B->d + plo, B->d + plo + 1, (B->n - plo - 1) * sizeof(uint32_t));
    B->n--;
    if (B->n == 0) {
        if (!ix->spare) ix->spare = B;
        else ts__free(&ix->env.alloc, B, sizeof(ts__ix_oblk));
        memmove(ix->blk + b, ix->blk + b + 1, (ix->nblk - b - 1) * sizeof(ts__ix_oblk *));
        ix->nblk--;
    }
    return 1;
}

/* A position in the order list: block b, index i (b == nblk: the end). */
typedef struct ts__ix_pos {
    size_t b;
    uint32_t i;
} ts__ix_pos;

/* The first position whose session has no startTime or, with has_bound, a
   startTime <= bound: sessions are in startTime descending order with the
   ones without a startTime last, so this is a binary search. */
TS__PRIVATE ts__ix_pos ts__ix_order_seek(const ts_index *ix, int has_bound, int64_t bound)
{
    size_t lo = 0, hi = ix->nblk;
    uint32_t plo, phi;
    const ts__ix_oblk *B;
    ts__ix_pos p;
#define TS__IX_PAST(d) (!ix->docs[d].has_start || (has_bound && ix->docs[d].start <= bound))
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const ts__ix_oblk *M = ix->blk[mid];
        if (TS__IX_PAST(M->d[M->n - 1])) hi = mid;
        else lo = mid + 1;
    }
    p.b = lo;
    p.i = 0;
    if (lo == ix->nblk) return p;
    B = ix->blk[lo];
    plo = 0; phi = B->n;
    while (plo < phi) {
        uint32_t mid = plo + (phi - plo) / 2;
        if (TS__IX_PAST(B->d[mid])) phi = mid;
        else plo = mid + 1;
    }
    p.i = plo;
#undef TS__IX_PAST
    return p;
}

/* The run of the order list holding the sessions with from <= startTime <= to. */
TS__PRIVATE void ts__ix_order_range(const ts_index *ix, int has_from, int64_t from, int has_to, int64_t to,
                                    ts__ix_pos *begin, ts__ix_pos *end)
{
    if (has_to) *begin = ts__ix_order_seek(ix, 1, to);
    else { begin->b = 0; begin->i = 0; }
    if (has_from && from != INT64_MIN) *end = ts__ix_order_seek(ix, 1, from - 1);
    else *end = ts__ix_order_seek(ix, 0, 0);
}

/* Sessions between two positions, counted a block at a time. */
TS__PRIVATE size_t ts__ix_order_span(const ts_index *ix, ts__ix_pos a, ts__ix_pos e)
{
    size_t n = 0;
    while (a.b < e.b) { n += ix->blk[a.b]->n - a.i; a.b++; a.i = 0; }
    if (a.b == e.b && a.b < ix->nblk && e.i > a.i) n += e.i - a.i;
    return n;
}

/* Walks [a, e): with res, counts the sessions whose bit is set and copies
   those with match index in [from, to) into out; without res every session
   matches (then whole blocks are skipped). stop: return as soon as `to`
   matches were seen (no total needed). Returns the matches counted. */
TS__PRIVATE size_t ts__ix_order_walk(const ts_index *ix, ts__ix_pos a, ts__ix_pos e, const uint64_t *res,
                                     size_t from, size_t to, uint32_t *out, int stop)
{
    size_t seen = 0;
    while (a.b < ix->nblk && (a.b < e.b || (a.b == e.b && a.i < e.i))) {
        const ts__ix_oblk *B = ix->blk[a.b];
        uint32_t lim = a.b == e.b ? e.i : B->n, i = a.i;
        if (!res) {
            uint32_t n = lim - i;
            if (seen + n > from && seen < to) {
                size_t s = from > seen ? from - seen : 0, t = to - seen < n ? to - seen : n, k;
                for (k = s; k < t; k++) out[seen + k - from] = B->d[i + k];
            }
            seen += n;
        } else {
            for (; i < lim; i++) {
                uint32_t d = B->d[i];
                if (!((res[d >> 6] >> (d & 63)) & 1)) continue;
                if (seen >= from && seen < to) out[seen - from] = d;
                seen++;
                if (stop && seen >= to) return seen;
            }
        }
        if (stop && seen >= to) return seen;
        a.b++;
        a.i = 0;
    }
    return seen;
}

/* ---- sessions ----------------------------------------------------------------- */

TS__PRIVATE void ts__ix_init(ts_index *ix, const ts_allocator *a, const ts_logger *l, int extra_text)
{
    memset(ix, 0, sizeof *ix);
    ts__env_init(&ix->env, a, l);
    ix->extra_text = extra_text ? 1 : 0;
    ts__map_init(&ix->ids, &ix->env.alloc);
    ts__buf_init(&ix->qbuf, &ix->env.alloc);
}

/* Frees everything (the object itself stays usable after ts__ix_init). */
TS__PRIVATE void ts__ix_free_all(ts_index *ix)
{
    const ts_allocator *a = &ix->env.alloc;
    uint32_t i;
    size_t b;
    for (i = 0; i < ix->nterms; i++) ts__ix_post_clear(ix, &ix->terms[i]);
    ts__free(a, ix->terms, ix->capterms * sizeof(ts__ix_term));
    ts__free(a, ix->slots, ix->slot_cap * sizeof(uint64_t));
    ts__free(a, ix->arena, ix->arena_cap);
    ts__free(a, ix->sorted, ix->capsorted * sizeof(uint32_t));
    ts__free(a, ix->recent, ix->caprecent * sizeof(uint32_t));
    for (i = 0; i < ix->ndocs; i++) {
        ts__ix_doc *d = &ix->docs[i];
        if (!d->id) continue;
        ts__free(a, d->id, (size_t)d->id_len + 1);
        ts__free(a, d->fwd, d->fwd_len);
    }
    ts__free(a, ix->docs, ix->capdocs * sizeof(ts__ix_doc));
    ts__free(a, ix->freeno, ix->capfree * sizeof(uint32_t));
    ts__free(a, ix->live, ix->capline * sizeof(uint64_t));
    ts__map_free(&ix->ids);
    for (b = 0; b < ix->nblk; b++) ts__free(a, ix->blk[b], sizeof(ts__ix_oblk));
    ts__free(a, ix->blk, ix->capblk * sizeof(ts__ix_oblk *));
    ts__free(a, ix->spare, sizeof(ts__ix_oblk));
    ts__free(a, ix->pairs, ix->cappairs * sizeof(uint64_t));
    ts__free(a, ix->opairs, ix->capopairs * sizeof(uint64_t));
    ts__free(a, ix->diff, ix->capdiff * sizeof(uint32_t));
    ts__free(a, ix->enc, ix->capenc);
    ts__free(a, ix->bm_a, ix->cap_a * sizeof(uint64_t));
    ts__free(a, ix->bm_b, ix->cap_b * sizeof(uint64_t));
    ts__free(a, ix->qdocs, ix->capqdocs * sizeof(uint32_t));
    ts__free(a, ix->qperm, ix->capqperm * sizeof(uint32_t));
    ts__free(a, ix->qkey, ix->capqkey * sizeof(uint64_t));
    ts__free(a, ix->qscore, ix->capqscore * sizeof(double));
    ts__free(a, ix->qtf, ix->capqtf * sizeof(uint64_t));
    ts__free(a, ix->crit, ix->capcrit * sizeof(ts__ix_crit));
    ts__buf_free(&ix->qbuf);
}

/* Makes one more docno available (the arrays grow together, so taking and
   giving back a number never fails). */
TS__PRIVATE ts_result ts__ix_reserve_doc(ts_index *ix)
{
    const ts_allocator *a = &ix->env.alloc;
    size_t need = (size_t)ix->ndocs + 1, old;
    void *q;
    if (ix->nfree) return TS_OK;
    if (ix->ndocs >= 0xFFFFFFF0u) return TS__FAIL(&ix->env, TS_E_TOOBIG, "too many sessions in one index");
    if (need > ix->capdocs) {
        old = ix->capdocs;
        q = ts__ix_grow(a, ix->docs, &ix->capdocs, need, sizeof(ts__ix_doc));
        if (!q) return TS_E_NOMEM;
        ix->docs = (ts__ix_doc *)q;
        memset(ix->docs + old, 0, (ix->capdocs - old) * sizeof(ts__ix_doc));
    }
    if (ix->capdocs > ix->capfree) {
        q = ts__ix_grow(a, ix->freeno, &ix->capfree, ix->capdocs, sizeof(uint32_t));
        if (!q) return TS_E_NOMEM;
        ix->freeno = (uint32_t *)q;
    }
    if ((ix->capdocs + 63) / 64 > ix->capline) {
        old = ix->capline;
        q = ts__ix_grow(a, ix->live, &ix->capline, (ix->capdocs + 63) / 64, sizeof(uint64_t));
        if (!q) return TS_E_NOMEM;
        ix->live = (uint64_t *)q;
        memset(ix->live + old, 0, (ix->capline - old) * sizeof(uint64_t));
    }
    return TS_OK;
}

TS__PRIVATE uint32_t ts__ix_take_doc(ts_index *ix)
{
    return ix->nfree ? ix->freeno[--ix->nfree] : ix->ndocs++;
}

/* Makes room for n items in one of the index's arrays; sets r to TS_OK or
   TS_E_NOMEM (recorded). */
#define TS__IX_RESERVE(r, ix, field, capfield, n, T)                                         \
    do {                                                                                    \
        size_t ts__n_ = (n);                                                                \
        (r) = TS_OK;                                                                        \
        if (ts__n_ > (ix)->capfield || !(ix)->field) {                                      \
            void *ts__q_ = ts__ix_grow(&(ix)->env.alloc, (ix)->field, &(ix)->capfield,      \
                                       ts__n_ ? ts__n_ : 1, sizeof(T));                     \
            if (ts__q_) (ix)->field = (T *)ts__q_;                                          \
            else (r) = TS__FAIL(&(ix)->env, TS_E_NOMEM, "index: out of memory");            \
        }                                                                                   \
    } while (0)

/* Counts one occurrence of a term in the session being collected. */
TS__PRIVATE ts_result ts__ix_count_h(ts_index *ix, int field, const char *s, size_t n, uint32_t h)
{
    uint32_t tid;
    ts__ix_term *t;
    ts_result r = ts__ix_intern_h(ix, field, s, n, h, &tid);
    if (r) return r == TS_E_NOMEM ? TS__FAIL(&ix->env, r, "index: out of memory") : r;
    t = &ix->terms[tid];
    if (t->stamp == ix->stamp) {
        if (field == TS__IX_F_TEXT) {
            if ((uint32_t)ix->pairs[t->slot] == 0xFFFFFFFFu)
                return TS__FAIL(&ix->env, TS_E_TOOBIG, "a term occurs too often in one session");
            ix->pairs[t->slot]++;
        }
        return TS_OK;
    }
    TS__IX_RESERVE(r, ix, pairs, cappairs, ix->npairs + 1, uint64_t);
    if (r) return r;
    t->stamp = ix->stamp;
    t->slot = (uint32_t)ix->npairs;
    ix->pairs[ix->npairs++] = ((uint64_t)tid << 32) | 1u;
    return TS_OK;
}

TS__PRIVATE ts_result ts__ix_count(ts_index *ix, int field, const char *s, size_t n)
{
    return ts__ix_count_h(ix, field, s, n, ts__ix_key_hash(field, s, n));
}

/* Tokens go through the dictionary in batches: first every token's slot is
   prefetched, then the term records of the likely hits, then the lookups
   run. The misses of one batch overlap instead of queueing (the dictionary
   outgrows the caches on real corpora; this is most of the build time). */
#define TS__IX_BATCH 32
#if defined(__GNUC__) || defined(__clang__)
#define TS__IX_PREFETCH(p) __builtin_prefetch(p)
#else
#define TS__IX_PREFETCH(p) ((void)(p))
#endif

typedef struct ts__ix_btok {
    size_t off, len;
    uint32_t h;
} ts__ix_btok;

TS__PRIVATE ts_result ts__ix_count_text(ts_index *ix, const char *s, size_t n, uint32_t *dl)
{
    ts__ix_tok t;
    ts__ix_btok b[TS__IX_BATCH];
    ts_result r = TS_OK;
    int k = 1;
    size_t nb, used, j;
    if (!s || !n) return TS_OK;
    ts__ix_tok_init(&t, s, n, &ix->env.alloc);
    while (k > 0 && r == TS_OK) {
        nb = 0;
        used = 0;
        while (nb < TS__IX_BATCH && (k = ts__ix_tok_next(&t)) > 0) {
            if (!ts__ix_keep(t.tok, t.len, t.ncp)) continue;
            TS__IX_RESERVE(r, ix, enc, capenc, used + t.len, unsigned char);
            if (r) break;
            memcpy(ix->enc + used, t.tok, t.len);
            b[nb].off = used;
            b[nb].len = t.len;
            b[nb].h = ts__ix_key_hash(TS__IX_F_TEXT, t.tok, t.len);
            if (ix->slot_cap) TS__IX_PREFETCH(&ix->slots[b[nb].h & (ix->slot_cap - 1)]);
            used += t.len;
            nb++;
        }
        if (r) break;
        if (ix->slot_cap) {
            for (j = 0; j < nb; j++) {
                uint64_t e = ix->slots[b[j].h & (ix->slot_cap - 1)];
                if (e && (uint32_t)(e >> 32) == b[j].h) TS__IX_PREFETCH(&ix->terms[(uint32_t)e - 1]);
            }
        }
        for (j = 0; j < nb; j++) {
            if (*dl == 0xFFFFFFFFu) { r = TS__FAIL(&ix->env, TS_E_TOOBIG, "session text has too many tokens"); break; }
            if ((r = ts__ix_count_h(ix, TS__IX_F_TEXT, (const char *)ix->enc + b[j].off, b[j].len, b[j].h)) != TS_OK)
                break;
            (*dl)++;
        }
    }
    if (k < 0 && r == TS_OK) r = TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
    ts__ix_tok_done(&t);
    return r;
}

TS__PRIVATE void ts__ix_new_stamp(ts_index *ix)
{
    uint32_t i;
    if (++ix->stamp != 0) return;
    for (i = 0; i < ix->nterms; i++) ix->terms[i].stamp = 0;
    ix->stamp = 1;
}

TS__PRIVATE ts_result ts__ix_check_doc_args(ts_index *ix, const ts_index_doc *doc)
{
    size_t i;
    if (!doc) return TS__FAIL(&ix->env, TS_E_INVALID, "NULL session");
    if (!doc->id || !ts__valid_id(doc->id, doc->id_len))
        return TS__FAIL(&ix->env, TS_E_INVALID, "invalid session id");
    if ((doc->tag_count && !doc->tags) || (doc->topic_count && !doc->topics) ||
        (!doc->name && doc->name_len) || (!doc->description && doc->description_len) ||
        (!doc->extra_text && doc->extra_text_len))
        return TS__FAIL(&ix->env, TS_E_INVALID, "NULL array or string with a non-zero length in session %.*s",
                        (int)doc->id_len, doc->id);
    for (i = 0; i < doc->tag_count; i++)
        if (!doc->tags[i]) return TS__FAIL(&ix->env, TS_E_INVALID, "NULL tag in session %.*s", (int)doc->id_len, doc->id);
    for (i = 0; i < doc->topic_count; i++)
        if (!doc->topics[i]) return TS__FAIL(&ix->env, TS_E_INVALID, "NULL topic in session %.*s", (int)doc->id_len, doc->id);
    return TS_OK;
}

/* Collects the session's terms into ix->pairs, sorted by term: the new
   forward list. *dl gets the full-text token count. */
TS__PRIVATE ts_result ts__ix_collect(ts_index *ix, const ts_index_doc *doc, uint32_t *dl)
{
    ts_result r;
    size_t i;
    ix->npairs = 0;
    *dl = 0;
    ts__ix_new_stamp(ix);
    if ((r = ts__ix_count_text(ix, doc->name, doc->name_len, dl)) != TS_OK) return r;
    if ((r = ts__ix_count_text(ix, doc->description, doc->description_len, dl)) != TS_OK) return r;
    if (ix->extra_text && (r = ts__ix_count_text(ix, doc->extra_text, doc->extra_text_len, dl)) != TS_OK) return r;
    for (i = 0; i < doc->tag_count; i++) {
        const char *g = doc->tags[i];
        if ((r = ts__ix_count(ix, TS__IX_F_TAG, g, doc->tag_lens ? doc->tag_lens[i] : strlen(g))) != TS_OK) return r;
    }
    for (i = 0; i < doc->topic_count; i++) {
        const char *g = doc->topics[i];
        if ((r = ts__ix_count(ix, TS__IX_F_TOPIC, g, doc->topic_lens ? doc->topic_lens[i] : strlen(g))) != TS_OK)
            return r;
    }
    if (doc->category && (r = ts__ix_count(ix, TS__IX_F_CATEGORY, doc->category, doc->category_len)) != TS_OK)
        return r;
    if (doc->sub_category &&
        (r = ts__ix_count(ix, TS__IX_F_SUBCAT, doc->sub_category, doc->sub_category_len)) != TS_OK)
        return r;
    if (doc->status && (r = ts__ix_count(ix, TS__IX_F_STATUS, doc->status, doc->status_len)) != TS_OK) return r;
    if (doc->has_start_time) {
        char m[32];
        size_t n = ts__ix_month_key(doc->start_time_ms, m);
        if ((r = ts__ix_count(ix, TS__IX_F_MONTH, m, n)) != TS_OK) return r;
    }
    ts__ix_sort_u64(ix->pairs, ix->npairs);
    return TS_OK;
}

/* Encodes pairs[0..n) as a forward list in a fresh allocation. */
TS__PRIVATE ts_result ts__ix_encode_fwd(ts_index *ix, const uint64_t *pairs, size_t n,
                                        unsigned char **out, uint32_t *out_len)
{
    size_t i, len = 0;
    uint32_t prev = 0;
    ts_result r;
    *out = NULL;
    *out_len = 0;
    if (!n) return TS_OK;
    if (n > ((size_t)-1) / 16 || n * 10 > 0xFFFFFFF0u)
        return TS__FAIL(&ix->env, TS_E_TOOBIG, "session has too many terms");
    TS__IX_RESERVE(r, ix, enc, capenc, n * 10, unsigned char);
    if (r) return r;
    for (i = 0; i < n; i++) {
        uint32_t tid = (uint32_t)(pairs[i] >> 32);
        len += ts__ix_enc_varint(ix->enc + len, tid - prev);
        len += ts__ix_enc_varint(ix->enc + len, (uint32_t)pairs[i]);
        prev = tid;
    }
    *out = (unsigned char *)ts__alloc(&ix->env.alloc, len);
    if (!*out) return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
    memcpy(*out, ix->enc, len);
    *out_len = (uint32_t)len;
    return TS_OK;
}

/* Decodes a session's forward list into out[] as (term << 32 | tf). */
TS__PRIVATE void ts__ix_decode_fwd(const ts__ix_doc *d, uint64_t *out)
{
    const unsigned char *p = d->fwd;
    uint32_t i, tid = 0;
    for (i = 0; i < d->nterms; i++) {
        tid += (uint32_t)ts__ix_dec_varint(&p);
        out[i] = ((uint64_t)tid << 32) | (uint32_t)ts__ix_dec_varint(&p);
    }
}

TS__PRIVATE void ts__ix_set_live(ts_index *ix, uint32_t d, int on)
{
    uint64_t bit = (uint64_t)1 << (d & 63);
    if (on) ix->live[d >> 6] |= bit;
    else ix->live[d >> 6] &= ~bit;
}

TS__PRIVATE ts_result ts__ix_insert_new(ts_index *ix, const ts_index_doc *doc, uint32_t dl,
                                        unsigned char *fwd, uint32_t fwd_len)
{
    const ts_allocator *a = &ix->env.alloc;
    ts_result r;
    uint32_t d;
    size_t i;
    char *id;
    ts__ix_doc *D;
    if ((r = ts__ix_reserve_doc(ix)) != TS_OK || (r = ts__ix_order_reserve(ix)) != TS_OK)
        return r == TS_E_NOMEM ? TS__FAIL(&ix->env, r, "index: out of memory") : r;
    id = ts__strndup(a, doc->id, doc->id_len);
    if (!id) return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
    d = ts__ix_take_doc(ix);
    if (ts__map_put(&ix->ids, doc->id, doc->id_len, d) != TS_OK) {
        ts__free(a, id, doc->id_len + 1);
        ix->freeno[ix->nfree++] = d;
        return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
    }
    for (i = 0; i < ix->npairs; i++) {
        /* two-stage prefetch: the container vector 8 pairs ahead, the
           container's tail 4 ahead (appends land there) */
        if (i + 8 < ix->npairs) TS__IX_PREFETCH(ix->terms[ix->pairs[i + 8] >> 32].conts);
        if (i + 4 < ix->npairs) {
            const ts__ix_term *t4 = &ix->terms[ix->pairs[i + 4] >> 32];
            if (t4->ncont) {
                const ts__ix_cont *c4 = &t4->conts[t4->ncont - 1];
                TS__IX_PREFETCH((const char *)c4->data + (c4->cap ? (size_t)c4->card * 2 : 0));
            }
        }
        if (ts__ix_post_add(ix, &ix->terms[ix->pairs[i] >> 32], d) != TS_OK) {
            while (i-- > 0) ts__ix_post_del(ix, &ix->terms[ix->pairs[i] >> 32], d);
            ts__map_del(&ix->ids, doc->id, doc->id_len);
            ts__free(a, id, doc->id_len + 1);
            ix->freeno[ix->nfree++] = d;
            return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
        }
    }
    D = &ix->docs[d];
    D->id = id;
    D->id_len = (uint32_t)doc->id_len;
    D->fwd = fwd;
    D->fwd_len = fwd_len;
    D->nterms = (uint32_t)ix->npairs;
    D->dl = dl;
    D->has_start = doc->has_start_time ? 1 : 0;
    D->start = doc->has_start_time ? doc->start_time_ms : 0;
    ts__ix_set_live(ix, d, 1);
    ix->nlive++;
    ix->total_dl += dl;
    ts__ix_order_insert(ix, d);
    return TS_OK;
}

TS__PRIVATE ts_result ts__ix_update(ts_index *ix, uint32_t d, const ts_index_doc *doc, uint32_t dl,
                                    unsigned char *fwd, uint32_t fwd_len)
{
    ts__ix_doc *D = &ix->docs[d];
    size_t i = 0, j = 0, nadd = 0, ndel = 0, k;
    int has_start = doc->has_start_time ? 1 : 0;
    int64_t start = has_start ? doc->start_time_ms : 0;
    int moved = has_start != D->has_start || start != D->start;
    ts_result r;
    TS__IX_RESERVE(r, ix, opairs, capopairs, D->nterms, uint64_t);
    if (r) return r;
    TS__IX_RESERVE(r, ix, diff, capdiff, (size_t)D->nterms + ix->npairs, uint32_t);
    if (r) return r;
    if (moved && (r = ts__ix_order_reserve(ix)) != TS_OK) return TS__FAIL(&ix->env, r, "index: out of memory");
    ts__ix_decode_fwd(D, ix->opairs);
    /* diff: terms to add go to the front of diff[], terms to drop to the back */
    while (i < ix->npairs || j < D->nterms) {
        uint32_t a = i < ix->npairs ? (uint32_t)(ix->pairs[i] >> 32) : TS__IX_NONE;
        uint32_t b = j < D->nterms ? (uint32_t)(ix->opairs[j] >> 32) : TS__IX_NONE;
        if (a == b) { i++; j++; }
        else if (a < b) { ix->diff[nadd++] = a; i++; }
        else { ix->diff[ix->capdiff - 1 - ndel++] = b; j++; }
    }
    for (k = 0; k < nadd; k++) {
        if (ts__ix_post_add(ix, &ix->terms[ix->diff[k]], d) != TS_OK) {
            while (k-- > 0) ts__ix_post_del(ix, &ix->terms[ix->diff[k]], d);
            return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
        }
    }
    for (k = 0; k < ndel; k++) ts__ix_post_del(ix, &ix->terms[ix->diff[ix->capdiff - 1 - k]], d);
    if (moved) {
        ts__ix_order_remove(ix, d);
        D->has_start = has_start;
        D->start = start;
        ts__ix_order_insert(ix, d);
    }
    ts__free(&ix->env.alloc, D->fwd, D->fwd_len);
    D->fwd = fwd;
    D->fwd_len = fwd_len;
    D->nterms = (uint32_t)ix->npairs;
    ix->total_dl = ix->total_dl - D->dl + dl;
    D->dl = dl;
    return TS_OK;
}

TASKSTORE_DEF ts_index_config ts_index_config_default(void)
{
    ts_index_config c;
    memset(&c, 0, sizeof c);
    return c;
}

TASKSTORE_DEF ts_result ts_index_create(const ts_index_config *cfg, ts_index **out)
{
    ts_index_config c = cfg ? *cfg : ts_index_config_default();
    ts_index *ix;
    if (!out) return TS_E_INVALID;
    *out = NULL;
    ix = (ts_index *)ts__alloc(&c.alloc, sizeof *ix);
    if (!ix) return TS_E_NOMEM;
    ts__ix_init(ix, &c.alloc, &c.logger, c.index_extra_text);
    *out = ix;
    return TS_OK;
}

TASKSTORE_DEF void ts_index_destroy(ts_index *idx)
{
    ts_allocator a;
    if (!idx) return;
    a = idx->env.alloc;
    ts__ix_free_all(idx);
    ts__free(&a, idx, sizeof *idx);
}

TASKSTORE_DEF ts_result ts_index_last_error(const ts_index *idx, ts_error_info *out)
{
    return ts__env_last_error(idx ? &idx->env : NULL, out);
}

TASKSTORE_DEF ts_result ts_index_put(ts_index *idx, const ts_index_doc *doc)
{
    ts_result r;
    uint32_t dl;
    unsigned char *fwd;
    uint32_t fwd_len;
    uint64_t v;
    if (!idx) return TS_E_INVALID;
    if ((r = ts__ix_check_doc_args(idx, doc)) != TS_OK) return r;
    if ((r = ts__ix_collect(idx, doc, &dl)) != TS_OK) return r;
    if (idx->total_dl + dl < idx->total_dl) return TS__FAIL(&idx->env, TS_E_TOOBIG, "too many tokens");
    if ((r = ts__ix_encode_fwd(idx, idx->pairs, idx->npairs, &fwd, &fwd_len)) != TS_OK) return r;
    if (ts__map_get(&idx->ids, doc->id, doc->id_len, &v))
        r = ts__ix_update(idx, (uint32_t)v, doc, dl, fwd, fwd_len);
    else
        r = ts__ix_insert_new(idx, doc, dl, fwd, fwd_len);
    if (r) ts__free(&idx->env.alloc, fwd, fwd_len);
    else idx->changes++;
    return r;
}

TASKSTORE_DEF ts_result ts_index_remove(ts_index *idx, const char *id, size_t id_len)
{
    uint64_t v;
    uint32_t d, i, tid = 0;
    ts__ix_doc *D;
    const unsigned char *p;
    if (!idx || (!id && id_len)) return TS_E_INVALID;
    if (!id || !ts__map_get(&idx->ids, id, id_len, &v)) return TS_E_NOTFOUND;
    d = (uint32_t)v;
    D = &idx->docs[d];
    p = D->fwd;
    for (i = 0; i < D->nterms; i++) {
        tid += (uint32_t)ts__ix_dec_varint(&p);
        (void)ts__ix_dec_varint(&p);
        ts__ix_post_del(idx, &idx->terms[tid], d);
    }
    ts__ix_order_remove(idx, d);
    ts__map_del(&idx->ids, id, id_len);
    ts__free(&idx->env.alloc, D->id, (size_t)D->id_len + 1);
    ts__free(&idx->env.alloc, D->fwd, D->fwd_len);
    idx->total_dl -= D->dl;
    memset(D, 0, sizeof *D);
    ts__ix_set_live(idx, d, 0);
    idx->nlive--;
    idx->freeno[idx->nfree++] = d;
    idx->changes++;
    return TS_OK;
}

TASKSTORE_DEF int ts_index_contains(const ts_index *idx, const char *id, size_t id_len)
{
    if (!idx || !id) return 0;
    return ts__map_get(&idx->ids, id, id_len, NULL);
}

TASKSTORE_DEF void ts_index_clear(ts_index *idx)
{
    ts_allocator a;
    ts_logger l;
    ts_error_info last;
    int extra;
    if (!idx) return;
    a = idx->env.alloc; l = idx->env.logger; last = idx->env.last; extra = idx->extra_text;
    ts__ix_free_all(idx);
    ts__ix_init(idx, &a, &l, extra);
    idx->env.last = last;
}

/* Gives array containers back their unused tail after a bulk build
   (failure to shrink is harmless). */
TS__PRIVATE void ts__ix_trim(ts_index *ix)
{
    uint32_t i, j;
    for (i = 0; i < ix->nterms; i++) {
        ts__ix_term *t = &ix->terms[i];
        for (j = 0; j < t->ncont; j++) {
            ts__ix_cont *c = &t->conts[j];
            if (c->cap && c->cap > c->card + 3) {
                uint32_t ncap = (c->card + 3) & ~3u;
                void *q = ts__realloc(&ix->env.alloc, c->data, (size_t)c->cap * sizeof(uint16_t),
                                      (size_t)ncap * sizeof(uint16_t));
                if (q) { c->data = q; c->cap = ncap; }
            }
        }
    }
}

TASKSTORE_DEF ts_result ts_index_build(ts_index *idx, const ts_index_doc *docs, size_t count, int64_t now_ms)
{
    size_t i;
    ts_result r;
    if (!idx || (!docs && count)) return TS_E_INVALID;
    ts_index_clear(idx);
    for (i = 0; i < count; i++) {
        if ((r = ts_index_put(idx, &docs[i])) != TS_OK) {
            ts_index_clear(idx);
            return r;
        }
    }
    ts__ix_trim(idx);
    idx->has_built = 1;
    idx->built_ms = now_ms;
    idx->changes = 0;
    return TS_OK;
}

/* ---- search --------------------------------------------------------------------- */

TS__PRIVATE int ts__ix_is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

TS__PRIVATE ts_result ts__ix_add_crit(ts_index *ix, int kind, int text, uint32_t tid, size_t off, size_t len,
                                      uint64_t est)
{
    ts_result r;
    ts__ix_crit *c;
    TS__IX_RESERVE(r, ix, crit, capcrit, ix->ncrit + 1, ts__ix_crit);
    if (r) return r;
    c = &ix->crit[ix->ncrit++];
    c->kind = kind; c->text = text; c->tid = tid; c->off = off; c->len = len; c->est = est; c->df = est;
    return TS_OK;
}

/* A filter value: one criterion, matching nothing when no session has it. */
TS__PRIVATE ts_result ts__ix_plan_value(ts_index *ix, int field, const char *v, int *dead)
{
    uint32_t tid = ts__ix_lookup(ix, field, v, strlen(v));
    if (tid == TS__IX_NONE || ix->terms[tid].df == 0) { *dead = 1; return TS_OK; }
    return ts__ix_add_crit(ix, TS__IX_C_TERM, 0, tid, 0, 0, ix->terms[tid].df);
}

TS__PRIVATE int ts__ix_prefix_cmp_cb(const void *ctx, uint32_t a, uint32_t b)
{
    const ts_index *ix = (const ts_index *)ctx;
    const ts__ix_crit *x = &ix->crit[a], *y = &ix->crit[b];
    int c = ts__memcmp_len(ix->qbuf.data + x->off, x->len, ix->qbuf.data + y->off, y->len);
    if (c) return c;
    return a < b ? -1 : a > b ? 1 : 0;
}

/* Turns the query into criteria (ix->crit, in query order). *given counts
   the criteria the query states; *dead is set when one of them can match
   nothing (a term or value no session has, an empty range). */
TS__PRIVATE ts_result ts__ix_plan(ts_index *ix, const ts_query *q, size_t *given, int *dead)
{
    ts_result r;
    size_t i;
    ix->ncrit = 0;
    ix->qbuf.len = 0;
    *given = 0;
    *dead = 0;
    ts__ix_new_stamp(ix);
    if (q->text) {
        const char *s = q->text;
        size_t n = strlen(s), pos = 0, nprefix = 0;
        while (pos < n) {
            size_t wb, we, count = 0, j;
            int prefix, k;
            ts__ix_tok t;
            while (pos < n && ts__ix_is_ws((unsigned char)s[pos])) pos++;
            wb = pos;
            while (pos < n && !ts__ix_is_ws((unsigned char)s[pos])) pos++;
            we = pos;
            if (wb == we) continue;
            prefix = s[we - 1] == '*';
            if (prefix) {
                ts__ix_tok_init(&t, s + wb, we - wb, &ix->env.alloc);
                while ((k = ts__ix_tok_next(&t)) > 0) count++;
                ts__ix_tok_done(&t);
                if (k < 0) return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
            }
            ts__ix_tok_init(&t, s + wb, we - wb, &ix->env.alloc);
            for (j = 0; (k = ts__ix_tok_next(&t)) > 0; j++) {
                if (prefix && j + 1 == count) {
                    /* the word's last token is a prefix: the length rule only */
                    size_t off = ix->qbuf.len;
                    if (t.ncp < 2) continue;
                    (*given)++;
                    if (ts__buf_putc(&ix->qbuf, TS__IX_F_TEXT) || ts__buf_append(&ix->qbuf, t.tok, t.len) ||
                        ts__ix_add_crit(ix, TS__IX_C_PREFIX, 1, 0, off, t.len + 1, (uint64_t)-1 / 4)) {
                        k = -1;
                        break;
                    }
                    nprefix++;
                } else {
                    uint32_t tid;
                    if (!ts__ix_keep(t.tok, t.len, t.ncp)) continue;
                    (*given)++;
                    tid = ts__ix_lookup(ix, TS__IX_F_TEXT, t.tok, t.len);
                    if (tid == TS__IX_NONE || ix->terms[tid].df == 0) { *dead = 1; continue; }
                    if (ix->terms[tid].stamp == ix->stamp) continue; /* repeated term */
                    ix->terms[tid].stamp = ix->stamp;
                    ix->terms[tid].slot = (uint32_t)ix->ncrit; /* BM25 finds its criterion by term */
                    if (ts__ix_add_crit(ix, TS__IX_C_TERM, 1, tid, 0, 0, ix->terms[tid].df)) { k = -1; break; }
                }
            }
            ts__ix_tok_done(&t);
            if (k < 0) return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
        }
        if (nprefix > 1) {
            /* repeated prefixes count once; the first occurrence stays */
            size_t m = 0;
            TS__IX_RESERVE(r, ix, qperm, capqperm, nprefix, uint32_t);
            if (r) return r;
            for (i = 0; i < ix->ncrit; i++)
                if (ix->crit[i].kind == TS__IX_C_PREFIX) ix->qperm[m++] = (uint32_t)i;
            ts__ix_sort(ix->qperm, m, ts__ix_prefix_cmp_cb, ix);
            for (i = 1; i < m; i++) {
                ts__ix_crit *a = &ix->crit[ix->qperm[i - 1]], *b = &ix->crit[ix->qperm[i]];
                if (a->len == b->len && memcmp(ix->qbuf.data + a->off, ix->qbuf.data + b->off, a->len) == 0)
                    b->kind = -1;
            }
        }
    }
    for (i = 0; i < q->tag_count; i++) {
        (*given)++;
        if ((r = ts__ix_plan_value(ix, TS__IX_F_TAG, q->tags[i], dead)) != TS_OK) return r;
    }
    for (i = 0; i < q->topic_count; i++) {
        (*given)++;
        if ((r = ts__ix_plan_value(ix, TS__IX_F_TOPIC, q->topics[i], dead)) != TS_OK) return r;
    }
    if (q->category) {
        (*given)++;
        if ((r = ts__ix_plan_value(ix, TS__IX_F_CATEGORY, q->category, dead)) != TS_OK) return r;
    }
    if (q->sub_category) {
        (*given)++;
        if ((r = ts__ix_plan_value(ix, TS__IX_F_SUBCAT, q->sub_category, dead)) != TS_OK) return r;
    }
    if (q->status) {
        (*given)++;
        if ((r = ts__ix_plan_value(ix, TS__IX_F_STATUS, q->status, dead)) != TS_OK) return r;
    }
    if (q->has_from || q->has_to) {
        (*given)++;
        if (q->has_from && q->has_to && q->from_ms > q->to_ms) *dead = 1;
        else if ((r = ts__ix_add_crit(ix, TS__IX_C_RANGE, 0, 0, 0, 0, (uint64_t)-1 / 2)) != TS_OK) return r;
    }
    return TS_OK;
}

/* Text terms starting with the prefix key (field byte included), as a range
   of the sorted array. */
TS__PRIVATE void ts__ix_prefix_range(const ts_index *ix, const unsigned char *p, size_t n, size_t *b, size_t *e)
{
    size_t lo = 0, hi = ix->nsorted;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const ts__ix_term *t = &ix->terms[ix->sorted[mid]];
        if (ts__memcmp_len(ix->arena + t->off, t->len, p, n) < 0) lo = mid + 1;
        else hi = mid;
    }
    *b = lo;
    while (lo < ix->nsorted) {
        const ts__ix_term *t = &ix->terms[ix->sorted[lo]];
        if (t->len < n || memcmp(ix->arena + t->off, p, n) != 0) break;
        lo++;
    }
    *e = lo;
}

/* ORs the sessions matching one criterion into w[0..nw). */
TS__PRIVATE void ts__ix_mat(const ts_index *ix, const ts__ix_crit *c, const ts_query *q, uint64_t *w, size_t nw)
{
    if (c->kind == TS__IX_C_TERM) {
        ts__ix_post_or(&ix->terms[c->tid], w, nw);
    } else if (c->kind == TS__IX_C_PREFIX) {
        size_t b, e;
        ts__ix_prefix_range(ix, ix->qbuf.data + c->off, c->len, &b, &e);
        for (; b < e; b++) ts__ix_post_or(&ix->terms[ix->sorted[b]], w, nw);
    } else if (c->kind == TS__IX_C_RANGE) {
        ts__ix_pos a, e;
        ts__ix_order_range(ix, q->has_from, q->from_ms, q->has_to, q->to_ms, &a, &e);
        while (a.b < ix->nblk && (a.b < e.b || (a.b == e.b && a.i < e.i))) {
            const ts__ix_oblk *B = ix->blk[a.b];
            uint32_t lim = a.b == e.b ? e.i : B->n, i;
            for (i = a.i; i < lim; i++) w[B->d[i] >> 6] |= (uint64_t)1 << (B->d[i] & 63);
            a.b++;
            a.i = 0;
        }
    }
}

TS__PRIVATE int ts__ix_est_cmp_cb(const void *ctx, uint32_t a, uint32_t b)
{
    const ts_index *ix = (const ts_index *)ctx;
    uint64_t x = ix->crit[a].est, y = ix->crit[b].est;
    if (x != y) return x < y ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
}

typedef struct ts__ix_score_ctx {
    const ts_index *ix;
    const uint32_t *docs;
    const double *score;
} ts__ix_score_ctx;

TS__PRIVATE int ts__ix_score_cmp_cb(const void *ctx, uint32_t a, uint32_t b)
{
    const ts__ix_score_ctx *c = (const ts__ix_score_ctx *)ctx;
    if (c->score[a] != c->score[b]) return c->score[a] > c->score[b] ? -1 : 1;
    return ts__ix_doc_cmp(c->ix, c->docs[a], c->docs[b]);
}

/* BM25 of session d over the text criteria, summed in query order. */
TS__PRIVATE double ts__ix_score(ts_index *ix, uint32_t d, double avgdl)
{
    const ts__ix_doc *D = &ix->docs[d];
    const unsigned char *p = D->fwd;
    uint32_t i, tid = 0;
    size_t c;
    double s = 0.0;
    for (c = 0; c < ix->ncrit; c++) ix->qtf[c] = 0;
    for (i = 0; i < D->nterms; i++) {
        const ts__ix_term *t;
        uint64_t tf;
        tid += (uint32_t)ts__ix_dec_varint(&p);
        tf = ts__ix_dec_varint(&p);
        t = &ix->terms[tid];
        if ((unsigned char)ix->arena[t->off] != TS__IX_F_TEXT) continue;
        if (t->stamp == ix->stamp) ix->qtf[t->slot] += tf;
        for (c = 0; c < ix->ncrit; c++) {
            const ts__ix_crit *k = &ix->crit[c];
            if (k->kind == TS__IX_C_PREFIX && t->len >= k->len &&
                memcmp(ix->arena + t->off, ix->qbuf.data + k->off, k->len) == 0)
                ix->qtf[c] += tf;
        }
    }
    for (c = 0; c < ix->ncrit; c++) {
        const ts__ix_crit *k = &ix->crit[c];
        if (!k->text || k->kind < 0 || !ix->qtf[c]) continue;
        s += ts__ix_bm25_term(ts__ix_bm25_idf(ix->nlive, k->df), ix->qtf[c], D->dl, avgdl);
    }
    return s;
}

typedef struct ts__ix_hitmem {
    ts_allocator alloc;
    size_t size;
} ts__ix_hitmem;

#define TS__IX_HITHDR ((sizeof(ts__ix_hitmem) + 15) & ~(size_t)15)

TS__PRIVATE ts_result ts__ix_make_hits(ts_index *ix, const uint32_t *docs, const double *scores, size_t k,
                                       int with_scores, ts_index_hits *out)
{
    size_t i, size = TS__IX_HITHDR, bytes = 0;
    unsigned char *mem;
    ts__ix_hitmem *h;
    double *sc;
    const char **ids;
    size_t *lens;
    char *str;
    if (!k) return TS_OK;
    for (i = 0; i < k; i++) bytes += (size_t)ix->docs[docs[i]].id_len + 1;
    size += k * ((with_scores ? sizeof(double) : 0) + sizeof(char *) + sizeof(size_t)) + bytes;
    mem = (unsigned char *)ts__alloc(&ix->env.alloc, size);
    if (!mem) return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
    h = (ts__ix_hitmem *)(void *)mem;
    h->alloc = ix->env.alloc;
    h->size = size;
    sc = (double *)(void *)(mem + TS__IX_HITHDR);
    ids = (const char **)(void *)(mem + TS__IX_HITHDR + (with_scores ? k * sizeof(double) : 0));
    lens = (size_t *)(void *)(ids + k);
    str = (char *)(lens + k);
    for (i = 0; i < k; i++) {
        const ts__ix_doc *D = &ix->docs[docs[i]];
        memcpy(str, D->id, (size_t)D->id_len + 1);
        ids[i] = str;
        lens[i] = D->id_len;
        str += D->id_len + 1;
        if (with_scores) sc[i] = scores ? scores[i] : 0.0;
    }
    out->mem_ = mem;
    out->count = k;
    out->ids = ids;
    out->id_lens = lens;
    out->scores = with_scores ? sc : NULL;
    return TS_OK;
}

TASKSTORE_DEF void ts_index_hits_free(ts_index_hits *hits)
{
    if (!hits) return;
    if (hits->mem_) {
        ts__ix_hitmem *h = (ts__ix_hitmem *)hits->mem_;
        ts_allocator a = h->alloc;
        ts__free(&a, hits->mem_, h->size);
    }
    memset(hits, 0, sizeof *hits);
}

/* Sorting the m matches costs about m log m key comparisons; walking the
   order list to the end-th match tests about end * n / m bits, each far
   cheaper than a comparison. */
TS__PRIVATE int ts__ix_sort_is_cheaper(size_t m, size_t end, size_t n, size_t nw)
{
    double lg = 1.0, sort_cost, walk_cost;
    size_t x = m;
    while (x > 1) { x >>= 1; lg += 1.0; }
    sort_cost = (double)m * lg * 6.0 + (double)nw;
    walk_cost = (double)end * (double)n / (double)m;
    if (walk_cost > (double)n) walk_cost = (double)n;
    return sort_cost < walk_cost;
}

TASKSTORE_DEF ts_result ts_index_search(ts_index *idx, const ts_query *q, ts_index_hits *out)
{
    ts_index *ix = idx;
    size_t given, nw, total = 0, i, begin, end, k, ntext = 0, m = 0;
    int dead, bm25, res_all = 0, in_range = 0;
    ts_result r;
    uint64_t *res, *tmp;
    ts__ix_pos sa, se; /* the run of the order list that can hold matches */
    if (out) memset(out, 0, sizeof *out);
    if (!ix || !q || !out) return TS_E_INVALID;
    if (q->op != TS_QUERY_AND && q->op != TS_QUERY_OR)
        return TS__FAIL(&ix->env, TS_E_INVALID, "query operator must be TS_QUERY_AND or TS_QUERY_OR");
    if ((q->tag_count && !q->tags) || (q->topic_count && !q->topics))
        return TS__FAIL(&ix->env, TS_E_INVALID, "NULL tags/topics with a non-zero count");
    for (i = 0; i < q->tag_count; i++)
        if (!q->tags[i]) return TS__FAIL(&ix->env, TS_E_INVALID, "NULL tag in query");
    for (i = 0; i < q->topic_count; i++)
        if (!q->topics[i]) return TS__FAIL(&ix->env, TS_E_INVALID, "NULL topic in query");
    if ((r = ts__ix_plan(ix, q, &given, &dead)) != TS_OK) return r;
    for (i = 0; i < ix->ncrit; i++) {
        if (ix->crit[i].kind != TS__IX_C_PREFIX) continue;
        /* prefixes binary-search the sorted text terms: bring it up to date */
        if (ts__ix_merge_recent(ix) != TS_OK) return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
        break;
    }
    nw = ((size_t)ix->ndocs + 63) / 64;
    TS__IX_RESERVE(r, ix, bm_a, cap_a, nw, uint64_t);
    if (r) return r;
    TS__IX_RESERVE(r, ix, bm_b, cap_b, nw, uint64_t);
    if (r) return r;
    TS__IX_RESERVE(r, ix, qtf, capqtf, ix->ncrit, uint64_t);
    if (r) return r;
    TS__IX_RESERVE(r, ix, qperm, capqperm, ix->ncrit, uint32_t);
    if (r) return r;
    res = ix->bm_a;
    tmp = ix->bm_b;
    bm25 = q->rank_bm25 != 0;
    for (i = 0; i < ix->ncrit; i++)
        if (ix->crit[i].text && ix->crit[i].kind >= 0) ntext++;
    sa.b = 0; sa.i = 0;
    se.b = ix->nblk; se.i = 0;
    if (nw) memset(res, 0, nw * sizeof(uint64_t));
    if (given == 0) {
        res_all = 1;
    } else if (q->op == TS_QUERY_AND) {
        if (dead) goto counted; /* a criterion nothing satisfies */
        for (i = 0; i < ix->ncrit; i++) {
            if (ix->crit[i].kind == TS__IX_C_RANGE) in_range = 1;
            else if (ix->crit[i].kind >= 0) ix->qperm[m++] = (uint32_t)i;
        }
        /* the range is not materialized: matches must lie in its run of
           the order list, which is walked instead of the whole list */
        if (in_range) ts__ix_order_range(ix, q->has_from, q->from_ms, q->has_to, q->to_ms, &sa, &se);
        if (!m) res_all = 1;
        ts__ix_sort(ix->qperm, m, ts__ix_est_cmp_cb, ix);
        for (i = 0; i < m; i++) {
            ts__ix_crit *c = &ix->crit[ix->qperm[i]];
            uint64_t any = 0;
            size_t j;
            if (i == 0) {
                ts__ix_mat(ix, c, q, res, nw);
                if (c->kind == TS__IX_C_PREFIX) c->df = ts__ix_popcount_words(res, nw);
                continue;
            }
            memset(tmp, 0, nw * sizeof(uint64_t));
            ts__ix_mat(ix, c, q, tmp, nw);
            if (c->kind == TS__IX_C_PREFIX) c->df = ts__ix_popcount_words(tmp, nw);
            for (j = 0; j < nw; j++) { res[j] &= tmp[j]; any |= res[j]; }
            if (!any) goto counted; /* nothing left */
        }
        if (in_range && !res_all) {
            /* few candidates: test their startTime instead of walking the run */
            size_t cand = ts__ix_popcount_words(res, nw);
            if (cand * 8 < ts__ix_order_span(ix, sa, se)) {
                for (i = 0; i < nw; i++) {
                    uint64_t x = res[i];
                    while (x) {
                        uint32_t d = (uint32_t)(i * 64 + (size_t)ts__ix_ctz(x));
                        const ts__ix_doc *D = &ix->docs[d];
                        if (!D->has_start || (q->has_from && D->start < q->from_ms) || (q->has_to && D->start > q->to_ms))
                            res[i] &= ~((uint64_t)1 << (d & 63));
                        x &= x - 1;
                    }
                }
                in_range = 0;
                sa.b = 0; sa.i = 0;
                se.b = ix->nblk; se.i = 0;
            }
        }
    } else {
        for (i = 0; i < ix->ncrit; i++) {
            ts__ix_crit *c = &ix->crit[i];
            if (c->kind < 0) continue;
            if (c->kind == TS__IX_C_PREFIX && bm25) {
                size_t j;
                memset(tmp, 0, nw * sizeof(uint64_t));
                ts__ix_mat(ix, c, q, tmp, nw);
                c->df = ts__ix_popcount_words(tmp, nw);
                for (j = 0; j < nw; j++) res[j] |= tmp[j];
            } else {
                ts__ix_mat(ix, c, q, res, nw);
            }
        }
    }
    if (res_all) total = in_range ? ts__ix_order_span(ix, sa, se) : ix->nlive;
    else if (!in_range) total = ts__ix_popcount_words(res, nw);
    else total = ts__ix_order_walk(ix, sa, se, res, 0, 0, NULL, 0);
counted:
    out->total = total;
    begin = q->offset;
    end = total;
    if (q->limit && q->limit < total && begin < total - q->limit) end = begin + q->limit;
    if (begin >= end) return TS_OK;
    k = end - begin;
    if (bm25 || (!res_all && !in_range && ts__ix_sort_is_cheaper(total, end, ix->nlive, nw))) {
        /* few matches (or BM25): sort just the matches */
        double avgdl = ix->nlive && ix->total_dl ? (double)ix->total_dl / (double)ix->nlive : 1.0;
        TS__IX_RESERVE(r, ix, qdocs, capqdocs, total, uint32_t);
        if (r) return r;
        if (res_all || in_range) {
            m = ts__ix_order_walk(ix, sa, se, res_all ? NULL : res, 0, total, ix->qdocs, 0);
        } else {
            m = 0;
            for (i = 0; i < nw; i++) {
                uint64_t x = res[i];
                while (x) {
                    ix->qdocs[m++] = (uint32_t)(i * 64 + (size_t)ts__ix_ctz(x));
                    x &= x - 1;
                }
            }
        }
        if (bm25 && ntext) {
            ts__ix_score_ctx sc;
            uint32_t *perm;
            TS__IX_RESERVE(r, ix, qscore, capqscore, total * 2, double);
            if (r) return r;
            TS__IX_RESERVE(r, ix, qperm, capqperm, total, uint32_t);
            if (r) return r;
            perm = ix->qperm;
            for (i = 0; i < m; i++) {
                ix->qscore[i] = ts__ix_score(ix, ix->qdocs[i], avgdl);
                perm[i] = (uint32_t)i;
            }
            sc.ix = ix; sc.docs = ix->qdocs; sc.score = ix->qscore;
            ts__ix_sort(perm, m, ts__ix_score_cmp_cb, &sc);
            /* gather the slice: docnos to perm's front, scores after the first m */
            for (i = 0; i < k; i++) ix->qscore[m + i] = ix->qscore[perm[begin + i]];
            for (i = 0; i < k; i++) perm[i] = ix->qdocs[perm[begin + i]];
            return ts__ix_make_hits(ix, perm, ix->qscore + m, k, 1, out);
        }
        if (res_all || in_range) return ts__ix_make_hits(ix, ix->qdocs + begin, NULL, k, bm25, out);
        TS__IX_RESERVE(r, ix, qkey, capqkey, m, uint64_t);
        if (r) return r;
        TS__IX_RESERVE(r, ix, qperm, capqperm, m, uint32_t);
        if (r) return r;
        ts__ix_sort_docs(ix, ix->qdocs, m, ix->qkey, ix->qperm);
        return ts__ix_make_hits(ix, ix->qperm + begin, NULL, k, bm25, out);
    }
    /* many matches: walk the sessions in result order, test the bitmap */
    TS__IX_RESERVE(r, ix, qdocs, capqdocs, k, uint32_t);
    if (r) return r;
    ts__ix_order_walk(ix, sa, se, res_all ? NULL : res, begin, end, ix->qdocs, 1);
    return ts__ix_make_hits(ix, ix->qdocs, NULL, k, 0, out);
}

/* ---- query strings ---------------------------------------------------------------- */

#define TS__QP_TEXT     0
#define TS__QP_TAG      1
#define TS__QP_TOPIC    2
#define TS__QP_CATEGORY 3
#define TS__QP_SUBCAT   4
#define TS__QP_STATUS   5
#define TS__QP_FROM     6
#define TS__QP_TO       7
#define TS__QP_LIMIT    8
#define TS__QP_OFFSET   9
#define TS__QP_OP       10
#define TS__QP_RANK     11
#define TS__QP_OR       12
#define TS__QP_AND      13

typedef struct ts__qp_item {
    int key;
    size_t vb, ve;       /* the value or word, quotes excluded, escapes not yet undone */
    int quoted;
} ts__qp_item;

TS__PRIVATE int ts__qp_key(const char *s, size_t n)
{
    static const char *const names[] = { "tag", "topic", "category", "subcategory", "status",
                                         "from", "to", "limit", "offset", "op", "rank" };
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0) return (int)i + 1;
    return -1;
}

TS__PRIVATE ts_result ts__qp_quoted(const char *s, size_t n, size_t q, size_t *pos, ts__qp_item *it, ts__env *env)
{
    size_t i = q + 1;
    for (;;) {
        if (i >= n) return TS__FAIL(env, TS_E_INVALID, "unterminated quote at byte %lu", (unsigned long)q);
        if (s[i] == '\\') {
            if (i + 1 >= n) return TS__FAIL(env, TS_E_INVALID, "unterminated quote at byte %lu", (unsigned long)q);
            i += 2;
        } else if (s[i] == '"') {
            break;
        } else {
            i++;
        }
    }
    if (i + 1 < n && !ts__ix_is_ws((unsigned char)s[i + 1]))
        return TS__FAIL(env, TS_E_INVALID, "text right after the closing quote at byte %lu", (unsigned long)i);
    it->vb = q + 1;
    it->ve = i;
    it->quoted = 1;
    *pos = i + 1;
    return TS_OK;
}

/* The next item at or after *pos: TS_OK, TS_DONE at the end, or an error. */
TS__PRIVATE ts_result ts__qp_next(const char *s, size_t n, size_t *pos, ts__qp_item *it, ts__env *env)
{
    size_t i = *pos, b, e, c;
    int key;
    while (i < n && ts__ix_is_ws((unsigned char)s[i])) i++;
    if (i >= n) { *pos = n; return TS_DONE; }
    it->quoted = 0;
    if (s[i] == '"') { it->key = TS__QP_TEXT; return ts__qp_quoted(s, n, i, pos, it, env); }
    b = i;
    while (i < n && !ts__ix_is_ws((unsigned char)s[i])) i++;
    e = i;
    for (c = b; c < e && s[c] != ':'; c++) {}
    if (c < e && (key = ts__qp_key(s + b, c - b)) > 0) {
        it->key = key;
        if (c + 1 < n && s[c + 1] == '"') return ts__qp_quoted(s, n, c + 1, pos, it, env);
        if (c + 1 == e) return TS__FAIL(env, TS_E_INVALID, "empty value for %.*s: (quote it: \"\")", (int)(c - b), s + b);
        it->vb = c + 1;
        it->ve = e;
        *pos = e;
        return TS_OK;
    }
    it->key = TS__QP_TEXT;
    if (e - b == 2 && (memcmp(s + b, "or", 2) == 0 || memcmp(s + b, "OR", 2) == 0)) it->key = TS__QP_OR;
    if (e - b == 3 && (memcmp(s + b, "and", 3) == 0 || memcmp(s + b, "AND", 3) == 0)) it->key = TS__QP_AND;
    it->vb = b;
    it->ve = e;
    *pos = e;
    return TS_OK;
}

/* Copies a value, undoing \x escapes when quoted; returns the length. */
TS__PRIVATE size_t ts__qp_copy(const char *s, const ts__qp_item *it, char *dst)
{
    size_t i, o = 0;
    for (i = it->vb; i < it->ve; i++) {
        if (it->quoted && s[i] == '\\') i++;
        dst[o++] = s[i];
    }
    return o;
}

TS__PRIVATE int ts__qp_num(const char *s, size_t n, int allow_neg, int64_t *sv, uint64_t *uv)
{
    size_t i = 0;
    uint64_t v = 0;
    int neg = 0;
    if (allow_neg && n && s[0] == '-') { neg = 1; i = 1; }
    if (i >= n) return 0;
    for (; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    if (uv) *uv = v;
    if (sv) {
        if (neg) {
            if (v > (uint64_t)INT64_MAX + 1) return 0;
            *sv = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
        } else {
            if (v > (uint64_t)INT64_MAX) return 0;
            *sv = (int64_t)v;
        }
    }
    return 1;
}

typedef struct ts__qp_sizes {
    size_t ntags, ntopics, text_bytes, value_bytes;
} ts__qp_sizes;

/* One pass over the string. fill == 0 validates and measures into *z;
   fill == 1 writes into the block described by *z. */
TS__PRIVATE ts_result ts__qp_run(const char *s, size_t n, ts__qp_sizes *z, ts_query_parsed *out, int fill,
                                 ts__env *env)
{
    static const char *const key_names[] = { "", "tag", "topic", "category", "subcategory", "status",
                                             "from", "to", "limit", "offset", "op", "rank" };
    ts_query *q = &out->query;
    size_t pos = 0, ntags = 0, ntopics = 0, tlen = 0;
    unsigned seen = 0;
    int op = -1;
    char **tags = NULL, **topics = NULL, *text = NULL, *vals = NULL;
    ts__qp_item it;
    ts_result r;
    if (fill) {
        unsigned char *mem = (unsigned char *)out->mem_;
        tags = (char **)(void *)mem;
        topics = tags + z->ntags;
        text = (char *)(topics + z->ntopics);
        vals = text + z->text_bytes;
    }
    while ((r = ts__qp_next(s, n, &pos, &it, env)) == TS_OK) {
        const char *v = s + it.vb;
        size_t vn = it.ve - it.vb;
        if (it.key == TS__QP_TEXT) {
            if (fill) {
                if (tlen) text[tlen++] = ' ';
                tlen += ts__qp_copy(s, &it, text + tlen);
            } else {
                z->text_bytes += vn + 1;
            }
            continue;
        }
        if (it.key == TS__QP_OR || it.key == TS__QP_AND) {
            int want = it.key == TS__QP_OR ? TS_QUERY_OR : TS_QUERY_AND;
            if (op >= 0 && op != want) return TS__FAIL(env, TS_E_INVALID, "both 'and' and 'or' given");
            op = want;
            continue;
        }
        if (it.key != TS__QP_TAG && it.key != TS__QP_TOPIC) {
            unsigned bit = 1u << it.key;
            if (seen & bit) return TS__FAIL(env, TS_E_INVALID, "%s: given twice", key_names[it.key]);
            seen |= bit;
        }
        switch (it.key) {
        case TS__QP_TAG:
        case TS__QP_TOPIC:
        case TS__QP_CATEGORY:
        case TS__QP_SUBCAT:
        case TS__QP_STATUS:
            if (!fill) {
                z->value_bytes += vn + 1;
                if (it.key == TS__QP_TAG) z->ntags++;
                if (it.key == TS__QP_TOPIC) z->ntopics++;
            } else {
                char *dst = vals;
                vals += ts__qp_copy(s, &it, vals);
                *vals++ = 0;
                if (it.key == TS__QP_TAG) tags[ntags++] = dst;
                else if (it.key == TS__QP_TOPIC) topics[ntopics++] = dst;
                else if (it.key == TS__QP_CATEGORY) q->category = dst;
                else if (it.key == TS__QP_SUBCAT) q->sub_category = dst;
                else q->status = dst;
            }
            break;
        case TS__QP_FROM:
        case TS__QP_TO: {
            int64_t x;
            if (it.quoted || !ts__qp_num(v, vn, 1, &x, NULL))
                return TS__FAIL(env, TS_E_INVALID, "%s: expects a signed integer (ms), got \"%.*s\"",
                                key_names[it.key], (int)(vn > 40 ? 40 : vn), v);
            if (it.key == TS__QP_FROM) { q->has_from = 1; q->from_ms = x; }
            else { q->has_to = 1; q->to_ms = x; }
            break;
        }
        case TS__QP_LIMIT:
        case TS__QP_OFFSET: {
            uint64_t x;
            if (it.quoted || !ts__qp_num(v, vn, 0, NULL, &x) || x > (uint64_t)(size_t)-1)
                return TS__FAIL(env, TS_E_INVALID, "%s: expects an unsigned integer, got \"%.*s\"",
                                key_names[it.key], (int)(vn > 40 ? 40 : vn), v);
            if (it.key == TS__QP_LIMIT) q->limit = (size_t)x;
            else q->offset = (size_t)x;
            break;
        }
        case TS__QP_OP: {
            int want;
            if (!it.quoted && vn == 3 && memcmp(v, "and", 3) == 0) want = TS_QUERY_AND;
            else if (!it.quoted && vn == 2 && memcmp(v, "or", 2) == 0) want = TS_QUERY_OR;
            else return TS__FAIL(env, TS_E_INVALID, "op: expects and or or");
            if (op >= 0 && op != want) return TS__FAIL(env, TS_E_INVALID, "both 'and' and 'or' given");
            op = want;
            break;
        }
        default: /* TS__QP_RANK */
            if (!it.quoted && vn == 4 && memcmp(v, "bm25", 4) == 0) q->rank_bm25 = 1;
            else if (!it.quoted && vn == 4 && memcmp(v, "time", 4) == 0) q->rank_bm25 = 0;
            else return TS__FAIL(env, TS_E_INVALID, "rank: expects bm25 or time");
            break;
        }
    }
    if (r != TS_DONE) return r;
    if (fill) {
        if (z->text_bytes) { text[tlen] = 0; q->text = text; }
        q->tags = (const char *const *)tags;
        q->tag_count = ntags;
        q->topics = (const char *const *)topics;
        q->topic_count = ntopics;
        q->op = op == TS_QUERY_OR ? TS_QUERY_OR : TS_QUERY_AND;
    }
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_query_parse(const char *s, size_t n, const ts_allocator *alloc, ts_query_parsed *out,
                                       ts_error_info *err)
{
    ts__env env;
    ts__qp_sizes z;
    ts_result r;
    size_t size;
    ts__env_init(&env, alloc, NULL);
    if (err) memset(err, 0, sizeof *err);
    if (out) memset(out, 0, sizeof *out);
    if (!out || (!s && n)) {
        r = TS__FAIL(&env, TS_E_INVALID, "ts_query_parse: NULL argument");
        goto done;
    }
    if (alloc) out->alloc_ = *alloc;
    if (n > TASKSTORE_MAX_QUERY) {
        r = TS__FAIL(&env, TS_E_TOOBIG, "query longer than %lu bytes", (unsigned long)TASKSTORE_MAX_QUERY);
        goto done;
    }
    if (n && memchr(s, 0, n)) {
        r = TS__FAIL(&env, TS_E_INVALID, "NUL byte in query");
        goto done;
    }
    memset(&z, 0, sizeof z);
    if ((r = ts__qp_run(s, n, &z, out, 0, &env)) != TS_OK) goto done;
    memset(out, 0, sizeof *out);
    if (alloc) out->alloc_ = *alloc;
    size = (z.ntags + z.ntopics) * sizeof(char *) + z.text_bytes + z.value_bytes;
    out->mem_ = ts__alloc(&out->alloc_, size);
    if (!out->mem_) {
        r = TS__FAIL(&env, TS_E_NOMEM, "out of memory");
        goto done;
    }
    out->mem_size_ = size;
    r = ts__qp_run(s, n, &z, out, 1, &env);
done:
    if (r != TS_OK && out) ts_query_parsed_free(out);
    if (err && r != TS_OK) *err = env.last;
    return r;
}

TASKSTORE_DEF void ts_query_parsed_free(ts_query_parsed *p)
{
    if (!p) return;
    if (p->mem_) {
        ts_allocator a = p->alloc_;
        ts__free(&a, p->mem_, p->mem_size_);
    }
    memset(p, 0, sizeof *p);
}

/* ---- serialization -------------------------------------------------------------------
   Header (24 bytes, little-endian): "TSIX", u32 version, u32 flags (bit 0:
   extra text indexed), u64 payload length, u32 CRC-32C of header bytes
   0..19 and the payload. Payload, all varints:
     info (bit 0 built, bit 1 optimized), [zigzag built_ms], [zigzag optimized_ms],
     changes, session count, then per session: id length, id bytes,
     has_start (0/1), [zigzag startTime]
     term count, then per term in byte order of its key (field byte + value):
     bytes shared with the previous key, suffix length, suffix, df, then df
     postings as ascending session numbers: text terms (gap << 1 | tf > 1)
     [tf - 2], other terms gap, where gap = number - previous - 1 (the first
     is the number itself). Sessions are numbered by their order above. */

#define TS__IX_HDR 24

typedef struct ts__ix_save_term {
    uint64_t size;       /* bytes of postings, then the write position */
    uint32_t cnt, prev;
    uint32_t text;       /* a text term (tf is stored); kept here so the
                            walk below touches one array, not three */
    uint32_t pad_;
} ts__ix_save_term;

TS__PRIVATE size_t ts__ix_common(const char *a, size_t an, const char *b, size_t bn)
{
    size_t i = 0, n = an < bn ? an : bn;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Counts (pass 0) or writes (pass 1) every posting, walking the forward
   lists in docno order: the forward lists are the source of truth. */
TS__PRIVATE void ts__ix_save_postings(const ts_index *ix, ts__ix_save_term *st, unsigned char *out, int pass)
{
    uint32_t d, nn = 0, i;
    for (d = 0; d < ix->ndocs; d++) {
        const ts__ix_doc *D = &ix->docs[d];
        const unsigned char *p = D->fwd;
        uint32_t tid = 0;
        if (!D->id) continue;
        for (i = 0; i < D->nterms; i++) {
            ts__ix_save_term *s;
            uint64_t tf, v, gap;
            int text;
            tid += (uint32_t)ts__ix_dec_varint(&p);
            tf = ts__ix_dec_varint(&p);
            s = &st[tid];
            text = (int)s->text;
            gap = s->cnt ? (uint64_t)(nn - s->prev - 1) : nn;
            v = text ? (gap << 1) | (tf > 1) : gap;
            if (pass == 0) {
                s->size += ts__ix_varint_len(v) + (text && tf > 1 ? ts__ix_varint_len(tf - 2) : 0);
            } else {
                s->size += ts__ix_enc_varint(out + s->size, v);
                if (text && tf > 1) s->size += ts__ix_enc_varint(out + s->size, tf - 2);
            }
            s->cnt++;
            s->prev = nn;
        }
        nn++;
    }
}

TASKSTORE_DEF ts_result ts_index_save(ts_index *idx, void **data, size_t *len)
{
    ts_index *ix = idx;
    const ts_allocator *a;
    ts__ix_save_term *st = NULL;
    uint32_t *order = NULL;
    size_t nout = 0, nnon = 0, i, total, pos;
    uint32_t d, t;
    unsigned char *out = NULL, info;
    ts_result r = TS_OK;
    ts__ix_crc crc;
    const char *prevk = "";
    size_t prevn = 0;
    if (data) *data = NULL;
    if (len) *len = 0;
    if (!ix || !data || !len) return TS_E_INVALID;
    a = &ix->env.alloc;
    if (ts__ix_merge_recent(ix) != TS_OK) return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
    st = (ts__ix_save_term *)ts__calloc(a, (size_t)ix->nterms + 1, sizeof *st);
    order = (uint32_t *)ts__alloc(a, ((size_t)ix->nterms + 1) * sizeof(uint32_t));
    if (!st || !order) { r = TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory"); goto done; }
    for (t = 0; t < ix->nterms; t++) st[t].text = (unsigned char)ix->arena[ix->terms[t].off] == TS__IX_F_TEXT;
    ts__ix_save_postings(ix, st, NULL, 0);
    /* key order: every field byte sorts before 'w', so the other terms
       (sorted here) come first, then the already sorted text terms */
    for (t = 0; t < ix->nterms; t++)
        if (st[t].cnt && (unsigned char)ix->arena[ix->terms[t].off] != TS__IX_F_TEXT) order[nnon++] = t;
    ts__ix_sort(order, nnon, ts__ix_term_cmp_cb, ix);
    nout = nnon;
    for (i = 0; i < ix->nsorted; i++)
        if (st[ix->sorted[i]].cnt) order[nout++] = ix->sorted[i];
    /* exact size */
    info = (unsigned char)((ix->has_built ? 1 : 0) | (ix->has_optimized ? 2 : 0));
    total = TS__IX_HDR + 1 + ts__ix_varint_len(ix->changes) + ts__ix_varint_len(ix->nlive) + ts__ix_varint_len(nout);
    if (ix->has_built) total += ts__ix_varint_len(ts__ix_zigzag(ix->built_ms));
    if (ix->has_optimized) total += ts__ix_varint_len(ts__ix_zigzag(ix->optimized_ms));
    for (d = 0; d < ix->ndocs; d++) {
        const ts__ix_doc *D = &ix->docs[d];
        if (!D->id) continue;
        total += ts__ix_varint_len(D->id_len) + D->id_len + 1;
        if (D->has_start) total += ts__ix_varint_len(ts__ix_zigzag(D->start));
    }
    for (i = 0; i < nout; i++) {
        const ts__ix_term *T = &ix->terms[order[i]];
        const char *k = ix->arena + T->off;
        size_t sh = ts__ix_common(prevk, prevn, k, T->len);
        total += ts__ix_varint_len(sh) + ts__ix_varint_len(T->len - sh) + (T->len - sh) +
                 ts__ix_varint_len(st[order[i]].cnt) + (size_t)st[order[i]].size;
        prevk = k;
        prevn = T->len;
    }
    out = (unsigned char *)ts__alloc(a, total);
    if (!out) { r = TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory"); goto done; }
    pos = TS__IX_HDR;
    out[pos++] = info;
    if (ix->has_built) pos += ts__ix_enc_varint(out + pos, ts__ix_zigzag(ix->built_ms));
    if (ix->has_optimized) pos += ts__ix_enc_varint(out + pos, ts__ix_zigzag(ix->optimized_ms));
    pos += ts__ix_enc_varint(out + pos, ix->changes);
    pos += ts__ix_enc_varint(out + pos, ix->nlive);
    for (d = 0; d < ix->ndocs; d++) {
        const ts__ix_doc *D = &ix->docs[d];
        if (!D->id) continue;
        pos += ts__ix_enc_varint(out + pos, D->id_len);
        memcpy(out + pos, D->id, D->id_len);
        pos += D->id_len;
        out[pos++] = (unsigned char)(D->has_start ? 1 : 0);
        if (D->has_start) pos += ts__ix_enc_varint(out + pos, ts__ix_zigzag(D->start));
    }
    pos += ts__ix_enc_varint(out + pos, nout);
    prevk = "";
    prevn = 0;
    for (i = 0; i < nout; i++) {
        ts__ix_save_term *s = &st[order[i]];
        const ts__ix_term *T = &ix->terms[order[i]];
        const char *k = ix->arena + T->off;
        size_t sh = ts__ix_common(prevk, prevn, k, T->len);
        pos += ts__ix_enc_varint(out + pos, sh);
        pos += ts__ix_enc_varint(out + pos, T->len - sh);
        memcpy(out + pos, k + sh, T->len - sh);
        pos += T->len - sh;
        pos += ts__ix_enc_varint(out + pos, s->cnt);
        {
            uint64_t sz = s->size;
            s->size = pos; /* now the write position of its postings */
            pos += (size_t)sz;
        }
        s->cnt = 0;
        prevk = k;
        prevn = T->len;
    }
    ts__ix_save_postings(ix, st, out, 1);
    memcpy(out, "TSIX", 4);
    ts__ix_put_u32le(out + 4, TS_INDEX_FORMAT_VERSION);
    ts__ix_put_u32le(out + 8, (uint32_t)ix->extra_text);
    ts__ix_put_u32le(out + 12, (uint32_t)(uint64_t)(total - TS__IX_HDR));
    ts__ix_put_u32le(out + 16, (uint32_t)((uint64_t)(total - TS__IX_HDR) >> 32));
    ts__ix_crc_init(&crc);
    ts__ix_put_u32le(out + 20, ts__ix_crc_update(&crc, ts__ix_crc_update(&crc, 0, out, 20), out + TS__IX_HDR,
                                                  total - TS__IX_HDR));
    *data = out;
    *len = total;
    ix->disk_bytes = total;
done:
    ts__free(a, st, ((size_t)ix->nterms + 1) * sizeof *st);
    ts__free(a, order, ((size_t)ix->nterms + 1) * sizeof(uint32_t));
    return r;
}

TASKSTORE_DEF void ts_index_free_buffer(ts_index *idx, void *data, size_t len)
{
    if (!idx) return;
    ts__free(&idx->env.alloc, data, len);
}

/* A stored text term must be exactly one kept, already folded token. */
TS__PRIVATE int ts__ix_valid_text_term(const ts_allocator *a, const char *s, size_t n)
{
    ts__ix_tok t;
    int ok;
    ts__ix_tok_init(&t, s, n, a);
    ok = ts__ix_tok_next(&t) == 1 && t.len == n && t.tok == s && ts__ix_keep(s, n, t.ncp);
    ts__ix_tok_done(&t);
    return ok;
}

typedef struct ts__ix_ld_doc {
    unsigned char *wp;   /* pass 1: where the next forward-list pair goes */
    uint32_t size;       /* forward list bytes */
    uint32_t cnt;        /* pairs */
    uint32_t last;       /* last term number */
    uint32_t dl;
    unsigned flags;      /* single-valued fields seen */
} ts__ix_ld_doc;

/* Decodes posting k of a term: NULL, or what is wrong. */
TS__PRIVATE const char *ts__ix_ld_posting(ts__ix_rd *rd, int text, uint64_t k, uint32_t *prev, uint64_t ndocs,
                                          uint32_t *dn, uint32_t *tf)
{
    uint64_t v = ts__ix_rd_varint(rd), gap, d;
    *tf = 1;
    if (text) {
        gap = v >> 1;
        if (v & 1) {
            uint64_t x = ts__ix_rd_varint(rd);
            if (x > 0xFFFFFFFFu - 2) return "bad term frequency";
            *tf = (uint32_t)(x + 2);
        }
    } else {
        gap = v;
    }
    if (rd->bad) return "truncated postings";
    d = k == 0 ? gap : (uint64_t)*prev + 1 + gap;
    if (gap >= ndocs || d >= ndocs) return "posting out of range";
    *prev = *dn = (uint32_t)d;
    return NULL;
}

/* Builds the order list from scratch over all live sessions. */
TS__PRIVATE ts_result ts__ix_order_build(ts_index *ix)
{
    uint32_t d;
    size_t m = 0, nb, b, i;
    ts_result r;
    TS__IX_RESERVE(r, ix, qdocs, capqdocs, ix->nlive, uint32_t);
    if (r) return r;
    TS__IX_RESERVE(r, ix, qkey, capqkey, ix->nlive, uint64_t);
    if (r) return r;
    TS__IX_RESERVE(r, ix, qperm, capqperm, ix->nlive, uint32_t);
    if (r) return r;
    for (d = 0; d < ix->ndocs; d++)
        if (ix->docs[d].id) ix->qdocs[m++] = d;
    ts__ix_sort_docs(ix, ix->qdocs, m, ix->qkey, ix->qperm);
    nb = (m + TS__IX_OB - 1) / TS__IX_OB;
    TS__IX_RESERVE(r, ix, blk, capblk, nb + 1, ts__ix_oblk *);
    if (r) return r;
    for (b = 0; b < nb; b++) {
        ts__ix_oblk *B = (ts__ix_oblk *)ts__alloc(&ix->env.alloc, sizeof(ts__ix_oblk));
        if (!B) return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
        B->n = 0;
        for (i = b * TS__IX_OB; i < m && B->n < TS__IX_OB; i++) B->d[B->n++] = ix->qperm[i];
        ix->blk[ix->nblk++] = B;
    }
    return ts__ix_order_reserve(ix);
}

#define TS__IX_LD_BAD(msg) do { err = msg; goto bad; } while (0)

/* Parses the terms section: pass 0 validates and sizes the forward lists,
   pass 1 (after they are allocated) builds the dictionary, the posting
   lists and the forward lists. */
TS__PRIVATE ts_result ts__ix_load_terms(ts_index *ix, ts__ix_rd *rd, uint64_t nterms, ts__ix_ld_doc *ld, int pass)
{
    const ts_allocator *a = &ix->env.alloc;
    ts__buf key;
    uint64_t t, k;
    const char *err = NULL;
    ts_result r = TS_OK;
    ts__buf_init(&key, a);
    for (t = 0; t < nterms; t++) {
        uint64_t shared = ts__ix_rd_varint(rd), slen = ts__ix_rd_varint(rd), df;
        const unsigned char *suf;
        int field, text;
        unsigned single;
        uint32_t prev = 0, tid = (uint32_t)t;
        if (rd->bad) TS__IX_LD_BAD("truncated term");
        if (shared > key.len) TS__IX_LD_BAD("bad front coding");
        if (!(suf = ts__ix_rd_bytes(rd, (size_t)slen))) TS__IX_LD_BAD("truncated term");
        if (shared + slen == 0) TS__IX_LD_BAD("empty term");
        /* strictly ascending (the suffix sorts after the old tail) and
           canonical (the shared part is the whole common prefix) */
        if (t > 0 && ts__memcmp_len(suf, (size_t)slen, key.data + shared, key.len - (size_t)shared) <= 0)
            TS__IX_LD_BAD("terms out of order");
        if (slen && key.len > shared && suf[0] == key.data[shared]) TS__IX_LD_BAD("non-canonical front coding");
        key.len = (size_t)shared;
        if (ts__buf_append(&key, suf, (size_t)slen)) { r = TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory"); goto out; }
        field = key.data[0];
        if (field != TS__IX_F_TEXT && field != TS__IX_F_TAG && field != TS__IX_F_TOPIC &&
            field != TS__IX_F_CATEGORY && field != TS__IX_F_SUBCAT && field != TS__IX_F_STATUS &&
            field != TS__IX_F_MONTH)
            TS__IX_LD_BAD("unknown term field");
        text = field == TS__IX_F_TEXT;
        single = field == TS__IX_F_CATEGORY ? 1u : field == TS__IX_F_SUBCAT ? 2u : field == TS__IX_F_STATUS ? 4u :
                 field == TS__IX_F_MONTH ? 8u : 0u;
        if (pass == 0 && text && !ts__ix_valid_text_term(a, (const char *)key.data + 1, key.len - 1))
            TS__IX_LD_BAD("malformed text term");
        df = ts__ix_rd_varint(rd);
        if (rd->bad || df == 0 || df > ix->ndocs || df > (uint64_t)(rd->end - rd->p)) TS__IX_LD_BAD("bad posting count");
        if (pass == 1) {
            uint32_t got;
            if ((r = ts__ix_intern(ix, field, (const char *)key.data + 1, key.len - 1, &got)) != TS_OK) goto out;
            if (got != tid) TS__IX_LD_BAD("duplicate term");
        }
        if (pass == 0) {
            for (k = 0; k < df; k++) {
                uint32_t dn, tf;
                ts__ix_ld_doc *L;
                if ((err = ts__ix_ld_posting(rd, text, k, &prev, ix->ndocs, &dn, &tf)) != NULL) goto bad;
                L = &ld[dn];
                if (single & L->flags) TS__IX_LD_BAD("session has two values of a single-valued field");
                L->flags |= single;
                if (field == TS__IX_F_MONTH) {
                    char m[32];
                    size_t mn;
                    const ts__ix_doc *D = &ix->docs[dn];
                    if (!D->has_start) TS__IX_LD_BAD("month for a session without startTime");
                    mn = ts__ix_month_key(D->start, m);
                    if (mn != key.len - 1 || memcmp(m, key.data + 1, mn) != 0) TS__IX_LD_BAD("month does not match startTime");
                }
                if (text) {
                    if (tf > 0xFFFFFFFFu - L->dl) TS__IX_LD_BAD("session too long");
                    L->dl += tf;
                }
                {
                    uint64_t sz = (uint64_t)L->size + ts__ix_varint_len(L->cnt ? tid - L->last : tid) +
                                  ts__ix_varint_len(tf);
                    if (sz > 0xFFFFFFF0u) TS__IX_LD_BAD("session has too many terms");
                    L->size = (uint32_t)sz;
                }
                L->cnt++;
                L->last = tid;
            }
        } else {
            /* in batches: the sessions' states and forward lists are
               scattered, so prefetch them before touching them */
            uint32_t cd[32], ctf[32];
            k = 0;
            while (k < df) {
                size_t nb = 0, j;
                for (; k < df && nb < 32; k++, nb++) {
                    if ((err = ts__ix_ld_posting(rd, text, k, &prev, ix->ndocs, &cd[nb], &ctf[nb])) != NULL) goto bad;
                    TS__IX_PREFETCH(&ld[cd[nb]]);
                }
                for (j = 0; j < nb; j++) TS__IX_PREFETCH(ld[cd[j]].wp);
                for (j = 0; j < nb; j++) {
                    ts__ix_ld_doc *L = &ld[cd[j]];
                    if ((r = ts__ix_post_add(ix, &ix->terms[tid], cd[j])) != TS_OK) {
                        r = TS__FAIL(&ix->env, r, "index: out of memory");
                        goto out;
                    }
                    L->wp += ts__ix_enc_varint(L->wp, L->cnt ? tid - L->last : tid);
                    L->wp += ts__ix_enc_varint(L->wp, ctf[j]);
                    L->cnt++;
                    L->last = tid;
                }
            }
        }
    }
    goto out;
bad:
    r = TS__FAIL(&ix->env, TS_E_CORRUPT, "index data: %s (term %lu)", err, (unsigned long)t);
out:
    ts__buf_free(&key);
    return r;
}

TS__PRIVATE ts_result ts__ix_load_payload(ts_index *ix, const unsigned char *p, size_t n)
{
    const ts_allocator *a = &ix->env.alloc;
    ts__ix_rd rd;
    uint64_t info, ndocs = 0, nterms, i;
    const unsigned char *terms_at;
    ts__ix_ld_doc *ld = NULL;
    const char *err = NULL;
    ts_result r = TS_OK;
    void *q;
    rd.p = p; rd.end = p + n; rd.bad = 0;
    info = ts__ix_rd_varint(&rd);
    if (info > 3) TS__IX_LD_BAD("unknown info bits");
    if (info & 1) { ix->has_built = 1; ix->built_ms = ts__ix_unzigzag(ts__ix_rd_varint(&rd)); }
    if (info & 2) { ix->has_optimized = 1; ix->optimized_ms = ts__ix_unzigzag(ts__ix_rd_varint(&rd)); }
    ix->changes = ts__ix_rd_varint(&rd);
    ndocs = ts__ix_rd_varint(&rd);
    if (rd.bad) TS__IX_LD_BAD("truncated header fields");
    if (ndocs > (uint64_t)(rd.end - rd.p) / 3 || ndocs >= 0xFFFFFFF0u) TS__IX_LD_BAD("session count exceeds the data");
    if (ndocs) {
        size_t nd = (size_t)ndocs, words = (nd + 63) / 64;
        q = ts__calloc(a, nd, sizeof(ts__ix_doc));
        if (!q) goto nomem;
        ix->docs = (ts__ix_doc *)q; ix->capdocs = nd;
        q = ts__alloc(a, nd * sizeof(uint32_t));
        if (!q) goto nomem;
        ix->freeno = (uint32_t *)q; ix->capfree = nd;
        q = ts__calloc(a, words, sizeof(uint64_t));
        if (!q) goto nomem;
        ix->live = (uint64_t *)q; ix->capline = words;
        q = ts__calloc(a, nd, sizeof(ts__ix_ld_doc));
        if (!q) goto nomem;
        ld = (ts__ix_ld_doc *)q;
    }
    for (i = 0; i < ndocs; i++) {
        uint64_t idn = ts__ix_rd_varint(&rd), has;
        const unsigned char *id = ts__ix_rd_bytes(&rd, (size_t)(idn <= TS__ID_MAX ? idn : 0));
        ts__ix_doc *D = &ix->docs[i];
        if (rd.bad || !ts__valid_id((const char *)id, (size_t)idn)) TS__IX_LD_BAD("bad session id");
        has = ts__ix_rd_varint(&rd);
        if (has > 1) TS__IX_LD_BAD("bad startTime flag");
        if (has) D->start = ts__ix_unzigzag(ts__ix_rd_varint(&rd));
        if (rd.bad) TS__IX_LD_BAD("truncated session");
        D->has_start = (int)has;
        D->id = ts__strndup(a, (const char *)id, (size_t)idn);
        if (!D->id) goto nomem;
        D->id_len = (uint32_t)idn;
        ix->ndocs = (uint32_t)i + 1;
        if (ts__map_put(&ix->ids, id, (size_t)idn, i) != TS_OK) goto nomem;
        if (ix->ids.count != i + 1) TS__IX_LD_BAD("duplicate session id");
        ts__ix_set_live(ix, (uint32_t)i, 1);
        ix->nlive++;
    }
    nterms = ts__ix_rd_varint(&rd);
    if (rd.bad || nterms > (uint64_t)(rd.end - rd.p) / 3) TS__IX_LD_BAD("term count exceeds the data");
    terms_at = rd.p;
    if ((r = ts__ix_load_terms(ix, &rd, nterms, ld, 0)) != TS_OK) goto out;
    if (rd.p != rd.end) TS__IX_LD_BAD("trailing bytes");
    for (i = 0; i < ndocs; i++) {
        ts__ix_doc *D = &ix->docs[i];
        if (D->has_start && !(ld[i].flags & 8)) TS__IX_LD_BAD("session without its month");
        D->nterms = ld[i].cnt;
        D->dl = ld[i].dl;
        D->fwd_len = ld[i].size;
        ix->total_dl += ld[i].dl;
        if (ld[i].size) {
            D->fwd = (unsigned char *)ts__alloc(a, ld[i].size);
            if (!D->fwd) goto nomem;
        }
        ld[i].wp = D->fwd;
        ld[i].cnt = 0;
    }
    rd.p = terms_at;
    if ((r = ts__ix_load_terms(ix, &rd, nterms, ld, 1)) != TS_OK) goto out;
    /* text terms arrived in key order: they are the sorted array already */
    {
        uint32_t *tmp = ix->sorted;
        size_t cap = ix->capsorted;
        ix->sorted = ix->recent; ix->capsorted = ix->caprecent; ix->nsorted = ix->nrecent;
        ix->recent = tmp; ix->caprecent = cap; ix->nrecent = 0;
    }
    if ((r = ts__ix_order_build(ix)) != TS_OK) goto out;
    goto out;
nomem:
    r = TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
    goto out;
bad:
    r = TS__FAIL(&ix->env, TS_E_CORRUPT, "index data: %s", err);
out:
    ts__free(a, ld, (size_t)ndocs * sizeof(ts__ix_ld_doc));
    return r;
}

TASKSTORE_DEF ts_result ts_index_load(ts_index *idx, const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    uint32_t version, flags, crc_want;
    uint64_t plen;
    ts__ix_crc crc;
    ts_index tmp;
    ts_result r;
    ts__env env;
    if (!idx || (!data && len)) return TS_E_INVALID;
    if (len < TS__IX_HDR) return TS__FAIL(&idx->env, TS_E_CORRUPT, "index data: truncated header (%lu bytes)", (unsigned long)len);
    if (memcmp(p, "TSIX", 4) != 0) return TS__FAIL(&idx->env, TS_E_CORRUPT, "index data: bad magic");
    version = ts__ix_get_u32le(p + 4);
    flags = ts__ix_get_u32le(p + 8);
    if (version != TS_INDEX_FORMAT_VERSION)
        return TS__FAIL(&idx->env, TS_E_VERSION, "index data: format version %lu, this build reads %d",
                        (unsigned long)version, TS_INDEX_FORMAT_VERSION);
    if (flags & ~1u) return TS__FAIL(&idx->env, TS_E_VERSION, "index data: unknown flags 0x%lx", (unsigned long)flags);
    plen = (uint64_t)ts__ix_get_u32le(p + 12) | (uint64_t)ts__ix_get_u32le(p + 16) << 32;
    if (plen != (uint64_t)(len - TS__IX_HDR))
        return TS__FAIL(&idx->env, TS_E_CORRUPT, "index data: payload is %lu bytes, header says %llu",
                        (unsigned long)(len - TS__IX_HDR), (unsigned long long)plen);
    crc_want = ts__ix_get_u32le(p + 20);
    ts__ix_crc_init(&crc);
    if (ts__ix_crc_update(&crc, ts__ix_crc_update(&crc, 0, p, 20), p + TS__IX_HDR, len - TS__IX_HDR) != crc_want)
        return TS__FAIL(&idx->env, TS_E_CORRUPT, "index data: checksum mismatch");
    ts__ix_init(&tmp, &idx->env.alloc, &idx->env.logger, (int)(flags & 1));
    r = ts__ix_load_payload(&tmp, p + TS__IX_HDR, len - TS__IX_HDR);
    if (r != TS_OK) {
        idx->env.last = tmp.env.last; /* already logged through the same logger */
        ts__ix_free_all(&tmp);
        return r;
    }
    tmp.disk_bytes = len;
    env = idx->env;
    ts__ix_free_all(idx);
    *idx = tmp;
    idx->env = env;
    idx->ids.alloc = &idx->env.alloc;
    idx->qbuf.alloc = &idx->env.alloc;
    return TS_OK;
}

/* Rebuilds everything from the forward lists (save + load). */
TS__PRIVATE ts_result ts__ix_rebuild(ts_index *ix)
{
    void *buf;
    size_t len;
    ts_result r = ts_index_save(ix, &buf, &len);
    if (r) return r;
    r = ts_index_load(ix, buf, len);
    ts_index_free_buffer(ix, buf, len);
    return r;
}

TASKSTORE_DEF ts_result ts_index_optimize(ts_index *idx, int64_t now_ms)
{
    ts_result r;
    if (!idx) return TS_E_INVALID;
    if ((r = ts__ix_rebuild(idx)) != TS_OK) return r;
    idx->has_optimized = 1;
    idx->optimized_ms = now_ms;
    idx->changes = 0;
    return TS_OK;
}

/* ---- maintenance ------------------------------------------------------------------- */

#define TS__IX_PROBLEM(rep, counter, ...)                                                  \
    do {                                                                                  \
        (rep)->counter++;                                                                 \
        if (!(rep)->first_problem[0]) snprintf((rep)->first_problem, sizeof (rep)->first_problem, __VA_ARGS__); \
    } while (0)

/* Checks one container; 0 when well-formed. */
TS__PRIVATE int ts__ix_cont_ok(const ts__ix_cont *c)
{
    uint32_t j;
    if (c->card == 0) return 0;
    if (c->cap == 0) return ts__ix_popcount_words((const uint64_t *)c->data, TS__IX_BM_WORDS) == c->card;
    if (c->card > c->cap || c->card > TS__IX_ARR_MAX) return 0;
    for (j = 1; j < c->card; j++)
        if (((const uint16_t *)c->data)[j - 1] >= ((const uint16_t *)c->data)[j]) return 0;
    return 1;
}

TASKSTORE_DEF ts_result ts_index_verify(ts_index *idx, int repair, ts_index_verify_report *report)
{
    ts_index *ix = idx;
    ts_index_verify_report rep;
    uint32_t *refs, d, t;
    uint64_t sum_dl = 0, nlive = 0, ntext = 0;
    size_t i, b, seen = 0;
    int fwd_bad = 0;
    if (report) memset(report, 0, sizeof *report);
    if (!ix) return TS_E_INVALID;
    memset(&rep, 0, sizeof rep);
    refs = (uint32_t *)ts__calloc(&ix->env.alloc, (size_t)ix->nterms + 1, sizeof(uint32_t));
    if (!refs) return TS__FAIL(&ix->env, TS_E_NOMEM, "index: out of memory");
    for (d = 0; d < ix->ndocs; d++) {
        const ts__ix_doc *D = &ix->docs[d];
        int live = (int)((ix->live[d >> 6] >> (d & 63)) & 1);
        uint64_t v, text_tf = 0, prev = 0;
        unsigned singles = 0;
        ts__ix_rd rd;
        if (!D->id) {
            if (live) TS__IX_PROBLEM(&rep, bad_sessions, "free number %lu marked live", (unsigned long)d);
            continue;
        }
        nlive++;
        if (!live) TS__IX_PROBLEM(&rep, bad_sessions, "session %s not marked live", D->id);
        if (!ts__map_get(&ix->ids, D->id, D->id_len, &v) || v != d)
            TS__IX_PROBLEM(&rep, bad_sessions, "session %s missing from the id map", D->id);
        rd.p = D->fwd; rd.end = D->fwd ? D->fwd + D->fwd_len : D->fwd; rd.bad = 0;
        for (i = 0; i < D->nterms; i++) {
            uint64_t delta = ts__ix_rd_varint(&rd), tf = ts__ix_rd_varint(&rd), tid = prev + delta;
            int field;
            if (rd.bad || (i && !delta) || tid >= ix->nterms || tf == 0) {
                TS__IX_PROBLEM(&rep, bad_sessions, "session %s: malformed term list", D->id);
                fwd_bad = 1;
                break;
            }
            prev = tid;
            field = ts__ix_field(ix, (uint32_t)tid);
            if (field == TS__IX_F_TEXT) text_tf += tf;
            else if (tf != 1) { TS__IX_PROBLEM(&rep, bad_sessions, "session %s: repeated value", D->id); fwd_bad = 1; }
            if (field == TS__IX_F_MONTH) {
                char m[32];
                size_t mn = ts__ix_month_key(D->start, m);
                const ts__ix_term *T = &ix->terms[tid];
                if (!D->has_start || T->len != mn + 1 || memcmp(ix->arena + T->off + 1, m, mn) != 0) {
                    TS__IX_PROBLEM(&rep, bad_sessions, "session %s: wrong month", D->id);
                    fwd_bad = 1;
                }
            }
            {
                unsigned bit = field == TS__IX_F_CATEGORY ? 1u : field == TS__IX_F_SUBCAT ? 2u :
                               field == TS__IX_F_STATUS ? 4u : field == TS__IX_F_MONTH ? 8u : 0u;
                if (singles & bit) { TS__IX_PROBLEM(&rep, bad_sessions, "session %s: two values of one field", D->id); fwd_bad = 1; }
                singles |= bit;
            }
            if (ts__ix_post_has(&ix->terms[tid], d)) refs[tid]++;
            else TS__IX_PROBLEM(&rep, missing_postings, "session %s missing from a posting list", D->id);
        }
        if (!fwd_bad && rd.p != rd.end) { TS__IX_PROBLEM(&rep, bad_sessions, "session %s: term list length", D->id); fwd_bad = 1; }
        if (D->has_start && !(singles & 8)) { TS__IX_PROBLEM(&rep, bad_sessions, "session %s: no month", D->id); fwd_bad = 1; }
        if (text_tf != D->dl) TS__IX_PROBLEM(&rep, bad_sessions, "session %s: wrong length", D->id);
        sum_dl += D->dl;
    }
    if (nlive != ix->nlive || ix->ids.count != ix->nlive)
        TS__IX_PROBLEM(&rep, bad_sessions, "session count %lu, expected %lu", (unsigned long)ix->nlive, (unsigned long)nlive);
    if (sum_dl != ix->total_dl) TS__IX_PROBLEM(&rep, bad_sessions, "total length mismatch");
    for (t = 0; t < ix->nterms; t++) {
        const ts__ix_term *T = &ix->terms[t];
        uint64_t cnt = ts__ix_post_count(T);
        uint32_t j;
        if (ts__ix_field(ix, t) == TS__IX_F_TEXT) ntext++;
        for (j = 0; j < T->ncont; j++)
            if (!ts__ix_cont_ok(&T->conts[j]) || (j && T->conts[j - 1].key >= T->conts[j].key)) {
                TS__IX_PROBLEM(&rep, bad_terms, "term %lu: malformed posting list", (unsigned long)t);
                break;
            }
        if (cnt != T->df) TS__IX_PROBLEM(&rep, bad_terms, "term %lu: count %lu, holds %lu", (unsigned long)t,
                                         (unsigned long)T->df, (unsigned long)cnt);
        if (cnt > refs[t]) {
            rep.extra_postings += cnt - refs[t] - 1;
            TS__IX_PROBLEM(&rep, extra_postings, "term %lu: %lu postings no session accounts for", (unsigned long)t,
                           (unsigned long)(cnt - refs[t]));
        }
    }
    /* every text term once in the prefix arrays, the sorted part in order */
    memset(refs, 0, ((size_t)ix->nterms + 1) * sizeof(uint32_t));
    for (i = 0; i < ix->nsorted + ix->nrecent; i++) {
        uint32_t x = i < ix->nsorted ? ix->sorted[i] : ix->recent[i - ix->nsorted];
        if (x >= ix->nterms || ts__ix_field(ix, x) != TS__IX_F_TEXT || refs[x]++) {
            TS__IX_PROBLEM(&rep, bad_terms, "prefix array entry %lu", (unsigned long)i);
            break;
        }
        if (i && i < ix->nsorted && ts__ix_term_cmp_cb(ix, ix->sorted[i - 1], x) >= 0)
            TS__IX_PROBLEM(&rep, bad_terms, "prefix array out of order at %lu", (unsigned long)i);
    }
    if (ix->nsorted + ix->nrecent != ntext) TS__IX_PROBLEM(&rep, bad_terms, "prefix array misses text terms");
    ts__free(&ix->env.alloc, refs, ((size_t)ix->nterms + 1) * sizeof(uint32_t));
    for (b = 0; b < ix->nblk; b++) {
        const ts__ix_oblk *B = ix->blk[b];
        uint32_t j;
        if (B->n == 0 || B->n > TS__IX_OB) { TS__IX_PROBLEM(&rep, bad_sessions, "order block %lu", (unsigned long)b); break; }
        for (j = 0; j < B->n; j++) {
            uint32_t x = B->d[j];
            if (x >= ix->ndocs || !ix->docs[x].id) { TS__IX_PROBLEM(&rep, bad_sessions, "order list names a free number"); break; }
            if (seen && ts__ix_doc_cmp(ix, j ? B->d[j - 1] : ix->blk[b - 1]->d[ix->blk[b - 1]->n - 1], x) >= 0)
                TS__IX_PROBLEM(&rep, bad_sessions, "order list out of order at %lu", (unsigned long)seen);
            seen++;
        }
    }
    if (seen != ix->nlive) TS__IX_PROBLEM(&rep, bad_sessions, "order list holds %lu sessions", (unsigned long)seen);
    if (rep.missing_postings || rep.extra_postings || rep.bad_terms || rep.bad_sessions) {
        if (repair && !fwd_bad) {
            ts_result r = ts__ix_rebuild(ix);
            if (r) return r;
            r = ts_index_verify(ix, 0, NULL);
            if (report) *report = rep; /* what was found (and repaired) */
            return r;
        }
        if (report) *report = rep;
        return TS__FAIL(&ix->env, TS_E_CORRUPT, "index: %s", rep.first_problem);
    }
    if (report) *report = rep;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_index_check_doc(ts_index *idx, const ts_index_doc *doc, size_t *missing, size_t *extra)
{
    ts_index *ix = idx;
    ts_result r;
    uint32_t dl, d;
    uint64_t v;
    size_t i = 0, j = 0, miss = 0, ext = 0;
    const ts__ix_doc *D;
    if (missing) *missing = 0;
    if (extra) *extra = 0;
    if (!ix) return TS_E_INVALID;
    if ((r = ts__ix_check_doc_args(ix, doc)) != TS_OK) return r;
    if ((r = ts__ix_collect(ix, doc, &dl)) != TS_OK) return r;
    if (!ts__map_get(&ix->ids, doc->id, doc->id_len, &v)) {
        if (missing) *missing = ix->npairs;
        return TS_E_NOTFOUND;
    }
    d = (uint32_t)v;
    D = &ix->docs[d];
    TS__IX_RESERVE(r, ix, opairs, capopairs, D->nterms, uint64_t);
    if (r) return r;
    ts__ix_decode_fwd(D, ix->opairs);
    while (i < ix->npairs || j < D->nterms) {
        uint32_t a = i < ix->npairs ? (uint32_t)(ix->pairs[i] >> 32) : TS__IX_NONE;
        uint32_t b = j < D->nterms ? (uint32_t)(ix->opairs[j] >> 32) : TS__IX_NONE;
        if (a == b) {
            if ((uint32_t)ix->pairs[i] != (uint32_t)ix->opairs[j]) { miss++; ext++; }
            else if (!ts__ix_post_has(&ix->terms[a], d)) miss++;
            i++; j++;
        } else if (a < b) { miss++; i++; }
        else { ext++; j++; }
    }
    if (missing) *missing = miss;
    if (extra) *extra = ext;
    if (miss || ext)
        return TS__FAIL(&ix->env, TS_E_CORRUPT, "session %.*s: %lu terms missing, %lu extra in the index",
                        (int)doc->id_len, doc->id, (unsigned long)miss, (unsigned long)ext);
    if ((doc->has_start_time ? 1 : 0) != D->has_start || (D->has_start && D->start != doc->start_time_ms))
        return TS__FAIL(&ix->env, TS_E_CORRUPT, "session %.*s: startTime differs from the index", (int)doc->id_len, doc->id);
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_index_stats_get(ts_index *idx, ts_index_stats *out)
{
    const ts_index *ix = idx;
    uint64_t mem;
    uint32_t t, d, j;
    size_t i;
    if (out) memset(out, 0, sizeof *out);
    if (!ix || !out) return TS_E_INVALID;
    out->sessions = ix->nlive;
    out->text_tokens = ix->total_dl;
    out->disk_bytes = ix->disk_bytes;
    out->changes_since_optimize = ix->changes;
    out->has_last_built = ix->has_built;
    out->last_built_ms = ix->built_ms;
    out->has_last_optimized = ix->has_optimized;
    out->last_optimized_ms = ix->optimized_ms;
    out->index_extra_text = ix->extra_text;
    mem = sizeof *ix + ix->capterms * sizeof(ts__ix_term) + ix->slot_cap * sizeof(uint64_t) + ix->arena_cap +
          (ix->capsorted + ix->caprecent) * sizeof(uint32_t);
    for (t = 0; t < ix->nterms; t++) {
        const ts__ix_term *T = &ix->terms[t];
        if (!T->df) { out->dead_terms++; continue; }
        out->terms++;
        out->postings += T->df;
        switch (ts__ix_field(ix, t)) {
        case TS__IX_F_TEXT: out->text_terms++; break;
        case TS__IX_F_TAG: out->tag_terms++; break;
        case TS__IX_F_TOPIC: out->topic_terms++; break;
        case TS__IX_F_CATEGORY: out->category_terms++; break;
        case TS__IX_F_SUBCAT: out->sub_category_terms++; break;
        case TS__IX_F_STATUS: out->status_terms++; break;
        default: out->month_terms++; break;
        }
        mem += (uint64_t)T->capcont * sizeof(ts__ix_cont);
        for (j = 0; j < T->ncont; j++)
            mem += T->conts[j].cap ? (uint64_t)T->conts[j].cap * sizeof(uint16_t) : TS__IX_BM_WORDS * sizeof(uint64_t);
    }
    mem += ix->capdocs * sizeof(ts__ix_doc) + ix->capfree * sizeof(uint32_t) + ix->capline * sizeof(uint64_t);
    for (d = 0; d < ix->ndocs; d++)
        if (ix->docs[d].id) mem += (uint64_t)ix->docs[d].id_len + 1 + ix->docs[d].fwd_len;
    mem += ix->ids.cap * sizeof(ts__map_slot);
    for (i = 0; i < ix->ids.cap; i++)
        if (ix->ids.slots[i].hash) mem += ix->ids.slots[i].key_len + 1;
    mem += (ix->nblk + (ix->spare ? 1 : 0)) * sizeof(ts__ix_oblk) + ix->capblk * sizeof(ts__ix_oblk *);
    mem += (ix->cappairs + ix->capopairs + ix->cap_a + ix->cap_b + ix->capqtf) * sizeof(uint64_t) +
           (ix->capdiff + ix->capqdocs + ix->capqperm) * sizeof(uint32_t) + ix->capqkey * sizeof(uint64_t) + ix->capenc +
           ix->capqscore * sizeof(double) + ix->capcrit * sizeof(ts__ix_crit) + ix->qbuf.cap;
    out->memory_bytes = mem;
    return TS_OK;
}

/* Months sort by their number, not their text ("-0001" and "10000"). */
TS__PRIVATE int64_t ts__ix_month_num(const ts_index *ix, uint32_t tid)
{
    const ts__ix_term *T = &ix->terms[tid];
    const char *k = ix->arena + T->off + 1;
    size_t n = T->len - 1, i = 0;
    int64_t y = 0, neg = 0;
    if (n && k[0] == '-') { neg = 1; i = 1; }
    while (i < n && k[i] != '-') y = y * 10 + (k[i++] - '0');
    if (neg) y = -y;
    return y * 12 + (n >= 2 ? (k[n - 2] - '0') * 10 + (k[n - 1] - '0') : 0);
}

TS__PRIVATE int ts__ix_month_cmp_cb(const void *ctx, uint32_t a, uint32_t b)
{
    int64_t x = ts__ix_month_num((const ts_index *)ctx, a), y = ts__ix_month_num((const ts_index *)ctx, b);
    return x < y ? -1 : x > y ? 1 : 0;
}

TASKSTORE_DEF ts_result ts_index_months(ts_index *idx, ts_index_month_fn fn, void *user)
{
    ts_index *ix = idx;
    uint32_t t;
    size_t m = 0, i;
    ts_result r;
    if (!ix || !fn) return TS_E_INVALID;
    for (t = 0; t < ix->nterms; t++)
        if (ix->terms[t].df && ts__ix_field(ix, t) == TS__IX_F_MONTH) m++;
    TS__IX_RESERVE(r, ix, qdocs, capqdocs, m, uint32_t);
    if (r) return r;
    m = 0;
    for (t = 0; t < ix->nterms; t++)
        if (ix->terms[t].df && ts__ix_field(ix, t) == TS__IX_F_MONTH) ix->qdocs[m++] = t;
    ts__ix_sort(ix->qdocs, m, ts__ix_month_cmp_cb, ix);
    for (i = 0; i < m; i++) {
        const ts__ix_term *T = &ix->terms[ix->qdocs[i]];
        if (fn(user, ix->arena + T->off + 1, T->len - 1, T->df)) break;
    }
    return TS_OK;
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
