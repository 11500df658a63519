"""Run manifests: what a run was seeded with, what was in effect, and on what it ran.

A manifest is a JSON document (schema: ``manifest.schema.json`` beside this file, documented in
the README). :func:`environment` collects what any process can see about the machine and the
project; :func:`process_record` is what a seeded child reports about itself at exit (the
determinism flags and thread counts *in effect inside it*, the torch build it actually loaded);
``seedlock run`` joins them with the seed and the command.

:func:`diff` compares two manifests and ranks every difference by how likely it is to change
results (see :data:`RISK_RULES`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping

from seedlock import _dists, _startup, _tf32

# Everything else is imported where it is used (each such import is marked "start-up"): a seeded
# child imports this module at start-up (seedlock run with a manifest), where typing, datetime,
# json, platform, subprocess and pathlib each cost more than this module
# (benchmarks/bench_cli.py measures the start-up of seeded interpreters).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ENV_WHITELIST",
    "NCCL_PREFIX",
    "REDUCED_PRECISION",
    "RISK_RULES",
    "SCHEMA",
    "THREAD_VARS",
    "Difference",
    "diff",
    "environment",
    "flatten",
    "nccl_version",
    "process_record",
    "read",
    "reduced_precision",
    "timestamp",
]

SCHEMA = "seedlock.manifest"

#: The environment variables that pin the thread counts of the math libraries.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
VERSION = 1

#: Environment variables recorded: those that can change numbers, threads or devices.
ENV_WHITELIST = (
    "PYTHONHASHSEED",
    "SEEDLOCK_SEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
    "CUDNN_DETERMINISTIC",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "ATEN_CPU_CAPABILITY",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "NUMEXPR_NUM_THREADS",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "XLA_FLAGS",
    "JAX_ENABLE_X64",
    "CUPY_SEED",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "FLASH_ATTENTION_DETERMINISTIC",
)
#: Every environment variable with this prefix is recorded too (NCCL's settings).
NCCL_PREFIX = "NCCL_"


def timestamp(seconds: float) -> str:
    """A ``time.time()`` value as recorded in manifests: ISO 8601, UTC, milliseconds."""
    import datetime  # start-up

    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def _run(argv: list[str], cwd: str | None = None) -> str | None:
    import subprocess  # start-up

    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=cwd, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform  # start-up

    return platform.processor() or platform.machine()


def _gpus() -> list[dict[str, str]]:
    """GPUs from nvidia-smi (name, driver, memory); UUIDs and serials are never recorded."""
    out = _run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    )
    if not out:
        return []
    gpus = []
    for line in out.splitlines():
        name, driver, memory = (part.strip() for part in line.split(",", 2))
        gpus.append({"name": name, "driver": driver, "memory": memory})
    return gpus


def _git(cwd: str) -> dict[str, Any] | None:
    import hashlib  # start-up

    commit = _run(["git", "rev-parse", "HEAD"], cwd)
    if commit is None:
        return None
    status = _run(["git", "status", "--porcelain"], cwd) or ""
    diff_text = _run(["git", "diff", "HEAD"], cwd) or ""
    return {
        "commit": commit,
        "branch": _run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd),
        "dirty": bool(status),
        "diff_sha256": hashlib.sha256(diff_text.encode()).hexdigest() if diff_text else None,
    }


def _packages() -> dict[str, str]:
    """Installed distributions, normalised name -> version."""
    if _dists.plain_path():
        return dict(sorted(_dists.distributions().items()))
    from importlib.metadata import distributions  # start-up

    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower().replace("-", "_").replace(".", "_")] = dist.version
    return dict(sorted(found.items()))


def environment(cwd: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What this process sees of the machine and the project (no seed, no command). ``env``:
    the environment the run's command gets (default: this process's)."""
    import platform  # start-up

    cwd = cwd or os.getcwd()
    variables = os.environ if env is None else env
    libc = platform.libc_ver()
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "libc": f"{libc[0]} {libc[1]}".strip() or None,
            "host": platform.node(),
        },
        "cpu": {"model": _cpu_model(), "count": os.cpu_count()},
        "gpus": _gpus(),
        "packages": _packages(),
        "git": _git(cwd),
        "env": _recorded_env(variables),
    }


def _recorded_env(variables: Mapping[str, str]) -> dict[str, str]:
    """The variables of :data:`ENV_WHITELIST`, and every ``NCCL_*`` one: NCCL's algorithm,
    protocol and channels decide the order in which collectives add up across ranks."""
    found = {k: variables[k] for k in ENV_WHITELIST if k in variables}
    found.update(sorted((k, v) for k, v in variables.items() if k.startswith(NCCL_PREFIX)))
    return found


