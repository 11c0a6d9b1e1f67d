"""Benchmark worker for flufl.lock, run with the harness's venv Python.

Same command line and output as worker_c.c, so the orchestrator treats every
peer alike:

  worker_flufl.py uncontended PATH WARMUP ROUNDS CYCLES_PER_ROUND
  worker_flufl.py contended PATH COUNT LOGFILE CS_US

The lock file is PATH.lock (flufl.lock takes the lock file's own name).
"""

import os
import sys
import time

from flufl.lock import Lock

# Long enough that no lock is ever considered expired (and broken) during a run.
LIFETIME_S = 600


def now_ns() -> int:
    # time.monotonic_ns() is CLOCK_MONOTONIC on Linux: the same clock the C and
    # Perl workers log, so handoffs can be computed across processes.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def uncontended(path: str, warmup: int, rounds: int, cycles: int) -> None:
    # One Lock object reused for every cycle: that is how flufl.lock is meant to
    # be used, and building a new one per cycle would mostly time
    # socket.getfqdn() in its constructor rather than the locking.
    lock = Lock(path + ".lock", lifetime=LIFETIME_S)
    # A timeout (rather than None = forever) so that a stray holder makes the
    # run fail instead of hang; uncontended, the first attempt always wins.
    for _ in range(warmup):
        lock.lock(timeout=5)
        lock.unlock()
    for _ in range(rounds):
        t0 = now_ns()
        for _ in range(cycles):
            lock.lock(timeout=5)
            lock.unlock()
        print(f"round_ns {now_ns() - t0}", flush=True)


def contended(path: str, count: int, logpath: str, cs_us: int) -> None:
    lock = Lock(path + ".lock", lifetime=LIFETIME_S)
    log = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    # Start barrier, see worker_c.c.
    print("ready", flush=True)
    if not sys.stdin.readline():
        sys.exit("worker_flufl: stdin closed before go")
    os.write(log, f"S {now_ns()}\n".encode())
    for _ in range(count):
        lock.lock()  # blocks, polling with flufl's own 0.01-2.01 s random sleep
        acquired = now_ns()
        end = acquired + cs_us * 1000
        while now_ns() < end:  # tiny busy critical section
            pass
        releasing = now_ns()
        lock.unlock()
        os.write(log, f"A {acquired} {releasing}\n".encode())
    os.close(log)


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    if mode == "uncontended" and len(args) == 3:
        uncontended(path, *map(int, args))
    elif mode == "contended" and len(args) == 3:
        contended(path, int(args[0]), args[1], int(args[2]))
    else:
        sys.exit(f"worker_flufl: bad arguments {sys.argv[1:]}")


if __name__ == "__main__":
    main()
