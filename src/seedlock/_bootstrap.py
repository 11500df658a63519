"""What ``seedlock run``'s bootstrap runs inside every interpreter it starts.

Kept outside ``seedlock.cli`` (which imports argparse): this runs at every interpreter start-up,
so it imports little. When no RNG library is loaded yet (the usual case at start-up) seeding is
deferred: a post-import hook runs :func:`seedlock.seed_everything` the moment the program first
imports one of them, which seeds it before the program's next line, and hooks the others, exactly
as a ``seed_everything`` call at start-up would. A program that imports none of them never pays
for seedlock's seeding machinery.
"""

from __future__ import annotations

import atexit
import os
import sys
from functools import partial

from seedlock.derivation import ENV_VAR, parse_seed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seedlock.derivation import Seed
    from seedlock.seeding import SeedReport

DETERMINISTIC_VAR = "SEEDLOCK_DETERMINISTIC"
RECORD_DIR_VAR = "SEEDLOCK_RECORD_DIR"
TRACE_DIR_VAR = "SEEDLOCK_TRACE_DIR"

#: The modules of the built-in backends (tests/test_cli_run.py checks the list): importing any
#: of them triggers the deferred seeding.
LIBRARIES = ("random", "numpy", "torch", "jax", "tensorflow", "cupy")
_HOOK_KEY = "seedlock.run"

_report: SeedReport | None = None


def start() -> None:
    """Seed this interpreter (and switch the profile on) from the environment, now or on the
    first import of an RNG library; at exit, write this process's record for the manifest.
    With ``SEEDLOCK_TRACE_DIR``, trace every module once torch is imported (``seedlock check``).
    """
    trace_dir = os.environ.get(TRACE_DIR_VAR)
    if trace_dir:
        from seedlock import _hooks

        _hooks.on_import("torch", "seedlock.check", lambda: _start_trace(trace_dir))
    text = os.environ.get(ENV_VAR)
    if not text:
        return
    root = parse_seed(text)
    deterministic = os.environ.get(DETERMINISTIC_VAR) == "1"
    record_dir = os.environ.get(RECORD_DIR_VAR)
    if record_dir:
        # Imported now: an import inside an atexit handler after an uncaught Ctrl-C makes
        # CPython exit with status 1 instead of dying of SIGINT, which callers rely on.
        import json  # noqa: F401

        from seedlock import manifest  # noqa: F401

        atexit.register(_write_record, record_dir)
    if deterministic or trace_dir or _must_seed_now():
        _seed(root, deterministic)
        return
    from seedlock import _hooks
    from seedlock.derivation import set_root

    set_root(root)
    for module in LIBRARIES:
        _hooks.on_import(module, _HOOK_KEY, partial(_seed_once, root, module))


def _must_seed_now() -> bool:
    """A library is loaded already, or a third-party backend is installed (its module is not
    known without loading the registry)."""
    if any(module in sys.modules for module in LIBRARIES):
        return True
    from seedlock import _dists

    return not _dists.plain_path() or bool(_dists.entry_points("seedlock.backends"))


def _seed(root: Seed, deterministic: bool) -> None:
    global _report
    from seedlock.seeding import seed_everything

    _report = seed_everything(root, deterministic=deterministic)


def _seed_once(root: Seed, imported: str) -> None:
    """The hook for ``imported``, which has just finished executing."""
    if any(_initializing(sys.modules.get(m)) for m in LIBRARIES if m != imported):
        # Fired for a library imported on the way by another one still importing (torch imports
        # random and numpy): seeding now would find that one half made. Its own hook, pending
        # since start-up, fires when it is complete.
        return
    from seedlock import _hooks

    for module in LIBRARIES:
        _hooks.cancel(module, _HOOK_KEY)
    if _report is None:
        _seed(root, False)


def _initializing(module: object) -> bool:
    """Is ``module`` still executing its import (importlib marks its spec meanwhile)?"""
    return module is not None and bool(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
    )


def _write_record(record_dir: str) -> None:
    import json

    from seedlock.manifest import process_record

    # Spawned multiprocessing / DataLoader workers run this bootstrap too; only the program's
    # own interpreters (the command, torchrun ranks) belong in the manifest.
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None and multiprocessing.current_process().name != "MainProcess":
        return

    record = process_record()
    # Deferred seeding that never ran: the program imported no RNG library, nothing was seeded.
    entries = _report.entries if _report is not None else ()
    record["seeded"] = {e.backend: e.value for e in entries if e.value is not None}
    path = os.path.join(record_dir, f"{os.getpid()}.json")
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f, default=str)
    except OSError:
        pass


def _start_trace(trace_dir: str) -> None:
    """Trace this process (global mode) to ``<dir>/<rank or main>.trace``, if no other process
    of the run has claimed that name (a subprocess of the program, say)."""
    import multiprocessing

    if multiprocessing.current_process().name != "MainProcess":
        return
    path = os.path.join(trace_dir, f"{os.environ.get('RANK', 'main')}.trace")
    try:
        os.close(os.open(path + ".claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except OSError:
        return
    from seedlock.audit.traces import Tracer

    tracer = Tracer(path).start()
    tracer.meta("argv", repr(sys.argv))
    atexit.register(tracer.stop)
