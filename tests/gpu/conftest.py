"""The GPU suite: what seedlock promises on a CUDA device, checked on one.

Every test in this folder is marked ``gpu`` and is skipped, with the reason, where torch is
missing or ``torch.cuda.is_available()`` is false. ``bash tests/gpu/run.sh`` runs the suite and
``benchmarks/bench_gpu.py`` in one command (see docs/determinism.md).

Most checks run child interpreters: seeding, ``CUBLAS_WORKSPACE_CONFIG`` and CUDA's lazy start
can only be judged from a fresh process. :func:`child` runs one with a time limit, its output in
files (a grandchild that keeps a pipe open cannot hang the test), in a session of its own so
that a timeout ends the whole process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CHILD_TIMEOUT = 120  # seconds for one child interpreter (torch import and CUDA start included)
# What a child must not inherit from the test process: a root seed, a hash seed and the cuBLAS
# workspace setting (the checks set it themselves, or launch through `seedlock run`).
NOT_INHERITED = ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG")


def _skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "needs a CUDA device (torch.cuda.is_available() is False)"
    return None


SKIP_REASON = _skip_reason()


@pytest.hookimpl(tryfirst=True)  # before `-m gpu` deselects: every test here carries the mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in Path(str(item.path)).resolve().parents:
            continue
        item.add_marker(pytest.mark.gpu)
        if SKIP_REASON is not None:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@dataclass(frozen=True)
class Child:
    """A finished child interpreter: its exit status, output and wall time."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> Child:
        """Itself when it exited 0, else a failure with the end of its output."""
        if self.returncode != 0:
            pytest.fail(
                f"{' '.join(self.argv)} exited {self.returncode} after {self.seconds:.1f} s\n"
                f"--- stdout (end) ---\n{self.stdout[-3000:]}\n"
                f"--- stderr (end) ---\n{self.stderr[-6000:]}",
                pytrace=False,
            )
        return self

    def tagged(self, tag: str = "@@") -> list[str]:
        """The payloads of the stdout lines that start with ``tag`` and a space."""
        prefix = tag + " "
        return [line[len(prefix) :] for line in self.stdout.splitlines() if line.startswith(prefix)]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK_")}
    for name in NOT_INHERITED:
        env.pop(name, None)
    env.setdefault("OMP_NUM_THREADS", "2")
    env.update(extra or {})
    return env


def run_child(
    argv: Sequence[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = CHILD_TIMEOUT,
) -> Child:
    """Run ``argv`` in ``cwd`` with :func:`child_env` (plus ``env``), at most ``timeout``
    seconds; a timeout kills its process group and fails the test."""
    argv = tuple(str(a) for a in argv)
    stamp = f"{time.monotonic_ns()}"
    out_path, err_path = cwd / f".child-{stamp}.out", cwd / f".child-{stamp}.err"
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            tail = err_path.read_bytes().decode(errors="replace")[-4000:]
            pytest.fail(f"{' '.join(argv)} ran over {timeout:.0f} s:\n{tail}", pytrace=False)
    seconds = time.perf_counter() - start
    stdout = out_path.read_bytes().decode(errors="replace")
    stderr = err_path.read_bytes().decode(errors="replace")
    return Child(argv, proc.returncode, stdout, stderr, seconds)


@pytest.fixture
def child(tmp_path: Path) -> Callable[..., Child]:
    """``child(argv, *, env=None, timeout=CHILD_TIMEOUT)``: :func:`run_child` in ``tmp_path``."""

    def run(
        argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = CHILD_TIMEOUT
    ) -> Child:
        return run_child(argv, tmp_path, env=env, timeout=timeout)

    return run


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str, str], Path]:
    """``script(name, code)``: writes ``code`` to ``tmp_path / name`` and returns the path."""

    def write(name: str, code: str) -> Path:
        path = tmp_path / name
        path.write_text(code, encoding="utf-8")
        return path

    return write


@pytest.fixture
def seedlock_cmd() -> tuple[str, ...]:
    """``python -m seedlock`` with this interpreter (the console script may not be on PATH)."""
    return (sys.executable, "-m", "seedlock")


@pytest.fixture
def deterministic_python(seedlock_cmd: tuple[str, ...]) -> tuple[str, ...]:
    """``seedlock run --seed 0 --deterministic`` (no manifest, quiet) of this interpreter: the
    child gets ``CUBLAS_WORKSPACE_CONFIG`` before it starts and the determinism profile on."""
    return (*seedlock_cmd, "run", "--seed", "0", "--deterministic", "--no-manifest", "-q",
            "--", sys.executable)  # fmt: skip
