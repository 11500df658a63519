#!/usr/bin/env python
"""What the determinism audit costs: fingerprint throughput, tracing overhead, trace size.

    python benchmarks/bench_audit.py [--repeats N] [--steps N] [--no-ops] [--threads N] [--profile]

Measures, side by side in one run, on the CPU:

1. ``seedlock.audit.fingerprint(t)`` of a 256 MB float32 tensor, in GB/s, against
   ``t.clone()`` (the acceptance criterion is at least 0.5x its throughput), against
   ``out.copy_(t)`` into a preallocated tensor (memory bandwidth without page faults), against
   ``hashlib.sha256`` of the same bytes (the floor of a SHA-256 fingerprint) and against
   ``torch.hash_tensor`` when this torch has it (an XOR reduction: fast, but blind to the order
   of the elements, so not a fingerprint).
2. One training step (forward, cross-entropy, backward, SGD step) of a small CNN (two 3x3
   convolutions with max pooling and a linear head, 32x32x3 images, batch 64) and of a small
   transformer (``torch.nn.TransformerEncoder``, 2 layers, d_model 128, 4 heads, sequence 64,
   batch 16, token embedding and a linear head), traced three ways, each against the same step
   untraced:

   - the first pass, ``seedlock.audit.trace(model, path, optimizer=opt, summaries=False)``
     (fingerprints only: what a run records to find the first divergence). The acceptance
     criterion is at most 1.1x.
   - the targeted re-run, ``summaries=True`` and ``ops_in=`` one module (the CNN's first
     convolution, the transformer's first encoder layer): what a re-run records once the first
     pass has named the module. For information.
   - ``ops=True`` (every aten op recorded too, with summaries), for information; not with
     ``--no-ops``.
3. Trace bytes per step: the SQLite file's size over the steps it holds, and events per step.

Each repeat runs every variant (a block of calls or steps), in an order shuffled per repeat with
a fixed seed, so machine noise hits every variant alike. Each workload is built twice (a deep
copy): a trace is opened on one copy only, so an untraced step of the other copy can run right
before every traced step, inside the same open trace (the first pass; a targeted or ``ops=True``
trace is opened around each traced step only, as its op recording sees every op of the
process). Wall and process CPU time are both taken. When a first-pass step misses 1.1x (or with
``--profile``), a cProfile of first-pass steps follows the table, with the share of the step
spent in each part of ``seedlock.audit``, the SQLite write of their rows timed alone, how many
bytes one step fingerprints and summarises, and ``fingerprint()`` / ``summary()`` timed alone.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _harness as harness  # benchmarks/ is on sys.path when run as a script
import torch
from torch import nn

from seedlock.audit import Tracer, fingerprint, summary, trace

FINGERPRINT_MB = 256
CLONE_CRITERION = 0.5  # fingerprint throughput at least this x clone's
TRACE_CRITERION = 1.1  # first-pass (summaries=False) step at most this x the untraced step
CALLS = 3  # fingerprint-part calls per variant and repeat (a repeat's value: their median)
OPS_STEPS = 1  # ops=True steps per repeat (each records every op of the process: slow)

# The modules behind the public names, for the internals looked at here: the hash in use and
# the functions a traced step spends its time in.
FINGERPRINTS = sys.modules[fingerprint.__module__]
TRACES = sys.modules[Tracer.__module__]
ALGORITHM = FINGERPRINTS.ALGORITHM


# --- part 1: fingerprint throughput ---------------------------------------------------------------


def fingerprint_variants(t: torch.Tensor) -> dict[str, Callable[[], object]]:
    out = torch.empty_like(t)
    data = memoryview(t.numpy())
    variants: dict[str, Callable[[], object]] = {
        "fingerprint": lambda: fingerprint(t),
        "clone": t.clone,
        "copy_": lambda: out.copy_(t),
        "sha256": lambda: hashlib.sha256(data).digest(),
    }
    if hasattr(torch, "hash_tensor"):
        variants["hash_tensor"] = lambda: torch.hash_tensor(t)
    return variants


def check_fingerprint(t: torch.Tensor) -> None:
    """The fingerprint is the configured hash (xxh3-128 with the xxhash package, else SHA-256)
    over a header and the tensor's bytes, read in place: check that, so the rows below compare
    like with like. The `sha256` row is the floor of the fallback without xxhash."""
    h = FINGERPRINTS._new_hash(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(memoryview(t.numpy()))
    if fingerprint(t) != str(h.hexdigest())[:32]:
        raise SystemExit("fingerprint() is not the hash of the header and the bytes: update this")


def measure_fingerprint(repeats: int) -> tuple[dict[str, harness.Series], int]:
    n = FINGERPRINT_MB * 2**20 // 4
    t = torch.randn(n, generator=torch.Generator().manual_seed(0))
    check_fingerprint(t)
    variants = fingerprint_variants(t)
    for f in variants.values():  # warm-up (first touch of the output buffer, hash code paths)
        f()
    res = {name: harness.Series() for name in variants}
    for names in harness.rounds(list(variants), repeats, label="fingerprint"):
        for name in names:
            f = variants[name]
            per_call = statistics.median(harness.time_calls(lambda _, f=f: f(), CALLS))
            res[name].add(t.nbytes / per_call / 1e9)
    return res, t.nbytes


# --- part 2: traced training steps ----------------------------------------------------------------


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class SmallTransformer(nn.Module):
    def __init__(self, vocab: int = 1000, d_model: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead=4, dim_feedforward=256, dropout=0.1, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


@dataclass
class Workload:
    """One model and its batch, twice: ``plain`` never traced, ``traced`` the copy traces are
    opened on (hooks go on its modules, parameters and optimizer only, so the two can alternate
    step by step inside one open trace)."""

    name: str
    plain: tuple[nn.Module, torch.optim.Optimizer]
    traced: tuple[nn.Module, torch.optim.Optimizer]
    x: torch.Tensor
    y: torch.Tensor
    ops_in: str  # the module a targeted re-run records the ops of
    # mode -> (file bytes, steps, events) of its last trace
    files: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    empty_bytes: int = 0  # a trace opened and closed with no step

    def per_step(self, mode: str) -> tuple[float, float, float]:
        """(file bytes / steps, (file bytes - empty trace) / steps, events / steps)."""
        size, steps, events = self.files[mode]
        return size / steps, (size - self.empty_bytes) / steps, events / steps

    def step(self, which: tuple[nn.Module, torch.optim.Optimizer]) -> None:
        model, optimizer = which
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(self.x), self.y)
        torch.autograd.backward(loss)
        optimizer.step()

    def timed_step(self, which: tuple[nn.Module, torch.optim.Optimizer]) -> tuple[float, float]:
        """(wall, process CPU) seconds of one step."""
        w0, c0 = time.perf_counter(), time.process_time()
        self.step(which)
        return time.perf_counter() - w0, time.process_time() - c0

    def trace(self, path: Path, mode: str = "first") -> Tracer:
        """A trace of the traced copy: ``first`` (summaries=False), ``targeted``
        (summaries=True, ops_in=self.ops_in) or ``ops`` (ops=True)."""
        model, optimizer = self.traced
        options = {
            "first": {"summaries": False},
            "targeted": {"summaries": True, "ops_in": self.ops_in},
            "ops": {"ops": True},
        }[mode]
        return trace(model, path, optimizer=optimizer, **options)  # type: ignore[arg-type]


def workload(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ops_in: str
) -> Workload:
    twin = copy.deepcopy(model)
    return Workload(
        name,
        (model, torch.optim.SGD(model.parameters(), lr=0.01)),
        (twin, torch.optim.SGD(twin.parameters(), lr=0.01)),
        x,
        y,
        ops_in,
    )


def workloads() -> list[Workload]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return [
        workload(
            "CNN",
            SmallCNN(),
            torch.randn(64, 3, 32, 32, generator=g),
            torch.randint(0, 10, (64,), generator=g),
            "SmallCNN.features.0",
        ),
        workload(
            "transformer",
            SmallTransformer(),
            torch.randint(0, 1000, (16, 64), generator=g),
            torch.randint(0, 10, (16,), generator=g),
            "SmallTransformer.encoder.layers.0",
        ),
    ]


Timings = dict[tuple[str, str], list[tuple[float, float]]]  # (workload, mode) -> (wall, cpu)


def alternate(w: Workload, mode: str, steps: int, tmp: Path, out: Timings) -> None:
    """``steps`` pairs of an untraced and a traced step, back to back.

    ``first``: one trace is open on the traced copy for all the pairs (its rows are buffered:
    a write every 2,000 events, none within the default 8 steps; the profile times one alone);
    ``targeted`` and ``ops``: a trace per pair, since their op recording sees every op of the
    process (the untraced step runs outside it). Opening and closing a trace is not timed; the
    untraced steps go to ``MODE plain``.
    """
    path = tmp / f"{w.name}-{mode}.trace"
    base = f"{mode} plain"
    events = 0
    with contextlib.ExitStack() as stack:
        tracer = stack.enter_context(w.trace(path)) if mode == "first" else None
        for _ in range(steps):
            out[w.name, base].append(w.timed_step(w.plain))
            if tracer is None:
                with w.trace(path, mode) as per_step:
                    out[w.name, mode].append(w.timed_step(w.traced))
                events = per_step.events
            else:
                out[w.name, mode].append(w.timed_step(w.traced))
    if tracer is not None:
        events = tracer.events
    w.files[mode] = (path.stat().st_size, steps if tracer is not None else 1, events)
    path.unlink()


def empty_trace_bytes(w: Workload, tmp: Path) -> int:
    """The size of a trace opened and closed with no step: schema and meta, the fixed part."""
    path = tmp / f"{w.name}-empty.trace"
    with w.trace(path):
        pass
    size = path.stat().st_size
    path.unlink()
    return size


def measure_steps(
    loads: list[Workload], repeats: int, steps: int, ops: bool, tmp: Path
) -> dict[tuple[str, str, str], harness.Series]:
    """(workload, mode, "wall" or "cpu") -> a Series of each repeat's mean seconds per step."""
    modes = ["first", "targeted"] + (["ops"] if ops else [])
    warm: Timings = defaultdict(list)
    for w in loads:  # warm-up: allocator, autograd, a trace of each kind
        w.empty_bytes = empty_trace_bytes(w, tmp)
        for mode in modes:
            alternate(w, mode, 1, tmp, warm)
    units = [(w, mode) for w in loads for mode in modes]
    res: dict[tuple[str, str, str], harness.Series] = defaultdict(harness.Series)
    for shuffled in harness.rounds(units, repeats, label="steps"):
        for w, mode in shuffled:
            out: Timings = defaultdict(list)
            alternate(w, mode, OPS_STEPS if mode == "ops" else steps, tmp, out)
            for (name, m), pairs in out.items():
                for clock, index in (("wall", 0), ("cpu", 1)):
                    res[name, m, clock].add(statistics.fmean(p[index] for p in pairs))
    return dict(res)


