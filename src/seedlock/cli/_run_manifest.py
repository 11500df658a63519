"""The manifest of a ``seedlock run``: where it may go, what it records, and writing it.

While the command runs, every seeded interpreter writes a record of itself into a private
folder in the temporary directory (:func:`make_record_dir`); once it has exited, those records,
the environment collected meanwhile and the command's times and exit status become the manifest
(:func:`build`), written where ``--manifest`` says or in ``.seedlock/runs/`` (:func:`save`).

Imported by ``seedlock run`` at every start, so, like it, this imports only what the start-up
path needs at the top (see benchmarks/bench_cli.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from seedlock import _files
from seedlock._text import printable, reason
from seedlock.derivation import format_seed, pythonhashseed_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from seedlock.derivation import Seed

__all__ = ["build", "check_path", "collect_environment", "discard", "make_record_dir", "save"]


def check_path(path: str) -> None:
    """Refuse, before the command runs, a --manifest that cannot be written or would replace
    a file that is not a seedlock manifest."""
    _files.refuse_to_replace(path, "--manifest", b'"seedlock.manifest"', "a seedlock manifest")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--manifest {path!r}: {folder} cannot be written")


def make_record_dir() -> str | None:
    """A private folder for the interpreters' records, in the temporary directory: nothing of
    the run's plumbing lands in the user's tree, even when the launcher is killed."""
    for base in (os.environ.get("TMPDIR"), "/tmp", "/var/tmp"):
        if not base:
            continue
        path = os.path.join(base, f"seedlock-run-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.mkdir(path, 0o700)
        except OSError:
            continue
        return path
    print("seedlock run: no temporary folder can be written: no manifest", file=sys.stderr)
    return None


def discard(folder: str) -> None:
    """Remove the records folder and what is in it, as far as possible."""
    for name in os.listdir(folder):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, name))
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def collect_environment(env: dict[str, str]) -> dict[str, Any]:
    """The machine and project part of the manifest, with the child's environment; never
    fails the run."""
    # seedlock.manifest: read while the command runs, so it never delays the command's start.
    from seedlock import manifest as mf

    try:
        return mf.environment(env=env)
    except Exception as exc:  # a broken git, an odd platform: the run still gets its manifest
        print(f"seedlock run: environment not fully recorded: {reason(exc)}", file=sys.stderr)
        return {"schema": mf.SCHEMA, "version": mf.VERSION}


def _records(record_dir: str) -> list[dict[str, Any]]:
    import json  # imports re: kept off the start-up path, needed only once the command is done

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


def build(
    args: Any,
    command: list[str],
    seed: Seed,
    record_dir: str,
    *,
    environment: dict[str, Any],
    times: tuple[float, float],
    returncode: int,
    skipped: str | None,
) -> dict[str, Any]:
    """The manifest of a finished run, from the records in ``record_dir`` (then removed)."""
    # seedlock.manifest: already loaded by collect_environment while the command ran.
    from seedlock import manifest as mf

    processes = _records(record_dir)
    helpers = _helpers(record_dir)
    discard(record_dir)
    warnings = []
    if skipped:
        warnings.append(f"python {skipped} skipped seedlock's bootstrap: NOT seeded")
    manifest: dict[str, Any] = {
        **environment,
        "seed": {
            "root": format_seed(seed),
            "deterministic": bool(args.deterministic),
            "hash_seed": pythonhashseed_for(seed),
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
        "warnings": warnings,
    }
    if helpers:
        manifest["helper_processes"] = helpers
    return manifest


def _helpers(record_dir: str) -> dict[str, int]:
    """How many helper processes of each kind ran (``seedlock._bootstrap.helper_kind``): the
    interpreters that libraries start for themselves, counted rather than recorded."""
    counts: dict[str, int] = {}
    for name in os.listdir(record_dir):
        if not name.endswith(".helper"):
            continue
        try:
            with open(os.path.join(record_dir, name), encoding="utf-8") as f:
                kind = f.read(200).strip() or "unknown"
        except OSError:
            continue
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def save(args: Any, manifest: dict[str, Any], seed: Seed, cache: str) -> None:
    """Write the manifest where asked (or in ``CACHE/runs/``); where that fails, in the
    temporary directory. Never changes the run's exit status."""
    import json  # imports re: kept off the start-up path, needed only once the command is done

    data = (json.dumps(manifest, indent=2, default=str) + "\n").encode()
    path = args.manifest or _default_path(cache, manifest["command"]["start"], seed)
    try:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        _files.write_atomic(path, data)
    except OSError as exc:
        import tempfile  # heavy (random, shutil), and needed only when the manifest's place fails

        where = "not written anywhere"
        with contextlib.suppress(OSError):
            fd, fallback = tempfile.mkstemp(prefix="seedlock-manifest-", suffix=".json")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            where = f"written to {fallback}"
        print(
            f"seedlock run: cannot write the manifest to {printable(path)} ({reason(exc)}); "
            f"{where}",
            file=sys.stderr,
        )
        return
    if not args.quiet:
        print(f"seedlock: manifest {printable(path)}", file=sys.stderr)


def _default_path(cache: str, start: str, seed: Seed) -> str:
    stamp = start.replace(":", "").replace("-", "").replace("+0000", "Z").replace("+00:00", "Z")
    label = format_seed(seed) if isinstance(seed, int) and seed.bit_length() < 64 else "custom"
    path = os.path.join(cache, "runs", f"{stamp}-seed{label}.json")
    n = 1
    while os.path.lexists(path):  # two runs within the same millisecond
        n += 1
        path = os.path.join(cache, "runs", f"{stamp}-seed{label}-{n}.json")
    return path
