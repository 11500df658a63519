"""The Lightning callback (seedlock.integrations.lightning.Seedlock) with the real Lightning.

The resume scenarios run as scripts in their own interpreters: a tiny MLP with dropout, a
shuffled DataLoader whose dataset augments with ``random``, ``np.random`` and torch's global
RNG, SGD with momentum. In one process: the run straight through, then the same run stopped by
``max_steps`` right after a ``ModelCheckpoint(every_n_train_steps=...)`` checkpoint in the middle
of an epoch; in a new process: ``Trainer.fit(ckpt_path=...)`` from it. With the callback the
resumed run gives the straight run's per-step losses (compared as ``float.hex``), batches and
final parameters (``torch.equal``); the same scenario with ``lightning.seed_everything`` and no
callback is run too and must differ (Lightning alone restarts the epoch in another order and
does not restore the RNG). ``num_workers`` 0 and 2, and a 2-rank DDP job under torchrun (gloo).

The stop step is one of two mid-epoch values, chosen by the session seed of seedlock's pytest
plugin (``--seedlock-seed``). Each launch runs once per session, whichever xdist worker asks
first (a lock file, as in tests/test_distributed.py).
"""

from __future__ import annotations

import json
import random
import sys
import textwrap
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

import seedlock
from launches import Launches, clean_env, session_choice, session_folder
from seedlock.data import SeedlockDataLoader
from seedlock.integrations.lightning import Seedlock

BIN = Path(sys.executable).parent
SEED = 1234
STEPS, STOPS = 30, (15, 21)  # 12 batches an epoch: batch 3 or 9 of epoch 1
DDP_STEPS, DDP_STOPS = 16, (8, 10)  # 6 batches an epoch on each of 2 ranks: batch 2 or 4
NOT_RESUMABLE = "your dataloader is not resumable"  # Lightning's warning on a mid-epoch resume

SCRIPT = textwrap.dedent(
    """
    import argparse, json, os, random, warnings
    from pathlib import Path

    import lightning as L
    import numpy as np
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, Dataset

    import seedlock
    from seedlock.integrations.lightning import Seedlock

    p = argparse.ArgumentParser()
    p.add_argument("--modes", default="seedlock,plain")
    p.add_argument("--phase", choices=["first", "resume"], required=True)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--stop", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ddp", action="store_true")
    p.add_argument("--stream", action="store_true")  # an iterable dataset of 4 shards
    args = p.parse_args()
    SEED = %(seed)d


    class Augmented(Dataset):
        def __len__(self):
            return 48

        def __getitem__(self, i):
            x = torch.linspace(-1, 1, 8) * ((i %% 5) - 2) / 2 + 0.1 * torch.randn(8)
            if np.random.rand() < 0.5:
                x = x.flip(0)
            return x * (1 + 0.1 * random.random()), torch.tensor(float(i %% 3)), i


    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                torch.nn.Linear(32, 1),
            )
            self.losses, self.ids = [], []

        def training_step(self, batch, batch_idx):
            x, y, i = batch
            loss = ((self.net(x).squeeze(1) - y) ** 2).mean()
            self.losses.append(loss.item().hex())
            self.ids.append(i.tolist())
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

        def train_dataloader(self):
            if args.stream:
                shards = [lambda s=s: (Augmented()[i] for i in range(s, 48, 4)) for s in range(4)]
                return seedlock.data.loader(seedlock.data.sharded(shards), batch_size=4,
                                            shuffle=True, num_workers=args.workers)
            return DataLoader(Augmented(), batch_size=4, shuffle=True, num_workers=args.workers)


    def fit(mode, name, max_steps, ckpt_path=None):
        if mode == "seedlock":
            seedlock.seed_everything(SEED)
        else:
            L.seed_everything(SEED, verbose=False)
        model = Net()
        callbacks = [ModelCheckpoint(dirpath=args.out / f"ckpt-{mode}-{name}", filename="{step}",
                                     every_n_train_steps=args.stop, save_top_k=-1)]
        if mode == "seedlock":
            callbacks.insert(0, Seedlock(SEED, per_rank=args.ddp))
        trainer = L.Trainer(
            accelerator="cpu", devices=2 if args.ddp else 1,
            strategy="ddp" if args.ddp else "auto", max_steps=max_steps,
            enable_progress_bar=False, logger=False, enable_checkpointing=True,
            enable_model_summary=False, default_root_dir=args.out, callbacks=callbacks,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(model, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
        stem = args.out / f"{mode}-{name}-rank{trainer.global_rank}"
        torch.save(model.state_dict(), f"{stem}.pt")
        Path(f"{stem}.json").write_text(json.dumps({
            "losses": model.losses, "ids": model.ids,
            "warnings": [str(w.message) for w in caught],
        }))


    for mode in args.modes.split(","):
        if args.phase == "first":
            fit(mode, "straight", args.steps)
            fit(mode, "stop", args.stop)
        else:
            ckpt = args.out / f"ckpt-{mode}-stop" / f"step={args.stop}.ckpt"
            fit(mode, "resume", args.steps, ckpt_path=ckpt)
    if args.ddp:
        torch.distributed.barrier()
        # Every result is written. Leave without the teardown: under load, torch 2.13's gloo
        # teardown now and then aborts a rank after all work is done.
        os._exit(0)
    """
) % {"seed": SEED}


