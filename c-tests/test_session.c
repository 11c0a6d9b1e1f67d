/*
 * The session family through the C API: every function, its NULL and bad arguments,
 * and each error code provoked for real (ENOENT and EBADMSG counters, ERANGE, ENOTDIR,
 * EACCES, ESTALE after a pause, EPERM in a forked child, ETIMEDOUT on a busy guard and on
 * a busy counter token),
 * and one handle shared by threads.
 */
#include "harness.h"

#include <dirent.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SHORT_MS 1000

/* A heartbeat timeout of `ms` in real time, stretched like every time bound of the
 * harness (under valgrind a session's own heartbeat runs 20 times slower). */
static uint32_t scaled(uint32_t ms)
{
    return ms * (uint32_t)t_time_scale;
}

static nfslock_session *open_session(const char *name, uint32_t timeout_ms)
{
    nfslock_session *s = NULL;
    REQUIRE_RC(nfslock_session_open(tp("repo"), name, timeout_ms, &s), 0);
    REQUIRE(s != NULL);
    return s;
}

static void t_session_ids(void)
{
    nfslock_session *s = open_session(NULL, 0);
    uint64_t ids[3] = {0};
    CHECK_RC(nfslock_session_make_new_ids(s, 3, ids), 0);
    CHECK(ids[1] == ids[0] + 1 && ids[2] == ids[1] + 1);
    uint64_t more = 0;
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &more), 0);
    CHECK(more == ids[2] + 1);
    CHECK(exists(tp("repo/default.counter")));

    /* lock_ids: held ones count as locked, duplicates once, order kept. */
    uint64_t want[] = {100, ids[0], 100, 50};
    uint64_t locked[4] = {0};
    size_t n = 99;
    CHECK_RC(nfslock_session_lock_ids(s, want, 4, locked, &n), 0);
    CHECK(n == 3 && locked[0] == 100 && locked[1] == ids[0] && locked[2] == 50);
    /* Locking 100 moved the counter past it. */
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &more), 0);
    CHECK(more == 101);

    char info[256];
    CHECK_RC(nfslock_session_get_lock_session(s, 50, info, sizeof info), 0);
    char expect[128];
    snprintf(expect, sizeof expect, "%s (pid %d) since ", this_host(), (int)getpid());
    CHECKF(strncmp(info, expect, strlen(expect)) == 0, "info \"%s\"", info);

    uint64_t rel[] = {50, 51, 100};
    uint64_t released[3] = {0};
    CHECK_RC(nfslock_session_release_ids(s, rel, 3, released, &n), 0);
    CHECK(n == 2 && released[0] == 50 && released[1] == 100);
    CHECK_RC(nfslock_session_get_lock_session(s, 50, info, sizeof info), ENOENT);
    CHECK(n == 2);

    size_t reaped = 99;
    CHECK_RC(nfslock_session_reap_locks(s, &reaped), 0);
    CHECK(reaped == 0);
    CHECK_RC(nfslock_session_reap_locks(s, NULL), 0);
    CHECK_RC(nfslock_session_check(s), 0);
    CHECK_RC(nfslock_session_lock_ids(s, NULL, 0, NULL, &n), 0);
    CHECK(n == 0);
    CHECK_RC(nfslock_session_close(s), 0);
    /* Closing released everything: only the claim-free ID directory is left. */
    CHECK(!exists(tp("repo/default.ids/50")));
    CHECK(!exists(tp("repo/default.ids/101")));
}

