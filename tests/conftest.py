from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


@pytest.fixture(autouse=True)
def _isolate_seedlock_state():
    """Each test starts with no root seed, no active profile and the environment it found."""
    from seedlock import _hooks, derivation, determinism

    env = dict(os.environ)
    root = derivation._root
    derivation._root = None
    os.environ.pop(derivation.ENV_VAR, None)
    yield
    for profile in reversed(determinism._stack):
        profile.restore()
    for module in list(_hooks._callbacks):
        for key in _hooks.pending(module):
            _hooks.cancel(module, key)
    derivation._root = root
    os.environ.clear()
    os.environ.update(env)


@pytest.fixture
def empty_registry():
    """No registered generator from earlier tests in this worker (a state holds them all); the
    ones there were are put back afterwards."""
    from seedlock.state import register, registered, unregister

    saved = registered()
    for name in saved:
        unregister(name)
    yield
    for name in registered():
        unregister(name)
    for name, obj in saved.items():
        register(obj, name)


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
