"""What each worker of a stream loader runs: its slots' samples, in rounds, seeded per sample.

The order and the state: :mod:`seedlock.data._stream`. A worker sends ``(worker, rounds
covered, rows)`` items, each row ``(round, slot, ended, sample, point)``; the main process puts
the rounds together.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info
from torch.utils.data._utils import worker as _worker

from seedlock.data._samples import SeededDataset, _current
from seedlock.data._shards import Source
from seedlock.derivation import Seed

__all__ = ["DONE", "Job", "Producer", "Slot"]

DONE = math.inf  # what a worker that has sent its last round has covered


class Slot:
    """Where one slot stands: ``[samples taken, point, next round, ended]`` in a state."""

    __slots__ = ("ended", "offset", "point", "round")

    def __init__(self, offset: int = 0, point: Any = None, round: int = 0, ended: bool = False):
        self.offset, self.point, self.round, self.ended = offset, point, round, ended

    def saved(self) -> list[Any]:
        return [self.offset, self.point, self.round, self.ended]


class Job:
    """What the workers read in one epoch: the shards of this rank's slots, from where."""

    def __init__(self, epoch: int, shards: list[int], slots: list[Slot], count: int) -> None:
        self.epoch, self.shards, self.slots, self.count = epoch, shards, slots, count


class Producer(IterableDataset[Any]):
    """What each worker (or the main process) iterates: its slots' samples, in rounds."""

    def __init__(self, seeded: SeededDataset, sources: list[Source], rounds: int) -> None:
        self.seeded, self.sources, self.rounds = seeded, sources, rounds
        self.job: Job | None = None

    def __iter__(self) -> Iterator[tuple[int, float, list[tuple[Any, ...]]]]:
        # The job is read now, at iter() (a later iter() of the loader sets another one).
        job = self.job
        assert job is not None, "the loader sets the epoch's job before iterating"
        return self._run(job)

    def _run(self, job: Job) -> Iterator[tuple[int, float, list[tuple[Any, ...]]]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        plan, root = self.seeded._plan(), self.seeded.root
        seed = plan.seeding(job.epoch)
        mine = [
            j for j in range(len(job.shards)) if j % workers == worker and not job.slots[j].ended
        ]
        slots = {j: Slot(s.offset, s.point, s.round) for j in mine for s in [job.slots[j]]}
        with _kept(plan, info), _hidden_worker():
            opened = {j: self.sources[job.shards[j]].open(slots[j].point) for j in mine}
            for j in mine:  # a replayed shard reads again what it took, under the same seeds
                if self.sources[job.shards[j]].replay is not None:
                    for taken in range(slots[j].offset):
                        key = taken * job.count + job.shards[j]
                        self._fetch(opened[j], seed, root, job.epoch, key)
        now = min((slots[j].round for j in mine), default=0)
        if not mine:
            yield worker, DONE, []
        while mine:
            rows: list[tuple[Any, ...]] = []
            end = now + self.rounds
            with _kept(plan, info):
                while now < end and mine:
                    for j in list(mine):
                        slot = slots[j]
                        if slot.round != now:
                            continue  # resumed after this slot's sample of the round
                        key = slot.offset * job.count + job.shards[j]
                        try:
                            sample = self._fetch(opened[j], seed, root, job.epoch, key)
                        except StopIteration:
                            rows.append((now, j, True, None, None))
                            mine.remove(j)
                            continue
                        slot.offset, slot.round = slot.offset + 1, now + 1
                        rows.append((now, j, False, sample, self.sources[job.shards[j]].point()))
                    now += 1
            yield worker, (now if mine else DONE), rows if info is None else _packed(rows)

    @staticmethod
    def _fetch(samples: Iterator[Any], seed: Any, root: Seed, epoch: int, key: int) -> Any:
        """The next sample, fetched under the per-sample seeds of ``key``, with no worker info
        (see :func:`_hidden_worker`)."""
        token = _current.set([root, epoch, key, None, None])
        info, _worker._worker_info = _worker._worker_info, None
        try:
            seed(key)
            return next(samples)
        finally:
            _worker._worker_info = info
            _current.reset(token)


def _packed(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` with their samples' tensors moved into one buffer per dtype (as views of it).

    A worker sends each tensor's storage through shared memory on its own, which costs far
    more than the copy for small samples; views of one storage share it once. The samples keep
    their structure, shapes, dtypes and values.
    """
    found: list[torch.Tensor] = []
    for row in rows:
        _walk(row[3], found.append)
    sizes: dict[torch.dtype, int] = {}
    for tensor in found:
        sizes[tensor.dtype] = sizes.get(tensor.dtype, 0) + tensor.numel()
    buffers = {dtype: torch.empty(size, dtype=dtype) for dtype, size in sizes.items()}
    offsets = dict.fromkeys(sizes, 0)
    views: dict[int, torch.Tensor] = {}
    for tensor in found:
        start, size = offsets[tensor.dtype], tensor.numel()
        view = buffers[tensor.dtype][start : start + size]
        view.copy_(tensor.reshape(-1))
        views[id(tensor)] = view.view(tensor.shape)
        offsets[tensor.dtype] = start + size
    return [(*row[:3], _walk(row[3], None, views), row[4]) for row in rows]


def _walk(value: Any, found: Any, views: dict[int, torch.Tensor] | None = None) -> Any:
    """Collect the plain CPU tensors in ``value`` (``found``), or put ``views`` in their place;
    lists, tuples and dicts are looked through."""
    if type(value) is torch.Tensor:
        if value.layout != torch.strided or value.requires_grad or value.device.type != "cpu":
            return value
        if views is None:
            found(value)
            return value
        return views[id(value)]
    if type(value) in (list, tuple):
        return type(value)(_walk(item, found, views) for item in value)
    if type(value) is dict:
        return {key: _walk(item, found, views) for key, item in value.items()}
    return value


@contextlib.contextmanager
def _kept(plan: Any, worker: Any) -> Iterator[None]:
    """In the main process (``worker`` is ``None``), the caller's global generators are put
    back on the way out: reading the stream never shifts the training loop's streams."""
    saved = [(load, save()) for save, load in plan.snapshots] if worker is None else ()
    try:
        yield
    finally:
        for load, state in saved:
            load(state)


@contextlib.contextmanager
def _hidden_worker() -> Iterator[None]:
    """``get_worker_info()`` is ``None`` inside: a dataset that splits itself across workers
    (as torch's docs suggest) reads its whole shard, since seedlock assigns the shards."""
    info, _worker._worker_info = _worker._worker_info, None
    try:
        yield
    finally:
        _worker._worker_info = info
