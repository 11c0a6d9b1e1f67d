/*
 * Benchmark worker for the two C peers: libnfslock and liblockfile.
 *
 * One binary serves both so that the timing loop, the clock and the log format
 * are byte-for-byte the same for the two libraries; only the two small
 * acquire/release adapters below differ.  The orchestrator (bench/compare/run)
 * compiles this with gcc -O2 and drives it; see that file for the protocol.
 *
 * Usage:
 *   worker_c LIB uncontended PATH WARMUP ROUNDS CYCLES_PER_ROUND
 *       Prints one line "round_ns <total ns of the round>" per round.
 *   worker_c LIB contended PATH COUNT LOGFILE CS_US
 *       Prints "ready", waits for a line on stdin ("go"), then does COUNT
 *       blocking acquisitions.  Each one appends "A <acquired_ns> <release_ns>"
 *       to LOGFILE (CLOCK_MONOTONIC); the first line is "S <start_ns>".
 *   worker_c nfslock shared PATH SECONDS
 *       Prints "ready", waits for "go", then for SECONDS takes and releases a
 *       shared lock (nfslock_acquire with a 30 s lease kept alive and
 *       nfslock_options_set_shared), and prints "acquisitions N elapsed_ns T".
 *
 * LIB is "nfslock" (PATH is the protected file, the lock is PATH.nfs_lock),
 * "lockfile" (liblockfile takes the lock file's own name, so we pass PATH.lock)
 * or "floor": no library, just link(2) of a prepared claim file to
 * PATH.nfs_lock and unlink(2) of it, the least any link-based lock can do per
 * cycle.  It is the yardstick for what the kernel alone costs on this machine
 * (uncontended mode only).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lockfile.h>
#include "nfslock.h"

/* The text libnfslock writes into the lock; content does not matter here. */
#define MESSAGE "bench"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "worker_c: %s: %s\n", what, detail);
    exit(2);
}

/* ---- library adapters ------------------------------------------------- */

enum lib { LIB_NFSLOCK, LIB_LOCKFILE, LIB_FLOOR };

static enum lib lib;
static char lock_target[PATH_MAX];  /* what we hand to the library */
static char floor_claim[PATH_MAX];  /* LIB_FLOOR: the file we link from */
static nfslock *held;                /* libnfslock's handle while held */

/* One attempt, no waiting (uncontended loop): nfslock_create and
 * lockfile_create with retries=0.  Any failure is fatal: nobody else is
 * competing for the path, so a failure means the benchmark is wrong. */
static void acquire_once(void)
{
    if (lib == LIB_NFSLOCK) {
        int rc = nfslock_create(lock_target, MESSAGE, &held);
        if (rc != 0)
            die("nfslock_create", nfslock_last_error());
    } else if (lib == LIB_FLOOR) {
        if (link(floor_claim, lock_target) != 0)
            die("link", strerror(errno));
    } else {
        /* L_PID: write our pid like libnfslock records its owner. */
        int rc = lockfile_create(lock_target, 0, L_PID);
        if (rc != L_SUCCESS) {
            char buf[64];
            snprintf(buf, sizeof buf, "returned %d (errno %d)", rc, errno);
            die("lockfile_create", buf);
        }
    }
}

/* Wait as long as it takes (contended loop).  libnfslock: a negative timeout
 * means forever.  liblockfile has no "forever"; a large retry count is the
 * closest, and the orchestrator's wall-clock cap ends the run anyway. */
static void acquire_blocking(void)
{
    if (lib == LIB_NFSLOCK) {
        int rc = nfslock_blocking_create(lock_target, MESSAGE, -1, &held);
        if (rc != 0)
            die("nfslock_blocking_create", nfslock_last_error());
    } else {
        int rc = lockfile_create(lock_target, 1000, L_PID);
        if (rc != L_SUCCESS) {
            char buf[64];
            snprintf(buf, sizeof buf, "returned %d (errno %d)", rc, errno);
            die("lockfile_create", buf);
        }
    }
}

static void release(void)
{
    if (lib == LIB_NFSLOCK) {
        if (nfslock_unlock(held) != 0)
            die("nfslock_unlock", nfslock_last_error());
        held = NULL;
    } else if (lib == LIB_FLOOR) {
        if (unlink(lock_target) != 0)
            die("unlink", strerror(errno));
    } else {
        if (lockfile_remove(lock_target) != 0)
            die("lockfile_remove", strerror(errno));
    }
}

/* ---- modes ------------------------------------------------------------ */

