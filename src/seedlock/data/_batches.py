"""The batches of a map-style loader's epoch, and the count of those its caller received.

:class:`EpochBatches` is the loader's batch sampler: ``(epoch, index)`` pairs from the epoch
and start the loader sets. :class:`Delivered` wraps the DataLoader's iterator and moves the
sampler's cursor by what reaches the caller, which is what a state dict records.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from torch.utils.data import Sampler

from seedlock.data._sampler import ResumableSampler

if TYPE_CHECKING:
    from seedlock.data._loader import SeedlockDataLoader

__all__ = ["Delivered", "EpochBatches"]


class EpochBatches(Sampler[Any]):
    """Batches of ``(epoch, index)`` pairs for the epoch and start the loader sets."""

    def __init__(self, sampler: ResumableSampler, batch_size: int | None, drop_last: bool) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = 0
        self.skip = 0

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        indices = self.sampler.indices(epoch)
        if self.batch_size is None:
            for index in indices[self.skip :]:
                yield (epoch, index)
            return
        size = self.batch_size
        # Streamed, not sliced per batch: a lazy order (order="feistel") then computes its
        # indices in growing blocks, not one small block per batch.
        rest = iter(indices[self.skip * size :])
        while batch := list(itertools.islice(rest, size)):
            if len(batch) < size and self.drop_last:
                return
            yield [(epoch, index) for index in batch]

    def __len__(self) -> int:
        n = len(self.sampler)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


class Delivered:
    """Wraps the DataLoader's iterator and counts what reaches the caller."""

    def __init__(self, owner: SeedlockDataLoader, inner: Iterator[Any], token: int) -> None:
        self._owner = owner
        self._inner = inner
        self._token = token
        self._delivered = owner._skip_at_start

    def __iter__(self) -> Delivered:
        return self

    def __next__(self) -> Any:
        cursor = self._owner.resumable_sampler.cursor
        try:
            batch = next(self._inner)
        except StopIteration:
            cursor.finish(self._token)
            raise
        self._delivered += 1
        cursor.advance(self._token, self._owner._samples_in_batch(self._delivered))
        return batch

    def __len__(self) -> int:
        return len(self._owner) - self._owner._skip_at_start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
