"""The cheap first pass and the targeted re-run, in process and through ``seedlock check``; the
batch does not hide the initialisation; untraced runs get a likely cause; ``--against``."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import seedlock
from seedlock import _registry, audit
from seedlock.audit import targeted
from test_audit_ops import net
from test_cli_check import SEEDLOCK, check


class Noisy(torch.nn.Module):
    """Adds noise from a numpy generator no seed reaches (torch's RNG state stays the same)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = np.random.default_rng().standard_normal(tuple(x.shape))  # entropy enters here
        return torch.add(x, torch.from_numpy(noise).float())


def column(path: Path, sql: str) -> list:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute(sql)]
    finally:
        db.close()


def test_the_first_pass_holds_fingerprints_only_and_the_rerun_adds_sums_and_the_op(tmp_path):
    model, opt, step = net(Noisy())
    report = audit.check(step, model=model, optimizer=opt, keep=tmp_path)
    d = report.divergence
    assert d is not None and (d.module, d.event, d.cause) == ("Sequential.1", "forward", "c")
    # run 1 and 2: fingerprints only; the re-runs: summaries, and ops inside Sequential.1
    assert set(column(tmp_path / "run1.trace", "SELECT sum FROM events")) == {None}
    assert None not in column(tmp_path / "rerun1.trace", "SELECT sum FROM events")
    ops = column(
        tmp_path / "rerun1.trace", "SELECT DISTINCT module FROM events WHERE op IS NOT NULL"
    )
    assert ops == ["Sequential.1"]
    # what the re-run adds to the first pass's verdict
    assert d.a["sum"] is not None and d.a["sum"] != d.b["sum"]
    assert report.op is not None and report.op.op == "aten::lift_fresh"
    assert report.rerun == "a re-run diverged again at this event"
    text = str(report)
    assert "size    sums differ by" in text and "re-run  a re-run diverged again" in text
    assert report.entropy[0].implicated and report.entropy[0].kind == "numpy"


def test_recording_stops_after_the_divergent_step(tmp_path):
    model, opt, step = net(Noisy())

    def three_steps() -> None:
        for _ in range(3):
            step()

    report = audit.check(three_steps, model=model, optimizer=opt, keep=tmp_path)
    assert report.divergence is not None and report.divergence.step == 0
    assert max(column(tmp_path / "run1.trace", "SELECT step FROM events")) == 3
    assert max(column(tmp_path / "rerun1.trace", "SELECT step FROM events")) == 1


def test_no_rerun_when_the_runs_agree(tmp_path):
    model, opt, step = net(torch.nn.ReLU())
    report = audit.check(step, model=model, optimizer=opt, keep=tmp_path)
    assert report.reproducible and report.rerun == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run1.trace", "run2.trace"]


def test_a_stream_the_step_makes_on_first_use_is_made_again_in_every_run():
    model, opt, _ = net(torch.nn.ReLU())
    x = torch.ones(2, 4)

    def step() -> None:
        noise = seedlock.numpy_rng("check-noise").standard_normal((2, 4))
        loss = model(x + torch.from_numpy(noise).float()).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    report = audit.check(step, model=model, optimizer=opt, runs=3)
    assert report.reproducible, report
    # afterwards the stream is registered and as one run left it: its next draw is the second
    fresh = np.random.default_rng(seedlock.derive("check-noise", bits=128))
    fresh.standard_normal((2, 4))
    expected = fresh.standard_normal(3)
    got = _registry.registered()["numpy_rng('check-noise')"].standard_normal(3)
    assert np.array_equal(got, expected)


def test_the_plan_for_each_cause():
    def report(cause: str, event: str, sums: float | None) -> audit.Report:
        side = {"event": event, "sum": sums}
        d = audit.Divergence(3, 1, "Net.fc", "Linear", event, None, cause, "", side, side)
        return audit.Report(False, 3, d, "a", "b")

    assert targeted.plan(report("c", "forward", None)) == targeted.Plan(1, "Net.fc")
    assert targeted.plan(report("c", "grad", None)) == targeted.Plan(1, None)
    assert targeted.plan(report("b", "forward", None)) == targeted.Plan(1, None)
    assert targeted.plan(report("b", "forward", 1.0)) is None  # summaries already there
    assert targeted.plan(report("d", "forward", None)) is None
    assert targeted.plan(report("e", "forward", None)) is None
    assert targeted.plan(audit.Report(True, 5, None, "a", "b")) is None