static void t_session_einval(void)
{
    nfslock_session *s = NULL, *untouched = (nfslock_session *)&s;
    CHECK_RC(nfslock_session_open(NULL, NULL, 0, &s), EINVAL);
    CHECK_RC(nfslock_session_open("", NULL, 0, &s), EINVAL);
    CHECK_RC(nfslock_session_open(tp("repo"), NULL, 0, NULL), EINVAL);
    static const char *const bad_names[] = {"", ".", "..", "a/b"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        nfslock_session *out = untouched;
        CHECK_RC(nfslock_session_open(tp("repo"), bad_names[i], 0, &out), EINVAL);
        CHECK(out == untouched);
    }
    CHECK(s == NULL);
    s = open_session("jobs", 0);
    uint64_t id = 77, out[2] = {5, 5};
    size_t n = 42;
    CHECK_RC(nfslock_session_make_new_ids(NULL, 1, out), EINVAL);
    CHECK_RC(nfslock_session_make_new_ids(s, 0, out), EINVAL);
    CHECK_RC(nfslock_session_make_new_ids(s, 1, NULL), EINVAL);
    CHECK_RC(nfslock_session_make_new_ids(s, SIZE_MAX, out), EINVAL);
    CHECK(out[0] == 5);
    CHECK_RC(nfslock_session_lock_ids(NULL, &id, 1, out, &n), EINVAL);
    CHECK_RC(nfslock_session_lock_ids(s, NULL, 1, out, &n), EINVAL);
    CHECK_RC(nfslock_session_lock_ids(s, &id, 1, NULL, &n), EINVAL);
    CHECK_RC(nfslock_session_lock_ids(s, &id, 1, out, NULL), EINVAL);
    uint64_t max = UINT64_MAX;
    CHECK_RC(nfslock_session_lock_ids(s, &max, 1, out, &n), EINVAL);
    CHECK_RC(nfslock_session_release_ids(NULL, &id, 1, out, &n), EINVAL);
    CHECK_RC(nfslock_session_release_ids(s, NULL, 1, out, &n), EINVAL);
    CHECK_RC(nfslock_session_release_ids(s, &id, 1, NULL, &n), EINVAL);
    CHECK_RC(nfslock_session_release_ids(s, &id, 1, out, NULL), EINVAL);
    CHECK(n == 42 && out[0] == 5);
    char info[8];
    CHECK_RC(nfslock_session_get_lock_session(NULL, 1, info, sizeof info), EINVAL);
    CHECK_RC(nfslock_session_get_lock_session(s, 1, NULL, sizeof info), EINVAL);
    CHECK_RC(nfslock_session_reap_locks(NULL, &n), EINVAL);
    CHECK_RC(nfslock_session_check(NULL), EINVAL);
    CHECK_RC(nfslock_session_repair_counter(NULL, 1), EINVAL);
    CHECK_RC(nfslock_session_close(NULL), EINVAL);
    CHECK(strstr(nfslock_last_error(), "nfslock_session_close") != NULL);
    CHECK_RC(nfslock_session_close(s), 0);
}

static void t_session_counter_errors(void)
{
    nfslock_session *s = open_session("jobs", 0);
    uint64_t ids[4];
    CHECK_RC(nfslock_session_make_new_ids(s, 4, ids), 0);
    char info[16];
    /* ERANGE: the description does not fit (nothing written). */
    memset(info, 'x', sizeof info);
    CHECK_RC(nfslock_session_get_lock_session(s, ids[0], info, sizeof info), ERANGE);
    CHECK(info[0] == 'x');
    CHECK_RC(nfslock_session_get_lock_session(s, ids[3] + 1000, info, sizeof info), ENOENT);

    /* ENOENT: a lost counter is not recreated from zero. */
    REQUIRE(unlink(tp("repo/jobs.counter")) == 0);
    uint64_t id = 0;
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), ENOENT);
    CHECK(strstr(nfslock_last_error(), "jobs.counter") != NULL);
    CHECK_RC(nfslock_session_check(s), EBADMSG);
    CHECK(strstr(nfslock_last_error(), "missing") != NULL);
    CHECK_RC(nfslock_session_repair_counter(s, 0), 0);
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), 0);
    CHECK(id > ids[3]);

    /* EBADMSG: a corrupt counter is detected, never read as a value. */
    write_str(tp("repo/jobs.counter"), "nfslock-counter 1\nA 1 2 3\n");
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), EBADMSG);
    CHECK_RC(nfslock_session_check(s), EBADMSG);
    CHECK(strstr(nfslock_last_error(), "corrupt") != NULL);
    CHECK_RC(nfslock_session_repair_counter(s, 500), 0);
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), 0);
    CHECK(id == 500);
    CHECK_RC(nfslock_session_repair_counter(s, 3), 0);
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), 0);
    CHECK(id == 501);
    CHECK_RC(nfslock_session_check(s), 0);
    CHECK_RC(nfslock_session_close(s), 0);
}

