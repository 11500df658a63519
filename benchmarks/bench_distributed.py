#!/usr/bin/env python
"""What ``seedlock.audit.check_replicas`` costs against model size, and what it sends.

    python benchmarks/bench_distributed.py [--repeats N] [--quick] [--nproc N]

The script launches itself under ``torchrun --standalone --nproc_per_node=N`` (default 2, the
gloo backend on the CPU) and prints, from rank 0, one markdown table row per model size
(1M, 10M, 50M float32 parameters, each split into few and into many tensors):

* ``check_replicas(tensors)``: every rank hashes each tensor (xxh3-128, or SHA-256 without
  xxhash, of dtype, shape and bits, 16 bytes kept) and all-gathers the fingerprints; the
  report is checked to be ``ok``.
* hashing alone: ``seedlock.audit.fingerprint`` of every tensor, without any collective (the
  local part of the above).
* the baseline: ``all_reduce`` of every parameter tensor, which is what a naive "compare all
  tensors" (or one step of gradient averaging) moves over the network; an ``all_gather`` of the
  tensors, the literal comparison, would move ``world - 1`` times the parameter bytes instead.
* bytes sent per rank: ``check_replicas``' own count (``report.bytes_per_rank``: 16 per tensor
  + 24), against ``2 (N - 1) / N`` times the parameter bytes for a ring all-reduce.

Every rank builds the same tensors (a seeded generator), so the replicas are identical. Each
repeat runs the three variants in an order shuffled per repeat (the same order on every rank);
each call starts after a barrier, and its time is the slowest rank's. Cells are the median over
repeats with the p25 - p75 range; *ratio* is the all-reduce over ``check_replicas``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script

SIZES = [  # (parameters, tensors)
    (1_000_000, 10),
    (1_000_000, 200),
    (10_000_000, 20),
    (10_000_000, 200),
    (50_000_000, 50),
    (50_000_000, 200),
]
QUICK_SIZES = SIZES[:4]
COLUMNS = (
    "parameters",
    "tensors",
    "check_replicas",
    "hashing alone",
    "all_reduce of every parameter",
    "ratio",
    "sent per rank: check_replicas",
    "sent per rank: all_reduce (ring)",
)
# (parameters, tensors, variant -> seconds per repeat, bytes check_replicas sends, ring bytes)
Row = tuple[int, int, dict[str, harness.Series], int, float]


def launch(argv: list[str], nproc: int) -> int:
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", f"--nproc_per_node={nproc}", __file__, "--worker"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    harness.progress(f"launching: {' '.join(command[1:])} {' '.join(argv)}")
    return subprocess.run([*command, *argv], check=False, env=env).returncode


def tensors_of(parameters: int, count: int) -> list[tuple[str, Any]]:
    """``count`` float32 tensors holding ``parameters`` values in all, the same on every rank."""
    import torch

    generator = torch.Generator().manual_seed(parameters + count)
    sizes = [parameters // count] * count
    sizes[-1] += parameters - sum(sizes)
    return [
        (f"layers.{i}.weight", torch.randn(size, generator=generator))
        for i, size in enumerate(sizes)
    ]


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def worker(repeats: int, quick: bool) -> None:
    import torch
    import torch.distributed as dist

    import seedlock.audit

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    warm = torch.zeros(1)
    dist.all_reduce(warm)  # gloo connects lazily: not part of any measurement
    span = harness.Span(
        repeats,
        ", the variants in an order shuffled per repeat, the same on every rank; a call's time "
        "is the slowest rank's",
    )

    def timed(fn: Callable[[], object]) -> float:
        dist.barrier()
        start = time.perf_counter()
        fn()
        mine = time.perf_counter() - start
        slowest = torch.tensor([mine], dtype=torch.float64)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        return float(slowest.item())

    rows: list[Row] = []
    for parameters, count in QUICK_SIZES if quick else SIZES:
        named = tensors_of(parameters, count)
        buffers = [t.clone() for _, t in named]
        report = seedlock.audit.check_replicas(named)
        assert report.ok, report

        def check(named: list[tuple[str, Any]] = named) -> None:
            assert seedlock.audit.check_replicas(named).ok

        def hashing(named: list[tuple[str, Any]] = named) -> None:
            for _, t in named:
                seedlock.audit.fingerprint(t)

        def all_reduce(buffers: list[Any] = buffers) -> None:
            for b in buffers:
                dist.all_reduce(b)

        variants = {"check": check, "hash": hashing, "all_reduce": all_reduce}
        for fn in variants.values():  # warm-up
            timed(fn)
        times = {name: harness.Series() for name in variants}
        # The same seed, so the same order, on every rank.
        for names in harness.rounds(
            list(variants), repeats, label=None, seed=parameters * 1000 + count
        ):
            for name in names:
                times[name].add(timed(variants[name]))
        ring = 2 * (world - 1) / world * parameters * 4
        rows.append((parameters, count, times, report.bytes_per_rank, ring))
        if rank == 0:
            harness.progress(f"done: {parameters:,} parameters in {count} tensors")
        del named, buffers

    if rank == 0:
        print("\n".join(table(rows, world, span.stop())))
    dist.destroy_process_group()


def table(rows: list[Row], world: int, span: harness.Span) -> list[str]:
    lines = harness.header(
        "seedlock check_replicas benchmark",
        harness.environment(),
        span,
        legend="cells: median over repeats (p25 - p75); ratio: all_reduce over check_replicas, "
        "of the medians",
        machine=[f"{world} ranks (one process each), gloo on the CPU"],
        columns=COLUMNS,
    )
    ms = 1e3
    for parameters, count, times, sent, ring in rows:
        ratio = times["all_reduce"].median / times["check"].median
        lines.append(
            f"| {parameters / 1e6:g}M ({fmt_bytes(parameters * 4)}) | {count} "
            f"| {harness.fmt(times['check'], ms, 'ms')} | {harness.fmt(times['hash'], ms, 'ms')} "
            f"| {harness.fmt(times['all_reduce'], ms, 'ms')} | {harness.fmt_ratio(ratio)} "
            f"| {fmt_bytes(sent)} | {fmt_bytes(ring)} |"
        )
    parameters, count, times, sent, ring = rows[-1]
    check, hashing = times["check"].median, times["hash"].median
    lines += [
        "",
        f"At {parameters / 1e6:g}M parameters: check_replicas {check * ms:.0f} ms, of which "
        f"hashing {hashing / check:.0%}; each rank sends {fmt_bytes(sent)} where an all-reduce "
        f"sends {fmt_bytes(ring)}. Its cost grows with the bytes to hash (about "
        f"{parameters * 4 / hashing / 1e9:.2f} GB/s per rank here), not with the network.",
    ]
    return lines


def main() -> int:
    parser = harness.arguments(__doc__, 5)
    parser.add_argument("--quick", action="store_true", help="1M and 10M only, 3 repeats")
    parser.add_argument("--nproc", type=int, default=2, help="ranks to launch (default 2)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = max(1, min(args.repeats, 3) if args.quick else args.repeats)
    if not args.worker:
        argv = ["--repeats", str(repeats)] + (["--quick"] if args.quick else [])
        return launch(argv, args.nproc)
    worker(repeats, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
