"""Lazy package attributes: a public name is imported from its module on first use.

``import seedlock`` and ``import seedlock.audit`` stay cheap (no torch, no typing) while
``seedlock.seed_everything``, ``seedlock.data.loader`` and ``seedlock.audit.compare`` still work
as plain attributes.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing's: `import seedlock` does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable


def attribute(
    package: str, exports: dict[str, str], namespace: dict[str, object], name: str
) -> object:
    """``package.<name>`` from the module ``exports`` maps it to, kept in ``namespace`` after.

    A name that maps to ``package.<name>`` itself is a subpackage: the module is the value.
    """
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    target = importlib.import_module(module)
    value = target if module == f"{package}.{name}" else getattr(target, name)
    namespace[name] = value
    return value


def hooks(
    package: str, exports: dict[str, str], namespace: dict[str, object]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names load on first use."""

    def getattr_(name: str) -> object:
        return attribute(package, exports, namespace, name)

    def dir_() -> list[str]:
        return sorted({*namespace, *exports})

    return getattr_, dir_
