"""``seedlock check`` on real scripts: timing lines and per-run file names do not fail the check,
while a loss or a file's bytes that differ still do; one verdict line per channel."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seedlock._bootstrap import DETERMINISTIC_VAR
from seedlock.cli._check_compare import compare_files, numbers

SEEDLOCK = str(Path(sys.executable).parent / "seedlock")


def check(*args: str, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    env.pop("PYTHONHASHSEED", None)
    proc = subprocess.run(
        [SEEDLOCK, "check", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr


def script(folder: Path, text: str) -> str:
    (folder / "s.py").write_text(textwrap.dedent(text))
    return "s.py"


# A word-language-model training loop: real timings next to a seeded loss.
WORD_LANGUAGE_MODEL = """
    import random, time
    loss = 7.0
    start = time.perf_counter()
    for batch in range(200, 1000, 200):
        t = time.perf_counter()
        sum(range(50_000))
        ms = (time.perf_counter() - t) * 1000
        loss -= random.random() / 10
        print(f"| epoch   1 | {batch:5d}/ 2983 batches | lr 20.00 | ms/batch {ms:8.6f} | "
              f"loss {loss:5.2f} | ppl {2.718 ** loss:8.2f}")
    print(f"step time {(time.perf_counter() - start) * 1000:.6f}ms")
    print(f"| end of epoch   1 | time: {time.perf_counter() - start:.6f}s | valid loss {loss:.4f}")
"""


def test_timing_lines_vary_and_are_ignored_while_the_loss_is_compared(tmp_path):
    code, out, err = check(
        "--", sys.executable, script(tmp_path, WORD_LANGUAGE_MODEL), cwd=tmp_path
    )
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "reproducible: 2 runs agree"
    assert "timing line(s) vary, ignored" in lines[2]
    assert lines[2].startswith("stdout: same (")
    assert lines[1] == "traces: none written (torch not used)"
    assert lines[4] == "exit status: 0 in every run"


def test_a_loss_that_differs_next_to_a_timing_still_fails(tmp_path):
    text = WORD_LANGUAGE_MODEL.replace(
        "loss -= random.random() / 10", "loss -= time.time_ns() % 97"
    )
    code, out, _ = check("--", sys.executable, script(tmp_path, text), cwd=tmp_path)
    assert code == 1
    assert out.startswith("NOT reproducible\n")
    # The first line whose loss differs: each line's clock value matches by chance 1 in 97.
    assert re.search(r"stdout: numbers differ \(run 1 vs run 2\), line \d+\n", out), out


@pytest.mark.parametrize(
    ("line", "compared", "timing"),
    [
        ("| ms/batch 660.69 | loss 5.23", ["5.23"], ["660.69"]),
        ("step time 1943.90ms", [], ["1943.90"]),
        ("loss 0.23", ["0.23"], []),
        ("epoch 1 took 12.3 seconds, loss 0.5", ["1", "0.5"], ["12.3"]),
        ("10/10 [00:01<00:00,  8.50it/s]", ["10", "10"], ["00", "01", "00", "00", "8.50"]),
        ("elapsed=3.2 loss=0.1 throughput 1234 samples/s", ["0.1"], ["3.2", "1234"]),
        ("step_time: 0.4 eta 7 s/it 2.5", [], ["0.4", "7", "2.5"]),
        ("loss 0.1 min 0.1 max 0.9 info 3 hits 4", ["0.1", "0.1", "0.9", "3", "4"], []),
        ("took 3 h 4", ["4"], ["3"]),
    ],
)  # fmt: skip
def test_the_timing_rule_looks_at_each_numbers_neighbours(line, compared, timing):
    assert numbers(line) == (compared, timing)


def test_ignore_leaves_matching_lines_out_of_both_runs(tmp_path):
    name = script(tmp_path, "import os; print('worker pid', os.getpid()); print('loss 0.5')")
    code, out, _ = check("--", sys.executable, name, cwd=tmp_path)
    assert code == 1 and "stdout: numbers differ (run 1 vs run 2), line 1" in out
    code, out, err = check("--ignore", "^worker ", "--ignore", "x", "--", sys.executable, name,
                           cwd=tmp_path)  # fmt: skip
    assert code == 0, out + err
    assert "stdout: same (1 numbers; 1 line(s) left out by --ignore)" in out


def test_an_ignore_that_is_not_a_regular_expression_is_one_line(tmp_path):
    code, out, err = check("--ignore", "(", "--", "true", cwd=tmp_path)
    assert code == 2 and out == ""
    assert err.startswith("seedlock check: --ignore '(' is not a regular expression")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


TENSORBOARD = """
    import os, socket, time
    os.makedirs("runs", exist_ok=True)
    name = f"runs/events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    with open(name, "wb") as f:
        f.write(b"loss 0.25 step 1")
    with open("runs/model.bin", "wb") as f:
        f.write(bytes(range(256)))
