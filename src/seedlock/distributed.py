"""Randomness across the ranks of a ``torchrun`` job: shared streams, sync, per-rank checkpoints.

Guarantees: shared streams give the same numbers on every rank and rank-local ones other numbers,
run after run; :func:`sync_state` applies on every rank or on none; a per-rank checkpoint resumes
only with the world size that saved it. The guide: ``docs/distributed.md``.

Nothing here starts processes: ``torchrun`` (or any launcher that sets ``RANK`` /
``WORLD_SIZE``) and ``torch.distributed`` do that. Importing this module imports no framework;
``torch.distributed`` is touched only by the functions that need a collective.

Rank and world size
-------------------
:func:`rank`, :func:`world_size` come from the default process group when one is initialised,
else from torchrun's ``RANK`` / ``WORLD_SIZE`` (so streams can be made before
``init_process_group``), else ``0`` / ``1``. :func:`local_rank` reads ``LOCAL_RANK``. (They live
in ``seedlock._ranks``, which every module that needs the rank reads.)

Shared and rank-local randomness
--------------------------------
*Shared* streams give the same numbers on every rank: every named stream made without
``per_rank`` (``numpy_rng("init")``, ``torch_generator("sampler")``, ...), the globals after
``seed_everything(s)`` (the default, as the classic recipe), the globals inside
``with shared_globals("init"):``, and the loader's shuffle order (partitioned by rank afterwards,
like ``DistributedSampler``).

*Rank-local* streams give other numbers on every rank: named streams made with
``per_rank=True``, the globals after ``seed_everything(s, per_rank=True)``, generators you
register with ``seedlock.register(obj, name, per_rank=True)``, and those named in
``sync_state(exclude=...)``. The loader's per-sample augmentation
is a function of the sample, so it differs between ranks because they fetch other samples.

A rank-local value puts the rank in the key path, ``derive(name, *keys, "rank", rank)``, never
``seed + rank`` (with which seed 1 on rank 0 *is* seed 0 on rank 1).

Which to use: keep model initialisation and data order shared; make dropout, augmentation and
noise rank-local (with shared globals every rank of a data-parallel job draws the same dropout
masks and noise for its different samples). ``seed_everything(s, per_rank=True)`` does that for
the globals; build the model inside :func:`shared_globals` then (DDP also broadcasts rank 0's
parameters and buffers when it wraps the model; FSDP only with ``sync_module_states=True``).

Checkpoints
-----------
RNG state is per rank. :class:`PerRankState` holds this rank's seedlock state (and any
``Stateful`` you add, e.g. the loader) under a ``rank<r>`` key next to ``world_size``, so that
``torch.distributed.checkpoint`` (which keeps one copy of identical keys) stores every rank's
state, and a plain per-rank file (:func:`rank_path`) says whose it is. Resuming needs the same
world size: another world size is a :class:`WorldSizeMismatchError` (RNG streams and the data
partition of N ranks cannot be redistributed over M without changing the numbers), except with
``PerRankState(..., elastic=True)`` and a loader built with ``global_batch_size``, whose position
is global: the loader continues at the same global step and the RNG streams are re-derived.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedlock import _registry
from seedlock import backends as _backends
from seedlock._collectives import collective_device, group_ranks, require_group
from seedlock._forking import fork
from seedlock._per_rank import PerRankState
from seedlock._ranks import local_rank, rank, world_size
from seedlock.derivation import Key
from seedlock.errors import StateMismatchError, WorldSizeMismatchError
from seedlock.state import RNGState, capture, restore

__all__ = [
    "PerRankState",
    "SyncReport",
    "WorldSizeMismatchError",
    "local_rank",
    "rank",
    "rank_path",
    "shared_globals",
    "sync_state",
    "world_size",
]

_this_rank = rank  # rank_path's parameter is named rank


@contextlib.contextmanager
def shared_globals(name: Key = "init", *keys: Key) -> Iterator[None]:
    """Run a block on global generators that are the same on every rank, then put back the
    ones the block found.

    Inside, every loaded global generator (``random``, ``np.random``, torch CPU and devices,
    ...) is seeded with ``derive("shared", name, *keys, <backend>)``: identical on every rank,
    whatever ``seed_everything(per_rank=...)`` chose. On exit — also on an exception — every
    generator is restored (:func:`seedlock.fork`), so rank-local dropout and noise continue
    where they were. The tool for model initialisation when the globals are rank-local.

    Parameters
    ----------
    name
        The first key of the shared seeds' path; default ``"init"``. An int, str or bytes.
    *keys
        More keys: ``shared_globals("init", stage)`` is another set of seeds per ``stage``.

    Raises
    ------
    TypeError
        A key is not an int, str or bytes.
    LookupError
        The process has no root seed.

    Examples
    --------
    >>> seedlock.seed_everything(0, per_rank=True)
    >>> with seedlock.distributed.shared_globals("init"):
    ...     model = Net()            # the same weights on every rank
    """
    with fork():
        _backends.seed_live_globals("shared", name, *keys)
        yield


def rank_path(path: str | os.PathLike[str], rank: int | None = None) -> Path:
    """One file per rank: ``path`` with ``-rank<r>`` before its suffix.

    Parameters
    ----------
    path
        The file name shared by every rank.
    rank
        The rank whose file to name; default: this process's rank.

    Returns
    -------
    pathlib.Path
        ``path`` with ``-rank<r>`` inserted before the suffix.

    Raises
    ------
    ValueError
        ``rank`` is not an int >= 0.

    Examples
    --------
    >>> seedlock.distributed.rank_path("ckpt/rng.state", rank=1)
    PosixPath('ckpt/rng-rank1.state')
    """
    p = Path(path)
    r = _this_rank() if rank is None else rank
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"rank must be an int >= 0, got {r!r}")
    return p.with_name(f"{p.stem}-rank{r}{p.suffix}")


# -- sync_state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_state` copied from rank ``src`` to every rank.

    Attributes
    ----------
    src
        The global rank the state came from.
    globals
        The backends whose global generators were synchronised (empty when they are
        rank-local).
    generators
        The registered generators that were synchronised (every shared one).
    kept
        The registered generators left as they were (rank-local, or named in ``exclude``).
    """

    src: int
    globals: tuple[str, ...]
    generators: tuple[str, ...]
    kept: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return (
            f"sync_state from rank {self.src}: globals [{', '.join(self.globals)}], "
            f"generators [{', '.join(self.generators)}]; rank-local, kept: "
            f"[{', '.join(self.kept)}]"
        )


