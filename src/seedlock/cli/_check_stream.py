"""Keep a run's stdout and stderr in files and, with ``seedlock check --show``, copy them to
seedlock's stderr as they come.

Without ``--show`` the command writes straight into the files. With it, each stream goes
through a pipe that a thread copies to its file and to seedlock's stderr (stdout stays the
verdict's). The threads start once the command has, from the thread that waits for it: they
inherit its blocked signals, so every signal still reaches the waiting thread.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import BinaryIO

__all__ = ["Streams"]

#: How long the copies may go on after the command ended (a process it left running may still
#: hold the pipes open).
_DRAIN_SECONDS = 5.0
_TERMINAL = threading.Lock()  # one stream's lines at a time on seedlock's stderr


class Streams:
    """The two output files of one run (``with`` closes them)."""

    def __init__(self, out_path: str, err_path: str, *, show: bool) -> None:
        self.files: list[BinaryIO] = [open(out_path, "wb"), open(err_path, "wb")]  # noqa: SIM115
        self.pipes = [os.pipe(), os.pipe()] if show else []
        self.threads: list[threading.Thread] = []

    def fds(self) -> tuple[int, int]:
        """The descriptors the command writes to: (stdout, stderr)."""
        if self.pipes:
            return self.pipes[0][1], self.pipes[1][1]
        return self.files[0].fileno(), self.files[1].fileno()

    def started(self) -> None:
        """Once the command runs: close our ends of the pipes it writes and start copying."""
        for (read, write), file in zip(self.pipes, self.files, strict=False):
            os.close(write)
            thread = threading.Thread(target=_copy, args=(read, file), daemon=True)
            thread.start()
            self.threads.append(thread)

    def __enter__(self) -> Streams:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pipes and not self.threads:  # the command did not start
            for read, write in self.pipes:
                os.close(read)
                os.close(write)
        for thread in self.threads:
            thread.join(_DRAIN_SECONDS)
        for file in self.files:
            file.close()


def _copy(read: int, file: BinaryIO) -> None:
    terminal = sys.stderr.buffer
    pending = b""  # the end of the last chunk, after its last line end: not shown yet

    def show(text: bytes) -> None:
        if text:
            with _TERMINAL:
                terminal.write(text)
                terminal.flush()

    try:
        while chunk := os.read(read, 1 << 16):
            file.write(chunk)
            file.flush()
            # Whole lines only (a "\r" ends a progress bar's line): an unbuffered command
            # writes a line's text and its newline apart, and the other stream's line would
            # land between them.
            pending += chunk
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
            if cut == 0 and len(pending) >= 1 << 16:
                cut = len(pending)  # a line that long is shown as it comes
            show(pending[:cut])
            pending = pending[cut:]
        show(pending)
    except (OSError, ValueError):  # a closed terminal or file: the copy ends, the run does not
        pass
    finally:
        os.close(read)
