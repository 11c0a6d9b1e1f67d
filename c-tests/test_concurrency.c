/*
 * Threads, fork and processes: in-process exclusion between threads, the fork rules (a
 * child never releases nor claims its parent's locks), the at-exit release, and the
 * cross-process mutual exclusion stress test.
 */
#include "harness.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

static int count_calls(void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

/* ---- two threads, one path -------------------------------------------------------- */

struct waiter {
    const char *path;
    int create_rc, timed_rc, blocking_rc, unlock_rc;
    long long waited_ms;
    atomic_int done;
    char message[64];
};

static void *contend(void *arg)
{
    struct waiter *w = arg;
    nfslock *lock = NULL;
    /* Another thread of the same process holds it: EAGAIN, not EDEADLK. */
    w->create_rc = nfslock_create(w->path, "B", &lock);
    w->timed_rc = nfslock_blocking_create(w->path, "B", 100, &lock);
    long long t0 = now_ms();
    w->blocking_rc = nfslock_blocking_create(w->path, "B", -1, &lock);
    w->waited_ms = now_ms() - t0;
    atomic_store(&w->done, 1);
    if (w->blocking_rc == 0) {
        nfslock_get_message(w->path, w->message, sizeof w->message);
        w->unlock_rc = nfslock_unlock(lock);
    }
    return NULL;
}

static void t_threads_same_path(void)
{
    const char *p = tp("p");
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_create(p, "A", &lock), 0);
    struct waiter w = {.path = p, .create_rc = -1, .timed_rc = -1, .blocking_rc = -1,
                       .unlock_rc = -1};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, contend, &w) == 0);
    sleep_ms(400);
    CHECKF(!atomic_load(&w.done), "thread B got the lock while A held it (rc %s)",
           errname(w.blocking_rc));
    char msg[16];
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
    CHECK_STR(msg, "A");
    CHECK_RC(nfslock_unlock(lock), 0);
    pthread_join(th, NULL);
    CHECK_RC(w.create_rc, EAGAIN);
    CHECK_RC(w.timed_rc, ETIMEDOUT);
    CHECK_RC(w.blocking_rc, 0);
    CHECKF(w.waited_ms >= 200, "B waited only %lld ms", w.waited_ms);
    CHECK_STR(w.message, "B");
    CHECK_RC(w.unlock_rc, 0);
    CHECK(!exists(lockfile_of(p)));
}

/* ---- many threads, many paths ----------------------------------------------------- */

#define CYCLE_THREADS 8
#define CYCLES 200

struct cycler {
    char path[PATH_MAX];
    char message[32];
    int errors;
};

static void *cycle(void *arg)
{
    struct cycler *c = arg;
    char lockpath[PATH_MAX + 16];
    snprintf(lockpath, sizeof lockpath, "%s.nfs_lock", c->path);
    for (int i = 0; i < CYCLES && c->errors < 5; i++) {
        nfslock *lock = NULL;
        int rc = nfslock_create(c->path, c->message, &lock);
        if (rc != 0) {
            t_fail(__FILE__, __LINE__, "%s cycle %d: create: %s", c->message, i, errname(rc));
            c->errors++;
            continue;
        }
        char msg[32] = "";
        rc = nfslock_get_message(c->path, msg, sizeof msg);
        if (rc != 0 || strcmp(msg, c->message) != 0 || !exists(lockpath)) {
            t_fail(__FILE__, __LINE__, "%s cycle %d: get_message %s \"%s\"", c->message, i,
                   errname(rc), msg);
            c->errors++;
        }
        rc = nfslock_unlock(lock);
        if (rc != 0 || exists(lockpath)) {
            t_fail(__FILE__, __LINE__, "%s cycle %d: unlock: %s", c->message, i, errname(rc));
            c->errors++;
        }
    }
    return NULL;
}

