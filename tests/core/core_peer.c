/*
 * core_peer: Jane Street Core's Nfs_lock (core_unix, lock_file_blocking/src/nfs_lock.ml),
 * replayed system call by system call, with a pause point before each call that touches
 * the lock's files. Written from Core's published source for tests/core_interop.rs; it
 * does not use libnfslock.
 *
 *   core_peer PATH MARKER [--host-63]
 *
 * --host-63 reads the host name as OCaml 4's Unix.gethostname does: into a buffer of
 * MAXHOSTNAMELEN (64) bytes whose last byte is then set to NUL, so a 64-byte host name
 * loses its last byte. Without it the host name is read whole.
 *
 * Commands (one per line; answers as peer.h describes):
 *   pause STEP [MS]  before step STEP (a number, 1 = the first call of the next
 *                    operation, or a step name such as `ftruncate`) of the next
 *                    operation: say `paused N NAME` and wait for a line `go`; with MS,
 *                    sleep MS milliseconds instead (`paused N NAME ms=MS`, then
 *                    `resumed N`). The pause applies to one operation.
 *   v1 MSG           Core's create_exn (used by blocking_create and critical_section)
 *   v2 MSG           Core's create_v2_internal_exn
 *   unlock           Core's unlock_self_exn (removes the marker first)
 *   exit             exit (without Core's at_exit unlock; the driver releases first)
 *
 * Every operation prints `step N NAME` before each of its calls and ends with
 * `done OP ok steps=N` or `done OP fail steps=N REASON` (`done unlock notlocked` when
 * the lock file was gone, which Core's unlock silently accepts). A create that succeeds
 * then takes the marker (`held` / `overlap`).
 *
 * The sequences (Core's, in order):
 *   prepare_to_lock_exn: lstat P.nfs_lock; if it exists read it (open, read). If it
 *     names this host and a process that is gone (kill(pid, 0) fails, or its start time
 *     differs by 1 s or more): read it again, open it O_RDWR, flock(LOCK_EX|LOCK_NB),
 *     read it again, unlink P (ENOENT is fine), unlink P.nfs_lock, flock(LOCK_UN), close.
 *     Unreadable, another host, a live holder, a record that changed: fail.
 *   v1: prepare; open(P, O_WRONLY|O_CREAT, 0644); link(P, P.nfs_lock) (EEXIST: close and
 *     fail); ftruncate(fd, 0); write(the record in sexplib's human form + "\n"); close.
 *   v2: prepare; stat(dir); open(P.<md5 of record>.lock-attempt,
 *     O_WRONLY|O_CREAT|O_TRUNC|O_EXCL, 0666); write(record, machine form); close;
 *     link(attempt, P.nfs_lock); unlink(attempt) (also when the link failed); then
 *     open(P, O_WRONLY|O_CREAT|O_TRUNC, 0666), write(record), close (errors ignored).
 *     Core's occasional sweep of attempt files older than 5 minutes is left out: it
 *     touches no file of a live attempt.
 *   unlock: lstat P.nfs_lock, read it; unless it is this process's record, fail;
 *     unlink P (ENOENT is fine); unlink P.nfs_lock.
 *
 * Records are Core's Info.t: ((host H)(pid N)(message M)(start_time (DATE TIME))),
 * start_time = btime + field 22 of /proc/PID/stat / CLK_TCK, in UTC. The human form is
 * laid out as Format's packing box lays it out (elements joined by a space, a line
 * broken with one space of indent before an element that would pass column 78).
 */
#include "peer.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WHY_LEN (3 * PATH_MAX)

static const char *P;
static char LOCK[PATH_MAX];
static const char *MARKER;
static int host_63;

static char pause_spec[64];
static long pause_ms = -1;
static int step_no;
static const char *op_name = "";

static int holding;
static int marker_made;

/* ---- steps ------------------------------------------------------------------------ */

