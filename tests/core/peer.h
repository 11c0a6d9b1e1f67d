/*
 * What the two peers of tests/core_interop.rs share: the line protocol with the test
 * driver and the O_EXCL marker that shows two holders at once.
 *
 * A peer reads one command per line on stdin and answers with lines on stdout, each
 * flushed at once. It starts with `ready PID ...`. Every operation ends with a line
 * `done OP RESULT ...`. A peer that took a lock creates the marker file with O_EXCL and
 * says `held`; if the marker exists already (another process believes it holds the
 * same lock) it says `overlap ...` instead. Before it releases, it removes the marker
 * it made. End of input ends the peer.
 */
#ifndef NFSLOCK_CORE_PEER_H
#define NFSLOCK_CORE_PEER_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stddef.h>

/* Prints one line (printf format) to stdout and flushes it. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The next command line from stdin, without its newline, in a static buffer; exits the
 * process (status 0) at end of input. */
char *next_command(void);

/* Sleeps `ms` milliseconds (restarting after signals). */
void sleep_ms(long ms);

/* Milliseconds on CLOCK_MONOTONIC. */
long long now_ms(void);

/* Takes the marker `path` (O_CREAT|O_EXCL) and says `held`, or `overlap` when it is
 * there already. Returns whether this process made it. */
int marker_take(const char *path);

/* Removes the marker if this process made it. */
void marker_drop(const char *path, int *made);

/* The symbolic name of an errno value ("EAGAIN"), "OK" for 0. */
const char *errno_name(int code);

#endif
