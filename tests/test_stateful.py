"""One state convention: every stateful object of seedlock is a ``seedlock.Stateful``, its state
dict carries a ``version``, survives ``torch.save`` / ``torch.load(weights_only=True)``, and a
newer version is refused before anything changes."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import seedlock
from seedlock.data import _loader as _loader_layout
from seedlock.data import _sampler as _sampler_layout
from seedlock.errors import StateError, StateVersionError

# Each maker returns (object, continue, resume): `continue` draws what comes next in the running
# program (its live iterators included), `resume` what a fresh program that loaded the state
# draws first (a new iterator).


def _rng() -> tuple[Any, Callable[[], Any], Callable[[], Any]]:
    seedlock.seed_everything(3)
    torch.rand(4)

    def draw() -> Any:
        return random.random(), float(np.random.rand()), torch.rand(3)

    return seedlock.rng, draw, draw


def _loader() -> tuple[Any, Callable[[], Any], Callable[[], Any]]:
    seedlock.seed_everything(3)
    loader = seedlock.data.loader(list(range(20)), batch_size=3, shuffle=True)
    batches = iter(loader)
    next(batches), next(batches)
    return loader, lambda: next(batches), lambda: next(iter(loader))


def _sampler() -> tuple[Any, Callable[[], Any], Callable[[], Any]]:
    seedlock.seed_everything(3)
    sampler = seedlock.data.ResumableSampler(20, shuffle=True)
    indices = iter(sampler)
    for _ in range(7):
        next(indices)
    return sampler, lambda: next(indices), lambda: next(iter(sampler))


def _per_rank() -> tuple[Any, Callable[[], Any], Callable[[], Any]]:
    loader, cont, resume = _loader()
    state = seedlock.distributed.PerRankState(loader=loader)
    return state, lambda: (cont(), torch.rand(3)), lambda: (resume(), torch.rand(3))


MAKERS = {"rng": _rng, "loader": _loader, "sampler": _sampler, "per_rank": _per_rank}
NEWEST = {"sampler": _sampler_layout._STATE_VERSION, "loader": _loader_layout._STATE_VERSION}


def _through_torch_save(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("kind", MAKERS)
def test_every_stateful_object_is_a_stateful(kind):
    obj, _, _ = MAKERS[kind]()
    assert isinstance(obj, seedlock.Stateful)
    assert type(obj.state_dict()["version"]) is int


def test_a_plain_object_is_not_a_stateful():
    assert not isinstance(object(), seedlock.Stateful)
    assert not isinstance(torch.Generator(), seedlock.Stateful)


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.usefixtures("empty_registry")
def test_state_round_trips_through_torch_save_and_continues_bit_for_bit(kind):
    obj, cont, _ = MAKERS[kind]()
    saved = _through_torch_save(obj.state_dict())
    expected = cont()
    fresh, _, resume = MAKERS[kind]()
    torch.rand(7), random.random()  # move the globals: the load must put them back
    fresh.load_state_dict(saved)
    assert _same(resume(), expected)


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.usefixtures("empty_registry")
def test_a_newer_version_is_refused_and_nothing_changes(kind):
    obj, cont, resume = MAKERS[kind]()
    newer = obj.state_dict()
    # One above the newest layout this seedlock reads: a sampler in the default order still
    # writes version 1, though it reads version 2 (order="feistel").
    newer["version"] = NEWEST.get(kind, newer["version"]) + 1
    with pytest.raises(StateVersionError, match="newer seedlock"):
        obj.load_state_dict(newer)
    assert issubclass(StateVersionError, StateError)
    got = cont(), resume()
    _, cont_untouched, resume_untouched = MAKERS[kind]()
    assert _same(got, (cont_untouched(), resume_untouched()))


def test_states_from_before_the_version_field_still_load():
    seedlock.seed_everything(0)
    sampler = seedlock.data.ResumableSampler(10)
    sampler.load_state_dict({"epoch": 2, "position": 4})
    assert sampler.state_dict() == {"version": 1, "epoch": 2, "position": 4}
    state = seedlock.distributed.PerRankState()
    old = state.state_dict()
    del old["version"]
    state.load_state_dict(old)
