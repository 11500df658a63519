"""The audit names the line where randomness that no seed reaches entered a traced run."""

from __future__ import annotations

import os
import random
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.random import bit_generator

import seedlock
from seedlock import audit
from seedlock.audit import entropy as hooks
from seedlock.audit.entropy import EntropySource

HERE = os.path.abspath(__file__)
SOURCE = Path(HERE).read_text().splitlines()


def line_of(marker: str) -> int:
    """The line of this file that ends with the comment ``# <marker>``."""
    return next(i + 1 for i, text in enumerate(SOURCE) if text.endswith("# " + marker))


# -- planted models ---------------------------------------------------------------------------


class NumpyJitter(torch.nn.Module):
    def forward(self, x):
        rng = np.random.default_rng()  # plant: numpy
        return x + torch.from_numpy(rng.normal(size=tuple(x.shape)).astype("float32"))


class UrandomNoise(torch.nn.Module):
    def forward(self, x):
        seed = int.from_bytes(os.urandom(8), "little") >> 1  # plant: urandom
        g = torch.Generator().manual_seed(seed)
        return x * torch.rand(x.shape, generator=g)


class RandomScale(torch.nn.Module):
    def forward(self, x):
        return x * random.Random().random()  # plant: random


class ClockScale(torch.nn.Module):
    def forward(self, x):
        return x * random.Random(time.time_ns()).random()  # plant: clock


class Seeded(torch.nn.Module):
    """Deterministic: every generator it makes gets a seed (nothing to note)."""

    def forward(self, x):
        rng = np.random.default_rng(seedlock.derive("noise"))
        noise = torch.from_numpy(rng.normal(size=tuple(x.shape)).astype("float32"))
        return x + noise * random.Random(5).random()


class Net(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.inner = inner

    def forward(self, x):
        return self.inner(self.fc(x))


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    loss = model(torch.ones(3, 4)).pow(2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


def by_check(inner: Callable[[], torch.nn.Module], tmp_path: Path) -> audit.Report:
    seedlock.seed_everything(0)
    model = Net(inner())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return audit.check(lambda: _train(model, opt), model=model, optimizer=opt)


def by_traces(inner: Callable[[], torch.nn.Module], tmp_path: Path) -> audit.Report:
    paths = [tmp_path / "a.trace", tmp_path / "b.trace"]
    for path in paths:
        seedlock.seed_everything(0)
        model = Net(inner())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with audit.trace(model, path, optimizer=opt):
            _train(model, opt)
    return audit.compare(*paths)


def trace_twice(tmp_path: Path, make: Callable[[], torch.nn.Module], body) -> list[Path]:
    """Trace ``body(model)`` twice, each time on a fresh ``make()`` after seeding."""
    paths = [tmp_path / "a.trace", tmp_path / "b.trace"]
    for path in paths:
        seedlock.seed_everything(0)
        model = make()
        with audit.trace(model, path):
            body(model)
    return paths


MODES = pytest.mark.parametrize("run", [by_check, by_traces], ids=["check", "traces"])


# -- the verdict names the place --------------------------------------------------------------


@MODES
@pytest.mark.parametrize(
    "case",
    [
        (NumpyJitter, "numpy", "plant: numpy", "NumpyJitter.forward", "seedlock.numpy_rng(...)"),
        (UrandomNoise, "os.urandom", "plant: urandom", "UrandomNoise.forward", "seedlock.derive"),
        (RandomScale, "random.Random", "plant: random", "RandomScale.forward", "random_rng(...)"),
        (ClockScale, "clock", "plant: clock", "ClockScale.forward", "seedlock.derive(...)"),
    ],
    ids=lambda case: case[1],
)
def test_the_verdict_names_the_line_and_module_where_entropy_entered(run, case, tmp_path):
    inner, kind, marker, function, fix = case
    report = run(inner, tmp_path)
    d = report.divergence
    assert d is not None
    assert (d.module, d.event, d.cause) == ("Net.inner", "forward", "c")
    # Events 0-3: the batch, the two parameters, the output of Net.fc; then Net.inner runs.
    assert report.entropy == (EntropySource(4, kind, HERE, line_of(marker), function, "Net.inner",
                                            implicated=True),)  # fmt: skip
    text = str(report)
    where = f"{os.path.relpath(HERE)}:{line_of(marker)} in {function} (module Net.inner)"
    assert f"  entropy {report.entropy[0].description} at {where}\n" in text
    assert fix in text.splitlines()[-1]
    data = report.to_dict()["entropy"]
    assert data[0]["line"] == line_of(marker) and data[0]["kind"] == kind
    assert data[0]["fix"] == report.entropy[0].fix


@MODES
def test_a_deterministic_model_reports_no_entropy(run, tmp_path):
    report = run(Seeded, tmp_path)
    assert report.reproducible
    assert report.entropy == ()
    assert "entropy" not in str(report)
    assert report.to_dict()["entropy"] == []


def test_a_seed_from_the_clock_before_the_model_is_named_for_a_random_stream_divergence(tmp_path):
    def body(model):
        torch.manual_seed(time.time_ns())  # plant: torch clock
        model(torch.ones(2, 4))

    def make():
        return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))

    report = audit.compare(*trace_twice(tmp_path, make, body))
    assert report.divergence is not None and report.divergence.cause == "b"
    assert report.entropy == (
        EntropySource(0, "clock", HERE, line_of("plant: torch clock"), body.__qualname__, None,
                      implicated=True),
    )  # fmt: skip


