"""The loader of iterable datasets: one order for any number of workers, exact resume.

The datasets (``tests/stream_datasets.py``) augment every sample from ``random``, NumPy, torch
and ``sample_rng()``. A straight run of two epochs records every batch and the state after it;
a new process then resumes a fresh loader from each of 22 states picked at random (the same
each session), with 0, 2 and 3 workers, and must deliver exactly the rest of the straight run.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import seedlock
import seedlock.data
import stream_datasets as sds
from launches import clean_env
from seedlock.errors import CorruptStateError, StateVersionError, WorldSizeMismatchError

HERE = Path(__file__).parent
POINTS = 22
# 3 workers on a 2-core machine: torch suggests fewer; the test wants more workers than shards.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def straight(kind: str, workers: int, folder: Path) -> tuple[list[Any], list[dict[str, Any]]]:
    """Every batch of the two epochs, and the state before the first and after each one."""
    train = sds.loader(kind, workers, folder)
    batches, states = [], [train.state_dict()]
    while train.epoch < sds.EPOCHS:
        for batch in train:
            batches.append(batch.tolist())
            states.append(train.state_dict())
    return batches, states


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Any]:
    folder = tmp_path_factory.mktemp("streams")
    return {(kind, workers): straight(kind, workers, folder)
            for kind in ("callables", "stateful-shards", "one-stream", "two-files")
            for workers in (0, 2, 3)}  # fmt: skip


@pytest.mark.parametrize("kind", ["callables", "stateful-shards", "one-stream", "two-files"])
def test_batches_and_states_do_not_depend_on_the_number_of_workers(runs, kind):
    batches, states = runs[(kind, 0)]
    assert len(batches) > 2 * 16
    for workers in (2, 3):
        assert runs[(kind, workers)] == (batches, states), workers


def test_each_shard_is_read_once_an_epoch_and_epochs_differ(runs):
    batches, _ = runs[("callables", 0)]
    rows = [row for batch in batches for row in batch]
    per_epoch = sum(sds.LENGTHS)
    for epoch in (0, 1):
        ids = sorted(int(r[0]) for r in rows[epoch * per_epoch : (epoch + 1) * per_epoch])
        assert ids == sorted(s * 1000 + k for s, n in enumerate(sds.LENGTHS) for k in range(n))
    first, second = rows[:per_epoch], rows[per_epoch:]
    assert [r[0] for r in first] != [r[0] for r in second]  # the shards are shuffled per epoch
    noise = {int(r[0]): r[1] for r in first}
    assert all(noise[int(r[0])] != r[1] for r in second)  # and reseeded per epoch


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "workers"),
    [("callables", 0), ("callables", 2), ("callables", 3), ("stateful-shards", 0),
     ("stateful-shards", 3), ("one-stream", 2), ("two-files", 3)],
)  # fmt: skip
def test_a_new_process_resumes_exactly_from_random_interrupt_points(runs, tmp_path, kind, workers):
    batches, states = runs[(kind, 2)]  # saved while 2 workers had read ahead
    points = sorted(random.Random(f"{kind}-points").sample(range(len(states)), POINTS))
    torch.save([states[p] for p in points], tmp_path / "states.pt")
    out = tmp_path / "out.json"
    argv = [sys.executable, str(HERE / "stream_datasets.py"), kind, str(workers),
            str(tmp_path / "states.pt"), str(out)]  # fmt: skip
    proc = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for point, rest in zip(points, json.loads(out.read_text()), strict=True):
        assert rest == batches[point:], f"resumed after batch {point}"


@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
def test_the_main_process_streams_are_untouched_by_fetching(resumed):
    train = sds.loader("callables", 0)
    if resumed:  # the replayed shards read their skipped samples again, under their seeds
        other = sds.loader("callables", 0)
        batches = iter(other)
        next(batches), next(batches)
        train.load_state_dict(other.state_dict())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    expected = (torch.rand(3), np.random.random(3), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    next(iter(train))
    got = (torch.rand(3), np.random.random(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def test_state_dict_right_after_load_is_what_was_loaded_and_a_new_iter_starts_the_next_epoch():
    train = sds.loader("callables", 0)
    batches = iter(train)
    next(batches)
    state = train.state_dict()
    again = sds.loader("callables", 0)
    again.load_state_dict(state)
    assert again.state_dict() == state
    assert again.epoch == 0
    next(iter(train))  # a new iter() leaves epoch 0 behind
    assert train.state_dict()["epoch"] == 1


class Stateless(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from range(3)


def test_a_stream_without_state_is_refused_with_what_to_add():
    seedlock.seed_everything(0)
    with pytest.raises(TypeError, match=r"needs state_dict\(\) and load_state_dict\(\)"):
        seedlock.data.loader(Stateless(), batch_size=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"persistent_workers": True, "num_workers": 1}, "persistent_workers"),
        ({"order": "feistel"}, "order= applies to map-style"),
        ({"global_batch_size": 8}, "global_batch_size= applies to map-style"),
        ({"sampler": [0, 1]}, "sampler= applies to map-style"),
    ],
)
def test_arguments_of_map_style_loaders_are_refused(kwargs, message):
    seedlock.seed_everything(0)
    with pytest.raises(ValueError, match=message):
        seedlock.data.loader(sds.dataset("callables"), batch_size=2, **kwargs)


def test_fewer_shards_than_ranks_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "0")
    seedlock.seed_everything(0)
    with pytest.raises(ValueError, match="5 shard"):
        seedlock.data.loader(sds.dataset("callables"), batch_size=2)


def test_ranks_read_disjoint_shards_that_cover_the_data(monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        train = sds.loader("callables", 0)
        assert train.state_dict()["world_size"] == 2
        seen.append({int(row[0]) // 1000 for batch in train for row in batch.tolist()})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {0, 2, 3, 4}  # shard 1 is empty
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(WorldSizeMismatchError, match="saved by 2 rank"):
        sds.loader("callables", 0).load_state_dict(train.state_dict())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(version=2), "newer seedlock"),
        (lambda s: s.update(shards=s["shards"][:-1]), "a list of 5 entries"),
        (lambda s: s["shards"][0].__setitem__(0, -1), r"shards\[0\] taken"),
        (lambda s: s["shards"][1].__setitem__(3, "yes"), r"shards\[1\] ended must be a bool"),
        (lambda s: s["shards"][2].__setitem__(1, {"x": 1}), r"shards\[2\] point must be None"),
        (lambda s: s.update(batches=True), "batches must be"),
        (lambda s: s.update(extra=1), "extra"),
    ],
)
def test_a_malformed_state_is_refused_in_one_line_and_changes_nothing(change, message):
    train = sds.loader("callables", 0)
    next(iter(train))
    state = train.state_dict()
    bad = json.loads(json.dumps(state))
    change(bad)
    target = sds.loader("callables", 0)
    before = target.state_dict()
    error = StateVersionError if message == "newer seedlock" else CorruptStateError
    with pytest.raises(error, match=message) as raised:
        target.load_state_dict(bad)
    assert "\n" not in str(raised.value)
    assert target.state_dict() == before


def test_sharded_refuses_what_is_not_a_shard():
    with pytest.raises(ValueError, match="at least one shard"):
        seedlock.data.sharded([])
    with pytest.raises(TypeError, match="shard 1 is a int"):
        seedlock.data.sharded([lambda: [], 3])
    with pytest.raises(TypeError, match="pass read="):
        seedlock.data.sharded(["a.txt"])
    with pytest.raises(TypeError, match="read must be callable"):
        seedlock.data.sharded(["a.txt"], read="open")


def test_a_sharded_iterable_iterates_on_its_own_and_has_no_length():
    data = seedlock.data.sharded([lambda: [1, 2], lambda: [3]])
    assert list(data) == [1, 2, 3]
    with pytest.raises(TypeError, match="no length"):
        len(seedlock.data.loader(data, batch_size=2, seed=0))


def test_set_epoch_of_the_running_epoch_after_iter_keeps_counting():
    train = sds.loader("callables", 0)
    batches = iter(train)
    train.set_epoch(0)
    next(batches), next(batches)
    assert train.state_dict()["batches"] == 2
    train.set_epoch(3)
    assert train.state_dict()["epoch"] == 3 and train.state_dict()["batches"] == 0


class SplitsByWorker(torch.utils.data.IterableDataset):
    """Splits itself across workers by get_worker_info(), as torch's docs suggest."""

    def __init__(self) -> None:
        self.position = 0

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        step, first = (1, 0) if info is None else (info.num_workers, info.id)
        for k in range(first, 20, step):
            if k >= self.position:
                self.position = k + 1
                yield k

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def test_a_dataset_that_splits_itself_by_worker_reads_its_whole_shard():
    seedlock.seed_everything(0)
    train = seedlock.data.loader(SplitsByWorker(), batch_size=5, num_workers=2)
    assert torch.cat(list(train)).tolist() == list(range(20))


