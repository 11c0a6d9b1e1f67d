/*
 * Helpers shared by the tests: files, time, processes, and an independent encoder for
 * Core's record format (written from the protocol description, not from the library, so
 * the two check each other).
 */
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- errno names ------------------------------------------------------------------ */

const char *errname(int code)
{
    switch (code) {
    case 0: return "0 (success)";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case ELOOP: return "ELOOP";
    case EBADMSG: return "EBADMSG";
    case ERANGE: return "ERANGE";
    case EAGAIN: return "EAGAIN";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EDEADLK: return "EDEADLK";
    case ENOLCK: return "ENOLCK";
    case EEXIST: return "EEXIST";
    case EIO: return "EIO";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case ESTALE: return "ESTALE";
    case ENOSPC: return "ENOSPC";
    case ENOMEM: return "ENOMEM";
    case EBUSY: return "EBUSY";
    case EINTR: return "EINTR";
    case ENOSYS: return "ENOSYS";
    default: break;
    }
    /* Unknown codes: a per-thread buffer, good until the next unknown code. */
    static _Thread_local char buf[32];
    snprintf(buf, sizeof buf, "code %d", code);
    return buf;
}

/* ---- paths and files -------------------------------------------------------------- */

static _Thread_local char path_ring[32][PATH_MAX + 32];
static _Thread_local unsigned path_next;

static char *next_path_buf(void)
{
    return path_ring[path_next++ % 32];
}

const char *tp(const char *name)
{
    char *buf = next_path_buf();
    if (snprintf(buf, PATH_MAX + 32, "%s/%s", T_DIR, name) >= PATH_MAX + 32) {
        t_fail(__FILE__, __LINE__, "path too long: %s/%s", T_DIR, name);
        t_abort();
    }
    return buf;
}

const char *lockfile_of(const char *path)
{
    char *buf = next_path_buf();
    if (snprintf(buf, PATH_MAX + 32, "%s.nfs_lock", path) >= PATH_MAX + 32) {
        t_fail(__FILE__, __LINE__, "path too long: %s.nfs_lock", path);
        t_abort();
    }
    return buf;
}

void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        t_fail(__FILE__, __LINE__, "open %s: %s", path, strerror(errno));
        t_abort();
    }
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            t_fail(__FILE__, __LINE__, "write %s: %s", path, strerror(errno));
            t_abort();
        }
        p += n;
        len -= (size_t)n;
    }
    close(fd);
}

void write_str(const char *path, const char *text)
{
    write_file(path, text, strlen(text));
}

char *read_file(const char *path, size_t *len_out)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        close(fd);
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2 + 1);
            if (bigger == NULL) {
                free(buf);
                close(fd);
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            close(fd);
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

int file_is(const char *path, const void *data, size_t len)
{
    size_t got_len;
    char *got = read_file(path, &got_len);
    int same = got != NULL && got_len == len && memcmp(got, data, len) == 0;
    free(got);
    return same;
}

int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int count_claims(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strncmp(e->d_name, ".nfslock-", 9) == 0)
            n++;
    closedir(d);
    return n;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void rm_rf(const char *path)
{
    nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- time ------------------------------------------------------------------------- */

long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- this host and records -------------------------------------------------------- */

const char *this_host(void)
{
    static char name[HOST_NAME_MAX + 1];
    if (name[0] == '\0' && gethostname(name, sizeof name) != 0) {
        t_fail(__FILE__, __LINE__, "gethostname: %s", strerror(errno));
        t_abort();
    }
    return name;
}

long long proc_start_us(pid_t pid)
{
    /* Boot time in seconds from /proc/stat ... */
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    long long btime = -1;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %lld", &btime) == 1)
            break;
    fclose(f);
    if (btime < 0)
        return -1;

    /* ... plus field 22 (start time in clock ticks) of /proc/PID/stat. The command name
     * may contain spaces and parentheses, so count fields after the last ')'. */
    char path[64], stat[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    char *p = strrchr(stat, ')');
    if (p == NULL)
        return -1;
    p++;
    /* After ')': field 3 (state) is the first; field 22 is the 20th. */
    long long ticks = -1;
    char *save = NULL;
    int field = 3;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++)
        if (field == 22) {
            ticks = atoll(tok);
            break;
        }
    long hz = sysconf(_SC_CLK_TCK);
    if (ticks < 0 || hz <= 0)
        return -1;
    return btime * 1000000LL + ticks * 1000000LL / hz;
}

void format_start_time(long long us, char *out, size_t cap)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, cap, "%s.%06lldZ", date, us % 1000000);
}

/* Whether Core's machine form must quote this atom. */
static int needs_quotes(const unsigned char *s, size_t len)
{
    if (len == 0)
        return 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (c <= ' ' || c >= 127 || strchr("\"();\\", c) != NULL)
            return 1;
        if (i + 1 < len && ((c == '#' && s[i + 1] == '|') || (c == '|' && s[i + 1] == '#')))
            return 1;
    }
    return 0;
}

