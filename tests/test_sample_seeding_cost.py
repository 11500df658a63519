"""Per-sample seeding made cheap changes no bit: pinned draws of fixed samples, seeds equal to
``derive``'s, and the main process's streams put back exactly around a batch."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import seedlock
import seedlock.data
from seedlock.backends import python as python_backend
from seedlock.data import SeededDataset


class Draws(Dataset):
    """Item i: 8 bytes, in hex, from every source per-sample seeding reaches."""

    def __init__(self) -> None:
        self.np_rng = np.random.default_rng(1)
        self.py_rng = random.Random(2)
        self.torch_gen = torch.Generator().manual_seed(3)

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, i: int) -> str:
        return "|".join(
            [
                f"{random.getrandbits(64):016x}",
                np.random.bytes(8).hex(),
                torch.empty(1, dtype=torch.int64).random_().numpy().tobytes().hex(),
                seedlock.data.sample_rng().bytes(8).hex(),
                self.np_rng.bytes(8).hex(),
                f"{self.py_rng.getrandbits(64):016x}",
                torch.empty(1, dtype=torch.int64)
                .random_(generator=self.torch_gen)
                .numpy()
                .tobytes()
                .hex(),
            ]
        )


# (root, epoch, index) -> random, np.random, torch, sample_rng(), and the three held generators.
GOLDEN = {
    (0, 0, 0): "8268655409448151|fa0975cc7fd7a9ac|116a01af5351f000|a25cc355657d8054|"
    "a2741833cb16c66d|b8ba8d54c9e8fc32|198722d390a28925",
    (0, 0, 5): "db5a50df11766c50|a9dd5a68f34c9c70|6b8eea09270f5402|930eb67c25e83471|"
    "4602f3dcaf5624bf|bee05df66334206f|68e53c94b82c7450",
    (0, 3, 255): "548489e60c8de965|872e47a86c668fa9|43769c9bcd8cec24|8c654aef978be8eb|"
    "ee289bb21174e26f|67589f7c46146e44|9eb7f646ce769a33",
    (0, 3, 256): "e66c9748cf4e4765|a6e2e59ec858f5cd|2bc6d850b3d75f43|a5397b7988fd56c0|"
    "2c304ab96e92f39f|a440bc7d3a600fd7|537b264a7d35bb77",
    (7, 1, 123456789): "bc53924c18102faf|78e711fb0987fa6f|230e38bfbd5ff331|0ec372bd2f6ce6f3|"
    "e9ed450d52ddadcc|26a1e86121069779|78ca09ba0056e12f",
    ("run-a", 2, 2**40): "9f896f8a7b35f470|5a6ed70183652709|a90a276791270a76|241cdb5b8daf9784|"
    "fdd643f76911fcf0|e46dfa8737e561e7|7a436feeed7c414f",
    (b"\x01", 0, 70000): "405d906d6419bd21|3fcbd4ddc0c9bd36|7b3c64f5ef38db72|2ffefe1f4699c18b|"
    "2e4ed920489efba1|427087d43a803320|3df5491b0baa9940",
}


@pytest.mark.parametrize(("root", "epoch", "index"), list(GOLDEN))
def test_the_draws_of_a_sample_are_pinned(root, epoch, index):
    assert SeededDataset(Draws(), root=root)[(epoch, index)] == GOLDEN[root, epoch, index]


def test_a_batch_of_mixed_epochs_draws_the_pinned_values_in_order():
    keys = [(e, i) for r, e, i in GOLDEN if r == 0]
    keys = [*keys, *reversed(keys), keys[0]]
    got = SeededDataset(Draws(), root=0).__getitems__(keys)
    assert got == [GOLDEN[0, e, i] for e, i in keys]


class Globals(Dataset):
    """Item i: what the three global generators draw first."""

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, i: object) -> tuple[int, bytes, bytes]:
        return (
            random.getrandbits(64),
            np.random.bytes(16),
            torch.empty(2, dtype=torch.int64).random_().numpy().tobytes(),
        )


def by_derive(root: object, epoch: int, index: object) -> tuple[int, bytes, bytes]:
    """The same draws after seeding by hand with ``derive``'s values."""
    key = int(index)  # type: ignore[call-overload]
    random.seed(seedlock.derive("data", epoch, key, "python", root=root, bits=64))
    np.random.seed(seedlock.derive("data", epoch, key, "numpy", root=root, bits=32))
    torch.default_generator.manual_seed(
        seedlock.derive("data", epoch, key, "torch", root=root, bits=32)
    )
    return Globals()[0]


