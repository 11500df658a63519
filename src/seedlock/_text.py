"""Text from data, made safe to show on a terminal.

Names and values that seedlock prints come from files, traces, environments and command output
it did not write: a module name holding ``\\x1b]0;TITLE\\x07`` would retitle the terminal, and
one holding a newline would forge a line of the report. :func:`printable` escapes every
character that is not printable (control characters, DEL, the C1 range, bidirectional
overrides, line and paragraph separators) the way ``repr`` does.
"""

from __future__ import annotations

__all__ = ["printable", "reason"]


def printable(text: object, limit: int | None = None) -> str:
    """``str(text)`` with every non-printable character escaped (``\\x1b``, ``\\n``,
    ``\\u202e``), cut to ``limit`` characters (with ``...``) when given."""
    s = text if isinstance(text, str) else str(text)
    if not s.isprintable():
        s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    if limit is not None and len(s) > limit:
        s = s[: max(limit - 3, 0)] + "..."
    return s


def reason(exc: BaseException) -> str:
    """An exception in one printable line: an ``OSError``'s ``strerror`` (the file name is in
    the sentence around it), else its message."""
    return printable(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