static void t_session_enotdir(void)
{
    write_str(tp("file"), "");
    nfslock_session *s = NULL;
    CHECK_RC(nfslock_session_open(tp("file/repo"), NULL, 0, &s), ENOTDIR);
    CHECK(s == NULL);
}

static void eacces_child(void *arg)
{
    (void)arg;
    REQUIRE(setgroups(0, NULL) == 0);
    REQUIRE(setgid(65534) == 0);
    REQUIRE(setuid(65534) == 0);
    nfslock_session *s = NULL;
    CHECK_RC(nfslock_session_open(tp("repo"), "jobs", 0, &s), EACCES);
    CHECK_RC(nfslock_session_open(tp("newrepo"), "jobs", 0, &s), EACCES);
    CHECK(s == NULL);
}

static void t_session_eacces(void)
{
    REQUIRE(geteuid() == 0);
    REQUIRE(chmod(T_DIR, 0755) == 0);
    nfslock_session *s = open_session("jobs", 0);
    CHECK_RC(nfslock_session_close(s), 0);
    run_in_child(eacces_child, NULL);
}

/* A child holding ID 7 with a short timeout, told to go on through a pipe. */
static void paused_child(int go, int done)
{
    nfslock_session *s = NULL;
    if (nfslock_session_open(tp("repo"), "jobs", scaled(SHORT_MS), &s) != 0)
        _exit(10);
    uint64_t id = 7, out;
    size_t n = 0;
    if (nfslock_session_lock_ids(s, &id, 1, &out, &n) != 0 || n != 1)
        _exit(11);
    char c = 'h';
    if (write(done, &c, 1) != 1 || read(go, &c, 1) != 1)
        _exit(12);
    int rc = nfslock_session_make_new_ids(s, 1, &out);
    int rc_close = nfslock_session_close(s);
    _exit(rc == ESTALE && rc_close == ESTALE ? 0 : 13);
}

static void t_session_estale_after_pause(void)
{
    int go[2], done[2];
    REQUIRE(pipe(go) == 0 && pipe(done) == 0);
    pid_t pid = fork_flushed();
    REQUIRE(pid >= 0);
    if (pid == 0)
        paused_child(go[0], done[1]);
    char c;
    REQUIRE(read(done[0], &c, 1) == 1);
    REQUIRE(kill(pid, SIGSTOP) == 0);
    nfslock_session *s = open_session("jobs", scaled(SHORT_MS));
    uint64_t id = 7, out = 0;
    size_t n = 0;
    long long start = now_ms();
    while (n == 0 && now_ms() - start < 10000L * t_time_scale) {
        REQUIRE_RC(nfslock_session_lock_ids(s, &id, 1, &out, &n), 0);
        if (n == 0)
            sleep_ms(20);
    }
    CHECKF(n == 1 && out == 7, "the paused session's ID %d was never reclaimed", 7);
    CHECK(now_ms() - start >= (long long)scaled(SHORT_MS));
    REQUIRE(kill(pid, SIGCONT) == 0);
    REQUIRE(write(go[1], "g", 1) == 1);
    int status = wait_status(pid);
    CHECKF(status == 0, "the resumed session did not get ESTALE (child status %d)", status);
    CHECK_RC(nfslock_session_close(s), 0);
}

static void t_session_eperm_in_fork(void)
{
    nfslock_session *s = open_session("jobs", 0);
    uint64_t id = 0;
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), 0);
    pid_t pid = fork_flushed();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        uint64_t other;
        size_t n;
        int ok = nfslock_session_make_new_ids(s, 1, &other) == EPERM &&
                 nfslock_session_release_ids(s, &id, 1, &other, &n) == EPERM &&
                 nfslock_session_close(s) == EPERM;
        _exit(ok ? 0 : 1);
    }
    CHECK(wait_status(pid) == 0);
    char info[256];
    CHECK_RC(nfslock_session_get_lock_session(s, id, info, sizeof info), 0);
    CHECK_RC(nfslock_session_close(s), 0);
}

