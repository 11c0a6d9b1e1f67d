/*
 * A small test framework and shared helpers for the libnfslock C tests.
 *
 * Every test runs in a forked child of the runner (harness.c), inside a fresh temporary
 * directory (T_DIR), under alarm(), and in a process group of its own so that anything it
 * leaves running is killed afterwards. A test reports failures through the CHECK and
 * REQUIRE macros below; the child's exit status tells the runner whether it passed.
 */
#ifndef NFSLOCK_C_HARNESS_H
#define NFSLOCK_C_HARNESS_H

/* Needed for unshare, mount flags, pipe2 and friends; must come before any system header. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "nfslock.h"

/* ---- test registry ---------------------------------------------------------------- */

struct test {
    const char *name;
    void (*fn)(void);
    unsigned timeout_s; /* alarm() for the whole test; 0 = the default (30 s) */
    int heavy;          /* left out by --quick (multi-process stress, long waits) */
};

/* Each test_*.c file exports one table, terminated by an entry whose name is NULL. */
extern const struct test api_tests[];
extern const struct test error_tests[];
extern const struct test record_tests[];
extern const struct test concurrency_tests[];
extern const struct test session_tests[];
extern const struct test fork_tests[];
extern const struct test lease_tests[];

/* ---- state of the running test (valid inside a test child) ----------------------- */

/* The absolute path of this test's private temporary directory. */
extern char T_DIR[PATH_MAX];
/* Number of failed checks so far in this process (threads may fail checks too). */
extern atomic_int t_failures;
/* Multiplies every time bound in the tests (harness --timeout-scale, for valgrind). */
extern int t_time_scale;

/* ---- checks ----------------------------------------------------------------------- */

void t_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Ends the current process as failed (used by REQUIRE). */
_Noreturn void t_abort(void);

/* The symbolic name of an errno value ("EAGAIN"), or the number for unknown codes. */
const char *errname(int code);

/* A check whose failure is recorded, after which the test goes on. */
#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond))                                                                    \
            t_fail(__FILE__, __LINE__, "check failed: %s", #cond);                      \
    } while (0)

/* Like CHECK, with a printf-style explanation (at least one argument after fmt). */
#define CHECKF(cond, fmt, ...)                                                          \
    do {                                                                                \
        if (!(cond))                                                                    \
            t_fail(__FILE__, __LINE__, "check failed: %s: " fmt, #cond, __VA_ARGS__);   \
    } while (0)

/* A check that makes the rest of the test meaningless when it fails. */
#define REQUIRE(cond)                                                                   \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            t_fail(__FILE__, __LINE__, "requirement failed: %s", #cond);                \
            t_abort();                                                                  \
        }                                                                               \
    } while (0)

/* Checks that an nfslock call returns the expected code; prints both by name. */
#define CHECK_RC(expr, want)                                                            \
    do {                                                                                \
        int rc_ = (expr), want_ = (want);                                               \
        if (rc_ != want_)                                                               \
            t_fail(__FILE__, __LINE__, "%s: expected %s, got %s", #expr,                \
                   errname(want_), errname(rc_));                                       \
    } while (0)

#define REQUIRE_RC(expr, want)                                                          \
    do {                                                                                \
        int rc_ = (expr), want_ = (want);                                               \
        if (rc_ != want_) {                                                             \
            t_fail(__FILE__, __LINE__, "%s: expected %s, got %s", #expr,                \
                   errname(want_), errname(rc_));                                       \
            t_abort();                                                                  \
        }                                                                               \
    } while (0)

#define CHECK_STR(got, want)                                                            \
    do {                                                                                \
        const char *g_ = (got), *w_ = (want);                                           \
        if (g_ == NULL || strcmp(g_, w_) != 0)                                          \
            t_fail(__FILE__, __LINE__, "%s: expected \"%s\", got %s%s%s", #got, w_,     \
                   g_ ? "\"" : "", g_ ? g_ : "NULL", g_ ? "\"" : "");                   \
    } while (0)

/* ---- paths and files -------------------------------------------------------------- */

/* T_DIR "/" name, in one of 32 rotating per-thread buffers: valid for the next 31 calls
 * of tp/lockfile_of in the same thread (copy it to keep it longer). */
const char *tp(const char *name);
/* path ".nfs_lock", in the same rotating buffers. */
const char *lockfile_of(const char *path);

/* Creates or truncates `path` with exactly these bytes (mode 0644); aborts on error. */
void write_file(const char *path, const void *data, size_t len);
void write_str(const char *path, const char *text);
/* The whole file, NUL-terminated past its length (malloc'd), or NULL if unreadable. */
char *read_file(const char *path, size_t *len_out);
/* 1 when the file exists (not following symlinks) and holds exactly these bytes. */
int file_is(const char *path, const void *data, size_t len);
/* 1 when something (file, dir, symlink, dangling or not) is at `path`. */
int exists(const char *path);
/* Number of ".nfslock-*" claim files in `dir`, or -1 when it cannot be read. */
int count_claims(const char *dir);
/* Removes a tree without following symlinks (best effort). */
void rm_rf(const char *path);

/* ---- time ------------------------------------------------------------------------- */

long long now_ms(void);
void sleep_ms(long ms);

/* ---- this host and records -------------------------------------------------------- */

/* gethostname(), as the library writes it into records. */
const char *this_host(void);
/* When process `pid` started, in microseconds since the epoch (Core's formula), or -1. */
long long proc_start_us(pid_t pid);
/* Formats a start time as Core's two atoms: "YYYY-MM-DD HH:MM:SS.ffffffZ". */
void format_start_time(long long us, char *out, size_t cap);
/* Appends the machine-form encoding of an atom to out (quoted and escaped as needed);
 * returns 1 when the atom was written quoted. */
int encode_atom(char *out, size_t cap, const char *bytes, size_t len);
/* A record in machine form, as Core's v2 writes it. start_time NULL = no such field. */
void make_record(char *out, size_t cap, const char *host, long pid, const char *message,
                 const char *start_time);

/* ---- processes -------------------------------------------------------------------- */

/* fork() after flushing stdio, so buffered output is not printed twice. */
pid_t fork_flushed(void);
/* Waits for `pid`; returns its exit status, or 128+signal when it was killed. */
int wait_status(pid_t pid);
/* Runs fn(arg) in a forked child that exits normally (exit(), so at-exit handlers run);
 * returns 0 when the child's checks all passed. */
int run_in_child(void (*fn)(void *), void *arg);
/* The pid of a process that existed and is now dead and reaped. */
pid_t dead_pid(void);
/* A child that only sleeps (until killed or until the test process dies). */
pid_t start_sleeper(void);
void stop_process(pid_t pid);

/* A child process holding a lock, controlled through a pipe. */
struct holder {
    pid_t pid;
    int ctl;      /* write end: one byte = "unlock and exit" */
    int rc;       /* what nfslock_create returned in the child */
};
/* Starts a holder of `path`; returns after the child's create; h->rc says how it went. */
void holder_start(struct holder *h, const char *path, const char *message);
/* Tells the holder to unlock and exit; returns the child's nfslock_unlock code
 * (or a value >= 128 when the child died of a signal). */
int holder_release(struct holder *h);
/* SIGKILLs the holder (no unlock, no at-exit) and reaps it. */
void holder_kill(struct holder *h);

#endif
