"""Post-import hooks: run a callback right after a module finishes importing.

``seed_everything(0); import torch`` must leave torch seeded, yet seedlock must never import
torch itself (seconds of start-up, and a GPU context nobody asked for). So for every installed
but not-yet-imported library, seedlock registers a callback here; a finder at the front of
``sys.meta_path`` notices the import, lets the real loader run, then calls the callback.

Once every pending callback has run, the finder removes itself.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType

TYPE_CHECKING = False  # typing itself costs milliseconds in every interpreter seedlock run starts
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from typing import Any

__all__ = ["SEED_KEY", "cancel", "cancel_everywhere", "on_import", "pending"]

#: The key of the seed-on-import callbacks: ``seed_everything``'s and those ``seedlock run``'s
#: bootstrap registers before seedlock's seeding code is loaded. One key, so a later
#: ``seed_everything`` replaces whatever seeding is still pending.
SEED_KEY = "seedlock.seed_everything"

_lock = threading.RLock()
_callbacks: dict[str, dict[str, Callable[[], None]]] = {}
_late: set[tuple[str, str]] = set()  # (module, key) of the callbacks that run after the others
_resolving = threading.local()


def on_import(module: str, key: str, callback: Callable[[], None], *, last: bool = False) -> None:
    """Call ``callback()`` once, right after ``module`` is imported.

    ``key`` names the registration: registering the same ``(module, key)`` again replaces the
    earlier callback (a second ``seed_everything`` supersedes the first). Callbacks run in the
    order they were registered, those registered with ``last=True`` after all others (what
    :func:`seedlock.fork` records must come after the library was seeded or restored).
    """
    with _lock:
        _callbacks.setdefault(module, {})[key] = callback
        if last:
            _late.add((module, key))
        else:
            _late.discard((module, key))
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


def cancel(module: str, key: str) -> None:
    """Forget a registration that has not fired yet (no error if there is none)."""
    with _lock:
        _callbacks.get(module, {}).pop(key, None)
        _late.discard((module, key))
        _prune()


def cancel_everywhere(key: str) -> None:
    """Forget the registrations under ``key`` for every module (cheap when there are none)."""
    if not _callbacks:
        return
    with _lock:
        for module in [m for m, cbs in _callbacks.items() if key in cbs]:
            _callbacks[module].pop(key, None)
            _late.discard((module, key))
        _prune()


def pending(module: str) -> list[str]:
    """Keys of the callbacks still waiting for ``module``."""
    with _lock:
        return list(_callbacks.get(module, {}))


def _prune() -> None:
    for name in [m for m, cbs in _callbacks.items() if not cbs]:
        del _callbacks[name]
    if not _callbacks and _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def _fire(module: str) -> None:
    with _lock:
        callbacks = _callbacks.pop(module, {})
        late = [key for key in callbacks if (module, key) in _late]
        _late.difference_update((module, key) for key in late)
        _prune()
    ordered = [cb for key, cb in callbacks.items() if key not in late]
    ordered += [callbacks[key] for key in late]
    for callback in ordered:
        try:
            callback()
        except Exception as exc:
            # Raising here would make the user's `import torch` fail after torch imported fine;
            # a loud warning is the honest outcome.
            warnings.warn(
                f"seedlock: the post-import hook for {module!r} failed: {exc!r}; "
                f"{module} is NOT seeded",
                RuntimeWarning,
                stacklevel=2,
            )


# Plain classes rather than importlib.abc subclasses: importlib.abc pulls in importlib.resources
# and tempfile at start-up (benchmarks/bench_seeding.py measures it), and the import system only
# needs the methods.
class _Loader:
    """Wraps the real loader; after ``exec_module`` it puts the real loader back and fires."""

    def __init__(self, loader: Any, spec: ModuleSpec) -> None:
        self._loader = loader
        self._spec = spec

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self._loader.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            self._spec.loader = self._loader
            if getattr(module, "__loader__", None) is self:
                # Into the namespace: a module may refuse setattr (torch._inductor.config does).
                vars(module)["__loader__"] = self._loader
        _fire(self._spec.name)


class _Finder:
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in _callbacks or getattr(_resolving, "active", False):
            return None
        _resolving.active = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            _resolving.active = False
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader, spec)  # type: ignore[assignment]  # duck-typed
        return spec


_FINDER = _Finder()
