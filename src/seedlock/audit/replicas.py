"""Are the replicas of a data-parallel job identical? Compare every rank's tensors by fingerprint.

``check_replicas`` compares every rank's parameters and buffers and names the tensors and ranks
that differ.

A collective: every rank of the group calls it and gets the same :class:`ReplicaReport`. Only
16-byte fingerprints travel (:func:`seedlock.audit.fingerprint`), never the tensors. The guide:
``docs/audit.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from seedlock._collectives import all_gather_bytes, collective_device, group_ranks, require_group
from seedlock._ranks import initialised_group, rank, world_size
from seedlock.audit import fingerprints
from seedlock.audit._device_hash import local_shard

__all__ = ["ReplicaMismatchError", "ReplicaReport", "TensorMismatch", "check_replicas"]

_DIGEST = 16  # bytes per tensor fingerprint
_HEADER = 8 + _DIGEST  # tensor count + digest of (name, dtype, shape) of every tensor


class ReplicaMismatchError(RuntimeError):
    """:func:`check_replicas` with ``raise_on_mismatch=True`` found ranks that differ.

    Parameters
    ----------
    report
        What was found; kept as the attribute ``report``, and the message.
    """

    def __init__(self, report: ReplicaReport) -> None:
        self.report = report
        super().__init__(str(report))


@dataclass(frozen=True)
class TensorMismatch:
    """One tensor whose bits are not the same on every rank.

    Attributes
    ----------
    name
        The tensor's name (``module.fc1.weight``, a mapping's key, or its position).
    agree
        Global ranks whose bits equal the reference rank's (the reference included).
    differ
        Global ranks whose bits differ from the reference rank's.
    """

    name: str
    agree: tuple[int, ...]
    differ: tuple[int, ...]


@dataclass(frozen=True)
class ReplicaReport:
    """What :func:`check_replicas` found; the same report on every rank.

    ``print(report)`` explains it.

    Attributes
    ----------
    world_size
        The number of ranks compared (1 without a process group: nothing to compare).
    reference
        The global rank every other rank is compared with (the group's first member).
    tensors
        How many tensors this rank compared (the sharded ones left out).
    bytes_per_rank
        Bytes this rank contributed to the all-gathers (a ring all-gather forwards them
        ``world_size - 1`` times): 16 per tensor + 24, unless the structure differs.
    mismatches
        The tensors that differ, in the order given.
    structure
        The differences in names, dtypes or shapes (or in the fingerprint hash), in words.
    skipped
        The sharded tensors (DTensor with a ``Shard`` or ``Partial`` placement), which are not
        replicas by design.
    """

    world_size: int
    reference: int
    tensors: int
    bytes_per_rank: int
    mismatches: tuple[TensorMismatch, ...] = ()
    structure: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every tensor has the same name, dtype, shape and bits on every rank."""
        return not self.mismatches and not self.structure

    @property
    def differing_ranks(self) -> tuple[int, ...]:
        """Every rank that differs from the reference in at least one tensor."""
        return tuple(sorted({r for m in self.mismatches for r in m.differ}))

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data.

        Returns
        -------
        dict
            ``ok`` and the attributes, with each mismatch as a dict.
        """
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
    import torch  # loaded already: audit.fingerprints imports it

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
    local, placements = local_shard(t)
    if placements is None or all(p.is_replicate() for p in placements):
        return local
    return None


def _fingerprint(t: Any) -> bytes:
    """16 bytes: :func:`seedlock.audit.fingerprint` of the tensor's exact bits, dtype and shape
    (xxh3-128 at memory speed with the ``xxhash`` package, else SHA-256; on an accelerator,
    computed on the device with one small transfer)."""
    return bytes.fromhex(fingerprints.fingerprint(t))


def _structure(entries: list[tuple[str, str, tuple[int, ...]]]) -> bytes:
    # The hash is part of the structure: a rank without xxhash fingerprints with SHA-256, and
    # its tensors would otherwise all look different instead of the setups.
    h = hashlib.sha256(fingerprints.ALGORITHM.encode() + b"\n")
    for name, dtype, shape in entries:
        h.update(f"{name}\0{dtype}\0{shape}\n".encode())
    return len(entries).to_bytes(8, "little") + h.digest()[:_DIGEST]


def check_replicas(
    module_or_tensors: Any, group: Any = None, raise_on_mismatch: bool = False
) -> ReplicaReport:
    """Are the parameters and buffers bit-identical on every rank? Which tensors differ, where?

    Every rank hashes each tensor locally (:func:`seedlock.audit.fingerprint`: 16 bytes of
    xxh3-128, or SHA-256 without ``xxhash``, over its dtype, shape and exact bits) and
    all-gathers the fingerprints, never the tensors: each rank sends 16 bytes per tensor (+ 24),
    whatever the model size. A collective: all ranks of ``group`` must call it; all get the same
    :class:`ReplicaReport`.

    Parameters
    ----------
    module_or_tensors
        An ``nn.Module`` (its ``named_parameters()`` then ``named_buffers()``), a
        ``state_dict``-like mapping, a tensor, or an iterable of tensors or ``(name, tensor)``
        pairs. DTensors are compared through their local tensor when replicated and skipped
        when sharded (FSDP shards differ by design).
    group
        The process group; default ``None``: every rank.
    raise_on_mismatch
        Raise :class:`ReplicaMismatchError` on every rank when they differ; default ``False``.

    Returns
    -------
    ReplicaReport
        The same on every rank. In a single process without a process group, a report of one
        rank with nothing to compare.

    Raises
    ------
    TypeError
        ``module_or_tensors`` is none of the above, or holds something other than a tensor.
    RuntimeError
        ``WORLD_SIZE`` is above 1 but no process group is initialised.
    ReplicaMismatchError
        With ``raise_on_mismatch=True``, the replicas differ.

    Examples
    --------
    >>> report = seedlock.audit.check_replicas(ddp_model)
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

    dist = initialised_group()
    if dist is None:
        if world_size() > 1:
            require_group("seedlock.audit.check_replicas")
        report = ReplicaReport(1, rank(), len(entries), 0, skipped=tuple(skipped))
    else:
        ranks = group_ranks(dist, group)
        device = collective_device(dist, group)
        headers = all_gather_bytes(dist, header, group, device)
        if all(h == headers[0] for h in headers):
            gathered = all_gather_bytes(dist, payload, group, device) if payload else []
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
    mine = [(*entry, fp) for entry, fp in zip(entries, prints, strict=True)]
    gathered: list[Any] = [None] * len(ranks)
    dist.all_gather_object(gathered, (fingerprints.ALGORITHM, mine), group=group)
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
