"""Planted: the step reseeds torch from ``os.urandom`` before the forward pass (dropout)."""

import os

import torch
from _common import descend


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.drop = torch.nn.Dropout(0.5)
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def build():
    """The model, its optimizer and one training step that reseeds torch first."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        torch.manual_seed(int.from_bytes(os.urandom(4), "little"))  # plant: urandom seed
        descend(model, opt, torch.ones(8, 8))

    return model, opt, step


if __name__ == "__main__":
    build()[2]()
