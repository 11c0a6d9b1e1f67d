"""Lock: one hold of a lock file, plain or leased, exclusive or shared."""

from __future__ import annotations

import ctypes
import errno as _errno
import math
import os
import threading
import warnings
from types import TracebackType
from typing import Optional, Type, Union

from . import _errors, _lib, _wait
from ._lib import lib

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

# The default of acquire()'s timeout: the one given to Lock().
_FROM_LOCK = object()


def timeout_ms(timeout: Optional[float]) -> int:
    """Seconds (None: forever) as the C layer's milliseconds (< 0: forever)."""
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout is None (wait forever) or seconds >= 0, not {timeout!r}")
    if math.isinf(timeout):
        return -1
    ms = int(math.ceil(timeout * 1000))
    return min(ms, (1 << 63) - 1)


def lease_ms(lease: Optional[float]) -> int:
    """Seconds (None: no lease) as milliseconds for nfslock_options_set_lease_ms."""
    if lease is None:
        return 0
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not math.isfinite(lease) or lease <= 0:
        raise ValueError(f"lease is None (a plain lock) or seconds > 0, not {lease!r}")
    # The C layer checks the bounds (0.1 s to a day) and says so; only keep it a uint32.
    return min(int(round(lease * 1000)), (1 << 32) - 1)


