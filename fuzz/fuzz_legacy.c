/* fuzz_legacy: migrating arbitrary bytes as a legacy session and as a
   legacy attachment.

   The input is split at the first 0x01 byte: the bytes before it become
   sessions/f.json (the id the migrator expects is "f"), the bytes after it
   become attachments/a.json. Two fixed sessions reference attachment "a":
   g (one screenshot) and h (two screenshots, a duplicate reference). Then
   a dry run, a real run, status, verify, a rollback point, rollback of
   everything and a second migration run over an in-memory store.
   Oracles: no crash, leak or UB; every call returns a documented code; the
   dry run classifies every session exactly as the real run does; a session
   reported migrated is chunked, its legacy file is gone and its backup
   restores the original bytes exactly; a failed session keeps its legacy
   file byte for byte; rollback brings back every migrated file. */
#define TASKSTORE_MAX_JSON_NODES ((size_t)1 << 14)
#define TASKSTORE_MAX_ATTACHMENT_BYTES ((uint64_t)1 << 20)
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>

static const char fixed_g[] = "{\"id\":\"g\",\"screenshots\":[{\"id\":\"s1\",\"attachmentId\":\"a\"}]}";
static const char fixed_h[] = "{\"id\":\"h\",\"name\":\"x\",\"screenshots\":[{\"id\":\"s1\",\"attachmentId\":\"a\"},"
                              "{\"id\":\"s2\",\"attachmentId\":\"a\",\"activity\":\"\\u00e9\"}]}";

static void check(int cond)
{
    if (!cond) abort();
}

static int allowed(ts_result r)
{
    return r == TS_OK || r == TS_DONE || r == TS_E_CORRUPT || r == TS_E_NOTFOUND ||
           r == TS_E_TOOBIG || r == TS_E_INVALID || r == TS_E_STATE || r == TS_E_EXISTS;
}

static int file_is(const ts_io *io, const char *path, const void *data, size_t len)
{
    size_t size = 0;
    unsigned char *buf = (unsigned char *)malloc(len + 1);
    ts_result r;
    int same;
    if (!buf) return 0;
    r = io->read_file_fn(io->user, path, buf, len + 1, &size);
    same = r == TS_OK && size == len && (len == 0 || memcmp(buf, data, len) == 0);
    free(buf);
    return same;
}

static int exists(const ts_io *io, const char *path)
{
    ts_io_stat st;
    return io->stat_fn(io->user, path, &st) == TS_OK;
}

static const ts_migrate_item *find(const ts_migrate_report *rep, const char *id)
{
    size_t i;
    for (i = 0; i < rep->item_count; i++)
        if (strcmp(rep->items[i].id, id) == 0) return &rep->items[i];
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *sep = (const uint8_t *)memchr(data, 1, size);
    size_t n1 = sep ? (size_t)(sep - data) : size;
    const uint8_t *att = sep ? sep + 1 : (const uint8_t *)"";
    size_t n2 = sep ? size - n1 - 1 : 0;
    ts_io_mem *mem = NULL;
    ts_io io;
    ts_store *s = NULL;
    ts_store_config cfg;
    ts_migrate_options o;
    ts_migrate_report dry, real, rb;
    ts_migrate_status st;
    static const char *const ids[3] = { "f", "g", "h" };
    static const char *const paths[3] = { "sessions/f.json", "sessions/g.json", "sessions/h.json" };
    const void *texts[3];
    size_t lens[3];
    char point[32];
    int k;
    ts_result r;

    if (size > 65536) return 0;
    texts[0] = data; lens[0] = n1;
    texts[1] = fixed_g; lens[1] = sizeof fixed_g - 1;
    texts[2] = fixed_h; lens[2] = sizeof fixed_h - 1;
    if (ts_io_mem_create(NULL, &mem) != TS_OK) return 0;
    ts_io_mem_vtable(mem, &io);
    for (k = 0; k < 3; k++) ts_io_mem_put(mem, paths[k], texts[k], lens[k]);
    ts_io_mem_put(mem, "attachments/a.json", att, n2);
    cfg = ts_store_config_default();
    cfg.io = &io;
    cfg.now_ms = 1000;
    check(ts_store_open("fuzz", &cfg, &s) == TS_OK);

    o = ts_migrate_options_default();
    o.now_ms = 2000;
    o.dry_run = 1;
    r = ts_migrate_run(s, &o, &dry);
    check(r == TS_OK);
    o.dry_run = 0;
    r = ts_migrate_run(s, &o, &real);
    check(r == TS_OK);
    check(dry.migrated == real.migrated && dry.failed == real.failed && dry.skipped == real.skipped);
    for (k = 0; k < 3; k++) {
        const ts_migrate_item *d = find(&dry, ids[k]), *m = find(&real, ids[k]);
        int chunked = 0;
        check(d && m && d->outcome == m->outcome);
        check(allowed(m->code) || m->code == TS_OK);
        check(ts_session_exists(s, ids[k], &chunked) == TS_OK);
        if (m->outcome == TS_MIGRATE_MIGRATED) {
            ts_blob b;
            check(chunked && !exists(&io, paths[k]));
            check(ts_session_load(s, ids[k], &b) == TS_OK);
            ts_blob_free(&b);
        } else {
            check(m->outcome == TS_MIGRATE_FAILED && m->reason[0]);
            check(!chunked && file_is(&io, paths[k], texts[k], lens[k]));
        }
    }
    check(ts_migrate_status_get(s, &st) == TS_OK);
    check(st.total == 3 && st.chunked == real.migrated && st.legacy == real.failed);
    r = ts_migrate_verify(s, 0, NULL);
    check(r == TS_OK);
    r = ts_migrate_point_create(s, 3000, point);
    check(r == TS_OK);
    check(ts_migrate_point_verify(s, point, NULL) == TS_OK);

    /* every migrated session comes back byte for byte */
    r = ts_migrate_rollback_all(s, 0, &rb);
    check(r == TS_OK && rb.failed == 0 && rb.migrated == real.migrated);
    for (k = 0; k < 3; k++) check(file_is(&io, paths[k], texts[k], lens[k]));
    check(ts_migrate_status_get(s, &st) == TS_OK && st.legacy == 3 && st.chunked == 0);
    ts_migrate_report_free(&rb);

    /* and migrates again the same way, reusing the backups */
    ts_migrate_report_free(&real);
    o.now_ms = 4000;
    check(ts_migrate_run(s, &o, &real) == TS_OK);
    check(real.migrated == dry.migrated && real.backups_written == 0);
    check(ts_migrate_cleanup(s, 4000 + TS_MIGRATE_DEFAULT_RETENTION_MS, TS_MIGRATE_CLEAN_ATTACHMENTS, NULL) == TS_OK);

    ts_migrate_report_free(&dry);
    ts_migrate_report_free(&real);
    check(ts_store_close(s) == TS_OK);
    ts_io_mem_destroy(mem);
    return 0;
}
