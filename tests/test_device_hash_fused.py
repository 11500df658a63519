"""What the on-device fingerprint costs, counted on the CPU through the device path: host syncs
per traced event (at most one, fingerprints and summaries together), the largest temporary
tensor while hashing 64 MiB (a few MiB), and a value that does not depend on how the work is
split. Real torch ops, counted by a function mode and a dispatch mode; no timing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import seedlock
from seedlock import audit
from seedlock.audit import _device_hash, fingerprints
from seedlock.audit.fingerprints import Memo, Pending, fingerprint, fingerprint_summary, summary
from test_device_hash import reference_bytes as reference

MiB = 1 << 20


def raw(t: torch.Tensor) -> bytes:
    return bytes(t.contiguous().view(torch.uint8).reshape(-1).tolist())


class HostSyncs(TorchFunctionMode):
    """Counts what makes the host wait for a device: ``.cpu()`` / ``.to("cpu")`` (one each),
    and ``.item()``, ``.tolist()``, ``bool()``, ``float()``, ``int()`` of a tensor not already
    copied to the host by one of those. ``at`` says where each happened (``tracer.events``:
    the event being recorded)."""

    READS = frozenset(
        {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__complex__"}
    )

    def __init__(self, tracer: Any = None) -> None:
        super().__init__()
        self.tracer = tracer
        self.at: Counter[int] = Counter()
        self.hosted: list[torch.Tensor] = []  # kept alive: their ids stay theirs

    def _sync(self) -> None:
        self.at[self.tracer.events if self.tracer is not None else 0] += 1

    @property
    def total(self) -> int:
        return sum(self.at.values())

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        to_cpu = name == "to" and any(
            str(a) == "cpu" for a in [*args[1:], *(kwargs or {}).values()]
        )
        if name == "cpu" or to_cpu:
            self._sync()
            self.hosted.append(out)
        elif name in self.READS and not any(args[0] is t for t in self.hosted):
            self._sync()
        return out


class Allocations(TorchDispatchMode):
    """Every aten op that computes (views are not counted), and the size of every new storage
    an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.ops += not func.is_view
        given = {
            t.untyped_storage().data_ptr()
            for t in [*args, *(kwargs or {}).values()]
            if isinstance(t, torch.Tensor)
        }
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given:
                self.sizes.append(t.untyped_storage().nbytes())
        return out


@pytest.fixture
def device_path(monkeypatch):
    """CPU tensors take the on-device path (the same arithmetic an accelerator runs)."""
    monkeypatch.setattr(fingerprints, "_CPU_AS_DEVICE", True)


def event_tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(7, 5, generator=g), torch.randn(300, generator=g).half()[1:],
            torch.randint(-9, 9, (4, 4), generator=g), torch.randn(3, generator=g) > 0]  # fmt: skip


# -- host syncs ---------------------------------------------------------------------------------


def test_the_counter_counts_each_kind_of_host_sync():
    x = torch.ones(4)
    with HostSyncs() as syncs:
        x.sum().item()
        x.tolist()
        float(x.sum())
        x.cpu().tolist()  # one transfer, then a read of the host copy
        bool(x.any())
    assert syncs.total == 5


def test_an_event_of_many_tensors_costs_one_host_sync(device_path):
    ts = event_tensors()
    with HostSyncs() as syncs:
        fp, dtype, shape, stats = fingerprint_summary(ts)  # fingerprints and summaries
    assert syncs.total == 1
    prints = [fingerprint(t) for t in ts]
    assert fp == fingerprints.hash_bytes("".join(prints).encode())
    each = [summary(t) for t in ts]
    assert stats == (sum(s.sum for s in each), max(s.absmax for s in each),
                     sum(s.nans for s in each), sum(s.infs for s in each))  # fmt: skip
    assert (dtype, shape) == ("torch.float32", "(7, 5)")


def test_device_path_summaries_equal_the_cpu_summaries_bit_for_bit(monkeypatch):
    ts = [*event_tensors(), torch.tensor([1.0, float("nan"), -float("inf"), 2.5])]
    cpu = [summary(t) for t in ts]
    monkeypatch.setattr(fingerprints, "_CPU_AS_DEVICE", True)
    memo = Memo(defer=True)
    assert [memo.summary(t) for t in ts] == cpu
    assert cpu[-1] == (3.5, 2.5, 1, 1)


