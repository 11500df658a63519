"""``seedlock run``: seed an unmodified program, fix what only a launcher can, record the run.

Before the child starts, its environment gets ``SEEDLOCK_SEED``, ``PYTHONHASHSEED`` (which no
program can fix for itself once running) and, with ``--deterministic``,
``CUBLAS_WORKSPACE_CONFIG``. A bootstrap ``sitecustomize`` first on ``PYTHONPATH`` seeds every
Python interpreter of the run — ``python script.py``, ``python -m pkg``, each ``torchrun`` rank,
subprocesses — before user code, and then runs the ``sitecustomize`` it shadows. A child that is
not Python just gets the environment.

The child's exit status, stdout and stderr pass through unchanged. SIGTERM, SIGHUP, SIGQUIT,
SIGUSR1 and SIGUSR2 are forwarded to it; SIGINT is left to the terminal, which delivers Ctrl-C to
the whole foreground process group, the child included. A child killed by a signal makes
``seedlock run`` die of the same signal.

``--seed last`` replays the previous run's seed (kept in ``.seedlock/last_seed`` of the current
directory); ``--seed random`` (the default) draws one and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import seedlock
from seedlock._bootstrap import DETERMINISTIC_VAR, RECORD_DIR_VAR
from seedlock.derivation import (
    ENV_VAR,
    Seed,
    format_seed,
    fresh_seed,
    hash_seed_value,
    parse_seed,
)

__all__ = ["add_arguments", "child_environment", "resolve_seed", "run"]

CACHE_DIR = ".seedlock"
_BOOTSTRAP = Path(__file__).resolve().parent / "bootstrap"
_FORWARDED = ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed",
        default="random",
        metavar="N|last|random",
        help="root seed: an integer (or str:TEXT / hex:HEX), 'last' to replay the previous run, "
        "or 'random' (default) to draw one and print it",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="also switch on the determinism profile and set CUBLAS_WORKSPACE_CONFIG",
    )
    parser.add_argument(
        "--manifest",
        metavar="PATH",
        help="where to write the run manifest (default: .seedlock/runs/<time>-seed<N>.json)",
    )
    parser.add_argument("--no-manifest", action="store_true", help="write no manifest")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing of seedlock's")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ...")


def _command(args: argparse.Namespace) -> list[str]:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    return command


def resolve_seed(text: str, cache: Path) -> Seed:
    """``N`` / ``str:...`` / ``hex:...``, ``last`` (from ``cache``) or ``random``."""
    if text == "random":
        return fresh_seed()
    if text == "last":
        try:
            return parse_seed((cache / "last_seed").read_text())
        except FileNotFoundError:
            raise ValueError(
                f"--seed last: no previous run recorded in {cache}/ (run once with a seed first)"
            ) from None
    return parse_seed(text)


def _remember(cache: Path, seed: Seed) -> None:
    cache.mkdir(exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# created by seedlock: run records, not source\n*\n")
    (cache / "last_seed").write_text(format_seed(seed) + "\n")


def child_environment(seed: Seed, *, deterministic: bool, record_dir: str | None) -> dict[str, str]:
    """The environment ``seedlock run`` gives the child."""
    env = dict(os.environ)
    env[ENV_VAR] = format_seed(seed)
    env["PYTHONHASHSEED"] = hash_seed_value(seed)
    paths = [str(_BOOTSTRAP), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["SEEDLOCK_PACKAGE_PATH"] = str(Path(seedlock.__file__).resolve().parent.parent)
    if deterministic:
        env[DETERMINISTIC_VAR] = "1"
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        env.pop(DETERMINISTIC_VAR, None)
    if record_dir:
        env[RECORD_DIR_VAR] = record_dir
    else:
        env.pop(RECORD_DIR_VAR, None)
    return env


def _records(record_dir: str) -> list[dict[str, Any]]:
    records = []
    for path in sorted(Path(record_dir).glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    # A stable order (rank, then command line) so that two runs' manifests line up.
    records.sort(key=lambda r: (str(r.get("rank")), r.get("argv") or []))
    return records


def _die_like(returncode: int) -> int:
    """Die of the signal that killed the child (so callers see the same status); if that
    signal does not end a process by default, return the shell's 128 + N convention."""
    signum = -returncode
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP take no handler
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum


def run(args: argparse.Namespace) -> int:
    command = _command(args)
    if not command:
        print("seedlock run: missing command (seedlock run [options] -- CMD ...)", file=sys.stderr)
        return 2
    cache = Path(CACHE_DIR)
    try:
        seed = resolve_seed(args.seed, cache)
    except ValueError as exc:
        print(f"seedlock run: {exc}", file=sys.stderr)
        return 2
    _remember(cache, seed)
    if not args.quiet:
        print(f"seedlock: seed {format_seed(seed)}", file=sys.stderr, flush=True)

    from seedlock import manifest as mf

    record_dir = None if args.no_manifest else tempfile.mkdtemp(prefix="seedlock-run-")
    environment: dict[str, Any] = {}
    collector = None
    if record_dir:
        # Collecting packages and git state takes tens of ms: done while the child runs.
        collector = threading.Thread(target=lambda: environment.update(mf.environment()))
        collector.start()
    start = mf.now()
    try:
        child = subprocess.Popen(
            command,
            env=child_environment(seed, deterministic=args.deterministic, record_dir=record_dir),
        )
    except OSError as exc:
        print(f"seedlock run: cannot start {command[0]!r}: {exc}", file=sys.stderr)
        return 127
    previous = {}
    for name in _FORWARDED:
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, lambda s, _f: child.send_signal(s))
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        returncode = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    end = mf.now()

    if record_dir and collector is not None:
        collector.join()
        processes = _records(record_dir)
        manifest = {
            **environment,
            "seed": {
                "root": format_seed(seed),
                "deterministic": bool(args.deterministic),
                "hash_seed": hash_seed_value(seed),
                "globals": processes[0].get("seeded", {}) if processes else {},
            },
            "command": {
                "argv": command,
                "cwd": os.getcwd(),
                "start": start,
                "end": end,
                "exit_code": returncode if returncode >= 0 else None,
                "signal": signal.Signals(-returncode).name if returncode < 0 else None,
            },
            "processes": processes,
        }
        shutil.rmtree(record_dir, ignore_errors=True)
        path = Path(args.manifest) if args.manifest else _default_manifest_path(cache, start, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if not args.quiet:
            print(f"seedlock: manifest {path}", file=sys.stderr)
    return _die_like(returncode) if returncode < 0 else returncode


def _default_manifest_path(cache: Path, start: str, seed: Seed) -> Path:
    stamp = start.replace(":", "").replace("-", "").replace("+0000", "Z").replace("+00:00", "Z")
    label = format_seed(seed) if isinstance(seed, int) else "custom"
    return cache / "runs" / f"{stamp}-seed{label}.json"
