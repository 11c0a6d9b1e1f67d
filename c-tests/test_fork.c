/*
 * Fork and threads, through the header only.
 *
 * The matrix: for each kind of parent (one that never used the library; held and
 * released locks; waited in blocking_create; used critical_section; opened a session and
 * made IDs; made IDs with two sessions at once; holds locks at fork time; has other
 * threads inside the library at fork time), the parent forks six children that contend
 * on one lock for 300 rounds each (blocking_create, read-modify-write of a counter file,
 * an O_EXCL marker created and removed inside the critical section, unlock) and six that
 * open sessions on one repository and make IDs, while the parent keeps making IDs of
 * its own. The children start together, and a lock child makes a new claim file every 10
 * rounds, so that siblings drawing the same "unpredictable" names would meet on them.
 * Every round must run alone (the marker's O_EXCL never fails, every unlock returns 0,
 * the counter ends exact), every ID is issued once across all of them, and no
 * session_open fails (a child that draws its parent's or a sibling's names gets EEXIST).
 * Each kind runs with the children forked by the main thread and by another thread.
 *
 * Then the descriptors a child inherits: a parent killed while holding locks must not be
 * kept "alive" by its forked children (another thread was inside create/unlock at each
 * fork): every lock it held is taken within 5 s while they live. Children it started
 * with posix_spawn or vfork+exec hold no descriptor of the library at all, and its locks
 * and session ID are taken over at once.
 */
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- counts of the matrix --------------------------------------------------------- */

#define LOCK_CHILDREN 6
#define LOCK_ROUNDS 300
#define ID_CHILDREN 6
/* Each ID child opens this many sessions one after the other, making IDs in each. */
#define ID_OPENS 4
#define ID_CALLS 25
/* make_new_ids asks for 1, 2 or 3 IDs in turn. */
#define IDS_PER_CALL_MAX 3
#define CHILD_IDS (ID_OPENS * ID_CALLS * IDS_PER_CALL_MAX)
/* Paths the parent's busy threads lock and unlock: more than the library keeps claims
 * for (64), so claim files are created and removed all the time as well. */
#define BUSY_PATHS 80
/* The most busy paths a busy thread keeps once stopped. */
#define HELD_MAX 4
/* At most this many failures of one kind are printed per process (all are counted). */
#define PRINTED 3

/* ---- IDs ------------------------------------------------------------------------- */

struct idset {
    size_t n, cap;
    uint64_t *ids;
    int errors; /* failed or malformed make_new_ids calls */
};

static void idset_init(struct idset *set, size_t cap)
{
    set->n = 0;
    set->cap = cap;
    set->errors = 0;
    set->ids = malloc(cap * sizeof *set->ids);
    REQUIRE(set->ids != NULL);
}

static void idset_free(struct idset *set)
{
    free(set->ids);
    set->ids = NULL;
    set->n = set->cap = 0;
}

/* One make_new_ids call of n IDs on s, appended to set; 0 when it went well. */
static int make_ids_once(nfslock_session *s, size_t n, struct idset *set, const char *who)
{
    uint64_t buf[IDS_PER_CALL_MAX] = {0};
    int rc = nfslock_session_make_new_ids(s, n, buf);
    if (rc != 0) {
        if (set->errors++ < PRINTED)
            t_fail(__FILE__, __LINE__, "%s (pid %d): make_new_ids(%zu): %s (%s)", who,
                   (int)getpid(), n, errname(rc), nfslock_last_error());
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && buf[i] != buf[i - 1] + 1) {
            if (set->errors++ < PRINTED)
                t_fail(__FILE__, __LINE__, "%s: make_new_ids(%zu) gave %llu after %llu", who, n,
                       (unsigned long long)buf[i], (unsigned long long)buf[i - 1]);
        }
        if (set->n < set->cap)
            set->ids[set->n++] = buf[i];
        else if (set->errors++ < PRINTED)
            t_fail(__FILE__, __LINE__, "%s: more IDs than the test has room for", who);
    }
    return 0;
}

/* `calls` make_new_ids calls of 1, 2, 3, 1, ... IDs. */
static void make_ids(nfslock_session *s, int calls, struct idset *set, const char *who)
{
    for (int j = 0; j < calls; j++)
        make_ids_once(s, 1 + (size_t)(j % IDS_PER_CALL_MAX), set, who);
}

struct owned_id {
    uint64_t id;
    int owner;
};

static int by_id(const void *a, const void *b)
{
    uint64_t x = ((const struct owned_id *)a)->id, y = ((const struct owned_id *)b)->id;
    return x < y ? -1 : x > y;
}

/* Checks that no ID is in two places (or twice in one); returns the number of IDs. */
static size_t check_unique(const struct idset *const *sets, const char *const *owners, int n_sets)
{
    size_t total = 0;
    for (int i = 0; i < n_sets; i++)
        total += sets[i]->n;
    struct owned_id *all = malloc((total + 1) * sizeof *all);
    REQUIRE(all != NULL);
    size_t k = 0;
    for (int i = 0; i < n_sets; i++)
        for (size_t j = 0; j < sets[i]->n; j++)
            all[k++] = (struct owned_id){sets[i]->ids[j], i};
    qsort(all, total, sizeof *all, by_id);
    size_t dups = 0;
    for (size_t j = 1; j < total; j++) {
        if (all[j].id != all[j - 1].id)
            continue;
        if (dups++ < 5)
            t_fail(__FILE__, __LINE__, "ID %llu was issued to %s and to %s",
                   (unsigned long long)all[j].id, owners[all[j - 1].owner], owners[all[j].owner]);
    }
    CHECKF(dups == 0, "%zu of %zu IDs were issued more than once", dups, total);
    free(all);
    return total;
}

/* ---- threads a parent keeps inside the library ------------------------------------ */

struct busy {
    pthread_t th;
    int running;
    atomic_int stop;
    atomic_long cycles;
    char dir[PATH_MAX];   /* the lock cycler's directory */
    int paths;            /* how many paths it cycles (0: BUSY_PATHS) */
    int hold_at_stop;     /* once stopped, it takes busy-0 .. busy-(this - 1) and keeps them */
    atomic_int holding;   /* 1: it holds them for good; -1: it could not take them */
    nfslock_session *s;   /* the ID maker's session (NULL for the lock cycler) */
    struct idset ids;     /* what the ID maker was issued */
    int errors;
};

