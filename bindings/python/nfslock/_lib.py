"""Finding libnfslock and declaring the C functions this package calls (ctypes).

Where the library comes from, first match wins:

1. ``NFSLOCK_LIBRARY``: the path of a libnfslock.so to use. When it is set, it is the
   only candidate: a value that does not load is an error, never silently replaced.
2. The copy bundled in this package (``nfslock/libnfslock.so.*``, put there by
   ``build-wheel``).
3. The installed system library, through the dynamic loader's own search
   (``ctypes.util.find_library("nfslock")``, then the SONAME, ``libnfslock.so.0.1`` for 0.1).

The loaded library must have this package's major version and at least its minor
version (the functions declared below exist from that version on).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import POINTER, c_char, c_char_p, c_int, c_int32, c_int64, c_size_t, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import Iterable, List, Tuple

from ._version import __version__

ENV_VAR = "NFSLOCK_LIBRARY"
_HERE = Path(__file__).resolve().parent


class Info(ctypes.Structure):
    """struct nfslock_info (include/nfslock.h)."""

    _fields_ = [
        ("state", c_int32),
        ("pid", c_int32),
        ("lease_ms", c_uint32),
        ("shared_holders", c_uint32),
        ("fencing_token", c_uint64),
        ("host", c_char * 256),
    ]


# Handles (nfslock *, nfslock_options *, nfslock_session *) are opaque: kept as c_void_p.
_P = c_void_p
_PP = POINTER(c_void_p)

# name: (restype, argtypes). Every int result is 0 or a positive errno value.
_PROTOTYPES = {
    "nfslock_strerror": (c_char_p, [c_int]),
    "nfslock_last_error": (c_char_p, []),
    "nfslock_version": (c_char_p, []),
    "nfslock_options_new": (c_int, [_PP]),
    "nfslock_options_free": (None, [_P]),
    "nfslock_options_set_message": (c_int, [_P, c_char_p]),
    "nfslock_options_set_lease_ms": (c_int, [_P, c_uint32]),
    "nfslock_options_set_keepalive": (c_int, [_P, c_int]),
    "nfslock_options_set_shared": (c_int, [_P, c_int]),
    "nfslock_acquire": (c_int, [c_char_p, _P, c_int64, _PP]),
    "nfslock_renew": (c_int, [_P]),
    "nfslock_is_held": (c_int, [_P]),
    "nfslock_fencing_token": (c_int, [_P, POINTER(c_uint64)]),
    "nfslock_break": (c_int, [c_char_p, c_char_p]),
    "nfslock_inspect": (c_int, [c_char_p, c_uint32, POINTER(Info)]),
    "nfslock_blocking_create": (c_int, [c_char_p, c_char_p, c_int64, _PP]),
    "nfslock_unlock": (c_int, [_P]),
    "nfslock_unlock_path": (c_int, [c_char_p]),
    "nfslock_get_hostname_and_pid": (c_int, [c_char_p, c_char_p, c_size_t, POINTER(c_int32)]),
    "nfslock_get_message": (c_int, [c_char_p, c_char_p, c_size_t]),
    "nfslock_session_open": (c_int, [c_char_p, c_char_p, c_uint32, _PP]),
    "nfslock_session_make_new_ids": (c_int, [_P, c_size_t, POINTER(c_uint64)]),
    "nfslock_session_lock_ids": (c_int, [_P, POINTER(c_uint64), c_size_t, POINTER(c_uint64), POINTER(c_size_t)]),
    "nfslock_session_release_ids": (c_int, [_P, POINTER(c_uint64), c_size_t, POINTER(c_uint64), POINTER(c_size_t)]),
    "nfslock_session_get_lock_session": (c_int, [_P, c_uint64, c_char_p, c_size_t]),
    "nfslock_session_reap_locks": (c_int, [_P, POINTER(c_size_t)]),
    "nfslock_session_check": (c_int, [_P]),
    "nfslock_session_repair_counter": (c_int, [_P, c_uint64]),
    "nfslock_session_close": (c_int, [_P]),
}


def _candidates() -> List[Tuple[str, str]]:
    """(where it came from, what to pass to dlopen), in the order they are tried."""
    chosen = os.environ.get(ENV_VAR)
    if chosen:
        return [(ENV_VAR, chosen)]
    found = []
    for bundled in sorted(_HERE.glob("libnfslock.so*")):
        found.append(("bundled", str(bundled)))
    system = ctypes.util.find_library("nfslock")
    if system:
        found.append(("system", system))
    # The SONAME: libnfslock.so.MAJOR.MINOR for 0.x (a 0.x minor may change the ABI),
    # libnfslock.so.MAJOR from 1.0 on, as the library's build names it.
    major, minor = __version__.split(".")[:2]
    found.append(("system", f"libnfslock.so.{major}.{minor}" if major == "0" else f"libnfslock.so.{major}"))
    return found


def _version_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _load() -> Tuple[ctypes.CDLL, str, str]:
    tried = []
    for origin, name in _candidates():
        try:
            # CDLL (not PyDLL): every call releases the GIL, so a thread waiting for a
            # lock lets the others run.
            lib = ctypes.CDLL(name)
        except OSError as e:
            tried.append(f"{origin} {name}: {e}")
            continue
        missing = [f for f in _PROTOTYPES if not hasattr(lib, f)]
        if missing:
            tried.append(f"{origin} {name}: lacks {', '.join(missing)}")
            continue
        lib.nfslock_version.restype = c_char_p
        version = lib.nfslock_version().decode("ascii", "replace")
        want = _version_tuple(__version__)
        try:
            have = _version_tuple(version)
        except ValueError:
            have = ()
        if len(have) != 3 or have[0] != want[0] or have[1] < want[1]:
            tried.append(f"{origin} {name}: version {version}, this package needs {want[0]}.{want[1]} or a later {want[0]}.x")
            continue
        for fname, (restype, argtypes) in _PROTOTYPES.items():
            f = getattr(lib, fname)
            f.restype = restype
            f.argtypes = argtypes
        return lib, name, origin
    raise ImportError(
        f"nfslock: could not load libnfslock (install the wheel that bundles it, built by bindings/python/build-wheel, "
        f"install the library, or set {ENV_VAR} to its path): " + "; ".join(tried)
    )


lib, library_path, library_origin = _load()


def last_error() -> str:
    """This thread's last libnfslock failure, as text (read it right after the call)."""
    text: bytes = lib.nfslock_last_error()
    return text.decode("utf-8", "replace")


def strerror(code: int) -> str:
    """The library's static description of an errno value."""
    text: bytes = lib.nfslock_strerror(code)
    return text.decode("utf-8", "replace")


def library_version() -> str:
    """The loaded library's version, "MAJOR.MINOR.PATCH"."""
    text: bytes = lib.nfslock_version()
    return text.decode("ascii", "replace")


def encode_path(path: "os.PathLike[str] | os.PathLike[bytes] | str | bytes") -> bytes:
    """A path as the C layer takes it: bytes (os.fsencode), without a NUL."""
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError(f"path contains a NUL byte: {path!r}")
    return raw


def encode_text(what: str, text: "str | bytes | None") -> "bytes | None":
    """A message or reason as the C layer takes it (UTF-8), without a NUL."""
    if text is None:
        return None
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if b"\0" in raw:
        raise ValueError(f"{what} contains a NUL byte")
    return raw


def c_ids(ids: Iterable[int]) -> "ctypes.Array[c_uint64]":
    """A list of IDs as a uint64_t array, each checked to fit."""
    values = list(ids)
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 1 << 64:
            raise ValueError(f"an ID is an integer from 0 to 2**64-1, not {v!r}")
    return (c_uint64 * len(values))(*values)
