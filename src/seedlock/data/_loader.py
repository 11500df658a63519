"""``seedlock.data.loader``: a DataLoader with per-sample seeds, its own generator, exact resume.

The resume is O(1) and counts the batches delivered to the caller. The guide: ``docs/data.md``.

The loader is a ``torch.utils.data.DataLoader`` subclass. Its sampler is a
:class:`~seedlock.data.ResumableSampler`; its dataset is wrapped in a
:class:`~seedlock.data.SeededDataset` that receives ``(epoch, index)`` pairs. ``iter()`` draws its
workers' base seed from the loader's own generator, so iterating never consumes the global torch
RNG (a plain DataLoader draws from it on every ``iter()``, even with ``num_workers=0``).

``state_dict()`` is ``{"version", "epoch", "batches"}``: the epoch in progress and how many of
its batches the caller has received — not how many the workers prefetched. ``load_state_dict``
makes the next ``iter()`` start at exactly the following batch, computed from the epoch's
permutation (no replay of the skipped batches), with any ``num_workers``,
``persistent_workers`` or ``prefetch_factor``.
The epoch and the position live in one place, the sampler's ``cursor``:
``loader.resumable_sampler``'s ``set_epoch`` / ``load_state_dict`` move the loader too.

Under ``torchrun`` each rank's loader iterates its own share of the epoch's order (see
:class:`~seedlock.data.ResumableSampler`), and its state also holds ``"world_size"`` (only when
it is above 1). The state is the same on every rank of a job (every rank delivers the same
number of batches), but a batch count is the same position only for the same number of ranks:
loading it with another raises :class:`~seedlock.distributed.WorldSizeMismatchError`.

Elastic: with ``global_batch_size=G`` the order is laid out in whole global batches (see
:class:`~seedlock.data.ResumableSampler`), each rank's ``batch_size`` is a micro-batch, and
``accumulation`` micro-batches of every rank make one global step. The state then counts global
samples, ``{"version": 2, "epoch", "samples", "global_batch_size"}``, the same on every rank,
and loads on any number of ranks that divides ``G`` into micro-batches: global step ``k`` holds
the same samples, with the same per-sample seeds, on 1 rank or 16.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, overload

import torch
from torch.utils.data import DataLoader, IterableDataset

from seedlock._docs import fill
from seedlock.backends.checks import fields_problem, int_problem
from seedlock.data._batches import Delivered, EpochBatches
from seedlock.data._elastic import elastic_position, elastic_state, micro_batches
from seedlock.data._sampler import ResumableSampler, check_state_version
from seedlock.data._samples import SeededDataset
from seedlock.data._stream import SeedlockStreamLoader
from seedlock.derivation import Seed, check_seed, derive, get_root
from seedlock.errors import CorruptStateError, WorldSizeMismatchError

__all__ = ["SeedlockDataLoader", "loader"]

# What the loader class and its builder function share in their docstrings.
_documented = fill(
    data="""dataset
        A map-style dataset (``__getitem__`` and ``__len__``), wrapped in a
        :class:`~seedlock.data.SeededDataset`. :func:`loader` also takes an ``IterableDataset``
        with ``state_dict`` / ``load_state_dict``, or one :func:`~seedlock.data.sharded` made,
        and returns a :class:`~seedlock.data.SeedlockStreamLoader`.
    batch_size
        Samples per batch; default 1. ``None``: no batching (samples one by one, as with
        DataLoader).
    shuffle
        Shuffle each epoch from ``(seed, epoch)``; default ``False``. Set it on the sampler
        instead when you pass one.
    order
        How the sampler the loader makes shuffles: ``"randperm"`` or ``"feistel"`` (any size,
        O(1) memory; see :class:`~seedlock.data.ResumableSampler`); default ``None``:
        ``"randperm"``. Set it on the sampler instead when you pass one.
    global_batch_size
        Elastic resume (see the module docstring): the samples of one optimizer step over all
        ranks; ``batch_size`` is then each rank's micro-batch and must divide
        ``global_batch_size / world_size``; ``drop_last`` drops a last partial global batch
        instead of padding it. Default ``None``: a state resumes on the same number of ranks
        only. Set it on the sampler instead when you pass one.""",
    seeds="""seed
        The root of the per-sample seeds and the workers' base seed, and of the order when the
        loader makes the sampler; default ``None``: the process's root seed
        (:func:`seedlock.get_root`), read now.
    strict
        Refuse a dataset that holds generator objects (see
        :func:`~seedlock.data.find_generators`); default ``False``: they are reseeded per
        sample.""",
    raises="""TypeError
        An ``IterableDataset`` without ``state_dict`` / ``load_state_dict`` (to
        :class:`SeedlockDataLoader`: any); ``batch_sampler`` or ``generator`` given;
        ``sampler`` that is not a :class:`~seedlock.data.ResumableSampler`; ``seed`` not an
        int, str or bytes.
    ValueError
        ``shuffle=True``, ``order`` or ``global_batch_size`` with a ``sampler``; an unknown
        ``order``; a ``global_batch_size`` that the ranks' micro-batches do not divide; the dataset
        holds a random source no seed reaches (``random.SystemRandom``), or, with
        ``strict=True``, any generator object.
    LookupError
        ``seed`` is ``None`` and the process has no root seed.""",
)

#: Version of the loader state's layout: 1 counts this rank's batches, 2 (elastic) global samples.
_STATE_VERSION = 2


@_documented
class SeedlockDataLoader(DataLoader[Any]):
    """A DataLoader with per-sample seeding and exact resume; build it with :func:`loader`.

    ``iter()`` raises ``ValueError`` when the sampler's position was moved (through the
    sampler's own ``load_state_dict``) to a sample that does not start a batch.

    Parameters
    ----------
    {data}
    sampler
        A :class:`~seedlock.data.ResumableSampler` giving the order; default ``None``: one made
        from ``shuffle`` and ``seed``.
    drop_last
        Drop the short last batch of each epoch; default ``False``.
    {seeds}
    **kwargs
        DataLoader's other arguments (``num_workers``, ``collate_fn``, ``pin_memory``,
        ``persistent_workers``, ``prefetch_factor``, ``worker_init_fn``, ...) except
        ``batch_sampler`` and ``generator``, which it builds.

    Attributes
    ----------
    root
        The root seed in use.
    resumable_sampler
        The sampler; its cursor is the loader's position.
    accumulation
        Micro-batches per rank in one global step: ``global_batch_size / (world_size *
        batch_size)``; 1 without ``global_batch_size``.

    Raises
    ------
    {raises}
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int | None = 1,
        shuffle: bool = False,
        order: str | None = None,
        sampler: ResumableSampler | None = None,
        drop_last: bool = False,
        global_batch_size: int | None = None,
        seed: Seed | None = None,
        strict: bool = False,
        **kwargs: Any,
    ) -> None:
        if isinstance(dataset, IterableDataset):
            raise TypeError(
                "SeedlockDataLoader takes map-style datasets; seedlock.data.loader() builds the "
                "loader of an iterable dataset"
            )
        for name in ("batch_sampler", "generator"):
            if kwargs.get(name) is not None:
                raise TypeError(
                    f"seedlock.data.loader builds its own {name}; pass a "
                    "seedlock.data.ResumableSampler as sampler= to control the order"
                )
            kwargs.pop(name, None)
        if sampler is not None and not isinstance(sampler, ResumableSampler):
            raise TypeError(
                "sampler must be a seedlock.data.ResumableSampler (its order is a function of "
                "the root seed and the epoch, which makes resume exact), got "
                f"{type(sampler).__name__}"
            )
        self.root = get_root() if seed is None else check_seed(seed)
        if sampler is None:
            sampler = ResumableSampler(
                dataset, shuffle=shuffle, seed=self.root, order=order or "randperm",
                global_batch_size=global_batch_size,
                drop_last=drop_last and global_batch_size is not None,
            )  # fmt: skip
        elif shuffle or order is not None or global_batch_size is not None:
            raise ValueError(
                "shuffle, order and global_batch_size are set on the ResumableSampler when you "
                "pass one"
            )
        self.accumulation = micro_batches(sampler, batch_size)
        self.resumable_sampler = sampler
        self._batches = EpochBatches(sampler, batch_size, drop_last)
        seeded = SeededDataset(dataset, root=self.root, strict=strict)
        # The loader's own generator: iter() draws the workers' base seed from it, never from
        # the global torch RNG.
        generator = torch.Generator().manual_seed(derive("loader", root=self.root, bits=32))
        if batch_size is None:
            super().__init__(
                seeded, batch_size=None, sampler=self._batches, generator=generator, **kwargs
            )
        else:
            super().__init__(seeded, batch_sampler=self._batches, generator=generator, **kwargs)
        self._skip_at_start = 0

    @property
    def _per_batch(self) -> int:
        """Samples of this rank per batch (1 without batching)."""
        return self._batches.batch_size or 1

    @property
    def _samples_per_epoch(self) -> int:
        """The samples of this rank that an epoch's batches deliver (``drop_last`` drops the
        short last batch)."""
        return min(len(self) * self._per_batch, len(self.resumable_sampler))

    def _samples_in_batch(self, number: int) -> int:
        """How many samples the ``number``-th batch of an epoch (from 1) holds."""
        return min(self._per_batch, self._samples_per_epoch - (number - 1) * self._per_batch)

    def _batches_before(self, position: int) -> int:
        """How many batches end at or before sample ``position`` of this rank's epoch (the
        last batch may be short: the end of the epoch ends it)."""
        if position >= self._samples_per_epoch:
            return len(self)
        return position // self._per_batch

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        cursor = self.resumable_sampler.cursor
        start = cursor.start
        if start < self._samples_per_epoch and start % self._per_batch:
            raise ValueError(
                f"the sampler's position ({start}) is not at a batch boundary (batch_size "
                f"{self._per_batch}): set positions through loader.load_state_dict"
            )
        epoch, _, token = cursor.begin()
        skip = self._batches_before(start)
        self._skip_at_start = skip
        self._batches.epoch, self._batches.skip = epoch, skip
        return Delivered(self, super().__iter__(), token)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` starts (or resumes)."""
        return self.resumable_sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` start ``epoch`` (an int) from its first batch: the same as
        ``loader.resumable_sampler.set_epoch(epoch)`` (nothing changes while an iteration of
        ``epoch`` itself runs).

        Parameters
        ----------
        epoch
            Its order is a function of ``(root, epoch)``.
        """
        self.resumable_sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Where to resume, counted in the batches the caller received.

        Returns
        -------
        dict
            ``{"version": 1, "epoch": e, "batches": b}`` (plus ``"order"`` with
            ``order="feistel"``, and ``"world_size"`` when the data is partitioned across ranks):
            the epoch in progress (or the next one) and how many of its batches were delivered.
            With ``global_batch_size``, ``{"version": 2, "epoch": e, "samples": s,
            "global_batch_size": g}`` (plus ``"order"``): ``s`` samples of the epoch delivered
            over all ranks. Right after :meth:`load_state_dict`, what was loaded.
        """
        epoch, position = self.resumable_sampler.cursor.position(self._samples_per_epoch)
        batches = self._batches_before(position)
        if self.resumable_sampler.global_batch_size is not None:
            return elastic_state(self.resumable_sampler, epoch, batches * self._per_batch)
        state: dict[str, Any] = {"version": 1, "epoch": epoch, "batches": batches}
        if self.resumable_sampler.order != "randperm":
            state["order"] = self.resumable_sampler.order  # another order: another position
        if self.resumable_sampler.num_replicas > 1:
            state["world_size"] = self.resumable_sampler.num_replicas
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next ``iter()`` continue exactly after the last delivered batch.

        Parameters
        ----------
        state
            What :meth:`state_dict` returned, with any ``num_workers``, ``persistent_workers``
            or ``prefetch_factor`` then and now.

        Raises
        ------
        seedlock.errors.CorruptStateError
            ``state`` is not one :meth:`state_dict` returns, counts more batches than an epoch
            has, or was saved by a loader that shuffles in another ``order``.
        seedlock.errors.StateVersionError
            A newer seedlock wrote it.
        seedlock.errors.WorldSizeMismatchError
            It was saved with the data split across another number of ranks (without
            ``global_batch_size``), or (with it) at a position this shape cannot start from.
            In every case nothing changes.
        """
        if not isinstance(state, dict) or type(state.get("version")) is not int:
            raise CorruptStateError("not a seedlock loader state (no int 'version')")
        check_state_version(state, "loader state", _STATE_VERSION)
        if state["version"] == 2 or self.resumable_sampler.global_batch_size is not None:
            epoch, position = elastic_position(self.resumable_sampler, state, self._per_batch)
            self.resumable_sampler.cursor.seek(epoch, position)
            return
        optional = [key for key in ("order", "world_size") if key in state]
        keys = ("version", "epoch", "batches", *optional)
        problems = fields_problem(state, keys, "loader state")
        if not problems:
            problems += int_problem("version", state["version"], 1, 1)
            problems += int_problem("epoch", state["epoch"], 0, 2**63 - 1)
            problems += int_problem("world_size", state.get("world_size", 1), 1, 2**31 - 1)
        if problems:
            raise CorruptStateError("; ".join(problems))
        saved_order, order = state.get("order", "randperm"), self.resumable_sampler.order
        if saved_order != order:
            shown = repr(saved_order)[:40]
            raise CorruptStateError(
                f"this loader state was saved with order={shown}, this loader shuffles with "
                f"order={order!r}: its batch count means other samples here; build the loader "
                "with the same order"
            )
        saved, here = state.get("world_size", 1), self.resumable_sampler.num_replicas
        if saved != here:
            raise WorldSizeMismatchError(
                f"this loader state was saved with the data split across {saved} rank(s), this "
                f"loader splits it across {here}: its batch count means another position here; "
                f"resume with {saved} rank(s)"
            )
        batches = state["batches"]
        problems = int_problem("batches", batches, 0, len(self))
        if problems:
            raise CorruptStateError(problems[0])
        position = min(batches * self._per_batch, len(self.resumable_sampler))
        self.resumable_sampler.cursor.seek(state["epoch"], position)


@overload
def loader(
    dataset: IterableDataset[Any],
    batch_size: int | None = 1,
    shuffle: bool = False,
    *,
    order: str | None = None,
    global_batch_size: int | None = None,
    seed: Seed | None = None,
    strict: bool = False,
    **kwargs: Any,
) -> SeedlockStreamLoader: ...
@overload
def loader(
    dataset: Any,
    batch_size: int | None = 1,
    shuffle: bool = False,
    *,
    order: str | None = None,
    global_batch_size: int | None = None,
    seed: Seed | None = None,
    strict: bool = False,
    **kwargs: Any,
) -> SeedlockDataLoader: ...


@_documented
def loader(
    dataset: Any,
    batch_size: int | None = 1,
    shuffle: bool = False,
    *,
    order: str | None = None,
    global_batch_size: int | None = None,
    seed: Seed | None = None,
    strict: bool = False,
    **kwargs: Any,
) -> SeedlockDataLoader | SeedlockStreamLoader:
    """A DataLoader over ``dataset`` with per-sample seeding and exact O(1) resume.

    Parameters
    ----------
    {data}
    {seeds}
    **kwargs
        DataLoader's other arguments (``num_workers``, ``collate_fn``, ``pin_memory``,
        ``persistent_workers``, ``prefetch_factor``, ``worker_init_fn``, ``drop_last``, ...)
        except ``batch_sampler`` and ``generator``, which it builds; ``sampler=`` must be a
        :class:`ResumableSampler`.

    Returns
    -------
    SeedlockDataLoader or SeedlockStreamLoader
        A ``torch.utils.data.DataLoader`` subclass: the second for an iterable dataset.

    Raises
    ------
    {raises}

    Examples
    --------
    >>> seedlock.seed_everything(0)
    >>> train = seedlock.data.loader(dataset, batch_size=32, shuffle=True, num_workers=4)
    >>> for batch in train: ...
    >>> ckpt["loader"] = train.state_dict()     # later: train.load_state_dict(ckpt["loader"])
    """
    if isinstance(dataset, IterableDataset):
        root = get_root() if seed is None else check_seed(seed)
        return SeedlockStreamLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, root=root, strict=strict,
            order=order, global_batch_size=global_batch_size, **kwargs,
        )  # fmt: skip
    return SeedlockDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        order=order,
        global_batch_size=global_batch_size,
        seed=seed,
        strict=strict,
        **kwargs,
    )
