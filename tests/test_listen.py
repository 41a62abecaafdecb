"""Listen before you pay: --chapters, --preview and `voices --sample`, against the fake speech server (requests
counted there), with real files read back."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from mutagen.id3 import ID3

from pipeline import app
from pipeline.cli import main
from pipeline.config import load_settings
from pipeline.errors import UsageError
from pipeline.listen import REAL_CHAPTER_CHARS, passage, seconds_of
from pipeline.media import ffmpeg_exe
from pipeline.models import Book, Chapter
from pipeline.selection import describe_chapters, parse_chapters, parse_length, select_chapters
from tests.audiocheck import decode
from tests.fakeserver import FakeSpeechServer
from tests.helpers import read_report, write_book


def convert(book: Path, out: Path, *extra: str) -> int:
    return main(["--quiet", "convert", str(book), "-o", str(out), "--timeout", "2", *extra])


def planned(book: Path, out: Path, *extra: str) -> dict:
    """The plan as --json prints it (sends nothing)."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["plan", str(book), "-o", str(out), "--json", *extra]) == 0
    return json.loads(buffer.getvalue())


def segment_texts(book: Path, out: Path, chapter: int) -> list[str]:
    """What the full run sends for a chapter, in order: its segments as the plan makes them."""
    settings = load_settings()
    plan = app.plan(app.read(book, settings.book), settings, out)
    (cp,) = [c for c in plan.chapters if c.chapter.index == chapter]
    return [s.voice_text for s in cp.segments]


def m4b_chapter_titles(path: Path) -> list[str]:
    """The M4B's chapter marks as ffmpeg reads them back (imageio-ffmpeg ships no ffprobe; ffmpeg's ffmetadata
    output lists the same chapters), not through the code that wrote them."""
    done = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"], capture_output=True, check=True
    )
    text = done.stdout.decode()
    return [m.group(1) for m in re.finditer(r"\[CHAPTER\][^\[]*?title=([^\n]*)", text)]


# --- the spec ------------------------------------------------------------------------------------------------


def test_chapter_specs_parse_resolve_and_read_back() -> None:
    assert parse_chapters("1-3,7,12-") == ((1, 3), (7, 7), (12, None))
    assert select_chapters("1-3, 7 ,12-", 14) == (1, 2, 3, 7, 12, 13, 14)
    assert select_chapters("2,2,1-2", 5) == (1, 2)
    assert select_chapters("3-", 3) == (3,)
    assert describe_chapters((1, 2, 3, 7, 12, 13, 14)) == "1-3, 7, 12-14"
    for bad in ("", "x", "1-x", "0", "3-1", "1,,2", "-3", "1-2-3", "1.5"):
        with pytest.raises(UsageError) as raised:
            parse_chapters(bad)
        assert "\n" not in str(raised.value)
    for outside in ("13", "12-13", "13-", "1,20"):
        with pytest.raises(UsageError, match=r"the book has chapters 1-12$"):
            select_chapters(outside, 12)
    assert parse_length("90s") == parse_length("90") == parse_length("1m30s") == parse_length("1.5m") == 90
    for bad in ("", "s", "fast", "-5s", "0s", "2h"):
        with pytest.raises(UsageError):
            parse_length(bad)