static void append(char *out, size_t cap, const char *text)
{
    size_t used = strlen(out);
    if (used + strlen(text) >= cap) {
        t_fail(__FILE__, __LINE__, "record buffer of %zu bytes too small", cap);
        t_abort();
    }
    strcpy(out + used, text);
}

int encode_atom(char *out, size_t cap, const char *bytes, size_t len)
{
    const unsigned char *s = (const unsigned char *)bytes;
    if (!needs_quotes(s, len)) {
        char *copy = strndup(bytes, len);
        append(out, cap, copy);
        free(copy);
        return 0;
    }
    append(out, cap, "\"");
    for (size_t i = 0; i < len; i++) {
        char esc[8];
        unsigned char c = s[i];
        switch (c) {
        case '"': strcpy(esc, "\\\""); break;
        case '\\': strcpy(esc, "\\\\"); break;
        case '\n': strcpy(esc, "\\n"); break;
        case '\t': strcpy(esc, "\\t"); break;
        case '\r': strcpy(esc, "\\r"); break;
        case '\b': strcpy(esc, "\\b"); break;
        default:
            if (c < ' ' || c >= 127)
                snprintf(esc, sizeof esc, "\\%03u", (unsigned)c);
            else {
                esc[0] = (char)c;
                esc[1] = '\0';
            }
        }
        append(out, cap, esc);
    }
    append(out, cap, "\"");
    return 1;
}

/* "(name value)" in machine form: a space only between two unquoted atoms. */
static void append_field(char *out, size_t cap, const char *name, const char *value)
{
    append(out, cap, "(");
    append(out, cap, name);
    if (!needs_quotes((const unsigned char *)value, strlen(value)))
        append(out, cap, " ");
    encode_atom(out, cap, value, strlen(value));
    append(out, cap, ")");
}

void make_record(char *out, size_t cap, const char *host, long pid, const char *message,
                 const char *start_time)
{
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "%ld", pid);
    out[0] = '\0';
    append(out, cap, "(");
    append_field(out, cap, "host", host);
    append_field(out, cap, "pid", pid_text);
    append_field(out, cap, "message", message ? message : "");
    if (start_time) {
        /* Both atoms of a start time are unquoted, so a space separates them. */
        append(out, cap, "(start_time(");
        append(out, cap, start_time);
        append(out, cap, "))");
    }
    append(out, cap, ")");
}

/* ---- processes -------------------------------------------------------------------- */

pid_t fork_flushed(void)
{
    fflush(stdout);
    fflush(stderr);
    return fork();
}

int wait_status(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            t_fail(__FILE__, __LINE__, "waitpid %d: %s", (int)pid, strerror(errno));
            return -1;
        }
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

int run_in_child(void (*fn)(void *), void *arg)
{
    pid_t pid = fork_flushed();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int before = atomic_load(&t_failures);
        fn(arg);
        fflush(stdout);
        exit(atomic_load(&t_failures) > before ? 1 : 0);
    }
    int status = wait_status(pid);
    if (status != 0)
        t_fail(__FILE__, __LINE__, "child process %d ended with status %d", (int)pid, status);
    return status;
}

pid_t dead_pid(void)
{
    pid_t pid = fork_flushed();
    REQUIRE(pid >= 0);
    if (pid == 0)
        _exit(0);
    wait_status(pid);
    return pid;
}

pid_t start_sleeper(void)
{
    pid_t parent = getpid();
    pid_t pid = fork_flushed();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        for (;;)
            pause();
    }
    return pid;
}

void stop_process(pid_t pid)
{
    kill(pid, SIGKILL);
    wait_status(pid);
}

void holder_start(struct holder *h, const char *path, const char *message)
{
    int ready[2], ctl[2];
    REQUIRE(pipe(ready) == 0);
    REQUIRE(pipe(ctl) == 0);
    pid_t pid = fork_flushed();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(ctl[1]);
        nfslock *lock = NULL;
        int rc = nfslock_create(path, message, &lock);
        if (write(ready[1], &rc, sizeof rc) != (ssize_t)sizeof rc)
            _exit(120);
        if (rc != 0)
            exit(0);
        /* Hold until told (a byte) or until the parent is gone (EOF). */
        char c;
        while (read(ctl[0], &c, 1) < 0 && errno == EINTR) {
        }
        exit(nfslock_unlock(lock));
    }
    close(ready[1]);
    close(ctl[0]);
    h->pid = pid;
    h->ctl = ctl[1];
    h->rc = -1;
    ssize_t n;
    while ((n = read(ready[0], &h->rc, sizeof h->rc)) < 0 && errno == EINTR) {
    }
    close(ready[0]);
    if (n != (ssize_t)sizeof h->rc) {
        t_fail(__FILE__, __LINE__, "holder of %s died before reporting", path);
        h->rc = -1;
    }
}

int holder_release(struct holder *h)
{
    char c = 'u';
    if (write(h->ctl, &c, 1) != 1)
        t_fail(__FILE__, __LINE__, "cannot signal holder %d", (int)h->pid);
    close(h->ctl);
    return wait_status(h->pid);
}

void holder_kill(struct holder *h)
{
    kill(h->pid, SIGKILL);
    close(h->ctl);
    wait_status(h->pid);
}
