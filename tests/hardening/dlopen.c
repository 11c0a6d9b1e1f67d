/*
 * dlopen LIB DIR main|thread|session-open: loads libnfslock with dlopen() (the program is
 * not linked against it), uses it (locks, a blocking wait, a session and its IDs) from
 * the main thread or from a thread that ends before the library is closed, dlclose()s
 * it, twice over, the second time with a lock still held (session-open: once, only
 * opening a session (timeout 400 ms) from a thread and leaving it open, its heartbeat
 * thread running, and waits 500 ms after dlclose); then forks: the child exits through
 * exit() (at-exit handlers run) and the parent reports the child's status and exits the
 * same way. Every
 * handler the library left behind (pthread_atfork, atexit, thread-local destructors) must
 * still point at mapped code, or be gone: whether the library stays mapped after dlclose
 * (pinned) is printed, not required.
 *
 * Exit status 0 only when every check passed and the child exited 0.
 */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The library's C API, as function pointers (the header's prototypes would make the
 * linker pull the library in). */
struct nfslock;
struct nfslock_session;
typedef int (*create_fn)(const char *, const char *, struct nfslock **);
typedef int (*blocking_create_fn)(const char *, const char *, int64_t, struct nfslock **);
typedef int (*unlock_fn)(struct nfslock *);
typedef int (*session_open_fn)(const char *, const char *, uint32_t, struct nfslock_session **);
typedef int (*make_new_ids_fn)(struct nfslock_session *, size_t, uint64_t *);
typedef int (*session_close_fn)(struct nfslock_session *);
typedef const char *(*last_error_fn)(void);

static int failures;

#define CHECKF(cond, ...)                                                                   \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                     \
            printf(__VA_ARGS__);                                                            \
            printf("\n");                                                                   \
            fflush(stdout);                                                                 \
            failures++;                                                                     \
        }                                                                                   \
    } while (0)

/* Whether a file whose name contains "libnfslock" is mapped into this process. */
static int mapped(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL)
        return -1;
    char line[PATH_MAX + 256];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "libnfslock"))
            found = 1;
    fclose(f);
    return found;
}

static void *sym(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    CHECKF(p != NULL, "dlsym(%s): %s", name, dlerror());
    return p;
}

/* One load and use; returns the handle for dlclose. With `keep_one`, a lock is still
 * held at the end. */
static void *use(const char *libpath, const char *dir, int round, int keep_one, int keep_session) {
    void *lib = dlopen(libpath, RTLD_NOW | RTLD_LOCAL);
    CHECKF(lib != NULL, "dlopen(%s): %s", libpath, dlerror());
    if (lib == NULL)
        return NULL;
    create_fn create = (create_fn)sym(lib, "nfslock_create");
    blocking_create_fn blocking = (blocking_create_fn)sym(lib, "nfslock_blocking_create");
    unlock_fn unlock = (unlock_fn)sym(lib, "nfslock_unlock");
    session_open_fn open_s = (session_open_fn)sym(lib, "nfslock_session_open");
    make_new_ids_fn make_ids = (make_new_ids_fn)sym(lib, "nfslock_session_make_new_ids");
    session_close_fn close_s = (session_close_fn)sym(lib, "nfslock_session_close");
    last_error_fn last_error = (last_error_fn)sym(lib, "nfslock_last_error");
    if (!create || !blocking || !unlock || !open_s || !make_ids || !close_s || !last_error)
        return lib;
    char path[PATH_MAX];
    if (keep_session) {
        /* Only a session, left open: its heartbeat thread is all that runs library code
         * at dlclose (what else the thread touches can make the loader keep the library
         * mapped, by chance). */
        struct nfslock_session *s;
        snprintf(path, sizeof path, "%s/repo", dir);
        int rc = open_s(path, "dl", 400, &s);
        CHECKF(rc == 0, "nfslock_session_open(%s) = %d: %s", path, rc, last_error());
        return lib;
    }
    for (int i = 0; i < 3; i++) {
        struct nfslock *l;
        snprintf(path, sizeof path, "%s/lock%d-%d", dir, round, i);
        int rc = create(path, "dlopen", &l);
        CHECKF(rc == 0, "round %d: nfslock_create(%s) = %d: %s", round, path, rc, last_error());
        if (rc == 0) {
            rc = unlock(l);
            CHECKF(rc == 0, "round %d: nfslock_unlock = %d: %s", round, rc, last_error());
        }
    }
    struct nfslock *b;
    snprintf(path, sizeof path, "%s/blocking%d", dir, round);
    int rc = blocking(path, "dlopen", 1000, &b);
    CHECKF(rc == 0, "round %d: nfslock_blocking_create(%s) = %d: %s", round, path, rc, last_error());
    if (rc == 0 && !keep_one) {
        rc = unlock(b);
        CHECKF(rc == 0, "round %d: nfslock_unlock(blocking) = %d: %s", round, rc, last_error());
    }
    struct nfslock_session *s;
    snprintf(path, sizeof path, "%s/repo", dir);
    rc = open_s(path, "dl", 0, &s);
    CHECKF(rc == 0, "round %d: nfslock_session_open(%s) = %d: %s", round, path, rc, last_error());
    if (rc == 0) {
        uint64_t ids[4];
        rc = make_ids(s, 4, ids);
        CHECKF(rc == 0, "round %d: nfslock_session_make_new_ids = %d: %s", round, rc, last_error());
        rc = close_s(s);
        CHECKF(rc == 0, "round %d: nfslock_session_close = %d: %s", round, rc, last_error());
    }
    return lib;
}

