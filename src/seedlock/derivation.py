"""Derive every seed seedlock uses from the root seed and a key path: the stability contract.

The guide: ``docs/seeding.md``.

Everything in seedlock that is not a *classic global* generator (named streams, DataLoader
samples, workers, ranks, tests) gets its seed from :func:`derive`, a pure function of the root
seed and a *key path*::

    derive("augment")              # the "augment" stream
    derive("data", epoch, index)   # one sample of one epoch
    derive("augment", root=1234)   # the same stream under another root

What is hashed
--------------
The message is ``b"seedlock/derive/v1"``, then the number of items, then every key in order
and the root last, each item encoded as one type byte (``i`` int, ``s`` str, ``b`` bytes), an
8-byte little-endian length and the payload: an int ``n`` as ``n.bit_length() // 8 + 1`` bytes of
little-endian two's complement (so ``-1`` and ``255`` differ; for ``-128``, ``-32768``, ... that
is one byte more than the minimal encoding), str as UTF-8, bytes as they are. The digest is 32
bytes of BLAKE2b (``hashlib.blake2b(digest_size=32)``); the result is its first ``bits`` bits,
read as a little-endian unsigned integer.

Because every item carries its type and length, distinct key paths are distinct messages: there
is no way for ``("ab",)`` to meet ``("a", "b")``, ``1`` to meet ``"1"`` or a 64-bit root to meet
two 32-bit words (the ambiguity NumPy warns about when it advises putting the varying id before
the root seed). Python's ``hash()`` is never used: it is salted per process.

What is guaranteed
------------------
* **Stability.** ``derive(*keys, root=r, bits=n)`` returns the same value on every platform,
  Python version and seedlock release. The golden vectors in ``tests/test_derivation.py`` are
  the specification; a change that moves one is a breaking change and needs a new ``v`` tag.
* **Independence by name.** Adding, removing or reordering draws in one stream never shifts
  another stream: streams are addressed by name, not by call order.
* **Collisions.** Two different key paths get the same ``n``-bit value with probability
  ``2**-n`` (BLAKE2b is a cryptographic hash). For 64-bit values that is about one pair in
  ``10**19``; with ``bits=32`` (what torch's CPU generator and NumPy's legacy global actually keep)
  a collision among a million streams is likely, which is why the generators with a wide state
  (NumPy ``Generator``, ``random.Random``) are seeded with 128 bits.

What is unsafe, and why we never do it
--------------------------------------
``seed + rank`` or ``seed + worker_id``: seed 1 on rank 0 is seed 0 on rank 1, so two "different"
runs share streams. Truncating a 64-bit seed to 32 bits (what ``torch.manual_seed`` does on the
CPU): seeds that differ only in the high bits collide. Here every width is *derived* from the
digest, never cut from another seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# hashlib.blake2b is this class; importing hashlib also loads OpenSSL, which `import seedlock`
# does not need (benchmarks/bench_seeding.py measures the import).
try:
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover - a Python built without the _blake2 module
    from hashlib import blake2b as _blake2b

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ENV_VAR",
    "Deriver",
    "Key",
    "Seed",
    "check_seed",
    "classic_seed",
    "derive",
    "format_seed",
    "fresh_seed",
    "get_root",
    "parse_seed",
    "pythonhashseed_for",
    "restore_root_state",
    "root_state",
    "set_root",
]

#: What a seed or a key may be.
Seed = int | str | bytes
Key = int | str | bytes

#: The environment variable through which child processes, DataLoader workers and distributed
#: ranks find the root seed (set by :func:`seedlock.seed_everything` and ``seedlock run``).
ENV_VAR = "SEEDLOCK_SEED"

_TAG = b"seedlock/derive/v1"
_MAX_BITS = 256
_root: Seed | None = None


def check_seed(seed: object, what: str = "seed") -> Seed:
    """Return ``seed`` if it is a valid seed or key, else raise ``TypeError``.

    Any ``int`` (negative and beyond 64 bits included), ``str`` and ``bytes`` are accepted, and
    integer scalars of NumPy or torch as their ``int``. ``bool`` (and boolean scalars) is refused
    although it is an ``int`` subclass: ``seed_everything(True)`` is almost always a mistake.
    ``float`` is refused because ``0.5`` and ``0.50000001`` would need a rule nobody could
    guess. A ``str`` holding a lone surrogate, which has no UTF-8 encoding to hash, raises
    ``ValueError``.
    """
    if isinstance(seed, bool):
        raise TypeError(
            f"{what} must be an int, str or bytes, got bool {seed!r} "
            f"(use {int(seed)} if you meant the number)"
        )
    if isinstance(seed, str):
        try:
            seed.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"{what} must be text that UTF-8 can encode; this str holds a lone surrogate "
                "(pass bytes for binary seeds)"
            ) from None
        return seed
    if isinstance(seed, (int, bytes)):
        return seed
    if isinstance(seed, float):
        hint = f"use {int(seed)} if you meant {int(seed)}" if seed.is_integer() else "round it"
        raise TypeError(f"{what} must be an int, str or bytes, got float {seed!r} ({hint})")
    if isinstance(seed, (bytearray, memoryview)):
        return bytes(seed)
    # NumPy / torch integer scalars are common (a seed read from an array): accept any object
    # that is exactly an integer through __index__ — but not a boolean one, as for bool itself.
    index = getattr(type(seed), "__index__", None)
    if index is not None:
        if str(getattr(seed, "dtype", "")) in ("bool", "torch.bool"):
            raise TypeError(
                f"{what} must be an int, str or bytes, got a boolean {type(seed).__name__} "
                "(use 0 or 1 if you meant the number)"
            )
        try:
            return int(index(seed))
        except (TypeError, ValueError, RuntimeError) as exc:  # e.g. a tensor of many elements
            raise TypeError(
                f"{what} must be an int, str or bytes, got {type(seed).__name__} ({exc})"
            ) from None
    raise TypeError(f"{what} must be an int, str or bytes, got {type(seed).__name__} {seed!r}")


def _encode(item: Key) -> bytes:
    if isinstance(item, int):
        payload = item.to_bytes(item.bit_length() // 8 + 1, "little", signed=True)
        tag = b"i"
    elif isinstance(item, str):
        payload, tag = item.encode("utf-8"), b"s"
    else:
        payload, tag = item, b"b"
    return tag + len(payload).to_bytes(8, "little") + payload


def _int_starts(state: Any) -> list[Any]:
    """``state``, a BLAKE2b object, continued with what ``_encode`` puts before an int's bytes
    (its type and length), one per length 0-9 (an int in ``[0, 2**64)`` has 1-9 bytes): then
    hashing ``n.to_bytes(n.bit_length() // 8 + 1, "little")`` onto item ``[that length]``
    hashes the int key ``n`` (the per-sample seeding's fast path)."""
    starts = []
    for length in range(10):
        start = state.copy()
        start.update(b"i" + length.to_bytes(8, "little"))
        starts.append(start)
    return starts


def derive(*keys: Key, root: Seed | None = None, bits: int = 64) -> int:
    """Return the ``bits``-bit seed of the stream named by ``keys`` under ``root``.

    Parameters
    ----------
    *keys
        The key path that names the stream, in order: ints (any size, negative included), str
        or bytes (``"data", 3, 17``). May be empty.
    root
        The root seed (int, str or bytes); default ``None``: the root seed of the process
        (:func:`get_root`).
    bits
        The width of the result, from 1 to 256; default 64.

    Returns
    -------
    int
        A value in ``[0, 2**bits)``: a pure function of ``(keys, root, bits)``, stable across
        machines and releases (see the module docstring). A narrower value is the low bits of a
        wider one of the same stream.

    Raises
    ------
    TypeError
        A key or the root is not an int, str or bytes (``bool`` and ``float`` are refused).
    ValueError
        ``bits`` is outside ``[1, 256]``, or a str holds a lone surrogate (no UTF-8 encoding).
    LookupError
        ``root`` is ``None`` and the process has no root seed (see :func:`get_root`).

    Examples
    --------
    >>> derive("augment", root=0)
    13451230188544239583
    >>> derive("data", 3, 17, root=0, bits=32)
    4179378542
    """
    _check_bits(bits)
    h = _blake2b(_TAG, digest_size=32)
    h.update((len(keys) + 1).to_bytes(8, "little"))
    for key in keys:
        h.update(_encode(check_seed(key, "key")))
    h.update(_encode(check_seed(get_root() if root is None else root, "root")))
    return int.from_bytes(h.digest(), "little") & ((1 << bits) - 1)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= _MAX_BITS or isinstance(bits, bool):
        raise ValueError(f"bits must be between 1 and {_MAX_BITS}, got {bits!r}")


class Deriver:
    """``derive(*head, *middle, *suffix, root=root, bits=bits)`` for every suffix, with ``head``,
    the suffixes and the root fixed once and ``middle`` given per call: the per-sample seeding
    hot path (``head=("data",)``, ``middle=(epoch, index)``, one suffix per generator).

    Everything that does not change between calls is encoded and hashed up front, so a call
    hashes only the middle keys and finishes one digest per suffix.

    >>> Deriver(("data",), 2, [("torch",), ("numpy",)], root=0)(3, 17) == [
    ...     derive("data", 3, 17, "torch", root=0), derive("data", 3, 17, "numpy", root=0)]
    True
    """

    __slots__ = ("_count", "_groups", "_mask", "_width")

    def __init__(
        self,
        head: Sequence[Key],
        width: int,
        suffixes: Sequence[Sequence[Key]],
        *,
        root: Seed | None = None,
        bits: int = 64,
    ) -> None:
        _check_bits(bits)
        root_item = _encode(check_seed(get_root() if root is None else root, "root"))
        encoded_head = b"".join(_encode(check_seed(key, "key")) for key in head)
        # The item count is hashed first, so suffixes of one length share a base.
        groups: dict[int, tuple[Any, list[tuple[int, bytes]]]] = {}
        for position, suffix in enumerate(suffixes):
            group = groups.get(len(suffix))
            if group is None:
                base = _blake2b(_TAG, digest_size=32)
                base.update((len(head) + width + len(suffix) + 1).to_bytes(8, "little"))
                base.update(encoded_head)
                group = groups[len(suffix)] = (base, [])
            tail = b"".join(_encode(check_seed(key, "key")) for key in suffix) + root_item
            group[1].append((position, tail))
        self._groups = list(groups.values())
        self._count = len(suffixes)
        self._width = width
        self._mask = (1 << bits) - 1

    def __call__(self, *middle: Key) -> list[int]:
        if len(middle) != self._width:
            raise TypeError(f"expected {self._width} middle key(s), got {len(middle)}")
        encoded = b"".join(
            _encode(key if type(key) is int else check_seed(key, "key")) for key in middle
        )
        mask = self._mask
        values = [0] * self._count
        for base, tails in self._groups:
            h = base.copy()
            h.update(encoded)
            for position, tail in tails:
                final = h.copy()
                final.update(tail)
                values[position] = int.from_bytes(final.digest(), "little") & mask
        return values


_CLASSIC_LIMIT = 2**32


def classic_seed(root: Seed) -> int:
    """The value every global generator gets from ``seed_everything(root)`` (the classic
    scheme): ``root`` itself when it is an int in ``[0, 2**32)`` (what ``np.random.seed``
    accepts), else ``derive("classic", root=root, bits=32)``.

    >>> classic_seed(7), classic_seed(-1) == derive("classic", root=-1, bits=32)
    (7, True)
    """
    return _small_or_derived(root, "classic")


def _small_or_derived(root: Seed, tag: str) -> int:
    """``root`` when it is an int that 32-bit seed APIs keep whole, else a value derived from it."""
    if isinstance(root, int) and 0 <= root < _CLASSIC_LIMIT:
        return root
    return derive(tag, root=root, bits=32)


def fresh_seed() -> int:
    """Draw a new root seed from the operating system's entropy.

    32 bits, so that the seed, once printed, replays with any tool (``np.random.seed`` and
    ``torch.manual_seed`` keep only 32 bits, and the classic scheme hands the root to them as is).
    """
    import secrets  # base64 and hmac come with it: imported only when a fresh seed is drawn

    return secrets.randbits(32)


#: Wider ints are written in hex: Python refuses to convert ints of more than 640 to 4300
#: decimal digits (the limit is configurable), never hex ones.
_DECIMAL_BITS = 2000


def format_seed(seed: Seed) -> str:
    """The text form of a seed, as stored in ``SEEDLOCK_SEED`` and printed for replay.

    ints are decimal (``0x...`` hex beyond 2000 bits); str is ``str:<text>``, or
    ``strhex:<hex of its UTF-8>`` when it holds a NUL, which no environment variable can;
    bytes is ``hex:<hex digits>``. :func:`parse_seed` reads every form back exactly, so a str
    seed that looks like a number stays a str, and whitespace around a str is kept.
    """
    seed = check_seed(seed)
    if isinstance(seed, int):
        return str(seed) if seed.bit_length() <= _DECIMAL_BITS else hex(seed)
    if isinstance(seed, str):
        return "str:" + seed if "\0" not in seed else "strhex:" + seed.encode().hex()
    return "hex:" + seed.hex()


def parse_seed(text: str) -> Seed:
    """Read a seed written by :func:`format_seed` (or typed by a user: ``42``, ``0x2a``).

    The text after ``str:`` is taken as it is, whitespace included; the other forms may be
    surrounded by whitespace.
    """
    if text.startswith("str:"):
        return text[4:]
    text = text.strip()
    for prefix, decode in (("strhex:", _text_from_hex), ("hex:", bytes.fromhex)):
        if text.startswith(prefix):
            try:
                return decode(text[len(prefix) :])
            except ValueError:
                raise ValueError(
                    f"invalid seed {_shown(text)}: expected {prefix}<hex digits>"
                ) from None
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(
            f"invalid seed {_shown(text)}: expected an integer (42, -7, 0x2a), "
            "str:<text> or hex:<hex digits>"
        ) from None


def _text_from_hex(digits: str) -> str:
    return bytes.fromhex(digits).decode("utf-8")  # UnicodeDecodeError is a ValueError


def _shown(text: str) -> str:
    """A user's text in a message: quoted, escaped, and cut when long."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def pythonhashseed_for(root: Seed) -> str:
    """The ``PYTHONHASHSEED`` seedlock uses for ``root``: the root itself when it is an int in
    ``[0, 2**32)``, else ``derive("PYTHONHASHSEED", root=root, bits=32)``."""
    return str(_small_or_derived(root, "PYTHONHASHSEED"))


def set_root(seed: Seed) -> None:
    """Make ``seed`` the root of every derived stream in this process and its children.

    Also exported as ``SEEDLOCK_SEED`` so that DataLoader workers, ``torchrun`` ranks and
    subprocesses started afterwards find it. :func:`seedlock.seed_everything` calls this.
    """
    global _root
    text = format_seed(seed)  # everything that can fail comes before anything changes
    os.environ[ENV_VAR] = text
    _root = check_seed(seed)


RootState = tuple["Seed | None", "str | None"]


def root_state() -> RootState:
    """The root set in this process (``None`` if none) and ``SEEDLOCK_SEED``, to put back later
    with :func:`restore_root_state` (the pytest plugin scopes the root to each test)."""
    return _root, os.environ.get(ENV_VAR)


def restore_root_state(saved: RootState) -> None:
    """Put back what :func:`root_state` returned."""
    global _root
    _root, text = saved
    if text is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = text


def get_root() -> Seed:
    """The root seed: the last :func:`set_root` in this process, else ``SEEDLOCK_SEED``.

    :func:`seedlock.seed_everything` calls :func:`set_root`; ``seedlock run`` sets
    ``SEEDLOCK_SEED``.

    Returns
    -------
    int, str or bytes
        The root seed, as given (``SEEDLOCK_SEED`` is read with :func:`parse_seed`).

    Raises
    ------
    LookupError
        Neither exists: seedlock does not invent a seed that nobody recorded.
    ValueError
        ``SEEDLOCK_SEED`` is set but holds no seed (the forms are those of :func:`format_seed`).
    """
    if _root is not None:
        return _root
    text = os.environ.get(ENV_VAR)
    if text:
        try:
            return parse_seed(text)
        except ValueError as exc:
            raise ValueError(f"{ENV_VAR}={text!r} is not a seed: {exc}") from None
    raise LookupError(
        "no root seed: call seedlock.seed_everything(seed) first, pass root=..., "
        f"or set {ENV_VAR} (seedlock run does)"
    )
