"""The cheap first pass: traces without summaries, and every shortcut that makes tracing cheap
(the memo, cached headers, a reused copy buffer, fork detection, deferred on-device
fingerprints), checked to change nothing a trace records. Real torch, real traces; no timing."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import torch

import seedlock
from seedlock import audit
from seedlock.audit import fingerprints
from seedlock.audit.fingerprints import Memo, Pending, fingerprint, fingerprint_all, resolve

COLUMNS = "seq, step, module, kind, event, op, fingerprint, dtype, shape, rng, inputs"


class Net(torch.nn.Module):
    """Linear, ReLU, dropout (draws from torch's RNG), Linear; ``middle`` between the two."""

    def __init__(self, middle: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.a = torch.nn.Linear(6, 16)
        self.act = torch.nn.ReLU()
        self.middle = middle if middle is not None else torch.nn.Identity()
        self.drop = torch.nn.Dropout(0.5)
        self.b = torch.nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.drop(self.middle(self.act(self.a(x)))))


class UnseededNoise(torch.nn.Module):
    """Noise from a generator seeded from the OS: no seed reaches it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator()
        g.seed()
        return x + torch.randn(x.shape, generator=g)


class DrawsBetween(torch.nn.Module):
    """A linear layer, then a dropout, with ``draws`` values taken from torch's global RNG
    between them."""

    def __init__(self, draws: int) -> None:
        super().__init__()
        self.first = torch.nn.Linear(4, 4)
        self.second = torch.nn.Dropout(0.5)
        self.draws = draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        if self.draws:
            torch.rand(self.draws)  # drawn outside any traced module
        return self.second(h)


def run(path: Path, model: torch.nn.Module, steps: int = 2, **options: object) -> Path:
    """``steps`` SGD steps of ``model`` on a fixed batch, traced to ``path``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(
        8, next(model.parameters()).shape[1], generator=torch.Generator().manual_seed(1)
    )
    with audit.trace(model, path, optimizer=opt, **options):  # type: ignore[arg-type]
        for _ in range(steps):
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return path


def rows(path: Path, columns: str = COLUMNS) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(f"SELECT {columns} FROM events ORDER BY seq"))


def meta(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT key, value FROM meta"))


def seeded(make: type[torch.nn.Module], *args: object) -> torch.nn.Module:
    seedlock.seed_everything(0)
    return make(*args)


# -- summaries=False ---------------------------------------------------------------------------


def test_without_summaries_the_summary_columns_are_null_and_meta_says_so(tmp_path):
    path = run(tmp_path / "first.trace", seeded(Net), summaries=False)
    stats = rows(path, "sum, absmax, nans, infs")
    assert stats and all(row == (None, None, None, None) for row in stats)
    assert meta(path)["summaries"] == "0"
    full = run(tmp_path / "full.trace", seeded(Net), summaries=True)
    assert meta(full)["summaries"] == "1"
    assert meta(run(tmp_path / "default.trace", seeded(Net)))["summaries"] == "0"
    assert all(row[0] is not None and row[2] == 0 for row in rows(full, "sum, absmax, nans, infs"))


def test_summaries_change_no_fingerprint_event_by_event(tmp_path):
    without = rows(run(tmp_path / "a.trace", seeded(Net), summaries=False))
    with_ = rows(run(tmp_path / "b.trace", seeded(Net), summaries=True))
    assert len(without) > 40
    assert without == with_  # every event, fingerprint, RNG and input fingerprint equal
    kinds = {row[4] for row in without}
    assert kinds == {"batch", "forward", "grad_input", "grad", "param"}
    assert all(row[9] and row[10] for row in without if row[4] == "forward")


def test_two_first_passes_find_a_planted_unseeded_generator_and_its_cause(tmp_path):
    a = run(tmp_path / "a.trace", seeded(Net, UnseededNoise()), summaries=False)
    b = run(tmp_path / "b.trace", seeded(Net, UnseededNoise()), summaries=False)
    report = audit.compare(a, b)
    assert not report.reproducible
    d = report.divergence
    assert (d.module, d.event, d.cause) == ("Net.middle", "forward", "c")


def test_two_first_passes_of_a_deterministic_step_agree(tmp_path):
    a = run(tmp_path / "a.trace", seeded(Net), summaries=False)
    b = run(tmp_path / "b.trace", seeded(Net), summaries=False)
    assert audit.compare(a, b).reproducible


# -- the RNG column stays exact --------------------------------------------------------------


def test_a_draw_between_modules_changes_the_rng_column(tmp_path):
    path = run(tmp_path / "t.trace", seeded(DrawsBetween, 3), steps=1, summaries=False)
    rng = {row[2]: row[9] for row in rows(path) if row[4] == "forward"}
    assert rng["DrawsBetween.first"] != rng["DrawsBetween.second"]
    quiet = run(tmp_path / "q.trace", seeded(DrawsBetween, 0), steps=1, summaries=False)
    rng = {row[2]: row[9] for row in rows(quiet) if row[4] == "forward"}
    assert rng["DrawsBetween.first"] == rng["DrawsBetween.second"]  # nothing drawn between


def test_one_extra_draw_is_a_random_stream_difference_at_the_next_module(tmp_path):
    a = run(tmp_path / "a.trace", seeded(DrawsBetween, 0), summaries=False)
    b = run(tmp_path / "b.trace", seeded(DrawsBetween, 1), summaries=False)
    d = audit.compare(a, b).divergence
    assert (d.module, d.event, d.cause) == ("DrawsBetween.second", "forward", "b")


def test_rng_fingerprint_follows_every_draw_and_every_restore():
    seen = {fingerprints.rng_fingerprint()}
    state = torch.get_rng_state()
    for _ in range(5):
        torch.rand(1)
        seen.add(fingerprints.rng_fingerprint())
    assert len(seen) == 6
    torch.set_rng_state(state)
    assert fingerprints.rng_fingerprint() in seen
    assert fingerprints.rng_fingerprint() == fingerprints.hash_bytes(torch.get_rng_state().numpy())


# -- fingerprints: the cheap paths give the defined value ------------------------------------


def by_definition(t: torch.Tensor) -> str:
    """The fingerprint as defined: the hash of the header and the bytes in logical order."""
    h = fingerprints._new_hash(f"{t.dtype}|{tuple(t.shape)}|".encode())
    data = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    if data.dtype.is_complex:
        data = torch.view_as_real(data).reshape(-1)
    if data.numel():
        h.update(data.view(torch.uint8).numpy().tobytes())
    return str(h.hexdigest())[:32]


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.int64, torch.int8, torch.bool, torch.complex64]
)
def test_non_contiguous_tensors_copied_into_a_reused_buffer_hash_as_defined(dtype):
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(8, 32, 6, generator=g) * 10).to(dtype)
    views = [base.transpose(0, 1), base[:, ::3], base.permute(2, 0, 1), base[0].T, base[:, :0]]
    views += [base[:1, :1].expand(4, 5, 6), base.transpose(0, 1)[:2]]  # smaller after larger
    if dtype.is_complex:
        views += [base.conj().transpose(0, 1), base.imag.transpose(0, 1)]
    for view in views:
        assert fingerprint(view) == by_definition(view), (view.shape, view.stride())
        assert fingerprint(view) == fingerprint(view.contiguous())


