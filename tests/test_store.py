"""The state file: round trip, every kind of damage refused before anything changes, atomic."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

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
    assert meta["format"] == 2
    assert meta["length"] == len(payload)
    checked = b"seedlock-rng-state format=2 length=%d\n" % len(payload) + payload
    assert meta["sha256"] == hashlib.sha256(checked).hexdigest()
    assert json.loads(payload)["kind"] == "seedlock.rng_state"


def rewrite(path, *, payload: bytes | None = None, format: int = 2) -> None:
    """Rewrite a state file with a valid header around ``payload`` (default: its own)."""
    _, _, old = path.read_bytes().split(b"\n", 2)
    payload = old if payload is None else payload
    prefix = (
        b""
        if format == 1
        else b"seedlock-rng-state format=%d length=%d\n"
        % (
            format,
            len(payload),
        )
    )
    digest = hashlib.sha256(prefix + payload).hexdigest()
    header = json.dumps({"format": format, "length": len(payload), "sha256": digest})
    path.write_bytes(store.MAGIC + header.encode() + b"\n" + payload)


def test_saved_file_gets_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o077)
    try:
        seedlock.save(tmp_path / "private.state")
    finally:
        os.umask(old)
    seedlock.save(tmp_path / "shared.state")
    assert (tmp_path / "private.state").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared.state").stat().st_mode & 0o777 == 0o666 & ~old


def test_an_existing_file_keeps_its_mode(saved):
    saved.chmod(0o640)
    seedlock.save(saved)
    assert saved.stat().st_mode & 0o777 == 0o640


def test_save_never_overwrites_a_file_that_is_not_a_state(tmp_path):
    path = tmp_path / "train.py"
    path.write_text("print('my script')\n")
    with pytest.raises(FileExistsError, match="not a seedlock state file: refusing"):
        seedlock.save(path)
    assert path.read_text() == "print('my script')\n"


def test_save_removes_what_killed_saves_left_and_keeps_what_live_ones_write(saved):
    from seedlock import _files

    prefix = _files._temp_prefix(saved.name)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = saved.parent / f"{prefix}{dead}.0011.tmp"
    live = saved.parent / f"{prefix}{os.getppid()}.0022.tmp"
    other = saved.parent / f".{saved.name}.seedlock-tmp.elsewhere.{dead}.0033.tmp"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    seedlock.save(saved)
    assert sorted(p.name for p in saved.parent.iterdir()) == sorted(
        [saved.name, live.name, other.name]
    )


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


def test_future_format_with_a_valid_checksum_asks_for_an_upgrade(saved):
    rewrite(saved, format=3)
    with pytest.raises(StateVersionError, match="newer seedlock"):
        seedlock.load(saved)


@pytest.mark.parametrize("digit", [b"0", b"1", b"3", b"9"])
def test_a_flipped_format_digit_is_corruption_not_a_newer_format(saved, digit):
    data = saved.read_bytes()
    saved.write_bytes(data.replace(b'"format": 2', b'"format": ' + digit, 1))
    with pytest.raises(CorruptStateError, match="checksum mismatch"):
        seedlock.load(saved)


def test_a_format_1_file_still_loads(saved):
    rewrite(saved, format=1)
    expected = random.random()
    seedlock.load(saved)
    assert random.random() == expected


def test_a_deeply_nested_payload_is_corrupt_not_a_recursion_error(saved):
    for depth in (100, 2000, 100_000):
        rewrite(saved, payload=b"[" * depth + b"]" * depth)
        with pytest.raises(CorruptStateError):
            seedlock.load(saved)


def test_a_hostile_file_at_the_size_cap_is_refused_before_it_is_parsed(saved):
    # A payload of millions of tiny values, with a valid header: parsing it would build a tree
    # of that many objects; it is refused on a bounded count instead.
    items = b"{}," * ((store.MAX_STATE_BYTES - 2000) // 3)
    rewrite(saved, payload=b"[" + items + b"{}]")
    assert saved.stat().st_size <= store.MAX_STATE_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(CorruptStateError, match="refusing to parse it"):
            seedlock.load(saved)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * store.MAX_STATE_BYTES  # the file's bytes, not a tree of objects


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
