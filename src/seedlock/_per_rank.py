"""Per-rank checkpoints: :class:`PerRankState`, this rank's RNG state and loader position.

Exported as :class:`seedlock.distributed.PerRankState`; the guide: ``docs/distributed.md``
(checkpoints; elastic resume).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seedlock import _registry
from seedlock._ranks import rank, world_size
from seedlock.backends import seed_live_globals
from seedlock.errors import StateMismatchError, WorldSizeMismatchError, check_version
from seedlock.state import capture, restore
from seedlock.stateful import load_state_dict, state_dict

__all__ = ["PerRankState"]

#: Version of :meth:`PerRankState.state_dict`'s layout.
_PER_RANK_VERSION = 1


class PerRankState:
    """This rank's seedlock RNG state (and any ``Stateful`` you add) as one checkpoint entry.

    Speaks the ``Stateful`` protocol, so it goes into ``torch.distributed.checkpoint`` as is;
    ``state_dict()`` is ``{"version": 1, "world_size": W, "rank<r>": {"rng":
    seedlock.state_dict(), <name>: obj.state_dict(), ...}}`` — the rank in the key, because DCP
    writes one copy of entries that have the same key on every rank. The same dict goes into a
    plain per-rank file::

        state = seedlock.distributed.PerRankState(loader=train_loader)
        dcp.save({"model": ..., "seedlock": state}, checkpoint_id="ckpt/step-100")
        dcp.load({"model": ..., "seedlock": state}, checkpoint_id="ckpt/step-100")
        # or
        path = seedlock.distributed.rank_path("ckpt/step-100.pt")     # ckpt/step-100-rank1.pt
        torch.save({"model": ..., "seedlock": state.state_dict()}, path)
        state.load_state_dict(torch.load(path, weights_only=True)["seedlock"])

    Parameters
    ----------
    rng
        Hold seedlock's RNG state (:func:`seedlock.state_dict`) under ``"rng"``; default
        ``True``.
    elastic
        Let a job of another number of ranks load the state (see :meth:`load_state_dict`):
        for a loader built with ``global_batch_size``; default ``False``: another world size
        is refused.
    **stateful
        More objects with ``state_dict()`` and ``load_state_dict()``, each under its keyword
        (``loader=train_loader``).

    Raises
    ------
    TypeError
        An object lacks ``state_dict`` or ``load_state_dict``.
    ValueError
        ``rng=False`` and no object: nothing to hold.
    """

    def __init__(self, *, rng: bool = True, elastic: bool = False, **stateful: Any) -> None:
        for name, obj in stateful.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(
                    f"{name}= must have state_dict() and load_state_dict() (the Stateful "
                    f"protocol), got {type(obj).__name__}"
                )
        if not rng and not stateful:
            raise ValueError("nothing to hold: rng=False and no Stateful object given")
        self.rng = rng
        self.elastic = elastic
        self.stateful = dict(stateful)

    def state_dict(self) -> dict[str, Any]:
        """This rank's entry, keyed by its rank.

        Returns
        -------
        dict
            ``{"version": 1, "world_size": W, "rank<r>": {"rng": ..., <name>: ...}}``.
        """
        entry: dict[str, Any] = {"rng": state_dict()} if self.rng else {}
        for name, obj in self.stateful.items():
            entry[name] = obj.state_dict()
        return {"version": _PER_RANK_VERSION, "world_size": world_size(), f"rank{rank()}": entry}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back this rank's entry, checking everything before changing anything.

        Under DCP a job with *more* ranks fails inside ``dcp.load`` instead, which names the
        missing ``rank<r>`` key.

        With ``elastic=True`` and another number of ranks than saved it, ``state`` may hold
        any saved rank's entry (each rank of the new job loads, say, rank 0's file). Each added
        object gets the state every saved entry holds for it, which must be the same in all of
        them (as an elastic loader's global position is). The RNG state does not map to the new
        ranks: the global generators are seeded afresh instead, rank-local, from the root seed
        and the elastic loader's position: ``derive("elastic", epoch, samples, "rank", rank,
        <backend>)``.

        Parameters
        ----------
        state
            What :meth:`state_dict` returned on this rank of a job of the same size (one without
            ``"version"`` is read as version 1).

        Raises
        ------
        WorldSizeMismatchError
            Another number of ranks saved it (without ``elastic=True``); with it, no added
            object holds an elastic loader position, or an object's state differs between the
            saved ranks.
        StateMismatchError
            It is not a ``PerRankState`` state dict, it is another rank's (a file of another
            rank), or it holds other names than this ``PerRankState``.
        StateError
            The RNG state does not fit (validated by :func:`seedlock.load_state_dict`) or a
            newer seedlock wrote it (:class:`~seedlock.errors.StateVersionError`).
        Exception
            Whatever an added object's ``load_state_dict`` raises, after everything loaded so
            far is put back.
        """
        here, size = rank(), world_size()
        _check_version(state)
        saved = state.get("world_size")
        if type(saved) is not int:
            raise StateMismatchError(
                [f"not a PerRankState state dict (no int 'world_size'): {_keys(state)}"]
            )
        if saved != size and not self.elastic:
            raise WorldSizeMismatchError(
                f"this state was saved by a job of {saved} rank(s), this job has {size}: "
                "per-rank RNG streams and each rank's share of the data cannot be redistributed "
                f"exactly; resume with the same number of ranks ({saved}), or see elastic=True"
            )
        if saved != size:
            self._load_elastic(state, saved)
            return
        entry = state.get(f"rank{here}")
        if not isinstance(entry, Mapping):
            owners = sorted(k for k in state if k.startswith("rank"))
            raise StateMismatchError(
                [f"no state for rank {here} here (it holds {owners}): a file of another rank?"]
            )
        expected = {"rng"} if self.rng else set()
        expected |= set(self.stateful)
        if set(entry) != expected:
            raise StateMismatchError(
                [
                    f"rank {here}: the state holds {sorted(entry)}, this PerRankState holds "
                    f"{sorted(expected)}"
                ]
            )
        before = capture() if self.rng else None
        if self.rng:
            load_state_dict(dict(entry["rng"]))
        try:
            self._load_objects(entry)
        except BaseException:
            if before is not None:
                restore(before)
            raise

    def _load_objects(self, states: Mapping[str, Any]) -> None:
        """Load each added object's state; if one refuses, put back those loaded before it."""
        snapshots = {name: obj.state_dict() for name, obj in self.stateful.items()}
        done: list[str] = []
        try:
            for name, obj in self.stateful.items():
                obj.load_state_dict(states[name])
                done.append(name)
        except BaseException:
            for name in done:
                self.stateful[name].load_state_dict(snapshots[name])
            raise

    def _load_elastic(self, state: Mapping[str, Any], saved: int) -> None:
        """Load what a job of ``saved`` ranks wrote into this job of another size."""
        entries = _elastic_entries(state, saved)
        expected = ({"rng"} if self.rng else set()) | set(self.stateful)
        for entry in entries:
            if set(entry) != expected:
                held = f"a saved rank holds {sorted(entry)}"
                raise StateMismatchError([f"{held}, this PerRankState holds {sorted(expected)}"])
        states: dict[str, Any] = {}
        for name in self.stateful:
            found = [entry[name] for entry in entries]
            if any(other != found[0] for other in found[1:]):
                raise WorldSizeMismatchError(
                    f"{name!r} differs between the {saved} saved ranks, so it has no counterpart "
                    "on another number of ranks: only a global position (a loader built with "
                    "global_batch_size) resumes elastically"
                )
            states[name] = found[0]
        epoch, samples = _elastic_position(states)
        self._load_objects(states)
        if self.rng:  # rank-local, as seed_everything(per_rank=True) makes them
            seed_live_globals("elastic", epoch, samples, "rank", rank())
            _registry.set_globals_per_rank(True)


