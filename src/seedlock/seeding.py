"""Seed every installed RNG family from one root seed with one call, and say what was done.

Guarantees: the same root gives every global generator the same value in every run; in the
``classic`` scheme those are the values of the hand-written recipe; nothing is imported to be
seeded. The guide: ``docs/seeding.md``.

Two schemes decide the value each *global* generator gets:

``classic`` (default)
    Exactly what the hand-written recipe does (``random.seed(s)``, ``np.random.seed(s)``,
    ``torch.manual_seed(s)``, ...): every global gets the root ``s`` itself, so migrating to
    seedlock changes no number. Classic seeds must lie in ``[0, 2**32)``, the range NumPy's legacy
    generator accepts and torch's CPU generator keeps; any other root (negative, wider, str,
    bytes) is first mapped to one such value, ``derive("classic", root=s, bits=32)``, that every
    global then shares.

``independent``
    Each global gets its own ``derive("global", <backend>, root=s)`` in its own width. The classic
    recipe seeds NumPy's legacy generator and torch's CPU generator with the same integer, and
    both are MT19937 with the same seeding routine, so ``np.random.rand()`` and ``torch.rand()``
    produce correlated streams. Use ``independent`` when that matters more than matching the
    numbers of an existing script.

Under ``torchrun``, ``per_rank=False`` (default) gives the globals the same values on every
rank, exactly as the classic recipe does: model initialisation drawn from them is identical on
every rank, and so are dropout masks and noise drawn from them. ``per_rank=True`` gives each
rank's globals their own values, the rank being a key of the derivation (never added to the
seed): ``derive("classic", "rank", rank, bits=32)`` shared by every global in the classic scheme,
``derive("global", <backend>, "rank", rank)`` in the independent one. Model initialisation must
then come from shared randomness: :func:`seedlock.distributed.shared_globals`, or DDP's own
broadcast of rank 0's parameters when it wraps the model.

Libraries that are installed but not imported yet are not imported: they are seeded by a
post-import hook the moment the program imports them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple

from seedlock import _hooks, _ranks, _registry, _startup
from seedlock import backends as _backends
from seedlock._text import printable
from seedlock.backends.base import Backend
from seedlock.derivation import (
    Seed,
    check_seed,
    classic_seed,
    derive,
    format_seed,
    fresh_seed,
    get_root,
    pythonhashseed_for,
    set_root,
)
from seedlock.determinism import deterministic as _profile

__all__ = [
    "HashSeed",
    "SeedEntry",
    "SeedReport",
    "apply_global_seed",
    "ensure_hash_seed",
    "global_seed_value",
    "hash_seed",
    "seed_everything",
    "seeded_values",
]

Scheme = Literal["classic", "independent"]
_SCHEMES = ("classic", "independent")
_HOOK_KEY = _hooks.SEED_KEY  # shared with seedlock run's deferred seeding, which this supersedes
_seeded: dict[str, int] = {}  # backend name -> the value its global generator last got here
_REEXEC_MARK = "SEEDLOCK_HASH_SEED_REEXEC"


def _log(warning: bool, message: str) -> None:
    """Log through ``logging`` when the program uses it; otherwise print warnings to stderr.

    Importing logging would be paid at every start-up under ``seedlock run``
    (``benchmarks/bench_cli.py`` measures those start-ups).
    """
    logging = sys.modules.get("logging")
    if logging is not None:
        logger = logging.getLogger("seedlock")
        logger.log(logging.WARNING if warning else logging.INFO, "%s", message)
    elif warning:
        print(message, file=sys.stderr)


class SeedEntry(NamedTuple):
    """One backend's line in a :class:`SeedReport`."""

    backend: str
    #: ``seeded`` | ``on import`` (installed, seeded when imported) | ``not installed`` |
    #: ``skipped`` (not in ``backends=``) | ``no global RNG`` (JAX: use the key factory)
    status: str
    value: int | None
    detail: str


