/*
 * The lock manager's benchmark worker: every measurement against its physical floor,
 * in one process run (bench/manager/run drives it and writes the report).
 *
 *   worker cycle N           uncontended lock+unlock, ns per cycle, three ways in turn:
 *                            raw robust process-shared mutex, the same error-checking,
 *                            nfslock_manager_lock/unlock on a segment
 *   worker contend SECS      4 processes x one ID: acquisitions/s and handoffs/s (the
 *                            lock passing to another process), raw mutex then manager
 *   worker dir DIR N         lock+unlock ns: a plain lock file (nfslock_create +
 *                            nfslock_unlock) then a directory manager's lock, same DIR
 *   worker alloc DIR N       allocate+free per second: segment, then directory manager
 *
 * Each prints "name value" lines; the driver computes the ratios.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nfslock.h"

#define CONTENDERS 4
#define ROUNDS 7

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void die(const char *what, int rc) {
    fprintf(stderr, "worker: %s: %s (%s)\n", what, strerror(rc), nfslock_last_error());
    exit(1);
}

static pthread_mutex_t *shared_mutex(int errorcheck) {
    pthread_mutex_t *m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pthread_mutexattr_t a;
    if (m == MAP_FAILED) die("mmap", errno);
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (errorcheck) pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return m;
}

static double raw_cycle(pthread_mutex_t *m, long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (pthread_mutex_lock(m) != 0) die("pthread_mutex_lock", EINVAL);
        pthread_mutex_unlock(m);
    }
    return (now_ns() - t0) / (double)n;
}

static double manager_cycle(nfslock_manager *mgr, long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        int rc = nfslock_manager_lock(mgr, 7);
        if (rc != 0) die("nfslock_manager_lock", rc);
        nfslock_manager_unlock(mgr, 7);
    }
    return (now_ns() - t0) / (double)n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v) {
    qsort(v, ROUNDS, sizeof *v, cmp_double);
    return v[ROUNDS / 2];
}

static nfslock_manager *fresh_segment(const char *name) {
    nfslock_manager *mgr;
    int rc;
    nfslock_manager_destroy_shm(name);
    rc = nfslock_manager_create_shm(name, 64, &mgr);
    if (rc != 0) die("nfslock_manager_create_shm", rc);
    return mgr;
}

static void cycle(long n) {
    char name[64];
    pthread_mutex_t *plain = shared_mutex(0), *checking = shared_mutex(1);
    nfslock_manager *mgr;
    double r[ROUNDS], e[ROUNDS], g[ROUNDS];
    int i;
    snprintf(name, sizeof name, "/nfslock-bench-%d", (int)getpid());
    mgr = fresh_segment(name);
    manager_cycle(mgr, n / 10); /* warm: the handle cache, the pages */
    /* Interleaved rounds: a frequency change or a noisy neighbour hits all three. */
    for (i = 0; i < ROUNDS; i++) {
        r[i] = raw_cycle(plain, n);
        e[i] = raw_cycle(checking, n);
        g[i] = manager_cycle(mgr, n);
    }
    printf("raw_robust_ns %.2f\nraw_robust_errorcheck_ns %.2f\nmanager_shm_ns %.2f\n", median(r), median(e), median(g));
    nfslock_manager_close(mgr);
    nfslock_manager_destroy_shm(name);
}

/* What the contenders share: updated only inside the lock. */
struct shared_state {
    long total;    /* acquisitions */
    long handoffs; /* acquisitions by another process than the one before */
    int last;      /* the pid of the last holder */
};

static void critical_section(volatile struct shared_state *st, int me) {
    ++st->total;
    if (st->last != me) {
        ++st->handoffs;
        st->last = me;
    }
}

/* One contender: lock, update the shared state, unlock, for `secs`; returns its count. */
static void contender(pthread_mutex_t *raw, nfslock_manager *mgr, volatile struct shared_state *st, double secs, int out_fd) {
    double end = now_ns() + secs * 1e9;
    long mine = 0;
    int me = (int)getpid();
    while (now_ns() < end) {
        for (int k = 0; k < 64; k++) {
            if (raw) {
                pthread_mutex_lock(raw);
                critical_section(st, me);
                pthread_mutex_unlock(raw);
            } else {
                int rc = nfslock_manager_lock(mgr, 3);
                if (rc != 0) die("nfslock_manager_lock", rc);
                critical_section(st, me);
                nfslock_manager_unlock(mgr, 3);
            }
            mine++;
        }
    }
    if (write(out_fd, &mine, sizeof mine) != sizeof mine) _exit(2);
}

