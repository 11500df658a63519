"""``seedlock demo``: train one small model twice, in two processes, and compare the bits; then
interrupt the same training mid-epoch and finish it in another process, and compare again.

Each run is a fresh Python interpreter (``seedlock demo --child OUT.json``, a private mode) that:

1. fixes the ``str`` hash seed (:func:`seedlock.ensure_hash_seed` re-executes it if needed),
2. pins torch to one CPU thread,
3. calls ``seedlock.seed_everything(seed, deterministic=True)``,
4. trains an MLP 64-32-10 with dropout on scikit-learn's bundled ``load_digits`` images (or, without
   scikit-learn, on a synthetic set drawn from a seedlock-derived generator) with Adam, fed by
   ``seedlock.data.loader(shuffle=True)``. Every sample fetched is augmented with a brightness
   factor from ``np.random`` and gaussian noise from torch's global RNG; the loader seeds both
   from ``(root, epoch, index)`` right before the fetch (per-sample seeding),
5. writes JSON: every epoch's mean loss as ``float.hex()`` (exact bits), a SHA-256 of every
   parameter's raw bytes in ``named_parameters()`` order, the test accuracy, the seed report and
   the torch version.

The resume step (``--no-resume`` skips it) trains run 1 again in two more processes, with two
DataLoader workers (runs 1 and 2 have none):

* the *interrupted* run stops after about 60 % of the steps, in the middle of an epoch, saves
  ``{"model", "optimizer", "rng": seedlock.state_dict(), "loader": loader.state_dict(), "step"}``
  (and the loss summed so far) with ``torch.save`` and exits;
* the *resumed* run, started once the interrupted one has exited, loads that checkpoint with
  ``torch.load(path, weights_only=True)``, restores the model, the optimizer, every RNG and the
  loader's position, and finishes the training. Its loss bits and parameter hash must equal run
  1's: the loader resumes at exactly the next batch, and per-sample seeding makes the batches
  (augmentation included) independent of the number of workers.

The audit step (``--no-audit`` skips it) shows the other half of seedlock: finding out *why* runs
differ. In one more process it builds the same MLP with one extra layer, ``noise``, planted after
the ReLU: it adds gaussian noise drawn from an *unseeded* ``np.random.default_rng()`` (OS entropy,
which no seed reaches: a classic bug). :func:`seedlock.audit.checking` runs one training step of it
twice from the same snapshot (model, optimizer, every RNG) and reports the first divergence: the
``noise`` layer's output, cause (c) nondeterministic computation (same inputs and RNG state,
different output), with the size of the difference. Then the same check on the fixed layer, which
draws from ``seedlock.numpy_rng("demo", "noise")`` (seeded from the root seed, captured and restored
with every other RNG), says reproducible.

The two full runs, the interrupted run and the audit run at the same time. The parent prints the
runs side by side, the resume section, the audit section and a verdict on both checks. Separate
processes, because that is what re-running (or restarting) a script is: nothing (caches, thread
pools, the hash seed, draws made at import time) can leak from one run into the other.

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
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import torch

__all__ = ["add_arguments", "run"]

INSTALL_HINT = "pip install 'seedlock[demo]'"

_HIDDEN = 32
_DROPOUT = 0.2
_BATCH = 32
_LR = 0.01
_TEST_SIZE = 360  # load_digits has 1797 images: the last 360 are the test set
_N_SAMPLES = 1797
_N_FEATURES = 64
_N_CLASSES = 10
_BRIGHTNESS = (0.9, 1.1)  # each sample's pixels times U(0.9, 1.1), drawn from np.random
_NOISE = 0.05  # plus N(0, 0.05) per pixel, drawn from torch's global RNG
_INTERRUPT_AT = 0.6  # the interrupted run stops after about this fraction of its steps
_RESUME_WORKERS = 2  # DataLoader workers of the interrupted and the resumed run
_PLANTED = "noise"  # the audit's planted layer, inserted after the ReLU
_PLANTED_NOISE = 0.1  # it adds N(0, 0.1) per activation
_FIX = (
    'draw the noise from seedlock.numpy_rng("demo", "noise"), a named stream seeded from the root '
    "seed and captured and restored with every RNG (in a Dataset: seedlock.data.sample_rng())"
)


class RunResult(TypedDict):
    """What one child run writes (the ``runs`` items of ``--json``, and ``resume.run``)."""

    seed: int
    data: str
    epochs: int
    workers: int
    loss_hex: list[str]
    params_sha256: str
    param_values: int
    accuracy: float
    correct: int
    test_size: int
    threads: int
    torch_version: str
    seed_report: dict[str, Any]


class AuditResult(TypedDict):
    """What the audit run writes (``audit`` of ``--json``, without ``found`` and ``fix``)."""

    planted_module: str  # the planted layer's path in the trace, e.g. "Sequential.noise"
    planted: dict[str, Any]  # seedlock.audit.checking's Report.to_dict(), trace paths left out
    planted_text: str  # str(Report)
    fixed: dict[str, Any]  # the same, with the layer drawing from seedlock.numpy_rng
    fixed_text: str


class Interruption(TypedDict):
    """What the interrupted run writes (``resume.interrupted`` of ``--json``)."""

    step: int  # optimizer steps taken before the checkpoint
    total_steps: int
    epoch: int  # the epoch in progress, from 1
    batch: int  # how many of its batches were trained on
    batches_per_epoch: int
    loader_state: dict[str, Any]  # loader.state_dict() as saved
    checkpoint_bytes: int
    workers: int


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
        "layer, checked twice by seedlock.audit.checking, then the fixed layer)",
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
    from seedlock.backends.torch import TorchBackend

    if not TorchBackend().available():
        print(
            "seedlock demo trains a PyTorch model, and torch is not installed in this Python "
            f"({sys.executable}).\nInstall what the demo needs with: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    if args.child is not None and args.audit:
        args.child.write_text(json.dumps(_audit(args.seed)), encoding="utf-8")
        return 0
    if args.child is not None:
        result = _train(
            args.seed,
            args.epochs,
            workers=args.workers,
            interrupt=args.interrupt,
            resume=args.resume,
        )
        args.child.write_text(json.dumps(result), encoding="utf-8")
        return 0

    seeds = (args.seed, args.seed if args.seed2 is None else args.seed2)
    with tempfile.TemporaryDirectory(prefix="seedlock-demo-") as tmp:
        launched = _launch(
            seeds, args.epochs, Path(tmp), resume=not args.no_resume, audit=not args.no_audit
        )
    if launched is None:
        return 2
    runs, resumed, audited = launched
    comparison = _compare(runs[0], runs[1])
    reproducible = comparison["identical"]
    if resumed is not None:
        comparison["resume"] = _compare_resume(runs[0], *resumed)
        reproducible = reproducible and comparison["resume"]["identical"]
    comparison = {"reproducible": reproducible, **comparison}
    found = True
    if audited is not None:
        comparison["audit"] = _judge_audit(audited)
        found = comparison["audit"]["found"]
    if args.json:
        print(json.dumps(comparison, indent=2))
    else:
        print(_render(runs[0], runs[1], comparison))
    return 0 if reproducible and found else 1


# -- parent ---------------------------------------------------------------------------------------


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
    again = ["--seed", str(seeds[0]), "--workers", str(_RESUME_WORKERS)]
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


def _first_difference(a: list[str], b: list[str]) -> int | None:
    """The first epoch (from 1) whose loss bits differ, or ``None``."""
    for epoch, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            return epoch
    return None if len(a) == len(b) else min(len(a), len(b)) + 1


def _same_bits(a: RunResult, b: RunResult) -> dict[str, Any]:
    """Do two runs agree bit for bit: every epoch's loss and every parameter?"""
    epoch = _first_difference(a["loss_hex"], b["loss_hex"])
    params_identical = a["params_sha256"] == b["params_sha256"]
    return {
        "identical": epoch is None and params_identical,
        "first_differing_epoch": epoch,
        "params_identical": params_identical,
    }