def _mixed(s: int):
    def read():
        for k in range(9):
            image = torch.arange(12.0).reshape(3, 4).t() + s * 100 + k  # not contiguous
            yield {"image": image, "label": torch.tensor(k, dtype=torch.int16),
                   "meta": (s, f"shard-{s}", [torch.tensor([k, s])])}  # fmt: skip

    return read


def test_samples_of_any_structure_cross_from_workers_unchanged():
    data = seedlock.data.sharded([_mixed(s) for s in range(3)])
    seedlock.seed_everything(0)
    seen = {}
    for workers in (0, 2):
        train = seedlock.data.loader(
            data, batch_size=None, num_workers=workers, collate_fn=lambda sample: sample
        )  # each sample as it came
        seen[workers] = list(train)
    assert len(seen[0]) == 27
    for a, b in zip(seen[0], seen[2], strict=True):
        assert torch.equal(a["image"], b["image"]) and a["image"].shape == (4, 3)
        assert b["label"].dtype == torch.int16 and torch.equal(a["label"], b["label"])
        assert a["meta"][:2] == b["meta"][:2] and type(b["meta"]) is tuple
        assert torch.equal(a["meta"][2][0], b["meta"][2][0])


@pytest.mark.parametrize("drop_last", [False, True])
def test_drop_last_drops_the_short_last_batch_of_each_epoch(drop_last):
    seedlock.seed_everything(0)
    data = sds.dataset("callables")  # 66 samples: 16 batches of 4 and one of 2
    train = seedlock.data.loader(data, batch_size=4, drop_last=drop_last)
    sizes = [len(batch) for batch in train]
    assert sizes == [4] * 16 + ([] if drop_last else [2])


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_a_batch_size_that_is_not_a_count_is_refused(batch_size):
    with pytest.raises(ValueError, match="batch_size must be an int >= 1 or None"):
        seedlock.data.loader(sds.dataset("callables"), batch_size=batch_size, seed=0)


