"""The backend registry: the built-in RNG families, then third-party ones from entry points.

Built-ins come first, in a fixed order (python, numpy, torch, jax, tensorflow, cupy), so that
reports and state files list them the same way everywhere. A third-party package adds a backend
with an entry point in the group ``seedlock.backends`` naming a class (or zero-argument factory)
whose instances follow :class:`~seedlock.backends.base.Backend`::

    [project.entry-points."seedlock.backends"]
    mylib = "mylib.seedlock_backend:MyLibBackend"
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import cast

from seedlock.backends.base import (
    Backend,
    BaseBackend,
    Change,
    DeterminismOptions,
    GeneratorOwner,
)
from seedlock.backends.cupy import CupyBackend
from seedlock.backends.jax import JaxBackend
from seedlock.backends.numpy import NumpyBackend
from seedlock.backends.python import PythonBackend
from seedlock.backends.tensorflow import TensorflowBackend
from seedlock.backends.torch import TorchBackend

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BaseBackend",
    "Change",
    "DeterminismOptions",
    "all_backends",
    "owner_of",
    "select",
]

ENTRY_POINT_GROUP = "seedlock.backends"

_registry: list[Backend] | None = None


def _load_entry_points() -> list[Backend]:
    # importlib.metadata costs ~13 ms (email, socket, zipfile): imported only here, once.
    from importlib.metadata import entry_points

    found: list[Backend] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            backend = ep.load()()
        except Exception as exc:
            # A broken plug-in must not stop the other libraries from being seeded, but it must
            # not pass silently either: the report and this warning name it.
            warnings.warn(
                f"seedlock backend entry point {ep.name!r} ({ep.value}) failed to load: {exc!r}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        if not isinstance(backend, Backend):
            warnings.warn(
                f"seedlock backend entry point {ep.name!r} ({ep.value}) does not implement "
                "the Backend protocol (name, module, seed_bits, available, loaded, seed, "
                "capture, restore, deterministic); ignored",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        found.append(backend)
    return found


def all_backends() -> list[Backend]:
    """Every registered backend, built-ins first. Entry points are read once, on first use."""
    global _registry
    if _registry is None:
        builtins: list[Backend] = [
            PythonBackend(),
            NumpyBackend(),
            TorchBackend(),
            JaxBackend(),
            TensorflowBackend(),
            CupyBackend(),
        ]
        names = {b.name for b in builtins}
        _registry = builtins + [b for b in _load_entry_points() if b.name not in names]
    return list(_registry)


def select(names: Iterable[str] | None) -> list[Backend]:
    """The backends named in ``names`` (all when ``None``), in registry order."""
    backends = all_backends()
    if names is None:
        return backends
    if isinstance(names, str):
        names = [names]
    wanted = list(names)
    known = {b.name for b in backends}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(
            f"unknown backend(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
        )
    return [b for b in backends if b.name in wanted]


_owners: dict[type, GeneratorOwner] = {}


def owner_of(obj: object) -> GeneratorOwner | None:
    """The backend whose generator objects include ``obj`` (e.g. a ``torch.Generator``), if any.

    Cached per type: this runs for every registered generator on every capture and restore,
    and for every dataset-held generator on every sample.
    """
    owner = _owners.get(type(obj))
    if owner is not None:
        return owner
    for backend in all_backends():
        owns = getattr(backend, "owns", None)
        if owns is not None and owns(obj):
            _owners[type(obj)] = cast(GeneratorOwner, backend)
            return _owners[type(obj)]
    return None
