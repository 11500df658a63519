"""Planted: a layer changes its output through a numpy view, which no aten op sees."""

import torch
from _common import descend, run_index


class Stamp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = x.clone()
        out.detach().numpy()[:] += self.calls
        return out


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.stamp = Stamp()
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.stamp(self.fc1(x)))


def build(first_call: int = 0):
    """The model (the layer's call counter at ``first_call``), its optimizer and one step."""
    model = Net()
    model.stamp.calls = first_call
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        descend(model, opt, torch.ones(8, 8))

    return model, opt, step


if __name__ == "__main__":
    build(run_index())[2]()
