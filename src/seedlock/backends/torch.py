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
from seedlock.backends import checks
from seedlock.backends.base import (
    BaseBackend,
    Change,
    DeterminismOptions,
    flip,
    low_bits,
    set_env,
)

__all__ = ["TorchBackend"]

_CUBLAS = "CUBLAS_WORKSPACE_CONFIG"
# Accelerators whose torch module keeps one generator per device (get_rng_state_all).
_PER_DEVICE = ("cuda", "xpu")
_DEVICE_KINDS = (*_PER_DEVICE, "mps")
_GENERATOR_FIELDS = frozenset(("device", "state"))

# torch.get_rng_state(): the CPU generator as CPUGeneratorImplState (ATen's
# CPUGeneratorImpl.cpp). Known without importing torch, so a state is checked before torch is
# imported too; tests/test_backends.py pins the layout against the installed torch.
CPU_STATE_BYTES = 5056
_HEAD = struct.Struct("<QiiQ")  # initial seed, left, seeded, next
_WORDS = (24, 24 + 624 * 8)  # 624 Mersenne Twister words, each in a uint64 slot
_DOUBLE_NORMAL = struct.Struct("<8xd8xi")  # at 5016: cached double normal sample, valid flag
_FLOAT_NORMAL = struct.Struct("<f")  # at 5048: cached float normal sample; its flag at 5052
# CUDA and XPU generators (Philox): the seed, then the offset, which torch wants a multiple of 4.
_PHILOX = struct.Struct("<Qq")


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
    problems = checks.blob_problem(label, blob, _PHILOX.size)
    if problems:
        return problems
    assert isinstance(blob, bytes)
    _, offset = _PHILOX.unpack(blob)
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
        torch = self._require_loaded()
        return torch.get_rng_state, torch.set_rng_state

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
        n = torch.cuda.device_count()
        if n:
            lazy = "" if torch.cuda.is_initialized() else ", applied when CUDA starts"
            found.append(f"cuda x{n}{lazy}")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            found.append("mps")
        xpu = getattr(torch, "xpu", None)
        if xpu is not None and xpu.is_available():
            found.append(f"xpu x{xpu.device_count()}")
        mtia = getattr(torch, "mtia", None)
        if mtia is not None and mtia.is_available():
            found.append("mtia")
        custom = getattr(torch._C, "_get_privateuse1_backend_name", lambda: "privateuseone")()
        if custom != "privateuseone":
            found.append(custom)  # an out-of-tree device; torch.manual_seed seeds it
        return found

    def capture(self) -> dict[str, Any]:
        torch = self._require_loaded()
        if capturing_graph(torch):
            raise RuntimeError(_GRAPH_CAPTURE.format(what="captured"))
        state: dict[str, Any] = {"cpu": _blob(torch.get_rng_state())}
        # Reading a device's state would initialise it. Until CUDA / XPU start, their seeds are
        # still queued by torch.manual_seed, so the CPU state determines them; once started,
        # every device's state is captured.
        for kind in _PER_DEVICE:
            module = getattr(torch, kind, None)
            if module is not None and getattr(module, "is_initialized", lambda: False)():
                state[kind] = [_blob(t) for t in module.get_rng_state_all()]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            state["mps"] = _blob(torch.mps.get_rng_state())
        return state

    def check_state(self, state: dict[str, Any], devices: str) -> list[str]:
        if not isinstance(state, dict) or "cpu" not in state:
            return checks.fields_problem(state, ("cpu",))
        problems = checks.fields_problem(state, ["cpu", *(k for k in state if k in _DEVICE_KINDS)])
        problems += cpu_state_problems("cpu", state["cpu"])
        if self.loaded() and capturing_graph(self._require_loaded()):
            problems.append(_GRAPH_CAPTURE.format(what="restored"))
        for kind in _PER_DEVICE:
            if kind not in state:
                continue
            saved = state[kind]
            if not isinstance(saved, list):
                problems.append(
                    f"{kind} must be a list of per-device states, got {checks.type_name(saved)}"
                )
                continue
            for i, blob in enumerate(saved):
                problems += philox_state_problems(f"{kind}[{i}]", blob)
            problems += self._device_count_problem(kind, len(saved), devices)
        if "mps" in state:
            problems += checks.blob_problem("mps", state["mps"])
            if self.loaded():
                mps = getattr(self._require_loaded().backends, "mps", None)
                if mps is None or not mps.is_available():
                    problems.append("the state holds an MPS generator, MPS is not available here")
            elif devices == "exact":
                problems.append(self._not_imported("an MPS generator state"))
        return problems

    def _device_count_problem(self, kind: str, saved: int, devices: str) -> list[str]:
        if not self.loaded():
            # Counting devices needs torch; seedlock never imports it to ask.
            if devices == "exact":
                return [self._not_imported(f"{saved} {kind} generator state(s)")]
            return []
        module = getattr(self._require_loaded(), kind, None)
        here = module.device_count() if module is not None else 0
        if devices == "exact" and saved != here:
            return [
                f"the state holds {saved} {kind} device(s), this process sees {here} "
                "(restore(..., devices='common') restores the devices both have)"
            ]
        if here == 0:
            return [f"the state holds {kind} devices, this process sees none"]
        return []

    @staticmethod
    def _not_imported(what: str) -> str:
        return (
            f"the state holds {what} and torch is not imported yet, so the devices cannot be "
            "counted: import torch before restoring (or pass devices='common' to restore, "
            "when torch is imported, the devices both have)"
        )

    def restore(self, state: dict[str, Any]) -> None:
        torch = self._require_loaded()
        torch.set_rng_state(_tensor(torch, state["cpu"]))
        for kind in _PER_DEVICE:
            if kind in state:
                module = getattr(torch, kind)
                common = min(len(state[kind]), module.device_count())
                states = [_tensor(torch, blob) for blob in state[kind][:common]]
                if module.is_initialized():
                    for index, value in enumerate(states):
                        module.set_rng_state(value, index)
                else:
                    _restore_when_started(module, states)
        if "mps" in state:
            torch.mps.set_rng_state(_tensor(torch, state["mps"]))

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
        if device.type in _PER_DEVICE:
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
                    f"{_CUBLAS} is read when cuBLAS starts, and CUDA is already initialised: "
                    f"setting it now may come too late. Set "
                    f"{_CUBLAS}={options.cublas_workspace_config} before the first CUDA call, "
                    "or launch with `seedlock run --deterministic`.",
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
        if options.fallback_random:
            # Inductor draws random numbers with its own kernels unless told to call eager's.
            import torch._inductor.config as inductor_config

            changes.append(
                attr(inductor_config, "fallback_random", True, "_inductor.config.fallback_random")
            )
        return changes


def _restore_when_started(module: Any, states: list[Any]) -> None:
    """Set the device generators of ``module`` (``torch.cuda``, ``torch.xpu``) to ``states`` when
    the device starts.

    torch queues ``set_rng_state`` before the device starts and runs its pending seed
    (``manual_seed_all``, ``manual_seed``) *after* every other queued call, so a seed queued
    before the restore would overwrite it. Queued as a seed of every device instead, the restore
    replaces the pending ``manual_seed_all`` and runs after a pending ``manual_seed``; a seed the
    program queues later still runs after it, as it would have once the device had started.
    """

    lazy_call = getattr(module, "_lazy_call", None)
    if lazy_call is None:  # pragma: no cover - a torch without the lazy queue
        for index, value in enumerate(states):
            module.set_rng_state(value, index)
        return

    def put_back() -> None:
        for index, value in enumerate(states):
            module.default_generators[index].set_state(value)

    lazy_call(put_back, seed_all=True)


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
