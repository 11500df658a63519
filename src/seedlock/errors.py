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


class CorruptStateError(StateError):
    """The state is truncated, fails its checksum, or is malformed."""


class StateTooLargeError(StateError):
    """The file is larger than any state seedlock writes; it is refused unread."""


class StateMismatchError(StateError):
    """The state is intact but cannot be applied here (missing backend, device count, generator
    names). ``problems`` lists every mismatch found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"cannot restore this RNG state ({len(self.problems)} problem(s)); "
            f"nothing was changed:\n{lines}"
        )
