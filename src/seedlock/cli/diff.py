"""``seedlock diff A B``: two manifests, every difference ranked by how likely it is to change
results (exit 0 when no difference is high-risk, 1 otherwise), or two traces (exit 0 when
bit-identical within the tolerances, 1 otherwise, with the first divergence, its cause and the
divergence along the run as a line of text, then the environment facts of the two traces that
differ, most likely cause first, or ``environment: same``; ``--json``: under
``"environment_differences"``; ``--report PATH`` also writes it all as one HTML file:
:mod:`seedlock.audit.html`).
Exit status 2 for unreadable input, or a manifest given with a trace (one line on stderr)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from seedlock import manifest as mf
from seedlock._text import printable
from seedlock.cli import UsageError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="first manifest (JSON)")
    parser.add_argument("b", help="second manifest (JSON)")
    parser.add_argument("--json", action="store_true", help="print the differences as JSON")
    parser.add_argument(
        "--all", action="store_true", help="list every low-risk difference too (default: count)"
    )
    parser.add_argument("--rtol", type=float, default=0.0, help="traces: relative tolerance")
    parser.add_argument("--atol", type=float, default=0.0, help="traces: absolute tolerance")
    parser.add_argument(
        "--report", metavar="PATH", help="traces: also write the comparison as one HTML file"
    )


def _kind(path: str) -> str:
    """ "trace" for an SQLite file, "manifest" for anything else (read() then says if it is)."""
    with open(path, "rb") as f:  # OSError: reported as one line by the command line
        return "trace" if f.read(16) == b"SQLite format 3\0" else "manifest"


def _diff_traces(args: argparse.Namespace) -> int:
    # All load sqlite3: two manifests do not need it.
    from seedlock.audit import compare, environment_report, html

    if args.report:
        html.check_path(args.report)  # before the comparison: a refusal costs nothing
    report = compare(args.a, args.b, rtol=args.rtol, atol=args.atol)
    # The environment is shown whatever the events say: also when the runs agree.
    diffs, meta, _ = environment_report.compare(args.a, args.b)
    if args.json:
        out = {**report.to_dict(), "environment_differences": environment_report.to_json(diffs)}
        print(json.dumps(out, indent=2, default=str))
    else:
        print(report)
        line = html.divergence_line(report, sys.stdout.encoding)
        if line:
            print(line)
        print("\n".join(environment_report.terminal(diffs, meta)))
    if args.report:
        html.write(args.report, report, args.a, args.b)
        print(f"report written to {printable(args.report)}", file=sys.stderr)
    return 0 if report.reproducible else 1


def _short(value: Any, width: int = 38) -> str:
    return printable("-" if value is None else value, width)


def run(args: argparse.Namespace) -> int:
    kinds = _kind(args.a), _kind(args.b)
    if kinds[0] != kinds[1]:
        raise UsageError(
            f"{printable(args.a)} is a {kinds[0]} and {printable(args.b)} a {kinds[1]}: give two "
            "manifests or two traces"
        )
    if kinds[0] == "trace":
        return _diff_traces(args)
    if args.report:
        raise UsageError("--report draws two traces: give two trace files, not manifests")
    a, b = mf.read(args.a), mf.read(args.b)
    found = mf.diff(a, b)
    high = [d for d in found if d["risk"] == "high"]
    if args.json:
        print(json.dumps({"identical": not found, "high_risk": len(high), "differences": found},
                         indent=2, default=str))  # fmt: skip
        return 1 if high else 0
    if not found:
        print("no differences")
        return 0
    for risk in ("high", "medium", "low"):
        group = [d for d in found if d["risk"] == risk]
        if not group:
            continue
        print(f"{risk} risk ({len(group)})")
        if risk == "low" and not args.all:
            listed = ", ".join(printable(d["key"], 80) for d in group[:6])
            print(f"  {listed}{' ...' if len(group) > 6 else ''}")
            continue
        keys = [printable(d["key"], 80) for d in group]
        width = max(map(len, keys))
        for key, d in zip(keys, group, strict=True):
            print(f"  {key:<{width}}  {_short(d['a'])} -> {_short(d['b'])}   ({d['why']})")
    verdict = (
        f"{len(high)} high-risk difference(s): results may differ"
        if high
        else "no high-risk difference"
    )
    print(verdict)
    return 1 if high else 0