static void t_session_processes_unique(void)
{
    enum { KIDS = 3, EACH = 100 };
    int fds[KIDS][2];
    pid_t pids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        REQUIRE(pipe(fds[k]) == 0);
        pids[k] = fork_flushed();
        REQUIRE(pids[k] >= 0);
        if (pids[k] == 0) {
            nfslock_session *s = NULL;
            if (nfslock_session_open(tp("repo"), "jobs", 0, &s) != 0)
                _exit(1);
            for (int i = 0; i < EACH; i++) {
                uint64_t id;
                if (nfslock_session_make_new_ids(s, 1, &id) != 0 || write(fds[k][1], &id, sizeof id) != sizeof id)
                    _exit(2);
            }
            _exit(nfslock_session_close(s) == 0 ? 0 : 3);
        }
        close(fds[k][1]);
    }
    static uint64_t all[KIDS * EACH];
    size_t count = 0;
    for (int k = 0; k < KIDS; k++) {
        uint64_t id, last = 0;
        int first = 1;
        while (read(fds[k][0], &id, sizeof id) == sizeof id && count < KIDS * EACH) {
            CHECK(first || id > last);
            first = 0;
            last = id;
            all[count++] = id;
        }
        close(fds[k][0]);
        CHECK(wait_status(pids[k]) == 0);
    }
    CHECK(count == KIDS * EACH);
    for (size_t i = 0; i < count; i++)
        for (size_t j = i + 1; j < count; j++)
            CHECKF(all[i] != all[j], "ID %llu issued twice", (unsigned long long)all[i]);
}

static void t_session_etimedout_guard_busy(void)
{
    nfslock_session *s = open_session("jobs", 0);
    CHECK_RC(nfslock_session_close(s), 0);
    /* Another process holds the repository's guard (a lock file of the ordinary kind),
     * which check, repair and reaping take. */
    struct holder h;
    holder_start(&h, tp("repo/jobs.guard"), "stuck");
    REQUIRE_RC(h.rc, 0);
    s = open_session("jobs", 1000);
    long long start = now_ms();
    CHECK_RC(nfslock_session_check(s), ETIMEDOUT);
    CHECK(now_ms() - start >= 1000);
    CHECK(strstr(nfslock_last_error(), "jobs.guard") != NULL);
    CHECK_RC(holder_release(&h), 0);
    CHECK_RC(nfslock_session_check(s), 0);
    CHECK_RC(nfslock_session_close(s), 0);
}

/* Opens a session with a short timeout, takes one ID, reports it on `out` and waits
 * for a byte on `in`. */
static void token_child(int in, int out)
{
    nfslock_session *s = NULL;
    uint64_t id = 0;
    if (nfslock_session_open(tp("repo"), "jobs", scaled(SHORT_MS), &s) != 0 || nfslock_session_make_new_ids(s, 1, &id) != 0)
        _exit(12);
    if (write(out, &id, sizeof id) != sizeof id)
        _exit(13);
    char c;
    (void)!read(in, &c, 1);
    _exit(nfslock_session_close(s) == 0 ? 0 : 14);
}

/* The first claim file in repo/jobs.ids (the only session with one is the child's). */
static int find_claim(char *out, size_t cap)
{
    DIR *d = opendir(tp("repo/jobs.ids"));
    if (d == NULL)
        return -1;
    struct dirent *e;
    int found = -1;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".claim-", 7) == 0) {
            snprintf(out, cap, "%s/%s", tp("repo/jobs.ids"), e->d_name);
            found = 0;
            break;
        }
    }
    closedir(d);
    return found;
}

