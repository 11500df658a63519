#!/usr/bin/env python
"""What seedlock costs at start-up and per call, measured side by side with the baselines.

    python benchmarks/bench_seeding.py [--repeats N]

Measures, in one run:

1. ``import seedlock`` against a bare interpreter (``python -c pass``): the wall time of the whole
   process, and the import alone timed inside the child with ``time.perf_counter``. The acceptance
   criterion is that ``import seedlock`` adds under 30 ms; the child also checks that no framework
   (torch, numpy, jax, tensorflow) got imported, before and after a first ``seed_everything(0)``.
2. ``import torch; import seedlock; seedlock.seed_everything(0)`` against ``import torch`` (process
   wall time), and the in-process cost of the seedlock part against the classic hand-written
   recipe (``import random, numpy; random.seed(0); np.random.seed(0); torch.manual_seed(0)``).
3. The latency of a ``seed_everything(0)`` call once torch and NumPy are imported, against the
   classic recipe.
4. When Lightning is importable, the same figures for its ``seed_everything``.

Every start-up figure comes from a fresh interpreter (``subprocess``, ``sys.executable``). Each
repeat runs every variant once, in an order shuffled per repeat, so machine noise hits all of them
equally; call latencies are interleaved in blocks inside one child per repeat. Only the standard
library is used here: the things being measured are imported by the children only.
"""

from __future__ import annotations

import functools
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script

PY = sys.executable
FRAMEWORKS = ("torch", "numpy", "jax", "tensorflow")
CRITERION_MS = 30.0
# The cheap start-ups are short next to their noise, so each repeat runs them several times; the
# torch variants run once per repeat.
LIGHT_ROUNDS = 10
# Call latency: blocks of consecutive calls, variants rotated per block.
LATENCY_BLOCKS = 50
LATENCY_CALLS = 20
LATENCY_WARMUP = 30

# --- child programs ------------------------------------------------------------------------------
# Each instrumented child prints one line "@@ <float> <float> ..." (seconds); nothing it does after
# the last perf_counter() is part of what it reports.

_FRAMEWORK_CHECK = (
    f"loaded = lambda: ','.join(m for m in {FRAMEWORKS!r} if m in sys.modules) or 'none'\n"
)

SEEDLOCK_IMPORT_CHILD = (
    "import sys, time\n"
    "t0 = time.perf_counter()\n"
    "import seedlock\n"
    "t1 = time.perf_counter()\n" + _FRAMEWORK_CHECK + "after_import = loaded()\n"
    "t2 = time.perf_counter()\n"
    "seedlock.seed_everything(0)\n"
    "t3 = time.perf_counter()\n"
    "print('@@', t1 - t0, t3 - t2, after_import, loaded())\n"
)

TORCH_CHILD = (
    "import time\n"
    "t0 = time.perf_counter()\n"
    "import torch\n"
    "t1 = time.perf_counter()\n"
    "{part}\n"
    "t2 = time.perf_counter()\n"
    "print('@@', t1 - t0, t2 - t1)\n"
)
CLASSIC_PART = (
    "import random; import numpy as np; random.seed(0); np.random.seed(0); torch.manual_seed(0)"
)
SEEDLOCK_PART = "import seedlock; seedlock.seed_everything(0)"
LIGHTNING_PART = "from {module} import seed_everything; seed_everything(0)"

LATENCY_CHILD = """
import inspect, json, random, sys, time
import numpy as np
import torch
import seedlock

def classic():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

def seedlock_call():
    seedlock.seed_everything(0)

variants = {"classic": classic, "seedlock": seedlock_call}
lightning_module = sys.argv[1] if len(sys.argv) > 1 else ""
if lightning_module:
    import importlib
    l_seed = getattr(importlib.import_module(lightning_module), "seed_everything")
    # verbose=True would log "Seed set to 0" on every call: quiet it, as a loop would.
    quiet = "verbose" in inspect.signature(l_seed).parameters

    def lightning_call():
        if quiet:
            l_seed(0, verbose=False)
        else:
            l_seed(0)

    variants["lightning"] = lightning_call

blocks, calls, warmup = (int(x) for x in sys.argv[2:5])
names = list(variants)
for name in names:
    for _ in range(warmup):
        variants[name]()
samples = {name: [] for name in names}
ns = time.perf_counter_ns
for block in range(blocks):
    k = block % len(names)
    for name in names[k:] + names[:k]:
        f, out = variants[name], samples[name]
        for _ in range(calls):
            t = ns()
            f()
            out.append(ns() - t)
print("@@", json.dumps(samples))
"""


