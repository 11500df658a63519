"""Elastic resume: a loader state in global samples, which another number of ranks resumes.

The guide: ``docs/data.md`` (elastic resume across world sizes).

With ``global_batch_size=G`` the sampler lays its order out in whole global batches and rank
``r`` of ``W`` takes positions ``r, r + W, r + 2W, ...`` (see
:class:`~seedlock.data.ResumableSampler`). Each rank's micro-batch of ``b`` samples is ``b`` of
its positions; ``accumulation = G / (W * b)`` micro-batches of every rank make one global step,
so global step ``k`` holds positions ``[k*G, (k+1)*G)`` for any shape ``(W, b)`` with ``W * b``
dividing ``G``. The loader's state counts the samples delivered over all ranks; a shape can
resume from it when that count is a multiple of its ``W * b`` (every global batch boundary is).

What a shape change cannot carry over is each rank's own random streams (dropout masks drawn
from the global generators on rank ``r`` of ``W`` have no counterpart on ``W'`` ranks):
:class:`~seedlock.distributed.PerRankState` with ``elastic=True`` seeds them afresh from the
root, the position and the new rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seedlock.backends.checks import fields_problem, int_problem
from seedlock.errors import CorruptStateError, WorldSizeMismatchError

if TYPE_CHECKING:
    from seedlock.data._sampler import ResumableSampler

__all__ = [
    "check_start",
    "elastic_position",
    "elastic_problem",
    "elastic_state",
    "layout_mismatch",
    "micro_batches",
]

_KEYS = ("version", "epoch", "samples", "global_batch_size")


def micro_batches(sampler: ResumableSampler, batch_size: int | None) -> int:
    """Micro-batches per rank in one global step (1 without ``global_batch_size``).

    Raises
    ------
    ValueError
        ``batch_size`` does not divide this rank's share of a global batch.
    """
    global_batch = sampler.global_batch_size
    if global_batch is None:
        return 1
    share = global_batch // sampler.num_replicas
    if type(batch_size) is not int or batch_size < 1 or share % batch_size:
        raise ValueError(
            f"with global_batch_size={global_batch} over {sampler.num_replicas} rank(s) each "
            f"rank takes {share} samples a step, which batch_size={batch_size} does not divide "
            f"into micro-batches: pass a batch_size that divides {share}"
        )
    return share // batch_size


def elastic_state(sampler: ResumableSampler, epoch: int, local: int) -> dict[str, Any]:
    """The loader state at ``local`` samples of this rank's share of ``epoch``."""
    state: dict[str, Any] = {
        "version": 2,
        "epoch": epoch,
        "samples": local * sampler.num_replicas,
        "global_batch_size": sampler.global_batch_size,
    }
    if sampler.order != "randperm":
        state["order"] = sampler.order
    return state


def elastic_position(
    sampler: ResumableSampler, state: dict[str, Any], batch_size: int
) -> tuple[int, int]:
    """``(epoch, this rank's position)`` of a loader state, checked against this shape.

    Raises
    ------
    CorruptStateError
        Not an elastic loader state, a malformed one, another ``global_batch_size`` or order.
    WorldSizeMismatchError
        A position this shape cannot start from (not a multiple of ``world_size *
        batch_size``).
    """
    if sampler.global_batch_size is None or state.get("version") != 2:
        raise CorruptStateError(layout_mismatch("loader", state, sampler.global_batch_size))
    keys = _KEYS + (("order",) if "order" in state else ())
    problems = fields_problem(state, keys, "loader state")
    if not problems:
        problems += int_problem("epoch", state["epoch"], 0, 2**63 - 1)
        problems += int_problem("samples", state["samples"], 0, len(sampler) * sampler.num_replicas)
        problems += sampler._order_problem(state.get("order", "randperm"))
        problems += elastic_problem(state, sampler.global_batch_size)
    if problems:
        raise CorruptStateError("; ".join(problems))
    shape = f"{sampler.num_replicas} rank(s) with batch_size={batch_size}"
    check_start(state["samples"], sampler.num_replicas * batch_size, shape)
    return state["epoch"], state["samples"] // sampler.num_replicas


def layout_mismatch(what: str, state: dict[str, Any], global_batch_size: int | None) -> str:
    """Why an elastic state and a non-elastic sampler or loader (or the reverse) do not mix."""
    if global_batch_size is None:
        saved = str(state.get("global_batch_size"))[:40]
        return (f"this {what} state was saved with global_batch_size={saved} (elastic); "
                f"build this {what} with global_batch_size={saved} to resume it")  # fmt: skip
    return (f"this {what} state was saved without global_batch_size; this {what} has "
            f"global_batch_size={global_batch_size}: build it as the run that saved the state "
            "was built")  # fmt: skip


def elastic_problem(state: dict[str, Any], global_batch_size: int) -> list[str]:
    """What keeps an elastic state from meaning the same samples here: another
    ``global_batch_size``."""
    saved = state["global_batch_size"]
    if saved != global_batch_size:
        return [f"this state was saved with global_batch_size={str(saved)[:40]}, this one has "
                f"{global_batch_size}: global step k holds other samples here"]  # fmt: skip
    return []


def check_start(samples: int, step: int, shape: str) -> None:
    """Refuse to start at ``samples`` global samples a shape that takes ``step`` at a time.

    Raises
    ------
    WorldSizeMismatchError
        ``samples`` is not a multiple of ``step``.
    """
    if samples % step:
        raise WorldSizeMismatchError(
            f"this state stopped after {samples} global samples, which {shape} cannot start "
            f"from (they take {step} at a time): resume at a global batch boundary"
        )
