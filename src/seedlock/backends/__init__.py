"""The backend registry: the built-in RNG families, then third-party ones from entry points.

Built-ins come first, in a fixed order (python, numpy, torch, jax, tensorflow, cupy), so that
reports and state files list them the same way everywhere. A third-party package adds a backend
with an entry point in the group ``seedlock.backends`` naming a class (or zero-argument factory)
whose instances follow :class:`~seedlock.backends.base.Backend`::

    [project.entry-points."seedlock.backends"]
    mylib = "mylib.seedlock_backend:MyLibBackend"
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, cast

from seedlock import _dists
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
from seedlock.derivation import Key, derive

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BaseBackend",
    "Change",
    "DeterminismOptions",
    "all_backends",
    "by_name",
    "live_globals",
    "owner_of",
    "seed_live_globals",
    "select",
    "unseedable",
]

ENTRY_POINT_GROUP = "seedlock.backends"

_registry: list[Backend] | None = None


def _entry_points() -> list[tuple[str, str, Callable[[], object]]]:
    """(name, "module:attr", loader) of each backend entry point."""
    if _dists.plain_path():
        return [
            (name, value, partial(_load_object, value))
            for name, value in _dists.entry_points(ENTRY_POINT_GROUP)
        ]
    from importlib.metadata import entry_points  # the slow path, for zipped sys.path entries

    return [(ep.name, ep.value, ep.load) for ep in entry_points(group=ENTRY_POINT_GROUP)]


def _load_object(value: str) -> object:
    module, _, attr = value.partition(":")
    obj: object = importlib.import_module(module.strip())
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def _load_entry_points() -> list[Backend]:
    found: list[Backend] = []
    for name, value, load in _entry_points():
        try:
            factory = load()
            backend = factory() if callable(factory) else factory
        except Exception as exc:
            # A broken plug-in must not stop the other libraries from being seeded, but it must
            # not pass silently either: this warning names it.
            warnings.warn(
                f"seedlock backend entry point {name!r} ({value}) failed to load: {exc!r}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        if not isinstance(backend, Backend):
            warnings.warn(
                f"seedlock backend entry point {name!r} ({value}) does not implement "
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


_by_name: dict[str, Backend] = {}


def by_name() -> dict[str, Backend]:
    """Every registered backend by name (the same dict every call: do not change it)."""
    if not _by_name:
        _by_name.update((b.name, b) for b in all_backends())
    return _by_name


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


def live_globals() -> list[Backend]:
    """The backends whose global generator exists in this process now: installed, imported,
    and with a global generator at all (JAX has none)."""
    return [b for b in all_backends() if b.seed_bits and b.available() and b.loaded()]


def seed_live_globals(*keys: Key) -> None:
    """Seed every live global with ``derive(*keys, <backend name>)`` in its own width."""
    for backend in live_globals():
        backend.seed(derive(*keys, backend.name, bits=backend.seed_bits))


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


def unseedable(obj: object) -> str | None:
    """Why ``obj``, a source of random numbers no backend owns, can be neither captured nor
    seeded (``random.SystemRandom``: OS entropy); ``None`` for anything else. Backends say so
    with an optional ``unseedable(obj) -> str | None``."""
    for backend in all_backends():
        explain = getattr(backend, "unseedable", None)
        if explain is not None:
            why: str | None = explain(obj)
            if why:
                return why
    return None


def for_peers(states: dict[str, Any]) -> dict[str, Any]:
    """Captured global states as another rank should receive them (optional member
    ``for_peers(state)``: torch adds the device each accelerator kind draws on)."""
    by = by_name()
    out = {}
    for name, state in states.items():
        prepare = getattr(by.get(name), "for_peers", None)
        out[name] = prepare(state) if prepare is not None else state
    return out


def from_peer(sent: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """The global states that give this rank what another rank sent (:func:`for_peers` on
    both sides); optional member ``from_peer(sent, local)``, else the sent state as is."""
    by = by_name()
    out = {}
    for name, state in sent.items():
        merge = getattr(by.get(name), "from_peer", None)
        out[name] = merge(state, local.get(name, {})) if merge is not None else state
    return out
