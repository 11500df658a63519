"""The table of PyTorch operations known to be nondeterministic, and :func:`explain`.

What the table is
-----------------
``nondeterministic_ops.json``, shipped next to this module, lists facts of the form "this
operation, on these devices, under this condition, can give different bits from run to run (or
from machine to machine)". Each fact says what ``torch.use_deterministic_algorithms(True)`` does
about it, in one of three words:

* ``deterministic_kernel``: the flag makes torch switch to a deterministic (often slower) kernel.
* ``raises``: torch has no deterministic kernel, so the flag makes the op raise ``RuntimeError``
  (a warning with ``warn_only=True``).
* ``not_covered``: the flag does not fix it; something else must (an environment variable, a
  backend setting, a pinned thread count).

The rows come from the two lists in the docstring of ``torch.use_deterministic_algorithms``, from
warnings torch itself emits, and from behaviour checked in the torch sources and on the CPU
(reductions that depend on the thread count, ``CUBLAS_WORKSPACE_CONFIG``, TF32, ``torch.compile``
random numbers).
Every ``aten::`` name in it was checked against ``torch.ops.aten`` of the torch version the file
records (``torch_version``).

Limits
------
* **Absence proves nothing.** An op missing from the table may still be nondeterministic: custom
  CUDA extensions, third-party kernels, and anything torch does not flag. :func:`explain` says so
  rather than answering "deterministic".
* **One torch version.** Kernels gain deterministic variants (and lose them) between releases;
  the table is only checked against the version it records.
* **Conditions are prose.** A match means "this op can be nondeterministic here, read ``when``";
  the table cannot see whether a given call repeats indices, uses ``mode='bilinear'`` or runs a
  backward pass. Public and aten spellings share one key (``torch.cumsum`` and ``aten::cumsum``
  are the same query), so a forward op can match an entry about its backward.
* **One op, several facts.** Settings that touch many ops (the cuBLAS workspace, TF32) are
  listed under the matmul and convolution names as well, and some ops behave differently per
  argument (``put_`` with and without ``accumulate``), so a query can match several entries.

Nothing here imports torch: the JSON is read on the first call and cached. The guide:
``docs/determinism.md`` (which ops are nondeterministic).
"""

from __future__ import annotations

import functools
import json
import textwrap
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, cast, get_args

__all__ = ["Coverage", "Explanation", "OpInfo", "explain", "known_ops"]

Coverage = Literal["deterministic_kernel", "raises", "not_covered"]
"""What ``torch.use_deterministic_algorithms(True)`` does about an entry."""

_DATA_FILE = "nondeterministic_ops.json"
_DEVICES = ("cpu", "cuda")
_COVERAGE_TEXT: dict[str, str] = {
    "deterministic_kernel": "switches to a deterministic kernel",
    "raises": "raises RuntimeError (only warns with warn_only=True)",
    "not_covered": "does not fix it",
}
# Spellings people and tools use for the same op. aten names are checked first: an overload
# suffix (".default", ".Tensor", ".out", ".two", ...) can only be cut safely once we know the
# dot is not part of a module path.
_ATEN_PREFIXES = ("torch.ops.aten.", "aten::", "aten.")
_PREFIXES = (
    "torch.nn.functional.",
    "torch.tensor.",
    "torch.nn.",
    "torch.",
    "nn.functional.",
    "tensor.",
    "nn.",
    "f.",
)
_WRAP = 96


@dataclass(frozen=True)
class OpInfo:
    """One known source of nondeterminism: an op, where it bites, and what to do about it."""

    name: str
    aliases: tuple[str, ...]
    devices: tuple[str, ...]
    when: str
    under_deterministic_algorithms: Coverage
    fix: str

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain data, in the shape of the JSON file."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "devices": list(self.devices),
            "when": self.when,
            "under_deterministic_algorithms": self.under_deterministic_algorithms,
            "fix": self.fix,
        }

    def __str__(self) -> str:
        flag = _COVERAGE_TEXT[self.under_deterministic_algorithms]
        lines = [
            f"{self.name} ({', '.join(self.devices)})",
            _field("when", self.when),
            _field("torch.use_deterministic_algorithms(True)", flag),
            _field("fix", self.fix),
        ]
        if self.aliases:
            lines.append(_field("also matched as", ", ".join(self.aliases)))
        return "\n".join(lines)