static void t_session_etimedout_token_busy(void)
{
    /* A session of another process holds the counter's token: the lock on the
     * counter's next ID, as while it writes the counter, and is stopped there. It is
     * silent past its timeout, but its process lives, so it may still write: nobody
     * reaps it or takes the token. Writers wait and give up with ETIMEDOUT; once its
     * process is gone, the next writer takes the token over at once. */
    int go[2], ready[2];
    REQUIRE(pipe(go) == 0 && pipe(ready) == 0);
    pid_t pid = fork_flushed();
    REQUIRE(pid >= 0);
    if (pid == 0)
        token_child(go[0], ready[1]);
    uint64_t child_id = 0;
    REQUIRE(read(ready[0], &child_id, sizeof child_id) == sizeof child_id);
    char claim[512], token[512];
    REQUIRE(find_claim(claim, sizeof claim) == 0);
    snprintf(token, sizeof token, "%s/%llu", tp("repo/jobs.ids"), (unsigned long long)(child_id + 1));
    REQUIRE(link(claim, token) == 0);
    REQUIRE(kill(pid, SIGSTOP) == 0);

    nfslock_session *s = open_session("jobs", scaled(SHORT_MS));
    /* Past the stopped session's timeout, as this session sees it. */
    size_t reaped = 9;
    CHECK_RC(nfslock_session_reap_locks(s, &reaped), 0);
    sleep_ms(2 * scaled(SHORT_MS));
    CHECK_RC(nfslock_session_reap_locks(s, &reaped), 0);
    CHECK(reaped == 0);
    CHECK(exists(claim));
    char info[256];
    CHECK_RC(nfslock_session_get_lock_session(s, child_id, info, sizeof info), 0);
    uint64_t id = 0;
    long long start = now_ms();
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), ETIMEDOUT);
    CHECK(now_ms() - start >= (long long)scaled(SHORT_MS));
    CHECKF(strstr(nfslock_last_error(), token) != NULL, "last error: %s", nfslock_last_error());
    uint64_t high = child_id + 10, out = 0;
    size_t n = 9;
    CHECK_RC(nfslock_session_lock_ids(s, &high, 1, &out, &n), ETIMEDOUT);

    REQUIRE(kill(pid, SIGKILL) == 0);
    CHECK(wait_status(pid) == 128 + SIGKILL);
    start = now_ms();
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), 0);
    CHECK(id == child_id + 1);
    CHECK(now_ms() - start < (long long)scaled(SHORT_MS));
    CHECK(!exists(claim));
    CHECK_RC(nfslock_session_check(s), 0);
    CHECK_RC(nfslock_session_close(s), 0);
    close(go[0]);
    close(go[1]);
    close(ready[0]);
    close(ready[1]);
}

static void t_session_waits_for_a_remote_writer(void)
{
    /* A writer on an NFS client holds the repository's writer lock from before it
     * takes the counter's token until its write is synced. A writer on the server's
     * own filesystem must not build on a value that is not durable yet: it lines up
     * behind the lock (here held by another process, as a remote writer would). */
    nfslock_session *s = open_session("jobs", scaled(SHORT_MS));
    uint64_t first = 0, id = 0;
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &first), 0);
    struct holder h;
    holder_start(&h, tp("repo/jobs.writer"), "remote writer");
    REQUIRE_RC(h.rc, 0);
    long long start = now_ms();
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), ETIMEDOUT);
    CHECK(now_ms() - start >= (long long)scaled(SHORT_MS));
    CHECKF(strstr(nfslock_last_error(), "jobs.writer") != NULL, "last error: %s", nfslock_last_error());
    CHECK_RC(holder_release(&h), 0);
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &id), 0);
    CHECK(id > first);
    CHECK_RC(nfslock_session_check(s), 0);
    CHECK_RC(nfslock_session_close(s), 0);
}

static void *allocate_in_thread(void *arg)
{
    nfslock_session *s = arg;
    uint64_t *ids = malloc(50 * sizeof *ids);
    for (int i = 0; ids && i < 50; i++)
        if (nfslock_session_make_new_ids(s, 1, &ids[i]) != 0)
            ids[i] = UINT64_MAX;
    return ids;
}