class LiveState(torch.utils.data.IterableDataset):
    """Returns its live state dict, which it then changes in place."""

    def __init__(self) -> None:
        self.state = {"position": 0}

    def __iter__(self):
        while self.state["position"] < 30:
            self.state["position"] += 1
            yield self.state["position"] - 1

    def state_dict(self):
        return self.state

    def load_state_dict(self, state):
        self.state = dict(state)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_that_returns_its_live_state_still_resumes_exactly(workers):
    def made():  # batches of 3 end inside the workers' items of 2 rounds x 2 shards
        return seedlock.data.sharded([LiveState(), LiveState()])

    seedlock.seed_everything(0)
    straight = torch.cat(list(seedlock.data.loader(made(), batch_size=3))).tolist()
    train = seedlock.data.loader(made(), batch_size=3, num_workers=workers)
    batches = iter(train)
    head = next(batches).tolist()
    state = train.state_dict()
    resumed = seedlock.data.loader(made(), batch_size=3, num_workers=workers)
    resumed.load_state_dict(state)
    assert head + torch.cat(list(resumed)).tolist() == straight


def test_an_older_iteration_reads_its_own_epoch_after_a_newer_one_starts():
    seedlock.seed_everything(0)
    data = sds.dataset("callables")
    reference = [b.tolist() for b in seedlock.data.loader(data, batch_size=4, shuffle=True)]
    seedlock.seed_everything(0)
    train = seedlock.data.loader(data, batch_size=4, shuffle=True)
    first = iter(train)  # epoch 0
    iter(train)  # epoch 1 starts before epoch 0 is read
    assert [b.tolist() for b in first] == reference


@pytest.mark.skipif(torch.cuda.is_available(), reason="the case of a machine without accelerator")
def test_pin_memory_without_an_accelerator_is_ignored_with_a_warning_as_dataloader_does():
    seedlock.seed_everything(0)
    with pytest.warns(UserWarning, match="no accelerator is found"):
        train = seedlock.data.loader(sds.dataset("callables"), batch_size=4, pin_memory=True)
    assert sum(len(batch) for batch in train) == sum(sds.LENGTHS)


def test_without_batching_samples_are_converted_as_a_dataloader_converts_them():
    data = seedlock.data.sharded([lambda: (np.full(2, k) for k in range(3))])
    plain = list(torch.utils.data.DataLoader(data, batch_size=None))
    seedlock.seed_everything(0)
    mine = list(seedlock.data.loader(data, batch_size=None))
    assert all(
        type(a) is type(b) is torch.Tensor and torch.equal(a, b)
        for a, b in zip(plain, mine, strict=True)
    )
    tagged = list(seedlock.data.loader(data, batch_size=None, collate_fn=lambda x: ("s", x)))
    assert [t[0] for t in tagged] == ["s"] * 3
