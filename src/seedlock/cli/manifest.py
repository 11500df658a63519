"""``seedlock manifest``: this environment's manifest, as ``seedlock run`` records it (without
the seed, the command and the per-process records, which only a run has)."""

from __future__ import annotations

import argparse
import json

from seedlock.manifest import environment

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")


def run(args: argparse.Namespace) -> int:
    text = json.dumps(environment(), indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")
    return 0
