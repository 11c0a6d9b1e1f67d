/*
 * Leases through the header: options, acquire, renew, is_held, fencing tokens, break
 * and inspect, with holders that are real processes of this host: one that renews
 * (never broken), one stopped with SIGSTOP (broken after its lease, never before, and
 * told so when it resumes, removing nothing), one killed (cleared at once), a forked
 * child of a holder (holds nothing), and an operator's break.
 */
#include "harness.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define LEASE_MS 300
/* For holds whose is_held is checked after the keep-alive thread renewed them: a late
 * wake-up of that thread on a loaded machine may take up to a sixth of the lease. */
#define HOLD_MS 1000

static nfslock_options *lease_options(uint32_t lease_ms, int keepalive)
{
    nfslock_options *o = NULL;
    REQUIRE_RC(nfslock_options_new(&o), 0);
    REQUIRE_RC(nfslock_options_set_lease_ms(o, lease_ms), 0);
    REQUIRE_RC(nfslock_options_set_keepalive(o, keepalive), 0);
    REQUIRE_RC(nfslock_options_set_message(o, "lease test"), 0);
    return o;
}

static void t_options_reject_bad_values_and_dead_handles(void)
{
    nfslock_options *o = NULL;
    CHECK_RC(nfslock_options_new(NULL), EINVAL);
    REQUIRE_RC(nfslock_options_new(&o), 0);
    CHECK_RC(nfslock_options_set_lease_ms(o, NFSLOCK_LEASE_MIN_MS - 1), EINVAL);
    CHECK_RC(nfslock_options_set_lease_ms(o, NFSLOCK_LEASE_MAX_MS + 1), EINVAL);
    CHECK_RC(nfslock_options_set_lease_ms(o, 0), 0);
    CHECK_RC(nfslock_options_set_lease_ms(NULL, 500), EINVAL);
    CHECK_RC(nfslock_options_set_shared(o, 1), 0);
    nfslock *lock = NULL;
    const char *p = tp("shared");
    /* A shared lock needs a lease. */
    CHECK_RC(nfslock_acquire(p, o, 0, &lock), EINVAL);
    CHECK(!exists(lockfile_of(p)));
    CHECK(lock == NULL);
    nfslock_options_free(o);
    /* A freed handle is a number no longer registered: EINVAL, nothing read through it. */
    CHECK_RC(nfslock_options_set_lease_ms(o, 500), EINVAL);
    CHECK_RC(nfslock_acquire(p, o, 0, &lock), EINVAL);
    nfslock_options_free(o);
    nfslock_options_free(NULL);
    CHECK(count_claims(T_DIR) == 0);
}

static void t_acquire_inspect_fence_unlock(void)
{
    const char *p = tp("res");
    nfslock_options *o = lease_options(HOLD_MS, 1);
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_acquire(p, o, 0, &lock), 0);
    CHECK_RC(nfslock_is_held(lock), 0);
    CHECK_RC(nfslock_renew(lock), 0);
    uint64_t t1 = 0, t2 = 0;
    CHECK_RC(nfslock_fencing_token(lock, &t1), 0);
    CHECK_RC(nfslock_fencing_token(lock, &t2), 0);
    CHECKF(t1 > 0 && t1 == t2, "tokens %llu, %llu", (unsigned long long)t1, (unsigned long long)t2);
    nfslock_info info;
    REQUIRE_RC(nfslock_inspect(p, 0, &info), 0);
    CHECKF(info.state == NFSLOCK_STATE_HELD_BY_CALLER, "state %d", info.state);
    CHECK(info.pid == getpid());
    CHECK(info.lease_ms == HOLD_MS);
    CHECK(info.fencing_token == t1);
    CHECK_STR(info.host, this_host());
    /* The readers of plain locks see a lease's holder. */
    char msg[64] = "";
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
    CHECK_STR(msg, "lease test");
    /* Held across leases by the keep-alive thread. */
    sleep_ms(HOLD_MS * 3 / 2);
    CHECK_RC(nfslock_is_held(lock), 0);
    CHECK_RC(nfslock_unlock(lock), 0);
    REQUIRE_RC(nfslock_inspect(p, 0, &info), 0);
    CHECK(info.state == NFSLOCK_STATE_FREE);
    /* The next holder's token is greater. */
    REQUIRE_RC(nfslock_acquire(p, o, 0, &lock), 0);
    CHECK_RC(nfslock_fencing_token(lock, &t2), 0);
    CHECK(t2 > t1);
    CHECK_RC(nfslock_unlock(lock), 0);
    nfslock_options_free(o);
}

