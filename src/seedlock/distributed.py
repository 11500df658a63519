"""seedlock under ``torchrun`` / ``torch.distributed``: rank-aware streams, state sync, replica
check and per-rank checkpoints.

Nothing here starts processes: ``torchrun`` (or any launcher that sets ``RANK`` /
``WORLD_SIZE``) and ``torch.distributed`` do that. Importing this module imports no framework;
``torch.distributed`` is touched only by the functions that need a collective.

Rank and world size
-------------------
:func:`rank`, :func:`world_size` come from the default process group when one is initialised,
else from torchrun's ``RANK`` / ``WORLD_SIZE`` (so streams can be made before
``init_process_group``), else ``0`` / ``1``. :func:`local_rank` reads ``LOCAL_RANK``.

Shared and rank-local randomness
--------------------------------
*Shared* streams give the same numbers on every rank: every named stream made without
``per_rank`` (``numpy_rng("init")``, ``torch_generator("sampler")``, ...), the globals after
``seed_everything(s)`` (the default, as the classic recipe), the globals inside
``with shared_globals("init"):``, and the loader's shuffle order (partitioned by rank afterwards,
like ``DistributedSampler``).

*Rank-local* streams give other numbers on every rank: named streams made with
``per_rank=True``, the globals after ``seed_everything(s, per_rank=True)``, and generators you
register yourself and name in ``sync_state(exclude=...)``. The loader's per-sample augmentation
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
partition of N ranks cannot be redistributed over M without changing the numbers).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedlock.derivation import Key
from seedlock.errors import StateError, StateMismatchError

__all__ = [
    "PerRankState",
    "ReplicaMismatchError",
    "ReplicaReport",
    "SyncReport",
    "TensorMismatch",
    "WorldSizeMismatchError",
    "check_replicas",
    "local_rank",
    "rank",
    "rank_path",
    "shared_globals",
    "sync_state",
    "world_size",
]

_DIGEST = 16  # bytes per tensor fingerprint
_HEADER = 8 + _DIGEST  # tensor count + digest of (name, dtype, shape) of every tensor


class WorldSizeMismatchError(StateError, ValueError):
    """A per-rank state saved by one number of ranks is loaded by another."""


class ReplicaMismatchError(RuntimeError):
    """:func:`check_replicas` with ``raise_on_mismatch=True`` found ranks that differ."""

    def __init__(self, report: ReplicaReport) -> None:
        self.report = report
        super().__init__(str(report))


# -- rank and world size -----------------------------------------------------------------------


def _group_initialised() -> Any | None:
    """``torch.distributed`` if a default process group is initialised (never imports it)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not an integer (torchrun sets it to this process's number)"
        ) from None


def world_size() -> int:
    """Number of ranks: the default process group's, else ``WORLD_SIZE``, else 1.

    >>> seedlock.distributed.world_size()      # under torchrun --nproc_per_node=2
    2
    """
    dist = _group_initialised()
    if dist is not None:
        return int(dist.get_world_size())
    size = _env_int("WORLD_SIZE", 1)
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {size}")
    return size


def rank() -> int:
    """This process's global rank: the default process group's, else ``RANK``, else 0.

    >>> seedlock.distributed.rank()            # on the second process of torchrun
    1
    """
    dist = _group_initialised()
    if dist is not None:
        return int(dist.get_rank())
    here, size = _env_int("RANK", 0), world_size()
    if not 0 <= here < size:
        raise ValueError(f"RANK={here} is outside [0, WORLD_SIZE={size})")
    return here


