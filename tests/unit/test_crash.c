/* Crash torture (issue 11, DESIGN.md section 4): the scripted workload of
   torture_model.h (sessions saved and re-saved, screenshots with duplicate
   images, documents, deletes, replaced streams, GC, tick/idle, a clean
   reopen and a kill) runs on ts_io_fault over ts_io_mem; power is lost at
   every I/O operation in turn, in both crash modes (drop everything
   unsynced; each unsynced change survives or not at random, torn tails
   included), the store is reopened and verified: acknowledged data present
   and identical, no torn file read as valid, attachments whole, the list and
   the index equal to a rebuild, reference counts equal to the references
   held after a repair pass. A run without faults checks the same exactly
   (reference counts without repair). The store indexes record and document
   text (index_record_text, torture_model.h's default), so "the index equal
   to a rebuild" covers the record text read back from the chunks; each
   workload also runs once, clean, without the option.

   Default: one workload, every point in both modes (a few thousand
   reopen+verify cycles). TS_TEST_LONG=1: three longer workloads, every
   point in both modes plus a seeded random sample of 10,000 more points
   (mode and tearing seed drawn too). TS_TEST_SMALL=1 (valgrind): a few
   points only. Prints the counts as "crash-stats: ...". */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "../harness.h"
#include "torture_model.h"

static uint64_t g_points, g_runs_failed, g_ops_total, g_checks, g_kills;

/* The workloads: seed, random operations after the prefix, crash mode of
   the kills inside the workload. */
typedef struct wl { uint64_t seed; size_t nrandom; int kill_mode; } wl;

static int run_baseline(const wl *w, uint64_t *total_ops, int record_text, int sync_all)
{
    tm_env e;
    int bad;
    ts_store_config cfg = tm_default_cfg();
    cfg.index_record_text = record_text;
    cfg.sync_all = sync_all;
    tm_env_init(&e, TM_MODE_CLEAN, &cfg);
    e.kill_mode = w->kill_mode;
    tm_workload(&e, w->seed, w->nrandom);
    *total_ops = ts_io_fault_ops(e.fault);
    if (!e.failed) tm_verify(&e, 1, "clean run");
    bad = e.failed;
    if (bad) printf("  clean run of workload %llu%s%s: %s\n", (unsigned long long)w->seed,
                    record_text ? "" : " (index without record text)", sync_all ? " (sync_all)" : "", e.why);
    printf("crash-workload %llu%s%s: %llu operations, %llu store calls, %llu I/O ops, %llu sessions compressed%s, "
           "%llu migrated, %llu kills\n", (unsigned long long)w->seed,
           record_text ? "" : " (index without record text)", sync_all ? " (sync_all)" : "",
           (unsigned long long)e.ops_run,
           (unsigned long long)e.calls, (unsigned long long)*total_ops, (unsigned long long)e.compressed,
           e.no_compress ? " (no compression hooks in this build)" : "", (unsigned long long)e.migrated,
           (unsigned long long)e.kills);
    g_checks += e.checks;
    g_kills += e.kills;
    tm_env_free(&e);
    return bad;
}

/* Power loss at operation k (crash mode mode, tearing seed cseed), then the
   verification; sync_all: the store commits by file system. Returns 0 when
   every invariant holds. */
static int crash_at(const wl *w, uint64_t k, int mode, uint64_t cseed, int sync_all)
{
    tm_env e;
    ts_fault_plan p;
    int bad;
    ts_store_config cfg = tm_default_cfg();
    cfg.sync_all = sync_all;
    tm_env_init(&e, TM_MODE_CRASH, &cfg);
    e.kill_mode = w->kill_mode;
    memset(&p, 0, sizeof p);
    p.fail_at = k;
    p.crash = 1;
    tm_set_plan(&e, &p);
    tm_workload(&e, w->seed, w->nrandom);
    if (!e.failed) {
        /* the process is dead: its handle goes (every I/O fails now), then
           the disk keeps what a real one would */
        if (e.s) {
            ts_store_close(e.s);
            e.s = NULL;
        }
        ts_io_mem_crash(e.mem, (ts_crash_mode)mode, cseed);
        tm_verify(&e, 0, "after the crash");
    }
    bad = e.failed;
    g_points++;
    g_checks += e.checks;
    g_kills += e.kills;
    if (bad && g_runs_failed++ < 6)
        printf("  workload %llu%s, crash at I/O op %llu (%s, seed %llu):\n  %s\n", (unsigned long long)w->seed,
               sync_all ? " (sync_all)" : "", (unsigned long long)k,
               mode == TS_CRASH_DROP_UNSYNCED ? "drop unsynced" : "random", (unsigned long long)cseed, e.why);
    tm_env_free(&e);
    return bad;
}

