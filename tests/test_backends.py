"""The backend protocol, the registry and third-party backends through entry points."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_python
from seedlock import backends
from seedlock.backends.base import Backend

BUILTIN = ["python", "numpy", "torch", "jax", "tensorflow", "cupy"]


def test_builtin_backends_come_first_in_a_fixed_order():
    assert [b.name for b in backends.all_backends()][: len(BUILTIN)] == BUILTIN


@pytest.mark.parametrize("backend", backends.all_backends(), ids=lambda b: b.name)
def test_every_builtin_follows_the_protocol(backend):
    assert isinstance(backend, Backend)
    assert backend.seed_bits in (0, 32, 64)


@pytest.mark.parametrize("name", ["python", "numpy", "torch"])
def test_capture_then_restore_is_exact(name):
    (backend,) = backends.select([name])
    backend.seed(11)
    state = backend.capture()
    first = [random_draw(name) for _ in range(3)]
    backend.restore(state)
    again = [random_draw(name) for _ in range(3)]
    assert first == again


def random_draw(name: str) -> bytes:
    import random

    if name == "python":
        return repr((random.random(), random.gauss(0, 1))).encode()
    if name == "numpy":
        return np.random.rand(2).tobytes() + np.random.normal(size=3).tobytes()
    return torch.rand(2).numpy().tobytes()


@pytest.mark.parametrize("name", ["python", "numpy", "torch"])
def test_the_fast_seeder_has_the_effect_of_seed(name):
    (backend,) = backends.select([name])
    value = 0x9E3779B9
    random_draw(name)  # leave a cached gaussian behind: seeding must clear it
    backend.seed(value)
    expected = [random_draw(name) for _ in range(3)]
    random_draw(name)
    backend.seeder()(value)
    assert [random_draw(name) for _ in range(3)] == expected


@pytest.mark.parametrize("name", ["python", "numpy", "torch"])
def test_the_in_process_snapshot_puts_back_every_bit(name):
    (backend,) = backends.select([name])
    backend.seed(5)
    random_draw(name)  # mid-stream, with a cached gaussian (python, numpy)
    save, load = backend.snapshot()
    state = save()
    first = [random_draw(name) for _ in range(3)]
    backend.seeder()(77)
    load(state)
    assert [random_draw(name) for _ in range(3)] == first


def test_select_accepts_a_single_name():
    assert [b.name for b in backends.select("numpy")] == ["numpy"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to prove anything")
def test_torch_seeding_does_not_initialise_cuda():
    run_python(
        """
        import seedlock, torch
        report = seedlock.seed_everything(0)
        assert not torch.cuda.is_initialized()
        """
    )


PLUGIN = """
    import random as _r
    STATE = {'value': None}

    class CounterBackend:
        name = 'counter'
        module = 'json'
        seed_bits = 32
        def available(self): return True
        def loaded(self): return True
        def seed(self, value):
            STATE['value'] = value
            return 'the counter'
        def capture(self): return dict(STATE)
        def restore(self, state): STATE.update(state)
        def deterministic(self, on, options): return []

    class Broken:
        pass
"""


def make_distribution(tmp_path, entry_points: str) -> str:
    """A real installed distribution (dist-info on sys.path) declaring seedlock backends."""
    (tmp_path / "counterplug.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "counterplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: counterplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return str(tmp_path)


def test_third_party_backend_is_seeded_through_its_entry_point(tmp_path):
    path = make_distribution(
        tmp_path, "[seedlock.backends]\ncounter = counterplug:CounterBackend\n"
    )
    out = run_python(
        """
        import seedlock, counterplug
        report = seedlock.seed_everything(77)
        print(report['counter'].status, counterplug.STATE['value'])
        """,
        env={"PYTHONPATH": path},
    ).stdout.split()
    assert out == ["seeded", "77"]


def test_broken_entry_point_warns_and_the_rest_is_still_seeded(tmp_path):
    path = make_distribution(
        tmp_path,
        """
        [seedlock.backends]
        missing = counterplug:DoesNotExist
        broken = counterplug:Broken
        """,
    )
    proc = run_python(
        """
        import warnings, random, seedlock
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            report = seedlock.seed_everything(0)
        print(report['python'].status)
        for w in caught:
            print(w.message)
        """,
        env={"PYTHONPATH": path},
    )
    assert proc.stdout.splitlines()[0] == "seeded"
    assert "entry point 'missing' (counterplug:DoesNotExist) failed to load" in proc.stdout
    assert "entry point 'broken' (counterplug:Broken) does not implement" in proc.stdout


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1), draws=st.lists(st.sampled_from(["rand", "randn", "randn64"]))
)
def test_every_cpu_state_torch_writes_passes_seedlocks_check(seed, draws):
    from seedlock.backends.torch import CPU_STATE_BYTES, cpu_state_problems

    generator = torch.Generator().manual_seed(seed)
    for draw in draws:
        if draw == "rand":
            torch.rand(7, generator=generator)
        else:  # the normal samplers leave a cached sample behind
            dtype = torch.float64 if draw == "randn64" else torch.float32
            torch.randn(1, generator=generator, dtype=dtype)
    state = generator.get_state()
    assert state.numel() == CPU_STATE_BYTES  # the layout seedlock checks without torch
    assert cpu_state_problems("cpu", bytes(state.numpy().tobytes())) == []
