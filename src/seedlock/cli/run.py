"""``seedlock run``: seed an unmodified program, fix what only a launcher can, record the run.

Before the child starts, its environment gets ``SEEDLOCK_SEED``, ``PYTHONHASHSEED`` (which no
program can fix for itself once running) and, with ``--deterministic``,
``CUBLAS_WORKSPACE_CONFIG``. A bootstrap ``sitecustomize`` first on ``PYTHONPATH`` seeds every
Python interpreter of the run — ``python script.py``, ``python -m pkg``, each ``torchrun`` rank,
subprocesses — before user code, and then runs the ``sitecustomize`` it shadows. A child that is
not Python just gets the environment.

The child's exit status, stdout and stderr pass through unchanged. SIGINT, SIGTERM, SIGHUP,
SIGQUIT, SIGUSR1 and SIGUSR2 reach it exactly once, whether the terminal sent them to the whole
process group or a supervisor to ``seedlock run`` alone (see :mod:`seedlock.cli._child`). A
child killed by a signal makes ``seedlock run`` die of the same signal.

``--seed last`` replays the previous run's seed (kept in ``.seedlock/last_seed`` of the current
directory); ``--seed random`` (the default) draws one and prints it. Nothing here stops the
command from running: a working directory where ``.seedlock/`` cannot be written only means
``--seed last`` will not find this seed, and a manifest that cannot be written where it should
is written to the temporary directory instead (both said on stderr). Only a ``--manifest`` path
that cannot work (a file that is not a manifest, a folder that cannot be written) is refused,
before the command starts.

Python interpreters started with ``-I``, ``-E`` or ``-S`` skip the bootstrap and so are not
seeded: ``seedlock run`` says so on stderr and in the manifest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from seedlock import _files
from seedlock._bootstrap import DETERMINISTIC_VAR, RECORD_DIR_VAR
from seedlock._text import printable, reason
from seedlock.cli import _child, _run_manifest, describe
from seedlock.derivation import (
    ENV_VAR,
    format_seed,
    fresh_seed,
    parse_seed,
    pythonhashseed_for,
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
# Python options that make an interpreter skip sitecustomize, hence the bootstrap.
_SKIPS_BOOTSTRAP = "IES"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options, for ``--help`` and for command lines :func:`parse` leaves to argparse."""
    import argparse  # heavy for every start (see benchmarks/bench_cli.py): for --help and the like

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
    """Parse ``seedlock run``'s options without argparse (whose imports would slow every start).

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
        import argparse  # heavy for every start (see benchmarks/bench_cli.py): unusual lines only

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
        path = os.path.join(cache, "last_seed")
        try:
            with open(path, encoding="utf-8") as f:
                saved = f.read(1 << 16)
        except FileNotFoundError:
            raise ValueError(
                f"--seed last: no previous run recorded in {os.fspath(cache)}/ "
                "(run once with a seed first)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--seed last: cannot read {path}: {reason(exc)}") from None
        # The file ends with the one newline _remember wrote; a str seed keeps its own.
        return parse_seed(saved[:-1] if saved.endswith("\n") else saved)
    return parse_seed(text)


def _remember(cache: str, seed: Seed) -> None:
    """Keep the seed for ``--seed last``; a folder that cannot be written only loses that."""
    try:
        os.makedirs(cache, exist_ok=True)
        ignore = os.path.join(cache, ".gitignore")
        # "x": created once, never rewritten, never written through a link.
        with contextlib.suppress(FileExistsError), open(ignore, "x", encoding="utf-8") as f:
            f.write("# created by seedlock: run records, not source\n*\n")
        _files.write_atomic(os.path.join(cache, "last_seed"), (format_seed(seed) + "\n").encode())
    except OSError as exc:
        print(
            f"seedlock run: cannot record the seed in {cache}/last_seed ({reason(exc)}); "
            "--seed last will not find it",
            file=sys.stderr,
        )


def child_environment(
    seed: Seed | None, *, deterministic: bool, record_dir: str | None
) -> dict[str, str]:
    """The environment ``seedlock run`` gives the child. ``seed=None`` (``seedlock check
    --no-seed``): the bootstrap but no seed, and the caller's own ``PYTHONHASHSEED``, if any."""
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    if seed is not None:
        env[ENV_VAR] = format_seed(seed)
        env["PYTHONHASHSEED"] = pythonhashseed_for(seed)
    # The bootstrap goes first, once; the user's entries follow exactly as they were (an empty
    # entry is the current directory, so none is dropped).
    user = env.get("PYTHONPATH", "")
    entries = [p for p in user.split(os.pathsep) if p != _BOOTSTRAP] if user else []
    env["PYTHONPATH"] = os.pathsep.join([_BOOTSTRAP, *entries])
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


