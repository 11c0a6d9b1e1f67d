/*
 * The multi-host rig's worker: one process on one simulated host, using libnfslock
 * through its C API only. Each mode prints one result line, `key=value ...`, that the
 * rig parses; the exit status is 0 when the mode ran to the end (violations are
 * reported in the line, not by the status).
 *
 *   count PATH DIR N        N rounds of blocking_create; inside, an O_EXCL marker in DIR
 *                           must not exist and a fixed-width counter in DIR is
 *                           incremented; prints acq, viol, err
 *   lost PATH DIR N         N single attempts (create); every 0 must really hold the lock
 *                           (the record names this host and pid), no EAGAIN may hold it
 *   hold PATH               takes the lock, prints `held pid=N`, waits to be killed
 *   crash PATH              takes the lock, prints `held pid=N`, SIGKILLs itself
 *   try PATH                one create; prints rc=NAME (and unlocks on success)
 *   blocking PATH MS        blocking_create with a timeout; prints rc=NAME
 *   unlock_path PATH        prints rc=NAME
 *   read PATH               prints rc=NAME host=HEX pid=N message=HEX
 *   naive PATH DIR N MS     a deliberately naive link(2) lock (no check of its own
 *                           file after EEXIST), for showing that the rig's faults bite
 * the session modes of worker_session.c (ids, holdids, lockids) and the lease modes of
 * worker_lease.c (lcrash, ltake, lfreeze, lfence, lping, clocks).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nfslock.h"
#include "worker.h"

const char *errname(int rc)
{
    switch (rc) {
    case 0: return "OK";
    case EAGAIN: return "EAGAIN";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADMSG: return "EBADMSG";
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

static void hex(const char *label, const char *s)
{
    printf(" %s=", label);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        printf("%02x", *p);
}

static void join(char *out, const char *dir, const char *name)
{
    snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

/* The counter is written in place at a fixed width, so a reader never depends on a
 * cached file size. */
static long bump_counter(const char *dir)
{
    char path[PATH_MAX], buf[32] = {0};
    join(path, dir, "counter");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    ssize_t n = pread(fd, buf, 20, 0);
    long value = n > 0 ? atol(buf) : 0;
    snprintf(buf, sizeof buf, "%020ld", value + 1);
    long ok = pwrite(fd, buf, 20, 0) == 20 && fsync(fd) == 0 ? value + 1 : -1;
    close(fd);
    return ok;
}

