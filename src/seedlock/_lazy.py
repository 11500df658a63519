"""Lazy package attributes: a public name is imported from its module on first use.

``import seedlock`` and ``import seedlock.audit`` stay cheap (no torch, no typing) while
``seedlock.seed_everything`` and ``seedlock.audit.compare`` still work as plain attributes.
"""

from __future__ import annotations

import importlib


def attribute(
    package: str, exports: dict[str, str], namespace: dict[str, object], name: str
) -> object:
    """``package.<name>`` from the module ``exports`` maps it to, kept in ``namespace`` after."""
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    namespace[name] = value
    return value
