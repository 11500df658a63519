"""seedlock's child bootstrap (not a module to import yourself).

``seedlock run`` puts this folder first on ``PYTHONPATH``, so every Python interpreter it starts
(and every interpreter those start: ``torchrun`` ranks, subprocesses) imports this file at
start-up, before any user code: it seeds the interpreter from ``SEEDLOCK_SEED``, then runs the
``sitecustomize`` it shadows, if there is one. It never stops the program: a failure is one line
on stderr.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _seedlock_start() -> None:
    try:
        try:
            # Here, not at the top: a seedlock that cannot be imported must not stop the program.
            from seedlock import _bootstrap
        except ImportError:
            _load_launchers_seedlock()
            from seedlock import _bootstrap  # now the launcher's copy, loaded just above
        _bootstrap.start()
    except Exception as exc:  # never break the user's program
        print(f"seedlock: this interpreter is NOT seeded: {exc!r}", file=sys.stderr)


def _load_launchers_seedlock() -> None:
    """Another interpreter than seedlock's own (a system python, another venv, another Python
    version): seedlock is pure Python, so the launcher's copy serves. Only that package is
    loaded from it; its folder (often a site-packages of another Python) is not put on
    sys.path, whose compiled packages would not load here."""
    package = os.path.join(os.environ.get("SEEDLOCK_PACKAGE_PATH", ""), "seedlock")
    spec = importlib.util.spec_from_file_location(
        "seedlock", os.path.join(package, "__init__.py"), submodule_search_locations=[package]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"seedlock is not importable here, nor from {package}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["seedlock"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["seedlock"]
        raise


def _run_shadowed_sitecustomize() -> None:
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