_this_rank = rank  # rank_path's parameter is named rank


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, set by torchrun), else 0: the index
    of the accelerator it should use.

    >>> torch.cuda.set_device(seedlock.distributed.local_rank())
    """
    return _env_int("LOCAL_RANK", 0)


def rank_path(path: str | os.PathLike[str], rank: int | None = None) -> Path:
    """``path`` with ``-rank<r>`` before its suffix: one file per rank (default: this rank).

    >>> seedlock.distributed.rank_path("ckpt/rng.state", rank=1)
    PosixPath('ckpt/rng-rank1.state')
    """
    p = Path(path)
    r = _this_rank() if rank is None else rank
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"rank must be an int >= 0, got {r!r}")
    return p.with_name(f"{p.stem}-rank{r}{p.suffix}")


# -- shared randomness on rank-local globals -------------------------------------------------


@contextlib.contextmanager
def shared_globals(name: Key = "init", *keys: Key) -> Iterator[None]:
    """Run a block on global generators that are the same on every rank, then put back the
    ones the block found.

    Inside, every loaded global generator (``random``, ``np.random``, torch CPU and devices,
    ...) is seeded with ``derive("shared", name, *keys, <backend>)``: identical on every rank,
    whatever ``seed_everything(per_rank=...)`` chose. On exit — also on an exception — every
    generator is restored (:func:`seedlock.fork`), so rank-local dropout and noise continue
    where they were. The tool for model initialisation when the globals are rank-local::

        seedlock.seed_everything(0, per_rank=True)
        with seedlock.distributed.shared_globals("init"):
            model = Net()            # the same weights on every rank
    """
    from seedlock import backends as _backends
    from seedlock.state import fork

    with fork():
        _backends.seed_live_globals("shared", name, *keys)
        yield


# -- collectives ------------------------------------------------------------------------------


def _require_dist(what: str) -> Any:
    dist = _group_initialised()
    if dist is None:
        raise RuntimeError(
            f"seedlock.distributed.{what} needs an initialised process group: call "
            "torch.distributed.init_process_group(...) first (WORLD_SIZE is "
            f"{os.environ.get('WORLD_SIZE', 'not set')})"
        )
    return dist


def _group_ranks(dist: Any, group: Any) -> list[int]:
    """The global ranks of ``group``'s members, in group-rank order."""
    if group is None:
        return list(range(dist.get_world_size()))
    return [int(r) for r in dist.get_process_group_ranks(group)]


def _device(dist: Any, group: Any) -> Any:
    """Where the group's collectives take their tensors: the CPU for gloo (and the CPU half of
    ``cpu:gloo,cuda:nccl``), else this process's current accelerator (NCCL needs CUDA tensors)."""
    import torch

    backend = str(dist.get_backend(group)).lower()
    if "gloo" in backend or backend == "mpi":
        return torch.device("cpu")
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.current_accelerator() is not None:
        kind = accelerator.current_accelerator().type
        return torch.device(kind, accelerator.current_device_index())
    return torch.device("cuda", torch.cuda.current_device())


def _all_gather_bytes(dist: Any, payload: bytes, group: Any, device: Any) -> list[bytes]:
    """Every member's ``payload`` (all of the same length), in group-rank order."""
    import torch

    mine = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, mine, group=group)
    return [bytes(_host_view(t.cpu())) for t in out]


def _host_view(data: Any) -> Any:
    """The bytes of a CPU uint8 tensor as a buffer, without a copy when NumPy is there.

    (``bytes(tensor.untyped_storage())`` reads element by element: 100 times slower.)
    """
    try:
        return memoryview(data.numpy())
    except RuntimeError:  # torch without NumPy
        return bytes(data.tolist())


# -- check_replicas -------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorMismatch:
    """One tensor whose bits are not the same on every rank."""

    name: str
    #: Global ranks whose bits equal the reference rank's (the reference included).
    agree: tuple[int, ...]
    #: Global ranks whose bits differ from the reference rank's.
    differ: tuple[int, ...]


