"""Where entropy entered: the places a traced run drew randomness that no seed reaches.

While a :class:`~seedlock.audit.traces.Tracer` is active, the points where such randomness is
*created* are hooked (not every draw: a generator is noted once, when it is made):

``numpy``
    a numpy ``SeedSequence`` draws OS entropy: ``np.random.default_rng()``, ``SeedSequence()``,
    ``PCG64()``, ``RandomState()``, ``np.random.seed()``
``random.Random``
    ``random.Random()``, ``Random(None)``, ``.seed()`` or ``random.seed()`` without a seed
``random.SystemRandom``
    a ``random.SystemRandom`` is made
``torch.seed``
    ``torch.seed()`` reseeds torch's global generator from OS entropy
``os.urandom``, ``uuid.uuid4``, ``secrets.token_bytes`` (``token_hex``, ``token_urlsafe``, ...)
    one of them is called (``secrets``: also ``randbits``, ``randbelow``, ``choice``)
``clock``
    ``random.Random(s)``, ``random.seed(s)``, ``np.random.default_rng(s)``, ``np.random.seed(s)``
    or ``torch.manual_seed(s)`` get a seed ``s`` that, read as seconds, milliseconds,
    microseconds or nanoseconds since the epoch, lies in the last 24 hours (or the next minute):
    a seed read from the clock. A random 32-bit seed falls there about once in 50,000
    times, a random 64-bit one about once in 200,000.

Not caught: ``torch.Generator().seed()`` (a type torch does not let be patched), seeds from
the clock given to ``torch.Generator().manual_seed`` or to ``SeedSequence``, names bound before
tracing started (``from os import urandom``), generators made before tracing started, and the
libraries imported only after it started (unless :func:`refresh` is called then, as ``seedlock
check`` does on the import of ``numpy.random``, ``uuid`` and ``secrets``). A call made by the
standard library's own code (``tempfile``'s names, ``multiprocessing``'s keys) or by seedlock's
is not noted. The hooks are process-wide: a call from another thread is noted with the module
the tracing thread is in.

Each place is noted with the first stack frame outside seedlock, numpy, torch and the standard
library (file, line, function) and the module being traced then. Entropy torch draws for itself
(through its own code, or a library it calls: sympy's symbols, a compiler cache's ``uuid4``) is
not noted. The hooks call the functions
they wrap with the same arguments and return what they return: no drawn number changes. They
are installed when the first tracer starts and removed when the last one stops.
"""

from __future__ import annotations

import numbers
import os
import random
import sqlite3
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any

from seedlock._text import printable

__all__ = [
    "EntropySource", "activate", "deactivate", "describe", "hooked", "implicated", "read",
    "refresh",
]  # fmt: skip

Note = Callable[[str, str, int, str], None]

_DESCRIPTIONS = {
    "numpy": ("an unseeded numpy generator (OS entropy)", "draw from `seedlock.numpy_rng(...)` "
              "(or seed it)"),
    "random.Random": ("an unseeded random.Random", "draw from `seedlock.random_rng(...)` "
                      "(or seed it)"),
    "random.SystemRandom": ("a random.SystemRandom (OS entropy, cannot be seeded)",
                            "draw from `seedlock.random_rng(...)` instead"),
    "torch.seed": ("torch.seed() (reseeds torch from OS entropy)",
                   "draw from `seedlock.torch_generator(...)` (or call torch.manual_seed)"),
    "clock": ("a seed read from the clock", "pass a seed derived with `seedlock.derive(...)`"),
}  # fmt: skip
_OS_FIX = "pass a seed derived with `seedlock.derive(...)`"


@dataclass(frozen=True)
class EntropySource:
    """A place where a traced run drew randomness that no seed reaches.

    Attributes
    ----------
    seq
        The trace's event count when it happened: the events before it have ``seq`` below.
    kind
        What was called: ``numpy``, ``random.Random``, ``random.SystemRandom``, ``torch.seed``,
        ``os.urandom``, ``secrets.token_bytes`` (and the other ``secrets`` functions),
        ``uuid.uuid4`` or ``clock`` (see the module docstring).
    file, line, function
        The first stack frame outside seedlock, numpy, torch and the standard library.
    module
        The module being traced then (``Net.jitter``), or ``None`` outside any.
    implicated
        In a :class:`~seedlock.audit.Report`: whether it happened inside the call of the
        diverging module (or, for other events, anywhere before the divergence).
    """

    seq: int
    kind: str
    file: str
    line: int
    function: str
    module: str | None
    implicated: bool = False

    @property
    def description(self) -> str:
        """What drew the entropy, in words (``"an unseeded numpy generator (OS entropy)"``)."""
        return _DESCRIPTIONS.get(self.kind, (f"{self.kind}() (OS entropy)", ""))[0]

    @property
    def fix(self) -> str:
        """How to make it reproducible, in words."""
        return _DESCRIPTIONS.get(self.kind, ("", _OS_FIX))[1]