def _compare(first: RunResult, second: RunResult) -> dict[str, Any]:
    return {**_same_bits(first, second), "seeds": [first["seed"], second["seed"]],
            "runs": [first, second]}  # fmt: skip


def _compare_resume(
    reference: RunResult, interruption: Interruption, resumed: RunResult
) -> dict[str, Any]:
    """The resumed run against the uninterrupted run 1 (the ``resume`` item of ``--json``)."""
    return {**_same_bits(reference, resumed), "compared_with": "run 1",
            "interrupted": interruption, "run": resumed}  # fmt: skip


def _judge_audit(audited: AuditResult) -> dict[str, Any]:
    """Did the audit find the planted layer (its path, cause (c)) and call the fixed one
    reproducible? (the ``audit`` item of ``--json``; ``ok`` false makes the demo exit 1)."""
    divergence = audited["planted"].get("divergence")
    found = (
        not audited["planted"]["reproducible"]
        and divergence is not None
        and divergence["module"] == audited["planted_module"]
        and divergence["cause"] == "c"
    )
    fixed = bool(audited["fixed"]["reproducible"])
    return {
        "ok": found and fixed,
        "found": found,
        "fixed_reproducible": fixed,
        "fix": _FIX,
        **audited,
    }


def _verdict(comparison: dict[str, Any]) -> str:
    if comparison["identical"]:
        return "bit-identical: yes (every epoch's loss and every parameter bit match)"
    epoch = comparison["first_differing_epoch"]
    losses = f"the loss differs from epoch {epoch} on" if epoch else "every epoch's loss matches"
    params = "match" if comparison["params_identical"] else "differ"
    return f"NOT bit-identical: {losses}, and the parameter hashes {params}"


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


