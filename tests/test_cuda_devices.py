"""torch's device generators on the CPU, through fake device layers around torch's real code
(tests/fake_cuda.py): the seeds queued before a device starts, counting devices without the
driver, MTIA and out-of-tree devices, rank-to-rank device mapping, and the determinism
profile's GPU switches."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import seedlock
import seedlock.distributed as sd
from fake_cuda import FakeGenerator, fake_cuda, start
from seedlock.backends import _torch_devices
from seedlock.errors import StateMismatchError

TESTS = Path(__file__).parent


def states(generators: list[FakeGenerator]) -> list[tuple[int, int]]:
    return [(g.seed_value, g.offset) for g in generators]


def started_after_seed(monkeypatch: pytest.MonkeyPatch, **seed_kwargs: object) -> list:
    """Where CUDA starts after seed_everything(0, ...) alone: what every case below must give."""
    with fake_cuda(monkeypatch) as generators:
        seedlock.seed_everything(0, **seed_kwargs)
        start()
        return states(generators)


# -- the seeds queued before CUDA starts are CUDA's state -------------------------------------


def test_a_restore_puts_back_the_seed_pending_at_capture_time(monkeypatch):
    expected = started_after_seed(monkeypatch)
    with fake_cuda(monkeypatch) as generators:
        seedlock.seed_everything(0)
        state = seedlock.capture()
        seedlock.seed_everything(1)  # queues another seed of every device
        seedlock.restore(state)
        start()
        assert states(generators) == expected
    assert expected != [(_torch_devices.DEFAULT_SEED, 0)] * 2


def test_cuda_started_inside_fork_is_put_back(monkeypatch):
    expected = started_after_seed(monkeypatch)
    with fake_cuda(monkeypatch) as generators:
        seedlock.seed_everything(0)
        with seedlock.fork():
            start()  # the first CUDA op happens inside the block
            generators[0].draw()
            generators[1].manual_seed(99)
        assert states(generators) == expected


def test_a_state_with_nothing_queued_gives_cuda_its_default_seed(monkeypatch):
    with fake_cuda(monkeypatch) as generators:
        state = seedlock.capture()  # nothing seeded CUDA yet
        assert state.backends["torch"]["cuda_queued"] == []
        torch.manual_seed(5)
        seedlock.restore(state)
        start()
        assert states(generators) == [(_torch_devices.DEFAULT_SEED, 0)] * 2


def test_queued_seeds_keep_their_order_through_a_saved_file(monkeypatch):
    with fake_cuda(monkeypatch) as generators:
        torch.cuda.manual_seed_all(3)
        torch.cuda.manual_seed(4)  # the current device (0) only, after the seed of all
        buffer = io.BytesIO()
        torch.save(seedlock.state_dict(), buffer)
        assert seedlock.capture().backends["torch"]["cuda_queued"] == [["all", 3], ["current", 4]]
    with fake_cuda(monkeypatch) as generators:  # a new process
        torch.cuda.manual_seed_all(8)
        buffer.seek(0)
        seedlock.load_state_dict(torch.load(buffer, weights_only=True))
        start()
        assert states(generators) == [(4, 0), (3, 0)]


def test_a_state_captured_before_the_start_applies_at_once_after_it(monkeypatch):
    with fake_cuda(monkeypatch) as generators:
        torch.cuda.manual_seed_all(3)
        state = seedlock.capture()
        start()
        generators[0].draw()
        seedlock.restore(state)
        assert states(generators) == [(3, 0), (3, 0)]


def test_a_queued_seed_seedlock_cannot_read_is_left_alone_and_capture_still_works(monkeypatch):
    with fake_cuda(monkeypatch) as generators:
        torch.cuda._lazy_call(lambda: generators[0].manual_seed(11), seed_all=True)
        state = seedlock.capture()
        assert "cuda_queued" not in state.backends["torch"]
        seedlock.restore(state)
        start()
        assert generators[0].seed_value == 11


@pytest.mark.parametrize(
    ("queued", "says"),
    [
        ([["all", -1]], "cuda_queued[0] seed"),
        ([["all", 2**64]], "cuda_queued[0] seed"),
        ([["sometimes", 1]], "cuda_queued[0] must be"),
        ([["states", [b"short"]]], "cuda_queued[0][0] has 5 bytes, expected 16"),
        ("all", "cuda_queued must be a list"),
    ],
)
def test_a_bad_queued_seed_is_refused_before_anything_changes(monkeypatch, queued, says):
    with fake_cuda(monkeypatch) as generators:
        torch.cuda.manual_seed_all(3)
        state = seedlock.capture()
        state.backends["torch"]["cuda_queued"] = queued
        before = torch.get_rng_state()
        with pytest.raises(StateMismatchError, match=says.replace("[", r"\[")):
            seedlock.restore(state)
        assert torch.equal(torch.get_rng_state(), before)
        start()
        assert states(generators) == [(3, 0), (3, 0)]


def test_shared_globals_leave_each_rank_its_own_cuda_seed(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    expected = started_after_seed(monkeypatch, per_rank=True)
    with fake_cuda(monkeypatch) as generators:
        seedlock.seed_everything(0, per_rank=True)
        with sd.shared_globals("init"):
            pass  # model construction, before the first CUDA op
        start()
        assert states(generators) == expected
    monkeypatch.setenv("RANK", "0")
    assert started_after_seed(monkeypatch, per_rank=True) != expected  # rank-local indeed


# -- counting devices without the driver -------------------------------------------------------


def test_seeding_capturing_and_restoring_never_ask_the_driver_without_nvml(monkeypatch):
    def driver_asked() -> int:
        raise AssertionError("the CUDA driver was asked: forked children could not use CUDA")

    asked: list[int] = []

    def nvml_missing() -> int:
        asked.append(1)
        return -1

    with fake_cuda(monkeypatch) as generators:
        monkeypatch.setattr(torch.cuda, "_cached_device_count", None)
        monkeypatch.setattr(torch.cuda, "_device_count_nvml", nvml_missing)
        monkeypatch.setattr(_torch_devices, "_NVML_COUNTS", {})
        monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", driver_asked)
        report = seedlock.seed_everything(0)
        assert "cuda, applied when CUDA starts" in str(report)
        state = seedlock.capture()
        seedlock.restore(state)
        saved = {**state.backends["torch"], "cuda": [bytes(16)] * 2}
        seedlock.restore(seedlock.RNGState({"torch": saved}, {}))  # no count to check against
        assert len(asked) == 1  # NVML starts on every call: its answer is kept
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
        seedlock.capture()
        assert len(asked) == 2  # another set of visible devices: asked again
        monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", lambda: 2)
        start()
        assert states(generators) == [(0, 0), (0, 0)]


# -- MPS, MTIA and out-of-tree devices -----------------------------------------------------------


@pytest.mark.parametrize("size", [10, 17, 45])
def test_an_mps_state_of_a_size_torch_never_writes_is_refused(size):
    state = seedlock.capture()
    state.backends["torch"]["mps"] = bytes(size)
    with pytest.raises(StateMismatchError, match=f"mps must be 16, 36, 44 bytes.*got {size}"):
        seedlock.restore(state, devices="common")


def test_mtia_generators_are_captured_and_restored(monkeypatch):
    generators = [FakeGenerator(0), FakeGenerator(1)]
    mtia = torch.mtia
    monkeypatch.setattr(mtia, "_is_compiled", lambda: True)
    monkeypatch.setattr(mtia, "is_initialized", lambda: True)
    monkeypatch.setattr(mtia, "device_count", lambda: 2)
    monkeypatch.setattr(mtia, "get_rng_state_all", lambda: [g.get_state() for g in generators])
    monkeypatch.setattr(mtia, "set_rng_state", lambda t, i: generators[i].set_state(t))
    generators[1].draw()
    state = seedlock.capture()
    assert len(state.backends["torch"]["mtia"]) == 2
    before = states(generators)
    generators[0].draw()
    generators[1].manual_seed(5)
    seedlock.restore(state)
    assert states(generators) == before


CUSTOM_DEVICE = textwrap.dedent(
    """
    import json, sys, types
    import torch
    sys.path.insert(0, sys.argv[1])
    from fake_cuda import FakeGenerator
    import seedlock

    generators = [FakeGenerator(0), FakeGenerator(1)]
    module = types.ModuleType("torch.npulike")
    module._is_in_bad_fork = lambda: False
    module.is_initialized = lambda: True
    module.is_available = lambda: True
    module.device_count = lambda: 2
    module.manual_seed_all = lambda s: [g.manual_seed(s) for g in generators]
    module.get_rng_state_all = lambda: [g.get_state() for g in generators]
    module.set_rng_state_all = lambda ts: [g.set_state(t) for g, t in zip(generators, ts)]
    torch.utils.rename_privateuse1_backend("npulike")
    torch._register_device_module("npulike", module)

    report = seedlock.seed_everything(3)  # torch.manual_seed seeds the device module
    generators[0].draw()
    state = seedlock.capture()
    before = [(g.seed_value, g.offset) for g in generators]
    generators[0].draw(); generators[1].manual_seed(9)
    seedlock.restore(state)
    after = [(g.seed_value, g.offset) for g in generators]
    print(json.dumps({"report": str(report), "name": state.backends["torch"]["privateuse1"]["name"],
                      "before": before, "after": after}))
    """
)


def test_an_out_of_tree_device_is_captured_and_restored(tmp_path):
    script = tmp_path / "custom_device.py"
    script.write_text(CUSTOM_DEVICE)
    proc = subprocess.run(
        [sys.executable, str(script), str(TESTS)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert "npulike" in out["report"]
    assert out["name"] == "npulike"
    assert out["after"] == out["before"]
    assert out["before"][1] != [67280421310721, 0]  # torch.manual_seed did seed it


def test_a_state_of_a_device_this_process_lacks_is_refused():
    state = seedlock.capture()
    state.backends["torch"]["privateuse1"] = {"name": "npulike", "states": [bytes(16)]}
    with pytest.raises(StateMismatchError, match="npulike generators, this process cannot"):
        seedlock.restore(state, devices="common")


# -- the determinism profile ----------------------------------------------------------------------


def test_the_cublas_warning_says_what_happens_once_cuda_has_started(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fake_cuda(monkeypatch), seedlock.deterministic():  # before CUDA starts: no warning
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with fake_cuda(monkeypatch):
        start()
        with pytest.warns(RuntimeWarning) as caught, seedlock.deterministic():
            pass
    message = str(caught[0].message)
    assert "first cuBLAS call" in message
    assert "every CUDA matmul from now on raises RuntimeError" in message
    assert "if none has, setting it now is in time" in message


def test_the_profile_switches_reduced_precision_reductions_off_and_back():
    matmul = torch.backends.cuda.matmul
    names = ("allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction")
    assert all(getattr(matmul, n) for n in names)  # torch's defaults
    with seedlock.deterministic() as profile:
        assert not any(getattr(matmul, n) for n in names)
        assert {c.name for c in profile.changes} >= {f"backends.cuda.matmul.{n}" for n in names}
    assert all(getattr(matmul, n) for n in names)
    with seedlock.deterministic(tf32=True):
        assert all(getattr(matmul, n) for n in names)


# -- between ranks ------------------------------------------------------------------------------

SYNC = textwrap.dedent(
    """
    # Rank r draws on cuda:r (all devices visible, as under torchrun); rank 0's stream is synced.
    import json, os, sys
    import pytest, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    from fake_cuda import fake_cuda, start
    import seedlock, seedlock.distributed as sd

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    with fake_cuda(pytest.MonkeyPatch(), devices=2) as generators:
        torch._C._cuda_getDevice = lambda: rank
        seedlock.seed_everything(0)
        start()
        for _ in range(3 if rank == 0 else 1):
            generators[rank].draw()
        generators[1 - rank].manual_seed(100 + rank)  # the device this rank does not use
        before = [(g.seed_value, g.offset) for g in generators]
        sd.sync_state(src=0)
        after = [(g.seed_value, g.offset) for g in generators]
    with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
        json.dump({"before": before, "after": after}, f)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_sync_state_gives_each_rank_the_stream_of_the_source_ranks_own_device(tmp_path):
    script = tmp_path / "sync.py"
    script.write_text(SYNC)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(script), str(TESTS), str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    zero, one = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert zero["after"] == zero["before"]
    # Rank 1 draws on cuda:1: it gets rank 0's cuda:0 stream there, and keeps its cuda:0.
    assert one["after"][1] == zero["before"][0]
    assert one["after"][0] == one["before"][0]
    assert one["before"][1] != zero["before"][0]
