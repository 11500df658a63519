"""Named streams: generators seeded by *name* from the root seed, one factory per family.

``seedlock.numpy_rng("augment")`` is always the same stream for the same root, however many
random calls other components add or remove: streams are addressed by key path (see
:mod:`seedlock.derivation`), never by call order. Each call returns a *new* generator positioned at
the start of its stream (like ``jax.random.key``): create it once, where the component is set up.

Every generator a factory makes is registered (:func:`seedlock.register`) under its call, e.g.
``"numpy_rng('augment', 3)"``, so :func:`seedlock.capture` and checkpoints include it; making the
same stream again replaces the registration.

Keys after the name extend the path: ``numpy_rng("augment", worker_id)`` is a stream of its own.

Under ``torchrun`` a stream is *shared* (the default: the same numbers on every rank, e.g. model
initialisation or a shuffle order) or, with ``per_rank=True``, *rank-local*: the rank is appended
to the key path as ``(*keys, "rank", rank)`` (never added to a seed), so dropout, augmentation or
noise differ between ranks yet replay run after run. The rank comes from
:func:`seedlock.distributed.rank`. A rank-local generator is registered as e.g.
``"numpy_rng('augment', per_rank=True)"``: the same name on every rank, so every rank's
checkpoint has the same layout, while :func:`seedlock.distributed.sync_state` leaves it alone.

=====================  =============================================================
factory                seeded with
=====================  =============================================================
``numpy_rng``          ``np.random.default_rng(derive(*keys, bits=128))`` (PCG64)
``random_rng``         ``random.Random(derive(*keys, bits=128))``
``torch_generator``    ``derive(*keys, bits=32)`` on CPU (MT19937 keeps 32 bits),
                       ``derive(*keys, bits=64)`` on accelerators (Philox keeps 64)
``jax_key``            the default PRNG implementation's key data, 32 bits per word,
                       from ``derive(*keys, bits=32 * words)``
=====================  =============================================================
"""

from __future__ import annotations

import random
from functools import cache
from typing import Any, TypeVar

from seedlock.derivation import Key, Seed, derive

__all__ = ["jax_key", "numpy_rng", "random_rng", "rank_local_names", "torch_generator"]


def numpy_rng(name: Key, *keys: Key, root: Seed | None = None, per_rank: bool = False) -> Any:
    """A ``numpy.random.Generator`` (PCG64) for the stream ``(name, *keys)``.

    ``per_rank=True`` makes it rank-local (see the module docstring).

    >>> rng = numpy_rng("augment", root=0)
    >>> int(rng.integers(0, 100))
    86
    >>> noise = numpy_rng("augment", per_rank=True)   # another stream on every rank
    """
    import numpy as np

    path = _path(name, keys, per_rank)
    rng = np.random.default_rng(derive(*path, root=root, bits=128))
    return _register(rng, "numpy_rng", (name, *keys), root, per_rank)


def random_rng(
    name: Key, *keys: Key, root: Seed | None = None, per_rank: bool = False
) -> random.Random:
    """A ``random.Random`` for the stream ``(name, *keys)``; ``per_rank=True``: rank-local.

    >>> random_rng("augment", root=0).random()
    0.780678876952921
    """
    rng = random.Random(derive(*_path(name, keys, per_rank), root=root, bits=128))
    return _register(rng, "random_rng", (name, *keys), root, per_rank)


def torch_generator(
    name: Key, *keys: Key, device: Any = "cpu", root: Seed | None = None, per_rank: bool = False
) -> Any:
    """A ``torch.Generator`` on ``device`` for the stream ``(name, *keys)``.

    Creating a generator on an accelerator initialises that device, as torch always does.
    ``per_rank=True`` makes it rank-local (see the module docstring).

    >>> g = torch_generator("sampler", root=0)
    >>> g.initial_seed()
    899877552
    """
    import torch

    dev = torch.device(device)
    bits = 32 if dev.type == "cpu" else 64
    generator = torch.Generator(device=dev)
    generator.manual_seed(derive(*_path(name, keys, per_rank), root=root, bits=bits))
    return _register(generator, "torch_generator", (name, *keys), root, per_rank)


_G = TypeVar("_G")

# Registered names of the generators made with per_rank=True: sync_state leaves them alone.
_rank_local: set[str] = set()


def _path(name: Key, keys: tuple[Key, ...], per_rank: bool) -> tuple[Key, ...]:
    """The key path of a stream: the rank is a key of its own, never added to a seed."""
    if not per_rank:
        return (name, *keys)
    from seedlock.distributed import rank

    return (name, *keys, "rank", rank())


def _register(
    generator: _G, factory: str, keys: tuple[Key, ...], root: Seed | None, per_rank: bool = False
) -> _G:
    from seedlock.state import register

    args = ", ".join(map(repr, keys)) + ("" if root is None else f", root={root!r}")
    if per_rank:
        args += ", per_rank=True"
    name = f"{factory}({args})"
    register(generator, name, replace=True)
    if per_rank:
        _rank_local.add(name)
    return generator


def rank_local_names() -> set[str]:
    """Registered names of the rank-local generators (made with ``per_rank=True``)."""
    from seedlock.state import registered

    return _rank_local & set(registered())


@cache
def _jax_key_words() -> int:
    import jax

    return int(jax.random.key_data(jax.random.key(0)).size)


def jax_key(name: Key, *keys: Key, root: Seed | None = None, per_rank: bool = False) -> Any:
    """A typed JAX PRNG key for the stream ``(name, *keys)``; ``per_rank=True``: rank-local.

    Built from key data rather than ``jax.random.key(int)``, which without ``jax_enable_x64``
    silently drops the high 32 bits of the seed. ``jax.random.key_data(key)`` gives the raw
    ``uint32`` form that old ``PRNGKey`` code expects.
    """
    import jax
    import jax.numpy as jnp

    words = _jax_key_words()
    value = derive(*_path(name, keys, per_rank), root=root, bits=32 * words)
    data = jnp.array([(value >> (32 * i)) & 0xFFFFFFFF for i in range(words)], dtype=jnp.uint32)
    return jax.random.wrap_key_data(data)
