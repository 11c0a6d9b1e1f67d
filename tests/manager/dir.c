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
    /* the header is a directory */
    const char *hd = in_scratch(p, "hdrdir");
    mkdir(hd, 0700);
    snprintf(hp, sizeof hp, "%s/nfslock-manager", hd);
    mkdir(hp, 0700);
    o = NULL;
    EXPECT_RC(nfslock_manager_open_dir(hd, &o), EBADMSG, "open_dir whose header is a directory");
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
    uint32_t ids[8] = {0};
    size_t n = 0;
    EXPECT_RC(nfslock_manager_allocated(m, ids, 2, &n), ERANGE, "allocated into 2 slots with 5 allocated");
    CHECKF(n == 5, "allocated (2 slots): *n_out %zu, want the needed 5", n);
    n = 0;
    EXPECT_RC(nfslock_manager_allocated(m, ids, 0, &n), ERANGE, "allocated into 0 slots with 5 allocated");
    CHECKF(n == 5, "allocated (0 slots): *n_out %zu, want the needed 5", n);
    n = 0;
    EXPECT_RC(nfslock_manager_allocated(m, ids, 5, &n), 0, "allocated into exactly 5 slots");
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
        CHECKF(t < 1000, "the dead holder's lock was taken after %.0f ms, not at once%s", t,
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

/* close releases the locks held through the handle. */
static void mode_close(void) {
    nfslock_manager *m = create();
    if (m == NULL)
        return;
    char p[PATH_MAX];
    EXPECT_RC(nfslock_manager_lock(m, 1), 0, "lock(1)");
    EXPECT_RC(nfslock_manager_lock(m, 2), 0, "lock(2)");
    EXPECT_RC(nfslock_manager_close(m), 0, "close holding 1 and 2");
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
    int started = 0;
    for (int i = 0; i < 4; i++, started++)
        if (spawn_argv(&w[i], argv) != 0)
            break;
    for (int i = 0; i < started; i++)
        EXPECT_LINE(&w[i], "open 0", 10000);
    for (int i = 0; i < started; i++)
        proc_send(&w[i], "\n");
    uint8_t seen[1024] = {0};
    int total = 0;
    for (int i = 0; i < started; i++) {
        for (int k = 0; k < 25; k++) {
            char line[256];
            unsigned id;
            if (proc_line(&w[i], line, sizeof line, 60000) != 0 || sscanf(line, "alloc %u", &id) != 1 || id >= 1024) {
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

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    umask(0);
    if (argc >= 2 && strcmp(argv[1], "worker") == 0)
        return worker_main(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "count") == 0)
        return count_main(argc - 2, argv + 2);
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
