"""NumPy: the legacy global generator (the ``RandomState`` behind ``np.random.rand`` & co.), and
``numpy.random.Generator`` / ``RandomState`` objects registered with :func:`seedlock.register`.

``np.random.Generator`` objects have no global state; seedlock hands them out per named stream
(:func:`seedlock.numpy_rng`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from seedlock.backends.base import BaseBackend, low_bits
from seedlock.backends.checks import (
    blob_problem,
    fields_problem,
    float_problem,
    int_problem,
    mt19937_problem,
    type_name,
)

__all__ = ["NumpyBackend"]

_KEY = struct.Struct("<624I")
_LEGACY_FIELDS = frozenset(("bit_generator", "key", "pos", "has_gauss", "gauss"))
_U128 = 2**128 - 1
#: The range of every int field of NumPy's bit generator states, by field name.
_INT_RANGES = {
    "pos": (0, 624),  # MT19937: a larger one reads (or crashes on) memory past the key
    "has_gauss": (0, 1),
    "has_uint32": (0, 1),
    "uinteger": (0, 2**32 - 1),
    "buffer_pos": (0, 4),  # Philox: its buffer holds 4 words
    "state": (0, _U128),  # PCG64, PCG64DXSM
    "inc": (0, _U128),
}
#: Nesting of a bit generator state: {"state": {"key": {array}}} plus the array's own fields.
_MAX_DEPTH = 4


_SCALARS = (int, float, str)


def _to_plain(value: Any) -> Any:
    """A bit generator's state dict as plain data: arrays become {dtype, shape, data}."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if hasattr(value, "dtype") and hasattr(value, "tobytes"):
        if value.ndim == 0:
            return value.item()
        arr = value.astype(value.dtype.newbyteorder("<"))
        return {"__array__": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    return value


def _from_plain(np: Any, value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, dict):
        if "__array__" in value:
            arr = np.frombuffer(value["data"], dtype=np.dtype(value["__array__"]))
            return arr.reshape(value["shape"]).copy()
        return {k: _from_plain(np, v) for k, v in value.items()}
    return value


def _rules(template: Any) -> list[tuple[tuple[str, ...], str, Any]]:
    """A generator's plain state, turned into the checks that any state of its shape must pass:
    ``(path, kind, spec)`` in an order where a folder comes before what it holds."""
    rules: list[tuple[tuple[str, ...], str, Any]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict) and "__array__" in node:
            spec = (frozenset(node), node["__array__"], node["shape"], len(node["data"]))
            rules.append((path, "array", spec))
        elif isinstance(node, dict):
            rules.append((path, "dict", frozenset(node)))
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, str):
            rules.append((path, "str", node))
        elif isinstance(node, float):
            rules.append((path, "float", None))
        else:
            low, high = _INT_RANGES.get(path[-1], (0, _U128))
            rules.append((path, "int", (low, high, path[-1] == "inc")))

    walk(template, ())
    return rules


def _passes(state: Any, rules: list[tuple[tuple[str, ...], str, Any]]) -> bool:
    """Does ``state`` pass every rule? (The fast answer; :func:`_match` says why not.)"""
    for path, kind, spec in rules:
        node = state
        for key in path:
            node = node[key]  # its folder passed its "dict" rule already
        if kind == "dict":
            if type(node) is not dict or node.keys() != spec:
                return False
        elif kind == "int":
            low, high, odd = spec
            if type(node) is not int or not low <= node <= high or (odd and not node & 1):
                return False
        elif kind == "float":
            if type(node) is not float or not math.isfinite(node):
                return False
        elif kind == "str":
            if node != spec:
                return False
        else:
            keys, dtype, shape, size = spec
            if type(node) is not dict or node.keys() != keys or node["__array__"] != dtype:
                return False
            data = node["data"]
            if node["shape"] != shape or type(data) is not bytes or len(data) != size:
                return False
    return True


def _match(saved: Any, live: Any, label: str, depth: int = 0) -> list[str]:
    """Why ``saved`` (plain data from a file) is not a state of the same shape as ``live`` (the
    plain state of the generator it is for), with every int, float and array checked."""
    if depth > _MAX_DEPTH:
        return [f"{label} is nested too deeply"]
    if isinstance(live, dict) and "__array__" in live:
        problems = fields_problem(saved, live, label)
        if problems:
            return problems
        if saved["__array__"] != live["__array__"] or saved["shape"] != live["shape"]:
            return [f"{label} must be a {live['__array__']} array of shape {live['shape']}"]
        return blob_problem(f"{label} data", saved["data"], len(live["data"]))
    if isinstance(live, dict):
        problems = fields_problem(saved, live, label)
        if problems:
            return problems
        for key, value in live.items():
            problems += _match(saved[key], value, f"{label}.{key}", depth + 1)
        return problems
    field = label.rsplit(".", 1)[-1]
    if isinstance(live, str):
        return [] if saved == live else [f"{label} must be {live!r}"]
    if isinstance(live, float):
        return float_problem(label, saved)
    if isinstance(live, int):
        low, high = _INT_RANGES.get(field, (0, _U128))
        problems = int_problem(label, saved, low, high)
        if field == "inc" and not problems and saved % 2 == 0:
            problems.append(f"{label} must be odd (a PCG increment always is)")
        return problems
    return [f"{label} has an unsupported type {type_name(saved)}"]