def _check_version(state: object) -> None:
    """Refuse what is not a PerRankState state dict, or one a newer seedlock wrote.

    A state without ``"version"`` is version 1: what seedlock wrote before it had one.
    """
    if not isinstance(state, Mapping):
        raise StateMismatchError([f"not a PerRankState state dict: {_keys(state)}"])
    check_version(state.get("version", 1), _PER_RANK_VERSION, "PerRankState state")


def _keys(value: object) -> str:
    if isinstance(value, Mapping):
        return f"keys {sorted(map(str, value))[:6]}"
    return type(value).__name__


def _elastic_entries(state: Mapping[str, Any], saved: int) -> list[Mapping[str, Any]]:
    """The saved ranks' entries in ``state`` (at least one; each a mapping)."""
    entries = []
    for key, entry in state.items():
        if key.startswith("rank") and key[4:].isdigit() and int(key[4:]) < saved:
            if not isinstance(entry, Mapping):
                raise StateMismatchError([f"{key} is not a mapping: {_keys(entry)}"])
            entries.append(entry)
    if not entries:
        raise StateMismatchError([f"no rank's entry in this state: {_keys(state)}"])
    return entries


def _elastic_position(states: Mapping[str, Any]) -> tuple[int, int]:
    """``(epoch, samples)`` of the one elastic loader state among ``states``."""
    for value in states.values():
        if (
            isinstance(value, Mapping)
            and "global_batch_size" in value
            and type(value.get("epoch")) is int
            and type(value.get("samples")) is int
        ):
            return value["epoch"], value["samples"]
    raise WorldSizeMismatchError(
        "an elastic resume re-derives each rank's RNG streams from the data position, and no "
        "object here holds one: add the loader built with global_batch_size "
        "(PerRankState(loader=train_loader, elastic=True))"
    )
