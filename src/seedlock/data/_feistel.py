"""A keyed permutation of ``range(n)`` whose value at any position is computed on its own.

The guide: ``docs/data.md`` (shuffles at any scale).

:class:`FeistelPermutation` is the ``order="feistel"`` shuffle of
:class:`~seedlock.data.ResumableSampler`: position ``p`` of epoch ``e`` maps to an index that is
a pure function of ``(root, e, p)`` and ``n``, in O(1) time and memory, so an epoch of ``10**10``
samples needs no table and a resume at any position costs what its first batch costs.

The construction, a stability contract (``tests/test_shuffle_feistel.py`` pins its values):

* **Domain.** The smallest power of 4 that is ``>= n`` (at least 4): ``2 * h`` bits, split into
  two halves of ``h`` bits, so the Feistel network is balanced. A power of 4 instead of 2 makes
  the domain up to 4 times ``n``: cycle-walking takes ``domain / n`` steps on average, below 4.
  A round keeps at most 31 bits of its hash (``h <= 31``), which bounds ``n`` at ``4**31``.
* **Rounds.** :data:`ROUNDS` rounds of ``(L, R) -> (R, L ^ F_i(R))`` on ``x = (L << h) | R``.
  ``F_i`` is a keyed multiply-xorshift hash on 32-bit words, of which it keeps the top ``h``
  bits (the best mixed; a hash on ``h`` bits alone is nearly linear for small ``h``)::

      f = ((R ^ a_i) * m_i) mod 2**32;  f = ((f ^ (f >> 16)) * m_i') mod 2**32
      F_i(R) = (f ^ (f >> 15)) >> (32 - h)

  The round keys come from ``derive("sampler", epoch, "feistel", i, root=root, bits=96)``:
  ``a_i`` its bits 0-31, ``m_i`` bits 33-63 and ``m_i'`` bits 65-95, each multiplier made odd.
  A 32-bit word times a 31-bit multiplier is below ``2**63``: Python ints and torch ``int64``
  tensors give the same bits, with no overflow to rely on.
* **Cycle-walking.** ``order[p]`` applies the network to ``p``, then again to its output while
  that is ``>= n``. The network is a permutation of the domain, so the walk ends in ``[0, n)``
  and the result is a permutation of ``range(n)``.

:meth:`FeistelPermutation.block` computes a tensor of positions at once (the walk repeats for
the positions still outside ``[0, n)`` only); :meth:`FeistelPermutation.index` computes one
position with Python ints. :class:`LazyShare` is a rank's share of an epoch, as a sequence that
computes what is read of it, block by block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import torch

from seedlock.derivation import Seed, derive

__all__ = ["MAX_SIZE", "ROUNDS", "FeistelPermutation", "LazyShare"]

#: Rounds of the Feistel network.
ROUNDS = 8
#: The largest size: the domain is at most ``4**31``.
MAX_SIZE = 4**31
#: Positions computed at once when a share is iterated: the first block is small (a first
#: batch costs what it holds), later ones grow to the largest.
_FIRST_BLOCK, _LARGEST_BLOCK = 256, 1 << 16
#: The most positions :meth:`FeistelPermutation.block` sends through the network at once.
_CHUNK = 1 << 15
#: The round function works on 32-bit words.
_WORD = (1 << 32) - 1


class FeistelPermutation:
    """The keyed permutation of ``range(size)`` for one ``(root, epoch)``.

    Parameters
    ----------
    size
        ``n``, an int in ``[1, 4**31]``.
    epoch
        The epoch, an int: a key of the round keys.
    root
        The root seed of the round keys (see :func:`seedlock.derive`).

    Attributes
    ----------
    evaluations
        How many values went through the network so far (cycle-walking steps included): the
        work done, counted.

    Raises
    ------
    ValueError
        ``size`` is outside ``[1, 4**31]``.
    """

    def __init__(self, size: int, epoch: int, root: Seed) -> None:
        if type(size) is not int or not 1 <= size <= MAX_SIZE:
            raise ValueError(f"a feistel order needs a size in [1, 4**31], got {size!r}")
        self.size = size
        half = max(1, ((size - 1).bit_length() + 1) // 2)
        self.half, self.mask = half, (1 << half) - 1
        keys = []
        for i in range(ROUNDS):
            material = derive("sampler", epoch, "feistel", i, root=root, bits=96)
            a, m, m2 = ((material >> shift) & _WORD for shift in (0, 32, 64))
            keys.append((a, (m >> 1) | 1, (m2 >> 1) | 1))
        self.keys = tuple(keys)
        self.evaluations = 0

    def _network(self, x: int) -> int:
        half, mask, top = self.half, self.mask, 32 - self.half
        left, right = x >> half, x & mask
        for a, m, m2 in self.keys:
            f = ((right ^ a) * m) & _WORD
            f = ((f ^ (f >> 16)) * m2) & _WORD
            left, right = right, left ^ ((f ^ (f >> 15)) >> top)
        return (left << half) | right

    def index(self, position: int) -> int:
        """The index at ``position``, computed with Python ints.

        Parameters
        ----------
        position
            An int in ``[0, size)``.

        Returns
        -------
        int
            ``order[position]``, equal to what :meth:`block` computes for it.
        """
        if not 0 <= position < self.size:
            raise IndexError(f"position {position} is outside [0, {self.size})")
        x = self._network(position)
        self.evaluations += 1
        while x >= self.size:
            x = self._network(x)
            self.evaluations += 1
        return x

    def _network_tensor(self, x: torch.Tensor) -> torch.Tensor:
        half, mask, top = self.half, self.mask, 32 - self.half
        left, right = x >> half, x & mask
        for a, m, m2 in self.keys:
            f = (right ^ a).mul_(m).bitwise_and_(_WORD)
            f = f.bitwise_xor_(f >> 16).mul_(m2).bitwise_and_(_WORD)
            f = f.bitwise_xor_(f >> 15).bitwise_right_shift_(top)
            left, right = right, f.bitwise_xor_(left)
        self.evaluations += x.numel()
        return (left << half).bitwise_or_(right)

    def block(self, positions: torch.Tensor) -> torch.Tensor:
        """The indices at ``positions``, all at once.

        Parameters
        ----------
        positions
            A 1-D CPU ``int64`` tensor of positions in ``[0, size)``.

        Returns
        -------
        torch.Tensor
            ``order[positions]``, an ``int64`` tensor of the same shape.
        """
        if positions.numel() > _CHUNK:  # in pieces that stay in the cache: twice as fast
            parts = torch.split(positions, _CHUNK)
            return torch.cat([self.block(part) for part in parts])
        out = self._network_tensor(positions)
        pending = torch.nonzero(out >= self.size).squeeze(1)
        while pending.numel():
            walked = self._network_tensor(out[pending])
            out[pending] = walked
            pending = pending[walked >= self.size]
        return out


class LazyShare(Sequence[int]):
    """``order[p % size]`` for each global position ``p`` of a ``range``, read on demand.

    A rank's share of an epoch is ``range(rank, total, world)`` over the order padded with its
    own head (``total`` may exceed ``size``: position ``p`` then reads ``order[p % size]``).
    Slicing gives another share without computing anything; iterating computes blocks of
    positions with :meth:`FeistelPermutation.block`.

    Parameters
    ----------
    permutation
        The epoch's order.
    positions
        The global positions, in order.
    """

    def __init__(self, permutation: FeistelPermutation, positions: range) -> None:
        self.permutation = permutation
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    @overload
    def __getitem__(self, item: int) -> int: ...
    @overload
    def __getitem__(self, item: slice) -> LazyShare: ...
    def __getitem__(self, item: int | slice) -> int | LazyShare:
        if isinstance(item, slice):
            return LazyShare(self.permutation, self.positions[item])
        return self.permutation.index(self.positions[item] % self.permutation.size)

    def __iter__(self) -> Iterator[int]:
        positions, size = self.positions, self.permutation.size
        start, step = 0, _FIRST_BLOCK
        while start < len(positions):
            part = positions[start : start + step]
            values = torch.arange(part.start, part.stop, part.step, dtype=torch.int64)
            yield from self.permutation.block(values.remainder_(size)).tolist()
            start, step = start + step, min(2 * step, _LARGEST_BLOCK)

    def __repr__(self) -> str:
        return f"LazyShare(size={self.permutation.size}, positions={self.positions})"
