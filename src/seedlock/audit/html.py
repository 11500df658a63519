"""Render a comparison of two traces as one self-contained HTML file, and its curve as text.

The page holds no link, script or external file: inline CSS and an inline SVG plot, readable
offline and safe to attach to a bug report. The plot shows the divergence along the run: both
traces are read in execution order and their events paired by position, until the first pair
whose module, event or op differ (the execution paths part there). For each pair, the relative
difference of its ``sum`` and of its ``absmax`` between the two runs::

    |a - b| / max(|a|, |b|, 1e-300)

(0 when both are equal or both NaN, 1 when only one is NaN or missing), on a log scale whose
values under :data:`FLOOR`, identical ones included, are drawn at the floor. A pair that a
trace holds no summary of (fingerprints only: ``meta`` ``summaries`` ``"0"``) is at the top (1)
if its fingerprints differ, at the floor if not, and a note says so. Hovering a point names its
event and module. A vertical line marks the first divergence. At most :data:`MAX_POINTS` points
are drawn: consecutive events share a point, the one whose difference is largest, and the first
divergence always keeps its own.

Below the plot: the verdict, the environment of the two runs (the facts that differ, ranked,
with why each matters, or one line when none does: :mod:`seedlock.audit.environment_report`),
the places where entropy that no seed reaches entered, the manifest differences ranked by risk
(when given) and the op table's advice on the suspects. Everything that comes from a trace or a
manifest is escaped.

:func:`sparkline` draws the same curve as one line of block characters, for a terminal.
"""

from __future__ import annotations

import html
import math
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seedlock import _files
from seedlock.audit import _html_sections as _sections
from seedlock.audit import environment_report
from seedlock.audit.divergence import Report

__all__ = ["Point", "check_path", "curve", "divergence_line", "render", "sparkline", "write"]

#: Relative differences below this (identical events included) are drawn at it.
FLOOR = 1e-17
#: The most points the plot draws, however long the traces.
MAX_POINTS = 2000
#: What a seedlock report carries in its head, so that rewriting one is allowed.
MARKER = '<meta name="generator" content="seedlock.report">'
BLOCKS = "▁▂▃▄▅▆▇█"
ASCII_BLOCKS = "_.:-=+*#"
_TINY = 1e-300
_COLUMNS = "seq, module, event, op, sum, absmax, fingerprint"
_HOW = {True: "differs", False: "identical"}


@dataclass(frozen=True)
class Point:
    """One plotted event: its position, names, and the relative differences of its summaries."""

    index: int  # position in execution order, from 0
    seq: int  # its seq in run a's trace
    module: str
    event: str
    op: str | None
    rel_sum: float
    rel_absmax: float
    summarised: bool = True  # False: a trace holds no summary of it; its fingerprints tell

    @property
    def score(self) -> float:
        """The larger of the two relative differences."""
        return max(self.rel_sum, self.rel_absmax)


def _relative(a: float | None, b: float | None) -> float:
    if a is None and b is None:
        return 0.0
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return 0.0 if a is not None and b is not None and math.isnan(a) and math.isnan(b) else 1.0
    if a == b:
        return 0.0
    if math.isinf(a) or math.isinf(b):
        return 1.0
    return abs(a - b) / max(abs(a), abs(b), _TINY)


def _rows(path: str, skip_ops: bool) -> Iterator[tuple[Any, ...]]:
    uri = Path(path).resolve().as_uri() + "?mode=ro"  # a read-only open, whatever the name holds
    db = sqlite3.connect(uri, uri=True)
    where = "WHERE event != 'op' " if skip_ops else ""
    try:
        cursor = db.execute(f"SELECT {_COLUMNS} FROM events {where}ORDER BY seq")
        while chunk := cursor.fetchmany(1000):
            yield from chunk
    finally:
        db.close()


