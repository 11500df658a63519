"""Traces: what a model computed, event by event, in execution order, streamed to SQLite.

``with seedlock.audit.trace(model, "run.trace"):`` records, named by module path:

=============  =========================================================================
event          recorded
=============  =========================================================================
``batch``      the tensors entering the root module (the batch)
``forward``    each module's output; with the fingerprints of its inputs and of the RNG
               state (torch CPU, and CUDA once started) just before it ran
``grad_input`` the gradient with respect to each module's tensor inputs, in backward order
``grad``       each parameter's gradient once accumulated
``param``      every parameter when its root module first runs, and after each optimizer
               step (``step`` counts those steps)
``op``         with ``ops=True``: every aten op's output, with the module it ran in; with
               ``ops_in=NAME``: those run inside module ``NAME`` only
=============  =========================================================================

and, in the ``entropy`` table, each place where randomness that no seed reaches entered (an
unseeded generator made, ``os.urandom`` called, a seed read from the clock: see
:mod:`seedlock.audit.entropy`), with its file, line, function and the module then running.

Without a model (``trace(None, path)``, what ``seedlock check`` uses for unmodified scripts)
every module is traced through torch's global module hooks; a module called with no traced
module around it is a root, and names come from its ``named_modules()``. Names start with the
root's class: ``Net``, ``Net.encoder.0``, ``Net.encoder.0.weight``.

The file (format version 3: fingerprints use the trace's hash throughout; version 2 had no
``entropy`` table, and is still read)::

    meta(key TEXT PRIMARY KEY, value TEXT)         format, version, torch, argv, summaries
                                                   ("1"/"0"), environment (audit.environment)
    events(seq INTEGER PRIMARY KEY,                execution order, from 0
           step INTEGER,                           optimizer steps completed before it
           module TEXT,                            module path (root: its class name),
                                                   or parameter name for grad / param
           kind TEXT,                              module class (forward, grad_input)
           event TEXT, op TEXT,                    see above; op: aten::name for op events
           fingerprint TEXT, dtype TEXT, shape TEXT,
           sum REAL, absmax REAL,                  the summary: NULL in every row when
           nans INTEGER, infs INTEGER,             traced with summaries=False
           rng TEXT, inputs TEXT)                  forward only: fingerprints before it ran
    entropy(seq INTEGER,                           events recorded before it
            kind TEXT,                             what drew it: numpy, os.urandom, clock, ...
            file TEXT, line INTEGER, function TEXT first frame outside the libraries
            module TEXT)                           module path running then, or NULL

``summaries=False`` records fingerprints only (the summary columns NULL): the cheapest trace,
which still finds every divergence and its cause. Rows are buffered and written every
``flush_every`` events, so memory stays bounded however long the run; fingerprints of tensors
on an accelerator are computed there and come to the host with the rows, in one transfer (with
summaries: one transfer per event). A DTensor is recorded by its local shard, its ``shape``
reading ``(2, 4) local of (4, 4) [Shard(dim=0)]``. The guide: ``docs/audit.md`` (traces and
``compare``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from types import TracebackType
from typing import Any

import torch
from torch.nn.modules import module as nn_module
from torch.optim.optimizer import register_optimizer_step_post_hook

from seedlock._version import __version__
from seedlock.audit import entropy, environment
from seedlock.audit._ops import OpRecorder
from seedlock.audit._tracefile import COLUMNS, FORMAT, SCHEMA, VERSION, replaceable
from seedlock.audit.fingerprints import (
    ALGORITHM,
    Memo,
    Pending,
    resolve,
    rng_fingerprint,
    tensors_in,
)

__all__ = ["FORMAT", "SCHEMA", "Tracer", "trace"]


# Forks this process has come from: a tracer records only where it was made (os.getpid() per
# event costs a system call). POSIX; without fork() there is no child to tell apart.
_forks = [0]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _forks.append(_forks.pop() + 1))


class Tracer:
    """Records a trace to ``path``; use :func:`trace` (a context manager) to build one.

    Parameters
    ----------
    path, model, optimizer, ops, ops_in, summaries, until_step
        As for :func:`trace` (``summaries`` defaults to ``True`` here).
    flush_every
        Rows buffered before they are written; default 2000.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        model: torch.nn.Module | None = None,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        ops: bool = False,
        ops_in: str | None = None,
        summaries: bool = True,
        until_step: int | None = None,
        flush_every: int = 2000,
    ) -> None:
        self.path, self.model, self.optimizer = os.fspath(path), model, optimizer
        self.ops, self.ops_in, self.summaries = ops, ops_in, summaries
        self.flush_every, self.step, self.events = flush_every, 0, 0
        self.until_step = until_step
        self._recording = True  # False once step until_step is over
        self._threads: set[int] = set()  # the thread counts root modules were called with
        self._rows: list[tuple[Any, ...]] = []
        self._entropy: list[tuple[Any, ...]] = []
        self._names: dict[int, str] = {}
        self._params: dict[int, str] = {}
        self._stack: list[str] = []
        self._pending: dict[int, tuple[str, str | Pending]] = {}
        self._handles: list[Any] = []
        self._grad_hooks: dict[tuple[str, str], Any] = {}
        self._op_mode: Any = None
        self._initial: set[int] = set()
        self._db: sqlite3.Connection | None = None
        # Fingerprints of recent tensors; on an accelerator a row holds a Pending (also in
        # _unresolved) until flush() brings them all to the host in one transfer.
        self._memo = Memo(defer=True)
        self._unresolved: list[Pending] = []
        # Set while seedlock's own hooks compute fingerprints, so that op-level recording
        # does not record seedlock's ops.
        self.busy = False
        self._pid = os.getpid()
        self._forks = _forks[0]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Tracer:
        """Create the file and install the hooks (what entering ``with`` does).

        Returns
        -------
        Tracer
            ``self``.

        Raises
        ------
        FileExistsError
            ``path`` exists and is not a seedlock trace (a trace is replaced).
        """
        if os.path.lexists(self.path):
            replaceable(self.path)
            os.remove(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
        meta = {
            "format": FORMAT,
            "version": str(VERSION),
            "seedlock": __version__,
            "torch": torch.__version__,
            "hash": ALGORITHM,
            "argv": json.dumps(sys.argv),
            "threads": str(torch.get_num_threads()),
            "summaries": "1" if self.summaries else "0",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **environment.facts(),
        }
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
        if self.model is not None:
            self._adopt(self.model)
            for module in self.model.modules():
                self._handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._post, with_kwargs=True))
        else:
            self._handles.append(nn_module.register_module_forward_pre_hook(self._global_pre))
            self._handles.append(nn_module.register_module_forward_hook(self._global_post))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_post_hook(self._after_step))
        else:
            self._handles.append(register_optimizer_step_post_hook(self._after_step))
        if self.ops or self.ops_in is not None:
            self._op_mode = OpRecorder(self, None if self.ops else self.ops_in)
            self._op_mode.__enter__()
        entropy.activate(self._note_entropy)
        return self

    def stop(self) -> None:
        """Remove the hooks, write what is buffered and close the file (what leaving ``with``
        does); a no-op in a forked child."""
        if os.getpid() != self._pid:
            return
        entropy.deactivate(self._note_entropy)
        if self._op_mode is not None:
            self._op_mode.__exit__(None, None, None)
            self._op_mode = None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._db is not None:
            self.flush()
            seen = ",".join(map(str, sorted(self._threads or {torch.get_num_threads()})))
            self._db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("events", str(self.events)), ("threads_seen", seen)],
            )
            self._db.commit()
            self._db.close()
            self._db = None

    def __enter__(self) -> Tracer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- recording ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the buffered rows now."""
        if self._db is not None and (self._rows or self._entropy):
            if self._unresolved:  # fingerprints still on an accelerator: one transfer for all
                busy, self.busy = self.busy, True
                try:
                    resolve(self._unresolved)
                finally:
                    self.busy = busy
                self._unresolved.clear()
                self._rows = [tuple(str(v) if isinstance(v, Pending) else v for v in row)
                              for row in self._rows]  # fmt: skip
            self._db.executemany(
                f"INSERT INTO events VALUES ({', '.join('?' * COLUMNS)})", self._rows
            )
            self._db.executemany("INSERT INTO entropy VALUES (?, ?, ?, ?, ?, ?)", self._entropy)
            self._db.commit()
            self._rows.clear()
            self._entropy.clear()

    def meta(self, key: str, value: str) -> None:
        """Add a ``meta`` entry (e.g. the command line) to the trace, while it is open.

        Parameters
        ----------
        key, value
            The entry; an existing ``key`` is replaced.
        """
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def record(
        self,
        event: str,
        module: str,
        tensors: list[torch.Tensor],
        *,
        kind: str | None = None,
        op: str | None = None,
        rng: str | None = None,
        inputs: str | Pending | None = None,
    ) -> None:
        """Record one event (what the hooks call); ignored in a forked child.

        Parameters
        ----------
        event, module
            The ``event`` and ``module`` columns (see the module docstring).
        tensors
            The event's tensors: fingerprinted and (with ``summaries``) summarised together.
        kind, op, rng, inputs
            The optional columns of the same names; default ``None``.
        """
        if _forks[0] != self._forks or not self._recording:
            return  # a forked child (a DataLoader worker) inherited the hooks: not ours
        busy, self.busy = self.busy, True
        try:
            fp = self._memo.event(tensors, self.summaries)  # fingerprint, dtype, ..., infs
        finally:
            self.busy = busy
        self._rows.append((self.events, self.step, module, kind, event, op, *fp, rng, inputs))
        if isinstance(fp[0], Pending) or isinstance(inputs, Pending):
            self._unresolved += [v for v in (fp[0], inputs) if isinstance(v, Pending)]
        self.events += 1
        if len(self._rows) >= self.flush_every:
            self.flush()

    def _note_entropy(self, kind: str, file: str, line: int, function: str) -> None:
        """Record a place where entropy entered (what :mod:`seedlock.audit.entropy` calls)."""
        if os.getpid() == self._pid:
            module = self._stack[-1] if self._stack else None
            self._entropy.append((self.events, kind, file, line, function, module))

    def _adopt(self, root: torch.nn.Module) -> None:
        """Name ``root``'s modules and parameters: ``Net``, ``Net.fc1``, ``Net.fc1.weight``."""
        root_name = type(root).__name__
        for name, module in root.named_modules():
            self._names.setdefault(id(module), f"{root_name}.{name}" if name else root_name)
        for name, param in root.named_parameters():
            self._params.setdefault(id(param), f"{root_name}.{name}")
            if param.requires_grad and hasattr(param, "register_post_accumulate_grad_hook"):
                self._handles.append(param.register_post_accumulate_grad_hook(self._grad))

    def _name(self, module: torch.nn.Module) -> str:
        name = self._names.get(id(module))
        if name is None:
            parent = self._stack[-1] if self._stack else ""
            name = f"{parent}/{type(module).__name__}" if parent else type(module).__name__
            self._names[id(module)] = name
        return name

    def _pre(self, module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        one = not kwargs and len(args) == 1 and isinstance(args[0], torch.Tensor)
        inputs = [args[0]] if one else list(tensors_in((args, kwargs)))  # one: the common case
        name = self._name(module)
        if not self._stack:
            self._threads.add(torch.get_num_threads())
            self.record("batch", name, inputs, kind=type(module).__name__)
            if self.step == 0 and id(module) not in self._initial:
                # The parameters a root starts from: a divergence here is initialisation.
                self._initial.add(id(module))
                for pname, param in module.named_parameters():
                    full = self._params.get(id(param), pname)
                    self.record("param", full, [param.detach()])
        busy, self.busy = self.busy, True
        try:
            self._pending[id(module)] = (rng_fingerprint(), self._memo.all(inputs))
        finally:
            self.busy = busy
        self._stack.append(name)
        for t in inputs:
            if t.requires_grad:
                t.register_hook(self._grad_input_hook(name, type(module).__name__))

    def _post(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        name = self._name(module)
        if self._stack:
            self._stack.pop()
        rng, inputs = self._pending.pop(id(module), (None, None))
        outputs = [output] if isinstance(output, torch.Tensor) else list(tensors_in(output))
        self.record("forward", name, outputs, kind=type(module).__name__, rng=rng, inputs=inputs)

    def _grad_input_hook(self, name: str, kind: str) -> Any:
        """The hook recording the gradient of module ``name``'s input (made once per name)."""
        hook = self._grad_hooks.get((name, kind))
        if hook is None:

            def hook(grad: torch.Tensor) -> None:
                self.record("grad_input", name, [grad], kind=kind)

            self._grad_hooks[name, kind] = hook
        return hook

    def _grad(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self.record("grad", self._params.get(id(param), "?"), [param.grad])

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.step += 1  # the parameters below are those after step `self.step`
        for group in optimizer.param_groups:
            for param in group["params"]:
                name = self._params.get(id(param))
                if name is not None:
                    self.record("param", name, [param.detach()])
        if self.until_step is not None and self.step > self.until_step:
            self._recording = False  # the step of interest and the parameters it left: done

    # -- global mode -------------------------------------------------------------------------
    def _global_pre(self, module: torch.nn.Module, args: Any) -> None:
        if not self._stack and id(module) not in self._names:
            self._adopt(module)
        self._pre(module, args, {})

    def _global_post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self._post(module, args, {}, output)


def trace(
    model: torch.nn.Module | None,
    path: str | os.PathLike[str],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    ops: bool = False,
    ops_in: str | None = None,
    summaries: bool = False,
    until_step: int | None = None,
) -> Tracer:
    """Record what ``model`` computes to the SQLite file ``path`` (see the module docstring).

    Parameters
    ----------
    model
        The model to trace; ``None``: every module of the program (global mode).
    path
        The trace file; an existing seedlock trace is replaced.
    optimizer
        Limits the ``param`` events to that optimizer's steps; default ``None``: any optimizer
        stepping the model's parameters.
    ops
        Also record every aten op (slower; it names the op inside the first diverging module);
        default ``False``.
    ops_in
        Record aten ops only while the module of this name (``"Net.encoder"``), or a module
        under it, is running; default ``None``. ``ops=True`` records every op regardless.
    summaries
        Also record each event's summary (sum, max |x|, NaN and Inf counts: the size of a
        divergence, and what ``compare``'s tolerances need); default ``False``: fingerprints
        only, the cheapest trace (meta ``summaries`` is ``"0"`` and the events' ``sum`` ..
        ``infs`` are NULL); every divergence is still found, with its cause.
    until_step
        Record the events of the optimizer steps up to this one (their ``step`` column at most
        ``until_step``) and the parameters the next step leaves, then nothing more; default
        ``None``: everything.

    Returns
    -------
    Tracer
        Records from entering ``with`` (or :meth:`Tracer.start`) to leaving it.

    Raises
    ------
    FileExistsError
        On entering: ``path`` exists and is not a seedlock trace; it is left as it was.

    Examples
    --------
    >>> with seedlock.audit.trace(model, "a.trace", optimizer=opt):
    ...     train_step()
    """
    return Tracer(path, model, optimizer=optimizer, ops=ops, ops_in=ops_in, summaries=summaries,
                  until_step=until_step)  # fmt: skip
