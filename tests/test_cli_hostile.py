"""The command line under hostile input: one clear line and the documented exit status for every
mistake, nothing the user had deleted or overwritten, no control character from data on the
terminal, signals delivered exactly once."""

from __future__ import annotations

import json
import math
import os
import pty
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import seedlock
from seedlock import audit
from seedlock.cli.run import child_environment

BIN = Path(sys.executable).parent
SEEDLOCK = str(BIN / "seedlock")
ESCAPES = "\x1b]0;TITLE\x07\x1b[2J"


def seedlock_cli(*args: str, cwd: Path, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    full_env.pop("PYTHONHASHSEED", None)
    full_env.update(env or {})
    return subprocess.run(
        [SEEDLOCK, *args], cwd=cwd, env=full_env, capture_output=True, timeout=180
    )


def one_line_error(proc: subprocess.CompletedProcess[bytes], command: str, code: int = 2) -> str:
    """The process failed with ``code`` and said why in one line, without a traceback."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if not line.startswith("seedlock check: run ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"seedlock {command}: "), err
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- seedlock check --outputs never touches what was there ---------------------------------------

RESUMES = textwrap.dedent(
    """
    import os, random
    step = int(open("ckpt.txt").read()) if os.path.exists("ckpt.txt") else 0
    with open("ckpt.txt", "w") as f:
        f.write(str(step + 1))
    with open(f"result-{step}.txt", "w") as f:
        f.write(str(random.random()))
    print("resumed at", step)
    """
)


def test_check_outputs_dot_keeps_the_users_files_and_each_run_starts_from_them(tmp_path):
    (tmp_path / "train.py").write_text(RESUMES)
    (tmp_path / "ckpt.txt").write_text("41")  # the checkpoint the command resumes from
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1,2\n")
    before = tree(tmp_path)
    proc = seedlock_cli("check", "--outputs", ".", "--", sys.executable, "train.py", cwd=tmp_path)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "files: 2 same" in out  # result-41.txt and ckpt.txt, the same bytes in both runs
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if k in before and k != "ckpt.txt"} == {
        k: v for k, v in before.items() if k != "ckpt.txt"
    }
    assert after["ckpt.txt"] == b"42"  # as after one run of the command
    assert sorted(set(after) - set(before)) == ["result-41.txt"]


def test_check_outputs_too_large_to_set_aside_lists_what_changed_in_place(
    tmp_path, monkeypatch, capsys
):
    from seedlock import cli
    from seedlock.cli import check

    monkeypatch.setattr(check, "BACKUP_LIMIT", 0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(RESUMES)
    (tmp_path / "ckpt.txt").write_text("41")
    code = cli.main(["check", "--outputs", ".", "--", sys.executable, "train.py"])
    out = capsys.readouterr().out
    assert code == 1  # run 2 resumed from run 1's checkpoint: another result
    assert "not compared: ckpt.txt existed before the check and changed" in out
    assert (tmp_path / "train.py").read_text() == RESUMES


def test_check_outputs_moves_new_files_aside_between_runs_and_back_at_the_end(tmp_path):
    (tmp_path / "train.py").write_text(RESUMES.replace('"ckpt.txt"', '"out/ckpt.txt"'))
    (tmp_path / "out").mkdir()
    proc = seedlock_cli("check", "--outputs", "out", "--", sys.executable, "train.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert (tmp_path / "out" / "ckpt.txt").read_text() == "1"  # every run started at step 0
    assert sorted(tree(tmp_path / "out")) == ["ckpt.txt"]
    assert (tmp_path / "result-0.txt").exists()


def test_check_outputs_naming_a_file_is_one_line_and_changes_nothing(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    proc = seedlock_cli("check", "--outputs", "model.pt", "--", "true", cwd=tmp_path)
    assert "is not a folder" in one_line_error(proc, "check")
    assert (tmp_path / "model.pt").read_bytes() == b"weights"


def test_check_outputs_naming_a_missing_folder_does_not_create_it(tmp_path):
    proc = seedlock_cli("check", "--outputs", "nowhere", "--", "true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert not (tmp_path / "nowhere").exists()


# -- user mistakes: one line, exit 2 ---------------------------------------------------------------


def test_check_of_a_command_that_does_not_exist(tmp_path):
    proc = seedlock_cli("check", "--", "no_such_command_here", cwd=tmp_path)
    assert "cannot start 'no_such_command_here'" in one_line_error(proc, "check")


def test_check_of_a_command_printing_bytes_that_are_not_utf8(tmp_path):
    code = "import sys; sys.stdout.buffer.write(b'loss \\xff\\xfe 0.5\\n')"
    proc = seedlock_cli("check", "--", sys.executable, "-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"reproducible: 2 runs agree" in proc.stdout


def test_seed_last_when_last_seed_is_a_folder(tmp_path):
    (tmp_path / ".seedlock" / "last_seed").mkdir(parents=True)
    proc = seedlock_cli("run", "--seed", "last", "--", "true", cwd=tmp_path)
    assert "cannot read .seedlock/last_seed" in one_line_error(proc, "run")


def test_diff_of_a_missing_file(tmp_path):
    proc = seedlock_cli("diff", "a.json", "b.json", cwd=tmp_path)
    assert "No such file or directory: a.json" in one_line_error(proc, "diff")


def test_diff_of_a_manifest_nested_100000_deep(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    proc = seedlock_cli("diff", "deep.json", "deep.json", cwd=tmp_path)
    assert "not a seedlock manifest" in one_line_error(proc, "diff")


def test_diff_of_a_manifest_and_a_trace_names_both(tmp_path):
    trace_of(tmp_path / "main.trace", torch.nn.Linear(2, 2))
    (tmp_path / "m.json").write_text('{"schema": "seedlock.manifest", "version": 1}')
    proc = seedlock_cli("diff", "m.json", "main.trace", cwd=tmp_path)
    assert "m.json is a manifest and main.trace a trace" in one_line_error(proc, "diff")


def trace_of(path: Path, model: torch.nn.Module) -> None:
    seedlock.seed_everything(0)
    with audit.trace(model, path):
        model(torch.ones(1, 2))


def tamper(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


def test_diff_of_a_trace_without_events(tmp_path):
    trace_of(tmp_path / "a.trace", torch.nn.Linear(2, 2))
    tamper(tmp_path / "a.trace", "DROP TABLE events")
    proc = seedlock_cli("diff", "a.trace", "a.trace", cwd=tmp_path)
    assert "not a seedlock trace (no such table: events)" in one_line_error(proc, "diff")


def test_diff_of_a_trace_with_text_where_numbers_belong(tmp_path):
    trace_of(tmp_path / "a.trace", torch.nn.Linear(2, 2))
    trace_of(tmp_path / "b.trace", torch.nn.Linear(2, 2))
    tamper(tmp_path / "b.trace", "UPDATE events SET sum = 'lots', fingerprint = 'x' WHERE seq = 1")
    proc = seedlock_cli("diff", "a.trace", "b.trace", cwd=tmp_path)
    assert "a type seedlock never writes" in one_line_error(proc, "diff")


def test_manifest_to_a_folder_that_does_not_exist(tmp_path):
    proc = seedlock_cli("manifest", "-o", "no/such/dir/m.json", cwd=tmp_path)
    assert "No such file or directory" in one_line_error(proc, "manifest")


# -- seedlock run never stops the command for its own records --------------------------------------


def test_run_where_seedlock_cannot_keep_its_records_still_runs_the_command(tmp_path):
    (tmp_path / ".seedlock").write_text("not a folder")
    code = "import sys; print('ran'); sys.exit(3)"
    proc = seedlock_cli("run", "--seed", "4", "--", sys.executable, "-c", code, cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert proc.stdout == b"ran\n"
    assert "cannot record the seed in .seedlock/last_seed" in err
    assert "cannot write the manifest to .seedlock/runs/" in err
    fallback = Path(err.split("written to ")[1].split()[0])
    assert json.loads(fallback.read_text())["command"]["exit_code"] == 3
    fallback.unlink()
    assert "Traceback" not in err


def test_run_with_an_unwritable_manifest_keeps_the_commands_exit_status(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    code = "import sys; sys.exit(5)"
    proc = seedlock_cli("run", "--manifest", "blocker/m.json", "--", sys.executable, "-c", code,
                        cwd=tmp_path)  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 5, err
    fallback = Path(err.split("written to ")[1].split()[0])
    manifest = json.loads(fallback.read_text())
    fallback.unlink()
    assert manifest["command"]["exit_code"] == 5
    assert len(manifest["processes"]) == 1  # the records were not lost


def test_run_refuses_a_manifest_path_holding_another_file_before_starting(tmp_path):
    (tmp_path / "train.py").write_text("open('ran', 'w').close()\n")
    proc = seedlock_cli("run", "--manifest", "train.py", "--", sys.executable, "train.py",
                        cwd=tmp_path)  # fmt: skip
    assert "is not a seedlock manifest: refusing" in one_line_error(proc, "run")
    assert not (tmp_path / "ran").exists()
    assert (tmp_path / "train.py").read_text() == "open('ran', 'w').close()\n"


def test_run_writes_last_seed_in_place_of_a_link_not_through_it(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("my notes\n")
    (tmp_path / ".seedlock").mkdir()
    (tmp_path / ".seedlock" / "last_seed").symlink_to(precious)
    proc = seedlock_cli("run", "--seed", "5", "--no-manifest", "--", "true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert precious.read_text() == "my notes\n"
    last = tmp_path / ".seedlock" / "last_seed"
    assert not last.is_symlink() and last.read_text() == "5\n"


def test_a_killed_or_finished_run_leaves_no_records_folder_in_the_project(tmp_path):
    proc = seedlock_cli("run", "--seed", "1", "--", sys.executable, "-c", "pass", cwd=tmp_path)
    assert proc.returncode == 0
    assert not (tmp_path / ".seedlock" / "records").exists()


def test_the_manifest_lists_the_environment_the_command_got(tmp_path):
    proc = seedlock_cli("run", "--seed", "6", "--manifest", "m.json", "--", "true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    env = json.loads((tmp_path / "m.json").read_text())["env"]
    assert env["PYTHONHASHSEED"] == "6"
    assert env["SEEDLOCK_SEED"] == "6"


def test_empty_pythonpath_entries_still_mean_the_current_directory(tmp_path):
    (tmp_path / "localmod.py").write_text("VALUE = 'found'\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "use.py").write_text("import localmod, os\nprint(localmod.VALUE)\n")
    env = {"PYTHONPATH": os.pathsep + "/nonexistent"}
    proc = seedlock_cli("run", "-q", "--no-manifest", "--", sys.executable, "sub/use.py",
                        cwd=tmp_path, env=env)  # fmt: skip
    assert proc.stdout == b"found\n", proc.stderr.decode()


@pytest.mark.parametrize("flag", ["-I", "-E", "-S"])
def test_an_interpreter_that_skips_the_bootstrap_is_reported_unseeded(tmp_path, flag):
    proc = seedlock_cli("run", "--seed", "1", "--manifest", "m.json", "--", sys.executable, flag,
                        "-c", "pass", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0
    assert f"python {flag} skips seedlock's bootstrap" in proc.stderr.decode()
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["warnings"] == [f"python {flag} skipped seedlock's bootstrap: NOT seeded"]


def test_a_foreign_interpreter_is_seeded_without_the_launchers_site_packages(tmp_path):
    # Another interpreter (another venv, another Python version) than seedlock's own: the
    # bootstrap loads seedlock from the launcher's site-packages, and only seedlock. Here that
    # site-packages also holds a "numpy" the other interpreter must not pick up.
    site = tmp_path / "launchers-site-packages"
    shutil.copytree(Path(seedlock.__file__).parent, site / "seedlock")
    (site / "numpy").mkdir()
    (site / "numpy" / "__init__.py").write_text("raise SystemExit('the launchers numpy')\n")
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    env = child_environment(1, deterministic=False, record_dir=None)
    env["SEEDLOCK_PACKAGE_PATH"] = str(site)
    env["PYTHONPATH"] = str(site / "seedlock" / "cli" / "bootstrap")
    code = "import random, sys\ntry:\n import numpy\nexcept ImportError: print('no numpy')\n"
    code += "print(random.random(), sys.modules['seedlock'].__file__.startswith(sys.argv[1]))"
    proc = subprocess.run([str(bare / "bin" / "python"), "-c", code, str(site)], env=env,
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.stdout.split() == ["no", "numpy", "0.13436424411240122", "True"], proc.stderr


# -- nothing from data drives the terminal --------------------------------------------------------


def test_diff_shows_manifest_keys_and_values_escaped(tmp_path):
    base = {"schema": "seedlock.manifest", "version": 1, "env": {}}
    evil = {**base, "env": {f"X{ESCAPES}\nhigh risk (999)": f"v{ESCAPES}\nforged line"}}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(evil))
    out = seedlock_cli("diff", "--all", "a.json", "b.json", cwd=tmp_path).stdout.decode()
    assert "\x1b" not in out and "\x07" not in out
    assert not any(line.startswith(("high risk (999)", "forged line")) for line in out.splitlines())
    assert "\\x1b]0;TITLE\\x07" in out


def test_trace_reports_show_module_names_escaped(tmp_path):
    evil = type(f"Evil{ESCAPES}\nFORGED", (torch.nn.Module,), {"forward": lambda self, x: x * 2})
    for name, factor in (("a.trace", 2), ("b.trace", 3)):
        model = torch.nn.Sequential(evil())
        model[0].forward = lambda x, factor=factor: x * factor
        seedlock.seed_everything(0)
        with audit.trace(model, tmp_path / name):
            model(torch.ones(2))
    out = seedlock_cli("diff", "a.trace", "b.trace", cwd=tmp_path).stdout.decode()
    assert "NOT reproducible" in out
    assert "\x1b" not in out and "\x07" not in out
    assert not any(line.startswith("FORGED") for line in out.splitlines())


def test_run_shows_a_str_seed_escaped(tmp_path):
    proc = seedlock_cli("run", "--seed", f"str:{ESCAPES}", "--no-manifest", "--", "true",
                        cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0
    assert b"\x1b" not in proc.stderr and b"\x07" not in proc.stderr


# -- traces with odd names, manifests with odd values ---------------------------------------------


@pytest.mark.parametrize("name", ["we?ird.trace", "we%41ird.trace", "we#ird.trace"])
def test_trace_paths_are_file_names_not_uri_syntax(tmp_path, name):
    trace_of(tmp_path / name, torch.nn.Linear(2, 2))
    before = sorted(p.name for p in tmp_path.iterdir())
    report = audit.compare(tmp_path / name, tmp_path / name)
    assert report.reproducible and report.events > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_manifest_with_nan_does_not_differ_from_itself(tmp_path):
    data = {"schema": "seedlock.manifest", "version": 1, "cpu": {"load": math.nan}}
    (tmp_path / "m.json").write_text(json.dumps(data))
    proc = seedlock_cli("diff", "m.json", "m.json", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, b"no differences\n")


def test_an_environment_variable_set_on_one_side_is_one_difference(tmp_path):
    base = {"schema": "seedlock.manifest", "version": 1, "env": {}, "git": None}
    other = {**base, "env": {"OMP_NUM_THREADS": "1"}, "git": {"commit": "abc"}}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(other))
    out = json.loads(seedlock_cli("diff", "--json", "a.json", "b.json", cwd=tmp_path).stdout)
    assert sorted(d["key"] for d in out["differences"]) == ["env.OMP_NUM_THREADS", "git.commit"]


# -- signals reach the command exactly once --------------------------------------------------------

COUNTS = textwrap.dedent(
    """
    import signal, sys, time
    count = 0
    def handler(signum, frame):
        global count
        count += 1
    signal.signal(signal.SIGINT, handler)
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while count == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # room for a second delivery, if there were one
    with open(sys.argv[1], "w") as f:
        f.write(str(count))
    """
)


def _wait_for(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def test_sigint_to_the_launchers_pid_alone_reaches_the_command_once(tmp_path):
    (tmp_path / "count.py").write_text(COUNTS)
    proc = subprocess.Popen(
        [SEEDLOCK, "run", "-q", "--no-manifest", "--", sys.executable, "count.py", "n"],
        cwd=tmp_path, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    os.kill(proc.pid, signal.SIGINT)  # what an IDE's stop button or a supervisor does
    assert _wait_for(tmp_path / "n") == "1"
    assert proc.wait(timeout=60) == 0


def test_ctrl_c_on_a_terminal_reaches_the_command_once(tmp_path):
    (tmp_path / "count.py").write_text(COUNTS)
    argv = [SEEDLOCK, "run", "-q", "--no-manifest", "--", sys.executable, "count.py", "n"]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: seedlock run, in the foreground of its own terminal
        os.chdir(tmp_path)
        os.execv(argv[0], argv)
    try:
        seen = b""
        while b"ready" not in seen:
            seen += os.read(terminal, 1024)
        os.write(terminal, b"\x03")  # Ctrl-C: the terminal signals its foreground group
        assert _wait_for(tmp_path / "n") == "1"
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(terminal)


def test_ctrl_c_during_check_stops_it_without_a_traceback(tmp_path):
    code = "import time; open('ready', 'w').write('1'); time.sleep(60)"
    proc = subprocess.Popen(
        [SEEDLOCK, "check", "--", sys.executable, "-c", code],
        cwd=tmp_path, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    _wait_for(tmp_path / "ready")
    os.killpg(proc.pid, signal.SIGINT)  # the whole group, as Ctrl-C on a terminal
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert err.decode().rstrip().endswith("seedlock check: interrupted")


def test_check_keeping_its_runs_inside_the_outputs_folder(tmp_path):
    (tmp_path / "train.py").write_text(RESUMES)
    proc = seedlock_cli("check", "--outputs", ".", "--keep", "kept", "--", sys.executable,
                        "train.py", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert (tmp_path / "kept" / "run1" / "outputs" / "result-0.txt").exists()
    assert (tmp_path / "result-0.txt").exists() and (tmp_path / "ckpt.txt").read_text() == "1"