def curve(
    trace_a: str | os.PathLike[str],
    trace_b: str | os.PathLike[str],
    *,
    first: int | None = None,
    most: int = MAX_POINTS,
    skip_ops: bool = False,
) -> tuple[list[Point], int]:
    """The divergence along the run, downsampled (see the module docstring); memory stays bounded.

    Parameters
    ----------
    trace_a, trace_b
        The two trace files.
    first
        The seq (in run a) of the first divergence: its event always keeps a point of its own.
    most
        The most points to return (plus the first divergence's).
    skip_ops
        Leave ``op`` events out, and read ``first`` as a position among the others: for a
        targeted re-run's traces (ops recorded in one module) against a first pass's seq.

    Returns
    -------
    tuple of (list of Point, int)
        The points in execution order, and how many events were paired.
    """
    kept: list[Point] = []
    bucket: Point | None = None
    filled, width, count = 0, 1, 0
    forced: Point | None = None
    for ra, rb in zip(*(_rows(os.fspath(t), skip_ops) for t in (trace_a, trace_b)), strict=False):
        if ra[1:4] != rb[1:4]:
            break
        seq = count if skip_ops else ra[0]  # without ops: numbered as a first pass numbers them
        if None in (ra[4], ra[5]) or None in (rb[4], rb[5]):  # whether it differs, not by how much
            rel = 0.0 if ra[6] == rb[6] else 1.0
            point = Point(count, seq, ra[1], ra[2], ra[3], rel, rel, summarised=False)
        else:
            point = Point(count, seq, ra[1], ra[2], ra[3], _relative(ra[4], rb[4]),
                          _relative(ra[5], rb[5]))  # fmt: skip
        count += 1
        if seq == first:
            forced = point
            continue
        if bucket is None or point.score > bucket.score:
            bucket = point
        filled += 1
        if filled == width:
            kept.append(bucket)
            bucket, filled = None, 0
            if len(kept) >= most:  # merge neighbours: each point now stands for twice as many
                kept = [max(kept[i : i + 2], key=lambda p: p.score) for i in range(0, most, 2)]
                width *= 2
    if bucket is not None:
        kept.append(bucket)
    if forced is not None:
        kept = sorted([*kept, forced], key=lambda p: p.index)
    return kept, count


def sparkline(points: list[Point], width: int = 60, blocks: str = BLOCKS) -> str:
    """The curve as one line of ``blocks`` (lowest first), log scale, at most ``width`` columns.

    Parameters
    ----------
    points
        The curve (:func:`curve`).
    width
        The most columns; each shows the largest difference among the points it covers.
    blocks
        The characters from the lowest level to the highest.

    Returns
    -------
    str
        The line; empty when there are no points.
    """
    if not points:
        return ""
    columns = min(width, len(points))
    scores = [0.0] * columns
    for i, p in enumerate(points):
        column = i * columns // len(points)
        scores[column] = max(scores[column], p.score)
    top = max(*scores, FLOOR * 10)
    span = math.log10(top) - math.log10(FLOOR)
    levels = len(blocks) - 1
    out = []
    for s in scores:
        level = 0 if s <= FLOOR else round((math.log10(s) - math.log10(FLOOR)) / span * levels)
        out.append(blocks[max(0, min(levels, level))])
    return "".join(out)


def divergence_line(
    report: Report, encoding: str | None = None, plot: tuple[str, str] | None = None
) -> str | None:
    """``divergence along the run: ▁▁▂█ (first at event N)`` for a report that found one.

    Parameters
    ----------
    report
        The comparison (its ``a`` and ``b`` are read again).
    encoding
        The terminal's encoding: block characters it cannot print become ASCII ones.
    plot
        The traces to draw instead, when not ``a`` and ``b``: a targeted re-run's.

    Returns
    -------
    str or None
        The line, or ``None`` when the traces agree.
    """
    d = report.divergence
    if report.reproducible or d is None:
        return None
    blocks = BLOCKS
    try:
        BLOCKS.encode(encoding or "utf-8")
    except (UnicodeError, LookupError):
        blocks = ASCII_BLOCKS
    points, _ = curve(*(plot or (report.a, report.b)), first=d.seq, skip_ops=plot is not None)
    line = sparkline(points, blocks=blocks) or "(no event paired)"
    only = "; fingerprints only: where events differ, not by how much"
    only = only if any(not p.summarised for p in points) else ""
    return f"divergence along the run: {line} (first at event {d.seq}{only})"


