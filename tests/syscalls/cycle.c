/*
 * The hot path under strace: warms up one lock path (its claim file is made then), then
 * runs CYCLES create+unlock cycles between two markers, close(-42) and close(-43), which
 * the test finds in strace's output. Everything the library asks of the kernel between
 * them is the steady-state cost of CYCLES cycles. With a third argument LEASE_MS the
 * cycles are nfslock_acquire of a lease (keep-alive on) + nfslock_unlock.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "nfslock.h"

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s PATH CYCLES [LEASE_MS]\n", argv[0]);
        return 2;
    }
    int cycles = atoi(argv[2]);
    nfslock_options *options = NULL;
    if (argc == 4 && (nfslock_options_new(&options) != 0 || nfslock_options_set_message(options, "hot path") != 0 ||
                      nfslock_options_set_lease_ms(options, (uint32_t)atoi(argv[3])) != 0)) {
        fprintf(stderr, "options: %s\n", nfslock_last_error());
        return 1;
    }
#define TAKE() (options ? nfslock_acquire(argv[1], options, 0, &lock) : nfslock_create(argv[1], "hot path", &lock))
    nfslock *lock;
    for (int i = 0; i < 3; i++) {
        if (TAKE() != 0 || nfslock_unlock(lock) != 0) {
            fprintf(stderr, "warm-up: %s\n", nfslock_last_error());
            return 1;
        }
    }
    /* Let the keep-alive thread finish starting and go to sleep until a held lease is due
     * (a third of the lease away): from then on no acquisition needs to wake it. */
    if (options) {
        if (TAKE() != 0)
            return 1;
        usleep(200 * 1000);
        if (nfslock_unlock(lock) != 0)
            return 1;
    }
    close(-42);
    for (int i = 0; i < cycles; i++) {
        int rc = TAKE();
        if (rc == 0)
            rc = nfslock_unlock(lock);
        if (rc != 0) {
            fprintf(stderr, "cycle %d: %s\n", i, nfslock_last_error());
            return 1;
        }
    }
    close(-43);
    nfslock_options_free(options);
    return 0;
}