static void t_session_threads_share_a_handle(void)
{
    nfslock_session *s = open_session("jobs", 0);
    pthread_t threads[4];
    for (int t = 0; t < 4; t++)
        REQUIRE(pthread_create(&threads[t], NULL, allocate_in_thread, s) == 0);
    uint64_t all[200];
    for (int t = 0; t < 4; t++) {
        void *ret = NULL;
        REQUIRE(pthread_join(threads[t], &ret) == 0 && ret != NULL);
        memcpy(all + 50 * t, ret, 50 * sizeof all[0]);
        free(ret);
    }
    for (int i = 0; i < 200; i++) {
        CHECK(all[i] != UINT64_MAX);
        for (int j = i + 1; j < 200; j++)
            CHECKF(all[i] != all[j], "ID %llu issued twice", (unsigned long long)all[i]);
    }
    CHECK_RC(nfslock_session_check(s), 0);
    CHECK_RC(nfslock_session_close(s), 0);
}

/* Issue 15 #8: a handle that was unlocked or closed is EINVAL, found without reading
 * freed memory (valgrind runs this too), also when a newer handle took its place (the
 * old code's freed handle was reused by the next create, and unlocking the stale one
 * released the new lock). */
static void t_stale_lock_handle(void)
{
    char a[PATH_MAX], b[PATH_MAX];
    snprintf(a, sizeof a, "%s", tp("a"));
    snprintf(b, sizeof b, "%s", tp("b"));
    for (int round = 0; round < 20; round++) {
        nfslock *h1 = NULL, *h2 = NULL;
        REQUIRE_RC(nfslock_create(a, "first", &h1), 0);
        REQUIRE_RC(nfslock_unlock(h1), 0);
        REQUIRE_RC(nfslock_create(b, "second", &h2), 0);
        CHECK_RC(nfslock_unlock(h1), EINVAL);
        CHECKF(exists(lockfile_of(b)), "round %d: unlocking the stale handle released B", round);
        CHECK_RC(nfslock_unlock(h1), EINVAL);
        /* A session handle is not a lock handle, and the reverse. */
        CHECK_RC(nfslock_session_close((nfslock_session *)h2), EINVAL);
        CHECK(exists(lockfile_of(b)));
        CHECK_RC(nfslock_unlock(h2), 0);
        CHECK(!exists(lockfile_of(b)));
        CHECK_RC(nfslock_unlock(h2), EINVAL);
    }
}

static void t_stale_session_handle(void)
{
    for (int round = 0; round < 5; round++) {
        nfslock_session *s1 = open_session("jobs", 0);
        uint64_t id = 0, first = 0;
        CHECK_RC(nfslock_session_make_new_ids(s1, 1, &first), 0);
        CHECK_RC(nfslock_session_close(s1), 0);
        nfslock_session *s2 = open_session("jobs", 0);
        CHECK_RC(nfslock_session_close(s1), EINVAL);
        CHECK_RC(nfslock_session_make_new_ids(s1, 1, &id), EINVAL);
        size_t n = 0;
        CHECK_RC(nfslock_session_lock_ids(s1, &first, 1, &id, &n), EINVAL);
        CHECK_RC(nfslock_session_check(s1), EINVAL);
        CHECK_RC(nfslock_unlock((nfslock *)s2), EINVAL);
        /* s2 is untouched by all that. */
        CHECK_RC(nfslock_session_make_new_ids(s2, 1, &id), 0);
        CHECK(id > first);
        CHECK_RC(nfslock_session_close(s2), 0);
        CHECK_RC(nfslock_session_close(s2), EINVAL);
    }
}

/* Issue 9: a process that used sessions and then forks: the child opens its own
 * session and makes IDs (no EEXIST), never uses its parent's (EPERM), and the parent
 * opens another session after its child did. */
