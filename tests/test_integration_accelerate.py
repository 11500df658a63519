"""seedlock.integrations.accelerate: a run stopped mid-epoch with ``accelerator.save_state`` and
resumed in a new process with ``load_state`` ends on the same bits as a run that never stopped.

Each scenario runs a small training script (dropout, a shuffled loader, augmentation drawing
from ``random``, ``np.random`` and torch's global RNG) in child processes: the straight run and
the stopped one in a first process, the resumed run in a second. The same scenario with
accelerate alone (``set_seed``, a plain DataLoader, ``save_state`` / ``load_state`` and
``accelerator.skip_first_batches``) is run too and must differ: that is what seedlock adds.
The runs are shared by the tests (session fixtures, once per session under pytest-xdist too).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("accelerate")

from accelerate import Accelerator
from torch.utils.data import DataLoader, IterableDataset

import seedlock
from launches import Launches, clean_env, session_choice, session_folder
from seedlock.integrations import accelerate as sla

BIN = Path(sys.executable).parent
STEPS = 28  # 8 batches an epoch (4 per rank with 2 processes)
STOPS = (11, 21)  # mid-epoch for 1 and 2 processes; one is chosen from the session seed

TRAIN = textwrap.dedent(
    """
    import json, os, random, sys
    from pathlib import Path

    import numpy as np
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed as accelerate_set_seed

    import seedlock
    from seedlock.integrations.accelerate import set_seed, track

    mode, workers, steps, stop, ckpt, out, phase = sys.argv[1:]
    workers, steps, stop, ckpt, out = int(workers), int(steps), int(stop), Path(ckpt), Path(out)

    class Augmented(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(1234)
            self.x = torch.randn(64, 8, generator=g)
            self.y = self.x.sum(1, keepdim=True)

        def __len__(self):
            return 64

        def __getitem__(self, i):
            noise = torch.randn(8) * np.random.rand() * 0.1 + random.random() * 0.01
            return self.x[i] + noise, self.y[i]

    def equal(a, b):
        if isinstance(a, dict):
            same = isinstance(b, dict) and a.keys() == b.keys()
            return same and all(equal(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and torch.equal(a, b)
        if isinstance(a, np.ndarray):
            return np.array_equal(a, b)
        return a == b

    def run(stop_at, resume):
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if mode == "seedlock":
            set_seed(0, device_specific=distributed)
        else:
            accelerate_set_seed(0, device_specific=distributed)
        model = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1)
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        accelerator = Accelerator(cpu=True)
        if mode == "seedlock":
            loader = seedlock.data.loader(Augmented(), batch_size=8, shuffle=True,
                                          num_workers=workers)
            loader = track(accelerator, loader)
        else:
            loader = torch.utils.data.DataLoader(Augmented(), batch_size=8, shuffle=True,
                                                 num_workers=workers)
        model, opt, loader = accelerator.prepare(model, opt, loader)
        step, result = 0, {}
        if resume:
            accelerator.load_state(str(ckpt))
            step = json.loads((ckpt / "step.json").read_text())["step"]
            if mode == "seedlock":
                saved = torch.load(ckpt / f"seedlock-rank{accelerator.process_index}.pt",
                                   weights_only=True)
                mine = saved[f"rank{accelerator.process_index}"]
                result["rng_as_saved"] = equal(seedlock.state_dict(), mine["rng"])
                result["loader_as_saved"] = loader.state_dict() == mine["loader0"]

        def batches():
            if mode == "seedlock":  # the loader resumes where it was, epoch after epoch
                while True:
                    yield from loader
            skip = step % len(loader)  # accelerate's recipe: skip the epoch's first batches
            if skip:
                yield from accelerator.skip_first_batches(loader, skip)
            while True:
                yield from loader

        losses = []
        for x, y in batches():
            loss = torch.nn.functional.mse_loss(model(x), y)
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()
            losses.append(loss.item().hex())
            step += 1
            if step == stop_at:
                accelerator.save_state(str(ckpt))
                if accelerator.is_main_process:
                    (ckpt / "step.json").write_text(json.dumps({"step": step}))
                break
            if step == steps:
                break
        params = accelerator.unwrap_model(model).state_dict()
        result["losses"] = losses
        result["params"] = {k: v.numpy().tobytes().hex() for k, v in params.items()}
        return result

    rank = int(os.environ.get("RANK", "0"))
    if phase == "first":
        results = {"straight": run(None, False), "stopped": run(stop, False)}
    else:
        results = {"resumed": run(None, True)}
    (out / f"{phase}-rank{rank}.json").write_text(json.dumps(results))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.barrier()
        os._exit(0)  # no gloo teardown (it aborts now and then under load, after the work)
    """
)


@pytest.fixture(scope="session")
def stop(pytestconfig: pytest.Config) -> int:
    """The stop step of this session (the same on every xdist worker; replay with
    --seedlock-seed)."""
    return session_choice(pytestconfig, "accelerate-stop", STOPS)


@pytest.fixture(scope="session")
def launches(tmp_path_factory: pytest.TempPathFactory) -> Launches:
    return Launches(session_folder(tmp_path_factory, "accelerate-launches", {"train.py": TRAIN}))


def scenario(launches: Launches, mode: str, workers: int, stop: int, nproc: int = 1) -> dict:
    """The three runs of a scenario: {"straight", "stopped", "resumed"} (a list, per rank)."""
    name = f"{mode}-w{workers}-p{nproc}-s{stop}"
    ckpt = launches.root / f"{name}-ckpt"
    if nproc == 1:
        launcher = [sys.executable]
    else:
        launcher = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}"]
    results: dict[str, Any] = {}
    for phase in ("first", "resume"):
        argv = [*launcher, "train.py", mode, str(workers), str(STEPS), str(stop), str(ckpt)]
        out = launches.get(
            f"{name}-{phase}", [*argv, str(launches.root / f"{name}-{phase}"), phase]
        )
        for r in range(nproc):
            for key, value in json.loads((out / f"{phase}-rank{r}.json").read_text()).items():
                results.setdefault(key, []).append(value)
    results["ckpt"] = ckpt
    return results


def assert_resumed_exactly(runs: dict, stop: int, rank: int = 0) -> None:
    straight, stopped, resumed = (runs[k][rank] for k in ("straight", "stopped", "resumed"))
    assert len(straight["losses"]) == STEPS
    assert stopped["losses"] == straight["losses"][:stop]
    assert resumed["rng_as_saved"], "load_state left another RNG state than the one saved"
    assert resumed["loader_as_saved"]
    assert resumed["losses"] == straight["losses"][stop:], f"stop at {stop}"
    assert resumed["params"] == straight["params"]


@pytest.fixture(scope="session", params=[0, 2], ids=["workers0", "workers2"])
def seedlock_runs(request: pytest.FixtureRequest, launches: Launches, stop: int) -> dict:
    return scenario(launches, "seedlock", request.param, stop)


def test_save_state_and_load_state_in_a_new_process_resume_bit_for_bit(seedlock_runs, stop):
    assert_resumed_exactly(seedlock_runs, stop)


def test_each_process_writes_one_state_file_that_loads_with_weights_only(seedlock_runs, stop):
    ckpt = seedlock_runs["ckpt"]
    state = torch.load(ckpt / "seedlock-rank0.pt", weights_only=True)
    assert set(state) == {"version", "world_size", "rank0"}
    assert set(state["rank0"]) == {"rng", "loader0"}
    batches = len(range(0, 64, 8))
    assert state["rank0"]["loader0"] == {
        "version": 1, "epoch": stop // batches, "batches": stop % batches
    }  # fmt: skip
    assert (ckpt / "random_states_0.pkl").exists()  # accelerate's own files are still written


def test_accelerate_alone_does_not_resume_exactly(launches, stop):
    runs = scenario(launches, "plain", 2, stop)
    straight, stopped, resumed = (runs[k][0] for k in ("straight", "stopped", "resumed"))
    assert stopped["losses"] == straight["losses"][:stop]  # the same run up to the stop
    assert len(resumed["losses"]) == STEPS - stop
    assert resumed["losses"] != straight["losses"][stop:]
    assert resumed["params"] != straight["params"]


@pytest.mark.slow
def test_two_processes_under_torchrun_resume_bit_for_bit(launches, stop):
    runs = scenario(launches, "seedlock", 0, stop, nproc=2)
    for rank in (0, 1):
        assert_resumed_exactly(runs, stop, rank)
    first, second = runs["straight"]
    assert first["losses"] != second["losses"]  # each process its own share and dropout
    assert first["params"] == second["params"]  # DDP: the same model on both
    ckpt = runs["ckpt"]
    for rank in (0, 1):
        state = torch.load(ckpt / f"seedlock-rank{rank}.pt", weights_only=True)
        assert set(state) == {"version", "world_size", f"rank{rank}"}
        assert state[f"rank{rank}"]["loader0"]["world_size"] == 2


# -- in this process: seeding, skip_first_batches and the errors -----------------------------


def test_set_seed_gives_the_draws_of_accelerate_set_seed():
    script = """
        import random, numpy as np, torch
        from accelerate.utils import set_seed as theirs
        from seedlock.integrations.accelerate import set_seed as ours
        for seed in (0, 42, 2**31 - 1):
            draws = []
            for set_seed in (theirs, ours):
                set_seed(seed)
                draws.append((random.random(), np.random.rand(3).tobytes(),
                              torch.rand(3).numpy().tobytes(), torch.randn(2).numpy().tobytes()))
            assert draws[0] == draws[1], seed
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def _loader(n: int = 40) -> Any:
    return seedlock.data.loader(torch.arange(n), batch_size=4, shuffle=True, seed=3)


def test_skip_first_batches_positions_the_prepared_loader_without_replay():
    accelerator = Accelerator(cpu=True)
    loader = sla.track(accelerator, _loader())
    assert accelerator.prepare(loader) is loader  # prepare passes a tracked loader through
    reference = _loader()
    reference.set_epoch(2)
    expected = [b.tolist() for b in reference][7:]
    assert sla.skip_first_batches(loader, 7, epoch=2) is loader
    assert [b.tolist() for b in loader] == expected
    assert loader.epoch == 3


def test_the_prepared_loader_tells_accelerate_where_the_epoch_ends():
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(sla.track(accelerator, _loader(12)))
    ends = [accelerator.gradient_state.end_of_dataloader for _ in loader]
    assert ends == [False, False, True]
    assert loader.state_dict() == {"version": 1, "epoch": 1, "batches": 0}


def test_a_plain_dataloader_is_rebuilt_as_a_seedlock_loader():
    seedlock.seed_everything(0)
    plain = DataLoader(torch.arange(16), batch_size=4, shuffle=True)
    rebuilt = sla.track(Accelerator(cpu=True), plain)
    assert isinstance(rebuilt, seedlock.data.SeedlockDataLoader)
    assert sorted(torch.cat(list(rebuilt)).tolist()) == list(range(16))


def test_what_cannot_resume_exactly_is_refused_in_one_line():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(4))

    with pytest.raises(TypeError, match="IterableDataset"):
        sla.track(Accelerator(cpu=True), DataLoader(Stream()))
    stream = seedlock.data.loader(seedlock.data.sharded([lambda: range(4)]), batch_size=2, seed=0)
    with pytest.raises(TypeError, match="one batch ahead"):
        sla.track(Accelerator(cpu=True), stream)
    accelerator = Accelerator(cpu=True)
    rebuilt = accelerator.prepare(_loader())  # prepared without track
    with pytest.raises(TypeError, match="before prepare"):
        sla.track(accelerator, rebuilt)
    with pytest.raises(TypeError, match="before prepare"):
        sla.skip_first_batches(rebuilt, 1, epoch=0)
    with pytest.raises(TypeError, match=r"accelerator\.skip_first_batches"):
        sla.skip_first_batches(DataLoader(torch.arange(4)), 1, epoch=0)
    sla.track(accelerator)
    with pytest.raises(RuntimeError, match="already"):
        sla.track(accelerator)
    other = Accelerator(cpu=True)
    other.register_for_checkpointing(seedlock.rng)
    with pytest.raises(ValueError, match="per process"):
        sla.track(other)


def test_batch_splitting_settings_that_do_not_apply_are_said_to():
    from accelerate.utils import DataLoaderConfiguration

    config = DataLoaderConfiguration(split_batches=True)
    with pytest.warns(UserWarning, match="split_batches: ignored for a tracked seedlock loader"):
        sla.track(Accelerator(cpu=True, dataloader_config=config), _loader())


def test_load_state_of_a_checkpoint_saved_without_track_says_so(tmp_path):
    accelerator = Accelerator(cpu=True)
    accelerator.save_state(str(tmp_path))
    sla.track(accelerator)
    with pytest.raises(FileNotFoundError, match="not saved with"):
        accelerator.load_state(str(tmp_path))


def test_a_save_inside_a_gradient_accumulation_cycle_warns(tmp_path):
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = accelerator.prepare(torch.nn.Linear(2, 1))
    sla.track(accelerator)
    with accelerator.accumulate(model):
        accelerator.backward(model(torch.ones(1, 2)).sum())
    with pytest.warns(UserWarning, match="gradient accumulation cycle"):
        accelerator.save_state(str(tmp_path))
