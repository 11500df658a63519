#!/usr/bin/env python
"""What capturing, restoring and storing the RNG state costs, side by side with the baselines.

    python benchmarks/bench_state.py [--repeats N] [--profile]

Measures, in one process with torch and NumPy imported:

1. ``seedlock.restore(seedlock.capture())``: the in-memory round trip. The acceptance criterion
   is that capture + restore takes under 0.5 ms on CPU. Also ``capture()`` and ``restore(state)``
   alone.
2. Lightning's ``_collect_rng_states()`` / ``_set_rng_states(states)`` for the same generators,
   when Lightning is importable.
3. A checkpoint round trip through memory: ``seedlock.state_dict()`` -> ``torch.save`` into a
   ``BytesIO`` -> ``torch.load(weights_only=True)`` -> ``seedlock.load_state_dict``, against the
   hand-written recipe (a dict of ``random.getstate()``, ``np.random.get_state()`` and
   ``torch.get_rng_state()``, ``torch.save`` -> ``torch.load(weights_only=False)`` -> set).
4. A round trip through a file: ``seedlock.save(path)`` + ``seedlock.load(path)`` (atomic,
   checksummed, two ``fsync`` calls) against ``torch.save`` / ``torch.load`` of the hand-written
   dict (no fsync), and against seedlock itself with ``os.fsync`` stubbed out, which isolates
   what durability costs.
5. The size of the stored state in each form.
6. The in-memory round trip with 10 registered generators (5 NumPy ``Generator``, 5
   ``torch.Generator``), against none registered and against a hand-written capture / set of
   the same 13 generators.
7. A hostile state file at the size cap (64 MiB, a valid header and checksum over a payload of
   some 22 million tiny JSON values): the time and the peak memory (tracemalloc) seedlock
   takes to refuse it, next to loading a normal state file.

Every variant is a (save, load) pair: before timing, each one saves, draws from every generator,
loads and draws again, and must see the same numbers. Each repeat times a block of calls of every
variant, in an order shuffled per repeat, with ``time.perf_counter_ns`` around every call.
When a round trip misses 0.5 ms (or with ``--profile``), a cProfile of it is printed below the
table.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import statistics
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script
import numpy as np
import torch

import seedlock

CRITERION_US = 500.0
N_GENERATORS = 10  # registered for the scaling rows: half NumPy, half torch
# Each block of calls lasts about this long (calls per block are calibrated per variant).
BLOCK_S = 0.12
MIN_CALLS, MAX_CALLS = 8, 2000
WARMUP_CALLS = 20

Token = Any
# (module name, [_collect_rng_states, _set_rng_states])
LightningFns = tuple[str, list[Callable[..., Any]]]


# --- the variants ---------------------------------------------------------------------------------


@dataclass
class Variant:
    """``save()`` returns a token, ``load(token)`` puts it back; ``part`` says what is timed."""

    save: Callable[[], Token]
    load: Callable[[Token], None]
    part: str = "both"  # "both", "save" or "load" (then one token, saved before the block)
    # Entered around every block and check (registers generators, stubs fsync).
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext

    def call(self) -> Callable[[int], object]:
        """One timed call, given its index: of both, of ``save`` or of ``load`` (then of a token
        saved now, so inside the context)."""
        save, load = self.save, self.load
        if self.part == "both":
            return lambda _: load(save())
        if self.part == "save":
            return lambda _: save()
        token = save()
        return lambda _: load(token)


def hand_get() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def hand_set(d: dict[str, Any]) -> None:
    random.setstate(d["python"])
    np.random.set_state(d["numpy"])
    torch.set_rng_state(d["torch"])


def to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def seedlock_mem_save() -> bytes:
    return to_bytes(seedlock.state_dict())


def seedlock_mem_load(data: bytes) -> None:
    seedlock.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))


def hand_mem_save() -> bytes:
    return to_bytes(hand_get())


def hand_mem_load(data: bytes) -> None:
    hand_set(torch.load(io.BytesIO(data), weights_only=False))


@dataclass
class Generators:
    """The extra generators of the scaling rows; registered with seedlock only inside ``active``."""

    numpy_gens: list[np.random.Generator] = field(
        default_factory=lambda: [np.random.default_rng(i) for i in range(N_GENERATORS // 2)]
    )
    torch_gens: list[torch.Generator] = field(
        default_factory=lambda: [
            torch.Generator().manual_seed(i) for i in range(N_GENERATORS - N_GENERATORS // 2)
        ]
    )

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        names = {f"np{i}": g for i, g in enumerate(self.numpy_gens)}
        names.update({f"torch{i}": g for i, g in enumerate(self.torch_gens)})
        for name, g in names.items():
            seedlock.register(g, name)
        try:
            yield
        finally:
            for name in names:
                seedlock.unregister(name)

    def hand_get(self) -> dict[str, Any]:
        d = hand_get()
        d["numpy_gens"] = [g.bit_generator.state for g in self.numpy_gens]
        d["torch_gens"] = [g.get_state() for g in self.torch_gens]
        return d

    def hand_set(self, d: dict[str, Any]) -> None:
        hand_set(d)
        for g, s in zip(self.numpy_gens, d["numpy_gens"], strict=True):
            g.bit_generator.state = s
        for g, s in zip(self.torch_gens, d["torch_gens"], strict=True):
            g.set_state(s)

    def draws(self) -> list[float]:
        return [float(g.random()) for g in self.numpy_gens] + [
            float(torch.rand(1, generator=g)) for g in self.torch_gens
        ]


@contextlib.contextmanager
def no_fsync() -> Iterator[None]:
    """``os.fsync`` as a no-op: what ``seedlock.save`` costs without its durability."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def make_variants(
    tmp: Path, gens: Generators, lightning: LightningFns | None
) -> dict[str, Variant]:
    s_path, h_path = tmp / "rng.state", tmp / "hand.pt"

    def file_save() -> Path:
        return seedlock.save(s_path)

    def hand_file_save() -> Path:
        torch.save(hand_get(), h_path)
        return h_path

    def hand_file_load(p: Path) -> None:
        hand_set(torch.load(p, weights_only=False))

    v: dict[str, Variant] = {
        "seedlock": Variant(seedlock.capture, seedlock.restore),
        "seedlock capture": Variant(seedlock.capture, seedlock.restore, part="save"),
        "seedlock restore": Variant(seedlock.capture, seedlock.restore, part="load"),
        "hand": Variant(hand_get, hand_set),
        "seedlock mem": Variant(seedlock_mem_save, seedlock_mem_load),
        "hand mem": Variant(hand_mem_save, hand_mem_load),
        "seedlock file": Variant(file_save, seedlock.load),
        "seedlock file nofsync": Variant(file_save, seedlock.load, context=no_fsync),
        "hand file": Variant(hand_file_save, hand_file_load),
        "seedlock 10 gens": Variant(seedlock.capture, seedlock.restore, context=gens.active),
        "hand 10 gens": Variant(gens.hand_get, gens.hand_set),
    }
    if lightning:
        _, (collect, set_) = lightning
        v["lightning"] = Variant(collect, set_)
        v["lightning collect"] = Variant(collect, set_, part="save")
        v["lightning set"] = Variant(collect, set_, part="load")
    return v


