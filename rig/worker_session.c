/*
 * The worker's session modes (ID allocation across simulated hosts). Each prints one
 * result line of key=value pairs.
 *
 *   ids DIR N                 N calls of make_new_ids(1) in one session; prints
 *                             ids=A,B,... err=E pid=P
 *   holdids DIR TIMEOUT IDS   locks the comma-separated IDS in a session with that
 *                             heartbeat timeout (ms), prints held=N, waits to be killed
 *   lockids DIR TIMEOUT IDS MS  tries lock_ids every 20 ms until it holds all of IDS or
 *                             MS have passed; prints locked=N ms=T rc=NAME
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nfslock.h"
#include "worker.h"

#define MAX_IDS 64

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static size_t parse_ids(const char *text, uint64_t *ids)
{
    size_t n = 0;
    char *copy = strdup(text), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < MAX_IDS; tok = strtok_r(NULL, ",", &save))
        ids[n++] = strtoull(tok, NULL, 10);
    free(copy);
    return n;
}

static nfslock_session *open_or_report(const char *dir, uint32_t timeout_ms)
{
    nfslock_session *s = NULL;
    int rc = nfslock_session_open(dir, "rig", timeout_ms, &s);
    if (rc != 0) {
        fprintf(stderr, "open: %s\n", nfslock_last_error());
        printf("rc=%s\n", errname(rc));
        return NULL;
    }
    return s;
}

static int mode_ids(const char *dir, int n)
{
    nfslock_session *s = open_or_report(dir, 0);
    if (s == NULL)
        return 1;
    int err = 0, printed = 0;
    printf("ids=");
    for (int i = 0; i < n; i++) {
        uint64_t id;
        int rc = nfslock_session_make_new_ids(s, 1, &id);
        if (rc != 0) {
            fprintf(stderr, "make_new_ids: %s\n", nfslock_last_error());
            err++;
            continue;
        }
        printf("%s%llu", printed++ ? "," : "", (unsigned long long)id);
    }
    if (nfslock_session_close(s) != 0) {
        fprintf(stderr, "close: %s\n", nfslock_last_error());
        err++;
    }
    printf(" err=%d pid=%d\n", err, (int)getpid());
    return 0;
}

static int mode_holdids(const char *dir, uint32_t timeout_ms, const char *list)
{
    uint64_t ids[MAX_IDS], locked[MAX_IDS];
    size_t n = parse_ids(list, ids), got = 0;
    nfslock_session *s = open_or_report(dir, timeout_ms);
    if (s == NULL)
        return 1;
    int rc = nfslock_session_lock_ids(s, ids, n, locked, &got);
    printf("held=%zu rc=%s\n", got, errname(rc));
    fflush(stdout);
    for (;;)
        pause();
}

static int mode_lockids(const char *dir, uint32_t timeout_ms, const char *list, long long wait_ms)
{
    uint64_t ids[MAX_IDS], locked[MAX_IDS];
    size_t n = parse_ids(list, ids), got = 0;
    nfslock_session *s = open_or_report(dir, timeout_ms);
    if (s == NULL)
        return 1;
    long long start = now_ms();
    int rc;
    for (;;) {
        rc = nfslock_session_lock_ids(s, ids, n, locked, &got);
        if (rc != 0 || got == n || now_ms() - start >= wait_ms)
            break;
        usleep(20000);
    }
    if (rc != 0)
        fprintf(stderr, "lock_ids: %s\n", nfslock_last_error());
    printf("locked=%zu ms=%lld rc=%s\n", got, now_ms() - start, errname(rc));
    nfslock_session_close(s);
    return 0;
}

int session_mode(const char *mode, int argc, char **argv)
{
    if (strcmp(mode, "ids") == 0 && argc == 4)
        return mode_ids(argv[2], atoi(argv[3]));
    if (strcmp(mode, "holdids") == 0 && argc == 5)
        return mode_holdids(argv[2], (uint32_t)atol(argv[3]), argv[4]);
    if (strcmp(mode, "lockids") == 0 && argc == 6)
        return mode_lockids(argv[2], (uint32_t)atol(argv[3]), argv[4], atoll(argv[5]));
    return -1;
}
