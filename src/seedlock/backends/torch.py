"""PyTorch: the CPU generator and every accelerator torch exposes (CUDA, MPS, XPU, MTIA, and
out-of-tree devices registered as ``privateuse1``), through torch's own device modules.

CUDA is never initialised here. ``torch.manual_seed`` queues the CUDA seed (``_lazy_call``) until
CUDA starts, so seeding a machine with GPUs costs nothing until the first CUDA op, and seeding
before ``fork()`` keeps CUDA usable in the children.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from seedlock import _hooks, _tf32
from seedlock.backends import _torch_devices as devices_
from seedlock.backends import checks
from seedlock.backends._torch_devices import (
    CUSTOM,
    PER_DEVICE,
    PHILOX,
    capturing_graph,
    custom_module,
    custom_problems,
    graph_capture_message,
    mps_available,
    mps_problems,
    not_imported,
)
from seedlock.backends.base import (
    BaseBackend,
    Change,
    DeterminismOptions,
    flip,
    low_bits,
    set_env,
)

__all__ = ["TorchBackend", "capturing_graph"]

_CUBLAS = "CUBLAS_WORKSPACE_CONFIG"
# torch reads the variable once (a static in ATen's Context.cpp) and does not say whether it has.
_CUBLAS_LATE = (
    f"{_CUBLAS} is read once per process, at its first cuBLAS call (a matmul, linear or bmm on "
    "a CUDA device), and CUDA has started here. If such a call has run, every CUDA matmul from "
    "now on raises RuntimeError under the determinism profile (warns with warn_only=True) "
    "although the variable is set now; if none has, setting it now is in time. To be sure, set "
    f"{_CUBLAS}={{}} before the first CUDA call, or launch with `seedlock run --deterministic`."
)
# fp16 / bf16 matmuls that may reduce in their own precision (split-K): off unless tf32=True.
_REDUCED = ("allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction")
_QUEUED = tuple(f"{kind}_queued" for kind in PER_DEVICE)
_STATE_KEYS = frozenset(("cpu", *PER_DEVICE, *_QUEUED, "mps", CUSTOM))
_GENERATOR_FIELDS = frozenset(("device", "state"))

# torch.get_rng_state(): the CPU generator as CPUGeneratorImplState (ATen's
# CPUGeneratorImpl.cpp). Known without importing torch, so a state is checked before torch is
# imported too; tests/test_backends.py pins the layout against the installed torch.
CPU_STATE_BYTES = 5056
_HEAD = struct.Struct("<QiiQ")  # initial seed, left, seeded, next
_WORDS = (24, 24 + 624 * 8)  # 624 Mersenne Twister words, each in a uint64 slot
_DOUBLE_NORMAL = struct.Struct("<8xd8xi")  # at 5016: cached double normal sample, valid flag
_FLOAT_NORMAL = struct.Struct("<f")  # at 5048: cached float normal sample; its flag at 5052


def cpu_state_problems(label: str, blob: object) -> list[str]:
    """Why ``blob`` is not a CPU generator state torch writes (torch itself checks only the size
    and three of the fields, and only once the generators before it were restored)."""
    problems = checks.blob_problem(label, blob, CPU_STATE_BYTES)
    if problems:
        return problems
    assert isinstance(blob, bytes)
    _, left, seeded, position = _HEAD.unpack_from(blob)
    normal, normal_valid = _DOUBLE_NORMAL.unpack_from(blob, _WORDS[1])
    (float_normal,) = _FLOAT_NORMAL.unpack_from(blob, CPU_STATE_BYTES - 8)
    float_valid = blob[CPU_STATE_BYTES - 4]
    fields = (
        ("'left'", left, 1, 624),
        ("'seeded'", seeded, 1, 1),
        ("'next'", position, 0, 624),
        ("normal flag", normal_valid, 0, 1),
        ("float normal flag", float_valid, 0, 1),
    )
    for name, value, low, high in fields:
        if not low <= value <= high:
            problems += checks.int_problem(f"{label} {name}", value, low, high)
    if normal_valid == 1 and not math.isfinite(normal):
        problems += checks.float_problem(f"{label} cached normal sample", normal)
    if float_valid == 1 and not math.isfinite(float_normal):
        problems += checks.float_problem(f"{label} cached float normal sample", float_normal)
    # Each word sits in a 64-bit slot whose upper half torch discards on restore: whatever is
    # there, the generator gets the same state, so only the words themselves are checked.
    return problems + checks.mt19937_problem(label, blob[_WORDS[0] : _WORDS[1]], stride=8)


def philox_state_problems(label: str, blob: object) -> list[str]:
    """Why ``blob`` is not a CUDA / XPU generator state (seed, offset) torch writes."""
    problems = checks.blob_problem(label, blob, PHILOX.size)
    if problems:
        return problems
    assert isinstance(blob, bytes)
    _, offset = PHILOX.unpack(blob)
    # torch wants the offset a multiple of 4.
    if offset < 0 or offset % 4:
        problems.append(f"{label} offset must be a multiple of 4 and >= 0, got {offset}")
    return problems


def _blob(tensor: Any) -> bytes:
    return bytes((tensor if tensor.is_cpu else tensor.cpu()).numpy().tobytes())


def _tensor(torch: Any, blob: bytes) -> Any:
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


class TorchBackend(BaseBackend):
    name: ClassVar[str] = "torch"
    module: ClassVar[str] = "torch"
    # The CPU generator is an MT19937 seeded from the low 32 bits of the seed: torch.manual_seed(0)
    # and torch.manual_seed(2**32) give the same numbers. 32 derived bits lose nothing.
    seed_bits: ClassVar[int] = 32

    _found: list[str] | None = None
    _found_with_cuda: bool = False

    def _accelerators_now(self, torch: Any) -> list[str]:
        # Devices do not come and go while a program runs, so the answer is kept. Asked again once,
        # when CUDA has started (the report then drops "applied when CUDA starts").
        started = torch.cuda.is_initialized()
        if self._found is None or started != self._found_with_cuda:
            self._found, self._found_with_cuda = self._accelerators(torch), started
        return self._found

    def seeder(self) -> Callable[[int], object]:
        # Per-sample seeding sets the CPU generator only: workers cannot use a device, and
        # torch.manual_seed would also queue a lazy CUDA seed that outlives the main process's
        # restore and would replace seed_everything's when CUDA starts.
        return self._require_loaded().default_generator.manual_seed  # type: ignore[no-any-return]

    def snapshot(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        # torch.get_rng_state / set_rng_state are these two behind a Python frame (set_rng_state
        # also turns functorch off, for a state tensor that a transform wrapped: never this one).
        generator = self._require_loaded().default_generator
        return generator.get_state, generator.set_state

    def seed(self, value: int) -> str:
        torch = self._require_loaded()
        accelerators = self._accelerators_now(torch)
        if accelerators:
            torch.manual_seed(value)
        else:
            # No accelerator: seed the CPU generator alone. torch.manual_seed would also queue
            # lazy seeds for CUDA/XPU/MTIA, formatting a stack trace each time, which matters
            # when seeding per sample (benchmarks/bench_data.py measures per-sample seeding).
            torch.default_generator.manual_seed(value)
        return ", ".join(["cpu", *accelerators])

    @staticmethod
    def _accelerators(torch: Any) -> list[str]:
        """Devices torch.manual_seed reached, in words, without initialising any of them."""
        found = []
        for kind, module, n in devices_.modules(torch):
            lazy = "" if module.is_initialized() else f", applied when {kind.upper()} starts"
            # Without NVML only starting CUDA could count the devices (see _torch_devices).
            found.append(f"{kind} x{n}{lazy}" if n is not None else f"{kind}{lazy}")
        if mps_available(torch):
            found.append("mps")
        custom = custom_module(torch)
        if custom is not None:
            found.append(custom[0])  # an out-of-tree device; torch.manual_seed seeds it
        return found

    def capture(self) -> dict[str, Any]:
        torch = self._require_loaded()
        if capturing_graph(torch):
            raise RuntimeError(graph_capture_message("captured"))
        state: dict[str, Any] = {"cpu": _blob(torch.get_rng_state())}
        # Reading a device's state would start it. Until it starts, its state is the seeds
        # torch has queued for it (``<kind>_queued``); once started, every device's state.
        for kind, module, _ in devices_.modules(torch):
            if module.is_initialized():
                state[kind] = [_blob(t) for t in module.get_rng_state_all()]
            else:
                pending = devices_.queued(module)
                if pending is not None:
                    state[f"{kind}_queued"] = pending
        if mps_available(torch):
            state["mps"] = _blob(torch.mps.get_rng_state())
        custom = custom_module(torch)
        if custom is not None and custom[1] is not None:
            name, module = custom
            state[CUSTOM] = {
                "name": name,
                "states": [_blob(t) for t in module.get_rng_state_all()],
            }
        return state

    def check_state(self, state: dict[str, Any], devices: str) -> list[str]:
        if not isinstance(state, dict) or "cpu" not in state:
            return checks.fields_problem(state, ("cpu",))
        problems = checks.fields_problem(state, ["cpu", *(k for k in state if k in _STATE_KEYS)])
        problems += cpu_state_problems("cpu", state["cpu"])
        torch = self._require_loaded() if self.loaded() else None
        if torch is not None and capturing_graph(torch):
            problems.append(graph_capture_message("restored"))
        for kind in PER_DEVICE:
            if f"{kind}_queued" in state:
                problems += devices_.queued_problems(f"{kind}_queued", state[f"{kind}_queued"])
            if kind not in state:
                continue
            saved = state[kind]
            if not isinstance(saved, list):
                problems.append(
                    f"{kind} must be a list of per-device states, got {checks.type_name(saved)}"
                )
                continue
            for i, blob in enumerate(saved):
                problems += (
                    philox_state_problems(f"{kind}[{i}]", blob)
                    if kind != "mtia"
                    else checks.blob_problem(f"{kind}[{i}]", blob)
                )
            problems += self._device_count_problem(kind, len(saved), devices)
        if "mps" in state:
            problems += mps_problems(torch, state["mps"], devices)
        if CUSTOM in state:
            problems += custom_problems(torch, state[CUSTOM], devices)
        return problems

    def _device_count_problem(self, kind: str, saved: int, devices: str) -> list[str]:
        if not self.loaded():
            # Counting devices needs torch; seedlock never imports it to ask.
            if devices == "exact":
                return [not_imported(f"{saved} {kind} generator state(s)")]
            return []
        here = devices_.count(self._require_loaded(), kind)
        if here is None:
            return []  # only starting CUDA could count them; the devices both have are restored
        if devices == "exact" and saved != here:
            return [
                f"the state holds {saved} {kind} device(s), this process sees {here} "
                "(restore(..., devices='common') restores the devices both have)"
            ]
        if here == 0:
            return [f"the state holds {kind} devices, this process sees none"]
        return []

    def restore(self, state: dict[str, Any]) -> None:
        torch = self._require_loaded()
        torch.set_rng_state(_tensor(torch, state["cpu"]))
        for kind in PER_DEVICE:
            if kind in state:
                devices_.restore_when_started(torch, getattr(torch, kind), state[kind])
            if f"{kind}_queued" in state:
                devices_.requeue(torch, getattr(torch, kind), state[f"{kind}_queued"])
        if "mps" in state:
            torch.mps.set_rng_state(_tensor(torch, state["mps"]))
        if CUSTOM in state:
            module = getattr(torch, state[CUSTOM]["name"])
            module.set_rng_state_all([_tensor(torch, b) for b in state[CUSTOM]["states"]])

    def for_peers(self, state: dict[str, Any]) -> dict[str, Any]:
        return devices_.for_peers(self._require_loaded(), state)

    def from_peer(self, sent: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
        return devices_.from_peer(sent, local)

    def owns(self, obj: object) -> bool:
        return self.loaded() and isinstance(obj, self._require_loaded().Generator)

    def capture_generator(self, obj: Any) -> dict[str, Any]:
        return {"device": str(obj.device), "state": _blob(obj.get_state())}

    def check_generator(self, obj: Any, state: dict[str, Any]) -> list[str]:
        problems = checks.fields_problem(state, _GENERATOR_FIELDS)
        if problems:
            return problems
        device = obj.device
        if state["device"] != str(device):
            saved = state["device"]
            shown = repr(saved[:40]) if isinstance(saved, str) else checks.type_name(saved)
            return [f"generator is on {device}, the state is for {shown}"]
        if device.type == "cpu":
            return cpu_state_problems("state", state["state"])
        if device.type in ("cuda", "xpu"):  # Philox
            return philox_state_problems("state", state["state"])
        return checks.blob_problem("state", state["state"], obj.get_state().numel())

    def snapshot_generator(self, obj: Any) -> Callable[[], object]:
        return partial(obj.set_state, obj.get_state())

    def restore_generator(self, obj: Any, state: dict[str, Any]) -> None:
        obj.set_state(_tensor(self._require_loaded(), state["state"]))

    def seed_generator(self, obj: Any, material: int) -> None:
        # MT19937 on the CPU keeps 32 bits; Philox on accelerators keeps 64.
        obj.manual_seed(low_bits(material, 32 if obj.device.type == "cpu" else 64))

    def deterministic(self, on: bool, options: DeterminismOptions) -> list[Change]:
        changes: list[Change | None] = []
        if on and _CUBLAS not in os.environ:
            if self.loaded() and self._require_loaded().cuda.is_initialized():
                warnings.warn(
                    _CUBLAS_LATE.format(options.cublas_workspace_config),
                    RuntimeWarning,
                    stacklevel=4,
                )
            changes.append(set_env(self.name, _CUBLAS, options.cublas_workspace_config))
        if self.loaded():
            changes.extend(self._switches(self._require_loaded(), on, options))
        return [c for c in changes if c is not None]

    def _switches(self, torch: Any, on: bool, options: DeterminismOptions) -> list[Change | None]:
        b = torch.backends

        def algorithms() -> tuple[bool, bool]:
            return (
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
            )

        def set_algorithms(v: tuple[bool, bool]) -> None:
            _set_deterministic_algorithms(torch, v[0], v[1])

        def attr(obj: Any, attr_name: str, value: Any, label: str) -> Change | None:
            return flip(
                self.name,
                label,
                lambda: getattr(obj, attr_name),
                lambda v: setattr(obj, attr_name, v),
                value,
            )

        changes = [
            flip(
                self.name,
                "use_deterministic_algorithms (mode, warn_only)",
                algorithms,
                set_algorithms,
                (on, options.warn_only if on else False),
            ),
            attr(b.cudnn, "deterministic", on, "backends.cudnn.deterministic"),
        ]
        if hasattr(b, "mkldnn") and hasattr(b.mkldnn, "deterministic"):
            changes.append(attr(b.mkldnn, "deterministic", on, "backends.mkldnn.deterministic"))
        if not on:
            # Turning determinism off leaves the numerics switches (benchmark, TF32) alone: they
            # are performance choices the user makes, not part of "deterministic or not".
            return changes
        changes += [
            attr(b.cudnn, "benchmark", False, "backends.cudnn.benchmark"),
            flip(
                self.name,
                "TF32 (backends.cuda.matmul, backends.cudnn)",
                lambda: _tf32.state(torch),
                lambda v: _tf32.set_state(torch, v),
                _tf32.target(torch, options.tf32),
            ),
        ]
        if not options.tf32:
            matmul = b.cuda.matmul
            for name in (n for n in _REDUCED if hasattr(matmul, n)):
                changes.append(attr(matmul, name, False, f"backends.cuda.matmul.{name}"))
        if options.fallback_random:
            # Inductor draws random numbers with its own kernels unless told to call eager's.
            import torch._inductor.config as inductor_config

            changes.append(
                attr(inductor_config, "fallback_random", True, "_inductor.config.fallback_random")
            )
        return changes


def _set_deterministic_algorithms(torch: Any, mode: bool, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=...)`` without importing Inductor.

    torch's function also sets ``torch._inductor.config.deterministic``, importing Inductor's
    config to do so: 1.5-2.5 s in every process, compiled or not (benchmarks/bench_cli.py). Eager
    determinism is the C++ flag alone; Inductor's setting is made now if its config is loaded,
    else when it first is (from the flag as it is then).
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # pragma: no cover - a torch without the private setter
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    setter(mode, warn_only=warn_only)
    config = sys.modules.get("torch._inductor.config")
    if config is not None:
        _inductor_follows(torch, config)
    else:
        _hooks.on_import("torch._inductor.config", "seedlock.inductor_deterministic",
                         lambda: _inductor_follows(torch))  # fmt: skip


def _inductor_follows(torch: Any, config: Any = None) -> None:
    """Give Inductor's config the deterministic flag torch has now."""
    config = config if config is not None else sys.modules.get("torch._inductor.config")
    if config is not None and hasattr(config, "deterministic"):
        config.deterministic = torch.are_deterministic_algorithms_enabled()
