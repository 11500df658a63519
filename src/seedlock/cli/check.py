"""``seedlock check``: run a command several times and say whether it is reproducible.

Each run happens under ``seedlock run`` semantics (same seed, same ``PYTHONHASHSEED``; with
``--no-seed`` the command gets neither) with every module traced (``seedlock.audit`` global
mode, one trace per process: ``main.trace`` or ``<RANK>.trace``). Then, against run 1:

* the traces: the first divergence, classified ((a) data, (b) random stream, (c)
  nondeterministic computation, (d) execution path);
* the numbers printed on stdout, in order;
* the files written under ``--outputs DIR``, byte for byte;
* the exit status.

Exit status 0 reproducible, 1 not reproducible (or the command failed), 2 usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedlock._bootstrap import TRACE_DIR_VAR
from seedlock.cli.run import CACHE_DIR, child_environment, command_of, resolve_seed
from seedlock.derivation import format_seed

__all__ = ["add_arguments", "run"]

_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|nan|inf", re.IGNORECASE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=2, help="how many runs (default 2)")
    parser.add_argument(
        "--seed", default="0", metavar="N|last|random", help="root seed (default 0)"
    )
    parser.add_argument(
        "--no-seed", action="store_true", help="do not seed the command (see how it behaves alone)"
    )
    parser.add_argument(
        "--outputs", metavar="DIR", help="compare the files the command writes here"
    )
    parser.add_argument("--keep", metavar="DIR", help="keep each run's traces and output here")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ...")


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    traces: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)


def _hash_outputs(folder: str | None) -> dict[str, str]:
    if not folder or not os.path.isdir(folder):
        return {}
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _once(args: argparse.Namespace, command: list[str], index: int, work: str) -> _Run:
    trace_dir = os.path.join(work, f"run{index + 1}")
    os.makedirs(trace_dir, exist_ok=True)
    seed = None if args.no_seed else args.resolved_seed
    env = child_environment(seed, deterministic=False, record_dir=None)
    env[TRACE_DIR_VAR] = trace_dir
    if args.outputs and os.path.isdir(args.outputs):
        shutil.rmtree(args.outputs)
    if args.outputs:
        os.makedirs(args.outputs, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    traces = {p.name: str(p) for p in sorted(Path(trace_dir).glob("*.trace"))}
    outputs = _hash_outputs(args.outputs)
    if args.keep and args.outputs and os.path.isdir(args.outputs):
        shutil.copytree(args.outputs, os.path.join(trace_dir, "outputs"), dirs_exist_ok=True)
    return _Run(proc.returncode, proc.stdout, proc.stderr, seconds, traces, outputs)


def _first_number_difference(a: str, b: str) -> dict[str, Any] | None:
    for line_no, (la, lb) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False), 1):
        na, nb = _NUMBER.findall(la), _NUMBER.findall(lb)
        if na != nb:
            return {"line": line_no, "a": la.strip(), "b": lb.strip()}
    na, nb = _NUMBER.findall(a), _NUMBER.findall(b)
    if len(na) != len(nb):
        return {"line": None, "a": f"{len(na)} numbers", "b": f"{len(nb)} numbers"}
    return None


def run(args: argparse.Namespace) -> int:
    from seedlock.audit.comparison import compare

    command = command_of(args)
    if not command:
        print(
            "seedlock check: missing command (seedlock check [options] -- CMD ...)", file=sys.stderr
        )
        return 2
    if args.runs < 2:
        print(f"seedlock check: --runs must be at least 2, got {args.runs}", file=sys.stderr)
        return 2
    try:
        args.resolved_seed = resolve_seed(args.seed, Path(CACHE_DIR))
    except ValueError as exc:
        print(f"seedlock check: {exc}", file=sys.stderr)
        return 2
    work = args.keep or tempfile.mkdtemp(prefix="seedlock-check-")
    os.makedirs(work, exist_ok=True)
    seeded = "not seeded" if args.no_seed else f"seed {format_seed(args.resolved_seed)}"
    runs: list[_Run] = []
    try:
        for index in range(args.runs):
            print(f"seedlock check: run {index + 1}/{args.runs} ({seeded}) ...", end="",
                  file=sys.stderr, flush=True)  # fmt: skip
            result = _once(args, command, index, work)
            runs.append(result)
            traces = ", ".join(result.traces) or "no trace (torch not used)"
            print(f" exit {result.returncode} in {result.seconds:.1f} s; {traces}",
                  file=sys.stderr, flush=True)  # fmt: skip
        verdict = _verdict(runs, compare)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(verdict, indent=2, default=str))
    else:
        print(verdict["text"])
    return 0 if verdict["reproducible"] else 1


def _verdict(runs: list[_Run], compare: Any) -> dict[str, Any]:
    first = runs[0]
    problems: list[str] = []
    details: dict[str, Any] = {"runs": len(runs)}
    failed = [(i + 1, r) for i, r in enumerate(runs) if r.returncode != 0]
    if failed:
        index, bad = failed[0]
        tail = "\n".join(bad.stderr.strip().splitlines()[-8:])
        problems.append(f"the command failed in run {index} (exit {bad.returncode}):\n{tail}")
    for index, other in enumerate(runs[1:], 2):
        if other.returncode != first.returncode:
            problems.append(
                f"exit status: run 1 {first.returncode}, run {index} {other.returncode}"
            )
        names = sorted(set(first.traces) | set(other.traces))
        for name in names:
            if name not in first.traces or name not in other.traces:
                problems.append(f"trace {name}: written in only one of runs 1 and {index}")
                continue
            report = compare(first.traces[name], other.traces[name])
            details.setdefault("traces", {})[name] = report.to_dict()
            if not report.reproducible:
                problems.append(f"trace {name} (run 1 vs run {index}):\n{report}")
            else:
                details.setdefault("events", {})[name] = report.events
        numbers = _first_number_difference(first.stdout, other.stdout)
        if numbers:
            where = f"line {numbers['line']}" if numbers["line"] else "count"
            problems.append(
                f"stdout numbers differ (run 1 vs run {index}), {where}:\n"
                f"  run 1: {numbers['a']}\n  run {index}: {numbers['b']}"
            )
        changed = sorted(
            k for k in set(first.outputs) | set(other.outputs)
            if first.outputs.get(k) != other.outputs.get(k)
        )  # fmt: skip
        if changed:
            problems.append(f"output files differ (run 1 vs run {index}): {', '.join(changed)}")
        if problems:
            break
    events = sum(details.get("events", {}).values())
    files = len(first.outputs)
    numbers_count = len(_NUMBER.findall(first.stdout))
    if problems:
        text = "NOT reproducible\n" + "\n".join(problems)
    else:
        text = (
            f"reproducible: {len(runs)} runs agree bit for bit: {events} trace events, "
            f"{numbers_count} numbers on stdout, {files} output file(s), exit {first.returncode}"
        )
    return {"reproducible": not problems, "problems": problems, "text": text, **details}
