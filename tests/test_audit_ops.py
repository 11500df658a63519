"""``audit.check`` names the first divergent aten op inside a module that computed differently."""

from __future__ import annotations

import json
import sqlite3

import torch

import seedlock
from seedlock import audit
from seedlock.audit import traces


class Drift(torch.nn.Module):
    """Adds a call counter the snapshot does not restore: every call computes another sum."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = torch.relu(x)
        return torch.add(y, float(self.calls))


class IndexAdd(torch.nn.Module):
    """Runs an op from seedlock's table (``index_add_``) and a submodule, then a drifting add."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.ReLU()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = self.inner(torch.zeros_like(x).index_add_(0, torch.tensor([1, 0]), x))
        return torch.add(y, float(self.calls))


def net(middle: torch.nn.Module):
    seedlock.seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), middle, torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.ones(2, 4)

    def step() -> None:
        loss = model(x).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return model, opt, step


def count_tracers(monkeypatch) -> list[str | None]:
    seen: list[str | None] = []
    start = traces.Tracer.start

    def counting(self):
        seen.append(self.ops_in)
        return start(self)

    monkeypatch.setattr(traces.Tracer, "start", counting)
    return seen


def test_check_reruns_the_divergent_module_with_ops_and_names_the_first_differing_op(monkeypatch):
    seen = count_tracers(monkeypatch)
    model, opt, step = net(Drift())
    report = audit.check(step, model=model, optimizer=opt)
    d = report.divergence
    assert (d.module, d.kind, d.event, d.op, d.cause) == (
        "Sequential.1",
        "Drift",
        "forward",
        None,
        "c",
    )
    assert seen == [None, None, "Sequential.1", "Sequential.1"]
    finding = report.op
    assert (finding.module, finding.op) == ("Sequential.1", "aten::add")
    assert finding.verdict.startswith("'aten::add' is not in seedlock's table")
    assert finding.suspects == []
    assert finding.threads == (str(torch.get_num_threads()),) * 2
    text = str(report)
    assert "  op      aten::add, first differing op in Sequential.1\n" in text
    assert "is not in seedlock's table of known nondeterministic ops" in text
    assert "  threads run a {0}, run b {0} (same)".format(torch.get_num_threads()) in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["op"]["op"] == "aten::add" and data["op"]["module"] == "Sequential.1"


def test_op_rerun_records_only_the_ops_inside_that_module(tmp_path):
    model, opt, step = net(IndexAdd())
    report = audit.check(step, model=model, optimizer=opt, keep=tmp_path)
    assert report.divergence.module == "Sequential.1"
    db = sqlite3.connect(tmp_path / "rerun1.trace")
    rows = db.execute("SELECT DISTINCT module, op FROM events WHERE event = 'op'").fetchall()
    db.close()
    modules = {m for m, _ in rows}
    assert modules == {"Sequential.1", "Sequential.1.inner"}
    assert ("Sequential.1", "aten::index_add_") in rows
    # The first differing op, and the op table's entry for index_add_, which ran there.
    assert report.op.op == "aten::add"
    assert len(report.op.suspects) == 1 and report.op.suspects[0].startswith("torch.index_add: ")
    assert "ops in Sequential.1 that seedlock's table lists:\n    - torch.index_add: " in str(
        report
    )


class Stamp(Drift):
    """Changes its output through a numpy view, which no aten op sees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = x.clone()
        out.detach().numpy()[:] += self.calls
        return out


def test_a_difference_no_op_shows_is_said_in_one_line():
    model, opt, step = net(Stamp())
    report = audit.check(step, model=model, optimizer=opt)
    d = report.divergence
    assert (d.module, d.event, d.cause) == ("Sequential.1", "forward", "c")
    assert report.op is not None and report.op.op is None and report.op.verdict == ""
    lines = [line for line in str(report).splitlines() if line.startswith("  op ")]
    assert lines == ["  op      none: every aten op in Sequential.1 agreed in a re-run"]


def test_deterministic_model_runs_no_op_rerun(monkeypatch):
    seen = count_tracers(monkeypatch)
    model, opt, step = net(torch.nn.ReLU())
    report = audit.check(step, model=model, optimizer=opt)
    assert report.reproducible and report.op is None
    assert seen == [None, None]
    assert "op " not in str(report)


def test_ops_true_records_everything_and_runs_no_rerun(monkeypatch):
    seen = count_tracers(monkeypatch)
    model, opt, step = net(Drift())
    report = audit.check(step, model=model, optimizer=opt, ops=True)
    d = report.divergence
    assert (d.module, d.event, d.op, d.cause) == ("Sequential.1", "op", "aten::add", "c")
    assert report.op is None and len(seen) == 2
