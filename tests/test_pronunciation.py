"""What the voice is asked to say: pronunciation rules and spoken titles, against the fake server; tags, file
names and subtitles keep the book's own words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mutagen.id3 import ID3

from pipeline.cli import main
from tests.fakeserver import FakeSpeechServer
from tests.helpers import read_report

BOOK = """CHAPTER XXXVII. THE DOCTOR'S VISIT

Dr. Nguyen came at noon. He said the patient was fine; Dr. Nguyen always said so.

The end of the visit came quickly.
"""

RULES = """# names and abbreviations
Dr. => Doctor
re:\\bNguyen\\b => Win
never => matches nothing here
"""


def convert(book: Path, out: Path, *extra: str) -> int:
    return main(["--quiet", "convert", str(book), "-o", str(out), "--no-pack", *extra])


def test_rules_change_what_is_said_and_nothing_else(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "visit.txt"
    book.write_text(BOOK, encoding="utf-8")
    rules = tmp_path / "rules.txt"
    rules.write_text(RULES, encoding="utf-8")

    assert main(["plan", str(book), "--lexicon", str(rules), "--json", "--no-pack"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(r["rule"], r["replacements"]) for r in plan["pronunciation"]] == [
        ("line 2: Dr. => Doctor", 2),
        ("line 3: re:\\bNguyen\\b => Win", 2),
        ("line 4: never => matches nothing here", 0),
    ]
    assert main(["plan", str(book), "--lexicon", str(rules), "--no-pack"]) == 0
    assert "Pronunciation rules" in capsys.readouterr().out

    assert convert(book, tmp_path / "out", "--lexicon", str(rules), "--subtitles", "srt") == 0
    said = server.served_inputs()
    assert "Doctor Win came at noon. He said the patient was fine; Doctor Win always said so." in said
    assert not any("Dr." in s or "Nguyen" in s for s in said)
    assert "Chapter 37. The Doctor's Visit" in said  # the title as a voice says it, not "Chapter XXXVII."
    report = read_report(tmp_path / "out")
    (chapter,) = report["chapters"]
    assert chapter["file"] == "01 Chapter XXXVII. The Doctor's Visit.mp3"  # the book's own form
    assert ID3(tmp_path / "out" / chapter["file"])["TIT2"].text == ["Chapter XXXVII. The Doctor's Visit"]
    srt = (tmp_path / "out" / chapter["file"]).with_suffix(".srt").read_text(encoding="utf-8")
    assert "Dr. Nguyen came at noon." in srt and "Win" not in srt  # subtitles show the book's text

    # The cache key follows the text sent: without the rules, those sentences are new parts to pay for.
    server.clear()
    assert convert(book, tmp_path / "plain") == 0
    assert any("Dr. Nguyen" in s for s in server.served_inputs())
    assert "Chapter 37. The Doctor's Visit" not in server.served_inputs()  # the same title: cached


def test_a_bad_rule_is_one_line_naming_the_file_and_line(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "visit.txt"
    book.write_text(BOOK, encoding="utf-8")
    rules = tmp_path / "rules.txt"
    rules.write_text("ok => fine\nre:(unclosed => x\n", encoding="utf-8")
    assert convert(book, tmp_path / "out", "--lexicon", str(rules)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{rules}:2" in err
    assert server.requests == []


def test_a_volume_goes_into_the_chapter_tags(server: FakeSpeechServer, tmp_path: Path) -> None:
    book = tmp_path / "novel.txt"
    lines = ["第一卷 潮起", ""]
    for n in (1, 2):
        lines += [f"第{'一二'[n - 1]}章 风{n}", "", f"他走进山里，看见第{n}盏灯。风吹得它摇来摇去。", ""]
    lines += ["第二卷 潮落", "", "第三章 雨", "", "雨下了一整夜。天亮的时候，灯还亮着。", ""]
    book.write_text("\n".join(lines), encoding="utf-8")
    assert convert(book, tmp_path / "out") == 0
    report = read_report(tmp_path / "out")
    groups = [ID3(tmp_path / "out" / c["file"])["TIT1"].text for c in report["chapters"]]
    assert groups == [["第一卷 潮起"], ["第一卷 潮起"], ["第二卷 潮落"]]
    assert [c["title"] for c in report["chapters"]] == ["第一章 风1", "第二章 风2", "第三章 雨"]
