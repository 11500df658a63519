"""The first divergent op inside a module: what ``check``'s op re-run found, and how it reads.

When :func:`seedlock.audit.check` finds a module whose output differs with the same inputs and
RNG state (cause ``c``), it runs the step twice more recording the aten ops inside that module
only; :func:`find_op` compares those two traces and builds the :class:`OpFinding` the report
shows. Reading the traces needs SQLite only, not torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from seedlock._text import printable
from seedlock.audit._tracefile import connect as _connect
from seedlock.audit._tracefile import read_meta
from seedlock.audit.divergence import _suspects, compare

__all__ = ["OpFinding", "find_op", "thread_counts"]


@dataclass(frozen=True)
class OpFinding:
    """The op re-run's answer for one module: the first aten op whose output differed.

    Attributes
    ----------
    module
        The module the ops were recorded in (with the modules under it).
    op
        The first aten op whose output differed between the two re-runs (``"aten::sum"``), or
        ``None``: every recorded op agreed (the nondeterminism is not visible op by op).
    verdict
        For ``op``: what seedlock's table of known nondeterministic ops says about it
        (``str(seedlock.optable.explain(op))``); empty when ``op`` is ``None``.
    suspects
        The table's entries for the ops that ran in the module, one ``"name: when"`` per entry.
    threads
        ``torch.get_num_threads()`` when each of the two first runs started (run a, run b), or
        ``None`` where the traces do not record it.
    """

    module: str
    op: str | None
    verdict: str = ""
    suspects: list[str] = field(default_factory=list)
    threads: tuple[str, str] | None = None

    def lines(self) -> list[str]:
        """The finding as report lines (names escaped for the terminal).

        Returns
        -------
        list of str
            Indented lines, for :meth:`seedlock.audit.Report.__str__`.
        """
        module = printable(self.module, 200)
        if self.op is None:
            lines = [f"  op      none: every aten op in {module} agreed in a re-run"]
        else:
            lines = [f"  op      {printable(self.op, 100)}, first differing op in {module}"]
            lines += [f"          {printable(line, 400)}" for line in self.verdict.splitlines()]
        if self.threads is not None:
            a, b = (printable(t, 20) for t in self.threads)
            same = "same" if a == b else "DIFFER"
            lines.append(f"  threads run a {a}, run b {b} ({same})")
        if self.suspects:
            lines.append(f"  ops in {module} that seedlock's table lists:")
            lines += [f"    - {printable(s)}" for s in self.suspects]
        return lines


def find_op(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    module: str,
    threads: tuple[str, str] | None = None,
) -> OpFinding:
    """The first op inside ``module`` whose output differs between traces ``a`` and ``b``.

    Parameters
    ----------
    a, b
        Two traces of the same step recorded with ``ops_in=module``.
    module
        The module the ops were recorded in.
    threads
        The two first runs' thread counts, as their traces' meta recorded them; default
        ``None``: unknown.

    Returns
    -------
    OpFinding
        The first differing op (``None`` if there is none) with the op table's verdict on it,
        and the table's entries for every op that ran in the module.
    """
    # The op table (importlib.resources and a JSON file): only when an op is to be named.
    from seedlock.optable import explain

    report = compare(a, b)
    d = report.divergence
    op = d.op if d is not None and d.event == "op" else None
    db = _connect(os.fspath(a))
    try:
        ran = [r[0] for r in db.execute("SELECT DISTINCT op FROM events WHERE event = 'op'")]
    finally:
        db.close()
    return OpFinding(
        module=module,
        op=op,
        verdict=str(explain(op)) if op else "",
        suspects=_suspects(*sorted(set(ran))),
        threads=threads,
    )


def thread_counts(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> tuple[str, str] | None:
    """The thread counts traces ``a`` and ``b`` ran with, or ``None`` when either lacks them.

    Parameters
    ----------
    a, b
        Two trace files.

    Returns
    -------
    tuple of str or None
        ``(threads of a, threads of b)``: every count each run's root modules were called with
        (meta ``threads_seen``, ``"1,2"`` when a run changed it), else the count when the trace
        started (meta ``threads``).
    """
    counts = []
    for path in (a, b):
        meta = read_meta(path)
        counts.append(meta.get("threads_seen") or meta.get("threads"))
    ta, tb = counts
    return None if ta is None or tb is None else (ta, tb)
