"""seedlock inside Hugging Face accelerate: exact resume through ``save_state`` / ``load_state``.

:func:`track` registers a save and a load pre-hook on the ``Accelerator``: every process writes
its own ``seedlock-rank<r>.pt`` into the checkpoint folder (seedlock's RNG state and each tracked
loader's position, a :class:`~seedlock.distributed.PerRankState`; it loads with
``torch.load(weights_only=True)``) and reads it back in ``load_state``. accelerate's own
``random_states_<r>.pkl`` is restored after the load pre-hooks; it holds the values the same
``save_state`` captured right after seedlock's hook, so it puts back what seedlock put back.

accelerate's ``prepare`` rebuilds a ``DataLoader`` from its parts (and, with several processes,
shards its batches again); a seedlock loader rebuilt so repeats epoch 0's order and sample seeds
in every epoch. :func:`track` therefore makes each seedlock loader its own prepared loader: it
places batches on ``accelerator.device`` and tells accelerate's ``GradientState`` where the epoch
ends (``accumulate``, ``gather_for_metrics``), and ``accelerator.prepare`` passes it through
unchanged. Each process already iterates its own share of every epoch (see ``docs/data.md``).

:func:`skip_first_batches` is accelerate's ``skip_first_batches`` for a seedlock loader: O(1),
through ``load_state_dict``, without replaying the skipped indices. :func:`set_seed` is
``accelerate.utils.set_seed`` on :func:`seedlock.seed_everything` (the same draws).
The guide: ``docs/trainers-accelerate.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from accelerate.state import GradientState  # type: ignore[import-untyped, unused-ignore]
from accelerate.utils import send_to_device  # type: ignore[import-untyped, unused-ignore]

import seedlock
from seedlock.data import SeedlockDataLoader
from seedlock.data._batches import EpochBatches
from seedlock.derivation import Seed
from seedlock.distributed import PerRankState, rank_path
from seedlock.integrations._common import rebuild_loader, why_not_rebuilt
from seedlock.seeding import SeedReport

__all__ = ["STATE_FILE", "set_seed", "skip_first_batches", "track"]

#: The name each process's file is derived from: ``seedlock-rank<r>.pt`` (see ``rank_path``).
STATE_FILE = "seedlock.pt"

_HOOKED = "_seedlock_tracked"  # set on an Accelerator that track() has hooked


def set_seed(seed: int, device_specific: bool = False, deterministic: bool = False) -> SeedReport:
    """``accelerate.utils.set_seed`` through seedlock: the same draws, every backend seeded.

    ``set_seed(s)`` leaves ``random``, ``np.random`` and torch (CPU and devices) where
    accelerate's ``set_seed(s)`` leaves them (seedlock's classic scheme), and also makes ``s`` the
    root of seedlock's loaders and named streams.

    Parameters
    ----------
    seed
        The root seed (any int, str or bytes).
    device_specific
        Rank-local globals (``seed_everything(per_rank=True)``): other numbers on every process,
        derived from the rank, not accelerate's ``seed + process_index``.
    deterministic
        Also switch on seedlock's determinism profile (a superset of accelerate's
        ``torch.use_deterministic_algorithms(True)``).

    Returns
    -------
    seedlock.SeedReport
        What each backend got.

    Examples
    --------
    >>> from seedlock.integrations.accelerate import set_seed
    >>> set_seed(42)          # instead of accelerate.utils.set_seed(42)
    """
    return seedlock.seed_everything(seed, deterministic=deterministic, per_rank=device_specific)


class _Prepared(SeedlockDataLoader):
    """A seedlock loader that is its own accelerate-prepared loader (class set by track())."""

    _is_accelerate_prepared = True  # accelerator.prepare passes it through unchanged
    end_of_dataloader = False  # read by accelerate's GradientState
    remainder = -1  # no padding count: gather_for_metrics keeps every gathered sample
    _seedlock_device: Any = None
    _seedlock_non_blocking = False

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._placed(super().__iter__())

    def _placed(self, batches: Any) -> Iterator[Any]:
        state = GradientState()
        self.end_of_dataloader = False
        state._add_dataloader(self)
        try:
            for batch in batches:
                # No look-ahead: the loader's count is what the caller received.
                self.end_of_dataloader = batches._delivered >= len(self)
                if self._seedlock_device is None:
                    yield batch
                else:
                    yield send_to_device(
                        batch, self._seedlock_device, non_blocking=self._seedlock_non_blocking
                    )
        finally:
            state._remove_dataloader(self)


_PREPARED: dict[type, type] = {SeedlockDataLoader: _Prepared}


def _prepared_class(cls: type) -> type:
    if issubclass(cls, _Prepared):
        return cls
    if cls not in _PREPARED:
        _PREPARED[cls] = type(f"Prepared{cls.__name__}", (_Prepared, cls), {})
    return _PREPARED[cls]


def _adopt(dataloader: SeedlockDataLoader, accelerator: Any) -> None:
    """Make ``dataloader`` its own prepared loader for ``accelerator`` (the same object)."""
    dataloader.__class__ = _prepared_class(type(dataloader))
    prepared = cast(_Prepared, dataloader)
    if accelerator.device_placement:
        prepared._seedlock_device = accelerator.device
        prepared._seedlock_non_blocking = bool(getattr(accelerator, "non_blocking", False))


def _went_through_prepare(dataloader: Any) -> bool:
    """Whether ``dataloader`` is accelerate's rebuild of a seedlock loader (by ``prepare``)."""
    sampler = getattr(dataloader, "batch_sampler", None)
    inner = getattr(sampler, "batch_sampler", None)  # BatchSamplerShard, with several processes
    return isinstance(sampler, EpochBatches) or isinstance(inner, EpochBatches)