def test_a_change_in_a_reused_header_or_buffer_is_seen():
    x = torch.arange(12.0).reshape(4, 3)
    y = x.T.contiguous()
    assert fingerprint(x.T) == fingerprint(y) != fingerprint(x) == fingerprint(y.T)
    assert fingerprint(x.T.double()) != fingerprint(x.T)  # same shape, another dtype
    z = y.clone()
    z[0, 1] += 1.0
    assert fingerprint(z.T) != fingerprint(x)  # through the reused buffer again


# -- a forked child records nothing ----------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_does_not_write_to_the_parents_trace(tmp_path):
    path = tmp_path / "t.trace"
    with audit.trace(None, path, summaries=False) as tracer:
        tracer.record("param", "before", [torch.ones(3)])
        pid = os.fork()
        if pid == 0:  # the child: what a DataLoader worker inheriting the hooks would do
            tracer.record("param", "child", [torch.zeros(3)])
            os._exit(0 if tracer.events == 1 else 1)
        _, status = os.waitpid(pid, 0)
        tracer.record("param", "after", [torch.ones(3)])
    assert os.waitstatus_to_exitcode(status) == 0
    assert [row[2] for row in rows(path)] == ["before", "after"]


# -- on an accelerator: fingerprints computed there, brought back together -------------------


@pytest.fixture
def device_path(monkeypatch):
    """CPU tensors take the on-device path (the same arithmetic an accelerator runs)."""
    monkeypatch.setattr(fingerprints, "_CPU_AS_DEVICE", True)


def tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g)
    return [base, base.T, torch.arange(3, dtype=torch.int8), torch.randn(0), base.half(), base[1]]


def test_deferred_fingerprints_equal_the_eager_device_path(device_path):
    memo = Memo(defer=True)
    ts = tensors()
    pending = [memo.defer(t) for t in ts]
    assert all(isinstance(p, Pending) and p.value is None for p in pending)
    both = memo.all(ts[:2])
    assert isinstance(both, Pending)
    resolve([*pending, both])  # one transfer
    eager = [fingerprint(t) for t in ts]  # each with its own transfer
    assert [str(p) for p in pending] == eager
    assert (
        str(both) == fingerprint_all(ts[:2]) == fingerprints.hash_bytes("".join(eager[:2]).encode())
    )
    assert memo.defer(ts[0]) == eager[0]  # a hit after resolving gives the string itself
    ts[0].add_(1)
    assert str(memo.defer(ts[0])) != eager[0]  # an in-place change is seen


def test_device_path_fingerprints_differ_from_the_cpu_hash_and_see_bit_flips(monkeypatch):
    x = torch.randn(100)
    cpu = fingerprint(x)
    monkeypatch.setattr(fingerprints, "_CPU_AS_DEVICE", True)
    y = x.clone()
    y.view(torch.int32)[50] ^= 1
    memo = Memo(defer=True)
    a, b = memo.defer(x), memo.defer(y)
    resolve([a, b])  # type: ignore[list-item]
    assert len({cpu, str(a), str(b)}) == 3


def test_a_trace_on_the_device_path_records_the_eager_fingerprints(device_path, tmp_path):
    model = seeded(Net)
    expected: list[str] = []
    path = tmp_path / "t.trace"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 6)
    # flush_every=5: rows are written, and fingerprints brought back, many times a step.
    with audit.Tracer(path, model, optimizer=opt, summaries=False, flush_every=5):
        for module in model.modules():  # after the tracer's hooks: sees the same outputs
            module.register_forward_hook(lambda m, a, out: expected.append(fingerprint(out)))
        for _ in range(2):
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    forward = [row for row in rows(path) if row[4] == "forward"]
    assert [row[6] for row in forward] == expected
    assert all(isinstance(row[10], str) and len(row[10]) == 32 for row in forward)
    # the same step traced on the CPU path: the same events, other fingerprints
    cpu = rows(run(tmp_path / "cpu.trace", seeded(Net), summaries=False))
    device = rows(path)
    assert [row[:6] for row in cpu] == [row[:6] for row in device]
    assert all(a[6] != b[6] for a, b in zip(cpu, device, strict=True) if a[4] == "forward")
