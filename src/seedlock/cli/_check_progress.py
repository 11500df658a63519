"""The live part of ``seedlock check``'s progress line: the step and events a run has traced.

While a run goes on, and only when stderr is a terminal (and ``--show`` is off: the command's
own output is on it then), a thread reads the run's traces every half second and rewrites the
end of the progress line: ``run 1/2 (seed 0) ... step 12, 3,400 events``. A trace writes its
events in batches, so the count moves in steps. Reading a trace its process is writing may fail
now and then: such a reading is skipped.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path

__all__ = ["Progress", "so_far"]

_INTERVAL = 0.5


def so_far(folder: str) -> tuple[int, int] | None:
    """(steps completed, events written) over the traces in ``folder``, ``None`` when none
    could be read yet."""
    steps = events = 0
    seen = False
    for path in sorted(Path(folder).glob("*.trace")):
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.1)
            try:
                count, step = db.execute("SELECT max(seq) + 1, max(step) FROM events").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            continue
        seen = True
        events += int(count or 0)
        steps = max(steps, int(step or 0))
    return (steps, events) if seen else None


class Progress:
    """Rewrites the end of the current progress line while a run goes on (``with``)."""

    def __init__(self, folder: str, prefix: str, *, live: bool) -> None:
        self.folder, self.prefix, self.live = folder, prefix, live
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.shown = ""

    def __enter__(self) -> Progress:
        return self

    def begin(self) -> None:
        """Start the updates: called once the command runs, from the thread that waits for it,
        so that the updating thread inherits its blocked signals."""
        if self.live:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
            if self.shown:  # leave the line as it was before, for the result that follows
                sys.stderr.write("\r" + self.prefix + " " * len(self.shown) + "\r" + self.prefix)
                sys.stderr.flush()

    def _loop(self) -> None:
        while not self.stop.wait(_INTERVAL):
            found = so_far(self.folder)
            if found is None or not found[1]:
                continue  # no trace yet, or none of its events written yet
            text = f" step {found[0]}, {found[1]:,} events"
            pad = " " * max(0, len(self.shown) - len(text))
            sys.stderr.write("\r" + self.prefix + text + pad)
            sys.stderr.flush()
            self.shown = text