"""


def test_a_file_named_after_the_time_and_pid_is_paired_by_its_name_pattern(tmp_path):
    name = script(tmp_path, TENSORBOARD)
    code, out, err = check("--outputs", "runs", "--", sys.executable, name, cwd=tmp_path)
    assert code == 0, out + err
    assert "files: 1 same, 1 paired by name pattern" in out
    kept = [p.name for p in (tmp_path / "runs").iterdir()]  # the last run's files, moved back
    assert len(kept) == 2 and "model.bin" in kept


def test_a_paired_file_with_other_bytes_fails(tmp_path):
    name = script(tmp_path, TENSORBOARD.replace('b"loss 0.25 step 1"', "str(os.getpid()).encode()"))
    code, out, _ = check("--outputs", "runs", "--", sys.executable, name, cwd=tmp_path)
    assert code == 1
    assert "NOT reproducible" in out
    assert "files: 1 same, 1 differ (run 1 vs run 2)" in out
    assert "output files differ (run 1 vs run 2): events.out.tfevents." in out


def test_files_that_cannot_be_paired_are_listed_not_failed(tmp_path):
    text = """
        import os
        for part in (1, 2):
            open(f"out/shard-{os.getpid()}-{part}.txt", "w").write("same")
    """
    (tmp_path / "out").mkdir()
    code, out, err = check("--outputs", "out", "--", sys.executable, script(tmp_path, text),
                           cwd=tmp_path)  # fmt: skip
    assert code == 0, out + err
    files = next(line for line in out.splitlines() if line.startswith("files: "))
    assert files.startswith("files: 0 same; only in run 1: shard-")
    assert "; only in run 2: shard-" in files


def test_the_file_pairing_rule():
    a = {"x.txt": "1", "ev.100.h1.7": "2", "log-1.txt": "3", "gone.txt": "4"}
    b = {"x.txt": "1", "ev.200.h1.8": "2", "new.txt": "5"}
    result = compare_files(a, b, set(a) - {"gone.txt"}, set(b))
    assert result.same == ["x.txt"]
    assert result.paired == [("ev.100.h1.7", "ev.200.h1.8")]
    assert result.only_a == ["log-1.txt"]
    assert sorted(result.differ) == ["gone.txt", "new.txt"]  # no digit: no other name to pair


def test_a_script_drawing_its_own_seed_is_reproducible_under_seedlock(tmp_path):
    text = """
        import random
        seed = random.randint(0, 2**31)
        random.seed(seed)
        print("seed", seed, "loss", random.random())
    """
    name = script(tmp_path, text)
    code, out, err = check("--", sys.executable, name, cwd=tmp_path)
    assert code == 0, out + err
    code, out, _ = check("--no-seed", "--", sys.executable, name, cwd=tmp_path)
    assert code == 1 and "stdout: numbers differ" in out


def test_a_deterministic_script_checked_three_times_as_json(tmp_path):
    name = script(tmp_path, "print('loss', sum(i * i for i in range(100)))")
    code, out, err = check("--runs", "3", "--json", "--", sys.executable, name, cwd=tmp_path)
    assert code == 0, out + err
    found = json.loads(out)
    assert found["reproducible"] and found["headline"] == "reproducible: 3 runs agree"
    assert found["channels"]["exit_status"] == [0, 0, 0]
    assert found["channels"]["stdout"]["numbers"] == 1
    assert "run 3/3 (seed 0) ... exit 0" in err


def test_a_command_failing_alike_in_every_run_is_not_called_not_reproducible(tmp_path):
    name = script(tmp_path, "import sys; print('boom', file=sys.stderr); sys.exit(3)")
    code, out, _ = check("--", sys.executable, name, cwd=tmp_path)
    assert code == 1
    assert out.startswith("the command failed (exit 3) in every run\n")
    assert "NOT reproducible" not in out
    assert "exit status: 3 in every run" in out and out.rstrip().endswith("boom")


def test_an_exit_status_that_differs_is_not_reproducible(tmp_path):
    text = "import os, sys; os.path.exists('mark') and sys.exit(1); open('mark', 'w')"
    code, out, _ = check("--", sys.executable, script(tmp_path, text), cwd=tmp_path)
    assert code == 1
    assert out.startswith("NOT reproducible\n")
    assert "exit status: run 1 0, run 2 1" in out


def test_deterministic_runs_with_the_determinism_profile(tmp_path):
    name = script(tmp_path, f"import os; print(os.environ.get({DETERMINISTIC_VAR!r}, 'off'))")
    for flags, shown in (((), "off"), (("--deterministic",), "1")):
        code, out, err = check(*flags, "--keep", "kept", "--", sys.executable, name, cwd=tmp_path)
        assert code == 0, out + err
        assert (tmp_path / "kept" / "run2" / "stdout").read_text().strip() == shown


def test_show_copies_each_runs_output_to_stderr_between_progress_lines(tmp_path):
    text = "import sys; print('loss 0.5'); print('warning: slow', file=sys.stderr)"
    code, out, err = check("--show", "--", sys.executable, script(tmp_path, text), cwd=tmp_path)
    assert code == 0, out + err
    assert out.startswith("reproducible: 2 runs agree\n") and "warning" not in out
    lines = err.splitlines()
    assert lines[0] == "seedlock check: run 1/2 (seed 0) ..."
    assert sorted(lines[1:3]) == ["loss 0.5", "warning: slow"]
    assert lines[3].startswith("seedlock check: run 1/2: exit 0 in ")
    assert lines[4] == "seedlock check: run 2/2 (seed 0) ..."


def test_show_keeps_each_line_whole_when_the_other_stream_writes_inside_it(tmp_path):
    # Unbuffered, a line's text and its newline are two writes; the other stream's line comes
    # in between them here on purpose.
    text = ("import sys, time\n"
            "sys.stdout.write('loss 0.5'); sys.stdout.flush(); time.sleep(0.3)\n"
            "print('warning: slow', file=sys.stderr, flush=True); time.sleep(0.3)\n"
            "sys.stdout.write('\\n'); sys.stdout.flush()\n")  # fmt: skip
    code, out, err = check("--show", "--", sys.executable, script(tmp_path, text), cwd=tmp_path)
    assert code == 0, out + err
    assert err.splitlines()[1:3] == ["warning: slow", "loss 0.5"]


def test_show_with_a_command_that_cannot_start_is_one_line_after_the_progress_line(tmp_path):
    code, out, err = check("--show", "--", "no_such_command_here", cwd=tmp_path)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.splitlines() == [
        "seedlock check: run 1/2 (seed 0) ...",
        "seedlock check: cannot start 'no_such_command_here': No such file or directory",
    ]
