"""The on-device fingerprint: two position-weighted 64-bit sums of a tensor's 32-bit words.

Computed where the tensor lives (see :mod:`seedlock.audit.fingerprints`), so only 16 bytes come
back to the host. The definition: the words are the little-endian 32-bit words ``u[i]`` of the
tensor's bytes (unsigned; the last one padded with zeros); word ``i`` is weighted by the odd
numbers ``(i * K1) | 1`` and ``((i + 1) * K2) | 1``, and the products are summed modulo 2**64.
This value does not depend on how the work is split, nor on the device.

How it is computed. As ``i * K1`` is odd exactly when ``i`` is, ``(i * K1) | 1`` is
``i * K1 + [i even]``, so both sums follow from three: ``T = sum(u)``, ``E = sum of the words
at even positions`` and ``S = sum(i * u[i])`` (all modulo 2**64)::

    h1 = K1 * S + E          h2 = K2 * (S + T) + (T - E)

The words are read as rows of :data:`ROW` words, :data:`CHUNK` words (a block of rows) at a
time: a block is converted to float64 (one temporary of ``8 * CHUNK`` bytes: 4 MiB) and one
matrix product with a fixed ``ROW x 3`` matrix gives, per row, its sum, the sum of
``column * word`` and the sum of its even columns. Every one of those is an integer below
2**53, so float64 holds it exactly whatever the order of the additions (any BLAS, any device).
The per-row results (24 bytes per ``ROW`` words) are then combined in int64, where arithmetic
wraps modulo 2**64. Per block: three aten ops (four for a view whose bytes do not start on a
4-byte boundary, which is first copied); the last partial row, word by word. No host sync:
:func:`device_sums` returns a device tensor.

:func:`device_hash` is the function for hashing one tensor on its device and waiting for the
result (what a benchmark of the fingerprint times); :func:`device_stats` gives, without a host
sync, what a summary needs; :func:`fetch` brings many device results to the host in one
transfer per device.
"""

from __future__ import annotations

import struct
from typing import Any

import torch

__all__ = [
    "CHUNK", "ROW", "as_bytes", "as_floats", "device_hash", "device_stats", "device_sums", "fetch",
    "local_shard", "summable", "sums_bytes",
]  # fmt: skip

# Odd 64-bit multipliers (fixed: fingerprints are compared across runs).
_K1 = 0x9E3779B97F4A7C15
_K2 = 0xC2B2AE3D27D4EB4F
#: Words per row: even (the parity of a position is its column's), and at most 2048 so that a
#: row's ``sum(column * word)`` stays below 2**53 (exact in float64).
ROW = 1024
#: Words per block (a multiple of :data:`ROW`): bounds the temporary memory to ``8 * CHUNK``
#: bytes. The result does not depend on it.
CHUNK = 1 << 19


def as_bytes(t: Any) -> Any:
    """A contiguous uint8 view of ``t``'s bytes (no copy when ``t`` is already contiguous)."""
    # resolve_*: a lazily conjugated / negated view holds other bytes than its values (no-ops
    # for an ordinary tensor).
    flat = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    if flat.dtype.is_complex:
        flat = torch.view_as_real(flat).reshape(-1)
    return flat.view(dtype=torch.uint8)


