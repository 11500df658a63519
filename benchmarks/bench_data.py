#!/usr/bin/env python
"""What seedlock's data pipeline costs: resume latency, per-sample seeding, loader throughput.

    python benchmarks/bench_data.py [--repeats N] [--quick] [--profile] [--image-size N]
                                    [--samples-only]

Measures, side by side in one run:

1. Time to the first batch after resuming at batch k = 0, 1,000, 10,000 and 100,000 of an epoch
   of 120,000 batches of 8 (a synthetic map-style dataset of 960,000 small tensors), with
   ``num_workers=0``, and at k = 0 and 100,000 with ``num_workers=2``:

   * seedlock: ``loader.load_state_dict({"version": 1, "epoch": 0, "batches": k})``, then
     ``next(iter(loader))``. The acceptance criterion is that resuming at k = 100,000 takes at
     most 1.5x as long as at k = 0.
   * replay-and-discard: a plain ``torch.utils.data.DataLoader`` with a seeded generator, iterated
     k batches that are thrown away (what accelerate's ``skip_first_batches`` does for iterable
     datasets). Measured every repeat up to k = 10,000 (k = 1,000 with workers); beyond that the
     cell is a linear extrapolation from the measured per-batch cost, marked as such. Without
     workers k = 100,000 is also measured once, when the extrapolation says it takes under 20 s.
   * torchdata's ``StatefulDataLoader``, when installed: its own ``load_state_dict`` with the
     state it saves after k batches (see the note on how that state is made).

2. Per-sample reseeding overhead, in microseconds per sample, on a dataset whose ``__getitem__``
   returns its index: ``SeededDataset(ds)[(0, i)]`` (a batch of one: the main process saves and
   restores the global generators around every call), ``SeededDataset.__getitems__`` over batches
   of 32 (one save / restore per batch: what seedlock's loader does with ``num_workers=0``) and
   the per-sample seeding alone (what a worker does), each against ``ds[i]``; and the three
   library seed calls alone (``random.seed``, ``np.random.seed``,
   ``torch.default_generator.manual_seed``, seed = index): the floor of any per-sample seeding.
   Two criteria: the seeding alone costs at most 1.2x the three bare calls per sample (paired
   per repeat), and the main process's save and restore of the global generators (``getitems``
   minus the seeding alone, times the batch) at most 20 us per batch. ``--samples-only`` runs
   this part alone.

3. Loader throughput, samples per second after the first batch, on one augmentation at two
   image sizes side by side: 3xSxS uint8 images, a random crop of 7/8 S, a random horizontal flip
   (Python ``random``), float conversion, normalisation, gaussian noise from the torch global RNG
   and a per-channel offset from ``np.random``; batch 64, ``shuffle=True``, ``num_workers=2`` and
   ``0``. S = 224 (ImageNet-sized: the augmentation dwarfs the seeding) and S = 64 (a stress case:
   the seeding is a larger share of each sample; ``--image-size`` changes this side). Variants:
   ``seedlock.data.loader``, a plain ``DataLoader``, and a plain ``DataLoader`` that makes the
   three bare seed calls before each sample (the floor of any per-sample seeding). Criteria:
   seedlock reaches at least 0.97x the plain loader's samples per second at 224 and 0.90x at 64,
   for each ``num_workers``. seedlock's first batch must be bit-identical with 0 and 2 workers.

4. Time to the first batch after an elastic resume (``benchmarks/_elastic.py``): a loader state
   saved by 2 ranks with ``global_batch_size=8`` loaded by 1 rank (micro-batch 8) and by 4
   (micro-batch 2), at global step 0 and 100,000 of 120,000, for both orders. The criterion:
   at most 1.5x as long at step 100,000 as at step 0.

Each repeat runs every variant, in an order shuffled per repeat (fixed shuffle seed), so machine
noise hits them alike. Every resume is checked: the batch it returns must be batch k of the
epoch's order. When a criterion is missed (or with ``--profile``), a cProfile of the seedlock path
follows the table.
"""

from __future__ import annotations

import copy
import gc
import operator
import random
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import _elastic
import _harness as harness  # benchmarks/ is on sys.path when run as a script
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import seedlock
import seedlock.data
from seedlock.backends import live_globals
from seedlock.data import SeededDataset

try:
    import torchdata
    from torchdata.stateful_dataloader import StatefulDataLoader
except ImportError as exc:  # optional: its rows are skipped
    StatefulDataLoader = None
    TORCHDATA_MISSING = f"{type(exc).__name__}: {exc}"
else:
    TORCHDATA_MISSING = ""
    # torchdata 0.11 calls a deprecated torch API on every iter(); keep stderr readable.
    warnings.filterwarnings("ignore", message=".*set_vital.*", category=UserWarning)

RESUME_TARGET = 1.5  # seedlock: first batch at k=100,000 vs k=0
SEEDING_TARGET = 1.2  # seedlock: per-sample seeding (a worker's) vs the 3 bare seed calls
SAVE_RESTORE_TARGET_US = 20.0  # seedlock: main-process save + restore of the globals, per batch
THROUGHPUT_TARGETS = {224: 0.97, 64: 0.90}  # seedlock: samples/s vs a plain DataLoader, by side

