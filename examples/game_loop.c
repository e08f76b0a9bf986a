/* game_loop.c - a frame-loop tool recording a work session.

   Simulates 60 fps for a few minutes of app time: every frame calls
   ts_store_tick() with a 1 ms budget; every second it appends a screenshot
   (every fourth one identical to an earlier frame, as static screens are);
   every 10 seconds an audio segment. It measures the wall time spent inside
   the library per frame and prints the median and the worst frame, which is
   what a game or UI thread cares about: no call waits for the disk.

     build/game_loop [STORE_DIR] [SECONDS]   (default build/game-store, 120) */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "demo_images.h"

#include <stdio.h>
#include <time.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "build/game-store";
    int seconds = argc > 2 ? atoi(argv[2]) : 120, frames, f, shots = 0;
    uint64_t t0 = 1700000000000ull, now = t0;
    ts_store_config cfg = ts_store_config_default();
    ts_store *st;
    double *cost, total = 0;
    char session[256], record[256], hash[65];
    ts_result r;

    if (seconds < 1) seconds = 1;
    frames = seconds * 60;
    cost = (double *)malloc(sizeof(double) * (size_t)frames);
    if (!cost) return 1;
    cfg.now_ms = now;
    if ((r = ts_store_open(dir, &cfg, &st)) != TS_OK) {
        fprintf(stderr, "game_loop: cannot open %s: %s\n", dir, ts_result_str(r));
        return 1;
    }
    snprintf(session, sizeof session,
             "{\"id\":\"game-%llu\",\"name\":\"Level editor session\",\"startTime\":%llu,"
             "\"status\":\"active\",\"tags\":[\"editor\",\"recording\"],\"category\":\"Design\"}",
             (unsigned long long)now, (unsigned long long)now);
    if ((r = ts_session_save(st, session, strlen(session), NULL)) != TS_OK) {
        fprintf(stderr, "game_loop: save: %s\n", ts_result_str(r));
        return 1;
    }
    snprintf(session, sizeof session, "game-%llu", (unsigned long long)now);

    for (f = 0; f < frames; f++) {
        double start, spent;
        unsigned char *png = NULL;
        size_t png_len = 0;
        now = t0 + (uint64_t)f * 1000u / 60u;
        if (f % 60 == 0) {  /* the app captures its frame outside the timed part */
            uint32_t seed = (uint32_t)(f / 60);
            if (seed % 4 == 3) seed = 0;          /* a static screen: same pixels */
            png = demo_screenshot_png(320, 200, seed, &png_len);
            snprintf(record, sizeof record,
                     "{\"id\":\"shot-%d\",\"timestamp\":%llu,\"activity\":\"Editing level %d\"}",
                     f / 60, (unsigned long long)now, f / 600);
        }
        start = now_us();
        if (png) {
            r = ts_session_append_screenshot(st, session, record, strlen(record), png, png_len,
                                             "image/png", hash, NULL);
            if (r != TS_OK) { fprintf(stderr, "append: %s\n", ts_result_str(r)); return 1; }
            shots++;
        }
        if (f % 600 == 300) {
            snprintf(record, sizeof record,
                     "{\"id\":\"audio-%d\",\"timestamp\":%llu,\"transcription\":\"placing the "
                     "spawn points near the bridge\"}", f / 600, (unsigned long long)now);
            r = ts_session_append(st, session, "audioSegments", record, strlen(record), NULL);
            if (r != TS_OK) { fprintf(stderr, "append audio: %s\n", ts_result_str(r)); return 1; }
        }
        r = ts_store_tick(st, now, 1000);
        spent = now_us() - start;
        if (r != TS_OK) { fprintf(stderr, "tick: %s\n", ts_result_str(r)); return 1; }
        cost[f] = spent;
        total += spent;
        free(png);
    }
    {
        double start = now_us();
        r = ts_store_close(st);
        if (r != TS_OK) { fprintf(stderr, "close: %s\n", ts_result_str(r)); return 1; }
        qsort(cost, (size_t)frames, sizeof cost[0], cmp_double);
        printf("game_loop: %d frames (%d s at 60 fps), %d screenshots appended\n", frames, seconds, shots);
        printf("  time inside the library per frame: median %.1f us, p99 %.1f us, worst %.1f us\n",
               cost[frames / 2], cost[(size_t)frames * 99 / 100], cost[frames - 1]);
        printf("  mean %.1f us per frame (%.3f%% of a 16.7 ms frame); final flush+close %.1f ms\n",
               total / frames, total / frames / 166.67, (now_us() - start) / 1000.0);
    }
    free(cost);
    return 0;
}
