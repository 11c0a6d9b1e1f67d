"""acquire_async: waiting for a lock without blocking the event loop.

The wait runs in a thread started for it (not the loop's default executor): the C layer
remembers which thread took a path, and answers EDEADLK to that same thread asking
again, so a pooled thread reused by another task would get EDEADLK where it should
wait. A fresh thread never held anything.

Cancellation: a C wait cannot be interrupted, so the thread waits in slices (see
_wait.py) and stops before the next one once the task is cancelled. If a slice
succeeds after the task was cancelled, the thread releases the lock at once: a cancelled
wait never leaves the lock held. Exactly one side releases a lock taken that way (the
task or the thread), decided under one mutex.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from typing import TYPE_CHECKING, Callable, Optional

from . import _wait
from ._lib import lib

if TYPE_CHECKING:
    from ._lock import Lock


class _Attempt:
    """What the waiting thread and the awaiting task share."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.abandoned = False
        self.handle: Optional[int] = None
        self.error: Optional[BaseException] = None

    def is_abandoned(self) -> bool:
        with self.mutex:
            return self.abandoned

    def abandon(self) -> None:
        """The task is gone: release what the thread took, or make it release it."""
        with self.mutex:
            self.abandoned = True
            handle, self.handle = self.handle, None
        if handle is not None:
            lib.nfslock_unlock(handle)


def _wait_thread(lock: "Lock", wait_ms: int, attempt: _Attempt, done: Callable[[], None]) -> None:
    """The waiting thread's body."""
    out = ctypes.c_void_p()
    try:
        attempt.error = _wait.wait(lock, wait_ms, out, attempt.is_abandoned)
    except BaseException as e:  # handed to the task, which raises it
        attempt.error = e
    finally:
        if out.value is not None:
            with attempt.mutex:
                keep = not attempt.abandoned
                if keep:
                    attempt.handle = out.value
            if not keep:
                lib.nfslock_unlock(out.value)  # the task is gone: nobody else will
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
            attempt.abandon()

    # A daemon thread, so that a loop dropped without cancelling its tasks cannot keep
    # the interpreter from exiting (the library releases locks still held at exit).
    name = f"nfslock-wait {lock.path}"
    threading.Thread(target=_wait_thread, args=(lock, wait_ms, attempt, done), name=name, daemon=True).start()
    try:
        await finished
    except BaseException:
        # Cancelled (also after the thread succeeded but before this task resumed):
        # whichever of the two sees the other first releases the lock.
        attempt.abandon()
        raise
    with attempt.mutex:
        handle, attempt.handle = attempt.handle, None
    if attempt.error is not None:
        raise attempt.error
    if handle is None:
        raise RuntimeError("nfslock: the waiting thread ended without the lock or an error")
    return handle