static void step(const char *name)
{
    step_no++;
    say("step %d %s", step_no, name);
    if (pause_spec[0] == '\0')
        return;
    char number[16];
    snprintf(number, sizeof number, "%d", step_no);
    if (strcmp(pause_spec, number) != 0 && strcmp(pause_spec, name) != 0)
        return;
    pause_spec[0] = '\0';
    if (pause_ms >= 0) {
        say("paused %d %s ms=%ld", step_no, name, pause_ms);
        sleep_ms(pause_ms);
        say("resumed %d", step_no);
        return;
    }
    say("paused %d %s", step_no, name);
    while (strcmp(next_command(), "go") != 0)
        say("error: paused; only `go` is accepted");
}

static void done(int ok, const char *reason)
{
    say("done %s %s steps=%d%s%s", op_name, ok ? "ok" : "fail", step_no, reason ? " " : "",
        reason ? reason : "");
    pause_spec[0] = '\0';
}

/* ---- host and process identity ---------------------------------------------------- */

static void my_hostname(char *out, size_t cap)
{
    if (host_63) {
        /* OCaml 4's unix_gethostname: char name[MAXHOSTNAMELEN] (64 on Linux),
         * gethostname(name, 64) (glibc copies 64 bytes and fails with ENAMETOOLONG,
         * ignored), name[63] = 0. */
        char name[64];
        memset(name, 0, sizeof name);
        if (gethostname(name, sizeof name) != 0) {
            /* Ignored, as OCaml 4 ignores it. */
        }
        name[sizeof name - 1] = '\0';
        snprintf(out, cap, "%s", name);
        return;
    }
    char name[256];
    memset(name, 0, sizeof name);
    if (gethostname(name, sizeof name - 1) != 0)
        strcpy(name, "localhost");
    snprintf(out, cap, "%s", name);
}

/* Core's process_start_time, in microseconds since the epoch; -1 when unknown. */
static long long process_start_us(long pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *after = strrchr(buf, ')');
    if (after == NULL)
        return -1;
    after++;
    /* Fields after the name: state is the 1st, start time the 20th. */
    char *save = NULL;
    char *field = strtok_r(after, " ", &save);
    for (int i = 1; field != NULL && i < 20; i++)
        field = strtok_r(NULL, " ", &save);
    if (field == NULL)
        return -1;
    long long ticks = atoll(field);
    f = fopen("/proc/stat", "re");
    if (f == NULL)
        return -1;
    long long btime = -1;
    char line[512];
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "btime ", 6) == 0)
            btime = atoll(line + 6);
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    if (btime < 0 || hz <= 0)
        return -1;
    return btime * 1000000LL + ticks * 1000000LL / hz;
}

static void format_time(long long us, char *date, size_t dcap, char *tod, size_t tcap)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(date, dcap, "%Y-%m-%d", &tm);
    char hms[32];
    strftime(hms, sizeof hms, "%H:%M:%S", &tm);
    snprintf(tod, tcap, "%s.%06lldZ", hms, us % 1000000);
}

static long long parse_time(const char *date, const char *tod)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int y, mo, d, h, mi, s;
    if (sscanf(date, "%d-%d-%d", &y, &mo, &d) != 3 || sscanf(tod, "%d:%d:%d", &h, &mi, &s) != 3)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    long long us = (long long)timegm(&tm) * 1000000LL;
    const char *dot = strchr(tod, '.');
    if (dot != NULL) {
        long long frac = 0, scale = 100000;
        for (const char *c = dot + 1; isdigit((unsigned char)*c) && scale > 0; c++, scale /= 10)
            frac += (*c - '0') * scale;
        us += frac;
    }
    return us;
}

/* ---- records ---------------------------------------------------------------------- */

struct info {
    char host[2048];
    long pid;
    char message[2048];
    int has_start;
    long long start_us;
};

