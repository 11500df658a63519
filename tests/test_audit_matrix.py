"""The audit's diagnosis on a matrix of planted causes of non-reproducibility.

Each script in ``tests/planted/`` plants one cause. It is checked twice: in process
(``seedlock.audit.check`` on the step its ``build()`` returns) and as a whole script
(``seedlock check --json -- python tests/planted/<case>.py``, and with ``--no-seed`` where the
hash seed is the point). :data:`MATRIX` holds what each verdict must say: reproducible or not,
the module, the event, the cause, the first differing aten op and the thread counts (cause c),
and the file and line where entropy entered (found through a ``# plant: ...`` comment in the
script, never a hard-coded number).

The scripts that must behave differently from one run to the next through the command line
(another thread count, one more random draw, a call counter) count their runs in a file under
``$PLANTED_COUNTER_DIR``; in process their step counts its own calls.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import seedlock
from seedlock import audit

PLANTED = Path(__file__).resolve().parent / "planted"
ANY: Any = object()  # an Expect field that is not checked


@dataclass(frozen=True)
class Expect:
    """What one verdict must say; a field left at ``ANY`` is not checked.

    ``module`` is an ``fnmatch`` pattern, ``cause`` the accepted letters (``"bc"``: b or c),
    ``op`` the first differing aten op of ``report.op`` (``None``: the re-run found none),
    ``threads`` ``report.op.threads``, and ``entropy`` ``(kind, marker, module)`` of the first
    implicated entropy source, its line being the one that ends with ``# <marker>``.
    """

    reproducible: bool
    module: Any = ANY
    event: Any = ANY
    cause: Any = ANY
    op: Any = ANY
    threads: Any = ANY
    entropy: Any = ANY


@dataclass(frozen=True)
class Case:
    """A planted script and the verdicts expected in process, by ``seedlock check`` (seeded),
    and by ``seedlock check --no-seed`` (``None``: not run)."""

    script: str
    in_process: Expect
    cli: Expect
    no_seed: Expect | None = None


def case(
    script: str, in_process: Expect, cli: Expect | None = None, no_seed: Expect | None = None
) -> Case:
    """A row of the matrix; the command line expects what the process does unless told."""
    return Case(script, in_process, in_process if cli is None else cli, no_seed)


SAME = Expect(reproducible=True)
DATA_FROM_NUMPY = Expect(False, "Net", "batch", "a",
                         entropy=("numpy", "plant: unseeded data", None))  # fmt: skip
NUMPY_IN_FORWARD = Expect(False, "Net.noise", "forward", "bc",
                          entropy=("numpy", "plant: numpy generator", "Net.noise"))  # fmt: skip
URANDOM_SEED = Expect(False, "Net.drop", "forward", "b",
                      entropy=("os.urandom", "plant: urandom seed", None))  # fmt: skip
CLOCK_INDEX = Expect(False, "Net", "batch", "a", entropy=("clock", "plant: clock seed", None))
# The step sets 1 (run a) or 2 (run b) threads and puts the count back: the report must show the
# counts the two runs computed with, not only the one each trace started with.
THREAD_SUM = Expect(False, "Net.total", "forward", "c", op="aten::sum", threads=("1", "2"))

MATRIX = [
    # The six causes tests/test_audit.py, test_audit_entropy.py, test_audit_ops.py and
    # test_cli_check.py plant, as whole scripts.
    case("unseeded_script", SAME, SAME,
         no_seed=Expect(False, "Net.fc1.weight", "param", "b")),
    case("unseeded_data", DATA_FROM_NUMPY),
    case("extra_draw", Expect(False, "Net.drop", "forward", "b")),
    case("drift", Expect(False, "Net.drift", "forward", "c", op="aten::add")),
    case("numpy_view", Expect(False, "Net.stamp", "forward", "c", op=None)),
    case("layer_order_set", SAME, SAME,
         no_seed=Expect(False, "Net.layers.*", "forward", "d")),
    # Entropy no seed reaches: the line it entered at.
    case("numpy_rng_in_forward", NUMPY_IN_FORWARD),
    case("urandom_seed", URANDOM_SEED),
    case("clock_index", CLOCK_INDEX),
    # The thread count: a full float32 sum differs with 1 and 2 threads; index_add_ on the CPU
    # does not (no false alarm).
    case("thread_sum", THREAD_SUM),
    case("index_add_threads", SAME),
    # A set of str in the data path: one interpreter, or one hash seed, agrees with itself.
    case("set_vocab_data", SAME, SAME, no_seed=Expect(False, "Net", "batch", "ad")),
]  # fmt: skip


def script_path(name: str) -> Path:
    return PLANTED / f"{name}.py"


def load(name: str) -> ModuleType:
    """Import planted script ``name`` afresh (its classes and its ``build``)."""
    path = script_path(name)
    spec = importlib.util.spec_from_file_location(f"planted_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(PLANTED))  # the scripts share tests/planted/_common.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PLANTED))
    return module


def line_of(script: Path, marker: str) -> int:
    """The one line of ``script`` that ends with the comment ``# <marker>``."""
    lines = script.read_text().splitlines()
    found = [i + 1 for i, text in enumerate(lines) if text.rstrip().endswith("# " + marker)]
    assert len(found) == 1, f"{script}: {len(found)} lines end with '# {marker}'"
    return found[0]


def wanted(expect: Expect, script: Path) -> dict[str, Any]:
    """The checked fields of ``expect``, the entropy marker turned into its file and line."""
    out: dict[str, Any] = {"reproducible": expect.reproducible}
    for key in ("module", "event", "cause", "op", "threads"):
        if getattr(expect, key) is not ANY:
            out[key] = getattr(expect, key)
    if expect.entropy is not ANY:
        kind, marker, module = expect.entropy
        out["entropy"] = (kind, str(script), line_of(script, marker), module)
    return out


