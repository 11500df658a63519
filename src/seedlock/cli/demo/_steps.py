"""The checks ``seedlock demo`` makes, each judged from its runs' results and described in words.

* runs 1 and 2: the same seed (unless ``--seed2``), each in a new process; they must agree bit
  for bit, every epoch's loss and every parameter;
* resume: run 1 again, interrupted mid-epoch by a checkpoint and finished by another process,
  with two DataLoader workers (runs 1 and 2 have none); it must agree with run 1 bit for bit: the
  loader resumes at exactly the next batch, and per-sample seeding makes the batches
  (augmentation included) independent of the number of workers;
* audit: :func:`seedlock.audit.check` on the MLP with a planted unseeded noise layer must find
  that layer, cause (c) nondeterministic computation (same inputs and RNG state, different
  output), and call the fixed layer reproducible.
"""

from __future__ import annotations

import textwrap
from typing import Any

from seedlock.cli.demo._training import PLANTED_NOISE, AuditResult, Interruption, RunResult

__all__ = [
    "accuracy",
    "compare_resume",
    "compare_runs",
    "judge_audit",
    "render_audit",
    "render_resume",
    "verdict",
]

FIX = (
    'draw the noise from seedlock.numpy_rng("demo", "noise"), a named stream seeded from the root '
    "seed and captured and restored with every RNG (in a Dataset: seedlock.data.sample_rng())"
)


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


def compare_runs(first: RunResult, second: RunResult) -> dict[str, Any]:
    """Runs 1 and 2 against each other (the top level of ``--json``)."""
    return {**_same_bits(first, second), "seeds": [first["seed"], second["seed"]],
            "runs": [first, second]}  # fmt: skip


def compare_resume(
    reference: RunResult, interruption: Interruption, resumed: RunResult
) -> dict[str, Any]:
    """The resumed run against the uninterrupted run 1 (the ``resume`` item of ``--json``)."""
    return {**_same_bits(reference, resumed), "compared_with": "run 1",
            "interrupted": interruption, "run": resumed}  # fmt: skip


def judge_audit(audited: AuditResult) -> dict[str, Any]:
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
        "fix": FIX,
        **audited,
    }


def verdict(comparison: dict[str, Any]) -> str:
    """One line on a comparison of two runs: bit-identical, or where they part."""
    if comparison["identical"]:
        return "bit-identical: yes (every epoch's loss and every parameter bit match)"
    epoch = comparison["first_differing_epoch"]
    losses = f"the loss differs from epoch {epoch} on" if epoch else "every epoch's loss matches"
    params = "match" if comparison["params_identical"] else "differ"
    return f"NOT bit-identical: {losses}, and the parameter hashes {params}"


def accuracy(result: RunResult) -> str:
    """A run's test accuracy, as a percentage and a count."""
    return f"{100 * result['accuracy']:.2f} % ({result['correct']}/{result['test_size']})"


def render_resume(reference: RunResult, resume: dict[str, Any]) -> list[str]:
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
        f"  test accuracy  resumed {accuracy(resumed)}, run 1 {accuracy(reference)}",
    ]


def render_audit(audit: dict[str, Any]) -> list[str]:
    """The audit section: the planted layer, check's report on it, the fix, the fixed check."""
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
        f"  planted        {module} after the ReLU adds N(0, {PLANTED_NOISE}) per activation "
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
