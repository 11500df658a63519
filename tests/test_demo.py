"""``seedlock demo``: real CLI runs, each training the model in two real child processes."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import seedlock
from seedlock.cli import demo as demo_module
from seedlock.cli.demo import INSTALL_HINT
from seedlock.cli.demo._steps import judge_audit
from seedlock.cli.demo._training import AuditResult, interrupt_step

pytestmark = pytest.mark.slow

IDENTICAL = "bit-identical: yes (every epoch's loss and every parameter bit match)"
RUNS_VERDICT = "  run 1 vs run 2     "
RESUME_VERDICT = "  resumed vs run 1   "
HASH_LINE = re.compile(r"^  run ([12])  ([0-9a-f]{64})$", re.MULTILINE)
RESUME_HASH_LINE = re.compile(r"^  params (run 1|resumed) +([0-9a-f]{64})$", re.MULTILINE)
INTERRUPTED_LINE = re.compile(
    r"^  interrupted    after step (\d+) of (\d+) \(epoch (\d+) of 2, batch (\d+) of (\d+)\)",
    re.MULTILINE,
)
LOSS_ROW = re.compile(r"^ +(\d+)  .*  (identical|DIFFER)$", re.MULTILINE)
PLANTED = "Sequential.noise"


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m seedlock.cli demo ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "seedlock.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def printed_hashes(stdout: str) -> dict[str, str]:
    return dict(HASH_LINE.findall(stdout))


@pytest.fixture(scope="module")
def table_run() -> subprocess.CompletedProcess[str]:
    return demo("--epochs", "2")


@pytest.fixture(scope="module")
def json_run() -> subprocess.CompletedProcess[str]:
    return demo("--epochs", "2", "--json")


@pytest.fixture(scope="module")
def json_output(json_run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert json_run.returncode == 0, json_run.stderr
    result: dict[str, Any] = json.loads(json_run.stdout)
    return result


def test_demo_exits_0_and_its_verdict_says_bit_identical_for_both_checks(table_run):
    assert table_run.returncode == 0, table_run.stderr
    assert table_run.stdout.splitlines()[-3:] == [
        "verdict",
        RUNS_VERDICT + IDENTICAL,
        RESUME_VERDICT + IDENTICAL,
    ]


def test_demo_prints_the_same_parameter_hash_for_both_runs(table_run):
    hashes = printed_hashes(table_run.stdout)
    assert sorted(hashes) == ["1", "2"]
    assert hashes["1"] == hashes["2"]


def test_demo_marks_every_epoch_of_the_loss_table_identical(table_run):
    assert LOSS_ROW.findall(table_run.stdout) == [("1", "identical"), ("2", "identical")]


def test_demo_prints_a_resume_section_with_the_same_parameter_hash_as_run_1(table_run):
    section = table_run.stdout.split("\nresume: ", 1)[1]
    assert section.startswith("run 1 again, interrupted mid-epoch, then finished by a new process")
    assert "torch.load(weights_only=True)" in section
    assert "2 DataLoader workers in both processes, 0 in runs 1 and 2" in section
    assert "every epoch's loss bits match run 1's" in section
    hashes = dict(RESUME_HASH_LINE.findall(section))
    assert hashes == {"run 1": printed_hashes(table_run.stdout)["1"], "resumed": hashes["run 1"]}


def test_demo_interrupts_the_resume_run_in_the_middle_of_an_epoch(table_run):
    match = INTERRUPTED_LINE.search(table_run.stdout)
    assert match, table_run.stdout
    step, total, epoch, batch, per_epoch = map(int, match.groups())
    assert total == 2 * per_epoch
    assert 0 < batch < per_epoch
    assert step == (epoch - 1) * per_epoch + batch


def test_demo_reports_progress_of_every_run_on_stderr(table_run):
    lines = table_run.stderr.splitlines()
    assert lines[0] == (
        "training 2 runs and an interrupted run, plus an audit, at once, each in a new Python "
        "process ..."
    )
    labels = [re.split(r" done in | stopped after ", line)[0] for line in lines[1:]]
    assert sorted(labels) == [
        "audit (seed 0)",
        "interrupted run (seed 0)",
        "resumed run (seed 0)",
        "run 1/2 (seed 0)",
        "run 2/2 (seed 0)",
    ]
    # The resumed run starts once the interrupted one has stopped.
    assert labels.index("resumed run (seed 0)") > labels.index("interrupted run (seed 0)")
    stopped = next(line for line in lines if line.startswith("interrupted run"))
    assert stopped.endswith("; resuming it in a new process ...")


def test_json_output_has_the_same_loss_bits_for_both_runs_epoch_by_epoch(json_output):
    first, second = json_output["runs"]
    assert len(first["loss_hex"]) == 2
    assert [float.fromhex(h).hex() for h in first["loss_hex"]] == first["loss_hex"]
    assert first["loss_hex"] == second["loss_hex"]


def test_json_output_says_identical_with_no_differing_epoch(json_output):
    assert json_output["reproducible"] is True
    assert json_output["identical"] is True
    assert json_output["first_differing_epoch"] is None
    assert json_output["params_identical"] is True
    assert json_output["seeds"] == [0, 0]


def test_json_output_has_the_resumed_run_bit_identical_to_run_1(json_output):
    resume = json_output["resume"]
    first, resumed = json_output["runs"][0], resume["run"]
    assert resume["identical"] is True
    assert resume["first_differing_epoch"] is None
    assert resume["params_identical"] is True
    assert resume["compared_with"] == "run 1"
    assert resumed["params_sha256"] == first["params_sha256"]
    assert resumed["loss_hex"] == first["loss_hex"]
    assert resumed["seed"] == first["seed"] == 0


def test_json_output_says_where_the_run_was_interrupted(json_output):
    stop = json_output["resume"]["interrupted"]
    per_epoch = stop["batches_per_epoch"]
    assert stop["total_steps"] == 2 * per_epoch
    assert 0 < stop["batch"] < per_epoch  # mid-epoch, not on a boundary
    assert stop["step"] == (stop["epoch"] - 1) * per_epoch + stop["batch"]
    assert stop["loader_state"] == {
        "version": 1,
        "epoch": stop["epoch"] - 1,
        "batches": stop["batch"],
    }
    assert stop["checkpoint_bytes"] > 0


def test_the_resume_runs_use_dataloader_workers_and_the_full_runs_none(json_output):
    assert [run["workers"] for run in json_output["runs"]] == [0, 0]
    assert json_output["resume"]["interrupted"]["workers"] == 2
    assert json_output["resume"]["run"]["workers"] == 2


def test_each_run_trains_on_one_thread_under_the_determinism_profile(json_output):
    for run in [*json_output["runs"], json_output["resume"]["run"]]:
        assert run["threads"] == 1
        assert run["seed_report"]["root"] == "0"
        assert any("use_deterministic_algorithms" in c for c in run["seed_report"]["determinism"])


def test_separate_demo_invocations_give_the_same_parameter_hash(table_run, json_output):
    assert table_run.returncode == 0, table_run.stderr
    assert json_output["runs"][0]["params_sha256"] == printed_hashes(table_run.stdout)["1"]


def test_a_different_second_seed_exits_1_and_says_not_bit_identical():
    proc = demo("--epochs", "2", "--seed2", "1", "--no-audit")
    assert proc.returncode == 1, proc.stderr
    # Runs 1 and 2 differ; the resumed run is run 1 again (seed 0) and still matches it.
    assert proc.stdout.splitlines()[-2:] == [
        RUNS_VERDICT
        + "NOT bit-identical: the loss differs from epoch 1 on, and the parameter hashes differ",
        RESUME_VERDICT + IDENTICAL,
    ]
    hashes = printed_hashes(proc.stdout)
    assert hashes["1"] != hashes["2"]
    # --no-audit: no audit section, no audit process.
    assert "\naudit: " not in proc.stdout
    assert "audit" not in proc.stderr


def test_no_resume_and_no_audit_skip_the_interrupted_and_resumed_runs_and_the_audit():
    proc = demo("--epochs", "1", "--no-resume", "--no-audit", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "resume" not in result
    assert "audit" not in result
    assert "audit" not in proc.stderr
    assert result["reproducible"] is True
    assert (
        proc.stderr.splitlines()[0] == "training 2 runs at once, each in a new Python process ..."
    )
    assert "interrupted" not in proc.stderr
    assert "resumed" not in proc.stderr


def audit_section(stdout: str) -> str:
    return stdout.split("\naudit: ", 1)[1].split("\n\nverdict\n", 1)[0]


def test_the_audit_section_names_the_planted_layer_and_cause_c(table_run):
    section = audit_section(table_run.stdout)
    assert section.startswith("one training step of the MLP with a planted layer")
    assert f"  planted        {PLANTED} after the ReLU" in section
    assert "np.random.default_rng(): OS entropy, which no seed reaches" in section
    report = section.split("  report         ", 1)[1]
    assert report.startswith("NOT reproducible: first divergence at event ")
    assert f"where   {PLANTED} (GaussianNoise), forward" in report
    assert (
        "cause   (c) nondeterministic computation: same inputs and RNG state, different output "
        f"of {PLANTED}"
    ) in report
    assert re.search(r"size    sums differ by [0-9.e+-]+ \([0-9.e+-]+ relative\)", report)
    fix = section.split("  fix            ", 1)[1].split("  fixed model", 1)[0]
    assert 'seedlock.numpy_rng("demo", "noise")' in fix
    assert "seedlock.data.sample_rng()" in " ".join(fix.split())


def test_the_audit_calls_the_fixed_model_reproducible(table_run):
    assert table_run.returncode == 0, table_run.stderr
    section = audit_section(table_run.stdout)
    assert re.search(r"^  fixed model    reproducible: \d+ events bit-identical$", section, re.M)
    assert section.splitlines()[-1] == (
        f"  result         found the planted layer {PLANTED}, cause (c); "
        "the fixed model is reproducible"
    )
    # The finding is expected: the verdict stays about the bit-identity of the runs.
    assert "FAILED" not in table_run.stdout


def test_json_output_has_the_audit_finding_and_the_fixed_check(json_output):
    audit = json_output["audit"]
    assert json_output["reproducible"] is True
    assert audit["ok"] is True
    assert audit["found"] is True
    assert audit["fixed_reproducible"] is True
    assert audit["planted_module"] == PLANTED
    planted = audit["planted"]
    assert planted["reproducible"] is False
    divergence = planted["divergence"]
    assert divergence["module"] == PLANTED
    assert divergence["kind"] == "GaussianNoise"
    assert divergence["event"] == "forward"
    assert divergence["cause"] == "c"
    assert divergence["cause_name"] == "nondeterministic computation"
    assert divergence["a"]["fingerprint"] != divergence["b"]["fingerprint"]
    assert audit["fixed"]["reproducible"] is True
    assert audit["fixed"]["divergence"] is None
    assert audit["fixed"]["events"] > 0
    assert "seedlock.numpy_rng" in audit["fix"]
    assert audit["planted_text"].startswith("NOT reproducible")
    assert audit["fixed_text"].startswith("reproducible: ")


def _audited(json_output: dict[str, Any], **planted_divergence: Any) -> dict[str, Any]:
    """What the audit run of ``json_output`` wrote (an ``AuditResult``: the ``audit`` item without
    the parent's judgement), with the planted report's divergence changed."""
    audit = json.loads(json.dumps(json_output["audit"]))
    audit = {key: audit[key] for key in AuditResult.__annotations__}
    audit["planted"]["divergence"].update(planted_divergence)
    return audit


@pytest.mark.parametrize(
    "change",
    [{"module": "Sequential.0"}, {"cause": "b"}, "reproducible", "fixed not reproducible"],
)
def test_an_audit_that_misses_the_planted_layer_is_not_ok(json_output, change):
    audit = _audited(json_output)
    if change == "reproducible":
        audit["planted"] = {**audit["planted"], "reproducible": True, "divergence": None}
    elif change == "fixed not reproducible":
        audit["fixed"] = audit["planted"]
    else:
        audit = _audited(json_output, **change)
    judged = judge_audit(audit)
    assert judged["ok"] is False
    assert judged["found"] is (change == "fixed not reproducible")


def test_the_demo_exits_1_when_the_audit_misses_the_planted_layer(json_output, monkeypatch, capsys):
    bad = _audited(json_output, module="Sequential.0")

    def launch(seeds, epochs, tmp, *, resume, audit):
        assert audit is True
        return json_output["runs"], None, bad

    monkeypatch.setattr(demo_module, "_launch", launch)
    parser = argparse.ArgumentParser()
    demo_module.add_arguments(parser)
    assert demo_module.run(parser.parse_args(["--epochs", "2", "--no-resume"])) == 1
    out = capsys.readouterr().out
    assert f"did NOT find the planted layer {PLANTED} with cause (c): a demo failure" in out
    assert out.splitlines()[-1] == "  audit              FAILED: see the audit section above"


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("batches", [2, 3, 45])
def test_the_interruption_step_is_inside_the_run_and_never_on_an_epoch_boundary(epochs, batches):
    step = interrupt_step(epochs, batches)
    assert 0 < step < epochs * batches
    assert step % batches != 0


def test_without_torch_the_demo_exits_2_and_says_how_to_install_it():
    # -S leaves site-packages (and with it torch) out; PYTHONPATH still finds seedlock itself.
    src = Path(seedlock.__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "seedlock.cli", "demo"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src)},
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == f"Install what the demo needs with: {INSTALL_HINT}"


def test_a_run_falls_back_to_synthetic_data_without_scikit_learn(tmp_path):
    out = tmp_path / "run.json"
    # The private child mode, in an interpreter where importing sklearn fails.
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from seedlock.cli import main\n"
        f"sys.exit(main(['demo', '--child', {str(out)!r}, '--epochs', '1']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["data"].startswith("synthetic (scikit-learn is not installed): ")
    assert len(result["loss_hex"]) == 1
    assert result["workers"] == 0
