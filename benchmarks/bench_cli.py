#!/usr/bin/env python
"""Start-up cost of `seedlock run`: `seedlock run -- python -c pass` vs `python -c pass`, and of
`--deterministic` (the determinism profile switched on in the child) next to a plain run, and of
torch's own switch (`torch.use_deterministic_algorithms(True)`, which imports Inductor's config)
next to `import torch`.

    python benchmarks/bench_cli.py [--repeats N]

Every variant is a fresh process timed by this script around subprocess.run; the variants run
interleaved, in a shuffled order per repeat, so machine noise hits all alike. The target is
under 80 ms of extra start-up for `seedlock run` (with its manifest: the manifest is collected
while the child runs, but a child as short as `pass` waits for it).

seedlock's modules are byte-compiled first (``compileall``): with ``PYTHONDONTWRITEBYTECODE`` set,
or right after an edit, every start would otherwise compile them again, which is not what an
installed seedlock costs. The runs happen in an empty temporary folder (no git repository: inside
one, the manifest also reads the git fields).
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import _harness as harness  # benchmarks/ is on sys.path when run as a script

BIN = Path(sys.executable).parent
SEEDLOCK = str(BIN / "seedlock")
PY = [sys.executable, "-c", "pass"]
VARIANTS = {
    "python -c pass": PY,
    "seedlock run --no-manifest -- python -c pass": [SEEDLOCK, "run", "-q", "--seed", "1",
                                                     "--no-manifest", "--", *PY],
    "seedlock run -- python -c pass (manifest)": [SEEDLOCK, "run", "-q", "--seed", "1", "--", *PY],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "seedlock run -- python -c 'import torch' (manifest)": [SEEDLOCK, "run", "-q", "--seed", "1",
                                                            "--", sys.executable, "-c",
                                                            "import torch"],
    "python -c 'import torch; torch.use_deterministic_algorithms(True)'": [
        sys.executable, "-c", "import torch; torch.use_deterministic_algorithms(True)"],
    "seedlock run --deterministic -- python -c 'import torch' (manifest)": [
        SEEDLOCK, "run", "-q", "--seed", "1", "--deterministic", "--", sys.executable, "-c",
        "import torch"],
}  # fmt: skip
TARGET_MS = 80.0  # what `seedlock run` (with its manifest) may add to `python -c pass`
BASELINE = {
    "seedlock run --no-manifest -- python -c pass": "python -c pass",
    "seedlock run -- python -c pass (manifest)": "python -c pass",
    "seedlock run -- python -c 'import torch' (manifest)": "python -c 'import torch'",
    "python -c 'import torch; torch.use_deterministic_algorithms(True)'":
        "python -c 'import torch'",
    "seedlock run --deterministic -- python -c 'import torch' (manifest)":
        "seedlock run -- python -c 'import torch' (manifest)",
}  # fmt: skip


def timed(argv: list[str], cwd: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    args = harness.arguments(__doc__, 15).parse_args(argv)
    repeats = max(1, args.repeats)
    import seedlock

    harness.progress("probing the environment ...")
    info = harness.environment_of_child()
    compileall.compile_dir(os.path.dirname(seedlock.__file__), quiet=1)
    times = {name: harness.Series() for name in VARIANTS}
    with tempfile.TemporaryDirectory() as cwd:
        for command in VARIANTS.values():  # warm the file cache once
            timed(command, cwd)
        span = harness.Span(repeats)
        for names in harness.rounds(list(VARIANTS), repeats):
            for name in names:
                times[name].add(timed(VARIANTS[name], cwd))
        span.stop()
    lines = harness.header("seedlock run start-up benchmark", info, span)
    for name, this in times.items():
        base = BASELINE.get(name)
        measure = f"`{name}` vs `{base}`" if base else f"`{name}`"
        lines.append(harness.row(measure, this, times[base] if base else None, 1e3, "ms"))
    manifest = "seedlock run -- python -c pass (manifest)"
    extra = (times[manifest].median - times["python -c pass"].median) * 1e3
    lines += [
        "",
        f"**seedlock run adds {extra:.1f} ms** to `python -c pass` (manifest included); "
        f"target < {TARGET_MS:.0f} ms: " + harness.passfail(extra < TARGET_MS),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
