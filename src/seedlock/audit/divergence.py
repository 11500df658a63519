"""Compare two traces: the first divergence in execution order, and why it happened.

The guide: ``docs/audit.md`` (traces and ``compare``).

The two traces are read side by side, event by event (streaming: memory stays bounded). The
first event where they disagree is classified:

``(a) input data differs``
    the batch entering the model differs: the data pipeline is not reproducible.
``(b) random stream differs``
    a module's output differs and so does the fingerprint of the RNG state just before it
    ran: something drew a different number of random values before it (an extra draw, an
    unseeded generator, another seed).
``(c) nondeterministic computation``
    same inputs, same RNG state, different output: the computation itself varies (a
    nondeterministic kernel, another thread count, a generator seedlock does not see). The
    table of known nondeterministic ops names suspects for the module and the op.
``(d) different execution path``
    the sequence of modules, events or ops differs (e.g. a loop over a ``set`` of str with
    another hash seed).
``(e) environment differs``
    the traces come from other library versions, CPU, GPU or thread count
    (:mod:`seedlock.audit.environment`): those facts, then the first divergent event.

With ``rtol`` / ``atol`` above zero, two events whose fingerprints differ still count as equal
when their summaries agree: same shape, NaN and Inf counts, and sum and max |x| within the
tolerance (``|a - b| <= atol + rtol * |b|``): a cross-hardware comparison at the level of
statistics, not of every element.

Where the traces recorded entropy that no seed reaches (an unseeded generator, ``os.urandom``, a
seed read from the clock: :mod:`seedlock.audit.entropy`) at or before the divergent event, the
report names each place (``Report.entropy``), those inside the diverging module's call first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from seedlock._text import printable
from seedlock.audit._tracefile import connect as _connect
from seedlock.audit._tracefile import read_meta
from seedlock.audit._tracefile import rows as _rows
from seedlock.audit.entropy import EntropySource, describe, implicated, read
from seedlock.audit.environment import Diffs, blame
from seedlock.audit.environment import lines as environment_lines

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seedlock.audit.opfinding import OpFinding

__all__ = ["CAUSES", "Divergence", "Report", "compare", "read_meta"]

CAUSES = {
    "a": "input data differs",
    "b": "random stream differs",
    "c": "nondeterministic computation",
    "d": "different execution path",
    "e": "environment differs",
}


@dataclass(frozen=True)
class Divergence:
    """Where two traces first disagree, and why.

    Attributes
    ----------
    seq, step
        The event's position in run a's trace (in run b's when run a's has ended) and the
        optimizer steps completed before it.
    module, kind, event, op
        The module path (or parameter name), module class, event kind (``batch``, ``forward``,
        ``grad_input``, ``grad``, ``param``, ``op``) and aten op of that event.
    cause, explanation
        The cause's letter, a key of :data:`CAUSES` (``"a"`` to ``"e"``; see the module
        docstring), and what happened, in words.
    a, b
        Each run's event: ``module``, ``event``, ``op``, ``fingerprint``, ``dtype``, ``shape``,
        ``sum``, ``absmax``, ``nans``, ``infs`` (``{"event": None}`` when that trace has ended).
    suspects
        For cause ``c``: entries of seedlock's table of known nondeterministic ops that match
        the module class or the op.
    also
        Other causes seen right after this event that this one would hide: ``("b",)`` when
        the batch differs (cause ``a``) and the parameters differ before the first step too.
    """

    seq: int
    step: int
    module: str
    kind: str | None
    event: str
    op: str | None
    cause: str
    explanation: str
    a: dict[str, Any]
    b: dict[str, Any]
    suspects: list[str] = field(default_factory=list)
    also: tuple[str, ...] = ()

    @property
    def cause_name(self) -> str:
        """The cause in words: ``CAUSES[cause]``, e.g. ``"random stream differs"``."""
        return CAUSES[self.cause]


@dataclass(frozen=True)
class Report:
    """The verdict of a comparison: ``reproducible`` and, if not, the first :class:`Divergence`.

    ``bool(report)`` is ``report.reproducible``; ``print(report)`` explains the verdict.

    Attributes
    ----------
    reproducible
        Whether every event matched and both traces have the same events.
    events
        How many events matched before the divergence (all of them when reproducible).
    divergence
        The first divergence, or ``None``.
    a, b
        The paths of the two traces.
    entropy
        The places where entropy that no seed reaches entered at or before the divergent
        event, one per place, the implicated ones (inside the diverging module's call, or for
        other events anywhere before it) first; empty when reproducible.
    op
        From :func:`seedlock.audit.check` for a module-level cause ``c``: the first aten op
        in that module that differed in a re-run (:class:`~seedlock.audit.opfinding.OpFinding`).
    environment
        For cause ``e``: the environment facts that differ, most likely cause first.
    rerun
        From a targeted re-run (:mod:`seedlock.audit.targeted`): whether it diverged again
        at the same event; empty when there was none.
    """

    reproducible: bool
    events: int
    divergence: Divergence | None
    a: str
    b: str
    entropy: tuple[EntropySource, ...] = ()
    op: OpFinding | None = None
    environment: Diffs = ()
    rerun: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data.

        Returns
        -------
        dict
            The attributes, the divergence as a dict with its ``cause_name`` added.
        """
        d = asdict(self)
        if self.divergence is not None:
            d["divergence"]["cause_name"] = self.divergence.cause_name
        d["environment"] = list(d["environment"])
        d["entropy"] = [
            {**vars(s), "description": s.description, "fix": s.fix} for s in self.entropy
        ]
        return d

    def __bool__(self) -> bool:
        return self.reproducible

    def __str__(self) -> str:
        # Module names, kinds and ops come from the traced program (or a hostile file): shown
        # escaped, so that none can drive the terminal or forge a line of the report.
        if self.reproducible:
            return f"reproducible: {self.events} events bit-identical"
        d = self.divergence
        assert d is not None
        where = printable(d.module, 200) + (f" ({printable(d.kind, 100)})" if d.kind else "")
        op = f", op {printable(d.op, 100)}" if d.op else ""
        lines = [
            f"NOT reproducible: first divergence at event {d.seq} of step {d.step}",
            f"  where   {where}, {printable(d.event, 40)}{op}",
            f"  cause   ({d.cause}) {d.cause_name}: {printable(d.explanation, 600)}",
        ]
        lines[1:1] = environment_lines(self.environment)
        for label, side in (("run a", d.a), ("run b", d.b)):
            if side.get("sum") is not None:
                lines.append(
                    f"  {label}   sum {side['sum']:.9g}, max |x| {side['absmax']:.9g}, "
                    f"NaN {side['nans']}, Inf {side['infs']}"
                )
        size = _difference_size(d.a, d.b)
        if size:
            lines.append(f"  size    {size}")
        if d.suspects:
            lines.append("  suspects (seedlock's table of known nondeterministic ops):")
            lines += [f"    - {printable(s)}" for s in d.suspects]
        if self.op is not None:
            lines += self.op.lines()
        if self.rerun:
            lines.append(f"  re-run  {self.rerun}")
        return "\n".join(lines + describe(self.entropy))


