"""seedlock under torchrun: rank-aware streams, sync_state, per-rank checkpoints, and the replica
check of the audit (check_replicas).

The multi-rank tests launch the real thing: ``torchrun --standalone --nproc_per_node=2`` (and 4),
the gloo backend on the CPU, a small DDP model with dropout, the seedlock loader shuffling and
augmenting. Each launch runs once per test session (shared by xdist workers through a lock
file); the tests read what its ranks wrote.

``--standalone`` rather than ``--master_port=0``: with torch 2.13, ``--master_port=0`` hands
the ranks ``MASTER_PORT=0`` and ``init_process_group`` waits forever.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import seedlock
import seedlock.audit.replicas
import seedlock.data
import seedlock.distributed as sd
from launches import Launches, clean_env, session_folder
from seedlock.data import ResumableSampler
from seedlock.derivation import derive
from seedlock.errors import StateMismatchError

BIN = Path(sys.executable).parent
TORCHRUN = str(BIN / "torchrun")
SEEDLOCK = str(BIN / "seedlock")
STEPS, STOP_AT = 20, 11  # 8 batches per rank and epoch: the stop is mid-epoch 1

TRAIN = textwrap.dedent(
    """
    # A small DDP job: dropout, the seedlock loader (shuffle + per-sample augmentation) and a
    # rank-local noise stream. Each rank writes <out>/<stop|run>-rank<r>.json.
    import argparse, json, os, random
    from pathlib import Path

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import seedlock, seedlock.data
    import seedlock.distributed as sd

    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int)  # default: the root `seedlock run` exported
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--stop-at", type=int)
    parser.add_argument("--resume", default="")  # "dcp,files": resume (in turn) after training
    parser.add_argument("--ckpt", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--drift-rank", type=int, default=1)
    args = parser.parse_args()

    boot = torch.rand(3).tolist()  # what this interpreter was seeded with before this line
    dist.init_process_group("gloo")
    rank, world = sd.rank(), sd.world_size()
    root = seedlock.get_root() if args.seed is None else args.seed
    seedlock.seed_everything(root, per_rank=True)
    result = {"rank": rank, "world": world, "env_root": os.environ.get("SEEDLOCK_SEED"),
              "boot_draws": boot, "global_draws": torch.rand(3).tolist()}


    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            x = torch.linspace(-1, 1, 16) * (i % 7 - 3) / 3 + i / 64
            x = x + 0.1 * torch.randn(16)          # augmentation: the global torch RNG...
            if np.random.rand() < 0.5:             # ... and NumPy's, seeded per sample
                x = x.flip(0)
            return x, torch.tensor(float(i % 3))


    def build():
        loader = seedlock.data.loader(Images(), batch_size=4, shuffle=True)
        noise = seedlock.torch_generator("noise", per_rank=True)
        with sd.shared_globals("init"):
            net = torch.nn.Sequential(
                torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                torch.nn.Linear(32, 1),
            )
        init = seedlock.audit.check_replicas(net)  # before DDP's own broadcast
        model = DDP(net)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return loader, noise, model, opt, init


    def save(model, opt, loader, step):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        state = sd.PerRankState(loader=loader)
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd, "seedlock": state, "step": step},
                 checkpoint_id=args.ckpt / "dcp")
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(),
                    "seedlock": state.state_dict(), "step": step},
                   sd.rank_path(args.ckpt / "plain.pt"))


    def load(how, model, opt, loader):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        state = sd.PerRankState(loader=loader)
        if how == "dcp":
            msd, osd = get_state_dict(model, opt)
            ckpt = {"model": msd, "optim": osd, "seedlock": state, "step": 0}
            dcp.load(ckpt, checkpoint_id=args.ckpt / "dcp")
            set_state_dict(model, opt, model_state_dict=ckpt["model"],
                           optim_state_dict=ckpt["optim"])
            return ckpt["step"]
        ckpt = torch.load(sd.rank_path(args.ckpt / "plain.pt"), weights_only=True)
        model.module.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        state.load_state_dict(ckpt["seedlock"])
        return ckpt["step"]


    def train(resume=None):
        loader, noise, model, opt, init = build()
        step = load(resume, model, opt, loader) if resume else 0
        losses = []
        while step < args.steps:
            for x, y in loader:
                x = x + 0.05 * torch.randn(x.shape, generator=noise)  # rank-local noise
                loss = ((model(x).squeeze(1) - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                step += 1
                if step == args.stop_at:
                    save(model, opt, loader, step)
                    return None
                if step == args.steps:
                    break
        return model, loader, losses, init


    def save_params(model, name):
        params = {n: p.detach().clone() for n, p in model.module.named_parameters()}
        torch.save(params, args.out / f"{name}-rank{rank}.pt")


    if args.stop_at:
        train()  # saves at --stop-at, then the whole job stops
    else:
        model, loader, losses, init = train()  # the uninterrupted job
        save_params(model, "final")
        for how in filter(None, args.resume.split(",")):  # the relaunched job, resumed
            save_params(train(resume=how)[0], f"final-{how}")
        result["init_report"] = init.to_dict()
        result["losses"] = losses
        result["indices_epoch0"] = loader.resumable_sampler.indices(0)
        result["replicas"] = seedlock.audit.check_replicas(model).to_dict()

        # Shared and rank-local streams, then sync_state after rank 1 drew more than the others.
        shared = seedlock.numpy_rng("probe")
        local = seedlock.numpy_rng("probe", per_rank=True)
        jitter = seedlock.register(random.Random(rank), "jitter", per_rank=True)
        result["shared"] = shared.random(3).tolist()
        result["local"] = local.random(3).tolist()
        with sd.shared_globals("probe"):
            result["shared_globals"] = torch.rand(3).tolist()
        result["after_shared_globals"] = torch.rand(3).tolist()
        if rank == 1:
            shared.random(5)
        sync = sd.sync_state()
        result["sync"] = {"globals": list(sync.globals), "generators": list(sync.generators),
                          "kept": list(sync.kept)}
        result["shared_after_sync"] = shared.random(3).tolist()
        result["local_after_sync"] = local.random(3).tolist()
        result["jitter_after_sync"] = jitter.random()
        seedlock.unregister("jitter")

        # Shared globals (the default): a rank that drew more is brought back by sync_state.
        seedlock.seed_everything(root)
        if rank == 1:
            torch.rand(7)
        result["shared_sync_globals"] = list(sd.sync_state().globals)
        result["globals_after_sync"] = torch.rand(3).tolist()

        # A shared stream only rank 1 has: every rank raises, no rank changes.
        if rank == 1:
            seedlock.numpy_rng("only-here")
        before = shared.bit_generator.state
        if rank == 1:
            shared.random(2)
        try:
            sd.sync_state()
        except seedlock.StateError as exc:
            result["sync_error"] = str(exc)
        result["unchanged_after_failed_sync"] = shared.bit_generator.state != before

        # A drift planted on one rank: the smallest change a float32 weight can take.
        with torch.no_grad():
            w = model.module[0].weight
            if rank == args.drift_rank:
                w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(float("inf")))
        drift = seedlock.audit.check_replicas(model)
        result["drift"] = drift.to_dict()
        result["drift_text"] = str(drift)
        try:
            seedlock.audit.check_replicas(model, raise_on_mismatch=True)
        except seedlock.audit.ReplicaMismatchError as exc:
            result["raised"] = str(exc)

        # Ranks that hold different tensors: a structure report, not a hang.
        tensors = {"a": torch.zeros(3)}
        if rank == 1:
            tensors["extra"] = torch.ones(2)
        result["structure"] = seedlock.audit.check_replicas(tensors).to_dict()

        # A rank without xxhash fingerprints with SHA-256: said so, not "every tensor differs".
        import seedlock.audit.fingerprints as fps

        saved = fps._xxhash, fps.ALGORITHM
        if rank == 1:
            fps._xxhash, fps.ALGORITHM = None, "sha256"
        result["hashes"] = seedlock.audit.check_replicas({"a": torch.zeros(3)}).to_dict()
        fps._xxhash, fps.ALGORITHM = saved

    label = "stop" if args.stop_at else "run"
    (args.out / f"{label}-rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    # Every result is written. Leave without the teardown: under load, torch 2.13's gloo
    # teardown now and then aborts a rank ("terminate called without an active exception",
    # SIGABRT) after all work is done, which would fail the whole job.
    os._exit(0)
    """
)


@pytest.fixture(scope="session")
def launches(tmp_path_factory: pytest.TempPathFactory) -> Launches:
    root = session_folder(tmp_path_factory, "distributed-launches", {"train.py": TRAIN})
    return Launches(root)


def torchrun(n: int, *args: str) -> list[str]:
    return [TORCHRUN, "--standalone", f"--nproc_per_node={n}", "train.py", *args]


def ranks(out: Path, label: str, n: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"{label}-rank{r}.json").read_text()) for r in range(n)]


@pytest.fixture(scope="session")
def stopped(launches: Launches) -> Path:
    """The job started under `seedlock run`, stopped after a mid-epoch checkpoint."""
    return launches.get(
        "stopped",
        [SEEDLOCK, "run", "--seed", "7", "--no-manifest", "-q", "--",
         *torchrun(2, "--stop-at", str(STOP_AT), "--ckpt", "{ckpt}", "--out", "{out}")],
        ckpt=launches.root / "ckpt",
    )  # fmt: skip


@pytest.fixture(scope="session")
def checkpoint(launches: Launches, stopped: Path) -> Path:
    return launches.root / "ckpt"


@pytest.fixture(scope="session")
def relaunched(launches: Launches, checkpoint: Path) -> Path:
    """A new torchrun job: the uninterrupted run from scratch, then the two resumed ones."""
    return launches.get(
        "relaunched",
        torchrun(2, "--seed", "7", "--resume", "dcp,files", "--ckpt", "{ckpt}", "--out", "{out}"),
        ckpt=launches.root / "ckpt",
    )


@pytest.fixture(scope="session")
def runs(relaunched: Path) -> list[dict[str, Any]]:
    return ranks(relaunched, "run", 2)


# -- the torchrun jobs ------------------------------------------------------------------------


@pytest.mark.slow
def test_check_replicas_passes_after_ddp_training_with_rank_local_dropout_and_noise(runs):
    for run in runs:
        assert run["replicas"]["ok"], run["replicas"]
        assert run["replicas"]["tensors"] == 4
        assert run["replicas"]["bytes_per_rank"] == 24 + 16 * 4
    # The ranks trained on other samples with other dropout masks: their losses differ.
    assert runs[0]["losses"] != runs[1]["losses"]
    assert len(runs[0]["losses"]) == STEPS


@pytest.mark.slow
def test_model_built_inside_shared_globals_is_identical_on_every_rank(runs):
    assert all(run["init_report"]["ok"] for run in runs)


@pytest.mark.slow
def test_planted_drift_is_reported_with_the_rank_and_the_tensor_name(runs):
    for run in runs:
        assert not run["drift"]["ok"]
        assert run["drift"]["mismatches"] == [
            {"name": "module.0.weight", "agree": [0], "differ": [1]}
        ]
        assert "module.0.weight: ranks [1] differ from rank 0" in run["drift_text"]
        assert "module.0.weight" in run["raised"]


@pytest.mark.slow
def test_ranks_holding_different_tensors_get_a_structure_report(runs):
    for run in runs:
        report = run["structure"]
        assert not report["ok"]
        assert report["structure"] == ["rank 1 has 1 extra tensor(s): extra"]
        assert report["mismatches"] == []


@pytest.mark.slow
def test_ranks_fingerprinting_with_different_hashes_are_told_so(runs):
    import seedlock.audit.fingerprints as fps

    if fps.ALGORITHM == "sha256":
        pytest.skip("needs xxhash on rank 0 for the two ranks to differ")
    for run in runs:
        report = run["hashes"]
        assert not report["ok"]
        assert report["mismatches"] == []
        assert report["structure"] == [
            "rank 1 fingerprints with sha256, rank 0 with xxh3_128: install the same seedlock "
            "extras (xxhash) on every rank"
        ]


@pytest.mark.slow
def test_local_streams_differ_across_ranks_and_shared_streams_are_identical(runs):
    first, second = runs
    assert first["shared"] == second["shared"]
    assert first["shared_globals"] == second["shared_globals"]
    assert first["local"] != second["local"]
    assert first["global_draws"] != second["global_draws"]  # seed_everything(per_rank=True)
    assert first["after_shared_globals"] != second["after_shared_globals"]


@pytest.mark.slow
def test_rank_local_values_put_the_rank_in_the_key_path(runs):
    for run in runs:
        r = run["rank"]
        stream = np.random.default_rng(derive("probe", "rank", r, root=7, bits=128))
        assert run["local"] == stream.random(3).tolist()
        torch.manual_seed(derive("classic", "rank", r, root=7, bits=32))
        assert run["global_draws"] == torch.rand(3).tolist()


@pytest.mark.slow
def test_sync_state_copies_shared_streams_and_keeps_rank_local_ones(runs):
    first, second = runs
    assert first["sync"] == {
        "globals": [],  # seed_everything(per_rank=True): the globals are rank-local
        "generators": ["numpy_rng('probe')"],
        "kept": [
            "jitter",  # seedlock.register(..., per_rank=True): rank-local without exclude=
            "numpy_rng('probe', per_rank=True)",
            "torch_generator('noise', per_rank=True)",
        ],
    }
    assert first["shared_after_sync"] == second["shared_after_sync"]
    assert first["local_after_sync"] != second["local_after_sync"]
    assert first["jitter_after_sync"] == random.Random(0).random()
    assert second["jitter_after_sync"] == random.Random(1).random()


@pytest.mark.slow
def test_sync_state_brings_shared_globals_back_in_step(runs):
    first, second = runs
    assert first["shared_sync_globals"] == ["python", "numpy", "torch"]
    assert first["globals_after_sync"] == second["globals_after_sync"]


@pytest.mark.slow
def test_sync_state_that_cannot_apply_on_one_rank_raises_on_every_rank_and_changes_none(runs):
    for run in runs:
        assert "nothing was changed" in run["sync_error"]
        assert (
            "sync_state(src=0), rank 1: generator \"numpy_rng('only-here')\" is shared here but "
            "not on rank 0"
        ) in run["sync_error"]
    assert runs[1]["unchanged_after_failed_sync"]  # rank 1's extra draws were not undone


@pytest.mark.slow
def test_loader_gives_each_rank_a_disjoint_share_of_one_shuffled_order(runs):
    shares = [run["indices_epoch0"] for run in runs]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == list(range(64))
    assert shares == [
        ResumableSampler(64, seed=7, num_replicas=2, rank=r).indices(0) for r in (0, 1)
    ]


def _assert_same_bits(a: Path, b: Path) -> None:
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert list(x) == list(y)
    for name in x:
        assert torch.equal(x[name], y[name]), name
        assert x[name].view(torch.int32).equal(y[name].view(torch.int32)), name


@pytest.mark.slow
@pytest.mark.parametrize("how", ["dcp", "files"])
def test_resume_mid_epoch_after_stopping_the_job_is_bit_identical(relaunched, how):
    for r in range(2):
        _assert_same_bits(relaunched / f"final-rank{r}.pt", relaunched / f"final-{how}-rank{r}.pt")


@pytest.mark.slow
def test_checkpoint_holds_one_state_per_rank(checkpoint):
    for r in range(2):
        saved = torch.load(sd.rank_path(checkpoint / "plain.pt", r), weights_only=True)
        assert saved["step"] == STOP_AT
        state = saved["seedlock"]
        assert set(state) == {"version", "world_size", f"rank{r}"}
        assert state["world_size"] == 2
        assert state[f"rank{r}"]["loader"] == {
            "version": 1, "epoch": 1, "batches": STOP_AT - 8, "world_size": 2
        }  # fmt: skip


@pytest.mark.slow
def test_loading_a_checkpoint_with_another_world_size_is_a_clear_error(
    checkpoint, monkeypatch, empty_registry
):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    seedlock.seed_everything(7, per_rank=True)
    loader = seedlock.data.loader(list(range(64)), batch_size=4, shuffle=True)
    state = sd.PerRankState(loader=loader)
    saved = torch.load(sd.rank_path(checkpoint / "plain.pt", 0), weights_only=True)["seedlock"]
    with pytest.raises(sd.WorldSizeMismatchError, match=r"saved by a job of 2 rank\(s\), this"):
        state.load_state_dict(saved)
    with pytest.raises(sd.WorldSizeMismatchError, match="split across 2 rank"):
        loader.load_state_dict(saved["rank0"]["loader"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # DCP: "assuming ... a single process"
def test_dcp_checkpoint_of_two_ranks_refuses_one_rank(checkpoint, monkeypatch, empty_registry):
    import torch.distributed.checkpoint as dcp

    monkeypatch.setenv("WORLD_SIZE", "1")
    seedlock.seed_everything(7, per_rank=True)
    # The generators the job had registered, so that DCP finds every key it is asked for.
    seedlock.torch_generator("noise", per_rank=True)
    loader = seedlock.data.loader(list(range(64)), batch_size=4, shuffle=True)
    state = sd.PerRankState(loader=loader)
    before = torch.get_rng_state()
    with pytest.raises(sd.WorldSizeMismatchError, match=r"saved by a job of 2 rank\(s\)"):
        dcp.load({"seedlock": state}, checkpoint_id=checkpoint / "dcp")
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow
def test_seedlock_run_seeds_every_torchrun_rank(stopped):
    torch.manual_seed(7)
    classic = torch.rand(3).tolist()
    for run in ranks(stopped, "stop", 2):
        assert run["env_root"] == "7"
        assert run["boot_draws"] == classic  # seeded before the script's first line


@pytest.mark.slow
def test_four_ranks_agree_and_a_drift_on_rank_two_is_named(launches):
    out = launches.get(
        "four", torchrun(4, "--seed", "3", "--steps", "6", "--drift-rank", "2", "--out", "{out}")
    )
    runs = ranks(out, "run", 4)
    assert all(run["replicas"]["ok"] for run in runs)
    assert len({tuple(run["local"]) for run in runs}) == 4
    assert len({tuple(run["shared"]) for run in runs}) == 1
    assert runs[3]["drift"]["mismatches"] == [
        {"name": "module.0.weight", "agree": [0, 1, 3], "differ": [2]}
    ]


# -- in one process ----------------------------------------------------------------------------


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch):
    def set_world(rank: int, size: int) -> None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(size))
        monkeypatch.setenv("LOCAL_RANK", str(rank))

    return set_world


def test_rank_and_world_size_come_from_torchrun_variables(world):
    assert (sd.rank(), sd.world_size(), sd.local_rank()) == (0, 1, 0)
    world(3, 4)
    assert (sd.rank(), sd.world_size(), sd.local_rank()) == (3, 4, 3)


def test_malformed_torchrun_variables_are_named(world, monkeypatch):
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one' is not an integer"):
        sd.rank()
    world(4, 4)
    with pytest.raises(ValueError, match=r"RANK=4 is outside \[0, WORLD_SIZE=4\)"):
        sd.rank()


@pytest.mark.parametrize(
    ("factory", "draw", "bits"),
    [
        (seedlock.numpy_rng, lambda g: g.bit_generator.random_raw(2).tolist(), 128),
        (seedlock.random_rng, lambda g: [g.getrandbits(64) for _ in range(2)], 128),
        (seedlock.torch_generator, lambda g: g.initial_seed(), 32),
    ],
    ids=["numpy_rng", "random_rng", "torch_generator"],
)
def test_per_rank_stream_is_the_stream_with_the_rank_as_last_key(world, factory, draw, bits):
    world(1, 2)
    local = factory("augment", 3, root=0, per_rank=True)
    same = factory("augment", 3, "rank", 1, root=0)
    assert draw(local) == draw(same)
    assert seedlock.derive("augment", 3, "rank", 1, root=0, bits=bits) != seedlock.derive(
        "augment", 3, root=0, bits=bits
    )


def test_per_rank_golden_values():
    # Part of the stability contract, like every derived value.
    assert derive("augment", "rank", 1, root=0) == 12086466627521786699
    assert derive("classic", "rank", 1, root=0, bits=32) == 1609629154


def test_jax_key_per_rank():
    # In a child: JAX starts thread pools, and other tests fork DataLoader workers.
    pytest.importorskip("jax")
    code = (
        "import jax, seedlock; "
        "print(jax.random.key_data(seedlock.jax_key('init', root=0, per_rank=True)).tolist())"
    )
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    value = derive("init", "rank", 1, root=0, bits=64)
    assert out.strip() == str([value & 0xFFFFFFFF, value >> 32])


def test_rank_local_generator_has_the_same_name_on_every_rank(world):
    from seedlock._registry import registered

    names = []
    for r in (0, 1):
        world(r, 2)
        seedlock.numpy_rng("noise", per_rank=True, root=0)
        names.append([n for n in registered() if "noise" in n])
    assert names == [["numpy_rng('noise', root=0, per_rank=True)"]] * 2


def test_seed_everything_per_rank_derives_the_globals_in_both_schemes(world):
    world(1, 2)
    report = seedlock.seed_everything(0, per_rank=True)
    value = derive("classic", "rank", 1, root=0, bits=32)
    assert {report[n].value for n in ("python", "numpy", "torch")} == {value}
    assert report.rank == 1
    assert "globals per rank (rank 1)" in str(report)
    torch.manual_seed(value)
    expected = torch.rand(2)
    seedlock.seed_everything(0, per_rank=True)
    assert torch.equal(torch.rand(2), expected)
    independent = seedlock.seed_everything(0, scheme="independent", per_rank=True)
    assert independent["numpy"].value == derive("global", "numpy", "rank", 1, root=0, bits=32)


def test_seed_everything_default_keeps_classic_globals_on_every_rank(world):
    world(1, 2)
    report = seedlock.seed_everything(0)
    assert report["torch"].value == 0
    assert report.rank is None
    assert str(report).splitlines()[0] == "seedlock: root seed 0, scheme classic"


def test_shared_globals_are_rank_independent_and_restored_on_exit(world):
    draws = []
    for r in (0, 1):
        world(r, 2)
        seedlock.seed_everything(0, per_rank=True)
        with sd.shared_globals("init"):
            draws.append(torch.rand(2))
        after = torch.rand(2)
        seedlock.seed_everything(0, per_rank=True)
        assert torch.equal(torch.rand(2), after)  # the rank-local stream did not move
    assert torch.equal(draws[0], draws[1])


def test_rank_path_names_one_file_per_rank(world):
    assert sd.rank_path("ckpt/rng.state", 1) == Path("ckpt/rng-rank1.state")
    world(3, 4)
    assert sd.rank_path("ckpt/model.pt") == Path("ckpt/model-rank3.pt")
    with pytest.raises(ValueError, match="rank must be an int >= 0"):
        sd.rank_path("x", -1)


def test_check_replicas_without_a_process_group_is_trivially_ok():
    report = seedlock.audit.check_replicas(torch.nn.Linear(2, 2))
    assert report.ok
    assert (report.world_size, report.tensors) == (1, 2)
    assert "all bit-identical" in str(report)


def test_check_replicas_in_a_torchrun_process_without_init_is_an_error(world):
    world(0, 2)
    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        seedlock.audit.check_replicas(torch.nn.Linear(2, 2))


def test_sync_state_needs_a_process_group():
    with pytest.raises(RuntimeError, match=r"sync_state needs an initialised process group"):
        sd.sync_state()


def test_fingerprint_sees_one_bit_a_swap_and_the_dtype():
    x = torch.tensor([1.0, 2.0, 3.0])
    flipped = x.clone()
    flipped[1] = torch.nextafter(flipped[1], torch.tensor(9.0))
    fp = seedlock.audit.replicas._fingerprint
    assert len(fp(x)) == 16
    assert fp(x) == fp(x.clone())
    assert fp(x) != fp(flipped)
    assert fp(x) != fp(x[[1, 0, 2]])
    assert fp(x) != fp(x.view(torch.int32))
    assert fp(x) != fp(x.reshape(3, 1))
    assert fp(torch.zeros(4, 4).t()) == fp(torch.zeros(4, 4))  # values, not memory layout


def test_check_replicas_refuses_what_is_not_a_tensor():
    with pytest.raises(TypeError, match="'step' is a int, not a tensor"):
        seedlock.audit.check_replicas({"w": torch.zeros(1), "step": 3})


def test_per_rank_state_refuses_the_file_of_another_rank(world):
    world(0, 2)
    seedlock.seed_everything(0)
    saved = sd.PerRankState().state_dict()
    world(1, 2)
    with pytest.raises(
        StateMismatchError, match=r"no state for rank 1 here \(it holds \['rank0'\]"
    ):
        sd.PerRankState().load_state_dict(saved)


def test_per_rank_state_round_trips_rng_and_loader(world):
    world(1, 2)
    seedlock.seed_everything(0, per_rank=True)
    loader = seedlock.data.loader(list(range(16)), batch_size=2, shuffle=True)
    batches = iter(loader)
    next(batches)
    state = sd.PerRankState(loader=loader)
    saved = state.state_dict()
    expected = next(batches), torch.rand(2)
    fresh = seedlock.data.loader(list(range(16)), batch_size=2, shuffle=True)
    torch.rand(5)
    sd.PerRankState(loader=fresh).load_state_dict(saved)
    got = next(iter(fresh)), torch.rand(2)
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


def test_per_rank_state_dict_right_after_loading_is_what_was_loaded(world):
    world(1, 2)
    seedlock.seed_everything(0, per_rank=True)
    loader = seedlock.data.loader(list(range(16)), batch_size=2, shuffle=True)
    batches = iter(loader)
    next(batches), next(batches), next(batches)
    saved = sd.PerRankState(loader=loader).state_dict()
    fresh = seedlock.data.loader(list(range(16)), batch_size=2, shuffle=True)
    state = sd.PerRankState(loader=fresh)
    state.load_state_dict(saved)
    assert state.state_dict()["rank1"]["loader"] == saved["rank1"]["loader"]
    assert saved["rank1"]["loader"]["batches"] == 3


def test_per_rank_state_puts_everything_back_when_a_part_refuses(world):
    world(0, 2)
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(list(range(16)), batch_size=2, shuffle=True)
    saved = sd.PerRankState(loader=loader).state_dict()
    saved["rank0"]["loader"]["batches"] = 999
    torch.rand(3)
    before = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"batches must be an int in \[0, 4\]"):
        sd.PerRankState(loader=loader).load_state_dict(saved)
    assert torch.equal(torch.get_rng_state(), before)


def test_loader_state_records_the_world_size_only_when_split(world):
    seedlock.seed_everything(0)
    assert "world_size" not in seedlock.data.loader(list(range(8))).state_dict()
    world(0, 2)
    split = seedlock.data.loader(list(range(8)), batch_size=2)
    assert split.state_dict() == {"version": 1, "epoch": 0, "batches": 0, "world_size": 2}
    world(0, 4)
    with pytest.raises(sd.WorldSizeMismatchError, match=r"split across 2 rank.*across 4"):
        seedlock.data.loader(list(range(8)), batch_size=2).load_state_dict(split.state_dict())


def test_importing_seedlock_distributed_imports_no_framework():
    code = (
        "import sys, seedlock.distributed as d; d.rank(); d.world_size();"
        "print(sorted(m for m in ('torch', 'numpy', 'torch.distributed') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean_env()
    )
    assert out.stdout.strip() == "[]"
