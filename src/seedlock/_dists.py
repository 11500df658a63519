"""Installed distributions and their entry points, read straight from ``*.dist-info`` folders.

``importlib.metadata`` is slow to import and scan (it pulls in ``email``, ``zipfile``, ``csv``),
which ``seedlock run`` would pay in every interpreter it starts (``benchmarks/bench_cli.py``
measures those start-ups). The two facts seedlock
needs — each distribution's name and version, and the ``seedlock.backends`` entry points — are
in the folder name and in ``entry_points.txt``. When ``sys.path`` holds something other than
plain folders (a zip file, an egg), the caller falls back to ``importlib.metadata``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

__all__ = ["distributions", "entry_points", "plain_path"]


def plain_path() -> bool:
    """Is every ``sys.path`` entry a folder (or missing), so the fast scan sees everything?"""
    return not any(os.path.isfile(p) for p in sys.path if p)


def _dist_dirs() -> Iterator[tuple[str, str, str]]:
    """(normalised name, version, folder) for each distribution, first on sys.path first."""
    seen: set[str] = set()
    for entry in sys.path:
        try:
            names = os.listdir(entry or os.curdir)
        except OSError:
            continue
        for folder in sorted(names):
            if not folder.endswith((".dist-info", ".egg-info")):
                continue
            stem = folder.rsplit(".", 1)[0]
            name, _, version = stem.partition("-")
            key = name.lower().replace("-", "_").replace(".", "_")
            if key in seen or not version:
                continue
            seen.add(key)
            yield key, version.split("-")[0], os.path.join(entry or os.curdir, folder)


def distributions() -> dict[str, str]:
    """Normalised distribution name -> version, as installed on ``sys.path``."""
    return {name: version for name, version, _ in _dist_dirs()}


def entry_points(group: str) -> list[tuple[str, str]]:
    """(name, "module:attr") of every entry point in ``group``, read once per ``sys.path``
    (``seedlock run``'s bootstrap and the backend registry both ask, in every interpreter)."""
    key = (group, tuple(sys.path))
    found = _entry_points.get(key)
    if found is None:
        found = _entry_points[key] = _scan_entry_points(group)
    return list(found)


_entry_points: dict[tuple[str, tuple[str, ...]], list[tuple[str, str]]] = {}


def _scan_entry_points(group: str) -> list[tuple[str, str]]:
    header = f"[{group}]"
    found = []
    for _, _, folder in _dist_dirs():
        try:
            with open(os.path.join(folder, "entry_points.txt"), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        if header not in text:
            continue
        section = text.split(header, 1)[1].split("\n[", 1)[0]
        for raw in section.splitlines():
            line = raw.strip()
            if line and not line.startswith(("#", ";")) and "=" in line:
                name, _, value = line.partition("=")
                found.append((name.strip(), value.strip()))
    return found