/* use_raw: 0 the manager, 1 a raw robust mutex, 2 the same error-checking. */
static void contend_once(const char *name, int use_raw, double secs, const char *label) {
    pthread_mutex_t *raw = use_raw ? shared_mutex(use_raw == 2) : NULL;
    volatile struct shared_state *st = mmap(NULL, sizeof *st, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    long total = 0, got;
    int fds[2], i;
    if (st == MAP_FAILED || pipe(fds) != 0) die("mmap/pipe", errno);
    st->total = st->handoffs = 0;
    st->last = 0;
    for (i = 0; i < CONTENDERS; i++) {
        pid_t pid = fork();
        if (pid < 0) die("fork", errno);
        if (pid == 0) {
            nfslock_manager *mgr = NULL;
            if (!use_raw) {
                int rc = nfslock_manager_open_shm(name, 64, &mgr);
                if (rc != 0) die("nfslock_manager_open_shm", rc);
            }
            contender(raw, mgr, st, secs, fds[1]);
            _exit(0);
        }
    }
    for (i = 0; i < CONTENDERS; i++) {
        int status;
        if (read(fds[0], &got, sizeof got) != sizeof got) die("read", errno);
        total += got;
        wait(&status);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("a contender failed", EIO);
    }
    close(fds[0]);
    close(fds[1]);
    if (st->total != total) {
        fprintf(stderr, "worker: the counter is %ld, the contenders counted %ld: exclusion broken\n", st->total, total);
        exit(1);
    }
    printf("%s_acquisitions_per_s %.0f\n%s_handoffs_per_s %.0f\n", label, (double)total / secs, label, (double)st->handoffs / secs);
}

static void contend(double secs) {
    char name[64];
    nfslock_manager *mgr;
    snprintf(name, sizeof name, "/nfslock-bench-c-%d", (int)getpid());
    mgr = fresh_segment(name);
    contend_once(name, 1, secs, "raw");
    contend_once(name, 2, secs, "raw_errorcheck");
    contend_once(name, 0, secs, "manager");
    nfslock_manager_close(mgr);
    nfslock_manager_destroy_shm(name);
}

static void dir_cycles(const char *dir, long n) {
    char path[4096], mdir[4096];
    nfslock_manager *mgr;
    double p[ROUNDS], g[ROUNDS];
    int i, rc;
    snprintf(path, sizeof path, "%s/plain", dir);
    snprintf(mdir, sizeof mdir, "%s/manager", dir);
    rc = nfslock_manager_create_dir(mdir, &mgr);
    if (rc != 0) die("nfslock_manager_create_dir", rc);
    for (i = 0; i < ROUNDS; i++) {
        double t0 = now_ns();
        for (long k = 0; k < n; k++) {
            nfslock *l;
            rc = nfslock_create(path, "bench", &l);
            if (rc != 0) die("nfslock_create", rc);
            nfslock_unlock(l);
        }
        p[i] = (now_ns() - t0) / (double)n;
        t0 = now_ns();
        for (long k = 0; k < n; k++) {
            rc = nfslock_manager_lock(mgr, 5);
            if (rc != 0) die("nfslock_manager_lock", rc);
            nfslock_manager_unlock(mgr, 5);
        }
        g[i] = (now_ns() - t0) / (double)n;
    }
    printf("plain_lockfile_ns %.0f\nmanager_dir_ns %.0f\n", median(p), median(g));
    nfslock_manager_close(mgr);
}

static double alloc_rate(nfslock_manager *mgr, long n) {
    double t0 = now_ns();
    for (long k = 0; k < n; k++) {
        uint32_t id;
        int rc = nfslock_manager_allocate(mgr, &id);
        if (rc != 0) die("nfslock_manager_allocate", rc);
        rc = nfslock_manager_free(mgr, id);
        if (rc != 0) die("nfslock_manager_free", rc);
    }
    return (double)n / ((now_ns() - t0) / 1e9);
}

static void alloc(const char *dir, long n) {
    char name[64], mdir[4096];
    nfslock_manager *seg, *mgr;
    int rc;
    snprintf(name, sizeof name, "/nfslock-bench-a-%d", (int)getpid());
    snprintf(mdir, sizeof mdir, "%s/alloc-manager", dir);
    seg = fresh_segment(name);
    rc = nfslock_manager_create_dir(mdir, &mgr);
    if (rc != 0) die("nfslock_manager_create_dir", rc);
    printf("shm_allocs_per_s %.0f\n", alloc_rate(seg, n * 1000));
    printf("dir_allocs_per_s %.0f\n", alloc_rate(mgr, n));
    nfslock_manager_close(seg);
    nfslock_manager_destroy_shm(name);
    nfslock_manager_close(mgr);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "cycle") == 0) cycle(atol(argv[2]));
    else if (argc == 3 && strcmp(argv[1], "contend") == 0) contend(atof(argv[2]));
    else if (argc == 4 && strcmp(argv[1], "dir") == 0) dir_cycles(argv[2], atol(argv[3]));
    else if (argc == 4 && strcmp(argv[1], "alloc") == 0) alloc(argv[2], atol(argv[3]));
    else {
        fprintf(stderr, "usage: worker cycle N | contend SECS | dir DIR N | alloc DIR N\n");
        return 2;
    }
    return 0;
}
