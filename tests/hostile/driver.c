/*
 * A line-driven client of libnfslock for tests/hostile.rs, which runs it as root, as an
 * unprivileged victim or as an attacker, and sends it one command per line on stdin.
 * Every command answers with exactly one line on stdout:
 *
 *     = rc=0 errno=0 ms=3 KEY=VALUE... err=TEXT
 *
 * `errno` is the symbolic name of the library's return code (0 on success), `ms` the
 * wall time the call took on CLOCK_MONOTONIC, `err` nfslock_last_error() after a failure
 * (always last: free text). Commands that are not library calls answer with rc=0 or the
 * errno of the system call that failed.
 *
 * Input and output go through read(2)/write(2) loops that retry EINTR, so that the
 * signal storm (`storm on`: SIGALRM every 100 us, handler installed without SA_RESTART)
 * disturbs only the library, never the protocol with the test.
 *
 * Commands:
 *   create PATH                 nfslock_create; the handle is pushed on a stack
 *   blocking PATH MS            nfslock_blocking_create(MS), handle pushed on success
 *   unlock                      nfslock_unlock of the most recent handle
 *   unlock_path PATH            nfslock_unlock_path
 *   read PATH                   nfslock_get_hostname_and_pid (host=, pid=)
 *   message PATH                nfslock_get_message
 *   cycles PATH N               N x (create + unlock): first failure, count
 *   paths DIR NPATHS CYCLES     CYCLES x (create + unlock) over DIR/p0..p{NPATHS-1}
 *   open DIR NAME TIMEOUT_MS    nfslock_session_open (one session at a time)
 *   make N                      nfslock_session_make_new_ids(N) (ids=a,b,...)
 *   makeloop N                  N x make_new_ids(1): count, first, last, whether
 *                               strictly increasing (all ids go to the file given by
 *                               `idlog FILE`, one per line, if set)
 *   idlog FILE                  where makeloop writes its ids
 *   lock_ids ID...              nfslock_session_lock_ids (locked=)
 *   release_ids ID...           nfslock_session_release_ids (released=)
 *   check                       nfslock_session_check
 *   reap                        nfslock_session_reap_locks (reaped=)
 *   close                       nfslock_session_close
 *   rlimit N                    setrlimit(RLIMIT_NOFILE) soft limit N
 *   exhaust LEAVE               opens /dev/null until EMFILE, then closes LEAVE of them
 *   free                        closes every descriptor `exhaust` opened
 *   fds                         number of open descriptors (n=), from /proc/self/fd
 *   openprobe                   open("/dev/null") works? (rc = its errno)
 *   storm on|off                SIGALRM every 100 us without SA_RESTART / stop it
 *                               (signals= how many the handler saw so far)
 *   thread_hold PATH            another thread takes PATH (blocking, 10 s) and holds it
 *                               until `thread_release`
 *   thread_release              that thread unlocks (rc of its unlock)
 *   entries DIR                 lists DIR: name:type:uid:ino:nlink,... (type f d l p s o)
 *   inode PATH                  lstat: ino= type= uid= nlink= (rc = its errno)
 *   plant KIND ARGS...          creates, as whoever runs this program:
 *                                 plant symlink TARGET PATH | plant hardlink TARGET PATH
 *                                 plant fifo PATH | plant socket PATH | plant dir PATH MODE
 *                                 plant file PATH MODE TEXT (TEXT: rest of the line,
 *                                 C escapes \n \\ and \xHH; "-" for an empty file)
 *   pid                         this process's pid (pid=)
 *   sleep MS
 *   quit                        exits (after closing what is left, without unlocking)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <nfslock.h>

#define MAX_HANDLES 256
#define MAX_FILLERS 65536
#define LINE_MAX_LEN 8192

static nfslock *handles[MAX_HANDLES];
static int n_handles;
static nfslock_session *session;
static int fillers[MAX_FILLERS];
static int n_fillers;
static volatile sig_atomic_t signals_seen;
static int storming;
static char idlog_path[4096];

/* ---- output: one reply line per command, written with a write(2) loop ---- */

