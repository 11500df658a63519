"""Planted: every second call draws one extra random number before the dropout."""

import torch
from _common import descend, run_index


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.drop = torch.nn.Dropout(0.5)
        self.fc2 = torch.nn.Linear(16, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        if self.calls % 2 == 1:
            torch.rand(1)  # one extra draw, odd calls only
        self.calls += 1
        return self.fc2(self.drop(h))


def build(first_call: int = 0):
    """The model (its call counter at ``first_call``), its optimizer and one training step."""
    model = Net()
    model.calls = first_call
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        descend(model, opt, torch.ones(8, 8))

    return model, opt, step


if __name__ == "__main__":
    build(run_index())[2]()
