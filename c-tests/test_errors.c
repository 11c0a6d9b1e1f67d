/*
 * Every error code of the contract, each provoked for real: ENOENT, ENAMETOOLONG, EACCES,
 * EROFS, ELOOP, EBADMSG, ERANGE, EAGAIN, ETIMEDOUT, EDEADLK, ENOLCK, EPERM. The "at once"
 * errors are also timed: a blocking_create must not sit out its timeout on them.
 */
#include "harness.h"

#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* Time bound for calls that must return "at once" (generous for loaded machines). */
#define AT_ONCE_MS (1000LL * t_time_scale)

static int count_calls(void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

/*
 * Checks that every path function fails on `path` with `want`, that blocking_create and
 * critical_section do so at once although given a long timeout, and that f never runs.
 * `reads` = also check get_hostname_and_pid and get_message.
 */
static void check_all_fail(const char *path, int want, int reads)
{
    nfslock *lock = NULL;
    int calls = 0, result = -1;
    CHECK_RC(nfslock_create(path, "m", &lock), want);

    long long t0 = now_ms();
    CHECK_RC(nfslock_blocking_create(path, "m", 5000, &lock), want);
    long long waited = now_ms() - t0;
    CHECKF(waited < AT_ONCE_MS, "blocking_create(5000) took %lld ms to report %s", waited,
           errname(want));

    t0 = now_ms();
    CHECK_RC(nfslock_critical_section(path, "m", 5000, count_calls, &calls, &result), want);
    waited = now_ms() - t0;
    CHECKF(waited < AT_ONCE_MS, "critical_section(5000) took %lld ms to report %s", waited,
           errname(want));
    CHECK(calls == 0);
    CHECK(result == -1);

    if (reads) {
        char buf[64];
        int32_t pid = 0;
        CHECK_RC(nfslock_get_hostname_and_pid(path, buf, sizeof buf, &pid), want);
        CHECK_RC(nfslock_get_message(path, buf, sizeof buf), want);
    }
}

static void require_root(void)
{
    if (geteuid() != 0) {
        t_fail(__FILE__, __LINE__, "this test needs root (it runs as root in CI)");
        t_abort();
    }
}

static void t_enoent(void)
{
    const char *p = tp("no-such-dir/lock");
    check_all_fail(p, ENOENT, 1);
    CHECK_RC(nfslock_unlock_path(p), ENOENT);
    CHECK(!exists(tp("no-such-dir")));

    /* An existing directory, nothing locked: reads and unlock_path say ENOENT too. */
    const char *q = tp("unlocked");
    char buf[64];
    int32_t pid = 0;
    CHECK_RC(nfslock_get_hostname_and_pid(q, buf, sizeof buf, &pid), ENOENT);
    CHECK_RC(nfslock_get_message(q, buf, sizeof buf), ENOENT);
    CHECK_RC(nfslock_unlock_path(q), ENOENT);
}

static void t_enametoolong(void)
{
    /* A basename of 250: P itself fits NAME_MAX (255), P.nfs_lock does not. */
    char name[251];
    memset(name, 'n', 250);
    name[250] = '\0';
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", tp(name));
    check_all_fail(p, ENAMETOOLONG, 1);
    CHECK_RC(nfslock_unlock_path(p), ENAMETOOLONG);

    /* A whole path longer than PATH_MAX. */
    size_t cap = PATH_MAX + 1024;
    char *longp = malloc(cap);
    REQUIRE(longp != NULL);
    size_t len = (size_t)snprintf(longp, cap, "%s", T_DIR);
    while (len < PATH_MAX + 16) {
        memcpy(longp + len, "/d", 2);
        len += 2;
    }
    strcpy(longp + len, "/lock");
    check_all_fail(longp, ENAMETOOLONG, 1);
    CHECK_RC(nfslock_unlock_path(longp), ENAMETOOLONG);
    free(longp);
}

static void eacces_as_nobody(void *arg)
{
    (void)arg;
    REQUIRE(setgroups(0, NULL) == 0);
    REQUIRE(setgid(65534) == 0);
    REQUIRE(setuid(65534) == 0);
    check_all_fail(tp("x"), EACCES, 0);
    CHECK(!exists(tp("x.nfs_lock")));
    /* A lock file we may not read. */
    char buf[64];
    int32_t pid = 0;
    CHECK_RC(nfslock_get_message(tp("secret"), buf, sizeof buf), EACCES);
    CHECK_RC(nfslock_get_hostname_and_pid(tp("secret"), buf, sizeof buf, &pid), EACCES);
}

static void t_eacces(void)
{
    require_root();
    /* A root-owned 0755 directory: searchable by nobody, not writable. */
    REQUIRE(chmod(T_DIR, 0755) == 0);
    char record[256];
    make_record(record, sizeof record, "other-host.invalid", 1, "secret", NULL);
    write_str(lockfile_of(tp("secret")), record);
    REQUIRE(chmod(lockfile_of(tp("secret")), 0600) == 0);
    run_in_child(eacces_as_nobody, NULL);
    CHECK(file_is(lockfile_of(tp("secret")), record, strlen(record)));
}

static void erofs_in_namespace(void *arg)
{
    (void)arg;
    /* A mount namespace of our own, so the read-only tmpfs is seen by no one else. */
    REQUIRE(unshare(CLONE_NEWNS) == 0);
    /* "none" rather than NULL: the kernel ignores both, valgrind flags NULL. */
    REQUIRE(mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) == 0);
    char ro[PATH_MAX];
    snprintf(ro, sizeof ro, "%s", tp("ro"));
    REQUIRE(mkdir(ro, 0755) == 0);
    REQUIRE(mount("tmpfs", ro, "tmpfs", 0, "size=1m,mode=0755") == 0);

    /* A stale lock (our host, dead pid) that cannot be cleared on a read-only fs. */
    char stale_path[PATH_MAX], stale_lock[PATH_MAX], record[256];
    snprintf(stale_path, sizeof stale_path, "%s", tp("ro/stale"));
    snprintf(stale_lock, sizeof stale_lock, "%s", tp("ro/stale.nfs_lock"));
    make_record(record, sizeof record, this_host(), (long)dead_pid(), "stale", NULL);
    write_str(stale_lock, record);

    REQUIRE(mount("tmpfs", ro, "tmpfs", MS_REMOUNT | MS_RDONLY, NULL) == 0);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", tp("ro/x"));
    check_all_fail(p, EROFS, 0);
    check_all_fail(stale_path, EROFS, 0);
    CHECK(file_is(stale_lock, record, strlen(record)));
}

