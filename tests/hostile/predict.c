/*
 * LD_PRELOAD shim for tests/hostile.rs: makes the names libnfslock draws predictable, as
 * an attacker who could guess them would see them, so that a test can plant files at
 * exactly the names the library is about to use.
 *
 * The library draws every private name (claims, temporary files, session ids) as 8
 * bytes from getrandom(3) with flags 0. The shim answers such requests from a list:
 *   NFSLOCK_PREDICT=V1,V2,...   the first requests get these values (16 hex digits
 *                               each, as the library prints a u64: the value is stored
 *                               in native byte order), in turn; later ones go to the
 *                               kernel
 *   NFSLOCK_PREDICT_FOREVER=1   the last value is repeated for every later request
 *   NFSLOCK_PREDICT_COUNT=FILE  one byte is appended to FILE per predicted answer, so
 *                               the test knows the shim was in the path at all
 * Every other request (other sizes or flags: the Rust runtime's hash keys) goes to the
 * kernel unchanged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_VALUES 64

static uint64_t values[MAX_VALUES];
static int n_values = -1;
static int forever;
static unsigned next_value;

static void load(void) {
    const char *list = getenv("NFSLOCK_PREDICT");
    const char *f = getenv("NFSLOCK_PREDICT_FOREVER");
    forever = f && strcmp(f, "1") == 0;
    int n = 0;
    while (list && *list && n < MAX_VALUES) {
        char *end;
        uint64_t v = strtoull(list, &end, 16);
        if (end == list)
            break;
        values[n++] = v;
        if (*end != ',')
            break;
        list = end + 1;
    }
    n_values = n;
}

static void count(void) {
    const char *path = getenv("NFSLOCK_PREDICT_COUNT");
    if (!path)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, "x", 1);
        (void)w;
        close(fd);
    }
}

ssize_t getrandom(void *buf, size_t len, unsigned int flags) {
    if (n_values < 0)
        load();
    if (len == sizeof(uint64_t) && flags == 0 && n_values > 0) {
        unsigned i = __atomic_fetch_add(&next_value, 1, __ATOMIC_SEQ_CST);
        if (i < (unsigned)n_values || forever) {
            uint64_t v = values[i < (unsigned)n_values ? i : (unsigned)n_values - 1];
            memcpy(buf, &v, sizeof v);
            count();
            return (ssize_t)sizeof v;
        }
    }
    return syscall(SYS_getrandom, buf, len, flags);
}
