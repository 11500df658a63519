"""The auditor names the right place and the right cause for each planted nondeterminism."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import seedlock
from seedlock import audit
from seedlock.audit._device_hash import device_hash as _device_hash

BIN = Path(sys.executable).parent

# -- fingerprints -----------------------------------------------------------------------------


def test_fingerprint_changes_with_any_single_bit_flip():
    x = torch.randn(257)
    base = audit.fingerprint(x)
    words = x.view(torch.int32)
    for index, bit in [(0, 0), (100, 17), (256, 31)]:
        y = words.clone()
        y[index] ^= 1 << bit
        assert audit.fingerprint(y.view(torch.float32)) != base


def test_fingerprint_changes_when_two_elements_swap():
    x = torch.arange(10, dtype=torch.float32)
    y = x.clone()
    y[[2, 7]] = y[[7, 2]]
    assert audit.fingerprint(x) != audit.fingerprint(y)
    # torch.hash_tensor's XOR-style reduction cannot see a swap.
    if hasattr(torch, "hash_tensor"):
        assert torch.equal(torch.hash_tensor(x), torch.hash_tensor(y))


def test_fingerprint_includes_dtype_and_shape():
    x = torch.zeros(6, dtype=torch.int32)
    assert audit.fingerprint(x) != audit.fingerprint(x.view(2, 3))
    assert audit.fingerprint(x) != audit.fingerprint(x.view(torch.float32))


def test_fingerprint_of_a_non_contiguous_view_equals_that_of_its_copy():
    x = torch.arange(12.0).view(3, 4).t()
    assert audit.fingerprint(x) == audit.fingerprint(x.contiguous())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.bool, torch.complex64])
def test_fingerprint_handles_dtypes_numpy_lacks(dtype):
    assert len(audit.fingerprint(torch.ones(4, dtype=dtype))) == 32


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(3, 5),
        lambda: torch.randn(3, 5).t(),  # not contiguous
        lambda: torch.randn(4, dtype=torch.complex64).conj(),  # conjugate bit set
        lambda: -torch.randn(4, dtype=torch.complex64).conj(),
        lambda: torch.ones(4, dtype=torch.bfloat16),
        lambda: torch.tensor([True, False, True]),
        lambda: torch.arange(7, dtype=torch.int16),
        lambda: torch.randn(5).half(),
        lambda: torch.empty(0, 3),
    ],
)
def test_fingerprint_reads_the_same_bytes_on_every_path(make):
    # The NumPy fast path and the uint8-view path must agree: fingerprints are compared across
    # runs whatever path produced them.
    import seedlock.audit.fingerprints as fp

    t = make()
    header = f"{t.dtype}|{tuple(t.shape)}|".encode()
    resolved = t.resolve_conj().resolve_neg().contiguous()
    data = resolved.reshape(-1)
    if data.dtype.is_complex:
        data = torch.view_as_real(data).reshape(-1)
    expected = header + data.view(torch.uint8).numpy().tobytes()
    h = fp._new_hash(b"")
    h.update(expected)
    assert fp.fingerprint(t) == h.hexdigest()[:32]


def test_trace_memo_is_exact_after_an_in_place_change(monkeypatch):
    from seedlock.audit import fingerprints

    calls: list[str] = []
    real_fp, real_summary = fingerprints.fingerprint, fingerprints.summary
    monkeypatch.setattr(fingerprints, "fingerprint", lambda t: calls.append("fp") or real_fp(t))
    monkeypatch.setattr(fingerprints, "summary", lambda t: calls.append("sum") or real_summary(t))
    memo = fingerprints.Memo()
    x = torch.randn(10)
    before = (memo(x), memo.summary(x))
    assert (memo(x), memo.summary(x)) == before
    assert calls == ["fp", "sum"]  # the second pair was a hit
    x.add_(1)  # bumps the version counter: both must be computed again
    assert memo(x) == real_fp(x) != before[0]
    assert memo.summary(x) == real_summary(x) != before[1]
    assert calls == ["fp", "sum", "fp", "sum"]


def test_device_hash_sees_bit_flips_and_swaps():
    # The on-device path is checked on the CPU: same arithmetic.
    x = torch.randn(1000)
    y = x.clone()
    y.view(torch.int32)[500] ^= 1
    z = x.clone()
    z[[1, 2]] = z[[2, 1]]
    assert len({_device_hash(x), _device_hash(y), _device_hash(z)}) == 3


def test_summary_counts_nan_and_inf_and_sums_the_rest_in_float64():
    s = audit.summary(torch.tensor([1.0, float("nan"), float("inf"), -3.0]))
    assert s == audit.Summary(sum=-2.0, absmax=3.0, nans=1, infs=1)


# -- planted cases, in-process with audit.check ------------------------------------------------


class Body(torch.nn.Module):
    def __init__(self, middle: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.a = torch.nn.Linear(6, 16)
        self.middle = middle if middle is not None else torch.nn.Identity()
        self.drop = torch.nn.Dropout(0.5)
        self.b = torch.nn.Linear(16, 2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.b(self.drop(self.middle(torch.relu(self.a(x)))))


def step_for(model: torch.nn.Module, batch=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 6) if batch is None else None

    def step() -> None:
        inputs = x if batch is None else batch()
        loss = model(inputs).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, opt


class UnseededNoise(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = np.random.default_rng().normal(size=tuple(x.shape)).astype("float32")
        return x + torch.from_numpy(noise)


def test_unseeded_generator_in_a_layer_is_nondeterministic_computation_at_that_layer():
    seedlock.seed_everything(0)
    model = Body(UnseededNoise())
    step, opt = step_for(model)
    report = audit.check(step, model=model, optimizer=opt)
    d = report.divergence
    assert not report.reproducible
    assert (d.module, d.event, d.cause) == ("Body.middle", "forward", "c")


def test_dataset_with_unseeded_randomness_is_input_data():
    seedlock.seed_everything(0)
    model = Body()
    base = torch.randn(8, 6)

    def batch() -> torch.Tensor:
        jitter = np.random.default_rng().random(1)[0]  # a dataset nobody seeds
        return base * float(jitter)

    step, opt = step_for(model, batch)
    d = audit.check(step, model=model, optimizer=opt).divergence
    assert (d.module, d.event, d.cause) == ("Body", "batch", "a")


class ExtraDrawSecondTime(Body):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = torch.relu(self.a(x))
        if self.calls == 2:
            torch.rand(1)  # one extra draw, second run only
        return self.b(self.drop(h))


def test_extra_random_draw_before_dropout_is_a_random_stream_difference_at_the_dropout():
    seedlock.seed_everything(0)
    model = ExtraDrawSecondTime()
    step, opt = step_for(model)
    d = audit.check(step, model=model, optimizer=opt).divergence
    assert (d.module, d.event, d.cause) == ("ExtraDrawSecondTime.drop", "forward", "b")


class ThreadedReduction(torch.nn.Module):
    """Sums 10**7 float32 values with 1 thread on odd calls and 2 on even ones."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("big", torch.randn(10**7, generator=torch.Generator().manual_seed(3)))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = torch.get_num_threads()
        torch.set_num_threads(1 if self.calls % 2 == 0 else 2)
        self.calls += 1
        try:
            total = self.big.sum()
        finally:
            torch.set_num_threads(before)
        return x * total


