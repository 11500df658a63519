"""The exceptions seedlock raises when a saved random state cannot be read or applied.

Every failure to read or apply saved RNG state is a :class:`StateError`, raised before any
generator is touched. The one exception to "before": a library that refuses a state after every
check passed, and whose generators then cannot all be put back, gives a
:class:`StateMismatchError` that says so. ``except ValueError`` also catches
:class:`CorruptStateError` and :class:`WorldSizeMismatchError`. The guide: ``docs/state.md``.
"""

from __future__ import annotations

__all__ = [
    "CorruptStateError",
    "NotAStateFileError",
    "StateError",
    "StateMismatchError",
    "StateTooLargeError",
    "StateVersionError",
    "WorldSizeMismatchError",
    "check_version",
]


class StateError(Exception):
    """A saved RNG state could not be read or does not fit this process.

    The base class of every exception below: ``except seedlock.StateError`` catches them all.
    """


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
    generator names, a value no library writes.

    Parameters
    ----------
    problems
        Every problem found, one sentence each; kept as the attribute ``problems`` (a list) and
        listed in the message.
    unchanged
        Whether every generator is as it was (default ``True``); ``False`` only when a library
        refused a state that passed the checks and putting back the others failed too: the
        message then says that some generators may have changed.
    """

    def __init__(self, problems: list[str], *, unchanged: bool = True) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        outcome = "nothing was changed" if unchanged else "SOME GENERATORS MAY HAVE CHANGED"
        super().__init__(
            f"cannot restore this RNG state ({len(self.problems)} problem(s)); {outcome}:\n{lines}"
        )


class WorldSizeMismatchError(StateError, ValueError):
    """A per-rank state saved by one number of ranks is loaded by another.

    Raised by :class:`seedlock.distributed.PerRankState` and the data loader's
    ``load_state_dict``: per-rank streams and each rank's share of the data cannot be
    redistributed exactly.
    """


def check_version(version: object, newest: int, what: str) -> int:
    """The ``version`` of a saved ``what`` (for example ``"sampler state"``), checked.

    Parameters
    ----------
    version
        The value the state holds under ``"version"``.
    newest
        The newest version this seedlock reads.
    what
        What the state is, for the messages.

    Returns
    -------
    int
        ``version``.

    Raises
    ------
    CorruptStateError
        ``version`` is not an int >= 1.
    StateVersionError
        ``version`` is above ``newest``: a newer seedlock wrote the state.
    """
    if type(version) is not int or version < 1:
        shown = type(version).__name__ if type(version) is not int else version
        raise CorruptStateError(f"invalid {what} version: {shown} (an int >= 1 is expected)")
    if version > newest:
        raise StateVersionError(
            f"{what} version {version} was written by a newer seedlock; this one reads up to "
            f"version {newest}: upgrade seedlock"
        )
    return version