# Part 1: resume.
BATCH = 8
EPOCH_BATCHES = 120_000
KS = (0, 1_000, 10_000, 100_000)  # num_workers=0
WORKER_KS = (0, 100_000)  # num_workers=2
WORKERS = 2
REPLAY_MAX_K = 10_000  # replay is measured every repeat up to here (num_workers=0) ...
REPLAY_WORKER_K = 1_000  # ... and up to here with workers; beyond, extrapolated
REPLAY_ONCE_LIMIT_S = 20.0  # measure replay at k=100,000 once if predicted under this
STATE_CHECK_K = 1_000  # a real StatefulDataLoader state, to validate the made-up ones

# Part 2: per-sample overhead.
SAMPLE_BATCH = 32
BLOCK_S = 0.1
WARMUP_CALLS = 20

# Part 3: throughput.
IMG_BATCH = 64
IMG_BATCHES = 60  # per variant and round (--quick: 30)
# Throughput rounds per repeat: many short rounds, each variant once per round in a shuffled
# order, make the paired per-round ratios robust to the machine's slow drifts (page-fault bursts,
# thread-pool wake-ups), which a few long rounds are not.
ROUNDS_PER_REPEAT = 3
N_IMAGES = 1024  # distinct images; index i shows image i % N_IMAGES
SIDES = [224, 64]  # image sides: ImageNet-sized, and a stress case (--image-size changes it)


# --- datasets ------------------------------------------------------------------------------------


class IndexTensors(Dataset[torch.Tensor]):
    """Item i is the int64 tensor ``[i, 1, 2, 3]``: cheap, and a batch names its own indices."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.base = torch.arange(4)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.base + i


class Trivial(Dataset[int]):
    """Item i is i: all that is left to time is what wraps ``__getitem__``."""

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, i: int) -> int:
        return i


class HandSeeded(Dataset[Any]):
    """The floor of any per-sample seeding: the three library seed calls, seed = index, nothing
    derived, nothing saved or restored. ``torch.default_generator.manual_seed``, not
    ``torch.manual_seed`` (which also queues lazy CUDA / XPU seeds on every call)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        random.seed(i)
        np.random.seed(i & 0xFFFFFFFF)
        torch.default_generator.manual_seed(i & 0xFFFFFFFF)
        return self.dataset[i]


class Images(Dataset[tuple[torch.Tensor, int]]):
    """3 x side x side uint8 images with a crop (7/8 of the side) / flip / normalise / noise
    augmentation in torch ops, drawing from Python ``random``, the torch global RNG and
    ``np.random``."""

    def __init__(self, size: int, side: int) -> None:
        g = torch.Generator().manual_seed(1234)
        self.images = torch.randint(
            0, 256, (N_IMAGES, 3, side, side), dtype=torch.uint8, generator=g
        )
        self.side, self.crop = side, side * 7 // 8
        self.labels = torch.randint(0, 10, (N_IMAGES,), generator=g).tolist()
        self.size = size
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, crop = self.images[i % N_IMAGES], self.crop
        top, left = torch.randint(0, self.side - crop + 1, (2,)).tolist()
        x = img[:, top : top + crop, left : left + crop]
        if random.random() < 0.5:
            x = x.flip(-1)
        x = x.float().div_(255).sub_(self.mean).div_(self.std)
        x.add_(torch.randn(3, crop, crop), alpha=0.05)
        x.add_(torch.from_numpy(np.random.normal(0.0, 0.02, (3, 1, 1)).astype(np.float32)))
        return x, self.labels[i % N_IMAGES]


# --- helpers ------------------------------------------------------------------------------------


def throughput_row(measure: str, this: harness.Series, base: harness.Series) -> str:
    """Samples/s cells; *added* is the time added per sample, 1/this - 1/base, in us."""
    return harness.rate_row(
        measure, this, base, "samples/s", amount=1, scale=1e6, added_unit="us/sample"
    )


def settle() -> None:
    """Between timed units: collect garbage (and with it finished iterators and their workers)."""
    gc.collect()


# --- part 1: time to the first batch after a resume ----------------------------------------------


def first_indices(batch: torch.Tensor) -> list[int]:
    return batch[:, 0].tolist()


