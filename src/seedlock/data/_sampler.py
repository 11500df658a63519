"""A resumable, self-advancing, rank-aware sampler.

The shuffle order of epoch ``e`` is a pure function of ``(root, e)``: a permutation drawn with a
CPU ``torch.Generator`` seeded with ``derive("sampler", e, bits=32)``. Nothing is drawn from the
global torch RNG (``RandomSampler(generator=None)`` draws from it every epoch), and resuming at
any position costs one permutation, whatever the position.

Each ``iter()`` starts the next epoch by itself (``DistributedSampler`` repeats the same order
forever when ``set_epoch`` is forgotten); ``set_epoch`` still works.

Across ranks it partitions exactly like ``torch.utils.data.DistributedSampler``: without
``drop_last`` the permutation is padded with its own first indices up to a multiple of the world
size; with ``drop_last`` the tail is dropped; rank ``r`` takes every ``world``-th index from ``r``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Sampler

from seedlock.backends.checks import fields_problem, int_problem
from seedlock.derivation import Seed, check_seed, derive, get_root
from seedlock.errors import CorruptStateError

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Indices of a map-style dataset, shuffled per epoch from the root seed; resumable in O(1).

    ``state_dict()`` is ``{"epoch", "position"}``: the epoch in progress (or next) and how many
    of this rank's indices were yielded. The sampler holds the one cursor of the data order:
    :func:`seedlock.data.loader` reads and moves it (counting delivered batches itself, which is
    what makes its resume exact under worker prefetching), so ``set_epoch`` and
    ``load_state_dict`` on the sampler move the loader too.
    """

    def __init__(
        self,
        data_source: Sized | int,
        *,
        shuffle: bool = True,
        seed: Seed | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        epoch: int = 0,
    ) -> None:
        self.size = data_source if isinstance(data_source, int) else len(data_source)
        if self.size < 0:
            raise ValueError(f"the dataset size must be >= 0, got {self.size}")
        from seedlock import distributed

        self.num_replicas = distributed.world_size() if num_replicas is None else num_replicas
        self.rank = distributed.rank() if rank is None else rank
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(
                f"rank must be in [0, num_replicas), got rank {self.rank} of {self.num_replicas}"
            )
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = None if seed is None else check_seed(seed)
        self._next_epoch = epoch
        self._epoch = epoch
        self._position = 0
        self._start = 0

    # -- the order ---------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """How many indices this rank gets per epoch."""
        if self.drop_last and self.size % self.num_replicas:
            return math.ceil((self.size - self.num_replicas) / self.num_replicas)
        return math.ceil(self.size / self.num_replicas)

    def indices(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch``, in order: a pure function of (root, epoch)."""
        if self.shuffle:
            root = get_root() if self.seed is None else self.seed
            generator = torch.Generator().manual_seed(derive("sampler", epoch, root=root, bits=32))
            order: list[int] = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        total = self.num_samples * self.num_replicas
        if len(order) < total:  # pad with the order's own head, as DistributedSampler does
            padding = total - len(order)
            repeats = math.ceil(padding / len(order)) if order else 0
            order += (order * repeats)[:padding]
        else:
            order = order[:total]
        return order[self.rank : total : self.num_replicas]

    # -- the Sampler protocol -------------------------------------------------------------------
    def __iter__(self) -> Iterator[int]:
        epoch, start = self._next_epoch, self._start
        self._next_epoch, self._start = epoch + 1, 0
        self._epoch, self._position = epoch, start
        for index in self.indices(epoch)[start:]:
            self._position += 1
            yield index

    def __len__(self) -> int:
        return self.num_samples

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will use."""
        return self._next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` use ``epoch`` from its start (DistributedSampler
        compatible)."""
        self._next_epoch, self._start, self._position = epoch, 0, 0

    # -- Stateful ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "position"}``: where a new ``iter()`` resumes after ``load_state_dict``
        (right after a ``load_state_dict``, what was loaded)."""
        if 0 < self._position < self.num_samples and self._epoch == self._next_epoch - 1:
            return {"epoch": self._epoch, "position": self._position}
        return {"epoch": self._next_epoch, "position": self._start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next ``iter()`` continue at ``state``'s position (a
        :class:`~seedlock.errors.CorruptStateError` for anything else than what
        :meth:`state_dict` returns, and nothing changes)."""
        problems = fields_problem(state, ("epoch", "position"), "sampler state")
        if not problems:
            problems += int_problem("epoch", state["epoch"], 0, 2**63 - 1)
            problems += int_problem("position", state["position"], 0, self.num_samples)
        if problems:
            raise CorruptStateError("; ".join(problems))
        self._next_epoch, self._start = state["epoch"], state["position"]
        self._epoch, self._position = state["epoch"], 0
