"""``seedlock demo``: train one small model twice, in two processes, and compare the bits.

Each run is a fresh Python interpreter (``seedlock demo --child OUT.json``, a private mode) that:

1. fixes the ``str`` hash seed (:func:`seedlock.ensure_hash_seed` re-executes it if needed),
2. pins torch to one CPU thread,
3. calls ``seedlock.seed_everything(seed, deterministic=True)``,
4. trains an MLP 64-32-10 with dropout on scikit-learn's bundled ``load_digits`` images (or, without
   scikit-learn, on a synthetic set drawn from a seedlock-derived generator) with Adam and a
   ``DataLoader(shuffle=True, generator=seedlock.torch_generator("shuffle"))``,
5. writes JSON: every epoch's mean loss as ``float.hex()`` (exact bits), a SHA-256 of every
   parameter's raw bytes in ``named_parameters()`` order, the test accuracy, the seed report and
   the torch version.

The parent prints both runs side by side and a verdict. Separate processes, because that is what
re-running a script is: nothing (caches, thread pools, the hash seed, draws made at import time)
can leak from one run into the other.

Exit status: 0 bit-identical, 1 not bit-identical, 2 the demo could not run (torch is not
installed, or a run failed).

``--seed2 N`` gives the second run another seed, to see what the check reports when runs differ::

    $ seedlock demo --seed2 1
    ...
    NOT bit-identical: the loss differs from epoch 1 on, and the parameter hashes differ
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import torch

__all__ = ["add_arguments", "run"]

INSTALL_HINT = "pip install 'seedlock[demo]'"

_HIDDEN = 32
_DROPOUT = 0.2
_BATCH = 32
_LR = 0.01
_TEST_SIZE = 360  # load_digits has 1797 images: the last 360 are the test set
_N_SAMPLES = 1797
_N_FEATURES = 64
_N_CLASSES = 10


class RunResult(TypedDict):
    """What one child run writes (the ``runs`` items of ``--json``)."""

    seed: int
    data: str
    epochs: int
    loss_hex: list[str]
    params_sha256: str
    param_values: int
    accuracy: float
    correct: int
    test_size: int
    threads: int
    torch_version: str
    seed_report: dict[str, Any]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``seedlock demo``."""
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="root seed of the runs (default: 0)"
    )
    parser.add_argument(
        "--seed2",
        type=int,
        default=None,
        metavar="N",
        help="root seed of the second run (default: the same as --seed); "
        "a different one shows what the check reports when runs differ",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=5, metavar="N", help="epochs per run (default: 5)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the comparison as JSON instead of a table"
    )
    # Private: the mode each training process runs in.
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run ``seedlock demo``; returns the exit status (0 identical, 1 not, 2 could not run)."""
    from seedlock.backends.torch import TorchBackend

    if not TorchBackend().available():
        print(
            "seedlock demo trains a PyTorch model, and torch is not installed in this Python "
            f"({sys.executable}).\nInstall what the demo needs with: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    if args.child is not None:
        args.child.write_text(json.dumps(_train(args.seed, args.epochs)), encoding="utf-8")
        return 0

    seeds = (args.seed, args.seed if args.seed2 is None else args.seed2)
    with tempfile.TemporaryDirectory(prefix="seedlock-demo-") as tmp:
        runs = _launch(seeds, args.epochs, Path(tmp))
    if runs is None:
        return 2
    comparison = _compare(runs[0], runs[1])
    if args.json:
        print(json.dumps(comparison, indent=2))
    else:
        print(_render(runs[0], runs[1], comparison))
    return 0 if comparison["identical"] else 1


# -- parent ---------------------------------------------------------------------------------------


def _launch(seeds: Sequence[int], epochs: int, tmp: Path) -> list[RunResult] | None:
    """Train one run per seed, each in a new interpreter, all at once (each uses one thread).

    Returns the results in seed order, or ``None`` (after showing why) if a run failed.
    """
    print(f"training {len(seeds)} runs at once, each in a new Python process ...", file=sys.stderr)
    start = time.perf_counter()
    pending: dict[int, subprocess.Popen[bytes]] = {}
    for number, seed in enumerate(seeds, 1):
        command = [sys.executable, "-m", "seedlock.cli", "demo", "--child"]
        command += [str(tmp / f"run{number}.json"), "--seed", str(seed), "--epochs", str(epochs)]
        # A file, not a pipe, for stderr: a chatty child cannot block on a full pipe buffer.
        with (tmp / f"run{number}.err").open("wb") as err:
            pending[number] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    failed = False
    while pending:
        time.sleep(0.02)
        for number, proc in list(pending.items()):
            if proc.poll() is None:
                continue
            del pending[number]
            label = f"run {number}/{len(seeds)} (seed {seeds[number - 1]})"
            if proc.returncode == 0:
                print(f"{label} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
                continue
            failed = True
            print(f"{label} failed (exit status {proc.returncode}):", file=sys.stderr)
            print((tmp / f"run{number}.err").read_text(errors="replace").rstrip(), file=sys.stderr)
    if failed:
        return None
    results: list[RunResult] = [
        json.loads((tmp / f"run{number}.json").read_text(encoding="utf-8"))
        for number in range(1, len(seeds) + 1)
    ]
    return results


def _first_difference(a: list[str], b: list[str]) -> int | None:
    """The first epoch (from 1) whose loss bits differ, or ``None``."""
    for epoch, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            return epoch
    return None if len(a) == len(b) else min(len(a), len(b)) + 1


def _compare(first: RunResult, second: RunResult) -> dict[str, Any]:
    epoch = _first_difference(first["loss_hex"], second["loss_hex"])
    params_identical = first["params_sha256"] == second["params_sha256"]
    return {
        "identical": epoch is None and params_identical,
        "first_differing_epoch": epoch,
        "params_identical": params_identical,
        "seeds": [first["seed"], second["seed"]],
        "runs": [first, second],
    }


def _verdict(comparison: dict[str, Any]) -> str:
    if comparison["identical"]:
        return "bit-identical: yes (every epoch's loss and every parameter bit match)"
    epoch = comparison["first_differing_epoch"]
    losses = f"the loss differs from epoch {epoch} on" if epoch else "every epoch's loss matches"
    params = "match" if comparison["params_identical"] else "differ"
    return f"NOT bit-identical: {losses}, and the parameter hashes {params}"


def _render_report(report: dict[str, Any]) -> list[str]:
    """The seed report, short: what got which seed, the hash seed, the determinism switches."""
    seeded = [
        f"{e['backend']} {e['value']}" + ("" if e["status"] == "seeded" else f" ({e['status']})")
        for e in report["entries"]
        if e["value"] is not None
    ]
    absent = [f"{e['backend']} ({e['status']})" for e in report["entries"] if e["value"] is None]
    hs = report["hash_seed"]
    lines = [
        f"seed report of run 1: root seed {report['root']}, scheme {report['scheme']}",
        f"  seeded         {', '.join(seeded) or '-'}",
        f"  not seeded     {', '.join(absent) or '-'}",
        f"  hash seed      {'fixed ' + str(hs['value']) if hs['fixed'] else 'NOT fixed'}",
        f"  determinism    {len(report['determinism'])} switches changed",
    ]
    lines += [f"                 {change}" for change in report["determinism"]]
    return lines


def _render(first: RunResult, second: RunResult, comparison: dict[str, Any]) -> str:
    lines = [
        "seedlock demo: the same training run twice, each in a fresh Python process",
        f"  model          MLP {_N_FEATURES}-{_HIDDEN}-{_N_CLASSES} (ReLU, dropout {_DROPOUT}), "
        f"{first['param_values']:,} parameters; Adam lr {_LR}, batch {_BATCH}, "
        f"{first['epochs']} epochs",
        f"  data           {first['data']}",
        "  CPU threads    1 (float sums are split across threads, so other thread counts "
        "give other bits)",
        f"  torch          {first['torch_version']}",
        "",
        *_render_report(first["seed_report"]),
        "",
    ]
    head = ("epoch", f"run 1 loss (seed {first['seed']})", f"run 2 loss (seed {second['seed']})")
    rows = [(*head, "bits")]
    pairs = zip(first["loss_hex"], second["loss_hex"], strict=False)
    for epoch, (x, y) in enumerate(pairs, 1):
        rows.append((str(epoch), _loss(x), _loss(y), "identical" if x == y else "DIFFER"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines += [
        "  ".join([r[0].rjust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]), r[3]])
        for r in rows
    ]
    lines += [
        "",
        "parameter hash (sha256 of every parameter's bytes, in named_parameters() order)",
        f"  run 1  {first['params_sha256']}",
        f"  run 2  {second['params_sha256']}",
        f"test accuracy    run 1 {_accuracy(first)}, run 2 {_accuracy(second)}",
        "",
    ]
    if first["seed"] != second["seed"]:
        lines.append(
            f"(expected: the runs used different seeds, {first['seed']} and {second['seed']}; "
            "without --seed2 both use --seed)"
        )
    lines.append(_verdict(comparison))
    return "\n".join(lines)


def _loss(hex_value: str) -> str:
    return f"{float.fromhex(hex_value):.10f} {hex_value}"


def _accuracy(result: RunResult) -> str:
    return f"{100 * result['accuracy']:.2f} % ({result['correct']}/{result['test_size']})"


# -- child ----------------------------------------------------------------------------------------


def _train(seed: int, epochs: int) -> RunResult:
    """One run, in this (fresh) process; may re-execute it first to fix the hash seed."""
    from seedlock.seeding import ensure_hash_seed, seed_everything
    from seedlock.streams import torch_generator

    # Before anything heavy is imported: this may replace the process (os.execv) with one
    # started with PYTHONHASHSEED set, the only way to fix str hashing.
    ensure_hash_seed(seed)
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    # CPU kernels split float reductions (matmul, sum) across threads and add the partial sums
    # in an order that depends on the thread count, which torch sets from the number of cores:
    # with 1 thread the bits no longer depend on how many cores the machine has.
    torch.set_num_threads(1)
    report = seed_everything(seed, deterministic=True)

    features, labels, data = _dataset()
    train_x, train_y = features[:-_TEST_SIZE], labels[:-_TEST_SIZE]
    test_x, test_y = features[-_TEST_SIZE:], labels[-_TEST_SIZE:]
    loader = DataLoader(
        TensorDataset(train_x, train_y),
        batch_size=_BATCH,
        shuffle=True,
        # Without its own generator the loader draws its order from the global torch RNG, so
        # any other random call (an extra dropout, an augmentation) would reshuffle the data.
        generator=torch_generator("shuffle"),
    )
    # Initial weights and dropout masks come from the global torch RNG, seeded above.
    model = torch.nn.Sequential(
        torch.nn.Linear(_N_FEATURES, _HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Dropout(_DROPOUT),
        torch.nn.Linear(_HIDDEN, _N_CLASSES),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=_LR)
    loss_hex = []
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            torch.autograd.backward(loss)  # loss.backward(), which torch leaves untyped
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
        loss_hex.append((total / count).hex())

    model.eval()
    with torch.no_grad():
        correct = int((model(test_x).argmax(dim=1) == test_y).sum().item())
    digest, values = _parameter_hash(model)
    return RunResult(
        seed=seed,
        data=data,
        epochs=epochs,
        loss_hex=loss_hex,
        params_sha256=digest,
        param_values=values,
        accuracy=correct / len(test_y),
        correct=correct,
        test_size=len(test_y),
        threads=torch.get_num_threads(),
        torch_version=str(torch.__version__),
        seed_report=report.to_dict(),
    )


def _parameter_hash(model: torch.nn.Module) -> tuple[str, int]:
    """SHA-256 of every parameter's raw bytes in ``named_parameters()`` order, and the count."""
    digest = hashlib.sha256()
    values = 0
    for _, param in model.named_parameters():
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        values += param.numel()
    return digest.hexdigest(), values


