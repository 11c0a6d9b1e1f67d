/*
 * The directory backend of the lock manager through include/nfslock.h (tests/manager.rs).
 *
 *   dir MODE SCRATCH
 *
 * SCRATCH is a private, empty directory; the manager directory of a mode is SCRATCH/m
 * (other directories next to it for the hostile cases). The umask is 0 in every mode, so
 * that the library's own file modes are what is checked. Also the worker modes of
 * common.c.
 */
#include "common.c"

static const char *SCRATCH;
static char MDIR[PATH_MAX];

static const char *in_scratch(char *buf, const char *name) {
    snprintf(buf, PATH_MAX, "%s/%s", SCRATCH, name);
    return buf;
}

static const char *in_mdir(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *in_mdir(char *buf, const char *fmt, ...) {
    char rel[PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    snprintf(buf, PATH_MAX, "%s/%s", MDIR, rel);
    return buf;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static nfslock_manager *create(void) {
    nfslock_manager *m = NULL;
    int rc = nfslock_manager_create_dir(MDIR, &m);
    EXPECT_RC(rc, 0, "create_dir(\"%s\")", MDIR);
    return rc == 0 ? m : NULL;
}

static nfslock_manager *open_(void) {
    nfslock_manager *m = NULL;
    int rc = nfslock_manager_open_dir(MDIR, &m);
    EXPECT_RC(rc, 0, "open_dir(\"%s\")", MDIR);
    return rc == 0 ? m : NULL;
}

static void close_(nfslock_manager *m) {
    if (m != NULL)
        EXPECT_RC(nfslock_manager_close(m), 0, "close");
}

static int64_t allocate(nfslock_manager *m) {
    uint32_t id = 0;
    int rc = nfslock_manager_allocate(m, &id);
    EXPECT_RC(rc, 0, "allocate");
    return rc == 0 ? (int64_t)id : -1;
}

#define WORKER(p, ...) spawn((p), "worker", "dir", MDIR, __VA_ARGS__, (const char *)NULL)

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = (ssize_t)strlen(text);
    int ok = write(fd, text, (size_t)n) == n;
    close(fd);
    return ok ? 0 : -1;
}

/* create / open: ENOENT, EEXIST, EBADMSG for what is not a manager directory. */
static void mode_create_open(void) {
    nfslock_manager *m = (nfslock_manager *)(uintptr_t)1;
    EXPECT_RC(nfslock_manager_open_dir(MDIR, &m), ENOENT, "open_dir of a missing directory");
    CHECKF(m == (nfslock_manager *)(uintptr_t)1, "open_dir failed but wrote *out");
    CHECKF(!exists(MDIR), "open_dir of a missing directory made it");
    char p[PATH_MAX];
    m = NULL;
    EXPECT_RC(nfslock_manager_create_dir(in_scratch(p, "no/such/parent"), &m), ENOENT,
              "create_dir in a missing parent");
    m = create();
    if (m == NULL)
        return;
    char buf[256] = "";
    int fd = open(in_mdir(p, "nfslock-manager"), O_RDONLY);
    ssize_t got = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    CHECKF(got > 0 && strncmp(buf, "nfslock-manager 1\n", 18) == 0, "%s: its first line is not \"nfslock-manager 1\" (%s)",
           p, got > 0 ? buf : strerror(errno));
    uint32_t n = 0;
    int unl = 0;
    EXPECT_RC(nfslock_manager_capacity(m, &n, &unl), 0, "capacity");
    CHECKF(n == UINT32_MAX && unl == 1, "capacity of a directory: %u, unlimited %d; want UINT32_MAX, 1", n, unl);
    n = 0;
    unl = 0;
    EXPECT_RC(nfslock_manager_available(m, &n, &unl), 0, "available");
    CHECKF(unl == 1, "available of a directory: unlimited %d, want 1", unl);
    nfslock_manager *o = (nfslock_manager *)(uintptr_t)1;
    EXPECT_RC(nfslock_manager_create_dir(MDIR, &o), EEXIST, "create_dir of an existing manager directory");
    CHECKF(o == (nfslock_manager *)(uintptr_t)1, "create_dir failed but wrote *out");
    EXPECT_RC(nfslock_manager_allocate_id(m, 3), 0, "allocate_id(3)");
    o = open_();
    if (o != NULL) {
        EXPECT_ALLOCATED(o, "a second handle sees the first one's allocation", IDS(3));
        close_(o);
    }
    close_(m);
    /* an existing plain directory: create is EEXIST (and does not adopt it), open EBADMSG */
    const char *plain = in_scratch(p, "plain");
    mkdir(plain, 0700);
    o = NULL;
    EXPECT_RC(nfslock_manager_create_dir(plain, &o), EEXIST, "create_dir of an existing plain directory");
    EXPECT_RC(nfslock_manager_open_dir(plain, &o), EBADMSG, "open_dir of a plain empty directory");
    char hp[PATH_MAX];
    static const char *const headers[] = {"nfslock-manager 2\n", "nfslock-manager\n", "garbage\n", "",
                                          "nfslock-manager 1x\n", "NFSLOCK-MANAGER 1\n", "\n"};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        char dn[64];
        snprintf(dn, sizeof dn, "wrong%zu", i);
        const char *d = in_scratch(p, dn);
        mkdir(d, 0700);
        snprintf(hp, sizeof hp, "%s/nfslock-manager", d);
        write_file(hp, headers[i]);
        o = NULL;
        EXPECT_RC(nfslock_manager_open_dir(d, &o), EBADMSG, "open_dir with the header \"%.*s\"",
                  (int)strcspn(headers[i], "\n"), headers[i]);
        if (o != NULL)
            nfslock_manager_close(o);
    }
    /* a regular file where the directory should be */
    const char *file = in_scratch(p, "afile");
    write_file(file, "nfslock-manager 1\n");
    o = NULL;
    EXPECT_RC(nfslock_manager_open_dir(file, &o), EBADMSG, "open_dir of a regular file");
    EXPECT_RC(nfslock_manager_create_dir(file, &o), EEXIST, "create_dir where a regular file is");
}

/* allocate: lowest; allocate_id; free; the files of ids; ERANGE for UINT32_MAX. */
static void mode_alloc(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char p[PATH_MAX];
    for (uint32_t i = 0; i < 3; i++) {
        int64_t id = allocate(m);
        CHECKF(id == i, "allocate #%u returned %lld, want %u", i + 1, (long long)id, i);
    }
    EXPECT_RC(nfslock_manager_free(m, 1), 0, "free(1)");
    CHECKF(!exists(in_mdir(p, "ids/1")), "free(1): %s is still there", p);
    CHECKF(allocate(m) == 1, "free(1) then allocate did not return 1");
    EXPECT_RC(nfslock_manager_allocate_id(m, 10), 0, "allocate_id(10)");
    EXPECT_RC(nfslock_manager_allocate_id(m, 10), EEXIST, "allocate_id(10) twice");
    EXPECT_RC(nfslock_manager_allocate_id(m, 0), EEXIST, "allocate_id(0) of an allocated id");
    CHECKF(allocate(m) == 3, "allocate after 0..2 and 10 did not return 3");
    EXPECT_ALLOCATED(m, "0, 1, 2, 3 and 10", IDS(0, 1, 2, 3, 10));
    uint32_t av = 0;
    int unl = 0;
    EXPECT_RC(nfslock_manager_available(m, &av, &unl), 0, "available");
    CHECKF(av == UINT32_MAX - 5 && unl == 1, "available with 5 allocated: %u, unlimited %d; want UINT32_MAX - 5, 1", av,
           unl);
    static const uint32_t files[] = {0, 1, 2, 3, 10};
    for (size_t i = 0; i < 5; i++)
        CHECKF(exists(in_mdir(p, "ids/%u", files[i])), "id %u is allocated but %s is missing", files[i], p);
    EXPECT_RC(nfslock_manager_free(m, 5), ENOENT, "free(5) of an unallocated id");
    EXPECT_RC(nfslock_manager_free(m, 10), 0, "free(10)");
    EXPECT_RC(nfslock_manager_free(m, 10), ENOENT, "free(10) twice");
    CHECKF(!exists(in_mdir(p, "ids/10")), "free(10): %s is still there", p);
    /* the last id, and one past it */
    EXPECT_RC(nfslock_manager_allocate_id(m, UINT32_MAX - 1), 0, "allocate_id(UINT32_MAX - 1), the last id");
    EXPECT_RC(nfslock_manager_lock(m, UINT32_MAX - 1), 0, "lock(UINT32_MAX - 1)");
    EXPECT_RC(nfslock_manager_unlock(m, UINT32_MAX - 1), 0, "unlock(UINT32_MAX - 1)");
    EXPECT_ALLOCATED(m, "with the last id", IDS(0, 1, 2, 3, UINT32_MAX - 1));
    EXPECT_RC(nfslock_manager_free(m, UINT32_MAX - 1), 0, "free(UINT32_MAX - 1)");
    const uint32_t out = UINT32_MAX;
    EXPECT_RC(nfslock_manager_allocate_id(m, out), ERANGE, "allocate_id(UINT32_MAX)");
    EXPECT_RC(nfslock_manager_free(m, out), ERANGE, "free(UINT32_MAX)");
    EXPECT_RC(nfslock_manager_lock(m, out), ERANGE, "lock(UINT32_MAX)");
    EXPECT_RC(nfslock_manager_timedlock(m, out, 0), ERANGE, "timedlock(UINT32_MAX, 0)");
    EXPECT_RC(nfslock_manager_timedlock(m, out, 100), ERANGE, "timedlock(UINT32_MAX, 100)");
    EXPECT_RC(nfslock_manager_unlock(m, out), ERANGE, "unlock(UINT32_MAX)");
    CHECKF(!exists(in_mdir(p, "ids/%u", out)) && !exists(in_mdir(p, "locks/%u.nfs_lock", out)),
           "an out-of-range call made a file for UINT32_MAX");
    /* lock/unlock of unallocated and freed ids */
    EXPECT_RC(nfslock_manager_lock(m, 77), 0, "lock(77) of an unallocated id");
    CHECKF(exists(in_mdir(p, "locks/77.nfs_lock")), "lock(77) held but %s is missing", p);
    EXPECT_RC(nfslock_manager_unlock(m, 77), 0, "unlock(77)");
    CHECKF(!exists(in_mdir(p, "locks/77.nfs_lock")), "unlock(77): %s is still there", p);
    EXPECT_RC(nfslock_manager_unlock(m, 77), EPERM, "unlock(77) twice");
    EXPECT_ALLOCATED(m, "locking an unallocated id does not allocate it", IDS(0, 1, 2, 3));
    /* a second handle allocates from the same directory */
    nfslock_manager *b = open_();
    if (b != NULL) {
        CHECKF(allocate(b) == 4, "allocate through a second handle did not return 4");
        close_(b);
    }
    close_(m);
}

static void mode_short_buffer(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    for (int i = 0; i < 5; i++)
        allocate(m);
    uint32_t ids[8];
    for (int i = 0; i < 8; i++)
        ids[i] = 0xAAAAAAAAu;
    size_t n = 0;
    EXPECT_RC(nfslock_manager_allocated(m, ids, 2, &n), ERANGE, "allocated into 2 slots with 5 allocated");
    CHECKF(n == 5, "allocated (2 slots): *n_out %zu, want the needed 5", n);
    for (int i = 0; i < 8; i++)
        CHECKF(ids[i] == 0xAAAAAAAAu, "allocated (2 slots, ERANGE) wrote slot %d (nothing is copied)", i);
    n = 0;
    EXPECT_RC(nfslock_manager_allocated(m, ids, 0, &n), ERANGE, "allocated into 0 slots with 5 allocated");
    CHECKF(n == 5, "allocated (0 slots): *n_out %zu, want the needed 5", n);
    n = 0;
    EXPECT_RC(nfslock_manager_allocated(m, ids, 5, &n), 0, "allocated into exactly 5 slots");
    for (int i = 5; i < 8; i++)
        CHECKF(ids[i] == 0xAAAAAAAAu, "allocated into 5 slots wrote slot %d", i);
    CHECKF(n == 5 && ids[0] == 0 && ids[4] == 4, "allocated: %zu ids, %u..%u", n, ids[0], ids[4]);
    close_(m);
}

static void mode_free_all(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    for (int i = 0; i < 5; i++)
        allocate(m);
    EXPECT_RC(nfslock_manager_allocate_id(m, 1000), 0, "allocate_id(1000)");
    EXPECT_RC(nfslock_manager_lock(m, 2), 0, "lock(2)");
    EXPECT_RC(nfslock_manager_free_all(m), 0, "free_all");
    EXPECT_ALLOCATED(m, "after free_all", NO_IDS);
    char p[PATH_MAX], names[1024] = "";
    DIR *d = opendir(in_mdir(p, "ids"));
    int left = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            left++;
            snprintf(names + strlen(names), sizeof names - strlen(names), " %s", e->d_name);
        }
    if (d != NULL)
        closedir(d);
    CHECKF(left == 0, "free_all left in ids/:%s", names);
    EXPECT_HELD(m, "free_all does not unlock", IDS(2));
    for (uint32_t i = 0; i < 6; i++)
        CHECKF(allocate(m) == i, "allocate #%u after free_all is not %u", i + 1, i);
    EXPECT_RC(nfslock_manager_unlock(m, 2), 0, "unlock(2) after free_all");
    close_(m);
}

