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

import contextlib
import os
import signal
import sys
import time

from seedlock._bootstrap import DETERMINISTIC_VAR, RECORD_DIR_VAR
from seedlock.derivation import (
    ENV_VAR,
    format_seed,
    fresh_seed,
    hash_seed_value,
    parse_seed,
)

# This module is the start-up path of every `seedlock run`: it imports only os, signal, sys and
# time at the top (no argparse, subprocess, pathlib, tempfile, json or threading), parses its
# options by hand when it can and starts the child with posix_spawn. See benchmarks/bench_cli.py.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

    from seedlock.derivation import Seed

__all__ = [
    "add_arguments",
    "child_environment",
    "command_of",
    "main",
    "parse",
    "resolve_seed",
    "run",
]

CACHE_DIR = ".seedlock"
_HERE = os.path.dirname(os.path.realpath(__file__))
_BOOTSTRAP = os.path.join(_HERE, "bootstrap")
_PACKAGE_PATH = os.path.dirname(os.path.dirname(_HERE))  # the folder that holds seedlock/
_FORWARDED = ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options, for ``--help`` and for command lines :func:`parse` leaves to argparse."""
    import argparse

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


class Options:
    """What :func:`add_arguments` parses to (the same attribute names)."""

    def __init__(self) -> None:
        self.seed = "random"
        self.deterministic = False
        self.manifest: str | None = None
        self.no_manifest = False
        self.quiet = False
        self.command: list[str] = []


_FLAGS = {
    "--deterministic": "deterministic",
    "--no-manifest": "no_manifest",
    "-q": "quiet",
    "--quiet": "quiet",
}


def parse(argv: Sequence[str]) -> Options | None:
    """Parse ``seedlock run``'s options without argparse (~10 ms of imports at every start).

    Returns ``None`` for anything but the plain forms (``--help``, abbreviations, a missing
    value, an unknown option): argparse then parses the line, with its help and error messages.
    The result is what argparse gives for the same line (tested).
    """
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            opts.command = list(argv[i + 1 :])
            return opts
        if not arg.startswith("-") or arg == "-":
            opts.command = list(argv[i:])  # argparse.REMAINDER: the command starts here
            return opts
        name, eq, value = arg.partition("=")
        if name in ("--seed", "--manifest"):
            if not eq:
                i += 1
                if i == len(argv):
                    return None
                value = argv[i]
                if value.startswith("-") and not value[1:].isdigit():
                    return None  # argparse reads it as an option, not as the value
            setattr(opts, name[2:], value)
        elif arg in _FLAGS:
            setattr(opts, _FLAGS[arg], True)
        else:
            return None
        i += 1
    return opts


def main(argv: Sequence[str]) -> int:
    """``seedlock run ARGV``: the fast path, or argparse when :func:`parse` declines."""
    opts: Any = parse(argv)
    if opts is None:
        import argparse

        from seedlock.cli import describe

        parser = argparse.ArgumentParser(prog="seedlock run", description=describe("run"))
        add_arguments(parser)
        opts = parser.parse_args(argv)
    return run(opts)


def command_of(args: Any) -> list[str]:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    return command


def resolve_seed(text: str, cache: str | os.PathLike[str]) -> Seed:
    """``N`` / ``str:...`` / ``hex:...``, ``last`` (from ``cache``) or ``random``."""
    if text == "random":
        return fresh_seed()
    if text == "last":
        try:
            with open(os.path.join(cache, "last_seed"), encoding="utf-8") as f:
                return parse_seed(f.read())
        except FileNotFoundError:
            raise ValueError(
                f"--seed last: no previous run recorded in {os.fspath(cache)}/ "
                "(run once with a seed first)"
            ) from None
    return parse_seed(text)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _remember(cache: str, seed: Seed) -> None:
    os.makedirs(cache, exist_ok=True)
    ignore = os.path.join(cache, ".gitignore")
    if not os.path.exists(ignore):
        _write(ignore, "# created by seedlock: run records, not source\n*\n")
    _write(os.path.join(cache, "last_seed"), format_seed(seed) + "\n")


def child_environment(
    seed: Seed | None, *, deterministic: bool, record_dir: str | None
) -> dict[str, str]:
    """The environment ``seedlock run`` gives the child. ``seed=None`` (``seedlock check
    --no-seed``): the bootstrap but no seed, and the caller's own ``PYTHONHASHSEED``, if any."""
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    if seed is not None:
        env[ENV_VAR] = format_seed(seed)
        env["PYTHONHASHSEED"] = hash_seed_value(seed)
    paths = [_BOOTSTRAP, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["SEEDLOCK_PACKAGE_PATH"] = _PACKAGE_PATH
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


class _Child:
    """The command's process: ``posix_spawnp`` where the OS has it (no subprocess import),
    ``subprocess.Popen`` elsewhere."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self._popen: Any = None
        spawn = getattr(os, "posix_spawnp", None)
        if spawn is None:  # pragma: no cover - Windows
            import subprocess

            self._popen = subprocess.Popen(command, env=env)
            self.pid = self._popen.pid
            return
        # Python ignores SIGPIPE and SIGXFSZ; a child must start with the defaults, as with
        # subprocess's restore_signals (or `cmd | head` would not stop cmd).
        default = {getattr(signal, n) for n in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, n)}
        self.pid = spawn(command[0], command, env, setsigdef=default)

    def send_signal(self, signum: int) -> None:
        if self._popen is not None:  # pragma: no cover - Windows
            self._popen.send_signal(signum)
            return
        with contextlib.suppress(ProcessLookupError):  # it has just ended
            os.kill(self.pid, signum)

    def wait(self) -> int:
        """The exit code, or ``-N`` when signal N ended the child (as subprocess reports it)."""
        if self._popen is not None:  # pragma: no cover - Windows
            return int(self._popen.wait())
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def _records(record_dir: str) -> list[dict[str, Any]]:
    import json

    records = []
    for name in sorted(os.listdir(record_dir)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(record_dir, name), encoding="utf-8") as f:
                records.append(json.load(f))
        except (OSError, ValueError):
            continue
    # A stable order (rank, then command line) so that two runs' manifests line up.
    records.sort(key=lambda r: (str(r.get("rank")), r.get("argv") or []))
    return records


def _remove_tree(folder: str) -> None:
    for name in os.listdir(folder):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, name))
    with contextlib.suppress(OSError):
        os.rmdir(folder)


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


def _environment() -> dict[str, Any]:
    """The machine and project part of the manifest; never fails the run."""
    from seedlock import manifest as mf

    try:
        return mf.environment()
    except Exception as exc:  # a broken git, an odd platform: the run still gets its manifest
        print(f"seedlock run: environment not fully recorded: {exc!r}", file=sys.stderr)
        return {"schema": mf.SCHEMA, "version": mf.VERSION}


def run(args: Any) -> int:
    command = command_of(args)
    if not command:
        print("seedlock run: missing command (seedlock run [options] -- CMD ...)", file=sys.stderr)
        return 2
    cache = CACHE_DIR
    try:
        seed = resolve_seed(args.seed, cache)
    except ValueError as exc:
        print(f"seedlock run: {exc}", file=sys.stderr)
        return 2
    _remember(cache, seed)
    if not args.quiet:
        print(f"seedlock: seed {format_seed(seed)}", file=sys.stderr, flush=True)

    record_dir = None
    if not args.no_manifest:
        record_dir = os.path.join(cache, "records", f"{os.getpid()}-{time.time_ns()}")
        os.makedirs(record_dir)
        record_dir = os.path.abspath(record_dir)
    start = time.time()
    env = child_environment(seed, deterministic=args.deterministic, record_dir=record_dir)
    try:
        child = _Child(command, env)
    except OSError as exc:
        print(f"seedlock run: cannot start {command[0]!r}: {exc}", file=sys.stderr)
        if record_dir:
            _remove_tree(record_dir)
        return 127
    previous = {}
    for name in _FORWARDED:
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, lambda s, _f: child.send_signal(s))
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # The machine and project part of the manifest (packages, git: tens of ms) is
        # collected while the child runs; forwarded signals are still handled meanwhile.
        environment = _environment() if record_dir else {}
        returncode = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    end = time.time()

    if record_dir:
        _write_manifest(
            args, command, seed, record_dir, environment=environment, times=(start, end),
            returncode=returncode,
        )  # fmt: skip
    return _die_like(returncode) if returncode < 0 else returncode


def _write_manifest(
    args: Any,
    command: list[str],
    seed: Seed,
    record_dir: str,
    *,
    environment: dict[str, Any],
    times: tuple[float, float],
    returncode: int,
) -> None:
    import json

    from seedlock import manifest as mf

    processes = _records(record_dir)
    _remove_tree(record_dir)
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
            "start": mf.timestamp(times[0]),
            "end": mf.timestamp(times[1]),
            "exit_code": returncode if returncode >= 0 else None,
            "signal": signal.Signals(-returncode).name if returncode < 0 else None,
        },
        "processes": processes,
    }
    path = args.manifest or _default_manifest_path(CACHE_DIR, manifest["command"]["start"], seed)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    _write(path, json.dumps(manifest, indent=2, default=str) + "\n")
    if not args.quiet:
        print(f"seedlock: manifest {path}", file=sys.stderr)


def _default_manifest_path(cache: str, start: str, seed: Seed) -> str:
    stamp = start.replace(":", "").replace("-", "").replace("+0000", "Z").replace("+00:00", "Z")
    label = format_seed(seed) if isinstance(seed, int) else "custom"
    return os.path.join(cache, "runs", f"{stamp}-seed{label}.json")