def _dataset() -> tuple[torch.Tensor, torch.Tensor, str]:
    """Features (float32), labels (int64) and what the data is, in words."""
    import torch

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        pass
    else:
        digits = load_digits()
        features = torch.from_numpy(digits.data / 16.0).to(torch.float32)
        labels = torch.from_numpy(digits.target).to(torch.int64)
        data = (
            "scikit-learn load_digits, bundled 8x8 images of digits: "
            f"{len(labels) - _TEST_SIZE} train / {_TEST_SIZE} test"
        )
        return features, labels, data

    from seedlock.streams import torch_generator

    # A fixed data set, like load_digits: its root is 0 whatever --seed is, so only the
    # training randomness follows the seed.
    g = torch_generator("demo", "synthetic-data", root=0)
    centers = torch.randn(_N_CLASSES, _N_FEATURES, generator=g)
    labels = torch.randint(0, _N_CLASSES, (_N_SAMPLES,), generator=g)
    features = centers[labels] + 1.5 * torch.randn(_N_SAMPLES, _N_FEATURES, generator=g)
    data = (
        f"synthetic (scikit-learn is not installed): {_N_CLASSES} Gaussian classes of "
        f"{_N_FEATURES} features, {_N_SAMPLES - _TEST_SIZE} train / {_TEST_SIZE} test"
    )
    return features, labels, data
