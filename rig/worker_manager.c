/*
 * The rig's lock-manager worker (issue 12): the directory backend of nfslock_manager
 * through the C API, one process on one simulated host. A program of its own (main
 * below); each mode prints one result line, `key=value ...`, that the rig parses
 * (tests/multihost/manager.rs); the exit status is 0 when the mode ran to its end
 * (violations are in the line, not the status). Times are CLOCK_MONOTONIC in ms (the
 * rig's hosts share the machine's clock).
 *
 *   mcreate DIR IDS         creates the manager directory, allocates the comma-separated
 *                           IDS ("-": none) with allocate_id; prints rc=NAME ids=N
 *   mopen DIR               opens it; a second create must be EEXIST; capacity and
 *                           available must say unlimited; prints rc, exist, unlimited,
 *                           cap, avail
 *   malloc DIR CHECK OPS MAX SEED
 *                           OPS random steps: allocate (while holding fewer than MAX) or
 *                           free one of its own IDs; every allocation and free logged to
 *                           CHECK/log.HOST.PID as `a ID T_CALL T_RETURN` / `f ID T_CALL
 *                           T_RETURN`; an O_EXCL marker CHECK/id.ID is held from
 *                           allocate's return to free's call (a marker already there:
 *                           dup); every 8 steps `allocated` must list every ID it holds
 *                           (else unlisted); at the end everything is freed. Prints
 *                           allocs, frees, dup, unlisted, err, maxid, pid
 *   mfinal DIR              `allocated` (prints n=), then allocate (id=, the lowest
 *                           free) and free it; prints rc, n, id, free
 *   mfree DIR IDS           frees each of the comma-separated IDS; prints rc=A,B,...
 *                           (each free's answer)
 *   mallocn DIR N           N allocations; prints ids=A,B,... err=E
 *   mallocid DIR IDS        allocate_id of each of IDS; prints rc=A,B,...
 *   mcount DIR CHECK ROUNDS NIDS PAUSE_MS SEED
 *                           ROUNDS times: timedlock of a random ID below NIDS (30 s),
 *                           inside: the O_EXCL marker CHECK/inside.ID, locks_held must
 *                           list ID, the counter CHECK/counter.ID read, PAUSE_MS slept,
 *                           written back plus one (a non-atomic read-modify-write),
 *                           unlock. Prints acq, viol, notheld, err, per (acquisitions per
 *                           ID), pid
 *   mhold DIR ID LEASE HOLD_MS
 *                           set_lease_ms(LEASE) (0: none), locks ID, prints `held pid=P
 *                           mono=T`, holds HOLD_MS, prints `alive mono=T` and SIGKILLs
 *                           itself while holding
 *   mtake DIR ID LEASE TIMEOUT CHECK HOLD_MS
 *                           set_lease_ms(LEASE), timedlock(ID, TIMEOUT); on success
 *                           holds HOLD_MS inside the marker CHECK/inside.ID and unlocks.
 *                           Prints rc, waited, mono, viol, unlock
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nfslock.h"

#define MAX_HELD 64

static const char *errname(int rc)
{
    switch (rc) {
    case 0: return "OK";
    case EAGAIN: return "EAGAIN";
    case EBUSY: return "EBUSY";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case ENOSPC: return "ENOSPC";
    case ERANGE: return "ERANGE";
    case EBADMSG: return "EBADMSG";
    case EOWNERDEAD: return "EOWNERDEAD";
    case ENOLCK: return "ENOLCK";
    case EDEADLK: return "EDEADLK";
    case EIO: return "EIO";
    case ESTALE: return "ESTALE";
    case EINTR: return "EINTR";
    case EINVAL: return "EINVAL";
    case ELOOP: return "ELOOP";
    default: return "OTHER";
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(long)(ms / 1000) * 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* xorshift64*: a stream per worker (seed and pid), no shared state. */
static uint64_t rng_state;

static uint32_t rnd(uint32_t below)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 33) % below;
}

static void seed(const char *text)
{
    rng_state = (strtoull(text, NULL, 10) + 1) * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)getpid() << 20);
    if (rng_state == 0)
        rng_state = 1;
}

