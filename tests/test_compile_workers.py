"""torch.compile's helper processes under ``seedlock run``: counted, never recorded as the run's.

Inductor starts a compile worker (``python .../compile_worker/__main__.py --parent=PID ...``,
which forks a process pool) and, on the CPU, ``python -c`` probes of the vector ISA. They run
seedlock's bootstrap like every interpreter of the run; the manifest must still hold only the
program's process, and take ``seed.globals`` from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seedlock._bootstrap import helper_kind

SEEDLOCK = str(Path(sys.executable).parent / "seedlock")

COMPILES = textwrap.dedent(
    """
    import os, torch
    from torch._inductor.async_compile import AsyncCompile
    from torch._inductor.compile_worker.subproc_pool import SubprocPool

    AsyncCompile.warm_pool()
    AsyncCompile.wait_pool_ready(timeout=120)
    pool = AsyncCompile.process_pool()
    assert isinstance(pool, SubprocPool), type(pool)
    worker = pool.process.pid
    with open(f"/proc/{worker}/task/{worker}/children") as f:
        children = f.read().split()
    f = torch.compile(lambda x: (x * 2).sin().sum())
    print("@@", json.dumps({"pid": os.getpid(), "worker": worker, "children": children,
                            "value": f(torch.arange(8.0)).item(), "draw": torch.rand(1).item()}))
    """
).replace("import os, torch", "import json, os, torch")


@pytest.mark.slow
def test_compile_workers_are_not_processes_of_the_run(tmp_path):
    (tmp_path / "compiles.py").write_text(COMPILES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    env.pop("PYTHONHASHSEED", None)
    env.update(TORCHINDUCTOR_COMPILE_THREADS="2", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    manifest = tmp_path / "manifest.json"
    argv = [SEEDLOCK, "run", "--seed", "3", "--manifest", str(manifest), "--", sys.executable]
    proc = subprocess.run(
        [*argv, "compiles.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    ran = json.loads(next(line[3:] for line in proc.stdout.splitlines() if line[:3] == "@@ "))
    assert len(ran["children"]) == 2  # the compile worker really started its pool of two

    data = json.loads(manifest.read_text())
    assert [p["pid"] for p in data["processes"]] == [ran["pid"]]
    assert data["processes"][0]["argv"] == ["compiles.py"]
    seeded = data["processes"][0]["seeded"]
    assert seeded["torch"] == seeded["python"] == 3
    assert data["seed"]["globals"] == seeded
    assert data["helper_processes"]["torch.compile worker"] == 1


@pytest.mark.parametrize(
    ("orig_argv", "argv", "kind"),
    [
        (["python", "/v/site-packages/torch/_inductor/compile_worker/__main__.py", "--kind=fork"],
         ["/v/site-packages/torch/_inductor/compile_worker/__main__.py", "--kind=fork"],
         "torch.compile worker"),
        (["python", "-c", '\nimport sys\nif sys.platform != "linux":\n    import torch  # noqa: '
          'F401\nfrom ctypes import cdll\ncdll.LoadLibrary("/tmp/t/a.so")\n'], ["-c"],
         "torch.compile CPU probe"),
        (["python", "-c", "from multiprocessing.resource_tracker import main;main(5)"], ["-c"],
         "multiprocessing resource tracker"),
        (["python", "train.py"], ["train.py"], None),
        (["python", "-c", "import ctypes; ctypes.cdll.LoadLibrary('x.so'); print(1)"], ["-c"],
         None),
        (["python", "-c", "from ctypes import cdll\ncdll.LoadLibrary('x.so')\nimport random"],
         ["-c"], None),
        (["python", "pkg/compile_worker/__main__.py"], ["pkg/compile_worker/__main__.py"], None),
        (["python"], [""], None),
    ],
)  # fmt: skip
def test_helper_kind_names_library_helpers_only(orig_argv, argv, kind):
    assert helper_kind(orig_argv, argv) == kind
