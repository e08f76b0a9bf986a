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
#include <time.h>

static int ts_test_passed_count, ts_test_failed_count, ts_test_cur_failed;
static const char *ts_test_cur_name = "";

#define TS_TEST(name) static void name(void)
#define TS_RUN(name)                                                        \
    do {                                                                    \
        clock_t ts_t0_ = clock();                                           \
        ts_test_cur_failed = 0; ts_test_cur_name = #name;                   \
        name();                                                             \
        if (ts_test_cur_failed) { ts_test_failed_count++;                   \
            printf("FAIL %s\n", #name); }                                   \
        else { ts_test_passed_count++;                                      \
            if (getenv("TS_TEST_VERBOSE")) printf("ok   %s (%.2f s)\n", #name, \
                (double)(clock() - ts_t0_) / CLOCKS_PER_SEC); }             \
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

/* How big the randomized and exhaustive loops are. TS_TEST_LONG=1 (the
   torture and long runs) asks for many more iterations; TS_TEST_SMALL=1 (the
   valgrind pass, ~40x slower than native) for few. ts_test_count(normal,
   long_count) is the one place that decides: a small run does 1/25 of the
   normal count, never less than one. */
static inline int ts_test_env_on(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != 0 && v[0] != '0';
}
static inline int ts_test_long(void) { return ts_test_env_on("TS_TEST_LONG"); }
static inline int ts_test_small(void) { return ts_test_env_on("TS_TEST_SMALL"); }
static inline long ts_test_count(long normal, long long_count)
{
    if (ts_test_small()) return normal / 25 > 0 ? normal / 25 : 1;
    return ts_test_long() ? long_count : normal;
}

static int ts_test_report(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, ts_test_passed_count,
           ts_test_failed_count);
    return ts_test_failed_count ? 1 : 0;
}
#endif
