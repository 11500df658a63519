"""torch's device generators (CUDA, XPU, MTIA and an out-of-tree ``privateuse1`` device) without
starting a device or harming ``fork``.

Until a device starts, torch keeps the seeds asked for it in a queue (``_lazy_seed_tracker``:
the latest ``manual_seed_all`` and the latest ``manual_seed``, in call order) and runs them when
the first op starts the device, after every other queued call. That queue *is* the device's
state before it starts, so it is read as plain data here (:func:`queued`) and put back
(:func:`requeue`): a state captured before the device started restores the seeds pending then.

Counting devices is not free either: without NVML, ``torch.cuda.device_count()`` asks the CUDA
driver, which stops forked children (DataLoader workers) from using CUDA. :func:`count` never
does that.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

from seedlock.backends import checks

__all__ = [
    "PER_DEVICE",
    "capturing_graph",
    "count",
    "for_peers",
    "from_peer",
    "modules",
    "queued",
    "queued_problems",
    "requeue",
    "restore_when_started",
]

#: torch modules that keep one generator per device and queue seeds until the device starts.
PER_DEVICE = ("cuda", "xpu", "mtia")
#: The seed a device generator has when nothing seeded it (c10's default_rng_seed_val).
DEFAULT_SEED = 67280421310721
_SEEDS = {"manual_seed_all.<locals>.cb": "all", "manual_seed.<locals>.cb": "current"}
_STATES_ATTR = "_seedlock_states"
#: The state key of an out-of-tree device's generators.
CUSTOM = "privateuse1"
# torch.mps.get_rng_state() sizes: seed and offset (torch 2.1), then Philox words first, +28.
_MPS_BYTES = (16, 36, 44)
# CUDA and XPU generators (Philox): the seed, then the offset.
PHILOX = struct.Struct("<Qq")


def count(torch: Any, kind: str) -> int | None:
    """How many ``kind`` devices this process sees; ``None`` when only starting the device's
    driver could tell (CUDA without NVML), which would make forked children unable to use it."""
    module = getattr(torch, kind, None)
    if module is None:
        return 0
    compiled = getattr(module, "_is_compiled", None)
    if compiled is not None and not compiled():
        return 0
    if kind != "cuda" or module.is_initialized():
        return int(module.device_count()) if _lists_states(module) else 0
    if getattr(module, "_cached_device_count", None) is not None:
        return int(module.device_count())
    # NVML loads its library and starts on every call (capture() asks on each call): the answer
    # is kept for as long as CUDA_VISIBLE_DEVICES, which it depends on, stays as it is.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible not in _NVML_COUNTS:
        nvml = getattr(
            module, "_device_count_amdsmi" if torch.version.hip else "_device_count_nvml", None
        )
        if nvml is None:  # pragma: no cover - a torch older than its NVML count
            return int(module.device_count())
        n = int(nvml())
        _NVML_COUNTS[visible] = n if n >= 0 else None
    return _NVML_COUNTS[visible]


#: CUDA devices NVML counted before CUDA started, by CUDA_VISIBLE_DEVICES (None: NVML missing).
_NVML_COUNTS: dict[str | None, int | None] = {}


def modules(torch: Any) -> Iterator[tuple[str, Any, int | None]]:
    """(kind, torch module, device count or ``None``) for each per-device kind present here."""
    for kind in PER_DEVICE:
        n = count(torch, kind)
        if n != 0:
            yield kind, getattr(torch, kind), n


def _lists_states(module: Any) -> bool:
    return all(hasattr(module, name) for name in ("get_rng_state_all", "is_initialized"))


def queued(module: Any) -> list[list[Any]] | None:
    """The seeds queued for ``module``'s devices, in the order they will run, as plain data:
    ``["all", seed]``, ``["current", seed]`` (the current device only) or ``["states", [blob,
    ...]]`` (a restore waiting for the start). ``None`` when a queued call is not one of these
    (``torch.cuda.seed()`` draws OS entropy when it runs: nothing to record)."""
    tracker = getattr(module, "_lazy_seed_tracker", None)
    if tracker is None:
        return None
    found: list[list[Any]] = []
    for entry in tracker.get_calls():
        if not entry:
            continue
        call = entry[0]
        states = getattr(call, _STATES_ATTR, None)
        if states is not None:
            found.append(["states", list(states)])
            continue
        what = _SEEDS.get(getattr(call, "__qualname__", ""))
        names = getattr(getattr(call, "__code__", None), "co_freevars", ())
        if what is None or "seed" not in names:
            return None
        found.append([what, int(call.__closure__[names.index("seed")].cell_contents)])
    return found


def queued_problems(label: str, value: object) -> list[str]:
    """Why ``value`` is not what :func:`queued` returns."""
    if not isinstance(value, list) or len(value) > 2:
        return [f"{label} must be a list of at most 2 queued seeds, got {checks.type_name(value)}"]
    problems: list[str] = []
    for i, entry in enumerate(value):
        where = f"{label}[{i}]"
        if not isinstance(entry, list) or len(entry) != 2 or entry[0] not in (
            "all", "current", "states"
        ):  # fmt: skip
            problems.append(f"{where} must be ['all'|'current', seed] or ['states', [...]]")
        elif entry[0] == "states":
            blobs = entry[1]
            if not isinstance(blobs, list):
                problems.append(f"{where} must hold a list of device states")
                continue
            for j, blob in enumerate(blobs):
                problems += checks.blob_problem(f"{where}[{j}]", blob, PHILOX.size)
        else:
            problems += checks.int_problem(f"{where} seed", entry[1], 0, 2**64 - 1)
    return problems


def requeue(torch: Any, module: Any, pending: list[list[Any]]) -> None:
    """Make ``pending`` (from :func:`queued`) the seeds ``module``'s devices start with; once
    the devices have started, apply them now, as their start would have."""
    started = module.is_initialized()
    if not started:
        tracker = module._lazy_seed_tracker
        tracker.manual_seed_all_cb = tracker.manual_seed_cb = None
        tracker.call_order = []
    elif not pending or pending[0][0] == "current":
        # Nothing seeded every device before the start: they begin at torch's default seed.
        module.manual_seed_all(DEFAULT_SEED)
    for what, value in pending:
        if what == "all":
            module.manual_seed_all(value)
        elif what == "current":
            module.manual_seed(value)
        else:
            restore_when_started(torch, module, value)


def restore_when_started(torch: Any, module: Any, blobs: list[bytes]) -> None:
    """Set ``module``'s device generators to ``blobs`` (one per device), when the devices start.

    torch queues ``set_rng_state`` before a device starts and runs its pending seed
    (``manual_seed_all``, ``manual_seed``) *after* every other queued call, so a seed queued
    before the restore would overwrite it. Queued as a seed of every device instead, the restore
    replaces the pending ``manual_seed_all`` and runs after a pending ``manual_seed``; a seed the
    program queues later still runs after it, as it would have once the device had started.
    The devices both have are restored: how many this process has is known only then.
    """
    if module.is_initialized():
        for index, blob in enumerate(blobs[: module.device_count()]):
            module.set_rng_state(_tensor(torch, blob), index)
        return

    def put_back() -> None:
        for generator, blob in zip(module.default_generators, blobs, strict=False):
            generator.set_state(_tensor(torch, blob))

    setattr(put_back, _STATES_ATTR, tuple(blobs))
    module._lazy_call(put_back, seed_all=True)


def _tensor(torch: Any, blob: bytes) -> Any:
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


# -- MPS and out-of-tree devices ------------------------------------------------------------


def not_imported(what: str) -> str:
    return (
        f"the state holds {what} and torch is not imported yet, so the devices cannot be "
        "counted: import torch before restoring (or pass devices='common' to restore, "
        "when torch is imported, the devices both have)"
    )


def mps_available(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and bool(mps.is_available())


def mps_problems(torch: Any, blob: object, devices: str) -> list[str]:
    if torch is not None and mps_available(torch):
        # The layout of this torch; it changed twice (_MPS_BYTES).
        return checks.blob_problem("mps", blob, torch.mps.get_rng_state().numel())
    problems = checks.blob_problem("mps", blob)
    if isinstance(blob, bytes) and len(blob) not in _MPS_BYTES:
        sizes = ", ".join(map(str, _MPS_BYTES))
        problems.append(f"mps must be {sizes} bytes (a layout torch writes), got {len(blob)}")
    if torch is not None:
        problems.append("the state holds an MPS generator, MPS is not available here")
    elif devices == "exact":
        problems.append(not_imported("an MPS generator state"))
    return problems


def custom_module(torch: Any) -> tuple[str, Any] | None:
    """The out-of-tree (``privateuse1``) device's name, and its torch module when its
    generators can be read without starting it (else ``None``); ``None`` without such a device."""
    name = getattr(torch._C, "_get_privateuse1_backend_name", lambda: "privateuseone")()
    if name == "privateuseone":
        return None
    module = getattr(torch, name, None)
    api = ("get_rng_state_all", "set_rng_state_all")
    if module is None or not all(hasattr(module, a) for a in api):
        return name, None
    started = getattr(module, "is_initialized", lambda: True)()
    return name, module if started else None


def custom_problems(torch: Any, saved: object, devices: str) -> list[str]:
    if not isinstance(saved, dict) or set(saved) != {"name", "states"}:
        return [f"{CUSTOM} must be a dict with 'name' and 'states', got {checks.type_name(saved)}"]
    name, states = saved["name"], saved["states"]
    if not isinstance(name, str) or not isinstance(states, list):
        return [f"{CUSTOM} must name its device (str) and list its states"]
    problems = [p for i, b in enumerate(states) for p in checks.blob_problem(f"{name}[{i}]", b)]
    if torch is None:
        if devices == "exact":
            problems.append(not_imported(f"{name} generator states"))
        return problems
    here = custom_module(torch)
    if here is None or here[0] != name or here[1] is None:
        problems.append(f"the state holds {name} generators, this process cannot restore them")
    return problems


# -- between ranks ----------------------------------------------------------------------------


def for_peers(torch: Any, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with, for each started device kind, the index of the device this rank uses:
    under ``torchrun`` rank r draws on ``cuda:r``, so that is the stream another rank gets."""
    current = {
        kind: int(getattr(torch, kind).current_device()) for kind in PER_DEVICE if kind in state
    }
    return {**state, "current": current} if current else state


