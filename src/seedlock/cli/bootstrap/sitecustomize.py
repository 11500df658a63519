"""seedlock's child bootstrap (not a module to import yourself).

``seedlock run`` puts this folder first on ``PYTHONPATH``, so every Python interpreter it starts
(and every interpreter those start: ``torchrun`` ranks, subprocesses) imports this file at
start-up, before any user code: it seeds the interpreter from ``SEEDLOCK_SEED``, then runs the
``sitecustomize`` it shadows, if there is one. It never stops the program: a failure is one line
on stderr.
"""

import os
import sys


def _seedlock_start() -> None:
    try:
        try:
            from seedlock import _bootstrap
        except ImportError:
            # Another interpreter than seedlock's own (a system python, another venv):
            # seedlock is pure Python, so its own copy serves.
            sys.path.append(os.environ.get("SEEDLOCK_PACKAGE_PATH", ""))
            from seedlock import _bootstrap
        _bootstrap.start()
    except Exception as exc:  # never break the user's program
        print(f"seedlock: this interpreter is NOT seeded: {exc!r}", file=sys.stderr)


def _run_shadowed_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_seedlock_start()
_run_shadowed_sitecustomize()
