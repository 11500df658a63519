"""The ``order="feistel"`` shuffle: a permutation, pinned, position-independent, O(1) in memory
at 10**10 samples, uniform; the default ``"randperm"`` order and its states unchanged."""

from __future__ import annotations

import functools
import itertools
import math
import random
import tracemalloc
from collections import Counter

import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler

import seedlock
import seedlock.data
from seedlock.data import ResumableSampler
from seedlock.data._feistel import MAX_SIZE, FeistelPermutation, LazyShare
from seedlock.errors import CorruptStateError, StateVersionError

BIG = 10**10


def feistel(size: int, **kwargs: object) -> ResumableSampler:
    kwargs.setdefault("seed", 0)
    return ResumableSampler(size, order="feistel", **kwargs)  # type: ignore[arg-type]


def chi2_sf(stat: float, df: int) -> float:
    """P(X >= stat) for X chi-square with ``df`` degrees of freedom (series of the lower
    regularized incomplete gamma function; exact enough for thresholds near 1e-4)."""
    s, x = df / 2, stat / 2
    term = total = 1 / s
    k = 0
    while term > 1e-17 * total:
        k += 1
        term *= x / (s + k)
        total += term
    return max(0.0, 1 - math.exp(s * math.log(x) - x - math.lgamma(s)) * total)


def chi2_uniform(counts: Counter, cells: int) -> float:
    """The p-value of ``counts`` over ``range(cells)`` against the uniform distribution."""
    expected = sum(counts.values()) / cells
    stat = sum((counts[c] - expected) ** 2 / expected for c in range(cells))
    return chi2_sf(stat, cells - 1)


def test_the_chi2_helper_matches_known_quantiles():
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-6)
    assert chi2_sf(148.2303678, 99) == pytest.approx(0.001, rel=1e-4)
    assert chi2_sf(0.0001, 5) > 0.999999


# -- (1) a permutation, for every small size ------------------------------------------------------


@pytest.mark.parametrize(("seed", "epoch"), [(0, 0), (1, 7), ("name", 2)])
def test_every_size_up_to_300_is_a_permutation(seed, epoch):
    for n in range(1, 301):
        order = list(feistel(n, seed=seed).indices(epoch))
        assert sorted(order) == list(range(n)), n


def test_one_position_alone_is_the_block_value_for_every_small_size():
    for n in range(1, 301):
        permutation = FeistelPermutation(n, 3, 5)
        block = permutation.block(torch.arange(n)).tolist()
        assert [permutation.index(p) for p in range(n)] == block, n


# -- (2) determinism and the pinned values --------------------------------------------------------


def test_the_order_is_pinned():
    assert list(feistel(20).indices(0)) == [
        16, 17, 5, 9, 18, 0, 8, 3, 10, 2, 4, 12, 15, 7, 6, 11, 19, 1, 14, 13,
    ]  # fmt: skip
    assert list(feistel(20, seed="golden").indices(3)) == [
        19, 15, 8, 18, 12, 14, 5, 13, 11, 1, 9, 6, 16, 0, 10, 3, 7, 2, 17, 4,
    ]  # fmt: skip
    permutation = FeistelPermutation(BIG, 0, 0)
    assert permutation.keys[0] == (3363756394, 899049663, 1868145667)
    assert [permutation.index(p) for p in range(4)] == [
        5887912720, 3791954669, 5807529399, 8479224870,
    ]  # fmt: skip
    assert [permutation.index(5 * 10**9 + p) for p in range(4)] == [
        1749881709, 3310063669, 4583089718, 7588856607,
    ]  # fmt: skip


def test_the_order_is_a_function_of_root_and_epoch():
    orders = {(s, e): list(feistel(500, seed=s).indices(e)) for s in (0, 1) for e in (0, 1)}
    assert len({tuple(o) for o in orders.values()}) == 4
    assert list(feistel(500, seed=1).indices(1)) == orders[1, 1]
    seedlock.derivation.set_root(1)  # the conftest fixture puts the root back
    assert list(ResumableSampler(500, order="feistel").indices(0)) == orders[1, 0]


