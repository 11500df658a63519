"""What the trainer integrations share: every rank's RNG state in the one file a framework writes
from rank 0, and a framework's plain ``DataLoader`` rebuilt as a seedlock loader.

The saved form is :class:`seedlock.distributed.PerRankState`'s, merged over the ranks:
``{"version": 1, "world_size": W, "rank0": {...}, "rank1": {...}, ...}``. Each rank's
``PerRankState.load_state_dict`` takes its own entry from it and refuses another world size.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)
from torch.utils.data.distributed import DistributedSampler

from seedlock._ranks import initialised_group
from seedlock.data import SeedlockDataLoader, SeedlockStreamLoader
from seedlock.distributed import PerRankState

__all__ = ["gather_ranks", "rebuild_loader", "why_not_rebuilt"]

# DataLoader arguments a rebuilt loader keeps as they were.
_KEPT = (
    "num_workers",
    "collate_fn",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


def gather_ranks(state: PerRankState) -> dict[str, Any]:
    """Every rank's entry of ``state`` in one dict (a collective when a process group is up:
    every rank calls it; the framework then writes the result from rank 0)."""
    mine = state.state_dict()
    dist = initialised_group()
    if dist is None or dist.get_world_size() == 1:
        return mine
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    merged: dict[str, Any] = {}
    for entry in everyone:
        merged.update(entry)
    return merged


def why_not_rebuilt(dataloader: Any) -> str | None:
    """Why ``dataloader`` cannot be rebuilt as a seedlock loader with the same batches' shape
    and the same kind of order; ``None`` when it can."""
    if isinstance(dataloader, SeedlockDataLoader):
        return None
    if isinstance(dataloader, SeedlockStreamLoader):
        return ("it reads an IterableDataset, and the trainer fetches one batch ahead of a loader "
                "without a length: the position it would save is one batch late")  # fmt: skip
    if isinstance(getattr(dataloader, "dataset", None), IterableDataset):
        return ("its dataset is an IterableDataset: build the loader with seedlock.data.loader "
                "(the dataset needs state_dict and load_state_dict)")  # fmt: skip
    if type(dataloader) is not DataLoader:
        return f"it is a {type(dataloader).__name__}, not a plain torch DataLoader"
    batch_sampler = dataloader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        return f"it has a custom batch_sampler ({type(batch_sampler).__name__})"
    sampler = dataloader.sampler
    if type(sampler) is RandomSampler and (sampler.replacement or sampler._num_samples):
        return "its RandomSampler draws with replacement or a fixed num_samples"
    if type(sampler) not in (RandomSampler, SequentialSampler, DistributedSampler):
        return f"it has a custom sampler ({type(sampler).__name__})"
    return None


def rebuild_loader(dataloader: Any, seed: Any = None) -> SeedlockDataLoader:
    """``dataloader`` as a seedlock loader: the same dataset, batch size, ``drop_last``, worker
    settings and collate function, shuffled when it was; the order and each sample's random
    numbers come from the root seed (or ``seed``). A ``DistributedSampler``'s split across
    ranks becomes the seedlock loader's own (see ``docs/data.md``).

    Raises
    ------
    TypeError
        ``dataloader`` cannot be rebuilt; the message says why.
    """
    if isinstance(dataloader, SeedlockDataLoader):
        return dataloader
    reason = why_not_rebuilt(dataloader)
    if reason is not None:
        raise TypeError(f"cannot rebuild the DataLoader as a seedlock loader: {reason}")
    sampler = dataloader.sampler
    shuffle = type(sampler) is RandomSampler or bool(getattr(sampler, "shuffle", False))
    kwargs = {name: getattr(dataloader, name) for name in _KEPT if hasattr(dataloader, name)}
    if dataloader.num_workers > 0:
        kwargs["prefetch_factor"] = dataloader.prefetch_factor
    else:
        kwargs.pop("persistent_workers", None)
    batch_size = dataloader.batch_size
    drop_last = dataloader.drop_last
    if type(sampler) is DistributedSampler:
        drop_last = drop_last or sampler.drop_last
    return SeedlockDataLoader(
        dataloader.dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        **kwargs,
    )
