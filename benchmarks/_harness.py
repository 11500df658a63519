"""What every benchmark here shares: per-repeat series and the table rows made of them, the
report's header, progress lines, shuffled rounds, timing helpers, a cProfile helper and where
Lightning keeps the functions compared against.

The scripts import it as ``harness`` (``import _harness as harness``: ``benchmarks/`` is on
``sys.path`` when one runs as a script). Only the standard library is imported here at module
level, so a script that keeps torch out of its own process (``bench_seeding.py``) can use it
too; :func:`environment` imports torch, NumPy and seedlock when it is called.
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import importlib
import importlib.util
import io
import json
import operator
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "LIGHTNING_MODULES",
    "LIGHTNING_SKIPPED",
    "ROW_COLUMNS",
    "Profile",
    "Series",
    "Span",
    "arguments",
    "calibrate",
    "cells",
    "compile_seedlock",
    "environment",
    "environment_of_child",
    "find_lightning",
    "fmt",
    "fmt_diff",
    "fmt_ratio",
    "header",
    "lightning_label",
    "load_average",
    "paired",
    "passfail",
    "profile",
    "progress",
    "rate_row",
    "rounds",
    "row",
    "size_row",
    "table_head",
    "time_block",
    "time_calls",
]

T = TypeVar("T")

# Where Lightning keeps `seed_everything` and its RNG state helpers, in the order they are tried.
LIGHTNING_MODULES = (
    "lightning.fabric.utilities.seed",
    "lightning.pytorch",
    "pytorch_lightning",
    "lightning_fabric.utilities.seed",
)
LIGHTNING_SKIPPED = (
    "Lightning is not installed (`pip install seedlock[bench]`): its rows were skipped."
)
ROW_COLUMNS = ("measure", "this", "baseline", "ratio", "added")


# --- series of per-repeat values ------------------------------------------------------------------


@dataclass
class Series:
    """One value per repeat. ``note`` marks extrapolated or single runs; ``calls`` optionally
    pools every individual call (for p99 / max lines)."""

    values: list[float] = field(default_factory=list)
    note: str = ""
    calls: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def iqr(self) -> tuple[float, float]:
        """(p25, p75); a single value is both."""
        if len(self.values) < 2:
            return self.values[0], self.values[0]
        q = statistics.quantiles(self.values, n=4, method="inclusive")
        return q[0], q[2]


def paired(a: Series, b: Series, op: Callable[[float, float], float] = operator.sub) -> Series:
    """``op(a[i], b[i])``: both ran in the same repeat, back to back, so they share its machine
    state. A single run on one side is paired with each value of the other."""
    if len(a.values) == len(b.values):
        return Series([op(x, y) for x, y in zip(a.values, b.values, strict=True)])
    if len(b.values) == 1:
        return Series([op(x, b.values[0]) for x in a.values], note="vs 1 run")
    if len(a.values) == 1:
        return Series([op(a.values[0], y) for y in b.values], note="vs 1 run")
    raise ValueError(f"cannot pair {len(a.values)} values with {len(b.values)}")


# --- table cells (ASCII only: the tables must paste cleanly anywhere) -----------------------------


def _num(v: float) -> str:
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def fmt(s: Series, scale: float, unit: str) -> str:
    """``median unit (p25 - p75)``, scaled, with the series' note."""
    lo, hi = s.iqr()
    text = f"{_num(s.median * scale)} {unit} ({_num(lo * scale)} - {_num(hi * scale)})"
    return f"{text} {s.note}" if s.note else text


