/*
 * Records on disk: reading Core's forms written by hand, other hosts' locks (never broken),
 * stale locks of dead processes, pid reuse detected through start times, and records whose
 * content must never be acted on.
 */
#include "harness.h"

#include <signal.h>
#include <unistd.h>

struct golden {
    const char *name;
    const char *file; /* exact bytes of P.nfs_lock */
    const char *host;
    int32_t pid;
    const char *message;
};

static const struct golden goldens[] = {
    {"machine_with_start_time",
     "((host golden-host.example)(pid 4242)(message\"hello world\")"
     "(start_time(2024-01-15 10:30:00.120000Z)))",
     "golden-host.example", 4242, "hello world"},
    {"human_with_start_time",
     "((host golden-host.example) (pid 4242) (message \"say \\\"hi\\\"\\nbye\") "
     "(start_time (2024-01-15 10:30:00.120000Z)))\n",
     "golden-host.example", 4242, "say \"hi\"\nbye"},
    {"machine_without_start_time", "((host h1)(pid 7)(message\"\"))", "h1", 7, ""},
    {"human_without_start_time", "((host h1) (pid 7) (message \"tab\\there\"))\n", "h1", 7,
     "tab\there"},
    {"machine_unquoted_message", "((host h3)(pid 1)(message hi))", "h3", 1, "hi"},
    {"escaped_non_ascii", "((host h2)(pid 99)(message\"caf\\195\\169 \\226\\156\\147\"))", "h2",
     99, "caf\xc3\xa9 \xe2\x9c\x93"},
    {"raw_utf8_non_ascii", "((host h2) (pid 99) (message \"na\xc3\xafve \xe2\x9c\x93\"))\n", "h2",
     99, "na\xc3\xafve \xe2\x9c\x93"},
    {"all_escapes", "((host h4)(pid 4194304)(message\"a\\\\b\\tc\\rd\\be\\001\\127\"))", "h4",
     4194304, "a\\b\tc\rd\be\x01\x7f"},
    {"quoted_host", "((host \"my host\")(pid 12)(message m))", "my host", 12, "m"},
    {"v1_multiline_extra_field",
     "((host old-host)\n (pid 123)\n (message \"multi\\nline (with) parens;\")\n"
     " (extra_field (a b))\n (start_time (2017-12-31 23:59:59.999999Z)))\n",
     "old-host", 123, "multi\nline (with) parens;"},
};

static void t_golden_records(void)
{
    for (size_t i = 0; i < sizeof goldens / sizeof goldens[0]; i++) {
        const struct golden *g = &goldens[i];
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s", tp(g->name));
        write_str(lockfile_of(p), g->file);
        int before = atomic_load(&t_failures);

        char host[256] = "", msg[256] = "";
        int32_t pid = -1;
        CHECK_RC(nfslock_get_hostname_and_pid(p, host, sizeof host, &pid), 0);
        CHECK_STR(host, g->host);
        CHECKF(pid == g->pid, "pid %d, expected %d", (int)pid, (int)g->pid);
        CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
        CHECK_STR(msg, g->message);
        /* Buffers of exactly the needed size are enough. */
        CHECK_RC(nfslock_get_hostname_and_pid(p, host, strlen(g->host) + 1, &pid), 0);
        CHECK_RC(nfslock_get_message(p, msg, strlen(g->message) + 1), 0);
        /* Reading never changes the file. */
        CHECK(file_is(lockfile_of(p), g->file, strlen(g->file)));
        if (atomic_load(&t_failures) > before)
            printf("    (in golden record %s)\n", g->name);
    }
}

static int count_calls(void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

/* Another host's lock is never broken, whatever its pid says. */
static void check_foreign(const char *p, const char *record)
{
    write_str(lockfile_of(p), record);
    nfslock *lock = NULL;
    CHECK_RC(nfslock_create(p, "m", &lock), EAGAIN);
    CHECK_RC(nfslock_unlock_path(p), EPERM);
    long long t0 = now_ms();
    CHECK_RC(nfslock_blocking_create(p, "m", 200, &lock), ETIMEDOUT);
    long long waited = now_ms() - t0;
    CHECKF(waited >= 190, "blocking_create(200) gave up after %lld ms", waited);
    int calls = 0, result = -1;
    CHECK_RC(nfslock_critical_section(p, "m", 100, count_calls, &calls, &result), ETIMEDOUT);
    CHECK(calls == 0);
    CHECK(file_is(lockfile_of(p), record, strlen(record)));
    char host[64];
    int32_t pid;
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, sizeof host, &pid), 0);
    CHECK_STR(host, "other-host.invalid");
}

static void t_foreign_host(void)
{
    char record[256], stamp[64];
    /* Our own pid and start time, but another host name. */
    format_start_time(proc_start_us(getpid()), stamp, sizeof stamp);
    make_record(record, sizeof record, "other-host.invalid", (long)getpid(), "remote", stamp);
    check_foreign(tp("ours_pid"), record);
    /* A pid that is dead here. */
    make_record(record, sizeof record, "other-host.invalid", (long)dead_pid(), "remote", NULL);
    check_foreign(tp("dead_pid"), record);
}

