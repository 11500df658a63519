"""seedlock's exceptions. Every failure to read or apply saved RNG state is a ``StateError``,
raised before any generator is touched."""

from __future__ import annotations

__all__ = [
    "CorruptStateError",
    "NotAStateFileError",
    "StateError",
    "StateMismatchError",
    "StateTooLargeError",
    "StateVersionError",
]


class StateError(Exception):
    """A saved RNG state could not be read or does not fit this process."""


class NotAStateFileError(StateError):
    """The file does not start with seedlock's magic bytes: it is something else."""


class StateVersionError(StateError):
    """The state was written by a newer seedlock, in a format this version cannot read."""


class CorruptStateError(StateError, ValueError):
    """The state is truncated, fails its checksum, or is malformed."""


class StateTooLargeError(StateError):
    """The file is larger than any state seedlock writes; it is refused unread."""


class StateMismatchError(StateError):
    """The state cannot be applied here: a missing backend, another device count, other
    generator names, a value no library writes. ``problems`` lists every one found."""

    def __init__(self, problems: list[str], *, unchanged: bool = True) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        outcome = "nothing was changed" if unchanged else "SOME GENERATORS MAY HAVE CHANGED"
        super().__init__(
            f"cannot restore this RNG state ({len(self.problems)} problem(s)); {outcome}:\n{lines}"
        )
