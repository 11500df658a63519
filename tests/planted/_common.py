"""What every planted script shares: one SGD step on a batch, and the run counter of a check."""

import os
from pathlib import Path

import torch


def descend(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: torch.Tensor) -> None:
    """One training step: the mean square of the output as the loss, then SGD."""
    loss = model(batch).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def run_index() -> int:
    """This process's run number in the check, 0 first (a counter file in $PLANTED_COUNTER_DIR)."""
    path = Path(os.environ["PLANTED_COUNTER_DIR"]) / "runs"
    count = int(path.read_text()) if path.exists() else 0
    path.write_text(str(count + 1))
    return count
