/*
 * The API's ordinary behaviour: create/unlock, the record we write, argument checking
 * (EINVAL everywhere), out-parameters left alone on failure, strerror, version and
 * last_error.
 */
#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <regex.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Checks that `path` is locked by this process with this message, as the API reports it. */
static void check_held_by_me(const char *path, const char *message)
{
    char host[256] = "";
    int32_t pid = -1;
    CHECK_RC(nfslock_get_hostname_and_pid(path, host, sizeof host, &pid), 0);
    CHECK_STR(host, this_host());
    CHECKF(pid == getpid(), "pid %d, expected %d", (int)pid, (int)getpid());
    char msg[1024] = "";
    CHECK_RC(nfslock_get_message(path, msg, sizeof msg), 0);
    CHECK_STR(msg, message);
}

static void t_create_unlock(void)
{
    const char *p = tp("plain");
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_create(p, "first holder", &lock), 0);
    REQUIRE(lock != NULL);
    CHECK(exists(lockfile_of(p)));
    check_held_by_me(p, "first holder");

    /* P is never written: Core's v1 create links P as its lock, so a record in P would
     * name a stale holder in Core's window between its link and its write. */
    CHECK(!exists(p));

    CHECK_RC(nfslock_unlock(lock), 0);
    CHECK(!exists(lockfile_of(p)));
    CHECK(!exists(p));
    CHECK_RC(nfslock_get_message(p, (char[8]){0}, 8), ENOENT);

    /* A P that exists (the caller's file, or Core's) is left exactly as it was. */
    write_str(p, "the caller's own bytes");
    REQUIRE_RC(nfslock_create(p, "holder of an existing P", &lock), 0);
    CHECK(file_is(p, "the caller's own bytes", strlen("the caller's own bytes")));
    CHECK_RC(nfslock_unlock(lock), 0);
    CHECK(file_is(p, "the caller's own bytes", strlen("the caller's own bytes")));
    CHECK(unlink(p) == 0);

    /* The path can be taken again, by the same thread, right away. */
    REQUIRE_RC(nfslock_create(p, "second holder", &lock), 0);
    check_held_by_me(p, "second holder");
    CHECK_RC(nfslock_unlock(lock), 0);
    CHECK(!exists(lockfile_of(p)));
}

static void t_null_message_is_empty(void)
{
    const char *p = tp("nomsg");
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_create(p, NULL, &lock), 0);
    char msg[16] = "untouched";
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
    CHECK_STR(msg, "");
    char *bytes = read_file(lockfile_of(p), NULL);
    CHECKF(bytes != NULL && strstr(bytes, "(message\"\")") != NULL, "record: %s",
           bytes ? bytes : "(unreadable)");
    free(bytes);
    CHECK_RC(nfslock_unlock(lock), 0);

    /* The same through blocking_create and critical_section paths of the API. */
    REQUIRE_RC(nfslock_blocking_create(p, NULL, 0, &lock), 0);
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
    CHECK_STR(msg, "");
    CHECK_RC(nfslock_unlock(lock), 0);
}

/* A message with everything the machine form must quote or escape. */
static const char TRICKY_MESSAGE[] = "say \"hi\" to\tme\nnext line \x80\xff\x7f\x01 ;(x) #| \\ end";

