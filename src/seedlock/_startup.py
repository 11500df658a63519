"""What this interpreter started with: its environment and its ``str`` hash seed.

Read without importing anything beyond ``os`` and ``sys``: the ``seedlock run`` bootstrap needs
it in every interpreter it starts, possibly at exit, where an import can change how the process
dies (see :mod:`seedlock._bootstrap`).
"""

from __future__ import annotations

import os
import sys

__all__ = ["environ", "read_hash_seed"]

_environ: dict[str, str] | None = None


def environ() -> dict[str, str]:
    """The environment this interpreter started with. On Linux /proc keeps it even after the
    program edits os.environ (the classic in-process PYTHONHASHSEED no-op)."""
    global _environ
    if _environ is None:
        try:
            with open("/proc/self/environ", "rb") as f:
                raw = f.read()
        except OSError:
            _environ = dict(os.environ)
        else:
            pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
            _environ = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
    return _environ


def read_hash_seed() -> tuple[bool, str | None, str]:
    """``(fixed, value, why)`` for this interpreter's hash seed, read as it started."""
    if sys.flags.hash_randomization == 0:
        return True, "0", "hash randomisation disabled (PYTHONHASHSEED=0)"
    if sys.flags.ignore_environment:
        return False, None, "python -E/-I ignores PYTHONHASHSEED"
    value = environ().get("PYTHONHASHSEED", "random")
    if value.isdigit():
        return True, value, "PYTHONHASHSEED set at start-up"
    return (
        False,
        None,
        "set and str-keyed dict order vary per process: use seedlock.ensure_hash_seed() "
        "or launch with `seedlock run`",
    )
