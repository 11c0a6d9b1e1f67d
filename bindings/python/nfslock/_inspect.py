"""Looking at a lock from outside: holder(), and the operator's break_lock() and
unlock_path()."""

from __future__ import annotations

import ctypes
import enum
import errno as _errno
from typing import NamedTuple, Optional

from . import _errors, _lib
from ._lib import lib
from ._lock import PathArg

# The longest message a record can carry is below 64 KiB.
_MESSAGE_BUFFER = 64 * 1024 + 1
# holder() re-reads when the lock changed hands between its reads.
_READ_TRIES = 5


class State(enum.IntEnum):
    """A lock's state, as nfslock_inspect reports it (NFSLOCK_STATE_*)."""

    FREE = 0
    #: Held by a live process, by another host, or under a lease renewed in time.
    HELD = 1
    #: Held by the calling process.
    HELD_BY_CALLER = 2
    #: Held by a process of this host that is gone (the next acquirer clears it).
    DEAD_HOLDER = 3
    #: A lease its holder did not renew for the whole lease, as watched by this call.
    EXPIRED = 4
    #: The lock file is not a record (left alone by everyone).
    UNREADABLE = 5


class Holder(NamedTuple):
    """Who holds a lock: a snapshot (it may change hands right after)."""

    #: The holder's host name ("" for a shared lock or an unreadable record).
    host: str
    #: The holder's pid (0 when unknown: a shared lock, an unreadable record).
    pid: int
    #: The message in its record (None when it cannot be read as one).
    message: Optional[str]
    state: State
    #: The lease in seconds; None for a plain lock.
    lease: Optional[float]
    #: How many shared holders (0: exclusive).
    shared_holders: int
    #: The last fencing token handed out on this path (0 if none ever was).
    fencing_token: int


def _inspect(path: bytes, shown: str, watch_ms: int) -> _lib.Info:
    info = _lib.Info()
    _errors.check(lib.nfslock_inspect(path, watch_ms, ctypes.byref(info)), shown)
    return info


def _message(path: bytes, shown: str) -> Optional[str]:
    """The record's message; None when gone meanwhile or unreadable as a message."""
    buf = ctypes.create_string_buffer(_MESSAGE_BUFFER)
    rc = lib.nfslock_get_message(path, buf, len(buf))
    if rc in (_errno.ENOENT, _errno.EBADMSG):
        return None
    _errors.check(rc, shown)
    return buf.value.decode("utf-8", "replace")


def holder(path: PathArg, watch: float = 0.0) -> Optional[Holder]:
    """Who holds the lock on ``path`` (``path`` or ``path.nfs_lock``), or None when it is
    free. Nothing on disk is changed. ``watch``: seconds to watch a lease, to tell
    HELD (renewed meanwhile) from EXPIRED. Raises :class:`Error` (ENOENT: no such
    directory; ELOOP: a symlink at the lock file; I/O errors).
    """
    raw = _lib.encode_path(path)
    shown = raw.decode("utf-8", "replace")
    if watch < 0 or watch != watch:
        raise ValueError(f"watch is seconds >= 0, not {watch!r}")
    watch_ms = min(int(watch * 1000), (1 << 32) - 1)
    info = _inspect(raw, shown, watch_ms)
    for _ in range(_READ_TRIES):
        if info.state == State.FREE:
            return None
        message = _message(raw, shown) if info.state != State.UNREADABLE else None
        again = _inspect(raw, shown, 0)
        # The same holder before and after the message was read: the message is its.
        if (again.host, again.pid, again.state == State.FREE) == (info.host, info.pid, False):
            break
        info = again
    else:
        # It kept changing hands: report the last holder seen, its message unknown.
        if info.state == State.FREE:
            return None
        message = None
    return Holder(
        host=info.host.decode("utf-8", "replace"),
        pid=info.pid,
        message=message,
        state=State(info.state) if info.state in State._value2member_map_ else State.HELD,
        lease=info.lease_ms / 1000 if info.lease_ms else None,
        shared_holders=info.shared_holders,
        fencing_token=info.fencing_token,
    )


def break_lock(path: PathArg, reason: str) -> None:
    """Operator's tool: removes the lock on ``path`` whoever holds it (never one taken
    after the one it saw). A lease's holder then gets :class:`Lost` quoting ``reason``;
    a plain lock's holder gets :class:`Lost` when it releases. Raises :class:`Error`
    ENOENT (not locked), :class:`Busy` (it changed hands meanwhile: look again)."""
    raw = _lib.encode_path(path)
    _errors.check(lib.nfslock_break(raw, _lib.encode_text("reason", reason)), raw.decode("utf-8", "replace"))


def unlock_path(path: PathArg) -> None:
    """Removes the lock on ``path`` if this process holds it (its Lock then gets
    :class:`Lost` at release) or its holder is a dead process of this host (Core's
    ``unlock_exn``). Raises :class:`Error` EPERM (a live holder or another host),
    ENOENT (not locked), :class:`Busy` (another process is clearing it)."""
    raw = _lib.encode_path(path)
    _errors.check(lib.nfslock_unlock_path(raw), raw.decode("utf-8", "replace"))