static void mode_locks_held(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    EXPECT_HELD(m, "a fresh directory", NO_IDS);
    EXPECT_RC(nfslock_manager_allocate_id(m, 10), 0, "allocate_id(10)");
    EXPECT_RC(nfslock_manager_lock(m, 3), 0, "lock(3)");
    struct proc w;
    if (WORKER(&w, "lock:8", "held", "wait", "unlock:8", "held", "wait") == 0) {
        EXPECT_LINE(&w, "open 0", 10000);
        EXPECT_LINE(&w, "lock:8 0", 10000);
        EXPECT_LINE(&w, "held 0 3 8", 10000);
        EXPECT_HELD(m, "3 here, 8 in another process", IDS(3, 8));
        proc_send(&w, "\n");
        EXPECT_LINE(&w, "unlock:8 0", 10000);
        EXPECT_LINE(&w, "held 0 3", 10000);
        proc_close_input(&w);
        EXPECT_EXIT0(&w, 10000);
    }
    proc_free(&w);
    EXPECT_RC(nfslock_manager_unlock(m, 3), 0, "unlock(3)");
    EXPECT_HELD(m, "after everything was unlocked", NO_IDS);
    close_(m);
}

/* Exclusion across processes: busy, timed out, waits. */
static void mode_exclusion(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    struct proc w;
    if (WORKER(&w, "lock:0", "say:H", "wait", "sleep:300", "unlock:0", "wait", "try:0", "wait", "lock:0", "unlock:0") == 0) {
        EXPECT_LINE(&w, "open 0", 10000);
        EXPECT_LINE(&w, "lock:0 0", 10000);
        EXPECT_LINE(&w, "H", 10000);
        EXPECT_RC(nfslock_manager_timedlock(m, 0, 0), EBUSY, "timedlock(0, 0) held by another process");
        double t = now_ms();
        EXPECT_RC(nfslock_manager_timedlock(m, 0, 200), ETIMEDOUT, "timedlock(0, 200 ms) held by another process");
        t = now_ms() - t;
        CHECKF(t >= 190 && t < 5000, "timedlock(0, 200 ms) returned after %.0f ms", t);
        t = now_ms();
        proc_send(&w, "\n");
        EXPECT_RC(nfslock_manager_lock(m, 0), 0, "lock(0) while another process holds it");
        t = now_ms() - t;
        CHECKF(t >= 290, "lock(0) returned after %.0f ms, before the other process unlocked (300 ms)", t);
        EXPECT_LINE(&w, "unlock:0 0", 10000);
        proc_send(&w, "\n");
        EXPECT_LINE(&w, "try:0 EBUSY", 10000);
        EXPECT_RC(nfslock_manager_unlock(m, 0), 0, "unlock(0)");
        proc_send(&w, "\n");
        EXPECT_LINE(&w, "lock:0 0", 10000);
        EXPECT_LINE(&w, "unlock:0 0", 10000);
        proc_close_input(&w);
        EXPECT_EXIT0(&w, 10000);
    }
    proc_free(&w);
    close_(m);
}

