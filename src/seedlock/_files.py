"""Writing files without ever leaving a half-written one, and without losing what was there.

:func:`write_atomic` writes to a temporary file beside the target and renames it over the
target (atomic on POSIX and Windows): a crash at any moment leaves either the old file or the
new one. The temporary file is created with mode 0666 minus the umask (as ``open()`` would),
and a target that already exists keeps its mode. Renaming replaces a symbolic link at the
target itself, never the file it points to.

A process killed between creating and renaming its temporary file leaves it behind; its name
records the host and the process id, so the next write of the same target removes those of
processes on this host that no longer run.

:func:`refuse_to_replace` is the check every command runs before it writes an output the user
named: a file that exists and is not one seedlock wrote is never replaced.

Imports only ``os`` and ``contextlib``: ``seedlock run`` writes its last seed through this at
every start.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["refuse_to_replace", "write_atomic"]


def _host() -> str:
    name = os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "")
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64] or "host"


def _temp_prefix(name: str) -> str:
    return f".{name}.seedlock-tmp.{_host()}."


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str, name: str) -> None:
    """Remove the temporary files that killed writers of ``directory/name`` left on this host."""
    prefix = _temp_prefix(name)
    try:
        entries = list(os.scandir(directory or os.curdir))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically. ``durable=True`` also ``fsync``s the file and
    its directory, so that the new content survives a power cut once this returns."""
    target = os.fspath(path)
    directory, name = os.path.split(target)
    remove_stale_temps(directory, name)
    tmp = os.path.join(directory, f"{_temp_prefix(name)}{os.getpid()}.{os.urandom(4).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o666)  # the umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f.fileno(), os.stat(target).st_mode & 0o7777)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable. Directories cannot be opened on Windows: skip there.
    if os.name != "posix":
        return
    fd = os.open(directory or os.curdir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_to_replace(path: str, option: str, marker: bytes, what: str) -> None:
    """Refuse, with one line (``ValueError``), an output ``path`` given as ``option`` that is a
    folder, or an existing file whose first 4 KiB lack ``marker`` (it is not ``what``)."""
    if os.path.isdir(path):
        raise ValueError(f"{option} {path!r} is a folder: name a file")
    if not os.path.lexists(path):
        return
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise ValueError(f"{option} {path!r}: cannot read it ({exc.strerror or exc})") from None
    if marker not in head:
        raise ValueError(f"{option} {path!r} exists and is not {what}: refusing to overwrite it")
