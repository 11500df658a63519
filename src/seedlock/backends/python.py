"""Python's ``random`` module: the global Mersenne Twister behind ``random.random()``."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from seedlock.backends.base import BaseBackend

__all__ = ["PythonBackend"]


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

    def capture(self) -> dict[str, Any]:
        version, internal, gauss_next = random.getstate()
        return {"version": version, "mt": list(internal), "gauss_next": gauss_next}

    def restore(self, state: dict[str, Any]) -> None:
        random.setstate((state["version"], tuple(state["mt"]), state["gauss_next"]))
