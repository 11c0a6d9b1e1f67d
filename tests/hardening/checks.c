/*
 * Hardening checks of tests/hardening.rs, through include/nfslock.h only. Each mode works
 * in the (empty, private) directory DIR it is given, prints one line per failed check
 * ("FAIL file:line: ...") and a closing "ok" or "failed", and exits 0 only when every
 * check passed.
 *
 *   checks spelling DIR           same lock, other spellings, same thread: EDEADLK at once
 *   checks spelling-wait DIR N    the same for blocking_create(-1) on spelling N (under alarm)
 *   checks fds DIR                descriptors kept after 100 lock/unlock cycles over 20 paths
 *   checks rlimit DIR             30 distinct paths and the program's own open() under
 *                                 RLIMIT_NOFILE 20
 *   checks socket DIR             a socket at P.nfs_lock: EBADMSG
 *   checks readers DIR            the readers take P.nfs_lock itself as well as P
 *   checks dot DIR                paths ending in "/." (and "/..") name directories: EINVAL
 *   checks bigmsg DIR             a message whose record exceeds the cap: refused, nothing
 *                                 written
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nfslock.h"

static int failures;

static void fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL %s:%d: ", file, line);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    failures++;
}

#define CHECKF(cond, ...)                                                                   \
    do {                                                                                    \
        if (!(cond))                                                                        \
            fail(__FILE__, __LINE__, __VA_ARGS__);                                          \
    } while (0)

static const char *en(int code) {
    if (code == 0)
        return "0";
    const char *name = strerrorname_np(code);
    return name ? name : "unknown";
}

/* rc must be `want`; says which call and what the library said. */
#define EXPECT_RC(rc, want, what)                                                           \
    CHECKF((rc) == (want), "%s: got %s (%d), want %s; last error: %s", (what), en(rc), (rc),   \
           en(want), (rc) != 0 ? nfslock_last_error() : "-")

static char DIR_[PATH_MAX];

static const char *in_dir(char *buf, const char *name) {
    snprintf(buf, PATH_MAX, "%s/%s", DIR_, name);
    return buf;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The names in DIR_, space-separated, sorted by the directory (for messages), and how
 * many there are. */
static int listing(char *out, size_t len) {
    DIR *d = opendir(DIR_);
    out[0] = 0;
    if (d == NULL) {
        snprintf(out, len, "(opendir: %s)", strerror(errno));
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        n++;
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", used ? " " : "", e->d_name);
    }
    closedir(d);
    return n;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Open descriptors of this process, not counting the one used to list them. */
static int count_fds(char *names, size_t len) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    if (names)
        names[0] = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d))
            continue;
        n++;
        if (names) {
            char link[PATH_MAX + 1], proc[64];
            snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
            ssize_t l = readlink(proc, link, PATH_MAX);
            link[l < 0 ? 0 : l] = 0;
            size_t used = strlen(names);
            snprintf(names + used, len - used, "\n    %d -> %s", fd, link);
        }
    }
    closedir(d);
    return n;
}

/* ---- same lock, another spelling --------------------------------------------------- */

/* D/sub/../A, D/link/A (link -> D), and ../A from D/sub: all the lock on D/A. */
#define N_SPELLINGS 3

static void make_spellings(char spell[N_SPELLINGS][PATH_MAX]) {
    char buf[PATH_MAX];
    if (mkdir(in_dir(buf, "sub"), 0755) != 0 && errno != EEXIST)
        fail(__FILE__, __LINE__, "mkdir %s: %s", buf, strerror(errno));
    if (symlink(DIR_, in_dir(buf, "link")) != 0 && errno != EEXIST)
        fail(__FILE__, __LINE__, "symlink %s: %s", buf, strerror(errno));
    in_dir(spell[0], "sub/../A");
    in_dir(spell[1], "link/A");
    snprintf(spell[2], PATH_MAX, "../A");
    if (chdir(in_dir(buf, "sub")) != 0)
        fail(__FILE__, __LINE__, "chdir %s: %s", buf, strerror(errno));
}

