/*
 * The hot path under strace: warms up one lock path (its claim file is made then), then
 * runs CYCLES create+unlock cycles between two markers, close(-42) and close(-43), which
 * the test finds in strace's output. Everything the library asks of the kernel between
 * them is the steady-state cost of CYCLES cycles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "nfslock.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PATH CYCLES\n", argv[0]);
        return 2;
    }
    int cycles = atoi(argv[2]);
    nfslock *lock;
    for (int i = 0; i < 3; i++) {
        if (nfslock_create(argv[1], "hot path", &lock) != 0 || nfslock_unlock(lock) != 0) {
            fprintf(stderr, "warm-up: %s\n", nfslock_last_error());
            return 1;
        }
    }
    close(-42);
    for (int i = 0; i < cycles; i++) {
        int rc = nfslock_create(argv[1], "hot path", &lock);
        if (rc == 0)
            rc = nfslock_unlock(lock);
        if (rc != 0) {
            fprintf(stderr, "cycle %d: %s\n", i, nfslock_last_error());
            return 1;
        }
    }
    close(-43);
    return 0;
}
