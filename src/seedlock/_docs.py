"""Docstring sections that several public names share, written once and filled in.

A docstring holds ``{name}`` where a shared section goes; :func:`fill` puts the text in, so
``help()`` and the documentation show each name's whole docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["fill"]

_T = TypeVar("_T")


def fill(**sections: str) -> Callable[[_T], _T]:
    """A decorator that replaces each ``{name}`` in the docstring with ``sections[name]``."""

    def apply(obj: _T) -> _T:
        doc = obj.__doc__ or ""
        for name, text in sections.items():
            doc = doc.replace("{" + name + "}", text)
        obj.__doc__ = doc
        return obj

    return apply