static void t_record_machine_form(void)
{
    const char *p = tp("record");
    /* umask 0: whatever modes we see are the ones the library asked for. */
    umask(0);
    nfslock *lock = NULL;
    REQUIRE_RC(nfslock_create(p, TRICKY_MESSAGE, &lock), 0);

    /* Everything but the start_time value must match an independent encoding. */
    char expected[4096];
    make_record(expected, sizeof expected, this_host(), (long)getpid(), TRICKY_MESSAGE, "@");
    char *at = strchr(expected, '@');
    REQUIRE(at != NULL);
    *at = '\0';
    const char *prefix = expected, *suffix = at + 1;

    size_t len = 0;
    char *got = read_file(lockfile_of(p), &len);
    REQUIRE(got != NULL);
    CHECKF(strlen(got) == len, "record holds a NUL byte (%zu bytes)", len);
    size_t plen = strlen(prefix), slen = strlen(suffix);
    REQUIRE(len > plen + slen);
    CHECKF(memcmp(got, prefix, plen) == 0, "record is\n      %s\n    expected it to begin\n      %s",
           got, prefix);
    CHECKF(memcmp(got + len - slen, suffix, slen) == 0, "record is %s, expected it to end %s", got,
           suffix);
    CHECK(got[len - 1] != '\n'); /* machine form: no trailing newline */

    /* The start time: Core's shape, and this process's start (within Core's 1 s). */
    char stamp[128] = "";
    size_t stamp_len = len - plen - slen;
    if (stamp_len < sizeof stamp)
        memcpy(stamp, got + plen, stamp_len);
    regex_t re;
    REQUIRE(regcomp(&re,
                    "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$",
                    REG_EXTENDED | REG_NOSUB) == 0);
    CHECKF(regexec(&re, stamp, 0, NULL, 0) == 0, "start_time \"%s\" has the wrong shape", stamp);
    regfree(&re);
    struct tm tm = {0};
    int usec = 0;
    if (sscanf(stamp, "%d-%d-%d %d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &usec) == 7) {
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        long long written = (long long)timegm(&tm) * 1000000LL + usec;
        long long actual = proc_start_us(getpid());
        long long diff = written > actual ? written - actual : actual - written;
        CHECKF(actual > 0 && diff < 1000000, "start_time %s is %lld us away from ours", stamp,
               diff);
    }

    /* P is not written at all (see t_create_unlock). */
    CHECK(!exists(p));

    /* No file the library created may be group or world writable. */
    struct stat st;
    CHECK(lstat(lockfile_of(p), &st) == 0 && S_ISREG(st.st_mode));
    CHECKF((st.st_mode & 0022) == 0, "P.nfs_lock mode %o", (unsigned)(st.st_mode & 07777));
    DIR *d = opendir(T_DIR);
    REQUIRE(d != NULL);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.' && strncmp(e->d_name, ".nfslock-", 9) != 0)
            continue;
        CHECK(lstat(tp(e->d_name), &st) == 0);
        CHECKF((st.st_mode & 0022) == 0, "%s has mode %o", e->d_name,
               (unsigned)(st.st_mode & 07777));
    }
    closedir(d);

    /* Reading it back through the API gives the message byte for byte. */
    char msg[256];
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), 0);
    CHECK_STR(msg, TRICKY_MESSAGE);
    CHECK_RC(nfslock_unlock(lock), 0);
    free(got);
}