static char out[65536];
static size_t out_len;

static void out_add(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + out_len, sizeof out - out_len, fmt, ap);
    va_end(ap);
    if (n > 0) {
        out_len += (size_t)n;
        if (out_len >= sizeof out)
            out_len = sizeof out - 1;
    }
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(3);
        p += w;
        n -= (size_t)w;
    }
}

static const char *ename(int code) {
    if (code == 0)
        return "0";
    const char *name = strerrorname_np(code);
    return name ? name : "UNKNOWN";
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Starts a reply: "= rc=N errno=NAME ms=M". */
static void reply_start(int rc, double ms) {
    out_len = 0;
    out_add("= rc=%d errno=%s ms=%.1f", rc, ename(rc), ms);
}

/* Ends a reply with err=, the library's last error when rc is a library failure. */
static void reply_end(int rc, int from_library) {
    const char *err = (rc != 0 && from_library) ? nfslock_last_error() : "";
    out_add(" err=");
    for (const char *c = err; *c && out_len < sizeof out - 2; c++)
        out[out_len++] = (*c == '\n' || *c == '\r') ? ' ' : *c;
    out_add("\n");
    write_all(1, out, out_len);
}

static void reply_simple(int rc) {
    reply_start(rc, 0);
    reply_end(rc, 0);
}

/* ---- input ---- */

static char inbuf[LINE_MAX_LEN * 2];
static size_t in_len;

/* Reads one line (without its newline) into `line`; 0 at end of input. */
static int read_line(char *line, size_t cap) {
    for (;;) {
        char *nl = memchr(inbuf, '\n', in_len);
        if (nl) {
            size_t n = (size_t)(nl - inbuf);
            if (n >= cap)
                n = cap - 1;
            memcpy(line, inbuf, n);
            line[n] = 0;
            size_t used = (size_t)(nl - inbuf) + 1;
            memmove(inbuf, inbuf + used, in_len - used);
            in_len -= used;
            return 1;
        }
        if (in_len == sizeof inbuf)
            in_len = 0;
        ssize_t r = read(0, inbuf + in_len, sizeof inbuf - in_len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        in_len += (size_t)r;
    }
}

/* Splits `line` in place into at most `max` words; returns how many. */
static int split(char *line, char **words, int max) {
    int n = 0;
    char *save = NULL;
    for (char *w = strtok_r(line, " ", &save); w && n < max; w = strtok_r(NULL, " ", &save))
        words[n++] = w;
    return n;
}

/* ---- signal storm ---- */

static void on_alarm(int sig) {
    (void)sig;
    signals_seen++;
}

static int storm(int on) {
    struct itimerval it;
    memset(&it, 0, sizeof it);
    if (on) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0; /* no SA_RESTART: every slow system call sees EINTR */
        if (sigaction(SIGALRM, &sa, NULL) != 0)
            return errno;
        it.it_interval.tv_usec = 100;
        it.it_value.tv_usec = 100;
    }
    if (setitimer(ITIMER_REAL, &it, NULL) != 0)
        return errno;
    storming = on;
    return 0;
}

/* ---- a second thread holding a lock ---- */

static pthread_t holder_thread;
static pthread_mutex_t holder_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t holder_cv = PTHREAD_COND_INITIALIZER;
static int holder_state; /* 0 idle, 1 holding, 2 asked to release, 3 done */
static int holder_rc, holder_unlock_rc;
static char holder_path[4096];

static void *holder_main(void *arg) {
    (void)arg;
    nfslock *l = NULL;
    int rc = nfslock_blocking_create(holder_path, "hostile: holder thread", 10000, &l);
    pthread_mutex_lock(&holder_mu);
    holder_rc = rc;
    holder_state = 1;
    pthread_cond_broadcast(&holder_cv);
    while (holder_state != 2)
        pthread_cond_wait(&holder_cv, &holder_mu);
    pthread_mutex_unlock(&holder_mu);
    int urc = rc == 0 ? nfslock_unlock(l) : rc;
    pthread_mutex_lock(&holder_mu);
    holder_unlock_rc = urc;
    holder_state = 3;
    pthread_cond_broadcast(&holder_cv);
    pthread_mutex_unlock(&holder_mu);
    return NULL;
}

/* ---- helpers ---- */

static char type_of(mode_t m) {
    if (S_ISREG(m)) return 'f';
    if (S_ISDIR(m)) return 'd';
    if (S_ISLNK(m)) return 'l';
    if (S_ISFIFO(m)) return 'p';
    if (S_ISSOCK(m)) return 's';
    return 'o';
}

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* Decodes \n, \\ and \xHH in place; returns the length. */
static size_t unescape(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '\\' && r[1] == 'n') {
            *w++ = '\n';
            r++;
        } else if (*r == '\\' && r[1] == '\\') {
            *w++ = '\\';
            r++;
        } else if (*r == '\\' && r[1] == 'x' && r[2] && r[3]) {
            char hex[3] = {r[2], r[3], 0};
            *w++ = (char)strtol(hex, NULL, 16);
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    return (size_t)(w - s);
}

static int plant(int argc, char **argv, char *rest) {
    if (argc >= 4 && strcmp(argv[1], "symlink") == 0)
        return symlink(argv[2], argv[3]) == 0 ? 0 : errno;
    if (argc >= 4 && strcmp(argv[1], "hardlink") == 0)
        return link(argv[2], argv[3]) == 0 ? 0 : errno;
    if (argc >= 3 && strcmp(argv[1], "fifo") == 0)
        return mkfifo(argv[2], 0666) == 0 ? 0 : errno;
    if (argc >= 4 && strcmp(argv[1], "dir") == 0) {
        if (mkdir(argv[2], 0700) != 0)
            return errno;
        return chmod(argv[2], (mode_t)strtol(argv[3], NULL, 8)) == 0 ? 0 : errno;
    }
    if (argc >= 3 && strcmp(argv[1], "socket") == 0) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        if (strlen(argv[2]) >= sizeof sa.sun_path)
            return ENAMETOOLONG;
        strcpy(sa.sun_path, argv[2]);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s < 0)
            return errno;
        int rc = bind(s, (struct sockaddr *)&sa, sizeof sa) == 0 ? 0 : errno;
        close(s); /* the name stays, nobody listens: connect gets ECONNREFUSED */
        return rc;
    }
    if (argc >= 4 && strcmp(argv[1], "file") == 0) {
        mode_t mode = (mode_t)strtol(argv[3], NULL, 8);
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
        if (fd < 0)
            return errno;
        int rc = 0;
        if (rest && strcmp(rest, "-") != 0) {
            size_t n = unescape(rest);
            if (write(fd, rest, n) != (ssize_t)n)
                rc = EIO;
        }
        if (fchmod(fd, mode) != 0 && rc == 0)
            rc = errno;
        close(fd);
        return rc;
    }
    return EINVAL;
}

