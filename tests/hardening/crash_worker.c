/*
 * The processes of tests/crash_loops.rs, using libnfslock only through its header.
 *
 *   crash_worker holder DIR NPATHS     locks DIR/lock0 .. DIR/lock<NPATHS-1> over and over
 *                                      until killed
 *   crash_worker alloc DIR NAME        opens a session on repository DIR, namespace NAME,
 *                                      makes new IDs, closes it, and again, until killed
 *   crash_worker hold DIR              takes DIR/lock0, says "H" and waits to be killed
 *   crash_worker check-locks DIR NPATHS   takes every DIR/lock<i> with a 1000 ms timeout and
 *                                      releases it; exit status 0 when all were taken
 *   crash_worker check-session DIR NAME   opens a session, reaps the dead, runs check, makes
 *                                      one ID, closes; exit status 0 when all went well
 *
 * The workers write one line to stdout as they start working ("R"), and then only whole
 * lines of at most PIPE_BUF bytes, each with one write(2): a SIGKILL can cut the output
 * between two lines, never inside one. Lines:
 *   R                  about to make the first library call
 *   F                  the first lock attempt returned (holder) / the session is open (alloc)
 *   I <id> [<id>...]   IDs one make_new_ids call returned (written after it returned)
 *   E <what> <errno name> <last error>   a call failed in a way the contract does not allow
 */
#define _GNU_SOURCE

#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nfslock.h"

#define MAX_PATHS 16

static const char *errname(int code) {
    switch (code) {
    case 0: return "0";
    case EAGAIN: return "EAGAIN";
    case EBADMSG: return "EBADMSG";
    case EDEADLK: return "EDEADLK";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case ENOLCK: return "ENOLCK";
    case EPERM: return "EPERM";
    case ESTALE: return "ESTALE";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ELOOP: return "ELOOP";
    case EEXIST: return "EEXIST";
    case EMFILE: return "EMFILE";
    case ENOTRECOVERABLE: return "ENOTRECOVERABLE";
    default: return "other";
    }
}

/* One whole line with one write(2) (atomic on a pipe up to PIPE_BUF bytes). */
static void line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void line(const char *fmt, ...) {
    char buf[PIPE_BUF];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w;
    do
        w = write(1, buf, (size_t)n);
    while (w < 0 && errno == EINTR);
}

static void failed(const char *what, int rc) {
    line("E %s %s(%d) %s", what, errname(rc), rc, nfslock_last_error());
}

static void lock_path(char *out, size_t len, const char *dir, int i) {
    snprintf(out, len, "%s/lock%d", dir, i);
}

/* Takes each lock it can with one attempt (another holder may have it), keeps them,
 * releases them all, again and again. Every other round uses a new message, so that its
 * claims are new files: kills land in a claim's create, write and fsync, and in the P
 * copy's temp file and rename, as well as in the steady-state link and unlink. */
static int holder(const char *dir, int npaths) {
    char paths[MAX_PATHS][PATH_MAX];
    for (int i = 0; i < npaths; i++)
        lock_path(paths[i], sizeof paths[i], dir, i);
    line("R");
    for (unsigned long round = 0;; round++) {
        char message[64];
        snprintf(message, sizeof message, "holder %ld round %lu", (long)getpid(), round);
        nfslock *held[MAX_PATHS] = {0};
        for (int i = 0; i < npaths; i++) {
            int rc = nfslock_create(paths[i], message, &held[i]);
            if (round == 0 && i == 0)
                line("F");
            if (rc != 0 && rc != EAGAIN)
                failed("nfslock_create", rc);
        }
        for (int i = 0; i < npaths; i++) {
            if (held[i] == NULL)
                continue;
            int rc = nfslock_unlock(held[i]);
            if (rc != 0)
                failed("nfslock_unlock", rc);
        }
    }
}

/* Opens a session, makes IDs in three calls (giving one back now and then), closes it,
 * and again: kills land in session open and close as well as in make_new_ids. */