def test_a_batch_that_differs_does_not_hide_a_model_initialised_differently(tmp_path):
    def run(path: Path, data_seed: int, init_seed: int) -> None:
        torch.manual_seed(init_seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
        x = torch.randn(2, 4, generator=torch.Generator().manual_seed(data_seed))
        with audit.trace(model, path):
            model(x)

    run(tmp_path / "a.trace", 0, 0)
    run(tmp_path / "b.trace", 1, 1)
    run(tmp_path / "c.trace", 1, 0)
    both = audit.compare(tmp_path / "a.trace", tmp_path / "b.trace")
    assert both.divergence is not None and both.divergence.cause == "a"
    assert both.divergence.also == ("b",)
    assert "parameters differ too before the first step (Sequential.0.weight" in str(both)
    data_only = audit.compare(tmp_path / "a.trace", tmp_path / "c.trace")
    assert data_only.divergence is not None and data_only.divergence.cause == "a"
    assert data_only.divergence.also == ()
    assert "parameters differ too" not in str(data_only)


# --- through seedlock check ----------------------------------------------------------------


NOISY_SCRIPT = """
    import numpy as np
    import torch
    class Noisy(torch.nn.Module):
        def forward(self, x):
            noise = np.random.default_rng().standard_normal(tuple(x.shape))  # entropy
            return torch.add(x, torch.from_numpy(noise).float())
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Noisy(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        loss = model(torch.ones(2, 4)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


@pytest.mark.slow
def test_check_reruns_the_command_to_name_the_first_op(tmp_path):
    (tmp_path / "s.py").write_text(textwrap.dedent(NOISY_SCRIPT))
    keep = tmp_path / "kept"
    code, out, err = check(
        "--json", "--keep", str(keep), "--report", "r.html", "--", sys.executable, "s.py",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 1, err
    assert "targeted re-run 1/2 (summaries, ops in Sequential.1, up to step 0)" in err
    found = json.loads(out)["traces"]["main.trace"]
    assert found["divergence"]["module"] == "Sequential.1"
    assert found["divergence"]["cause"] == "c"
    assert found["op"]["op"] == "aten::lift_fresh"
    assert found["divergence"]["a"]["sum"] is not None
    line = (
        textwrap.dedent(NOISY_SCRIPT)
        .splitlines()
        .index("        noise = np.random.default_rng().standard_normal(tuple(x.shape))  # entropy")
    )
    assert (found["entropy"][0]["kind"], found["entropy"][0]["line"]) == ("numpy", line + 1)
    assert set(column(keep / "run1" / "main.trace", "SELECT sum FROM events")) == {None}
    assert max(column(keep / "rerun1" / "main.trace", "SELECT step FROM events")) == 1
    # The report plots the re-run's traces (they hold the sizes), numbered as the first pass.
    page = (tmp_path / "r.html").read_text()
    seq = found["divergence"]["seq"]
    assert "rerun1/main.trace" in page and "fingerprints only" not in page
    assert f"first divergence: event {seq}, Sequential.1 forward" in page
    assert f"<title>event {seq}: Sequential.1 forward;" in page
    text = json.loads(out)["text"]
    assert f"(first at event {seq})" in text and "fingerprints only" not in text


NUMPY_ONLY = """
    import numpy as np
    rng = np.random.default_rng()  # entropy
    print("mean", rng.standard_normal(100).mean())
"""


@pytest.mark.slow
@pytest.mark.parametrize("seeded", [True, False])
def test_an_untraced_script_gets_its_entropy_source_and_the_manifests_as_likely_cause(
    tmp_path, seeded
):
    (tmp_path / "s.py").write_text(textwrap.dedent(NUMPY_ONLY))
    options = [] if seeded else ["--no-seed"]
    code, out, _ = check(*options, "--", sys.executable, "s.py", cwd=tmp_path)
    assert code == 1
    assert "likely cause (nothing traced: the command did not use torch):" in out
    assert "entropy an unseeded numpy generator (OS entropy) at s.py:3 in <module>" in out
    if seeded:
        assert "the manifests agree (hash seed" in out
    else:
        assert "not seeded (--no-seed)" in out


@pytest.mark.slow
def test_against_compares_with_a_run_kept_on_another_machine(tmp_path):
    (tmp_path / "s.py").write_text(
        "import torch\nm = torch.nn.Linear(3, 1)\nprint(m(torch.ones(1, 3)).item())\n"
    )
    kept = tmp_path / "kept"
    code, out, err = check("--keep", str(kept), "--", sys.executable, "s.py", cwd=tmp_path)
    assert code == 0, out + err
    status = json.loads((kept / "run1" / "status.json").read_text())
    assert status["returncode"] == 0
    # Another machine: the same bits, another CPU and torch build in the trace's manifest.
    db = sqlite3.connect(kept / "run1" / "main.trace")
    (here,) = db.execute("SELECT value FROM meta WHERE key = 'cpu_capability'").fetchone()
    other = "AVX2" if here != "AVX2" else "AVX512"
    db.execute("UPDATE meta SET value = ? WHERE key = 'cpu_capability'", (other,))
    db.commit()
    db.close()
    code, out, err = check("--against", str(kept), "--", sys.executable, "s.py", cwd=tmp_path)
    assert code == 0, out + err
    assert "run 2/2" in err and "run 1/2" not in err  # run 1 is the kept one
    # Now make the kept run's results differ too: the verdict blames the environment first.
    db = sqlite3.connect(kept / "run1" / "main.trace")
    db.execute("UPDATE events SET fingerprint = 'x' WHERE event = 'forward'")
    db.commit()
    db.close()
    code, out, err = check(
        "--json", "--against", str(kept), "--", sys.executable, "s.py", cwd=tmp_path
    )
    assert code == 1
    found = json.loads(out)["traces"]["main.trace"]
    assert found["divergence"]["cause"] == "e"
    assert found["environment"][0]["key"] == "cpu_capability"
    assert "targeted re-run" not in err  # the other machine cannot be re-run from here


def test_against_a_folder_that_is_not_a_kept_check_is_one_line(tmp_path):
    code, out, err = check(
        "--against", str(tmp_path), "--", sys.executable, "-c", "0", cwd=tmp_path
    )
    assert code == 2 and out == ""
    assert err.startswith("seedlock check: --against ") and len(err.strip().splitlines()) == 1


PROGRESS_SCRIPT = """
    import time, torch
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(10)])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(150):
        loss = model(torch.ones(2, 4)).sum(); opt.zero_grad(); loss.backward(); opt.step()
    time.sleep(1.5)  # 8,000 of its events are on disk: the progress line shows them
