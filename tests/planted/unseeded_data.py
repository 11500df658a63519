"""Planted: the batch comes from an unseeded numpy generator (a dataset nobody seeds)."""

import numpy as np
import torch
from _common import descend


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def batch() -> torch.Tensor:
    rng = np.random.default_rng()  # plant: unseeded data
    return torch.from_numpy(rng.random((8, 8)).astype("float32"))


def build():
    """The model, its optimizer and one training step on a fresh batch."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        descend(model, opt, batch())

    return model, opt, step


if __name__ == "__main__":
    build()[2]()
