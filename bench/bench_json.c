/* bench/bench_json.c: JSON reader/writer throughput on generated, realistic
 * store files (fixed seed):
 *   chunks  - 200 screenshot chunk files of 10 records (activity, OCR text,
 *             hashes, bounds), ~10 KB each, parsed one doc per file;
 *   legacy  - one ~5 MB Phase-3 session (screenshots, audio segments with
 *             transcriptions, summary), pretty-printed like the old app;
 *   numbers - a ~2 MB document of timestamps and floats.
 * Each figure is the median of 5 runs. Output:
 *   BENCH json_parse <MB/s> MB/s          (chunks; the everyday case)
 *   BENCH json_parse_legacy|json_parse_numbers|json_write|json_write_legacy ...
 * build: clang -O2 -march=native -I. bench/bench_json.c -o build/bench_json -lm */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>
#include <time.h>

#define RUNS 5

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: steadier on shared cores */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static const char *words[] = {
    "the", "editor", "function", "commit", "review", "taskstore", "chunk", "buffer", "session",
    "screenshot", "meeting", "notes", "design", "refactor", "test", "failing", "build", "merge",
    "caf\xC3\xA9", "na\xC3\xAFve", "\xE2\x82\xAC" "12", "\xE4\xB8\xAD\xE6\x96\x87", "r\xC3\xA9sum\xC3\xA9",
    "http://example.com/a?b=c", "TODO:", "fix", "#42", "\\\"quoted\\\"", "line\\nbreak", "tab\\t"
};

static void put_text(ts__buf *b, int nwords)
{
    int i;
    for (i = 0; i < nwords; i++) {
        if (i) ts__buf_putc(b, ' ');
        ts__buf_puts(b, words[rnd() % (sizeof words / sizeof words[0])]);
    }
}

static void put_hash(ts__buf *b)
{
    int i;
    for (i = 0; i < 64; i++) ts__buf_putc(b, "0123456789abcdef"[rnd() & 15]);
}

static void put_screenshot(ts__buf *b, int n, const char *indent)
{
    ts__buf_printf(b, "{%s\"id\":\"ss-%06d\",%s\"timestamp\":%lld,%s\"attachmentId\":\"att-%06d\",%s\"attachmentHash\":\"",
                   indent, n, indent, 1700000000000LL + (long long)n * 10000, indent, n, indent);
    put_hash(b);
    ts__buf_printf(b, "\",%s\"activity\":\"", indent);
    put_text(b, 10 + (int)(rnd() % 30));
    ts__buf_printf(b, "\",%s\"appName\":\"Visual Studio Code\",%s\"windowTitle\":\"main.c \xE2\x80\x94 taskstore\",%s\"ocrText\":\"",
                   indent, indent, indent);
    put_text(b, 80 + (int)(rnd() % 200));
    ts__buf_printf(b, "\",%s\"bounds\":{\"x\":0,\"y\":0,\"width\":1920,\"height\":1080},%s\"confidence\":0.%03d,%s\"tags\":[\"coding\",\"c\"]}",
                   indent, indent, (int)(rnd() % 1000), indent);
}

static char **make_chunks(int count, size_t **lens, size_t *total)
{
    char **files = (char **)malloc(sizeof(char *) * (size_t)count);
    int f, i;
    *lens = (size_t *)malloc(sizeof(size_t) * (size_t)count);
    *total = 0;
    for (f = 0; f < count; f++) {
        ts__buf b;
        ts__buf_init(&b, NULL);
        ts__buf_putc(&b, '[');
        for (i = 0; i < 10; i++) {
            if (i) ts__buf_putc(&b, ',');
            put_screenshot(&b, f * 10 + i, "");
        }
        ts__buf_putc(&b, ']');
        (*lens)[f] = b.len;
        *total += b.len;
        files[f] = (char *)ts__buf_take(&b, NULL, NULL);
    }
    return files;
}

