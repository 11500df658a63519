"""The ``seedlock`` command. One module per subcommand, each with ``add_arguments`` and ``run``
(and optionally ``main(argv)``, which then parses its own command line).

Subcommand modules are imported only when chosen, and argparse only when a command line needs
it: ``seedlock run`` parses its options by hand, since it starts every seeded program.

Exit status: 0 yes / no difference, 1 not reproducible / a high-risk difference, 2 a usage error
or anything else that stops seedlock (one line on stderr: :class:`UsageError`, a file that
cannot be read or written, a state or manifest that is not one), 130 when interrupted. A wrapped
command's own status passes through ``seedlock run``.
"""

from __future__ import annotations

import importlib
import sys

from seedlock._text import printable
from seedlock._version import __version__
from seedlock.errors import StateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

__all__ = ["UsageError", "describe", "main"]


class UsageError(Exception):
    """A mistake in what the user asked: printed as one line, exit status 2."""


# subcommand -> (module, one-line help)
_COMMANDS = {
    "run": ("seedlock.cli.run", "seed an unmodified program (-- CMD ...) and record a manifest"),
    "check": ("seedlock.cli.check", "run a command N times (-- CMD ...): reproducible? where not?"),
    "manifest": ("seedlock.cli.manifest", "print this environment's manifest (JSON)"),
    "diff": ("seedlock.cli.diff", "compare two manifests (risk-ranked) or two traces"),
    "doctor": ("seedlock.cli.doctor", "list this environment's nondeterminism risks"),
    "demo": ("seedlock.cli.demo", "train twice, then interrupted and resumed: compare the bits"),
}


def describe(name: str) -> str:
    """The one-line help of subcommand ``name``."""
    return _COMMANDS[name][1]


def _parser() -> argparse.ArgumentParser:
    import argparse  # heavy for `seedlock run`'s start (benchmarks/bench_cli.py): only when needed

    parser = argparse.ArgumentParser(
        prog="seedlock",
        description="Bit-for-bit reproducible PyTorch / NumPy / Python runs.",
    )
    parser.add_argument("--version", action="version", version=f"seedlock {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in _COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seedlock`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in _COMMANDS:
        ns = _parser().parse_args(args)  # --version, --help, or an error for unknown commands
        if ns.command is None:
            _parser().print_help()
            return 2
    name, rest = args[0], args[1:]
    try:
        return _run(name, rest)
    except KeyboardInterrupt:
        print(f"seedlock {name}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, OSError, ValueError, StateError) as exc:
        # The documented refusals: files that cannot be read or written, states, manifests and
        # traces that are not ones (StateError, ValueError), seeds that do not parse.
        message: object = exc
        if isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        print(f"seedlock {name}: {printable(message, 2000)}", file=sys.stderr)
        return 2


def _run(name: str, rest: list[str]) -> int:
    module = importlib.import_module(_COMMANDS[name][0])
    own_main = getattr(module, "main", None)
    if own_main is not None:
        return int(own_main(rest))
    import argparse  # heavy for `seedlock run`'s start (benchmarks/bench_cli.py): it parses alone

    sub = argparse.ArgumentParser(prog=f"seedlock {name}", description=describe(name))
    module.add_arguments(sub)
    code: int = module.run(sub.parse_args(rest))
    return code
