"""`seedlock run`, manifests, `seedlock diff` and `seedlock doctor`, driven as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SEEDLOCK = str(BIN / "seedlock")

DRAWS = textwrap.dedent(
    """
    import random, numpy as np, torch
    print(random.random(), np.random.rand(), torch.rand(1).item(),
          list({"alpha", "beta", "gamma", "delta", "epsilon"}))
    """
)


def seedlock(*args: str, cwd: Path, env: dict[str, str] | None = None, **kw):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    full_env.pop("PYTHONHASHSEED", None)
    full_env.update(env or {})
    return subprocess.run(
        [SEEDLOCK, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=180, **kw
    )


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "draws.py"
    path.write_text(DRAWS)
    return path


def test_same_seed_same_output_other_seed_other_output(tmp_path, script):
    runs = [seedlock("run", "--seed", "1", "--", sys.executable, str(script), cwd=tmp_path)
            for _ in range(2)]  # fmt: skip
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    other = seedlock("run", "--seed", "2", "--", sys.executable, str(script), cwd=tmp_path)
    assert other.stdout != runs[0].stdout


def test_seed_last_replays_the_previous_run(tmp_path, script):
    first = seedlock("run", "--seed", "random", "--", sys.executable, str(script), cwd=tmp_path)
    assert first.stderr.startswith("seedlock: seed ")
    replay = seedlock("run", "--seed", "last", "--", sys.executable, str(script), cwd=tmp_path)
    assert replay.stdout == first.stdout
    assert replay.stderr.splitlines()[0] == first.stderr.splitlines()[0]


def test_seed_last_without_a_previous_run_is_a_usage_error(tmp_path, script):
    proc = seedlock("run", "--seed", "last", "--", sys.executable, str(script), cwd=tmp_path)
    assert proc.returncode == 2
    assert "no previous run recorded" in proc.stderr


def test_missing_command_is_a_usage_error(tmp_path):
    proc = seedlock("run", "--seed", "1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "missing command" in proc.stderr


def test_python_dash_m_is_seeded(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(DRAWS)
    runs = [
        seedlock("run", "--seed", "5", "--", sys.executable, "-m", "pkg", cwd=tmp_path)
        for _ in range(2)
    ]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout


def test_an_existing_sitecustomize_still_runs(tmp_path, script):
    user = tmp_path / "usersite"
    user.mkdir()
    # The seedlock command itself is a Python program and runs it too: the marker tells them
    # apart, as only the child has SEEDLOCK_SEED.
    (user / "sitecustomize.py").write_text(
        "import os\nif 'SEEDLOCK_SEED' in os.environ: print('user sitecustomize ran')\n"
    )
    proc = seedlock(
        "run", "--seed", "1", "--", sys.executable, str(script),
        cwd=tmp_path, env={"PYTHONPATH": str(user)},
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[0] == "user sitecustomize ran"
    reference = seedlock("run", "--seed", "1", "--", sys.executable, str(script), cwd=tmp_path)
    assert lines[1:] == reference.stdout.splitlines()


def test_a_non_python_child_gets_the_environment(tmp_path):
    proc = seedlock(
        "run", "--seed", "str:exp", "--deterministic", "--",
        "sh", "-c", "echo $SEEDLOCK_SEED $CUBLAS_WORKSPACE_CONFIG", cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout.split() == ["str:exp", ":4096:8"]


def test_deterministic_switches_the_profile_on_inside_the_child(tmp_path):
    code = "import torch; print(torch.are_deterministic_algorithms_enabled())"
    on = seedlock("run", "--seed", "1", "--deterministic", "--", sys.executable, "-c", code,
                  cwd=tmp_path)  # fmt: skip
    off = seedlock("run", "--seed", "1", "--", sys.executable, "-c", code, cwd=tmp_path)
    assert (on.stdout.strip(), off.stdout.strip()) == ("True", "False")


@pytest.mark.parametrize("code", [0, 1, 3])
def test_exit_codes_pass_through(tmp_path, code):
    proc = seedlock("run", "--seed", "1", "--", sys.executable, "-c", f"raise SystemExit({code})",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == code


def test_output_passes_through_unchanged(tmp_path):
    code = "import sys; sys.stdout.write('out\\n'); sys.stderr.write('err\\n')"
    proc = seedlock("run", "-q", "--seed", "1", "--", sys.executable, "-c", code, cwd=tmp_path)
    assert (proc.stdout, proc.stderr) == ("out\n", "err\n")


def test_death_by_signal_passes_through(tmp_path):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    proc = seedlock("run", "--seed", "1", "--", sys.executable, "-c", code, cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL


def start_sleeper(tmp_path: Path) -> subprocess.Popen[str]:
    code = "import time; print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        [SEEDLOCK, "run", "-q", "--seed", "1", "--", sys.executable, "-c", code],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_sigterm_is_forwarded_to_the_child(tmp_path):
    proc = start_sleeper(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM


def test_ctrl_c_reaches_the_child_and_its_status_comes_back(tmp_path):
    proc = start_sleeper(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
    assert proc.wait(timeout=30) == -signal.SIGINT


TORCHRUN = textwrap.dedent(
    """
    import os, random, torch
    # One file per rank: two ranks printing to one pipe can interleave their lines.
    with open(f"rank{os.environ['RANK']}.txt", "w") as f:
        f.write(f"{random.random()} {torch.rand(1).item()}")
    """
)


@pytest.mark.slow
def test_torchrun_ranks_are_all_seeded(tmp_path):
    (tmp_path / "ddp.py").write_text(TORCHRUN)
    proc = seedlock(
        "run", "--seed", "7", "--manifest", "m.json", "--",
        str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "ddp.py", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    reference = subprocess.run(
        [sys.executable, "-c", "import random, torch; random.seed(7); torch.manual_seed(7);"
         "print(random.random(), torch.rand(1).item())"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(r == reference for r in ranks)
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert sorted(p["rank"] for p in manifest["processes"] if p["rank"] is not None) == ["0", "1"]


def test_manifest_validates_against_its_schema(tmp_path, script):
    jsonschema = pytest.importorskip("jsonschema")
    proc = seedlock("run", "--seed", "3", "--deterministic", "--manifest", "run.json", "--",
                    sys.executable, str(script), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "run.json").read_text())
    schema_path = Path(__file__).resolve().parents[1] / "src/seedlock/manifest.schema.json"
    jsonschema.validate(manifest, json.loads(schema_path.read_text()))
    assert manifest["seed"] == {
        "root": "3",
        "deterministic": True,
        "hash_seed": "3",
        "globals": {"python": 3, "numpy": 3, "torch": 3},
    }
    (process,) = manifest["processes"]
    assert process["determinism"]["deterministic_algorithms"] is True
    assert process["torch"]["version"] == __import__("torch").__version__
    assert "numpy" in manifest["packages"]


def test_diff_of_identical_runs_exits_0_and_a_torch_version_change_exits_1(tmp_path, script):
    for name in ("a.json", "b.json"):
        seedlock("run", "-q", "--seed", "3", "--manifest", name, "--", sys.executable,
                 str(script), cwd=tmp_path)  # fmt: skip
    same = seedlock("diff", "a.json", "b.json", cwd=tmp_path)
    assert same.returncode == 0, same.stdout
    assert "no high-risk difference" in same.stdout
    changed = json.loads((tmp_path / "b.json").read_text())
    changed["processes"][0]["torch"]["version"] = "2.99.0"
    changed["packages"]["torch"] = "2.99.0"
    (tmp_path / "c.json").write_text(json.dumps(changed))
    proc = seedlock("diff", "a.json", "c.json", cwd=tmp_path)
    assert proc.returncode == 1
    assert "high risk" in proc.stdout
    assert "processes.0.torch.version" in proc.stdout
    as_json = json.loads(seedlock("diff", "--json", "a.json", "c.json", cwd=tmp_path).stdout)
    risks = {d["key"]: d["risk"] for d in as_json["differences"]}
    assert risks["packages.torch"] == "high"
    assert risks["processes.0.torch.version"] == "high"


def test_diff_of_a_file_that_is_not_a_manifest_is_a_usage_error(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    proc = seedlock("diff", "x.json", "x.json", cwd=tmp_path)
    assert proc.returncode == 2
    assert "not a seedlock manifest" in proc.stderr


def test_manifest_command_prints_the_environment(tmp_path):
    data = json.loads(seedlock("manifest", cwd=tmp_path).stdout)
    assert data["schema"] == "seedlock.manifest"
    assert data["python"]["executable"]


def test_doctor_reports_a_random_and_a_fixed_hash_seed(tmp_path):
    def hash_check(env):
        found = json.loads(seedlock("doctor", "--json", cwd=tmp_path, env=env).stdout)
        return next(f for f in found if f["check"] == "hash-seed")

    assert hash_check({})["severity"] == "medium"
    fixed = hash_check({"PYTHONHASHSEED": "123"})
    assert fixed["severity"] == "ok"
    assert "PYTHONHASHSEED=123" in fixed["summary"]


def test_doctor_under_seedlock_run_sees_the_fixed_hash_seed(tmp_path):
    proc = seedlock("run", "-q", "--seed", "9", "--", SEEDLOCK, "doctor", cwd=tmp_path)
    assert "[    ok] hash-seed: str hashing is fixed (PYTHONHASHSEED=9)" in proc.stdout


def test_default_manifest_lands_in_the_project_cache(tmp_path):
    proc = seedlock("run", "--seed", "1", "--", sys.executable, "-c", "pass", cwd=tmp_path)
    assert proc.returncode == 0
    (manifest,) = (tmp_path / ".seedlock" / "runs").glob("*-seed1.json")
    assert json.loads(manifest.read_text())["command"]["exit_code"] == 0
    assert (tmp_path / ".seedlock" / ".gitignore").read_text().endswith("*\n")


def test_the_seeded_child_matches_the_classic_recipe(tmp_path, script):
    # torch imports random and numpy on its way: the deferred seeding must wait for it to finish,
    # then seed all three exactly as random.seed(7); np.random.seed(7); torch.manual_seed(7).
    proc = seedlock("run", "-q", "--seed", "7", "--no-manifest", "--", sys.executable,
                    str(script), cwd=tmp_path, env={"PYTHONHASHSEED": "0"})  # fmt: skip
    recipe = subprocess.run(
        [sys.executable, "-c", "import random, numpy as np, torch\n"
         "random.seed(7); np.random.seed(7); torch.manual_seed(7)\n" + DRAWS],
        capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "7"}, check=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == recipe.stdout


def test_a_seed_everything_in_the_program_supersedes_the_run_seed(tmp_path):
    # seedlock's own modules import random (the hook fires inside their import), and the
    # program's seed_everything(5) must replace the still-pending seeding of numpy and torch.
    code = (
        "import seedlock; seedlock.seed_everything(5)\n"
        "import random, numpy as np, torch\n"
        "print(random.random(), np.random.rand(), torch.rand(1).item())"
    )
    proc = seedlock("run", "-q", "--seed", "1", "--no-manifest", "--", sys.executable, "-c",
                    code, cwd=tmp_path)  # fmt: skip
    recipe = run_recipe(5, "print(random.random(), np.random.rand(), torch.rand(1).item())")
    assert proc.returncode == 0, proc.stderr
    assert "NOT seeded" not in proc.stderr
    assert proc.stdout == recipe


def test_a_library_imported_inside_seedlock_is_seeded_with_the_run_seed(tmp_path):
    code = "import seedlock.streams\nimport random\nprint(random.random())"
    proc = seedlock("run", "-q", "--seed", "1", "--no-manifest", "--", sys.executable, "-c",
                    code, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == run_recipe(1, "print(random.random())")


def run_recipe(seed: int, body: str) -> str:
    head = f"import random, numpy as np, torch\nrandom.seed({seed}); np.random.seed({seed}); "
    code = head + f"torch.manual_seed({seed})\n" + body
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_a_program_that_imports_no_rng_library_never_loads_the_seeding_machinery(tmp_path):
    code = "import sys; print('seedlock.seeding' in sys.modules, 'typing' in sys.modules)"
    proc = seedlock("run", "-q", "--seed", "1", "--manifest", "m.json", "--", sys.executable,
                    "-c", code, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["seed"]["globals"] == {}  # nothing was imported, so nothing was seeded
    (process,) = manifest["processes"]
    assert process["hash_seed"] == "1"


def test_the_deferred_seeding_hooks_every_builtin_backend_with_a_global_generator():
    from seedlock import backends
    from seedlock._bootstrap import LIBRARIES

    builtin = [b for b in backends.all_backends() if b.__module__.startswith("seedlock.")]
    assert sorted(LIBRARIES) == sorted(b.module for b in builtin if b.seed_bits)


def test_a_child_killed_by_sigpipe_is_recorded_as_such(tmp_path):
    # posix_spawn must give the child SIGPIPE's default action (Python ignores it): `yes | head`
    # has to stop `yes` with SIGPIPE, not with a write error.
    proc = subprocess.Popen(
        [SEEDLOCK, "run", "-q", "--manifest", "m.json", "--", "yes"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.read(4)
    proc.stdout.close()
    assert proc.wait(timeout=60) == -signal.SIGPIPE
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["command"]["signal"] == "SIGPIPE"


@pytest.mark.parametrize(
    "argv",
    [
        ["--", "python", "x.py"],
        ["python", "x.py", "--seed", "3"],
        ["--seed", "3", "--deterministic", "-q", "--", "python", "-c", "pass"],
        ["--seed=-5", "--manifest=out/m.json", "--no-manifest", "--quiet", "cmd"],
        ["--seed", "-5", "--manifest", "m.json", "cmd", "--", "x"],
        ["--deterministic"],
        [],
    ],
)
def test_the_hand_parser_agrees_with_argparse(argv):
    import argparse

    from seedlock.cli import run

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    expected = vars(parser.parse_args(argv))
    expected["command"] = run.command_of(argparse.Namespace(**expected))
    fast = run.parse(argv)
    assert fast is not None
    assert {**vars(fast), "command": run.command_of(fast)} == expected


@pytest.mark.parametrize(
    "argv", [["--help"], ["--det", "cmd"], ["--seed"], ["--seed", "--deterministic"], ["-x"]]
)
def test_the_hand_parser_leaves_unusual_lines_to_argparse(argv):
    from seedlock.cli import run

    assert run.parse(argv) is None
