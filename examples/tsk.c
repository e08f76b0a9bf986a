/* tsk - the taskstore command-line tool (DESIGN.md section 8).

     tsk COMMAND DIR [ARGS] [--json] [--index-records]

   Every command takes the store directory first, prints human output by
   default and one JSON document with --json, and exits 0 on success, 1 with
   a one-line reason on stderr on failure, 2 on a usage error. Options may
   come anywhere before "--". tsk creates nothing outside DIR; the first
   write creates the store.

   --index-records (or TSK_INDEX_RECORDS=1 in the environment) opens the
   store with index_record_text: search then also finds the words of
   screenshot activity, audio transcriptions, summary narratives and the
   transcription document. The index remembers which way it was built, so
   give the option to every command on that store (set the variable once):
   a command run the other way rebuilds the index its way first. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "tsk_cli.h"

#include <errno.h>
#include <sys/stat.h>
#include <sys/time.h>

static uint64_t tsk_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)(tv.tv_usec / 1000);
}

/* Fails with the store's own message (it names the path) when it has one. */
static void tsk_fail(ts_store *s, ts_result r, const char *what)
{
    ts_error_info info;
    memset(&info, 0, sizeof info);
    if (s) ts_store_last_error(s, &info);
    if (s && info.code == r && info.message[0])
        tsk_die("%s: %s (%s)", what, info.message, ts_result_str(r));
    tsk_die("%s: %s", what, ts_result_str(r));
}

typedef enum { TSK_OPEN_READ, TSK_OPEN_WRITE } tsk_open_mode;

static int tsk_index_records; /* --index-records or TSK_INDEX_RECORDS */

/* Opens DIR. A read of a directory that is not a store is an error (tsk
   creates nothing for a read); a write creates the store. */
static ts_store *tsk_open(const char *dir, tsk_open_mode mode)
{
    ts_store_config cfg = ts_store_config_default();
    ts_store *s = NULL;
    ts_result r;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (mode == TSK_OPEN_READ) tsk_die("%s: no such store", dir);
    } else if (!S_ISDIR(st.st_mode)) {
        tsk_die("%s: not a directory", dir);
    }
    cfg.now_ms = tsk_now_ms();
    cfg.read_only = mode == TSK_OPEN_READ;
    cfg.index_record_text = tsk_index_records;
    r = ts_store_open(dir, &cfg, &s);
    if (r != TS_OK) tsk_die("%s: cannot open store: %s", dir, ts_result_str(r));
    return s;
}

static void tsk_close(ts_store *s)
{
    ts_result r = ts_store_close(s);
    if (r != TS_OK) tsk_die("closing the store: %s", ts_result_str(r));
}

static void tsk_need_pos(const tsk_args *a, int n, const char *usage)
{
    if (a->npos != n) tsk_die_usage("usage: %s %s", tsk_prog, usage);
}

/* ---- init ------------------------------------------------------------------ */

static int cmd_init(const tsk_args *a)
{
    ts_store *s;
    tsk_need_pos(a, 1, "init DIR");
    if (mkdir(a->pos[0], 0777) != 0 && errno != EEXIST) tsk_die("%s: cannot create", a->pos[0]);
    s = tsk_open(a->pos[0], TSK_OPEN_WRITE);
    tsk_close(s);
    if (a->json) { printf("{\"initialized\": "); tsk_json_cstr(stdout, a->pos[0]); printf("}\n"); }
    else printf("initialized store %s\n", a->pos[0]);
    return TSK_EXIT_OK;
}

/* ---- list / show / add / rm ---------------------------------------------- */

static void tsk_print_blob(const ts_blob *b)
{
    fwrite(b->data, 1, b->len, stdout);
    if (!b->len || ((const char *)b->data)[b->len - 1] != '\n') fputc('\n', stdout);
}

/* A string member of a JSON object, or "" (for human output only). */
static const char *tsk_jstr(const ts_json *obj, const char *key, size_t *len)
{
    const char *s = ts_json_string(ts_json_get(obj, key), len);
    if (!s) { *len = 0; return ""; }
    return s;
}

static void tsk_fmt_time(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tmv;
    if (!gmtime_r(&t, &tmv) || !strftime(out, n, "%Y-%m-%d %H:%M", &tmv)) snprintf(out, n, "?");
}