def draws(gens: Generators) -> list[float]:
    return [random.random(), float(np.random.rand()), float(torch.rand(1)), *gens.draws()]


def check(name: str, v: Variant, gens: Generators) -> None:
    """The variant must really put every generator back (registered ones where it covers them)."""
    with v.context():
        token = v.save()
        first = draws(gens)
        v.load(token)
        again = draws(gens)
    covered = 3 + (N_GENERATORS if "10 gens" in name else 0)
    if first[:covered] != again[:covered]:
        raise SystemExit(f"variant {name!r} does not restore the state: {first} != {again}")


# --- timing ---------------------------------------------------------------------------------------


def timed(v: Variant, calls: int) -> list[float]:
    """Seconds of each of ``calls`` calls of the variant, inside its context."""
    with v.context():
        return harness.time_calls(v.call(), calls)


def calibrated(variants: dict[str, Variant]) -> dict[str, int]:
    """Calls per block of each variant, for blocks of about BLOCK_S (a warm-up too)."""
    calls = {}
    for name, v in variants.items():
        with v.context():
            calls[name] = harness.calibrate(v.call(), BLOCK_S, MIN_CALLS, MAX_CALLS, WARMUP_CALLS)
    return calls


def measure(
    variants: dict[str, Variant], calls: dict[str, int], repeats: int
) -> dict[str, harness.Series]:
    res = {name: harness.Series() for name in variants}
    for names in harness.rounds(list(variants), repeats):
        for name in names:
            sample = timed(variants[name], calls[name])
            res[name].add(statistics.median(sample))
            res[name].calls.extend(sample)
    return res


