"""Elastic loader states in one process: the layout, the state, and every refusal.

The ranks are simulated with ``WORLD_SIZE`` / ``RANK`` (no process group: seedlock reads them
from the environment); each simulated rank is a loader of its own. The real multi-process run
is ``tests/test_elastic.py``.
"""

from __future__ import annotations

import pytest
import torch

import seedlock
import seedlock.distributed as sd
from seedlock.data import ResumableSampler
from seedlock.errors import CorruptStateError, StateMismatchError, WorldSizeMismatchError

DATA = torch.arange(30)


def job(ranks: int, batch: int, global_batch: int = 8, **kwargs):
    samplers = [
        ResumableSampler(DATA, seed=0, num_replicas=ranks, rank=r, global_batch_size=global_batch,
                         **kwargs)
        for r in range(ranks)
    ]  # fmt: skip
    return [seedlock.data.loader(DATA, batch_size=batch, sampler=s) for s in samplers]


def steps(loaders, state=None):
    """The sorted samples of each global step from here to the end of the epoch."""
    if state is not None:
        for loader in loaders:
            loader.load_state_dict(state)
    batches = [iter(loader) for loader in loaders]
    out = []
    while (first := next(batches[0], None)) is not None:
        step = first.tolist()
        for m in range(loaders[0].accumulation):
            for r, it in enumerate(batches):
                if (m, r) != (0, 0):
                    step += next(it).tolist()
        out.append(sorted(step))
    for it in batches:
        assert next(it, None) is None
    return out


@pytest.fixture(autouse=True)
def _root():
    seedlock.seed_everything(0)


@pytest.mark.parametrize("order", ["randperm", "feistel"])
def test_global_step_k_holds_the_same_samples_for_every_shape(order):
    reference = steps(job(2, 4, shuffle=True, order=order))
    assert len(reference) == 4 and all(len(s) == 8 for s in reference)  # 30 padded to 32
    assert {i for step in reference for i in step} == set(range(30))
    for ranks, batch in [(1, 8), (1, 4), (1, 1), (4, 2), (4, 1), (8, 1)]:
        assert steps(job(ranks, batch, shuffle=True, order=order)) == reference, (ranks, batch)


def test_a_state_saved_by_two_ranks_resumes_on_one_four_and_eight():
    reference = steps(job(2, 4, shuffle=True))
    loaders = job(2, 4, shuffle=True)
    batches = [iter(loader) for loader in loaders]
    for it in batches:
        next(it)
    states = [loader.state_dict() for loader in loaders]
    assert states[0] == states[1] == {"version": 2, "epoch": 0, "samples": 8,
                                      "global_batch_size": 8}  # fmt: skip
    for ranks, batch in [(1, 4), (4, 2), (8, 1), (2, 2)]:
        assert steps(job(ranks, batch, shuffle=True), states[0]) == reference[1:], (ranks, batch)


def test_drop_last_cuts_the_order_to_whole_global_batches():
    loaders = job(2, 4, shuffle=True, drop_last=True)
    assert len(loaders[0]) == 3  # 24 of 30 samples: 3 global batches of 8
    assert steps(loaders) == steps(job(4, 1, shuffle=True, drop_last=True))


def test_the_loader_builds_the_elastic_sampler_and_passes_drop_last(monkeypatch):
    loader = seedlock.data.loader(DATA, batch_size=2, shuffle=True, global_batch_size=8,
                                  drop_last=True)  # fmt: skip
    assert loader.resumable_sampler.global_batch_size == 8
    assert loader.accumulation == 4 and len(loader) == 12