static void t_plain_lock_through_acquire(void)
{
    const char *p = tp("plain");
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_acquire(p, NULL, 0, &lock), 0);
    CHECK_RC(nfslock_renew(lock), EINVAL);
    CHECK_RC(nfslock_is_held(lock), 0);
    uint64_t t = 0;
    CHECK_RC(nfslock_fencing_token(lock, &t), 0);
    CHECK(t == 1);
    nfslock_info info;
    REQUIRE_RC(nfslock_inspect(p, 0, &info), 0);
    CHECK(info.lease_ms == 0);
    CHECK_RC(nfslock_unlock(lock), 0);
}

static void t_without_keepalive_is_held_times_out(void)
{
    const char *p = tp("res");
    nfslock_options *o = lease_options(LEASE_MS, 0);
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_acquire(p, o, 0, &lock), 0);
    sleep_ms(LEASE_MS / 2 + 50);
    CHECK_RC(nfslock_is_held(lock), ETIMEDOUT);
    CHECK_RC(nfslock_renew(lock), 0);
    CHECK_RC(nfslock_is_held(lock), 0);
    CHECK_RC(nfslock_unlock(lock), 0);
    nfslock_options_free(o);
}

/* A child that takes the lease and reports on a pipe; then waits for a byte on `go`
 * and reports is_held and unlock as its exit status (is_held * 256 + unlock, capped). */
static pid_t lease_holder(const char *p, int keepalive, int *go_out)
{
    int ready[2], go[2];
    REQUIRE(pipe(ready) == 0 && pipe(go) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(go[1]);
        nfslock_options *o = lease_options(LEASE_MS, keepalive);
        nfslock *lock = NULL;
        char ok = nfslock_acquire(p, o, 0, &lock) == 0 ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1)
            _exit(100);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(101);
        int held = nfslock_is_held(lock);
        int unlocked = nfslock_unlock(lock);
        _exit((held == ENOLCK ? 1 : 0) | (unlocked == ENOLCK ? 2 : 0) | (held == 0 ? 4 : 0));
    }
    close(ready[1]);
    close(go[0]);
    char ok = 0;
    REQUIRE(read(ready[0], &ok, 1) == 1 && ok == 'y');
    close(ready[0]);
    *go_out = go[1];
    return pid;
}

