#!/usr/bin/env python
"""What ``seedlock.distributed.check_replicas`` costs against model size, and what it sends.

    python benchmarks/bench_distributed.py [--repeats N] [--quick] [--nproc N]

The script launches itself under ``torchrun --standalone --nproc_per_node=N`` (default 2, the
gloo backend on the CPU) and prints, from rank 0, one markdown table row per model size
(1M, 10M, 50M float32 parameters, each split into few and into many tensors):

* ``check_replicas(tensors)``: every rank hashes each tensor (xxh3-128, or SHA-256 without
  xxhash, of dtype, shape and bits, 16 bytes kept) and all-gathers the fingerprints; the
  report is checked to be ``ok``.
* hashing alone: the same fingerprints without any collective (the local part of the above).
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
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZES = [  # (parameters, tensors)
    (1_000_000, 10),
    (1_000_000, 200),
    (10_000_000, 20),
    (10_000_000, 200),
    (50_000_000, 50),
    (50_000_000, 200),
]
QUICK_SIZES = SIZES[:4]


def launch(argv: list[str], nproc: int) -> int:
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", f"--nproc_per_node={nproc}", __file__, "--worker"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    print(f"launching: {' '.join(command[1:])} {' '.join(argv)}", file=sys.stderr, flush=True)
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


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def fmt_ms(values: list[float]) -> str:
    low, mid, high = quartiles([v * 1e3 for v in values])
    digits = 2 if mid < 10 else 1 if mid < 100 else 0
    return f"{mid:.{digits}f} ms ({low:.{digits}f} - {high:.{digits}f})"


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def worker(repeats: int, quick: bool) -> None:
    import torch
    import torch.distributed as dist

    import seedlock.distributed as sd

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    warm = torch.zeros(1)
    dist.all_reduce(warm)  # gloo connects lazily: not part of any measurement

    def timed(fn: Callable[[], object]) -> float:
        dist.barrier()
        start = time.perf_counter()
        fn()
        mine = time.perf_counter() - start
        slowest = torch.tensor([mine], dtype=torch.float64)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        return float(slowest.item())

    rows = []
    for parameters, count in QUICK_SIZES if quick else SIZES:
        named = tensors_of(parameters, count)
        buffers = [t.clone() for _, t in named]
        report = sd.check_replicas(named)
        assert report.ok, report

        def check(named: list[tuple[str, Any]] = named) -> None:
            assert sd.check_replicas(named).ok

        def hashing(named: list[tuple[str, Any]] = named) -> None:
            for _, t in named:
                sd._fingerprint(t)

        def all_reduce(buffers: list[Any] = buffers) -> None:
            for b in buffers:
                dist.all_reduce(b)

        variants = {"check": check, "hash": hashing, "all_reduce": all_reduce}
        for fn in variants.values():  # warm-up
            timed(fn)
        times: dict[str, list[float]] = {name: [] for name in variants}
        order = random.Random(parameters * 1000 + count)  # the same order on every rank
        for _ in range(repeats):
            names = list(variants)
            order.shuffle(names)
            for name in names:
                times[name].append(timed(variants[name]))
        ring = 2 * (world - 1) / world * parameters * 4
        rows.append((parameters, count, times, report.bytes_per_rank, ring))
        if rank == 0:
            print(f"done: {parameters:,} parameters in {count} tensors", file=sys.stderr)
        del named, buffers

    if rank == 0:
        print_table(rows, world, repeats)
    dist.destroy_process_group()


def print_table(rows: list[Any], world: int, repeats: int) -> None:
    import torch

    print(
        f"\n{world} ranks, gloo on CPU, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"{torch.get_num_threads()} thread(s) per rank, {repeats} repeats, load average "
        f"{os.getloadavg()[0]:.1f} at the end\n"
    )
    print(
        "| parameters | tensors | check_replicas | hashing alone | all_reduce of every "
        "parameter | ratio | sent per rank: check_replicas | sent per rank: all_reduce (ring) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for parameters, count, times, sent, ring in rows:
        ratio = statistics.median(times["all_reduce"]) / statistics.median(times["check"])
        print(
            f"| {parameters / 1e6:g}M ({fmt_bytes(parameters * 4)}) | {count} "
            f"| {fmt_ms(times['check'])} | {fmt_ms(times['hash'])} "
            f"| {fmt_ms(times['all_reduce'])} | {ratio:.1f}x "
            f"| {fmt_bytes(sent)} | {fmt_bytes(ring)} |"
        )
    parameters, count, times, sent, ring = rows[-1]
    check = statistics.median(times["check"])
    hashing = statistics.median(times["hash"])
    print(
        f"\nAt {parameters / 1e6:g}M parameters: check_replicas {check * 1e3:.0f} ms, of which "
        f"hashing {hashing / check:.0%}; each rank sends {fmt_bytes(sent)} where an all-reduce "
        f"sends {fmt_bytes(ring)}. Its cost grows with the bytes to hash (about "
        f"{parameters * 4 / hashing / 1e9:.2f} GB/s per rank here), not with the network."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1M and 10M only, 3 repeats")
    parser.add_argument("--nproc", type=int, default=2, help="ranks to launch (default 2)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = min(args.repeats, 3) if args.quick else args.repeats
    if not args.worker:
        argv = ["--repeats", str(repeats)] + (["--quick"] if args.quick else [])
        return launch(argv, args.nproc)
    worker(repeats, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