static void busy_path(char *out, size_t cap, const char *dir, long i)
{
    snprintf(out, cap, "%s/busy-%ld", dir, i);
}

static int nothing(void *ctx)
{
    (void)ctx;
    return 0;
}

/* Locks and unlocks the busy paths one after the other, through each entry point. */
static void *busy_locks(void *arg)
{
    struct busy *b = arg;
    long paths = b->paths ? b->paths : BUSY_PATHS;
    for (long i = 0; !atomic_load(&b->stop); i++) {
        char path[PATH_MAX + 32];
        busy_path(path, sizeof path, b->dir, i % paths);
        nfslock *lock = NULL;
        int rc, result = 0;
        switch (i % 3) {
        case 0: rc = nfslock_create(path, "busy", &lock); break;
        case 1: rc = nfslock_blocking_create(path, "busy", 1000, &lock); break;
        default:
            rc = nfslock_critical_section(path, "busy", 1000, nothing, NULL, &result);
            break;
        }
        if (rc == 0 && i % 3 != 2)
            rc = nfslock_unlock(lock);
        if (rc != 0 && b->errors++ < PRINTED)
            t_fail(__FILE__, __LINE__, "busy thread of pid %d, %s: %s (%s)", (int)getpid(), path,
                   errname(rc), nfslock_last_error());
        atomic_fetch_add(&b->cycles, 1);
    }
    int rc = 0;
    for (int i = 0; i < b->hold_at_stop && i < HELD_MAX && rc == 0; i++) {
        char path[PATH_MAX + 32];
        busy_path(path, sizeof path, b->dir, i);
        static nfslock *kept[HELD_MAX]; /* reachable: held until the process is killed */
        rc = nfslock_blocking_create(path, "busy", 5000, &kept[i]);
        if (rc != 0)
            t_fail(__FILE__, __LINE__, "busy thread of pid %d, %s: %s (%s)", (int)getpid(), path,
                   errname(rc), nfslock_last_error());
    }
    if (b->hold_at_stop)
        atomic_store(&b->holding, rc == 0 ? 1 : -1);
    return NULL;
}

/* Makes one ID after another on its session. */
static void *busy_ids(void *arg)
{
    struct busy *b = arg;
    while (!atomic_load(&b->stop) && b->ids.n < b->ids.cap) {
        make_ids_once(b->s, 1, &b->ids, "busy ID thread");
        atomic_fetch_add(&b->cycles, 1);
    }
    return NULL;
}

/* Starts a busy thread and returns once it has been round its loop `warm` times. */
static void busy_start(struct busy *b, void *(*fn)(void *), long warm)
{
    atomic_store(&b->stop, 0);
    atomic_store(&b->cycles, 0);
    REQUIRE(pthread_create(&b->th, NULL, fn, b) == 0);
    b->running = 1;
    long long until = now_ms() + 20000LL * t_time_scale;
    while (atomic_load(&b->cycles) < warm && now_ms() < until)
        sleep_ms(1);
    CHECKF(atomic_load(&b->cycles) >= warm, "the busy thread did %ld cycles in 20 s",
           atomic_load(&b->cycles));
}

static void busy_stop(struct busy *b)
{
    if (!b->running)
        return;
    atomic_store(&b->stop, 1);
    pthread_join(b->th, NULL);
    b->running = 0;
    CHECKF(b->errors == 0 && b->ids.errors == 0, "%d failures in a busy thread",
           b->errors + b->ids.errors);
}

/* Stops a busy thread started with hold_at_stop; returns 0 once it holds its paths. */
static int busy_hold(struct busy *b)
{
    atomic_store(&b->stop, 1);
    long long until = now_ms() + 10000LL * t_time_scale;
    while (atomic_load(&b->holding) == 0 && now_ms() < until)
        sleep_ms(1);
    return atomic_load(&b->holding) == 1 ? 0 : ENOLCK;
}

/* ---- the matrix -------------------------------------------------------------------- */

enum kind {
    K_FRESH,        /* never used the library */
    K_LOCKED,       /* held and released locks */
    K_WAITED,       /* waited in blocking_create (ETIMEDOUT, then woken by a release) */
    K_CRITICAL,     /* used critical_section */
    K_SESSION,      /* has an open session that made IDs; goes on making IDs */
    K_TWO_SESSIONS, /* two sessions made IDs concurrently (combining); go on doing so */
    K_HOLDING,      /* holds the children's lock and another at fork time */
    K_BUSY,         /* a thread cycling locks and one making IDs run while it forks */
};

/* Each completes "a parent that ...". */
static const char *const kind_names[] = {
    "never used the library",
    "held and released locks",
    "waited in blocking_create",
    "used critical_section",
    "opened a session and made IDs",
    "made IDs with two sessions concurrently",
    "held locks at fork time",
    "had threads inside the library at fork time",
};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == K_BUSY + 1, "a name for each kind");

struct lock_report {
    atomic_int rounds;
    atomic_int create_errors;
    atomic_int collisions; /* the marker's O_EXCL failed: someone else was inside */
    atomic_int unlock_errors;
    atomic_int counter_errors;
};

struct id_report {
    atomic_int tried;  /* first session_open attempted */
    atomic_int opened; /* sessions opened */
    atomic_int open_errors;
    atomic_int eexist; /* of which EEXIST */
    atomic_int close_errors;
    struct idset set;
    uint64_t ids[CHILD_IDS];
};

/* wait_children tells the two kinds apart by their alternating order. */
_Static_assert(LOCK_CHILDREN == ID_CHILDREN, "lock and ID children are forked in pairs");

/* Shared with the children (MAP_SHARED): what each of them did. */
struct shared {
    struct lock_report lock[LOCK_CHILDREN];
    struct id_report id[ID_CHILDREN];
};