static void t_threads_many_paths(void)
{
    struct cycler c[CYCLE_THREADS];
    pthread_t th[CYCLE_THREADS];
    for (int i = 0; i < CYCLE_THREADS; i++) {
        char name[32];
        snprintf(name, sizeof name, "path%d", i);
        snprintf(c[i].path, sizeof c[i].path, "%s", tp(name));
        snprintf(c[i].message, sizeof c[i].message, "thread %d", i);
        c[i].errors = 0;
    }
    for (int i = 0; i < CYCLE_THREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, cycle, &c[i]) == 0);
    for (int i = 0; i < CYCLE_THREADS; i++)
        pthread_join(th[i], NULL);
}

/* ---- threads sharing one path through critical_section ---------------------------- */

#define CS_THREADS 4
#define CS_ROUNDS 50

struct shared_section {
    const char *path;
    atomic_int inside; /* threads inside f right now */
    int counter;       /* plain int: only f touches it, under the lock */
    atomic_int overlaps;
    atomic_int errors;
};

static int guarded_increment(void *ctx)
{
    struct shared_section *s = ctx;
    if (atomic_fetch_add(&s->inside, 1) != 0)
        atomic_fetch_add(&s->overlaps, 1);
    int v = s->counter;
    sched_yield();
    s->counter = v + 1;
    atomic_fetch_sub(&s->inside, 1);
    return v;
}

static void *section_loop(void *arg)
{
    struct shared_section *s = arg;
    for (int i = 0; i < CS_ROUNDS; i++) {
        int result = -1;
        int rc = nfslock_critical_section(s->path, "cs", -1, guarded_increment, s, &result);
        if (rc != 0) {
            t_fail(__FILE__, __LINE__, "critical_section: %s (%s)", errname(rc),
                   nfslock_last_error());
            atomic_fetch_add(&s->errors, 1);
        }
    }
    return NULL;
}

static void t_threads_critical_section(void)
{
    struct shared_section s = {.path = tp("p")};
    pthread_t th[CS_THREADS];
    for (int i = 0; i < CS_THREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, section_loop, &s) == 0);
    for (int i = 0; i < CS_THREADS; i++)
        pthread_join(th[i], NULL);
    CHECKF(atomic_load(&s.overlaps) == 0, "%d overlapping critical sections",
           atomic_load(&s.overlaps));
    CHECKF(s.counter == CS_THREADS * CS_ROUNDS, "counter %d, expected %d", s.counter,
           CS_THREADS * CS_ROUNDS);
    CHECK(!exists(lockfile_of(s.path)));
}

/* ---- fork ------------------------------------------------------------------------- */

static void child_leaves_parents_lock(void *arg)
{
    const char *p = arg;
    /* The parent is alive and holds it: the child cannot claim it... */
    nfslock *lock = NULL;
    CHECK_RC(nfslock_create(p, "child", &lock), EAGAIN);
    CHECK_RC(nfslock_blocking_create(p, "child", 100, &lock), ETIMEDOUT);
    char host[256];
    int32_t pid = 0;
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, sizeof host, &pid), 0);
    CHECK(pid == getppid());
    /* ... and exits normally without unlocking: at-exit must not release it either. */
}

static void t_fork_child_exit_keeps_parent_lock(void)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", tp("p"));
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_create(p, "parent", &lock), 0);
    size_t len = 0;
    char *before = read_file(lockfile_of(p), &len);
    REQUIRE(before != NULL);

    run_in_child(child_leaves_parents_lock, p);
    CHECK(file_is(lockfile_of(p), before, len));

    /* A child ended by _exit (no at-exit at all) changes nothing either, of course. */
    pid_t pid = fork_flushed();
    REQUIRE(pid >= 0);
    if (pid == 0)
        _exit(0);
    wait_status(pid);
    CHECK(file_is(lockfile_of(p), before, len));

    /* The parent still owns it. */
    nfslock *again = NULL;
    CHECK_RC(nfslock_create(p, "parent", &again), EDEADLK);
    CHECK_RC(nfslock_unlock(lock), 0);
    CHECK(!exists(lockfile_of(p)));
    free(before);
}