static int finish_holder(pid_t pid, int go)
{
    char c = 'g';
    CHECK(write(go, &c, 1) == 1);
    close(go);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void t_renewing_holder_is_never_broken(void)
{
    const char *p = tp("res");
    int go;
    pid_t pid = lease_holder(p, 1, &go);
    nfslock_options *o = lease_options(LEASE_MS, 1);
    nfslock *lock = NULL;
    CHECK_RC(nfslock_acquire(p, o, LEASE_MS * 4, &lock), ETIMEDOUT);
    int status = finish_holder(pid, go);
    CHECKF(status == 4, "the holder's is_held/unlock came to %d (4: held and released)", status);
    nfslock_options_free(o);
}

static void t_stopped_holder_is_broken_after_its_lease_and_learns_it(void)
{
    const char *p = tp("res");
    int go;
    pid_t pid = lease_holder(p, 1, &go);
    REQUIRE(kill(pid, SIGSTOP) == 0);
    nfslock_options *o = lease_options(LEASE_MS, 1);
    nfslock *lock = NULL;
    long long start = now_ms();
    REQUIRE_RC(nfslock_acquire(p, o, LEASE_MS * 10, &lock), 0);
    long long took = now_ms() - start;
    CHECKF(took >= LEASE_MS, "taken after %lld ms, before the lease of %d ms", took, LEASE_MS);
    REQUIRE(kill(pid, SIGCONT) == 0);
    int status = finish_holder(pid, go);
    CHECKF(status == 3, "the resumed holder's is_held/unlock came to %d (3: both ENOLCK)", status);
    /* It removed nothing: our lease stands. */
    CHECK_RC(nfslock_is_held(lock), 0);
    nfslock_info info;
    REQUIRE_RC(nfslock_inspect(p, 0, &info), 0);
    CHECK(info.state == NFSLOCK_STATE_HELD_BY_CALLER);
    CHECK_RC(nfslock_unlock(lock), 0);
    nfslock_options_free(o);
}

static void t_killed_holder_is_cleared_at_once(void)
{
    const char *p = tp("res");
    int go;
    pid_t pid = lease_holder(p, 1, &go);
    REQUIRE(kill(pid, SIGKILL) == 0);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    close(go);
    nfslock_info info;
    REQUIRE_RC(nfslock_inspect(p, 0, &info), 0);
    CHECKF(info.state == NFSLOCK_STATE_DEAD_HOLDER, "state %d", info.state);
    nfslock_options *o = lease_options(LEASE_MS, 1);
    nfslock *lock = NULL;
    long long start = now_ms();
    REQUIRE_RC(nfslock_acquire(p, o, LEASE_MS * 10 * t_time_scale, &lock), 0);
    /* "At once": well before the holder's lease of LEASE_MS could have run out (under
     * valgrind, the time scale stretches what "well before" may take). */
    CHECKF(now_ms() - start < LEASE_MS * t_time_scale, "a dead holder was waited for %lld ms", now_ms() - start);
    CHECK_RC(nfslock_unlock(lock), 0);
    nfslock_options_free(o);
}

static void t_forked_child_holds_nothing_and_parent_keeps_renewing(void)
{
    const char *p = tp("res");
    nfslock_options *o = lease_options(HOLD_MS, 1);
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_acquire(p, o, 0, &lock), 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int held = nfslock_is_held(lock);
        int renewed = nfslock_renew(lock);
        int unlocked = nfslock_unlock(lock);
        _exit(held == EPERM && renewed == EPERM && unlocked == EPERM ? 0 : 1);
    }
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    sleep_ms(HOLD_MS * 3 / 2);
    CHECK_RC(nfslock_is_held(lock), 0);
    CHECK_RC(nfslock_unlock(lock), 0);
    nfslock_options_free(o);
}

static void t_operator_break_is_quoted_to_the_holder(void)
{
    const char *p = tp("res");
    nfslock_options *o = lease_options(LEASE_MS, 0);
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_acquire(p, o, 0, &lock), 0);
    CHECK_RC(nfslock_break(p, "disk replaced"), 0);
    CHECK(!exists(lockfile_of(p)));
    CHECK_RC(nfslock_is_held(lock), ENOLCK);
    CHECK_RC(nfslock_break(p, "again"), ENOENT);
    CHECK_RC(nfslock_unlock(lock), ENOLCK);
    /* A plain lock of this process, broken by the operator: its unlock removes nothing. */
    REQUIRE_RC(nfslock_create(p, "plain", &lock), 0);
    CHECK_RC(nfslock_break(p, "stuck"), 0);
    CHECK_RC(nfslock_is_held(lock), ENOLCK);
    CHECK_RC(nfslock_unlock(lock), ENOLCK);
    CHECK_RC(nfslock_break(NULL, "x"), EINVAL);
    nfslock_options_free(o);
}

/* Shared holders (real processes) hold at once; an exclusive acquirer waits until they
 * have all gone and keeps a reader that comes later out while it waits. */
static int count_prefix(const char *prefix)
{
    int n = 0;
    DIR *d = opendir(T_DIR);
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static pid_t shared_reader(const char *p, int hold_ms)
{
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid != 0)
        return pid;
    nfslock_options *o = lease_options(HOLD_MS, 1);
    nfslock *lock = NULL;
    int ok = nfslock_options_set_shared(o, 1) == 0 && nfslock_acquire(p, o, 10000, &lock) == 0;
    char marker[PATH_MAX];
    snprintf(marker, sizeof marker, "%s/reader-%d", T_DIR, (int)getpid());
    if (ok) {
        write_str(marker, "in");
        sleep_ms(hold_ms);
        ok = count_prefix("writer") == 0 && nfslock_is_held(lock) == 0;
        unlink(marker);
        ok = nfslock_unlock(lock) == 0 && ok;
    }
    _exit(ok ? 0 : 1);
}

