"""What ``seedlock run``'s bootstrap runs inside every interpreter it starts.

Kept outside ``seedlock.cli`` (which imports argparse): this runs at every interpreter start-up.
"""

from __future__ import annotations

import atexit
import os

from seedlock.derivation import ENV_VAR, parse_seed

DETERMINISTIC_VAR = "SEEDLOCK_DETERMINISTIC"
RECORD_DIR_VAR = "SEEDLOCK_RECORD_DIR"
TRACE_DIR_VAR = "SEEDLOCK_TRACE_DIR"


def start() -> None:
    """Seed this interpreter (and switch the profile on) from the environment; at exit, write
    this process's record for the manifest. With ``SEEDLOCK_TRACE_DIR``, trace every module
    once torch is imported (``seedlock check``)."""
    trace_dir = os.environ.get(TRACE_DIR_VAR)
    if trace_dir:
        from seedlock import _hooks

        _hooks.on_import("torch", "seedlock.check", lambda: _start_trace(trace_dir))
    text = os.environ.get(ENV_VAR)
    if not text:
        return
    from seedlock.seeding import seed_everything

    report = seed_everything(
        parse_seed(text), deterministic=os.environ.get(DETERMINISTIC_VAR) == "1"
    )
    record_dir = os.environ.get(RECORD_DIR_VAR)
    if record_dir:
        # Imported now: an import inside an atexit handler after an uncaught Ctrl-C makes
        # CPython exit with status 1 instead of dying of SIGINT, which callers rely on.
        import json  # noqa: F401

        from seedlock import manifest  # noqa: F401

        seeded = {e.backend: e.value for e in report.entries if e.value is not None}
        atexit.register(_write_record, record_dir, seeded)


def _write_record(record_dir: str, seeded: dict[str, int]) -> None:
    import json
    import sys

    from seedlock.manifest import process_record

    # Spawned multiprocessing / DataLoader workers run this bootstrap too; only the program's
    # own interpreters (the command, torchrun ranks) belong in the manifest.
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None and multiprocessing.current_process().name != "MainProcess":
        return

    record = process_record()
    record["seeded"] = seeded
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
    import sys

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