_REBUILT = (
    "this seedlock loader went through accelerator.prepare, which rebuilt it as a plain "
    "DataLoader (epoch 0's order in every epoch): call "
    "seedlock.integrations.accelerate.track(accelerator, loader) before prepare"
)


def _seedlock_loader(dataloader: Any, seed: Seed | None, what: str) -> SeedlockDataLoader:
    if isinstance(dataloader, SeedlockDataLoader):
        return dataloader
    if _went_through_prepare(dataloader):
        raise TypeError(f"{what}: {_REBUILT}")
    reason = why_not_rebuilt(dataloader)
    if reason is not None:
        raise TypeError(f"{what}: cannot resume this DataLoader exactly: {reason}")
    return rebuild_loader(dataloader, seed)


def track(accelerator: Any, *loaders: Any, seed: Seed | None = None) -> Any:
    """Make ``accelerator.save_state`` / ``load_state`` resume exactly: seedlock's RNG state and
    each loader's position, one ``weights_only`` file per process.

    Call it once per ``Accelerator``, with every training loader, before ``prepare``. A seedlock
    loader becomes its own prepared loader (batches on ``accelerator.device``, the end of each
    epoch told to accelerate's ``GradientState``); ``accelerator.prepare`` returns it unchanged,
    so accelerate neither rebuilds nor re-shards it. A plain map-style ``DataLoader`` is rebuilt
    as a seedlock loader (same dataset, batch size, workers, collate function, shuffling); use
    the one returned.

    ``save_state(dir)`` then writes ``dir/seedlock-rank<r>.pt`` on every process and
    ``load_state(dir)`` reads it back before accelerate restores the rest: the next batch is the
    one after the last batch the loop received, every generator where it was. A save in the
    middle of a gradient accumulation cycle warns (the accumulated gradients are in no
    checkpoint).

    Parameters
    ----------
    accelerator
        The ``accelerate.Accelerator``.
    *loaders
        Seedlock loaders, or plain map-style ``DataLoader``\\ s to rebuild as seedlock loaders.
    seed
        The root seed of the rebuilt loaders; default ``None``: the process's root seed.
        Seedlock loaders keep theirs.

    Returns
    -------
    SeedlockDataLoader or tuple or None
        As ``accelerator.prepare`` returns: the loader for one, a tuple for several, ``None``
        for none (the RNG state alone is tracked then).

    Raises
    ------
    TypeError
        A loader cannot resume exactly (an ``IterableDataset``, a custom sampler, ...), or it
        already went through ``accelerator.prepare``; the message says which.
    RuntimeError
        ``track`` was already called on this accelerator.
    ValueError
        ``seedlock.rng`` is registered with ``register_for_checkpointing`` (the main process's
        state would be restored on every process).

    Examples
    --------
    >>> from seedlock.integrations.accelerate import set_seed, track
    >>> set_seed(0)
    >>> accelerator = Accelerator()
    >>> loader = track(accelerator, seedlock.data.loader(dataset, batch_size=32, shuffle=True))
    >>> model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    >>> accelerator.save_state("ckpt")        # later, in a new process: load_state("ckpt")
    """
    if getattr(accelerator, _HOOKED, False):
        raise RuntimeError(
            "track() was already called on this Accelerator: pass every loader in one call"
        )
    if any(obj is seedlock.rng for obj in getattr(accelerator, "_custom_objects", ())):
        raise ValueError(
            "seedlock.rng is registered with accelerator.register_for_checkpointing, which "
            "writes the main process's state and restores it on every process: drop it, track() "
            "saves the RNG state per process"
        )
    tracked = [_seedlock_loader(dl, seed, f"track: loader {i}") for i, dl in enumerate(loaders)]
    unused = [n for n in ("split_batches", "dispatch_batches") if getattr(accelerator, n, False)]
    if tracked and unused:
        warnings.warn(
            f"seedlock: {', '.join(unused)}: ignored for a tracked seedlock loader (each "
            "process iterates its own share of the epoch, batch_size samples a batch)",
            stacklevel=2,
        )
    for dl in tracked:
        _adopt(dl, accelerator)
    named: dict[str, Any] = {f"loader{i}": dl for i, dl in enumerate(tracked)}
    state = PerRankState(**named)

    def save(models: Any, weights: Any, output_dir: str) -> None:
        if accelerator.gradient_accumulation_steps > 1 and not accelerator.sync_gradients:
            warnings.warn(
                "seedlock: save_state in the middle of a gradient accumulation cycle: the "
                "accumulated gradients are in no checkpoint, so the resumed run will differ; "
                "save when accelerator.sync_gradients is True",
                stacklevel=3,
            )
        torch.save(state.state_dict(), _file(output_dir, accelerator))

    def load(models: Any, input_dir: str) -> None:
        path = _file(input_dir, accelerator)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: this checkpoint was not saved with "
                "seedlock.integrations.accelerate.track, so it cannot resume exactly"
            )
        state.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)
    setattr(accelerator, _HOOKED, True)
    if not tracked:
        return None
    return tracked[0] if len(tracked) == 1 else tuple(tracked)


