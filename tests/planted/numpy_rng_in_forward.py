"""Planted: a layer creates an unseeded numpy generator in ``forward`` and adds its noise."""

import numpy as np
import torch
from _common import descend


class Noise(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rng = np.random.default_rng()  # plant: numpy generator
        return x + torch.from_numpy(rng.normal(size=tuple(x.shape)).astype("float32"))


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.noise = Noise()
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.noise(torch.relu(self.fc1(x))))


def build():
    """The model, its optimizer and one training step."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        descend(model, opt, torch.ones(8, 8))

    return model, opt, step


if __name__ == "__main__":
    build()[2]()
