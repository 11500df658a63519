"""The HTML report: one self-contained page, its plot, its escaped text; ``--report`` writes it
and never replaces a user's file; the terminal verdict draws the same curve as a line."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import seedlock
from seedlock import audit
from seedlock.audit import environment_report
from seedlock.audit import html as report_html
from seedlock.audit.divergence import read_meta
from seedlock.optable import explain

SEEDLOCK = str(Path(sys.executable).parent / "seedlock")
PLANTED = "<script>alert(1)</script>"


class Shift(nn.Module):
    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        np.random.default_rng()  # entropy no seed reaches, planted inside this module's call
        return x + self.delta


def _model(delta: float) -> nn.Module:
    seedlock.seed_everything(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
    model.add_module(PLANTED, Shift(delta))
    model.add_module("head", nn.Linear(8, 2))
    return model


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("traces")
    for name, delta in (("a.trace", 0.0), ("b.trace", 1e-3), ("a2.trace", 0.0)):
        model = _model(delta)
        with audit.trace(model, folder / name, summaries=True):
            model(torch.ones(3, 4)).sum().backward()
    return folder / "a.trace", folder / "b.trace", folder / "a2.trace"


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.verdict: list[str] = []
        self._in_verdict = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_verdict = tag == "pre" and dict(attrs).get("class") == "verdict"

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_verdict = False

    def handle_data(self, data: str) -> None:
        if self._in_verdict:
            self.verdict.append(data)

    def with_class(self, tag: str, cls: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and a.get("class") == cls]


def _parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_the_page_is_self_contained_plots_every_event_and_escapes_the_data(traces):
    a, b, _ = traces
    report = audit.compare(a, b)
    assert not report.reproducible and report.divergence is not None
    assert report.divergence.module.endswith(PLANTED)
    text = report_html.render(report, a, b)
    page = _parse(text)
    assert "http://" not in text and "https://" not in text
    for tag, attrs in page.tags:
        assert "src" not in attrs, tag
        assert tag not in {"script", "link"}
        assert (attrs.get("href") or "#").startswith("#"), attrs
    assert PLANTED not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "".join(page.verdict) == str(report)
    assert [t for t, _ in page.tags].count("svg") == 1
    _, paired = report_html.curve(a, b)
    assert len(page.with_class("g", "event")) == paired > 0
    assert page.with_class("line", "first-divergence")
    assert f"first divergence: event {report.divergence.seq}" in text
    assert report.entropy and report.entropy[0].kind == "numpy"
    assert "an unseeded numpy generator" in text and report.entropy[0].fix in text


def test_the_curve_is_zero_before_the_divergence_and_downsampled_keeping_it(traces):
    a, b, _ = traces
    report = audit.compare(a, b)
    assert report.divergence is not None
    seq = report.divergence.seq
    points, paired = report_html.curve(a, b, first=seq)
    assert all(p.score == 0 for p in points if p.seq < seq)
    assert next(p for p in points if p.seq == seq).score > 0
    few, _ = report_html.curve(a, b, first=seq, most=4)
    assert len(few) <= 5 and seq in [p.seq for p in few]
    assert max(p.score for p in few) == max(p.score for p in points)
    line = report_html.sparkline(points)
    assert len(line) == min(60, paired) and line[0] == "▁" and "█" in line


def test_identical_traces_make_a_flat_plot_and_no_terminal_line(traces):
    a, _, a2 = traces
    report = audit.compare(a, a2)
    assert report.reproducible
    assert report_html.divergence_line(report) is None
    page = _parse(report_html.render(report, a, a2))
    assert not page.with_class("line", "first-divergence")
    assert page.with_class("g", "event")


def test_manifest_differences_are_ranked_by_risk(traces):
    a, b, _ = traces
    found = [
        {"key": "env.X", "a": "1", "b": "2", "risk": "low", "why": "cosmetic"},
        {"key": "packages.torch", "a": "2.1", "b": "<2.2>", "risk": "high", "why": "kernels"},
    ]
    text = report_html.render(audit.compare(a, b), a, b, manifest_diff=found)
    assert text.index("packages.torch") < text.index("env.X")
    assert "&lt;2.2&gt;" in text


def _synthetic(path: Path, count: int, diverge: int, peak: int) -> None:
    """A trace of ``count`` events whose sums grow apart from event ``diverge`` (b only)."""
    from seedlock.audit.traces import SCHEMA, VERSION

    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO meta VALUES (?, ?)",
                   [("format", "seedlock.trace"), ("version", str(VERSION))])  # fmt: skip
    rows = []
    for seq in range(count):
        shift = 0.0 if "b" not in path.name or seq < diverge else 1e-6 * (100 if seq == peak else 1)
        fingerprint = "same" if shift == 0 else f"x{seq}"
        rows.append((seq, 0, f"Net.{seq % 7}", "Linear", "forward", None, fingerprint, None, None,
                     1.0 + shift, 1.0, 0, 0, "r", "i"))  # fmt: skip
    db.executemany(f"INSERT INTO events VALUES ({', '.join('?' * 15)})", rows)
    db.commit()
    db.close()


def test_a_long_trace_is_downsampled_keeping_the_first_divergence_and_the_maximum(tmp_path):
    a, b = tmp_path / "a.trace", tmp_path / "b.trace"
    _synthetic(a, 9000, 4321, 7777)
    _synthetic(b, 9000, 4321, 7777)
    report = audit.compare(a, b)
    assert report.divergence is not None and report.divergence.seq == 4321
    page = _parse(report_html.render(report, a, b))
    circles = page.with_class("circle", "sum")
    assert len(page.with_class("g", "event")) == len(circles) <= report_html.MAX_POINTS + 1
    points, paired = report_html.curve(a, b, first=4321)
    assert paired == 9000 and {4321, 7777} <= {p.seq for p in points}


def _seedlock(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOCK")}
    return subprocess.run(
        [SEEDLOCK, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_diff_writes_the_report_and_prints_the_curve(traces, tmp_path):
    a, b, _ = traces
    proc = _seedlock("diff", str(a), str(b), "--report", "r.html", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("divergence along the run: "))
    divergence = audit.compare(a, b).divergence
    assert divergence is not None and line.endswith(f"(first at event {divergence.seq})")
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert report_html.MARKER in text
    again = _seedlock("diff", str(a), str(b), "--report", "r.html", cwd=tmp_path)
    assert again.returncode == 1, again.stderr  # a report of its own is replaced


@pytest.mark.parametrize("command", ["diff", "check"])
def test_report_onto_a_users_file_is_refused(traces, tmp_path, command):
    a, b, _ = traces
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    report = ["--report", str(mine)]
    if command == "diff":
        proc = _seedlock("diff", str(a), str(b), *report, cwd=tmp_path)
    else:
        proc = _seedlock("check", *report, "--", sys.executable, "-c", "pass", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not a seedlock report" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert mine.read_text() == "<p>my notes</p>"


DIFFERS = """
import os
import sqlite3
import torch
from torch import nn

