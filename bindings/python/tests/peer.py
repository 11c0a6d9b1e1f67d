"""Another process for the tests: takes locks and sessions as told on the command line
and reports on stdout, one line per event. Run with the venv's Python (the installed
wheel). Commands:

  hold PATH [--lease S] [--shared] [--message M] [--no-keepalive]
      acquire (10 s), print "held PID TOKEN", then for each stdin line: "release"
      prints "released" or "error ERRNO CLASS TEXT" and exits; EOF releases and exits
  count PATH COUNTER ROUNDS
      ROUNDS times: with the lock, check nobody else is inside (an O_EXCL marker),
      read-increment-write COUNTER; print "done"
  ids REPO N
      open a session, print "ready", wait for a line, print N new IDs one per line
      (each its own call), close
  session REPO N
      open a session, make N IDs, print them on one line, then wait for stdin EOF
"""

import argparse
import os
import sys
import time

import nfslock


def say(*words) -> None:
    print(*words, flush=True)


def hold(args) -> None:
    lock = nfslock.Lock(args.path, timeout=10, message=args.message, lease=args.lease, shared=args.shared, keepalive=not args.no_keepalive)
    lock.acquire()
    token = lock.fencing_token if args.lease else 0
    say("held", os.getpid(), token)
    for line in sys.stdin:
        if line.strip() == "release":
            break
    try:
        lock.release()
        say("released")
    except nfslock.Error as e:
        say("error", e.errno, type(e).__name__, e.strerror)


def count(args) -> None:
    marker = args.counter + ".inside"
    for _ in range(args.rounds):
        with nfslock.Lock(args.path, timeout=60):
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # fails if two are inside
            os.close(fd)
            with open(args.counter) as f:
                n = int(f.read() or 0)
            time.sleep(0.0005)
            with open(args.counter, "w") as f:
                f.write(str(n + 1))
            os.unlink(marker)
    say("done")


def ids(args) -> None:
    with nfslock.Session(args.repo, "test") as s:
        say("ready")
        sys.stdin.readline()  # "go": so that two peers issue IDs at the same time
        for _ in range(args.n):
            say(s.new_id())


def session(args) -> None:
    s = nfslock.Session(args.repo, "test")
    say(*s.make_new_ids(args.n))
    sys.stdin.read()
    s.close()


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hold")
    h.add_argument("path")
    h.add_argument("--lease", type=float)
    h.add_argument("--shared", action="store_true")
    h.add_argument("--message")
    h.add_argument("--no-keepalive", action="store_true")
    c = sub.add_parser("count")
    c.add_argument("path")
    c.add_argument("counter")
    c.add_argument("rounds", type=int)
    i = sub.add_parser("ids")
    i.add_argument("repo")
    i.add_argument("n", type=int)
    s = sub.add_parser("session")
    s.add_argument("repo")
    s.add_argument("n", type=int)
    args = p.parse_args()
    {"hold": hold, "count": count, "ids": ids, "session": session}[args.cmd](args)


if __name__ == "__main__":
    main()
