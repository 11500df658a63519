"""The few ``torch.distributed`` collectives seedlock uses, on whatever backend the group has.

Shared by :mod:`seedlock.distributed` (``sync_state``) and :mod:`seedlock.audit.replicas`
(``check_replicas``). Called only inside a collective, when the program has initialised a
process group; torch is imported by the functions, never by importing this module.
"""

from __future__ import annotations

import os
from typing import Any

from seedlock._ranks import initialised_group

__all__ = ["all_gather_bytes", "collective_device", "group_ranks", "host_view", "require_group"]


def require_group(what: str) -> Any:
    """``torch.distributed`` with its default process group, or a ``RuntimeError`` naming
    ``what`` needs one."""
    dist = initialised_group()
    if dist is None:
        raise RuntimeError(
            f"{what} needs an initialised process group: call "
            "torch.distributed.init_process_group(...) first (WORLD_SIZE is "
            f"{os.environ.get('WORLD_SIZE', 'not set')})"
        )
    return dist


def group_ranks(dist: Any, group: Any) -> list[int]:
    """The global ranks of ``group``'s members, in group-rank order."""
    if group is None:
        return list(range(dist.get_world_size()))
    return [int(r) for r in dist.get_process_group_ranks(group)]


def collective_device(dist: Any, group: Any) -> Any:
    """Where the group's collectives take their tensors: the CPU for gloo (and the CPU half of
    ``cpu:gloo,cuda:nccl``), else this process's current accelerator (NCCL needs CUDA tensors)."""
    import torch  # a collective runs: the program has imported torch

    backend = str(dist.get_backend(group)).lower()
    if "gloo" in backend or backend == "mpi":
        return torch.device("cpu")
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.current_accelerator() is not None:
        kind = accelerator.current_accelerator().type
        return torch.device(kind, accelerator.current_device_index())
    return torch.device("cuda", torch.cuda.current_device())


def all_gather_bytes(dist: Any, payload: bytes, group: Any, device: Any) -> list[bytes]:
    """Every member's ``payload`` (all of the same length), in group-rank order."""
    import torch  # a collective runs: the program has imported torch

    mine = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, mine, group=group)
    return [bytes(host_view(t.cpu())) for t in out]


def host_view(data: Any) -> Any:
    """The bytes of a CPU uint8 tensor as a buffer, without a copy when NumPy is there.

    (``bytes(tensor.untyped_storage())`` reads element by element: 100 times slower.)
    """
    try:
        return memoryview(data.numpy())
    except RuntimeError:  # torch without NumPy
        return bytes(data.tolist())
