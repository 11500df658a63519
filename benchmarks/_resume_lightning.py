"""Time to the first batch after resuming at batch k of an epoch under Lightning: its own
resume against the ``Seedlock`` callback's, side by side in one process.

Both runs train a tiny model on a shuffled plain ``DataLoader`` (``num_workers=0``, 8 samples
of 4 floats a batch, an epoch of ``k + 10`` batches) for ``k`` steps, checkpoint at step ``k``
(``ModelCheckpoint(every_n_train_steps=k)``), and resume with a new ``Trainer`` and
``fit(ckpt_path=...)``. The clock runs from the call to ``fit`` to the first
``on_train_batch_start``: loading the checkpoint, Lightning's set-up, and whatever it takes to
get the first batch of the rest of the epoch.

- ``lightning_s``: Lightning alone. It does not go to batch ``k``: a plain ``DataLoader`` has no
  position, so Lightning warns and starts the rest of the epoch on a fresh shuffle (other
  batches than the uninterrupted run).
- ``seedlock_s``: with the callback. The seedlock loader starts the epoch's order at batch
  ``k`` (O(1): no batch before it is fetched or replayed).
- ``replay_s``: what reaching batch ``k`` of the same order costs a plain ``DataLoader`` the
  usual way, by drawing and dropping ``k`` batches (timed on the loader alone, outside
  Lightning: the least any replaying resume pays on top of ``lightning_s``).

``measure()`` is what ``bench_trainers.py`` calls; run as a script it prints the numbers and
the ratios::

    python benchmarks/_resume_lightning.py [--k N]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

import seedlock
from seedlock.integrations.lightning import Seedlock

BATCH = 8
SEED = 0


class _Tiny(Dataset[torch.Tensor]):
    """Sample ``i``: four floats, the cheapest fetch."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((4,), float(i))


class _Module(L.LightningModule):
    def __init__(self, batches: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.batches = batches

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-6)

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        return DataLoader(_Tiny(self.batches * BATCH), batch_size=BATCH, shuffle=True)


class _FirstBatch(Callback):
    """Notes when the first batch reaches the training loop."""

    def __init__(self) -> None:
        self.at: float | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        if self.at is None:
            self.at = time.perf_counter()


def _trainer(folder: Path, max_steps: int, *callbacks: Callback) -> L.Trainer:
    # default_root_dir: the resumed fit's own checkpoints go to the temporary folder too.
    return L.Trainer(
        default_root_dir=folder, accelerator="cpu", max_steps=max_steps,
        enable_progress_bar=False, logger=False,
        enable_model_summary=False, enable_checkpointing=True, callbacks=list(callbacks),
        num_sanity_val_steps=0,
    )  # fmt: skip


def _resume_time(k: int, folder: Path, with_seedlock: bool) -> float:
    """Train k steps, checkpoint, then time a new ``fit`` from that checkpoint to its first
    batch."""
    batches = k + 10

    def extra() -> list[Callback]:
        return [Seedlock(SEED)] if with_seedlock else []

    ckpt = folder / ("seedlock" if with_seedlock else "lightning")
    seedlock.seed_everything(SEED)
    saver = ModelCheckpoint(dirpath=ckpt, filename="{step}", every_n_train_steps=k)
    _trainer(folder, k, *extra(), saver).fit(_Module(batches))
    first = _FirstBatch()
    trainer = _trainer(folder, k + 1, *extra(), first)
    start = time.perf_counter()
    trainer.fit(_Module(batches), ckpt_path=ckpt / f"step={k}.ckpt", weights_only=True)
    assert first.at is not None
    return first.at - start


def _replay_time(k: int) -> float:
    """Draw and drop ``k`` batches of the plain loader, then take the next one."""
    torch.manual_seed(SEED)
    loader = DataLoader(_Tiny((k + 10) * BATCH), batch_size=BATCH, shuffle=True)
    start = time.perf_counter()
    batches = iter(loader)
    next(itertools.islice(batches, k, None))
    return time.perf_counter() - start


def measure(k: int = 10_000) -> dict[str, float]:
    """Seconds to the first batch after resuming at batch ``k`` of an epoch.

    Parameters
    ----------
    k
        The batch of the epoch the checkpoint was written after (an epoch has ``k + 10``).

    Returns
    -------
    dict
        ``{"k", "lightning_s", "seedlock_s", "replay_s", "ratio", "replay_ratio"}``:
        ``ratio`` is ``lightning_s / seedlock_s``, ``replay_ratio`` is
        ``(lightning_s + replay_s) / seedlock_s`` (see the module docstring for what each
        measures).
    """
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _resume_time(k, Path(tmp), with_seedlock=False)
        mine = _resume_time(k, Path(tmp), with_seedlock=True)
    replay = _replay_time(k)
    return {
        "k": float(k),
        "lightning_s": theirs,
        "seedlock_s": mine,
        "replay_s": replay,
        "ratio": theirs / mine,
        "replay_ratio": (theirs + replay) / mine,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--k", type=int, default=10_000)
    args = parser.parse_args()
    result = measure(args.k)
    rows = [
        ("Lightning alone (restarts the epoch, reshuffled)", f"{result['lightning_s']:.3f} s"),
        (f"with Seedlock (at batch {args.k}, exact)", f"{result['seedlock_s']:.3f} s"),
        ("ratio", f"{result['ratio']:.2f}x"),
        (f"replaying {args.k} batches of a plain loader", f"{result['replay_s']:.3f} s"),
        ("Lightning + replay / Seedlock", f"{result['replay_ratio']:.2f}x"),
    ]
    print(
        f"resume at batch {args.k} of an epoch: seconds from fit(ckpt_path=...) to the first batch"
    )
    for label, value in rows:
        print(f"  {label:<50} {value}")


if __name__ == "__main__":
    main()
