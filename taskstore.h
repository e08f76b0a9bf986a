/* taskstore.h - v0.1.0 - stores recorded work sessions: chunks, attachments, search. License at end of file.

   Do this:
      #define TASKSTORE_IMPLEMENTATION
   before you include this file in *one* C or C++ file to create the implementation.
   Everywhere else, just #include "taskstore.h".

   Optional, in that same file: #define TASKSTORE_STB_ZLIB (deflate through
   stb_image/stb_image_write) and/or TASKSTORE_WEBP (PNG/JPEG -> WebP through
   stb_image + libwebp; link -lwebp).

TABLE OF CONTENTS
   Documentation (this comment):
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

   Code, in dependency order; search for the tag to jump there. The API part
   (declarations, with a doc comment above each) comes first, then the
   implementation in the same order:
   >>api_base      >>base       results, allocator, errors, buffers, hash map, UTF-8
   >>api_sha256    >>sha256     SHA-256: SHA-NI at run time, portable C otherwise
   >>api_json      >>json       strict JSON reader/writer (read-only public view)
   >>api_io        >>io         the file vtable: >>io_posix, >>io_mem, >>io_fault
   >>api_lru       >>lru        the read cache
   >>api_queue     >>queue      the write queue, the overlay, tick/idle scheduling
   >>api_codecs    >>codecs     codec table, ".z" frames, WebP conversion
   >>api_cas       >>cas        content-addressed attachments, references, GC
   >>api_sessions  >>sessions   the chunker: metadata, chunks, documents
   >>api_index     >>index      tokenizer, inverted indexes, search, query strings
   >>api_store     >>store      ts_store: ties the components together
   >>api_compress  >>compress   background compression of a store
   >>api_migrate   >>migrate    legacy stores -> the chunked layout

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
       ts_store_tick(st, app_now_ms(), 500);         // due writes, 0.5 ms budget
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
   nothing, and the object stays usable. The optional codecs are the
   exception: stb_image has no context pointer, so it allocates through
   TASKSTORE_MALLOC with user == NULL, and libwebp through the C library.

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
   0.1.0  (2026-11-21) first version: chunked sessions, content-addressed
          attachments, search, LRU cache, write queue, compression,
          migrator, three file vtables.
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
   and (for ts_lru_put_copy) the value bytes. A put allocates nothing when
   the entry's block can be reused: a put under a present key whose new
   entry needs about the same size (a ref for a ref, a copy of a similar
   length) rewrites it in place, and a put of a new key into a full cache
   takes over the block of the entry it evicts when that block has about
   the size it needs (at most an eighth + 64 bytes more), so a cache at its
   budget holding similar entries allocates nothing in steady state. The
   budget counts, per entry, the value's cost + the key length +
   TS_LRU_ENTRY_OVERHEAD; a record per distinct group (~150 bytes + name,
   plus 8 bytes per member beyond 8) and per session (~80 bytes + name) is
   not counted.

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
   (96 bytes on 64-bit), its share of the hash table, allocator slack and
   a reused block's slack. A fixed figure so budgets behave the same on
   every platform. */
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
/* >>api_codecs: compression codecs, the compressed-file frame, and the     */
/* PNG/JPEG -> WebP conversion (pure functions: bytes in, bytes out)        */
/* ======================================================================== */

/* A CODEC turns whole buffers into smaller ones and back. Built in:
     "identity" (id 0)  copies; always there (tests, and a frame that must
                        exist but need not shrink);
     "deflate"  (id 1)  RFC 1950 zlib streams through stb_image_write.h
                        (compress) and stb_image.h (decompress), when the
                        implementation is compiled with TASKSTORE_STB_ZLIB.
   A user codec (zlib, zstd, ...) plugs in with ts_codec_set_add: ids 128..255
   are the user's; a codec registered with id 1 replaces the built-in deflate
   and must read and write RFC 1950 streams (zlib's compress2/uncompress do),
   so files written by either stay readable by the other.

   THE FRAME. A compressed file is the plain file's name plus ".z"
   (chunk-000.json -> chunk-000.json.z) and holds a 24-byte header and then
   the codec's stream:
     0  4  magic 0x89 'T' 'S' 'Z'
     4  1  frame version (1)
     5  1  codec id
     6  2  header size, little endian (24; readers skip what they do not know)
     8  8  original size in bytes, little endian
    16  4  CRC-32 (IEEE, as gzip) of the original bytes
    20  4  CRC-32 of header bytes 0..19
   A reader checks the header CRC, refuses an original size over its limit
   BEFORE allocating (a decompression bomb costs nothing), decompresses into
   a buffer of exactly that size (a stream that yields more or fewer bytes is
   TS_E_CORRUPT) and checks the CRC of the result. CRC-32 rather than SHA-256:
   the frame guards against torn and flipped bytes, not against an adversary
   (content identity is the CA store's business), and it costs ~1 ns/byte.

   Every function here is pure and reentrant: no store, no I/O, no globals,
   so it may run on any thread (the "job" half of background compression). */

struct ts_blob; /* declared with the store API: bytes handed to the caller */

#define TS_CODEC_ID_IDENTITY 0
#define TS_CODEC_ID_DEFLATE 1
#define TS_CODEC_MAX 8              /* user codecs per set */
#define TS_FRAME_HEADER_SIZE 24
#define TS_FRAME_SUFFIX ".z"

typedef struct ts_codec {
    const char *name;   /* [a-z0-9]{1,15}; must outlive the set holding it */
    uint8_t id;         /* frame codec id: 1 (replaces deflate) or 128..255 */
    void *user;         /* passed to both functions */
    /* Compresses src[0..len) (level 0 = the codec's default) into a buffer
       allocated from alloc: *out (out_cap bytes allocated, *out_len used).
       On failure nothing is left allocated. Returns TS_OK, TS_E_NOMEM,
       TS_E_TOOBIG (input beyond the codec's limits) or TS_E_IO. */
    ts_result (*compress_fn)(void *user, const void *src, size_t len, int level,
                             const ts_allocator *alloc, void **out, size_t *out_len,
                             size_t *out_cap);
    /* Decompresses src[0..len) into exactly dst_len bytes at dst (dst_len is
       the original size the frame records; dst has dst_len + 1 bytes). A
       stream that is malformed or yields more or fewer than dst_len bytes is
       TS_E_CORRUPT. Must never write past dst + dst_len. */
    ts_result (*decompress_fn)(void *user, const void *src, size_t len, void *dst,
                               size_t dst_len);
} ts_codec;

/* The codecs a store (or a caller) can read and write. A zero-filled set
   holds no user codecs and still finds the built-in ones. */
typedef struct ts_codec_set {
    ts_codec codecs[TS_CODEC_MAX];
    uint32_t count;
} ts_codec_set;

/* The built-in codec named name ("identity", "deflate") into *out.
   Returns TS_OK, TS_E_NOTFOUND (unknown name) or TS_E_NOTIMPL ("deflate" in
   a build without TASKSTORE_STB_ZLIB; *out is zeroed). */
TASKSTORE_API ts_result ts_codec_builtin(const char *name, ts_codec *out);

/* Adds codec (copied; its name string is not) to set, replacing one with the
   same id or name. Returns TS_OK, TS_E_INVALID (bad name, id 0 or 2..127,
   missing function) or TS_E_RANGE (TS_CODEC_MAX user codecs already). */
TASKSTORE_API ts_result ts_codec_set_add(ts_codec_set *set, const ts_codec *codec);

/* Finds a codec by frame id or by name: the set's own first, then the
   built-ins. set may be NULL (built-ins only). Returns NULL if none. The
   pointer is into set, or to a static const built-in. */
TASKSTORE_API const ts_codec *ts_codec_set_find_id(const ts_codec_set *set, unsigned id);
TASKSTORE_API const ts_codec *ts_codec_set_find(const ts_codec_set *set, const char *name);

/* CRC-32 (IEEE 802.3, the one of gzip and PNG) of n bytes, continuing from
   crc (0 to start). */
TASKSTORE_API uint32_t ts_crc32(uint32_t crc, const void *data, size_t n);

/* What a frame header says. */
typedef struct ts_frame_info {
    unsigned codec_id;
    unsigned header_size;
    uint64_t original_size;
    uint32_t crc;               /* CRC-32 of the original bytes */
} ts_frame_info;

/* Parses and checks a frame header (len >= TS_FRAME_HEADER_SIZE). Returns
   TS_OK, TS_E_CORRUPT (not a frame, header CRC mismatch) or TS_E_VERSION. */
TASKSTORE_API ts_result ts_frame_info_get(const void *frame, size_t len, ts_frame_info *out);

/* Compresses src[0..len) with codec (level 0 = default) into a new frame in
   *out (a blob from alloc, NULL = default allocator). The frame is written
   even when it is not smaller; callers compare out->len with len. Returns
   TS_OK, TS_E_INVALID, TS_E_NOMEM, TS_E_TOOBIG or the codec's error. */
TASKSTORE_API ts_result ts_frame_encode(const ts_codec *codec, int level, const void *src,
                                        size_t len, const ts_allocator *alloc,
                                        struct ts_blob *out);

/* Decodes a frame into *out (NUL-terminated after len) using the codecs of
   set (NULL = built-ins). max_out bounds the original size (0: the
   TASKSTORE_MAX_DECOMPRESSED_BYTES default, 256 MiB); it is checked before
   anything is allocated. Returns TS_OK; TS_E_CORRUPT for a malformed frame,
   a stream that does not yield exactly the recorded size, a CRC mismatch or
   a recorded size over max_out (a decompression bomb); TS_E_NOTIMPL for a
   codec id this build or set does not have; TS_E_VERSION; TS_E_NOMEM. */
TASKSTORE_API ts_result ts_frame_decode(const ts_codec_set *set, const void *frame, size_t len,
                                        size_t max_out, const ts_allocator *alloc,
                                        struct ts_blob *out);

/* ---- images ----------------------------------------------------------------
   Screenshot conversion, built when the implementation is compiled with
   TASKSTORE_WEBP (stb_image.h decodes PNG and JPEG, libwebp encodes; link
   -lwebp). Without it the functions return TS_E_NOTIMPL. Lossless is the
   default: on real UI screenshots it is exact and smaller than lossy q80
   (about 0.33x vs 0.43x of the PNG here). Hostile input is bounded: the
   pixel count is checked from the header before decoding, and a PNG's
   compressed pixel data is first inflated into a buffer of exactly the size
   its header implies, so a PNG decompression bomb fails (TS_E_CORRUPT)
   without the decoder ever growing a buffer. */

#define TS_WEBP_MAX_DIMENSION 16383u

typedef struct ts_webp_options {
    int lossy;              /* 0: lossless (default, exact pixels); 1: lossy */
    float quality;          /* lossy: 1..100 (0: 80). lossless: effort 1..100 (0: 75) */
    int method;             /* libwebp method 1..6, slower is smaller (0: 4, as cwebp) */
    uint64_t max_pixels;    /* 0: TASKSTORE_MAX_IMAGE_PIXELS (64 Mpx) */
    uint64_t max_input;     /* bytes of the PNG/JPEG; 0: 256 MiB */
    int verify;             /* decode the WebP again and compare: every pixel
                               when lossless, the dimensions when lossy */
} ts_webp_options;

typedef struct ts_image_info {
    char format[8];         /* "png", "jpeg", "webp" or "" */
    uint32_t width, height;
    int has_alpha;          /* some pixel is not opaque (encoded as RGBA) */
    uint64_t decode_us, encode_us; /* when a clock is available, else 0 */
} ts_image_info;

/* The mime type of image bytes by their signature: "image/png",
   "image/jpeg", "image/webp", or NULL for anything else. */
TASKSTORE_API const char *ts_image_sniff(const void *data, size_t len);

/* 1 when this build converts images (TASKSTORE_WEBP), else 0. */
TASKSTORE_API int ts_image_webp_available(void);

/* Decodes a PNG or JPEG and encodes it as WebP into *out (a blob from alloc,
   NULL = default). opt may be NULL (lossless defaults). info (out, may be
   NULL). The result is written even when it is not smaller: callers keep
   the original when out->len >= len. Pure: may run on any thread.
   Returns TS_OK; TS_E_INVALID (not PNG/JPEG, or wider or taller than
   TS_WEBP_MAX_DIMENSION); TS_E_CORRUPT (malformed, truncated, over
   max_pixels or max_input, a decompression bomb, or verify found a
   mismatch); TS_E_NOMEM; TS_E_NOTIMPL (no TASKSTORE_WEBP). */
TASKSTORE_API ts_result ts_image_to_webp(const void *src, size_t len, const ts_webp_options *opt,
                                         const ts_allocator *alloc, struct ts_blob *out,
                                         ts_image_info *info);

/* ======================================================================== */
/* >>api_cas: the content-addressable attachment store                      */
/* ======================================================================== */

/* Attachments (screenshots, audio, any bytes) are stored once per distinct
   content, named by the SHA-256 of their bytes:

     {dir}/{first two hex}/{hash}/data.bin        the raw bytes
     {dir}/{first two hex}/{hash}/metadata.json   {"hash","mimeType","size",
         "refCount","references":[{"sessionId","attachmentId","addedAt"}],
         "createdAt","savedAt","storedEncoding":"raw","storedSize"}

   ({dir} is "attachments-ca" by default.) A ts_cas works alone over any
   ts_io, and is what the store uses for attachments.

   Durability: every mutating call has finished its writes, synced, when it
   returns. Data is made durable before the metadata that names it; an
   object is deleted by renaming its directory away ({hash}.del, one atomic
   step) before anything in it is removed. So after a crash an object's
   name holds the whole object, or data without metadata (an interrupted
   save: invisible, reclaimed by GC), or nothing; never metadata naming
   missing or torn bytes. Sync budget (file syncs + directory syncs, as the
   vtable counts them, tested on the in-memory and POSIX vtables):
     save, new content            2 + 2, plus 1 per directory it creates
                                  ({hh} and {hash}: mkdir syncs the parent)
     save, existing content       1 + 1 (metadata only; no data write/sync)
     save, existing + same ref    0 + 0 (nothing written)
     ref_add / ref_remove         1 + 1 (0 + 0 when there is nothing to change)
     delete                       0 + 1
     GC step                      0 + 1 per {hh} directory with objects freed
                                  (at most one per object freed)
   Load and verify re-hash the bytes they read: bytes that do not hash to
   their name are TS_E_CORRUPT, never returned as valid data.

   Reference counts are a hint kept in metadata; the truth is what sessions
   reference. GC is mark-and-sweep against that truth (as git, borg and
   restic do), and a repair pass recomputes the counts from it.

   Hashes are 64 lowercase hex digits (anything else is TS_E_INVALID, never
   a path); session and attachment ids are 1-128 bytes of [A-Za-z0-9._-].
   Times are caller-supplied milliseconds ("store time"). */

#define TS_CAS_DEFAULT_GRACE_MS 3600000u /* 1 hour */

/* A string buffer that holds a hash: 64 hex digits and a NUL. */
#define TS_CAS_HASH_BUF 65

struct ts_blob; /* declared with the store API; holds bytes given to the caller */

typedef struct ts_cas ts_cas;

typedef struct ts_cas_config {
    const ts_io *io;            /* required; copied, must outlive the ts_cas */
    ts_allocator allocator;     /* zero: TASKSTORE_MALLOC & co */
    ts_logger logger;           /* zero: silent */
    const char *dir;            /* NULL: "attachments-ca" (relative to the io root) */
    /* Objects younger than this (store time since their last save) are
       never collected, so a crash between save and reference cannot lose
       them to a GC that runs right after. 0: TS_CAS_DEFAULT_GRACE_MS;
       negative: no grace period. */
    int64_t gc_grace_ms;
    uint64_t max_object_bytes;  /* 0: TASKSTORE_MAX_ATTACHMENT_BYTES (256 MiB) */
    uint64_t max_meta_bytes;    /* 0: TASKSTORE_MAX_CAS_META_BYTES (16 MiB) */
} ts_cas_config;

/* Who references an object: a session and the attachment id inside it. */
typedef struct ts_cas_ref {
    const char *session_id;     /* 1-128 bytes of [A-Za-z0-9._-] */
    const char *attachment_id;  /* same rules */
    uint64_t added_at_ms;       /* store time the reference was made */
} ts_cas_ref;

/* What metadata.json says about one object. */
typedef struct ts_cas_info {
    char hash[TS_CAS_HASH_BUF];
    char mime_type[128];
    char stored_encoding[16];   /* "raw" (data.bin), or a codec name */
    uint64_t size;              /* bytes of the original content */
    uint64_t stored_size;       /* bytes on disk for the content */
    uint64_t ref_count;         /* as recorded (a hint, see repair) */
    uint64_t created_at_ms;
    uint64_t saved_at_ms;       /* last save of this content; grace counts from here */
} ts_cas_info;

/* Store-wide figures. logical_bytes is what the referenced content would
   take without deduplication: each object's size times max(1, refCount). */
typedef struct ts_cas_stats {
    uint64_t objects;
    uint64_t references;        /* sum of refCount */
    uint64_t zero_ref_objects;  /* candidates for GC (unless marked) */
    uint64_t logical_bytes;
    uint64_t unique_bytes;      /* sum of object sizes */
    uint64_t stored_bytes;      /* sum of stored sizes (after any codec) */
    uint64_t dedup_saved_bytes; /* logical_bytes - unique_bytes */
    double   dedup_saved_percent; /* 100 * saved / logical, 0 when empty */
} ts_cas_stats;

/* Cumulative figures of one GC cycle, given to the progress callback. */
typedef struct ts_cas_gc_progress {
    uint64_t objects_scanned;
    uint64_t objects_freed;
    uint64_t bytes_freed;       /* stored bytes removed */
    uint64_t kept_referenced;   /* marked, or is_referenced said so */
    uint64_t kept_grace;        /* unreferenced but younger than the grace period */
    uint64_t kept_unreadable;   /* unreadable metadata: kept, see verify */
    int done;                   /* 1 once the sweep has finished */
} ts_cas_gc_progress;

typedef void (*ts_cas_progress_fn)(void *user, const ts_cas_gc_progress *progress);
/* Return non-zero when some session references hash. */
typedef int (*ts_cas_referenced_fn)(void *user, const char *hash);
/* Called once per item; return non-zero to stop early. */
typedef int (*ts_cas_hash_fn)(void *user, const char *hash);
typedef int (*ts_cas_ref_fn)(void *user, const ts_cas_ref *ref);
/* A problem found by verify or repair: hash (may be a directory name that
   is not a valid hash), the code (TS_E_CORRUPT, TS_E_NOTFOUND, ...) and a
   message with the path. */
typedef void (*ts_cas_problem_fn)(void *user, const char *hash, ts_result code,
                                  const char *message);

/* A config with every default filled in (same as a zeroed one, io NULL). */
TASKSTORE_API ts_cas_config ts_cas_config_default(void);

/* Opens a CA store over cfg->io (in). Does no I/O: a store that crashed
   always reopens; problems show up per object. *out is NULL on failure. */
TASKSTORE_API ts_result ts_cas_open(const ts_cas_config *cfg, ts_cas **out);
/* Frees the store (NULL is fine). Nothing is pending: every call already
   finished its writes. */
TASKSTORE_API void ts_cas_close(ts_cas *cas);
TASKSTORE_API ts_result ts_cas_last_error(const ts_cas *cas, ts_error_info *out);

/* Stores len bytes (in) under their SHA-256 and writes the hash to hash_out.
   mime_type: printable ASCII, up to 127 bytes, no '"' or '\'; NULL or ""
   means "application/octet-stream". ref (optional) is added to the object's
   references in the same metadata write. New content: data.bin, then
   metadata.json. Existing content writes no data: it only gains ref (no
   write at all if ref is already there); without ref it refreshes savedAt,
   which restarts the grace period. Holds no copy of the bytes. */
TASKSTORE_API ts_result ts_cas_save(ts_cas *cas, const void *data, size_t len,
                                    const char *mime_type, const ts_cas_ref *ref,
                                    uint64_t now_ms, char hash_out[TS_CAS_HASH_BUF]);

/* Legacy import: decodes base64 text (attachments/{id}.json's "base64"
   field) and saves the raw bytes as ts_cas_save does. The decoder is strict:
   RFC 4648 alphabet (not URL-safe), '=' padding required, zero trailing
   bits, nothing after the padding; ASCII space, tab, CR and LF are ignored
   anywhere (wrapped lines); an optional "data:<mime>;base64," prefix is
   accepted (its mime is used when mime_type is NULL or ""). Invalid input is
   TS_E_CORRUPT naming attachment_id and the byte offset; the decoded size is
   computed before anything is allocated (over the limit: TS_E_TOOBIG). */
TASKSTORE_API ts_result ts_cas_import_base64(ts_cas *cas, const char *attachment_id,
                                             const char *b64, size_t b64_len,
                                             const char *mime_type, const ts_cas_ref *ref,
                                             uint64_t now_ms, char hash_out[TS_CAS_HASH_BUF]);

/* *exists (out) = 1 when the object's metadata is there. TS_E_INVALID for a
   malformed hash. */
TASKSTORE_API ts_result ts_cas_exists(ts_cas *cas, const char *hash, int *exists);

/* Reads the object's metadata into *info (out). TS_E_NOTFOUND if absent,
   TS_E_CORRUPT (with the path) if metadata.json is malformed. */
TASKSTORE_API ts_result ts_cas_stat(ts_cas *cas, const char *hash, ts_cas_info *info);

/* Loads the object's bytes into a new blob (out; free with ts_blob_free or
   through blob.alloc) and, optionally, its metadata into *info. The bytes
   are verified against their hash first: TS_E_CORRUPT on mismatch, and the
   blob stays empty. Returns the stored bytes (see info->stored_encoding). */
TASKSTORE_API ts_result ts_cas_load(ts_cas *cas, const char *hash, struct ts_blob *out,
                                    ts_cas_info *info);

/* Like ts_cas_load, into the caller's buffer (buf, cap). *size_out (out)
   is the object's size; if it exceeds cap the call returns TS_E_RANGE and
   reads nothing. On TS_E_CORRUPT buf holds unverified bytes: do not use them. */
TASKSTORE_API ts_result ts_cas_load_into(ts_cas *cas, const char *hash, void *buf, size_t cap,
                                         size_t *size_out, ts_cas_info *info);

/* Flags of ts_cas_delete. */
enum { TS_CAS_DELETE_FORCE = 1 << 0 /* delete even if references are recorded */ };

/* Deletes an object now (metadata first, then data). An object that
   records references is TS_E_STATE unless TS_CAS_DELETE_FORCE. */
TASKSTORE_API ts_result ts_cas_delete(ts_cas *cas, const char *hash, unsigned flags);

/* Adds ref (in) to the object's references (no write if the same session +
   attachment pair is there already). TS_E_NOTFOUND if the object is absent. */
TASKSTORE_API ts_result ts_cas_ref_add(ts_cas *cas, const char *hash, const ts_cas_ref *ref);
/* Removes the (session_id, attachment_id) reference. TS_E_NOTFOUND if the
   object or the reference is absent. An object whose count reaches zero is
   left for GC. */
TASKSTORE_API ts_result ts_cas_ref_remove(ts_cas *cas, const char *hash,
                                          const char *session_id, const char *attachment_id);
/* *count (out) = the recorded refCount. */
TASKSTORE_API ts_result ts_cas_ref_count(ts_cas *cas, const char *hash, uint64_t *count);
/* Calls fn once per recorded reference, in stored order (the strings are
   valid only during the call). */
TASKSTORE_API ts_result ts_cas_refs(ts_cas *cas, const char *hash, ts_cas_ref_fn fn, void *user);

/* Calls fn with the hash of every object that has a metadata.json, in
   ascending hash order. Returns TS_OK (also when fn stopped early). */
TASKSTORE_API ts_result ts_cas_foreach(ts_cas *cas, ts_cas_hash_fn fn, void *user);

/* Store-wide figures into *out. Kept incrementally after a first scan;
   rescan != 0 (or the first call) recomputes them by reading every
   metadata.json. */
TASKSTORE_API ts_result ts_cas_stats_get(ts_cas *cas, int rescan, ts_cas_stats *out);

/* ---- garbage collection: mark and sweep, incremental ---------------------
   ts_cas_gc_begin, then ts_cas_gc_mark for every hash that some session
   references (the caller enumerates its sessions), then ts_cas_gc_step
   until it returns TS_DONE (e.g. a slice per idle call). An object is
   deleted only if it is unmarked AND its last save is older than the grace
   period AND it was not saved or referenced through this ts_cas since
   gc_begin. The recorded refCount is not trusted: an unmarked object with a
   stale count is collected too. Objects whose metadata cannot be read are
   kept (verify reports them); data without metadata (an interrupted save) is
   collected when unmarked. Marks may also be added between steps. Freed
   objects are renamed to {hash}.del, then emptied once the rename is
   durable; leftovers of an interrupted GC are emptied by the next one. */
TASKSTORE_API ts_result ts_cas_gc_begin(ts_cas *cas, uint64_t now_ms);
TASKSTORE_API ts_result ts_cas_gc_mark(ts_cas *cas, const char *hash);
/* Sweeps up to max_objects objects (0: all). progress (optional) gets the
   cycle's cumulative figures. TS_OK: more to do; TS_DONE: finished (the
   cycle is over); TS_E_STATE: no cycle begun. */
TASKSTORE_API ts_result ts_cas_gc_step(ts_cas *cas, uint64_t now_ms, uint32_t max_objects,
                                       ts_cas_progress_fn progress, void *user);
/* Ends a cycle early, deleting nothing more. */
TASKSTORE_API void ts_cas_gc_abort(ts_cas *cas);
/* The figures of the current or last cycle. */
TASKSTORE_API ts_result ts_cas_gc_status(const ts_cas *cas, ts_cas_gc_progress *out);
/* One call: begin, then sweep everything, asking is_referenced (required)
   about each object that would otherwise be deleted. *out optional. */
TASKSTORE_API ts_result ts_cas_gc(ts_cas *cas, uint64_t now_ms,
                                  ts_cas_referenced_fn is_referenced, void *ref_user,
                                  ts_cas_progress_fn progress, void *progress_user,
                                  ts_cas_gc_progress *out);

/* ---- verification and repair --------------------------------------------- */

typedef struct ts_cas_verify_report {
    uint64_t objects;           /* object directories seen */
    uint64_t bytes_hashed;
    uint64_t corrupt;           /* stored bytes do not match the name / size */
    uint64_t bad_metadata;      /* metadata.json unreadable or inconsistent */
    uint64_t missing_data;      /* metadata without its data file */
    uint64_t orphan_data;       /* data without metadata (interrupted save) */
} ts_cas_verify_report;

/* Checks one object: metadata parses and names this hash, the data file is
   there, has the recorded size and hashes to its name. TS_OK, TS_E_CORRUPT,
   TS_E_NOTFOUND. */
TASKSTORE_API ts_result ts_cas_verify(ts_cas *cas, const char *hash);
/* Checks every object; problem (optional) is called for each problem found.
   Returns TS_OK when all is well, TS_E_CORRUPT if anything was found (orphan
   data alone is not a problem: GC reclaims it), or an I/O error. */
TASKSTORE_API ts_result ts_cas_verify_all(ts_cas *cas, ts_cas_problem_fn problem, void *user,
                                          ts_cas_verify_report *out);

typedef struct ts_cas_repair_report {
    uint64_t objects;           /* objects examined */
    uint64_t rewritten;         /* metadata rewritten with exact references */
    uint64_t rebuilt;           /* metadata recreated from verified data */
    uint64_t missing;           /* referenced hashes with no usable object */
    uint64_t corrupt;           /* objects whose data does not match (left alone) */
} ts_cas_repair_report;

/* Repair: recomputes refCount and references from what sessions hold.
   ts_cas_repair_begin, then ts_cas_repair_add for every reference the
   sessions hold, then ts_cas_repair_finish, which rewrites each metadata
   whose references differ as a set (a ref's added_at_ms of 0 keeps the
   recorded time), recreates missing metadata of referenced data that
   verifies, and removes leftover temporary files. Unparseable metadata of
   verified data is rebuilt. Not mixed with a GC cycle (TS_E_STATE). */
TASKSTORE_API ts_result ts_cas_repair_begin(ts_cas *cas);
TASKSTORE_API ts_result ts_cas_repair_add(ts_cas *cas, const char *hash, const ts_cas_ref *ref);
TASKSTORE_API ts_result ts_cas_repair_finish(ts_cas *cas, uint64_t now_ms,
                                             ts_cas_problem_fn problem, void *user,
                                             ts_cas_repair_report *out);

/* ======================================================================== */
/* >>api_sessions: chunked session storage (types; functions in >>api_store) */
/* ======================================================================== */

/* A session is one JSON object in the legacy ("Phase 3") shape: core fields
   (id, name, description, status, startTime, endTime, tags, category, ...)
   plus one array per STREAM (screenshots, audioSegments, videoChunks, and
   any stream registered with ts_store_add_stream) and one value per
   DOCUMENT (summary, audioInsights, canvasSpec, transcription). The store
   keeps it split (DESIGN.md section 5):

     sessions-chunked/{id}/metadata.json         core fields + bookkeeping
     sessions-chunked/{id}/{stream}/chunk-NNN.json   a JSON array of records
     sessions-chunked/{id}/{document}.json       the document's value

   Records and core fields are kept byte for byte (unknown fields survive);
   the library reads only id, startTime, attachmentHash and the indexed
   fields. metadata.json adds two keys the library owns:
     "storageVersion": 2,
     "chunked": {"streams": {"screenshots": {"count": N, "perChunk": 10,
                 "gen": 0}, ...}, "documents": ["summary", ...]}
   A caller's own values under those two names are dropped on save.

   THE APPEND RULE. The metadata count of a stream is authoritative. An
   append rewrites only the stream's last chunk (records 0..count-1 of it
   plus the new one) and then the metadata with count+1; the queue writes
   the chunk before the metadata. A crash between the two leaves a chunk
   holding more records than the metadata counts: readers ignore records
   beyond the count, and the next append overwrites them. So the metadata
   never counts a record that is not on disk, and a record never appears
   twice. Replacing a whole stream (or re-saving a session) writes the new
   chunks under a new generation (chunk-NNN.gG.json), switches the metadata
   to it, and only then removes the old generation's files. */

/* Session ids are 1..TS_SESSION_ID_MAX bytes of [A-Za-z0-9._-], not "." or
   ".."; stream names 1..TS_STREAM_NAME_MAX bytes of [A-Za-z0-9_-]. */
#define TS_SESSION_ID_MAX 128
#define TS_STREAM_NAME_MAX 63

/* What one ts_session_part describes. */
typedef enum ts_session_part_kind {
    TS_PART_METADATA = 0,  /* json: the metadata object (with bookkeeping) */
    TS_PART_CHUNK = 1,     /* json: a JSON array of the chunk's records */
    TS_PART_DOCUMENT = 2   /* json: the document's value */
} ts_session_part_kind;

/* One piece of a session handed to a progressive loader. Pointers are valid
   only during the callback. */
typedef struct ts_session_part {
    ts_session_part_kind kind;
    const char *name;      /* "metadata", the stream name or the document name */
    uint64_t chunk;        /* chunk number (TS_PART_CHUNK) */
    uint64_t first;        /* index in the stream of the chunk's first record */
    uint64_t count;        /* records in this chunk */
    uint64_t total;        /* records in the whole stream */
    const char *json;      /* the part's JSON text (not NUL-terminated) */
    size_t len;
} ts_session_part;

/* Progressive-load callback: return 0 to go on, non-zero to stop (the load
   then returns TS_E_CANCELLED). It must not call into the same store. */
typedef int (*ts_session_part_fn)(void *user, const ts_session_part *part);

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

/* ======================================================================== */
/* >>api_store: the store facade - sessions, attachments, search, tick      */
/* ======================================================================== */

/* Conventions of every ts_store / ts_session / ts_attach call below:
   - Ids are validated before they become paths: TS_E_INVALID otherwise.
   - Out-params are zeroed first; a ts_blob out is always safe to free.
   - MUTATING calls do no file I/O of their own: they update the in-memory
     state (cache, overlay of pending writes) and enqueue the writes; a read
     right after sees the change (read-your-writes). The writes reach disk in
     ts_store_tick / ts_store_idle / ts_store_flush / ts_store_close. Only a
     full queue may force a synchronous flush (or TS_E_BUSY, per option).
   - READS go overlay of pending writes -> LRU cache -> file vtable.
   - On a read-only store mutating calls return TS_E_READONLY.
   - Tick safety: none of these may be called from inside a callback the
     store is running (part callbacks, the logger, allocator hooks). */

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
    int no_index;               /* 1: keep no search index (ts_store_search: TS_E_STATE) */
    int migrate_on_load;        /* 1: ts_session_load of a session that exists only as a
                                   legacy sessions/{id}.json migrates it first (>>migrate) */
} ts_store_config;

/* A config with every default filled in (same as a zeroed one). */
TASKSTORE_API ts_store_config ts_store_config_default(void);

/* Opens (creating if needed) the store at root. With cfg->io set, root is
   only used in messages. Takes the single-owner lock: TS_E_LOCKED when
   another owner has it (unless read_only / read_only_if_locked).
   root (in), cfg (in, NULL = defaults), *out (out) the store or NULL.
   Returns TS_OK, TS_E_LOCKED, TS_E_IO, TS_E_NOMEM, TS_E_INVALID. Open
   reads only small files (the lock, the index); the session list and the
   index are rebuilt lazily when the last close was not clean. */
TASKSTORE_API ts_result ts_store_open(const char *root, const ts_store_config *cfg, ts_store **out);
/* Flushes everything queued, writes the derived files (session manifest,
   index), releases the lock and frees the store. Returns the flush result;
   the store is freed either way. NULL is fine. */
TASKSTORE_API ts_result ts_store_close(ts_store *s);
/* The store's last failure (code, message with the path, line). */
TASKSTORE_API ts_result ts_store_last_error(const ts_store *s, ts_error_info *out);
/* 1 when the store is read-only (asked for, or fell back because locked). */
TASKSTORE_API int ts_store_is_read_only(const ts_store *s);

/* Background work. tick: every frame (critical and due normal writes).
   idle: when the app is idle (low-priority writes, then idle jobs: GC
   slices of the attachment store, index persistence, cache pruning). Both
   stop when budget_us is spent. now_ms is the caller's clock. */
TASKSTORE_API ts_result ts_store_tick(ts_store *s, uint64_t now_ms, uint64_t budget_us);
TASKSTORE_API ts_result ts_store_idle(ts_store *s, uint64_t now_ms, uint64_t budget_us);
/* Returns when everything queued before the call is durable (the crash
   contract: after a crash every change acknowledged by a completed flush
   is present). Returns the first write failure, if any. */
TASKSTORE_API ts_result ts_store_flush(ts_store *s);

/* Registers a stream: records under key `name` of a session object are
   stored `records_per_chunk` per chunk file (0 = all in one chunk).
   Built in: screenshots 10, audioSegments 50, videoChunks 0. Re-registering
   a name changes the chunk size for sessions saved afterwards (existing
   sessions keep theirs: it is recorded in their metadata). At most 32
   streams. Returns TS_OK, TS_E_INVALID (bad name, a document's name),
   TS_E_RANGE (table full). */
TASKSTORE_API ts_result ts_store_add_stream(ts_store *s, const char *name,
                                            uint32_t records_per_chunk);

/* ---- statistics ---------------------------------------------------------- */

typedef struct ts_store_stats {
    uint64_t sessions;              /* sessions in the store */
    ts_lru_stats cache;             /* the read cache */
    struct {
        uint64_t pending;           /* writes/removes not yet done */
        uint64_t pending_bytes;
        uint64_t enqueued, completed, coalesced, failed, retried;
    } queue;
    struct {
        uint64_t objects;           /* distinct attachments */
        uint64_t logical_bytes;     /* sum over references of the original size */
        uint64_t stored_bytes;      /* bytes of the objects as stored */
        uint64_t dedup_saved_bytes; /* logical - stored, never negative */
    } attachments;
    struct {
        uint64_t sessions, terms, postings, memory_bytes, disk_bytes;
        int loaded;                 /* 0: no index (disabled or not built yet) */
    } index;
    ts_io_counters io;              /* the vtable's counters (zero if it has none) */
} ts_store_stats;

/* Fills *out. May read the session list (lazily built) to count sessions. */
TASKSTORE_API ts_result ts_store_stats_get(ts_store *s, ts_store_stats *out);

/* ---- sessions: metadata -------------------------------------------------- */

/* metadata.json of one session (the core fields verbatim plus
   "storageVersion" and "chunked" bookkeeping). TS_E_NOTFOUND if absent. */
TASKSTORE_API ts_result ts_session_load_meta(ts_store *s, const char *id, ts_blob *out);

/* Replaces the core fields of session id with the object json[len] (legacy
   shape without the arrays). Bookkeeping keys, document keys and array
   values under stream names in json are ignored: streams and documents are
   kept. Creates the session when it does not exist. An "id" member must
   equal id (it is added when missing). Returns TS_OK, TS_E_INVALID (not an
   object, bad id), TS_E_CORRUPT (stored metadata unreadable). */
TASKSTORE_API ts_result ts_session_save_meta(ts_store *s, const char *id,
                                             const char *json, size_t len);

/* Every session's metadata as one JSON array, newest startTime first
   (sessions without one last, then by id). Served from memory once built:
   the first call after open reads the manifest (or, after an unclean close,
   every metadata.json) and then stays current. */
TASKSTORE_API ts_result ts_session_list(ts_store *s, ts_blob *out);

/* Number of sessions (builds the list like ts_session_list). */
TASKSTORE_API ts_result ts_session_count(ts_store *s, uint64_t *out);

/* *out = 1 when the session exists in the chunked layout. */
TASKSTORE_API ts_result ts_session_exists(ts_store *s, const char *id, int *out);

/* *out = 1 when sessions-chunked/{id} holds it, 0 when only a legacy
   sessions/{id}.json exists; TS_E_NOTFOUND when neither does. */
TASKSTORE_API ts_result ts_session_is_chunked(ts_store *s, const char *id, int *out);

/* ---- sessions: streams ----------------------------------------------------- */

/* Records in stream `stream` of session id (0 when the session has no such
   stream). TS_E_NOTFOUND when the session does not exist. */
TASKSTORE_API ts_result ts_session_stream_count(ts_store *s, const char *id,
                                                const char *stream, uint64_t *count);

/* Chunk number `chunk` of a stream as a JSON array of its records (only the
   records the metadata counts). TS_E_NOTFOUND beyond the last chunk. */
TASKSTORE_API ts_result ts_session_load_chunk(ts_store *s, const char *id, const char *stream,
                                              uint64_t chunk, ts_blob *out);

/* Records [first, first+count) of a stream (clamped to the stream's end) as
   one JSON array. Reads only the chunks that hold them. */
TASKSTORE_API ts_result ts_session_load_range(ts_store *s, const char *id, const char *stream,
                                              uint64_t first, uint64_t count, ts_blob *out);

/* Appends one record (a JSON object, kept verbatim) to a stream. Rewrites
   at most the stream's last chunk and the metadata (see THE APPEND RULE);
   the stream is created if the session lacks it (chunk size from the stream
   table; a name not in the table gets 10 per chunk). The session must
   exist. *index_out (out, may be NULL) the record's index. */
TASKSTORE_API ts_result ts_session_append(ts_store *s, const char *id, const char *stream,
                                          const char *record, size_t len, uint64_t *index_out);

/* Replaces every record of a stream with the JSON array json[len] of
   objects. Attachment references of the stream are updated. */
TASKSTORE_API ts_result ts_session_replace_stream(ts_store *s, const char *id,
                                                  const char *stream,
                                                  const char *json, size_t len);

/* ---- sessions: documents ---------------------------------------------------- */

/* The value of document `doc` (summary, audioInsights, canvasSpec,
   transcription). TS_E_NOTFOUND when the session has none. */
TASKSTORE_API ts_result ts_session_load_doc(ts_store *s, const char *id, const char *doc,
                                            ts_blob *out);

/* Sets document `doc` to the JSON value json[len]; json NULL removes it. */
TASKSTORE_API ts_result ts_session_save_doc(ts_store *s, const char *id, const char *doc,
                                            const char *json, size_t len);

/* ---- sessions: whole ------------------------------------------------------------ */

/* Adds or replaces a whole session given as one JSON object in the legacy
   shape; its "id" member names it. Keys naming streams (with array values)
   become chunks, keys naming documents become document files, the rest is
   metadata. Records naming an attachmentHash add a reference to that
   attachment (if the attachment store has it); a replaced session's
   references are released. id_out (out, may be NULL, TS_SESSION_ID_MAX+1
   bytes) receives the id. */
TASKSTORE_API ts_result ts_session_save(ts_store *s, const char *json, size_t len,
                                        char *id_out);

/* The whole session as one JSON object in the legacy shape: core fields in
   their stored order, then each stream's array, then each document (the
   bookkeeping keys are left out), so save(load(x)) stores x again. */
TASKSTORE_API ts_result ts_session_load(ts_store *s, const char *id, ts_blob *out);

/* Progressive load: calls fn with the metadata, then each chunk of each
   stream in order, then each document. Returns TS_E_CANCELLED if fn
   stopped it. */
TASKSTORE_API ts_result ts_session_load_parts(ts_store *s, const char *id,
                                              ts_session_part_fn fn, void *user);

/* Deletes a session: its metadata first (it disappears at once), then its
   chunks and documents; releases its attachment references (objects
   reaching zero become candidates for GC after the grace period). */
TASKSTORE_API ts_result ts_session_delete(ts_store *s, const char *id);

/* ---- attachments ------------------------------------------------------------------ */

/* Appends a screenshot record and stores its image in one call: the bytes
   go to the attachment store (deduplicated by SHA-256), the record gains
   "attachmentHash", the session gains a reference. mime may be NULL.
   hash_out (out, may be NULL, 65 bytes) the hex hash; *index_out (may be
   NULL) the record's index. */
TASKSTORE_API ts_result ts_session_append_screenshot(ts_store *s, const char *id,
                                                     const char *record, size_t len,
                                                     const void *image, size_t image_len,
                                                     const char *mime, char *hash_out,
                                                     uint64_t *index_out);

/* The bytes of attachment `hash` (64 lowercase hex digits), decoded if they
   are stored compressed. TS_E_NOTFOUND when absent. */
TASKSTORE_API ts_result ts_attach_get(ts_store *s, const char *hash, ts_blob *out);

/* Runs garbage collection of the attachment store to the end (idle runs it
   in slices): unreferenced objects older than the grace period go.
   *removed (out, may be NULL) objects removed. */
TASKSTORE_API ts_result ts_store_gc(ts_store *s, uint64_t now_ms, uint64_t *removed);

/* ---- search ---------------------------------------------------------------------- */

/* Runs q (see ts_query in >>api_index) over every session. *out (out) must
   be freed with ts_index_hits_free(). Builds the index first if needed.
   TS_E_STATE when the store was opened with no_index. */
TASKSTORE_API ts_result ts_store_search(ts_store *s, const ts_query *q, ts_index_hits *out);

/* ======================================================================== */
/* >>api_compress: background compression of a store - old sessions'        */
/* chunk and document files (deflate or a plugged codec) and their          */
/* screenshots (PNG/JPEG -> WebP), in idle time, through the queue          */
/* ======================================================================== */

/* What gets compressed. A session is ELIGIBLE when its metadata has a
   numeric "endTime" (it has ended), it is not the active session
   (ts_compress_set_active), and endTime is at least age_ms before the
   store's clock. Its chunk and document files (metadata.json never) are
   rewritten as compressed twins (chunk-000.json -> chunk-000.json.z, see
   >>api_codecs for the frame and THE TWIN RULE), and the PNG/JPEG
   screenshots its records name are converted to WebP in the attachment
   store: data.webp replaces data.bin, metadata.json records
   "storedEncoding":"webp", "storedSize" and "storedHash", while the object
   keeps its name (the SHA-256 of the original bytes), so an identical PNG
   saved later still deduplicates. A file or image whose compressed form is
   not smaller stays as it is.

   How. Every write goes through the store's queue at low priority (written
   in idle time): the twin, then the removal of the plain file ordered after
   the twin is durable; data.webp, then metadata.json after it, then the
   removal of data.bin after that. A crash at any step leaves the old form,
   or the new one, or both with the same content: nothing is lost and every
   read returns the same bytes before, during and after.

   When. Mode AUTO (default): an idle job of the store plans a pass over the
   eligible sessions (oldest first) and works through it one unit at a time
   (a file, or one screenshot), starting a unit only when its estimated cost
   fits in what is left of the idle slice; a unit estimated to be bigger
   than a whole slice (a WebP encode of a large frame) runs anyway once the
   slice is fresh and is counted in stats.overruns when it overran, or is
   left to the caller's own worker thread (offload_images, see JOBS). Mode
   MANUAL: nothing happens in idle time; ts_compress_run and
   ts_compress_session do the work when called. Passes can be paused,
   resumed and cancelled; a progress callback reports counts and an ETA.

   Reading never needs any of this: the store reads twins transparently (a
   build without the codec a twin names reports TS_E_NOTIMPL for it), and a
   converted screenshot loads as its WebP bytes (ts_compress_attach_load
   gives the mime type).

   Calls follow the store's rules (one thread, not from inside callbacks)
   except ts_compress_job_run, which touches no store. */

typedef enum ts_compress_mode {
    TS_COMPRESS_AUTO = 0,       /* idle hook drives passes */
    TS_COMPRESS_MANUAL = 1      /* only explicit calls */
} ts_compress_mode;

#define TS_COMPRESS_DEFAULT_AGE_MS ((uint64_t)7 * 24 * 3600 * 1000)
#define TS_COMPRESS_DEFAULT_RESCAN_MS ((uint64_t)10 * 60 * 1000)

/* Progress of a pass (given to the callback after every unit). */
typedef enum ts_compress_state {
    TS_COMPRESS_IDLE = 0,       /* no pass */
    TS_COMPRESS_RUNNING = 1,
    TS_COMPRESS_PAUSED = 2,
    TS_COMPRESS_DONE = 3,       /* the pass just finished */
    TS_COMPRESS_CANCELLED = 4
} ts_compress_state;

typedef struct ts_compress_progress {
    ts_compress_state state;
    uint64_t sessions_done, sessions_total;
    uint64_t files_done;        /* files compressed in this pass */
    uint64_t images_done;       /* screenshots converted in this pass */
    uint64_t bytes_before, bytes_after; /* of what this pass compressed */
    uint64_t elapsed_us;        /* work time of this pass (clock_us_fn) */
    uint64_t eta_us;            /* estimated work time left, 0 when unknown */
} ts_compress_progress;

typedef void (*ts_compress_progress_fn)(void *user, const ts_compress_progress *p);

typedef struct ts_compress_config {
    int disabled;               /* 1: no compression at all */
    ts_compress_mode mode;      /* AUTO (0) or MANUAL */
    uint64_t age_ms;            /* 0: TS_COMPRESS_DEFAULT_AGE_MS (7 days) */
    const char *codec;          /* codec name for files (copied); NULL: "deflate" */
    int level;                  /* codec level; 0: the codec's default */
    int no_screenshots;         /* 1: leave attachments alone */
    ts_webp_options webp;       /* zero: lossless, verified */
    int keep_original;          /* keep data.bin until a later pass has read
                                   data.webp back and compared its pixels */
    int newest_first;           /* 0: oldest sessions first */
    int offload_images;         /* 1: idle never converts images; the caller
                                   takes them as jobs (ts_compress_job_take) */
    uint64_t rescan_ms;         /* AUTO: pause between passes; 0: 10 minutes */
    uint64_t (*clock_us_fn)(void *user); /* NULL: the monotonic clock */
    void *clock_user;
    ts_compress_progress_fn progress_fn; /* NULL: none */
    void *progress_user;
} ts_compress_config;

/* Figures of the files and images of one session, or of the whole store. */
typedef struct ts_compress_stats {
    uint64_t files;             /* chunk/document files looked at */
    uint64_t files_compressed;  /* stored as twins */
    uint64_t bytes_before;      /* original bytes of the compressed files */
    uint64_t bytes_after;       /* their stored bytes (frames) */
    uint64_t plain_bytes;       /* bytes of files still plain */
    uint64_t images;            /* screenshots looked at */
    uint64_t images_converted;  /* stored as WebP */
    uint64_t image_bytes_before, image_bytes_after; /* of the converted ones */
    uint64_t kept;              /* files/images whose compressed form was not smaller */
    double ratio;               /* (bytes_after + image_bytes_after) /
                                   (bytes_before + image_bytes_before); 0 if none */
    /* store-wide only: the background work since the store was opened */
    uint64_t sessions_compressed;
    uint64_t units;             /* units run (files, images, verifications) */
    uint64_t failed;            /* units that failed (damaged input ...) */
    uint64_t overruns;          /* units that took longer than their slice */
    uint64_t deferred;          /* slices where the next unit did not fit */
    uint64_t jobs_taken;        /* units handed out as jobs */
    uint64_t work_us;           /* time spent in units */
} ts_compress_stats;

/* The defaults a zero-filled config stands for. */
TASKSTORE_API ts_compress_config ts_compress_config_default(void);

/* Replaces the store's compression settings (cfg NULL = defaults). The
   codec must be known (built in, or added with ts_compress_add_codec):
   TS_E_NOTFOUND otherwise. A pass in progress goes on with the new
   settings. */
TASKSTORE_API ts_result ts_compress_configure(ts_store *s, const ts_compress_config *cfg);
TASKSTORE_API ts_result ts_compress_get_config(ts_store *s, ts_compress_config *out);

/* Adds a codec (see ts_codec_set_add) to the ones the store reads and may
   write with; reads of twins made with it need it registered. */
TASKSTORE_API ts_result ts_compress_add_codec(ts_store *s, const ts_codec *codec);

/* The session being recorded: never compressed, whatever its metadata says
   (id NULL clears it). */
TASKSTORE_API ts_result ts_compress_set_active(ts_store *s, const char *id);

/* Compresses every file and screenshot of session id now (age ignored),
   queued as the background work would be. TS_E_STATE: the session has not
   ended or is the active one; TS_E_NOTFOUND; TS_E_NOTIMPL when this build
   has no codec for files (and no image conversion). out (may be NULL) gets
   the session's figures afterwards. */
TASKSTORE_API ts_result ts_compress_session(ts_store *s, const char *id, ts_compress_stats *out);

/* *out = 1 when nothing of session id is left to compress: every chunk and
   document is a twin or was found not to shrink, and (when screenshots are
   converted) every PNG/JPEG screenshot is WebP or was found not to shrink. */
TASKSTORE_API ts_result ts_compress_is_session_compressed(ts_store *s, const char *id, int *out);

/* The figures of one session (reads its metadata, checks its files and its
   screenshots' metadata). */
TASKSTORE_API ts_result ts_compress_session_stats(ts_store *s, const char *id, ts_compress_stats *out);

/* Store-wide figures. rescan 0: the counters of the work done since open
   plus the last rescan's totals (no I/O); 1: walks every session first
   (reads each metadata and checks its files: for `tsk stats`). */
TASKSTORE_API ts_result ts_compress_stats_get(ts_store *s, int rescan, ts_compress_stats *out);

/* Runs compression now, in either mode: starts a pass if none is under way
   and works through it until it ends or budget_us (0: no limit) is spent.
   Returns TS_DONE when the pass has finished (nothing left), TS_OK when
   work remains, TS_E_CANCELLED if cancelled meanwhile, or an error. */
TASKSTORE_API ts_result ts_compress_run(ts_store *s, uint64_t now_ms, uint64_t budget_us);

/* Pause: no unit starts until resume (the idle job does nothing). Cancel:
   drops the pass under way (AUTO starts a new one after rescan_ms). */
TASKSTORE_API void ts_compress_pause(ts_store *s);
TASKSTORE_API void ts_compress_resume(ts_store *s);
TASKSTORE_API void ts_compress_cancel(ts_store *s);
TASKSTORE_API ts_result ts_compress_progress_get(ts_store *s, ts_compress_progress *out);

/* ---- JOBS: the image conversion on the caller's own thread --------------
   take   (store thread) picks the next screenshot of the pass that needs
          converting, reads and copies its bytes: TS_OK and *job, or
          TS_DONE when there is none (for now);
   run    (any thread) the pure conversion, bytes in, bytes out; may be
          called on a worker while the store goes on being used;
   commit (store thread) checks that the object is unchanged and queues
          the writes (or keeps the original when not smaller); frees the job.
   A job holds a copy of the store's allocator, which must then be
   thread-safe. ts_compress_job_free drops a job without committing. */
typedef struct ts_compress_job ts_compress_job;

TASKSTORE_API ts_result ts_compress_job_take(ts_store *s, uint64_t now_ms, ts_compress_job **job);
TASKSTORE_API ts_result ts_compress_job_run(ts_compress_job *job);
TASKSTORE_API ts_result ts_compress_job_commit(ts_store *s, ts_compress_job *job);
TASKSTORE_API void ts_compress_job_free(ts_compress_job *job);

/* The bytes of attachment hash as stored, with their mime type: the
   original's ("image/png") or, once converted, "image/webp". mime_out
   (may be NULL) has room for 128 bytes. */
TASKSTORE_API ts_result ts_compress_attach_load(ts_store *s, const char *hash, ts_blob *out,
                                                char *mime_out);

/* ======================================================================== */
/* >>api_migrate: legacy (Phase 3) stores -> the chunked layout             */
/* ======================================================================== */

/* The migrator moves a legacy store (DESIGN.md section 5) to the new layout
   with zero data loss:

     sessions/{id}.json            one JSON object per session (the source)
     attachments/{aid}.json        {id,type,name,mimeType,size,base64,createdAt},
                                   named by screenshot records' "attachmentId"

   STEPS (each runnable alone; all together they run in this order, and
   chunked+ca together move each session in ONE pass):
     chunked   every legacy session becomes a chunked session (ts_session_save);
     ca        every referenced legacy attachment is base64-decoded, stored by
               SHA-256 (ts_cas_import_base64) with the session's references,
               and its screenshot records gain "attachmentHash" (they keep
               "attachmentId"); alone, it works on chunked sessions whose
               records still lack the hash;
     index     the search index is rebuilt from every session and verified;
     compress  optional: sessions older than an age threshold are handed to a
               compression callback (the codecs' job; see compress_fn).

   PER SESSION, IN THIS ORDER (the crash-safety rule):
     1. read + validate the legacy file (bad JSON, wrong types, bad base64,
        a missing attachment: a per-session failure with a clear message);
     2. backup sessions/{id}.backup-{ms}, durable (unless no_backup; an
        existing unexpired backup of the same bytes is reused);
     3. attachments imported, the chunked session saved, ts_store_flush;
     4. verification: the chunked session read back from disk equals the
        legacy object field by field (the only addition: attachmentHash),
        and every attachment's bytes hash to its name;
     5. only then sessions/{id}.json is removed (and the directory synced).
   A mismatch in 4 deletes the chunked copy, keeps the legacy file and
   reports the first differing path ("audioSegments[2].transcription").
   The legacy file is the truth until step 5: a crash anywhere leaves it in
   place (maybe beside partial chunked data, which a re-run overwrites) or
   leaves the fully verified migration. STATUS follows the same rule: a
   session is "legacy" while sessions/{id}.json exists, "chunked" otherwise.

   BACKUPS. sessions/{id}.backup-{ms} is one JSON object
     {"originalFormat":"taskstore-phase3-monolithic","sessionId","originalPath",
      "backupCreatedAt","expiresAt","originalSize","originalSha256","session":...}
   whose "session" member is the original file's exact bytes, written last,
   so a rollback restores it byte for byte (checked against originalSha256).
   Retention: 30 days by default; ts_migrate_cleanup removes expired ones.
   Legacy attachment files are never removed by migration: rollback needs
   them, and their name/type/createdAt have no home in the new layout. Only
   ts_migrate_cleanup with TS_MIGRATE_CLEAN_ATTACHMENTS removes one, and only
   when no legacy session or remaining backup names it and its bytes are
   verified in the CA store.

   Times are the caller's (options.now_ms, else the store's clock). A
   migration does file I/O on the caller's thread (it is an explicit, long
   call); the background migrator spreads it over ts_store_idle. None of
   these functions may be called from inside a store callback. */

#define TS_MIGRATE_DEFAULT_RETENTION_MS ((uint64_t)30 * 24 * 3600 * 1000)
#define TS_MIGRATE_DEFAULT_BATCH 20u
#define TS_MIGRATE_BACKUP_FORMAT "taskstore-phase3-monolithic"

/* Steps (bits of ts_migrate_options.steps). */
enum {
    TS_MIGRATE_STEP_CHUNKED  = 1 << 0,
    TS_MIGRATE_STEP_CA       = 1 << 1,
    TS_MIGRATE_STEP_INDEX    = 1 << 2,
    TS_MIGRATE_STEP_COMPRESS = 1 << 3,
    TS_MIGRATE_STEPS_DEFAULT = (1 << 0) | (1 << 1) | (1 << 2)
};

/* What happened to one session (or, for rollback points, one file). */
typedef enum ts_migrate_outcome {
    TS_MIGRATE_MIGRATED = 0,   /* migrated / rolled back (dry run: would be) */
    TS_MIGRATE_SKIPPED  = 1,   /* nothing to do (already in the new layout) */
    TS_MIGRATE_FAILED   = 2    /* see code and reason; the legacy data is untouched */
} ts_migrate_outcome;

typedef struct ts_migrate_item {
    const char *id;            /* session id (a file path for rollback-point checks) */
    ts_migrate_outcome outcome;
    ts_result code;            /* TS_OK, or why it failed */
    const char *reason;        /* "" unless failed: one line, with the path */
    uint64_t records;          /* records in the session's streams */
    uint64_t attachments;      /* attachment references resolved */
} ts_migrate_item;

/* The result of a run: counts, figures and one item per session looked at.
   Zero it (or let the call do it) and free it with ts_migrate_report_free. */
typedef struct ts_migrate_report {
    int dry_run;
    unsigned steps;                    /* the steps that ran */
    uint64_t candidates;               /* sessions looked at */
    uint64_t migrated, skipped, failed;
    uint64_t legacy_bytes;             /* legacy session + attachment bytes read */
    uint64_t attachments_imported;     /* distinct legacy attachments stored */
    uint64_t attachments_deduplicated; /* ... whose content the CA store already had */
    uint64_t attachment_bytes;         /* decoded bytes of those */
    uint64_t backups_written, backups_reused;
    int index_built;                   /* 1: index rebuilt and verified */
    uint64_t index_sessions;
    ts_result index_result;
    uint64_t compressed;               /* sessions handed to compress_fn */
    ts_result compress_result;         /* TS_E_NOTIMPL: step asked without compress_fn */
    size_t item_count;
    ts_migrate_item *items;
    /* private */
    ts_allocator alloc_;
    size_t items_cap_;
} ts_migrate_report;

/* Progress of a run, given to the progress callback after every session
   and at step boundaries. Strings are valid during the call only. */
typedef struct ts_migrate_progress {
    const char *step;          /* "chunked", "ca", "index", "compress", "done" */
    const char *session_id;    /* the session just handled, or NULL */
    ts_migrate_outcome outcome;
    ts_result code;
    const char *reason;        /* "" unless failed */
    uint64_t done, total;      /* sessions handled / to handle (this run, or since
                                  a background migration began, across restarts) */
    uint64_t migrated, skipped, failed;
    uint64_t bytes;            /* legacy bytes read so far */
    double percent;            /* 100 * done / total (100 when total is 0) */
    int64_t elapsed_ms;
    int64_t eta_ms;            /* estimated time left; -1 when unknown */
    int paused, finished;
} ts_migrate_progress;

/* Return non-zero to cancel the run (it stops after the current session,
   which is either fully migrated or untouched). Must not call into the store. */
typedef int (*ts_migrate_progress_fn)(void *user, const ts_migrate_progress *p);

/* Compression step hook: compress session id's files as the codecs see fit.
   Returns TS_OK, or an error (reported, the session stays as it is). */
typedef ts_result (*ts_migrate_compress_fn)(void *user, ts_store *s, const char *id);

typedef struct ts_migrate_options {
    unsigned steps;                 /* TS_MIGRATE_STEP_* bits; 0: TS_MIGRATE_STEPS_DEFAULT */
    int dry_run;                    /* validate and report; write nothing at all */
    int no_backup;                  /* skip sessions/{id}.backup-{ms} (not advised) */
    uint64_t now_ms;                /* 0: the store's clock */
    uint64_t backup_retention_ms;   /* 0: TS_MIGRATE_DEFAULT_RETENTION_MS */
    const char *const *ids;         /* only these sessions (NULL: all) */
    size_t id_count;
    uint64_t flush_bytes;           /* flush after this many attachment bytes are
                                       queued, bounding memory; 0: 8 MiB */
    ts_migrate_progress_fn progress;
    void *progress_user;
    /* Monotonic milliseconds for elapsed time and ETA of a synchronous run;
       NULL: the library's monotonic clock where it has one. */
    uint64_t (*clock_ms_fn)(void *user);
    void *clock_user;
    /* compress step */
    uint64_t compress_age_ms;       /* sessions whose startTime is older than this */
    ts_migrate_compress_fn compress_fn;
    void *compress_user;
    /* background migrator */
    uint32_t batch_size;            /* sessions per idle call; 0: TS_MIGRATE_DEFAULT_BATCH */
    int retry_failed;               /* resume: retry sessions a previous run failed */
} ts_migrate_options;

/* The defaults a zero-filled options struct means. */
TASKSTORE_API ts_migrate_options ts_migrate_options_default(void);

/* Runs the selected steps over the store. opts (in, NULL: defaults);
   report (out, may be NULL; zeroed first, free with ts_migrate_report_free).
   Errors of one session never stop the run: they are items with outcome
   FAILED. Returns TS_OK when the run finished (even with failed sessions;
   check report->failed), TS_E_CANCELLED if the progress callback stopped
   it, TS_E_READONLY, or a store-level error (the disk refuses every write:
   the run stops, sessions done so far stay done). */
TASKSTORE_API ts_result ts_migrate_run(ts_store *s, const ts_migrate_options *opts,
                                       ts_migrate_report *report);

/* Migrates one session (legacy -> chunked, with the ca step unless opts say
   otherwise). Returns TS_OK when migrated, TS_DONE when there was nothing to
   do (already chunked), TS_E_NOTFOUND when neither form exists, or the
   failure (message in ts_store_last_error). report may be NULL. */
TASKSTORE_API ts_result ts_migrate_session(ts_store *s, const char *id,
                                           const ts_migrate_options *opts,
                                           ts_migrate_report *report);

/* On-demand migration: loads session id like ts_session_load, migrating it
   first when it exists only in legacy form (default options). A session that
   fails to migrate returns the failure and stays legacy. */
TASKSTORE_API ts_result ts_migrate_load(ts_store *s, const char *id, struct ts_blob *out);

/* Frees a report's items; the struct is zeroed. NULL is fine. */
TASKSTORE_API void ts_migrate_report_free(ts_migrate_report *report);

/* The report as the JSON tsk prints with --json:
   {"migrated":N,"skipped":N,"failed":[{"id","reason"}],"dryRun":b,
    "steps":[...],"candidates":N,"attachments":{"imported","deduplicated",
    "bytes"},"backups":{"written","reused"},"index":{"built","sessions"},
    "sessions":[{"id","outcome"}]}  (dry run: counts are "would be"). */
TASKSTORE_API ts_result ts_migrate_report_json(const ts_migrate_report *report, struct ts_blob *out);

/* ---- status ------------------------------------------------------------- */

typedef struct ts_migrate_status {
    uint64_t total;            /* distinct sessions in either form */
    uint64_t chunked;          /* only in the new layout */
    uint64_t legacy;           /* sessions/{id}.json still there */
    double percentage;         /* 100 * chunked / total (100 when total is 0) */
    uint64_t backups;          /* sessions/{id}.backup-{ms} files */
    uint64_t legacy_attachments;   /* attachments/{aid}.json files */
    int background;            /* a background migration is recorded as in progress */
} ts_migrate_status;

/* Fills *out (zeroed first). Lists sessions/ and the session directory;
   reads nothing else. */
TASKSTORE_API ts_result ts_migrate_status_get(ts_store *s, ts_migrate_status *out);
/* {"total","chunked","legacy","percentage","backups","legacyAttachments","background"} */
TASKSTORE_API ts_result ts_migrate_status_json(const ts_migrate_status *st, struct ts_blob *out);

/* ---- backups and rollback ------------------------------------------------ */

/* Flags of the rollback and cleanup calls. */
enum {
    /* rollback even when the chunked session changed since its migration
       (the changes are lost), or a different legacy file is in the way */
    TS_MIGRATE_FORCE = 1 << 0,
    /* cleanup: also remove legacy attachment files nothing needs any more */
    TS_MIGRATE_CLEAN_ATTACHMENTS = 1 << 1
};

/* Rolls session id back: restores sessions/{id}.json from backup (the
   name "{id}.backup-{ms}" inside sessions/, or NULL for the newest) byte for
   byte (checksum verified), then deletes the chunked session and releases its
   attachment references. Refuses with TS_E_STATE when the chunked session
   differs from the backup (beyond attachmentHash), unless TS_MIGRATE_FORCE.
   Returns TS_OK, TS_E_NOTFOUND (no backup), TS_E_CORRUPT (bad backup). */
TASKSTORE_API ts_result ts_migrate_rollback(ts_store *s, const char *id, const char *backup,
                                            unsigned flags);

/* Rolls back every session that has a backup and no legacy file. report
   (out, may be NULL): one item per session. Returns TS_OK (check
   report->failed) or a store-level error. */
TASKSTORE_API ts_result ts_migrate_rollback_all(ts_store *s, unsigned flags,
                                                ts_migrate_report *report);

typedef struct ts_migrate_cleanup_report {
    uint64_t backups_seen, backups_removed, backups_kept;
    uint64_t attachments_removed;
    uint64_t bytes_freed;
} ts_migrate_cleanup_report;

/* Removes backups whose expiresAt <= now_ms (0: the store's clock), and with
   TS_MIGRATE_CLEAN_ATTACHMENTS the legacy attachment files that no legacy
   session and no remaining backup names and whose bytes the CA store holds
   (verified). out (may be NULL). */
TASKSTORE_API ts_result ts_migrate_cleanup(ts_store *s, uint64_t now_ms, unsigned flags,
                                           ts_migrate_cleanup_report *out);

/* ---- rollback points ------------------------------------------------------
   A rollback point records, for the whole store, every legacy session and
   attachment file with its size and SHA-256 (migration/points/{ms}.json, with
   a checksum of its own). Restoring it brings every session that was legacy
   at that moment back to its legacy file (from the backups, byte for byte,
   checked against the recorded checksum) and checks every covered attachment
   file. Sessions created later are left alone. */

/* Creates a point; name_out (out, may be NULL, 32 bytes) its name. */
TASKSTORE_API ts_result ts_migrate_point_create(ts_store *s, uint64_t now_ms, char *name_out);

/* Calls fn with each point's name, oldest first. */
TASKSTORE_API ts_result ts_migrate_point_list(ts_store *s,
                                              int (*fn)(void *user, const char *name),
                                              void *user);

/* Integrity check of a point: its own checksum, and that every covered file
   is present with its checksum or recoverable from a backup with that
   checksum. report (out, may be NULL): a FAILED item per problem (id = the
   path). TS_OK when restorable, TS_E_CORRUPT otherwise. */
TASKSTORE_API ts_result ts_migrate_point_verify(ts_store *s, const char *name,
                                                ts_migrate_report *report);

/* Restores a point (see above); flags as ts_migrate_rollback. */
TASKSTORE_API ts_result ts_migrate_point_restore(ts_store *s, const char *name, unsigned flags,
                                                 ts_migrate_report *report);

/* ---- verification of migrated data ---------------------------------------- */

/* Checks what migration produced: every session with a backup against it
   (field by field, attachmentHash aside), every attachmentHash named by a
   screenshot record against the CA store (present, bytes hash to the name),
   the CA objects' reference counts, and the index. With repair != 0 the
   reference counts and the index are rebuilt. report (out, may be NULL):
   a FAILED item per problem. TS_OK when clean (or repaired), TS_E_CORRUPT
   otherwise. */
TASKSTORE_API ts_result ts_migrate_verify(ts_store *s, int repair, ts_migrate_report *report);

/* ---- background migration --------------------------------------------------
   ts_migrator_start registers an idle job on the store: every ts_store_idle
   migrates one batch (batch_size sessions, fewer when the idle budget runs
   out, at least one) and reports progress (percentage, ETA from the idle
   calls' now_ms). Progress is persisted in migration/progress.json after
   every batch, so a migration interrupted by a crash, a close or a restart
   resumes where it was with ts_migrator_start (same totals, the failures
   remembered); no session is migrated twice or half (see the per-session
   order above). Pause keeps the job registered but idle; cancel ends it and
   forgets the persisted progress (sessions already migrated stay migrated).
   A background run always includes the chunked and ca steps (index and
   compress run once, at the end, when selected). The migrator must be
   destroyed before the store is closed. */
typedef struct ts_migrator ts_migrator;

TASKSTORE_API ts_result ts_migrator_start(ts_store *s, const ts_migrate_options *opts,
                                          ts_migrator **out);
/* One batch now (the idle job calls this). TS_OK: more to do; TS_DONE:
   finished (or paused); TS_E_CANCELLED after cancel; other: store-level error. */
TASKSTORE_API ts_result ts_migrator_step(ts_migrator *m, uint64_t now_ms, uint64_t budget_us);
TASKSTORE_API ts_result ts_migrator_pause(ts_migrator *m);
TASKSTORE_API ts_result ts_migrator_resume(ts_migrator *m);
TASKSTORE_API ts_result ts_migrator_cancel(ts_migrator *m);
/* Current progress (out). */
TASKSTORE_API ts_result ts_migrator_progress(const ts_migrator *m, ts_migrate_progress *out);
/* What this migrator did so far (valid until ts_migrator_destroy). */
TASKSTORE_API const ts_migrate_report *ts_migrator_report(const ts_migrator *m);
/* Unregisters the job and frees the migrator; persisted progress stays (a
   later ts_migrator_start resumes it). NULL is fine. */
TASKSTORE_API void ts_migrator_destroy(ts_migrator *m);

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
                /* While a container is open its next field is unused (nothing
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
/* >>lru: the cache. One block per entry (cold fields, header, key, copied  */
/* value), recycled from the evicted tail when a new entry fits in it; an   */
/* open-addressing table of {hash, entry*}; intrusive circular lists for    */
/* recency and expiry; group records holding their members' slots for the   */
/* invalidation index.                                                      */
/* ======================================================================== */

/* Layout. Every entry sits in:
     - the entry table (slots hold the hash so probes rarely touch entries);
     - the recency list (head = most recently used, eviction from the tail);
     - if its key has a ':', a member slot of its group "kind:session",
       and each group in the list of its session's groups: invalidating one
       stream or one session walks only what it removes;
     - if it can expire, one of two expiry lists. List A holds entries with
       the cache's default TTL in expiry order (appending keeps it sorted as
       long as the caller's clock does not step back; an entry that would
       break the order goes to B instead), list B everything else, so prune
       pops A's expired front and scans only B.
   Groups and sessions are the same record type (ts__lru_set), kept alive
   by a count of members plus temporary pins held by invalidation walks and
   by a put that is adding a member.

   An entry's block is [ts__lru_cold][ts__lru_entry][key][pad to 8][value].
   An entry is addressed by its ts__lru_entry, and everything a get hit
   reads or writes (recency link, times, cost, length, flags, key, value)
   is contiguous from there; the fields only put, removal and invalidation
   use sit in front of it. For a 22-byte key and a 16-byte value a hit
   touches 88 bytes of its entry: two cache lines, or three when they start
   late in a line (the plain LRU in bench/bench_lru.c fits in one; that
   line, and 16-byte table slots against 8, are most of what a hit costs
   over it when the cache outgrows the CPU caches).

   Memory. A put of a new key into a full cache evicts before it inserts
   and, when the least-recently-used entry's block has the size it needs
   (within TS__LRU_FITS's slack), reuses that block: a cache at its budget
   with entries of similar sizes (the common case: same-shaped keys and
   values) allocates nothing in steady state. Every block still comes from
   and goes back to the cache's allocator with its exact size, once. */

typedef struct ts__lru_link {
    struct ts__lru_link *prev, *next;
} ts__lru_link;

/* A group's members live in an array of slots, each holding an entry
   pointer or, when free, a hole on the group's free list ((next + 1) << 1
   | 1: the low bit tells them apart, entries being 8-aligned). Each entry
   records its slot, so adding and removing a member touch the group
   record and nothing else (a list through the entries would write to a
   neighbouring entry, a cache miss each, on every insert and eviction).
   The first TS__LRU_SET_INLINE slots sit in the record itself, after the
   name; bigger groups move them to one allocation that doubles. */
#define TS__LRU_SET_INLINE 8u

/* Records of groups and sessions that lost their last member are kept for
   reuse, at most this many and only small ones: when the cached keys'
   sessions come and go (a small cache, keys spread over many sessions), a
   put would otherwise allocate a group and a session and the eviction
   free two. Bulk removals (invalidation, prune, clear, a smaller budget)
   release them. */
#define TS__LRU_SPARE 16u
#define TS__LRU_SPARE_MAX 512u

typedef struct ts__lru_set ts__lru_set;
struct ts__lru_set {
    uint64_t hash;
    size_t bsize;        /* bytes of the record, as allocated */
    size_t refs;         /* members + pins; retired when it drops to 0 */
    uintptr_t *mem;      /* a group's member slots (in the record or allocated) */
    uint32_t klen;       /* name bytes follow the struct */
    uint32_t mcap;       /* slots at mem: 0 for a session */
    uint32_t mlen;       /* slots ever used, members and holes */
    uint32_t mfree;      /* first hole + 1; 0 = none */
    ts__lru_set *parent; /* a group's session; NULL for a session */
    ts__lru_link sib;    /* a group's link in its session's kids */
    ts__lru_link kids;   /* a session's groups */
};

#define TS__LRU_REF 1u   /* value is a ts__lru_ref, not inline bytes */

/* In front of every entry: what put, removal and invalidation use. */
typedef struct ts__lru_cold {
    uint64_t hash;
    ts__lru_set *group;  /* NULL for keys without ':' */
    ts__lru_link exp;    /* in an expiry list; next == NULL when none */
    size_t bsize;        /* bytes of the whole block, as allocated */
    uint32_t gslot;      /* its slot in group->mem */
    uint32_t pad_;
} ts__lru_cold;

/* What a get hit reads or writes; the key follows. */
typedef struct ts__lru_entry {
    ts__lru_link lru;
    uint64_t expires;    /* UINT64_MAX = never */
    uint64_t touched;    /* last put or get hit, for oldest_age_ms */
    size_t cost;         /* copied length, or the caller's cost for a ref */
    uint32_t klen;       /* key bytes follow the struct */
    uint32_t flags;
} ts__lru_entry;

/* The entry, its key and an inline value stay 8-aligned. */
TS__STATIC_ASSERT(lru_cold_align, sizeof(ts__lru_cold) % 8 == 0);

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
    ts__lru_set *last_group;   /* the group the last put used (NULL: none) */
    ts__lru_set *spare[TS__LRU_SPARE]; /* retired records, for new groups/sessions */
    uint32_t nspare;
    uint64_t max_bytes, bytes, default_ttl;
    uint64_t hits, misses, evictions, expirations;
    uint64_t recycled;         /* puts that reused an evicted entry's block (tests) */
};

/* The few helpers of the get path are forced inline: a get is a handful
   of loads, and three calls' worth of prologues showed up as a fifth of it. */
#if defined(__GNUC__) || defined(__clang__)
#  define TS__LRU_HOT static __inline__ __attribute__((always_inline, unused))
#  define TS__LRU_PREFETCH(p) __builtin_prefetch(p)
#else
#  define TS__LRU_HOT static
#  define TS__LRU_PREFETCH(p) ((void)(p))
#endif

#define TS__LRU_MAX_BUDGET (UINT64_MAX / 2) /* so bytes + one charge never wraps */
#define TS__LRU_MIN_CAP 16u

/* A block of bsize bytes may hold an entry needing need bytes: at least
   that, and at most an eighth (plus 64 bytes) more, so recycling never
   keeps much memory the budget does not see. */
#define TS__LRU_FITS(bsize, need) \
    ((bsize) >= (need) && (bsize) - (need) <= (need) / 8 + 64)

/* Expired at now: now reached put time + TTL; UINT64_MAX never expires,
   even at now == UINT64_MAX. */
#define TS__LRU_EXPIRED(e, now) ((e)->expires <= (now) && (e)->expires != UINT64_MAX)

/* From a recency link to its entry; from an entry to its cold fields and
   back; from a cold link (exp) to its entry; a group from its sib. */
#define TS__LRU_ENTRY_OF(link) \
    ((ts__lru_entry *)(void *)((char *)(link) - offsetof(ts__lru_entry, lru)))
#define TS__LRU_CENTRY_OF(link) \
    ((const ts__lru_entry *)(const void *)((const char *)(link) - offsetof(ts__lru_entry, lru)))
#define TS__LRU_COLD(e) ((ts__lru_cold *)(void *)(e) - 1)
#define TS__LRU_CCOLD(e) ((const ts__lru_cold *)(const void *)(e) - 1)
#define TS__LRU_ENTRY_OF_COLD(link, member) \
    ((ts__lru_entry *)(void *)((ts__lru_cold *)(void *)((char *)(link) - \
                                                       offsetof(ts__lru_cold, member)) + 1))
#define TS__LRU_CENTRY_OF_COLD(link, member)                                          \
    ((const ts__lru_entry *)(const void *)((const ts__lru_cold *)(const void *)(     \
                                               (const char *)(link) -                 \
                                               offsetof(ts__lru_cold, member)) + 1))
#define TS__LRU_SET_OF(link) \
    ((ts__lru_set *)(void *)((char *)(link) - offsetof(ts__lru_set, sib)))
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

/* Offset of the value area from the entry: after the key, 8-aligned. The
   checked form is for a put sizing a new entry (0 on overflow); an
   existing entry's key length was checked then, so the get path uses the
   plain one. */
TS__PRIVATE size_t ts__lru_value_off_checked(size_t klen)
{
    size_t n;
    if (!ts__size_add(sizeof(ts__lru_entry), klen, &n) || !ts__size_add(n, 7, &n)) return 0;
    return n & ~(size_t)7;
}
#define TS__LRU_VALUE_OFF(klen) ((sizeof(ts__lru_entry) + (size_t)(klen) + 7) & ~(size_t)7)

/* Bytes an entry needs: its cold fields, header, key and value. */
TS__PRIVATE size_t ts__lru_need(const ts__lru_entry *e)
{
    return sizeof(ts__lru_cold) + TS__LRU_VALUE_OFF(e->klen) +
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

/* Key equality for the probe that found a matching hash: short keys
   (every key the store makes) are compared with overlapping 8-byte loads
   instead of a call. */
TS__LRU_HOT int ts__lru_key_eq(const char *a, const char *b, size_t n)
{
    uint64_t x, y, u, v;
    if (n >= 8 && n <= 16) {
        memcpy(&x, a, 8); memcpy(&y, b, 8);
        memcpy(&u, a + n - 8, 8); memcpy(&v, b + n - 8, 8);
        return ((x ^ y) | (u ^ v)) == 0;
    }
    if (n > 16 && n <= 32) {
        uint64_t x2, y2, u2, v2;
        memcpy(&x, a, 8); memcpy(&y, b, 8);
        memcpy(&x2, a + 8, 8); memcpy(&y2, b + 8, 8);
        memcpy(&u2, a + n - 16, 8); memcpy(&v2, b + n - 16, 8);
        memcpy(&u, a + n - 8, 8); memcpy(&v, b + n - 8, 8);
        return ((x ^ y) | (x2 ^ y2) | (u2 ^ v2) | (u ^ v)) == 0;
    }
    return memcmp(a, b, n) == 0;
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
        if (slots[i].hash == h && e->klen == n && ts__lru_key_eq(ts__lru_key(e), key, n)) {
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
        if (t->slots[i].hash == h && s->klen == n && ts__lru_key_eq((const char *)(s + 1), name, n))
            return s;
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

/* Bytes of a record: the struct, the name, and for a group its inline
   member slots (8-aligned after the name). */
TS__PRIVATE size_t ts__lru_set_size(size_t n, int group)
{
    size_t sz = sizeof(ts__lru_set) + n;
    if (group) sz = ((sz + 7) & ~(size_t)7) + TS__LRU_SET_INLINE * sizeof(uintptr_t);
    return sz;
}

TS__PRIVATE ts__lru_set *ts__lru_set_new(ts_lru *lru, const char *name, size_t n, uint64_t h,
                                         int group)
{
    size_t sz = ts__lru_set_size(n, group), bsize = sz;
    ts__lru_set *s = NULL;
    uint32_t i;
    for (i = 0; i < lru->nspare; i++) {
        if (TS__LRU_FITS(lru->spare[i]->bsize, sz)) {
            s = lru->spare[i];
            bsize = s->bsize;
            lru->spare[i] = lru->spare[--lru->nspare];
            break;
        }
    }
    if (!s) s = (ts__lru_set *)ts__alloc(&lru->env.alloc, sz);
    if (!s) return NULL;
    memset(s, 0, sizeof *s);
    s->bsize = bsize;
    ts__lru_list_init(&s->kids);
    s->hash = h;
    s->klen = (uint32_t)n;
    if (n) memcpy(s + 1, name, n);
    if (group) {
        s->mem = (uintptr_t *)(void *)((char *)s + sz - TS__LRU_SET_INLINE * sizeof(uintptr_t));
        s->mcap = TS__LRU_SET_INLINE;
    }
    return s;
}

/* Frees a record (and a group's allocated member slots). */
TS__PRIVATE void ts__lru_set_free(ts_lru *lru, ts__lru_set *s)
{
    if (!s) return;
    if (s->mcap > TS__LRU_SET_INLINE)
        ts__free(&lru->env.alloc, s->mem, (size_t)s->mcap * sizeof(uintptr_t));
    ts__free(&lru->env.alloc, s, s->bsize);
}

/* A record out of use: kept for reuse while there is room, else freed. */
TS__PRIVATE void ts__lru_set_retire(ts_lru *lru, ts__lru_set *s)
{
    if (s->mcap > TS__LRU_SET_INLINE) {
        ts__free(&lru->env.alloc, s->mem, (size_t)s->mcap * sizeof(uintptr_t));
        s->mcap = 0;
    }
    if (lru->nspare < TS__LRU_SPARE && s->bsize <= TS__LRU_SPARE_MAX) lru->spare[lru->nspare++] = s;
    else ts__free(&lru->env.alloc, s, s->bsize);
}

TS__PRIVATE void ts__lru_spare_free(ts_lru *lru)
{
    while (lru->nspare) {
        ts__lru_set *s = lru->spare[--lru->nspare];
        ts__free(&lru->env.alloc, s, s->bsize);
    }
}

/* Room for one more member in group g: a hole, an unused slot, or a
   doubled allocation. TS_E_NOMEM leaves g as it was. */
TS__PRIVATE ts_result ts__lru_member_reserve(ts_lru *lru, ts__lru_set *g)
{
    uintptr_t *nm;
    if (g->mfree || g->mlen < g->mcap) return TS_OK;
    if (g->mcap > UINT32_MAX / 4) return TS_E_NOMEM;
    nm = (uintptr_t *)ts__alloc(&lru->env.alloc, (size_t)g->mcap * 2 * sizeof(uintptr_t));
    if (!nm) return TS_E_NOMEM;
    memcpy(nm, g->mem, (size_t)g->mlen * sizeof(uintptr_t));
    if (g->mcap > TS__LRU_SET_INLINE)
        ts__free(&lru->env.alloc, g->mem, (size_t)g->mcap * sizeof(uintptr_t));
    g->mem = nm;
    g->mcap *= 2;
    return TS_OK;
}

/* Files e in g (room reserved; g's refs already count it). */
TS__PRIVATE void ts__lru_member_add(ts__lru_set *g, ts__lru_entry *e)
{
    uint32_t i;
    if (g->mfree) {
        i = g->mfree - 1;
        g->mfree = (uint32_t)(g->mem[i] >> 1);
    } else {
        i = g->mlen++;
    }
    g->mem[i] = (uintptr_t)(void *)e;
    TS__LRU_COLD(e)->gslot = i;
}

/* Leaves a hole where e was; g's refs are the caller's business. */
TS__PRIVATE void ts__lru_member_del(ts__lru_set *g, const ts__lru_entry *e)
{
    uint32_t i = TS__LRU_CCOLD(e)->gslot;
    g->mem[i] = ((uintptr_t)g->mfree << 1) | 1u;
    g->mfree = i + 1;
}

/* The member in slot i of g, or NULL for a hole. */
#define TS__LRU_MEMBER(g, i) \
    (((g)->mem[i] & 1u) ? (ts__lru_entry *)NULL : (ts__lru_entry *)(void *)(g)->mem[i])

/* Drops one member or pin; a set left with none leaves its table (and its
   session's list, releasing the session in turn) and is freed. */
TS__PRIVATE void ts__lru_set_release(ts_lru *lru, ts__lru_set *s)
{
    while (s && --s->refs == 0) {
        ts__lru_set *parent = s->parent;
        if (parent) {
            ts__lru_tab_remove(&lru->groups, s->hash, s);
            ts__lru_unlink(&s->sib);
            if (lru->last_group == s) lru->last_group = NULL;
        } else {
            ts__lru_tab_remove(&lru->sessions, s->hash, s);
        }
        ts__lru_set_retire(lru, s);
        s = parent;
    }
}

/* Where a put finds its key's group: the split, and the group name's hash
   when it had to be computed (has_hash 0: found in last_group). */
typedef struct ts__lru_gq {
    size_t glen, soff;
    uint64_t gh;
    int grouped, has_hash;
} ts__lru_gq;

/* Splits a new key; when its group is not the last one used, hashes the
   group name and starts fetching its table slot, so that miss overlaps
   with the rest of the put's work. Consecutive puts into one group (a
   session's stream being filled, the store's common case) need no hash. */
TS__PRIVATE void ts__lru_group_prepare(const ts_lru *lru, const char *key, size_t n,
                                       ts__lru_gq *q)
{
    const ts__lru_set *g = lru->last_group;
    q->has_hash = 0;
    q->glen = q->soff = 0;
    q->gh = 0;
    q->grouped = ts__lru_split(key, n, &q->glen, &q->soff);
    if (!q->grouped ||
        (g && g->klen == q->glen && ts__lru_key_eq((const char *)(g + 1), key, q->glen)))
        return;
    q->gh = ts__hash_bytes(key, q->glen);
    q->has_hash = 1;
    if (lru->groups.slots) TS__LRU_PREFETCH(&lru->groups.slots[(size_t)q->gh & (lru->groups.cap - 1)]);
}

/* The group of key (prepared by ts__lru_group_prepare), pinned for the
   member the caller is about to add and with a slot free for it (the
   caller files it with ts__lru_member_add, or drops the pin with
   ts__lru_set_release), created with its session when new. *out NULL for
   keys without ':'. On TS_E_NOMEM nothing changed. */
TS__PRIVATE ts_result ts__lru_group_get(ts_lru *lru, const char *key, const ts__lru_gq *q,
                                        ts__lru_set **out)
{
    size_t glen = q->glen, soff = q->soff;
    uint64_t gh, sh;
    ts__lru_set *g, *s, *ns = NULL;
    *out = NULL;
    if (!q->grouped) return TS_OK;
    if (!q->has_hash) {
        g = lru->last_group;
        goto found;
    }
    gh = q->gh;
    g = ts__lru_set_find(&lru->groups, key, glen, gh);
    if (g) goto found;
    sh = ts__hash_bytes(key + soff, glen - soff);
    s = ts__lru_set_find(&lru->sessions, key + soff, glen - soff, sh);
    g = ts__lru_set_new(lru, key, glen, gh, 1);
    if (!g || ts__lru_tab_reserve(lru, &lru->groups) != TS_OK) goto nomem;
    if (!s) {
        s = ns = ts__lru_set_new(lru, key + soff, glen - soff, sh, 0);
        if (!ns || ts__lru_tab_reserve(lru, &lru->sessions) != TS_OK) goto nomem;
        ts__lru_tab_insert(&lru->sessions, sh, ns);
    }
    ts__lru_tab_insert(&lru->groups, gh, g);
    g->parent = s;
    ts__lru_push_back(&s->kids, &g->sib);
    s->refs++;
found:
    g->refs++;
    if (ts__lru_member_reserve(lru, g) != TS_OK) { /* a new group has inline room */
        ts__lru_set_release(lru, g);
        return TS_E_NOMEM;
    }
    lru->last_group = g;
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
    ts__lru_cold *c = TS__LRU_COLD(e);
    if (e->expires == UINT64_MAX) {
        c->exp.prev = c->exp.next = NULL;
    } else if (ttl == lru->default_ttl &&
               (a->prev == a || TS__LRU_ENTRY_OF_COLD(a->prev, exp)->expires <= e->expires)) {
        ts__lru_push_back(a, &c->exp);
    } else {
        ts__lru_push_back(&lru->exp_b, &c->exp);
    }
}

/* Takes e out of every list and the accounting, and out of the table and
   its group unless a replacement already took over its table slot, group
   slot and group reference (replaced 1). */
TS__PRIVATE void ts__lru_detach(ts_lru *lru, ts__lru_entry *e, int replaced)
{
    ts__lru_cold *c = TS__LRU_COLD(e);
    ts__lru_unlink(&e->lru);
    if (c->exp.next) ts__lru_unlink(&c->exp);
    if (!replaced) {
        ts__lru_tab_remove(&lru->entries, c->hash, e);
        if (c->group) {
            ts__lru_member_del(c->group, e);
            ts__lru_set_release(lru, c->group);
        }
    }
    lru->bytes -= ts__lru_charge(e);
}

/* Frees a detached entry, calling the owner's free_fn for a ref value. */
TS__PRIVATE void ts__lru_entry_free(ts_lru *lru, ts__lru_entry *e, int call_free_fn)
{
    ts__lru_cold *c = TS__LRU_COLD(e);
    if (call_free_fn && (e->flags & TS__LRU_REF)) {
        ts__lru_ref *r = ts__lru_ref_of(e);
        if (r->free_fn) r->free_fn(r->ptr, e->cost, r->user);
    }
    ts__free(&lru->env.alloc, c, c->bsize);
}

TS__PRIVATE void ts__lru_remove(ts_lru *lru, ts__lru_entry *e)
{
    ts__lru_detach(lru, e, 0);
    ts__lru_entry_free(lru, e, 1);
}

/* Counts the least-recently-used entry's departure as an expiration or an
   eviction and detaches it. */
TS__PRIVATE ts__lru_entry *ts__lru_pop_tail(ts_lru *lru, uint64_t now)
{
    ts__lru_entry *e = TS__LRU_ENTRY_OF(lru->lru.prev);
    if (TS__LRU_EXPIRED(e, now)) lru->expirations++;
    else lru->evictions++;
    ts__lru_detach(lru, e, 0);
    /* the next one to go: its recency link was just written, its cold
       fields (hash, group) are what evicting it will read first */
    if (lru->lru.prev != &lru->lru) TS__LRU_PREFETCH(TS__LRU_COLD(TS__LRU_ENTRY_OF(lru->lru.prev)));
    return e;
}

TS__PRIVATE void ts__lru_evict(ts_lru *lru, uint64_t now)
{
    while (lru->bytes > lru->max_bytes && lru->lru.prev != &lru->lru)
        ts__lru_entry_free(lru, ts__lru_pop_tail(lru, now), 1);
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

/* 1 if [p, p + n) overlaps entry e's block. Compared as addresses: the
   caller's key or bytes may live in a value this cache handed out. */
TS__PRIVATE int ts__lru_overlaps(const ts__lru_entry *e, const void *p, size_t n)
{
    const ts__lru_cold *c = TS__LRU_CCOLD(e);
    uintptr_t b = (uintptr_t)(const void *)c, q = (uintptr_t)p;
    return n && q < b + c->bsize && b < q + n;
}

/* A put under a key already held. Same block size class (a ref for a ref,
   a copy of about the same length): rewritten in place, no allocation.
   Otherwise a new block takes the old one's slot and group. The old
   value's free_fn runs last, once the cache is consistent. */
TS__PRIVATE ts_result ts__lru_replace(ts_lru *lru, ts__lru_entry *old, size_t slot,
                                      const char *key, size_t need, const void *data,
                                      size_t len, const ts__lru_ref *ref, uint64_t ttl,
                                      uint64_t expires, uint64_t now)
{
    ts__lru_cold *oc = TS__LRU_COLD(old), *c;
    ts__lru_entry *e;
    int same_ptr = ref && (old->flags & TS__LRU_REF) && ts__lru_ref_of(old)->ptr == ref->ptr;
    /* the same need fits without a look at the cold fields (bsize) */
    if (need == ts__lru_need(old) || TS__LRU_FITS(oc->bsize, need)) {
        ts__lru_ref was;
        size_t was_cost = old->cost;
        int free_was = (old->flags & TS__LRU_REF) && !same_ptr;
        int was_linked = old->expires != UINT64_MAX; /* in an expiry list */
        memset(&was, 0, sizeof was);
        if (free_was) was = *ts__lru_ref_of(old);
        lru->bytes -= ts__lru_charge(old);
        if (was_linked) ts__lru_unlink(&oc->exp);
        ts__lru_fill(old, data, len, ref, expires, now);
        if (was_linked || expires != UINT64_MAX) ts__lru_exp_link(lru, old, ttl);
        ts__lru_touch(lru, old, now);
        lru->bytes += ts__lru_charge(old);
        ts__lru_evict(lru, now);
        if (free_was && was.free_fn) was.free_fn(was.ptr, was_cost, was.user);
        return TS_OK;
    }
    c = (ts__lru_cold *)ts__alloc(&lru->env.alloc, need);
    if (!c) return TS__FAIL(&lru->env, TS_E_NOMEM, "lru put: out of memory (%llu bytes)",
                            (unsigned long long)need);
    c->bsize = need;
    c->hash = oc->hash;
    c->group = oc->group; /* same key, same group: it takes over old's slot */
    c->gslot = oc->gslot;
    e = (ts__lru_entry *)(void *)(c + 1);
    e->klen = old->klen;
    if (old->klen) memcpy(e + 1, key, old->klen);
    ts__lru_fill(e, data, len, ref, expires, now);
    lru->entries.slots[slot].obj = e;
    if (c->group) c->group->mem[c->gslot] = (uintptr_t)(void *)e;
    ts__lru_push_front(&lru->lru, &e->lru);
    ts__lru_exp_link(lru, e, ttl);
    lru->bytes += ts__lru_charge(e);
    ts__lru_detach(lru, old, 1);
    ts__lru_evict(lru, now); /* e is at the head and fits alone: it stays */
    ts__lru_entry_free(lru, old, !same_ptr);
    return TS_OK;
}

/* Both puts. ref NULL: copy len bytes from data; else store *ref with cost
   len.

   A new key into a full cache: every step that can fail (table growth, a
   new group, a new block) runs before anything is evicted, so a failure
   leaves the cache as it was; then the entries that must go leave from
   the tail (the same ones as inserting first and evicting after, since the
   new entry fits alone and would sit at the head), the first one's block
   is reused when it fits, and the others are freed only after the new
   entry is filled, because the caller's key or bytes may be a value
   pointer into one of them. */
TS__PRIVATE ts_result ts__lru_put(ts_lru *lru, const char *key, size_t key_len, const void *data,
                                  size_t len, const ts__lru_ref *ref, uint64_t ttl, uint64_t now)
{
    uint64_t h, expires, charge, max = lru->max_bytes, ovh = TS_LRU_ENTRY_OVERHEAD;
    size_t slot, off, need, cap0, was_cost = 0;
    ts__lru_entry *old, *e, *reuse = NULL, *gone = NULL, *gone_last = NULL;
    ts__lru_cold *c;
    ts__lru_set *g;
    ts__lru_gq gq;
    ts__lru_ref was;
    int moved = 0;
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
    if (!off || !ts__size_add(off, ref ? sizeof *ref : len, &need) ||
        !ts__size_add(need, sizeof(ts__lru_cold), &need))
        return TS__FAIL(&lru->env, TS_E_TOOBIG, "lru put: entry size overflows");
    charge = (uint64_t)len + key_len + ovh;

    if (!ttl) ttl = lru->default_ttl;
    expires = (ttl == TS_LRU_NO_TTL || now >= UINT64_MAX - ttl) ? UINT64_MAX : now + ttl;
    h = ts__hash_bytes(key, key_len);
    old = ts__lru_find(lru, key, key_len, h, &slot);
    if (old) return ts__lru_replace(lru, old, slot, key, need, data, len, ref, ttl, expires, now);
    if (lru->bytes + charge > max) {
        /* it will evict: start fetching the tail, its table slot and its
           group while the group of the new key is looked up (the last
           eviction prefetched the tail's hash and group pointer) */
        ts__lru_entry *t = TS__LRU_ENTRY_OF(lru->lru.prev);
        const ts__lru_cold *tc = TS__LRU_CCOLD(t);
        TS__LRU_PREFETCH(t);
        TS__LRU_PREFETCH(&lru->entries.slots[(size_t)tc->hash & (lru->entries.cap - 1)]);
        if (tc->group) TS__LRU_PREFETCH(tc->group);
    }
    ts__lru_group_prepare(lru, key, key_len, &gq);

    /* everything that can fail, before anything changes */
    cap0 = lru->entries.cap;
    if (ts__lru_tab_reserve(lru, &lru->entries) != TS_OK ||
        ts__lru_group_get(lru, key, &gq, &g) != TS_OK)
        return TS__FAIL(&lru->env, TS_E_NOMEM, "lru put: out of memory for the index");
    if (lru->bytes + charge > max) {
        /* bytes > 0 (charge <= max), so there is a tail, and it will go */
        ts__lru_entry *t = TS__LRU_ENTRY_OF(lru->lru.prev);
        if (TS__LRU_FITS(TS__LRU_CCOLD(t)->bsize, need) && !ts__lru_overlaps(t, key, key_len) &&
            (ref || !ts__lru_overlaps(t, data, len)))
            reuse = t;
    }
    if (reuse) {
        e = reuse;
        lru->recycled++;
    } else {
        c = (ts__lru_cold *)ts__alloc(&lru->env.alloc, need);
        if (!c) {
            ts__lru_set_release(lru, g);
            return TS__FAIL(&lru->env, TS_E_NOMEM, "lru put: out of memory (%llu bytes)",
                            (unsigned long long)need);
        }
        c->bsize = need;
        e = (ts__lru_entry *)(void *)(c + 1);
    }

    /* make room. The reused tail goes first; the others wait, tail first,
       on a list threaded through their detached recency links */
    memset(&was, 0, sizeof was);
    while (lru->bytes + charge > max) {
        ts__lru_entry *t = ts__lru_pop_tail(lru, now);
        moved = 1;
        if (t == reuse) {
            if (t->flags & TS__LRU_REF) {
                was = *ts__lru_ref_of(t);
                was_cost = t->cost;
            }
            continue;
        }
        t->lru.next = NULL;
        if (gone_last) gone_last->lru.next = &t->lru;
        else gone = t;
        gone_last = t;
    }

    c = TS__LRU_COLD(e);
    c->hash = h;
    c->group = g;
    e->klen = (uint32_t)key_len;
    if (key_len) memcpy(e + 1, key, key_len);
    ts__lru_fill(e, data, len, ref, expires, now);
    if (cap0 && cap0 == lru->entries.cap && !moved) {
        /* nothing moved since the probe: its empty slot still stands */
        lru->entries.slots[slot].hash = h;
        lru->entries.slots[slot].obj = e;
        lru->entries.count++;
    } else {
        ts__lru_tab_insert(&lru->entries, h, e);
    }
    if (g) ts__lru_member_add(g, e); /* its pin becomes the member's ref */
    ts__lru_push_front(&lru->lru, &e->lru);
    ts__lru_exp_link(lru, e, ttl);
    lru->bytes += charge;

    /* the departed, tail first: values handed back, blocks freed */
    if (was.free_fn) was.free_fn(was.ptr, was_cost, was.user);
    while (gone) {
        ts__lru_entry *t = gone;
        gone = t->lru.next ? TS__LRU_ENTRY_OF(t->lru.next) : NULL;
        ts__lru_entry_free(lru, t, 1);
    }
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
        ts__lru_entry_free(lru, TS__LRU_ENTRY_OF(l), 1);
    }
    for (i = 0; i < lru->groups.cap; i++) ts__lru_set_free(lru, (ts__lru_set *)lru->groups.slots[i].obj);
    for (i = 0; i < lru->sessions.cap; i++) ts__lru_set_free(lru, (ts__lru_set *)lru->sessions.slots[i].obj);
    ts__lru_spare_free(lru);
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
        ts__lru_entry *e = TS__LRU_ENTRY_OF(l);
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
    ts__lru_spare_free(lru);
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
            uint32_t i;
            g->refs++; /* pinned: removing its last member must not free it mid-walk */
            for (i = 0; i < g->mlen; i++) { /* a removal leaves a hole: nothing moves */
                ts__lru_entry *e = TS__LRU_MEMBER(g, i);
                if (e && e->klen >= len && memcmp(ts__lru_key(e), prefix, len) == 0) {
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
            uint32_t i;
            g->refs++;
            for (i = 0; i < g->mlen; i++) {
                ts__lru_entry *e = TS__LRU_MEMBER(g, i);
                if (e) {
                    ts__lru_remove(lru, e);
                    n++;
                }
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
        ts__lru_entry *e = TS__LRU_ENTRY_OF_COLD(lru->exp_a.next, exp);
        if (e->expires > now_ms) break;
        ts__lru_remove(lru, e);
        n++;
    }
    for (l = lru->exp_b.next; l != &lru->exp_b; l = next) {
        ts__lru_entry *e = TS__LRU_ENTRY_OF_COLD(l, exp);
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
    while (lru->lru.next != &lru->lru) ts__lru_remove(lru, TS__LRU_ENTRY_OF(lru->lru.next));
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
        uint64_t t = TS__LRU_CENTRY_OF(lru->lru.prev)->touched;
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
        const ts__lru_entry *e = TS__LRU_CENTRY_OF(l);
        const ts__lru_cold *c = TS__LRU_CCOLD(e);
        size_t slot;
        if (l->next->prev != l) return 0;
        if (ts__lru_find(lru, ts__lru_key(e), e->klen, c->hash, &slot) != e) return 0;
        if (c->hash != ts__hash_bytes(ts__lru_key(e), e->klen)) return 0;
        if (!TS__LRU_FITS(c->bsize, ts__lru_need(e))) return 0;
        if ((e->expires == UINT64_MAX) != (c->exp.next == NULL)) return 0;
        if (c->exp.next) nexp++;
        {
            size_t glen, soff;
            int has = ts__lru_split(ts__lru_key(e), e->klen, &glen, &soff);
            if (has != (c->group != NULL)) return 0;
            grouped += c->group != NULL;
            if (has && (c->group->klen != glen || memcmp(c->group + 1, ts__lru_key(e), glen) ||
                        c->group->parent->klen != glen - soff))
                return 0;
        }
        bytes += ts__lru_charge(e);
        n++;
    }
    if (n != lru->entries.count || bytes != lru->bytes || bytes > lru->max_bytes) return 0;
    for (l = lru->exp_a.next; l != &lru->exp_a; l = l->next) {
        const ts__lru_entry *e = TS__LRU_CENTRY_OF_COLD(l, exp);
        if (e->expires < last_exp) return 0;
        last_exp = e->expires;
        nexp--;
    }
    for (l = lru->exp_b.next; l != &lru->exp_b; l = l->next) nexp--;
    if (nexp != 0) return 0;
    for (i = 0; i < lru->groups.cap; i++) {
        const ts__lru_set *g = (const ts__lru_set *)lru->groups.slots[i].obj;
        size_t k = 0, holes = 0;
        uint32_t j, f;
        if (!g) continue;
        if (g->mcap < TS__LRU_SET_INLINE || g->mlen > g->mcap || g->kids.next != &g->kids) return 0;
        for (j = 0; j < g->mlen; j++) {
            const ts__lru_entry *e = TS__LRU_MEMBER(g, j);
            if (!e) continue;
            if (TS__LRU_CCOLD(e)->group != g || TS__LRU_CCOLD(e)->gslot != j) return 0;
            k++;
        }
        for (f = g->mfree; f; f = (uint32_t)(g->mem[f - 1] >> 1)) {
            if (f > g->mlen || !(g->mem[f - 1] & 1u) || ++holes > g->mlen) return 0;
        }
        if (!k || k != g->refs || !g->parent || k + holes != g->mlen) return 0;
        grouped -= k;
        groups++;
    }
    if (groups != lru->groups.count || grouped != 0) return 0;
    if (lru->nspare > TS__LRU_SPARE) return 0;
    for (i = 0; i < lru->nspare; i++)
        if (lru->spare[i]->bsize > TS__LRU_SPARE_MAX || lru->spare[i]->mcap > TS__LRU_SET_INLINE ||
            lru->spare[i] == lru->last_group)
            return 0;
    if (lru->last_group && ts__lru_set_find(&lru->groups, (const char *)(lru->last_group + 1),
                                            lru->last_group->klen,
                                            lru->last_group->hash) != lru->last_group)
        return 0;
    for (i = 0; i < lru->sessions.cap; i++) {
        const ts__lru_set *s = (const ts__lru_set *)lru->sessions.slots[i].obj;
        size_t k = 0;
        if (!s) continue;
        if (s->mcap) return 0;
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
        {
            ts_result fr = ts__queue_flush_all(q);
            /* still full because the flush failed: say why (the caller did
               not ask for TS_E_BUSY) */
            if (fr != TS_OK && q->ring[need].count >= q->ring[need].cap)
                return TS__FAIL(&q->env, fr, "queue: ring %u full and the flush that would make room failed",
                                (unsigned)need);
        }
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
/* >>codecs: the codec table (identity, deflate through stb), the ".z"      */
/* frame, the reader of compressed twins used by the store's read path,     */
/* and PNG/JPEG -> WebP conversion (stb_image + libwebp). Everything here   */
/* is pure (bytes in, bytes out) except ts__codec_read_twin, which only     */
/* reads. Writing compressed files is >>compress's business.                */
/* ======================================================================== */

#ifndef TASKSTORE_MAX_DECOMPRESSED_BYTES
#define TASKSTORE_MAX_DECOMPRESSED_BYTES ((size_t)256 << 20)
#endif
#ifndef TASKSTORE_MAX_IMAGE_PIXELS
#define TASKSTORE_MAX_IMAGE_PIXELS ((uint64_t)1 << 26)
#endif
#define TS__FRAME_VERSION 1
#define TS__IMAGE_MAX_INPUT ((uint64_t)256 << 20)

/* ---- stb and libwebp -------------------------------------------------------
   stb is compiled here, once, static (so it cannot clash with a copy the
   application links), unless the application compiles it itself and says
   so with TASKSTORE_STB_IMPLEMENTED_ELSEWHERE. Its allocations go to
   TASKSTORE_MALLOC/REALLOC/FREE through a size-prefix shim (stb passes no
   size to free, taskstore's allocator wants one). stb's macros have no
   context pointer, so these see user == NULL, never a store's runtime
   ts_allocator: that is the one limitation, stated in MEMORY. libwebp
   allocates through the C library itself (it has no hook); its output goes straight
   into our allocator through a custom writer. stb's own warnings are
   silenced around the includes only. */
#if defined(TASKSTORE_STB_ZLIB) || defined(TASKSTORE_WEBP)
#define TS__HAVE_STB 1
#ifndef TASKSTORE_STB_IMAGE_H
#define TASKSTORE_STB_IMAGE_H <stb/stb_image.h>
#endif
#ifndef TASKSTORE_STB_IMAGE_WRITE_H
#define TASKSTORE_STB_IMAGE_WRITE_H <stb/stb_image_write.h>
#endif

#ifndef TASKSTORE_STB_IMPLEMENTED_ELSEWHERE
#define TS__STB_HDR 16 /* keeps the block max-aligned */
TS__PRIVATE void *ts__stb_malloc(size_t n)
{
    unsigned char *p;
    if (n > (size_t)-1 - TS__STB_HDR) return NULL;
    p = (unsigned char *)TASKSTORE_MALLOC(n + TS__STB_HDR, NULL);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    /* zeroed: on a damaged JPEG stb leaves blocks of its output unwritten,
       which would otherwise carry stale heap bytes into the stored WebP */
    memset(p + TS__STB_HDR, 0, n);
    return p + TS__STB_HDR;
}
TS__PRIVATE void ts__stb_free(void *q)
{
    unsigned char *p;
    size_t n;
    if (!q) return;
    p = (unsigned char *)q - TS__STB_HDR;
    memcpy(&n, p, sizeof n);
    TASKSTORE_FREE(p, n + TS__STB_HDR, NULL);
}
TS__PRIVATE void *ts__stb_realloc(void *q, size_t n)
{
    unsigned char *p;
    size_t old;
    if (!q) return ts__stb_malloc(n);
    if (n > (size_t)-1 - TS__STB_HDR) return NULL;
    p = (unsigned char *)q - TS__STB_HDR;
    memcpy(&old, p, sizeof old);
    p = (unsigned char *)TASKSTORE_REALLOC(p, old + TS__STB_HDR, n + TS__STB_HDR, NULL);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    return p + TS__STB_HDR;
}
#define TS__STBIW_FREE(p) ts__stb_free(p)
#define STBI_MALLOC(sz) ts__stb_malloc(sz)
#define STBI_REALLOC(p, sz) ts__stb_realloc((p), (sz))
#define STBI_FREE(p) ts__stb_free(p)
#define STBIW_MALLOC(sz) ts__stb_malloc(sz)
#define STBIW_REALLOC(p, sz) ts__stb_realloc((p), (sz))
#define STBIW_FREE(p) ts__stb_free(p)
#define STBI_ASSERT(x) TASKSTORE_ASSERT(x)
#define STBIW_ASSERT(x) TASKSTORE_ASSERT(x)
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_NO_FAILURE_STRINGS   /* stb then writes no global at all */
#define STBI_NO_HDR
#define STBI_NO_LINEAR
/* stb_image 2.27 declares stbi_set_unpremultiply_on_load_thread but defines
   it as stbi__unpremultiply_on_load_thread; with STB_IMAGE_STATIC gcc then
   warns at the end of the translation unit, where no pragma reaches. The
   STBI_ONLY_* and STBI_WRITE_NO_STDIO switches leave such declarations
   behind too, so every format is compiled (only PNG/JPEG are ever fed in). */
#define stbi__unpremultiply_on_load_thread stbi_set_unpremultiply_on_load_thread
#ifdef TASKSTORE_STB_ZLIB
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#endif
#else /* TASKSTORE_STB_IMPLEMENTED_ELSEWHERE */
#ifndef TASKSTORE_STBIW_FREE
#define TASKSTORE_STBIW_FREE(p) free(p) /* must match that build's STBIW_FREE */
#endif
#define TS__STBIW_FREE(p) TASKSTORE_STBIW_FREE(p)
#endif

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wunknown-warning-option"
#pragma clang diagnostic ignored "-Wconversion"
#pragma clang diagnostic ignored "-Wsign-conversion"
#pragma clang diagnostic ignored "-Wimplicit-int-conversion"
#pragma clang diagnostic ignored "-Wshorten-64-to-32"
#pragma clang diagnostic ignored "-Wunused-function"
#pragma clang diagnostic ignored "-Wunused-parameter"
#pragma clang diagnostic ignored "-Wunused-variable"
#pragma clang diagnostic ignored "-Wunused-but-set-variable"
#pragma clang diagnostic ignored "-Wmissing-field-initializers"
#pragma clang diagnostic ignored "-Wshadow"
#pragma clang diagnostic ignored "-Wsign-compare"
#pragma clang diagnostic ignored "-Wimplicit-fallthrough"
#pragma clang diagnostic ignored "-Wdouble-promotion"
#pragma clang diagnostic ignored "-Wcast-qual"
#pragma clang diagnostic ignored "-Wcast-align"
#pragma clang diagnostic ignored "-Wmissing-prototypes"
#pragma clang diagnostic ignored "-Wstrict-prototypes"
#pragma clang diagnostic ignored "-Wdeclaration-after-statement"
#pragma clang diagnostic ignored "-Wold-style-cast"
#pragma clang diagnostic ignored "-Wzero-as-null-pointer-constant"
#pragma clang diagnostic ignored "-Wcomma"
#pragma clang diagnostic ignored "-Wextra-semi-stmt"
#pragma clang diagnostic ignored "-Wunused-macros"
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wmissing-declarations"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#ifndef __cplusplus
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wdeclaration-after-statement"
#else
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wuseless-cast"
#pragma GCC diagnostic ignored "-Wzero-as-null-pointer-constant"
#endif
#endif
#include TASKSTORE_STB_IMAGE_H
#ifdef TASKSTORE_STB_ZLIB
#include TASKSTORE_STB_IMAGE_WRITE_H
#endif
#ifdef TASKSTORE_WEBP
#include <webp/encode.h>
#include <webp/decode.h>
#endif
#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#endif /* TASKSTORE_STB_ZLIB || TASKSTORE_WEBP */

/* ---- CRC-32 ------------------------------------------------------------------
   Table-driven, one byte per step (the table is const: no global state). */

static const uint32_t ts__crc32_table[256] = {
    0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau, 0x076dc419u, 0x706af48fu, 0xe963a535u, 0x9e6495a3u,
    0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u, 0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u, 0x90bf1d91u,
    0x1db71064u, 0x6ab020f2u, 0xf3b97148u, 0x84be41deu, 0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u,
    0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu, 0x14015c4fu, 0x63066cd9u, 0xfa0f3d63u, 0x8d080df5u,
    0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u, 0xa2677172u, 0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu,
    0x35b5a8fau, 0x42b2986cu, 0xdbbbc9d6u, 0xacbcf940u, 0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u,
    0x26d930acu, 0x51de003au, 0xc8d75180u, 0xbfd06116u, 0x21b4f4b5u, 0x56b3c423u, 0xcfba9599u, 0xb8bda50fu,
    0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u, 0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du,
    0x76dc4190u, 0x01db7106u, 0x98d220bcu, 0xefd5102au, 0x71b18589u, 0x06b6b51fu, 0x9fbfe4a5u, 0xe8b8d433u,
    0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u, 0x7f6a0dbbu, 0x086d3d2du, 0x91646c97u, 0xe6635c01u,
    0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu, 0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u,
    0x65b0d9c6u, 0x12b7e950u, 0x8bbeb8eau, 0xfcb9887cu, 0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u,
    0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u, 0x4adfa541u, 0x3dd895d7u, 0xa4d1c46du, 0xd3d6f4fbu,
    0x4369e96au, 0x346ed9fcu, 0xad678846u, 0xda60b8d0u, 0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u,
    0x5005713cu, 0x270241aau, 0xbe0b1010u, 0xc90c2086u, 0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
    0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u, 0x59b33d17u, 0x2eb40d81u, 0xb7bd5c3bu, 0xc0ba6cadu,
    0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au, 0xead54739u, 0x9dd277afu, 0x04db2615u, 0x73dc1683u,
    0xe3630b12u, 0x94643b84u, 0x0d6d6a3eu, 0x7a6a5aa8u, 0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u,
    0xf00f9344u, 0x8708a3d2u, 0x1e01f268u, 0x6906c2feu, 0xf762575du, 0x806567cbu, 0x196c3671u, 0x6e6b06e7u,
    0xfed41b76u, 0x89d32be0u, 0x10da7a5au, 0x67dd4accu, 0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u,
    0xd6d6a3e8u, 0xa1d1937eu, 0x38d8c2c4u, 0x4fdff252u, 0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
    0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u, 0xdf60efc3u, 0xa867df55u, 0x316e8eefu, 0x4669be79u,
    0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u, 0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu,
    0xc5ba3bbeu, 0xb2bd0b28u, 0x2bb45a92u, 0x5cb36a04u, 0xc2d7ffa7u, 0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du,
    0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au, 0x9c0906a9u, 0xeb0e363fu, 0x72076785u, 0x05005713u,
    0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u, 0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u,
    0x86d3d2d4u, 0xf1d4e242u, 0x68ddb3f8u, 0x1fda836eu, 0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u,
    0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu, 0x8f659effu, 0xf862ae69u, 0x616bffd3u, 0x166ccf45u,
    0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u, 0xa7672661u, 0xd06016f7u, 0x4969474du, 0x3e6e77dbu,
    0xaed16a4au, 0xd9d65adcu, 0x40df0b66u, 0x37d83bf0u, 0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
    0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u, 0xbad03605u, 0xcdd70693u, 0x54de5729u, 0x23d967bfu,
    0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u, 0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du
};

TASKSTORE_DEF uint32_t ts_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    uint32_t c = crc ^ 0xffffffffu;
    if (!p) return crc;
    while (n--) c = ts__crc32_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* ---- little-endian fields ------------------------------------------------- */

TS__PRIVATE void ts__put_le(unsigned char *p, uint64_t v, int n)
{
    int i;
    for (i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}
TS__PRIVATE uint64_t ts__get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    int i;
    for (i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ---- built-in codecs ------------------------------------------------------- */

TS__PRIVATE ts_result ts__identity_compress(void *user, const void *src, size_t len, int level,
                                            const ts_allocator *alloc, void **out,
                                            size_t *out_len, size_t *out_cap)
{
    void *p;
    TS__UNUSED(user); TS__UNUSED(level);
    *out = NULL; *out_len = 0; *out_cap = 0;
    p = ts__alloc(alloc, len);
    if (!p) return TS_E_NOMEM;
    if (len) memcpy(p, src, len);
    *out = p; *out_len = len; *out_cap = len ? len : 1;
    return TS_OK;
}

TS__PRIVATE ts_result ts__identity_decompress(void *user, const void *src, size_t len, void *dst,
                                              size_t dst_len)
{
    TS__UNUSED(user);
    if (len != dst_len) return TS_E_CORRUPT;
    if (len) memcpy(dst, src, len);
    return TS_OK;
}

#ifdef TASKSTORE_STB_ZLIB
/* stb's compressor takes an int size and a "quality" (hash chain length,
   at least 5; 8 is what its PNG writer uses). Levels 1..9 map onto 5..21:
   longer chains find longer matches at a cost in speed. */
TS__PRIVATE ts_result ts__deflate_compress(void *user, const void *src, size_t len, int level,
                                           const ts_allocator *alloc, void **out,
                                           size_t *out_len, size_t *out_cap)
{
    unsigned char *z, *p;
    int zlen = 0, quality;
    TS__UNUSED(user);
    *out = NULL; *out_len = 0; *out_cap = 0;
    if (len > (size_t)INT_MAX / 2) return TS_E_TOOBIG;
    if (level <= 0) level = 6;
    if (level > 9) level = 9;
    quality = level <= 1 ? 5 : 2 * level - 1;
    if (len == 0) {
        /* stb emits no block at all for empty input (its "stored is
           smaller" fallback writes zero stored blocks); this is zlib's own
           stream for "": a final fixed block holding only end-of-block */
        static const unsigned char empty[8] = { 0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01 };
        p = (unsigned char *)ts__alloc(alloc, sizeof empty);
        if (!p) return TS_E_NOMEM;
        memcpy(p, empty, sizeof empty);
        *out = p; *out_len = sizeof empty; *out_cap = sizeof empty;
        return TS_OK;
    }
    z = stbi_zlib_compress((unsigned char *)(uintptr_t)src, (int)len, &zlen, quality);
    if (!z || zlen < 0) {
        if (z) TS__STBIW_FREE(z);
        return TS_E_NOMEM;
    }
    p = (unsigned char *)ts__alloc(alloc, (size_t)zlen);
    if (!p) { TS__STBIW_FREE(z); return TS_E_NOMEM; }
    memcpy(p, z, (size_t)zlen);
    TS__STBIW_FREE(z);
    *out = p; *out_len = (size_t)zlen; *out_cap = zlen ? (size_t)zlen : 1;
    return TS_OK;
}

/* Decodes into the caller's buffer of exactly dst_len bytes: stb's
   non-growing decoder, so a stream that wants more fails instead of
   allocating. */
TS__PRIVATE ts_result ts__deflate_decompress(void *user, const void *src, size_t len, void *dst,
                                             size_t dst_len)
{
    int got;
    TS__UNUSED(user);
    if (len > (size_t)INT_MAX || dst_len > (size_t)INT_MAX) return TS_E_CORRUPT;
    got = stbi_zlib_decode_buffer((char *)dst, (int)dst_len, (const char *)src, (int)len);
    if (got < 0 || (size_t)got != dst_len) return TS_E_CORRUPT;
    return TS_OK;
}
#endif

static const ts_codec ts__codec_identity = {
    "identity", TS_CODEC_ID_IDENTITY, NULL, ts__identity_compress, ts__identity_decompress
};
#ifdef TASKSTORE_STB_ZLIB
static const ts_codec ts__codec_deflate = {
    "deflate", TS_CODEC_ID_DEFLATE, NULL, ts__deflate_compress, ts__deflate_decompress
};
#endif

TS__PRIVATE const ts_codec *ts__codec_builtin_id(unsigned id)
{
    if (id == TS_CODEC_ID_IDENTITY) return &ts__codec_identity;
#ifdef TASKSTORE_STB_ZLIB
    if (id == TS_CODEC_ID_DEFLATE) return &ts__codec_deflate;
#endif
    return NULL;
}

TASKSTORE_DEF ts_result ts_codec_builtin(const char *name, ts_codec *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!name || !out) return TS_E_INVALID;
    if (strcmp(name, "identity") == 0) { *out = ts__codec_identity; return TS_OK; }
    if (strcmp(name, "deflate") == 0) {
#ifdef TASKSTORE_STB_ZLIB
        *out = ts__codec_deflate;
        return TS_OK;
#else
        return TS_E_NOTIMPL;
#endif
    }
    return TS_E_NOTFOUND;
}

TS__PRIVATE int ts__codec_valid_name(const char *s)
{
    size_t i, n;
    if (!s) return 0;
    n = strlen(s);
    if (n == 0 || n > 15) return 0;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9'))) return 0;
    return 1;
}

TASKSTORE_DEF ts_result ts_codec_set_add(ts_codec_set *set, const ts_codec *c)
{
    uint32_t i;
    if (!set || !c || !ts__codec_valid_name(c->name) || !c->compress_fn || !c->decompress_fn ||
        (c->id != TS_CODEC_ID_DEFLATE && c->id < 128) || set->count > TS_CODEC_MAX)
        return TS_E_INVALID;
    for (i = 0; i < set->count; i++) {
        if (set->codecs[i].id == c->id || strcmp(set->codecs[i].name, c->name) == 0) {
            set->codecs[i] = *c;
            return TS_OK;
        }
    }
    if (set->count == TS_CODEC_MAX) return TS_E_RANGE;
    set->codecs[set->count++] = *c;
    return TS_OK;
}

TASKSTORE_DEF const ts_codec *ts_codec_set_find_id(const ts_codec_set *set, unsigned id)
{
    uint32_t i;
    if (set)
        for (i = 0; i < set->count && i < TS_CODEC_MAX; i++)
            if (set->codecs[i].id == id) return &set->codecs[i];
    return ts__codec_builtin_id(id);
}

TASKSTORE_DEF const ts_codec *ts_codec_set_find(const ts_codec_set *set, const char *name)
{
    uint32_t i;
    if (!name) return NULL;
    if (set)
        for (i = 0; i < set->count && i < TS_CODEC_MAX; i++)
            if (set->codecs[i].name && strcmp(set->codecs[i].name, name) == 0) return &set->codecs[i];
    if (strcmp(name, "identity") == 0) return &ts__codec_identity;
#ifdef TASKSTORE_STB_ZLIB
    if (strcmp(name, "deflate") == 0) return &ts__codec_deflate;
#endif
    return NULL;
}

/* ---- the frame ---------------------------------------------------------------- */

static const unsigned char ts__frame_magic[4] = { 0x89, 'T', 'S', 'Z' };

TASKSTORE_DEF ts_result ts_frame_info_get(const void *frame, size_t len, ts_frame_info *out)
{
    const unsigned char *p = (const unsigned char *)frame;
    unsigned hs;
    if (out) memset(out, 0, sizeof *out);
    if (!out || (!p && len)) return TS_E_INVALID;
    if (len < TS_FRAME_HEADER_SIZE || memcmp(p, ts__frame_magic, 4) != 0) return TS_E_CORRUPT;
    if ((uint32_t)ts__get_le(p + 20, 4) != ts_crc32(0, p, 20)) return TS_E_CORRUPT;
    if (p[4] != TS__FRAME_VERSION) return TS_E_VERSION;
    hs = (unsigned)ts__get_le(p + 6, 2);
    if (hs < TS_FRAME_HEADER_SIZE || hs > len) return TS_E_CORRUPT;
    out->codec_id = p[5];
    out->header_size = hs;
    out->original_size = ts__get_le(p + 8, 8);
    out->crc = (uint32_t)ts__get_le(p + 16, 4);
    return TS_OK;
}

/* Frame of src[0..len) compressed with c into out (replacing its bytes). */
TS__PRIVATE ts_result ts__frame_encode_buf(const ts_codec *c, int level, const void *src,
                                           size_t len, ts__buf *out)
{
    unsigned char hdr[TS_FRAME_HEADER_SIZE];
    void *z = NULL;
    size_t zlen = 0, zcap = 0;
    ts_result r;
    out->len = 0;
    if (!c || !c->compress_fn || (!src && len)) return TS_E_INVALID;
    r = c->compress_fn(c->user, src, len, level, out->alloc, &z, &zlen, &zcap);
    if (r != TS_OK) return r;
    memcpy(hdr, ts__frame_magic, 4);
    hdr[4] = TS__FRAME_VERSION;
    hdr[5] = c->id;
    ts__put_le(hdr + 6, TS_FRAME_HEADER_SIZE, 2);
    ts__put_le(hdr + 8, (uint64_t)len, 8);
    ts__put_le(hdr + 16, ts_crc32(0, src, len), 4);
    ts__put_le(hdr + 20, ts_crc32(0, hdr, 20), 4);
    r = ts__buf_reserve(out, TS_FRAME_HEADER_SIZE + zlen);
    if (r == TS_OK) r = ts__buf_append(out, hdr, sizeof hdr);
    if (r == TS_OK) r = ts__buf_append(out, z, zlen);
    ts__free(out->alloc, z, zcap);
    return r;
}

/* Decodes a frame into out (replacing its bytes). *why (may be NULL) gets a
   short reason on failure, for messages with the path. */
TS__PRIVATE ts_result ts__frame_decode_buf(const ts_codec_set *set, const void *frame, size_t len,
                                           size_t max_out, ts__buf *out, const char **why)
{
    ts_frame_info fi;
    const ts_codec *c;
    const unsigned char *p = (const unsigned char *)frame;
    const char *dummy;
    ts_result r;
    if (!why) why = &dummy;
    *why = "";
    out->len = 0;
    if (!max_out) max_out = TASKSTORE_MAX_DECOMPRESSED_BYTES;
    r = ts_frame_info_get(frame, len, &fi);
    if (r == TS_E_VERSION) { *why = "unsupported frame version"; return r; }
    if (r != TS_OK) { *why = "not a compressed frame, or its header is damaged"; return r; }
    if (fi.original_size > (uint64_t)max_out || fi.original_size >= (uint64_t)((size_t)-1)) {
        *why = "original size over the decompression limit";
        return TS_E_CORRUPT;
    }
    c = ts_codec_set_find_id(set, fi.codec_id);
    if (!c || !c->decompress_fn) { *why = "codec not available in this build"; return TS_E_NOTIMPL; }
    if ((r = ts__buf_reserve(out, (size_t)fi.original_size)) != TS_OK) { *why = "out of memory"; return r; }
    r = c->decompress_fn(c->user, p + fi.header_size, len - fi.header_size, out->data,
                         (size_t)fi.original_size);
    if (r != TS_OK) {
        *why = r == TS_E_NOMEM ? "out of memory" : "compressed stream is malformed or not the recorded size";
        if (r != TS_E_NOMEM) r = TS_E_CORRUPT;
        return r;
    }
    if (ts_crc32(0, out->data, (size_t)fi.original_size) != fi.crc) {
        *why = "CRC mismatch: the decompressed bytes are not the original";
        return TS_E_CORRUPT;
    }
    out->len = (size_t)fi.original_size;
    out->data[out->len] = 0;
    return TS_OK;
}

/* A ts__buf's bytes handed to a blob (defined with the store API). */
TS__PRIVATE void ts__codec_buf_to_blob(ts__buf *b, const ts_allocator *a, struct ts_blob *out)
{
    size_t len = 0, cap = 0;
    unsigned char *p = ts__buf_take(b, &len, &cap);
    out->data = p;
    out->len = len;
    out->cap = cap;
    out->alloc = a ? *a : out->alloc;
}

TASKSTORE_DEF ts_result ts_frame_encode(const ts_codec *codec, int level, const void *src,
                                        size_t len, const ts_allocator *alloc,
                                        struct ts_blob *out)
{
    ts_allocator a;
    ts__buf b;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!out || !codec || (!src && len)) return TS_E_INVALID;
    if (alloc) a = *alloc;
    else memset(&a, 0, sizeof a);
    ts__buf_init(&b, &a);
    r = ts__frame_encode_buf(codec, level, src, len, &b);
    if (r == TS_OK) ts__codec_buf_to_blob(&b, &a, out);
    ts__buf_free(&b);
    return r;
}

TASKSTORE_DEF ts_result ts_frame_decode(const ts_codec_set *set, const void *frame, size_t len,
                                        size_t max_out, const ts_allocator *alloc,
                                        struct ts_blob *out)
{
    ts_allocator a;
    ts__buf b;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!out || (!frame && len)) return TS_E_INVALID;
    if (alloc) a = *alloc;
    else memset(&a, 0, sizeof a);
    ts__buf_init(&b, &a);
    r = ts__frame_decode_buf(set, frame, len, max_out, &b, NULL);
    if (r == TS_OK) ts__codec_buf_to_blob(&b, &a, out);
    ts__buf_free(&b);
    return r;
}

/* ---- compressed twins on the read path -------------------------------------
   THE TWIN RULE. A logical file `p` is stored either plain (`p`) or
   compressed (`p.z`, a frame). Readers try `p` first and fall back to
   `p.z`; when both exist, `p` wins. The compressor writes `p.z` (durably:
   file and directory synced), and only then removes `p` (a queued delete
   ordered after the twin's write). So a crash anywhere leaves `p`, or
   `p.z`, or both with the same content; and any later rewrite of `p` (an
   append to an old session) makes `p` the newer copy, which wins. A twin
   is never written for a path whose plain file holds other content than
   the twin, except by such a rewrite, which the rule resolves. */

/* path + ".z" into out[cap]; 1 on success (a valid store path). */
TS__PRIVATE int ts__codec_twin_path(const char *path, char *out, size_t cap)
{
    size_t n = strlen(path);
    if (n + sizeof TS_FRAME_SUFFIX > cap) return 0;
    memcpy(out, path, n);
    memcpy(out + n, TS_FRAME_SUFFIX, sizeof TS_FRAME_SUFFIX);
    return ts__valid_rel_path(out, n + sizeof TS_FRAME_SUFFIX - 1);
}

/* Reads a whole file through io into b (replacing its bytes), refusing
   files over max bytes. */
TS__PRIVATE ts_result ts__codec_io_read(const ts_io *io, const char *path, size_t max, ts__buf *b)
{
    size_t size = 0;
    ts_result r;
    b->len = 0;
    if (!io->read_file_fn) return TS_E_NOTIMPL;
    if ((r = ts__buf_reserve(b, b->cap > 1024 ? b->cap - 1 : 1024)) != TS_OK) return r;
    r = io->read_file_fn(io->user, path, b->data, b->cap - 1, &size);
    if (r == TS_E_RANGE || (r == TS_OK && size > b->cap - 1)) {
        if (size > max) return TS_E_TOOBIG;
        if ((r = ts__buf_reserve(b, size)) != TS_OK) return r;
        r = io->read_file_fn(io->user, path, b->data, b->cap - 1, &size);
        if (r == TS_OK && size > b->cap - 1) r = TS_E_IO; /* grew under us */
    }
    if (r != TS_OK) return r;
    b->len = size;
    b->data[size] = 0;
    return TS_OK;
}

/* Reads the compressed twin of `path` and decodes it into out: through the
   queue's overlay first (q may be NULL), then io. Returns TS_OK, TS_E_NOTFOUND
   (no twin, or its delete is queued), TS_E_CORRUPT / TS_E_NOTIMPL (recorded
   in env with the twin's path), TS_E_NOMEM, or the I/O error. max bounds
   both the twin and the decompressed size. This is the one call the store's
   read path makes when the plain file is absent. */
TS__PRIVATE ts_result ts__codec_read_twin(const ts_codec_set *set, const ts_queue *q,
                                          const ts_io *io, ts__env *env, const char *path,
                                          size_t max, ts__buf *out)
{
    char twin[TASKSTORE_MAX_PATH + 4];
    const void *data = NULL;
    size_t len = 0;
    ts__buf raw;
    const char *why = "";
    ts_result r;
    out->len = 0;
    if (!path || !ts__codec_twin_path(path, twin, sizeof twin)) return TS_E_NOTFOUND;
    ts__buf_init(&raw, out->alloc);
    r = q ? ts_queue_lookup(q, twin, &data, &len) : TS_DONE;
    if (r == TS_DONE) {
        r = ts__codec_io_read(io, twin, max, &raw);
        data = raw.data;
        len = raw.len;
    }
    if (r == TS_OK) {
        r = ts__frame_decode_buf(set, data, len, max, out, &why);
        if (r != TS_OK && r != TS_E_NOMEM) r = TS__FAIL(env, r, "%s: %s", twin, why);
    } else if (r == TS_E_TOOBIG) {
        r = TS__FAIL(env, TS_E_CORRUPT, "%s: over the size limit", twin);
    }
    ts__buf_free(&raw);
    if (r != TS_OK) out->len = 0;
    return r;
}

/* ---- images -------------------------------------------------------------------- */

TASKSTORE_DEF const char *ts_image_sniff(const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    static const unsigned char png[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    if (!p) return NULL;
    if (len >= 8 && memcmp(p, png, 8) == 0) return "image/png";
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) return "image/jpeg";
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) return "image/webp";
    return NULL;
}

TASKSTORE_DEF int ts_image_webp_available(void)
{
#ifdef TASKSTORE_WEBP
    return 1;
#else
    return 0;
#endif
}

/* Microseconds of the monotonic clock (0 where the build has none). */
TS__PRIVATE uint64_t ts__codec_clock_us(void)
{
#ifdef TS__QUEUE_HAVE_CLOCK
    return ts__queue_clock_us(NULL);
#else
    return 0;
#endif
}

#ifdef TASKSTORE_WEBP

TS__PRIVATE uint32_t ts__get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Bytes of filtered scanlines (filter byte + packed samples) of one pass. */
TS__PRIVATE uint64_t ts__png_pass_bytes(uint64_t w, uint64_t h, uint64_t bits_per_pixel)
{
    if (!w || !h) return 0;
    return h * (1 + (w * bits_per_pixel + 7) / 8);
}

/* The PNG guard: walks the chunks (bounded by len), checks IHDR, computes
   the exact size of the decompressed pixel data from the header, and
   inflates the IDAT stream into a buffer of that size with stb's
   non-growing decoder. A stream that wants more (a decompression bomb) or is
   malformed fails here, before stb's PNG loader (which grows its buffer)
   ever sees it. *w, *h from IHDR. */
TS__PRIVATE ts_result ts__png_guard(const unsigned char *p, size_t len, uint64_t max_pixels,
                                    const ts_allocator *a, uint32_t *w, uint32_t *h)
{
    static const int passes[7][4] = { /* x0, y0, dx, dy of the Adam7 passes */
        { 0, 0, 8, 8 }, { 4, 0, 8, 8 }, { 0, 4, 4, 8 }, { 2, 0, 4, 4 },
        { 0, 2, 2, 4 }, { 1, 0, 2, 2 }, { 0, 1, 1, 2 }
    };
    size_t pos = 8, idat_len = 0, raw_cap;
    uint64_t raw_len = 0, bpp;
    unsigned depth, ctype, interlace, channels;
    unsigned char *idat = NULL, *raw = NULL;
    int got, seen_idat = 0, pass;
    ts_result r = TS_E_CORRUPT;

    if (len < 8 + 25 || ts__get_be32(p + 8) != 13 || memcmp(p + 12, "IHDR", 4) != 0) return TS_E_CORRUPT;
    *w = ts__get_be32(p + 16);
    *h = ts__get_be32(p + 20);
    depth = p[24]; ctype = p[25]; interlace = p[28];
    if (!*w || !*h || *w > 0x7fffffffu || *h > 0x7fffffffu || p[26] != 0 || p[27] != 0 || interlace > 1)
        return TS_E_CORRUPT;
    if ((uint64_t)*w * *h > max_pixels) return TS_E_CORRUPT;
    switch (ctype) {
    case 0: channels = 1; if (depth != 1 && depth != 2 && depth != 4 && depth != 8 && depth != 16) return TS_E_CORRUPT; break;
    case 3: channels = 1; if (depth != 1 && depth != 2 && depth != 4 && depth != 8) return TS_E_CORRUPT; break;
    case 2: channels = 3; break;
    case 4: channels = 2; break;
    case 6: channels = 4; break;
    default: return TS_E_CORRUPT;
    }
    if ((ctype == 2 || ctype == 4 || ctype == 6) && depth != 8 && depth != 16) return TS_E_CORRUPT;
    bpp = (uint64_t)channels * depth;
    if (!interlace) {
        raw_len = ts__png_pass_bytes(*w, *h, bpp);
    } else {
        for (pass = 0; pass < 7; pass++) {
            uint64_t pw = (*w > (uint64_t)passes[pass][0])
                ? ((uint64_t)*w - (uint64_t)passes[pass][0] + (uint64_t)passes[pass][2] - 1) / (uint64_t)passes[pass][2] : 0;
            uint64_t ph = (*h > (uint64_t)passes[pass][1])
                ? ((uint64_t)*h - (uint64_t)passes[pass][1] + (uint64_t)passes[pass][3] - 1) / (uint64_t)passes[pass][3] : 0;
            raw_len += ts__png_pass_bytes(pw, ph, bpp);
        }
    }
    if (raw_len == 0 || raw_len > (uint64_t)INT_MAX - 1) return TS_E_CORRUPT;
    /* sum the IDAT chunks (every length checked against what is left) */
    while (pos + 12 <= len) {
        uint32_t clen = ts__get_be32(p + pos);
        if ((uint64_t)clen > (uint64_t)(len - pos - 12)) return TS_E_CORRUPT;
        if (memcmp(p + pos + 4, "IDAT", 4) == 0) { idat_len += clen; seen_idat = 1; }
        if (memcmp(p + pos + 4, "IEND", 4) == 0) break;
        pos += 12 + (size_t)clen;
    }
    if (!seen_idat || idat_len == 0 || idat_len > (size_t)INT_MAX) return TS_E_CORRUPT;
    idat = (unsigned char *)ts__alloc(a, idat_len);
    raw_cap = (size_t)raw_len;
    raw = (unsigned char *)ts__alloc(a, raw_cap);
    if (!idat || !raw) { r = TS_E_NOMEM; goto done; }
    {
        size_t off = 0;
        pos = 8;
        while (pos + 12 <= len) {
            uint32_t clen = ts__get_be32(p + pos);
            if (memcmp(p + pos + 4, "IDAT", 4) == 0) { memcpy(idat + off, p + pos + 8, clen); off += clen; }
            if (memcmp(p + pos + 4, "IEND", 4) == 0) break;
            pos += 12 + (size_t)clen;
        }
    }
    got = stbi_zlib_decode_buffer((char *)raw, (int)raw_cap, (const char *)idat, (int)idat_len);
    r = got < 0 ? TS_E_CORRUPT : TS_OK;
done:
    ts__free(a, idat, idat_len);
    ts__free(a, raw, raw_cap);
    return r;
}

/* The JPEG guard. stb_image 2.27 (Debian 12's libstb) builds a Huffman table
   from a DHT segment without checking that its 16 code counts sum to at
   most 256, and then writes past its 257-entry arrays (found by
   fuzz/fuzz_image.c). Every "FF C4" in the file is parsed here the way
   stb's DHT loop would parse it, and a table with more than 256 codes is
   TS_E_CORRUPT before stb runs. Checking every occurrence (not only the
   segments a marker walk reaches) makes the guard independent of how stb
   resynchronises on damaged input; the price is that a legitimate JPEG
   carrying a broken thumbnail in its metadata is refused (and kept). */
TS__PRIVATE ts_result ts__jpeg_guard(const unsigned char *p, size_t len)
{
    size_t i;
    for (i = 0; i + 1 < len; i++) {
        size_t r;
        long rem;
        if (p[i] != 0xff || p[i + 1] != 0xc4) continue;
        r = i + 2;
        rem = (long)((r < len ? (unsigned)p[r] << 8 : 0u) | (r + 1 < len ? p[r + 1] : 0u)) - 2;
        r += 2;
        while (rem > 0 && r < len) {
            int k;
            long n = 0;
            r++;                                    /* table class and id */
            for (k = 0; k < 16; k++, r++) n += r < len ? p[r] : 0;
            if (n > 256) return TS_E_CORRUPT;
            rem -= 17 + n;
            r += (size_t)n;
        }
    }
    return TS_OK;
}

/* libwebp hands its output here piece by piece: straight into our allocator. */
TS__PRIVATE int ts__webp_writer(const uint8_t *data, size_t size, const WebPPicture *pic)
{
    ts__buf *b = (ts__buf *)pic->custom_ptr;
    return ts__buf_append(b, data, size) == TS_OK;
}

TS__PRIVATE ts_result ts__webp_error(WebPEncodingError e)
{
    switch (e) {
    case VP8_ENC_ERROR_OUT_OF_MEMORY:
    case VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY:
    case VP8_ENC_ERROR_BAD_WRITE: return TS_E_NOMEM;
    case VP8_ENC_ERROR_BAD_DIMENSION: return TS_E_INVALID;
    case VP8_ENC_ERROR_USER_ABORT: return TS_E_CANCELLED;
    default: return TS_E_IO;
    }
}

/* Decodes the result again and compares: every pixel (lossless), or the
   dimensions (lossy). */
TS__PRIVATE ts_result ts__webp_verify(const ts__buf *webp, const unsigned char *rgba, int w, int h,
                                      int lossless, const ts_allocator *a)
{
    int ww = 0, hh = 0;
    size_t n;
    unsigned char *px;
    ts_result r = TS_OK;
    if (!WebPGetInfo(webp->data, webp->len, &ww, &hh) || ww != w || hh != h) return TS_E_CORRUPT;
    if (!lossless) return TS_OK;
    n = (size_t)w * (size_t)h * 4;
    px = (unsigned char *)ts__alloc(a, n);
    if (!px) return TS_E_NOMEM;
    if (!WebPDecodeRGBAInto(webp->data, webp->len, px, n, w * 4) || memcmp(px, rgba, n) != 0)
        r = TS_E_CORRUPT;
    ts__free(a, px, n);
    return r;
}
/* Decodes an original (PNG/JPEG) and its WebP and compares them: every
   pixel when lossless, the dimensions otherwise. TS_OK when they agree,
   TS_E_CORRUPT when not (or either does not decode), TS_E_NOMEM. */
TS__PRIVATE ts_result ts__image_same(const void *orig, size_t olen, const void *webp, size_t wlen,
                                     int lossless, uint64_t max_pixels, const ts_allocator *a)
{
    ts__buf b;
    unsigned char *px;
    int x = 0, y = 0, c = 0;
    ts_result r;
    if (olen > (size_t)INT_MAX || !ts_image_sniff(orig, olen)) return TS_E_CORRUPT;
    if (strcmp(ts_image_sniff(orig, olen), "image/png") == 0) {
        uint32_t w, h;
        if ((r = ts__png_guard((const unsigned char *)orig, olen, max_pixels, a, &w, &h)) != TS_OK) return r;
    } else if ((r = ts__jpeg_guard((const unsigned char *)orig, olen)) != TS_OK) {
        return r;
    }
    if (!stbi_info_from_memory((const unsigned char *)orig, (int)olen, &x, &y, &c) ||
        (uint64_t)x * (uint64_t)y > max_pixels)
        return TS_E_CORRUPT;
    px = stbi_load_from_memory((const unsigned char *)orig, (int)olen, &x, &y, &c, 4);
    if (!px) return TS_E_CORRUPT;
    ts__buf_init(&b, a);
    b.data = (unsigned char *)(uintptr_t)webp; /* read only: never freed or grown */
    b.len = wlen;
    r = ts__webp_verify(&b, px, x, y, lossless, a);
    stbi_image_free(px);
    return r;
}
#endif /* TASKSTORE_WEBP */

TASKSTORE_DEF ts_result ts_image_to_webp(const void *src, size_t len, const ts_webp_options *opt_in,
                                         const ts_allocator *alloc, struct ts_blob *out,
                                         ts_image_info *info)
{
#ifdef TASKSTORE_WEBP
    ts_webp_options opt;
    ts_allocator a;
    ts_image_info inf;
    const char *mime;
    const unsigned char *p = (const unsigned char *)src;
    uint32_t w = 0, h = 0;
    int x = 0, y = 0, comp = 0, ok;
    unsigned char *rgba = NULL;
    ts__buf b;
    WebPConfig config;
    WebPPicture pic;
    uint64_t t0;
    size_t i, npx;
    ts_result r;

    if (out) memset(out, 0, sizeof *out);
    if (info) memset(info, 0, sizeof *info);
    if (!out || (!src && len)) return TS_E_INVALID;
    if (opt_in) opt = *opt_in;
    else memset(&opt, 0, sizeof opt);
    if (!opt.max_pixels) opt.max_pixels = TASKSTORE_MAX_IMAGE_PIXELS;
    if (!opt.max_input) opt.max_input = TS__IMAGE_MAX_INPUT;
    if (opt.quality <= 0.0f) opt.quality = opt.lossy ? 80.0f : 75.0f;
    if (opt.quality > 100.0f) opt.quality = 100.0f;
    if (opt.method <= 0) opt.method = 4;
    if (opt.method > 6) opt.method = 6;
    if (alloc) a = *alloc;
    else memset(&a, 0, sizeof a);
    memset(&inf, 0, sizeof inf);

    mime = ts_image_sniff(src, len);
    if (!mime || strcmp(mime, "image/webp") == 0) {
        if (mime) memcpy(inf.format, "webp", 5);
        if (info) *info = inf;
        return TS_E_INVALID;
    }
    if ((uint64_t)len > opt.max_input || len > (size_t)INT_MAX) return TS_E_CORRUPT;
    t0 = ts__codec_clock_us();
    if (strcmp(mime, "image/png") == 0) {
        memcpy(inf.format, "png", 4);
        r = ts__png_guard(p, len, opt.max_pixels, &a, &w, &h);
        if (r != TS_OK) return r;
    } else {
        memcpy(inf.format, "jpeg", 5);
        if ((r = ts__jpeg_guard(p, len)) != TS_OK) return r;
    }
    /* the header's dimensions, checked before anything is decoded */
    if (!stbi_info_from_memory(p, (int)len, &x, &y, &comp) || x <= 0 || y <= 0) return TS_E_CORRUPT;
    if ((uint64_t)x * (uint64_t)y > opt.max_pixels) return TS_E_CORRUPT;
    inf.width = (uint32_t)x;
    inf.height = (uint32_t)y;
    if (info) *info = inf;
    if ((uint32_t)x > TS_WEBP_MAX_DIMENSION || (uint32_t)y > TS_WEBP_MAX_DIMENSION) return TS_E_INVALID;
    rgba = stbi_load_from_memory(p, (int)len, &x, &y, &comp, 4);
    if (!rgba) return TS_E_CORRUPT;
    if ((uint32_t)x != inf.width || (uint32_t)y != inf.height) { stbi_image_free(rgba); return TS_E_CORRUPT; }
    npx = (size_t)x * (size_t)y;
    for (i = 0; i < npx; i++)
        if (rgba[4 * i + 3] != 255) { inf.has_alpha = 1; break; }
    {
        uint64_t t1 = ts__codec_clock_us();
        inf.decode_us = t1 - t0;
        t0 = t1;
    }

    if (!WebPConfigInit(&config) || !WebPPictureInit(&pic)) { stbi_image_free(rgba); return TS_E_NOTIMPL; }
    config.lossless = opt.lossy ? 0 : 1;
    config.quality = opt.quality;
    config.method = opt.method;
    config.exact = opt.lossy ? 0 : 1; /* keep RGB under transparent pixels: truly lossless */
    if (!WebPValidateConfig(&config)) { stbi_image_free(rgba); return TS_E_INVALID; }
    pic.use_argb = config.lossless;
    pic.width = x;
    pic.height = y;
    ts__buf_init(&b, &a);
    pic.writer = ts__webp_writer;
    pic.custom_ptr = &b;
    if (!WebPPictureImportRGBA(&pic, rgba, x * 4)) {
        stbi_image_free(rgba);
        WebPPictureFree(&pic);
        return TS_E_NOMEM;
    }
    ok = WebPEncode(&config, &pic);
    r = ok ? TS_OK : ts__webp_error(pic.error_code);
    WebPPictureFree(&pic);
    inf.encode_us = ts__codec_clock_us() - t0;
    if (r == TS_OK && opt.verify) r = ts__webp_verify(&b, rgba, x, y, config.lossless, &a);
    stbi_image_free(rgba);
    if (r == TS_OK && !b.data) r = TS_E_IO;
    if (r == TS_OK) ts__codec_buf_to_blob(&b, &a, out);
    ts__buf_free(&b);
    if (info) *info = inf;
    return r;
#else
    TS__UNUSED(src); TS__UNUSED(len); TS__UNUSED(opt_in); TS__UNUSED(alloc);
    if (out) memset(out, 0, sizeof *out);
    if (info) memset(info, 0, sizeof *info);
    return TS_E_NOTIMPL;
#endif
}

/* ======================================================================== */
/* >>cas: the content-addressable attachment store                          */
/* ======================================================================== */
/* Owns {dir}/{hh}/{hash}/ (data.bin, metadata.json): object paths, the
   metadata.json codec, the strict base64 decoder for legacy attachments,
   save/load/reference/delete, the incremental mark-and-sweep GC, verify and
   the reference repair. Writes go through a ts__cas_writer so the store can
   route them through its queue; the default writer calls the vtable
   directly and synchronously. */

#ifndef TASKSTORE_MAX_ATTACHMENT_BYTES
#define TASKSTORE_MAX_ATTACHMENT_BYTES ((uint64_t)256 << 20)
#endif
#ifndef TASKSTORE_MAX_CAS_META_BYTES
#define TASKSTORE_MAX_CAS_META_BYTES ((uint64_t)16 << 20)
#endif

#include <stdlib.h> /* qsort */

#define TS__CAS_DEFAULT_DIR "attachments-ca"
#define TS__CAS_DIR_MAX 256
#define TS__CAS_PATH_CAP 640
#define TS__CAS_META_FILE "metadata.json"
#define TS__CAS_RAW_FILE "data.bin"
#define TS__CAS_DEFAULT_MIME "application/octet-stream"

/* Priorities handed to the writer (the queue's critical/normal/low). */
#define TS__CAS_PRIO_NORMAL 1
#define TS__CAS_PRIO_LOW 2

/* ---- base64 (legacy attachments) -----------------------------------------
   Strict RFC 4648: standard alphabet, '=' padding required, canonical
   (zero) trailing bits, nothing but whitespace after the padding. ASCII
   space/tab/CR/LF are skipped anywhere, because legacy exporters wrapped
   lines. A first pass validates and computes the exact output size, so the
   caller allocates once, bounded, before decoding. */

TS__PRIVATE int ts__b64_digit(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

TS__PRIVATE int ts__b64_space(int c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Case-insensitive comparison of n ASCII bytes with a lowercase literal. */
TS__PRIVATE int ts__ascii_ieq(const char *s, const char *lit, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c != (unsigned char)lit[i]) return 0;
    }
    return 1;
}

typedef struct ts__b64_info {
    size_t body;            /* offset of the base64 text (after a data: prefix) */
    size_t out_len;         /* exact decoded size */
    size_t bad_at;          /* offset of the offending byte (on failure) */
    const char *why;        /* what was wrong (on failure) */
    const char *mime;       /* media type of a data: prefix, or NULL */
    size_t mime_len;
} ts__b64_info;

/* Pass 1: validates in[0..n) and measures the output. 1 if valid. */
TS__PRIVATE int ts__base64_check(const char *in, size_t n, ts__b64_info *info)
{
    size_t i, sig = 0, pad = 0;
    int last = 0;
    memset(info, 0, sizeof *info);
    if (n >= 5 && ts__ascii_ieq(in, "data:", 5)) {
        /* a data URL as pasted by browsers: data:<mime>[;param]*;base64, */
        size_t j, k, lim = n < 512 ? n : 512;
        for (j = 5; j < lim && in[j] != ','; j++) {}
        if (j >= lim) { info->bad_at = 0; info->why = "data: prefix without ','"; return 0; }
        if (j < 12 || !ts__ascii_ieq(in + j - 7, ";base64", 7)) {
            info->bad_at = j; info->why = "data: prefix does not end in ;base64";
            return 0;
        }
        for (k = 5; k < j && in[k] != ';'; k++) {}
        info->mime = in + 5;
        info->mime_len = k - 5;
        info->body = j + 1;
    }
    for (i = info->body; i < n; i++) {
        int c = (unsigned char)in[i], v;
        if (ts__b64_space(c)) continue;
        if (c == '=') {
            if (++pad > 2) { info->bad_at = i; info->why = "more than two '='"; return 0; }
            sig++;
            continue;
        }
        if (pad) { info->bad_at = i; info->why = "data after '=' padding"; return 0; }
        v = ts__b64_digit(c);
        if (v < 0) { info->bad_at = i; info->why = "not a base64 character"; return 0; }
        last = v;
        sig++;
    }
    if (sig % 4) { info->bad_at = n; info->why = "length not a multiple of 4 (missing padding?)"; return 0; }
    if ((pad == 1 && (last & 3)) || (pad == 2 && (last & 15))) {
        info->bad_at = n; info->why = "non-zero bits before the padding (not canonical)";
        return 0;
    }
    info->out_len = sig / 4 * 3 - pad;
    return 1;
}

/* Pass 2: decodes text already accepted by ts__base64_check into out
   (info->out_len bytes). */
TS__PRIVATE void ts__base64_decode(const char *in, size_t n, const ts__b64_info *info,
                                   unsigned char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t i, o = 0;
    for (i = info->body; i < n; i++) {
        int v = ts__b64_digit((unsigned char)in[i]);
        if (v < 0) continue; /* whitespace or padding, validated already */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < info->out_len) out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1u;
        }
    }
}

/* ---- names ---------------------------------------------------------------- */

/* Length of s up to max+1 (so a caller can tell "too long" without reading
   an unterminated hostile string past its bound). */
TS__PRIVATE size_t ts__cas_strnlen(const char *s, size_t max)
{
    size_t n = 0;
    while (n <= max && s[n]) n++;
    return n;
}

/* A mime type goes into JSON unescaped, so it is kept to printable ASCII
   without quotes or backslashes. */
TS__PRIVATE int ts__cas_valid_mime(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || n > 127) return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7E || c == '"' || c == '\\') return 0;
    }
    return 1;
}

/* A stored encoding names a file (data.<enc>): [a-z0-9]{1,15}. */
TS__PRIVATE int ts__cas_valid_enc(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || n > 15) return 0;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9'))) return 0;
    return 1;
}

/* ---- the writer ----------------------------------------------------------
   Every change the CA store makes goes through these callbacks. The default
   implementation is the vtable, synchronously. The store can install one
   that routes writes through its queue (ts__cas_set_writer): after_path
   names a write that must be durable before this one (data before the
   metadata naming it), and read_fn must then see pending writes (overlay). */
typedef struct ts__cas_writer {
    void *user;
    ts_result (*write_fn)(void *user, const char *path, const void *data, size_t len,
                          int prio, const char *after_path);
    ts_result (*remove_fn)(void *user, const char *path, int prio);
    ts_result (*read_fn)(void *user, const char *path, void *buf, size_t cap, size_t *size_out);
    ts_result (*stat_fn)(void *user, const char *path, ts_io_stat *out);
    /* atomic rename inside one directory (may be NULL: deletes then remove
       file by file, one directory sync per object) */
    ts_result (*rename_fn)(void *user, const char *from, const char *to);
    /* makes a new object directory durable before files go in (may be NULL) */
    ts_result (*mkdir_fn)(void *user, const char *path);
    /* makes earlier removes inside dir durable before later ones (may be NULL) */
    ts_result (*barrier_fn)(void *user, const char *dir);
} ts__cas_writer;

/* A reference handed to repair; the references of one hash chain through
   next, newest first. */
typedef struct ts__cas_rref {
    size_t next;                /* index + 1 of the next ref of the same hash, 0: end */
    size_t sid_off, aid_off;    /* into repair_strs */
    size_t sid_len, aid_len;
    uint64_t added;
} ts__cas_rref;

/* Walks every object directory: the {hh} directories listed once, then one
   {hh} at a time, names sorted so runs are deterministic. */
typedef struct ts__cas_cursor {
    unsigned char present[32];  /* bit per {hh} directory that exists */
    int prefix;                 /* next {hh} to load, 256 when done */
    char *names;                /* count entries of 65 bytes */
    size_t count, pos, cap;
    ts__buf trash;              /* "<hash>.del" leftovers of the {hh} just loaded */
    int want_trash;
} ts__cas_cursor;

struct ts_cas {
    ts__env env;
    ts_io io;
    ts__cas_writer writer;
    char dir[TS__CAS_DIR_MAX + 1];
    uint64_t grace_ms;          /* 0: no grace */
    uint64_t max_object, max_meta;
    unsigned char *scratch;     /* metadata reads */
    size_t scratch_cap;

    int stats_valid;
    ts_cas_stats stats;

    /* hash -> 1: stored bytes found not to match (load/verify); the next
       save of that content rewrites the data instead of trusting it */
    ts__map suspect;

    int gc_active;
    uint64_t gc_begin_ms;
    ts__map gc_marks, gc_touched;
    ts__cas_cursor gc_cur;
    ts__buf gc_trash;           /* objects renamed away in the current {hh}, not yet emptied */
    ts_cas_gc_progress gc_progress;
    ts_cas_referenced_fn gc_is_ref;
    void *gc_is_ref_user;

    int repair_active;
    ts__map repair_map;         /* hash -> (head index + 1) << 1 | seen */
    ts__buf repair_strs;
    ts__cas_rref *repair_refs;
    size_t repair_count, repair_cap;
};

/* ---- the direct writer ---------------------------------------------------- */

TS__PRIVATE ts_result ts__cas_dw_write(void *user, const char *path, const void *data, size_t len,
                                       int prio, const char *after_path)
{
    ts_cas *cas = (ts_cas *)user;
    TS__UNUSED(prio); TS__UNUSED(after_path); /* synchronous: order is call order */
    if (!cas->io.write_file_atomic_fn) return TS_E_NOTIMPL;
    return cas->io.write_file_atomic_fn(cas->io.user, path, data, len, 0);
}
TS__PRIVATE ts_result ts__cas_dw_remove(void *user, const char *path, int prio)
{
    ts_cas *cas = (ts_cas *)user;
    TS__UNUSED(prio);
    if (!cas->io.remove_fn) return TS_E_NOTIMPL;
    return cas->io.remove_fn(cas->io.user, path);
}
TS__PRIVATE ts_result ts__cas_dw_read(void *user, const char *path, void *buf, size_t cap,
                                      size_t *size_out)
{
    ts_cas *cas = (ts_cas *)user;
    *size_out = 0;
    if (!cas->io.read_file_fn) return TS_E_NOTIMPL;
    return cas->io.read_file_fn(cas->io.user, path, buf, cap, size_out);
}
TS__PRIVATE ts_result ts__cas_dw_stat(void *user, const char *path, ts_io_stat *out)
{
    ts_cas *cas = (ts_cas *)user;
    memset(out, 0, sizeof *out);
    if (!cas->io.stat_fn) return TS_E_NOTIMPL;
    return cas->io.stat_fn(cas->io.user, path, out);
}
TS__PRIVATE ts_result ts__cas_dw_rename(void *user, const char *from, const char *to)
{
    ts_cas *cas = (ts_cas *)user;
    if (!cas->io.rename_fn) return TS_E_NOTIMPL;
    return cas->io.rename_fn(cas->io.user, from, to);
}
TS__PRIVATE ts_result ts__cas_dw_mkdir(void *user, const char *path)
{
    ts_cas *cas = (ts_cas *)user;
    if (!cas->io.mkdir_p_fn) return TS_OK; /* the atomic write creates parents */
    return cas->io.mkdir_p_fn(cas->io.user, path);
}
TS__PRIVATE ts_result ts__cas_dw_barrier(void *user, const char *dir)
{
    ts_cas *cas = (ts_cas *)user;
    if (!cas->io.sync_dir_fn || (cas->io.caps & TS_IO_CAP_NO_DURABILITY)) return TS_OK;
    return cas->io.sync_dir_fn(cas->io.user, dir);
}

TS__PRIVATE void ts__cas_direct_writer(ts_cas *cas, ts__cas_writer *w)
{
    w->user = cas;
    w->write_fn = ts__cas_dw_write;
    w->remove_fn = ts__cas_dw_remove;
    w->read_fn = ts__cas_dw_read;
    w->stat_fn = ts__cas_dw_stat;
    w->rename_fn = ts__cas_dw_rename;
    w->mkdir_fn = ts__cas_dw_mkdir;
    w->barrier_fn = ts__cas_dw_barrier;
}

/* For the store: route writes elsewhere (NULL restores the direct writer). */
TS__PRIVATE void ts__cas_set_writer(ts_cas *cas, const ts__cas_writer *w)
{
    if (w) cas->writer = *w;
    else ts__cas_direct_writer(cas, &cas->writer);
}

/* ---- paths ---------------------------------------------------------------- */

/* "{dir}/{hh}/{hash}" plus "/file" when file is non-NULL. hash is valid. */
TS__PRIVATE void ts__cas_path(const ts_cas *cas, char out[TS__CAS_PATH_CAP], const char *hash,
                              const char *file)
{
    if (file)
        snprintf(out, TS__CAS_PATH_CAP, "%s/%.2s/%.64s/%s", cas->dir, hash, hash, file);
    else
        snprintf(out, TS__CAS_PATH_CAP, "%s/%.2s/%.64s", cas->dir, hash, hash);
}

/* The file holding the content in a given stored encoding. */
TS__PRIVATE void ts__cas_data_name(const char *enc, char out[32])
{
    if (!enc[0] || strcmp(enc, "raw") == 0) snprintf(out, 32, "%s", TS__CAS_RAW_FILE);
    else snprintf(out, 32, "data.%.15s", enc);
}

TS__PRIVATE void ts__cas_hash_hex(const void *data, size_t len, char out[TS_CAS_HASH_BUF])
{
    unsigned char d[32];
    ts_sha256_buffer(data, len, d);
    ts_sha256_hex(d, out);
}

/* ---- metadata ------------------------------------------------------------- */

typedef struct ts__cas_mref {
    const char *sid, *aid;      /* not NUL-terminated; point into a doc or the caller */
    size_t sid_len, aid_len;
    uint64_t added;
} ts__cas_mref;

typedef struct ts__cas_meta {
    char hash[TS_CAS_HASH_BUF];
    char mime[128];
    char enc[16];
    char stored_hash[TS_CAS_HASH_BUF]; /* of the stored bytes; "" when raw */
    uint64_t size, stored_size, ref_count, created, saved;
    ts__cas_mref *refs;
    size_t nrefs, refs_cap;
    const ts_allocator *alloc;
    ts__json_doc doc;           /* holds the strings refs point to */
    int has_doc;
} ts__cas_meta;

TS__PRIVATE void ts__cas_meta_init(ts__cas_meta *m, const ts_allocator *a)
{
    memset(m, 0, sizeof *m);
    m->alloc = a;
}

TS__PRIVATE void ts__cas_meta_free(ts__cas_meta *m)
{
    ts__free(m->alloc, m->refs, m->refs_cap * sizeof(ts__cas_mref));
    m->refs = NULL; m->nrefs = m->refs_cap = 0;
    if (m->has_doc) ts__json_doc_free(&m->doc);
    m->has_doc = 0;
}

TS__PRIVATE ts_result ts__cas_meta_push(ts__cas_meta *m, const ts__cas_mref *r)
{
    if (m->nrefs == m->refs_cap) {
        size_t ncap = m->refs_cap ? m->refs_cap * 2 : 4, bytes;
        ts__cas_mref *p;
        if (!ts__size_mul(ncap, sizeof(ts__cas_mref), &bytes)) return TS_E_NOMEM;
        p = (ts__cas_mref *)ts__realloc(m->alloc, m->refs, m->refs_cap * sizeof(ts__cas_mref), bytes);
        if (!p) return TS_E_NOMEM;
        m->refs = p; m->refs_cap = ncap;
    }
    m->refs[m->nrefs++] = *r;
    return TS_OK;
}

/* Index of the (sid, aid) reference, or (size_t)-1. */
TS__PRIVATE size_t ts__cas_meta_find(const ts__cas_meta *m, const char *sid, size_t sl,
                                     const char *aid, size_t al)
{
    size_t i;
    for (i = 0; i < m->nrefs; i++) {
        const ts__cas_mref *r = &m->refs[i];
        if (r->sid_len == sl && r->aid_len == al && memcmp(r->sid, sid, sl) == 0 &&
            memcmp(r->aid, aid, al) == 0)
            return i;
    }
    return (size_t)-1;
}

/* Reads a non-negative integer member; 0 if missing/wrong (sets *bad). */
TS__PRIVATE uint64_t ts__cas_json_u64(const ts__json *obj, const char *key, int required,
                                      uint64_t dflt, int *bad)
{
    const ts__json *n = ts__json_get(obj, key);
    int64_t v;
    if (!n) { if (required) *bad = 1; return dflt; }
    if (!ts__json_int(n, &v) || v < 0) { *bad = 1; return 0; }
    return (uint64_t)v;
}

/* Copies a string member into out (cap bytes incl. NUL) if it passes
   valid(); 0 on a missing/wrong/invalid member. */
TS__PRIVATE int ts__cas_json_strcpy(const ts__json *obj, const char *key, char *out, size_t cap,
                                    int (*valid)(const char *, size_t))
{
    const ts__json *n = ts__json_get(obj, key);
    const char *s;
    size_t len = 0;
    if (!n) return 0;
    s = ts__json_str(n, &len);
    if (!s || len + 1 > cap || !valid(s, len)) return 0;
    memcpy(out, s, len);
    out[len] = 0;
    return 1;
}

/* Parses metadata.json text (len bytes) of the object `expect`. Every field
   is checked: wrong types, missing fields, bad ids, a hash that is not the
   directory's: TS_E_CORRUPT with the path. */
TS__PRIVATE ts_result ts__cas_meta_parse(ts_cas *cas, ts__cas_meta *m, const char *expect,
                                         const char *path, const char *text, size_t len)
{
    ts__json *root = NULL;
    const ts__json *refs, *e, *n;
    const char *why = NULL;
    int bad = 0;
    ts_result r;

    ts__cas_meta_free(m);
    ts__json_doc_init(&m->doc, m->alloc);
    m->has_doc = 1;
    r = ts__json_parse(&m->doc, text, len, &root, &cas->env, path);
    if (r == TS_E_NOMEM) return r;
    if (r) {
        char msg[sizeof cas->env.last.message];
        memcpy(msg, cas->env.last.message, sizeof msg);
        return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: %s", msg);
    }
    if (!ts__json_is_object(root)) { why = "not a JSON object"; goto corrupt; }
    if (!ts__cas_json_strcpy(root, "hash", m->hash, sizeof m->hash, ts__valid_hash_hex))
        { why = "\"hash\" missing or not a hash"; goto corrupt; }
    if (strcmp(m->hash, expect) != 0) { why = "\"hash\" does not match the directory"; goto corrupt; }
    if (!ts__cas_json_strcpy(root, "mimeType", m->mime, sizeof m->mime, ts__cas_valid_mime))
        { why = "\"mimeType\" missing or invalid"; goto corrupt; }
    m->size = ts__cas_json_u64(root, "size", 1, 0, &bad);
    m->ref_count = ts__cas_json_u64(root, "refCount", 1, 0, &bad);
    m->created = ts__cas_json_u64(root, "createdAt", 1, 0, &bad);
    m->saved = ts__cas_json_u64(root, "savedAt", 0, m->created, &bad);
    if (bad) { why = "size/refCount/createdAt/savedAt missing or not a non-negative integer"; goto corrupt; }
    if (m->size > cas->max_object) { why = "\"size\" over the attachment limit"; goto corrupt; }
    if (ts__json_get(root, "storedEncoding")) {
        if (!ts__cas_json_strcpy(root, "storedEncoding", m->enc, sizeof m->enc, ts__cas_valid_enc))
            { why = "\"storedEncoding\" invalid"; goto corrupt; }
    } else {
        memcpy(m->enc, "raw", 4);
    }
    m->stored_size = ts__cas_json_u64(root, "storedSize", 0, m->size, &bad);
    if (bad || m->stored_size > cas->max_object) { why = "\"storedSize\" invalid"; goto corrupt; }
    if (strcmp(m->enc, "raw") == 0) {
        if (m->stored_size != m->size) { why = "raw \"storedSize\" differs from \"size\""; goto corrupt; }
        m->stored_hash[0] = 0;
    } else if (!ts__cas_json_strcpy(root, "storedHash", m->stored_hash, sizeof m->stored_hash,
                                    ts__valid_hash_hex)) {
        why = "\"storedHash\" missing or invalid for an encoded object";
        goto corrupt;
    }
    refs = ts__json_get(root, "references");
    if (!ts__json_is_array(refs)) { why = "\"references\" missing or not an array"; goto corrupt; }
    for (e = ts__json_first(refs); e; e = e->next) {
        ts__cas_mref mr;
        int64_t v;
        if (!ts__json_is_object(e)) { why = "a reference is not an object"; goto corrupt; }
        mr.sid = ts__json_get_str(e, "sessionId", &mr.sid_len);
        mr.aid = ts__json_get_str(e, "attachmentId", &mr.aid_len);
        if (!mr.sid || !ts__valid_id(mr.sid, mr.sid_len) || !mr.aid ||
            !ts__valid_id(mr.aid, mr.aid_len)) {
            why = "a reference has a missing or invalid sessionId/attachmentId";
            goto corrupt;
        }
        n = ts__json_get(e, "addedAt");
        if (!ts__json_int(n, &v) || v < 0) { why = "a reference has a bad addedAt"; goto corrupt; }
        mr.added = (uint64_t)v;
        if ((r = ts__cas_meta_push(m, &mr)) != TS_OK)
            return TS__FAIL(&cas->env, r, "cas: %s: out of memory", path);
    }
    return TS_OK;
corrupt:
    return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: %s: %s", path, why);
}

/* Serializes m (refCount written as the number of references). All strings
   in it were validated to need no JSON escaping. */
TS__PRIVATE ts_result ts__cas_meta_encode(const ts__cas_meta *m, ts__buf *b)
{
    size_t i;
    ts_result r;
    b->len = 0;
    r = ts__buf_printf(b, "{\"hash\":\"%s\",\"mimeType\":\"%s\",\"size\":%llu,\"refCount\":%llu,"
                          "\"references\":[",
                       m->hash, m->mime, (unsigned long long)m->size, (unsigned long long)m->nrefs);
    for (i = 0; !r && i < m->nrefs; i++) {
        const ts__cas_mref *x = &m->refs[i];
        r = ts__buf_printf(b, "%s{\"sessionId\":\"%.*s\",\"attachmentId\":\"%.*s\",\"addedAt\":%llu}",
                           i ? "," : "", (int)x->sid_len, x->sid, (int)x->aid_len, x->aid,
                           (unsigned long long)x->added);
    }
    if (!r)
        r = ts__buf_printf(b, "],\"createdAt\":%llu,\"savedAt\":%llu,\"storedEncoding\":\"%s\","
                              "\"storedSize\":%llu",
                           (unsigned long long)m->created, (unsigned long long)m->saved, m->enc,
                           (unsigned long long)m->stored_size);
    if (!r && m->stored_hash[0]) r = ts__buf_printf(b, ",\"storedHash\":\"%s\"", m->stored_hash);
    if (!r) r = ts__buf_puts(b, "}\n");
    return r;
}

/* ---- small I/O helpers ---------------------------------------------------- */

TS__PRIVATE ts_result ts__cas_io_fail(ts_cas *cas, ts_result r, const char *what, const char *path)
{
    return TS__FAIL(&cas->env, r, "cas: %s %s: %s", what, path, ts_result_str(r));
}

/* Reads a small file (metadata) into cas->scratch, NUL-terminated, at most
   limit bytes (more: TS_E_TOOBIG). Returns the writer's code otherwise
   (TS_E_NOTFOUND unrecorded: callers decide whether it is an error). */
TS__PRIVATE ts_result ts__cas_read_small(ts_cas *cas, const char *path, uint64_t limit, size_t *len)
{
    size_t size = 0;
    ts_result r;
    *len = 0;
    if (cas->scratch_cap < 4096) {
        unsigned char *p = (unsigned char *)ts__realloc(&cas->env.alloc, cas->scratch,
                                                        cas->scratch_cap, 4096);
        if (!p) return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: reading %s: out of memory", path);
        cas->scratch = p; cas->scratch_cap = 4096;
    }
    r = cas->writer.read_fn(cas->writer.user, path, cas->scratch, cas->scratch_cap - 1, &size);
    if (r == TS_E_RANGE) {
        unsigned char *p;
        if ((uint64_t)size > limit || size >= (size_t)-1 - 1)
            return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: %s: %llu bytes, over the %llu-byte limit",
                            path, (unsigned long long)size, (unsigned long long)limit);
        p = (unsigned char *)ts__realloc(&cas->env.alloc, cas->scratch, cas->scratch_cap, size + 1);
        if (!p) return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: reading %s: out of memory", path);
        cas->scratch = p; cas->scratch_cap = size + 1;
        r = cas->writer.read_fn(cas->writer.user, path, cas->scratch, cas->scratch_cap - 1, &size);
        if (r == TS_E_RANGE) return TS__FAIL(&cas->env, TS_E_IO, "cas: %s changed while read", path);
    }
    if (r == TS_E_NOTFOUND) return r;
    if (r) return ts__cas_io_fail(cas, r, "reading", path);
    if ((uint64_t)size > limit)
        return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: %s: over the %llu-byte limit", path,
                        (unsigned long long)limit);
    cas->scratch[size] = 0;
    *len = size;
    return TS_OK;
}

/* Drops a big scratch buffer after use so an object's metadata is not kept. */
TS__PRIVATE void ts__cas_scratch_trim(ts_cas *cas)
{
    if (cas->scratch_cap > 65536) {
        ts__free(&cas->env.alloc, cas->scratch, cas->scratch_cap);
        cas->scratch = NULL; cas->scratch_cap = 0;
    }
}

/* Loads and parses an object's metadata. TS_E_NOTFOUND is returned quietly
   (no error recorded) when metadata.json does not exist. */
TS__PRIVATE ts_result ts__cas_meta_load(ts_cas *cas, const char *hash, ts__cas_meta *m)
{
    char path[TS__CAS_PATH_CAP];
    size_t len;
    ts_result r;
    ts__cas_path(cas, path, hash, TS__CAS_META_FILE);
    r = ts__cas_read_small(cas, path, cas->max_meta, &len);
    if (r) return r;
    r = ts__cas_meta_parse(cas, m, hash, path, (const char *)cas->scratch, len);
    return r;
}

/* Writes m as the object's metadata.json (after the data file when new). */
TS__PRIVATE ts_result ts__cas_meta_store(ts_cas *cas, const ts__cas_meta *m, const char *after)
{
    char path[TS__CAS_PATH_CAP];
    ts__buf b;
    ts_result r;
    ts__buf_init(&b, &cas->env.alloc);
    ts__cas_path(cas, path, m->hash, TS__CAS_META_FILE);
    r = ts__cas_meta_encode(m, &b);
    if (r) { ts__buf_free(&b); return TS__FAIL(&cas->env, r, "cas: encoding %s: out of memory", path); }
    r = cas->writer.write_fn(cas->writer.user, path, b.data, b.len, TS__CAS_PRIO_NORMAL, after);
    ts__buf_free(&b);
    if (r) return ts__cas_io_fail(cas, r, "writing", path);
    return TS_OK;
}

/* ---- statistics ------------------------------------------------------------ */

typedef struct ts__cas_fig {
    int present;
    uint64_t size, stored, rc;
} ts__cas_fig;

TS__PRIVATE void ts__cas_fig_of(const ts__cas_meta *m, ts__cas_fig *f)
{
    f->present = 1;
    f->size = m->size;
    f->stored = m->stored_size;
    f->rc = m->nrefs;
}

TS__PRIVATE int ts__cas_sub(uint64_t *x, uint64_t v)
{
    if (*x < v) return 0;
    *x -= v;
    return 1;
}

/* Applies an object's change (before -> after) to the running figures; a
   figure that would go negative means they drifted: recompute next time. */
TS__PRIVATE void ts__cas_stats_apply(ts_cas *cas, const ts__cas_fig *before, const ts__cas_fig *after)
{
    ts_cas_stats *s = &cas->stats;
    if (!cas->stats_valid) return;
    if (before && before->present) {
        uint64_t mult = before->rc ? before->rc : 1;
        if (!ts__cas_sub(&s->objects, 1) || !ts__cas_sub(&s->references, before->rc) ||
            (!before->rc && !ts__cas_sub(&s->zero_ref_objects, 1)) ||
            !ts__cas_sub(&s->logical_bytes, before->size * mult) ||
            !ts__cas_sub(&s->unique_bytes, before->size) ||
            !ts__cas_sub(&s->stored_bytes, before->stored)) {
            cas->stats_valid = 0;
            return;
        }
    }
    if (after && after->present) {
        uint64_t mult = after->rc ? after->rc : 1;
        s->objects++;
        s->references += after->rc;
        if (!after->rc) s->zero_ref_objects++;
        s->logical_bytes += after->size * mult;
        s->unique_bytes += after->size;
        s->stored_bytes += after->stored;
    }
}

/* ---- the object cursor ---------------------------------------------------- */

typedef struct ts__cas_list_ctx {
    ts__buf names;              /* 65-byte entries */
    ts__buf *trash;             /* if set, also "<hash>.del" names (65-byte entries) */
    const char *prefix;         /* NULL: listing the root ({hh} entries) */
    unsigned char *present;
    int failed;
} ts__cas_list_ctx;

TS__PRIVATE int ts__cas_list_cb(void *ctx, const char *name, int is_dir)
{
    ts__cas_list_ctx *c = (ts__cas_list_ctx *)ctx;
    size_t n = ts__cas_strnlen(name, 68);
    if (!is_dir) return 0;
    if (!c->prefix) {
        int hi, lo;
        if (n != 2) return 0;
        /* lowercase hex only: other names are not ours */
        if (!((name[0] >= '0' && name[0] <= '9') || (name[0] >= 'a' && name[0] <= 'f')) ||
            !((name[1] >= '0' && name[1] <= '9') || (name[1] >= 'a' && name[1] <= 'f')))
            return 0;
        hi = ts__hex_value((unsigned char)name[0]);
        lo = ts__hex_value((unsigned char)name[1]);
        c->present[(hi << 4 | lo) >> 3] |= (unsigned char)(1u << ((hi << 4 | lo) & 7));
        return 0;
    }
    if (n == 68 && c->trash && memcmp(name + 64, ".del", 4) == 0 && ts__valid_hash_hex(name, 64) &&
        name[0] == c->prefix[0] && name[1] == c->prefix[1]) {
        if (ts__buf_append(c->trash, name, 64) != TS_OK || ts__buf_putc(c->trash, 0) != TS_OK) {
            c->failed = 1;
            return 1;
        }
        return 0;
    }
    if (!ts__valid_hash_hex(name, n) || name[0] != c->prefix[0] || name[1] != c->prefix[1]) return 0;
    if (ts__buf_append(&c->names, name, 65) != TS_OK) { c->failed = 1; return 1; }
    return 0;
}

TS__PRIVATE int ts__cas_name_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 64);
}

TS__PRIVATE void ts__cas_cursor_free(ts_cas *cas, ts__cas_cursor *cur)
{
    ts__free(&cas->env.alloc, cur->names, cur->cap);
    ts__buf_free(&cur->trash);
    memset(cur, 0, sizeof *cur);
    cur->prefix = 256;
}

/* Lists the root once. A missing root is an empty store. */
TS__PRIVATE ts_result ts__cas_cursor_begin(ts_cas *cas, ts__cas_cursor *cur)
{
    ts__cas_list_ctx c;
    ts_result r;
    ts__cas_cursor_free(cas, cur);
    ts__buf_init(&cur->trash, &cas->env.alloc);
    cur->prefix = 0;
    if (!cas->io.list_dir_fn) return TS__FAIL(&cas->env, TS_E_NOTIMPL, "cas: the vtable cannot list directories");
    memset(&c, 0, sizeof c);
    ts__buf_init(&c.names, &cas->env.alloc);
    c.present = cur->present;
    r = cas->io.list_dir_fn(cas->io.user, cas->dir, ts__cas_list_cb, &c);
    ts__buf_free(&c.names);
    if (r == TS_E_NOTFOUND) { memset(cur->present, 0, sizeof cur->present); return TS_OK; }
    if (r) { cur->prefix = 256; return ts__cas_io_fail(cas, r, "listing", cas->dir); }
    return TS_OK;
}

/* Next object directory name into hash; TS_DONE at the end. */
TS__PRIVATE ts_result ts__cas_cursor_next(ts_cas *cas, ts__cas_cursor *cur, char hash[TS_CAS_HASH_BUF])
{
    while (cur->pos >= cur->count) {
        char path[TS__CAS_PATH_CAP], pre[3];
        ts__cas_list_ctx c;
        ts_result r;
        size_t len = 0;
        int p = cur->prefix;
        while (p < 256 && !(cur->present[p >> 3] & (1u << (p & 7)))) p++;
        if (p >= 256) { cur->prefix = 256; return TS_DONE; }
        pre[0] = ts__hex_digits[p >> 4]; pre[1] = ts__hex_digits[p & 15]; pre[2] = 0;
        snprintf(path, sizeof path, "%s/%s", cas->dir, pre);
        memset(&c, 0, sizeof c);
        ts__buf_init(&c.names, &cas->env.alloc);
        c.prefix = pre;
        if (cur->want_trash) {
            cur->trash.len = 0;
            c.trash = &cur->trash;
        }
        r = cas->io.list_dir_fn(cas->io.user, path, ts__cas_list_cb, &c);
        if (c.failed) { ts__buf_free(&c.names); return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: listing %s: out of memory", path); }
        if (r && r != TS_E_NOTFOUND) { ts__buf_free(&c.names); return ts__cas_io_fail(cas, r, "listing", path); }
        cur->prefix = p + 1;
        ts__free(&cas->env.alloc, cur->names, cur->cap);
        cur->names = (char *)ts__buf_take(&c.names, &len, &cur->cap);
        cur->count = (r || !cur->names) ? 0 : len / 65;
        cur->pos = 0;
        if (cur->count > 1) qsort(cur->names, cur->count, 65, ts__cas_name_cmp);
    }
    memcpy(hash, cur->names + cur->pos * 65, 65);
    cur->pos++;
    return TS_OK;
}

TS__PRIVATE void ts__cas_meta_info(const ts__cas_meta *m, ts_cas_info *info)
{
    memset(info, 0, sizeof *info);
    memcpy(info->hash, m->hash, sizeof info->hash);
    memcpy(info->mime_type, m->mime, sizeof info->mime_type);
    memcpy(info->stored_encoding, m->enc, sizeof info->stored_encoding);
    info->size = m->size;
    info->stored_size = m->stored_size;
    info->ref_count = m->ref_count;
    info->created_at_ms = m->created;
    info->saved_at_ms = m->saved;
}

/* Reads the stored content of m into buf (at least m->stored_size bytes)
   and checks it against its hash. *missing = 1 when the file is absent. */
TS__PRIVATE ts_result ts__cas_read_verify(ts_cas *cas, const ts__cas_meta *m, void *buf, int *missing)
{
    char name[32], path[TS__CAS_PATH_CAP], hex[TS_CAS_HASH_BUF];
    size_t got = 0;
    ts_result r;
    *missing = 0;
    ts__cas_data_name(m->enc, name);
    ts__cas_path(cas, path, m->hash, name);
    r = cas->writer.read_fn(cas->writer.user, path, buf, (size_t)m->stored_size, &got);
    if (r == TS_E_NOTFOUND) {
        *missing = 1;
        return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: %s: missing, but its metadata exists", path);
    }
    if (r == TS_E_RANGE || (r == TS_OK && (uint64_t)got != m->stored_size)) {
        (void)ts__map_put(&cas->suspect, m->hash, 64, 1);
        return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: %s: %llu bytes, metadata says %llu", path,
                        (unsigned long long)got, (unsigned long long)m->stored_size);
    }
    if (r) return ts__cas_io_fail(cas, r, "reading", path);
    ts__cas_hash_hex(buf, got, hex);
    if (strcmp(hex, m->stored_hash[0] ? m->stored_hash : m->hash) != 0) {
        (void)ts__map_put(&cas->suspect, m->hash, 64, 1);
        return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: %s: bytes do not hash to their name", path);
    }
    return TS_OK;
}

/* ---- argument checks ------------------------------------------------------ */

TS__PRIVATE ts_result ts__cas_check_hash(ts_cas *cas, const char *hash)
{
    if (!hash || !ts__valid_hash_hex(hash, ts__cas_strnlen(hash, 64)))
        return TS__FAIL(&cas->env, TS_E_INVALID, "cas: not a hash (64 lowercase hex digits)");
    return TS_OK;
}

TS__PRIVATE int ts__cas_id_ok(const char *id)
{
    return id && ts__valid_id(id, ts__cas_strnlen(id, TS__ID_MAX));
}

TS__PRIVATE ts_result ts__cas_check_ref(ts_cas *cas, const ts_cas_ref *ref)
{
    if (!ts__cas_id_ok(ref->session_id) || !ts__cas_id_ok(ref->attachment_id))
        return TS__FAIL(&cas->env, TS_E_INVALID, "cas: invalid session or attachment id "
                                                 "(1-128 bytes of [A-Za-z0-9._-])");
    return TS_OK;
}

/* An object saved or referenced during a GC cycle is not swept by it. */
TS__PRIVATE ts_result ts__cas_touch(ts_cas *cas, const char *hash)
{
    if (!cas->gc_active) return TS_OK;
    if (ts__map_put(&cas->gc_touched, hash, 64, 1) != TS_OK)
        return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: out of memory");
    return TS_OK;
}

/* ---- deleting objects ------------------------------------------------------ */

typedef struct ts__cas_names_ctx {
    ts__buf names;              /* NUL-separated file names */
    int failed;
} ts__cas_names_ctx;

TS__PRIVATE int ts__cas_files_cb(void *ctx, const char *name, int is_dir)
{
    ts__cas_names_ctx *c = (ts__cas_names_ctx *)ctx;
    if (is_dir) return 0;
    if (ts__buf_append(&c->names, name, strlen(name) + 1) != TS_OK) { c->failed = 1; return 1; }
    return 0;
}

/* Lists the files of an object directory into c (empty when it is gone). */
TS__PRIVATE ts_result ts__cas_list_files(ts_cas *cas, const char *dir, ts__cas_names_ctx *c)
{
    ts_result r;
    memset(c, 0, sizeof *c);
    ts__buf_init(&c->names, &cas->env.alloc);
    if (!cas->io.list_dir_fn) return TS__FAIL(&cas->env, TS_E_NOTIMPL, "cas: the vtable cannot list directories");
    r = cas->io.list_dir_fn(cas->io.user, dir, ts__cas_files_cb, c);
    if (c->failed) { ts__buf_free(&c->names); return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: listing %s: out of memory", dir); }
    if (r == TS_E_NOTFOUND) { c->names.len = 0; return TS_OK; }
    if (r) { ts__buf_free(&c->names); return ts__cas_io_fail(cas, r, "listing", dir); }
    return TS_OK;
}

/* Removes every file of a directory and then the directory, with no sync:
   for directories no name points to any more (trash) or best effort. */
TS__PRIVATE ts_result ts__cas_empty_dir(ts_cas *cas, const char *dir, int *removed)
{
    char path[TS__CAS_PATH_CAP];
    ts__cas_names_ctx c;
    size_t off;
    ts_result r;
    if ((r = ts__cas_list_files(cas, dir, &c)) != TS_OK) return r;
    for (off = 0; off < c.names.len; off += strlen((const char *)c.names.data + off) + 1) {
        const char *name = (const char *)c.names.data + off;
        int n = snprintf(path, sizeof path, "%s/%s", dir, name);
        if (n <= 0 || (size_t)n >= sizeof path || !ts__valid_rel_path(path, (size_t)n)) continue;
        r = cas->writer.remove_fn(cas->writer.user, path, TS__CAS_PRIO_LOW);
        if (r == TS_OK) *removed = 1;
        else if (r != TS_E_NOTFOUND) { ts__buf_free(&c.names); return ts__cas_io_fail(cas, r, "removing", path); }
    }
    ts__buf_free(&c.names);
    /* the directory itself: best effort (something foreign may live in it) */
    if (cas->writer.remove_fn(cas->writer.user, dir, TS__CAS_PRIO_LOW) == TS_OK) *removed = 1;
    return TS_OK;
}

/* Deletion without rename: metadata.json first, made durable, so a crash
   leaves the object whole or data without metadata (which GC reclaims),
   never metadata naming missing bytes. One directory sync per object. */
TS__PRIVATE ts_result ts__cas_remove_object(ts_cas *cas, const char *hash, int *removed)
{
    char dir[TS__CAS_PATH_CAP], path[TS__CAS_PATH_CAP];
    ts_result r;
    ts__cas_path(cas, dir, hash, NULL);
    ts__cas_path(cas, path, hash, TS__CAS_META_FILE);
    r = cas->writer.remove_fn(cas->writer.user, path, TS__CAS_PRIO_LOW);
    if (r == TS_OK) {
        *removed = 1;
        if (cas->writer.barrier_fn && (r = cas->writer.barrier_fn(cas->writer.user, dir)) != TS_OK)
            return ts__cas_io_fail(cas, r, "syncing", dir);
    } else if (r != TS_E_NOTFOUND) {
        return ts__cas_io_fail(cas, r, "removing", path);
    }
    return ts__cas_empty_dir(cas, dir, removed);
}

/* "{dir}/{hh}/{hash}.del" */
TS__PRIVATE void ts__cas_trash_path(const ts_cas *cas, char out[TS__CAS_PATH_CAP], const char *hash)
{
    snprintf(out, TS__CAS_PATH_CAP, "%s/%.2s/%.64s.del", cas->dir, hash, hash);
}

/* Empties the trash directories listed in pending (NUL-terminated hashes,
   all of one {hh}) once their renames are durable: one sync of {hh} for
   the whole batch. A failure leaves trash that the next GC removes. */
TS__PRIVATE ts_result ts__cas_trash_flush(ts_cas *cas, ts__buf *pending)
{
    char pre[TS__CAS_PATH_CAP], path[TS__CAS_PATH_CAP];
    size_t off;
    ts_result r = TS_OK;
    if (!pending->len) return TS_OK;
    snprintf(pre, sizeof pre, "%s/%.2s", cas->dir, (const char *)pending->data);
    if (cas->writer.barrier_fn && (r = cas->writer.barrier_fn(cas->writer.user, pre)) != TS_OK) {
        pending->len = 0;
        return ts__cas_io_fail(cas, r, "syncing", pre);
    }
    for (off = 0; r == TS_OK && off < pending->len; off += 65) {
        char file[TS__CAS_PATH_CAP + 32];
        int removed = 0;
        ts__cas_trash_path(cas, path, (const char *)pending->data + off);
        /* the usual two files, then the directory; a listing only when
           something else (a codec's file, a temporary) is left in it */
        snprintf(file, sizeof file, "%s/%s", path, TS__CAS_META_FILE);
        (void)cas->writer.remove_fn(cas->writer.user, file, TS__CAS_PRIO_LOW);
        snprintf(file, sizeof file, "%s/%s", path, TS__CAS_RAW_FILE);
        (void)cas->writer.remove_fn(cas->writer.user, file, TS__CAS_PRIO_LOW);
        if (cas->writer.remove_fn(cas->writer.user, path, TS__CAS_PRIO_LOW) != TS_OK)
            r = ts__cas_empty_dir(cas, path, &removed);
    }
    pending->len = 0;
    return r;
}

/* Takes an object away from its name in one atomic step: its directory is
   renamed to "{hash}.del" (queued in pending, emptied by
   ts__cas_trash_flush after one sync of {hh} for the batch). So the name
   shows the whole object or nothing, whatever a crash keeps. Without a
   rename (or if one fails) it falls back to ts__cas_remove_object.
   *removed = 1 if anything was there. */
TS__PRIVATE ts_result ts__cas_unlink_object(ts_cas *cas, const char *hash, ts__buf *pending,
                                            int *removed)
{
    char dir[TS__CAS_PATH_CAP], trash[TS__CAS_PATH_CAP];
    ts_result r;
    *removed = 0;
    (void)ts__map_del(&cas->suspect, hash, 64);
    if (cas->writer.rename_fn) {
        if (pending->len && memcmp(pending->data, hash, 2) != 0 &&
            (r = ts__cas_trash_flush(cas, pending)) != TS_OK)
            return r;
        ts__cas_path(cas, dir, hash, NULL);
        ts__cas_trash_path(cas, trash, hash);
        r = cas->writer.rename_fn(cas->writer.user, dir, trash);
        if (r == TS_OK) {
            *removed = 1;
            if (ts__buf_append(pending, hash, 64) != TS_OK || ts__buf_putc(pending, 0) != TS_OK)
                return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: out of memory");
            return TS_OK;
        }
        if (r == TS_E_NOTFOUND) return TS_OK;
    }
    return ts__cas_remove_object(cas, hash, removed);
}

/* ---- open / close --------------------------------------------------------- */

TASKSTORE_DEF ts_cas_config ts_cas_config_default(void)
{
    ts_cas_config c;
    memset(&c, 0, sizeof c);
    c.dir = TS__CAS_DEFAULT_DIR;
    c.gc_grace_ms = (int64_t)TS_CAS_DEFAULT_GRACE_MS;
    c.max_object_bytes = TASKSTORE_MAX_ATTACHMENT_BYTES;
    c.max_meta_bytes = TASKSTORE_MAX_CAS_META_BYTES;
    return c;
}

TASKSTORE_DEF ts_result ts_cas_open(const ts_cas_config *cfg, ts_cas **out)
{
    ts_cas *cas;
    const char *dir;
    size_t dl;
    uint64_t size_cap = (uint64_t)((size_t)-1 / 2);
    if (out) *out = NULL;
    if (!cfg || !out || !cfg->io) return TS_E_INVALID;
    dir = cfg->dir ? cfg->dir : TS__CAS_DEFAULT_DIR;
    dl = ts__cas_strnlen(dir, TS__CAS_DIR_MAX);
    if (dl > TS__CAS_DIR_MAX || !ts__valid_rel_path(dir, dl)) return TS_E_INVALID;
    cas = (ts_cas *)ts__calloc(&cfg->allocator, 1, sizeof *cas);
    if (!cas) return TS_E_NOMEM;
    ts__env_init(&cas->env, &cfg->allocator, &cfg->logger);
    cas->io = *cfg->io;
    memcpy(cas->dir, dir, dl);
    cas->dir[dl] = 0;
    if (cfg->gc_grace_ms < 0) cas->grace_ms = 0;
    else if (cfg->gc_grace_ms == 0) cas->grace_ms = TS_CAS_DEFAULT_GRACE_MS;
    else cas->grace_ms = (uint64_t)cfg->gc_grace_ms;
    cas->max_object = cfg->max_object_bytes ? cfg->max_object_bytes : TASKSTORE_MAX_ATTACHMENT_BYTES;
    cas->max_meta = cfg->max_meta_bytes ? cfg->max_meta_bytes : TASKSTORE_MAX_CAS_META_BYTES;
    if (cas->max_object > size_cap) cas->max_object = size_cap;
    if (cas->max_meta > size_cap) cas->max_meta = size_cap;
    ts__map_init(&cas->suspect, &cas->env.alloc);
    ts__map_init(&cas->gc_marks, &cas->env.alloc);
    ts__map_init(&cas->gc_touched, &cas->env.alloc);
    ts__map_init(&cas->repair_map, &cas->env.alloc);
    ts__buf_init(&cas->repair_strs, &cas->env.alloc);
    ts__buf_init(&cas->gc_trash, &cas->env.alloc);
    cas->gc_cur.prefix = 256;
    ts__cas_direct_writer(cas, &cas->writer);
    *out = cas;
    return TS_OK;
}

TS__PRIVATE void ts__cas_gc_reset(ts_cas *cas)
{
    if (cas->gc_trash.len) (void)ts__cas_trash_flush(cas, &cas->gc_trash);
    ts__buf_free(&cas->gc_trash);
    cas->gc_active = 0;
    cas->gc_is_ref = NULL;
    cas->gc_is_ref_user = NULL;
    ts__map_free(&cas->gc_marks);
    ts__map_free(&cas->gc_touched);
    ts__cas_cursor_free(cas, &cas->gc_cur);
}

TS__PRIVATE void ts__cas_repair_reset(ts_cas *cas)
{
    cas->repair_active = 0;
    ts__map_free(&cas->repair_map);
    ts__buf_free(&cas->repair_strs);
    ts__free(&cas->env.alloc, cas->repair_refs, cas->repair_cap * sizeof(ts__cas_rref));
    cas->repair_refs = NULL;
    cas->repair_count = cas->repair_cap = 0;
}

TASKSTORE_DEF void ts_cas_close(ts_cas *cas)
{
    ts_allocator a;
    if (!cas) return;
    ts__cas_gc_reset(cas);
    ts__cas_repair_reset(cas);
    ts__map_free(&cas->suspect);
    ts__free(&cas->env.alloc, cas->scratch, cas->scratch_cap);
    a = cas->env.alloc;
    ts__free(&a, cas, sizeof *cas);
}

TASKSTORE_DEF ts_result ts_cas_last_error(const ts_cas *cas, ts_error_info *out)
{
    return ts__env_last_error(cas ? &cas->env : NULL, out);
}

/* ---- save ----------------------------------------------------------------- */

TS__PRIVATE ts_result ts__cas_save_impl(ts_cas *cas, const void *data, size_t len, const char *mime,
                                        size_t mime_len, const ts_cas_ref *ref, uint64_t now,
                                        char hash_out[TS_CAS_HASH_BUF])
{
    char hash[TS_CAS_HASH_BUF], dpath[TS__CAS_PATH_CAP], name[32];
    ts__cas_meta m;
    ts__cas_fig before, after;
    int exists = 0, write_data = 0, changed = 0;
    ts_result r;

    ts__cas_hash_hex(data, len, hash);
    if ((r = ts__cas_touch(cas, hash)) != TS_OK) return r;
    memset(&before, 0, sizeof before);
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_load(cas, hash, &m);
    if (r == TS_OK) {
        ts_io_stat st;
        exists = 1;
        ts__cas_fig_of(&m, &before);
        before.rc = m.ref_count;
        /* Existing content costs no data write, unless its data file is
           known bad or plainly missing or of the wrong size: then the bytes
           at hand heal it. */
        ts__cas_data_name(m.enc, name);
        ts__cas_path(cas, dpath, hash, name);
        if (ts__map_get(&cas->suspect, hash, 64, NULL)) {
            write_data = 1;
        } else {
            r = cas->writer.stat_fn(cas->writer.user, dpath, &st);
            if (r == TS_E_NOTFOUND || (r == TS_OK && st.size != m.stored_size)) write_data = 1;
            else if (r) { r = ts__cas_io_fail(cas, r, "checking", dpath); goto done; }
        }
        if (write_data) {
            memcpy(m.enc, "raw", 4);
            m.stored_hash[0] = 0;
            m.size = m.stored_size = len;
            changed = 1;
        }
    } else if (r == TS_E_NOTFOUND || r == TS_E_CORRUPT) {
        /* New content, or metadata beyond reading: with the bytes at hand
           the object starts over (references a corrupt file held come back
           with repair). */
        if (r == TS_E_CORRUPT)
            ts__log(&cas->env, TS_LOG_WARN, r, __LINE__, "cas: rewriting unreadable metadata");
        ts__cas_meta_free(&m);
        ts__cas_meta_init(&m, &cas->env.alloc);
        memcpy(m.hash, hash, sizeof m.hash);
        memcpy(m.mime, mime, mime_len);
        m.mime[mime_len] = 0;
        memcpy(m.enc, "raw", 4);
        m.size = m.stored_size = len;
        m.created = now;
        write_data = 1;
        changed = 1;
    } else {
        goto done;
    }
    if (ref) {
        size_t sl = strlen(ref->session_id), al = strlen(ref->attachment_id);
        if (ts__cas_meta_find(&m, ref->session_id, sl, ref->attachment_id, al) == (size_t)-1) {
            ts__cas_mref mr;
            mr.sid = ref->session_id; mr.sid_len = sl;
            mr.aid = ref->attachment_id; mr.aid_len = al;
            mr.added = ref->added_at_ms;
            if ((r = ts__cas_meta_push(&m, &mr)) != TS_OK) {
                r = TS__FAIL(&cas->env, r, "cas: out of memory");
                goto done;
            }
            changed = 1;
        }
    } else {
        changed = 1; /* refresh savedAt: the grace period restarts */
    }
    r = TS_OK;
    if (!changed) goto done;
    m.saved = now;
    if (write_data) {
        char dir[TS__CAS_PATH_CAP];
        ts__cas_path(cas, dpath, hash, TS__CAS_RAW_FILE);
        if (!exists && cas->writer.mkdir_fn) {
            ts__cas_path(cas, dir, hash, NULL);
            r = cas->writer.mkdir_fn(cas->writer.user, dir);
            if (r) { r = ts__cas_io_fail(cas, r, "creating", dir); goto done; }
        }
        r = cas->writer.write_fn(cas->writer.user, dpath, data, len, TS__CAS_PRIO_NORMAL, NULL);
        if (r) { r = ts__cas_io_fail(cas, r, "writing", dpath); goto done; }
        (void)ts__map_del(&cas->suspect, hash, 64);
    }
    r = ts__cas_meta_store(cas, &m, write_data ? dpath : NULL);
    if (r) goto done;
    ts__cas_fig_of(&m, &after);
    ts__cas_stats_apply(cas, exists ? &before : NULL, &after);
done:
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    if (r == TS_OK) memcpy(hash_out, hash, TS_CAS_HASH_BUF);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_save(ts_cas *cas, const void *data, size_t len,
                                    const char *mime_type, const ts_cas_ref *ref,
                                    uint64_t now_ms, char hash_out[TS_CAS_HASH_BUF])
{
    size_t ml;
    ts_result r;
    if (hash_out) hash_out[0] = 0;
    if (!cas) return TS_E_INVALID;
    if (!hash_out || (!data && len)) return TS__FAIL(&cas->env, TS_E_INVALID, "cas: save: NULL argument");
    if ((uint64_t)len > cas->max_object)
        return TS__FAIL(&cas->env, TS_E_TOOBIG, "cas: save: %llu bytes, over the %llu-byte limit",
                        (unsigned long long)len, (unsigned long long)cas->max_object);
    if (!mime_type || !mime_type[0]) mime_type = TS__CAS_DEFAULT_MIME;
    ml = ts__cas_strnlen(mime_type, 127);
    if (!ts__cas_valid_mime(mime_type, ml))
        return TS__FAIL(&cas->env, TS_E_INVALID, "cas: save: invalid mime type");
    if (ref && (r = ts__cas_check_ref(cas, ref)) != TS_OK) return r;
    return ts__cas_save_impl(cas, data, len, mime_type, ml, ref, now_ms, hash_out);
}

TASKSTORE_DEF ts_result ts_cas_import_base64(ts_cas *cas, const char *attachment_id,
                                             const char *b64, size_t b64_len,
                                             const char *mime_type, const ts_cas_ref *ref,
                                             uint64_t now_ms, char hash_out[TS_CAS_HASH_BUF])
{
    ts__b64_info bi;
    unsigned char *buf;
    const char *mime = TS__CAS_DEFAULT_MIME;
    size_t ml;
    ts_result r;
    if (hash_out) hash_out[0] = 0;
    if (!cas) return TS_E_INVALID;
    if (!hash_out || (!b64 && b64_len)) return TS__FAIL(&cas->env, TS_E_INVALID, "cas: import: NULL argument");
    if (!ts__cas_id_ok(attachment_id))
        return TS__FAIL(&cas->env, TS_E_INVALID, "cas: import: invalid attachment id");
    if (ref && (r = ts__cas_check_ref(cas, ref)) != TS_OK) return r;
    if (!ts__base64_check(b64, b64_len, &bi))
        return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: attachment %s: invalid base64 at byte %llu: %s",
                        attachment_id, (unsigned long long)bi.bad_at, bi.why);
    if ((uint64_t)bi.out_len > cas->max_object)
        return TS__FAIL(&cas->env, TS_E_TOOBIG, "cas: attachment %s: %llu bytes, over the %llu-byte limit",
                        attachment_id, (unsigned long long)bi.out_len,
                        (unsigned long long)cas->max_object);
    if (mime_type && mime_type[0]) {
        mime = mime_type;
        ml = ts__cas_strnlen(mime, 127);
        if (!ts__cas_valid_mime(mime, ml))
            return TS__FAIL(&cas->env, TS_E_INVALID, "cas: attachment %s: invalid mime type", attachment_id);
    } else if (bi.mime_len) {
        mime = bi.mime;
        ml = bi.mime_len;
        if (!ts__cas_valid_mime(mime, ml))
            return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: attachment %s: invalid media type in the data: prefix",
                            attachment_id);
    } else {
        ml = strlen(mime);
    }
    buf = (unsigned char *)ts__alloc(&cas->env.alloc, bi.out_len);
    if (!buf) return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: attachment %s: out of memory", attachment_id);
    ts__base64_decode(b64, b64_len, &bi, buf);
    r = ts__cas_save_impl(cas, buf, bi.out_len, mime, ml, ref, now_ms, hash_out);
    ts__free(&cas->env.alloc, buf, bi.out_len);
    return r;
}

/* ---- queries and load ----------------------------------------------------- */

/* Loads metadata of a public call's object; a missing object is recorded. */
TS__PRIVATE ts_result ts__cas_meta_need(ts_cas *cas, const char *hash, ts__cas_meta *m)
{
    ts_result r = ts__cas_meta_load(cas, hash, m);
    if (r == TS_E_NOTFOUND) return TS__FAIL(&cas->env, r, "cas: no object %.64s", hash);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_exists(ts_cas *cas, const char *hash, int *exists)
{
    char path[TS__CAS_PATH_CAP];
    ts_io_stat st;
    ts_result r;
    if (exists) *exists = 0;
    if (!cas || !exists) return TS_E_INVALID;
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    ts__cas_path(cas, path, hash, TS__CAS_META_FILE);
    r = cas->writer.stat_fn(cas->writer.user, path, &st);
    if (r == TS_E_NOTFOUND) return TS_OK;
    if (r) return ts__cas_io_fail(cas, r, "checking", path);
    *exists = !st.is_dir;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_cas_stat(ts_cas *cas, const char *hash, ts_cas_info *info)
{
    ts__cas_meta m;
    ts_result r;
    if (info) memset(info, 0, sizeof *info);
    if (!cas || !info) return TS_E_INVALID;
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_need(cas, hash, &m);
    if (!r) ts__cas_meta_info(&m, info);
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_load_into(ts_cas *cas, const char *hash, void *buf, size_t cap,
                                         size_t *size_out, ts_cas_info *info)
{
    ts__cas_meta m;
    ts_result r;
    int missing;
    if (size_out) *size_out = 0;
    if (info) memset(info, 0, sizeof *info);
    if (!cas) return TS_E_INVALID;
    if (!size_out || (!buf && cap)) return TS__FAIL(&cas->env, TS_E_INVALID, "cas: load: NULL argument");
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_need(cas, hash, &m);
    if (r) goto done;
    *size_out = (size_t)m.stored_size;
    if (info) ts__cas_meta_info(&m, info);
    if (m.stored_size > (uint64_t)cap) {
        r = TS__FAIL(&cas->env, TS_E_RANGE, "cas: load: %llu bytes do not fit in %llu",
                     (unsigned long long)m.stored_size, (unsigned long long)cap);
        goto done;
    }
    r = ts__cas_read_verify(cas, &m, buf, &missing);
done:
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_load(ts_cas *cas, const char *hash, struct ts_blob *out,
                                    ts_cas_info *info)
{
    ts__cas_meta m;
    unsigned char *p = NULL;
    size_t cap = 0;
    int missing;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (info) memset(info, 0, sizeof *info);
    if (!cas) return TS_E_INVALID;
    if (!out) return TS__FAIL(&cas->env, TS_E_INVALID, "cas: load: NULL argument");
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_need(cas, hash, &m);
    if (r) goto done;
    cap = (size_t)m.stored_size + 1; /* the parse bounded stored_size */
    p = (unsigned char *)ts__alloc(&cas->env.alloc, cap);
    if (!p) { r = TS__FAIL(&cas->env, TS_E_NOMEM, "cas: load %.64s: out of memory", hash); goto done; }
    r = ts__cas_read_verify(cas, &m, p, &missing);
    if (r) goto done;
    p[m.stored_size] = 0;
    out->data = p;
    out->len = (size_t)m.stored_size;
    out->cap = cap;
    out->alloc = cas->env.alloc;
    p = NULL;
    if (info) ts__cas_meta_info(&m, info);
done:
    ts__free(&cas->env.alloc, p, cap);
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_delete(ts_cas *cas, const char *hash, unsigned flags)
{
    ts__cas_meta m;
    ts__cas_fig before;
    int removed = 0;
    ts_result r, lr;
    if (!cas) return TS_E_INVALID;
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    memset(&before, 0, sizeof before);
    ts__cas_meta_init(&m, &cas->env.alloc);
    lr = ts__cas_meta_load(cas, hash, &m);
    if (lr == TS_OK) {
        ts__cas_fig_of(&m, &before);
        before.rc = m.ref_count;
        if ((m.nrefs || m.ref_count) && !(flags & TS_CAS_DELETE_FORCE)) {
            r = TS__FAIL(&cas->env, TS_E_STATE, "cas: %.64s has %llu references (use TS_CAS_DELETE_FORCE)",
                         hash, (unsigned long long)m.nrefs);
            goto done;
        }
    } else if (lr == TS_E_CORRUPT) {
        if (!(flags & TS_CAS_DELETE_FORCE)) { r = lr; goto done; }
    } else if (lr != TS_E_NOTFOUND) {
        r = lr;
        goto done;
    }
    {
        ts__buf pending;
        ts__buf_init(&pending, &cas->env.alloc);
        r = ts__cas_unlink_object(cas, hash, &pending, &removed);
        if (r == TS_OK) r = ts__cas_trash_flush(cas, &pending);
        ts__buf_free(&pending);
    }
    if (removed && lr == TS_OK) ts__cas_stats_apply(cas, &before, NULL);
    if (r) goto done;
    if (!removed) r = TS__FAIL(&cas->env, TS_E_NOTFOUND, "cas: no object %.64s", hash);
done:
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

/* For the store: loads an object's stored bytes, verified, into out
   (replacing its contents; NUL-terminated). Same codes as ts_cas_load. */
TS__PRIVATE ts_result ts__cas_load_buf(ts_cas *cas, const char *hash, ts__buf *out, ts_cas_info *info)
{
    ts__cas_meta m;
    int missing;
    ts_result r;
    out->len = 0;
    if (info) memset(info, 0, sizeof *info);
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_need(cas, hash, &m);
    if (r == TS_OK && ts__buf_reserve(out, (size_t)m.stored_size) != TS_OK)
        r = TS__FAIL(&cas->env, TS_E_NOMEM, "cas: load %.64s: out of memory", hash);
    if (r == TS_OK) r = ts__cas_read_verify(cas, &m, out->data, &missing);
    if (r == TS_OK) {
        out->len = (size_t)m.stored_size;
        out->data[out->len] = 0;
        if (info) ts__cas_meta_info(&m, info);
    }
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

/* ---- references ------------------------------------------------------------- */

TASKSTORE_DEF ts_result ts_cas_ref_add(ts_cas *cas, const char *hash, const ts_cas_ref *ref)
{
    ts__cas_meta m;
    ts__cas_fig before, after;
    ts__cas_mref mr;
    ts_result r;
    if (!cas) return TS_E_INVALID;
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    if (!ref) return TS__FAIL(&cas->env, TS_E_INVALID, "cas: ref_add: NULL reference");
    if ((r = ts__cas_check_ref(cas, ref)) != TS_OK) return r;
    if ((r = ts__cas_touch(cas, hash)) != TS_OK) return r;
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_need(cas, hash, &m);
    if (r) goto done;
    mr.sid = ref->session_id; mr.sid_len = strlen(ref->session_id);
    mr.aid = ref->attachment_id; mr.aid_len = strlen(ref->attachment_id);
    mr.added = ref->added_at_ms;
    if (ts__cas_meta_find(&m, mr.sid, mr.sid_len, mr.aid, mr.aid_len) != (size_t)-1 &&
        m.ref_count == m.nrefs)
        goto done; /* already there: nothing to write */
    ts__cas_fig_of(&m, &before);
    before.rc = m.ref_count;
    if (ts__cas_meta_find(&m, mr.sid, mr.sid_len, mr.aid, mr.aid_len) == (size_t)-1 &&
        (r = ts__cas_meta_push(&m, &mr)) != TS_OK) {
        r = TS__FAIL(&cas->env, r, "cas: out of memory");
        goto done;
    }
    if ((r = ts__cas_meta_store(cas, &m, NULL)) != TS_OK) goto done;
    ts__cas_fig_of(&m, &after);
    ts__cas_stats_apply(cas, &before, &after);
done:
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_ref_remove(ts_cas *cas, const char *hash, const char *session_id,
                                          const char *attachment_id)
{
    ts__cas_meta m;
    ts__cas_fig before, after;
    size_t i, sl, al;
    ts_result r;
    if (!cas) return TS_E_INVALID;
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    if (!ts__cas_id_ok(session_id) || !ts__cas_id_ok(attachment_id))
        return TS__FAIL(&cas->env, TS_E_INVALID, "cas: ref_remove: invalid session or attachment id");
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_need(cas, hash, &m);
    if (r) goto done;
    sl = strlen(session_id);
    al = strlen(attachment_id);
    i = ts__cas_meta_find(&m, session_id, sl, attachment_id, al);
    if (i == (size_t)-1) {
        r = TS__FAIL(&cas->env, TS_E_NOTFOUND, "cas: %.64s has no reference %s/%s", hash,
                     session_id, attachment_id);
        goto done;
    }
    ts__cas_fig_of(&m, &before);
    before.rc = m.ref_count;
    memmove(&m.refs[i], &m.refs[i + 1], (m.nrefs - i - 1) * sizeof(ts__cas_mref));
    m.nrefs--;
    if ((r = ts__cas_meta_store(cas, &m, NULL)) != TS_OK) goto done;
    ts__cas_fig_of(&m, &after);
    ts__cas_stats_apply(cas, &before, &after);
done:
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_ref_count(ts_cas *cas, const char *hash, uint64_t *count)
{
    ts__cas_meta m;
    ts_result r;
    if (count) *count = 0;
    if (!cas || !count) return TS_E_INVALID;
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_need(cas, hash, &m);
    if (!r) *count = m.ref_count;
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_refs(ts_cas *cas, const char *hash, ts_cas_ref_fn fn, void *user)
{
    ts__cas_meta m;
    size_t i;
    ts_result r;
    if (!cas) return TS_E_INVALID;
    if (!fn) return TS__FAIL(&cas->env, TS_E_INVALID, "cas: refs: NULL callback");
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_need(cas, hash, &m);
    for (i = 0; !r && i < m.nrefs; i++) {
        char sid[TS__ID_MAX + 1], aid[TS__ID_MAX + 1];
        ts_cas_ref ref;
        memcpy(sid, m.refs[i].sid, m.refs[i].sid_len); sid[m.refs[i].sid_len] = 0;
        memcpy(aid, m.refs[i].aid, m.refs[i].aid_len); aid[m.refs[i].aid_len] = 0;
        ref.session_id = sid;
        ref.attachment_id = aid;
        ref.added_at_ms = m.refs[i].added;
        if (fn(user, &ref)) break;
    }
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_foreach(ts_cas *cas, ts_cas_hash_fn fn, void *user)
{
    ts__cas_cursor cur;
    char hash[TS_CAS_HASH_BUF], path[TS__CAS_PATH_CAP];
    ts_result r;
    if (!cas) return TS_E_INVALID;
    if (!fn) return TS__FAIL(&cas->env, TS_E_INVALID, "cas: foreach: NULL callback");
    memset(&cur, 0, sizeof cur);
    r = ts__cas_cursor_begin(cas, &cur);
    while (r == TS_OK && (r = ts__cas_cursor_next(cas, &cur, hash)) == TS_OK) {
        ts_io_stat st;
        ts__cas_path(cas, path, hash, TS__CAS_META_FILE);
        r = cas->writer.stat_fn(cas->writer.user, path, &st);
        if (r == TS_E_NOTFOUND) { r = TS_OK; continue; }
        if (r) { r = ts__cas_io_fail(cas, r, "checking", path); break; }
        if (fn(user, hash)) break;
    }
    ts__cas_cursor_free(cas, &cur);
    return r == TS_DONE ? TS_OK : r;
}

/* ---- statistics ------------------------------------------------------------- */

TASKSTORE_DEF ts_result ts_cas_stats_get(ts_cas *cas, int rescan, ts_cas_stats *out)
{
    ts_cas_stats *s;
    if (out) memset(out, 0, sizeof *out);
    if (!cas || !out) return TS_E_INVALID;
    s = &cas->stats;
    if (rescan || !cas->stats_valid) {
        ts__cas_cursor cur;
        char hash[TS_CAS_HASH_BUF];
        ts_result r;
        memset(&cur, 0, sizeof cur);
        memset(s, 0, sizeof *s);
        cas->stats_valid = 1;
        r = ts__cas_cursor_begin(cas, &cur);
        while (r == TS_OK && (r = ts__cas_cursor_next(cas, &cur, hash)) == TS_OK) {
            ts__cas_meta m;
            ts__cas_fig f;
            ts__cas_meta_init(&m, &cas->env.alloc);
            r = ts__cas_meta_load(cas, hash, &m);
            if (r == TS_OK) {
                ts__cas_fig_of(&m, &f);
                f.rc = m.ref_count;
                ts__cas_stats_apply(cas, NULL, &f);
            } else if (r == TS_E_NOTFOUND || r == TS_E_CORRUPT) {
                r = TS_OK; /* not an object (verify reports it) */
            }
            ts__cas_meta_free(&m);
        }
        ts__cas_cursor_free(cas, &cur);
        ts__cas_scratch_trim(cas);
        if (r != TS_DONE) { cas->stats_valid = 0; return r; }
    }
    *out = *s;
    out->dedup_saved_bytes = s->logical_bytes - s->unique_bytes;
    out->dedup_saved_percent = s->logical_bytes
        ? 100.0 * (double)out->dedup_saved_bytes / (double)s->logical_bytes : 0.0;
    return TS_OK;
}

/* ---- garbage collection ------------------------------------------------------ */

TASKSTORE_DEF ts_result ts_cas_gc_begin(ts_cas *cas, uint64_t now_ms)
{
    ts_result r;
    if (!cas) return TS_E_INVALID;
    if (cas->repair_active) return TS__FAIL(&cas->env, TS_E_STATE, "cas: gc_begin during a repair");
    ts__cas_gc_reset(cas);
    memset(&cas->gc_progress, 0, sizeof cas->gc_progress);
    if ((r = ts__cas_cursor_begin(cas, &cas->gc_cur)) != TS_OK) return r;
    cas->gc_cur.want_trash = 1;
    ts__buf_init(&cas->gc_trash, &cas->env.alloc);
    cas->gc_active = 1;
    cas->gc_begin_ms = now_ms;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_cas_gc_mark(ts_cas *cas, const char *hash)
{
    ts_result r;
    if (!cas) return TS_E_INVALID;
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    if (!cas->gc_active) return TS__FAIL(&cas->env, TS_E_STATE, "cas: gc_mark without gc_begin");
    if (ts__map_put(&cas->gc_marks, hash, 64, 1) != TS_OK)
        return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: gc_mark: out of memory");
    return TS_OK;
}

/* Sweeps one object (see ts_cas_gc_step for the rules). */
TS__PRIVATE ts_result ts__cas_gc_one(ts_cas *cas, const char *hash, uint64_t now)
{
    ts_cas_gc_progress *p = &cas->gc_progress;
    ts__cas_meta m;
    ts__cas_fig before;
    uint64_t bytes = 0;
    int removed = 0;
    ts_result r, lr;
    if (ts__map_get(&cas->gc_marks, hash, 64, NULL) || ts__map_get(&cas->gc_touched, hash, 64, NULL)) {
        p->kept_referenced++;
        return TS_OK;
    }
    memset(&before, 0, sizeof before);
    ts__cas_meta_init(&m, &cas->env.alloc);
    lr = ts__cas_meta_load(cas, hash, &m);
    if (lr == TS_E_CORRUPT) { p->kept_unreadable++; r = TS_OK; goto done; }
    if (lr == TS_OK) {
        uint64_t stamp = m.saved > m.created ? m.saved : m.created;
        if (stamp > cas->gc_begin_ms ||
            (cas->grace_ms && (now < stamp || now - stamp < cas->grace_ms))) {
            p->kept_grace++;
            r = TS_OK;
            goto done;
        }
        ts__cas_fig_of(&m, &before);
        before.rc = m.ref_count;
        bytes = m.stored_size;
    } else if (lr != TS_E_NOTFOUND) {
        r = lr;
        goto done;
    }
    if (cas->gc_is_ref && cas->gc_is_ref(cas->gc_is_ref_user, hash)) {
        p->kept_referenced++;
        r = TS_OK;
        goto done;
    }
    if (lr == TS_E_NOTFOUND) {
        /* data without metadata: an interrupted save, never acknowledged */
        char path[TS__CAS_PATH_CAP];
        ts_io_stat st;
        ts__cas_path(cas, path, hash, TS__CAS_RAW_FILE);
        if (cas->writer.stat_fn(cas->writer.user, path, &st) == TS_OK) bytes = st.size;
    }
    r = ts__cas_unlink_object(cas, hash, &cas->gc_trash, &removed);
    if (r) goto done;
    if (lr == TS_OK) ts__cas_stats_apply(cas, &before, NULL);
    if (removed) {
        p->objects_freed++;
        p->bytes_freed += bytes;
    }
done:
    ts__cas_meta_free(&m);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_gc_step(ts_cas *cas, uint64_t now_ms, uint32_t max_objects,
                                       ts_cas_progress_fn progress, void *user)
{
    uint32_t done = 0;
    ts_result r = TS_OK;
    if (!cas) return TS_E_INVALID;
    if (!cas->gc_active) return TS__FAIL(&cas->env, TS_E_STATE, "cas: gc_step without gc_begin");
    while (max_objects == 0 || done < max_objects) {
        char hash[TS_CAS_HASH_BUF];
        r = ts__cas_cursor_next(cas, &cas->gc_cur, hash);
        if (r == TS_DONE) break;
        if (r) break; /* the listing is retried by the next step */
        if (cas->gc_cur.trash.len) {
            /* leftovers of an interrupted GC in this {hh}: empty them now */
            ts__buf stale = cas->gc_cur.trash;
            ts__buf_init(&cas->gc_cur.trash, &cas->env.alloc);
            r = ts__cas_trash_flush(cas, &stale);
            ts__buf_free(&stale);
            if (r) { cas->gc_cur.pos--; break; }
        }
        cas->gc_progress.objects_scanned++;
        r = ts__cas_gc_one(cas, hash, now_ms);
        if (r) {
            /* retried by the next step (ts_cas_gc_abort gives up) */
            cas->gc_progress.objects_scanned--;
            cas->gc_cur.pos--;
            break;
        }
        done++;
        if (progress && (done & 255) == 0) progress(user, &cas->gc_progress);
    }
    if (r >= 0) {
        ts_result fr = ts__cas_trash_flush(cas, &cas->gc_trash);
        if (fr) r = fr;
    }
    ts__cas_scratch_trim(cas);
    if (r == TS_DONE) {
        ts_cas_gc_progress fin = cas->gc_progress;
        fin.done = 1;
        ts__cas_gc_reset(cas);
        cas->gc_progress = fin;
    }
    if (progress && r >= 0) progress(user, &cas->gc_progress);
    return r;
}

TASKSTORE_DEF void ts_cas_gc_abort(ts_cas *cas)
{
    if (cas) ts__cas_gc_reset(cas);
}

TASKSTORE_DEF ts_result ts_cas_gc_status(const ts_cas *cas, ts_cas_gc_progress *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!cas || !out) return TS_E_INVALID;
    *out = cas->gc_progress;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_cas_gc(ts_cas *cas, uint64_t now_ms,
                                  ts_cas_referenced_fn is_referenced, void *ref_user,
                                  ts_cas_progress_fn progress, void *progress_user,
                                  ts_cas_gc_progress *out)
{
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!cas) return TS_E_INVALID;
    if (!is_referenced)
        return TS__FAIL(&cas->env, TS_E_INVALID, "cas: gc needs an is_referenced callback");
    if ((r = ts_cas_gc_begin(cas, now_ms)) != TS_OK) return r;
    cas->gc_is_ref = is_referenced;
    cas->gc_is_ref_user = ref_user;
    r = ts_cas_gc_step(cas, now_ms, 0, progress, progress_user);
    if (out) *out = cas->gc_progress;
    if (r == TS_DONE) return TS_OK;
    ts__cas_gc_reset(cas);
    return r;
}

/* ---- verification ------------------------------------------------------------ */

TS__PRIVATE void ts__cas_problem(ts_cas *cas, ts_cas_problem_fn fn, void *user, const char *hash,
                                 ts_result code)
{
    if (fn) fn(user, hash, code, cas->env.last.message);
}

/* Reads and checks the raw data file of hash without metadata (repair of
   lost metadata). *size_out: its size. TS_E_NOTFOUND, TS_E_CORRUPT or OK. */
TS__PRIVATE ts_result ts__cas_check_raw(ts_cas *cas, const char *hash, uint64_t *size_out)
{
    char path[TS__CAS_PATH_CAP], hex[TS_CAS_HASH_BUF];
    ts_io_stat st;
    unsigned char *buf;
    size_t got = 0;
    ts_result r;
    *size_out = 0;
    ts__cas_path(cas, path, hash, TS__CAS_RAW_FILE);
    r = cas->writer.stat_fn(cas->writer.user, path, &st);
    if (r == TS_E_NOTFOUND) return r;
    if (r) return ts__cas_io_fail(cas, r, "checking", path);
    if (st.size > cas->max_object)
        return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: %s: over the attachment size limit", path);
    buf = (unsigned char *)ts__alloc(&cas->env.alloc, (size_t)st.size);
    if (!buf) return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: reading %s: out of memory", path);
    r = cas->writer.read_fn(cas->writer.user, path, buf, (size_t)st.size, &got);
    if (r == TS_OK && (uint64_t)got == st.size) {
        ts__cas_hash_hex(buf, got, hex);
        r = strcmp(hex, hash) == 0 ? TS_OK
            : TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: %s: bytes do not hash to their name", path);
    } else if (r == TS_OK || r == TS_E_RANGE) {
        r = TS__FAIL(&cas->env, TS_E_IO, "cas: %s changed while read", path);
    } else if (r != TS_E_NOTFOUND) {
        r = ts__cas_io_fail(cas, r, "reading", path);
    }
    ts__free(&cas->env.alloc, buf, (size_t)st.size);
    *size_out = st.size;
    return r;
}

/* Checks one object, counting what it finds into rep. Returns TS_OK,
   TS_DONE (orphan data: not a problem), TS_E_NOTFOUND (nothing there),
   TS_E_CORRUPT (reported), or another failure. */
TS__PRIVATE ts_result ts__cas_verify_one(ts_cas *cas, const char *hash, ts_cas_verify_report *rep,
                                         ts_cas_problem_fn fn, void *user)
{
    ts__cas_meta m;
    unsigned char *buf = NULL;
    size_t cap = 0;
    int missing = 0;
    ts_result r;
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_load(cas, hash, &m);
    if (r == TS_E_NOTFOUND) {
        char path[TS__CAS_PATH_CAP];
        ts_io_stat st;
        ts__cas_path(cas, path, hash, TS__CAS_RAW_FILE);
        r = cas->writer.stat_fn(cas->writer.user, path, &st);
        if (r == TS_OK) { rep->orphan_data++; r = TS_DONE; }
        else if (r != TS_E_NOTFOUND) r = ts__cas_io_fail(cas, r, "checking", path);
        goto done;
    }
    if (r == TS_E_CORRUPT) {
        rep->bad_metadata++;
        ts__cas_problem(cas, fn, user, hash, r);
        goto done;
    }
    if (r) goto done;
    cap = (size_t)m.stored_size + 1;
    buf = (unsigned char *)ts__alloc(&cas->env.alloc, cap);
    if (!buf) { r = TS__FAIL(&cas->env, TS_E_NOMEM, "cas: verify: out of memory"); goto done; }
    r = ts__cas_read_verify(cas, &m, buf, &missing);
    if (r == TS_E_CORRUPT) {
        if (missing) rep->missing_data++;
        else rep->corrupt++;
        ts__cas_problem(cas, fn, user, hash, r);
    } else if (r == TS_OK) {
        rep->bytes_hashed += m.stored_size;
    }
done:
    ts__free(&cas->env.alloc, buf, cap);
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_verify(ts_cas *cas, const char *hash)
{
    ts_cas_verify_report rep;
    ts_result r;
    if (!cas) return TS_E_INVALID;
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    memset(&rep, 0, sizeof rep);
    r = ts__cas_verify_one(cas, hash, &rep, NULL, NULL);
    if (r == TS_DONE || r == TS_E_NOTFOUND)
        return TS__FAIL(&cas->env, TS_E_NOTFOUND, "cas: no object %.64s", hash);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_verify_all(ts_cas *cas, ts_cas_problem_fn problem, void *user,
                                          ts_cas_verify_report *out)
{
    ts_cas_verify_report rep;
    ts__cas_cursor cur;
    char hash[TS_CAS_HASH_BUF];
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!cas) return TS_E_INVALID;
    memset(&rep, 0, sizeof rep);
    memset(&cur, 0, sizeof cur);
    r = ts__cas_cursor_begin(cas, &cur);
    while (r == TS_OK && (r = ts__cas_cursor_next(cas, &cur, hash)) == TS_OK) {
        rep.objects++;
        r = ts__cas_verify_one(cas, hash, &rep, problem, user);
        if (r == TS_DONE || r == TS_E_NOTFOUND || r == TS_E_CORRUPT) r = TS_OK;
    }
    ts__cas_cursor_free(cas, &cur);
    if (out) *out = rep;
    if (r != TS_DONE) return r;
    if (rep.corrupt || rep.bad_metadata || rep.missing_data)
        return TS__FAIL(&cas->env, TS_E_CORRUPT, "cas: verify: %llu corrupt, %llu bad metadata, "
                        "%llu missing data", (unsigned long long)rep.corrupt,
                        (unsigned long long)rep.bad_metadata, (unsigned long long)rep.missing_data);
    return TS_OK;
}

/* ---- repair -------------------------------------------------------------------- */

TASKSTORE_DEF ts_result ts_cas_repair_begin(ts_cas *cas)
{
    if (!cas) return TS_E_INVALID;
    if (cas->gc_active) return TS__FAIL(&cas->env, TS_E_STATE, "cas: repair during a GC cycle");
    ts__cas_repair_reset(cas);
    cas->repair_active = 1;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_cas_repair_add(ts_cas *cas, const char *hash, const ts_cas_ref *ref)
{
    ts__cas_rref *e;
    uint64_t head = 0;
    size_t sl, al;
    ts_result r;
    if (!cas) return TS_E_INVALID;
    if ((r = ts__cas_check_hash(cas, hash)) != TS_OK) return r;
    if (!ref) return TS__FAIL(&cas->env, TS_E_INVALID, "cas: repair_add: NULL reference");
    if ((r = ts__cas_check_ref(cas, ref)) != TS_OK) return r;
    if (!cas->repair_active) return TS__FAIL(&cas->env, TS_E_STATE, "cas: repair_add without repair_begin");
    if (cas->repair_count == cas->repair_cap) {
        size_t ncap = cas->repair_cap ? cas->repair_cap * 2 : 64, bytes;
        ts__cas_rref *p;
        if (!ts__size_mul(ncap, sizeof(ts__cas_rref), &bytes)) return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: repair: too many references");
        p = (ts__cas_rref *)ts__realloc(&cas->env.alloc, cas->repair_refs,
                                        cas->repair_cap * sizeof(ts__cas_rref), bytes);
        if (!p) return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: repair: out of memory");
        cas->repair_refs = p;
        cas->repair_cap = ncap;
    }
    sl = strlen(ref->session_id);
    al = strlen(ref->attachment_id);
    e = &cas->repair_refs[cas->repair_count];
    e->sid_off = cas->repair_strs.len;
    e->sid_len = sl;
    e->aid_off = cas->repair_strs.len + sl;
    e->aid_len = al;
    e->added = ref->added_at_ms;
    (void)ts__map_get(&cas->repair_map, hash, 64, &head);
    e->next = (size_t)(head >> 1);
    if (ts__buf_append(&cas->repair_strs, ref->session_id, sl) != TS_OK ||
        ts__buf_append(&cas->repair_strs, ref->attachment_id, al) != TS_OK ||
        ts__map_put(&cas->repair_map, hash, 64, (uint64_t)(cas->repair_count + 1) << 1) != TS_OK)
        return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: repair: out of memory");
    cas->repair_count++;
    return TS_OK;
}

TS__PRIVATE int ts__cas_mref_cmp(const void *a, const void *b)
{
    const ts__cas_mref *x = (const ts__cas_mref *)a, *y = (const ts__cas_mref *)b;
    int c = ts__memcmp_len(x->sid, x->sid_len, y->sid, y->sid_len);
    return c ? c : ts__memcmp_len(x->aid, x->aid_len, y->aid, y->aid_len);
}

/* The references sessions hold for hash, sorted, one per pair, into *want
   (allocated; *n entries). Marks the hash as seen. */
TS__PRIVATE ts_result ts__cas_repair_wanted(ts_cas *cas, const char *hash, ts__cas_mref **want,
                                            size_t *n, size_t *cap)
{
    uint64_t v = 0;
    size_t i, k, count = 0;
    ts__cas_mref *w;
    *want = NULL; *n = 0; *cap = 0;
    if (!ts__map_get(&cas->repair_map, hash, 64, &v)) return TS_OK;
    if (ts__map_put(&cas->repair_map, hash, 64, v | 1) != TS_OK)
        return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: repair: out of memory");
    for (i = (size_t)(v >> 1); i; i = cas->repair_refs[i - 1].next) count++;
    w = (ts__cas_mref *)ts__calloc(&cas->env.alloc, count, sizeof *w);
    if (!w) return TS__FAIL(&cas->env, TS_E_NOMEM, "cas: repair: out of memory");
    for (k = 0, i = (size_t)(v >> 1); i; i = cas->repair_refs[i - 1].next, k++) {
        const ts__cas_rref *e = &cas->repair_refs[i - 1];
        w[k].sid = (const char *)cas->repair_strs.data + e->sid_off;
        w[k].sid_len = e->sid_len;
        w[k].aid = (const char *)cas->repair_strs.data + e->aid_off;
        w[k].aid_len = e->aid_len;
        w[k].added = e->added;
    }
    qsort(w, count, sizeof *w, ts__cas_mref_cmp);
    for (i = k = 0; i < count; i++) {
        if (k && ts__cas_mref_cmp(&w[k - 1], &w[i]) == 0) {
            if (w[i].added > w[k - 1].added) w[k - 1].added = w[i].added;
            continue;
        }
        w[k++] = w[i];
    }
    *want = w; *n = k; *cap = count;
    return TS_OK;
}

/* Removes temporaries a crash left in an object directory. */
TS__PRIVATE ts_result ts__cas_clean_temps(ts_cas *cas, const char *hash)
{
    char dir[TS__CAS_PATH_CAP], path[TS__CAS_PATH_CAP];
    ts__cas_names_ctx c;
    size_t off;
    ts_result r;
    ts__cas_path(cas, dir, hash, NULL);
    if ((r = ts__cas_list_files(cas, dir, &c)) != TS_OK) return r;
    for (off = 0; off < c.names.len; off += strlen((const char *)c.names.data + off) + 1) {
        const char *name = (const char *)c.names.data + off;
        int n;
        if (!strstr(name, ".tmp")) continue;
        n = snprintf(path, sizeof path, "%s/%s", dir, name);
        if (n <= 0 || (size_t)n >= sizeof path || !ts__valid_rel_path(path, (size_t)n)) continue;
        r = cas->writer.remove_fn(cas->writer.user, path, TS__CAS_PRIO_LOW);
        if (r && r != TS_E_NOTFOUND) { ts__buf_free(&c.names); return ts__cas_io_fail(cas, r, "removing", path); }
    }
    ts__buf_free(&c.names);
    return TS_OK;
}

/* Repairs one object against the references sessions hold. */
TS__PRIVATE ts_result ts__cas_repair_one(ts_cas *cas, const char *hash, uint64_t now,
                                         ts_cas_problem_fn fn, void *user, ts_cas_repair_report *rep)
{
    ts__cas_meta m;
    ts__cas_mref *want = NULL, *have = NULL;
    size_t nwant = 0, wcap = 0, i;
    ts_result r, lr;
    ts__cas_meta_init(&m, &cas->env.alloc);
    if ((r = ts__cas_repair_wanted(cas, hash, &want, &nwant, &wcap)) != TS_OK) goto done;
    lr = ts__cas_meta_load(cas, hash, &m);
    if (lr == TS_OK) {
        int same = m.nrefs == nwant && m.ref_count == nwant;
        if (same && nwant) {
            have = (ts__cas_mref *)ts__calloc(&cas->env.alloc, m.nrefs, sizeof *have);
            if (!have) { r = TS__FAIL(&cas->env, TS_E_NOMEM, "cas: repair: out of memory"); goto done; }
            memcpy(have, m.refs, m.nrefs * sizeof *have);
            qsort(have, m.nrefs, sizeof *have, ts__cas_mref_cmp);
            for (i = 0; same && i < nwant; i++) same = ts__cas_mref_cmp(&have[i], &want[i]) == 0;
        }
        if (nwant) {
            char name[32], path[TS__CAS_PATH_CAP];
            ts_io_stat st;
            ts__cas_data_name(m.enc, name);
            ts__cas_path(cas, path, hash, name);
            r = cas->writer.stat_fn(cas->writer.user, path, &st);
            if (r == TS_E_NOTFOUND) {
                rep->missing++;
                (void)TS__FAIL(&cas->env, TS_E_NOTFOUND, "cas: %s: referenced but missing", path);
                ts__cas_problem(cas, fn, user, hash, TS_E_NOTFOUND);
            } else if (r) {
                r = ts__cas_io_fail(cas, r, "checking", path);
                goto done;
            }
        }
        if (!same) {
            /* keep recorded times for pairs the caller gave no time */
            for (i = 0; i < nwant; i++) {
                if (!want[i].added) {
                    size_t j = ts__cas_meta_find(&m, want[i].sid, want[i].sid_len, want[i].aid,
                                                 want[i].aid_len);
                    want[i].added = j != (size_t)-1 ? m.refs[j].added : now;
                }
            }
            ts__free(m.alloc, m.refs, m.refs_cap * sizeof(ts__cas_mref));
            m.refs = NULL; m.nrefs = m.refs_cap = 0;
            for (i = 0; i < nwant; i++)
                if ((r = ts__cas_meta_push(&m, &want[i])) != TS_OK) {
                    r = TS__FAIL(&cas->env, r, "cas: repair: out of memory");
                    goto done;
                }
            if ((r = ts__cas_meta_store(cas, &m, NULL)) != TS_OK) goto done;
            rep->rewritten++;
        }
    } else if (lr == TS_E_NOTFOUND || lr == TS_E_CORRUPT) {
        /* Metadata lost or unreadable: if the data verifies, rebuild it
           (unreferenced data without metadata is left for GC). */
        uint64_t size = 0;
        r = ts__cas_check_raw(cas, hash, &size);
        if (r == TS_OK && (lr == TS_E_CORRUPT || nwant)) {
            ts__cas_meta_free(&m);
            ts__cas_meta_init(&m, &cas->env.alloc);
            memcpy(m.hash, hash, sizeof m.hash);
            memcpy(m.mime, TS__CAS_DEFAULT_MIME, sizeof TS__CAS_DEFAULT_MIME);
            memcpy(m.enc, "raw", 4);
            m.size = m.stored_size = size;
            m.created = m.saved = now;
            for (i = 0; i < nwant; i++) {
                if (!want[i].added) want[i].added = now;
                if ((r = ts__cas_meta_push(&m, &want[i])) != TS_OK) {
                    r = TS__FAIL(&cas->env, r, "cas: repair: out of memory");
                    goto done;
                }
            }
            if ((r = ts__cas_meta_store(cas, &m, NULL)) != TS_OK) goto done;
            rep->rebuilt++;
        } else if (r == TS_E_CORRUPT) {
            rep->corrupt++;
            ts__cas_problem(cas, fn, user, hash, r);
            if (nwant) rep->missing++;
        } else if (r == TS_E_NOTFOUND) {
            if (nwant) {
                rep->missing++;
                (void)TS__FAIL(&cas->env, TS_E_NOTFOUND, "cas: %.64s: referenced but has no data", hash);
                ts__cas_problem(cas, fn, user, hash, TS_E_NOTFOUND);
            }
        } else if (r) {
            goto done;
        }
    } else {
        r = lr;
        goto done;
    }
    r = ts__cas_clean_temps(cas, hash);
done:
    ts__free(&cas->env.alloc, want, wcap * sizeof *want);
    if (have) ts__free(&cas->env.alloc, have, m.nrefs * sizeof *have);
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

TASKSTORE_DEF ts_result ts_cas_repair_finish(ts_cas *cas, uint64_t now_ms,
                                             ts_cas_problem_fn problem, void *user,
                                             ts_cas_repair_report *out)
{
    ts_cas_repair_report rep;
    ts__cas_cursor cur;
    char hash[TS_CAS_HASH_BUF];
    const ts__map_slot *slot;
    size_t pos = 0;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!cas) return TS_E_INVALID;
    if (!cas->repair_active) return TS__FAIL(&cas->env, TS_E_STATE, "cas: repair_finish without repair_begin");
    memset(&rep, 0, sizeof rep);
    memset(&cur, 0, sizeof cur);
    r = ts__cas_cursor_begin(cas, &cur);
    while (r == TS_OK && (r = ts__cas_cursor_next(cas, &cur, hash)) == TS_OK) {
        rep.objects++;
        r = ts__cas_repair_one(cas, hash, now_ms, problem, user, &rep);
    }
    ts__cas_cursor_free(cas, &cur);
    if (r == TS_DONE) {
        r = TS_OK;
        /* references to hashes with no object directory at all */
        while ((slot = ts__map_next(&cas->repair_map, &pos)) != NULL) {
            if (slot->value & 1) continue;
            rep.missing++;
            (void)TS__FAIL(&cas->env, TS_E_NOTFOUND, "cas: %.64s: referenced but absent", slot->key);
            ts__cas_problem(cas, problem, user, slot->key, TS_E_NOTFOUND);
        }
    }
    ts__cas_repair_reset(cas);
    cas->stats_valid = 0; /* recount on the next ts_cas_stats_get */
    if (out) *out = rep;
    return r;
}

/* ======================================================================== */
/* >>sessions: the chunker. A session on disk is sessions-chunked/{id}/     */
/* metadata.json + one folder of chunk files per stream + one file per      */
/* document. This part owns the file formats (metadata bookkeeping, chunk   */
/* arrays, paths), the split of a legacy session object into those files    */
/* and the join back, and a span scanner that keeps records verbatim. The   */
/* store facade (>>store) drives it through the queue, the cache and CAS.   */
/* ======================================================================== */

/* ---- span scanner ---------------------------------------------------------
   Records are kept byte for byte, so the chunker never builds a DOM of them:
   it validates JSON strictly (RFC 8259, bounded depth, valid UTF-8) and
   works with spans of the source text. Only the few fields the library
   reads (id, startTime, attachmentHash, bookkeeping) are ever decoded. */

#ifdef TASKSTORE_MAX_JSON_DEPTH
#define TS__JS_MAX_DEPTH TASKSTORE_MAX_JSON_DEPTH
#else
#define TS__JS_MAX_DEPTH 64
#endif

typedef struct ts__span {
    const char *p;
    size_t n;
} ts__span;

TS__PRIVATE const char *ts__js_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* *pp at the opening quote; on success *pp is just past the closing one. */
TS__PRIVATE int ts__js_skip_string(const char **pp, const char *end)
{
    const unsigned char *p = (const unsigned char *)*pp, *e = (const unsigned char *)end;
    if (p >= e || *p != '"') return 0;
    p++;
    while (p < e) {
        unsigned char c;
        if (e - p >= 8) {
            /* eight plain ASCII bytes at a time (no quote, backslash,
               control or non-ASCII byte among them) */
            uint64_t x;
            memcpy(&x, p, 8);
            if (!ts__json_swar_special(x)) { p += 8; continue; }
        }
        c = *p;
        if (c == '"') { *pp = (const char *)(p + 1); return 1; }
        if (c < 0x20) return 0;
        if (c == '\\') {
            if (p + 1 >= e) return 0;
            c = p[1];
            if (c == 'u') {
                int i;
                if (e - p < 6) return 0;
                for (i = 2; i < 6; i++) if (ts__hex_value(p[i]) < 0) return 0;
                p += 6;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' ||
                       c == 'n' || c == 'r' || c == 't') {
                p += 2;
            } else {
                return 0;
            }
        } else if (c < 0x80) {
            p++;
        } else {
            uint32_t cp;
            int k = ts__utf8_decode(p, (size_t)(e - p), &cp);
            if (!k) return 0;
            p += k;
        }
    }
    return 0;
}

TS__PRIVATE int ts__js_skip_number(const char **pp, const char *end)
{
    const char *p = *pp;
    if (p < end && *p == '-') p++;
    if (p >= end) return 0;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < end && *p >= '0' && *p <= '9') p++; }
    else return 0;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    *pp = p;
    return 1;
}

/* Skips one value starting at *pp (no leading whitespace). Iterative with an
   explicit stack of container kinds so hostile nesting cannot blow the C
   stack. Returns 1 on success. */
TS__PRIVATE int ts__js_skip_value(const char **pp, const char *end)
{
    char stack[TS__JS_MAX_DEPTH];
    int depth = 0;
    const char *p = *pp;
    for (;;) {
        /* expect a value at p */
        p = ts__js_ws(p, end);
        if (p >= end) return 0;
        if (*p == '{' || *p == '[') {
            char open = *p++;
            if (depth >= TS__JS_MAX_DEPTH) return 0;
            stack[depth++] = open;
            p = ts__js_ws(p, end);
            if (p < end && *p == (open == '{' ? '}' : ']')) { p++; depth--; goto after_value; }
            if (open == '{') {
                if (!ts__js_skip_string(&p, end)) return 0;
                p = ts__js_ws(p, end);
                if (p >= end || *p != ':') return 0;
                p++;
            }
            continue;
        } else if (*p == '"') {
            if (!ts__js_skip_string(&p, end)) return 0;
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            if (!ts__js_skip_number(&p, end)) return 0;
        } else if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
            p += 4;
        } else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
            p += 5;
        } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
            p += 4;
        } else {
            return 0;
        }
    after_value:
        for (;;) {
            if (depth == 0) { *pp = p; return 1; }
            p = ts__js_ws(p, end);
            if (p >= end) return 0;
            if (*p == ',') {
                p++;
                if (stack[depth - 1] == '{') {
                    p = ts__js_ws(p, end);
                    if (!ts__js_skip_string(&p, end)) return 0;
                    p = ts__js_ws(p, end);
                    if (p >= end || *p != ':') return 0;
                    p++;
                }
                break; /* next value */
            }
            if (*p == (stack[depth - 1] == '{' ? '}' : ']')) { p++; depth--; continue; }
            return 0;
        }
    }
}

/* 1 when text[n] is exactly one JSON value (surrounding whitespace allowed). */
TS__PRIVATE int ts__js_valid(const char *text, size_t n)
{
    const char *p = text, *end = text + n;
    if (!text) return 0;
    p = ts__js_ws(p, end);
    if (!ts__js_skip_value(&p, end)) return 0;
    return ts__js_ws(p, end) == end;
}

/* Trims whitespace around a value span. */
TS__PRIVATE ts__span ts__js_trim(const char *text, size_t n)
{
    ts__span s;
    const char *p = ts__js_ws(text, text + n), *e = text + n;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) e--;
    s.p = p; s.n = (size_t)(e - p);
    return s;
}

/* Iteration over the members of an object or the items of an array whose
   text was validated (ts__js_valid) or is validated item by item here. */
typedef struct ts__js_iter {
    const char *p, *end;
    char close;
    int first;
} ts__js_iter;

/* open is '{' or '['; 1 if v starts with it. */
TS__PRIVATE int ts__js_iter_begin(ts__js_iter *it, ts__span v, char open)
{
    it->p = ts__js_ws(v.p, v.p + v.n);
    it->end = v.p + v.n;
    it->first = 1;
    it->close = open == '{' ? '}' : ']';
    if (it->p >= it->end || *it->p != open) return 0;
    it->p++;
    return 1;
}

/* TS_OK with the next member (key: raw string with quotes; NULL key for
   arrays), TS_DONE at the end, TS_E_CORRUPT on malformed text. */
TS__PRIVATE ts_result ts__js_iter_next(ts__js_iter *it, ts__span *key, ts__span *val)
{
    const char *p = ts__js_ws(it->p, it->end);
    if (p >= it->end) return TS_E_CORRUPT;
    if (*p == it->close) { it->p = p + 1; return TS_DONE; }
    if (!it->first) {
        if (*p != ',') return TS_E_CORRUPT;
        p = ts__js_ws(p + 1, it->end);
    }
    it->first = 0;
    if (it->close == '}') {
        const char *k = p;
        if (!ts__js_skip_string(&p, it->end)) return TS_E_CORRUPT;
        if (key) { key->p = k; key->n = (size_t)(p - k); }
        p = ts__js_ws(p, it->end);
        if (p >= it->end || *p != ':') return TS_E_CORRUPT;
        p = ts__js_ws(p + 1, it->end);
    } else if (key) {
        key->p = NULL; key->n = 0;
    }
    val->p = p;
    if (!ts__js_skip_value(&p, it->end)) return TS_E_CORRUPT;
    val->n = (size_t)(p - val->p);
    it->p = p;
    return TS_OK;
}

/* After ts__js_iter_next returned TS_DONE for a whole text: 1 when only
   whitespace follows the closing bracket (the text was one valid value). */
TS__PRIVATE int ts__js_iter_end_ok(const ts__js_iter *it)
{
    return ts__js_ws(it->p, it->end) == it->end;
}

/* Decodes a raw JSON string (with quotes, already validated) into out[cap];
   decoded text is never longer than the raw text, so cap >= raw.n always
   fits. Returns 0 when it does not fit or the text is malformed. */
TS__PRIVATE int ts__js_str_decode_to(ts__span raw, char *out, size_t cap, size_t *len)
{
    const char *p = raw.p + 1, *end = raw.p + raw.n - 1;
    size_t o = 0;
    *len = 0;
    if (raw.n < 2 || raw.p[0] != '"') return 0;
    while (p < end) {
        if (*p != '\\') {
            if (o >= cap) return 0;
            out[o++] = *p++;
            continue;
        }
        if (p + 1 >= end) return 0;
        if (p[1] == 'u') {
            uint32_t cp = 0;
            unsigned char enc[4];
            int i, k;
            if (end - p < 6) return 0;
            for (i = 2; i < 6; i++) cp = cp << 4 | (uint32_t)ts__hex_value((unsigned char)p[i]);
            p += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                uint32_t lo = 0;
                for (i = 2; i < 6; i++) lo = lo << 4 | (uint32_t)ts__hex_value((unsigned char)p[i]);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* lone surrogate */
            k = ts__utf8_encode(cp, enc);
            if (cap - o < (size_t)k) return 0;
            memcpy(out + o, enc, (size_t)k);
            o += (size_t)k;
            continue;
        }
        if (o >= cap) return 0;
        switch (p[1]) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        default: out[o++] = p[1]; break;
        }
        p += 2;
    }
    *len = o;
    return 1;
}

/* Decodes into a growable buffer (appended, NUL-terminated). */
TS__PRIVATE ts_result ts__js_str_decode(ts__span raw, ts__buf *out)
{
    size_t n = 0;
    ts_result r = ts__buf_reserve(out, raw.n);
    if (r) return r;
    if (!ts__js_str_decode_to(raw, (char *)out->data + out->len, raw.n, &n)) return TS_E_CORRUPT;
    out->len += n;
    out->data[out->len] = 0;
    return TS_OK;
}

/* 1 if the raw key (with quotes) equals the literal name. Keys with escapes
   are compared after decoding. */
TS__PRIVATE int ts__js_key_is(ts__span raw, const char *name)
{
    size_t n = strlen(name), len = 0;
    char tmp[256];
    if (raw.n < 2) return 0;
    if (!memchr(raw.p, '\\', raw.n)) return raw.n == n + 2 && memcmp(raw.p + 1, name, n) == 0;
    if (!ts__js_str_decode_to(raw, tmp, sizeof tmp, &len)) return 0;
    return len == n && memcmp(tmp, name, n) == 0;
}

/* Finds member `name` in object text; 1 and *val if present. */
TS__PRIVATE int ts__js_get(ts__span obj, const char *name, ts__span *val)
{
    ts__js_iter it;
    ts__span k, v;
    if (!ts__js_iter_begin(&it, obj, '{')) return 0;
    while (ts__js_iter_next(&it, &k, &v) == TS_OK)
        if (ts__js_key_is(k, name)) { *val = v; return 1; }
    return 0;
}

/* An integral JSON number (no fraction/exponent, fits int64) -> 1 and *out.
   Numbers with a fraction or exponent are accepted when they hold an
   integral value in range (1.7e12 style timestamps). */
TS__PRIVATE int ts__js_int64(ts__span v, int64_t *out)
{
    const char *p = v.p, *end = v.p + v.n;
    int neg = 0;
    uint64_t acc = 0;
    if (!v.n) return 0;
    if (*p == '-') { neg = 1; p++; }
    if (p >= end || *p < '0' || *p > '9') return 0;
    while (p < end && *p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (acc > (UINT64_C(9223372036854775807) - d) / 10) return 0;
        acc = acc * 10 + d;
        p++;
    }
    if (p < end) {
        char tmp[64];
        double d;
        if (v.n >= sizeof tmp) return 0;
        memcpy(tmp, v.p, v.n); tmp[v.n] = 0;
        d = ts__json_strtod(tmp, v.n);
        if (!(d >= -9.2e18 && d <= 9.2e18) || d != (double)(int64_t)d) return 0;
        *out = (int64_t)d;
        return 1;
    }
    *out = neg ? -(int64_t)acc : (int64_t)acc;
    return 1;
}


/* ---- stream table, documents, paths ------------------------------------- */

#define TS__MAX_STREAMS 32
#define TS__NAME_MAX 63
#define TS__STORAGE_VERSION 2
#define TS__MAX_STREAM_CHUNKS ((uint64_t)1 << 20)   /* chunk files per stream */
#define TS__MAX_CHUNK_RECORDS ((uint64_t)1 << 27)   /* records in a one-chunk stream ("{}," each) */

typedef struct ts__stream_def {
    char name[TS__NAME_MAX + 1];
    uint32_t per_chunk;         /* 0: every record in chunk 0 */
} ts__stream_def;

static const char *const ts__doc_names[] = { "summary", "audioInsights", "canvasSpec",
                                             "transcription" };
#define TS__NDOCS 4

TS__PRIVATE int ts__doc_index(const char *name, size_t n)
{
    int i;
    for (i = 0; i < TS__NDOCS; i++)
        if (strlen(ts__doc_names[i]) == n && memcmp(ts__doc_names[i], name, n) == 0) return i;
    return -1;
}

/* Keys of metadata.json the library owns; a caller's value under these
   names is dropped on save (they are rebuilt from the store's state). */
TS__PRIVATE int ts__meta_reserved_key(ts__span raw)
{
    return ts__js_key_is(raw, "storageVersion") || ts__js_key_is(raw, "chunked");
}

/* A stream or document name: 1-63 bytes of [A-Za-z0-9_-] (it becomes a
   folder or file name and a cache key segment, so no '.' and no ':'). */
TS__PRIVATE int ts__valid_stream_name(const char *s, size_t n)
{
    size_t i;
    if (!s || n == 0 || n > TS__NAME_MAX) return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

#define TS__SESS_DIR "sessions-chunked"

TS__PRIVATE ts_result ts__path_meta(ts__buf *b, const char *id)
{
    b->len = 0;
    return ts__buf_printf(b, TS__SESS_DIR "/%s/metadata.json", id);
}
TS__PRIVATE ts_result ts__path_doc(ts__buf *b, const char *id, int doc)
{
    b->len = 0;
    return ts__buf_printf(b, TS__SESS_DIR "/%s/%s.json", id, ts__doc_names[doc]);
}
/* Generation 0 keeps the layout's plain names; a replaced stream writes its
   new chunks under a new generation so the old ones stay readable until the
   metadata that switches to them is durable. */
TS__PRIVATE ts_result ts__path_chunk(ts__buf *b, const char *id, const char *stream,
                                     uint32_t gen, uint64_t chunk)
{
    b->len = 0;
    if (gen == 0)
        return ts__buf_printf(b, TS__SESS_DIR "/%s/%s/chunk-%03llu.json", id, stream,
                              (unsigned long long)chunk);
    return ts__buf_printf(b, TS__SESS_DIR "/%s/%s/chunk-%03llu.g%u.json", id, stream,
                          (unsigned long long)chunk, gen);
}

/* ---- metadata.json ---------------------------------------------------------
   {<caller's members verbatim>, "storageVersion": 2,
    "chunked": {"streams": {"<name>": {"count": N, "perChunk": P, "gen": G}, ...},
                "documents": ["summary", ...]}}
   The count is authoritative: a chunk may hold more records than the
   metadata counts (a crash between a chunk write and the metadata write);
   readers ignore the extras and the next append overwrites them. */

typedef struct ts__meta_stream {
    char name[TS__NAME_MAX + 1];
    uint64_t count;
    uint32_t per_chunk;
    uint32_t gen;
    int64_t at;                 /* key position in the saved object, -1: none */
} ts__meta_stream;

typedef struct ts__meta {
    ts__buf user;               /* caller's members: "k":v,"k":v (no braces) */
    uint32_t nstreams;
    ts__meta_stream streams[TS__MAX_STREAMS];
    unsigned docs;              /* bit i: ts__doc_names[i] present */
    int64_t doc_at[TS__NDOCS];  /* key position of each document, -1: none */
    int64_t start_time;
    int has_start_time;
    int has_id;
} ts__meta;

TS__PRIVATE void ts__meta_init(ts__meta *m, const ts_allocator *a)
{
    int d;
    memset(m, 0, sizeof *m);
    ts__buf_init(&m->user, a);
    for (d = 0; d < TS__NDOCS; d++) m->doc_at[d] = -1;
}

TS__PRIVATE void ts__meta_free(ts__meta *m)
{
    ts__buf_free(&m->user);
    m->nstreams = 0;
}

TS__PRIVATE ts__meta_stream *ts__meta_find(ts__meta *m, const char *name, size_t n)
{
    uint32_t i;
    for (i = 0; i < m->nstreams; i++)
        if (strlen(m->streams[i].name) == n && memcmp(m->streams[i].name, name, n) == 0)
            return &m->streams[i];
    return NULL;
}

TS__PRIVATE ts__meta_stream *ts__meta_add(ts__meta *m, const char *name, size_t n,
                                          uint32_t per_chunk)
{
    ts__meta_stream *s = ts__meta_find(m, name, n);
    if (s) return s;
    if (m->nstreams >= TS__MAX_STREAMS || n > TS__NAME_MAX) return NULL;
    s = &m->streams[m->nstreams++];
    memset(s, 0, sizeof *s);
    memcpy(s->name, name, n);
    s->name[n] = 0;
    s->per_chunk = per_chunk;
    s->at = -1;
    return s;
}

/* Adds one caller member (key raw + value) to m->user. */
TS__PRIVATE ts_result ts__meta_put_user(ts__meta *m, ts__span key, ts__span val)
{
    ts_result r;
    if (m->user.len && (r = ts__buf_putc(&m->user, ',')) != TS_OK) return r;
    if ((r = ts__buf_append(&m->user, key.p, key.n)) != TS_OK) return r;
    if ((r = ts__buf_putc(&m->user, ':')) != TS_OK) return r;
    if (ts__js_key_is(key, "startTime")) m->has_start_time = ts__js_int64(val, &m->start_time);
    if (ts__js_key_is(key, "id")) m->has_id = 1;
    return ts__buf_append(&m->user, val.p, val.n);
}

TS__PRIVATE ts_result ts__meta_parse_chunked(ts__meta *m, ts__span v)
{
    ts__js_iter it, it2, it3;
    ts__span k, x, k2, x2, k3, x3;
    ts_result r;
    if (!ts__js_iter_begin(&it, v, '{')) return TS_E_CORRUPT;
    while ((r = ts__js_iter_next(&it, &k, &x)) == TS_OK) {
        if (ts__js_key_is(k, "streams")) {
            if (!ts__js_iter_begin(&it2, x, '{')) return TS_E_CORRUPT;
            while ((r = ts__js_iter_next(&it2, &k2, &x2)) == TS_OK) {
                ts__meta_stream *s;
                int64_t num;
                if (k2.n < 3 || !ts__valid_stream_name(k2.p + 1, k2.n - 2)) return TS_E_CORRUPT;
                if (ts__meta_find(m, k2.p + 1, k2.n - 2)) return TS_E_CORRUPT;
                s = ts__meta_add(m, k2.p + 1, k2.n - 2, 0);
                if (!s) return TS_E_CORRUPT;
                if (!ts__js_iter_begin(&it3, x2, '{')) return TS_E_CORRUPT;
                while ((r = ts__js_iter_next(&it3, &k3, &x3)) == TS_OK) {
                    if (!ts__js_int64(x3, &num)) return TS_E_CORRUPT;
                    if (ts__js_key_is(k3, "count")) {
                        if (num < 0 || num > (int64_t)1 << 40) return TS_E_CORRUPT;
                        s->count = (uint64_t)num;
                    } else if (ts__js_key_is(k3, "perChunk")) {
                        if (num < 0 || num > 0x7fffffff) return TS_E_CORRUPT;
                        s->per_chunk = (uint32_t)num;
                    } else if (ts__js_key_is(k3, "gen")) {
                        if (num < 0 || num > 0x7fffffff) return TS_E_CORRUPT;
                        s->gen = (uint32_t)num;
                    } else if (ts__js_key_is(k3, "at")) {
                        if (num < 0 || num > 0x7fffffff) return TS_E_CORRUPT;
                        s->at = num;
                    }
                }
                if (r != TS_DONE) return TS_E_CORRUPT;
                /* the count decides how many chunk files every walk visits
                   (delete visits them without reading): no more than a
                   store can hold, whatever the file claims */
                if (s->per_chunk ? s->count / s->per_chunk >= TS__MAX_STREAM_CHUNKS
                                 : s->count > TS__MAX_CHUNK_RECORDS)
                    return TS_E_CORRUPT;
            }
            if (r != TS_DONE) return TS_E_CORRUPT;
        } else if (ts__js_key_is(k, "documents")) {
            if (!ts__js_iter_begin(&it2, x, '[')) return TS_E_CORRUPT;
            while ((r = ts__js_iter_next(&it2, NULL, &x2)) == TS_OK) {
                int d = x2.n >= 2 && x2.p[0] == '"' ? ts__doc_index(x2.p + 1, x2.n - 2) : -1;
                if (d >= 0) m->docs |= 1u << d;
            }
            if (r != TS_DONE) return TS_E_CORRUPT;
        } else if (ts__js_key_is(k, "documentsAt")) {
            if (!ts__js_iter_begin(&it2, x, '{')) return TS_E_CORRUPT;
            while ((r = ts__js_iter_next(&it2, &k2, &x2)) == TS_OK) {
                int64_t num;
                int d = k2.n >= 2 ? ts__doc_index(k2.p + 1, k2.n - 2) : -1;
                if (!ts__js_int64(x2, &num) || num < 0 || num > 0x7fffffff) return TS_E_CORRUPT;
                if (d >= 0) m->doc_at[d] = num;
            }
            if (r != TS_DONE) return TS_E_CORRUPT;
        }
    }
    return r == TS_DONE ? TS_OK : TS_E_CORRUPT;
}

/* Parses metadata.json text into m (freshly initialised). */
TS__PRIVATE ts_result ts__meta_parse(ts__meta *m, const char *text, size_t n)
{
    ts__js_iter it;
    ts__span k, v, obj;
    ts_result r;
    int version = 0;
    if (!ts__js_valid(text, n)) return TS_E_CORRUPT;
    obj = ts__js_trim(text, n);
    if (!ts__js_iter_begin(&it, obj, '{')) return TS_E_CORRUPT;
    while ((r = ts__js_iter_next(&it, &k, &v)) == TS_OK) {
        if (ts__js_key_is(k, "chunked")) {
            if ((r = ts__meta_parse_chunked(m, v)) != TS_OK) return r;
        } else if (ts__js_key_is(k, "storageVersion")) {
            int64_t ver;
            if (!ts__js_int64(v, &ver)) return TS_E_CORRUPT;
            if (ver != TS__STORAGE_VERSION) return TS_E_VERSION;
            version = 1;
        } else if ((r = ts__meta_put_user(m, k, v)) != TS_OK) {
            return r;
        }
    }
    if (r != TS_DONE) return TS_E_CORRUPT;
    if (!version) return TS_E_CORRUPT;
    return TS_OK;
}

/* Writes the whole metadata.json text. */
TS__PRIVATE ts_result ts__meta_write(const ts__meta *m, ts__buf *out)
{
    ts_result r;
    uint32_t i;
    int d, first = 1;
    out->len = 0;
    if ((r = ts__buf_putc(out, '{')) != TS_OK) return r;
    if (m->user.len) {
        if ((r = ts__buf_append(out, m->user.data, m->user.len)) != TS_OK) return r;
        if ((r = ts__buf_putc(out, ',')) != TS_OK) return r;
    }
    if ((r = ts__buf_printf(out, "\"storageVersion\":%d,\"chunked\":{\"streams\":{",
                            TS__STORAGE_VERSION)) != TS_OK) return r;
    for (i = 0; i < m->nstreams; i++) {
        const ts__meta_stream *s = &m->streams[i];
        if ((r = ts__buf_printf(out, "%s\"%s\":{\"count\":%llu,\"perChunk\":%u,\"gen\":%u",
                                i ? "," : "", s->name, (unsigned long long)s->count,
                                s->per_chunk, s->gen)) != TS_OK) return r;
        if (s->at >= 0 && (r = ts__buf_printf(out, ",\"at\":%lld", (long long)s->at)) != TS_OK)
            return r;
        if ((r = ts__buf_putc(out, '}')) != TS_OK) return r;
    }
    if ((r = ts__buf_puts(out, "},\"documents\":[")) != TS_OK) return r;
    for (d = 0; d < TS__NDOCS; d++) {
        if (!(m->docs & (1u << d))) continue;
        if ((r = ts__buf_printf(out, "%s\"%s\"", first ? "" : ",", ts__doc_names[d])) != TS_OK)
            return r;
        first = 0;
    }
    if ((r = ts__buf_puts(out, "],\"documentsAt\":{")) != TS_OK) return r;
    first = 1;
    for (d = 0; d < TS__NDOCS; d++) {
        if (!(m->docs & (1u << d)) || m->doc_at[d] < 0) continue;
        if ((r = ts__buf_printf(out, "%s\"%s\":%lld", first ? "" : ",", ts__doc_names[d],
                                (long long)m->doc_at[d])) != TS_OK)
            return r;
        first = 0;
    }
    return ts__buf_puts(out, "}}}");
}

/* Number of chunks a stream of count records occupies. */
TS__PRIVATE uint64_t ts__stream_chunks(uint64_t count, uint32_t per_chunk)
{
    if (!count) return 0;
    if (!per_chunk) return 1;
    return (count + per_chunk - 1) / per_chunk;
}

/* Records chunk k holds per the authoritative count. */
TS__PRIVATE uint64_t ts__chunk_records(uint64_t count, uint32_t per_chunk, uint64_t k)
{
    uint64_t first, n;
    if (!per_chunk) return k == 0 ? count : 0;
    first = k * per_chunk;
    if (first >= count) return 0;
    n = count - first;
    return n < per_chunk ? n : per_chunk;
}

/* ---- chunk files: a JSON array of records ---------------------------------- */

/* Splits chunk text into exactly `want` record spans (extras beyond the
   authoritative count are ignored; they are still validated, so a torn
   chunk is caught). TS_E_CORRUPT if malformed or shorter than want. spans
   must have room for want entries. */
TS__PRIVATE ts_result ts__chunk_split(const char *text, size_t n, uint64_t want,
                                      ts__span *spans)
{
    ts__js_iter it;
    ts__span v;
    uint64_t got = 0;
    ts_result r;
    if (!ts__js_valid(text, n)) return TS_E_CORRUPT;
    if (!ts__js_iter_begin(&it, ts__js_trim(text, n), '[')) return TS_E_CORRUPT;
    while (got < want && (r = ts__js_iter_next(&it, NULL, &v)) == TS_OK) {
        if (v.p[0] != '{') return TS_E_CORRUPT; /* records are objects */
        spans[got++] = v;
    }
    return got == want ? TS_OK : TS_E_CORRUPT;
}

TS__PRIVATE ts_result ts__chunk_write(ts__buf *out, const ts__span *recs, size_t n)
{
    ts_result r;
    size_t i;
    out->len = 0;
    if ((r = ts__buf_putc(out, '[')) != TS_OK) return r;
    for (i = 0; i < n; i++) {
        if (i && (r = ts__buf_putc(out, ',')) != TS_OK) return r;
        if ((r = ts__buf_append(out, recs[i].p, recs[i].n)) != TS_OK) return r;
    }
    return ts__buf_putc(out, ']');
}

/* A record with member `name` set to the JSON string value (an existing
   member of that name is replaced). rec is a validated object. */
TS__PRIVATE ts_result ts__record_set_str(ts__buf *out, ts__span rec, const char *name,
                                         const char *value)
{
    ts__js_iter it;
    ts__span k, v;
    ts_result r;
    int first = 1;
    out->len = 0;
    if (!ts__js_iter_begin(&it, rec, '{')) return TS_E_INVALID;
    if ((r = ts__buf_putc(out, '{')) != TS_OK) return r;
    while ((r = ts__js_iter_next(&it, &k, &v)) == TS_OK) {
        if (ts__js_key_is(k, name)) continue;
        if (!first && (r = ts__buf_putc(out, ',')) != TS_OK) return r;
        if ((r = ts__buf_append(out, k.p, k.n)) != TS_OK) return r;
        if ((r = ts__buf_putc(out, ':')) != TS_OK) return r;
        if ((r = ts__buf_append(out, v.p, v.n)) != TS_OK) return r;
        first = 0;
    }
    if (r != TS_DONE) return TS_E_INVALID;
    if ((r = ts__buf_printf(out, "%s\"%s\":", first ? "" : ",", name)) != TS_OK) return r;
    if ((r = ts__json_write_string(out, value, strlen(value))) != TS_OK) return r;
    return ts__buf_putc(out, '}');
}

/* The attachment hash a record names (attachmentHash), 1 if a valid one. */
TS__PRIVATE int ts__record_hash(ts__span rec, char hex[65])
{
    ts__span v;
    if (!ts__js_get(rec, "attachmentHash", &v)) return 0;
    if (v.n != 66 || v.p[0] != '"' || !ts__valid_hash_hex(v.p + 1, 64)) return 0;
    memcpy(hex, v.p + 1, 64);
    hex[64] = 0;
    return 1;
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

/* ======================================================================== */
/* >>store: the facade. Ties the chunker (>>sessions), the cache (>>lru),   */
/* the persistence queue (>>queue), the attachment store (>>cas) and the    */
/* index (>>index) together; owns open/close/lock, the session list, the    */
/* derived files (session-manifest, session-indexes) and tick/idle.         */
/* ======================================================================== */

/* Derived files. The session list (every metadata.json) and the index are
   derived data: the store trusts session-manifest and session-indexes only
   when the previous owner closed cleanly. store.dirty is written (durably)
   at open and removed at close after the derived files are written; if it
   is there at open, the last owner crashed, and the list and the index are
   rebuilt from the metadata files the first time they are needed. */
#define TS__MANIFEST_PATH "session-manifest"
#define TS__INDEX_PATH "session-indexes"
#define TS__DIRTY_PATH "store.dirty"
#define TS__LEGACY_DIR "sessions"

#ifndef TASKSTORE_MAX_FILE_BYTES
#define TASKSTORE_MAX_FILE_BYTES ((size_t)256 << 20)
#endif

typedef struct ts__dir_entry {
    char *id;                   /* id_len + 1 bytes */
    size_t id_len;
    char *meta;                 /* metadata.json text, meta_len + 1 bytes; NULL = deleted */
    size_t meta_len;
    int64_t start;
    int has_start;
} ts__dir_entry;

struct ts_store {
    ts__env env;
    ts_io io;
#ifndef TASKSTORE_NO_STDIO
    ts_io_posix *posix;
#endif
    ts_lru *lru;
    ts_queue *queue;
    ts_cas *cas;
    ts_index *index;
    ts_store_config cfg;
    int read_only, locked, trusted;
    uint64_t now_ms;
    uint32_t nstreams;
    ts__stream_def streams[TS__MAX_STREAMS];

    /* The session directory: id -> entry. Until dir_complete it holds only
       the sessions changed since open (deleted ones with meta NULL). */
    ts__map dir_map;            /* id -> index into dir */
    ts__dir_entry *dir;
    size_t dir_count, dir_cap;
    int dir_complete, dir_changed;
    int dir_stale;              /* a change could not be recorded: rescan + replay the queue */

    int index_valid, index_changed;
    int index_load_pending;     /* session-indexes is trusted but not read yet */
    int gc_wanted, gc_running;  /* references were released; a GC cycle is underway */
    ts__buf cas_after;          /* CAS writer: the path later CAS changes wait for */
    uint64_t corrupt_sessions;  /* metadata files skipped while listing */
    ts__buf path, path2, tmp;   /* scratch */
    ts_codec_set codecs;        /* >>codecs: user codecs for twins (zero: built-ins) */
    struct ts__compress *compress; /* >>compress: background compression state */
};

/* >>compress (after this part) keeps its state in s->compress: opened by
   ts_store_open, closed by ts__store_free. */
TS__PRIVATE ts_result ts__compress_open(ts_store *s);
TS__PRIVATE void ts__compress_close(ts_store *s);

/* Hands a buffer's bytes to a blob (the buffer is left empty). */
TS__PRIVATE void ts__blob_from_buf(ts_blob *out, ts__buf *b, const ts_allocator *a)
{
    size_t len = 0, cap = 0;
    unsigned char *p;
    if (!b->data && ts__buf_reserve(b, 0) != TS_OK) { memset(out, 0, sizeof *out); return; }
    p = ts__buf_take(b, &len, &cap);
    out->data = p;
    out->len = len;
    out->cap = cap;
    out->alloc = *a;
}

TS__PRIVATE void ts__blob_zero(ts_blob *out)
{
    if (out) memset(out, 0, sizeof *out);
}

TASKSTORE_DEF ts_store_config ts_store_config_default(void)
{
    ts_store_config c;
    memset(&c, 0, sizeof c);
    c.cache_max_bytes = (uint64_t)100 * 1024 * 1024;
    c.cache_ttl_ms = (uint64_t)5 * 60 * 1000;
    c.queue_capacity = 1024;
    c.batch_window_ms = 100;
    c.gc_grace_ms = (uint64_t)60 * 60 * 1000;
    return c;
}

TASKSTORE_DEF ts_result ts_store_last_error(const ts_store *s, ts_error_info *out)
{
    if (!s) {
        if (out) memset(out, 0, sizeof *out);
        return TS_E_INVALID;
    }
    return ts__env_last_error(&s->env, out);
}

TASKSTORE_DEF int ts_store_is_read_only(const ts_store *s) { return s ? s->read_only : 0; }

/* ---- raw vtable access (open/close/listing; the write path is the queue) -- */

/* Reads a whole file through the vtable into b (replacing its contents). */
TS__PRIVATE ts_result ts__st_read_all(ts_store *s, const char *path, ts__buf *b)
{
    size_t size = 0;
    ts_result r;
    b->len = 0;
    if (!s->io.read_file_fn) return TS_E_NOTIMPL;
    if (!ts__valid_rel_path(path, strlen(path))) return TS_E_INVALID;
    if ((r = ts__buf_reserve(b, b->cap > 4096 ? b->cap - 1 : 4096)) != TS_OK) return r;
    r = s->io.read_file_fn(s->io.user, path, b->data, b->cap - 1, &size);
    if (r == TS_E_RANGE || (r == TS_OK && size > b->cap - 1)) {
        if (size > TASKSTORE_MAX_FILE_BYTES)
            return TS__FAIL(&s->env, TS_E_TOOBIG, "%s: %llu bytes", path, (unsigned long long)size);
        if ((r = ts__buf_reserve(b, size)) != TS_OK) return r;
        r = s->io.read_file_fn(s->io.user, path, b->data, b->cap - 1, &size);
        if (r == TS_OK && size > b->cap - 1) r = TS_E_IO; /* grew again under us */
    }
    if (r != TS_OK) return r;
    b->len = size;
    b->data[size] = 0;
    return TS_OK;
}

typedef struct ts__name_list {
    char **names;
    size_t *lens;
    size_t count, cap, lens_cap;   /* each array's own capacity: free needs it */
    const ts_allocator *alloc;
    int dirs_only;
    ts_result err;
} ts__name_list;

TS__PRIVATE int ts__name_list_cb(void *ctx, const char *name, int is_dir)
{
    ts__name_list *l = (ts__name_list *)ctx;
    size_t n = strlen(name);
    char *copy;
    if (l->dirs_only && !is_dir) return 0;
    if (l->count == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        char **nn;
        size_t *nl;
        if (l->lens_cap < ncap) {
            nl = (size_t *)ts__realloc(l->alloc, l->lens, l->lens_cap * sizeof(size_t),
                                       ncap * sizeof(size_t));
            if (!nl) { l->err = TS_E_NOMEM; return 1; }
            l->lens = nl;
            l->lens_cap = ncap;
        }
        nn = (char **)ts__realloc(l->alloc, l->names, l->cap * sizeof(char *), ncap * sizeof(char *));
        if (!nn) { l->err = TS_E_NOMEM; return 1; }
        l->names = nn;
        l->cap = ncap;
    }
    copy = ts__strndup(l->alloc, name, n);
    if (!copy) { l->err = TS_E_NOMEM; return 1; }
    l->names[l->count] = copy;
    l->lens[l->count] = n;
    l->count++;
    return 0;
}

TS__PRIVATE void ts__name_list_free(ts__name_list *l)
{
    size_t i;
    for (i = 0; i < l->count; i++) ts__free(l->alloc, l->names[i], l->lens[i] + 1);
    ts__free(l->alloc, l->names, l->cap * sizeof(char *));
    ts__free(l->alloc, l->lens, l->lens_cap * sizeof(size_t));
    l->names = NULL; l->lens = NULL; l->count = l->cap = l->lens_cap = 0;
}

TS__PRIVATE ts_result ts__st_list(ts_store *s, const char *path, int dirs_only, ts__name_list *l)
{
    ts_result r;
    memset(l, 0, sizeof *l);
    l->alloc = &s->env.alloc;
    l->dirs_only = dirs_only;
    if (!s->io.list_dir_fn) return TS_E_NOTIMPL;
    r = s->io.list_dir_fn(s->io.user, path, ts__name_list_cb, l);
    if (l->err) r = l->err;
    if (r != TS_OK) ts__name_list_free(l);
    return r;
}

/* ---- the session directory ------------------------------------------------ */

TS__PRIVATE void ts__dir_entry_free(ts_store *s, ts__dir_entry *e)
{
    ts__free(&s->env.alloc, e->id, e->id_len + 1);
    if (e->meta) ts__free(&s->env.alloc, e->meta, e->meta_len + 1);
    e->id = NULL; e->meta = NULL;
}

TS__PRIVATE void ts__dir_free(ts_store *s)
{
    size_t i;
    for (i = 0; i < s->dir_count; i++) ts__dir_entry_free(s, &s->dir[i]);
    ts__free(&s->env.alloc, s->dir, s->dir_cap * sizeof(ts__dir_entry));
    s->dir = NULL; s->dir_count = s->dir_cap = 0;
    ts__map_free(&s->dir_map);
    s->dir_complete = 0;
}

/* Pulls startTime out of metadata text (already validated). */
TS__PRIVATE int ts__meta_start_time(const char *meta, size_t n, int64_t *out)
{
    ts__span v;
    if (!ts__js_get(ts__js_trim(meta, n), "startTime", &v)) return 0;
    return ts__js_int64(v, out);
}

/* Sets the directory entry of id to meta (NULL: deleted). When `only_new`
   an existing entry is left alone (building the base under later changes). */
TS__PRIVATE ts_result ts__dir_set(ts_store *s, const char *id, size_t id_len,
                                  const char *meta, size_t meta_len, int only_new)
{
    uint64_t at;
    ts__dir_entry *e;
    char *copy = NULL;
    ts_result r;
    if (only_new && ts__map_get(&s->dir_map, id, id_len, NULL)) return TS_OK;
    /* the copy first: a failure must leave no entry behind (a new entry
       without its text would read as "deleted" for good) */
    if (meta) {
        copy = ts__strndup(&s->env.alloc, meta, meta_len);
        if (!copy) return TS_E_NOMEM;
    }
    if (ts__map_get(&s->dir_map, id, id_len, &at)) {
        e = &s->dir[at];
    } else {
        if (s->dir_count == s->dir_cap) {
            size_t ncap = s->dir_cap ? s->dir_cap * 2 : 64;
            ts__dir_entry *nd = (ts__dir_entry *)ts__realloc(
                &s->env.alloc, s->dir, s->dir_cap * sizeof(ts__dir_entry),
                ncap * sizeof(ts__dir_entry));
            if (!nd) { ts__free(&s->env.alloc, copy, meta_len + 1); return TS_E_NOMEM; }
            s->dir = nd;
            s->dir_cap = ncap;
        }
        e = &s->dir[s->dir_count];
        memset(e, 0, sizeof *e);
        e->id = ts__strndup(&s->env.alloc, id, id_len);
        if (!e->id) { ts__free(&s->env.alloc, copy, meta_len + 1); return TS_E_NOMEM; }
        e->id_len = id_len;
        if ((r = ts__map_put(&s->dir_map, id, id_len, (uint64_t)s->dir_count)) != TS_OK) {
            ts__free(&s->env.alloc, e->id, id_len + 1);
            ts__free(&s->env.alloc, copy, meta_len + 1);
            return r;
        }
        s->dir_count++;
    }
    if (e->meta) ts__free(&s->env.alloc, e->meta, e->meta_len + 1);
    e->meta = copy;
    e->meta_len = copy ? meta_len : 0;
    e->has_start = copy ? ts__meta_start_time(copy, meta_len, &e->start) : 0;
    return TS_OK;
}

/* Adds the sessions of a manifest (a JSON array of metadata objects, each
   with a valid string "id") as base entries. TS_E_CORRUPT if malformed. */
TS__PRIVATE ts_result ts__dir_load_manifest(ts_store *s, const char *text, size_t n)
{
    ts__js_iter it;
    ts__span v, idv;
    ts_result r;
    char id[TS_SESSION_ID_MAX + 1];
    size_t id_len;
    /* one pass: each item is validated as the iterator skips it */
    if (!ts__js_iter_begin(&it, ts__js_trim(text, n), '[')) return TS_E_CORRUPT;
    while ((r = ts__js_iter_next(&it, NULL, &v)) == TS_OK) {
        if (!ts__js_get(v, "id", &idv) || idv.p[0] != '"') return TS_E_CORRUPT;
        if (!ts__js_str_decode_to(idv, id, TS_SESSION_ID_MAX, &id_len)) return TS_E_CORRUPT;
        if (!ts__valid_id(id, id_len)) return TS_E_CORRUPT;
        if ((r = ts__dir_set(s, id, id_len, v.p, v.n, 1)) != TS_OK) return r;
    }
    return r == TS_DONE && ts__js_iter_end_ok(&it) ? TS_OK : TS_E_CORRUPT;
}

TS__PRIVATE ts_result ts__meta_read(ts_store *s, const char *id, ts__buf *out);

/* The list could not record a change (out of memory): forget it. The next
   build must not take the manifest (it predates the change, trusted or
   not): it rescans the disk and replays the metadata writes still queued. */
TS__PRIVATE void ts__dir_lost(ts_store *s)
{
    ts__dir_free(s);
    ts__map_init(&s->dir_map, &s->env.alloc);
    s->dir_stale = 1;
}

/* Applies the queued writes and removals of metadata.json files (sessions
   whose folder is not on disk yet are only there). */
TS__PRIVATE ts_result ts__dir_replay_queue(ts_store *s)
{
    static const char pre[] = TS__SESS_DIR "/", suf[] = "/metadata.json";
    size_t pos = 0, n, idn;
    ts_queue_item_info info;
    ts_result r = TS_OK;
    if (!s->queue) return TS_OK;
    while (r == TS_OK && ts_queue_next(s->queue, &pos, &info) == TS_OK) {
        n = strlen(info.path);
        if (n <= sizeof pre + sizeof suf - 2 || memcmp(info.path, pre, sizeof pre - 1) != 0 ||
            memcmp(info.path + n - (sizeof suf - 1), suf, sizeof suf - 1) != 0)
            continue;
        idn = n - (sizeof pre - 1) - (sizeof suf - 1);
        if (!ts__valid_id(info.path + sizeof pre - 1, idn)) continue;
        r = ts__dir_set(s, info.path + sizeof pre - 1, idn,
                        info.op == TS_QUEUE_WRITE ? (const char *)info.data : NULL,
                        info.op == TS_QUEUE_WRITE ? info.len : 0, 0);
    }
    return r;
}

/* Reads every sessions-chunked/{id}/metadata.json as base entries. */
TS__PRIVATE ts_result ts__dir_scan(ts_store *s)
{
    ts__name_list l;
    ts__buf b;
    size_t i;
    ts_result r = ts__st_list(s, TS__SESS_DIR, 1, &l);
    if (r == TS_E_NOTFOUND) return TS_OK;
    if (r) return TS__FAIL(&s->env, r, "%s: cannot list", TS__SESS_DIR);
    ts__buf_init(&b, &s->env.alloc);
    for (i = 0; i < l.count && r == TS_OK; i++) {
        ts__meta m;
        uint64_t at;
        if (!ts__valid_id(l.names[i], l.lens[i])) continue;
        if (ts__map_get(&s->dir_map, l.names[i], l.lens[i], &at)) continue;
        r = ts__meta_read(s, l.names[i], &b);
        if (r == TS_E_NOTFOUND) { r = TS_OK; continue; } /* orphan folder */
        if (r == TS_E_NOMEM) break;
        /* an I/O error says nothing about the session: a list (and a GC
           marking from it) without it would be wrong, so the scan fails */
        if (r != TS_OK && r != TS_E_CORRUPT && r != TS_E_TOOBIG && r != TS_E_INVALID) {
            r = TS__FAIL(&s->env, r, TS__SESS_DIR "/%s/metadata.json: cannot read", l.names[i]);
            break;
        }
        if (r == TS_OK) {
            ts__meta_init(&m, &s->env.alloc);
            r = ts__meta_parse(&m, (const char *)b.data, b.len);
            ts__meta_free(&m);
        }
        if (r == TS_E_NOMEM) break;
        if (r != TS_OK) {
            /* one unreadable session must not hide the others */
            s->corrupt_sessions++;
            ts__log(&s->env, TS_LOG_WARN, r, __LINE__, "skipping a session with unreadable metadata");
            r = TS_OK;
            continue;
        }
        r = ts__dir_set(s, l.names[i], l.lens[i], (const char *)b.data, b.len, 1);
    }
    ts__buf_free(&b);
    ts__name_list_free(&l);
    return r;
}

/* Makes the directory complete: manifest (when trusted) or a scan, under the
   changes already recorded. */
TS__PRIVATE ts_result ts__dir_build(ts_store *s)
{
    ts_result r = TS_E_NOTFOUND;
    if (s->dir_complete) return TS_OK;
    if (s->trusted && !s->dir_stale) {
        ts__buf b;
        ts__buf_init(&b, &s->env.alloc);
        r = ts__st_read_all(s, TS__MANIFEST_PATH, &b);
        if (r == TS_OK) {
            size_t keep = s->dir_count;
            r = ts__dir_load_manifest(s, (const char *)b.data, b.len);
            if (r != TS_OK && r != TS_E_NOMEM) {
                /* a corrupt manifest: drop what it added and scan instead */
                size_t i;
                for (i = keep; i < s->dir_count; i++) {
                    ts__map_del(&s->dir_map, s->dir[i].id, s->dir[i].id_len);
                    ts__dir_entry_free(s, &s->dir[i]);
                }
                s->dir_count = keep;
                ts__log(&s->env, TS_LOG_WARN, r, __LINE__, "session-manifest unreadable: rescanning");
                r = TS_E_NOTFOUND;
            }
        }
        ts__buf_free(&b);
        if (r == TS_E_NOMEM) return r;
    }
    if (r != TS_OK) {
        if ((r = ts__dir_scan(s)) != TS_OK) return r;
        if (s->dir_stale && (r = ts__dir_replay_queue(s)) != TS_OK) return r;
        s->dir_changed = 1; /* the manifest on disk is missing or stale */
    }
    s->dir_stale = 0;
    s->dir_complete = 1;
    return TS_OK;
}


/* newest startTime first, sessions without one last, then by id */
TS__PRIVATE int ts__dir_before(const ts__dir_entry *a, const ts__dir_entry *b)
{
    if (a->has_start != b->has_start) return a->has_start;
    if (a->has_start && a->start != b->start) return a->start > b->start;
    return ts__memcmp_len(a->id, a->id_len, b->id, b->id_len) < 0;
}

/* Sorted indexes of the live entries (a merge sort; n may be 10^5). */
TS__PRIVATE ts_result ts__dir_sorted(ts_store *s, size_t **out, size_t *count)
{
    size_t *a, *t, n = 0, i, width;
    *out = NULL; *count = 0;
    a = (size_t *)ts__calloc(&s->env.alloc, s->dir_count + 1, sizeof(size_t));
    t = (size_t *)ts__calloc(&s->env.alloc, s->dir_count + 1, sizeof(size_t));
    if (!a || !t) {
        ts__free(&s->env.alloc, a, (s->dir_count + 1) * sizeof(size_t));
        ts__free(&s->env.alloc, t, (s->dir_count + 1) * sizeof(size_t));
        return TS_E_NOMEM;
    }
    for (i = 0; i < s->dir_count; i++) if (s->dir[i].meta) a[n++] = i;
    for (width = 1; width < n; width *= 2) {
        size_t lo;
        for (lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t x = lo, y = mid, k = lo;
            while (x < mid && y < hi)
                t[k++] = ts__dir_before(&s->dir[a[y]], &s->dir[a[x]]) ? a[y++] : a[x++];
            while (x < mid) t[k++] = a[x++];
            while (y < hi) t[k++] = a[y++];
        }
        memcpy(a, t, n * sizeof(size_t));
    }
    ts__free(&s->env.alloc, t, (s->dir_count + 1) * sizeof(size_t));
    *out = a;
    *count = n;
    return TS_OK;
}

/* The list as one JSON array (also the manifest's format). */
TS__PRIVATE ts_result ts__dir_write(ts_store *s, ts__buf *out)
{
    size_t *order = NULL, n = 0, i;
    ts_result r = ts__dir_sorted(s, &order, &n);
    out->len = 0;
    if (r) return r;
    r = ts__buf_putc(out, '[');
    for (i = 0; i < n && r == TS_OK; i++) {
        const ts__dir_entry *e = &s->dir[order[i]];
        if (i) r = ts__buf_puts(out, ",\n");
        if (r == TS_OK) r = ts__buf_append(out, e->meta, e->meta_len);
    }
    if (r == TS_OK) r = ts__buf_puts(out, "]\n");
    ts__free(&s->env.alloc, order, (s->dir_count + 1) * sizeof(size_t));
    return r;
}

/* ---- the index: a ts_index_doc from metadata ----------------------------- */

#define TS__INDEX_MAX_LIST 256

typedef struct ts__idoc {
    ts__buf strs;               /* decoded strings, NUL-separated */
    size_t off_name, off_desc, off_cat, off_sub, off_status;
    int has_name, has_desc, has_cat, has_sub, has_status;
    size_t tag_off[TS__INDEX_MAX_LIST], topic_off[TS__INDEX_MAX_LIST];
    size_t ntags, ntopics;
    const char *tags[TS__INDEX_MAX_LIST], *topics[TS__INDEX_MAX_LIST];
} ts__idoc;

/* Decodes string value v into d->strs; 1 and *off on success. */
TS__PRIVATE int ts__idoc_str(ts__idoc *d, ts__span v, size_t *off, ts_result *err)
{
    ts_result r;
    if (!v.n || v.p[0] != '"') return 0;
    *off = d->strs.len;
    if ((r = ts__js_str_decode(v, &d->strs)) != TS_OK ||
        (r = ts__buf_putc(&d->strs, 0)) != TS_OK) {
        *err = r;
        return 0;
    }
    return 1;
}

TS__PRIVATE void ts__idoc_list(ts__idoc *d, ts__span v, size_t *offs, size_t *n, ts_result *err)
{
    ts__js_iter it;
    ts__span x;
    *n = 0;
    if (!ts__js_iter_begin(&it, v, '[')) return;
    while (*n < TS__INDEX_MAX_LIST && ts__js_iter_next(&it, NULL, &x) == TS_OK)
        if (ts__idoc_str(d, x, &offs[*n], err)) (*n)++;
}

/* Fills doc from metadata text; d holds the decoded strings. */
TS__PRIVATE ts_result ts__idoc_fill(ts_store *s, ts__idoc *d, ts_index_doc *doc,
                                    const char *id, size_t id_len, const char *meta,
                                    size_t meta_len)
{
    ts__span obj = ts__js_trim(meta, meta_len), v;
    ts_result err = TS_OK;
    size_t i;
    memset(doc, 0, sizeof *doc);
    ts__buf_init(&d->strs, &s->env.alloc);
    d->has_name = d->has_desc = d->has_cat = d->has_sub = d->has_status = 0;
    d->ntags = d->ntopics = 0;
    if (ts__js_get(obj, "name", &v)) d->has_name = ts__idoc_str(d, v, &d->off_name, &err);
    if (ts__js_get(obj, "description", &v)) d->has_desc = ts__idoc_str(d, v, &d->off_desc, &err);
    if (ts__js_get(obj, "category", &v)) d->has_cat = ts__idoc_str(d, v, &d->off_cat, &err);
    if (ts__js_get(obj, "subCategory", &v)) d->has_sub = ts__idoc_str(d, v, &d->off_sub, &err);
    if (ts__js_get(obj, "status", &v)) d->has_status = ts__idoc_str(d, v, &d->off_status, &err);
    if (ts__js_get(obj, "tags", &v)) ts__idoc_list(d, v, d->tag_off, &d->ntags, &err);
    if (ts__js_get(obj, "topicIds", &v) || ts__js_get(obj, "topics", &v))
        ts__idoc_list(d, v, d->topic_off, &d->ntopics, &err);
    if (err) { ts__buf_free(&d->strs); return err; }
    if (!d->strs.data && (err = ts__buf_reserve(&d->strs, 0)) != TS_OK) return err;
    doc->id = id;
    doc->id_len = id_len;
    if (ts__js_get(obj, "startTime", &v)) doc->has_start_time = ts__js_int64(v, &doc->start_time_ms);
#define TS__IDOC_STR(flag, off, field, flen)                                     \
    if (d->flag) { doc->field = (const char *)d->strs.data + d->off;             \
                   doc->flen = strlen(doc->field); }
    TS__IDOC_STR(has_name, off_name, name, name_len)
    TS__IDOC_STR(has_desc, off_desc, description, description_len)
    TS__IDOC_STR(has_cat, off_cat, category, category_len)
    TS__IDOC_STR(has_sub, off_sub, sub_category, sub_category_len)
    TS__IDOC_STR(has_status, off_status, status, status_len)
#undef TS__IDOC_STR
    for (i = 0; i < d->ntags; i++) d->tags[i] = (const char *)d->strs.data + d->tag_off[i];
    for (i = 0; i < d->ntopics; i++) d->topics[i] = (const char *)d->strs.data + d->topic_off[i];
    doc->tags = d->tags;
    doc->tag_count = d->ntags;
    doc->topics = d->topics;
    doc->topic_count = d->ntopics;
    return TS_OK;
}

/* Reads session-indexes the first time the index is needed (not at open:
   listing sessions should not pay for it). */
TS__PRIVATE void ts__index_ensure(ts_store *s)
{
    ts__buf b;
    if (!s->index || !s->index_load_pending) return;
    s->index_load_pending = 0;
    ts__buf_init(&b, &s->env.alloc);
    if (ts__st_read_all(s, TS__INDEX_PATH, &b) == TS_OK &&
        ts_index_load(s->index, b.data, b.len) == TS_OK)
        s->index_valid = 1;
    ts__buf_free(&b);
}

/* Keeps the index current for one session (meta NULL: removed). Index
   failures never fail the caller's write: the index is derived, so it is
   marked invalid and rebuilt later. */
TS__PRIVATE void ts__index_update(ts_store *s, const char *id, size_t id_len,
                                  const char *meta, size_t meta_len)
{
    ts__idoc *d;
    ts_index_doc doc;
    ts__index_ensure(s);
    if (!s->index || !s->index_valid) return;
    s->index_changed = 1;
    if (!meta) {
        ts_index_remove(s->index, id, id_len);
        return;
    }
    d = (ts__idoc *)ts__alloc(&s->env.alloc, sizeof *d);
    if (!d) { s->index_valid = 0; return; }
    if (ts__idoc_fill(s, d, &doc, id, id_len, meta, meta_len) != TS_OK ||
        ts_index_put(s->index, &doc) != TS_OK)
        s->index_valid = 0;
    ts__buf_free(&d->strs);
    ts__free(&s->env.alloc, d, sizeof *d);
}

/* Builds the index from the complete session directory. */
TS__PRIVATE ts_result ts__index_rebuild(ts_store *s)
{
    size_t i;
    ts_result r;
    if (!s->index) return TS_E_STATE;
    if ((r = ts__dir_build(s)) != TS_OK) return r;
    s->index_load_pending = 0;
    ts_index_clear(s->index);
    s->index_valid = 1;
    for (i = 0; i < s->dir_count && s->index_valid; i++)
        if (s->dir[i].meta)
            ts__index_update(s, s->dir[i].id, s->dir[i].id_len, s->dir[i].meta, s->dir[i].meta_len);
    if (!s->index_valid) return TS__FAIL(&s->env, TS_E_NOMEM, "index rebuild failed");
    s->index_changed = 1;
    return TS_OK;
}

/* ---- the write path: a thin adapter over ts_queue --------------------------- */

#define TS__PRIO_CRITICAL TS_PRIO_CRITICAL
#define TS__PRIO_NORMAL TS_PRIO_NORMAL
#define TS__PRIO_LOW TS_PRIO_LOW

TS__PRIVATE ts_result ts__w_create(ts_store *s)
{
    ts_queue_config qc = ts_queue_config_default();
    ts_result r;
    qc.allocator = s->env.alloc;
    qc.logger = s->env.logger;
    qc.capacity[0] = qc.capacity[1] = qc.capacity[2] = s->cfg.queue_capacity;
    qc.batch_window_ms = s->cfg.batch_window_ms;
    qc.busy_error = s->cfg.queue_busy_error;
    r = ts_queue_open(&s->io, &qc, &s->queue);
    if (r == TS_OK) ts_queue_set_now(s->queue, s->now_ms);
    return r;
}

TS__PRIVATE void ts__w_destroy(ts_store *s)
{
    ts_queue_close(s->queue);
    s->queue = NULL;
}

TS__PRIVATE ts_result ts__w_req(ts_store *s, ts_queue_op op, const char *path, const void *data,
                                size_t len, int prio, const char *const *deps, size_t ndeps)
{
    ts_queue_req req;
    ts_result r;
    if (!s->queue) return TS_E_STATE;
    memset(&req, 0, sizeof req);
    req.op = op;
    req.path = path;
    req.data = len ? data : NULL;
    req.len = len;
    req.prio = (ts_queue_priority)prio;
    req.after = deps;
    req.after_count = ndeps;
    r = ts_queue_push_ex(s->queue, &req, NULL);
    if (r != TS_OK) {
        ts_error_info ei;
        ts_queue_last_error(s->queue, &ei);
        return TS__FAIL(&s->env, r, "%s: cannot queue: %s", path, ei.message);
    }
    return TS_OK;
}

TS__PRIVATE ts_result ts__w_put(ts_store *s, const char *path, const void *data, size_t len,
                                int prio, const char *const *deps, size_t ndeps)
{
    return ts__w_req(s, TS_QUEUE_WRITE, path, data, len, prio, deps, ndeps);
}

TS__PRIVATE ts_result ts__w_remove(ts_store *s, const char *path, int prio,
                                   const char *const *deps, size_t ndeps)
{
    return ts__w_req(s, TS_QUEUE_DELETE, path, NULL, 0, prio, deps, ndeps);
}

/* 1: a pending write (data/len), 2: a pending delete, 0: nothing queued. */
TS__PRIVATE int ts__w_lookup(ts_store *s, const char *path, const void **data, size_t *len)
{
    ts_result r;
    if (!s->queue) return 0;
    r = ts_queue_lookup(s->queue, path, data, len);
    if (r == TS_OK) return 1;
    if (r == TS_E_NOTFOUND) return 2;
    return 0;
}

TS__PRIVATE ts_result ts__w_fail(ts_store *s, ts_result r, const char *what)
{
    ts_error_info ei;
    if (r == TS_OK || r == TS_DONE) return TS_OK;
    ts_queue_last_error(s->queue, &ei);
    return TS__FAIL(&s->env, r, "%s: %s", what, ei.message);
}

TS__PRIVATE ts_result ts__w_flush(ts_store *s)
{
    if (!s->queue) return TS_OK;
    return ts__w_fail(s, ts_queue_flush(s->queue), "flush");
}

TS__PRIVATE ts_result ts__w_tick(ts_store *s, uint64_t budget_us)
{
    return ts__w_fail(s, ts_queue_tick(s->queue, s->now_ms, budget_us), "tick");
}

TS__PRIVATE ts_result ts__w_idle(ts_store *s, uint64_t budget_us)
{
    return ts__w_fail(s, ts_queue_idle(s->queue, s->now_ms, budget_us), "idle");
}

TS__PRIVATE void ts__w_stats(ts_store *s, ts_store_stats *out)
{
    ts_queue_stats qs;
    ts_queue_item_info info;
    size_t pos = 0;
    uint64_t bytes = 0;
    if (!s->queue) return;
    ts_queue_get_stats(s->queue, &qs);
    out->queue.pending = qs.pending[0] + qs.pending[1] + qs.pending[2];
    while (ts_queue_next(s->queue, &pos, &info) == TS_OK) bytes += info.len;
    out->queue.pending_bytes = bytes;
    out->queue.enqueued = qs.enqueued;
    out->queue.completed = qs.completed;
    out->queue.coalesced = qs.coalesced;
    out->queue.failed = qs.failed;
    out->queue.retried = qs.retries;
}

/* ---- attachments: ts_cas with its writes routed through the queue --------
   The CA store's own writer is synchronous; the store installs one that
   enqueues instead (data before the metadata naming it, through the queue's
   after-paths), so appending a screenshot does no I/O on the caller's path
   and its record's chunk can be ordered after the object's metadata. */

#define TS__CAS_DIR "attachments-ca"

TS__PRIVATE int ts__cas_is_object_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *last = slash ? slash + 1 : path;
    return ts__valid_hash_hex(last, strlen(last));
}

TS__PRIVATE ts_result ts__cw_write(void *user, const char *path, const void *data, size_t len,
                                   int prio, const char *after_path)
{
    ts_store *s = (ts_store *)user;
    const char *deps[2];
    size_t n = 0;
    if (after_path) deps[n++] = after_path;
    if (s->cas_after.len) deps[n++] = (const char *)s->cas_after.data;
    return ts__w_put(s, path, data, len, prio, deps, n);
}

TS__PRIVATE ts_result ts__cw_stat(void *user, const char *path, ts_io_stat *out)
{
    ts_store *s = (ts_store *)user;
    const void *d = NULL;
    size_t len = 0;
    int st = ts__w_lookup(s, path, &d, &len);
    memset(out, 0, sizeof *out);
    if (st == 1) { out->size = len; return TS_OK; }
    if (st == 2) return TS_E_NOTFOUND;
    if (!s->io.stat_fn) return TS_E_NOTIMPL;
    return s->io.stat_fn(s->io.user, path, out);
}

TS__PRIVATE ts_result ts__cw_remove(void *user, const char *path, int prio)
{
    ts_store *s = (ts_store *)user;
    const char *deps[1];
    ts_io_stat st;
    ts_result r;
    /* object directories are left in place: a queued directory removal
       could fail for good on a foreign file and block the queue */
    if (ts__cas_is_object_dir(path)) return TS_OK;
    if ((r = ts__cw_stat(user, path, &st)) != TS_OK) return r;
    deps[0] = (const char *)s->cas_after.data;
    return ts__w_remove(s, path, prio, deps, s->cas_after.len ? 1 : 0);
}

TS__PRIVATE ts_result ts__cw_read(void *user, const char *path, void *buf, size_t cap,
                                  size_t *size_out)
{
    ts_store *s = (ts_store *)user;
    const void *d = NULL;
    size_t len = 0;
    int st = ts__w_lookup(s, path, &d, &len);
    *size_out = 0;
    if (st == 2) return TS_E_NOTFOUND;
    if (st == 1) {
        *size_out = len;
        if (len > cap) {
            if (cap) memcpy(buf, d, cap);
            return TS_E_RANGE;
        }
        if (len) memcpy(buf, d, len);
        return TS_OK;
    }
    if (!s->io.read_file_fn) return TS_E_NOTIMPL;
    return s->io.read_file_fn(s->io.user, path, buf, cap, size_out);
}

/* Later CAS removes and writes wait for what was removed before the barrier
   (the metadata of an object before its data). */
TS__PRIVATE ts_result ts__cw_barrier(void *user, const char *dir)
{
    ts_store *s = (ts_store *)user;
    s->cas_after.len = 0;
    return ts__buf_printf(&s->cas_after, "%s/metadata.json", dir);
}

TS__PRIVATE ts_result ts__cas_create(ts_store *s)
{
    ts_cas_config cc = ts_cas_config_default();
    ts__cas_writer w;
    ts_result r;
    cc.io = &s->io;
    cc.allocator = s->env.alloc;
    cc.logger = s->env.logger;
    cc.gc_grace_ms = (int64_t)s->cfg.gc_grace_ms;
    if ((r = ts_cas_open(&cc, &s->cas)) != TS_OK) return r;
    memset(&w, 0, sizeof w);
    w.user = s;
    w.write_fn = ts__cw_write;
    w.remove_fn = ts__cw_remove;
    w.read_fn = ts__cw_read;
    w.stat_fn = ts__cw_stat;
    w.mkdir_fn = NULL;
    w.barrier_fn = ts__cw_barrier;
    ts__cas_set_writer(s->cas, &w);
    return TS_OK;
}

TS__PRIVATE void ts__cas_destroy(ts_store *s)
{
    ts_cas_close(s->cas);
    s->cas = NULL;
}

/* The attachment id a record's reference uses: its "id" when that is a
   valid id, else "{stream}.{index}". key_out: "hash:attachmentId". */
TS__PRIVATE int ts__record_ref(ts__span rec, const char *stream, uint64_t index, char *key, size_t cap)
{
    char hex[65], aid[TS_SESSION_ID_MAX + 1];
    ts__span v;
    size_t n = 0;
    if (!ts__record_hash(rec, hex)) return 0;
    if (!(ts__js_get(rec, "id", &v) && v.p[0] == '"' &&
          ts__js_str_decode_to(v, aid, TS_SESSION_ID_MAX, &n) && ts__valid_id(aid, n))) {
        int k = snprintf(aid, sizeof aid, "%s.%llu", stream, (unsigned long long)index);
        if (k <= 0 || (size_t)k >= sizeof aid) return 0;
        n = (size_t)k;
    }
    aid[n] = 0;
    return snprintf(key, cap, "%s:%s", hex, aid) > 0;
}

/* Adds (add=1) or releases the reference "hash:attachmentId" of session id. */
TS__PRIVATE void ts__cas_ref(ts_store *s, const char *key, const char *id, int add)
{
    char hex[65];
    const char *aid = key + 65;
    ts_result r;
    if (!s->cas || strlen(key) < 66 || key[64] != ':') return;
    memcpy(hex, key, 64);
    hex[64] = 0;
    if (add) {
        ts_cas_ref ref;
        ref.session_id = id;
        ref.attachment_id = aid;
        ref.added_at_ms = s->now_ms;
        r = ts_cas_ref_add(s->cas, hex, &ref);
    } else {
        r = ts_cas_ref_remove(s->cas, hex, id, aid);
        s->gc_wanted = 1;
    }
    if (r != TS_OK && r != TS_E_NOTFOUND)
        ts__log(&s->env, TS_LOG_WARN, r, __LINE__, "attachment reference not updated (verify repairs it)");
}

TS__PRIVATE ts_result ts__cas_put(ts_store *s, const void *data, size_t len, const char *mime,
                                  char hex[65])
{
    ts_result r = ts_cas_save(s->cas, data, len, mime, NULL, s->now_ms, hex);
    if (r != TS_OK) {
        ts_error_info ei;
        ts_cas_last_error(s->cas, &ei);
        return TS__FAIL(&s->env, r, "attachment: %s", ei.message);
    }
    return TS_OK;
}

TS__PRIVATE void ts__cas_stats(ts_store *s, ts_store_stats *out)
{
    ts_cas_stats cs;
    if (ts_cas_stats_get(s->cas, 0, &cs) != TS_OK) return;
    out->attachments.objects = cs.objects;
    out->attachments.logical_bytes = cs.logical_bytes;
    out->attachments.stored_bytes = cs.stored_bytes;
    out->attachments.dedup_saved_bytes = cs.dedup_saved_bytes;
}

/* The references of records spans[0..n) of a stream whose first has index
   first, into set. */
TS__PRIVATE ts_result ts__spans_refs(const char *stream, uint64_t first, const ts__span *sp,
                                     uint64_t n, ts__map *set)
{
    uint64_t j;
    ts_result r = TS_OK;
    for (j = 0; j < n && r == TS_OK; j++) {
        char key[64 + TS_SESSION_ID_MAX + 8];
        if (ts__record_ref(sp[j], stream, first + j, key, sizeof key))
            r = ts__map_put(set, key, strlen(key), 0);
    }
    return r;
}

/* ---- the read path: overlay of pending writes -> LRU -> vtable ----------- */

/* Reads path (cache key key) into out. TS_E_NOTFOUND when absent (also when
   a removal of it is pending). */
TS__PRIVATE ts_result ts__read(ts_store *s, const char *path, const char *key, ts__buf *out)
{
    const void *data = NULL;
    size_t len = 0, klen = strlen(key);
    int st;
    ts_result r;
    out->len = 0;
    /* the key helpers answer "" when they cannot allocate: never look that up */
    if (!klen) return TS_E_NOMEM;
    st = ts__w_lookup(s, path, &data, &len);
    if (st == 2) /* a queued delete: the file may live on as its twin (>>codecs) */
        return ts__codec_read_twin(&s->codecs, s->queue, &s->io, &s->env, path,
                                   TASKSTORE_MAX_FILE_BYTES, out);
    if (st == 1) {
        if ((r = ts__buf_append(out, data, len)) != TS_OK) return r;
        return ts__buf_reserve(out, 0);
    }
    if (s->lru && ts_lru_get(s->lru, key, klen, s->now_ms, &data, &len) == TS_OK) {
        if ((r = ts__buf_append(out, data, len)) != TS_OK) return r;
        return ts__buf_reserve(out, 0);
    }
    r = ts__st_read_all(s, path, out);
    if (r == TS_E_NOTFOUND) {
        /* stored compressed: path.z, decoded (>>codecs, THE TWIN RULE); its
           failures are recorded with the twin's path */
        r = ts__codec_read_twin(&s->codecs, s->queue, &s->io, &s->env, path,
                                TASKSTORE_MAX_FILE_BYTES, out);
        if (r != TS_OK) return r;
    } else if (r != TS_OK) {
        return TS__FAIL(&s->env, r, "%s: read failed", path);
    }
    if (s->lru) ts_lru_put_copy(s->lru, key, klen, out->data, out->len, 0, s->now_ms);
    return TS_OK;
}

/* Enqueues a write of path and refreshes the cache entry. */
TS__PRIVATE ts_result ts__write(ts_store *s, const char *path, const char *key,
                                const void *data, size_t len, int prio,
                                const char *const *deps, size_t ndeps)
{
    ts_result r;
    /* a key that could not be built ("") would leave the old cache entry
       to answer later reads: fail before anything is queued */
    if (key && !key[0]) return TS_E_NOMEM;
    r = ts__w_put(s, path, data, len, prio, deps, ndeps);
    if (r != TS_OK) return r;
    if (s->lru && key) {
        size_t klen = strlen(key);
        if (ts_lru_put_copy(s->lru, key, klen, data, len, 0, s->now_ms) != TS_OK)
            ts_lru_delete(s->lru, key, klen);
    }
    return TS_OK;
}

TS__PRIVATE ts_result ts__remove(ts_store *s, const char *path, const char *key, int prio,
                                 const char *const *deps, size_t ndeps)
{
    char twin[TASKSTORE_MAX_PATH + 4];
    ts_result r;
    if (key && !key[0]) return TS_E_NOMEM;
    r = ts__w_remove(s, path, prio, deps, ndeps);
    if (r != TS_OK) return r;
    /* the removal is queued: from now on the cache must not answer for it */
    if (s->lru && key) ts_lru_delete(s->lru, key, strlen(key));
    /* and its compressed twin, if it has one (absent counts as done). A twin
       left behind is never read: the metadata no longer counts the file. */
    if (ts__codec_twin_path(path, twin, sizeof twin) &&
        (r = ts__w_remove(s, twin, prio, deps, ndeps)) != TS_OK)
        ts__log(&s->env, TS_LOG_WARN, r, __LINE__, "compressed twin not removed (verify removes it)");
    return TS_OK;
}

/* Cache keys (the seed naming): metadata:{id}, {stream}:{id}:{chunk},
   {document}:{id}. */
TS__PRIVATE const char *ts__key_meta(ts__buf *k, const char *id)
{
    k->len = 0;
    if (ts__buf_printf(k, "metadata:%s", id) != TS_OK) return "";
    return (const char *)k->data;
}
/* The generation is part of a chunk's key (as of its path): a call that
   failed after queueing a new generation's chunks must not let the old
   metadata read them back from the cache. */
TS__PRIVATE const char *ts__key_chunk(ts__buf *k, const char *id, const char *stream, uint32_t gen,
                                      uint64_t c)
{
    k->len = 0;
    if (ts__buf_printf(k, "%s:%s:%llu.g%u", stream, id, (unsigned long long)c, gen) != TS_OK) return "";
    return (const char *)k->data;
}
TS__PRIVATE const char *ts__key_doc(ts__buf *k, const char *id, int doc)
{
    k->len = 0;
    if (ts__buf_printf(k, "%s:%s", ts__doc_names[doc], id) != TS_OK) return "";
    return (const char *)k->data;
}

/* metadata.json of id through the read path. */
TS__PRIVATE ts_result ts__meta_read(ts_store *s, const char *id, ts__buf *out)
{
    ts__buf p, k;
    ts_result r;
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    r = ts__path_meta(&p, id);
    if (r == TS_OK) r = ts__read(s, (const char *)p.data, ts__key_meta(&k, id), out);
    ts__buf_free(&p);
    ts__buf_free(&k);
    return r;
}

/* Reads and parses the metadata of id into m (initialised by the caller). */
TS__PRIVATE ts_result ts__meta_get(ts_store *s, const char *id, ts__meta *m)
{
    ts__buf b;
    ts_result r;
    ts__buf_init(&b, &s->env.alloc);
    r = ts__meta_read(s, id, &b);
    if (r == TS_OK) {
        r = ts__meta_parse(m, (const char *)b.data, b.len);
        if (r != TS_OK && r != TS_E_NOMEM)
            r = TS__FAIL(&s->env, r, TS__SESS_DIR "/%s/metadata.json: %s", id, ts_result_str(r));
    }
    ts__buf_free(&b);
    return r;
}

/* Writes metadata m of id (after deps) and updates the list and the index. */
TS__PRIVATE ts_result ts__meta_put(ts_store *s, const char *id, const ts__meta *m,
                                   const char *const *deps, size_t ndeps)
{
    ts__buf text, p, k;
    ts_result r;
    ts__buf_init(&text, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    r = ts__meta_write(m, &text);
    if (r == TS_OK) r = ts__path_meta(&p, id);
    if (r == TS_OK)
        r = ts__write(s, (const char *)p.data, ts__key_meta(&k, id), text.data, text.len,
                      TS__PRIO_NORMAL, deps, ndeps);
    if (r == TS_OK) {
        size_t id_len = strlen(id);
        if (ts__dir_set(s, id, id_len, (const char *)text.data, text.len, 0) != TS_OK)
            ts__dir_lost(s); /* the list is derived: rebuilt on demand */
        s->dir_changed = 1;
        ts__index_update(s, id, id_len, (const char *)text.data, text.len);
    }
    ts__buf_free(&text);
    ts__buf_free(&p);
    ts__buf_free(&k);
    return r;
}

/* ---- argument checks ------------------------------------------------------ */

TS__PRIVATE ts_result ts__check_id(ts_store *s, const char *id)
{
    if (!s) return TS_E_INVALID;
    if (!id || !ts__valid_id(id, strlen(id)))
        return TS__FAIL(&s->env, TS_E_INVALID, "invalid session id");
    return TS_OK;
}

TS__PRIVATE ts_result ts__check_write(ts_store *s, const char *id)
{
    ts_result r = ts__check_id(s, id);
    if (r) return r;
    if (s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "store is read-only");
    return TS_OK;
}

/* A name a stream may have: valid, not a document's, not a key the
   metadata reserves (the legacy shape could not carry it: save(load(x))
   would drop it). Every call that creates a stream checks it. */
TS__PRIVATE int ts__stream_name_ok(const char *name, size_t n)
{
    return ts__valid_stream_name(name, n) && ts__doc_index(name, n) < 0 &&
           !(n == 8 && memcmp(name, "metadata", 8) == 0) &&
           !(n == 14 && memcmp(name, "storageVersion", 14) == 0) &&
           !(n == 7 && memcmp(name, "chunked", 7) == 0);
}

TS__PRIVATE const ts__stream_def *ts__stream_def_find(const ts_store *s, const char *name, size_t n)
{
    uint32_t i;
    for (i = 0; i < s->nstreams; i++)
        if (strlen(s->streams[i].name) == n && memcmp(s->streams[i].name, name, n) == 0)
            return &s->streams[i];
    return NULL;
}

TASKSTORE_DEF ts_result ts_store_add_stream(ts_store *s, const char *name, uint32_t per_chunk)
{
    size_t n;
    ts__stream_def *d;
    if (!s || !name) return TS_E_INVALID;
    n = strlen(name);
    if (!ts__stream_name_ok(name, n))
        return TS__FAIL(&s->env, TS_E_INVALID, "invalid stream name");
    d = (ts__stream_def *)ts__stream_def_find(s, name, n);
    if (!d) {
        if (s->nstreams >= TS__MAX_STREAMS) return TS__FAIL(&s->env, TS_E_RANGE, "stream table full");
        d = &s->streams[s->nstreams++];
        memcpy(d->name, name, n + 1);
    }
    d->per_chunk = per_chunk;
    return TS_OK;
}

/* ---- chunks --------------------------------------------------------------- */

/* Reads chunk c of stream st of id and splits it into the `want` records
   the metadata counts. spans point into buf. */
TS__PRIVATE ts_result ts__chunk_get(ts_store *s, const char *id, const ts__meta_stream *st,
                                    uint64_t c, ts__buf *buf, ts__span *spans, uint64_t want)
{
    ts__buf p, k;
    ts_result r;
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    r = ts__path_chunk(&p, id, st->name, st->gen, c);
    if (r == TS_OK) r = ts__read(s, (const char *)p.data, ts__key_chunk(&k, id, st->name, st->gen, c), buf);
    if (r == TS_OK) {
        r = ts__chunk_split((const char *)buf->data, buf->len, want, spans);
        if (r != TS_OK) r = TS__FAIL(&s->env, TS_E_CORRUPT, "%s: holds fewer records than counted or is malformed",
                                     (const char *)p.data);
    } else if (r == TS_E_NOTFOUND) {
        r = TS__FAIL(&s->env, TS_E_CORRUPT, "%s: missing (counted by metadata)", (const char *)p.data);
    }
    ts__buf_free(&p);
    ts__buf_free(&k);
    return r;
}

/* Span array sized for one chunk's records. */
TS__PRIVATE ts__span *ts__spans_alloc(ts_store *s, uint64_t n, size_t *bytes)
{
    size_t sz;
    if (n > TASKSTORE_MAX_FILE_BYTES / 2 || !ts__size_mul((size_t)n + 1, sizeof(ts__span), &sz))
        return NULL;
    *bytes = sz;
    return (ts__span *)ts__alloc(&s->env.alloc, sz);
}

/* Enqueues the chunk files of stream `name` holding records recs[0..n) as
   generation gen; the write ids go to ids (appended). */
typedef struct ts__pathlist {
    char **p;
    size_t count, cap;
    const ts_allocator *alloc;
} ts__pathlist;

TS__PRIVATE void ts__pathlist_init(ts__pathlist *l, const ts_allocator *a)
{
    l->p = NULL; l->count = l->cap = 0; l->alloc = a;
}

TS__PRIVATE ts_result ts__pathlist_add(ts__pathlist *l, const char *path)
{
    char *c;
    if (l->count == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        char **n = (char **)ts__realloc(l->alloc, l->p, l->cap * sizeof(char *),
                                        ncap * sizeof(char *));
        if (!n) return TS_E_NOMEM;
        l->p = n;
        l->cap = ncap;
    }
    c = ts__strndup(l->alloc, path, strlen(path));
    if (!c) return TS_E_NOMEM;
    l->p[l->count++] = c;
    return TS_OK;
}

TS__PRIVATE void ts__pathlist_free(ts__pathlist *l)
{
    size_t i;
    for (i = 0; i < l->count; i++) ts__free(l->alloc, l->p[i], strlen(l->p[i]) + 1);
    ts__free(l->alloc, l->p, l->cap * sizeof(char *));
    l->p = NULL; l->count = l->cap = 0;
}

/* The queue takes at most TS_QUEUE_MAX_AFTER after-paths per item. A file
   written after more files than that (a whole session's chunks) gets the
   last TS_QUEUE_MAX_AFTER of them, and each of those was queued after the
   one TS_QUEUE_MAX_AFTER before it, so the order holds transitively. */
TS__PRIVATE void ts__pathlist_tail(const ts__pathlist *l, const char *const **deps, size_t *n)
{
    size_t k = l->count > TS_QUEUE_MAX_AFTER ? TS_QUEUE_MAX_AFTER : l->count;
    *deps = l->p ? (const char *const *)(l->p + (l->count - k)) : NULL;
    *n = k;
}

/* Enqueues the chunk files of stream st holding records recs[0..n); their
   paths are added to paths. */
TS__PRIVATE ts_result ts__stream_write_all(ts_store *s, const char *id, const ts__meta_stream *st,
                                           const ts__span *recs, uint64_t n, ts__pathlist *paths)
{
    ts__buf text, p, k;
    uint64_t c, nchunks = ts__stream_chunks(n, st->per_chunk);
    ts_result r = TS_OK;
    ts__buf_init(&text, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    for (c = 0; c < nchunks && r == TS_OK; c++) {
        uint64_t first = st->per_chunk ? c * st->per_chunk : 0;
        uint64_t cnt = ts__chunk_records(n, st->per_chunk, c);
        const char *const *dep = NULL;
        size_t ndep = 0;
        if (paths->count >= TS_QUEUE_MAX_AFTER) {
            dep = (const char *const *)(paths->p + (paths->count - TS_QUEUE_MAX_AFTER));
            ndep = 1;
        }
        r = ts__chunk_write(&text, recs + first, (size_t)cnt);
        if (r == TS_OK) r = ts__path_chunk(&p, id, st->name, st->gen, c);
        if (r == TS_OK)
            r = ts__write(s, (const char *)p.data, ts__key_chunk(&k, id, st->name, st->gen, c), text.data,
                          text.len, TS__PRIO_NORMAL, dep, ndep);
        if (r == TS_OK) r = ts__pathlist_add(paths, (const char *)p.data);
    }
    ts__buf_free(&text);
    ts__buf_free(&p);
    ts__buf_free(&k);
    return r;
}

/* Enqueues removal of chunks [from, to) of generation gen (after deps). */
TS__PRIVATE ts_result ts__stream_remove_chunks(ts_store *s, const char *id, const char *stream,
                                               uint32_t gen, uint64_t from, uint64_t to,
                                               const char *const *deps, size_t ndeps)
{
    ts__buf p;
    uint64_t c;
    ts_result r = TS_OK;
    ts__buf_init(&p, &s->env.alloc);
    for (c = from; c < to && r == TS_OK; c++) {
        r = ts__path_chunk(&p, id, stream, gen, c);
        if (r == TS_OK) r = ts__remove(s, (const char *)p.data, NULL, TS__PRIO_LOW, deps, ndeps);
    }
    ts__buf_free(&p);
    return r;
}

/* ---- attachment references -------------------------------------------------- */

/* Collects the attachment references ("hash:attachmentId") of the records
   of every stream of a session into set. */
TS__PRIVATE ts_result ts__session_hashes(ts_store *s, const char *id, ts__meta *m, ts__map *set)
{
    uint32_t i;
    ts__buf buf;
    ts_result r = TS_OK;
    ts__buf_init(&buf, &s->env.alloc);
    for (i = 0; i < m->nstreams && r == TS_OK; i++) {
        ts__meta_stream *st = &m->streams[i];
        uint64_t c, nch = ts__stream_chunks(st->count, st->per_chunk);
        for (c = 0; c < nch && r == TS_OK; c++) {
            uint64_t want = ts__chunk_records(st->count, st->per_chunk, c);
            uint64_t base = st->per_chunk ? c * st->per_chunk : 0;
            size_t sb = 0;
            ts__span *sp = ts__spans_alloc(s, want, &sb);
            if (!sp) { r = TS_E_NOMEM; break; }
            r = ts__chunk_get(s, id, st, c, &buf, sp, want);
            if (r == TS_OK) r = ts__spans_refs(st->name, base, sp, want, set);
            ts__free(&s->env.alloc, sp, sb);
        }
    }
    ts__buf_free(&buf);
    return r;
}

/* Adds references of session id in add but not in old, releases those in
   old but not in add. Reference counts are derived data (GC is mark-and-
   sweep and verify recomputes them), so a failure is logged, not returned. */
TS__PRIVATE void ts__refs_update(ts_store *s, const char *id, const ts__map *add, const ts__map *old)
{
    size_t pos = 0;
    const ts__map_slot *sl;
    if (!s->cas) return;
    if (add) {
        while ((sl = ts__map_next(add, &pos)) != NULL)
            if (!old || !ts__map_get(old, sl->key, sl->key_len, NULL))
                ts__cas_ref(s, sl->key, id, 1);
    }
    pos = 0;
    if (old) {
        while ((sl = ts__map_next(old, &pos)) != NULL)
            if (!add || !ts__map_get(add, sl->key, sl->key_len, NULL))
                ts__cas_ref(s, sl->key, id, 0);
    }
}

/* ---- metadata ------------------------------------------------------------------ */

TASKSTORE_DEF ts_result ts_session_load_meta(ts_store *s, const char *id, ts_blob *out)
{
    ts__buf b;
    ts_result r;
    ts__blob_zero(out);
    if (!out) return TS_E_INVALID;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    ts__buf_init(&b, &s->env.alloc);
    r = ts__meta_read(s, id, &b);
    if (r == TS_OK) {
        /* only well-formed metadata is handed out */
        ts__meta m;
        ts__meta_init(&m, &s->env.alloc);
        r = ts__meta_parse(&m, (const char *)b.data, b.len);
        ts__meta_free(&m);
        if (r != TS_OK && r != TS_E_NOMEM)
            r = TS__FAIL(&s->env, r, TS__SESS_DIR "/%s/metadata.json: %s", id, ts_result_str(r));
    }
    if (r == TS_OK) ts__blob_from_buf(out, &b, &s->env.alloc);
    ts__buf_free(&b);
    return r;
}

TS__PRIVATE int ts__is_stream_key(ts_store *s, ts__span key, ts__span val)
{
    char name[TS__NAME_MAX + 1];
    size_t n = 0;
    if (val.p[0] != '[') return 0;
    if (!ts__js_str_decode_to(key, name, TS__NAME_MAX, &n)) return 0;
    return ts__stream_def_find(s, name, n) != NULL;
}

TS__PRIVATE int ts__doc_key(ts__span key)
{
    char name[TS__NAME_MAX + 1];
    size_t n = 0;
    if (!ts__js_str_decode_to(key, name, TS__NAME_MAX, &n)) return -1;
    return ts__doc_index(name, n);
}

/* Checks the "id" member of a session object against id (or takes it). */
TS__PRIVATE ts_result ts__obj_id(ts_store *s, ts__span obj, char *id_buf, const char *want)
{
    ts__span v;
    size_t n = 0;
    if (!ts__js_get(obj, "id", &v)) {
        if (want) return TS_OK;
        return TS__FAIL(&s->env, TS_E_INVALID, "session object has no \"id\"");
    }
    if (v.p[0] != '"' || !ts__js_str_decode_to(v, id_buf, TS_SESSION_ID_MAX, &n) ||
        !ts__valid_id(id_buf, n))
        return TS__FAIL(&s->env, TS_E_INVALID, "session \"id\" is not a valid id");
    id_buf[n] = 0;
    if (want && strcmp(want, id_buf) != 0)
        return TS__FAIL(&s->env, TS_E_INVALID, "\"id\" %s does not match %s", id_buf, want);
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_session_save_meta(ts_store *s, const char *id, const char *json,
                                             size_t len)
{
    ts__meta m, nm;
    ts__js_iter it;
    ts__span obj, k, v;
    ts_result r;
    char idb[TS_SESSION_ID_MAX + 1];
    uint32_t i;
    if ((r = ts__check_write(s, id)) != TS_OK) return r;
    if (!json || !ts__js_valid(json, len))
        return TS__FAIL(&s->env, TS_E_INVALID, "metadata is not valid JSON");
    obj = ts__js_trim(json, len);
    if (obj.p[0] != '{') return TS__FAIL(&s->env, TS_E_INVALID, "metadata is not an object");
    if ((r = ts__obj_id(s, obj, idb, id)) != TS_OK) return r;
    ts__meta_init(&m, &s->env.alloc);
    ts__meta_init(&nm, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_E_NOTFOUND) r = TS_OK;
    if (r != TS_OK) goto done;
    /* bookkeeping from the stored metadata, core fields from the caller */
    nm.nstreams = m.nstreams;
    for (i = 0; i < m.nstreams; i++) nm.streams[i] = m.streams[i];
    nm.docs = m.docs;
    if (!ts__js_get(obj, "id", &v)) {
        r = ts__buf_printf(&nm.user, "\"id\":\"%s\"", id);
        if (r) goto done;
    }
    ts__js_iter_begin(&it, obj, '{');
    while ((r = ts__js_iter_next(&it, &k, &v)) == TS_OK) {
        if (ts__meta_reserved_key(k) || ts__doc_key(k) >= 0 || ts__is_stream_key(s, k, v)) continue;
        if ((r = ts__meta_put_user(&nm, k, v)) != TS_OK) goto done;
    }
    if (r != TS_DONE) goto done;
    r = ts__meta_put(s, id, &nm, NULL, 0);
done:
    ts__meta_free(&m);
    ts__meta_free(&nm);
    return r;
}

TASKSTORE_DEF ts_result ts_session_list(ts_store *s, ts_blob *out)
{
    ts__buf b;
    ts_result r;
    ts__blob_zero(out);
    if (!s || !out) return TS_E_INVALID;
    if ((r = ts__dir_build(s)) != TS_OK) return r;
    ts__buf_init(&b, &s->env.alloc);
    r = ts__dir_write(s, &b);
    if (r == TS_OK) ts__blob_from_buf(out, &b, &s->env.alloc);
    ts__buf_free(&b);
    return r;
}

TASKSTORE_DEF ts_result ts_session_count(ts_store *s, uint64_t *out)
{
    ts_result r;
    size_t i;
    uint64_t n = 0;
    if (out) *out = 0;
    if (!s || !out) return TS_E_INVALID;
    if ((r = ts__dir_build(s)) != TS_OK) return r;
    for (i = 0; i < s->dir_count; i++) if (s->dir[i].meta) n++;
    *out = n;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_session_exists(ts_store *s, const char *id, int *out)
{
    ts__buf b;
    ts_result r;
    if (out) *out = 0;
    if (!out) return TS_E_INVALID;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    ts__buf_init(&b, &s->env.alloc);
    r = ts__meta_read(s, id, &b);
    ts__buf_free(&b);
    if (r == TS_OK) *out = 1;
    return r == TS_E_NOTFOUND ? TS_OK : r;
}

TASKSTORE_DEF ts_result ts_session_is_chunked(ts_store *s, const char *id, int *out)
{
    ts_result r;
    int ex = 0;
    ts_io_stat st;
    ts__buf p;
    if (out) *out = 0;
    if (!out) return TS_E_INVALID;
    if ((r = ts_session_exists(s, id, &ex)) != TS_OK) return r;   /* validates id */
    /* the legacy file is the truth until a verified migration removes it:
       chunked data beside it is a migration in progress (>>migrate) */
    if (s->io.stat_fn) {
        ts__buf_init(&p, &s->env.alloc);
        r = ts__buf_printf(&p, TS__LEGACY_DIR "/%s.json", id);
        if (r == TS_OK) r = s->io.stat_fn(s->io.user, (const char *)p.data, &st);
        ts__buf_free(&p);
        if (r == TS_OK) return TS_OK;           /* *out = 0: legacy */
    }
    if (ex) { *out = 1; return TS_OK; }
    return TS_E_NOTFOUND;
}

/* ---- streams ---------------------------------------------------------------------- */

TASKSTORE_DEF ts_result ts_session_stream_count(ts_store *s, const char *id, const char *stream,
                                                uint64_t *count)
{
    ts__meta m;
    ts__meta_stream *st;
    ts_result r;
    if (count) *count = 0;
    if (!count || !stream) return TS_E_INVALID;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    ts__meta_init(&m, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_OK && (st = ts__meta_find(&m, stream, strlen(stream))) != NULL) *count = st->count;
    ts__meta_free(&m);
    return r;
}

/* Appends records [first, first+count) of a stream to out as array items
   (comma separated); *n_out how many. */
TS__PRIVATE ts_result ts__stream_range(ts_store *s, const char *id, const ts__meta_stream *st,
                                       uint64_t first, uint64_t count, ts__buf *out,
                                       uint64_t *n_out)
{
    ts__buf buf;
    ts_result r = TS_OK;
    uint64_t end, c;
    *n_out = 0;
    if (first >= st->count) return TS_OK;
    end = count > st->count - first ? st->count : first + count;
    ts__buf_init(&buf, &s->env.alloc);
    c = st->per_chunk ? first / st->per_chunk : 0;
    while (r == TS_OK) {
        uint64_t base = st->per_chunk ? c * st->per_chunk : 0;
        uint64_t want = ts__chunk_records(st->count, st->per_chunk, c), j;
        size_t sb = 0;
        ts__span *sp;
        if (base >= end || !want) break;
        sp = ts__spans_alloc(s, want, &sb);
        if (!sp) { r = TS_E_NOMEM; break; }
        r = ts__chunk_get(s, id, st, c, &buf, sp, want);
        for (j = 0; j < want && r == TS_OK; j++) {
            if (base + j < first || base + j >= end) continue;
            if (*n_out && (r = ts__buf_putc(out, ',')) != TS_OK) break;
            r = ts__buf_append(out, sp[j].p, sp[j].n);
            (*n_out)++;
        }
        ts__free(&s->env.alloc, sp, sb);
        c++;
    }
    ts__buf_free(&buf);
    return r;
}

TASKSTORE_DEF ts_result ts_session_load_range(ts_store *s, const char *id, const char *stream,
                                              uint64_t first, uint64_t count, ts_blob *out)
{
    ts__meta m;
    ts__meta_stream *st;
    ts__buf b;
    uint64_t n = 0;
    ts_result r;
    ts__blob_zero(out);
    if (!out || !stream) return TS_E_INVALID;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    ts__meta_init(&m, &s->env.alloc);
    ts__buf_init(&b, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_OK) r = ts__buf_putc(&b, '[');
    if (r == TS_OK && (st = ts__meta_find(&m, stream, strlen(stream))) != NULL)
        r = ts__stream_range(s, id, st, first, count, &b, &n);
    if (r == TS_OK) r = ts__buf_putc(&b, ']');
    if (r == TS_OK) ts__blob_from_buf(out, &b, &s->env.alloc);
    ts__buf_free(&b);
    ts__meta_free(&m);
    return r;
}

TASKSTORE_DEF ts_result ts_session_load_chunk(ts_store *s, const char *id, const char *stream,
                                              uint64_t chunk, ts_blob *out)
{
    ts__meta m;
    ts__meta_stream *st;
    ts__buf b;
    uint64_t n = 0;
    ts_result r;
    ts__blob_zero(out);
    if (!out || !stream) return TS_E_INVALID;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    ts__meta_init(&m, &s->env.alloc);
    ts__buf_init(&b, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_OK) {
        st = ts__meta_find(&m, stream, strlen(stream));
        if (!st || chunk >= ts__stream_chunks(st->count, st->per_chunk)) {
            r = TS_E_NOTFOUND;
        } else {
            uint64_t first = st->per_chunk ? chunk * st->per_chunk : 0;
            r = ts__buf_putc(&b, '[');
            if (r == TS_OK) r = ts__stream_range(s, id, st, first, st->per_chunk ? st->per_chunk : st->count, &b, &n);
            if (r == TS_OK) r = ts__buf_putc(&b, ']');
        }
    }
    if (r == TS_OK) ts__blob_from_buf(out, &b, &s->env.alloc);
    ts__buf_free(&b);
    ts__meta_free(&m);
    return r;
}

/* The common part of the two appends: rec is a validated object. */
TS__PRIVATE ts_result ts__append(ts_store *s, const char *id, const char *stream, ts__span rec,
                                 uint64_t *index_out, const char *const *deps, size_t ndeps)
{
    ts__meta m;
    ts__meta_stream *st;
    ts__buf buf, text, p, k;
    ts__span *sp = NULL;
    size_t sb = 0, slen = strlen(stream);
    uint64_t c, have = 0;
    const char *dep;
    ts_result r;
    ts__meta_init(&m, &s->env.alloc);
    ts__buf_init(&buf, &s->env.alloc);
    ts__buf_init(&text, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_E_NOTFOUND) r = TS__FAIL(&s->env, TS_E_NOTFOUND, "session %s does not exist", id);
    if (r != TS_OK) goto done;
    st = ts__meta_find(&m, stream, slen);
    if (!st) {
        const ts__stream_def *d = ts__stream_def_find(s, stream, slen);
        st = ts__meta_add(&m, stream, slen, d ? d->per_chunk : 10);
        if (!st) { r = TS__FAIL(&s->env, TS_E_RANGE, "too many streams in session %s", id); goto done; }
    }
    c = st->per_chunk ? st->count / st->per_chunk : 0;
    have = st->per_chunk ? st->count - c * st->per_chunk : st->count;
    sp = ts__spans_alloc(s, have + 1, &sb);
    if (!sp) { r = TS_E_NOMEM; goto done; }
    if (have && (r = ts__chunk_get(s, id, st, c, &buf, sp, have)) != TS_OK) goto done;
    sp[have] = rec;
    /* the last chunk with the new record; extras past the count are dropped */
    if ((r = ts__chunk_write(&text, sp, (size_t)have + 1)) != TS_OK) goto done;
    if ((r = ts__path_chunk(&p, id, stream, st->gen, c)) != TS_OK) goto done;
    r = ts__write(s, (const char *)p.data, ts__key_chunk(&k, id, stream, st->gen, c), text.data, text.len,
                  TS__PRIO_NORMAL, deps, ndeps);
    if (r != TS_OK) goto done;
    if (index_out) *index_out = st->count;
    st->count++;
    dep = (const char *)p.data;
    r = ts__meta_put(s, id, &m, &dep, 1);
done:
    ts__free(&s->env.alloc, sp, sb);
    ts__buf_free(&buf);
    ts__buf_free(&text);
    ts__buf_free(&p);
    ts__buf_free(&k);
    ts__meta_free(&m);
    return r;
}

TASKSTORE_DEF ts_result ts_session_append(ts_store *s, const char *id, const char *stream,
                                          const char *record, size_t len, uint64_t *index_out)
{
    ts_result r;
    ts__span rec;
    uint64_t idx = 0;
    if (index_out) *index_out = 0;
    if ((r = ts__check_write(s, id)) != TS_OK) return r;
    if (!stream || !ts__stream_name_ok(stream, strlen(stream)))
        return TS__FAIL(&s->env, TS_E_INVALID, "invalid stream name");
    if (!record || !ts__js_valid(record, len))
        return TS__FAIL(&s->env, TS_E_INVALID, "record is not valid JSON");
    rec = ts__js_trim(record, len);
    if (rec.p[0] != '{') return TS__FAIL(&s->env, TS_E_INVALID, "record is not an object");
    r = ts__append(s, id, stream, rec, &idx, NULL, 0);
    if (index_out) *index_out = idx;
    if (r == TS_OK && s->cas) {
        char key[64 + TS_SESSION_ID_MAX + 8];
        if (ts__record_ref(rec, stream, idx, key, sizeof key)) ts__cas_ref(s, key, id, 1);
    }
    return r;
}

/* Writes stream st (new records recs[0..n)) of a session whose old state is
   old (or NULL), as a new generation when the old one had records; the
   write ids go to ids; removals of the old generation go to `later`. */
TS__PRIVATE ts_result ts__stream_replace(ts_store *s, const char *id, ts__meta_stream *st,
                                         const ts__meta_stream *old, const ts__span *recs,
                                         uint64_t n, ts__pathlist *paths)
{
    if (old) {
        st->gen = old->count ? old->gen + 1 : old->gen;
        if (st->gen > 0x7ffffff0u) st->gen = 1;
    }
    st->count = n;
    return ts__stream_write_all(s, id, st, recs, n, paths);
}

/* After the metadata switch (deps): removes the chunks of the old
   generation that the new state does not use. */
TS__PRIVATE ts_result ts__stream_retire(ts_store *s, const char *id, const ts__meta_stream *old,
                                        const ts__meta_stream *now, const char *const *deps,
                                        size_t ndeps)
{
    uint64_t oldn = ts__stream_chunks(old->count, old->per_chunk);
    uint64_t from = 0;
    if (now && now->gen == old->gen) from = ts__stream_chunks(now->count, now->per_chunk);
    if (from >= oldn) return TS_OK;
    return ts__stream_remove_chunks(s, id, old->name, old->gen, from, oldn, deps, ndeps);
}

/* Parses a JSON array of record objects into spans (allocated). */
TS__PRIVATE ts_result ts__array_spans(ts_store *s, ts__span arr, ts__span **out, uint64_t *n,
                                      size_t *bytes)
{
    ts__js_iter it;
    ts__span v;
    uint64_t cnt = 0;
    ts_result r;
    *out = NULL; *n = 0; *bytes = 0;
    if (!ts__js_iter_begin(&it, arr, '[')) return TS_E_INVALID;
    while ((r = ts__js_iter_next(&it, NULL, &v)) == TS_OK) {
        if (v.p[0] != '{') return TS__FAIL(&s->env, TS_E_INVALID, "a record is not an object");
        cnt++;
    }
    if (r != TS_DONE) return TS_E_INVALID;
    *out = ts__spans_alloc(s, cnt, bytes);
    if (!*out) return TS_E_NOMEM;
    ts__js_iter_begin(&it, arr, '[');
    while (ts__js_iter_next(&it, NULL, &v) == TS_OK) (*out)[(*n)++] = v;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_session_replace_stream(ts_store *s, const char *id, const char *stream,
                                                  const char *json, size_t len)
{
    ts__meta m;
    ts__meta_stream *st, old;
    ts__span *sp = NULL;
    size_t sb = 0, slen;
    uint64_t n = 0;
    int had = 0;
    ts__pathlist paths;
    const char *const *deps;
    size_t ndeps;
    ts__buf mp;
    ts__map oldh, newh;
    ts_result r;
    if ((r = ts__check_write(s, id)) != TS_OK) return r;
    if (!stream || !ts__stream_name_ok(stream, slen = strlen(stream)))
        return TS__FAIL(&s->env, TS_E_INVALID, "invalid stream name");
    if (!json || !ts__js_valid(json, len))
        return TS__FAIL(&s->env, TS_E_INVALID, "records are not valid JSON");
    ts__meta_init(&m, &s->env.alloc);
    ts__pathlist_init(&paths, &s->env.alloc);
    ts__buf_init(&mp, &s->env.alloc);
    ts__map_init(&oldh, &s->env.alloc);
    ts__map_init(&newh, &s->env.alloc);
    if ((r = ts__array_spans(s, ts__js_trim(json, len), &sp, &n, &sb)) != TS_OK) goto done;
    r = ts__meta_get(s, id, &m);
    if (r == TS_E_NOTFOUND) r = TS__FAIL(&s->env, TS_E_NOTFOUND, "session %s does not exist", id);
    if (r != TS_OK) goto done;
    st = ts__meta_find(&m, stream, slen);
    if (st) {
        ts__meta one;
        old = *st;
        had = 1;
        /* the old records' attachments, to release those no longer named */
        ts__meta_init(&one, &s->env.alloc);
        one.nstreams = 1;
        one.streams[0] = old;
        if (s->cas) r = ts__session_hashes(s, id, &one, &oldh);
        ts__meta_free(&one);
        if (r != TS_OK) goto done;
    } else {
        const ts__stream_def *d = ts__stream_def_find(s, stream, slen);
        st = ts__meta_add(&m, stream, slen, d ? d->per_chunk : 10);
        if (!st) { r = TS__FAIL(&s->env, TS_E_RANGE, "too many streams in session %s", id); goto done; }
    }
    if ((r = ts__stream_replace(s, id, st, had ? &old : NULL, sp, n, &paths)) != TS_OK) goto done;
    ts__pathlist_tail(&paths, &deps, &ndeps);
    if ((r = ts__meta_put(s, id, &m, deps, ndeps)) != TS_OK) goto done;
    if (had && ts__path_meta(&mp, id) == TS_OK) {
        const char *mdep = (const char *)mp.data;
        ts__stream_retire(s, id, &old, st, &mdep, 1);
    }
    if (s->cas && (r = ts__spans_refs(stream, 0, sp, n, &newh)) == TS_OK) ts__refs_update(s, id, &newh, &oldh);
    r = TS_OK;
done:
    ts__free(&s->env.alloc, sp, sb);
    ts__pathlist_free(&paths);
    ts__buf_free(&mp);
    ts__map_free(&oldh);
    ts__map_free(&newh);
    ts__meta_free(&m);
    return r;
}

/* ---- documents ----------------------------------------------------------------------- */

TASKSTORE_DEF ts_result ts_session_load_doc(ts_store *s, const char *id, const char *doc,
                                            ts_blob *out)
{
    ts__meta m;
    ts__buf b, p, k;
    int d;
    ts_result r;
    ts__blob_zero(out);
    if (!out || !doc) return TS_E_INVALID;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    if ((d = ts__doc_index(doc, strlen(doc))) < 0)
        return TS__FAIL(&s->env, TS_E_INVALID, "unknown document %s", doc);
    ts__meta_init(&m, &s->env.alloc);
    ts__buf_init(&b, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_OK && !(m.docs & (1u << d))) r = TS_E_NOTFOUND;
    if (r == TS_OK) r = ts__path_doc(&p, id, d);
    if (r == TS_OK) {
        r = ts__read(s, (const char *)p.data, ts__key_doc(&k, id, d), &b);
        if (r == TS_E_NOTFOUND)
            r = TS__FAIL(&s->env, TS_E_CORRUPT, "%s: missing (listed by metadata)", (const char *)p.data);
        else if (r == TS_OK && !ts__js_valid((const char *)b.data, b.len))
            r = TS__FAIL(&s->env, TS_E_CORRUPT, "%s: not valid JSON", (const char *)p.data);
    }
    if (r == TS_OK) ts__blob_from_buf(out, &b, &s->env.alloc);
    ts__buf_free(&b);
    ts__buf_free(&p);
    ts__buf_free(&k);
    ts__meta_free(&m);
    return r;
}

TASKSTORE_DEF ts_result ts_session_save_doc(ts_store *s, const char *id, const char *doc,
                                            const char *json, size_t len)
{
    ts__meta m;
    ts__buf p, k;
    int d;
    ts_result r;
    if ((r = ts__check_write(s, id)) != TS_OK) return r;
    if (!doc || (d = ts__doc_index(doc, strlen(doc))) < 0)
        return TS__FAIL(&s->env, TS_E_INVALID, "unknown document");
    if (json && !ts__js_valid(json, len))
        return TS__FAIL(&s->env, TS_E_INVALID, "document is not valid JSON");
    ts__meta_init(&m, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_E_NOTFOUND) r = TS__FAIL(&s->env, TS_E_NOTFOUND, "session %s does not exist", id);
    if (r == TS_OK) r = ts__path_doc(&p, id, d);
    if (r == TS_OK && json) {
        ts__span v = ts__js_trim(json, len);
        const char *dep = (const char *)p.data;
        r = ts__write(s, (const char *)p.data, ts__key_doc(&k, id, d), v.p, v.n, TS__PRIO_NORMAL,
                      NULL, 0);
        if (r == TS_OK) {
            m.docs |= 1u << d;
            r = ts__meta_put(s, id, &m, &dep, 1);
        }
    } else if (r == TS_OK) {
        int had = (m.docs & (1u << d)) != 0;
        m.docs &= ~(1u << d);
        r = ts__meta_put(s, id, &m, NULL, 0);
        if (r == TS_OK && had) {
            ts__buf mp;
            const char *mdep;
            ts__buf_init(&mp, &s->env.alloc);
            r = ts__path_meta(&mp, id);
            mdep = (const char *)mp.data;
            if (r == TS_OK)
                r = ts__remove(s, (const char *)p.data, ts__key_doc(&k, id, d), TS__PRIO_LOW, &mdep, 1);
            ts__buf_free(&mp);
        }
    }
    ts__buf_free(&p);
    ts__buf_free(&k);
    ts__meta_free(&m);
    return r;
}

/* ---- whole sessions ------------------------------------------------------------------ */

typedef struct ts__split_stream {
    const ts__stream_def *def;
    ts__span arr;
    int64_t at;
} ts__split_stream;

TASKSTORE_DEF ts_result ts_session_save(ts_store *s, const char *json, size_t len, char *id_out)
{
    ts__meta m, old;
    ts__js_iter it;
    ts__span obj, k, v;
    ts__span docs[TS__NDOCS];
    ts__split_stream streams[TS__MAX_STREAMS];
    uint32_t nstreams = 0, i;
    int64_t pos = -1;
    char id[TS_SESSION_ID_MAX + 1];
    int had_old = 0, d;
    unsigned present_docs = 0;
    ts__pathlist paths;
    const char *const *deps;
    size_t ndeps;
    const char *mdep;
    ts__map oldh, newh;
    ts__buf p, kk, mp;
    ts_result r;
    if (id_out) id_out[0] = 0;
    if (!s) return TS_E_INVALID;
    if (s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "store is read-only");
    if (!json || !ts__js_valid(json, len))
        return TS__FAIL(&s->env, TS_E_INVALID, "session is not valid JSON");
    obj = ts__js_trim(json, len);
    if (obj.p[0] != '{') return TS__FAIL(&s->env, TS_E_INVALID, "session is not an object");
    if ((r = ts__obj_id(s, obj, id, NULL)) != TS_OK) return r;

    ts__meta_init(&m, &s->env.alloc);
    ts__meta_init(&old, &s->env.alloc);
    ts__pathlist_init(&paths, &s->env.alloc);
    ts__map_init(&oldh, &s->env.alloc);
    ts__map_init(&newh, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&kk, &s->env.alloc);
    ts__buf_init(&mp, &s->env.alloc);

    /* split: streams, documents, the rest is metadata (verbatim, in order) */
    ts__js_iter_begin(&it, obj, '{');
    while ((r = ts__js_iter_next(&it, &k, &v)) == TS_OK) {
        char name[TS__NAME_MAX + 1];
        size_t n = 0;
        if (ts__meta_reserved_key(k)) continue;
        pos++;
        if (ts__js_str_decode_to(k, name, TS__NAME_MAX, &n)) {
            const ts__stream_def *sd = v.p[0] == '[' ? ts__stream_def_find(s, name, n) : NULL;
            if (sd) {
                for (i = 0; i < nstreams; i++) if (streams[i].def == sd) break;
                if (i == nstreams) nstreams++;
                streams[i].def = sd;
                streams[i].arr = v;
                streams[i].at = pos;
                continue;
            }
            if ((d = ts__doc_index(name, n)) >= 0) {
                docs[d] = v;
                m.doc_at[d] = pos;
                present_docs |= 1u << d;
                continue;
            }
        }
        if ((r = ts__meta_put_user(&m, k, v)) != TS_OK) goto done;
    }
    if (r != TS_DONE) goto done;

    r = ts__meta_get(s, id, &old);
    if (r == TS_OK) had_old = 1;
    else if (r == TS_E_NOTFOUND) r = TS_OK;
    else goto done;
    if (had_old && s->cas && (r = ts__session_hashes(s, id, &old, &oldh)) != TS_OK) goto done;

    /* chunks of every stream (new generation where records existed) */
    for (i = 0; i < nstreams && r == TS_OK; i++) {
        ts__span *sp = NULL;
        size_t sb = 0;
        uint64_t n = 0;
        const char *nm = streams[i].def->name;
        ts__meta_stream *st = ts__meta_add(&m, nm, strlen(nm), streams[i].def->per_chunk);
        ts__meta_stream *o = had_old ? ts__meta_find(&old, nm, strlen(nm)) : NULL;
        if (!st) { r = TS__FAIL(&s->env, TS_E_RANGE, "too many streams"); break; }
        st->at = streams[i].at;
        r = ts__array_spans(s, streams[i].arr, &sp, &n, &sb);
        if (r == TS_OK) r = ts__stream_replace(s, id, st, o, sp, n, &paths);
        if (r == TS_OK && s->cas) r = ts__spans_refs(nm, 0, sp, n, &newh);
        ts__free(&s->env.alloc, sp, sb);
    }
    if (r != TS_OK) goto done;
    /* documents */
    for (d = 0; d < TS__NDOCS && r == TS_OK; d++) {
        const char *const *dep = NULL;
        size_t ndep = 0;
        if (!(present_docs & (1u << d))) continue;
        /* the same chaining rule as the chunks (see ts__pathlist_tail) */
        if (paths.count >= TS_QUEUE_MAX_AFTER) {
            dep = (const char *const *)(paths.p + (paths.count - TS_QUEUE_MAX_AFTER));
            ndep = 1;
        }
        r = ts__path_doc(&p, id, d);
        if (r == TS_OK)
            r = ts__write(s, (const char *)p.data, ts__key_doc(&kk, id, d), docs[d].p, docs[d].n,
                          TS__PRIO_NORMAL, dep, ndep);
        if (r == TS_OK) r = ts__pathlist_add(&paths, (const char *)p.data);
    }
    if (r != TS_OK) goto done;
    m.docs = present_docs;
    /* the switch: metadata after every chunk and document it names */
    ts__pathlist_tail(&paths, &deps, &ndeps);
    if ((r = ts__meta_put(s, id, &m, deps, ndeps)) != TS_OK) goto done;
    if ((r = ts__path_meta(&mp, id)) != TS_OK) goto done;
    mdep = (const char *)mp.data;
    if (had_old) {
        /* retire what the old state had and the new one does not use */
        for (i = 0; i < old.nstreams; i++) {
            ts__meta_stream *o = &old.streams[i];
            ts__stream_retire(s, id, o, ts__meta_find(&m, o->name, strlen(o->name)), &mdep, 1);
        }
        for (d = 0; d < TS__NDOCS; d++) {
            if (!(old.docs & (1u << d)) || (present_docs & (1u << d))) continue;
            if (ts__path_doc(&p, id, d) == TS_OK)
                ts__remove(s, (const char *)p.data, ts__key_doc(&kk, id, d), TS__PRIO_LOW, &mdep, 1);
        }
    }
    ts__refs_update(s, id, &newh, had_old ? &oldh : NULL);
    if (id_out) memcpy(id_out, id, strlen(id) + 1);
done:
    ts__meta_free(&m);
    ts__meta_free(&old);
    ts__pathlist_free(&paths);
    ts__map_free(&oldh);
    ts__map_free(&newh);
    ts__buf_free(&p);
    ts__buf_free(&kk);
    ts__buf_free(&mp);
    return r;
}

/* Shared by the progressive and the all-at-once loaders. */
TASKSTORE_DEF ts_result ts_session_load_parts(ts_store *s, const char *id, ts_session_part_fn fn,
                                              void *user)
{
    ts__meta m;
    ts__buf raw, buf, arr, p, k;
    ts_session_part part;
    uint32_t i;
    int d;
    ts_result r;
    if (!fn) return TS_E_INVALID;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    ts__meta_init(&m, &s->env.alloc);
    ts__buf_init(&raw, &s->env.alloc);
    ts__buf_init(&buf, &s->env.alloc);
    ts__buf_init(&arr, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    r = ts__meta_read(s, id, &raw);
    if (r == TS_OK) {
        r = ts__meta_parse(&m, (const char *)raw.data, raw.len);
        if (r != TS_OK && r != TS_E_NOMEM)
            r = TS__FAIL(&s->env, r, TS__SESS_DIR "/%s/metadata.json: %s", id, ts_result_str(r));
    }
    if (r != TS_OK) goto done;
    memset(&part, 0, sizeof part);
    part.kind = TS_PART_METADATA;
    part.name = "metadata";
    part.json = (const char *)raw.data;
    part.len = raw.len;
    if (fn(user, &part)) { r = TS_E_CANCELLED; goto done; }
    for (i = 0; i < m.nstreams && r == TS_OK; i++) {
        ts__meta_stream *st = &m.streams[i];
        uint64_t c, nch = ts__stream_chunks(st->count, st->per_chunk);
        for (c = 0; c < nch && r == TS_OK; c++) {
            uint64_t want = ts__chunk_records(st->count, st->per_chunk, c), j;
            size_t sb = 0;
            ts__span *sp = ts__spans_alloc(s, want, &sb);
            if (!sp) { r = TS_E_NOMEM; break; }
            r = ts__chunk_get(s, id, st, c, &buf, sp, want);
            if (r == TS_OK) r = ts__chunk_write(&arr, sp, (size_t)want);
            ts__free(&s->env.alloc, sp, sb);
            if (r != TS_OK) break;
            memset(&part, 0, sizeof part);
            part.kind = TS_PART_CHUNK;
            part.name = st->name;
            part.chunk = c;
            part.first = st->per_chunk ? c * st->per_chunk : 0;
            part.count = want;
            part.total = st->count;
            part.json = (const char *)arr.data;
            part.len = arr.len;
            if (fn(user, &part)) r = TS_E_CANCELLED;
            (void)j;
        }
    }
    for (d = 0; d < TS__NDOCS && r == TS_OK; d++) {
        if (!(m.docs & (1u << d))) continue;
        r = ts__path_doc(&p, id, d);
        if (r == TS_OK) r = ts__read(s, (const char *)p.data, ts__key_doc(&k, id, d), &buf);
        if (r == TS_E_NOTFOUND)
            r = TS__FAIL(&s->env, TS_E_CORRUPT, "%s: missing (listed by metadata)", (const char *)p.data);
        else if (r == TS_OK && !ts__js_valid((const char *)buf.data, buf.len))
            r = TS__FAIL(&s->env, TS_E_CORRUPT, "%s: not valid JSON", (const char *)p.data);
        if (r != TS_OK) break;
        memset(&part, 0, sizeof part);
        part.kind = TS_PART_DOCUMENT;
        part.name = ts__doc_names[d];
        part.json = (const char *)buf.data;
        part.len = buf.len;
        if (fn(user, &part)) r = TS_E_CANCELLED;
    }
done:
    ts__meta_free(&m);
    ts__buf_free(&raw);
    ts__buf_free(&buf);
    ts__buf_free(&arr);
    ts__buf_free(&p);
    ts__buf_free(&k);
    return r;
}

/* Emits member "name": value of stream st (all records) or document d. */
TS__PRIVATE ts_result ts__load_emit(ts_store *s, const char *id, ts__meta_stream *st, int d,
                                    ts__buf *out, int *first, ts__buf *tmp, ts__buf *p,
                                    ts__buf *k)
{
    ts_result r;
    uint64_t n = 0;
    if (!*first && (r = ts__buf_putc(out, ',')) != TS_OK) return r;
    *first = 0;
    if ((r = ts__buf_printf(out, "\"%s\":", st ? st->name : ts__doc_names[d])) != TS_OK) return r;
    if (st) {
        if ((r = ts__buf_putc(out, '[')) != TS_OK) return r;
        if ((r = ts__stream_range(s, id, st, 0, st->count, out, &n)) != TS_OK) return r;
        return ts__buf_putc(out, ']');
    }
    if ((r = ts__path_doc(p, id, d)) != TS_OK) return r;
    r = ts__read(s, (const char *)p->data, ts__key_doc(k, id, d), tmp);
    if (r == TS_E_NOTFOUND)
        return TS__FAIL(&s->env, TS_E_CORRUPT, "%s: missing (listed by metadata)", (const char *)p->data);
    if (r != TS_OK) return r;
    if (!ts__js_valid((const char *)tmp->data, tmp->len))
        return TS__FAIL(&s->env, TS_E_CORRUPT, "%s: not valid JSON", (const char *)p->data);
    {
        ts__span v = ts__js_trim((const char *)tmp->data, tmp->len);
        return ts__buf_append(out, v.p, v.n);
    }
}

TASKSTORE_DEF ts_result ts_session_load(ts_store *s, const char *id, ts_blob *out)
{
    ts__meta m;
    ts__buf raw, b, tmp, p, k;
    ts__js_iter it;
    ts__span key, val;
    int first = 1, d, more = 1;
    uint32_t i;
    int64_t pos;
    unsigned done_docs = 0;
    uint32_t done_streams = 0; /* bit i: m.streams[i] emitted */
    ts_result r;
    ts__blob_zero(out);
    if (!out) return TS_E_INVALID;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    ts__meta_init(&m, &s->env.alloc);
    ts__buf_init(&raw, &s->env.alloc);
    ts__buf_init(&b, &s->env.alloc);
    ts__buf_init(&tmp, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    r = ts__meta_read(s, id, &raw);
    if (r == TS_E_NOTFOUND && s->cfg.migrate_on_load && !s->read_only) {
        /* on-demand migration (declared with the migrator's API) */
        ts_result mr = ts_migrate_session(s, id, NULL, NULL);
        if (mr == TS_OK) r = ts__meta_read(s, id, &raw);
        else if (mr != TS_E_NOTFOUND && mr != TS_DONE) r = mr;
    }
    if (r == TS_OK) {
        r = ts__meta_parse(&m, (const char *)raw.data, raw.len);
        if (r != TS_OK && r != TS_E_NOMEM)
            r = TS__FAIL(&s->env, r, TS__SESS_DIR "/%s/metadata.json: %s", id, ts_result_str(r));
    }
    if (r == TS_OK) r = ts__buf_putc(&b, '{');
    if (r != TS_OK) goto done;
    /* every key at its saved position: streams and documents by their
       recorded "at", core fields fill the other positions in order */
    ts__js_iter_begin(&it, ts__js_trim((const char *)raw.data, raw.len), '{');
    for (pos = 0; r == TS_OK; pos++) {
        int placed = 0;
        for (i = 0; i < m.nstreams && r == TS_OK; i++)
            if (m.streams[i].at == pos && !(done_streams & (1u << i))) {
                done_streams |= 1u << i;
                placed = 1;
                r = ts__load_emit(s, id, &m.streams[i], -1, &b, &first, &tmp, &p, &k);
            }
        for (d = 0; d < TS__NDOCS && r == TS_OK; d++)
            if ((m.docs & (1u << d)) && m.doc_at[d] == pos && !(done_docs & (1u << d))) {
                done_docs |= 1u << d;
                placed = 1;
                r = ts__load_emit(s, id, NULL, d, &b, &first, &tmp, &p, &k);
            }
        if (placed || r != TS_OK) continue;
        /* the next core field */
        for (;;) {
            char name[TS__NAME_MAX + 1];
            size_t n = 0;
            if (!more || ts__js_iter_next(&it, &key, &val) != TS_OK) { more = 0; break; }
            if (ts__meta_reserved_key(key)) continue;
            if (ts__js_str_decode_to(key, name, TS__NAME_MAX, &n)) {
                int dd = ts__doc_index(name, n);
                /* shadowed by a stream or document of that name */
                if (ts__meta_find(&m, name, n) || (dd >= 0 && (m.docs & (1u << dd)))) break;
            }
            if (!first) r = ts__buf_putc(&b, ',');
            first = 0;
            if (r == TS_OK) r = ts__buf_append(&b, key.p, key.n);
            if (r == TS_OK) r = ts__buf_putc(&b, ':');
            if (r == TS_OK) r = ts__buf_append(&b, val.p, val.n);
            break;
        }
        if (!more) break;
    }
    /* streams and documents without a position (added later) at the end */
    for (i = 0; i < m.nstreams && r == TS_OK; i++)
        if (!(done_streams & (1u << i)))
            r = ts__load_emit(s, id, &m.streams[i], -1, &b, &first, &tmp, &p, &k);
    for (d = 0; d < TS__NDOCS && r == TS_OK; d++)
        if ((m.docs & (1u << d)) && !(done_docs & (1u << d)))
            r = ts__load_emit(s, id, NULL, d, &b, &first, &tmp, &p, &k);
    if (r == TS_OK) r = ts__buf_putc(&b, '}');
    if (r == TS_OK) ts__blob_from_buf(out, &b, &s->env.alloc);
done:
    ts__meta_free(&m);
    ts__buf_free(&raw);
    ts__buf_free(&b);
    ts__buf_free(&tmp);
    ts__buf_free(&p);
    ts__buf_free(&k);
    return r;
}

TASKSTORE_DEF ts_result ts_session_delete(ts_store *s, const char *id)
{
    ts__meta m;
    ts__buf p, k;
    ts__map hashes;
    const char *mdep;
    uint32_t i;
    int d;
    size_t removed = 0;
    ts_result r;
    if ((r = ts__check_write(s, id)) != TS_OK) return r;
    ts__meta_init(&m, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&k, &s->env.alloc);
    ts__map_init(&hashes, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_E_CORRUPT || r == TS_E_VERSION) {
        /* unreadable metadata: the session can still be deleted; its files
           and references are left to verify/repair and GC */
        ts__meta_free(&m);
        ts__meta_init(&m, &s->env.alloc);
        r = TS_OK;
    }
    if (r != TS_OK) goto done;
    if (s->cas && ts__session_hashes(s, id, &m, &hashes) != TS_OK) {
        /* unreadable records: their references are left to verify/GC */
        ts__map_free(&hashes);
        ts__map_init(&hashes, &s->env.alloc);
    }
    /* the metadata first: the session disappears at once and for good */
    if ((r = ts__path_meta(&p, id)) != TS_OK) goto done;
    if ((r = ts__remove(s, (const char *)p.data, ts__key_meta(&k, id), TS__PRIO_NORMAL, NULL, 0)) != TS_OK)
        goto done;
    mdep = (const char *)p.data;
    for (i = 0; i < m.nstreams; i++) {
        ts__meta_stream *st = &m.streams[i];
        uint64_t n = ts__stream_chunks(st->count, st->per_chunk);
        /* one more: a chunk a crashed append may have left past the count */
        ts__stream_remove_chunks(s, id, st->name, st->gen, 0, n + 1, &mdep, 1);
    }
    for (d = 0; d < TS__NDOCS; d++) {
        if (!(m.docs & (1u << d))) continue;
        if (ts__path_doc(&k, id, d) == TS_OK)
            ts__remove(s, (const char *)k.data, NULL, TS__PRIO_LOW, &mdep, 1);
    }
    if (s->lru) ts_lru_invalidate_session(s->lru, id, strlen(id), &removed);
    if (ts__dir_set(s, id, strlen(id), NULL, 0, 0) != TS_OK) ts__dir_lost(s);
    s->dir_changed = 1;
    ts__index_update(s, id, strlen(id), NULL, 0);
    ts__refs_update(s, id, NULL, &hashes);
done:
    ts__meta_free(&m);
    ts__buf_free(&p);
    ts__buf_free(&k);
    ts__map_free(&hashes);
    return r;
}

/* ---- attachments through the store ----------------------------------------------------- */

TASKSTORE_DEF ts_result ts_session_append_screenshot(ts_store *s, const char *id,
                                                     const char *record, size_t len,
                                                     const void *image, size_t image_len,
                                                     const char *mime, char *hash_out,
                                                     uint64_t *index_out)
{
    char hex[65];
    ts__buf rec, dep;
    ts__span in, sp;
    uint64_t idx = 0;
    ts_result r;
    if (hash_out) hash_out[0] = 0;
    if (index_out) *index_out = 0;
    if ((r = ts__check_write(s, id)) != TS_OK) return r;
    if (!record || !ts__js_valid(record, len))
        return TS__FAIL(&s->env, TS_E_INVALID, "record is not valid JSON");
    in = ts__js_trim(record, len);
    if (in.p[0] != '{') return TS__FAIL(&s->env, TS_E_INVALID, "record is not an object");
    if (!image && image_len) return TS_E_INVALID;
    if (!s->cas) return TS__FAIL(&s->env, TS_E_STATE, "no attachment store");
    {
        /* the session must exist before its image is stored */
        int ex = 0;
        if ((r = ts_session_exists(s, id, &ex)) != TS_OK) return r;
        if (!ex) return TS__FAIL(&s->env, TS_E_NOTFOUND, "session %s does not exist", id);
    }
    /* bytes first: the queue writes attachment data before the records and
       metadata that name it (both are queued; the CAS write is enqueued first
       and the chunk write is ordered after it by the store's dependency) */
    if ((r = ts__cas_put(s, image, image_len, mime, hex)) != TS_OK) return r;
    ts__buf_init(&rec, &s->env.alloc);
    ts__buf_init(&dep, &s->env.alloc);
    r = ts__record_set_str(&rec, in, "attachmentHash", hex);
    if (r == TS_OK) r = ts__buf_printf(&dep, TS__CAS_DIR "/%.2s/%s/metadata.json", hex, hex);
    if (r == TS_OK) {
        const char *deps[1];
        sp.p = (const char *)rec.data;
        sp.n = rec.len;
        deps[0] = (const char *)dep.data;
        r = ts__append(s, id, "screenshots", sp, &idx, deps, 1);
    }
    if (r == TS_OK) {
        char key[64 + TS_SESSION_ID_MAX + 8];
        if (index_out) *index_out = idx;
        if (ts__record_ref(sp, "screenshots", idx, key, sizeof key)) ts__cas_ref(s, key, id, 1);
        if (hash_out) memcpy(hash_out, hex, 65);
    }
    ts__buf_free(&rec);
    ts__buf_free(&dep);
    return r;
}

TASKSTORE_DEF ts_result ts_attach_get(ts_store *s, const char *hash, ts_blob *out)
{
    ts_result r;
    ts__blob_zero(out);
    if (!s || !out || !hash) return TS_E_INVALID;
    if (!ts__valid_hash_hex(hash, strlen(hash))) return TS__FAIL(&s->env, TS_E_INVALID, "invalid hash");
    if (!s->cas) return TS__FAIL(&s->env, TS_E_STATE, "no attachment store");
    r = ts_cas_load(s->cas, hash, out, NULL);
    if (r != TS_OK && r != TS_E_NOTFOUND) {
        ts_error_info ei;
        ts_cas_last_error(s->cas, &ei);
        return TS__FAIL(&s->env, r, "attachment %s: %s", hash, ei.message);
    }
    return r;
}

/* ---- search ------------------------------------------------------------------------------ */

TASKSTORE_DEF ts_result ts_store_search(ts_store *s, const ts_query *q, ts_index_hits *out)
{
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!s || !q || !out) return TS_E_INVALID;
    if (!s->index) return TS__FAIL(&s->env, TS_E_STATE, "store opened without an index");
    ts__index_ensure(s);
    if (!s->index_valid && (r = ts__index_rebuild(s)) != TS_OK) return r;
    r = ts_index_search(s->index, q, out);
    if (r != TS_OK) return TS__FAIL(&s->env, r, "search failed");
    return TS_OK;
}

/* ---- attachment GC: mark from every session's records, then sweep ----------- */

TS__PRIVATE int ts__gc_is_ref(void *user, const char *hash)
{
    return ts__map_get((const ts__map *)user, hash, 64, NULL);
}

/* Every hash some session's records name (the "mark" evidence). */
TS__PRIVATE ts_result ts__gc_collect(ts_store *s, ts__map *hashes)
{
    size_t i;
    ts_result r;
    ts__map refs;
    if ((r = ts__dir_build(s)) != TS_OK) return r;
    if (s->corrupt_sessions)
        return TS__FAIL(&s->env, TS_E_CORRUPT, "gc: %llu session(s) with unreadable metadata might reference "
                        "anything: nothing collected (verify/repair first)", (unsigned long long)s->corrupt_sessions);
    ts__map_init(&refs, &s->env.alloc);
    for (i = 0; i < s->dir_count && r == TS_OK; i++) {
        ts__meta m;
        size_t pos = 0;
        const ts__map_slot *sl;
        if (!s->dir[i].meta) continue;
        ts__meta_init(&m, &s->env.alloc);
        r = ts__meta_parse(&m, s->dir[i].meta, s->dir[i].meta_len);
        if (r == TS_OK) r = ts__session_hashes(s, s->dir[i].id, &m, &refs);
        ts__meta_free(&m);
        if (r != TS_OK && r != TS_E_NOMEM) {
            /* a session we cannot read might reference anything: no sweep */
            r = TS__FAIL(&s->env, r == TS_E_IO || r == TS_E_NOSPACE ? r : TS_E_CORRUPT,
                         "gc: session %s unreadable, nothing collected", s->dir[i].id);
            break;
        }
        while (r == TS_OK && (sl = ts__map_next(&refs, &pos)) != NULL)
            r = ts__map_put(hashes, sl->key, 64, 0);
        ts__map_free(&refs);
        ts__map_init(&refs, &s->env.alloc);
    }
    ts__map_free(&refs);
    return r;
}

TS__PRIVATE ts_result ts__cas_gc_all(ts_store *s, uint64_t *removed)
{
    ts__map hashes;
    ts_cas_gc_progress pr;
    ts_result r;
    if (s->gc_running) { ts_cas_gc_abort(s->cas); s->gc_running = 0; }
    /* GC looks at the disk: everything queued must be there first */
    if ((r = ts__w_flush(s)) != TS_OK) return r;
    ts__map_init(&hashes, &s->env.alloc);
    r = ts__gc_collect(s, &hashes);
    memset(&pr, 0, sizeof pr);
    if (r == TS_OK) {
        r = ts_cas_gc(s->cas, s->now_ms, ts__gc_is_ref, &hashes, NULL, NULL, &pr);
        if (r == TS_DONE) r = TS_OK;
        if (r != TS_OK) {
            ts_error_info ei;
            ts_cas_last_error(s->cas, &ei);
            r = TS__FAIL(&s->env, r, "gc: %s", ei.message);
        }
    }
    ts__map_free(&hashes);
    if (r == TS_OK) r = ts__w_flush(s);
    if (r == TS_OK) s->gc_wanted = 0;
    if (removed) *removed = pr.objects_freed;
    return r;
}

/* One idle slice: a cycle starts only when references were released and
   the queue is empty (the sweep reads the disk); marking scans every
   session at once, the sweep goes 64 objects per slice. */
TS__PRIVATE void ts__cas_gc_slice(ts_store *s, uint64_t budget_us)
{
    ts_result r;
    TS__UNUSED(budget_us);
    if (!s->gc_running) {
        ts__map hashes;
        size_t pos = 0;
        const ts__map_slot *sl;
        if (!s->gc_wanted || ts_queue_count(s->queue) != 0) return;
        if (ts_cas_gc_begin(s->cas, s->now_ms) != TS_OK) return;
        ts__map_init(&hashes, &s->env.alloc);
        r = ts__gc_collect(s, &hashes);
        while (r == TS_OK && (sl = ts__map_next(&hashes, &pos)) != NULL)
            r = ts_cas_gc_mark(s->cas, sl->key);
        ts__map_free(&hashes);
        if (r != TS_OK) { ts_cas_gc_abort(s->cas); return; }
        s->gc_running = 1;
        s->gc_wanted = 0;
        return;
    }
    r = ts_cas_gc_step(s->cas, s->now_ms, 64, NULL, NULL);
    if (r != TS_OK) s->gc_running = 0;
}

/* ---- open / close --------------------------------------------------------------------------- */

TS__PRIVATE void ts__store_free(ts_store *s)
{
    ts_allocator a = s->env.alloc;
    ts__compress_close(s);
    if (s->cas) ts__cas_destroy(s);
    if (s->queue) ts__w_destroy(s);
    if (s->lru) ts_lru_destroy(s->lru);
    if (s->index) ts_index_destroy(s->index);
    ts__dir_free(s);
    ts__buf_free(&s->path);
    ts__buf_free(&s->path2);
    ts__buf_free(&s->tmp);
    ts__buf_free(&s->cas_after);
#ifndef TASKSTORE_NO_STDIO
    if (s->posix) ts_io_posix_destroy(s->posix);
#endif
    ts__free(&a, s, sizeof *s);
}

TASKSTORE_DEF ts_result ts_store_open(const char *root, const ts_store_config *cfg_in,
                                      ts_store **out)
{
    ts_store *s;
    ts_store_config cfg;
    ts_allocator a;
    ts_result r;
    ts_io_stat st;
    if (out) *out = NULL;
    if (!out || (!root && !(cfg_in && cfg_in->io))) return TS_E_INVALID;
    cfg = cfg_in ? *cfg_in : ts_store_config_default();
    {
        ts_store_config def = ts_store_config_default();
        if (!cfg.cache_max_bytes) cfg.cache_max_bytes = def.cache_max_bytes;
        if (!cfg.cache_ttl_ms) cfg.cache_ttl_ms = def.cache_ttl_ms;
        if (!cfg.queue_capacity) cfg.queue_capacity = def.queue_capacity;
        if (!cfg.batch_window_ms) cfg.batch_window_ms = def.batch_window_ms;
        if (!cfg.gc_grace_ms) cfg.gc_grace_ms = def.gc_grace_ms;
    }
    a = cfg.allocator;
    s = (ts_store *)ts__calloc(&a, 1, sizeof *s);
    if (!s) return TS_E_NOMEM;
    ts__env_init(&s->env, &a, &cfg.logger);
    s->cfg = cfg;
    s->now_ms = cfg.now_ms;
    s->read_only = cfg.read_only;
    ts__map_init(&s->dir_map, &s->env.alloc);
    ts__buf_init(&s->path, &s->env.alloc);
    ts__buf_init(&s->path2, &s->env.alloc);
    ts__buf_init(&s->tmp, &s->env.alloc);
    ts__buf_init(&s->cas_after, &s->env.alloc);
    if (cfg.io) {
        s->io = *cfg.io;
    } else {
#ifndef TASKSTORE_NO_STDIO
        r = ts_io_posix_create(root, &s->env.alloc, &s->posix);
        if (r != TS_OK) {
            ts__store_free(s);
            return r;
        }
        ts_io_posix_vtable(s->posix, &s->io);
#else
        ts__store_free(s);
        return TS_E_NOTIMPL;
#endif
    }
    s->cfg.io = NULL;
    /* the single-owner lock */
    if (!s->read_only && s->io.lock_fn) {
        r = s->io.lock_fn(s->io.user, 1);
        if (r == TS_E_LOCKED && cfg.read_only_if_locked) {
            s->read_only = 1;
        } else if (r != TS_OK) {
            ts__store_free(s);
            return r;
        } else {
            s->locked = 1;
        }
    }
    /* trust the derived files only after a clean close */
    s->trusted = s->io.stat_fn && s->io.stat_fn(s->io.user, TS__DIRTY_PATH, &st) == TS_E_NOTFOUND;
    if (!s->read_only) {
        static const char mark[] = "open\n";
        if (!s->io.write_file_atomic_fn) r = TS_E_NOTIMPL;
        else r = s->io.write_file_atomic_fn(s->io.user, TS__DIRTY_PATH, mark, sizeof mark - 1, 0);
        if (r != TS_OK) {
            r = TS__FAIL(&s->env, r, "%s: cannot write " TS__DIRTY_PATH, root ? root : "store");
            goto fail;
        }
    }
    {
        ts_lru_config lc = ts_lru_config_default();
        lc.max_bytes = cfg.cache_max_bytes;
        lc.default_ttl_ms = cfg.cache_ttl_ms;
        lc.allocator = s->env.alloc;
        lc.logger = s->env.logger;
        if ((r = ts_lru_create(&lc, &s->lru)) != TS_OK) goto fail;
    }
    if ((r = ts__w_create(s)) != TS_OK) goto fail;
    if ((r = ts__cas_create(s)) != TS_OK) goto fail;
    if (!cfg.no_index) {
        ts_index_config ic = ts_index_config_default();
        ic.alloc = s->env.alloc;
        ic.logger = s->env.logger;
        ic.index_extra_text = cfg.index_record_text;
        if ((r = ts_index_create(&ic, &s->index)) != TS_OK) goto fail;
        s->index_load_pending = s->trusted;
    }
    ts_store_add_stream(s, "screenshots", 10);
    ts_store_add_stream(s, "audioSegments", 50);
    ts_store_add_stream(s, "videoChunks", 0);
    if ((r = ts__compress_open(s)) != TS_OK) goto fail;
    *out = s;
    return TS_OK;
fail:
    if (s->locked && s->io.lock_fn) s->io.lock_fn(s->io.user, 0);
    ts__store_free(s);
    return r;
}

/* Writes the derived files at close: the session manifest and the index. */
TS__PRIVATE ts_result ts__store_write_derived(ts_store *s)
{
    ts_result r = TS_OK;
    if (!s->dir_complete && (s->dir_changed || !s->trusted)) r = ts__dir_build(s);
    if (r == TS_OK && s->dir_complete && (s->dir_changed || !s->trusted)) {
        ts__buf b;
        ts__buf_init(&b, &s->env.alloc);
        r = ts__dir_write(s, &b);
        if (r == TS_OK) r = ts__w_put(s, TS__MANIFEST_PATH, b.data, b.len, TS__PRIO_LOW, NULL, 0);
        ts__buf_free(&b);
    }
    if (r == TS_OK && s->index) {
        if (s->index_load_pending && !s->dir_changed) {
            /* never needed, nothing changed: session-indexes is still right */
        } else if (!s->index_valid && (s->dir_changed || !s->trusted)) r = ts__index_rebuild(s);
        if (r == TS_OK && s->index_valid && (s->index_changed || !s->trusted)) {
            void *data = NULL;
            size_t len = 0;
            r = ts_index_save(s->index, &data, &len);
            if (r == TS_OK) {
                r = ts__w_put(s, TS__INDEX_PATH, data, len, TS__PRIO_LOW, NULL, 0);
                ts_index_free_buffer(s->index, data, len);
            }
        }
    }
    return r;
}

TASKSTORE_DEF ts_result ts_store_close(ts_store *s)
{
    ts_result r, r2;
    if (!s) return TS_OK;
    r = ts__w_flush(s);
    if (!s->read_only) {
        r2 = TS_OK;
        if (r == TS_OK) r2 = ts__store_write_derived(s);
        if (r2 == TS_OK && r == TS_OK) r2 = ts__w_flush(s);
        /* clean: the derived files match the metadata */
        if (r == TS_OK && r2 == TS_OK && s->io.remove_fn) {
            r2 = s->io.remove_fn(s->io.user, TS__DIRTY_PATH);
            if (r2 == TS_OK && s->io.sync_dir_fn) r2 = s->io.sync_dir_fn(s->io.user, "");
        }
        if (r == TS_OK) r = r2;
    }
    if (s->locked && s->io.lock_fn) s->io.lock_fn(s->io.user, 0);
    ts__store_free(s);
    return r;
}

/* ---- tick / idle / flush / stats ------------------------------------------------------------- */

TASKSTORE_DEF ts_result ts_store_tick(ts_store *s, uint64_t now_ms, uint64_t budget_us)
{
    if (!s) return TS_E_INVALID;
    if (now_ms > s->now_ms) s->now_ms = now_ms;
    return ts__w_tick(s, budget_us);
}

TASKSTORE_DEF ts_result ts_store_idle(ts_store *s, uint64_t now_ms, uint64_t budget_us)
{
    ts_result r;
    if (!s) return TS_E_INVALID;
    if (now_ms > s->now_ms) s->now_ms = now_ms;
    r = ts__w_idle(s, budget_us);
    if (s->lru) ts_lru_prune(s->lru, s->now_ms, NULL);
    if (r == TS_OK && s->cas && !s->read_only) ts__cas_gc_slice(s, budget_us);
    return r;
}

TASKSTORE_DEF ts_result ts_store_flush(ts_store *s)
{
    if (!s) return TS_E_INVALID;
    return ts__w_flush(s);
}

TASKSTORE_DEF ts_result ts_store_gc(ts_store *s, uint64_t now_ms, uint64_t *removed)
{
    if (removed) *removed = 0;
    if (!s) return TS_E_INVALID;
    if (s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "store is read-only");
    if (now_ms > s->now_ms) s->now_ms = now_ms;
    if (!s->cas) return TS_OK;
    return ts__cas_gc_all(s, removed);
}

TASKSTORE_DEF ts_result ts_store_stats_get(ts_store *s, ts_store_stats *out)
{
    ts_result r;
    uint64_t n = 0;
    if (out) memset(out, 0, sizeof *out);
    if (!s || !out) return TS_E_INVALID;
    if ((r = ts_session_count(s, &n)) != TS_OK) return r;
    out->sessions = n;
    if (s->lru) ts_lru_get_stats(s->lru, s->now_ms, &out->cache);
    ts__w_stats(s, out);
    if (s->cas) ts__cas_stats(s, out);
    if (s->index) ts__index_ensure(s);
    if (s->index && s->index_valid) {
        ts_index_stats is;
        if (ts_index_stats_get(s->index, &is) == TS_OK) {
            out->index.sessions = is.sessions;
            out->index.terms = is.terms;
            out->index.postings = is.postings;
            out->index.memory_bytes = is.memory_bytes;
            out->index.disk_bytes = is.disk_bytes;
            out->index.loaded = 1;
        }
    }
    ts_io_counters_get(&s->io, &out->io);
    return TS_OK;
}

/* ======================================================================== */
/* >>compress: background compression of a store. Owns the per-store state */
/* (settings, the pass: plan of eligible sessions, their file and image     */
/* units, cost estimates, counters), the idle job registered on the         */
/* store's queue, the image jobs handed to the caller, and the switch of a  */
/* CA object to its WebP encoding. Reading twins is >>codecs' business      */
/* (the store's read path calls ts__codec_read_twin).                       */
/* ======================================================================== */

TASKSTORE_DEF ts_compress_config ts_compress_config_default(void)
{
    ts_compress_config c;
    memset(&c, 0, sizeof c);
    c.mode = TS_COMPRESS_AUTO;
    c.age_ms = TS_COMPRESS_DEFAULT_AGE_MS;
    c.codec = "deflate";
    c.rescan_ms = TS_COMPRESS_DEFAULT_RESCAN_MS;
    c.webp.verify = 1;
    return c;
}

/* The store facade reads twins, and its open/free call ts__compress_open
   and ts__compress_close, which keep this part's state in s->compress. */

#define TS__CZ_MIN_FILE 64          /* smaller files never shrink under a frame */
#define TS__CZ_ID_BUF (TS_SESSION_ID_MAX + 1)

typedef struct ts__cz_plan_entry {
    char id[TS__CZ_ID_BUF];
    int64_t end;
} ts__cz_plan_entry;

struct ts__compress {
    ts_compress_config cfg;
    char codec_name[16];
    uint32_t job_id;
    int job_registered;
    char active[TS__CZ_ID_BUF];
    int paused;

    /* the pass */
    ts_compress_state state;
    ts__cz_plan_entry *plan;
    size_t plan_count, plan_cap, plan_pos;
    ts__pathlist files;         /* "id\npath" of the session under way */
    size_t file_pos;
    ts__pathlist images;        /* hashes still to convert (or verify) */
    size_t image_pos;
    ts__map image_seen;         /* hashes queued in this pass */
    uint64_t sessions_expanded, units_expanded;
    ts_compress_progress prog;
    uint64_t pass_end_ms;
    int have_pass_end;

    ts__map done;               /* session id -> hash of its metadata when finished */
    ts__map skip;               /* paths / hashes found not to shrink (or damaged) */
    ts_compress_stats work;     /* since open */
    ts_compress_stats scanned;  /* the last rescan */
    int scanned_valid;
    double file_us, image_us_per_byte; /* cost estimates (moving averages) */
};

struct ts_compress_job {
    ts_allocator alloc;
    char hash[TS_CAS_HASH_BUF];
    unsigned char *in;
    size_t in_len, in_cap;
    ts_webp_options opt;
    ts_blob out;
    ts_result result;
    int ran;
    uint64_t run_us;
};

/* ---- small helpers ------------------------------------------------------- */

TS__PRIVATE uint64_t ts__cz_now_us(const struct ts__compress *cz)
{
    if (cz->cfg.clock_us_fn) return cz->cfg.clock_us_fn(cz->cfg.clock_user);
    return ts__codec_clock_us();
}

TS__PRIVATE const ts_codec *ts__cz_codec(ts_store *s)
{
    return ts_codec_set_find(&s->codecs, s->compress->codec_name);
}

TS__PRIVATE int ts__cz_images_on(ts_store *s)
{
    return !s->compress->cfg.no_screenshots && ts_image_webp_available() && s->cas != NULL;
}

/* 1: a queued write (bytes), 2: a queued delete, 0: nothing queued; else
   the vtable's stat. Returns TS_OK with *exists and *size. */
TS__PRIVATE ts_result ts__cz_exists(ts_store *s, const char *path, int *exists, uint64_t *size)
{
    const void *d = NULL;
    size_t len = 0;
    ts_io_stat st;
    ts_result r;
    int q = ts__w_lookup(s, path, &d, &len);
    *exists = 0;
    *size = 0;
    if (q == 1) { *exists = 1; *size = len; return TS_OK; }
    if (q == 2) return TS_OK;
    if (!s->io.stat_fn) return TS_E_NOTIMPL;
    r = s->io.stat_fn(s->io.user, path, &st);
    if (r == TS_E_NOTFOUND) return TS_OK;
    if (r != TS_OK) return r;
    *exists = 1;
    *size = st.size;
    return TS_OK;
}

/* The original size a twin records (its header), through overlay and vtable. */
TS__PRIVATE ts_result ts__cz_twin_orig(ts_store *s, const char *twin, uint64_t *orig)
{
    unsigned char hdr[TS_FRAME_HEADER_SIZE];
    const void *d = NULL;
    size_t len = 0, got = 0;
    ts_frame_info fi;
    ts_result r;
    *orig = 0;
    if (ts__w_lookup(s, twin, &d, &len) == 1) {
        r = ts_frame_info_get(d, len, &fi);
    } else {
        if (!s->io.read_file_fn) return TS_E_NOTIMPL;
        r = s->io.read_file_fn(s->io.user, twin, hdr, sizeof hdr, &got);
        if (r == TS_E_RANGE) r = TS_OK;
        if (r != TS_OK) return r;
        r = ts_frame_info_get(hdr, got < sizeof hdr ? got : sizeof hdr, &fi);
    }
    if (r == TS_OK) *orig = fi.original_size;
    return r;
}

/* "Ended" is a numeric endTime; *end gets it. */
TS__PRIVATE int ts__cz_ended(ts__span meta, int64_t *end)
{
    ts__span v;
    *end = 0;
    return ts__js_get(meta, "endTime", &v) && ts__js_int64(v, end) && *end > 0;
}

TS__PRIVATE void ts__cz_stats_ratio(ts_compress_stats *st)
{
    uint64_t before = st->bytes_before + st->image_bytes_before;
    uint64_t after = st->bytes_after + st->image_bytes_after;
    st->ratio = before ? (double)after / (double)before : 0.0;
}

TS__PRIVATE void ts__cz_progress(ts_store *s)
{
    struct ts__compress *cz = s->compress;
    ts_compress_progress *p = &cz->prog;
    uint64_t done = p->files_done + p->images_done, known_left, avg_units;
    p->sessions_total = cz->plan_count;
    p->sessions_done = cz->plan_pos;
    known_left = (cz->files.count - cz->file_pos) + (cz->images.count - cz->image_pos);
    avg_units = cz->sessions_expanded ? cz->units_expanded / cz->sessions_expanded : 0;
    p->eta_us = done ? p->elapsed_us / done *
                           (known_left + (uint64_t)(cz->plan_count - cz->plan_pos) * avg_units)
                     : 0;
    if (cz->cfg.progress_fn) cz->cfg.progress_fn(cz->cfg.progress_user, p);
}

/* ---- open / close / settings ---------------------------------------------- */

TS__PRIVATE ts_result ts__cz_idle_job(void *user, uint64_t now_ms, uint64_t budget_us);


TS__PRIVATE void ts__cz_pass_reset(struct ts__compress *cz, ts_store *s)
{
    ts__free(&s->env.alloc, cz->plan, cz->plan_cap * sizeof *cz->plan);
    cz->plan = NULL;
    cz->plan_count = cz->plan_cap = cz->plan_pos = 0;
    ts__pathlist_free(&cz->files);
    ts__pathlist_free(&cz->images);
    ts__pathlist_init(&cz->files, &s->env.alloc);
    ts__pathlist_init(&cz->images, &s->env.alloc);
    cz->file_pos = cz->image_pos = 0;
    ts__map_free(&cz->image_seen);
    ts__map_init(&cz->image_seen, &s->env.alloc);
    cz->sessions_expanded = cz->units_expanded = 0;
    memset(&cz->prog, 0, sizeof cz->prog);
}

TS__PRIVATE ts_result ts__compress_open(ts_store *s)
{
    struct ts__compress *cz = (struct ts__compress *)ts__calloc(&s->env.alloc, 1, sizeof *cz);
    if (!cz) return TS_E_NOMEM;
    cz->cfg = ts_compress_config_default();
    memcpy(cz->codec_name, "deflate", 8);
    cz->cfg.codec = cz->codec_name;
    ts__pathlist_init(&cz->files, &s->env.alloc);
    ts__pathlist_init(&cz->images, &s->env.alloc);
    ts__map_init(&cz->image_seen, &s->env.alloc);
    ts__map_init(&cz->done, &s->env.alloc);
    ts__map_init(&cz->skip, &s->env.alloc);
    cz->file_us = 200.0;
    cz->image_us_per_byte = 0.5;
    s->compress = cz;
    if (!s->read_only && s->queue) {
        ts_result r = ts_queue_add_idle_job(s->queue, "compress", ts__cz_idle_job, s, &cz->job_id);
        if (r != TS_OK) {
            ts__compress_close(s);
            return r;
        }
        cz->job_registered = 1;
    }
    return TS_OK;
}

TS__PRIVATE void ts__compress_close(ts_store *s)
{
    struct ts__compress *cz = s ? s->compress : NULL;
    if (!cz) return;
    if (cz->job_registered && s->queue) ts_queue_remove_idle_job(s->queue, cz->job_id);
    ts__cz_pass_reset(cz, s);
    ts__pathlist_free(&cz->files);
    ts__pathlist_free(&cz->images);
    ts__map_free(&cz->image_seen);
    ts__map_free(&cz->done);
    ts__map_free(&cz->skip);
    ts__free(&s->env.alloc, cz, sizeof *cz);
    s->compress = NULL;
}

TS__PRIVATE ts_result ts__cz_check(ts_store *s, int write)
{
    if (!s) return TS_E_INVALID;
    if (!s->compress) return TS__FAIL(&s->env, TS_E_STATE, "compression is not set up");
    if (write && s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "store is read-only");
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_compress_configure(ts_store *s, const ts_compress_config *cfg_in)
{
    ts_compress_config cfg = cfg_in ? *cfg_in : ts_compress_config_default();
    ts_compress_config def = ts_compress_config_default();
    struct ts__compress *cz;
    const char *name;
    ts_result r;
    if ((r = ts__cz_check(s, 0)) != TS_OK) return r;
    cz = s->compress;
    name = cfg.codec ? cfg.codec : "deflate";
    if (strlen(name) > 15 || (!ts_codec_set_find(&s->codecs, name) && strcmp(name, "deflate") != 0))
        return TS__FAIL(&s->env, TS_E_NOTFOUND, "compress: no codec named '%s'", name);
    if (!cfg.age_ms) cfg.age_ms = def.age_ms;
    if (!cfg.rescan_ms) cfg.rescan_ms = def.rescan_ms;
    memcpy(cz->codec_name, name, strlen(name) + 1);
    cfg.codec = cz->codec_name;
    cz->cfg = cfg;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_compress_get_config(ts_store *s, ts_compress_config *out)
{
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!out) return TS_E_INVALID;
    if ((r = ts__cz_check(s, 0)) != TS_OK) return r;
    *out = s->compress->cfg;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_compress_add_codec(ts_store *s, const ts_codec *codec)
{
    ts_result r;
    if (!s) return TS_E_INVALID;
    r = ts_codec_set_add(&s->codecs, codec);
    if (r != TS_OK) return TS__FAIL(&s->env, r, "compress: codec not added");
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_compress_set_active(ts_store *s, const char *id)
{
    ts_result r;
    if ((r = ts__cz_check(s, 0)) != TS_OK) return r;
    if (!id) { s->compress->active[0] = 0; return TS_OK; }
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    memcpy(s->compress->active, id, strlen(id) + 1);
    return TS_OK;
}

TASKSTORE_DEF void ts_compress_pause(ts_store *s)
{
    if (s && s->compress) {
        s->compress->paused = 1;
        if (s->compress->state == TS_COMPRESS_RUNNING) s->compress->prog.state = TS_COMPRESS_PAUSED;
    }
}

TASKSTORE_DEF void ts_compress_resume(ts_store *s)
{
    if (s && s->compress) {
        s->compress->paused = 0;
        if (s->compress->state == TS_COMPRESS_RUNNING) s->compress->prog.state = TS_COMPRESS_RUNNING;
    }
}

TASKSTORE_DEF void ts_compress_cancel(ts_store *s)
{
    struct ts__compress *cz = s ? s->compress : NULL;
    if (!cz || cz->state != TS_COMPRESS_RUNNING) return;
    cz->prog.state = TS_COMPRESS_CANCELLED;
    ts__cz_progress(s);
    ts__cz_pass_reset(cz, s);
    cz->state = TS_COMPRESS_CANCELLED;
    cz->pass_end_ms = s->now_ms;
    cz->have_pass_end = 1;
}

TASKSTORE_DEF ts_result ts_compress_progress_get(ts_store *s, ts_compress_progress *out)
{
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!out) return TS_E_INVALID;
    if ((r = ts__cz_check(s, 0)) != TS_OK) return r;
    *out = s->compress->prog;
    if (s->compress->state != TS_COMPRESS_RUNNING) out->state = s->compress->state;
    return TS_OK;
}

/* ---- one session's units ---------------------------------------------------- */

/* Appends the chunk and document paths of session id (meta m) to files
   ("id\npath" entries) and, with images, the hashes its records name to
   images (each once per pass). */
TS__PRIVATE ts_result ts__cz_expand(ts_store *s, const char *id, ts__meta *m, ts__pathlist *files,
                                    ts__pathlist *images, ts__map *seen)
{
    ts__buf p, e;
    uint32_t i;
    int d;
    ts_result r = TS_OK;
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&e, &s->env.alloc);
    for (i = 0; i < m->nstreams && r == TS_OK; i++) {
        uint64_t c, n = ts__stream_chunks(m->streams[i].count, m->streams[i].per_chunk);
        for (c = 0; c < n && r == TS_OK; c++) {
            r = ts__path_chunk(&p, id, m->streams[i].name, m->streams[i].gen, c);
            e.len = 0;
            if (r == TS_OK) r = ts__buf_printf(&e, "%s\n%s", id, (const char *)p.data);
            if (r == TS_OK) r = ts__pathlist_add(files, (const char *)e.data);
        }
    }
    for (d = 0; d < TS__NDOCS && r == TS_OK; d++) {
        if (!(m->docs & (1u << d))) continue;
        r = ts__path_doc(&p, id, d);
        e.len = 0;
        if (r == TS_OK) r = ts__buf_printf(&e, "%s\n%s", id, (const char *)p.data);
        if (r == TS_OK) r = ts__pathlist_add(files, (const char *)e.data);
    }
    if (r == TS_OK && images && ts__cz_images_on(s)) {
        ts__map keys;
        size_t pos = 0;
        const ts__map_slot *sl;
        ts__map_init(&keys, &s->env.alloc);
        /* unreadable records: their screenshots are left for another pass */
        if (ts__session_hashes(s, id, m, &keys) == TS_OK) {
            while (r == TS_OK && (sl = ts__map_next(&keys, &pos)) != NULL) {
                char hex[TS_CAS_HASH_BUF];
                if (sl->key_len < 64) continue;
                memcpy(hex, sl->key, 64);
                hex[64] = 0;
                if (seen && ts__map_get(seen, hex, 64, NULL)) continue;
                r = ts__pathlist_add(images, hex);
                if (r == TS_OK && seen) r = ts__map_put(seen, hex, 64, 1);
            }
        }
        ts__map_free(&keys);
    }
    ts__buf_free(&p);
    ts__buf_free(&e);
    return r;
}

/* Compresses one file: reads its plain bytes (overlay, then disk), frames
   them and queues the twin, then the plain file's removal after it.
   *outcome: 0 nothing to do (absent, already a twin, too small),
   1 compressed, 2 kept (not smaller). Sizes into st when given. */
TS__PRIVATE ts_result ts__cz_file(ts_store *s, const char *path, int *outcome,
                                  ts_compress_stats *st)
{
    struct ts__compress *cz = s->compress;
    const ts_codec *codec = ts__cz_codec(s);
    char twin[TASKSTORE_MAX_PATH + 4];
    const void *d = NULL;
    const char *deps[1];
    size_t len = 0;
    ts__buf plain, frame;
    int q;
    ts_result r;
    *outcome = 0;
    if (!codec) return TS_E_NOTIMPL;
    if (!ts__codec_twin_path(path, twin, sizeof twin)) return TS_E_INVALID;
    ts__buf_init(&plain, &s->env.alloc);
    ts__buf_init(&frame, &s->env.alloc);
    q = ts__w_lookup(s, path, &d, &len);
    if (q == 2) { r = TS_OK; goto done; }         /* being removed (or compressed already) */
    if (q == 1) {
        r = ts__buf_append(&plain, d, len);
    } else {
        r = ts__st_read_all(s, path, &plain);
        if (r == TS_E_NOTFOUND) { r = TS_OK; goto done; } /* a twin already, or gone */
    }
    if (r != TS_OK) goto done;
    if (plain.len < TS__CZ_MIN_FILE || ts__map_get(&cz->skip, path, strlen(path), NULL)) {
        *outcome = plain.len < TS__CZ_MIN_FILE ? 0 : 2;
        goto done;
    }
    r = ts__frame_encode_buf(codec, cz->cfg.level, plain.data, plain.len, &frame);
    if (r != TS_OK) goto done;
    if (frame.len >= plain.len) {
        *outcome = 2;
        r = ts__map_put(&cz->skip, path, strlen(path), 1);
        goto done;
    }
    /* the twin, durable first; then the plain file goes (ordered after it) */
    r = ts__w_req(s, TS_QUEUE_WRITE, twin, frame.data, frame.len, TS__PRIO_LOW, NULL, 0);
    deps[0] = twin;
    if (r == TS_OK) r = ts__w_req(s, TS_QUEUE_DELETE, path, NULL, 0, TS__PRIO_LOW, deps, 1);
    if (r != TS_OK) goto done;
    *outcome = 1;
    if (st) {
        st->files_compressed++;
        st->bytes_before += plain.len;
        st->bytes_after += frame.len;
    }
done:
    ts__buf_free(&plain);
    ts__buf_free(&frame);
    return r;
}

/* ---- screenshots: the CA object's switch to WebP ---------------------------- */

/* Queues data.webp, then metadata.json naming it (after it), then - unless
   the original is kept for verification - the removal of data.bin (after
   the metadata, through the CAS writer's barrier). The object must still be
   raw with the expected size: TS_E_STATE otherwise (it changed meanwhile). */
TS__PRIVATE ts_result ts__cz_cas_switch(ts_store *s, const char *hash, uint64_t size,
                                        const void *webp, size_t len, int keep_original)
{
    ts_cas *cas = s->cas;
    ts__cas_meta m;
    ts__cas_fig before, after;
    char pw[TS__CAS_PATH_CAP], pb[TS__CAS_PATH_CAP], dir[TS__CAS_PATH_CAP];
    ts_result r;
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_load(cas, hash, &m);
    if (r != TS_OK) goto done;
    if (strcmp(m.enc, "raw") != 0 || m.size != size) { r = TS_E_STATE; goto done; }
    memset(&before, 0, sizeof before);
    ts__cas_fig_of(&m, &before);
    ts__cas_path(cas, pw, hash, "data.webp");
    ts__cas_path(cas, pb, hash, TS__CAS_RAW_FILE);
    ts__cas_path(cas, dir, hash, NULL);
    (void)ts__cas_touch(cas, hash); /* a GC cycle under way must not take it now */
    r = cas->writer.write_fn(cas->writer.user, pw, webp, len, TS__CAS_PRIO_LOW, NULL);
    if (r != TS_OK) goto done;
    memcpy(m.enc, "webp", 5);
    m.stored_size = len;
    ts__cas_hash_hex(webp, len, m.stored_hash);
    if ((r = ts__cas_meta_store(cas, &m, pw)) != TS_OK) goto done;
    if (!keep_original) {
        if (cas->writer.barrier_fn && (r = cas->writer.barrier_fn(cas->writer.user, dir)) != TS_OK) goto done;
        r = cas->writer.remove_fn(cas->writer.user, pb, TS__CAS_PRIO_LOW);
        if (r == TS_E_NOTFOUND) r = TS_OK;
    }
    ts__cas_fig_of(&m, &after);
    ts__cas_stats_apply(cas, &before, &after);
done:
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

/* keep_original: data.webp is durable and named by the metadata; read both
   back, compare, then drop data.bin - or, if they disagree, go back to raw
   (metadata first, then data.webp goes). *outcome 1 verified, 3 reverted,
   0 nothing to do. */
TS__PRIVATE ts_result ts__cz_verify(ts_store *s, const char *hash, int *outcome)
{
    ts_cas *cas = s->cas;
    ts__cas_meta m;
    char pw[TS__CAS_PATH_CAP], pb[TS__CAS_PATH_CAP], dir[TS__CAS_PATH_CAP], hex[TS_CAS_HASH_BUF];
    ts_blob webp;
    unsigned char *orig = NULL;
    size_t got = 0, cap = 0;
    ts_io_stat st;
    ts_result r, same = TS_E_CORRUPT;
    *outcome = 0;
    memset(&webp, 0, sizeof webp);
    ts__cas_meta_init(&m, &cas->env.alloc);
    r = ts__cas_meta_load(cas, hash, &m);
    if (r != TS_OK || strcmp(m.enc, "webp") != 0) goto done;
    ts__cas_path(cas, pb, hash, TS__CAS_RAW_FILE);
    ts__cas_path(cas, pw, hash, "data.webp");
    ts__cas_path(cas, dir, hash, NULL);
    if (cas->writer.stat_fn(cas->writer.user, pb, &st) != TS_OK || st.size != m.size) { r = TS_OK; goto done; }
    cap = (size_t)m.size + 1;
    orig = (unsigned char *)ts__alloc(&s->env.alloc, cap);
    if (!orig) { r = TS_E_NOMEM; goto done; }
    r = cas->writer.read_fn(cas->writer.user, pb, orig, (size_t)m.size, &got);
    if (r != TS_OK || got != m.size) { r = TS_OK; goto done; }
    ts__cas_hash_hex(orig, got, hex);
    if (strcmp(hex, hash) != 0) { r = TS_OK; goto done; } /* the original is damaged: keep both */
    r = ts_cas_load(cas, hash, &webp, NULL);
#ifdef TASKSTORE_WEBP
    if (r == TS_OK)
        same = ts__image_same(orig, got, webp.data, webp.len, !s->compress->cfg.webp.lossy,
                              s->compress->cfg.webp.max_pixels ? s->compress->cfg.webp.max_pixels
                                                               : TASKSTORE_MAX_IMAGE_PIXELS,
                              &s->env.alloc);
#endif
    if (r == TS_E_NOMEM || same == TS_E_NOMEM) { r = TS_E_NOMEM; goto done; }
    if (same == TS_OK) {
        if (cas->writer.barrier_fn && (r = cas->writer.barrier_fn(cas->writer.user, dir)) != TS_OK) goto done;
        r = cas->writer.remove_fn(cas->writer.user, pb, TS__CAS_PRIO_LOW);
        if (r == TS_E_NOTFOUND) r = TS_OK;
        *outcome = 1;
    } else {
        ts__cas_fig before, after;
        ts__cas_fig_of(&m, &before);
        memcpy(m.enc, "raw", 4);
        m.stored_size = m.size;
        m.stored_hash[0] = 0;
        if ((r = ts__cas_meta_store(cas, &m, NULL)) != TS_OK) goto done;
        if (cas->writer.barrier_fn && (r = cas->writer.barrier_fn(cas->writer.user, dir)) != TS_OK) goto done;
        r = cas->writer.remove_fn(cas->writer.user, pw, TS__CAS_PRIO_LOW);
        if (r == TS_E_NOTFOUND) r = TS_OK;
        ts__cas_fig_of(&m, &after);
        ts__cas_stats_apply(cas, &before, &after);
        (void)ts__map_put(&s->compress->skip, hash, 64, 1);
        *outcome = 3;
    }
done:
    ts_blob_free(&webp);
    ts__free(&s->env.alloc, orig, cap);
    ts__cas_meta_free(&m);
    ts__cas_scratch_trim(cas);
    return r;
}

/* ---- jobs ------------------------------------------------------------------------ */

TASKSTORE_DEF void ts_compress_job_free(ts_compress_job *job)
{
    ts_allocator a;
    if (!job) return;
    a = job->alloc;
    ts__free(&a, job->in, job->in_cap);
    ts_blob_free(&job->out);
    ts__free(&a, job, sizeof *job);
}

TASKSTORE_DEF ts_result ts_compress_job_run(ts_compress_job *job)
{
    uint64_t t0;
    if (!job) return TS_E_INVALID;
    if (job->ran) return job->result;
    t0 = ts__codec_clock_us();
    job->result = ts_image_to_webp(job->in, job->in_len, &job->opt, &job->alloc, &job->out, NULL);
    job->run_us = ts__codec_clock_us() - t0;
    job->ran = 1;
    return job->result;
}

/* Prepares the job for hash: TS_OK with *job, TS_DONE when the object needs
   nothing (not a raw PNG/JPEG, known not to shrink, gone). A converted object
   whose original is still kept gets verified here instead (*verified set). */
TS__PRIVATE ts_result ts__cz_image_prepare(ts_store *s, const char *hash, ts_compress_job **job,
                                           int *verify_outcome)
{
    struct ts__compress *cz = s->compress;
    ts_cas_info info;
    ts_compress_job *j;
    ts_blob b;
    ts_result r;
    *job = NULL;
    *verify_outcome = 0;
    if (ts__map_get(&cz->skip, hash, 64, NULL)) return TS_DONE;
    r = ts_cas_stat(s->cas, hash, &info);
    if (r == TS_E_NOTFOUND || r == TS_E_CORRUPT) return TS_DONE;
    if (r != TS_OK) return r;
    if (strcmp(info.stored_encoding, "webp") == 0) {
        r = ts__cz_verify(s, hash, verify_outcome);
        return r == TS_OK ? TS_DONE : r;
    }
    if (strcmp(info.stored_encoding, "raw") != 0 ||
        (strcmp(info.mime_type, "image/png") != 0 && strcmp(info.mime_type, "image/jpeg") != 0))
        return TS_DONE;
    r = ts_cas_load(s->cas, hash, &b, NULL);
    if (r == TS_E_NOTFOUND || r == TS_E_CORRUPT) return TS_DONE;
    if (r != TS_OK) return r;
    if (!ts_image_sniff(b.data, b.len)) { ts_blob_free(&b); return TS_DONE; }
    j = (ts_compress_job *)ts__calloc(&s->env.alloc, 1, sizeof *j);
    if (!j) { ts_blob_free(&b); return TS_E_NOMEM; }
    j->alloc = s->env.alloc;
    memcpy(j->hash, hash, TS_CAS_HASH_BUF);
    j->in = (unsigned char *)b.data;
    j->in_len = b.len;
    j->in_cap = b.cap;
    j->opt = cz->cfg.webp;
    if (!j->opt.lossy) j->opt.verify = 1; /* exactness is checked before the original goes */
    *job = j;
    return TS_OK;
}

/* Commits a job that ran: *outcome 1 converted, 2 kept, 0 dropped. */
TS__PRIVATE ts_result ts__cz_image_commit(ts_store *s, ts_compress_job *job, int *outcome,
                                          ts_compress_stats *st)
{
    struct ts__compress *cz = s->compress;
    ts_result r = TS_OK;
    *outcome = 0;
    if (!job->ran) ts_compress_job_run(job);
    if (job->result == TS_E_NOMEM) return TS_E_NOMEM;
    if (job->result != TS_OK || job->out.len >= job->in_len) {
        /* damaged, unsupported or not smaller: the original stays */
        (void)ts__map_put(&cz->skip, job->hash, 64, 1);
        *outcome = 2;
        if (job->result != TS_OK) cz->work.failed++;
        return TS_OK;
    }
    r = ts__cz_cas_switch(s, job->hash, job->in_len, job->out.data, job->out.len, cz->cfg.keep_original);
    if (r == TS_E_STATE || r == TS_E_NOTFOUND) return TS_OK; /* changed meanwhile: nothing to do */
    if (r != TS_OK) {
        ts_error_info ei;
        ts_cas_last_error(s->cas, &ei);
        return TS__FAIL(&s->env, r, "compress: attachment %s: %s", job->hash, ei.message);
    }
    *outcome = 1;
    if (st) {
        st->images_converted++;
        st->image_bytes_before += job->in_len;
        st->image_bytes_after += job->out.len;
    }
    return TS_OK;
}

/* ---- the pass ---------------------------------------------------------------------- */

TS__PRIVATE int ts__cz_plan_cmp(const void *a, const void *b)
{
    const ts__cz_plan_entry *x = (const ts__cz_plan_entry *)a, *y = (const ts__cz_plan_entry *)b;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->id, y->id);
}

/* Plans a pass: every eligible session not finished since it last changed. */
TS__PRIVATE ts_result ts__cz_plan(ts_store *s, uint64_t now_ms)
{
    struct ts__compress *cz = s->compress;
    ts_blob list;
    ts__js_iter it;
    ts__span arr, k, v;
    ts_result r;
    ts__cz_pass_reset(cz, s);
    r = ts_session_list(s, &list);
    if (r != TS_OK) return r;
    arr.p = (const char *)list.data;
    arr.n = list.len;
    if (!ts__js_iter_begin(&it, arr, '[')) { ts_blob_free(&list); return TS_E_CORRUPT; }
    while ((r = ts__js_iter_next(&it, &k, &v)) == TS_OK) {
        ts__span idv;
        char id[TS__CZ_ID_BUF];
        size_t n = 0;
        int64_t end;
        uint64_t fp, seen;
        if (!ts__js_get(v, "id", &idv) || idv.p[0] != '"' ||
            !ts__js_str_decode_to(idv, id, TS_SESSION_ID_MAX, &n) || !ts__valid_id(id, n))
            continue;
        id[n] = 0;
        if (!ts__cz_ended(v, &end) || strcmp(id, cz->active) == 0) continue;
        if ((uint64_t)end + cz->cfg.age_ms > now_ms) continue;
        fp = ts__hash_bytes(v.p, v.n);
        if (ts__map_get(&cz->done, id, n, &seen) && seen == fp) continue;
        if (cz->plan_count == cz->plan_cap) {
            size_t nc = cz->plan_cap ? cz->plan_cap * 2 : 16;
            ts__cz_plan_entry *np = (ts__cz_plan_entry *)ts__realloc(
                &s->env.alloc, cz->plan, cz->plan_cap * sizeof *np, nc * sizeof *np);
            if (!np) { ts_blob_free(&list); return TS_E_NOMEM; }
            cz->plan = np;
            cz->plan_cap = nc;
        }
        memcpy(cz->plan[cz->plan_count].id, id, n + 1);
        cz->plan[cz->plan_count].end = end;
        cz->plan_count++;
    }
    ts_blob_free(&list);
    if (r != TS_DONE) return TS_E_CORRUPT;
    if (cz->plan_count)
        qsort(cz->plan, cz->plan_count, sizeof *cz->plan, ts__cz_plan_cmp);
    if (cz->cfg.newest_first) {
        size_t i;
        for (i = 0; i < cz->plan_count / 2; i++) {
            ts__cz_plan_entry t = cz->plan[i];
            cz->plan[i] = cz->plan[cz->plan_count - 1 - i];
            cz->plan[cz->plan_count - 1 - i] = t;
        }
    }
    cz->state = TS_COMPRESS_RUNNING;
    cz->prog.state = cz->paused ? TS_COMPRESS_PAUSED : TS_COMPRESS_RUNNING;
    cz->prog.sessions_total = cz->plan_count;
    return TS_OK;
}

/* Marks the session whose files were just finished (its metadata's
   fingerprint), so later passes skip it until it changes. */
TS__PRIVATE void ts__cz_session_done(ts_store *s, const char *id)
{
    ts__buf meta;
    ts__buf_init(&meta, &s->env.alloc);
    if (ts__meta_read(s, id, &meta) == TS_OK) {
        ts__span sp = ts__js_trim((const char *)meta.data, meta.len);
        (void)ts__map_put(&s->compress->done, id, strlen(id), ts__hash_bytes(sp.p, sp.n));
    }
    ts__buf_free(&meta);
}

/* Moves the pass to its next session: its files (and images) become units. */
TS__PRIVATE ts_result ts__cz_next_session(ts_store *s)
{
    struct ts__compress *cz = s->compress;
    ts__meta m;
    ts_result r;
    if (cz->file_pos > 0 && cz->file_pos == cz->files.count && cz->files.count) {
        const char *e = cz->files.p[0];
        char id[TS__CZ_ID_BUF];
        size_t n = (size_t)(strchr(e, '\n') - e);
        memcpy(id, e, n);
        id[n] = 0;
        ts__cz_session_done(s, id);
    }
    ts__pathlist_free(&cz->files);
    ts__pathlist_init(&cz->files, &s->env.alloc);
    cz->file_pos = 0;
    while (cz->plan_pos < cz->plan_count) {
        const char *id = cz->plan[cz->plan_pos++].id;
        size_t before = cz->images.count;
        ts__meta_init(&m, &s->env.alloc);
        r = ts__meta_get(s, id, &m);
        if (r == TS_OK) r = ts__cz_expand(s, id, &m, &cz->files, &cz->images, &cz->image_seen);
        ts__meta_free(&m);
        if (r == TS_E_NOMEM) return r;
        if (r != TS_OK) { cz->work.failed++; continue; } /* unreadable: verify reports it */
        cz->sessions_expanded++;
        cz->units_expanded += cz->files.count + (cz->images.count - before);
        if (cz->files.count) return TS_OK;
        if (cz->images.count > before) return TS_OK;
    }
    return TS_DONE;
}

TS__PRIVATE void ts__cz_pass_done(ts_store *s)
{
    struct ts__compress *cz = s->compress;
    cz->state = TS_COMPRESS_DONE;
    cz->prog.state = TS_COMPRESS_DONE;
    cz->pass_end_ms = s->now_ms;
    cz->have_pass_end = 1;
    ts__cz_progress(s);
}

/* The unit's bookkeeping: counters, cost, overrun, progress. */
TS__PRIVATE void ts__cz_account(ts_store *s, uint64_t spent, uint64_t budget_us)
{
    struct ts__compress *cz = s->compress;
    cz->work.units++;
    cz->work.work_us += spent;
    if (budget_us && spent > budget_us) cz->work.overruns++;
    cz->prog.bytes_before = cz->work.bytes_before + cz->work.image_bytes_before;
    cz->prog.bytes_after = cz->work.bytes_after + cz->work.image_bytes_after;
    cz->prog.elapsed_us += spent;
    ts__cz_progress(s);
}

/* The next file unit of the session under way. */
TS__PRIVATE ts_result ts__cz_file_unit(ts_store *s, uint64_t budget_us)
{
    struct ts__compress *cz = s->compress;
    const char *e = cz->files.p[cz->file_pos++];
    uint64_t t0 = ts__cz_now_us(cz), spent;
    int outcome = 0;
    ts_result r = ts__cz_file(s, strchr(e, '\n') + 1, &outcome, &cz->work);
    if (r == TS_E_NOMEM) return r;
    if (r != TS_OK && r != TS_E_NOTIMPL) cz->work.failed++;
    if (outcome == 1) cz->prog.files_done++;
    if (outcome == 2) cz->work.kept++;
    spent = ts__cz_now_us(cz) - t0;
    cz->file_us = cz->file_us * 0.8 + (double)spent * 0.2;
    ts__cz_account(s, spent, budget_us);
    return TS_OK;
}

/* The next image unit of the pass (convert, or verify a kept original). */
TS__PRIVATE ts_result ts__cz_image_unit(ts_store *s, uint64_t budget_us)
{
    struct ts__compress *cz = s->compress;
    const char *hash = cz->images.p[cz->image_pos++];
    ts_compress_job *job = NULL;
    uint64_t t0 = ts__cz_now_us(cz), spent, in_len = 0;
    int outcome = 0, vo = 0;
    ts_result r = ts__cz_image_prepare(s, hash, &job, &vo);
    if (r == TS_OK) {
        in_len = job->in_len;
        ts_compress_job_run(job);
        r = ts__cz_image_commit(s, job, &outcome, &cz->work);
        ts_compress_job_free(job);
        if (outcome == 1) cz->prog.images_done++;
        if (outcome == 2) cz->work.kept++;
    } else if (r == TS_DONE) {
        r = TS_OK;
        if (vo == 3) cz->work.failed++;
    }
    if (r == TS_E_NOMEM) return r;
    if (r != TS_OK) cz->work.failed++;
    spent = ts__cz_now_us(cz) - t0;
    if (in_len)
        cz->image_us_per_byte = cz->image_us_per_byte * 0.7 + (double)spent / (double)in_len * 0.3;
    ts__cz_account(s, spent, budget_us);
    return TS_OK;
}

/* Runs units while the budget lasts (0: no limit). Idle work leaves images
   to jobs when offload_images is set. Returns TS_DONE when the pass is over,
   TS_OK when work remains (or waits for jobs), or TS_E_NOMEM. */
TS__PRIVATE ts_result ts__cz_work(ts_store *s, uint64_t budget_us, int idle)
{
    struct ts__compress *cz = s->compress;
    uint64_t start = ts__cz_now_us(cz), units = 0;
    ts_result r;
    for (;;) {
        uint64_t used = ts__cz_now_us(cz) - start, left = budget_us > used ? budget_us - used : 0;
        int files_left = cz->file_pos < cz->files.count;
        int image = !files_left && cz->image_pos < cz->images.count && !(idle && cz->cfg.offload_images);
        if (cz->paused || cz->state != TS_COMPRESS_RUNNING) return TS_OK;
        if (budget_us && units && !left) { cz->work.deferred++; return TS_OK; }
        if (!files_left && !image) {
            r = ts__cz_next_session(s);
            if (r == TS_DONE) {
                if (cz->image_pos < cz->images.count) return TS_OK; /* left to jobs */
                ts__cz_pass_done(s);
                return TS_DONE;
            }
            if (r != TS_OK) return r;
            continue;
        }
        /* does the next unit fit? a fresh slice always runs one */
        if (budget_us && units) {
            double est = cz->file_us;
            if (image) {
                ts_cas_info info;
                est = ts_cas_stat(s->cas, cz->images.p[cz->image_pos], &info) == TS_OK
                          ? cz->image_us_per_byte * (double)info.size : 0.0;
            }
            if (est > (double)left) { cz->work.deferred++; return TS_OK; }
        }
        r = image ? ts__cz_image_unit(s, budget_us) : ts__cz_file_unit(s, budget_us);
        if (r != TS_OK) return r;
        units++;
    }
}

TS__PRIVATE ts_result ts__cz_idle_job(void *user, uint64_t now_ms, uint64_t budget_us)
{
    ts_store *s = (ts_store *)user;
    struct ts__compress *cz = s->compress;
    ts_result r;
    if (!cz || cz->cfg.disabled || cz->cfg.mode != TS_COMPRESS_AUTO || cz->paused || s->read_only)
        return TS_DONE;
    if (now_ms > s->now_ms) s->now_ms = now_ms;
    if (cz->state != TS_COMPRESS_RUNNING) {
        if (cz->have_pass_end && s->now_ms < cz->pass_end_ms + cz->cfg.rescan_ms) return TS_DONE;
        if (!ts__cz_codec(s) && !ts__cz_images_on(s)) return TS_DONE;
        if ((r = ts__cz_plan(s, s->now_ms)) != TS_OK) return r;
    }
    if (!budget_us) return TS_OK; /* nothing left of this idle call */
    return ts__cz_work(s, budget_us, 1);
}

TASKSTORE_DEF ts_result ts_compress_run(ts_store *s, uint64_t now_ms, uint64_t budget_us)
{
    struct ts__compress *cz;
    ts_result r;
    if ((r = ts__cz_check(s, 1)) != TS_OK) return r;
    cz = s->compress;
    if (now_ms > s->now_ms) s->now_ms = now_ms;
    if (cz->cfg.disabled) return TS_DONE;
    if (cz->state != TS_COMPRESS_RUNNING) {
        if (!ts__cz_codec(s) && !ts__cz_images_on(s))
            return TS__FAIL(&s->env, TS_E_NOTIMPL, "compress: no codec and no image conversion in this build");
        if ((r = ts__cz_plan(s, s->now_ms)) != TS_OK) return TS__FAIL(&s->env, r, "compress: planning failed");
    }
    if (cz->paused) return TS_OK;
    r = ts__cz_work(s, budget_us, 0);
    if (r == TS_OK && cz->state == TS_COMPRESS_CANCELLED) return TS_E_CANCELLED;
    return r;
}

TASKSTORE_DEF ts_result ts_compress_job_take(ts_store *s, uint64_t now_ms, ts_compress_job **job)
{
    struct ts__compress *cz;
    ts_result r;
    if (job) *job = NULL;
    if (!job) return TS_E_INVALID;
    if ((r = ts__cz_check(s, 1)) != TS_OK) return r;
    cz = s->compress;
    if (now_ms > s->now_ms) s->now_ms = now_ms;
    if (cz->cfg.disabled || cz->paused || !ts__cz_images_on(s)) return TS_DONE;
    if (cz->state != TS_COMPRESS_RUNNING) {
        if (cz->have_pass_end && s->now_ms < cz->pass_end_ms + cz->cfg.rescan_ms) return TS_DONE;
        if ((r = ts__cz_plan(s, s->now_ms)) != TS_OK) return r;
    }
    for (;;) {
        int vo = 0;
        while (cz->image_pos >= cz->images.count) {
            /* finish the session under way (files are quick), expand the next */
            while (cz->file_pos < cz->files.count)
                if ((r = ts__cz_file_unit(s, 0)) != TS_OK) return r;
            r = ts__cz_next_session(s);
            if (r == TS_DONE) { ts__cz_pass_done(s); return TS_DONE; }
            if (r != TS_OK) return r;
        }
        r = ts__cz_image_prepare(s, cz->images.p[cz->image_pos++], job, &vo);
        if (r == TS_OK) { cz->work.jobs_taken++; return TS_OK; }
        if (r != TS_DONE) return r;
    }
}

TASKSTORE_DEF ts_result ts_compress_job_commit(ts_store *s, ts_compress_job *job)
{
    int outcome = 0;
    ts_result r;
    if (!job) return TS_E_INVALID;
    if ((r = ts__cz_check(s, 1)) != TS_OK) { ts_compress_job_free(job); return r; }
    r = ts__cz_image_commit(s, job, &outcome, &s->compress->work);
    if (outcome == 1) s->compress->prog.images_done++;
    if (outcome == 2) s->compress->work.kept++;
    s->compress->work.units++;
    s->compress->work.work_us += job->run_us;
    ts_compress_job_free(job);
    return r;
}

/* ---- one session on demand ------------------------------------------------------------ */

/* Figures of session id's files and images into st (added). *left = units
   that could still be compressed. */
TS__PRIVATE ts_result ts__cz_session_figures(ts_store *s, const char *id, ts_compress_stats *st,
                                             uint64_t *left)
{
    struct ts__compress *cz = s->compress;
    ts__meta m;
    ts__pathlist files, images;
    size_t i;
    ts_result r;
    *left = 0;
    ts__meta_init(&m, &s->env.alloc);
    ts__pathlist_init(&files, &s->env.alloc);
    ts__pathlist_init(&images, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_OK) r = ts__cz_expand(s, id, &m, &files, &images, NULL);
    for (i = 0; r == TS_OK && i < files.count; i++) {
        const char *path = strchr(files.p[i], '\n') + 1;
        char twin[TASKSTORE_MAX_PATH + 4];
        int plain_ex = 0, twin_ex = 0;
        uint64_t psz = 0, tsz = 0, orig = 0;
        st->files++;
        if (!ts__codec_twin_path(path, twin, sizeof twin)) continue;
        if ((r = ts__cz_exists(s, path, &plain_ex, &psz)) != TS_OK) break;
        if ((r = ts__cz_exists(s, twin, &twin_ex, &tsz)) != TS_OK) break;
        if (plain_ex) {
            st->plain_bytes += psz;
            if (psz >= TS__CZ_MIN_FILE && !ts__map_get(&cz->skip, path, strlen(path), NULL)) (*left)++;
            else if (psz >= TS__CZ_MIN_FILE) st->kept++;
        } else if (twin_ex && ts__cz_twin_orig(s, twin, &orig) == TS_OK) {
            st->files_compressed++;
            st->bytes_before += orig;
            st->bytes_after += tsz;
        }
    }
    for (i = 0; r == TS_OK && i < images.count; i++) {
        ts_cas_info info;
        if (ts_cas_stat(s->cas, images.p[i], &info) != TS_OK) continue;
        st->images++;
        if (strcmp(info.stored_encoding, "webp") == 0) {
            st->images_converted++;
            st->image_bytes_before += info.size;
            st->image_bytes_after += info.stored_size;
        } else if (strcmp(info.mime_type, "image/png") == 0 || strcmp(info.mime_type, "image/jpeg") == 0) {
            if (ts__map_get(&cz->skip, images.p[i], 64, NULL)) st->kept++;
            else if (ts__cz_images_on(s)) (*left)++;
        }
    }
    if (r == TS_OK && !ts__cz_codec(s)) {
        /* no codec for files in this build: plain files are not "left" */
        uint64_t f = 0;
        for (i = 0; i < files.count; i++) {
            const char *path = strchr(files.p[i], '\n') + 1;
            int ex = 0;
            uint64_t sz = 0;
            if (ts__cz_exists(s, path, &ex, &sz) == TS_OK && ex && sz >= TS__CZ_MIN_FILE &&
                !ts__map_get(&cz->skip, path, strlen(path), NULL))
                f++;
        }
        *left -= f < *left ? f : *left;
    }
    ts__meta_free(&m);
    ts__pathlist_free(&files);
    ts__pathlist_free(&images);
    ts__cz_stats_ratio(st);
    return r;
}

TASKSTORE_DEF ts_result ts_compress_session_stats(ts_store *s, const char *id, ts_compress_stats *out)
{
    uint64_t left;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!out) return TS_E_INVALID;
    if ((r = ts__cz_check(s, 0)) != TS_OK) return r;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    return ts__cz_session_figures(s, id, out, &left);
}

TASKSTORE_DEF ts_result ts_compress_is_session_compressed(ts_store *s, const char *id, int *out)
{
    ts_compress_stats st;
    uint64_t left = 0;
    ts_result r;
    if (out) *out = 0;
    if (!out) return TS_E_INVALID;
    if ((r = ts__cz_check(s, 0)) != TS_OK) return r;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    memset(&st, 0, sizeof st);
    if ((r = ts__cz_session_figures(s, id, &st, &left)) != TS_OK) return r;
    *out = left == 0;
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_compress_session(ts_store *s, const char *id, ts_compress_stats *out)
{
    struct ts__compress *cz;
    ts__meta m;
    ts__buf meta;
    ts__pathlist files, images;
    size_t i;
    int64_t end;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if ((r = ts__cz_check(s, 1)) != TS_OK) return r;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    cz = s->compress;
    if (!ts__cz_codec(s) && !ts__cz_images_on(s))
        return TS__FAIL(&s->env, TS_E_NOTIMPL, "compress: no codec and no image conversion in this build");
    if (strcmp(id, cz->active) == 0)
        return TS__FAIL(&s->env, TS_E_STATE, "compress: %s is the active session", id);
    ts__buf_init(&meta, &s->env.alloc);
    r = ts__meta_read(s, id, &meta);
    if (r == TS_OK) {
        ts__span sp = ts__js_trim((const char *)meta.data, meta.len);
        if (!ts__cz_ended(sp, &end)) r = TS__FAIL(&s->env, TS_E_STATE, "compress: %s has not ended", id);
    } else if (r == TS_E_NOTFOUND) {
        r = TS__FAIL(&s->env, TS_E_NOTFOUND, "compress: no session %s", id);
    }
    ts__buf_free(&meta);
    if (r != TS_OK) return r;
    ts__meta_init(&m, &s->env.alloc);
    ts__pathlist_init(&files, &s->env.alloc);
    ts__pathlist_init(&images, &s->env.alloc);
    r = ts__meta_get(s, id, &m);
    if (r == TS_OK) r = ts__cz_expand(s, id, &m, &files, &images, NULL);
    for (i = 0; r == TS_OK && i < files.count && ts__cz_codec(s); i++) {
        int outcome = 0;
        r = ts__cz_file(s, strchr(files.p[i], '\n') + 1, &outcome, &cz->work);
        if (outcome == 2) cz->work.kept++;
        cz->work.units++;
    }
    for (i = 0; r == TS_OK && i < images.count; i++) {
        ts_compress_job *job = NULL;
        int outcome = 0, vo = 0;
        r = ts__cz_image_prepare(s, images.p[i], &job, &vo);
        if (r == TS_OK) {
            ts_compress_job_run(job);
            r = ts__cz_image_commit(s, job, &outcome, &cz->work);
            if (outcome == 2) cz->work.kept++;
            ts_compress_job_free(job);
        } else if (r == TS_DONE) {
            r = TS_OK;
        }
        cz->work.units++;
    }
    ts__meta_free(&m);
    ts__pathlist_free(&files);
    ts__pathlist_free(&images);
    if (r == TS_OK) ts__cz_session_done(s, id);
    if (r == TS_OK && out) r = ts_compress_session_stats(s, id, out);
    return r;
}

TASKSTORE_DEF ts_result ts_compress_stats_get(ts_store *s, int rescan, ts_compress_stats *out)
{
    struct ts__compress *cz;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!out) return TS_E_INVALID;
    if ((r = ts__cz_check(s, 0)) != TS_OK) return r;
    cz = s->compress;
    if (rescan) {
        ts_blob list;
        ts__js_iter it;
        ts__span arr, k, v;
        ts_compress_stats tot;
        memset(&tot, 0, sizeof tot);
        if ((r = ts_session_list(s, &list)) != TS_OK) return r;
        arr.p = (const char *)list.data;
        arr.n = list.len;
        if (ts__js_iter_begin(&it, arr, '[')) {
            while ((r = ts__js_iter_next(&it, &k, &v)) == TS_OK) {
                ts__span idv;
                char id[TS__CZ_ID_BUF];
                size_t n = 0;
                uint64_t left = 0;
                ts_compress_stats one;
                if (!ts__js_get(v, "id", &idv) || idv.p[0] != '"' ||
                    !ts__js_str_decode_to(idv, id, TS_SESSION_ID_MAX, &n) || !ts__valid_id(id, n))
                    continue;
                id[n] = 0;
                memset(&one, 0, sizeof one);
                if (ts__cz_session_figures(s, id, &one, &left) != TS_OK) continue;
                tot.files += one.files;
                tot.files_compressed += one.files_compressed;
                tot.bytes_before += one.bytes_before;
                tot.bytes_after += one.bytes_after;
                tot.plain_bytes += one.plain_bytes;
                tot.images += one.images;
                tot.images_converted += one.images_converted;
                tot.image_bytes_before += one.image_bytes_before;
                tot.image_bytes_after += one.image_bytes_after;
                tot.kept += one.kept;
                if (!left && (one.files_compressed || one.images_converted)) tot.sessions_compressed++;
            }
        }
        ts_blob_free(&list);
        cz->scanned = tot;
        cz->scanned_valid = 1;
    }
    if (cz->scanned_valid) *out = cz->scanned;
    out->units = cz->work.units;
    out->failed = cz->work.failed;
    out->overruns = cz->work.overruns;
    out->deferred = cz->work.deferred;
    out->jobs_taken = cz->work.jobs_taken;
    out->work_us = cz->work.work_us;
    if (!cz->scanned_valid) {
        /* no rescan yet: what this process compressed */
        out->files_compressed = cz->work.files_compressed;
        out->bytes_before = cz->work.bytes_before;
        out->bytes_after = cz->work.bytes_after;
        out->images_converted = cz->work.images_converted;
        out->image_bytes_before = cz->work.image_bytes_before;
        out->image_bytes_after = cz->work.image_bytes_after;
        out->kept = cz->work.kept;
    }
    ts__cz_stats_ratio(out);
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_compress_attach_load(ts_store *s, const char *hash, ts_blob *out,
                                                char *mime_out)
{
    ts_cas_info info;
    ts_result r;
    if (mime_out) mime_out[0] = 0;
    if (out) memset(out, 0, sizeof *out);
    if (!s || !out || !hash) return TS_E_INVALID;
    if (!ts__valid_hash_hex(hash, strlen(hash))) return TS__FAIL(&s->env, TS_E_INVALID, "invalid hash");
    if (!s->cas) return TS__FAIL(&s->env, TS_E_STATE, "no attachment store");
    r = ts_cas_load(s->cas, hash, out, &info);
    if (r != TS_OK) {
        ts_error_info ei;
        if (r == TS_E_NOTFOUND) return r;
        ts_cas_last_error(s->cas, &ei);
        return TS__FAIL(&s->env, r, "attachment %s: %s", hash, ei.message);
    }
    if (mime_out) {
        const char *m = strcmp(info.stored_encoding, "webp") == 0 ? "image/webp" : info.mime_type;
        size_t n = strlen(m);
        if (n > 127) n = 127;
        memcpy(mime_out, m, n);
        mime_out[n] = 0;
    }
    return TS_OK;
}



/* ======================================================================== */
/* >>migrate: legacy (Phase 3) stores -> chunked sessions + CA attachments  */
/* ======================================================================== */
/* Owns the legacy reader (sessions/{id}.json, attachments/{aid}.json), the
   backups (sessions/{id}.backup-{ms}), migration/ (progress.json of the
   background migrator, points/{ms}.json rollback points), the per-session
   migrate -> verify -> commit sequence, rollback, cleanup, status and the
   background migrator. It sits after the store facade because it drives
   the store's own pieces (queue, CA store, session directory, index), and
   it writes its own files straight through the vtable, durably, because
   each of them is a commit point of the crash-safety order:

     backup durable -> attachments + chunked session durable (flush) ->
     verify from disk -> remove sessions/{id}.json (dir synced).

   Until the last step the legacy file is the truth, so a crash anywhere
   leaves it (maybe beside partial chunked data that a re-run overwrites) or
   leaves the finished, verified migration. */

#define TS__MIG_LEGACY_DIR "sessions"
#define TS__MIG_ATT_DIR "attachments"
#define TS__MIG_DIR "migration"
#define TS__MIG_PROGRESS "migration/progress.json"
#define TS__MIG_POINTS "migration/points"
#define TS__MIG_BACKUP_TAG ".backup-"
#define TS__MIG_DEFAULT_FLUSH ((uint64_t)8 << 20)
#define TS__MIG_REASON 512

#ifdef TASKSTORE_MAX_FILE_BYTES
#define TS__MIG_MAX_FILE TASKSTORE_MAX_FILE_BYTES
#else
#define TS__MIG_MAX_FILE ((size_t)256 << 20)
#endif

/* ---- small helpers -------------------------------------------------------- */

/* Reads a whole file through the store's vtable (no overlay, no cache:
   legacy and migration files never go through the queue). */
TS__PRIVATE ts_result ts__mig_read(ts_store *s, const char *path, ts__buf *b)
{
    size_t size = 0;
    ts_result r;
    b->len = 0;
    if (!s->io.read_file_fn) return TS_E_NOTIMPL;
    if (!ts__valid_rel_path(path, strlen(path))) return TS_E_INVALID;
    if ((r = ts__buf_reserve(b, b->cap > 4096 ? b->cap - 1 : 4096)) != TS_OK) return r;
    r = s->io.read_file_fn(s->io.user, path, b->data, b->cap - 1, &size);
    if (r == TS_E_RANGE || (r == TS_OK && size > b->cap - 1)) {
        if (size > TS__MIG_MAX_FILE) return TS_E_TOOBIG;
        if ((r = ts__buf_reserve(b, size)) != TS_OK) return r;
        r = s->io.read_file_fn(s->io.user, path, b->data, b->cap - 1, &size);
        if (r == TS_OK && size > b->cap - 1) r = TS_E_IO;
    }
    if (r != TS_OK) { b->len = 0; if (b->data) b->data[0] = 0; return r; }
    b->len = size;
    b->data[size] = 0;
    return TS_OK;
}

TS__PRIVATE int ts__mig_exists(ts_store *s, const char *path)
{
    ts_io_stat st;
    if (!s->io.stat_fn) return 0;
    return s->io.stat_fn(s->io.user, path, &st) == TS_OK && !st.is_dir;
}

/* A durable atomic replace (file synced, rename, parent synced). */
TS__PRIVATE ts_result ts__mig_write(ts_store *s, const char *path, const void *data, size_t len)
{
    if (!s->io.write_file_atomic_fn) return TS_E_NOTIMPL;
    return s->io.write_file_atomic_fn(s->io.user, path, data, len, 0);
}

/* Removes a file and makes the removal durable (syncs dir). */
TS__PRIVATE ts_result ts__mig_unlink(ts_store *s, const char *path, const char *dir)
{
    ts_result r;
    if (!s->io.remove_fn) return TS_E_NOTIMPL;
    r = s->io.remove_fn(s->io.user, path);
    if (r == TS_E_NOTFOUND) return TS_OK;
    if (r == TS_OK && s->io.sync_dir_fn) r = s->io.sync_dir_fn(s->io.user, dir);
    return r;
}

TS__PRIVATE void ts__mig_sha_hex(const void *data, size_t n, char out[65])
{
    unsigned char d[32];
    ts_sha256_buffer(data, n, d);
    ts_sha256_hex(d, out);
}

/* Message text safe to put anywhere (JSON, a terminal): printable ASCII. */
TS__PRIVATE void ts__mig_sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7F) *s = '?';
}

TS__PRIVATE const char *ts__mig_type_name(const ts__json *v)
{
    if (!v) return "missing";
    switch (v->type) {
    case TS__JSON_NULL: return "null";
    case TS__JSON_FALSE: case TS__JSON_TRUE: return "a boolean";
    case TS__JSON_NUMBER: return "a number";
    case TS__JSON_STRING: return "a string";
    case TS__JSON_ARRAY: return "an array";
    default: return "an object";
    }
}

/* "{id}.backup-{digits}" -> 1, id length and the timestamp. */
TS__PRIVATE int ts__mig_backup_name(const char *name, size_t n, size_t *id_len, uint64_t *ts)
{
    size_t tag = strlen(TS__MIG_BACKUP_TAG), i, at = (size_t)-1;
    uint64_t v = 0;
    if (n <= tag + 1) return 0;
    for (i = n - tag; ; i--) {
        if (memcmp(name + i, TS__MIG_BACKUP_TAG, tag) == 0) { at = i; break; }
        if (i == 0) break;
    }
    if (at == (size_t)-1 || at == 0 || at + tag >= n || n - (at + tag) > 19) return 0;
    for (i = at + tag; i < n; i++) {
        if (name[i] < '0' || name[i] > '9') return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (!ts__valid_id(name, at)) return 0;
    *id_len = at;
    *ts = v;
    return 1;
}

/* ---- string vectors -------------------------------------------------------- */

typedef struct ts__mig_sv {
    char **v;
    size_t n, cap;
    const ts_allocator *a;
} ts__mig_sv;

TS__PRIVATE void ts__mig_sv_init(ts__mig_sv *sv, const ts_allocator *a)
{
    sv->v = NULL; sv->n = sv->cap = 0; sv->a = a;
}

TS__PRIVATE ts_result ts__mig_sv_push(ts__mig_sv *sv, const char *s, size_t n)
{
    char *c;
    if (sv->n == sv->cap) {
        size_t ncap = sv->cap ? sv->cap * 2 : 32;
        char **nv = (char **)ts__realloc(sv->a, sv->v, sv->cap * sizeof(char *), ncap * sizeof(char *));
        if (!nv) return TS_E_NOMEM;
        sv->v = nv;
        sv->cap = ncap;
    }
    c = ts__strndup(sv->a, s, n);
    if (!c) return TS_E_NOMEM;
    sv->v[sv->n++] = c;
    return TS_OK;
}

TS__PRIVATE void ts__mig_sv_free(ts__mig_sv *sv)
{
    size_t i;
    for (i = 0; i < sv->n; i++) ts__free(sv->a, sv->v[i], strlen(sv->v[i]) + 1);
    ts__free(sv->a, sv->v, sv->cap * sizeof(char *));
    sv->v = NULL; sv->n = sv->cap = 0;
}

TS__PRIVATE int ts__mig_strcmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

TS__PRIVATE void ts__mig_sv_sort(ts__mig_sv *sv)
{
    if (sv->n > 1) qsort(sv->v, sv->n, sizeof(char *), ts__mig_strcmp);
}

/* ---- the sessions/ folder ---------------------------------------------------- */

typedef struct ts__mig_scan {
    ts__mig_sv legacy;      /* ids with sessions/{id}.json, sorted */
    ts__mig_sv bad;         /* *.json names that are not valid ids */
    ts__mig_sv backups;     /* backup file names, sorted */
    ts__map legacy_set;     /* id -> 1 */
    ts__map latest;         /* id -> index in backups of the newest one */
} ts__mig_scan;

TS__PRIVATE void ts__mig_scan_free(ts__mig_scan *sc)
{
    ts__mig_sv_free(&sc->legacy);
    ts__mig_sv_free(&sc->bad);
    ts__mig_sv_free(&sc->backups);
    ts__map_free(&sc->legacy_set);
    ts__map_free(&sc->latest);
}

TS__PRIVATE ts_result ts__mig_scan_dir(ts_store *s, ts__mig_scan *sc)
{
    ts__name_list l;
    size_t i;
    ts_result r;
    const ts_allocator *a = &s->env.alloc;
    ts__mig_sv_init(&sc->legacy, a);
    ts__mig_sv_init(&sc->bad, a);
    ts__mig_sv_init(&sc->backups, a);
    ts__map_init(&sc->legacy_set, a);
    ts__map_init(&sc->latest, a);
    r = ts__st_list(s, TS__MIG_LEGACY_DIR, 0, &l);
    if (r == TS_E_NOTFOUND) return TS_OK;
    if (r != TS_OK) return TS__FAIL(&s->env, r, TS__MIG_LEGACY_DIR ": cannot list");
    for (i = 0; i < l.count && r == TS_OK; i++) {
        const char *nm = l.names[i];
        size_t n = l.lens[i], idl = 0;
        uint64_t ts = 0;
        if (ts__str_ends(nm, n, ".json")) {
            if (ts__valid_id(nm, n - 5)) {
                r = ts__mig_sv_push(&sc->legacy, nm, n - 5);
                if (r == TS_OK) r = ts__map_put(&sc->legacy_set, nm, n - 5, 1);
            } else {
                r = ts__mig_sv_push(&sc->bad, nm, n);
            }
        } else if (ts__mig_backup_name(nm, n, &idl, &ts)) {
            r = ts__mig_sv_push(&sc->backups, nm, n);
        }
    }
    ts__name_list_free(&l);
    if (r != TS_OK) return r;
    ts__mig_sv_sort(&sc->legacy);
    ts__mig_sv_sort(&sc->bad);
    ts__mig_sv_sort(&sc->backups);
    for (i = 0; i < sc->backups.n && r == TS_OK; i++) {
        size_t idl = 0;
        uint64_t ts = 0, at, ts2 = 0;
        const char *nm = sc->backups.v[i];
        ts__mig_backup_name(nm, strlen(nm), &idl, &ts);
        if (ts__map_get(&sc->latest, nm, idl, &at)) {
            const char *o = sc->backups.v[at];
            size_t l2 = 0;
            ts__mig_backup_name(o, strlen(o), &l2, &ts2);
            if (ts2 >= ts) continue;
        }
        r = ts__map_put(&sc->latest, nm, idl, (uint64_t)i);
    }
    return r;
}

/* ---- backups ------------------------------------------------------------------
   {"originalFormat":..,"sessionId":..,"originalPath":..,"backupCreatedAt":T,
    "expiresAt":T,"originalSize":N,"originalSha256":"..","session":<N bytes>}
   "session" is last and is the original file verbatim, so the bytes are the
   N before the closing brace. */

typedef struct ts__mig_bkinfo {
    char sha[65];
    uint64_t created, expires, size;
    ts__span raw;           /* the original bytes, inside the backup text */
} ts__mig_bkinfo;

TS__PRIVATE int ts__mig_u64(ts__span v, uint64_t *out)
{
    int64_t x;
    if (!ts__js_int64(v, &x) || x < 0) return 0;
    *out = (uint64_t)x;
    return 1;
}

/* Parses a backup's header and locates the original bytes; verify != 0
   also checks them against originalSha256. TS_E_CORRUPT when malformed. */
TS__PRIVATE ts_result ts__mig_backup_parse(const char *text, size_t n, const char *id,
                                           int verify, ts__mig_bkinfo *bi)
{
    ts__span obj, v;
    char tmp[TS_SESSION_ID_MAX + 1];
    size_t len = 0;
    memset(bi, 0, sizeof *bi);
    if (!n || text[n - 1] != '}' || !ts__js_valid(text, n)) return TS_E_CORRUPT;
    obj = ts__js_trim(text, n);
    if (!ts__js_get(obj, "sessionId", &v) || v.p[0] != '"' ||
        !ts__js_str_decode_to(v, tmp, TS_SESSION_ID_MAX, &len))
        return TS_E_CORRUPT;
    if (id && (len != strlen(id) || memcmp(tmp, id, len) != 0)) return TS_E_CORRUPT;
    if (!ts__js_get(obj, "originalSha256", &v) || v.n != 66 || !ts__valid_hash_hex(v.p + 1, 64))
        return TS_E_CORRUPT;
    memcpy(bi->sha, v.p + 1, 64);
    bi->sha[64] = 0;
    if (!ts__js_get(obj, "originalSize", &v) || !ts__mig_u64(v, &bi->size)) return TS_E_CORRUPT;
    if (!ts__js_get(obj, "expiresAt", &v) || !ts__mig_u64(v, &bi->expires)) return TS_E_CORRUPT;
    if (!ts__js_get(obj, "backupCreatedAt", &v) || !ts__mig_u64(v, &bi->created)) return TS_E_CORRUPT;
    if (bi->size > (uint64_t)(n - 1)) return TS_E_CORRUPT;
    bi->raw.p = text + (n - 1 - (size_t)bi->size);
    bi->raw.n = (size_t)bi->size;
    /* written as "session": followed at once by the original bytes */
    if ((size_t)(bi->raw.p - text) < 10 || memcmp(bi->raw.p - 10, "\"session\":", 10) != 0)
        return TS_E_CORRUPT;
    if (verify) {
        char hex[65];
        ts__mig_sha_hex(bi->raw.p, bi->raw.n, hex);
        if (memcmp(hex, bi->sha, 64) != 0) return TS_E_CORRUPT;
    }
    return TS_OK;
}

TS__PRIVATE ts_result ts__mig_backup_build(ts__buf *out, const char *id, const char *raw, size_t n,
                                           uint64_t now, uint64_t retention)
{
    char hex[65];
    ts_result r;
    out->len = 0;
    ts__mig_sha_hex(raw, n, hex);
    r = ts__buf_printf(out,
                       "{\"originalFormat\":\"" TS_MIGRATE_BACKUP_FORMAT "\",\"sessionId\":\"%s\","
                       "\"originalPath\":\"" TS__MIG_LEGACY_DIR "/%s.json\",\"backupCreatedAt\":%llu,"
                       "\"expiresAt\":%llu,\"originalSize\":%llu,\"originalSha256\":\"%s\",\"session\":",
                       id, id, (unsigned long long)now, (unsigned long long)(now + retention),
                       (unsigned long long)n, hex);
    if (r == TS_OK) r = ts__buf_append(out, raw, n);
    if (r == TS_OK) r = ts__buf_putc(out, '}');
    return r;
}

/* ---- the report ------------------------------------------------------------------- */

TS__PRIVATE void ts__mig_report_init(ts_migrate_report *rep, const ts_allocator *a)
{
    memset(rep, 0, sizeof *rep);
    if (a) rep->alloc_ = *a;
}

TS__PRIVATE ts_result ts__mig_item(ts_migrate_report *rep, const char *id, ts_migrate_outcome oc,
                                   ts_result code, const char *reason, uint64_t records,
                                   uint64_t atts)
{
    ts_migrate_item *it;
    char *idc, *rc;
    if (!rep) return TS_OK;
    if (rep->item_count == rep->items_cap_) {
        size_t ncap = rep->items_cap_ ? rep->items_cap_ * 2 : 32;
        ts_migrate_item *ni = (ts_migrate_item *)ts__realloc(&rep->alloc_, rep->items,
                                                             rep->items_cap_ * sizeof(ts_migrate_item),
                                                             ncap * sizeof(ts_migrate_item));
        if (!ni) return TS_E_NOMEM;
        rep->items = ni;
        rep->items_cap_ = ncap;
    }
    if (!reason) reason = "";
    idc = ts__strndup(&rep->alloc_, id, strlen(id));
    rc = ts__strndup(&rep->alloc_, reason, strlen(reason));
    if (!idc || !rc) {
        if (idc) ts__free(&rep->alloc_, idc, strlen(idc) + 1);
        if (rc) ts__free(&rep->alloc_, rc, strlen(rc) + 1);
        return TS_E_NOMEM;
    }
    ts__mig_sanitize(idc);
    ts__mig_sanitize(rc);
    it = &rep->items[rep->item_count++];
    it->id = idc;
    it->outcome = oc;
    it->code = code;
    it->reason = rc;
    it->records = records;
    it->attachments = atts;
    if (oc == TS_MIGRATE_MIGRATED) rep->migrated++;
    else if (oc == TS_MIGRATE_SKIPPED) rep->skipped++;
    else rep->failed++;
    return TS_OK;
}

TASKSTORE_DEF void ts_migrate_report_free(ts_migrate_report *rep)
{
    size_t i;
    if (!rep) return;
    for (i = 0; i < rep->item_count; i++) {
        ts__free(&rep->alloc_, (void *)(uintptr_t)rep->items[i].id, strlen(rep->items[i].id) + 1);
        ts__free(&rep->alloc_, (void *)(uintptr_t)rep->items[i].reason,
                 strlen(rep->items[i].reason) + 1);
    }
    ts__free(&rep->alloc_, rep->items, rep->items_cap_ * sizeof(ts_migrate_item));
    memset(rep, 0, sizeof *rep);
}

TASKSTORE_DEF ts_migrate_options ts_migrate_options_default(void)
{
    ts_migrate_options o;
    memset(&o, 0, sizeof o);
    o.steps = TS_MIGRATE_STEPS_DEFAULT;
    o.backup_retention_ms = TS_MIGRATE_DEFAULT_RETENTION_MS;
    o.flush_bytes = TS__MIG_DEFAULT_FLUSH;
    o.batch_size = TS_MIGRATE_DEFAULT_BATCH;
    return o;
}

/* ---- the migration context ------------------------------------------------------------ */

typedef struct ts__mig {
    ts_store *s;
    ts_migrate_options opt;
    unsigned steps;
    uint64_t now;
    ts_migrate_report *rep;
    ts__map att;            /* attachment id -> offset+1 into hashes (dry run: 1) */
    ts__buf hashes;         /* 64 hex digits per imported attachment */
    ts__map verified;       /* hashes verified in the CA store during this run */
    ts__map seen;           /* dry run: hashes this run would have stored */
    ts__buf raw, araw, b64, bytes, text, tmp, path, path2, loaded;
    uint64_t queued_bytes;
    char reason[TS__MIG_REASON];
    ts_result fatal;        /* store-level failure: the run stops */
    /* progress */
    const char *step;
    uint64_t done, total, done0;
    int64_t t0;
    int cancelled, background, paused;
    uint64_t bg_now;
} ts__mig;

TS__PRIVATE void ts__mig_init(ts__mig *c, ts_store *s, const ts_migrate_options *opt,
                              ts_migrate_report *rep)
{
    const ts_allocator *a = &s->env.alloc;
    memset(c, 0, sizeof *c);
    c->s = s;
    c->opt = opt ? *opt : ts_migrate_options_default();
    c->steps = c->opt.steps ? c->opt.steps : (unsigned)TS_MIGRATE_STEPS_DEFAULT;
    if (!c->opt.backup_retention_ms) c->opt.backup_retention_ms = TS_MIGRATE_DEFAULT_RETENTION_MS;
    if (!c->opt.flush_bytes) c->opt.flush_bytes = TS__MIG_DEFAULT_FLUSH;
    if (!c->opt.batch_size) c->opt.batch_size = TS_MIGRATE_DEFAULT_BATCH;
    c->now = c->opt.now_ms ? c->opt.now_ms : s->now_ms;
    c->rep = rep;
    ts__map_init(&c->att, a);
    ts__map_init(&c->verified, a);
    ts__map_init(&c->seen, a);
    ts__buf_init(&c->hashes, a);
    ts__buf_init(&c->raw, a);
    ts__buf_init(&c->araw, a);
    ts__buf_init(&c->b64, a);
    ts__buf_init(&c->bytes, a);
    ts__buf_init(&c->text, a);
    ts__buf_init(&c->tmp, a);
    ts__buf_init(&c->path, a);
    ts__buf_init(&c->path2, a);
    ts__buf_init(&c->loaded, a);
    c->step = "chunked";
}

TS__PRIVATE void ts__mig_free(ts__mig *c)
{
    ts__map_free(&c->att);
    ts__map_free(&c->verified);
    ts__map_free(&c->seen);
    ts__buf_free(&c->hashes);
    ts__buf_free(&c->raw);
    ts__buf_free(&c->araw);
    ts__buf_free(&c->b64);
    ts__buf_free(&c->bytes);
    ts__buf_free(&c->text);
    ts__buf_free(&c->tmp);
    ts__buf_free(&c->path);
    ts__buf_free(&c->path2);
    ts__buf_free(&c->loaded);
}

/* Big buffers are kept between sessions, but not without bound. */
TS__PRIVATE void ts__mig_trim(ts__mig *c)
{
    ts__buf *bs[6];
    int i;
    bs[0] = &c->raw; bs[1] = &c->araw; bs[2] = &c->b64; bs[3] = &c->bytes;
    bs[4] = &c->text; bs[5] = &c->loaded;
    for (i = 0; i < 6; i++)
        if (bs[i]->cap > ((size_t)4 << 20)) ts__buf_free(bs[i]);
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
TS__PRIVATE ts_result ts__mig_why(ts__mig *c, ts_result code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->reason, sizeof c->reason, fmt, ap);
    va_end(ap);
    ts__mig_sanitize(c->reason);
    return code;
}

/* The store's last message, for a reason. */
TS__PRIVATE const char *ts__mig_store_msg(ts__mig *c)
{
    return c->s->env.last.message[0] ? c->s->env.last.message : "unknown error";
}

TS__PRIVATE int64_t ts__mig_clock(ts__mig *c)
{
    if (c->background) return (int64_t)c->bg_now;
    if (c->opt.clock_ms_fn) return (int64_t)c->opt.clock_ms_fn(c->opt.clock_user);
    if (c->s->queue && c->s->queue->clock_fn) return (int64_t)(ts__queue_clock(c->s->queue) / 1000u);
    return -1;
}

TS__PRIVATE void ts__mig_fill_progress(ts__mig *c, ts_migrate_progress *p)
{
    int64_t now = ts__mig_clock(c);
    memset(p, 0, sizeof *p);
    p->step = c->step;
    p->reason = "";
    p->done = c->done;
    p->total = c->total;
    if (c->rep) {
        p->migrated = c->rep->migrated;
        p->skipped = c->rep->skipped;
        p->failed = c->rep->failed;
        p->bytes = c->rep->legacy_bytes;
    }
    p->percent = c->total ? 100.0 * (double)c->done / (double)c->total : 100.0;
    if (p->percent > 100.0) p->percent = 100.0;
    p->elapsed_ms = (now >= 0 && c->t0 >= 0 && now >= c->t0) ? now - c->t0 : 0;
    p->eta_ms = -1;
    if (c->done >= c->total) p->eta_ms = 0;
    else if (now >= 0 && c->t0 >= 0 && c->done > c->done0 && p->elapsed_ms > 0)
        p->eta_ms = (int64_t)((double)p->elapsed_ms * (double)(c->total - c->done) /
                              (double)(c->done - c->done0));
    p->paused = c->paused;
}

TS__PRIVATE void ts__mig_progress(ts__mig *c, const char *sid, ts_migrate_outcome oc,
                                  ts_result code, const char *reason, int finished)
{
    ts_migrate_progress p;
    if (!c->opt.progress) return;
    ts__mig_fill_progress(c, &p);
    p.session_id = sid;
    p.outcome = oc;
    p.code = code;
    p.reason = reason ? reason : "";
    p.finished = finished;
    if (c->opt.progress(c->opt.progress_user, &p)) c->cancelled = 1;
}

/* Everything queued made durable. A failed item gets its retries once more
   (a transient error); if the disk still refuses, the run cannot go on. */
TS__PRIVATE ts_result ts__mig_flush(ts__mig *c)
{
    ts_result r = ts_store_flush(c->s);
    if (r != TS_OK && c->s->queue && ts_queue_failed_count(c->s->queue)) {
        ts_queue_item_info info;
        while (ts_queue_failed_get(c->s->queue, 0, &info) == TS_OK)
            if (ts_queue_failed_retry(c->s->queue, info.id) != TS_OK) break;
        r = ts_store_flush(c->s);
    }
    c->queued_bytes = 0;
    if (r != TS_OK) c->fatal = r;
    return r;
}

/* ---- legacy shape checks --------------------------------------------------------- */

TS__PRIVATE ts_result ts__mig_check_shape(ts__mig *c, const char *id, const ts__json *root,
                                          uint64_t *records)
{
    static const char *const strs[] = { "name", "description", "status", "category", "subCategory" };
    static const char *const nums[] = { "startTime", "endTime" };
    static const char *const lists[] = { "tags", "topicIds" };
    const ts__json *v, *x;
    size_t i, n = 0;
    uint32_t k;
    const char *idv;
    *records = 0;
    if (!ts__json_is_object(root))
        return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: the top level is %s, expected an object", id,
                           ts__mig_type_name(root));
    idv = ts__json_get_str(root, "id", &n);
    if (!idv)
        return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: \"id\" is %s, expected a string", id,
                           ts__mig_type_name(ts__json_get(root, "id")));
    if (n != strlen(id) || memcmp(idv, id, n) != 0)
        return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: \"id\" \"%.*s\" does not match the file name",
                           id, (int)(n > 64 ? 64 : n), idv);
    for (i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        v = ts__json_get(root, strs[i]);
        if (v && !ts__json_is_string(v) && !ts__json_is_null(v))
            return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: \"%s\" is %s, expected a string",
                               id, strs[i], ts__mig_type_name(v));
    }
    for (i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        v = ts__json_get(root, nums[i]);
        if (v && !ts__json_is_number(v) && !ts__json_is_null(v))
            return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: \"%s\" is %s, expected a number",
                               id, nums[i], ts__mig_type_name(v));
    }
    for (i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        size_t j = 0;
        v = ts__json_get(root, lists[i]);
        if (!v || ts__json_is_null(v)) continue;
        if (!ts__json_is_array(v))
            return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: \"%s\" is %s, expected an array",
                               id, lists[i], ts__mig_type_name(v));
        for (x = ts__json_first(v); x; x = x->next, j++)
            if (!ts__json_is_string(x))
                return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: %s[%llu] is %s, expected a string",
                                   id, lists[i], (unsigned long long)j, ts__mig_type_name(x));
    }
    if (ts__json_get(root, "storageVersion") || ts__json_get(root, "chunked"))
        return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: \"%s\" is reserved by the chunked layout",
                           id, ts__json_get(root, "chunked") ? "chunked" : "storageVersion");
    for (k = 0; k < c->s->nstreams; k++) {
        const char *sn = c->s->streams[k].name;
        size_t j = 0;
        v = ts__json_get(root, sn);
        if (!v || ts__json_is_null(v)) continue;
        if (!ts__json_is_array(v))
            return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: \"%s\" is %s, expected an array",
                               id, sn, ts__mig_type_name(v));
        for (x = ts__json_first(v); x; x = x->next, j++) {
            const ts__json *a;
            if (!ts__json_is_object(x))
                return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: %s[%llu] is %s, expected an object",
                                   id, sn, (unsigned long long)j, ts__mig_type_name(x));
            (*records)++;
            if (strcmp(sn, "screenshots") != 0) continue;
            a = ts__json_get(x, "attachmentId");
            if (a && !ts__json_is_null(a)) {
                if (!ts__json_is_string(a))
                    return ts__mig_why(c, TS_E_CORRUPT,
                                       "sessions/%s.json: screenshots[%llu].attachmentId is %s, expected a string",
                                       id, (unsigned long long)j, ts__mig_type_name(a));
                if (!ts__valid_id(a->u.s.ptr, a->u.s.len))
                    return ts__mig_why(c, TS_E_CORRUPT,
                                       "sessions/%s.json: screenshots[%llu].attachmentId is not a valid "
                                       "attachment id (1-128 bytes of [A-Za-z0-9._-])",
                                       id, (unsigned long long)j);
            }
            a = ts__json_get(x, "attachmentHash");
            if (a && !(ts__json_is_string(a) && ts__valid_hash_hex(a->u.s.ptr, a->u.s.len)))
                return ts__mig_why(c, TS_E_CORRUPT,
                                   "sessions/%s.json: screenshots[%llu].attachmentHash is not 64 lowercase hex digits",
                                   id, (unsigned long long)j);
            if (a && !ts__json_is_string(ts__json_get(x, "attachmentId"))) {
                /* a hash with no attachment to take the bytes from must
                   already name an object, or the session would point nowhere */
                char hex[65];
                int ex = 0;
                memcpy(hex, a->u.s.ptr, 64);
                hex[64] = 0;
                if (ts_cas_exists(c->s->cas, hex, &ex) != TS_OK || !ex)
                    return ts__mig_why(c, TS_E_NOTFOUND,
                                       "sessions/%s.json: screenshots[%llu].attachmentHash names no attachment "
                                       "in the CA store (and the record has no attachmentId)",
                                       id, (unsigned long long)j);
            }
        }
    }
    return TS_OK;
}

/* ---- base64, the common case fast --------------------------------------------
   Legacy attachments are megabytes of base64; the CA store's strict decoder
   (ts__base64_check + ts__base64_decode) takes two passes a byte at a time.
   This single table-driven pass accepts exactly the same language in the
   common case (no whitespace, no data: prefix) and gives up (returns 0) on
   anything else, so the strict decoder decides and words the error. */

TS__PRIVATE int ts__mig_b64_fast(const char *in_, size_t n, ts__buf *out, size_t *out_len)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = (const unsigned char *)in_;
    signed char tab[256];
    size_t i, o = 0, pad = 0, full, len;
    unsigned bad = 0;
    unsigned char *d;
    *out_len = 0;
    if (n % 4) return 0;   /* also: a data: prefix has ':' (not in the table) */
    memset(tab, -1, sizeof tab);
    for (i = 0; i < 64; i++) tab[(unsigned char)al[i]] = (signed char)i;
    if (n && in[n - 1] == '=') pad = (n > 1 && in[n - 2] == '=') ? 2 : 1;
    len = n / 4 * 3 - pad;
    out->len = 0;
    if (ts__buf_reserve(out, len + 3) != TS_OK) return 0;
    d = out->data;
    full = pad ? n - 4 : n;
    for (i = 0; i < full; i += 4) {
        int a = tab[in[i]], b = tab[in[i + 1]], c = tab[in[i + 2]], e = tab[in[i + 3]];
        uint32_t v;
        bad |= (unsigned)(a | b | c | e) & 0x80u;
        v = (uint32_t)(a & 63) << 18 | (uint32_t)(b & 63) << 12 | (uint32_t)(c & 63) << 6 | (uint32_t)(e & 63);
        d[o] = (unsigned char)(v >> 16);
        d[o + 1] = (unsigned char)(v >> 8);
        d[o + 2] = (unsigned char)v;
        o += 3;
    }
    if (bad) return 0;
    if (pad) {
        int a = tab[in[n - 4]], b = tab[in[n - 3]], c = pad == 1 ? tab[in[n - 2]] : 0;
        if (a < 0 || b < 0 || c < 0) return 0;
        if (pad == 2 && (b & 15)) return 0;       /* non-canonical trailing bits */
        if (pad == 1 && (c & 3)) return 0;
        d[o++] = (unsigned char)(a << 2 | b >> 4);
        if (pad == 1) d[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
    }
    out->len = o;
    *out_len = o;
    return 1;
}

/* ---- attachments ------------------------------------------------------------------------ */

/* The hash an attachment id resolved to in this run, or NULL. */
TS__PRIVATE const char *ts__mig_att_hash(ts__mig *c, const char *aid, size_t n)
{
    uint64_t v;
    if (!ts__map_get(&c->att, aid, n, &v) || v == 0) return NULL;
    return (const char *)c->hashes.data + (v - 1);
}

/* Reads, checks and (unless dry run) stores legacy attachment aid, named by
   screenshots[idx] of session sid. */
TS__PRIVATE ts_result ts__mig_import(ts__mig *c, const char *sid, uint64_t idx, const char *aid,
                                     size_t aid_len)
{
    ts_store *s = c->s;
    ts__span obj, v;
    ts__b64_info bi;
    char mime[128], hex[65];
    const char *mp = NULL;
    const char *path;
    int existed = 0, fast;
    ts_result r;
    c->path2.len = 0;
    if ((r = ts__buf_printf(&c->path2, TS__MIG_ATT_DIR "/%.*s.json", (int)aid_len, aid)) != TS_OK) return r;
    path = (const char *)c->path2.data;
    r = ts__mig_read(s, path, &c->araw);
    if (r == TS_E_NOTFOUND)
        return ts__mig_why(c, TS_E_NOTFOUND, "sessions/%s.json: screenshots[%llu] names attachment %.*s, "
                           "but %s does not exist", sid, (unsigned long long)idx, (int)aid_len, aid, path);
    if (r == TS_E_TOOBIG)
        return ts__mig_why(c, r, "%s: larger than the file limit", path);
    if (r != TS_OK) return ts__mig_why(c, r, "%s: cannot read: %s", path, ts_result_str(r));
    if (c->rep) c->rep->legacy_bytes += c->araw.len;
    if (!ts__js_valid((const char *)c->araw.data, c->araw.len))
        return ts__mig_why(c, TS_E_CORRUPT, "%s: not valid JSON", path);
    obj = ts__js_trim((const char *)c->araw.data, c->araw.len);
    if (obj.p[0] != '{') return ts__mig_why(c, TS_E_CORRUPT, "%s: not a JSON object", path);
    if (ts__js_get(obj, "id", &v)) {
        char tmp[TS_SESSION_ID_MAX + 1];
        size_t n = 0;
        if (v.p[0] != '"' || !ts__js_str_decode_to(v, tmp, TS_SESSION_ID_MAX, &n) || n != aid_len ||
            memcmp(tmp, aid, n) != 0)
            return ts__mig_why(c, TS_E_CORRUPT, "%s: \"id\" does not match the file name", path);
    }
    if (!ts__js_get(obj, "base64", &v) || v.p[0] != '"')
        return ts__mig_why(c, TS_E_CORRUPT, "%s: \"base64\" is missing or not a string", path);
    c->b64.len = 0;
    if ((r = ts__js_str_decode(v, &c->b64)) != TS_OK)
        return ts__mig_why(c, r == TS_E_NOMEM ? r : TS_E_CORRUPT, "%s: cannot decode \"base64\"", path);
    if (ts__js_get(obj, "mimeType", &v) && !(v.n == 4 && memcmp(v.p, "null", 4) == 0)) {
        size_t n = 0;
        if (v.p[0] != '"' || !ts__js_str_decode_to(v, mime, sizeof mime - 1, &n))
            return ts__mig_why(c, TS_E_CORRUPT, "%s: \"mimeType\" is not a string of at most 127 bytes", path);
        mime[n] = 0;
        if (n && !ts__cas_valid_mime(mime, n))
            return ts__mig_why(c, TS_E_CORRUPT, "%s: \"mimeType\" is not a valid media type", path);
        if (n) mp = mime;
    }
    memset(&bi, 0, sizeof bi);
    fast = ts__mig_b64_fast((const char *)c->b64.data, c->b64.len, &c->bytes, &bi.out_len);
    if (!fast && !ts__base64_check((const char *)c->b64.data, c->b64.len, &bi))
        return ts__mig_why(c, TS_E_CORRUPT, "%s: invalid base64 at byte %llu: %s", path,
                           (unsigned long long)bi.bad_at, bi.why);
    if (ts__js_get(obj, "size", &v) && !(v.n == 4 && memcmp(v.p, "null", 4) == 0)) {
        uint64_t sz = 0;
        if (!ts__mig_u64(v, &sz))
            return ts__mig_why(c, TS_E_CORRUPT, "%s: \"size\" is not a non-negative integer", path);
        if (sz != (uint64_t)bi.out_len)
            return ts__mig_why(c, TS_E_CORRUPT, "%s: \"size\" is %llu but the base64 decodes to %llu bytes",
                               path, (unsigned long long)sz, (unsigned long long)bi.out_len);
    }
    if ((uint64_t)bi.out_len > s->cas->max_object)
        return ts__mig_why(c, TS_E_TOOBIG, "%s: %llu bytes, over the attachment limit", path,
                           (unsigned long long)bi.out_len);
    if (!mp && bi.mime_len && bi.mime_len < sizeof mime) {
        memcpy(mime, bi.mime, bi.mime_len);
        mime[bi.mime_len] = 0;
        if (ts__cas_valid_mime(mime, bi.mime_len)) mp = mime;
    }
    if (!fast) {
        c->bytes.len = 0;
        if ((r = ts__buf_reserve(&c->bytes, bi.out_len)) != TS_OK)
            return ts__mig_why(c, r, "%s: out of memory decoding %llu bytes", path, (unsigned long long)bi.out_len);
        ts__base64_decode((const char *)c->b64.data, c->b64.len, &bi, c->bytes.data);
    }
    ts__cas_hash_hex(c->bytes.data, bi.out_len, hex);
    {
        /* only a figure (imported vs deduplicated): a stat, not a metadata read */
        char mpath[TS__CAS_PATH_CAP];
        ts_io_stat st;
        ts__cas_path(s->cas, mpath, hex, TS__CAS_META_FILE);
        existed = s->cas->writer.stat_fn(s->cas->writer.user, mpath, &st) == TS_OK;
    }
    if (c->opt.dry_run) {
        /* the hash is known (a conflicting attachmentHash shows), nothing is stored */
        size_t off = c->hashes.len;
        if (!existed && ts__map_get(&c->seen, hex, 64, NULL)) existed = 1;
        if ((r = ts__map_put(&c->seen, hex, 64, 1)) != TS_OK) return r;
        if (c->rep) {
            if (existed) c->rep->attachments_deduplicated++;
            else c->rep->attachments_imported++;
            c->rep->attachment_bytes += bi.out_len;
        }
        if ((r = ts__buf_append(&c->hashes, hex, 64)) != TS_OK) return r;
        return ts__map_put(&c->att, aid, aid_len, (uint64_t)off + 1);
    }
    r = ts_cas_save(s->cas, c->bytes.data, bi.out_len, mp, NULL, c->now, hex);
    if (r != TS_OK) {
        ts_error_info ei;
        ts_cas_last_error(s->cas, &ei);
        return ts__mig_why(c, r, "%s: cannot store: %s", path, ei.message);
    }
    if (c->rep) {
        if (existed) c->rep->attachments_deduplicated++;
        else c->rep->attachments_imported++;
        c->rep->attachment_bytes += bi.out_len;
    }
    {
        size_t off = c->hashes.len;
        if ((r = ts__buf_append(&c->hashes, hex, 64)) != TS_OK) return r;
        if ((r = ts__map_put(&c->att, aid, aid_len, (uint64_t)off + 1)) != TS_OK) return r;
    }
    c->queued_bytes += bi.out_len;
    if (c->queued_bytes >= c->opt.flush_bytes && ts__mig_flush(c) != TS_OK)
        return ts__mig_why(c, c->fatal, "flush failed: %s", ts__mig_store_msg(c));
    return TS_OK;
}

/* Resolves every attachment the screenshot records of arr name. */
TS__PRIVATE ts_result ts__mig_resolve(ts__mig *c, const char *sid, const ts__json *arr,
                                      uint64_t *count, int *imported)
{
    const ts__json *x;
    uint64_t j = 0;
    ts_result r;
    *count = 0;
    for (x = ts__json_first(arr); x; x = x->next, j++) {
        size_t n = 0;
        const char *aid = ts__json_get_str(x, "attachmentId", &n);
        if (!aid) continue;
        (*count)++;
        if (ts__map_get(&c->att, aid, n, NULL)) continue;
        if ((r = ts__mig_import(c, sid, j, aid, n)) != TS_OK) return r;
        *imported = 1;
    }
    return TS_OK;
}

/* Sets attachmentHash on the DOM records (the expected result). */
TS__PRIVATE ts_result ts__mig_dom_hashes(ts__mig *c, ts__json_doc *doc, const char *sid,
                                         ts__json *arr)
{
    ts__json *x;
    uint64_t j = 0;
    for (x = ts__json_first(arr); x; x = x->next, j++) {
        size_t n = 0, hn = 0;
        const char *aid = ts__json_get_str(x, "attachmentId", &n), *hex, *old;
        if (!aid) continue;
        hex = ts__mig_att_hash(c, aid, n);
        if (!hex) return ts__mig_why(c, TS_E_STATE, "attachment %.*s: not resolved", (int)n, aid);
        old = ts__json_get_str(x, "attachmentHash", &hn);
        if (old && (hn != 64 || memcmp(old, hex, 64) != 0))
            return ts__mig_why(c, TS_E_CORRUPT, "sessions/%s.json: screenshots[%llu].attachmentHash does "
                               "not match the content of attachment %.*s (%.64s)",
                               sid, (unsigned long long)j, (int)n, aid, hex);
        if (ts__json_object_set(doc, x, "attachmentHash", 14, ts__json_new_string(doc, hex, 64)) != TS_OK)
            return ts__mig_why(c, TS_E_NOMEM, "out of memory");
    }
    return TS_OK;
}

/* Writes the records of array span arr to out, each screenshot record that
   names a resolved attachment with its attachmentHash set. */
TS__PRIVATE ts_result ts__mig_rewrite_array(ts__mig *c, ts__span arr, ts__buf *out)
{
    ts__js_iter it;
    ts__span rec, v;
    int first = 1;
    ts_result r;
    if (!ts__js_iter_begin(&it, arr, '[')) return TS_E_INVALID;
    if ((r = ts__buf_putc(out, '[')) != TS_OK) return r;
    while ((r = ts__js_iter_next(&it, NULL, &rec)) == TS_OK) {
        char aid[TS_SESSION_ID_MAX + 1], hex[65];
        size_t n = 0;
        const char *h = NULL;
        if (!first && (r = ts__buf_putc(out, ',')) != TS_OK) return r;
        first = 0;
        if (rec.p[0] == '{' && ts__js_get(rec, "attachmentId", &v) && v.p[0] == '"' &&
            ts__js_str_decode_to(v, aid, TS_SESSION_ID_MAX, &n))
            h = ts__mig_att_hash(c, aid, n);
        if (!h) {
            if ((r = ts__buf_append(out, rec.p, rec.n)) != TS_OK) return r;
            continue;
        }
        memcpy(hex, h, 64);
        hex[64] = 0;
        if ((r = ts__record_set_str(&c->tmp, rec, "attachmentHash", hex)) != TS_OK) return r;
        if ((r = ts__buf_append(out, c->tmp.data, c->tmp.len)) != TS_OK) return r;
    }
    if (r != TS_DONE) return TS_E_INVALID;
    return ts__buf_putc(out, ']');
}

/* The session text with screenshot records rewritten (every other byte kept). */
TS__PRIVATE ts_result ts__mig_rewrite_session(ts__mig *c, ts__span obj, ts__buf *out)
{
    ts__js_iter it;
    ts__span k, v;
    int first = 1;
    ts_result r;
    out->len = 0;
    if (!ts__js_iter_begin(&it, obj, '{')) return TS_E_INVALID;
    if ((r = ts__buf_putc(out, '{')) != TS_OK) return r;
    while ((r = ts__js_iter_next(&it, &k, &v)) == TS_OK) {
        if (!first && (r = ts__buf_putc(out, ',')) != TS_OK) return r;
        first = 0;
        if ((r = ts__buf_append(out, k.p, k.n)) != TS_OK) return r;
        if ((r = ts__buf_putc(out, ':')) != TS_OK) return r;
        if (v.p[0] == '[' && ts__js_key_is(k, "screenshots")) r = ts__mig_rewrite_array(c, v, out);
        else r = ts__buf_append(out, v.p, v.n);
        if (r != TS_OK) return r;
    }
    if (r != TS_DONE) return TS_E_INVALID;
    return ts__buf_putc(out, '}');
}

/* Checks in the CA store every hash the records of arr name (once a run). */
TS__PRIVATE ts_result ts__mig_verify_hashes(ts__mig *c, const ts__json *arr)
{
    const ts__json *x;
    uint64_t j = 0;
    for (x = ts__json_first(arr); x; x = x->next, j++) {
        size_t n = 0;
        const char *h = ts__json_get_str(x, "attachmentHash", &n);
        char hex[65];
        ts_result r;
        if (!h || n != 64 || !ts__valid_hash_hex(h, 64)) continue;
        if (ts__map_get(&c->verified, h, 64, NULL)) continue;
        memcpy(hex, h, 64);
        hex[64] = 0;
        r = ts_cas_verify(c->s->cas, hex);
        if (r != TS_OK) {
            ts_error_info ei;
            ts_cas_last_error(c->s->cas, &ei);
            /* only a mismatch is corruption; a read that failed keeps its code */
            return ts__mig_why(c, r == TS_E_IO || r == TS_E_NOSPACE || r == TS_E_NOMEM ? r : TS_E_CORRUPT,
                               "verification failed: screenshots[%llu].attachmentHash %s: %s",
                               (unsigned long long)j, hex, ei.message);
        }
        if ((r = ts__map_put(&c->verified, hex, 64, 1)) != TS_OK) return r;
    }
    return TS_OK;
}

/* Loads session id from disk (cache dropped) into doc; *root its value. */
TS__PRIVATE ts_result ts__mig_load_dom(ts__mig *c, const char *id, ts__json_doc *doc, ts__json **root)
{
    ts_blob b;
    ts_result r;
    ts__env env;
    *root = NULL;
    if (c->s->lru) ts_lru_invalidate_session(c->s->lru, id, strlen(id), NULL);
    r = ts_session_load(c->s, id, &b);
    if (r != TS_OK) return r;
    ts__env_init(&env, &c->s->env.alloc, NULL);
    r = ts__json_parse(doc, (const char *)b.data, b.len, root, &env, "chunked session");
    if (r != TS_OK) ts__mig_why(c, r, "%s", env.last.message);
    ts_blob_free(&b);
    return r;
}

/* Adds (add=1) or releases the references the screenshot records of array
   span arr imply, exactly as the store names them (session id, record id or
   "screenshots.N"). Added together with the imports, while their metadata
   writes are still queued, they coalesce into one write per object; the
   store's own reference update at save then finds them there (no write). */
TS__PRIVATE void ts__mig_refs_arr(ts__mig *c, const char *id, ts__span arr, int add)
{
    ts__span rec;
    ts__js_iter it;
    uint64_t j = 0;
    if (!ts__js_iter_begin(&it, arr, '[')) return;
    while (ts__js_iter_next(&it, NULL, &rec) == TS_OK) {
        char key[64 + TS_SESSION_ID_MAX + 8];
        if (rec.p[0] == '{' && ts__record_ref(rec, "screenshots", j, key, sizeof key))
            ts__cas_ref(c->s, key, id, add);
        j++;
    }
}

TS__PRIVATE void ts__mig_refs(ts__mig *c, const char *id, ts__span obj, int add)
{
    ts__span arr;
    if (ts__js_get(obj, "screenshots", &arr)) ts__mig_refs_arr(c, id, arr, add);
}

/* Per-session outcome details. */
typedef struct ts__mig_out {
    uint64_t records, attachments;
} ts__mig_out;

/* Finds a backup of id whose bytes are raw (same SHA-256) and that has not
   expired: a re-run after a crash reuses it rather than writing another. */
TS__PRIVATE int ts__mig_backup_reusable(ts__mig *c, const ts__mig_scan *sc, const char *id,
                                        const char *sha)
{
    uint64_t at;
    ts__mig_bkinfo bi;
    if (!sc || !ts__map_get(&sc->latest, id, strlen(id), &at)) return 0;
    c->path.len = 0;
    if (ts__buf_printf(&c->path, TS__MIG_LEGACY_DIR "/%s", sc->backups.v[at]) != TS_OK) return 0;
    if (ts__mig_read(c->s, (const char *)c->path.data, &c->tmp) != TS_OK) return 0;
    if (ts__mig_backup_parse((const char *)c->tmp.data, c->tmp.len, id, 1, &bi) != TS_OK) return 0;
    return memcmp(bi.sha, sha, 64) == 0 && bi.expires > c->now;
}

TS__PRIVATE ts_result ts__mig_backup(ts__mig *c, const ts__mig_scan *sc, const char *id,
                                     const char *raw, size_t n)
{
    ts_store *s = c->s;
    char sha[65];
    uint64_t t = c->now;
    int tries;
    ts_result r;
    ts__mig_sha_hex(raw, n, sha);
    if (ts__mig_backup_reusable(c, sc, id, sha)) {
        if (c->rep) c->rep->backups_reused++;
        return TS_OK;
    }
    for (tries = 0; tries < 1000; tries++, t++) {
        c->path.len = 0;
        if ((r = ts__buf_printf(&c->path, TS__MIG_LEGACY_DIR "/%s" TS__MIG_BACKUP_TAG "%llu", id,
                                (unsigned long long)t)) != TS_OK)
            return r;
        if (!ts__mig_exists(s, (const char *)c->path.data)) break;
    }
    if (tries == 1000) return ts__mig_why(c, TS_E_EXISTS, "sessions/%s: no free backup name", id);
    if ((r = ts__mig_backup_build(&c->tmp, id, raw, n, t, c->opt.backup_retention_ms)) != TS_OK)
        return ts__mig_why(c, r, "out of memory");
    r = ts__mig_write(s, (const char *)c->path.data, c->tmp.data, c->tmp.len);
    if (r != TS_OK) {
        c->fatal = r;
        return ts__mig_why(c, r, "%s: cannot write the backup: %s", (const char *)c->path.data,
                           ts_result_str(r));
    }
    if (c->rep) c->rep->backups_written++;
    return TS_OK;
}

/* Undoes a chunked copy that did not verify. */
TS__PRIVATE void ts__mig_discard(ts__mig *c, const char *id)
{
    if (ts_session_delete(c->s, id) == TS_OK) ts__mig_flush(c);
}

/* One legacy session, the whole sequence. TS_OK migrated (dry run: would
   be), TS_DONE nothing to do, else failed (c->reason). */
TS__PRIVATE ts_result ts__mig_legacy_one(ts__mig *c, const ts__mig_scan *sc, const char *id,
                                         ts__mig_out *o)
{
    ts_store *s = c->s;
    ts__json_doc doc, ldoc;
    ts__json *root = NULL, *shots, *lroot = NULL;
    ts__env env;
    ts__span obj;
    char lpath[TS_SESSION_ID_MAX + 32];
    int ca = (c->steps & TS_MIGRATE_STEP_CA) != 0, refs = 0, imported = 0;
    ts_result r;
    memset(o, 0, sizeof *o);
    c->reason[0] = 0;
    snprintf(lpath, sizeof lpath, TS__MIG_LEGACY_DIR "/%s.json", id);
    ts__json_doc_init(&doc, &s->env.alloc);
    ts__json_doc_init(&ldoc, &s->env.alloc);
    r = ts__mig_read(s, lpath, &c->raw);
    if (r == TS_E_NOTFOUND) { r = TS_DONE; goto done; }
    if (r != TS_OK) {
        r = ts__mig_why(c, r, "%s: cannot read: %s", lpath, ts_result_str(r));
        goto done;
    }
    if (c->rep) c->rep->legacy_bytes += c->raw.len;
    ts__env_init(&env, &s->env.alloc, NULL);
    r = ts__json_parse(&doc, (const char *)c->raw.data, c->raw.len, &root, &env, lpath);
    if (r != TS_OK) {
        ts__mig_why(c, r == TS_E_NOMEM ? r : (r == TS_E_TOOBIG ? r : TS_E_CORRUPT), "%s", env.last.message);
        r = r == TS_E_NOMEM || r == TS_E_TOOBIG ? r : TS_E_CORRUPT;
        goto done;
    }
    if ((r = ts__mig_check_shape(c, id, root, &o->records)) != TS_OK) goto done;
    shots = ts__json_get(root, "screenshots");
    if (!ts__json_is_array(shots)) shots = NULL;
    if (ca && shots && (r = ts__mig_resolve(c, id, shots, &o->attachments, &imported)) != TS_OK) goto done;
    if (ca && shots && (r = ts__mig_dom_hashes(c, &doc, id, shots)) != TS_OK) goto done;
    if (c->opt.dry_run) { r = TS_OK; goto done; }

    /* 1. backup, durable */
    if (!c->opt.no_backup &&
        (r = ts__mig_backup(c, sc, id, (const char *)c->raw.data, c->raw.len)) != TS_OK)
        goto done;
    /* 2. the attachments and this session's references to them, durable
          before anything names them */
    obj = ts__js_trim((const char *)c->raw.data, c->raw.len);
    if (ca && shots && o->attachments) {
        if ((r = ts__mig_rewrite_session(c, obj, &c->text)) != TS_OK) {
            r = ts__mig_why(c, r, "%s: cannot rewrite the screenshot records", lpath);
            goto done;
        }
        ts__mig_refs(c, id, ts__js_trim((const char *)c->text.data, c->text.len), 1);
        refs = 1;
    } else {
        c->text.len = 0;
        if ((r = ts__buf_append(&c->text, obj.p, obj.n)) != TS_OK) goto done;
    }
    if ((imported || refs) && ts__mig_flush(c) != TS_OK) {
        r = ts__mig_why(c, c->fatal, "flush failed: %s", ts__mig_store_msg(c));
        goto done;
    }
    /* 3. the chunked session (a partial one a crash left is replaced) */
    if ((r = ts_session_save(s, (const char *)c->text.data, c->text.len, NULL)) != TS_OK) {
        r = ts__mig_why(c, r, "%s: cannot save the chunked session: %s", lpath, ts__mig_store_msg(c));
        if (refs) ts__mig_refs(c, id, ts__js_trim((const char *)c->text.data, c->text.len), 0);
        goto done;
    }
    if (ts__mig_flush(c) != TS_OK) {
        r = ts__mig_why(c, c->fatal, "flush failed: %s", ts__mig_store_msg(c));
        goto done;
    }
    /* 4. verification, from disk */
    r = ts__mig_load_dom(c, id, &ldoc, &lroot);
    if (r != TS_OK) {
        if (!c->reason[0]) ts__mig_why(c, r, "verification failed: cannot read the chunked session back: %s",
                                       ts__mig_store_msg(c));
        /* a read that failed proves nothing about the data: keep its code */
        if (r != TS_E_IO && r != TS_E_NOSPACE && r != TS_E_NOMEM) r = TS_E_CORRUPT;
        ts__mig_discard(c, id);
        goto done;
    }
    c->tmp.len = 0;
    if (ts__json_diff(root, lroot, &c->tmp)) {
        r = ts__mig_why(c, TS_E_CORRUPT, "verification failed: %s differs between %s and the chunked session",
                        c->tmp.len ? (const char *)c->tmp.data : "the session", lpath);
        ts__mig_discard(c, id);
        goto done;
    }
    if (ca && (r = ts__mig_verify_hashes(c, ts__json_get(lroot, "screenshots"))) != TS_OK) {
        ts__mig_discard(c, id);
        goto done;
    }
    /* 5. commit: the legacy file goes */
    r = ts__mig_unlink(s, lpath, TS__MIG_LEGACY_DIR);
    if (r != TS_OK) {
        c->fatal = r;
        r = ts__mig_why(c, r, "%s: migrated and verified, but cannot be removed: %s", lpath, ts_result_str(r));
        goto done;
    }
    r = TS_OK;
done:
    ts__json_doc_free(&doc);
    ts__json_doc_free(&ldoc);
    ts__mig_trim(c);
    return r;
}

/* The ca step alone, on a session already chunked: screenshot records that
   name an attachmentId without attachmentHash get their content stored and
   the hash. TS_DONE when nothing needed it. */
TS__PRIVATE ts_result ts__mig_ca_one(ts__mig *c, const char *id, ts__mig_out *o)
{
    ts_store *s = c->s;
    ts__json_doc doc, ldoc;
    ts__json *root = NULL, *shots, *x, *lroot = NULL;
    ts_blob b;
    ts__span obj, arr;
    uint64_t need = 0, j;
    int imported = 0;
    ts_result r;
    memset(o, 0, sizeof *o);
    memset(&b, 0, sizeof b);
    c->reason[0] = 0;
    ts__json_doc_init(&doc, &s->env.alloc);
    ts__json_doc_init(&ldoc, &s->env.alloc);
    if (s->lru) ts_lru_invalidate_session(s->lru, id, strlen(id), NULL);
    r = ts_session_load(s, id, &b);
    if (r != TS_OK) {
        r = ts__mig_why(c, r, "sessions-chunked/%s: cannot load: %s", id, ts__mig_store_msg(c));
        goto done;
    }
    {
        ts__env env;
        ts__env_init(&env, &s->env.alloc, NULL);
        r = ts__json_parse(&doc, (const char *)b.data, b.len, &root, &env, "chunked session");
        if (r != TS_OK) { ts__mig_why(c, r, "%s", env.last.message); goto done; }
    }
    shots = ts__json_get(root, "screenshots");
    for (x = ts__json_first(shots), j = 0; x; x = x->next, j++) {
        const ts__json *a = ts__json_get(x, "attachmentId");
        o->records++;
        if (!ts__json_is_string(a) || ts__json_get(x, "attachmentHash")) continue;
        if (!ts__valid_id(a->u.s.ptr, a->u.s.len)) {
            r = ts__mig_why(c, TS_E_CORRUPT, "sessions-chunked/%s: screenshots[%llu].attachmentId is not "
                            "a valid attachment id", id, (unsigned long long)j);
            goto done;
        }
        need++;
    }
    if (!need) { r = TS_DONE; goto done; }
    /* only the records lacking a hash are resolved */
    for (x = ts__json_first(shots), j = 0; x; x = x->next, j++) {
        size_t n = 0;
        const char *aid = ts__json_get_str(x, "attachmentId", &n);
        if (!aid || ts__json_get(x, "attachmentHash")) continue;
        o->attachments++;
        if (ts__map_get(&c->att, aid, n, NULL)) continue;
        if ((r = ts__mig_import(c, id, j, aid, n)) != TS_OK) goto done;
        imported = 1;
    }
    if (c->opt.dry_run) { r = TS_OK; goto done; }
    for (x = ts__json_first(shots); x; x = x->next) {
        size_t n = 0;
        const char *aid = ts__json_get_str(x, "attachmentId", &n), *hex;
        if (!aid || ts__json_get(x, "attachmentHash")) continue;
        hex = ts__mig_att_hash(c, aid, n);
        if (!hex || ts__json_object_set(&doc, x, "attachmentHash", 14, ts__json_new_string(&doc, hex, 64)) != TS_OK) {
            r = ts__mig_why(c, TS_E_NOMEM, "out of memory");
            goto done;
        }
    }
    obj = ts__js_trim((const char *)b.data, b.len);
    if (!ts__js_get(obj, "screenshots", &arr)) { r = ts__mig_why(c, TS_E_STATE, "no screenshots"); goto done; }
    c->text.len = 0;
    if ((r = ts__mig_rewrite_array(c, arr, &c->text)) != TS_OK) goto done;
    ts__mig_refs_arr(c, id, ts__js_trim((const char *)c->text.data, c->text.len), 1);
    if (ts__mig_flush(c) != TS_OK) {
        r = ts__mig_why(c, c->fatal, "flush failed: %s", ts__mig_store_msg(c));
        goto done;
    }
    (void)imported;
    r = ts_session_replace_stream(s, id, "screenshots", (const char *)c->text.data, c->text.len);
    if (r != TS_OK) {
        r = ts__mig_why(c, r, "sessions-chunked/%s: cannot replace the screenshots: %s", id, ts__mig_store_msg(c));
        ts__mig_refs_arr(c, id, ts__js_trim((const char *)c->text.data, c->text.len), 0);
        goto done;
    }
    if (ts__mig_flush(c) != TS_OK) {
        r = ts__mig_why(c, c->fatal, "flush failed: %s", ts__mig_store_msg(c));
        goto done;
    }
    r = ts__mig_load_dom(c, id, &ldoc, &lroot);
    c->tmp.len = 0;
    if (r == TS_OK && ts__json_diff(root, lroot, &c->tmp)) {
        r = ts__mig_why(c, TS_E_CORRUPT, "verification failed: %s differs after storing the attachments",
                        c->tmp.len ? (const char *)c->tmp.data : "the session");
    } else if (r != TS_OK) {
        if (!c->reason[0]) ts__mig_why(c, r, "verification failed: cannot read the session back");
        r = TS_E_CORRUPT;
    } else {
        r = ts__mig_verify_hashes(c, ts__json_get(lroot, "screenshots"));
    }
    if (r != TS_OK) {
        /* put the records back as they were */
        if (ts__js_get(obj, "screenshots", &arr) &&
            ts_session_replace_stream(s, id, "screenshots", arr.p, arr.n) == TS_OK)
            ts__mig_flush(c);
    }
done:
    ts_blob_free(&b);
    ts__json_doc_free(&doc);
    ts__json_doc_free(&ldoc);
    ts__mig_trim(c);
    return r;
}

/* ---- the steps over the whole store ------------------------------------------------------- */

TS__PRIVATE int ts__mig_wanted(const ts__mig *c, const char *id)
{
    size_t i;
    if (!c->opt.ids) return 1;
    for (i = 0; i < c->opt.id_count; i++)
        if (c->opt.ids[i] && strcmp(c->opt.ids[i], id) == 0) return 1;
    return 0;
}

/* Records one session's outcome; a store-level failure is not the session's. */
TS__PRIVATE ts_result ts__mig_record(ts__mig *c, const char *id, ts_result r, const ts__mig_out *o)
{
    ts_migrate_outcome oc = r == TS_OK ? TS_MIGRATE_MIGRATED : r == TS_DONE ? TS_MIGRATE_SKIPPED
                                                                            : TS_MIGRATE_FAILED;
    ts_result rr = ts__mig_item(c->rep, id, oc, r == TS_DONE ? TS_OK : r,
                                oc == TS_MIGRATE_FAILED ? c->reason : "", o->records, o->attachments);
    if (oc == TS_MIGRATE_FAILED)
        ts__log(&c->s->env, TS_LOG_WARN, r, __LINE__, c->reason);
    c->done++;
    ts__mig_progress(c, id, oc, r == TS_DONE ? TS_OK : r, oc == TS_MIGRATE_FAILED ? c->reason : "", 0);
    return rr;
}

TS__PRIVATE ts_result ts__mig_step_index(ts__mig *c, uint64_t live)
{
    ts_store *s = c->s;
    ts_index_verify_report vr;
    ts_index_stats st;
    ts_result r;
    c->step = "index";
    ts__mig_progress(c, NULL, TS_MIGRATE_MIGRATED, TS_OK, "", 0);
    if (!s->index) {
        if (c->rep) c->rep->index_result = TS_E_STATE;
        return TS_OK;
    }
    if (c->opt.dry_run) {
        if (c->rep) c->rep->index_sessions = live;
        return TS_OK;
    }
    r = ts__index_rebuild(s);
    if (r == TS_OK) r = ts_index_verify(s->index, 0, &vr);
    if (r == TS_OK && ts_index_stats_get(s->index, &st) == TS_OK) {
        size_t i, n = 0;
        for (i = 0; i < s->dir_count; i++) {
            if (!s->dir[i].meta) continue;
            n++;
            if (!ts_index_contains(s->index, s->dir[i].id, s->dir[i].id_len)) r = TS_E_CORRUPT;
        }
        if (st.sessions != n) r = TS_E_CORRUPT;
        if (c->rep) c->rep->index_sessions = st.sessions;
    }
    if (r == TS_OK) {
        void *data = NULL;
        size_t len = 0;
        r = ts_index_save(s->index, &data, &len);
        if (r == TS_OK) {
            r = ts__w_put(s, TS__INDEX_PATH, data, len, TS__PRIO_LOW, NULL, 0);
            ts_index_free_buffer(s->index, data, len);
        }
        if (r == TS_OK) r = ts__mig_flush(c);
    }
    if (c->rep) {
        c->rep->index_result = r;
        c->rep->index_built = r == TS_OK;
    }
    if (r != TS_OK) ts__log(&s->env, TS_LOG_WARN, r, __LINE__, "migrate: index step failed");
    return c->fatal ? c->fatal : TS_OK;
}

TS__PRIVATE ts_result ts__mig_step_compress(ts__mig *c)
{
    ts_store *s = c->s;
    size_t i;
    ts_result r = TS_OK;
    uint64_t limit = c->now > c->opt.compress_age_ms ? c->now - c->opt.compress_age_ms : 0;
    c->step = "compress";
    ts__mig_progress(c, NULL, TS_MIGRATE_MIGRATED, TS_OK, "", 0);
    if (!c->opt.compress_fn && !c->opt.dry_run) {
        if (c->rep) c->rep->compress_result = TS_E_NOTIMPL;
        return TS_OK;
    }
    if ((r = ts__dir_build(s)) != TS_OK) return r;
    for (i = 0; i < s->dir_count && !c->cancelled; i++) {
        ts__dir_entry *e = &s->dir[i];
        char id[TS_SESSION_ID_MAX + 1];
        if (!e->meta || !e->has_start || e->start < 0 || (uint64_t)e->start >= limit) continue;
        if (!ts__mig_wanted(c, e->id)) continue;
        if (c->opt.dry_run) { if (c->rep) c->rep->compressed++; continue; }
        memcpy(id, e->id, e->id_len + 1);
        r = c->opt.compress_fn(c->opt.compress_user, s, id);
        if (r != TS_OK) {
            if (c->rep && c->rep->compress_result == TS_OK) c->rep->compress_result = r;
            continue;
        }
        if (c->rep) c->rep->compressed++;
    }
    return c->fatal;
}

/* The body of ts_migrate_run (also the final phase of the background one). */
TS__PRIVATE ts_result ts__mig_run(ts__mig *c)
{
    ts_store *s = c->s;
    ts__mig_scan sc;
    ts__mig_out o;
    size_t i;
    uint64_t live = 0;
    ts_result r;
    memset(&sc, 0, sizeof sc);
    if (c->rep) {
        c->rep->dry_run = c->opt.dry_run;
        c->rep->steps = c->steps;
    }
    if ((r = ts__mig_scan_dir(s, &sc)) != TS_OK) goto out;
    if ((r = ts__dir_build(s)) != TS_OK) goto out;
    c->t0 = ts__mig_clock(c);
    if (c->steps & (TS_MIGRATE_STEP_CHUNKED | TS_MIGRATE_STEP_CA)) {
        int chunked = (c->steps & TS_MIGRATE_STEP_CHUNKED) != 0;
        /* the sessions to handle */
        c->total = 0;
        if (chunked) {
            for (i = 0; i < sc.legacy.n; i++) if (ts__mig_wanted(c, sc.legacy.v[i])) c->total++;
            for (i = 0; i < sc.bad.n; i++) if (!c->opt.ids) c->total++;
        } else {
            for (i = 0; i < s->dir_count; i++)
                if (s->dir[i].meta && !ts__map_get(&sc.legacy_set, s->dir[i].id, s->dir[i].id_len, NULL) &&
                    ts__mig_wanted(c, s->dir[i].id))
                    c->total++;
        }
        c->step = chunked ? "chunked" : "ca";
        ts__mig_progress(c, NULL, TS_MIGRATE_MIGRATED, TS_OK, "", 0);
        if (chunked) {
            /* already in the new layout: nothing to do */
            for (i = 0; i < s->dir_count && r == TS_OK; i++) {
                const ts__dir_entry *e = &s->dir[i];
                if (!e->meta || ts__map_get(&sc.legacy_set, e->id, e->id_len, NULL)) continue;
                if (!ts__mig_wanted(c, e->id)) continue;
                r = ts__mig_item(c->rep, e->id, TS_MIGRATE_SKIPPED, TS_OK, "", 0, 0);
            }
            for (i = 0; i < sc.bad.n && r == TS_OK && !c->opt.ids; i++) {
                ts__mig_why(c, TS_E_INVALID, "sessions/%s: the file name is not a valid session id "
                            "(1-128 bytes of [A-Za-z0-9._-])", sc.bad.v[i]);
                memset(&o, 0, sizeof o);
                r = ts__mig_record(c, sc.bad.v[i], TS_E_INVALID, &o);
            }
            for (i = 0; i < sc.legacy.n && r == TS_OK && !c->cancelled && !c->fatal; i++) {
                const char *id = sc.legacy.v[i];
                ts_result one;
                if (!ts__mig_wanted(c, id)) continue;
                one = ts__mig_legacy_one(c, &sc, id, &o);
                if (c->fatal) break;
                r = ts__mig_record(c, id, one, &o);
            }
        } else {
            for (i = 0; i < s->dir_count && r == TS_OK && !c->cancelled && !c->fatal; i++) {
                char id[TS_SESSION_ID_MAX + 1];
                ts_result one;
                const ts__dir_entry *e = &s->dir[i];
                if (!e->meta || ts__map_get(&sc.legacy_set, e->id, e->id_len, NULL)) continue;
                if (!ts__mig_wanted(c, e->id)) continue;
                memcpy(id, e->id, e->id_len + 1);
                one = ts__mig_ca_one(c, id, &o);
                if (c->fatal) break;
                r = ts__mig_record(c, id, one, &o);
                /* ts__mig_ca_one may have changed s->dir; e is reloaded each turn */
            }
        }
        if (c->rep && c->opt.ids) {
            /* named sessions that exist in neither form */
            for (i = 0; i < c->opt.id_count && r == TS_OK; i++) {
                const char *id = c->opt.ids[i];
                uint64_t at;
                size_t k, seen = 0;
                if (!id) continue;
                for (k = 0; k < c->rep->item_count; k++) if (strcmp(c->rep->items[k].id, id) == 0) seen = 1;
                if (seen || ts__map_get(&s->dir_map, id, strlen(id), &at)) continue;
                ts__mig_why(c, TS_E_NOTFOUND, "session %s: neither sessions/%s.json nor a chunked session exists",
                            id, id);
                memset(&o, 0, sizeof o);
                r = ts__mig_record(c, id, TS_E_NOTFOUND, &o);
            }
        }
    }
    if (r != TS_OK) goto out;
    if (c->fatal) { r = c->fatal; goto out; }
    if (c->cancelled) { r = TS_E_CANCELLED; goto out; }
    if (c->steps & (TS_MIGRATE_STEP_INDEX | TS_MIGRATE_STEP_COMPRESS)) {
        if ((r = ts__dir_build(s)) != TS_OK) goto out;
        for (i = 0; i < s->dir_count; i++) if (s->dir[i].meta) live++;
        if (c->opt.dry_run && c->rep) live += c->rep->migrated;
    }
    if ((c->steps & TS_MIGRATE_STEP_INDEX) && (r = ts__mig_step_index(c, live)) != TS_OK) goto out;
    if ((c->steps & TS_MIGRATE_STEP_COMPRESS) && (r = ts__mig_step_compress(c)) != TS_OK) goto out;
    if (c->cancelled) { r = TS_E_CANCELLED; goto out; }
    c->step = "done";
    ts__mig_progress(c, NULL, TS_MIGRATE_MIGRATED, TS_OK, "", 1);
out:
    if (c->rep) c->rep->candidates = c->total;
    ts__mig_scan_free(&sc);
    return r;
}

TASKSTORE_DEF ts_result ts_migrate_run(ts_store *s, const ts_migrate_options *opts,
                                       ts_migrate_report *report)
{
    ts__mig c;
    ts_result r;
    if (report) ts__mig_report_init(report, s ? &s->env.alloc : NULL);
    if (!s) return TS_E_INVALID;
    if (s->read_only && !(opts && opts->dry_run))
        return TS__FAIL(&s->env, TS_E_READONLY, "migrate: store is read-only");
    if (!s->cas) return TS__FAIL(&s->env, TS_E_STATE, "migrate: no attachment store");
    ts__mig_init(&c, s, opts, report);
    r = ts__mig_run(&c);
    if (r != TS_OK && r != TS_E_CANCELLED && r != TS_E_NOMEM)
        r = TS__FAIL(&s->env, r, "migrate: stopped: %s", c.reason[0] ? c.reason : ts_result_str(r));
    ts__mig_free(&c);
    return r;
}

TASKSTORE_DEF ts_result ts_migrate_session(ts_store *s, const char *id, const ts_migrate_options *opts,
                                           ts_migrate_report *report)
{
    ts__mig c;
    ts__mig_scan sc;
    ts__mig_out o;
    ts_result r;
    int ex = 0;
    if (report) ts__mig_report_init(report, s ? &s->env.alloc : NULL);
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    if (s->read_only && !(opts && opts->dry_run))
        return TS__FAIL(&s->env, TS_E_READONLY, "migrate: store is read-only");
    if (!s->cas) return TS__FAIL(&s->env, TS_E_STATE, "migrate: no attachment store");
    ts__mig_init(&c, s, opts, report);
    if (report) { report->dry_run = c.opt.dry_run; report->steps = c.steps; report->candidates = 1; }
    memset(&sc, 0, sizeof sc);
    memset(&o, 0, sizeof o);
    c.total = 1;
    r = ts__mig_scan_dir(s, &sc);
    if (r == TS_OK) {
        if (ts__map_get(&sc.legacy_set, id, strlen(id), NULL) && (c.steps & TS_MIGRATE_STEP_CHUNKED)) {
            r = ts__mig_legacy_one(&c, &sc, id, &o);
        } else if ((r = ts_session_exists(s, id, &ex)) == TS_OK) {
            if (!ex) r = ts__mig_why(&c, TS_E_NOTFOUND, "session %s: neither form exists", id);
            else if ((c.steps & TS_MIGRATE_STEP_CA) && !(c.steps & TS_MIGRATE_STEP_CHUNKED))
                r = ts__mig_ca_one(&c, id, &o);
            else
                r = TS_DONE;
        }
        if (r == TS_OK && !c.opt.dry_run && (c.steps & TS_MIGRATE_STEP_INDEX) && s->index && s->index_valid)
            s->index_changed = 1;   /* the save kept the index current */
        if (c.fatal == TS_OK || r == TS_OK || r == TS_DONE) {
            ts_result rr = ts__mig_record(&c, id, r, &o);
            if (rr != TS_OK) r = rr;
        }
    }
    ts__mig_scan_free(&sc);
    if (r != TS_OK && r != TS_DONE)
        r = TS__FAIL(&s->env, r, "%s", c.reason[0] ? c.reason : ts_result_str(r));
    ts__mig_free(&c);
    return r;
}

TASKSTORE_DEF ts_result ts_migrate_load(ts_store *s, const char *id, ts_blob *out)
{
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!out) return TS_E_INVALID;
    if ((r = ts__check_id(s, id)) != TS_OK) return r;
    if (!s->read_only) {
        ts__buf p;
        int legacy;
        ts__buf_init(&p, &s->env.alloc);
        r = ts__buf_printf(&p, TS__MIG_LEGACY_DIR "/%s.json", id);
        legacy = r == TS_OK && ts__mig_exists(s, (const char *)p.data);
        ts__buf_free(&p);
        if (r != TS_OK) return r;
        if (legacy) {
            r = ts_migrate_session(s, id, NULL, NULL);
            if (r != TS_OK && r != TS_DONE) return r;
        }
    }
    return ts_session_load(s, id, out);
}

/* ---- status ------------------------------------------------------------------------------- */

TS__PRIVATE int ts__mig_count_json_cb(void *ctx, const char *name, int is_dir)
{
    if (!is_dir && ts__str_ends(name, strlen(name), ".json")) (*(uint64_t *)ctx)++;
    return 0;
}

TASKSTORE_DEF ts_result ts_migrate_status_get(ts_store *s, ts_migrate_status *out)
{
    ts__mig_scan sc;
    size_t i;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!s || !out) return TS_E_INVALID;
    if ((r = ts__mig_scan_dir(s, &sc)) != TS_OK) { ts__mig_scan_free(&sc); return r; }
    r = ts__dir_build(s);
    if (r == TS_OK) {
        for (i = 0; i < s->dir_count; i++)
            if (s->dir[i].meta && !ts__map_get(&sc.legacy_set, s->dir[i].id, s->dir[i].id_len, NULL))
                out->chunked++;
        out->legacy = sc.legacy.n;
        out->total = out->chunked + out->legacy;
        out->percentage = out->total ? 100.0 * (double)out->chunked / (double)out->total : 100.0;
        out->backups = sc.backups.n;
        if (s->io.list_dir_fn)
            s->io.list_dir_fn(s->io.user, TS__MIG_ATT_DIR, ts__mig_count_json_cb, &out->legacy_attachments);
        out->background = ts__mig_exists(s, TS__MIG_PROGRESS);
    }
    ts__mig_scan_free(&sc);
    return r;
}

/* A percentage rounded to 2 decimals (JSON output stays short). */
TS__PRIVATE double ts__mig_round2(double x)
{
    return (double)(int64_t)(x * 100.0 + 0.5) / 100.0;
}

TASKSTORE_DEF ts_result ts_migrate_status_json(const ts_migrate_status *st, ts_blob *out)
{
    ts__buf b;
    ts__jw w;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!st || !out) return TS_E_INVALID;
    ts__buf_init(&b, NULL);
    ts__jw_init(&w, &b);
    ts__jw_begin_object(&w);
    ts__jw_key(&w, "total"); ts__jw_int(&w, (int64_t)st->total);
    ts__jw_key(&w, "chunked"); ts__jw_int(&w, (int64_t)st->chunked);
    ts__jw_key(&w, "legacy"); ts__jw_int(&w, (int64_t)st->legacy);
    ts__jw_key(&w, "percentage"); ts__jw_number(&w, ts__mig_round2(st->percentage));
    ts__jw_key(&w, "backups"); ts__jw_int(&w, (int64_t)st->backups);
    ts__jw_key(&w, "legacyAttachments"); ts__jw_int(&w, (int64_t)st->legacy_attachments);
    ts__jw_key(&w, "background"); ts__jw_bool(&w, st->background);
    ts__jw_end_object(&w);
    r = ts__jw_finish(&w);
    if (r == TS_OK) {
        ts_allocator a;
        memset(&a, 0, sizeof a);
        ts__blob_from_buf(out, &b, &a);
    }
    ts__buf_free(&b);
    return r;
}

static const char *const ts__mig_step_names[] = { "chunked", "ca", "index", "compress" };
static const char *const ts__mig_outcome_names[] = { "migrated", "skipped", "failed" };

TASKSTORE_DEF ts_result ts_migrate_report_json(const ts_migrate_report *rep, ts_blob *out)
{
    ts__buf b;
    ts__jw w;
    size_t i;
    int k;
    ts_result r;
    if (out) memset(out, 0, sizeof *out);
    if (!rep || !out) return TS_E_INVALID;
    ts__buf_init(&b, &rep->alloc_);
    ts__jw_init(&w, &b);
    ts__jw_begin_object(&w);
    ts__jw_key(&w, "migrated"); ts__jw_int(&w, (int64_t)rep->migrated);
    ts__jw_key(&w, "skipped"); ts__jw_int(&w, (int64_t)rep->skipped);
    ts__jw_key(&w, "failed");
    ts__jw_begin_array(&w);
    for (i = 0; i < rep->item_count; i++) {
        const ts_migrate_item *it = &rep->items[i];
        if (it->outcome != TS_MIGRATE_FAILED) continue;
        ts__jw_begin_object(&w);
        ts__jw_key(&w, "id"); ts__jw_string(&w, it->id, strlen(it->id));
        ts__jw_key(&w, "reason"); ts__jw_string(&w, it->reason, strlen(it->reason));
        ts__jw_end_object(&w);
    }
    ts__jw_end_array(&w);
    ts__jw_key(&w, "dryRun"); ts__jw_bool(&w, rep->dry_run);
    ts__jw_key(&w, "steps");
    ts__jw_begin_array(&w);
    for (k = 0; k < 4; k++)
        if (rep->steps & (1u << k)) ts__jw_string(&w, ts__mig_step_names[k], strlen(ts__mig_step_names[k]));
    ts__jw_end_array(&w);
    ts__jw_key(&w, "candidates"); ts__jw_int(&w, (int64_t)rep->candidates);
    ts__jw_key(&w, "legacyBytes"); ts__jw_int(&w, (int64_t)rep->legacy_bytes);
    ts__jw_key(&w, "attachments");
    ts__jw_begin_object(&w);
    ts__jw_key(&w, "imported"); ts__jw_int(&w, (int64_t)rep->attachments_imported);
    ts__jw_key(&w, "deduplicated"); ts__jw_int(&w, (int64_t)rep->attachments_deduplicated);
    ts__jw_key(&w, "bytes"); ts__jw_int(&w, (int64_t)rep->attachment_bytes);
    ts__jw_end_object(&w);
    ts__jw_key(&w, "backups");
    ts__jw_begin_object(&w);
    ts__jw_key(&w, "written"); ts__jw_int(&w, (int64_t)rep->backups_written);
    ts__jw_key(&w, "reused"); ts__jw_int(&w, (int64_t)rep->backups_reused);
    ts__jw_end_object(&w);
    ts__jw_key(&w, "index");
    ts__jw_begin_object(&w);
    ts__jw_key(&w, "built"); ts__jw_bool(&w, rep->index_built);
    ts__jw_key(&w, "sessions"); ts__jw_int(&w, (int64_t)rep->index_sessions);
    ts__jw_end_object(&w);
    ts__jw_key(&w, "compressed"); ts__jw_int(&w, (int64_t)rep->compressed);
    ts__jw_key(&w, "sessions");
    ts__jw_begin_array(&w);
    for (i = 0; i < rep->item_count; i++) {
        const ts_migrate_item *it = &rep->items[i];
        ts__jw_begin_object(&w);
        ts__jw_key(&w, "id"); ts__jw_string(&w, it->id, strlen(it->id));
        ts__jw_key(&w, "outcome");
        ts__jw_string(&w, ts__mig_outcome_names[it->outcome], strlen(ts__mig_outcome_names[it->outcome]));
        ts__jw_end_object(&w);
    }
    ts__jw_end_array(&w);
    ts__jw_end_object(&w);
    r = ts__jw_finish(&w);
    if (r == TS_OK) ts__blob_from_buf(out, &b, &rep->alloc_);
    ts__buf_free(&b);
    return r;
}

/* ---- rollback ------------------------------------------------------------------------------ */

/* Drops attachmentHash from the screenshot records of a session DOM. */
TS__PRIVATE void ts__mig_strip_hashes(ts__json *root)
{
    ts__json *x;
    for (x = ts__json_first(ts__json_get(root, "screenshots")); x; x = x->next)
        ts__json_object_remove(x, "attachmentHash");
}

/* Restores session id from the backup file sessions/{bname}. why gets the
   reason of a failure. */
TS__PRIVATE ts_result ts__mig_rollback_one(ts_store *s, const char *id, const char *bname,
                                           unsigned flags, char *why, size_t whycap)
{
    ts__buf bk, cur, p;
    ts__mig_bkinfo bi;
    char lpath[TS_SESSION_ID_MAX + 32];
    int chunked = 0, legacy_ok = 0;
    ts_result r;
    why[0] = 0;
    snprintf(lpath, sizeof lpath, TS__MIG_LEGACY_DIR "/%s.json", id);
    ts__buf_init(&bk, &s->env.alloc);
    ts__buf_init(&cur, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    r = ts__buf_printf(&p, TS__MIG_LEGACY_DIR "/%s", bname);
    if (r == TS_OK) r = ts__mig_read(s, (const char *)p.data, &bk);
    if (r == TS_E_NOTFOUND) {
        snprintf(why, whycap, "%s: no such backup", (const char *)p.data);
        goto done;
    }
    if (r != TS_OK) { snprintf(why, whycap, "%s: cannot read: %s", (const char *)p.data, ts_result_str(r)); goto done; }
    if (ts__mig_backup_parse((const char *)bk.data, bk.len, id, 1, &bi) != TS_OK) {
        r = TS_E_CORRUPT;
        snprintf(why, whycap, "%s: corrupt backup (malformed, or the bytes do not match originalSha256)",
                 (const char *)p.data);
        goto done;
    }
    r = ts__mig_read(s, lpath, &cur);
    if (r == TS_OK) {
        if (cur.len == bi.raw.n && memcmp(cur.data, bi.raw.p, cur.len) == 0) legacy_ok = 1;
        else if (!(flags & TS_MIGRATE_FORCE)) {
            r = TS_E_EXISTS;
            snprintf(why, whycap, "%s exists and differs from the backup (use force)", lpath);
            goto done;
        }
    } else if (r != TS_E_NOTFOUND) {
        snprintf(why, whycap, "%s: cannot read: %s", lpath, ts_result_str(r));
        goto done;
    }
    if ((r = ts_session_exists(s, id, &chunked)) != TS_OK) {
        snprintf(why, whycap, "sessions-chunked/%s: %s", id, s->env.last.message);
        goto done;
    }
    if (chunked && !(flags & TS_MIGRATE_FORCE)) {
        /* refuse to lose changes made after the migration */
        ts__json_doc d1, d2;
        ts__json *r1 = NULL, *r2 = NULL;
        ts_blob b;
        ts__json_doc_init(&d1, &s->env.alloc);
        ts__json_doc_init(&d2, &s->env.alloc);
        if (s->lru) ts_lru_invalidate_session(s->lru, id, strlen(id), NULL);
        r = ts_session_load(s, id, &b);
        if (r == TS_OK) {
            r = ts__json_parse(&d1, bi.raw.p, bi.raw.n, &r1, NULL, "backup");
            if (r == TS_OK) r = ts__json_parse(&d2, (const char *)b.data, b.len, &r2, NULL, "session");
            ts_blob_free(&b);
        }
        if (r == TS_OK) {
            ts__mig_strip_hashes(r1);
            ts__mig_strip_hashes(r2);
            p.len = 0;
            if (ts__json_diff(r1, r2, &p)) {
                r = TS_E_STATE;
                snprintf(why, whycap, "session %s changed since its migration (%s differs); "
                         "rolling back would lose that (use force)", id,
                         p.len ? (const char *)p.data : "the session");
            }
        } else {
            snprintf(why, whycap, "session %s: cannot compare with the backup: %s", id, ts_result_str(r));
        }
        ts__json_doc_free(&d1);
        ts__json_doc_free(&d2);
        if (r != TS_OK) goto done;
    }
    if (!legacy_ok && (r = ts__mig_write(s, lpath, bi.raw.p, bi.raw.n)) != TS_OK) {
        snprintf(why, whycap, "%s: cannot write: %s", lpath, ts_result_str(r));
        goto done;
    }
    if (chunked) {
        r = ts_session_delete(s, id);
        if (r == TS_OK) r = ts_store_flush(s);
        if (r != TS_OK) {
            snprintf(why, whycap, "sessions-chunked/%s: restored %s but cannot delete the chunked copy: %s",
                     id, lpath, s->env.last.message);
            goto done;
        }
    }
    r = TS_OK;
done:
    ts__mig_sanitize(why);
    ts__buf_free(&bk);
    ts__buf_free(&cur);
    ts__buf_free(&p);
    return r;
}

TASKSTORE_DEF ts_result ts_migrate_rollback(ts_store *s, const char *id, const char *backup,
                                            unsigned flags)
{
    char why[TS__MIG_REASON];
    ts__mig_scan sc;
    ts_result r;
    if ((r = ts__check_write(s, id)) != TS_OK) return r;
    if (backup) {
        size_t idl = 0;
        uint64_t ts = 0;
        if (!ts__mig_backup_name(backup, strlen(backup), &idl, &ts) || idl != strlen(id) ||
            memcmp(backup, id, idl) != 0)
            return TS__FAIL(&s->env, TS_E_INVALID, "rollback: %s is not a backup name of session %s "
                            "(expected %s" TS__MIG_BACKUP_TAG "<ms>)", backup, id, id);
        r = ts__mig_rollback_one(s, id, backup, flags, why, sizeof why);
    } else {
        uint64_t at;
        if ((r = ts__mig_scan_dir(s, &sc)) != TS_OK) { ts__mig_scan_free(&sc); return r; }
        if (!ts__map_get(&sc.latest, id, strlen(id), &at)) {
            ts__mig_scan_free(&sc);
            return TS__FAIL(&s->env, TS_E_NOTFOUND, "rollback: session %s has no backup", id);
        }
        r = ts__mig_rollback_one(s, id, sc.backups.v[at], flags, why, sizeof why);
        ts__mig_scan_free(&sc);
    }
    if (r != TS_OK) return TS__FAIL(&s->env, r, "rollback: %s", why);
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_migrate_rollback_all(ts_store *s, unsigned flags, ts_migrate_report *report)
{
    ts__mig_scan sc;
    ts_migrate_report local;
    ts_migrate_report *rep = report ? report : &local;
    char why[TS__MIG_REASON];
    size_t i;
    ts_result r;
    ts__mig_report_init(rep, s ? &s->env.alloc : NULL);
    if (!s) return TS_E_INVALID;
    if (s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "rollback: store is read-only");
    if ((r = ts__mig_scan_dir(s, &sc)) != TS_OK) { ts__mig_scan_free(&sc); return r; }
    for (i = 0; i < sc.backups.n && r == TS_OK; i++) {
        const char *nm = sc.backups.v[i];
        char id[TS_SESSION_ID_MAX + 1];
        size_t idl = 0;
        uint64_t ts = 0, at;
        ts_result one;
        ts__mig_backup_name(nm, strlen(nm), &idl, &ts);
        if (!ts__map_get(&sc.latest, nm, idl, &at) || at != i) continue;
        memcpy(id, nm, idl);
        id[idl] = 0;
        if (ts__map_get(&sc.legacy_set, id, idl, NULL)) continue; /* legacy already */
        rep->candidates++;
        one = ts__mig_rollback_one(s, id, nm, flags, why, sizeof why);
        r = ts__mig_item(rep, id, one == TS_OK ? TS_MIGRATE_MIGRATED : TS_MIGRATE_FAILED, one,
                         one == TS_OK ? "" : why, 0, 0);
    }
    ts__mig_scan_free(&sc);
    if (!report) ts_migrate_report_free(&local);
    return r;
}

/* ---- cleanup --------------------------------------------------------------------------------- */

/* Adds every attachmentId the screenshot records of session text name. */
TS__PRIVATE ts_result ts__mig_collect_aids(ts__span obj, ts__map *set)
{
    ts__span arr, rec, v;
    ts__js_iter it;
    ts_result r = TS_OK;
    if (!ts__js_get(obj, "screenshots", &arr) || !ts__js_iter_begin(&it, arr, '[')) return TS_OK;
    while (r == TS_OK && ts__js_iter_next(&it, NULL, &rec) == TS_OK) {
        char aid[TS_SESSION_ID_MAX + 1];
        size_t n = 0;
        if (rec.p[0] == '{' && ts__js_get(rec, "attachmentId", &v) && v.p[0] == '"' &&
            ts__js_str_decode_to(v, aid, TS_SESSION_ID_MAX, &n) && ts__valid_id(aid, n))
            r = ts__map_put(set, aid, n, 0);
    }
    return r;
}

typedef struct ts__mig_listctx {
    ts__mig_sv *sv;
    ts_result err;
} ts__mig_listctx;

TS__PRIVATE int ts__mig_list_json_cb(void *ctx, const char *name, int is_dir)
{
    ts__mig_listctx *lc = (ts__mig_listctx *)ctx;
    size_t n = strlen(name);
    if (is_dir || !ts__str_ends(name, n, ".json") || !ts__valid_id(name, n - 5)) return 0;
    if ((lc->err = ts__mig_sv_push(lc->sv, name, n - 5)) != TS_OK) return 1;
    return 0;
}

/* The ids of attachments/{aid}.json, sorted. */
TS__PRIVATE ts_result ts__mig_list_attachments(ts_store *s, ts__mig_sv *out)
{
    ts__mig_listctx lc;
    ts_result r;
    ts__mig_sv_init(out, &s->env.alloc);
    lc.sv = out;
    lc.err = TS_OK;
    if (!s->io.list_dir_fn) return TS_E_NOTIMPL;
    r = s->io.list_dir_fn(s->io.user, TS__MIG_ATT_DIR, ts__mig_list_json_cb, &lc);
    if (r == TS_E_NOTFOUND) r = TS_OK;
    if (r == TS_OK) r = lc.err;
    ts__mig_sv_sort(out);
    return r;
}

/* Legacy attachment aid -> its bytes' hash equals hex (decoded and hashed). */
TS__PRIVATE int ts__mig_att_matches(ts_store *s, const char *aid, const char *hex, ts__buf *tmp,
                                    ts__buf *b64)
{
    char path[TS_SESSION_ID_MAX + 32], h[65];
    ts__span obj, v;
    ts__b64_info bi;
    unsigned char *bytes;
    snprintf(path, sizeof path, TS__MIG_ATT_DIR "/%s.json", aid);
    if (ts__mig_read(s, path, tmp) != TS_OK || !ts__js_valid((const char *)tmp->data, tmp->len)) return 0;
    obj = ts__js_trim((const char *)tmp->data, tmp->len);
    if (!ts__js_get(obj, "base64", &v) || v.p[0] != '"') return 0;
    b64->len = 0;
    if (ts__js_str_decode(v, b64) != TS_OK) return 0;
    if (!ts__base64_check((const char *)b64->data, b64->len, &bi)) return 0;
    bytes = (unsigned char *)ts__alloc(&s->env.alloc, bi.out_len);
    if (!bytes) return 0;
    ts__base64_decode((const char *)b64->data, b64->len, &bi, bytes);
    ts__mig_sha_hex(bytes, bi.out_len, h);
    ts__free(&s->env.alloc, bytes, bi.out_len);
    return memcmp(h, hex, 64) == 0;
}

TASKSTORE_DEF ts_result ts_migrate_cleanup(ts_store *s, uint64_t now_ms, unsigned flags,
                                           ts_migrate_cleanup_report *out)
{
    ts__mig_scan sc;
    ts_migrate_cleanup_report rep;
    ts__buf b, p, b64;
    ts__map needed, evidence;
    ts__buf evh;
    size_t i;
    int removed_any = 0, unsure = 0;
    ts_result r;
    memset(&rep, 0, sizeof rep);
    if (out) memset(out, 0, sizeof *out);
    if (!s) return TS_E_INVALID;
    if (s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "cleanup: store is read-only");
    if (!now_ms) now_ms = s->now_ms;
    if ((r = ts__mig_scan_dir(s, &sc)) != TS_OK) { ts__mig_scan_free(&sc); return r; }
    ts__buf_init(&b, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__buf_init(&b64, &s->env.alloc);
    ts__buf_init(&evh, &s->env.alloc);
    ts__map_init(&needed, &s->env.alloc);
    ts__map_init(&evidence, &s->env.alloc);
    for (i = 0; i < sc.backups.n && r == TS_OK; i++) {
        ts__mig_bkinfo bi;
        p.len = 0;
        if ((r = ts__buf_printf(&p, TS__MIG_LEGACY_DIR "/%s", sc.backups.v[i])) != TS_OK) break;
        rep.backups_seen++;
        if (ts__mig_read(s, (const char *)p.data, &b) != TS_OK ||
            ts__mig_backup_parse((const char *)b.data, b.len, NULL, 0, &bi) != TS_OK) {
            /* never delete what cannot be read: it may be the only copy */
            rep.backups_kept++;
            unsure = 1;
            continue;
        }
        if (bi.expires > now_ms) {
            rep.backups_kept++;
            if (flags & TS_MIGRATE_CLEAN_ATTACHMENTS) {
                if (ts__js_valid(bi.raw.p, bi.raw.n))
                    r = ts__mig_collect_aids(ts__js_trim(bi.raw.p, bi.raw.n), &needed);
                else unsure = 1;
            }
            continue;
        }
        if (s->io.remove_fn && s->io.remove_fn(s->io.user, (const char *)p.data) == TS_OK) {
            rep.backups_removed++;
            rep.bytes_freed += b.len;
            removed_any = 1;
        } else {
            rep.backups_kept++;
        }
    }
    if (removed_any && s->io.sync_dir_fn) s->io.sync_dir_fn(s->io.user, TS__MIG_LEGACY_DIR);
    if (r == TS_OK && (flags & TS_MIGRATE_CLEAN_ATTACHMENTS) && !unsure) {
        ts__mig_sv atts;
        ts__mig_sv_init(&atts, &s->env.alloc);
        /* what legacy sessions still name */
        for (i = 0; i < sc.legacy.n && r == TS_OK; i++) {
            p.len = 0;
            if ((r = ts__buf_printf(&p, TS__MIG_LEGACY_DIR "/%s.json", sc.legacy.v[i])) != TS_OK) break;
            if (ts__mig_read(s, (const char *)p.data, &b) != TS_OK ||
                !ts__js_valid((const char *)b.data, b.len)) { unsure = 1; break; }
            r = ts__mig_collect_aids(ts__js_trim((const char *)b.data, b.len), &needed);
        }
        /* what migrated sessions prove is in the CA store: aid -> hash */
        if (r == TS_OK && !unsure && (r = ts__dir_build(s)) == TS_OK) {
            for (i = 0; i < s->dir_count && r == TS_OK; i++) {
                ts_blob sb;
                ts__span arr, rec, v;
                ts__js_iter it;
                char id[TS_SESSION_ID_MAX + 1];
                if (!s->dir[i].meta) continue;
                memcpy(id, s->dir[i].id, s->dir[i].id_len + 1);
                if (ts_session_load_range(s, id, "screenshots", 0, (uint64_t)-1, &sb) != TS_OK) continue;
                arr = ts__js_trim((const char *)sb.data, sb.len);
                if (ts__js_iter_begin(&it, arr, '[')) {
                    while (r == TS_OK && ts__js_iter_next(&it, NULL, &rec) == TS_OK) {
                        char aid[TS_SESSION_ID_MAX + 1], hex[65];
                        size_t n = 0;
                        if (rec.p[0] != '{' || !ts__record_hash(rec, hex)) continue;
                        if (!ts__js_get(rec, "attachmentId", &v) || v.p[0] != '"' ||
                            !ts__js_str_decode_to(v, aid, TS_SESSION_ID_MAX, &n) || !ts__valid_id(aid, n))
                            continue;
                        if (ts__map_get(&evidence, aid, n, NULL)) continue;
                        r = ts__map_put(&evidence, aid, n, (uint64_t)evh.len);
                        if (r == TS_OK) r = ts__buf_append(&evh, hex, 64);
                    }
                }
                ts_blob_free(&sb);
            }
        }
        if (r == TS_OK && !unsure && (r = ts__mig_list_attachments(s, &atts)) == TS_OK) {
            int gone = 0;
            for (i = 0; i < atts.n && r == TS_OK; i++) {
                const char *aid = atts.v[i];
                uint64_t off;
                char hex[65], path[TS_SESSION_ID_MAX + 32];
                if (ts__map_get(&needed, aid, strlen(aid), NULL)) continue;
                if (!ts__map_get(&evidence, aid, strlen(aid), &off)) continue;
                memcpy(hex, evh.data + off, 64);
                hex[64] = 0;
                if (ts_cas_verify(s->cas, hex) != TS_OK) continue;
                if (!ts__mig_att_matches(s, aid, hex, &b, &b64)) continue;
                snprintf(path, sizeof path, TS__MIG_ATT_DIR "/%s.json", aid);
                if (s->io.remove_fn && s->io.remove_fn(s->io.user, path) == TS_OK) {
                    rep.attachments_removed++;
                    rep.bytes_freed += b.len;
                    gone = 1;
                }
            }
            if (gone && s->io.sync_dir_fn) s->io.sync_dir_fn(s->io.user, TS__MIG_ATT_DIR);
        }
        ts__mig_sv_free(&atts);
    }
    ts__mig_scan_free(&sc);
    ts__buf_free(&b);
    ts__buf_free(&p);
    ts__buf_free(&b64);
    ts__buf_free(&evh);
    ts__map_free(&needed);
    ts__map_free(&evidence);
    if (out) *out = rep;
    return r;
}

/* ---- rollback points ----------------------------------------------------------------------------
   migration/points/{ms}.json:
     {"version":1,"createdAt":T,
      "sessions":[{"id","path","size","sha256"}...],
      "attachments":[{"path","size","sha256"}...],
      "checksum":"<SHA-256 of every byte before ,"checksum">"}  */

#define TS__MIG_POINT_TAIL 79 /* ,"checksum":"<64>"} */

TS__PRIVATE ts_result ts__mig_point_entry(ts_store *s, ts__jw *w, const char *id, const char *path,
                                          ts__buf *b)
{
    char hex[65];
    ts_result r = ts__mig_read(s, path, b);
    if (r != TS_OK) return TS__FAIL(&s->env, r, "rollback point: cannot read %s", path);
    ts__mig_sha_hex(b->data, b->len, hex);
    ts__jw_begin_object(w);
    if (id) { ts__jw_key(w, "id"); ts__jw_string(w, id, strlen(id)); }
    ts__jw_key(w, "path"); ts__jw_string(w, path, strlen(path));
    ts__jw_key(w, "size"); ts__jw_int(w, (int64_t)b->len);
    ts__jw_key(w, "sha256"); ts__jw_string(w, hex, 64);
    ts__jw_end_object(w);
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_migrate_point_create(ts_store *s, uint64_t now_ms, char *name_out)
{
    ts__mig_scan sc;
    ts__mig_sv atts;
    ts__buf body, b, p;
    ts__jw w;
    char hex[65], path[TS_SESSION_ID_MAX + 32];
    uint64_t t;
    size_t i;
    ts_result r;
    if (name_out) name_out[0] = 0;
    if (!s) return TS_E_INVALID;
    if (s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "rollback point: store is read-only");
    if (!now_ms) now_ms = s->now_ms;
    ts__buf_init(&body, &s->env.alloc);
    ts__buf_init(&b, &s->env.alloc);
    ts__buf_init(&p, &s->env.alloc);
    ts__mig_sv_init(&atts, &s->env.alloc);
    r = ts__mig_scan_dir(s, &sc);
    if (r == TS_OK) r = ts__mig_list_attachments(s, &atts);
    if (r != TS_OK) goto done;
    ts__jw_init(&w, &body);
    ts__jw_begin_object(&w);
    ts__jw_key(&w, "version"); ts__jw_int(&w, 1);
    ts__jw_key(&w, "createdAt"); ts__jw_int(&w, (int64_t)now_ms);
    ts__jw_key(&w, "sessions");
    ts__jw_begin_array(&w);
    for (i = 0; i < sc.legacy.n && r == TS_OK; i++) {
        snprintf(path, sizeof path, TS__MIG_LEGACY_DIR "/%s.json", sc.legacy.v[i]);
        r = ts__mig_point_entry(s, &w, sc.legacy.v[i], path, &b);
    }
    ts__jw_end_array(&w);
    ts__jw_key(&w, "attachments");
    ts__jw_begin_array(&w);
    for (i = 0; i < atts.n && r == TS_OK; i++) {
        snprintf(path, sizeof path, TS__MIG_ATT_DIR "/%s.json", atts.v[i]);
        r = ts__mig_point_entry(s, &w, NULL, path, &b);
    }
    ts__jw_end_array(&w);
    ts__jw_end_object(&w);
    if (r != TS_OK) goto done;
    if ((r = ts__jw_finish(&w)) != TS_OK) goto done;
    /* body is a complete object: reopen it for the checksum member */
    body.len--;
    ts__mig_sha_hex(body.data, body.len, hex);
    if ((r = ts__buf_printf(&body, ",\"checksum\":\"%s\"}", hex)) != TS_OK) goto done;
    for (t = now_ms;; t++) {
        p.len = 0;
        if ((r = ts__buf_printf(&p, TS__MIG_POINTS "/%llu.json", (unsigned long long)t)) != TS_OK) goto done;
        if (!ts__mig_exists(s, (const char *)p.data)) break;
    }
    r = ts__mig_write(s, (const char *)p.data, body.data, body.len);
    if (r != TS_OK) { r = TS__FAIL(&s->env, r, "%s: cannot write", (const char *)p.data); goto done; }
    if (name_out) snprintf(name_out, 32, "%llu", (unsigned long long)t);
done:
    ts__mig_scan_free(&sc);
    ts__mig_sv_free(&atts);
    ts__buf_free(&body);
    ts__buf_free(&b);
    ts__buf_free(&p);
    return r;
}

typedef struct ts__mig_pl {
    uint64_t *v;
    size_t n, cap;
    const ts_allocator *a;
    ts_result err;
} ts__mig_pl;

TS__PRIVATE int ts__mig_point_name(const char *name, size_t n, uint64_t *t)
{
    size_t i;
    uint64_t v = 0;
    if (!ts__str_ends(name, n, ".json") || n <= 5 || n - 5 > 19) return 0;
    for (i = 0; i < n - 5; i++) {
        if (name[i] < '0' || name[i] > '9') return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *t = v;
    return 1;
}

TS__PRIVATE int ts__mig_pl_cb(void *ctx, const char *name, int is_dir)
{
    ts__mig_pl *pl = (ts__mig_pl *)ctx;
    uint64_t t;
    if (is_dir || !ts__mig_point_name(name, strlen(name), &t)) return 0;
    if (pl->n == pl->cap) {
        size_t ncap = pl->cap ? pl->cap * 2 : 16;
        uint64_t *nv = (uint64_t *)ts__realloc(pl->a, pl->v, pl->cap * sizeof(uint64_t), ncap * sizeof(uint64_t));
        if (!nv) { pl->err = TS_E_NOMEM; return 1; }
        pl->v = nv;
        pl->cap = ncap;
    }
    pl->v[pl->n++] = t;
    return 0;
}

TS__PRIVATE int ts__mig_u64cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

TASKSTORE_DEF ts_result ts_migrate_point_list(ts_store *s, int (*fn)(void *user, const char *name),
                                              void *user)
{
    ts__mig_pl pl;
    size_t i;
    ts_result r;
    if (!s || !fn) return TS_E_INVALID;
    if (!s->io.list_dir_fn) return TS_E_NOTIMPL;
    memset(&pl, 0, sizeof pl);
    pl.a = &s->env.alloc;
    r = s->io.list_dir_fn(s->io.user, TS__MIG_POINTS, ts__mig_pl_cb, &pl);
    if (r == TS_E_NOTFOUND) r = TS_OK;
    if (r == TS_OK) r = pl.err;
    if (r == TS_OK) {
        if (pl.n > 1) qsort(pl.v, pl.n, sizeof(uint64_t), ts__mig_u64cmp);
        for (i = 0; i < pl.n; i++) {
            char nm[32];
            snprintf(nm, sizeof nm, "%llu", (unsigned long long)pl.v[i]);
            if (fn(user, nm)) break;
        }
    }
    ts__free(pl.a, pl.v, pl.cap * sizeof(uint64_t));
    return r;
}

/* Finds a backup of id holding bytes with SHA-256 sha; its file name goes
   to out. 1 if found (and its own checksum holds). */
TS__PRIVATE int ts__mig_find_backup(ts_store *s, const ts__mig_scan *sc, const char *id,
                                    const char *sha, ts__buf *tmp, ts__buf *out)
{
    size_t i, n = strlen(id);
    for (i = 0; i < sc->backups.n; i++) {
        const char *nm = sc->backups.v[i];
        char path[TS_SESSION_ID_MAX + 64];
        size_t idl = 0;
        uint64_t ts = 0;
        ts__mig_bkinfo bi;
        if (!ts__mig_backup_name(nm, strlen(nm), &idl, &ts) || idl != n || memcmp(nm, id, n) != 0) continue;
        snprintf(path, sizeof path, TS__MIG_LEGACY_DIR "/%s", nm);
        if (ts__mig_read(s, path, tmp) != TS_OK) continue;
        if (ts__mig_backup_parse((const char *)tmp->data, tmp->len, id, 1, &bi) != TS_OK) continue;
        if (memcmp(bi.sha, sha, 64) != 0) continue;
        out->len = 0;
        return ts__buf_puts(out, nm) == TS_OK;
    }
    return 0;
}

/* Reads a point and checks its own checksum; *root is its DOM. */
TS__PRIVATE ts_result ts__mig_point_load(ts_store *s, const char *name, ts__buf *b, ts__json_doc *doc,
                                         ts__json **root)
{
    char path[96], hex[65];
    uint64_t t;
    ts_result r;
    *root = NULL;
    if (!name || !ts__mig_point_name(name, strlen(name), &t)) {
        char tmp[40];
        if (!name || strlen(name) > 20) return TS__FAIL(&s->env, TS_E_INVALID, "rollback point: bad name");
        snprintf(tmp, sizeof tmp, "%s.json", name);
        if (!ts__mig_point_name(tmp, strlen(tmp), &t))
            return TS__FAIL(&s->env, TS_E_INVALID, "rollback point: bad name %s", name);
    }
    snprintf(path, sizeof path, TS__MIG_POINTS "/%llu.json", (unsigned long long)t);
    r = ts__mig_read(s, path, b);
    if (r != TS_OK) return TS__FAIL(&s->env, r, "%s: cannot read", path);
    if (b->len < TS__MIG_POINT_TAIL + 2 ||
        memcmp(b->data + b->len - TS__MIG_POINT_TAIL, ",\"checksum\":\"", 13) != 0)
        return TS__FAIL(&s->env, TS_E_CORRUPT, "%s: no checksum", path);
    ts__mig_sha_hex(b->data, b->len - TS__MIG_POINT_TAIL, hex);
    if (memcmp(hex, b->data + b->len - TS__MIG_POINT_TAIL + 13, 64) != 0)
        return TS__FAIL(&s->env, TS_E_CORRUPT, "%s: checksum mismatch (the point file is damaged)", path);
    r = ts__json_parse(doc, (const char *)b->data, b->len, root, &s->env, path);
    if (r != TS_OK) return r;
    if (!ts__json_is_array(ts__json_get(*root, "sessions")) || !ts__json_is_array(ts__json_get(*root, "attachments")))
        return TS__FAIL(&s->env, TS_E_CORRUPT, "%s: malformed", path);
    return TS_OK;
}

/* Verify (restore = 0) or restore a point. */
TS__PRIVATE ts_result ts__mig_point_walk(ts_store *s, const char *name, int restore, unsigned flags,
                                         ts_migrate_report *rep)
{
    ts__buf b, tmp, cur, bname;
    ts__json_doc doc;
    ts__json *root = NULL;
    const ts__json *e;
    ts__mig_scan sc;
    char why[TS__MIG_REASON];
    int problems = 0;
    ts_result r;
    ts__buf_init(&b, &s->env.alloc);
    ts__buf_init(&tmp, &s->env.alloc);
    ts__buf_init(&cur, &s->env.alloc);
    ts__buf_init(&bname, &s->env.alloc);
    ts__json_doc_init(&doc, &s->env.alloc);
    memset(&sc, 0, sizeof sc);
    r = ts__mig_point_load(s, name, &b, &doc, &root);
    if (r == TS_OK) r = ts__mig_scan_dir(s, &sc);
    for (e = ts__json_first(ts__json_get(root, "sessions")); e && r == TS_OK; e = e->next) {
        size_t idn = 0, pn = 0, hn = 0;
        const char *id = ts__json_get_str(e, "id", &idn), *path = ts__json_get_str(e, "path", &pn);
        const char *sha = ts__json_get_str(e, "sha256", &hn);
        char lpath[TS_SESSION_ID_MAX + 32], idc[TS_SESSION_ID_MAX + 1];
        ts_result one = TS_OK;
        ts_migrate_outcome oc = TS_MIGRATE_SKIPPED;
        why[0] = 0;
        if (!id || !path || !sha || hn != 64 || !ts__valid_id(id, idn)) {
            r = TS__FAIL(&s->env, TS_E_CORRUPT, "rollback point %s: malformed session entry", name);
            break;
        }
        memcpy(idc, id, idn);
        idc[idn] = 0;
        snprintf(lpath, sizeof lpath, TS__MIG_LEGACY_DIR "/%s.json", idc);
        rep->candidates++;
        if (ts__mig_read(s, lpath, &cur) == TS_OK) {
            char hex[65];
            ts__mig_sha_hex(cur.data, cur.len, hex);
            if (memcmp(hex, sha, 64) == 0) {
                r = ts__mig_item(rep, lpath, TS_MIGRATE_SKIPPED, TS_OK, "", 0, 0);
                continue;
            }
            if (!restore || !(flags & TS_MIGRATE_FORCE)) {
                if (!ts__mig_find_backup(s, &sc, idc, sha, &tmp, &bname)) {
                    one = TS_E_CORRUPT;
                    snprintf(why, sizeof why, "%s changed since the point and no backup holds the recorded bytes", lpath);
                } else if (restore) {
                    one = TS_E_EXISTS;
                    snprintf(why, sizeof why, "%s changed since the point (use force to restore it)", lpath);
                }
            }
        }
        if (!why[0] && one == TS_OK) {
            if (!ts__mig_find_backup(s, &sc, idc, sha, &tmp, &bname)) {
                one = TS_E_NOTFOUND;
                snprintf(why, sizeof why, "%s: no backup of session %s holds the recorded bytes (sha256 %.16s...)",
                         lpath, idc, sha);
            } else if (restore) {
                one = ts__mig_rollback_one(s, idc, (const char *)bname.data, flags | TS_MIGRATE_FORCE, why, sizeof why);
                oc = TS_MIGRATE_MIGRATED;
            }
        }
        if (one != TS_OK) { oc = TS_MIGRATE_FAILED; problems++; }
        r = ts__mig_item(rep, lpath, oc, one, oc == TS_MIGRATE_FAILED ? why : "", 0, 0);
    }
    for (e = ts__json_first(ts__json_get(root, "attachments")); e && r == TS_OK; e = e->next) {
        size_t pn = 0, hn = 0;
        const char *path = ts__json_get_str(e, "path", &pn), *sha = ts__json_get_str(e, "sha256", &hn);
        char pc[TS_SESSION_ID_MAX + 32], hex[65];
        ts_result one;
        if (!path || !sha || hn != 64 || pn >= sizeof pc || !ts__valid_rel_path(path, pn)) {
            r = TS__FAIL(&s->env, TS_E_CORRUPT, "rollback point %s: malformed attachment entry", name);
            break;
        }
        memcpy(pc, path, pn);
        pc[pn] = 0;
        rep->candidates++;
        one = ts__mig_read(s, pc, &cur);
        why[0] = 0;
        if (one == TS_OK) {
            ts__mig_sha_hex(cur.data, cur.len, hex);
            if (memcmp(hex, sha, 64) != 0) {
                one = TS_E_CORRUPT;
                snprintf(why, sizeof why, "%s changed since the point (checksum mismatch)", pc);
            }
        } else {
            snprintf(why, sizeof why, "%s: %s", pc, one == TS_E_NOTFOUND ? "missing" : ts_result_str(one));
        }
        if (one != TS_OK) problems++;
        r = ts__mig_item(rep, pc, one == TS_OK ? TS_MIGRATE_SKIPPED : TS_MIGRATE_FAILED, one, why, 0, 0);
    }
    ts__mig_scan_free(&sc);
    ts__json_doc_free(&doc);
    ts__buf_free(&b);
    ts__buf_free(&tmp);
    ts__buf_free(&cur);
    ts__buf_free(&bname);
    if (r == TS_OK && problems)
        r = TS__FAIL(&s->env, TS_E_CORRUPT, "rollback point %s: %d problem(s)", name, problems);
    return r;
}

TASKSTORE_DEF ts_result ts_migrate_point_verify(ts_store *s, const char *name, ts_migrate_report *report)
{
    ts_migrate_report local;
    ts_migrate_report *rep = report ? report : &local;
    ts_result r;
    ts__mig_report_init(rep, s ? &s->env.alloc : NULL);
    if (!s) return TS_E_INVALID;
    r = ts__mig_point_walk(s, name, 0, 0, rep);
    if (!report) ts_migrate_report_free(&local);
    return r;
}

TASKSTORE_DEF ts_result ts_migrate_point_restore(ts_store *s, const char *name, unsigned flags,
                                                 ts_migrate_report *report)
{
    ts_migrate_report local;
    ts_migrate_report *rep = report ? report : &local;
    ts_result r;
    ts__mig_report_init(rep, s ? &s->env.alloc : NULL);
    if (!s) return TS_E_INVALID;
    if (s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "rollback point: store is read-only");
    r = ts__mig_point_walk(s, name, 1, flags, rep);
    if (!report) ts_migrate_report_free(&local);
    return r;
}

/* ---- verification of migrated data -------------------------------------------------------- */

typedef struct ts__mig_vctx {
    ts_migrate_report *rep;
    int problems;
} ts__mig_vctx;

TS__PRIVATE void ts__mig_vproblem(void *user, const char *hash, ts_result code, const char *message)
{
    ts__mig_vctx *v = (ts__mig_vctx *)user;
    v->problems++;
    ts__mig_item(v->rep, hash ? hash : "attachments-ca", TS_MIGRATE_FAILED, code, message, 0, 0);
}

TASKSTORE_DEF ts_result ts_migrate_verify(ts_store *s, int repair, ts_migrate_report *report)
{
    ts_migrate_report local;
    ts_migrate_report *rep = report ? report : &local;
    ts__mig_vctx vc;
    ts__map refs, counts, checked;
    ts__mig_sv ids;
    size_t i, pos;
    const ts__map_slot *sl;
    char why[TS__MIG_REASON];
    ts_result r;
    ts__mig_report_init(rep, s ? &s->env.alloc : NULL);
    if (!s) return TS_E_INVALID;
    if (repair && s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "verify: store is read-only");
    if (!s->cas) return TS__FAIL(&s->env, TS_E_STATE, "verify: no attachment store");
    vc.rep = rep;
    vc.problems = 0;
    ts__map_init(&refs, &s->env.alloc);
    ts__map_init(&counts, &s->env.alloc);
    ts__map_init(&checked, &s->env.alloc);
    ts__mig_sv_init(&ids, &s->env.alloc);
    if ((r = ts_store_flush(s)) != TS_OK) goto done;
    if ((r = ts__dir_build(s)) != TS_OK) goto done;
    for (i = 0; i < s->dir_count && r == TS_OK; i++)
        if (s->dir[i].meta) r = ts__mig_sv_push(&ids, s->dir[i].id, s->dir[i].id_len);
    ts__mig_sv_sort(&ids);
    /* 1. every session reads back whole; every hash its records name is in
          the CA store and hashes to its name */
    for (i = 0; i < ids.n && r == TS_OK; i++) {
        const char *id = ids.v[i];
        ts_blob b;
        ts__span obj, arr, rec;
        ts__js_iter it;
        uint64_t j = 0;
        rep->candidates++;
        if (s->lru) ts_lru_invalidate_session(s->lru, id, strlen(id), NULL);
        if (ts_session_load(s, id, &b) != TS_OK) {
            snprintf(why, sizeof why, "session %s: %s", id, s->env.last.message);
            vc.problems++;
            r = ts__mig_item(rep, id, TS_MIGRATE_FAILED, TS_E_CORRUPT, why, 0, 0);
            continue;
        }
        obj = ts__js_trim((const char *)b.data, b.len);
        if (ts__js_get(obj, "screenshots", &arr) && ts__js_iter_begin(&it, arr, '[')) {
            while (r == TS_OK && ts__js_iter_next(&it, NULL, &rec) == TS_OK) {
                char key[64 + TS_SESSION_ID_MAX * 2 + 8], hex[65];
                uint64_t cnt = 0;
                int k;
                if (rec.p[0] != '{' || !ts__record_ref(rec, "screenshots", j, key, sizeof key)) { j++; continue; }
                j++;
                memcpy(hex, key, 64);
                hex[64] = 0;
                if (!ts__map_get(&checked, hex, 64, NULL)) {
                    ts_result vr = ts_cas_verify(s->cas, hex);
                    r = ts__map_put(&checked, hex, 64, vr == TS_OK);
                    if (vr != TS_OK && r == TS_OK) {
                        ts_error_info ei;
                        ts_cas_last_error(s->cas, &ei);
                        snprintf(why, sizeof why, "session %s: screenshots[%llu].attachmentHash %s: %s", id,
                                 (unsigned long long)(j - 1), hex, ei.message);
                        vc.problems++;
                        r = ts__mig_item(rep, id, TS_MIGRATE_FAILED, vr, why, 0, 0);
                    }
                }
                /* the exact reference: hash:attachmentId:session */
                k = (int)strlen(key);
                if (r == TS_OK && (size_t)k + strlen(id) + 2 < sizeof key) {
                    snprintf(key + k, sizeof key - (size_t)k, ":%s", id);
                    if (!ts__map_get(&refs, key, strlen(key), NULL)) {
                        r = ts__map_put(&refs, key, strlen(key), 0);
                        ts__map_get(&counts, hex, 64, &cnt);
                        if (r == TS_OK) r = ts__map_put(&counts, hex, 64, cnt + 1);
                    }
                }
            }
        }
        ts_blob_free(&b);
    }
    if (r != TS_OK) goto done;
    /* 2. reference counts */
    if (repair) {
        if ((r = ts_cas_repair_begin(s->cas)) != TS_OK) goto done;
        pos = 0;
        while (r == TS_OK && (sl = ts__map_next(&refs, &pos)) != NULL) {
            /* key: hash:attachmentId:session */
            char k[64 + TS_SESSION_ID_MAX * 2 + 8], *aid, *sid;
            ts_cas_ref ref;
            memcpy(k, sl->key, sl->key_len + 1);
            k[64] = 0;
            aid = k + 65;
            sid = strrchr(aid, ':');
            if (!sid) continue;
            *sid++ = 0;
            ref.session_id = sid;
            ref.attachment_id = aid;
            ref.added_at_ms = 0;
            r = ts_cas_repair_add(s->cas, k, &ref);
        }
        if (r == TS_OK) r = ts_cas_repair_finish(s->cas, s->now_ms, ts__mig_vproblem, &vc, NULL);
        if (r == TS_OK) r = ts_store_flush(s);
        if (r != TS_OK) goto done;
    } else {
        pos = 0;
        while (r == TS_OK && (sl = ts__map_next(&counts, &pos)) != NULL) {
            uint64_t rc = 0;
            char hex[65];
            memcpy(hex, sl->key, 64);
            hex[64] = 0;
            if (ts_cas_ref_count(s->cas, hex, &rc) != TS_OK) continue; /* reported above */
            if (rc != sl->value) {
                snprintf(why, sizeof why, "attachment %s: refCount %llu, but sessions reference it %llu time(s)",
                         hex, (unsigned long long)rc, (unsigned long long)sl->value);
                vc.problems++;
                r = ts__mig_item(rep, hex, TS_MIGRATE_FAILED, TS_E_CORRUPT, why, 0, 0);
            }
        }
    }
    /* 3. every object in the CA store */
    if (r == TS_OK) {
        ts_result vr = ts_cas_verify_all(s->cas, ts__mig_vproblem, &vc, NULL);
        if (vr != TS_OK && vr != TS_E_CORRUPT) r = vr;
    }
    /* 4. the index */
    if (r == TS_OK && s->index) {
        ts_index_verify_report ir;
        ts_index_stats st;
        int bad = 0;
        /* not built yet (an unclean close): derived data, built on demand */
        if (!s->index_valid) r = ts__index_rebuild(s);
        if (r == TS_OK && ts_index_verify(s->index, 0, &ir) != TS_OK) bad = 1;
        if (r == TS_OK && ts_index_stats_get(s->index, &st) == TS_OK && st.sessions != ids.n) bad = 2;
        for (i = 0; i < ids.n && r == TS_OK && !bad; i++)
            if (!ts_index_contains(s->index, ids.v[i], strlen(ids.v[i]))) bad = 3;
        if (bad && repair) {
            r = ts__index_rebuild(s);
        } else if (bad) {
            snprintf(why, sizeof why, "index: %s", bad == 1 ? ir.first_problem :
                     bad == 2 ? "session count differs from the sessions in the store" :
                                "a session is missing from the index");
            vc.problems++;
            r = ts__mig_item(rep, "session-indexes", TS_MIGRATE_FAILED, TS_E_CORRUPT, why, 0, 0);
        }
    }
done:
    ts__map_free(&refs);
    ts__map_free(&counts);
    ts__map_free(&checked);
    ts__mig_sv_free(&ids);
    if (!report) ts_migrate_report_free(&local);
    if (r == TS_OK && vc.problems) r = TS_E_CORRUPT;
    return r;
}

/* ---- background migration --------------------------------------------------------------------
   migration/progress.json (replaced durably after every batch):
     {"version":1,"state":"running"|"paused","steps":N,"noBackup":b,"batchSize":N,
      "startedAt":T,"updatedAt":T,"total":N,"done":N,"failed":[{"id","reason"}]}
   The sessions left are always recomputed from sessions/ (the truth), so the
   file only carries what the disk cannot say: the totals, the failures not
   to retry, the state. */

enum { TS__MIGR_RUNNING = 0, TS__MIGR_PAUSED = 1, TS__MIGR_CANCELLED = 2, TS__MIGR_DONE = 3 };

struct ts_migrator {
    ts_store *s;
    ts__mig c;
    ts_migrate_report rep;
    ts__mig_sv ids;             /* copy of opts.ids */
    ts__mig_sv failed_ids, failed_why;
    ts__map failed;             /* id -> 1 */
    uint32_t job_id;
    int job, state, started, finalized;
    uint64_t started_at, total;
};

TS__PRIVATE ts_result ts__migr_persist(ts_migrator *m, uint64_t now)
{
    ts__buf b;
    ts__jw w;
    size_t i;
    ts_result r;
    ts__buf_init(&b, &m->s->env.alloc);
    ts__jw_init(&w, &b);
    ts__jw_begin_object(&w);
    ts__jw_key(&w, "version"); ts__jw_int(&w, 1);
    ts__jw_key(&w, "state");
    ts__jw_string(&w, m->state == TS__MIGR_PAUSED ? "paused" : "running", m->state == TS__MIGR_PAUSED ? 6u : 7u);
    ts__jw_key(&w, "steps"); ts__jw_int(&w, (int64_t)m->c.steps);
    ts__jw_key(&w, "noBackup"); ts__jw_bool(&w, m->c.opt.no_backup);
    ts__jw_key(&w, "batchSize"); ts__jw_int(&w, (int64_t)m->c.opt.batch_size);
    ts__jw_key(&w, "startedAt"); ts__jw_int(&w, (int64_t)m->started_at);
    ts__jw_key(&w, "updatedAt"); ts__jw_int(&w, (int64_t)now);
    ts__jw_key(&w, "total"); ts__jw_int(&w, (int64_t)m->total);
    ts__jw_key(&w, "done"); ts__jw_int(&w, (int64_t)m->c.done);
    ts__jw_key(&w, "failed");
    ts__jw_begin_array(&w);
    for (i = 0; i < m->failed_ids.n; i++) {
        ts__jw_begin_object(&w);
        ts__jw_key(&w, "id"); ts__jw_string(&w, m->failed_ids.v[i], strlen(m->failed_ids.v[i]));
        ts__jw_key(&w, "reason"); ts__jw_string(&w, m->failed_why.v[i], strlen(m->failed_why.v[i]));
        ts__jw_end_object(&w);
    }
    ts__jw_end_array(&w);
    ts__jw_end_object(&w);
    r = ts__jw_finish(&w);
    if (r == TS_OK) r = ts__mig_write(m->s, TS__MIG_PROGRESS, b.data, b.len);
    ts__buf_free(&b);
    return r;
}

TS__PRIVATE ts_result ts__migr_fail_add(ts_migrator *m, const char *id, const char *why)
{
    ts_result r;
    if (ts__map_get(&m->failed, id, strlen(id), NULL)) return TS_OK;
    if ((r = ts__mig_sv_push(&m->failed_ids, id, strlen(id))) != TS_OK) return r;
    if ((r = ts__mig_sv_push(&m->failed_why, why, strlen(why))) != TS_OK) {
        m->failed_ids.n--;
        ts__free(m->failed_ids.a, m->failed_ids.v[m->failed_ids.n], strlen(id) + 1);
        return r;
    }
    return ts__map_put(&m->failed, id, strlen(id), 1);
}

/* Loads a persisted run; 1 if one was resumed. */
TS__PRIVATE int ts__migr_resume(ts_migrator *m, int keep_failures, int use_file_opts)
{
    ts__buf b;
    ts__json_doc doc;
    ts__json *root = NULL;
    const ts__json *x;
    size_t n = 0;
    const char *st;
    int64_t v;
    int ok = 0;
    ts__buf_init(&b, &m->s->env.alloc);
    ts__json_doc_init(&doc, &m->s->env.alloc);
    if (ts__mig_read(m->s, TS__MIG_PROGRESS, &b) != TS_OK) goto done;
    if (ts__json_parse(&doc, (const char *)b.data, b.len, &root, NULL, TS__MIG_PROGRESS) != TS_OK) {
        ts__log(&m->s->env, TS_LOG_WARN, TS_E_CORRUPT, __LINE__, TS__MIG_PROGRESS " unreadable: starting over");
        goto done;
    }
    st = ts__json_get_str(root, "state", &n);
    if (!st || !((n == 7 && memcmp(st, "running", 7) == 0) || (n == 6 && memcmp(st, "paused", 6) == 0)))
        goto done;
    m->state = st[0] == 'p' ? TS__MIGR_PAUSED : TS__MIGR_RUNNING;
    if (ts__json_get_int(root, "total", &v) && v >= 0) m->total = (uint64_t)v;
    if (ts__json_get_int(root, "startedAt", &v) && v >= 0) m->started_at = (uint64_t)v;
    if (use_file_opts) {
        int bo = 0;
        if (ts__json_get_int(root, "steps", &v) && v > 0 && v < 16) m->c.steps = (unsigned)v;
        if (ts__json_bool(ts__json_get(root, "noBackup"), &bo)) m->c.opt.no_backup = bo;
        if (ts__json_get_int(root, "batchSize", &v) && v > 0 && v < 1000000) m->c.opt.batch_size = (uint32_t)v;
    }
    if (keep_failures) {
        for (x = ts__json_first(ts__json_get(root, "failed")); x; x = x->next) {
            size_t il = 0, rl = 0;
            const char *id = ts__json_get_str(x, "id", &il), *why = ts__json_get_str(x, "reason", &rl);
            char idc[TS_SESSION_ID_MAX + 1];
            if (!id || !ts__valid_id(id, il)) continue;
            memcpy(idc, id, il);
            idc[il] = 0;
            if (ts__migr_fail_add(m, idc, why ? why : "") != TS_OK) break;
        }
    }
    ok = 1;
done:
    ts__json_doc_free(&doc);
    ts__buf_free(&b);
    return ok;
}

/* The legacy sessions still to do. */
TS__PRIVATE ts_result ts__migr_pending(ts_migrator *m, ts__mig_scan *sc, ts__mig_sv *out)
{
    size_t i;
    ts_result r = TS_OK;
    ts__mig_sv_init(out, &m->s->env.alloc);
    for (i = 0; i < sc->legacy.n && r == TS_OK; i++) {
        const char *id = sc->legacy.v[i];
        if (!ts__mig_wanted(&m->c, id) || ts__map_get(&m->failed, id, strlen(id), NULL)) continue;
        r = ts__mig_sv_push(out, id, strlen(id));
    }
    return r;
}

TS__PRIVATE void ts__migr_unregister(ts_migrator *m)
{
    if (m->job && m->s->queue) ts_queue_remove_idle_job(m->s->queue, m->job_id);
    m->job = 0;
}

TS__PRIVATE ts_result ts__migr_idle_job(void *user, uint64_t now_ms, uint64_t budget_us)
{
    ts_migrator *m = (ts_migrator *)user;
    ts_result r = ts_migrator_step(m, now_ms, budget_us);
    if (r == TS_E_CANCELLED) return TS_DONE;
    return r;
}

TASKSTORE_DEF ts_result ts_migrator_start(ts_store *s, const ts_migrate_options *opts, ts_migrator **out)
{
    ts_migrator *m;
    ts__mig_scan sc;
    ts__mig_sv pend;
    size_t i;
    int resumed;
    ts_result r;
    if (out) *out = NULL;
    if (!s || !out) return TS_E_INVALID;
    if (s->read_only) return TS__FAIL(&s->env, TS_E_READONLY, "migrate: store is read-only");
    if (!s->cas || !s->queue) return TS__FAIL(&s->env, TS_E_STATE, "migrate: store not fully open");
    if (opts && opts->dry_run) return TS__FAIL(&s->env, TS_E_INVALID, "migrate: a background run cannot be a dry run");
    m = (ts_migrator *)ts__calloc(&s->env.alloc, 1, sizeof *m);
    if (!m) return TS_E_NOMEM;
    m->s = s;
    ts__mig_report_init(&m->rep, &s->env.alloc);
    ts__mig_init(&m->c, s, opts, &m->rep);
    m->c.background = 1;
    ts__mig_sv_init(&m->ids, &s->env.alloc);
    ts__mig_sv_init(&m->failed_ids, &s->env.alloc);
    ts__mig_sv_init(&m->failed_why, &s->env.alloc);
    ts__map_init(&m->failed, &s->env.alloc);
    r = TS_OK;
    if (opts && opts->ids) {
        for (i = 0; i < opts->id_count && r == TS_OK; i++)
            if (opts->ids[i]) r = ts__mig_sv_push(&m->ids, opts->ids[i], strlen(opts->ids[i]));
        m->c.opt.ids = (const char *const *)m->ids.v;
        m->c.opt.id_count = m->ids.n;
    }
    if (!(m->c.steps & TS_MIGRATE_STEP_CHUNKED)) m->c.steps |= TS_MIGRATE_STEP_CHUNKED | TS_MIGRATE_STEP_CA;
    m->c.rep->steps = m->c.steps;
    resumed = r == TS_OK && ts__migr_resume(m, !(opts && opts->retry_failed), opts == NULL);
    memset(&sc, 0, sizeof sc);
    if (r == TS_OK) r = ts__mig_scan_dir(s, &sc);
    if (r == TS_OK) r = ts__migr_pending(m, &sc, &pend); else ts__mig_sv_init(&pend, &s->env.alloc);
    if (r == TS_OK) {
        if (!resumed) {
            m->started_at = m->c.now;
            m->total = pend.n;
            m->state = TS__MIGR_RUNNING;
        }
        if (m->total < pend.n + m->failed_ids.n) m->total = pend.n + m->failed_ids.n;
        m->c.total = m->total;
        m->c.done = m->total - pend.n;
        if (!resumed && pend.n) r = ts__migr_persist(m, m->c.now);
        else if (resumed) m->c.rep->failed = m->failed_ids.n;
    }
    ts__mig_sv_free(&pend);
    ts__mig_scan_free(&sc);
    if (r == TS_OK) {
        r = ts_queue_add_idle_job(s->queue, "migrate", ts__migr_idle_job, m, &m->job_id);
        if (r == TS_OK) m->job = 1;
    }
    if (r != TS_OK) {
        ts_migrator_destroy(m);
        return TS__FAIL(&s->env, r, "migrate: cannot start the background migration");
    }
    *out = m;
    return TS_OK;
}

/* Last phase: index (and compress) once every session is through. */
TS__PRIVATE ts_result ts__migr_finish(ts_migrator *m)
{
    ts_result r = TS_OK;
    uint64_t live = 0;
    size_t i;
    ts__mig *c = &m->c;
    if (c->steps & (TS_MIGRATE_STEP_INDEX | TS_MIGRATE_STEP_COMPRESS)) {
        if ((r = ts__dir_build(m->s)) != TS_OK) return r;
        for (i = 0; i < m->s->dir_count; i++) if (m->s->dir[i].meta) live++;
    }
    if ((c->steps & TS_MIGRATE_STEP_INDEX) && (r = ts__mig_step_index(c, live)) != TS_OK) return r;
    if ((c->steps & TS_MIGRATE_STEP_COMPRESS) && (r = ts__mig_step_compress(c)) != TS_OK) return r;
    /* the run is over: nothing to resume */
    if ((r = ts__mig_unlink(m->s, TS__MIG_PROGRESS, TS__MIG_DIR)) != TS_OK) return r;
    m->finalized = 1;
    m->state = TS__MIGR_DONE;
    c->step = "done";
    ts__mig_progress(c, NULL, TS_MIGRATE_MIGRATED, TS_OK, "", 1);
    return TS_OK;
}

TASKSTORE_DEF ts_result ts_migrator_step(ts_migrator *m, uint64_t now_ms, uint64_t budget_us)
{
    ts__mig *c;
    ts__mig_scan sc;
    ts__mig_sv pend;
    ts__mig_out o;
    size_t i;
    uint64_t t_start;
    ts_result r;
    if (!m) return TS_E_INVALID;
    c = &m->c;
    if (m->state == TS__MIGR_CANCELLED) return TS_E_CANCELLED;
    if (m->state == TS__MIGR_DONE) { ts__migr_unregister(m); return TS_DONE; }
    if (m->state == TS__MIGR_PAUSED) return TS_DONE;
    if (now_ms > c->bg_now) c->bg_now = now_ms;
    if (!c->opt.now_ms) c->now = c->bg_now > m->s->now_ms ? c->bg_now : m->s->now_ms;
    c->fatal = TS_OK;
    c->step = "chunked";
    if ((r = ts__mig_scan_dir(m->s, &sc)) != TS_OK) { ts__mig_scan_free(&sc); return r; }
    if ((r = ts__migr_pending(m, &sc, &pend)) != TS_OK) goto out;
    if (m->total < pend.n + m->failed_ids.n) m->total = pend.n + m->failed_ids.n;
    c->total = m->total;
    c->done = m->total - pend.n;
    if (!m->started) {
        m->started = 1;
        c->t0 = (int64_t)c->bg_now;
        c->done0 = c->done;
    }
    if (!pend.n) {
        r = ts__migr_finish(m);
        if (r == TS_OK) { ts__migr_unregister(m); r = TS_DONE; }
        goto out;
    }
    t_start = m->s->queue && m->s->queue->clock_fn ? ts__queue_clock(m->s->queue) : 0;
    for (i = 0; i < pend.n && i < c->opt.batch_size && !c->cancelled; i++) {
        const char *id = pend.v[i];
        ts_result one;
        if (i && budget_us && m->s->queue && m->s->queue->clock_fn &&
            ts__queue_clock(m->s->queue) - t_start >= budget_us)
            break;
        one = ts__mig_legacy_one(c, &sc, id, &o);
        if (c->fatal) { r = c->fatal; goto out; }
        if (one != TS_OK && one != TS_DONE && (r = ts__migr_fail_add(m, id, c->reason)) != TS_OK) goto out;
        if ((r = ts__mig_record(c, id, one, &o)) != TS_OK) goto out;
    }
    if (c->cancelled) {
        ts_migrator_cancel(m);
        r = TS_E_CANCELLED;
        goto out;
    }
    r = ts__migr_persist(m, c->bg_now);
    if (r != TS_OK) goto out;
    r = TS_OK;
out:
    ts__mig_sv_free(&pend);
    ts__mig_scan_free(&sc);
    return r;
}

TASKSTORE_DEF ts_result ts_migrator_pause(ts_migrator *m)
{
    if (!m) return TS_E_INVALID;
    if (m->state != TS__MIGR_RUNNING) return m->state == TS__MIGR_PAUSED ? TS_OK : TS_E_STATE;
    m->state = TS__MIGR_PAUSED;
    m->c.paused = 1;
    return ts__migr_persist(m, m->c.bg_now ? m->c.bg_now : m->c.now);
}

TASKSTORE_DEF ts_result ts_migrator_resume(ts_migrator *m)
{
    if (!m) return TS_E_INVALID;
    if (m->state != TS__MIGR_PAUSED) return m->state == TS__MIGR_RUNNING ? TS_OK : TS_E_STATE;
    m->state = TS__MIGR_RUNNING;
    m->c.paused = 0;
    return ts__migr_persist(m, m->c.bg_now ? m->c.bg_now : m->c.now);
}

TASKSTORE_DEF ts_result ts_migrator_cancel(ts_migrator *m)
{
    if (!m) return TS_E_INVALID;
    if (m->state == TS__MIGR_CANCELLED || m->state == TS__MIGR_DONE) return TS_OK;
    m->state = TS__MIGR_CANCELLED;
    ts__migr_unregister(m);
    return ts__mig_unlink(m->s, TS__MIG_PROGRESS, TS__MIG_DIR);
}

TASKSTORE_DEF ts_result ts_migrator_progress(const ts_migrator *m, ts_migrate_progress *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!m || !out) return TS_E_INVALID;
    ts__mig_fill_progress((ts__mig *)(uintptr_t)&m->c, out);
    out->finished = m->state == TS__MIGR_DONE;
    out->paused = m->state == TS__MIGR_PAUSED;
    return TS_OK;
}

TASKSTORE_DEF const ts_migrate_report *ts_migrator_report(const ts_migrator *m)
{
    return m ? &m->rep : NULL;
}

TASKSTORE_DEF void ts_migrator_destroy(ts_migrator *m)
{
    ts_allocator a;
    if (!m) return;
    a = m->s->env.alloc;
    ts__migr_unregister(m);
    ts__mig_free(&m->c);
    ts_migrate_report_free(&m->rep);
    ts__mig_sv_free(&m->ids);
    ts__mig_sv_free(&m->failed_ids);
    ts__mig_sv_free(&m->failed_why);
    ts__map_free(&m->failed);
    ts__free(&a, m, sizeof *m);
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