# --- running children ----------------------------------------------------------------------------


@dataclass
class Run:
    wall: float  # seconds, parent-side perf_counter around subprocess.run
    out: str  # what the child printed after "@@ "

    @property
    def fields(self) -> list[str]:
        return self.out.split()


def run_child(code: str, *args: str) -> Run:
    t = time.perf_counter()
    proc = subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child failed (exit {proc.returncode}): {code.splitlines()[0]!r} ...")
    out = ""
    for line in proc.stdout.splitlines():
        if line.startswith("@@ "):
            out = line[3:]
    return Run(wall, out)


Thunk = Callable[[], Run]


# --- what the imports cost -----------------------------------------------------------------------


@dataclass
class Imported:
    """One line of ``-X importtime``: a module, its own time and its time with what it imported."""

    name: str
    depth: int
    self_us: float
    cum_us: float
    parent: str = ""  # the module whose import triggered this one ("" at top level)


def _importtime(code: str) -> list[Imported]:
    proc = subprocess.run(
        [PY, "-X", "importtime", "-c", code], capture_output=True, text=True, check=False
    )
    entries = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line.split(":", 1)[1].split("|")
        name = name[1:]  # one space after the bar, then two per nesting level
        depth = (len(name) - len(name.lstrip(" "))) // 2
        entries.append(Imported(name.strip(), depth, int(self_us), int(cum_us)))
    # Children are printed before their parent: a module's parent is the next line one level up.
    for i, e in enumerate(entries):
        e.parent = next((p.name for p in entries[i + 1 :] if p.depth < e.depth), "")
    return entries


# -X importtime prints a module that a lazy `importlib.import_module` pulls in at top level.
_LAZY = "a lazy seedlock import"


def importtime_breakdown(code: str, runs: int = 3, top: int = 5) -> list[str]:
    """What ``code`` imports beyond interpreter start-up: median of ``runs`` ``-X importtime``."""
    startup = {e.name for e in _importtime("pass")}
    per_run = [{e.name: e for e in _importtime(code) if e.name not in startup} for _ in range(runs)]
    # A module is imported once per process, so every module not in the start-up set is ours.
    ours = [
        Imported(
            name,
            e.depth,
            statistics.median(r[name].self_us for r in per_run if name in r),
            statistics.median(r[name].cum_us for r in per_run if name in r),
            e.parent,
        )
        for name, e in per_run[0].items()
    ]
    total = sum(e.self_us for e in ours)
    lines = [
        f"`python -X importtime -c {code!r}` (median of {runs}): {len(ours)} modules beyond "
        f"start-up, {total / 1e3:.1f} ms in all.",
        "  slowest by self time (self / cumulative ms):",
    ]
    lines += [
        f"    {e.name:<32} {e.self_us / 1e3:6.2f} / {e.cum_us / 1e3:6.2f}  (imported by "
        f"{e.parent or _LAZY})"
        for e in sorted(ours, key=lambda e: -e.self_us)[:top]
    ]
    # The outside modules seedlock itself asks for, with everything they pull in.
    direct = [
        e
        for e in ours
        if not e.name.startswith("seedlock") and (e.parent.startswith("seedlock") or not e.depth)
    ]
    lines.append("  heaviest non-seedlock imports made by seedlock modules (cumulative ms):")
    lines += [
        f"    {e.name:<32} {e.cum_us / 1e3:6.2f}  (imported by {e.parent or _LAZY})"
        for e in sorted(direct, key=lambda e: -e.cum_us)[:top]
    ]
    return lines


# --- the benchmark -------------------------------------------------------------------------------


@dataclass
class Results:
    wall: dict[str, harness.Series]  # seconds, per variant
    # `import seedlock`, seconds
    import_inproc: harness.Series = field(default_factory=harness.Series)
    # the first seed_everything, no framework imported, seconds
    first_seed_bare: harness.Series = field(default_factory=harness.Series)
    loaded_after_import: set[str] = field(default_factory=set)
    loaded_after_seed: set[str] = field(default_factory=set)
    # after `import torch`, seconds
    part_inproc: dict[str, harness.Series] = field(default_factory=dict)
    latency: dict[str, harness.Series] = field(default_factory=dict)  # ns, every call pooled
    latency_medians: dict[str, harness.Series] = field(default_factory=dict)  # ns, one per process


