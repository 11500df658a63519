"""CUDA's lazy start, on the CPU: seedlock's seeding and restoring against torch's real
``torch.cuda._lazy_init`` ordering, with a fake device layer (tests/fake_cuda.py)."""

from __future__ import annotations

import torch

import seedlock
from fake_cuda import fake_cuda, start


def saved_cuda_state(monkeypatch) -> tuple[seedlock.RNGState, list[tuple[int, int]]]:
    """A state captured in an earlier process whose CUDA had started and drawn numbers."""
    with fake_cuda(monkeypatch) as generators:
        seedlock.seed_everything(123)
        start()
        for g in generators:
            g.draw()
            g.draw()
        state = seedlock.capture()
        return state, [(g.seed_value, g.offset) for g in generators]


def test_a_restore_before_cuda_starts_is_not_overwritten_by_the_pending_seed(monkeypatch):
    state, expected = saved_cuda_state(monkeypatch)
    assert "cuda" in state.backends["torch"]
    with fake_cuda(monkeypatch) as generators:  # a new process, resuming
        seedlock.seed_everything(0)  # queues manual_seed_all: CUDA has not started
        seedlock.restore(state)  # before the first CUDA op
        start()
        assert [(g.seed_value, g.offset) for g in generators] == expected


def test_a_seed_after_a_restore_still_wins(monkeypatch):
    state, _ = saved_cuda_state(monkeypatch)
    with fake_cuda(monkeypatch) as generators:
        seedlock.seed_everything(0)
        seedlock.restore(state)
        torch.cuda.manual_seed_all(7)  # the program's own, later: it must win
        start()
        assert [(g.seed_value, g.offset) for g in generators] == [(7, 0), (7, 0)]


def test_a_device_seed_queued_before_the_restore_does_not_win(monkeypatch):
    state, expected = saved_cuda_state(monkeypatch)
    with fake_cuda(monkeypatch) as generators:
        torch.cuda.manual_seed(5)  # current device only, queued
        seedlock.restore(state)
        start()
        assert [(g.seed_value, g.offset) for g in generators] == expected