# -- hooks --------------------------------------------------------------------------------------
class _Local(threading.local):
    depth = 0  # > 0 while a hooked function runs: what it calls itself is not noted again


_local = _Local()
_lock = threading.Lock()
_notes: list[Note] = []
_patches: list[tuple[Any, str, Any]] = []
_MISSING = object()
_SEEDLOCK = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_STDLIB = tuple(
    {os.path.abspath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib")}
)
_libraries: tuple[str, ...] = (_SEEDLOCK,)
_torch = ""  # torch's folder, once it is imported
_PACKAGES = "-packages" + os.sep  # site-packages, dist-packages


def _is_stdlib(name: str) -> bool:
    if name.startswith("<frozen"):
        return True
    return name.startswith(_STDLIB) and "-packages" + os.sep not in name


def _outside(name: str) -> bool:
    return not (name.startswith(_libraries) or _is_stdlib(name))


def _from_clock(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    now = time.time()
    seconds = float(value)
    return any(now - 86400 <= seconds / scale <= now + 60 for scale in (1, 1e3, 1e6, 1e9))


def _on_behalf_of_torch(frame: FrameType | None) -> bool:
    """Whether torch's code comes between the call and the program's own code (frames outside
    every installed package and the standard library): torch drew it for itself (a compiler
    cache key, sympy's symbols), not for a result."""
    while frame is not None:
        name = frame.f_code.co_filename
        if _torch and name.startswith(_torch):
            return True
        if not (name.startswith(_libraries) or _is_stdlib(name) or _PACKAGES in name):
            return False
        frame = frame.f_back
    return False


def _note(kind: str, caller: FrameType | None, home: str) -> None:
    while caller is not None and caller.f_code.co_filename == home:
        caller = caller.f_back  # random.Random.__init__ calling the hooked seed: not the caller
    if caller is None:
        return
    direct = caller.f_code.co_filename
    if direct.startswith(_SEEDLOCK) or _is_stdlib(direct) or _on_behalf_of_torch(caller):
        return  # the standard library's, seedlock's or torch's own use: not the program's
    frame: FrameType | None = caller
    while frame is not None and not _outside(frame.f_code.co_filename):
        frame = frame.f_back
    code = (frame or caller).f_code
    line = (frame or caller).f_lineno
    function = getattr(code, "co_qualname", code.co_name)
    for note in list(_notes):
        note(kind, code.co_filename, line, function)


def _hook(
    original: Any, judge: Callable[[tuple[Any, ...], dict[str, Any]], str | None], home: str
) -> Any:
    def hook(*args: Any, **kwargs: Any) -> Any:
        if _local.depth == 0 and _notes:
            kind = judge(args, kwargs)
            if kind is not None:
                _local.depth += 1
                try:
                    _note(kind, sys._getframe(1), home)
                finally:
                    _local.depth -= 1
        _local.depth += 1
        try:
            return original(*args, **kwargs)
        finally:
            _local.depth -= 1

    hook.__wrapped__ = original  # type: ignore[attr-defined]
    return hook


def _always(kind: str) -> Callable[[tuple[Any, ...], dict[str, Any]], str | None]:
    return lambda args, kwargs: kind


def _seed(index: int, name: str, unseeded: str | None) -> Callable[..., str | None]:
    """A judge of a seed argument: ``unseeded`` when it is missing or ``None``, ``clock`` when
    it is read from the clock."""

    def judge(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        value = args[index] if len(args) > index else kwargs.get(name)
        if value is None:
            return unseeded
        return "clock" if _from_clock(value) else None

    return judge


def _patch(owner: Any, name: str, judge: Callable[..., str | None]) -> None:
    if owner is None or not hasattr(owner, name):
        return
    module = owner if isinstance(owner, ModuleType) else sys.modules.get(owner.__module__)
    home = os.path.abspath(getattr(module, "__file__", None) or "<none>")
    _patches.append((owner, name, vars(owner).get(name, _MISSING)))
    setattr(owner, name, _hook(getattr(owner, name), judge, home))


def _install() -> None:
    global _libraries, _torch
    found = [_SEEDLOCK]
    for package in ("numpy", "torch"):
        module: ModuleType | None = sys.modules.get(package)
        if module is not None and module.__file__:
            found.append(os.path.dirname(os.path.abspath(module.__file__)) + os.sep)
            _torch = found[-1] if package == "torch" else _torch
    _libraries = tuple(found)
    _patch(random.Random, "seed", _seed(1, "a", "random.Random"))
    _patch(random, "seed", _seed(0, "a", "random.Random"))
    _patch(random.SystemRandom, "__init__", _always("random.SystemRandom"))
    _patch(os, "urandom", _always("os.urandom"))
    secrets = sys.modules.get("secrets")  # secrets, uuid, numpy, torch: if the program uses them
    for name in ("token_bytes", "token_hex", "token_urlsafe", "randbits", "randbelow", "choice"):
        _patch(secrets, name, _always(f"secrets.{name}"))
    _patch(sys.modules.get("uuid"), "uuid4", _always("uuid.uuid4"))
    nprandom = sys.modules.get("numpy.random")
    _patch(nprandom, "default_rng", _seed(0, "seed", "numpy"))
    _patch(nprandom, "seed", _seed(0, "seed", "numpy"))
    _patch(sys.modules.get("numpy.random.bit_generator"), "randbits", _always("numpy"))
    for owner in (sys.modules.get("torch"), sys.modules.get("torch.random")):
        _patch(owner, "seed", _always("torch.seed"))
        _patch(owner, "manual_seed", _seed(0, "seed", None))


def _uninstall() -> None:
    while _patches:
        owner, name, original = _patches.pop()
        if original is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, original)


def activate(note: Note) -> None:
    """Start calling ``note(kind, file, line, function)`` at each place entropy enters;
    installs the hooks for the first one."""
    with _lock:
        if not _notes:
            _install()
        _notes.append(note)


def deactivate(note: Note) -> None:
    """Stop calling ``note``; removes the hooks after the last one (a no-op if not active)."""
    with _lock:
        if note in _notes:
            _notes.remove(note)
            if not _notes:
                _uninstall()


def refresh() -> None:
    """Install the hooks again while active, to reach the libraries imported since."""
    with _lock:
        if _notes:
            _uninstall()
            _install()


def hooked() -> bool:
    """Whether the hooks are installed now."""
    return bool(_patches)


# -- reading ------------------------------------------------------------------------------------
def read(db: sqlite3.Connection, last: int) -> list[EntropySource]:
    """The sources a trace recorded at or before event ``last``, in order (none in a trace
    made before the table existed)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='entropy'").fetchone():
        rows = db.execute(
            "SELECT seq, kind, file, line, function, module FROM entropy WHERE seq <= ? "
            "ORDER BY seq", (last,)
        ).fetchall()  # fmt: skip
    else:
        rows = []
    return [
        EntropySource(int(seq), str(kind), str(file), int(line or 0), str(function),
                      None if module is None else str(module))
        for seq, kind, file, line, function, module in rows
        if isinstance(seq, int) and isinstance(line, int | None)
    ]  # fmt: skip


def implicated(
    sources: list[EntropySource], module: str | None, after: int
) -> tuple[EntropySource, ...]:
    """``sources`` with the implicated ones first, one per place. With ``module``, those noted
    inside its call (after event ``after``, in it or a module under it) are implicated; without,
    all are."""

    def inside(s: EntropySource) -> bool:
        if module is None:
            return True
        name = s.module or ""
        return s.seq > after and (name == module or name.startswith((module + ".", module + "/")))

    flagged = [EntropySource(**{**vars(s), "implicated": inside(s)}) for s in sources]
    flagged.sort(key=lambda s: not s.implicated)
    seen: set[tuple[Any, ...]] = set()
    out = []
    for s in flagged:
        key = (s.kind, s.file, s.line, s.function, s.module)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return tuple(out)


def describe(sources: tuple[EntropySource, ...], most: int = 5) -> list[str]:
    """Report lines naming the first ``most`` of ``sources``, each with its fix. Names from the
    trace are shown escaped (:func:`~seedlock._text.printable`)."""
    lines = []
    for s in sources[:most]:
        module = f" (module {printable(s.module, 200)})" if s.module else ""
        elsewhere = "" if s.implicated else ", outside the diverging call"
        lines.append(
            f"  entropy {s.description} at {printable(_short(s.file), 300)}:{s.line} in "
            f"{printable(s.function, 200)}{module}{elsewhere}"
        )
        lines.append(f"          fix: {s.fix}")
    if len(sources) > most:
        lines.append(f"  entropy ... and {len(sources) - most} more places (Report.entropy)")
    return lines


def _short(path: str) -> str:
    """``path`` relative to the current directory when it lies under it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith(os.pardir) else rel
