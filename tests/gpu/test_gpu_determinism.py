"""The determinism profile on CUDA: ops that add with atomics and a cuDNN convolution backward
give the same bits run after run with it; without it, the same ops are allowed to differ.

Both sides run in a child interpreter: ``CUBLAS_WORKSPACE_CONFIG`` is read at the first cuBLAS
call, so the profile's side is launched with ``seedlock run --deterministic`` and the other with
the variable removed from its environment.
"""

from __future__ import annotations

import json
import sys
import warnings

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.gpu

RUNS = 5  # each op, on the same inputs, in one process

OPS = """
import hashlib, json, os, sys
import torch

runs = int(sys.argv[1])
torch.backends.cudnn.benchmark = True        # what a training script often sets
g = torch.Generator(device="cuda").manual_seed(0)
n, slots = 1_000_000, 100
index = torch.randint(0, slots, (n,), device="cuda", generator=g)
values = torch.randn(n, device="cuda", generator=g)
conv = torch.nn.Conv2d(64, 64, 3, padding=1).cuda()
images = torch.randn(32, 64, 56, 56, device="cuda", generator=g)
grad_out = torch.randn(32, 64, 56, 56, device="cuda", generator=g)

def digest(*tensors):
    torch.cuda.synchronize()
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

def conv_backward():
    conv.zero_grad(set_to_none=True)
    x = images.clone().requires_grad_(True)
    conv(x).backward(grad_out)
    return digest(conv.weight.grad, conv.bias.grad, x.grad)

zeros = lambda: torch.zeros(slots, device="cuda")
ops = {
    "index_add_": lambda: digest(zeros().index_add_(0, index, values)),
    "scatter_add_": lambda: digest(zeros().scatter_add_(0, index, values)),
    "conv backward (cudnn.benchmark=True)": conv_backward,
}
found = {name: [op() for _ in range(runs)] for name, op in ops.items()}
flags = {
    "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    "cudnn.deterministic": torch.backends.cudnn.deterministic,
    "cudnn.benchmark": torch.backends.cudnn.benchmark,
    "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
}
print("@@", json.dumps({"runs": found, "flags": flags}))
"""


def _run_ops(child, path, prefix) -> dict:
    proc = child([*prefix, str(path), str(RUNS)]).check()
    return json.loads(proc.tagged()[0])


def test_the_profile_makes_atomic_adds_and_a_benchmarked_conv_backward_bit_identical(
    child, script, deterministic_python, record_property
):
    path = script("ops.py", OPS)
    on = _run_ops(child, path, deterministic_python)
    assert on["flags"]["deterministic_algorithms"] is True
    assert on["flags"]["cudnn.deterministic"] is True
    assert on["flags"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    varying = {name: runs for name, runs in on["runs"].items() if len(set(runs)) != 1}
    assert not varying, f"with the determinism profile these ops still vary: {varying}"

    off = _run_ops(child, path, (sys.executable,))
    assert off["flags"]["deterministic_algorithms"] is False
    differs = sorted(name for name, runs in off["runs"].items() if len(set(runs)) > 1)
    # Informational, not asserted: whether this GPU's kernels vary without the profile.
    note = (
        f"without the profile, {len(differs)} of {len(off['runs'])} ops varied over {RUNS} runs: "
        + (", ".join(differs) if differs else "none (this device happened to repeat them all)")
    )
    record_property("gpu_note", note)
    print(f"GPU-NOTE {note}")
    if not differs:
        warnings.warn(f"control without the profile proved nothing: {note}", stacklevel=1)