struct matrix {
    enum kind kind;
    int from_thread;
    char dir[PATH_MAX];     /* the locks' directory */
    char path[PATH_MAX];    /* the children's lock */
    char other[PATH_MAX];   /* another lock of the parent's */
    char counter[PATH_MAX]; /* incremented under the lock */
    char marker[PATH_MAX];  /* exists exactly while someone is inside */
    char repo[PATH_MAX];    /* the session repository */
    struct shared *sh;
    nfslock *held_path, *held_other;
    nfslock_session *s[2];
    struct idset before[2]; /* the parent's sessions' IDs */
    struct idset after;     /* the session the parent opens after the children did */
    struct busy locker, idmaker;
    pthread_t idjob[2];
    int idjobs;
    int start[2]; /* the children start together when the parent closes start[1] */
};

/* Every lock child takes a new message, and so makes a new claim file, every this many
 * rounds: siblings that drew the same names would collide on them. */
#define ROUNDS_PER_MESSAGE 10

/* In a child: waits until the parent lets all of them go at once. */
static void wait_for_start(struct matrix *m)
{
    close(m->start[1]);
    char c;
    while (read(m->start[0], &c, 1) < 0 && errno == EINTR) {
    }
    close(m->start[0]);
}

/* A child contending on the lock; returns its number of failed checks. */
static int lock_child(struct matrix *m, int k)
{
    struct lock_report *r = &m->sh->lock[k];
    char who[32];
    snprintf(who, sizeof who, "lock child %d (pid %d)", k, (int)getpid());
    for (int i = 0; i < LOCK_ROUNDS; i++) {
        char message[64];
        snprintf(message, sizeof message, "%s, rounds from %d", who,
                 i - i % ROUNDS_PER_MESSAGE);
        nfslock *lock = NULL;
        int rc = nfslock_blocking_create(m->path, message, 30000LL * t_time_scale, &lock);
        if (rc != 0) {
            if (atomic_fetch_add(&r->create_errors, 1) < PRINTED)
                t_fail(__FILE__, __LINE__, "%s round %d: blocking_create: %s (%s)", who, i,
                       errname(rc), nfslock_last_error());
            continue;
        }
        /* If anyone else were inside, their marker would be there. */
        int fd = open(m->marker, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0 && atomic_fetch_add(&r->collisions, 1) < PRINTED)
            t_fail(__FILE__, __LINE__, "%s round %d: marker: %s: two holders at once", who, i,
                   strerror(errno));
        char *text = read_file(m->counter, NULL);
        if (text == NULL) {
            if (atomic_fetch_add(&r->counter_errors, 1) < PRINTED)
                t_fail(__FILE__, __LINE__, "%s round %d: counter unreadable", who, i);
        } else {
            char buf[32];
            write_file(m->counter, buf, (size_t)snprintf(buf, sizeof buf, "%ld", atol(text) + 1));
            free(text);
        }
        if (fd >= 0) {
            close(fd);
            unlink(m->marker);
        }
        rc = nfslock_unlock(lock);
        if (rc != 0 && atomic_fetch_add(&r->unlock_errors, 1) < PRINTED)
            t_fail(__FILE__, __LINE__, "%s round %d: unlock: %s (%s)", who, i, errname(rc),
                   nfslock_last_error());
        atomic_fetch_add(&r->rounds, 1);
    }
    return 0;
}

/* A child opening sessions one after another and making IDs in each. */
static int id_child(struct matrix *m, int k)
{
    struct id_report *r = &m->sh->id[k];
    char who[32];
    snprintf(who, sizeof who, "ID child %d (pid %d)", k, (int)getpid());
    for (int o = 0; o < ID_OPENS; o++) {
        nfslock_session *s = NULL;
        int rc = nfslock_session_open(m->repo, NULL, 0, &s);
        atomic_store(&r->tried, 1);
        if (rc != 0) {
            if (rc == EEXIST)
                atomic_fetch_add(&r->eexist, 1);
            if (atomic_fetch_add(&r->open_errors, 1) < PRINTED)
                t_fail(__FILE__, __LINE__, "%s: session_open #%d: %s (%s)", who, o, errname(rc),
                       nfslock_last_error());
            continue;
        }
        atomic_fetch_add(&r->opened, 1);
        make_ids(s, ID_CALLS, &r->set, who);
        rc = nfslock_session_close(s);
        if (rc != 0 && atomic_fetch_add(&r->close_errors, 1) < PRINTED)
            t_fail(__FILE__, __LINE__, "%s: session_close #%d: %s (%s)", who, o, errname(rc),
                   nfslock_last_error());
    }
    return 0;
}

static nfslock_session *parent_session(struct matrix *m)
{
    nfslock_session *s = NULL;
    int rc = nfslock_session_open(m->repo, NULL, 0, &s);
    if (rc != 0) {
        t_fail(__FILE__, __LINE__, "parent (pid %d): session_open: %s (%s)", (int)getpid(),
               errname(rc), nfslock_last_error());
        t_abort();
    }
    return s;
}

struct idjob {
    nfslock_session *s;
    struct idset *set;
    const char *who;
    int calls;
};

static void *run_idjob(void *arg)
{
    struct idjob *j = arg;
    make_ids(j->s, j->calls, j->set, j->who);
    return NULL;
}

static struct idjob idjobs_of(struct matrix *m, int i, int calls)
{
    return (struct idjob){m->s[i], &m->before[i], i ? "parent session 1" : "parent session 0",
                          calls};
}

static int count_calls(void *ctx)
{
    return ++*(int *)ctx;
}

struct delayed_release {
    struct holder *h;
    int rc;
};

static void *release_later(void *arg)
{
    struct delayed_release *d = arg;
    sleep_ms(200);
    d->rc = holder_release(d->h);
    return NULL;
}

