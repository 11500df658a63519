"""Named streams: generators seeded by *name* from the root seed, one factory per family.

``seedlock.numpy_rng("augment")`` is always the same stream for the same root, however many
random calls other components add or remove: streams are addressed by key path (see
:mod:`seedlock.derivation`), never by call order. Each call returns a *new* generator positioned at
the start of its stream (like ``jax.random.key``): create it once, where the component is set up.

Every generator a factory makes is registered (:func:`seedlock.register`) under its call, e.g.
``"numpy_rng('augment', 3)"``, so :func:`seedlock.capture` and checkpoints include it; making the
same stream again replaces the registration.

Keys after the name extend the path: ``numpy_rng("augment", worker_id)`` is a stream of its own.

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

__all__ = ["jax_key", "numpy_rng", "random_rng", "torch_generator"]


def numpy_rng(name: Key, *keys: Key, root: Seed | None = None) -> Any:
    """A ``numpy.random.Generator`` (PCG64) for the stream ``(name, *keys)``.

    >>> rng = numpy_rng("augment", root=0)
    >>> int(rng.integers(0, 100))
    86
    """
    import numpy as np

    rng = np.random.default_rng(derive(name, *keys, root=root, bits=128))
    return _register(rng, "numpy_rng", (name, *keys), root)


def random_rng(name: Key, *keys: Key, root: Seed | None = None) -> random.Random:
    """A ``random.Random`` for the stream ``(name, *keys)``.

    >>> random_rng("augment", root=0).random()
    0.780678876952921
    """
    rng = random.Random(derive(name, *keys, root=root, bits=128))
    return _register(rng, "random_rng", (name, *keys), root)


def torch_generator(name: Key, *keys: Key, device: Any = "cpu", root: Seed | None = None) -> Any:
    """A ``torch.Generator`` on ``device`` for the stream ``(name, *keys)``.

    Creating a generator on an accelerator initialises that device, as torch always does.

    >>> g = torch_generator("sampler", root=0)
    >>> g.initial_seed()
    899877552
    """
    import torch

    dev = torch.device(device)
    bits = 32 if dev.type == "cpu" else 64
    generator = torch.Generator(device=dev)
    generator.manual_seed(derive(name, *keys, root=root, bits=bits))
    return _register(generator, "torch_generator", (name, *keys), root)


_G = TypeVar("_G")


def _register(generator: _G, factory: str, keys: tuple[Key, ...], root: Seed | None) -> _G:
    from seedlock.state import register

    args = ", ".join(map(repr, keys)) + ("" if root is None else f", root={root!r}")
    register(generator, f"{factory}({args})", replace=True)
    return generator


@cache
def _jax_key_words() -> int:
    import jax

    return int(jax.random.key_data(jax.random.key(0)).size)


def jax_key(name: Key, *keys: Key, root: Seed | None = None) -> Any:
    """A typed JAX PRNG key for the stream ``(name, *keys)``.

    Built from key data rather than ``jax.random.key(int)``, which without ``jax_enable_x64``
    silently drops the high 32 bits of the seed. ``jax.random.key_data(key)`` gives the raw
    ``uint32`` form that old ``PRNGKey`` code expects.
    """
    import jax
    import jax.numpy as jnp

    words = _jax_key_words()
    value = derive(name, *keys, root=root, bits=32 * words)
    data = jnp.array([(value >> (32 * i)) & 0xFFFFFFFF for i in range(words)], dtype=jnp.uint32)
    return jax.random.wrap_key_data(data)