def test_thread_count_dependent_reduction_is_nondeterministic_computation_at_that_layer():
    seedlock.seed_everything(0)
    model = Body(ThreadedReduction())
    step, opt = step_for(model)
    d = audit.check(step, model=model, optimizer=opt).divergence
    assert (d.module, d.event, d.cause) == ("Body.middle", "forward", "c")
    assert d.kind == "ThreadedReduction"


def test_op_level_mode_names_the_op_inside_the_diverging_module():
    seedlock.seed_everything(0)
    model = Body(ThreadedReduction())
    step, opt = step_for(model)
    d = audit.check(step, model=model, optimizer=opt, ops=True).divergence
    assert (d.module, d.event, d.op, d.cause) == ("Body.middle", "op", "aten::sum", "c")


def test_deterministic_model_is_reproducible_twenty_times_in_a_row():
    seedlock.seed_everything(0)
    model = Body()
    step, opt = step_for(model)
    reports = [audit.check(step, model=model, optimizer=opt) for _ in range(20)]
    assert all(r.reproducible for r in reports)
    assert reports[0].events > 20


def test_check_leaves_the_model_as_after_one_run():
    seedlock.seed_everything(0)
    model = Body()
    x = torch.randn(8, 6)
    step, opt = step_for(model, lambda: x)
    twin = Body()
    twin.load_state_dict(model.state_dict())
    twin_step, _ = step_for(twin, lambda: x)
    state = seedlock.capture()
    audit.check(step, model=model, optimizer=opt, runs=3)
    after_check = [p.detach().clone() for p in model.parameters()]
    seedlock.restore(state)
    twin_step()
    assert all(torch.equal(a, b) for a, b in zip(after_check, twin.parameters(), strict=True))