/* What the parent does before it forks. */
static void parent_before(struct matrix *m)
{
    nfslock *lock = NULL;
    switch (m->kind) {
    case K_FRESH:
        break;
    case K_LOCKED:
        for (int i = 0; i < 3; i++) {
            REQUIRE_RC(nfslock_create(m->path, "parent", &lock), 0);
            CHECK_RC(nfslock_unlock(lock), 0);
        }
        REQUIRE_RC(nfslock_blocking_create(m->other, "parent", 1000, &lock), 0);
        CHECK_RC(nfslock_unlock(lock), 0);
        break;
    case K_WAITED: {
        struct holder h;
        holder_start(&h, m->path, "holder");
        REQUIRE_RC(h.rc, 0);
        CHECK_RC(nfslock_blocking_create(m->path, "parent", 150, &lock), ETIMEDOUT);
        struct delayed_release d = {&h, -1};
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, release_later, &d) == 0);
        int rc = nfslock_blocking_create(m->path, "parent", 10000LL * t_time_scale, &lock);
        pthread_join(th, NULL);
        CHECK_RC(d.rc, 0);
        REQUIRE_RC(rc, 0);
        CHECK_RC(nfslock_unlock(lock), 0);
        break;
    }
    case K_CRITICAL: {
        int calls = 0, result = -1;
        for (int i = 0; i < 3; i++)
            CHECK_RC(nfslock_critical_section(m->path, "parent", 1000, count_calls, &calls,
                                              &result),
                     0);
        CHECK(calls == 3 && result == 3);
        break;
    }
    case K_SESSION:
        m->s[0] = parent_session(m);
        make_ids(m->s[0], 10, &m->before[0], "parent session 0");
        break;
    case K_TWO_SESSIONS: {
        m->s[0] = parent_session(m);
        m->s[1] = parent_session(m);
        struct idjob j[2] = {idjobs_of(m, 0, 20), idjobs_of(m, 1, 20)};
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            REQUIRE(pthread_create(&th[i], NULL, run_idjob, &j[i]) == 0);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        break;
    }
    case K_HOLDING:
        REQUIRE_RC(nfslock_create(m->path, "parent", &m->held_path), 0);
        REQUIRE_RC(nfslock_create(m->other, "parent other", &m->held_other), 0);
        break;
    case K_BUSY:
        m->s[0] = parent_session(m);
        snprintf(m->locker.dir, sizeof m->locker.dir, "%s", m->dir);
        busy_start(&m->locker, busy_locks, 20);
        m->idmaker.s = m->s[0];
        idset_init(&m->idmaker.ids, 1 << 16);
        busy_start(&m->idmaker, busy_ids, 5);
        break;
    }
}

static struct idjob parent_jobs[2];

/* What the parent does once its children are forked, while they run. */
static void parent_after_fork(struct matrix *m)
{
    switch (m->kind) {
    case K_SESSION:
    case K_TWO_SESSIONS:
        /* The parent's sessions go on making IDs alongside the children's. */
        m->idjobs = m->kind == K_SESSION ? 1 : 2;
        for (int i = 0; i < m->idjobs; i++) {
            parent_jobs[i] = idjobs_of(m, i, 25);
            REQUIRE(pthread_create(&m->idjob[i], NULL, run_idjob, &parent_jobs[i]) == 0);
        }
        break;
    case K_HOLDING: {
        /* The children wait for the parent's lock, and then get it. */
        sleep_ms(200);
        char host[256];
        int32_t pid = 0;
        CHECK_RC(nfslock_get_hostname_and_pid(m->path, host, sizeof host, &pid), 0);
        CHECKF(pid == getpid(), "the parent's lock names pid %d", (int)pid);
        CHECK_RC(nfslock_unlock(m->held_path), 0);
        break;
    }
    case K_BUSY:
        busy_stop(&m->locker);
        busy_stop(&m->idmaker);
        break;
    default:
        break;
    }
}

/* What the parent does once its children are done. */
static void parent_end(struct matrix *m)
{
    for (int i = 0; i < m->idjobs; i++)
        pthread_join(m->idjob[i], NULL);
    if (m->kind == K_SESSION)
        make_ids(m->s[0], 10, &m->before[0], "parent session 0");
    for (int i = 0; i < 2; i++)
        if (m->s[i] != NULL)
            CHECK_RC(nfslock_session_close(m->s[i]), 0);
    if (m->kind == K_HOLDING) {
        /* Nothing the children did (their exits included) touched the parent's other lock. */
        char msg[32];
        CHECK_RC(nfslock_get_message(m->other, msg, sizeof msg), 0);
        CHECK_STR(msg, "parent other");
        CHECK_RC(nfslock_unlock(m->held_other), 0);
    }
}

/* Waits for the children until `deadline_ms`; kills and reports those still running. */
static void wait_children(struct matrix *m, const pid_t *pids, int n, long long deadline_ms)
{
    int status[LOCK_CHILDREN + ID_CHILDREN];
    int left = n;
    for (int i = 0; i < n; i++)
        status[i] = -2;
    while (left > 0) {
        for (int i = 0; i < n; i++) {
            int st;
            if (status[i] != -2 || waitpid(pids[i], &st, WNOHANG) != pids[i])
                continue;
            status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            left--;
        }
        if (left == 0)
            break;
        if (now_ms() > deadline_ms) {
            for (int i = 0; i < n; i++) {
                if (status[i] != -2)
                    continue;
                kill(pids[i], SIGKILL);
                wait_status(pids[i]);
                int lock = i % 2 == 0;
                int k = i / 2;
                t_fail(__FILE__, __LINE__, "%s child %d (pid %d) still running at the deadline "
                       "(%d of its rounds or sessions done): killed", lock ? "lock" : "ID", k,
                       (int)pids[i],
                       lock ? atomic_load(&m->sh->lock[k].rounds)
                            : atomic_load(&m->sh->id[k].opened));
            }
            return;
        }
        sleep_ms(5);
    }
    for (int i = 0; i < n; i++)
        CHECKF(status[i] == 0, "%s child %d (pid %d) ended with status %d",
               i % 2 == 0 ? "lock" : "ID", i / 2, (int)pids[i], status[i]);
}

