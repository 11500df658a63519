"""The Hugging Face ``Trainer`` resuming mid-epoch exactly: :class:`SeedlockTrainer`, or
:class:`SeedlockTrainerMixin` in front of another ``Trainer`` subclass. The guide:
``docs/trainers-transformers.md``.

What the mixin changes, and why:

* Seeding: ``args.seed`` goes through :func:`seedlock.seed_everything` (classic scheme: the same
  numbers as ``transformers.set_seed``), and ``args.full_determinism`` switches on seedlock's
  reversible determinism profile instead of ``enable_full_determinism``.
* ``get_train_dataloader``: the Trainer's plain training DataLoader (its dataset, batch size,
  collator, sampler kind, worker settings) becomes a seedlock loader, with per-sample seeds and
  its own order from ``args.data_seed`` (else ``args.seed``). It is not passed through
  ``accelerator.prepare``, which would rebuild it as a plain DataLoader; under ``torchrun`` it
  splits each epoch across the ranks itself.
* The resumed epoch: the Trainer skips the trained batches with accelerate's
  ``skip_first_batches``, which rebuilds the loader and walks its batch sampler from the start.
  While that epoch starts, the mixin answers the call for its own loader with an O(1)
  ``load_state_dict`` (other loaders go to accelerate as before); the Trainer's step accounting
  is left as it is.
* RNG state: ``_save_rng_state`` writes ``seedlock_state_<process>.pth`` (one file per process,
  loads with ``torch.load(weights_only=True)``): this process's :func:`seedlock.state_dict` as a
  :class:`~seedlock.distributed.PerRankState` entry, and the loader's position as a check.
  ``_load_rng_state`` puts it back where the Trainer calls it, right before the first training
  step of the resumed run; the seedlock loader draws nothing from the global generators
  afterwards.
* ``evaluate`` runs inside :func:`seedlock.fork`, so evaluating during training does not shift
  the training run's random numbers.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import transformers
import transformers.trainer as hf_trainer
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler
from transformers import Trainer

from seedlock._forking import fork
from seedlock.data import SeedlockDataLoader
from seedlock.determinism import DeterminismProfile, deterministic
from seedlock.distributed import PerRankState
from seedlock.integrations._common import rebuild_loader, why_not_rebuilt
from seedlock.seeding import SeedReport, seed_everything

__all__ = ["STATE_FILE", "SeedlockTrainer", "SeedlockTrainerMixin", "state_path"]

# The Trainer loop this module plugs into (its _run_epoch and the skip_first_batches it calls).
_TESTED = "5.24"
if not hasattr(Trainer, "_run_epoch") or not hasattr(hf_trainer, "skip_first_batches"):
    raise ImportError(
        f"seedlock.integrations.transformers needs transformers {_TESTED} or a version with the "
        f"same training loop (Trainer._run_epoch); this is {transformers.__version__}"
    )

#: The name of each process's seedlock state in a checkpoint folder.
STATE_FILE = "seedlock_state_{process}.pth"


def state_path(checkpoint: str | os.PathLike[str], process: int = 0) -> str:
    """Where process ``process`` of a job keeps its seedlock state in ``checkpoint``.

    Parameters
    ----------
    checkpoint
        A checkpoint folder (``<output_dir>/checkpoint-<step>``).
    process
        The process index (``args.process_index``); default 0.

    Returns
    -------
    str
        ``<checkpoint>/seedlock_state_<process>.pth``.

    Examples
    --------
    >>> state = torch.load(state_path("out/checkpoint-20"), weights_only=True)
    >>> sorted(state)
    ['batches_per_epoch', 'loader', 'seedlock']
    """
    return os.path.join(os.fspath(checkpoint), STATE_FILE.format(process=process))


@contextlib.contextmanager
def _determinism_left_to_seedlock(args: Any) -> Iterator[None]:
    """``args.full_determinism`` reads ``False`` inside the block, so that the Trainer calls
    ``set_seed`` rather than ``enable_full_determinism`` (which cannot be undone)."""
    full = args is not None and bool(args.full_determinism)
    if full:
        args.full_determinism = False
    try:
        yield
    finally:
        if full:
            args.full_determinism = True


def _is_hf_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` is a ``datasets.Dataset`` (one exists only once ``datasets`` is
    imported, so this never imports it)."""
    module = sys.modules.get("datasets")
    return module is not None and isinstance(dataset, module.Dataset)