def test_a_state_between_global_batches_resumes_only_where_the_shape_can_start():
    loaders = job(2, 2, shuffle=True)  # micro-batches of 2: 4 samples over both ranks
    for loader in loaders:
        next(iter(loader))
    state = loaders[0].state_dict()
    assert state["samples"] == 4
    whole = list(ResumableSampler(DATA, seed=0, global_batch_size=8))  # positions in order
    four = job(4, 1, shuffle=True)  # 4 ranks x 1 sample: they can start at 4
    for loader in four:
        loader.load_state_dict(state)
    assert sorted(next(iter(loader)).item() for loader in four) == sorted(whole[4:8])
    for ranks, batch in [(2, 4), (1, 8)]:
        target = job(ranks, batch, shuffle=True)
        before = target[0].state_dict()
        with pytest.raises(WorldSizeMismatchError, match="resume at a global batch boundary"):
            target[0].load_state_dict(state)
        assert target[0].state_dict() == before


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"version": 2, "epoch": 0, "samples": 8, "global_batch_size": 16}, "global_batch_size=16"),
        ({"version": 2, "epoch": 0, "samples": 40, "global_batch_size": 8}, "samples must be"),
        ({"version": 2, "epoch": -1, "samples": 8, "global_batch_size": 8}, "epoch must be"),
        ({"version": 2, "epoch": 0, "samples": True, "global_batch_size": 8}, "samples must be"),
        ({"version": 2, "epoch": 0, "samples": 8, "global_batch_size": 8, "x": 1}, "x"),
        ({"version": 2, "epoch": 0, "samples": 8, "global_batch_size": 8, "order": "feistel"},
         "order='feistel'"),
        ({"version": 1, "epoch": 0, "batches": 1}, "saved without global_batch_size"),
        ({"version": 3, "epoch": 0, "samples": 8, "global_batch_size": 8}, "newer seedlock"),
    ],
)  # fmt: skip
def test_a_state_that_does_not_fit_is_refused_in_one_line_and_changes_nothing(state, message):
    loader = job(2, 4, shuffle=True)[0]
    next(iter(loader))
    before = loader.state_dict()
    with pytest.raises(seedlock.StateError, match=message) as error:
        loader.load_state_dict(state)
    assert "\n" not in str(error.value)
    assert loader.state_dict() == before


def test_an_elastic_state_into_a_loader_without_global_batch_size_says_what_to_build():
    plain = seedlock.data.loader(DATA, batch_size=4, shuffle=True)
    state = {"version": 2, "epoch": 0, "samples": 8, "global_batch_size": 8}
    with pytest.raises(CorruptStateError, match="build this loader with global_batch_size=8"):
        plain.load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"global_batch_size": 8, "batch_size": 3}, "batch_size=3 does not divide"),
        ({"global_batch_size": 8, "batch_size": None}, "batch_size=None does not divide"),
        ({"global_batch_size": 8, "batch_size": 0}, "batch_size=0 does not divide"),
        ({"global_batch_size": 8, "batch_size": -2}, "batch_size=-2 does not divide"),
        ({"global_batch_size": 0, "batch_size": 1}, "global_batch_size must be an int >= 1"),
        ({"global_batch_size": 7.0, "batch_size": 1}, "global_batch_size must be an int >= 1"),
        ({"global_batch_size": 8, "batch_size": 2, "sampler": ResumableSampler(30)},
         "are set on the ResumableSampler"),
    ],
)  # fmt: skip
def test_a_shape_that_cannot_split_a_global_batch_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        seedlock.data.loader(DATA, **kwargs)


def test_world_sizes_that_do_not_divide_the_global_batch_are_refused():
    with pytest.raises(ValueError, match="that the 3 rank"):
        ResumableSampler(DATA, num_replicas=3, rank=0, global_batch_size=8)


def test_the_sampler_alone_resumes_on_another_world_size():
    whole = list(ResumableSampler(DATA, seed=0, global_batch_size=8))
    two = ResumableSampler(DATA, seed=0, num_replicas=2, rank=1, global_batch_size=8)
    it = iter(two)
    for _ in range(4):
        next(it)
    state = two.state_dict()
    assert state == {"version": 3, "epoch": 0, "samples": 8, "order": "randperm",
                     "global_batch_size": 8}  # fmt: skip
    one = ResumableSampler(DATA, seed=0, global_batch_size=8)
    one.load_state_dict(state)
    assert list(one) == whole[8:]
    with pytest.raises(CorruptStateError, match="saved without global_batch_size"):
        one.load_state_dict({"version": 2, "epoch": 0, "position": 8, "order": "randperm"})
    with pytest.raises(CorruptStateError, match="build this sampler with global_batch_size=8"):
        ResumableSampler(DATA, seed=0).load_state_dict(state)
    uneven = {**state, "samples": 9}  # a sample count 2 ranks cannot split
    two_again = ResumableSampler(DATA, seed=0, num_replicas=2, rank=0, global_batch_size=8)
    with pytest.raises(WorldSizeMismatchError, match="2 rank\\(s\\) cannot start from"):
        two_again.load_state_dict(uneven)
    assert two_again.state_dict()["samples"] == 0


