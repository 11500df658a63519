"""``seedlock.audit.check``: is one step reproducible? Run it twice from one snapshot, compare.

Both runs start from the same model, optimizer and RNG state and are traced; the report says
where they diverge and why. The guide: ``docs/audit.md`` (``check``).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch

from seedlock import _registry
from seedlock._forking import fork
from seedlock.audit import targeted
from seedlock.audit.divergence import Report, compare
from seedlock.audit.targeted import Plan
from seedlock.audit.traces import trace
from seedlock.state import capture, restore

__all__ = ["check"]


def check(
    step_fn: Callable[[], Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    runs: int = 2,
    ops: bool = False,
    keep: str | os.PathLike[str] | None = None,
) -> Report:
    """Is ``step_fn`` reproducible? Run it ``runs`` times from one snapshot and compare.

    Before the first run, the model's and optimizer's state and every RNG
    (:func:`seedlock.capture`) are snapshotted; before each later run they are put back. Each
    run is traced; run 1 is compared with every other run. Afterwards the model, optimizer and
    RNGs are as after one run.

    Each run records fingerprints only (the cheap first pass). When two runs diverge, the step
    runs twice more from the snapshot (``rerun1.trace``, ``rerun2.trace``: the targeted re-run,
    :mod:`seedlock.audit.targeted`) recording the summaries of every event, and, when a
    module's output differed with the same inputs and RNG state (cause ``c``), the aten ops
    inside that module: ``Report.op`` names the first op whose output differed, the op table's
    verdict on it, the table's entries for the ops that ran there, and the two first runs'
    thread counts; ``Report.rerun`` says whether the re-run diverged again at that event.

    Parameters
    ----------
    step_fn
        The step, called with no argument (``lambda: train_step(batch)``).
    model
        The model the step trains: its state is snapshotted and its modules traced.
    optimizer
        The optimizer the step uses, snapshotted too; default ``None``.
    runs
        How many times to run the step, at least 2; default 2.
    ops
        Record every aten op and every summary in every run (the divergence itself is then
        the op); default ``False``: they are recorded only in the re-run described above.
    keep
        A folder to keep the traces in (``run1.trace``, ..., ``rerun1.trace``), made if missing;
        default ``None``: they are deleted.

    Returns
    -------
    Report
        The first comparison that is not reproducible, else the last one.

    Raises
    ------
    ValueError
        ``runs`` is less than 2.
    FileExistsError
        A ``run<i>.trace`` or ``rerun<i>.trace`` in ``keep`` exists and is not a seedlock trace.

    Examples
    --------
    >>> report = seedlock.audit.check(lambda: train_step(batch), model=model, optimizer=opt)
    >>> print(report)
    """
    if runs < 2:
        raise ValueError(f"runs must be at least 2, got {runs}")
    start = _Snapshot(model, optimizer)
    folder = os.fspath(keep) if keep is not None else tempfile.mkdtemp(prefix="seedlock-check-")
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"run{i + 1}.trace") for i in range(runs)]
    end: _Snapshot | None = None
    report: Report | None = None

    def run(path: str, steps: Plan | None = None) -> None:
        start.put_back()
        options: dict[str, Any] = {"ops": ops, "summaries": ops}
        if steps is not None:
            options = {"summaries": True, "ops_in": steps.ops_in, "until_step": steps.until_step}
        with trace(model, path, optimizer=optimizer, **options):
            step_fn()

    try:
        for index, path in enumerate(paths):
            run(path)
            if index == 0:
                with fork():  # keep the RNGs as run 1 left them
                    end = _Snapshot(model, optimizer)
            else:
                report = compare(paths[0], path)
                if not report.reproducible:
                    break
        assert report is not None
        steps = targeted.plan(report)
        if steps is not None:
            extra = [os.path.join(folder, f"rerun{i + 1}.trace") for i in range(2)]
            paths += extra
            for path in extra:
                run(path, steps)
            report = targeted.finish(report, extra[0], extra[1], steps)
    finally:
        if end is not None:
            end.put_back()
        if keep is None:
            for path in paths:
                if os.path.exists(path):
                    os.remove(path)
            os.rmdir(folder)
    assert report is not None
    return report


class _Snapshot:
    """A model's, an optimizer's and every RNG's state, to put back."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        self.model, self.optimizer = model, optimizer
        self.model_state = copy.deepcopy(model.state_dict())
        self.optimizer_state = (
            copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
        )
        self.rng = capture()

    def put_back(self) -> None:
        self.model.load_state_dict(self.model_state)
        if self.optimizer is not None and self.optimizer_state is not None:
            self.optimizer.load_state_dict(copy.deepcopy(self.optimizer_state))
        # A generator the step registered (a seedlock stream made on first use) is made again
        # by the step, at the start of its stream: a snapshot taken before does not hold it.
        for name in set(_registry.entries()) - set(self.rng.generators):
            _registry.unregister(name)
        restore(self.rng)