def _difference_size(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a.get("sum") is None or b.get("sum") is None:
        return ""
    diff = abs(a["sum"] - b["sum"])
    scale = max(abs(a["sum"]), abs(b["sum"]), 1e-300)
    return f"sums differ by {diff:.3g} ({diff / scale:.3g} relative)"


def _close(a: float | None, b: float | None, rtol: float, atol: float) -> bool:
    if a is None or b is None:
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol + rtol * abs(b)


def _same(a: dict[str, Any], b: dict[str, Any], rtol: float, atol: float) -> bool:
    if a["fingerprint"] == b["fingerprint"]:
        return True
    if (rtol == 0 and atol == 0) or a["sum"] is None or b["sum"] is None:
        return False
    return (
        a["shape"] == b["shape"]
        and a["nans"] == b["nans"]
        and a["infs"] == b["infs"]
        and _close(a["sum"], b["sum"], rtol, atol)
        and _close(a["absmax"], b["absmax"], rtol, atol)
    )


def _suspects(*names: str | None) -> list[str]:
    # The op table (importlib.resources and a JSON file): only when a cause is to be named.
    from seedlock.optable import explain

    found: list[str] = []
    for name in names:
        if not name:
            continue
        for entry in explain(name).entries:
            line = f"{entry.name}: {entry.when}"
            if line not in found:
                found.append(line)
    return found


def _classify(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, str]:
    if a["event"] == "batch":
        return "a", "the batch entering the model differs: the data pipeline is not reproducible"
    if a["event"] == "forward":
        if a["rng"] != b["rng"]:
            return "b", (
                f"the RNG state before {a['module']} differs: a different number of random "
                "values was drawn before it"
            )
        if a["inputs"] != b["inputs"]:
            return "c", (
                f"the inputs of {a['module']} differ although every earlier traced output "
                "matched: code between modules computed them differently"
            )
        return "c", f"same inputs and RNG state, different output of {a['module']}"
    if a["event"] == "op":
        return "c", f"the op {a['op']} in {a['module']} computed a different result"
    if a["event"] == "grad_input":
        return "c", f"the backward pass of {a['module']} computed different input gradients"
    if a["event"] == "grad":
        return "c", f"the gradient of parameter {a['module']} differs"
    if a["step"] == 0:
        return "b", (
            f"parameter {a['module']} differs before the first step: the model was initialised "
            "(or loaded) differently, e.g. from an unseeded random stream"
        )
    return "c", f"parameter {a['module']} differs after optimizer step {a['step']}"


def _side(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"event": None}
    keys = ("module", "event", "op", "fingerprint", "dtype", "shape", "sum", "absmax", "nans")
    return {k: row[k] for k in (*keys, "infs")}


def compare(
    a: str | os.PathLike[str], b: str | os.PathLike[str], *, rtol: float = 0.0, atol: float = 0.0
) -> Report:
    """The first divergence between traces ``a`` and ``b`` (see the module docstring).

    Streams both files: memory stays bounded however long the traces.

    Parameters
    ----------
    a, b
        The two trace files (:func:`seedlock.audit.trace`).
    rtol, atol
        Relative and absolute tolerance on the summaries of events whose fingerprints differ;
        default 0: bit-identical or not (see the module docstring).

    Returns
    -------
    Report
        ``reproducible``, or the first divergence and its cause.

    Raises
    ------
    ValueError
        A file is missing or is not a valid seedlock trace; the traces have different format
        versions, or were fingerprinted with different hashes (``xxhash`` installed on one
        machine only); ``rtol`` or ``atol`` is given and a trace holds no summaries.

    Examples
    --------
    >>> report = seedlock.audit.compare("machine1.trace", "machine2.trace", rtol=1e-5)
    >>> print(report)
    """
    pa, pb = os.fspath(a), os.fspath(b)
    meta_a, meta_b = read_meta(pa), read_meta(pb)
    if meta_a.get("version") != meta_b.get("version"):
        va, vb = printable(meta_a.get("version"), 20), printable(meta_b.get("version"), 20)
        raise ValueError(
            f"the traces have different formats (version {va} vs {vb}): record both with the "
            "same seedlock release"
        )
    hash_a, hash_b = meta_a.get("hash", "sha256"), meta_b.get("hash", "sha256")
    if hash_a != hash_b:
        raise ValueError(
            f"the traces were fingerprinted with different hashes ({printable(hash_a, 20)} vs "
            f"{printable(hash_b, 20)}): install the same seedlock extras (xxhash) on both "
            "machines"
        )
    if (rtol or atol) and "0" in (meta_a.get("summaries"), meta_b.get("summaries")):
        raise ValueError(
            "rtol / atol compare the events' summaries, and a trace was recorded without them: "
            "record both with trace(..., summaries=True)"
        )
    ia, ib = _rows(pa), _rows(pb)
    count = 0
    while True:
        ra, rb = next(ia, None), next(ib, None)
        if ra is None and rb is None:
            return Report(True, count, None, pa, pb)
        if ra is None or rb is None or _position(ra) != _position(rb):
            cause, suspects = "d", []
            explanation = ("the runs executed different sequences of modules or ops here "
                           f"(run a: {_describe(ra)}; run b: {_describe(rb)})")  # fmt: skip
        elif not _same(ra, rb, rtol, atol):
            cause, explanation = _classify(ra, rb)
            suspects = _suspects(ra["kind"], ra["op"]) if cause == "c" else []
        else:
            count += 1
            continue
        first = ra or rb
        assert first is not None
        also: tuple[str, ...] = ()
        if cause == "a" and first["step"] == 0:
            initial = _initial_params(ia, ib)
            if initial:
                also = ("b",)
                shown = ", ".join(initial[:3]) + (", ..." if len(initial) > 3 else "")
                explanation += (
                    f"; the parameters differ too before the first step ({shown}): the model "
                    "was also initialised differently (cause b)"
                )
        divergence = Divergence(
            seq=first["seq"],
            step=first["step"],
            module=first["module"],
            kind=first["kind"],
            event=first["event"],
            op=first["op"],
            cause=cause,
            explanation=explanation,
            a=_side(ra),
            b=_side(rb),
            suspects=suspects,
            also=also,
        )
        entropy = _entropy(pa if ra is not None else pb, divergence)
        divergence, env = blame(divergence, meta_a, meta_b)
        return Report(False, count, divergence, pa, pb, entropy, environment=env)


def _initial_params(ia: Iterator[dict[str, Any]], ib: Iterator[dict[str, Any]]) -> list[str]:
    """The parameters whose fingerprints differ among the ``param`` events of step 0 that come
    next in both traces (a root module records them right after its first batch)."""
    differ = []
    for ra, rb in zip(ia, ib, strict=False):
        if ra["event"] != "param" or ra["step"] != 0 or _position(ra) != _position(rb):
            break
        if ra["fingerprint"] != rb["fingerprint"]:
            differ.append(ra["module"])
    return differ


def _entropy(path: str, d: Divergence) -> tuple[EntropySource, ...]:
    """The entropy sources recorded in trace ``path`` up to ``d``: for a module's output or op
    that computed differently (cause c), those inside that call of the module are implicated."""
    db = _connect(path)
    try:
        sources = read(db, d.seq)
        if not sources:
            return ()
        if d.cause != "c" or d.event not in ("forward", "op"):
            return implicated(sources, None, -1)
        (start,) = db.execute(
            "SELECT max(seq) FROM events WHERE module = ? AND event = 'forward' AND seq < ?",
            (d.module, d.seq),
        ).fetchone()
    finally:
        db.close()
    return implicated(sources, d.module, -1 if start is None else int(start))


def _position(row: dict[str, Any]) -> tuple[str, str, str | None]:
    """What must match for two events to be the same step of the same execution path."""
    return row["module"], row["event"], row["op"]


def _describe(row: dict[str, Any] | None) -> str:
    if row is None:
        return "trace ends"
    op = f" {row['op']}" if row["op"] else ""
    return f"{row['module']} {row['event']}{op}"
