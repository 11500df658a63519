"""Running the user's command: started with ``posix_spawnp``, signals passed on exactly once.

A signal sent to ``seedlock run`` / ``seedlock check`` is passed on to the command, *unless*
the kernel already delivered it there too. Ctrl-C (and Ctrl-\\, a hang-up) is sent by the
terminal to its whole foreground process group, which holds the command as well as seedlock;
a supervisor, an IDE or ``kill`` signals seedlock's pid alone. The two are told apart by the
signal's origin (``si_code``): the terminal's come from the kernel (``SI_KERNEL``). So the
command receives SIGINT once in both cases, as it would without seedlock around it. (A signal
that another program sends to the whole process group reaches the command directly and once
more through seedlock: that origin cannot be told from the pid alone.)

This needs ``signal.sigwaitinfo`` (Linux and most POSIX systems, not macOS); elsewhere SIGINT
is left to the terminal, as before, and the other signals are passed on.

Imports only ``os`` and ``signal``: ``seedlock run`` starts every seeded program through this.
"""

from __future__ import annotations

import contextlib
import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = ["FORWARDED", "run"]

#: The signals passed on to the command.
FORWARDED = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
_SI_KERNEL = 0x80  # si_code of a signal the kernel sent (the terminal's, to a process group)


def _spawn(
    command: list[str],
    env: dict[str, str],
    mask: Iterable[int],
    stdout: int | None,
    stderr: int | None,
) -> int:
    # Python ignores SIGPIPE and SIGXFSZ; a child must start with the defaults, as with
    # subprocess's restore_signals (or `cmd | head` would not stop cmd).
    default = {getattr(signal, n) for n in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, n)}
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in ((stdout, 1), (stderr, 2))
               if fd is not None]  # fmt: skip
    return os.posix_spawnp(
        command[0], command, env, file_actions=actions, setsigdef=default, setsigmask=mask
    )


def run(
    command: list[str],
    env: dict[str, str],
    *,
    stdout: int | None = None,
    stderr: int | None = None,
    while_running: Callable[[], object] | None = None,
) -> tuple[int, list[int]]:
    """Run ``command`` to its end, passing signals on; return its exit code (``-N`` when
    signal N ended it, as subprocess reports it) and the signals seedlock itself received.

    ``stdout`` / ``stderr`` are file descriptors for the command's output (default: ours).
    ``while_running`` is called once the command has started; signals that arrive meanwhile
    are passed on when it returns. ``OSError`` when the command cannot be started.
    """
    waitinfo = getattr(signal, "sigwaitinfo", None)
    if waitinfo is None or not hasattr(os, "posix_spawnp"):  # pragma: no cover - not Linux
        return _run_with_handlers(command, env, stdout, stderr, while_running)
    watched = {*FORWARDED, signal.SIGCHLD}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    received: list[int] = []
    try:
        pid = _spawn(command, env, previous, stdout, stderr)
        if while_running is not None:
            while_running()
        while True:
            info = waitinfo(watched)
            if info.si_signo == signal.SIGCHLD:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status), received
                continue
            received.append(info.si_signo)
            if info.si_code == _SI_KERNEL and _same_group(pid):
                continue  # the terminal signalled the whole group: the command has it too
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                os.kill(pid, info.si_signo)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _same_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == os.getpgrp()
    except OSError:
        return False


def _run_with_handlers(
    command: list[str],
    env: dict[str, str],
    stdout: int | None,
    stderr: int | None,
    while_running: Callable[[], object] | None,
) -> tuple[int, list[int]]:  # pragma: no cover - macOS and other systems without sigwaitinfo
    import subprocess  # heavy for every start (benchmarks/bench_cli.py): only without sigwaitinfo

    received: list[int] = []
    proc = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous: dict[int, Any] = {}
    for signum in FORWARDED:
        # SIGINT from a terminal reaches the command directly; forwarding it would double it.
        handler = signal.SIG_IGN if signum == signal.SIGINT else forward
        previous[signum] = signal.signal(signum, handler)
    try:
        if while_running is not None:
            while_running()
        return proc.wait(), received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
