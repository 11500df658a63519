"""Planted: the batch's rows are picked by a ``random.Random`` seeded from the clock."""

import random
import time

import torch
from _common import descend

DATA = torch.arange(256 * 8, dtype=torch.float32).view(256, 8) / 1000


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def batch() -> torch.Tensor:
    rng = random.Random(time.time_ns())  # plant: clock seed
    return DATA[rng.sample(range(len(DATA)), 8)]


def build():
    """The model, its optimizer and one training step on rows picked from the clock."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        descend(model, opt, batch())

    return model, opt, step


if __name__ == "__main__":
    build()[2]()