class HashSeed(NamedTuple):
    """Whether ``str`` / ``bytes`` hashing (set and dict-of-str order) is fixed in this process."""

    fixed: bool
    value: str | None
    detail: str


class SeedReport:
    """What :func:`seed_everything` did: printable as a table, convertible to a dict.

    ``report["torch"]`` is that backend's :class:`SeedEntry` (``backend``, ``status``, ``value``,
    ``detail``); a backend seedlock does not know raises ``KeyError``. Reports compare equal when
    every attribute does.

    Attributes
    ----------
    root
        The root seed (an int, str or bytes).
    scheme
        ``"classic"`` or ``"independent"``.
    fresh
        Whether the root was drawn from OS entropy (no seed given): pass it back to replay.
    entries
        One :class:`SeedEntry` per backend, in registry order. ``status`` is ``seeded``,
        ``on import`` (installed, seeded when imported), ``not installed``, ``skipped`` (not in
        ``backends=``) or ``no global RNG`` (JAX: use the key factory).
    hash_seed
        :func:`hash_seed` at the time of the call.
    determinism
        The determinism profile's changes, in words (empty without ``deterministic=True``).
    rank
        The rank the globals' values were derived for (``per_rank=True``), else ``None``.

    Notes
    -----
    A plain class rather than a dataclass: importing ``dataclasses`` would be paid by every
    interpreter ``seedlock run`` starts; ``benchmarks/bench_cli.py`` measures them.
    """

    __slots__ = ("determinism", "entries", "fresh", "hash_seed", "rank", "root", "scheme")

    def __init__(
        self,
        root: Seed,
        scheme: str,
        fresh: bool,
        entries: tuple[SeedEntry, ...],
        hash_seed: HashSeed,
        *,
        determinism: tuple[str, ...] = (),
        rank: int | None = None,
    ) -> None:
        self.root = root
        self.scheme = scheme
        self.fresh = fresh
        self.entries = entries
        self.hash_seed = hash_seed
        self.determinism = determinism
        #: The rank the globals' values were derived for (``per_rank=True``), else ``None``.
        self.rank = rank

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeedReport):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<SeedReport root={format_seed(self.root)} scheme={self.scheme}>"

    def __getitem__(self, backend: str) -> SeedEntry:
        for entry in self.entries:
            if entry.backend == backend:
                return entry
        raise KeyError(backend)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data.

        Returns
        -------
        dict
            ``root`` (as ``SEEDLOCK_SEED`` holds it: ``"42"``, ``"str:..."``, ``"hex:..."``),
            ``scheme``, ``fresh``, ``entries`` (a list of dicts), ``hash_seed`` (a dict),
            ``determinism`` (a list of str) and ``rank``.
        """
        return {
            "root": format_seed(self.root),
            "scheme": self.scheme,
            "fresh": self.fresh,
            "entries": [e._asdict() for e in self.entries],
            "hash_seed": self.hash_seed._asdict(),
            "determinism": list(self.determinism),
            "rank": self.rank,
        }

    def __str__(self) -> str:
        origin = " (fresh entropy: pass it back to replay)" if self.fresh else ""
        per_rank = "" if self.rank is None else f", globals per rank (rank {self.rank})"
        root = printable(format_seed(self.root), 200)
        lines = [f"seedlock: root seed {root}{origin}, scheme {self.scheme}{per_rank}"]
        rows = [("backend", "status", "value", "what")]
        rows += [
            (e.backend, e.status, "-" if e.value is None else str(e.value), e.detail)
            for e in self.entries
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            cells = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False))
            lines.append(f"  {cells}  {r[3]}".rstrip())
        hs = self.hash_seed
        lines.append(
            f"  hash seed: {'fixed ' + str(hs.value) if hs.fixed else 'NOT fixed'} ({hs.detail})"
        )
        if self.determinism:
            lines.append("  determinism profile:")
            lines += [f"    {c}" for c in self.determinism]
        return "\n".join(lines)


def global_seed_value(
    backend: Backend, root: Seed, scheme: Scheme = "classic", *, rank: int | None = None
) -> int:
    """The value ``seed_everything(root, scheme=scheme)`` gives ``backend``'s global generator;
    with ``rank``, the value ``seed_everything(root, scheme=scheme, per_rank=True)`` gives it on
    that rank."""
    if rank is not None:
        if scheme == "classic":
            return derive("classic", "rank", rank, root=root, bits=32)
        return derive("global", backend.name, "rank", rank, root=root, bits=backend.seed_bits)
    if scheme == "classic":
        return classic_seed(root)
    return derive("global", backend.name, root=root, bits=backend.seed_bits)


def seed_everything(
    seed: Seed | None = None,
    *,
    deterministic: bool = False,
    scheme: Scheme = "classic",
    backends: Iterable[str] | None = None,
    per_rank: bool = False,
) -> SeedReport:
    """Seed every installed RNG family from one root seed, and report what was seeded.

    The root is also exported as ``SEEDLOCK_SEED`` for child processes, DataLoader workers and
    ranks, and becomes the default root of :func:`seedlock.derive` and the named streams. A
    library installed but not imported yet is seeded when the program imports it.

    Parameters
    ----------
    seed
        The root seed: any int (negative or wider than 64 bits included), str or bytes (NumPy /
        torch integer scalars count as their int). Default ``None``: a fresh 32-bit seed from OS
        entropy, which the report shows (and a warning logs) so the run can be replayed.
    deterministic
        Also switch on the determinism profile (:func:`seedlock.deterministic`) for the chosen
        backends; its changes are listed in the report. Default ``False``.
    scheme
        ``"classic"`` (default) or ``"independent"``: the value each global gets (see the module
        docstring).
    backends
        Names of the backends to seed (``"python"``, ``"numpy"``, ``"torch"``, ``"jax"``,
        ``"tensorflow"``, ``"cupy"``, or a third-party one); the others are reported as
        ``skipped``. Default ``None``: every backend.
    per_rank
        ``True`` gives the globals rank-local values under ``torchrun`` (different dropout and
        noise on every rank); the default ``False`` keeps them identical on every rank, like the
        classic recipe. See the module docstring for the values and for model initialisation.

    Returns
    -------
    SeedReport
        What each backend got; ``print`` it for a table.

    Raises
    ------
    TypeError
        ``seed`` is not an int, str or bytes (``bool`` and ``float`` are refused).
    ValueError
        ``scheme`` is not one of the two schemes; ``backends`` names an unknown backend; ``seed``
        is a str that UTF-8 cannot encode; with ``per_rank=True``, ``RANK`` / ``WORLD_SIZE`` are
        not valid (see :func:`seedlock.distributed.rank`).

    Examples
    --------
    >>> import seedlock, random
    >>> report = seedlock.seed_everything(0)
    >>> random.random()  # the same number as after random.seed(0)
    0.8444218515250481
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme must be one of {_SCHEMES}, got {scheme!r}")
    rank = _ranks.rank() if per_rank else None
    fresh = seed is None
    root = fresh_seed() if seed is None else check_seed(seed)
    set_root(root)
    if fresh:
        _log(True, f"seedlock: no seed given, drew {format_seed(root)} from OS entropy")

    entries = []
    chosen = {b.name for b in _backends.select(backends)}
    for backend in _backends.all_backends():
        if backend.name not in chosen:
            entries.append(SeedEntry(backend.name, "skipped", None, "not in backends="))
            continue
        entries.append(_seed_one(backend, root, scheme, rank))
    _registry.set_globals_per_rank(per_rank)

    changes: tuple[str, ...] = ()
    if deterministic:
        changes = tuple(str(c) for c in _profile(backends=sorted(chosen)).changes)
    report = SeedReport(
        root, scheme, fresh, tuple(entries), hash_seed(), determinism=changes, rank=rank
    )
    if "logging" in sys.modules:
        _log(False, str(report))
    return report


