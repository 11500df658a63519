#!/usr/bin/env python
"""What seedlock costs on a CUDA device: the determinism profile, the fingerprint, tracing.

    python benchmarks/bench_gpu.py [--repeats N] [--steps N] [--size-mb N]

Measures, side by side in one run, on the first CUDA device (without one it prints one line
saying so and exits 0):

1. The determinism profile's cost: one training step (forward under bf16 autocast, a
   cross-entropy, backward, AdamW) of a small CNN + transformer (two strided 3x3 convolutions
   into 64 tokens of width 64, two pre-norm blocks with ``scaled_dot_product_attention`` and
   dropout, batch 64 of 32x32x3 images), with ``seedlock.deterministic()`` off and on. The
   criterion practitioners accept is at most 1.25x.
2. The fingerprint's throughput on a 1 GiB float32 CUDA tensor: seedlock's on-device hash of one
   tensor (``seedlock.audit._device_hash``, 16 bytes back to the host) and the public
   ``seedlock.audit.fingerprint(t)``, in GB/s, against ``t.clone()``. The criterion is at least
   0.5x clone's throughput.
3. The same training step traced, ``seedlock.audit.trace(model, path, optimizer=opt,
   summaries=False)`` (the first pass of ``check``), against the step untraced. The criterion is
   at most 1.3x.

``CUBLAS_WORKSPACE_CONFIG=:4096:8`` is set before the first CUDA call, for both sides of row 1
(cuBLAS reads it once, at its start, so a process cannot switch it); the ratio is the cost of
what the profile switches in process: deterministic algorithms, cuDNN determinism and no
benchmarking, TF32 off. Each repeat runs every variant (a block of steps or calls), in an order
shuffled per repeat with a fixed seed, after warm-up steps of each; every timed block ends with
``torch.cuda.synchronize()``. In row 3 the untraced step runs right before each traced one,
inside the open trace, on a twin of the model (hooks go on the traced copy only).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script

PROFILE_CRITERION = 1.25  # step with the determinism profile at most this x without it
CLONE_CRITERION = 0.5  # fingerprint throughput at least this x clone's
TRACE_CRITERION = 1.3  # first-pass traced step at most this x the untraced step
CALLS = 3  # fingerprint calls per variant and repeat (a repeat's value: their median)
WARMUP_STEPS = 3
# Past this many seconds, each part stops after its current repeat (set by --budget-s): the
# report comes out with fewer repeats rather than not at all.
_deadline = [float("inf")]


def over_budget() -> bool:
    return time.perf_counter() > _deadline[0]


def no_cuda_line() -> str | None:
    """Why this machine cannot run the benchmark, or None."""
    try:
        import torch
    except ImportError:
        return "bench_gpu: torch is not installed: nothing to measure (exit 0)"
    if not torch.cuda.is_available():
        return "bench_gpu: no CUDA device (torch.cuda.is_available() is False): skipped (exit 0)"
    return None


def build_model() -> Any:
    """The small CNN + transformer of row 1 and 3 (the GPU suite trains the same shape)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int = 64, heads: int = 4, p: float = 0.1) -> None:
            super().__init__()
            self.heads, self.p = heads, p
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.mlp = nn.Sequential(
                nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(p), nn.Linear(4 * d, d)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            p = self.p if self.training else 0.0
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
            return x + self.mlp(self.norm2(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 32, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Dropout(0.1),
            )
            self.blocks = nn.Sequential(Block(), Block())
            self.head = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.stem(x).flatten(2).transpose(1, 2)
            return self.head(self.blocks(tokens).mean(1))

    return Net()


class Workload:
    """A model, its AdamW and a fixed batch on ``device``; ``step()`` is one training step."""

    def __init__(self, model: Any, device: Any, batch: int = 64) -> None:
        import torch

        g = torch.Generator().manual_seed(0)
        self.device = device
        self.model = model.to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
        self.y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def twin(self) -> Workload:
        return Workload(copy.deepcopy(self.model), self.device, len(self.x))

    def step(self) -> None:
        import torch
        import torch.nn.functional as F

        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            logits = self.model(self.x)
        loss = -(F.log_softmax(logits.float(), 1) * F.one_hot(self.y, 10)).sum(1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def synchronizer(device: Any) -> Callable[[], None]:
    import torch

    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Seconds of ``fn()``, the device's queued work included."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def block(w: Workload, steps: int, sync: Callable[[], None]) -> float:
    """Mean seconds per step over ``steps`` consecutive steps, timed as one block."""

    def run() -> None:
        for _ in range(steps):
            w.step()

    return timed(run, sync) / steps


# --- 1: the determinism profile -------------------------------------------------------------------


def measure_profile(
    w: Workload, repeats: int, steps: int, sync: Callable[[], None]
) -> dict[str, harness.Series]:
    import seedlock

    def run(variant: str, n: int) -> float:
        if variant == "on":
            with seedlock.deterministic():
                return block(w, n, sync)
        return block(w, n, sync)

    for variant in ("off", "on"):  # warm-up: cuDNN and attention pick their kernels per mode
        run(variant, WARMUP_STEPS)
    res = {"off": harness.Series(), "on": harness.Series()}
    for order in harness.rounds(["off", "on"], repeats, label="profile"):
        for variant in order:
            res[variant].add(run(variant, steps))
        if over_budget():
            break
    return res


# --- 2: fingerprint throughput --------------------------------------------------------------------


def device_hash_function() -> tuple[str, Callable[[Any], object]]:
    """seedlock's hash of one tensor on its device, by name: the function of
    ``seedlock.audit._device_hash`` that takes one tensor (``device_hash``), else the public
    ``seedlock.audit.fingerprint`` (which uses it for a tensor off the CPU)."""
    from seedlock import audit

    try:
        from seedlock.audit import _device_hash
    except ImportError:
        _device_hash = None
    for name in ("device_hash", "hash_tensor", "fingerprint_tensor"):
        fn = getattr(_device_hash, name, None)
        if callable(fn):
            return f"`_device_hash.{name}(t)`", fn
    return "`audit.fingerprint(t)`", audit.fingerprint


def measure_fingerprint(
    size_mb: int, repeats: int, device: Any, sync: Callable[[], None]
) -> tuple[dict[str, harness.Series], int, str]:
    import torch

    from seedlock import audit
    from seedlock.audit import fingerprints

    label, hash_one = device_hash_function()
    t = torch.randn(size_mb * 2**20 // 4, device=device)
    on_device = device.type != "cpu"
    if not on_device:  # fingerprint() takes the on-device path on the CPU too (--device cpu)
        fingerprints._CPU_AS_DEVICE = True
    variants: dict[str, Callable[[], object]] = {
        "device hash": lambda: hash_one(t),
        "fingerprint": lambda: audit.fingerprint(t),
        "clone": t.clone,
    }
    for f in variants.values():  # warm-up: the allocator's blocks, the kernels
        timed(f, sync)
    res = {name: harness.Series() for name in variants}
    try:
        for names in harness.rounds(list(variants), repeats, label="fingerprint"):
            for name in names:
                f = variants[name]
                per_call = statistics.median(timed(f, sync) for _ in range(CALLS))
                res[name].add(t.nbytes / per_call / 1e9)
            if over_budget():
                break
    finally:
        fingerprints._CPU_AS_DEVICE = False
    return res, t.nbytes, label


# --- 3: traced vs untraced step -------------------------------------------------------------------


def measure_trace(
    w: Workload, repeats: int, steps: int, sync: Callable[[], None], tmp: Path
) -> tuple[dict[str, harness.Series], int]:
    """Per repeat: a first-pass trace opened on the twin; ``steps`` pairs of an untraced step
    of ``w`` and a traced step of the twin, each timed alone (the trace's opening and closing
    are not timed). Returns the series and the events of the last trace."""
    from seedlock import audit

    twin = w.twin()
    res = {"untraced": harness.Series(), "traced": harness.Series()}
    events = 0

    def pairs(n: int, record: bool) -> None:
        nonlocal events
        path = tmp / "step.trace"
        plain, traced = [], []
        with audit.trace(twin.model, path, optimizer=twin.opt, summaries=False) as tracer:
            for _ in range(n):
                plain.append(timed(w.step, sync))
                traced.append(timed(twin.step, sync))
        events = tracer.events
        path.unlink()
        if record:
            res["untraced"].add(statistics.fmean(plain))
            res["traced"].add(statistics.fmean(traced))

    pairs(WARMUP_STEPS, record=False)
    for _ in harness.rounds(["pairs"], repeats, label="trace"):
        pairs(steps, record=True)
        if over_budget():
            break
    return res, events


# --- the report -----------------------------------------------------------------------------------


def machine_lines(device: Any) -> list[str]:
    import torch

    if device.type != "cuda":
        return [f"device {device} (a CPU shake-out run: its numbers mean nothing)"]
    props = torch.cuda.get_device_properties(device)
    return [
        f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB, "
        f"{torch.cuda.device_count()} visible), CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}"
    ]


def report(
    prof: dict[str, harness.Series],
    fp: dict[str, harness.Series],
    tr: dict[str, harness.Series],
    *,
    nbytes: int,
    label: str,
    events: int,
    steps: int,
) -> list[str]:
    size = f"{nbytes / 2**20:,.0f} MB float32"
    rows = [
        harness.row(
            "CNN + transformer training step (bf16 autocast, SDPA, dropout, AdamW): "
            "`seedlock.deterministic()` on vs off",
            prof["on"],
            prof["off"],
            1e3,
            "ms",
        ),
        harness.rate_row(
            f"{label} (on-device hash) vs `t.clone()`, {size}",
            fp["device hash"],
            fp["clone"],
            "GB/s",
            amount=nbytes / 1e9,
            scale=1e3,
            added_unit="ms",
        ),
        harness.rate_row(
            f"`seedlock.audit.fingerprint(t)` vs `t.clone()`, {size}",
            fp["fingerprint"],
            fp["clone"],
            "GB/s",
            amount=nbytes / 1e9,
            scale=1e3,
            added_unit="ms",
        ),
        harness.row(
            "training step: traced (first pass, summaries=False) vs untraced",
            tr["traced"],
            tr["untraced"],
            1e3,
            "ms",
        ),
    ]
    p_ratio = prof["on"].median / prof["off"].median
    f_ratio = fp["device hash"].median / fp["clone"].median
    t_ratio = tr["traced"].median / tr["untraced"].median
    verdicts = [
        "",
        f"**determinism profile: {p_ratio:.2f}x the step without it** (criterion <= "
        f"{PROFILE_CRITERION}x): " + harness.passfail(p_ratio <= PROFILE_CRITERION),
        f"**on-device fingerprint: {fp['device hash'].median:.1f} GB/s, {f_ratio:.2f}x "
        f"`clone()`** (criterion >= {CLONE_CRITERION}x): "
        + harness.passfail(f_ratio >= CLONE_CRITERION),
        f"**traced step: {t_ratio:.2f}x untraced** ({events:,} events in a trace of {steps} "
        f"step(s); criterion <= {TRACE_CRITERION}x): "
        + harness.passfail(t_ratio <= TRACE_CRITERION),
    ]
    return rows + verdicts


def arguments() -> argparse.ArgumentParser:
    parser = harness.arguments(__doc__, 5)
    parser.add_argument("--steps", type=int, default=20, help="steps per block (default 20)")
    parser.add_argument(
        "--size-mb", type=int, default=1024, help="fingerprinted tensor, MB (default 1024)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=70.0,
        help="seconds after which each part stops after its current repeat (default 70)",
    )
    # A CPU run that only checks the script works (its numbers mean nothing).
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    if args.device == "cuda":
        missing = no_cuda_line()
        if missing is not None:
            print(missing)
            return 0
    # cuBLAS reads it at its first call: set before any CUDA work, for both sides of row 1.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    import seedlock

    device = torch.device(args.device)
    repeats, steps = max(1, args.repeats), max(1, args.steps)
    sync = synchronizer(device)
    _deadline[0] = time.perf_counter() + args.budget_s
    seedlock.seed_everything(0)
    span = harness.Span(repeats)
    harness.progress(f"bench_gpu: {device}, {repeats} repeats, {steps} steps a block")
    w = Workload(build_model(), device)
    prof = measure_profile(w, repeats, steps, sync)
    fp, nbytes, label = measure_fingerprint(max(1, args.size_mb), repeats, device, sync)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the 1 GiB tensor and its clones
    with tempfile.TemporaryDirectory(prefix="bench_gpu.") as d:
        tr, events = measure_trace(w, repeats, max(1, steps // 2), sync, Path(d))
    lines = harness.header(
        "seedlock GPU benchmark",
        harness.environment(),
        span.stop(),
        f"row 1: blocks of {steps} steps; row 2-3: {CALLS} calls per repeat (median); row 4: "
        f"{max(1, steps // 2)} untraced + traced step pairs per repeat, each step timed alone; "
        "CUBLAS_WORKSPACE_CONFIG=:4096:8 on both sides of row 1",
        machine=machine_lines(device),
    )
    lines += report(prof, fp, tr, nbytes=nbytes, label=label, events=events, steps=steps // 2 or 1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