# --- profile --------------------------------------------------------------------------------------

# (label, module, function name) of the parts of seedlock.audit a traced step spends time in.
PARTS = (
    ("summary() (sum, max |x|, NaN / Inf counts; not in a first pass)", FINGERPRINTS, "summary"),
    ("fingerprint() (hash of the bytes)", FINGERPRINTS, "fingerprint"),
    ("rng_fingerprint() (torch RNG state)", FINGERPRINTS, "rng_fingerprint"),
    ("Tracer._pre() (forward pre-hook: RNG, inputs, grad hooks)", TRACES, "_pre"),
    ("Tracer.record() (every event)", TRACES, "record"),
    ("Tracer.flush() (SQLite inserts)", TRACES, "flush"),
)


def profile_steps(w: Workload, steps: int, plain_s: float, tmp: Path) -> list[str]:
    """cProfile of first-pass steps, with the share of each part of seedlock.audit."""
    path = tmp / f"{w.name}-profile.trace"

    def run() -> None:
        for _ in range(steps):
            w.step(w.traced)

    with w.trace(path) as tracer:
        prof = harness.profile(run)
        rows = len(tracer._rows)  # buffered: fewer than flush_every (2,000) in these steps
        t0 = time.perf_counter()
        tracer.flush()
        write_s = time.perf_counter() - t0
    path.unlink()
    lines = [
        "",
        f"Time inside each part of seedlock.audit over {steps} first-pass steps of the {w.name} "
        f"({prof.total / steps * 1e3:.0f} ms a step under cProfile; untraced "
        f"{plain_s * 1e3:.0f} ms):",
        "",
        "| part | per step | share of the traced step |",
        "| --- | --- | --- |",
    ]
    for label, module, func in PARTS:
        cum = prof.cumulative(module.__file__, func)
        lines.append(f"| {label} | {cum / steps * 1e3:.1f} ms | {100 * cum / prof.total:.0f} % |")
    lines += [
        "",
        f"Writing those steps' {rows} buffered rows to SQLite (`Tracer.flush()`, timed alone, "
        f"outside the steps): {write_s * 1e3:.1f} ms, {write_s / max(rows, 1) * 1e6:.1f} us a "
        f"row, {write_s / steps * 1e3:.2f} ms a step once amortised. A first pass writes every "
        "2,000 events, so the timed steps above (fewer events) include no write.",
    ]
    return [*lines, *prof.lines(f"{steps} first-pass steps of the {w.name}")]


