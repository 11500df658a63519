"""Which process this is in a multi-process job: rank, world size and local rank.

A leaf module (it imports no other seedlock module), so that every module that needs the rank
— streams, seeding, the sampler, the distributed helpers — reads it from one place.

The values come from the default ``torch.distributed`` process group when one is initialised,
else from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), so streams
can be made before ``init_process_group``, else ``0`` / ``1``. ``torch.distributed`` is never
imported here, only read when the program has imported it. The guide: ``docs/distributed.md``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["initialised_group", "local_rank", "rank", "world_size"]


def initialised_group() -> Any | None:
    """``torch.distributed`` if a default process group is initialised, else ``None``.

    Never imports ``torch.distributed``: a program that has not imported it has no group.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not an integer (torchrun sets it to this process's number)"
        ) from None


def world_size() -> int:
    """The number of ranks of the job.

    Returns
    -------
    int
        The default process group's size when one is initialised, else ``WORLD_SIZE``, else 1.

    Raises
    ------
    ValueError
        ``WORLD_SIZE`` is set to something other than an integer >= 1.

    Examples
    --------
    >>> seedlock.distributed.world_size()      # under torchrun --nproc_per_node=2
    2
    """
    dist = initialised_group()
    size = _env_int("WORLD_SIZE", 1) if dist is None else int(dist.get_world_size())
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {size}")
    return size


def rank() -> int:
    """This process's global rank.

    Returns
    -------
    int
        The default process group's rank when one is initialised, else ``RANK``, else 0.

    Raises
    ------
    ValueError
        ``RANK`` is not an integer in ``[0, WORLD_SIZE)``.

    Examples
    --------
    >>> seedlock.distributed.rank()            # on the second process of torchrun
    1
    """
    dist = initialised_group()
    if dist is not None:
        return int(dist.get_rank())
    here, size = _env_int("RANK", 0), world_size()
    if 0 <= here < size:
        return here
    raise ValueError(f"RANK={here} is outside [0, WORLD_SIZE={size})")


def local_rank() -> int:
    """This process's rank on its machine: the index of the accelerator it should use.

    Returns
    -------
    int
        ``LOCAL_RANK`` (set by torchrun), else 0.

    Raises
    ------
    ValueError
        ``LOCAL_RANK`` is not an integer.

    Examples
    --------
    >>> torch.cuda.set_device(seedlock.distributed.local_rank())
    """
    return _env_int("LOCAL_RANK", 0)
