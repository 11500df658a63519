"""PyTorch: the CPU generator and every accelerator torch exposes (CUDA, MPS, XPU, MTIA, and
out-of-tree devices registered as ``privateuse1``), through torch's own device modules.

CUDA is never initialised here. ``torch.manual_seed`` queues the CUDA seed (``_lazy_call``) until
CUDA starts, so seeding a machine with GPUs costs nothing until the first CUDA op, and seeding
before ``fork()`` keeps CUDA usable in the children.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

from seedlock.backends.base import (
    BaseBackend,
    Change,
    DeterminismOptions,
    blob_problem,
    flip,
    low_bits,
    set_env,
)

__all__ = ["TorchBackend"]

_CUBLAS = "CUBLAS_WORKSPACE_CONFIG"
# Accelerators whose torch module keeps one generator per device (get_rng_state_all).
_PER_DEVICE = ("cuda", "xpu")


def _blob(tensor: Any) -> bytes:
    return bytes(tensor.cpu().numpy().tobytes())


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
        # Devices do not come and go while a program runs; asking costs ~2 us. Asked again once,
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
            # lazy seeds for CUDA/XPU/MTIA, formatting a stack trace each time (~100 us), which
            # matters when seeding per sample.
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
        torch = self._require_loaded()
        if not isinstance(state, dict):
            return [f"state must be a dict, got {type(state).__name__}"]
        problems = blob_problem("cpu", state.get("cpu"), torch.get_rng_state().numel())
        for kind in _PER_DEVICE:
            if kind not in state:
                continue
            saved = state[kind]
            if not isinstance(saved, list):
                problems.append(f"{kind} must be a list of per-device states")
                continue
            for i, blob in enumerate(saved):
                problems += blob_problem(f"{kind}[{i}]", blob)
            module = getattr(torch, kind, None)
            here = module.device_count() if module is not None else 0
            if devices == "exact" and len(saved) != here:
                problems.append(
                    f"the state holds {len(saved)} {kind} device(s), this process sees {here} "
                    "(restore(..., devices='common') restores the devices both have)"
                )
            elif here == 0:
                problems.append(f"the state holds {kind} devices, this process sees none")
        if "mps" in state:
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                problems.append("the state holds an MPS generator, MPS is not available here")
            problems += blob_problem("mps", state["mps"])
        return problems

    def restore(self, state: dict[str, Any]) -> None:
        torch = self._require_loaded()
        torch.set_rng_state(_tensor(torch, state["cpu"]))
        for kind in _PER_DEVICE:
            if kind in state:
                module = getattr(torch, kind)
                common = min(len(state[kind]), module.device_count())
                for index in range(common):
                    # Lazy before the device starts, like the seeding itself.
                    module.set_rng_state(_tensor(torch, state[kind][index]), index)
        if "mps" in state:
            torch.mps.set_rng_state(_tensor(torch, state["mps"]))

    def owns(self, obj: object) -> bool:
        return self.loaded() and isinstance(obj, self._require_loaded().Generator)

    def capture_generator(self, obj: Any) -> dict[str, Any]:
        return {"device": str(obj.device), "state": _blob(obj.get_state())}

    def check_generator(self, obj: Any, state: dict[str, Any]) -> list[str]:
        if not isinstance(state, dict):
            return [f"state must be a dict, got {type(state).__name__}"]
        problems = blob_problem("state", state.get("state"), obj.get_state().numel())
        if state.get("device") != str(obj.device):
            problems.append(f"generator is on {obj.device}, the state is for {state.get('device')}")
        return problems

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
            torch.use_deterministic_algorithms(v[0], warn_only=v[1])

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
            attr(b.cuda.matmul, "allow_tf32", options.tf32, "backends.cuda.matmul.allow_tf32"),
            attr(b.cudnn, "allow_tf32", options.tf32, "backends.cudnn.allow_tf32"),
        ]
        if options.fallback_random:
            # Inductor draws random numbers with its own kernels unless told to call eager's.
            import torch._inductor.config as inductor_config

            changes.append(
                attr(inductor_config, "fallback_random", True, "_inductor.config.fallback_random")
            )
        return changes