static int never_called(void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

static void t_einval_everywhere(void)
{
    const char *p = tp("x");
    nfslock *lock = NULL;
    char buf[64];
    int32_t pid = 0;
    int calls = 0, result = 0;

    CHECK_RC(nfslock_create(NULL, "m", &lock), EINVAL);
    CHECK_RC(nfslock_create("", "m", &lock), EINVAL);
    CHECK_RC(nfslock_create(p, "m", NULL), EINVAL);
    /* A create that could not hand out its handle must not leave a lock behind. */
    CHECK(!exists(lockfile_of(p)));

    CHECK_RC(nfslock_blocking_create(NULL, "m", 100, &lock), EINVAL);
    CHECK_RC(nfslock_blocking_create("", "m", 100, &lock), EINVAL);
    CHECK_RC(nfslock_blocking_create(p, "m", 100, NULL), EINVAL);
    CHECK_RC(nfslock_blocking_create(p, "m", -1, NULL), EINVAL);
    CHECK(!exists(lockfile_of(p)));

    CHECK_RC(nfslock_unlock(NULL), EINVAL);
    CHECK_RC(nfslock_unlock_path(NULL), EINVAL);
    CHECK_RC(nfslock_unlock_path(""), EINVAL);

    CHECK_RC(nfslock_get_hostname_and_pid(NULL, buf, sizeof buf, &pid), EINVAL);
    CHECK_RC(nfslock_get_hostname_and_pid("", buf, sizeof buf, &pid), EINVAL);
    CHECK_RC(nfslock_get_message(NULL, buf, sizeof buf), EINVAL);
    CHECK_RC(nfslock_get_message("", buf, sizeof buf), EINVAL);

    CHECK_RC(nfslock_critical_section(NULL, "m", 100, never_called, &calls, &result), EINVAL);
    CHECK_RC(nfslock_critical_section("", "m", 100, never_called, &calls, &result), EINVAL);
    CHECK_RC(nfslock_critical_section(p, "m", 100, NULL, &calls, &result), EINVAL);
    CHECK_RC(nfslock_critical_section(p, "m", 100, never_called, &calls, NULL), EINVAL);
    CHECK(calls == 0);
    CHECK(!exists(lockfile_of(p)));

    /* NULL buffers and out-pointers, on a path that is really locked (so the NULL is the
     * only thing wrong). */
    REQUIRE_RC(nfslock_create(p, "m", &lock), 0);
    CHECK_RC(nfslock_get_hostname_and_pid(p, NULL, sizeof buf, &pid), EINVAL);
    CHECK_RC(nfslock_get_hostname_and_pid(p, NULL, 0, &pid), EINVAL);
    CHECK_RC(nfslock_get_hostname_and_pid(p, buf, sizeof buf, NULL), EINVAL);
    CHECK_RC(nfslock_get_message(p, NULL, sizeof buf), EINVAL);
    CHECK_RC(nfslock_get_message(p, NULL, 0), EINVAL);
    CHECK_RC(nfslock_unlock(lock), 0);
}

static void t_out_params_untouched(void)
{
    const char *p = tp("held");
    nfslock *mine = NULL;
    REQUIRE_RC(nfslock_create(p, "m", &mine), 0);

    /* A failed create/blocking_create leaves *lock_out as it was (EDEADLK here). */
    int marker;
    nfslock *const sentinel = (nfslock *)(void *)&marker;
    nfslock *out = sentinel;
    CHECK_RC(nfslock_create(p, "again", &out), EDEADLK);
    CHECK(out == sentinel);
    CHECK_RC(nfslock_blocking_create(p, "again", 0, &out), EDEADLK);
    CHECK(out == sentinel);
    CHECK_RC(nfslock_unlock(mine), 0);

    /* Failed reads leave the buffers and *pid_out alone (ENOENT: not locked). */
    char host[32], msg[32];
    memset(host, 'Z', sizeof host);
    memset(msg, 'Z', sizeof msg);
    int32_t pid = -12345;
    CHECK_RC(nfslock_get_hostname_and_pid(p, host, sizeof host, &pid), ENOENT);
    CHECK_RC(nfslock_get_message(p, msg, sizeof msg), ENOENT);
    int untouched = 1;
    for (size_t i = 0; i < sizeof host; i++)
        untouched &= host[i] == 'Z' && msg[i] == 'Z';
    CHECK(untouched);
    CHECK(pid == -12345);

    /* critical_section that fails to lock leaves *f_result alone. */
    int calls = 0, result = -777;
    CHECK_RC(nfslock_critical_section(tp("missing-dir/x"), "m", 0, never_called, &calls, &result),
             ENOENT);
    CHECK(calls == 0);
    CHECK(result == -777);
}

static void t_strerror(void)
{
    static const int codes[] = {EINVAL, ENOENT, ENAMETOOLONG, EACCES, EPERM,  EROFS, ELOOP,
                                EBADMSG, ERANGE, EAGAIN,      ETIMEDOUT, EDEADLK, ENOLCK};
    const size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *s = nfslock_strerror(codes[i]);
        CHECKF(s != NULL && *s != '\0', "strerror(%s) is empty or NULL", errname(codes[i]));
        /* Static text: asking again gives the same text. */
        const char *again = nfslock_strerror(codes[i]);
        CHECKF(s && again && strcmp(s, again) == 0, "strerror(%s) changed", errname(codes[i]));
        /* Each code the API returns reads differently: a caller prints them to users. */
        for (size_t j = 0; j < i && s; j++) {
            const char *t = nfslock_strerror(codes[j]);
            CHECKF(t == NULL || strcmp(s, t) != 0, "strerror(%s) == strerror(%s) == \"%s\"",
                   errname(codes[i]), errname(codes[j]), s);
        }
    }
    static const int odd[] = {0, 99999, -1, INT_MIN, INT_MAX, 255, 4096};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        const char *s = nfslock_strerror(odd[i]);
        CHECKF(s != NULL && *s != '\0', "strerror(%d) is empty or NULL", odd[i]);
    }
}

