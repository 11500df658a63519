"""The audit: where and why two runs, or two ranks, stop being bit-identical.

Guarantee: a difference in any bit of a traced tensor is found (up to fingerprint collisions),
and the first one in execution order is reported with its cause.

>>> report = seedlock.audit.check(lambda: train_step(batch), model=model, optimizer=opt)
>>> with seedlock.audit.trace(model, "a.trace"): ...
>>> print(seedlock.audit.compare("a.trace", "b.trace"))
>>> seedlock.audit.check_replicas(ddp_model)          # under torchrun: are the replicas equal?

Modules: ``fingerprints`` (hashes of tensors' exact bits), ``traces`` (a run's record),
``divergence`` (comparing two records: the first divergence and its cause), ``entropy`` (where
randomness no seed reaches entered a traced run), ``rerun`` (``check``: one step run twice),
``targeted`` (the re-run that adds sums and ops once runs diverge), ``opfinding`` (the first
divergent op), ``environment`` (the facts that change numerics), ``html`` (the report),
``replicas`` (``check_replicas``). Names load on first use: comparing two stored traces
(``seedlock diff``, ``seedlock check``'s parent) needs SQLite only, not torch.
The guide: ``docs/audit.md``.
"""

from __future__ import annotations

from seedlock import _lazy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seedlock.audit.divergence import CAUSES, Divergence, Report, compare
    from seedlock.audit.entropy import EntropySource
    from seedlock.audit.fingerprints import Summary, fingerprint, summary
    from seedlock.audit.opfinding import OpFinding
    from seedlock.audit.replicas import (
        ReplicaMismatchError,
        ReplicaReport,
        TensorMismatch,
        check_replicas,
    )
    from seedlock.audit.rerun import check
    from seedlock.audit.traces import Tracer, trace

_EXPORTS = {
    "CAUSES": "seedlock.audit.divergence",
    "Divergence": "seedlock.audit.divergence",
    "EntropySource": "seedlock.audit.entropy",
    "OpFinding": "seedlock.audit.opfinding",
    "Report": "seedlock.audit.divergence",
    "ReplicaMismatchError": "seedlock.audit.replicas",
    "ReplicaReport": "seedlock.audit.replicas",
    "TensorMismatch": "seedlock.audit.replicas",
    "check_replicas": "seedlock.audit.replicas",
    "Summary": "seedlock.audit.fingerprints",
    "Tracer": "seedlock.audit.traces",
    "check": "seedlock.audit.rerun",
    "compare": "seedlock.audit.divergence",
    "fingerprint": "seedlock.audit.fingerprints",
    "summary": "seedlock.audit.fingerprints",
    "trace": "seedlock.audit.traces",
}
__all__ = [  # the keys of _EXPORTS (tests/test_imports.py checks)
    "CAUSES",
    "Divergence",
    "EntropySource",
    "OpFinding",
    "ReplicaMismatchError",
    "ReplicaReport",
    "Report",
    "Summary",
    "TensorMismatch",
    "Tracer",
    "check",
    "check_replicas",
    "compare",
    "fingerprint",
    "summary",
    "trace",
]


__getattr__, __dir__ = _lazy.hooks(__name__, _EXPORTS, globals())
