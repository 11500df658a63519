"""Where entropy entered a checked process that traces nothing (one that never imports torch).

``seedlock check`` starts this in every process it runs (:func:`start`): the hooks of
:mod:`seedlock.audit.entropy` note each place where randomness that no seed reaches entered,
from the first line of the program on; the hooks on numpy, ``uuid`` and ``secrets`` are added
when those are imported. When the process imports torch, its trace takes the places noted so
far (:func:`hand_over`) and records the rest itself. A process that never does writes them, at
exit, to ``<rank or main>.entropy`` next to where its trace would be (JSON lines: kind, file,
line, function), and :func:`read` gives them back as
:class:`~seedlock.audit.entropy.EntropySource` records.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from seedlock.audit import entropy
from seedlock.audit.entropy import EntropySource

__all__ = ["hand_over", "read", "start"]

#: The modules whose hooks are installed only once the program imports them.
LATER = ("numpy.random", "uuid", "secrets")
_LIMIT = 1000  # places kept per process: a loop drawing OS entropy is named once per place

_notes: list[tuple[str, str, int, str]] = []
_handed_over = False


def _note(kind: str, file: str, line: int, function: str) -> None:
    note = (kind, file, line, function)
    if len(_notes) < _LIMIT and note not in _notes:
        _notes.append(note)


def start(path: str, on_import: Callable[[str, str, Callable[[], None]], None]) -> None:
    """Note entropy from now on; at exit write the places to ``path`` unless a trace took them.

    Parameters
    ----------
    path
        The ``.entropy`` file to write.
    on_import
        ``seedlock._hooks.on_import``: how to add the hooks of :data:`LATER` on their import.
    """
    import atexit  # only in a process seedlock check runs

    entropy.activate(_note)
    for module in LATER:
        # Whoever notes then (this log, or the trace it was handed to) gets that library's too.
        on_import(module, "seedlock.check.entropy", entropy.refresh)
    atexit.register(_write, path)


def hand_over() -> list[tuple[str, str, int, str]]:
    """Stop noting here and give the places noted so far (kind, file, line, function) to the
    trace that starts next: it records the rest itself.

    Returns
    -------
    list of tuple
        The places, in order.
    """
    global _handed_over
    _handed_over = True
    entropy.deactivate(_note)  # the trace installs the hooks again, torch's included
    notes = list(_notes)
    _notes.clear()
    return notes


def _write(path: str) -> None:
    process = sys.modules.get("multiprocessing")
    if _handed_over or (process is not None and process.current_process().name != "MainProcess"):
        return  # traced, or a worker of the program: its parent writes the file
    entropy.deactivate(_note)
    lines = [json.dumps(dict(zip(("kind", "file", "line", "function"), n, strict=True)))
             for n in _notes]  # fmt: skip
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    except OSError:
        pass  # the check then reports no entropy for this process


def read(path: str | os.PathLike[str]) -> list[EntropySource]:
    """The places an ``.entropy`` file names, in order; lines that are not valid are skipped.

    Parameters
    ----------
    path
        A file written at the exit of a checked process.

    Returns
    -------
    list of EntropySource
        With ``seq`` 0 and no module (nothing was traced).
    """
    found = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for text in f.read(1 << 22).splitlines():
            try:
                item = json.loads(text)
            except ValueError:
                continue
            if not isinstance(item, dict):
                continue
            kind, file, line, function = (item.get(k) for k in ("kind", "file", "line", "function"))
            names = (kind, file, function)
            if all(isinstance(v, str) for v in names) and type(line) is int:
                found.append(
                    EntropySource(0, str(kind), str(file), line, str(function), None, True)
                )
    return found