static int must_quote(const char *s)
{
    if (*s == '\0')
        return 1;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c <= ' ' || *c >= 127 || strchr("\"();\\", *c) != NULL)
            return 1;
        if ((c[0] == '#' && c[1] == '|') || (c[0] == '|' && c[1] == '#'))
            return 1;
    }
    return 0;
}

/* One atom as sexplib prints it (both forms quote and escape alike for the atoms used
 * here: no atom of a record made by this program holds a newline). */
static void atom(char *out, size_t cap, const char *s)
{
    size_t used = strlen(out);
    if (!must_quote(s)) {
        snprintf(out + used, cap - used, "%s", s);
        return;
    }
    char buf[4096];
    size_t k = 0;
    buf[k++] = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c && k + 5 < sizeof buf; c++) {
        switch (*c) {
        case '"': k += (size_t)sprintf(buf + k, "\\\""); break;
        case '\\': k += (size_t)sprintf(buf + k, "\\\\"); break;
        case '\n': k += (size_t)sprintf(buf + k, "\\n"); break;
        case '\t': k += (size_t)sprintf(buf + k, "\\t"); break;
        case '\r': k += (size_t)sprintf(buf + k, "\\r"); break;
        case '\b': k += (size_t)sprintf(buf + k, "\\b"); break;
        default:
            if (*c < ' ' || *c >= 127)
                k += (size_t)sprintf(buf + k, "\\%03d", *c);
            else
                buf[k++] = (char)*c;
        }
    }
    buf[k++] = '"';
    buf[k] = '\0';
    snprintf(out + used, cap - used, "%s", buf);
}

static void my_info(struct info *me, const char *message)
{
    memset(me, 0, sizeof *me);
    my_hostname(me->host, sizeof me->host);
    me->pid = (long)getpid();
    snprintf(me->message, sizeof me->message, "%s", message);
    me->start_us = process_start_us(me->pid);
    me->has_start = me->start_us >= 0;
}

/* The record's fields as lists: (host H) (pid N) (message M) (start_time (D T)). In
 * the machine form a space separates two atoms only when both are unquoted, and none
 * precedes a list. */
static int record_fields(const struct info *in, int machine, char fields[4][2048])
{
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", in->pid);
    const char *names[3] = {"host", "pid", "message"};
    const char *values[3] = {in->host, pid, in->message};
    for (int i = 0; i < 3; i++) {
        snprintf(fields[i], 2048, "(%s%s", names[i], machine && must_quote(values[i]) ? "" : " ");
        atom(fields[i], 2048, values[i]);
        strcat(fields[i], ")");
    }
    if (!in->has_start)
        return 3;
    char date[48], tod[48];
    format_time(in->start_us, date, sizeof date, tod, sizeof tod);
    snprintf(fields[3], 2048, "(start_time%s(%s %s))", machine ? "" : " ", date, tod);
    return 4;
}

/* Sexp.to_string (Info.to_string, the machine form), as create_v2 writes it. */
static void record_machine(const struct info *in, char *out, size_t cap)
{
    char fields[4][2048];
    int n = record_fields(in, 1, fields);
    snprintf(out, cap, "(");
    for (int i = 0; i < n; i++)
        strncat(out, fields[i], cap - strlen(out) - 1);
    strncat(out, ")", cap - strlen(out) - 1);
}

/* Sexp.to_string_hum followed by "\n", as create_exn writes it. */
static void record_human(const struct info *in, char *out, size_t cap)
{
    char fields[4][2048];
    int n = record_fields(in, 0, fields);
    snprintf(out, cap, "(");
    size_t column = 1;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(fields[i]) + (i == n - 1 ? 1 : 0);
        if (i > 0) {
            if (column + 1 + len > 78) {
                strncat(out, "\n ", cap - strlen(out) - 1);
                column = 1;
            } else {
                strncat(out, " ", cap - strlen(out) - 1);
                column++;
            }
        }
        strncat(out, fields[i], cap - strlen(out) - 1);
        column += strlen(fields[i]);
    }
    strncat(out, ")\n", cap - strlen(out) - 1);
}

