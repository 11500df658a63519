"""Time to the first batch after resuming at batch k under the Hugging Face ``Trainer``: the
Trainer's own resume against ``SeedlockTrainer``'s, side by side in one process.

Both start from the training loader the trainer builds (``get_train_dataloader()``: shuffled,
``num_workers=0``, 8 samples a batch, an epoch of ``k + 1`` batches unless ``epoch_batches`` says
otherwise, the Trainer's collator) and
stop the clock when the batch at position ``k`` of the epoch is in hand:

- ``trainer_s``: what ``Trainer.train(resume_from_checkpoint=...)`` does to the resumed epoch:
  ``transformers.trainer.skip_first_batches(loader, k)`` (accelerate's), which builds a new
  loader whose batch sampler walks the first k batches of indices and drops them, then the first
  batch. No sample before batch k is fetched; the walk is what grows with k. (It does not land
  on the uninterrupted run's batch: the order is drawn again.)
- ``seedlock_s``: what ``SeedlockTrainer`` does instead: the seedlock loader's
  ``load_state_dict({"epoch": 0, "batches": k})`` (O(1)), then the first batch.

Model and optimizer loading, the same for both, are not timed. Each repeat times both, in
alternating order; the medians are reported. ``measure()`` is what ``bench_trainers.py`` calls;
run as a script it prints both and the ratio::

    python benchmarks/_resume_transformers.py [--k N] [--repeats N]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from typing import Any

import torch
import transformers.trainer as hf_trainer
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from seedlock.integrations.transformers import SeedlockTrainer

BATCH = 8


class _Indices(Dataset[dict[str, torch.Tensor]]):
    """Sample ``i`` is ``{"x": tensor(i)}``: a cheap fetch, so the clock sees the skip."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i >= self.size:
            raise IndexError(i)
        return {"x": torch.tensor([float(i)])}


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.linear(x).pow(2).mean()}


def _loader(trainer_class: Any, size: int, folder: str) -> Any:
    args = TrainingArguments(
        output_dir=folder, per_device_train_batch_size=BATCH, report_to=[], use_cpu=True, seed=0
    )
    trainer = trainer_class(model=_Model(), args=args, train_dataset=_Indices(size))
    return trainer.get_train_dataloader()


def _first_after_trainer_skip(loader: Any, k: int) -> float:
    start = time.perf_counter()
    next(iter(hf_trainer.skip_first_batches(loader, k)))
    return time.perf_counter() - start


def _first_after_seedlock_resume(loader: Any, k: int) -> float:
    start = time.perf_counter()
    loader.load_state_dict({"version": 1, "epoch": 0, "batches": k})
    batch = next(iter(loader))
    elapsed = time.perf_counter() - start
    expected = loader.resumable_sampler.indices(0)[k * BATCH : (k + 1) * BATCH]
    assert batch["x"].flatten().tolist() == [float(i) for i in expected], "not at batch k"
    return elapsed


def measure(
    k: int = 10_000, repeats: int = 5, epoch_batches: int | None = None
) -> dict[str, float]:
    """Seconds to the first batch after resuming at batch ``k``, both ways (medians).

    Parameters
    ----------
    k
        The batch to resume at (the epoch has ``k + 1`` batches of 8).
    repeats
        Timings of each; the median is reported.
    epoch_batches
        Batches in the epoch; default ``None``: ``k + 1``. Both ways pay for the epoch's
        permutation; only the Trainer's pays for each skipped batch.

    Returns
    -------
    dict
        ``{"k", "trainer_s", "seedlock_s", "ratio"}``: ``ratio`` is the Trainer's time over
        seedlock's.
    """
    size = (epoch_batches or k + 1) * BATCH
    hf_logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _loader(Trainer, size, folder)
        ours = _loader(SeedlockTrainer, size, folder)
        theirs_s: list[float] = []
        ours_s: list[float] = []
        for repeat in range(repeats):
            if repeat % 2:
                ours_s.append(_first_after_seedlock_resume(ours, k))
                theirs_s.append(_first_after_trainer_skip(theirs, k))
            else:
                theirs_s.append(_first_after_trainer_skip(theirs, k))
                ours_s.append(_first_after_seedlock_resume(ours, k))
    trainer_s, seedlock_s = statistics.median(theirs_s), statistics.median(ours_s)
    return {"k": float(k), "trainer_s": trainer_s, "seedlock_s": seedlock_s,
            "ratio": trainer_s / seedlock_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epoch-batches", type=int, default=None)
    args = parser.parse_args()
    found = measure(args.k, args.repeats, args.epoch_batches)
    print(f"resume at batch {args.k:,} (median of {args.repeats}), time to the first batch:")
    print(f"  Trainer (skip_first_batches): {found['trainer_s'] * 1e3:9.2f} ms")
    print(f"  SeedlockTrainer:              {found['seedlock_s'] * 1e3:9.2f} ms")
    print(f"  ratio: {found['ratio']:.1f}x")


if __name__ == "__main__":
    main()
