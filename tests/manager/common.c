/*
 * What tests/manager/shm.c and tests/manager/dir.c share (#included by both, not built by
 * itself): reporting, timing, child processes of this program (fork + exec of
 * /proc/self/exe) that talk through pipes, and the two kinds of worker modes:
 *
 *   worker shm NAME N OP...      opens the segment NAME (count N), runs the OPs in order
 *   worker dir DIR OP...         opens the manager directory DIR, runs the OPs in order
 *   count shm NAME N ID FILE CYCLES / count dir DIR ID FILE CYCLES
 *                                the counter worker (see count_main)
 *
 * A worker prints one line per OP it ran, "<op> <result>" (result: 0, an errno name, or
 * for "held" the ids), so that the parent can check each step:
 *   lock:ID  unlock:ID  try:ID (timedlock 0)  timed:ID:MS  lease:MS  alloc  close  held
 *   say:WORD  (prints WORD)   wait (reads one line from stdin; exits at EOF)
 *   pause (waits for stdin's EOF, then exits without unlocking anything)
 *   sleep:MS
 * The first line is "open 0" (or "open <errno>", then it exits 1).
 *
 * Every check prints "FAIL file:line: ..." when it fails, and main prints "ok" or
 * "failed" at the end; the exit status is 0 only when no check failed.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nfslock.h"

#define UNUSED __attribute__((unused))

/* Messages and paths are cut at their buffers' sizes on purpose (never past PATH_MAX). */
#pragma GCC diagnostic ignored "-Wformat-truncation"

static int failures;

static UNUSED void fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static UNUSED void fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL %s:%d: ", file, line);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    failures++;
}

#define CHECKF(cond, ...)                                                                   \
    do {                                                                                    \
        if (!(cond))                                                                        \
            fail(__FILE__, __LINE__, __VA_ARGS__);                                          \
    } while (0)

static UNUSED const char *en(int code) {
    if (code == 0)
        return "0";
    const char *name = strerrorname_np(code);
    return name ? name : "unknown";
}

/* rc must be `want`; says which call, what it returned and what the library said. */
#define EXPECT_RC(rc, want, ...)                                                            \
    do {                                                                                    \
        int rc_ = (rc), want_ = (want);                                                     \
        if (rc_ != want_) {                                                                 \
            char what_[512];                                                                \
            snprintf(what_, sizeof what_, __VA_ARGS__);                                     \
            fail(__FILE__, __LINE__, "%s: got %s (%d), want %s; last error: %s", what_,     \
                 en(rc_), rc_, en(want_), rc_ != 0 ? nfslock_last_error() : "-");           \
        }                                                                                   \
    } while (0)

static UNUSED void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static UNUSED void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static UNUSED double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static UNUSED void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static UNUSED int finish(void) {
    printf("%s\n", failures ? "failed" : "ok");
    fflush(stdout);
    return failures ? 1 : 0;
}

/* ---- child processes of this program ---------------------------------------------- */

struct proc {
    pid_t pid;
    int to;   /* the child's stdin */
    int from; /* the child's stdout */
    char buf[4096];
    size_t have;
    int reaped;
    int status;
};

/* Starts `/proc/self/exe args...` (NULL-terminated) with pipes on its stdin and stdout
 * (its stderr is ours). 0, or -1 with a FAIL printed. */
static UNUSED int spawn_argv(struct proc *p, char *const argv[]) {
    int in[2], out[2];
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->to = p->from = -1;
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        fail(__FILE__, __LINE__, "pipe2: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execv("/proc/self/exe", argv);
        fprintf(stderr, "execv /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->pid = pid;
    p->to = in[1];
    p->from = out[0];
    return 0;
}

#define MAX_ARGS 64
static UNUSED int spawn(struct proc *p, const char *first, ...) {
    char *argv[MAX_ARGS + 2];
    int n = 0;
    argv[n++] = (char *)"nfslock-manager-test";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && n < MAX_ARGS; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    return spawn_argv(p, argv);
}

/* The child's next line (without the newline) within timeout_ms: 0, or -1 at EOF or
 * timeout (line then says which). */
static UNUSED int proc_line(struct proc *p, char *line, size_t len, int timeout_ms) {
    double deadline = now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->have);
        if (nl != NULL) {
            size_t n = (size_t)(nl - p->buf);
            size_t copy = n < len - 1 ? n : len - 1;
            memcpy(line, p->buf, copy);
            line[copy] = 0;
            memmove(p->buf, nl + 1, p->have - n - 1);
            p->have -= n + 1;
            return 0;
        }
        int left = (int)(deadline - now_ms());
        if (left <= 0 || p->from < 0) {
            snprintf(line, len, "(no line within %d ms)", timeout_ms);
            return -1;
        }
        struct pollfd pfd = {p->from, POLLIN, 0};
        int r = poll(&pfd, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        ssize_t got = read(p->from, p->buf + p->have, sizeof p->buf - p->have - 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            snprintf(line, len, "(the child closed its output: %s)", got == 0 ? "EOF" : strerror(errno));
            return -1;
        }
        p->have += (size_t)got;
        if (p->have >= sizeof p->buf - 1) {
            snprintf(line, len, "(a line longer than %zu bytes)", sizeof p->buf);
            return -1;
        }
    }
}

/* The child's next line must be `want` (within timeout_ms); reports what came instead. */
#define EXPECT_LINE(p, want, timeout_ms) expect_line(__FILE__, __LINE__, (p), (want), (timeout_ms))
static UNUSED int expect_line(const char *file, int line, struct proc *p, const char *want, int timeout_ms) {
    char got[1024];
    int r = proc_line(p, got, sizeof got, timeout_ms);
    if (r != 0 || strcmp(got, want) != 0) {
        fail(file, line, "child %d: expected the line \"%s\", got \"%s\"", (int)p->pid, want, got);
        return -1;
    }
    return 0;
}

static UNUSED void proc_send(struct proc *p, const char *line) {
    size_t n = strlen(line);
    if (p->to >= 0 && write(p->to, line, n) != (ssize_t)n)
        fail(__FILE__, __LINE__, "writing to child %d: %s", (int)p->pid, strerror(errno));
}

static UNUSED void proc_close_input(struct proc *p) {
    if (p->to >= 0)
        close(p->to);
    p->to = -1;
}

/* Waits up to timeout_ms for the child's end (SIGKILL after that); its wait status, or -1
 * when it had to be killed. */
static UNUSED int proc_wait(struct proc *p, int timeout_ms) {
    if (p->pid <= 0)
        return -1;
    if (p->reaped)
        return p->status;
    double deadline = now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->reaped = 1;
            p->status = st;
            return st;
        }
        if (now_ms() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            p->reaped = 1;
            p->status = -1;
            return -1;
        }
        sleep_ms(2);
    }
}