static void t_session_fork_children_open_their_own(void)
{
    nfslock_session *s = open_session("jobs", 0);
    uint64_t parent_id = 0;
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &parent_id), 0);
    enum { KIDS = 4 };
    int fds[KIDS][2];
    pid_t pids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        REQUIRE(pipe(fds[k]) == 0);
        pids[k] = fork_flushed();
        REQUIRE(pids[k] >= 0);
        if (pids[k] == 0) {
            close(fds[k][0]);
            uint64_t ids[20] = {0}, other = 0;
            int bad = 0;
            bad |= nfslock_session_make_new_ids(s, 1, &other) != EPERM;
            bad |= nfslock_session_reap_locks(s, NULL) != EPERM;
            nfslock_session *mine = NULL;
            int rc = nfslock_session_open(tp("repo"), "jobs", 0, &mine);
            if (rc != 0) {
                fprintf(stderr, "child: open: %s (%s)\n", errname(rc), nfslock_last_error());
                _exit(2);
            }
            for (int i = 0; i < 20 && !bad; i++) {
                rc = nfslock_session_make_new_ids(mine, 1, &ids[i]);
                if (rc != 0) {
                    fprintf(stderr, "child: make_new_ids: %s (%s)\n", errname(rc), nfslock_last_error());
                    bad = 1;
                }
            }
            bad |= nfslock_session_close(mine) != 0;
            bad |= nfslock_session_close(s) != EPERM;
            ssize_t w = write(fds[k][1], ids, sizeof ids);
            _exit(bad || w != (ssize_t)sizeof ids ? 1 : 0);
        }
        close(fds[k][1]);
    }
    uint64_t all[KIDS * 20 + 1];
    for (int k = 0; k < KIDS; k++) {
        ssize_t got = read(fds[k][0], all + 20 * k, 20 * sizeof all[0]);
        CHECKF(got == 20 * (ssize_t)sizeof all[0], "child %d sent %zd bytes", k, got);
        close(fds[k][0]);
        CHECKF(wait_status(pids[k]) == 0, "child %d failed", k);
    }
    /* The parent's session is intact, and it can open another one after its children. */
    CHECK_RC(nfslock_session_make_new_ids(s, 1, &all[KIDS * 20]), 0);
    nfslock_session *again = NULL;
    CHECK_RC(nfslock_session_open(tp("repo"), "jobs", 0, &again), 0);
    uint64_t more = 0;
    CHECK_RC(nfslock_session_make_new_ids(again, 1, &more), 0);
    for (int i = 0; i <= KIDS * 20; i++) {
        CHECK(all[i] != parent_id && all[i] != more);
        for (int j = i + 1; j <= KIDS * 20; j++)
            CHECKF(all[i] != all[j], "ID %llu issued twice", (unsigned long long)all[i]);
    }
    CHECK_RC(nfslock_session_check(again), 0);
    CHECK_RC(nfslock_session_close(again), 0);
    CHECK_RC(nfslock_session_close(s), 0);
}

const struct test session_tests[] = {
    {"session_ids", t_session_ids, 0, 0},
    {"session_einval", t_session_einval, 0, 0},
    {"session_counter_errors", t_session_counter_errors, 0, 0},
    {"session_enotdir", t_session_enotdir, 0, 0},
    {"session_eacces", t_session_eacces, 0, 0},
    {"session_estale_after_pause", t_session_estale_after_pause, 0, 0},
    {"session_eperm_in_fork", t_session_eperm_in_fork, 0, 0},
    {"session_processes_unique", t_session_processes_unique, 0, 0},
    {"session_etimedout_guard_busy", t_session_etimedout_guard_busy, 0, 0},
    /* Waits out two timeouts: heavy, so that valgrind (timeouts x20) leaves it out. */
    {"session_etimedout_token_busy", t_session_etimedout_token_busy, 0, 1},
    {"session_waits_for_a_remote_writer", t_session_waits_for_a_remote_writer, 0, 0},
    {"session_threads_share_a_handle", t_session_threads_share_a_handle, 0, 0},
    {"stale_lock_handle", t_stale_lock_handle, 0, 0},
    {"stale_session_handle", t_stale_session_handle, 0, 0},
    {"session_fork_children_open_their_own", t_session_fork_children_open_their_own, 0, 0},
    {NULL, NULL, 0, 0},
};
