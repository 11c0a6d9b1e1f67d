"""Shared fixtures: peer processes (tests/peer.py) that hold locks and sessions."""

import os
import select
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

PEER = Path(__file__).with_name("peer.py")
# How long a peer may take to report anything (they start a Python interpreter).
LINE_TIMEOUT = 20.0


class Peer:
    """A running tests/peer.py with line-based stdin/stdout."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env={k: v for k, v in os.environ.items() if k != "NFSLOCK_LIBRARY"},
        )
        self.pid = self.proc.pid
        self._buf = b""

    def line(self, timeout: float = LINE_TIMEOUT) -> str:
        """The next line the peer prints (fails the test after ``timeout``)."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise AssertionError(f"peer {self.pid} printed nothing for {timeout} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"peer {self.pid} exited (status {self.proc.wait(5)}) before a line; got {self._buf!r}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def send(self, text: str) -> None:
        self.proc.stdin.write(text.encode() + b"\n")

    def close_stdin(self) -> None:
        self.proc.stdin.close()

    def wait(self, timeout: float = LINE_TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # also ends a stopped peer
        self.proc.wait(10)


@pytest.fixture
def peers():
    """A factory of peers; every one is killed and reaped at the end of the test."""
    started: List[Peer] = []

    def start(*args: str) -> Peer:
        p = Peer(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        for f in (p.proc.stdin, p.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def lock_path(tmp_path):
    """A path to lock, in a fresh directory removed after the test."""
    return str(tmp_path / "resource")
