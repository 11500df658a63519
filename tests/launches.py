"""Child-process runs shared by the slow tests: a training script written once per session, its
runs made once per session whichever pytest-xdist worker asks first (a lock file), and a choice
(a stop step) that is the same on every worker and replayable with ``--seedlock-seed``."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from seedlock.derivation import derive


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without seedlock's variables and the hash seed: each child is set up
    by its own command line. One OpenMP thread unless set (several children share 2 cores)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    env.pop("PYTHONHASHSEED", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


class Launches:
    """Runs of commands in the session folder ``root``, each set once per session."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = clean_env() if env is None else env

    def get(self, name: str, *commands: Sequence[str], **fields: object) -> Path:
        """Run ``commands`` in turn (up to the first that fails), once, with ``{out}`` (the
        folder ``name``) and ``{field}`` for each of ``fields`` replaced in their arguments;
        return the folder."""
        out = self.root / name
        out.mkdir(exist_ok=True)
        with open(self.root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = out / "done.json"
            if not done.exists():
                status = {"rc": 0, "output": ""}
                for command in commands:
                    argv = [_filled(arg, out=out, **fields) for arg in command]
                    proc = subprocess.run(
                        argv, cwd=self.root, env=self.env, capture_output=True, text=True,
                        timeout=300,
                    )  # fmt: skip
                    status = {"rc": proc.returncode, "output": (proc.stdout + proc.stderr)[-6000:]}
                    if proc.returncode:
                        break
                done.write_text(json.dumps(status))
            status = json.loads(done.read_text())
        assert status["rc"] == 0, f"{name} failed:\n{status['output']}"
        return out


def _filled(arg: str, **fields: object) -> str:
    # Not str.format: an argument may hold braces of its own (JSON).
    for key, value in fields.items():
        arg = arg.replace("{" + key + "}", str(value))
    return arg


def session_folder(
    factory: pytest.TempPathFactory, name: str, scripts: dict[str, str] | None = None
) -> Path:
    """One folder for the whole session (under xdist, shared by its workers), with ``scripts``
    (file name -> text) written into it atomically: another worker may be starting one."""
    base = factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    root.mkdir(exist_ok=True)
    for filename, text in (scripts or {}).items():
        partial = root / f"{filename}.{os.getpid()}"
        partial.write_text(text)
        partial.replace(root / filename)
    return root


def session_choice(config: pytest.Config, key: str, options: Sequence[int]) -> int:
    """One of ``options``, from the session seed of seedlock's pytest plugin (the first when
    the plugin is off)."""
    try:
        from seedlock.pytest_plugin import _SESSION  # the plugin may be off: -p no:seedlock

        return options[derive(key, root=config.stash[_SESSION].seed) % len(options)]
    except (ImportError, KeyError):
        return options[0]
