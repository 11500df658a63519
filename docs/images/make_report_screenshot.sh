#!/usr/bin/env bash
# Regenerate docs/images/report.png: a real `seedlock check --report` of a small training script
# with a planted nondeterminism (a layer that adds noise from an unseeded numpy generator, which
# no seed reaches), rendered by headless Chromium.
#
# Needs: the project's virtual environment (.venv, with torch and numpy), chromium; pngquant
# and optipng shrink the PNG when present (Debian: apt-get install chromium pngquant optipng).
# Run from anywhere: bash docs/images/make_report_screenshot.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/docs/images/report.png"
seedlock="$root/.venv/bin/seedlock"
python="$root/.venv/bin/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat > "$work/train.py" <<'PY'
"""A small regression trained for a few steps; one layer adds noise no seed reaches."""
import numpy as np
import torch
from torch import nn

import seedlock


class Jitter(nn.Module):
    """The planted bug: a generator created inside forward, unseeded, differs on every run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rng = np.random.default_rng()
        return x + torch.from_numpy(rng.normal(0.0, 1e-6, x.shape).astype(np.float32))


seedlock.seed_everything(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), Jitter(),
                      nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(64, 16), torch.randn(64, 1)
for step in range(20):
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"final loss {loss.item():.6f}")
PY

cd "$work"
# Exit status 1: the runs differ, as planted.
"$seedlock" check --report report.html -- "$python" train.py || test $? -eq 1
test -f report.html

chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,1100 \
    --screenshot="$work/report.png" "file://$work/report.html" 2>/dev/null
if command -v pngquant >/dev/null; then
    pngquant --force --quality=70-95 --output "$work/small.png" "$work/report.png"
    mv "$work/small.png" "$work/report.png"
fi
if command -v optipng >/dev/null; then
    optipng -quiet -o2 "$work/report.png"
fi
cp "$work/report.png" "$out"
echo "wrote $out ($(stat -c %s "$out") bytes)"