static uint64_t rnd_s = 0x2545F4914F6CDD1Dull;
static uint64_t rnd64(void)
{
    rnd_s ^= rnd_s << 13; rnd_s ^= rnd_s >> 7; rnd_s ^= rnd_s << 17;
    return rnd_s;
}

TS_TEST(test_crash_every_point)
{
    static const wl short_wl[] = { { 1, 40, TS_CRASH_DROP_UNSYNCED } };
    static const wl long_wl[] = { { 1, 40, TS_CRASH_DROP_UNSYNCED }, { 2, 160, TS_CRASH_RANDOM },
                                  { 3, 260, TS_CRASH_DROP_UNSYNCED } };
    int lng = tm_is_test_long(), small = tm_is_test_small();
    const wl *wls = lng ? long_wl : short_wl;
    size_t nwl = lng ? 3 : 1, i;
    uint64_t totals[2][3] = { { 0, 0, 0 }, { 0, 0, 0 } }, bad = 0, k, sample = 0;
    int sa;
    /* both commit modes: file + directory syncs (the default) and commit by
       file system (sync_all), whose I/O points differ */
    for (sa = 0; sa < 2; sa++) {
        for (i = 0; i < nwl; i++) {
            uint64_t off_total;
            TS_CHECK_OK(run_baseline(&wls[i], &totals[sa][i], 1, sa));
            g_ops_total += totals[sa][i];
            /* the index without record text (the default of a store) as well:
               the same workload, clean; the crash points below run with it */
            TS_CHECK_OK(run_baseline(&wls[i], &off_total, 0, sa));
        }
    }
    for (sa = 0; sa < 2; sa++) {
        for (i = 0; i < nwl; i++) {
            uint64_t stride = small ? (totals[sa][i] / 6 + 1) : 1;
            for (k = 1; k <= totals[sa][i] + 1; k += stride) {
                bad += (uint64_t)crash_at(&wls[i], k, TS_CRASH_DROP_UNSYNCED, k, sa);
                bad += (uint64_t)crash_at(&wls[i], k, TS_CRASH_RANDOM, k * 7919u + wls[i].seed, sa);
            }
        }
    }
    if (lng) {
        /* a seeded random sample on top: any workload, any point, either mode */
        for (sample = 0; sample < 10000; sample++) {
            uint64_t x = rnd64();
            const wl *w = &wls[x % nwl];
            int s_all = (int)((x >> 32) & 1);
            uint64_t total = totals[s_all][x % nwl];
            k = 1 + (rnd64() % total);
            bad += (uint64_t)crash_at(w, k, (rnd64() & 1) ? TS_CRASH_RANDOM : TS_CRASH_DROP_UNSYNCED, rnd64(),
                                      s_all);
        }
    }
    printf("crash-stats: workloads %u (each in both commit modes), I/O ops per clean run %llu, crash points verified %llu "
           "(random sample %llu), kills inside workloads %llu, live checks %llu, failures %llu\n",
           (unsigned)nwl, (unsigned long long)g_ops_total, (unsigned long long)g_points,
           (unsigned long long)sample, (unsigned long long)g_kills, (unsigned long long)g_checks,
           (unsigned long long)bad);
    TS_CHECK_EQ_INT(bad, 0);
}

int main(void)
{
    TS_RUN(test_crash_every_point);
    return ts_test_report("crash");
}