model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
with torch.no_grad():
    model[1].bias += 1e-3 + int.from_bytes(os.urandom(2), "little") * 1e-3
print(model(torch.ones(2, 4)).sum().item())
"""


def test_check_writes_run_1_against_the_run_that_differs(tmp_path):
    (tmp_path / "s.py").write_text(DIFFERS)
    proc = _seedlock("check", "--report", "r.html", "--", sys.executable, "s.py", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "\ndivergence along the run: " in proc.stdout
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "run 1 vs run 2" in text and "NOT reproducible" in text
    assert 'class="first-divergence"' in text


def test_suspects_bring_the_op_tables_advice(traces):
    a, b, _ = traces
    report = audit.compare(a, b)
    assert report.divergence is not None
    suspect = dataclasses.replace(report.divergence, op="aten::index_add_", suspects=["index_add"])
    text = report_html.render(dataclasses.replace(report, divergence=suspect), a, b)
    (entry,) = explain("aten::index_add_").entries
    assert "Known nondeterministic ops" in text and html.escape(entry.fix) in text


class Sections(HTMLParser):
    """The page's text by ``<h2>`` section: its table rows (cells' text) and its paragraphs;
    and every hover text (``<title>`` inside the plot)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.paragraphs: dict[str, list[str]] = {}
        self.titles: list[str] = []
        self._section = ""
        self._open: list[str] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open.append(tag)
        if tag in {"h2", "p", "td", "th", "title"}:
            self._text = []
        if tag == "tr":
            self.rows.setdefault(self._section, []).append([])

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text)
        if tag == "h2":
            self._section = text
        elif tag == "p":
            self.paragraphs.setdefault(self._section, []).append(text)
        elif tag in {"td", "th"}:
            self.rows[self._section][-1].append(text)
        elif tag == "title" and "svg" in self._open:
            self.titles.append(text)
        while self._open and self._open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        self._text.append(data)