static long CYCLES = 1000;

static void mode_counter(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    const char *backend[] = {"dir", MDIR, NULL};
    run_counter(backend, SCRATCH, 17, CYCLES, 4, 180000);
    EXPECT_HELD(m, "after the counter run", NO_IDS);
    close_(m);
}

/* A holder SIGKILLed: cleared at once by the next lock on this host (plain and lease). */
static void mode_killed(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char p[PATH_MAX];
    static const char *const leases[] = {NULL, "lease:60000"};
    for (int k = 0; k < 2; k++) {
        struct proc w;
        int rc = leases[k] ? WORKER(&w, leases[k], "lock:5", "say:H", "pause") : WORKER(&w, "lock:5", "say:H", "pause");
        if (rc != 0)
            continue;
        EXPECT_LINE(&w, "open 0", 10000);
        if (leases[k])
            EXPECT_LINE(&w, "lease:60000 0", 10000);
        EXPECT_LINE(&w, "lock:5 0", 10000);
        EXPECT_LINE(&w, "H", 10000);
        EXPECT_RC(nfslock_manager_timedlock(m, 5, 0), EBUSY, "timedlock(5, 0) while its holder lives%s",
                  leases[k] ? " (a 60 s lease)" : "");
        proc_kill(&w);
        proc_free(&w);
        double t = now_ms();
        EXPECT_RC(nfslock_manager_timedlock(m, 5, 10000), 0, "timedlock(5, 10 s) after its holder was SIGKILLed%s",
                  leases[k] ? " (a 60 s lease)" : "");
        t = now_ms() - t;
        CHECKF(t < 3000, "the dead holder's lock was taken after %.0f ms, not at once%s", t,
               leases[k] ? " (a 60 s lease)" : "");
        EXPECT_HELD(m, "after taking the dead holder's lock", IDS(5));
        EXPECT_RC(nfslock_manager_unlock(m, 5), 0, "unlock(5)");
        CHECKF(!exists(in_mdir(p, "locks/5.nfs_lock")), "unlock(5): %s is still there", p);
    }
    close_(m);
}

/* set_lease_ms: locks are leases; locking and exclusion still work. */
static void mode_lease(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char p[PATH_MAX];
    EXPECT_RC(nfslock_manager_set_lease_ms(m, 5000), 0, "set_lease_ms(5000)");
    EXPECT_RC(nfslock_manager_lock(m, 2), 0, "lock(2) as a lease");
    CHECKF(exists(in_mdir(p, "locks/2.nfs_lock")), "lock(2) held as a lease but %s is missing", p);
    struct proc w;
    if (WORKER(&w, "try:2", "wait", "try:2", "unlock:2") == 0) {
        EXPECT_LINE(&w, "open 0", 10000);
        EXPECT_LINE(&w, "try:2 EBUSY", 10000);
        EXPECT_HELD(m, "a lease held", IDS(2));
        EXPECT_RC(nfslock_manager_unlock(m, 2), 0, "unlock(2) of a lease");
        proc_send(&w, "\n");
        EXPECT_LINE(&w, "try:2 0", 10000);
        EXPECT_LINE(&w, "unlock:2 0", 10000);
        EXPECT_EXIT0(&w, 10000);
    }
    proc_free(&w);
    EXPECT_RC(nfslock_manager_timedlock(m, 2, 0), 0, "timedlock(2, 0) as a lease");
    EXPECT_RC(nfslock_manager_lock(m, 3), 0, "lock(3) as a lease");
    EXPECT_RC(nfslock_manager_unlock(m, 3), 0, "unlock(3)");
    EXPECT_RC(nfslock_manager_unlock(m, 2), 0, "unlock(2)");
    EXPECT_RC(nfslock_manager_set_lease_ms(m, 0), 0, "set_lease_ms(0): plain locks again");
    EXPECT_RC(nfslock_manager_lock(m, 2), 0, "lock(2) after set_lease_ms(0)");
    EXPECT_RC(nfslock_manager_unlock(m, 2), 0, "unlock(2)");
    close_(m);
}

struct call {
    nfslock_manager *m;
    uint32_t id;
    char op; /* 'L' lock, 'T' timedlock, 'U' unlock */
    int64_t timeout;
    int rc;
    double took;
    char err[256]; /* the thread's last error after its call */
};

/* A thread's call returned `want`; says what the thread's last error was. */
#define EXPECT_TRC(c, want, ...)                                                            \
    do {                                                                                    \
        if ((c).rc != (want)) {                                                             \
            char what_[512];                                                                \
            snprintf(what_, sizeof what_, __VA_ARGS__);                                     \
            fail(__FILE__, __LINE__, "%s: got %s (%d), want %s; the thread's last error: %s", what_, en((c).rc), \
                 (c).rc, en(want), (c).err);                                                \
        }                                                                                   \
    } while (0)

static void *call_main(void *arg) {
    struct call *c = arg;
    double t = now_ms();
    c->rc = c->op == 'L' ? nfslock_manager_lock(c->m, c->id)
            : c->op == 'T' ? nfslock_manager_timedlock(c->m, c->id, c->timeout)
                           : nfslock_manager_unlock(c->m, c->id);
    c->took = now_ms() - t;
    snprintf(c->err, sizeof c->err, "%s", c->rc != 0 ? nfslock_last_error() : "-");
    return NULL;
}

