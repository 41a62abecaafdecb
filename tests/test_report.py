"""The report: written atomically, read back by the next run whatever state it is in, and shown to people."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.report import (
    REPORT_NAME,
    BookReport,
    BookStatus,
    ChapterOutcome,
    ChapterStatus,
    SegmentFailure,
    clock,
    format_plan,
    format_report,
    read_previous,
    write_report,
)


def report(*chapters: ChapterOutcome, status: BookStatus = BookStatus.DONE, **kw: object) -> BookReport:
    fields: dict[str, object] = {
        "status": status,
        "plan": {},
        "chapters": chapters,
        "requests": 3,
        "retries": 1,
        "cache_hits": 2,
        "synthesized": 2,
        "characters_sent": 80,
        "failures": (),
        "duration_s": 12.5,
        "elapsed_s": 1.0,
        "estimated_cost_usd": 0.0,
        "started": "2026-12-02T00:00:00+00:00",
        "finished": "2026-12-02T00:00:01+00:00",
        "playlist": "Book.m3u",
    }
    return BookReport(**{**fields, **kw})  # type: ignore[arg-type]


def chapter(i: int, status: ChapterStatus, fingerprint: str | None = "f", **kw: object) -> ChapterOutcome:
    return ChapterOutcome(i, f"Chapter {i}", f"0{i} Chapter {i}.mp3", status, 2, 40, 6.25, fingerprint, **kw)  # type: ignore[arg-type]


def test_a_written_report_is_read_back_with_only_finished_chapters_current(tmp_path: Path) -> None:
    done, failed = chapter(1, ChapterStatus.DONE, "aa"), chapter(2, ChapterStatus.FAILED, None, error="boom")
    write_report(tmp_path, report(done, failed, status=BookStatus.FAILED, m4b="Book.m4b", m4b_fingerprint="mm"))
    data = json.loads((tmp_path / REPORT_NAME).read_text(encoding="utf-8"))
    assert data["status"] == "failed" and data["chapters"][1]["status"] == "failed"  # enums are plain strings
    previous = read_previous(tmp_path)
    assert previous.current == {"01 Chapter 1.mp3": ("aa", 6.25)}
    assert previous.files == {"01 Chapter 1.mp3", "02 Chapter 2.mp3"}
    assert (previous.playlist, previous.m4b, previous.m4b_fingerprint) == ("Book.m3u", "Book.m4b", "mm")
    assert [p.name for p in tmp_path.iterdir()] == [REPORT_NAME]  # no temporary file left


@pytest.mark.parametrize(
    "content",
    [
        None,
        "",
        "{not json",
        "[1, 2]",
        '{"chapters": "nope", "playlist": 5}',
        '{"chapters": [{"file": 3, "status": "done"}, "x", {"status": "done"}]}',
        '{"chapters": [{"file": "a.mp3", "status": "done", "duration_s": true, "fingerprint": ["x"]}]}',
    ],
)
def test_a_missing_or_damaged_report_means_nothing_is_current(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / REPORT_NAME).write_text(content, encoding="utf-8")
    previous = read_previous(tmp_path)
    assert all(fingerprint is None for fingerprint, _ in previous.current.values())
    assert previous.playlist is None and previous.m4b is None


def test_problem_names_the_first_failure_and_counts_the_rest() -> None:
    failures = tuple(SegmentFailure(2, "Chapter 2", n, "Some words …", "HTTP 500") for n in (3, 7))
    r = report(chapter(1, ChapterStatus.DONE), status=BookStatus.FAILED, failures=failures)
    assert r.problem() == "chapter 2 (Chapter 2) segment 3 failed: HTTP 500 (and 1 more)"
    assert report(chapter(1, ChapterStatus.DONE)).problem() is None
    unwritten = chapter(1, ChapterStatus.FAILED, None, error="disk full")
    assert report(unwritten, status=BookStatus.FAILED).problem() == "chapter 1 (Chapter 1) not written: disk full"


def test_formatting_for_people() -> None:
    assert [clock(s) for s in (0, 59.6, 61, 3600, 3725)] == ["0:00", "1:00", "1:01", "1:00:00", "1:02:05"]
    text = format_report(report(chapter(1, ChapterStatus.DONE), chapter(2, ChapterStatus.UNCHANGED)), Path("out"))
    assert text.splitlines()[:3] == ["01 Chapter 1.mp3  0:06", "02 Chapter 2.mp3  0:06", "Book.m3u"]
    assert "2/2 chapters" in text and "3 requests, 1 retries, 2 cached parts" in text
    plan = {
        "book": {"title": "灯塔", "author": None, "language": "zh", "source": "b.txt"},
        "output": "out",
        "backend": "openai",
        "endpoint": "api.example/v1",
        "model": "m",
        "voice": "v",
        "chapters": [
            {
                "index": 1,
                "title": "第一章 " + "很长的标题" * 12,
                "segments": 3,
                "characters": 1200,
                "cached_segments": 1,
                "up_to_date": False,
            },
        ],  # fmt: skip
        "skipped": ["licence (12 lines)"],
        "segments": 3,
        "characters": 1200,
        "cached_segments": 1,
        "requests_needed": 2,
        "characters_to_send": 800,
        "estimated_cost_usd": 0.012,
    }
    lines = format_plan(plan).splitlines()
    row = next(line for line in lines if line.strip().startswith("1 "))
    assert "…" in row and row.endswith("1,200       1")  # a CJK title is cut to its column width
    assert "licence (12 lines)" in format_plan(plan) and "2 requests, 800 characters" in format_plan(plan)