/* A small reader for records in either form: atoms (quoted with sexplib's escapes, or
 * bare), lists, `;` comments. Fills `out` from the fields host, pid, message,
 * start_time; returns 0 when the text is not such a record (Core's of_string raises). */
struct reader {
    const char *s;
    size_t i, n;
};

static void skip_space(struct reader *r)
{
    for (;;) {
        while (r->i < r->n && isspace((unsigned char)r->s[r->i]))
            r->i++;
        if (r->i < r->n && r->s[r->i] == ';') {
            while (r->i < r->n && r->s[r->i] != '\n')
                r->i++;
            continue;
        }
        return;
    }
}

static int read_atom(struct reader *r, char *out, size_t cap)
{
    size_t k = 0;
    skip_space(r);
    if (r->i >= r->n || r->s[r->i] == '(' || r->s[r->i] == ')')
        return 0;
    if (r->s[r->i] != '"') {
        while (r->i < r->n && !isspace((unsigned char)r->s[r->i]) && strchr("();\"", r->s[r->i]) == NULL) {
            if (k + 1 >= cap)
                return 0;
            out[k++] = r->s[r->i++];
        }
        out[k] = '\0';
        return 1;
    }
    r->i++;
    while (r->i < r->n && r->s[r->i] != '"') {
        char c = r->s[r->i++];
        if (c == '\\' && r->i < r->n) {
            char e = r->s[r->i++];
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case '\n':
                while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t'))
                    r->i++;
                continue;
            default:
                if (isdigit((unsigned char)e) && r->i + 1 < r->n) {
                    c = (char)((e - '0') * 100 + (r->s[r->i] - '0') * 10 + (r->s[r->i + 1] - '0'));
                    r->i += 2;
                } else {
                    c = e;
                }
            }
        }
        if (k + 1 >= cap)
            return 0;
        out[k++] = c;
    }
    if (r->i >= r->n)
        return 0;
    r->i++;
    out[k] = '\0';
    return 1;
}

static int expect(struct reader *r, char c)
{
    skip_space(r);
    if (r->i < r->n && r->s[r->i] == c) {
        r->i++;
        return 1;
    }
    return 0;
}

static int parse_info(const char *text, size_t len, struct info *out)
{
    struct reader r = {text, 0, len};
    int seen_host = 0, seen_pid = 0, seen_message = 0;
    memset(out, 0, sizeof *out);
    if (!expect(&r, '('))
        return 0;
    for (;;) {
        if (expect(&r, ')'))
            break;
        char name[64], value[2048];
        if (!expect(&r, '(') || !read_atom(&r, name, sizeof name))
            return 0;
        if (strcmp(name, "start_time") == 0) {
            char date[64], tod[64];
            if (!expect(&r, '(') || !read_atom(&r, date, sizeof date) || !read_atom(&r, tod, sizeof tod) ||
                !expect(&r, ')'))
                return 0;
            out->start_us = parse_time(date, tod);
            out->has_start = out->start_us >= 0;
        } else {
            if (!read_atom(&r, value, sizeof value))
                return 0;
            if (strcmp(name, "host") == 0) {
                snprintf(out->host, sizeof out->host, "%s", value);
                seen_host = 1;
            } else if (strcmp(name, "pid") == 0) {
                char *end;
                out->pid = strtol(value, &end, 10);
                if (*end != '\0')
                    return 0;
                seen_pid = 1;
            } else if (strcmp(name, "message") == 0) {
                snprintf(out->message, sizeof out->message, "%s", value);
                seen_message = 1;
            } else {
                return 0; /* Core's derived of_sexp rejects unknown fields. */
            }
        }
        if (!expect(&r, ')'))
            return 0;
    }
    skip_space(&r);
    return r.i == r.n && seen_host && seen_pid && seen_message;
}