def test_fingerprints_without_summaries_wait_for_nothing_until_resolved(device_path):
    memo = Memo(defer=True)
    ts = event_tensors()
    with HostSyncs() as syncs:
        fp = memo.event(ts, summaries=False)[0]
        assert isinstance(fp, Pending) and fp.value is None
    assert syncs.total == 0
    with HostSyncs() as syncs:
        fingerprints.resolve([fp])
    assert syncs.total == 1
    assert str(fp) == fingerprints.fingerprint_all(ts)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(6, 16)
        self.b = torch.nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.a(x))
        return self.b(h), h  # an event of two tensors


@pytest.mark.parametrize("summaries", [True, False])
def test_a_traced_step_costs_at_most_one_host_sync_per_event(device_path, tmp_path, summaries):
    seedlock.seed_everything(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 6)
    tracer = audit.Tracer(tmp_path / "t.trace", model, optimizer=opt, summaries=summaries)
    with HostSyncs(tracer) as syncs, tracer:
        for _ in range(2):
            out, h = model(x)
            loss = out.pow(2).mean() + h.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert tracer.events >= 30
    during = {seq: n for seq, n in syncs.at.items() if seq < tracer.events}
    if summaries:
        assert max(during.values()) == 1  # each event: one transfer, fingerprints included
    else:
        assert during == {}  # fingerprints come back when the rows are written


# -- temporary memory ---------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 1, 2])  # aligned, and two views not on a 4-byte boundary
def test_hashing_64_mib_allocates_no_temporary_above_4_mib(start):
    data = torch.randint(0, 256, (64 * MiB + 3,), dtype=torch.uint8)
    view = data[start : start + 64 * MiB - start]
    with Allocations() as seen:
        sums = _device_hash.device_sums(view)
    assert seen.sizes and max(seen.sizes) <= 4 * MiB
    blocks = 64 * MiB // (4 * _device_hash.CHUNK)
    assert seen.ops <= (3 if start == 0 else 4) * blocks + 40  # per block: to, remainder_, mm
    assert torch.equal(sums, _device_hash.device_sums(view.clone()))  # aligned: the same


# -- the value: the definition, whatever the split -------------------------------------------


SPLITS = [(1024, 1 << 19), (2, 2), (4, 12), (16, 48), (8, 8)]  # (ROW, CHUNK)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 64, 130, 4099])
@pytest.mark.parametrize("start", [0, 1, 3])
def test_every_split_gives_the_definition(monkeypatch, n, start):
    g = torch.Generator().manual_seed(n)
    data = torch.randint(0, 256, (n + start,), dtype=torch.uint8, generator=g)[start:]
    expected = reference(raw(data))
    for row, chunk in SPLITS:
        monkeypatch.setattr(_device_hash, "ROW", row)
        monkeypatch.setattr(_device_hash, "CHUNK", chunk)
        assert _device_hash.device_hash(data) == expected, (row, chunk)


def test_a_large_tensor_hashes_the_same_in_blocks_of_any_size(monkeypatch):
    x = torch.randn(3 * (1 << 19) + 77, generator=torch.Generator().manual_seed(1))
    whole = _device_hash.device_hash(x)
    monkeypatch.setattr(_device_hash, "CHUNK", 1 << 12)
    assert _device_hash.device_hash(x) == whole
    monkeypatch.setattr(_device_hash, "ROW", 2048)
    monkeypatch.setattr(_device_hash, "CHUNK", 1 << 21)
    assert _device_hash.device_hash(x) == whole
    assert _device_hash.device_hash(x[: 1 << 10]) == reference(raw(x[: 1 << 10]))


def test_equal_bytes_hash_equal_and_one_bit_flip_anywhere_changes_it():
    g = torch.Generator().manual_seed(2)
    x = torch.randn((1 << 19) + 1000, generator=g)  # one full block, rows, a tail
    h = _device_hash.device_hash(x)
    assert _device_hash.device_hash(x.clone()) == h
    assert _device_hash.device_hash(x.view(torch.int32)) == h  # the same bytes
    words = x.numel()
    for position in [0, 1, 1023, 1024, 4097, (1 << 19) - 1, 1 << 19, words - 1]:
        for bit in (0, 17, 31):
            y = x.clone()
            y.view(torch.int32)[position] ^= torch.tensor(1 << bit).to(torch.int32)
            assert _device_hash.device_hash(y) != h, (position, bit)
    y = x.clone()
    y[[5, 2000]] = y[[2000, 5]]  # a swap
    assert _device_hash.device_hash(y) != h


def test_the_words_are_unsigned_a_negative_word_is_not_its_sign_extension():
    neg = torch.tensor([-1, -(2**31), 7], dtype=torch.int32)
    assert _device_hash.device_hash(neg) == reference(raw(neg))