# -- PerRankState(elastic=True) -------------------------------------------------------------------


def saved_by_two_ranks(monkeypatch):
    """The PerRankState entries two ranks write after one global step."""
    entries = []
    for rank in range(2):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        seedlock.seed_everything(0)
        loader = seedlock.data.loader(DATA, batch_size=4, shuffle=True, global_batch_size=8)
        next(iter(loader))
        entries.append(sd.PerRankState(loader=loader, elastic=True).state_dict())
    return entries


def test_elastic_per_rank_state_loads_any_saved_rank_and_rederives_the_streams(monkeypatch):
    entries = saved_by_two_ranks(monkeypatch)
    draws = []
    for rank in range(4):
        monkeypatch.setenv("WORLD_SIZE", "4")
        monkeypatch.setenv("RANK", str(rank))
        seedlock.seed_everything(0)
        loader = seedlock.data.loader(DATA, batch_size=2, shuffle=True, global_batch_size=8)
        sd.PerRankState(loader=loader, elastic=True).load_state_dict(entries[rank % 2])
        assert loader.state_dict()["samples"] == 8
        draws.append(torch.rand(3))
    assert len({tuple(d.tolist()) for d in draws}) == 4  # rank-local
    monkeypatch.setenv("RANK", "2")
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(DATA, batch_size=2, shuffle=True, global_batch_size=8)
    sd.PerRankState(loader=loader, elastic=True).load_state_dict(entries[1])
    assert torch.equal(torch.rand(3), draws[2])  # from the root and the position, not the file


def test_without_elastic_another_world_size_is_still_refused(monkeypatch):
    entries = saved_by_two_ranks(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    loader = seedlock.data.loader(DATA, batch_size=8, shuffle=True, global_batch_size=8)
    with pytest.raises(WorldSizeMismatchError, match="or see elastic=True"):
        sd.PerRankState(loader=loader).load_state_dict(entries[0])


def test_elastic_refuses_states_that_differ_by_rank_and_a_missing_position(monkeypatch):
    entries = saved_by_two_ranks(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    loader = seedlock.data.loader(DATA, batch_size=8, shuffle=True, global_batch_size=8)
    both = {**entries[0], **entries[1]}
    both["rank1"] = {**both["rank1"], "loader": {**both["rank1"]["loader"], "samples": 0}}
    with pytest.raises(WorldSizeMismatchError, match="'loader' differs between the 2 saved"):
        sd.PerRankState(loader=loader, elastic=True).load_state_dict(both)
    plain = seedlock.data.loader(DATA, batch_size=4, shuffle=True)
    saved = {"version": 1, "world_size": 2, "rank0": {"rng": seedlock.state_dict(),
                                                      "loader": plain.state_dict()}}  # fmt: skip
    before = torch.get_rng_state()
    with pytest.raises(WorldSizeMismatchError, match="no object here holds one"):
        sd.PerRankState(loader=plain, elastic=True).load_state_dict(saved)
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.raises(StateMismatchError, match="no rank's entry"):
        sd.PerRankState(loader=loader, elastic=True).load_state_dict({"world_size": 2})


def test_elastic_refuses_entries_that_hold_other_names(monkeypatch):
    entries = saved_by_two_ranks(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    loader = seedlock.data.loader(DATA, batch_size=8, shuffle=True, global_batch_size=8)
    with pytest.raises(StateMismatchError, match="this PerRankState holds"):
        sd.PerRankState(loader=loader, other=loader, elastic=True).load_state_dict(entries[0])
    with pytest.raises(StateMismatchError, match="this PerRankState holds"):
        sd.PerRankState(loader=loader, rng=False, elastic=True).load_state_dict(entries[0])
