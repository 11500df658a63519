"""NCCL and cuBLAS reduced-precision switches in manifests, ``seedlock diff`` and ``doctor``.

A CPU build of torch has no NCCL; the variables, the switches and the ranking of their
differences are checked all the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from seedlock import manifest

SEEDLOCK = str(Path(sys.executable).parent / "seedlock")
FP16 = "cuda.matmul.allow_fp16_reduced_precision_reduction"
BF16 = "cuda.matmul.allow_bf16_reduced_precision_reduction"

SCRIPT = """
import sys, torch
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = sys.argv[1] == "on"
"""


def seedlock(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDLOCK", "NCCL_"))}
    full.pop("PYTHONHASHSEED", None)
    full.update(env)
    return subprocess.run(
        [SEEDLOCK, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=180
    )


def run(tmp_path: Path, name: str, bf16: str, env: dict[str, str]) -> dict:
    (tmp_path / "flags.py").write_text(SCRIPT)
    proc = seedlock("run", "-q", "--seed", "1", "--manifest", name, "--", sys.executable,
                    "flags.py", bf16, cwd=tmp_path, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / name).read_text())


def test_the_manifest_records_nccl_and_the_reduced_precision_switches(tmp_path):
    data = run(tmp_path, "a.json", "off", {"NCCL_ALGO": "Ring", "NCCL_PROTO": "Simple",
                                            "NCCL_DEBUG": "WARN"})  # fmt: skip
    assert {k: v for k, v in data["env"].items() if k.startswith("NCCL_")} == {
        "NCCL_ALGO": "Ring",
        "NCCL_DEBUG": "WARN",
        "NCCL_PROTO": "Simple",
    }
    (process,) = data["processes"]
    assert process["determinism"][FP16] is True  # torch's default
    assert process["determinism"][BF16] is False  # switched off by the program
    built_with = hasattr(torch._C, "_nccl_version")
    assert "nccl" in process["torch"]
    assert (process["torch"]["nccl"] is not None) == built_with


def test_diff_ranks_nccl_and_reduced_precision_differences_high(tmp_path):
    run(tmp_path, "a.json", "on", {"NCCL_ALGO": "Ring", "NCCL_DEBUG": "WARN"})
    run(tmp_path, "b.json", "off", {"NCCL_ALGO": "Tree", "NCCL_DEBUG": "INFO"})
    proc = seedlock("diff", "--json", "a.json", "b.json", cwd=tmp_path, env={})
    assert proc.returncode == 1, proc.stdout
    risks = {d["key"]: d["risk"] for d in json.loads(proc.stdout)["differences"]}
    assert risks["env.NCCL_ALGO"] == "high"
    assert risks[f"processes.0.determinism.{BF16}"] == "high"
    assert risks["env.NCCL_DEBUG"] == "medium"
    assert f"processes.0.determinism.{FP16}" not in risks


def test_diff_ranks_another_nccl_version_or_protocol_high():
    a = {"env": {"NCCL_PROTO": "LL"}, "processes": [{"torch": {"nccl": "2.21.5"}}]}
    b = {"env": {"NCCL_PROTO": "Simple"}, "processes": [{"torch": {"nccl": "2.27.3"}}]}
    risks = {d["key"]: d["risk"] for d in manifest.diff(a, b)}
    assert risks == {"env.NCCL_PROTO": "high", "processes.0.torch.nccl": "high"}


def test_doctor_shows_the_switches_and_nccl(tmp_path):
    proc = seedlock("doctor", "--json", cwd=tmp_path, env={"NCCL_ALGO": "Ring"})
    found = {f["check"]: f for f in json.loads(proc.stdout)}
    assert "allow_bf16_reduced_precision_reduction=True" in found["reduced-precision"]["summary"]
    assert "NCCL_ALGO=Ring" in found["nccl"]["summary"]
    if not hasattr(torch._C, "_nccl_version"):
        assert "not built with NCCL" in found["nccl"]["summary"]