static void *matrix_body(void *arg)
{
    struct matrix *m = arg;
    const char *where = m->from_thread ? "a second thread" : "the main thread";
    parent_before(m);
    REQUIRE(pipe2(m->start, O_CLOEXEC) == 0);

    /* Lock and ID children alternately, a moment apart, so that forks land at different
     * points of the busy threads' calls. */
    pid_t pids[LOCK_CHILDREN + ID_CHILDREN];
    int n = 0;
    for (int k = 0; k < LOCK_CHILDREN || k < ID_CHILDREN; k++) {
        for (int lock = 1; lock >= 0; lock--) {
            if (k >= (lock ? LOCK_CHILDREN : ID_CHILDREN))
                continue;
            pid_t pid = fork_flushed();
            REQUIRE(pid >= 0);
            if (pid == 0) {
                int before = atomic_load(&t_failures);
                wait_for_start(m);
                if (lock)
                    lock_child(m, k);
                else
                    id_child(m, k);
                fflush(stdout);
                /* exit(): the library's at-exit handler runs as in a real program. */
                exit(atomic_load(&t_failures) > before ? 1 : 0);
            }
            pids[n++] = pid;
            sleep_ms(2);
        }
    }
    close(m->start[0]);
    close(m->start[1]); /* go */
    parent_after_fork(m);

    /* The parent opens a session after all its ID children did (a parent whose names its
     * children drew gets EEXIST), and makes IDs alongside them. */
    long long until = now_ms() + 30000LL * t_time_scale;
    for (int k = 0; k < ID_CHILDREN; k++)
        while (!atomic_load(&m->sh->id[k].tried) && now_ms() < until)
            sleep_ms(1);
    nfslock_session *after = NULL;
    int rc = nfslock_session_open(m->repo, NULL, 0, &after);
    CHECKF(rc == 0, "the parent's session_open after its children's: %s (%s)", errname(rc),
           nfslock_last_error());
    if (rc == 0)
        make_ids(after, 25, &m->after, "parent session opened after the children's");

    wait_children(m, pids, n, now_ms() + 90000LL * t_time_scale);
    if (after != NULL)
        CHECK_RC(nfslock_session_close(after), 0);
    parent_end(m);

    /* Every round ran alone and counted once. */
    int rounds = 0, create_errors = 0, collisions = 0, unlock_errors = 0;
    for (int k = 0; k < LOCK_CHILDREN; k++) {
        rounds += atomic_load(&m->sh->lock[k].rounds);
        create_errors += atomic_load(&m->sh->lock[k].create_errors);
        collisions += atomic_load(&m->sh->lock[k].collisions);
        unlock_errors += atomic_load(&m->sh->lock[k].unlock_errors);
    }
    char *text = read_file(m->counter, NULL);
    long counter = text ? atol(text) : -1;
    free(text);
    int opened = 0, open_errors = 0, eexist = 0, close_errors = 0, id_errors = 0;
    for (int k = 0; k < ID_CHILDREN; k++) {
        opened += atomic_load(&m->sh->id[k].opened);
        open_errors += atomic_load(&m->sh->id[k].open_errors);
        eexist += atomic_load(&m->sh->id[k].eexist);
        close_errors += atomic_load(&m->sh->id[k].close_errors);
        id_errors += m->sh->id[k].set.errors;
    }
    CHECKF(collisions == 0, "%d rounds found another holder inside (the marker existed)",
           collisions);
    CHECKF(unlock_errors == 0, "%d unlocks failed", unlock_errors);
    CHECKF(create_errors == 0, "%d blocking_create calls failed", create_errors);
    CHECKF(counter == LOCK_CHILDREN * LOCK_ROUNDS, "counter %ld after %d rounds, expected %d",
           counter, rounds, LOCK_CHILDREN * LOCK_ROUNDS);
    CHECKF(open_errors == 0, "%d of the children's session_open calls failed, %d with EEXIST",
           open_errors, eexist);
    CHECKF(opened == ID_CHILDREN * ID_OPENS, "%d sessions opened, expected %d", opened,
           ID_CHILDREN * ID_OPENS);
    CHECKF(close_errors == 0, "%d of the children's session_close calls failed", close_errors);
    CHECKF(id_errors == 0, "%d of the children's make_new_ids calls failed", id_errors);
    CHECK(!exists(m->marker));
    CHECKF(!exists(lockfile_of(m->path)), "%s remains", lockfile_of(m->path));

    /* Every ID was issued once, across children, the parent's sessions and its threads. */
    const struct idset *sets[ID_CHILDREN + 4];
    const char *owners[ID_CHILDREN + 4];
    char names[ID_CHILDREN][32];
    int n_sets = 0;
    for (int k = 0; k < ID_CHILDREN; k++) {
        snprintf(names[k], sizeof names[k], "ID child %d", k);
        owners[n_sets] = names[k];
        sets[n_sets++] = &m->sh->id[k].set;
    }
    owners[n_sets] = "parent session 0";
    sets[n_sets++] = &m->before[0];
    owners[n_sets] = "parent session 1";
    sets[n_sets++] = &m->before[1];
    owners[n_sets] = "the parent's session opened after the children's";
    sets[n_sets++] = &m->after;
    owners[n_sets] = "the parent's busy ID thread";
    sets[n_sets++] = &m->idmaker.ids;
    size_t total = check_unique(sets, owners, n_sets);
    CHECKF(total >= (size_t)(ID_CHILDREN * ID_OPENS * ID_CALLS), "only %zu IDs were issued",
           total);

    /* The repository is consistent: nothing dangling, every record readable. */
    nfslock_session *checker = NULL;
    rc = nfslock_session_open(m->repo, "default", 0, &checker);
    CHECKF(rc == 0, "session_open for the check: %s (%s)", errname(rc), nfslock_last_error());
    if (rc == 0) {
        rc = nfslock_session_check(checker);
        CHECKF(rc == 0, "session_check: %s (%s)", errname(rc), nfslock_last_error());
        CHECK_RC(nfslock_session_close(checker), 0);
    }
    if (atomic_load(&t_failures))
        t_fail(__FILE__, __LINE__, "summary for a parent that %s, children forked by %s: "
               "%d/%d rounds, counter %ld, %d marker collisions, %d unlock and %d "
               "blocking_create failures; %d/%d sessions opened (%d open failures, %d EEXIST); "
               "%zu IDs", kind_names[m->kind], where, rounds, LOCK_CHILDREN * LOCK_ROUNDS,
               counter, collisions, unlock_errors, create_errors, opened,
               ID_CHILDREN * ID_OPENS, open_errors, eexist, total);
    return NULL;
}

