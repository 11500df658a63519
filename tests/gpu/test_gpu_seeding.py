"""Seeding on CUDA: the same draws in two processes, and the classic recipe's draws."""

from __future__ import annotations

import json
import sys

import pytest

import seedlock

pytest.importorskip("torch")

pytestmark = pytest.mark.gpu

# Draws on CUDA (rand, randn, a dropout mask), on the CPU and from NumPy and `random`, each as
# the SHA-256 of its bytes. Mode `seedlock`: seed_everything(seed) before torch is imported (the
# seeds wait for the import, CUDA's for CUDA to start). Mode `classic`: the hand-written recipe
# with the value seed_everything gave torch.
DRAWS = """
import hashlib, json, random, sys

mode, seed = sys.argv[1], sys.argv[2]
seed = int(seed[4:]) if seed.startswith("int:") else seed
if mode == "seedlock":
    import seedlock
    report = seedlock.seed_everything(seed)
    value = report["torch"].value
    import numpy as np
    import torch
else:
    value = int(sys.argv[3])
    import numpy as np
    import torch
    random.seed(value); np.random.seed(value); torch.manual_seed(value)
    torch.cuda.manual_seed_all(value)
import torch.nn.functional as F

started = torch.cuda.is_initialized()
draws = {
    "cuda rand": torch.rand(1000, device="cuda"),
    "cuda randn": torch.randn(1000, device="cuda"),
    "cuda dropout": F.dropout(torch.ones(4096, device="cuda"), 0.5, training=True),
    "cuda rand again": torch.rand(7, device="cuda"),
    "cpu rand": torch.rand(16),
    "numpy": torch.from_numpy(np.random.rand(16)),
    "random": torch.tensor([random.random() for _ in range(4)], dtype=torch.float64),
}
torch.cuda.synchronize()
hashes = {k: hashlib.sha256(t.cpu().contiguous().numpy().tobytes()).hexdigest()
          for k, t in draws.items()}
kept = int(draws["cuda dropout"].count_nonzero())
print("@@", json.dumps({"value": value, "started_before": started, "kept": kept, "hashes": hashes}))
"""


def _draws(child, path, *args: str) -> dict:
    proc = child([sys.executable, str(path), *map(str, args)]).check()
    (line,) = proc.tagged()
    return json.loads(line)


@pytest.mark.parametrize("seed", ["int:1234", "gpu-suite"])
def test_cuda_draws_repeat_across_processes_and_equal_the_classic_recipe(child, script, seed):
    path = script("draws.py", DRAWS)
    first = _draws(child, path, "seedlock", seed)
    second = _draws(child, path, "seedlock", seed)
    root = int(seed[4:]) if seed.startswith("int:") else seed
    # docs/seeding.md: an int in [0, 2**32) is the value itself, anything else is mapped once
    expected = root if isinstance(root, int) else seedlock.derive("classic", root=root, bits=32)
    assert first["value"] == expected
    classic = _draws(child, path, "classic", seed, first["value"])
    assert not first["started_before"]  # the CUDA seed waited for CUDA to start
    assert 1000 < first["kept"] < 3096  # a real dropout mask, about half kept
    assert first["hashes"] == second["hashes"], "two processes with one seed drew other numbers"
    assert first["hashes"] == classic["hashes"], "seedlock's draws are not the classic recipe's"
