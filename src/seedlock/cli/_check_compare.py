"""Compare two runs of ``seedlock check`` channel by channel: the numbers on stdout, the files.

**Stdout.** Lines matching an ``--ignore`` pattern are left out of both runs first. Then the
numbers of each line are compared, in order, line by line, and their count over the whole
output. A number is *timing-like*, and not compared, when its neighbourhood says it measures
time or speed:

* the word right after it (spaces allowed between) is a time unit (``ms``, ``msec``, ``s``,
  ``sec``, ``secs``, ``second(s)``, ``minute(s)``, ``h``, ``hr(s)``, ``hour(s)``, ``us``,
  ``µs``, ``ns``; not ``min``, which also names a minimum) or a rate (``WORD/s``,
  ``WORD/sec``, ``WORD/second``: ``it/s``, ``samples/s``, ``tokens/sec``; ``s/WORD``,
  ``ms/WORD``, ``sec/WORD``: ``s/it``, ``ms/batch``);
* or the word right before it (``:``, ``=`` and spaces allowed between) is a rate, or one of its
  parts split at ``/``, ``_`` and ``-`` is a timing word (``time``, ``elapsed``, ``eta``,
  ``throughput``, ``duration``, ``took``, ``speed``, ``latency``, ``runtime``, ``wall``,
  ``walltime``, ``fps``, ``timestamp``) or a unit of several letters that cannot mean anything
  else (``ms``, ``msec``, ``sec``, ``secs``, ``seconds``): ``step_time``, ``ms/batch``,
  ``elapsed_ms``;
* or it is part of a clock time (``HH:MM``, ``H:MM:SS``, with a fraction) or a date
  (``YYYY-MM-DD``).

The other numbers of the same line are still compared: in ``| ms/batch N | loss X`` only ``N``
is timing-like. A line whose timing-like numbers differ (and nothing else) *varies*, and is
counted, not failed.

**Files.** Files with the same relative path in both runs are compared byte for byte. The
files only one run created are paired by name pattern (every run of digits replaced by ``#``,
folders included): a pattern that names exactly one such file in each run pairs them, and the
pair is compared byte for byte. A created file left unpaired whose name holds a digit is listed
as only in its run (its name may carry a time or a pid: only the name could be judged, so it
does not fail the check); one whose name holds no digit, or a file that existed before and was
changed or deleted in one run only, is a difference.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FilesResult", "StdoutResult", "compare_files", "compare_stdout", "numbers"]

NUMBER = re.compile(
    r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|(?<![A-Za-z])(?:nan|inf)(?![A-Za-z])",
    re.IGNORECASE,
)
_CLOCK = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?|\b\d{4}-\d{2}-\d{2}\b")
_BEFORE = re.compile(r"([^\W\d][\w/µ-]*)[\s:=]*$")
_AFTER = re.compile(r"^\s*([^\W\d][\w/µ]*)")
_UNITS = frozenset(
    (
        "ms",
        "msec",
        "msecs",
        "s",
        "sec",
        "secs",
        "second",
        "seconds",
        "minute",
        "minutes",
        "h",
        "hr",
        "hrs",
        "hour",
        "hours",
        "us",
        "µs",
        "ns",
    )
)
_RATE = re.compile(r"^(?:[^\W\d]\w*/(?:s|sec|secs|second)|(?:s|ms|sec|secs)/[^\W\d]\w*)$")
_TIMING_WORDS = frozenset(
    (
        "time",
        "elapsed",
        "eta",
        "throughput",
        "duration",
        "took",
        "speed",
        "latency",
        "runtime",
        "wall",
        "walltime",
        "fps",
        "timestamp",
        "ms",
        "msec",
        "sec",
        "secs",
        "seconds",
    )
)
_PARTS = re.compile(r"[/_-]")


def _timing_before(word: str) -> bool:
    word = word.lower()
    return bool(_RATE.match(word)) or any(p in _TIMING_WORDS for p in _PARTS.split(word))


def numbers(line: str) -> tuple[list[str], list[str]]:
    """The numbers of ``line``, in order: (compared, timing-like)."""
    clocks = [m.span() for m in _CLOCK.finditer(line)]
    compared: list[str] = []
    timing: list[str] = []
    for m in NUMBER.finditer(line):
        start, end = m.span()
        after = _AFTER.match(line[end:])
        before = _BEFORE.search(line[:start])
        is_timing = (
            any(a <= start < b for a, b in clocks)
            or (after is not None and (after[1].lower() in _UNITS or bool(_RATE.match(after[1]))))
            or (before is not None and _timing_before(before[1]))
        )
        (timing if is_timing else compared).append(m.group())
    return compared, timing


@dataclass
class StdoutResult:
    """What comparing two runs' stdout found."""

    numbers: int = 0  # compared numbers, run 1
    timing_lines: int = 0  # lines whose timing-like numbers differ, nothing else
    ignored_lines: int = 0  # lines of run 1 left out by --ignore
    difference: dict[str, Any] | None = None  # the first line whose compared numbers differ

    def to_dict(self) -> dict[str, Any]:
        return {"same": self.difference is None, "numbers": self.numbers,
                "timing_lines_vary": self.timing_lines, "ignored_lines": self.ignored_lines,
                "difference": self.difference}  # fmt: skip


