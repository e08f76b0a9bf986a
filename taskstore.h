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