class Lock:
    """A lock on ``path`` (the lock file is ``path + ".nfs_lock"``; ``path`` itself is
    never written), safe across processes and NFS clients.

    ``timeout``: seconds acquire() waits (None: forever; 0: one attempt, raising
    :class:`Busy`). ``message``: text written into the lock file's record, shown to
    whoever finds it held. ``lease``: seconds; a lease is renewed by a library thread
    (``keepalive=True``) or by :meth:`renew`, and broken by a waiter once it has watched
    it unrenewed for the whole lease, so a crashed host's lock is recovered; a plain lock
    (``lease=None``) is never broken across hosts. ``shared``: a shared (reader) lock,
    which needs a lease.

    One Lock object is one hold: acquire() while held raises RuntimeError. It owns the C
    handle it acquired; release() frees it exactly once.
    """

    def __init__(
        self,
        path: PathArg,
        timeout: Optional[float] = 5.0,
        message: Optional[str] = None,
        lease: Optional[float] = None,
        shared: bool = False,
        keepalive: bool = True,
    ) -> None:
        self._path = _lib.encode_path(path)
        #: The path as given, as text (for messages and exceptions).
        self.path: str = os.fsdecode(self._path)
        timeout_ms(timeout)
        self.timeout = timeout
        self._message = _lib.encode_text("message", message)
        self.message = message
        self._lease_ms = lease_ms(lease)
        self.lease = lease
        self.shared = bool(shared)
        self.keepalive = bool(keepalive)
        # Guards _handle and _busy. Held around every C call that uses the handle, so a
        # release never overlaps another thread's is_held() or fencing_token (which the C
        # layer would answer with EBUSY); never held while waiting for the lock.
        self._mutex = threading.Lock()
        self._handle: Optional[int] = None
        # An acquire() or acquire_async() is in progress.
        self._busy = False

    def __repr__(self) -> str:
        state = "held" if self._handle is not None else "not held"
        kind = "shared" if self.shared else "exclusive"
        lease = f", lease={self.lease}" if self.lease else ""
        return f"<nfslock.Lock {self.path!r} {kind}{lease} {state}>"

    # --- acquiring ------------------------------------------------------------------

    def _begin(self) -> None:
        with self._mutex:
            if self._handle is not None or self._busy:
                raise RuntimeError(f"{self!r}: already held or being acquired (one Lock object is one hold)")
            self._busy = True

    def _end(self, handle: Optional[int]) -> None:
        with self._mutex:
            self._busy = False
            self._handle = handle

    def _attempt(self, wait_ms: int, out: ctypes.c_void_p) -> int:
        """One C acquisition waiting up to ``wait_ms``, the handle into ``out`` (written
        only on success). The caller reads the last error in the same thread."""
        if not self._lease_ms and not self.shared:
            # A plain exclusive lock: one call, no options object.
            rc: int = lib.nfslock_blocking_create(self._path, self._message, wait_ms, ctypes.byref(out))
            return rc
        options = ctypes.c_void_p()
        rc = lib.nfslock_options_new(ctypes.byref(options))
        if rc:
            return rc
        try:
            rc = (
                lib.nfslock_options_set_message(options, self._message)
                or lib.nfslock_options_set_lease_ms(options, self._lease_ms)
                or lib.nfslock_options_set_keepalive(options, int(self.keepalive))
                or lib.nfslock_options_set_shared(options, int(self.shared))
                or lib.nfslock_acquire(self._path, options, wait_ms, ctypes.byref(out))
            )
            return rc
        finally:
            # Cannot fail: leaves the thread's last error alone.
            lib.nfslock_options_free(options)

    def acquire(self, timeout: "Optional[float] | object" = _FROM_LOCK) -> "Lock":
        """Takes the lock, waiting up to ``timeout`` seconds (default: the Lock's).

        Raises :class:`Busy` (timeout 0, held), :class:`Timeout` (still held when the
        timeout passed; the text names the holder), :class:`BadRecord`, or
        :class:`Error` with the errno (EDEADLK: this thread holds ``path`` already
        through another Lock object; ENOENT: no such directory; EINVAL: a bad argument
        such as a shared lock without a lease, ...). Returns the Lock.

        In the main thread a long wait is made of short C waits, so that Ctrl-C
        (KeyboardInterrupt) and other signal handlers run while waiting; elsewhere it is
        one C wait.
        """
        wait_ms = timeout_ms(self.timeout if timeout is _FROM_LOCK else timeout)  # type: ignore[arg-type]
        self._begin()
        out = ctypes.c_void_p()
        try:
            if threading.current_thread() is threading.main_thread() and not 0 <= wait_ms <= _wait.SLICE_MS:
                err = _wait.wait(self, wait_ms, out)
            else:
                rc = self._attempt(wait_ms, out)
                err = _errors.from_code(rc, self.path) if rc else None
        except BaseException:
            # Interrupted (KeyboardInterrupt from a signal handler) after the lock was
            # taken: nobody would release it.
            if out.value is not None:
                lib.nfslock_unlock(out.value)
            self._end(None)
            raise
        self._end(out.value if err is None else None)
        if err is not None:
            raise err
        return self

    async def acquire_async(self, timeout: "Optional[float] | object" = _FROM_LOCK) -> "Lock":
        """Like :meth:`acquire`, without blocking the event loop: the waiting is done by a
        thread of its own. Cancelling the awaiting task never leaves the lock held (see
        the package README for how, and how soon the thread ends)."""
        from ._async import acquire_async

        wait_ms = timeout_ms(self.timeout if timeout is _FROM_LOCK else timeout)  # type: ignore[arg-type]
        self._begin()
        handle = None
        try:
            handle = await acquire_async(self, wait_ms)
        finally:
            self._end(handle)
        return self

    # --- while held -----------------------------------------------------------------

    def _held_handle(self) -> int:
        if self._handle is None:
            raise RuntimeError(f"{self!r}: not held")
        return self._handle

    def is_held(self) -> bool:
        """Whether this Lock still safely holds the lock: False when not acquired, lost
        (broken or removed by someone else), a lease whose renewals are overdue, or in a
        forked child (the parent's hold is not the child's). :meth:`check` says why."""
        with self._mutex:
            if self._handle is None:
                return False
            rc: int = lib.nfslock_is_held(self._handle)
            if rc in (0, _errno.ENOLCK, _errno.ETIMEDOUT, _errno.EPERM):
                return rc == 0
            raise _errors.from_code(rc, self.path)

    def check(self) -> None:
        """Returns if the lock is safely held, else raises: :class:`Lost` (lost for good),
        :class:`Timeout` (a lease's renewals are overdue: stop writing, renew, check
        again), :class:`Error` EPERM (a handle inherited through fork), RuntimeError (not
        held)."""
        with self._mutex:
            _errors.check(lib.nfslock_is_held(self._held_handle()), self.path)

    def renew(self) -> None:
        """Renews a lease now (needed only with ``keepalive=False``: more often than every
        half lease). Raises :class:`Lost` if it was broken."""
        with self._mutex:
            _errors.check(lib.nfslock_renew(self._held_handle()), self.path)

    @property
    def fencing_token(self) -> int:
        """This hold's fencing token: greater than that of every earlier acquisition of
        ``path`` (across hosts, breaks and crashes). The first read of a hold writes and
        syncs a counter file; later reads return the same number. Pass it with every
        write to storage that refuses tokens smaller than the largest it has seen.
        Raises :class:`Lost` if the lock was lost before the token was proven."""
        with self._mutex:
            token = ctypes.c_uint64()
            _errors.check(lib.nfslock_fencing_token(self._held_handle(), ctypes.byref(token)), self.path)
            return token.value

    # --- releasing ------------------------------------------------------------------

    def release(self) -> None:
        """Releases the lock and frees the handle (always, whatever is raised).

        Raises :class:`Lost` when the lock file was no longer ours (broken, or removed by
        someone else: nothing was removed, and whatever the lock protected may have been
        touched by another holder meanwhile); :class:`Error` with errno EPERM in a forked
        child, whose inherited copy of the Lock does not hold the parent's lock (the
        parent's lock is left alone); RuntimeError when not held.
        """
        with self._mutex:
            handle = self._held_handle()
            self._handle = None
            _errors.check(lib.nfslock_unlock(handle), self.path)

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.release()

    async def __aenter__(self) -> "Lock":
        return await self.acquire_async()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        # Releasing is one or two quick system calls: done in the loop's thread.
        self.release()

    def __del__(self) -> None:
        # A Lock dropped while held releases its lock, like a file object closes, with a
        # ResourceWarning. In a forked child the C layer answers EPERM and touches
        # nothing of the parent's.
        handle = getattr(self, "_handle", None)
        if handle is None:
            return
        self._handle = None
        try:
            rc = lib.nfslock_unlock(handle)
            if rc == 0:
                warnings.warn(f"nfslock.Lock {self.path!r} was garbage-collected while held: released", ResourceWarning, stacklevel=2)
        except Exception:  # interpreter shutdown: modules may be gone
            pass
