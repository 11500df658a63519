"""A small CNN + transformer (bf16 autocast, scaled_dot_product_attention with dropout, dropout,
CUDA-side augmentation) fed by ``seedlock.data.loader`` with 2 workers and pinned memory trains
50 steps bit-identically in two processes launched with ``seedlock run --deterministic``."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.gpu

STEPS = 50

TRAIN = """
import hashlib, os, random, sys
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import seedlock

STEPS = int(sys.argv[1])


class Images(torch.utils.data.Dataset):
    # 32x32 RGB images whose augmentation draws from torch, NumPy and random in the workers
    def __len__(self):
        return 512

    def __getitem__(self, i):
        base = torch.linspace(-1, 1, 32 * 32 * 3).reshape(3, 32, 32) * ((i % 7) - 3) / 3
        noise = torch.randn(3, 32, 32) * 0.3
        flip = np.random.rand() < 0.5
        image = base + noise + random.uniform(-0.1, 0.1)
        return (image.flip(-1) if flip else image), i % 10


class Block(nn.Module):
    def __init__(self, d=64, heads=4, p=0.1):
        super().__init__()
        self.heads, self.p = heads, p
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(p), nn.Linear(4 * d, d))

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(), nn.Dropout(0.1),
        )
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)      # (batch, 64 tokens, 64)
        return self.head(self.blocks(tokens).mean(1))


assert torch.are_deterministic_algorithms_enabled(), "launch with seedlock run --deterministic"
assert os.environ.get("CUBLAS_WORKSPACE_CONFIG"), "CUBLAS_WORKSPACE_CONFIG missing"
model = Net().cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
loader = seedlock.data.loader(Images(), batch_size=32, shuffle=True, num_workers=2,
                              pin_memory=True, persistent_workers=True)
step = 0
while step < STEPS:
    for images, labels in loader:
        images = images.cuda(non_blocking=True)
        labels = labels.cuda(non_blocking=True)
        images = images + 0.05 * torch.randn_like(images)   # augmentation on the GPU
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(images)
        # cross-entropy written out (one-hot): no nll_loss kernel, float32
        loss = -(F.log_softmax(logits.float(), 1) * F.one_hot(labels, 10)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        print(f"step {step} loss {loss.item().hex()}", flush=True)
        step += 1
        if step == STEPS:
            break
torch.cuda.synchronize()
h = hashlib.sha256()
for name, p in model.named_parameters():
    h.update(name.encode())
    h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
print("@@", h.hexdigest(), flush=True)
"""


def test_cnn_transformer_trains_bit_identically_twice_under_seedlock_run(
    child, script, deterministic_python
):
    path = script("train.py", TRAIN)
    runs = [child([*deterministic_python, str(path), str(STEPS)], timeout=180).check()
            for _ in range(2)]  # fmt: skip
    losses = [[ln for ln in r.stdout.splitlines() if ln.startswith("step ")] for r in runs]
    params = [r.tagged() for r in runs]
    assert len(losses[0]) == STEPS and len(params[0]) == 1, runs[0].stdout[-2000:]
    values = {float.fromhex(line.split()[-1]) for line in losses[0]}
    assert len(values) > 1 and all(math.isfinite(v) for v in values)  # it moved, no NaN
    for i, (a, b) in enumerate(zip(*losses, strict=True)):
        assert a == b, f"the losses part at step {i}: {a!r} vs {b!r}"
    assert params[0] == params[1], "the final parameters differ"
