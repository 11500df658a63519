"""The loader of an iterable dataset: shards read by workers, batches assembled in one order.

The guide: ``docs/data.md`` (iterable datasets). The shards and their contract:
:mod:`seedlock.data._shards`.

The order is a function of ``(root, epoch)`` and the shards, never of the workers:

* epoch ``e`` orders the shards (shuffled from ``derive("shards", e)`` with ``shuffle=True``)
  and rank ``r`` of ``W`` takes every ``W``-th from ``r``: its *slots*;
* the rank's stream takes one sample from each slot in turn (round ``0``: slot 0, 1, 2, ...;
  then round ``1``), a slot leaving the rotation when its shard ends; batches are consecutive
  samples of that stream.

Worker ``w`` of ``N`` reads the slots ``j`` with ``j % N == w``, a number of rounds at a time,
and sends each sample with its round, its slot, and the shard's point after it; the main process
puts the rounds together in slot order (a round is complete once every worker has sent past
it). So the batches are the same with any ``num_workers``, and a worker that has no slot (more
workers than shards) sends nothing.

While a shard is read, ``get_worker_info()`` returns ``None``: seedlock assigns the shards, so a
dataset that splits itself across workers (as torch's docs suggest for iterable datasets) must
read its whole shard, as in the main process.

Sample ``k`` of shard ``s`` (of ``S``) is fetched under the per-sample seeds of ``index = k * S +
s`` (see :mod:`seedlock.data._samples`): its randomness depends on the sample, not on the worker.

The state counts what the caller received: per slot, the samples taken, the shard's point after
the last one, its next round and whether it ended. Resuming opens each shard at its point, so
samples that workers had read past it are read again, in the same order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate, default_convert
from torch.utils.data._utils.pin_memory import pin_memory

from seedlock import _ranks
from seedlock.backends.checks import fields_problem, int_problem
from seedlock.data._producer import Job, Producer, Slot
from seedlock.data._sampler import check_state_version
from seedlock.data._samples import SeededDataset
from seedlock.data._shards import sources_of
from seedlock.derivation import Seed, derive
from seedlock.errors import CorruptStateError, WorldSizeMismatchError

__all__ = ["SeedlockStreamLoader"]

_STATE_VERSION = 1


def _pinnable() -> bool:
    """Whether pinned memory can be had: an accelerator is there (else ``pin_memory=True`` is
    ignored with a warning, as DataLoader does)."""
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.5
    available = accelerator.is_available() if accelerator else torch.cuda.is_available()
    if not available:
        warnings.warn(
            "pin_memory=True, but no accelerator is found: the batches are not pinned",
            UserWarning,
            stacklevel=4,
        )
    return bool(available)


def _as_is(item: Any) -> Any:
    return item


class SeedlockStreamLoader(DataLoader[Any]):
    """A DataLoader over an iterable dataset, exactly resumable; build it with
    :func:`seedlock.data.loader` (the module docstring says how it orders the samples).

    Parameters
    ----------
    dataset
        An ``IterableDataset`` with ``state_dict`` / ``load_state_dict`` (one shard), or one
        :func:`seedlock.data.sharded` made.
    batch_size
        Consecutive samples of the rank's stream per batch; ``None``: samples one by one.
    shuffle
        Shuffle the order of the shards each epoch (each shard keeps its own order).
    drop_last
        Drop the short last batch of each epoch.
    root
        The root of the shard order and the per-sample seeds.
    strict
        As for map-style datasets: refuse generator objects held by the dataset.
    collate_fn
        Makes a batch from a list of samples, in the main process; default: torch's. With
        ``batch_size=None`` it takes each sample (default: torch's ``default_convert``), as
        DataLoader's does.
    pin_memory
        Pin each batch's tensors.
    **kwargs
        DataLoader's ``num_workers``, ``prefetch_factor``, ``worker_init_fn``, ``timeout``,
        ``multiprocessing_context``.

    Attributes
    ----------
    root
        The root seed in use.

    Raises
    ------
    TypeError
        A dataset without ``state_dict`` / ``load_state_dict``.
    ValueError
        Fewer shards than ranks, ``persistent_workers=True``, a ``batch_size`` that is not an
        int >= 1 or ``None``, or an argument that only applies to map-style datasets.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int | None,
        shuffle: bool,
        root: Seed,
        strict: bool,
        drop_last: bool = False,
        collate_fn: Any = None,
        pin_memory: bool = False,
        **kwargs: Any,
    ) -> None:
        for name in ("sampler", "batch_sampler", "generator", "order", "global_batch_size"):
            if kwargs.pop(name, None) is not None:
                raise ValueError(
                    f"{name}= applies to map-style datasets; an iterable dataset's order is its "
                    "shards' (shuffle=True shuffles the shards)"
                )
        if kwargs.get("persistent_workers"):
            raise ValueError(
                "persistent_workers=True with an iterable dataset: workers would keep the first "
                "epoch's shard order and start point; leave it False"
            )
        sources = sources_of(dataset)
        self.ranks, self.rank = _ranks.world_size(), _ranks.rank()
        if len(sources) < self.ranks:
            raise ValueError(
                f"{len(sources)} shard(s) for {self.ranks} ranks: every rank needs at least one "
                "(split the data into at least as many shards as ranks)"
            )
        if batch_size is not None and (type(batch_size) is not int or batch_size < 1):
            raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
        # Not self.drop_last: DataLoader sets its own (False: it batches nothing here).
        self.root, self.shuffle, self._drop_last = root, shuffle, drop_last
        self.stream_batch_size = batch_size
        # As DataLoader: without batching, collate_fn (default: default_convert) takes a sample.
        default = default_collate if batch_size is not None else default_convert
        self._collate = default if collate_fn is None else collate_fn
        self._pin = pin_memory and _pinnable()
        self._count = len(sources)
        workers = max(1, int(kwargs.get("num_workers", 0) or 0))
        slots = len(range(self.rank, self._count, self.ranks))
        rounds = max(1, math.ceil((batch_size or 1) / max(1, slots // workers)))
        self._producer = Producer(SeededDataset(dataset, root=root, strict=strict), sources,
                                   rounds)  # fmt: skip
        generator = torch.Generator().manual_seed(derive("loader", root=root, bits=32))
        super().__init__(self._producer, batch_size=None, collate_fn=_as_is, generator=generator,
                         **kwargs)  # fmt: skip
        # Where the next iter() begins, and (while an epoch runs) where the caller is in it.
        self._next: tuple[int, list[Slot], int] = (0, self._fresh(), 0)
        self._now: tuple[int, list[Slot], int] | None = None
        self._token = 0  # which iteration may move the position: the latest one

    # -- the order -------------------------------------------------------------------------------
    def shards(self, epoch: int) -> list[int]:
        """The shards of this rank's slots in ``epoch``.

        Parameters
        ----------
        epoch
            An int >= 0.

        Returns
        -------
        list of int
            Positions in the dataset's shards, in slot order: every ``world_size``-th from this
            rank of the epoch's order (shuffled from ``derive("shards", epoch)`` with
            ``shuffle=True``).
        """
        order = list(range(self._count))
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive("shards", epoch, root=self.root,
                                                             bits=32))  # fmt: skip
            order = torch.randperm(self._count, generator=generator).tolist()
        return order[self.rank :: self.ranks]

    def _fresh(self) -> list[Slot]:
        return [Slot() for _ in range(len(range(self.rank, self._count, self.ranks)))]

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` starts (or resumes)."""
        return self._next[0]

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` start ``epoch`` from its beginning.

        While an iteration of ``epoch`` itself runs, nothing changes (trainers that call
        ``set_epoch(e)`` right after ``iter()`` started epoch ``e``).

        Parameters
        ----------
        epoch
            An int >= 0.
        """
        if self._now is not None and self._now[0] == epoch:
            return
        self._next, self._now = (epoch, self._fresh(), 0), None
        self._token += 1

    def __len__(self) -> int:
        raise TypeError("an iterable dataset's loader has no length: its shards are streams")

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        epoch, start, batches = self._next
        self._next = (epoch + 1, self._fresh(), 0)
        self._now = (epoch, start, batches)
        self._token += 1
        slots = [Slot(*s.saved()) for s in start]
        self._producer.job = Job(epoch, self.shards(epoch), slots, self._count)
        return self._deliver(epoch, slots, batches, self._token, super().__iter__())

    def _deliver(
        self, epoch: int, slots: list[Slot], batches: int, token: int, items: Iterator[Any]
    ) -> Iterator[Any]:
        workers = max(1, self.num_workers)
        active = [j for j, s in enumerate(slots) if not s.ended]
        now = min((slots[j].round for j in active), default=0)
        covered: list[float] = [now] * workers
        pending: dict[tuple[int, int], tuple[Any, ...]] = {}
        batch: list[Any] = []
        size = self.stream_batch_size or 1
        for worker, upto, rows in items:
            covered[worker] = upto
            for row in rows:
                pending[(row[0], row[1])] = row
            while active and min(covered) > now:
                for j in list(active):
                    slot = slots[j]
                    if slot.round != now:
                        continue
                    _, _, ended, sample, point = pending.pop((now, j))
                    if ended:
                        slot.ended = True
                        active.remove(j)
                        continue
                    slot.offset, slot.point, slot.round = slot.offset + 1, point, now + 1
                    batch.append(sample)
                    if len(batch) == size:
                        batches += 1
                        yield self._made(batch, token, epoch, slots, batches)
                        batch = []
                now += 1
        if batch and not self._drop_last:
            yield self._made(batch, token, epoch, slots, batches + 1)
        if token == self._token:
            self._now = None  # the epoch is over: the next iter() starts the next one

    def _made(
        self, batch: list[Any], token: int, epoch: int, slots: list[Slot], batches: int
    ) -> Any:
        """The batch of ``batch``'s samples; the position moves to after it (for the latest
        iteration only)."""
        if token == self._token:
            self._now = (epoch, [Slot(*s.saved()) for s in slots], batches)
        made = self._collate(batch[0] if self.stream_batch_size is None else batch)
        return pin_memory(made) if self._pin else made  # type: ignore[no-untyped-call]

    # -- Stateful --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where to resume, counted in what the caller received.

        Returns
        -------
        dict
            ``{"version": 1, "epoch": e, "batches": b, "shards": [[taken, point, round,
            ended], ...]}`` (plus ``"world_size"`` above 1 rank): the epoch in progress (or the
            next), the batches of it delivered, and per slot of this rank the samples taken
            from its shard, the shard's point after the last (``None`` for a shard seedlock
            replays), its next round and whether it ended.
        """
        epoch, slots, batches = self._next if self._now is None else self._now
        state: dict[str, Any] = {"version": _STATE_VERSION, "epoch": epoch, "batches": batches,
                                 "shards": [s.saved() for s in slots]}  # fmt: skip
        if self.ranks > 1:
            state["world_size"] = self.ranks
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next ``iter()`` continue right after the last delivered batch.

        Parameters
        ----------
        state
            What :meth:`state_dict` returned, with any ``num_workers`` then and now.

        Raises
        ------
        seedlock.errors.CorruptStateError
            Not a state this loader writes (another number of shards, a malformed entry).
        seedlock.errors.StateVersionError
            A newer seedlock wrote it.
        seedlock.errors.WorldSizeMismatchError
            Another number of ranks saved it. In every case nothing changes.
        """
        check_state_version(state, "loader state", _STATE_VERSION)
        keys = ("version", "epoch", "batches", "shards") + ("world_size",) * ("world_size" in state)
        problems = fields_problem(state, keys, "loader state")
        if not problems:
            problems += int_problem("epoch", state["epoch"], 0, 2**63 - 1)
            problems += int_problem("batches", state["batches"], 0, 2**63 - 1)
            problems += int_problem("world_size", state.get("world_size", 1), 1, 2**31 - 1)
        if not problems and state.get("world_size", 1) != self.ranks:
            raise WorldSizeMismatchError(
                f"this loader state was saved by {state.get('world_size', 1)} rank(s), this "
                f"loader reads its shards on {self.ranks}: resume with the same number"
            )
        slots = [] if problems else self._slots_of(state["shards"], state["epoch"], problems)
        if problems:
            raise CorruptStateError("; ".join(problems))
        self._next, self._now = (state["epoch"], slots, state["batches"]), None
        self._token += 1

    def _slots_of(self, saved: Any, epoch: int, problems: list[str]) -> list[Slot]:
        """The slots of a state's ``"shards"``, or ``[]`` with what is wrong in ``problems``."""
        count = len(self._fresh())
        if not isinstance(saved, list) or len(saved) != count:
            problems.append(f"shards must be a list of {count} entries (this rank's shards)")
            return []
        slots, shards = [], self.shards(epoch)
        for j, entry in enumerate(saved):
            where = f"shards[{j}]"
            if not (isinstance(entry, list) and len(entry) == 4):
                problems.append(f"{where} must be [taken, point, round, ended]")
                continue
            offset, point, round_, ended = entry
            problems += int_problem(f"{where} taken", offset, 0, 2**63 - 1)
            problems += int_problem(f"{where} round", round_, 0, 2**63 - 1)
            if type(ended) is not bool:
                problems.append(f"{where} ended must be a bool")
            if point is not None and self._producer.sources[shards[j]].replay is not None:
                problems.append(f"{where} point must be None (seedlock replays this shard)")
            slots.append(Slot(offset, point, round_, ended))
        return slots
