"""CuPy: the per-device global ``RandomState`` behind ``cupy.random.rand`` & co."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from seedlock.backends.base import BaseBackend
from seedlock.backends.checks import fields_problem

__all__ = ["CupyBackend"]


class CupyBackend(BaseBackend):
    name: ClassVar[str] = "cupy"
    module: ClassVar[str] = "cupy"
    seed_bits: ClassVar[int] = 32

    def seed(self, value: int) -> str:
        cupy = self._require_loaded()
        # CuPy creates a device's global RandomState on first use, seeded from CUPY_SEED; setting
        # it seeds every device without touching (or initialising) any of them now. States that
        # already exist are reseeded in place.
        os.environ["CUPY_SEED"] = str(value)
        existing = getattr(getattr(cupy.random, "_generator", None), "_random_states", {})
        for state in list(existing.values()):
            state.seed(value)
        return f"cupy.random global RandomState (CUPY_SEED, {len(existing)} live)"

    def capture(self) -> dict[str, Any]:
        return {}

    def check_state(self, state: dict[str, Any], devices: str) -> list[str]:
        return fields_problem(state, ())  # nothing is captured, so only {} is a state

    def restore(self, state: dict[str, Any]) -> None:
        return None
