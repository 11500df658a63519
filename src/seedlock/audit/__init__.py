"""Determinism audit: fingerprints, traces, first-divergence localisation with its cause.

>>> import seedlock.audit as audit
>>> report = audit.check(lambda: train_step(batch), model=model, optimizer=opt)
>>> with audit.trace(model, "a.trace"): ...
>>> print(audit.compare("a.trace", "b.trace"))
"""

from __future__ import annotations

from seedlock.audit.checking import check
from seedlock.audit.comparison import CAUSES, Divergence, Report, compare
from seedlock.audit.fingerprints import Summary, fingerprint, summary
from seedlock.audit.traces import Tracer, trace

__all__ = [
    "CAUSES",
    "Divergence",
    "Report",
    "Summary",
    "Tracer",
    "check",
    "compare",
    "fingerprint",
    "summary",
    "trace",
]
