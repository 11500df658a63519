"""Restoring a hostile state: every value is checked before anything changes, for libraries not
imported yet too, and a restore that a library still refuses is undone."""

from __future__ import annotations

import copy
import math
import random
import struct
from typing import Any

import numpy as np
import pytest
import torch

import seedlock
from conftest import register_all, run_python
from seedlock import backends
from seedlock._registry import registered
from seedlock.errors import CorruptStateError, StateMismatchError

pytestmark = pytest.mark.usefixtures("empty_registry")


@pytest.fixture
def generators():
    gens: dict[str, Any] = register_all(
        pcg=np.random.default_rng(1),
        philox=np.random.Generator(np.random.Philox(2)),
        legacy=np.random.RandomState(3),
        py=random.Random(4),
        torch=torch.Generator().manual_seed(5),
    )
    gens["legacy"].standard_normal(3)  # leave a cached Gaussian behind
    return gens


def _torch_cpu(sd: dict, offset: int, fmt: str, value: object) -> None:
    blob = bytearray(sd["backends"]["torch"]["cpu"].numpy().tobytes())
    struct.pack_into(fmt, blob, offset, value)
    sd["backends"]["torch"]["cpu"] = torch.frombuffer(blob, dtype=torch.uint8)


def _zero_mt(sd: dict) -> None:
    blob = bytearray(sd["backends"]["python"]["mt"].numpy().tobytes())
    blob[:-4] = bytes(len(blob) - 4)
    sd["backends"]["python"]["mt"] = torch.frombuffer(blob, dtype=torch.uint8)


def _python_position(sd: dict, value: int) -> None:
    blob = bytearray(sd["backends"]["python"]["mt"].numpy().tobytes())
    blob[-4:] = value.to_bytes(4, "little")
    sd["backends"]["python"]["mt"] = torch.frombuffer(blob, dtype=torch.uint8)


def _parent(sd: dict, path: str) -> tuple[dict, str]:
    *keys, last = path.split(".")
    for key in keys:
        sd = sd[key]
    return sd, last


def _set(path: str, value: object):
    """Set the field at the dotted ``path`` of a state dict to ``value``."""

    def mutate(sd: dict) -> None:
        node, key = _parent(sd, path)
        node[key] = value

    return mutate


def _delete(path: str):
    def mutate(sd: dict) -> None:
        node, key = _parent(sd, path)
        del node[key]

    return mutate


