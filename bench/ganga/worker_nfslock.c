/*
 * Benchmark worker for libnfslock's session / ID-allocation API.
 *
 * Same command line and output as worker_ganga.py, so bench/ganga/run treats
 * the two peers alike (see that file and run for the protocol):
 *
 *   worker_nfslock single DIR HELD SECONDS MAXCALLS IDFILE
 *       Fresh session on DIR.  Times make_new_ids(1) for SECONDS (at most
 *       MAXCALLS calls): "start CALLS NS"; then one bulk make_new_ids until the
 *       session holds HELD ids: "bulk N NS"; then times make_new_ids(1) again:
 *       "held NHELD CALLS NS".
 *   worker_nfslock concurrent DIR SECONDS MAXCALLS IDFILE
 *       Opens its session, prints "ready", waits for a line on stdin ("go"),
 *       calls make_new_ids(1) for SECONDS (at most MAXCALLS calls) and prints
 *       "done CALLS START_NS END_NS" (CLOCK_MONOTONIC).
 *   worker_nfslock calls DIR COUNT
 *       Exactly COUNT make_new_ids(1) calls, untimed (for strace counting).
 *
 * Every id returned is written to IDFILE, one per line, after the timed loops,
 * so the harness can check that no id was handed out twice.
 *
 * The session's name is "jobs", as in the Ganga worker.  Built by the harness
 * with gcc -O2 against include/ and target/release (rpath).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nfslock.h>

#define NAME "jobs"
/* The session's heartbeat timeout: how long it may go unrefreshed before other
 * sessions treat it as dead.  45 s, the same as Ganga's session expiry (its
 * [Configuration]DiskIOTimeout default), so both peers reap alike. */
#define TIMEOUT_MS 45000u

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "worker_nfslock: %s failed: %s (%s)\n", what, nfslock_last_error(), strerror(rc));
    exit(2);
}

/* ---- the ids handed out, kept until the end --------------------------- */

static uint64_t *ids;
static size_t n_ids, cap_ids;

/* Room for `more` ids at the end of `ids`; returns where they go. */
static uint64_t *ids_reserve(size_t more)
{
    if (n_ids + more > cap_ids) {
        size_t cap = cap_ids ? cap_ids : 4096;
        while (cap < n_ids + more)
            cap *= 2;
        uint64_t *p = realloc(ids, cap * sizeof *ids);
        if (p == NULL) {
            fprintf(stderr, "worker_nfslock: out of memory for %zu ids\n", cap);
            exit(2);
        }
        ids = p;
        cap_ids = cap;
    }
    return ids + n_ids;
}

static void write_ids(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "worker_nfslock: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    for (size_t i = 0; i < n_ids; i++)
        fprintf(f, "%llu\n", (unsigned long long)ids[i]);
    if (fclose(f) != 0) {
        fprintf(stderr, "worker_nfslock: %s: %s\n", path, strerror(errno));
        exit(2);
    }
}

/* ---- session ---------------------------------------------------------- */

static nfslock_session *open_session(const char *dir)
{
    nfslock_session *s = NULL;
    int rc = nfslock_session_open(dir, NAME, TIMEOUT_MS, &s);
    if (rc != 0)
        die("nfslock_session_open", rc);
    return s;
}

static void close_session(nfslock_session *s)
{
    int rc = nfslock_session_close(s);
    if (rc != 0)
        die("nfslock_session_close", rc);
}

static void make_one(nfslock_session *s)
{
    int rc = nfslock_session_make_new_ids(s, 1, ids_reserve(1));
    if (rc != 0)
        die("nfslock_session_make_new_ids(1)", rc);
    n_ids++;
}

/* make_new_ids(1) until `seconds` have passed or `maxcalls` were made; returns
 * the number of calls and stores the elapsed time in *ns.  Reading the clock
 * after every call costs ~20 ns (vDSO), nothing next to a durable write. */
static long timed_loop(nfslock_session *s, double seconds, long maxcalls, int64_t *ns)
{
    int64_t t0 = now_ns();
    int64_t deadline = t0 + (int64_t)(seconds * 1e9);
    long calls = 0;
    while (calls < maxcalls) {
        make_one(s);
        calls++;
        if (now_ns() >= deadline)
            break;
    }
    *ns = now_ns() - t0;
    return calls;
}

static void single(const char *dir, long held, double seconds, long maxcalls, const char *idfile)
{
    nfslock_session *s = open_session(dir);
    int64_t ns;
    long calls = timed_loop(s, seconds, maxcalls, &ns);
    printf("start %ld %lld\n", calls, (long long)ns);
    fflush(stdout);

    /* One bulk call, as with Ganga: the session then holds `held` ids (all it
     * allocated, since nothing is released). */
    long need = held - (long)n_ids;
    int64_t t0 = now_ns();
    if (need > 0) {
        int rc = nfslock_session_make_new_ids(s, (size_t)need, ids_reserve((size_t)need));
        if (rc != 0)
            die("nfslock_session_make_new_ids(bulk)", rc);
        n_ids += (size_t)need;
    }
    printf("bulk %ld %lld\n", need > 0 ? need : 0, (long long)(now_ns() - t0));
    long nheld = (long)n_ids;

    calls = timed_loop(s, seconds, maxcalls, &ns);
    printf("held %ld %ld %lld\n", nheld, calls, (long long)ns);
    fflush(stdout);
    close_session(s);
    write_ids(idfile);
}

static void concurrent(const char *dir, double seconds, long maxcalls, const char *idfile)
{
    nfslock_session *s = open_session(dir);
    /* Start barrier, see run: all workers open their sessions first. */
    printf("ready\n");
    fflush(stdout);
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL) {
        fprintf(stderr, "worker_nfslock: stdin closed before go\n");
        exit(2);
    }
    int64_t t0 = now_ns(), ns;
    long calls = timed_loop(s, seconds, maxcalls, &ns);
    printf("done %ld %lld %lld\n", calls, (long long)t0, (long long)(t0 + ns));
    fflush(stdout);
    close_session(s);
    write_ids(idfile);
}

static void calls_only(const char *dir, long count)
{
    nfslock_session *s = open_session(dir);
    for (long i = 0; i < count; i++) {
        make_one(s);
        n_ids = 0; /* the ids are not kept: keep the buffer at one slot */
    }
    close_session(s);
}

static long num(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0) {
        fprintf(stderr, "worker_nfslock: bad number %s\n", s);
        exit(2);
    }
    return v;
}

static double secs(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end != '\0' || !(v > 0)) {
        fprintf(stderr, "worker_nfslock: bad seconds %s\n", s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc == 7 && strcmp(argv[1], "single") == 0)
        single(argv[2], num(argv[3]), secs(argv[4]), num(argv[5]), argv[6]);
    else if (argc == 6 && strcmp(argv[1], "concurrent") == 0)
        concurrent(argv[2], secs(argv[3]), num(argv[4]), argv[5]);
    else if (argc == 4 && strcmp(argv[1], "calls") == 0)
        calls_only(argv[2], num(argv[3]));
    else {
        fprintf(stderr,
                "usage: worker_nfslock single DIR HELD SECONDS MAXCALLS IDFILE\n"
                "       worker_nfslock concurrent DIR SECONDS MAXCALLS IDFILE\n"
                "       worker_nfslock calls DIR COUNT\n");
        return 2;
    }
    free(ids);
    return 0;
}
