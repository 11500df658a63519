"""Inside a CUDA graph capture torch refuses to read or set a CUDA generator: seedlock says so
in one clear error instead of torch's assertion, changes nothing, and a trace goes on with the
CPU generator's fingerprint. On the CPU, through the fake device layer of tests/fake_cuda.py."""

from __future__ import annotations

import contextlib

import pytest
import torch

import seedlock
from fake_cuda import fake_cuda, start
from seedlock.audit import fingerprints
from seedlock.errors import StateMismatchError


@pytest.fixture
def capturing(monkeypatch):
    """Started fake CUDA, and ``graph(flag)``: a block in which the stream captures a graph."""
    with fake_cuda(monkeypatch) as generators:
        start()
        flag = [False]
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: flag[0])
        yield flag, generators


@contextlib.contextmanager
def graph(flag: list[bool]):
    """Capture a graph for the block (ended before the test does: the seedlock pytest plugin
    captures the RNG state around every test, CUDA's included)."""
    flag[0] = True
    try:
        yield
    finally:
        flag[0] = False


def test_capture_during_graph_capture_is_refused_in_words(capturing):
    flag, _ = capturing
    with graph(flag), pytest.raises(RuntimeError, match="while a CUDA graph is being captured"):
        seedlock.capture()
    assert "cuda" in seedlock.capture().backends["torch"]


def test_restore_during_graph_capture_changes_nothing(capturing):
    flag, generators = capturing
    state = seedlock.capture()
    generators[0].draw()
    before = [(g.seed_value, g.offset) for g in generators]
    cpu = torch.get_rng_state()
    with graph(flag), pytest.raises(StateMismatchError, match="while a CUDA graph is being"):
        seedlock.restore(state)
    assert [(g.seed_value, g.offset) for g in generators] == before
    assert torch.equal(torch.get_rng_state(), cpu)


def test_a_trace_fingerprints_the_cpu_generator_during_graph_capture(capturing):
    flag, generators = capturing
    with_cuda = fingerprints.rng_fingerprint()
    with graph(flag):
        during = fingerprints.rng_fingerprint()  # no assertion from torch
        generators[0].draw()
        assert fingerprints.rng_fingerprint() == during  # the CUDA state is not read now
    assert fingerprints.rng_fingerprint() != with_cuda  # and is again afterwards
