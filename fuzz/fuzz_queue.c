/* fuzz/fuzz_queue.c: the persistence queue, driven by operation sequences
 * over the in-memory vtable behind the fault-injecting wrapper.
 *
 * The input is a list of 4-byte operations (push, delete, tick, idle, flush,
 * fault plans, retry/drop of failed items, reserve, clear, power loss). A
 * model keeps the last value queued for each of 6 paths; abort() when:
 *   - the overlay disagrees with the model (a queued write not read back, a
 *     queued delete not absent), or a path the queue no longer holds is not
 *     on disk as the model says;
 *   - a flush without injected faults fails or leaves items behind;
 *   - after a power loss a file holds bytes never queued for it (torn);
 *   - at the end (faults off, failed items retried, flush) the disk is not
 *     the model.
 * Paths whose fate the app gave up on (dropped, cleared, lost in a crash)
 * are unknown until queued again.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. fuzz/fuzz_queue.c -o build/fuzz_queue
 *   build/fuzz_queue fuzz/corpus/queue
 * without libFuzzer:
 *   clang -g -O1 -fsanitize=address,undefined -I. fuzz/fuzz_queue.c fuzz/replay_main.c -o build/replay_queue
 *   build/replay_queue fuzz/corpus/queue
 */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdio.h>
#include <stdlib.h>

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "fuzz_queue: check failed: %s (line %d)\n", #x, __LINE__); abort(); } } while (0)

#define NPATHS 6
static const char *const fq_paths[NPATHS] = {
    "s/metadata.json", "s/shots/chunk-000.json", "s/shots/chunk-001.json",
    "a/0/data.bin", "a/0/meta.json", "index.bin"
};

typedef struct fq_model {
    int known[NPATHS];     /* the model is trusted for this path */
    int present[NPATHS];   /* last queued op was a write */
    unsigned val[NPATHS];  /* its value number */
    unsigned next_val;
} fq_model;

typedef struct fq {
    ts_io_mem *mem;
    ts_io mem_io, io;
    ts_io_fault *fault;
    ts_queue *q;
    ts_queue_config cfg;
    int faults_on;
    uint64_t now;
    fq_model m;
} fq;

static void fq_value(int p, unsigned v, char *out, size_t cap)
{
    snprintf(out, cap, "p%dv%u", p, v);
}

/* The file's value number, -1 if absent; aborts on bytes never queued. */
static long fq_disk(fq *f, int p)
{
    char buf[64], again[64];
    size_t n = 0;
    unsigned v = 0;
    int used = 0, pi = -1;
    ts_result r = f->mem_io.read_file_fn(f->mem_io.user, fq_paths[p], buf, sizeof buf - 1, &n);
    if (r == TS_E_NOTFOUND) return -1;
    CHECK(r == TS_OK && n < sizeof buf);
    buf[n] = 0;
    CHECK(sscanf(buf, "p%dv%u%n", &pi, &v, &used) == 2 && (size_t)used == n && pi == p);
    fq_value(p, v, again, sizeof again);
    CHECK(strcmp(again, buf) == 0 && v < f->m.next_val);
    return (long)v;
}

static void fq_check_path(fq *f, int p)
{
    const void *d;
    size_t n;
    char want[32];
    ts_result r = ts_queue_lookup(f->q, fq_paths[p], &d, &n);
    long disk;
    CHECK(r == TS_OK || r == TS_E_NOTFOUND || r == TS_DONE);
    if (r == TS_DONE) {
        disk = fq_disk(f, p); /* nothing queued: the disk holds the truth */
        if (f->m.known[p]) CHECK(f->m.present[p] ? disk == (long)f->m.val[p] : disk == -1);
        return;
    }
    if (!f->m.known[p]) return;
    if (!f->m.present[p]) { CHECK(r == TS_E_NOTFOUND); return; }
    fq_value(p, f->m.val[p], want, sizeof want);
    CHECK(r == TS_OK && n == strlen(want) && memcmp(d, want, n) == 0);
}

static void fq_check_all(fq *f)
{
    int p;
    for (p = 0; p < NPATHS; p++) fq_check_path(f, p);
}