static void t_stale_after_sigkill(void)
{
    const char *p = tp("p");
    struct holder h;
    holder_start(&h, p, "doomed");
    REQUIRE_RC(h.rc, 0);
    holder_kill(&h); /* no unlock, no at-exit: the lock file stays */
    REQUIRE(exists(lockfile_of(p)));

    nfslock *lock = NULL;
    CHECK_RC(nfslock_create(p, "survivor", &lock), 0);
    char host[256], msg[64];
    int32_t pid = 0;
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, sizeof host, &pid), 0);
    CHECK(pid == getpid());
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
    CHECK_STR(msg, "survivor");
    CHECK_RC(nfslock_unlock(lock), 0);

    /* blocking_create breaks a stale lock too, without waiting out its timeout. */
    holder_start(&h, p, "doomed again");
    REQUIRE_RC(h.rc, 0);
    holder_kill(&h);
    long long t0 = now_ms();
    CHECK_RC(nfslock_blocking_create(p, "m", 10000, &lock), 0);
    CHECKF(now_ms() - t0 < 1000LL * t_time_scale, "took %lld ms", now_ms() - t0);
    CHECK_RC(nfslock_unlock(lock), 0);
}

static void t_pid_reuse(void)
{
    pid_t sleeper = start_sleeper();
    sleep_ms(20);
    long long start = proc_start_us(sleeper);
    REQUIRE(start > 0);
    char record[256], stamp[64];
    nfslock *lock = NULL;

    /* The live sleeper, with its real start time: alive. */
    const char *live = tp("live");
    format_start_time(start, stamp, sizeof stamp);
    make_record(record, sizeof record, this_host(), (long)sleeper, "live", stamp);
    write_str(lockfile_of(live), record);
    CHECK_RC(nfslock_create(live, "m", &lock), EAGAIN);
    CHECK_RC(nfslock_unlock_path(live), EPERM);
    CHECK(file_is(lockfile_of(live), record, strlen(record)));

    /* Half a second off is still the same process (Core's 1 s tolerance). */
    const char *near = tp("near");
    format_start_time(start + 500000, stamp, sizeof stamp);
    make_record(record, sizeof record, this_host(), (long)sleeper, "near", stamp);
    write_str(lockfile_of(near), record);
    CHECK_RC(nfslock_create(near, "m", &lock), EAGAIN);
    CHECK(file_is(lockfile_of(near), record, strlen(record)));

    /* No start time (pre-2018 record): the pid alone decides, and it is alive. */
    const char *old = tp("old");
    make_record(record, sizeof record, this_host(), (long)sleeper, "old", NULL);
    write_str(lockfile_of(old), record);
    CHECK_RC(nfslock_create(old, "m", &lock), EAGAIN);
    CHECK(file_is(lockfile_of(old), record, strlen(record)));

    /* An hour earlier: the pid now belongs to another process, so the owner is dead. */
    const char *reused = tp("reused");
    format_start_time(start - 3600LL * 1000000, stamp, sizeof stamp);
    make_record(record, sizeof record, this_host(), (long)sleeper, "reused", stamp);
    write_str(lockfile_of(reused), record);
    CHECK_RC(nfslock_create(reused, "mine now", &lock), 0);
    int32_t pid = 0;
    char host[256];
    CHECK_RC(nfslock_get_hostname_and_pid(reused, host, sizeof host, &pid), 0);
    CHECK(pid == getpid());
    CHECK_RC(nfslock_unlock(lock), 0);

    /* unlock_path treats it as dead as well. */
    write_str(lockfile_of(reused), record);
    CHECK_RC(nfslock_unlock_path(reused), 0);
    CHECK(!exists(lockfile_of(reused)));

    CHECK(kill(sleeper, 0) == 0); /* nothing happened to the process itself */
    stop_process(sleeper);
}

static void t_never_acts_on_paths_in_records(void)
{
    /* Files a malicious record points at. */
    char victim[PATH_MAX], victim_lock[PATH_MAX];
    snprintf(victim, sizeof victim, "%s", tp("victim"));
    snprintf(victim_lock, sizeof victim_lock, "%s", lockfile_of(victim));
    static const char victim_data[] = "do not touch";
    write_str(victim, victim_data);
    write_str(victim_lock, victim_data);

    /* Our host, a dead pid, and a message naming the victims (and P's own files). */
    const char *p = tp("p");
    char message[3 * PATH_MAX], record[4 * PATH_MAX];
    snprintf(message, sizeof message, "%s %s ../victim %s", victim, victim_lock,
             lockfile_of(victim));
    make_record(record, sizeof record, this_host(), (long)dead_pid(), message, NULL);
    write_str(lockfile_of(p), record);

    nfslock *lock = NULL;
    CHECK_RC(nfslock_create(p, "taken over", &lock), 0);
    CHECK(file_is(victim, victim_data, strlen(victim_data)));
    CHECK(file_is(victim_lock, victim_data, strlen(victim_data)));
    char msg[64];
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
    CHECK_STR(msg, "taken over");
    CHECK_RC(nfslock_unlock(lock), 0);
    CHECK(file_is(victim, victim_data, strlen(victim_data)));
    CHECK(file_is(victim_lock, victim_data, strlen(victim_data)));

    /* Host and message fields that look like paths are just as inert. */
    make_record(record, sizeof record, victim, (long)getpid(), victim_lock, NULL);
    write_str(lockfile_of(p), record);
    CHECK_RC(nfslock_create(p, "m", &lock), EAGAIN); /* another "host" */
    CHECK_RC(nfslock_unlock_path(p), EPERM);
    CHECK(file_is(victim, victim_data, strlen(victim_data)));
    CHECK(file_is(victim_lock, victim_data, strlen(victim_data)));
}

const struct test record_tests[] = {
    {"golden_records_read_back", t_golden_records, 0, 0},
    {"foreign_host_never_broken", t_foreign_host, 0, 0},
    {"stale_after_sigkill", t_stale_after_sigkill, 0, 0},
    {"pid_reuse_start_time", t_pid_reuse, 0, 0},
    {"never_acts_on_paths_in_records", t_never_acts_on_paths_in_records, 0, 0},
    {NULL, NULL, 0, 0},
};