static void t_erofs(void)
{
    require_root();
    run_in_child(erofs_in_namespace, NULL);
}

static const char PRECIOUS[] = "((host other-host.invalid)(pid 1)(message\"precious\"))";

static void t_eloop_at_lockfile(void)
{
    const char *p = tp("p");
    char target[PATH_MAX];
    snprintf(target, sizeof target, "%s", tp("target"));
    write_str(target, PRECIOUS);
    REQUIRE(symlink(target, lockfile_of(p)) == 0);
    /* Reads must not follow it either: the target holds a valid record. */
    check_all_fail(p, ELOOP, 1);
    CHECK_RC(nfslock_unlock_path(p), ELOOP);
    CHECK(file_is(target, PRECIOUS, strlen(PRECIOUS)));
    char link[PATH_MAX] = "";
    CHECK(readlink(lockfile_of(p), link, sizeof link - 1) > 0 && strcmp(link, target) == 0);

    /* A dangling symlink: its target must not come into existence. */
    const char *q = tp("q");
    char absent[PATH_MAX];
    snprintf(absent, sizeof absent, "%s", tp("absent-target"));
    REQUIRE(symlink(absent, lockfile_of(q)) == 0);
    check_all_fail(q, ELOOP, 1);
    CHECK_RC(nfslock_unlock_path(q), ELOOP);
    CHECK(!exists(absent));
}

/* A symlink at P itself: P is never written or followed, so the lock works and neither
 * the symlink nor its target (present or absent) is touched. */
static void t_symlink_at_path_is_left_alone(void)
{
    const char *p = tp("p");
    char target[PATH_MAX];
    snprintf(target, sizeof target, "%s", tp("target"));
    write_str(target, PRECIOUS);
    REQUIRE(symlink(target, p) == 0);
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_create(p, "m", &lock), 0);
    CHECK_RC(nfslock_unlock(lock), 0);
    CHECK(file_is(target, PRECIOUS, strlen(PRECIOUS)));
    CHECK(!exists(lockfile_of(p)));
    char link[PATH_MAX] = "";
    CHECK(readlink(p, link, sizeof link - 1) > 0 && strcmp(link, target) == 0);

    const char *q = tp("q");
    char absent[PATH_MAX];
    snprintf(absent, sizeof absent, "%s", tp("absent-target"));
    REQUIRE(symlink(absent, q) == 0);
    REQUIRE_RC(nfslock_create(q, "m", &lock), 0);
    CHECK_RC(nfslock_unlock(lock), 0);
    CHECK(!exists(absent));
    CHECK(!exists(lockfile_of(q)));
}

