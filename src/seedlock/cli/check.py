"""``seedlock check``: run a command several times and say whether it is reproducible.

Each run happens under ``seedlock run`` semantics (same seed, same ``PYTHONHASHSEED``; with
``--no-seed`` the command gets neither) with every module traced (``seedlock.audit`` global
mode, one trace per process: ``main.trace`` or ``<RANK>.trace``). Then, against run 1:

* the traces: the first divergence, classified ((a) data, (b) random stream, (c)
  nondeterministic computation, (d) execution path);
* the numbers printed on stdout, in order;
* the files the command writes under ``--outputs DIR``, byte for byte;
* the exit status.

``--outputs DIR``: every run starts from DIR as it was before the check, and DIR ends as after
one run of the command. What a run creates there is moved aside after it (into the check's
working folder, or ``--keep``); what it changes or deletes of the files that were there is put
back from a copy taken before run 1 (up to 1 GiB; beyond that, such changes are listed, not
compared). At the end the last run's files are moved back. seedlock itself never deletes or
overwrites anything of DIR's that the command did not change.

Exit status 0 reproducible, 1 not reproducible (or the command failed), 2 usage error (one line
on stderr), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedlock._bootstrap import TRACE_DIR_VAR
from seedlock._text import printable, reason
from seedlock.cli import UsageError, _child
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
        "--outputs",
        metavar="DIR",
        help="compare the files the command writes here (nothing already there is changed)",
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
    changed: list[str] = field(default_factory=list)


def _digest(path: str) -> str:
    if os.path.islink(path):
        return "link:" + os.readlink(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: What ``--outputs`` copies aside before run 1, at most, so every run can start from it.
BACKUP_LIMIT = 1 << 30


class _Outputs:
    """The files a command writes under one folder; every run starts from the folder as it was
    before the check."""

    def __init__(self, folder: str, work: str) -> None:
        self.folder = os.path.abspath(folder)
        if os.path.lexists(self.folder) and not os.path.isdir(self.folder):
            raise UsageError(f"--outputs {folder!r} is not a folder")
        self.existed = os.path.isdir(self.folder)
        self.work = os.path.abspath(work)  # never scanned, should --keep lie inside the folder
        self.before = self._scan()
        self.backup = os.path.join(work, "before")
        size = sum(info[1] for info in self.before.values() if not info[0])
        self.backed_up = size <= BACKUP_LIMIT
        if self.backed_up:
            for rel, info in self.before.items():
                if not info[0]:
                    self._copy(os.path.join(self.folder, rel), os.path.join(self.backup, rel))

    @staticmethod
    def _copy(source: str, target: str) -> None:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)

    def _scan(self) -> dict[str, tuple[bool, int, int, int]]:
        """relative path -> (is a folder, size, mtime_ns, inode), links not followed."""
        found: dict[str, tuple[bool, int, int, int]] = {}
        if not os.path.isdir(self.folder):
            return found
        for top, dirs, files in os.walk(self.folder):
            dirs[:] = [d for d in dirs if os.path.join(top, d) != self.work]
            for name in dirs + files:
                path = os.path.join(top, name)
                st = os.lstat(path)
                is_dir = name in dirs and not os.path.islink(path)
                found[os.path.relpath(path, self.folder)] = (is_dir, st.st_size,
                                                             st.st_mtime_ns, st.st_ino)  # fmt: skip
        return found

    def collect(self, aside: str, *, last: bool) -> tuple[dict[str, str], list[str]]:
        """After a run: digests of the files it created, changed or deleted, and the changed
        ones it could not put back. Created files go into ``aside``; unless this is the last
        run, changed and deleted ones are put back as they were before the check."""
        now = self._scan()
        files = {p for p, info in now.items() if not info[0]}
        created = sorted(p for p in files if p not in self.before)
        changed = sorted(p for p in files if p in self.before and now[p] != self.before[p])
        deleted = sorted(p for p, i in self.before.items() if not i[0] and p not in now)
        digests = {p: _digest(os.path.join(self.folder, p)) for p in created + changed}
        digests.update(dict.fromkeys(deleted, "deleted"))
        for rel in created:
            target = os.path.join(aside, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(os.path.join(self.folder, rel), target)
        # Folders the run created, deepest first (only those it left empty after the move).
        for rel in sorted((p for p, i in now.items() if i[0] and p not in self.before),
                          key=len, reverse=True):  # fmt: skip
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(self.folder, rel))
        if not self.existed and os.path.isdir(self.folder) and not os.listdir(self.folder):
            os.rmdir(self.folder)
        if not self.backed_up:
            return digests, changed + deleted
        for rel in changed:
            self._copy(os.path.join(self.folder, rel), os.path.join(aside, rel))
        if not last:
            for rel in changed + deleted:
                path = os.path.join(self.folder, rel)
                if rel in changed:
                    os.unlink(path)  # the command's version; a copy is in `aside`
                self._copy(os.path.join(self.backup, rel), path)
                st = os.lstat(path)
                self.before[rel] = (False, st.st_size, st.st_mtime_ns, st.st_ino)
        return digests, []

    def put_back(self, aside: str, *, copy: bool) -> None:
        """Put the files a run created back (copies with ``copy``, to keep ``aside`` whole)."""
        if not os.path.isdir(aside):
            return
        for top, _, files in os.walk(aside):
            for name in files:
                source = os.path.join(top, name)
                rel = os.path.relpath(source, aside)
                target = os.path.join(self.folder, rel)
                if rel in self.before or os.path.lexists(target):
                    continue  # a file that was there: the command's own version stays
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if copy:
                    shutil.copy2(source, target, follow_symlinks=False)
                else:
                    shutil.move(source, target)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")  # any bytes a command prints


def _once(
    args: argparse.Namespace, command: list[str], index: int, work: str, outputs: _Outputs | None
) -> tuple[_Run, list[int]]:
    run_dir = os.path.join(work, f"run{index + 1}")
    os.makedirs(run_dir, exist_ok=True)
    seed = None if args.no_seed else args.resolved_seed
    env = child_environment(seed, deterministic=False, record_dir=None)
    env[TRACE_DIR_VAR] = run_dir
    out_path, err_path = os.path.join(run_dir, "stdout"), os.path.join(run_dir, "stderr")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        try:
            returncode, received = _child.run(
                command, env, stdout=out.fileno(), stderr=err.fileno()
            )
        except OSError as exc:
            raise UsageError(f"cannot start {command[0]!r}: {reason(exc)}") from None
        seconds = time.perf_counter() - start
    traces = {p.name: str(p) for p in sorted(Path(run_dir).glob("*.trace"))}
    last = index == args.runs - 1
    aside = os.path.join(run_dir, "outputs")
    digests, changed = outputs.collect(aside, last=last) if outputs else ({}, [])
    result = _Run(returncode, _read(out_path), _read(err_path), seconds, traces, digests, changed)
    return result, received


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
    # The trace comparison loads sqlite3: not needed for --help or a usage error.
    from seedlock.audit import compare

    command = command_of(args)
    if not command:
        raise UsageError("missing command (seedlock check [options] -- CMD ...)")
    if args.runs < 2:
        raise UsageError(f"--runs must be at least 2, got {args.runs}")
    try:
        args.resolved_seed = resolve_seed(args.seed, Path(CACHE_DIR))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    work = args.keep or tempfile.mkdtemp(prefix="seedlock-check-")
    os.makedirs(work, exist_ok=True)
    try:
        outputs = _Outputs(args.outputs, work) if args.outputs else None
    except BaseException:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        raise
    seeded = "not seeded" if args.no_seed else f"seed {format_seed(args.resolved_seed)}"
    runs: list[_Run] = []
    try:
        for index in range(args.runs):
            print(f"seedlock check: run {index + 1}/{args.runs} ({printable(seeded, 80)}) ...",
                  end="", file=sys.stderr, flush=True)  # fmt: skip
            try:
                result, received = _once(args, command, index, work, outputs)
            except UsageError:
                print(file=sys.stderr)  # end the progress line
                raise
            runs.append(result)
            traces = ", ".join(result.traces) or "no trace (torch not used)"
            print(f" exit {result.returncode} in {result.seconds:.1f} s; {traces}",
                  file=sys.stderr, flush=True)  # fmt: skip
            if received:  # the user (or a supervisor) asked the command to stop
                print("seedlock check: interrupted", file=sys.stderr)
                return 128 + received[0]
        verdict = _verdict(runs, compare)
    finally:
        if outputs is not None and runs:
            outputs.put_back(os.path.join(work, f"run{len(runs)}", "outputs"), copy=bool(args.keep))
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
        tail = "\n".join(printable(line, 300) for line in bad.stderr.strip().splitlines()[-8:])
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
                f"  run 1: {printable(numbers['a'], 300)}\n"
                f"  run {index}: {printable(numbers['b'], 300)}"
            )
        changed = sorted(
            k for k in set(first.outputs) | set(other.outputs)
            if k not in first.changed and first.outputs.get(k) != other.outputs.get(k)
        )  # fmt: skip
        if changed:
            shown = ", ".join(printable(k, 120) for k in changed)
            problems.append(f"output files differ (run 1 vs run {index}): {shown}")
        if problems:
            break
    events = sum(details.get("events", {}).values())
    files = len([k for k in first.outputs if k not in first.changed])
    numbers_count = len(_NUMBER.findall(first.stdout))
    in_place = sorted({k for r in runs for k in r.changed})
    if problems:
        text = "NOT reproducible\n" + "\n".join(problems)
    else:
        text = (
            f"reproducible: {len(runs)} runs agree bit for bit: {events} trace events, "
            f"{numbers_count} numbers on stdout, {files} output file(s), exit {first.returncode}"
        )
    if in_place:
        shown = ", ".join(printable(k, 120) for k in in_place)
        text += (
            f"\nnot compared: {shown} existed before the check and changed; the folder holds "
            f"more than {BACKUP_LIMIT >> 30} GiB, too much to set aside, so each run started "
            "from the previous run's version (point --outputs at the folder the command writes)"
        )
    details["changed_in_place"] = in_place
    return {"reproducible": not problems, "problems": problems, "text": text, **details}
