"""The data pipeline: per-sample seeds, and a loader that resumes mid-epoch exactly (needs torch).

Guarantees: a sample's randomness depends only on ``(root, epoch, index)``, not on the workers;
an epoch's order only on ``(root, epoch)``; a resumed loader delivers exactly the batches an
uninterrupted one would have.

Modules: ``_samples`` (seeding each sample from ``(root, epoch, index)``), ``_sampler`` (the
order of an epoch, and the one cursor in it), ``_feistel`` (an order computed per position),
``_elastic`` (a state in global samples, for another number of ranks), ``_batches`` and
``_loader`` (the DataLoader of a map-style dataset), ``_shards``, ``_producer`` and ``_stream``
(the loader of an iterable dataset: its shards, its workers, its order). The guide:
``docs/data.md``.

>>> seedlock.seed_everything(0)
>>> train = seedlock.data.loader(dataset, batch_size=32, shuffle=True, num_workers=4)
"""

from __future__ import annotations

from seedlock.data._loader import SeedlockDataLoader, loader
from seedlock.data._sampler import ResumableSampler
from seedlock.data._samples import SeededDataset, find_generators, sample_generator, sample_rng
from seedlock.data._shards import ShardedIterable, sharded
from seedlock.data._stream import SeedlockStreamLoader

__all__ = [
    "ResumableSampler",
    "SeededDataset",
    "SeedlockDataLoader",
    "SeedlockStreamLoader",
    "ShardedIterable",
    "find_generators",
    "loader",
    "sample_generator",
    "sample_rng",
    "sharded",
]
