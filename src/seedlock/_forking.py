"""Isolate randomness: put every generator back after a block, or reseed forked children.

:func:`fork` guarantees that whatever a block draws, every generator is as before it afterwards;
:func:`reseed_on_fork` gives every ``os.fork()`` child its own reproducible streams. Both build
on :mod:`seedlock.state` (capture, and applying a state that is known to fit); a library whose
state cannot be captured as data (a :class:`~seedlock.backends.base.SeedOnlyBackend`: CuPy) is
put back by its in-process ``snapshot()`` instead. The guide: ``docs/state.md``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any

from seedlock import _hooks
from seedlock import backends as _backends
from seedlock.backends.base import Backend, SeedOnlyBackend
from seedlock.derivation import get_root
from seedlock.state import RNGState, apply_checked, capture

__all__ = ["fork", "reseed_on_fork"]


# -- fork ------------------------------------------------------------------------------------


class fork(contextlib.ContextDecorator):
    """Isolate every RNG family: whatever the body draws, all generators are put back on exit.

    Restores also when the body raises; nests; works as a decorator. Generators registered
    inside the body are left alone on exit (they had no state before it). A library first
    imported inside the body is put back to its state right after that import (seeded, or
    restored, as pending then). ``with seedlock.fork() as state:`` gives the
    :class:`~seedlock.RNGState` captured on entry.

    Examples
    --------
    >>> with seedlock.fork():
    ...     torch.rand(1000)      # draws that must not shift the training stream
    """

    def __init__(self) -> None:
        # Per open block: the state at entry, and what libraries imported inside it looked like
        # right after their import (filled by a post-import hook, keyed by the block).
        self._saved: list[tuple[RNGState, str, dict[str, dict[str, Any]]]] = []
        # Per open block: the in-process snapshots of the libraries captured as {} (see below).
        self._kept: list[list[tuple[Callable[[Any], object], Any]]] = []

    def __enter__(self) -> RNGState:
        state = capture()
        # A seed-only library's capture is {}: its restore cannot put anything back. Its
        # snapshot() (CuPy: the state objects themselves) can, within this process.
        kept: list[tuple[Callable[[Any], object], Any]] = []
        for backend in _backends.live_globals():
            if isinstance(backend, SeedOnlyBackend):
                save, load = backend.snapshot()
                kept.append((load, save()))
        key = f"seedlock.fork.{id(self)}.{len(self._saved)}"
        imported: dict[str, dict[str, Any]] = {}
        for backend in _backends.all_backends():
            if backend.seed_bits and not backend.loaded() and backend.available():
                # last=True: after the seeding or restore pending for the library has run.
                record = partial(_record_import, imported, backend)
                _hooks.on_import(backend.module, key, record, last=True)
        self._saved.append((state, key, imported))
        self._kept.append(kept)
        return state

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state, key, imported = self._saved.pop()
        kept = self._kept.pop()
        _hooks.cancel_everywhere(key)
        try:
            apply_checked(RNGState({**imported, **state.backends}, state.generators))
        finally:
            for load, saved in kept:
                load(saved)


def _record_import(imported: dict[str, dict[str, Any]], backend: Backend) -> None:
    imported[backend.name] = backend.capture()


# -- reseed_on_fork ----------------------------------------------------------------------------

_fork_lineage: tuple[int, ...] = ()
_fork_children = 0
_fork_enabled = False
_fork_hooked = False


def _before_fork() -> None:
    global _fork_children
    if _fork_enabled:
        _fork_children += 1


def _in_child() -> None:
    global _fork_lineage, _fork_children
    if not _fork_enabled:
        return
    _fork_lineage = (*_fork_lineage, _fork_children - 1)
    _fork_children = 0
    _backends.seed_live_globals("fork", *_fork_lineage)


def reseed_on_fork(enable: bool = True) -> None:
    """Give every ``os.fork()`` child its own, reproducible seeds for the global generators.

    Without this a forked child continues its parent's random streams: every child (a
    multiprocessing worker, a forked server) draws the *same* numbers. With it, the ``n``-th
    child forked by a process seeds each loaded global with
    ``derive("fork", *lineage, n, <backend>)`` — lineage being the parent's own fork path — so
    children differ from the parent and from each other, yet get the same numbers run after run
    (as long as the program forks in the same order).

    PyTorch's DataLoader reseeds its own workers after the fork, as it always does.

    Parameters
    ----------
    enable
        ``True`` (default) turns it on; ``False`` turns it off.

    Raises
    ------
    LookupError
        Turning it on without a root seed (:func:`seedlock.seed_everything` first).
    RuntimeError
        Turning it on where ``os.register_at_fork`` does not exist (not POSIX).
    """
    global _fork_enabled, _fork_hooked
    if enable:
        get_root()  # fail now, not in a child, when there is no root seed
        if not hasattr(os, "register_at_fork"):
            raise RuntimeError("reseed_on_fork needs os.register_at_fork (POSIX only)")
        if not _fork_hooked:
            os.register_at_fork(before=_before_fork, after_in_child=_in_child)
            _fork_hooked = True
    _fork_enabled = enable