static struct call in_thread(nfslock_manager *m, char op, uint32_t id, int64_t timeout) {
    struct call c = {m, id, op, timeout, -1, 0, ""};
    pthread_t t;
    pthread_create(&t, NULL, call_main, &c);
    pthread_join(t, NULL);
    return c;
}

/* close releases every lock taken through the handle, by any thread. */
static void mode_close(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char p[PATH_MAX];
    EXPECT_RC(nfslock_manager_lock(m, 1), 0, "lock(1)");
    struct call c = in_thread(m, 'L', 2, 0);
    EXPECT_TRC(c, 0, "another thread: lock(2), then the thread ends");
    EXPECT_RC(nfslock_manager_close(m), 0, "close holding 1 (this thread) and 2 (taken by another thread)");
    CHECKF(!exists(in_mdir(p, "locks/1.nfs_lock")), "close: %s is still there", p);
    CHECKF(!exists(in_mdir(p, "locks/2.nfs_lock")), "close: %s is still there", p);
    struct proc w;
    if (WORKER(&w, "try:1", "try:2", "unlock:1", "unlock:2") == 0) {
        EXPECT_LINE(&w, "open 0", 10000);
        EXPECT_LINE(&w, "try:1 0", 10000);
        EXPECT_LINE(&w, "try:2 0", 10000);
        EXPECT_LINE(&w, "unlock:1 0", 10000);
        EXPECT_LINE(&w, "unlock:2 0", 10000);
        EXPECT_EXIT0(&w, 10000);
    }
    proc_free(&w);
}

/* Concurrent allocation from 4 processes: no id twice, 0..99 all handed out. */
static void mode_alloc_race(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    struct proc w[4];
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)"t";
    argv[n++] = (char *)"worker";
    argv[n++] = (char *)"dir";
    argv[n++] = MDIR;
    argv[n++] = (char *)"wait";
    for (int i = 0; i < 25; i++)
        argv[n++] = (char *)"alloc";
    argv[n] = NULL;
    expect_100_distinct_allocations(w, argv, 60000);
    uint32_t ids[256];
    size_t got = 0;
    EXPECT_RC(nfslock_manager_allocated(m, ids, 256, &got), 0, "allocated");
    CHECKF(got == 100, "allocated lists %zu ids, want 100", got);
    close_(m);
}

/* Walks `path`: every entry must be neither group- nor world-writable. */
static void check_modes(const char *path, int depth) {
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    CHECKF((st.st_mode & 022) == 0 || S_ISLNK(st.st_mode), "%s: mode %o is group- or world-writable", path,
           (unsigned)(st.st_mode & 07777));
    if (!S_ISDIR(st.st_mode) || depth > 4)
        return;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char sub[PATH_MAX];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        check_modes(sub, depth + 1);
    }
    if (d != NULL)
        closedir(d);
}

static int count_entries(const char *path, int depth) {
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    int n = 1;
    if (S_ISDIR(st.st_mode) && depth < 5) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[PATH_MAX];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            n += count_entries(sub, depth + 1);
        }
        if (d != NULL)
            closedir(d);
    }
    return n;
}

/* With umask 0: nothing the library makes is group- or world-writable. */
static void mode_file_modes(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    for (int i = 0; i < 3; i++)
        allocate(m);
    EXPECT_RC(nfslock_manager_lock(m, 1), 0, "lock(1)");
    EXPECT_RC(nfslock_manager_set_lease_ms(m, 10000), 0, "set_lease_ms");
    EXPECT_RC(nfslock_manager_lock(m, 2), 0, "lock(2) as a lease");
    int n = count_entries(MDIR, 0);
    note("%d entries under the manager directory while 2 locks are held", n);
    CHECKF(n >= 6, "only %d entries: expected the header, ids/ with 3 ids and locks", n);
    check_modes(MDIR, 0);
    EXPECT_RC(nfslock_manager_unlock(m, 1), 0, "unlock(1)");
    EXPECT_RC(nfslock_manager_unlock(m, 2), 0, "unlock(2)");
    close_(m);
    check_modes(MDIR, 0);
}

/* Threads of one process, one handle or two: EDEADLK for the holder thread, EPERM for
 * another thread's unlock, EBUSY / ETIMEDOUT for another thread; 4 threads on a counter;
 * allocation from 4 threads. */
static void mode_threads(void) {
    nfslock_manager *m = create();
    nfslock_manager *b = m ? open_() : NULL;
    if (m == NULL || b == NULL)
        goto out;
    EXPECT_RC(nfslock_manager_lock(m, 4), 0, "lock(4)");
    EXPECT_RC(nfslock_manager_lock(m, 4), EDEADLK, "lock(4) again by the thread that holds it");
    EXPECT_RC(nfslock_manager_timedlock(b, 4, 200), EDEADLK,
              "timedlock(4, 200) through a second handle by the thread that holds it");
    struct call c = in_thread(m, 'U', 4, 0);
    EXPECT_TRC(c, EPERM, "another thread: unlock(4) held by the main thread");
    c = in_thread(m, 'T', 4, 0);
    EXPECT_TRC(c, EBUSY, "another thread: timedlock(4, 0) held by the main thread");
    c = in_thread(m, 'T', 4, 250);
    EXPECT_TRC(c, ETIMEDOUT, "another thread: timedlock(4, 250) held by the main thread");
    CHECKF(c.took >= 240 && c.took < 5000, "timedlock(4, 250 ms) returned after %.0f ms", c.took);
    EXPECT_RC(nfslock_manager_unlock(b, 4), EPERM, "unlock(4) through a second handle (not taken through it)");
    EXPECT_RC(nfslock_manager_unlock(m, 4), 0, "unlock(4)");
    EXPECT_RC(nfslock_manager_unlock(m, 4), EPERM, "unlock(4) twice");
    run_thread_counter(m, 6, 300);
    run_alloc_threads(m, 25);
    EXPECT_ALLOCATED(m, "after the threads freed everything", NO_IDS);
    EXPECT_HELD(m, "after the threads", NO_IDS);
out:
    close_(b);
    close_(m);
}

static void mode_timeouts(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    check_extreme_timeouts(m, 5);
    close_(m);
}

struct plain_try {
    const char *path;
    int rc;
    char err[256];
};

static void *plain_try_main(void *arg) {
    struct plain_try *p = arg;
    struct nfslock *l = NULL;
    p->rc = nfslock_create(p->path, NULL, &l);
    snprintf(p->err, sizeof p->err, "%s", p->rc != 0 ? nfslock_last_error() : "-");
    if (p->rc == 0)
        nfslock_unlock(l);
    return NULL;
}

/* The manager's locks are ordinary lock files on DIR/locks/<id>: a plain nfslock_create
 * there excludes the manager and the other way round. */
