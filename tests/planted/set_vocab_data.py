"""Planted: the batch is built by iterating over a ``set`` of words (order: the hash seed)."""

import torch
from _common import descend

VOCAB = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "seven", "wizards",
    "quietly", "hex", "a", "jolly", "vexing", "sphinx", "of", "black", "quartz",
]  # fmt: skip
IDS = {word: i for i, word in enumerate(VOCAB)}


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(len(VOCAB), 8)
        self.fc = torch.nn.Linear(8, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(ids))


def batch() -> torch.Tensor:
    return torch.tensor([IDS[word] for word in set(VOCAB)])  # plant: set order


def build():
    """The model (seeded here: only the hash seed may differ), its optimizer and one step."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        descend(model, opt, batch())

    return model, opt, step


if __name__ == "__main__":
    build()[2]()