def variants(lightning_module: str | None) -> tuple[dict[str, Thunk], dict[str, Thunk]]:
    """(cheap start-ups, expensive start-ups); each thunk runs one fresh interpreter."""
    light: dict[str, Thunk] = {
        "bare": lambda: run_child("pass"),
        "import seedlock": lambda: run_child("import seedlock"),
        "instrumented": lambda: run_child(SEEDLOCK_IMPORT_CHILD),
    }
    parts = {"torch": "pass", "torch+classic": CLASSIC_PART, "torch+seedlock": SEEDLOCK_PART}
    if lightning_module:
        parts["torch+lightning"] = LIGHTNING_PART.format(module=lightning_module)
    heavy: dict[str, Thunk] = {
        name: functools.partial(run_child, TORCH_CHILD.format(part=part))
        for name, part in parts.items()
    }
    latency_args = (
        lightning_module or "",
        str(LATENCY_BLOCKS),
        str(LATENCY_CALLS),
        str(LATENCY_WARMUP),
    )
    heavy["latency"] = lambda: run_child(LATENCY_CHILD, *latency_args)
    return light, heavy


def record(res: Results, name: str, r: Run) -> None:
    res.wall.setdefault(name, harness.Series()).add(r.wall)
    if name == "instrumented":
        res.import_inproc.add(float(r.fields[0]))
        res.first_seed_bare.add(float(r.fields[1]))
        res.loaded_after_import.add(r.fields[2])
        res.loaded_after_seed.add(r.fields[3])
    elif name == "latency":
        for variant, ns in json.loads(r.out).items():
            res.latency.setdefault(variant, harness.Series()).values.extend(ns)
            res.latency_medians.setdefault(variant, harness.Series()).add(statistics.median(ns))
    elif name.startswith("torch"):
        res.part_inproc.setdefault(name, harness.Series()).add(float(r.fields[1]))


def measure(repeats: int, lightning_module: str | None) -> Results:
    light, heavy = variants(lightning_module)
    # The probe already imported torch, NumPy, seedlock and Lightning once (bytecode and page
    # cache are warm); the cheap variants get a few untimed runs of their own.
    harness.progress("warm-up: cheap start-ups")
    for _ in range(3):
        for fn in light.values():
            fn()
    res = Results(wall={})
    inner = random.Random(1)  # the order of the cheap variants within one of their rounds
    units = [f"light:{i}" for i in range(LIGHT_ROUNDS)] + list(heavy)
    for rep, shuffled in enumerate(harness.rounds(units, repeats, label=None)):
        for unit in shuffled:
            if unit.startswith("light:"):
                names = list(light)
                inner.shuffle(names)
                for name in names:
                    record(res, name, light[name]())
                continue
            r = heavy[unit]()
            record(res, unit, r)
            harness.progress(f"[repeat {rep + 1}/{repeats}] {unit:<16} {r.wall:6.2f} s")
    return res