static UNUSED void proc_kill(struct proc *p) {
    if (p->pid > 0 && !p->reaped) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &p->status, 0);
        p->reaped = 1;
    }
}

static UNUSED void proc_free(struct proc *p) {
    proc_kill(p);
    proc_close_input(p);
    if (p->from >= 0)
        close(p->from);
    p->from = -1;
}

static UNUSED const char *describe_status(int st, char *buf, size_t len) {
    if (st == -1)
        snprintf(buf, len, "still running at its deadline (killed)");
    else if (WIFEXITED(st))
        snprintf(buf, len, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
                 WCOREDUMP(st) ? ", core dumped" : "");
    else
        snprintf(buf, len, "wait status %#x", st);
    return buf;
}

/* The child must end with exit status 0 within timeout_ms. */
#define EXPECT_EXIT0(p, timeout_ms)                                                          \
    do {                                                                                    \
        int st_ = proc_wait((p), (timeout_ms));                                             \
        char d_[128];                                                                       \
        CHECKF(st_ != -1 && WIFEXITED(st_) && WEXITSTATUS(st_) == 0, "child %d: %s",         \
               (int)(p)->pid, describe_status(st_, d_, sizeof d_));                         \
    } while (0)

/* ---- the manager of a worker's command line ---------------------------------------- */

/* argv: "shm NAME N ..." or "dir DIR ...": opens it; how many arguments it took. */
static UNUSED int open_backend(char **argv, int argc, nfslock_manager **m, int *rc) {
    if (argc >= 3 && strcmp(argv[0], "shm") == 0) {
        *rc = nfslock_manager_open_shm(argv[1], (uint32_t)strtoul(argv[2], NULL, 10), m);
        return 3;
    }
    if (argc >= 2 && strcmp(argv[0], "dir") == 0) {
        *rc = nfslock_manager_open_dir(argv[1], m);
        return 2;
    }
    *rc = EINVAL;
    return argc;
}