static void path_in(char *out, const char *dir, const char *name)
{
    snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

static int open_manager(const char *dir, uint32_t lease_ms, nfslock_manager **m)
{
    int rc = nfslock_manager_open_dir(dir, m);
    if (rc != 0) {
        fprintf(stderr, "open_dir: %s\n", nfslock_last_error());
        printf("rc=%s err=1\n", errname(rc));
        return rc;
    }
    if (lease_ms > 0) {
        rc = nfslock_manager_set_lease_ms(*m, lease_ms);
        if (rc != 0) {
            fprintf(stderr, "set_lease_ms: %s\n", nfslock_last_error());
            printf("rc=%s err=1\n", errname(rc));
            nfslock_manager_close(*m);
            return rc;
        }
    }
    return 0;
}

/* An O_EXCL marker file: 0 if it was there already (someone else is inside). */
static int marker_take(const char *dir, const char *name)
{
    char path[PATH_MAX];
    path_in(path, dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

static void marker_drop(const char *dir, const char *name)
{
    char path[PATH_MAX];
    path_in(path, dir, name);
    if (unlink(path) != 0 && errno != ENOENT)
        perror("unlink marker");
}

static int mode_mcreate(const char *dir, const char *list)
{
    nfslock_manager *m = NULL;
    int rc = nfslock_manager_create_dir(dir, &m);
    if (rc != 0) {
        fprintf(stderr, "create_dir: %s\n", nfslock_last_error());
        printf("rc=%s ids=0\n", errname(rc));
        return 0;
    }
    int n = 0;
    if (strcmp(list, "-") != 0) {
        char *copy = strdup(list), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            rc = nfslock_manager_allocate_id(m, (uint32_t)strtoul(tok, NULL, 10));
            if (rc != 0) {
                fprintf(stderr, "allocate_id %s: %s\n", tok, nfslock_last_error());
                break;
            }
            n++;
        }
        free(copy);
    }
    int crc = nfslock_manager_close(m);
    if (rc == 0 && crc != 0) {
        fprintf(stderr, "close: %s\n", nfslock_last_error());
        rc = crc;
    }
    printf("rc=%s ids=%d\n", errname(rc), n);
    return 0;
}

static int mode_mopen(const char *dir)
{
    nfslock_manager *m = NULL, *again = NULL;
    if (open_manager(dir, 0, &m) != 0)
        return 0;
    int exist = nfslock_manager_create_dir(dir, &again);
    if (exist == 0)
        nfslock_manager_close(again);
    uint32_t cap = 0, avail = 0;
    int unlimited = 0, unlimited2 = 0;
    int rc = nfslock_manager_capacity(m, &cap, &unlimited);
    if (rc == 0)
        rc = nfslock_manager_available(m, &avail, &unlimited2);
    if (rc != 0)
        fprintf(stderr, "capacity/available: %s\n", nfslock_last_error());
    int crc = nfslock_manager_close(m);
    printf("rc=%s exist=%s unlimited=%d,%d cap=%lu avail=%lu close=%s\n", errname(rc), errname(exist), unlimited,
           unlimited2, (unsigned long)cap, (unsigned long)avail, errname(crc));
    return 0;
}

/* Appends one line to the worker's log (a local file of the rig's, one write). */
static int log_line(int fd, char kind, uint32_t id, double call, double ret)
{
    char line[128];
    int n = snprintf(line, sizeof line, "%c %lu %.3f %.3f\n", kind, (unsigned long)id, call, ret);
    return write(fd, line, (size_t)n) == n ? 0 : -1;
}

static int free_one(nfslock_manager *m, int log, const char *check, uint32_t id, int *err)
{
    char marker[64];
    snprintf(marker, sizeof marker, "id.%lu", (unsigned long)id);
    marker_drop(check, marker);
    double call = now_ms();
    int rc = nfslock_manager_free(m, id);
    double ret = now_ms();
    if (rc != 0) {
        fprintf(stderr, "free %lu: %s: %s\n", (unsigned long)id, errname(rc), nfslock_last_error());
        (*err)++;
    }
    if (log_line(log, 'f', id, call, ret) != 0)
        (*err)++;
    return rc;
}

/* Whether `allocated` lists every one of `held`; -1 on error. */
static int all_listed(nfslock_manager *m, const uint32_t *held, int n)
{
    static uint32_t list[4096];
    size_t got = 0;
    int rc = nfslock_manager_allocated(m, list, sizeof list / sizeof list[0], &got);
    if (rc != 0) {
        fprintf(stderr, "allocated: %s: %s\n", errname(rc), nfslock_last_error());
        return -1;
    }
    for (size_t i = 1; i < got; i++) {
        if (list[i - 1] >= list[i]) {
            fprintf(stderr, "allocated: not ascending at %zu: %lu, %lu\n", i, (unsigned long)list[i - 1],
                    (unsigned long)list[i]);
            return 0;
        }
    }
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (size_t j = 0; j < got && !found; j++)
            found = list[j] == held[i];
        if (!found) {
            fprintf(stderr, "allocated: %lu (ours) not listed among %zu\n", (unsigned long)held[i], got);
            return 0;
        }
    }
    return 1;
}

static int mode_malloc(const char *dir, const char *check, int ops, int max, const char *seed_text)
{
    seed(seed_text);
    if (max > MAX_HELD)
        max = MAX_HELD;
    char host[256] = {0}, name[320], path[PATH_MAX];
    gethostname(host, sizeof host - 1);
    snprintf(name, sizeof name, "log.%s.%d", host, (int)getpid());
    path_in(path, check, name);
    int log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0) {
        perror("open log");
        printf("err=1\n");
        return 1;
    }
    nfslock_manager *m = NULL;
    if (open_manager(dir, 0, &m) != 0)
        return 0;
    uint32_t held[MAX_HELD];
    int n = 0, allocs = 0, frees = 0, dup = 0, unlisted = 0, err = 0;
    unsigned long maxid = 0;
    for (int step = 0; step < ops; step++) {
        int do_alloc = n == 0 || (n < max && rnd(2) == 0);
        if (do_alloc) {
            uint32_t id = UINT32_MAX;
            double call = now_ms();
            int rc = nfslock_manager_allocate(m, &id);
            double ret = now_ms();
            if (rc != 0) {
                fprintf(stderr, "allocate: %s: %s\n", errname(rc), nfslock_last_error());
                err++;
                continue;
            }
            allocs++;
            if (id > maxid)
                maxid = id;
            if (log_line(log, 'a', id, call, ret) != 0)
                err++;
            char marker[64];
            snprintf(marker, sizeof marker, "id.%lu", (unsigned long)id);
            if (!marker_take(check, marker)) {
                fprintf(stderr, "allocate gave %lu, whose marker is there (allocated to another worker)\n",
                        (unsigned long)id);
                dup++;
            }
            held[n++] = id;
        } else {
            int k = (int)rnd((uint32_t)n);
            uint32_t id = held[k];
            held[k] = held[--n];
            free_one(m, log, check, id, &err);
            frees++;
        }
        if (step % 8 == 7) {
            int listed = all_listed(m, held, n);
            if (listed < 0)
                err++;
            else if (!listed)
                unlisted++;
        }
    }
    while (n > 0) {
        free_one(m, log, check, held[--n], &err);
        frees++;
    }
    if (nfslock_manager_close(m) != 0) {
        fprintf(stderr, "close: %s\n", nfslock_last_error());
        err++;
    }
    close(log);
    printf("allocs=%d frees=%d dup=%d unlisted=%d err=%d maxid=%lu pid=%d\n", allocs, frees, dup, unlisted, err, maxid,
           (int)getpid());
    return 0;
}