class _Positioned:
    """The seedlock loader standing where the resumed epoch continues: the Trainer's
    ``set_epoch`` for that epoch must not send it back to the epoch's first batch."""

    def __init__(self, loader: SeedlockDataLoader) -> None:
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.loader.epoch:
            self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class SeedlockTrainerMixin:
    """Exact mid-epoch resume for a ``transformers.Trainer`` (sub)class: put it first,
    ``class MyTrainer(SeedlockTrainerMixin, SFTTrainer)``; :class:`SeedlockTrainer` is the mixin
    on ``Trainer`` itself. It takes the ``Trainer``'s arguments.

    After ``trainer.train(resume_from_checkpoint=...)`` in a new process, the losses and the
    final parameters are the same bits as those of a run that never stopped, with dropout,
    shuffling, augmentation drawing from ``random``, ``np.random`` and torch, and any
    ``dataloader_num_workers``. A training set the seedlock loader cannot take (an
    ``IterableDataset``, ``train_sampling_strategy="group_by_length"`` or another custom
    sampler) keeps the Trainer's own loader, with a warning saying so.

    Parameters
    ----------
    *args
        The ``Trainer``'s positional arguments (``model``, ``args``, ...).
    **kwargs
        The ``Trainer``'s keyword arguments.

    Attributes
    ----------
    seedlock_report
        What :func:`seedlock.seed_everything` seeded from ``args.seed``.
    seedlock_profile
        The determinism profile ``args.full_determinism`` switched on
        (:func:`seedlock.deterministic`; ``restore()`` undoes it), else ``None``.
    seedlock_loader
        The seedlock training loader, or ``None`` before training or when the Trainer's own
        loader is used.

    Warns
    -----
    UserWarning
        The training set stays on the Trainer's own loader; a checkpoint without seedlock state
        or ``ignore_data_skip=True`` is resumed (not exactly).

    Examples
    --------
    >>> trainer = SeedlockTrainer(model=model, args=args, train_dataset=train)
    >>> trainer.train()                                  # saves checkpoints as usual
    >>> trainer.train(resume_from_checkpoint=True)       # later, in a new process: exact
    """

    seedlock_report: SeedReport
    seedlock_profile: DeterminismProfile | None
    seedlock_loader: SeedlockDataLoader | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        targs = kwargs.get("args", args[1] if len(args) > 1 else None)
        with _determinism_left_to_seedlock(targs):
            super().__init__(*args, **kwargs)
        self.seedlock_loader = None
        self.seedlock_report = self._seedlock_seed()
        self.seedlock_profile = deterministic() if self._args.full_determinism else None

    @property
    def _args(self) -> Any:
        """The Trainer's ``TrainingArguments``."""
        trainer: Any = self
        return trainer.args

    def _seedlock_seed(self) -> SeedReport:
        return seed_everything(self._args.seed)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Train as ``Trainer.train`` does; with ``resume_from_checkpoint``, continue exactly.

        Parameters
        ----------
        *args
            ``Trainer.train``'s positional arguments.
        **kwargs
            ``Trainer.train``'s keyword arguments (``resume_from_checkpoint``, ...).

        Returns
        -------
        transformers.trainer_utils.TrainOutput
            What ``Trainer.train`` returns.
        """
        resume = kwargs.get("resume_from_checkpoint", args[0] if args else None)
        if resume not in (None, False) and self._args.ignore_data_skip:
            warnings.warn(
                "ignore_data_skip=True restarts the resumed epoch from its first batch: the "
                "resumed run will not match one that never stopped",
                stacklevel=2,
            )
        with _determinism_left_to_seedlock(self._args):
            return super().train(*args, **kwargs)  # type: ignore[misc]

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate as ``Trainer.evaluate`` does, inside :func:`seedlock.fork`: whatever the
        evaluation draws (dropout in eval mode aside, the eval loader's worker seeds,
        augmentation) leaves the training run's random streams where they were.

        Parameters
        ----------
        *args
            ``Trainer.evaluate``'s positional arguments.
        **kwargs
            ``Trainer.evaluate``'s keyword arguments.

        Returns
        -------
        dict
            The metrics ``Trainer.evaluate`` returns.
        """
        with fork():
            return super().evaluate(*args, **kwargs)  # type: ignore[misc]

    def call_model_init(self, trial: Any = None) -> Any:
        """Seed through seedlock (``args.seed``, classic values), then build the model with
        ``model_init`` as ``Trainer.call_model_init`` does.

        Parameters
        ----------
        trial
            The hyperparameter-search trial, or ``None``.

        Returns
        -------
        torch.nn.Module
            The new model.
        """
        self._seedlock_seed()
        return super().call_model_init(trial)  # type: ignore[misc]

    def get_train_dataloader(self) -> Any:
        """The training loader: a seedlock loader made from the Trainer's own settings, or the
        Trainer's loader (with a warning) when the training set cannot be made exact.

        Returns
        -------
        seedlock.data.SeedlockDataLoader or torch.utils.data.DataLoader
            The loader the training loop iterates.
        """
        reason, plain = self._plain_train_dataloader()
        if reason is None and plain is not None:
            seed = self._args.data_seed if self._args.data_seed is not None else self._args.seed
            self.seedlock_loader = rebuild_loader(plain, seed=seed)
            return self.seedlock_loader
        self.seedlock_loader = None
        warnings.warn(
            f"the training data stays on the Trainer's own DataLoader ({reason}): its order, "
            "augmentation and mid-epoch resume are not exact",
            stacklevel=2,
        )
        return super().get_train_dataloader()  # type: ignore[misc]

    def _plain_train_dataloader(self) -> tuple[str | None, DataLoader[Any] | None]:
        """The DataLoader the Trainer would build before ``accelerator.prepare``, or why the
        seedlock loader cannot replace it."""
        trainer: Any = self
        if trainer.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        dataset, args = trainer.train_dataset, self._args
        if isinstance(dataset, IterableDataset):
            return "it is an IterableDataset, whose order seedlock cannot impose", None
        collator = trainer.data_collator
        if _is_hf_dataset(dataset):  # the Trainer drops the columns the model does not take
            dataset = trainer._remove_unused_columns(dataset, description="Training")
        else:
            collator = trainer._get_collator_with_removed_columns(collator, "Training")
        sampler = trainer._get_train_sampler(dataset)
        if type(sampler) not in (RandomSampler, SequentialSampler, DistributedSampler):
            kind = type(sampler).__name__
            return f"train_sampling_strategy or the sampler gives a {kind}", None
        if args.dataloader_num_workers == 0 and args.dataloader_persistent_workers:
            raise ValueError("dataloader_persistent_workers needs dataloader_num_workers > 0")
        plain = DataLoader(
            dataset,
            batch_size=trainer._train_batch_size,
            sampler=sampler,
            collate_fn=collator,
            drop_last=args.dataloader_drop_last,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            multiprocessing_context=args.dataloader_multiprocessing_context,
            prefetch_factor=args.dataloader_prefetch_factor,
            in_order=args.dataloader_in_order,
        )
        return why_not_rebuilt(plain), plain

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        """One epoch of the Trainer's loop; the resumed one starts where the checkpoint left."""
        loader = self.seedlock_loader
        if args and loader is not None:
            raise TypeError(
                "this transformers version passes _run_epoch's arguments by position; "
                f"SeedlockTrainerMixin was written for those of transformers {_TESTED}"
            )
        checkpoint = kwargs.get("resume_from_checkpoint")
        epoch: int = kwargs.get("epoch", -1)
        if loader is None or checkpoint is None or epoch != kwargs.get("epochs_trained"):
            return super()._run_epoch(*args, **kwargs)  # type: ignore[misc]
        skipped: int = kwargs.get("steps_trained_in_current_epoch", 0)
        self._check_position(checkpoint, loader, epoch, skipped)
        namespace = vars(hf_trainer)  # the module global the Trainer's loop calls
        original = namespace["skip_first_batches"]

        def skip_first_batches(dataloader: Any, num_batches: int = 0) -> Any:
            if dataloader is not loader:
                return original(dataloader, num_batches)
            state = {**loader.state_dict(), "epoch": epoch, "batches": num_batches}
            loader.load_state_dict(state)  # O(1): no batch is replayed
            return _Positioned(loader)

        namespace["skip_first_batches"] = skip_first_batches
        try:
            return super()._run_epoch(*args, **kwargs)  # type: ignore[misc]
        finally:
            namespace["skip_first_batches"] = original

    def _check_position(
        self, checkpoint: str, loader: SeedlockDataLoader, epoch: int, batches: int
    ) -> None:
        """Refuse a checkpoint whose loader stood elsewhere than where the Trainer's step count
        puts it (another batch size, dataset or gradient accumulation than when it was saved)."""
        path = state_path(checkpoint, self._args.process_index)
        if not os.path.isfile(path):
            return  # _load_rng_state says so
        state = torch.load(path, weights_only=True)
        saved = state.get("loader") if isinstance(state, dict) else None
        if saved is None:
            return  # no loader position saved; the state itself is checked when it is loaded
        length = state.get("batches_per_epoch")
        if not (
            isinstance(saved, dict) and all(type(saved.get(k)) is int for k in ("epoch", "batches"))
        ):
            raise ValueError(f"{path}: the loader position is not one seedlock writes")
        at = (saved["epoch"], saved["batches"])
        if saved["batches"] >= len(loader):
            at = (saved["epoch"] + 1, 0)
        if at != (epoch, batches) or length != len(loader):
            raise ValueError(
                f"{checkpoint} was saved at batch {at[1]} of epoch {at[0]} ({length} batches an "
                f"epoch), the Trainer resumes at batch {batches} of epoch {epoch} ({len(loader)} "
                "batches an epoch): the batch size, the dataset or gradient_accumulation_steps "
                "changed since; resume with the settings it was saved with"
            )

    def _save_rng_state(self, output_dir: str) -> None:
        """This process's seedlock state (and loader position) in ``output_dir``."""
        os.makedirs(output_dir, exist_ok=True)
        state: dict[str, Any] = {"seedlock": PerRankState().state_dict()}
        if self.seedlock_loader is not None:
            state["loader"] = self.seedlock_loader.state_dict()
            state["batches_per_epoch"] = len(self.seedlock_loader)
        torch.save(state, state_path(output_dir, self._args.process_index))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        """Put back this process's seedlock state from ``checkpoint``."""
        if checkpoint is None:
            return
        path = state_path(checkpoint, self._args.process_index)
        if not os.path.isfile(path):
            warnings.warn(
                f"{checkpoint} holds no seedlock state ({os.path.basename(path)}): restoring the "
                "Trainer's own RNG state instead; the resumed run will not match one that never "
                "stopped",
                stacklevel=2,
            )
            super()._load_rng_state(checkpoint)  # type: ignore[misc]
            return
        PerRankState().load_state_dict(torch.load(path, weights_only=True)["seedlock"])


class SeedlockTrainer(SeedlockTrainerMixin, Trainer):
    """``transformers.Trainer`` with seedlock's seeding, training loader and RNG checkpoints:
    ``trainer.train(resume_from_checkpoint=...)`` continues mid-epoch bit for bit, in O(1).

    Parameters
    ----------
    *args
        ``Trainer``'s positional arguments (``model``, ``args``, ...).
    **kwargs
        ``Trainer``'s keyword arguments.

    Examples
    --------
    >>> args = TrainingArguments(output_dir="out", max_steps=100, save_steps=20, seed=0)
    >>> trainer = SeedlockTrainer(model=model, args=args, train_dataset=train)
    >>> trainer.train(resume_from_checkpoint=True)       # the latest checkpoint in out/
    """