def _file(folder: str, accelerator: Any) -> Path:
    return rank_path(Path(folder) / STATE_FILE, rank=accelerator.process_index)


def skip_first_batches(dataloader: Any, num_batches: int, *, epoch: int) -> SeedlockDataLoader:
    """``accelerator.skip_first_batches`` for a seedlock loader, in O(1): the loader itself,
    positioned so that its next ``iter()`` starts at batch ``num_batches`` of ``epoch``.

    Nothing is replayed: the position goes through the loader's ``load_state_dict``, the order
    and every sample's random numbers are those of an uninterrupted run. After that epoch the
    loader goes on with the next one by itself. With :func:`track`, ``load_state`` already puts
    the loader where it was and this call is not needed.

    Parameters
    ----------
    dataloader
        A seedlock loader (tracked or not; as ``accelerator.prepare`` returned it after
        :func:`track`).
    num_batches
        How many of the epoch's batches (this process's) to skip.
    epoch
        The epoch to resume: the epoch counter of your loop (a fresh loader is at epoch 0).

    Returns
    -------
    SeedlockDataLoader
        ``dataloader`` itself.

    Raises
    ------
    TypeError
        ``dataloader`` is not a seedlock loader (accelerate's own ``skip_first_batches`` is the
        one for a plain loader), or accelerate rebuilt it in ``prepare`` without :func:`track`.
    seedlock.errors.CorruptStateError
        ``num_batches`` or ``epoch`` is negative or past the end of the epoch.

    Examples
    --------
    >>> loader = skip_first_batches(loader, resume_step, epoch=starting_epoch)
    >>> for batch in loader: ...              # batch resume_step of epoch starting_epoch onwards
    """
    if not isinstance(dataloader, SeedlockDataLoader):
        if _went_through_prepare(dataloader):
            raise TypeError(f"skip_first_batches: {_REBUILT}")
        raise TypeError(
            "skip_first_batches: not a seedlock loader; accelerator.skip_first_batches is the "
            f"one for a {type(dataloader).__name__}"
        )
    position: dict[str, Any] = {"version": 1, "epoch": epoch, "batches": num_batches}
    if dataloader.resumable_sampler.num_replicas > 1:
        position["world_size"] = dataloader.resumable_sampler.num_replicas
    dataloader.load_state_dict(position)
    return dataloader