def fmt_diff(s: Series, scale: float, unit: str) -> str:
    """``+median unit (+p25 .. +p75)`` of per-repeat differences, with the series' note."""
    lo, hi = s.iqr()
    text = f"{s.median * scale:+.1f} {unit} ({lo * scale:+.1f} .. {hi * scale:+.1f})"
    return f"{text} {s.note}" if s.note else text


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def passfail(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table_head(columns: Sequence[str] = ROW_COLUMNS) -> list[str]:
    """The two lines that open a markdown table."""
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def row(measure: str, this: Series, base: Series | None, scale: float, unit: str) -> str:
    """One table row: this and base (median, p25 - p75), their ratio, the paired difference."""
    if base is None:
        return f"| {measure} | {fmt(this, scale, unit)} | n/a | n/a | n/a |"
    ratio = this.median / base.median if base.median else float("nan")
    return (
        f"| {measure} | {fmt(this, scale, unit)} | {fmt(base, scale, unit)} | "
        f"{fmt_ratio(ratio)} | {fmt_diff(paired(this, base), scale, unit)} |"
    )


def rate_row(
    measure: str,
    this: Series,
    base: Series,
    unit: str,
    *,
    amount: float,
    scale: float,
    added_unit: str,
) -> str:
    """A row of rates (``unit``: GB/s, samples/s); *added* is the time ``amount`` of the rate's
    units takes at this rate beyond the baseline's, ``amount / this - amount / base`` seconds
    per repeat, scaled."""
    added = paired(this, base, lambda a, b: amount / a - amount / b)
    return (
        f"| {measure} | {fmt(this, 1, unit)} | {fmt(base, 1, unit)} | "
        f"{fmt_ratio(this.median / base.median)} | {fmt_diff(added, scale, added_unit)} |"
    )


def size_row(measure: str, this: float, base: float | None, unit: str = "B") -> str:
    """A row of sizes measured once (no spread)."""
    if base is None:
        return f"| {measure} | {this:,.0f} {unit} | n/a | n/a | n/a |"
    return (
        f"| {measure} | {this:,.0f} {unit} | {base:,.0f} {unit} | {this / base:.2f}x | "
        f"{this - base:+,.0f} {unit} |"
    )


# --- progress and the machine ---------------------------------------------------------------------


def progress(msg: str) -> None:
    """A line on stderr, flushed at once: the report alone goes to stdout."""
    print(msg, file=sys.stderr, flush=True)


def load_average() -> float:
    """The 1-minute load average (nan where the OS has none): other work on the machine."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


@dataclass
class Span:
    """The measurements: how many repeats, what one is and how the variants were ordered
    (``how``), their wall time and the load average before and after them. Made when they
    start, :meth:`stop` when they end."""

    repeats: int
    how: str = ", variants in an order shuffled per repeat"
    load_before: float = field(default_factory=load_average)
    start: float = field(default_factory=time.perf_counter)
    elapsed: float = float("nan")
    load_after: float = float("nan")

    def stop(self) -> Span:
        self.elapsed = time.perf_counter() - self.start
        self.load_after = load_average()
        return self

    def line(self) -> str:
        """The header's line on the repeats, the time they took and the load around them."""
        return (
            f"{self.repeats} repeat{'s' if self.repeats != 1 else ''}{self.how}; "
            f"{self.elapsed:.0f} s in all; 1-minute load average {self.load_before:.1f} before, "
            f"{self.load_after:.1f} after"
        )


def rounds(
    units: Sequence[T], repeats: int, label: str | None = "repeat", seed: int = 0
) -> Iterator[list[T]]:
    """``repeats`` rounds over ``units``, each in a newly shuffled order, so that machine noise
    hits every unit alike. The order comes from a generator of its own, seeded with ``seed``
    (the global generators are part of what is measured). After each round, unless ``label``
    is None, a progress line with the round's wall time."""
    order = random.Random(seed)
    shuffled = list(units)
    for rep in range(repeats):
        order.shuffle(shuffled)
        start = time.perf_counter()
        yield list(shuffled)
        if label is not None:
            progress(f"[{label} {rep + 1}/{repeats}] {time.perf_counter() - start:6.2f} s")


# --- timing ---------------------------------------------------------------------------------------


def time_calls(fn: Callable[[int], object], calls: int) -> list[float]:
    """Seconds of each of ``fn(0)``, ``fn(1)``, ... ``fn(calls - 1)``, timed one by one with
    ``time.perf_counter_ns``."""
    ns = time.perf_counter_ns
    out: list[float] = []
    for i in range(calls):
        t = ns()
        fn(i)
        out.append((ns() - t) / 1e9)
    return out


def time_block(fn: Callable[[int], object], calls: int) -> float:
    """Mean seconds per call over ``calls`` consecutive calls ``fn(i)``, timed as one block (no
    timer between the calls)."""
    t = time.perf_counter_ns()
    for i in range(calls):
        fn(i)
    return (time.perf_counter_ns() - t) / 1e9 / calls


def calibrate(
    fn: Callable[[int], object], block_s: float, lowest: int, highest: int, warmup: int = 20
) -> int:
    """How many calls of ``fn`` make a block of about ``block_s`` seconds, from the median of
    ``warmup`` calls timed one by one (which also warm it up), kept within [lowest, highest]."""
    per_call = statistics.median(time_calls(fn, warmup))
    return max(lowest, min(highest, int(block_s / per_call) if per_call > 0 else highest))


# --- profiles -------------------------------------------------------------------------------------


@dataclass
class Profile:
    """A cProfile of one call; ``text``: its functions with the most own time, then the seedlock
    functions with the most cumulative time (which of them leads to the expensive calls)."""

    stats: pstats.Stats
    text: list[str]

    @property
    def total(self) -> float:
        """Seconds of the profiled call, under the profiler."""
        return max(self.stats.total_tt, 1e-12)  # type: ignore[attr-defined]

    def cumulative(self, file: str, function: str) -> float:
        """Seconds inside ``function`` of the source ``file``, the calls it makes included."""
        path = Path(file).resolve()
        return sum(
            v[3]
            for (where, _, name), v in self.stats.stats.items()  # type: ignore[attr-defined]
            if name == function and Path(where).resolve() == path
        )

    def lines(self, title: str) -> list[str]:
        """The text under a title, as a fenced block of the report."""
        return ["", f"cProfile of {title}:", "```", *self.text, "```"]


def profile(fn: Callable[[], object], top: int = 12) -> Profile:
    """``fn()`` under cProfile; ``top`` functions in each table of the text."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"seedlock", top)
    text = [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]
    return Profile(stats, text)


# --- Lightning ------------------------------------------------------------------------------------


def find_lightning(*names: str) -> tuple[str, list[Any]] | None:
    """The first of :data:`LIGHTNING_MODULES` that has every one of ``names``, with those
    attributes; None where Lightning is not importable."""
    for module_name in LIGHTNING_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found = [getattr(module, name, None) for name in names]
        if all(f is not None for f in found):
            return module_name, found
    return None


def lightning_label(module_name: str | None) -> str:
    """``Lightning <version> (`module`)`` of an imported Lightning module, or that it is not
    installed."""
    if module_name is None:
        return "Lightning not installed"
    top = sys.modules[module_name.split(".")[0]]
    return f"Lightning {getattr(top, '__version__', '?')} (`{module_name}`)"


# --- the report's header --------------------------------------------------------------------------


def environment(lightning: Sequence[str] = ()) -> dict[str, Any]:
    """What the header tells of this interpreter: the Python, torch, NumPy and seedlock versions
    and torch's thread count; given attribute names, also ``lightning_module``, the first of
    :data:`LIGHTNING_MODULES` that has them all (or None), and ``lightning``, its label. Imports
    torch, NumPy and seedlock."""
    import numpy
    import torch

    import seedlock

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "seedlock": seedlock.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if lightning:
        found = find_lightning(*lightning)
        info["lightning_module"] = found[0] if found else None
        info["lightning"] = lightning_label(info["lightning_module"])
    return info


def compile_seedlock() -> None:
    """Write the bytecode of every seedlock module, as ``pip install`` does for a wheel.

    An editable install gets its ``.pyc`` files on first import, unless the environment sets
    ``PYTHONDONTWRITEBYTECODE``: then every interpreter would compile seedlock again, and a
    start-up benchmark would measure the compiler rather than seedlock.
    """
    spec = importlib.util.find_spec("seedlock")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


def environment_of_child(lightning: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`environment` of a fresh interpreter, for a script that keeps torch out of its own
    process (the child also warms the file caches of what it imports; seedlock's bytecode is
    written first, :func:`compile_seedlock`)."""
    compile_seedlock()
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from _harness import environment\n"
        f"print('@@', json.dumps(environment({tuple(lightning)!r})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@ ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the environment probe failed (exit {proc.returncode})")
    info: dict[str, Any] = json.loads(lines[-1][3:])
    return info


