"""Exceptions: libnfslock's errno codes as OSError subclasses.

Every exception raised for a failed C call carries the errno value (``.errno``) and the
text of ``nfslock_last_error()`` (``.strerror``, also ``.last_error``), which names the
operation, the path and the cause. That text is per thread in the C library, so it is
read in the thread that made the call, right after it.
"""

from __future__ import annotations

import errno as _errno
from typing import Dict, Optional, Type

from . import _lib


class Error(OSError):
    """A libnfslock call failed. ``errno`` is the code, ``strerror`` the library's text."""

    def __init__(self, code: int, text: str, path: Optional[str] = None) -> None:
        super().__init__(code, text)
        #: The lock path or repository the call was about, if any.
        self.path = path

    @property
    def last_error(self) -> str:
        """The text of nfslock_last_error() for the failed call."""
        return self.strerror or ""


class Busy(Error, BlockingIOError):
    """EAGAIN: the lock is held (only from a single attempt, ``timeout=0``)."""


class Timeout(Error, TimeoutError):
    """ETIMEDOUT: the lock stayed held for the whole timeout (the text says by whom);
    for a lease, also that this process's renewals are overdue (``Lock.check()``)."""


class Lost(Error):
    """ENOLCK: the lock was taken away (broken, or removed by someone else)."""


class BadRecord(Error):
    """EBADMSG: the lock file (or a session record) is not a readable record; it is
    never treated as free and never removed."""


_BY_ERRNO: Dict[int, Type[Error]] = {
    _errno.EAGAIN: Busy,
    _errno.ETIMEDOUT: Timeout,
    _errno.ENOLCK: Lost,
    _errno.EBADMSG: BadRecord,
}


def from_code(code: int, path: Optional[str] = None) -> Error:
    """The exception for ``code``, with this thread's last-error text. Call it in the
    thread that made the failing call, before any other libnfslock call."""
    text = _lib.last_error() or _lib.strerror(code)
    return _BY_ERRNO.get(code, Error)(code, text, path)


def check(code: int, path: Optional[str] = None) -> None:
    """Raises the exception for a non-zero result of a C call."""
    if code != 0:
        raise from_code(code, path)
