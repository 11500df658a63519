"""Iterable datasets for the stream loader's tests, and the child that resumes them.

``python stream_datasets.py <kind> <workers> <states.pt> <out.json>`` builds the dataset
``kind``, resumes a fresh loader from each state in ``states.pt`` (a list) and writes every
batch it then delivers to the end of epoch 1, as lists, to ``out.json``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import seedlock
import seedlock.data

LENGTHS = [17, 0, 25, 3, 21]  # five shards, one of them empty: 17 batches of 4 an epoch
EPOCHS, BATCH = 2, 4


def augmented(shard: int, k: int) -> torch.Tensor:
    """Sample ``k`` of ``shard``, augmented from every global generator and sample_rng()."""
    noise = (
        random.random()
        + float(np.random.random())
        + float(torch.rand(()))
        + float(seedlock.data.sample_rng().random())
    )
    return torch.tensor([shard * 1000 + k, noise], dtype=torch.float64)


def replayed(shard: int) -> Any:
    def read() -> Any:
        for k in range(LENGTHS[shard]):
            yield augmented(shard, k)

    return read


class Seekable(torch.utils.data.IterableDataset):
    """A Stateful stream: its state is where it is; load_state_dict seeks."""

    def __init__(self, shard: int, length: int) -> None:
        self.shard, self.length, self.position = shard, length, 0

    def __iter__(self) -> Any:
        while self.position < self.length:
            k = self.position
            self.position += 1
            yield augmented(self.shard, k)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = state["position"]


def dataset(kind: str, folder: Path | None = None) -> Any:
    if kind == "callables":
        return seedlock.data.sharded([replayed(s) for s in range(len(LENGTHS))])
    if kind == "stateful-shards":
        return seedlock.data.sharded([Seekable(s, n) for s, n in enumerate(LENGTHS)])
    if kind == "one-stream":
        return Seekable(0, 70)
    if kind == "two-files":
        assert folder is not None
        paths = []
        for s, n in enumerate([29, 41]):
            path = folder / f"shard-{s}.txt"
            path.write_text("".join(f"{s} {k}\n" for k in range(n)))
            paths.append(path)
        return seedlock.data.sharded(paths, read=read_lines)
    raise ValueError(kind)


def read_lines(path: Path) -> Any:
    with open(path) as lines:
        for line in lines:
            shard, k = map(int, line.split())
            yield augmented(shard, k)


def loader(kind: str, workers: int, folder: Path | None = None) -> Any:
    seedlock.seed_everything(0)
    return seedlock.data.loader(
        dataset(kind, folder), batch_size=BATCH, shuffle=True, num_workers=workers
    )


def drain(train: Any) -> list[list[list[float]]]:
    """Every batch from here to the end of the last epoch."""
    out = []
    while train.epoch < EPOCHS:
        out += [batch.tolist() for batch in train]
    return out


def main(kind: str, workers: int, states: Path, out: Path) -> None:
    results = []
    for state in torch.load(states, weights_only=True):
        train = loader(kind, workers, out.parent)
        train.load_state_dict(state)
        results.append(drain(train))
    out.write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