static void spelling(void) {
    char a[PATH_MAX], spell[N_SPELLINGS][PATH_MAX];
    make_spellings(spell);
    nfslock *held;
    int rc = nfslock_create(in_dir(a, "A"), "held", &held);
    EXPECT_RC(rc, 0, "nfslock_create(D/A)");
    if (rc != 0)
        return;
    /* Controls: spellings that differ only lexically. */
    const char *same[] = {"A", "./A", "/A"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        char p[PATH_MAX], what[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/%s", DIR_, same[i]);
        nfslock *l = NULL;
        rc = nfslock_create(p, "again", &l);
        snprintf(what, sizeof what, "holding D/A, nfslock_create(%s)", p);
        EXPECT_RC(rc, EDEADLK, what);
        if (rc == 0)
            nfslock_unlock(l);
    }
    for (int i = 0; i < N_SPELLINGS; i++) {
        char what[PATH_MAX + 128];
        nfslock *l = NULL;
        rc = nfslock_create(spell[i], "again", &l);
        snprintf(what, sizeof what, "holding D/A, nfslock_create(%s)", spell[i]);
        EXPECT_RC(rc, EDEADLK, what);
        if (rc == 0)
            nfslock_unlock(l);
        /* One attempt, and a bounded wait: EDEADLK too, never EAGAIN or ETIMEDOUT. */
        const int64_t timeouts[] = {0, 300};
        for (int t = 0; t < 2; t++) {
            l = NULL;
            double start = now_ms();
            rc = nfslock_blocking_create(spell[i], "again", timeouts[t], &l);
            snprintf(what, sizeof what, "holding D/A, nfslock_blocking_create(%s, %lld ms) (returned after %.0f ms)",
                     spell[i], (long long)timeouts[t], now_ms() - start);
            EXPECT_RC(rc, EDEADLK, what);
            if (rc == 0)
                nfslock_unlock(l);
        }
    }
    /* The lock itself is untouched by all this. */
    char lockfile[PATH_MAX];
    CHECKF(exists(in_dir(lockfile, "A.nfs_lock")), "%s vanished while D/A was held", lockfile);
    rc = nfslock_unlock(held);
    EXPECT_RC(rc, 0, "nfslock_unlock(D/A) after the other spellings");
}

/* blocking_create(-1) on spelling n while this thread holds D/A: EDEADLK at once. A wait
 * is ended by SIGALRM (default action: the process dies), which the test reports. */
static void spelling_wait(int n) {
    char a[PATH_MAX], spell[N_SPELLINGS][PATH_MAX];
    make_spellings(spell);
    if (n < 0 || n >= N_SPELLINGS) {
        fail(__FILE__, __LINE__, "no spelling %d", n);
        return;
    }
    nfslock *held;
    int rc = nfslock_create(in_dir(a, "A"), "held", &held);
    EXPECT_RC(rc, 0, "nfslock_create(D/A)");
    if (rc != 0)
        return;
    printf("waiting: nfslock_blocking_create(%s, -1) holding D/A\n", spell[n]);
    fflush(stdout);
    alarm(5);
    nfslock *l = NULL;
    rc = nfslock_blocking_create(spell[n], "again", -1, &l);
    alarm(0);
    char what[PATH_MAX + 64];
    snprintf(what, sizeof what, "holding D/A, nfslock_blocking_create(%s, -1)", spell[n]);
    EXPECT_RC(rc, EDEADLK, what);
    if (rc == 0)
        nfslock_unlock(l);
    EXPECT_RC(nfslock_unlock(held), 0, "nfslock_unlock(D/A)");
}

/* ---- descriptors ------------------------------------------------------------------- */

/* The library's descriptors beyond what the program had before its first call. */
#define FD_BOUND 8

static void fds(void) {
    char names[8192];
    int base = count_fds(NULL, 0);
    CHECKF(base >= 0, "cannot list /proc/self/fd: %s", strerror(errno));
    for (int cycle = 0; cycle < 100; cycle++) {
        char name[32], p[PATH_MAX];
        snprintf(name, sizeof name, "p%d", cycle % 20);
        nfslock *l;
        int rc = nfslock_create(in_dir(p, name), "fds", &l);
        EXPECT_RC(rc, 0, "nfslock_create in a lock/unlock cycle");
        if (rc != 0)
            return;
        rc = nfslock_unlock(l);
        EXPECT_RC(rc, 0, "nfslock_unlock in a lock/unlock cycle");
    }
    int after = count_fds(names, sizeof names);
    printf("descriptors: %d before the first call, %d after 100 cycles over 20 paths with nothing held\n", base, after);
    CHECKF(after <= base + FD_BOUND,
           "with nothing held the library keeps %d descriptors open (at most %d allowed); open:%s", after - base,
           FD_BOUND, names);
}

static void rlimit(void) {
    struct rlimit rl = {20, 20};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fail(__FILE__, __LINE__, "setrlimit(RLIMIT_NOFILE, 20): %s", strerror(errno));
        return;
    }
    int base = count_fds(NULL, 0);
    /* The first failure in full, then how many of the 30 failed. */
    int failed = 0;
    for (int i = 0; i < 30; i++) {
        char name[32], p[PATH_MAX];
        snprintf(name, sizeof name, "q%d", i);
        nfslock *l;
        int rc = nfslock_create(in_dir(p, name), "rlimit", &l);
        if (rc == 0) {
            rc = nfslock_unlock(l);
            if (rc != 0 && failed++ == 0)
                fail(__FILE__, __LINE__, "under RLIMIT_NOFILE 20, nfslock_unlock of distinct path %d: %s (%d): %s", i + 1,
                     en(rc), rc, nfslock_last_error());
        } else if (failed++ == 0) {
            fail(__FILE__, __LINE__, "under RLIMIT_NOFILE 20, nfslock_create of distinct path %d: %s (%d): %s", i + 1,
                 en(rc), rc, nfslock_last_error());
        }
    }
    CHECKF(failed == 0, "under RLIMIT_NOFILE 20, %d of 30 lock/unlock cycles on distinct paths failed", failed);
    char names[8192];
    int after = count_fds(names, sizeof names);
    if (after < 0)
        printf("descriptors under RLIMIT_NOFILE 20: %d before; after 30 distinct paths none was left to list "
               "/proc/self/fd (%s)\n", base, strerror(errno));
    else
        printf("descriptors under RLIMIT_NOFILE 20: %d before, %d after 30 distinct paths\n", base, after);
    /* What the library keeps must leave the rest of the limit to the program. */
    int room = 20 - base - FD_BOUND;
    int opened[20], n = 0;
    for (; n < room; n++) {
        opened[n] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (opened[n] < 0)
            break;
    }
    CHECKF(n == room, "under RLIMIT_NOFILE 20 the program's own open() failed (%s) after %d of %d files; open:%s",
           strerror(errno), n, room, names);
    for (int i = 0; i < n; i++)
        close(opened[i]);
}

