"""The likely cause when runs differ and nothing was traced (a program that never imports torch).

Two things are known about such runs without a trace: the places where randomness that no seed
reaches entered each process (``<name>.entropy``, :mod:`seedlock.audit.entropylog`), and what
each seeded process recorded about itself for the manifest (its hash seed and thread settings,
:func:`seedlock.manifest.process_record`). :func:`likely_cause` turns them into report lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from seedlock._text import printable

__all__ = ["likely_cause", "records"]


def records(folder: str) -> list[dict[str, Any]]:
    """The process records in ``folder`` (unreadable ones left out), in a stable order."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_bytes()[: 1 << 22])
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append(data)
    found.sort(key=lambda r: (str(r.get("rank")), json.dumps(r.get("argv"), default=str)))
    return found


def _threads(value: Any) -> str:
    if not isinstance(value, dict):
        return "unknown"
    found = [f"{k}={v}" for k, v in sorted(value.items(), key=str) if v is not None]
    return printable(", ".join(found) or "library defaults", 200)


def _settings(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(printable(r.get("hash_seed"), 40), _threads(r.get("threads"))) for r in found]


def likely_cause(
    entropy_files: list[str], records_a: list[dict[str, Any]], records_b: list[dict[str, Any]],
    *, seeded: bool, index: int,
) -> list[str]:  # fmt: skip
    """Report lines: the likely cause of a difference between run 1 and run ``index``.

    Parameters
    ----------
    entropy_files
        The ``.entropy`` files of the two runs.
    records_a, records_b
        The process records of run 1 and of run ``index`` (empty when not seeded).
    seeded
        Whether the runs were seeded (``--no-seed`` not given).
    index
        The other run's number.

    Returns
    -------
    list of str
        A heading and indented lines.
    """
    # Reading .entropy files and describing sources: only when runs differ untraced.
    from seedlock.audit import entropylog
    from seedlock.audit.entropy import describe, implicated

    lines = ["likely cause (nothing traced: the command did not use torch):"]
    sources = []
    for path in entropy_files:
        if os.path.isfile(path):
            sources += entropylog.read(path)
    lines += describe(implicated(sources, None, -1))
    if not seeded:
        lines.append("  not seeded (--no-seed): every generator starts from OS entropy and str "
                     "hashing (PYTHONHASHSEED) changes in every run")  # fmt: skip
        return lines
    a, b = _settings(records_a), _settings(records_b)
    if a != b:
        for (hash_a, threads_a), (hash_b, threads_b) in zip(a, b, strict=False):
            if hash_a != hash_b:
                lines.append(f"  the hash seed differs: run 1 {hash_a}, run {index} {hash_b}")
            if threads_a != threads_b:
                lines.append(f"  the thread settings differ: run 1 {threads_a}, "
                             f"run {index} {threads_b}")  # fmt: skip
        if len(a) != len(b):
            lines.append(f"  the runs started different numbers of Python processes "
                         f"({len(a)} vs {len(b)})")  # fmt: skip
    elif a:
        hash_seed, threads = a[0]
        agree = f"the manifests agree (hash seed {hash_seed}, threads {threads})"
        lines.append(f"  {agree}: randomness that no seed reaches, or the clock, changed them")
    if len(lines) == 1:
        lines.append("  nothing recorded explains it")
    return lines
