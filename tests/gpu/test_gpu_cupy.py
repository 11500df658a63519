"""CuPy's global RandomStates on a real device: fork() and per-sample seeding keep the stream."""

from __future__ import annotations

import pytest

import seedlock
import seedlock.data

pytestmark = pytest.mark.gpu


@pytest.fixture
def cupy():
    cupy = pytest.importorskip("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device: CuPy raises its own CUDA errors
        pytest.skip(f"CuPy sees no device ({type(exc).__name__}: {exc})")
    if count == 0:
        pytest.skip("CuPy sees no device")
    return cupy


def _stream_after_two(cupy, between) -> bytes:
    seedlock.seed_everything(0)
    cupy.random.random_sample(2)
    between()
    return bytes(cupy.random.random_sample(4).get().tobytes())


def test_fork_puts_the_cupy_stream_back_after_seeding_inside(cupy):
    expected = _stream_after_two(cupy, lambda: None)

    def forked() -> None:
        with seedlock.fork():
            seedlock.seed_everything(1)
            cupy.random.random_sample(4)

    assert _stream_after_two(cupy, forked) == expected


def test_per_sample_seeding_leaves_the_cupy_stream_alone(cupy):
    expected = _stream_after_two(cupy, lambda: None)

    def load() -> None:
        for _ in seedlock.data.loader(list(range(6)), batch_size=2):
            pass

    assert _stream_after_two(cupy, load) == expected