def _seed_one(backend: Backend, root: Seed, scheme: Scheme, rank: int | None) -> SeedEntry:
    _hooks.cancel(backend.module, _HOOK_KEY)
    if not backend.available():
        return SeedEntry(backend.name, "not installed", None, "")
    if backend.seed_bits == 0:
        return SeedEntry(backend.name, "no global RNG", None, "keys come from seedlock.jax_key")
    value = global_seed_value(backend, root, scheme, rank=rank)
    if backend.loaded():
        return SeedEntry(backend.name, "seeded", value, apply_global_seed(backend, value))

    def seed_on_import() -> None:
        apply_global_seed(backend, value)
        _log(False, f"seedlock: seeded {backend.name} with {value} on import")

    _hooks.on_import(backend.module, _HOOK_KEY, seed_on_import)
    return SeedEntry(backend.name, "on import", value, f"seeded when {backend.module} is imported")


def apply_global_seed(backend: Backend, value: int) -> str:
    """Seed ``backend``'s global generator(s) with ``value`` and remember it (see
    :func:`seeded_values`); returns what was seeded, in words."""
    detail = backend.seed(value)
    _seeded[backend.name] = value
    return detail


def seeded_values() -> dict[str, int]:
    """Backend name -> the value :func:`seed_everything` (now or on import) last gave its global
    generator in this process; a library never imported is not listed."""
    return dict(_seeded)