static void run_matrix(enum kind kind, int from_thread)
{
    static struct matrix m; /* static: large, and reachable from every thread */
    memset(&m, 0, sizeof m);
    m.kind = kind;
    m.from_thread = from_thread;
    snprintf(m.dir, sizeof m.dir, "%s", tp("locks"));
    REQUIRE(mkdir(m.dir, 0755) == 0);
    snprintf(m.path, sizeof m.path, "%s", tp("locks/p"));
    snprintf(m.other, sizeof m.other, "%s", tp("locks/q"));
    snprintf(m.counter, sizeof m.counter, "%s", tp("counter"));
    snprintf(m.marker, sizeof m.marker, "%s", tp("marker"));
    snprintf(m.repo, sizeof m.repo, "%s", tp("repo"));
    write_str(m.counter, "0");
    m.sh = mmap(NULL, sizeof *m.sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m.sh != MAP_FAILED);
    memset(m.sh, 0, sizeof *m.sh);
    for (int k = 0; k < ID_CHILDREN; k++)
        m.sh->id[k].set = (struct idset){0, CHILD_IDS, m.sh->id[k].ids, 0};
    for (int i = 0; i < 2; i++)
        idset_init(&m.before[i], 4096);
    idset_init(&m.after, 4096);

    if (from_thread) {
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, matrix_body, &m) == 0);
        pthread_join(th, NULL);
    } else {
        matrix_body(&m);
    }

    for (int i = 0; i < 2; i++)
        idset_free(&m.before[i]);
    idset_free(&m.after);
    idset_free(&m.idmaker.ids);
    munmap(m.sh, sizeof *m.sh);
}

#define MATRIX(fn, kind)                                                                \
    static void t_fork_##fn##_main(void) { run_matrix(kind, 0); }                       \
    static void t_fork_##fn##_thread(void) { run_matrix(kind, 1); }

MATRIX(fresh, K_FRESH)
MATRIX(locked, K_LOCKED)
MATRIX(waited, K_WAITED)
MATRIX(critical, K_CRITICAL)
MATRIX(session, K_SESSION)
MATRIX(two_sessions, K_TWO_SESSIONS)
MATRIX(holding, K_HOLDING)
MATRIX(busy, K_BUSY)

/* ---- descriptors a child inherits ------------------------------------------------- */

/* How many of process `pid`'s descriptors are open on files under this test's directory
 * or on the library's shared-memory tables; the first ones are listed in `what`. */
static int library_fds(pid_t pid, char *what, size_t cap)
{
    static char dir_real[PATH_MAX];
    if (dir_real[0] == '\0' && realpath(T_DIR, dir_real) == NULL)
        snprintf(dir_real, sizeof dir_real, "%s", T_DIR);
    size_t dir_len = strlen(dir_real);
    char fds[64];
    snprintf(fds, sizeof fds, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(fds);
    if (d == NULL)
        return -1;
    int n = 0;
    size_t used = 0;
    if (cap > 0)
        what[0] = '\0';
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char link[384], target[PATH_MAX];
        snprintf(link, sizeof link, "%s/%s", fds, e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len < 0)
            continue;
        target[len] = '\0';
        int ours = (strncmp(target, dir_real, dir_len) == 0 && target[dir_len] == '/') ||
                   strncmp(target, "/dev/shm/nfslock", 16) == 0;
        if (!ours)
            continue;
        n++;
        if (used < cap) {
            int w = snprintf(what + used, cap - used, "%sfd %s -> %s", used ? ", " : "",
                             e->d_name, target);
            used = w < 0 ? cap : used + (size_t)w;
        }
    }
    closedir(d);
    return n;
}

static int alive(pid_t pid)
{
    return kill(pid, 0) == 0;
}

/* Everything a killed parent left behind (its lock, the paths its busy thread cycled)
 * must be taken by this process within `timeout_ms`; 0 = in one nfslock_create. */
static void take_everything(const char *path, const char *dir, long long timeout_ms,
                            const char *children)
{
    for (int i = -1; i < BUSY_PATHS; i++) {
        char busy[PATH_MAX + 32];
        const char *p = path;
        if (i >= 0) {
            busy_path(busy, sizeof busy, dir, i);
            p = busy;
            if (!exists(lockfile_of(p)))
                continue; /* the busy thread was not holding this one */
        }
        nfslock *lock = NULL;
        long long t0 = now_ms();
        int rc = timeout_ms ? nfslock_blocking_create(p, "taker", timeout_ms, &lock)
                            : nfslock_create(p, "taker", &lock);
        long long took = now_ms() - t0;
        if (rc != 0) {
            t_fail(__FILE__, __LINE__, "taking %s from the killed parent: %s after %lld ms (%s) "
                   "while %s", p, errname(rc), took, nfslock_last_error(), children);
            continue;
        }
        char host[256];
        int32_t pid = 0;
        CHECK_RC(nfslock_get_hostname_and_pid(p, host, sizeof host, &pid), 0);
        CHECK(pid == getpid());
        CHECK_RC(nfslock_unlock(lock), 0);
    }
}

/* ---- finding: forked children keep a killed parent's lock alive --------------------- */

#define SLEEPING_CHILDREN 100

struct family {
    atomic_int forked;
    pid_t pids[SLEEPING_CHILDREN];
    uint64_t id;  /* an ID the parent's session holds */
};

