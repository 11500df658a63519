"""JAX: no global generator. Randomness flows through explicit keys, which seedlock hands out
per named stream (:func:`seedlock.jax_key`); this backend only carries the determinism flag."""

from __future__ import annotations

import os
import sys
import warnings
from typing import ClassVar

from seedlock.backends.base import Change, DeterminismOptions, SeedOnlyBackend, set_env

__all__ = ["JaxBackend"]

_FLAG = "--xla_gpu_deterministic_ops=true"


def _jax_initialised() -> bool:
    """Has JAX created a backend (and so parsed XLA_FLAGS)? Answered without importing JAX."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


class JaxBackend(SeedOnlyBackend):
    name: ClassVar[str] = "jax"
    module: ClassVar[str] = "jax"
    seed_bits: ClassVar[int] = 0

    def seed(self, value: int) -> str:
        raise TypeError("JAX has no global generator to seed: use seedlock.jax_key(name)")

    def deterministic(self, on: bool, options: DeterminismOptions) -> list[Change]:
        flags = os.environ.get("XLA_FLAGS", "")
        if not on or "xla_gpu_deterministic_ops" in flags:
            return []
        if _jax_initialised():
            # XLA reads XLA_FLAGS once, when JAX creates its first backend.
            warnings.warn(
                "JAX is already initialised: XLA_FLAGS changes no longer take effect. Set "
                f"XLA_FLAGS={_FLAG} before the first JAX computation, or launch with "
                "`seedlock run --deterministic`.",
                RuntimeWarning,
                stacklevel=4,
            )
            return []
        change = set_env(self.name, "XLA_FLAGS", f"{flags} {_FLAG}".strip())
        return [change] if change else []