def test_trace_records_every_event_kind(tmp_path):
    seedlock.seed_everything(0)
    model = Body()
    step, opt = step_for(model)
    with audit.trace(model, tmp_path / "t.trace", optimizer=opt, ops=True):
        step()
    db = sqlite3.connect(tmp_path / "t.trace")
    kinds = {row[0] for row in db.execute("SELECT DISTINCT event FROM events")}
    assert kinds == {"batch", "forward", "grad_input", "grad", "param", "op"}
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["format"] == "seedlock.trace"
    assert int(meta["events"]) == db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def test_compare_with_tolerance_accepts_tiny_differences(tmp_path):
    seedlock.seed_everything(0)
    model = Body(ThreadedReduction())
    step, opt = step_for(model)
    report = audit.check(step, model=model, optimizer=opt, keep=tmp_path)
    assert not report.reproducible
    # The targeted re-run's traces hold the summaries tolerances compare; the first pass not.
    loose = audit.compare(tmp_path / "rerun1.trace", tmp_path / "rerun2.trace", rtol=1e-3)
    assert loose.reproducible
    with pytest.raises(ValueError, match="record both with trace"):
        audit.compare(tmp_path / "run1.trace", tmp_path / "run2.trace", rtol=1e-3)


# -- execution path, across processes (hash seeds) --------------------------------------------

SET_ORDER = textwrap.dedent(
    """
    import sys, torch, seedlock, seedlock.audit as audit
    seedlock.seed_everything(0)
    NAMES = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"}

    class Router(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleDict({n: torch.nn.Linear(4, 4) for n in sorted(NAMES)})
        def forward(self, x):
            for name in NAMES:          # order follows the str hash seed
                x = self.layers[name](x)
            return x

    model = Router()
    with audit.trace(model, sys.argv[1]):
        model(torch.ones(2, 4))
    """
)


def trace_set_order_twice(folder: Path) -> None:
    """a.trace and b.trace: the same model, run under hash seeds 1 and 2."""
    for name, hash_seed in (("a.trace", "1"), ("b.trace", "2")):
        subprocess.run(
            [sys.executable, "-c", SET_ORDER, str(folder / name)],
            env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
            check=True,
        )


def test_layer_order_from_a_set_of_strings_is_a_different_execution_path(tmp_path):
    trace_set_order_twice(tmp_path)
    report = audit.compare(tmp_path / "a.trace", tmp_path / "b.trace")
    assert report.divergence.cause == "d"
    assert report.divergence.module.startswith("Router.layers.")
    assert "different sequences of modules" in str(report)


# -- seedlock check on whole scripts ----------------------------------------------------------

