"""Planted: a layer adds its call count, state that no snapshot restores (same inputs and RNG,
another output)."""

import os
from pathlib import Path

import torch


class Drift(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.add(torch.relu(x), float(self.calls))


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.drift = Drift()
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drift(self.fc1(x)))


def build(first_call: int = 0):
    """The model (the layer's call counter at ``first_call``), its optimizer and one step."""
    model = Net()
    model.drift.calls = first_call
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        loss = model(torch.ones(8, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return model, opt, step


def run_index() -> int:
    """This process's run number in the check, 0 first (a counter file in $PLANTED_COUNTER_DIR)."""
    path = Path(os.environ["PLANTED_COUNTER_DIR"]) / "runs"
    count = int(path.read_text()) if path.exists() else 0
    path.write_text(str(count + 1))
    return count


if __name__ == "__main__":
    build(run_index())[2]()
