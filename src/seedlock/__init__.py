"""seedlock: bit-for-bit reproducible PyTorch / NumPy / Python runs.

>>> import seedlock
>>> report = seedlock.seed_everything(42)       # every installed RNG, classic values
>>> seedlock.derive("augment")                  # a stable seed for a named stream
>>> with seedlock.deterministic(): ...          # reversible determinism profile

Importing seedlock imports no framework: the public names below are loaded on first use.
"""

from __future__ import annotations

import importlib

from seedlock._version import __version__

# `typing` costs ~8 ms to import (re, enum, collections): more than the rest of seedlock.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from seedlock.derivation import derive, get_root
    from seedlock.determinism import DeterminismProfile, deterministic
    from seedlock.seeding import SeedReport, ensure_hash_seed, hash_seed, seed_everything
    from seedlock.streams import jax_key, numpy_rng, random_rng, torch_generator

# public name -> module that defines it
_EXPORTS = {
    "seed_everything": "seedlock.seeding",
    "SeedReport": "seedlock.seeding",
    "ensure_hash_seed": "seedlock.seeding",
    "hash_seed": "seedlock.seeding",
    "derive": "seedlock.derivation",
    "get_root": "seedlock.derivation",
    "numpy_rng": "seedlock.streams",
    "random_rng": "seedlock.streams",
    "torch_generator": "seedlock.streams",
    "jax_key": "seedlock.streams",
    "deterministic": "seedlock.determinism",
    "DeterminismProfile": "seedlock.determinism",
}

__all__ = [
    "DeterminismProfile",
    "SeedReport",
    "__version__",
    "derive",
    "deterministic",
    "ensure_hash_seed",
    "get_root",
    "hash_seed",
    "jax_key",
    "numpy_rng",
    "random_rng",
    "seed_everything",
    "torch_generator",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'seedlock' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
