"""The data pipeline: per-sample seeding, a resumable sampler and loader (needs torch).

>>> import seedlock, seedlock.data
>>> seedlock.seed_everything(0)
>>> train = seedlock.data.loader(dataset, batch_size=32, shuffle=True, num_workers=4)
"""

from __future__ import annotations

from seedlock.data.loader import SeedlockDataLoader, loader
from seedlock.data.sampler import ResumableSampler
from seedlock.data.samples import SeededDataset, find_generators, sample_generator, sample_rng

__all__ = [
    "ResumableSampler",
    "SeededDataset",
    "SeedlockDataLoader",
    "find_generators",
    "loader",
    "sample_generator",
    "sample_rng",
]
