"""Waiting for a lock in slices: several C waits in a row instead of one long one, so
that the caller gets control back between them (the main thread for Ctrl-C, an
acquire_async thread to notice its task was cancelled).

A slice normally lasts SLICE_MS. While a lease holds the lock it lasts a whole lease
and a bit, and while the lock file is not a record it lasts past the 5 s after which the
C layer reports EBADMSG: a lease is only broken, and an empty record only reported, by a
C call that watched it that long itself.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import time
from typing import TYPE_CHECKING, Callable, Optional

from . import _errors, _lib
from ._lib import lib

if TYPE_CHECKING:
    from ._lock import Lock

#: The longest slice (ms) while nothing special holds the lock.
SLICE_MS = 250
# The C layer reports a lock file without a record (EBADMSG) after 5 s of one wait.
_EMPTY_RECORD_MS = 5000
_STATE_UNREADABLE = 5


def _slice_ms(path: bytes) -> int:
    """How long the next C wait should last for what holds ``path`` now."""
    info = _lib.Info()
    if lib.nfslock_inspect(path, 0, ctypes.byref(info)) != 0:
        return SLICE_MS
    if info.state == _STATE_UNREADABLE:
        return _EMPTY_RECORD_MS + SLICE_MS
    lease: int = info.lease_ms
    if lease:
        # The C layer breaks a lease it watched unrenewed for lease + lease/64 + 1 ms.
        return lease + lease // 64 + 1 + SLICE_MS
    return SLICE_MS


def wait(lock: "Lock", wait_ms: int, out: ctypes.c_void_p, give_up: Callable[[], bool] = lambda: False) -> Optional[_errors.Error]:
    """Waits for ``lock`` up to ``wait_ms`` (< 0 forever) in slices, the handle into
    ``out``. Returns None when taken, or the error (built in this thread, right after
    the failing call) — also None with ``out`` unset when ``give_up()`` said so before a
    slice."""
    deadline = None if wait_ms < 0 else time.monotonic() + wait_ms / 1000
    first = True
    while True:
        if give_up():
            return None
        # First one attempt without waiting: a free lock costs no look at its holder.
        this_ms = 0 if first or wait_ms == 0 else _slice_ms(lock._path)
        if deadline is not None and wait_ms != 0:
            this_ms = min(this_ms, max(1, int((deadline - time.monotonic()) * 1000)))
        rc = lock._attempt(this_ms, out)
        if rc == 0:
            return None
        if first and rc == _errno.EAGAIN and wait_ms != 0:
            first = False
            continue
        first = False
        if rc == _errno.ETIMEDOUT and wait_ms != 0 and (deadline is None or time.monotonic() < deadline):
            continue
        err = _errors.from_code(rc, lock.path)
        if rc == _errno.ETIMEDOUT and wait_ms > 0:
            # The C text gives the last slice's length; the caller waited for all of them.
            sliced = f"gave up after {this_ms} ms"
            if err.strerror and sliced in err.strerror:
                err.strerror = err.strerror.replace(sliced, f"gave up after {wait_ms} ms", 1)
        return err
