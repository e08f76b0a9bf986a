/* demo.c - the library's whole job in one screen (what ./build.sh runs).

   1. writes a small legacy ("Phase 3") store: one JSON file per session with
      every record inline and screenshots as base64 attachment files, as the
      old app kept them (some screenshots identical, as static screens are);
   2. migrates it to the chunked layout with a progress bar: sessions split
      into chunks, attachments stored once by SHA-256, the index built;
   3. searches it, shows a session, compresses the ended sessions (JSON to
      deflate, screenshots to lossless WebP) and prints the storage figures.

     build/demo [DIR]            (default build/demo-store; DIR is recreated)
     build/demo --legacy DIR     only step 1: write the legacy store (for tests) */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "demo_images.h"
#include "tsk_cli.h"

#include <sys/stat.h>

static const char *names[] = {
    "Refactor the JSON parser", "Sprint planning", "Fix flaky upload test",
    "Design review: onboarding", "Write release notes", "Profile the renderer",
    "Customer call: Acme", "Migrate CI to new runners", "Level editor: bridge area",
    "Café menu app prototype", "Security audit follow-up", "Pair session on caching"};
static const char *descriptions[] = {
    "Rewrote number parsing and added fuzzing", "Planned the next two weeks with the team",
    "Tracked down a race in the upload retry path", "Reviewed onboarding screens and copy",
    "Collected changes since the last release", "Found a hot loop in the shadow pass",
    "Discussed the export feature and pricing", "Moved pipelines and cached dependencies",
    "Placed spawn points and tuned lighting", "Sketched menus, prices in euros",
    "Closed findings on token storage", "Added an LRU in front of the database"};
static const char *categories[] = {"Development", "Meetings", "Development", "Design",
                                   "Writing", "Development", "Meetings", "Operations",
                                   "Design", "Design", "Security", "Development"};
static const char *tags[][2] = {{"parser", "fuzzing"}, {"planning", "team"}, {"tests", "ci"},
                                {"ux", "review"}, {"release", "docs"}, {"performance", "gpu"},
                                {"customer", "sales"}, {"ci", "infra"}, {"gamedev", "editor"},
                                {"prototype", "mobile"}, {"security", "audit"},
                                {"performance", "cache"}};

static void die(const char *what, ts_result r)
{
    fprintf(stderr, "demo: %s: %s\n", what, ts_result_str(r));
    exit(1);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "demo: cannot write %s\n", path);
        exit(1);
    }
}

static char *base64(const unsigned char *p, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = (char *)malloc((n + 2) / 3 * 4 + 1), *o = out;
    size_t i;
    if (!out) exit(1);
    for (i = 0; i + 2 < n; i += 3) {
        *o++ = t[p[i] >> 2]; *o++ = t[(p[i] & 3) << 4 | p[i + 1] >> 4];
        *o++ = t[(p[i + 1] & 15) << 2 | p[i + 2] >> 6]; *o++ = t[p[i + 2] & 63];
    }
    if (i < n) {
        *o++ = t[p[i] >> 2];
        if (i + 1 < n) { *o++ = t[(p[i] & 3) << 4 | p[i + 1] >> 4]; *o++ = t[(p[i + 1] & 15) << 2]; }
        else { *o++ = t[(p[i] & 3) << 4]; *o++ = '='; }
        *o++ = '=';
    }
    *o = 0;
    return out;
}

/* A growable string for building the legacy JSON files. */
typedef struct { char *p; size_t len, cap; } str;
static void put(str *s, const char *fmt, ...)
{
    va_list ap;
    int n;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(s->p ? s->p + s->len : NULL, s->p ? s->cap - s->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) exit(1);
        if (s->p && s->len + (size_t)n < s->cap) { s->len += (size_t)n; return; }
        s->cap = (s->cap + (size_t)n + 1) * 2;
        s->p = (char *)realloc(s->p, s->cap);
        if (!s->p) exit(1);
    }
}

static uint64_t legacy_bytes;

