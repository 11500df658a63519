"""The on-disk format of an RNG state: versioned, checksummed, written atomically, no pickle.

The guide: ``docs/state.md`` (state files).

A state file is three parts::

    SEEDLOCK-RNG-STATE\\n                                  magic line (19 bytes)
    {"format": 2, "length": N, "sha256": "<hex>"}\\n        header: one JSON line
    <N bytes of UTF-8 JSON>                                payload: RNGState.to_plain()

In the payload, binary fields are ``{"$bytes": "<base64>"}``; everything else is JSON as is.
The file is plain text: ``head -c 300 rng.state`` shows what it is.

The checksum covers the header too: ``sha256`` is the SHA-256 of
``b"seedlock-rng-state format=<format> length=<length>\\n"`` followed by the payload. Every
format, present and future, keeps this header and this rule, so that a reader checks a file's
integrity *before* it trusts the format number: a flipped digit there is corruption, not "a
newer seedlock". (Format 1, which this version still reads, hashed the payload alone.)

Reading checks, in order, before anything is restored: the file size (at most
``MAX_STATE_BYTES``), the magic (:class:`~seedlock.errors.NotAStateFileError`), the header, the
payload length and checksum (:class:`~seedlock.errors.CorruptStateError`), the format
(:class:`~seedlock.errors.StateVersionError` for a newer one), the payload's size in JSON values
(at most ``MAX_VALUES``, bounded before anything is parsed) and its nesting depth, its
structure, then :func:`seedlock.restore`'s own check of every value
(:class:`~seedlock.errors.StateMismatchError`). The file system's own errors (a missing file,
no permission) are ``OSError``, as usual.

Writing goes to a temporary file in the same directory, is flushed and ``fsync``-ed, renamed over
the target (atomic on POSIX and Windows) and the directory is ``fsync``-ed: a crash at any moment
leaves either the old file or the new one, never a mix (see :mod:`seedlock._files`). A new file
gets the mode the umask gives, an existing one keeps its own; a file that is not a seedlock state
is never overwritten.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from seedlock import _files
from seedlock.errors import (
    CorruptStateError,
    NotAStateFileError,
    StateTooLargeError,
    StateVersionError,
)
from seedlock.state import MAX_DEPTH, DevicePolicy, RNGState, capture, restore

__all__ = ["FORMAT_VERSION", "MAGIC", "MAX_STATE_BYTES", "MAX_VALUES", "load", "read", "save"]

MAGIC = b"SEEDLOCK-RNG-STATE\n"
FORMAT_VERSION = 2
#: Far above any real state (a few KiB per device and generator); a larger file is refused
#: unread, so a wrong path cannot make seedlock read gigabytes.
MAX_STATE_BYTES = 64 * 1024 * 1024
#: Far above any real state too (a registered generator is about a dozen JSON values): a payload
#: that may hold more is refused before it is parsed, so no file makes seedlock build a huge tree.
MAX_VALUES = 2**18
_MAX_HEADER = 4096
_HEADER_FIELDS = frozenset(("format", "length", "sha256"))

PathLike = str | os.PathLike[str]


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise CorruptStateError(f"the payload is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        if value.keys() == {"$bytes"}:
            try:
                return base64.b64decode(value["$bytes"], validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise CorruptStateError(f"invalid base64 in a binary field: {exc}") from None
        return {k: _decode(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, depth + 1) for v in value]
    return value


def _digest(version: int, length: int, payload: bytes | memoryview) -> str:
    """The header's checksum (see the module docstring)."""
    if version == 1:
        return hashlib.sha256(payload).hexdigest()
    h = hashlib.sha256(f"seedlock-rng-state format={version} length={length}\n".encode())
    h.update(payload)
    return h.hexdigest()


def _serialise(state: RNGState) -> bytes:
    payload = json.dumps(
        _encode(state.to_plain()), separators=(",", ":"), allow_nan=False, sort_keys=True
    ).encode("utf-8")
    digest = _digest(FORMAT_VERSION, len(payload), payload)
    header = json.dumps({"format": FORMAT_VERSION, "length": len(payload), "sha256": digest})
    return MAGIC + header.encode("ascii") + b"\n" + payload


def save(path: PathLike, state: RNGState | None = None) -> Path:
    """Write an RNG state to ``path``, atomically (see the module docstring).

    Parameters
    ----------
    path
        The file to write; its parent directory must exist. An existing seedlock state file is
        replaced.
    state
        What to write; default ``None``: :func:`seedlock.capture` now.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FileExistsError
        ``path`` holds a file that is not a seedlock state file; it is left as it was.
    OSError
        The file system's own errors (no such directory, no permission).

    Examples
    --------
    >>> seedlock.save("run/rng.state")
    """
    target = Path(path)
    data = _serialise(capture() if state is None else state)
    _refuse_foreign(target)
    _files.write_atomic(target, data, durable=True)
    return target


