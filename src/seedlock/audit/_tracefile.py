"""The trace file: its schema; open it read-only, check it is a valid trace, stream its events.

A trace comes from the traced program or from anywhere (a file attached to a bug report): every
event's column types are checked before one is read (:func:`read_meta`). SQLite only, no torch.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS", "FIELDS", "FORMAT", "SCHEMA", "VERSION", "connect", "read_meta", "replaceable",
    "rows",
]  # fmt: skip

FORMAT = "seedlock.trace"
# 2: RNG and multi-tensor fingerprints use the trace's hash, not SHA-256; 3: entropy table
VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, step INTEGER NOT NULL, module TEXT NOT NULL, kind TEXT,
    event TEXT NOT NULL, op TEXT, fingerprint TEXT NOT NULL, dtype TEXT, shape TEXT,
    sum REAL, absmax REAL, nans INTEGER, infs INTEGER, rng TEXT, inputs TEXT
);
CREATE TABLE IF NOT EXISTS entropy (
    seq INTEGER NOT NULL, kind TEXT NOT NULL, file TEXT NOT NULL, line INTEGER NOT NULL,
    function TEXT NOT NULL, module TEXT
);
"""
COLUMNS = 15  # of events

FIELDS = (
    "seq, step, module, kind, event, op, fingerprint, dtype, shape, sum, absmax, nans, infs, "
    "rng, inputs"
)


def connect(path: str) -> sqlite3.Connection:
    """Open a trace read-only. The path goes into a ``file:`` URI percent-encoded, so that a
    ``?`` or ``%`` in a file name is part of the name."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True)


# The type SQLite stores in each column of a valid trace (it does not enforce declared types).
_TYPES = {
    "seq": ("integer",), "step": ("integer",), "module": ("text",), "kind": ("text", "null"),
    "event": ("text",), "op": ("text", "null"), "fingerprint": ("text",),
    "dtype": ("text", "null"), "shape": ("text", "null"), "sum": ("real", "integer", "null"),
    "absmax": ("real", "integer", "null"), "nans": ("integer", "null"),
    "infs": ("integer", "null"), "rng": ("text", "null"), "inputs": ("text", "null"),
}  # fmt: skip
_BAD_ROW = "SELECT seq FROM events WHERE " + " OR ".join(
    f"typeof({column}) NOT IN ({', '.join(repr(t) for t in types)})"
    for column, types in _TYPES.items()
)


def rows(path: str) -> Iterator[dict[str, Any]]:
    db = connect(path)
    try:
        cursor = db.execute(f"SELECT {FIELDS} FROM events ORDER BY seq")
        names = [c.strip() for c in FIELDS.split(",")]
        while True:
            chunk = cursor.fetchmany(1000)
            if not chunk:
                return
            for row in chunk:
                yield dict(zip(names, row, strict=True))
    finally:
        db.close()


def read_meta(path: str | os.PathLike[str]) -> dict[str, str]:
    """A trace's meta table, once the file is checked to be a seedlock trace whose every event
    has the types seedlock writes (``ValueError`` if not)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ValueError(f"{p}: no such trace file")
    try:
        db = connect(p)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != "seedlock.trace":
                raise ValueError(f"{p}: not a seedlock trace")
            bad = db.execute(_BAD_ROW + " LIMIT 1").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ValueError(f"{p}: not a seedlock trace ({exc})") from None
    if bad is not None:
        raise ValueError(f"{p}: not a valid seedlock trace: event {bad[0]!r} holds a value of "
                         "a type seedlock never writes")  # fmt: skip
    return {str(k): str(v) for k, v in meta.items()}


def replaceable(path: str) -> None:
    """An existing file may be replaced only when it is a seedlock trace (a rerun of the same
    tracing); ``FileExistsError`` for anything else, which stays as it was."""
    try:
        read_meta(path)
    except ValueError:
        raise FileExistsError(
            f"{path} exists and is not a seedlock trace: refusing to replace it "
            "(remove it or choose another path)"
        ) from None