/* Writes the legacy store: sessions/{id}.json and attachments/{aid}.json. */
static void make_legacy_store(const char *dir)
{
    char path[1024];
    int i, k;
    uint64_t t0 = 1731000000000ull; /* Nov 2024 */
    snprintf(path, sizeof path, "%s/sessions", dir);      mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/attachments", dir);   mkdir(path, 0777);
    for (i = 0; i < 12; i++) {
        str s = {NULL, 0, 0};
        uint64_t start = t0 + (uint64_t)i * (uint64_t)259200000 + (uint64_t)i * (uint64_t)7919000;
        int shots = 3 + i % 6;
        put(&s, "{\"id\":\"session-%02d\",\"name\":\"%s\",\"description\":\"%s\",\"startTime\":%llu,"
                "\"endTime\":%llu,\"status\":\"%s\",\"tags\":[\"%s\",\"%s\"],\"topicIds\":[\"topic-%d\"],"
                "\"category\":\"%s\",\"screenshots\":[",
            i, names[i], descriptions[i], (unsigned long long)start,
            (unsigned long long)(start + 3600000u), i == 11 ? "active" : "completed",
            tags[i][0], tags[i][1], i % 4, categories[i]);
        for (k = 0; k < shots; k++) {
            /* every third screenshot shows the same screen as another session */
            uint32_t seed = k % 3 == 2 ? 1000u + (uint32_t)(k % 2) : (uint32_t)(i * 16 + k);
            size_t png_len = 0;
            unsigned char *png = demo_screenshot_png(480, 300, seed, &png_len);
            char *b64;
            if (!png) exit(1);
            b64 = base64(png, png_len);
            str a = {NULL, 0, 0};
            put(&a, "{\"id\":\"att-%02d-%d\",\"type\":\"screenshot\",\"name\":\"screen-%d.png\","
                    "\"mimeType\":\"image/png\",\"size\":%zu,\"base64\":\"%s\",\"createdAt\":%llu}",
                i, k, k, png_len, b64, (unsigned long long)(start + (uint64_t)k * 60000u));
            snprintf(path, sizeof path, "%s/attachments/att-%02d-%d.json", dir, i, k);
            write_file(path, a.p, a.len);
            legacy_bytes += a.len;
            put(&s, "%s{\"id\":\"shot-%d\",\"timestamp\":%llu,\"attachmentId\":\"att-%02d-%d\","
                    "\"activity\":\"%s, step %d\"}", k ? "," : "", k,
                (unsigned long long)(start + (uint64_t)k * 60000u), i, k, names[i], k + 1);
            free(b64); free(a.p); free(png);
        }
        put(&s, "],\"audioSegments\":[{\"id\":\"a1\",\"timestamp\":%llu,\"transcription\":"
                "\"Okay, let's look at %s first.\"}],\"videoChunks\":[],"
                "\"summary\":{\"narrative\":\"%s.\",\"keyPoints\":[\"%s\"]}}",
            (unsigned long long)(start + 5000u), tags[i][0], descriptions[i], names[i]);
        snprintf(path, sizeof path, "%s/sessions/session-%02d.json", dir, i);
        write_file(path, s.p, s.len);
        legacy_bytes += s.len;
        free(s.p);
    }
}

static int on_progress(void *user, const ts_migrate_progress *p)
{
    tsk_progress_update((tsk_progress *)user, p->done, p->total);
    return 0;
}

static void search(ts_store *st, const char *label, ts_query *q)
{
    ts_index_hits hits;
    size_t i;
    ts_result r = ts_store_search(st, q, &hits);
    if (r != TS_OK) die("search", r);
    printf("  %-34s %zu hit%s:", label, hits.total, hits.total == 1 ? "" : "s");
    for (i = 0; i < hits.count; i++) printf(" %s", hits.ids[i]);
    printf("\n");
    ts_index_hits_free(&hits);
}

static void human(uint64_t n, char *out, size_t cap)
{
    if (n >= 10u << 20) snprintf(out, cap, "%.1f MiB", (double)n / 1048576.0);
    else snprintf(out, cap, "%.1f KiB", (double)n / 1024.0);
}

