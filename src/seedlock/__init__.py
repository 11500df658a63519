"""seedlock: bit-for-bit reproducible PyTorch / NumPy / Python runs.

>>> import seedlock
>>> report = seedlock.seed_everything(42)       # every installed RNG, classic values
>>> seedlock.derive("augment")                  # a stable seed for a named stream
>>> with seedlock.deterministic(): ...          # reversible determinism profile

Importing seedlock imports no framework: the public names below are loaded on first use.
"""

from __future__ import annotations

from seedlock import _lazy
from seedlock._version import __version__

# Not `typing.TYPE_CHECKING`: importing `typing` (re, enum, collections) costs more than the rest
# of `import seedlock` (benchmarks/bench_seeding.py measures the import).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from seedlock import audit, data, distributed
    from seedlock._forking import fork, reseed_on_fork
    from seedlock._registry import register, unregister
    from seedlock.derivation import derive, get_root
    from seedlock.determinism import DeterminismProfile, deterministic
    from seedlock.errors import StateError
    from seedlock.seeding import SeedReport, ensure_hash_seed, hash_seed, seed_everything
    from seedlock.state import RNGState, capture, restore
    from seedlock.stateful import Stateful, load_state_dict, rng, state_dict
    from seedlock.store import load, save
    from seedlock.streams import jax_key, numpy_rng, random_rng, torch_generator

# public name -> module that defines it (a subpackage maps to itself)
_EXPORTS = {
    "audit": "seedlock.audit",
    "data": "seedlock.data",
    "distributed": "seedlock.distributed",
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
    "RNGState": "seedlock.state",
    "Stateful": "seedlock.stateful",
    "capture": "seedlock.state",
    "restore": "seedlock.state",
    "rng": "seedlock.stateful",
    "state_dict": "seedlock.stateful",
    "load_state_dict": "seedlock.stateful",
    "fork": "seedlock._forking",
    "reseed_on_fork": "seedlock._forking",
    "register": "seedlock._registry",
    "unregister": "seedlock._registry",
    "save": "seedlock.store",
    "load": "seedlock.store",
    "StateError": "seedlock.errors",
}

__all__ = [
    "DeterminismProfile",
    "RNGState",
    "SeedReport",
    "StateError",
    "Stateful",
    "__version__",
    "audit",
    "capture",
    "data",
    "derive",
    "deterministic",
    "distributed",
    "ensure_hash_seed",
    "fork",
    "get_root",
    "hash_seed",
    "jax_key",
    "load",
    "load_state_dict",
    "numpy_rng",
    "random_rng",
    "register",
    "reseed_on_fork",
    "restore",
    "rng",
    "save",
    "seed_everything",
    "state_dict",
    "torch_generator",
    "unregister",
]


__getattr__, __dir__ = _lazy.hooks(__name__, _EXPORTS, globals())
