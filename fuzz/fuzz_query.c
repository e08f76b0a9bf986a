/* fuzz/fuzz_query.c: the CLI query-string parser (ts_query_parse), and every
 * query it accepts run against a small fixed index; the raw bytes also go
 * through the tokenizer. Invariants: a parse either succeeds with strings
 * that fit in the input, or fails with TS_E_INVALID/TS_E_TOOBIG and a
 * message; an accepted query always searches successfully. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>
#include <string.h>

static ts_index *fq_index; /* built once; searches only read it */

static void fq_build(void)
{
    static const char *const t1[] = { "work", "home" }, *const t2[] = { "a b" }, *const p1[] = { "t1" };
    static const char *const names[] = { "Testing the parser", "another test", ("Team tea \xC3\x89" "cole"),
                                         "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E notes", "tests tests tests", "" };
    ts_index_doc d[6];
    char ids[6][4];
    size_t i;
    if (fq_index) return;
    if (ts_index_create(NULL, &fq_index) != TS_OK) abort();
    memset(d, 0, sizeof d);
    for (i = 0; i < 6; i++) {
        ids[i][0] = 's'; ids[i][1] = (char)('0' + i); ids[i][2] = 0;
        d[i].id = ids[i]; d[i].id_len = 2;
        d[i].has_start_time = i != 3; d[i].start_time_ms = (int64_t)i * 2629800000ll - 5;
        d[i].name = names[i]; d[i].name_len = strlen(names[i]);
        d[i].tags = i & 1 ? t1 : t2; d[i].tag_count = i & 1 ? 2 : 1;
        d[i].topics = p1; d[i].topic_count = i % 3 == 0;
        if (i % 2 == 0) { d[i].category = "Dev"; d[i].category_len = 3; }
        if (i % 3 == 1) { d[i].status = "done"; d[i].status_len = 4; }
    }
    if (ts_index_build(fq_index, d, 6, 0) != TS_OK) abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fq_build();
    return 0;
}

static int fq_count(void *user, const char *t, size_t n)
{
    if (!n || !t) abort();
    ++*(size_t *)user;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ts_query_parsed p;
    ts_error_info e;
    ts_result r;
    size_t ntok = 0, i;
    fq_build();
    if (ts_tokenize((const char *)data, size, NULL, fq_count, &ntok) != TS_OK || ntok > size) abort();
    r = ts_query_parse((const char *)data, size, NULL, &p, &e);
    if (r == TS_OK) {
        const ts_query *q = &p.query;
        ts_index_hits h;
        if (q->text && strlen(q->text) > size) abort();
        if (q->tag_count + q->topic_count > size) abort();
        for (i = 0; i < q->tag_count; i++) if (strlen(q->tags[i]) > size) abort();
        for (i = 0; i < q->topic_count; i++) if (strlen(q->topics[i]) > size) abort();
        if (q->op != TS_QUERY_AND && q->op != TS_QUERY_OR) abort();
        if (ts_index_search(fq_index, q, &h) != TS_OK) abort();
        if (h.count > h.total || h.total > 6) abort();
        for (i = 0; i < h.count; i++) if (h.id_lens[i] != 2 || h.ids[i][2] != 0) abort();
        ts_index_hits_free(&h);
    } else {
        if (r != TS_E_INVALID && r != TS_E_TOOBIG) abort();
        if (!e.message[0] || p.mem_) abort();
    }
    ts_query_parsed_free(&p);
    return 0;
}