static int cmd_list(const tsk_args *a)
{
    ts_store *s;
    ts_blob b;
    ts_result r;
    tsk_need_pos(a, 1, "list DIR");
    s = tsk_open(a->pos[0], TSK_OPEN_READ);
    r = ts_session_list(s, &b);
    if (r != TS_OK) tsk_fail(s, r, "list");
    if (a->json) {
        tsk_print_blob(&b);
    } else {
        ts_json_doc *doc = NULL;
        const ts_json *root = NULL, *it;
        r = ts_json_parse((const char *)b.data, b.len, NULL, &doc, &root);
        if (r != TS_OK) tsk_fail(s, r, "list");
        printf("%-24s %-16s %-10s %5s  %s\n", "ID", "START (UTC)", "STATUS", "SHOTS", "NAME");
        for (it = ts_json_first(root); it; it = ts_json_next(it)) {
            size_t idn, nn, sn;
            const char *id = tsk_jstr(it, "id", &idn), *name = tsk_jstr(it, "name", &nn);
            const char *status = tsk_jstr(it, "status", &sn);
            int64_t start = 0;
            uint64_t shots = 0;
            char when[32] = "-";
            if (ts_json_int(ts_json_get(it, "startTime"), &start)) tsk_fmt_time(start, when, sizeof when);
            if (idn) ts_session_stream_count(s, id, "screenshots", &shots);
            printf("%-24.*s %-16s %-10.*s %5lld  %.*s\n", (int)idn, id, when, (int)sn, status,
                   (long long)shots, (int)nn, name);
        }
        printf("%zu sessions\n", ts_json_count(root));
        ts_json_free(doc);
    }
    ts_blob_free(&b);
    tsk_close(s);
    return TSK_EXIT_OK;
}

static int cmd_show(const tsk_args *a)
{
    ts_store *s;
    ts_blob b;
    ts_result r;
    tsk_need_pos(a, 2, "show DIR SESSION_ID");
    s = tsk_open(a->pos[0], TSK_OPEN_READ);
    r = ts_session_load(s, a->pos[1], &b);
    if (r == TS_E_NOTFOUND) tsk_die("no session %s", a->pos[1]);
    if (r != TS_OK) tsk_fail(s, r, a->pos[1]);
    tsk_print_blob(&b);
    ts_blob_free(&b);
    tsk_close(s);
    return TSK_EXIT_OK;
}

static int cmd_add(const tsk_args *a)
{
    ts_store *s;
    size_t len;
    char *json, id[TS_SESSION_ID_MAX + 1];
    ts_result r;
    tsk_need_pos(a, 2, "add DIR SESSION.json");
    json = tsk_read_file(a->pos[1], &len);
    s = tsk_open(a->pos[0], TSK_OPEN_WRITE);
    r = ts_session_save(s, json, len, id);
    free(json);
    if (r != TS_OK) tsk_fail(s, r, a->pos[1]);
    r = ts_store_flush(s);
    if (r != TS_OK) tsk_fail(s, r, "flush");
    tsk_close(s);
    if (a->json) { printf("{\"ids\": ["); tsk_json_cstr(stdout, id); printf("]}\n"); }
    else printf("saved session %s\n", id);
    return TSK_EXIT_OK;
}

static int cmd_rm(const tsk_args *a)
{
    ts_store *s;
    ts_result r;
    tsk_need_pos(a, 2, "rm DIR SESSION_ID");
    s = tsk_open(a->pos[0], TSK_OPEN_WRITE);
    r = ts_session_delete(s, a->pos[1]);
    if (r == TS_E_NOTFOUND) tsk_die("no session %s", a->pos[1]);
    if (r != TS_OK) tsk_fail(s, r, a->pos[1]);
    tsk_close(s);
    if (a->json) { printf("{\"ids\": ["); tsk_json_cstr(stdout, a->pos[1]); printf("]}\n"); }
    else printf("removed session %s\n", a->pos[1]);
    return TSK_EXIT_OK;
}

/* ---- append ------------------------------------------------------------------ */

static const char *tsk_guess_mime(const unsigned char *p, size_t n)
{
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) return "image/png";
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return "image/jpeg";
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) return "image/webp";
    return "application/octet-stream";
}

/* Builds {"id": ..., "timestamp": ..., "<field>": text} in out. */
static void tsk_record(char *out, size_t cap, const char *prefix, uint64_t now, uint64_t index,
                       const char *field, const char *text)
{
    FILE *f = fmemopen(out, cap, "w");
    if (!f) tsk_die("out of memory");
    fprintf(f, "{\"id\":\"%s-%llu-%llu\",\"timestamp\":%llu", prefix, (unsigned long long)now,
            (unsigned long long)index, (unsigned long long)now);
    if (field && text) { fprintf(f, ",\"%s\":", field); tsk_json_cstr(f, text); }
    fputc('}', f);
    if (ferror(f) || ftell(f) >= (long)cap - 1) tsk_die("record text too long");
    fclose(f);
}

