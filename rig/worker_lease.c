/*
 * The rig worker's lease modes: leases through the C API (nfslock_options_*,
 * nfslock_acquire, nfslock_renew, nfslock_is_held, nfslock_fencing_token,
 * nfslock_unlock). Times are printed in milliseconds as decimals, `mono` on this host's
 * CLOCK_MONOTONIC (the machine's unless the host has a time namespace), `boot` on its
 * CLOCK_BOOTTIME; `waited` is an acquisition's wait on this host's CLOCK_BOOTTIME.
 *
 *   lcrash PATH LEASE HOLD_MS      takes a lease (keep-alive on), prints `held ...`,
 *                                  holds it HOLD_MS, prints `is_held=RC mono=T` and
 *                                  SIGKILLs itself (the lease is never released)
 *   ltake PATH LEASE TIMEOUT DIR HOLD_MS
 *                                  acquires (waiting up to TIMEOUT ms); on success prints
 *                                  `acquired rc=OK waited=MS mono=T token=N mine=0|1`,
 *                                  holds HOLD_MS inside the O_EXCL marker of DIR, then
 *                                  prints the result: rc, waited, acq, rel (before the
 *                                  unlock), unl (after it), token, mine, viol, held
 *                                  (is_held at the end), unlock
 *   lfreeze PATH LEASE             takes a lease, prints `held ...`, then sleeps in 5 ms
 *                                  steps until one step took longer than the lease (its
 *                                  host was frozen); then prints frozen=MS and the
 *                                  answers of is_held (at once), renew, is_held, unlock
 *   lfence PATH LEASE DIR N PCT SEED
 *                                  N acquisitions, each in a fresh process (this program
 *                                  again, mode lfence1); PCT% of them SIGKILL themselves
 *                                  while holding (chosen with SEED); prints acq, killed,
 *                                  viol, lost, err
 *   lfence1 PATH LEASE DIR KILL    one acquisition: fencing token, marker, the counter of
 *                                  DIR bumped (the acquisition's order), `ORDER TOKEN HOST
 *                                  PID` appended to DIR/fence.log; KILL=1: leaves the
 *                                  marker and SIGKILLs itself. Exit status 0 ok, 3
 *                                  violation, 4 lock lost while held, 5 error
 *   lping PATH LEASE DIR ROUNDS HOLD_MS GAP_MS
 *                                  ROUNDS times: acquire, `acq HOST MONO` to DIR/ping.log,
 *                                  hold, `rel HOST MONO_BEFORE MONO_AFTER` after the
 *                                  unlock, sleep GAP_MS
 *   lshared PATH LEASE DIR ROUNDS HOLD_MS WRITER
 *                                  ROUNDS acquisitions of a shared lock (WRITER=0) or of
 *                                  the exclusive one (WRITER=1). A reader registers as
 *                                  DIR/r.HOST.PID, checks no write is in progress (no
 *                                  DIR/writing, the counter's digits whole and unchanged
 *                                  over its hold), counts the readers in at once (and
 *                                  those of other hosts); a writer creates DIR/writing
 *                                  (O_EXCL), checks no reader is registered, rewrites the
 *                                  counter in two steps with a pause between (a reader
 *                                  inside would see the placeholder), then unregisters.
 *                                  Prints acq, viol, lost, err, overlap (most readers in
 *                                  at once), cross (holds that saw another host's reader)
 *   clocks FILE                    creates FILE (through the mount) and prints this
 *                                  host's clocks (mono, boot, real) and FILE's mtime (ms)
 */
#define _GNU_SOURCE
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nfslock.h"
#include "worker.h"

