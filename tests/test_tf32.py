"""TF32 through both of torch's APIs: the profile, the manifest and ``doctor`` work whichever the
program used first, never leave torch in a state where its own getters raise, and put back
exactly what was there. Each case runs in a fresh interpreter: torch's TF32 flags are
process-wide and a mix of the two APIs cannot be undone from inside."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SEEDLOCK = str(Path(sys.executable).parent / "seedlock")

PROBE = """
import json, torch, seedlock
from seedlock import _tf32
from seedlock.manifest import process_record
b = torch.backends

def getters():
    out = {}
    for name, read in [("matmul.allow_tf32", lambda: b.cuda.matmul.allow_tf32),
                       ("cudnn.allow_tf32", lambda: b.cudnn.allow_tf32),
                       ("get_float32_matmul_precision", torch.get_float32_matmul_precision)]:
        try:
            out[name] = read()
        except RuntimeError:
            out[name] = "raises"
    return out

SETUP
before = (_tf32.state(torch), getters())
with seedlock.deterministic():
    inside = (_tf32.describe(torch), getters(), process_record()["determinism"])
after = (_tf32.state(torch), getters())
print(json.dumps({"before": before, "inside": inside, "after": after}))
"""

SETUPS = {
    "untouched": "",
    "legacy precision high": "torch.set_float32_matmul_precision('high')",
    "legacy allow_tf32": "b.cuda.matmul.allow_tf32 = True",
    # torch's own mix: get_float32_matmul_precision() raises in this state
    "legacy allow_tf32 after precision": (
        "torch.set_float32_matmul_precision('high'); b.cuda.matmul.allow_tf32 = False"
    ),
    "new fp32_precision tf32": "b.cuda.matmul.fp32_precision = 'tf32'",
    "new fp32_precision everywhere": (
        "b.cuda.matmul.fp32_precision = 'tf32'; b.cudnn.conv.fp32_precision = 'tf32'"
    ),
}


def probe(setup: str) -> dict:
    code = PROBE.replace("SETUP", setup)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("setup", list(SETUPS), ids=list(SETUPS))
def test_the_profile_switches_tf32_off_in_the_api_in_use_and_puts_it_back(setup):
    found = probe(SETUPS[setup])
    described, getters, determinism = found["inside"]
    assert (described["matmul"], described["cudnn"]) == ("ieee", "ieee")
    assert determinism["cuda.matmul.allow_tf32"] is False
    assert determinism["cudnn.allow_tf32"] is False
    # As the program had it; a getter torch's own mix made raise reads cleanly afterwards.
    assert found["after"][0] == found["before"][0]
    for name, value in found["before"][1].items():
        assert found["after"][1][name] == value or value == "raises", name
    if described["api"] == "legacy":
        # The legacy family stays readable, and Inductor's getter agrees with the switches.
        assert getters == {"matmul.allow_tf32": False, "cudnn.allow_tf32": False,
                           "get_float32_matmul_precision": "highest"}  # fmt: skip
    else:
        assert setup.startswith("new")
        assert determinism["tf32_api"] == "new"


def test_a_program_using_the_new_api_gets_its_process_record_in_the_manifest(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        textwrap.dedent("""
        import torch
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    """)
    )
    manifest = tmp_path / "m.json"
    proc = subprocess.run(
        [SEEDLOCK, "run", "--deterministic", "--manifest", str(manifest), "--",
         sys.executable, str(script)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    processes = json.loads(manifest.read_text())["processes"]
    assert len(processes) == 1
    assert processes[0]["determinism"]["tf32_api"] == "new"
    assert processes[0]["determinism"]["cuda.matmul.allow_tf32"] is True