def test_entropy_outside_the_diverging_call_is_listed_after_the_implicated(tmp_path):
    def body(model):
        uuid.uuid4()  # plant: uuid
        model(torch.ones(2, 4))

    report = audit.compare(*trace_twice(tmp_path, lambda: Net(RandomScale()), body))
    assert [(s.kind, s.line, s.module, s.implicated) for s in report.entropy] == [
        ("random.Random", line_of("plant: random"), "Net.inner", True),
        ("uuid.uuid4", line_of("plant: uuid"), None, False),
    ]
    assert "outside the diverging call" in str(report).splitlines()[-2]


def test_a_call_that_calls_another_hooked_one_is_noted_once(tmp_path):
    noted = []

    def note(*place):
        noted.append(place)

    hooks.activate(note)
    try:
        secrets.token_hex(4)  # plant: secrets
        random.SystemRandom().random()  # plant: system
        np.random.SeedSequence()  # plant: seedsequence
        torch.seed()  # plant: torch seed
        random.Random(12345)  # seeded: not noted
        np.random.default_rng(7)
        torch.manual_seed(7)
    finally:
        hooks.deactivate(note)
    me = "test_a_call_that_calls_another_hooked_one_is_noted_once"
    assert noted == [
        ("secrets.token_hex", HERE, line_of("plant: secrets"), me),
        ("random.SystemRandom", HERE, line_of("plant: system"), me),
        ("numpy", HERE, line_of("plant: seedsequence"), me),
        ("torch.seed", HERE, line_of("plant: torch seed"), me),
    ]


# -- the hooks change nothing and leave no trace ------------------------------------------------


def _draws() -> list[float]:
    return [
        *np.random.default_rng(123).random(5).tolist(),
        *np.random.Generator(np.random.PCG64(9)).random(2).tolist(),
        random.Random(5).random(),
        torch.rand(2, generator=torch.Generator().manual_seed(7)).tolist()[1],
        float(np.random.SeedSequence(1).generate_state(1)[0]),
    ]


class Drawing(torch.nn.Module):
    def forward(self, x):
        self.drawn = _draws()
        return x


def test_tracing_changes_no_drawn_number(tmp_path):
    untraced = _draws()
    model = Drawing()
    with audit.trace(model, tmp_path / "a.trace"):
        model(torch.ones(1))
    assert model.drawn == untraced


def _originals() -> dict[str, object]:
    return {
        "Random.seed": random.Random.__dict__["seed"],
        "random.seed": random.seed,
        "SystemRandom.__init__": random.SystemRandom.__dict__.get("__init__"),
        "os.urandom": os.urandom,
        "secrets.token_bytes": secrets.token_bytes,
        "uuid.uuid4": uuid.uuid4,
        "default_rng": np.random.default_rng,
        "randbits": bit_generator.randbits,
        "torch.seed": torch.seed,
        "torch.manual_seed": torch.manual_seed,
        "torch.random.manual_seed": torch.random.manual_seed,
    }


def test_the_hooks_are_installed_while_tracing_and_removed_exactly_after(tmp_path):
    before = _originals()
    assert not hooks.hooked()
    outer = audit.trace(torch.nn.Linear(2, 2), tmp_path / "outer.trace").start()
    try:
        assert hooks.hooked() and os.urandom is not before["os.urandom"]
        with audit.trace(torch.nn.Linear(2, 2), tmp_path / "inner.trace"):
            assert hooks.hooked()
        assert hooks.hooked()  # the outer tracer is still active
    finally:
        outer.stop()
    assert not hooks.hooked()
    assert _originals() == before
    with pytest.raises(RuntimeError, match="boom"), audit.trace(None, tmp_path / "c.trace"):
        assert hooks.hooked()
        raise RuntimeError("boom")
    assert not hooks.hooked()
    assert _originals() == before


def test_a_trace_without_an_entropy_table_is_still_compared(tmp_path):
    paths = trace_twice(tmp_path, lambda: Net(NumpyJitter()), lambda m: m(torch.ones(2, 4)))
    for path in paths:
        db = sqlite3.connect(path)
        db.execute("DROP TABLE entropy")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'version'")
        db.commit()
        db.close()
    report = audit.compare(*paths)
    assert report.divergence is not None and report.divergence.module == "Net.inner"
    assert report.entropy == ()