static int info_equal(const struct info *a, const struct info *b)
{
    return strcmp(a->host, b->host) == 0 && a->pid == b->pid && strcmp(a->message, b->message) == 0 &&
           a->has_start == b->has_start && (!a->has_start || a->start_us == b->start_us);
}

/* Info.of_file: In_channel.read_all (open, read to the end, close), strip, parse. */
static int info_of_file(struct info *out)
{
    step("open-lock");
    int fd = open(LOCK, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    step("read-lock");
    char buf[70000];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    return parse_info(buf, len, out);
}

enum lock_state { NOT_LOCKED, UNREADABLE, LOCKED };

/* read_lock_file: Sys_unix.file_exists ~follow_symlinks:false, then Info.of_file. */
static enum lock_state read_lock_file(struct info *out)
{
    step("lstat-lock");
    struct stat st;
    if (lstat(LOCK, &st) != 0)
        return errno == ENOENT ? NOT_LOCKED : UNREADABLE;
    return info_of_file(out) ? LOCKED : UNREADABLE;
}

/* pid_start_matches_lock: without both start times, true. */
static int start_matches(const struct info *in)
{
    long long now = process_start_us(in->pid);
    if (!in->has_start || now < 0)
        return 1;
    long long diff = now > in->start_us ? now - in->start_us : in->start_us - now;
    return diff < 1000000LL;
}

/* Signal_unix.can_send_to && pid_start_matches_lock. */
static int pid_exists(const struct info *in)
{
    return in->pid > 0 && kill((pid_t)in->pid, 0) == 0 && start_matches(in);
}

/* prepare_to_lock_exn; returns 1 when the lock may be attempted. */
static int prepare_to_lock(char *why, size_t cap)
{
    struct info info, again;
    switch (read_lock_file(&info)) {
    case NOT_LOCKED:
        return 1;
    case UNREADABLE:
        snprintf(why, cap, "failed to parse info from lock file");
        return 0;
    case LOCKED:
        break;
    }
    char host[2048];
    my_hostname(host, sizeof host);
    if (strcmp(host, info.host) != 0) {
        snprintf(why, cap, "lock already held on %s, unlock attempted from %s", info.host, host);
        return 0;
    }
    if (pid_exists(&info)) {
        snprintf(why, cap, "locking process (pid %ld) still running on %s", info.pid, info.host);
        return 0;
    }
    if (!info_of_file(&again) || !info_equal(&info, &again)) {
        snprintf(why, cap, "lock was held by pid %ld (but not anymore, please retry)", info.pid);
        return 0;
    }
    step("open-lock-rdwr");
    int fd = open(LOCK, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, cap, "open %s: %s", LOCK, strerror(errno));
        return 0;
    }
    step("flock-ex");
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(why, cap, "flock failed (held by another process)");
        close(fd);
        return 0;
    }
    int ok = 1;
    if (!info_of_file(&again) || !info_equal(&info, &again)) {
        snprintf(why, cap, "lost the race trying to clean up after pid %ld", info.pid);
        ok = 0;
    } else {
        /* unlink_lock_files */
        step("unlink-p");
        if (unlink(P) != 0 && errno != ENOENT && errno != ENOTDIR) {
            snprintf(why, cap, "unlink %s: %s", P, strerror(errno));
            ok = 0;
        } else {
            step("unlink-lock");
            if (unlink(LOCK) != 0) {
                snprintf(why, cap, "unlink %s: %s", LOCK, strerror(errno));
                ok = 0;
            }
        }
    }
    step("flock-un");
    flock(fd, LOCK_UN);
    step("close-lock");
    close(fd);
    return ok;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void held(void)
{
    holding = 1;
    marker_made = marker_take(MARKER);
}

