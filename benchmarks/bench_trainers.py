#!/usr/bin/env python
"""Time to the first batch after resuming in the middle of an epoch at batch k (default 10,000),
each trainer's own resume against the same trainer with seedlock, side by side.

    python benchmarks/bench_trainers.py [--k N] [--repeats N] [--only lightning,accelerate,...]

What each row times (the framework's own way vs seedlock's way, same process, same data):

- Lightning: from ``Trainer.fit(ckpt_path=...)`` to the first ``on_train_batch_start``, with and
  without the ``Seedlock`` callback. Lightning alone does not go to batch k at all: it starts
  the rest of the epoch on a fresh shuffle; the extra row adds what drawing and dropping k
  batches of a plain loader costs, the price of getting the right batches by replay.
- Hugging Face ``Trainer``: its ``skip_first_batches`` (walks the sampler through the k
  skipped batches) against ``SeedlockTrainer``'s O(1) position; first batch included.
- accelerate: ``accelerator.skip_first_batches`` against
  ``seedlock.integrations.accelerate.skip_first_batches``; first batch included.

Every framework's own resume is measured on a loader that gives *other* batches than the
uninterrupted run (tests/test_integration_*.py prove it); seedlock's gives the same ones.
The per-framework scripts (``_resume_<framework>.py``) run alone too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script

FRAMEWORKS = ("lightning", "transformers", "accelerate")


def _rows(name: str, k: int, repeats: int) -> list[tuple[str, float, float]]:
    """(what, their seconds, seedlock's seconds) rows for one framework."""
    module = importlib.import_module(f"_resume_{name}")
    measure: Callable[..., dict[str, Any]] = module.measure
    if name == "lightning":
        found = measure(k)
        return [
            ("Lightning: fit(ckpt_path) (a reshuffled pass, not batch k)",
             found["lightning_s"], found["seedlock_s"]),
            ("Lightning + replaying k batches (the right batches, by replay)",
             found["lightning_s"] + found["replay_s"], found["seedlock_s"]),
        ]  # fmt: skip
    if name == "transformers":
        found = measure(k, repeats=repeats)
        return [("Trainer: skip_first_batches", found["trainer_s"], found["seedlock_s"])]
    found = measure(k, repeats=repeats)
    return [("accelerate: skip_first_batches", found["accelerate_s"], found["seedlock_s"])]


def _versions(names: list[str]) -> list[str]:
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            found.append(f"{name} not installed")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--k", type=int, default=10_000, help="the batch to resume at")
    parser.add_argument("--repeats", type=int, default=5, help="timings per median")
    parser.add_argument("--only", default=",".join(FRAMEWORKS), help="frameworks, comma-separated")
    args = parser.parse_args(argv)
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(FRAMEWORKS))
    if unknown or args.k < 1 or args.repeats < 1:
        parser.error(f"--only takes {', '.join(FRAMEWORKS)}; --k and --repeats must be >= 1")
    harness.compile_seedlock()
    print(f"## Resuming at batch k = {args.k:,}: time to the first batch\n")
    versions = ", ".join(_versions(["torch", *wanted]))
    print(f"{versions}; medians of {args.repeats} where repeated\n")
    print("| resume | framework's own | with seedlock | ratio |")
    print("| --- | --- | --- | --- |")
    for name in wanted:
        harness.progress(f"{name} ...")
        try:
            rows = _rows(name, args.k, args.repeats)
        except ImportError as exc:
            print(f"| {name} | not installed ({exc.name}) | - | - |")
            continue
        for what, theirs, ours in rows:
            cells = f"{theirs * 1e3:.1f} ms | {ours * 1e3:.1f} ms | {theirs / ours:.2f}x"
            print(f"| {what} | {cells} |")
    print()
    print("Only seedlock's column resumes with the batches, augmentation and dropout of the run")
    print("that never stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