def test_iterating_the_sampler_advances_the_epoch():
    sampler = feistel(50)
    first, second = list(sampler), list(sampler)
    assert first == list(sampler.indices(0)) and second == list(sampler.indices(1))
    assert first != second


# -- (3) position independence and resume ---------------------------------------------------------


def test_any_position_alone_equals_the_full_iteration():
    n = 100_003
    order = list(feistel(n).indices(0))
    assert sorted(order) == list(range(n))
    permutation = FeistelPermutation(n, 0, 0)
    draw = random.Random(0)
    for p in draw.sample(range(n), 200):
        assert permutation.index(p) == order[p]
    share = feistel(n).indices(0)
    assert isinstance(share, LazyShare)
    assert share[-1] == order[-1] and list(share[70_000:70_300:3]) == order[70_000:70_300:3]
    assert list(share[::-1][:5]) == order[::-1][:5]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_split_the_order_like_distributed_sampler_and_resume_anywhere(world, drop_last):
    n = 1001
    order = list(feistel(n).indices(0))
    shares = []
    for rank in range(world):
        make = functools.partial(feistel, n, num_replicas=world, rank=rank, drop_last=drop_last)
        share = list(make())
        split = DistributedSampler(range(n), world, rank, shuffle=False, drop_last=drop_last)
        assert share == [order[i] for i in split] and len(make()) == len(split)
        shares.append(share)
        for stop in random.Random(rank).sample(range(len(share) + 1), 8):
            sampler = make()
            iterator = iter(sampler)
            taken = [next(iterator) for _ in range(stop)]
            state = sampler.state_dict()
            assert state == {"version": 2, "epoch": 0, "position": stop, "order": "feistel"}
            resumed = make()
            resumed.load_state_dict(state)
            assert taken + list(resumed) == share
    together = sorted(i for share in shares for i in share)
    kept = n - n % world if drop_last else n
    assert sorted(set(together)) == sorted(order[:kept]) and len(together) >= kept


def test_the_loader_passes_the_order_to_its_sampler_and_resumes_exactly():
    data = torch.arange(103)
    seedlock.seed_everything(0)
    loader = seedlock.data.loader(data, batch_size=8, shuffle=True, order="feistel")
    assert loader.resumable_sampler.order == "feistel"
    batches = [b.tolist() for b in loader]
    assert list(itertools.chain(*batches)) == list(feistel(103).indices(0))
    again = seedlock.data.loader(data, batch_size=8, shuffle=True, order="feistel")
    again.load_state_dict({"version": 1, "epoch": 0, "batches": 5, "order": "feistel"})
    assert [b.tolist() for b in again] == batches[5:]
    unbatched = seedlock.data.loader(data, batch_size=None, shuffle=True, order="feistel")
    assert [int(x) for x in unbatched] == list(itertools.chain(*batches))


# -- (4) 10**10 samples: O(batch) work, O(1) memory -----------------------------------------------