def _render_resume(reference: RunResult, resume: dict[str, Any]) -> list[str]:
    """The resume section: where the run stopped, how it resumed, its bits next to run 1's."""
    stop: Interruption = resume["interrupted"]
    resumed: RunResult = resume["run"]
    epoch = resume["first_differing_epoch"]
    losses = (
        f"differs from run 1's from epoch {epoch} on"
        if epoch
        else "every epoch's loss bits match run 1's"
    )
    return [
        "resume: run 1 again, interrupted mid-epoch, then finished by a new process",
        f"  interrupted    after step {stop['step']} of {stop['total_steps']} (epoch "
        f"{stop['epoch']} of {resumed['epochs']}, batch {stop['batch']} of "
        f"{stop['batches_per_epoch']}): checkpoint, exit",
        "  checkpoint     torch.save({model, optimizer, rng: seedlock.state_dict(), "
        "loader: loader.state_dict(),",
        f"                 step, loss so far}}), {stop['checkpoint_bytes']:,} bytes",
        "  resumed        a new process: torch.load(weights_only=True), load_state_dict() of each "
        "part,",
        f"                 then the last {stop['total_steps'] - stop['step']} steps",
        f"  workers        {stop['workers']} DataLoader workers in both processes, "
        f"{reference['workers']} in runs 1 and 2: per-sample seeding",
        "                 makes the batches, augmentation included, independent of the worker "
        "count",
        f"  loss           {losses}",
        f"  params run 1   {reference['params_sha256']}",
        f"  params resumed {resumed['params_sha256']}",
        f"  test accuracy  resumed {_accuracy(resumed)}, run 1 {_accuracy(reference)}",
    ]


def _render_audit(audit: dict[str, Any]) -> list[str]:
    """The audit section: the planted layer, check's report on it, the fix, the fixed check."""
    import textwrap

    module = audit["planted_module"]
    indent = " " * 17
    if audit["found"]:
        finding = f"found the planted layer {module}, cause (c)"
    else:
        finding = f"did NOT find the planted layer {module} with cause (c): a demo failure"
    fixed = (
        "the fixed model is reproducible"
        if audit["fixed_reproducible"]
        else "the fixed model is NOT reproducible: a demo failure"
    )
    report = audit["planted_text"].splitlines()
    fixed_report = audit["fixed_text"].splitlines()
    return [
        "audit: one training step of the MLP with a planted layer, run twice from one snapshot by",
        "       seedlock.audit.check (model, optimizer and every RNG put back before the 2nd run)",
        f"  planted        {module} after the ReLU adds N(0, {_PLANTED_NOISE}) per activation "
        "drawn from an unseeded",
        f"{indent}np.random.default_rng(): OS entropy, which no seed reaches (a classic bug)",
        f"  report         {report[0]}",
        *[indent + line for line in report[1:]],
        *textwrap.wrap(
            audit["fix"], width=100, initial_indent="  fix            ", subsequent_indent=indent
        ),
        f"  fixed model    {fixed_report[0]}",
        *[indent + line for line in fixed_report[1:]],
        f"  result         {finding}; {fixed}",
    ]