def nccl_version(torch: Any) -> str | None:
    """The NCCL torch was built with, or ``None`` (a CPU build has none); ncclGetVersion starts
    no device."""
    try:
        number = int(torch._C._nccl_version())
        suffix = torch._C._nccl_version_suffix().decode()
    except Exception:  # no NCCL in this build (AttributeError), or an odd one
        return None
    return f"{number >> 32}.{(number >> 16) & 0xFFFF}.{number & 0xFFFF}{suffix}"


#: The cuBLAS switches that let float16 / bfloat16 matmuls reduce in lower precision (on by
#: default): record name -> attribute of ``torch.backends.cuda.matmul``.
REDUCED_PRECISION = {
    "cuda.matmul.allow_fp16_reduced_precision_reduction": "allow_fp16_reduced_precision_reduction",
    "cuda.matmul.allow_bf16_reduced_precision_reduction": "allow_bf16_reduced_precision_reduction",
    "cuda.matmul.allow_fp16_accumulation": "allow_fp16_accumulation",
}


def reduced_precision(torch: Any) -> dict[str, bool | None]:
    """The :data:`REDUCED_PRECISION` switches in effect; ``None`` where this torch lacks one."""
    return {name: _flag(torch.backends.cuda.matmul, a) for name, a in REDUCED_PRECISION.items()}


def _flag(owner: Any, attribute: str) -> bool | None:
    try:
        return bool(getattr(owner, attribute))
    except Exception:  # absent in this torch (AttributeError) or unreadable
        return None


def process_record() -> dict[str, Any]:
    """What a process reports about itself: determinism in effect, threads, loaded frameworks.

    Imports nothing: a framework the program never imported is reported as not loaded.
    """
    fixed, value, _ = _startup.read_hash_seed()
    record: dict[str, Any] = {
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "rank": os.environ.get("RANK"),
        "hash_seed": value if fixed else None,
        "threads": {k: os.environ.get(k) for k in THREAD_VARS},
        "torch": None,
        "determinism": {},
    }
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        b = torch.backends
        record["threads"]["torch"] = torch.get_num_threads()
        record["torch"] = {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": b.cudnn.version() if b.cudnn.is_available() else None,
            "cpu_capability": b.cpu.get_cpu_capability() if hasattr(b, "cpu") else None,
            "cuda_initialized": torch.cuda.is_initialized(),
            "nccl": nccl_version(torch),
        }
        tf32 = _tf32.describe(torch)
        record["determinism"] = {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn.deterministic": b.cudnn.deterministic,
            "cudnn.benchmark": b.cudnn.benchmark,
            # Read through _tf32: once a program uses torch's newer TF32 attributes, reading
            # the legacy switches raises.
            "cuda.matmul.allow_tf32": tf32["matmul"] == "tf32",
            "cudnn.allow_tf32": tf32["cudnn"] == "tf32",
            "float32_matmul_precision": tf32["float32_matmul_precision"],
            "tf32_api": tf32["api"],
            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            **reduced_precision(torch),
        }
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        record["numpy"] = getattr(numpy, "__version__", None)
    return record


#: No manifest seedlock writes is nested deeper (processes.0.determinism.<flag> is 4).
MAX_DEPTH = 16
#: Far above any manifest (the package list of a large environment is some 100 kB).
MAX_BYTES = 64 * 1024 * 1024


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a manifest, checking that it is one (``ValueError`` if not)."""
    import json  # start-up

    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path}: larger than any manifest ({MAX_BYTES} bytes at most)")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError(f"{path}: not a seedlock manifest (nested too deeply)") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f'{path}: not a seedlock manifest (no "schema": {SCHEMA!r})')
    version = data.get("version")
    if type(version) is not int or not 1 <= version <= VERSION:
        raise ValueError(f"{path}: manifest version {str(version)[:20]!r} is not supported")
    if _depth(data) > MAX_DEPTH:
        raise ValueError(f"{path}: not a seedlock manifest (nested too deeply)")
    return data


def _depth(value: Any) -> int:
    """Nesting depth, without recursion (a hostile file may nest as deep as JSON allows)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


# -- diff ------------------------------------------------------------------------------------

_NCCL_ORDER = "NCCL sums across ranks in another order (algorithm, protocol, channels)"