def traffic(w: Workload, tmp: Path) -> list[str]:
    """How much one first-pass step fingerprints and summarises (counted by wrapping the two
    functions of the fingerprints module, which the tracer calls, for one step, then putting
    them back)."""
    module = FINGERPRINTS
    real_fp, real_summary = module.fingerprint, module.summary
    hashed: list[tuple[int, int, tuple[int, ...], int]] = []
    summarised: list[int] = []

    def counting_fp(t: torch.Tensor) -> str:
        hashed.append((t.data_ptr(), t._version, tuple(t.shape), t.nbytes))
        return real_fp(t)

    def counting_summary(t: torch.Tensor) -> object:
        summarised.append(t.nbytes)
        return real_summary(t)

    path = tmp / f"{w.name}-traffic.trace"
    with w.trace(path):
        w.step(w.traced)  # the first step also records the initial parameters: not counted
        module.fingerprint, module.summary = counting_fp, counting_summary
        try:
            w.step(w.traced)
        finally:
            module.fingerprint, module.summary = real_fp, real_summary
    path.unlink()
    repeats = len(hashed) - len({h[:3] for h in hashed})
    mb = 2**20
    return [
        f"One first-pass step of the {w.name} fingerprints {len(hashed)} tensors, "
        f"{sum(h[3] for h in hashed) / mb:.1f} MB ({repeats} of them with the storage, version "
        "and shape of one fingerprinted earlier in the step: most likely the same tensor again, "
        "e.g. a module's input that is the previous module's output), and summarises "
        f"{len(summarised)}, {sum(summarised) / mb:.1f} MB.",
    ]


