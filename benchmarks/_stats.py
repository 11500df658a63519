"""What every benchmark here shares: a series of per-repeat values, and pairing two series."""

from __future__ import annotations

import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Series", "fmt", "fmt_diff", "fmt_ratio", "paired", "row", "size_row"]


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


# -- table cells (ASCII only: the tables must paste cleanly anywhere) -----------------------------


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


def row(measure: str, this: Series, base: Series | None, scale: float, unit: str) -> str:
    """One table row: this and base (median, p25 - p75), their ratio, the paired difference."""
    if base is None:
        return f"| {measure} | {fmt(this, scale, unit)} | n/a | n/a | n/a |"
    ratio = this.median / base.median if base.median else float("nan")
    return (
        f"| {measure} | {fmt(this, scale, unit)} | {fmt(base, scale, unit)} | "
        f"{fmt_ratio(ratio)} | {fmt_diff(paired(this, base), scale, unit)} |"
    )


def size_row(measure: str, this: float, base: float | None, unit: str = "B") -> str:
    """A row of sizes measured once (no spread)."""
    if base is None:
        return f"| {measure} | {this:,.0f} {unit} | n/a | n/a | n/a |"
    return (
        f"| {measure} | {this:,.0f} {unit} | {base:,.0f} {unit} | {this / base:.2f}x | "
        f"{this - base:+,.0f} {unit} |"
    )