def observed(data: dict[str, Any], expect: Expect, script: Path) -> dict[str, Any]:
    """The fields of ``data`` (a ``Report.to_dict()``) that ``expect`` checks; a value the
    expectation accepts (a module matching the pattern, one of the causes, the planted entropy
    source first among the implicated ones) reads as it."""
    d = data["divergence"] or {}
    op = data["op"]
    out: dict[str, Any] = {"reproducible": data["reproducible"]}
    if expect.module is not ANY:
        module = d.get("module")
        match = module is not None and fnmatch.fnmatchcase(module, expect.module)
        out["module"] = expect.module if match else module
    if expect.event is not ANY:
        out["event"] = d.get("event")
    if expect.cause is not ANY:
        cause = d.get("cause")
        out["cause"] = expect.cause if cause and cause in expect.cause else cause
    if expect.op is not ANY:
        out["op"] = op["op"] if op else "<no op finding>"
    if expect.threads is not ANY:
        out["threads"] = tuple(op["threads"]) if op and op["threads"] else None
    if expect.entropy is not ANY:
        # The planted source comes first: entropy torch draws for itself (sympy's symbols, a
        # compiler cache's uuid4) is not reported as the program's.
        places = [(s["kind"], s["file"], s["line"], s["module"]) for s in data["entropy"]
                  if s["implicated"]]  # fmt: skip
        planted = wanted(expect, script)["entropy"]
        out["entropy"] = planted if places[:1] == [planted] else places
    return out


# -- in process: seedlock.audit.check -----------------------------------------------------------


@pytest.mark.parametrize("row", MATRIX, ids=lambda row: row.script)
def test_check_in_process_names_the_planted_cause(row):
    planted = load(row.script)
    seedlock.seed_everything(0)
    model, opt, step = planted.build()
    report = audit.check(step, model=model, optimizer=opt)
    data = json.loads(json.dumps(report.to_dict(), default=str))  # as the CLI prints it
    expect = row.in_process
    script = script_path(row.script)
    assert observed(data, expect, script) == wanted(expect, script), str(report)


# -- through the command line: seedlock check --json ---------------------------------------------


def seedlock_check(folder: Path, script: Path, *flags: str) -> tuple[int, dict[str, Any], str]:
    """``seedlock check --json FLAGS -- python SCRIPT`` in ``folder`` (also the run counter's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    env.pop("PYTHONHASHSEED", None)
    env["PLANTED_COUNTER_DIR"] = str(folder)
    command = [sys.executable, "-m", "seedlock", "check", "--json", *flags, "--",
               sys.executable, str(script)]  # fmt: skip
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


CLI = [pytest.param(row.script, (), row.cli, id=row.script) for row in MATRIX] + [
    pytest.param(row.script, ("--no-seed",), row.no_seed, id=f"{row.script}-no-seed")
    for row in MATRIX
    if row.no_seed is not None
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "flags", "expect"), CLI)
def test_seedlock_check_names_the_planted_cause(name, flags, expect, tmp_path):
    script = script_path(name)
    code, found, err = seedlock_check(tmp_path, script, *flags)
    assert code == (0 if expect.reproducible else 1), found["text"] + "\n" + err
    assert found["reproducible"] is expect.reproducible
    assert set(found.get("traces", {})) == {"main.trace"}, found["text"]
    data = found["traces"]["main.trace"]
    assert observed(data, expect, script) == wanted(expect, script), found["text"]


# -- the facts the matrix stands on, on this machine ---------------------------------------------


def sum_with(threads: int, values: torch.Tensor) -> torch.Tensor:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return values.sum()
    finally:
        torch.set_num_threads(before)


def test_the_planted_sum_differs_with_one_and_two_threads():
    values = load("thread_sum").Total().values
    one, two = sum_with(1, values), sum_with(2, values)
    assert not torch.equal(one.view(torch.int32), two.view(torch.int32))
    assert torch.equal(sum_with(1, values), one)  # and each thread count agrees with itself


def test_index_add_with_duplicate_indices_gives_the_same_bits_with_one_and_two_threads():
    pool = load("index_add_threads").Pool()
    x = torch.zeros(16)
    results = []
    for threads in (1, 2, 1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results.append(pool(x).view(torch.int32))
        finally:
            torch.set_num_threads(before)
    assert int(torch.bincount(pool.index).min()) > 60_000  # every slot: many duplicates
    assert all(torch.equal(results[0], r) for r in results)


# -- a deterministic model is reproducible, every time -------------------------------------------


def test_a_deterministic_model_checked_twenty_times_is_reproducible_twenty_times():
    planted = load("deterministic")
    seedlock.seed_everything(0)
    model, opt, step = planted.build()
    reports = [audit.check(step, model=model, optimizer=opt) for _ in range(20)]
    assert [r.reproducible for r in reports] == [True] * 20, str(next(r for r in reports if not r))
    assert len({r.events for r in reports}) == 1 and reports[0].events > 10
    assert all(r.divergence is None and r.op is None and r.entropy == () for r in reports)


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
def test_seedlock_check_finds_a_deterministic_script_reproducible_every_time(attempt, tmp_path):
    code, found, err = seedlock_check(tmp_path, script_path("deterministic"), "--runs", "3")
    assert code == 0, found["text"] + "\n" + err
    assert found["headline"] == "reproducible: 3 runs agree"
    assert set(found.get("traces", {})) == {"main.trace"}, found["text"]
    trace = found["traces"]["main.trace"]
    assert trace["reproducible"] and trace["divergence"] is None and trace["events"] > 10
