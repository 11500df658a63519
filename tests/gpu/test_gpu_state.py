"""RNG state on CUDA: every device's generator and a registered CUDA generator go through
``torch.save`` / ``torch.load(weights_only=True)`` bit for bit, and a state restored before CUDA
starts is the state CUDA starts with."""

from __future__ import annotations

import json
import sys

import pytest

import seedlock

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.gpu


def _draws(noise: torch.Generator) -> list[torch.Tensor]:
    """Draws from every device's default generator, from ``noise`` and from the CPU, on the host."""
    out = []
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        out.append(torch.rand(257, device=device))
        out.append(torch.randn(257, device=device))
        out.append(torch.nn.functional.dropout(torch.ones(1024, device=device), 0.5))
    out.append(torch.rand(257, device=noise.device, generator=noise))
    out.append(torch.randn(33, device=noise.device, generator=noise))
    out.append(torch.rand(8))
    torch.cuda.synchronize()
    return [t.cpu() for t in out]


def test_every_cuda_generator_and_a_registered_one_round_trip_through_torch_save(tmp_path):
    seedlock.seed_everything(0)
    count = torch.cuda.device_count()
    for index in range(count):  # start every device and move its generator off the seed
        torch.rand(3, device=torch.device("cuda", index))
    noise = seedlock.register(torch.Generator(device="cuda").manual_seed(7), "gpu_noise")
    try:
        torch.rand(5, device="cuda", generator=noise)
        state = seedlock.state_dict()
        assert len(state["backends"]["torch"]["cuda"]) == count
        assert state["generators"]["gpu_noise"]["state"]["device"] == str(noise.device)
        path = tmp_path / "ckpt.pt"
        torch.save({"rng": state}, path)
        saved_raw = [s.clone() for s in torch.cuda.get_rng_state_all()], noise.get_state()

        expected = _draws(noise)
        _draws(noise)  # the run goes on
        assert not torch.equal(_draws(noise)[0], expected[0])

        loaded = torch.load(path, weights_only=True)
        seedlock.load_state_dict(loaded["rng"])
        assert all(
            torch.equal(a, b)
            for a, b in zip(torch.cuda.get_rng_state_all(), saved_raw[0], strict=True)
        )
        assert torch.equal(noise.get_state(), saved_raw[1])
        again = _draws(noise)
        assert len(again) == len(expected) == 3 * count + 3
        for i, (a, b) in enumerate(zip(expected, again, strict=True)):
            assert torch.equal(a, b), f"draw {i} differs after the restore"
    finally:
        seedlock.unregister("gpu_noise")


FIRST = """
import json, sys
import torch
import seedlock

seedlock.seed_everything(0)
torch.rand(3, device="cuda")                 # CUDA started, its generator moved on
torch.save({"rng": seedlock.state_dict()}, sys.argv[1])
after = torch.rand(4, device="cuda").cpu()   # what a resumed run must draw next
torch.cuda.manual_seed_all(0)
fresh = torch.rand(4, device="cuda").cpu()   # what seed 0 alone draws
found = {"after": after.numpy().tobytes().hex(), "fresh": fresh.numpy().tobytes().hex()}
print("@@", json.dumps(found))
"""

SECOND = """
import json, sys
import torch
import seedlock

seedlock.seed_everything(0)                  # queues CUDA's seed: CUDA has not started
state = torch.load(sys.argv[1], weights_only=True)
seedlock.load_state_dict(state["rng"])       # before any CUDA op
started = torch.cuda.is_initialized()
draw = torch.rand(4, device="cuda").cpu()
print("@@", json.dumps({"started_before": started, "draw": draw.numpy().tobytes().hex()}))
"""


def test_a_state_restored_before_cuda_starts_is_the_state_cuda_starts_with(child, script, tmp_path):
    ckpt = tmp_path / "rng.pt"
    first = json.loads(child([sys.executable, script("first.py", FIRST), ckpt]).check().tagged()[0])
    second = child([sys.executable, script("second.py", SECOND), ckpt]).check()
    found = json.loads(second.tagged()[0])
    assert not found["started_before"], "the restore started CUDA itself"
    assert first["after"] != first["fresh"]  # else the check below proves nothing
    assert found["draw"] == first["after"], (
        "after seed_everything(0) then load_state_dict(...) before CUDA started, the first CUDA "
        "draw is not the one the saved state gives"
        + (" (it is seed 0's: the queued seed won)" if found["draw"] == first["fresh"] else "")
    )