@pytest.fixture(scope="session")
def launches(tmp_path_factory: pytest.TempPathFactory) -> Launches:
    root = session_folder(tmp_path_factory, "lightning-launches", {"run.py": SCRIPT})
    return Launches(root, clean_env(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))


@pytest.fixture(scope="session")
def stop(pytestconfig: pytest.Config) -> int:
    return session_choice(pytestconfig, "lightning-stop", STOPS)


@pytest.fixture(scope="session")
def ddp_stop(pytestconfig: pytest.Config) -> int:
    return session_choice(pytestconfig, "lightning-stop", DDP_STOPS)


def _python(phase: str, workers: int, stop: int, modes: str, *more: str) -> list[str]:
    return [sys.executable, "run.py", "--phase", phase, "--workers", str(workers), "--modes",
            modes, "--steps", str(STEPS), "--stop", str(stop), "--out", "{out}", *more]  # fmt: skip


@pytest.fixture(scope="session", params=[0, 2], ids=["workers0", "workers2"])
def single(request: pytest.FixtureRequest, launches: Launches, stop: int) -> tuple[Path, int]:
    """One process: straight and stopped runs with and without seedlock; a new process: the
    resumed runs (seedlock's first, in a fresh interpreter)."""
    workers = request.param
    out = launches.get(
        f"single-w{workers}-stop{stop}",
        _python("first", workers, stop, "seedlock,plain"),
        _python("resume", workers, stop, "seedlock,plain"),
    )
    return out, stop


@pytest.fixture(scope="session")
def stream(launches: Launches, stop: int) -> tuple[Path, int]:
    """The same with a seedlock loader of an iterable dataset (2 workers), which Lightning
    fetches one batch ahead of."""
    out = launches.get(
        f"stream-stop{stop}",
        _python("first", 2, stop, "seedlock", "--stream"),
        _python("resume", 2, stop, "seedlock", "--stream"),
    )
    return out, stop


@pytest.fixture(scope="session")
def ddp(launches: Launches, ddp_stop: int) -> tuple[Path, int]:
    """Two torchrun jobs of 2 ranks (Lightning's DDP strategy on gloo): straight and stopped;
    then the resumed one."""
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "run.py", "--ddp",
                "--modes", "seedlock", "--steps", str(DDP_STEPS), "--stop", str(ddp_stop),
                "--out", "{out}"]  # fmt: skip
    out = launches.get(
        f"ddp-stop{ddp_stop}", [*torchrun, "--phase", "first"], [*torchrun, "--phase", "resume"]
    )
    return out, ddp_stop


def _run(out: Path, mode: str, name: str, rank: int = 0) -> dict[str, Any]:
    run: dict[str, Any] = json.loads((out / f"{mode}-{name}-rank{rank}.json").read_text())
    run["params"] = torch.load(out / f"{mode}-{name}-rank{rank}.pt", weights_only=True)
    return run


def _same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _assert_exact(out: Path, mode: str, stop: int, rank: int = 0) -> None:
    straight, stopped, resumed = (_run(out, mode, n, rank) for n in ("straight", "stop", "resume"))
    where = f"{mode}, rank {rank}, stop at step {stop}"
    assert stopped["losses"] == straight["losses"][:stop], where
    assert resumed["ids"] == straight["ids"][stop:], f"{where}: other batches after the resume"
    assert resumed["losses"] == straight["losses"][stop:], f"{where}: other losses"
    assert _same_params(resumed["params"], straight["params"]), f"{where}: other parameters"


# -- resume in a new process ------------------------------------------------------------------


@pytest.mark.slow
def test_resume_is_exact_with_seedlock(single: tuple[Path, int]):
    out, stop = single
    _assert_exact(out, "seedlock", stop)
    resumed = _run(out, "seedlock", "resume")
    assert not [w for w in resumed["warnings"] if NOT_RESUMABLE in w]  # a resumable loader


@pytest.mark.slow
def test_resume_of_an_iterable_dataset_is_exact_with_seedlock(stream: tuple[Path, int]):
    out, stop = stream
    _assert_exact(out, "seedlock", stop)
    ids = [i for batch in _run(out, "seedlock", "straight")["ids"][:12] for i in batch]
    assert sorted(ids) == list(range(48))  # epoch 0 reads each sample of the 4 shards once


@pytest.mark.slow
def test_resume_differs_without_seedlock(single: tuple[Path, int]):
    out, stop = single
    straight, stopped, resumed = (_run(out, "plain", n) for n in ("straight", "stop", "resume"))
    assert stopped["losses"] == straight["losses"][:stop]  # the runs agree up to the stop
    assert resumed["ids"] != straight["ids"][stop:]  # Lightning restarts the epoch's order
    assert resumed["losses"] != straight["losses"][stop:]
    assert not _same_params(resumed["params"], straight["params"])
    assert any(NOT_RESUMABLE in w for w in resumed["warnings"])


