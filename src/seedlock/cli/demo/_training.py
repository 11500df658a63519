"""The training program that ``seedlock demo`` starts in each of its child processes.

Each run is a fresh Python interpreter (``seedlock demo --child OUT.json``, a private mode) that:

1. fixes the ``str`` hash seed (:func:`seedlock.ensure_hash_seed` re-executes it if needed),
2. pins torch to one CPU thread,
3. calls ``seedlock.seed_everything(seed, deterministic=True)``,
4. trains an MLP 64-32-10 with dropout on scikit-learn's bundled ``load_digits`` images (or, without
   scikit-learn, on a synthetic set drawn from a seedlock-derived generator) with Adam, fed by
   ``seedlock.data.loader(shuffle=True)``. Every sample fetched is augmented with a brightness
   factor from ``np.random`` and gaussian noise from torch's global RNG; the loader seeds both
   from ``(root, epoch, index)`` right before the fetch (per-sample seeding),
5. writes JSON: every epoch's mean loss as ``float.hex()`` (exact bits), a SHA-256 of every
   parameter's raw bytes in ``named_parameters()`` order, the test accuracy, the seed report and
   the torch version.

``--interrupt PATH`` stops the run after about 60 % of its steps, in the middle of an epoch, and
saves ``{"model", "optimizer", "rng": seedlock.state_dict(), "loader": loader.state_dict(),
"step"}`` (and the loss summed so far) there with ``torch.save``; ``--resume PATH`` loads such a
checkpoint with ``torch.load(path, weights_only=True)``, restores the model, the optimizer, every
RNG and the loader's position, and finishes the training.

``--audit`` builds the same MLP with one extra layer, ``noise``, planted after the ReLU: it adds
gaussian noise drawn from an *unseeded* ``np.random.default_rng()`` (OS entropy, which no seed
reaches: a classic bug). :func:`seedlock.audit.check` runs one training step of it twice from the
same snapshot (model, optimizer, every RNG) and reports the first divergence. Then the same check
on the fixed layer, which draws from ``seedlock.numpy_rng("demo", "noise")`` (seeded from the root
seed, captured and restored with every other RNG).

The parent imports this module too, for its constants and result types: torch, NumPy,
scikit-learn and ``seedlock.data`` are imported inside the functions that use them, in the child
only, and only once the hash seed is fixed.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypedDict

import seedlock
import seedlock.audit

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    import torch

__all__ = [
    "AuditResult",
    "Interruption",
    "RunResult",
    "interrupt_step",
    "run_child",
]

HIDDEN = 32
DROPOUT = 0.2
BATCH = 32
LR = 0.01
N_FEATURES = 64
N_CLASSES = 10
BRIGHTNESS = (0.9, 1.1)  # each sample's pixels times U(0.9, 1.1), drawn from np.random
NOISE = 0.05  # plus N(0, 0.05) per pixel, drawn from torch's global RNG
RESUME_WORKERS = 2  # DataLoader workers of the interrupted and the resumed run
PLANTED = "noise"  # the audit's planted layer, inserted after the ReLU
PLANTED_NOISE = 0.1  # it adds N(0, 0.1) per activation
_TEST_SIZE = 360  # load_digits has 1797 images: the last 360 are the test set
_N_SAMPLES = 1797
_INTERRUPT_AT = 0.6  # the interrupted run stops after about this fraction of its steps


class RunResult(TypedDict):
    """What one child run writes (the ``runs`` items of ``--json``, and ``resume.run``)."""

    seed: int
    data: str
    epochs: int
    workers: int
    loss_hex: list[str]
    params_sha256: str
    param_values: int
    accuracy: float
    correct: int
    test_size: int
    threads: int
    torch_version: str
    seed_report: dict[str, Any]


class AuditResult(TypedDict):
    """What the audit run writes (``audit`` of ``--json``, without ``found`` and ``fix``)."""

    planted_module: str  # the planted layer's path in the trace, e.g. "Sequential.noise"
    planted: dict[str, Any]  # seedlock.audit.check's Report.to_dict(), trace paths left out
    planted_text: str  # str(Report)
    fixed: dict[str, Any]  # the same, with the layer drawing from seedlock.numpy_rng
    fixed_text: str


class Interruption(TypedDict):
    """What the interrupted run writes (``resume.interrupted`` of ``--json``)."""

    step: int  # optimizer steps taken before the checkpoint
    total_steps: int
    epoch: int  # the epoch in progress, from 1
    batch: int  # how many of its batches were trained on
    batches_per_epoch: int
    loader_state: dict[str, Any]  # loader.state_dict() as saved
    checkpoint_bytes: int
    workers: int


def run_child(args: argparse.Namespace) -> int:
    """``seedlock demo --child OUT.json``: one training run (or the audit run, with ``--audit``)
    in this process, its result written to ``OUT.json``; returns the exit status."""
    # Before anything heavy is imported: this may replace the process (os.execv) with one
    # started with PYTHONHASHSEED set, the only way to fix str hashing.
    seedlock.ensure_hash_seed(args.seed)
    result: RunResult | Interruption | AuditResult
    if args.audit:
        result = _audit(args.seed)
    else:
        result = _train(
            args.seed,
            args.epochs,
            workers=args.workers,
            interrupt=args.interrupt,
            resume=args.resume,
        )
    args.child.write_text(json.dumps(result), encoding="utf-8")
    return 0


class _AugmentedImages:
    """The training images; each one fetched comes with fresh random brightness and noise.

    Both are drawn from the *global* generators (``np.random``, torch's CPU RNG), which
    ``seedlock.data.loader`` seeds right before each sample with ``derive("data", epoch, index,
    ...)``: what a sample gets depends on ``(seed, epoch, index)`` only, not on which worker
    fetched it, how many there are, or what the process did before (a resume).
    A plain class at module level: DataLoader workers started by spawn or forkserver import it.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np  # heavy: samples are fetched in the child only
        import torch  # heavy: samples are fetched in the child only

        brightness = float(np.random.uniform(*BRIGHTNESS))
        noise = NOISE * torch.randn(N_FEATURES)
        return self.features[index] * brightness + noise, self.labels[index]


def interrupt_step(epochs: int, batches_per_epoch: int) -> int:
    """The step the interrupted run stops after: about 60 % of the run, never at an epoch's end
    (a resume mid-epoch is the hard case: it needs the loader's position inside the epoch)."""
    step = max(1, round(_INTERRUPT_AT * epochs * batches_per_epoch))
    if step % batches_per_epoch == 0:
        step -= batches_per_epoch // 2
    return step


def _train(
    seed: int,
    epochs: int,
    *,
    workers: int = 0,
    interrupt: Path | None = None,
    resume: Path | None = None,
) -> RunResult | Interruption:
    """One run, in this (fresh) process, its hash seed already fixed.

    With ``interrupt``, stop at :func:`interrupt_step`, save a checkpoint there and return
    where it stopped; with ``resume``, start from such a checkpoint.
    """
    import torch  # heavy: the child's only, after the hash seed

    import seedlock.data  # imports torch: the child's only, after the hash seed

    # CPU kernels split float reductions (matmul, sum) across threads and add the partial sums
    # in an order that depends on the thread count, which torch sets from the number of cores:
    # with 1 thread the bits no longer depend on how many cores the machine has.
    torch.set_num_threads(1)
    report = seedlock.seed_everything(seed, deterministic=True)

    features, labels, data = _dataset()
    train_x, train_y = features[:-_TEST_SIZE], labels[:-_TEST_SIZE]
    test_x, test_y = features[-_TEST_SIZE:], labels[-_TEST_SIZE:]
    # The shuffle order is a function of (seed, epoch); the loader draws nothing from the global
    # torch RNG, so the dropout masks below never depend on the data pipeline.
    loader = seedlock.data.loader(
        _AugmentedImages(train_x, train_y),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    # Initial weights and dropout masks come from the global torch RNG, seeded above.
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    step, loss_hex, total, count = 0, [], 0.0, 0
    if resume is not None:
        # weights_only=True: tensors, str, int, float and containers only, no pickled objects.
        checkpoint = torch.load(resume, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        # Last: building the model above drew its (discarded) initial weights from the RNG.
        seedlock.load_state_dict(checkpoint["rng"])
        step = checkpoint["step"]
        loss_hex = list(checkpoint["loss_hex"])
        total, count = checkpoint["loss_sum"], checkpoint["loss_count"]
    batches = len(loader)
    stop_at = None if interrupt is None else interrupt_step(epochs, batches)

    model.train()
    # loader.epoch is the epoch the next iter() starts or, after load_state_dict, resumes.
    while loader.epoch < epochs:
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            torch.autograd.backward(loss)  # loss.backward(), which torch leaves untyped
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
            step += 1
            if interrupt is not None and step == stop_at:
                position = loader.state_dict()
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": seedlock.state_dict(),
                        "loader": position,
                        "step": step,
                        # The loss so far, so the resumed run reports every epoch's loss.
                        "loss_hex": loss_hex,
                        "loss_sum": total,
                        "loss_count": count,
                    },
                    interrupt,
                )
                return Interruption(
                    step=step,
                    total_steps=epochs * batches,
                    epoch=position["epoch"] + 1,
                    batch=position["batches"],
                    batches_per_epoch=batches,
                    loader_state=position,
                    checkpoint_bytes=interrupt.stat().st_size,
                    workers=workers,
                )
        loss_hex.append((total / count).hex())
        total, count = 0.0, 0

    model.eval()
    with torch.no_grad():
        correct = int((model(test_x).argmax(dim=1) == test_y).sum().item())
    digest, values = _parameter_hash(model)
    return RunResult(
        seed=seed,
        data=data,
        epochs=epochs,
        workers=workers,
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


def _mlp(planted: torch.nn.Module | None = None) -> torch.nn.Sequential:
    """The demo's MLP (layers ``0`` - ``3``); with ``planted``, that module too, named
    ``noise``, right after the ReLU. Its initial weights come from the global torch RNG."""
    import torch  # heavy: the child's only, after the hash seed

    layers: list[tuple[str, torch.nn.Module]] = [
        ("0", torch.nn.Linear(N_FEATURES, HIDDEN)),
        ("1", torch.nn.ReLU()),
        ("2", torch.nn.Dropout(DROPOUT)),
        ("3", torch.nn.Linear(HIDDEN, N_CLASSES)),
    ]
    if planted is not None:
        layers.insert(2, (PLANTED, planted))
    return torch.nn.Sequential(OrderedDict(layers))


def _noise_layer(rng: Any) -> torch.nn.Module:
    """A layer that adds N(0, PLANTED_NOISE) to each activation, drawn from the NumPy
    ``Generator`` ``rng`` (the audit's planted layer, and its fix)."""
    import torch  # heavy: the child's only, after the hash seed

    class GaussianNoise(torch.nn.Module):
        def __init__(self, generator: Any) -> None:
            super().__init__()
            self.rng = generator

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            noise = self.rng.normal(0.0, PLANTED_NOISE, size=tuple(x.shape))
            return x + torch.from_numpy(noise).to(x.dtype)

    return GaussianNoise(rng)


def _audit(seed: int) -> AuditResult:
    """The audit run, in this (fresh) process: one training step of the MLP with the planted
    layer (an unseeded NumPy generator) checked by :func:`seedlock.audit.check`, then the same
    with the layer drawing from ``seedlock.numpy_rng("demo", "noise")``; the hash seed is
    already fixed."""
    import numpy as np  # heavy: the child's only, after the hash seed
    import torch  # heavy: the child's only, after the hash seed

    torch.set_num_threads(1)
    seedlock.seed_everything(seed, deterministic=True)
    features, labels, _ = _dataset()
    x, y = features[:BATCH], labels[:BATCH]  # one batch of training images

    def audited(rng: Any) -> tuple[dict[str, Any], str]:
        model = _mlp(_noise_layer(rng))
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        model.train()

        def step() -> None:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            torch.autograd.backward(loss)
            optimizer.step()

        report = seedlock.audit.check(step, model=model, optimizer=optimizer)
        found = report.to_dict()
        for key in ("a", "b"):  # the paths of the traces, deleted by now
            found.pop(key, None)
        return found, str(report)

    # The classic bug: a generator made without a seed draws from OS entropy, and seedlock
    # cannot capture or restore a generator it does not know about.
    planted, planted_text = audited(np.random.default_rng())
    # The fix: a named seedlock stream, seeded from the root seed and registered, so check()
    # (like seedlock.capture / restore and every checkpoint) puts it back.
    fixed, fixed_text = audited(seedlock.numpy_rng("demo", PLANTED))
    return AuditResult(
        planted_module=f"Sequential.{PLANTED}",
        planted=planted,
        planted_text=planted_text,
        fixed=fixed,
        fixed_text=fixed_text,
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
    import torch  # heavy: the child's only, after the hash seed

    try:
        # scikit-learn: heavy and optional; without it the data is synthetic.
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

    # A fixed data set, like load_digits: its root is 0 whatever --seed is, so only the
    # training randomness follows the seed.
    g = seedlock.torch_generator("demo", "synthetic-data", root=0)
    centers = torch.randn(N_CLASSES, N_FEATURES, generator=g)
    labels = torch.randint(0, N_CLASSES, (_N_SAMPLES,), generator=g)
    features = centers[labels] + 1.5 * torch.randn(_N_SAMPLES, N_FEATURES, generator=g)
    data = (
        f"synthetic (scikit-learn is not installed): {N_CLASSES} Gaussian classes of "
        f"{N_FEATURES} features, {_N_SAMPLES - _TEST_SIZE} train / {_TEST_SIZE} test"
    )
    return features, labels, data
