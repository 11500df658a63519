"""Op-level recording: a dispatch mode that records each aten op's output in a trace.

Used by :class:`seedlock.audit.traces.Tracer` with ``ops=True`` (every op) or ``ops_in=NAME``
(only the ops that run while module ``NAME``, or a module under it, is running).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from seedlock.audit.fingerprints import tensors_in

if TYPE_CHECKING:
    from seedlock.audit.traces import Tracer

__all__ = ["OpRecorder"]


class OpRecorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every aten op's output, named by the module it runs in.

    Parameters
    ----------
    tracer
        The tracer that records the events and knows the module stack.
    within
        Record only while this module (a name on the tracer's module stack) is running;
        default ``None``: every op.
    """

    def __init__(self, tracer: Tracer, within: str | None = None) -> None:
        super().__init__()
        self.tracer = tracer
        self.within = within

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = str(func._schema.name)
        # empty / empty_like / new_empty / empty_strided return uninitialised memory: their
        # bits are garbage by definition and would look like nondeterminism.
        if "empty" in name or self.tracer.busy:
            return out
        stack = self.tracer._stack
        if self.within is not None and self.within not in stack:
            return out
        tensors = list(tensors_in(out))
        if tensors:
            module = stack[-1] if stack else "<outside modules>"
            self.tracer.record("op", module, tensors, op=name)
        return out