def sync_state(src: int = 0, *, group: Any = None, exclude: Iterable[str] = ()) -> SyncReport:
    """Give every rank the shared streams' state of rank ``src``: all or nothing, on all ranks.

    The *shared* streams are every registered generator (named-stream factories, and
    :func:`seedlock.register`) except those made with ``per_rank=True`` and those named in
    ``exclude``, plus the global generators (the backends ``src`` has loaded) unless the last
    ``seed_everything`` had ``per_rank=True``. Rank-local streams are left as they are.

    A collective: every rank of ``group`` calls it. The state travels with
    ``torch.distributed.broadcast_object_list``. Each rank checks that it can apply it (the same
    shared generator names, the same kinds, the same global scheme); if any rank cannot, every
    rank puts its state back and raises one :class:`~seedlock.StateMismatchError` naming each
    rank's problems.

    Parameters
    ----------
    src
        The global rank whose state every rank gets; default 0. It must be a member of
        ``group``.
    group
        The process group; default ``None``: the default group (every rank).
    exclude
        Names of registered generators to leave as they are, besides the rank-local ones.

    Returns
    -------
    SyncReport
        What was copied and what was kept; the same on every rank.

    Raises
    ------
    RuntimeError
        No process group is initialised (``torch.distributed.init_process_group`` first).
    ValueError
        ``src`` is not a global rank of ``group``.
    StateMismatchError
        Some rank cannot apply the state; every rank has put its own back.

    Examples
    --------
    >>> seedlock.distributed.sync_state()        # e.g. after rank 0 alone ran a validation pass
    """
    dist = require_group("seedlock.distributed.sync_state")
    ranks = group_ranks(dist, group)
    if src not in ranks:
        raise ValueError(f"src must be a global rank of the group {ranks}, got {src!r}")
    here = dist.get_rank()
    local = capture()
    kept = _registry.rank_local() | set(exclude)
    share_globals = not _registry.globals_per_rank()
    mine: dict[str, Any] = {
        "share_globals": share_globals,
        "backends": _backends.for_peers(local.backends) if share_globals else {},
        "generators": {n: e for n, e in local.generators.items() if n not in kept},
    }
    box: list[Any] = [mine if here == src else None]
    dist.broadcast_object_list(box, src=src, group=group, device=collective_device(dist, group))
    sent = box[0]

    problems: list[str] = []
    applied = False
    if here != src:
        if sent["share_globals"] != share_globals:
            how = {True: "shared", False: "rank-local (per_rank=True)"}
            problems.append(
                f"the globals are {how[share_globals]} here but {how[sent['share_globals']]} "
                f"on rank {src}: call seed_everything with the same per_rank on every rank"
            )
        for name in sorted(set(sent["generators"]) - set(mine["generators"])):
            problems.append(
                f"generator {name!r} is shared on rank {src} but "
                + ("rank-local here" if name in local.generators else "not registered here")
            )
        for name in sorted(set(mine["generators"]) - set(sent["generators"])):
            problems.append(f"generator {name!r} is shared here but not on rank {src}")
        if not problems:
            merged = RNGState(
                _backends.from_peer(sent["backends"], mine["backends"])
                if share_globals
                else local.backends,
                {**local.generators, **sent["generators"]},
            )
            try:
                restore(merged)
                applied = True
            except StateMismatchError as exc:
                problems += exc.problems
    everyone: list[Any] = [None] * len(ranks)
    dist.all_gather_object(everyone, problems, group=group)
    found = [
        f"sync_state(src={src}), rank {r}: {p}"
        for r, ps in zip(ranks, everyone, strict=True)
        for p in ps
    ]
    if found:
        if applied:
            restore(local)
        raise StateMismatchError(found)
    return SyncReport(src, tuple(sent["backends"]), tuple(sent["generators"]), tuple(sorted(kept)))


# Names that moved to the audit: an old import gets the new place in its error.
_MOVED = ("check_replicas", "ReplicaReport", "TensorMismatch", "ReplicaMismatchError")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        raise AttributeError(f"seedlock.distributed.{name} is now seedlock.audit.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
