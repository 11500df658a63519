"""Elastic resume under torchrun: a job of 2 ranks stopped mid-epoch resumes on 1 rank and on 4.

The global batch is fixed at 16 samples and the micro-batch at 4: 2 ranks accumulate 2
micro-batches a step, 1 rank 4, 4 ranks 1. Each run records, for every global step, the
multiset of (sample index, hash of its augmented bytes, its loss before reduction as
``float.hex``). The gradients are reduced in global sample order (every rank gathers the
per-sample gradients and sums them by position), so the parameters, and with them every later
loss, are the same bits on any number of ranks: what the test then compares is the data stream
and each sample's augmentation, through the losses.

A third resume, 4 ranks with micro-batches of 2, keeps the samples and their bytes; its losses
are not compared: a forward pass over 2 rows need not give the bits of one over 4 (on this CPU
build, a ``Linear(4, 1)`` over 2 rows differed from the same rows among 4 in the last bits).
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import seedlock
from launches import Launches, session_folder
from seedlock.backends import seed_live_globals

BIN = Path(sys.executable).parent
TORCHRUN = str(BIN / "torchrun")
GLOBAL_BATCH, SIZE, EPOCHS, STOP_AT = 16, 60, 2, 6  # 4 steps an epoch: the stop is mid-epoch 1

TRAIN = textwrap.dedent(
    """
    import argparse, hashlib, json, os, random
    from pathlib import Path

    import numpy as np
    import torch
    import torch.distributed as dist

    import seedlock, seedlock.data
    import seedlock.distributed as sd

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--stop-at", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    seedlock.seed_everything(7)

    class Augmented(torch.utils.data.Dataset):
        def __len__(self):
            return {size}

        def __getitem__(self, i):
            base = torch.arange(4, dtype=torch.float32) * (i + 1) / {size}
            noise = torch.randn(4) * 0.1 + torch.from_numpy(np.random.normal(0, 0.1, 4)).float()
            return i, base + noise + random.random(), torch.tensor(float(i % 3))

    loader = seedlock.data.loader(Augmented(), batch_size=args.batch, shuffle=True,
                                  global_batch_size={global_batch}, num_workers=2)
    model = torch.nn.Linear(4, 1)
    step, draws = 0, None
    ckpt = Path(args.ckpt)
    if args.resume:
        saved = torch.load(ckpt / "model.pt", weights_only=True)
        model.load_state_dict(saved["model"])
        step = saved["step"]
        path = sd.rank_path(ckpt / "seedlock.pt")
        if not path.exists():
            path = sd.rank_path(ckpt / "seedlock.pt", rank=0)
        state = sd.PerRankState(loader=loader, elastic=True)
        state.load_state_dict(torch.load(path, weights_only=True))
        draws = torch.rand(2).tolist()     # this rank's re-derived stream

    records = {{}}
    params = list(model.parameters())
    while loader.epoch < {epochs}:
        epoch = loader.epoch
        batches = iter(loader)
        in_epoch = loader.state_dict()["samples"] // {global_batch}
        while True:
            try:
                micro = [next(batches) for _ in range(loader.accumulation)]
            except StopIteration:
                break
            rows, grads = [], []
            for m, (index, x, y) in enumerate(micro):
                losses = (model(x).squeeze(1) - y) ** 2      # before reduction
                for i in range(len(index)):
                    local = (in_epoch * loader.accumulation + m) * args.batch + i
                    grad = torch.autograd.grad(losses[i], params, retain_graph=True)
                    flat = torch.cat([g.reshape(-1) for g in grad]).tolist()
                    grads.append((rank + world * local, flat))
                    digest = hashlib.sha256(x[i].numpy().tobytes()).hexdigest()[:16]
                    rows.append([int(index[i]), digest, float(losses[i]).hex()])
            every = [None] * world
            dist.all_gather_object(every, (rows, grads))
            ordered = sorted(g for _, part in every for g in part)
            total = torch.zeros(len(ordered[0][1]))
            for _, flat in ordered:                          # one order on any number of ranks
                total += torch.tensor(flat)
            with torch.no_grad():
                offset = 0
                for p in params:
                    p -= 0.05 * total[offset : offset + p.numel()].view_as(p) / {global_batch}
                    offset += p.numel()
            step += 1
            in_epoch += 1
            records[step] = [epoch, sorted(r for part, _ in every for r in part)]
            if step == args.stop_at:
                ckpt.mkdir(exist_ok=True)
                if rank == 0:
                    torch.save({{"model": model.state_dict(), "step": step}}, ckpt / "model.pt")
                state = sd.PerRankState(loader=loader, elastic=True)
                torch.save(state.state_dict(), sd.rank_path(ckpt / "seedlock.pt"))
                dist.barrier()
                os._exit(0)
    every = [None] * world
    dist.all_gather_object(every, draws)
    if rank == 0:
        final = [float(v).hex() for p in params for v in p.detach().reshape(-1)]
        out = {{"records": records, "final": final, "draws": every, "world": world}}
        Path(args.out, "result.json").write_text(json.dumps(out))
    dist.barrier()
    os._exit(0)   # past the work: skip gloo's teardown, which now and then aborts under load
    """
).format(size=SIZE, global_batch=GLOBAL_BATCH, epochs=EPOCHS)


@pytest.fixture(scope="session")
def launches(tmp_path_factory: pytest.TempPathFactory) -> Launches:
    return Launches(session_folder(tmp_path_factory, "elastic-launches", {"train.py": TRAIN}))


def torchrun(n: int, batch: int, *args: str) -> list[str]:
    return [TORCHRUN, "--standalone", f"--nproc_per_node={n}", "train.py",
            "--batch", str(batch), "--ckpt", "{ckpt}", "--out", "{out}", *args]  # fmt: skip


def result(out: Path) -> dict[str, Any]:
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="session")
def straight(launches: Launches) -> dict[str, Any]:
    return result(launches.get("straight", torchrun(2, 4), ckpt=launches.root / "unused"))


@pytest.fixture(scope="session")
def checkpoint(launches: Launches) -> Path:
    ckpt = launches.root / "ckpt"
    launches.get("stopped", torchrun(2, 4, "--stop-at", str(STOP_AT)), ckpt=ckpt)
    return ckpt


def resume(launches: Launches, checkpoint: Path, ranks: int, batch: int) -> dict[str, Any]:
    name = f"resumed-{ranks}x{batch}"
    return result(launches.get(name, torchrun(ranks, batch, "--resume"), ckpt=checkpoint))


@pytest.fixture(scope="session", params=[1, 4], ids=["1-rank", "4-ranks"])
def resumed(request: pytest.FixtureRequest, launches: Launches, checkpoint: Path) -> Any:
    return request.param, resume(launches, checkpoint, request.param, 4)


@pytest.mark.slow
def test_every_global_step_after_the_resume_holds_the_same_samples_bytes_and_losses(
    straight, resumed
):
    ranks, run = resumed
    assert run["world"] == ranks
    expected = {k: v for k, v in straight["records"].items() if int(k) > STOP_AT}
    assert sorted(run["records"], key=int) == sorted(expected, key=int)
    assert len(expected) == EPOCHS * 4 - STOP_AT
    for step, (epoch, rows) in expected.items():
        assert run["records"][step] == [epoch, rows], f"global step {step}"
        assert len(rows) == GLOBAL_BATCH
    assert run["final"] == straight["final"]  # reduced in global order: the same parameters


@pytest.mark.slow
def test_the_straight_run_sees_each_sample_once_an_epoch_plus_the_padding(straight):
    for epoch in range(EPOCHS):
        indices = [r[0] for _, (e, rows) in straight["records"].items() if e == epoch for r in rows]
        assert len(indices) == 64  # 60 samples padded to 4 whole global batches of 16
        assert set(indices) == set(range(SIZE))
    augmentations = {}
    for _, (_, rows) in straight["records"].items():
        for index, digest, _ in rows:
            augmentations.setdefault(index, set()).add(digest)
    assert any(len(digests) == 2 for digests in augmentations.values())  # epochs differ


@pytest.mark.slow
def test_rank_local_streams_are_rederived_from_the_root_and_the_position(resumed):
    ranks, run = resumed
    # The checkpoint: epoch 1, after 2 of its 4 global steps of 16.
    expected = []
    for rank in range(ranks):
        seedlock.seed_everything(7)
        seed_live_globals("elastic", 1, 32, "rank", rank)
        expected.append(torch.rand(2).tolist())
    assert run["draws"] == expected
    assert len({tuple(d) for d in run["draws"]}) == ranks


@pytest.mark.slow
def test_another_micro_batch_keeps_every_steps_samples_and_their_bytes(
    launches, checkpoint, straight
):
    run = resume(launches, checkpoint, 4, 2)
    assert run["records"].keys() == {k for k in straight["records"] if int(k) > STOP_AT}
    for step, (epoch, rows) in run["records"].items():
        assert [epoch, [r[:2] for r in rows]] == [
            straight["records"][step][0],
            [r[:2] for r in straight["records"][step][1]],
        ]