static UNUSED void out_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static UNUSED void out_line(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

/* Reads one line from stdin: 0, or -1 at EOF. */
static UNUSED int read_stdin_line(void) {
    char c;
    for (;;) {
        ssize_t r = read(0, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (c == '\n')
            return 0;
    }
}

static UNUSED int worker_main(int argc, char **argv) {
    alarm(120);
    nfslock_manager *m = NULL;
    int rc;
    int used = open_backend(argv, argc, &m, &rc);
    out_line("open %s", en(rc));
    if (rc != 0) {
        fprintf(stderr, "worker: open: %s\n", nfslock_last_error());
        return 1;
    }
    for (int i = used; i < argc; i++) {
        const char *op = argv[i];
        unsigned id = 0;
        int ms = 0;
        if (sscanf(op, "lock:%u", &id) == 1) {
            out_line("%s %s", op, en(nfslock_manager_lock(m, id)));
        } else if (sscanf(op, "unlock:%u", &id) == 1) {
            out_line("%s %s", op, en(nfslock_manager_unlock(m, id)));
        } else if (sscanf(op, "try:%u", &id) == 1) {
            out_line("%s %s", op, en(nfslock_manager_timedlock(m, id, 0)));
        } else if (sscanf(op, "timed:%u:%d", &id, &ms) == 2) {
            out_line("%s %s", op, en(nfslock_manager_timedlock(m, id, ms)));
        } else if (sscanf(op, "lease:%d", &ms) == 1) {
            out_line("%s %s", op, en(nfslock_manager_set_lease_ms(m, (uint32_t)ms)));
        } else if (strcmp(op, "alloc") == 0) {
            uint32_t got = 0;
            int r = nfslock_manager_allocate(m, &got);
            if (r == 0)
                out_line("%s %u", op, got);
            else
                out_line("%s %s", op, en(r));
        } else if (strcmp(op, "close") == 0) {
            out_line("%s %s", op, en(nfslock_manager_close(m)));
            m = NULL;
        } else if (strcmp(op, "held") == 0) {
            uint32_t ids[64];
            size_t n = 0;
            int r = nfslock_manager_locks_held(m, ids, 64, &n);
            char buf[1024] = "";
            for (size_t k = 0; r == 0 && k < n; k++)
                snprintf(buf + strlen(buf), sizeof buf - strlen(buf), " %u", ids[k]);
            out_line("%s %s%s", op, en(r), buf);
        } else if (strncmp(op, "say:", 4) == 0) {
            out_line("%s", op + 4);
        } else if (strcmp(op, "wait") == 0) {
            if (read_stdin_line() != 0)
                return 0;
        } else if (strcmp(op, "pause") == 0) {
            while (read_stdin_line() == 0)
                ;
            _exit(0);
        } else if (sscanf(op, "sleep:%d", &ms) == 1) {
            sleep_ms(ms);
        } else {
            out_line("bad-op %s", op);
            return 2;
        }
    }
    if (m != NULL)
        nfslock_manager_close(m);
    return 0;
}

/* The shared counter of the exclusion checks: a file every worker maps. */
struct counter {
    volatile uint64_t value;  /* incremented with a plain load and store under the lock */
    volatile int32_t inside;  /* pid of the worker inside, 0 when none */
    volatile uint32_t overlaps; /* times a worker found another one inside */
    volatile uint32_t errors; /* lock or unlock calls that did not return 0 */
    volatile uint32_t recovered; /* crash loop: a dead holder's critical section taken over */
};

/*
 * count BACKEND... ID FILE CYCLES: maps FILE, prints "R", waits for a line on stdin, then
 * CYCLES times: lock ID; check nobody is inside; read the counter, spin a little (so that
 * unexcluded workers would lose updates), write it + 1; unlock. Prints "D <errors>" at the
 * end (with the first failure's text on stderr).
 */
static UNUSED int count_main(int argc, char **argv) {
    alarm(300);
    nfslock_manager *m = NULL;
    int rc;
    int used = open_backend(argv, argc, &m, &rc);
    if (rc != 0) {
        out_line("open %s", en(rc));
        fprintf(stderr, "count: open: %s\n", nfslock_last_error());
        return 1;
    }
    if (argc - used != 3) {
        out_line("usage");
        return 2;
    }
    uint32_t id = (uint32_t)strtoul(argv[used], NULL, 10);
    const char *file = argv[used + 1];
    long cycles = strtol(argv[used + 2], NULL, 10);
    int fd = open(file, O_RDWR);
    struct counter *c = fd < 0 ? MAP_FAILED : mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (c == MAP_FAILED) {
        out_line("map %s", strerror(errno));
        return 1;
    }
    int me = (int)getpid();
    out_line("R");
    if (read_stdin_line() != 0)
        return 1;
    unsigned errors = 0;
    /* cycles < 0: until killed (the crash loop), and a dead holder's leftovers are
     * expected: EOWNERDEAD is the normal answer after one (repair: clear `inside`), and
     * `inside` naming a dead process is its leftover, not an overlap. */
    int crash = cycles < 0;
    for (long i = 0; crash || i < cycles; i++) {
        int r = nfslock_manager_lock(m, id);
        if (r == EOWNERDEAD && crash) {
            c->inside = 0;
            __atomic_fetch_add(&c->recovered, 1, __ATOMIC_SEQ_CST);
        } else if (r != 0) {
            if (errors++ == 0)
                fprintf(stderr, "count %d: lock %u cycle %ld: %s: %s\n", me, id, i, en(r), nfslock_last_error());
            __atomic_fetch_add(&c->errors, 1, __ATOMIC_SEQ_CST);
            if (r != EOWNERDEAD)
                continue;
        }
        if (crash && c->inside != 0 && kill(c->inside, 0) != 0 && errno == ESRCH) {
            c->inside = 0;
            __atomic_fetch_add(&c->recovered, 1, __ATOMIC_SEQ_CST);
        }
        if (c->inside != 0)
            __atomic_fetch_add(&c->overlaps, 1, __ATOMIC_SEQ_CST);
        c->inside = me;
        uint64_t v = c->value;
        for (volatile int spin = 0; spin < 200; spin++)
            ;
        c->value = v + 1;
        if (c->inside != me)
            __atomic_fetch_add(&c->overlaps, 1, __ATOMIC_SEQ_CST);
        c->inside = 0;
        r = nfslock_manager_unlock(m, id);
        if (r != 0) {
            if (errors++ == 0)
                fprintf(stderr, "count %d: unlock %u cycle %ld: %s: %s\n", me, id, i, en(r), nfslock_last_error());
            __atomic_fetch_add(&c->errors, 1, __ATOMIC_SEQ_CST);
        }
    }
    nfslock_manager_close(m);
    out_line("D %u", errors);
    return errors ? 1 : 0;
}

/*
 * The parent of the exclusion checks: NPROC count workers on the BACKEND words (NULL-
 * terminated, e.g. {"shm", name, "64", NULL}), lock ID, CYCLES each, the counter in
 * DIR/counter. Checks the exact total, no overlap, no error; prints the time taken.
 */
static UNUSED void run_counter(const char *const backend[], const char *dir, unsigned id, long cycles,
                               int nproc, int limit_ms) {
    char file[PATH_MAX], idbuf[16], cyc[32];
    snprintf(file, sizeof file, "%s/counter", dir);
    snprintf(idbuf, sizeof idbuf, "%u", id);
    snprintf(cyc, sizeof cyc, "%ld", cycles);
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4096) != 0) {
        fail(__FILE__, __LINE__, "create %s: %s", file, strerror(errno));
        return;
    }
    struct counter *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (c == MAP_FAILED) {
        fail(__FILE__, __LINE__, "mmap %s: %s", file, strerror(errno));
        return;
    }
    struct proc procs[8];
    int started = 0;
    for (int i = 0; i < nproc; i++) {
        char *argv[16];
        int n = 0;
        argv[n++] = (char *)"nfslock-manager-test";
        argv[n++] = (char *)"count";
        for (int k = 0; backend[k] != NULL; k++)
            argv[n++] = (char *)backend[k];
        argv[n++] = idbuf;
        argv[n++] = file;
        argv[n++] = cyc;
        argv[n] = NULL;
        if (spawn_argv(&procs[i], argv) != 0)
            break;
        started++;
    }
    for (int i = 0; i < started; i++)
        EXPECT_LINE(&procs[i], "R", 20000);
    double t0 = now_ms();
    for (int i = 0; i < started; i++)
        proc_send(&procs[i], "go\n");
    for (int i = 0; i < started; i++) {
        int left = limit_ms - (int)(now_ms() - t0);
        EXPECT_EXIT0(&procs[i], left > 0 ? left : 1);
    }
    double took = now_ms() - t0;
    for (int i = 0; i < started; i++)
        proc_free(&procs[i]);
    uint64_t want = (uint64_t)nproc * (uint64_t)cycles;
    note("%d processes x %ld lock/unlock cycles on id %u: counter %llu of %llu, %u overlaps, %u errors, "
         "%.0f ms (%.1f us per cycle)",
         nproc, cycles, id, (unsigned long long)c->value, (unsigned long long)want, c->overlaps, c->errors,
         took, took * 1000.0 / (double)want);
    CHECKF(started == nproc, "only %d of %d workers started", started, nproc);
    CHECKF(c->value == want, "the counter is %llu, want exactly %llu: %llu updates lost (no mutual exclusion)",
           (unsigned long long)c->value, (unsigned long long)want, (unsigned long long)(want - c->value));
    CHECKF(c->overlaps == 0, "%u times a worker found another one inside the critical section", c->overlaps);
    CHECKF(c->errors == 0, "%u lock/unlock calls failed (first on stderr)", c->errors);
    CHECKF(took < limit_ms, "took %.0f ms, over the %d ms bound", took, limit_ms);
    munmap(c, sizeof *c);
}