/* An empty lock file is a holder between its link and its write (Core's v1 create): held,
 * not unreadable. create says EAGAIN, unlock_path EAGAIN, and blocking_create waits for
 * it; only once it stayed empty for UNWRITTEN_PATIENCE (5 s) on the waiter's clock does
 * blocking_create report EBADMSG. It is never removed. */
static void t_empty_lock_file_is_held_then_ebadmsg(void)
{
    const char *p = tp("p");
    write_file(lockfile_of(p), "", 0);
    nfslock *lock = NULL;
    CHECK_RC(nfslock_create(p, "m", &lock), EAGAIN);
    CHECK_RC(nfslock_unlock_path(p), EAGAIN);
    long long t0 = now_ms();
    CHECK_RC(nfslock_blocking_create(p, "m", 1000, &lock), ETIMEDOUT);
    long long t1 = now_ms();
    CHECK_RC(nfslock_blocking_create(p, "m", 60000, &lock), EBADMSG);
    long long waited = now_ms() - t1;
    CHECKF(t1 - t0 >= 1000, "ETIMEDOUT after %lld ms", t1 - t0);
    CHECKF(waited >= 5000 && waited < 30000 * t_time_scale, "EBADMSG after %lld ms", waited);
    CHECK(strstr(nfslock_last_error(), "held no record") != NULL);
    CHECK(file_is(lockfile_of(p), "", 0));

    /* A Core holder that writes its record within the patience is simply waited for. */
    const char *q = tp("q");
    write_file(lockfile_of(q), "", 0);
    pid_t writer = fork_flushed();
    REQUIRE(writer >= 0);
    if (writer == 0) {
        sleep_ms(300);
        char rec[512];
        make_record(rec, sizeof rec, this_host(), (long)getpid(), "core", NULL);
        write_file(lockfile_of(q), rec, strlen(rec));
        sleep_ms(300);
        unlink(lockfile_of(q));
        _exit(0);
    }
    REQUIRE_RC(nfslock_blocking_create(q, "m", 20000, &lock), 0);
    CHECK(wait_status(writer) == 0);
    CHECK_RC(nfslock_unlock(lock), 0);
}

static void t_ebadmsg(void)
{
    /* A valid-looking record, but 2 MiB long (the limit is 64 KiB). */
    size_t big_len = 2u << 20;
    char *big = malloc(big_len);
    REQUIRE(big != NULL);
    memset(big, 'a', big_len);
    const char head[] = "((host h)(pid 1)(message\"", tail[] = "\"))";
    memcpy(big, head, strlen(head));
    memcpy(big + big_len - strlen(tail), tail, strlen(tail));

    /* A string literal and its length, embedded NUL bytes included. */
#define LIT(s) s, sizeof(s) - 1
    struct {
        const char *name;
        const char *bytes;
        size_t len;
    } cases[] = {
        {"garbage", LIT("garbage \x01\x02 not a record")},
        {"truncated", LIT("((host h)(pid 1)(mess")},
        {"unclosed", LIT("((host h)(pid 1)(message m)")},
        {"nul_byte", LIT("((host h)(pid 1)(message\"a\0b\"))")},
        {"pid_not_a_number", LIT("((host h)(pid abc)(message m))")},
        {"no_pid", LIT("((host h)(message m))")},
        {"an_atom", LIT("hello")},
        {"two_mib", big, big_len},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad_%s", cases[i].name);
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s", tp(name));
        write_file(lockfile_of(p), cases[i].bytes, cases[i].len);
        int before = atomic_load(&t_failures);
        check_all_fail(p, EBADMSG, 1);
        CHECK_RC(nfslock_unlock_path(p), EBADMSG);
        CHECK(file_is(lockfile_of(p), cases[i].bytes, cases[i].len));
        if (atomic_load(&t_failures) > before)
            printf("    (in case %s)\n", cases[i].name);
    }
    free(big);
#undef LIT
}

