/*
 * our_peer: libnfslock's side of tests/core_interop.rs, through include/nfslock.h only.
 *
 *   our_peer PATH MARKER
 *
 * Commands (one per line; answers as peer.h describes; RESULT is OK or an errno name,
 * followed by the number and nfslock_last_error()):
 *   create MSG              nfslock_create; on success takes the marker
 *   blocking TIMEOUT MSG    nfslock_blocking_create; answers `done blocking RESULT
 *                           ms=ELAPSED ...`; on success takes the marker
 *   unlock                  removes the marker, then nfslock_unlock
 *   unlock_path             nfslock_unlock_path
 *   cycle MSG               nfslock_create then at once nfslock_unlock (a whole cycle,
 *                           marker included): `done cycle RESULT RESULT2`
 *   read                    nfslock_get_hostname_and_pid: `done read RESULT HOST PID`
 *   exit                    exits (locks still held are released at exit)
 */
#include "peer.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nfslock.h"

static const char *P;
static const char *MARKER;
static nfslock *held_lock;
static int marker_made;

static void report(const char *op, int rc, const char *extra)
{
    say("done %s %s %d%s%s %s", op, errno_name(rc), rc, extra[0] ? " " : "", extra,
        rc == 0 ? "" : nfslock_last_error());
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: our_peer PATH MARKER\n");
        return 2;
    }
    P = argv[1];
    MARKER = argv[2];
    say("ready %d", (int)getpid());
    for (;;) {
        char *line = next_command();
        char *arg = strchr(line, ' ');
        if (arg != NULL)
            *arg++ = '\0';
        else
            arg = line + strlen(line);
        if (strcmp(line, "create") == 0 || strcmp(line, "blocking") == 0) {
            int blocking = line[0] == 'b';
            if (held_lock != NULL) {
                say("done %s EDEADLK this peer holds the lock already", line);
                continue;
            }
            nfslock *lock = NULL;
            int rc;
            char extra[64] = "";
            if (blocking) {
                char *msg;
                long long timeout = strtoll(arg, &msg, 10);
                while (*msg == ' ')
                    msg++;
                long long start = now_ms();
                rc = nfslock_blocking_create(P, msg, (int64_t)timeout, &lock);
                snprintf(extra, sizeof extra, "ms=%lld", now_ms() - start);
            } else {
                rc = nfslock_create(P, arg, &lock);
            }
            report(line, rc, extra);
            if (rc == 0) {
                held_lock = lock;
                marker_made = marker_take(MARKER);
            }
        } else if (strcmp(line, "lease") == 0) {
            /* lease MS: one attempt at a lease of MS milliseconds, renewed by the library. */
            if (held_lock != NULL) {
                say("done lease EDEADLK this peer holds the lock already");
                continue;
            }
            nfslock_options *o = NULL;
            nfslock *lock = NULL;
            int rc = nfslock_options_new(&o);
            if (rc == 0)
                rc = nfslock_options_set_lease_ms(o, (uint32_t)strtoul(arg, NULL, 10));
            if (rc == 0)
                rc = nfslock_acquire(P, o, 0, &lock);
            nfslock_options_free(o);
            report("lease", rc, "");
            if (rc == 0) {
                held_lock = lock;
                marker_made = marker_take(MARKER);
            }
        } else if (strcmp(line, "unlock") == 0) {
            if (held_lock == NULL) {
                say("done unlock EINVAL this peer holds no lock");
                continue;
            }
            marker_drop(MARKER, &marker_made);
            int rc = nfslock_unlock(held_lock);
            held_lock = NULL;
            report("unlock", rc, "");
        } else if (strcmp(line, "unlock_path") == 0) {
            report("unlock_path", nfslock_unlock_path(P), "");
        } else if (strcmp(line, "cycle") == 0) {
            nfslock *lock = NULL;
            int rc = nfslock_create(P, arg, &lock);
            int rc2 = 0;
            if (rc == 0) {
                int made = marker_take(MARKER);
                marker_drop(MARKER, &made);
                rc2 = nfslock_unlock(lock);
            }
            char extra[64];
            snprintf(extra, sizeof extra, "then-unlock=%s", errno_name(rc2));
            report("cycle", rc != 0 ? rc : rc2, extra);
        } else if (strcmp(line, "read") == 0) {
            char host[512];
            int32_t pid = 0;
            int rc = nfslock_get_hostname_and_pid(P, host, sizeof host, &pid);
            if (rc == 0)
                say("done read OK 0 %s %d", host, (int)pid);
            else
                report("read", rc, "");
        } else if (strcmp(line, "exit") == 0) {
            return 0;
        } else {
            say("error: unknown command %s", line);
        }
    }
}