def summary_breakdown(w: Workload) -> list[str]:
    """summary() and fingerprint() timed alone on the workload's largest forward output."""
    outputs: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda m, a, o: outputs.append(o) if torch.is_tensor(o) else None)
        for m in w.plain[0].modules()
    ]
    with torch.no_grad():
        w.plain[0](w.x)
    for h in handles:
        h.remove()
    t = max(outputs, key=lambda o: o.numel()).detach()

    def best(f: Callable[[], object], n: int = 7) -> float:
        return min(harness.time_calls(lambda _: f(), n))

    fp, sm = best(lambda: fingerprint(t)), best(lambda: summary(t))
    one = best(lambda: (t.sum(dtype=torch.float64), t.abs().max()))
    return [
        f"Best of 7, on the {w.name}'s largest forward output ({tuple(t.shape)} {t.dtype}, "
        f"{t.nbytes / 2**20:.1f} MB): `fingerprint()` {fp * 1e3:.2f} ms, `summary()` "
        f"{sm * 1e3:.2f} ms; `t.sum(dtype=torch.float64)` + `t.abs().max()` (no float64 copy, "
        f"no separate NaN / Inf passes) {one * 1e3:.2f} ms.",
    ]


# --- the report -----------------------------------------------------------------------------------


def report_header(steps: int, span: harness.Span, ops: bool) -> list[str]:
    hash_tensor = "present" if hasattr(torch, "hash_tensor") else "absent"
    return harness.header(
        "seedlock determinism audit benchmark",
        harness.environment(),
        span,
        f"fingerprint: {FINGERPRINT_MB} MB float32 CPU tensor, a repeat's value is the median of "
        f"{CALLS} calls; steps: {steps} per variant and repeat"
        + (f" ({OPS_STEPS} with ops=True)" if ops else "")
        + ", each untraced step right before a traced one; a repeat's value is the mean step "
        "(the trace opened before the clock, closed after)",
        legend=harness.cells(added="per repeat (throughput rows: time added per call)"),
        machine=[f"`torch.hash_tensor` {hash_tensor}"],
    )