static int mode_mfinal(const char *dir)
{
    nfslock_manager *m = NULL;
    if (open_manager(dir, 0, &m) != 0)
        return 0;
    uint32_t list[64], id = UINT32_MAX;
    size_t got = 0;
    int rc = nfslock_manager_allocated(m, list, 64, &got);
    int arc = rc == 0 ? nfslock_manager_allocate(m, &id) : rc;
    int frc = arc == 0 ? nfslock_manager_free(m, id) : arc;
    if (rc != 0 || arc != 0 || frc != 0)
        fprintf(stderr, "mfinal: %s\n", nfslock_last_error());
    nfslock_manager_close(m);
    printf("rc=%s n=%zu id=%lu free=%s\n", errname(rc != 0 ? rc : arc), got, (unsigned long)id, errname(frc));
    return 0;
}

static int mode_each(const char *dir, const char *list, int allocate)
{
    nfslock_manager *m = NULL;
    if (open_manager(dir, 0, &m) != 0)
        return 0;
    char *copy = strdup(list), *save = NULL;
    printf("rc=");
    int printed = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint32_t id = (uint32_t)strtoul(tok, NULL, 10);
        int rc = allocate ? nfslock_manager_allocate_id(m, id) : nfslock_manager_free(m, id);
        if (rc != 0 && rc != ENOENT && rc != EEXIST)
            fprintf(stderr, "%s %s: %s\n", allocate ? "allocate_id" : "free", tok, nfslock_last_error());
        printf("%s%s", printed++ ? "," : "", errname(rc));
    }
    free(copy);
    nfslock_manager_close(m);
    printf("\n");
    return 0;
}