/* ---- lock files that are not records, and reader paths ----------------------------- */

static void socket_lock(void) {
    if (chdir(DIR_) != 0) {
        fail(__FILE__, __LINE__, "chdir %s: %s", DIR_, strerror(errno));
        return;
    }
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "P.nfs_lock");
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
        fail(__FILE__, __LINE__, "a socket at P.nfs_lock: %s", strerror(errno));
        return;
    }
    char p[PATH_MAX], buf[256];
    in_dir(p, "P");
    int32_t pid;
    nfslock *l = NULL;
    int rc = nfslock_create(p, "m", &l);
    EXPECT_RC(rc, EBADMSG, "a socket at P.nfs_lock: nfslock_create(P)");
    if (rc == 0)
        nfslock_unlock(l);
    rc = nfslock_blocking_create(p, "m", 0, &l);
    EXPECT_RC(rc, EBADMSG, "a socket at P.nfs_lock: nfslock_blocking_create(P, 0 ms)");
    if (rc == 0)
        nfslock_unlock(l);
    rc = nfslock_get_hostname_and_pid(p, buf, sizeof buf, &pid);
    EXPECT_RC(rc, EBADMSG, "a socket at P.nfs_lock: nfslock_get_hostname_and_pid(P)");
    rc = nfslock_get_message(p, buf, sizeof buf);
    EXPECT_RC(rc, EBADMSG, "a socket at P.nfs_lock: nfslock_get_message(P)");
    rc = nfslock_unlock_path(p);
    EXPECT_RC(rc, EBADMSG, "a socket at P.nfs_lock: nfslock_unlock_path(P)");
    struct stat st;
    CHECKF(lstat("P.nfs_lock", &st) == 0 && S_ISSOCK(st.st_mode), "the socket at P.nfs_lock was not left alone (%s)",
           strerror(errno));
    CHECKF(!exists(p), "P was written although the lock was not taken");
    close(s);
}

