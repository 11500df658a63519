"""TensorFlow's global seed (``tf.random.set_seed``), and Keras' when Keras is imported."""

from __future__ import annotations

import sys
from typing import ClassVar

from seedlock.backends.base import Change, DeterminismOptions, SeedOnlyBackend, flip

__all__ = ["TensorflowBackend"]


class TensorflowBackend(SeedOnlyBackend):
    """``tf.random.set_seed`` and Keras' global seed; TensorFlow cannot read its global state
    back, so nothing is captured. Its determinism flag is ``enable_op_determinism``."""

    name: ClassVar[str] = "tensorflow"
    module: ClassVar[str] = "tensorflow"

    def seed(self, value: int) -> str:
        tf = self._require_loaded()
        tf.random.set_seed(value)
        seeded = "tf.random global seed"
        keras = sys.modules.get("keras")
        global_state = sys.modules.get("keras.src.backend.common.global_state")
        if keras is not None and global_state is not None:
            # Keras 3 keeps its own global seed for layers that draw without an explicit
            # SeedGenerator (Dropout, initializers). keras.utils.set_random_seed would also
            # reseed `random` and NumPy, overriding the other backends, so only this is set.
            global_state.set_global_attribute("global_random_seed", value)
            seeded += ", keras global seed"
        return seeded

    def deterministic(self, on: bool, options: DeterminismOptions) -> list[Change]:
        if not self.loaded():
            return []
        # enable_op_determinism is public; its twins disable / is_enabled live beside it in
        # tensorflow.python.framework.config without a public export.
        config = sys.modules.get("tensorflow.python.framework.config")
        enable = getattr(config, "enable_op_determinism", None)
        disable = getattr(config, "disable_op_determinism", None)
        is_enabled = getattr(config, "is_op_determinism_enabled", None)
        if enable is None or disable is None or is_enabled is None:
            return []
        change = flip(
            self.name,
            "config.experimental op determinism",
            is_enabled,
            lambda v: enable() if v else disable(),
            on,
        )
        return [change] if change else []