static void t_shared_holders_overlap_and_exclude_a_writer(void)
{
    const char *p = tp("res");
    pid_t readers[3];
    for (int i = 0; i < 3; i++)
        readers[i] = shared_reader(p, 600 * t_time_scale);
    long long start = now_ms();
    while (count_prefix("reader-") < 3 && now_ms() - start < 5000)
        sleep_ms(5);
    CHECKF(count_prefix("reader-") == 3, "%d shared holders at once, expected 3", count_prefix("reader-"));
    nfslock_info info;
    REQUIRE_RC(nfslock_inspect(p, 0, &info), 0);
    CHECKF(info.shared_holders == 3, "inspect counts %u shared holders", info.shared_holders);
    /* A writer now: it waits for the three; a reader arriving meanwhile waits behind it. */
    pid_t late = -1;
    pid_t writer = fork();
    REQUIRE(writer >= 0);
    if (writer == 0) {
        nfslock_options *o = lease_options(HOLD_MS, 1);
        nfslock *lock = NULL;
        int ok = nfslock_acquire(p, o, 10000, &lock) == 0;
        if (ok) {
            ok = count_prefix("reader-") == 0;
            write_str(tp("writer"), "in");
            sleep_ms(200);
            unlink(tp("writer"));
            ok = nfslock_unlock(lock) == 0 && ok;
        }
        _exit(ok ? 0 : 1);
    }
    sleep_ms(150);
    late = shared_reader(p, 50);
    int status;
    for (int i = 0; i < 3; i++) {
        REQUIRE(waitpid(readers[i], &status, 0) == readers[i]);
        CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader %d status %d", i, status);
    }
    REQUIRE(waitpid(writer, &status, 0) == writer);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer status %d", status);
    REQUIRE(waitpid(late, &status, 0) == late);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "late reader status %d (it saw the writer inside?)", status);
    REQUIRE_RC(nfslock_inspect(p, 0, &info), 0);
    CHECK(info.state == NFSLOCK_STATE_FREE);
}

static void t_killed_shared_holder_is_pruned_at_once(void)
{
    const char *p = tp("res");
    pid_t r = shared_reader(p, 60000);
    long long start = now_ms();
    while (count_prefix("reader-") < 1 && now_ms() - start < 5000)
        sleep_ms(5);
    REQUIRE(kill(r, SIGKILL) == 0);
    int status;
    REQUIRE(waitpid(r, &status, 0) == r);
    nfslock_options *o = lease_options(HOLD_MS, 1);
    nfslock *lock = NULL;
    start = now_ms();
    REQUIRE_RC(nfslock_acquire(p, o, 10000, &lock), 0);
    CHECKF(now_ms() - start < HOLD_MS, "a dead shared holder was waited for %lld ms", now_ms() - start);
    CHECK_RC(nfslock_unlock(lock), 0);
    nfslock_options_free(o);
}

const struct test lease_tests[] = {
    {"shared_holders_overlap_and_exclude_a_writer", t_shared_holders_overlap_and_exclude_a_writer, 20, 0},
    {"killed_shared_holder_is_pruned_at_once", t_killed_shared_holder_is_pruned_at_once, 15, 0},
    {"options_reject_bad_values_and_dead_handles", t_options_reject_bad_values_and_dead_handles, 10, 0},
    {"acquire_inspect_fence_unlock", t_acquire_inspect_fence_unlock, 10, 0},
    {"plain_lock_through_acquire", t_plain_lock_through_acquire, 10, 0},
    {"without_keepalive_is_held_times_out", t_without_keepalive_is_held_times_out, 10, 0},
    {"renewing_holder_is_never_broken", t_renewing_holder_is_never_broken, 15, 0},
    {"stopped_holder_is_broken_after_its_lease_and_learns_it", t_stopped_holder_is_broken_after_its_lease_and_learns_it, 15, 0},
    {"killed_holder_is_cleared_at_once", t_killed_holder_is_cleared_at_once, 10, 0},
    /* Heavy: under valgrind the child reports the keep-alive thread's allocations as lost. */
    {"forked_child_holds_nothing_and_parent_keeps_renewing", t_forked_child_holds_nothing_and_parent_keeps_renewing, 10, 1},
    {"operator_break_is_quoted_to_the_holder", t_operator_break_is_quoted_to_the_holder, 10, 0},
    {NULL, NULL, 0, 0},
};
