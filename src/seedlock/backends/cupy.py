"""CuPy: the per-device global ``RandomState`` behind ``cupy.random.rand`` & co.

CuPy keeps one global ``RandomState`` per device in ``cupy.random._generator._random_states``
(device id -> state) and creates a device's on first use, seeded from ``CUPY_SEED``. A state
cannot be read back (curand keeps it on the device), so nothing is captured as data: a
checkpoint holds no CuPy state. Within one process the states can still be put back as
*objects*: seeding never reseeds a state in place, it sets ``CUPY_SEED`` and drops the states,
which CuPy then recreates from it, so a state kept aside (:meth:`CupyBackend.snapshot`, what
:func:`seedlock.fork` uses) is untouched by whatever is drawn after the seeding.

Per-sample seeding (``seeder``) leaves CuPy alone: it seeds host generators only, and CuPy's
are device generators.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from seedlock.backends.base import SeedOnlyBackend

__all__ = ["CupyBackend"]

_SEED_VAR = "CUPY_SEED"
_GENERATOR = "cupy.random._generator"


def _states() -> dict[Any, Any] | None:
    """CuPy's dict of global states, looked up each time (``reset_states`` rebinds it)."""
    states = getattr(sys.modules.get(_GENERATOR), "_random_states", None)
    return states if isinstance(states, dict) else None


def _save() -> tuple[dict[Any, Any], str | None]:
    states = _states()
    return ({} if states is None else dict(states)), os.environ.get(_SEED_VAR)


def _load(saved: tuple[dict[Any, Any], str | None]) -> None:
    objects, seed = saved
    if seed is None:
        os.environ.pop(_SEED_VAR, None)
    else:
        os.environ[_SEED_VAR] = seed
    states = _states()
    if states is not None:
        states.clear()
        states.update(objects)


def _leave_alone(value: int) -> None:
    """Per-sample seeding's seeder for CuPy: its generators live on devices (see the module
    docstring)."""


class CupyBackend(SeedOnlyBackend):
    """Seeds every device's global ``RandomState`` through ``CUPY_SEED``, without starting a
    device; nothing is captured as data, and an in-process snapshot keeps the state objects
    (see the module docstring)."""

    name: ClassVar[str] = "cupy"
    module: ClassVar[str] = "cupy"

    def seed(self, value: int) -> str:
        self._require_loaded()
        # A device's state is created on first use from CUPY_SEED: dropping the live ones seeds
        # every device without touching (or initialising) any of them now, and leaves the
        # objects themselves as they were for a snapshot that holds them.
        os.environ[_SEED_VAR] = str(value)
        states = _states()
        live = 0 if states is None else len(states)
        if states is not None:
            states.clear()
        return f"cupy.random global RandomState (CUPY_SEED; {live} live, recreated on first use)"

    def seeder(self) -> Callable[[int], object]:
        return _leave_alone

    def snapshot(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        return _save, _load