class Resume:
    """The resume variants over one :class:`IndexTensors`, each checked against the epoch order."""

    def __init__(self) -> None:
        self.ds = IndexTensors(BATCH * EPOCH_BATCHES)
        self.seedlock_order: list[int] | None = None
        self.states: dict[tuple[int, int], dict[str, Any]] = {}
        self.stateful_order: dict[int, list[int]] = {}

    # seedlock ----------------------------------------------------------------------------------
    def seedlock_loader(self, workers: int) -> seedlock.data.SeedlockDataLoader:
        return seedlock.data.loader(self.ds, batch_size=BATCH, shuffle=True, num_workers=workers)

    def seedlock(self, workers: int, k: int) -> float:
        loader = self.seedlock_loader(workers)
        if self.seedlock_order is None:
            self.seedlock_order = loader.resumable_sampler.indices(0)
        state = {"version": 1, "epoch": 0, "batches": k}
        return resume_once("seedlock", loader, state, k, self.seedlock_order)

    # replay and discard ---------------------------------------------------------------------------
    def plain_loader(self, workers: int) -> DataLoader[Any]:
        g = torch.Generator().manual_seed(0)
        return DataLoader(self.ds, batch_size=BATCH, shuffle=True, num_workers=workers, generator=g)

    def replay(self, workers: int, k: int) -> float:
        loader = self.plain_loader(workers)
        t = time.perf_counter()
        it = iter(loader)
        for _ in range(k):  # the loop accelerate's SkipDataLoader runs
            next(it)
        next(it)
        elapsed = time.perf_counter() - t
        del it
        return elapsed

    # torchdata's StatefulDataLoader ---------------------------------------------------------------
    def stateful_loader(self, workers: int) -> Any:
        g = torch.Generator().manual_seed(0)
        return StatefulDataLoader(
            self.ds, batch_size=BATCH, shuffle=True, num_workers=workers, generator=g
        )

    def real_state(self, workers: int, k: int) -> dict[str, Any]:
        loader = self.stateful_loader(workers)
        it = iter(loader)
        for _ in range(k):
            next(it)
        state = loader.state_dict()
        del it
        settle()
        return state

    def prepare_stateful(self, workers: int, ks: Sequence[int]) -> str:
        """Make the state StatefulDataLoader saves after k batches, for every k.

        Iterating 100,000 batches to get it would take minutes with workers. Its state counts
        position in a few integer fields; everything else (the sampler's generator state, the
        base seed, the worker states) is the same at every k. So a real state saved after 3
        batches gets its counters set to k, and that is checked against a real state saved
        after STATE_CHECK_K batches (and every resume is checked against the epoch order).
        Returns "" when that holds, else why not.
        """
        small = self.real_state(workers, 3)
        real = self.real_state(workers, STATE_CHECK_K)
        made = advance(small, STATE_CHECK_K, workers)
        if not same(made, real):
            return (
                f"the StatefulDataLoader state (num_workers={workers}) after {STATE_CHECK_K} "
                "batches is not the 3-batch state with its counters moved: this torchdata "
                "version stores its position differently"
            )
        for k in ks:
            self.states[workers, k] = advance(small, k, workers)
        gen = next(v for p, v in walk(small) if p[-1] == "generator")
        g = torch.Generator()
        g.set_state(gen)
        self.stateful_order[workers] = torch.randperm(len(self.ds), generator=g).tolist()
        return ""

    def stateful(self, workers: int, k: int) -> float:
        loader = self.stateful_loader(workers)
        order = self.stateful_order[workers]
        return resume_once("StatefulDataLoader", loader, self.states[workers, k], k, order)


def resume_once(name: str, loader: Any, state: dict[str, Any], k: int, order: list[int]) -> float:
    """Seconds from ``load_state_dict`` to the first batch, which must be batch k of ``order``."""
    t = time.perf_counter()
    loader.load_state_dict(state)
    it = iter(loader)
    batch = next(it)
    elapsed = time.perf_counter() - t
    del it
    if first_indices(batch) != order[k * BATCH : (k + 1) * BATCH]:
        raise SystemExit(f"{name} resumed at k={k} with the wrong batch")
    return elapsed


# The fields of a StatefulDataLoader state (torchdata 0.11) that count the position.
def _counters(k: int, workers: int) -> dict[str, int]:
    return {
        "samples_yielded": k * BATCH,
        "yielded": k * BATCH,
        "_sampler_iter_yielded": k,
        "_num_yielded": k,
        "_snapshot_step": k,
        "_last_yielded_worker_id": (k - 1) % max(workers, 1),
        "_steps_since_snapshot": 0,
    }