Steps = dict[tuple[str, str, str], harness.Series]


def report(
    fp: dict[str, harness.Series], nbytes: int, st: Steps, loads: list[Workload]
) -> list[str]:
    mb = f"{nbytes / 2**20:.0f} MB float32"

    def vs(measure: str, base: str) -> str:
        """GB/s cells; *added*: the time added per call, in ms."""
        this = fp["fingerprint"]
        return harness.rate_row(
            measure, this, fp[base], "GB/s", amount=nbytes / 1e9, scale=1e3, added_unit="ms"
        )

    lines = [
        vs(f"`fingerprint(t)` vs `t.clone()`, {mb}", "clone"),
        vs("`fingerprint(t)` vs `out.copy_(t)` into a preallocated tensor", "copy_"),
        vs(
            f"`fingerprint(t)` ({ALGORITHM}) vs `hashlib.sha256` of the same bytes "
            "(the fallback without xxhash)",
            "sha256",
        ),
    ]
    if "hash_tensor" in fp:
        lines.append(
            vs("`fingerprint(t)` vs `torch.hash_tensor(t)` (XOR, order-blind)", "hash_tensor")
        )
    for w in loads:
        for mode, what in MODES:
            if (w.name, mode, "wall") in st:
                this = st[w.name, mode, "wall"]
                measure = f"{w.name} training step: {what.format(w=w)} vs untraced"
                lines.append(
                    harness.row(measure, this, st[w.name, f"{mode} plain", "wall"], 1e3, "ms")
                )
    for w in loads:
        steps = w.files["first"][1]
        lines.append(
            harness.size_row(
                f"{w.name} trace bytes per step: first pass (file size / steps, {steps} "
                f"step{'s' if steps > 1 else ''} in the file)",
                w.per_step("first")[0],
                None,
            )
        )
        for mode, what in MODES[1:]:
            if mode in w.files:
                lines.append(
                    harness.size_row(
                        f"{w.name} trace bytes per step: {what.format(w=w)} "
                        f"({w.files[mode][1]} step in the file) vs the first pass",
                        w.per_step(mode)[0],
                        w.per_step("first")[0],
                    )
                )
    return lines


# (mode, what it is in the rows) of the traced steps measured, the first pass first.
MODES = (
    ("first", "first pass (summaries=False)"),
    ("targeted", "targeted re-run (summaries=True, ops_in={w.ops_in})"),
    ("ops", "ops=True"),
)


def ratios(st: Steps, name: str, mode: str) -> tuple[float, harness.Series, float]:
    """(wall ratio of the medians, per-repeat wall ratios, CPU-time ratio) of ``mode`` against
    the untraced steps run next to it."""
    this, plain = st[name, mode, "wall"], st[name, f"{mode} plain", "wall"]
    cpu = st[name, mode, "cpu"].median / st[name, f"{mode} plain", "cpu"].median
    return this.median / plain.median, harness.paired(this, plain, lambda a, b: a / b), cpu