static void uncontended(long warmup, long rounds, long cycles)
{
    /* Warm-up fills caches (dentry cache, libc, lazy init in the library)
     * so the timed rounds see the steady state. */
    for (long i = 0; i < warmup; i++) {
        acquire_once();
        release();
    }
    for (long r = 0; r < rounds; r++) {
        int64_t t0 = now_ns();
        for (long i = 0; i < cycles; i++) {
            acquire_once();
            release();
        }
        int64_t t1 = now_ns();
        printf("round_ns %lld\n", (long long)(t1 - t0));
    }
}

/* Busy-wait: a "tiny critical section" that does not give up the CPU, so the
 * scheduler does not hand the core to a waiter for free. */
static void critical_section(long cs_us)
{
    int64_t end = now_ns() + cs_us * 1000LL;
    while (now_ns() < end)
        ;
}

static void contended(long count, const char *logpath, long cs_us)
{
    int log = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (log < 0)
        die(logpath, strerror(errno));

    /* Start barrier: all workers are loaded and linked before anyone starts. */
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        die("stdin", "closed before go");

    char buf[64];
    int n = snprintf(buf, sizeof buf, "S %lld\n", (long long)now_ns());
    if (write(log, buf, n) != n)
        die(logpath, "short write");

    for (long i = 0; i < count; i++) {
        acquire_blocking();
        int64_t acquired = now_ns();  /* just after the acquire returns */
        critical_section(cs_us);
        int64_t releasing = now_ns(); /* just before we call release */
        release();
        /* Logged after release (outside the critical section) and with one
         * write(2) per acquisition, so a worker killed at the wall-clock cap
         * leaves every completed acquisition on disk. */
        n = snprintf(buf, sizeof buf, "A %lld %lld\n",
                     (long long)acquired, (long long)releasing);
        if (write(log, buf, n) != n)
            die(logpath, "short write");
    }
    close(log);
}

/* Shared acquire+release for a fixed time, started by the orchestrator's "go". */
static void shared(double seconds)
{
    nfslock_options *o = NULL;
    int rc = nfslock_options_new(&o);
    if (rc == 0)
        rc = nfslock_options_set_lease_ms(o, 30000);
    if (rc == 0)
        rc = nfslock_options_set_shared(o, 1);
    if (rc == 0)
        rc = nfslock_options_set_message(o, MESSAGE);
    if (rc != 0)
        die("nfslock_options", nfslock_last_error());
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        die("stdin", "closed before go");
    int64_t start = now_ns(), end = start + (int64_t)(seconds * 1e9), now = start;
    long n = 0;
    while (now < end) {
        rc = nfslock_acquire(lock_target, o, -1, &held);
        if (rc != 0)
            die("nfslock_acquire", nfslock_last_error());
        release();
        n++;
        now = now_ns();
    }
    nfslock_options_free(o);
    printf("acquisitions %ld elapsed_ns %lld\n", n, (long long)(now - start));
}

int main(int argc, char **argv)
{
    if (argc < 4)
        die("usage", "worker_c nfslock|lockfile uncontended|contended PATH ...");

    if (strcmp(argv[1], "nfslock") == 0) {
        lib = LIB_NFSLOCK;
        snprintf(lock_target, sizeof lock_target, "%s", argv[3]);
    } else if (strcmp(argv[1], "lockfile") == 0) {
        lib = LIB_LOCKFILE;
        snprintf(lock_target, sizeof lock_target, "%s.lock", argv[3]);
    } else if (strcmp(argv[1], "floor") == 0 && strcmp(argv[2], "uncontended") == 0) {
        lib = LIB_FLOOR;
        snprintf(lock_target, sizeof lock_target, "%s.nfs_lock", argv[3]);
        snprintf(floor_claim, sizeof floor_claim, "%s.claim", argv[3]);
        int fd = open(floor_claim, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, MESSAGE "\n", 6) != 6 || close(fd) != 0)
            die(floor_claim, strerror(errno));
    } else {
        die("unknown library", argv[1]);
    }

    if (strcmp(argv[2], "uncontended") == 0 && argc == 7) {
        uncontended(atol(argv[4]), atol(argv[5]), atol(argv[6]));
    } else if (strcmp(argv[2], "contended") == 0 && argc == 7) {
        contended(atol(argv[4]), argv[5], atol(argv[6]));
    } else if (strcmp(argv[2], "shared") == 0 && argc == 5 && lib == LIB_NFSLOCK) {
        shared(atof(argv[4]));
    } else {
        die("bad arguments for mode", argv[2]);
    }
    if (lib == LIB_FLOOR)
        unlink(floor_claim);
    return 0;
}
