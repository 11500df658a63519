"""Tensor fingerprints: an order-sensitive hash of the exact bits, dtype and shape, plus a summary.

On the CPU the fingerprint is xxh3-128 (when the ``xxhash`` package is installed:
``pip install 'seedlock[audit]'``; about memory speed) or else SHA-256 (several times slower
even with the CPU's SHA extensions: ``benchmarks/bench_audit.py`` measures both), over a header
(dtype, shape) and the tensor's bytes, read in place: no copy for a contiguous tensor. Any
single-bit flip, any swap of two different elements, another dtype or shape of the same bytes:
all change it (up to hash collisions, ~2**-128).
``torch.hash_tensor`` XORs words together, so a swap of two elements leaves it unchanged; it is
not used. The algorithm is recorded in every trace; traces made with different ones are not
compared.

On an accelerator the fingerprint is computed on the device: the tensor's 32-bit words are
weighted by two position-dependent odd multipliers and summed modulo 2**64, and only those two
integers come back to the host. Odd weights make every single-bit flip change the sum; distinct
weights per position make swaps change it (except with probability ~2**-64 per swap); the work
goes in blocks of a few MiB (:mod:`seedlock.audit._device_hash`). A trace does not wait even for
those: its :class:`Memo` hands out a :class:`Pending` per tensor, and :func:`resolve` brings
many back in one transfer, when the rows are written; an event with summaries brings its
fingerprints and summaries back together (one host sync; two when a tensor holds NaN or Inf).
A DTensor is fingerprinted and summarised by its local shard (``to_local()``, no collective).

:func:`summary` gives the size of a divergence cheaply: sum, max |x|, NaN and Inf counts. The
guide: ``docs/audit.md`` (fingerprints).
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

from seedlock.audit import _device_hash as dev
from seedlock.backends.torch import capturing_graph

_xxhash: Any
try:  # xxh3-128 hashes at memory speed, SHA-256 slower (benchmarks/bench_audit.py)
    import xxhash as _xxhash
except ImportError:  # pragma: no cover - depends on the environment
    _xxhash = None

__all__ = [
    "ALGORITHM", "Memo", "Pending", "Summary", "fingerprint", "fingerprint_all",
    "fingerprint_summary", "hash_bytes", "resolve", "rng_fingerprint", "summary", "tensors_in",
]  # fmt: skip

#: The hash behind CPU fingerprints: traces made with different ones cannot be compared.
ALGORITHM = "xxh3_128" if _xxhash is not None else "sha256"

_DIGEST_BYTES = 16
_HEX = 2 * _DIGEST_BYTES


class Summary(NamedTuple):
    """Cheap statistics of a tensor (floating point: NaN / Inf aware), from :func:`summary`.

    Attributes
    ----------
    sum
        The sum of the finite elements, as a Python float.
    absmax
        The largest absolute value of the finite elements, as a Python float.
    nans, infs
        How many elements are NaN, and how many are +/-Inf.
    """

    sum: float
    absmax: float
    nans: int
    infs: int


# (dtype, shape) -> (header, dtype text, shape text): formatting them costs more than hashing a
# small tensor, and a training step meets the same few over and over.
_DESCRIPTIONS: dict[tuple[Any, Any], tuple[bytes, str, str]] = {}


def _describe(t: Any) -> tuple[bytes, str, str]:
    """(the fingerprint's header, ``str(t.dtype)``, ``str(tuple(t.shape))``) of ``t``."""
    key = (t.dtype, t.shape)
    found = _DESCRIPTIONS.get(key)
    if found is None:
        if len(_DESCRIPTIONS) >= 4096:
            _DESCRIPTIONS.clear()
        dtype, shape = str(t.dtype), str(tuple(t.shape))
        found = _DESCRIPTIONS[key] = (f"{dtype}|{shape}|".encode(), dtype, shape)
    return found


# Private switch for tests: CPU tensors take the on-device path (in fingerprint(), summary()
# and Memo), so that path runs on a machine without an accelerator.
_CPU_AS_DEVICE = False
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # types that are no DTensor, at a glance


def _on_device(t: Any) -> bool:
    return not t.is_cpu or _CPU_AS_DEVICE


def _local(t: Any) -> Any:
    return t if type(t) in _PLAIN else dev.local_shard(t)[0]


def _new_hash(header: bytes) -> Any:
    return _xxhash.xxh3_128(header) if _xxhash is not None else hashlib.sha256(header)


def hash_bytes(*buffers: Any) -> str:
    """:data:`ALGORITHM` over the concatenated buffers, 32 hex digits."""
    h = _new_hash(b"")
    for buffer in buffers:
        h.update(buffer)
    return str(h.hexdigest())[: 2 * _DIGEST_BYTES]


# dtypes whose tensors .numpy() views as they are (no bfloat16, no complex32, no float8s).
_NUMPY_DTYPES = frozenset(
    {torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16,
     torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128}
)  # fmt: skip


def fingerprint(t: Any) -> str:
    """A 32-hex-digit fingerprint of ``t``'s exact bits, dtype and shape (see the module docstring).

    Parameters
    ----------
    t
        A torch tensor of any dtype, on any device (hashed there; one small transfer). A sparse
        or other non-strided tensor is made dense first; a DTensor is hashed by its local shard
        (the same fingerprint as its ``to_local()``).

    Returns
    -------
    str
        32 lowercase hex digits. Equal for equal bits, dtype and shape, on the same kind of
        device and with the same :data:`ALGORITHM`.

    Examples
    --------
    >>> fingerprint(torch.tensor([1.0, 2.0])) == fingerprint(torch.tensor([2.0, 1.0]))
    False
    """
    if type(t) not in _PLAIN:
        t = dev.local_shard(t)[0]
    if t.layout != torch.strided:
        t = t.to_dense()
    h = _new_hash(_describe(t)[0])
    if _on_device(t):
        h.update(dev.device_hash(t))
        return str(h.hexdigest())[:_HEX]
    if t.dtype in _NUMPY_DTYPES and not t.is_conj() and not t.is_neg():
        # The common case, with the fewest calls (tracing fingerprints every event): the same
        # bytes as as_bytes reads, through a NumPy view of the tensor (of a copy in logical
        # order, in a reused buffer, when it is not contiguous).
        if t.is_contiguous():
            h.update((t.detach() if t.requires_grad else t).numpy())
            return str(h.hexdigest())[:_HEX]
        if t.nbytes <= _SCRATCH_BYTES:
            buf = _scratch.pop() if _scratch else torch.empty(0, dtype=torch.uint8)
            if buf.numel() < t.nbytes:
                buf = torch.empty(t.nbytes, dtype=torch.uint8)
            copy = buf[: t.nbytes].view(t.dtype).view(t.shape).copy_(t.detach())
            h.update(copy.numpy())
            _scratch.append(buf)
            return str(h.hexdigest())[:_HEX]
    data = dev.as_bytes(t)
    if data.numel():
        h.update(memoryview(data.numpy()))
    return str(h.hexdigest())[:_HEX]


# Buffers for the copy of a non-contiguous tensor: a fresh allocation of that size costs page
# faults each time (malloc maps large blocks anew), more than the copy. A list, so that two
# threads fingerprinting at once each take their own.
_scratch: list[torch.Tensor] = []
_SCRATCH_BYTES = 1 << 24  # larger tensors are copied into a fresh allocation


def summary(t: Any) -> Summary:
    """Sum, max |x|, NaN and Inf counts of ``t``, as Python floats / ints (one transfer from a
    device).

    Cheap on purpose: one pass for the sum (accumulated in the tensor's own dtype, float32 for
    half types — a float64 accumulation costs a full float64 copy, many times more on the CPU:
    ``benchmarks/bench_audit.py``) and one for the extremes (``aminmax``). NaN and Inf are
    counted, in two more passes, only when the sum or the extremes show there are some; the sum
    and max |x| then ignore them.

    Parameters
    ----------
    t
        A torch tensor: complex counts as its real and imaginary parts, bool as 0 / 1; a
        DTensor is summarised by its local shard.

    Returns
    -------
    Summary
        All zeros for an empty tensor.
    """
    x = dev.summable(_local(t))
    if x is None:
        return Summary(0.0, 0.0, 0, 0)
    total, absmax = _sum_absmax(x)
    return _finish(x, total, absmax)


def _finish(x: Any, total: float, absmax: float) -> Summary:
    """The summary of ``x`` from its sum and max |x|; NaN and Inf counted only if needed."""
    if math.isfinite(total) and math.isfinite(absmax):
        return Summary(total, absmax, 0, 0)
    nans, infs = torch.stack([x.isnan().sum(), x.isinf().sum()]).cpu().tolist()
    finite = x[torch.isfinite(x)]
    total, absmax = _sum_absmax(finite) if finite.numel() else (0.0, 0.0)
    return Summary(total, absmax, int(nans), int(infs))


def _sum_absmax(x: Any) -> tuple[float, float]:
    if _on_device(x):
        total_v, low_v, high_v = dev.device_stats(x).cpu().tolist()  # one transfer from the device
        return float(total_v), float(max(abs(low_v), abs(high_v)))
    low, high = torch.aminmax(x)
    # Three .item() calls cost less than gathering the three scalars into one tensor and
    # copying it (a 4-op detour): tracing calls this for every event.
    return float(x.sum().item()), float(max(abs(low.item()), abs(high.item())))


# -- what one trace event records ------------------------------------------------------------


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nested structure of tuples, lists and dicts, in order."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


class Pending:
    """A fingerprint of a tensor on an accelerator whose two sums are still on the device
    (leaf: ``header`` and ``sums``), or of several tensors some of which are (``parts``): a
    deferring :class:`Memo` hands these out so that tracing never waits for the device, and
    :func:`resolve` brings many to the host in one transfer. ``str()`` once resolved: the same
    string :func:`fingerprint` / :func:`fingerprint_all` give."""

    __slots__ = ("header", "parts", "sums", "value")

    def __init__(
        self,
        header: bytes = b"",
        sums: torch.Tensor | None = None,
        parts: list[str | Pending] | None = None,
    ) -> None:
        self.header, self.sums, self.parts = header, sums, parts
        self.value: str | None = None

    def __str__(self) -> str:
        if self.value is None:
            resolve([self])
        return str(self.value)

    def settle(self, pair: list[int]) -> None:
        """Fill in ``value`` from the two sums, brought to the host."""
        h = _new_hash(self.header)
        h.update(dev.sums_bytes(pair))
        self.value, self.sums = str(h.hexdigest())[:_HEX], None


def resolve(pending: list[Pending]) -> None:
    """Fill in ``value`` of every one of ``pending``: one transfer from each device."""
    leaves: dict[int, Pending] = {}
    combined: list[Pending] = []
    for p in pending:
        if p.value is not None:
            continue
        if p.parts is None:
            leaves[id(p)] = p
            continue
        combined.append(p)
        for q in p.parts:
            if isinstance(q, Pending) and q.value is None:
                leaves[id(q)] = q
    group = list(leaves.values())
    for leaf, pair in zip(group, dev.fetch([q.sums for q in group]), strict=True):  # type: ignore[misc]
        leaf.settle(pair)
    for p in combined:
        p.value = hash_bytes("".join(str(q) for q in p.parts or ()).encode())


class Memo:
    """Fingerprints and summaries of recently seen tensors: a module's input is usually the
    previous module's output, hashed a moment ago, and a container's output is its last
    child's. Keyed by identity, checked by weak reference and by the tensor's version counter
    (bumped by every in-place change), so a hit is always exact. A DTensor is its local shard.

    On an accelerator one call's fingerprints and summaries come back in one transfer; with
    ``defer=True`` (what a trace uses) fingerprints do not even wait for that: :meth:`defer`
    and :meth:`event` give a :class:`Pending`, unless summaries are brought back anyway."""

    def __init__(self, size: int = 512, defer: bool = False) -> None:
        self.size = size
        self.deferring = defer
        self.entries: dict[int, list[Any]] = {}  # id -> [ref, version, fingerprint, summary]

    def _entry(self, t: torch.Tensor) -> list[Any]:
        entry = self.entries.get(id(t))
        if entry is not None and entry[0]() is t and entry[1] == t._version:
            return entry
        if len(self.entries) >= self.size:
            self.entries.clear()
        entry = self.entries[id(t)] = [weakref.ref(t), t._version, None, None]
        return entry

    def __call__(self, t: torch.Tensor) -> str:
        return str(self.defer(t))

    def _print(self, t: torch.Tensor) -> str | Pending:
        """``t``'s fingerprint (``t`` no DTensor), a :class:`Pending` on the device path."""
        entry = self.entries.get(id(t))
        if entry is None or entry[1] != t._version or entry[0]() is not t:
            entry = self._entry(t)
        fp: str | Pending | None = entry[2]
        if fp is None:
            if _on_device(t):
                d = t.to_dense() if t.layout != torch.strided else t
                fp = entry[2] = Pending(_describe(d)[0], dev.device_sums(d))
            else:
                fp = entry[2] = fingerprint(t)
        return fp

    def defer(self, t: torch.Tensor) -> str | Pending:
        """``t``'s fingerprint, or (deferring, ``t`` on an accelerator) a :class:`Pending`."""
        return self.all([t])

    def all(self, tensors: list[torch.Tensor]) -> str | Pending:
        """:func:`fingerprint_all` of ``tensors``, deferred as :meth:`defer` is (not deferring:
        one transfer from each device for all of them)."""
        if len(tensors) == 1 and type(tensors[0]) in _PLAIN:  # the common case, in few calls
            fp = self._print(tensors[0])
            if not isinstance(fp, Pending) or (fp.value is None and self.deferring):
                return fp
            return fp.value if fp.value is not None else str(fp)
        if not tensors:
            return "none"
        prints = [self._print(_local(t)) for t in tensors]
        if not self.deferring:
            resolve([p for p in prints if isinstance(p, Pending)])
        prints = [p.value if isinstance(p, Pending) and p.value is not None else p for p in prints]
        if len(prints) == 1:
            return prints[0]
        if any(isinstance(p, Pending) for p in prints):
            return Pending(parts=prints)
        return hash_bytes("".join(prints).encode())  # type: ignore[arg-type]

    def summary(self, t: torch.Tensor) -> Summary:
        return self._summaries([_local(t)])[0]

    def _summaries(self, tensors: list[torch.Tensor]) -> list[Summary]:
        """The summaries of ``tensors`` (no DTensors): on a device, one transfer brings them
        back with the fingerprints."""
        entries = [self._entry(t) for t in tensors]
        on_device = []
        for entry, t in zip(entries, tensors, strict=True):
            if entry[3] is not None:
                continue
            x = dev.summable(t) if _on_device(t) else None
            if x is None:
                entry[3] = summary(t)
            else:
                on_device.append((entry, x))
        if on_device:
            prints = {id(p): p for p in map(self._print, tensors) if isinstance(p, Pending)}
            leaves = [p for p in prints.values() if p.value is None]
            stats = [dev.device_stats(x) for _, x in on_device]
            got = dev.fetch([*(p.sums for p in leaves), *stats])  # type: ignore[list-item]
            for leaf, pair in zip(leaves, got, strict=False):
                leaf.settle(pair)
            for (entry, x), bits in zip(on_device, got[len(leaves) :], strict=True):
                total, low, high = dev.as_floats(bits)
                entry[3] = _finish(x, total, max(abs(low), abs(high)))
        return [entry[3] for entry in entries]

    def event(self, tensors: list[torch.Tensor], summaries: bool = True) -> Event:
        """(fingerprint, dtype, shape, sum, absmax, nans, infs) of one or more tensors, as one
        trace event records them; without ``summaries`` the last four are ``None``. For a
        DTensor: its local shard's, the shape reading ``(2, 4) local of (4, 4) [Shard(dim=0)]``.
        """
        if len(tensors) == 1 and not summaries and type(tensors[0]) in _PLAIN:  # the common case
            return (self.all(tensors), *_describe(tensors[0])[1:], *_NO_STATS)
        if not tensors:
            return ("none", None, None, *((0.0, 0.0, 0, 0) if summaries else _NO_STATS))
        first = tensors[0]
        placements = None
        if any(type(t) not in _PLAIN for t in tensors):
            placements = dev.local_shard(first)[1]
            tensors = [dev.local_shard(t)[0] for t in tensors]
        _, dtype, shape = _describe(tensors[0])
        if placements is not None:
            where = ", ".join(map(repr, placements))
            shape = f"{shape} local of {tuple(first.shape)} [{where}]"
        if not summaries:
            return (self.all(tensors), dtype, shape, *_NO_STATS)
        stats = self._summaries(tensors)
        return (
            self.all(tensors),
            dtype,
            shape,
            sum(s.sum for s in stats),
            max(s.absmax for s in stats),
            sum(s.nans for s in stats),
            sum(s.infs for s in stats),
        )


_memo = Memo()
_NO_STATS = (None, None, None, None)
Event = tuple[Any, str | None, str | None, Any, Any, Any, Any]


def fingerprint_all(tensors: list[torch.Tensor]) -> str:
    """One fingerprint for one or more tensors ("none" for none)."""
    return str(_memo.all(tensors))


Stats = tuple[float, float, int, int]


def fingerprint_summary(tensors: list[torch.Tensor]) -> tuple[str, str | None, str | None, Stats]:
    """(fingerprint, dtype, shape, summary) of one or more tensors, as one trace event records
    them."""
    fp, dtype, shape, *stats = _memo.event(tensors)
    return str(fp), dtype, shape, tuple(stats)


def rng_fingerprint() -> str:
    """Fingerprint of torch's CPU generator state (and every CUDA device's, once started)."""
    states = [torch.default_generator.get_state().numpy()]  # what torch.get_rng_state() gives
    # While a CUDA graph is captured torch refuses to read a CUDA generator: the CPU's alone.
    if torch.cuda.is_initialized() and not capturing_graph(torch):
        states += [state.numpy() for state in torch.cuda.get_rng_state_all()]
    return hash_bytes(*states)
