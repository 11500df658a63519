"""seed_everything: classic compatibility, the independent scheme, post-import seeding, reports."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import seedlock
from conftest import run_python
from seedlock.derivation import ENV_VAR, derive

CLASSIC_NUMPY_0 = "[0.5488135  0.71518937 0.60276338]"


def classic_recipe(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def draws() -> tuple[float, bytes, torch.Tensor]:
    return random.random(), np.random.rand(4).tobytes(), torch.rand(6)


def test_classic_numpy_numbers_after_seed_everything_0():
    seedlock.seed_everything(0)
    assert str(np.random.rand(3)) == CLASSIC_NUMPY_0


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1])
def test_classic_scheme_matches_the_hand_written_recipe_bit_for_bit(seed):
    classic_recipe(seed)
    py, npb, t = draws()
    seedlock.seed_everything(seed)
    py2, npb2, t2 = draws()
    assert py == py2
    assert npb == npb2
    assert torch.equal(t, t2)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70, "experiment-7", b"\x00\x01"])
def test_classic_seed_outside_uint32_maps_to_one_derived_value_for_every_global(seed):
    report = seedlock.seed_everything(seed)
    value = derive("classic", root=seed, bits=32)
    assert {report[n].value for n in ("python", "numpy", "torch")} == {value}
    py, npb, t = draws()
    classic_recipe(value)
    py2, npb2, t2 = draws()
    assert (py, npb) == (py2, npb2)
    assert torch.equal(t, t2)


def test_negative_and_positive_seeds_do_not_collide():
    # random.seed(-5) == random.seed(5): seedlock must not inherit that trap.
    seedlock.seed_everything(-5)
    a = draws()
    seedlock.seed_everything(5)
    b = draws()
    assert a[0] != b[0]
    assert a[1] != b[1]


def test_independent_scheme_gives_each_global_its_own_derived_seed():
    report = seedlock.seed_everything(0, scheme="independent")
    for name, bits in (("python", 64), ("numpy", 32), ("torch", 32)):
        assert report[name].value == derive("global", name, root=0, bits=bits)
    assert report["numpy"].value != report["torch"].value
    np_key = np.random.get_state()[1]
    expected = np.random.RandomState(report["numpy"].value).get_state()[1]
    assert np.array_equal(np_key, expected)


def torch_mt_key() -> np.ndarray:
    # torch's CPU generator state holds the 624-word MT19937 key as uint64 after a 24-byte header.
    raw = torch.get_rng_state().numpy().tobytes()
    return np.frombuffer(raw[24 : 24 + 624 * 8], dtype="<u8")


def test_classic_scheme_puts_numpy_and_torch_on_the_same_mt_key():
    seedlock.seed_everything(123)
    assert np.array_equal(np.random.get_state()[1].astype(np.uint64), torch_mt_key())


def test_independent_scheme_separates_numpy_and_torch_mt_keys():
    seedlock.seed_everything(123, scheme="independent")
    assert not np.array_equal(np.random.get_state()[1].astype(np.uint64), torch_mt_key())


def test_unknown_scheme_is_an_error():
    with pytest.raises(ValueError, match="scheme must be one of"):
        seedlock.seed_everything(0, scheme="random")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (0.5, "got float 0.5"),
        (True, "got bool True"),
        ([1], "got list"),
        (object(), "got object"),
    ],
)
def test_bad_seed_types_raise_type_error_saying_what_is_accepted(bad, message):
    with pytest.raises(TypeError, match="seed must be an int, str or bytes") as info:
        seedlock.seed_everything(bad)
    assert message in str(info.value)


def test_seed_none_draws_fresh_entropy_that_replays():
    report = seedlock.seed_everything(None)
    assert report.fresh
    assert isinstance(report.root, int)
    assert 0 <= report.root < 2**32
    first = draws()
    replay = seedlock.seed_everything(report.root)
    assert not replay.fresh
    second = draws()
    assert first[:2] == second[:2]
    assert torch.equal(first[2], second[2])
    assert "fresh entropy" in str(report)


def test_seed_everything_exports_the_root_for_children():
    seedlock.seed_everything("exp-1")
    assert os.environ[ENV_VAR] == "str:exp-1"
    assert seedlock.derive("augment") == derive("augment", root="exp-1")


def test_backends_argument_limits_what_is_seeded():
    random.seed(99)
    expected = random.random()
    random.seed(99)
    report = seedlock.seed_everything(0, backends=["numpy"])
    assert random.random() == expected
    assert report["python"].status == "skipped"
    assert report["numpy"].status == "seeded"


def test_unknown_backend_name_is_an_error_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backend\(s\) 'pytorch'; known: .*torch"):
        seedlock.seed_everything(0, backends=["pytorch"])


def test_report_is_a_table_and_a_json_serialisable_dict():
    report = seedlock.seed_everything(7)
    text = str(report)
    for name in ("python", "numpy", "torch", "jax", "tensorflow", "cupy"):
        assert name in text
    d = report.to_dict()
    assert json.loads(json.dumps(d))["root"] == "7"
    assert {e["backend"]: e["status"] for e in d["entries"]}["torch"] == "seeded"


def test_library_not_installed_is_reported_not_imported():
    report = seedlock.seed_everything(0)
    # TensorFlow and CuPy are not part of the test environment.
    import importlib.util

    for name in ("tensorflow", "cupy"):
        if importlib.util.find_spec(name) is None:
            assert report[name].status == "not installed"
            assert report[name].value is None


def test_a_framework_imported_after_seed_everything_is_seeded_on_import():
    code = """
        import seedlock
        report = seedlock.seed_everything(0)
        assert report['torch'].status == 'on import', report['torch']
        assert report['numpy'].status == 'on import', report['numpy']
        import torch, numpy
        print(torch.rand(4).tolist(), numpy.random.rand(2).tolist())
    """
    first = run_python(code).stdout
    second = run_python(code).stdout
    assert first == second
    torch.manual_seed(0)
    np.random.seed(0)
    assert first.strip() == f"{torch.rand(4).tolist()} {np.random.rand(2).tolist()}"


def test_reseeding_replaces_the_pending_post_import_seed():
    code = """
        import seedlock
        seedlock.seed_everything(0)
        seedlock.seed_everything(1)
        import torch
        print(torch.initial_seed())
    """
    assert run_python(code).stdout.strip() == "1"


def test_two_processes_with_the_same_seed_draw_identically_from_every_backend():
    code = """
        import random, seedlock, numpy, torch, jax
        seedlock.seed_everything(2024)
        print(random.random(), numpy.random.rand(3).tobytes().hex(),
              torch.rand(3).numpy().tobytes().hex(), torch.randn(2, dtype=torch.float64).tolist(),
              numpy.random.default_rng(seedlock.derive('g')).integers(0, 2**62),
              seedlock.numpy_rng('augment').random(), seedlock.random_rng('a').random(),
              torch.rand(2, generator=seedlock.torch_generator('s')).tolist(),
              jax.random.uniform(seedlock.jax_key('init'), (2,)).tolist())
    """
    outputs = {run_python(code).stdout for _ in range(2)}
    assert len(outputs) == 1
    other = run_python(code.replace("2024", "2025")).stdout
    assert other not in outputs


def test_hash_seed_is_reported_as_fixed_only_when_set_at_startup():
    code = """
        import os, seedlock
        os.environ['PYTHONHASHSEED'] = '3'   # the classic in-process no-op
        hs = seedlock.hash_seed()
        print(hs.fixed, hs.value)
    """
    assert run_python(code).stdout.split() == ["False", "None"]
    assert run_python(code, env={"PYTHONHASHSEED": "5"}).stdout.split() == ["True", "5"]
    assert run_python(code, env={"PYTHONHASHSEED": "0"}).stdout.split() == ["True", "0"]


SCRIPT = """
import os, seedlock
seedlock.ensure_hash_seed({seed!r})
print(hash("seedlock"), os.environ["PYTHONHASHSEED"], seedlock.hash_seed().fixed)
"""


def test_ensure_hash_seed_reexecutes_with_a_fixed_hash_seed(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(seed=7))
    outs = [
        subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert outs[0] == outs[1]
    assert outs[0][1:] == ["7", "True"]
    reference = run_python('print(hash("seedlock"))', env={"PYTHONHASHSEED": "7"}).stdout
    assert outs[0][0] == reference.strip()


def test_ensure_hash_seed_with_a_str_root_uses_a_derived_value():
    out = run_python(SCRIPT.format(seed="exp")).stdout.split()
    assert out[1] == str(derive("PYTHONHASHSEED", root="exp", bits=32))
    assert out[2] == "True"


def test_ensure_hash_seed_reexecutes_only_when_needed():
    code = """
        import seedlock
        print("start", flush=True)
        seedlock.ensure_hash_seed(9)
        print("ready")
    """
    assert run_python(code, env={"PYTHONHASHSEED": "9"}).stdout.split() == ["start", "ready"]
    assert run_python(code).stdout.split() == ["start", "start", "ready"]


def test_ensure_hash_seed_refuses_in_an_interactive_session():
    proc = subprocess.run(
        [sys.executable, "-i"],
        input="import seedlock\nseedlock.ensure_hash_seed(1)\n",
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"},
        timeout=60,
    )
    assert "impossible in an interactive session" in proc.stderr


def test_seed_everything_with_deterministic_switches_the_profile_on():
    report = seedlock.seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert any("use_deterministic_algorithms" in c for c in report.determinism)


def test_jax_is_reported_as_having_no_global_generator():
    pytest.importorskip("jax")
    out = run_python(
        """
        import jax, seedlock
        entry = seedlock.seed_everything(0)["jax"]
        print(entry.status, entry.value)
        """
    ).stdout
    assert out.strip() == "no global RNG None"