def _refuse_foreign(target: Path) -> None:
    try:
        with open(target, "rb") as f:
            head = f.read(len(MAGIC))
    except (FileNotFoundError, IsADirectoryError):
        return  # nothing to lose; a directory makes the rename fail with its own error
    if head and head != MAGIC:
        raise FileExistsError(
            f"{target} exists and is not a seedlock state file: refusing to overwrite it "
            "(remove it or choose another path)"
        )


def read(path: PathLike) -> RNGState:
    """Read and verify a state file without restoring it.

    Parameters
    ----------
    path
        A file :func:`save` wrote.

    Returns
    -------
    RNGState
        The state, its structure checked; :func:`seedlock.restore` checks its values.

    Raises
    ------
    StateError
        :class:`~seedlock.errors.StateTooLargeError`, :class:`~seedlock.errors.NotAStateFileError`,
        :class:`~seedlock.errors.CorruptStateError` or :class:`~seedlock.errors.StateVersionError`
        (the checks, in order, are in the module docstring).
    OSError
        The file system's own errors (a missing file, no permission).
    """
    p = Path(path)
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_STATE_BYTES:
            raise StateTooLargeError(
                f"{p}: {size} bytes is more than any seedlock state ({MAX_STATE_BYTES} at most); "
                "refusing to read it"
            )
        # What fstat says, plus one byte to notice a file that grows meanwhile (read(n)
        # allocates n bytes up front: never the whole cap for a small file).
        data = f.read(size + 1)
    if len(data) > MAX_STATE_BYTES:  # it grew while being read
        raise StateTooLargeError(f"{p}: more than {MAX_STATE_BYTES} bytes; refusing to read it")
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
    except (ValueError, RecursionError):
        raise CorruptStateError(f"{p}: corrupt header") from None
    if not isinstance(header, dict) or header.keys() != _HEADER_FIELDS:
        raise CorruptStateError(f"{p}: corrupt header")
    version, length, digest = header["format"], header["length"], header["sha256"]
    if type(version) is not int or type(length) is not int or not isinstance(digest, str):
        raise CorruptStateError(f"{p}: corrupt header")
    payload = memoryview(data)[end + 1 :]
    if len(payload) != length:
        raise CorruptStateError(
            f"{p}: truncated or padded: the header announces {length} payload bytes, "
            f"the file holds {len(payload)}"
        )
    if version < 1 or _digest(version, length, payload) != digest:
        raise CorruptStateError(f"{p}: checksum mismatch: the file is corrupt")
    if version > FORMAT_VERSION:
        raise StateVersionError(
            f"{p}: format {version} was written by a newer seedlock; this one reads up to "
            f"format {FORMAT_VERSION}: upgrade seedlock"
        )
    # Every JSON value but the first comes right after one of these four bytes (and they
    # may occur inside strings too): an upper bound, counted without parsing anything.
    values = 1 + sum(data.count(c, end + 1) for c in (b",", b":", b"[", b"{"))
    if values > MAX_VALUES:
        raise CorruptStateError(
            f"{p}: the payload may hold {values} JSON values, more than any seedlock state "
            f"({MAX_VALUES} at most); refusing to parse it"
        )
    try:
        plain = json.loads(payload.tobytes())
    except (ValueError, RecursionError):
        raise CorruptStateError(f"{p}: payload is not valid JSON") from None
    try:
        return RNGState.from_plain(_decode(plain))
    except CorruptStateError as exc:
        raise CorruptStateError(f"{p}: {exc}") from None


def load(path: PathLike, *, devices: DevicePolicy = "exact") -> RNGState:
    """Read, verify and restore a state file; return the state.

    Parameters
    ----------
    path
        A file :func:`save` wrote.
    devices
        ``"exact"`` (default) or ``"common"``, as for :func:`seedlock.restore`.

    Returns
    -------
    RNGState
        The state now in effect.

    Raises
    ------
    StateError
        Any problem with the file or the state, as a subclass (see :func:`read` and
        :func:`seedlock.restore`), before a generator changes.
    OSError
        The file system's own errors (a missing file, no permission).
    ValueError
        ``devices`` is another value.

    Examples
    --------
    >>> seedlock.load("run/rng.state")
    """
    state = read(path)
    restore(state, devices=devices)
    return state