/* The ids a locks_held or allocated call returned, as text. */
static UNUSED const char *ids_text(const uint32_t *ids, size_t n, char *buf, size_t len) {
    buf[0] = 0;
    for (size_t i = 0; i < n && strlen(buf) + 16 < len; i++)
        snprintf(buf + strlen(buf), len - strlen(buf), "%s%u", i ? " " : "", ids[i]);
    if (n == 0)
        snprintf(buf, len, "(none)");
    return buf;
}

static UNUSED int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* locks_held must be exactly `want` (n ids, ascending), in any order. */
#define EXPECT_HELD(m, ...) expect_ids(__FILE__, __LINE__, (m), 1, __VA_ARGS__)
#define EXPECT_ALLOCATED(m, ...) expect_ids(__FILE__, __LINE__, (m), 0, __VA_ARGS__)
static UNUSED void expect_ids(const char *file, int line, nfslock_manager *m, int held, const char *what,
                              const uint32_t *want, size_t nwant) {
    uint32_t got[1024];
    size_t n = 12345;
    int rc = held ? nfslock_manager_locks_held(m, got, 1024, &n) : nfslock_manager_allocated(m, got, 1024, &n);
    if (rc != 0) {
        fail(file, line, "%s: %s returned %s: %s", what, held ? "locks_held" : "allocated", en(rc),
             nfslock_last_error());
        return;
    }
    char a[4096], b[4096];
    if (n > 1024) {
        fail(file, line, "%s: %s said %zu ids with a 1024-id buffer", what, held ? "locks_held" : "allocated", n);
        return;
    }
    int ascending = 1;
    for (size_t i = 1; i < n; i++)
        if (got[i - 1] >= got[i])
            ascending = 0;
    if (!held && !ascending)
        fail(file, line, "%s: allocated is not in ascending order: %s", what, ids_text(got, n, a, sizeof a));
    qsort(got, n, sizeof got[0], cmp_u32);
    int same = n == nwant;
    for (size_t i = 0; same && i < n; i++)
        same = got[i] == want[i];
    if (!same)
        fail(file, line, "%s: %s is {%s}, want {%s}", what, held ? "locks_held" : "allocated",
             ids_text(got, n, a, sizeof a), ids_text(want, nwant, b, sizeof b));
}

#define IDS(...) (const uint32_t[]){__VA_ARGS__}, sizeof((const uint32_t[]){__VA_ARGS__}) / sizeof(uint32_t)
#define NO_IDS (const uint32_t *)NULL, 0

/* ---- in-process threads on one handle ----------------------------------------------- */

struct thread_counter {
    nfslock_manager *m;
    uint32_t id;
    long cycles;
    volatile uint64_t *value;
    volatile int *inside;
    volatile uint32_t *overlaps;
    volatile uint32_t *errors;
    int first_rc;
};

