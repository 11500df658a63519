"""Planted: a layer sums 2**20 float32 values; the steps alternate 1 and 2 torch threads.

A full float32 reduction splits its work among the threads, so its rounding (its last bits)
depends on the thread count: the sum of this buffer differs with 1 and 2 threads.
"""

import torch
from _common import descend, run_index


class Total(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        values = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0))
        self.register_buffer("values", values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.values.sum()


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.total = Total()
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.total(self.fc1(x)))


def threads_for(call: int) -> int:
    """The thread count of step number ``call``: 1, 2, 1, 2, ..."""
    return 1 if call % 2 == 0 else 2


def build(first_call: int = 0):
    """The model, its optimizer and a step that runs with 1 thread, then 2, then 1, ...

    The step puts the thread count back afterwards, so each run starts with the same one.
    """
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = [first_call]

    def step() -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads_for(calls[0]))
        calls[0] += 1
        try:
            descend(model, opt, torch.ones(8, 8))
        finally:
            torch.set_num_threads(before)

    return model, opt, step


if __name__ == "__main__":
    build(run_index())[2]()
