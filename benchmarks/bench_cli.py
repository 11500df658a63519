"""Start-up cost of `seedlock run`: `seedlock run -- python -c pass` vs `python -c pass`.

    python benchmarks/bench_cli.py [--repeats N]

Every variant is a fresh process timed by this script around subprocess.run; the variants run
interleaved, in a shuffled order per repeat, so machine noise hits all alike. The target is
under 80 ms of extra start-up for `seedlock run` (with its manifest: the manifest is collected
while the child runs, but a child as short as `pass` waits for it).

seedlock's modules are byte-compiled first (``compileall``): with ``PYTHONDONTWRITEBYTECODE`` set,
or right after an edit, every start would otherwise compile them again, which is not what an
installed seedlock costs. The runs happen in an empty temporary folder (no git repository: the
manifest's git fields cost ~10 ms more inside one).
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
}  # fmt: skip
BASELINE = {
    "seedlock run --no-manifest -- python -c pass": "python -c pass",
    "seedlock run -- python -c pass (manifest)": "python -c pass",
    "seedlock run -- python -c 'import torch' (manifest)": "python -c 'import torch'",
}


def timed(argv: list[str], cwd: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import seedlock

    compileall.compile_dir(os.path.dirname(seedlock.__file__), quiet=1)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    order = list(VARIANTS)
    shuffle = random.Random(0)
    with tempfile.TemporaryDirectory() as cwd:
        for name in order:  # warm the file cache once
            timed(VARIANTS[name], cwd)
        for r in range(args.repeats):
            shuffle.shuffle(order)
            for name in order:
                times[name].append(timed(VARIANTS[name], cwd))
            print(f"[repeat {r + 1}/{args.repeats}]", file=sys.stderr)
    med = {name: statistics.median(t) * 1000 for name, t in times.items()}
    print("# seedlock run start-up benchmark\n")
    print(f"- Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {args.repeats} repeats, variants interleaved\n")  # fmt: skip
    print("| command | median ms | baseline | baseline ms | ratio | added ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in VARIANTS:
        base = BASELINE.get(name)
        if base is None:
            print(f"| `{name}` | {med[name]:.1f} | | | | |")
            continue
        added = med[name] - med[base]
        print(f"| `{name}` | {med[name]:.1f} | `{base}` | {med[base]:.1f} | "
              f"{med[name] / med[base]:.2f}x | {added:+.1f} |")  # fmt: skip
    extra = med["seedlock run -- python -c pass (manifest)"] - med["python -c pass"]
    verdict = "PASS" if extra < 80 else "FAIL"
    print(f"\n**seedlock run adds {extra:.1f} ms** to `python -c pass` (manifest included); "
          f"target < 80 ms: {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
