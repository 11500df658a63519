"""The trace comparisons of one ``seedlock check``, made once, and its targeted re-run.

Every trace pair is compared once (:class:`Comparisons` keeps the reports): the verdict, the
HTML report and the decision to re-run all read the same one. When the first pass's traces
diverge, :func:`targeted_rerun` runs the command twice more with what
:mod:`seedlock.audit.targeted` plans (summaries up to the divergent step, the aten ops inside
the diverging module), and the report of that pair gains what they found.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from seedlock._text import printable
from seedlock.audit import targeted
from seedlock.audit.divergence import Report
from seedlock.cli._check_verdict import Run

__all__ = ["Comparisons", "targeted_rerun"]


class Comparisons:
    """``compare(a, b)`` of two traces, each pair compared once."""

    def __init__(self, compare: Callable[[str, str], Report]) -> None:
        self._compare = compare
        self.reports: dict[tuple[str, str], Report] = {}
        #: The traces to plot for a pair: the re-run's, which hold summaries, when there is one.
        self.plots: dict[tuple[str, str], tuple[str, str]] = {}

    def __call__(self, a: str, b: str) -> Report:
        if (a, b) not in self.reports:
            self.reports[a, b] = self._compare(a, b)
        return self.reports[a, b]

    def first_divergence(self, runs: list[Run]) -> tuple[str, Report] | None:
        """The first trace (by name) of the first run that differs from run 1, and its report."""
        for other in runs[1:]:
            for name in sorted(set(runs[0].traces) & set(other.traces)):
                report = self(runs[0].traces[name], other.traces[name])
                if not report.reproducible:
                    return name, report
        return None


def targeted_rerun(
    comparisons: Comparisons,
    found: tuple[str, Report],
    steps: targeted.Plan,
    execute: Callable[[int, dict[str, str], str], Run | None],
) -> None:
    """Run the command twice more as ``steps`` says (``execute(i, environment, what)``, ``None``
    when interrupted) and fold what the two traces named like the divergent one show into its
    report."""
    name, report = found
    what = ["summaries"] + ([f"ops in {printable(steps.ops_in, 120)}"] if steps.ops_in else [])
    reruns: list[Any] = []
    for i in (1, 2):
        run = execute(i, steps.environment(), f"{', '.join(what)}, up to step {steps.until_step}")
        if run is None:
            return
        reruns.append(run.traces.get(name))
    if None in reruns:
        print(f"seedlock check: the re-runs wrote no {printable(name)}: no detail added",
              file=sys.stderr)  # fmt: skip
        return
    key = (report.a, report.b)
    comparisons.reports[key] = targeted.finish(report, reruns[0], reruns[1], steps)
    comparisons.plots[key] = (reruns[0], reruns[1])
