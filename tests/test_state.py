"""capture / restore / fork / state_dict: every backend and registered generator, exactly."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seedlock
from conftest import register_all, run_python
from seedlock._registry import registered
from seedlock.errors import CorruptStateError, StateMismatchError, StateVersionError
from seedlock.state import RNGState

pytestmark = pytest.mark.usefixtures("empty_registry")


def make_generators() -> dict[str, object]:
    return register_all(
        np_pcg=np.random.default_rng(1),
        np_mt=np.random.Generator(np.random.MT19937(2)),
        np_legacy=np.random.RandomState(3),
        py=random.Random(4),
        torch=torch.Generator().manual_seed(5),
    )


def draw(source: str, gens: dict[str, object]) -> bytes:
    """One draw from one source, as exact bytes."""
    if source == "random":
        return repr(random.random()).encode()
    if source == "random_gauss":
        return repr(random.gauss(0, 1)).encode()
    if source == "numpy":
        return np.random.rand(3).tobytes()
    if source == "numpy_normal":
        return np.random.standard_normal(1).tobytes()  # leaves a cached Gaussian behind
    if source == "torch":
        return torch.rand(4).numpy().tobytes()
    if source == "torch_normal":
        return torch.randn(3).numpy().tobytes()
    g = gens[source]
    if isinstance(g, random.Random):
        return repr(g.gauss(0, 1)).encode()
    if isinstance(g, torch.Generator):
        return torch.rand(2, generator=g).numpy().tobytes()
    if isinstance(g, np.random.RandomState):
        return g.standard_normal(1).tobytes()
    return g.random(2).tobytes()


SOURCES = [
    "random",
    "random_gauss",
    "numpy",
    "numpy_normal",
    "torch",
    "torch_normal",
    "np_pcg",
    "np_mt",
    "np_legacy",
    "py",
    "torch",
]


@settings(max_examples=60, deadline=None)
@given(
    before=st.lists(st.sampled_from(SOURCES), max_size=12),
    after=st.lists(st.sampled_from(SOURCES), min_size=1, max_size=12),
)
def test_restore_after_any_interleaving_of_draws_replays_them_exactly(before, after):
    for name in registered():
        seedlock.unregister(name)
    gens = make_generators()
    for source in before:
        draw(source, gens)
    state = seedlock.capture()
    first = [draw(s, gens) for s in after]
    seedlock.restore(state)
    assert [draw(s, gens) for s in after] == first


def test_state_dict_survives_torch_save_and_weights_only_load():
    gens = make_generators()
    seedlock.seed_everything(8)
    buffer = io.BytesIO()
    torch.save({"rng": seedlock.state_dict()}, buffer)
    expected = [draw(s, gens) for s in SOURCES]
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    seedlock.load_state_dict(loaded["rng"])
    assert [draw(s, gens) for s in SOURCES] == expected


def test_state_dict_holds_only_plain_types_and_uint8_tensors():
    make_generators()

    def walk(value):
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, torch.Tensor):
            assert value.dtype == torch.uint8
        else:
            assert value is None or isinstance(value, (str, int, float, bool)), type(value)

    walk(seedlock.state_dict())


def test_state_dict_without_torch_uses_numpy_arrays():
    out = run_python(
        """
        import sys, seedlock, numpy as np
        seedlock.seed_everything(1)
        sd = seedlock.state_dict()
        key = sd['backends']['numpy']['key']
        print(type(key).__name__, key.dtype, 'torch' in sys.modules)
        a = np.random.rand(2)
        seedlock.load_state_dict(sd)
        print((np.random.rand(2) == a).all())
        """
    ).stdout.split()
    assert out == ["ndarray", "uint8", "False", "True"]


def test_restore_lists_every_problem_and_changes_nothing():
    gens = make_generators()
    state = seedlock.capture()
    bad = RNGState(
        {**state.backends, "numpy": {**state.backends["numpy"], "key": b"short"}},
        {k: v for k, v in state.generators.items() if k != "py"},
    )
    seedlock.register(random.Random(9), "extra")
    draw("np_pcg", gens)
    snapshot = seedlock.capture()
    with pytest.raises(StateMismatchError) as info:
        seedlock.restore(bad)
    assert info.value.problems == [
        "backend 'numpy': key has 5 bytes, expected 2496",
        "generator 'py': registered here but absent from the state",
        "generator 'extra': registered here but absent from the state",
    ]
    assert "nothing was changed" in str(info.value)
    assert seedlock.capture() == snapshot


def test_failed_restore_leaves_every_generator_untouched():
    make_generators()
    seedlock.seed_everything(3)
    good = seedlock.capture()
    random.random(), np.random.rand(), torch.rand(1)  # move everything on
    moved = seedlock.capture()
    broken = RNGState({**good.backends, "torch": {"cpu": b"x"}}, good.generators)
    with pytest.raises(StateMismatchError):
        seedlock.restore(broken)
    assert seedlock.capture() == moved


def test_generator_in_the_state_but_not_registered_is_named():
    seedlock.register(random.Random(1), "noise")
    state = seedlock.capture()
    seedlock.unregister("noise")
    with pytest.raises(StateMismatchError, match=r"generator 'noise': in the state but not"):
        seedlock.restore(state)


def test_generator_kind_mismatch_is_reported():
    seedlock.register(random.Random(1), "g")
    state = seedlock.capture()
    seedlock.unregister("g")
    seedlock.register(np.random.default_rng(1), "g")
    with pytest.raises(StateMismatchError, match="is a numpy generator, the state is for 'python'"):
        seedlock.restore(state)


def test_device_count_mismatch_is_an_error_by_default_and_common_restores_the_rest():
    state = seedlock.capture()
    fake = RNGState(
        {**state.backends, "torch": {**state.backends["torch"], "cuda": [b"\0" * 16] * 4}}
    )
    with pytest.raises(StateMismatchError, match=r"holds 4 cuda device\(s\), this process sees"):
        seedlock.restore(fake)
    if torch.cuda.device_count() == 0:
        with pytest.raises(StateMismatchError, match="holds cuda devices, this process sees none"):
            seedlock.restore(fake, devices="common")


def test_unknown_device_policy_is_an_error():
    with pytest.raises(ValueError, match="devices must be one of"):
        seedlock.restore(seedlock.capture(), devices="some")  # type: ignore[arg-type]


def test_restore_refuses_a_non_state():
    with pytest.raises(TypeError, match="state must be an RNGState"):
        seedlock.restore({"backends": {}})  # type: ignore[arg-type]


def test_load_state_dict_rejects_a_foreign_dict_and_a_future_version():
    with pytest.raises(CorruptStateError, match="not a seedlock RNG state"):
        seedlock.load_state_dict({"model": 1})
    sd = seedlock.state_dict()
    sd["version"] = 99
    with pytest.raises(StateVersionError, match="newer seedlock"):
        seedlock.load_state_dict(sd)


def test_register_rejects_unsupported_objects_and_taken_names():
    with pytest.raises(TypeError, match=r"cannot register a builtins\.list"):
        seedlock.register([], "x")
    seedlock.register(random.Random(1), "x")
    with pytest.raises(ValueError, match="already registered as 'x'"):
        seedlock.register(random.Random(2), "x")
    seedlock.register(random.Random(2), "x", replace=True)
    with pytest.raises(KeyError, match="no generator is registered as 'y'"):
        seedlock.unregister("y")


def test_stream_factories_register_their_generators():
    seedlock.seed_everything(0)
    rng = seedlock.numpy_rng("augment", 3)
    gen = seedlock.torch_generator("dropout")
    assert registered()["numpy_rng('augment', 3)"] is rng
    assert registered()["torch_generator('dropout')"] is gen
    state = seedlock.capture()
    a = rng.random(2).tobytes(), torch.rand(2, generator=gen)
    seedlock.restore(state)
    assert rng.random(2).tobytes() == a[0]
    assert torch.equal(torch.rand(2, generator=gen), a[1])


def test_fork_restores_every_family_on_exit():
    gens = make_generators()
    seedlock.seed_everything(4)
    with seedlock.fork():
        inside = [draw(s, gens) for s in SOURCES]
    assert [draw(s, gens) for s in SOURCES] == inside


def test_fork_restores_when_the_body_raises():
    seedlock.seed_everything(4)
    expected = torch.rand(3)
    seedlock.seed_everything(4)
    with pytest.raises(ZeroDivisionError), seedlock.fork():
        torch.rand(100)
        _ = 1 / 0
    assert torch.equal(torch.rand(3), expected)


def test_fork_nests():
    seedlock.seed_everything(4)
    first, second = random.random(), random.random()
    seedlock.seed_everything(4)
    with seedlock.fork():
        a = random.random()
        with seedlock.fork():
            random.random()
            random.random()
        b = random.random()  # the inner fork put the outer body's stream back
    after = random.random()  # the outer fork put the stream from before it back
    assert (a, b, after) == (first, second, first)


def test_fork_works_as_a_decorator_and_tolerates_registration_inside():
    @seedlock.fork()
    def evaluate():
        seedlock.register(random.Random(1), "made-inside")
        return torch.rand(5)

    seedlock.seed_everything(6)
    evaluate()
    after = torch.rand(2)
    seedlock.seed_everything(6)
    assert torch.equal(torch.rand(2), after)


RESEED = """
    import os, random, numpy as np, torch, seedlock
    seedlock.seed_everything(11)
    seedlock.reseed_on_fork()
    print('parent', random.random(), np.random.rand(), float(torch.rand(1)), flush=True)
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            print('child', random.random(), np.random.rand(), float(torch.rand(1)), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
"""


def test_reseed_on_fork_gives_children_distinct_reproducible_streams():
    first = run_python(RESEED).stdout.splitlines()
    second = run_python(RESEED).stdout.splitlines()
    assert first == second
    parent, child0, child1 = first
    assert len({parent.split()[1], child0.split()[1], child1.split()[1]}) == 3
    assert len({child0.split()[2], child1.split()[2]}) == 2


def test_without_reseed_on_fork_children_repeat_numpy_and_torch_and_random_is_irreproducible():
    # Python reseeds `random` from OS entropy in every forked child; NumPy and torch carry on
    # the parent's streams, so every child draws the same numbers.
    code = RESEED.replace("seedlock.reseed_on_fork()", "")
    first = [line.split() for line in run_python(code).stdout.splitlines()]
    second = [line.split() for line in run_python(code).stdout.splitlines()]
    assert first[1][2:] == first[2][2:]
    assert first[1][1] != second[1][1]


def test_reseed_on_fork_needs_a_root_seed():
    with pytest.raises(LookupError, match="no root seed"):
        seedlock.reseed_on_fork()
