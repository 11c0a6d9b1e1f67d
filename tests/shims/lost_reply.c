/*
 * LD_PRELOAD shim that imitates lost NFS replies and transient errors: link(2),
 * unlink(2), rename(2) and exclusive creates are carried out, and then reported as
 * failed, as a retransmitted NFS request reports them (EEXIST for LINK and CREATE,
 * ENOENT for REMOVE and RENAME).
 *   NFSLOCK_SHIM_LOSE_LINK=1    every successful linkat returns EEXIST
 *   NFSLOCK_SHIM_LINK_EIO=1     ... returns EIO instead
 *   NFSLOCK_SHIM_LOSE_UNLINK=1  every successful unlink returns ENOENT
 *   NFSLOCK_SHIM_LOSE_RENAME=1  every successful rename onto a name that is neither a
 *                               lock nor a claim (the P copy) returns ENOENT
 *   NFSLOCK_SHIM_LOSE_CREATE=1  every other successful O_EXCL create is reported as EEXIST
 *                               (the new file stays, closed): a lost reply is never taken
 *                               for our own create, so the library draws another name
 *   NFSLOCK_SHIM_WRITE_EIO=1    every other pwrite fails with EIO without writing
 *   NFSLOCK_SHIM_MKDIR_EIO=1    every other mkdir fails with EIO without creating
 *   NFSLOCK_SHIM_LINK_ENOENT=1  every other linkat to *.nfs_lock fails with ENOENT without
 *                               linking (a client that believes the claim has no links)
 *   NFSLOCK_SHIM_LSTAT_EIO=1    every other lstat of *.nfs_lock fails with EIO
 *   NFSLOCK_SHIM_FSTAT_ESTALE=1 fstat of an open *.nfs_lock always fails with ESTALE (the
 *                               file was removed by another NFS client)
 *   NFSLOCK_SHIM_STOP_COUNTER_WRITE=N  the process stops itself (SIGSTOP) just before its
 *                               Nth pwrite to a file named *.counter (a session's ID
 *                               counter), and writes once it is continued
 * A counter file named by NFSLOCK_SHIM_COUNT (if set) gets one byte per injected fault.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


static int ends_with(const char *path, const char *suffix) {
    size_t n = strlen(path), s = strlen(suffix);
    return n >= s && strcmp(path + n - s, suffix) == 0;
}

static int is_claim_name(const char *path) {
    const char *base = strrchr(path, '/');
    return strncmp(base ? base + 1 : path, ".nfslock-", 9) == 0;
}

/* Alternates per fault kind: every other eligible call gets the fault. */
static int every_other(int *flip) {
    *flip = !*flip;
    return *flip;
}

static int is_lock_name(const char *path) { return ends_with(path, ".nfs_lock"); }

static void count_fault(void) {
    const char *file = getenv("NFSLOCK_SHIM_COUNT");
    int (*real_open)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    if (file == NULL || real_open == NULL) return;
    int fd = real_open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t ignored = write(fd, "x", 1);
        (void)ignored;
        close(fd);
    }
}

int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags) {
    int (*real)(int, const char *, int, const char *, int) =
        (int (*)(int, const char *, int, const char *, int))dlsym(RTLD_NEXT, "linkat");
    static int flip;
    if (is_lock_name(newpath) && getenv("NFSLOCK_SHIM_LINK_ENOENT") && every_other(&flip)) {
        count_fault();
        errno = ENOENT;
        return -1;
    }
    int r = real(olddirfd, oldpath, newdirfd, newpath, flags);
    if (r == 0) {
        if (getenv("NFSLOCK_SHIM_LOSE_LINK")) { count_fault(); errno = EEXIST; return -1; }
        if (getenv("NFSLOCK_SHIM_LINK_EIO")) { count_fault(); errno = EIO; return -1; }
    }
    return r;
}

