"""Shards of a stream: :func:`sharded`, and the one way seedlock opens any shard at any point.

The guide: ``docs/data.md`` (iterable datasets).

A *shard* is one resumable sequence of samples. seedlock reads three kinds, each through a
:class:`Source` that opens it at a saved point and says where it is after each sample:

* a **callable** that returns an iterable from the shard's start (``lambda: read(path)``, a
  generator function): its point is a count of samples, and opening it at ``k`` calls it and
  reads ``k`` samples again, each under its own per-sample seeds as the first time (O(k)
  reading, no other state needed);
* a **path** (``str`` / ``os.PathLike``) with ``read=``: the callable ``read(path)``;
* a **Stateful iterable**: an object with ``__iter__``, ``state_dict()`` and
  ``load_state_dict()``, whose state is its point (O(1) to open when its ``load_state_dict``
  seeks). Its ``state_dict()`` taken when the loader is built is its start.

An ``IterableDataset`` with ``state_dict`` / ``load_state_dict`` is one Stateful shard;
:func:`sharded` makes a dataset of many. The contract a Stateful shard keeps:

1. ``state_dict()`` returns plain data (dicts, lists, str, int, float, bool, None), so that a
   checkpoint loads with ``torch.load(weights_only=True)``;
2. after ``load_state_dict(s)``, where ``s`` was taken right after the ``k``-th sample was
   yielded, ``iter()`` yields sample ``k + 1`` onwards, the same samples as before;
3. the samples do not depend on the process or the worker that reads them (randomness comes
   from the per-sample seeds seedlock sets right before each sample is asked for).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

from torch.utils.data import IterableDataset

__all__ = ["STATELESS", "ShardedIterable", "Source", "sharded", "sources_of"]

STATELESS = (
    "an IterableDataset needs state_dict() and load_state_dict() to resume exactly: state_dict() "
    "returns plain data saying where the stream is, load_state_dict(state) makes the next iter() "
    "continue right after that point. Add them, or build the dataset from shards with "
    "seedlock.data.sharded([...]) (callables or files), which seedlock resumes by itself"
)


def _stateful(obj: object) -> bool:
    return all(callable(getattr(obj, name, None)) for name in ("state_dict", "load_state_dict"))


class Source:
    """One shard, opened at a point: ``None`` (its start) or what :meth:`point` said."""

    def __init__(self, shard: Any, name: str) -> None:
        self.name = name
        if _stateful(shard) and hasattr(shard, "__iter__"):
            self.shard, self.replay = shard, None
            self.start = copy.deepcopy(shard.state_dict())
        else:
            self.shard, self.replay = None, shard
            self.start = None

    def open(self, point: Any) -> Iterator[Any]:
        """The shard's samples from ``point`` (its state after a sample, or ``None``: its
        start). A replayed shard always starts at its start: skip what it took (see
        :attr:`replay`)."""
        if self.replay is None:
            self.shard.load_state_dict(copy.deepcopy(self.start if point is None else point))
            return iter(self.shard)
        return iter(self.replay())

    def point(self) -> Any:
        """Where the shard is now: a copy of a Stateful shard's state (a ``state_dict()`` that
        returns its live dict would otherwise change under the saved points); ``None`` for a
        replayed shard."""
        return None if self.shard is None else copy.deepcopy(self.shard.state_dict())


class ShardedIterable(IterableDataset[Any]):
    """An iterable dataset made of shards (see :func:`sharded`); iterating it directly yields
    every shard's samples in turn, without per-sample seeds.

    Parameters
    ----------
    shards
        Callables returning an iterable, or Stateful iterables (see the module docstring).
    """

    def __init__(self, shards: Sequence[Any]) -> None:
        self.shards = list(shards)

    def __iter__(self) -> Iterator[Any]:
        for source in sources_of(self):
            yield from source.open(None)

    def __len__(self) -> int:
        raise TypeError("a ShardedIterable has no length: its shards are read as streams")


def sharded(shards: Iterable[Any], *, read: Callable[[Any], Iterable[Any]] | None = None) -> Any:
    """An iterable dataset of ``shards`` that :func:`seedlock.data.loader` resumes exactly.

    Parameters
    ----------
    shards
        Each one a callable returning an iterable from the shard's start, a Stateful iterable
        (see the module docstring), or, with ``read``, a path.
    read
        ``read(path)`` returns the iterable of a path's samples (e.g. the lines of a file);
        default ``None``: no paths.

    Returns
    -------
    ShardedIterable
        A ``torch.utils.data.IterableDataset``.

    Raises
    ------
    ValueError
        No shard.
    TypeError
        A shard of another kind (named by its position), a path without ``read``, or a
        ``read`` that is not callable.

    Examples
    --------
    >>> data = seedlock.data.sharded(sorted(glob.glob("tokens-*.txt")), read=open)
    >>> train = seedlock.data.loader(data, batch_size=32, shuffle=True, num_workers=4)
    """
    if read is not None and not callable(read):
        raise TypeError(f"read must be callable (path -> iterable), got {type(read).__name__}")
    made = []
    for position, shard in enumerate(shards):
        if isinstance(shard, (str, os.PathLike)):
            if read is None:
                raise TypeError(
                    f"shard {position} is a path ({os.fspath(shard)!r}): pass read= to say how "
                    "to read one (e.g. read=open for lines of text)"
                )
            made.append(partial(read, shard))
        elif callable(shard) or (_stateful(shard) and hasattr(shard, "__iter__")):
            made.append(shard)
        else:
            raise TypeError(
                f"shard {position} is a {type(shard).__name__}: a shard is a callable returning "
                "an iterable, a path with read=, or an iterable with state_dict() and "
                "load_state_dict()"
            )
    if not made:
        raise ValueError("sharded() needs at least one shard")
    return ShardedIterable(made)


def sources_of(dataset: Any) -> list[Source]:
    """The shards of ``dataset``: a :class:`ShardedIterable`'s, or the dataset itself as one.

    Raises
    ------
    TypeError
        An iterable dataset without ``state_dict`` and ``load_state_dict``.
    """
    if isinstance(dataset, ShardedIterable):
        return [Source(shard, f"shard {i}") for i, shard in enumerate(dataset.shards)]
    if not (_stateful(dataset) and hasattr(dataset, "__iter__")):
        raise TypeError(STATELESS)
    return [Source(dataset, "the dataset")]