@dataclass(frozen=True)
class Explanation:
    """What seedlock's table says about one op name (the answer of :func:`explain`).

    ``known`` is true when the name is in the table at all; ``nondeterministic`` when at least
    one entry applies to the requested device (any device when none was given). ``entries``
    holds those applicable entries, in table order.
    """

    query: str
    known: bool
    nondeterministic: bool
    entries: tuple[OpInfo, ...]
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The explanation as plain data (JSON-serialisable)."""
        return {
            "query": self.query,
            "device": self.device,
            "known": self.known,
            "nondeterministic": self.nondeterministic,
            "entries": [entry.to_dict() for entry in self.entries],
        }

    def __str__(self) -> str:
        version = _table().torch_version
        if not self.known:
            return (
                f"{self.query!r} is not in seedlock's table of known nondeterministic ops for "
                f"torch {version}. This does not prove it deterministic: the table only holds "
                "what torch documents or seedlock has checked."
            )
        if not self.entries:
            outside = "" if self.device in _DEVICES else " (the table only records cpu and cuda)"
            return (
                f"{self.query!r} is in seedlock's table of known nondeterministic ops for torch "
                f"{version}, but none of its entries applies to device {self.device!r}{outside}."
            )
        where = f" on {self.device}" if self.device is not None else ""
        count = len(self.entries)
        noun = "entry" if count == 1 else "entries"
        head = (
            f"{self.query!r}{where} can be nondeterministic: {count} {noun} in seedlock's "
            f"table for torch {version}."
        )
        return "\n\n".join([head, *(str(entry) for entry in self.entries)])


def explain(op: str, device: str | None = None) -> Explanation:
    """Look an op up in the table of known nondeterministic ops.

    Parameters
    ----------
    op
        The op, spelled the way a user writes it (``"torch.nn.functional.interpolate"``,
        ``"F.interpolate"``, ``"nn.Upsample"``, ``"Tensor.index_add_"``) or the way the
        dispatcher shows it (``"aten::upsample_bilinear2d_backward"``,
        ``"aten.upsample_bilinear2d_backward.default"``). Matching ignores case and those
        prefixes and overload suffixes; a trailing ``_`` (in-place) is dropped only when the
        exact name is not found.
    device
        Keep the entries that concern this device type (``"cpu"``, ``"cuda"``; ``"cuda:1"``
        counts as ``"cuda"``); default ``None``: every entry.

    Returns
    -------
    Explanation
        ``known`` (the name is in the table), ``nondeterministic`` (an entry applies) and the
        applicable ``entries``. Not being known proves nothing (see the module docstring).

    Raises
    ------
    TypeError
        ``op`` is not a str (for an ``OpOverload`` pass ``str(op)``), or ``device`` is neither a
        str nor ``None`` (for a ``torch.device`` pass ``str(device)``).
    ValueError
        ``op`` or ``device`` is blank.

    Examples
    --------
    >>> from seedlock.optable import explain
    >>> found = explain("aten::upsample_bilinear2d_backward", device="cuda:0")
    >>> found.nondeterministic, found.entries[0].under_deterministic_algorithms
    (True, 'raises')
    >>> explain("torch.add").known
    False
    """
    if not isinstance(op, str):
        raise TypeError(
            f"op must be a str naming a torch operation, got {_describe(op)} (pass a name such "
            "as 'torch.index_add' or 'aten::index_add'; for an OpOverload use str(op))"
        )
    if not op.strip():
        raise ValueError(
            f"op must name a torch operation, got {op!r} (pass a name such as "
            "'torch.index_add' or 'aten::index_add')"
        )
    device_type = None if device is None else _device_type(device)
    matches = _lookup(op)
    entries = tuple(
        entry for entry in matches if device_type is None or device_type in entry.devices
    )
    return Explanation(
        query=op,
        known=bool(matches),
        nondeterministic=bool(entries),
        entries=entries,
        device=device_type,
    )


def known_ops() -> tuple[OpInfo, ...]:
    """Every entry of the table, in file order.

    Returns
    -------
    tuple of OpInfo

    Examples
    --------
    >>> from seedlock.optable import known_ops
    >>> sorted({op.under_deterministic_algorithms for op in known_ops()})
    ['deterministic_kernel', 'not_covered', 'raises']
    """
    return _table().ops


# --- loading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    torch_version: str
    ops: tuple[OpInfo, ...]
    index: dict[str, tuple[OpInfo, ...]]


@functools.cache
def _table() -> _Table:
    text = resources.files("seedlock").joinpath(_DATA_FILE).read_text(encoding="utf-8")
    raw = json.loads(text)
    if not isinstance(raw, dict) or not isinstance(raw.get("ops"), list):
        raise _broken("the top level must be an object with an 'ops' list")
    version = raw.get("torch_version")
    if not isinstance(version, str) or not version:
        raise _broken("'torch_version' must be a non-empty string")
    ops = tuple(_parse_entry(item, position) for position, item in enumerate(raw["ops"]))
    index: dict[str, list[OpInfo]] = {}
    for entry in ops:
        for spelling in (entry.name, *entry.aliases):
            bucket = index.setdefault(_normalise(spelling)[0], [])
            if entry not in bucket:
                bucket.append(entry)
    return _Table(version, ops, {key: tuple(found) for key, found in index.items()})


def _parse_entry(item: object, position: int) -> OpInfo:
    if not isinstance(item, dict):
        raise _broken(f"entry {position} must be an object, got {_describe(item)}")
    fields: dict[str, Any] = item
    where = f"entry {position} ({fields.get('name')!r})"

    def text(key: str) -> str:
        value = fields.get(key)
        if not isinstance(value, str) or not value:
            raise _broken(f"{where}: {key!r} must be a non-empty string, got {_describe(value)}")
        return value

    def texts(key: str) -> tuple[str, ...]:
        value = fields.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise _broken(f"{where}: {key!r} must be a list of non-empty strings")
        return tuple(value)

    coverage = text("under_deterministic_algorithms")
    if coverage not in get_args(Coverage):
        raise _broken(f"{where}: unknown under_deterministic_algorithms {coverage!r}")
    devices = texts("devices")
    if not devices or not set(devices) <= set(_DEVICES):
        raise _broken(f"{where}: devices must be a non-empty subset of {_DEVICES}")
    return OpInfo(
        name=text("name"),
        aliases=texts("aliases"),
        devices=devices,
        when=text("when"),
        under_deterministic_algorithms=cast(Coverage, coverage),
        fix=text("fix"),
    )


def _broken(problem: str) -> ValueError:
    return ValueError(
        f"seedlock's {_DATA_FILE} is malformed: {problem} (the installed package data is "
        "damaged; reinstall seedlock)"
    )


# --- matching ------------------------------------------------------------------------------------


def _normalise(spelling: str) -> tuple[str, bool]:
    """Lower-case ``spelling`` and strip namespace prefixes; say whether it was an aten name."""
    key = spelling.strip().lower()
    is_aten = False
    for prefix in _ATEN_PREFIXES:
        if key.startswith(prefix):
            key, is_aten = key[len(prefix) :], True
            break
    if is_aten:
        # aten op names never contain a dot, so whatever follows one is an overload name.
        return key.split(".", 1)[0], True
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
                break
    return key, False


def _candidate_keys(op: str) -> list[str]:
    key, is_aten = _normalise(op)
    keys = [key]
    if not is_aten and "." in key:
        # An overload written without the aten prefix ("index_add.default").
        keys.append(key.split(".", 1)[0])
    for candidate in list(keys):
        # In-place spelling of an op the table only lists out of place; never cut a dunder.
        if candidate.endswith("_") and not candidate.endswith("__"):
            keys.append(candidate[:-1])
    return keys


def _lookup(op: str) -> tuple[OpInfo, ...]:
    index = _table().index
    for key in _candidate_keys(op):
        if key in index:
            return index[key]
    return ()


def _device_type(device: object) -> str:
    if not isinstance(device, str):
        raise TypeError(
            f"device must be a str such as 'cpu' or 'cuda:0', or None, got {_describe(device)} "
            "(for a torch.device pass str(device))"
        )
    device_type = device.strip().lower().split(":", 1)[0]
    if not device_type:
        raise ValueError(f"device must name a device such as 'cpu' or 'cuda:0', got {device!r}")
    return device_type


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _field(label: str, value: str) -> str:
    return textwrap.fill(
        value,
        width=_WRAP,
        initial_indent=f"  {label}: ",
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )
