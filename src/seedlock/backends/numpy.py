"""NumPy's legacy global generator: the ``RandomState`` behind ``np.random.rand`` & co.

``np.random.Generator`` objects have no global state; seedlock hands them out per named stream
(:func:`seedlock.numpy_rng`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from seedlock.backends.base import BaseBackend

__all__ = ["NumpyBackend"]


class NumpyBackend(BaseBackend):
    name: ClassVar[str] = "numpy"
    module: ClassVar[str] = "numpy"
    # np.random.seed accepts a scalar only below 2**32.
    seed_bits: ClassVar[int] = 32

    def seed(self, value: int) -> str:
        self._require_loaded().random.seed(value)
        return "np.random (legacy global RandomState)"

    def capture(self) -> dict[str, Any]:
        st = self._require_loaded().random.get_state(legacy=False)
        return {
            "bit_generator": st["bit_generator"],
            "key": [int(k) for k in st["state"]["key"]],
            "pos": int(st["state"]["pos"]),
            "has_gauss": int(st["has_gauss"]),
            "gauss": float(st["gauss"]),
        }

    def restore(self, state: dict[str, Any]) -> None:
        np = self._require_loaded()
        np.random.set_state(
            {
                "bit_generator": state["bit_generator"],
                "state": {"key": np.asarray(state["key"], dtype=np.uint32), "pos": state["pos"]},
                "has_gauss": state["has_gauss"],
                "gauss": state["gauss"],
            }
        )
