/* tsk_cli.h - the command-line plumbing of tsk (examples/tsk.c): argument
   parsing with options anywhere before "--", JSON output, progress lines and
   the exit-code contract (0 ok, 1 failure with a one-line reason, 2 usage).
   Nothing here knows about taskstore; tsk.c is the library's client. */
#ifndef TSK_CLI_H
#define TSK_CLI_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__) || defined(__clang__)
#define TSK_MAYBE_UNUSED __attribute__((unused))
#else
#define TSK_MAYBE_UNUSED
#endif

#define TSK_EXIT_OK 0
#define TSK_EXIT_FAIL 1
#define TSK_EXIT_USAGE 2
#define TSK_MAX_ARGS 64

/* One parsed command line: positional arguments (after the command word)
   and options. An option takes a value when it is listed in `valued`. */
typedef struct tsk_args {
    const char *pos[TSK_MAX_ARGS];
    int npos;
    const char *opt_name[TSK_MAX_ARGS];
    const char *opt_val[TSK_MAX_ARGS];  /* NULL for flags */
    int nopt;
    int json;
    int index_records;                  /* --index-records (every command) */
} tsk_args;

static const char *tsk_prog = "tsk";

TSK_MAYBE_UNUSED static void tsk_die_usage(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tsk_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see '%s help')\n", tsk_prog);
    exit(TSK_EXIT_USAGE);
}

TSK_MAYBE_UNUSED static void tsk_die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tsk_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(TSK_EXIT_FAIL);
}

static int tsk_in_list(const char *name, const char *const *list)
{
    for (; list && *list; list++)
        if (strcmp(name, *list) == 0) return 1;
    return 0;
}

/* Options may come anywhere before "--"; everything after it is positional
   (so a session id may start with '-'). --opt=value and --opt value both work
   for valued options. Unknown options are a usage error. */
TSK_MAYBE_UNUSED static void tsk_parse(int argc, char **argv, const char *const *flags,
                      const char *const *valued, tsk_args *a)
{
    int i, dashdash = 0;
    memset(a, 0, sizeof *a);
    for (i = 0; i < argc; i++) {
        char *s = argv[i];
        if (!dashdash && strcmp(s, "--") == 0) { dashdash = 1; continue; }
        if (!dashdash && s[0] == '-' && s[1] == '-' && s[2]) {
            char name[64];
            const char *eq = strchr(s + 2, '='), *val = NULL;
            size_t n = eq ? (size_t)(eq - (s + 2)) : strlen(s + 2);
            if (n >= sizeof name) tsk_die_usage("option too long: %s", s);
            memcpy(name, s + 2, n); name[n] = 0;
            if (strcmp(name, "json") == 0 && !eq) { a->json = 1; continue; }
            if (strcmp(name, "index-records") == 0 && !eq) { a->index_records = 1; continue; }
            if (tsk_in_list(name, valued)) {
                if (eq) val = eq + 1;
                else if (i + 1 < argc) val = argv[++i];
                else tsk_die_usage("option --%s needs a value", name);
            } else if (!tsk_in_list(name, flags) || eq) {
                tsk_die_usage("unknown option --%s", name);
            }
            if (a->nopt >= TSK_MAX_ARGS) tsk_die_usage("too many options");
            a->opt_name[a->nopt] = s + 2;   /* compared by prefix below */
            a->opt_val[a->nopt] = val;
            a->nopt++;
            continue;
        }
        if (a->npos >= TSK_MAX_ARGS) tsk_die_usage("too many arguments");
        a->pos[a->npos++] = s;
    }
}

static int tsk_opt_matches(const char *stored, const char *name)
{
    size_t n = strlen(name);
    return strncmp(stored, name, n) == 0 && (stored[n] == 0 || stored[n] == '=');
}

TSK_MAYBE_UNUSED static int tsk_flag(const tsk_args *a, const char *name)
{
    int i;
    for (i = 0; i < a->nopt; i++)
        if (tsk_opt_matches(a->opt_name[i], name)) return 1;
    return 0;
}

/* The last value given for a valued option, or NULL. */
TSK_MAYBE_UNUSED static const char *tsk_opt(const tsk_args *a, const char *name)
{
    int i;
    const char *v = NULL;
    for (i = 0; i < a->nopt; i++)
        if (tsk_opt_matches(a->opt_name[i], name)) v = a->opt_val[i];
    return v;
}

/* Every value of a repeatable option, in order; returns the count. */
TSK_MAYBE_UNUSED static int tsk_opt_all(const tsk_args *a, const char *name, const char **out, int max)
{
    int i, n = 0;
    for (i = 0; i < a->nopt && n < max; i++)
        if (tsk_opt_matches(a->opt_name[i], name)) out[n++] = a->opt_val[i];
    return n;
}

TSK_MAYBE_UNUSED static long long tsk_parse_ll(const char *s, const char *what)
{
    char *end;
    long long v;
    if (!s || !*s) tsk_die_usage("%s needs a number", what);
    v = strtoll(s, &end, 10);
    if (*end) tsk_die_usage("%s is not a whole number: %s", what, s);
    return v;
}

/* ---- JSON output ---------------------------------------------------------- */

static void tsk_json_str(FILE *f, const char *s, size_t n)
{
    size_t i;
    fputc('"', f);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { fputc('\\', f); fputc(c, f); }
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

TSK_MAYBE_UNUSED static void tsk_json_cstr(FILE *f, const char *s) { tsk_json_str(f, s, strlen(s)); }

/* ---- progress on stderr --------------------------------------------------
   A redrawn bar when stderr is a terminal, a plain percentage line (one per
   whole percent) otherwise, so logs stay readable. */

typedef struct tsk_progress {
    const char *label;
    int tty, last_pct;
    time_t start;
} tsk_progress;

TSK_MAYBE_UNUSED static void tsk_progress_begin(tsk_progress *p, const char *label)
{
    p->label = label;
    p->tty = isatty(2);
    p->last_pct = -1;
    p->start = time(NULL);
}

TSK_MAYBE_UNUSED static void tsk_progress_update(tsk_progress *p, unsigned long long done, unsigned long long total)
{
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct == p->last_pct) return;
    p->last_pct = pct;
    if (p->tty) {
        int i, w = 30, fill = pct * w / 100;
        fprintf(stderr, "\r%-10s [", p->label);
        for (i = 0; i < w; i++) fputc(i < fill ? '#' : '.', stderr);
        fprintf(stderr, "] %3d%% %llu/%llu", pct, done, total);
    } else {
        fprintf(stderr, "%s: %d%% (%llu/%llu)\n", p->label, pct, done, total);
    }
    fflush(stderr);
}

TSK_MAYBE_UNUSED static void tsk_progress_end(tsk_progress *p)
{
    if (p->tty && p->last_pct >= 0) fputc('\n', stderr);
}

/* Reads a whole file (or stdin for "-"); exits with a one-line reason. */
TSK_MAYBE_UNUSED static char *tsk_read_file(const char *path, size_t *len_out)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f) tsk_die("cannot open %s", path);
    for (;;) {
        size_t n;
        if (len + 65536 + 1 > cap) {
            char *nb;
            cap = cap ? cap * 2 : 65536 * 2;
            nb = (char *)realloc(buf, cap);
            if (!nb) tsk_die("out of memory reading %s", path);
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    if (ferror(f)) tsk_die("cannot read %s", path);
    if (f != stdin) fclose(f);
    buf[len] = 0;
    *len_out = len;
    return buf;
}

#endif