static void mode_interop(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char p5[PATH_MAX], p6[PATH_MAX];
    in_mdir(p5, "locks/5");
    in_mdir(p6, "locks/6");
    /* make sure locks/ exists: take and release a lock once */
    EXPECT_RC(nfslock_manager_lock(m, 5), 0, "lock(5)");
    EXPECT_RC(nfslock_manager_unlock(m, 5), 0, "unlock(5)");
    struct nfslock *l = NULL;
    int rc = nfslock_create(p5, "plain", &l);
    EXPECT_RC(rc, 0, "nfslock_create(DIR/locks/5)");
    if (rc == 0) {
        struct proc w;
        if (WORKER(&w, "try:5", "timed:5:200") == 0) {
            EXPECT_LINE(&w, "open 0", 10000);
            EXPECT_LINE(&w, "try:5 EBUSY", 10000);
            EXPECT_LINE(&w, "timed:5:200 ETIMEDOUT", 10000);
            EXPECT_EXIT0(&w, 10000);
        }
        proc_free(&w);
        struct call c = in_thread(m, 'T', 5, 0);
        EXPECT_TRC(c, EBUSY, "another thread: manager timedlock(5, 0) while a plain lock holds DIR/locks/5");
        EXPECT_HELD(m, "a plain lock file on DIR/locks/5", IDS(5));
        EXPECT_RC(nfslock_unlock(l), 0, "nfslock_unlock");
        EXPECT_RC(nfslock_manager_timedlock(m, 5, 0), 0, "manager timedlock(5, 0) after the plain unlock");
        EXPECT_RC(nfslock_manager_unlock(m, 5), 0, "unlock(5)");
    }
    EXPECT_RC(nfslock_manager_lock(m, 6), 0, "lock(6)");
    struct plain_try t = {p6, -1, ""};
    pthread_t th;
    pthread_create(&th, NULL, plain_try_main, &t);
    pthread_join(th, NULL);
    EXPECT_TRC(t, EAGAIN, "another thread: nfslock_create(DIR/locks/6) while the manager holds 6");
    EXPECT_RC(nfslock_manager_unlock(m, 6), 0, "unlock(6)");
    pthread_create(&th, NULL, plain_try_main, &t);
    pthread_join(th, NULL);
    EXPECT_TRC(t, 0, "another thread: nfslock_create(DIR/locks/6) after the manager's unlock");
    close_(m);
}

/* set_lease_ms: the documented range 100..=86,400,000 ms. */
static void mode_set_lease(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    static const uint32_t bad[] = {1, 50, 99, 86400001, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_RC(nfslock_manager_set_lease_ms(m, bad[i]), EINVAL, "set_lease_ms(%u)", bad[i]);
    static const uint32_t good[] = {100, 86400000, 0, 30000};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        EXPECT_RC(nfslock_manager_set_lease_ms(m, good[i]), 0, "set_lease_ms(%u)", good[i]);
        EXPECT_RC(nfslock_manager_lock(m, 1), 0, "lock(1) after set_lease_ms(%u)", good[i]);
        EXPECT_RC(nfslock_manager_unlock(m, 1), 0, "unlock(1)");
    }
    /* a short lease held longer than it lasts is renewed: still exclusive */
    EXPECT_RC(nfslock_manager_set_lease_ms(m, 300), 0, "set_lease_ms(300)");
    EXPECT_RC(nfslock_manager_lock(m, 2), 0, "lock(2) as a 300 ms lease");
    sleep_ms(1000);
    struct proc w;
    if (WORKER(&w, "try:2") == 0) {
        EXPECT_LINE(&w, "open 0", 10000);
        EXPECT_LINE(&w, "try:2 EBUSY", 10000);
        EXPECT_EXIT0(&w, 10000);
    }
    proc_free(&w);
    EXPECT_RC(nfslock_manager_unlock(m, 2), 0, "unlock(2) of a 300 ms lease held for 1 s");
    close_(m);
}

/* 2 x 200 open/lock/close cycles: the library's descriptors do not grow with them (it
 * may keep a few, at most 8, for its own use). */
static void mode_leaks(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    close_(m);
    int fds[3];
    fds[0] = count_fds();
    for (int round = 1; round <= 2; round++) {
        for (int i = 0; i < 200; i++) {
            nfslock_manager *o = NULL;
            int rc = nfslock_manager_open_dir(MDIR, &o);
            if (rc != 0) {
                EXPECT_RC(rc, 0, "open_dir #%d", i + 1);
                break;
            }
            if (i % 2 == 0)
                EXPECT_RC(nfslock_manager_lock(o, (uint32_t)i), 0, "lock(%d)", i);
            EXPECT_RC(nfslock_manager_close(o), 0, "close #%d", i + 1);
        }
        fds[round] = count_fds();
    }
    note("descriptors %d -> %d -> %d", fds[0], fds[1], fds[2]);
    CHECKF(fds[1] <= fds[0] + 8, "200 open/lock/close: %d descriptors before, %d after", fds[0], fds[1]);
    CHECKF(fds[2] == fds[1], "200 more open/lock/close: %d descriptors, then %d (a leak)", fds[1], fds[2]);
    m = open_();
    if (m != NULL) {
        EXPECT_HELD(m, "every lock taken before a close was released by it", NO_IDS);
        close_(m);
    }
}

/* Hostile contents: junk in ids/, a huge header, a symlink at the directory. */
static void mode_hostile(void) {
    char p[PATH_MAX];
    /* a 1 GiB sparse header without a newline: EBADMSG, quickly */
    const char *big = in_scratch(p, "big");
    mkdir(big, 0700);
    char hp[PATH_MAX];
    snprintf(hp, sizeof hp, "%s/nfslock-manager", big);
    int fd = open(hp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, "nfslock-manager", 15) != 15 || ftruncate(fd, (off_t)1 << 30) != 0)
        fail(__FILE__, __LINE__, "making %s: %s", hp, strerror(errno));
    if (fd >= 0)
        close(fd);
    nfslock_manager *o = NULL;
    double t = now_ms();
    int rc = nfslock_manager_open_dir(big, &o);
    t = now_ms() - t;
    EXPECT_RC(rc, EBADMSG, "open_dir whose header is 1 GiB without a newline");
    CHECKF(t < 2000, "open_dir of a 1 GiB header took %.0f ms (read it all?)", t);
    if (rc == 0)
        nfslock_manager_close(o);
    unlink(hp);
    /* a symlink to a manager directory */
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char lp[PATH_MAX];
    in_scratch(lp, "link");
    if (symlink(MDIR, lp) == 0) {
        o = NULL;
        rc = nfslock_manager_open_dir(lp, &o);
        EXPECT_RC(rc, ELOOP, "open_dir of a symlink to a manager directory");
        if (rc == 0)
            nfslock_manager_close(o);
        EXPECT_RC(nfslock_manager_create_dir(lp, &o), EEXIST, "create_dir where a symlink is");
    }
    /* junk in ids/: names that are not ids are not ids */
    EXPECT_RC(nfslock_manager_allocate_id(m, 1), 0, "allocate_id(1)");
    static const char *const junk[] = {"abc", "-1", "4294967295", "99999999999", "1x", " 2", ".hidden"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        write_file(in_mdir(p, "ids/%s", junk[i]), "junk");
    mkdir(in_mdir(p, "ids/0dir"), 0700);
    uint32_t ids[64];
    size_t n = 0;
    rc = nfslock_manager_allocated(m, ids, 64, &n);
    EXPECT_RC(rc, 0, "allocated with junk names in ids/");
    char txt[512];
    CHECKF(rc != 0 || (n == 1 && ids[0] == 1), "allocated with junk names in ids/: {%s}, want {1}",
           ids_text(ids, rc == 0 ? n : 0, txt, sizeof txt));
    int64_t a = allocate(m);
    CHECKF(a == 0, "allocate with junk names in ids/ returned %lld, want 0", (long long)a);
    a = allocate(m);
    CHECKF(a == 2, "allocate with junk names in ids/ returned %lld, want 2", (long long)a);
    EXPECT_RC(nfslock_manager_free_all(m), 0, "free_all with junk in ids/");
    EXPECT_ALLOCATED(m, "free_all with junk in ids/", NO_IDS);
    /* junk in locks/: not held locks */
    EXPECT_RC(nfslock_manager_lock(m, 3), 0, "lock(3)");
    write_file(in_mdir(p, "locks/xyz.nfs_lock"), "junk");
    write_file(in_mdir(p, "locks/7"), "junk");
    EXPECT_HELD(m, "junk names in locks/", IDS(3));
    EXPECT_RC(nfslock_manager_unlock(m, 3), 0, "unlock(3)");
    /* a lock file of junk at locks/8.nfs_lock: EBADMSG, never taken over silently */
    write_file(in_mdir(p, "locks/8.nfs_lock"), "not a record at all");
    o = NULL;
    rc = nfslock_manager_timedlock(m, 8, 0);
    CHECKF(rc == EBADMSG || rc == EBUSY, "timedlock(8, 0) over a junk lock file: %s (%s), want EBADMSG (or EBUSY)",
           en(rc), rc ? nfslock_last_error() : "-");
    if (rc == 0)
        nfslock_manager_unlock(m, 8);
    close_(m);
}

