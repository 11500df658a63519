"""Planted: a layer adds its call count, state that no snapshot restores (same inputs and RNG,
another output)."""

import torch
from _common import descend, run_index


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
        descend(model, opt, torch.ones(8, 8))

    return model, opt, step


if __name__ == "__main__":
    build(run_index())[2]()