static void fq_forget(fq *f, uint64_t id)
{
    size_t i;
    ts_queue_item_info info;
    for (i = 0; ts_queue_failed_get(f->q, i, &info) == TS_OK; i++) {
        int p;
        if (info.id != id) continue;
        for (p = 0; p < NPATHS; p++)
            if (!strcmp(info.path, fq_paths[p])) f->m.known[p] = 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fq f;
    size_t i;
    int p;
    if (size < 1 || size > 4096) return 0;
    memset(&f, 0, sizeof f);
    if (ts_io_mem_create(NULL, &f.mem) != TS_OK) return 0;
    ts_io_mem_vtable(f.mem, &f.mem_io);
    if (ts_io_fault_create(&f.mem_io, NULL, &f.fault) != TS_OK) { ts_io_mem_destroy(f.mem); return 0; }
    ts_io_fault_vtable(f.fault, &f.io);
    f.cfg.capacity[0] = 1 + (data[0] & 3);
    f.cfg.capacity[1] = 1 + ((data[0] >> 2) & 3);
    f.cfg.capacity[2] = 1 + ((data[0] >> 4) & 3);
    f.cfg.busy_error = (data[0] >> 6) & 1;
    f.cfg.batch_window_ms = 50;
    CHECK(ts_queue_open(&f.io, &f.cfg, &f.q) == TS_OK);
    for (p = 0; p < NPATHS; p++) f.m.known[p] = 1;
    for (i = 1; i + 4 <= size; i += 4) {
        unsigned op = data[i] % 12, a = data[i + 1], b = data[i + 2], c = data[i + 3];
        int pa = (int)(a % NPATHS);
        const char *after = (b & 7) < NPATHS ? fq_paths[b & 7] : NULL;
        ts_queue_priority prio = (ts_queue_priority)(c % 3);
        ts_result r;
        switch (op) {
        case 0: case 1: case 2: case 3: { /* write */
            char v[32];
            unsigned val = f.m.next_val++;
            fq_value(pa, val, v, sizeof v);
            r = ts_queue_push(f.q, fq_paths[pa], v, strlen(v), prio, after, NULL);
            /* a full ring flushes synchronously; when that flush fails the
               push says why (unless the queue asked for TS_E_BUSY) */
            CHECK(r == TS_OK || r == TS_E_BUSY ||
                  (!f.cfg.busy_error && (r == TS_E_IO || r == TS_E_NOSPACE)));
            if (r == TS_OK) { f.m.known[pa] = 1; f.m.present[pa] = 1; f.m.val[pa] = val; }
            break;
        }
        case 4: /* delete */
            r = ts_queue_delete(f.q, fq_paths[pa], prio, after, NULL);
            CHECK(r == TS_OK || r == TS_E_BUSY ||
                  (!f.cfg.busy_error && (r == TS_E_IO || r == TS_E_NOSPACE)));
            if (r == TS_OK) { f.m.known[pa] = 1; f.m.present[pa] = 0; }
            break;
        case 5: /* tick */
            f.now += a;
            r = ts_queue_tick(f.q, f.now, (uint64_t)b * 100);
            CHECK(r == TS_OK || r == TS_E_IO || r == TS_E_NOSPACE);
            break;
        case 6: /* idle */
            f.now += a;
            r = ts_queue_idle(f.q, f.now, (uint64_t)b * 100);
            CHECK(r == TS_OK || r == TS_DONE || r == TS_E_IO || r == TS_E_NOSPACE);
            break;
        case 7: /* flush */
            r = ts_queue_flush(f.q);
            if (!f.faults_on && !ts_queue_failed_count(f.q)) CHECK(r == TS_OK && ts_queue_count(f.q) == 0);
            if (r == TS_OK) CHECK(ts_queue_count(f.q) == 0);
            break;
        case 8: { /* fault plan */
            ts_fault_plan plan;
            memset(&plan, 0, sizeof plan);
            plan.fail_at = ts_io_fault_ops(f.fault) + 1 + (a & 7);
            plan.fail_count = 1 + (b & 7);
            plan.fail_with = (c & 1) ? TS_E_NOSPACE : TS_E_IO;
            ts_io_fault_set(f.fault, &plan);
            f.faults_on = 1;
            break;
        }
        case 9: { /* the app handles a failed item */
            ts_queue_item_info info;
            ts_io_fault_reset(f.fault);
            f.faults_on = 0;
            if (ts_queue_failed_get(f.q, a % 4, &info) != TS_OK) break;
            if (b & 1) {
                CHECK(ts_queue_failed_retry(f.q, info.id) == TS_OK);
            } else {
                fq_forget(&f, info.id);
                CHECK(ts_queue_failed_drop(f.q, info.id) == TS_OK);
            }
            break;
        }
        case 10: /* grow a ring, or (rarely) clear */
            if (a == 255 && b == 255) {
                CHECK(ts_queue_clear(f.q) == TS_OK);
                for (p = 0; p < NPATHS; p++) f.m.known[p] = 0;
            } else {
                CHECK(ts_queue_reserve(f.q, prio, (uint32_t)(a & 15)) == TS_OK);
            }
            break;
        default: { /* power loss: the process dies, the disk keeps what it must */
            ts_queue_close(f.q);
            ts_io_fault_reset(f.fault);
            f.faults_on = 0;
            ts_io_mem_crash(f.mem, (a & 1) ? TS_CRASH_RANDOM : TS_CRASH_DROP_UNSYNCED, b);
            for (p = 0; p < NPATHS; p++) {
                (void)fq_disk(&f, p);   /* never torn */
                f.m.known[p] = 0;
            }
            CHECK(ts_queue_open(&f.io, &f.cfg, &f.q) == TS_OK);
            break;
        }
        }
        fq_check_all(&f);
    }
    /* the end: the disk is back, the app retries every failure */
    ts_io_fault_reset(f.fault);
    while (ts_queue_failed_count(f.q)) {
        ts_queue_item_info info;
        CHECK(ts_queue_failed_get(f.q, 0, &info) == TS_OK);
        CHECK(ts_queue_failed_retry(f.q, info.id) == TS_OK);
    }
    CHECK(ts_queue_flush(f.q) == TS_OK);
    CHECK(ts_queue_count(f.q) == 0);
    fq_check_all(&f);
    CHECK(ts_queue_shutdown(f.q) == TS_OK);
    ts_io_fault_destroy(f.fault);
    ts_io_mem_destroy(f.mem);
    return 0;
}
