"""The random state of a process as data: capture it, restore it exactly or not at all.

:func:`capture` takes the whole random state of the process as plain data (an
:class:`RNGState`): each loaded backend's global generators (Python ``random``, NumPy's legacy
global, torch CPU and every started accelerator, ...) plus every registered generator (the
named streams, and :func:`seedlock.register`). :func:`restore` puts it back exactly.

Guarantee: restoring validates everything first — backends present, device counts, generator
names and kinds, and every value of every field, for libraries not imported yet too — and
raises one :class:`~seedlock.StateMismatchError` listing every problem *before* any generator
is touched. Should a library still refuse a state, the generators restored before it are put
back and a ``StateMismatchError`` says so: a state is restored completely or not at all.

The same state as a checkpoint-ready dict is :mod:`seedlock.stateful`'s; as a file,
:mod:`seedlock.store`'s. The guide: ``docs/state.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from seedlock import _hooks, _registry
from seedlock import backends as _backends
from seedlock.backends.base import Backend, GeneratorOwner
from seedlock.backends.checks import fields_problem, type_name
from seedlock.errors import CorruptStateError, StateMismatchError, check_version

__all__ = [
    "MAX_DEPTH",
    "STATE_VERSION",
    "DevicePolicy",
    "RNGState",
    "apply_checked",
    "capture",
    "restore",
]

#: Version of the plain-data layout of an :class:`RNGState` (and of the files that hold it).
STATE_VERSION = 1
_KIND = "seedlock.rng_state"

DevicePolicy = Literal["exact", "common"]
_POLICIES = ("exact", "common")
_FIELDS = frozenset(("kind", "version", "backends", "generators"))
_ENTRY_FIELDS = frozenset(("backend", "state"))
_RESTORE_KEY = "seedlock.restore"
#: No state seedlock writes is nested deeper than this (generators/<name>/state/state/key/data
#: is 6); anything deeper is refused before it is walked.
MAX_DEPTH = 16


@dataclass(frozen=True)
class RNGState:
    """The random state of a process, as plain data (no pickle needed anywhere).

    Attributes
    ----------
    backends
        Backend name -> that backend's ``capture()``.
    generators
        Registered name -> ``{"backend": <owner>, "state": <capture_generator()>}``.
    version
        The layout version; default :data:`STATE_VERSION`.
    """

    backends: dict[str, dict[str, Any]]
    generators: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = STATE_VERSION

    def to_plain(self) -> dict[str, Any]:
        """The self-describing plain form.

        Returns
        -------
        dict
            ``kind``, ``version``, ``backends``, ``generators``: what :func:`state_dict` and the
            state file hold.
        """
        return {
            "kind": _KIND,
            "version": self.version,
            "backends": self.backends,
            "generators": self.generators,
        }

    @classmethod
    def from_plain(cls, plain: object) -> RNGState:
        """Read :meth:`to_plain`'s output back.

        Parameters
        ----------
        plain
            What :meth:`to_plain` returned. Its structure is checked here; its values by
            :func:`restore`.

        Returns
        -------
        RNGState

        Raises
        ------
        CorruptStateError
            ``plain`` is not such a dict.
        StateVersionError
            A newer seedlock wrote it.
        """
        if not isinstance(plain, dict) or plain.get("kind") != _KIND:
            raise CorruptStateError(
                f"not a seedlock RNG state: expected a dict with kind={_KIND!r}, "
                f"got {_describe(plain)}"
            )
        version = check_version(plain.get("version"), STATE_VERSION, "RNG state")
        problems = fields_problem(plain, _FIELDS, "the state")
        if problems:
            raise CorruptStateError("; ".join(problems))
        state = cls(plain["backends"], plain["generators"], version)
        _check_structure(state)
        return state


def _check_structure(state: RNGState) -> None:
    """``CorruptStateError`` unless backends and generators map str names to dicts, and each
    generator entry is ``{"backend": str, "state": dict}``."""
    backends, generators = state.backends, state.generators
    if not _is_str_dict_of_dicts(backends) or not _is_str_dict_of_dicts(generators):
        raise CorruptStateError("'backends' and 'generators' must map names to dicts")
    for name, entry in generators.items():
        if (
            entry.keys() == _ENTRY_FIELDS
            and type(entry["backend"]) is str
            and type(entry["state"]) is dict
        ):
            continue
        label = f"generator {name[:60]!r}"
        problems = fields_problem(entry, _ENTRY_FIELDS, label) or [
            f"{label}: 'backend' must be a str and 'state' a dict"
        ]
        raise CorruptStateError("; ".join(problems))


def _is_str_dict_of_dicts(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, dict) for k, v in value.items()
    )


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return f"dict with keys {sorted(str(k)[:40] for k in value)[:6]}"
    return type_name(value)


# -- capture / restore ----------------------------------------------------------------------


def capture() -> RNGState:
    """The whole random state of this process: every loaded backend and registered generator.

    Backends whose library is not imported are left out: nothing has drawn from them. (On
    restore, a backend in the state whose library is not imported yet is restored when it is.)

    Returns
    -------
    RNGState
        Plain data: put it back with :func:`restore`, save it with :func:`seedlock.save`.

    Examples
    --------
    >>> state = seedlock.capture()
    >>> a = random.random()
    >>> seedlock.restore(state)
    >>> random.random() == a
    True
    """
    captured = {b.name: b.capture() for b in _backends.live_globals()}
    generators = {}
    for name, (obj, owner, _) in _registry.entries().items():
        generators[name] = {"backend": owner.name, "state": owner.capture_generator(obj)}
    return RNGState(captured, generators)


def _problems(state: RNGState, devices: DevicePolicy, strict_names: bool) -> list[str]:
    problems: list[str] = []
    known = _backends.by_name()
    for name, saved in state.backends.items():
        backend = known.get(name)
        if backend is None:
            problems.append(f"backend {name[:60]!r}: not registered in this process")
        elif not backend.available():
            problems.append(f"backend {name!r}: {backend.module} is not installed here")
        else:
            # Loaded or not: a library imported later gets this state then, so it is checked now.
            check = getattr(backend, "check_state", None)
            found = [] if check is None else _checked(check, saved, devices)
            if found:
                problems += [f"backend {name!r}: {p}" for p in found]
    for name, entry in state.generators.items():
        held = _registry.lookup(name)
        if held is None:
            if strict_names:
                problems.append(
                    f"generator {name[:60]!r}: in the state but not registered here "
                    f"(seedlock.register(obj, {name[:60]!r}))"
                )
            continue
        obj, owner, _ = held
        if entry["backend"] != owner.name:
            problems.append(
                f"generator {name!r}: is a {owner.name} generator, the state is for "
                f"{entry['backend'][:60]!r}"
            )
            continue
        problems += [
            f"generator {name!r}: {p}" for p in _checked(owner.check_generator, obj, entry["state"])
        ]
    if strict_names:
        problems += [
            f"generator {name!r}: registered here but absent from the state"
            for name in _registry.registered()
            if name not in state.generators
        ]
    return problems


def _checked(check: Callable[..., list[str]], *args: Any) -> list[str]:
    """A check's problems; a check that raises (a third-party backend's, on input it never
    expected) reports that instead of escaping as something else than a StateError."""
    try:
        found: list[str] = check(*args)
        return found
    except Exception as exc:
        return [f"the state could not be checked ({type(exc).__name__}: {exc})"]


def apply_checked(state: RNGState) -> None:
    """Apply a checked state: registered generators, then the loaded backends' globals; the
    libraries not imported yet get theirs when imported.

    Each generator is snapshotted before it is restored, so that if a library still refuses
    its state (the checks are meant to make that impossible), everything restored before it is
    put back and a ``StateMismatchError`` is raised. A backend with ``restore_last`` (NumPy's
    legacy global, whose restore is atomic and whose snapshot is the costliest) goes last
    and, being last, needs no snapshot.
    """
    known = _backends.by_name()
    loaded: list[tuple[Backend, dict[str, Any]]] = []
    later: list[tuple[Backend, dict[str, Any]]] = []
    for name, saved in state.backends.items():
        backend = known.get(name)
        if backend is not None:
            (loaded if backend.loaded() else later).append((backend, saved))
    loaded.sort(key=_restored_last)
    undo: list[Callable[[], object]] = []
    what = ("", "")  # (generator | backend, name): what is being restored, for the message
    try:
        for name, entry in state.generators.items():
            held = _registry.lookup(name)
            if held is not None:
                what, (obj, owner, _) = ("generator", name), held
                undo.append(_generator_snapshot(owner, obj))
                owner.restore_generator(obj, entry["state"])
        for backend, saved in loaded:
            what = ("backend", backend.name)
            if not (backend is loaded[-1][0] and _restored_last((backend, saved))):
                save, load = _snapshot(backend)
                undo.append(partial(load, save()))
            backend.restore(saved)
    except Exception as exc:
        refused = (
            f"{what[0]} {what[1]!r}: the library refused the state ({type(exc).__name__}: {exc})"
        )
        failed = _undo(undo)
        raise StateMismatchError([refused, *failed], unchanged=not failed) from exc
    for backend, saved in later:
        _hooks.on_import(backend.module, _RESTORE_KEY, partial(backend.restore, saved))


def _restored_last(item: tuple[Backend, Any]) -> bool:
    return bool(getattr(item[0], "restore_last", False))


def _undo(undo: list[Callable[[], object]]) -> list[str]:
    """Put back the snapshots, newest first; what could not be put back, in words."""
    failed = []
    for put_back in reversed(undo):
        try:
            put_back()
        except Exception as exc:  # pragma: no cover - a library refusing its own state
            failed.append(f"could not put back a generator: {type(exc).__name__}: {exc}")
    return failed


def _generator_snapshot(owner: GeneratorOwner, obj: Any) -> Callable[[], object]:
    """What puts ``obj`` back as it is now: the owner's ``snapshot_generator`` when it has one."""
    snapshot = getattr(owner, "snapshot_generator", None)
    if snapshot is not None:
        put_back: Callable[[], object] = snapshot(obj)
        return put_back
    return partial(owner.restore_generator, obj, owner.capture_generator(obj))