def _versions(info: Mapping[str, Any], *extra: str) -> str:
    parts = [
        f"Python {info['python']} ({info['implementation']})",
        f"torch {info['torch']}",
        f"NumPy {info['numpy']}",
        f"seedlock {info['seedlock']}",
    ]
    if "lightning" in info:
        parts.append(info["lightning"])
    return ", ".join([*parts, *extra])


def _machine(info: Mapping[str, Any], *extra: str) -> str:
    threads = info["torch_threads"]
    text = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (torch uses "
        f"{threads} thread{'s' if threads != 1 else ''})"
    )
    return "; ".join([text, *extra])


def cells(over: str = "over repeats", added: str = "per repeat") -> str:
    """The header's line on what the cells of :func:`row` hold."""
    return (
        f"cells: median{' ' if over else ''}{over} (p25 - p75); ratio: of the medians; added: "
        f"median (p25 .. p75) of this - baseline {added}"
    )


def header(
    title: str,
    info: Mapping[str, Any],
    span: Span,
    *notes: str,
    legend: str = cells(),
    versions: Sequence[str] = (),
    machine: Sequence[str] = (),
    columns: Sequence[str] = ROW_COLUMNS,
) -> list[str]:
    """A report's first lines: the title; a bullet with the versions in ``info`` (see
    :func:`environment`) and ``versions``, one on the machine and its torch threads and
    ``machine``, one on the repeats (``span``), one a note, and ``legend``; then the head of the
    table."""
    bullets = [_versions(info, *versions), _machine(info, *machine), span.line(), *notes, legend]
    return [f"# {title}", "", *(f"- {b}" for b in bullets), "", *table_head(columns)]


def arguments(
    doc: str | None, repeats: int | None, repeats_help: str = ""
) -> argparse.ArgumentParser:
    """A benchmark's command line: the first line of ``doc`` as its description, and
    ``--repeats``, by default ``repeats``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help=repeats_help or f"rounds over every variant (default {repeats})",
    )
    return parser
