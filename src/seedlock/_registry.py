"""The registry: which generators seedlock captures, and which randomness is rank-local.

One home for the answer to "shared or rank-local?": each registered generator carries its
scope, and so do the global generators (set by the last ``seed_everything``). Capture, restore,
the named streams, ``seed_everything`` and ``sync_state`` all read it here.

Generators are held by strong reference: NumPy generators cannot be weakly referenced. The
guide: ``docs/state.md`` (registered generators) and ``docs/distributed.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from seedlock import backends as _backends
from seedlock.backends.base import GeneratorOwner

__all__ = [
    "Entry",
    "entries",
    "globals_per_rank",
    "lookup",
    "rank_local",
    "register",
    "registered",
    "set_globals_per_rank",
    "unregister",
]


class Entry(NamedTuple):
    """One registered generator."""

    obj: Any
    #: The backend that captures and restores it, looked up once, at registration.
    owner: GeneratorOwner
    #: Rank-local (other numbers on every rank): ``sync_state`` leaves it alone.
    per_rank: bool


_entries: dict[str, Entry] = {}
# Whether the last seed_everything gave the global generators rank-local values.
_globals_per_rank = False


def _owner(obj: object) -> GeneratorOwner:
    owner = _backends.owner_of(obj)
    if owner is not None:
        return owner
    what = f"{type(obj).__module__}.{type(obj).__qualname__}"
    why = _backends.unseedable(obj)
    if why is not None:
        raise TypeError(f"cannot register a {what}: {why}")
    raise TypeError(
        f"cannot register a {what}: seedlock captures "
        "numpy.random.Generator / RandomState, random.Random and torch.Generator objects "
        "(and those of backends that declare `owns`)"
    )


def register(obj: Any, name: str, *, replace: bool = False, per_rank: bool = False) -> Any:
    """Include a generator object in every capture and state dict, under ``name``.

    Parameters
    ----------
    obj
        A ``numpy.random.Generator`` or ``RandomState``, a ``random.Random``, a
        ``torch.Generator`` (or a generator of a backend that declares ``owns``).
    name
        The name the generator has in states and checkpoints: a non-empty str.
    replace
        Register ``obj`` under a name that another object holds (default: an error).
    per_rank
        The generator is rank-local (other numbers on every rank, e.g. augmentation noise):
        :func:`seedlock.distributed.sync_state` leaves it alone.

    Returns
    -------
    object
        ``obj`` itself, so that registration can wrap the construction.

    Raises
    ------
    TypeError
        ``name`` is not a non-empty str, or ``obj`` is not a generator seedlock can capture
        (a ``random.SystemRandom``, which has no state, included).
    ValueError
        Another object is registered as ``name`` and ``replace`` is false.

    Examples
    --------
    >>> rng = seedlock.register(np.random.default_rng(0), "noise")
    >>> jitter = seedlock.register(random.Random(7), "jitter", per_rank=True)
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    owner = _owner(obj)
    current = _entries.get(name)
    if current is not None and current.obj is not obj and not replace:
        raise ValueError(
            f"a generator is already registered as {name!r}: unregister it first or pass "
            "replace=True"
        )
    _entries[name] = Entry(obj, owner, bool(per_rank))
    return obj


def unregister(name: str) -> None:
    """Stop capturing the generator registered as ``name``.

    Parameters
    ----------
    name
        A name given to :func:`register`.

    Raises
    ------
    KeyError
        No generator is registered as ``name``.
    """
    try:
        del _entries[name]
    except KeyError:
        raise KeyError(f"no generator is registered as {name!r}") from None


def registered() -> dict[str, Any]:
    """A copy of the registry: name -> generator object."""
    return {name: entry.obj for name, entry in _entries.items()}


def entries() -> dict[str, Entry]:
    """A copy of the registry with each generator's owner and scope."""
    return dict(_entries)


def lookup(name: str) -> Entry | None:
    """The entry registered as ``name``, if any."""
    return _entries.get(name)


def rank_local() -> set[str]:
    """The names of the registered generators that are rank-local."""
    return {name for name, entry in _entries.items() if entry.per_rank}


def globals_per_rank() -> bool:
    """Did the last ``seed_everything`` give the global generators rank-local values?"""
    return _globals_per_rank


def set_globals_per_rank(per_rank: bool) -> None:
    """Record the scope ``seed_everything`` just gave the global generators."""
    global _globals_per_rank
    _globals_per_rank = bool(per_rank)