static int mode_mallocn(const char *dir, int n)
{
    nfslock_manager *m = NULL;
    if (open_manager(dir, 0, &m) != 0)
        return 0;
    int err = 0, printed = 0;
    printf("ids=");
    for (int i = 0; i < n; i++) {
        uint32_t id = UINT32_MAX;
        int rc = nfslock_manager_allocate(m, &id);
        if (rc != 0) {
            fprintf(stderr, "allocate: %s\n", nfslock_last_error());
            err++;
            continue;
        }
        printf("%s%lu", printed++ ? "," : "", (unsigned long)id);
    }
    nfslock_manager_close(m);
    printf(" err=%d\n", err);
    return 0;
}

static long read_counter(int fd)
{
    char buf[32] = {0};
    ssize_t n = pread(fd, buf, 20, 0);
    return n > 0 ? atol(buf) : 0;
}

static int write_counter(int fd, long value)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%020ld", value);
    return pwrite(fd, buf, 20, 0) == 20 && fsync(fd) == 0 ? 0 : -1;
}

/* Whether locks_held lists `id`; -1 on error. */
static int held_listed(nfslock_manager *m, uint32_t id)
{
    uint32_t list[256];
    size_t got = 0;
    int rc = nfslock_manager_locks_held(m, list, 256, &got);
    if (rc != 0) {
        fprintf(stderr, "locks_held: %s: %s\n", errname(rc), nfslock_last_error());
        return -1;
    }
    for (size_t i = 0; i < got; i++)
        if (list[i] == id)
            return 1;
    fprintf(stderr, "locks_held: %lu (held by us) not listed among %zu\n", (unsigned long)id, got);
    return 0;
}

#define MAX_IDS 16

static int mode_mcount(const char *dir, const char *check, int rounds, int nids, int pause, const char *seed_text)
{
    seed(seed_text);
    if (nids < 1 || nids > MAX_IDS) {
        printf("err=1\n");
        return 2;
    }
    nfslock_manager *m = NULL;
    if (open_manager(dir, 0, &m) != 0)
        return 0;
    int per[MAX_IDS] = {0}, acq = 0, viol = 0, notheld = 0, err = 0;
    for (int i = 0; i < rounds; i++) {
        uint32_t id = rnd((uint32_t)nids);
        int rc = nfslock_manager_timedlock(m, id, 30000);
        if (rc != 0) {
            fprintf(stderr, "timedlock %lu: %s: %s\n", (unsigned long)id, errname(rc), nfslock_last_error());
            err++;
            continue;
        }
        acq++;
        per[id]++;
        char marker[64], counter[64], path[PATH_MAX];
        snprintf(marker, sizeof marker, "inside.%lu", (unsigned long)id);
        snprintf(counter, sizeof counter, "counter.%lu", (unsigned long)id);
        int alone = marker_take(check, marker);
        if (!alone) {
            fprintf(stderr, "lock %lu: another holder's marker is there\n", (unsigned long)id);
            viol++;
        }
        if (i % 4 == 0) {
            int listed = held_listed(m, id);
            if (listed < 0)
                err++;
            else if (!listed)
                notheld++;
        }
        path_in(path, check, counter);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            perror("open counter");
            err++;
        } else {
            long value = read_counter(fd);
            sleep_ms(pause);
            if (write_counter(fd, value + 1) != 0)
                err++;
            close(fd);
        }
        if (alone)
            marker_drop(check, marker);
        rc = nfslock_manager_unlock(m, id);
        if (rc != 0) {
            /* Not ours any more: the lock was taken from us while we held it. */
            fprintf(stderr, "unlock %lu: %s: %s\n", (unsigned long)id, errname(rc), nfslock_last_error());
            viol++;
        }
    }
    if (nfslock_manager_close(m) != 0) {
        fprintf(stderr, "close: %s\n", nfslock_last_error());
        err++;
    }
    printf("acq=%d viol=%d notheld=%d err=%d per=", acq, viol, notheld, err);
    for (int i = 0; i < nids; i++)
        printf("%s%d", i ? "," : "", per[i]);
    printf(" pid=%d\n", (int)getpid());
    return 0;
}