static UNUSED void *thread_counter_main(void *arg) {
    struct thread_counter *t = arg;
    for (long i = 0; i < t->cycles; i++) {
        int r = nfslock_manager_lock(t->m, t->id);
        if (r != 0) {
            if (t->first_rc == 0)
                t->first_rc = r;
            __atomic_fetch_add(t->errors, 1, __ATOMIC_SEQ_CST);
            continue;
        }
        if (__atomic_exchange_n(t->inside, 1, __ATOMIC_SEQ_CST) != 0)
            __atomic_fetch_add(t->overlaps, 1, __ATOMIC_SEQ_CST);
        uint64_t v = *t->value;
        for (volatile int spin = 0; spin < 200; spin++)
            ;
        *t->value = v + 1;
        __atomic_store_n(t->inside, 0, __ATOMIC_SEQ_CST);
        r = nfslock_manager_unlock(t->m, t->id);
        if (r != 0) {
            if (t->first_rc == 0)
                t->first_rc = r;
            __atomic_fetch_add(t->errors, 1, __ATOMIC_SEQ_CST);
        }
    }
    return NULL;
}

/* 4 threads, one handle, one id, `cycles` each: the exact count. */
static UNUSED void run_thread_counter(nfslock_manager *m, uint32_t id, long cycles) {
    volatile uint64_t value = 0;
    volatile int inside = 0;
    volatile uint32_t overlaps = 0, errors = 0;
    struct thread_counter t[4];
    pthread_t th[4];
    double t0 = now_ms();
    for (int i = 0; i < 4; i++) {
        t[i] = (struct thread_counter){m, id, cycles, &value, &inside, &overlaps, &errors, 0};
        pthread_create(&th[i], NULL, thread_counter_main, &t[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    double took = now_ms() - t0;
    note("4 threads x %ld cycles on one handle: counter %llu, %u overlaps, %u errors, %.0f ms", cycles,
         (unsigned long long)value, overlaps, errors, took);
    CHECKF(value == (uint64_t)(4 * cycles), "4 threads x %ld cycles: counter %llu, want %ld", cycles,
           (unsigned long long)value, 4 * cycles);
    CHECKF(overlaps == 0, "%u times a thread found another inside", overlaps);
    for (int i = 0; i < 4; i++)
        CHECKF(t[i].first_rc == 0, "thread %d: a lock or unlock returned %s", i, en(t[i].first_rc));
}

/* A lock held by another thread of this process for 300 ms: timedlock with huge
 * timeouts waits (no overflow into "already expired" or an error) until the release;
 * INT64_MIN and -2 wait like lock. */
struct holder {
    nfslock_manager *m;
    uint32_t id;
    int ready[2];
    int rc, unlock_rc;
};

static UNUSED void *holder_main(void *arg) {
    struct holder *h = arg;
    h->rc = nfslock_manager_lock(h->m, h->id);
    char c = 'r';
    if (write(h->ready[1], &c, 1) != 1)
        return NULL;
    sleep_ms(300);
    h->unlock_rc = nfslock_manager_unlock(h->m, h->id);
    return NULL;
}

static UNUSED void check_extreme_timeouts(nfslock_manager *m, uint32_t id) {
    static const int64_t timeouts[] = {INT64_MAX, INT64_MAX / 1000 + 1, (int64_t)UINT32_MAX + 1, INT64_MIN, -2};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        struct holder h = {m, id, {-1, -1}, -1, -1};
        if (pipe(h.ready) != 0) {
            fail(__FILE__, __LINE__, "pipe: %s", strerror(errno));
            return;
        }
        double t0 = now_ms();
        pthread_t t;
        pthread_create(&t, NULL, holder_main, &h);
        char c;
        if (read(h.ready[0], &c, 1) != 1 || h.rc != 0) {
            fail(__FILE__, __LINE__, "the holder thread could not lock %u: %s", id, en(h.rc));
        } else {
            int rc = nfslock_manager_timedlock(m, id, timeouts[i]);
            double took = now_ms() - t0;
            EXPECT_RC(rc, 0, "timedlock(%u, %lld) of a lock another thread releases after 300 ms", id,
                      (long long)timeouts[i]);
            CHECKF(took >= 290, "timedlock(%u, %lld) returned after %.0f ms, before the release (300 ms)", id,
                   (long long)timeouts[i], took);
            if (rc == 0)
                EXPECT_RC(nfslock_manager_unlock(m, id), 0, "unlock(%u)", id);
        }
        pthread_join(t, NULL);
        EXPECT_RC(h.unlock_rc, 0, "the holder thread's unlock(%u)", id);
        close(h.ready[0]);
        close(h.ready[1]);
    }
    /* and on a free lock, each returns at once */
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        EXPECT_RC(nfslock_manager_timedlock(m, id, timeouts[i]), 0, "timedlock(%u, %lld) of a free lock", id,
                  (long long)timeouts[i]);
        EXPECT_RC(nfslock_manager_unlock(m, id), 0, "unlock(%u)", id);
    }
}

/* Descriptors open in this process, and lines of /proc/self/maps. */
static UNUSED int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    if (d != NULL)
        closedir(d);
    return n - 1; /* the one reading the directory */
}

static UNUSED int count_maps(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    int n = 0, c;
    while (f != NULL && (c = fgetc(f)) != EOF)
        if (c == '\n')
            n++;
    if (f != NULL)
        fclose(f);
    return n;
}

/* 4 threads allocating and freeing through one handle: an id is never held by two at
 * once (a shared table of who has each id). */
struct alloc_thread {
    nfslock_manager *m;
    volatile int *owner; /* per id below 4096: the thread that has it, 0 none */
    int me;
    int rounds;
    int dups;
    int first_rc;
};

