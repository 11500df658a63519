"""The targeted re-run: what a first pass that found a divergence records again, and what it adds.

A first pass traces fingerprints only (cheap enough to leave on). Once two such traces diverge,
the runs are repeated twice more (:func:`seedlock.audit.check` in process, ``seedlock check``
as two more processes), recording what the first pass left out, and only where it matters:

* summaries (sum, max |x|, NaN and Inf counts) of every event up to the divergent step, for the
  size of the difference and the plot of the HTML report;
* for a module whose output differed with the same inputs and RNG state (cause ``c``), every
  aten op inside that module: the first op whose output differs is named with the op table's
  verdict (:mod:`seedlock.audit.opfinding`).

:func:`plan` says what to record, :func:`finish` folds the two re-run traces into the first
pass's report. The first pass's verdict stands: the re-run only adds detail, and when it does not
reproduce the divergence at the same event the report says so instead of guessing. Reading the
traces needs SQLite only, not torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from seedlock._bootstrap import TRACE_OPS_IN_VAR, TRACE_SUMMARIES_VAR, TRACE_UNTIL_STEP_VAR
from seedlock.audit._tracefile import connect
from seedlock.audit.divergence import Report
from seedlock.audit.opfinding import find_op, thread_counts

__all__ = ["Plan", "finish", "plan"]

_STATS = ("sum", "absmax", "nans", "infs")


@dataclass(frozen=True)
class Plan:
    """What a targeted re-run records.

    Attributes
    ----------
    until_step
        The optimizer steps after which recording stops (the divergent event's step).
    ops_in
        The module whose aten ops are recorded, or ``None``: none.
    """

    until_step: int
    ops_in: str | None

    def environment(self) -> dict[str, str]:
        """The plan as environment variables for a traced process (``seedlock check``).

        Returns
        -------
        dict
            ``SEEDLOCK_TRACE_SUMMARIES``, ``SEEDLOCK_TRACE_UNTIL_STEP`` and, with ``ops_in``,
            ``SEEDLOCK_TRACE_OPS_IN``.
        """
        env = {TRACE_SUMMARIES_VAR: "1", TRACE_UNTIL_STEP_VAR: str(self.until_step)}
        if self.ops_in is not None:
            env[TRACE_OPS_IN_VAR] = self.ops_in
        return env


def plan(report: Report) -> Plan | None:
    """What to record again for ``report``'s divergence, or ``None`` when nothing would help.

    Parameters
    ----------
    report
        The first pass's comparison.

    Returns
    -------
    Plan or None
        ``None`` when the runs agree, or the divergence is an execution path (cause ``d``) or
        the environment (cause ``e``), or the traces already hold summaries and ops.
    """
    d = report.divergence
    if d is None or d.cause in ("d", "e"):
        return None
    ops_in = d.module if d.cause == "c" and d.event == "forward" else None
    if ops_in is None and d.a.get("sum") is not None:
        return None  # summaries already there, no op to look for
    return Plan(d.step, ops_in)


def _nth_event(path: str, n: int) -> dict[str, Any] | None:
    """The ``n``-th event (from 0) of trace ``path`` that is not an op event."""
    db = connect(path)
    try:
        row = db.execute(
            "SELECT module, event, fingerprint, sum, absmax, nans, infs FROM events "
            "WHERE event != 'op' "
            "ORDER BY seq LIMIT 1 OFFSET ?",
            (n,),
        ).fetchone()
    finally:
        db.close()
    if row is None:
        return None
    return dict(zip(("module", "event", "fingerprint", *_STATS), row, strict=True))


def finish(report: Report, rerun_a: str | os.PathLike[str], rerun_b: str | os.PathLike[str],
           steps: Plan) -> Report:  # fmt: skip
    """``report`` with what the re-run traces ``rerun_a`` and ``rerun_b`` add.

    Parameters
    ----------
    report
        The first pass's comparison (traces without op events).
    rerun_a, rerun_b
        The two re-runs' traces, recorded as ``steps`` says.
    steps
        The plan they were recorded with (:func:`plan`).

    Returns
    -------
    Report
        The divergence's ``a`` and ``b`` sides with their summaries, when the re-runs reached
        the same event; ``op`` with the first differing op for cause ``c``; ``rerun`` saying
        whether the re-runs diverged again at that event.
    """
    d = report.divergence
    assert d is not None
    ra, rb = os.fspath(rerun_a), os.fspath(rerun_b)
    side_a, side_b = _nth_event(ra, d.seq), _nth_event(rb, d.seq)
    same_place = all(
        s is not None and (s["module"], s["event"]) == (d.module, d.event) for s in (side_a, side_b)
    )
    divergence = d
    repeated = False
    if same_place:
        assert side_a is not None and side_b is not None
        stats_a = {k: side_a[k] for k in _STATS}
        stats_b = {k: side_b[k] for k in _STATS}
        divergence = replace(d, a={**d.a, **stats_a}, b={**d.b, **stats_b})
        repeated = side_a["fingerprint"] != side_b["fingerprint"]
    op = None
    if steps.ops_in is not None:
        op = find_op(ra, rb, steps.ops_in, thread_counts(report.a, report.b))
    note = (
        "a re-run diverged again at this event"
        if repeated
        else "a re-run did not diverge at this event: the nondeterminism is intermittent"
        if same_place
        else "a re-run took another path before this event"
    )
    return replace(report, divergence=divergence, op=op, rerun=note)
