"""The protocol every RNG family speaks, and the small records it returns.

A backend wraps one library's *global* random state. Everything above (``seed_everything``,
the determinism profile, capture / restore, the CLI, the pytest plugin) talks to backends only
through :class:`Backend`; none of it names a library.

Rules every backend keeps:

* ``available()`` and ``loaded()`` never import the library: importing torch or TensorFlow
  costs seconds and may initialise a GPU. Libraries that are installed but not yet imported are
  seeded by the post-import hook (:mod:`seedlock._hooks`) when the user imports them.
* ``seed(value)`` receives a value already in ``[0, 2**seed_bits)``: the width the library's
  global generator really keeps. Nothing is truncated behind the user's back. A library with no
  global generator says ``seed_bits = 0`` and is never seeded.
* ``capture()`` returns plain data (dicts with str keys, lists, str, int, float, bool, None and
  ``bytes`` for binary blobs), never an object that needs pickle; ``restore(capture())`` is
  exact. ``check_state`` finds every reason a state cannot be restored *before* anything is
  touched, so a bad checkpoint never leaves the generators half-restored.
* ``deterministic(on, options)`` flips only what can be flipped *now* without importing the
  library, and returns one :class:`Change` per switch so the caller can undo it. It is called
  again by the post-import hook once the library is imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from seedlock.backends.checks import blob_problem, fields_problem

__all__ = [
    "OPTIONAL_MEMBERS",
    "Backend",
    "BaseBackend",
    "Change",
    "DeterminismOptions",
    "SeedOnlyBackend",
    "blob_problem",
    "flip",
    "low_bits",
    "set_env",
]


class DeterminismOptions(NamedTuple):
    """What the determinism profile asks of every backend (see :func:`seedlock.deterministic`)."""

    warn_only: bool = False
    tf32: bool = False
    fallback_random: bool = False
    cublas_workspace_config: str = ":4096:8"


class Change(NamedTuple):
    """One switch a backend flipped: enough to report it and to put it back."""

    backend: str
    name: str
    old: Any
    new: Any
    setter: Callable[[Any], None]

    def undo(self) -> None:
        self.setter(self.old)

    def __str__(self) -> str:
        return f"{self.backend}: {self.name} {self.old!r} -> {self.new!r}"


def flip(
    backend: str, name: str, getter: Callable[[], Any], setter: Callable[[Any], None], value: Any
) -> Change | None:
    """Set a switch to ``value``; return the undoable change, or ``None`` if it already was."""
    old = getter()
    if old == value:
        return None
    setter(value)
    return Change(backend, name, old, value, setter)


def set_env(backend: str, name: str, value: str | None) -> Change | None:
    """Set (``value``) or remove (``None``) an environment variable, as an undoable change."""

    def setter(v: str | None) -> None:
        if v is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = v

    return flip(backend, f"${name}", lambda: os.environ.get(name), setter, value)


@runtime_checkable
class Backend(Protocol):
    """One RNG family. Third parties register theirs under the entry-point group
    ``seedlock.backends``; the entry point names a class or a zero-argument factory."""

    @property
    def name(self) -> str:
        """Short name used in reports and state files ("torch")."""
        ...

    @property
    def module(self) -> str:
        """Top-level module whose import makes the backend loaded ("torch")."""
        ...

    @property
    def seed_bits(self) -> int:
        """Width of the seed the library's global generator actually keeps; 0 when the library
        has no global generator (JAX), so there is nothing to seed."""
        ...

    def available(self) -> bool:
        """Is the library installed? Must not import it."""
        ...

    def loaded(self) -> bool:
        """Has the user (or anything) imported it already?"""
        ...

    def seed(self, value: int) -> str:
        """Seed the global generator(s) with ``value``; return what was seeded, in words."""
        ...

    def capture(self) -> dict[str, Any]:
        """The global generators' whole state as plain data."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Put back a state returned by :meth:`capture`."""
        ...

    def deterministic(self, on: bool, options: DeterminismOptions) -> list[Change]:
        """Flip the library's determinism switches that can be flipped now; return the changes."""
        ...


@runtime_checkable
class GeneratorOwner(Protocol):
    """A backend that also captures generator *objects* of its library (optional members)."""

    name: str

    def owns(self, obj: object) -> bool:
        """Is ``obj`` a generator object of this library?"""
        ...

    def capture_generator(self, obj: Any) -> dict[str, Any]:
        """The generator object's whole state as plain data."""
        ...

    def check_generator(self, obj: Any, state: dict[str, Any]) -> list[str]:
        """Why :meth:`restore_generator` could not apply ``state`` to ``obj``."""
        ...

    def restore_generator(self, obj: Any, state: dict[str, Any]) -> None:
        """Put back a state returned by :meth:`capture_generator`."""
        ...

    def seed_generator(self, obj: Any, material: int) -> None:
        """Reseed ``obj`` in place from ``material``, 256 derived bits (the full digest of a
        :func:`seedlock.derive` call): the backend keeps the low bits its algorithm uses, which
        *is* ``derive(..., bits=n)``, not a truncation of a user seed."""
        ...