static void readers(void) {
    char p[PATH_MAX], lockfile[PATH_MAX], host[256], buf[256], me[256];
    in_dir(p, "P");
    in_dir(lockfile, "P.nfs_lock");
    gethostname(me, sizeof me);
    me[sizeof me - 1] = 0;
    nfslock *l;
    int rc = nfslock_create(p, "hello reader", &l);
    EXPECT_RC(rc, 0, "nfslock_create(P)");
    if (rc != 0)
        return;
    const char *spellings[] = {p, lockfile};
    for (int i = 0; i < 2; i++) {
        char what[PATH_MAX + 64];
        int32_t pid = -1;
        rc = nfslock_get_hostname_and_pid(spellings[i], host, sizeof host, &pid);
        snprintf(what, sizeof what, "P held, nfslock_get_hostname_and_pid(%s)", spellings[i]);
        EXPECT_RC(rc, 0, what);
        if (rc == 0)
            CHECKF(pid == getpid() && strcmp(host, me) == 0, "%s: read host %s pid %d, want %s pid %d", what, host,
                   (int)pid, me, (int)getpid());
        rc = nfslock_get_message(spellings[i], buf, sizeof buf);
        snprintf(what, sizeof what, "P held, nfslock_get_message(%s)", spellings[i]);
        EXPECT_RC(rc, 0, what);
        if (rc == 0)
            CHECKF(strcmp(buf, "hello reader") == 0, "%s: read \"%s\"", what, buf);
    }
    EXPECT_RC(nfslock_unlock(l), 0, "nfslock_unlock(P)");
    int32_t pid;
    rc = nfslock_get_hostname_and_pid(lockfile, host, sizeof host, &pid);
    EXPECT_RC(rc, ENOENT, "P released, nfslock_get_hostname_and_pid(P.nfs_lock)");
    rc = nfslock_get_message(lockfile, buf, sizeof buf);
    EXPECT_RC(rc, ENOENT, "P released, nfslock_get_message(P.nfs_lock)");
}

/* Every call on `path` must be EINVAL and leave DIR_ as it was. */
static void all_einval(const char *path) {
    char before[4096], after[4096], what[PATH_MAX + 64], buf[256];
    listing(before, sizeof before);
    nfslock *l = NULL;
    int32_t pid;
    int rc = nfslock_create(path, "m", &l);
    snprintf(what, sizeof what, "nfslock_create(%s)", path);
    EXPECT_RC(rc, EINVAL, what);
    if (rc == 0)
        nfslock_unlock(l);
    else
        CHECKF(nfslock_last_error()[0] != 0, "%s: empty last error", what);
    rc = nfslock_blocking_create(path, "m", 100, &l);
    snprintf(what, sizeof what, "nfslock_blocking_create(%s, 100 ms)", path);
    EXPECT_RC(rc, EINVAL, what);
    if (rc == 0)
        nfslock_unlock(l);
    rc = nfslock_unlock_path(path);
    snprintf(what, sizeof what, "nfslock_unlock_path(%s)", path);
    EXPECT_RC(rc, EINVAL, what);
    rc = nfslock_get_hostname_and_pid(path, buf, sizeof buf, &pid);
    snprintf(what, sizeof what, "nfslock_get_hostname_and_pid(%s)", path);
    EXPECT_RC(rc, EINVAL, what);
    rc = nfslock_get_message(path, buf, sizeof buf);
    snprintf(what, sizeof what, "nfslock_get_message(%s)", path);
    EXPECT_RC(rc, EINVAL, what);
    listing(after, sizeof after);
    CHECKF(strcmp(before, after) == 0, "calls on %s changed the directory: before [%s], after [%s]", path, before,
           after);
}

static void dot(void) {
    char p[PATH_MAX], d[PATH_MAX];
    /* D/A does not exist; D/B is a directory. */
    if (mkdir(in_dir(d, "B"), 0755) != 0)
        fail(__FILE__, __LINE__, "mkdir %s: %s", d, strerror(errno));
    const char *names[] = {"A/.", "B/.", "A/..", "B/..", "A/", "."};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        all_einval(in_dir(p, names[i]));
    char lock_in_b[PATH_MAX];
    CHECKF(!exists(in_dir(lock_in_b, "B/.nfs_lock")), "%s was created", lock_in_b);
}

