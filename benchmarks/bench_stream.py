#!/usr/bin/env python
"""What the loader of an iterable dataset costs: throughput and resume against a plain DataLoader.

    python benchmarks/bench_stream.py [--repeats N] [--quick]

Measures, side by side in one run, over 8 shards of 768 samples (3x64x64 float images made
from the sample's number, with a random crop offset from ``random``, a flip from ``np.random``
and noise from the torch global RNG):

1. Samples per second over one epoch, batch 32, with ``num_workers=2`` and ``0``, timed from
   the first batch to the last (the start-up is row 2's first line):

   * seedlock: ``seedlock.data.loader(seedlock.data.sharded(shards), ...)``: shards assigned
     to workers by slot, each sample seeded from its shard and offset, batches assembled and
     collated in the main process in one order for any number of workers;
   * plain: a ``torch.utils.data.IterableDataset`` that gives worker ``w`` the shards
     ``w, w + N, ...`` (what torch's docs suggest), batched in the workers by a plain
     ``DataLoader``: its batches depend on the number of workers and it cannot resume.

2. Time to the first batch after resuming at batch k = 0 and k = 80 (of 192) with
   ``num_workers=2``: seedlock loads its state and reads again, under the same seeds, what the
   replayed shards had given (a Stateful shard would seek instead); the plain loader can only
   replay and discard k batches. Every resume is checked against the uninterrupted epoch.

Each repeat runs every variant, in an order shuffled per repeat (fixed shuffle seed).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

import seedlock
import seedlock.data

SHARDS, PER_SHARD, BATCH, SIDE = 8, 768, 32, 64
RESUME_AT = (0, 80)


def sample(shard: int, k: int) -> torch.Tensor:
    """Sample ``k`` of ``shard``: an augmented 3x64x64 image."""
    base = torch.full((3, SIDE + 8, SIDE + 8), float(shard * PER_SHARD + k) / 1000)
    dx, dy = random.randrange(8), random.randrange(8)
    image = base[:, dy : dy + SIDE, dx : dx + SIDE]
    if np.random.random() < 0.5:
        image = image.flip(2)
    return image + torch.randn(3, SIDE, SIDE) * 0.1


def shard(s: int) -> Callable[[], Iterator[torch.Tensor]]:
    def read() -> Iterator[torch.Tensor]:
        for k in range(PER_SHARD):
            yield sample(s, k)

    return read


class PlainStream(IterableDataset[torch.Tensor]):
    """Splits its shards across workers by ``get_worker_info()``."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for s in range(worker, SHARDS, workers):
            yield from shard(s)()


def seedlock_loader(workers: int) -> Any:
    seedlock.seed_everything(0)
    data = seedlock.data.sharded([shard(s) for s in range(SHARDS)])
    return seedlock.data.loader(data, batch_size=BATCH, num_workers=workers)


def plain_loader(workers: int) -> DataLoader[torch.Tensor]:
    torch.manual_seed(0)
    return DataLoader(PlainStream(), batch_size=BATCH, num_workers=workers)


def epoch_seconds(make: Callable[[int], Any], workers: int) -> float:
    """Seconds from the first batch to the last (the first batch's samples left out)."""
    batches = iter(make(workers))
    count = len(next(batches))
    start = time.perf_counter()
    count += sum(len(batch) for batch in batches)
    elapsed = time.perf_counter() - start
    assert count == SHARDS * PER_SHARD, count
    return elapsed


def seedlock_resume(k: int, reference: list[torch.Tensor]) -> float:
    loader = seedlock_loader(2)
    state = seedlock_state(k)
    start = time.perf_counter()
    loader.load_state_dict(state)
    first = next(iter(loader))
    elapsed = time.perf_counter() - start
    assert torch.equal(first, reference[k]), k
    return elapsed


_STATES: dict[int, dict[str, Any]] = {}


def seedlock_state(k: int) -> dict[str, Any]:
    """The state after k batches (made once, with no workers)."""
    if k not in _STATES:
        loader = seedlock_loader(0)
        batches = iter(loader)
        for _ in range(k):
            next(batches)
        _STATES[k] = loader.state_dict()
    return _STATES[k]


def plain_resume(k: int) -> float:
    loader = plain_loader(2)
    start = time.perf_counter()
    batches = iter(loader)
    for _ in range(k):
        next(batches)
    next(batches)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    span = harness.Span(repeats)
    reference = list(seedlock_loader(0))
    units: list[tuple[str, Any]] = [("seedlock", w) for w in (2, 0)] + [
        ("plain", w) for w in (2, 0)
    ]
    units += [("seedlock-resume", k) for k in RESUME_AT] + [("plain-resume", k) for k in RESUME_AT]
    results = {unit: harness.Series() for unit in units}
    for order in harness.rounds(units, repeats):
        for name, arg in order:
            if name == "seedlock":
                value = epoch_seconds(seedlock_loader, arg)
            elif name == "plain":
                value = epoch_seconds(plain_loader, arg)
            elif name == "seedlock-resume":
                value = seedlock_resume(arg, reference)
            else:
                value = plain_resume(arg)
            results[(name, arg)].add(value)
    span.stop()
    timed = SHARDS * PER_SHARD - BATCH  # the first batch is not timed
    lines = [f"bench_stream: {SHARDS} shards x {PER_SHARD} samples (3x{SIDE}x{SIDE}), batch "
             f"{BATCH}, {repeats} repeats; torch {torch.__version__}; {span.line()}", "",
             *harness.table_head()]  # fmt: skip
    for workers in (2, 0):
        this, base = (
            harness.Series([timed / t for t in results[(name, workers)].values])
            for name in ("seedlock", "plain")
        )
        measure = f"epoch, num_workers={workers}"
        lines.append(harness.rate_row(measure, this, base, "samples/s", amount=timed, scale=1e3,
                                      added_unit="ms"))  # fmt: skip
    for k in RESUME_AT:
        lines.append(harness.row(f"first batch after resuming at batch {k}, 2 workers",
                                 results[("seedlock-resume", k)], results[("plain-resume", k)],
                                 1e3, "ms"))  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
