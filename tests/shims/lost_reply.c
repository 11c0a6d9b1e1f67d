/*
 * LD_PRELOAD shim that imitates lost NFS replies: link(2) and unlink(2) of a *.nfs_lock
 * name are carried out, and then reported as failed, as a retransmitted NFS request
 * reports them (EEXIST for LINK, ENOENT for REMOVE).
 *   NFSLOCK_SHIM_LOSE_LINK=1    every successful linkat to *.nfs_lock returns EEXIST
 *   NFSLOCK_SHIM_LINK_EIO=1     ... returns EIO instead
 *   NFSLOCK_SHIM_LOSE_UNLINK=1  every successful unlink of *.nfs_lock returns ENOENT
 * A counter file named by NFSLOCK_SHIM_COUNT (if set) gets one byte per injected fault.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is_lock_name(const char *path) {
    size_t n = strlen(path), s = strlen(".nfs_lock");
    return n >= s && strcmp(path + n - s, ".nfs_lock") == 0;
}

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
    int r = real(olddirfd, oldpath, newdirfd, newpath, flags);
    if (r == 0 && is_lock_name(newpath)) {
        if (getenv("NFSLOCK_SHIM_LOSE_LINK")) { count_fault(); errno = EEXIST; return -1; }
        if (getenv("NFSLOCK_SHIM_LINK_EIO")) { count_fault(); errno = EIO; return -1; }
    }
    return r;
}

int unlink(const char *path) {
    int (*real)(const char *) = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    int r = real(path);
    if (r == 0 && is_lock_name(path) && getenv("NFSLOCK_SHIM_LOSE_UNLINK")) {
        count_fault();
        errno = ENOENT;
        return -1;
    }
    return r;
}