def test_bad_specs_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    book = write_book(tmp_path / "book.txt", chapters=3, paragraphs=1)
    cases = {
        ("plan", "--chapters", "1-x"): "'1-x' is not a chapter number or range",
        ("convert", "--chapters", "4-"): "the book has chapters 1-3",
        ("plan", "--chapters", "2,9"): "the book has chapters 1-3",
        ("convert", "--preview", "soon"): "write seconds or minutes",
    }
    for args, message in cases.items():
        assert main([args[0], str(book), "-o", str(tmp_path / "out"), *args[1:]]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("audiobook: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


# --- chapter selection ---------------------------------------------------------------------------------------


def test_a_selection_makes_only_its_chapters_and_a_wider_one_pays_only_for_the_new(
    server: FakeSpeechServer, tmp_path: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=4, paragraphs=2)
    out = tmp_path / "out"
    texts = {i: segment_texts(book, out, i) for i in range(1, 5)}
    whole = planned(book, out, "--m4b")["chapters"]  # --m4b: chapter files in MP3/
    files = {c["index"]: c["file"] for c in whole}
    titles = {c["index"]: c["title"] for c in whole}

    plan = planned(book, out, "--chapters", "2,4")
    assert [c["index"] for c in plan["chapters"]] == [2, 4]
    assert plan["selection"]["chapters"] == [2, 4] and plan["selection"]["of"] == 4
    assert plan["requests_needed"] == len(texts[2]) + len(texts[4])
    assert server.requests == []

    assert convert(book, out, "--chapters", "2,4", "--m4b") == 0
    assert sorted(r.input for r in server.requests) == sorted(texts[2] + texts[4])
    assert sorted("MP3/" + p.name for p in out.glob("MP3/*.mp3")) == [files[2], files[4]]
    report = read_report(out)
    assert [c["index"] for c in report["chapters"]] == [2, 4] and report["plan"]["selection"]["spec"] == "2,4"
    playlist = next(out.glob("MP3/*.m3u")).read_text(encoding="utf-8")
    assert [line for line in playlist.splitlines() if line.endswith(".mp3")] == [
        c["file"].removeprefix("MP3/") for c in report["chapters"]
    ]
    assert m4b_chapter_titles(next(out.glob("*.m4b"))) == [titles[2], titles[4]]

    # A selection's tracks keep the book's numbers (not "1/2" for chapter 2 of a selection of two).
    assert ID3(out / files[2])["TRCK"].text[0] == "2/4"

    # Wider: only chapters 1 and 3 are paid for; 2 and 4 stay as they were.
    server.clear()
    stamp = (out / files[2]).stat().st_mtime_ns
    assert convert(book, out, "--chapters", "1-", "--m4b") == 0
    assert sorted(r.input for r in server.requests) == sorted(texts[1] + texts[3])
    assert (out / files[2]).stat().st_mtime_ns == stamp
    report = read_report(out)
    assert [(c["index"], c["status"]) for c in report["chapters"]] == [
        (1, "done"), (2, "unchanged"), (3, "done"), (4, "unchanged"),
    ]  # fmt: skip
    assert m4b_chapter_titles(next(out.glob("*.m4b"))) == [titles[i] for i in range(1, 5)]


def test_a_narrower_selection_keeps_the_wider_runs_chapters_and_says_so(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=3, paragraphs=1)
    out = tmp_path / "out"
    whole = planned(book, out, "--m4b")["chapters"]  # --m4b: chapter files in MP3/
    assert convert(book, out, "--m4b") == 0
    paid = len(server.requests)
    assert main(["convert", str(book), "-o", str(out), "--chapters", "2", "--m4b"]) == 0
    text = capsys.readouterr().out
    assert len(server.requests) == paid  # nothing new to pay for
    assert len(list(out.glob("MP3/*.mp3"))) == 3  # chapters 1 and 3 were paid for: not deleted
    report = read_report(out)
    assert [c["index"] for c in report["chapters"]] == [2]
    assert [c["file"] for c in report["kept"]] == [whole[0]["file"], whole[2]["file"]]
    assert f"kept from an earlier run, outside the selection (not in the playlist): {whole[0]['file']}" in text
    playlist = next(out.glob("MP3/*.m3u")).read_text(encoding="utf-8")
    assert [line for line in playlist.splitlines() if line.endswith(".mp3")] == [whole[1]["file"].removeprefix("MP3/")]
    assert m4b_chapter_titles(next(out.glob("*.m4b"))) == [whole[1]["title"]]
    # The next whole run knows the kept files: nothing is sent and none is rewritten.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("MP3/*.mp3")}
    assert convert(book, out, "--m4b") == 0
    assert len(server.requests) == paid
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("MP3/*.mp3")} == stamps
    assert [c["status"] for c in read_report(out)["chapters"]] == ["unchanged"] * 3
    assert len(m4b_chapter_titles(next(out.glob("*.m4b")))) == 3


def test_the_plan_states_the_selection_its_cost_and_the_time_the_keys_rate_implies(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=5, paragraphs=2)
    config = tmp_path / "c.toml"
    config.write_text("rpm = 2\n")
    out = tmp_path / "out"
    plan = planned(book, out, "--chapters", "2-3", "--config", str(config))
    whole = planned(book, out, "--config", str(config))
    assert plan["requests_needed"] == sum(c["segments"] for c in plan["chapters"]) < whole["requests_needed"]
    assert plan["characters_to_send"] == sum(c["characters"] for c in plan["chapters"])
    assert plan["estimated_minutes"] == pytest.approx(plan["requests_needed"] / 2, abs=0.01)
    assert plan["rate_limit"] == {"rpm": 2.0, "cpm": None, "source": "config"}
    assert main(["plan", str(book), "-o", str(out), "--chapters", "2-3", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "Selected: chapters 2-3 (2 of 5)" in text
    assert f"To send:  {plan['requests_needed']} requests, {plan['characters_to_send']:,} characters" in text
    minutes = plan["requests_needed"] / 2
    assert (
        f"Time:     at least {int(minutes)}:{round(minutes % 1 * 60):02d} at the key's limit of 2 requests/min" in text
    )
    # Unknown limit: said, not guessed.
    assert main(["plan", str(book), "-o", str(out)]) == 0
    assert "the key's rate limit is not known yet" in capsys.readouterr().out
    assert server.requests == []


def test_a_job_file_selects_chapters_per_book_and_a_bad_spec_names_its_line(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    write_book(books / "a.txt", chapters=3, paragraphs=1)
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('output = "out"\n[[book]]\npath = "books/a.txt"\nchapters = "3"\n', encoding="utf-8")
    assert main(["--quiet", "batch", str(jobs)]) == 0
    assert [p.name for p in (tmp_path / "out" / "a").glob("*.mp3")] == [
        planned(books / "a.txt", tmp_path)["chapters"][2]["file"]
    ]
    assert len(server.requests) == len(segment_texts(books / "a.txt", tmp_path / "x", 3))
    capsys.readouterr()
    jobs.write_text('output = "out"\n[[book]]\npath = "books/a.txt"\nchapters = "3-1"\n', encoding="utf-8")
    assert main(["batch", str(jobs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{jobs}:4" in err and "'3-1'" in err


# --- preview -------------------------------------------------------------------------------------------------


def test_a_preview_is_the_full_runs_first_parts_and_the_full_run_pays_nothing_for_them(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=6)
    out = tmp_path / "out"
    first = segment_texts(book, out, 1)
    ahead = planned(book, out, "--preview", "40s")  # what it would cost, sending nothing
    assert server.requests == [] and ahead["preview"]["chapter"] == 1
    assert main(["convert", str(book), "-o", str(out), "--preview", "40s"]) == 0
    printed = capsys.readouterr().out
    arrived = [r.input for r in server.requests]  # in flight together: in any order
    made = first[: len(arrived)]
    assert ahead["requests_needed"] == len(made) and ahead["characters_to_send"] == sum(map(len, made))
    assert 1 <= len(made) < len(first) and sorted(arrived) == sorted(made)  # a prefix of what the full run sends
    # About the length asked for, by the speech-rate prior: adding or dropping a segment would be further off.
    said = sum(seconds_of(t) for t in made)
    assert abs(said - 40) <= abs(said + seconds_of(first[len(made)]) - 40)
    assert abs(said - 40) <= abs(said - seconds_of(made[-1]) - 40) or len(made) == 1
    preview = out / "preview.mp3"
    assert len(decode(preview.read_bytes())) > 0
    assert f"cost: {len(made)} requests, {sum(map(len, made)):,} characters sent" in printed
    assert not list(out.glob("[0-9]*.mp3")) and not (out / "report.json").exists()  # a preview is not a run

    server.clear()
    assert convert(book, out) == 0
    sent = [r.input for r in server.requests]
    assert not set(sent) & set(made)  # 0 requests for the preview's parts
    assert len(sent) == len(first) - len(made) + len(segment_texts(book, out, 2))
    assert not preview.exists()  # the whole book is there: a stray preview would be a track in a library


def test_a_preview_skips_a_short_first_chapter_and_follows_a_selection(tmp_path: Path) -> None:
    long = " ".join(f"Sentence {i} is about the lantern and the sea." for i in range(40))
    book = Book(
        "B",
        (
            Chapter(1, "Dedication", ("For Ann.",)),
            Chapter(2, "Part One", ()),
            Chapter(3, "One", (long,)),
            Chapter(4, "Two", (long.replace("lantern", "river"),)),
        ),
        language="en",
    )
    assert len(long) >= REAL_CHAPTER_CHARS
    settings = load_settings(overrides={"preview_seconds": 20})
    cut = app.preview_plan(book, settings, tmp_path)
    (cp,) = cut.chapters
    assert cp.chapter.index == 3
    full = app.plan(book, settings, tmp_path)
    assert cp.keys == full.chapters[2].keys[: len(cp.keys)] and cp.segments[-1].text.endswith(".")
    cut = app.preview_plan(book, settings.replace(chapters="4"), tmp_path)
    assert cut.chapters[0].chapter.index == 4


# --- voice samples -------------------------------------------------------------------------------------------


def test_voice_samples_one_request_each_then_none_costs_printed_first(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "samples"
    args = ["voices", "--sample", "--backend", "openai", "--voices", "alloy,nova,echo", "-o", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sorted(r.body["voice"] for r in server.requests if r.body) == ["alloy", "echo", "nova"]
    assert len({r.input for r in server.requests}) == 1  # the same passage for every voice
    assert sorted(p.name for p in out.iterdir()) == ["alloy.mp3", "echo.mp3", "nova.mp3"]
    assert all(len(decode(p.read_bytes())) > 0 for p in out.iterdir())
    costs = [i for i, line in enumerate(printed) if "characters, estimated $" in line]
    files = [i for i, line in enumerate(printed) if line.endswith((" s", ":00")) and ".mp3" in line]
    assert len(costs) == 3 and len(files) == 3 and max(costs) < min(files)
    assert any(line.startswith("  total: 3 requests, estimated $") for line in printed)

    assert main(args) == 0  # cached like any part
    assert len(server.requests) == 3
    assert capsys.readouterr().out.count("cached, free") == 3


def test_a_sample_from_a_book_says_its_first_real_sentences(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=3)
    assert main(["voices", "--sample", "--backend", "openai", "--voices", "alloy", "--book", str(book),
                 "-o", str(tmp_path / "s")]) == 0  # fmt: skip
    (said,) = [r.input for r in server.requests]
    assert said.startswith("Sentence 1 tells of the") and said.endswith(".") and len(said) <= 300
    read = app.read(book, load_settings().book)
    assert passage(read, None, "en", 300) == said


def test_offline_samples_are_its_voices_for_the_texts_language(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "s"
    assert (
        main(["voices", "--sample", "--backend", "espeak", "--text", "灯塔守护人每晚都点亮那盏灯。", "-o", str(out)])
        == 0
    )
    names = sorted(p.stem for p in out.glob("*.mp3"))
    assert {"cmn", "yue"} <= set(names) and not any(n.startswith("en") for n in names)
    assert "total: " in capsys.readouterr().out


def test_with_verification_on_the_preview_parts_are_judged_once_and_never_asked_again(
    human: FakeSpeechServer, tmp_path: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=6)
    out = tmp_path / "out"
    assert convert(book, out, "--preview", "20s") == 0
    made = {r.input for r in human.requests}
    assert made and (out / "preview.mp3").is_file()
    human.clear()
    assert convert(book, out) == 0
    assert human.requests and not {r.input for r in human.requests} & made
    assert read_report(out)["verification"]["suspect"] == 0


def test_the_time_estimate_uses_the_limit_an_earlier_run_read_in_the_keys_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_backoff: list[float]
) -> None:
    from tests.helpers import FAKE_KEY

    book = write_book(tmp_path / "book.txt", chapters=3, paragraphs=2)
    with FakeSpeechServer(api_key=FAKE_KEY, ms_per_char=4.0, rpm=6000, burst=50) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        assert planned(book, tmp_path / "out")["estimated_minutes"] is None  # nothing known yet: not guessed
        assert convert(book, tmp_path / "out", "--chapters", "1") == 0
        plan = planned(book, tmp_path / "out", "--chapters", "2-")
        assert plan["rate_limit"] == {"rpm": 6000.0, "cpm": None, "source": "headers"}
        assert plan["estimated_minutes"] == pytest.approx(plan["requests_needed"] / 6000, abs=0.01)
        assert main(["plan", str(book), "-o", str(tmp_path / "out"), "--chapters", "2-"]) == 0
        assert "limit of 6000 requests/min (from the key's headers, last run)" in capsys.readouterr().out