# (what is wrong, how to make it so, words the refusal must contain)
BAD_VALUES = [
    ("python MT position past the key", lambda sd: _python_position(sd, 625), "mt position"),
    ("python all-zero MT state", _zero_mt, "all-zero Mersenne Twister"),
    ("python NaN cached Gaussian", _set("backends.python.gauss_next", math.nan), "finite"),
    ("python Inf cached Gaussian", _set("backends.python.gauss_next", math.inf), "finite"),
    ("python missing gauss_next", _delete("backends.python.gauss_next"), "lacks gauss_next"),
    ("python version True", _set("backends.python.version", True), "version"),
    ("numpy pos past the key", _set("backends.numpy.pos", 625), "pos"),
    ("numpy has_gauss 2", _set("backends.numpy.has_gauss", 2), "has_gauss"),
    ("numpy has_gauss -1", _set("backends.numpy.has_gauss", -1), "has_gauss"),
    ("numpy NaN gauss", _set("backends.numpy.gauss", math.nan), "finite"),
    ("torch left 0 (bytes 8-12 zeroed)", lambda sd: _torch_cpu(sd, 8, "<i", 0), "'left'"),
    ("torch left 625", lambda sd: _torch_cpu(sd, 8, "<i", 625), "'left'"),
    ("torch not seeded", lambda sd: _torch_cpu(sd, 12, "<i", 0), "'seeded'"),
    ("torch next 625", lambda sd: _torch_cpu(sd, 16, "<Q", 625), "'next'"),
    (
        "torch NaN cached normal",
        lambda sd: (_torch_cpu(sd, 5024, "<d", math.nan), _torch_cpu(sd, 5040, "<i", 1)),
        "cached normal sample must be finite",
    ),
    ("torch normal flag 2", lambda sd: _torch_cpu(sd, 5040, "<i", 2), "normal flag"),
    (
        "torch CUDA state of 15 bytes",
        _set("backends.torch.cuda", [torch.zeros(15, dtype=torch.uint8)]),
        "cuda[0] has 15 bytes, expected 16",
    ),
    (
        "torch CUDA offset not a multiple of 4",
        _set("backends.torch.cuda", [torch.tensor([0] * 8 + [3] + [0] * 7).byte()]),
        "multiple of 4",
    ),
    (
        "RandomState pos 9999",
        _set("generators.legacy.state.state.pos", 9999),
        "pos must be an int in",
    ),
    (
        "RandomState key of another dtype",
        _set("generators.legacy.state.state.key.__array__", "<u8"),
        "must be a <u4 array",
    ),
    (
        "RandomState key of another shape",
        _set("generators.legacy.state.state.key.shape", [312, 2]),
        "of shape [624]",
    ),
    ("RandomState has_gauss 2", _set("generators.legacy.state.has_gauss", 2), "has_gauss"),
    ("PCG64 state of 129 bits", _set("generators.pcg.state.state.state", 2**128), "state.state"),
    ("PCG64 even increment", _set("generators.pcg.state.state.inc", 2), "must be odd"),
    ("PCG64 uinteger of 33 bits", _set("generators.pcg.state.uinteger", 2**32), "uinteger"),
    ("PCG64 has_uint32 True", _set("generators.pcg.state.has_uint32", True), "got bool"),
    ("Philox buffer_pos 5", _set("generators.philox.state.buffer_pos", 5), "buffer_pos"),
    ("random.Random NaN gauss", _set("generators.py.state.gauss_next", math.nan), "finite"),
    ("torch.Generator left 0", lambda sd: _generator_left(sd, 0), "'left'"),
    ("an unexpected field", _set("backends.numpy.extra", 1), "unexpected field"),
]


def _generator_left(sd: dict, value: int) -> None:
    blob = bytearray(sd["generators"]["torch"]["state"]["state"].numpy().tobytes())
    struct.pack_into("<i", blob, 8, value)
    sd["generators"]["torch"]["state"]["state"] = torch.frombuffer(blob, dtype=torch.uint8)