def verdicts(
    fp: dict[str, harness.Series], st: Steps, loads: list[Workload]
) -> tuple[list[str], list[Workload]]:
    ratio = fp["fingerprint"].median / fp["clone"].median
    per_rep = harness.paired(fp["fingerprint"], fp["clone"], lambda a, b: a / b)
    lines = [
        "",
        f"**fingerprint throughput: {fp['fingerprint'].median:.2f} GB/s, {ratio:.2f}x "
        f"`clone()`** (per-repeat ratios {min(per_rep.values):.2f} - {max(per_rep.values):.2f}); "
        f"criterion >= {CLONE_CRITERION}x: " + harness.passfail(ratio >= CLONE_CRITERION),
    ]
    missed = []
    for w in loads:
        r, per, cpu = ratios(st, w.name, "first")
        ok = r <= TRACE_CRITERION
        if not ok:
            missed.append(w)
        _, beyond, events = w.per_step("first")
        lines.append(
            f"**{w.name}: first pass (summaries=False) {r:.2f}x untraced** (median of per-repeat "
            f"ratios {per.median:.2f}x, range {min(per.values):.2f} - {max(per.values):.2f}; in "
            f"process CPU time {cpu:.2f}x); criterion <= {TRACE_CRITERION}x: "
            + harness.passfail(ok)
            + f". {events:.0f} events a step; beyond an empty trace ({w.empty_bytes:,} bytes) "
            f"{beyond:,.0f} bytes a step, {beyond / events:.0f} an event."
        )
    lines.append("")
    for w in loads:
        info = []
        for mode, what in MODES[1:]:
            if (w.name, mode, "wall") in st:
                r, per, cpu = ratios(st, w.name, mode)
                info.append(
                    f"{what.format(w=w)} {r:.2f}x (per-repeat {min(per.values):.2f} - "
                    f"{max(per.values):.2f}; CPU time {cpu:.2f}x), "
                    f"{w.per_step(mode)[2]:.0f} events a step"
                )
        lines.append(f"{w.name}, for information (no criterion): " + "; ".join(info) + ".")
    lines.append(
        "The bytes-per-step rows include the file's fixed part (schema, meta), spread over the "
        "steps of one trace; SQLite grows the file a 4,096-byte page at a time."
    )
    return lines, missed


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.arguments(__doc__, 5)
    parser.add_argument(
        "--steps",
        type=int,
        default=8,
        help="untraced + traced step pairs per workload and repeat (default 8: two were too "
        "few to steady a ratio on a shared 2-core machine; ops=True: 1)",
    )
    parser.add_argument("--no-ops", action="store_true", help="skip the ops=True rows")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads(N) first (default: torch's own choice, one per core); "
        "1 is steadier on a busy machine, where a parallel op waits for a descheduled thread",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="always print the cProfile of first-pass steps (default: when one misses 1.1x)",
    )
    args = parser.parse_args(argv)
    repeats, steps = max(1, args.repeats), max(1, args.steps)
    if args.threads:
        torch.set_num_threads(args.threads)

    span = harness.Span(repeats)
    fp, nbytes = measure_fingerprint(repeats)
    loads = workloads()
    with tempfile.TemporaryDirectory(prefix="bench_audit.") as d:
        tmp = Path(d)
        st = measure_steps(loads, repeats, steps, not args.no_ops, tmp)
        lines = report_header(steps, span.stop(), not args.no_ops)
        lines += report(fp, nbytes, st, loads)
        more, missed = verdicts(fp, st, loads)
        lines += more
        for w in loads if args.profile else missed:
            harness.progress(f"profiling first-pass steps of the {w.name} ...")
            lines += profile_steps(w, steps, st[w.name, "first plain", "wall"].median, tmp)
            lines += ["", *traffic(w, tmp), "", *summary_breakdown(w)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
