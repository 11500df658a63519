"""Python's ``random`` module: the global Mersenne Twister behind ``random.random()``, and
``random.Random`` objects registered with :func:`seedlock.register`."""

from __future__ import annotations

import _random
import random
import struct
from collections.abc import Callable
from typing import Any, ClassVar

from seedlock.backends.base import BaseBackend, blob_problem, low_bits

__all__ = ["PythonBackend"]

_WORDS = 625  # 624 words of MT19937 state and the position index
_MT = struct.Struct(f"<{_WORDS}I")


def _to_plain(getstate: tuple[Any, ...]) -> dict[str, Any]:
    version, internal, gauss_next = getstate
    return {"version": version, "mt": _MT.pack(*internal), "gauss_next": gauss_next}


def _from_plain(state: dict[str, Any]) -> tuple[Any, ...]:
    return (state["version"], _MT.unpack(state["mt"]), state["gauss_next"])


def _check(state: dict[str, Any]) -> list[str]:
    if not isinstance(state, dict):
        return [f"state must be a dict, got {type(state).__name__}"]
    problems = blob_problem("mt", state.get("mt"), _MT.size)
    if state.get("version") != 3:
        problems.append(f"version must be 3 (Python 3's random), got {state.get('version')!r}")
    if not isinstance(state.get("gauss_next"), (float, type(None))):
        problems.append("gauss_next must be a float or None")
    return problems


class PythonBackend(BaseBackend):
    name: ClassVar[str] = "python"
    module: ClassVar[str] = "random"
    # random.seed(int) keeps every bit of the integer, so a wide seed loses nothing.
    seed_bits: ClassVar[int] = 64

    def available(self) -> bool:
        return True

    def seed(self, value: int) -> str:
        random.seed(value)
        return "random (global Mersenne Twister)"

    def seeder(self) -> Callable[[int], object]:
        # random.seed(int) is random.py's Random.seed: type checks, then the C seed, then
        # gauss_next = None. Doing the last two directly saves a Python frame per sample.
        instance: Any = random._inst
        c_seed = _random.Random.seed

        def seed(value: int) -> None:
            c_seed(instance, value)
            instance.gauss_next = None

        return seed

    def snapshot(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        return random.getstate, random.setstate

    def capture(self) -> dict[str, Any]:
        return _to_plain(random.getstate())

    def check_state(self, state: dict[str, Any], devices: str) -> list[str]:
        return _check(state)

    def restore(self, state: dict[str, Any]) -> None:
        random.setstate(_from_plain(state))

    def owns(self, obj: object) -> bool:
        return isinstance(obj, random.Random)

    def capture_generator(self, obj: Any) -> dict[str, Any]:
        return _to_plain(obj.getstate())

    def check_generator(self, obj: Any, state: dict[str, Any]) -> list[str]:
        return _check(state)

    def restore_generator(self, obj: Any, state: dict[str, Any]) -> None:
        obj.setstate(_from_plain(state))

    def seed_generator(self, obj: Any, material: int) -> None:
        obj.seed(low_bits(material, 128))
