"""A run of ``seedlock check`` as its folder keeps it, to compare with another machine's runs.

Each run's folder (``run1/`` ... in the check's working folder, kept with ``--keep DIR``) holds
its traces, ``stdout``, ``stderr``, the files it wrote (``outputs/``) and ``status.json``: its
exit status, duration and the digests of those files. ``seedlock check --against DIR`` reads
``DIR/run1`` back as run 1 (:func:`load`) and compares this machine's runs with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from seedlock import _files
from seedlock._text import printable
from seedlock.cli import UsageError
from seedlock.cli._check_verdict import Run

__all__ = ["load", "save"]

FORMAT = "seedlock.check.run"


def save(run_dir: str, run: Run) -> None:
    """Write ``run_dir/status.json`` for ``run``."""
    data = {"format": FORMAT, "version": 1, "returncode": run.returncode, "seconds": run.seconds,
            "outputs": run.outputs, "changed": run.changed, "created": run.created}  # fmt: skip
    _files.write_atomic(os.path.join(run_dir, "status.json"), json.dumps(data).encode())


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{what} is not a list of file names")
    return value


def load(folder: str) -> Run:
    """Run 1 of the check kept in ``folder`` (``UsageError`` when it is not one).

    Parameters
    ----------
    folder
        A folder written by ``seedlock check --keep``.

    Returns
    -------
    Run
        Its exit status, output, traces and files, as when it ran.
    """
    run_dir = os.path.join(folder, "run1")
    status = os.path.join(run_dir, "status.json")
    where = printable(folder)
    try:
        with open(status, "rb") as f:
            data = json.loads(f.read(1 << 24))
        with open(os.path.join(run_dir, "stdout"), "rb") as f:
            stdout = f.read().decode("utf-8", errors="replace")
        with open(os.path.join(run_dir, "stderr"), "rb") as f:
            stderr = f.read().decode("utf-8", errors="replace")
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"--against {where}: not a folder kept by seedlock check --keep ({exc})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != 1:
        raise UsageError(f"--against {where}: run1/status.json is not a seedlock check run")
    code, seconds, outputs = data.get("returncode"), data.get("seconds"), data.get("outputs")
    if type(code) is not int or not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise UsageError(f"--against {where}: run1/status.json has no valid exit status")
    if not isinstance(outputs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in outputs.items()
    ):
        raise UsageError(f"--against {where}: run1/status.json has no valid file digests")
    changed = _strings(data.get("changed"), f"--against {where}: changed")
    created = _strings(data.get("created"), f"--against {where}: created")
    traces = {p.name: str(p) for p in sorted(Path(run_dir).glob("*.trace"))}
    return Run(code, stdout, stderr, float(seconds), traces, outputs, changed, created, run_dir)