static void t_forked_children_of_killed_holder(void)
{
    REQUIRE(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); /* the orphans become ours to reap */
    char dir[PATH_MAX], path[PATH_MAX + 8];
    snprintf(dir, sizeof dir, "%s", tp("locks"));
    REQUIRE(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/p", dir);
    struct family *f = mmap(NULL, sizeof *f, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                            -1, 0);
    REQUIRE(f != MAP_FAILED);
    memset(f, 0, sizeof *f);
    /* The children block on `hold` until this process closes its end. */
    int hold[2], ready[2];
    REQUIRE(pipe2(hold, O_CLOEXEC) == 0 && pipe2(ready, O_CLOEXEC) == 0);
    pid_t parent = getpid();
    pid_t x = fork_flushed();
    REQUIRE(x >= 0);
    if (x == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        close(hold[1]);
        close(ready[0]);
        static nfslock *lock;
        int rc = nfslock_create(path, "parent", &lock);
        if (rc == 0) {
            /* Another thread cycles locks on two other paths of the directory at every
             * fork, and then keeps both. */
            static struct busy b;
            snprintf(b.dir, sizeof b.dir, "%s", dir);
            b.paths = 2;
            b.hold_at_stop = 2;
            busy_start(&b, busy_locks, 20);
            for (int i = 0; i < SLEEPING_CHILDREN; i++) {
                pid_t pid = fork();
                if (pid < 0)
                    break;
                if (pid == 0) {
                    char c;
                    while (read(hold[0], &c, 1) < 0 && errno == EINTR) {
                    }
                    _exit(0);
                }
                f->pids[i] = pid;
                atomic_fetch_add(&f->forked, 1);
                /* Let the busy thread move on: forks land at different points of it. */
                struct timespec pause_between = {0, 300000};
                nanosleep(&pause_between, NULL);
            }
            rc = busy_hold(&b);
        }
        if (write(ready[1], &rc, sizeof rc) != (ssize_t)sizeof rc)
            _exit(1);
        for (;;)
            pause(); /* until SIGKILLed, holding both locks */
    }
    close(hold[0]);
    close(ready[1]);
    int rc = -1;
    ssize_t got;
    while ((got = read(ready[0], &rc, sizeof rc)) < 0 && errno == EINTR) {
    }
    close(ready[0]);
    REQUIRE(got == (ssize_t)sizeof rc);
    REQUIRE_RC(rc, 0);
    int forked = atomic_load(&f->forked);
    REQUIRE(forked == SLEEPING_CHILDREN);
    char host[256];
    int32_t pid = 0;
    REQUIRE_RC(nfslock_get_hostname_and_pid(path, host, sizeof host, &pid), 0);
    REQUIRE(pid == x);
    for (int i = 0; i < 2; i++) {
        char busy[PATH_MAX + 32];
        busy_path(busy, sizeof busy, dir, i);
        REQUIRE_RC(nfslock_get_hostname_and_pid(busy, host, sizeof host, &pid), 0);
        REQUIRE(pid == x);
    }

    /* Not a requirement in itself (a child may keep a descriptor if liveness does not
     * depend on it), but it says what keeps the parent "alive" if the take fails. */
    int keeping = 0;
    char example[600] = "";
    for (int i = 0; i < forked; i++) {
        char what[512];
        if (library_fds(f->pids[i], what, sizeof what) > 0 && keeping++ == 0)
            snprintf(example, sizeof example, "child %d: %s", (int)f->pids[i], what);
    }

    kill(x, SIGKILL);
    CHECK(wait_status(x) == 128 + SIGKILL);
    int living = 0;
    for (int i = 0; i < forked; i++)
        living += alive(f->pids[i]);
    REQUIRE(living == forked);

    char children[800 + 128];
    snprintf(children, sizeof children, "%d children of the parent are alive, %d of them "
             "with descriptors on its files (%s)", living, keeping,
             keeping ? example : "none");
    take_everything(path, dir, 5000LL * t_time_scale, children);
    living = 0;
    for (int i = 0; i < forked; i++)
        living += alive(f->pids[i]);
    CHECKF(living == forked, "only %d of %d children were alive throughout", living, forked);

    close(hold[1]);
    for (int i = 0; i < forked; i++)
        wait_status(f->pids[i]);
    munmap(f, sizeof *f);
}

/* ---- posix_spawn and vfork children of a killed holder ---------------------------- */

#define SPAWNS 10

/* Found in review: a claim's descriptor was registered for the at-fork hook only after
 * its flock and its fsync, so a child forked by another thread in that window kept the
 * parent's liveness flock, and the parent's lock stayed wedged after it was killed. A
 * worker thread makes a new claim every round (a new message each time) while the main
 * thread forks 200 children, each of which counts the descriptors it has on the test
 * directory's files before its first call: there must never be one. */
struct claim_churn {
    atomic_int stop;
    char path[PATH_MAX];
    atomic_int rounds, failures;
};

static void *churn_claims(void *arg)
{
    struct claim_churn *c = arg;
    char msg[64];
    for (long i = 0; !atomic_load(&c->stop); i++) {
        snprintf(msg, sizeof msg, "claim %ld", i);
        nfslock *l;
        int rc = nfslock_create(c->path, msg, &l);
        if (rc == 0)
            rc = nfslock_unlock(l);
        if (rc != 0)
            atomic_fetch_add(&c->failures, 1);
        atomic_fetch_add(&c->rounds, 1);
    }
    return NULL;
}

static void t_fork_during_claim_creation_keeps_no_descriptor(void)
{
    struct claim_churn c = {0};
    snprintf(c.path, sizeof c.path, "%s", tp("churn"));
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, churn_claims, &c) == 0);
    while (atomic_load(&c.rounds) < 20)
        sleep_ms(1);
    int leaked = 0, forks = 0;
    char first[512] = "";
    for (; forks < 200; forks++) {
        int p[2];
        REQUIRE(pipe(p) == 0);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            char what[512];
            int n = library_fds(getpid(), what, sizeof what);
            (void)!write(p[1], &n, sizeof n);
            (void)!write(p[1], what, sizeof what);
            _exit(0);
        }
        close(p[1]);
        int n = -1;
        char what[512] = "";
        CHECK(read(p[0], &n, sizeof n) == (ssize_t)sizeof n);
        (void)!read(p[0], what, sizeof what);
        close(p[0]);
        CHECK(wait_status(pid) == 0);
        if (n != 0 && leaked++ == 0)
            snprintf(first, sizeof first, "%s", what);
    }
    atomic_store(&c.stop, 1);
    pthread_join(t, NULL);
    CHECKF(leaked == 0, "%d of %d children forked during claim creation kept a descriptor of the "
                        "library's (first: %s)", leaked, forks, first);
    CHECKF(atomic_load(&c.failures) == 0, "%d lock cycles failed", atomic_load(&c.failures));
    CHECKF(atomic_load(&c.rounds) >= 100, "only %d claims were made during %d forks",
           atomic_load(&c.rounds), forks);
}

static char *const sleep_argv[] = {"sleep", "120", NULL};

/* vfork + exec of /bin/sleep, alone in a function (the child shares our stack). */
static __attribute__((noinline)) pid_t vfork_sleeper(void)
{
    pid_t pid = vfork();
    if (pid == 0) {
        execve("/bin/sleep", sleep_argv, environ);
        _exit(127);
    }
    return pid;
}

static pid_t spawn_sleeper(void)
{
    pid_t pid = -1;
    int rc = posix_spawn(&pid, "/bin/sleep", NULL, NULL, sleep_argv, environ);
    return rc == 0 ? pid : -1;
}

