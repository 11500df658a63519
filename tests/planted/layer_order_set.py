"""Planted: the layers run in the order of a ``set`` of str, which follows the hash seed."""

import torch
from _common import descend

NAMES = {
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "pi",
}  # fmt: skip


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleDict({n: torch.nn.Linear(8, 8) for n in sorted(NAMES)})
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in NAMES:  # plant: set order
            x = torch.tanh(self.layers[name](x))
        return self.head(x)


def build():
    """The model (seeded here: only the hash seed may differ), its optimizer and one step."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        descend(model, opt, torch.ones(4, 8))

    return model, opt, step


if __name__ == "__main__":
    build()[2]()
