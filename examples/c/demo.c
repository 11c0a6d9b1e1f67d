/*
 * demo.c: a tour of libnfslock's C API.
 *
 *   nfslock-demo [PATH]     (PATH defaults to /tmp/nfslock-demo.<pid>)
 *
 * Takes a real lock on PATH (the lock file is PATH.nfs_lock; the library also writes
 * the holder's record to PATH itself), reads back who holds it, prints the lock file,
 * shows that a second process is refused with EAGAIN, unlocks, and shows the path is
 * free again. Any unexpected result ends the program with exit status 1 and the
 * library's own explanation (nfslock_last_error).
 *
 * Build against an installed library:
 *   cc -o nfslock-demo demo.c $(pkg-config --cflags --libs nfslock)
 */
#define _POSIX_C_SOURCE 200809L

#include <nfslock.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* The lock this process holds, released on the way out if a later step fails. */
static nfslock *held;

static const char *last_error(void) {
    const char *e = nfslock_last_error();
    return e && *e ? e : "(no details)";
}

/* Report a failed library call and exit; never returns. */
static void fail(const char *what, int rc) {
    fprintf(stderr, "demo: %s failed: %s (error %d): %s\n", what, nfslock_strerror(rc), rc,
            last_error());
    if (held) {
        nfslock_unlock(held);
        held = NULL;
    }
    exit(1);
}

/* Report a wrong result (the call itself succeeded) and exit; never returns. */
static void wrong(const char *what) {
    fprintf(stderr, "demo: %s\n", what);
    if (held) {
        nfslock_unlock(held);
        held = NULL;
    }
    exit(1);
}

/* Print the raw lock file, the record another host on the same NFS mount would read. */
static void print_lock_file(const char *lock_file) {
    FILE *f = fopen(lock_file, "rb");
    char buf[4096];
    size_t n;

    if (!f) {
        fprintf(stderr, "demo: cannot open %s: %s\n", lock_file, strerror(errno));
        wrong("the lock file is not there while the lock is held");
    }
    printf("lock file content: ");
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stdout);
    fclose(f);
    printf("\n"); /* the record has no trailing newline */
}

/*
 * A second process tries the same lock while we hold it: it must be told EAGAIN
 * (held by someone else) at once, not block and not steal it.
 */
static void second_attempt_from_child(const char *path) {
    pid_t child;
    int status;

    fflush(stdout); /* or the child would print our buffered output again */
    child = fork();
    if (child < 0) {
        perror("demo: fork");
        wrong("cannot fork the second process");
    }
    if (child == 0) {
        nfslock *other = NULL;
        int rc = nfslock_create(path, "second attempt", &other);

        printf("second attempt from child pid %ld: error %d (%s): %s\n", (long)getpid(), rc,
               nfslock_strerror(rc), rc ? last_error() : "(none)");
        if (rc == 0) {
            /* Must not happen; put things back so the parent's unlock is not confused. */
            nfslock_unlock(other);
        }
        /* A normal exit(), not _exit(): the library tidies up at exit (a failed attempt
         * leaves its claim file until then), and it never releases the parent's lock
         * from a forked child. stdout was flushed before the fork, so nothing of the
         * parent's is printed twice. */
        exit(rc == EAGAIN ? 0 : 1);
    }
    if (waitpid(child, &status, 0) != child) {
        perror("demo: waitpid");
        wrong("lost the child process");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        wrong("the second attempt was not refused with EAGAIN");
}

int main(int argc, char **argv) {
    char default_path[64];
    const char *path;
    const char *message = "demo: held by the libnfslock C demo";
    char lock_file[4096];
    char hostname[256];
    char got_message[1024];
    int32_t pid = 0;
    int rc;

    if (argc > 2) {
        fprintf(stderr, "usage: %s [PATH]\n", argv[0]);
        return 2;
    }
    if (argc == 2) {
        path = argv[1];
    } else {
        /* Per-process default, so concurrent runs do not refuse each other. */
        snprintf(default_path, sizeof default_path, "/tmp/nfslock-demo.%ld", (long)getpid());
        path = default_path;
    }
    if ((size_t)snprintf(lock_file, sizeof lock_file, "%s.nfs_lock", path) >= sizeof lock_file)
        wrong("path too long");

    /* Line-buffered even into a pipe, so stdout and stderr stay in order in logs. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("libnfslock %s\n", nfslock_version());

    /* 1. Take the lock. */
    rc = nfslock_create(path, message, &held);
    if (rc != 0)
        fail("nfslock_create", rc);

    /* 2. Read back who holds it, as any other process would (by path). */
    rc = nfslock_get_hostname_and_pid(path, hostname, sizeof hostname, &pid);
    if (rc != 0)
        fail("nfslock_get_hostname_and_pid", rc);
    rc = nfslock_get_message(path, got_message, sizeof got_message);
    if (rc != 0)
        fail("nfslock_get_message", rc);
    printf("locked %s: held by host %s pid %ld, message \"%s\" (lock file %s)\n", path, hostname,
           (long)pid, got_message, lock_file);
    if (pid != (int32_t)getpid())
        wrong("the lock file names another pid than ours");
    if (strcmp(got_message, message) != 0)
        wrong("the lock file holds another message than ours");
    if (hostname[0] == '\0')
        wrong("the lock file names no host");
    print_lock_file(lock_file);

    /* 3. Someone else cannot have it meanwhile. */
    second_attempt_from_child(path);

    /* 4. Release it; the handle is consumed. */
    rc = nfslock_unlock(held);
    held = NULL;
    if (rc != 0)
        fail("nfslock_unlock", rc);
    printf("unlocked %s\n", path);

    /* 5. It is free: no lock file, nobody to report, and it can be taken again. */
    if (access(lock_file, F_OK) == 0)
        wrong("the lock file is still there after unlocking");
    rc = nfslock_get_hostname_and_pid(path, hostname, sizeof hostname, &pid);
    if (rc == 0)
        wrong("nfslock_get_hostname_and_pid still reports a holder after unlocking");
    printf("no holder any more: nfslock_get_hostname_and_pid says %s\n", nfslock_strerror(rc));
    rc = nfslock_create(path, "demo: second lock", &held);
    if (rc != 0)
        fail("nfslock_create (again, after unlocking)", rc);
    rc = nfslock_unlock(held);
    held = NULL;
    if (rc != 0)
        fail("nfslock_unlock (again)", rc);
    printf("%s is free: locked and unlocked it again\n", path);

    /* Locking also writes the holder's record to PATH itself (as Core's Nfs_lock does),
     * and unlocking leaves it. Remove it when it is our own default under /tmp. */
    if (argc < 2)
        unlink(path);
    return 0;
}