static UNUSED void *alloc_thread_main(void *arg) {
    struct alloc_thread *a = arg;
    for (int r = 0; r < a->rounds; r++) {
        uint32_t ids[4];
        int n = 0;
        for (int k = 0; k < 4; k++) {
            int rc = nfslock_manager_allocate(a->m, &ids[n]);
            if (rc != 0) {
                if (a->first_rc == 0)
                    a->first_rc = rc;
                continue;
            }
            if (ids[n] < 4096 && __atomic_exchange_n(&a->owner[ids[n]], a->me, __ATOMIC_SEQ_CST) != 0)
                a->dups++;
            n++;
        }
        for (int k = 0; k < n; k++) {
            if (ids[k] < 4096)
                __atomic_store_n(&a->owner[ids[k]], 0, __ATOMIC_SEQ_CST);
            int rc = nfslock_manager_free(a->m, ids[k]);
            if (rc != 0 && a->first_rc == 0)
                a->first_rc = rc;
        }
    }
    return NULL;
}

static UNUSED void run_alloc_threads(nfslock_manager *m, int rounds) {
    static volatile int owner[4096];
    memset((void *)owner, 0, sizeof owner);
    struct alloc_thread a[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct alloc_thread){m, owner, i + 1, rounds, 0, 0};
        pthread_create(&t[i], NULL, alloc_thread_main, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECKF(a[i].dups == 0, "thread %d was handed %d ids another thread had", i, a[i].dups);
        CHECKF(a[i].first_rc == 0, "thread %d: allocate or free returned %s", i, en(a[i].first_rc));
    }
}

/*
 * The crash loop: 3 count workers (until killed) on lock ID of BACKEND; `rounds` times,
 * one of them is SIGKILLed at a random moment (often inside the lock) and replaced.
 * Then: no call failed but with the documented EOWNERDEAD, no overlap, the counter
 * moved, and the lock can be taken.
 */
static UNUSED void run_crash_loop(const char *const backend[], const char *dir, unsigned id, int rounds,
                                  nfslock_manager *m) {
    char file[PATH_MAX], idbuf[16];
    snprintf(file, sizeof file, "%s/crash-counter", dir);
    snprintf(idbuf, sizeof idbuf, "%u", id);
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4096) != 0) {
        fail(__FILE__, __LINE__, "create %s: %s", file, strerror(errno));
        return;
    }
    struct counter *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (c == MAP_FAILED)
        return;
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)"nfslock-manager-test";
    argv[n++] = (char *)"count";
    for (int k = 0; backend[k] != NULL; k++)
        argv[n++] = (char *)backend[k];
    argv[n++] = idbuf;
    argv[n++] = file;
    argv[n++] = (char *)"-1";
    argv[n] = NULL;
    struct proc w[3];
    int live[3] = {0, 0, 0};
    unsigned seed = (unsigned)getpid();
    double t0 = now_ms();
    for (int round = 0; round <= rounds; round++) {
        for (int i = 0; i < 3; i++) {
            if (live[i])
                continue;
            if (spawn_argv(&w[i], argv) != 0)
                goto out;
            live[i] = 1;
            if (EXPECT_LINE(&w[i], "R", 20000) != 0)
                goto out;
            proc_send(&w[i], "go\n");
        }
        if (round == rounds)
            break;
        sleep_ms(20 + (int)(rand_r(&seed) % 60));
        int victim = (int)(rand_r(&seed) % 3);
        proc_free(&w[victim]);
        live[victim] = 0;
    }
    sleep_ms(100);
out:
    for (int i = 0; i < 3; i++)
        if (live[i])
            proc_free(&w[i]);
    double took = now_ms() - t0;
    note("crash loop: %d SIGKILLs of 3 workers in %.0f ms; counter %llu, %u dead holders' sections taken over, "
         "%u overlaps, %u errors",
         rounds, took, (unsigned long long)c->value, c->recovered, c->overlaps, c->errors);
    CHECKF(c->errors == 0, "%u lock/unlock calls failed with other than EOWNERDEAD (first on stderr)", c->errors);
    CHECKF(c->overlaps == 0, "%u times a worker found a live one inside the critical section", c->overlaps);
    CHECKF(c->value > 0, "the counter never moved: the workers did not get the lock");
    int rc = nfslock_manager_timedlock(m, id, 5000);
    CHECKF(rc == 0 || rc == EOWNERDEAD, "timedlock(%u, 5 s) after the crash loop: %s (%s)", id, en(rc),
           rc ? nfslock_last_error() : "-");
    if (rc == 0 || rc == EOWNERDEAD)
        EXPECT_RC(nfslock_manager_unlock(m, id), 0, "unlock(%u) after the crash loop", id);
    munmap(c, sizeof *c);
}

/* After the workers of a crash loop are gone, every lock can be taken again (no lock
 * left unusable). */

/* 4 threads at once on the same id: allocate_id, then free. Exactly one of each wins;
 * the others get EEXIST / ENOENT. */
struct id_racer {
    nfslock_manager *m;
    uint32_t id;
    volatile int *go;
    int do_free;
    int rc;
};

static UNUSED void *id_racer_main(void *arg) {
    struct id_racer *r = arg;
    while (!__atomic_load_n(r->go, __ATOMIC_SEQ_CST))
        ;
    r->rc = r->do_free ? nfslock_manager_free(r->m, r->id) : nfslock_manager_allocate_id(r->m, r->id);
    return NULL;
}

