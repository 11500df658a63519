"""The environment of two runs, as a section of a report: the facts that differ, and why.

:mod:`seedlock.audit.environment` names the facts a trace records and ranks those that differ
(library versions, then the CPU, the GPU model and the thread count). This module shows them,
whatever the events say (also when the runs agree, or diverge for another cause): as the
"Environment" section of the HTML report (:mod:`seedlock.audit.html`) and as the block that
``seedlock diff`` prints after its verdict. Everything read from a trace is escaped.
"""

from __future__ import annotations

import html
import os

from seedlock._text import printable
from seedlock.audit.divergence import read_meta
from seedlock.audit.environment import Diffs, differences

__all__ = ["WHY", "compare", "section", "terminal", "to_json"]

#: Why each environment fact of :data:`seedlock.audit.environment.KEYS` can change results.
WHY = {
    "torch": "each release may change kernels, their defaults and their order of operations",
    "cuda": "another CUDA toolkit ships other cuBLAS/cuFFT kernels",
    "cudnn": "another cuDNN picks other convolution algorithms",
    "numpy": "another NumPy may change its generators' streams and its routines",
    "python": "another interpreter runs other library builds (and hashes str differently)",
    "cpu_capability": "kernels for another vector width sum in another order",
    "machine": "another architecture runs other kernels, fusing and rounding differently",
    "gpu": "another GPU model runs other kernels, tile sizes and reduction orders",
    "threads": "reductions split across another number of threads sum in another order",
}


def compare(
    trace_a: str | os.PathLike[str], trace_b: str | os.PathLike[str]
) -> tuple[Diffs, dict[str, str], dict[str, str]]:
    """The environment facts that differ between two traces, whatever their events say.

    Parameters
    ----------
    trace_a, trace_b
        The two trace files.

    Returns
    -------
    tuple of (tuple of EnvironmentDifference, dict, dict)
        The differences, most likely cause of a numerical difference first
        (:func:`seedlock.audit.environment.differences`), and the two ``meta`` tables.

    Raises
    ------
    ValueError
        A file is not a seedlock trace (:func:`seedlock.audit.divergence.read_meta`).
    """
    meta_a, meta_b = read_meta(trace_a), read_meta(trace_b)
    return differences(meta_a, meta_b), meta_a, meta_b


def _phrase(meta: dict[str, str]) -> str:
    """``torch 2.13.0, CPU AVX2 x86_64, 2 threads``: what the trace records of those."""
    cpu = " ".join(meta[k] for k in ("cpu_capability", "machine") if k in meta)
    parts = [
        f"torch {meta['torch']}" if "torch" in meta else "",
        f"CPU {cpu}" if cpu else "",
        f"GPU {meta['gpu']}" if "gpu" in meta else "",
        f"{meta['threads']} threads" if "threads" in meta else "",
    ]
    return ", ".join(p for p in parts if p)


def section(diffs: Diffs, meta: dict[str, str]) -> str:
    """The "Environment" section of the HTML report.

    Parameters
    ----------
    diffs, meta
        The differences and run a's ``meta`` table, from :func:`compare`.

    Returns
    -------
    str
        A heading, then a table (key, run a, run b, why it matters) in the order of ``diffs``,
        or one line ``same environment (torch X, CPU Y, N threads)``; every value escaped.
    """
    e = html.escape
    if not diffs:
        same = _phrase(meta)
        said = f" ({e(same)})" if same else ""
        return f'<h2>Environment</h2><p class="environment">same environment{said}</p>'
    rows = "".join(
        f"<tr><td>{e(d.key)}</td><td>{e(d.a)}</td><td>{e(d.b)}</td>"
        f"<td>{e(WHY.get(d.key, ''))}</td></tr>"
        for d in diffs
    )
    return (
        "<h2>Environment</h2><p>The runs used different environments (the most likely cause "
        'of a numerical difference first):</p><table class="environment"><tr><th>key</th>'
        f"<th>run a</th><th>run b</th><th>why it matters</th></tr>{rows}</table>"
    )


def terminal(diffs: Diffs, meta: dict[str, str]) -> list[str]:
    """The environment block of ``seedlock diff``, values escaped for the terminal.

    Parameters
    ----------
    diffs, meta
        The differences and run a's ``meta`` table, from :func:`compare`.

    Returns
    -------
    list of str
        ``environment: same (torch X, CPU Y, N threads)``, or ``environment differs (most
        likely cause first):`` and one line per difference, with why it matters.
    """
    if not diffs:
        same = _phrase(meta)
        return [f"environment: same ({printable(same, 200)})" if same else "environment: same"]
    out = ["environment differs (most likely cause first):"]
    for d in diffs:
        value = f"{printable(d.a, 100)} vs {printable(d.b, 100)}"
        out.append(f"  - {d.key}: {value} ({WHY.get(d.key, 'a fact of the environment')})")
    return out


def to_json(diffs: Diffs) -> list[dict[str, str]]:
    """The differences as JSON-ready data.

    Parameters
    ----------
    diffs
        From :func:`compare`.

    Returns
    -------
    list of dict
        One ``{"key", "a", "b", "why"}`` per difference, in the order of ``diffs``.
    """
    return [{"key": d.key, "a": d.a, "b": d.b, "why": WHY.get(d.key, "")} for d in diffs]