def hash_seed() -> HashSeed:
    """Is this interpreter's ``str``/``bytes`` hash seed fixed, and to what?

    The hash seed is read once, at start-up: only ``PYTHONHASHSEED`` in the environment the
    interpreter *started* with counts; setting ``os.environ["PYTHONHASHSEED"]`` later is a no-op.

    Returns
    -------
    HashSeed
        ``fixed`` (bool), ``value`` (the ``PYTHONHASHSEED`` text, or ``None``) and ``detail``
        (in words: why it is or is not fixed).
    """
    return HashSeed(*_startup.read_hash_seed())


def ensure_hash_seed(seed: Seed | None = None) -> None:
    """Make sure ``str`` hashing is fixed; if not, re-execute this program with it fixed.

    When the running interpreter already started with the right ``PYTHONHASHSEED`` this returns
    at once; otherwise the process is replaced (``os.execv``) by the same command line with the
    variable set, so call it first thing in a script.

    Parameters
    ----------
    seed
        Where the hash seed comes from; default ``None``: the root seed
        (:func:`seedlock.get_root`). The value is ``seed`` itself when it is an int in
        ``[0, 2**32)``, else ``derive("PYTHONHASHSEED", root=seed, bits=32)``.

    Raises
    ------
    RuntimeError
        In an interactive session (it cannot re-execute one), or when the re-executed program
        still has no fixed hash seed (an interpreter started with ``-E`` or ``-I``).
    LookupError
        ``seed`` is ``None`` and there is no root seed.
    TypeError
        ``seed`` is not an int, str or bytes.
    """
    value = pythonhashseed_for(get_root() if seed is None else check_seed(seed))
    current = hash_seed()
    if current.fixed and current.value == value:
        os.environ.pop(_REEXEC_MARK, None)
        return
    if os.environ.get(_REEXEC_MARK) == value:
        raise RuntimeError(
            f"re-executed with PYTHONHASHSEED={value} but the hash seed is still not fixed "
            f"({current.detail}); is the interpreter started with -E or -I?"
        )
    argv = list(getattr(sys, "orig_argv", []))
    interactive = hasattr(sys, "ps1") or sys.flags.interactive or not sys.argv or not sys.argv[0]
    if interactive or not argv:
        raise RuntimeError(
            "ensure_hash_seed() must re-execute the program, which is impossible in an "
            f"interactive session; start Python with PYTHONHASHSEED={value} instead"
        )
    os.environ["PYTHONHASHSEED"] = value
    os.environ[_REEXEC_MARK] = value
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])
