"""Per-sample seeding: a sample's randomness is a function of ``(root, epoch, index)`` only.

The guide: ``docs/data.md`` (per-sample seeding; held generators).

Right before sample ``index`` of epoch ``epoch`` is fetched, :class:`SeededDataset`:

* seeds every loaded global *host* generator (``random``, ``np.random``, torch's CPU
  generator, ...) with ``derive("data", epoch, index, <backend>)``; device generators (torch's
  CUDA generators, CuPy's) are left alone: :func:`sample_generator` draws on a device;
* reseeds every generator object the dataset holds (see *What is scanned*) with
  ``derive("data", epoch, index, "held", <path>)``;
* makes :func:`sample_rng` / :func:`sample_generator` return generators seeded with
  ``derive("data", epoch, index, "sample_rng", bits=128)`` /
  ``derive("data", epoch, index, "sample_generator")`` (32 bits on the CPU, 64 on a device).

So the augmentation a sample gets does not depend on which worker fetched it, how many workers
there are, what was fetched before it, or whether the run was resumed.

In the main process (``num_workers=0``) the caller's global generators are saved before the
sample and put back after it: fetching data never shifts the training loop's random streams.

The sample being fetched is kept per thread (a ``ContextVar``): threads that fetch from one
dataset each get their own :func:`sample_rng`; but the *global* generators are one per process,
so several threads' per-sample seeding of them interleaves their draws.

What is scanned
---------------
Generator objects (``numpy.random.Generator`` / ``RandomState``, ``random.Random``,
``torch.Generator``) reachable from the dataset through at most three attribute steps, where
lists, tuples and dict values are looked through without counting as a step::

    dataset.rng                              # 1 step
    dataset.transform.rng                    # 2 steps
    dataset.transform.transforms[2].rng      # 3 steps: torchvision-style Compose

Modules, classes, functions, tensors and arrays are not entered. The scan is made once, with
the wrapper. With ``strict=True`` a find is an error naming its path (for code that must use
:func:`sample_rng`); a source no seed reaches (``random.SystemRandom``) always is one.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from functools import partial
from struct import Struct
from typing import Any

from torch.utils.data import Dataset, get_worker_info

from seedlock import backends as _backends
from seedlock.backends.base import GeneratorOwner
from seedlock.derivation import Deriver, Seed, _int_starts, check_seed, derive, get_root

__all__ = ["SeededDataset", "find_generators", "sample_generator", "sample_rng"]

_MAX_STEPS = 3
_OPAQUE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


# The sample being fetched, per thread (and asyncio task): [root, epoch, index, sample_rng()
# or None, sample_generator()s by device or None]; a list, not a class: one is made per sample.
_Sample = list[Any]
_ROOT, _EPOCH, _INDEX, _RNG, _GENERATORS = range(5)
_current: ContextVar[_Sample | None] = ContextVar("seedlock_sample", default=None)


def _material(sample: _Sample, *keys: str | int) -> int:
    return derive("data", sample[_EPOCH], sample[_INDEX], *keys, root=sample[_ROOT], bits=256)


def _require_sample(what: str) -> _Sample:
    sample = _current.get()
    if sample is None:
        raise RuntimeError(
            f"{what}() is only available while a seedlock loader fetches a sample "
            "(inside Dataset.__getitem__ of a dataset given to seedlock.data.loader)"
        )
    return sample


def sample_rng() -> Any:
    """The current sample's ``numpy.random.Generator`` (PCG64, 128-bit seed).

    Use it in ``__getitem__`` or a transform::

        def __getitem__(self, i):
            rng = seedlock.data.sample_rng()
            return self.images[i] + rng.normal(0, 0.1, self.images[i].shape)

    Returns
    -------
    numpy.random.Generator
        Seeded from ``(root, epoch, index)`` of the sample being fetched (see the module
        docstring). Repeated calls while one sample is fetched return the same generator,
        continuing its stream.

    Raises
    ------
    RuntimeError
        Called outside the fetch of a sample by a seedlock loader (or :class:`SeededDataset`).
    """
    sample = _require_sample("sample_rng")
    if sample[_RNG] is None:
        import numpy as np  # loaded by the program: it holds a NumPy generator

        sample[_RNG] = np.random.default_rng(_material(sample, "sample_rng") & ((1 << 128) - 1))
    return sample[_RNG]


def sample_generator(device: Any = "cpu") -> Any:
    """The current sample's ``torch.Generator`` on ``device`` (same rules as :func:`sample_rng`).

    Per-sample seeding seeds host (CPU) generators only; this is how a sample draws on a device,
    in main-process loading (``num_workers=0``): DataLoader workers cannot use a device.

    Parameters
    ----------
    device
        ``"cpu"`` (default), or another device as a str or ``torch.device`` (``"cuda"``,
        ``"cuda:1"``); ``"cuda"`` means the current CUDA device.

    Returns
    -------
    torch.Generator
        Seeded with 32 bits of ``derive("data", epoch, index, "sample_generator")`` on the CPU,
        64 on another device (Philox keeps 64). The same one for repeated calls with the same
        device during one fetch.

    Raises
    ------
    RuntimeError
        Outside the fetch of a sample, as for :func:`sample_rng`; a device other than the CPU
        in a DataLoader worker.
    TypeError
        ``device`` is neither a str nor a ``torch.device``.
    ValueError
        ``device`` names no device torch knows.
    """
    sample = _require_sample("sample_generator")
    import torch  # loaded already: this package needs torch

    where = _device(torch, device)
    key = str(where)
    generators = sample[_GENERATORS]
    if generators is None:
        generators = sample[_GENERATORS] = {}
    generator = generators.get(key)
    if generator is None:
        material = _material(sample, "sample_generator")
        if where.type == "cpu":
            generator = torch.Generator().manual_seed(material & 0xFFFFFFFF)
        else:
            if not _in_main_process():
                raise RuntimeError(
                    f"sample_generator(device={key!r}) in a DataLoader worker: workers cannot use "
                    "a device; draw on the CPU there, or load in the main process (num_workers=0)"
                )
            generator = torch.Generator(device=where).manual_seed(material & ((1 << 64) - 1))
        generators[key] = generator
    return generator


def _device(torch: Any, device: Any) -> Any:
    """``device`` as a ``torch.device``, an index filled in for a device kind that has a
    current one (``"cuda"`` -> ``cuda:<current>``), so that one device has one generator."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        what = type(device).__name__
        raise TypeError(f"device must be a str or torch.device (e.g. 'cpu', 'cuda:0'), got {what}")
    try:
        where = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"device {device!r} is not a device torch knows ({exc})") from None
    if where.type != "cpu" and where.index is None:
        current = getattr(getattr(torch, where.type, None), "current_device", None)
        if current is not None:
            where = torch.device(where.type, current())
    return where


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """(path suffix, value) for each attribute; containers are looked through."""

    def expand(suffix: str, value: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
        if isinstance(value, (list, tuple)) and depth < 4:
            for i, item in enumerate(value):
                yield from expand(f"{suffix}[{i}]", item, depth + 1)
        elif isinstance(value, dict) and depth < 4:
            for key, item in value.items():
                yield from expand(f"{suffix}[{key!r}]", item, depth + 1)
        else:
            yield suffix, value

    attributes = getattr(obj, "__dict__", None)
    for name, value in attributes.items() if isinstance(attributes, dict) else ():
        yield from expand(f".{name}", value)


def _enterable(value: Any) -> bool:
    if isinstance(value, _OPAQUE) or value is None:
        return False
    # Tensors and arrays hold data, not generators; their __dict__ is not worth walking.
    return not (hasattr(value, "dtype") and hasattr(value, "shape"))


def find_generators(dataset: Any) -> list[tuple[str, Any, GeneratorOwner]]:
    """Generator objects held by ``dataset``, found as the module docstring describes.

    Parameters
    ----------
    dataset
        Any object; its attributes are scanned, not the dataset's items.

    Returns
    -------
    list of tuple
        ``(path, generator, owning backend)`` in scan order (``"dataset.transform.rng"``, ...).

    Raises
    ------
    ValueError
        A random source that no seed reaches (``random.SystemRandom``), naming its path.
    """
    found: list[tuple[str, Any, GeneratorOwner]] = []
    seen: set[int] = {id(dataset)}
    frontier: list[tuple[str, Any]] = [("dataset", dataset)]
    for _ in range(_MAX_STEPS):
        next_frontier = []
        for path, obj in frontier:
            for suffix, value in _children(obj):
                if id(value) in seen or not _enterable(value):
                    continue
                seen.add(id(value))
                owner = _backends.owner_of(value)
                if owner is not None:
                    found.append((path + suffix, value, owner))
                    continue
                why = _backends.unseedable(value)
                if why is not None:
                    raise ValueError(
                        f"the dataset holds a random source no seed reaches, at {path}{suffix}: "
                        f"{why}. Every run would draw other numbers: seedlock.data.sample_rng() "
                        "gives each sample its own reproducible generator"
                    )
                next_frontier.append((path + suffix, value))
        frontier = next_frontier
    return found


class SeededDataset(Dataset[Any]):
    """Wraps a map-style dataset so that item ``(epoch, index)`` is fetched under per-sample
    seeds (see the module docstring). :func:`seedlock.data.loader` builds it for you.

    ``wrapped[(epoch, index)]`` is ``dataset[index]``; ``len(wrapped)`` is ``len(dataset)``;
    ``wrapped.held`` is what :func:`find_generators` found; other attributes are the dataset's.

    Parameters
    ----------
    dataset
        A map-style dataset.
    root
        The root of the per-sample seeds; default ``None``: the process's root seed
        (:func:`seedlock.get_root`), read now.
    strict
        Refuse a dataset that holds generator objects, naming each one; default ``False``:
        they are reseeded per sample.

    Raises
    ------
    ValueError
        With ``strict=True``, the dataset holds generator objects; in any case, it holds a
        random source no seed reaches.
    TypeError
        ``root`` is not an int, str or bytes.
    LookupError
        ``root`` is ``None`` and the process has no root seed.
    """

    def __init__(self, dataset: Any, *, root: Seed | None = None, strict: bool = False) -> None:
        self.dataset = dataset
        self.root = get_root() if root is None else check_seed(root)
        self.held = find_generators(dataset)
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        if strict and self.held:
            paths = ", ".join(
                f"{p} ({type(g).__module__}.{type(g).__qualname__})" for p, g, _ in self.held
            )
            raise ValueError(
                f"the dataset holds random generator(s): {paths}. DataLoader workers each get a "
                "copy, so every worker (and every epoch) repeats the same numbers. Draw from "
                "seedlock.data.sample_rng() / sample_generator() instead, or pass strict=False "
                "to let seedlock reseed them per sample."
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        # torch's fetcher calls this once per batch: the main process saves and restores once.
        plan = self._plan()
        saved = [(load, save()) for save, load in plan.snapshots] if _in_main_process() else ()
        try:
            return self._fetch_all(keys, plan)
        finally:
            for load, state in saved:
                load(state)

    def _plan(self) -> _Plan:
        """What seeding one sample takes, made once per set of loaded libraries."""
        backends = tuple(_backends.live_globals())
        plan = self._plans.get(backends)
        if plan is None:
            plan = self._plans[backends] = _Plan(backends, self.held, self.root)
        return plan

    def _fetch_all(self, keys: list[tuple[int, int]], plan: _Plan) -> list[Any]:
        """Fetch ``keys`` under their per-sample seeds (the hot path: a worker's batch)."""
        dataset, root, enter, fetched = self.dataset, self.root, _current.set, []
        seeded_epoch, token = _NO_EPOCH, enter(None)  # the token puts back what was current
        try:
            for epoch, index in keys:
                enter([root, epoch, index, None, None])
                if epoch != seeded_epoch:
                    seed_sample, seeded_epoch = plan.seeding(epoch), epoch
                seed_sample(index)
                fetched.append(dataset[index])
        finally:
            _current.reset(token)
        return fetched

    def __getstate__(self) -> dict[str, Any]:
        # "spawn" / "forkserver" workers get the dataset pickled; plans (hash states) are remade.
        state = self.__dict__.copy()
        state["_plans"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __getattr__(self, name: str) -> Any:
        # Let code that reaches through loader.dataset find the user's attributes.
        if name in ("dataset", "_plans"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class _Plan:
    """One dataset's per-sample seeding for one set of loaded libraries: the backends' seeders
    (``seeder`` / ``snapshot`` in :mod:`seedlock.backends.base`) and the held generators get
    ``derive("data", epoch, index, <suffix>)``; :meth:`seeding` keeps the hash state up to the
    epoch, and a sample hashes its index and finishes one digest per suffix."""

    def __init__(
        self, backends: tuple[Any, ...], held: list[tuple[str, Any, GeneratorOwner]], root: Seed
    ) -> None:
        suffixes = [(b.name,) for b in backends] + [("held", path) for path, _, _ in held]
        self.derive = Deriver(("data",), 2, suffixes, root=root, bits=256)
        self._for_epoch = partial(Deriver, width=1, suffixes=suffixes, root=root, bits=256)
        self.seeders = [(_optional(b, "seeder", b.seed), (1 << b.seed_bits) - 1) for b in backends]
        self.snapshots = [_optional(b, "snapshot", (b.capture, b.restore)) for b in backends]
        # What each derived value goes to, in suffix order: (callable, mask of the bits kept).
        self.steps: list[tuple[Callable[[int], object], int]] = list(self.seeders)
        self.steps += [(partial(owner.seed_generator, g), _ALL_BITS) for _, g, owner in held]
        # The same, with a reader of a digest's kept bits as a 1-tuple (32, 64: struct's).
        self.readers = [(apply, _UNPACK.get(m) or partial(_low, m)) for apply, m in self.steps]
        self._epoch, self._seeding = _NO_EPOCH, self._generic(0)

    def seeding(self, epoch: Any) -> Callable[[Any], None]:
        """The function that seeds sample ``index`` of ``epoch``; the last epoch's is kept."""
        if epoch != self._epoch or type(epoch) is not type(self._epoch):
            self._seeding, self._epoch = self._made_for(epoch), epoch
        return self._seeding

    def _made_for(self, epoch: Any) -> Callable[[Any], None]:
        generic = self._generic(epoch)
        if type(epoch) is not int:
            return generic
        groups = [  # per suffix length: (_int_starts, [(suffix + root, callable, reader)])
            (_int_starts(state), [(tail, *self.readers[p]) for p, tail in tails])
            for state, tails in self._for_epoch(("data", epoch))._groups
        ]
        if len(groups) == 1 and len(groups[0][1]) == 3:  # python, numpy, torch; nothing held
            starts, steps = groups[0]  # the loop below, unrolled: looping costs 1/6 of hashing
            (tail0, apply0, read0), (tail1, apply1, read1), (tail2, apply2, read2) = steps

            def seed_three(index: Any) -> None:
                if type(index) is not int or index >> 64:
                    generic(index)
                    return
                size = index.bit_length() // 8 + 1
                prefix = starts[size].copy()
                prefix.update(index.to_bytes(size, "little", signed=True))
                final = prefix.copy()
                final.update(tail0)
                apply0(read0(final.digest())[0])
                final = prefix.copy()
                final.update(tail1)
                apply1(read1(final.digest())[0])
                prefix.update(tail2)  # the last suffix finishes the prefix itself
                apply2(read2(prefix.digest())[0])

            return seed_three

        def seed_sample(index: Any) -> None:  # what _generic does, for an int below 2**64
            if type(index) is not int or index >> 64:  # negative, huge, or not an int
                generic(index)
                return
            size = index.bit_length() // 8 + 1
            payload = index.to_bytes(size, "little", signed=True)
            for states, steps in groups:
                prefix = states[size].copy()
                prefix.update(payload)
                for tail, apply, read in steps:
                    final = prefix.copy()
                    final.update(tail)
                    apply(read(final.digest())[0])

        return seed_sample

    def _generic(self, epoch: Any) -> Callable[[Any], None]:
        derive, steps = self.derive, self.steps  # a Deriver call checks and converts any key

        def seed_sample(index: Any) -> None:
            for (apply, mask), value in zip(steps, derive(epoch, index), strict=True):
                apply(value & mask)

        return seed_sample


def _low(mask: int, digest: bytes) -> tuple[int]:
    return (int.from_bytes(digest, "little") & mask,)


def _optional(backend: Any, member: str, default: Any) -> Any:
    """A backend's optional ``seeder()`` / ``snapshot()`` (third-party backends may lack them)."""
    method = getattr(backend, member, None)
    return default if method is None else method()


_ALL_BITS = (1 << 256) - 1
_UNPACK = {(1 << 32) - 1: Struct("<I").unpack_from, (1 << 64) - 1: Struct("<Q").unpack_from}
_NO_EPOCH = object()  # what no epoch equals: a plan's first seeding() makes its function


def _in_main_process() -> bool:
    return get_worker_info() is None