/* open_dir in a child process (a crash or a wait is reported, not suffered): `want`. */
static void expect_open_dir(const char *dir, int want, const char *what) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(5);
        nfslock_manager *m = NULL;
        int rc = nfslock_manager_open_dir(dir, &m);
        if (rc != want)
            printf("FAIL %s:%d: open_dir of %s: got %s (%d), want %s; last error: %s\n", __FILE__, __LINE__, what,
                   en(rc), rc, en(want), rc ? nfslock_last_error() : "-");
        if (rc == 0)
            nfslock_manager_close(m);
        fflush(stdout);
        _exit(rc == want ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    char d[128];
    if (!(WIFEXITED(st) && WEXITSTATUS(st) <= 1))
        fail(__FILE__, __LINE__, "open_dir of %s: the process %s", what, describe_status(st, d, sizeof d));
    else if (WEXITSTATUS(st) != 0)
        failures++;
}

/* A manager directory whose header, ids/ or locks/ is not what it should be: EBADMSG,
 * never another errno, a wait or a crash. */
static void mode_bad_parts(void) {
    char d[PATH_MAX], hp[PATH_MAX], sp[PATH_MAX];
    static const char *const kinds[] = {"header-dir", "header-fifo", "header-symlink", "no-ids", "ids-file",
                                        "no-locks"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        in_scratch(d, kinds[k]);
        nfslock_manager *m = NULL;
        EXPECT_RC(nfslock_manager_create_dir(d, &m), 0, "create_dir(%s)", d);
        close_(m);
        snprintf(hp, sizeof hp, "%s/nfslock-manager", d);
        int ok = 0;
        switch (k) {
        case 0: ok = unlink(hp) == 0 && mkdir(hp, 0700) == 0; break;
        case 1: ok = unlink(hp) == 0 && mkfifo(hp, 0600) == 0; break;
        case 2:
            snprintf(sp, sizeof sp, "%s/real-header", SCRATCH);
            ok = write_file(sp, "nfslock-manager 1\n") == 0 && unlink(hp) == 0 && symlink(sp, hp) == 0;
            break;
        case 3: snprintf(sp, sizeof sp, "%s/ids", d); ok = rmdir(sp) == 0; break;
        case 4: snprintf(sp, sizeof sp, "%s/ids", d); ok = rmdir(sp) == 0 && write_file(sp, "") == 0; break;
        default: snprintf(sp, sizeof sp, "%s/locks", d); ok = rmdir(sp) == 0; break;
        }
        if (!ok) {
            fail(__FILE__, __LINE__, "making the case %s: %s", kinds[k], strerror(errno));
            continue;
        }
        char what[128];
        snprintf(what, sizeof what, "a manager directory with %s", kinds[k]);
        expect_open_dir(d, EBADMSG, what);
    }
}

/* The crash loop on a directory: 40 SIGKILLs of workers in and out of the lock; a dead
 * holder is cleared at once by the next locker. */
static void mode_crash_loop(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    const char *backend[] = {"dir", MDIR, NULL};
    run_crash_loop(backend, SCRATCH, 7, 40, m);
    EXPECT_HELD(m, "after the crash loop", NO_IDS);
    close_(m);
}

/* Allocating workers SIGKILLed at random: what they leave behind never makes allocated
 * list junk or allocate fail, and no id is allocated twice. */
static void mode_alloc_crash(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    unsigned seed = (unsigned)getpid();
    char *argv[260];
    int n = 0;
    argv[n++] = (char *)"t";
    argv[n++] = (char *)"worker";
    argv[n++] = (char *)"dir";
    argv[n++] = MDIR;
    for (int i = 0; i < 200; i++)
        argv[n++] = (char *)"alloc";
    argv[n] = NULL;
    static uint8_t seen[100000];
    memset(seen, 0, sizeof seen);
    int reported = 0;
    for (int round = 0; round < 20; round++) {
        struct proc w;
        if (spawn_argv(&w, argv) != 0)
            break;
        EXPECT_LINE(&w, "open 0", 10000);
        sleep_ms(5 + (int)(rand_r(&seed) % 30));
        proc_kill(&w);
        char line[256];
        unsigned id;
        while (proc_line(&w, line, sizeof line, 100) == 0) {
            if (sscanf(line, "alloc %u", &id) == 1 && id < sizeof seen) {
                CHECKF(!seen[id], "id %u was handed out twice", id);
                seen[id] = 1;
                reported++;
            } else {
                fail(__FILE__, __LINE__, "an allocating worker said \"%s\"", line);
            }
        }
        proc_free(&w);
    }
    uint32_t *ids = malloc(100000 * sizeof *ids);
    size_t got = 0;
    int rc = nfslock_manager_allocated(m, ids, 100000, &got);
    EXPECT_RC(rc, 0, "allocated after the killed allocators");
    size_t unreported = 0;
    for (size_t i = 0; rc == 0 && i < got; i++) {
        if (ids[i] >= sizeof seen || !seen[ids[i]])
            unreported++;
    }
    note("20 allocators SIGKILLed: %d ids reported, %zu allocated (%zu allocated but not reported: killed between "
         "the allocation and its report)",
         reported, got, unreported);
    CHECKF(rc != 0 || got >= (size_t)reported, "allocated lists %zu ids, fewer than the %d reported", got, reported);
    CHECKF(unreported <= 20, "%zu ids allocated that no worker reported (at most 1 per killed worker)", unreported);
    int64_t next = allocate(m);
    CHECKF(next >= 0 && (size_t)next < sizeof seen && !seen[next], "allocate after the crashes returned %lld",
           (long long)next);
    EXPECT_RC(nfslock_manager_free_all(m), 0, "free_all after the crashes");
    EXPECT_ALLOCATED(m, "free_all after the crashes", NO_IDS);
    CHECKF(allocate(m) == 0, "allocate after free_all is not 0");
    free(ids);
    close_(m);
}

