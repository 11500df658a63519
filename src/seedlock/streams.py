"""Named streams: generators seeded by *name* from the root seed, one factory per family.

The guide: ``docs/seeding.md`` (named streams) and ``docs/distributed.md`` (rank-local streams).

``seedlock.numpy_rng("augment")`` is always the same stream for the same root, however many
random calls other components add or remove: streams are addressed by key path (see
:mod:`seedlock.derivation`), never by call order. Each call returns a *new* generator positioned at
the start of its stream (like ``jax.random.key``): create it once, where the component is set up.

Every generator a factory makes is registered (:func:`seedlock.register`) under its call, e.g.
``"numpy_rng('augment', 3)"``, so :func:`seedlock.capture` and checkpoints include it; making the
same stream again replaces the registration. (A JAX key is a value, not a generator: it is not
registered.)

Keys after the name extend the path: ``numpy_rng("augment", worker_id)`` is a stream of its own.

Under ``torchrun`` a stream is *shared* (the default: the same numbers on every rank, e.g. model
initialisation or a shuffle order) or, with ``per_rank=True``, *rank-local*: the rank is appended
to the key path as ``(*keys, "rank", rank)`` (never added to a seed), so dropout, augmentation or
noise differ between ranks yet replay run after run. The rank comes from
:func:`seedlock.distributed.rank`. A rank-local generator is registered as rank-local under e.g.
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
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from seedlock import _ranks, _registry
from seedlock._docs import fill
from seedlock.derivation import Key, Seed, derive

__all__ = ["jax_key", "numpy_rng", "random_rng", "torch_generator"]

_G = TypeVar("_G")
_F = TypeVar("_F", bound=Callable[..., Any])

# The parameters and errors every factory shares, written once.
_PATH = """name, *keys
        The stream's key path: ``name`` then more keys, each an int, str or bytes;
        ``("augment", worker_id)`` is a stream of its own beside ``("augment",)``."""
_SCOPE = """root
        The root seed; default ``None``: the process's root seed (:func:`seedlock.get_root`).
    per_rank
        ``True`` makes the stream rank-local: the rank joins the key path (see the module
        docstring). Default ``False``: shared, the same numbers on every rank."""
_RAISES = """Raises
    ------
    TypeError
        A key or ``root`` is not an int, str or bytes.
    LookupError
        ``root`` is ``None`` and the process has no root seed.
    ValueError
        With ``per_rank=True``, ``RANK`` / ``WORLD_SIZE`` are not valid."""


def _factory(returns: str, what: str, device: str = "") -> Callable[[_F], _F]:
    """Put a factory's Parameters, Returns and Raises sections where its docstring says
    ``{sections}``: the shared ones, its return value, and ``device`` when it takes one."""
    device_entry = f"\n    device\n        {device}" if device else ""
    return fill(
        sections=f"Parameters\n    ----------\n    {_PATH}{device_entry}\n    {_SCOPE}\n\n"
        f"    Returns\n    -------\n    {returns}\n        {what}\n\n    {_RAISES}"
    )


@_factory(
    "numpy.random.Generator",
    "A new generator at the start of the stream, seeded with 128 bits, and registered.",
)
def numpy_rng(name: Key, *keys: Key, root: Seed | None = None, per_rank: bool = False) -> Any:
    """A ``numpy.random.Generator`` (PCG64) for the stream ``(name, *keys)``.

    {sections}

    Examples
    --------
    >>> rng = numpy_rng("augment", root=0)
    >>> int(rng.integers(0, 100))
    86
    >>> noise = numpy_rng("augment", per_rank=True)   # another stream on every rank
    """
    import numpy as np  # the framework: imported by the call that needs it

    path = _path(name, keys, per_rank)
    rng = np.random.default_rng(derive(*path, root=root, bits=128))
    return _register(rng, "numpy_rng", (name, *keys), root, per_rank)


@_factory(
    "random.Random",
    "A new generator at the start of the stream, seeded with 128 bits, and registered.",
)
def random_rng(
    name: Key, *keys: Key, root: Seed | None = None, per_rank: bool = False
) -> random.Random:
    """A ``random.Random`` for the stream ``(name, *keys)``.

    {sections}

    Examples
    --------
    >>> random_rng("augment", root=0).random()
    0.780678876952921
    """
    rng = random.Random(derive(*_path(name, keys, per_rank), root=root, bits=128))
    return _register(rng, "random_rng", (name, *keys), root, per_rank)


@_factory(
    "torch.Generator",
    """A new generator at the start of the stream, and registered: seeded with 32 bits on the
        CPU (MT19937 keeps 32), 64 on an accelerator (Philox keeps 64).""",
    device="""Where the generator lives: anything ``torch.device`` accepts; default ``"cpu"``.""",
)
def torch_generator(
    name: Key, *keys: Key, device: Any = "cpu", root: Seed | None = None, per_rank: bool = False
) -> Any:
    """A ``torch.Generator`` on ``device`` for the stream ``(name, *keys)``.

    Creating a generator on an accelerator initialises that device, as torch always does.

    {sections}

    Examples
    --------
    >>> g = torch_generator("sampler", root=0)
    >>> g.initial_seed()
    899877552
    """
    import torch  # the framework: imported by the call that needs it

    dev = torch.device(device)
    bits = 32 if dev.type == "cpu" else 64
    generator = torch.Generator(device=dev)
    generator.manual_seed(derive(*_path(name, keys, per_rank), root=root, bits=bits))
    return _register(generator, "torch_generator", (name, *keys), root, per_rank)


def _path(name: Key, keys: tuple[Key, ...], per_rank: bool) -> tuple[Key, ...]:
    """The key path of a stream: the rank is a key of its own, never added to a seed."""
    if not per_rank:
        return (name, *keys)
    return (name, *keys, "rank", _ranks.rank())


def _register(
    generator: _G, factory: str, keys: tuple[Key, ...], root: Seed | None, per_rank: bool = False
) -> _G:
    args = ", ".join(map(repr, keys)) + ("" if root is None else f", root={root!r}")
    if per_rank:
        args += ", per_rank=True"
    name = f"{factory}({args})"
    _registry.register(generator, name, replace=True, per_rank=per_rank)
    return generator


@cache
def _jax_key_words() -> int:
    import jax  # the framework: imported by the call that needs it

    return int(jax.random.key_data(jax.random.key(0)).size)


@_factory(
    "jax.Array",
    """A typed key of JAX's default PRNG implementation, 32 bits of seed per word of key data
        (not registered: a key is a value). ``jax.random.key_data(key)`` gives the raw
        ``uint32`` form that old ``PRNGKey`` code expects.""",
)
def jax_key(name: Key, *keys: Key, root: Seed | None = None, per_rank: bool = False) -> Any:
    """A typed JAX PRNG key for the stream ``(name, *keys)``.

    Built from key data rather than ``jax.random.key(int)``, which without ``jax_enable_x64``
    silently drops the high 32 bits of the seed.

    {sections}
    """
    import jax  # the framework: imported by the call that needs it
    import jax.numpy as jnp  # the framework: imported by the call that needs it

    words = _jax_key_words()
    value = derive(*_path(name, keys, per_rank), root=root, bits=32 * words)
    data = jnp.array([(value >> (32 * i)) & 0xFFFFFFFF for i in range(words)], dtype=jnp.uint32)
    return jax.random.wrap_key_data(data)