/* Enters the critical section: false if someone else's marker is there. */
static int enter(const char *dir)
{
    char path[PATH_MAX];
    join(path, dir, "inside");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

static void leave(const char *dir)
{
    char path[PATH_MAX];
    join(path, dir, "inside");
    /* A lost REMOVE reply reports ENOENT although the marker is gone: that is fine. */
    if (unlink(path) != 0 && errno != ENOENT)
        perror("unlink marker");
}

/* Whether the lock's record names this process. */
static int record_is_mine(const char *path)
{
    char host[256], mine[256] = {0};
    int32_t pid = 0;
    gethostname(mine, sizeof mine - 1);
    if (nfslock_get_hostname_and_pid(path, host, sizeof host, &pid) != 0)
        return 0;
    return pid == (int32_t)getpid() && strcmp(host, mine) == 0;
}

static int mode_count(const char *path, const char *dir, int n)
{
    int acq = 0, viol = 0, err = 0;
    for (int i = 0; i < n; i++) {
        nfslock *lock = NULL;
        int rc = nfslock_blocking_create(path, "rig count", 60000, &lock);
        if (rc != 0) {
            fprintf(stderr, "blocking_create: %s\n", nfslock_last_error());
            err++;
            continue;
        }
        acq++;
        int alone = enter(dir);
        if (!alone)
            viol++;
        if (bump_counter(dir) < 0)
            err++;
        if (alone)
            leave(dir);
        rc = nfslock_unlock(lock);
        if (rc != 0) {
            fprintf(stderr, "unlock: %s\n", nfslock_last_error());
            viol++; /* our lock was taken from us while we held it */
        }
    }
    printf("acq=%d viol=%d err=%d pid=%d\n", acq, viol, err, (int)getpid());
    return 0;
}

static int mode_lost(const char *path, const char *dir, int n)
{
    int acq = 0, viol = 0, busy = 0, err = 0;
    for (int i = 0; i < n; i++) {
        nfslock *lock = NULL;
        int rc = nfslock_create(path, "rig lost", &lock);
        if (rc == 0) {
            acq++;
            int alone = enter(dir);
            if (!alone || !record_is_mine(path)) {
                fprintf(stderr, "create returned 0 without holding the lock\n");
                viol++;
            }
            if (alone)
                leave(dir);
            if (nfslock_unlock(lock) != 0) {
                fprintf(stderr, "unlock: %s\n", nfslock_last_error());
                viol++;
            }
        } else if (rc == EAGAIN) {
            busy++;
            if (record_is_mine(path)) {
                fprintf(stderr, "EAGAIN while the lock file is ours\n");
                viol++;
            }
            usleep(200);
        } else {
            fprintf(stderr, "create: %s\n", nfslock_last_error());
            err++;
        }
    }
    printf("acq=%d viol=%d busy=%d err=%d\n", acq, viol, busy, err);
    return 0;
}

static int take_and_report(const char *path)
{
    nfslock *lock = NULL;
    int rc = nfslock_blocking_create(path, "rig holder", 30000, &lock);
    if (rc != 0) {
        printf("rc=%s\n", errname(rc));
        return 1;
    }
    printf("held pid=%d\n", (int)getpid());
    fflush(stdout);
    return 0;
}

static int mode_read(const char *path)
{
    char host[256] = "", message[4096] = "";
    int32_t pid = 0;
    int rc = nfslock_get_hostname_and_pid(path, host, sizeof host, &pid);
    if (rc == 0)
        rc = nfslock_get_message(path, message, sizeof message);
    printf("rc=%s", errname(rc));
    hex("host", host);
    printf(" pid=%d", (int)pid);
    hex("message", message);
    printf("\n");
    return 0;
}

/* The lock most tutorials show: link a temp file and treat EEXIST as "taken". A lost
 * LINK reply makes it believe its own lock is someone else's: it never gets the lock
 * again and leaves it behind. */
static int mode_naive(const char *path, const char *dir, int n, int ms)
{
    char lock[PATH_MAX], tmp[PATH_MAX];
    snprintf(lock, sizeof lock, "%s.nfs_lock", path);
    snprintf(tmp, sizeof tmp, "%s/naive.%d", dir, (int)getpid());
    int acq = 0, stuck = 0;
    for (int i = 0; i < n && !stuck; i++) {
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0)
            close(fd);
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        while (link(tmp, lock) != 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > ms) {
                stuck = 1;
                break;
            }
            usleep(1000);
        }
        unlink(tmp);
        if (!stuck) {
            acq++;
            unlink(lock);
        }
    }
    printf("acq=%d stuck=%d\n", acq, stuck);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODE PATH [ARGS]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    int status = session_mode(mode, argc, argv);
    if (status >= 0)
        return status;
    status = lease_mode(mode, argc, argv);
    if (status >= 0)
        return status;
    if (strcmp(mode, "count") == 0 && argc == 5)
        return mode_count(path, argv[3], atoi(argv[4]));
    if (strcmp(mode, "lost") == 0 && argc == 5)
        return mode_lost(path, argv[3], atoi(argv[4]));
    if (strcmp(mode, "naive") == 0 && argc == 6)
        return mode_naive(path, argv[3], atoi(argv[4]), atoi(argv[5]));
    if (strcmp(mode, "hold") == 0) {
        if (take_and_report(path) != 0)
            return 1;
        for (;;)
            pause();
    }
    if (strcmp(mode, "crash") == 0) {
        if (take_and_report(path) != 0)
            return 1;
        raise(SIGKILL);
    }
    if (strcmp(mode, "try") == 0) {
        nfslock *lock = NULL;
        int rc = nfslock_create(path, "rig try", &lock);
        printf("rc=%s\n", errname(rc));
        if (rc == 0)
            nfslock_unlock(lock);
        return 0;
    }
    if (strcmp(mode, "blocking") == 0 && argc == 4) {
        nfslock *lock = NULL;
        int rc = nfslock_blocking_create(path, "rig blocking", atoll(argv[3]), &lock);
        printf("rc=%s\n", errname(rc));
        if (rc == 0)
            nfslock_unlock(lock);
        return 0;
    }
    if (strcmp(mode, "unlock_path") == 0) {
        printf("rc=%s\n", errname(nfslock_unlock_path(path)));
        return 0;
    }
    if (strcmp(mode, "read") == 0)
        return mode_read(path);
    fprintf(stderr, "unknown mode or arguments: %s\n", mode);
    return 2;
}