static void child_locks_and_exits(void *arg)
{
    const char *sub = arg;
    char x[PATH_MAX], y[PATH_MAX];
    snprintf(x, sizeof x, "%s/x", sub);
    snprintf(y, sizeof y, "%s/y", sub);
    /* Static: the handles stay reachable, so valgrind does not count the locks we
     * deliberately never unlock as leaks of this program. */
    static nfslock *a, *b;
    REQUIRE_RC(nfslock_create(x, "child x", &a), 0);
    REQUIRE_RC(nfslock_blocking_create(y, "child y", 1000, &b), 0);
    REQUIRE(exists(lockfile_of(x)) && exists(lockfile_of(y)));
    /* Returning leads to exit(0) with both still held. */
}

static void t_fork_child_at_exit_release(void)
{
    /* The parent holds a lock of its own meanwhile: the child's exit must not touch it. */
    char parent_path[PATH_MAX];
    snprintf(parent_path, sizeof parent_path, "%s", tp("parent"));
    nfslock *mine = NULL;
    REQUIRE_RC(nfslock_create(parent_path, "parent", &mine), 0);

    /* The child locks in a directory the parent never used, so every claim file found
     * there afterwards would be the child's. */
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s", tp("sub"));
    REQUIRE(mkdir(sub, 0755) == 0);
    run_in_child(child_locks_and_exits, sub);

    char x[PATH_MAX + 8], y[PATH_MAX + 8];
    snprintf(x, sizeof x, "%s/x", sub);
    snprintf(y, sizeof y, "%s/y", sub);
    CHECKF(!exists(lockfile_of(x)), "%s survived the child's exit", lockfile_of(x));
    CHECKF(!exists(lockfile_of(y)), "%s survived the child's exit", lockfile_of(y));
    int claims = count_claims(sub);
    CHECKF(claims == 0, "%d .nfslock-* claim files of the exited child remain", claims);

    char msg[16];
    CHECK_RC(nfslock_get_message(parent_path, msg, sizeof msg), 0);
    CHECK_STR(msg, "parent");
    CHECK_RC(nfslock_unlock(mine), 0);

    /* The child's paths are free again for anyone. */
    nfslock *lock = NULL;
    CHECK_RC(nfslock_create(x, "m", &lock), 0);
    CHECK_RC(nfslock_unlock(lock), 0);
}

static void t_critical_section_held_by_child(void)
{
    const char *p = tp("p");
    struct holder h;
    holder_start(&h, p, "child holds");
    REQUIRE_RC(h.rc, 0);
    int calls = 0, result = -1;
    long long t0 = now_ms();
    CHECK_RC(nfslock_critical_section(p, "m", 100, count_calls, &calls, &result), ETIMEDOUT);
    long long waited = now_ms() - t0;
    CHECKF(waited >= 90, "gave up after %lld ms", waited);
    CHECK(calls == 0);
    CHECK(result == -1);
    char host[256];
    int32_t pid = 0;
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, sizeof host, &pid), 0);
    CHECK(pid == h.pid);
    CHECK_RC(holder_release(&h), 0);

    /* Once released, the same call runs f. */
    CHECK_RC(nfslock_critical_section(p, "m", 100, count_calls, &calls, &result), 0);
    CHECK(calls == 1 && result == 0);
}

/* ---- cross-process mutual exclusion ----------------------------------------------- */

/* The files one stress run shares between all its processes and threads. */
struct stress {
    char path[PATH_MAX];    /* the locked path */
    char counter[PATH_MAX]; /* incremented under the lock: the final value counts rounds */
    char marker[PATH_MAX];  /* exists exactly while someone is inside */
    int rounds;
    int errors;             /* per worker (thread or process) */
};