def _snapshot(backend: Backend) -> tuple[Callable[[], Any], Callable[[Any], object]]:
    """The backend's cheapest (save, load) pair: its optional ``snapshot()``, else capture and
    restore."""
    snapshot = getattr(backend, "snapshot", None)
    if snapshot is None:
        return backend.capture, backend.restore
    pair: tuple[Callable[[], Any], Callable[[Any], object]] = snapshot()
    return pair


def restore(state: RNGState, *, devices: DevicePolicy = "exact") -> None:
    """Put back a state returned by :func:`capture`, exactly, or change nothing.

    Parameters
    ----------
    state
        What :func:`capture` (or :func:`seedlock.store.read`) returned.
    devices
        ``"exact"`` (default) requires the same number of devices of each accelerator kind as at
        capture time. ``"common"`` restores the devices both sides have (the first
        ``min(saved, here)`` by index), warns about the rest (``RuntimeWarning``), and leaves
        them as they are.

    Raises
    ------
    StateMismatchError
        Every problem (a backend missing here, another device count, a registered generator
        missing on either side or of another kind, a malformed value of any field, for libraries
        not imported yet too), collected first and raised together; no generator is touched
        unless all is well.
    CorruptStateError
        ``state.backends`` / ``state.generators`` do not have the structure of a capture.
    TypeError
        ``state`` is not an :class:`RNGState`.
    ValueError
        ``devices`` is another value.
    """
    if not isinstance(state, RNGState):
        raise TypeError(
            f"state must be an RNGState (from seedlock.capture()), got {_describe(state)}"
        )
    if devices not in _POLICIES:
        raise ValueError(f"devices must be one of {_POLICIES}, got {devices!r}")
    _check_structure(state)
    problems = _problems(state, devices, strict_names=True)
    if problems:
        raise StateMismatchError(problems)
    if devices == "common":
        skipped = [p for p in _problems(state, "exact", strict_names=True) if "device" in p]
        if skipped:
            warnings.warn(
                "restored with devices='common'; " + "; ".join(skipped),
                RuntimeWarning,
                stacklevel=2,
            )
    apply_checked(state)