def _sections(text: str) -> Sections:
    page = Sections()
    page.feed(text)
    page.close()
    return page


def _copy(src: Path, dst: Path, *statements: str) -> Path:
    """A copy of trace ``src`` at ``dst``, with ``statements`` run on it."""
    dst.write_bytes(src.read_bytes())
    db = sqlite3.connect(dst)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    return dst


def _meta(key: str, value: str) -> str:
    return f"INSERT OR REPLACE INTO meta VALUES ('{key}', '{value}')"


def _other_machine(traces: tuple[Path, Path, Path], folder: Path) -> tuple[Path, Path]:
    """Run a on an AVX2 CPU with torch 2.13.0, run b (which diverges) on AVX512 with 2.12.0."""
    a, b, _ = traces
    gpu = "<b>H100</b>"  # escaped wherever it shows
    return (
        _copy(a, folder / "a.trace", _meta("cpu_capability", "AVX2"), _meta("torch", "2.13.0"),
              _meta("gpu", gpu)),
        _copy(b, folder / "b.trace", _meta("cpu_capability", "AVX512"), _meta("torch", "2.12.0"),
              _meta("gpu", gpu + "x")),
    )  # fmt: skip


def test_the_environment_section_ranks_the_facts_that_differ(traces, tmp_path):
    a, b = _other_machine(traces, tmp_path)
    report = audit.compare(a, b)
    assert report.divergence is not None and report.divergence.cause == "e"
    text = report_html.render(report, a, b)
    assert "<b>H100</b>" not in text and "&lt;b&gt;H100&lt;/b&gt;" in text
    page = _sections(text)
    header, *rows = page.rows["Environment"]
    assert header == ["key", "run a", "run b", "why it matters"]
    assert [r[:3] for r in rows] == [
        ["torch", "2.13.0", "2.12.0"],
        ["cpu_capability", "AVX2", "AVX512"],
        ["gpu", "<b>H100</b>", "<b>H100</b>x"],
    ]
    assert all(r[3] == environment_report.WHY[r[0]] for r in rows)
    headings = [t for t in _parse(text).tags if t[0] == "h2"]
    assert len(headings) >= 3
    assert text.index("<h2>Verdict</h2>") < text.index("<h2>Environment</h2>")


def test_the_environment_is_shown_when_the_runs_agree_too(traces, tmp_path):
    a, _, a2 = traces
    same = _sections(report_html.render(audit.compare(a, a2), a, a2))
    meta = read_meta(a)
    cpu = f"{meta['cpu_capability']} {meta['machine']}"
    assert same.paragraphs["Environment"] == [
        f"same environment (torch {torch.__version__}, CPU {cpu}, {meta['threads']} threads)"
    ]
    assert "Environment" not in same.rows
    other = _copy(a2, tmp_path / "a2.trace", _meta("threads", "64"))
    report = audit.compare(a, other)
    assert report.reproducible  # the events agree: the environment still shows
    rows = _sections(report_html.render(report, a, other)).rows["Environment"]
    assert rows[1][:3] == ["threads", meta["threads"], "64"]


def _fingerprints_only(trace: Path, dst: Path) -> Path:
    unset = "UPDATE events SET sum = NULL, absmax = NULL, nans = NULL, infs = NULL"
    return _copy(trace, dst, unset, _meta("summaries", "0"))


