#!/usr/bin/env bash
# The GPU suite and the GPU benchmark in one command, from the repository root:
#
#     bash tests/gpu/run.sh                 # logs to $OUT when it is set, else to a new temp dir
#
# 1. seedlock from this working tree: `pip install --no-deps --no-index --target` into a temp
#    dir (no network; the pytest plugin's entry point and the `seedlock` script come with it),
#    else `src/` on PYTHONPATH;
# 2. versions: Python, torch, CUDA, cuDNN, the GPU, the driver (nvidia-smi);
# 3. `pytest -m gpu tests/gpu` (with pytest-xdist when it is installed);
# 4. `benchmarks/bench_gpu.py`;
# 5. a summary: the pytest counts, notes the tests recorded, the benchmark's table.
#
# Every part has a time limit (together under 8 minutes); a part that fails or runs over is
# reported and the next one still runs. Exit status: 1 when tests failed (or pytest did not
# finish), 2 when only the benchmark failed, else 0. On a machine without CUDA every test is
# skipped and the benchmark prints one line saying so: exit 0.
#
# Environment: PYTHON (default python3), OUT (log folder), GPU_PYTEST_WORKERS (xdist workers,
# default 4; 0 turns xdist off).
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
PY="${PYTHON:-python3}"
WORKERS="${GPU_PYTEST_WORKERS:-4}"
LOG="${OUT:-}"
if [ -z "$LOG" ]; then
    LOG="$(mktemp -d "${TMPDIR:-/tmp}/seedlock-gpu.XXXXXX")"
fi
LOG="$LOG/seedlock-gpu"
mkdir -p "$LOG"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/seedlock-gpu-work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS

# Seconds allowed to each part (sum: 450 s).
T_INSTALL=45
T_SMI=15
T_PROBE=40
T_PYTEST=250
T_BENCH=100

limit() { # limit SECONDS CMD...: CMD with a time limit (TERM, then KILL 10 s later)
    local s="$1"
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout -k 10 "$s" "$@"
    else
        "$@"
    fi
}

say() { echo "[gpu-suite $((SECONDS - START))s] $*"; }

say "repository $ROOT; logs in $LOG"

# --- 1. seedlock from the working tree ------------------------------------------------------------
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
mkdir -p "$WORK/tree" "$WORK/site"
cp -R pyproject.toml README.md src "$WORK/tree/" # build outside the checkout (no build/, egg-info)
if limit "$T_INSTALL" "$PY" -m pip install -q --no-deps --no-index --no-build-isolation \
    --no-cache-dir --target "$WORK/site" "$WORK/tree" >"$LOG/install.log" 2>&1 &&
    PYTHONPATH="$WORK/site" "$PY" -c "import seedlock" >>"$LOG/install.log" 2>&1; then
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$WORK/site/bin:$PATH"
    HOW="installed from the working tree into $WORK/site (pytest plugin and console script on)"
else
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    HOW="pip install failed (see install.log): src/ on PYTHONPATH (no pytest plugin entry point)"
fi
say "seedlock: $HOW"
if ! "$PY" -c "import seedlock" 2>>"$LOG/install.log"; then
    say "seedlock cannot be imported:"
    tail -20 "$LOG/install.log"
fi

# --- 2. versions ----------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1; then
    limit "$T_SMI" nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        >"$LOG/nvidia-smi.txt" 2>&1
    say "nvidia-smi: $(tr '\n' ';' <"$LOG/nvidia-smi.txt")"
else
    say "nvidia-smi: not found"
fi
limit "$T_PROBE" "$PY" - >"$LOG/versions.txt" 2>&1 <<'EOF'
import platform, sys
print("python", platform.python_version(), sys.executable)
try:
    import torch
except ImportError as exc:
    print("torch: not importable:", exc)
    raise SystemExit(0)
import seedlock
print("seedlock", seedlock.__version__, seedlock.__file__)
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
for name in ("triton", "cupy", "lightning", "transformers", "numpy", "pytest", "xdist"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:  # a broken optional install is a fact to report, not a failure
        print(name, "not importable:", type(exc).__name__)
from importlib.metadata import entry_points
plugins = [e.value for e in entry_points(group="pytest11") if e.name == "seedlock"]
print("seedlock pytest plugin entry point:", plugins or "none")
EOF
sed 's/^/    /' "$LOG/versions.txt"

# --- 3. the GPU tests -----------------------------------------------------------------------------
XDIST=()
if [ "$WORKERS" != "0" ] && "$PY" -c "import xdist" >/dev/null 2>&1; then
    XDIST=(-n "$WORKERS")
fi
say "pytest -m gpu tests/gpu ${XDIST[*]} (limit ${T_PYTEST}s)"
limit "$T_PYTEST" "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider ${XDIST[@]+"${XDIST[@]}"} \
    -rfEsx --junitxml="$LOG/junit.xml" >"$LOG/pytest.log" 2>&1
PYTEST_RC=$?
tail -40 "$LOG/pytest.log"
case $PYTEST_RC in
    0) TESTS="passed" ;;
    124 | 137) TESTS="RAN OVER ${T_PYTEST}s (killed)" ;;
    5) TESTS="NO TESTS COLLECTED" ;;
    *) TESTS="FAILED (pytest exit $PYTEST_RC)" ;;
esac
say "tests: $TESTS"

# --- 4. the GPU benchmark -------------------------------------------------------------------------
say "benchmarks/bench_gpu.py (limit ${T_BENCH}s)"
limit "$T_BENCH" "$PY" benchmarks/bench_gpu.py >"$LOG/bench.md" 2>"$LOG/bench.err"
BENCH_RC=$?
case $BENCH_RC in
    0) BENCH="ok" ;;
    124 | 137) BENCH="RAN OVER ${T_BENCH}s (killed)" ;;
    *) BENCH="FAILED (exit $BENCH_RC)" ;;
esac
if [ "$BENCH_RC" != 0 ]; then
    tail -30 "$LOG/bench.err"
fi
say "benchmark: $BENCH"

# --- 5. summary -----------------------------------------------------------------------------------
{
    echo "==================== seedlock GPU suite: summary ===================="
    echo "seedlock: $HOW"
    grep -E '^(torch|gpu [0-9]|cuda available|seedlock pytest plugin)' "$LOG/versions.txt"
    [ -s "$LOG/nvidia-smi.txt" ] && echo "nvidia-smi: $(tr '\n' ';' <"$LOG/nvidia-smi.txt")"
    echo "tests: $TESTS"
    grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|deselected|xfailed|xpassed|warnings?)' \
        "$LOG/pytest.log" | tail -1
    grep -E '^(FAILED|ERROR|SKIPPED) ' "$LOG/pytest.log" | head -30
    if [ -s "$LOG/junit.xml" ]; then
        "$PY" - "$LOG/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    for prop in case.iter("property"):
        print(f"note ({case.get('name')}): {prop.get('value')}")
EOF
    fi
    echo "benchmark: $BENCH"
    cat "$LOG/bench.md"
    echo "logs: $LOG (install.log, versions.txt, pytest.log, junit.xml, bench.md, bench.err)"
    echo "total: $((SECONDS - START)) s"
} | tee "$LOG/summary.txt"

if [ "$PYTEST_RC" != 0 ]; then
    exit 1
fi
if [ "$BENCH_RC" != 0 ]; then
    exit 2
fi
exit 0