def test_a_first_batch_of_ten_billion_samples_costs_a_batch_fresh_or_resumed():
    tracemalloc.start()
    try:
        sampler = feistel(BIG)
        assert len(sampler) == BIG
        iterator = iter(sampler)
        fresh = [next(iterator) for _ in range(256)]
        sampler.load_state_dict(
            {"version": 2, "epoch": 0, "position": BIG // 2, "order": "feistel"}
        )
        iterator = iter(sampler)
        resumed = [next(iterator) for _ in range(256)]
        share = sampler.indices(0)[BIG // 2 :]
        middle = list(share[:256])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**21
    permutation = FeistelPermutation(BIG, 0, 0)
    assert fresh == [permutation.index(p) for p in range(256)]
    assert resumed == middle == [permutation.index(BIG // 2 + p) for p in range(256)]
    # Cycle-walking takes 1.7 steps on average here (the domain is 4**17); a table would be 10**10.
    assert 256 <= share.permutation.evaluations < 256 * 4
    assert len(set(fresh + resumed)) == 512 and all(0 <= i < BIG for i in fresh + resumed)


class Huge(Dataset):
    def __len__(self) -> int:
        return BIG

    def __getitem__(self, i: int) -> int:
        return i


def test_a_loader_over_ten_billion_samples_resumes_in_the_middle():
    loader = seedlock.data.loader(Huge(), batch_size=256, shuffle=True, order="feistel", seed=0)
    loader.load_state_dict({"version": 1, "epoch": 0, "batches": BIG // 512, "order": "feistel"})
    batch = next(iter(loader)).tolist()
    permutation = FeistelPermutation(BIG, 0, 0)
    assert batch == [permutation.index(BIG // 2 + p) for p in range(256)]


# -- (5) uniformity -------------------------------------------------------------------------------


def test_the_index_at_a_fixed_position_is_uniform_over_keys():
    n, buckets = 10**6, 20
    counts = Counter(
        FeistelPermutation(n, 0, root).index(12_345) * buckets // n for root in range(2000)
    )
    assert chi2_uniform(counts, buckets) > 1e-4


def test_consecutive_indices_are_not_correlated():
    n, buckets = 10**6, 10
    order = FeistelPermutation(n, 0, 0).block(torch.arange(n))
    pairs = (order[0::2] * buckets // n) * buckets + order[1::2] * buckets // n
    counts = Counter(pairs.tolist())
    assert chi2_uniform(counts, buckets * buckets) > 1e-4
    r = torch.corrcoef(torch.stack([order[:-1], order[1:]]).double())[0, 1].item()
    assert abs(r) < 5 / math.sqrt(n)


@pytest.mark.parametrize("n", [2, 3, 5, 7, 10, 17, 64, 65])
def test_the_first_index_of_a_small_order_is_uniform_over_keys(n):
    counts = Counter(FeistelPermutation(n, 0, root).index(0) for root in range(3000))
    assert chi2_uniform(counts, n) > 1e-4


def test_every_order_of_four_samples_is_drawn_evenly():
    perms = Counter(
        tuple(FeistelPermutation(4, epoch, 0).block(torch.arange(4)).tolist())
        for epoch in range(4800)
    )
    assert len(perms) == 24
    counts = Counter({i: perms[p] for i, p in enumerate(sorted(perms))})
    assert chi2_uniform(counts, 24) > 1e-4


# -- (6) the default order is unchanged -----------------------------------------------------------


@pytest.mark.parametrize("world", [1, 3])
def test_the_default_order_is_still_torch_randperm_from_the_derived_seed(world):
    g = torch.Generator().manual_seed(seedlock.derive("sampler", 2, root=9, bits=32))
    order = torch.randperm(31, generator=g).tolist()
    padded = (order * 2)[: len(ResumableSampler(31, num_replicas=world, rank=0)) * world]
    for rank in range(world):
        sampler = ResumableSampler(31, seed=9, num_replicas=world, rank=rank, epoch=2)
        assert sampler.order == "randperm"
        assert sampler.indices(2) == padded[rank::world]
    assert sampler.state_dict() == {"version": 1, "epoch": 2, "position": 0}


def test_without_shuffle_the_feistel_sampler_is_in_index_order():
    assert list(feistel(7, shuffle=False)) == list(range(7))


# -- (7) states and bad input ---------------------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def v2(order: str | None = "feistel", position: int = 3) -> dict[str, object]:
    state: dict[str, object] = {"version": 2, "epoch": 0, "position": position}
    return state if order is None else {**state, "order": order}


@pytest.mark.parametrize(
    ("state", "sampler_order", "match"),
    [
        (v2(), "randperm", "order='feistel'"),
        ({"version": 1, "epoch": 0, "position": 3}, "feistel", "order='randperm'"),
        ({"epoch": 0, "position": 3}, "feistel", "order='randperm'"),
        (v2("randperm"), "feistel", "order='randperm'"),
        (v2(None), "feistel", "lacks order"),
        (v2("sorted"), "feistel", "order must be one of"),
        ({**v2(), "version": 1}, "feistel", "unexpected field"),
        (v2(position=11), "feistel", "position must be"),
    ],
)
def test_a_state_of_another_order_or_layout_is_refused_and_changes_nothing(
    state, sampler_order, match
):
    sampler = ResumableSampler(10, seed=0, order=sampler_order, epoch=4)
    before = sampler.state_dict()
    with pytest.raises(CorruptStateError) as error:
        sampler.load_state_dict(state)
    assert match in one_line(error)
    assert sampler.state_dict() == before


def test_a_newer_sampler_state_asks_for_an_upgrade():
    with pytest.raises(StateVersionError, match="upgrade seedlock"):
        feistel(10).load_state_dict({"version": 4, "epoch": 0, "position": 0, "order": "feistel"})


def test_a_randperm_state_of_either_version_loads_into_the_default_sampler():
    sampler = ResumableSampler(10, seed=0)
    sampler.load_state_dict({"version": 2, "epoch": 1, "position": 4, "order": "randperm"})
    assert sampler.state_dict() == {"version": 1, "epoch": 1, "position": 4}


def test_bad_sizes_and_order_names_are_refused_in_one_line():
    with pytest.raises(ValueError) as error:
        ResumableSampler(10, order="random")
    assert one_line(error) == "order must be one of 'randperm', 'feistel', got 'random'"
    with pytest.raises(ValueError) as error:
        FeistelPermutation(0, 0, 0)
    assert "[1, 4**31], got 0" in one_line(error)
    with pytest.raises(ValueError) as error:
        feistel(MAX_SIZE + 1)
    assert "up to 4**31" in one_line(error)
    with pytest.raises(IndexError):
        FeistelPermutation(5, 0, 0).index(5)
    with pytest.raises(ValueError, match="are set on the ResumableSampler"):
        seedlock.data.loader(range(4), sampler=feistel(4), order="feistel", seed=0)
    with pytest.raises(ValueError, match="order must be one of"):
        seedlock.data.loader(range(4), shuffle=True, order="fast", seed=0)


def test_an_empty_dataset_has_an_empty_feistel_order():
    sampler = feistel(0)
    assert list(sampler) == [] and len(sampler) == 0
    assert sampler.state_dict() == {"version": 2, "epoch": 1, "position": 0, "order": "feistel"}
    assert list(feistel(0, num_replicas=2, rank=1)) == []


def test_the_largest_size_is_accepted():
    permutation = FeistelPermutation(MAX_SIZE, 0, 0)
    values = permutation.block(torch.tensor([0, MAX_SIZE - 1]))
    assert values.tolist() == [permutation.index(0), permutation.index(MAX_SIZE - 1)]
    assert values.min() >= 0 and values.max() < MAX_SIZE


@pytest.mark.parametrize("workers", [0, 2])
def test_a_feistel_loader_resumes_exactly_and_records_its_order(workers):
    dataset = torch.arange(1000)
    full = list(seedlock.data.loader(dataset, batch_size=32, shuffle=True, order="feistel", seed=3))
    assert sorted(torch.cat(full).tolist()) == list(range(1000))
    first = seedlock.data.loader(dataset, batch_size=32, shuffle=True, order="feistel", seed=3)
    batches = iter(first)
    for _ in range(7):
        next(batches)
    state = first.state_dict()
    assert state == {"version": 1, "epoch": 0, "batches": 7, "order": "feistel"}
    resumed = seedlock.data.loader(
        dataset, batch_size=32, shuffle=True, order="feistel", seed=3, num_workers=workers
    )
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 7
    assert all(torch.equal(a, b) for a, b in zip(rest, full[7:], strict=True))


def test_a_loader_state_of_one_order_is_refused_by_a_loader_of_the_other():
    feistel = seedlock.data.loader(range(100), batch_size=10, shuffle=True, order="feistel", seed=0)
    plain = seedlock.data.loader(range(100), batch_size=10, shuffle=True, seed=0)
    with pytest.raises(CorruptStateError, match=r"order='feistel'.*order='randperm'"):
        plain.load_state_dict(feistel.state_dict())
    with pytest.raises(CorruptStateError, match=r"order='randperm'.*order='feistel'"):
        feistel.load_state_dict(plain.state_dict() | {"order": "randperm"})
    with pytest.raises(CorruptStateError, match="order='randperm'"):
        feistel.load_state_dict(plain.state_dict())