static int mode_mhold(const char *dir, uint32_t id, uint32_t lease, int hold_ms)
{
    nfslock_manager *m = NULL;
    if (open_manager(dir, lease, &m) != 0)
        return 1;
    int rc = nfslock_manager_timedlock(m, id, 30000);
    if (rc != 0) {
        fprintf(stderr, "timedlock: %s\n", nfslock_last_error());
        printf("rc=%s err=1\n", errname(rc));
        return 1;
    }
    printf("held pid=%d mono=%.3f\n", (int)getpid(), now_ms());
    fflush(stdout);
    sleep_ms(hold_ms);
    printf("alive mono=%.3f\n", now_ms());
    fflush(stdout);
    raise(SIGKILL);
    return 1;
}

static int mode_mtake(const char *dir, uint32_t id, uint32_t lease, long long timeout, const char *check, int hold_ms)
{
    nfslock_manager *m = NULL;
    if (open_manager(dir, lease, &m) != 0)
        return 0;
    double start = now_ms();
    int rc = nfslock_manager_timedlock(m, id, timeout);
    double at = now_ms();
    if (rc != 0) {
        if (rc != ETIMEDOUT)
            fprintf(stderr, "timedlock: %s\n", nfslock_last_error());
        nfslock_manager_close(m);
        printf("rc=%s waited=%.3f mono=%.3f\n", errname(rc), at - start, at);
        return 0;
    }
    char marker[64];
    snprintf(marker, sizeof marker, "inside.%lu", (unsigned long)id);
    int alone = marker_take(check, marker);
    sleep_ms(hold_ms);
    if (alone)
        marker_drop(check, marker);
    int urc = nfslock_manager_unlock(m, id);
    if (urc != 0)
        fprintf(stderr, "unlock: %s\n", nfslock_last_error());
    int crc = nfslock_manager_close(m);
    printf("rc=OK waited=%.3f mono=%.3f viol=%d unlock=%s close=%s\n", at - start, at, !alone, errname(urc),
           errname(crc));
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "mcreate") == 0 && argc == 4)
        return mode_mcreate(argv[2], argv[3]);
    if (strcmp(mode, "mopen") == 0 && argc == 3)
        return mode_mopen(argv[2]);
    if (strcmp(mode, "malloc") == 0 && argc == 7)
        return mode_malloc(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), argv[6]);
    if (strcmp(mode, "mfinal") == 0 && argc == 3)
        return mode_mfinal(argv[2]);
    if (strcmp(mode, "mfree") == 0 && argc == 4)
        return mode_each(argv[2], argv[3], 0);
    if (strcmp(mode, "mallocid") == 0 && argc == 4)
        return mode_each(argv[2], argv[3], 1);
    if (strcmp(mode, "mallocn") == 0 && argc == 4)
        return mode_mallocn(argv[2], atoi(argv[3]));
    if (strcmp(mode, "mcount") == 0 && argc == 8)
        return mode_mcount(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), argv[7]);
    if (strcmp(mode, "mhold") == 0 && argc == 6)
        return mode_mhold(argv[2], (uint32_t)strtoul(argv[3], NULL, 10), (uint32_t)strtoul(argv[4], NULL, 10),
                          atoi(argv[5]));
    if (strcmp(mode, "mtake") == 0 && argc == 8)
        return mode_mtake(argv[2], (uint32_t)strtoul(argv[3], NULL, 10), (uint32_t)strtoul(argv[4], NULL, 10),
                          atoll(argv[5]), argv[6], atoi(argv[7]));
    fprintf(stderr, "usage: %s MODE ARGS (see rig/worker_manager.c)\n", argv[0]);
    return 2;
}