/* fork: the child does not own the parent's locks (unlock EPERM, try EBUSY), and neither
 * its close of the inherited handle nor its exit(3) releases them. */
static void mode_fork(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char p[PATH_MAX];
    EXPECT_RC(nfslock_manager_lock(m, 5), 0, "parent: lock(5)");
    EXPECT_RC(nfslock_manager_lock(m, 6), 0, "parent: lock(6)");
    for (int variant = 0; variant < 2; variant++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(30);
            failures = 0;
            EXPECT_RC(nfslock_manager_unlock(m, 5), EPERM, "child: unlock(5) of the parent's lock");
            EXPECT_RC(nfslock_manager_timedlock(m, 5, 0), EBUSY, "child: timedlock(5, 0) of the parent's lock");
            EXPECT_RC(nfslock_manager_timedlock(m, 5, 100), ETIMEDOUT, "child: timedlock(5, 100) of the parent's lock");
            EXPECT_RC(nfslock_manager_lock(m, 7), 0, "child: lock(7)");
            if (variant == 0) {
                int rc = nfslock_manager_close(m); /* its answer: the fork-close check */
                note("child: close of the inherited handle: %s", en(rc));
            }
            fflush(stdout);
            exit(failures ? 1 : 0); /* exit(3), not _exit: the library's exit handlers run */
        }
        int st = -1;
        double deadline = now_ms() + 20000;
        while (waitpid(pid, &st, WNOHANG) == 0 && now_ms() < deadline)
            sleep_ms(5);
        char d[128];
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the forked child (%s): %s",
               variant == 0 ? "close, then exit" : "exit", describe_status(st, d, sizeof d));
        CHECKF(exists(in_mdir(p, "locks/5.nfs_lock")) && exists(in_mdir(p, "locks/6.nfs_lock")),
               "after a forked child's %s, the parent's lock files are gone", variant == 0 ? "close and exit" : "exit");
        struct proc w;
        if (WORKER(&w, "try:5", "try:6", "try:7", "unlock:7") == 0) {
            EXPECT_LINE(&w, "open 0", 10000);
            EXPECT_LINE(&w, "try:5 EBUSY", 10000);
            EXPECT_LINE(&w, "try:6 EBUSY", 10000);
            EXPECT_LINE(&w, "try:7 0", 10000); /* the child's lock, gone with it */
            EXPECT_LINE(&w, "unlock:7 0", 10000);
            EXPECT_EXIT0(&w, 10000);
        }
        proc_free(&w);
    }
    EXPECT_RC(nfslock_manager_unlock(m, 5), 0, "parent: unlock(5) after the children");
    EXPECT_RC(nfslock_manager_unlock(m, 6), 0, "parent: unlock(6) after the children");
    close_(m);
}

/* A forked child closing the inherited handle while the parent holds locks through it:
 * close releases the child's own lock at once, keeps the parent's, and returns 0 (EPERM is
 * not among close's documented errors; the SHM backend returns 0 here). */
static void mode_fork_close(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char p[PATH_MAX];
    EXPECT_RC(nfslock_manager_lock(m, 5), 0, "parent: lock(5)");
    int to_parent[2], to_child[2];
    if (pipe(to_parent) != 0 || pipe(to_child) != 0)
        return;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        failures = 0;
        EXPECT_RC(nfslock_manager_lock(m, 7), 0, "child: lock(7)");
        EXPECT_RC(nfslock_manager_close(m), 0, "child: close of the inherited handle (the parent holds 5 through it, "
                                               "the child 7)");
        fflush(stdout);
        if (write(to_parent[1], "C", 1) != 1)
            _exit(99);
        char c;
        if (read(to_child[0], &c, 1) != 1)
            _exit(98);
        _exit(failures ? 1 : 0);
    }
    char c = 0;
    struct pollfd pfd = {to_parent[0], POLLIN, 0};
    if (poll(&pfd, 1, 10000) != 1 || read(to_parent[0], &c, 1) != 1) {
        fail(__FILE__, __LINE__, "the child did not close its handle");
    } else {
        /* the child is alive: only its close can have released 7 */
        CHECKF(!exists(in_mdir(p, "locks/7.nfs_lock")), "the child's close did not release its own lock 7 (%s is "
                                                         "there while the child lives)", p);
        CHECKF(exists(in_mdir(p, "locks/5.nfs_lock")), "the child's close released the parent's lock 5");
    }
    if (write(to_child[1], "x", 1) != 1) {
    }
    int st;
    waitpid(pid, &st, 0);
    char d[128];
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the forked child: %s", describe_status(st, d, sizeof d));
    EXPECT_RC(nfslock_manager_unlock(m, 5), 0, "parent: unlock(5)");
    close(to_parent[0]);
    close(to_parent[1]);
    close(to_child[0]);
    close(to_child[1]);
    close_(m);
}

static void mode_id_races(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    run_id_races(m, 30, 0);
    EXPECT_ALLOCATED(m, "after the races (every id freed)", NO_IDS);
    close_(m);
}

/* Someone removed or replaced the lock file of a held lock: unlock is ENOLCK and leaves
 * the other holder's lock alone. A dead holder's lock file is listed by locks_held until
 * a locker clears it. */
static void mode_lost_lock(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char p[PATH_MAX], q[PATH_MAX];
    EXPECT_RC(nfslock_manager_lock(m, 3), 0, "lock(3)");
    if (unlink(in_mdir(p, "locks/3.nfs_lock")) != 0)
        fail(__FILE__, __LINE__, "unlink %s: %s", p, strerror(errno));
    EXPECT_RC(nfslock_manager_unlock(m, 3), ENOLCK, "unlock(3) after its lock file was removed");
    EXPECT_RC(nfslock_manager_lock(m, 4), 0, "lock(4)");
    in_mdir(p, "locks/4.nfs_lock");
    in_scratch(q, "moved-away");
    if (rename(p, q) != 0)
        fail(__FILE__, __LINE__, "rename %s: %s", p, strerror(errno));
    struct proc w;
    if (WORKER(&w, "lock:4", "say:H", "wait", "unlock:4") == 0) {
        EXPECT_LINE(&w, "open 0", 10000);
        EXPECT_LINE(&w, "lock:4 0", 10000);
        EXPECT_LINE(&w, "H", 10000);
        EXPECT_RC(nfslock_manager_unlock(m, 4), ENOLCK, "unlock(4) whose lock file another process now holds");
        CHECKF(exists(p), "unlock(4) removed the other process's lock file");
        struct proc w2;
        if (WORKER(&w2, "try:4") == 0) {
            EXPECT_LINE(&w2, "open 0", 10000);
            EXPECT_LINE(&w2, "try:4 EBUSY", 10000);
            EXPECT_EXIT0(&w2, 10000);
        }
        proc_free(&w2);
        proc_send(&w, "\n");
        EXPECT_LINE(&w, "unlock:4 0", 10000);
        EXPECT_EXIT0(&w, 10000);
    }
    proc_free(&w);
    /* close after a held lock's file was removed: ENOLCK (and the handle is freed) */
    EXPECT_RC(nfslock_manager_lock(m, 5), 0, "lock(5)");
    unlink(in_mdir(p, "locks/5.nfs_lock"));
    EXPECT_RC(nfslock_manager_close(m), ENOLCK, "close after a held lock's file was removed");
    /* a dead holder: listed until cleared */
    m = open_();
    if (m == NULL)
        return;
    if (WORKER(&w, "lock:6", "say:H", "pause") == 0) {
        EXPECT_LINE(&w, "open 0", 10000);
        EXPECT_LINE(&w, "lock:6 0", 10000);
        EXPECT_LINE(&w, "H", 10000);
        proc_kill(&w);
        EXPECT_HELD(m, "a dead holder's lock file (documented: listed until cleared)", IDS(6));
        EXPECT_RC(nfslock_manager_timedlock(m, 6, 0), 0, "timedlock(6, 0) of a dead holder's lock");
        EXPECT_RC(nfslock_manager_unlock(m, 6), 0, "unlock(6)");
        EXPECT_HELD(m, "after clearing the dead holder", NO_IDS);
    }
    proc_free(&w);
    close_(m);
}