class NumpyBackend(BaseBackend):
    name: ClassVar[str] = "numpy"
    module: ClassVar[str] = "numpy"
    # np.random.seed accepts a scalar only below 2**32.
    seed_bits: ClassVar[int] = 32
    # restore() is atomic (the key is tried on a scratch bit generator first) and a snapshot,
    # np.random.get_state(), is the costliest of all backends (bench_state.py).
    restore_last: ClassVar[bool] = True

    _scratch: Any = None
    _templates: dict[tuple[type, type], tuple[Any, list[tuple[tuple[str, ...], str, Any]]]]

    def __init__(self) -> None:
        self._templates = {}

    def seed(self, value: int) -> str:
        self._require_loaded().random.seed(value)
        return "np.random (legacy global RandomState)"

    def seeder(self) -> Callable[[int], object]:
        return self._require_loaded().random.seed  # type: ignore[no-any-return]

    def snapshot(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        random = self._require_loaded().random
        return random.get_state, random.set_state

    def capture(self) -> dict[str, Any]:
        st = self._require_loaded().random.get_state(legacy=False)
        return {
            "bit_generator": st["bit_generator"],
            "key": st["state"]["key"].astype("<u4").tobytes(),
            "pos": int(st["state"]["pos"]),
            "has_gauss": int(st["has_gauss"]),
            "gauss": float(st["gauss"]),
        }

    def check_state(self, state: dict[str, Any], devices: str) -> list[str]:
        # Pure Python: a state for NumPy is checked before NumPy is imported too.
        problems = fields_problem(state, _LEGACY_FIELDS)
        if problems:
            return problems
        if state["bit_generator"] != "MT19937":
            problems.append("bit_generator must be 'MT19937' (the legacy global generator)")
        key = blob_problem("key", state["key"], _KEY.size)
        problems += key or mt19937_problem("key", state["key"])
        problems += int_problem("pos", state["pos"], 0, 624)
        problems += int_problem("has_gauss", state["has_gauss"], 0, 1)
        problems += float_problem("gauss", state["gauss"])
        return problems

    def restore(self, state: dict[str, Any]) -> None:
        np = self._require_loaded()
        # A tuple of ints is what NumPy's key setter reads fastest (it indexes the key item by
        # item: an array costs it a NumPy scalar per word).
        mt = {"key": _KEY.unpack(state["key"]), "pos": state["pos"]}
        # set_state changes the cached Gaussian *before* its bit generator checks the key, so
        # the key is tried on a scratch bit generator first: then the global one cannot half
        # change, and the restore is atomic (see ``atomic_restore``).
        if self._scratch is None:
            self._scratch = np.random.MT19937(0)
        self._scratch.state = {"bit_generator": "MT19937", "state": mt}
        np.random.set_state(
            {
                "bit_generator": "MT19937",
                "state": mt,
                "has_gauss": state["has_gauss"],
                "gauss": state["gauss"],
            }
        )

    def owns(self, obj: object) -> bool:
        np = self._loaded_module()
        return np is not None and isinstance(obj, (np.random.Generator, np.random.RandomState))

    def _loaded_module(self) -> Any:
        return self._require_loaded() if self.loaded() else None

    def _raw_state(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, self._require_loaded().random.RandomState):
            # RandomState keeps a cached Gaussian beside its bit generator's state.
            state: dict[str, Any] = obj.get_state(legacy=False)
            return state
        bit_state: dict[str, Any] = obj.bit_generator.state
        return bit_state

    def capture_generator(self, obj: Any) -> dict[str, Any]:
        state: dict[str, Any] = _to_plain(self._raw_state(obj))
        return state

    def check_generator(self, obj: Any, state: dict[str, Any]) -> list[str]:
        # The expected layout is the generator's own state; one per (object type, bit
        # generator type) is kept, since only the values differ between generators.
        key = (type(obj), type(obj._bit_generator))  # Generator and RandomState both have it
        known = self._templates.get(key)
        if known is None:
            template = self.capture_generator(obj)
            known = self._templates[key] = (template, _rules(template))
        template, rules = known
        if _passes(state, rules):
            if template["bit_generator"] != "MT19937":
                return []
            return mt19937_problem("state.state.key", state["state"]["key"]["data"])
        if isinstance(state, dict) and state.get("bit_generator") != template["bit_generator"]:
            saved = state.get("bit_generator")
            shown = repr(saved[:40]) if isinstance(saved, str) else type_name(saved)
            return [f"bit generator is {template['bit_generator']}, the state is for {shown}"]
        problems = _match(state, template, "state")
        if not problems and template["bit_generator"] == "MT19937":
            problems += mt19937_problem("state.state.key", state["state"]["key"]["data"])
        return problems

    def snapshot_generator(self, obj: Any) -> Callable[[], object]:
        if isinstance(obj, self._require_loaded().random.RandomState):
            return partial(obj.set_state, obj.get_state(legacy=False))
        bit_generator = obj.bit_generator
        return partial(setattr, bit_generator, "state", bit_generator.state)

    def restore_generator(self, obj: Any, state: dict[str, Any]) -> None:
        np = self._require_loaded()
        if isinstance(obj, np.random.RandomState):
            obj.set_state(_from_plain(np, state))
            return
        known = self._templates.get((type(obj), type(obj._bit_generator)))
        arrays = known is None or any(kind == "array" for _, kind, _ in known[1])
        # A state without arrays (PCG64's: ints) is what the setter reads as it is.
        obj.bit_generator.state = _from_plain(np, state) if arrays else state

    def seed_generator(self, obj: Any, material: int) -> None:
        np = self._require_loaded()
        if isinstance(obj, np.random.RandomState):
            obj.seed(low_bits(material, 32))
        else:
            # A fresh bit generator of the same type, seeded with 128 bits; its state is copied
            # in so that every reference to `obj` sees the new stream.
            obj.bit_generator.state = type(obj.bit_generator)(low_bits(material, 128)).state