def _kept(text: str, ignore: list[re.Pattern[str]]) -> tuple[list[tuple[int, str]], int]:
    lines = text.splitlines()
    kept = [(n, line) for n, line in enumerate(lines, 1) if not any(p.search(line) for p in ignore)]
    return kept, len(lines) - len(kept)


def compare_stdout(a: str, b: str, ignore: list[re.Pattern[str]]) -> StdoutResult:
    """Compare the numbers two runs printed (see the module's docstring)."""
    lines_a, ignored = _kept(a, ignore)
    lines_b, _ = _kept(b, ignore)
    split_a = [numbers(line) for _, line in lines_a]
    split_b = [numbers(line) for _, line in lines_b]
    result = StdoutResult(numbers=sum(len(c) for c, _ in split_a), ignored_lines=ignored)
    for (n, la), (_, lb), (ca, ta), (cb, tb) in zip(
        lines_a, lines_b, split_a, split_b, strict=False
    ):
        if ca != cb:
            result.difference = {"line": n, "a": la.strip(), "b": lb.strip()}
            return result
        if ta != tb:
            result.timing_lines += 1
    count_b = sum(len(c) for c, _ in split_b)
    if result.numbers != count_b:
        result.difference = {"line": None, "a": f"{result.numbers} numbers",
                             "b": f"{count_b} numbers"}  # fmt: skip
    return result


@dataclass
class FilesResult:
    """What comparing two runs' output files found."""

    same: list[str] = field(default_factory=list)
    paired: list[tuple[str, str]] = field(default_factory=list)  # same bytes, names differ
    differ: list[str] = field(default_factory=list)  # a difference: fails the check
    only_a: list[str] = field(default_factory=list)  # unpaired, named per run: listed only
    only_b: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"same": self.same, "paired_by_name_pattern": [list(p) for p in self.paired],
                "differ": self.differ, "only_in_run_1": self.only_a,
                "only_in_other_run": self.only_b}  # fmt: skip


def _pattern(rel: str) -> str:
    return re.sub(r"\d+", "#", rel)


def compare_files(
    a: dict[str, str], b: dict[str, str], created_a: set[str], created_b: set[str]
) -> FilesResult:
    """Compare two runs' files (relative path -> digest); see the module's docstring."""
    result = FilesResult()
    for rel in sorted(set(a) & set(b)):
        (result.same if a[rel] == b[rel] else result.differ).append(rel)
    alone_a = sorted(set(a) - set(b))
    alone_b = sorted(set(b) - set(a))
    by_pattern: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for rel in alone_a:
        if rel in created_a:
            by_pattern[_pattern(rel)][0].append(rel)
    for rel in alone_b:
        if rel in created_b:
            by_pattern[_pattern(rel)][1].append(rel)
    paired: set[str] = set()
    for in_a, in_b in by_pattern.values():
        if len(in_a) == 1 and len(in_b) == 1:
            ra, rb = in_a[0], in_b[0]
            paired.update((ra, rb))
            if a[ra] == b[rb]:
                result.paired.append((ra, rb))
            else:
                result.differ.append(f"{ra} ~ {rb}")
    for alone, created, only in ((alone_a, created_a, result.only_a),
                                 (alone_b, created_b, result.only_b)):  # fmt: skip
        for rel in alone:
            if rel in paired:
                continue
            if rel in created and re.search(r"\d", rel):
                only.append(rel)
            else:
                result.differ.append(rel)
    return result
