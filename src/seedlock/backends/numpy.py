"""NumPy: the legacy global generator (the ``RandomState`` behind ``np.random.rand`` & co.), and
``numpy.random.Generator`` / ``RandomState`` objects registered with :func:`seedlock.register`.

``np.random.Generator`` objects have no global state; seedlock hands them out per named stream
(:func:`seedlock.numpy_rng`).
"""

from __future__ import annotations

import math
import struct
import sys
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
_ORDER = sys.byteorder
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


_Rules = list[tuple[tuple[str, ...], str, Any]]


def _rules(template: Any) -> _Rules:
    """A generator's plain state, turned into the checks that any state of its shape must pass:
    ``(path, kind, spec)``, a folder before what it holds."""
    rules: _Rules = []

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


def _rule_problems(state: Any, rules: _Rules) -> list[str]:
    """Why ``state`` fails its rules, in words (empty when it passes: no message is built
    then). What a failing folder holds is not looked at."""
    problems: list[str] = []
    broken: list[tuple[str, ...]] = []
    for path, kind, spec in rules:
        if broken and any(path[: len(b)] == b for b in broken):
            continue
        node = state
        for key in path:
            node = node[key]
        if kind == "dict":
            if type(node) is not dict or node.keys() != spec:
                problems += fields_problem(node, spec, _label(path))
                broken.append(path)
        elif kind == "int":
            low, high, odd = spec
            if type(node) is not int or not low <= node <= high:
                problems += int_problem(_label(path), node, low, high)
            elif odd and not node & 1:
                problems.append(f"{_label(path)} must be odd (a PCG increment always is)")
        elif kind == "float":
            if type(node) is not float or not math.isfinite(node):
                problems += float_problem(_label(path), node)
        elif kind == "str":
            if node != spec:
                problems.append(f"{_label(path)} must be {spec!r}")
        else:
            keys, dtype, shape, size = spec
            if type(node) is not dict or node.keys() != keys:
                problems += fields_problem(node, keys, _label(path))
            elif node["__array__"] != dtype or node["shape"] != shape:
                problems.append(f"{_label(path)} must be a {dtype} array of shape {shape}")
            else:
                problems += blob_problem(f"{_label(path)} data", node["data"], size)
    return problems


def _label(path: tuple[str, ...]) -> str:
    return ".".join(("state", *path))