static int alloc(const char *dir, const char *name) {
    line("R");
    for (size_t round = 0;; round++) {
        nfslock_session *s;
        int rc = nfslock_session_open(dir, name, 0, &s);
        if (rc != 0) {
            failed("nfslock_session_open", rc);
            return 1;
        }
        if (round == 0)
            line("F");
        for (size_t call = 0; call < 3; call++) {
            size_t n = call + 1;
            uint64_t ids[3];
            rc = nfslock_session_make_new_ids(s, n, ids);
            if (rc != 0) {
                failed("nfslock_session_make_new_ids", rc);
                continue;
            }
            if (n == 1)
                line("I %llu", (unsigned long long)ids[0]);
            else if (n == 2)
                line("I %llu %llu", (unsigned long long)ids[0], (unsigned long long)ids[1]);
            else
                line("I %llu %llu %llu", (unsigned long long)ids[0], (unsigned long long)ids[1],
                     (unsigned long long)ids[2]);
            if (round % 2 == 1 && call == 1) {
                uint64_t released[1];
                size_t n_released = 0;
                rc = nfslock_session_release_ids(s, ids, 1, released, &n_released);
                if (rc != 0 || n_released != 1)
                    failed("nfslock_session_release_ids", rc);
            }
        }
        rc = nfslock_session_close(s);
        if (rc != 0)
            failed("nfslock_session_close", rc);
    }
}

static int hold(const char *dir) {
    char path[PATH_MAX];
    lock_path(path, sizeof path, dir, 0);
    line("R");
    nfslock *l;
    int rc = nfslock_blocking_create(path, "held until killed", 10000, &l);
    if (rc != 0) {
        failed("nfslock_blocking_create", rc);
        return 1;
    }
    line("H");
    for (;;)
        pause();
}

static int check_locks(const char *dir, int npaths) {
    int bad = 0;
    for (int i = 0; i < npaths; i++) {
        char path[PATH_MAX];
        lock_path(path, sizeof path, dir, i);
        nfslock *l;
        int rc = nfslock_blocking_create(path, "checker", 1000, &l);
        if (rc != 0) {
            line("FAIL %s: nfslock_blocking_create(1000 ms) = %s(%d): %s", path, errname(rc), rc,
                 nfslock_last_error());
            bad = 1;
            continue;
        }
        rc = nfslock_unlock(l);
        if (rc != 0) {
            line("FAIL %s: nfslock_unlock = %s(%d): %s", path, errname(rc), rc, nfslock_last_error());
            bad = 1;
        }
    }
    return bad;
}

static int check_session(const char *dir, const char *name) {
    nfslock_session *s;
    int rc = nfslock_session_open(dir, name, 0, &s);
    if (rc != 0) {
        line("FAIL nfslock_session_open = %s(%d): %s", errname(rc), rc, nfslock_last_error());
        return 1;
    }
    int bad = 0;
    size_t reaped = 0;
    rc = nfslock_session_reap_locks(s, &reaped);
    if (rc != 0) {
        line("FAIL nfslock_session_reap_locks = %s(%d): %s", errname(rc), rc, nfslock_last_error());
        bad = 1;
    }
    line("REAPED %zu", reaped);
    rc = nfslock_session_check(s);
    if (rc != 0) {
        line("FAIL nfslock_session_check = %s(%d): %s", errname(rc), rc, nfslock_last_error());
        bad = 1;
    }
    uint64_t id;
    rc = nfslock_session_make_new_ids(s, 1, &id);
    if (rc != 0) {
        line("FAIL nfslock_session_make_new_ids = %s(%d): %s", errname(rc), rc, nfslock_last_error());
        bad = 1;
    } else {
        line("NEXT %llu", (unsigned long long)id);
    }
    rc = nfslock_session_close(s);
    if (rc != 0) {
        line("FAIL nfslock_session_close = %s(%d): %s", errname(rc), rc, nfslock_last_error());
        bad = 1;
    }
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "holder") == 0) {
        int n = atoi(argv[3]);
        return n > 0 && n <= MAX_PATHS ? holder(argv[2], n) : 2;
    }
    if (argc == 4 && strcmp(argv[1], "alloc") == 0)
        return alloc(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "hold") == 0)
        return hold(argv[2]);
    if (argc == 4 && strcmp(argv[1], "check-locks") == 0) {
        int n = atoi(argv[3]);
        return n > 0 && n <= MAX_PATHS ? check_locks(argv[2], n) : 2;
    }
    if (argc == 4 && strcmp(argv[1], "check-session") == 0)
        return check_session(argv[2], argv[3]);
    fprintf(stderr, "usage: %s holder|check-locks DIR NPATHS | hold DIR | alloc|check-session DIR NAME\n", argv[0]);
    return 2;
}