# --- sizes ----------------------------------------------------------------------------------------


def sizes(tmp: Path, gens: Generators, lightning: LightningFns | None) -> dict[str, int]:
    out = {
        "seedlock file": seedlock.save(tmp / "size.state").stat().st_size,
        "seedlock state_dict": len(to_bytes(seedlock.state_dict())),
        "hand": len(to_bytes(hand_get())),
        "hand 10 gens": len(to_bytes(gens.hand_get())),
    }
    with gens.active():
        out["seedlock file 10 gens"] = seedlock.save(tmp / "size10.state").stat().st_size
        out["seedlock state_dict 10 gens"] = len(to_bytes(seedlock.state_dict()))
    if lightning:
        out["lightning"] = len(to_bytes(lightning[1][0]()))
    return out


# --- the report ---------------------------------------------------------------------------------


def time_row(measure: str, this: harness.Series, base: harness.Series, unit: str = "us") -> str:
    """Seconds in; us or ms out."""
    return harness.row(measure, this, base, 1e6 if unit == "us" else 1e3, unit)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def filesystem(path: Path) -> str:
    """The mount holding ``path`` and its type, from /proc/mounts (Linux), else 'unknown'."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return f"{kind} (mounted on {best})" if best else kind


def report_header(lightning_name: str | None, span: harness.Span, tmp: Path) -> list[str]:
    return harness.header(
        "seedlock RNG state capture / restore / storage benchmark",
        harness.environment(),
        span,
        f"captured backends: {', '.join(seedlock.capture().backends)}",
        legend=harness.cells("over repeats of the per-repeat median call"),
        versions=[harness.lightning_label(lightning_name)],
        machine=[f"temp files in {tmp.parent}, filesystem {filesystem(tmp)}"],
    )


def report(
    res: dict[str, harness.Series], size: dict[str, int], lightning_name: str | None
) -> list[str]:
    lines = [
        time_row(
            "`restore(capture())` vs hand-written get/set of the 3 globals",
            res["seedlock"],
            res["hand"],
        ),
    ]
    if lightning_name:
        lines += [
            time_row(
                "`restore(capture())` vs Lightning `_set_rng_states(_collect_rng_states())`",
                res["seedlock"],
                res["lightning"],
            ),
            time_row(
                "`capture()` vs Lightning `_collect_rng_states()`",
                res["seedlock capture"],
                res["lightning collect"],
            ),
            time_row(
                "`restore(state)` vs Lightning `_set_rng_states(states)`",
                res["seedlock restore"],
                res["lightning set"],
            ),
        ]
    lines += [
        time_row(
            "`state_dict()` -> torch.save(BytesIO) -> torch.load(weights_only=True) -> "
            "`load_state_dict` vs hand dict -> torch.save -> torch.load(weights_only=False) -> set",
            res["seedlock mem"],
            res["hand mem"],
        ),
        time_row(
            "`seedlock.save(path)` + `seedlock.load(path)` (2 fsyncs) vs torch.save / torch.load "
            "of the hand dict to a file (no fsync)",
            res["seedlock file"],
            res["hand file"],
            unit="ms",
        ),
        time_row(
            "`seedlock.save` + `load` vs the same with `os.fsync` stubbed out: added = fsync cost",
            res["seedlock file"],
            res["seedlock file nofsync"],
            unit="ms",
        ),
        time_row(
            "`seedlock.save` + `load` with `os.fsync` stubbed out vs torch.save / torch.load file",
            res["seedlock file nofsync"],
            res["hand file"],
            unit="ms",
        ),
        time_row(
            f"`restore(capture())` with {N_GENERATORS} registered generators (5 NumPy, 5 torch) "
            "vs none registered",
            res["seedlock 10 gens"],
            res["seedlock"],
        ),
        time_row(
            f"`restore(capture())` with {N_GENERATORS} registered generators vs hand-written "
            "get/set of the same 13 generators",
            res["seedlock 10 gens"],
            res["hand 10 gens"],
        ),
        harness.size_row(
            "size: `seedlock.save` file vs torch.save bytes of the hand dict",
            size["seedlock file"],
            size["hand"],
        ),
        harness.size_row(
            "size: torch.save bytes of `seedlock.state_dict()` vs of the hand dict",
            size["seedlock state_dict"],
            size["hand"],
        ),
    ]
    if lightning_name:
        lines.append(
            harness.size_row(
                "size: torch.save bytes of Lightning's `_collect_rng_states()` vs of the hand dict",
                size["lightning"],
                size["hand"],
            )
        )
    lines += [
        harness.size_row(
            f"size with {N_GENERATORS} registered generators: `seedlock.save` file vs "
            "torch.save of the hand dict of 13 generators",
            size["seedlock file 10 gens"],
            size["hand 10 gens"],
        ),
        harness.size_row(
            f"size with {N_GENERATORS} registered generators: torch.save of "
            "`state_dict()` vs of the hand dict of 13 generators",
            size["seedlock state_dict 10 gens"],
            size["hand 10 gens"],
        ),
    ]
    return lines


def verdict(res: dict[str, harness.Series], lightning_name: str | None) -> list[str]:
    us = 1e6
    s = res["seedlock"]
    lo, hi = s.iqr()
    calls = s.calls
    ok = s.median * us < CRITERION_US
    gens = res["seedlock 10 gens"].median
    extra = gens - s.median
    lines = [
        "",
        f"**capture + restore round trip: median {s.median * us:.1f} us** (p25 - p75 over "
        f"repeats {lo * us:.1f} - {hi * us:.1f}; over all {len(calls)} calls p25 "
        f"{percentile(calls, 25) * us:.1f}, p75 {percentile(calls, 75) * us:.1f}, p99 "
        f"{percentile(calls, 99) * us:.1f}, max {max(calls) * us:.1f} us); criterion < "
        f"{CRITERION_US:.0f} us (0.5 ms) on CPU: " + harness.passfail(ok),
        f"with {N_GENERATORS} registered generators the round trip takes {gens * us:.1f} us ("
        + ("under" if gens * us < CRITERION_US else "OVER")
        + f" {CRITERION_US:.0f} us): each registered generator adds about "
        f"{extra / N_GENERATORS * us:.1f} us ({N_GENERATORS} add {extra * us:.1f} us; the "
        "hand-written get/set of the same generators adds "
        f"{(res['hand 10 gens'].median - res['hand'].median) * us:.1f} us).",
        "`seedlock.save` flushes and fsyncs the file, renames it over the target and fsyncs the "
        "directory, so a crash leaves the old state or the new one; torch.save does none of "
        "that. The stubbed-fsync row shows how much of the file round trip is that durability "
        "(it depends on the disk and filesystem); the rest is JSON + base64 + SHA-256 + "
        "validation.",
    ]
    if not lightning_name:
        lines.append(harness.LIGHTNING_SKIPPED)
    return lines


def profile_round_trip(title: str, context: Callable[[], Any], calls: int = 1000) -> list[str]:
    """cProfile of ``calls`` x ``restore(capture())`` inside ``context``."""

    def round_trips() -> None:
        for _ in range(calls):
            seedlock.restore(seedlock.capture())

    with context():
        prof = harness.profile(round_trips)
    return prof.lines(f"{calls} x `restore(capture())` {title}")


def hostile_file(tmp: Path, repeats: int) -> list[str]:
    """Refusing a hostile file at the size cap, next to a normal load: time and peak memory."""
    from seedlock import store

    normal = seedlock.save(tmp / "normal.state")
    items = (store.MAX_STATE_BYTES - 4096) // 3
    bad = b"[" + b"{}," * (items - 1) + b"{}]"
    prefix = b"seedlock-rng-state format=2 length=%d\n" % len(bad)
    digest = hashlib.sha256(prefix + bad).hexdigest()
    head = json.dumps({"format": 2, "length": len(bad), "sha256": digest}).encode()
    hostile = tmp / "hostile.state"
    hostile.write_bytes(store.MAGIC + head + b"\n" + bad)

    def load(path: Path) -> str:
        try:
            seedlock.load(path)
        except seedlock.StateError as exc:
            return type(exc).__name__
        return "loaded"

    out = {}
    for name, path in (("normal", normal), ("hostile", hostile)):
        outcome = load(path)  # also a warm-up
        expected = "loaded" if name == "normal" else "CorruptStateError"
        if outcome != expected:
            raise SystemExit(f"the {name} file: {outcome}, expected {expected}")
        times = harness.time_calls(lambda _, p=path: load(p), repeats)
        tracemalloc.start()
        load(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[name] = (path.stat().st_size, statistics.median(times), peak)
    columns = ("file", "size", "load / refusal (median)", "peak memory (tracemalloc)")
    rows = ["", *harness.table_head(columns)]
    for name, what in (
        ("normal", "a normal state file, loaded"),
        ("hostile", f"a hostile file at the size cap ({items:,} JSON values), refused"),
    ):
        size, median, peak = out[name]
        rows.append(f"| {what} | {size:,} B | {median * 1e3:.2f} ms | {peak / 2**20:.2f} MiB |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.arguments(__doc__, 20)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="always print cProfiles of restore(capture()) (default: when over 0.5 ms)",
    )
    args = parser.parse_args(argv)
    repeats = max(1, args.repeats)

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    lightning = harness.find_lightning("_collect_rng_states", "_set_rng_states")
    if lightning is None:
        harness.progress(
            f"Lightning not importable ({', '.join(harness.LIGHTNING_MODULES)}): rows skipped"
        )
    gens = Generators()
    with tempfile.TemporaryDirectory(prefix="bench_state.") as d:
        tmp = Path(d)
        variants = make_variants(tmp, gens, lightning)
        harness.progress("checking that every variant restores the state ...")
        for name, v in variants.items():
            check(name, v, gens)
        harness.progress("warm-up and calibration ...")
        calls = calibrated(variants)
        how = (
            f", each a block of calls of every variant (~{BLOCK_S * 1e3:.0f} ms per block), "
            "variants in an order shuffled per repeat"
        )
        span = harness.Span(repeats, how)
        res = measure(variants, calls, repeats)
        span.stop()
        size = sizes(tmp, gens, lightning)
        lightning_name = lightning[0] if lightning else None
        lines = report_header(lightning_name, span, tmp)
        lines += report(res, size, lightning_name)
        lines += verdict(res, lightning_name)
        harness.progress("the hostile file at the size cap ...")
        lines += hostile_file(tmp, min(repeats, 5))
    # Profiles when asked, and whenever a round trip misses the criterion.
    if args.profile or res["seedlock"].median * 1e6 >= CRITERION_US:
        lines += profile_round_trip("(no generator registered)", contextlib.nullcontext)
    if args.profile or res["seedlock 10 gens"].median * 1e6 >= CRITERION_US:
        lines += profile_round_trip(f"with {N_GENERATORS} registered generators", gens.active)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