UNSEEDED = textwrap.dedent(
    """
    import torch
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        loss = model(torch.ones(16, 4)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        print(f"step {step} loss {loss.item():.6f}")
    """
)


def seedlock_check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "seedlock"), "check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_seedlock_check_finds_a_script_that_seeds_nothing_reproducible_under_seedlock(tmp_path):
    (tmp_path / "train.py").write_text(UNSEEDED)
    proc = seedlock_check("--", sys.executable, "train.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("reproducible: 2 runs agree\ntraces: ")
    assert "run 2/2 (seed 0) ... exit 0" in proc.stderr


@pytest.mark.slow
def test_seedlock_check_no_seed_names_where_the_unseeded_script_diverges(tmp_path):
    (tmp_path / "train.py").write_text(UNSEEDED)
    proc = seedlock_check("--no-seed", "--", sys.executable, "train.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert "NOT reproducible" in proc.stdout
    assert "where   Sequential.0.weight, param" in proc.stdout
    assert "(b) random stream differs" in proc.stdout


PLANTED_LAYER = textwrap.dedent(
    """
    import numpy as np, torch, seedlock
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.from_numpy(np.random.default_rng().random(x.shape).astype("float32"))
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Noisy(), torch.nn.Linear(4, 1))
    print(model(torch.ones(2, 4)).sum().item())
    """
)


@pytest.mark.slow
def test_seedlock_check_names_a_planted_layer_even_when_seeded(tmp_path):
    (tmp_path / "train.py").write_text(PLANTED_LAYER)
    proc = seedlock_check("--", sys.executable, "train.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert "where   Sequential.1 (Noisy), forward" in proc.stdout
    assert "(c) nondeterministic computation" in proc.stdout


@pytest.mark.slow
def test_seedlock_check_compares_output_files(tmp_path):
    script = "import os, time; open('out/result.txt', 'w').write(str(time.time_ns()))"
    (tmp_path / "w.py").write_text(script)
    (tmp_path / "out").mkdir()
    proc = seedlock_check("--outputs", "out", "--", sys.executable, "w.py", cwd=tmp_path)
    assert proc.returncode == 1
    assert "output files differ (run 1 vs run 2): result.txt" in proc.stdout


def test_seedlock_check_without_a_command_is_a_usage_error(tmp_path):
    assert seedlock_check(cwd=tmp_path).returncode == 2


@pytest.mark.slow
def test_seedlock_diff_of_two_traces_reports_the_divergence(tmp_path):
    trace_set_order_twice(tmp_path)
    proc = subprocess.run(
        [str(BIN / "seedlock"), "diff", "a.trace", "b.trace"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "(d) different execution path" in proc.stdout
    same = subprocess.run(
        [str(BIN / "seedlock"), "diff", "a.trace", "a.trace"], cwd=tmp_path, capture_output=True
    )
    assert same.returncode == 0


def test_sha256_fallback_without_xxhash_keeps_the_same_guarantees(monkeypatch):
    import seedlock.audit.fingerprints as fp

    monkeypatch.setattr(fp, "_xxhash", None)
    x = torch.randn(100)
    y = x.clone()
    y.view(torch.int32)[50] ^= 1 << 3
    assert fp.fingerprint(x) != fp.fingerprint(y)
    expected = __import__("hashlib").sha256(b"torch.float32|(100,)|" + x.numpy().tobytes())
    assert fp.fingerprint(x) == expected.hexdigest()[:32]


def test_traces_made_with_different_hashes_are_not_compared(tmp_path):
    seedlock.seed_everything(0)
    model = Body()
    step, opt = step_for(model)
    for name in ("a.trace", "b.trace"):
        with audit.trace(model, tmp_path / name, optimizer=opt):
            step()
    db = sqlite3.connect(tmp_path / "b.trace")
    db.execute("UPDATE meta SET value = 'other' WHERE key = 'hash'")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="fingerprinted with different hashes"):
        audit.compare(tmp_path / "a.trace", tmp_path / "b.trace")
