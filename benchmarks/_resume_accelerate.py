"""Time to the first batch after resuming at batch k under accelerate: its
``accelerator.skip_first_batches`` on a prepared plain DataLoader against seedlock's
``skip_first_batches`` on a tracked seedlock loader, side by side in one process.

Both start from a loader as ``accelerator.prepare`` returns it, shuffled, ``num_workers=0``, 8
samples a batch, an epoch of ``k + 1`` batches, and stop the clock when the batch at position
``k`` of the epoch is in hand. accelerate's skip builds a new loader whose batch sampler walks
the first k batches of indices and drops them (no sample is fetched); seedlock's moves the
loader's position through ``load_state_dict`` and starts the epoch's order at batch k. Each
repeat times both, in alternating order; the medians are reported.

``measure()`` is what ``bench_trainers.py`` calls; run as a script it prints both and the ratio::

    python benchmarks/_resume_accelerate.py [--k N] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

import seedlock
from seedlock.integrations.accelerate import skip_first_batches, track

BATCH = 8


class _Indices(Dataset[int]):
    """Sample ``i`` is ``i``: the cheapest fetch, so the clock sees the skip."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> int:
        return i


def _first_after_accelerate_skip(accelerator: Any, loader: Any, k: int) -> float:
    start = time.perf_counter()
    next(iter(accelerator.skip_first_batches(loader, k)))
    return time.perf_counter() - start


def _first_after_seedlock_skip(loader: Any, k: int) -> float:
    start = time.perf_counter()
    batch = next(iter(skip_first_batches(loader, k, epoch=0)))
    elapsed = time.perf_counter() - start
    expected = loader.resumable_sampler.indices(0)[k * BATCH : (k + 1) * BATCH]
    assert batch.tolist() == expected, "seedlock's skip did not land on batch k"
    return elapsed


def measure(k: int = 10_000, repeats: int = 5) -> dict[str, float]:
    """Seconds to the first batch after resuming at batch ``k``, both ways (medians).

    Parameters
    ----------
    k
        The batch to resume at (the epoch has ``k + 1`` batches of 8).
    repeats
        Timings of each; the median is reported.

    Returns
    -------
    dict
        ``{"k", "accelerate_s", "seedlock_s", "ratio"}``: ``ratio`` is accelerate's time over
        seedlock's.
    """
    size = (k + 1) * BATCH
    accelerator = Accelerator(cpu=True)
    plain = accelerator.prepare(DataLoader(_Indices(size), batch_size=BATCH, shuffle=True))
    ours = accelerator.prepare(
        track(accelerator, seedlock.data.loader(_Indices(size), BATCH, shuffle=True, seed=0))
    )
    theirs_s: list[float] = []
    ours_s: list[float] = []
    torch.manual_seed(0)
    for repeat in range(repeats):
        if repeat % 2:
            ours_s.append(_first_after_seedlock_skip(ours, k))
            theirs_s.append(_first_after_accelerate_skip(accelerator, plain, k))
        else:
            theirs_s.append(_first_after_accelerate_skip(accelerator, plain, k))
            ours_s.append(_first_after_seedlock_skip(ours, k))
    theirs, mine = statistics.median(theirs_s), statistics.median(ours_s)
    return {"k": float(k), "accelerate_s": theirs, "seedlock_s": mine, "ratio": theirs / mine}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    found = measure(args.k, args.repeats)
    print(f"resume at batch {args.k:,} (median of {args.repeats}), time to the first batch:")
    print(f"  accelerator.skip_first_batches: {found['accelerate_s'] * 1e3:9.2f} ms")
    print(f"  seedlock skip_first_batches:    {found['seedlock_s'] * 1e3:9.2f} ms")
    print(f"  ratio: {found['ratio']:.1f}x")


if __name__ == "__main__":
    main()