def local_shard(t: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """``(the tensor this process holds, its placements)`` for a DTensor (its local shard, the
    same object each call), ``(t, None)`` for any other tensor."""
    placements = getattr(t, "placements", None)
    if placements is None or not hasattr(t, "to_local"):
        return t, None
    with torch.no_grad():  # without autograd, to_local() is the DTensor's own local tensor
        return t.to_local(), tuple(placements)


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


# The ROW x 3 matrix of the block products, per (device, ROW): ones, the column, even columns.
_WEIGHTS: dict[tuple[Any, int], torch.Tensor] = {}


def _weights(device: Any, row: int) -> torch.Tensor:
    found = _WEIGHTS.get((device, row))
    if found is None:
        column = torch.arange(row, dtype=torch.float64, device=device)
        found = torch.stack([torch.ones_like(column), column, 1.0 - column % 2], dim=1)
        _WEIGHTS[device, row] = found
    return found


def _body(data: Any, rows: int, device: Any) -> torch.Tensor:
    """``[T, S, E]`` (int64, see the module docstring) of the first ``rows * ROW`` words."""
    row, per_block = ROW, max(1, CHUNK // ROW)
    weights = _weights(device, row)
    out = torch.empty(rows, 3, dtype=torch.float64, device=device)
    aligned = data.storage_offset() % 4 == 0
    for first in range(0, rows, per_block):
        last = min(first + per_block, rows)
        part = data[first * row * 4 : last * row * 4]
        if not aligned:
            part = part.clone()  # a block of bytes that starts on a 4-byte boundary
        block = part.view(torch.int32).view(last - first, row).to(torch.float64)
        block.remainder_(4294967296.0)  # signed int32 -> the unsigned word, exactly
        torch.mm(block, weights, out=out[first:last])
    per_row = out.to(torch.int64)
    totals = per_row.sum(0)  # T, sum(column * word), E
    start = torch.arange(rows, dtype=torch.int64, device=device) * row
    s = (per_row[:, 0] * start).sum() + totals[1]
    return torch.stack([totals[0], s, totals[2]])


def device_sums(t: Any) -> torch.Tensor:
    """The on-device fingerprint's two 64-bit sums (see the module docstring), still on the
    device: an int64 tensor of two elements. No host sync; temporaries of at most
    ``8 * CHUNK`` bytes (and 24 bytes per :data:`ROW` words)."""
    data = as_bytes(t)
    device = data.device
    count = (data.numel() + 3) // 4  # words, the last one zero-padded
    rows = data.numel() // 4 // ROW  # whole rows of whole words
    acc = _body(data, rows, device) if rows else torch.zeros(3, dtype=torch.int64, device=device)
    for start in range(rows * ROW, count, CHUNK):  # the last partial row, word by word
        u = _words(data, start, min(start + CHUNK, count))
        position = torch.arange(start, start + u.numel(), dtype=torch.int64, device=device)
        even = u[start % 2 :: 2].sum()
        acc = acc + torch.stack([u.sum(), (u * position).sum(), even])
    total, s, even = acc.unbind()
    # int64 arithmetic wraps around: modulo 2**64.
    h1 = s * _signed(_K1) + even
    h2 = (s + total) * _signed(_K2) + (total - even)
    return torch.stack([h1, h2])


def sums_bytes(sums: list[int]) -> bytes:
    """The two sums as 16 bytes (little-endian, signed 64-bit)."""
    return b"".join(int(v).to_bytes(8, "little", signed=True) for v in sums)


def device_hash(t: Any) -> bytes:
    """Hash one tensor on its device and wait for it: the on-device fingerprint's two 64-bit
    sums, as 16 bytes (one transfer). What to time against ``t.clone()`` in a benchmark."""
    return sums_bytes(device_sums(t).cpu().tolist())


def summable(t: Any) -> Any:
    """``t`` as a summary reads it (``None`` when empty): complex as its real and imaginary
    parts, bool as uint8, half types as float32."""
    x = t.detach()
    if x.numel() == 0:
        return None
    if x.is_complex():
        x = torch.view_as_real(x)
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if x.is_floating_point() and x.element_size() < 4:
        x = x.float()
    return x


def device_stats(x: Any) -> torch.Tensor:
    """``[sum, min, max]`` of ``x`` as a float64 tensor on its device, without a host sync (the
    sum accumulated in ``x``'s dtype: float32 for half types, see
    :func:`seedlock.audit.fingerprints.summary`). ``x``: a non-empty :func:`summable`."""
    low, high = torch.aminmax(x)
    return torch.stack([x.sum().to(torch.float64), low.to(torch.float64), high.to(torch.float64)])


def fetch(values: list[torch.Tensor]) -> list[list[int]]:
    """The int64 (or float64: returned bit for bit, as int64) ``values`` as Python ints, brought
    to the host in one transfer per device."""
    found: list[list[int]] = [[] for _ in values]
    by_device: dict[Any, list[int]] = {}
    for i, value in enumerate(values):
        by_device.setdefault(value.device, []).append(i)
    for indices in by_device.values():
        parts = [values[i].reshape(-1) for i in indices]
        parts = [p.view(torch.int64) if p.dtype == torch.float64 else p for p in parts]
        flat = torch.cat(parts).cpu().tolist()  # the one transfer from this device
        at = 0
        for i, part in zip(indices, parts, strict=True):
            found[i] = flat[at : at + part.numel()]
            at += part.numel()
    return found


def as_floats(bits: list[int]) -> tuple[float, ...]:
    """float64 values from their bits, as :func:`fetch` returns them."""
    return struct.unpack(f"<{len(bits)}d", struct.pack(f"<{len(bits)}q", *bits))