def _render(first: RunResult, second: RunResult, comparison: dict[str, Any]) -> str:
    resume = comparison.get("resume")
    low, high = _BRIGHTNESS
    lines = [
        "seedlock demo: the same training run twice, each in a fresh Python process"
        + ("; then interrupted and resumed" if resume else ""),
        f"  model          MLP {_N_FEATURES}-{_HIDDEN}-{_N_CLASSES} (ReLU, dropout {_DROPOUT}), "
        f"{first['param_values']:,} parameters; Adam lr {_LR}, batch {_BATCH}, "
        f"{first['epochs']} epochs",
        f"  data           {first['data']}",
        f"  augmentation   per sample: brightness x U({low}, {high}) from np.random, noise "
        f"N(0, {_NOISE}) from torch's",
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
        f"test accuracy    run 1 {_accuracy(first)}, run 2 {_accuracy(second)}",
        "",
    ]
    if resume:
        lines += [*_render_resume(first, resume), ""]
    audit = comparison.get("audit")
    if audit:
        lines += [*_render_audit(audit), ""]
    if first["seed"] != second["seed"]:
        lines.append(
            f"(expected: the runs used different seeds, {first['seed']} and {second['seed']}; "
            "without --seed2 both use --seed)"
        )
    lines += ["verdict", f"  run 1 vs run 2     {_verdict(comparison)}"]
    if resume:
        lines.append(f"  resumed vs run 1   {_verdict(resume)}")
    if audit and not audit["ok"]:
        lines.append("  audit              FAILED: see the audit section above")
    return "\n".join(lines)


def _loss(hex_value: str) -> str:
    return f"{float.fromhex(hex_value):.10f} {hex_value}"


def _accuracy(result: RunResult) -> str:
    return f"{100 * result['accuracy']:.2f} % ({result['correct']}/{result['test_size']})"


# -- child ----------------------------------------------------------------------------------------