static int cmd_append(const tsk_args *a)
{
    const char *shot = tsk_opt(a, "screenshot"), *activity = tsk_opt(a, "activity");
    const char *audio = tsk_opt(a, "audio");
    ts_store *s;
    ts_result r;
    uint64_t now = tsk_now_ms(), count = 0, index = 0;
    static char record[1 << 16];
    char hash[65] = "";
    tsk_need_pos(a, 2, "append DIR SESSION_ID --screenshot FILE [--activity TEXT] | --audio TEXT");
    if (!!shot == !!audio) tsk_die_usage("append needs exactly one of --screenshot FILE or --audio TEXT");
    if (activity && !shot) tsk_die_usage("--activity goes with --screenshot");
    s = tsk_open(a->pos[0], TSK_OPEN_WRITE);
    if (shot) {
        size_t n;
        char *img = tsk_read_file(shot, &n);
        r = ts_session_stream_count(s, a->pos[1], "screenshots", &count);
        if (r == TS_E_NOTFOUND) tsk_die("no session %s", a->pos[1]);
        if (r != TS_OK) tsk_fail(s, r, a->pos[1]);
        tsk_record(record, sizeof record, "shot", now, count, "activity", activity);
        r = ts_session_append_screenshot(s, a->pos[1], record, strlen(record), img, n,
                                         tsk_guess_mime((const unsigned char *)img, n), hash, &index);
        free(img);
    } else {
        r = ts_session_stream_count(s, a->pos[1], "audioSegments", &count);
        if (r == TS_E_NOTFOUND) tsk_die("no session %s", a->pos[1]);
        if (r != TS_OK) tsk_fail(s, r, a->pos[1]);
        tsk_record(record, sizeof record, "audio", now, count, "transcription", audio);
        r = ts_session_append(s, a->pos[1], "audioSegments", record, strlen(record), &index);
    }
    if (r != TS_OK) tsk_fail(s, r, a->pos[1]);
    tsk_close(s);
    if (a->json) {
        printf("{\"ids\": ["); tsk_json_cstr(stdout, a->pos[1]); printf("], \"stream\": ");
        tsk_json_cstr(stdout, shot ? "screenshots" : "audioSegments");
        printf(", \"index\": %llu, \"hashes\": [", (unsigned long long)index);
        if (hash[0]) tsk_json_cstr(stdout, hash);
        printf("]}\n");
    } else if (shot) {
        printf("appended screenshot %llu to %s (attachment %s)\n", (unsigned long long)index, a->pos[1], hash);
    } else {
        printf("appended audio segment %llu to %s\n", (unsigned long long)index, a->pos[1]);
    }
    return TSK_EXIT_OK;
}

/* ---- search ---------------------------------------------------------------------- */

static int cmd_search(const tsk_args *a)
{
    const char *tags[TSK_MAX_ARGS], *topics[TSK_MAX_ARGS];
    ts_query q;
    ts_index_hits hits;
    ts_store *s;
    ts_result r;
    size_t i;
    memset(&q, 0, sizeof q);
    tsk_need_pos(a, 1, "search DIR [--text Q] [--tag T]... [--topic T]... [--category C] "
                       "[--subcategory S] [--status S] [--from MS] [--to MS] [--or] [--limit N] "
                       "[--offset N] [--rank]");
    q.text = tsk_opt(a, "text");
    q.tag_count = (size_t)tsk_opt_all(a, "tag", tags, TSK_MAX_ARGS);
    q.tags = tags;
    q.topic_count = (size_t)tsk_opt_all(a, "topic", topics, TSK_MAX_ARGS);
    q.topics = topics;
    q.category = tsk_opt(a, "category");
    q.sub_category = tsk_opt(a, "subcategory");
    q.status = tsk_opt(a, "status");
    if (tsk_opt(a, "from")) { q.has_from = 1; q.from_ms = tsk_parse_ll(tsk_opt(a, "from"), "--from"); }
    if (tsk_opt(a, "to")) { q.has_to = 1; q.to_ms = tsk_parse_ll(tsk_opt(a, "to"), "--to"); }
    if (tsk_opt(a, "limit")) {
        long long v = tsk_parse_ll(tsk_opt(a, "limit"), "--limit");
        if (v < 0) tsk_die_usage("--limit must not be negative");
        q.limit = (size_t)v;
    }
    if (tsk_opt(a, "offset")) {
        long long v = tsk_parse_ll(tsk_opt(a, "offset"), "--offset");
        if (v < 0) tsk_die_usage("--offset must not be negative");
        q.offset = (size_t)v;
    }
    q.op = tsk_flag(a, "or") ? TS_QUERY_OR : TS_QUERY_AND;
    q.rank_bm25 = tsk_flag(a, "rank");
    s = tsk_open(a->pos[0], TSK_OPEN_READ);
    r = ts_store_search(s, &q, &hits);
    if (r != TS_OK) { ts_index_hits_free(&hits); tsk_fail(s, r, "search"); }
    if (a->json) {
        printf("{\"total\": %zu, \"ids\": [", hits.total);
        for (i = 0; i < hits.count; i++) {
            if (i) printf(", ");
            tsk_json_str(stdout, hits.ids[i], hits.id_lens[i]);
        }
        printf("]}\n");
    } else {
        for (i = 0; i < hits.count; i++) {
            if (hits.scores) printf("%-32s %.3f\n", hits.ids[i], hits.scores[i]);
            else printf("%s\n", hits.ids[i]);
        }
        printf("%zu of %zu matching sessions\n", hits.count, hits.total);
    }
    ts_index_hits_free(&hits);
    tsk_close(s);
    return TSK_EXIT_OK;
}

