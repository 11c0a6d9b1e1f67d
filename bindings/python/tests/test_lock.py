"""Lock: exclusion, errors, leases, fencing tokens, shared locks, threads and fork."""

import errno
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

import nfslock


def test_with_holds_and_releases(lock_path):
    with nfslock.Lock(lock_path, message="nightly import") as lock:
        assert lock.is_held()
        assert os.path.exists(lock_path + ".nfs_lock")
        assert not os.path.exists(lock_path)  # the path itself is never written
        h = nfslock.holder(lock_path)
        assert h.state == nfslock.State.HELD_BY_CALLER
        assert (h.host, h.pid, h.message, h.lease) == (os.uname().nodename, os.getpid(), "nightly import", None)
    assert not lock.is_held()
    assert nfslock.holder(lock_path) is None
    assert not os.path.exists(lock_path + ".nfs_lock")


def test_exclusion_between_processes(peers, tmp_path):
    path, counter = str(tmp_path / "res"), str(tmp_path / "counter")
    with open(counter, "w") as f:
        f.write("0")
    rounds, n = 60, 3
    ps = [peers("count", path, counter, str(rounds)) for _ in range(n)]
    for p in ps:
        assert p.line(timeout=50) == "done"
        assert p.wait() == 0
    with open(counter) as f:
        assert int(f.read()) == rounds * n


def test_busy_names_the_holder(peers, lock_path):
    p = peers("hold", lock_path, "--message", "batch 7")
    assert p.line().startswith("held")
    with pytest.raises(nfslock.Busy) as e:
        nfslock.Lock(lock_path, timeout=0).acquire()
    err = e.value
    assert isinstance(err, nfslock.Error) and isinstance(err, OSError) and isinstance(err, BlockingIOError)
    assert err.errno == errno.EAGAIN
    assert err.path == lock_path
    # The C layer's text, read in this thread right after the call.
    assert err.strerror == err.last_error
    assert "nfslock_blocking_create" in err.strerror and lock_path in err.strerror
    assert f"pid {p.pid}" in err.strerror and "batch 7" in err.strerror
    assert str(err).startswith(f"[Errno {errno.EAGAIN}] ")


