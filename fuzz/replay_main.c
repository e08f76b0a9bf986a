/* fuzz/replay_main.c: runs a fuzz target without libFuzzer, so crashes
 * reproduce with any compiler and the corpus doubles as a regression test.
 *
 *   clang -g -O1 -fsanitize=address,undefined -I. fuzz/fuzz_X.c fuzz/replay_main.c -o build/replay_X
 *   build/replay_X fuzz/corpus/X crash-1234...     (files and directories, recursively)
 *
 * Each file is read whole and passed to LLVMFuzzerTestOneInput once;
 * LLVMFuzzerInitialize runs first if the target defines it. Exits non-zero
 * if a path cannot be read. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#if defined(__GNUC__) || defined(__clang__)
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);
#endif

static long replay_count;

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0, n;
    if (!f) { fprintf(stderr, "replay: cannot open %s\n", path); return 1; }
    for (;;) {
        if (len == cap) {
            unsigned char *p;
            cap = cap ? cap * 2 : 4096;
            p = (unsigned char *)realloc(buf, cap);
            if (!p) { fclose(f); free(buf); fprintf(stderr, "replay: out of memory\n"); return 1; }
            buf = p;
        }
        n = fread(buf + len, 1, cap - len, f);
        if (!n) break;
        len += n;
    }
    fclose(f);
    /* an exact-size copy, so ASan sees reads past the end */
    {
        unsigned char *exact = (unsigned char *)malloc(len ? len : 1);
        if (!exact) { free(buf); return 1; }
        if (len) memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    replay_count++;
    return 0;
}

static int replay_path(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    int bad = 0;
    if (stat(path, &st) != 0) { fprintf(stderr, "replay: cannot stat %s\n", path); return 1; }
    if (!S_ISDIR(st.st_mode)) return replay_file(path);
    d = opendir(path);
    if (!d) { fprintf(stderr, "replay: cannot open directory %s\n", path); return 1; }
    while ((e = readdir(d)) != NULL) {
        size_t n;
        char *sub;
        if (e->d_name[0] == '.') continue;
        n = strlen(path) + strlen(e->d_name) + 2;
        sub = (char *)malloc(n);
        if (!sub) { bad = 1; break; }
        snprintf(sub, n, "%s/%s", path, e->d_name);
        bad |= replay_path(sub);
        free(sub);
    }
    closedir(d);
    return bad;
}

int main(int argc, char **argv)
{
    int i, bad = 0;
#if defined(__GNUC__) || defined(__clang__)
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
#endif
    for (i = 1; i < argc; i++) {
        if (argv[i][0] == '-') continue; /* libFuzzer flags: ignored */
        bad |= replay_path(argv[i]);
    }
    printf("replayed %ld inputs\n", replay_count);
    return bad;
}