/* strict_free: exactly one racing free returns 0. Without it (the directory backend,
 * whose free takes an unlink's ENOENT for a retransmitted REMOVE of its own, by design),
 * at least one does and the others 0 or ENOENT; the id is free after either way. */
static UNUSED void run_id_races(nfslock_manager *m, int rounds, int strict_free) {
    for (int round = 0; round < rounds; round++) {
        uint32_t id = (uint32_t)(round % 60);
        for (int do_free = 0; do_free < 2; do_free++) {
            volatile int go = 0;
            struct id_racer r[4];
            pthread_t t[4];
            for (int i = 0; i < 4; i++) {
                r[i] = (struct id_racer){m, id, &go, do_free, -1};
                pthread_create(&t[i], NULL, id_racer_main, &r[i]);
            }
            __atomic_store_n(&go, 1, __ATOMIC_SEQ_CST);
            int won = 0, lost = 0;
            for (int i = 0; i < 4; i++) {
                pthread_join(t[i], NULL);
                won += r[i].rc == 0;
                lost += r[i].rc == (do_free ? ENOENT : EEXIST);
            }
            if (do_free && !strict_free)
                CHECKF(won >= 1 && won + lost == 4, "round %d: 4 threads free(%u) at once: %d returned 0, %d ENOENT "
                       "(want at least one 0, the others 0 or ENOENT)", round, id, won, lost);
            else
                CHECKF(won == 1 && lost == 3, "round %d: 4 threads %s(%u) at once: %d returned 0, %d %s (want 1 and 3)",
                       round, do_free ? "free" : "allocate_id", id, won, lost, do_free ? "ENOENT" : "EEXIST");
            if (do_free)
                CHECKF(nfslock_manager_free(m, id) == ENOENT, "round %d: %u still allocated after the racing frees",
                       round, id);
        }
    }
}

/* Signals while waiting: a handler installed without SA_RESTART, SIGUSR1 sent to the
 * waiting thread every 10 ms. timedlock(1000) still waits its whole timeout and says
 * ETIMEDOUT (never EINTR, never early); lock() still waits for the release. */
static volatile int signals_seen;
static void on_usr1(int sig) {
    (void)sig;
    signals_seen++;
}

struct sig_waiter {
    nfslock_manager *m;
    uint32_t id;
    int64_t timeout; /* INT64_MIN: lock() */
    volatile int started, done;
    int rc;
    double took;
    char err[256];
};

static UNUSED void *sig_waiter_main(void *arg) {
    struct sig_waiter *w = arg;
    w->started = 1;
    double t = now_ms();
    w->rc = w->timeout == INT64_MIN ? nfslock_manager_lock(w->m, w->id) : nfslock_manager_timedlock(w->m, w->id, w->timeout);
    w->took = now_ms() - t;
    snprintf(w->err, sizeof w->err, "%s", w->rc ? nfslock_last_error() : "-");
    if (w->rc == 0)
        nfslock_manager_unlock(w->m, w->id);
    __atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* The lock `id` is held by someone else (another process) for the whole check, except
 * that release() is called to let the lock() variant finish. */
static UNUSED void check_signals(nfslock_manager *m, uint32_t id, void (*release)(void *), void *ctx) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    for (int variant = 0; variant < 2; variant++) {
        struct sig_waiter w = {m, id, variant == 0 ? 1000 : INT64_MIN, 0, 0, -1, 0, ""};
        pthread_t t;
        signals_seen = 0;
        pthread_create(&t, NULL, sig_waiter_main, &w);
        while (!w.started)
            sleep_ms(1);
        double t0 = now_ms();
        while (!__atomic_load_n(&w.done, __ATOMIC_SEQ_CST) && now_ms() - t0 < 10000) {
            pthread_kill(t, SIGUSR1);
            sleep_ms(10);
            if (variant == 1 && now_ms() - t0 > 500 && release != NULL) {
                release(ctx);
                release = NULL;
            }
        }
        pthread_join(t, NULL);
        if (variant == 0) {
            if (w.rc != ETIMEDOUT)
                fail(__FILE__, __LINE__, "timedlock(%u, 1000) interrupted by %d signals: got %s, want ETIMEDOUT; "
                     "the thread's last error: %s", id, signals_seen, en(w.rc), w.err);
            CHECKF(w.took >= 990 && w.took < 5000, "timedlock(%u, 1000) interrupted by signals returned after %.0f ms",
                   id, w.took);
        } else {
            if (w.rc != 0)
                fail(__FILE__, __LINE__, "lock(%u) interrupted by %d signals: got %s, want 0 after the release; "
                     "the thread's last error: %s", id, signals_seen, en(w.rc), w.err);
            CHECKF(w.took >= 490, "lock(%u) returned after %.0f ms, before the release (500 ms)", id, w.took);
        }
        note("%s with %d signals: %s after %.0f ms", variant == 0 ? "timedlock(1000)" : "lock", signals_seen, en(w.rc),
             w.took);
    }
    signal(SIGUSR1, SIG_DFL);
}

static UNUSED void release_worker(void *ctx) {
    proc_send((struct proc *)ctx, "\n");
}

/*
 * allocloop BACKEND... FILE ROUNDS: maps FILE (a table of 4096 owner pids), prints "R",
 * waits for a line, then ROUNDS times: allocates 4 ids, claims each in the table (it
 * must be free there: else an id is allocated twice at once), releases the claims, frees
 * the ids. Prints "D <dups> <errors>".
 */