def test_timeout(peers, lock_path):
    p = peers("hold", lock_path)
    assert p.line().startswith("held")
    lock = nfslock.Lock(lock_path, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(nfslock.Timeout) as e:
        lock.acquire()
    took = time.monotonic() - t0
    assert 0.3 <= took < 3
    assert isinstance(e.value, TimeoutError) and e.value.errno == errno.ETIMEDOUT
    assert f"pid {p.pid}" in e.value.strerror
    # The main thread waits in slices (for Ctrl-C): still reported as one wait.
    assert "gave up after 300 ms" in e.value.strerror, e.value.strerror
    assert not lock.is_held()
    # acquire()'s own timeout wins over the Lock's; then it waits for the release.
    p.send("release")
    assert p.line() == "released"
    lock.acquire(timeout=5)
    lock.release()


def test_waits_until_released(peers, lock_path):
    p = peers("hold", lock_path)
    assert p.line().startswith("held")
    threading.Timer(0.3, p.send, args=("release",)).start()
    t0 = time.monotonic()
    with nfslock.Lock(lock_path, timeout=10):
        assert time.monotonic() - t0 >= 0.25


def test_other_errors_are_plain_errors_with_errno(tmp_path, lock_path):
    with nfslock.Lock(lock_path):
        # The same thread again, through another Lock object: EDEADLK at once.
        with pytest.raises(nfslock.Error) as e:
            nfslock.Lock(lock_path, timeout=5).acquire()
        assert type(e.value) is nfslock.Error and e.value.errno == errno.EDEADLK
        assert "already holds" in e.value.strerror
    missing = str(tmp_path / "no-such-dir" / "x")
    with pytest.raises(nfslock.Error) as e:
        nfslock.Lock(missing).acquire()
    assert e.value.errno == errno.ENOENT and missing in e.value.strerror
    with pytest.raises(nfslock.Error) as e:
        nfslock.Lock(lock_path, shared=True).acquire()  # a shared lock needs a lease
    assert e.value.errno == errno.EINVAL and "lease" in e.value.strerror
    with pytest.raises(nfslock.Error) as e:
        nfslock.Lock(lock_path, lease=0.01).acquire()  # below the 0.1 s minimum
    assert e.value.errno == errno.EINVAL and "10 ms" in e.value.strerror


def test_bad_record(lock_path):
    with open(lock_path + ".nfs_lock", "wb") as f:
        f.write(b"\x00 not a record \xff")
    with pytest.raises(nfslock.BadRecord) as e:
        nfslock.Lock(lock_path, timeout=1).acquire()
    assert e.value.errno == errno.EBADMSG
    assert nfslock.holder(lock_path).state == nfslock.State.UNREADABLE
    assert os.path.exists(lock_path + ".nfs_lock")  # never removed


def test_bad_arguments(lock_path):
    for bad in (-1, float("nan"), "5"):
        with pytest.raises(ValueError):
            nfslock.Lock(lock_path, timeout=bad)
    with pytest.raises(ValueError):
        nfslock.Lock(lock_path, message="a\0b")
    with pytest.raises(ValueError):
        nfslock.Lock(lock_path + "\0")
    with pytest.raises(ValueError):
        nfslock.Lock(lock_path, lease=0)


def test_misuse_of_one_lock_object(lock_path):
    lock = nfslock.Lock(lock_path)
    with pytest.raises(RuntimeError):
        lock.release()
    with pytest.raises(RuntimeError):
        _ = lock.fencing_token
    lock.acquire()
    with pytest.raises(RuntimeError):
        lock.acquire()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()  # released exactly once


def test_lost_when_broken(lock_path):
    lock = nfslock.Lock(lock_path).acquire()
    nfslock.break_lock(lock_path, "operator: host reimaged")
    assert nfslock.holder(lock_path) is None
    assert not lock.is_held()
    with pytest.raises(nfslock.Lost) as e:
        lock.release()
    assert e.value.errno == errno.ENOLCK and "nfslock_unlock" in e.value.strerror
    assert not lock.is_held()
    with pytest.raises(nfslock.Error) as e:
        nfslock.break_lock(lock_path, "again")
    assert e.value.errno == errno.ENOENT


def test_lost_lease_quotes_the_reason(lock_path):
    lease = 0.6
    lock = nfslock.Lock(lock_path, lease=lease).acquire()
    token = lock.fencing_token
    # Broken by another process (an operator's tool).
    code = f"import nfslock; nfslock.break_lock({lock_path!r}, 'disk replaced')"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    # is_held() reads memory: the keep-alive thread learns of the break at its next
    # renewal (every third of the lease).
    deadline = time.monotonic() + 2 * lease
    while lock.is_held() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not lock.is_held()
    with pytest.raises(nfslock.Lost) as e:
        lock.check()
    assert "disk replaced" in e.value.strerror
    with pytest.raises(nfslock.Lost):
        lock.release()
    with nfslock.Lock(lock_path, lease=lease) as again:
        assert again.fencing_token > token


def test_unlock_path(lock_path):
    lock = nfslock.Lock(lock_path).acquire()
    nfslock.unlock_path(lock_path)
    with pytest.raises(nfslock.Lost):
        lock.release()
    with pytest.raises(nfslock.Error) as e:
        nfslock.unlock_path(lock_path)
    assert e.value.errno == errno.ENOENT


def test_holder_of_another_process(peers, lock_path):
    assert nfslock.holder(lock_path) is None
    p = peers("hold", lock_path, "--message", "rebuilding índex", "--lease", "0.5")
    assert p.line().startswith("held")
    h = nfslock.holder(lock_path)
    assert isinstance(h, tuple) and h._fields[:3] == ("host", "pid", "message")
    assert h.pid == p.pid and h.host == os.uname().nodename and h.message == "rebuilding índex"
    assert h.state == nfslock.State.HELD and h.lease == 0.5 and h.shared_holders == 0
    assert h.fencing_token >= 1
    # Watching a kept-alive lease: renewed meanwhile, so HELD.
    assert nfslock.holder(lock_path + ".nfs_lock", watch=0.7).state == nfslock.State.HELD


def test_fencing_tokens_increase_across_processes(peers, lock_path):
    tokens = []
    for _ in range(3):
        with nfslock.Lock(lock_path, lease=1.0) as lock:
            tokens.append(lock.fencing_token)
            assert lock.fencing_token == tokens[-1]  # same number for the same hold
        p = peers("hold", lock_path, "--lease", "1")
        words = p.line().split()
        tokens.append(int(words[2]))
        p.send("release")
        assert p.line() == "released"
    assert tokens == sorted(set(tokens)), tokens


def test_lease_kept_alive_then_broken_when_its_holder_stops(peers, lock_path):
    lease = 0.4
    p = peers("hold", lock_path, "--lease", str(lease))
    old_token = int(p.line().split()[2])
    # Kept alive by its library thread well past one lease.
    time.sleep(3 * lease)
    with pytest.raises(nfslock.Busy):
        nfslock.Lock(lock_path, timeout=0, lease=lease).acquire()
    # Stopped (a paused VM): renewals stop, a waiter breaks it after a whole lease.
    os.kill(p.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with nfslock.Lock(lock_path, timeout=10, lease=lease) as lock:
            assert time.monotonic() - t0 >= lease
            assert lock.fencing_token > old_token
    finally:
        os.kill(p.pid, signal.SIGCONT)
    p.send("release")
    words = p.line().split(maxsplit=3)
    assert words[:3] == ["error", str(errno.ENOLCK), "Lost"], words


def test_manual_renewal(lock_path):
    lock = nfslock.Lock(lock_path, lease=0.3, keepalive=False).acquire()
    for _ in range(6):
        time.sleep(0.1)
        lock.renew()
        lock.check()
    # Renewals overdue past half the lease: not safely held (Timeout says why).
    time.sleep(0.2)
    assert not lock.is_held()
    with pytest.raises(nfslock.Timeout):
        lock.check()
    lock.renew()
    assert lock.is_held()
    lock.release()
    with pytest.raises(nfslock.Error) as e:
        nfslock.Lock(lock_path).acquire().renew()  # a plain lock has nothing to renew
    assert e.value.errno == errno.EINVAL


def test_shared_locks(peers, lock_path):
    readers = [peers("hold", lock_path, "--shared", "--lease", "1") for _ in range(2)]
    for r in readers:
        assert r.line().startswith("held")
    with nfslock.Lock(lock_path, shared=True, lease=1.0, timeout=0) as mine:
        assert mine.is_held()
        assert nfslock.holder(lock_path).shared_holders == 3
    with pytest.raises(nfslock.Timeout):
        nfslock.Lock(lock_path, lease=1.0, timeout=0.3).acquire()
    for r in readers:
        r.send("release")
        assert r.line() == "released"
    with nfslock.Lock(lock_path, lease=1.0, timeout=5):
        # A reader in another thread (this one would get EDEADLK: it holds the path).
        errors = []

        def reader():
            try:
                nfslock.Lock(lock_path, shared=True, lease=1.0, timeout=0).acquire()
            except nfslock.Error as e:
                errors.append(e)

        t = threading.Thread(target=reader)
        t.start()
        t.join(10)
        assert len(errors) == 1 and isinstance(errors[0], nfslock.Busy), errors


def test_threads(lock_path):
    # Taken in one thread, released in another; a second thread waits for it.
    lock = nfslock.Lock(lock_path)
    t = threading.Thread(target=lock.acquire)
    t.start()
    t.join(10)
    assert lock.is_held()
    got = []

    def waiter():
        with nfslock.Lock(lock_path, timeout=10):
            got.append(time.monotonic())

    w = threading.Thread(target=waiter)
    w.start()
    time.sleep(0.2)
    assert not got  # waiting, the GIL released
    released = time.monotonic()
    lock.release()
    w.join(10)
    assert got and got[0] >= released


def test_forked_child_does_not_release_the_parents_lock(lock_path):
    lock = nfslock.Lock(lock_path, lease=1.0).acquire()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        code = 1
        try:
            held = lock.is_held()
            try:
                lock.release()
                result = "released"
            except nfslock.Error as e:
                result = f"{type(e).__name__} {e.errno}"
            os.write(w, f"{held} {result} {lock.is_held()}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == f"False Error {errno.EPERM} False"
    assert lock.is_held()
    assert nfslock.holder(lock_path).pid == os.getpid()
    lock.release()


def test_garbage_collected_lock_is_released_with_a_warning(lock_path):
    lock = nfslock.Lock(lock_path).acquire()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del lock
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    assert nfslock.holder(lock_path) is None


def test_ctrl_c_interrupts_a_wait_in_the_main_thread(peers, lock_path):
    p = peers("hold", lock_path)
    assert p.line().startswith("held")
    # Python leaves SIGINT ignored when it starts so (a background job of a shell, as
    # in some CI runners): Ctrl-C's handler is set here as an interactive Python has it.
    code = f"""
import signal, sys, nfslock
signal.signal(signal.SIGINT, signal.default_int_handler)
print("waiting", flush=True)
try:
    nfslock.Lock({lock_path!r}, timeout=None).acquire()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(0)
print("acquired", flush=True)
"""
    waiter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert waiter.stdout.readline() == "waiting\n"
        time.sleep(0.5)
        sent = time.monotonic()
        waiter.send_signal(signal.SIGINT)
        out, _ = waiter.communicate(timeout=10)
        assert out == "interrupted\n"
        assert time.monotonic() - sent < 2  # within a slice, not when the lock frees
    finally:
        waiter.kill()
        waiter.wait()
    assert nfslock.holder(lock_path).pid == p.pid
