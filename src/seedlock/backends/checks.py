"""Value checks for saved generator states, shared by the backends' ``check_state`` and
``check_generator``.

A state that comes back from a file or a checkpoint is hostile until checked: the libraries
accept much that they never produce (an all-zero Mersenne Twister that draws 0.0 forever, a NaN
cached Gaussian, an index past the end of the key that reads foreign memory) and refuse other
values only after the generators before them were already changed. So every field is checked
here, in pure Python and without importing the library, for the values the library itself
writes: exact types (``True`` is not an int), ranges, sizes, finiteness.

Each function returns a list of problems in words (empty when the value is fine), so that a
restore can report every problem at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = [
    "blob_problem",
    "fields_problem",
    "float_problem",
    "int_problem",
    "mt19937_problem",
    "type_name",
]

_MT_WORDS = 624


def type_name(value: object) -> str:
    """A value's type in words, for messages (never its repr: it may be huge or hostile)."""
    return "bool" if isinstance(value, bool) else type(value).__name__


def fields_problem(state: object, expected: Iterable[str], label: str = "state") -> list[str]:
    """``state`` must be a dict with exactly the ``expected`` keys (a frozenset is fastest)."""
    want = expected if type(expected) is frozenset else frozenset(expected)
    if type(state) is dict and state.keys() == want:
        return []
    if not isinstance(state, Mapping):
        return [f"{label} must be a dict, got {type_name(state)}"]
    missing = sorted(want - set(state))
    extra = sorted(str(k) for k in set(state) - want)
    problems = []
    if missing:
        problems.append(f"{label} lacks {', '.join(missing)}")
    if extra:
        shown = ", ".join(repr(k[:40]) for k in extra[:5])
        problems.append(f"{label} has unexpected field(s) {shown}")
    return problems


def blob_problem(label: str, value: object, size: int | None = None) -> list[str]:
    """A state field that must be ``bytes`` (of ``size`` bytes, when given)."""
    if not isinstance(value, bytes):
        return [f"{label} must be bytes, got {type_name(value)}"]
    if size is not None and len(value) != size:
        return [f"{label} has {len(value)} bytes, expected {size}"]
    return []


def int_problem(label: str, value: object, low: int, high: int) -> list[str]:
    """A state field that must be an int in ``[low, high]`` (a bool is refused)."""
    if type(value) is not int:
        return [f"{label} must be an int in [{low}, {high}], got {type_name(value)}"]
    if not low <= value <= high:
        shown = value if value.bit_length() <= 256 else f"a {value.bit_length()}-bit int"
        return [f"{label} must be an int in [{low}, {high}], got {shown}"]
    return []


def float_problem(label: str, value: object, *, optional: bool = False) -> list[str]:
    """A state field that must be a finite float (or ``None`` when ``optional``)."""
    if value is None and optional:
        return []
    if type(value) is not float:
        expected = "a finite float or None" if optional else "a finite float"
        return [f"{label} must be {expected}, got {type_name(value)}"]
    if not math.isfinite(value):
        return [f"{label} must be finite, got {value}"]
    return []


def mt19937_problem(label: str, words: bytes, stride: int = 4) -> list[str]:
    """A Mersenne Twister key of 624 little-endian 32-bit words, one every ``stride`` bytes,
    must not be the degenerate all-zero state (only the top bit of word 0 and words 1..623
    count), from which every draw is 0."""
    if len(words) < _MT_WORDS * stride:
        return [f"{label} is too short for a Mersenne Twister key"]
    if words[3] & 0x80 or any(words[stride : stride + 4]):
        return []  # the usual case, decided without reading the whole key
    if not any(words[i : i + 4].count(0) < 4 for i in range(stride, _MT_WORDS * stride, stride)):
        return [f"{label} is the all-zero Mersenne Twister state, which draws only zeros"]
    return []
