/* migrate - moves a legacy (Phase 3) store to the chunked layout, with a
   progress line on stderr.

     migrate DIR [--dry-run]

   DIR holds sessions/{id}.json and attachments/{id}.json. Every session is
   backed up, migrated, verified against its legacy file, and only then is
   its legacy file removed; a session that fails keeps its legacy file and is
   listed with the reason. Exit status: 0 when every session migrated, 1
   otherwise. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

static uint64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)(tv.tv_usec / 1000);
}

static uint64_t clock_ms(void *user)
{
    (void)user;
    return now_ms();
}

static int on_progress(void *user, const ts_migrate_progress *p)
{
    (void)user;
    if (p->session_id && p->outcome == TS_MIGRATE_FAILED)
        fprintf(stderr, "\r\033[K  %s: %s\n", p->session_id, p->reason);
    fprintf(stderr, "\r\033[K%-8s %5.1f%%  %llu/%llu sessions", p->step, p->percent,
            (unsigned long long)p->done, (unsigned long long)p->total);
    if (p->eta_ms > 0) fprintf(stderr, "  ETA %llds", (long long)(p->eta_ms + 999) / 1000);
    if (p->finished) fputc('\n', stderr);
    return 0; /* non-zero would cancel after the current session */
}

int main(int argc, char **argv)
{
    ts_store_config cfg = ts_store_config_default();
    ts_migrate_options opt = ts_migrate_options_default();
    ts_migrate_report rep;
    ts_store *s;
    ts_result r;
    uint64_t failed;
    if (argc < 2 || (argc == 3 && strcmp(argv[2], "--dry-run") != 0) || argc > 3) {
        fprintf(stderr, "usage: %s DIR [--dry-run]\n", argv[0]);
        return 2;
    }
    cfg.now_ms = now_ms();
    if ((r = ts_store_open(argv[1], &cfg, &s)) != TS_OK) {
        fprintf(stderr, "%s: cannot open: %s\n", argv[1], ts_result_str(r));
        return 1;
    }
    opt.dry_run = argc == 3;
    opt.now_ms = cfg.now_ms;
    opt.progress = on_progress;
    opt.clock_ms_fn = clock_ms;
    r = ts_migrate_run(s, &opt, &rep);
    printf("%s%llu migrated, %llu skipped, %llu failed; %llu attachments stored, %llu deduplicated\n",
           opt.dry_run ? "dry run: " : "", (unsigned long long)rep.migrated,
           (unsigned long long)rep.skipped, (unsigned long long)rep.failed,
           (unsigned long long)rep.attachments_imported, (unsigned long long)rep.attachments_deduplicated);
    if (r != TS_OK) {
        ts_error_info e;
        ts_store_last_error(s, &e);
        fprintf(stderr, "migration stopped: %s\n", e.message);
    }
    failed = rep.failed;
    ts_migrate_report_free(&rep);
    if (ts_store_close(s) != TS_OK && r == TS_OK) r = TS_E_IO;
    return r == TS_OK && !failed ? 0 : 1;
}
