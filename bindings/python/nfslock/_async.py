"""acquire_async: waiting for a lock without blocking the event loop.

The wait runs in a thread started for it (not the loop's default executor): the C layer
remembers which thread took a path, and answers EDEADLK to that same thread asking
again, so a pooled thread reused by another task would get EDEADLK where it should
wait. A fresh thread never held anything.

Cancellation: the C wait cannot be interrupted, so the thread waits in slices and stops
after the current one once the task is cancelled. A slice normally lasts SLICE_MS; while
a lease holds the lock it lasts a whole lease and a bit, and while the lock file is not
a record it lasts past the 5 s after which the C layer gives up with EBADMSG: a lease is
only broken, and an empty record only reported, by a call that watched it that long
itself. If a slice succeeds after the task was cancelled, the thread releases the lock
at once: a cancelled wait never leaves the lock held. Exactly one side releases a lock
taken that way (the task or the thread), decided under one mutex.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno as _errno
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional

from . import _errors, _lib
from ._lib import lib

if TYPE_CHECKING:
    from ._lock import Lock

# How long one C wait lasts at most when nothing special holds the lock (ms): how long
# the thread may outlive a cancelled task.
SLICE_MS = 250
# The C layer reports a lock file without a record (EBADMSG) after 5 s of one wait.
EMPTY_RECORD_MS = 5000
STATE_UNREADABLE = 5


class _Attempt:
    """What the waiting thread and the awaiting task share."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.abandoned = False
        self.handle: Optional[int] = None
        self.error: Optional[BaseException] = None


def _slice_ms(path: bytes) -> int:
    """How long the next C wait should last for what holds ``path`` now."""
    info = _lib.Info()
    if lib.nfslock_inspect(path, 0, ctypes.byref(info)) != 0:
        return SLICE_MS
    if info.state == STATE_UNREADABLE:
        return EMPTY_RECORD_MS + SLICE_MS
    if info.lease_ms:
        # The C layer breaks a lease it watched unrenewed for lease + lease/64 + 1 ms.
        lease: int = info.lease_ms
        return lease + lease // 64 + 1 + SLICE_MS
    return SLICE_MS


def _wait(lock: "Lock", wait_ms: int, attempt: _Attempt, done: Callable[[], None]) -> None:
    """The waiting thread: C waits in slices until the lock is taken, the time is up,
    an error that waiting does not cure, or the task gave up."""
    try:
        deadline = None if wait_ms < 0 else time.monotonic() + wait_ms / 1000
        while True:
            with attempt.mutex:
                if attempt.abandoned:
                    return
            if wait_ms == 0:
                this_ms = 0  # one attempt: EAGAIN when held, as acquire(timeout=0)
            else:
                this_ms = _slice_ms(lock._path)
                if deadline is not None:
                    left = max(1, int((deadline - time.monotonic()) * 1000))
                    this_ms = min(this_ms, left)
            rc, handle = lock._attempt(this_ms)
            if rc == 0:
                with attempt.mutex:
                    if not attempt.abandoned:
                        attempt.handle = handle
                        return
                lib.nfslock_unlock(handle)  # the task is gone: nobody else will
                return
            more_time = deadline is None or time.monotonic() < deadline
            if rc == _errno.ETIMEDOUT and wait_ms != 0 and more_time:
                continue
            # Built here: the last-error text belongs to this thread.
            attempt.error = _errors.from_code(rc, lock.path)
            return
    except BaseException as e:  # noqa: BLE001 - handed to the task, which raises it
        attempt.error = e
    finally:
        done()


async def acquire_async(lock: "Lock", wait_ms: int) -> int:
    """Waits for ``lock`` in a thread of its own; returns the C handle."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    attempt = _Attempt()

    def wake() -> None:
        if not finished.done():
            finished.set_result(None)

    def done() -> None:
        try:
            loop.call_soon_threadsafe(wake)
        except RuntimeError:  # the loop is closed: nobody will take the lock from us
            with attempt.mutex:
                attempt.abandoned = True
                handle, attempt.handle = attempt.handle, None
            if handle is not None:
                lib.nfslock_unlock(handle)

    # A daemon thread, so that a loop dropped without cancelling its tasks cannot keep
    # the interpreter from exiting (the library releases locks held at exit).
    threading.Thread(target=_wait, args=(lock, wait_ms, attempt, done), name=f"nfslock-wait {lock.path}", daemon=True).start()
    try:
        await finished
    except BaseException:
        # Cancelled (also after the thread succeeded but before this task resumed):
        # whichever of the two sees the other first releases the lock.
        with attempt.mutex:
            attempt.abandoned = True
            handle, attempt.handle = attempt.handle, None
        if handle is not None:
            lib.nfslock_unlock(handle)
        raise
    with attempt.mutex:
        handle, attempt.handle = attempt.handle, None
    if attempt.error is not None:
        raise attempt.error
    assert handle is not None
    return handle
