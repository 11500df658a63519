"""Python's ``random`` module: the global Mersenne Twister behind ``random.random()``, and
``random.Random`` objects registered with :func:`seedlock.register`."""

from __future__ import annotations

import _random
import random
import struct
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from seedlock.backends.base import BaseBackend, low_bits
from seedlock.backends.checks import (
    blob_problem,
    fields_problem,
    float_problem,
    int_problem,
    mt19937_problem,
)

__all__ = ["PythonBackend"]

_WORDS = 625  # 624 words of MT19937 state and the position index
_MT = struct.Struct(f"<{_WORDS}I")
_FIELDS = frozenset(("version", "mt", "gauss_next"))


def _to_plain(getstate: tuple[Any, ...]) -> dict[str, Any]:
    version, internal, gauss_next = getstate
    return {"version": version, "mt": _MT.pack(*internal), "gauss_next": gauss_next}


def _from_plain(state: dict[str, Any]) -> tuple[Any, ...]:
    return (state["version"], _MT.unpack(state["mt"]), state["gauss_next"])


def _check(state: dict[str, Any]) -> list[str]:
    problems = fields_problem(state, _FIELDS)
    if problems:
        return problems
    problems += int_problem("version (Python 3's random)", state["version"], 3, 3)
    problems += float_problem("gauss_next", state["gauss_next"], optional=True)
    mt = state["mt"]
    mt_problems = blob_problem("mt", mt, _MT.size)
    if not mt_problems:
        # The last word is the position in the key; random.setstate refuses one above 624, but
        # only after the generators restored before it have changed.
        mt_problems += int_problem("mt position", int.from_bytes(mt[-4:], "little"), 0, 624)
        mt_problems += mt19937_problem("mt", mt)
    return problems + mt_problems


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
        # random.getstate makes 625 int objects (~10 us); the C state's bytes, copied whole,
        # are the same state. gauss_next, random.gauss's kept normal, is an attribute.
        instance: Any = random._inst
        memory = _state_memory(instance)
        if memory is None:
            c_getstate, c_setstate = _random.Random.getstate, _random.Random.setstate

            def save() -> tuple[Any, Any]:
                return c_getstate(instance), instance.gauss_next

            def load(saved: tuple[Any, Any]) -> None:
                c_setstate(instance, saved[0])
                instance.gauss_next = saved[1]

            return save, load

        def save_bytes() -> tuple[bytes, Any]:
            return memory.tobytes(), instance.gauss_next

        def load_bytes(saved: tuple[bytes, Any]) -> None:
            memory[:] = saved[0]
            instance.gauss_next = saved[1]

        return save_bytes, load_bytes

    def capture(self) -> dict[str, Any]:
        return _to_plain(random.getstate())

    def check_state(self, state: dict[str, Any], devices: str) -> list[str]:
        return _check(state)

    def restore(self, state: dict[str, Any]) -> None:
        random.setstate(_from_plain(state))

    def owns(self, obj: object) -> bool:
        # SystemRandom is a Random that reads os.urandom: no state to capture, no seed to set.
        return isinstance(obj, random.Random) and not isinstance(obj, random.SystemRandom)

    def unseedable(self, obj: object) -> str | None:
        if isinstance(obj, random.SystemRandom):
            return (
                "it draws from the operating system's entropy pool (os.urandom): no seed reaches "
                "it and it has no state to save; use random.Random(seed) or "
                "seedlock.random_rng(name) for reproducible numbers"
            )
        return None

    def capture_generator(self, obj: Any) -> dict[str, Any]:
        return _to_plain(obj.getstate())

    def check_generator(self, obj: Any, state: dict[str, Any]) -> list[str]:
        return _check(state)

    def snapshot_generator(self, obj: Any) -> Callable[[], object]:
        return partial(obj.setstate, obj.getstate())

    def restore_generator(self, obj: Any, state: dict[str, Any]) -> None:
        obj.setstate(_from_plain(state))

    def seed_generator(self, obj: Any, material: int) -> None:
        obj.seed(low_bits(material, 128))


def _state_memory(instance: Any) -> memoryview | None:
    """The C state of ``instance``, a ``random.Random``, as writable bytes: on CPython with
    the GIL its object is the header, the position (a C int), then the 624 words. None unless
    those bytes read exactly as ``getstate()`` reports the state, so another layout (another
    Python, a free-threaded build) keeps getstate / setstate."""
    gil = getattr(sys, "_is_gil_enabled", None)
    if sys.implementation.name != "cpython" or (gil is not None and not gil()):
        return None
    import ctypes  # only here: a view of the C state is what makes the snapshot cheap

    internal = _random.Random.getstate(instance)
    expected = struct.pack(f"=i{_WORDS - 1}I", internal[-1], *internal[:-1])
    start = object.__basicsize__
    if _random.Random.__basicsize__ < start + len(expected):
        return None
    array = (ctypes.c_ubyte * len(expected)).from_address(id(instance) + start)
    memory = memoryview(array).cast("B")
    return memory if memory.tobytes() == expected else None
