"""The on-disk format of an RNG state: versioned, checksummed, written atomically, no pickle.

A state file is three parts::

    SEEDLOCK-RNG-STATE\\n                                  magic line (19 bytes)
    {"format": 1, "length": N, "sha256": "<hex>"}\\n        header: one JSON line
    <N bytes of UTF-8 JSON>                                payload: RNGState.to_plain()

In the payload, binary fields are ``{"$bytes": "<base64>"}``; everything else is JSON as is.
The file is plain text: ``head -c 300 rng.state`` shows what it is.

Reading checks, in order, before anything is restored: the file size (at most
``MAX_STATE_BYTES``), the magic (:class:`~seedlock.errors.NotAStateFileError`), the header and
format version (:class:`~seedlock.errors.StateVersionError` for a newer one), the payload length
and SHA-256 (:class:`~seedlock.errors.CorruptStateError`), the payload's structure, then
:func:`seedlock.restore`'s own validation (:class:`~seedlock.errors.StateMismatchError`).

Writing goes to a temporary file in the same directory, is flushed and ``fsync``-ed, renamed over
the target (atomic on POSIX and Windows) and the directory is ``fsync``-ed: a crash at any moment
leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from seedlock.errors import (
    CorruptStateError,
    NotAStateFileError,
    StateTooLargeError,
    StateVersionError,
)
from seedlock.state import DevicePolicy, RNGState, capture, restore

__all__ = ["FORMAT_VERSION", "MAGIC", "MAX_STATE_BYTES", "load", "read", "save"]

MAGIC = b"SEEDLOCK-RNG-STATE\n"
FORMAT_VERSION = 1
#: Far above any real state (a few KiB per device and generator); a larger file is refused
#: unread, so a wrong path cannot make seedlock read gigabytes.
MAX_STATE_BYTES = 64 * 1024 * 1024
_MAX_HEADER = 4096

PathLike = str | os.PathLike[str]


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            try:
                return base64.b64decode(value["$bytes"], validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise CorruptStateError(f"invalid base64 in a binary field: {exc}") from None
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _serialise(state: RNGState) -> bytes:
    payload = json.dumps(
        _encode(state.to_plain()), separators=(",", ":"), allow_nan=False, sort_keys=True
    ).encode("utf-8")
    header = json.dumps(
        {
            "format": FORMAT_VERSION,
            "length": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
    ).encode("ascii")
    return MAGIC + header + b"\n" + payload


def save(path: PathLike, state: RNGState | None = None) -> Path:
    """Write ``state`` (default: :func:`seedlock.capture` now) to ``path``, atomically.

    Returns the path written. The parent directory must exist.

    >>> seedlock.save("run/rng.state")
    """
    target = Path(path)
    data = _serialise(capture() if state is None else state)
    directory = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates the file private (0600); keep the mode the target had, else 0644.
        os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
    return target


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable. Directories cannot be opened on Windows: skip there.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: PathLike) -> RNGState:
    """Read and verify a state file without restoring it (see the module docstring)."""
    p = Path(path)
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_STATE_BYTES:
            raise StateTooLargeError(
                f"{p}: {size} bytes is more than any seedlock state ({MAX_STATE_BYTES} at most); "
                "refusing to read it"
            )
        data = f.read(MAX_STATE_BYTES + 1)
    return _parse(data, p)


def _parse(data: bytes, p: Path) -> RNGState:
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise CorruptStateError(f"{p}: truncated inside the magic line ({len(data)} bytes)")
        raise NotAStateFileError(
            f"{p}: not a seedlock state file (it starts with {data[:16]!r}, expected {MAGIC!r})"
        )
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise CorruptStateError(f"{p}: truncated or corrupt header")
    try:
        header = json.loads(data[len(MAGIC) : end])
        version, length, digest = header["format"], header["length"], header["sha256"]
    except (ValueError, KeyError, TypeError):
        raise CorruptStateError(f"{p}: corrupt header") from None
    if not isinstance(version, int) or not isinstance(length, int) or not isinstance(digest, str):
        raise CorruptStateError(f"{p}: corrupt header")
    if version > FORMAT_VERSION:
        raise StateVersionError(
            f"{p}: format {version} was written by a newer seedlock; this one reads up to "
            f"format {FORMAT_VERSION}: upgrade seedlock"
        )
    if version < 1:
        raise CorruptStateError(f"{p}: invalid format version {version}")
    payload = data[end + 1 :]
    if len(payload) != length:
        raise CorruptStateError(
            f"{p}: truncated or padded: the header announces {length} payload bytes, "
            f"the file holds {len(payload)}"
        )
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptStateError(f"{p}: checksum mismatch: the file is corrupt")
    try:
        plain = json.loads(payload)
    except ValueError:
        raise CorruptStateError(f"{p}: payload is not valid JSON") from None
    try:
        return RNGState.from_plain(_decode(plain))
    except CorruptStateError as exc:
        raise CorruptStateError(f"{p}: {exc}") from None


def load(path: PathLike, *, devices: DevicePolicy = "exact") -> RNGState:
    """Read, verify and restore a state file; return the state.

    Any problem raises a :class:`~seedlock.StateError` subclass before a generator changes.

    >>> seedlock.load("run/rng.state")
    """
    state = read(path)
    restore(state, devices=devices)
    return state