def test_traces_without_summaries_plot_where_events_differ_not_by_how_much(traces, tmp_path):
    a, b, _ = (_fingerprints_only(t, tmp_path / t.name) for t in traces)
    report = audit.compare(a, b)
    d = report.divergence
    assert d is not None
    points, paired = report_html.curve(a, b, first=d.seq)
    assert len(points) == paired and not any(p.summarised for p in points)
    fingerprints = {}
    for path in (a, b):
        db = sqlite3.connect(path)
        fingerprints[path] = dict(db.execute("SELECT seq, fingerprint FROM events").fetchall())
        db.close()
    for p in points:
        differs = fingerprints[a][p.seq] != fingerprints[b][p.seq]
        assert (p.rel_sum, p.rel_absmax) == ((1.0, 1.0) if differs else (0.0, 0.0))
    assert next(p for p in points if p.seq == d.seq).score == 1.0
    text = report_html.render(report, a, b)
    page = _sections(text)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    tags = _parse(text)
    assert [t for t, _ in tags.tags].count("svg") == 1
    assert len(tags.with_class("circle", "sum")) == paired
    assert tags.with_class("line", "first-divergence")
    assert f"first divergence: event {d.seq}" in text
    top = report_html._y(1.0, 10.0)  # where a relative difference of 1 is drawn
    circles = {float(c["cy"] or 0) for c in tags.with_class("circle", "sum")}
    assert circles == {top, report_html._y(report_html.FLOOR, 10.0)}
    hovered = [t for t in page.titles if t.startswith(f"event {d.seq}: ")]
    assert hovered and hovered[0].endswith("; differs (no summary recorded)")
    assert any(t.endswith("; identical (no summary recorded)") for t in page.titles)
    assert len(tags.with_class("p", "note")) == 1
    assert any(
        "fingerprints only" in p and "where events differ, not by how much" in p
        for p in page.paragraphs["Divergence along the run"]
    )
    line = report_html.divergence_line(report)
    assert line is not None and line.endswith(
        "fingerprints only: where events differ, not by how much)"
    )
    spark = report_html.sparkline(points)
    assert set(spark) == {"▁", "█"}


def test_a_trace_with_summaries_against_one_without_compares_fingerprints(traces, tmp_path):
    a, _, a2 = traces
    bare = _fingerprints_only(a2, tmp_path / "bare.trace")
    points, paired = report_html.curve(a, bare)
    assert paired and all(p.score == 0 and not p.summarised for p in points)
    text = report_html.render(audit.compare(a, bare), a, bare)
    assert _parse(text).with_class("p", "note")
    assert 'class="note"' not in report_html.render(audit.compare(a, a2), a, a2)


def test_diff_prints_the_environment_block_and_puts_it_in_the_json(traces, tmp_path):
    a, b = _other_machine(traces, tmp_path)
    proc = _seedlock("diff", str(a), str(b), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout.splitlines()
    start = out.index("environment differs (most likely cause first):")
    assert out[start - 1].startswith("divergence along the run: ")
    assert [x.split(" (")[0] for x in out[start + 1 :]] == [
        "  - torch: 2.13.0 vs 2.12.0",
        "  - cpu_capability: AVX2 vs AVX512",
        "  - gpu: <b>H100</b> vs <b>H100</b>x",
    ]
    assert "  cause   (e) environment differs" in proc.stdout
    proc = _seedlock("diff", str(a), str(b), "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert [(d["key"], d["a"], d["b"]) for d in data["environment_differences"]] == [
        ("torch", "2.13.0", "2.12.0"),
        ("cpu_capability", "AVX2", "AVX512"),
        ("gpu", "<b>H100</b>", "<b>H100</b>x"),
    ]
    assert data["divergence"]["cause"] == "e"


def test_diff_says_the_environment_is_the_same_when_reproducible(traces, tmp_path):
    a, _, a2 = traces
    proc = _seedlock("diff", str(a), str(a2), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("environment: same (torch ")
    proc = _seedlock("diff", str(a), str(a2), "--json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["environment_differences"] == []
