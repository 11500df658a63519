"""Build ``seedlock check``'s verdict from its runs: a headline, one line per channel, the details.

The channels, each compared between run 1 and every other run (stopping at the first run that
differs): ``traces`` (the audit's traces, event by event), ``stdout`` (its numbers, see
:mod:`seedlock.cli._check_compare`), ``files`` (under ``--outputs``) and ``exit status``. The
headline is ``reproducible: N runs agree``, ``NOT reproducible``, or, when every run exits with
the same non-zero status and nothing else differs, ``the command failed (exit N) in every run``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedlock._text import printable
from seedlock.cli._check_compare import FilesResult, StdoutResult, compare_files, compare_stdout

__all__ = ["Run", "verdict"]

#: (trace a, trace b) -> the traces to draw for that pair: a targeted re-run's, with summaries.
Plots = dict[tuple[str, str], tuple[str, str]]


@dataclass
class Run:
    """What one run of the command left: its status, output, traces and files."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    traces: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)  # relative path -> digest
    changed: list[str] = field(default_factory=list)  # changed in place, not put back
    created: list[str] = field(default_factory=list)
    folder: str = ""  # the run's folder: its traces, .entropy files and process records
    failed_traces: list[str] = field(default_factory=list)  # started, never written


def _names(paths: list[str]) -> str:
    return ", ".join(printable(p, 120) for p in paths)


def _traces(first: Run, other: Run, index: int, compare: Callable[[str, str], Any],
            details: dict[str, Any], *, plots: Plots) -> tuple[str, list[str]]:  # fmt: skip
    """The traces line and the problems, run 1 against run ``index``."""
    names = sorted(set(first.traces) | set(other.traces))
    failed = [(i, name) for i, run in ((1, first), (index, other)) for name in run.failed_traces]
    if failed:
        which = ", ".join(f"{printable(name, 80)} in run {i}" for i, name in failed)
        return f"traces: tracing failed ({which})", [
            f"tracing failed ({which}): the runs cannot be compared event by event; the "
            "warning on the run's stderr says why"
        ]
    if not names:
        return "traces: none written (torch not used)", []
    problems: list[str] = []
    events = 0
    for name in names:
        if name not in first.traces or name not in other.traces:
            problems.append(f"trace {name}: written in only one of runs 1 and {index}")
            continue
        report = compare(first.traces[name], other.traces[name])
        details.setdefault("traces", {})[name] = report.to_dict()
        if report.reproducible:
            details.setdefault("events", {})[name] = report.events
            events += report.events
        else:
            # Reads both traces again (sqlite3): only for traces that differ.
            from seedlock.audit.html import divergence_line

            line = divergence_line(report, sys.stdout.encoding, plots.get((report.a, report.b)))
            problems.append(f"trace {name} (run 1 vs run {index}):\n{report}")
            if line:
                problems[-1] += f"\n{line}"
    if problems:
        return f"traces: differ (run 1 vs run {index})", problems
    return f"traces: {events:,} events bit-identical ({_names(names)})", []


def _stdout_line(result: StdoutResult, index: int, timing: int) -> tuple[str, list[str]]:
    notes = [f"{result.numbers:,} numbers"]
    if timing:
        notes.append(f"{timing} timing line(s) vary, ignored")
    if result.ignored_lines:
        notes.append(f"{result.ignored_lines} line(s) left out by --ignore")
    diff = result.difference
    if diff is None:
        return f"stdout: same ({'; '.join(notes)})", []
    where = f"line {diff['line']}" if diff["line"] else "count"
    problem = (
        f"stdout numbers differ (run 1 vs run {index}), {where}:\n"
        f"  run 1: {printable(diff['a'], 300)}\n"
        f"  run {index}: {printable(diff['b'], 300)}"
    )
    return f"stdout: numbers differ (run 1 vs run {index}), {where}", [problem]


def _files_line(result: FilesResult, index: int) -> tuple[str, list[str]]:
    parts = [f"{len(result.same)} same"]
    if result.paired:
        parts.append(f"{len(result.paired)} paired by name pattern")
    if result.differ:
        parts.append(f"{len(result.differ)} differ (run 1 vs run {index})")
    line = "files: " + ", ".join(parts)
    if result.only_a:
        line += f"; only in run 1: {_names(result.only_a)}"
    if result.only_b:
        line += f"; only in run {index}: {_names(result.only_b)}"
    if not result.differ:
        return line, []
    return line, [f"output files differ (run 1 vs run {index}): {_names(result.differ)}"]