static void t_erange(void)
{
    const char *p = tp("p");
    write_str(lockfile_of(p), "((host abcdef)(pid 4242)(message hello))");

    char host[16];
    int32_t pid = -1;
    memset(host, 'Z', sizeof host);
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, 6, &pid), ERANGE); /* needs 7 */
    int untouched = 1;
    for (size_t i = 0; i < sizeof host; i++)
        untouched &= host[i] == 'Z';
    CHECK(untouched);
    CHECK(pid == -1);
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, 0, &pid), ERANGE);
    CHECK(host[0] == 'Z' && pid == -1);
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, 7, &pid), 0);
    CHECK(memcmp(host, "abcdef", 7) == 0);
    CHECK(host[7] == 'Z'); /* nothing past the NUL */
    CHECK(pid == 4242);

    char msg[16];
    memset(msg, 'Z', sizeof msg);
    CHECK_RC(nfslock_get_message(p, msg, 5), ERANGE); /* needs 6 */
    untouched = 1;
    for (size_t i = 0; i < sizeof msg; i++)
        untouched &= msg[i] == 'Z';
    CHECK(untouched);
    CHECK_RC(nfslock_get_message(p, msg, 0), ERANGE);
    CHECK(msg[0] == 'Z');
    CHECK_RC(nfslock_get_message(p, msg, 6), 0);
    CHECK(memcmp(msg, "hello", 6) == 0);
    CHECK(msg[6] == 'Z');

    /* An empty message still needs room for its NUL. */
    const char *q = tp("q");
    write_str(lockfile_of(q), "((host abcdef)(pid 4242)(message\"\"))");
    msg[0] = 'Z';
    CHECK_RC(nfslock_get_message(q, msg, 0), ERANGE);
    CHECK(msg[0] == 'Z');
    CHECK_RC(nfslock_get_message(q, msg, 1), 0);
    CHECK(msg[0] == '\0');
}

static void t_eagain(void)
{
    const char *p = tp("p");
    struct holder h;
    holder_start(&h, p, "child holds");
    REQUIRE_RC(h.rc, 0);

    int marker;
    nfslock *const sentinel = (nfslock *)(void *)&marker;
    nfslock *out = sentinel;
    CHECK_RC(nfslock_create(p, "m", &out), EAGAIN);
    CHECK(out == sentinel);
    long long t0 = now_ms();
    CHECK_RC(nfslock_blocking_create(p, "m", 0, &out), EAGAIN);
    CHECKF(now_ms() - t0 < AT_ONCE_MS, "blocking_create(0) took %lld ms", now_ms() - t0);
    CHECK(out == sentinel);

    /* The holder's record is intact and still names the child. */
    char host[256];
    int32_t pid = 0;
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, sizeof host, &pid), 0);
    CHECK(pid == h.pid);
    CHECK_RC(holder_release(&h), 0);

    nfslock *lock = NULL;
    CHECK_RC(nfslock_create(p, "m", &lock), 0);
    CHECK_RC(nfslock_unlock(lock), 0);
}

struct delayed_release {
    struct holder *h;
    long delay_ms;
    int rc;
};

static void *release_later(void *arg)
{
    struct delayed_release *d = arg;
    sleep_ms(d->delay_ms);
    d->rc = holder_release(d->h);
    return NULL;
}

static void t_etimedout(void)
{
    const char *p = tp("p");
    struct holder h;
    holder_start(&h, p, "child holds");
    REQUIRE_RC(h.rc, 0);

    nfslock *lock = NULL;
    long long t0 = now_ms();
    CHECK_RC(nfslock_blocking_create(p, "m", 200, &lock), ETIMEDOUT);
    long long waited = now_ms() - t0;
    CHECKF(waited >= 190 && waited < 200 + 2000LL * t_time_scale,
           "blocking_create(200) gave up after %lld ms", waited);

    int calls = 0, result = -1;
    t0 = now_ms();
    CHECK_RC(nfslock_critical_section(p, "m", 100, count_calls, &calls, &result), ETIMEDOUT);
    waited = now_ms() - t0;
    CHECKF(waited >= 90 && waited < 100 + 2000LL * t_time_scale,
           "critical_section(100) gave up after %lld ms", waited);
    CHECK(calls == 0);
    CHECK(result == -1);

    /* blocking_create(-1) waits for the release, however long. */
    pthread_t th;
    struct delayed_release d = {&h, 400, -1};
    REQUIRE(pthread_create(&th, NULL, release_later, &d) == 0);
    t0 = now_ms();
    CHECK_RC(nfslock_blocking_create(p, "after wait", -1, &lock), 0);
    waited = now_ms() - t0;
    pthread_join(th, NULL);
    CHECK_RC(d.rc, 0);
    CHECKF(waited >= 350, "blocking_create(-1) returned after %lld ms, before the release",
           waited);
    char msg[64];
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
    CHECK_STR(msg, "after wait");
    CHECK_RC(nfslock_unlock(lock), 0);

    /* And a finite timeout that outlasts the holder succeeds too. */
    holder_start(&h, p, "child holds again");
    REQUIRE_RC(h.rc, 0);
    d = (struct delayed_release){&h, 300, -1};
    REQUIRE(pthread_create(&th, NULL, release_later, &d) == 0);
    CHECK_RC(nfslock_blocking_create(p, "m", 10000, &lock), 0);
    pthread_join(th, NULL);
    CHECK_RC(d.rc, 0);
    CHECK_RC(nfslock_unlock(lock), 0);
}

