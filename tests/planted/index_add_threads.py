"""Planted: a layer pools 2**20 values into 16 slots with ``index_add_`` (many duplicate
indices); the steps alternate 1 and 2 torch threads.

On the CPU, ``index_add_`` adds the source rows in index order whatever the thread count (checked
with 1 and 2 threads, float32, up to 10**7 values): the result is bit-identical, and the audit
must not raise a false alarm.
"""

import torch
from _common import descend, run_index


class Pool(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("values", torch.randn(1 << 20, generator=g))
        self.register_buffer("index", torch.randint(0, 16, (1 << 20,), generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.zeros(16).index_add_(0, self.index, self.values)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.pool = Pool()
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.pool(self.fc1(x)))


def threads_for(call: int) -> int:
    """The thread count of step number ``call``: 1, 2, 1, 2, ..."""
    return 1 if call % 2 == 0 else 2


def build(first_call: int = 0):
    """The model, its optimizer and a step that runs with 1 thread, then 2, then 1, ..."""
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
