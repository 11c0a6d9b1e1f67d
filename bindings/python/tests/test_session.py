"""Session: unique increasing IDs across processes, ID locks, errors."""

import errno
import os

import pytest

import nfslock


def test_ids_unique_and_increasing_across_two_processes(peers, tmp_path):
    repo = str(tmp_path / "repo")
    n = 60
    ps = [peers("ids", repo, str(n)) for _ in range(2)]
    for p in ps:
        assert p.line() == "ready"
    for p in ps:
        p.send("go")
    seqs = [[int(p.line()) for _ in range(n)] for p in ps]
    for p in ps:
        assert p.wait() == 0
    for seq in seqs:
        assert seq == sorted(seq) and len(set(seq)) == n, seq
    everything = seqs[0] + seqs[1]
    assert len(set(everything)) == 2 * n, "an ID was issued twice"
    # A later session gets a greater ID than all of them.
    with nfslock.Session(repo, "test") as s:
        assert s.new_id() > max(everything)


def test_make_new_ids_are_consecutive_and_locked(tmp_path):
    with nfslock.Session(tmp_path / "repo", "jobs", timeout=5) as s, nfslock.Session(tmp_path / "repo", "jobs") as other:
        ids = s.make_new_ids(5)
        assert ids == list(range(ids[0], ids[0] + 5))
        # Locked by s: the other session skips them (not an error).
        assert other.lock_ids(ids) == []
        info = other.holder_of(ids[0])
        assert info.startswith(f"{os.uname().nodename} (pid {os.getpid()}) since ")
        assert s.release_ids(ids[:2] + [10**9]) == ids[:2]
        assert other.lock_ids(ids) == ids[:2]
        assert other.holder_of(10**9) is None
        s.check()
        assert s.reap_locks() == 0
    assert s.closed


def test_namespaces_are_separate(tmp_path):
    with nfslock.Session(tmp_path / "repo", "a") as a, nfslock.Session(tmp_path / "repo", "b") as b:
        x, y = a.new_id(), b.new_id()
        assert b.lock_ids([x]) == [x]  # not locked in namespace b
        assert a.new_id() > x and b.new_id() > y


def test_dead_sessions_ids_are_reclaimed(peers, tmp_path):
    repo = str(tmp_path / "repo")
    p = peers("session", repo, "3")
    ids = [int(w) for w in p.line().split()]
    with nfslock.Session(repo, "test") as s:
        assert s.lock_ids(ids) == []  # alive: skipped
        p.kill()  # SIGKILL: no close; on this host a gone process is dead at once
        assert s.lock_ids(ids) == ids


def test_close_is_final_and_idempotent(tmp_path):
    s = nfslock.Session(tmp_path / "repo")
    ids = s.make_new_ids(2)
    s.close()
    s.close()
    with pytest.raises(RuntimeError):
        s.new_id()
    with nfslock.Session(tmp_path / "repo") as t:
        assert t.lock_ids(ids) == ids  # close released them


def test_repair_counter(tmp_path):
    with nfslock.Session(tmp_path / "repo") as s:
        first = s.new_id()
        s.repair_counter(first + 1000)
        assert s.new_id() >= first + 1000
        s.repair_counter(0)  # never lowers a valid counter
        assert s.new_id() > first + 1000


def test_session_errors(tmp_path):
    with pytest.raises(nfslock.Error) as e:
        nfslock.Session(tmp_path / "repo", "a/b")
    assert e.value.errno == errno.EINVAL and "nfslock_session_open" in e.value.strerror
    (tmp_path / "file").write_text("")
    with pytest.raises(nfslock.Error) as e:
        nfslock.Session(tmp_path / "file" / "repo")
    assert e.value.errno == errno.ENOTDIR
    with nfslock.Session(tmp_path / "repo") as s:
        with pytest.raises(ValueError):
            s.make_new_ids(0)
        with pytest.raises(ValueError):
            s.lock_ids([-1])
        with pytest.raises(nfslock.Error) as e:
            s.lock_ids([2**64 - 1])
        assert e.value.errno == errno.EINVAL
    with pytest.raises(ValueError):
        nfslock.Session(tmp_path / "repo", timeout=-1)


def test_forked_child_cannot_use_the_parents_session(tmp_path):
    with nfslock.Session(tmp_path / "repo") as s:
        s.new_id()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                try:
                    s.new_id()
                    out = "issued"
                except nfslock.Error as e:
                    out = str(e.errno)
                os.write(w, out.encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r) as f:
            assert f.read() == str(errno.EPERM)
        os.waitpid(pid, 0)
        s.new_id()  # the parent's session goes on
