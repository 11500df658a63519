"""CuPy: the per-device global ``RandomState`` behind ``cupy.random.rand`` & co."""

from __future__ import annotations

import os
from typing import ClassVar

from seedlock.backends.base import SeedOnlyBackend

__all__ = ["CupyBackend"]


class CupyBackend(SeedOnlyBackend):
    """Seeds every device's global ``RandomState`` (through ``CUPY_SEED``, without starting a
    device); CuPy offers no way to read a state back, so nothing is captured."""

    name: ClassVar[str] = "cupy"
    module: ClassVar[str] = "cupy"

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
