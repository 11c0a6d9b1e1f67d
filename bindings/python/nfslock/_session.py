"""Session: unique increasing IDs and per-ID locks over one shared repository directory
(nfslock_session_*)."""

from __future__ import annotations

import ctypes
import errno as _errno
import threading
from types import TracebackType
from typing import Callable, Iterable, List, Optional, Type

from . import _errors, _lib
from ._lib import lib
from ._lock import PathArg

# The most IDs one C call takes (NFSLOCK's per-call limit, 2**24); larger lists are
# split into several calls.
_IDS_PER_CALL = 1 << 24
# "HOST (pid N) since YYYY-MM-DD HH:MM:SS.ffffffZ" with a host name of up to 255 bytes.
_INFO_BUFFER = 512


class Session:
    """An open session on the repository directory ``directory`` (created with its
    parents if missing) for the ID namespace ``name`` (None: "default").

    ``timeout``: seconds the session may go without a heartbeat before others treat it
    as dead (None: 45 s; at least 0.1). A library thread heartbeats until :meth:`close`.
    Use it as a context manager, or call close(). The C session is thread-safe; so is
    this object (close() while another thread is inside a call makes that call fail
    with EINVAL, never touch freed memory).
    """

    def __init__(self, directory: PathArg, name: Optional[str] = None, timeout: Optional[float] = None) -> None:
        self._dir = _lib.encode_path(directory)
        #: The repository directory, as text.
        self.directory: str = self._dir.decode("utf-8", "replace")
        self.name = name
        if timeout is None:
            ms = 0
        elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout < (1 << 32) / 1000:
            ms = max(1, int(round(timeout * 1000)))
        else:
            raise ValueError(f"timeout is None (45 s) or seconds > 0, not {timeout!r}")
        out = ctypes.c_void_p()
        rc = lib.nfslock_session_open(self._dir, _lib.encode_text("name", name), ms, ctypes.byref(out))
        _errors.check(rc, self.directory)
        self._mutex = threading.Lock()
        self._handle: Optional[int] = out.value

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else "open"
        return f"<nfslock.Session {self.directory!r} name={self.name!r} {state}>"

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._handle is None

    def _h(self) -> int:
        handle = self._handle
        if handle is None:
            raise RuntimeError(f"{self!r}: closed")
        return handle

    def make_new_ids(self, n: int = 1) -> List[int]:
        """``n`` consecutive new IDs, each greater than every ID ever issued in this
        repository and namespace, all locked by this session; on stable storage before
        this returns (a crash can leave gaps, never duplicates)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _IDS_PER_CALL:
            raise ValueError(f"n is 1 to {_IDS_PER_CALL}, not {n!r}")
        ids = (ctypes.c_uint64 * n)()
        _errors.check(lib.nfslock_session_make_new_ids(self._h(), n, ids), self.directory)
        return list(ids)

    def new_id(self) -> int:
        """One new ID (make_new_ids(1)[0])."""
        return self.make_new_ids(1)[0]

    def _many(self, fn: Callable[..., int], ids: Iterable[int]) -> List[int]:
        values = list(ids)
        result: List[int] = []
        for start in range(0, len(values), _IDS_PER_CALL) if values else [0]:
            chunk = _lib.c_ids(values[start : start + _IDS_PER_CALL])
            out = (ctypes.c_uint64 * max(1, len(chunk)))()
            count = ctypes.c_size_t()
            _errors.check(fn(self._h(), chunk, len(chunk), out, ctypes.byref(count)), self.directory)
            result.extend(out[: count.value])
        return result

    def lock_ids(self, ids: Iterable[int]) -> List[int]:
        """Locks those of ``ids`` no other live session holds (dead sessions' locks are
        reclaimed); returns the IDs this session now holds of them, in order, without
        duplicates. IDs held by live sessions are skipped, not an error."""
        return self._many(lib.nfslock_session_lock_ids, ids)

    def release_ids(self, ids: Iterable[int]) -> List[int]:
        """Releases those of ``ids`` this session holds; returns them."""
        return self._many(lib.nfslock_session_release_ids, ids)

    def holder_of(self, id: int) -> Optional[str]:
        """ "HOST (pid N) since YYYY-MM-DD HH:MM:SS.ffffffZ" for the live session holding
        ``id``, or None when none does."""
        buf = ctypes.create_string_buffer(_INFO_BUFFER)
        _lib.c_ids([id])
        rc = lib.nfslock_session_get_lock_session(self._h(), id, buf, len(buf))
        if rc == _errno.ENOENT:
            return None
        _errors.check(rc, self.directory)
        return buf.value.decode("utf-8", "replace")

    def reap_locks(self) -> int:
        """Removes the records and ID locks of dead sessions; returns how many."""
        n = ctypes.c_size_t()
        _errors.check(lib.nfslock_session_reap_locks(self._h(), ctypes.byref(n)), self.directory)
        return n.value

    def check(self) -> None:
        """Verifies the repository; raises :class:`BadRecord` with the findings."""
        _errors.check(lib.nfslock_session_check(self._h()), self.directory)

    def repair_counter(self, next_id: int) -> None:
        """Operator's tool after the counter was lost or damaged: sets the next ID to at
        least ``next_id``, never below a locked ID or one this session saw issued."""
        _lib.c_ids([next_id])
        _errors.check(lib.nfslock_session_repair_counter(self._h(), next_id), self.directory)

    def close(self) -> None:
        """Releases every ID of this session, stops its heartbeat, removes its records
        and frees the handle (always). A second close() does nothing. Raises
        :class:`Error` EPERM in a forked child on its parent's session (nothing on disk
        is touched), ESTALE when the session had expired (nothing removed)."""
        with self._mutex:
            handle, self._handle = self._handle, None
        if handle is not None:
            _errors.check(lib.nfslock_session_close(handle), self.directory)

    def __enter__(self) -> "Session":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            self._handle = None
            try:
                lib.nfslock_session_close(handle)
            except Exception:  # interpreter shutdown
                pass