/* One worker: `rounds` times lock, check nobody else is inside, increment, unlock. */
static void *stress_rounds(void *arg)
{
    struct stress *s = arg;
    for (int i = 0; i < s->rounds && s->errors < 10; i++) {
        nfslock *lock = NULL;
        int rc = nfslock_blocking_create(s->path, "stress", -1, &lock);
        if (rc != 0) {
            t_fail(__FILE__, __LINE__, "pid %d round %d: blocking_create: %s (%s)",
                   (int)getpid(), i, errname(rc), nfslock_last_error());
            s->errors++;
            continue;
        }
        /* If anyone else were inside, their marker would still be there. */
        int fd = open(s->marker, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) {
            t_fail(__FILE__, __LINE__, "pid %d round %d: marker: %s: two holders at once",
                   (int)getpid(), i, strerror(errno));
            s->errors++;
        }
        char *text = read_file(s->counter, NULL);
        long value = text ? atol(text) : -1;
        free(text);
        char buf[32];
        write_file(s->counter, buf, (size_t)snprintf(buf, sizeof buf, "%ld", value + 1));
        if (fd >= 0) {
            close(fd);
            unlink(s->marker);
        }
        rc = nfslock_unlock(lock);
        if (rc != 0) {
            t_fail(__FILE__, __LINE__, "pid %d round %d: unlock: %s (%s)", (int)getpid(), i,
                   errname(rc), nfslock_last_error());
            s->errors++;
        }
    }
    return NULL;
}

/* Runs `procs` processes of `threads` threads, each doing `rounds` rounds, and checks that
 * every round ran alone: no marker collision, an exact final count, nothing left over. */
static void run_stress(int procs, int threads, int rounds)
{
    struct stress s = {.rounds = rounds};
    snprintf(s.path, sizeof s.path, "%s", tp("p"));
    snprintf(s.counter, sizeof s.counter, "%s", tp("counter"));
    snprintf(s.marker, sizeof s.marker, "%s", tp("marker"));
    write_str(s.counter, "0");

    pid_t workers[16];
    REQUIRE(procs <= 16 && threads <= 16);
    for (int i = 0; i < procs; i++) {
        workers[i] = fork_flushed();
        REQUIRE(workers[i] >= 0);
        if (workers[i] != 0)
            continue;
        struct stress mine[16];
        pthread_t th[16];
        int errors = 0;
        for (int k = 0; k < threads; k++) {
            mine[k] = s;
            REQUIRE(pthread_create(&th[k], NULL, stress_rounds, &mine[k]) == 0);
        }
        for (int k = 0; k < threads; k++) {
            pthread_join(th[k], NULL);
            errors += mine[k].errors;
        }
        exit(errors ? 1 : 0); /* exit(): the at-exit cleanup runs as in real programs */
    }
    for (int i = 0; i < procs; i++) {
        int status = wait_status(workers[i]);
        CHECKF(status == 0, "worker %d ended with status %d", i, status);
    }
    char *text = read_file(s.counter, NULL);
    REQUIRE(text != NULL);
    CHECKF(atol(text) == (long)procs * threads * rounds, "counter is %s, expected %d", text,
           procs * threads * rounds);
    free(text);
    CHECK(!exists(s.marker));
    CHECK(!exists(lockfile_of(s.path)));
    /* This process never used the library here: all claim files were the workers'. */
    int claims = count_claims(T_DIR);
    CHECKF(claims == 0, "%d claim files remain after the workers exited", claims);
}

/* 8 single-threaded processes x 500 rounds. */
static void t_mutual_exclusion_stress(void)
{
    run_stress(8, 1, 500);
}

/* 4 processes x 4 threads x 100 rounds: threads of one process hand the lock to each
 * other while other processes compete for it on disk. */
static void t_mutual_exclusion_threads_and_processes(void)
{
    run_stress(4, 4, 100);
}

const struct test concurrency_tests[] = {
    {"threads_same_path", t_threads_same_path, 0, 0},
    {"threads_many_paths", t_threads_many_paths, 0, 0},
    {"threads_critical_section", t_threads_critical_section, 0, 0},
    {"fork_child_exit_keeps_parent_lock", t_fork_child_exit_keeps_parent_lock, 0, 0},
    {"fork_child_at_exit_release", t_fork_child_at_exit_release, 0, 0},
    {"critical_section_held_by_child", t_critical_section_held_by_child, 0, 0},
    {"mutual_exclusion_stress", t_mutual_exclusion_stress, 120, 1},
    {"mutual_exclusion_threads_and_processes", t_mutual_exclusion_threads_and_processes, 120, 1},
    {NULL, NULL, 0, 0},
};