INDICES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1]


@pytest.mark.parametrize("root", [0, -5, 2**70, "a root", b"\x00\xff"])
@pytest.mark.parametrize("epoch", [0, 1, 255, 256, 10**12])
def test_every_global_is_seeded_with_derives_value(root, epoch):
    dataset = SeededDataset(Globals(), root=root)
    keys = [(epoch, i) for i in INDICES]
    got = dataset.__getitems__(keys)
    assert got == [by_derive(root, epoch, i) for i in INDICES]


@pytest.mark.parametrize(
    "index", [2**64, 2**200, -1, -256, np.int64(12345), np.uint32(7), torch.tensor(9)]
)
def test_keys_off_the_fast_path_are_seeded_with_derives_value_too(index):
    got = SeededDataset(Globals(), root=3)[(2, index)]
    assert got == by_derive(3, 2, index)


def test_numpy_integer_epochs_seed_as_their_int():
    dataset = SeededDataset(Globals(), root=0)
    assert dataset[(np.int64(4), 9)] == dataset[(4, 9)] == by_derive(0, 4, 9)


class Normals(Dataset):
    """Leaves every global generator mid-stream, with a kept normal where one can be kept."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> torch.Tensor:
        random.gauss(0, 1)  # random keeps the second normal of a pair
        np.random.standard_normal(3)  # an odd count: the legacy generator keeps one
        return torch.randn(3, dtype=torch.float64) + float(np.random.rand()) + random.random()


def all_states() -> tuple[object, ...]:
    numpy_state = np.random.get_state(legacy=False)
    return (
        random.getstate(),
        numpy_state["bit_generator"],
        numpy_state["state"]["key"].tobytes(),
        numpy_state["state"]["pos"],
        numpy_state["has_gauss"],
        numpy_state["gauss"],
        torch.get_rng_state().numpy().tobytes(),
    )


def next_draws() -> tuple[object, ...]:
    return (
        random.random(),
        random.gauss(0, 1),
        np.random.standard_normal(3).tobytes(),
        np.random.bytes(8),
        torch.randn(4).numpy().tobytes(),
    )


def start(kept_normals: bool) -> None:
    seedlock.seed_everything(0)
    if kept_normals:
        random.gauss(0, 1)  # random.gauss_next is set
        np.random.standard_normal()  # the legacy generator keeps a normal (has_gauss = 1)
        torch.randn(1)


@pytest.mark.parametrize("kept_normals", [False, True])
def test_a_batch_in_the_main_process_puts_every_global_state_back_exactly(kept_normals):
    start(kept_normals)
    before = all_states()
    assert before[4] == int(kept_normals)
    expected = next_draws()
    start(kept_normals)
    for _ in seedlock.data.loader(Normals(), batch_size=4, shuffle=True):
        assert all_states() == before
    assert next_draws() == expected


def test_the_numpy_snapshot_handles_a_bit_generator_other_than_mt19937():
    old = np.random.mtrand._rand._bit_generator
    try:
        dataset = SeededDataset(Normals(), root=0)
        dataset[(0, 0)]  # the plan is made with an MT19937 global
        np.random.set_bit_generator(np.random.PCG64(5))
        before = np.random.get_state(legacy=False)
        dataset.__getitems__([(0, 1), (0, 2)])
        after = np.random.get_state(legacy=False)
        assert after["state"] == before["state"]
        assert (after["has_uint32"], after["uinteger"]) == (
            before["has_uint32"],
            before["uinteger"],
        )
    finally:
        np.random.set_bit_generator(old)


def test_the_python_snapshot_without_a_view_of_the_c_state_is_exact_too(monkeypatch):
    monkeypatch.setattr(python_backend, "_state_memory", lambda instance: None)
    seedlock.seed_everything(1)
    random.gauss(0, 1)
    before = random.getstate()
    SeededDataset(Normals(), root=0).__getitems__([(0, 1), (0, 2)])
    assert random.getstate() == before


def test_the_view_of_pythons_c_state_reads_what_getstate_reports():
    memory = python_backend._state_memory(random._inst)
    if memory is None:
        pytest.skip("no view of random's C state on this Python: getstate / setstate are used")
    seedlock.seed_everything(2)
    random.random()
    internal = random.getstate()[1]
    assert memory.tobytes() == np.array([internal[-1], *internal[:-1]], dtype=np.uint32).tobytes()


class Holds(Dataset):
    """Holds one generator object of each library: per-sample seeding reseeds them too."""

    def __init__(self) -> None:
        self.np_rng = np.random.default_rng(1)
        self.legacy = np.random.RandomState(2)
        self.py_rng = random.Random(3)
        self.torch_gen = torch.Generator().manual_seed(4)

    def __len__(self) -> int:
        return 1


def generator_states(dataset: object) -> tuple[object, ...]:
    """Every state per-sample seeding sets: the three globals', then the held generators'."""
    held = []
    if isinstance(dataset, Holds):
        held = [
            dataset.np_rng.bit_generator.state,
            str(dataset.legacy.get_state(legacy=False)),
            dataset.py_rng.getstate(),
            dataset.torch_gen.get_state().numpy().tobytes(),
        ]
    return (*all_states(), *held)


EDGE_INDICES = [
    *INDICES,
    *range(0, 70_000, 4999),
    2**56 - 1,
    2**56,
    -1,
    -128,
    -129,
    -(2**63),
    2**64,
    2**64 + 1,
    2**300,
    np.int64(12345),
    np.uint64(2**64 - 1),
    torch.tensor(2**40),
]
EPOCHS = [0, 1, 127, 128, 2**31, 2**64, -3, np.int64(5), "an epoch", b"\x00"]


def plans(dataset: object, root: object) -> list[object]:
    """The plan of ``dataset`` with every loaded library (held generators: another group of
    suffixes), and one for only two of them (the fast path's loop, not its unrolled form)."""
    from seedlock.backends import live_globals  # private to this test: which libraries seed
    from seedlock.data._samples import _Plan  # the plans whose fast path is checked

    seeded = SeededDataset(dataset, root=root)
    backends = tuple(b for b in live_globals() if b.name != "numpy")
    return [seeded._plan(), _Plan(backends, seeded.held, seeded.root)]


@pytest.mark.parametrize("root", [0, -5, 2**70, "a root", b"\x00\xff"])
@pytest.mark.parametrize("make", [Globals, Holds], ids=["globals", "held"])
def test_the_fast_path_seeds_every_generator_as_the_generic_path_does(root, make):
    dataset = make()
    for plan in plans(dataset, root):
        for epoch in EPOCHS:
            fast, generic = plan.seeding(epoch), plan._generic(epoch)
            for index in EDGE_INDICES:
                random.gauss(0, 1), np.random.standard_normal(3), torch.randn(1)  # move them
                before = random.getstate(), np.random.get_state(), torch.get_rng_state()
                fast(index)
                got = generator_states(dataset)
                random.setstate(before[0]), np.random.set_state(before[1])
                torch.set_rng_state(before[2])
                generic(index)
                assert got == generator_states(dataset), (root, epoch, index)


def test_the_fast_path_is_the_one_taken_for_int_keys():
    plan = SeededDataset(Globals(), root=0)._plan()
    assert plan.seeding(3).__name__ == "seed_three"
    assert plan.seeding(3) is plan.seeding(3)  # kept per epoch
    assert plans(Holds(), 0)[0].seeding(3).__name__ == "seed_sample"
    assert plan.seeding("an epoch").__name__ == "seed_sample"  # the generic path's


@pytest.mark.parametrize("index", [True, 1.5, None])
def test_the_fast_path_refuses_what_derive_refuses(index):
    plan = SeededDataset(Globals(), root=0)._plan()
    with pytest.raises(TypeError, match="key must be an int, str or bytes"):
        plan.seeding(0)(index)
