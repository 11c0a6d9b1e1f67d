/* The multi-host rig's worker: shared by its source files. */
#ifndef NFSLOCK_RIG_WORKER_H
#define NFSLOCK_RIG_WORKER_H

/* The name of an error code for result lines ("OK", "EAGAIN", ...). */
const char *errname(int rc);

/* Runs a session mode (ids, holdids, lockids) and returns its exit status, or -1 when
 * `mode` is not one. */
int session_mode(const char *mode, int argc, char **argv);

/* Runs a lease mode (worker_lease.c) and returns its exit status, or -1 when `mode` is
 * not one. */
int lease_mode(const char *mode, int argc, char **argv);

#endif
