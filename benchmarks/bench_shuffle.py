#!/usr/bin/env python
"""What an epoch's order costs: the ``randperm`` order against the ``feistel`` order.

    python benchmarks/bench_shuffle.py [--repeats N] [--quick]

Measures, side by side in one run:

1. Time to the first batch (256 indices) of a ``seedlock.data.ResumableSampler``, fresh (a new
   sampler, ``iter()``, 256 ``next()``) and resumed in the middle of the epoch
   (``load_state_dict`` at position ``n // 2``, then the same), for n = 10**6, 10**7 and 10**8:
   ``order="feistel"`` (this) against the default ``order="randperm"`` (baseline: one
   ``torch.randperm(n)`` and its list per epoch). ``--quick`` leaves out n = 10**8. Then
   ``feistel`` alone at n = 10**10, where a ``randperm`` would take 80 GB as a tensor.
2. Cost per index of the vectorised ``feistel`` order: ``FeistelPermutation.block`` over the
   10**6 positions of an epoch of 10**6 samples (cycle-walking included), in ns per index, and
   of one position computed with Python ints (``FeistelPermutation.index``).

Each repeat runs every variant, in an order shuffled per repeat (fixed shuffle seed). Every first
batch is checked against the order computed another way (``indices(epoch)`` of a fresh sampler).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

import _harness as harness  # benchmarks/ is on sys.path when run as a script
import torch

import seedlock
from seedlock.data import ResumableSampler
from seedlock.data._feistel import FeistelPermutation

BATCH = 256
SIZES = (10**6, 10**7, 10**8)
HUGE = 10**10
BLOCK = 10**6
SINGLE = 20_000  # positions computed one by one with Python ints


def first_batch(size: int, order: str, resumed: bool) -> Callable[[], list[int]]:
    """The first batch of an epoch of ``size``: fresh, or resumed at its middle."""

    def run() -> list[int]:
        sampler = ResumableSampler(size, seed=0, order=order)
        if resumed:
            state = {"version": 1, "epoch": 0, "position": size // 2}
            if order != "randperm":
                state = {**state, "version": 2, "order": order}
            sampler.load_state_dict(state)
        return list(itertools.islice(iter(sampler), BATCH))

    return run


def expected(size: int, order: str, resumed: bool) -> list[int]:
    start = size // 2 if resumed else 0
    return list(ResumableSampler(size, seed=0, order=order).indices(0)[start : start + BATCH])


def variants(quick: bool) -> list[tuple[int, str, bool]]:
    sizes = SIZES[:2] if quick else SIZES
    found = [(n, o, r) for n in sizes for o in ("feistel", "randperm") for r in (False, True)]
    return [*found, (HUGE, "feistel", False), (HUGE, "feistel", True)]


def measure(repeats: int, quick: bool) -> dict[object, harness.Series]:
    units = variants(quick)
    checked = {u: expected(*u) for u in units if u[0] <= SIZES[0]}
    permutation = FeistelPermutation(BLOCK, 0, 0)
    positions = torch.arange(BLOCK)
    series: dict[object, harness.Series] = {u: harness.Series() for u in units}
    series["block"], series["single"] = harness.Series(), harness.Series()
    for shuffled in harness.rounds([*units, "block", "single"], repeats):
        for unit in shuffled:
            if unit == "block":
                start = time.perf_counter()
                permutation.block(positions)
                series[unit].add((time.perf_counter() - start) / BLOCK)
            elif unit == "single":
                start = time.perf_counter()
                for p in range(SINGLE):
                    permutation.index(p)
                series[unit].add((time.perf_counter() - start) / SINGLE)
            else:
                assert isinstance(unit, tuple)
                start = time.perf_counter()
                batch = first_batch(*unit)()
                series[unit].add(time.perf_counter() - start)
                if unit in checked and batch != checked[unit]:
                    raise SystemExit(f"the first batch of {unit} is not the epoch's order")
    return series


def report(series: dict[object, harness.Series], quick: bool, span: harness.Span) -> list[str]:
    info = harness.environment()
    lines = harness.header(
        "Shuffles: time to the first batch, randperm vs feistel order",
        info,
        span,
        f"first batch: {BATCH} indices of a ResumableSampler (1 rank); this: order='feistel', "
        "baseline: order='randperm' (the default)",
    )
    sizes = SIZES[:2] if quick else SIZES
    for n in sizes:
        for resumed in (False, True):
            where = f"resumed at {n // 2:,}" if resumed else "fresh"
            lines.append(
                harness.row(
                    f"first batch, n = {n:,}, {where}",
                    series[n, "feistel", resumed],
                    series[n, "randperm", resumed],
                    1e3,
                    "ms",
                )
            )
    for resumed in (False, True):
        where = f"resumed at {HUGE // 2:,}" if resumed else "fresh"
        lines.append(
            harness.row(
                f"first batch, n = {HUGE:,}, {where}",
                series[HUGE, "feistel", resumed],
                None,
                1e3,
                "ms",
            )
        )
    lines.append(
        harness.row(f"feistel block of {BLOCK:,} positions", series["block"], None, 1e9, "ns/index")
    )
    lines.append(
        harness.row("feistel, one position in Python ints", series["single"], None, 1e9, "ns/index")
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.arguments(__doc__, None, "rounds over every variant (default 5; --quick: 3)")
    parser.add_argument("--quick", action="store_true", help=f"leave out n = {SIZES[-1]:,}")
    args = parser.parse_args(argv)
    repeats = max(1, args.repeats if args.repeats is not None else (3 if args.quick else 5))
    seedlock.seed_everything(0)
    span = harness.Span(repeats)
    series = measure(repeats, args.quick)
    print("\n".join(report(series, args.quick, span.stop())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