static void t_version(void)
{
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", (int)NFSLOCK_VERSION_MAJOR,
             (int)NFSLOCK_VERSION_MINOR, (int)NFSLOCK_VERSION_PATCH);
    CHECK_STR(nfslock_version(), want);
#ifdef NFSLOCK_EXPECTED_VERSION
    /* Passed in by tests/c_harness.rs from Cargo.toml's version. */
    CHECK_STR(nfslock_version(), NFSLOCK_EXPECTED_VERSION);
#endif
    CHECK_STR(NFSLOCK_VERSION_STRING, want);
    CHECK(NFSLOCK_VERSION == NFSLOCK_VERSION_MAJOR * 10000 + NFSLOCK_VERSION_MINOR * 100 +
                                NFSLOCK_VERSION_PATCH);
}

/* The compile-time macro, usable in #if, and the run-time check against the library. */
#if !NFSLOCK_VERSION_AT_LEAST(0, 1, 0) || NFSLOCK_VERSION_AT_LEAST(99, 0, 0)
#error "NFSLOCK_VERSION_AT_LEAST disagrees with NFSLOCK_VERSION"
#endif

static void t_version_check(void)
{
    CHECK(NFSLOCK_VERSION_AT_LEAST(NFSLOCK_VERSION_MAJOR, NFSLOCK_VERSION_MINOR,
                                   NFSLOCK_VERSION_PATCH));
    CHECK(!NFSLOCK_VERSION_AT_LEAST(NFSLOCK_VERSION_MAJOR, NFSLOCK_VERSION_MINOR,
                                    NFSLOCK_VERSION_PATCH + 1));
    CHECK(NFSLOCK_VERSION_AT_LEAST(0, 0, 99));
    CHECK_RC(NFSLOCK_VERSION_CHECK(), 0);
    /* An older header of the same series is served; a newer one, or another series, not. */
    if (NFSLOCK_VERSION_PATCH > 0)
        CHECK_RC(nfslock_version_check(NFSLOCK_VERSION_MAJOR, NFSLOCK_VERSION_MINOR, 0), 0);
    CHECK_RC(nfslock_version_check(NFSLOCK_VERSION_MAJOR, NFSLOCK_VERSION_MINOR,
                                   NFSLOCK_VERSION_PATCH + 1),
             ENOTSUP);
    CHECKF(strstr(nfslock_last_error(), NFSLOCK_VERSION_STRING) != NULL,
           "last_error \"%s\" does not name this library's version", nfslock_last_error());
    CHECK_RC(nfslock_version_check(NFSLOCK_VERSION_MAJOR, NFSLOCK_VERSION_MINOR + 1, 0), ENOTSUP);
    CHECK_RC(nfslock_version_check(NFSLOCK_VERSION_MAJOR + 1, 0, 0), ENOTSUP);
    if (NFSLOCK_VERSION_MAJOR == 0 && NFSLOCK_VERSION_MINOR > 0)
        CHECK_RC(nfslock_version_check(0, NFSLOCK_VERSION_MINOR - 1, 0), ENOTSUP);
    CHECK_RC(nfslock_version_check(-1, 0, 0), EINVAL);
    CHECK_RC(nfslock_version_check(0, 0, -1), EINVAL);
    CHECK(strcmp(nfslock_strerror(ENOTSUP), "unknown error code") != 0);
}

/* Checks that the last error text is non-empty and names `path`. */
static void check_last_error_names(const char *path, const char *what)
{
    const char *e = nfslock_last_error();
    CHECKF(e != NULL && *e != '\0', "after %s, last_error is empty", what);
    CHECKF(e == NULL || strstr(e, path) != NULL, "after %s, last_error \"%s\" does not name %s",
           what, e ? e : "(null)", path);
}

struct other_thread_error {
    const char *path;
    int rc;
    char seen_before[1024];
    int had_text_before;
};