/* ---- attachments: get / gc ------------------------------------------------------- */

static int cmd_get(const tsk_args *a)
{
    ts_store *s;
    ts_blob b;
    ts_result r;
    tsk_need_pos(a, 2, "get DIR HASH > FILE");
    s = tsk_open(a->pos[0], TSK_OPEN_READ);
    r = ts_attach_get(s, a->pos[1], &b);
    if (r == TS_E_NOTFOUND) tsk_die("no attachment %s", a->pos[1]);
    if (r == TS_E_INVALID) tsk_die("not a hash (64 lowercase hex digits): %s", a->pos[1]);
    if (r != TS_OK) tsk_fail(s, r, a->pos[1]);
    if (fwrite(b.data, 1, b.len, stdout) != b.len || fflush(stdout) != 0) tsk_die("write failed");
    ts_blob_free(&b);
    tsk_close(s);
    return TSK_EXIT_OK;
}

static int cmd_gc(const tsk_args *a)
{
    ts_store *s;
    ts_result r;
    uint64_t removed = 0;
    tsk_need_pos(a, 1, "gc DIR");
    s = tsk_open(a->pos[0], TSK_OPEN_WRITE);
    r = ts_store_gc(s, tsk_now_ms(), &removed);
    if (r != TS_OK) tsk_fail(s, r, "gc");
    tsk_close(s);
    if (a->json) printf("{\"removed\": %llu}\n", (unsigned long long)removed);
    else printf("removed %llu unreferenced attachments\n", (unsigned long long)removed);
    return TSK_EXIT_OK;
}

/* ---- compress ---------------------------------------------------------------------- */

static void tsk_compress_progress(void *user, const ts_compress_progress *p)
{
    tsk_progress_update((tsk_progress *)user, p->sessions_done, p->sessions_total);
}

static int cmd_compress(const tsk_args *a)
{
    ts_store *s;
    ts_compress_config cc = ts_compress_config_default();
    ts_compress_stats st;
    tsk_progress bar;
    ts_result r;
    uint64_t now = tsk_now_ms();
    tsk_need_pos(a, 1, "compress DIR [--age-days N] [--webp]");
    cc.mode = TS_COMPRESS_MANUAL;
    if (tsk_opt(a, "age-days")) {
        long long d = tsk_parse_ll(tsk_opt(a, "age-days"), "--age-days");
        if (d < 0) tsk_die_usage("--age-days must not be negative");
        cc.age_ms = d == 0 ? 1 : (uint64_t)d * 86400000u;
    }
    cc.no_screenshots = !tsk_flag(a, "webp");
    tsk_progress_begin(&bar, "compress");
    cc.progress_fn = tsk_compress_progress;
    cc.progress_user = &bar;
    s = tsk_open(a->pos[0], TSK_OPEN_WRITE);
    if ((r = ts_compress_configure(s, &cc)) != TS_OK) tsk_fail(s, r, "compress");
    while ((r = ts_compress_run(s, now, 0)) == TS_OK) {}
    tsk_progress_end(&bar);
    if (r != TS_DONE) tsk_fail(s, r, "compress");
    if ((r = ts_store_flush(s)) != TS_OK) tsk_fail(s, r, "flush");
    if ((r = ts_compress_stats_get(s, 1, &st)) != TS_OK) tsk_fail(s, r, "compress");
    tsk_close(s);
    if (a->json) {
        printf("{\"sessionsCompressed\": %llu, \"filesCompressed\": %llu, \"bytesBefore\": %llu, "
               "\"bytesAfter\": %llu, \"imagesConverted\": %llu, \"imageBytesBefore\": %llu, "
               "\"imageBytesAfter\": %llu}\n",
               (unsigned long long)st.sessions_compressed, (unsigned long long)st.files_compressed,
               (unsigned long long)st.bytes_before, (unsigned long long)st.bytes_after,
               (unsigned long long)st.images_converted, (unsigned long long)st.image_bytes_before,
               (unsigned long long)st.image_bytes_after);
    } else {
        printf("%llu sessions compressed: %llu files %llu -> %llu bytes, %llu screenshots %llu -> %llu bytes\n",
               (unsigned long long)st.sessions_compressed, (unsigned long long)st.files_compressed,
               (unsigned long long)st.bytes_before, (unsigned long long)st.bytes_after,
               (unsigned long long)st.images_converted, (unsigned long long)st.image_bytes_before,
               (unsigned long long)st.image_bytes_after);
    }
    return TSK_EXIT_OK;
}