def walk(d: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(d, dict):
        for key, value in d.items():
            yield from walk(value, (*path, str(key)))
    else:
        yield path, d


def advance(state: dict[str, Any], k: int, workers: int) -> dict[str, Any]:
    counters = _counters(k, workers)
    out = copy.deepcopy(state)

    def visit(d: dict[str, Any]) -> None:
        for key, value in d.items():
            if isinstance(value, dict):
                visit(value)
            elif key in counters and isinstance(value, int):
                d[key] = counters[key]

    visit(out)
    return out


def same(a: Any, b: Any) -> bool:
    la, lb = list(walk(a)), list(walk(b))
    if [p for p, _ in la] != [p for p, _ in lb]:
        return False
    for (_, x), (_, y) in zip(la, lb, strict=True):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                return False
            if not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


@dataclass
class ResumeResults:
    cells: dict[tuple[str, int, int], harness.Series] = field(
        default_factory=dict
    )  # (variant, nw, k)
    replay_once: float | None = None  # replay at k=100,000, num_workers=0, one run
    replay_once_predicted: float = 0.0
    stateful_skipped: str = ""


def measure_resume(repeats: int, quick: bool) -> ResumeResults:
    bench = Resume()
    res = ResumeResults()
    units: list[tuple[str, int, int]] = []
    for k in KS:
        units.append(("seedlock", 0, k))
        if k <= REPLAY_MAX_K:
            units.append(("replay", 0, k))
    for k in WORKER_KS:
        units.append(("seedlock", WORKERS, k))
        if k <= REPLAY_WORKER_K:
            units.append(("replay", WORKERS, k))
    units.append(("replay", WORKERS, REPLAY_WORKER_K))
    if StatefulDataLoader is None:
        res.stateful_skipped = f"torchdata is not importable ({TORCHDATA_MISSING})"
    else:
        harness.progress(
            "resume: making StatefulDataLoader states (one real run per num_workers) ..."
        )
        for workers, ks in ((0, KS), (WORKERS, WORKER_KS)):
            why = bench.prepare_stateful(workers, ks)
            if why:
                res.stateful_skipped = why
                break
            units += [("stateful", workers, k) for k in ks]
    if res.stateful_skipped:
        units = [u for u in units if u[0] != "stateful"]
        harness.progress(f"StatefulDataLoader rows skipped: {res.stateful_skipped}")
    units = list(dict.fromkeys(units))
    run = {"seedlock": bench.seedlock, "replay": bench.replay, "stateful": bench.stateful}

    harness.progress("resume: warm-up ...")
    for variant, workers in {(v, w) for v, w, _ in units}:
        run[variant](workers, 0)
        settle()
    for shuffled in harness.rounds(units, repeats, label="resume, repeat"):
        for unit in shuffled:
            res.cells.setdefault(unit, harness.Series()).add(run[unit[0]](unit[1], unit[2]))
            settle()

    # Replay beyond what was measured: linear in k, per repeat.
    for workers, measured_k, ks in ((0, REPLAY_MAX_K, KS), (WORKERS, REPLAY_WORKER_K, WORKER_KS)):
        t0, tk = res.cells["replay", workers, 0], res.cells["replay", workers, measured_k]
        for k in ks:
            if k > measured_k:
                res.cells["replay", workers, k] = harness.Series(
                    [
                        a + (b - a) * k / measured_k
                        for a, b in zip(t0.values, tk.values, strict=True)
                    ],
                    note=f"(extrapolated from k={measured_k:,})",
                )
    predicted = res.cells["replay", 0, KS[-1]].median
    res.replay_once_predicted = predicted
    if not quick and predicted < REPLAY_ONCE_LIMIT_S:
        harness.progress(
            f"resume: replaying {KS[-1]:,} batches once (predicted {predicted:.1f} s) ..."
        )
        res.replay_once = bench.replay(0, KS[-1])
        settle()
    return res


# --- part 2: per-sample reseeding overhead -------------------------------------------------------


@dataclass
class Variant:
    name: str
    fn: Callable[[list[int]], Any]

    def call(self, batches: list[list[int]]) -> Callable[[int], object]:
        """Call ``c`` of a block: over one batch of SAMPLE_BATCH indices, in turn."""
        fn = self.fn
        return lambda c: fn(batches[c % len(batches)])


def sample_variants() -> list[Variant]:
    ds = Trivial()
    seeded = SeededDataset(ds)
    variants = [
        Variant("direct", lambda idx: [ds[i] for i in idx]),
        Variant("getitem", lambda idx: [seeded[(0, i)] for i in idx]),
        Variant("getitems", lambda idx: seeded.__getitems__([(0, i) for i in idx])),
    ]
    # The worker path: seeding, no save / restore (private API: skipped if it changes).
    fetch_all, plan = getattr(seeded, "_fetch_all", None), getattr(seeded, "_plan", None)
    if fetch_all is not None and plan is not None:
        made = plan()
        variants.append(Variant("fetch", lambda idx: fetch_all([(0, i) for i in idx], made)))
    hand = HandSeeded(ds)
    variants.append(Variant("raw", lambda idx: [hand[i] for i in idx]))
    return variants


def measure_samples(repeats: int) -> dict[str, harness.Series]:
    gen = random.Random(1)
    batches = [[gen.randrange(1 << 30) for _ in range(SAMPLE_BATCH)] for _ in range(64)]
    variants = sample_variants()
    harness.progress("per-sample: warm-up and calibration ...")
    calls = {
        v.name: harness.calibrate(v.call(batches), BLOCK_S, 20, 20_000, WARMUP_CALLS)
        for v in variants
    }
    res = {v.name: harness.Series() for v in variants}
    for shuffled in harness.rounds(variants, repeats, label="per-sample, repeat"):
        for v in shuffled:
            per_call = statistics.median(harness.time_calls(v.call(batches), calls[v.name]))
            res[v.name].add(per_call / SAMPLE_BATCH)
    return res


# --- part 3: loader throughput -------------------------------------------------------------------


# A throughput unit: (variant, num_workers, image side); variants "seedlock", "plain", "hand".
Unit = tuple[str, int, int]


class Throughput:
    def __init__(self, batches: int) -> None:
        self.ds = {side: Images(IMG_BATCH * batches, side) for side in SIDES}
        self.first: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # seedlock's

    def loader(self, variant: str, workers: int, side: int) -> DataLoader[Any]:
        if variant == "seedlock":
            return seedlock.data.loader(
                self.ds[side], batch_size=IMG_BATCH, shuffle=True, num_workers=workers
            )
        ds = HandSeeded(self.ds[side]) if variant == "hand" else self.ds[side]
        g = torch.Generator().manual_seed(0)
        return DataLoader(ds, batch_size=IMG_BATCH, shuffle=True, num_workers=workers, generator=g)

    def run(self, variant: str, workers: int, side: int) -> float:
        """Samples per second after the first batch (worker start-up is left out)."""
        it = iter(self.loader(variant, workers, side))
        first = next(it)
        t = time.perf_counter()
        n = sum(len(y) for _, y in it)
        rate = n / (time.perf_counter() - t)
        del it
        if variant == "seedlock":
            self.first.setdefault((workers, side), first)
        return rate


def measure_throughput(
    repeats: int, batches: int
) -> tuple[dict[Unit, harness.Series], dict[int, bool]]:
    """Every variant, ``num_workers`` and side once per round, rounds in shuffled orders; and
    per side, whether seedlock's first batch is identical with 0 and ``WORKERS`` workers."""
    bench = Throughput(batches)
    units = [(v, w, s) for s in SIDES for w in (WORKERS, 0) for v in ("seedlock", "plain", "hand")]
    harness.progress("throughput: warm-up ...")
    for unit in units:
        bench.run(*unit)
        settle()
    res: dict[Unit, harness.Series] = {u: harness.Series() for u in units}
    for shuffled in harness.rounds(units, repeats * ROUNDS_PER_REPEAT, label="throughput, round"):
        for unit in shuffled:
            res[unit].add(bench.run(*unit))
            settle()
    identical = {}
    for side in SIDES:
        (x0, y0), (x2, y2) = bench.first[0, side], bench.first[WORKERS, side]
        identical[side] = torch.equal(x0, x2) and torch.equal(y0, y2)
    return res, identical


# --- profiles ------------------------------------------------------------------------------------


def seeding_breakdown(calls: int = 2000) -> list[str]:
    """What one sample's seeding is made of, timed without the profiler (which inflates
    Python-heavy code): median over 5 blocks of ``calls`` calls, us per call."""
    try:
        plan = SeededDataset(Trivial(), root=0)._plan()
    except (ImportError, AttributeError) as exc:
        return ["", f"(no seeding breakdown: {exc})"]

    def per_call(fn: Callable[[int], Any], n: int = calls) -> float:
        return statistics.median(harness.time_block(fn, n) for _ in range(5)) * 1e6

    def save_load(i: int) -> None:
        for load, state in [(load, save()) for save, load in plan.snapshots]:
            load(state)

    names = [b.name for b in live_globals()]
    parts: list[tuple[str, float, str]] = [
        (
            "the derivation of every seed of a sample, generic path (one `Deriver` call)",
            per_call(lambda i: plan.derive(0, i)),
            f"for keys other than ints ({len(names)} values)",
        ),
        (
            "a sample's whole seeding, hot path (`plan.seeding(epoch)(index)`: the index "
            "hashed onto the epoch's kept hash state, one digest and one seeder per library)",
            per_call(plan.seeding(0)),
            "x 1 per sample",
        ),
        ("`live_globals()`", per_call(lambda i: live_globals()), "x 1 per batch"),
    ]
    parts += [
        (f"`{name}` backend seeder", per_call(lambda i, s=seed, m=mask: s(i & m)), "x 1 per sample")
        for name, (seed, mask) in zip(names, plan.seeders, strict=True)
    ]
    parts += [
        (
            f"`{name}` backend snapshot: save, then load",
            per_call(lambda i, s=save, put=load: put(s())),
            "x 1 per batch, main process only",
        )
        for name, (save, load) in zip(names, plan.snapshots, strict=True)
    ]
    parts += [
        (
            "save and load of the seeded globals (`snapshot()`)",
            per_call(save_load, calls // 10),
            "x 1 per batch, main process only",
        ),
        (
            "`torch.manual_seed(v)` (for comparison; seedlock calls the CPU generator's)",
            per_call(torch.manual_seed, calls // 10),
            "not called without an accelerator",
        ),
    ]
    seedlock.seed_everything(0)  # put the globals back where the run left them
    return [
        "",
        "Per-sample seeding, piece by piece (us per call, no profiler):",
        *(f"- {name}: {us:.2f} us, {how}" for name, us, how in parts),
    ]


def profile_throughput(batches: int, side: int) -> list[str]:
    bench = Throughput(batches)

    def consume() -> None:
        for _ in bench.loader("seedlock", 0, side):
            pass

    return harness.profile(consume, top=14).lines(
        f"one epoch of `seedlock.data.loader` ({side}x{side}, num_workers=0, {batches} batches)"
    )


def profile_resume() -> list[str]:
    bench = Resume()
    bench.seedlock(0, 0)  # warm-up

    def resume() -> None:
        for _ in range(10):
            bench.seedlock(0, KS[-1])

    return harness.profile(resume, top=14).lines(
        f"10 x resume at k={KS[-1]:,} (num_workers=0), with the checks"
    )


# --- the report ----------------------------------------------------------------------------------


def report_header(span: harness.Span, batches: int) -> list[str]:
    td = f"torchdata {torchdata.__version__}" if StatefulDataLoader else "torchdata not installed"
    return harness.header(
        "seedlock data pipeline benchmark",
        harness.environment(),
        span,
        f"per-sample seeding seeds: {', '.join(b.name for b in live_globals())}",
        f"resume: epoch of {EPOCH_BATCHES:,} batches of {BATCH}; time from `load_state_dict` "
        "(replay: from `iter()`) to the first batch, the loader built beforehand; throughput: "
        f"{' and '.join(f'{s}x{s}' for s in SIDES)} images, "
        f"{batches} batches of {IMG_BATCH} per variant, side and round, {ROUNDS_PER_REPEAT} "
        "rounds a repeat, timed after the first batch",
        legend=harness.cells("over repeats (throughput: rounds)", "per repeat (round)"),
        versions=[td],
        machine=[f"DataLoader workers start with `{torch.multiprocessing.get_start_method()}`"],
    )


def report(
    rr: ResumeResults,
    samples: dict[str, harness.Series],
    tp: dict[Unit, harness.Series],
) -> list[str]:
    ms, us = 1e3, 1e6
    c = rr.cells
    lines = []
    for workers, ks in ((0, KS), (WORKERS, WORKER_KS)):
        for k in ks:
            this = c["seedlock", workers, k]
            base = c["replay", workers, k]
            if workers == 0 and k == KS[-1] and rr.replay_once is not None:
                base = harness.Series([rr.replay_once], note="(1 run)")
            lines.append(
                harness.row(
                    f"first batch after resume at k={k:,}, num_workers={workers}: seedlock vs "
                    "replay-and-discard",
                    this,
                    base,
                    ms,
                    "ms",
                )
            )
            if ("stateful", workers, k) in c:
                lines.append(
                    harness.row(
                        f"first batch after resume at k={k:,}, num_workers={workers}: seedlock "
                        "vs StatefulDataLoader",
                        this,
                        c["stateful", workers, k],
                        ms,
                        "ms",
                    )
                )
    for workers in (0, WORKERS):
        lines.append(
            harness.row(
                f"seedlock: resume at k={KS[-1]:,} vs k=0, num_workers={workers} "
                f"(criterion <= {RESUME_TARGET}x)",
                c["seedlock", workers, KS[-1]],
                c["seedlock", workers, 0],
                ms,
                "ms",
            )
        )
        if ("stateful", workers, KS[-1]) in c:
            lines.append(
                harness.row(
                    f"StatefulDataLoader: resume at k={KS[-1]:,} vs k=0, num_workers={workers}",
                    c["stateful", workers, KS[-1]],
                    c["stateful", workers, 0],
                    ms,
                    "ms",
                )
            )
    d = samples["direct"]
    lines += [
        harness.row(
            "per sample: `SeededDataset(ds)[(0, i)]` (save / restore per call) vs `ds[i]`",
            samples["getitem"],
            d,
            us,
            "us",
        ),
        harness.row(
            f"per sample: `SeededDataset.__getitems__` over {SAMPLE_BATCH} (loader, "
            "num_workers=0) vs `ds[i]`",
            samples["getitems"],
            d,
            us,
            "us",
        ),
    ]
    if "fetch" in samples:
        lines.append(
            harness.row(
                "per sample: seeding only, no save / restore (what a worker does) vs `ds[i]`",
                samples["fetch"],
                d,
                us,
                "us",
            )
        )
    lines.append(
        harness.row(
            "per sample: the 3 library seed calls alone, seed = index (a floor for any "
            "per-sample seeding) vs `ds[i]`",
            samples["raw"],
            d,
            us,
            "us",
        )
    )
    lines += seeding_rows(samples)
    for side in SIDES:
        for workers in (WORKERS, 0):
            what = (
                f"throughput, {side}x{side} augmentation, batch {IMG_BATCH}, num_workers={workers}"
            )
            lines += [
                throughput_row(
                    f"{what}: seedlock vs DataLoader (criterion >= {THROUGHPUT_TARGETS[side]}x)",
                    tp["seedlock", workers, side],
                    tp["plain", workers, side],
                ),
                throughput_row(
                    f"{what}: DataLoader + the 3 seed calls per sample (floor) vs DataLoader",
                    tp["hand", workers, side],
                    tp["plain", workers, side],
                ),
                throughput_row(
                    f"{what}: seedlock vs DataLoader + the 3 seed calls per sample",
                    tp["seedlock", workers, side],
                    tp["hand", workers, side],
                ),
            ]
    return lines


def save_restore(samples: dict[str, harness.Series]) -> harness.Series:
    """Per repeat: the main process's save and restore of the globals around one batch."""
    return harness.paired(
        samples["getitems"], samples["fetch"], lambda a, b: (a - b) * SAMPLE_BATCH
    )


def seeding_rows(samples: dict[str, harness.Series]) -> list[str]:
    """The rows of the two per-sample criteria (none when the private API moved)."""
    if "fetch" not in samples:
        return []
    return [
        harness.row(
            "per sample: seeding only (what a worker does) vs the 3 bare seed calls "
            f"(criterion <= {SEEDING_TARGET}x)",
            samples["fetch"],
            samples["raw"],
            1e6,
            "us",
        ),
        harness.row(
            f"per batch of {SAMPLE_BATCH}: main-process save + restore of the globals "
            f"(getitems - seeding only; criterion <= {SAVE_RESTORE_TARGET_US:.0f} us)",
            save_restore(samples),
            None,
            1e6,
            "us",
        ),
    ]


def seeding_verdicts(samples: dict[str, harness.Series]) -> tuple[list[str], bool]:
    """PASS / FAIL of the per-sample seeding cost and the per-batch save / restore."""
    if "fetch" not in samples:
        return ["(no seeding-only variant: SeededDataset._fetch_all is gone)"], False
    ratios = harness.paired(samples["fetch"], samples["raw"], operator.truediv)
    ratio = samples["fetch"].median / samples["raw"].median
    per_batch = save_restore(samples).median * 1e6
    ok_seed, ok_save = ratio <= SEEDING_TARGET, per_batch <= SAVE_RESTORE_TARGET_US
    lo, hi = ratios.iqr()
    return [
        f"**per-sample seeding: {ratio:.2f}x the 3 bare seed calls** "
        f"({samples['fetch'].median * 1e6:.2f} vs {samples['raw'].median * 1e6:.2f} us; "
        f"criterion <= {SEEDING_TARGET}x): "
        + harness.passfail(ok_seed)
        + f" (per-repeat ratios: median {ratios.median:.2f}x, p25 - p75 {lo:.2f} - {hi:.2f})",
        f"**main-process save + restore: {per_batch:.1f} us per batch** of {SAMPLE_BATCH} "
        f"(criterion <= {SAVE_RESTORE_TARGET_US:.0f} us): " + harness.passfail(ok_save),
    ], ok_seed and ok_save


def verdicts(
    rr: ResumeResults,
    samples: dict[str, harness.Series],
    tp: dict[Unit, harness.Series],
    ident: dict[int, bool],
) -> tuple[list[str], bool, bool]:
    c = rr.cells
    lines = [""]
    resume_ok = True
    for workers in (0, WORKERS):
        r = c["seedlock", workers, KS[-1]].median / c["seedlock", workers, 0].median
        ok = r <= RESUME_TARGET
        resume_ok &= ok
        lines.append(
            f"**resume at k={KS[-1]:,} vs k=0, num_workers={workers}: {r:.2f}x** "
            f"(criterion <= {RESUME_TARGET}x): " + harness.passfail(ok)
        )
    tp_ok = True
    for side in SIDES:
        target = THROUGHPUT_TARGETS[side]
        for workers in (WORKERS, 0):
            this, plain = tp["seedlock", workers, side], tp["plain", workers, side]
            r = this.median / plain.median
            ok = r >= target
            tp_ok &= ok
            per_round = harness.paired(this, plain, operator.truediv)
            lo, hi = per_round.iqr()
            lines.append(
                f"**throughput {side}x{side}, num_workers={workers}: {r:.3f}x** of a plain "
                f"DataLoader (criterion >= {target}x): "
                + harness.passfail(ok)
                + f" (per-round ratios: median {per_round.median:.2f}x, p25 - p75 {lo:.2f} - "
                f"{hi:.2f})"
            )
        lines.append(
            f"seedlock's first augmented {side}x{side} batch is bit-identical with num_workers=0 "
            f"and {WORKERS}: " + ("yes" if ident[side] else "NO (a Workers-contract bug)")
        )
    big = KS[-1]
    replay0 = c["replay", 0, big]
    if rr.replay_once is not None:
        lines.append(
            f"replay at k={big:,} (num_workers=0) was measured once: {rr.replay_once:.2f} s; the "
            f"linear extrapolation from k={REPLAY_MAX_K:,} predicted {replay0.median:.2f} s."
        )
    else:
        lines.append(
            f"replay at k={big:,} (num_workers=0) is extrapolated linearly from k="
            f"{REPLAY_MAX_K:,} ({replay0.median:.2f} s): not measured"
            + (" (--quick)." if rr.replay_once_predicted < REPLAY_ONCE_LIMIT_S else " (over 20 s).")
        )
    per_batch = {
        w: (c["replay", w, k].median - c["replay", w, 0].median) / k
        for w, k in ((0, REPLAY_MAX_K), (WORKERS, REPLAY_WORKER_K))
    }
    lines.append(
        f"replay costs {per_batch[0] * 1e6:.0f} us per skipped batch with num_workers=0 and "
        f"{per_batch[WORKERS] * 1e6:.0f} us with {WORKERS} workers; with workers k={big:,} is "
        f"always extrapolated from k={REPLAY_WORKER_K:,}."
    )
    if rr.stateful_skipped:
        lines.append(f"StatefulDataLoader rows skipped: {rr.stateful_skipped}.")
    else:
        lines.append(
            "StatefulDataLoader states: a real state saved after 3 batches with its position "
            f"counters set to k (validated against a real state saved after {STATE_CHECK_K:,} "
            "batches; every resumed batch checked against the epoch order). Its resume "
            "fast-forwards the sampler one index at a time without fetching data: O(k), cheap "
            "per index."
        )
    lines += seeding_verdicts(samples)[0]
    if "fetch" in samples:
        lines.append(
            f"saving and restoring the global generators around a batch costs about "
            f"{save_restore(samples).median * 1e6:.0f} us per batch of {SAMPLE_BATCH} in the "
            "main process (getitems - seeding only); seeding costs "
            f"{(samples['fetch'].median - samples['direct'].median) * 1e6:.1f} us per sample, "
            f"of which the library seed calls themselves take "
            f"{(samples['raw'].median - samples['direct'].median) * 1e6:.1f} us."
        )
    for side in SIDES:
        target = THROUGHPUT_TARGETS[side]
        for workers in (WORKERS, 0):
            plain, hand = tp["plain", workers, side].median, tp["hand", workers, side].median
            text = (
                f"{side}x{side}, num_workers={workers}: the augmentation alone takes "
                f"{1e6 / plain:.0f} us per sample (plain DataLoader, wall time); the bare seed "
                f"calls bring that loader to {hand / plain:.2f}x"
            )
            if hand < plain:
                need = (1 / hand - 1 / plain) * 1e6 / (1 / target - 1)
                text += (
                    f", so a per-sample seeding scheme reaches {target}x only with an "
                    f"augmentation of more than about {need:.0f} us per sample."
                )
            else:
                text += " (the seed calls are lost in this run's noise)."
            lines.append(text)
    return lines, resume_ok, tp_ok


def samples_only(repeats: int, span: harness.Span, batches: int, profile: bool) -> int:
    """``--samples-only``: part 2's rows, its criteria and (when one fails) the breakdown."""
    samples = measure_samples(repeats)
    d, us = samples["direct"], 1e6
    lines = report_header(span.stop(), batches)
    lines += [
        harness.row(f"per sample: {name} vs `ds[i]`", samples[key], d, us, "us")
        for key, name in (
            ("getitem", "`SeededDataset(ds)[(0, i)]` (save / restore per call)"),
            ("getitems", f"`SeededDataset.__getitems__` over {SAMPLE_BATCH} (num_workers=0)"),
            ("fetch", "seeding only, no save / restore (what a worker does)"),
            ("raw", "the 3 library seed calls alone, seed = index"),
        )
        if key in samples
    ]
    lines += seeding_rows(samples)
    more, ok = seeding_verdicts(samples)
    lines += ["", *more]
    if profile or not ok:
        lines += seeding_breakdown()
    print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.arguments(__doc__, None, "rounds over every variant (default 5; --quick: 2)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"2 repeats, 30 throughput batches a round, no single replay of {KS[-1]:,} batches",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="always print the cProfiles (default: when a criterion is missed)",
    )
    parser.add_argument(
        "--samples-only",
        action="store_true",
        help="part 2 alone: per-sample seeding and the main process's save / restore",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=64,
        help="side of the stress case's synthetic images (crop: 7/8 of it), measured beside the "
        "ImageNet-sized 224 (default 64: the bare seed calls alone cost more than 5%%)",
    )
    args = parser.parse_args(argv)
    if args.image_size != SIDES[-1]:
        if args.image_size in SIDES or args.image_size < 8:
            parser.error(f"--image-size must be at least 8 and not {SIDES[0]}")
        THROUGHPUT_TARGETS[args.image_size] = THROUGHPUT_TARGETS.pop(SIDES[-1])
        SIDES[-1] = args.image_size
    repeats = max(1, args.repeats if args.repeats is not None else (2 if args.quick else 5))
    batches = 30 if args.quick else IMG_BATCHES
    if StatefulDataLoader is None:
        harness.progress(
            f"torchdata is not importable ({TORCHDATA_MISSING}): StatefulDataLoader rows "
            "skipped. `pip install torchdata` adds them, if it leaves torch alone (check with "
            f"`pip install torchdata 'torch=={torch.__version__.split('+')[0]}' --dry-run`)."
        )

    seedlock.seed_everything(0)
    span = harness.Span(repeats)
    if args.samples_only:
        return samples_only(repeats, span, batches, args.profile)
    rr = measure_resume(repeats, args.quick)
    samples = measure_samples(repeats)
    tp, identical = measure_throughput(repeats, batches)
    elastic = _elastic.measure(repeats)

    lines = report_header(span.stop(), batches)
    lines += report(rr, samples, tp)
    more, resume_ok, tp_ok = verdicts(rr, samples, tp, identical)
    lines += more
    elastic_lines, elastic_ok = _elastic.report(elastic)
    lines += [*elastic_lines, "", f"Elastic resume at step 100,000 within {_elastic.BAR}x of "
              f"step 0, every shape and order: {harness.passfail(elastic_ok)}"]  # fmt: skip
    if args.profile or not resume_ok:
        harness.progress("profiling the resume ...")
        lines += profile_resume()
    if args.profile or not tp_ok:
        harness.progress("profiling the loader ...")
        lines += profile_throughput(min(batches, 60), SIDES[-1])
        lines += seeding_breakdown()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