static void spawned_children_of_killed_holder(pid_t (*start)(void), const char *how)
{
    REQUIRE(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    char dir[PATH_MAX], path[PATH_MAX + 8], repo[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", tp("locks"));
    REQUIRE(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/p", dir);
    char busy0[PATH_MAX + 32];
    busy_path(busy0, sizeof busy0, dir, 0);
    snprintf(repo, sizeof repo, "%s", tp("repo"));
    struct family *f = mmap(NULL, sizeof *f, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                            -1, 0);
    REQUIRE(f != MAP_FAILED);
    memset(f, 0, sizeof *f);
    int ready[2];
    REQUIRE(pipe2(ready, O_CLOEXEC) == 0);
    pid_t parent = getpid();
    pid_t x = fork_flushed();
    REQUIRE(x >= 0);
    if (x == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        close(ready[0]);
        /* Holds a lock and an ID of an open session, with a thread inside the library at
         * every spawn. */
        static nfslock *lock;
        static nfslock_session *s;
        int rc = nfslock_create(path, "parent", &lock);
        if (rc == 0)
            rc = nfslock_session_open(repo, NULL, 0, &s);
        if (rc == 0)
            rc = nfslock_session_make_new_ids(s, 1, &f->id);
        if (rc == 0) {
            static struct busy b;
            snprintf(b.dir, sizeof b.dir, "%s", dir);
            b.hold_at_stop = 1;
            busy_start(&b, busy_locks, 20);
            for (int i = 0; i < SPAWNS; i++) {
                pid_t pid = start();
                if (pid <= 0)
                    break;
                f->pids[i] = pid;
                atomic_fetch_add(&f->forked, 1);
                sleep_ms(1);
            }
            rc = busy_hold(&b);
        }
        if (write(ready[1], &rc, sizeof rc) != (ssize_t)sizeof rc)
            _exit(1);
        for (;;)
            pause();
    }
    close(ready[1]);
    int rc = -1;
    ssize_t got;
    while ((got = read(ready[0], &rc, sizeof rc)) < 0 && errno == EINTR) {
    }
    close(ready[0]);
    REQUIRE(got == (ssize_t)sizeof rc);
    REQUIRE_RC(rc, 0);
    int spawned = atomic_load(&f->forked);
    CHECKF(spawned == SPAWNS, "%s started %d of %d sleepers", how, spawned, SPAWNS);
    char host[256];
    int32_t pid = 0;
    REQUIRE_RC(nfslock_get_hostname_and_pid(path, host, sizeof host, &pid), 0);
    REQUIRE(pid == x);
    REQUIRE_RC(nfslock_get_hostname_and_pid(busy0, host, sizeof host, &pid), 0);
    REQUIRE(pid == x);

    /* Both return once the child has exec'ed: no descriptor of the library may cross. */
    int keeping = 0;
    for (int i = 0; i < spawned; i++) {
        char what[512];
        int n = library_fds(f->pids[i], what, sizeof what);
        if (n > 0 && keeping++ < PRINTED)
            t_fail(__FILE__, __LINE__, "sleeper %d started by %s keeps %d descriptors of the "
                   "library across exec (not O_CLOEXEC): %s", (int)f->pids[i], how, n, what);
    }
    CHECKF(keeping == 0, "%d of %d sleepers started by %s hold the library's descriptors",
           keeping, spawned, how);

    kill(x, SIGKILL);
    CHECK(wait_status(x) == 128 + SIGKILL);
    int living = 0;
    for (int i = 0; i < spawned; i++)
        living += alive(f->pids[i]);
    REQUIRE(living == spawned);

    /* At once: one nfslock_create per path the dead parent held. */
    char children[128];
    snprintf(children, sizeof children, "%d sleepers started by %s are alive", living, how);
    take_everything(path, dir, 0, children);

    /* And its session is dead: its ID is taken over. */
    nfslock_session *s = NULL;
    REQUIRE_RC(nfslock_session_open(repo, NULL, 0, &s), 0);
    uint64_t locked = 0;
    size_t n_locked = 0;
    rc = nfslock_session_lock_ids(s, &f->id, 1, &locked, &n_locked);
    CHECKF(rc == 0 && n_locked == 1, "lock_ids of the killed parent's ID %llu: %s, %zu locked "
           "(%s) while %s", (unsigned long long)f->id, errname(rc), n_locked,
           nfslock_last_error(), children);
    CHECK_RC(nfslock_session_check(s), 0);
    CHECK_RC(nfslock_session_close(s), 0);

    for (int i = 0; i < spawned; i++)
        stop_process(f->pids[i]);
    munmap(f, sizeof *f);
}

static void t_posix_spawn_child_of_killed_holder(void)
{
    spawned_children_of_killed_holder(spawn_sleeper, "posix_spawn");
}

static void t_vfork_child_of_killed_holder(void)
{
    spawned_children_of_killed_holder(vfork_sleeper, "vfork+execve");
}

#define MATRIX_ENTRIES(fn)                                                              \
    {"fork_matrix_" #fn "_main", t_fork_##fn##_main, 120, 1},                           \
    {"fork_matrix_" #fn "_thread", t_fork_##fn##_thread, 120, 1}

const struct test fork_tests[] = {
    MATRIX_ENTRIES(fresh),
    MATRIX_ENTRIES(locked),
    MATRIX_ENTRIES(waited),
    MATRIX_ENTRIES(critical),
    MATRIX_ENTRIES(session),
    MATRIX_ENTRIES(two_sessions),
    MATRIX_ENTRIES(holding),
    MATRIX_ENTRIES(busy),
    {"forked_children_of_killed_holder", t_forked_children_of_killed_holder, 60, 1},
    /* Heavy: under valgrind every child reports the other thread's allocations as lost. */
    {"fork_during_claim_creation_keeps_no_descriptor", t_fork_during_claim_creation_keeps_no_descriptor, 60, 1},
    {"posix_spawn_child_of_killed_holder", t_posix_spawn_child_of_killed_holder, 30, 0},
    {"vfork_child_of_killed_holder", t_vfork_child_of_killed_holder, 30, 0},
    {NULL, NULL, 0, 0},
};
