/* tests/harness.h: the smallest test runner that does the job.
 *
 *   TS_TEST(name) { TS_CHECK(expr); TS_CHECK_EQ_INT(a, b); ... }
 *   int main(void) { TS_RUN(name); ...; return ts_test_report("lru"); }
 *
 * Each test program prints one "N passed, N failed" line last; build.sh adds
 * the lines of all programs into the suite's closing line. A test counts as
 * failed when any check in it fails; the first failing checks are printed
 * with file and line. */
#ifndef TS_TEST_HARNESS_H
#define TS_TEST_HARNESS_H
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

static int ts_test_passed_count, ts_test_failed_count, ts_test_cur_failed;
static const char *ts_test_cur_name = "";

#define TS_TEST(name) static void name(void)
#define TS_RUN(name)                                                        \
    do {                                                                    \
        ts_test_cur_failed = 0; ts_test_cur_name = #name;                   \
        name();                                                             \
        if (ts_test_cur_failed) { ts_test_failed_count++;                   \
            printf("FAIL %s\n", #name); }                                   \
        else { ts_test_passed_count++;                                      \
            if (getenv("TS_TEST_VERBOSE")) printf("ok   %s\n", #name); }    \
        fflush(stdout);                                                     \
    } while (0)

#define TS_CHECK(expr)                                                      \
    do { if (!(expr)) { if (ts_test_cur_failed++ < 5)                       \
        printf("  %s:%d: %s: check failed: %s\n", __FILE__, __LINE__,      \
               ts_test_cur_name, #expr); } } while (0)
#define TS_CHECK_EQ_INT(a, b)                                               \
    do { long long ts_a_ = (long long)(a), ts_b_ = (long long)(b);          \
        if (ts_a_ != ts_b_) { if (ts_test_cur_failed++ < 5)                 \
        printf("  %s:%d: %s: %s == %s failed: %lld vs %lld\n", __FILE__,    \
               __LINE__, ts_test_cur_name, #a, #b, ts_a_, ts_b_); } } while (0)
#define TS_CHECK_EQ_STR(a, b)                                               \
    do { const char *ts_a_ = (a), *ts_b_ = (b);                             \
        if (!ts_a_ || !ts_b_ || strcmp(ts_a_, ts_b_) != 0) {                \
        if (ts_test_cur_failed++ < 5)                                       \
        printf("  %s:%d: %s: %s == %s failed: \"%s\" vs \"%s\"\n", __FILE__,\
               __LINE__, ts_test_cur_name, #a, #b, ts_a_ ? ts_a_ : "(null)",\
               ts_b_ ? ts_b_ : "(null)"); } } while (0)
#define TS_CHECK_OK(expr) TS_CHECK_EQ_INT((expr), 0)

static int ts_test_report(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, ts_test_passed_count,
           ts_test_failed_count);
    return ts_test_failed_count ? 1 : 0;
}
#endif
