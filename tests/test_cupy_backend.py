"""CuPy's global RandomStates: per-sample seeding leaves them alone, fork() puts them back.

CuPy is not installed here: each test runs a fresh interpreter with a small stand-in package on
its path, shaped like CuPy where seedlock touches it (cupy/random/_generator.py): a dict of
global states per device, created on first use from ``CUPY_SEED``; ``RandomState.seed`` taking
an unsigned 64-bit value; draws from a counter-based stream that seeding resets.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import run_python

FAKE = {
    "cupy/__init__.py": '''
        """Stand-in for CuPy (tests only)."""
        from cupy import cuda, random
        ''',
    "cupy/cuda/__init__.py": '''
        """Devices: an id for the current one, switched with ``Device(i).use()``."""
        _current = 0

        class Device:
            def __init__(self, device=None):
                self.id = _current if device is None else device

            def use(self):
                global _current
                _current = self.id

        class runtime:
            @staticmethod
            def getDeviceCount():
                return 2
        ''',
    "cupy/random/__init__.py": '''
        """The module-level API over the current device's global state."""
        from cupy.random._generator import RandomState, get_random_state, reset_states, seed

        def random_sample(size):
            return get_random_state().random_sample(size)
        ''',
    "cupy/random/_generator.py": '''
        """Global states per device id, made on first use from CUPY_SEED."""
        import hashlib
        import os

        import numpy

        from cupy import cuda

        class RandomState:
            def __init__(self, seed=None):
                self.seed(seed)

            def seed(self, seed=None):
                if seed is None:
                    seed = int.from_bytes(os.urandom(8), "little")
                else:
                    # As CuPy: only a value that casts safely to uint64 is accepted.
                    seed = int(numpy.asarray(seed).astype(numpy.uint64, casting="safe"))
                self._rk_seed = seed
                self._offset = 0

            def random_sample(self, size):
                out = []
                for _ in range(size):
                    word = f"{self._rk_seed}:{self._offset}".encode()
                    out.append(hashlib.blake2b(word, digest_size=8).hexdigest())
                    self._offset += 1
                return out

        _random_states = {}

        def reset_states():
            global _random_states
            _random_states = {}

        def get_random_state():
            dev = cuda.Device()
            rs = _random_states.get(dev.id, None)
            if rs is None:
                seed = os.getenv("CUPY_SEED")
                if seed is not None:
                    seed = numpy.uint64(int(seed))
                rs = RandomState(seed)
                rs = _random_states.setdefault(dev.id, rs)
            return rs

        def seed(seed=None):
            get_random_state().seed(seed)
        ''',
}


@pytest.fixture
def fake_cupy(tmp_path: Path) -> str:
    for name, text in FAKE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return str(tmp_path)


def run_with_cupy(fake: str, body: str) -> str:
    code = f"import sys\nsys.path.insert(0, {fake!r})\n" + textwrap.dedent(body)
    return run_python(code).stdout


def test_seeding_replaces_the_states_and_seeds_them_from_cupy_seed(fake_cupy):
    out = run_with_cupy(
        fake_cupy,
        """
        import os, numpy, seedlock, cupy
        seedlock.seed_everything(5)
        first = cupy.random.random_sample(3)
        before = cupy.random.get_random_state()
        seedlock.seed_everything(5)  # a state exists now: it is replaced, not reseeded
        assert cupy.random.get_random_state() is not before
        assert cupy.random.random_sample(3) == first
        value = numpy.uint64(int(os.environ["CUPY_SEED"]))
        assert cupy.random.RandomState(value).random_sample(3) == first
        print("ok")
        """,
    )
    assert out.split() == ["ok"]


def test_per_sample_seeding_leaves_the_callers_cupy_stream_alone(fake_cupy):
    out = run_with_cupy(
        fake_cupy,
        """
        import seedlock, seedlock.data, cupy

        seedlock.seed_everything(0)
        cupy.random.random_sample(2)
        expected = cupy.random.random_sample(4)

        seedlock.seed_everything(0)
        state = cupy.random.get_random_state()
        cupy.random.random_sample(2)
        for batch in seedlock.data.loader(list(range(6)), batch_size=2):
            pass
        assert cupy.random.get_random_state() is state
        assert cupy.random.random_sample(4) == expected
        print("ok")
        """,
    )
    assert out.split() == ["ok"]


def test_fork_puts_back_the_state_objects_and_cupy_seed(fake_cupy):
    out = run_with_cupy(
        fake_cupy,
        """
        import os, seedlock, cupy

        seedlock.seed_everything(0)
        cupy.random.random_sample(2)
        expected = cupy.random.random_sample(4)

        seedlock.seed_everything(0)
        cupy.random.random_sample(2)
        state, seed = cupy.random.get_random_state(), os.environ["CUPY_SEED"]
        with seedlock.fork():
            seedlock.seed_everything(1)
            inside = cupy.random.random_sample(4)
            cupy.cuda.Device(1).use()
            cupy.random.random_sample(1)  # a state for device 1, made inside the block
            cupy.cuda.Device(0).use()
        assert os.environ["CUPY_SEED"] == seed
        assert cupy.random._generator._random_states == {0: state}
        assert cupy.random.random_sample(4) == expected != inside
        # Checkpoints hold no CuPy state: it cannot be read back as data.
        assert seedlock.capture().backends["cupy"] == {}
        print("ok")
        """,
    )
    assert out.split() == ["ok"]