class _AugmentedImages:
    """The training images; each one fetched comes with fresh random brightness and noise.

    Both are drawn from the *global* generators (``np.random``, torch's CPU RNG), which
    ``seedlock.data.loader`` seeds right before each sample with ``derive("data", epoch, index,
    ...)``: what a sample gets depends on ``(seed, epoch, index)`` only, not on which worker
    fetched it, how many there are, or what the process did before (a resume).
    A plain class at module level: DataLoader workers started by spawn or forkserver import it.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np
        import torch

        brightness = float(np.random.uniform(*_BRIGHTNESS))
        noise = _NOISE * torch.randn(_N_FEATURES)
        return self.features[index] * brightness + noise, self.labels[index]


def _interrupt_step(epochs: int, batches_per_epoch: int) -> int:
    """The step the interrupted run stops after: about 60 % of the run, never at an epoch's end
    (a resume mid-epoch is the hard case: it needs the loader's position inside the epoch)."""
    step = max(1, round(_INTERRUPT_AT * epochs * batches_per_epoch))
    if step % batches_per_epoch == 0:
        step -= batches_per_epoch // 2
    return step


def _train(
    seed: int,
    epochs: int,
    *,
    workers: int = 0,
    interrupt: Path | None = None,
    resume: Path | None = None,
) -> RunResult | Interruption:
    """One run, in this (fresh) process; may re-execute it first to fix the hash seed.

    With ``interrupt``, stop at :func:`_interrupt_step`, save a checkpoint there and return
    where it stopped; with ``resume``, start from such a checkpoint.
    """
    from seedlock.seeding import ensure_hash_seed, seed_everything

    # Before anything heavy is imported: this may replace the process (os.execv) with one
    # started with PYTHONHASHSEED set, the only way to fix str hashing.
    ensure_hash_seed(seed)
    import torch

    from seedlock.data import loader as seedlock_loader
    from seedlock.state import load_state_dict, state_dict

    # CPU kernels split float reductions (matmul, sum) across threads and add the partial sums
    # in an order that depends on the thread count, which torch sets from the number of cores:
    # with 1 thread the bits no longer depend on how many cores the machine has.
    torch.set_num_threads(1)
    report = seed_everything(seed, deterministic=True)

    features, labels, data = _dataset()
    train_x, train_y = features[:-_TEST_SIZE], labels[:-_TEST_SIZE]
    test_x, test_y = features[-_TEST_SIZE:], labels[-_TEST_SIZE:]
    # The shuffle order is a function of (seed, epoch); the loader draws nothing from the global
    # torch RNG, so the dropout masks below never depend on the data pipeline.
    loader = seedlock_loader(
        _AugmentedImages(train_x, train_y),
        batch_size=_BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    # Initial weights and dropout masks come from the global torch RNG, seeded above.
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=_LR)
    step, loss_hex, total, count = 0, [], 0.0, 0
    if resume is not None:
        # weights_only=True: tensors, str, int, float and containers only, no pickled objects.
        checkpoint = torch.load(resume, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        # Last: building the model above drew its (discarded) initial weights from the RNG.
        load_state_dict(checkpoint["rng"])
        step = checkpoint["step"]
        loss_hex = list(checkpoint["loss_hex"])
        total, count = checkpoint["loss_sum"], checkpoint["loss_count"]
    batches = len(loader)
    stop_at = None if interrupt is None else _interrupt_step(epochs, batches)

    model.train()
    # loader.epoch is the epoch the next iter() starts or, after load_state_dict, resumes.
    while loader.epoch < epochs:
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            torch.autograd.backward(loss)  # loss.backward(), which torch leaves untyped
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
            step += 1
            if interrupt is not None and step == stop_at:
                position = loader.state_dict()
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": state_dict(),
                        "loader": position,
                        "step": step,
                        # The loss so far, so the resumed run reports every epoch's loss.
                        "loss_hex": loss_hex,
                        "loss_sum": total,
                        "loss_count": count,
                    },
                    interrupt,
                )
                return Interruption(
                    step=step,
                    total_steps=epochs * batches,
                    epoch=position["epoch"] + 1,
                    batch=position["batches"],
                    batches_per_epoch=batches,
                    loader_state=position,
                    checkpoint_bytes=interrupt.stat().st_size,
                    workers=workers,
                )
        loss_hex.append((total / count).hex())
        total, count = 0.0, 0

    model.eval()
    with torch.no_grad():
        correct = int((model(test_x).argmax(dim=1) == test_y).sum().item())
    digest, values = _parameter_hash(model)
    return RunResult(
        seed=seed,
        data=data,
        epochs=epochs,
        workers=workers,
        loss_hex=loss_hex,
        params_sha256=digest,
        param_values=values,
        accuracy=correct / len(test_y),
        correct=correct,
        test_size=len(test_y),
        threads=torch.get_num_threads(),
        torch_version=str(torch.__version__),
        seed_report=report.to_dict(),
    )


def _mlp(planted: torch.nn.Module | None = None) -> torch.nn.Sequential:
    """The demo's MLP (layers ``0`` - ``3``); with ``planted``, that module too, named
    ``noise``, right after the ReLU. Its initial weights come from the global torch RNG."""
    from collections import OrderedDict

    import torch

    layers: list[tuple[str, torch.nn.Module]] = [
        ("0", torch.nn.Linear(_N_FEATURES, _HIDDEN)),
        ("1", torch.nn.ReLU()),
        ("2", torch.nn.Dropout(_DROPOUT)),
        ("3", torch.nn.Linear(_HIDDEN, _N_CLASSES)),
    ]
    if planted is not None:
        layers.insert(2, (_PLANTED, planted))
    return torch.nn.Sequential(OrderedDict(layers))


