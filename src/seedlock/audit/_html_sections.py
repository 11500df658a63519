"""The sections of the HTML report below its plot and verdict: entropy, manifest, op advice.

Each returns an HTML fragment ("" when it has nothing to show); every value from a trace or a
manifest is escaped.
"""

from __future__ import annotations

import html
from typing import Any

from seedlock.audit.divergence import Report

__all__ = ["advice", "entropy", "manifest"]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def entropy(report: Report) -> str:
    if not report.entropy:
        return ""
    rows = "".join(
        f"<tr><td>{_e(s.description)}</td><td>{_e(s.file)}:{_e(s.line)} ({_e(s.function)})</td>"
        f"<td>{_e(s.module or '-')}</td><td>{'yes' if s.implicated else ''}</td>"
        f"<td>{_e(s.fix)}</td></tr>"
        for s in report.entropy
    )
    return (
        "<h2>Where entropy no seed reaches entered</h2><table><tr><th>what</th><th>where</th>"
        f"<th>module</th><th>implicated</th><th>fix</th></tr>{rows}</table>"
    )


def manifest(differences: list[dict[str, Any]] | None) -> str:
    if differences is None:
        return ""
    if not differences:
        return "<h2>Manifest differences</h2><p>none</p>"
    order = {"high": 0, "medium": 1, "low": 2}
    ranked = sorted(differences, key=lambda d: order.get(str(d.get("risk")), 3))
    rows = "".join(
        f'<tr class="{_e(d.get("risk"))}"><td>{_e(d.get("risk"))}</td><td>{_e(d.get("key"))}</td>'
        f"<td>{_e(d.get('a'))}</td><td>{_e(d.get('b'))}</td><td>{_e(d.get('why'))}</td></tr>"
        for d in ranked
    )
    return (
        "<h2>Manifest differences, by risk</h2><table><tr><th>risk</th><th>key</th><th>run a</th>"
        f"<th>run b</th><th>why</th></tr>{rows}</table>"
    )


def advice(report: Report) -> str:
    d = report.divergence
    if d is None or not d.suspects:
        return ""
    # The op table (importlib.resources and a JSON file): only when the report names suspects.
    from seedlock.optable import explain

    entries = []
    for name in (d.kind, d.op):
        if name:
            entries += [e for e in explain(name).entries if e not in entries]
    items = "".join(
        f"<li><b>{_e(e.name)}</b>: {_e(e.when)}<br>fix: {_e(e.fix)}</li>" for e in entries
    ) or "".join(f"<li>{_e(s)}</li>" for s in d.suspects)
    return f"<h2>Known nondeterministic ops (seedlock's table)</h2><ul>{items}</ul>"