def from_peer(sent: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """The state that gives this rank the streams a peer sent (:func:`for_peers`): the peer's
    current device's state goes to this rank's current device; the others stay as they are."""
    merged = {k: v for k, v in sent.items() if k != "current"}
    for kind, index in sent.get("current", {}).items():
        theirs = sent[kind][index]
        mine = local.get(kind)
        if isinstance(mine, list):
            here = local["current"][kind]
            merged[kind] = [theirs if i == here else blob for i, blob in enumerate(mine)]
        else:  # not started here: whichever device this rank starts on gets the peer's stream
            merged[kind] = [theirs] * len(sent[kind])
    return merged


_GRAPH_CAPTURE = (
    "torch's RNG state cannot be {what} while a CUDA graph is being captured (torch refuses to "
    "read or set a CUDA generator then): do it before torch.cuda.graph(...) or after it"
)


def capturing_graph(torch: Any) -> bool:
    """Whether a CUDA graph is being captured on the current stream (never starts CUDA)."""
    if not torch.cuda.is_initialized():
        return False
    try:
        return bool(torch.cuda.is_current_stream_capturing())
    except RuntimeError:  # pragma: no cover - a torch built without CUDA
        return False


def graph_capture_message(what: str) -> str:
    """Why the RNG state cannot be ``what`` ("captured", "restored") now."""
    return _GRAPH_CAPTURE.format(what=what)
