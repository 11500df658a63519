"""A fake CUDA device layer around torch's real lazy-initialisation code, for CPU-only machines.

torch's CUDA random API (``torch.cuda.manual_seed_all``, ``set_rng_state``, ``get_rng_state``)
queues its calls until CUDA starts, then runs them in ``torch.cuda._lazy_init``: that ordering is
where seeding and restoring go wrong. :func:`fake_cuda` keeps all of that code as torch ships it
and replaces only what needs a GPU: the driver calls (``torch._C._cuda_init``, the device count
and current device) and the per-device generators, which become :class:`FakeGenerator` objects
holding a Philox-like state (a seed and an offset, 16 bytes, as CUDA's are).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import pytest
import torch
from torch._utils import _LazySeedTracker

from seedlock import backends


class FakeGenerator:
    """A device generator: ``manual_seed`` sets the seed and zeroes the offset; ``draw`` gives a
    number that depends on both and advances the offset, as a Philox draw does."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.seed_value = 67280421310721  # CUDA's default seed
        self.offset = 0

    def manual_seed(self, seed: int) -> FakeGenerator:
        self.seed_value, self.offset = int(seed) & (2**64 - 1), 0
        return self

    def seed(self) -> int:  # torch.cuda.seed(): OS entropy
        self.manual_seed(int.from_bytes(hashlib.sha256(str(id(self)).encode()).digest()[:8]))
        return self.seed_value

    def initial_seed(self) -> int:
        return self.seed_value

    def get_state(self) -> torch.Tensor:
        data = self.seed_value.to_bytes(8, "little") + self.offset.to_bytes(8, "little")
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def set_state(self, state: torch.Tensor) -> FakeGenerator:
        data = bytes(state.tolist())
        assert len(data) == 16, "a CUDA generator state is 16 bytes"
        self.seed_value = int.from_bytes(data[:8], "little")
        self.offset = int.from_bytes(data[8:], "little")
        return self

    def draw(self) -> int:
        """One random number (what a dropout mask would use)."""
        value = hashlib.sha256(f"{self.seed_value}:{self.offset}".encode()).digest()
        self.offset += 4
        return int.from_bytes(value[:4], "little")


@contextlib.contextmanager
def fake_cuda(monkeypatch: pytest.MonkeyPatch, devices: int = 2) -> Iterator[list[FakeGenerator]]:
    """Make torch see ``devices`` CUDA devices, not started yet; yield their generators.

    ``torch.cuda._lazy_init()`` (what the first CUDA op calls) starts them, running the queued
    calls with torch's own code.
    """
    generators = [FakeGenerator(i) for i in range(devices)]
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "_is_compiled", lambda: True)
    monkeypatch.setattr(cuda, "_cached_device_count", devices)
    monkeypatch.setattr(cuda, "_cudart", object())
    monkeypatch.setattr(cuda, "_initialized", False)
    monkeypatch.setattr(cuda, "_queued_calls", [])
    monkeypatch.setattr(cuda, "_lazy_seed_tracker", _LazySeedTracker())
    monkeypatch.setattr(cuda, "default_generators", tuple(generators))
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch._C, "_cuda_init", lambda: None, raising=False)
    monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", lambda: devices, raising=False)
    monkeypatch.setattr(torch._C, "_cuda_getDevice", lambda: 0, raising=False)
    # seedlock asks torch for the devices once per process (they do not come and go): ask again.
    monkeypatch.setattr(backends.by_name()["torch"], "_found", None)
    yield generators


def start() -> None:
    """What the first CUDA op does: torch's real lazy initialisation."""
    torch.cuda._lazy_init()
