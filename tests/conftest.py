from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Every process-wide setting of seedlock, as (module, attribute): what one test changes, the next
# test must not see. Mutable containers are copied on save and put back in place.
PROCESS_STATE = (
    ("seedlock.derivation", "_root"),  # the root seed
    ("seedlock.determinism", "_stack"),  # the determinism profiles switched on
    ("seedlock._registry", "_entries"),  # registered generators, each with its scope
    ("seedlock._registry", "_globals_per_rank"),  # the scope of the global generators
    ("seedlock.seeding", "_seeded"),  # what each global generator was seeded with
    ("seedlock._forking", "_fork_enabled"),  # reseed_on_fork
    ("seedlock._forking", "_fork_lineage"),
    ("seedlock._forking", "_fork_children"),
)


def _save_process_state() -> list[tuple[object, str, object]]:
    import importlib

    saved = []
    for module_name, attribute in PROCESS_STATE:
        module = importlib.import_module(module_name)
        value = getattr(module, attribute)
        saved.append((module, attribute, value.copy() if hasattr(value, "copy") else value))
    return saved


def _restore_process_state(saved: list[tuple[object, str, object]]) -> None:
    for module, attribute, value in saved:
        current = getattr(module, attribute)
        if isinstance(current, dict):
            current.clear()
            current.update(value)
        elif isinstance(current, list):
            current[:] = value
        else:
            setattr(module, attribute, value)


@pytest.fixture(autouse=True)
def _isolate_seedlock_state():
    """Each test starts with no root seed and finds, afterwards, every process-wide setting of
    seedlock (PROCESS_STATE), the pending import hooks and the environment as they were."""
    from seedlock import _hooks, derivation, determinism

    env = dict(os.environ)
    saved = _save_process_state()
    derivation._root = None
    os.environ.pop(derivation.ENV_VAR, None)
    yield
    for profile in reversed(determinism._stack):
        profile.restore()
    for module in list(_hooks._callbacks):
        for key in _hooks.pending(module):
            _hooks.cancel(module, key)
    _restore_process_state(saved)
    os.environ.clear()
    os.environ.update(env)


@pytest.fixture
def empty_registry():
    """No registered generator from earlier tests in this worker (a state holds them all); the
    autouse fixture puts back the ones there were."""
    from seedlock import _registry

    _registry._entries.clear()


def register_all(**generators: object) -> dict[str, object]:
    """Register each generator under its keyword's name (for tests of capture and restore)."""
    import seedlock

    for name, generator in generators.items():
        seedlock.register(generator, name)
    return generators


def run_python(code: str, *, env: dict[str, str] | None = None, check: bool = True):
    """Run ``code`` in a fresh interpreter; returns the CompletedProcess (text mode)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK_")}
    full_env.pop("PYTHONHASHSEED", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stderr}")
    return proc
