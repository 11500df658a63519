"""The environment facts that change numerics, recorded in a trace and compared between two.

:func:`facts` gives what :meth:`seedlock.audit.traces.Tracer.start` writes to a trace's ``meta``
table, read from the libraries already imported (it imports none and never initialises CUDA):

==================  ==========================================================================
key                 value
==================  ==========================================================================
``torch``           ``torch.__version__`` (recorded since the first trace format)
``cuda``            ``torch.version.cuda``, when torch was built with CUDA
``cudnn``           ``torch.backends.cudnn.version()``, once CUDA is initialised
``numpy``           ``numpy.__version__``, when numpy is imported
``python``          the Python version
``cpu_capability``  ``torch.backends.cpu.get_cpu_capability()`` (e.g. ``AVX2``, ``AVX512``)
``machine``         ``platform.machine()`` (e.g. ``x86_64``, ``arm64``)
``gpu``             the name of the current CUDA device, once CUDA is initialised
``threads``         ``torch.get_num_threads()`` (recorded since the first trace format)
==================  ==========================================================================

:func:`differences` compares two traces' meta tables on those keys present in both (a trace
made before a key was recorded is compared on the others), ranked as the table: library
versions, then the CPU, the GPU model and the thread count.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, replace
from typing import Any

from seedlock._text import printable

__all__ = ["KEYS", "EnvironmentDifference", "blame", "differences", "facts", "lines", "summary"]

KEYS = (
    "torch", "cuda", "cudnn", "numpy", "python", "cpu_capability", "machine", "gpu", "threads"
)  # fmt: skip


@dataclass(frozen=True)
class EnvironmentDifference:
    """One environment fact that differs between two traces.

    Attributes
    ----------
    key
        The ``meta`` key (one of :data:`KEYS`), e.g. ``"cpu_capability"``.
    a, b
        Its value in run a's trace and in run b's.
    """

    key: str
    a: str
    b: str


Diffs = tuple[EnvironmentDifference, ...]


def facts() -> dict[str, str]:
    """The environment facts of this process that change numerics, as ``meta`` entries.

    Returns
    -------
    dict
        Key to value, for the keys of :data:`KEYS` this process can tell without importing a
        library or initialising CUDA (``torch`` and ``threads`` excepted: the tracer writes
        those itself).
    """
    out = {"python": platform.python_version(), "machine": platform.machine()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        out["numpy"] = str(numpy.__version__)
    torch = sys.modules.get("torch")
    if torch is None:
        return out
    cpu = getattr(torch.backends, "cpu", None)
    if cpu is not None and hasattr(cpu, "get_cpu_capability"):
        out["cpu_capability"] = str(cpu.get_cpu_capability())
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    if torch.cuda.is_initialized():
        out["cudnn"] = str(torch.backends.cudnn.version())
        out["gpu"] = torch.cuda.get_device_name()
    return out


def differences(a: dict[str, str], b: dict[str, str]) -> Diffs:
    """The environment facts that differ between two traces' meta tables, most likely cause
    of a numerical difference first.

    Parameters
    ----------
    a, b
        The two meta tables (:func:`seedlock.audit.divergence.read_meta`).

    Returns
    -------
    tuple of EnvironmentDifference
        In the order of :data:`KEYS`; only keys present in both tables are compared.
    """
    return tuple(
        EnvironmentDifference(k, a[k], b[k]) for k in KEYS if k in a and k in b and a[k] != b[k]
    )


def lines(diffs: Diffs) -> list[str]:
    """The differences as lines of a report, values escaped for the terminal.

    Parameters
    ----------
    diffs
        From :func:`differences`.

    Returns
    -------
    list of str
        A heading and one line per difference; empty when there is none.
    """
    if not diffs:
        return []
    out = ["  environment differs (most likely cause first):"]
    out += [f"    - {d.key}: {printable(d.a, 100)} vs {printable(d.b, 100)}" for d in diffs]
    return out


def summary(diffs: Diffs) -> str:
    """The differences of :func:`differences` in one phrase, e.g. ``"torch 2.4.0 vs 2.5.1,
    cpu_capability AVX2 vs AVX512"``."""
    return ", ".join(f"{d.key} {d.a} vs {d.b}" for d in diffs)


def blame(divergence: Any, a: dict[str, str], b: dict[str, str]) -> tuple[Any, Diffs]:
    """Name the environment as the cause of a divergence when the two traces' facts differ.

    Parameters
    ----------
    divergence
        The first :class:`~seedlock.audit.divergence.Divergence` found event by event.
    a, b
        The two traces' meta tables.

    Returns
    -------
    tuple
        The divergence, with cause ``"e"`` and the facts that differ ahead of its own
        explanation when there are some (unchanged when not), and those facts.
    """
    diffs = differences(a, b)
    if not diffs:
        return divergence, diffs
    explanation = (
        f"the runs used different environments ({summary(diffs)}); the difference first "
        f"showed here, as ({divergence.cause}) {divergence.cause_name}: {divergence.explanation}"
    )
    return replace(divergence, cause="e", explanation=explanation), diffs
