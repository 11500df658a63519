"""NumPy: the legacy global generator (the ``RandomState`` behind ``np.random.rand`` & co.), and
``numpy.random.Generator`` / ``RandomState`` objects registered with :func:`seedlock.register`.

``np.random.Generator`` objects have no global state; seedlock hands them out per named stream
(:func:`seedlock.numpy_rng`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from seedlock.backends.base import BaseBackend, blob_problem, low_bits

__all__ = ["NumpyBackend"]

_KEY_BYTES = 624 * 4


def _to_plain(value: Any) -> Any:
    """A bit generator's state dict as plain data: arrays become {dtype, shape, data}."""
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if hasattr(value, "dtype") and hasattr(value, "tobytes"):
        if value.ndim == 0:
            return value.item()
        arr = value.astype(value.dtype.newbyteorder("<"))
        return {"__array__": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    return value


def _from_plain(np: Any, value: Any) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            arr = np.frombuffer(value["data"], dtype=np.dtype(value["__array__"]))
            return arr.reshape(value["shape"]).copy()
        return {k: _from_plain(np, v) for k, v in value.items()}
    return value


class NumpyBackend(BaseBackend):
    name: ClassVar[str] = "numpy"
    module: ClassVar[str] = "numpy"
    # np.random.seed accepts a scalar only below 2**32.
    seed_bits: ClassVar[int] = 32

    def seed(self, value: int) -> str:
        self._require_loaded().random.seed(value)
        return "np.random (legacy global RandomState)"

    def seeder(self) -> Callable[[int], object]:
        return self._require_loaded().random.seed  # type: ignore[no-any-return]

    def snapshot(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        random = self._require_loaded().random
        return random.get_state, random.set_state

    def capture(self) -> dict[str, Any]:
        st = self._require_loaded().random.get_state(legacy=False)
        return {
            "bit_generator": st["bit_generator"],
            "key": st["state"]["key"].astype("<u4").tobytes(),
            "pos": int(st["state"]["pos"]),
            "has_gauss": int(st["has_gauss"]),
            "gauss": float(st["gauss"]),
        }

    def check_state(self, state: dict[str, Any], devices: str) -> list[str]:
        if not isinstance(state, dict):
            return [f"state must be a dict, got {type(state).__name__}"]
        problems = blob_problem("key", state.get("key"), _KEY_BYTES)
        if state.get("bit_generator") != "MT19937":
            problems.append(f"bit_generator must be 'MT19937', got {state.get('bit_generator')!r}")
        pos = state.get("pos")
        if not isinstance(pos, int) or not 0 <= pos <= 624:
            problems.append(f"pos must be an int in [0, 624], got {pos!r}")
        if not isinstance(state.get("gauss"), float) or not isinstance(state.get("has_gauss"), int):
            problems.append("gauss must be a float and has_gauss an int")
        return problems

    def restore(self, state: dict[str, Any]) -> None:
        np = self._require_loaded()
        key = np.frombuffer(state["key"], dtype="<u4").astype(np.uint32)
        np.random.set_state(
            {
                "bit_generator": state["bit_generator"],
                "state": {"key": key, "pos": state["pos"]},
                "has_gauss": state["has_gauss"],
                "gauss": state["gauss"],
            }
        )

    def owns(self, obj: object) -> bool:
        np = self._loaded_module()
        return np is not None and isinstance(obj, (np.random.Generator, np.random.RandomState))

    def _loaded_module(self) -> Any:
        return self._require_loaded() if self.loaded() else None

    def _raw_state(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, self._require_loaded().random.RandomState):
            # RandomState keeps a cached Gaussian beside its bit generator's state.
            state: dict[str, Any] = obj.get_state(legacy=False)
            return state
        bit_state: dict[str, Any] = obj.bit_generator.state
        return bit_state

    def capture_generator(self, obj: Any) -> dict[str, Any]:
        state: dict[str, Any] = _to_plain(self._raw_state(obj))
        return state

    def check_generator(self, obj: Any, state: dict[str, Any]) -> list[str]:
        if not isinstance(state, dict) or "bit_generator" not in state:
            return ["state must be a dict with a 'bit_generator' entry"]
        raw = self._raw_state(obj)
        kind, saved = raw["bit_generator"], state["bit_generator"]
        if saved != kind:
            return [f"bit generator is {kind}, the state is for {saved}"]
        if set(state) != set(raw):
            return [f"state has fields {sorted(state)}, expected {sorted(raw)}"]
        return []

    def restore_generator(self, obj: Any, state: dict[str, Any]) -> None:
        np = self._require_loaded()
        plain = _from_plain(np, state)
        if isinstance(obj, np.random.RandomState):
            obj.set_state(plain)
        else:
            obj.bit_generator.state = plain

    def seed_generator(self, obj: Any, material: int) -> None:
        np = self._require_loaded()
        if isinstance(obj, np.random.RandomState):
            obj.seed(low_bits(material, 32))
        else:
            # A fresh bit generator of the same type, seeded with 128 bits; its state is copied
            # in so that every reference to `obj` sees the new stream.
            obj.bit_generator.state = type(obj.bit_generator)(low_bits(material, 128)).state