@dataclass(frozen=True)
class ReplicaReport:
    """What :func:`check_replicas` found; the same report on every rank.

    ``ok`` is true when every tensor has the same name, dtype, shape and bits on every rank.
    ``mismatches`` lists the tensors that differ (in the order given), ``structure`` the
    differences in names, dtypes or shapes, ``skipped`` the sharded tensors (DTensor with a
    ``Shard`` or ``Partial`` placement), which are not replicas by design.
    """

    world_size: int
    #: The global rank every other rank is compared with (the group's first member).
    reference: int
    tensors: int
    #: Bytes this rank contributed to the all-gathers (a ring all-gather forwards them
    #: ``world_size - 1`` times): 16 per tensor + 24, unless the structure differs.
    bytes_per_rank: int
    mismatches: tuple[TensorMismatch, ...] = ()
    structure: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.structure

    @property
    def differing_ranks(self) -> tuple[int, ...]:
        """Every rank that differs from the reference in at least one tensor."""
        return tuple(sorted({r for m in self.mismatches for r in m.differ}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "world_size": self.world_size,
            "reference": self.reference,
            "tensors": self.tensors,
            "bytes_per_rank": self.bytes_per_rank,
            "mismatches": [
                {"name": m.name, "agree": list(m.agree), "differ": list(m.differ)}
                for m in self.mismatches
            ],
            "structure": list(self.structure),
            "skipped": list(self.skipped),
        }

    def __str__(self) -> str:
        head = (
            f"check_replicas: {self.world_size} ranks, {self.tensors} tensors compared with "
            f"rank {self.reference} ({self.bytes_per_rank} bytes sent per rank)"
        )
        if self.ok:
            lines = [f"{head}: all bit-identical"]
        else:
            lines = [f"{head}: REPLICAS DIFFER"]
            lines += [f"  structure: {s}" for s in self.structure]
            if self.mismatches:
                lines.append(
                    f"  {len(self.mismatches)} tensor(s) differ, on rank(s) "
                    f"{list(self.differing_ranks)}:"
                )
            lines += [
                f"    {m.name}: ranks {list(m.differ)} differ from rank {self.reference} "
                f"(same bits: ranks {list(m.agree)})"
                for m in self.mismatches
            ]
        if self.skipped:
            lines.append(f"  skipped (sharded, not replicas): {', '.join(self.skipped)}")
        return "\n".join(lines)


def _named_tensors(obj: Any) -> list[tuple[str, Any]]:
    import torch

    if isinstance(obj, torch.nn.Module):
        return [*obj.named_parameters(), *obj.named_buffers()]
    if isinstance(obj, torch.Tensor):
        items: list[tuple[str, Any]] = [("tensor", obj)]
    elif isinstance(obj, Mapping):
        items = [(str(k), v) for k, v in obj.items()]
    elif isinstance(obj, Iterable):
        items = []
        for i, item in enumerate(obj):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                items.append(item)
            else:
                items.append((str(i), item))
    else:
        raise TypeError(
            "check_replicas takes an nn.Module, a tensor, a dict of tensors (a state_dict) or "
            f"an iterable of tensors or (name, tensor) pairs, got {type(obj).__name__}"
        )
    for name, value in items:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"check_replicas: {name!r} is a {type(value).__name__}, not a tensor")
    return items


def _replicated(t: Any) -> Any | None:
    """The local tensor to compare, or ``None`` for a sharded DTensor (not a replica)."""
    placements = getattr(t, "placements", None)
    if placements is None or not hasattr(t, "to_local"):
        return t
    if all(p.is_replicate() for p in placements):
        return t.to_local()
    return None


def _fingerprint(t: Any) -> bytes:
    """16 bytes: :func:`seedlock.audit.fingerprint` of the tensor's exact bits, dtype and shape
    (xxh3-128 at memory speed with the ``xxhash`` package, else SHA-256; on an accelerator,
    computed on the device with one small transfer)."""
    from seedlock.audit.fingerprints import fingerprint

    return bytes.fromhex(fingerprint(t))


def _structure(entries: list[tuple[str, str, tuple[int, ...]]]) -> bytes:
    from seedlock.audit.fingerprints import ALGORITHM

    # The hash is part of the structure: a rank without xxhash fingerprints with SHA-256, and
    # its tensors would otherwise all look different instead of the setups.
    h = hashlib.sha256(ALGORITHM.encode() + b"\n")
    for name, dtype, shape in entries:
        h.update(f"{name}\0{dtype}\0{shape}\n".encode())
    return len(entries).to_bytes(8, "little") + h.digest()[:_DIGEST]


