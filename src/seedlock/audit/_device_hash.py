"""The on-device fingerprint: two position-weighted 64-bit sums of a tensor's 32-bit words.

Computed where the tensor lives (see :mod:`seedlock.audit.fingerprints`), so only 16 bytes come
back to the host. The words are the little-endian 32-bit words of the tensor's bytes, the last
one padded with zeros; word ``i`` is weighted by the odd numbers ``(i * K1) | 1`` and
``((i + 1) * K2) | 1``, and the products are summed modulo 2**64. Work goes in chunks of
:data:`CHUNK` words, which bounds the temporary memory.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CHUNK", "as_bytes", "device_hash", "device_sums", "sums_bytes"]

# Odd 64-bit multipliers (fixed: fingerprints are compared across runs).
_K1 = 0x9E3779B97F4A7C15
_K2 = 0xC2B2AE3D27D4EB4F
CHUNK = 1 << 22  # words per on-device pass


def as_bytes(t: Any) -> Any:
    """A contiguous uint8 view of ``t``'s bytes (no copy when ``t`` is already contiguous)."""
    # resolve_*: a lazily conjugated / negated view holds other bytes than its values (no-ops
    # for an ordinary tensor).
    flat = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    if flat.dtype.is_complex:
        flat = torch.view_as_real(flat).reshape(-1)
    return flat.view(dtype=torch.uint8)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _words(data: Any, start: int, stop: int) -> Any:
    """Words ``start`` to ``stop`` of the bytes ``data`` (little-endian, the last one padded
    with zeros), as int64 values from 0 to 2**32 - 1. A slice whose bytes start on a 4-byte
    boundary is viewed as int32 in place; others (an fp16 ``x[1:]``, a uint8 or bool slice)
    are assembled from their bytes. Either way at most one chunk is copied."""
    part = data[start * 4 : stop * 4]
    if part.numel() % 4 == 0 and part.storage_offset() % 4 == 0:
        return part.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    pad = (-part.numel()) % 4
    if pad:
        part = torch.cat([part, part.new_zeros(pad)])
    b = part.reshape(-1, 4).to(torch.int64)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)


def device_sums(t: Any) -> torch.Tensor:
    """The on-device fingerprint's two 64-bit sums (see the module docstring), still on the
    device: an int64 tensor of two elements."""
    data = as_bytes(t)
    count = (data.numel() + 3) // 4  # words, the last one zero-padded
    h1 = torch.zeros((), dtype=torch.int64, device=t.device)
    h2 = torch.zeros((), dtype=torch.int64, device=t.device)
    k1, k2 = _signed(_K1), _signed(_K2)
    for start in range(0, count, CHUNK):
        chunk = _words(data, start, min(start + CHUNK, count))
        position = torch.arange(start, start + chunk.numel(), device=t.device, dtype=torch.int64)
        # int64 arithmetic wraps around: the sums are taken modulo 2**64.
        h1 += (chunk * ((position * k1) | 1)).sum()
        h2 += (chunk * (((position + 1) * k2) | 1)).sum()
    return torch.stack([h1, h2])


def sums_bytes(sums: list[int]) -> bytes:
    return b"".join(int(v).to_bytes(8, "little", signed=True) for v in sums)


def device_hash(t: Any) -> bytes:
    """The on-device fingerprint's two 64-bit sums, as 16 bytes (one transfer)."""
    return sums_bytes(device_sums(t).cpu().tolist())
