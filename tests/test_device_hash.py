"""The on-device fingerprint on the CPU: its definition, checked against a plain Python
reading of it, on every kind of view, including those whose bytes do not start on a 4-byte
boundary (an fp16 ``x[1:]``, uint8 and bool slices) or do not fill a last word."""

from __future__ import annotations

import pytest
import torch

from seedlock.audit import _device_hash, fingerprints

K1, K2 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F


def reference(t: torch.Tensor) -> bytes:
    """The definition applied to ``t``'s bytes (see :func:`reference_bytes`)."""
    return reference_bytes(bytes(t.contiguous().view(torch.uint8).reshape(-1).tolist()))


def reference_bytes(data: bytes) -> bytes:
    """The definition, word by word: little-endian 32-bit words of the bytes (zero-padded),
    weighted by (i * K1) | 1 and ((i + 1) * K2) | 1, summed modulo 2**64."""
    data += b"\0" * (-len(data) % 4)
    h1 = h2 = 0
    for i in range(len(data) // 4):
        word = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        h1 += word * (((i * K1) % 2**64) | 1)
        h2 += word * ((((i + 1) * K2) % 2**64) | 1)
    return (h1 % 2**64).to_bytes(8, "little") + (h2 % 2**64).to_bytes(8, "little")


def base(dtype: torch.dtype, n: int = 37) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(n, generator=g) > 0.5
    if dtype.is_floating_point:
        return torch.randn(n, generator=g).to(dtype)
    return torch.randint(0, 100, (n,), generator=g).to(dtype)


VIEWS = {
    "whole": lambda x: x,
    "[1:]": lambda x: x[1:],
    "[2:]": lambda x: x[2:],
    "[3:-1]": lambda x: x[3:-1],
    "[5:6]": lambda x: x[5:6],
    "[::2]": lambda x: x[::2],
    "empty": lambda x: x[:0],
}
DTYPES = [torch.float16, torch.bfloat16, torch.uint8, torch.bool, torch.int8, torch.float32,
          torch.float64]  # fmt: skip


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_view_hashes_as_the_definition_says(dtype, view):
    t = VIEWS[view](base(dtype))
    assert _device_hash.device_hash(t) == reference(t)
    assert _device_hash.device_hash(t) == _device_hash.device_hash(t.clone())  # same bytes


def test_a_chunk_boundary_changes_nothing(monkeypatch):
    t = base(torch.uint8, 1001)[3:]  # misaligned, 998 bytes: not a whole number of words
    whole = _device_hash.device_hash(t)
    monkeypatch.setattr(_device_hash, "CHUNK", 7)  # many chunks, the last one short
    assert _device_hash.device_hash(t) == whole == reference(t)


def test_the_fingerprint_of_a_misaligned_view_on_the_device_path(monkeypatch):
    monkeypatch.setattr(fingerprints, "_CPU_AS_DEVICE", True)
    x = base(torch.float16, 64)
    assert fingerprints.fingerprint(x[1:]) == fingerprints.fingerprint(x[1:].clone())
    assert fingerprints.fingerprint(x[1:]) != fingerprints.fingerprint(x[:-1])
