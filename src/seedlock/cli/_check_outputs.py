"""Set aside and put back the files a command writes under ``seedlock check --outputs DIR``.

Every run starts from DIR as it was before the check. What a run creates there is moved aside
after it; what it changes or deletes of the files that were there is put back from a copy taken
before run 1 (up to a limit; beyond that, such changes are listed, not compared). At the end the
last run's files are moved back. Nothing of DIR's that the command did not change is deleted or
overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil

from seedlock.cli import UsageError

__all__ = ["Outputs", "digest"]


def digest(path: str) -> str:
    if os.path.islink(path):
        return "link:" + os.readlink(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Outputs:
    """The files a command writes under one folder; every run starts from the folder as it was
    before the check."""

    def __init__(self, folder: str, work: str, *, limit: int) -> None:
        self.folder = os.path.abspath(folder)
        if os.path.lexists(self.folder) and not os.path.isdir(self.folder):
            raise UsageError(f"--outputs {folder!r} is not a folder")
        self.existed = os.path.isdir(self.folder)
        self.work = os.path.abspath(work)  # never scanned, should --keep lie inside the folder
        self.before = self._scan()
        self.backup = os.path.join(work, "before")
        size = sum(info[1] for info in self.before.values() if not info[0])
        self.backed_up = size <= limit
        if self.backed_up:
            for rel, info in self.before.items():
                if not info[0]:
                    self._copy(os.path.join(self.folder, rel), os.path.join(self.backup, rel))

    @staticmethod
    def _copy(source: str, target: str) -> None:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)

    def _scan(self) -> dict[str, tuple[bool, int, int, int]]:
        """relative path -> (is a folder, size, mtime_ns, inode), links not followed."""
        found: dict[str, tuple[bool, int, int, int]] = {}
        if not os.path.isdir(self.folder):
            return found
        for top, dirs, files in os.walk(self.folder):
            dirs[:] = [d for d in dirs if os.path.join(top, d) != self.work]
            for name in dirs + files:
                path = os.path.join(top, name)
                st = os.lstat(path)
                is_dir = name in dirs and not os.path.islink(path)
                found[os.path.relpath(path, self.folder)] = (is_dir, st.st_size,
                                                             st.st_mtime_ns, st.st_ino)  # fmt: skip
        return found

    def collect(self, aside: str, *, last: bool) -> tuple[dict[str, str], list[str], list[str]]:
        """After a run: digests of the files it created, changed or deleted, the changed ones it
        could not put back, and the created ones. Created files go into ``aside``; unless this is
        the last run, changed and deleted ones are put back as they were before the check."""
        now = self._scan()
        files = {p for p, info in now.items() if not info[0]}
        created = sorted(p for p in files if p not in self.before)
        changed = sorted(p for p in files if p in self.before and now[p] != self.before[p])
        deleted = sorted(p for p, i in self.before.items() if not i[0] and p not in now)
        digests = {p: digest(os.path.join(self.folder, p)) for p in created + changed}
        digests.update(dict.fromkeys(deleted, "deleted"))
        for rel in created:
            target = os.path.join(aside, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(os.path.join(self.folder, rel), target)
        # Folders the run created, deepest first (only those it left empty after the move).
        for rel in sorted((p for p, i in now.items() if i[0] and p not in self.before),
                          key=len, reverse=True):  # fmt: skip
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(self.folder, rel))
        if not self.existed and os.path.isdir(self.folder) and not os.listdir(self.folder):
            os.rmdir(self.folder)
        if not self.backed_up:
            return digests, changed + deleted, created
        for rel in changed:
            self._copy(os.path.join(self.folder, rel), os.path.join(aside, rel))
        if not last:
            for rel in changed + deleted:
                path = os.path.join(self.folder, rel)
                if rel in changed:
                    os.unlink(path)  # the command's version; a copy is in `aside`
                self._copy(os.path.join(self.backup, rel), path)
                st = os.lstat(path)
                self.before[rel] = (False, st.st_size, st.st_mtime_ns, st.st_ino)
        return digests, [], created

    def put_back(self, aside: str, *, copy: bool) -> None:
        """Put the files a run created back (copies with ``copy``, to keep ``aside`` whole)."""
        if not os.path.isdir(aside):
            return
        for top, _, files in os.walk(aside):
            for name in files:
                source = os.path.join(top, name)
                rel = os.path.relpath(source, aside)
                target = os.path.join(self.folder, rel)
                if rel in self.before or os.path.lexists(target):
                    continue  # a file that was there: the command's own version stays
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if copy:
                    shutil.copy2(source, target, follow_symlinks=False)
                else:
                    shutil.move(source, target)