static void t_edeadlk(void)
{
    const char *p = tp("p");
    nfslock *lock = NULL, *second = NULL;
    REQUIRE_RC(nfslock_create(p, "mine", &lock), 0);
    CHECK_RC(nfslock_create(p, "again", &second), EDEADLK);
    /* Waiting on a lock this thread holds would never end: EDEADLK at once instead. */
    long long t0 = now_ms();
    CHECK_RC(nfslock_blocking_create(p, "again", -1, &second), EDEADLK);
    CHECK_RC(nfslock_blocking_create(p, "again", 3000, &second), EDEADLK);
    int calls = 0, result = -1;
    CHECK_RC(nfslock_critical_section(p, "again", -1, count_calls, &calls, &result), EDEADLK);
    CHECKF(now_ms() - t0 < AT_ONCE_MS, "EDEADLK calls took %lld ms", now_ms() - t0);
    CHECK(calls == 0 && result == -1);

    /* The failed attempts changed nothing. */
    char msg[64];
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
    CHECK_STR(msg, "mine");
    CHECK_RC(nfslock_unlock(lock), 0);
    CHECK_RC(nfslock_create(p, "again", &second), 0);
    CHECK_RC(nfslock_unlock(second), 0);
}

static void t_enolck_removed(void)
{
    const char *p = tp("p");
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_create(p, "m", &lock), 0);
    REQUIRE(unlink(lockfile_of(p)) == 0);
    CHECK_RC(nfslock_unlock(lock), ENOLCK);
    CHECK(!exists(lockfile_of(p)));
    /* The handle is gone; the path can be locked again. */
    REQUIRE_RC(nfslock_create(p, "m", &lock), 0);
    CHECK_RC(nfslock_unlock(lock), 0);
}

/* Replaces P.nfs_lock atomically with `record`, as another process would. */
static void replace_lockfile(const char *p, const char *record)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", tp("replacement.tmp"));
    write_str(tmp, record);
    REQUIRE(rename(tmp, lockfile_of(p)) == 0);
}

static void t_enolck_replaced(void)
{
    const char *p = tp("p");
    nfslock *lock = NULL;
    char record[256];

    /* Replaced by another host's record. */
    REQUIRE_RC(nfslock_create(p, "m", &lock), 0);
    make_record(record, sizeof record, "other-host.invalid", 77, "someone else", NULL);
    replace_lockfile(p, record);
    CHECK_RC(nfslock_unlock(lock), ENOLCK);
    CHECK(file_is(lockfile_of(p), record, strlen(record)));

    /* Replaced by a live local process's record (with its real start time). */
    REQUIRE(unlink(lockfile_of(p)) == 0);
    REQUIRE_RC(nfslock_create(p, "m", &lock), 0);
    pid_t sleeper = start_sleeper();
    sleep_ms(20); /* let /proc show the sleeper's start */
    char stamp[64];
    format_start_time(proc_start_us(sleeper), stamp, sizeof stamp);
    make_record(record, sizeof record, this_host(), (long)sleeper, "live neighbour", stamp);
    replace_lockfile(p, record);
    CHECK_RC(nfslock_unlock(lock), ENOLCK);
    CHECK(file_is(lockfile_of(p), record, strlen(record)));
    stop_process(sleeper);
}

static int remove_lockfile_inside(void *ctx)
{
    unlink(lockfile_of(ctx));
    return 5;
}