/* ---- messages over the record cap -------------------------------------------------- */

/* Removes what a failed check left in DIR_ (files only), so that the next case starts
 * from an empty directory. */
static void empty_dir(void) {
    DIR *d = opendir(DIR_);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' || (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0))
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

static void refused(const char *what, const char *message) {
    char p[PATH_MAX], names[4096], full[256];
    in_dir(p, "P");
    nfslock *l = NULL;
    int rc = nfslock_create(p, message, &l);
    snprintf(full, sizeof full, "nfslock_create(P, %s)", what);
    CHECKF(rc == EINVAL || rc == EMSGSIZE, "%s: got %s (%d), want EINVAL or EMSGSIZE; last error: %s", full, en(rc), rc,
           rc ? nfslock_last_error() : "-");
    if (rc == 0)
        nfslock_unlock(l);
    else
        CHECKF(nfslock_last_error()[0] != 0, "%s: empty last error", full);
    int n = listing(names, sizeof names);
    CHECKF(n == 0, "%s wrote to the directory: [%s]", full, names);
    empty_dir();
    double start = now_ms();
    rc = nfslock_blocking_create(p, message, 1000, &l);
    snprintf(full, sizeof full, "nfslock_blocking_create(P, %s, 1000 ms) (returned after %.0f ms)", what,
             now_ms() - start);
    CHECKF(rc == EINVAL || rc == EMSGSIZE, "%s: got %s (%d), want EINVAL or EMSGSIZE; last error: %s", full, en(rc), rc,
           rc ? nfslock_last_error() : "-");
    if (rc == 0)
        nfslock_unlock(l);
    n = listing(names, sizeof names);
    CHECKF(n == 0, "%s wrote to the directory: [%s]", full, names);
    empty_dir();
}

static void bigmsg(void) {
    /* 70 KB of plain bytes: the record is over 64 KiB. */
    size_t len = 70 * 1024;
    char *big = malloc(len + 1);
    memset(big, 'x', len);
    big[len] = 0;
    refused("a 70 KB message", big);
    /* 20,000 bytes that the record escapes as \DDD: 80 KB of record from a 20 KB message. */
    len = 20000;
    memset(big, '\xff', len);
    big[len] = 0;
    refused("a 20 KB message of bytes escaped 4:1", big);
    free(big);
    /* The lock is still takeable, and readable. */
    char p[PATH_MAX], buf[64];
    in_dir(p, "P");
    nfslock *l;
    int rc = nfslock_create(p, "small", &l);
    EXPECT_RC(rc, 0, "nfslock_create(P, \"small\") after the refused messages");
    if (rc != 0)
        return;
    rc = nfslock_get_message(p, buf, sizeof buf);
    EXPECT_RC(rc, 0, "nfslock_get_message(P)");
    if (rc == 0)
        CHECKF(strcmp(buf, "small") == 0, "read message \"%s\", want \"small\"", buf);
    EXPECT_RC(nfslock_unlock(l), 0, "nfslock_unlock(P)");
}

int main(int argc, char **argv) {
    if (argc < 3 || strlen(argv[2]) >= sizeof DIR_ - 64) {
        fprintf(stderr, "usage: %s MODE DIR [N]\n", argv[0]);
        return 2;
    }
    snprintf(DIR_, sizeof DIR_, "%s", argv[2]);
    const char *mode = argv[1];
    if (strcmp(mode, "spelling") == 0)
        spelling();
    else if (strcmp(mode, "spelling-wait") == 0 && argc == 4)
        spelling_wait(atoi(argv[3]));
    else if (strcmp(mode, "fds") == 0)
        fds();
    else if (strcmp(mode, "rlimit") == 0)
        rlimit();
    else if (strcmp(mode, "socket") == 0)
        socket_lock();
    else if (strcmp(mode, "readers") == 0)
        readers();
    else if (strcmp(mode, "dot") == 0)
        dot();
    else if (strcmp(mode, "bigmsg") == 0)
        bigmsg();
    else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("%s\n", failures ? "failed" : "ok");
    return failures ? 1 : 0;
}