int unlink(const char *path) {
    int (*real)(const char *) = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    int r = real(path);
    if (r == 0 && getenv("NFSLOCK_SHIM_LOSE_UNLINK")) {
        count_fault();
        errno = ENOENT;
        return -1;
    }
    return r;
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    int (*real)(int, const char *, int, const char *) =
        (int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat");
    int r = real(olddirfd, oldpath, newdirfd, newpath);
    if (r == 0 && !is_lock_name(newpath) && !is_claim_name(newpath) && getenv("NFSLOCK_SHIM_LOSE_RENAME")) {
        count_fault();
        errno = ENOENT;
        return -1;
    }
    return r;
}

static int exclusive_create(const char *path, int flags, int fd) {
    static int flip;
    (void)path;
    if (fd >= 0 && (flags & O_CREAT) && (flags & O_EXCL) && getenv("NFSLOCK_SHIM_LOSE_CREATE") && every_other(&flip)) {
        close(fd);
        count_fault();
        errno = EEXIST;
        return -1;
    }
    return fd;
}

/* The mode argument, present only with O_CREAT. */
#define MODE_ARG(flags, mode)                                                               \
    mode_t mode = 0;                                                                        \
    if ((flags) & O_CREAT) {                                                                \
        va_list ap;                                                                         \
        va_start(ap, flags);                                                                \
        mode = va_arg(ap, mode_t);                                                          \
        va_end(ap);                                                                         \
    }

#define OPEN_SHIM(name)                                                                     \
    int name(const char *path, int flags, ...) {                                            \
        MODE_ARG(flags, mode)                                                               \
        int (*real)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, #name); \
        return exclusive_create(path, flags, real(path, flags, mode));                      \
    }
OPEN_SHIM(open)
OPEN_SHIM(open64)

#define OPENAT_SHIM(name)                                                                   \
    int name(int dirfd, const char *path, int flags, ...) {                                 \
        MODE_ARG(flags, mode)                                                               \
        int (*real)(int, const char *, int, ...) = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, #name); \
        return exclusive_create(path, flags, real(dirfd, path, flags, mode));               \
    }
OPENAT_SHIM(openat)
OPENAT_SHIM(openat64)

int lstat(const char *path, struct stat *st) {
    static int flip;
    int (*real)(const char *, struct stat *) = (int (*)(const char *, struct stat *))dlsym(RTLD_NEXT, "lstat");
    if (is_lock_name(path) && getenv("NFSLOCK_SHIM_LSTAT_EIO") && every_other(&flip)) {
        count_fault();
        errno = EIO;
        return -1;
    }
    return real(path, st);
}

int fstat(int fd, struct stat *st) {
    int (*real)(int, struct stat *) = (int (*)(int, struct stat *))dlsym(RTLD_NEXT, "fstat");
    if (getenv("NFSLOCK_SHIM_FSTAT_ESTALE")) {
        char link[64], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0) {
            target[n] = 0;
            if (ends_with(target, ".nfs_lock")) {
                count_fault();
                errno = ESTALE;
                return -1;
            }
        }
    }
    return real(fd, st);
}

/* NFSLOCK_SHIM_STOP_COUNTER_WRITE: counts pwrites to *.counter
 * files (by the name the descriptor was opened under) and stops the process before the
 * chosen one. */
static void stop_before_counter_write(int fd) {
    static int writes, stopped_once;
    const char *nth = getenv("NFSLOCK_SHIM_STOP_COUNTER_WRITE");
    if (nth == NULL) return;
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return;
    target[n] = 0;
    if (!ends_with(target, ".counter")) return;
    if (++writes == atoi(nth) && !stopped_once) {
        stopped_once = 1;
        count_fault();
        raise(SIGSTOP);
    }
}

#define PWRITE_SHIM(name)                                                                   \
    ssize_t name(int fd, const void *buf, size_t len, off_t off) {                          \
        static int flip;                                                                    \
        ssize_t (*real)(int, const void *, size_t, off_t) =                                 \
            (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, #name);         \
        if (getenv("NFSLOCK_SHIM_WRITE_EIO") && every_other(&flip)) {                       \
            count_fault();                                                                  \
            errno = EIO;                                                                    \
            return -1;                                                                      \
        }                                                                                   \
        stop_before_counter_write(fd);                                                      \
        return real(fd, buf, len, off);                                                     \
    }
PWRITE_SHIM(pwrite)
PWRITE_SHIM(pwrite64)

int mkdir(const char *path, mode_t mode) {
    static int flip;
    int (*real)(const char *, mode_t) = (int (*)(const char *, mode_t))dlsym(RTLD_NEXT, "mkdir");
    if (getenv("NFSLOCK_SHIM_MKDIR_EIO") && every_other(&flip)) {
        count_fault();
        errno = EIO;
        return -1;
    }
    return real(path, mode);
}