@pytest.mark.parametrize(("what", "mutate", "words"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_a_value_no_library_writes_is_refused_before_any_generator_changes(
    generators, what, mutate, words
):
    seedlock.seed_everything(7)
    sd = seedlock.state_dict()
    random.random(), np.random.rand(), torch.rand(1), generators["pcg"].random()
    before = seedlock.capture()
    bad = copy.deepcopy(sd)
    mutate(bad)
    with pytest.raises(StateMismatchError) as info:
        seedlock.load_state_dict(bad)
    assert any(words in p for p in info.value.problems), info.value.problems
    assert seedlock.capture() == before


def test_the_upper_halves_torch_discards_do_not_matter():
    seedlock.seed_everything(7)
    sd = seedlock.state_dict()
    expected = torch.rand(3)
    blob = bytearray(sd["backends"]["torch"]["cpu"].numpy().tobytes())
    blob[24 + 4 : 24 + 8] = b"\xff\xff\xff\xff"  # the unused upper half of MT word 0
    sd["backends"]["torch"]["cpu"] = torch.frombuffer(blob, dtype=torch.uint8)
    seedlock.load_state_dict(sd)
    assert torch.equal(torch.rand(3), expected)


def test_the_same_state_unmutated_restores(generators):
    seedlock.seed_everything(7)
    sd = seedlock.state_dict()
    expected = random.random(), np.random.rand(), generators["legacy"].standard_normal()
    seedlock.load_state_dict(copy.deepcopy(sd))
    assert (random.random(), np.random.rand(), generators["legacy"].standard_normal()) == expected


def test_a_bool_version_is_not_version_one():
    sd = seedlock.state_dict()
    sd["version"] = True
    with pytest.raises(CorruptStateError, match="invalid RNG state version"):
        seedlock.load_state_dict(sd)


def test_a_deeply_nested_state_dict_is_corrupt_not_a_recursion_error():
    sd = seedlock.state_dict()
    deep: list = []
    for _ in range(2000):
        deep = [deep]
    sd["backends"]["python"]["mt"] = deep
    with pytest.raises(CorruptStateError, match="nested more than"):
        seedlock.load_state_dict(sd)


class _Refuses(backends.BaseBackend):
    """A third-party backend whose library refuses every state it is given."""

    name = "refuses"
    module = "random"

    def seed(self, value: int) -> str:
        return "nothing"

    def capture(self) -> dict:
        return {"n": 1}

    def restore(self, state: dict) -> None:
        raise RuntimeError("this library refuses")


def test_a_restore_a_library_refuses_is_undone_and_reported(monkeypatch, generators):
    with monkeypatch.context() as patch:
        patch.setattr(backends, "_registry", [*backends.all_backends(), _Refuses()])
        patch.setattr(backends, "_by_name", {}, raising=False)
        seedlock.seed_everything(3)
        state = seedlock.capture()
        assert list(state.backends) == ["python", "numpy", "torch", "refuses"]
        random.random(), np.random.rand(), torch.rand(2), generators["py"].random()
        before = seedlock.capture()
        with pytest.raises(StateMismatchError, match="backend 'refuses': the library refused"):
            seedlock.restore(state)
        assert seedlock.capture() == before
    backends._by_name.clear()


def test_system_random_cannot_be_registered():
    with pytest.raises(TypeError, match=r"SystemRandom: it draws from the operating system"):
        seedlock.register(random.SystemRandom(), "entropy")
    assert "entropy" not in registered()


NOT_IMPORTED = """
    import json, sys, warnings
    import seedlock
    from seedlock.state import RNGState
    warnings.simplefilter("error")
    key = bytes(range(256)) * 9 + bytes(192)
    good = {"bit_generator": "MT19937", "key": key[:2496], "pos": 624, "has_gauss": 0,
            "gauss": 0.0}
    python = seedlock.capture().backends["python"]
    import random
    random.random()
    moved = seedlock.capture()
    bad = RNGState({"python": python, "numpy": dict(good, pos=9999)})
    try:
        seedlock.restore(bad)
    except seedlock.StateError as exc:
        print("refused", "pos must be an int in" in str(exc))
    print("python unchanged", seedlock.capture() == moved, "numpy" in sys.modules)
    seedlock.restore(RNGState({"python": python, "numpy": good}))
    import numpy as np
    print("numpy restored", np.random.get_state()[1][:3].tolist() == [0x03020100, 0x07060504,
          0x0b0a0908], np.random.get_state()[2])
"""


def test_a_state_for_a_library_not_imported_yet_is_checked_now_and_applied_on_import():
    out = run_python(NOT_IMPORTED).stdout.splitlines()
    assert out == ["refused True", "python unchanged True False", "numpy restored True 624"]


def test_device_states_for_a_torch_not_imported_yet_are_refused_in_exact_mode():
    out = run_python(
        """
        import sys, seedlock
        from seedlock.state import RNGState
        import torch
        cpu = bytes(torch.get_rng_state().numpy().tobytes())
        del sys.modules["torch"]  # as if not imported yet: seedlock must not count devices
        state = RNGState({"torch": {"cpu": cpu, "cuda": [bytes(16)]}})
        try:
            seedlock.restore(state)
        except seedlock.StateError as exc:
            print("torch is not imported yet" in str(exc))
        """
    ).stdout.split()
    assert out == ["True"]


FORK_IMPORT = """
    import seedlock
    seedlock.seed_everything(0)
    with seedlock.fork():
        import numpy as np
        np.random.rand(100)
    print(np.random.rand(3).tolist() == [0.5488135039273248, 0.7151893663724195,
          0.6027633760716439])
"""


def test_fork_puts_back_a_library_first_imported_inside_it():
    assert run_python(FORK_IMPORT).stdout.split() == ["True"]
