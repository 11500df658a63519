"""The determinism profile: every switch that trades speed for identical results, reversibly.

Guarantee: every change is recorded and undone exactly, in any order of profiles. The guide:
``docs/determinism.md``.

``seedlock.deterministic()`` asks each backend to flip its switches (torch: deterministic
algorithms, cuDNN deterministic / no benchmark, oneDNN deterministic, TF32 off,
``CUBLAS_WORKSPACE_CONFIG``, optionally Inductor's ``fallback_random``; TensorFlow: op
determinism; JAX: ``--xla_gpu_deterministic_ops``) and records each change, so that leaving the
``with`` block, or calling :meth:`DeterminismProfile.restore`, puts back exactly what was there.

For a library not imported yet, the switches that live in the environment are set now (that is
the only time they work: cuBLAS and XLA read them once, at start-up) and the others when the
library is imported.

What no in-process switch can do: fix ``PYTHONHASHSEED`` (see :func:`seedlock.ensure_hash_seed`)
or make CPU float reductions independent of the thread count (pin ``torch.set_num_threads``).
:func:`explain` looks an op up in seedlock's table of known nondeterministic ops.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seedlock.optable import Explanation, explain

from seedlock import _hooks
from seedlock import backends as _backends
from seedlock.backends.base import Backend, Change, DeterminismOptions

__all__ = ["DeterminismProfile", "Explanation", "active_profiles", "deterministic", "explain"]

# Every profile in effect, oldest first, switched on or off: a stack. Restoring a profile that
# is not on top takes the ones above it off, restores it, and applies them again, so that the
# switches always end up as if the restored profile had never been applied.
_stack: list[DeterminismProfile] = []


class DeterminismProfile:
    """The switches one :func:`deterministic` call flipped; a context manager that undoes them.

    Made by :func:`deterministic`; ``print(profile)`` lists the changes, one per line.

    Parameters
    ----------
    enable
        Switch determinism on (``True``) or off, as :func:`deterministic`'s ``enable``.
    options
        :func:`deterministic`'s keyword options (``warn_only``, ``tf32``, ``fallback_random``,
        ``cublas_workspace_config``).
    backends
        The backends the profile applies to.

    Attributes
    ----------
    enable, options
        As given.
    changes
        Every switch and environment variable changed, in order: what :meth:`restore` undoes.
    active
        In effect (not restored yet).
    suspended
        Switched off for now by a ``deterministic(False)`` profile above it.
    """

    def __init__(self, enable: bool, options: DeterminismOptions, backends: list[Backend]) -> None:
        self.enable = enable
        self.options = options
        self.changes: list[Change] = []
        self._backends = backends
        self._suspended: list[DeterminismProfile] = []
        self._key = f"seedlock.deterministic.{id(self)}"
        #: In effect (not restored yet).
        self.active = False
        #: Switched off for now by a ``deterministic(False)`` profile above it.
        self.suspended = False

    # -- applying -------------------------------------------------------------------------
    def _apply(self, backend: Backend) -> None:
        self.changes += backend.deterministic(self.enable, self.options)

    def _arm(self, *, apply_now: bool = True) -> None:
        """Apply to every available backend now; to the unimported ones again on import."""
        for backend in self._backends:
            if not backend.available():
                continue
            if apply_now:
                self._apply(backend)
            if not backend.loaded():
                _hooks.on_import(backend.module, self._key, partial(self._apply, backend))

    def _disarm(self) -> None:
        for backend in self._backends:
            _hooks.cancel(backend.module, self._key)

    def _push(self) -> None:
        """Apply this profile on top of the stack. ``enable=False`` first undoes every profile
        in effect below it, recording the undo as its own changes."""
        if not self.enable:
            for profile in reversed(_stack):
                if profile.enable and not profile.suspended:
                    profile._disarm()
                    for c in reversed(profile.changes):
                        c.undo()
                        self.changes.append(Change(c.backend, c.name, c.new, c.old, c.setter))
                    profile.suspended = True
                    self._suspended.append(profile)
        self._arm()
        self.active = True
        _stack.append(self)

    def _pop(self) -> None:
        """Undo this profile, the top of the stack."""
        self._disarm()
        for change in reversed(self.changes):
            change.undo()
        self.changes.clear()
        for profile in reversed(self._suspended):
            # Leaving `with deterministic(False)` puts back what it had switched off: the undo
            # loop above re-applied those profiles' changes.
            profile.suspended = False
            profile._arm(apply_now=False)
        self._suspended.clear()
        self.active = False
        _stack.pop()

    # -- undoing --------------------------------------------------------------------------
    def restore(self) -> None:
        """Put back every switch and environment variable this profile changed (idempotent).

        Profiles form a stack. Restoring one that is not the last applied is allowed: the
        profiles applied after it are taken off, this one is undone, and they are applied
        again, so the switches end up as if this profile had never been applied.
        """
        if not self.active:
            return
        above = _stack[_stack.index(self) + 1 :]
        for profile in reversed(above):
            profile._pop()
        self._pop()
        for profile in above:
            profile._push()

    def __enter__(self) -> DeterminismProfile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()

    def __str__(self) -> str:
        head = f"determinism profile ({'on' if self.enable else 'off'})"
        if not self.changes:
            return head + ": nothing to change"
        return head + ":\n" + "\n".join(f"  {c}" for c in self.changes)

    def __repr__(self) -> str:
        state = ("suspended" if self.suspended else "active") if self.active else "restored"
        return f"<DeterminismProfile enable={self.enable} {state}, {len(self.changes)} changes>"


def deterministic(
    enable: bool = True,
    *,
    warn_only: bool = False,
    tf32: bool = False,
    fallback_random: bool = False,
    cublas_workspace_config: str = ":4096:8",
    backends: Iterable[str] | None = None,
) -> DeterminismProfile:
    """Switch the determinism profile on (or off), as a call or as a context manager.

    Every change is recorded; the returned profile's :meth:`~DeterminismProfile.restore` (or the
    end of the ``with`` block) undoes exactly those changes.

    Parameters
    ----------
    enable
        ``True`` (default): deterministic algorithms everywhere, cuDNN deterministic and not
        benchmarking, TF32 and reduced-precision reductions off unless ``tf32=True``,
        ``CUBLAS_WORKSPACE_CONFIG`` set when missing, Inductor's ``fallback_random`` when asked,
        TensorFlow op determinism, JAX's deterministic-ops flag (before JAX starts).
        ``False``: undo every seedlock profile still active and switch off determinism that
        was switched on by other means; leaving a ``with deterministic(False)`` block switches
        it all back on.
    warn_only
        Turn torch's errors for ops without a deterministic kernel into warnings. Default
        ``False``.
    tf32
        Leave TF32 matmuls and convolutions, and fp16 / bf16 matmuls with reduced-precision
        reductions, allowed. Default ``False``: both off.
    fallback_random
        Also set Inductor's ``fallback_random``, so that ``torch.compile`` draws random numbers
        as eager mode does. Default ``False``.
    cublas_workspace_config
        The ``CUBLAS_WORKSPACE_CONFIG`` to set when the variable is missing: ``":4096:8"``
        (default) or ``":16:8"``, the two values cuBLAS documents for reproducibility.
    backends
        Names of the backends to switch (``"torch"``, ``"tensorflow"``, ``"jax"``, ...).
        Default ``None``: every backend.

    Returns
    -------
    DeterminismProfile
        The changes made; also a context manager that undoes them on exit.

    Raises
    ------
    ValueError
        ``cublas_workspace_config`` is another value, or ``backends`` names an unknown backend.

    Warns
    -----
    RuntimeWarning
        ``CUBLAS_WORKSPACE_CONFIG`` is missing and CUDA is already initialised: setting it now
        may come too late (set it before the first CUDA call, or use ``seedlock run
        --deterministic``).

    Examples
    --------
    >>> import seedlock, torch
    >>> with seedlock.deterministic():
    ...     torch.are_deterministic_algorithms_enabled()
    True
    >>> torch.are_deterministic_algorithms_enabled()
    False
    """
    if cublas_workspace_config not in (":4096:8", ":16:8"):
        raise ValueError(
            "cublas_workspace_config must be ':4096:8' or ':16:8' (the two values cuBLAS "
            f"documents for reproducibility), got {cublas_workspace_config!r}"
        )
    options = DeterminismOptions(
        warn_only=warn_only,
        tf32=tf32,
        fallback_random=fallback_random,
        cublas_workspace_config=cublas_workspace_config,
    )
    profile = DeterminismProfile(enable, options, _backends.select(backends))
    profile._push()
    return profile


def active_profiles() -> list[DeterminismProfile]:
    """Profiles switched on, in effect and not yet restored, oldest first (a profile switched
    off for now by a ``deterministic(False)`` is not listed)."""
    return [p for p in _stack if p.enable and not p.suspended]


def __getattr__(name: str) -> Any:
    # The op table is data read on first use; `seedlock.determinism.explain` is its front door.
    if name in ("explain", "Explanation"):
        from seedlock import optable  # importlib.resources and a JSON file: on first use

        return getattr(optable, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