def skipped_bootstrap(command: list[str]) -> str | None:
    """The option (``-I``, ``-E``, ``-S``) that makes a Python command skip the bootstrap, if
    ``command`` runs Python with one before its script."""
    name = os.path.basename(command[0]) if command else ""
    version = name[len("python") :].replace(".", "")
    if not name.startswith("python") or (version and not version.isdigit()):
        return None
    args = iter(command[1:])
    for arg in args:
        if arg.startswith("--"):
            if arg == "--":
                return None
            continue  # a long option (--check-hash-based-pycs takes its value with =)
        if not arg.startswith("-") or arg == "-":
            return None  # the script, or - for stdin
        for i, flag in enumerate(arg[1:], 2):
            if flag in _SKIPS_BOOTSTRAP:
                return f"-{flag}"
            if flag in "cm":  # the program follows
                return None
            if flag in "XW":  # the rest of the argument, or the next one, is its value
                if i == len(arg):
                    next(args, None)
                break
    return None


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


def run(args: Any) -> int:
    command = command_of(args)
    if not command:
        print("seedlock run: missing command (seedlock run [options] -- CMD ...)", file=sys.stderr)
        return 2
    cache = CACHE_DIR
    try:
        seed = resolve_seed(args.seed, cache)
        if args.manifest and not args.no_manifest:
            _run_manifest.check_path(args.manifest)
    except ValueError as exc:
        print(f"seedlock run: {printable(exc)}", file=sys.stderr)
        return 2
    _remember(cache, seed)
    if not args.quiet:
        print(f"seedlock: seed {printable(format_seed(seed), 200)}", file=sys.stderr, flush=True)
    skipped = skipped_bootstrap(command)
    if skipped:
        print(
            f"seedlock run: python {skipped} skips seedlock's bootstrap: that interpreter is NOT "
            "seeded (drop the option, or seed in the program)",
            file=sys.stderr,
        )

    record_dir = None if args.no_manifest else _run_manifest.make_record_dir()
    start = time.time()
    env = child_environment(seed, deterministic=args.deterministic, record_dir=record_dir)
    environment: dict[str, Any] = {}

    def collect() -> None:
        # The machine and project part of the manifest (packages, git: the slow part) is
        # collected while the child runs; signals that arrive meanwhile are passed on after it.
        if record_dir:
            environment.update(_run_manifest.collect_environment(env))

    try:
        returncode, _ = _child.run(command, env, while_running=collect)
    except OSError as exc:
        print(f"seedlock run: cannot start '{printable(command[0])}': {reason(exc)}",
              file=sys.stderr)  # fmt: skip
        if record_dir:
            _run_manifest.discard(record_dir)
        return 127
    end = time.time()

    if record_dir:
        manifest = _run_manifest.build(
            args, command, seed, record_dir, environment=environment, times=(start, end),
            returncode=returncode, skipped=skipped,
        )  # fmt: skip
        _run_manifest.save(args, manifest, seed, cache)
    return _die_like(returncode) if returncode < 0 else returncode
