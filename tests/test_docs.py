"""The documentation's examples run as written, and the documentation holds together.

Every ```python block of README.md and docs/*.md is a complete program: each one runs in a fresh
interpreter, in an empty folder. The line right before a block may say how to launch it:

    <!-- run: torchrun --nproc_per_node=2 -->

runs the block as a script under ``python -m torch.distributed.run --nproc_per_node=2
--master_port=<a free port>`` (the examples use gloo on the CPU). Shell blocks (console, bash)
are not run. Nothing here needs the network.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run_python

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
#: Pages whose relative links and anchors must resolve (benchmarks/README.md points into docs/).
LINKED_PAGES = [*PAGES, ROOT / "benchmarks" / "README.md"]
README_MAX_BYTES = 20_000

#: Failures that say nothing about the example, worth another launch: the free port was taken
#: before torchrun bound it, or torch 2.13's gloo teardown aborted a rank after its work was done
#: ("terminate called without an active exception", SIGABRT), which happens now and then under
#: load (tests/test_distributed.py works around the same abort).
RETRY_ON = ("address already in use", "terminate called without an active exception")
ATTEMPTS = 5

RUN_MARKER = re.compile(r"<!--\s*run:\s*(.*?)\s*-->")
TORCHRUN = re.compile(r"torchrun --nproc_per_node=(\d+)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root, e.g. "docs/data.md"
    number: int  # 1-based among the page's python blocks
    code: str
    run: str | None  # the run marker's command, if the block has one

    @property
    def id(self) -> str:
        return f"{self.page}:block{self.number}"


def python_blocks(page: Path) -> list[Block]:
    """The page's ```python blocks, in order, each with the run marker on the line before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    name = page.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            marker = RUN_MARKER.fullmatch(lines[i - 1].strip()) if i > 0 else None
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(name, len(blocks) + 1, code, marker.group(1) if marker else None))
            i = end
        i += 1
    return blocks


def prose(page: Path) -> str:
    """The page's text without its fenced code blocks."""
    return re.sub(r"^```.*?^```[ \t]*$", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def _param(block: Block) -> object:
    marks = [pytest.mark.slow] if block.run is not None else []
    return pytest.param(block, id=block.id, marks=marks)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env() -> dict[str, str]:
    """The environment run_python gives a child: no seed inherited from this test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK_")}
    env.pop("PYTHONHASHSEED", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run_torchrun(block: Block, folder: Path) -> None:
    match = TORCHRUN.fullmatch(block.run or "")
    assert match, f"{block.id}: unknown run marker {block.run!r}"
    for attempt in range(ATTEMPTS):
        workdir = folder / f"attempt{attempt + 1}"  # each launch starts from an empty folder
        workdir.mkdir()
        script = workdir / "example.py"
        script.write_text(block.code, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run",
             f"--nproc_per_node={match.group(1)}", f"--master_port={_free_port()}", str(script)],
            cwd=workdir, env=_child_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if proc.returncode == 0:
            return
        output = (proc.stdout + proc.stderr).lower()
        if attempt == ATTEMPTS - 1 or not any(sign in output for sign in RETRY_ON):
            raise AssertionError(
                f"{block.id} failed under {block.run} ({proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
            )


def test_the_pages_have_examples():
    readme = [b for b in BLOCKS if b.page == "README.md"]
    assert len(readme) >= 5, readme
    assert len(BLOCKS) >= 20, [b.id for b in BLOCKS]


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # whatever an example writes stays out of the checkout
    if block.run is None:
        run_python(block.code)
    else:
        _run_torchrun(block, tmp_path)


def test_every_run_marker_introduces_a_python_block_it_knows():
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            marker = RUN_MARKER.fullmatch(line.strip())
            if marker is None:
                continue
            where = f"{page.relative_to(ROOT)}:{n + 1}"
            assert n + 1 < len(lines) and lines[n + 1].strip() == "```python", where
            assert TORCHRUN.fullmatch(marker.group(1)), f"{where}: unknown {marker.group(1)!r}"


def test_every_docs_page_is_linked_from_the_readme():
    targets = {link.split("#")[0] for link in LINK.findall(prose(README))}
    missing = [p.relative_to(ROOT).as_posix() for p in DOCS]
    missing = [name for name in missing if name not in targets]
    assert DOCS and not missing, f"docs pages the README does not link to: {missing}"


def test_the_readme_fits_in_20000_bytes():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (at most {README_MAX_BYTES})"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    for line in prose(page).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in found:
            n += 1
            anchor = f"{slug}-{n}"
        found.add(anchor)
    return found


@pytest.mark.parametrize(
    "page", LINKED_PAGES, ids=[p.relative_to(ROOT).as_posix() for p in LINKED_PAGES]
)
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    for link in LINK.findall(prose(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(link)
            continue
        if anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(link)
    assert not broken, f"{page.relative_to(ROOT)}: links that lead nowhere: {broken}"
