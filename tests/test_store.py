"""The state file: round trip, every kind of damage refused before anything changes, atomic."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import seedlock
from seedlock import store
from seedlock.errors import (
    CorruptStateError,
    NotAStateFileError,
    StateError,
    StateMismatchError,
    StateTooLargeError,
    StateVersionError,
)


@pytest.fixture
def saved(tmp_path):
    seedlock.seed_everything(21)
    seedlock.register(np.random.default_rng(5), "noise")
    path = tmp_path / "rng.state"
    seedlock.save(path)
    yield path
    seedlock.unregister("noise")


def test_save_then_load_replays_the_same_draws(saved):
    expected = random.random(), np.random.rand(2).tobytes(), torch.rand(3)
    state = seedlock.load(saved)
    assert isinstance(state, seedlock.RNGState)
    again = random.random(), np.random.rand(2).tobytes(), torch.rand(3)
    assert expected[:2] == again[:2]
    assert torch.equal(expected[2], again[2])


def test_file_is_self_describing_text(saved):
    magic, header, payload = saved.read_bytes().split(b"\n", 2)
    assert magic == b"SEEDLOCK-RNG-STATE"
    meta = json.loads(header)
    assert meta["format"] == 1
    assert meta["length"] == len(payload)
    assert json.loads(payload)["kind"] == "seedlock.rng_state"


def test_saved_file_gets_ordinary_permissions(saved):
    assert saved.stat().st_mode & 0o777 == 0o644


def test_save_leaves_no_temporary_file(saved):
    assert sorted(p.name for p in saved.parent.iterdir()) == ["rng.state"]


def test_save_into_a_missing_directory_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        seedlock.save(tmp_path / "missing" / "rng.state")


def test_foreign_file_is_not_a_state_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(NotAStateFileError, match="not a seedlock state file"):
        seedlock.load(path)


def test_future_format_version_asks_for_an_upgrade(saved):
    magic, header, payload = saved.read_bytes().split(b"\n", 2)
    meta = json.loads(header)
    meta["format"] = 2
    saved.write_bytes(magic + b"\n" + json.dumps(meta).encode() + b"\n" + payload)
    with pytest.raises(StateVersionError, match="newer seedlock"):
        seedlock.load(saved)


def test_truncated_file_is_reported_as_truncated(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[:-10])
    with pytest.raises(CorruptStateError, match="truncated or padded"):
        seedlock.load(saved)


def test_flipped_payload_bit_fails_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(CorruptStateError, match="checksum mismatch"):
        seedlock.load(saved)


def test_oversized_file_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_STATE_BYTES", 1000)
    path = tmp_path / "big.state"
    path.write_bytes(store.MAGIC + b"x" * 2000)
    with pytest.raises(StateTooLargeError, match="refusing to read it"):
        seedlock.load(path)


def test_intact_file_that_does_not_fit_is_a_mismatch(saved):
    seedlock.unregister("noise")
    try:
        with pytest.raises(StateMismatchError, match="generator 'noise'"):
            seedlock.load(saved)
    finally:
        seedlock.register(np.random.default_rng(5), "noise")


def mutations(data: bytes, rng: random.Random):
    """1,200 damaged variants: truncations, bit flips, byte runs, random files, header edits."""
    header_end = data.index(b"\n", len(store.MAGIC))
    for _ in range(300):
        yield "truncate", data[: rng.randrange(len(data))]
    for _ in range(400):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        yield "flip", bytes(b)
    for _ in range(200):
        b = bytearray(data)
        start = rng.randrange(len(b))
        b[start : start + rng.randint(1, 64)] = rng.randbytes(rng.randint(0, 64))
        yield "splice", bytes(b)
    for _ in range(200):
        yield "random", rng.randbytes(rng.randrange(0, 4096))
    for _ in range(100):
        b = bytearray(data)
        b[rng.randrange(len(store.MAGIC), header_end)] = rng.randrange(256)
        yield "header", bytes(b)


def test_fuzzed_files_raise_state_errors_and_change_nothing(saved, tmp_path):
    data = saved.read_bytes()
    original = store.read(saved)
    before = seedlock.capture()
    target = tmp_path / "fuzz.state"
    counts: dict[str, int] = {}
    for kind, damaged in mutations(data, random.Random(1234)):
        target.write_bytes(damaged)
        try:
            state = seedlock.load(target)
        except StateError:
            counts[kind] = counts.get(kind, 0) + 1
        else:
            # A change that leaves the meaning intact (e.g. a header space turned into a tab)
            # may load; it must then be exactly the saved state.
            assert state == original, kind
            seedlock.restore(before)
        assert seedlock.capture() == before
    assert sum(counts.values()) >= 1000
    assert set(counts) == {"truncate", "flip", "splice", "random", "header"}


WRITER = """
    import random, sys, seedlock
    path = sys.argv[1]
    states = []
    for seed in (1, 2):
        random.seed(seed)
        states.append(seedlock.capture())
    seedlock.save(path, states[0])
    print("ready", flush=True)
    i = 0
    while True:
        seedlock.save(path, states[i % 2])
        i += 1
"""


def test_killed_writer_always_leaves_the_old_or_the_new_state(tmp_path):
    path = tmp_path / "rng.state"
    expected = []
    for seed in (1, 2):
        random.seed(seed)
        expected.append(seedlock.capture().backends["python"])
    rng = random.Random(99)
    outcomes = set()
    for _ in range(50):
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        state = store.read(path)
        assert state.backends["python"] in expected
        outcomes.add(expected.index(state.backends["python"]))
    assert outcomes == {0, 1}
