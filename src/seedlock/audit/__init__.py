"""Determinism audit: fingerprints, traces, first-divergence localisation with its cause.

>>> import seedlock.audit as audit
>>> report = audit.check(lambda: train_step(batch), model=model, optimizer=opt)
>>> with audit.trace(model, "a.trace"): ...
>>> print(audit.compare("a.trace", "b.trace"))

Names load on first use: comparing two stored traces (``seedlock diff``, ``seedlock check``'s
parent) needs SQLite only, not torch (~1.3 s to import).
"""

from __future__ import annotations

from seedlock import _lazy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seedlock.audit.checking import check
    from seedlock.audit.comparison import CAUSES, Divergence, Report, compare
    from seedlock.audit.fingerprints import Summary, fingerprint, summary
    from seedlock.audit.traces import Tracer, trace

_EXPORTS = {
    "CAUSES": "seedlock.audit.comparison",
    "Divergence": "seedlock.audit.comparison",
    "Report": "seedlock.audit.comparison",
    "Summary": "seedlock.audit.fingerprints",
    "Tracer": "seedlock.audit.traces",
    "check": "seedlock.audit.checking",
    "compare": "seedlock.audit.comparison",
    "fingerprint": "seedlock.audit.fingerprints",
    "summary": "seedlock.audit.fingerprints",
    "trace": "seedlock.audit.traces",
}
__all__ = [  # the keys of _EXPORTS (tests/test_imports.py checks)
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


def __getattr__(name: str) -> object:
    return _lazy.attribute(__name__, _EXPORTS, globals(), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
