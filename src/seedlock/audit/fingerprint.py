"""Tensor fingerprints: an order-sensitive hash of the exact bits, dtype and shape, plus a summary.

On the CPU the fingerprint is SHA-256 (hardware-accelerated on current x86 and ARM CPUs) over a
header (dtype, shape) and the tensor's bytes, read in place: no copy for a contiguous tensor.
Any single-bit flip, any swap of two different elements, another dtype or shape of the same
bytes: all change it (up to SHA-256 collisions). ``torch.hash_tensor`` XORs words together, so a
swap of two elements leaves it unchanged; it is not used.

On an accelerator the fingerprint is computed on the device: the tensor's 32-bit words are
weighted by two position-dependent odd multipliers and summed modulo 2**64, and only those two
integers come back to the host. Odd weights make every single-bit flip change the sum; distinct
weights per position make swaps change it (except with probability ~2**-64 per swap).

:func:`summary` gives the size of a divergence cheaply: float64 sum, max |x|, NaN and Inf counts.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import torch

__all__ = ["Summary", "fingerprint", "summary"]

_DIGEST_BYTES = 16
# Odd 64-bit multipliers for the on-device hash (fixed: fingerprints are compared across runs).
_K1 = 0x9E3779B97F4A7C15
_K2 = 0xC2B2AE3D27D4EB4F
_CHUNK = 1 << 22  # words per on-device pass: bounds the temporary memory


class Summary(NamedTuple):
    """Cheap statistics of a tensor (floating point: NaN / Inf aware)."""

    sum: float
    absmax: float
    nans: int
    infs: int


def _header(t: Any) -> bytes:
    return f"{t.dtype}|{tuple(t.shape)}|".encode()


def _as_bytes(t: Any) -> Any:
    """A contiguous uint8 view of ``t``'s bytes (no copy when ``t`` is already contiguous)."""
    flat = t.detach().contiguous().reshape(-1)
    if flat.dtype.is_complex:
        flat = torch.view_as_real(flat).reshape(-1)
    return flat.view(dtype=torch.uint8)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _device_hash(t: Any) -> bytes:
    """The on-device fingerprint's two 64-bit sums (see the module docstring)."""
    data = _as_bytes(t)
    pad = (-data.numel()) % 4
    if pad:
        data = torch.cat([data, data.new_zeros(pad)])
    words = data.view(torch.int32)
    h1 = torch.zeros((), dtype=torch.int64, device=t.device)
    h2 = torch.zeros((), dtype=torch.int64, device=t.device)
    k1, k2 = _signed(_K1), _signed(_K2)
    for start in range(0, words.numel(), _CHUNK):
        chunk = words[start : start + _CHUNK].to(torch.int64) & 0xFFFFFFFF
        position = torch.arange(start, start + chunk.numel(), device=t.device, dtype=torch.int64)
        # int64 arithmetic wraps around: the sums are taken modulo 2**64.
        h1 += (chunk * ((position * k1) | 1)).sum()
        h2 += (chunk * (((position + 1) * k2) | 1)).sum()
    both = torch.stack([h1, h2]).cpu().tolist()  # the one transfer
    return b"".join(int(v).to_bytes(8, "little", signed=True) for v in both)


def fingerprint(t: Any) -> str:
    """A 32-hex-digit fingerprint of ``t``'s exact bits, dtype and shape.

    >>> fingerprint(torch.tensor([1.0, 2.0])) == fingerprint(torch.tensor([2.0, 1.0]))
    False
    """
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.device.type != "cpu":
        payload = _device_hash(t)
        h = hashlib.sha256(_header(t))
        h.update(payload)
        return h.hexdigest()[: 2 * _DIGEST_BYTES]
    h = hashlib.sha256(_header(t))
    data = _as_bytes(t)
    if data.numel():
        h.update(memoryview(data.numpy()))
    return h.hexdigest()[: 2 * _DIGEST_BYTES]


def summary(t: Any) -> Summary:
    """float64 sum, max |x|, NaN and Inf counts of ``t`` (one transfer from a device)."""
    x = t.detach()
    if x.numel() == 0:
        return Summary(0.0, 0.0, 0, 0)
    if x.dtype == torch.bool or not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.float64)
        stats = torch.stack([x.sum(), x.abs().max(), x.new_zeros(()), x.new_zeros(())])
    else:
        if x.is_complex():
            x = torch.view_as_real(x)
        x = x.to(torch.float64)
        finite = torch.isfinite(x)
        nans = torch.isnan(x).sum().to(torch.float64)
        infs = torch.isinf(x).sum().to(torch.float64)
        clean = torch.where(finite, x, x.new_zeros(()))
        stats = torch.stack([clean.sum(), clean.abs().max(), nans, infs])
    s, m, n, i = stats.cpu().tolist()
    return Summary(float(s), float(m), int(n), int(i))