static void t_enolck_critical_section(void)
{
    /* f ran, then the unlock found the lock gone: ENOLCK, and f's result is still stored. */
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", tp("p"));
    int result = -1;
    CHECK_RC(nfslock_critical_section(p, "m", 1000, remove_lockfile_inside, p, &result),
             ENOLCK);
    CHECK(result == 5);
    CHECK(!exists(lockfile_of(p)));
}

static void t_eperm_unlock_path_live(void)
{
    const char *p = tp("p");
    struct holder h;
    holder_start(&h, p, "child holds");
    REQUIRE_RC(h.rc, 0);
    size_t len = 0;
    char *before = read_file(lockfile_of(p), &len);
    REQUIRE(before != NULL);
    CHECK_RC(nfslock_unlock_path(p), EPERM);
    CHECK(file_is(lockfile_of(p), before, len));
    /* The child still owns it: its own unlock succeeds. */
    CHECK_RC(holder_release(&h), 0);
    CHECK(!exists(lockfile_of(p)));
    free(before);
}

struct fork_unlock {
    nfslock *parents;
    const char *path;
};

static void unlock_parents_handle(void *arg)
{
    struct fork_unlock *f = arg;
    CHECK_RC(nfslock_unlock_path(f->path), EPERM); /* the parent is alive */
    CHECK_RC(nfslock_unlock(f->parents), EPERM);
    CHECK(exists(lockfile_of(f->path)));
    /* exit() follows in run_in_child: the at-exit release must leave it alone too. */
}

static void t_eperm_unlock_in_forked_child(void)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", tp("p"));
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_create(p, "parent", &lock), 0);
    size_t len = 0;
    char *before = read_file(lockfile_of(p), &len);
    REQUIRE(before != NULL);
    struct fork_unlock f = {lock, p};
    run_in_child(unlock_parents_handle, &f);
    CHECK(file_is(lockfile_of(p), before, len));
    char host[256];
    int32_t pid = 0;
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, sizeof host, &pid), 0);
    CHECK(pid == getpid());
    CHECK_RC(nfslock_unlock(lock), 0);
    CHECK(!exists(lockfile_of(p)));
    free(before);
}

static void t_unlock_path(void)
{
    const char *p = tp("p");
    CHECK_RC(nfslock_unlock_path(p), ENOENT);

    /* Our own lock: unlock_path removes it; the handle then finds it gone. */
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_create(p, "m", &lock), 0);
    CHECK_RC(nfslock_unlock_path(p), 0);
    CHECK(!exists(lockfile_of(p)));
    CHECK_RC(nfslock_unlock(lock), ENOLCK);
    CHECK_RC(nfslock_unlock_path(p), ENOENT);

    /* A dead process's lock on this host may be removed. */
    char record[256];
    make_record(record, sizeof record, this_host(), (long)dead_pid(), "dead", NULL);
    write_str(lockfile_of(p), record);
    CHECK_RC(nfslock_unlock_path(p), 0);
    CHECK(!exists(lockfile_of(p)));
}

const struct test error_tests[] = {
    {"enoent_missing_dir", t_enoent, 0, 0},
    {"enametoolong", t_enametoolong, 0, 0},
    {"eacces_unprivileged", t_eacces, 0, 0},
    {"erofs_readonly_mount", t_erofs, 0, 0},
    {"eloop_symlink_at_lockfile", t_eloop_at_lockfile, 0, 0},
    {"symlink_at_path_is_left_alone", t_symlink_at_path_is_left_alone, 0, 0},
    {"empty_lock_file_is_held_then_ebadmsg", t_empty_lock_file_is_held_then_ebadmsg, 60, 1},
    {"ebadmsg_corrupt_records", t_ebadmsg, 0, 0},
    {"erange_small_buffers", t_erange, 0, 0},
    {"eagain_held_by_child", t_eagain, 0, 0},
    {"etimedout_and_waiting", t_etimedout, 0, 0},
    {"edeadlk_same_thread", t_edeadlk, 0, 0},
    {"enolck_lockfile_removed", t_enolck_removed, 0, 0},
    {"enolck_lockfile_replaced", t_enolck_replaced, 0, 0},
    {"enolck_critical_section", t_enolck_critical_section, 0, 0},
    {"eperm_unlock_path_live_child", t_eperm_unlock_path_live, 0, 0},
    {"eperm_unlock_in_forked_child", t_eperm_unlock_in_forked_child, 0, 0},
    {"unlock_path_cases", t_unlock_path, 0, 0},
    {NULL, NULL, 0, 0},
};
