"""What ``seedlock run``'s bootstrap runs inside every interpreter it starts.

Kept outside ``seedlock.cli`` (which imports argparse): this runs at every interpreter start-up,
so it imports little. ``seed_everything(root)`` at start-up, when no RNG library is loaded yet
(the usual case), seeds nothing at once: it registers, for each library, a callback that seeds
it the moment it is imported. The bootstrap registers those same callbacks itself, under the
same key, without loading seedlock's seeding code; a program that imports no RNG library never
pays for it, and a ``seed_everything`` call in the program replaces them as it would its own.
"""

from __future__ import annotations

import atexit
import os
import sys
from functools import partial

from seedlock.derivation import ENV_VAR, parse_seed

DETERMINISTIC_VAR = "SEEDLOCK_DETERMINISTIC"
RECORD_DIR_VAR = "SEEDLOCK_RECORD_DIR"
TRACE_DIR_VAR = "SEEDLOCK_TRACE_DIR"
#: What a targeted re-run of ``seedlock check`` records besides fingerprints: summaries ("1"),
#: the aten ops inside one module (its name), up to the end of one optimizer step (a number).
TRACE_SUMMARIES_VAR = "SEEDLOCK_TRACE_SUMMARIES"
TRACE_OPS_IN_VAR = "SEEDLOCK_TRACE_OPS_IN"
TRACE_UNTIL_STEP_VAR = "SEEDLOCK_TRACE_UNTIL_STEP"

#: The modules of the built-in backends that have a global generator (tests/test_cli_run.py
#: checks the list against the registry).
LIBRARIES = ("random", "numpy", "torch", "tensorflow", "cupy")

#: The value random got from the deferred seeding (None: not seeded by it).
_random_value: int | None = None


def start() -> None:
    """Seed this interpreter (and switch the profile on) from the environment, now or on each
    RNG library's import; at exit, write this process's record for the manifest. With
    ``SEEDLOCK_TRACE_DIR``, trace every module once torch is imported (``seedlock check``).
    """
    trace_dir = os.environ.get(TRACE_DIR_VAR)
    if trace_dir:
        from seedlock import _hooks  # every import here runs at interpreter start-up: only if used
        from seedlock.audit import entropylog  # only in a process seedlock check runs

        name = os.environ.get("RANK", "main")
        entropylog.start(os.path.join(trace_dir, f"{name}.entropy"), _hooks.on_import)
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
        from seedlock.seeding import seed_everything  # the backends: only when seeding now

        seed_everything(root, deterministic=deterministic)
        return
    # The deferred seeding: hooks only, without the backends (see the module docstring).
    from seedlock import _hooks
    from seedlock.derivation import classic_seed, set_root

    set_root(root)
    value = classic_seed(root)
    for module in LIBRARIES:
        _hooks.on_import(module, _hooks.SEED_KEY, partial(_seed_on_import, module, value))


def _must_seed_now() -> bool:
    """A library is loaded already, or a third-party backend is installed (its module is not
    known without loading the registry): then ``seed_everything`` itself runs at start-up."""
    if any(module in sys.modules for module in LIBRARIES):
        return True
    from seedlock import _dists  # reads the installed distributions: only when deciding

    return not _dists.plain_path() or bool(_dists.entry_points("seedlock.backends"))


def _seed_on_import(module: str, value: int) -> None:
    """The callback ``seed_everything`` itself registers for a library not yet imported."""
    global _random_value
    if module == "random":
        # PythonBackend.seed is random.seed(value). Called directly: seedlock's backends import
        # random themselves, so this may run while they are half imported.
        import random  # the library being imported right now

        random.seed(value)
        _random_value = value
        return
    # The backends, only once a library with a global generator is imported.
    from seedlock import backends
    from seedlock.seeding import apply_global_seed

    for backend in backends.all_backends():
        if backend.module == module and backend.seed_bits:
            apply_global_seed(backend, value)


def _seeded_values() -> dict[str, int]:
    """What this interpreter's globals were seeded with, by the bootstrap or the program."""
    values = {} if _random_value is None else {"python": _random_value}
    seeding = sys.modules.get("seedlock.seeding")  # loaded if anything else was seeded
    if seeding is not None:
        values.update(seeding.seeded_values())
    return values