def check_path(path: str | os.PathLike[str]) -> None:
    """Refuse a report path that is a folder or an existing file that is not a seedlock report.

    Parameters
    ----------
    path
        Where the report is to be written.

    Raises
    ------
    ValueError
        One line saying why (a user's file is never replaced).
    """
    p = os.fspath(path)
    _files.refuse_to_replace(p, "--report", MARKER.encode(), "a seedlock report")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise ValueError(f"--report {p!r}: the folder {folder} does not exist")


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;white-space:pre-wrap}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;
vertical-align:top}.high{color:#b00}.medium{color:#a60}.low{color:#666}
svg text{font:11px sans-serif}.sum{fill:#1f77b4}.absmax{fill:#ff7f0e}
line.first-divergence{stroke:#d00}text.first-divergence{fill:#d00}.axis{stroke:#888}.grid{stroke:#eee}
"""
_W, _H, _L, _R, _T, _B = 960, 340, 60, 20, 30, 40


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _y(value: float, top: float) -> float:
    lo, hi = math.log10(FLOOR), math.log10(top)
    v = math.log10(max(value, FLOOR))
    return _T + (hi - v) / (hi - lo) * (_H - _T - _B)


def _svg(points: list[Point], count: int, report: Report) -> str:
    top = 10.0
    d = report.divergence
    span = max(count - 1, 1)

    def x(index: int) -> float:
        return _L + index / span * (_W - _L - _R)

    out = [f'<svg width="{_W}" height="{_H}" '
           f'viewBox="0 0 {_W} {_H}" role="img">']  # fmt: skip
    for exponent in range(-16, 2, 4):
        y = _y(10.0**exponent, top)
        grid = f'<line class="grid" x1="{_L}" x2="{_W - _R}" y1="{y:.1f}" y2="{y:.1f}"/>'
        out.append(
            f'{grid}<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">1e{exponent}</text>'
        )
    floor = _y(FLOOR, top)
    out.append(f'<text x="{_L - 6}" y="{floor + 4:.1f}" text-anchor="end">&#8804;{FLOOR:g}</text>')
    bottom = _H - _B
    out.append(f'<line class="axis" x1="{_L}" x2="{_W - _R}" y1="{bottom}" y2="{bottom}"/>')
    out.append(f'<text x="{(_W + _L) / 2:.0f}" y="{_H - 8}" text-anchor="middle">event, in '
               f"execution order ({count:,} paired)</text>")  # fmt: skip
    for p in points:
        op = f" {p.op}" if p.op else ""
        at = f"event {p.seq}: {p.module} {p.event}{op}"
        tip = (f"{at}; sum differs by {p.rel_sum:.3g}, max |x| by {p.rel_absmax:.3g} (relative)"
               if p.summarised else f"{at}; {_HOW[p.score > 0]} (no summary recorded)")  # fmt: skip
        px = x(p.index)
        out.append(
            f'<g class="event"><title>{_e(tip)}</title>'
            f'<circle class="sum" cx="{px:.1f}" cy="{_y(p.rel_sum, top):.1f}" r="2.5"/>'
            f'<rect class="absmax" x="{px - 2:.1f}" y="{_y(p.rel_absmax, top) - 2:.1f}" '
            'width="4" height="4"/></g>'
        )
    if d is not None:
        marked = next((p for p in points if p.seq == d.seq), None)
        px = min(x(marked.index if marked is not None else count), _W - _R)
        label = f"first divergence: event {d.seq}, {d.module} {d.event}"
        left = px < _W / 2  # the label reads rightwards from the line, or leftwards near the end
        out.append(f'<line class="first-divergence" x1="{px:.1f}" x2="{px:.1f}" y1="{_T}" '
                   f'y2="{bottom}" stroke-dasharray="4 3"/>'
                   f'<text class="first-divergence" x="{px + 4 if left else px - 4:.1f}" '
                   f'y="{_T - 8}" text-anchor="{"start" if left else "end"}">'
                   f"{_e(label)}</text>")  # fmt: skip
    out.append("</svg>")
    return "\n".join(out)


def _legend(fingerprints_only: bool) -> str:
    note = (
        '<p class="note"><b>These traces hold fingerprints only</b> (no sum or max |x|): the '
        "plot shows where events differ, not by how much: an event whose fingerprints differ is "
        "drawn at the top (1), one whose fingerprints agree at the floor.</p>"
    )
    return (
        '<p class="legend"><span class="sum">&#9679;</span> relative difference of the sum '
        '&nbsp; <span class="absmax">&#9632;</span> relative difference of max |x| &nbsp; '
        f"(|a - b| / max(|a|, |b|), log scale; values below {FLOOR:g}, including 0 for "
        f"identical events, are drawn at {FLOOR:g}; hover a point for its module)</p>"
    ) + (note if fingerprints_only else "")


def render(
    report: Report,
    trace_a: str | os.PathLike[str],
    trace_b: str | os.PathLike[str],
    *,
    manifest_diff: list[dict[str, Any]] | None = None,
    title: str = "seedlock: two runs compared",
) -> str:
    """The comparison as one self-contained HTML page (see the module docstring).

    Parameters
    ----------
    report
        What :func:`seedlock.audit.compare` returned for the two traces.
    trace_a, trace_b
        The two trace files, read again for the plot.
    manifest_diff
        The runs' manifest differences (:func:`seedlock.manifest.diff`), or ``None``.
    title
        The page's title.

    Returns
    -------
    str
        The page.
    """
    d = report.divergence
    rerun = os.fspath(trace_a) != report.a  # a targeted re-run's traces: ops in one module
    points, count = curve(trace_a, trace_b, first=d.seq if d else None, skip_ops=rerun)
    head = "reproducible" if report.reproducible else "NOT reproducible"
    plot = _svg(points, count, report) if count else "<p>no event could be paired</p>"
    diffs, meta, other = environment_report.compare(trace_a, trace_b)
    sums = {meta.get("summaries"), other.get("summaries")}  # "0": recorded without summaries
    only = "0" in sums or any(not p.summarised for p in points)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        MARKER,
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}: {head}</h1>",
        f"<p>run a: <code>{_e(os.fspath(trace_a))}</code><br>"
        f"run b: <code>{_e(os.fspath(trace_b))}</code></p>",
        "<h2>Divergence along the run</h2>",
        plot,
        _legend(only),
        "<h2>Verdict</h2>",
        f'<pre class="verdict">{_e(report)}</pre>',
        environment_report.section(diffs, meta),
        _sections.entropy(report),
        _sections.advice(report),
        _sections.manifest(manifest_diff),
        "</body></html>",
    ])  # fmt: skip


def write(
    path: str | os.PathLike[str],
    report: Report,
    trace_a: str | os.PathLike[str],
    trace_b: str | os.PathLike[str],
    **options: Any,
) -> None:
    """Write :func:`render`'s page to ``path`` atomically, never over a file that is not one.

    Parameters
    ----------
    path
        The HTML file to write.
    report, trace_a, trace_b, **options
        As for :func:`render`.

    Raises
    ------
    ValueError
        ``path`` exists and is not a seedlock report, or is a folder (:func:`check_path`).
    """
    check_path(path)
    _files.write_atomic(path, render(report, trace_a, trace_b, **options).encode("utf-8"))
