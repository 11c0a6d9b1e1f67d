"""Benchmark worker for Ganga's SessionLockManager, run with the harness's venv.

Same command line and output as worker_nfslock.c, so bench/ganga/run treats the
two peers alike:

  worker_ganga.py single DIR HELD SECONDS MAXCALLS IDFILE
      Fresh session on DIR.  Times make_new_ids(1) for SECONDS (at most
      MAXCALLS calls) and prints "start CALLS NS"; then takes ids in bulk
      until the session holds HELD ids ("bulk N NS"); then times
      make_new_ids(1) again the same way ("held NHELD CALLS NS").
  worker_ganga.py concurrent DIR SECONDS MAXCALLS IDFILE
      Opens its session, prints "ready", waits for a line on stdin ("go"),
      then calls make_new_ids(1) for SECONDS (at most MAXCALLS calls) and
      prints "done CALLS START_NS END_NS" (CLOCK_MONOTONIC).
  worker_ganga.py calls DIR COUNT
      Exactly COUNT make_new_ids(1) calls, untimed (for strace counting).

Every id returned is written to IDFILE, one per line, after the timed loops,
so the harness can check that no id was handed out twice.

This is the real class from the installed ganga package, used as Ganga's own
repository code uses it: SessionLockManager(repo, root, name).startup(), then
make_new_ids(n); no method is patched.  Importing GangaCore needs no bootstrap:
the package's __init__ registers its configuration with default values (so
[Configuration]DiskIOTimeout = 45 s, the session expiry) and creates
~/gangadir/logs and ~/.ganga.log, which is why the harness points HOME into its
scratch area.  GANGA_SWAN_INTEGRATION must not be set: with it, Ganga skips the
session file write (and its fsync) altogether.
"""

import os
import sys
import time

# The ganga wheel installs its packages under site-packages/ganga/ and its
# ganga/__init__.py puts that directory on sys.path: this import is what makes
# "GangaCore" importable, exactly as the ganga launcher does it.
import ganga  # noqa: F401

import GangaCore  # noqa: E402
from GangaCore.Core.GangaRepository import SessionLock  # noqa: E402
from GangaCore.Core.GangaRepository.SessionLock import SessionLockManager  # noqa: E402

# Ganga names the id space after the repository it guards; "jobs" is the one a
# real session allocates job ids from.
NAME = "jobs"


def now_ns() -> int:
    # CLOCK_MONOTONIC, the clock the C worker uses too, so the harness can put
    # the four concurrent workers' start and end times on one axis.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def open_session(root: str) -> SessionLockManager:
    if GangaCore.GANGA_SWAN_INTEGRATION:
        sys.exit("worker_ganga: GANGA_SWAN_INTEGRATION is set; Ganga would not write its session file")
    # repo is only used in Ganga's error messages; a real repository passes itself.
    mgr = SessionLockManager(None, root, NAME)
    mgr.startup()
    return mgr


def close_session(mgr: SessionLockManager) -> None:
    # shutdown() stops the refresher thread and removes the .locks file; the
    # heartbeat .session file is removed by Ganga's exit handler, which we are
    # not running, so call what it calls.
    mgr.shutdown()
    SessionLock.removeGlobalSessionFiles()


def timed_loop(mgr: SessionLockManager, seconds: float, maxcalls: int, ids: list) -> tuple[int, int]:
    """make_new_ids(1) until SECONDS have passed or MAXCALLS were made."""
    deadline = now_ns() + int(seconds * 1e9)
    calls = 0
    t0 = now_ns()
    while calls < maxcalls:
        ids.extend(mgr.make_new_ids(1))
        calls += 1
        # Checking the clock every call costs ~0.1 µs against ~1 ms a call.
        if now_ns() >= deadline:
            break
    return calls, now_ns() - t0


def write_ids(path: str, ids: list) -> None:
    with open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))


def single(root: str, held: int, seconds: float, maxcalls: int, idfile: str) -> None:
    mgr = open_session(root)
    ids: list = []
    calls, ns = timed_loop(mgr, seconds, maxcalls, ids)
    print(f"start {calls} {ns}", flush=True)
    # Ganga takes any number of ids in one call (a range), and that is how a
    # session gets to hold many: one bulk call, one session file write.
    need = held - len(mgr.locked)
    t0 = now_ns()
    if need > 0:
        ids.extend(mgr.make_new_ids(need))
    print(f"bulk {max(need, 0)} {now_ns() - t0}", flush=True)
    nheld = len(mgr.locked)
    calls, ns = timed_loop(mgr, seconds, maxcalls, ids)
    print(f"held {nheld} {calls} {ns}", flush=True)
    close_session(mgr)
    write_ids(idfile, ids)


def concurrent(root: str, seconds: float, maxcalls: int, idfile: str) -> None:
    mgr = open_session(root)
    # Start barrier: the harness starts the workers one at a time, each once
    # the previous said "ready" (Ganga sessions opened at the same moment
    # race, see run_concurrent in run), then says "go" to all at once.
    print("ready", flush=True)
    if not sys.stdin.readline():
        sys.exit("worker_ganga: stdin closed before go")
    ids: list = []
    t0 = now_ns()
    calls, ns = timed_loop(mgr, seconds, maxcalls, ids)
    print(f"done {calls} {t0} {t0 + ns}", flush=True)
    close_session(mgr)
    write_ids(idfile, ids)


def calls_only(root: str, count: int) -> None:
    mgr = open_session(root)
    for _ in range(count):
        mgr.make_new_ids(1)
    close_session(mgr)


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "single" and len(args) == 5:
        single(args[0], int(args[1]), float(args[2]), int(args[3]), args[4])
    elif mode == "concurrent" and len(args) == 4:
        concurrent(args[0], float(args[1]), int(args[2]), args[3])
    elif mode == "calls" and len(args) == 2:
        calls_only(args[0], int(args[1]))
    else:
        sys.exit(f"worker_ganga: bad arguments {sys.argv[1:]}")


if __name__ == "__main__":
    main()
