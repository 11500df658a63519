"""The Hugging Face ``Trainer`` integration: ``SeedlockTrainer`` resumes mid-epoch bit for bit.

Every scenario trains a tiny ``PreTrainedModel`` (an MLP with dropout, built from a config in the
script) on a shuffled dataset whose ``__getitem__`` draws augmentation from ``random``,
``np.random`` and torch's global generator: straight through, and stopped at a step in the
middle of an epoch, then resumed from the checkpoint in a new process. With ``SeedlockTrainer``
the per-step losses (as float.hex) and the final parameters are the same bits; with the plain
``Trainer``, the same scenario is asserted to differ, so these tests also notice the day the
framework resumes exactly by itself.

The runs happen once per session (shared between xdist workers through a lock file): per
trainer, one process trains every scenario straight and stopped, another resumes them all.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from launches import Launches, session_choice, session_folder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None, reason="needs seedlock[transformers]"
    ),
]

#: scenario -> (dataloader_num_workers, gradient_accumulation_steps, max_steps). An epoch is 10
#: batches; the stop steps (7, 13) fall in the middle of an epoch for both accumulations.
SCENARIOS = {"workers0": (0, 1, 30), "workers2": (2, 1, 30), "accumulate2": (0, 2, 15)}
STOPS = (7, 13)

SCRIPT = '''
import json
import random
import sys
import warnings

import numpy as np
import torch
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

import seedlock
from seedlock.integrations.transformers import SeedlockTrainer, state_path

LOSSES = []


class TinyConfig(PretrainedConfig):
    model_type = "seedlock-tiny-mlp"

    def __init__(self, width=16, dropout=0.3, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.dropout = dropout


class TinyModel(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, config.width), torch.nn.ReLU(),
            torch.nn.Dropout(config.dropout), torch.nn.Linear(config.width, 1),
        )

    def forward(self, x, y):
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if self.training:
            LOSSES.append(loss.item().hex())
        return {"loss": loss}


class Augmented(torch.utils.data.Dataset):
    def __init__(self, n=40):
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        noise = 0.1 * torch.randn(4) + 0.1 * np.random.rand() + 0.1 * random.random()
        return {"x": self.x[i] + noise, "y": self.y[i]}


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(Augmented())


class Tokens(Augmented):
    def __getitem__(self, i):
        return {"input_ids": torch.arange(i % 5 + 1) + self.x[i, 0].long()}


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def arguments(out, workers=0, accumulate=1, max_steps=30, save_steps=10, **more):
    return TrainingArguments(
        output_dir=out, max_steps=max_steps, save_steps=save_steps,
        per_device_train_batch_size=4, gradient_accumulation_steps=accumulate,
        learning_rate=0.05, dataloader_num_workers=workers, report_to=[], use_cpu=True,
        seed=SEED, logging_strategy="no", disable_tqdm=True, **more,
    )


def train(out, workers, accumulate, max_steps, stop=None, resume=False, **more):
    LOSSES.clear()
    if TRAINER == "seedlock":
        seedlock.seed_everything(SEED)
        trainer_class = SeedlockTrainer
    else:
        set_seed(SEED)
        trainer_class = Trainer
    model = TinyModel(TinyConfig())
    args = arguments(out, workers, accumulate, max_steps, save_steps=STOP, **more)
    trainer = trainer_class(model=model, args=args, train_dataset=Augmented(),
                            eval_dataset=Augmented(8),
                            callbacks=[StopAt(stop)] if stop else [])
    trainer.train(resume_from_checkpoint=f"{out}/checkpoint-{STOP}" if resume else None)
    return list(LOSSES), model.state_dict()


def checks(out):
    """Facts about seeding, determinism and refusals, as JSON."""
    found = {}
    set_seed(SEED)
    expected = [random.random(), float(np.random.rand()), torch.rand(2).tolist()]
    SeedlockTrainer(model=TinyModel(TinyConfig()), args=arguments(f"{out}/seed"),
                    train_dataset=Augmented())
    found["draws_match_set_seed"] = expected == [
        random.random(), float(np.random.rand()), torch.rand(2).tolist()]
    args = arguments(f"{out}/full", full_determinism=True)
    trainer = SeedlockTrainer(model=TinyModel(TinyConfig()), args=args, train_dataset=Augmented())
    found["deterministic_on"] = torch.are_deterministic_algorithms_enabled()
    found["full_determinism_kept"] = args.full_determinism
    trainer.seedlock_profile.restore()
    found["deterministic_after_restore"] = torch.are_deterministic_algorithms_enabled()
    found["refused"] = {}
    for name, dataset, more in [
        ("iterable", Stream(), {}),
        ("group_by_length", Tokens(), {"train_sampling_strategy": "group_by_length"}),
    ]:
        trainer = SeedlockTrainer(model=TinyModel(TinyConfig()), args=arguments(
            f"{out}/{name}", **more), train_dataset=dataset)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.get_train_dataloader()
        found["refused"][name] = [str(w.message) for w in caught if "seedlock" in str(
            w.filename) or "DataLoader" in str(w.message)]
    return found


def main():
    global TRAINER, SEED, STOP
    TRAINER, phase, out, SEED, STOP = sys.argv[1], sys.argv[2], sys.argv[3], 0, int(sys.argv[4])
    scenarios = json.loads(sys.argv[5])
    for name, (workers, accumulate, max_steps) in scenarios.items():
        folder = f"{out}/{name}"
        if phase == "first":
            losses, params = train(f"{folder}/straight", workers, accumulate, max_steps)
            torch.save(params, f"{folder}/straight.pt")
            json.dump(losses, open(f"{folder}/straight.json", "w"))
            losses, _ = train(f"{folder}/run", workers, accumulate, max_steps, stop=STOP)
            json.dump(losses, open(f"{folder}/stopped.json", "w"))
        else:
            losses, params = train(f"{folder}/run", workers, accumulate, max_steps, resume=True)
            torch.save(params, f"{folder}/resumed.pt")
            json.dump(losses, open(f"{folder}/resumed.json", "w"))
    if phase == "first":  # the same training, evaluated every 5 steps
        losses, _ = train(f"{out}/workers0/eval", 0, 1, 30, eval_strategy="steps", eval_steps=5)
        json.dump(losses, open(f"{out}/workers0/evaluated.json", "w"))
    if TRAINER == "seedlock" and phase == "first":
        json.dump(checks(out), open(f"{out}/checks.json", "w"))
    if TRAINER == "seedlock" and phase == "resume":  # another batch size: refused, one line
        LOSSES.clear()
        seedlock.seed_everything(SEED)
        args = arguments(f"{out}/workers0/run", save_steps=STOP)
        args.per_device_train_batch_size = 2
        trainer = SeedlockTrainer(model=TinyModel(TinyConfig()), args=args,
                                  train_dataset=Augmented())
        try:
            trainer.train(resume_from_checkpoint=f"{out}/workers0/run/checkpoint-{STOP}")
            message = None
        except ValueError as exc:
            message = str(exc)
        json.dump({"message": message}, open(f"{out}/mismatch.json", "w"))


main()
'''


@pytest.fixture(scope="session")
def stop(pytestconfig: pytest.Config) -> int:
    """The stop step of this session (the same on every xdist worker; replay with
    --seedlock-seed)."""
    return session_choice(pytestconfig, "transformers-stop", STOPS)


@pytest.fixture(scope="session")
def launches(tmp_path_factory: pytest.TempPathFactory) -> Launches:
    return Launches(session_folder(tmp_path_factory, "transformers-runs", {"scenario.py": SCRIPT}))


def _runs(launches: Launches, trainer: str, stop: int) -> tuple[Path, int]:
    """Every scenario's straight and stopped runs in one process, then the resumed ones in a
    new process, for one trainer; each once per session."""
    name = f"{trainer}-stop{stop}"
    for scenario in SCENARIOS:
        (launches.root / name / scenario).mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "scenario.py", trainer, "{phase}", "{out}", str(stop),
               json.dumps(SCENARIOS)]  # fmt: skip
    first, resume = ([a.replace("{phase}", p) for a in command] for p in ("first", "resume"))
    return launches.get(name, first, resume), stop


@pytest.fixture(scope="session")
def with_seedlock(launches: Launches, stop: int) -> tuple[Path, int]:
    return _runs(launches, "seedlock", stop)


@pytest.fixture(scope="session")
def plain(launches: Launches, stop: int) -> tuple[Path, int]:
    return _runs(launches, "plain", stop)


def _losses(folder: Path, name: str) -> list[str]:
    return list(json.loads((folder / f"{name}.json").read_text()))


def _params(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return dict(torch.load(folder / f"{name}.pt", weights_only=True))


def _same_params(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_seedlock_trainer_resumes_mid_epoch_bit_for_bit(with_seedlock, scenario):
    out, stop = with_seedlock
    folder = out / scenario
    straight = _losses(folder, "straight")
    stopped, resumed = _losses(folder, "stopped"), _losses(folder, "resumed")
    accumulate = SCENARIOS[scenario][1]
    assert len(stopped) == stop * accumulate, (stop, len(stopped))
    assert stopped + resumed == straight, f"stopped at step {stop}"
    assert _same_params(_params(folder, "straight"), _params(folder, "resumed"))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_plain_trainer_does_not(plain, scenario):
    # The plain Trainer restores its RNG state after the resumed epoch has started: the workers'
    # seeds are drawn, and the first batches augmented in the main process, from the generators
    # as set_seed left them, so augmentation and dropout take other numbers from there on.
    out, stop = plain
    folder = out / scenario
    straight = _losses(folder, "straight")
    stopped, resumed = _losses(folder, "stopped"), _losses(folder, "resumed")
    assert stopped == straight[: len(stopped)]  # the same run up to the stop ...
    assert resumed != straight[len(stopped) :], f"stopped at step {stop}"  # ... not after it
    assert not _same_params(_params(folder, "straight"), _params(folder, "resumed"))


def test_the_workers_do_not_change_the_numbers(with_seedlock):
    out, _ = with_seedlock
    assert _losses(out / "workers0", "straight") == _losses(out / "workers2", "straight")
    assert _same_params(
        _params(out / "workers0", "straight"), _params(out / "workers2", "straight")
    )


def test_evaluation_does_not_shift_training(with_seedlock, plain):
    out, _ = with_seedlock
    assert _losses(out / "workers0", "evaluated") == _losses(out / "workers0", "straight")
    # The plain Trainer's evaluation draws from torch's global generator (the eval DataLoader's
    # base seed, the augmentation): the training steps after it get other numbers.
    theirs = plain[0] / "workers0"
    assert _losses(theirs, "evaluated") != _losses(theirs, "straight")


def test_the_state_file_loads_with_weights_only(with_seedlock, plain):
    out, stop = with_seedlock
    checkpoint = out / "workers2" / "run" / f"checkpoint-{stop}"
    state = torch.load(checkpoint / "seedlock_state_0.pth", weights_only=True)
    assert sorted(state) == ["batches_per_epoch", "loader", "seedlock"]
    assert state["loader"] == {"version": 1, "epoch": stop // 10, "batches": stop % 10}
    assert not (checkpoint / "rng_state.pth").exists()
    theirs = plain[0] / "workers2" / "run" / f"checkpoint-{plain[1]}" / "rng_state.pth"
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(theirs, weights_only=True)


def test_seeding_goes_through_seedlock(with_seedlock):
    checks = json.loads((with_seedlock[0] / "checks.json").read_text())
    assert checks["draws_match_set_seed"]
    assert checks["deterministic_on"] and checks["full_determinism_kept"]
    assert not checks["deterministic_after_restore"]  # seedlock's profile, reversible


def test_what_cannot_be_exact_is_said_in_one_line(with_seedlock):
    out, stop = with_seedlock
    refused = json.loads((out / "checks.json").read_text())["refused"]
    assert any("IterableDataset" in m for m in refused["iterable"]), refused
    assert any("LengthGroupedSampler" in m for m in refused["group_by_length"]), refused
    message = json.loads((out / "mismatch.json").read_text())["message"]
    assert message and "batch size" in message and f"batch {stop % 10} of epoch" in message


def test_a_hostile_loader_position_in_a_checkpoint_is_refused_in_one_line(tmp_path):
    from types import SimpleNamespace

    import seedlock.data
    from seedlock.integrations.transformers import SeedlockTrainerMixin, state_path

    torch.save({"loader": {"epoch": "0", "batches": [1]}}, state_path(tmp_path))
    trainer = SimpleNamespace(_args=SimpleNamespace(process_index=0))
    loader = seedlock.data.loader(list(range(8)), batch_size=2, seed=0)
    with pytest.raises(ValueError, match="the loader position is not one seedlock writes"):
        SeedlockTrainerMixin._check_position(trainer, str(tmp_path), loader, 0, 0)  # type: ignore[arg-type]
