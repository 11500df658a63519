"""The order of each epoch (a resumable, rank-aware sampler) and the one cursor in it.

The guide: ``docs/data.md`` (its own order; exact resume).

The shuffle order of epoch ``e`` is a pure function of ``(root, e)``, one of two:

* ``order="randperm"`` (the default): a permutation drawn with a CPU ``torch.Generator`` seeded
  with ``derive("sampler", e, bits=32)``. Resuming at any position costs one permutation,
  whatever the position: O(n) time and memory per epoch.
* ``order="feistel"``: a keyed Feistel permutation (:mod:`seedlock.data._feistel`) whose index at
  any position is computed on its own, so an epoch takes O(1) memory and its first batch, fresh
  or resumed anywhere, O(batch) time, up to ``4**31`` samples. :meth:`ResumableSampler.indices`
  is then a lazy sequence.

Nothing is drawn from the global torch RNG (``RandomSampler(generator=None)`` draws from it
every epoch).

Each ``iter()`` starts the next epoch by itself (``DistributedSampler`` repeats the same order
forever when ``set_epoch`` is forgotten); ``set_epoch`` still works.

Across ranks it partitions exactly like ``torch.utils.data.DistributedSampler``: without
``drop_last`` the permutation is padded with its own first indices up to a multiple of the world
size; with ``drop_last`` the tail is dropped; rank ``r`` takes every ``world``-th index from ``r``.

With ``global_batch_size=G`` (the elastic layout) the order is padded (or cut) to a multiple of
``G`` instead, so every global batch of ``G`` consecutive positions is whole, and global batch
``k`` holds positions ``[k*G, (k+1)*G)`` whatever the number of ranks that share it (any number
that divides ``G``). The state then counts global samples, and resumes on another world size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence, Sized
from typing import Any

import torch
from torch.utils.data import Sampler

from seedlock import _ranks
from seedlock.backends.checks import fields_problem, int_problem
from seedlock.data._elastic import check_start, elastic_problem, layout_mismatch
from seedlock.data._feistel import MAX_SIZE, FeistelPermutation, LazyShare
from seedlock.derivation import Seed, check_seed, derive, get_root
from seedlock.errors import CorruptStateError, check_version

__all__ = ["ORDERS", "Cursor", "ResumableSampler", "check_state_version"]

#: Version of :meth:`ResumableSampler.state_dict`'s layout: 1 for the ``"randperm"`` order (no
#: ``"order"`` field, as before there was a choice), 2 with an ``"order"`` field, 3 for the
#: elastic layout (``global_batch_size``), which counts global ``"samples"``.
_STATE_VERSION = 3
#: The orders a sampler can shuffle in; the first is the default.
ORDERS = ("randperm", "feistel")


class Cursor:
    """The one position in the data order, shared by a sampler and the loader built on it.

    Between epochs it says where the next ``iter()`` begins: ``next_epoch`` at this rank's
    sample ``start``. While an epoch runs it also counts the samples delivered so far. Whoever
    iterates (the sampler alone, or the loader, counting the batches its caller received) moves
    it; :meth:`position` is what a state dict records.
    """

    __slots__ = ("done", "epoch", "next_epoch", "running", "start", "token")

    def __init__(self, epoch: int) -> None:
        self.next_epoch, self.start = epoch, 0
        self.epoch, self.done, self.running = epoch, 0, False
        self.token = 0  # which iteration may move the cursor: the latest one

    def begin(self) -> tuple[int, int, int]:
        """Start the next epoch: ``(epoch, start, token)``; only ``token`` advances it."""
        epoch, start = self.next_epoch, self.start
        self.next_epoch, self.start = epoch + 1, 0
        self.epoch, self.done, self.running = epoch, start, True
        self.token += 1
        return epoch, start, self.token

    def advance(self, token: int, samples: int) -> None:
        """Count ``samples`` more delivered by the iteration ``token`` (an older one: ignored)."""
        if token == self.token:
            self.done += samples

    def finish(self, token: int) -> None:
        """The iteration ``token`` reached the end of its epoch."""
        if token == self.token:
            self.running = False

    def seek(self, epoch: int, start: int) -> None:
        """Make the next ``iter()`` begin ``epoch`` at sample ``start``."""
        self.next_epoch, self.start, self.running = epoch, start, False
        self.token += 1

    def position(self, total: int) -> tuple[int, int]:
        """``(epoch, samples)`` to resume from: the epoch in progress while fewer than ``total``
        (the samples an epoch delivers) are done, else where the next ``iter()`` begins."""
        if self.running and self.done < total:
            return self.epoch, self.done
        return self.next_epoch, self.start


def check_state_version(state: object, what: str, newest: int) -> None:
    """Refuse a state that is not a dict or that a newer seedlock wrote (its ``version``).

    A state without ``"version"`` is version 1, what seedlock wrote before it had one.
    """
    if not isinstance(state, dict):
        raise CorruptStateError(f"not a seedlock {what} (a {type(state).__name__})")
    check_version(state.get("version", 1), newest, what)


class ResumableSampler(Sampler[int]):
    """Indices of a map-style dataset, shuffled per epoch from the root seed; resumable in O(1).

    ``state_dict()`` is ``{"version", "epoch", "position"}``: the epoch in progress (or next)
    and how many of this rank's indices were yielded (with ``order="feistel"``, also
    ``"order"``; with ``global_batch_size``, see :meth:`state_dict`). The sampler holds the one
    :class:`Cursor` of the data order; :func:`seedlock.data.loader` moves the same cursor
    (counting the batches its caller received, which is what makes its resume exact under
    worker prefetching), so ``set_epoch`` and ``load_state_dict`` on the sampler move the
    loader too.

    Parameters
    ----------
    data_source
        The dataset (anything with ``len()``) or its size, an int >= 0.
    shuffle
        Shuffle each epoch (see the module docstring); default ``True``. ``False``: index order.
    seed
        The root of the order; default ``None``: the process's root seed
        (:func:`seedlock.get_root`), read at each epoch.
    num_replicas
        How many ranks share the data; default ``None``: :func:`seedlock.distributed.world_size`.
    rank
        This rank's share, in ``[0, num_replicas)``; default ``None``:
        :func:`seedlock.distributed.rank`.
    drop_last
        Drop the tail of the order so that it splits evenly over the ranks; default ``False``:
        pad it with its own first indices, as ``DistributedSampler`` does.
    epoch
        The epoch the first ``iter()`` uses; default 0.
    order
        How an epoch is shuffled (see the module docstring): ``"randperm"`` (default) or
        ``"feistel"``, for datasets of any size (up to ``4**31``).
    global_batch_size
        The elastic layout (see the module docstring): pad (or, with ``drop_last``, cut) the
        order to a multiple of this many samples, an int that ``num_replicas`` divides; default
        ``None``: to a multiple of ``num_replicas``.

    Attributes
    ----------
    cursor
        The :class:`Cursor`: the one position in the data order.

    Raises
    ------
    ValueError
        A negative size, ``num_replicas < 1``, ``rank`` outside ``[0, num_replicas)``, an
        unknown ``order``, with ``order="feistel"`` a size above ``4**31``, or a
        ``global_batch_size`` that is not an int >= 1 that ``num_replicas`` divides.
    TypeError
        ``seed`` is not an int, str or bytes.
    """

    def __init__(
        self,
        data_source: Sized | int,
        *,
        shuffle: bool = True,
        seed: Seed | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        epoch: int = 0,
        order: str = "randperm",
        global_batch_size: int | None = None,
    ) -> None:
        self.size = data_source if isinstance(data_source, int) else len(data_source)
        if self.size < 0:
            raise ValueError(f"the dataset size must be >= 0, got {self.size}")
        self.num_replicas = _ranks.world_size() if num_replicas is None else num_replicas
        self.rank = _ranks.rank() if rank is None else rank
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(
                f"rank must be in [0, num_replicas), got rank {self.rank} of {self.num_replicas}"
            )
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, got {order!r}")
        if order == "feistel" and self.size > MAX_SIZE:
            raise ValueError(f"order='feistel' takes sizes up to 4**31, got {self.size}")
        if global_batch_size is not None and (
            type(global_batch_size) is not int
            or global_batch_size < 1
            or global_batch_size % self.num_replicas
        ):
            raise ValueError(
                f"global_batch_size must be an int >= 1 that the {self.num_replicas} rank(s) "
                f"divide, got {global_batch_size!r}"
            )
        self.global_batch_size = global_batch_size
        self.shuffle = shuffle
        self.order = order
        self.drop_last = drop_last
        self.seed = None if seed is None else check_seed(seed)
        self.cursor = Cursor(epoch)

    # -- the order ---------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """How many indices this rank gets per epoch."""
        if self.global_batch_size is not None:
            whole, rest = divmod(self.size, self.global_batch_size)
            whole += 1 if rest and not self.drop_last else 0
            return whole * self.global_batch_size // self.num_replicas
        if self.drop_last and self.size % self.num_replicas:
            return math.ceil((self.size - self.num_replicas) / self.num_replicas)
        return math.ceil(self.size / self.num_replicas)

    def indices(self, epoch: int) -> Sequence[int]:
        """This rank's indices for ``epoch``, in order.

        Parameters
        ----------
        epoch
            The epoch, an int.

        Returns
        -------
        sequence of int
            A pure function of ``(root, epoch)`` (and of the size, ``num_replicas``, ``rank``,
            ``shuffle``, ``drop_last`` and ``order``): a list, or with ``order="feistel"`` a
            :class:`~seedlock.data._feistel.LazyShare` that computes what is read of it (slicing
            it computes nothing).

        Raises
        ------
        LookupError
            No ``seed`` was given and the process has no root seed.
        """
        total = self.num_samples * self.num_replicas
        if self.shuffle and self.order == "feistel" and self.size:
            root = get_root() if self.seed is None else self.seed
            # Global position p of the padded order reads order[p % size], as the padding below.
            permutation = FeistelPermutation(self.size, epoch, root)
            return LazyShare(permutation, range(self.rank, total, self.num_replicas))
        if self.shuffle:
            root = get_root() if self.seed is None else self.seed
            # On the CPU whatever torch.set_default_device says: the order is the same everywhere.
            generator = torch.Generator("cpu").manual_seed(derive("sampler", epoch, root=root,
                                                                  bits=32))  # fmt: skip
            order: list[int] = torch.randperm(self.size, generator=generator, device="cpu").tolist()
        else:
            order = list(range(self.size))
        if len(order) < total:  # pad with the order's own head, as DistributedSampler does
            padding = total - len(order)
            repeats = math.ceil(padding / len(order)) if order else 0
            order += (order * repeats)[:padding]
        else:
            order = order[:total]
        return order[self.rank : total : self.num_replicas]

    # -- the Sampler protocol -------------------------------------------------------------------
    def __iter__(self) -> Iterator[int]:
        epoch, start, token = self.cursor.begin()
        for index in self.indices(epoch)[start:]:
            self.cursor.advance(token, 1)
            yield index
        self.cursor.finish(token)

    def __len__(self) -> int:
        return self.num_samples

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will use."""
        return self.cursor.next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` use ``epoch`` from its start (as ``DistributedSampler``'s).

        While an iteration of ``epoch`` itself runs, nothing changes: trainers that call
        ``set_epoch(e)`` right after ``iter()`` started epoch ``e`` (Lightning does) keep its
        position counting.

        Parameters
        ----------
        epoch
            The epoch, an int.
        """
        cursor = self.cursor
        if cursor.running and cursor.epoch == epoch and cursor.done < self.num_samples:
            return
        cursor.seek(epoch, 0)

    # -- Stateful ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where a new ``iter()`` resumes after :meth:`load_state_dict`.

        Returns
        -------
        dict
            ``{"version": 1, "epoch": e, "position": p}``: the epoch in progress (or the next
            one) and how many of this rank's indices of it were yielded; with
            ``order="feistel"``, ``{"version": 2, "epoch": e, "position": p, "order":
            "feistel"}``; with ``global_batch_size``, ``{"version": 3, "epoch": e, "samples":
            s, "order": o, "global_batch_size": g}``, where ``s`` counts the samples yielded to
            all ranks (this rank's position times the number of ranks: the ranks move in step).
            Right after a ``load_state_dict``, what was loaded.
        """
        epoch, position = self.cursor.position(self.num_samples)
        if self.global_batch_size is not None:
            return {"version": 3, "epoch": epoch, "samples": position * self.num_replicas,
                    "order": self.order, "global_batch_size": self.global_batch_size}  # fmt: skip
        if self.order == "randperm":  # the layout of before the choice: older seedlocks read it
            return {"version": 1, "epoch": epoch, "position": position}
        return {"version": 2, "epoch": epoch, "position": position, "order": self.order}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next ``iter()`` continue at ``state``'s position.

        Parameters
        ----------
        state
            A dict :meth:`state_dict` returned (one without ``"version"`` is read as version 1:
            the ``"randperm"`` order).

        Raises
        ------
        seedlock.errors.CorruptStateError
            ``state`` is not a sampler state, its position is outside this sampler's epoch, or
            it was saved by a sampler of another ``order`` or ``global_batch_size``.
        seedlock.errors.WorldSizeMismatchError
            An elastic state whose global sample count this many ranks cannot split.
        seedlock.errors.StateVersionError
            A newer seedlock wrote it. In every case nothing changes.
        """
        check_state_version(state, "sampler state", _STATE_VERSION)
        version = state.get("version", 1)
        if version == 3 or self.global_batch_size is not None:
            self.cursor.seek(*self._elastic_position(state))
            return
        keys = ["version", "epoch", "position"] if "version" in state else ["epoch", "position"]
        problems = fields_problem(state, keys + ["order"] * (version >= 2), "sampler state")
        if not problems:
            problems += int_problem("epoch", state["epoch"], 0, 2**63 - 1)
            problems += int_problem("position", state["position"], 0, self.num_samples)
            problems += self._order_problem(state.get("order", "randperm"))
        if problems:
            raise CorruptStateError("; ".join(problems))
        self.cursor.seek(state["epoch"], state["position"])

    def _order_problem(self, order: object) -> list[str]:
        """What is wrong with a state's ``order`` here (an unknown one, or not this one)."""
        if order not in ORDERS:
            return [f"order must be one of {', '.join(map(repr, ORDERS))}, got "
                    f"{str(order)[:40]!r}"]  # fmt: skip
        if order != self.order:
            return [
                f"this state was saved by a sampler with order={order!r}; this one has "
                f"order={self.order!r}: its positions mean other indices here; resume with "
                f"order={order!r}"
            ]
        return []

    def _elastic_position(self, state: dict[str, Any]) -> tuple[int, int]:
        """``(epoch, this rank's position)`` of an elastic (version 3) state."""
        if self.global_batch_size is None or state.get("version") != 3:
            raise CorruptStateError(layout_mismatch("sampler", state, self.global_batch_size))
        keys = ("version", "epoch", "samples", "order", "global_batch_size")
        problems = fields_problem(state, keys, "sampler state")
        if not problems:
            problems += int_problem("epoch", state["epoch"], 0, 2**63 - 1)
            total = self.num_samples * self.num_replicas
            problems += int_problem("samples", state["samples"], 0, total)
            problems += self._order_problem(state["order"])
            problems += elastic_problem(state, self.global_batch_size)
        if problems:
            raise CorruptStateError("; ".join(problems))
        check_start(state["samples"], self.num_replicas, f"{self.num_replicas} rank(s)")
        return state["epoch"], state["samples"] // self.num_replicas