static void *fail_in_other_thread(void *arg)
{
    struct other_thread_error *o = arg;
    /* A new thread has not failed yet: it must not see the main thread's text. */
    const char *e = nfslock_last_error();
    o->had_text_before = e != NULL && *e != '\0';
    snprintf(o->seen_before, sizeof o->seen_before, "%s", e ? e : "");
    nfslock *lock = NULL;
    o->rc = nfslock_create(o->path, "m", &lock);
    return NULL;
}

static void t_last_error(void)
{
    nfslock *lock = NULL;
    const char *missing = tp("no-such-dir/file");
    CHECK_RC(nfslock_create(missing, "m", &lock), ENOENT);
    check_last_error_names(missing, "create ENOENT");

    const char *p = tp("held");
    REQUIRE_RC(nfslock_create(p, "m", &lock), 0);
    nfslock *second = NULL;
    CHECK_RC(nfslock_create(p, "m", &second), EDEADLK);
    check_last_error_names(p, "create EDEADLK");
    CHECK_RC(nfslock_unlock(lock), 0);

    const char *bad = tp("corrupt");
    write_str(lockfile_of(bad), "this is not a record");
    char msg[64];
    CHECK_RC(nfslock_get_message(bad, msg, sizeof msg), EBADMSG);
    check_last_error_names(bad, "get_message EBADMSG");
    CHECK_RC(nfslock_unlock_path(tp("unlocked")), ENOENT);
    check_last_error_names(tp("unlocked"), "unlock_path ENOENT");

    /* Thread-local: another thread's failure does not replace ours, nor sees it. */
    CHECK_RC(nfslock_create(missing, "m", &lock), ENOENT);
    struct other_thread_error o = {.path = tp("other-missing/file"), .rc = -1};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, fail_in_other_thread, &o) == 0);
    pthread_join(th, NULL);
    CHECK_RC(o.rc, ENOENT);
    CHECKF(strstr(o.seen_before, missing) == NULL,
           "a fresh thread sees the main thread's last error \"%s\"", o.seen_before);
    check_last_error_names(missing, "another thread's failure");
}

static int count_and_answer(void *ctx)
{
    int *calls = ctx;
    (*calls)++;
    return 42;
}

struct cs_probe {
    const char *path;
    int calls;
    int held_inside; /* the lock was held by us while f ran */
};

static int probe_inside(void *ctx)
{
    struct cs_probe *c = ctx;
    c->calls++;
    char host[256];
    int32_t pid = 0;
    c->held_inside = nfslock_get_hostname_and_pid(c->path, host, sizeof host, &pid) == 0 &&
                     pid == getpid() && strcmp(host, this_host()) == 0;
    return -7;
}

static void t_critical_section(void)
{
    const char *p = tp("cs");
    int calls = 0, result = 0;
    CHECK_RC(nfslock_critical_section(p, "cs message", -1, count_and_answer, &calls, &result), 0);
    CHECK(calls == 1);
    CHECK(result == 42);
    CHECK(!exists(lockfile_of(p)));

    struct cs_probe probe = {.path = p};
    CHECK_RC(nfslock_critical_section(p, NULL, 1000, probe_inside, &probe, &result), 0);
    CHECK(probe.calls == 1);
    CHECK(probe.held_inside);
    CHECK(result == -7);
    CHECK(!exists(lockfile_of(p)));

    /* The lock can be taken normally afterwards. */
    nfslock *lock = NULL;
    CHECK_RC(nfslock_create(p, "m", &lock), 0);
    CHECK_RC(nfslock_unlock(lock), 0);
}

const struct test api_tests[] = {
    {"create_unlock", t_create_unlock, 0, 0},
    {"null_message_is_empty", t_null_message_is_empty, 0, 0},
    {"record_machine_form", t_record_machine_form, 0, 0},
    {"einval_everywhere", t_einval_everywhere, 0, 0},
    {"out_params_untouched", t_out_params_untouched, 0, 0},
    {"strerror_every_code", t_strerror, 0, 0},
    {"version_matches_macros", t_version, 0, 0},
    {"version_check", t_version_check, 0, 0},
    {"last_error_names_path", t_last_error, 0, 0},
    {"critical_section_runs_f", t_critical_section, 0, 0},
    {NULL, NULL, 0, 0},
};