"""


@pytest.mark.slow
def test_a_terminal_shows_the_step_and_events_of_the_running_run(tmp_path):
    (tmp_path / "s.py").write_text(textwrap.dedent(PROGRESS_SCRIPT))
    main, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    proc = subprocess.Popen(
        [SEEDLOCK, "check", "--", sys.executable, "s.py"],
        cwd=tmp_path, stderr=terminal, stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(terminal)
    shown = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal's other end is closed: the check has ended
            break
        if not chunk:
            break
        shown.append(chunk)
    out, _ = proc.communicate(timeout=120)
    os.close(main)
    text = b"".join(shown).decode()
    assert proc.returncode == 0, text + out.decode()
    # 150 steps of 10 layers: 9,170 events, written 2,000 at a time (the 8,000th in step 131),
    # the rest at exit.
    assert "seedlock check: run 1/2 (seed 0) ... step 131, 8,000 events" in text
    assert "\rseedlock check: run 1/2 (seed 0) ... exit 0 in" in text
    assert " 0 events" not in text


TORCH_THEN_NUMPY = """
    import torch
    import numpy as np  # imported after torch, so after the trace started
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + float(np.random.default_rng().random())  # entropy
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Noisy())
    print(model(torch.ones(1, 4)).sum().item())
"""


@pytest.mark.slow
def test_check_notes_entropy_from_a_library_imported_after_the_trace_started(tmp_path):
    (tmp_path / "s.py").write_text(textwrap.dedent(TORCH_THEN_NUMPY))
    code, out, err = check("--json", "--", sys.executable, "s.py", cwd=tmp_path)
    assert code == 1, err
    found = json.loads(out)["traces"]["main.trace"]
    line = (
        textwrap.dedent(TORCH_THEN_NUMPY)
        .splitlines()
        .index("        return x + float(np.random.default_rng().random())  # entropy")
    )
    assert (found["entropy"][0]["kind"], found["entropy"][0]["line"]) == ("numpy", line + 1)


def test_against_and_keep_in_the_same_folder_is_refused(tmp_path):
    code, out, err = check("--against", str(tmp_path), "--keep", str(tmp_path), "--",
                           sys.executable, "-c", "0", cwd=tmp_path)  # fmt: skip
    assert code == 2 and out == ""
    assert "--against and --keep name the same folder" in err
    assert list(tmp_path.iterdir()) == []  # nothing was run or written