def check_replicas(
    module_or_tensors: Any, group: Any = None, raise_on_mismatch: bool = False
) -> ReplicaReport:
    """Are the parameters and buffers bit-identical on every rank? Which tensors differ, where?

    Every rank hashes each tensor locally (:func:`_fingerprint`: 16 bytes of xxh3-128, or
    SHA-256 without ``xxhash``, over its dtype, shape and exact bits) and all-gathers the
    fingerprints, never the tensors: each rank sends 16 bytes per tensor (+ 24), whatever the
    model size. All ranks of ``group`` (default:
    every rank) must call it; all get the same :class:`ReplicaReport`. With
    ``raise_on_mismatch=True`` a difference raises :class:`ReplicaMismatchError` on every rank.

    ``module_or_tensors``: an ``nn.Module`` (its ``named_parameters()`` then
    ``named_buffers()``), a ``state_dict``-like mapping, a tensor, or an iterable of tensors or
    ``(name, tensor)`` pairs. DTensors are compared through their local tensor when replicated
    and skipped when sharded (FSDP shards differ by design).

    >>> report = seedlock.distributed.check_replicas(ddp_model)
    >>> report.ok, [(m.name, m.differ) for m in report.mismatches]
    (False, [('module.fc1.weight', (1,))])
    """
    items = _named_tensors(module_or_tensors)
    skipped = []
    entries: list[tuple[str, str, tuple[int, ...]]] = []
    prints: list[bytes] = []
    for name, tensor in items:
        local = _replicated(tensor)
        if local is None:
            skipped.append(name)
            continue
        entries.append((name, str(local.dtype), tuple(local.shape)))
        prints.append(_fingerprint(local))
    header = _structure(entries)
    payload = b"".join(prints)

    dist = _group_initialised()
    if dist is None:
        if world_size() > 1:
            _require_dist("check_replicas")
        report = ReplicaReport(1, rank(), len(entries), 0, skipped=tuple(skipped))
    else:
        ranks = _group_ranks(dist, group)
        device = _device(dist, group)
        headers = _all_gather_bytes(dist, header, group, device)
        if all(h == headers[0] for h in headers):
            gathered = _all_gather_bytes(dist, payload, group, device) if payload else []
            per_rank = [[g[i : i + _DIGEST] for i in range(0, len(g), _DIGEST)] for g in gathered]
            mismatches = _compare([e[0] for e in entries], per_rank, ranks)
            report = ReplicaReport(
                len(ranks), ranks[0], len(entries), _HEADER + len(payload), mismatches,
                skipped=tuple(skipped),
            )  # fmt: skip
        else:
            report = _structure_report(
                dist, group, ranks, entries=entries, prints=prints, skipped=skipped
            )
    if raise_on_mismatch and not report.ok:
        raise ReplicaMismatchError(report)
    return report


def _compare(
    names: list[str], per_rank: list[list[bytes]], ranks: list[int]
) -> tuple[TensorMismatch, ...]:
    mismatches = []
    for i, name in enumerate(names):
        reference = per_rank[0][i]
        if all(prints[i] == reference for prints in per_rank):
            continue
        agree = tuple(r for r, fps in zip(ranks, per_rank, strict=True) if fps[i] == reference)
        differ = tuple(r for r in ranks if r not in agree)
        mismatches.append(TensorMismatch(name, agree, differ))
    return tuple(mismatches)


