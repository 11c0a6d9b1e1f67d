"""NFS-safe lock files, leases and ID sessions: Python bindings of libnfslock.

    import nfslock

    with nfslock.Lock("/shared/jobs/queue", timeout=30, message="nightly import"):
        ...  # exclusive across processes and NFS clients

    async with nfslock.Lock(path):       # waits without blocking the event loop
        ...

    nfslock.holder(path)                  # Holder(host, pid, message, ...) or None

    with nfslock.Session("/shared/repo", "jobs") as s:
        job_id = s.new_id()               # unique, increasing, locked by s

Errors are :class:`Error` (an OSError) carrying the errno and the library's text;
:class:`Busy`, :class:`Timeout`, :class:`Lost` and :class:`BadRecord` are its
subclasses for EAGAIN, ETIMEDOUT, ENOLCK and EBADMSG.
"""

from ._errors import BadRecord, Busy, Error, Lost, Timeout
from ._inspect import Holder, State, break_lock, holder, unlock_path
from ._lib import library_origin, library_path, library_version
from ._lock import Lock
from ._session import Session
from ._version import __version__

__all__ = [
    "BadRecord",
    "Busy",
    "Error",
    "Holder",
    "Lock",
    "Lost",
    "Session",
    "State",
    "Timeout",
    "__version__",
    "break_lock",
    "holder",
    "library_origin",
    "library_path",
    "library_version",
    "unlock_path",
]

# Shown as nfslock.X (in tracebacks, reprs and docs), not nfslock._module.X.
for _public in (BadRecord, Busy, Error, Holder, Lock, Lost, Session, State, Timeout):
    _public.__module__ = __name__
del _public