static UNUSED int allocloop_main(int argc, char **argv) {
    alarm(300);
    nfslock_manager *m = NULL;
    int rc;
    int used = open_backend(argv, argc, &m, &rc);
    if (rc != 0 || argc - used != 2) {
        out_line("open %s", en(rc));
        return 1;
    }
    int fd = open(argv[used], O_RDWR);
    int32_t *owner = fd < 0 ? MAP_FAILED : mmap(NULL, 4096 * 4, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (owner == MAP_FAILED) {
        out_line("map %s", strerror(errno));
        return 1;
    }
    long rounds = strtol(argv[used + 1], NULL, 10);
    int32_t me = (int32_t)getpid();
    out_line("R");
    if (read_stdin_line() != 0)
        return 1;
    unsigned dups = 0, errors = 0;
    for (long r = 0; r < rounds; r++) {
        uint32_t ids[4];
        int n = 0;
        for (int k = 0; k < 4; k++) {
            int a = nfslock_manager_allocate(m, &ids[n]);
            if (a != 0) {
                if (errors++ == 0)
                    fprintf(stderr, "allocloop %d: allocate: %s: %s\n", me, en(a), nfslock_last_error());
                continue;
            }
            if (ids[n] >= 4096) {
                errors++;
                continue;
            }
            int32_t expected = 0;
            if (!__atomic_compare_exchange_n(&owner[ids[n]], &expected, me, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
                if (dups++ == 0)
                    fprintf(stderr, "allocloop %d: id %u handed out while process %d has it\n", me, ids[n], expected);
            }
            n++;
        }
        for (int k = 0; k < n; k++) {
            int32_t mine = me;
            __atomic_compare_exchange_n(&owner[ids[k]], &mine, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
            int f = nfslock_manager_free(m, ids[k]);
            if (f != 0 && errors++ == 0)
                fprintf(stderr, "allocloop %d: free(%u): %s: %s\n", me, ids[k], en(f), nfslock_last_error());
        }
    }
    nfslock_manager_close(m);
    out_line("D %u %u", dups, errors);
    return dups || errors ? 1 : 0;
}

static UNUSED void run_allocloop(const char *const backend[], const char *dir, long rounds, int limit_ms) {
    char file[PATH_MAX], rb[32];
    snprintf(file, sizeof file, "%s/owners", dir);
    snprintf(rb, sizeof rb, "%ld", rounds);
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4096 * 4) != 0) {
        fail(__FILE__, __LINE__, "create %s: %s", file, strerror(errno));
        return;
    }
    close(fd);
    struct proc w[4];
    int started = 0;
    for (int i = 0; i < 4; i++) {
        char *argv[16];
        int n = 0;
        argv[n++] = (char *)"nfslock-manager-test";
        argv[n++] = (char *)"allocloop";
        for (int k = 0; backend[k] != NULL; k++)
            argv[n++] = (char *)backend[k];
        argv[n++] = file;
        argv[n++] = rb;
        argv[n] = NULL;
        if (spawn_argv(&w[i], argv) != 0)
            break;
        started++;
    }
    for (int i = 0; i < started; i++)
        EXPECT_LINE(&w[i], "R", 20000);
    double t0 = now_ms();
    for (int i = 0; i < started; i++)
        proc_send(&w[i], "go\n");
    for (int i = 0; i < started; i++) {
        int left = limit_ms - (int)(now_ms() - t0);
        char line[256];
        if (proc_line(&w[i], line, sizeof line, left > 0 ? left : 1) != 0 || strcmp(line, "D 0 0") != 0)
            fail(__FILE__, __LINE__, "allocating worker %d: \"%s\" (want \"D 0 0\": no id twice, no error; see stderr)",
                 i, line);
        EXPECT_EXIT0(&w[i], 10000);
    }
    note("4 processes x %ld rounds of allocate 4 / free 4: %.0f ms", rounds, now_ms() - t0);
    for (int i = 0; i < started; i++)
        proc_free(&w[i]);
}

/* Four workers already spawned with `argv` (each "wait" then 25 "alloc"): starts them at
 * once and checks that the 100 IDs they print are 0..99, each handed out once. */
static UNUSED void expect_100_distinct_allocations(struct proc *w, char *const argv[], int line_timeout_ms) {
    uint8_t seen[1024] = {0};
    int total = 0, started = 0;
    for (int i = 0; i < 4; i++, started++)
        if (spawn_argv(&w[i], argv) != 0)
            break;
    for (int i = 0; i < started; i++)
        EXPECT_LINE(&w[i], "open 0", 10000);
    for (int i = 0; i < started; i++)
        proc_send(&w[i], "\n");
    for (int i = 0; i < started; i++) {
        for (int k = 0; k < 25; k++) {
            char line[256];
            unsigned id;
            if (proc_line(&w[i], line, sizeof line, line_timeout_ms) != 0 || sscanf(line, "alloc %u", &id) != 1 || id >= 1024) {
                fail(__FILE__, __LINE__, "worker %d allocation %d: \"%s\"", i, k, line);
                break;
            }
            CHECKF(!seen[id], "id %u was handed out twice", id);
            seen[id] = 1;
            total++;
        }
        EXPECT_EXIT0(&w[i], 10000);
        proc_free(&w[i]);
    }
    CHECKF(total == 100, "%d allocations, want 100", total);
    for (unsigned id = 0; id < 100; id++)
        CHECKF(seen[id], "id %u was not handed out (100 allocations must take 0..99)", id);
}