@pytest.mark.slow
def test_ddp_resume_is_exact_on_every_rank(ddp: tuple[Path, int]):
    out, stop = ddp
    for rank in (0, 1):
        _assert_exact(out, "seedlock", stop, rank)
    runs = [_run(out, "seedlock", "straight", rank) for rank in (0, 1)]
    # Each epoch is split across the ranks (no DistributedSampler from Lightning on top).
    epoch0 = sorted(i for run in runs for batch in run["ids"][:6] for i in batch)
    assert epoch0 == list(range(48))
    assert _same_params(runs[0]["params"], runs[1]["params"])  # DDP kept the replicas equal


# -- in this process --------------------------------------------------------------------------


class _Squares(Dataset[Any]):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((4,), float(i)) + torch.randn(4)


class _Stream(IterableDataset[Any]):
    def __iter__(self) -> Any:
        return iter(torch.randn(16, 4))


class _Tiny(L.LightningModule):
    def __init__(self, data: Any) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.data = data
        self.seen: dict[str, Any] = {}

    def setup(self, stage: str) -> None:
        self.seen["draws"] = (random.random(), np.random.rand(), torch.rand(3))

    def on_train_start(self) -> None:
        self.seen["deterministic"] = torch.are_deterministic_algorithms_enabled()

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.data, batch_size=4, shuffle=not isinstance(self.data, _Stream))


def _fit(module: _Tiny, tmp_path: Path, *callbacks: Any, **kwargs: Any) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, enable_progress_bar=False, logger=False,
        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(module, **kwargs)
    return trainer


def test_seeds_as_lightning_seed_everything(tmp_path: Path):
    theirs = _Tiny(_Squares())
    L.seed_everything(99, verbose=False)  # right before fit: the callback seeds at setup
    _fit(theirs, tmp_path)
    mine = _Tiny(_Squares())
    _fit(mine, tmp_path, Seedlock(99))
    (a, b, c), (x, y, z) = theirs.seen["draws"], mine.seen["draws"]
    assert (a, b) == (x, y) and torch.equal(c, z)


def test_determinism_is_on_during_fit_and_off_after(tmp_path: Path):
    module = _Tiny(_Squares())
    _fit(module, tmp_path, Seedlock(0, deterministic=True))
    assert module.seen["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_train_loader_becomes_a_seedlock_loader(tmp_path: Path):
    trainer = _fit(_Tiny(_Squares()), tmp_path, Seedlock(0))
    assert isinstance(trainer.train_dataloader.loader, SeedlockDataLoader)
    plain = _fit(_Tiny(_Squares()), tmp_path, Seedlock(0, loader=False))
    assert type(plain.train_dataloader) is DataLoader


def test_a_loader_it_cannot_rebuild_is_left_with_a_warning(tmp_path: Path):
    with pytest.warns(UserWarning, match="IterableDataset") as caught:
        trainer = _fit(_Tiny(_Stream()), tmp_path, Seedlock(0))
    assert type(trainer.train_dataloader) is DataLoader
    message = next(str(w.message) for w in caught if "IterableDataset" in str(w.message))
    assert "\n" not in message and "not exact" in message


class _StatefulStream(_Stream):
    def state_dict(self) -> dict[str, int]:
        return {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        pass


class _StreamModule(_Tiny):
    def train_dataloader(self) -> Any:
        return seedlock.data.loader(self.data, batch_size=4, seed=0)


def test_a_seedlock_loader_of_an_iterable_dataset_is_taken_as_it_is(tmp_path: Path):
    trainer = _fit(_StreamModule(_StatefulStream()), tmp_path, Seedlock(0))
    assert isinstance(trainer.train_dataloader.loader, seedlock.data.SeedlockStreamLoader)


def test_a_checkpoint_without_seedlock_state_warns(tmp_path: Path):
    trainer = _fit(_Tiny(_Squares()), tmp_path)
    path = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(path)
    with pytest.warns(UserWarning, match="holds no Seedlock state"):
        _fit(_Tiny(_Squares()), tmp_path, Seedlock(0), ckpt_path=path)


def test_the_state_is_every_ranks_rng_and_the_loader_position(tmp_path: Path):
    seedlock.seed_everything(0)
    callback = Seedlock(0)
    _fit(_Tiny(_Squares()), tmp_path, callback)
    state = callback.state_dict()
    assert state["world_size"] == 1 and set(state["rank0"]) == {"rng", "loader"}
    assert state["rank0"]["loader"] == {"version": 1, "epoch": 0, "batches": 2}
    path = tmp_path / "state.pt"
    torch.save(state, path)
    assert torch.load(path, weights_only=True)["rank0"]["loader"]["batches"] == 2
