"""``seedlock.data.sample_generator(device="cuda")``: a sample's own stream on the device."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

import seedlock
import seedlock.data
from seedlock.data import SeededDataset

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


class OnDevice(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[bytes, str, bool]:
        generator = seedlock.data.sample_generator(device="cuda")
        drawn = torch.rand(16, device="cuda", generator=generator)
        same = seedlock.data.sample_generator(torch.device("cuda")) is generator
        return drawn.cpu().numpy().tobytes(), str(generator.device), same


def test_a_cuda_sample_generator_gives_the_same_bits_every_time():
    first = [SeededDataset(OnDevice(), root=0)[(0, i)] for i in range(4)]
    again = [SeededDataset(OnDevice(), root=0)[(0, i)] for i in reversed(range(4))][::-1]
    assert first == again
    assert all(device.startswith("cuda") and same for _, device, same in first)
    assert len({bits for bits, _, _ in first}) == 4
    seed = seedlock.derive("data", 0, 2, "sample_generator", root=0, bits=64)
    expected = torch.rand(16, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
    assert first[2][0] == expected.cpu().numpy().tobytes()