/* The text after the first `skip` words of the original line. */
static char *rest_after(char *orig, int skip) {
    char *p = orig;
    for (int i = 0; i < skip; i++) {
        while (*p == ' ')
            p++;
        while (*p && *p != ' ')
            p++;
    }
    if (*p == ' ')
        p++;
    return *p ? p : NULL;
}

static int parse_ids(char **w, int n, uint64_t *ids) {
    for (int i = 0; i < n; i++)
        ids[i] = strtoull(w[i], NULL, 10);
    return n;
}

static void out_ids(const char *key, const uint64_t *ids, size_t n) {
    out_add(" %s=", key);
    for (size_t i = 0; i < n && out_len < sizeof out - 64; i++)
        out_add(i ? ",%llu" : "%llu", (unsigned long long)ids[i]);
}

/* ---- the commands ---- */

static void command(char *line) {
    char orig[LINE_MAX_LEN];
    snprintf(orig, sizeof orig, "%s", line);
    char *w[64];
    int argc = split(line, w, 64);
    if (argc == 0) {
        reply_simple(EINVAL);
        return;
    }
    const char *c = w[0];
    double t0 = now_ms();
    int rc;

    if (strcmp(c, "create") == 0 && argc >= 2) {
        nfslock *l = NULL;
        rc = nfslock_create(w[1], "hostile", &l);
        reply_start(rc, now_ms() - t0);
        if (rc == 0 && n_handles < MAX_HANDLES)
            handles[n_handles++] = l;
        reply_end(rc, 1);
    } else if (strcmp(c, "blocking") == 0 && argc >= 3) {
        nfslock *l = NULL;
        rc = nfslock_blocking_create(w[1], "hostile", strtoll(w[2], NULL, 10), &l);
        reply_start(rc, now_ms() - t0);
        if (rc == 0 && n_handles < MAX_HANDLES)
            handles[n_handles++] = l;
        reply_end(rc, 1);
    } else if (strcmp(c, "unlock") == 0) {
        if (n_handles == 0) {
            reply_simple(ENOENT);
            return;
        }
        rc = nfslock_unlock(handles[--n_handles]);
        reply_start(rc, now_ms() - t0);
        reply_end(rc, 1);
    } else if (strcmp(c, "unlock_path") == 0 && argc >= 2) {
        rc = nfslock_unlock_path(w[1]);
        reply_start(rc, now_ms() - t0);
        reply_end(rc, 1);
    } else if (strcmp(c, "read") == 0 && argc >= 2) {
        char host[300] = "";
        int32_t pid = 0;
        rc = nfslock_get_hostname_and_pid(w[1], host, sizeof host, &pid);
        reply_start(rc, now_ms() - t0);
        if (rc == 0)
            out_add(" host=%s pid=%d", host, (int)pid);
        reply_end(rc, 1);
    } else if (strcmp(c, "message") == 0 && argc >= 2) {
        char msg[70000];
        rc = nfslock_get_message(w[1], msg, sizeof msg);
        reply_start(rc, now_ms() - t0);
        reply_end(rc, 1);
    } else if (strcmp(c, "cycles") == 0 && argc >= 3) {
        long n = strtol(w[2], NULL, 10), done = 0;
        rc = 0;
        for (; done < n; done++) {
            nfslock *l = NULL;
            rc = nfslock_create(w[1], "hostile", &l);
            if (rc == 0)
                rc = nfslock_unlock(l);
            if (rc != 0)
                break;
        }
        reply_start(rc, now_ms() - t0);
        out_add(" done=%ld", done);
        reply_end(rc, 1);
    } else if (strcmp(c, "paths") == 0 && argc >= 4) {
        long np = strtol(w[2], NULL, 10), cycles = strtol(w[3], NULL, 10), done = 0;
        rc = 0;
        char p[4200];
        for (long i = 0; i < cycles && rc == 0; i++, done++) {
            snprintf(p, sizeof p, "%s/p%ld", w[1], i % np);
            nfslock *l = NULL;
            rc = nfslock_create(p, "hostile", &l);
            if (rc == 0)
                rc = nfslock_unlock(l);
        }
        reply_start(rc, now_ms() - t0);
        out_add(" done=%ld", rc == 0 ? done : done - 1);
        reply_end(rc, 1);
    } else if (strcmp(c, "open") == 0 && argc >= 4) {
        if (session) {
            reply_simple(EBUSY);
            return;
        }
        rc = nfslock_session_open(w[1], w[2], (uint32_t)strtoul(w[3], NULL, 10), &session);
        if (rc != 0)
            session = NULL;
        reply_start(rc, now_ms() - t0);
        reply_end(rc, 1);
    } else if (strcmp(c, "make") == 0 && argc >= 2) {
        size_t n = strtoul(w[1], NULL, 10);
        uint64_t ids[64];
        if (!session || n > 64) {
            reply_simple(EINVAL);
            return;
        }
        rc = nfslock_session_make_new_ids(session, n, ids);
        reply_start(rc, now_ms() - t0);
        if (rc == 0)
            out_ids("ids", ids, n);
        reply_end(rc, 1);
    } else if (strcmp(c, "idlog") == 0 && argc >= 2) {
        snprintf(idlog_path, sizeof idlog_path, "%s", w[1]);
        reply_simple(0);
    } else if (strcmp(c, "makeloop") == 0 && argc >= 2) {
        long n = strtol(w[1], NULL, 10), done = 0;
        uint64_t first = 0, last = 0;
        int increasing = 1;
        FILE *log = idlog_path[0] ? fopen(idlog_path, "a") : NULL;
        rc = session ? 0 : EINVAL;
        for (; rc == 0 && done < n; done++) {
            uint64_t id;
            rc = nfslock_session_make_new_ids(session, 1, &id);
            if (rc != 0)
                break;
            if (done == 0)
                first = id;
            else if (id <= last)
                increasing = 0;
            last = id;
            if (log)
                fprintf(log, "%llu\n", (unsigned long long)id);
        }
        if (log)
            fclose(log);
        reply_start(rc, now_ms() - t0);
        out_add(" done=%ld first=%llu last=%llu increasing=%d", done, (unsigned long long)first,
                (unsigned long long)last, increasing);
        reply_end(rc, 1);
    } else if ((strcmp(c, "lock_ids") == 0 || strcmp(c, "release_ids") == 0) && argc >= 2) {
        uint64_t ids[64], got[64];
        size_t n = (size_t)parse_ids(w + 1, argc - 1 > 64 ? 64 : argc - 1, ids), n_got = 0;
        int locking = c[0] == 'l';
        if (!session) {
            reply_simple(EINVAL);
            return;
        }
        rc = locking ? nfslock_session_lock_ids(session, ids, n, got, &n_got)
                     : nfslock_session_release_ids(session, ids, n, got, &n_got);
        reply_start(rc, now_ms() - t0);
        if (rc == 0)
            out_ids(locking ? "locked" : "released", got, n_got);
        reply_end(rc, 1);
    } else if (strcmp(c, "check") == 0) {
        rc = session ? nfslock_session_check(session) : EINVAL;
        reply_start(rc, now_ms() - t0);
        reply_end(rc, 1);
    } else if (strcmp(c, "reap") == 0) {
        size_t n = 0;
        rc = session ? nfslock_session_reap_locks(session, &n) : EINVAL;
        reply_start(rc, now_ms() - t0);
        out_add(" reaped=%zu", n);
        reply_end(rc, 1);
    } else if (strcmp(c, "close") == 0) {
        rc = session ? nfslock_session_close(session) : EINVAL;
        session = NULL;
        reply_start(rc, now_ms() - t0);
        reply_end(rc, 1);
    } else if (strcmp(c, "rlimit") == 0 && argc >= 2) {
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = strtoul(w[1], NULL, 10);
        reply_simple(setrlimit(RLIMIT_NOFILE, &rl) == 0 ? 0 : errno);
    } else if (strcmp(c, "exhaust") == 0 && argc >= 2) {
        int leave = atoi(w[1]), e = 0;
        while (n_fillers < MAX_FILLERS) {
            int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                e = errno;
                break;
            }
            fillers[n_fillers++] = fd;
        }
        for (int i = 0; i < leave && n_fillers > 0; i++)
            close(fillers[--n_fillers]);
        reply_start(e == EMFILE ? 0 : (e ? e : ENOSPC), 0);
        out_add(" opened=%d", n_fillers);
        reply_end(1, 0);
    } else if (strcmp(c, "free") == 0) {
        while (n_fillers > 0)
            close(fillers[--n_fillers]);
        reply_simple(0);
    } else if (strcmp(c, "fds") == 0) {
        int n = count_fds();
        reply_start(n < 0 ? errno : 0, 0);
        out_add(" n=%d", n);
        reply_end(1, 0);
    } else if (strcmp(c, "openprobe") == 0) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        rc = fd < 0 ? errno : 0;
        if (fd >= 0)
            close(fd);
        reply_simple(rc);
    } else if (strcmp(c, "storm") == 0 && argc >= 2) {
        rc = storm(strcmp(w[1], "on") == 0);
        reply_start(rc, 0);
        out_add(" signals=%ld", (long)signals_seen);
        reply_end(1, 0);
    } else if (strcmp(c, "thread_hold") == 0 && argc >= 2) {
        snprintf(holder_path, sizeof holder_path, "%s", w[1]);
        holder_state = 0;
        if (pthread_create(&holder_thread, NULL, holder_main, NULL) != 0) {
            reply_simple(EAGAIN);
            return;
        }
        pthread_mutex_lock(&holder_mu);
        while (holder_state == 0)
            pthread_cond_wait(&holder_cv, &holder_mu);
        rc = holder_rc;
        pthread_mutex_unlock(&holder_mu);
        reply_start(rc, now_ms() - t0);
        reply_end(rc, 0);
    } else if (strcmp(c, "thread_release") == 0) {
        pthread_mutex_lock(&holder_mu);
        holder_state = 2;
        pthread_cond_broadcast(&holder_cv);
        while (holder_state != 3)
            pthread_cond_wait(&holder_cv, &holder_mu);
        rc = holder_unlock_rc;
        pthread_mutex_unlock(&holder_mu);
        pthread_join(holder_thread, NULL);
        reply_simple(rc);
    } else if (strcmp(c, "entries") == 0 && argc >= 2) {
        DIR *d = opendir(w[1]);
        if (!d) {
            reply_simple(errno);
            return;
        }
        reply_start(0, 0);
        out_add(" entries=");
        struct dirent *e;
        int first = 1;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue;
            out_add("%s%s:%c:%u:%llu:%lu", first ? "" : ",", e->d_name, type_of(st.st_mode),
                    (unsigned)st.st_uid, (unsigned long long)st.st_ino, (unsigned long)st.st_nlink);
            first = 0;
        }
        closedir(d);
        reply_end(0, 0);
    } else if (strcmp(c, "inode") == 0 && argc >= 2) {
        struct stat st;
        if (lstat(w[1], &st) != 0) {
            reply_simple(errno);
            return;
        }
        reply_start(0, 0);
        out_add(" ino=%llu type=%c uid=%u nlink=%lu", (unsigned long long)st.st_ino, type_of(st.st_mode),
                (unsigned)st.st_uid, (unsigned long)st.st_nlink);
        reply_end(0, 0);
    } else if (strcmp(c, "plant") == 0 && argc >= 2) {
        reply_simple(plant(argc, w, strcmp(w[1], "file") == 0 ? rest_after(orig, 4) : NULL));
    } else if (strcmp(c, "pid") == 0) {
        reply_start(0, 0);
        out_add(" pid=%d", (int)getpid());
        reply_end(0, 0);
    } else if (strcmp(c, "sleep") == 0 && argc >= 2) {
        double until = now_ms() + strtod(w[1], NULL);
        while (now_ms() < until) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        reply_simple(0);
    } else {
        reply_simple(EINVAL);
    }
}

int main(void) {
    char line[LINE_MAX_LEN];
    while (read_line(line, sizeof line)) {
        if (strcmp(line, "quit") == 0)
            break;
        command(line);
    }
    if (storming)
        storm(0);
    return 0;
}
