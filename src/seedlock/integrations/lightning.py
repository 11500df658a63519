"""Exact resume under Lightning: the :class:`Seedlock` callback.

One line, ``Trainer(callbacks=[Seedlock(seed=0)])``, and a ``Trainer.fit(ckpt_path=...)`` from a
mid-epoch checkpoint continues exactly where the run stopped. The guide:
``docs/trainers-lightning.md``.

What the callback does, hook by hook:

- ``setup``: seeds every global generator with :func:`seedlock.seed_everything` (the classic
  scheme gives the numbers ``lightning.seed_everything(seed)`` gives), switches the determinism
  profile on when asked, and stands in for the fit loop's train-data source so that the
  ``DataLoader`` Lightning gets is rebuilt as a seedlock loader (``_common.rebuild_loader``).
- A seedlock loader of an iterable dataset is taken as it is. Lightning fetches one batch
  ahead of it (it has no length), so its position after each fetched batch is kept until
  ``on_train_batch_end`` says the batch was trained.
- The rebuilt loader reaches Lightning inside a small iterable of this module, not as a
  ``DataLoader``: Lightning then neither injects a ``DistributedSampler`` (the seedlock loader
  splits each epoch across the ranks itself) nor calls ``set_epoch`` in the middle of an epoch.
  The epoch it iterates is Lightning's ``fit_loop`` epoch. It is ``Stateful``, so Lightning also
  counts it as a resumable loader.
- ``state_dict``: every rank's RNG state and the loader's position (batches delivered in the
  epoch), gathered over the ranks into the one dict Lightning writes from rank 0.
- ``load_state_dict``: checks this rank's entry (world size, rank) at once, makes the loader
  resume at the next batch (O(1), nothing is replayed) and keeps the RNG state until
  ``on_train_start``, where it is put back: nothing Lightning does between loading the
  checkpoint and the first batch (``setup_data``, validation set-up) shifts it.
- ``teardown``: gives the fit loop its own data source back and switches the profile off.

Importing this module imports Lightning (``pip install seedlock[lightning]``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from seedlock.data import SeedlockDataLoader, SeedlockStreamLoader
from seedlock.derivation import Seed, check_seed, get_root
from seedlock.determinism import DeterminismProfile, deterministic
from seedlock.distributed import PerRankState
from seedlock.integrations._common import gather_ranks, rebuild_loader, why_not_rebuilt
from seedlock.seeding import seed_everything
from seedlock.state import RNGState, capture, restore

__all__ = ["Seedlock"]


class _Pass(Iterator[Any]):
    """One epoch of a :class:`_TrainLoader`, started at its first ``next()``.

    Lightning calls ``iter()`` on a loader that is not a ``DataLoader`` once just to check it,
    and again in ``setup_data``, before the first batch is wanted: starting the epoch (and its
    workers) only when a batch is asked for keeps both calls free.
    """

    def __init__(self, owner: _TrainLoader) -> None:
        self._owner = owner
        self._inner: Iterator[Any] | None = None

    def __iter__(self) -> _Pass:
        return self

    def __next__(self) -> Any:
        if self._inner is None:
            self._inner = self._owner._begin()
        try:
            batch = next(self._inner)
        except StopIteration:
            self._owner._fetched(None)
            raise
        self._owner._fetched(batch)
        return batch


class _TrainLoader:
    """What Lightning iterates in place of the user's train ``DataLoader``: a seedlock loader
    (``.loader``) whose epoch is Lightning's, with the loader's ``state_dict`` /
    ``load_state_dict``.

    Lightning fetches one batch ahead of a loader without a length (an iterable dataset's), so
    there the loader's own position is one batch past the last trained one. For such a loader
    the position after each fetched batch is kept until the batch is trained
    (:meth:`trained`), and the state is the one after the last trained batch.
    """

    def __init__(
        self, loader: SeedlockDataLoader | SeedlockStreamLoader, epoch: Callable[[], int]
    ) -> None:
        self.loader = loader
        self._epoch = epoch
        self._resumed = False
        self._ahead = isinstance(loader, SeedlockStreamLoader)
        self._fetched_states: deque[dict[str, Any]] = deque()  # fetched, not yet trained
        self._end: dict[str, Any] | None = None  # the state once the epoch's batches ran out
        self._trained: dict[str, Any] | None = None

    @property
    def dataset(self) -> Any:
        """The loader's dataset (Lightning reads it to size the epoch)."""
        return self.loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> _Pass:
        return _Pass(self)

    def _begin(self) -> Iterator[Any]:
        if self._resumed:
            self._resumed = False  # the loaded position: the rest of that epoch
        else:
            self.loader.set_epoch(self._epoch())
        self._fetched_states.clear()
        self._end, self._trained = None, self.loader.state_dict() if self._ahead else None
        return iter(self.loader)

    def _fetched(self, batch: Any) -> None:
        """Lightning took ``batch`` (``None``: the epoch's batches ran out)."""
        if self._ahead:
            if batch is None:
                self._end = self.loader.state_dict()
            else:
                self._fetched_states.append(self.loader.state_dict())

    def trained(self) -> None:
        """The oldest fetched batch went through its training step."""
        if self._fetched_states:
            self._trained = self._fetched_states.popleft()
        if not self._fetched_states and self._end is not None:
            self._trained = self._end

    def state_dict(self) -> dict[str, Any]:
        if self._trained is not None:
            return self._trained
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(dict(state))
        self._resumed = True
        self._trained = None


class _Position:
    """The loader's position as a ``PerRankState`` member: ``{}`` when no seedlock loader runs."""

    def __init__(self, owner: Seedlock) -> None:
        self._owner = owner

    def state_dict(self) -> dict[str, Any]:
        train = self._owner._train
        return train.state_dict() if train is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._owner._position = dict(state) or None


class _TrainSource:
    """Stands in for the fit loop's train-data source and passes what it gives through the
    callback."""

    def __init__(self, inner: Any, adopt: Callable[[Any], Any]) -> None:
        self._inner = inner
        self._adopt = adopt

    def dataloader(self) -> Any:
        return self._adopt(self._inner.dataloader())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Seedlock(Callback):
    """A Lightning callback for bit-exact runs and exact mid-epoch resume.

    At ``setup`` it seeds every global generator (``seedlock.seed_everything(seed,
    per_rank=per_rank)``: with the default classic scheme, the numbers of
    ``lightning.seed_everything(seed)``) and rebuilds a plain map-style train ``DataLoader`` as
    a seedlock loader (the same dataset, batch size, workers and collate function; per-sample
    seeds; the order a function of the seed and the epoch). Its ``state_dict`` holds every
    rank's RNG state and the loader's position, so ``Trainer.fit(ckpt_path=...)`` from a
    checkpoint written in the middle of an epoch (``ModelCheckpoint(every_n_train_steps=...)``)
    continues with the same batches in the same order, the same augmentation and the same
    dropout masks, in O(1). A train loader it cannot rebuild (an ``IterableDataset``, a custom
    sampler or batch sampler, several loaders) stays as it is, with a one-line warning.

    Parameters
    ----------
    seed
        The root seed (an int, str or bytes); default ``None``: the process's root seed (the
        last ``seedlock.seed_everything``, or ``SEEDLOCK_SEED``), read at ``setup``.
    deterministic
        Switch seedlock's determinism profile (:func:`seedlock.deterministic`) on at
        ``setup`` and off at ``teardown``; default ``False``.
    per_rank
        Give each rank its own global generators (dropout, noise) under DDP, as
        ``seed_everything(per_rank=True)``; default ``False``: the same on every rank, as
        ``lightning.seed_everything``. The data order is shared and split across the ranks
        either way.
    loader
        Rebuild the train ``DataLoader`` as a seedlock loader; default ``True``. ``False``
        leaves the loader (and its resume) to Lightning.

    Raises
    ------
    TypeError
        ``seed`` is not an int, str or bytes.

    Examples
    --------
    >>> from seedlock.integrations.lightning import Seedlock
    >>> trainer = Trainer(max_steps=100, callbacks=[Seedlock(seed=0)])
    >>> trainer.fit(model, ckpt_path="checkpoints/last.ckpt")   # exact, from mid-epoch too
    """

    def __init__(
        self,
        seed: Seed | None = None,
        *,
        deterministic: bool = False,
        per_rank: bool = False,
        loader: bool = True,
    ) -> None:
        self.seed = None if seed is None else check_seed(seed)
        self.deterministic = deterministic
        self.per_rank = per_rank
        self.loader = loader
        self._root: Seed | None = None
        self._trainer: Any = None
        self._profile: DeterminismProfile | None = None
        self._source: Any = None  # the fit loop's own data source while ours stands in
        self._train: _TrainLoader | None = None
        self._rng: RNGState | None = None  # the checkpoint's RNG state, until on_train_start
        self._position: dict[str, Any] | None = None  # the checkpoint's loader position

    # -- the run ----------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Seed, switch determinism on when asked, and (for ``fit``) stand in for the train
        data source.

        Parameters
        ----------
        trainer
            The ``Trainer``.
        pl_module
            The ``LightningModule``.
        stage
            ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Raises
        ------
        LookupError
            ``seed`` was not given and the process has no root seed.
        """
        self._root = get_root() if self.seed is None else self.seed
        seed_everything(self._root, per_rank=self.per_rank)
        if self.deterministic and self._profile is None:
            self._profile = deterministic()
        self._trainer = trainer
        if stage == "fit" and self.loader and self._source is None:
            self._source = trainer.fit_loop._data_source
            # Duck-typed: it answers every attribute of the source it stands in for.
            stand_in = _TrainSource(self._source, self._adopt)
            trainer.fit_loop._data_source = stand_in  # type: ignore[assignment]

    def _adopt(self, dataloader: Any) -> Any:
        """The train loader Lightning gets: the user's, rebuilt as a seedlock loader when it
        can be, at the checkpoint's position when resuming."""
        fit_loop = self._trainer.fit_loop
        if isinstance(dataloader, _TrainLoader):
            train = dataloader
        elif isinstance(dataloader, SeedlockStreamLoader):
            train = _TrainLoader(dataloader, lambda: int(fit_loop.epoch_progress.current.processed))
        else:
            reason = why_not_rebuilt(dataloader)
            if reason is not None:
                rank_zero_warn(
                    f"seedlock: the train dataloader is left as it is ({reason}), so a resume "
                    "from the middle of an epoch is not exact; return a plain map-style "
                    "DataLoader or a seedlock.data.loader from train_dataloader()"
                )
                self._train = None
                return dataloader
            train = _TrainLoader(
                rebuild_loader(dataloader, self._root),
                lambda: int(fit_loop.epoch_progress.current.processed),
            )
        if self._position is not None:
            train.load_state_dict(self._position)
            self._position = None
        self._train = train
        return train

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Put back the checkpoint's RNG state, right before the first batch.

        Parameters
        ----------
        trainer
            The ``Trainer``.
        pl_module
            The ``LightningModule``.
        """
        if self._rng is not None:
            restore(self._rng)
            self._rng = None
        if self._position is not None and self._train is not None:
            # The loader came before the checkpoint (a trainer that fits again): its epoch has
            # not started yet (it starts at the first batch), so it still takes the position.
            self._train.load_state_dict(self._position)
            self._position = None
        if self._position is not None:
            self._position = None
            rank_zero_warn(
                "seedlock: the checkpoint holds a seedlock loader position but this run's train "
                "dataloader is not a seedlock loader: the data order after the resume is "
                "Lightning's, not the saved run's"
            )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        """Count the batch as trained: the loader's position moves past it.

        Parameters
        ----------
        trainer
            The ``Trainer``.
        pl_module
            The ``LightningModule``.
        outputs
            What ``training_step`` returned.
        batch
            The batch.
        batch_idx
            Its index in the epoch.
        """
        if self._train is not None:
            self._train.trained()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Give the fit loop its own data source back and switch the profile off.

        Parameters
        ----------
        trainer
            The ``Trainer``.
        pl_module
            The ``LightningModule``.
        stage
            ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
        """
        if self._source is not None:
            trainer.fit_loop._data_source = self._source
            self._source = None
        if self._profile is not None:
            self._profile.restore()
            self._profile = None

    # -- the checkpoint ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every rank's RNG state and the loader's position (a collective under DDP: Lightning
        calls it on every rank and writes rank 0's result).

        Returns
        -------
        dict
            ``{"version": 1, "world_size": W, "rank0": {"rng": ..., "loader": ...}, ...}``
            (:class:`seedlock.distributed.PerRankState`'s layout over all ranks); ``"loader"``
            is ``{}`` when the train loader is not a seedlock loader.
        """
        trainer = self._trainer
        if trainer is not None and trainer.training and trainer.fit_loop._should_accumulate():
            rank_zero_warn(
                "seedlock: this checkpoint is written in the middle of a gradient accumulation "
                "and does not hold the gradients accumulated so far, so a resume from it is not "
                "exact; checkpoint after optimizer steps (ModelCheckpoint(every_n_train_steps=...))"
            )
        return gather_ranks(PerRankState(loader=_Position(self)))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take this rank's entry: the loader resumes at the saved position; the RNG state is
        put back at ``on_train_start``.

        Parameters
        ----------
        state_dict
            What :meth:`state_dict` returned in the run that wrote the checkpoint.

        Raises
        ------
        seedlock.distributed.WorldSizeMismatchError
            Another number of ranks wrote it.
        seedlock.StateError
            It does not fit this process (see :class:`seedlock.distributed.PerRankState`).
        """
        before = capture()
        PerRankState(loader=_Position(self)).load_state_dict(state_dict)
        self._rng = capture()
        restore(before)

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Warn when the checkpoint holds no seedlock state (the resume is then Lightning's).

        Parameters
        ----------
        trainer
            The ``Trainer``.
        pl_module
            The ``LightningModule``.
        checkpoint
            The whole checkpoint Lightning loaded.
        """
        if self.state_key not in checkpoint.get("callbacks", {}):
            rank_zero_warn(
                "seedlock: this checkpoint holds no Seedlock state (written without the callback, "
                "or with save_weights_only=True): the RNG state and the data position are not "
                "restored, so the resumed run is not exact"
            )
