"""derive(): the stability contract. These golden vectors are the specification: a change that
moves one of them is a breaking change (see seedlock/derivation.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seedlock
from conftest import run_python
from seedlock.derivation import (
    ENV_VAR,
    Deriver,
    check_seed,
    derive,
    format_seed,
    fresh_seed,
    get_root,
    parse_seed,
    set_root,
)

GOLDEN = [
    ((), 0, 64, 5177297041456371309),
    (("augment",), 0, 64, 13451230188544239583),
    (("augment",), 1, 64, 9135285761236257938),
    (("data", 3, 17), 0, 32, 4179378542),
    (("data", 3, 17), 0, 128, 112845644634141691281712112054847684974),
    (("x",), -1, 64, 5275493799403682371),
    (("x",), 2**64, 64, 18203872478961730532),
    (("x",), "experiment-7", 64, 220336067017003679),
    (("x",), b"\x00\x01", 64, 17593470317192685436),
    (
        (b"k", -5, "é"),
        42,
        256,
        104716046832597246821186481331249075592210065117589024686521623611783395815641,
    ),
    (("augment",), 0, 1, 1),
]


@pytest.mark.parametrize(("keys", "root", "bits", "expected"), GOLDEN)
def test_derive_matches_golden_vector(keys, root, bits, expected):
    assert derive(*keys, root=root, bits=bits) == expected


def test_derive_follows_the_documented_encoding():
    # Recomputed from the module docstring alone, not from the implementation.
    def item(tag: bytes, payload: bytes) -> bytes:
        return tag + len(payload).to_bytes(8, "little") + payload

    msg = (
        b"seedlock/derive/v1"
        + (4).to_bytes(8, "little")
        + item(b"s", b"data")
        + item(b"i", b"\x03")
        + item(b"i", b"\xff\x00")  # 255 needs a sign byte
        + item(b"i", b"\x00")  # root 0
    )
    digest = hashlib.blake2b(msg, digest_size=32).digest()
    assert derive("data", 3, 255, root=0, bits=64) == int.from_bytes(digest[:8], "little")


def test_derive_is_the_same_in_a_fresh_interpreter_with_another_hash_seed():
    code = "from seedlock.derivation import derive; print(derive('augment', 'é', root=0))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == derive("augment", "é", root=0)


def test_lower_bit_widths_are_prefixes_of_the_same_digest():
    wide = derive("augment", root=0, bits=128)
    assert derive("augment", root=0, bits=32) == wide & 0xFFFFFFFF


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((("ab",), 0), (("a", "b"), 0)),
        ((("1",), 0), ((1,), 0)),
        (((b"1",), 0), (("1",), 0)),
        (((-1,), 0), ((255,), 0)),
        (((), "0"), ((), 0)),
        (((0,), 1), ((1,), 0)),
        (((), 2**32), ((), 0)),
    ],
)
def test_distinct_key_paths_never_share_an_encoding(a, b):
    assert derive(*a[0], root=a[1]) != derive(*b[0], root=b[1])


keys = st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=5), st.binary(max_size=5))


@given(
    head=st.lists(keys, max_size=2),
    middle=st.lists(keys, max_size=3),
    suffixes=st.lists(st.lists(keys, max_size=3), max_size=4),
    root=keys,
    bits=st.integers(1, 256),
)
def test_the_deriver_is_derive_with_the_fixed_parts_hashed_once(head, middle, suffixes, root, bits):
    # Suffixes of different lengths land in different hash groups: the order must survive.
    got = Deriver(head, len(middle), suffixes, root=root, bits=bits)(*middle)
    assert got == [derive(*head, *middle, *s, root=root, bits=bits) for s in suffixes]


def test_the_deriver_checks_its_middle_keys():
    deriver = Deriver(("data",), 2, [("torch",)], root=0)
    with pytest.raises(TypeError, match="expected 2 middle key"):
        deriver(1)
    with pytest.raises(TypeError, match="bool"):
        deriver(True, 1)


@pytest.mark.parametrize("bits", [0, 257, -1])
def test_bits_out_of_range_is_an_error(bits):
    with pytest.raises(ValueError, match="bits must be between 1 and 256"):
        derive("x", root=0, bits=bits)


def test_float_seed_is_refused_with_a_hint():
    with pytest.raises(TypeError, match=r"got float 0\.5 \(round it\)"):
        check_seed(0.5)
    with pytest.raises(TypeError, match=r"use 3 if you meant 3"):
        check_seed(3.0)


def test_bool_seed_is_refused():
    with pytest.raises(TypeError, match="got bool True"):
        check_seed(True)


@pytest.mark.parametrize("bad", [None, [1, 2], {"a": 1}, object()])
def test_other_seed_types_are_refused_naming_what_is_accepted(bad):
    with pytest.raises(TypeError, match="must be an int, str or bytes"):
        check_seed(bad)


def test_integer_like_scalars_are_accepted_as_ints():
    np = pytest.importorskip("numpy")
    assert check_seed(np.int64(7)) == 7
    assert type(check_seed(np.uint32(7))) is int
    assert derive("x", root=np.int64(7)) == derive("x", root=7)


def test_bool_key_is_refused():
    with pytest.raises(TypeError, match="key must be an int, str or bytes"):
        derive(True, root=0)


@pytest.mark.parametrize("seed", [0, -7, 2**70, "run-1", "123", "", b"\x00\xff", b""])
def test_format_and_parse_seed_round_trip(seed):
    assert parse_seed(format_seed(seed)) == seed
    assert type(parse_seed(format_seed(seed))) is type(seed)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.one_of(
        st.integers(min_value=-(2**30000), max_value=2**30000),
        st.text(alphabet=st.characters(exclude_categories=["Cs"])),
        st.binary(),
    )
)
def test_every_seed_survives_its_text_form_exactly(seed):
    text = format_seed(seed)
    assert "\0" not in text  # it fits in an environment variable
    assert parse_seed(text) == seed
    assert type(parse_seed(text)) is type(seed)


@pytest.mark.parametrize(
    "seed",
    [2**20000, -(2**20000), "a\x00b", "  padded  ", "line\n"],
    ids=["2**20000", "-2**20000", "NUL", "padded", "newline"],
)
def test_seeds_beyond_decimal_limits_and_env_limits_reach_child_processes(seed):
    seedlock.seed_everything(seed)
    assert seedlock.get_root() == seed
    literal = hex(seed) if isinstance(seed, int) else repr(seed)  # repr(2**20000) raises
    code = f"import seedlock; print(seedlock.get_root() == {literal}, seedlock.derive('x'))"
    out = run_python(code, env={"SEEDLOCK_SEED": os.environ["SEEDLOCK_SEED"]})
    assert out.stdout.split() == ["True", str(derive("x"))]


def test_a_str_with_a_lone_surrogate_is_refused_and_nothing_changes():
    seedlock.seed_everything(5)
    with pytest.raises(ValueError, match="lone surrogate"):
        seedlock.seed_everything("a\ud800")
    assert seedlock.get_root() == 5
    assert os.environ["SEEDLOCK_SEED"] == "5"


@pytest.mark.parametrize("flag", [torch.tensor(True), np.bool_(True)], ids=["torch", "numpy"])
def test_a_boolean_scalar_is_refused_like_bool(flag):
    with pytest.raises(TypeError, match="must be an int, str or bytes"):
        check_seed(flag)


def test_parse_seed_accepts_hex_integers_and_rejects_junk():
    assert parse_seed("0x2a") == 42
    with pytest.raises(ValueError, match="expected an integer"):
        parse_seed("forty-two")
    with pytest.raises(ValueError, match="expected hex:<hex digits>"):
        parse_seed("hex:zz")


def test_fresh_seed_is_32_bits():
    assert all(0 <= fresh_seed() < 2**32 for _ in range(100))


def test_root_comes_from_the_environment_when_not_set_in_process(monkeypatch):
    import seedlock.derivation as d

    monkeypatch.setattr(d, "_root", None)
    monkeypatch.setenv(ENV_VAR, "str:from-env")
    assert get_root() == "from-env"
    assert derive("x") == derive("x", root="from-env")


def test_missing_root_is_a_clear_error(monkeypatch):
    import seedlock.derivation as d

    monkeypatch.setattr(d, "_root", None)
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(LookupError, match=r"call seedlock\.seed_everything"):
        derive("x")


def test_set_root_exports_the_seed_for_children(monkeypatch):
    import seedlock.derivation as d

    monkeypatch.setattr(d, "_root", None)
    monkeypatch.delenv(ENV_VAR, raising=False)
    set_root(b"\x01\x02")
    assert d.os.environ[ENV_VAR] == "hex:0102"
    code = "from seedlock.derivation import derive; print(derive('x'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == derive("x", root=b"\x01\x02")
