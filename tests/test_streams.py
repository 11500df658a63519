"""Named streams: golden first draws per factory (part of the stability contract)."""

from __future__ import annotations

import random

import pytest
import torch

import seedlock
from conftest import run_python


def test_numpy_rng_golden_raw_draws():
    rng = seedlock.numpy_rng("augment", root=0)
    assert rng.bit_generator.random_raw(3).tolist() == [
        10619414674378198932,
        409348469611641580,
        5435732079240616672,
    ]


def test_numpy_rng_extra_keys_make_another_stream():
    rng = seedlock.numpy_rng("augment", 3, root=0)
    assert rng.bit_generator.random_raw(2).tolist() == [5458903775231416823, 10764034440428155723]


def test_random_rng_golden_draws():
    rng = seedlock.random_rng("augment", root=0)
    assert isinstance(rng, random.Random)
    assert [rng.getrandbits(32) for _ in range(3)] == [3352990251, 696697966, 1818040478]


def test_torch_generator_golden_seed_and_draws():
    g = seedlock.torch_generator("sampler", root=0)
    assert g.initial_seed() == 899877552 == seedlock.derive("sampler", root=0, bits=32)
    assert torch.randint(0, 2**31, (3,), generator=g).tolist() == [
        1125876646,
        2048515289,
        1458516802,
    ]


def test_jax_key_golden_data_keeps_all_64_bits():
    # In a child: JAX starts thread pools, and the DataLoader tests fork worker processes.
    pytest.importorskip("jax")
    out = run_python(
        """
        import jax, seedlock
        print(jax.random.key_data(seedlock.jax_key("init", root=0)).tolist())
        """
    ).stdout
    assert out.strip() == "[610016624, 2734434443]"
    value = seedlock.derive("init", root=0, bits=64)
    assert [value & 0xFFFFFFFF, value >> 32] == [610016624, 2734434443]


def test_streams_default_to_the_root_set_by_seed_everything():
    seedlock.seed_everything(0)
    a = seedlock.numpy_rng("augment").random(4)
    b = seedlock.numpy_rng("augment", root=0).random(4)
    assert a.tobytes() == b.tobytes()


def test_each_call_starts_the_stream_from_the_beginning():
    first = seedlock.random_rng("x", root=1).random()
    assert seedlock.random_rng("x", root=1).random() == first


def test_draws_in_one_stream_never_shift_another():
    seedlock.seed_everything(5)
    baseline = seedlock.numpy_rng("dropout").random(6).tobytes()
    augment = seedlock.numpy_rng("augment")
    dropout = seedlock.numpy_rng("dropout")
    head = dropout.random(3).tobytes()
    augment.random(1000)  # one component draws a lot more than before, in between
    assert head + dropout.random(3).tobytes() == baseline


def test_different_names_give_different_streams():
    a = seedlock.torch_generator("a", root=0)
    b = seedlock.torch_generator("b", root=0)
    assert not torch.equal(torch.rand(8, generator=a), torch.rand(8, generator=b))
