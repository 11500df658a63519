"""Mutations of a plain RNG state (``RNGState.to_plain()``), for the fuzz tests of restore.

Imports nothing but the standard library: the fuzz also runs in an interpreter where NumPy and
torch are not imported yet.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import random
from typing import Any

MAGIC = b"SEEDLOCK-RNG-STATE\n"

#: Values that sit on the edges of what some field accepts.
EDGE_VALUES: list[Any] = [
    0, 1, -1, 2, 3, 4, 5, 623, 624, 625, 9999, 10**6, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
    2**63 - 1, 2**63, 2**64, 2**127, 2**128 - 1, 2**128, -(2**63), -(2**128),
    True, False, None, 0.0, -0.0, 0.5, math.nan, math.inf, -math.inf, 1e308,
    "", "x", "MT19937", "PCG64", "Philox", "cpu", "cuda:0", "<u4", "<u8", "|u1",
    [], {}, [1, 2], {"a": 1}, [[]], {"$bytes": "AAAA"}, {"__array__": "<u4"},
]  # fmt: skip


_WORDS = [0, 1, 2, 3, 623, 624, 625, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a nested structure of dicts and lists, the root included (not below
    twelve levels: a real state is six deep, deeper is what an earlier mutation nested)."""
    found = [path]
    if len(path) >= 12:
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _get(root: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        root = root[key]
    return root


def _set(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _mutate_bytes(blob: bytes, rng: random.Random) -> bytes:
    b = bytearray(blob)
    choice = rng.randrange(7)
    if choice == 0 and b:
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif choice == 1:
        del b[rng.randrange(len(b) + 1) :]
    elif choice == 2:
        b += rng.randbytes(rng.randint(1, 16))
    elif choice == 3 and b:
        start = rng.randrange(len(b))
        b[start : start + rng.randint(1, 64)] = bytes(min(64, len(b) - start))
    elif choice == 4 and len(b) >= 8:
        # A whole little-endian word: the header fields of torch's state, the MT position.
        at = rng.randrange(0, len(b) - 7, 4)
        width = rng.choice((4, 8))
        b[at : at + width] = rng.choice(_WORDS).to_bytes(8, "little")[:width]
    elif choice == 5:
        b = bytearray(len(b))
    else:
        b[-4:] = rng.randbytes(4)
    return bytes(b)


def mutate(plain: dict[str, Any], rng: random.Random) -> Any:
    """A copy of ``plain`` with one to three random mutations."""
    state: Any = copy.deepcopy(plain)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(state)
        path = rng.choice(paths)
        target = _get(state, path)
        choice = rng.randrange(10)
        if isinstance(target, bytes) and choice < 5:
            state = _set(state, path, _mutate_bytes(target, rng))
        elif type(target) is int and choice < 3:
            state = _set(state, path, target + rng.choice((-2, -1, 1, 2, 2**32, -(2**32))))
        elif isinstance(target, dict) and target and choice < 3:
            del target[rng.choice(list(target))]
        elif isinstance(target, dict) and choice < 5:
            target[rng.choice(("extra", "$bytes", "__array__", "state", "key"))] = rng.choice(
                EDGE_VALUES
            )
        elif isinstance(target, list) and choice < 4:
            if target and rng.random() < 0.5:
                target.pop()
            else:
                target.append(copy.deepcopy(target[0]) if target else b"")
        elif choice == 9 and path:
            # Deeper than any state; the recursion limit itself is tested on its own.
            deep: Any = target
            for _ in range(rng.choice((17, 40, 200))):
                deep = [deep]
            state = _set(state, path, deep)
        elif choice == 8:
            state = _set(state, path, [target] if rng.random() < 0.5 else {"x": target})
        else:
            state = _set(state, path, copy.deepcopy(rng.choice(EDGE_VALUES)))
    return state


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def state_file(plain: Any) -> bytes:
    """``plain`` as a state file with a *valid* header and checksum (what an attacker who knows
    the format writes): only the values can be refused."""
    payload = json.dumps(_encode(plain), separators=(",", ":")).encode()
    prefix = b"seedlock-rng-state format=2 length=%d\n" % len(payload)
    digest = hashlib.sha256(prefix + payload).hexdigest()
    header = json.dumps({"format": 2, "length": len(payload), "sha256": digest})
    return MAGIC + header.encode() + b"\n" + payload


def damaged_file(data: bytes, rng: random.Random) -> bytes:
    """``data`` with bytes damaged and the header left as it was."""
    b = bytearray(data)
    choice = rng.randrange(3)
    if choice == 0:
        return bytes(b[: rng.randrange(len(b))])
    if choice == 1:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    start = rng.randrange(len(b))
    b[start : start + rng.randint(1, 64)] = rng.randbytes(rng.randint(0, 64))
    return bytes(b)