static double clock_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(long)(ms / 1000) * 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void path_in(char *out, const char *dir, const char *name)
{
    snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

/* The O_EXCL marker of the critical section: 0 if someone else is inside. */
static int enter_marker(const char *dir)
{
    char path[PATH_MAX];
    path_in(path, dir, "inside");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

static void leave_marker(const char *dir)
{
    char path[PATH_MAX];
    path_in(path, dir, "inside");
    if (unlink(path) != 0 && errno != ENOENT)
        perror("unlink marker");
}

/* Whether the lock's record names this process on this host. */
static int mine(const char *path)
{
    char host[256], me[256] = {0};
    int32_t pid = 0;
    gethostname(me, sizeof me - 1);
    if (nfslock_get_hostname_and_pid(path, host, sizeof host, &pid) != 0)
        return 0;
    return pid == (int32_t)getpid() && strcmp(host, me) == 0;
}

static int take(const char *path, int lease_ms, int64_t timeout_ms, nfslock **lock)
{
    nfslock_options *o = NULL;
    int rc = nfslock_options_new(&o);
    if (rc == 0)
        rc = nfslock_options_set_lease_ms(o, (uint32_t)lease_ms);
    if (rc == 0)
        rc = nfslock_options_set_message(o, "rig lease");
    if (rc == 0)
        rc = nfslock_acquire(path, o, timeout_ms, lock);
    nfslock_options_free(o);
    return rc;
}

/* Appends one line to DIR/NAME (a local file of the rig, one write). */
static int append(const char *dir, const char *name, const char *line)
{
    char path[PATH_MAX];
    path_in(path, dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t n = strlen(line);
    int ok = write(fd, line, n) == (ssize_t)n ? 0 : -1;
    close(fd);
    return ok;
}

/* The counter in DIR (fixed width, in place), incremented: the acquisition's order. */
static long bump(const char *dir)
{
    char path[PATH_MAX], buf[32] = {0};
    path_in(path, dir, "counter");
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

static int mode_lcrash(const char *path, int lease, int hold_ms)
{
    nfslock *lock = NULL;
    int rc = take(path, lease, 30000, &lock);
    if (rc != 0) {
        printf("rc=%s err=1\n", errname(rc));
        return 1;
    }
    printf("held pid=%d mono=%.3f\n", (int)getpid(), clock_ms(CLOCK_MONOTONIC));
    sleep_ms(hold_ms);
    /* The keep-alive thread renewed it all along. */
    printf("is_held=%s mono=%.3f\n", errname(nfslock_is_held(lock)), clock_ms(CLOCK_MONOTONIC));
    fflush(stdout);
    raise(SIGKILL);
    return 1;
}

static int mode_ltake(const char *path, int lease, long long timeout, const char *dir, int hold_ms)
{
    nfslock *lock = NULL;
    double start = clock_ms(CLOCK_BOOTTIME);
    int rc = take(path, lease, timeout, &lock);
    double waited = clock_ms(CLOCK_BOOTTIME) - start, acq = clock_ms(CLOCK_MONOTONIC);
    if (rc != 0) {
        printf("rc=%s waited=%.3f mono=%.3f\n", errname(rc), waited, acq);
        if (rc != ETIMEDOUT)
            fprintf(stderr, "acquire: %s\n", nfslock_last_error());
        return 0;
    }
    uint64_t token = 0;
    int trc = nfslock_fencing_token(lock, &token);
    int is_mine = mine(path);
    printf("acquired rc=OK waited=%.3f mono=%.3f token=%llu mine=%d\n", waited, acq, (unsigned long long)token, is_mine);
    fflush(stdout);
    int alone = enter_marker(dir), viol = !alone || !is_mine || trc != 0;
    if (trc != 0)
        fprintf(stderr, "fencing_token: %s\n", nfslock_last_error());
    sleep_ms(hold_ms);
    int held = nfslock_is_held(lock);
    if (alone)
        leave_marker(dir);
    double rel = clock_ms(CLOCK_MONOTONIC);
    int urc = nfslock_unlock(lock);
    double unl = clock_ms(CLOCK_MONOTONIC);
    if (urc != 0)
        fprintf(stderr, "unlock: %s\n", nfslock_last_error());
    printf("rc=OK waited=%.3f acq=%.3f rel=%.3f unl=%.3f token=%llu mine=%d viol=%d held=%s unlock=%s\n", waited, acq, rel,
           unl, (unsigned long long)token, is_mine, viol, errname(held), errname(urc));
    return 0;
}

static int mode_lfreeze(const char *path, int lease)
{
    nfslock *lock = NULL;
    int rc = take(path, lease, 30000, &lock);
    if (rc != 0) {
        printf("rc=%s err=1\n", errname(rc));
        return 1;
    }
    printf("held pid=%d is_held=%s\n", (int)getpid(), errname(nfslock_is_held(lock)));
    fflush(stdout);
    double last = clock_ms(CLOCK_BOOTTIME), gap = 0, deadline = last + 60000;
    while (last < deadline) {
        sleep_ms(5);
        double now = clock_ms(CLOCK_BOOTTIME);
        gap = now - last;
        last = now;
        if (gap > lease)
            break;
    }
    /* Resumed (or gave up): ask the library what it knows, in this order. */
    int first = nfslock_is_held(lock);
    int renew = nfslock_renew(lock);
    int held = nfslock_is_held(lock);
    int urc = nfslock_unlock(lock);
    printf("frozen=%.3f first=%s renew=%s is_held=%s unlock=%s\n", gap, errname(first), errname(renew), errname(held),
           errname(urc));
    return 0;
}

static int mode_lfence1(const char *path, int lease, const char *dir, int kill_it)
{
    nfslock *lock = NULL;
    int rc = take(path, lease, 120000, &lock);
    if (rc != 0) {
        fprintf(stderr, "acquire: %s\n", nfslock_last_error());
        return 5;
    }
    uint64_t token = 0;
    rc = nfslock_fencing_token(lock, &token);
    if (rc != 0) {
        fprintf(stderr, "fencing_token: %s\n", nfslock_last_error());
        nfslock_unlock(lock);
        return rc == ENOLCK ? 4 : 5;
    }
    int alone = enter_marker(dir);
    long order = bump(dir);
    char host[256] = {0}, line[512];
    gethostname(host, sizeof host - 1);
    snprintf(line, sizeof line, "%ld %llu %s %d %d\n", order, (unsigned long long)token, host, (int)getpid(), kill_it);
    if (order < 0 || append(dir, "fence.log", line) != 0) {
        fprintf(stderr, "counter or log: %s\n", strerror(errno));
        return 5;
    }
    if (alone)
        leave_marker(dir);
    if (kill_it)
        raise(SIGKILL);
    int held = nfslock_is_held(lock), urc = nfslock_unlock(lock);
    if (!alone)
        return 3;
    if (held != 0 || urc != 0) {
        fprintf(stderr, "is_held %s, unlock %s: %s\n", errname(held), errname(urc), nfslock_last_error());
        return 4;
    }
    return 0;
}

static int mode_lfence(const char *self, const char *path, const char *lease, const char *dir, int n, int pct,
                       unsigned seed)
{
    int acq = 0, killed = 0, viol = 0, lost = 0, err = 0;
    srand(seed);
    for (int i = 0; i < n; i++) {
        int kill_it = rand() % 100 < pct;
        pid_t pid = fork();
        if (pid < 0) {
            err++;
            continue;
        }
        if (pid == 0) {
            execl(self, self, "lfence1", path, lease, dir, kill_it ? "1" : "0", (char *)NULL);
            _exit(127);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && kill_it) {
            acq++;
            killed++;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            acq++;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
            acq++;
            viol++;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 4) {
            acq++;
            lost++;
        } else {
            err++;
        }
    }
    printf("acq=%d killed=%d viol=%d lost=%d err=%d\n", acq, killed, viol, lost, err);
    return 0;
}

static int mode_lping(const char *path, int lease, const char *dir, int rounds, int hold_ms, int gap_ms)
{
    char host[256] = {0}, line[512];
    gethostname(host, sizeof host - 1);
    int acq = 0, err = 0, viol = 0;
    for (int i = 0; i < rounds; i++) {
        nfslock *lock = NULL;
        int rc = take(path, lease, 60000, &lock);
        double at = clock_ms(CLOCK_MONOTONIC);
        if (rc != 0) {
            fprintf(stderr, "acquire: %s\n", nfslock_last_error());
            err++;
            continue;
        }
        acq++;
        int alone = enter_marker(dir);
        viol += !alone;
        snprintf(line, sizeof line, "acq %s %.3f\n", host, at);
        append(dir, "ping.log", line);
        sleep_ms(hold_ms);
        if (alone)
            leave_marker(dir);
        double before = clock_ms(CLOCK_MONOTONIC);
        rc = nfslock_unlock(lock);
        double after = clock_ms(CLOCK_MONOTONIC);
        if (rc != 0) {
            fprintf(stderr, "unlock: %s\n", nfslock_last_error());
            viol++;
        }
        snprintf(line, sizeof line, "rel %s %.3f %.3f\n", host, before, after);
        append(dir, "ping.log", line);
        sleep_ms(gap_ms);
    }
    printf("acq=%d viol=%d err=%d\n", acq, viol, err);
    return 0;
}

/* The counter of DIR as written by a shared-lock writer: -1 when it is not whole digits
 * (a write in progress), 0 when it does not exist yet. */
static long read_counter(const char *dir)
{
    char path[PATH_MAX], buf[32] = {0};
    path_in(path, dir, "counter");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    ssize_t n = pread(fd, buf, 20, 0);
    close(fd);
    if (n != 20)
        return n == 0 ? 0 : -1;
    for (int i = 0; i < 20; i++)
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
    return atol(buf);
}

static int write_counter(const char *dir, const char *text)
{
    char path[PATH_MAX];
    path_in(path, dir, "counter");
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int ok = pwrite(fd, text, 20, 0) == 20 ? 0 : -1;
    close(fd);
    return ok;
}

/* Registered readers of DIR: how many, and how many of another host than `me`. */
static int readers_in(const char *dir, const char *me, int *others)
{
    int n = 0;
    *others = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *e;
    size_t len = strlen(me);
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "r.", 2) != 0)
            continue;
        n++;
        if (strncmp(e->d_name + 2, me, len) != 0 || e->d_name[2 + len] != '.')
            (*others)++;
    }
    closedir(d);
    return n;
}

static int take_shared(const char *path, int lease_ms, nfslock **lock)
{
    nfslock_options *o = NULL;
    int rc = nfslock_options_new(&o);
    if (rc == 0)
        rc = nfslock_options_set_lease_ms(o, (uint32_t)lease_ms);
    if (rc == 0)
        rc = nfslock_options_set_shared(o, 1);
    if (rc == 0)
        rc = nfslock_options_set_message(o, "rig reader");
    if (rc == 0)
        rc = nfslock_acquire(path, o, 60000, lock);
    nfslock_options_free(o);
    return rc;
}

/* One reader's hold: 0 clean, 1 it saw a write in progress or a changed counter. */
static int read_inside(const char *dir, const char *host, int hold_ms, int *overlap, int *cross)
{
    char me[PATH_MAX], name[300];
    snprintf(name, sizeof name, "r.%s.%d", host, (int)getpid());
    path_in(me, dir, name);
    int fd = open(me, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror("register reader");
        return 1;
    }
    close(fd);
    char writing[PATH_MAX];
    path_in(writing, dir, "writing");
    int others = 0, bad = 0;
    long before = read_counter(dir);
    bad |= access(writing, F_OK) == 0 || before < 0;
    sleep_ms(hold_ms);
    int in = readers_in(dir, host, &others);
    long after = read_counter(dir);
    bad |= access(writing, F_OK) == 0 || after != before;
    if (in > *overlap)
        *overlap = in;
    *cross += others > 0;
    if (bad)
        fprintf(stderr, "reader %s: counter %ld then %ld, writing %d\n", name, before, after, access(writing, F_OK) == 0);
    unlink(me);
    return bad;
}

/* One writer's hold: 0 clean, 1 another writer or a reader was inside. */
static int write_inside(const char *dir, int hold_ms)
{
    char writing[PATH_MAX], text[32];
    path_in(writing, dir, "writing");
    int fd = open(writing, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "writer: another writer inside\n");
        return 1;
    }
    close(fd);
    int others = 0, bad = readers_in(dir, "", &others) > 0;
    long value = read_counter(dir);
    bad |= value < 0;
    /* In two steps: a reader inside now would see the placeholder. */
    bad |= write_counter(dir, "writing-in-progress!") != 0;
    sleep_ms(hold_ms);
    snprintf(text, sizeof text, "%020ld", value + 1);
    bad |= write_counter(dir, text) != 0;
    bad |= readers_in(dir, "", &others) > 0;
    if (bad)
        fprintf(stderr, "writer: readers inside or counter unreadable (%ld)\n", value);
    unlink(writing);
    return bad;
}

