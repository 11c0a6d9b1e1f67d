"""acquire_async: the event loop keeps running while waiting; cancellation never leaves
the lock held."""

import asyncio
import errno
import os
import signal
import threading
import time

import pytest

import nfslock


def wait_threads_gone(timeout=10.0):
    """Waits until no acquire_async thread is left (each ends after its current slice)."""
    deadline = time.monotonic() + timeout
    while any(t.name.startswith("nfslock-wait") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "an acquire_async thread outlived its wait"
        time.sleep(0.01)


def test_the_loop_keeps_running_while_waiting(peers, lock_path):
    p = peers("hold", lock_path)
    assert p.line().startswith("held")

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, p.send, "release")
        t0 = time.monotonic()
        async with nfslock.Lock(lock_path, timeout=10) as lock:
            waited = time.monotonic() - t0
            assert lock.is_held()
            assert nfslock.holder(lock_path).pid == os.getpid()
        t.cancel()
        return waited, ticks

    waited, ticks = asyncio.run(main())
    assert waited >= 0.9
    # About 100 ticks of 10 ms in 1 s; a blocked loop would have none.
    assert ticks >= 40, ticks
    assert p.line() == "released"
    assert nfslock.holder(lock_path) is None


def test_async_timeout_and_busy(peers, lock_path):
    p = peers("hold", lock_path, "--message", "async peer")
    assert p.line().startswith("held")

    async def main():
        lock = nfslock.Lock(lock_path)
        t0 = time.monotonic()
        with pytest.raises(nfslock.Timeout) as e:
            await lock.acquire_async(timeout=0.6)
        took = time.monotonic() - t0
        # The text is the C layer's, read in the waiting thread.
        assert e.value.errno == errno.ETIMEDOUT and f"pid {p.pid}" in e.value.strerror
        # Waited in slices, reported as one wait of the whole timeout.
        assert "gave up after 600 ms" in e.value.strerror, e.value.strerror
        with pytest.raises(nfslock.Busy) as e:
            await lock.acquire_async(timeout=0)
        assert "async peer" in e.value.strerror
        assert not lock.is_held()
        return took

    took = asyncio.run(main())
    assert 0.6 <= took < 3


def test_two_tasks_of_one_loop_take_turns(lock_path):
    # Both in this process and this thread: the second waits (no EDEADLK), as the wait
    # runs in a thread of its own.
    order = []

    async def user(name, hold):
        async with nfslock.Lock(lock_path, timeout=10):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    async def main():
        a = asyncio.create_task(user("a", 0.3))
        await asyncio.sleep(0.05)
        b = asyncio.create_task(user("b", 0))
        await asyncio.gather(a, b)

    asyncio.run(main())
    assert order == ["a in", "a out", "b in", "b out"]


def test_cancelled_wait_leaves_the_lock_free(peers, lock_path):
    p = peers("hold", lock_path)
    assert p.line().startswith("held")

    async def main():
        lock = nfslock.Lock(lock_path, timeout=None)
        task = asyncio.create_task(lock.acquire_async())
        await asyncio.sleep(0.3)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not lock.is_held()
        # The holder releases now: the cancelled wait's thread must not keep it.
        p.send("release")
        assert p.line() == "released"
        return lock

    lock = asyncio.run(main())
    wait_threads_gone()
    assert nfslock.holder(lock_path) is None
    # And the Lock object is usable again.
    with lock:
        pass


@pytest.mark.parametrize("delay_us", [0, 50, 200, 1000])
def test_cancellation_racing_success_never_leaks(lock_path, delay_us):
    # The lock is free, so the waiting thread often succeeds just before or just after
    # the cancel: whichever way, the lock must end up released exactly once.
    async def main():
        for _ in range(25):
            lock = nfslock.Lock(lock_path, timeout=5)
            task = asyncio.create_task(lock.acquire_async())
            await asyncio.sleep(0)
            time.sleep(delay_us / 1e6)  # let the thread run while the loop is busy
            task.cancel()
            try:
                await task
                lock.release()  # it won before the cancel was seen
            except asyncio.CancelledError:
                assert not lock.is_held()
            wait_threads_gone()
            assert nfslock.holder(lock_path) is None

    asyncio.run(main())


def test_async_wait_breaks_an_abandoned_lease(peers, lock_path):
    # A lease is broken only by a wait that watched it unrenewed for a whole lease: the
    # async wait's slices must last that long, or a stopped holder would block forever.
    lease = 1.0
    p = peers("hold", lock_path, "--lease", str(lease))
    old = int(p.line().split()[2])
    os.kill(p.pid, signal.SIGSTOP)

    async def main():
        async with nfslock.Lock(lock_path, timeout=10, lease=lease) as lock:
            return lock.fencing_token

    try:
        t0 = time.monotonic()
        token = asyncio.run(main())
        assert time.monotonic() - t0 >= lease
        assert token > old
    finally:
        os.kill(p.pid, signal.SIGCONT)
