"""``seedlock demo``: train one small model twice, in two processes, and compare the bits; then
interrupt the same training mid-epoch and finish it in another process, and compare again.

This module is the parent: it starts the runs, each in a new Python interpreter (the training
program of :mod:`seedlock.cli.demo._training`), and prints them side by side with a verdict on
each check (:mod:`seedlock.cli.demo._steps`).

The two full runs, the interrupted run and the audit run at the same time; the resumed run once
the interrupted one has exited (``--no-resume`` skips those two, ``--no-audit`` the audit).
Separate processes, because that is what re-running (or restarting) a script is: nothing
(caches, thread pools, the hash seed, draws made at import time) can leak from one run into the
other.

The audit shows the other half of seedlock: finding out *why* runs differ. In one more process,
:func:`seedlock.audit.check` runs one training step of the same MLP with a planted unseeded noise
layer twice from the same snapshot (model, optimizer, every RNG) and reports the first
divergence; then the same check on the fixed layer, which says reproducible.

Exit status: 0 both checks hold (runs 1 and 2 bit-identical, the resumed run bit-identical to run
1) and the audit found the planted layer (and calls the fixed one reproducible), 1 one of these
does not hold, 2 the demo could not run (torch is not installed, or a run failed). The audit's
finding itself is expected: it is part of the show, not a failure.

``--seed2 N`` gives the second run another seed, to see what the check reports when runs differ:
the verdict on runs 1 and 2 becomes ``NOT bit-identical: the loss differs from epoch 1 on, and the
parameter hashes differ`` (the resumed run still matches run 1) and the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seedlock.backends.torch import TorchBackend
from seedlock.cli.demo import _steps
from seedlock.cli.demo._training import (
    BATCH,
    BRIGHTNESS,
    DROPOUT,
    HIDDEN,
    LR,
    N_CLASSES,
    N_FEATURES,
    NOISE,
    RESUME_WORKERS,
    AuditResult,
    Interruption,
    RunResult,
    run_child,
)

__all__ = ["INSTALL_HINT", "add_arguments", "run"]

INSTALL_HINT = "pip install 'seedlock[demo]'"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``seedlock demo``."""
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="root seed of the runs (default: 0)"
    )
    parser.add_argument(
        "--seed2",
        type=int,
        default=None,
        metavar="N",
        help="root seed of the second run (default: the same as --seed); "
        "a different one shows what the check reports when runs differ",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=5, metavar="N", help="epochs per run (default: 5)"
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="skip the resume step (run 1 again, interrupted mid-epoch and finished by a new "
        "process, compared with run 1)",
    )
    parser.add_argument(
        "--no-audit",
        action="store_true",
        help="skip the audit step (one training step of the MLP with a planted unseeded noise "
        "layer, checked twice by seedlock.audit.check, then the fixed layer)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the comparison as JSON instead of a table"
    )
    # Private: the mode each training process runs in.
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--interrupt", type=Path, default=None, help=argparse.SUPPRESS)
    stop.add_argument("--resume", type=Path, default=None, help=argparse.SUPPRESS)
    stop.add_argument("--audit", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run ``seedlock demo``; returns the exit status (0 both checks bit-identical and the audit
    found the planted layer, 1 not, 2 the demo could not run)."""
    if not TorchBackend().available():
        print(
            "seedlock demo trains a PyTorch model, and torch is not installed in this Python "
            f"({sys.executable}).\nInstall what the demo needs with: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    if args.child is not None:
        return run_child(args)

    seeds = (args.seed, args.seed if args.seed2 is None else args.seed2)
    with tempfile.TemporaryDirectory(prefix="seedlock-demo-") as tmp:
        launched = _launch(
            seeds, args.epochs, Path(tmp), resume=not args.no_resume, audit=not args.no_audit
        )
    if launched is None:
        return 2
    runs, resumed, audited = launched
    comparison = _steps.compare_runs(runs[0], runs[1])
    reproducible = comparison["identical"]
    if resumed is not None:
        comparison["resume"] = _steps.compare_resume(runs[0], *resumed)
        reproducible = reproducible and comparison["resume"]["identical"]
    comparison = {"reproducible": reproducible, **comparison}
    found = True
    if audited is not None:
        comparison["audit"] = _steps.judge_audit(audited)
        found = comparison["audit"]["found"]
    if args.json:
        print(json.dumps(comparison, indent=2))
    else:
        print(_render(runs[0], runs[1], comparison))
    return 0 if reproducible and found else 1


def _start(tmp: Path, name: str, args: list[str]) -> subprocess.Popen[bytes]:
    """``seedlock demo --child TMP/NAME.json ARGS`` in a new interpreter; stderr to a file."""
    command = [sys.executable, "-m", "seedlock.cli", "demo", "--child", str(tmp / f"{name}.json")]
    # A file, not a pipe, for stderr: a chatty child cannot block on a full pipe buffer.
    with (tmp / f"{name}.err").open("wb") as err:
        return subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL, stderr=err)


def _launch(
    seeds: Sequence[int], epochs: int, tmp: Path, *, resume: bool, audit: bool = False
) -> tuple[list[RunResult], tuple[Interruption, RunResult] | None, AuditResult | None] | None:
    """Train one run per seed, each in a new interpreter, all at once (each uses one thread);
    with ``resume``, also the interrupted run (at the same time) and the resumed run (once the
    interrupted one has exited); with ``audit``, also the audit run (at the same time).

    Returns the runs' results in seed order, with ``resume`` ``(where the interrupted run
    stopped, the resumed run's result)`` (else ``None``) and with ``audit`` the audit's result
    (else ``None``); ``None`` (after showing why) if a run failed.
    """
    checkpoint = tmp / "checkpoint.pt"
    # label, child arguments
    jobs = {
        f"run{number}": (f"run {number}/{len(seeds)} (seed {seed})", ["--seed", str(seed)])
        for number, seed in enumerate(seeds, 1)
    }
    # Run 1 again, with DataLoader workers (runs 1 and 2 have none).
    again = ["--seed", str(seeds[0]), "--workers", str(RESUME_WORKERS)]
    jobs["interrupted"] = (f"interrupted run (seed {seeds[0]})", [*again, "--interrupt"])
    jobs["resumed"] = (f"resumed run (seed {seeds[0]})", [*again, "--resume"])
    jobs["audit"] = (f"audit (seed {seeds[0]})", ["--seed", str(seeds[0]), "--audit"])

    def start_job(name: str) -> subprocess.Popen[bytes]:
        args = jobs[name][1] + ([str(checkpoint)] if name in ("interrupted", "resumed") else [])
        return _start(tmp, name, [*args, "--epochs", str(epochs)])

    first = [f"run{number}" for number in range(1, len(seeds) + 1)]
    first += ["interrupted"] if resume else []
    first += ["audit"] if audit else []
    what = f"{len(seeds)} runs" + (" and an interrupted run" if resume else "")
    what += ", plus an audit," if audit else ""
    print(f"training {what} at once, each in a new Python process ...", file=sys.stderr)
    started = time.perf_counter()
    pending = {name: start_job(name) for name in first}
    failed = False
    interruption: Interruption | None = None  # read once the interrupted run has exited
    while pending:
        time.sleep(0.02)
        for name, proc in list(pending.items()):
            if proc.poll() is None:
                continue
            del pending[name]
            label, elapsed = jobs[name][0], time.perf_counter() - started
            if proc.returncode != 0:
                failed = True
                print(f"{label} failed (exit status {proc.returncode}):", file=sys.stderr)
                print((tmp / f"{name}.err").read_text(errors="replace").rstrip(), file=sys.stderr)
            elif name != "interrupted":
                print(f"{label} done in {elapsed:.1f} s", file=sys.stderr)
            elif not failed:
                # The process has exited, so its checkpoint is complete: resume from it.
                stop: Interruption = json.loads(_read(tmp / "interrupted.json"))
                interruption = stop
                print(
                    f"{label} stopped after step {stop['step']} of {stop['total_steps']} in "
                    f"{elapsed:.1f} s; resuming it in a new process ...",
                    file=sys.stderr,
                )
                pending["resumed"] = start_job("resumed")
    if failed:
        return None
    results: list[RunResult] = [
        json.loads(_read(tmp / f"{name}.json")) for name in first[: len(seeds)]
    ]
    audited: AuditResult | None = json.loads(_read(tmp / "audit.json")) if audit else None
    if not resume or interruption is None:
        return results, None, audited
    resumed: RunResult = json.loads(_read(tmp / "resumed.json"))
    return results, (interruption, resumed), audited


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _render_report(report: dict[str, Any]) -> list[str]:
    """The seed report, short: what got which seed, the hash seed, the determinism switches."""
    seeded = [
        f"{e['backend']} {e['value']}" + ("" if e["status"] == "seeded" else f" ({e['status']})")
        for e in report["entries"]
        if e["value"] is not None
    ]
    absent = [f"{e['backend']} ({e['status']})" for e in report["entries"] if e["value"] is None]
    hs = report["hash_seed"]
    lines = [
        f"seed report of run 1: root seed {report['root']}, scheme {report['scheme']}",
        f"  seeded         {', '.join(seeded) or '-'}",
        f"  not seeded     {', '.join(absent) or '-'}",
        f"  hash seed      {'fixed ' + str(hs['value']) if hs['fixed'] else 'NOT fixed'}",
        f"  determinism    {len(report['determinism'])} switches changed",
    ]
    lines += [f"                 {change}" for change in report["determinism"]]
    return lines


def _render(first: RunResult, second: RunResult, comparison: dict[str, Any]) -> str:
    """What ``seedlock demo`` prints: the setup, the runs side by side, each check, the verdicts."""
    resume = comparison.get("resume")
    low, high = BRIGHTNESS
    lines = [
        "seedlock demo: the same training run twice, each in a fresh Python process"
        + ("; then interrupted and resumed" if resume else ""),
        f"  model          MLP {N_FEATURES}-{HIDDEN}-{N_CLASSES} (ReLU, dropout {DROPOUT}), "
        f"{first['param_values']:,} parameters; Adam lr {LR}, batch {BATCH}, "
        f"{first['epochs']} epochs",
        f"  data           {first['data']}",
        f"  augmentation   per sample: brightness x U({low}, {high}) from np.random, noise "
        f"N(0, {NOISE}) from torch's",
        "                 global RNG, seeded from (seed, epoch, index) by seedlock.data.loader",
        "  CPU threads    1 (float sums are split across threads, so other thread counts "
        "give other bits)",
        f"  torch          {first['torch_version']}",
        "",
        *_render_report(first["seed_report"]),
        "",
    ]
    head = ("epoch", f"run 1 loss (seed {first['seed']})", f"run 2 loss (seed {second['seed']})")
    rows = [(*head, "bits")]
    pairs = zip(first["loss_hex"], second["loss_hex"], strict=False)
    for epoch, (x, y) in enumerate(pairs, 1):
        rows.append((str(epoch), _loss(x), _loss(y), "identical" if x == y else "DIFFER"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines += [
        "  ".join([r[0].rjust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]), r[3]])
        for r in rows
    ]
    lines += [
        "",
        "parameter hash (sha256 of every parameter's bytes, in named_parameters() order)",
        f"  run 1  {first['params_sha256']}",
        f"  run 2  {second['params_sha256']}",
        f"test accuracy    run 1 {_steps.accuracy(first)}, run 2 {_steps.accuracy(second)}",
        "",
    ]
    if resume:
        lines += [*_steps.render_resume(first, resume), ""]
    audit = comparison.get("audit")
    if audit:
        lines += [*_steps.render_audit(audit), ""]
    if first["seed"] != second["seed"]:
        lines.append(
            f"(expected: the runs used different seeds, {first['seed']} and {second['seed']}; "
            "without --seed2 both use --seed)"
        )
    lines += ["verdict", f"  run 1 vs run 2     {_steps.verdict(comparison)}"]
    if resume:
        lines.append(f"  resumed vs run 1   {_steps.verdict(resume)}")
    if audit and not audit["ok"]:
        lines.append("  audit              FAILED: see the audit section above")
    return "\n".join(lines)


def _loss(hex_value: str) -> str:
    return f"{float.fromhex(hex_value):.10f} {hex_value}"