def report(res: Results, info: dict[str, Any], span: harness.Span) -> list[str]:
    ms, us = 1e3, 1e-3
    lm = info["lightning_module"]
    wall, part, lat = res.wall, res.part_inproc, res.latency
    lines = harness.header(
        "seedlock start-up and seeding benchmark",
        info,
        span,
        legend=harness.cells("", "in the pairs that ran back to back"),
        machine=[f"interpreter `{PY}`"],
    )
    rows: list[tuple[str, harness.Series, harness.Series | None, float, str]] = [
        (
            "process wall: `python -c 'import seedlock'` vs `python -c pass`",
            wall["import seedlock"],
            wall["bare"],
            ms,
            "ms",
        ),
        (
            "in-process: `import seedlock` (perf_counter in the child)",
            res.import_inproc,
            None,
            ms,
            "ms",
        ),
        (
            "in-process: first `seed_everything(0)`, no framework imported",
            res.first_seed_bare,
            None,
            ms,
            "ms",
        ),
        (
            "process wall: `import torch; import seedlock; seed_everything(0)` vs `import torch`",
            wall["torch+seedlock"],
            wall["torch"],
            ms,
            "ms",
        ),
        (
            "process wall: `import torch` + classic recipe vs `import torch` (control)",
            wall["torch+classic"],
            wall["torch"],
            ms,
            "ms",
        ),
        (
            "in-process after `import torch`: `import seedlock; seed_everything(0)` "
            "vs classic recipe (with its imports)",
            part["torch+seedlock"],
            part["torch+classic"],
            ms,
            "ms",
        ),
        (
            "call latency: `seedlock.seed_everything(0)` vs classic recipe",
            lat["seedlock"],
            lat["classic"],
            us,
            "us",
        ),
    ]
    if lm:
        rows += [
            (
                f"process wall: `import torch; from {lm} import seed_everything; "
                "seed_everything(0)` vs `import torch`",
                wall["torch+lightning"],
                wall["torch"],
                ms,
                "ms",
            ),
            (
                "in-process after `import torch`: Lightning import + `seed_everything(0)` "
                "vs classic recipe (with its imports)",
                part["torch+lightning"],
                part["torch+classic"],
                ms,
                "ms",
            ),
            (
                "call latency: Lightning `seed_everything(0, verbose=False)` vs classic recipe",
                lat["lightning"],
                lat["classic"],
                us,
                "us",
            ),
            (
                "in-process after `import torch`: seedlock part vs Lightning part",
                part["torch+seedlock"],
                part["torch+lightning"],
                ms,
                "ms",
            ),
            ("call latency: seedlock vs Lightning", lat["seedlock"], lat["lightning"], us, "us"),
        ]
    lines += [harness.row(m, this, base, scale=sc, unit=u) for m, this, base, sc, u in rows]
    lines.append("")
    lo, hi = wall["torch"].iqr()
    lines.append(
        f"`import torch` alone varies by {(hi - lo) * ms:.0f} ms (p25 - p75) between processes: "
        "differences in the torch process-wall rows smaller than that are noise; the in-process "
        "rows measure the same thing precisely."
    )
    if not lm:
        lines.append(harness.LIGHTNING_SKIPPED)

    inproc, added_wall = res.import_inproc, harness.paired(wall["import seedlock"], wall["bare"])
    lo, hi = inproc.iqr()
    ok = inproc.median * ms < CRITERION_MS and added_wall.median * ms < CRITERION_MS
    lines += [
        f"**import seedlock adds {inproc.median * ms:.1f} ms** in-process "
        f"(p25 - p75 {lo * ms:.1f} - {hi * ms:.1f}, min {min(inproc.values) * ms:.1f}, "
        f"max {max(inproc.values) * ms:.1f}) and {added_wall.median * ms:+.1f} ms of process "
        f"wall time to a bare interpreter; criterion < {CRITERION_MS:.0f} ms: "
        + harness.passfail(ok),
        f"frameworks in sys.modules after `import seedlock`: "
        f"{', '.join(sorted(res.loaded_after_import))}; after a first `seed_everything(0)`: "
        f"{', '.join(sorted(res.loaded_after_seed))} (checked: {', '.join(FRAMEWORKS)})",
    ]
    if not res.loaded_after_import == res.loaded_after_seed == {"none"}:
        lines.append("WARNING: seedlock imported a framework; it must not.")
    lines.append(
        "call latency, spread of the per-process medians: "
        + "; ".join(f"{k} {harness.fmt(v, us, 'us')}" for k, v in res.latency_medians.items())
    )
    lines += [
        "",
        *importtime_breakdown("import seedlock"),
        *importtime_breakdown("import seedlock; seedlock.seed_everything(0)"),
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = harness.arguments(__doc__, 6).parse_args(argv)
    repeats = max(1, args.repeats)

    harness.progress("probing the environment (also warms the bytecode and file caches) ...")
    info = harness.environment_of_child(lightning=("seed_everything",))
    how = (
        f": cheap start-ups {repeats * LIGHT_ROUNDS} times each, torch start-ups {repeats} times "
        f"each, {repeats * LATENCY_BLOCKS * LATENCY_CALLS} calls each for latency; variants "
        "interleaved"
    )
    span = harness.Span(repeats, how)
    res = measure(repeats, info["lightning_module"])
    print("\n".join(report(res, info, span.stop())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
