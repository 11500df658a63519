"""``seedlock.audit.check``: is one step reproducible? Run it twice from one snapshot, compare.

Both runs start from the same model, optimizer and RNG state and are traced; the report says
where they diverge and why. The guide: ``docs/audit.md`` (``check``).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from seedlock._forking import fork
from seedlock.audit.divergence import Report, compare
from seedlock.audit.opfinding import find_op, thread_counts
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

    When ``ops`` is false and the first divergence is a module's output that differs with the
    same inputs and RNG state (cause ``c``, event ``forward``), the step runs twice more from
    the snapshot with the aten ops inside that module recorded (``ops1.trace``,
    ``ops2.trace``), and ``Report.op`` names the first op whose output differed, the op
    table's verdict on it, the table's entries for the ops that ran there, and the two first
    runs' thread counts.

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
        Record every aten op in every run (the divergence itself is then the op); default
        ``False``: ops are recorded only in the re-run described above.
    keep
        A folder to keep the traces in (``run1.trace``, ..., ``ops1.trace``), made if missing;
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
        A ``run<i>.trace`` or ``ops<i>.trace`` in ``keep`` exists and is not a seedlock trace.

    Examples
    --------
    >>> report = seedlock.audit.check(lambda: train_step(batch), model=model, optimizer=opt)
    >>> print(report)
    """
    if runs < 2:
        raise ValueError(f"runs must be at least 2, got {runs}")
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    rng = capture()
    folder = os.fspath(keep) if keep is not None else tempfile.mkdtemp(prefix="seedlock-check-")
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"run{i + 1}.trace") for i in range(runs)]
    after: tuple[dict[str, Any], dict[str, Any] | None] | None = None
    report: Report | None = None

    def run(path: str, ops_in: str | None = None) -> None:
        model.load_state_dict(model_state)
        if optimizer is not None and optimizer_state is not None:
            optimizer.load_state_dict(copy.deepcopy(optimizer_state))
        restore(rng)
        with trace(model, path, optimizer=optimizer, ops=ops, ops_in=ops_in):
            step_fn()

    try:
        for index, path in enumerate(paths):
            run(path)
            if index == 0:
                with fork():  # keep the RNGs as run 1 left them
                    after = (
                        copy.deepcopy(model.state_dict()),
                        copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
                    )
                    after_rng = capture()
            else:
                report = compare(paths[0], path)
                if not report.reproducible:
                    break
        assert report is not None
        d = report.divergence
        if not ops and d is not None and d.cause == "c" and d.event == "forward":
            threads = thread_counts(paths[0], report.b)
            extra = [os.path.join(folder, f"ops{i + 1}.trace") for i in range(2)]
            paths += extra
            for path in extra:
                run(path, ops_in=d.module)
            report = replace(report, op=find_op(extra[0], extra[1], d.module, threads))
    finally:
        if after is not None:
            model.load_state_dict(after[0])
            if optimizer is not None and after[1] is not None:
                optimizer.load_state_dict(after[1])
            restore(after_rng)
        if keep is None:
            for path in paths:
                if os.path.exists(path):
                    os.remove(path)
            os.rmdir(folder)
    assert report is not None
    return report
