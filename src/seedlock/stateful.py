"""The ``Stateful`` convention: the protocol every stateful object of seedlock speaks, and the
process's RNG state as a checkpoint-ready dict.

``state_dict()`` / ``load_state_dict()`` is how ``torch.distributed.checkpoint``, torchdata and
PyTorch's own modules save and load. :func:`state_dict` gives :func:`seedlock.capture` as a nested
dict of str, int, float, None and uint8 tensors (safe for ``torch.load(..., weights_only=True)``);
:func:`load_state_dict` restores it with every guarantee of :func:`seedlock.restore` (validated
first, all or nothing); :data:`rng` is the same pair as an object. The guide: ``docs/state.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from seedlock.errors import CorruptStateError
from seedlock.state import MAX_DEPTH, DevicePolicy, RNGState, capture, restore

__all__ = ["Stateful", "load_state_dict", "rng", "state_dict"]


@runtime_checkable
class Stateful(Protocol):
    """What checkpointing code can save and load: ``state_dict()`` and ``load_state_dict()``.

    The convention of ``torch.distributed.checkpoint``, torchdata and PyTorch's own modules.
    Every stateful object of seedlock speaks it — :data:`seedlock.rng`, the data loader,
    :class:`~seedlock.data.ResumableSampler`, :class:`~seedlock.distributed.PerRankState` — and
    every state dict it returns carries an int ``"version"``: a state written by a newer
    seedlock is refused with :class:`~seedlock.StateVersionError` and nothing changes.

    Examples
    --------
    >>> isinstance(seedlock.rng, seedlock.Stateful)
    True
    """

    def state_dict(self) -> dict[str, Any]:
        """The object's state as a nested dict of plain values and tensors.

        Returns
        -------
        dict
        """
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a state.

        Parameters
        ----------
        state
            What :meth:`state_dict` returned.
        """
        ...


def _map_blobs(
    value: Any, fn: Callable[[Any], Any], is_blob: Callable[[Any], bool], depth: int = 0
) -> Any:
    if is_blob(value):
        return fn(value)
    if depth > MAX_DEPTH:
        raise CorruptStateError(f"the state is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        return {k: _map_blobs(v, fn, is_blob, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_map_blobs(v, fn, is_blob, depth + 1) for v in value]
    return value


def _to_array(blob: bytes) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    np = sys.modules.get("numpy")
    if np is not None:
        return np.frombuffer(blob, dtype=np.uint8).copy()
    return blob


def _is_array(value: Any) -> bool:
    # A torch tensor or NumPy array of bytes, recognised without importing either library.
    return hasattr(value, "dtype") and hasattr(value, "shape") and not isinstance(value, type)


def _from_array(value: Any) -> bytes:
    if str(value.dtype) not in ("torch.uint8", "uint8"):
        raise CorruptStateError(
            f"binary state fields must be uint8 arrays, got {str(value.dtype)[:40]}"
        )
    try:
        if hasattr(value, "numpy"):
            value = value.detach().cpu().numpy()
        return bytes(value.tobytes())
    except Exception as exc:  # a sparse, meta or otherwise unreadable tensor
        raise CorruptStateError(f"a binary state field cannot be read: {exc}") from None


def state_dict() -> dict[str, Any]:
    """:func:`capture` as a checkpoint-ready nested dict (the ``Stateful`` convention).

    Returns
    -------
    dict
        :meth:`RNGState.to_plain` with its binary fields as uint8 tensors when torch is imported
        (NumPy arrays when only NumPy is, ``bytes`` otherwise); everything else is str, int,
        float, bool or None. It survives ``torch.save`` → ``torch.load(...,
        weights_only=True)``::

        torch.save({"model": model.state_dict(), "rng": seedlock.state_dict()}, "ckpt.pt")
        ckpt = torch.load("ckpt.pt", weights_only=True)
        seedlock.load_state_dict(ckpt["rng"])
    """
    plain: dict[str, Any] = _map_blobs(
        capture().to_plain(), _to_array, lambda v: isinstance(v, bytes)
    )
    return plain


def load_state_dict(sd: dict[str, Any], *, devices: DevicePolicy = "exact") -> None:
    """Restore a :func:`state_dict` (validated first, like :func:`restore`).

    Parameters
    ----------
    sd
        What :func:`state_dict` returned; its binary fields may be uint8 tensors on any device,
        uint8 NumPy arrays or bytes.
    devices
        ``"exact"`` (default) or ``"common"``, as for :func:`restore`.

    Raises
    ------
    StateError
        Any problem, as a subclass (:class:`~seedlock.errors.CorruptStateError`,
        :class:`~seedlock.errors.StateVersionError`, :class:`~seedlock.errors.StateMismatchError`);
        nothing changes.
    ValueError
        ``devices`` is another value.
    """
    restore(RNGState.from_plain(_map_blobs(sd, _from_array, _is_array)), devices=devices)


class _ProcessRNG:
    """The random state of this process as a :class:`Stateful` object (see :data:`rng`)."""

    def state_dict(self) -> dict[str, Any]:
        """:func:`seedlock.state_dict`: every generator's state, checkpoint-ready.

        Returns
        -------
        dict
        """
        return state_dict()

    def load_state_dict(self, state: dict[str, Any], *, devices: DevicePolicy = "exact") -> None:
        """:func:`seedlock.load_state_dict`: restore it exactly, or change nothing.

        Parameters
        ----------
        state, devices
            As for :func:`seedlock.load_state_dict`.
        """
        load_state_dict(state, devices=devices)

    def __repr__(self) -> str:
        return "seedlock.rng"


#: The process's whole random state as a :class:`Stateful` object, for the APIs that take
#: objects rather than dicts: ``dcp.save({"rng": seedlock.rng}, ...)``,
#: ``accelerator.register_for_checkpointing(seedlock.rng)``. Its methods are
#: :func:`state_dict` and :func:`load_state_dict`.
rng = _ProcessRNG()