#: Optional members a backend may add (``BaseBackend`` has defaults for all of them):
#:
#: ``check_state(state, devices) -> list[str]``
#:     why ``restore`` could not apply ``state`` here (empty when it can), judged from the
#:     values themselves (:mod:`seedlock.backends.checks`), without importing the library: it is
#:     called for a library not imported yet too. ``devices`` is the device-count policy,
#:     ``"exact"`` or ``"common"``. Without it a state is trusted as is (and a failing restore is
#:     still undone, see ``restore_last``).
#: ``restore_last: bool``
#:     ``restore`` of a checked state either succeeds or raises with nothing changed, and its
#:     snapshot is costly: seedlock restores this backend after every other generator and
#:     without a snapshot (NumPy's legacy global). Others are snapshotted before they are
#:     restored, so that a failure puts back everything restored before it.
#: ``owns(obj) -> bool``, ``capture_generator(obj)``, ``check_generator(obj, state)``,
#: ``restore_generator(obj, state)``, ``seed_generator(obj, material)``
#:     for generator *objects* of the library (``numpy.random.Generator``, ``random.Random``,
#:     ``torch.Generator``) registered with ``seedlock.register``.
#: ``snapshot_generator(obj) -> Callable[[], object]``
#:     a cheap in-process snapshot of a generator object: the returned callable puts it back
#:     (what a restore keeps in case a later generator is refused). Default: capture_generator
#:     and restore_generator.
#: ``unseedable(obj) -> str | None``
#:     why ``obj``, a random source of the library that ``owns`` refuses, can be neither seeded
#:     nor captured (``random.SystemRandom``): named when it is registered or found in a dataset.
#: ``seeder() -> Callable[[int], object]``
#:     the cheapest callable that seeds the library's host (CPU) global generator, no report
#:     string: what per-sample seeding calls for every sample. Device generators are left
#:     alone. Default: ``seed``.
#: ``snapshot() -> (save, load)``
#:     two callables that save that generator's state in the library's own in-process form
#:     and put it back: how the main process keeps its streams while it fetches samples.
#:     Default: ``(capture, restore)``.
#: ``for_peers(state) -> dict``, ``from_peer(sent, local) -> dict``
#:     how :func:`seedlock.distributed.sync_state` sends a captured state to other ranks and
#:     turns what it received into the state to restore there (torch: the sender's current
#:     device's stream goes to the receiver's current device). Default: the state as is.
OPTIONAL_MEMBERS = (
    "check_state",
    "restore_last",
    "seeder",
    "snapshot",
    "owns",
    "capture_generator",
    "check_generator",
    "restore_generator",
    "seed_generator",
    "snapshot_generator",
    "unseedable",
    "for_peers",
    "from_peer",
)


class BaseBackend:
    """Convenience base: availability and load checks from :attr:`module`."""

    name: ClassVar[str]
    module: ClassVar[str]
    seed_bits: ClassVar[int] = 32
    restore_last: ClassVar[bool] = False

    _installed: bool | None = None

    def available(self) -> bool:
        if self.module in sys.modules:
            # sys.modules[name] = None is Python's way to block an import.
            return sys.modules[self.module] is not None
        if self._installed is None:
            # A path scan per library on every seed_everything; what is installed does not
            # change while a program runs, so the answer is kept.
            try:
                self._installed = importlib.util.find_spec(self.module) is not None
            except (ImportError, ValueError):
                self._installed = False
        return self._installed

    def loaded(self) -> bool:
        return sys.modules.get(self.module) is not None

    def _require_loaded(self) -> Any:
        """The library's module; only called once :meth:`loaded` is true."""
        return sys.modules[self.module]

    def deterministic(self, on: bool, options: DeterminismOptions) -> list[Change]:
        return []

    def seeder(self) -> Callable[[int], object]:
        backend: Backend = self  # type: ignore[assignment]  # a subclass completes the protocol
        return backend.seed

    def snapshot(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        backend: Backend = self  # type: ignore[assignment]
        return backend.capture, backend.restore

    def check_state(self, state: dict[str, Any], devices: str) -> list[str]:
        return []

    def owns(self, obj: object) -> bool:
        return False

    def capture_generator(self, obj: Any) -> dict[str, Any]:
        raise TypeError(f"{self.name} backend holds no generator objects")

    def check_generator(self, obj: Any, state: dict[str, Any]) -> list[str]:
        return []

    def restore_generator(self, obj: Any, state: dict[str, Any]) -> None:
        raise TypeError(f"{self.name} backend holds no generator objects")

    def seed_generator(self, obj: Any, material: int) -> None:
        raise TypeError(f"{self.name} backend holds no generator objects")

    def __repr__(self) -> str:
        return f"<seedlock backend {self.name!r}>"


def low_bits(material: int, bits: int) -> int:
    """The low ``bits`` bits of derived material (see ``GeneratorOwner.seed_generator``)."""
    return material & ((1 << bits) - 1)


class SeedOnlyBackend(BaseBackend):
    """Base of a library whose global seed can be set but whose generator state cannot be read
    back: nothing is captured, so the only state is ``{}`` and restoring it does nothing."""

    def capture(self) -> dict[str, Any]:
        return {}

    def check_state(self, state: dict[str, Any], devices: str) -> list[str]:
        return fields_problem(state, ())

    def restore(self, state: dict[str, Any]) -> None:
        return None