static char *make_legacy(size_t *len)
{
    ts__buf b;
    int i;
    ts__buf_init(&b, NULL);
    ts__buf_puts(&b, "{\n  \"id\": \"legacy-session-1\",\n  \"name\": \"Long day\",\n  \"description\": \"");
    put_text(&b, 50);
    ts__buf_puts(&b, "\",\n  \"startTime\": 1690000000000,\n  \"endTime\": 1690030000000,\n  \"tags\": [\"work\", \"c\"],\n"
                     "  \"screenshots\": [\n");
    for (i = 0; i < 2400; i++) {
        if (i) ts__buf_puts(&b, ",\n");
        ts__buf_puts(&b, "    ");
        put_screenshot(&b, i, "\n      ");
    }
    ts__buf_puts(&b, "\n  ],\n  \"audioSegments\": [\n");
    for (i = 0; i < 1500; i++) {
        if (i) ts__buf_puts(&b, ",\n");
        ts__buf_printf(&b, "    {\n      \"id\": \"a-%d\",\n      \"timestamp\": %lld,\n      \"duration\": 30000,\n"
                           "      \"transcription\": \"", i, 1690000000000LL + (long long)i * 30000);
        put_text(&b, 40 + (int)(rnd() % 60));
        ts__buf_printf(&b, "\",\n      \"confidence\": 0.%02d,\n      \"speaker\": null\n    }", (int)(rnd() % 100));
    }
    ts__buf_puts(&b, "\n  ],\n  \"summary\": {\n    \"narrative\": \"");
    put_text(&b, 400);
    ts__buf_puts(&b, "\",\n    \"topics\": [\"storage\", \"json\"]\n  },\n  \"videoChunks\": []\n}\n");
    *len = b.len;
    return (char *)ts__buf_take(&b, NULL, NULL);
}

static char *make_numbers(size_t *len)
{
    ts__buf b;
    int i;
    ts__buf_init(&b, NULL);
    ts__buf_puts(&b, "{\"timestamps\":[");
    for (i = 0; i < 60000; i++)
        ts__buf_printf(&b, "%s%lld", i ? "," : "", 1700000000000LL + (long long)(rnd() % 100000000));
    ts__buf_puts(&b, "],\"scores\":[");
    for (i = 0; i < 60000; i++)
        ts__buf_printf(&b, "%s%.6g", i ? "," : "", (double)(rnd() % 1000000) / 997.0);
    ts__buf_puts(&b, "],\"small\":[");
    for (i = 0; i < 60000; i++)
        ts__buf_printf(&b, "%s%d", i ? "," : "", (int)(rnd() % 2000) - 1000);
    ts__buf_puts(&b, "]}");
    *len = b.len;
    return (char *)ts__buf_take(&b, NULL, NULL);
}

/* Parses each file `reps` times into a fresh doc; returns MB/s. */
static double parse_rate(char **files, const size_t *lens, int count, size_t total, int reps)
{
    double t0 = now_s(), dt;
    int r, f;
    for (r = 0; r < reps; r++) {
        for (f = 0; f < count; f++) {
            ts__json_doc doc;
            ts__json *root;
            ts__json_doc_init(&doc, NULL);
            if (ts__json_parse(&doc, files[f], lens[f], &root, NULL, "bench") != TS_OK) {
                fprintf(stderr, "bench_json: parse failed\n");
                exit(1);
            }
            ts__json_doc_free(&doc);
        }
    }
    dt = now_s() - t0;
    return (double)total * reps / dt / 1e6;
}

static double write_rate(ts__json **roots, int count, int pretty, int reps, size_t *out_bytes)
{
    ts__buf b;
    double t0, dt;
    size_t written = 0;
    int r, f;
    ts__buf_init(&b, NULL);
    t0 = now_s();
    for (r = 0; r < reps; r++) {
        for (f = 0; f < count; f++) {
            b.len = 0;
            if (ts__json_write(&b, roots[f], pretty) != TS_OK) { fprintf(stderr, "bench_json: write failed\n"); exit(1); }
            written += b.len;
        }
    }
    dt = now_s() - t0;
    ts__buf_free(&b);
    if (out_bytes) *out_bytes = written / (size_t)reps;
    return (double)written / dt / 1e6;
}

