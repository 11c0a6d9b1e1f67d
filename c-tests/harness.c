/*
 * The test runner: picks tests, runs each one in a forked child with its own temporary
 * directory and an alarm, and prints one line per test and a closing "N passed, N failed".
 *
 * Usage: nfslock-c-harness [--quick] [--list] [--tmpdir DIR] [--timeout-scale N] [NAME...]
 *   --quick           leave out the heavy multi-process stress tests (for valgrind)
 *   --list            print the test names and exit
 *   --tmpdir DIR      where the per-test directories go (default: $TMPDIR, else /tmp)
 *   --timeout-scale N multiply every alarm and time bound by N (slow runs under valgrind)
 *   NAME...           run only these tests (exact names; --quick does not drop named tests)
 */
#include "harness.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char T_DIR[PATH_MAX];
atomic_int t_failures;
int t_time_scale = 1;

static const struct test *const tables[] = {api_tests, error_tests, record_tests,
                                            concurrency_tests, session_tests, fork_tests, lease_tests};

void t_fail(const char *file, int line, const char *fmt, ...)
{
    /* One buffer and one write, so lines from threads and child processes don't interleave. */
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "    %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    buf[n] = '\0';
    fflush(stdout);
    fputs(buf, stdout);
    fflush(stdout);
    atomic_fetch_add(&t_failures, 1);
}

_Noreturn void t_abort(void)
{
    fflush(stdout);
    /* _exit: a broken test must not run its remaining steps through at-exit handlers
     * that could block; the runner removes the test's directory anyway. */
    _exit(1);
}

/* Runs one test in a child; returns 1 when it passed. Prints its result line. */
static int run_one(const struct test *t, const char *base, unsigned scale)
{
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s/nfslock-c-test-XXXXXX", base) >= (int)sizeof dir) {
        printf("FAIL %s: temporary directory name too long\n", t->name);
        return 0;
    }
    if (mkdtemp(dir) == NULL) {
        printf("FAIL %s: mkdtemp %s: %s\n", t->name, dir, strerror(errno));
        return 0;
    }
    unsigned timeout = (t->timeout_s ? t->timeout_s : 30) * scale;
    long long start = now_ms();
    pid_t pid = fork_flushed();
    if (pid < 0) {
        printf("FAIL %s: fork: %s\n", t->name, strerror(errno));
        rm_rf(dir);
        return 0;
    }
    if (pid == 0) {
        /* Own process group: the runner kills whatever the test leaves behind. */
        setpgid(0, 0);
        strcpy(T_DIR, dir);
        if (chdir(T_DIR) != 0)
            _exit(2);
        alarm(timeout);
        t->fn();
        fflush(stdout);
        /* exit(), not _exit(): the library's at-exit release runs as in a real program. */
        exit(atomic_load(&t_failures) ? 1 : 0);
    }
    setpgid(pid, pid); /* also from here: no race with the kill below */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    long long elapsed = now_ms() - start;
    /* Stragglers of the test (helpers it forked) die with their group; as the runner is a
     * child subreaper they become our children, so reap them before removing the dir. */
    kill(-pid, SIGKILL);
    for (long long until = now_ms() + 5000; now_ms() < until;) {
        pid_t p = waitpid(-1, NULL, WNOHANG);
        if (p < 0)
            break; /* ECHILD: nothing left */
        if (p == 0)
            sleep_ms(10);
    }
    rm_rf(dir);

    int passed = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (passed)
        printf("PASS %s (%lld ms)\n", t->name, elapsed);
    else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        printf("FAIL %s: timed out after %u s\n", t->name, timeout);
    else if (WIFSIGNALED(status))
        printf("FAIL %s: killed by signal %d (%s) after %lld ms\n", t->name, WTERMSIG(status),
               strsignal(WTERMSIG(status)), elapsed);
    else
        printf("FAIL %s: exit status %d after %lld ms\n", t->name, WEXITSTATUS(status), elapsed);
    fflush(stdout);
    return passed;
}

static void usage(void)
{
    fprintf(stderr, "usage: nfslock-c-harness [--quick] [--list] [--tmpdir DIR] "
                    "[--timeout-scale N] [TEST...]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int quick = 0, list = 0;
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    char **names = calloc((size_t)argc, sizeof *names);
    size_t n_names = 0;
    if (names == NULL)
        return 2;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--list") == 0)
            list = 1;
        else if (strcmp(argv[i], "--tmpdir") == 0 && i + 1 < argc)
            base = argv[++i];
        else if (strcmp(argv[i], "--timeout-scale") == 0 && i + 1 < argc) {
            t_time_scale = atoi(argv[++i]);
            if (t_time_scale < 1)
                usage();
        } else if (argv[i][0] == '-')
            usage();
        else
            names[n_names++] = argv[i];
    }

    /* Every named test must exist: a typo must not turn into "0 passed, 0 failed". */
    for (size_t k = 0; k < n_names; k++) {
        int found = 0;
        for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
            for (const struct test *t = tables[i]; t->name; t++)
                found |= strcmp(t->name, names[k]) == 0;
        if (!found) {
            fprintf(stderr, "no test named %s (see --list)\n", names[k]);
            return 2;
        }
    }

    /* Orphaned helpers of a test are re-parented to us, so the runner can reap them. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    setvbuf(stdout, NULL, _IOLBF, 0);

    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        for (const struct test *t = tables[i]; t->name; t++) {
            if (n_names > 0) {
                int wanted = 0;
                for (size_t k = 0; k < n_names; k++)
                    wanted |= strcmp(t->name, names[k]) == 0;
                if (!wanted)
                    continue;
            } else if (quick && t->heavy) {
                continue;
            }
            if (list) {
                printf("%s%s\n", t->name, t->heavy ? " (heavy)" : "");
                continue;
            }
            if (run_one(t, base, (unsigned)t_time_scale))
                passed++;
            else
                failed++;
        }
    }
    free(names);
    if (list)
        return 0;
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
