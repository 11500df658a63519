"""Two traces from different machines or library versions name the environment as the cause."""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path

import torch

from seedlock import audit
from seedlock.audit import environment_report
from seedlock.audit.divergence import read_meta
from seedlock.audit.environment import EnvironmentDifference, differences

NEW_KEYS = ("cuda", "cudnn", "numpy", "python", "cpu_capability", "machine", "gpu")


def two_traces(folder: Path) -> tuple[Path, Path]:
    """a.trace and b.trace: the same deterministic model on the same batch, in process."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.ones(3, 4)
    paths = folder / "a.trace", folder / "b.trace"
    for path in paths:
        with audit.trace(model, path):
            model(x)
    return paths


def edit(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


# The output of the ReLU differs in run b: a planted difference, with the same inputs and RNG.
PLANT = (
    "UPDATE events SET fingerprint = 'planted', sum = sum + 1 "
    "WHERE event = 'forward' AND module = 'Sequential.1'"
)


def test_trace_records_the_environment_facts_of_this_process(tmp_path):
    a, _ = two_traces(tmp_path)
    meta = read_meta(a)
    assert meta["torch"] == torch.__version__
    assert meta["threads"] == str(torch.get_num_threads())
    assert meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert meta["python"] == platform.python_version()
    assert meta["machine"] == platform.machine()
    assert ("cuda" in meta) == bool(torch.version.cuda)
    if not torch.cuda.is_initialized():
        assert "gpu" not in meta and "cudnn" not in meta


def test_another_machine_is_the_cause_with_its_differences_listed_first(tmp_path):
    a, b = two_traces(tmp_path)
    capability = read_meta(a)["cpu_capability"]
    edit(
        b,
        "UPDATE meta SET value = 'OTHER' WHERE key = 'cpu_capability'",
        "UPDATE meta SET value = '0.0.1' WHERE key = 'torch'",
        PLANT,
    )
    report = audit.compare(a, b)
    d = report.divergence
    assert not report.reproducible and d is not None
    assert d.cause == "e" and d.cause_name == "environment differs"
    assert report.environment == (
        EnvironmentDifference("torch", torch.__version__, "0.0.1"),
        EnvironmentDifference("cpu_capability", capability, "OTHER"),
    )
    assert (d.module, d.kind, d.event) == ("Sequential.1", "ReLU", "forward")
    assert d.explanation == (
        f"the runs used different environments (torch {torch.__version__} vs 0.0.1, "
        f"cpu_capability {capability} vs OTHER); the difference first showed here, as (c) "
        "nondeterministic computation: same inputs and RNG state, different output of "
        "Sequential.1"
    )
    text = str(report).splitlines()
    assert text[1:5] == [
        "  environment differs (most likely cause first):",
        f"    - torch: {torch.__version__} vs 0.0.1",
        f"    - cpu_capability: {capability} vs OTHER",
        "  where   Sequential.1 (ReLU), forward",
    ]
    assert text[5].startswith("  cause   (e) environment differs: the runs used different")
    assert report.to_dict()["environment"] == [
        {"key": "torch", "a": torch.__version__, "b": "0.0.1"},
        {"key": "cpu_capability", "a": capability, "b": "OTHER"},
    ]


def test_differences_are_ranked_versions_then_cpu_then_gpu_then_threads():
    a = {"threads": "8", "gpu": "A", "cpu_capability": "AVX2", "numpy": "2.0", "torch": "2.4"}
    b = {"threads": "4", "gpu": "B", "cpu_capability": "AVX512", "numpy": "2.1", "torch": "2.5"}
    assert [d.key for d in differences(a, b)] == [
        "torch",
        "numpy",
        "cpu_capability",
        "gpu",
        "threads",
    ]


def test_the_same_environment_keeps_the_cause_found_event_by_event(tmp_path):
    a, b = two_traces(tmp_path)
    edit(b, PLANT)
    report = audit.compare(a, b)
    assert report.divergence is not None
    assert report.divergence.cause == "c"
    assert report.divergence.explanation == (
        "same inputs and RNG state, different output of Sequential.1"
    )
    assert report.environment == ()
    assert "environment" not in str(report)


def test_another_environment_without_a_divergence_is_reproducible(tmp_path):
    a, b = two_traces(tmp_path)
    edit(b, "UPDATE meta SET value = 'OTHER' WHERE key = 'cpu_capability'")
    report = audit.compare(a, b)
    assert report.reproducible and report.environment == ()


def test_a_trace_without_the_environment_keys_compares_as_before(tmp_path):
    a, b = two_traces(tmp_path)
    keys = ", ".join(repr(k) for k in NEW_KEYS)
    edit(b, f"DELETE FROM meta WHERE key IN ({keys})", PLANT)
    edit(a, "UPDATE meta SET value = 'OTHER' WHERE key = 'cpu_capability'")
    report = audit.compare(a, b)
    assert report.divergence is not None
    assert report.divergence.cause == "c"
    assert report.environment == ()


SEEDLOCK = str(Path(sys.executable).parent / "seedlock")


def _diff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SEEDLOCK, "diff", *args], capture_output=True, text=True, timeout=120)


def test_diff_shows_another_environment_even_when_the_runs_agree(tmp_path):
    a, b = two_traces(tmp_path)
    edit(a, "UPDATE meta SET value = 'AVX2' WHERE key = 'cpu_capability'")
    edit(
        b,
        "UPDATE meta SET value = 'AVX512' WHERE key = 'cpu_capability'",
        "UPDATE meta SET value = '2.12.0' WHERE key = 'torch'",
        "UPDATE meta SET value = 'x\x1b[2Jy' WHERE key = 'machine'",  # escaped on the terminal
    )
    assert audit.compare(a, b).reproducible
    proc = _diff(str(a), str(b))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("reproducible: ")
    assert lines[1] == "environment differs (most likely cause first):"
    assert [x.split(" (")[0] for x in lines[2:]] == [
        f"  - torch: {torch.__version__} vs 2.12.0",
        "  - cpu_capability: AVX2 vs AVX512",
        f"  - machine: {platform.machine()} vs x\\x1b[2Jy",
    ]
    assert lines[3].endswith(f"({environment_report.WHY['cpu_capability']})")
    assert "\x1b" not in proc.stdout
    data = json.loads(_diff(str(a), str(b), "--json").stdout)
    assert [d["key"] for d in data["environment_differences"]] == [
        "torch",
        "cpu_capability",
        "machine",
    ]
    assert data["reproducible"] and data["environment"] == []


def test_the_environment_block_says_same_with_what_the_traces_record(tmp_path):
    a, b = two_traces(tmp_path)
    diffs, meta, _ = environment_report.compare(a, b)
    assert diffs == ()
    assert environment_report.terminal(diffs, meta) == [
        f"environment: same (torch {torch.__version__}, CPU {meta['cpu_capability']} "
        f"{platform.machine()}, {torch.get_num_threads()} threads)"
    ]
    assert environment_report.terminal((), {}) == ["environment: same"]
    assert environment_report.to_json(()) == []
