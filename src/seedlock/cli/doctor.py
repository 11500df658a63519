"""``seedlock doctor``: this environment's nondeterminism risks, each with a severity and a fix.

It imports torch (when installed) to read its build and defaults; nothing is changed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from dataclasses import asdict, dataclass

from seedlock import _tf32
from seedlock.derivation import ENV_VAR
from seedlock.manifest import NCCL_PREFIX, THREAD_VARS, nccl_version, reduced_precision
from seedlock.seeding import hash_seed

__all__ = ["Finding", "add_arguments", "findings", "run"]

_ORDER = {"high": 0, "medium": 1, "low": 2, "ok": 3}


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str  # high | medium | low | ok
    summary: str
    fix: str = ""


def _hash_seed() -> Finding:
    hs = hash_seed()
    if hs.fixed:
        return Finding("hash-seed", "ok", f"str hashing is fixed (PYTHONHASHSEED={hs.value})")
    return Finding(
        "hash-seed",
        "medium",
        "str hashing is randomised: iterating a set of str (or anything ordered by hash) gives "
        "another order in every process",
        "launch with `seedlock run` (sets PYTHONHASHSEED) or export PYTHONHASHSEED=0; setting it "
        "inside Python does nothing",
    )


def _threads() -> Finding:
    pinned = [k for k in THREAD_VARS if k in os.environ]
    if pinned:
        return Finding("threads", "ok", f"thread count pinned ({', '.join(pinned)})")
    return Finding(
        "threads",
        "medium",
        f"thread count not pinned: libraries use {os.cpu_count()} threads here, and float "
        "reductions split across another number of threads (another machine, a container "
        "limit) give other bits",
        "export OMP_NUM_THREADS=<n> (or torch.set_num_threads(n)) with the same n everywhere",
    )


def _torch() -> list[Finding]:
    if importlib.util.find_spec("torch") is None:
        return [Finding("torch", "ok", "torch is not installed")]
    import torch  # heavy, and optional: imported only once find_spec has found it

    b = torch.backends
    found = []
    capability = b.cpu.get_cpu_capability() if hasattr(b, "cpu") else "unknown"
    if "ATEN_CPU_CAPABILITY" not in os.environ:
        found.append(
            Finding(
                "cpu-capability",
                "medium",
                f"torch picks its vectorised CPU kernels from the CPU ({capability} here): "
                "torch.randn and float sums give other bits on a machine with another capability",
                "export ATEN_CPU_CAPABILITY to one value every machine supports (e.g. avx2)",
            )
        )
    found.append(
        Finding(
            "deterministic-algorithms",
            "ok" if torch.are_deterministic_algorithms_enabled() else "low",
            "deterministic algorithms are off by default: ops with a nondeterministic kernel "
            "(CUDA atomics: index_add, scatter_add, interpolate backward ...) may vary",
            "seedlock.deterministic() or `seedlock run --deterministic`; "
            "seedlock.determinism.explain(op) tells which ops are affected",
        )
    )
    if b.cudnn.benchmark:
        found.append(
            Finding(
                "cudnn-benchmark",
                "high",
                "cudnn.benchmark is on: cuDNN times several algorithms and keeps the fastest, "
                "which can differ from run to run",
                "torch.backends.cudnn.benchmark = False (the determinism profile does it)",
            )
        )
    if torch.cuda.is_available():
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            found.append(
                Finding(
                    "cublas-workspace",
                    "high",
                    "CUBLAS_WORKSPACE_CONFIG is not set: cuBLAS may reduce in a different order "
                    "from run to run, and the variable is read only once, at the first cuBLAS call",
                    "export CUBLAS_WORKSPACE_CONFIG=:4096:8 before starting Python "
                    "(`seedlock run --deterministic` does)",
                )
            )
        tf32 = _tf32.describe(torch)
        if "tf32" in (tf32["matmul"], tf32["cudnn"]):
            found.append(
                Finding(
                    "tf32",
                    "medium",
                    "TF32 is allowed (cudnn.allow_tf32 is on by default): float32 convolutions "
                    "and matmuls round to 10-bit mantissas on Ampere and newer, so results "
                    "differ between GPU generations",
                    "seedlock.deterministic() switches TF32 off unless tf32=True",
                )
            )
    found += [_reduced_precision(torch), _nccl(torch)]
    if os.environ.get("CUDA_LAUNCH_BLOCKING") == "1":
        found.append(
            Finding(
                "cuda-launch-blocking",
                "low",
                "CUDA_LAUNCH_BLOCKING=1 slows every CUDA call and buys no determinism",
                "unset CUDA_LAUNCH_BLOCKING (keep it for debugging CUDA errors only)",
            )
        )
    found.append(
        Finding(
            "torch-compile-random",
            "low",
            f"torch {torch.__version__}: code compiled with torch.compile (Inductor) draws random "
            "numbers (dropout, rand) with its own kernels, so compiled and eager runs differ",
            "torch._inductor.config.fallback_random = True "
            "(seedlock.deterministic(fallback_random=True))",
        )
    )
    return found


def _reduced_precision(torch: object) -> Finding:
    flags = reduced_precision(torch)
    shown = ", ".join(f"{name.rsplit('.', 1)[1]}={value}" for name, value in flags.items())
    allowed = any(flags.values())
    cuda = bool(torch.cuda.is_available())  # type: ignore[attr-defined]
    return Finding(
        "reduced-precision",
        "medium" if allowed and cuda else "ok",
        f"cuBLAS reduced-precision switches: {shown}"
        + (
            ": float16 / bfloat16 matmuls may reduce in lower precision, with results that "
            "depend on the GPU and the cuBLAS version"
            if allowed
            else ""
        )
        + ("" if cuda else " (no CUDA device here)"),
        "set the same values everywhere (torch.backends.cuda.matmul."
        "allow_fp16_reduced_precision_reduction = False, and the bf16 one) and compare "
        "manifests with `seedlock diff`",
    )


def _nccl(torch: object) -> Finding:
    variables = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(NCCL_PREFIX))
    version = nccl_version(torch)
    if version is None:
        shown = f" ({', '.join(variables)} set)" if variables else ""
        return Finding("nccl", "ok", f"torch is not built with NCCL: no NCCL collectives{shown}")
    pinned = {"NCCL_ALGO", "NCCL_PROTO"} <= {v.split("=", 1)[0] for v in variables}
    return Finding(
        "nccl",
        "ok" if pinned else "low",
        f"NCCL {version}; "
        + (", ".join(variables) if variables else "no NCCL_* variable set")
        + ("" if pinned else ": NCCL picks its algorithm and protocol from the topology and "
           "message size, so all-reduce sums across ranks in another order elsewhere"),
        "export the same NCCL_ALGO and NCCL_PROTO (e.g. Ring, Simple) on every machine",
    )  # fmt: skip


def findings() -> list[Finding]:
    """Every check, riskiest first."""
    found = [_hash_seed(), _threads(), *_torch()]
    if ENV_VAR not in os.environ:
        found.append(
            Finding(
                "root-seed",
                "low",
                "no SEEDLOCK_SEED in the environment: this process was not started by "
                "`seedlock run`, so nothing here is seeded until the program seeds itself",
                "seedlock run -- python train.py, or seedlock.seed_everything(seed) first thing",
            )
        )
    return sorted(found, key=lambda f: _ORDER[f.severity])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def run(args: argparse.Namespace) -> int:
    found = findings()
    if args.json:
        print(json.dumps([asdict(f) for f in found], indent=2))
        return 0
    for f in found:
        print(f"[{f.severity:>6}] {f.check}: {f.summary}")
        if f.fix and f.severity != "ok":
            print(f"         fix: {f.fix}")
    risky = sum(f.severity in ("high", "medium") for f in found)
    print(f"{risky} risk(s) of medium or high severity")
    return 0