/* A relative directory is the directory it named at open: chdir after does not move it. */
static void mode_relative(void) {
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL || chdir(SCRATCH) != 0) {
        fail(__FILE__, __LINE__, "chdir %s: %s", SCRATCH, strerror(errno));
        return;
    }
    nfslock_manager *m = NULL;
    EXPECT_RC(nfslock_manager_create_dir("m", &m), 0, "create_dir(\"m\") in SCRATCH");
    if (chdir("/") != 0)
        fail(__FILE__, __LINE__, "chdir /");
    if (m != NULL) {
        char p[PATH_MAX];
        EXPECT_RC(nfslock_manager_allocate_id(m, 2), 0, "allocate_id(2) after chdir(\"/\")");
        EXPECT_RC(nfslock_manager_lock(m, 2), 0, "lock(2) after chdir(\"/\")");
        CHECKF(exists(in_mdir(p, "ids/2")), "allocate_id after chdir: %s is missing", p);
        CHECKF(exists(in_mdir(p, "locks/2.nfs_lock")), "lock after chdir: %s is missing", p);
        CHECKF(!exists("/m"), "the manager followed the chdir to /m");
        EXPECT_RC(nfslock_manager_unlock(m, 2), 0, "unlock(2)");
        close_(m);
    }
    if (chdir(cwd) != 0) {
    }
}

/* Signals to a waiting thread: no EINTR, no early return. */
static void mode_signals(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    struct proc w;
    if (WORKER(&w, "lock:3", "say:H", "wait", "unlock:3", "wait") == 0) {
        EXPECT_LINE(&w, "open 0", 10000);
        EXPECT_LINE(&w, "lock:3 0", 10000);
        EXPECT_LINE(&w, "H", 10000);
        check_signals(m, 3, release_worker, &w);
        EXPECT_LINE(&w, "unlock:3 0", 10000);
    }
    proc_free(&w);
    close_(m);
}

/* 4 processes allocating and freeing at once: an id is never handed out while another
 * process has it. */
static void mode_alloc_loop(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    const char *backend[] = {"dir", MDIR, NULL};
    run_allocloop(backend, SCRATCH, CYCLES, 150000);
    EXPECT_ALLOCATED(m, "after the allocating processes freed everything", NO_IDS);
    close_(m);
}

/* A lock call waiting while its handle is closed gets EINVAL, and holds nothing: the
 * review found it told 0 while the lock was already released (two holders). */
static nfslock_manager *cw_h1;
static int cw_rc = -1;

static void *cw_waiter(void *arg) {
    (void)arg;
    cw_rc = nfslock_manager_lock(cw_h1, 5);
    return NULL;
}

static void mode_close_during_wait(void) {
    nfslock_manager *h2;
    pthread_t t;
    char p[PATH_MAX];
    cw_h1 = create();
    h2 = cw_h1 ? open_() : NULL;
    if (h2 == NULL)
        return;
    EXPECT_RC(nfslock_manager_lock(h2, 5), 0, "lock(5) through the second handle");
    pthread_create(&t, NULL, cw_waiter, NULL);
    usleep(300000);
    EXPECT_RC(nfslock_manager_close(cw_h1), 0, "close of the first handle while a thread waits in its lock(5)");
    EXPECT_RC(nfslock_manager_unlock(h2, 5), 0, "unlock(5) through the second handle");
    pthread_join(t, NULL);
    EXPECT_RC(cw_rc, EINVAL, "the waiter's lock(5) on the handle closed under it");
    CHECKF(!exists(in_mdir(p, "locks/5.nfs_lock")), "lock 5's file is there after the waiter was refused");
    EXPECT_RC(nfslock_manager_timedlock(h2, 5, 0), 0, "timedlock(5, 0) through the second handle: free");
    EXPECT_RC(nfslock_manager_unlock(h2, 5), 0, "unlock(5)");
    close_(h2);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    umask(0);
    if (argc >= 2 && strcmp(argv[1], "worker") == 0)
        return worker_main(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "count") == 0)
        return count_main(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "allocloop") == 0)
        return allocloop_main(argc - 2, argv + 2);
    if (argc < 3) {
        fprintf(stderr, "usage: dir MODE SCRATCH [CYCLES]\n");
        return 2;
    }
    SCRATCH = argv[2];
    if (argc >= 4)
        CYCLES = strtol(argv[3], NULL, 10);
    snprintf(MDIR, sizeof MDIR, "%s/m", SCRATCH);
    alarm(240);
    static const struct {
        const char *name;
        void (*fn)(void);
    } modes[] = {
        {"create-open", mode_create_open}, {"alloc", mode_alloc},         {"short-buffer", mode_short_buffer},
        {"free-all", mode_free_all},       {"locks-held", mode_locks_held}, {"exclusion", mode_exclusion},
        {"counter", mode_counter},         {"killed", mode_killed},       {"lease", mode_lease},
        {"close", mode_close},             {"alloc-race", mode_alloc_race}, {"file-modes", mode_file_modes},
        {"threads", mode_threads},         {"timeouts", mode_timeouts},   {"interop", mode_interop},
        {"set-lease", mode_set_lease},     {"leaks", mode_leaks},         {"hostile", mode_hostile},
        {"bad-parts", mode_bad_parts},     {"crash-loop", mode_crash_loop}, {"alloc-crash", mode_alloc_crash},
        {"fork", mode_fork},               {"fork-close", mode_fork_close}, {"id-races", mode_id_races},
        {"lost-lock", mode_lost_lock},     {"relative", mode_relative},   {"signals", mode_signals},
        {"alloc-loop", mode_alloc_loop},   {"close-during-wait", mode_close_during_wait},
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        if (strcmp(argv[1], modes[i].name) == 0) {
            modes[i].fn();
            return finish();
        }
    }
    fprintf(stderr, "dir: unknown mode %s\n", argv[1]);
    return 2;
}