#: (key prefix, risk, why), first match wins. Keys are dotted paths into the manifest.
RISK_RULES: tuple[tuple[str, str, str], ...] = (
    ("seed.deterministic", "high", "the determinism profile was on in one run only"),
    ("seed.", "high", "a different seed draws different numbers"),
    ("processes.*.hash_seed", "high", "set and dict order of str keys change"),
    ("processes.*.seeded.", "high", "a process's generators got other seeds"),
    ("processes.*.determinism.", "high", "determinism switches change which kernels run"),
    ("processes.*.threads.", "high", "float reductions split across threads change bits"),
    ("processes.*.torch.version", "high", "kernels and RNG algorithms change between releases"),
    ("processes.*.torch.cuda", "high", "CUDA versions change kernels"),
    ("processes.*.torch.cudnn", "high", "cuDNN versions change convolution algorithms"),
    ("processes.*.torch.cpu_capability", "high", "vectorised CPU kernels (randn, sums) differ"),
    ("processes.*.torch.nccl", "high", _NCCL_ORDER),
    ("processes.*.torch", "medium", "the process loaded torch differently"),
    ("packages.torch", "high", "kernels and RNG algorithms change between releases"),
    ("gpus.*.name", "high", "another GPU model runs other kernels"),
    ("gpus.*.driver", "medium", "another driver"),
    ("gpus.*.memory", "medium", "another GPU memory size"),
    ("gpus", "high", "another GPU count or model"),
    ("env.PYTHONHASHSEED", "high", "set and dict order of str keys change"),
    ("env.CUBLAS_WORKSPACE_CONFIG", "high", "cuBLAS picks other reduction orders"),
    ("env.ATEN_CPU_CAPABILITY", "high", "vectorised CPU kernels (randn, sums) differ"),
    ("env.OMP_NUM_THREADS", "high", "float reductions split across threads change bits"),
    ("env.MKL_NUM_THREADS", "high", "float reductions split across threads change bits"),
    ("env.CUDA_VISIBLE_DEVICES", "high", "another device set"),
    ("env.NCCL_ALGO", "high", _NCCL_ORDER),
    ("env.NCCL_PROTO", "high", _NCCL_ORDER),
    ("env.NCCL_MIN_NCHANNELS", "high", _NCCL_ORDER),
    ("env.NCCL_MAX_NCHANNELS", "high", _NCCL_ORDER),
    ("env.", "medium", "an environment variable that can affect numerics"),
    ("git.commit", "high", "the code changed"),
    ("git.diff_sha256", "high", "uncommitted code changed"),
    ("git.dirty", "high", "uncommitted code changed"),
    ("cpu.model", "high", "another CPU can run other vectorised kernels"),
    ("cpu.count", "high", "default thread counts follow the core count"),
    ("packages.", "medium", "another library version"),
    ("python.version", "medium", "another interpreter"),
    ("platform.libc", "medium", "another libc (libm) can round differently"),
    ("platform.host", "low", "another machine name"),
    ("platform.", "medium", "another operating system"),
    ("command.start", "low", "time"),
    ("command.end", "low", "time"),
    ("command.cwd", "low", "another working directory"),
    ("python.executable", "low", "another interpreter path"),
    ("git.branch", "low", "another branch name"),
    ("processes.*.pid", "low", "process ids always differ"),
    ("command.", "medium", "the command differs"),
    ("processes.", "medium", "a process reported differently"),
    ("helper_processes", "low", "libraries started other helper processes"),
)
_RANK = {"high": 0, "medium": 1, "low": 2}


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted-path leaves of a nested manifest (lists are indexed: ``gpus.0.name``). An empty
    dict or list has no leaves: ``env: {}`` and a missing ``env`` read the same."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}{key}.")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from flatten(item, f"{prefix}{i}.")
    else:
        yield prefix[:-1], value


def _matches(key: str, pattern: str) -> bool:
    """``a.*.c`` matches ``a.0.c`` and what lies below it; ``a.`` matches only below ``a``."""
    parts, want = key.split("."), pattern.rstrip(".").split(".")
    deeper = pattern.endswith(".")
    if len(parts) < len(want) + deeper:
        return False
    return all(w in ("*", p) for w, p in zip(want, parts[: len(want)], strict=True))


def _risk(key: str) -> tuple[str, str]:
    for pattern, risk, why in RISK_RULES:
        if _matches(key, pattern):
            return risk, why
    return "medium", "other"


if TYPE_CHECKING:
    _Fields = dict[str, Any]
else:
    _Fields = dict


class Difference(_Fields):
    """One differing key: ``key``, ``a``, ``b``, ``risk`` (high/medium/low), ``why``."""


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: same type (``1``, ``1.0`` and ``true`` differ), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """Every key whose value differs between two manifests, highest risk first."""
    left, right = dict(flatten(a)), dict(flatten(b))
    found = []
    for key in sorted(set(left) | set(right)):
        if key in ("schema", "version"):
            continue
        va, vb = left.get(key), right.get(key)
        if _same(va, vb) or _null_above_leaves(key, left, right):
            continue
        risk, why = _risk(key)
        found.append(Difference(key=key, a=va, b=vb, risk=risk, why=why))
    found.sort(key=lambda d: (_RANK[d["risk"]], d["key"]))
    return found


def _null_above_leaves(key: str, left: dict[str, Any], right: dict[str, Any]) -> bool:
    """``git: null`` on one side, ``git.commit`` & co. on the other: the leaves below say it
    all, so the null itself is no difference of its own."""
    for mine, other in ((left, right), (right, left)):
        if key in mine and key not in other and mine[key] is None:
            below = key + "."
            return any(k.startswith(below) for k in other)
    return False