def _untraced(first: Run, other: Run, index: int, seeded: bool) -> list[str]:
    # Only when untraced runs differ: reads their .entropy files and process records.
    from seedlock.cli._check_untraced import likely_cause, records

    files = [str(p) for run in (first, other) if run.folder
             for p in sorted(Path(run.folder).glob("*.entropy"))]  # fmt: skip
    mine, theirs = (records(os.path.join(r.folder, "records")) if r.folder else []
                    for r in (first, other))  # fmt: skip
    return likely_cause(files, mine, theirs, seeded=seeded, index=index)


def _exit_status(runs: list[Run], lines: dict[str, str], problems: list[str]) -> bool:
    """Add the exit status line and its problems; whether every run failed alike."""
    codes = [r.returncode for r in runs]
    if len(set(codes)) == 1:
        lines["exit status"] = f"exit status: {runs[0].returncode} in every run"
    else:
        lines["exit status"] = "exit status: " + ", ".join(
            f"run {i} {c}" for i, c in enumerate(codes, 1)
        )
        problems.insert(0, "exit status differs: " + lines["exit status"][len("exit status: ") :])
    failed = next(((i, r) for i, r in enumerate(runs, 1) if r.returncode != 0), None)
    same_failure = failed is not None and not problems
    if failed is not None:
        index, bad = failed
        tail = "\n".join(printable(line, 300) for line in bad.stderr.strip().splitlines()[-8:])
        said = f"the command failed in run {index} (exit {bad.returncode})"
        problems.append(f"{said}; its stderr ends:\n{tail}" if tail else said)
    return same_failure


def verdict(
    runs: list[Run],
    compare: Callable[[str, str], Any],
    *,
    ignore: list[re.Pattern[str]],
    outputs: bool,
    backup_limit: int,
    seeded: bool = True,
    plots: Plots | None = None,
) -> dict[str, Any]:
    """The verdict on ``runs`` (``compare``: the audit's trace comparison; ``plots``: the traces
    to draw for a pair, when not its own): text and data."""
    first = runs[0]
    codes = [r.returncode for r in runs]
    details: dict[str, Any] = {"runs": len(runs)}
    in_place = sorted({k for r in runs for k in r.changed})
    lines: dict[str, str] = {}
    problems: list[str] = []
    timing = 0
    stdout = StdoutResult()
    files = FilesResult()
    for index, other in enumerate(runs[1:], 2):
        lines["traces"], found = _traces(first, other, index, compare, details, plots=plots or {})
        stdout = compare_stdout(first.stdout, other.stdout, ignore)
        timing = max(timing, stdout.timing_lines)
        lines["stdout"], more = _stdout_line(stdout, index, timing)
        found += more
        if outputs:
            mine = {k: v for k, v in first.outputs.items() if k not in in_place}
            theirs = {k: v for k, v in other.outputs.items() if k not in in_place}
            files = compare_files(mine, theirs, set(first.created), set(other.created))
            lines["files"], more = _files_line(files, index)
            found += more
        if found and not (first.traces or other.traces or first.failed_traces
                          or other.failed_traces):  # fmt: skip
            found.append("\n".join(_untraced(first, other, index, seeded)))
        problems += found
        if found:
            break
    if not outputs:
        lines["files"] = "files: not compared (no --outputs DIR)"
    same_failure = _exit_status(runs, lines, problems)
    if same_failure:
        headline = f"the command failed (exit {first.returncode}) in every run"
    elif problems:
        headline = "NOT reproducible"
    else:
        headline = f"reproducible: {len(runs)} runs agree"
    text = "\n".join([headline, *lines.values(), *problems])
    if in_place:
        text += (
            f"\nnot compared: {_names(in_place)} existed before the check and changed; the "
            f"folder holds more than {backup_limit >> 30} GiB, too much to set aside, so each "
            "run started from the previous run's version (point --outputs at the folder the "
            "command writes)"
        )
    details["changed_in_place"] = in_place
    details["channels"] = {
        "traces": lines["traces"],
        "stdout": stdout.to_dict(),
        "files": files.to_dict() if outputs else None,
        "exit_status": codes,
    }
    return {"reproducible": not problems, "failed_in_every_run": same_failure,
            "headline": headline, "lines": list(lines.values()), "problems": problems,
            "text": text, **details}  # fmt: skip