def _listing(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _structure_report(
    dist: Any,
    group: Any,
    ranks: list[int],
    *,
    entries: list[tuple[str, str, tuple[int, ...]]],
    prints: list[bytes],
    skipped: list[str],
) -> ReplicaReport:
    """The rare path: ranks hold different tensor lists. Names, dtypes, shapes and fingerprints
    travel as objects, and the tensors every rank has are still compared."""
    from seedlock.audit.fingerprints import ALGORITHM

    mine = [(*entry, fp) for entry, fp in zip(entries, prints, strict=True)]
    gathered: list[Any] = [None] * len(ranks)
    dist.all_gather_object(gathered, (ALGORITHM, mine), group=group)
    hashes = [h for h, _ in gathered]
    if len(set(hashes)) > 1:  # the fingerprints cannot be compared at all
        first = hashes[0]
        notes = [f"rank {r} fingerprints with {h}, rank {ranks[0]} with {first}: install the "
                 "same seedlock extras (xxhash) on every rank"
                 for r, h in zip(ranks[1:], hashes[1:], strict=True) if h != first]  # fmt: skip
        return ReplicaReport(
            len(ranks), ranks[0], len(entries), _HEADER, (), tuple(notes), tuple(skipped)
        )
    tables = [{name: (dtype, shape, fp) for name, dtype, shape, fp in g} for _, g in gathered]
    reference = tables[0]
    structure = []
    for r, table in zip(ranks[1:], tables[1:], strict=True):
        missing = [n for n in reference if n not in table]
        extra = [n for n in table if n not in reference]
        other = [n for n in reference if n in table and table[n][:2] != reference[n][:2]]
        if missing:
            structure.append(f"rank {r} lacks {len(missing)} tensor(s): {_listing(missing)}")
        if extra:
            structure.append(f"rank {r} has {len(extra)} extra tensor(s): {_listing(extra)}")
        for n in other[:5]:
            structure.append(
                f"rank {r}: {n} is {table[n][0]} {list(table[n][1])}, rank {ranks[0]} has "
                f"{reference[n][0]} {list(reference[n][1])}"
            )
        if len(other) > 5:
            structure.append(f"rank {r}: {len(other) - 5} more dtype / shape differences")
    common = [
        n for n in reference if all(n in t and t[n][:2] == reference[n][:2] for t in tables[1:])
    ]
    per_rank = [[t[n][2] for n in common] for t in tables]
    return ReplicaReport(
        len(ranks),
        ranks[0],
        len(entries),
        # all_gather_object serialises the listing itself; count its payload (seedlock imports no
        # pickle anywhere): names, dtypes, shapes and fingerprints.
        _HEADER
        + sum(len(n.encode()) + len(d) + 8 * len(shape) + len(fp) for n, d, shape, fp in mine),
        _compare(common, per_rank, ranks),
        tuple(structure),
        tuple(skipped),
    )


# -- sync_state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_state` copied from rank ``src`` to every rank."""

    src: int
    #: The backends whose global generators were synchronised (empty when they are rank-local).
    globals: tuple[str, ...]
    #: The registered generators that were synchronised (every shared one).
    generators: tuple[str, ...]
    #: The registered generators left as they were (rank-local, or named in ``exclude``).
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

    >>> seedlock.distributed.sync_state()        # e.g. after rank 0 alone ran a validation pass
    """
    from seedlock.seeding import globals_per_rank
    from seedlock.state import RNGState, capture, restore
    from seedlock.streams import rank_local_names

    dist = _require_dist("sync_state")
    ranks = _group_ranks(dist, group)
    if src not in ranks:
        raise ValueError(f"src must be a global rank of the group {ranks}, got {src!r}")
    here = dist.get_rank()
    local = capture()
    kept = rank_local_names() | set(exclude)
    share_globals = not globals_per_rank()
    mine: dict[str, Any] = {
        "share_globals": share_globals,
        "backends": local.backends if share_globals else {},
        "generators": {n: e for n, e in local.generators.items() if n not in kept},
    }
    box: list[Any] = [mine if here == src else None]
    dist.broadcast_object_list(box, src=src, group=group, device=_device(dist, group))
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
                sent["backends"] if share_globals else local.backends,
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


# -- checkpoints ------------------------------------------------------------------------------


class PerRankState:
    """This rank's seedlock RNG state (and any ``Stateful`` you add) as one checkpoint entry.

    Speaks the ``Stateful`` protocol, so it goes into ``torch.distributed.checkpoint`` as is;
    ``state_dict()`` is ``{"world_size": W, "rank<r>": {"rng": seedlock.state_dict(),
    <name>: obj.state_dict(), ...}}`` — the rank in the key, because DCP writes one copy of
    entries that have the same key on every rank. The same dict goes into a plain per-rank file::

        state = seedlock.distributed.PerRankState(loader=train_loader)
        dcp.save({"model": ..., "seedlock": state}, checkpoint_id="ckpt/step-100")
        dcp.load({"model": ..., "seedlock": state}, checkpoint_id="ckpt/step-100")
        # or
        path = seedlock.distributed.rank_path("ckpt/step-100.pt")     # ckpt/step-100-rank1.pt
        torch.save({"model": ..., "seedlock": state.state_dict()}, path)
        state.load_state_dict(torch.load(path, weights_only=True)["seedlock"])

    ``load_state_dict`` checks everything before changing anything: the world size (another
    one raises :class:`WorldSizeMismatchError`), that the entry is this rank's (a file of
    another rank raises), the same names, then the RNG state (validated by
    :func:`seedlock.load_state_dict`); if an added object refuses its state, everything loaded
    so far is put back. Under DCP a job with *more* ranks fails inside ``dcp.load`` instead,
    which names the missing ``rank<r>`` key.
    """

    def __init__(self, *, rng: bool = True, **stateful: Any) -> None:
        for name, obj in stateful.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(
                    f"{name}= must have state_dict() and load_state_dict() (the Stateful "
                    f"protocol), got {type(obj).__name__}"
                )
        if not rng and not stateful:
            raise ValueError("nothing to hold: rng=False and no Stateful object given")
        self.rng = rng
        self.stateful = dict(stateful)

    def state_dict(self) -> dict[str, Any]:
        from seedlock.state import state_dict

        entry: dict[str, Any] = {"rng": state_dict()} if self.rng else {}
        for name, obj in self.stateful.items():
            entry[name] = obj.state_dict()
        return {"world_size": world_size(), f"rank{rank()}": entry}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from seedlock.state import capture, load_state_dict, restore

        here, size = rank(), world_size()
        saved = state.get("world_size") if isinstance(state, Mapping) else None
        if not isinstance(saved, int):
            raise StateMismatchError(
                [f"not a PerRankState state dict (no int 'world_size'): {_keys(state)}"]
            )
        if saved != size:
            raise WorldSizeMismatchError(
                f"this state was saved by a job of {saved} rank(s), this job has {size}: "
                "per-rank RNG streams and each rank's share of the data cannot be redistributed "
                f"exactly; resume with the same number of ranks ({saved})"
            )
        entry = state.get(f"rank{here}")
        if not isinstance(entry, Mapping):
            owners = sorted(k for k in state if k.startswith("rank"))
            raise StateMismatchError(
                [f"no state for rank {here} here (it holds {owners}): a file of another rank?"]
            )
        expected = {"rng"} if self.rng else set()
        expected |= set(self.stateful)
        if set(entry) != expected:
            raise StateMismatchError(
                [
                    f"rank {here}: the state holds {sorted(entry)}, this PerRankState holds "
                    f"{sorted(expected)}"
                ]
            )
        before = capture() if self.rng else None
        snapshots = {name: obj.state_dict() for name, obj in self.stateful.items()}
        if self.rng:
            load_state_dict(dict(entry["rng"]))
        done: list[str] = []
        try:
            for name, obj in self.stateful.items():
                obj.load_state_dict(entry[name])
                done.append(name)
        except BaseException:
            for name in done:
                self.stateful[name].load_state_dict(snapshots[name])
            if before is not None:
                restore(before)
            raise


def _keys(value: object) -> str:
    if isinstance(value, Mapping):
        return f"keys {sorted(map(str, value))[:6]}"
    return type(value).__name__