#: Scripts that torch starts as helpers of its own: torch.compile's compile worker (which then
#: forks its pool) and Inductor's autotuning subprocess.
_HELPER_SCRIPTS = {
    os.path.join("torch", "_inductor", "compile_worker", "__main__.py"): "torch.compile worker",
    os.path.join("torch", "_inductor", "__autotune_main__.py"): "torch.compile autotuner",
}
#: ``python -c`` helpers, by the start of their code: multiprocessing's resource tracker and
#: fork server (started for "spawn" / "forkserver" pools).
_HELPER_CODE = {
    "from multiprocessing.resource_tracker import main": "multiprocessing resource tracker",
    "from multiprocessing.forkserver import main": "multiprocessing fork server",
}
#: The lines of Inductor's CPU vector-ISA probe (a ``python -c`` that only loads a library).
_PROBE_LINES = frozenset(
    (
        "import sys",
        'if sys.platform != "linux":',
        "import torch  # noqa: F401",
        "from ctypes import cdll",
    )
)


def helper_kind(orig_argv: list[str], argv: list[str]) -> str | None:
    """What helper process an interpreter is, from its command line, or ``None`` for a process
    of the program: torch.compile's compile worker and autotuner, Inductor's CPU-capability
    probe, multiprocessing's resource tracker and fork server. They are started by libraries,
    not by the program, and run none of its code."""
    script = os.path.normpath(argv[0]) if argv and argv[0] not in ("", "-c", "-m") else ""
    for tail, kind in _HELPER_SCRIPTS.items():
        if script.endswith(os.sep + tail):
            return kind
    code = orig_argv[orig_argv.index("-c") + 1] if "-c" in orig_argv[:-1] else None
    if not argv or argv[0] != "-c" or code is None:
        return None
    for start, kind in _HELPER_CODE.items():
        if code.lstrip().startswith(start):
            return kind
    lines = [line.strip() for line in code.splitlines() if line.strip()]
    if lines and lines[-1].startswith("cdll.LoadLibrary(") and _PROBE_LINES.issuperset(lines[:-1]):
        return "torch.compile CPU probe"
    return None


def _write_record(record_dir: str) -> None:
    # Loaded at start-up already when a record is asked for (see start()): free here.
    import json

    from seedlock.manifest import process_record

    # Spawned multiprocessing / DataLoader workers run this bootstrap too; only the program's
    # own interpreters (the command, torchrun ranks) belong in the manifest.
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None and multiprocessing.current_process().name != "MainProcess":
        return
    helper = helper_kind(getattr(sys, "orig_argv", []), sys.argv)
    if helper is not None:
        # Counted, not recorded: a helper is no process of the program (see helper_kind).
        try:
            with open(os.path.join(record_dir, f"{os.getpid()}.helper"), "w") as f:
                f.write(helper)
        except OSError:
            pass
        return

    record = process_record()
    # Only what was seeded: a library the program never imported is not listed.
    record["seeded"] = _seeded_values()
    path = os.path.join(record_dir, f"{os.getpid()}.json")
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f, default=str)
    except OSError:
        pass


def _start_trace(trace_dir: str) -> None:
    """Trace this process (global mode) to ``<dir>/<rank or main>.trace``, if no other process
    of the run has claimed that name (a subprocess of the program, say)."""
    import multiprocessing  # loaded by torch already: this runs when torch is imported

    if multiprocessing.current_process().name != "MainProcess":
        return
    path = os.path.join(trace_dir, f"{os.environ.get('RANK', 'main')}.trace")
    from seedlock.audit import entropylog  # imported at start-up already

    try:
        os.close(os.open(path + ".claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except OSError:
        entropylog.hand_over()  # another process of the program traces under this name
        return
    from seedlock.audit.traces import Tracer  # torch: imported by now, traces need it

    until = os.environ.get(TRACE_UNTIL_STEP_VAR, "")
    tracer = Tracer(
        path,
        summaries=os.environ.get(TRACE_SUMMARIES_VAR) == "1",
        ops_in=os.environ.get(TRACE_OPS_IN_VAR) or None,
        until_step=int(until) if until.isdigit() else None,
    )
    noted = entropylog.hand_over()
    tracer.start()
    for place in noted:
        tracer._note_entropy(*place)
    tracer.meta("argv", repr(sys.argv))
    atexit.register(tracer.stop)