/* ---- stats -------------------------------------------------------------------------- */

static void tsk_human_bytes(uint64_t n, char *out, size_t cap)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) { v /= 1024; u++; }
    snprintf(out, cap, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

static int cmd_stats(const tsk_args *a)
{
    ts_store *s;
    ts_store_stats st;
    ts_compress_stats cz;
    ts_result r;
    char lb[32], sb[32], db[32];
    tsk_need_pos(a, 1, "stats DIR");
    s = tsk_open(a->pos[0], TSK_OPEN_READ);
    r = ts_store_stats_get(s, &st);
    if (r != TS_OK) tsk_fail(s, r, "stats");
    r = ts_compress_stats_get(s, 1, &cz);
    if (r != TS_OK && r != TS_E_NOTIMPL) tsk_fail(s, r, "stats");
    if (r != TS_OK) memset(&cz, 0, sizeof cz);
    if (a->json) {
        printf("{\"sessions\": %llu, \"attachments\": {\"objects\": %llu, \"logicalBytes\": %llu, "
               "\"storedBytes\": %llu, \"dedupSavedBytes\": %llu}, \"index\": {\"sessions\": %llu, "
               "\"terms\": %llu, \"postings\": %llu, \"memoryBytes\": %llu, \"diskBytes\": %llu, "
               "\"recordText\": %s}, "
               "\"cache\": {\"entries\": %llu, \"bytes\": %llu, \"hits\": %llu, \"misses\": %llu}, "
               "\"queue\": {\"pending\": %llu, \"completed\": %llu, \"coalesced\": %llu, \"failed\": %llu}, "
               "\"compression\": {\"files\": %llu, \"filesCompressed\": %llu, \"bytesBefore\": %llu, "
               "\"bytesAfter\": %llu, \"images\": %llu, \"imagesConverted\": %llu, \"imageBytesBefore\": %llu, "
               "\"imageBytesAfter\": %llu, \"sessionsCompressed\": %llu}}\n",
               (unsigned long long)st.sessions, (unsigned long long)st.attachments.objects,
               (unsigned long long)st.attachments.logical_bytes,
               (unsigned long long)st.attachments.stored_bytes,
               (unsigned long long)st.attachments.dedup_saved_bytes,
               (unsigned long long)st.index.sessions, (unsigned long long)st.index.terms,
               (unsigned long long)st.index.postings, (unsigned long long)st.index.memory_bytes,
               (unsigned long long)st.index.disk_bytes, st.index.record_text ? "true" : "false",
               (unsigned long long)st.cache.entries,
               (unsigned long long)st.cache.bytes, (unsigned long long)st.cache.hits,
               (unsigned long long)st.cache.misses, (unsigned long long)st.queue.pending,
               (unsigned long long)st.queue.completed, (unsigned long long)st.queue.coalesced,
               (unsigned long long)st.queue.failed, (unsigned long long)cz.files,
               (unsigned long long)cz.files_compressed, (unsigned long long)cz.bytes_before,
               (unsigned long long)cz.bytes_after, (unsigned long long)cz.images,
               (unsigned long long)cz.images_converted, (unsigned long long)cz.image_bytes_before,
               (unsigned long long)cz.image_bytes_after, (unsigned long long)cz.sessions_compressed);
    } else {
        tsk_human_bytes(st.attachments.logical_bytes, lb, sizeof lb);
        tsk_human_bytes(st.attachments.stored_bytes, sb, sizeof sb);
        tsk_human_bytes(st.attachments.dedup_saved_bytes, db, sizeof db);
        printf("sessions          %llu\n", (unsigned long long)st.sessions);
        printf("attachments       %llu objects, %s referenced, %s stored, %s saved by dedup\n",
               (unsigned long long)st.attachments.objects, lb, sb, db);
        printf("index             %llu sessions, %llu terms, %llu postings%s\n",
               (unsigned long long)st.index.sessions, (unsigned long long)st.index.terms,
               (unsigned long long)st.index.postings, st.index.record_text ? ", with record text" : "");
        tsk_human_bytes(cz.bytes_before + cz.image_bytes_before, lb, sizeof lb);
        tsk_human_bytes(cz.bytes_after + cz.image_bytes_after, sb, sizeof sb);
        printf("compression       %llu files and %llu screenshots compressed: %s -> %s\n",
               (unsigned long long)cz.files_compressed, (unsigned long long)cz.images_converted, lb, sb);
    }
    tsk_close(s);
    return TSK_EXIT_OK;
}

/* ---- migration: status / migrate / verify / rollback ------------------------------ */

static int cmd_status(const tsk_args *a)
{
    ts_store *s;
    ts_migrate_status st;
    ts_blob b;
    ts_result r;
    tsk_need_pos(a, 1, "status DIR");
    s = tsk_open(a->pos[0], TSK_OPEN_READ);
    if ((r = ts_migrate_status_get(s, &st)) != TS_OK) tsk_fail(s, r, "status");
    if (a->json) {
        if ((r = ts_migrate_status_json(&st, &b)) != TS_OK) tsk_fail(s, r, "status");
        tsk_print_blob(&b);
        ts_blob_free(&b);
    } else {
        printf("%llu sessions: %llu chunked, %llu legacy (%.1f%% migrated); %llu backups\n",
               (unsigned long long)st.total, (unsigned long long)st.chunked,
               (unsigned long long)st.legacy, st.percentage, (unsigned long long)st.backups);
    }
    tsk_close(s);
    return TSK_EXIT_OK;
}

static int tsk_migrate_progress(void *user, const ts_migrate_progress *p)
{
    tsk_progress_update((tsk_progress *)user, p->done, p->total);
    return 0;
}

static ts_result tsk_compress_one(void *user, ts_store *s, const char *id)
{
    ts_compress_stats st;
    ts_result r;
    (void)user;
    r = ts_compress_session(s, id, &st);
    return r == TS_E_STATE ? TS_OK : r;   /* an active or unended session stays plain */
}

static int cmd_migrate(const tsk_args *a)
{
    ts_store *s;
    ts_migrate_options o = ts_migrate_options_default();
    ts_migrate_report rep;
    tsk_progress bar;
    const char *steps[TSK_MAX_ARGS];
    int nsteps, i;
    ts_blob b;
    ts_result r;
    uint64_t failed;
    tsk_need_pos(a, 1, "migrate DIR [--dry-run] [--step chunked|ca|index|compress]... [--no-backup]");
    nsteps = tsk_opt_all(a, "step", steps, TSK_MAX_ARGS);
    for (i = 0; i < nsteps; i++) {
        if (strcmp(steps[i], "chunked") == 0) o.steps |= TS_MIGRATE_STEP_CHUNKED;
        else if (strcmp(steps[i], "ca") == 0) o.steps |= TS_MIGRATE_STEP_CA;
        else if (strcmp(steps[i], "index") == 0) o.steps |= TS_MIGRATE_STEP_INDEX;
        else if (strcmp(steps[i], "compress") == 0) o.steps |= TS_MIGRATE_STEP_COMPRESS;
        else tsk_die_usage("unknown step '%s' (chunked, ca, index or compress)", steps[i]);
    }
    o.dry_run = tsk_flag(a, "dry-run");
    o.no_backup = tsk_flag(a, "no-backup");
    o.now_ms = tsk_now_ms();
    o.compress_fn = tsk_compress_one;
    tsk_progress_begin(&bar, "migrate");
    o.progress = tsk_migrate_progress;
    o.progress_user = &bar;
    s = tsk_open(a->pos[0], o.dry_run ? TSK_OPEN_READ : TSK_OPEN_WRITE);
    r = ts_migrate_run(s, &o, &rep);
    tsk_progress_end(&bar);
    if (r != TS_OK) tsk_fail(s, r, "migrate");
    failed = rep.failed;
    if (a->json) {
        if ((r = ts_migrate_report_json(&rep, &b)) != TS_OK) tsk_fail(s, r, "migrate");
        tsk_print_blob(&b);
        ts_blob_free(&b);
    } else {
        size_t k;
        printf("%s%llu migrated, %llu skipped, %llu failed; %llu attachments imported "
               "(%llu deduplicated)\n", o.dry_run ? "dry run: would be " : "",
               (unsigned long long)rep.migrated, (unsigned long long)rep.skipped,
               (unsigned long long)rep.failed, (unsigned long long)rep.attachments_imported,
               (unsigned long long)rep.attachments_deduplicated);
        for (k = 0; k < rep.item_count; k++)
            if (rep.items[k].outcome == TS_MIGRATE_FAILED)
                printf("  failed %s: %s\n", rep.items[k].id, rep.items[k].reason);
    }
    ts_migrate_report_free(&rep);
    tsk_close(s);
    if (failed) {
        fprintf(stderr, "%s: %llu sessions failed to migrate (see the report)\n", tsk_prog,
                (unsigned long long)failed);
        return TSK_EXIT_FAIL;
    }
    return TSK_EXIT_OK;
}

/* Human output prints problems as ts_store_verify finds them; JSON output
   keeps them (NUL-separated) until "ok" is known, so that a failure midway
   leaves nothing half-printed on stdout. */
typedef struct tsk_verify { int json; char *kept; size_t len, cap; } tsk_verify;

static void tsk_verify_problem(void *user, const char *what, ts_result code, const char *message)
{
    tsk_verify *v = (tsk_verify *)user;
    size_t n = strlen(message) + 1;
    (void)what; (void)code;
    if (!v->json) { printf("problem: %s\n", message); return; }
    if (v->len + n > v->cap) {
        size_t cap = (v->cap ? v->cap * 2 : 1024) + n;
        char *p = (char *)realloc(v->kept, cap);
        if (!p) tsk_die("verify: out of memory");
        v->kept = p;
        v->cap = cap;
    }
    memcpy(v->kept + v->len, message, n);
    v->len += n;
}

static int cmd_verify(const tsk_args *a)
{
    ts_store *s;
    ts_store_verify_report rep;
    tsk_verify v;
    ts_result r;
    size_t at;
    int repair = tsk_flag(a, "repair");
    tsk_need_pos(a, 1, "verify DIR [--repair]");
    s = tsk_open(a->pos[0], repair ? TSK_OPEN_WRITE : TSK_OPEN_READ);
    memset(&v, 0, sizeof v);
    v.json = a->json;
    r = ts_store_verify(s, repair, tsk_verify_problem, &v, &rep);
    if (r != TS_OK && r != TS_E_CORRUPT) { free(v.kept); tsk_fail(s, r, "verify"); }
    if (v.json) {
        printf("{\"ok\": %s, \"problems\": [", r == TS_OK ? "true" : "false");
        for (at = 0; at < v.len; at += strlen(v.kept + at) + 1) {
            if (at) printf(", ");
            tsk_json_cstr(stdout, v.kept + at);
        }
        printf("], \"repaired\": %llu, \"sessions\": %llu, \"attachments\": %llu}\n",
               (unsigned long long)rep.repaired, (unsigned long long)rep.sessions,
               (unsigned long long)rep.attachments);
    } else {
        printf("%s: %llu sessions, %llu attachments, %llu problem%s", r == TS_OK ? "ok" : "NOT ok",
               (unsigned long long)rep.sessions, (unsigned long long)rep.attachments,
               (unsigned long long)rep.problems, rep.problems == 1 ? "" : "s");
        if (repair && rep.problems) printf(", %llu repaired", (unsigned long long)rep.repaired);
        printf("\n");
    }
    free(v.kept);
    tsk_close(s);
    if (r != TS_OK) {
        fprintf(stderr, "%s: verify found %llu problem%s%s\n", tsk_prog,
                (unsigned long long)(rep.problems - rep.repaired), rep.problems - rep.repaired == 1 ? "" : "s",
                repair ? " it could not repair" : "");
        return TSK_EXIT_FAIL;
    }
    return TSK_EXIT_OK;
}

static int cmd_rollback(const tsk_args *a)
{
    ts_store *s;
    ts_result r;
    int all = tsk_flag(a, "all");
    unsigned flags = tsk_flag(a, "force") ? TS_MIGRATE_FORCE : 0;
    if (all ? a->npos != 1 : (a->npos < 2 || a->npos > 3))
        tsk_die_usage("usage: %s rollback DIR (SESSION_ID [BACKUP] | --all) [--force]", tsk_prog);
    s = tsk_open(a->pos[0], TSK_OPEN_WRITE);
    if (all) {
        ts_migrate_report rep;
        uint64_t failed;
        size_t k;
        r = ts_migrate_rollback_all(s, flags, &rep);
        if (r != TS_OK) tsk_fail(s, r, "rollback");
        failed = rep.failed;
        if (a->json) {
            printf("{\"rolledBack\": %llu, \"failed\": [", (unsigned long long)rep.migrated);
            for (k = 0; k < rep.item_count; k++) {
                if (rep.items[k].outcome != TS_MIGRATE_FAILED) continue;
                printf("%s{\"id\": ", k ? ", " : "");
                tsk_json_cstr(stdout, rep.items[k].id);
                printf(", \"reason\": ");
                tsk_json_cstr(stdout, rep.items[k].reason);
                printf("}");
            }
            printf("]}\n");
        } else {
            printf("rolled back %llu sessions, %llu failed\n", (unsigned long long)rep.migrated,
                   (unsigned long long)rep.failed);
        }
        ts_migrate_report_free(&rep);
        tsk_close(s);
        if (failed) { fprintf(stderr, "%s: some sessions could not be rolled back\n", tsk_prog); return TSK_EXIT_FAIL; }
        return TSK_EXIT_OK;
    }
    r = ts_migrate_rollback(s, a->pos[1], a->npos == 3 ? a->pos[2] : NULL, flags);
    if (r == TS_E_NOTFOUND) tsk_die("no backup for session %s", a->pos[1]);
    if (r != TS_OK) tsk_fail(s, r, a->pos[1]);
    tsk_close(s);
    if (a->json) { printf("{\"ids\": ["); tsk_json_cstr(stdout, a->pos[1]); printf("]}\n"); }
    else printf("rolled back session %s to its legacy file\n", a->pos[1]);
    return TSK_EXIT_OK;
}

/* ---- dispatch -------------------------------------------------------------------------- */

typedef struct tsk_command {
    const char *name;
    int (*run)(const tsk_args *a);
    const char *const *flags;
    const char *const *valued;
    const char *help;
} tsk_command;

static const char *const no_opts[] = {NULL};
static const char *const append_valued[] = {"screenshot", "activity", "audio", NULL};
static const char *const search_flags[] = {"or", "rank", NULL};
static const char *const compress_flags[] = {"webp", NULL};
static const char *const migrate_flags[] = {"dry-run", "no-backup", NULL};
static const char *const migrate_valued[] = {"step", NULL};
static const char *const verify_flags[] = {"repair", NULL};
static const char *const rollback_flags[] = {"all", "force", NULL};
static const char *const compress_valued[] = {"age-days", NULL};
static const char *const search_valued[] = {"text", "tag", "topic", "category", "subcategory",
                                            "status", "from", "to", "limit", "offset", NULL};

static const tsk_command tsk_commands[] = {
    {"init", cmd_init, no_opts, no_opts, "init DIR                       create an empty store"},
    {"status", cmd_status, no_opts, no_opts, "status DIR                     migration status: total, chunked, legacy"},
    {"migrate", cmd_migrate, migrate_flags, migrate_valued,
     "migrate DIR [--dry-run] [--step chunked|ca|index|compress]... [--no-backup]"},
    {"verify", cmd_verify, verify_flags, no_opts, "verify DIR [--repair]          chunks, hashes, refcounts, index"},
    {"rollback", cmd_rollback, rollback_flags, no_opts,
     "rollback DIR (SESSION_ID [BACKUP] | --all) [--force]"},
    {"list", cmd_list, no_opts, no_opts, "list DIR                       metadata of every session, newest first"},
    {"show", cmd_show, no_opts, no_opts, "show DIR SESSION_ID            the full session as one JSON object"},
    {"add", cmd_add, no_opts, no_opts, "add DIR SESSION.json           add or replace a session (legacy shape)"},
    {"append", cmd_append, no_opts, append_valued,
     "append DIR SESSION_ID --screenshot FILE [--activity TEXT] | --audio TEXT"},
    {"search", cmd_search, search_flags, search_valued,
     "search DIR [--text Q] [--tag T].. [--topic T].. [--category C] [--subcategory S]\n"
     "              [--status S] [--from MS] [--to MS] [--or] [--limit N] [--offset N] [--rank]"},
    {"get", cmd_get, no_opts, no_opts, "get DIR HASH > FILE            attachment bytes"},
    {"rm", cmd_rm, no_opts, no_opts, "rm DIR SESSION_ID              delete a session"},
    {"gc", cmd_gc, no_opts, no_opts, "gc DIR                         collect unreferenced attachments"},
    {"compress", cmd_compress, compress_flags, compress_valued,
     "compress DIR [--age-days N] [--webp]  compress ended sessions (and screenshots)"},
    {"stats", cmd_stats, no_opts, no_opts, "stats DIR                      sizes, dedup savings, index figures"},
};

static void tsk_usage(FILE *f)
{
    size_t i;
    fprintf(f, "usage: tsk COMMAND DIR [ARGS] [--json] [--index-records]\n\ncommands:\n");
    for (i = 0; i < sizeof tsk_commands / sizeof tsk_commands[0]; i++)
        fprintf(f, "  %s\n", tsk_commands[i].help);
    fprintf(f, "\nOptions may come anywhere before \"--\"; --json prints one JSON document.\n"
               "--index-records (or TSK_INDEX_RECORDS=1): search also screenshot activity, audio\n"
               "  transcriptions, summary narratives and transcripts; give it to every command on\n"
               "  the store (a command without it rebuilds the index without them, and back).\n"
               "Exit status: 0 ok, 1 failure (reason on stderr), 2 usage error.\n");
}

int main(int argc, char **argv)
{
    size_t i;
    if (argc < 2) { tsk_usage(stderr); return TSK_EXIT_USAGE; }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        tsk_usage(stdout);
        return TSK_EXIT_OK;
    }
    for (i = 0; i < sizeof tsk_commands / sizeof tsk_commands[0]; i++) {
        if (strcmp(argv[1], tsk_commands[i].name) == 0) {
            tsk_args a;
            const char *env = getenv("TSK_INDEX_RECORDS");
            tsk_parse(argc - 2, argv + 2, tsk_commands[i].flags, tsk_commands[i].valued, &a);
            tsk_index_records = a.index_records || (env && env[0] && strcmp(env, "0") != 0);
            return tsk_commands[i].run(&a);
        }
    }
    tsk_die_usage("unknown command '%s'", argv[1]);
    return TSK_EXIT_USAGE;
}
