"""Interrupt training at any step, resume in a new process: the final parameters are the same
bits as the uninterrupted run (model + optimizer + seedlock state + loader state on disk)."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

TRAIN = textwrap.dedent(
    """
    import random, sys
    import numpy as np, torch, seedlock, seedlock.data

    workers, stop_at, ckpt, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    resume = sys.argv[5] == "resume"
    EPOCHS = 3
    torch.set_num_threads(1)
    seedlock.seed_everything(0)

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(1)
            self.x = torch.randn(40, 6, generator=g)
            self.y = torch.randint(0, 3, (40,), generator=g)
            self.jitter = np.random.default_rng(5)      # held by the dataset: reseeded per sample
        def __len__(self):
            return 40
        def __getitem__(self, i):
            noise = torch.randn(6) * 0.1 + float(np.random.rand() - 0.5) * 0.01
            scale = 1.0 + 0.01 * (random.random() + self.jitter.random())
            return self.x[i] * scale + noise, self.y[i]

    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                torch.nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = seedlock.data.loader(Data(), batch_size=8, shuffle=True, num_workers=workers)
    step = 0
    if resume:
        ck = torch.load(ckpt, weights_only=True)
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"])
        loader.load_state_dict(ck["loader"]); seedlock.load_state_dict(ck["rng"])
        step = ck["step"]

    def save():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "loader": loader.state_dict(), "rng": seedlock.state_dict()}, ckpt)

    if step == stop_at and not resume:
        save(); sys.exit(0)
    while loader.epoch < EPOCHS:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            step += 1
            if step == stop_at and not resume:
                save(); sys.exit(0)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out)
    """
)
STEPS_PER_EPOCH = 5
TOTAL = 3 * STEPS_PER_EPOCH
# Edges (start, epoch boundaries, the last step) plus seeded random steps: 12 per worker setting.
_rng = random.Random(2026)
_stops = {0, 4, 5, 10, 14, TOTAL}
while len(_stops) < 12:
    _stops.add(_rng.randrange(1, TOTAL))
STOPS = sorted(_stops)


def run(tmp: Path, workers: int, stop_at: int, mode: str) -> None:
    subprocess.run(
        [sys.executable, "-c", TRAIN, str(workers), str(stop_at), str(tmp / "ckpt.pt"),
         str(tmp / "out.pt"), mode],
        check=True,
        timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module", params=[0, 2], ids=["workers0", "workers2"])
def uninterrupted(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"full{request.param}")
    run(tmp, request.param, -1, "full")
    return request.param, torch.load(tmp / "out.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", STOPS)
def test_resume_in_a_new_process_is_bit_identical(uninterrupted, stop_at, tmp_path):
    workers, expected = uninterrupted
    run(tmp_path, workers, stop_at, "interrupt")
    run(tmp_path, workers, stop_at, "resume")
    resumed = torch.load(tmp_path / "out.pt", weights_only=True)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert not expected[name].isnan().any(), "training diverged: the comparison would be void"
        assert torch.equal(expected[name], resumed[name]), name
