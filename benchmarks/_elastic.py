"""Time to the first batch after an elastic resume, at global step 0 and 100,000.

A job of 2 ranks (micro-batch 4, global batch 8) saves its loader state at global step k; a
fresh loader of another shape loads it and delivers its first batch. Measured on rank 0 of 1
rank (micro-batch 8) and of 4 ranks (micro-batch 2), for the default order and
``order="feistel"``, over 960,000 samples (120,000 global steps of 8). The criterion: resuming
at k = 100,000 takes at most 1.5x as long as at k = 0. Each resume is checked: its first batch
must be the first micro-batch of global step k on that rank.
"""

from __future__ import annotations

import time
from typing import Any

import _harness as harness
import torch

import seedlock
import seedlock.data
from seedlock.data import ResumableSampler

SIZE, GLOBAL_BATCH = 960_000, 8
STEPS = (0, 100_000)
SHAPES = ((1, 8), (4, 2))  # (ranks, micro-batch) of the resumed job
ORDERS = ("randperm", "feistel")
BAR = 1.5


class Indices(torch.utils.data.Dataset[int]):
    """Item i is i: a batch names its own indices."""

    def __len__(self) -> int:
        return SIZE

    def __getitem__(self, i: int) -> int:
        return i


def resumed_loader(order: str, ranks: int, batch: int) -> Any:
    sampler = ResumableSampler(SIZE, seed=0, num_replicas=ranks, rank=0,
                               global_batch_size=GLOBAL_BATCH, order=order)  # fmt: skip
    return seedlock.data.loader(Indices(), batch_size=batch, sampler=sampler)


def resume(order: str, ranks: int, batch: int, step: int) -> float:
    """Seconds from load_state_dict to the first batch, checked."""
    loader = resumed_loader(order, ranks, batch)
    state = {"version": 2, "epoch": 0, "samples": step * GLOBAL_BATCH,
             "global_batch_size": GLOBAL_BATCH}  # fmt: skip
    if order != "randperm":
        state["order"] = order
    start = time.perf_counter()
    loader.load_state_dict(state)
    first = next(iter(loader))
    elapsed = time.perf_counter() - start
    positions = range(step * GLOBAL_BATCH, step * GLOBAL_BATCH + batch * ranks, ranks)
    expected = [loader.resumable_sampler.indices(0)[p // ranks] for p in positions]
    assert first.tolist() == expected, (order, ranks, step)
    return elapsed


def measure(repeats: int) -> dict[tuple[str, int, int, int], harness.Series]:
    """Every (order, ranks, batch, step) once per repeat, in a shuffled order."""
    seedlock.seed_everything(0)
    units = [(o, r, b, k) for o in ORDERS for r, b in SHAPES for k in STEPS]
    results = {unit: harness.Series() for unit in units}
    for order in harness.rounds(units, repeats, label="elastic repeat"):
        for unit in order:
            results[unit].add(resume(*unit))
    return results


def report(results: dict[tuple[str, int, int, int], harness.Series]) -> tuple[list[str], bool]:
    """The table (k = 100,000 against k = 0, paired per repeat) and whether every row passes."""
    lines = [
        "",
        f"Elastic resume: a state saved by 2 ranks (global batch {GLOBAL_BATCH}) loaded by "
        f"another shape; time to its first batch, {SIZE:,} samples:",
        "",
        *harness.table_head(["resumed as", "at step 0", "at step 100,000", "ratio", "verdict"]),
    ]
    ok = True
    for order in ORDERS:
        for ranks, batch in SHAPES:
            base = results[(order, ranks, batch, 0)]
            far = results[(order, ranks, batch, 100_000)]
            ratio = harness.paired(far, base, lambda a, b: a / b).median
            ok &= ratio <= BAR
            shape = f"{order}, {ranks} rank(s) x micro-batch {batch}"
            lines.append(
                f"| {shape} | {harness.fmt(base, 1e3, 'ms')} | {harness.fmt(far, 1e3, 'ms')} "
                f"| {harness.fmt_ratio(ratio)} | {harness.passfail(ratio <= BAR)} (<= {BAR}x) |"
            )
    return lines, ok