def _noise_layer(rng: Any) -> torch.nn.Module:
    """A layer that adds N(0, _PLANTED_NOISE) to each activation, drawn from the NumPy
    ``Generator`` ``rng`` (the audit's planted layer, and its fix)."""
    import torch

    class GaussianNoise(torch.nn.Module):
        def __init__(self, generator: Any) -> None:
            super().__init__()
            self.rng = generator

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            noise = self.rng.normal(0.0, _PLANTED_NOISE, size=tuple(x.shape))
            return x + torch.from_numpy(noise).to(x.dtype)

    return GaussianNoise(rng)


def _audit(seed: int) -> AuditResult:
    """The audit run, in this (fresh) process: one training step of the MLP with the planted
    layer (an unseeded NumPy generator) checked by :func:`seedlock.audit.checking`, then the same
    with the layer drawing from ``seedlock.numpy_rng("demo", "noise")``."""
    from seedlock.seeding import ensure_hash_seed, seed_everything

    ensure_hash_seed(seed)
    import numpy as np
    import torch

    from seedlock.audit import check
    from seedlock.streams import numpy_rng

    torch.set_num_threads(1)
    seed_everything(seed, deterministic=True)
    features, labels, _ = _dataset()
    x, y = features[:_BATCH], labels[:_BATCH]  # one batch of training images

    def audited(rng: Any) -> tuple[dict[str, Any], str]:
        model = _mlp(_noise_layer(rng))
        optimizer = torch.optim.Adam(model.parameters(), lr=_LR)
        model.train()

        def step() -> None:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            torch.autograd.backward(loss)
            optimizer.step()

        report = check(step, model=model, optimizer=optimizer)
        found = report.to_dict()
        for key in ("a", "b"):  # the paths of the traces, deleted by now
            found.pop(key, None)
        return found, str(report)

    # The classic bug: a generator made without a seed draws from OS entropy, and seedlock
    # cannot capture or restore a generator it does not know about.
    planted, planted_text = audited(np.random.default_rng())
    # The fix: a named seedlock stream, seeded from the root seed and registered, so check()
    # (like seedlock.capture / restore and every checkpoint) puts it back.
    fixed, fixed_text = audited(numpy_rng("demo", _PLANTED))
    return AuditResult(
        planted_module=f"Sequential.{_PLANTED}",
        planted=planted,
        planted_text=planted_text,
        fixed=fixed,
        fixed_text=fixed_text,
    )


def _parameter_hash(model: torch.nn.Module) -> tuple[str, int]:
    """SHA-256 of every parameter's raw bytes in ``named_parameters()`` order, and the count."""
    digest = hashlib.sha256()
    values = 0
    for _, param in model.named_parameters():
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        values += param.numel()
    return digest.hexdigest(), values


def _dataset() -> tuple[torch.Tensor, torch.Tensor, str]:
    """Features (float32), labels (int64) and what the data is, in words."""
    import torch

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        pass
    else:
        digits = load_digits()
        features = torch.from_numpy(digits.data / 16.0).to(torch.float32)
        labels = torch.from_numpy(digits.target).to(torch.int64)
        data = (
            "scikit-learn load_digits, bundled 8x8 images of digits: "
            f"{len(labels) - _TEST_SIZE} train / {_TEST_SIZE} test"
        )
        return features, labels, data

    from seedlock.streams import torch_generator

    # A fixed data set, like load_digits: its root is 0 whatever --seed is, so only the
    # training randomness follows the seed.
    g = torch_generator("demo", "synthetic-data", root=0)
    centers = torch.randn(_N_CLASSES, _N_FEATURES, generator=g)
    labels = torch.randint(0, _N_CLASSES, (_N_SAMPLES,), generator=g)
    features = centers[labels] + 1.5 * torch.randn(_N_SAMPLES, _N_FEATURES, generator=g)
    data = (
        f"synthetic (scikit-learn is not installed): {_N_CLASSES} Gaussian classes of "
        f"{_N_FEATURES} features, {_N_SAMPLES - _TEST_SIZE} train / {_TEST_SIZE} test"
    )
    return features, labels, data