int main(void)
{
    enum { NCHUNKS = 200 };
    size_t *lens, total, legacy_len, num_len, i;
    char **chunks = make_chunks(NCHUNKS, &lens, &total);
    char *legacy = make_legacy(&legacy_len);
    char *numbers = make_numbers(&num_len);
    double v[RUNS], p_chunks, p_legacy, p_num, w_chunks, w_legacy, w_pretty;
    ts__json_doc docs;
    ts__json *roots[NCHUNKS], *legacy_root;
    int k;
    size_t nodes_bytes;

    /* warm up and sanity check */
    parse_rate(chunks, lens, NCHUNKS, total, 1);

    for (k = 0; k < RUNS; k++) v[k] = parse_rate(chunks, lens, NCHUNKS, total, 10);
    p_chunks = median(v, RUNS);
    for (k = 0; k < RUNS; k++) v[k] = parse_rate(&legacy, &legacy_len, 1, legacy_len, 4);
    p_legacy = median(v, RUNS);
    for (k = 0; k < RUNS; k++) v[k] = parse_rate(&numbers, &num_len, 1, num_len, 8);
    p_num = median(v, RUNS);

    ts__json_doc_init(&docs, NULL);
    for (i = 0; i < NCHUNKS; i++)
        if (ts__json_parse(&docs, chunks[i], lens[i], &roots[i], NULL, "bench") != TS_OK) return 1;
    if (ts__json_parse(&docs, legacy, legacy_len, &legacy_root, NULL, "bench") != TS_OK) return 1;
    nodes_bytes = docs.bytes;
    for (k = 0; k < RUNS; k++) v[k] = write_rate(roots, NCHUNKS, 0, 10, NULL);
    w_chunks = median(v, RUNS);
    for (k = 0; k < RUNS; k++) v[k] = write_rate(&legacy_root, 1, 0, 4, NULL);
    w_legacy = median(v, RUNS);
    for (k = 0; k < RUNS; k++) v[k] = write_rate(&legacy_root, 1, 1, 4, NULL);
    w_pretty = median(v, RUNS);

    printf("BENCH json_parse %.1f MB/s\n", p_chunks);
    printf("BENCH json_parse_legacy %.1f MB/s\n", p_legacy);
    printf("BENCH json_parse_numbers %.1f MB/s\n", p_num);
    printf("BENCH json_write %.1f MB/s\n", w_chunks);
    printf("BENCH json_write_legacy %.1f MB/s\n", w_legacy);
    printf("BENCH json_write_pretty %.1f MB/s\n", w_pretty);
    printf("BENCH json_doc_bytes_per_input_byte %.2f ratio\n", (double)nodes_bytes / (double)(total + legacy_len));
    printf("\n%-34s %10s\n", "input", "MB/s");
    printf("%-34s %10.1f\n", "parse: 200 chunk files (10 rec)", p_chunks);
    printf("%-34s %10.1f\n", "parse: legacy session", p_legacy);
    printf("%-34s %10.1f\n", "parse: numbers", p_num);
    printf("%-34s %10.1f\n", "write compact: chunk files", w_chunks);
    printf("%-34s %10.1f\n", "write compact: legacy session", w_legacy);
    printf("%-34s %10.1f\n", "write pretty: legacy session", w_pretty);
    printf("chunk files: %lu bytes total (%.1f KB each); legacy: %.2f MB; numbers: %.2f MB; arena: %.2f bytes per input byte\n",
           (unsigned long)total, (double)total / NCHUNKS / 1024, (double)legacy_len / 1e6, (double)num_len / 1e6,
           (double)nodes_bytes / (double)(total + legacy_len));

    ts__json_doc_free(&docs);
    for (i = 0; i < NCHUNKS; i++) free(chunks[i]);
    free(chunks); free(lens); free(legacy); free(numbers);
    return 0;
}