int main(int argc, char **argv)
{
    int legacy_only = argc > 2 && strcmp(argv[1], "--legacy") == 0;
    const char *dir = legacy_only ? argv[2] : argc > 1 ? argv[1] : "build/demo-store";
    char cmd[1200], a[32], b[32], c[32];
    ts_store_config cfg = ts_store_config_default();
    ts_migrate_options mo = ts_migrate_options_default();
    ts_migrate_report rep;
    ts_store *st;
    ts_store_stats stats;
    tsk_progress bar;
    ts_blob blob;
    ts_result r;

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (strchr(dir, '\'') || system(cmd) != 0) { fprintf(stderr, "demo: cannot reset %s\n", dir); return 1; }
    mkdir(dir, 0777);
    if (!legacy_only) printf("taskstore.h %s demo, store in %s\n\n", ts_version(), dir);

    make_legacy_store(dir);
    if (legacy_only) return 0;
    human(legacy_bytes, a, sizeof a);
    printf("1. wrote a legacy store: 12 sessions, %s of monolithic JSON with base64 screenshots\n", a);

    cfg.now_ms = 1735000000000ull;
    if ((r = ts_store_open(dir, &cfg, &st)) != TS_OK) die("open", r);
    tsk_progress_begin(&bar, "migrate");
    mo.progress = on_progress;
    mo.progress_user = &bar;
    r = ts_migrate_run(st, &mo, &rep);
    tsk_progress_end(&bar);
    if (r != TS_OK) die("migrate", r);
    printf("2. migrated %llu sessions (%llu failed): %llu distinct screenshots stored, "
           "%llu deduplicated, index built: %s\n",
           (unsigned long long)rep.migrated, (unsigned long long)rep.failed,
           (unsigned long long)rep.attachments_imported,
           (unsigned long long)rep.attachments_deduplicated, rep.index_built ? "yes" : "no");
    ts_migrate_report_free(&rep);

    printf("3. search\n");
    {
        ts_query q;
        const char *perf[] = {"performance"};
        memset(&q, 0, sizeof q); q.text = "parser";                 search(st, "text \"parser\"", &q);
        memset(&q, 0, sizeof q); q.text = "cach*";                  search(st, "prefix \"cach*\"", &q);
        memset(&q, 0, sizeof q); q.tags = perf; q.tag_count = 1;    search(st, "tag performance", &q);
        memset(&q, 0, sizeof q); q.category = "Design"; q.text = "menu review"; q.op = TS_QUERY_OR;
        search(st, "category Design OR text", &q);
        memset(&q, 0, sizeof q); q.has_from = 1; q.from_ms = 1732000000000ll; q.has_to = 1;
        q.to_ms = 1732600000000ll;                                  search(st, "started 19-26 Nov 2024", &q);
        memset(&q, 0, sizeof q); q.text = "café";                   search(st, "text \"café\" (unicode)", &q);
    }

    printf("4. show session-09, screenshots 0-1 (records keep attachmentId, gain attachmentHash):\n");
    if ((r = ts_session_load_range(st, "session-09", "screenshots", 0, 2, &blob)) != TS_OK) die("load", r);
    printf("  %.*s\n", (int)(blob.len > 400 ? 400 : blob.len), (const char *)blob.data);
    ts_blob_free(&blob);

    {   /* compress the ended sessions now (normally idle time does it, after 7 days) */
        ts_compress_config cc = ts_compress_config_default();
        ts_compress_stats cz;
        cc.mode = TS_COMPRESS_MANUAL;
        cc.age_ms = 1;
        if ((r = ts_compress_configure(st, &cc)) != TS_OK) die("compress", r);
        while ((r = ts_compress_run(st, cfg.now_ms, 0)) == TS_OK) {}
        if (r != TS_DONE) die("compress", r);
        if ((r = ts_store_flush(st)) != TS_OK) die("flush", r);
        if ((r = ts_compress_stats_get(st, 1, &cz)) != TS_OK) die("compress stats", r);
        human(cz.bytes_before, a, sizeof a);
        human(cz.bytes_after, b, sizeof b);
        human(cz.image_bytes_before, c, sizeof c);
        printf("5. compressed %llu ended sessions: %llu JSON files %s -> %s; ",
               (unsigned long long)cz.sessions_compressed, (unsigned long long)cz.files_compressed, a, b);
        human(cz.image_bytes_after, a, sizeof a);
        printf("%llu screenshots to lossless WebP %s -> %s\n",
               (unsigned long long)cz.images_converted, c, a);
    }
    if ((r = ts_store_stats_get(st, &stats)) != TS_OK) die("stats", r);
    human(stats.attachments.logical_bytes, a, sizeof a);
    human(stats.attachments.stored_bytes, b, sizeof b);
    human(stats.attachments.dedup_saved_bytes, c, sizeof c);
    printf("6. storage: %llu sessions; %llu attachment objects, %s referenced, %s stored, %s saved by dedup\n",
           (unsigned long long)stats.sessions, (unsigned long long)stats.attachments.objects, a, b, c);
    printf("   index: %llu terms, %llu postings; I/O: %llu writes, %llu file syncs, %llu dir syncs\n",
           (unsigned long long)stats.index.terms, (unsigned long long)stats.index.postings,
           (unsigned long long)stats.io.writes, (unsigned long long)stats.io.file_syncs,
           (unsigned long long)stats.io.dir_syncs);
    if ((r = ts_store_close(st)) != TS_OK) die("close", r);
    printf("\nTry: build/tsk list %s   build/tsk search %s --text parser   build/tsk stats %s\n",
           dir, dir, dir);
    return 0;
}
