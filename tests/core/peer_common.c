/* The line protocol and the marker shared by core_peer.c and our_peer.c (see peer.h). */
#include "peer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

char *next_command(void)
{
    static char line[4096];
    if (fgets(line, sizeof line, stdin) == NULL)
        exit(0);
    line[strcspn(line, "\n")] = '\0';
    return line;
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int marker_take(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (errno == EEXIST)
            say("overlap pid %d: the marker %s exists: another process believes it holds the lock",
                (int)getpid(), path);
        else
            say("overlap pid %d: creating the marker %s failed: %s", (int)getpid(), path,
                strerror(errno));
        return 0;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (write(fd, pid, (size_t)n) != n) {
        /* The marker's existence is what counts; its content is for people. */
    }
    close(fd);
    say("held");
    return 1;
}

void marker_drop(const char *path, int *made)
{
    if (*made)
        unlink(path);
    *made = 0;
}

const char *errno_name(int code)
{
    switch (code) {
    case 0: return "OK";
    case EAGAIN: return "EAGAIN";
    case EBADMSG: return "EBADMSG";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EDEADLK: return "EDEADLK";
    case ENOLCK: return "ENOLCK";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ELOOP: return "ELOOP";
    case EINVAL: return "EINVAL";
    case EEXIST: return "EEXIST";
    case EACCES: return "EACCES";
    case EIO: return "EIO";
    case ESTALE: return "ESTALE";
    case EINTR: return "EINTR";
    case ENOTRECOVERABLE: return "ENOTRECOVERABLE";
    default: return "E?";
    }
}