static int mode_lshared(const char *path, int lease, const char *dir, int rounds, int hold_ms, int writer)
{
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    int acq = 0, viol = 0, lost = 0, err = 0, overlap = 0, cross = 0;
    for (int i = 0; i < rounds; i++) {
        nfslock *lock = NULL;
        int rc = writer ? take(path, lease, 60000, &lock) : take_shared(path, lease, &lock);
        if (rc != 0) {
            fprintf(stderr, "acquire: %s\n", nfslock_last_error());
            err++;
            continue;
        }
        acq++;
        viol += writer ? write_inside(dir, hold_ms) : read_inside(dir, host, hold_ms, &overlap, &cross);
        int held = nfslock_is_held(lock);
        rc = nfslock_unlock(lock);
        if (held != 0 || rc != 0) {
            fprintf(stderr, "is_held %s, unlock %s: %s\n", errname(held), errname(rc), nfslock_last_error());
            lost++;
        }
        /* A short pause lets the other side in (readers and the writer take turns). */
        sleep_ms(hold_ms / 2);
    }
    printf("acq=%d viol=%d lost=%d err=%d overlap=%d cross=%d\n", acq, viol, lost, err, overlap, cross);
    return 0;
}

static int mode_clocks(const char *file)
{
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    struct stat st;
    int ok = fd >= 0 && fstat(fd, &st) == 0;
    if (fd >= 0)
        close(fd);
    printf("rc=%s mono=%.3f boot=%.3f real=%.3f mtime=%.3f\n", ok ? "OK" : "EIO", clock_ms(CLOCK_MONOTONIC),
           clock_ms(CLOCK_BOOTTIME), clock_ms(CLOCK_REALTIME),
           ok ? (double)st.st_mtim.tv_sec * 1e3 + (double)st.st_mtim.tv_nsec / 1e6 : 0.0);
    return 0;
}

int lease_mode(const char *mode, int argc, char **argv)
{
    if (strcmp(mode, "lcrash") == 0 && argc == 5)
        return mode_lcrash(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (strcmp(mode, "ltake") == 0 && argc == 7)
        return mode_ltake(argv[2], atoi(argv[3]), atoll(argv[4]), argv[5], atoi(argv[6]));
    if (strcmp(mode, "lfreeze") == 0 && argc == 4)
        return mode_lfreeze(argv[2], atoi(argv[3]));
    if (strcmp(mode, "lfence") == 0 && argc == 8)
        return mode_lfence(argv[0], argv[2], argv[3], argv[4], atoi(argv[5]), atoi(argv[6]), (unsigned)atoi(argv[7]));
    if (strcmp(mode, "lfence1") == 0 && argc == 6)
        return mode_lfence1(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]));
    if (strcmp(mode, "lping") == 0 && argc == 8)
        return mode_lping(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]), atoi(argv[6]), atoi(argv[7]));
    if (strcmp(mode, "lshared") == 0 && argc == 8)
        return mode_lshared(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]), atoi(argv[6]), atoi(argv[7]));
    if (strcmp(mode, "clocks") == 0 && argc == 3)
        return mode_clocks(argv[2]);
    return -1;
}