/* create_exn */
static void create_v1(const char *message)
{
    char why[WHY_LEN];
    if (!prepare_to_lock(why, sizeof why)) {
        done(0, why);
        return;
    }
    step("open-p");
    int fd = open(P, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(why, sizeof why, "open %s: %s", P, strerror(errno));
        done(0, why);
        return;
    }
    step("link-p");
    if (link(P, LOCK) != 0) {
        snprintf(why, sizeof why, "link: %s", strerror(errno));
        close(fd);
        done(0, why);
        return;
    }
    step("ftruncate");
    if (ftruncate(fd, 0) != 0) {
        snprintf(why, sizeof why, "ftruncate: %s", strerror(errno));
        close(fd);
        done(0, why);
        return;
    }
    struct info me;
    my_info(&me, message);
    char record[8192];
    record_human(&me, record, sizeof record);
    step("write-record");
    if (write_all(fd, record, strlen(record)) != 0) {
        /* Core removes both names when its write fails. */
        snprintf(why, sizeof why, "write: %s", strerror(errno));
        close(fd);
        unlink(P);
        unlink(LOCK);
        done(0, why);
        return;
    }
    step("close-p");
    close(fd);
    done(1, NULL);
    held();
}

/* Md5.to_hex (Md5.digest_string s), RFC 1321. */
static void md5_hex(const char *msg, char out[33])
{
    static const uint32_t K[64] = {
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
        0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
        0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
        0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
        0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
        0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
        0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
    static const int R[16] = {7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21};
    uint32_t h[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    size_t len = strlen(msg);
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *buf = calloc(total, 1);
    if (buf == NULL)
        abort();
    memcpy(buf, msg, len);
    buf[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        buf[total - 8 + (size_t)i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[16];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)buf[off + 4 * (size_t)i] | (uint32_t)buf[off + 4 * (size_t)i + 1] << 8 |
                   (uint32_t)buf[off + 4 * (size_t)i + 2] << 16 | (uint32_t)buf[off + 4 * (size_t)i + 3] << 24;
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
        for (int i = 0; i < 64; i++) {
            uint32_t f;
            int g;
            if (i < 16) {
                f = (b & c) | (~b & d);
                g = i;
            } else if (i < 32) {
                f = (d & b) | (~d & c);
                g = (5 * i + 1) % 16;
            } else if (i < 48) {
                f = b ^ c ^ d;
                g = (3 * i + 5) % 16;
            } else {
                f = c ^ (b | ~d);
                g = (7 * i) % 16;
            }
            uint32_t tmp = d;
            d = c;
            c = b;
            uint32_t x = a + f + K[i] + w[g];
            int s = R[(i / 16) * 4 + i % 4];
            b = b + ((x << s) | (x >> (32 - s)));
            a = tmp;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
    }
    free(buf);
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", (h[i / 4] >> (8 * (i % 4))) & 0xff);
    out[32] = '\0';
}

/* create_v2_internal_exn */
static void create_v2(const char *message)
{
    char why[WHY_LEN];
    struct info me;
    my_info(&me, message);
    char record[8192];
    record_machine(&me, record, sizeof record);
    char digest[33], attempt[PATH_MAX + 64];
    md5_hex(record, digest);
    snprintf(attempt, sizeof attempt, "%s.%s.lock-attempt", P, digest);
    if (!prepare_to_lock(why, sizeof why)) {
        done(0, why);
        return;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", P);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    step("stat-dir");
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(why, sizeof why, "%s either does not exist or is not a directory", dir);
        done(0, why);
        return;
    }
    step("open-attempt");
    int fd = open(attempt, O_WRONLY | O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC, 0666);
    int linked = -1;
    if (fd < 0) {
        snprintf(why, sizeof why, "open %s: %s", attempt, strerror(errno));
    } else {
        step("write-attempt");
        int wrote = write_all(fd, record, strlen(record));
        step("close-attempt");
        close(fd);
        if (wrote != 0) {
            snprintf(why, sizeof why, "write %s: %s", attempt, strerror(errno));
        } else {
            step("link-attempt");
            linked = link(attempt, LOCK);
            if (linked != 0)
                snprintf(why, sizeof why, "link: %s", strerror(errno));
        }
    }
    /* protect ~finally:(fun () -> unlink_if_exists attempt_path) */
    step("unlink-attempt");
    unlink(attempt);
    if (linked != 0) {
        done(0, why);
        return;
    }
    /* Out_channel.write_all path: open_out_gen [wronly; creat; trunc] 0o666; errors
     * are ignored. */
    step("open-p-trunc");
    fd = open(P, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd >= 0) {
        step("write-p");
        if (write_all(fd, record, strlen(record)) != 0) {
            /* ignored, as in Core */
        }
        step("close-p");
        close(fd);
    }
    done(1, NULL);
    held();
}

/* unlock_self_exn (the marker goes first: from here on this process does not count
 * itself a holder). */
static void core_unlock(void)
{
    marker_drop(MARKER, &marker_made);
    holding = 0;
    struct info info, me;
    char why[WHY_LEN];
    switch (read_lock_file(&info)) {
    case NOT_LOCKED:
        say("done unlock notlocked steps=%d the lock file is gone (Core's unlock accepts that)", step_no);
        pause_spec[0] = '\0';
        return;
    case UNREADABLE:
        done(0, "failed to parse info from lock file");
        return;
    case LOCKED:
        break;
    }
    my_info(&me, "");
    if (strcmp(me.host, info.host) != 0 || me.pid != info.pid || !start_matches(&info)) {
        snprintf(why, sizeof why, "lock owned (stolen?) by a different process (pid %ld running on %s)", info.pid,
                 info.host);
        done(0, why);
        return;
    }
    step("unlink-p");
    if (unlink(P) != 0 && errno != ENOENT && errno != ENOTDIR) {
        snprintf(why, sizeof why, "unlink %s: %s", P, strerror(errno));
        done(0, why);
        return;
    }
    step("unlink-lock");
    if (unlink(LOCK) != 0) {
        snprintf(why, sizeof why, "unlink %s: %s", LOCK, strerror(errno));
        done(0, why);
        return;
    }
    done(1, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: core_peer PATH MARKER [--host-63]\n");
        return 2;
    }
    P = argv[1];
    MARKER = argv[2];
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--host-63") == 0) {
            host_63 = 1;
        } else {
            fprintf(stderr, "core_peer: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    snprintf(LOCK, sizeof LOCK, "%s.nfs_lock", P);
    char host[2048];
    my_hostname(host, sizeof host);
    say("ready %d host_len=%zu", (int)getpid(), strlen(host));
    for (;;) {
        /* A copy: a pause reads further lines into next_command's buffer. */
        char line[4096];
        snprintf(line, sizeof line, "%s", next_command());
        char *arg = strchr(line, ' ');
        if (arg != NULL)
            *arg++ = '\0';
        else
            arg = line + strlen(line);
        step_no = 0;
        if (strcmp(line, "pause") == 0) {
            char spec[64];
            long ms = -1;
            int n = sscanf(arg, "%63s %ld", spec, &ms);
            if (n < 1) {
                say("error: pause STEP [MS]");
                continue;
            }
            snprintf(pause_spec, sizeof pause_spec, "%s", spec);
            pause_ms = n == 2 ? ms : -1;
            say("ok pause %s", spec);
        } else if (strcmp(line, "v1") == 0 || strcmp(line, "v2") == 0) {
            op_name = line[1] == '1' ? "v1" : "v2";
            if (holding) {
                done(0, "this peer holds the lock already");
                continue;
            }
            if (line[1] == '1')
                create_v1(arg);
            else
                create_v2(arg);
        } else if (strcmp(line, "unlock") == 0) {
            op_name = "unlock";
            core_unlock();
        } else if (strcmp(line, "exit") == 0) {
            return 0;
        } else {
            say("error: unknown command %s", line);
        }
    }
}
