"""The pytest plugin, specified through real pytest runs (pytester, each in a new interpreter).

Every inner run passes ``-p no:randomly`` (a no-op without pytest-randomly) except the runs that
are about pytest-randomly. Tests record the numbers they draw through the inner ``record``
fixture, into ``draws/<test>.<worker>.json``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from typing import Any

import pytest

import seedlock

pytest_plugins = ("pytester",)

CONFTEST = """
import json, os, random
import numpy as np
import pytest
import torch

def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true", help="run the tests in reverse order")

def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse"):
        items.reverse()

@pytest.fixture
def record(request):
    def write(**extra):
        numbers = {"random": random.random(), "numpy": float(np.random.rand()),
                   "torch": torch.rand(1).item(), **extra}
        folder = request.config.rootpath / "draws"
        folder.mkdir(exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        (folder / f"{request.node.name}.{worker}.json").write_text(json.dumps(numbers))
    return write
"""

DRAWS = """
import random
import numpy as np
import pytest
import seedlock
import torch

NOISE = seedlock.numpy_rng("noise")  # registered at import, shared by every test

@pytest.fixture(scope="module")
def dataset():  # set up by whichever of its tests runs first
    return torch.rand(100)

def draw(record, seedlock_seed):
    record(seed=seedlock_seed, noise=NOISE.random(), stream=seedlock.numpy_rng("s").random())

def test_first(record, seedlock_seed):
    random.random(); np.random.rand(100); torch.rand(100); NOISE.random(100)
    draw(record, seedlock_seed)

def test_second(record, seedlock_seed, dataset):
    draw(record, seedlock_seed)

class TestThird:
    def test_third(self, record, seedlock_seed, dataset):
        draw(record, seedlock_seed)
"""

SEEDED_AT_IMPORT = """
import random
import numpy as np
import torch

random.seed(5); np.random.seed(5); torch.manual_seed(5)

def expect_seed_5_draws():
    assert random.random() == random.Random(5).random()
    assert np.random.rand() == np.random.RandomState(5).rand()
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(5)))
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    shutil.rmtree(pytester.path / "draws", ignore_errors=True)
    return pytester.runpytest_subprocess("-p", "no:randomly", *args)


