"""The data pipeline: worker-count invariance, no global side effects, exact resume."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import seedlock
import seedlock.data
from seedlock.data import ResumableSampler, SeededDataset, find_generators
from seedlock.errors import CorruptStateError, StateVersionError


class Augmented(Dataset):
    """Augmentation drawing from every global and from a NumPy Generator held by the dataset:
    the classic source of duplicated augmentations under workers."""

    def __init__(self, n: int = 24) -> None:
        self.rng = np.random.default_rng(0)
        self.x = torch.arange(n, dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.stack(
            [
                self.x[i],
                torch.tensor(random.random(), dtype=torch.float64),
                torch.tensor(np.random.rand(), dtype=torch.float64),
                torch.rand((), dtype=torch.float64),
                torch.tensor(self.rng.random(), dtype=torch.float64),
            ]
        )


def epochs(loader, n: int = 2) -> torch.Tensor:
    return torch.cat([torch.cat(list(loader)) for _ in range(n)])


@pytest.fixture
def reference() -> torch.Tensor:
    seedlock.seed_everything(0)
    return epochs(seedlock.data.loader(Augmented(), batch_size=4, shuffle=True))


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_batches_are_bit_identical_for_any_worker_count(reference, workers, persistent):
    loader = seedlock.data.loader(
        Augmented(),
        batch_size=4,
        shuffle=True,
        num_workers=workers,
        persistent_workers=persistent,
    )
    assert torch.equal(epochs(loader), reference)


def test_workers_started_with_spawn_see_the_same_batches(reference):
    # spawn pickles the dataset into each worker (fork copies it): the wrapper must survive that.
    loader = seedlock.data.loader(
        Augmented(), batch_size=4, shuffle=True, num_workers=2, multiprocessing_context="spawn"
    )
    loader.dataset[(0, 0)]  # a fetch in this process first: the wrapper now holds hash states
    assert torch.equal(epochs(loader), reference)


def test_each_sample_gets_its_own_augmentation_in_every_epoch(reference):
    values = reference[:, 1:]
    assert len({tuple(row.tolist()) for row in values}) == len(values)


def test_iterating_leaves_the_global_torch_rng_untouched():
    seedlock.seed_everything(0)
    before = torch.get_rng_state()
    for workers in (0, 2):
        epochs(seedlock.data.loader(Augmented(), batch_size=4, shuffle=True, num_workers=workers))
    assert torch.equal(torch.get_rng_state(), before)


def test_fetching_in_the_main_process_leaves_every_global_stream_alone():
    seedlock.seed_everything(0)
    expected = random.random(), np.random.rand(), torch.rand(1)
    seedlock.seed_everything(0)
    epochs(seedlock.data.loader(Augmented(), batch_size=4, shuffle=True))
    got = random.random(), np.random.rand(), torch.rand(1)
    assert got[:2] == expected[:2]
    assert torch.equal(got[2], expected[2])


def test_per_sample_seeding_leaves_the_lazy_cuda_seed_alone(monkeypatch):
    # On a machine with a GPU, seed_everything queues CUDA's seed until CUDA starts. Per-sample
    # seeding must not queue its own (torch.manual_seed would): the main process restores only
    # the CPU state, so a queued per-sample seed would replace seed_everything's at CUDA start.
    from seedlock import backends

    (torch_backend,) = backends.select(["torch"])
    monkeypatch.setattr(torch_backend, "_found", ["cuda x1, applied when CUDA starts"])
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    seedlock.seed_everything(0)
    queued = torch.cuda._lazy_seed_tracker.get_calls()
    list(seedlock.data.loader(Augmented(), batch_size=4))
    assert torch.cuda._lazy_seed_tracker.get_calls() == queued


def test_a_plain_dataloader_duplicates_held_generator_augmentations_and_seedlock_does_not():
    torch.manual_seed(0)
    plain = DataLoader(Augmented(), batch_size=4, shuffle=True, num_workers=2)
    held = epochs(plain)[:, 4]
    # Both workers start from copies of the same Generator, in both epochs.
    assert len(set(held.tolist())) < len(held) // 2
    seedlock.seed_everything(0)
    ours = epochs(seedlock.data.loader(Augmented(), batch_size=4, shuffle=True, num_workers=2))
    assert len(set(ours[:, 4].tolist())) == len(ours)


def test_strict_mode_names_the_generator_held_by_the_dataset():
    seedlock.seed_everything(0)
    with pytest.raises(ValueError, match=r"dataset\.rng \(numpy\.random\._generator\.Generator\)"):
        seedlock.data.loader(Augmented(), strict=True)


class Crop:
    def __init__(self) -> None:
        self.rng = random.Random(3)


class Compose:
    def __init__(self, transforms: list) -> None:
        self.transforms = transforms


class Deep(Dataset):
    def __init__(self) -> None:
        self.transform = Compose([Crop(), {"noise": torch.Generator()}])
        self.too_deep = Compose([Compose([Crop()])])
        self.table = np.zeros(3)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        return i


def test_generator_scan_goes_three_attribute_steps_through_containers():
    paths = sorted(p for p, _, _ in find_generators(Deep()))
    assert paths == [
        "dataset.transform.transforms[0].rng",
        "dataset.transform.transforms[1]['noise']",
    ]


def test_sample_rng_is_a_function_of_root_epoch_and_index_only():
    class Noise(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> float:
            return float(seedlock.data.sample_rng().random() + seedlock.data.sample_rng().random())

    a = SeededDataset(Noise(), root=1)
    b = SeededDataset(Noise(), root=1)
    assert [a[(0, i)] for i in range(4)] == [b[(0, i)] for i in reversed(range(4))][::-1]
    assert a[(0, 1)] != a[(1, 1)]
    assert a[(0, 1)] != SeededDataset(Noise(), root=2)[(0, 1)]


def test_sample_generator_outside_a_fetch_is_an_error():
    with pytest.raises(RuntimeError, match="only available while a seedlock loader fetches"):
        seedlock.data.sample_generator()


def test_resume_mid_epoch_continues_at_the_next_delivered_batch():
    seedlock.seed_everything(0)
    full = epochs(seedlock.data.loader(Augmented(), batch_size=4, shuffle=True, num_workers=2), 2)
    first = seedlock.data.loader(Augmented(), batch_size=4, shuffle=True, num_workers=2)
    got = list(first)  # epoch 0
    it = iter(first)
    got += [next(it) for _ in range(2)]  # two batches of epoch 1; workers prefetch more
    state = first.state_dict()
    assert state == {"version": 1, "epoch": 1, "batches": 2}
    del it
    second = seedlock.data.loader(Augmented(), batch_size=4, shuffle=True, num_workers=2)
    second.load_state_dict(state)
    got += list(second)
    assert torch.equal(torch.cat(got), full)


def test_state_after_a_finished_epoch_points_at_the_next_epoch():
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(Augmented(), batch_size=4)
    list(loader)
    assert loader.state_dict() == {"version": 1, "epoch": 1, "batches": 0}


def test_bad_loader_state_is_refused():
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(Augmented(), batch_size=4)
    with pytest.raises(ValueError, match=r"batches must be an int in \[0, 6\]"):
        loader.load_state_dict({"version": 1, "epoch": 0, "batches": 99})
    with pytest.raises(ValueError, match="not a seedlock loader state"):
        loader.load_state_dict({"epoch": 0})


@pytest.mark.parametrize(
    "state",
    [
        {"version": True, "epoch": 0, "batches": 1},
        {"version": 1, "epoch": -1, "batches": 1},
        {"version": 1, "epoch": 0, "batches": True},
        {"version": 1, "epoch": 0.0, "batches": 1},
        {"version": 1, "epoch": 0, "batches": 1, "extra": 0},
        {"version": 1, "epoch": 0, "batches": 1, "world_size": 0},
        ["version", 1],
    ],
    ids=str,
)
def test_a_loader_state_it_never_writes_is_a_state_error_and_changes_nothing(state):
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(Augmented(), batch_size=4)
    loader.load_state_dict({"version": 1, "epoch": 2, "batches": 3})
    with pytest.raises(CorruptStateError):
        loader.load_state_dict(state)
    assert loader.state_dict() == {"version": 1, "epoch": 2, "batches": 3}


def test_a_newer_loader_state_asks_for_an_upgrade():
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(Augmented(), batch_size=4)
    with pytest.raises(StateVersionError, match="newer seedlock"):
        loader.load_state_dict({"version": 3, "epoch": 0, "batches": 0})


@pytest.mark.parametrize("batch_size", [4, 5, None])
def test_state_dict_right_after_load_state_dict_is_what_was_loaded(batch_size):
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(Augmented(), batch_size=batch_size, shuffle=True)
    last = len(loader)  # the short last batch included
    for batches in (0, 3, last):
        state = {"version": 1, "epoch": 2, "batches": batches}
        loader.load_state_dict(state)
        assert loader.state_dict() == state


def test_a_checkpoint_taken_right_after_a_resume_resumes_at_the_same_batch():
    seedlock.seed_everything(0)
    straight = list(seedlock.data.loader(Augmented(), batch_size=4, shuffle=True))
    resumed = seedlock.data.loader(Augmented(), batch_size=4, shuffle=True)
    resumed.load_state_dict({"version": 1, "epoch": 0, "batches": 3})
    again = seedlock.data.loader(Augmented(), batch_size=4, shuffle=True)
    again.load_state_dict(resumed.state_dict())  # preempted again before the first batch
    assert all(torch.equal(a, b) for a, b in zip(list(again), straight[3:], strict=True))


def test_set_epoch_on_the_sampler_moves_the_loader():
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(Augmented(), batch_size=4, shuffle=True)
    epoch_3 = seedlock.data.loader(Augmented(), batch_size=4, shuffle=True)
    for _ in range(3):
        list(epoch_3)
    loader.resumable_sampler.set_epoch(3)
    assert loader.epoch == 3
    assert all(torch.equal(a, b) for a, b in zip(loader, epoch_3, strict=True))


def test_a_dataset_holding_an_unseedable_source_is_refused():
    class Entropy(Augmented):
        def __init__(self) -> None:
            super().__init__()
            self.transform = {"noise": random.SystemRandom()}

    seedlock.seed_everything(0)
    with pytest.raises(ValueError, match=r"no seed reaches, at dataset\.transform\['noise'\]"):
        seedlock.data.loader(Entropy(), batch_size=4)


def test_threads_fetching_from_one_dataset_each_get_their_samples_generator():
    inside = {0: threading.Event(), 1: threading.Event()}
    drawn = threading.Event()

    class Interleaved(Dataset):
        """Sample 0 draws while sample 1 is being fetched by the other thread."""

        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> float:
            inside[i].set()
            if i == 0:
                inside[1].wait(timeout=10)
                value = float(seedlock.data.sample_rng().random())
                drawn.set()
            else:
                drawn.wait(timeout=10)
                value = float(seedlock.data.sample_rng().random())
            return value

    seeded = SeededDataset(Interleaved(), root=0)

    def fetch(i: int) -> float:
        if i == 1:
            inside[0].wait(timeout=10)  # sample 1 starts while sample 0 is in progress
        return seeded[(0, i)]

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(fetch, [0, 1]))
    # Each sample's generator, from its (root, epoch, index) alone:
    key = [seedlock.derive("data", 0, i, "sample_rng", root=0, bits=128) for i in (0, 1)]
    assert together == [float(np.random.default_rng(k).random()) for k in key]


def test_stateless_iterable_datasets_and_foreign_samplers_are_refused_with_reasons():
    seedlock.seed_everything(0)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield 1

    with pytest.raises(TypeError, match=r"needs state_dict\(\) and load_state_dict\(\)"):
        seedlock.data.loader(Stream())
    with pytest.raises(TypeError, match=r"seedlock\.data\.loader\(\) builds the loader"):
        seedlock.data.SeedlockDataLoader(Stream())
    with pytest.raises(TypeError, match=r"sampler must be a seedlock\.data\.ResumableSampler"):
        seedlock.data.loader(Augmented(), sampler=torch.utils.data.SequentialSampler(range(3)))
    with pytest.raises(TypeError, match="builds its own generator"):
        seedlock.data.loader(Augmented(), generator=torch.Generator())


def test_sampler_advances_its_epoch_on_every_iteration():
    sampler = ResumableSampler(10, seed=0)
    first, second = list(sampler), list(sampler)
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert sorted(first) == list(range(10))


def test_sampler_order_is_derived_from_root_and_epoch():
    g = torch.Generator().manual_seed(seedlock.derive("sampler", 3, root=7, bits=32))
    expected = torch.randperm(10, generator=g).tolist()
    assert ResumableSampler(10, seed=7, epoch=3).indices(3) == expected


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("size", "world"), [(10, 3), (9, 3), (2, 4), (7, 1)])
def test_sampler_partitions_ranks_exactly_like_distributed_sampler(size, world, drop_last):
    from torch.utils.data import DistributedSampler

    for rank in range(world):
        ours = ResumableSampler(
            size, shuffle=False, num_replicas=world, rank=rank, drop_last=drop_last
        )
        theirs = DistributedSampler(
            range(size), num_replicas=world, rank=rank, shuffle=False, drop_last=drop_last
        )
        assert list(ours) == list(theirs)
        assert len(ours) == len(theirs)


def test_sampler_state_right_after_load_state_dict_is_what_was_loaded():
    sampler = ResumableSampler(40, seed=0)
    sampler.load_state_dict({"epoch": 1, "position": 30})
    assert sampler.state_dict() == {"version": 1, "epoch": 1, "position": 30}


def test_sampler_state_resumes_mid_epoch():
    sampler = ResumableSampler(10, seed=0)
    it = iter(sampler)
    taken = [next(it) for _ in range(4)]
    state = sampler.state_dict()
    assert state == {"version": 1, "epoch": 0, "position": 4}
    other = ResumableSampler(10, seed=0)
    other.load_state_dict(state)
    assert taken + list(other) == ResumableSampler(10, seed=0).indices(0)


def test_sampler_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match=r"rank must be in \[0, num_replicas\)"):
        ResumableSampler(10, num_replicas=2, rank=2)


def test_the_sampler_order_ignores_the_default_device():
    # torch.set_default_device("cuda") made randperm build its tensor on the device, with a CPU
    # generator; "meta" stands in for it here (the order cannot be read off a meta tensor).
    sampler = ResumableSampler(range(50), seed=3)
    expected = list(sampler)
    torch.set_default_device("meta")
    try:
        again = ResumableSampler(range(50), seed=3)
        assert list(again) == expected
    finally:
        torch.set_default_device(None)


class _DrawsWith(Dataset):
    """Draws 4 numbers from ``sample_generator(*args)`` twice in one fetch: the bits, and whether
    the second call returned the same generator."""

    def __init__(self, *args: object) -> None:
        self.args = args

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[bytes, bool]:
        generator = seedlock.data.sample_generator(*self.args)
        drawn = torch.rand(4, generator=generator)
        again = seedlock.data.sample_generator(*self.args)
        return drawn.numpy().tobytes() + torch.rand(4, generator=again).numpy().tobytes(), (
            again is generator and again is seedlock.data.sample_generator()
        )


def test_sample_generator_on_the_cpu_is_the_default_one_seeded_as_before():
    expected = []
    for i in range(4):
        generator = torch.Generator().manual_seed(
            seedlock.derive("data", 0, i, "sample_generator", root=0, bits=32)
        )
        expected.append(torch.rand(8, generator=generator).numpy().tobytes())
    for args in ((), ("cpu",), (torch.device("cpu"),)):
        dataset = SeededDataset(_DrawsWith(*args), root=0)
        assert [dataset[(0, i)] for i in range(4)] == [(bits, True) for bits in expected]


@pytest.mark.parametrize(
    ("device", "error", "match"),
    [
        (0, TypeError, "str or torch.device"),
        (True, TypeError, "str or torch.device"),
        (None, TypeError, "str or torch.device"),
        ("no-such-device", ValueError, "not a device torch knows"),
    ],
)
def test_sample_generator_refuses_what_is_not_a_device(device, error, match):
    dataset = SeededDataset(_DrawsWith(device), root=0)
    with pytest.raises(error, match=match):
        dataset[(0, 0)]


def test_set_epoch_of_the_running_epoch_after_iter_keeps_counting_as_trainers_call_it():
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(Augmented(), batch_size=4, shuffle=True)
    batches = iter(loader)  # Lightning: iter() first, then set_epoch(current epoch)
    loader.set_epoch(0)
    next(batches), next(batches)
    assert loader.state_dict() == {"version": 1, "epoch": 0, "batches": 2}
    rest = list(batches)
    assert loader.state_dict() == {"version": 1, "epoch": 1, "batches": 0}
    loader.set_epoch(0)  # after the epoch: starts epoch 0 again
    assert [b.tolist() for b in loader][2:] == [b.tolist() for b in rest]