static void unload(void *lib, int round, int keep_one) {
    if (lib == NULL)
        return;
    CHECKF(dlclose(lib) == 0, "round %d: dlclose: %s", round, dlerror());
    /* The README's contract: the library pins itself on first use (RTLD_NODELETE), so its
     * at-fork and at-exit hooks and its threads never run in unmapped code. */
    CHECKF(mapped(), "round %d: the library was unmapped by dlclose (it must pin itself)", round);
    printf("round %d: after dlclose the library is %s%s\n", round, mapped() ? "still mapped (pinned)" : "unmapped",
           keep_one ? " (a lock was held at dlclose)" : "");
    fflush(stdout);
}

struct cycle_args {
    const char *lib, *dir;
    int round, keep_one, keep_session;
    void *handle;
};

static void *use_in_thread(void *p) {
    struct cycle_args *a = p;
    a->handle = use(a->lib, a->dir, a->round, a->keep_one, a->keep_session);
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc == 4 ? argv[3] : "";
    int session_open = strcmp(mode, "session-open") == 0;
    if (strcmp(mode, "main") != 0 && strcmp(mode, "thread") != 0 && !session_open) {
        fprintf(stderr, "usage: %s LIBNFSLOCK DIR main|thread|session-open\n", argv[0]);
        return 2;
    }
    if (mapped()) {
        printf("FAIL: libnfslock is mapped before dlopen (the program was linked against it): the test would prove nothing\n");
        return 1;
    }
    for (int round = 0; round < (session_open ? 1 : 2); round++) {
        /* The second load keeps a lock held at dlclose; session-open keeps a session
         * open. */
        struct cycle_args args = {argv[1], argv[2], round, round == 1, session_open, NULL};
        if (strcmp(mode, "main") == 0) {
            use_in_thread(&args);
        } else {
            /* Used only from a thread that has ended before the library is closed: no
             * thread-local destructor of the library stays registered for a live thread,
             * so the loader may really unmap it at dlclose. */
            pthread_t t;
            CHECKF(pthread_create(&t, NULL, use_in_thread, &args) == 0, "pthread_create failed");
            pthread_join(t, NULL);
        }
        unload(args.handle, round, args.keep_one);
    }
    /* Time for a left-open session's heartbeat to come due. */
    if (session_open)
        usleep(500 * 1000);
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        printf("FAIL: fork: %s\n", strerror(errno));
        return 1;
    }
    if (child == 0)
        exit(0); /* at-exit handlers run here too */
    int status;
    pid_t got;
    do
        got = waitpid(child, &status, 0);
    while (got < 0 && errno == EINTR);
    CHECKF(got == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "the forked child did not exit 0: %s %d", got != child ? "waitpid failed" :
           WIFSIGNALED(status) ? "killed by signal" : "exit status",
           got != child ? errno : WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    printf("%s\n", failures ? "failed" : "ok");
    fflush(stdout);
    return failures ? 1 : 0; /* at-exit handlers run here */
}