def read_draws(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    """Each test's numbers, checked to be the same on every worker that ran it."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((pytester.path / "draws").glob("*.json")):
        runs.setdefault(path.name.split(".")[0], []).append(json.loads(path.read_text()))
    for name, numbers in runs.items():
        assert all(n == numbers[0] for n in numbers), (name, numbers)
    return {name: numbers[0] for name, numbers in runs.items()}


def draws(pytester: pytest.Pytester, *args: str) -> dict[str, dict[str, Any]]:
    result = run(pytester, *args)
    assert result.ret == 0, result.stdout.str()
    return read_draws(pytester)


def header_seed(result: pytest.RunResult) -> str:
    found = re.search(r"^seedlock: --seedlock-seed=(\S+)$", result.stdout.str(), re.MULTILINE)
    assert found is not None, result.stdout.str()
    return found.group(1)


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_draws=DRAWS)
    return pytester


# -- the session seed ---------------------------------------------------------------------------


def test_the_header_prints_the_session_seed(suite):
    result = run(suite, "--seedlock-seed=1234")
    result.stdout.fnmatch_lines(["seedlock: --seedlock-seed=1234"])


def test_without_a_seed_each_session_draws_a_fresh_one(suite):
    assert header_seed(run(suite)) != header_seed(run(suite))


def test_last_replays_the_previous_session(suite):
    first = run(suite)
    first_draws = read_draws(suite)
    again = run(suite, "--seedlock-seed=last")
    assert header_seed(again) == header_seed(first)
    assert read_draws(suite) == first_draws


def test_an_invalid_seed_is_a_usage_error(suite):
    result = run(suite, "--seedlock-seed=4x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid seed '4x'" in result.stderr.str()


def test_p_no_seedlock_turns_the_plugin_off(pytester):
    pytester.makepyfile("def test_seed(seedlock_seed):\n    pass")
    result = run(pytester, "-p", "no:seedlock")
    assert "seedlock:" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*fixture 'seedlock_seed' not found*"])


# -- per-test seeds -----------------------------------------------------------------------------


def test_a_tests_numbers_are_the_same_alone_in_the_suite_reversed_and_under_xdist(suite):
    full = draws(suite, "--seedlock-seed=7")
    assert len(full) == 3
    for variant in (["test_draws.py::test_second"], ["--reverse"], ["-n", "2"]):
        other = draws(suite, "--seedlock-seed=7", *variant)
        assert other == {name: full[name] for name in other}, variant


def test_each_test_draws_its_own_numbers_and_another_session_seed_changes_them(suite):
    seven, eight = draws(suite, "--seedlock-seed=7"), draws(suite, "--seedlock-seed=8")
    for key in ("seed", "random", "numpy", "torch", "noise", "stream"):
        assert len({seven[t][key] for t in seven}) == 3, key
        assert all(seven[t][key] != eight[t][key] for t in seven), key


def test_the_body_runs_under_seed_everything_of_the_test_seed_derived_from_the_node_id(pytester):
    pytester.makepyfile(
        """
        import os, random
        import numpy as np, seedlock, torch

        def test_body(request, seedlock_seed):
            assert seedlock_seed == seedlock.derive("pytest", request.node.nodeid, root=77, bits=32)
            assert seedlock.get_root() == seedlock_seed
            assert os.environ["SEEDLOCK_SEED"] == str(seedlock_seed)
            assert random.random() == random.Random(seedlock_seed).random()
            assert np.random.rand() == np.random.RandomState(seedlock_seed).rand()
            reference = torch.Generator().manual_seed(seedlock_seed)
            assert torch.equal(torch.rand(3), torch.rand(3, generator=reference))
        """
    )
    run(pytester, "--seedlock-seed=77").assert_outcomes(passed=1)


def test_fixtures_and_the_test_body_draw_different_numbers(pytester):
    pytester.makepyfile(
        """
        import pytest, torch

        @pytest.fixture
        def data():
            return torch.rand(3)

        def test_noise_is_not_the_data(data):
            assert not torch.equal(torch.rand(3), data)
        """
    )
    run(pytester).assert_outcomes(passed=1)


@pytest.mark.parametrize("randomly", [False, True], ids=["alone", "with-pytest-randomly"])
def test_a_fixture_that_seeds_for_itself_keeps_its_streams_in_the_body(pytester, randomly):
    if randomly:
        pytest.importorskip("pytest_randomly")
    pytester.makepyfile(
        """
        import pytest, seedlock, torch

        @pytest.fixture
        def seeded():
            seedlock.seed_everything(21)
            return torch.rand(3)

        def test_body(seeded):
            stream = torch.Generator().manual_seed(21)
            assert torch.equal(seeded, torch.rand(3, generator=stream))
            assert torch.equal(torch.rand(3), torch.rand(3, generator=stream))
            assert seedlock.get_root() == 21
        """
    )
    result = pytester.runpytest_subprocess() if randomly else run(pytester)
    result.assert_outcomes(passed=1)


def test_rng_state_and_root_are_restored_after_each_test(pytester):
    pytester.makepyfile(
        SEEDED_AT_IMPORT
        + """
import pytest, seedlock

def test_draws_a_lot():
    random.random(); np.random.rand(100); torch.rand(100)

@pytest.mark.seedlock(False)
def test_sees_the_state_from_before_the_previous_test():
    expect_seed_5_draws()
    assert seedlock.get_root() == 31
"""
    )
    run(pytester, "--seedlock-seed=31").assert_outcomes(passed=2)


def test_numpy_rng_and_torch_generator_fixtures_are_seeded_from_the_test_seed(pytester):
    pytester.makepyfile(
        """
        import numpy as np, seedlock, torch

        def test_fixtures(seedlock_seed, seedlock_numpy_rng, seedlock_torch_generator):
            seed = seedlock.derive("numpy_rng", root=seedlock_seed, bits=128)
            assert seedlock_numpy_rng.random() == np.random.default_rng(seed).random()
            seed = seedlock.derive("torch_generator", root=seedlock_seed, bits=32)
            assert seedlock_torch_generator.initial_seed() == seed
            assert "numpy_rng" not in str(seedlock._registry.registered())
        """
    )
    run(pytester).assert_outcomes(passed=1)


# -- the marker ---------------------------------------------------------------------------------


def test_marker_seed_fixes_the_test_seed(pytester):
    pytester.makepyfile(
        """
        import numpy as np, pytest, torch

        @pytest.mark.seedlock(seed=123)
        def test_fixed(seedlock_seed):
            assert seedlock_seed == 123
            assert np.random.rand() == np.random.RandomState(123).rand()
            assert torch.initial_seed() == 123
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_marker_false_leaves_the_test_unseeded(pytester):
    pytester.makepyfile(
        SEEDED_AT_IMPORT
        + """
import pytest

@pytest.mark.seedlock(False)
def test_unseeded(seedlock_seed):
    assert seedlock_seed is None
    expect_seed_5_draws()
"""
    )
    run(pytester).assert_outcomes(passed=1)


def test_a_malformed_marker_errors_with_the_usage(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.seedlock(5)
        def test_positional_seed():
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*use @pytest.mark.seedlock(seed=N) or *seedlock(False)*"])


# -- failures and replay ------------------------------------------------------------------------


def test_a_failure_shows_the_test_seed_and_a_command_that_replays_the_same_failure(pytester):
    pytester.makepyfile(
        test_fail="""
        import numpy as np, pytest, torch

        @pytest.mark.parametrize("case", ["a b"])
        def test_fails(case):
            assert torch.rand(2).tolist() + np.random.rand(2).tolist() == []

        def test_passes():
            pass
        """
    )
    first = run(pytester, "-n", "2")
    first.assert_outcomes(failed=1, passed=1)
    session = re.search(r"^replay: (.*)$", first.stdout.str(), re.MULTILINE)
    assert session is not None, first.stdout.str()
    command = shlex.split(session.group(1))
    assert command[:2] == ["pytest", "test_fail.py::test_fails[a b]"]
    assert command[2].startswith("--seedlock-seed=")
    first.stdout.fnmatch_lines(["*- seedlock -*", "test seed * (session seed *)", "replay: *"])

    replay = run(pytester, *command[1:])
    replay.assert_outcomes(failed=1)

    def failure(result: pytest.RunResult) -> list[str]:
        return [line for line in result.stdout.lines if line.startswith(("E ", "test seed"))]

    assert failure(first) and failure(replay) == failure(first)


# -- pytest-xdist -------------------------------------------------------------------------------


def test_every_xdist_worker_uses_the_controllers_session_seed(suite):
    result = run(suite, "-n", "2", "--dist", "each")
    assert result.ret == 0, result.stdout.str()
    seed = int(header_seed(result))
    workers = {p.name.split(".")[1] for p in (suite.path / "draws").glob("*.json")}
    assert workers == {"gw0", "gw1"}
    seeds = {name: numbers["seed"] for name, numbers in read_draws(suite).items()}
    nodeids = {
        "test_first": "test_draws.py::test_first",
        "test_second": "test_draws.py::test_second",
        "test_third": "test_draws.py::TestThird::test_third",
    }
    assert seeds == {
        name: seedlock.derive("pytest", nodeid, root=seed, bits=32)
        for name, nodeid in nodeids.items()
    }


# -- pytest-randomly ----------------------------------------------------------------------------


def test_with_pytest_randomly_its_seed_is_the_one_seed_printed_and_used(suite):
    pytest.importorskip("pytest_randomly")
    result = suite.runpytest_subprocess("--randomly-seed=99")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["Using --randomly-seed=99"])
    assert "seedlock:" not in result.stdout.str()
    assert read_draws(suite) == draws(suite, "--seedlock-seed=99")


def test_pytest_randomly_alone_seeds_torch_through_the_entry_point(pytester):
    pytest.importorskip("pytest_randomly")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        "import torch\ndef test_torch(record):\n    record(seed=torch.initial_seed())"
    )

    def torch_draw(randomly_seed: int) -> dict[str, Any]:
        shutil.rmtree(pytester.path / "draws", ignore_errors=True)
        result = pytester.runpytest_subprocess(
            "-p", "no:seedlock", f"--randomly-seed={randomly_seed}"
        )
        assert result.ret == 0, result.stdout.str()
        return read_draws(pytester)["test_torch"]

    wide = torch_draw(2**32 - 1)  # pytest-randomly then hands out seeds >= 2**32
    assert wide["seed"] < 2**32
    assert torch_draw(5)["torch"] != wide["torch"]