class NumpyBackend(BaseBackend):
    name: ClassVar[str] = "numpy"
    module: ClassVar[str] = "numpy"
    # np.random.seed accepts a scalar only below 2**32.
    seed_bits: ClassVar[int] = 32
    # restore() is atomic (the key is tried on a scratch bit generator first) and a snapshot,
    # np.random.get_state(), is the costliest of all backends (bench_state.py).
    restore_last: ClassVar[bool] = True

    _scratch: Any = None
    # (object type, bit generator type) -> (its bit generator's name, its rules, any arrays?)
    _templates: dict[tuple[type, type], tuple[str, _Rules, bool]]

    def __init__(self) -> None:
        self._templates = {}

    def seed(self, value: int) -> str:
        self._require_loaded().random.seed(value)
        return "np.random (legacy global RandomState)"

    def seeder(self) -> Callable[[int], object]:
        return self._require_loaded().random.seed  # type: ignore[no-any-return]

    def snapshot(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        return _legacy_snapshot(self._require_loaded())

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
        # change, and the restore is atomic (see ``restore_last``).
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
        kind, rules, _ = self._layout(obj)
        if isinstance(state, dict) and state.get("bit_generator") != kind:
            saved = state.get("bit_generator")
            shown = repr(saved[:40]) if isinstance(saved, str) else type_name(saved)
            return [f"bit generator is {kind}, the state is for {shown}"]
        problems = _rule_problems(state, rules)
        if not problems and kind == "MT19937":
            problems += mt19937_problem("state.state.key", state["state"]["key"]["data"])
        return problems

    def _layout(self, obj: Any) -> tuple[str, _Rules, bool]:
        """The layout of ``obj``'s state, taken from its own state once per (object type, bit
        generator type): only the values differ between generators of one kind."""
        key = (type(obj), type(obj._bit_generator))  # Generator and RandomState both have it
        layout = self._templates.get(key)
        if layout is None:
            template = self.capture_generator(obj)
            rules = _rules(template)
            arrays = any(kind == "array" for _, kind, _ in rules)
            layout = self._templates[key] = (template["bit_generator"], rules, arrays)
        return layout

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
        # A state without arrays (PCG64's: ints) is what the setter reads as it is.
        arrays = self._layout(obj)[2]
        obj.bit_generator.state = _from_plain(np, state) if arrays else state

    def seed_generator(self, obj: Any, material: int) -> None:
        np = self._require_loaded()
        if isinstance(obj, np.random.RandomState):
            obj.seed(low_bits(material, 32))
        else:
            # A fresh bit generator of the same type, seeded with 128 bits; its state is copied
            # in so that every reference to `obj` sees the new stream.
            obj.bit_generator.state = type(obj.bit_generator)(low_bits(material, 128)).state


_MT_BYTES = 624 * 4 + 4  # NumPy's mt19937_state: uint32 key[624], then int pos
_NATIVE_KEY = struct.Struct("=624I")  # that key, in the machine's byte order


def _legacy_snapshot(np: Any) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """``(save, load)`` for the legacy global ``RandomState``, exact and cheap.

    ``np.random.get_state`` / ``set_state`` copy the 624 key words one at a time (~30 us each
    way). Here the bit generator's C state (key and position) is copied whole, through a view
    of the memory at its ``ctypes.state_address``. What that misses is the ``RandomState``'s
    kept normal (``has_gauss`` / ``gauss``), read by drawing it: a draw returns a kept normal
    without touching the key, and moves the key when none is kept. A kept normal (after an odd
    count of legacy normals) takes the exact ``set_state`` path. When the global generator is
    not an MT19937 (``np.random.set_bit_generator``), or its C state does not read back as
    ``get_state`` reports it, ``get_state`` / ``set_state`` are used as they are.
    """
    random = np.random
    # legacy=False: the same dict, without the warning for a bit generator other than MT19937.
    get_state, set_state = partial(random.get_state, legacy=False), random.set_state
    rand = getattr(random.mtrand, "_rand", None)
    mt19937 = random.MT19937
    if rand is None or type(rand._bit_generator) is not mt19937:
        return get_state, set_state
    import ctypes  # only here: a view of the C state is what makes this snapshot cheap

    def view(bit_generator: Any) -> memoryview:
        """The bytes of ``bit_generator``'s C state, writable (it lives as long as the view's
        owner, which ``views`` keeps)."""
        if views[0] is not bit_generator:
            address = bit_generator.ctypes.state_address
            views[:] = [
                bit_generator,
                memoryview((ctypes.c_ubyte * _MT_BYTES).from_address(address)).cast("B"),
            ]
        return views[1]  # type: ignore[no-any-return]

    views: list[Any] = [None, None]
    state = get_state()["state"]
    words = state["key"].astype("=u4").tobytes() + int(state["pos"]).to_bytes(4, _ORDER)
    if view(rand._bit_generator).tobytes() != words:
        return get_state, set_state
    normal = rand.standard_normal

    def drop_normal(memory: memoryview, words: bytes) -> float | None:
        """Take the kept normal of a generator whose C state is ``words``, and return it; with
        none kept, return None and leave the key moved by the draw (the caller puts it back)."""
        drawn = normal()
        if memory.tobytes() == words:  # the key did not move: the normal was a kept one
            return float(drawn)
        normal()  # the draw made a pair and kept one: take that one too
        return None

    def exact(words: bytes, gauss: float | None) -> None:
        # A tuple of ints: the key setter reads it a few times faster than an array (see restore).
        key = _NATIVE_KEY.unpack_from(words)
        set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": key, "pos": int.from_bytes(words[-4:], _ORDER, signed=True)},
                "has_gauss": int(gauss is not None),
                "gauss": 0.0 if gauss is None else gauss,
            }
        )

    def save() -> Any:
        bit_generator = rand._bit_generator
        if type(bit_generator) is not mt19937:
            return None, get_state(), None
        memory = view(bit_generator)
        words = memory.tobytes()
        gauss = drop_normal(memory, words)
        if gauss is None:
            with bit_generator.lock:
                memory[:] = words
        else:
            exact(words, gauss)  # drawing it took it: put it back
        return bit_generator, words, gauss

    def load(saved: Any) -> None:
        bit_generator, words, gauss = saved
        if bit_generator is None:
            set_state(words)
        elif gauss is not None or rand._bit_generator is not bit_generator:
            exact(words, gauss)
        else:
            memory = view(bit_generator)
            drop_normal(memory, memory.tobytes())
            with bit_generator.lock:
                memory[:] = words

    return save, load
