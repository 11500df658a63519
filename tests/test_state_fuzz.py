"""Fuzzing restore: thousands of hostile state files and state dicts. Each one is either refused
with a documented StateError and not one generator changed, or restored whole."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import seedlock
import statefuzz
from conftest import run_python
from seedlock.errors import StateError

CASES_PER_FORM = 2000  # mutated state dicts, mutated files with a valid header
DAMAGED_FILES = 1000  # files damaged below the header (checksum, truncation)


@pytest.fixture
def every_kind_of_generator(empty_registry):
    gens = {
        "pcg": np.random.default_rng(1),
        "dxsm": np.random.Generator(np.random.PCG64DXSM(2)),
        "philox": np.random.Generator(np.random.Philox(3)),
        "sfc": np.random.Generator(np.random.SFC64(4)),
        "mt": np.random.Generator(np.random.MT19937(5)),
        "legacy": np.random.RandomState(6),
        "legacy_pcg": np.random.RandomState(np.random.PCG64(7)),
        "py": random.Random(8),
        "torch": torch.Generator().manual_seed(9),
    }
    for name, g in gens.items():
        seedlock.register(g, name)
    return gens


def _move_everything(gens: dict) -> None:
    """Draw from every generator, leaving cached Gaussians and half-used words behind."""
    random.gauss(0, 1), np.random.standard_normal(3), torch.randn(3)
    for g in gens.values():
        if isinstance(g, random.Random):
            g.gauss(0, 1)
        elif isinstance(g, torch.Generator):
            torch.randn(3, generator=g)
        elif isinstance(g, np.random.RandomState):
            g.standard_normal(3)
        else:
            g.integers(0, 2**32, size=3, dtype=np.uint32), g.standard_normal(3)


def _as_state_dict(value, rng: random.Random):
    """Binary fields as checkpoints hold them: uint8 tensors, now and then something else."""
    if isinstance(value, bytes):
        roll = rng.random()
        if roll < 0.03:
            return torch.frombuffer(bytearray(value), dtype=torch.uint8).float()
        if roll < 0.06:
            return np.frombuffer(value, dtype=np.uint8).copy()
        return torch.frombuffer(bytearray(value), dtype=torch.uint8) if value else torch.zeros(0)
    if isinstance(value, dict):
        return {k: _as_state_dict(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_state_dict(v, rng) for v in value]
    return value


def test_fuzzed_states_are_refused_whole_or_restored_whole(every_kind_of_generator, tmp_path):
    gens = every_kind_of_generator
    seedlock.seed_everything(2026)
    _move_everything(gens)
    plain = seedlock.capture().to_plain()
    good_file = tmp_path / "good.state"
    seedlock.save(good_file)
    _move_everything(gens)
    before = seedlock.capture()
    rng = random.Random(1202)
    target = tmp_path / "fuzz.state"
    outcomes: dict[str, list[int]] = {"dict": [0, 0], "file": [0, 0], "damaged": [0, 0]}

    def attempt(form: str, load) -> None:
        try:
            load()
        except StateError:
            outcomes[form][0] += 1
            assert seedlock.capture() == before, form
        else:
            outcomes[form][1] += 1
            seedlock.restore(before)

    for _ in range(CASES_PER_FORM):
        sd = _as_state_dict(statefuzz.mutate(plain, rng), rng)
        attempt("dict", lambda sd=sd: seedlock.load_state_dict(sd))
    for _ in range(CASES_PER_FORM):
        target.write_bytes(statefuzz.state_file(statefuzz.mutate(plain, rng)))
        attempt("file", lambda: seedlock.load(target))
    good = good_file.read_bytes()
    for _ in range(DAMAGED_FILES):
        target.write_bytes(statefuzz.damaged_file(good, rng))
        attempt("damaged", lambda: seedlock.load(target))

    total = sum(sum(pair) for pair in outcomes.values())
    refused = sum(pair[0] for pair in outcomes.values())
    assert total == 2 * CASES_PER_FORM + DAMAGED_FILES >= 5000
    # Most mutations break something; the rest (another finite float, a valid position) load.
    assert refused >= 0.8 * total, outcomes
    assert all(pair[0] for pair in outcomes.values()), outcomes


NOT_IMPORTED_CASES = 400
FUZZ_NOT_IMPORTED = """
    import random, sys
    sys.path.insert(0, {tests!r})
    import seedlock, statefuzz
    from seedlock import _hooks, store
    plain = store.read({path!r}).to_plain()
    before = seedlock.capture()
    rng, refused = random.Random(7), []
    for case in range({cases}):
        try:
            seedlock.load_state_dict(statefuzz.mutate(plain, rng), devices="common")
        except seedlock.StateError:
            refused.append(case)
            assert seedlock.capture() == before
            assert _hooks.pending("numpy") == [] and _hooks.pending("torch") == []
        else:
            for module in ("numpy", "torch"):
                _hooks.cancel(module, "seedlock.restore")
            seedlock.restore(before)
    print("imported:", "numpy" in sys.modules, "torch" in sys.modules)
    print(*refused)
"""


@pytest.mark.usefixtures("empty_registry")
def test_a_state_is_refused_alike_whether_its_libraries_are_imported_or_not(tmp_path):
    seedlock.seed_everything(3)
    path = tmp_path / "three.state"
    seedlock.save(path)
    tests = str(Path(__file__).parent)
    code = FUZZ_NOT_IMPORTED.format(tests=tests, path=str(path), cases=NOT_IMPORTED_CASES)
    imported, refused = run_python(code).stdout.splitlines()
    assert imported == "imported: False False"  # checking never imported a library
    # The same mutations here, where NumPy and torch are imported:
    plain, rng, here = seedlock.store.read(path).to_plain(), random.Random(7), []
    before = seedlock.capture()
    for case in range(NOT_IMPORTED_CASES):
        try:
            seedlock.load_state_dict(statefuzz.mutate(plain, rng), devices="common")
        except StateError:
            here.append(case)
        else:
            seedlock.restore(before)
    assert [int(case) for case in refused.split()] == here
    assert len(here) >= NOT_IMPORTED_CASES // 2


def test_the_mutations_reach_every_backend_and_generator(every_kind_of_generator):
    seedlock.seed_everything(1)
    plain = seedlock.capture().to_plain()
    rng = random.Random(0)
    touched = set()
    for _ in range(2000):
        mutated = statefuzz.mutate(plain, rng)
        for section in ("backends", "generators"):
            for name, value in plain[section].items():
                other = mutated.get(section) if isinstance(mutated, dict) else None
                if not isinstance(other, dict) or other.get(name) != value:
                    touched.add(name)
    assert touched >= {"python", "numpy", "torch", *every_kind_of_generator}
