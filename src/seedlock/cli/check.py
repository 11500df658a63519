"""``seedlock check``: run a command several times and say whether it is reproducible.

Each run happens under ``seedlock run`` semantics (same seed, same ``PYTHONHASHSEED``; with
``--no-seed`` the command gets neither; with ``--deterministic`` the determinism profile, as
``seedlock run --deterministic``) with every module traced (``seedlock.audit`` global mode, one
trace per process: ``main.trace`` or ``<RANK>.trace``). Then, against run 1, channel by channel
(:mod:`seedlock.cli._check_verdict`, one verdict line each):

* the traces: the first divergence, classified ((a) data, (b) random stream, (c)
  nondeterministic computation, (d) execution path);
* the numbers printed on stdout, in order, timing-like ones and lines matching ``--ignore`` left
  out (:mod:`seedlock.cli._check_compare`);
* the files the command writes under ``--outputs DIR``, byte for byte, files named per run
  paired by name pattern (:mod:`seedlock.cli._check_compare`); every run starts from DIR as it
  was before the check, and DIR ends as after one run (:mod:`seedlock.cli._check_outputs`);
* the exit status.

Each run's stdout and stderr are kept in the check's working folder (``--keep DIR`` keeps it);
``--show`` also copies them to stderr as they come (:mod:`seedlock.cli._check_stream`).
``--report PATH`` writes run 1's traces against those of the first run that differs (run 2 when
all agree) as one HTML file (:mod:`seedlock.audit.html`).

Exit status 0 reproducible, 1 not reproducible (or the command failed, even alike in every run),
2 usage error (one line on stderr), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from seedlock._bootstrap import TRACE_DIR_VAR
from seedlock._text import printable, reason
from seedlock.cli import UsageError, _child
from seedlock.cli import _check_kept as kept
from seedlock.cli._check_outputs import Outputs
from seedlock.cli._check_progress import Progress
from seedlock.cli._check_rerun import Comparisons, targeted_rerun
from seedlock.cli._check_stream import Streams
from seedlock.cli._check_verdict import Run, verdict
from seedlock.cli.run import CACHE_DIR, child_environment, command_of, resolve_seed
from seedlock.derivation import format_seed

__all__ = ["add_arguments", "run"]


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
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="run with the determinism profile on (as seedlock run --deterministic)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="REGEX",
        help="leave stdout lines matching REGEX out of the comparison (repeatable)",
    )
    parser.add_argument(
        "--show",
        action="store_true",
        help="copy each run's stdout and stderr to stderr as it runs",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep each run's traces and output here")
    parser.add_argument(
        "--against",
        metavar="DIR",
        help="use run 1 kept in DIR by --keep (on another machine, say) as run 1 here",
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument(
        "--report",
        metavar="PATH",
        help="also write the trace comparison as one HTML file (run 1 against the first run "
        "that differs)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ...")


#: What ``--outputs`` copies aside before run 1, at most, so every run can start from it.
BACKUP_LIMIT = 1 << 30


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")  # any bytes a command prints


def _execute(
    args: argparse.Namespace, command: list[str], run_dir: str, extra: dict[str, str] | None,
    prefix: str,
) -> tuple[Run, list[int]]:  # fmt: skip
    """Run the command once, traced into ``run_dir`` (its files not collected yet), after the
    progress line ``prefix``."""
    os.makedirs(run_dir, exist_ok=True)
    seed = None if args.no_seed else args.resolved_seed
    records = os.path.join(run_dir, "records")
    os.makedirs(records, exist_ok=True)
    env = child_environment(seed, deterministic=args.deterministic, record_dir=records)
    env[TRACE_DIR_VAR] = run_dir
    env.update(extra or {})
    out_path, err_path = os.path.join(run_dir, "stdout"), os.path.join(run_dir, "stderr")
    live = not args.show and sys.stderr.isatty()
    _progress(prefix, args.show)
    with (
        Streams(out_path, err_path, show=args.show) as streams,
        Progress(run_dir, prefix, live=live) as progress,
    ):
        start = time.perf_counter()
        out, err = streams.fds()

        def started() -> None:
            streams.started()
            progress.begin()

        try:
            returncode, received = _child.run(
                command, env, stdout=out, stderr=err, while_running=started
            )
        except OSError as exc:
            raise UsageError(f"cannot start {command[0]!r}: {reason(exc)}") from None
        seconds = time.perf_counter() - start
    traces = {p.name: str(p) for p in sorted(Path(run_dir).glob("*.trace"))}
    claimed = [p.name.removesuffix(".claim") for p in sorted(Path(run_dir).glob("*.trace.claim"))]
    result = Run(returncode, _read(out_path), _read(err_path), seconds, traces, folder=run_dir,
                 failed_traces=[name for name in claimed if name not in traces])  # fmt: skip
    return result, received


def _collect(result: Run, run_dir: str, outputs: Outputs | None, *, last: bool) -> None:
    """Move the files the run wrote under --outputs aside, recording their digests."""
    if outputs is not None:
        aside = os.path.join(run_dir, "outputs")
        result.outputs, result.changed, result.created = outputs.collect(aside, last=last)
    kept.save(run_dir, result)


def _patterns(texts: list[str]) -> list[re.Pattern[str]]:
    patterns = []
    for text in texts:
        try:
            patterns.append(re.compile(text))
        except re.error as exc:
            raise UsageError(f"--ignore {text!r} is not a regular expression: {exc}") from None
    return patterns


def _report(path: str, runs: list[Run], comparisons: Comparisons) -> None:
    """Write the HTML report of run 1 against the first run whose traces differ (run 2 when
    every run agrees); one line on stderr when no run wrote a trace."""
    # Rendering loads sqlite3: only when a report is asked for.
    from seedlock.audit import html

    found = comparisons.first_divergence(runs)
    index = 2
    if found is None:
        names = sorted(set(runs[0].traces) & set(runs[1].traces))
        if not names:
            print("seedlock check: no report: no trace to compare (torch not used)",
                  file=sys.stderr)  # fmt: skip
            return
        found = names[0], comparisons(runs[0].traces[names[0]], runs[1].traces[names[0]])
    else:
        index = next(i for i, r in enumerate(runs[1:], 2) if found[1].b in r.traces.values())
    name, report = found
    plot = comparisons.plots.get((report.a, report.b), (report.a, report.b))
    html.write(path, report, *plot, title=f"seedlock check: run 1 vs run {index}, {name}")
    print(f"seedlock check: report written to {printable(path)}", file=sys.stderr)


def _command(args: argparse.Namespace) -> list[str]:
    """The command to run, once every option is checked (a refusal before any run)."""
    # Loads sqlite3: not needed for --help.
    from seedlock.audit import html

    command = command_of(args)
    if not command:
        raise UsageError("missing command (seedlock check [options] -- CMD ...)")
    if args.runs < 2:
        raise UsageError(f"--runs must be at least 2, got {args.runs}")
    try:
        args.resolved_seed = resolve_seed(args.seed, Path(CACHE_DIR))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.report:
        html.check_path(args.report)
    if args.against and args.keep and os.path.realpath(args.against) == os.path.realpath(args.keep):
        raise UsageError("--against and --keep name the same folder: the runs here would replace "
                         "the run kept there (keep them in another folder)")  # fmt: skip
    return command


def _progress(text: str, show: bool) -> None:
    print(text, end="\n" if show else "", file=sys.stderr, flush=True)


class _Runs:
    """The runs of one check: run 1 (kept, with --against), the runs here, the re-runs."""

    def __init__(self, args: argparse.Namespace, command: list[str], work: str,
                 outputs: Outputs | None, comparisons: Comparisons) -> None:  # fmt: skip
        self.args, self.command, self.work = args, command, work
        self.outputs, self.comparisons = outputs, comparisons
        self.runs: list[Run] = [kept.load(args.against)] if args.against else []
        self.last_dir: str | None = None
        self.interrupted: int | None = None

    def once(self, label: str, folder: str, extra: dict[str, str] | None, last: bool | None,
             what: str) -> Run | None:  # fmt: skip
        """One run, ``None`` when interrupted; ``last=None``: the last unless its traces call
        for a targeted re-run (which must start from --outputs as it was)."""
        # The plan reads two traces (sqlite3): loaded by the comparisons already.
        from seedlock.audit import targeted

        args, run_dir = self.args, os.path.join(self.work, folder)
        try:
            prefix = f"seedlock check: {label} ({printable(what, 200)}) ..."
            result, received = _execute(args, self.command, run_dir, extra, prefix)
        except UsageError:
            if not args.show:
                print(file=sys.stderr)  # end the progress line
            raise
        traces = ", ".join(result.traces) or "no trace (torch not used)"
        done = f"exit {result.returncode} in {result.seconds:.1f} s; {traces}"
        print(f"seedlock check: {label}: {done}" if args.show else f" {done}",
              file=sys.stderr, flush=True)  # fmt: skip
        if received:  # the user (or a supervisor) asked the command to stop
            self.interrupted = received[0]
        if last is None:
            found = self.comparisons.first_divergence([*self.runs, result])
            last = (bool(received) or found is None or bool(args.against)
                    or targeted.plan(found[1]) is None)  # fmt: skip
        _collect(result, run_dir, self.outputs, last=last)
        self.last_dir = run_dir
        return None if received else result

    def _rerun(self, i: int, env: dict[str, str], what: str) -> Run | None:
        return self.once(f"targeted re-run {i}/2", f"rerun{i}", env, i == 2, what)

    def all(self, seeded: str) -> bool:
        """The runs, then a targeted re-run if their traces diverge; False when interrupted."""
        # The plan reads two traces (sqlite3): loaded by the comparisons already.
        from seedlock.audit import targeted

        runs = self.args.runs
        for index in range(len(self.runs), runs):
            label, final = f"run {index + 1}/{runs}", None if index == runs - 1 else False
            result = self.once(label, f"run{index + 1}", None, final, seeded)
            if result is None:
                return False
            self.runs.append(result)
        found = self.comparisons.first_divergence(self.runs)
        steps = targeted.plan(found[1]) if found and not self.args.against else None
        if found is not None and steps is not None:
            targeted_rerun(self.comparisons, found, steps, self._rerun)
        return self.interrupted is None


def run(args: argparse.Namespace) -> int:
    # The trace comparison loads sqlite3: not needed for --help or a usage error.
    from seedlock.audit import compare

    command = _command(args)
    ignore = _patterns(args.ignore)
    work = args.keep or tempfile.mkdtemp(prefix="seedlock-check-")
    os.makedirs(work, exist_ok=True)
    try:
        outputs = Outputs(args.outputs, work, limit=BACKUP_LIMIT) if args.outputs else None
        comparisons = Comparisons(compare)
        runs = _Runs(args, command, work, outputs, comparisons)
    except BaseException:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        raise
    seeded = "not seeded" if args.no_seed else f"seed {format_seed(args.resolved_seed)}"
    try:
        if not runs.all(seeded):
            print("seedlock check: interrupted", file=sys.stderr)
            return 128 + (runs.interrupted or 0)
        found = verdict(runs.runs, comparisons, ignore=ignore, outputs=outputs is not None,
                        backup_limit=BACKUP_LIMIT, seeded=not args.no_seed,
                        plots=comparisons.plots)  # fmt: skip
        if args.report:
            _report(args.report, runs.runs, comparisons)
    finally:
        if outputs is not None and runs.last_dir is not None:
            outputs.put_back(os.path.join(runs.last_dir, "outputs"), copy=bool(args.keep))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(found, indent=2, default=str))
    else:
        print(found["text"])
    return 0 if found["reproducible"] else 1
